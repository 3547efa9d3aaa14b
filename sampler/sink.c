/* sink.c: pgd-sink: takes the sampler's BATCH stream under credit, checks it, prints digests and throughput. */
#include "sampler/sink.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "crc32c.h"
#include "log.h"
#include "sigpipe.h"
#include "wire.h"
#include "wire_zmq.h"

#define USAGE "pgd-sink --connect ENDPOINT [options]"

typedef struct sink_opts {
    char *connect;
    int64_t credit, delay_ms, idle_ms, hwm;
    int digest;
} sink_opts;

static const pgd_cfg_opt opts[] = {
    {"connect", PGD_CFG_STRING, offsetof(sink_opts, connect), NULL, 0, 0, NULL,
     "the sampler's consumer endpoint: tcp://HOST:PORT or ipc://PATH", PGD_CFG_REQUIRED},
    {"credit", PGD_CFG_INT, offsetof(sink_opts, credit), "4", 1, 1000000, NULL, "BATCH messages granted ahead", 0},
    {"digest", PGD_CFG_BOOL, offsetof(sink_opts, digest), "no", 0, 0, NULL, "print one digest line per BATCH", 0},
    {"delay_ms", PGD_CFG_INT, offsetof(sink_opts, delay_ms), "0", 0, 600000, NULL,
     "sleep this long per BATCH (a slow consumer)", 0},
    {"idle_ms", PGD_CFG_INT, offsetof(sink_opts, idle_ms), "60000", 1, 86400000, NULL,
     "give up after this long without a message", 0},
    {"hwm", PGD_CFG_INT, offsetof(sink_opts, hwm), "1000", 1, 1000000, NULL, "ZeroMQ high-water marks", 0},
    {NULL},
};

typedef struct sink {
    sink_opts o;
    void *ctx, *sock;
    int sigfd;
    int have_seq;
    uint64_t last_seq;
    uint64_t batches, patches, bytes, gaps, order_errors, unexpected, total;
    int ended, stopped, signalled;
    double t0, t1;
    pgd_wire_stats bad;
} sink;

static int send_credit(sink *k, uint32_t n, pgd_err *err)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_CREDIT);
    h.credit = n;
    return pgd_wire_send(k->sock, NULL, &h, NULL, 0, 0, err);
}

static int open_sock(sink *k, pgd_err *err)
{
    k->ctx = zmq_ctx_new();
    if (!k->ctx)
        return pgd_fail_errno(err, PGD_EIO, "zmq_ctx_new");
    k->sock = zmq_socket(k->ctx, ZMQ_DEALER);
    if (!k->sock)
        return pgd_fail_errno(err, PGD_EIO, "zmq_socket DEALER");
    int zero = 0, hwm = (int)k->o.hwm;
    if (zmq_setsockopt(k->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(k->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0)
        return pgd_fail_errno(err, PGD_EIO, "zmq_setsockopt");
    if (zmq_connect(k->sock, k->o.connect) != 0)
        return pgd_fail_errno(err, PGD_EINVAL, "'connect': %s", k->o.connect);
    return send_credit(k, (uint32_t)k->o.credit, err);
}

static void on_batch(sink *k, const pgd_wire_msg *m)
{
    const pgd_wire_header *h = &m->h;
    if (k->have_seq && h->task_id <= k->last_seq) {
        if (!k->order_errors++)
            pgd_error("BATCH %llu after %llu: repeated or out of order", (unsigned long long)h->task_id,
                      (unsigned long long)k->last_seq);
    } else {
        k->gaps += h->task_id - (k->have_seq ? k->last_seq + 1 : 0);
        k->last_seq = h->task_id;
        k->have_seq = 1;
    }
    if (!k->batches)
        k->t0 = pgd_clock_s();
    k->batches++;
    k->patches += (uint64_t)h->n_images * h->patches_per_image;
    k->bytes += m->pixels_len;
    if (k->o.digest) {
        uint32_t crc = pgd_crc32c(0, m->pixels, m->pixels_len);
        crc = pgd_crc32c(crc, m->cells, m->n_cells * PGD_WIRE_CELL_SIZE);
        crc = pgd_crc32c(crc, m->ids, (size_t)h->n_images * PGD_WIRE_ID_SLOT);
        crc = pgd_crc32c(crc, m->labels, (size_t)h->n_images * PGD_WIRE_LABEL_SIZE);
        printf("%llu %u %u %u 0x%02x %u %u %08x\n", (unsigned long long)h->task_id, h->epoch, h->batch, h->step,
               h->flags, h->n_images, h->patches_per_image, crc);
    }
}

/* Take one message. 1 when the stream is over, -1 on a socket failure. */
static int take(sink *k)
{
    pgd_wire_rx rx;
    memset(&rx, 0, sizeof rx);
    pgd_err e = PGD_ERR_INIT;
    int rc = 0;
    if (pgd_wire_recv(k->sock, &rx, 0, PGD_WIRE_DONTWAIT, &e) != 0) {
        if (e.code == PGD_EIO) {
            pgd_log_err(&e);
            rc = -1;
        } else if (e.code != PGD_EBUSY)
            pgd_wire_stats_reject(&k->bad, rx.msg.reason, &e);
        else
            rc = 2;
        goto out;
    }
    switch (rx.msg.h.type) {
    case PGD_WIRE_BATCH:
        on_batch(k, &rx.msg);
        if (k->o.delay_ms > 0) {
            struct timespec ts = {k->o.delay_ms / 1000, (long)(k->o.delay_ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        if (send_credit(k, 1, &e) != 0) {
            pgd_log_err(&e);
            rc = -1;
        }
        break;
    case PGD_WIRE_END:
        k->ended = 1;
        k->total = rx.msg.h.task_id;
        rc = 1;
        break;
    case PGD_WIRE_STOP:
        k->stopped = 1;
        rc = 1;
        break;
    case PGD_WIRE_HEARTBEAT:
        break;
    default:
        if (!k->unexpected++)
            pgd_warn("unexpected %s message, dropped", pgd_wire_type_name(rx.msg.h.type));
    }
out:
    pgd_wire_rx_close(&rx);
    return rc;
}

static void run(sink *k)
{
    double last = pgd_clock_s();
    for (;;) {
        zmq_pollitem_t it[2] = {{k->sock, 0, ZMQ_POLLIN, 0}, {NULL, k->sigfd, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, 100) < 0 && errno != EINTR) {
            pgd_error("zmq_poll: %s", zmq_strerror(errno));
            return;
        }
        if (it[1].revents && pgd_sigpipe_take(k->sigfd) > 0) {
            k->signalled = 1;
            return;
        }
        int rc;
        while ((rc = take(k)) == 0)
            last = pgd_clock_s();
        if (rc == 1 || rc < 0)
            return;
        if ((pgd_clock_s() - last) * 1000.0 > (double)k->o.idle_ms) {
            pgd_error("nothing from the sampler for %lld ms", (long long)k->o.idle_ms);
            return;
        }
    }
}

static void summary(sink *k)
{
    k->t1 = pgd_clock_s();
    double secs = k->batches ? k->t1 - k->t0 : 0;
    double ps = secs > 0 ? (double)k->patches / secs : 0, mbs = secs > 0 ? (double)k->bytes / 1e6 / secs : 0;
    if (k->ended)
        k->gaps += k->total - (k->have_seq ? k->last_seq + 1 : 0);
    printf("# sink: %s; %llu BATCH messages, %llu patches, %.1f MB in %.3f s: %.0f patches/s, %.1f MB/s; "
           "skipped %llu, out of order %llu, bad %llu, unexpected %llu\n",
           k->ended ? "END" : k->stopped ? "STOP" : k->signalled ? "signal" : "no END", (unsigned long long)k->batches,
           (unsigned long long)k->patches, (double)k->bytes / 1e6, secs, ps, mbs, (unsigned long long)k->gaps,
           (unsigned long long)k->order_errors, (unsigned long long)k->bad.rejected, (unsigned long long)k->unexpected);
    fflush(stdout);
    pgd_wire_stats_log(&k->bad);
}

int pgd_sink_main(int argc, char **argv)
{
    pgd_log_init("sink", PGD_LOG_INFO, 0);
    pgd_wire_keep_pages(); /* BATCH messages are large: reuse their pages */
    sink k;
    memset(&k, 0, sizeof k);
    k.sigfd = -1;
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc = PGD_EXIT_FAIL;
    if (pgd_cfg_parse_args(opts, &k.o, argc, argv, &a, &err) != 0 || a.npositional > 0) {
        if (!pgd_err_is_set(&err))
            pgd_fail(&err, PGD_EINVAL, "unexpected argument '%s'", a.positional[0]);
        pgd_error("%s", err.msg);
        fprintf(stderr, "usage: %s (--help for options)\n", USAGE);
        rc = PGD_EXIT_USAGE;
    } else if (a.help) {
        pgd_cfg_usage(opts, stdout, USAGE "\n  a consumer of the sampler's stream: credit, checks, digests, throughput");
        fputs("Exit status: 0 END reached and every message valid and in order, 1 otherwise, 2 bad arguments.\n",
              stdout);
        rc = PGD_EXIT_OK;
    } else if (open_sock(&k, &err) != 0) {
        pgd_log_err(&err);
        rc = err.code == PGD_EINVAL ? PGD_EXIT_USAGE : PGD_EXIT_FAIL;
    } else if (pgd_sigpipe_install("sink", &k.sigfd, &err) != 0) {
        pgd_log_err(&err);
    } else {
        run(&k);
        pgd_sigpipe_restore();
        summary(&k);
        rc = k.ended && !k.order_errors && !k.bad.rejected && !k.unexpected ? PGD_EXIT_OK : PGD_EXIT_FAIL;
    }
    if (k.sock)
        zmq_close(k.sock);
    while (k.ctx && zmq_ctx_term(k.ctx) != 0 && errno == EINTR)
        ;
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &k.o);
    return rc;
}
