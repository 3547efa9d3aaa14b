/* wire_zmq.c: pgd wire messages over ZeroMQ: multipart send, whole-message receive with validation, CURVE keys. */
#include "wire_zmq.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* The error for a zmq_msg_send that failed with errno e. */
static int send_failed(int e, pgd_err *err)
{
    errno = e;
    if (e == EAGAIN)
        return pgd_fail(err, PGD_EBUSY, "wire: send would block");
    if (e == EHOSTUNREACH)
        return pgd_fail(err, PGD_ENOENT, "wire: send: no peer with this routing id");
    return pgd_fail_errno(err, PGD_EIO, "wire: zmq_msg_send");
}

/* Send one frame (a copy of data), retrying EINTR. Only a ZMQ_DONTWAIT frame can meet EAGAIN (PGD_EBUSY). */
static int send_part(void *sock, const void *data, size_t len, int zflags, pgd_err *err)
{
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, len) != 0)
        return pgd_fail_errno(err, PGD_ENOMEM, "wire: zmq_msg_init_size %zu", len);
    if (len)
        memcpy(zmq_msg_data(&m), data, len);
    while (zmq_msg_send(&m, sock, zflags) == -1) {
        int e = errno;
        if (e == EINTR)
            continue;
        zmq_msg_close(&m);
        return send_failed(e, err);
    }
    return 0;
}

/* The hint ZeroMQ gets with a given buffer: the caller's free function, called only while armed (a frame
 * that could not be sent goes back to the caller, not to its free function). */
typedef struct zc_gift {
    pgd_wire_free_fn *fn;
    void *hint;
    int armed;
} zc_gift;

static void zc_release(void *data, void *hint)
{
    zc_gift *g = hint;
    if (g->armed)
        g->fn(data, g->hint);
    free(g);
}

/* Send frame f without copying it; *given = 1 once ZeroMQ holds it. */
static int send_given(void *sock, pgd_wire_frame f, pgd_wire_free_fn *free_fn, void *hint, int zflags, int *given,
                      pgd_err *err)
{
    zc_gift *g = malloc(sizeof *g);
    if (!g)
        return pgd_fail(err, PGD_ENOMEM, "wire: out of memory");
    g->fn = free_fn;
    g->hint = hint;
    g->armed = 1; /* before the send: ZeroMQ's I/O thread may release the frame as soon as it is queued */
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, (void *)f.data, f.len, zc_release, g) != 0) {
        free(g);
        return pgd_fail_errno(err, PGD_ENOMEM, "wire: zmq_msg_init_data %zu", f.len);
    }
    while (zmq_msg_send(&m, sock, zflags) == -1) {
        int e = errno;
        if (e == EINTR)
            continue;
        /* not taken: the message is still ours alone, so closing it releases it here, in this thread */
        g->armed = 0;
        zmq_msg_close(&m);
        return send_failed(e, err);
    }
    *given = 1;
    return 0;
}

/* Encode, then send the routing id, the header and the frames; frame `give` (when < n) without a copy. */
static int send_frames(void *sock, const pgd_wire_frame *routing_id, const pgd_wire_header *h,
                       const pgd_wire_frame *frames, size_t n, size_t give, pgd_wire_free_fn *free_fn, void *hint,
                       int flags, int *given, pgd_err *err)
{
    uint8_t head[PGD_WIRE_HEADER_SIZE];
    if (pgd_wire_encode(h, frames, n, head, err) < 0)
        return -1;
    int first = (flags & PGD_WIRE_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    if (routing_id) {
        if (send_part(sock, routing_id->data, routing_id->len, ZMQ_SNDMORE | first, err) < 0)
            return -1;
        first = 0;
    }
    if (send_part(sock, head, sizeof head, (n ? ZMQ_SNDMORE : 0) | first, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int more = i + 1 < n ? ZMQ_SNDMORE : 0;
        int rc = i == give ? send_given(sock, frames[i], free_fn, hint, more, given, err)
                           : send_part(sock, frames[i].data, frames[i].len, more, err);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int pgd_wire_send(void *sock, const pgd_wire_frame *routing_id, const pgd_wire_header *h,
                  const pgd_wire_frame *frames, size_t n, int flags, pgd_err *err)
{
    return send_frames(sock, routing_id, h, frames, n, n, NULL, NULL, flags, NULL, err);
}

int pgd_wire_send_zc(void *sock, const pgd_wire_frame *routing_id, const pgd_wire_header *h,
                     const pgd_wire_frame *frames, size_t n, size_t give, pgd_wire_free_fn *free_fn, void *hint,
                     int flags, int *given, pgd_err *err)
{
    *given = 0;
    if (give >= n || !frames[give].data || !free_fn)
        return pgd_fail(err, PGD_EINVAL, "wire: frame %zu of %zu cannot be given (no data or no free function)",
                        give, n);
    return send_frames(sock, routing_id, h, frames, n, give, free_fn, hint, flags, given, err);
}

/* Receive one frame into m (initialised here; closed again on failure), retrying EINTR. */
static int recv_part(void *sock, zmq_msg_t *m, int zflags, pgd_err *err)
{
    if (zmq_msg_init(m) != 0)
        return pgd_fail_errno(err, PGD_EIO, "wire: zmq_msg_init");
    while (zmq_msg_recv(m, sock, zflags) == -1) {
        int e = errno;
        if (e == EINTR)
            continue;
        zmq_msg_close(m);
        errno = e;
        if (e == EAGAIN)
            return pgd_fail(err, PGD_EBUSY, "wire: no message waiting");
        return pgd_fail_errno(err, PGD_EIO, "wire: zmq_msg_recv");
    }
    return 0;
}

/* Take every frame of the next message: the routing id, up to 6 frames kept, the rest received and
 * dropped. Fails only for a socket error (or EAGAIN on the first frame). */
static int recv_all(void *sock, pgd_wire_rx *rx, int want_routing_id, int zflags, pgd_err *err)
{
    int more = 1;
    while (more) {
        zmq_msg_t spill, *dst;
        int first = !rx->has_routing && rx->nreceived == 0;
        if (want_routing_id && first)
            dst = &rx->routing;
        else if (rx->nparts < 1 + PGD_WIRE_MAX_FRAMES)
            dst = &rx->parts[rx->nparts];
        else
            dst = &spill;
        if (recv_part(sock, dst, first ? zflags : 0, err) < 0)
            return -1;
        more = zmq_msg_more(dst);
        if (dst == &rx->routing) {
            rx->has_routing = 1;
            continue;
        }
        rx->nreceived++;
        if (dst == &spill)
            zmq_msg_close(&spill);
        else
            rx->nparts++;
    }
    return 0;
}

int pgd_wire_recv(void *sock, pgd_wire_rx *rx, int want_routing_id, int flags, pgd_err *err)
{
    memset(rx, 0, sizeof *rx);
    if (recv_all(sock, rx, want_routing_id, (flags & PGD_WIRE_DONTWAIT) ? ZMQ_DONTWAIT : 0, err) < 0)
        return -1;
    if (rx->nreceived > rx->nparts) {
        rx->msg.reason = PGD_WIRE_R_NFRAMES;
        return pgd_fail(err, PGD_EFORMAT, "wire: message has %zu frames, at most %d (header + %d payload); dropped",
                        rx->nreceived, 1 + PGD_WIRE_MAX_FRAMES, PGD_WIRE_MAX_FRAMES);
    }
    pgd_wire_frame frames[1 + PGD_WIRE_MAX_FRAMES];
    for (size_t i = 0; i < rx->nparts; i++) {
        frames[i].data = zmq_msg_data(&rx->parts[i]);
        frames[i].len = zmq_msg_size(&rx->parts[i]);
    }
    return pgd_wire_decode(frames, rx->nparts, &rx->msg, err);
}

pgd_wire_frame pgd_wire_rx_routing_id(const pgd_wire_rx *rx)
{
    pgd_wire_frame f = {NULL, 0};
    if (rx->has_routing) {
        /* zmq_msg_data/size take a non-const message but do not change it */
        zmq_msg_t *m = (zmq_msg_t *)&rx->routing;
        f.data = zmq_msg_data(m);
        f.len = zmq_msg_size(m);
    }
    return f;
}

void pgd_wire_rx_close(pgd_wire_rx *rx)
{
    if (rx->has_routing)
        zmq_msg_close(&rx->routing);
    for (size_t i = 0; i < rx->nparts; i++)
        zmq_msg_close(&rx->parts[i]);
    rx->has_routing = 0;
    rx->nparts = 0;
    rx->nreceived = 0;
    memset(&rx->msg, 0, sizeof rx->msg);
}

void pgd_wire_keep_pages(void)
{
#ifdef __GLIBC__
    /* every block from the heaps (none mapped on its own), and no trimming of free memory at their tops */
    (void)mallopt(M_MMAP_MAX, 0);
    (void)mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

/* --- CURVE ---------------------------------------------------------------------------------------- */

static int need_curve(pgd_err *err)
{
    if (!zmq_has("curve"))
        return pgd_fail(err, PGD_EINVAL, "this libzmq was built without CURVE (zmq_has(\"curve\") is 0): rebuild "
                        "it with libsodium, or use ipc:// / loopback endpoints without keys");
    return 0;
}

int pgd_wire_curve_read(const char *path, char key[PGD_WIRE_CURVE_KEY + 1], pgd_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return pgd_fail_errno(err, PGD_EINVAL, "key file %s", path);
    char line[256];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        found = 1;
        uint8_t raw[32];
        if (n != PGD_WIRE_CURVE_KEY || !zmq_z85_decode(raw, line)) {
            fclose(f);
            return pgd_fail(err, PGD_EINVAL, "key file %s: expected a key of %d Z85 characters", path,
                            PGD_WIRE_CURVE_KEY);
        }
        memcpy(key, line, PGD_WIRE_CURVE_KEY + 1);
    }
    fclose(f);
    return found ? 0 : pgd_fail(err, PGD_EINVAL, "key file %s: no key in it", path);
}

static int write_key(const char *path, const char *key, mode_t mode, const char *what, pgd_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return pgd_fail_errno(err, PGD_EIO, "create %s", path);
    char text[128];
    int n = snprintf(text, sizeof text, "# pgd CURVE %s key\n%s\n", what, key);
    int ok = n > 0 && write(fd, text, (size_t)n) == n;
    if (close(fd) != 0 || !ok)
        return pgd_fail_errno(err, PGD_EIO, "write %s", path);
    return 0;
}

int pgd_wire_curve_keygen(const char *prefix, pgd_err *err)
{
    if (need_curve(err) != 0)
        return -1;
    char pub[PGD_WIRE_CURVE_KEY + 1], sec[PGD_WIRE_CURVE_KEY + 1], path[4096];
    if (zmq_curve_keypair(pub, sec) != 0)
        return pgd_fail_errno(err, PGD_EIO, "zmq_curve_keypair");
    snprintf(path, sizeof path, "%s.key", prefix);
    if (write_key(path, sec, 0600, "secret", err) != 0)
        return -1;
    snprintf(path, sizeof path, "%s.pub", prefix);
    return write_key(path, pub, 0644, "public", err);
}

static int set_key(void *sock, int opt, const char *key, const char *name, pgd_err *err)
{
    if (zmq_setsockopt(sock, opt, key, PGD_WIRE_CURVE_KEY) != 0)
        return pgd_fail_errno(err, PGD_EIO, "zmq_setsockopt %s", name);
    return 0;
}

int pgd_wire_curve_server(void *sock, const char *secret_file, pgd_err *err)
{
    char sec[PGD_WIRE_CURVE_KEY + 1];
    int one = 1;
    if (need_curve(err) != 0 || pgd_wire_curve_read(secret_file, sec, err) != 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0)
        return pgd_fail_errno(err, PGD_EIO, "zmq_setsockopt CURVE_SERVER");
    return set_key(sock, ZMQ_CURVE_SECRETKEY, sec, "CURVE_SECRETKEY", err);
}

int pgd_wire_curve_client(void *sock, const char *server_public_file, const char *client_secret_file, pgd_err *err)
{
    char server[PGD_WIRE_CURVE_KEY + 1], pub[PGD_WIRE_CURVE_KEY + 1], sec[PGD_WIRE_CURVE_KEY + 1];
    if (need_curve(err) != 0 || pgd_wire_curve_read(server_public_file, server, err) != 0)
        return -1;
    if (client_secret_file) {
        if (pgd_wire_curve_read(client_secret_file, sec, err) != 0)
            return -1;
        if (zmq_curve_public(pub, sec) != 0)
            return pgd_fail(err, PGD_EINVAL, "key file %s: not a secret key", client_secret_file);
    } else if (zmq_curve_keypair(pub, sec) != 0) {
        return pgd_fail_errno(err, PGD_EIO, "zmq_curve_keypair");
    }
    if (set_key(sock, ZMQ_CURVE_SERVERKEY, server, "CURVE_SERVERKEY", err) != 0 ||
        set_key(sock, ZMQ_CURVE_PUBLICKEY, pub, "CURVE_PUBLICKEY", err) != 0)
        return -1;
    return set_key(sock, ZMQ_CURVE_SECRETKEY, sec, "CURVE_SECRETKEY", err);
}
