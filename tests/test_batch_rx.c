/* test_batch_rx.c: the shared-memory BATCH segment (create, attach, stale removal) and the consumer library
 * batch_rx against a ROUTER played by the test: credit with the shm offer, views inline and in shared
 * memory, RELEASE, bad references, a segment that is not there, END. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "cunit_util.h"
#include "sampler/batch_ring.h"
#include "sampler/batch_rx.h"
#include "wire.h"
#include "wire_zmq.h"

static int shm_mode(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

static void test_ring_create_attach(void)
{
    pgd_batch_ring r, a;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_batch_ring_create(&r, 3, 5000, 42, &err), 0);
    CU_ASSERT_EQUAL(strncmp(r.name, "/" PGD_BATCH_RING_PREFIX, strlen(PGD_BATCH_RING_PREFIX) + 1), 0);
    CU_ASSERT_EQUAL(shm_mode(r.name), 0600);
    CU_ASSERT_EQUAL(r.slot_size, 8192); /* rounded up to pages */
    CU_ASSERT_EQUAL(pgd_batch_ring_offset(&r, 2), 4096 + 2 * 8192);
    CU_ASSERT_PTR_NULL(pgd_batch_ring_slot(&r, 3));
    memset(pgd_batch_ring_slot(&r, 1), 0xab, 8192);
    CU_ASSERT_EQUAL(pgd_batch_ring_alive(r.name), 1);
    CU_ASSERT_EQUAL_FATAL(pgd_batch_ring_attach(&a, r.name, &err), 0);
    CU_ASSERT_EQUAL(a.nslots, 3);
    CU_ASSERT_EQUAL(a.slot_size, 8192);
    CU_ASSERT_EQUAL(pgd_batch_ring_slot(&a, 1)[8191], 0xab);
    char name[300];
    snprintf(name, sizeof name, "%s", r.name);
    pgd_batch_ring_close(&r);
    CU_ASSERT_EQUAL(shm_mode(name), -1); /* the creator removes the name */
    CU_ASSERT_EQUAL(pgd_batch_ring_slot(&a, 1)[0], 0xab); /* a mapping outlives the name */
    pgd_batch_ring_close(&a);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_batch_ring_attach(&a, name, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, name));
}

static void test_ring_bad_header(void)
{
    char name[64];
    snprintf(name, sizeof name, "/" PGD_BATCH_RING_PREFIX "test.%d", (int)getpid());
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    char junk[8192];
    memset(junk, 'j', sizeof junk);
    CU_ASSERT_EQUAL(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    pgd_batch_ring a;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_batch_ring_attach(&a, name, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bad magic"));
    CU_ASSERT_EQUAL(pgd_batch_ring_alive(name), -1);
    pgd_batch_ring_reclaim_stale(); /* unreadable: left alone */
    CU_ASSERT_EQUAL(shm_mode(name), 0600);
    shm_unlink(name);
}

/* A segment whose creator died without removing it is stale, and the next sampler's sweep removes it. */
static void test_ring_stale(void)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        pgd_batch_ring r;
        if (pgd_batch_ring_create(&r, 1, 4096, 1, NULL) != 0)
            _exit(1);
        ssize_t w = write(fds[1], r.name, sizeof r.name);
        _exit(w == (ssize_t)sizeof r.name ? 0 : 1); /* no close: the name stays behind */
    }
    char name[PGD_WIRE_SEGMENT_MAX + 1] = "";
    CU_ASSERT_EQUAL(read(fds[0], name, sizeof name), (ssize_t)sizeof name);
    close(fds[0]);
    close(fds[1]);
    int st;
    waitpid(pid, &st, 0);
    CU_ASSERT_EQUAL(shm_mode(name), 0600);
    CU_ASSERT_EQUAL(pgd_batch_ring_alive(name), 0);
    CU_ASSERT(pgd_batch_ring_reclaim_stale() >= 1);
    CU_ASSERT_EQUAL(shm_mode(name), -1);
}

/* ---- the library against a ROUTER played here ------------------------------------------------------ */

#define NIMG 2
#define PPI 3
#define P 4
#define PX (NIMG * PPI * P * P * 3)

typedef struct router {
    void *ctx, *sock;
    uint8_t id[256];
    size_t id_len;
} router;

static int router_open(router *r, const char *ep)
{
    memset(r, 0, sizeof *r);
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_ROUTER);
    int t = 5000;
    zmq_setsockopt(r->sock, ZMQ_RCVTIMEO, &t, sizeof t);
    return zmq_bind(r->sock, ep);
}

/* Receive one message from the consumer (and remember its routing id). */
static int router_recv(router *r, pgd_wire_header *h)
{
    pgd_wire_rx rx;
    int rc = pgd_wire_recv(r->sock, &rx, 1, 0, NULL);
    if (rc == 0) {
        *h = rx.msg.h;
        pgd_wire_frame id = pgd_wire_rx_routing_id(&rx);
        memcpy(r->id, id.data, id.len);
        r->id_len = id.len;
    }
    pgd_wire_rx_close(&rx);
    return rc;
}

/* Send a BATCH (ref NULL) or a BATCH_SHM at ref in segment seg, task id task. */
static int router_batch(router *r, uint64_t task, const uint8_t *pixels, const pgd_wire_shmref *ref, const char *seg)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, ref ? PGD_WIRE_BATCH_SHM : PGD_WIRE_BATCH);
    h.flags = PGD_WIRE_FLAG_FILL;
    h.task_id = task;
    h.n_images = NIMG;
    h.patches_per_image = PPI;
    h.patch_size = P;
    h.channels = 3;
    h.grid_m = h.grid_n = 4;
    uint8_t cells[NIMG * PPI * 8], ids[NIMG * 64], labels[NIMG * 4], refb[PGD_WIRE_SHMREF_SIZE];
    memset(ids, 0, sizeof ids);
    for (int i = 0; i < NIMG * PPI; i++)
        pgd_wire_put_cell(cells, (size_t)i, (uint32_t)i % 4, (uint32_t)i / 4);
    for (int i = 0; i < NIMG; i++) {
        pgd_wire_put_id(ids, (size_t)i, i ? "b" : "a", NULL);
        pgd_wire_put_label(labels, (size_t)i, i);
    }
    pgd_wire_frame f[5] = {{pixels, PX}, {cells, sizeof cells}, {ids, sizeof ids}, {labels, sizeof labels},
                           {seg, seg ? strlen(seg) : 0}};
    if (ref) {
        pgd_wire_put_shmref(refb, ref);
        f[0].data = refb;
        f[0].len = sizeof refb;
    }
    pgd_wire_frame rid = {r->id, r->id_len};
    return pgd_wire_send(r->sock, &rid, &h, f, ref ? 5 : 4, 0, NULL);
}

static void router_plain(router *r, pgd_wire_type t, uint64_t task)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, t);
    h.task_id = task;
    pgd_wire_frame rid = {r->id, r->id_len};
    CU_ASSERT_EQUAL(pgd_wire_send(r->sock, &rid, &h, NULL, 0, 0, NULL), 0);
}

static void router_close(router *r)
{
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
}

static void test_rx_views(void)
{
    char ep[600];
    snprintf(ep, sizeof ep, "ipc://%s/rx.c", pgd_test_tmpdir());
    router r;
    CU_ASSERT_EQUAL_FATAL(router_open(&r, ep), 0);
    pgd_batch_rx_opts o;
    pgd_batch_rx_opts_init(&o);
    o.endpoint = ep;
    o.credit = 3;
    o.patches_per_image = 5;
    pgd_err err = PGD_ERR_INIT;
    pgd_batch_rx *rx = pgd_batch_rx_open(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx);
    CU_ASSERT_EQUAL(pgd_batch_rx_shm(rx), 1); /* auto: an ipc:// endpoint */
    pgd_wire_header h;
    CU_ASSERT_EQUAL_FATAL(router_recv(&r, &h), 0);
    CU_ASSERT_EQUAL(h.type, PGD_WIRE_CREDIT);
    CU_ASSERT_EQUAL(h.credit, 3);
    CU_ASSERT_EQUAL(h.flags, PGD_WIRE_CREDIT_SHM);
    CU_ASSERT_EQUAL(h.patches_per_image, 5);

    pgd_batch_ring ring;
    CU_ASSERT_EQUAL_FATAL(pgd_batch_ring_create(&ring, 2, PX, 1, &err), 0);
    uint8_t pix[PX];
    for (int i = 0; i < PX; i++)
        pix[i] = (uint8_t)(i * 13 + 5);
    memcpy(pgd_batch_ring_slot(&ring, 1), pix, PX);
    pgd_wire_shmref ref = {pgd_batch_ring_offset(&ring, 1), PX, 1, 0};

    /* the same BATCH in shared memory and inline: the same view */
    CU_ASSERT_EQUAL(router_batch(&r, 7, NULL, &ref, ring.name), 0);
    CU_ASSERT_EQUAL(router_batch(&r, 8, pix, NULL, NULL), 0);
    pgd_batch_view v1, v2;
    CU_ASSERT_EQUAL_FATAL(pgd_batch_rx_next(rx, &v1, 5000, &err), PGD_BATCH_RX_BATCH);
    CU_ASSERT_EQUAL_FATAL(pgd_batch_rx_next(rx, &v2, 5000, &err), PGD_BATCH_RX_BATCH);
    CU_ASSERT_EQUAL(v1.shm, 1);
    CU_ASSERT_EQUAL(v2.shm, 0);
    CU_ASSERT_EQUAL(v1.msg.h.task_id, 7);
    CU_ASSERT_EQUAL(v1.pixels_len, PX);
    CU_ASSERT_EQUAL(memcmp(v1.pixels, pix, PX), 0);
    CU_ASSERT_EQUAL(memcmp(v2.pixels, pix, PX), 0);
    CU_ASSERT_PTR_EQUAL(v1.msg.pixels, v1.pixels);
    CU_ASSERT_EQUAL(memcmp(v1.msg.cells, v2.msg.cells, NIMG * PPI * 8), 0);
    CU_ASSERT_STRING_EQUAL(pgd_wire_id(&v1.msg, 1), "b");
    CU_ASSERT_EQUAL(pgd_wire_label(&v1.msg, 1), 1);
    CU_ASSERT_PTR_EQUAL(pgd_wire_patch(&v1.msg, 1, 0), v1.pixels + PPI * P * P * 3);
    /* release: RELEASE for the shared one (with credit), CREDIT for the inline one */
    CU_ASSERT_EQUAL(pgd_batch_rx_release(rx, &v1, 1, &err), 0);
    CU_ASSERT_PTR_NULL(v1.pixels);
    CU_ASSERT_EQUAL(router_recv(&r, &h), 0);
    CU_ASSERT_EQUAL(h.type, PGD_WIRE_RELEASE);
    CU_ASSERT_EQUAL(h.task_id, 7);
    CU_ASSERT_EQUAL(h.credit, 1);
    CU_ASSERT_EQUAL(pgd_batch_rx_release(rx, &v2, 2, &err), 0);
    CU_ASSERT_EQUAL(router_recv(&r, &h), 0);
    CU_ASSERT_EQUAL(h.type, PGD_WIRE_CREDIT);
    CU_ASSERT_EQUAL(h.credit, 2);

    /* a reference past the segment's end: dropped, counted, the slot released without credit */
    pgd_wire_shmref far = {ring.size, PX, 9, 0};
    CU_ASSERT_EQUAL(router_batch(&r, 9, NULL, &far, ring.name), 0);
    router_plain(&r, PGD_WIRE_HEARTBEAT, 0);
    CU_ASSERT_EQUAL(pgd_batch_rx_next(rx, &v1, 300, &err), PGD_BATCH_RX_NONE);
    CU_ASSERT_EQUAL(pgd_batch_rx_bad(rx)->by_reason[PGD_WIRE_R_SHMREF], 1);
    CU_ASSERT_EQUAL(router_recv(&r, &h), 0);
    CU_ASSERT_EQUAL(h.type, PGD_WIRE_RELEASE);
    CU_ASSERT_EQUAL(h.task_id, 9);
    CU_ASSERT_EQUAL(h.credit, 0);

    /* an unexpected type is counted; a segment this host does not have is an error naming it */
    router_plain(&r, PGD_WIRE_RELEASE, 1);
    CU_ASSERT_EQUAL(router_batch(&r, 10, NULL, &ref, "/pgd-batch.no-such-segment"), 0);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_batch_rx_next(rx, &v1, 5000, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/pgd-batch.no-such-segment"));
    CU_ASSERT_EQUAL(pgd_batch_rx_unexpected(rx), 1);

    /* END, with the schedule's message count */
    router_plain(&r, PGD_WIRE_END, 11);
    CU_ASSERT_EQUAL(pgd_batch_rx_next(rx, &v1, 5000, &err), PGD_BATCH_RX_END);
    CU_ASSERT_EQUAL(pgd_batch_rx_end_task(rx), 11);

    /* a view still held at close is freed by close */
    CU_ASSERT_EQUAL(router_batch(&r, 12, pix, NULL, NULL), 0);
    CU_ASSERT_EQUAL(pgd_batch_rx_next(rx, &v1, 5000, &err), PGD_BATCH_RX_BATCH);
    pgd_batch_rx_close(&rx);
    CU_ASSERT_PTR_NULL(rx);
    pgd_batch_ring_close(&ring);
    router_close(&r);
}

static void test_rx_options(void)
{
    pgd_batch_rx_opts o;
    pgd_batch_rx_opts_init(&o);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_batch_rx_open(&o, &err)); /* no endpoint */
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    o.endpoint = "bogus://x";
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_batch_rx_open(&o, &err));
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bogus://x"));
    o.endpoint = "tcp://127.0.0.1:1"; /* tcp: no shm offer unless asked */
    pgd_batch_rx *rx = pgd_batch_rx_open(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx);
    CU_ASSERT_EQUAL(pgd_batch_rx_shm(rx), 0);
    pgd_batch_rx_close(&rx);
    o.shm = PGD_BATCH_RX_SHM_YES;
    rx = pgd_batch_rx_open(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx);
    CU_ASSERT_EQUAL(pgd_batch_rx_shm(rx), 1);
    pgd_batch_rx_close(&rx);
}

static const pgd_test_case cases[] = {
    {"ring_create_attach", test_ring_create_attach},
    {"ring_bad_header", test_ring_bad_header},
    {"ring_stale", test_ring_stale},
    {"rx_views", test_rx_views},
    {"rx_options", test_rx_options},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("batch_rx", cases, argc, argv);
}
