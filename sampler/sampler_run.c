/* sampler_run.c: pgd-sampler's entry point: options, the one poll loop, stopping, and the exit summary. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "sampler/sampler.h"
#include "sampler/sampler_int.h"
#include "sampler/sampler_opts.h"
#include "sigpipe.h"

#define USAGE "pgd-sampler --manifest CSV [options]"
#define ABOUT "the sampler process: runs the PatchGD schedule, feeds loaders, streams BATCH messages (docs/sampler.md)"
#define MAX_RX_PER_ROUND 256

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pgd_error("%s", msg);
    fprintf(stderr, "usage: %s (--help for options)\n", USAGE);
    return PGD_EXIT_USAGE;
}

/* Wait for either socket or a signal, at most timeout_ms. */
static int wait_events(pgd_sampler *s, long timeout_ms)
{
    zmq_pollitem_t it[4] = {{s->lsock, 0, ZMQ_POLLIN, 0}, {s->csock, 0, ZMQ_POLLIN, 0}, {NULL, s->sigfd, ZMQ_POLLIN, 0},
                            {s->zap, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(it, s->zap ? 4 : 3, timeout_ms) < 0 && errno != EINTR) {
        snprintf(s->reason, sizeof s->reason, "zmq_poll: %s", zmq_strerror(errno));
        return -1;
    }
    if (it[2].revents && pgd_sigpipe_take(s->sigfd) > 0)
        s->signalled = 1;
    return 0;
}

static int drain(pgd_sampler *s)
{
    for (int k = 0; k < MAX_RX_PER_ROUND; k++) {
        int rc = pgd_sampler_zap_rx(s);
        if (rc < 0)
            return -1;
        if (rc > 0)
            break;
    }
    for (int k = 0; k < MAX_RX_PER_ROUND; k++) {
        int rc = pgd_sampler_loader_rx(s);
        if (rc < 0)
            return -1;
        if (rc > 0)
            break;
    }
    for (int k = 0; k < MAX_RX_PER_ROUND; k++) {
        int rc = pgd_sampler_consumer_rx(s);
        if (rc < 0)
            return -1;
        if (rc > 0)
            break;
    }
    return 0;
}

/* One round: schedule into the window, jobs out, batches out. 1 when the stream is complete. */
static int round_work(pgd_sampler *s)
{
    pgd_err e = PGD_ERR_INIT;
    if (pgd_sampler_fill(s, &e) != 0) {
        snprintf(s->reason, sizeof s->reason, "schedule: %s", e.msg);
        return -1;
    }
    if (pgd_sampler_dispatch(s) != 0 || pgd_sampler_emit(s) != 0)
        return -1;
    if (s->sched_done && s->used == 0) {
        /* every message may have been skipped (each image failed) before the consumer connected: END must
         * still reach it, or it waits for a stream that never comes */
        if (s->have_consumer)
            return 1;
        if (pgd_clock_ms() - s->started_ms <= s->o.consumer_timeout_ms)
            return 0;
        pgd_warn("the stream is complete but no consumer connected within %lld ms: END goes to nobody",
                 (long long)s->o.consumer_timeout_ms);
        return 1;
    }
    /* emitting frees slots: refill and dispatch at once rather than after the next poll */
    if (pgd_sampler_fill(s, &e) != 0) {
        snprintf(s->reason, sizeof s->reason, "schedule: %s", e.msg);
        return -1;
    }
    return pgd_sampler_dispatch(s);
}

static void loop(pgd_sampler *s)
{
    s->started_ms = s->last_alive_ms = s->last_hb_ms = s->cons_last_rx = s->cons_last_tx = pgd_clock_ms();
    s->cons_wait_since = -1;
    for (;;) {
        int rc = round_work(s);
        if (rc != 0) {
            s->complete = rc > 0;
            s->fatal = rc < 0;
            return;
        }
        if (s->signalled)
            return;
        int64_t now = pgd_clock_ms();
        if (now - s->last_alive_ms > s->o.loader_wait_ms) {
            snprintf(s->reason, sizeof s->reason, "%s within %lld ms (loaders_endpoint %s)",
                     s->ever_registered ? "no loader alive" : "no loader registered", (long long)s->o.loader_wait_ms,
                     s->o.loaders_endpoint);
            s->fatal = 1;
            return;
        }
        long t = (long)(s->o.heartbeat_ms / 2 > 0 ? s->o.heartbeat_ms / 2 : 1);
        if (wait_events(s, t) != 0 || drain(s) != 0 || pgd_sampler_liveness(s) != 0 ||
            pgd_sampler_consumer_liveness(s) != 0) {
            s->fatal = 1;
            return;
        }
        if (s->signalled)
            return;
    }
}

/* After END the consumer may still hold BATCH_SHM slots it has not even mapped yet: the segment (removed at
 * exit) must outlive them. Wait until every slot is released, the consumer is silent for consumer_timeout_ms,
 * or a signal comes. */
static void linger(pgd_sampler *s)
{
    while (pgd_sampler_pool_held(&s->pool) > 0 && !s->signalled) {
        if (pgd_clock_ms() - s->cons_last_rx > s->o.consumer_timeout_ms) {
            pgd_warn("the consumer still holds %u shared-memory slots after %lld ms of silence: removing them",
                     pgd_sampler_pool_held(&s->pool), (long long)s->o.consumer_timeout_ms);
            return;
        }
        if (wait_events(s, 100) != 0 || drain(s) != 0)
            return;
    }
}

static void summary(const pgd_sampler *s)
{
    const smp_counts *n = &s->n;
    double secs = (double)(pgd_clock_ms() - s->started_ms) / 1000.0;
    pgd_info("%s: %llu BATCH messages (%llu skipped), %llu patches, %.1f MB in %.2f s; jobs sent %llu (%llu re-issued), "
             "results %llu, late or duplicate %llu, job errors %llu, mismatched %llu, unexpected %llu; loaders %u, "
             "declared dead %llu; bad messages %llu; loader answers from shared memory %llu (dropped %llu)",
             s->complete ? "stream complete" : s->signalled ? "stopped by a signal" : "stream failed",
             (unsigned long long)n->batches, (unsigned long long)n->skipped, (unsigned long long)n->patches,
             (double)n->bytes / 1e6, secs, (unsigned long long)n->jobs_sent, (unsigned long long)n->reissued,
             (unsigned long long)n->results, (unsigned long long)n->duplicates, (unsigned long long)n->job_errors,
             (unsigned long long)n->mismatched, (unsigned long long)n->unexpected, s->nloaders,
             (unsigned long long)n->loaders_dead, (unsigned long long)s->bad.rejected,
             (unsigned long long)n->shm_results, (unsigned long long)n->shm_failed);
    pgd_wire_stats_log(&s->bad);
    if (n->zap_refused)
        pgd_info("CURVE handshakes refused (key not in curve_clients_file): %llu", (unsigned long long)n->zap_refused);
    if (s->progress)
        fprintf(s->progress, "# %s: batches %llu skipped %llu patches %llu rejected %llu duplicates %llu reissued %llu\n",
                s->complete ? "complete" : "incomplete", (unsigned long long)n->batches, (unsigned long long)n->skipped,
                (unsigned long long)n->patches, (unsigned long long)s->bad.rejected,
                (unsigned long long)n->duplicates, (unsigned long long)n->reissued);
}

static int run(pgd_sampler *s)
{
    pgd_err err = PGD_ERR_INIT;
    if (pgd_sampler_setup(s, &err) != 0 || pgd_sampler_open_net(s, &err) != 0) {
        if (err.code == PGD_EINVAL)
            return usage_error("%s", err.msg);
        pgd_log_err(&err);
        return PGD_EXIT_FAIL;
    }
    if (pgd_sigpipe_install("sampler", &s->sigfd, &err) != 0) {
        pgd_log_err(&err);
        return PGD_EXIT_FAIL;
    }
    pgd_info("%zu images, %u epochs of %u batches; loaders at %s, consumer at %s, window %u", s->man->count,
             pgd_sched_epochs(s->sched), pgd_sched_batches(s->sched), s->o.loaders_endpoint, s->o.consumer_endpoint,
             s->nslots);
    loop(s);
    if (s->fatal)
        pgd_error("%s", s->reason);
    pgd_sampler_end_consumer(s, s->complete);
    pgd_sampler_stop_loaders(s);
    if (s->complete)
        linger(s);
    summary(s);
    pgd_sigpipe_restore();
    return s->complete ? PGD_EXIT_OK : PGD_EXIT_FAIL;
}

int pgd_sampler_main(int argc, char **argv)
{
    pgd_log_init("sampler", PGD_LOG_INFO, 0);
    pgd_wire_keep_pages(); /* PATCHES messages are large: reuse their pages */
    const pgd_cfg_opt *opts = pgd_sampler_options();
    pgd_sampler s;
    memset(&s, 0, sizeof s);
    s.sigfd = -1;
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc;
    if (argc >= 2 && strcmp(argv[1], "keygen") == 0) { /* pgd-sampler keygen PREFIX: PREFIX.key, PREFIX.pub */
        if (argc != 3)
            return usage_error("usage: pgd-sampler keygen PREFIX (writes PREFIX.key and PREFIX.pub)");
        if (pgd_wire_curve_keygen(argv[2], &err) != 0) {
            pgd_log_err(&err);
            return err.code == PGD_EINVAL ? PGD_EXIT_USAGE : PGD_EXIT_FAIL;
        }
        printf("%s.key (secret, for the sampler's curve_secret_file), %s.pub (public, for the loaders' "
               "curve_server_key)\n", argv[2], argv[2]);
        return PGD_EXIT_OK;
    }
    if (pgd_cfg_parse_args(opts, &s.o, argc, argv, &a, &err) != 0)
        rc = usage_error("%s", err.msg);
    else if (a.help) {
        pgd_cfg_usage(opts, stdout, USAGE "\n  " ABOUT);
        fputs("Exit status: 0 the stream is complete, 1 it is not (no loader, I/O, a signal), 2 bad arguments.\n",
              stdout);
        rc = PGD_EXIT_OK;
    } else if (a.npositional > 0)
        rc = usage_error("unexpected argument '%s'", a.positional[0]);
    else
        rc = run(&s);
    pgd_sampler_teardown(&s);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &s.o);
    return rc;
}
