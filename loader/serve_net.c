/* serve_net.c: the loader process's socket: connect and HELLO, one poll for messages and signals, heartbeats,
 * sampler liveness, and replies that wait while the sampler is slow. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "clock.h"
#include "loader/serve_int.h"
#include "log.h"
#include "sigpipe.h"

static int set_int(void *sock, int opt, int64_t value, const char *name, pgd_err *err)
{
    int v = value > INT_MAX ? INT_MAX : (int)value;
    if (zmq_setsockopt(sock, opt, &v, sizeof v) != 0)
        return pgd_fail_errno(err, PGD_EIO, "zmq_setsockopt %s", name);
    return 0;
}

/* Send a HELLO (with credit and name) or a HEARTBEAT without waiting: when the send queue is full the
 * message is skipped (the next tick tries again). -1 only when the socket fails. */
static int send_control(pgd_serve *s, pgd_wire_type type)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, type);
    h.task_id = ++s->seq;
    h.run_id = s->run_id;
    pgd_wire_frame name = {s->name, strlen(s->name)};
    size_t n = 0;
    if (type == PGD_WIRE_HELLO) {
        h.credit = (uint32_t)s->o.credit;
        h.flags = s->shm_on ? PGD_WIRE_HELLO_SHM : 0;
        n = 1;
    }
    pgd_err e = PGD_ERR_INIT;
    s->last_tx = pgd_clock_ms();
    if (pgd_wire_send(s->sock, NULL, &h, &name, n, PGD_WIRE_DONTWAIT, &e) != 0) {
        if (e.code == PGD_EBUSY) {
            pgd_debug("%s skipped: the send queue is full", pgd_wire_type_name(type));
            return 0;
        }
        pgd_err_prefix(&e, "sending %s: ", pgd_wire_type_name(type));
        pgd_log_err(&e);
        s->fatal = 1;
        return -1;
    }
    if (type == PGD_WIRE_HELLO)
        s->n.hellos++;
    else
        s->n.heartbeats++;
    return 0;
}

int pgd_serve_open(pgd_serve *s, pgd_err *err)
{
    s->shm_on = s->o.shm == 1 || (s->o.shm == 0 && strncmp(s->o.connect, "ipc://", 6) == 0);
    s->inbox_cap = (size_t)s->o.credit + 4;
    s->inbox = calloc(s->inbox_cap, sizeof *s->inbox);
    if (!s->inbox)
        return pgd_fail(err, PGD_ENOMEM, "inbox of %zu messages", s->inbox_cap);
    s->ctx = zmq_ctx_new();
    if (!s->ctx)
        return pgd_fail_errno(err, PGD_EIO, "zmq_ctx_new");
    s->sock = zmq_socket(s->ctx, ZMQ_DEALER);
    if (!s->sock)
        return pgd_fail_errno(err, PGD_EIO, "zmq_socket DEALER");
    if (set_int(s->sock, ZMQ_LINGER, s->o.linger_ms, "ZMQ_LINGER", err) != 0 ||
        set_int(s->sock, ZMQ_SNDHWM, s->o.hwm, "ZMQ_SNDHWM", err) != 0 ||
        set_int(s->sock, ZMQ_RCVHWM, s->o.hwm, "ZMQ_RCVHWM", err) != 0)
        return -1;
    if (s->o.curve_server_key && pgd_wire_curve_client(s->sock, s->o.curve_server_key, s->o.curve_secret_file, err) != 0) {
        if (err)
            err->code = PGD_EINVAL; /* a bad key file is a usage error */
        return -1;
    }
    if (zmq_connect(s->sock, s->o.connect) != 0) {
        int e = errno;
        int usage = e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO || e == ENAMETOOLONG;
        return pgd_fail_errno(err, usage ? PGD_EINVAL : PGD_EIO, "connect: '%s'", s->o.connect);
    }
    s->last_rx = pgd_clock_ms();
    return send_control(s, PGD_WIRE_HELLO) != 0 ? pgd_fail(err, PGD_EIO, "sending HELLO failed") : 0;
}

void pgd_serve_close(pgd_serve *s)
{
    for (; s->inbox && s->inbox_n > 0; s->inbox_n--) {
        pgd_wire_rx_close(&s->inbox[s->inbox_head]);
        s->inbox_head = (s->inbox_head + 1) % s->inbox_cap;
    }
    free(s->inbox);
    s->inbox = NULL;
    if (s->sock && zmq_close(s->sock) != 0)
        pgd_warn("zmq_close: %s", zmq_strerror(errno));
    s->sock = NULL;
    while (s->ctx && zmq_ctx_term(s->ctx) != 0) {
        if (errno != EINTR) {
            pgd_warn("zmq_ctx_term: %s", zmq_strerror(errno));
            break;
        }
    }
    s->ctx = NULL;
}

static void take_signals(pgd_serve *s)
{
    if (pgd_sigpipe_take(s->sigfd) > 0 && !s->signalled) {
        s->signalled = 1;
        pgd_info("signal: finishing the job in hand, then exiting (a second signal exits at once)");
    }
}

/* A message from the sampler that is not a JOB: note it, drop it. */
static void note_message(pgd_serve *s, const pgd_wire_msg *m)
{
    switch (m->h.type) {
    case PGD_WIRE_HEARTBEAT:
        break;
    case PGD_WIRE_STOP:
        if (!s->stop)
            pgd_info("STOP from the sampler");
        s->stop = 1;
        break;
    case PGD_WIRE_RELEASE: /* the sampler has read a PATCHES_SHM: its region is free again */
        if (pgd_serve_shm_release(&s->shm, m->h.task_id, m->h.attempt) != 0)
            pgd_debug("RELEASE of job %llu attempt %u, which holds no region: ignored",
                      (unsigned long long)m->h.task_id, m->h.attempt);
        break;
    default: {
        pgd_err e = PGD_ERR_INIT;
        pgd_fail(&e, PGD_EFORMAT, "unexpected %s message from the sampler", pgd_wire_type_name(m->h.type));
        pgd_wire_stats_reject(&s->bad, PGD_WIRE_R_TYPE, &e);
        break;
    }
    }
}

/* Take in every waiting message while the inbox has room (messages past that wait in the socket). */
static int drain(pgd_serve *s)
{
    while (!s->stop && s->inbox_n < s->inbox_cap) {
        pgd_wire_rx *rx = &s->inbox[(s->inbox_head + s->inbox_n) % s->inbox_cap];
        pgd_err e = PGD_ERR_INIT;
        int rc = pgd_wire_recv(s->sock, rx, 0, PGD_WIRE_DONTWAIT, &e);
        if (rc != 0 && e.code == PGD_EBUSY) {
            pgd_wire_rx_close(rx);
            return 0;
        }
        if (rc != 0 && e.code == PGD_EIO) {
            pgd_wire_rx_close(rx);
            pgd_log_err(&e);
            s->fatal = 1;
            return -1;
        }
        s->last_rx = pgd_clock_ms();
        if (s->silent) {
            pgd_info("the sampler is there again");
            s->silent = 0;
        }
        if (rc != 0)
            pgd_wire_stats_reject(&s->bad, rx->msg.reason, &e);
        else if (rx->msg.h.type == PGD_WIRE_JOB) {
            s->inbox_n++; /* kept: the slot now belongs to the inbox */
            continue;
        } else
            note_message(s, &rx->msg);
        pgd_wire_rx_close(rx);
    }
    return 0;
}

/* Wait up to timeout_ms for the socket to have `events` or a signal; -1 when zmq_poll fails. The result
 * bits are in *ready. */
static int wait_for(pgd_serve *s, short events, int64_t timeout_ms, short *ready)
{
    zmq_pollitem_t it[2] = {{s->sock, 0, events, 0}, {NULL, s->sigfd, ZMQ_POLLIN, 0}};
    long t = timeout_ms < 0 ? 0 : timeout_ms > INT_MAX ? INT_MAX : (long)timeout_ms;
    *ready = 0;
    if (zmq_poll(it, 2, t) < 0) {
        if (errno == EINTR) {
            take_signals(s);
            return 0;
        }
        pgd_error("zmq_poll: %s", zmq_strerror(errno));
        s->fatal = 1;
        return -1;
    }
    if (it[1].revents)
        take_signals(s);
    *ready = it[0].revents;
    return 0;
}

int pgd_serve_pump(pgd_serve *s, int64_t timeout_ms)
{
    short ready;
    if (wait_for(s, ZMQ_POLLIN, timeout_ms, &ready) != 0)
        return -1;
    return (ready & ZMQ_POLLIN) ? drain(s) : 0;
}

int64_t pgd_serve_next_tick(const pgd_serve *s)
{
    int64_t now = pgd_clock_ms();
    int64_t hb = s->last_tx + s->o.heartbeat_ms;
    int64_t live = s->last_rx + s->o.liveness * s->o.heartbeat_ms;
    int64_t next = hb < live ? hb : live;
    return next > now ? next - now : 0;
}

int pgd_serve_tick(pgd_serve *s)
{
    int64_t now = pgd_clock_ms();
    int64_t silent = now - s->last_rx;
    if (silent >= s->o.liveness * s->o.heartbeat_ms) {
        if (!s->silent)
            pgd_warn("nothing from the sampler for %lld ms: sending HELLO again", (long long)silent);
        else
            pgd_debug("nothing from the sampler for %lld ms: sending HELLO again", (long long)silent);
        s->silent = 1;
        s->last_rx = now;
        return send_control(s, PGD_WIRE_HELLO);
    }
    if (now - s->last_tx >= s->o.heartbeat_ms)
        return send_control(s, PGD_WIRE_HEARTBEAT);
    return 0;
}

int pgd_serve_send_reply(pgd_serve *s, const pgd_wire_header *h, const pgd_wire_frame *frames, size_t n,
                         pgd_err *err)
{
    int64_t since = pgd_clock_ms();
    int warned = 0;
    for (;;) {
        pgd_err e = PGD_ERR_INIT;
        if (pgd_wire_send(s->sock, NULL, h, frames, n, PGD_WIRE_DONTWAIT, &e) == 0) {
            s->last_tx = pgd_clock_ms();
            return 0;
        }
        if (e.code != PGD_EBUSY) {
            if (err && !pgd_err_is_set(err))
                *err = e;
            if (e.code != PGD_EINVAL) {
                pgd_log_err(&e);
                s->fatal = 1;
            }
            return -1;
        }
        int64_t waited = pgd_clock_ms() - since;
        if (!warned && waited >= s->o.heartbeat_ms) {
            pgd_warn("job %llu: reply waiting for %lld ms: the sampler is not reading", (unsigned long long)h->task_id,
                     (long long)waited);
            warned = 1;
        }
        short ready;
        if (wait_for(s, ZMQ_POLLOUT, pgd_serve_next_tick(s), &ready) != 0 || pgd_serve_pump(s, 0) != 0 ||
            pgd_serve_tick(s) != 0)
            return -1;
        if (s->stop)
            return 1;
    }
}
