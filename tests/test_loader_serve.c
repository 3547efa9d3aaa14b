/* test_loader_serve.c: pgd-loader serve under a sampler played by this driver: registration, jobs checked
 * byte for byte against the patcher, bad slides and messages, heartbeats, STOP, signals, a killed peer,
 * memory over many failed jobs. Loaders are forked children running pgd_loader_serve_main. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "cunit_util.h"
#include "loader/patcher.h"
#include "loader/serve.h"
#include "loader/serve_int.h"
#include "loader/synth.h"
#include "wire.h"
#include "wire_zmq.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define PGD_TEST_ASAN 1
#else
#define PGD_TEST_ASAN 0
#endif

/* How long any single wait may take before the case fails: a guard against hangs, not a speed check. */
#define WAIT_MS 30000
#define MAX_CELLS 64
#define MAX_LOADERS 3

static void nap_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- fixtures: synthetic slides, bad files, reference patches ------------------------------------- */

typedef struct ref {
    const char *path;
    pgd_wire_job_spec spec;
    uint32_t p, m, n;
    uint8_t *pixels; /* every cell, row-major: cell (r, c) at (r * n + c) * p * p * 3 */
} ref;

enum { R_FIT0, R_FIT1, R_NATIVE0, R_NATIVE1_L1, R_UM, R_COUNT };

static struct {
    int made, ok;
    char panda[2][300], um[300], truncated[300], empty[300], text[300], missing[300];
    ref refs[R_COUNT];
} fx;

static int write_synth(pgd_synth_task task, uint32_t w, uint32_t h, uint32_t index, const char *path)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_params sp = {.task = task, .width = w, .height = h, .seed = 11};
    pgd_synth_tiff_opts o = {0};
    pgd_synth_slide *s = NULL;
    int rc = -1;
    if (pgd_synth_params_check(&sp, &err) == 0 && pgd_synth_tiff_opts_check(&o, &err) == 0 &&
        (s = pgd_synth_slide_new(&sp, index, -1, &err)) != NULL)
        rc = pgd_synth_write_slide(s, path, &o, NULL, NULL, 0, NULL, NULL, &err);
    pgd_synth_slide_free(&s);
    if (rc != 0)
        fprintf(stderr, "synth %s: %s\n", path, err.msg);
    return rc;
}

static int write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = len ? fwrite(data, 1, len, f) : 0;
    return fclose(f) == 0 && put == len ? 0 : -1;
}

/* dst gets the first num/den of src's bytes. */
static int copy_part(const char *src, const char *dst, long num, long den)
{
    FILE *f = fopen(src, "rb");
    if (!f)
        return -1;
    struct stat st;
    int rc = -1;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (fstat(fileno(f), &st) == 0) {
        len = (size_t)(st.st_size / den * num);
        buf = malloc(len + 1);
    }
    if (buf && fread(buf, 1, len, f) == len)
        rc = write_bytes(dst, buf, len);
    free(buf);
    fclose(f);
    return rc;
}

/* Decode every cell of path under spec here, in the driver: what the loader must send. */
static int ref_load(ref *r, const char *path, pgd_wire_job_spec spec, uint32_t p)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_geom_spec gs = {.kind = spec.geometry == PGD_WIRE_GEOM_FIT ? PGD_GEOM_FIT : PGD_GEOM_NATIVE,
                        .patch_size = p, .fit_size = spec.fit_size, .level = spec.level, .mpp = spec.mpp};
    pgd_patcher *pt = pgd_patcher_open(path, &gs, &err);
    if (!pt) {
        fprintf(stderr, "reference %s: %s\n", path, err.msg);
        return -1;
    }
    const pgd_geom *g = pgd_patcher_geom(pt);
    r->path = path;
    r->spec = spec;
    r->p = p;
    r->m = g->grid_m;
    r->n = g->grid_n;
    size_t cells = (size_t)r->m * r->n, patch = (size_t)p * p * 3;
    uint32_t *rc = malloc(cells * 2 * sizeof *rc);
    r->pixels = malloc(cells * patch);
    int ok = rc && r->pixels && cells <= MAX_CELLS;
    for (size_t i = 0; ok && i < cells; i++) {
        rc[2 * i] = (uint32_t)(i / r->n);
        rc[2 * i + 1] = (uint32_t)(i % r->n);
    }
    if (ok && pgd_patcher_read(pt, rc, cells, r->pixels, &err) != 0) {
        fprintf(stderr, "reference %s: %s\n", path, err.msg);
        ok = 0;
    }
    free(rc);
    pgd_patcher_close(&pt);
    return ok ? 0 : -1;
}

static const uint8_t *ref_patch(const ref *r, uint32_t row, uint32_t col)
{
    return r->pixels + ((size_t)row * r->n + col) * r->p * r->p * 3;
}

static void fixtures_free(void)
{
    for (int i = 0; i < R_COUNT; i++)
        free(fx.refs[i].pixels);
}

/* Make the slides once per run (before any loader is forked: the references are plain memory after this,
 * no slide stays open in the driver). */
static int fixtures(void)
{
    if (fx.made)
        return fx.ok ? 0 : -1;
    fx.made = 1;
    const char *d = pgd_test_tmpdir();
    for (int i = 0; i < 2; i++)
        snprintf(fx.panda[i], sizeof fx.panda[i], "%s/panda_%d.tiff", d, i);
    snprintf(fx.um, sizeof fx.um, "%s/ultramnist_0.tiff", d);
    snprintf(fx.truncated, sizeof fx.truncated, "%s/truncated.tiff", d);
    snprintf(fx.empty, sizeof fx.empty, "%s/empty.tiff", d);
    snprintf(fx.text, sizeof fx.text, "%s/not_a_slide.tiff", d);
    snprintf(fx.missing, sizeof fx.missing, "%s/missing.tiff", d);
    static const char words[] = "image_id,isup_grade\nthis is a manifest, not a slide\n";
    if (write_synth(PGD_SYNTH_PANDA, 2048, 1536, 0, fx.panda[0]) != 0 ||
        write_synth(PGD_SYNTH_PANDA, 2048, 1536, 1, fx.panda[1]) != 0 ||
        write_synth(PGD_SYNTH_ULTRAMNIST, 1024, 1024, 0, fx.um) != 0 ||
        copy_part(fx.panda[0], fx.truncated, 1, 2) != 0 || write_bytes(fx.empty, "", 0) != 0 ||
        write_bytes(fx.text, words, sizeof words - 1) != 0)
        return -1;
    pgd_wire_job_spec fit = {PGD_WIRE_GEOM_FIT, 512, -1, 0}, l0 = {PGD_WIRE_GEOM_NATIVE, 0, 0, 0},
                      l1 = {PGD_WIRE_GEOM_NATIVE, 0, 1, 0};
    if (ref_load(&fx.refs[R_FIT0], fx.panda[0], fit, 128) != 0 ||
        ref_load(&fx.refs[R_FIT1], fx.panda[1], fit, 128) != 0 ||
        ref_load(&fx.refs[R_NATIVE0], fx.panda[0], l0, 256) != 0 ||
        ref_load(&fx.refs[R_NATIVE1_L1], fx.panda[1], l1, 256) != 0 ||
        ref_load(&fx.refs[R_UM], fx.um, fit, 128) != 0)
        return -1;
    fx.ok = 1;
    return 0;
}

/* ---- loader children ----------------------------------------------------------------------------- */

typedef struct child {
    pid_t pid;
    char log[300];
} child;

/* Leave a forked child: under the sanitizers run the leak check first (a leak fails the exit status). */
static void child_exit(int rc)
{
    fflush(stdout);
    fflush(stderr);
#if PGD_TEST_ASAN
    __lsan_do_leak_check();
#endif
    _exit(rc);
}

/* Fork a loader: `pgd-loader serve ARGS...` in the child, stdout and stderr into tmpdir/NAME.log.
 * level: PGD_LOG_LEVEL for the child (NULL: info). */
static int loader_start(child *c, const char *logname, const char *level, const char *const *args)
{
    snprintf(c->log, sizeof c->log, "%s/%s.log", pgd_test_tmpdir(), logname);
    fflush(stdout);
    fflush(stderr);
    c->pid = fork();
    if (c->pid < 0)
        return -1;
    if (c->pid > 0)
        return 0;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1) /* no orphan if a case fails midway */
        _exit(98);
    int fd = open(c->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    if (fd < 0 || dup2(fd, STDERR_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0)
        _exit(99);
    close(fd);
    setenv("PGD_LOG_LEVEL", level ? level : "info", 1);
    unsetenv("PGD_LOG_JSON");
    char *argv[40];
    int argc = 0;
    argv[argc++] = (char *)"serve";
    for (; args[argc - 1] && argc < 39; argc++)
        argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;
    child_exit(pgd_loader_serve_main(argc, argv));
    return -1;
}

/* Wait for the child to end (killing it after WAIT_MS); returns its wait status or -1. */
static int loader_wait(child *c)
{
    int st;
    int64_t end = pgd_clock_ms() + WAIT_MS;
    for (;;) {
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid) {
            c->pid = 0;
            return st;
        }
        if (r < 0 || pgd_clock_ms() > end) {
            fprintf(stderr, "loader %d did not exit\n", (int)c->pid);
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
            c->pid = 0;
            return -1;
        }
        nap_ms(2);
    }
}

static int exited_with(int st, int code)
{
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == code;
}

/* The child's log (malloc'd, NUL-terminated; "" when unreadable). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (f) {
        for (;;) {
            if (len + 4096 + 1 > cap) {
                cap = cap ? cap * 2 : 16384;
                char *nb = realloc(buf, cap);
                if (!nb)
                    break;
                buf = nb;
            }
            size_t got = fread(buf + len, 1, 4096, f);
            len += got;
            if (got == 0)
                break;
        }
        fclose(f);
    }
    if (!buf)
        buf = calloc(1, 1);
    else
        buf[len] = '\0';
    return buf;
}

static int log_has(const child *c, const char *needle)
{
    char *text = slurp(c->log);
    int found = text && strstr(text, needle) != NULL;
    if (!found) {
        size_t len = text ? strlen(text) : 0;
        fprintf(stderr, "\n    %s lacks \"%s\"; it ends:\n%s\n", c->log, needle,
                text ? text + (len > 1500 ? len - 1500 : 0) : "");
    }
    free(text);
    return found;
}

static int log_count(const child *c, const char *needle)
{
    char *text = slurp(c->log);
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(text);
    return n;
}

/* Wait until the log holds needle; 0 when it does. */
static int log_wait(const child *c, const char *needle)
{
    int64_t end = pgd_clock_ms() + WAIT_MS;
    while (pgd_clock_ms() < end) {
        char *text = slurp(c->log);
        int found = text && strstr(text, needle) != NULL;
        free(text);
        if (found)
            return 0;
        nap_ms(2);
    }
    fprintf(stderr, "\n    %s: no \"%s\" after %d ms\n", c->log, needle, WAIT_MS);
    return -1;
}

/* The "exiting (...)" summary numbers; -1 when the line is missing. */
static int log_summary(const child *c, unsigned *ok, unsigned *failed, unsigned *unanswered, unsigned *bad)
{
    char *text = slurp(c->log);
    const char *p = text ? strstr(text, "exiting (") : NULL;
    int rc = -1;
    if (p && (p = strstr(p, "jobs ok")) != NULL) {
        unsigned long long patches;
        double mp;
        if (sscanf(p, "jobs ok %u, failed %u, unanswered %u; %llu patches, %lf MP decoded; %u bad", ok, failed,
                   unanswered, &patches, &mp, bad) == 6)
            rc = 0;
    }
    free(text);
    return rc;
}

static long vm_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* ---- the sampler side ---------------------------------------------------------------------------- */

typedef struct peer {
    uint8_t id[256];
    size_t id_len;
    char name[PGD_WIRE_NAME_MAX + 1];
    uint32_t credit;
    int hellos, outstanding, answered;
} peer;

typedef struct sampler {
    void *ctx, *router;
    char path[300], endpoint[320];
    peer peers[MAX_LOADERS];
    int npeers;
    int heartbeats;
} sampler;

/* The endpoint a case's loaders connect to (they may start before the sampler binds: ZeroMQ retries). */
static void sampler_endpoint(sampler *s, const char *name)
{
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s/%s.ipc", pgd_test_tmpdir(), name);
    snprintf(s->endpoint, sizeof s->endpoint, "ipc://%s", s->path);
}

static int sampler_bind(sampler *s, int rcvhwm)
{
    int one = 1, zero = 0;
    s->ctx = zmq_ctx_new();
    s->router = s->ctx ? zmq_socket(s->ctx, ZMQ_ROUTER) : NULL;
    if (!s->router || zmq_setsockopt(s->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        (rcvhwm > 0 && zmq_setsockopt(s->router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) != 0) ||
        zmq_bind(s->router, s->endpoint) != 0) {
        fprintf(stderr, "sampler bind %s: %s\n", s->endpoint, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

static void sampler_close(sampler *s)
{
    if (s->router)
        zmq_close(s->router);
    if (s->ctx)
        zmq_ctx_term(s->ctx);
    s->router = s->ctx = NULL;
    if (unlink(s->path) != 0 && errno != ENOENT)
        fprintf(stderr, "unlink %s: %s\n", s->path, strerror(errno));
}

/* Receive the next message within timeout_ms: 0 with rx filled (close it), 1 on timeout, -1 bad message. */
static int sampler_recv(sampler *s, pgd_wire_rx *rx, int64_t timeout_ms)
{
    memset(rx, 0, sizeof *rx);
    zmq_pollitem_t it = {s->router, 0, ZMQ_POLLIN, 0};
    int64_t end = pgd_clock_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - pgd_clock_ms();
        int rc = zmq_poll(&it, 1, left > 0 ? (long)left : 0);
        if (rc > 0)
            break;
        if (rc == 0 || errno != EINTR)
            return 1;
    }
    pgd_err err = PGD_ERR_INIT;
    if (pgd_wire_recv(s->router, rx, 1, 0, &err) != 0) {
        fprintf(stderr, "\n    sampler got a bad message: %s\n", err.msg);
        pgd_wire_rx_close(rx);
        return -1;
    }
    return 0;
}

/* The peer that sent rx (registered on its HELLO), or -1. */
static int peer_of(const sampler *s, const pgd_wire_rx *rx)
{
    pgd_wire_frame id = pgd_wire_rx_routing_id(rx);
    for (int i = 0; i < s->npeers; i++)
        if (s->peers[i].id_len == id.len && memcmp(s->peers[i].id, id.data, id.len) == 0)
            return i;
    return -1;
}

/* Note a HELLO (a new peer, or one registering again). Returns the peer index. */
static int note_hello(sampler *s, const pgd_wire_rx *rx)
{
    int i = peer_of(s, rx);
    if (i < 0 && s->npeers < MAX_LOADERS) {
        pgd_wire_frame id = pgd_wire_rx_routing_id(rx);
        i = s->npeers++;
        memcpy(s->peers[i].id, id.data, id.len < sizeof s->peers[i].id ? id.len : sizeof s->peers[i].id);
        s->peers[i].id_len = id.len;
    }
    if (i >= 0) {
        pgd_wire_text(&rx->msg, s->peers[i].name, sizeof s->peers[i].name);
        s->peers[i].credit = rx->msg.h.credit;
        s->peers[i].hellos++;
    }
    return i;
}

/* Wait for HELLOs from n distinct loaders. */
static int sampler_await_hellos(sampler *s, int n)
{
    int64_t end = pgd_clock_ms() + WAIT_MS;
    while (s->npeers < n) {
        pgd_wire_rx rx;
        int rc = sampler_recv(s, &rx, end - pgd_clock_ms());
        if (rc > 0)
            return -1;
        if (rc == 0 && rx.msg.h.type == PGD_WIRE_HELLO)
            note_hello(s, &rx);
        pgd_wire_rx_close(&rx);
    }
    return 0;
}

static int peer_named(const sampler *s, const char *name)
{
    for (int i = 0; i < s->npeers; i++)
        if (strcmp(s->peers[i].name, name) == 0)
            return i;
    return -1;
}

/* The next PATCHES or JOB_ERROR (HELLO and HEARTBEAT are noted on the way). 0, 1 timeout, -1 bad. */
static int sampler_reply(sampler *s, pgd_wire_rx *rx, int *from)
{
    int64_t end = pgd_clock_ms() + WAIT_MS;
    for (;;) {
        int rc = sampler_recv(s, rx, end - pgd_clock_ms());
        if (rc != 0)
            return rc;
        unsigned t = rx->msg.h.type;
        if (t == PGD_WIRE_PATCHES || t == PGD_WIRE_JOB_ERROR) {
            *from = peer_of(s, rx);
            return 0;
        }
        if (t == PGD_WIRE_HELLO)
            note_hello(s, rx);
        else if (t == PGD_WIRE_HEARTBEAT)
            s->heartbeats++;
        pgd_wire_rx_close(rx);
    }
}

typedef struct job {
    uint64_t task;
    uint32_t attempt;
    const char *path;
    pgd_wire_job_spec spec;
    uint32_t p, m, n, channels;
    size_t ncells;
    uint32_t cells[2 * MAX_CELLS];
    const ref *ref; /* the expected pixels, or NULL when the job must fail */
} job;

/* A job on ref's slide and geometry: ncells cells picked by a seeded walk (repeats on purpose when seed
 * is odd), or every cell in order when ncells is 0. */
static job job_on(const ref *r, uint64_t task, size_t ncells, uint32_t seed)
{
    job j;
    memset(&j, 0, sizeof j);
    j.task = task;
    j.attempt = 1;
    j.path = r->path;
    j.spec = r->spec;
    j.p = r->p;
    j.m = r->m;
    j.n = r->n;
    j.channels = 3;
    j.ref = r;
    size_t all = (size_t)r->m * r->n;
    j.ncells = ncells ? ncells : all;
    uint32_t x = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < j.ncells; i++) {
        size_t k = i;
        if (ncells) {
            x = x * 1103515245u + 12345u;
            k = (seed & 1) && i > 0 && i % 3 == 0 ? (size_t)(j.cells[0] * r->n + j.cells[1]) : (x >> 8) % all;
        }
        j.cells[2 * i] = (uint32_t)(k / r->n);
        j.cells[2 * i + 1] = (uint32_t)(k % r->n);
    }
    return j;
}

/* A job on path that must fail, with r's geometry. */
static job job_bad(const ref *r, uint64_t task, const char *path)
{
    job j = job_on(r, task, 2, (uint32_t)task);
    j.path = path;
    j.ref = NULL;
    return j;
}

static int sampler_send_job(sampler *s, int to, const job *j)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_JOB);
    h.run_id = 77;
    h.task_id = j->task;
    h.epoch = 3;
    h.batch = (uint32_t)(j->task % 5);
    h.step = (uint32_t)(j->task % 7);
    h.attempt = j->attempt;
    h.n_images = 1;
    h.patches_per_image = (uint32_t)j->ncells;
    h.patch_size = j->p;
    h.channels = j->channels;
    h.grid_m = j->m;
    h.grid_n = j->n;
    uint8_t spec[PGD_WIRE_SPEC_SIZE], cells[MAX_CELLS * PGD_WIRE_CELL_SIZE];
    pgd_wire_put_spec(spec, &j->spec);
    for (size_t i = 0; i < j->ncells; i++)
        pgd_wire_put_cell(cells, i, j->cells[2 * i], j->cells[2 * i + 1]);
    pgd_wire_frame f[3] = {{spec, sizeof spec}, {j->path, strlen(j->path)}, {cells, j->ncells * PGD_WIRE_CELL_SIZE}};
    pgd_wire_frame rid = {s->peers[to].id, s->peers[to].id_len};
    pgd_err err = PGD_ERR_INIT;
    if (pgd_wire_send(s->router, &rid, &h, f, 3, 0, &err) != 0) {
        fprintf(stderr, "\n    send job %llu: %s\n", (unsigned long long)j->task, err.msg);
        return -1;
    }
    s->peers[to].outstanding++;
    return 0;
}

static int sampler_send_type(sampler *s, int to, pgd_wire_type type)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, type);
    pgd_wire_frame rid = {s->peers[to].id, s->peers[to].id_len};
    return pgd_wire_send(s->router, &rid, &h, NULL, 0, 0, NULL);
}

/* Does rx answer j correctly? PATCHES: ids echoed, cells echoed, every patch equal to the reference.
 * JOB_ERROR (when j expects one): ids echoed, the reason names the file. */
static int reply_matches(const pgd_wire_rx *rx, const job *j)
{
    const pgd_wire_msg *m = &rx->msg;
    const pgd_wire_header *h = &m->h;
    if (h->task_id != j->task || h->attempt != j->attempt || h->run_id != 77 || h->epoch != 3 ||
        h->batch != j->task % 5 || h->step != j->task % 7) {
        fprintf(stderr, "\n    job %llu: reply ids task %llu attempt %u\n", (unsigned long long)j->task,
                (unsigned long long)h->task_id, h->attempt);
        return 0;
    }
    if (!j->ref) {
        char reason[PGD_WIRE_TEXT_MAX + 1];
        pgd_wire_text(m, reason, sizeof reason);
        if (h->type != PGD_WIRE_JOB_ERROR || !strstr(reason, j->path)) {
            fprintf(stderr, "\n    job %llu on %s: expected JOB_ERROR naming it, got %s '%s'\n",
                    (unsigned long long)j->task, j->path, pgd_wire_type_name(h->type), reason);
            return 0;
        }
        return 1;
    }
    if (h->type != PGD_WIRE_PATCHES) {
        char reason[PGD_WIRE_TEXT_MAX + 1];
        pgd_wire_text(m, reason, sizeof reason);
        fprintf(stderr, "\n    job %llu: %s '%s'\n", (unsigned long long)j->task, pgd_wire_type_name(h->type), reason);
        return 0;
    }
    if (h->patches_per_image != j->ncells || h->patch_size != j->p || h->channels != 3 || h->grid_m != j->m ||
        h->grid_n != j->n || m->n_cells != j->ncells)
        return 0;
    size_t bytes = (size_t)j->p * j->p * 3;
    for (size_t i = 0; i < j->ncells; i++) {
        uint32_t r, c;
        if (pgd_wire_cell(m, i, &r, &c) != 0 || r != j->cells[2 * i] || c != j->cells[2 * i + 1])
            return 0;
        if (memcmp(pgd_wire_patch(m, 0, i), ref_patch(j->ref, r, c), bytes) != 0) {
            fprintf(stderr, "\n    job %llu: patch %zu (cell %u,%u) differs from the patcher's\n",
                    (unsigned long long)j->task, i, r, c);
            return 0;
        }
    }
    return 1;
}

/* Send jobs[0..n) to the peers in `use` (a bit mask), never more than a peer's credit outstanding, and
 * check every reply. answered[] counts replies per job. Returns the number of wrong replies, or -1 when
 * the replies stop coming. */
static int run_jobs(sampler *s, unsigned use, const job *jobs, size_t n, int *answered)
{
    size_t next = 0, done = 0;
    int wrong = 0;
    while (done < n) {
        for (int i = 0; i < s->npeers && next < n; i++) {
            peer *pr = &s->peers[i];
            while ((use >> i & 1) && next < n && pr->outstanding < (int)pr->credit) {
                if (sampler_send_job(s, i, &jobs[next++]) != 0)
                    return -1;
            }
        }
        pgd_wire_rx rx;
        int from;
        if (sampler_reply(s, &rx, &from) != 0)
            return -1;
        size_t k = n;
        for (size_t i = 0; i < n; i++)
            if (jobs[i].task == rx.msg.h.task_id)
                k = i;
        if (k == n || from < 0) {
            wrong++;
        } else {
            answered[k]++;
            wrong += !reply_matches(&rx, &jobs[k]);
            s->peers[from].outstanding--;
            s->peers[from].answered++;
            done++;
        }
        pgd_wire_rx_close(&rx);
    }
    return wrong;
}

/* STOP every peer and wait for each child: returns how many exited 0. */
static int stop_all(sampler *s, child *c, int n)
{
    int ok = 0;
    for (int i = 0; i < s->npeers; i++)
        sampler_send_type(s, i, PGD_WIRE_STOP);
    for (int i = 0; i < n; i++)
        if (c[i].pid > 0)
            ok += exited_with(loader_wait(&c[i]), 0);
    return ok;
}

/* ---- cases ------------------------------------------------------------------------------------- */

static void test_usage(void)
{
    static const struct {
        const char *args[8];
        int code;
        const char *says;
    } cases[] = {
        {{NULL}, 2, "connect"},
        {{"--connect", "ipc:///nonexistent/x.ipc", "--credit", "0", NULL}, 2, "credit"},
        {{"--connect", "bogus://somewhere", NULL}, 2, "bogus://somewhere"},
        {{"--connect", "tcp://127.0.0.1", NULL}, 2, "tcp://127.0.0.1"},
        {{"--connect", "ipc:///nonexistent/x.ipc", "extra", NULL}, 2, "unexpected argument 'extra'"},
        {{"--connect", "ipc:///nonexistent/x.ipc", "--name", "", NULL}, 2, "'name'"},
        {{"--connect", "ipc:///nonexistent/x.ipc", "--heartbeat-ms", "soon", NULL}, 2,
         "--heartbeat-ms: 'soon' is not an integer"},
        {{"--connect", "ipc:///nonexistent/x.ipc", "--chunk", "0", NULL}, 2, "chunk"},
        {{"--help", NULL}, 0, "liveness"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        child c;
        CU_ASSERT_EQUAL_FATAL(loader_start(&c, "usage", NULL, cases[i].args), 0);
        int st = loader_wait(&c);
        if (!exited_with(st, cases[i].code))
            fprintf(stderr, "\n    usage case %zu: status %d, expected exit %d\n", i, st, cases[i].code);
        CU_ASSERT(exited_with(st, cases[i].code));
        CU_ASSERT(log_has(&c, cases[i].says));
        unlink(c.log);
    }
}

static void test_reason_text(void)
{
    static const struct {
        const char *in;
        size_t cap;
        const char *out;
    } cases[] = {
        {"plain /a/b.tiff: bad", 64, "plain /a/b.tiff: bad"},
        {"", 64, "unknown error"},
        {"tab\there\nnewline", 64, "tab?here?newline"},
        {"latin1 \xe9t\xe9", 64, "latin1 ?t?"},
        {"utf8 \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 64,
         "utf8 \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"overlong \xc0\xaf \xe0\x80\xaf", 64, "overlong ?? ???"},
        {"surrogate \xed\xa0\x80", 64, "surrogate ???"},
        {"too big \xf4\x90\x80\x80", 64, "too big ????"},
        {"cut \xc3\xa9\xc3\xa9", 8, "cut \xc3\xa9"}, /* 7 bytes fit: the second e-acute would not */
        {"lonely \x80 continuation", 64, "lonely ? continuation"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char out[64];
        size_t n = pgd_serve_reason(cases[i].in, out, cases[i].cap);
        if (strcmp(out, cases[i].out) != 0)
            fprintf(stderr, "\n    reason case %zu: '%s', expected '%s'\n", i, out, cases[i].out);
        CU_ASSERT_STRING_EQUAL(out, cases[i].out);
        CU_ASSERT_EQUAL(n, strlen(cases[i].out));
    }
}

static void test_registration(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "reg");
    child c[2];
    const char *a[] = {"--connect", s.endpoint, "--name", "loader-a", "--credit", "3", NULL};
    const char *b[] = {"--connect", s.endpoint, NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c[0], "reg-a", NULL, a), 0);
    CU_ASSERT_EQUAL_FATAL(loader_start(&c[1], "reg-b", NULL, b), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL(sampler_await_hellos(&s, 2), 0);
    char host[128], want[200];
    CU_ASSERT_EQUAL(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = '\0';
    snprintf(want, sizeof want, "%s:%d", host, (int)c[1].pid);
    int ia = peer_named(&s, "loader-a"), ib = peer_named(&s, want);
    CU_ASSERT(ia >= 0 && ib >= 0);
    if (ia >= 0 && ib >= 0) {
        CU_ASSERT_EQUAL(s.peers[ia].credit, 3);
        CU_ASSERT_EQUAL(s.peers[ib].credit, 2);
    }
    CU_ASSERT_EQUAL(stop_all(&s, c, 2), 2);
    char line[400];
    snprintf(line, sizeof line, "serving %s as 'loader-a', credit 3", s.endpoint);
    CU_ASSERT(log_has(&c[0], line));
    CU_ASSERT(log_has(&c[0], "exiting (STOP)"));
    sampler_close(&s);
}

/* Fit and native jobs on panda and ultramnist slides, equal byte for byte to the patcher's own output;
 * consecutive jobs on one slide and spec reuse the open slide. */
static void test_jobs(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "jobs");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "jobs", "--chunk", "5", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "jobs", "debug", args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    job jobs[] = {
        job_on(&fx.refs[R_FIT0], 1, 0, 0),        job_on(&fx.refs[R_FIT0], 2, 7, 3),
        job_on(&fx.refs[R_FIT0], 3, 1, 4),        job_on(&fx.refs[R_NATIVE0], 4, 0, 0),
        job_on(&fx.refs[R_NATIVE0], 5, 9, 5),     job_on(&fx.refs[R_NATIVE1_L1], 6, 0, 0),
        job_on(&fx.refs[R_UM], 7, 0, 0),          job_on(&fx.refs[R_FIT1], 8, 16, 9),
    };
    jobs[2].attempt = 4;
    size_t n = sizeof jobs / sizeof *jobs;
    int answered[8] = {0};
    CU_ASSERT_EQUAL(run_jobs(&s, 1, jobs, n, answered), 0);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(answered[i], 1);
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    char opened[400];
    snprintf(opened, sizeof opened, "opened %s: grid %ux%u of 128 px", fx.panda[0], fx.refs[R_FIT0].m,
             fx.refs[R_FIT0].n);
    CU_ASSERT_EQUAL(log_count(&c, opened), 1); /* jobs 1-3 share one open slide */
    unsigned ok, failed, unanswered, bad;
    CU_ASSERT_EQUAL_FATAL(log_summary(&c, &ok, &failed, &unanswered, &bad), 0);
    CU_ASSERT_EQUAL(ok, n);
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT_EQUAL(bad, 0);
    sampler_close(&s);
}

/* A slide rewritten under the same path between two jobs is opened again, not served from the old one. */
static void test_slide_replaced(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    char path[320], tmp[330];
    snprintf(path, sizeof path, "%s/swap.tiff", pgd_test_tmpdir());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CU_ASSERT_EQUAL_FATAL(copy_part(fx.panda[1], path, 1, 1), 0);
    sampler s;
    sampler_endpoint(&s, "swap");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "swap", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "swap", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    job j[3] = {job_on(&fx.refs[R_FIT1], 1, 0, 0), job_on(&fx.refs[R_FIT1], 2, 0, 0),
                job_on(&fx.refs[R_FIT0], 3, 0, 0)};
    int answered[3] = {0};
    for (int i = 0; i < 3; i++) {
        j[i].path = path;
        if (i == 2) { /* now the other slide goes in its place */
            CU_ASSERT_EQUAL(copy_part(fx.panda[0], tmp, 1, 1), 0);
            CU_ASSERT_EQUAL(rename(tmp, path), 0);
        }
        CU_ASSERT_EQUAL(run_jobs(&s, 1, &j[i], 1, &answered[i]), 0);
        CU_ASSERT_EQUAL(answered[i], 1);
    }
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    CU_ASSERT_EQUAL(unlink(path), 0);
    sampler_close(&s);
}

/* Jobs alternating between two fit slides: with the cache each slide is opened (and resampled) once; with
 * room for one slide only, every job opens its slide again. The patches are right either way. */
static void cache_run(const char *tag, const char *slides_opt, unsigned want_opens, const char *want_summary)
{
    sampler s;
    sampler_endpoint(&s, tag);
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", tag, "--cache-slides", slides_opt, NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, tag, "debug", args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    job jobs[6];
    for (int i = 0; i < 6; i++)
        jobs[i] = job_on(&fx.refs[i % 2 ? R_FIT1 : R_FIT0], 10 + (uint64_t)i, 1 + (size_t)i, (uint32_t)i);
    int answered[6] = {0};
    CU_ASSERT_EQUAL(run_jobs(&s, 1, jobs, 6, answered), 0);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(answered[i], 1);
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    char opened[400];
    snprintf(opened, sizeof opened, "opened %s: grid", fx.panda[0]);
    CU_ASSERT_EQUAL(log_count(&c, opened), want_opens);
    snprintf(opened, sizeof opened, "opened %s: grid", fx.panda[1]);
    CU_ASSERT_EQUAL(log_count(&c, opened), want_opens);
    CU_ASSERT(log_has(&c, want_summary));
    sampler_close(&s);
}

static void test_slide_cache(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    cache_run("cache", "16", 1, "slides opened 2, reused 4, closed for room 0");
    cache_run("nocache", "1", 3, "slides opened 6, reused 0, closed for room 5");
}

/* 90 jobs over 3 loaders: each answered exactly once, correctly, and every loader took part. */
static void test_three_loaders(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "three");
    child c[3];
    for (int i = 0; i < 3; i++) {
        char name[16], logname[16];
        snprintf(name, sizeof name, "l%d", i);
        snprintf(logname, sizeof logname, "three-%d", i);
        const char *args[] = {"--connect", s.endpoint, "--name", name, NULL};
        CU_ASSERT_EQUAL_FATAL(loader_start(&c[i], logname, NULL, args), 0);
    }
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 3), 0);
    enum { N = 90 };
    static job jobs[N];
    for (int i = 0; i < N; i++)
        jobs[i] = job_on(&fx.refs[i % R_COUNT], 1000 + (uint64_t)i, 1 + (size_t)i % 12, (uint32_t)i);
    int answered[N] = {0};
    CU_ASSERT_EQUAL(run_jobs(&s, 7, jobs, N, answered), 0);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(answered[i], 1);
    for (int i = 0; i < 3; i++)
        CU_ASSERT(s.peers[i].answered > 0);
    CU_ASSERT_EQUAL(stop_all(&s, c, 3), 3);
    sampler_close(&s);
}

/* Missing, empty, truncated and non-slide files, a channel count and a grid the slide does not have: each
 * a JOB_ERROR naming the file and the fault, and the next good job still works. */
static void test_bad_slides(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "bad");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "bad", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "bad", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    const ref *fit = &fx.refs[R_FIT0];
    struct {
        job j;
        const char *says[2];
    } cases[] = {
        {job_bad(fit, 10, fx.missing), {NULL}},
        {job_bad(fit, 11, fx.empty), {NULL}},
        {job_bad(fit, 12, fx.truncated), {NULL}},
        {job_bad(fit, 13, fx.text), {NULL}},
        {job_bad(fit, 14, fx.panda[0]), {"4 channels", "RGB"}},
        {job_bad(fit, 15, fx.panda[0]), {"grid 5x4", NULL}},
    };
    cases[4].j.channels = 4;
    cases[5].j.m = 5;
    char slide_grid[64];
    snprintf(slide_grid, sizeof slide_grid, "slide's %ux%u", fit->m, fit->n);
    cases[5].says[1] = slide_grid;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        job good = job_on(&fx.refs[i % 2 ? R_NATIVE0 : R_FIT0], 100 + i, 3, (uint32_t)i);
        CU_ASSERT_EQUAL_FATAL(sampler_send_job(&s, 0, &cases[i].j), 0);
        CU_ASSERT_EQUAL_FATAL(sampler_send_job(&s, 0, &good), 0);
        for (int k = 0; k < 2; k++) {
            pgd_wire_rx rx;
            int from;
            CU_ASSERT_EQUAL_FATAL(sampler_reply(&s, &rx, &from), 0);
            const job *j = rx.msg.h.task_id == good.task ? &good : &cases[i].j;
            CU_ASSERT(reply_matches(&rx, j));
            char reason[PGD_WIRE_TEXT_MAX + 1];
            pgd_wire_text(&rx.msg, reason, sizeof reason);
            for (int w = 0; w < 2 && j == &cases[i].j; w++)
                if (cases[i].says[w] && !strstr(reason, cases[i].says[w])) {
                    fprintf(stderr, "\n    bad case %zu: '%s' lacks '%s'\n", i, reason, cases[i].says[w]);
                    CU_FAIL("reason lacks the expected words");
                }
            pgd_wire_rx_close(&rx);
        }
    }
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    unsigned ok, failed, unanswered, bad;
    CU_ASSERT_EQUAL_FATAL(log_summary(&c, &ok, &failed, &unanswered, &bad), 0);
    CU_ASSERT_EQUAL(ok, 6);
    CU_ASSERT_EQUAL(failed, 6);
    CU_ASSERT_EQUAL(log_count(&c, "failed: "), 6); /* a warn per failed job */
    sampler_close(&s);
}

/* Send raw frames to peer `to`: the routing id, then frames (the last without SNDMORE). */
static int send_raw(sampler *s, int to, const pgd_wire_frame *frames, size_t n)
{
    if (zmq_send(s->router, s->peers[to].id, s->peers[to].id_len, ZMQ_SNDMORE) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (zmq_send(s->router, frames[i].data, frames[i].len, i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    return 0;
}

/* Bad CRC, a short header, a JOB missing a frame, and messages of the wrong kind: dropped and counted, one
 * warning per reason; the loader goes on answering. */
static void test_bad_messages(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "msgs");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "msgs", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "msgs", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);

    uint8_t head[PGD_WIRE_HEADER_SIZE];
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_HEARTBEAT);
    pgd_wire_header_pack(&h, head);
    head[124] ^= 0x5A; /* the CRC */
    pgd_wire_frame crc[1] = {{head, sizeof head}};
    CU_ASSERT_EQUAL(send_raw(&s, 0, crc, 1), 0);

    pgd_wire_frame shorty[1] = {{"PGDW", 4}};
    CU_ASSERT_EQUAL(send_raw(&s, 0, shorty, 1), 0);

    /* a JOB whose header announces 3 frames, sent with 2 */
    job j = job_on(&fx.refs[R_FIT0], 50, 2, 1);
    uint8_t spec[PGD_WIRE_SPEC_SIZE], cells[2 * PGD_WIRE_CELL_SIZE], jhead[PGD_WIRE_HEADER_SIZE];
    pgd_wire_put_spec(spec, &j.spec);
    pgd_wire_put_cell(cells, 0, 0, 0);
    pgd_wire_put_cell(cells, 1, 1, 1);
    pgd_wire_header_init(&h, PGD_WIRE_JOB);
    h.task_id = 50;
    h.attempt = 1;
    h.n_images = 1;
    h.patches_per_image = 2;
    h.patch_size = j.p;
    h.channels = 3;
    h.grid_m = j.m;
    h.grid_n = j.n;
    pgd_wire_frame jf[3] = {{spec, sizeof spec}, {j.path, strlen(j.path)}, {cells, sizeof cells}};
    CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&h, jf, 3, jhead, NULL), 0);
    pgd_wire_frame two[3] = {{jhead, sizeof jhead}, jf[0], jf[1]};
    CU_ASSERT_EQUAL(send_raw(&s, 0, two, 3), 0);

    /* a well-formed BATCH and a HELLO: not for a loader */
    pgd_wire_header_init(&h, PGD_WIRE_BATCH);
    h.flags = PGD_WIRE_FLAG_FILL;
    h.n_images = 1;
    h.patches_per_image = 1;
    h.patch_size = 2;
    h.channels = 3;
    h.grid_m = 1;
    h.grid_n = 1;
    uint8_t px[12] = {0}, cell[8] = {0}, ids[PGD_WIRE_ID_SLOT] = {0}, label[4] = {0};
    CU_ASSERT_EQUAL(pgd_wire_put_id(ids, 0, "img", NULL), 0);
    pgd_wire_frame bf[4] = {{px, sizeof px}, {cell, sizeof cell}, {ids, sizeof ids}, {label, sizeof label}};
    pgd_wire_frame rid = {s.peers[0].id, s.peers[0].id_len};
    CU_ASSERT_EQUAL(pgd_wire_send(s.router, &rid, &h, bf, 4, 0, NULL), 0);
    pgd_wire_header_init(&h, PGD_WIRE_HELLO);
    h.credit = 1;
    pgd_wire_frame name = {"sampler", 7};
    CU_ASSERT_EQUAL(pgd_wire_send(s.router, &rid, &h, &name, 1, 0, NULL), 0);

    job good[2] = {job_on(&fx.refs[R_FIT0], 51, 4, 2), job_on(&fx.refs[R_UM], 52, 0, 0)};
    int answered[2] = {0};
    CU_ASSERT_EQUAL(run_jobs(&s, 1, good, 2, answered), 0);
    CU_ASSERT(answered[0] == 1 && answered[1] == 1);
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    unsigned ok, failed, unanswered, bad;
    CU_ASSERT_EQUAL_FATAL(log_summary(&c, &ok, &failed, &unanswered, &bad), 0);
    CU_ASSERT_EQUAL(ok, 2);
    CU_ASSERT_EQUAL(bad, 5);
    CU_ASSERT(log_has(&c, "crc"));
    CU_ASSERT(log_has(&c, "unexpected BATCH message"));
    CU_ASSERT_EQUAL(log_count(&c, "unexpected HELLO message"), 0); /* same reason as BATCH: counted only */
    CU_ASSERT(log_has(&c, "rejected 5 messages"));
    sampler_close(&s);
}

/* Idle: HEARTBEATs with growing sequence numbers; a silent sampler gets a fresh HELLO, the loader stays. */
static void test_heartbeats(void)
{
    sampler s;
    sampler_endpoint(&s, "hb");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "hb", "--heartbeat-ms", "20", "--liveness", "4", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "hb", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    int beats = 0, hellos = 0;
    uint64_t last_seq = 0;
    int increasing = 1;
    int64_t end = pgd_clock_ms() + WAIT_MS;
    while ((beats < 3 || hellos < 1) && pgd_clock_ms() < end) {
        pgd_wire_rx rx;
        if (sampler_recv(&s, &rx, end - pgd_clock_ms()) != 0)
            break;
        if (rx.msg.h.type == PGD_WIRE_HEARTBEAT || rx.msg.h.type == PGD_WIRE_HELLO) {
            increasing &= rx.msg.h.task_id > last_seq;
            last_seq = rx.msg.h.task_id;
        }
        beats += rx.msg.h.type == PGD_WIRE_HEARTBEAT;
        if (rx.msg.h.type == PGD_WIRE_HELLO) {
            hellos++;
            CU_ASSERT_EQUAL(rx.msg.h.credit, 2);
        }
        pgd_wire_rx_close(&rx);
    }
    CU_ASSERT(beats >= 3);
    CU_ASSERT(hellos >= 1);
    CU_ASSERT(increasing);
    CU_ASSERT_EQUAL(waitpid(c.pid, NULL, WNOHANG), 0); /* still serving */
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    CU_ASSERT(log_has(&c, "nothing from the sampler for"));
    CU_ASSERT(log_has(&c, "the sampler is there again"));
    sampler_close(&s);
}

/* Heartbeats also go out between the patch chunks of a job. With a 1 ms period and one patch per chunk,
 * any job that takes several periods has chunk boundaries past a due heartbeat. */
static void test_heartbeats_while_busy(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "busy");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "busy", "--heartbeat-ms", "1",
                          "--liveness", "1000", "--chunk", "1", "--credit", "1", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "busy", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    int long_jobs = 0, beats_in_long = 0;
    for (int i = 0; i < 4; i++) {
        job j = job_on(&fx.refs[R_NATIVE0], 300 + (uint64_t)i, 0, 0);
        /* let the idle heartbeats already queued arrive first */
        pgd_wire_rx rx;
        while (sampler_recv(&s, &rx, 0) == 0)
            pgd_wire_rx_close(&rx);
        int before = s.heartbeats;
        int64_t t0 = pgd_clock_ms();
        CU_ASSERT_EQUAL_FATAL(sampler_send_job(&s, 0, &j), 0);
        int from;
        CU_ASSERT_EQUAL_FATAL(sampler_reply(&s, &rx, &from), 0);
        int64_t took = pgd_clock_ms() - t0;
        CU_ASSERT(reply_matches(&rx, &j));
        pgd_wire_rx_close(&rx);
        s.peers[0].outstanding--;
        if (took >= 10) {
            long_jobs++;
            beats_in_long += s.heartbeats - before > 0;
        }
    }
    if (long_jobs == 0)
        pgd_test_skip("every job took under 10 ms: no room for a heartbeat to be due");
    CU_ASSERT_EQUAL(beats_in_long, long_jobs);
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    sampler_close(&s);
}

/* STOP with jobs queued: the loader finishes nothing more and exits 0; every job is either answered or
 * counted as unanswered. */
static void test_stop(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "stop");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "stop", "--credit", "3", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "stop", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    for (int i = 0; i < 3; i++) {
        job j = job_on(&fx.refs[R_NATIVE0], 400 + (uint64_t)i, 0, 0);
        CU_ASSERT_EQUAL(sampler_send_job(&s, 0, &j), 0);
    }
    CU_ASSERT_EQUAL(sampler_send_type(&s, 0, PGD_WIRE_STOP), 0);
    int st = loader_wait(&c);
    CU_ASSERT(exited_with(st, 0));
    int replies = 0;
    pgd_wire_rx rx;
    while (sampler_recv(&s, &rx, 0) == 0) {
        replies += rx.msg.h.type == PGD_WIRE_PATCHES;
        pgd_wire_rx_close(&rx);
    }
    unsigned ok, failed, unanswered, bad;
    CU_ASSERT_EQUAL_FATAL(log_summary(&c, &ok, &failed, &unanswered, &bad), 0);
    CU_ASSERT_EQUAL(ok + unanswered, 3);
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT((unsigned)replies <= ok);
    CU_ASSERT(log_has(&c, "exiting (STOP)"));
    sampler_close(&s);
}

/* SIGTERM while a job decodes: that job is answered, then the loader exits 0. */
static void test_sigterm(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "term");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "term", "--chunk", "1", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "term", "debug", args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    job jobs[2] = {job_on(&fx.refs[R_NATIVE0], 501, 0, 0), job_on(&fx.refs[R_FIT1], 502, 0, 0)};
    CU_ASSERT_EQUAL(sampler_send_job(&s, 0, &jobs[0]), 0);
    CU_ASSERT_EQUAL(sampler_send_job(&s, 0, &jobs[1]), 0);
    CU_ASSERT_EQUAL_FATAL(log_wait(&c, "job 501 attempt 1: "), 0);
    CU_ASSERT_EQUAL(kill(c.pid, SIGTERM), 0);
    int got[2] = {0, 0};
    while (!got[0]) { /* 501 must come; 502 may, when it started before the signal landed */
        pgd_wire_rx rx;
        int from;
        CU_ASSERT_EQUAL_FATAL(sampler_reply(&s, &rx, &from), 0);
        for (int i = 0; i < 2; i++)
            if (rx.msg.h.task_id == jobs[i].task) {
                CU_ASSERT(reply_matches(&rx, &jobs[i]));
                got[i]++;
            }
        pgd_wire_rx_close(&rx);
    }
    int st = loader_wait(&c);
    CU_ASSERT(exited_with(st, 0));
    int got501 = got[0];
    CU_ASSERT_EQUAL(got501, 1);
    unsigned ok, failed, unanswered, bad;
    CU_ASSERT_EQUAL_FATAL(log_summary(&c, &ok, &failed, &unanswered, &bad), 0);
    CU_ASSERT_EQUAL(ok + unanswered, 2);
    CU_ASSERT(log_has(&c, "exiting (signal)"));
    sampler_close(&s);
}

/* A reply the sampler does not take keeps the loader waiting; the first SIGTERM waits on, the second
 * ends the process at once with exit code 1. */
static void test_second_signal(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "sig2");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "sig2", "--hwm", "1", "--credit", "12",
                          "--heartbeat-ms", "20", "--liveness", "1000", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "sig2", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 1), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    for (int i = 0; i < 12; i++) {
        job j = job_on(&fx.refs[R_NATIVE0], 600 + (uint64_t)i, 0, 0);
        CU_ASSERT_EQUAL(sampler_send_job(&s, 0, &j), 0);
    }
    /* the driver reads nothing now: replies pile up until the loader has to wait */
    CU_ASSERT_EQUAL_FATAL(log_wait(&c, "the sampler is not reading"), 0);
    CU_ASSERT_EQUAL(kill(c.pid, SIGTERM), 0);
    CU_ASSERT_EQUAL_FATAL(log_wait(&c, "signal: finishing the job in hand"), 0);
    CU_ASSERT_EQUAL(waitpid(c.pid, NULL, WNOHANG), 0);
    CU_ASSERT_EQUAL(kill(c.pid, SIGTERM), 0);
    int st = loader_wait(&c);
    CU_ASSERT(exited_with(st, 1));
    CU_ASSERT(log_has(&c, "second signal, exiting now"));
    sampler_close(&s);
}

/* SIGKILL one of three loaders mid-stream: the sampler (this driver) re-issues its jobs, the two others
 * answer everything. */
static void test_sigkill_one(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "kill");
    child c[3];
    for (int i = 0; i < 3; i++) {
        char name[16], logname[16];
        snprintf(name, sizeof name, "k%d", i);
        snprintf(logname, sizeof logname, "kill-%d", i);
        const char *args[] = {"--connect", s.endpoint, "--name", name, NULL};
        CU_ASSERT_EQUAL_FATAL(loader_start(&c[i], logname, NULL, args), 0);
    }
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 3), 0);
    int victim = peer_named(&s, "k0");
    CU_ASSERT_FATAL(victim >= 0);
    enum { N = 40 };
    static job jobs[N];
    int owner[N], answered[N] = {0}, wrong = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = job_on(&fx.refs[i % R_COUNT], 700 + (uint64_t)i, 1 + (size_t)i % 10, (uint32_t)i);
        owner[i] = -1;
    }
    unsigned alive = 7;
    int next = 0, done = 0, killed = 0, survivors_after = 0;
    int64_t end = pgd_clock_ms() + WAIT_MS;
    while (done < N && pgd_clock_ms() < end) {
        for (int p = 0; p < 3; p++) /* fill every live loader up to its credit, re-issued jobs first */
            for (int i = 0; i < N && (alive >> p & 1) && s.peers[p].outstanding < (int)s.peers[p].credit; i++)
                if (!answered[i] && owner[i] == -1 && (i < next || i == next)) {
                    owner[i] = p;
                    CU_ASSERT_EQUAL_FATAL(sampler_send_job(&s, p, &jobs[i]), 0);
                    next += i == next;
                }
        pgd_wire_rx rx;
        int from;
        CU_ASSERT_EQUAL_FATAL(sampler_reply(&s, &rx, &from), 0);
        int k = (int)(rx.msg.h.task_id - 700);
        if (k >= 0 && k < N && from >= 0 && (alive >> from & 1) && owner[k] == from &&
            rx.msg.h.attempt == jobs[k].attempt) {
            wrong += !reply_matches(&rx, &jobs[k]);
            answered[k]++;
            s.peers[from].outstanding--;
            owner[k] = -2;
            done++;
            survivors_after += killed && from != victim;
        } /* else: a reply the dead loader sent before it died, for a job since re-issued */
        pgd_wire_rx_close(&rx);
        if (done == 8 && !killed) {
            CU_ASSERT_EQUAL(kill(c[0].pid, SIGKILL), 0); /* c[0] is k0 */
            int st = loader_wait(&c[0]);
            CU_ASSERT(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
            killed = 1;
            alive &= ~(1u << victim);
            for (int i = 0; i < N; i++) /* what it held goes to the others, as a new attempt */
                if (owner[i] == victim) {
                    owner[i] = -1;
                    jobs[i].attempt++;
                }
            s.peers[victim].outstanding = 0;
        }
    }
    CU_ASSERT_EQUAL(done, N);
    CU_ASSERT_EQUAL(wrong, 0);
    CU_ASSERT(survivors_after > 0);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(answered[i], 1);
    for (int p = 0; p < 3; p++)
        if (p != victim)
            sampler_send_type(&s, p, PGD_WIRE_STOP);
    for (int p = 0; p < 3; p++)
        if (c[p].pid > 0)
            CU_ASSERT(exited_with(loader_wait(&c[p]), 0));
    sampler_close(&s);
}

/* 500 failed jobs: the loader keeps answering and its resident memory after 500 stays within 8 MiB of
 * what it was after 50. */
static void test_memory(void)
{
    CU_ASSERT_FATAL(fixtures() == 0);
    sampler s;
    sampler_endpoint(&s, "mem");
    child c;
    const char *args[] = {"--connect", s.endpoint, "--name", "mem", NULL};
    CU_ASSERT_EQUAL_FATAL(loader_start(&c, "mem", NULL, args), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_bind(&s, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sampler_await_hellos(&s, 1), 0);
    const char *bad[] = {fx.missing, fx.text, fx.truncated, fx.empty};
    enum { N = 500 };
    static job jobs[N];
    static int answered[N];
    for (int i = 0; i < N; i++)
        jobs[i] = job_bad(&fx.refs[i % 2 ? R_FIT0 : R_NATIVE0], 10000 + (uint64_t)i, bad[i % 4]);
    CU_ASSERT_EQUAL(run_jobs(&s, 1, jobs, 50, answered), 0);
    long rss50 = vm_rss_kib(c.pid);
    CU_ASSERT_EQUAL(run_jobs(&s, 1, jobs + 50, N - 50, answered + 50), 0);
    long rss500 = vm_rss_kib(c.pid);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(answered[i], 1);
    printf("\n    loader VmRSS after 50 failed jobs %ld KiB, after 500 %ld KiB (%+ld KiB) ", rss50, rss500,
           rss500 - rss50);
    CU_ASSERT(rss50 > 0 && rss500 > 0);
#if PGD_TEST_ASAN
    /* AddressSanitizer keeps freed blocks resident in its quarantine (256 MiB by default), so RSS grows with
     * every free: here the leak check at the child's exit (child_exit) is the memory check instead. */
    printf("(RSS bound not checked under AddressSanitizer; the child's leak check stands in) ");
#else
    CU_ASSERT(rss500 <= rss50 + 8 * 1024);
#endif
    job good = job_on(&fx.refs[R_FIT0], 20000, 0, 0);
    int ok1 = 0;
    CU_ASSERT_EQUAL(run_jobs(&s, 1, &good, 1, &ok1), 0);
    CU_ASSERT_EQUAL(stop_all(&s, &c, 1), 1);
    unsigned ok, failed, unanswered, nbad;
    CU_ASSERT_EQUAL_FATAL(log_summary(&c, &ok, &failed, &unanswered, &nbad), 0);
    CU_ASSERT_EQUAL(failed, N);
    CU_ASSERT_EQUAL(ok, 1);
    sampler_close(&s);
}

static const pgd_test_case cases[] = {
    {"usage", test_usage},
    {"reason_text", test_reason_text},
    {"registration", test_registration},
    {"jobs", test_jobs},
    {"slide_replaced", test_slide_replaced},
    {"slide_cache", test_slide_cache},
    {"three_loaders", test_three_loaders},
    {"bad_slides", test_bad_slides},
    {"bad_messages", test_bad_messages},
    {"heartbeats", test_heartbeats},
    {"heartbeats_while_busy", test_heartbeats_while_busy},
    {"stop", test_stop},
    {"sigterm", test_sigterm},
    {"second_signal", test_second_signal},
    {"sigkill_one", test_sigkill_one},
    {"memory", test_memory},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    int rc = pgd_test_main("loader_serve", cases, argc, argv);
    fixtures_free();
    return rc;
}
