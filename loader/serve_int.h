/* serve_int.h: the loader process's state and the functions its files share (private to loader/serve*.c). */
#ifndef PGD_SERVE_INT_H
#define PGD_SERVE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "loader/patcher.h"
#include "loader/serve.h"
#include "wire.h"
#include "wire_zmq.h"

/* The options (config keys) of `pgd-loader serve`. */
typedef struct pgd_serve_opts {
    char *connect;        /* the sampler's endpoint, tcp://HOST:PORT or ipc://PATH */
    char *name;           /* NULL: host:pid */
    int64_t credit;       /* jobs the sampler may have queued here */
    int64_t heartbeat_ms; /* HEARTBEAT period */
    int64_t liveness;     /* sampler silent this many heartbeat periods: HELLO again */
    int64_t chunk;        /* patches decoded between looks at the clock and the socket */
    int64_t hwm;          /* send and receive high-water marks, in messages */
    int64_t linger_ms;    /* how long closing waits for unsent replies */
    int64_t cache_mb;     /* open slides kept (least recently used closed first) within this many MB */
    int64_t cache_slides; /* and at most this many */
    char *curve_server_key;  /* the sampler's public key file: CURVE on the link, or NULL */
    char *curve_secret_file; /* this loader's secret key file, or NULL for a fresh key pair */
    int shm;                 /* 0 auto (ipc:// endpoints), 1 yes, 2 no: offer PATCHES_SHM */
} pgd_serve_opts;

typedef struct pgd_serve_counts {
    uint64_t jobs_ok, jobs_failed, jobs_dropped; /* dropped: left unanswered by STOP or a signal */
    uint64_t patches;                            /* patches sent */
    double megapixels;                           /* pixels of the patches sent, in millions */
    uint64_t hellos, heartbeats;
    uint64_t slide_opens, slide_hits, slide_evictions;
    uint64_t shm_answers;                        /* PATCHES_SHM sent (the rest went inline) */
} pgd_serve_counts;

/* One open slide of the cache. */
typedef struct pgd_serve_slide {
    pgd_patcher *patcher;
    char *path;
    pgd_geom_spec spec;
    uint64_t file[4]; /* device, inode, size, mtime (ns) at open: a file replaced since is reopened */
    uint64_t bytes;   /* what it may hold in memory: the fitted image for "fit", an allowance for "native" */
    uint64_t last_use;
} pgd_serve_slide;

typedef struct pgd_serve {
    pgd_serve_opts o;
    char name[PGD_WIRE_NAME_MAX + 1];
    void *ctx, *sock;
    int sigfd;     /* read end of the signal self-pipe, or -1 */
    int signalled; /* a SIGINT / SIGTERM arrived: answer the job in hand, then leave */
    int stop;      /* STOP arrived: finish nothing more */
    int fatal;     /* the socket failed: leave with PGD_EXIT_FAIL */
    int silent;    /* the sampler has been silent past the liveness limit */
    /* JOBs received and not yet served, in arrival order: a ring of fixed slots (messages point into
     * themselves, so a slot never moves) */
    pgd_wire_rx *inbox;
    size_t inbox_cap, inbox_head, inbox_n;
    /* slides kept open for later jobs, and the one of the job in hand (one of them) */
    pgd_serve_slide *slides;
    size_t nslides;
    uint64_t use_clock; /* grows with every use: the least recently used slide has the smallest last_use */
    pgd_patcher *patcher;
    /* monotonic clock, ms */
    int64_t last_tx; /* last message sent */
    int64_t last_rx; /* last message received */
    uint64_t seq;    /* task_id of HELLO / HEARTBEAT */
    uint64_t run_id; /* of the last JOB, echoed in HEARTBEATs */
    pgd_wire_stats bad;
    pgd_serve_counts n;
    int shm_on;         /* HELLO offers PATCHES_SHM; answers go there when the JOB allows it */
    pgd_serve_shm shm;  /* the segment of the current run, made at its first such JOB */
} pgd_serve;

/* serve_net.c: the socket */
int pgd_serve_open(pgd_serve *s, pgd_err *err);       /* context, DEALER, options, connect, HELLO */
void pgd_serve_close(pgd_serve *s);                   /* inbox, socket, context (safe twice) */
/* Wait up to timeout_ms (0: just look) for messages or signals; take in every waiting message (JOBs into
 * the inbox while it has room, HEARTBEAT and STOP noted, bad ones counted and dropped). -1: fatal. */
int pgd_serve_pump(pgd_serve *s, int64_t timeout_ms);
/* Send what the clocks call for: a HEARTBEAT when nothing was sent for heartbeat_ms, a HELLO when the
 * sampler was silent for liveness x heartbeat_ms. -1: fatal. */
int pgd_serve_tick(pgd_serve *s);
/* ms until pgd_serve_tick has something to do. */
int64_t pgd_serve_next_tick(const pgd_serve *s);
/* Send a job's reply, waiting (with heartbeats and signals watched) while the socket is full. Returns 0
 * when sent, 1 when given up (STOP), -1 fatal; PGD_EINVAL from the encoder is returned as -1 with err set
 * and s->fatal unset, so the caller can answer with a JOB_ERROR instead. */
int pgd_serve_send_reply(pgd_serve *s, const pgd_wire_header *h, const pgd_wire_frame *frames, size_t n,
                         pgd_err *err);

/* serve_job.c: serve the JOB in rx and answer it. -1: fatal. */
int pgd_serve_job(pgd_serve *s, const pgd_wire_rx *rx);
/* Close every slide kept open. */
void pgd_serve_drop_slide(pgd_serve *s);
/* Write text as a JOB_ERROR reason into out (cap >= 2): invalid UTF-8 bytes and control characters become
 * '?', cut to fit on a character boundary. Returns the length (>= 1). */
size_t pgd_serve_reason(const char *text, char *out, size_t cap);


#endif
