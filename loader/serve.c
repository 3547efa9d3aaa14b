/* serve.c: `pgd-loader serve`: options, the one poll loop of the loader process, and its exit summary. */
#include "loader/serve.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "loader/cli.h"
#include "loader/serve_int.h"
#include "log.h"
#include "sigpipe.h"

#define USAGE "serve --connect ENDPOINT [options]"
#define ABOUT "the loader process: decode jobs from the sampler over ZeroMQ (docs/loader-process.md)"

static const pgd_cfg_opt opts[] = {
    {"connect", PGD_CFG_STRING, offsetof(pgd_serve_opts, connect), NULL, 0, 0, NULL,
     "the sampler's endpoint: tcp://HOST:PORT or ipc://PATH", PGD_CFG_REQUIRED},
    {"name", PGD_CFG_STRING, offsetof(pgd_serve_opts, name), NULL, 0, 0, NULL,
     "this loader's name in HELLO, 1..255 bytes of UTF-8 (default host:pid)", 0},
    {"credit", PGD_CFG_INT, offsetof(pgd_serve_opts, credit), "2", 1, 1024, NULL,
     "jobs the sampler may have queued at this loader", 0},
    {"heartbeat_ms", PGD_CFG_INT, offsetof(pgd_serve_opts, heartbeat_ms), "1000", 1, 3600000, NULL,
     "HEARTBEAT period in ms (idle, and between patch chunks of a long job)", 0},
    {"liveness", PGD_CFG_INT, offsetof(pgd_serve_opts, liveness), "5", 2, 1000, NULL,
     "nothing from the sampler for liveness x heartbeat_ms: log it and send HELLO again", 0},
    {"chunk", PGD_CFG_INT, offsetof(pgd_serve_opts, chunk), "8", 1, 1048576, NULL,
     "patches decoded between looks at the clock, the socket and signals", 0},
    {"hwm", PGD_CFG_INT, offsetof(pgd_serve_opts, hwm), "100", 1, 1000000, NULL,
     "ZeroMQ send and receive high-water marks, in messages", 0},
    {"linger_ms", PGD_CFG_INT, offsetof(pgd_serve_opts, linger_ms), "2000", 0, 600000, NULL,
     "at exit, how long unsent replies may take to leave", 0},
    {"cache_mb", PGD_CFG_INT, offsetof(pgd_serve_opts, cache_mb), "512", 0, 1048576, NULL,
     "open slides kept for later jobs (fitted images included) within this many MB, least recently used closed first",
     0},
    {"cache_slides", PGD_CFG_INT, offsetof(pgd_serve_opts, cache_slides), "16", 1, 4096, NULL,
     "and at most this many open slides", 0},
    {"curve_server_key", PGD_CFG_STRING, offsetof(pgd_serve_opts, curve_server_key), NULL, 0, 0, NULL,
     "file with the sampler's CURVE public key: the link is encrypted and the sampler authenticated", 0},
    {"curve_secret_file", PGD_CFG_STRING, offsetof(pgd_serve_opts, curve_secret_file), NULL, 0, 0, NULL,
     "file with this loader's CURVE secret key (default: a fresh key pair)", 0},
    {"shm", PGD_CFG_ENUM, offsetof(pgd_serve_opts, shm), "auto", 0, 0, "auto|yes|no",
     "decode into shared memory the sampler reads (only a reference crosses the socket); auto: ipc:// endpoints",
     0},
    {NULL},
};

/* The HELLO name: --name, or host:pid. Checked by encoding a HELLO with it, as the sampler will read it. */
static int resolve_name(pgd_serve *s, pgd_err *err)
{
    if (s->o.name) {
        if (strlen(s->o.name) > PGD_WIRE_NAME_MAX)
            return pgd_fail(err, PGD_EINVAL, "'name': %zu bytes, at most %d", strlen(s->o.name), PGD_WIRE_NAME_MAX);
        snprintf(s->name, sizeof s->name, "%s", s->o.name);
    } else {
        char host[128];
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(s->name, sizeof s->name, "%s:%d", host, (int)getpid());
    }
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_HELLO);
    h.credit = (uint32_t)s->o.credit;
    pgd_wire_frame f = {s->name, strlen(s->name)};
    uint8_t head[PGD_WIRE_HEADER_SIZE];
    pgd_err e = PGD_ERR_INIT;
    if (pgd_wire_encode(&h, &f, 1, head, &e) != 0)
        return pgd_fail(err, PGD_EINVAL, "'name': '%s' cannot go in HELLO: %s", s->name, e.msg);
    return 0;
}

/* Serve the JOB at the head of the inbox, then free its slot. */
static int serve_next(pgd_serve *s)
{
    pgd_wire_rx *rx = &s->inbox[s->inbox_head];
    int rc = pgd_serve_job(s, rx);
    pgd_wire_rx_close(rx);
    s->inbox_head = (s->inbox_head + 1) % s->inbox_cap;
    s->inbox_n--;
    return rc;
}

/* The one poll loop: jobs first, else wait for a message, a signal or the next heartbeat. */
static void run(pgd_serve *s)
{
    while (!s->stop && !s->signalled && !s->fatal) {
        if (s->inbox_n > 0) {
            if (serve_next(s) != 0)
                break;
            continue;
        }
        if (pgd_serve_pump(s, pgd_serve_next_tick(s)) != 0 || pgd_serve_tick(s) != 0)
            break;
    }
    s->n.jobs_dropped += s->inbox_n; /* received, never started: the sampler re-issues them */
}

static void summary(const pgd_serve *s)
{
    const char *why = s->fatal ? "socket failure" : s->stop ? "STOP" : "signal";
    pgd_info("exiting (%s): jobs ok %llu, failed %llu, unanswered %llu; %llu patches, %.1f MP decoded; "
             "%llu bad messages dropped; slides opened %llu, reused %llu, closed for room %llu; "
             "answers in shared memory %llu",
             why, (unsigned long long)s->n.jobs_ok, (unsigned long long)s->n.jobs_failed,
             (unsigned long long)s->n.jobs_dropped, (unsigned long long)s->n.patches, s->n.megapixels,
             (unsigned long long)s->bad.rejected, (unsigned long long)s->n.slide_opens,
             (unsigned long long)s->n.slide_hits, (unsigned long long)s->n.slide_evictions,
             (unsigned long long)s->n.shm_answers);
    pgd_wire_stats_log(&s->bad);
}

static int serve(pgd_serve *s)
{
    pgd_err err = PGD_ERR_INIT;
    if (resolve_name(s, &err) != 0)
        return pgd_loader_usage_error("serve", USAGE, "%s", err.msg);
    if (pgd_sigpipe_install("loader", &s->sigfd, &err) != 0) {
        pgd_log_err(&err);
        return PGD_EXIT_FAIL;
    }
    int rc;
    if (pgd_serve_open(s, &err) != 0) {
        rc = err.code == PGD_EINVAL ? pgd_loader_usage_error("serve", USAGE, "%s", err.msg) : PGD_EXIT_FAIL;
        if (rc == PGD_EXIT_FAIL)
            pgd_log_err(&err);
    } else {
        pgd_info("serving %s as '%s', credit %lld, heartbeat %lld ms%s", s->o.connect, s->name,
                 (long long)s->o.credit, (long long)s->o.heartbeat_ms,
                 s->shm_on ? ", pixels through shared memory when the sampler takes them" : "");
        run(s);
        summary(s);
        rc = s->fatal ? PGD_EXIT_FAIL : PGD_EXIT_OK;
    }
    pgd_serve_drop_slide(s);
    pgd_serve_close(s);
    pgd_serve_shm_close(&s->shm);
    pgd_sigpipe_restore();
    return rc;
}

int pgd_loader_serve_main(int argc, char **argv)
{
    pgd_log_init("loader", PGD_LOG_INFO, 0);
    pgd_serve s;
    memset(&s, 0, sizeof s);
    s.sigfd = -1;
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc;
    if (pgd_cfg_parse_args(opts, &s.o, argc, argv, &a, &err) != 0)
        rc = pgd_loader_usage_error("serve", USAGE, "%s", err.msg);
    else if (a.help) {
        pgd_cfg_usage(opts, stdout, "pgd-loader " USAGE "\n  " ABOUT);
        fputs("Exit status: 0 after STOP or a signal, 1 the socket failed or a second signal cut a job short, 2 bad "
              "arguments.\n", stdout);
        rc = PGD_EXIT_OK;
    } else if (a.npositional > 0)
        rc = pgd_loader_usage_error("serve", USAGE, "unexpected argument '%s'", a.positional[0]);
    else {
        if (a.saved_to)
            pgd_info("settings written to %s", a.saved_to);
        rc = serve(&s);
    }
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &s.o);
    return rc;
}
