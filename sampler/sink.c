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
#include "sampler/batch_rx.h"
#include "sigpipe.h"
#include "wire.h"
#include "wire_zmq.h"

#define USAGE "pgd-sink --connect ENDPOINT [options]"

typedef struct sink_opts {
    char *connect;
    int64_t credit, delay_ms, idle_ms, hwm;
    int digest, shm;
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
    {"shm", PGD_CFG_ENUM, offsetof(sink_opts, shm), "auto", 0, 0, "auto|yes|no",
     "read BATCH pixels from the sampler's shared memory (auto: ipc:// endpoints; same host only)", 0},
    {NULL},
};

typedef struct sink {
    sink_opts o;
    pgd_batch_rx *rx;
    int sigfd;
    int have_seq;
    uint64_t last_seq;
    uint64_t batches, patches, bytes, gaps, order_errors, total, shm_batches;
    int ended, stopped, signalled, failed;
    double t0, t1;
} sink;

static int open_rx(sink *k, pgd_err *err)
{
    pgd_batch_rx_opts o;
    pgd_batch_rx_opts_init(&o);
    o.endpoint = k->o.connect;
    o.credit = (uint32_t)k->o.credit;
    o.hwm = (int)k->o.hwm;
    o.shm = k->o.shm == 0 ? PGD_BATCH_RX_SHM_AUTO : k->o.shm == 1 ? PGD_BATCH_RX_SHM_YES : PGD_BATCH_RX_SHM_NO;
    k->rx = pgd_batch_rx_open(&o, err);
    return k->rx ? 0 : -1;
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
    k->shm_batches += h->type == PGD_WIRE_BATCH_SHM;
    if (k->o.digest) {
        uint32_t crc = pgd_crc32c(0, m->pixels, m->pixels_len);
        crc = pgd_crc32c(crc, m->cells, m->n_cells * PGD_WIRE_CELL_SIZE);
        crc = pgd_crc32c(crc, m->ids, (size_t)h->n_images * PGD_WIRE_ID_SLOT);
        crc = pgd_crc32c(crc, m->labels, (size_t)h->n_images * PGD_WIRE_LABEL_SIZE);
        printf("%llu %u %u %u 0x%02x %u %u %08x\n", (unsigned long long)h->task_id, h->epoch, h->batch, h->step,
               h->flags, h->n_images, h->patches_per_image, crc);
    }
}

/* Take what is waiting. 1 when the stream is over, -1 on a failure, 2 when nothing is waiting. */
static int take(sink *k)
{
    pgd_batch_view v;
    pgd_err e = PGD_ERR_INIT;
    int st = pgd_batch_rx_next(k->rx, &v, 0, &e);
    switch (st) {
    case PGD_BATCH_RX_BATCH:
        on_batch(k, &v.msg);
        if (k->o.delay_ms > 0) {
            struct timespec ts = {k->o.delay_ms / 1000, (long)(k->o.delay_ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        if (pgd_batch_rx_release(k->rx, &v, 1, &e) != 0)
            break;
        return 0;
    case PGD_BATCH_RX_END:
        k->ended = 1;
        k->total = pgd_batch_rx_end_task(k->rx);
        return 1;
    case PGD_BATCH_RX_STOP:
        k->stopped = 1;
        return 1;
    case PGD_BATCH_RX_NONE:
        return 2;
    default:
        break;
    }
    pgd_log_err(&e);
    k->failed = 1;
    return -1;
}

static void run(sink *k)
{
    double last = pgd_clock_s();
    for (;;) {
        zmq_pollitem_t it[2] = {{pgd_batch_rx_socket(k->rx), 0, ZMQ_POLLIN, 0}, {NULL, k->sigfd, ZMQ_POLLIN, 0}};
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
           "skipped %llu, out of order %llu, bad %llu, unexpected %llu; in shared memory %llu\n",
           k->ended ? "END" : k->stopped ? "STOP" : k->signalled ? "signal" : "no END", (unsigned long long)k->batches,
           (unsigned long long)k->patches, (double)k->bytes / 1e6, secs, ps, mbs, (unsigned long long)k->gaps,
           (unsigned long long)k->order_errors, (unsigned long long)pgd_batch_rx_bad(k->rx)->rejected,
           (unsigned long long)pgd_batch_rx_unexpected(k->rx), (unsigned long long)k->shm_batches);
    fflush(stdout);
    pgd_wire_stats_log(pgd_batch_rx_bad(k->rx));
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
    } else if (open_rx(&k, &err) != 0) {
        pgd_log_err(&err);
        rc = err.code == PGD_EINVAL ? PGD_EXIT_USAGE : PGD_EXIT_FAIL;
    } else if (pgd_sigpipe_install("sink", &k.sigfd, &err) != 0) {
        pgd_log_err(&err);
    } else {
        run(&k);
        pgd_sigpipe_restore();
        summary(&k);
        rc = k.ended && !k.failed && !k.order_errors && !pgd_batch_rx_bad(k.rx)->rejected &&
                     !pgd_batch_rx_unexpected(k.rx)
                 ? PGD_EXIT_OK
                 : PGD_EXIT_FAIL;
    }
    pgd_batch_rx_close(&k.rx);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &k.o);
    return rc;
}
