/* sampler_int.h: the sampler process's state and the functions its files share (private to sampler/sampler*.c). */
#ifndef PGD_SAMPLER_INT_H
#define PGD_SAMPLER_INT_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "loader/serve.h"
#include "manifest.h"
#include "sampler/batch_ring.h"
#include "sampler/sampler.h"
#include "sampler/schedule.h"
#include "wire.h"
#include "wire_zmq.h"

/* The options (config keys) of pgd-sampler; docs/sampler.md has the table. */
typedef struct pgd_sampler_opts {
    char *manifest, *slides, *ext;
    int geometry; /* 0 fit, 1 native */
    int64_t fit_size, patch, level;
    double mpp;
    int mode; /* 0 train, 1 eval, 2 infer */
    int64_t epochs, batch_size;
    double sampling, max_sampled;
    int64_t zeta, fill_chunk, inner_chunk;
    int shared_positions, drop_last;
    int64_t seed, run_id;
    char *loaders_endpoint, *consumer_endpoint;
    int64_t heartbeat_ms, heartbeat_timeout_ms, window, loader_wait_ms, hwm;
    char *run_dir;
    int shm; /* 0 auto (ipc:// consumer endpoints), 1 yes, 2 no */
    int64_t shm_slots, shm_mb, consumer_timeout_ms;
    char *curve_secret_file; /* CURVE server key for the loaders' socket, or NULL */
    int loader_shm;          /* take PATCHES_SHM from loaders that offer it */
    char *curve_clients_file; /* the loaders' CURVE public keys allowed (ZAP), or NULL: any key */
    int64_t start_epoch, start_batch; /* resume the schedule at this batch (schedule.h) */
} pgd_sampler_opts;

enum { SMP_JOB_QUEUED = 0, SMP_JOB_SENT, SMP_JOB_DONE, SMP_JOB_FAILED };

/* The job that fetches one image's cells of one message. */
typedef struct smp_job {
    uint32_t attempt; /* of the last JOB sent; 0 before the first */
    int loader;       /* loader index holding it (SENT), else -1 */
    int state;
} smp_job;

/* A pixel buffer of the pool: from the heap, or a slot of the shared-memory ring. */
typedef struct smp_buf {
    uint8_t *data;
    size_t cap;
    struct smp_pool *pool;
    struct smp_buf *next; /* in the idle or free-slot list */
    int64_t ring_slot;    /* slot index in the ring, -1 for a heap buffer */
    int at_consumer;      /* ring slot sent as BATCH_SHM and not yet released (main thread only) */
    uint64_t seq;         /* the BATCH it holds while at_consumer */
} smp_buf;

/* Buffers given to ZeroMQ come back here from its I/O thread (pgd_sampler_pool_put), hence the lock. With a
 * ring, messages are assembled in its slots (handed out last-freed first, so the same pages stay warm); a
 * message larger than a slot falls back to a heap buffer. */
typedef struct smp_pool {
    pthread_mutex_t mu;
    smp_buf *idle;
    uint32_t nidle, max_idle;
    uint64_t out; /* buffers held by slots or by ZeroMQ */
    int ready;
    pgd_batch_ring *ring; /* NULL: heap buffers only */
    smp_buf *ring_bufs;   /* ring->nslots, one per slot */
    smp_buf *ring_free;   /* free slots */
    uint32_t nfree;
} smp_pool;

/* One message of the schedule in flight: its step (arrays copied), its jobs, its pixels. */
typedef struct smp_slot {
    int used;
    uint64_t seq;     /* index of the message in the schedule; also the BATCH task_id */
    uint64_t task0;   /* task id of image 0's job; image i has task0 + i */
    pgd_sched_step st;
    uint32_t *images; /* st.n_images manifest rows */
    uint8_t *cells;   /* wire cells, image-major, n_images x ppi x 8 */
    smp_buf *pix;     /* from the pool, NULL once handed to ZeroMQ with its BATCH */
    uint8_t *pixels;  /* pix->data: n_images x ppi x p x p x 3 */
    smp_job *jobs;    /* n_images */
    uint32_t pending; /* jobs neither DONE nor FAILED */
    size_t cap_images, cap_jobs, cap_cells;
} smp_slot;

typedef struct smp_loader {
    uint8_t id[256]; /* ZeroMQ routing id */
    size_t id_len;
    char name[PGD_WIRE_NAME_MAX + 1];
    uint32_t credit;  /* from HELLO */
    uint32_t out;     /* jobs sent and not answered */
    int64_t last_rx;  /* monotonic ms */
    int alive;
    uint64_t done;    /* results accepted from it */
    int shm;          /* its HELLO offered PATCHES_SHM and its segment was readable so far: JOBs allow it */
    int shm_broken;   /* its segment could not be read here: its JOBs never allow PATCHES_SHM again */
    pgd_serve_shm seg; /* its segment, mapped read-only at its first PATCHES_SHM */
} smp_loader;

typedef struct smp_counts {
    uint64_t jobs_sent, reissued, results, duplicates, job_errors, mismatched, unexpected;
    uint64_t batches, skipped, patches, bytes;
    uint64_t loaders_dead;
    uint64_t shm_results, shm_failed; /* PATCHES_SHM copied; dropped (unreadable or overwritten) */
    uint64_t zap_refused;             /* CURVE handshakes refused: key not in curve_clients_file */
} smp_counts;

typedef struct pgd_sampler {
    pgd_sampler_opts o;
    pgd_manifest *man;
    uint32_t *grid_m, *grid_n; /* per image (native), or NULL (fit) */
    uint8_t *failed;           /* per image: decode failed, left out of every message */
    int32_t *img_loader;       /* per image: the loader its last JOB went to (it has the slide open), -1 none */
    pgd_sched_config scfg;
    pgd_sched *sched;
    uint32_t channels;
    FILE *errors, *progress; /* run_dir files, or NULL */
    void *ctx, *lsock, *csock;
    void *zap;                 /* the ZAP handler's REP socket, when curve_clients_file is set */
    uint8_t (*zap_keys)[32];   /* the allowed loaders' public keys */
    uint32_t nzap_keys;
    int sigfd;
    /* the window: a ring of slots, in schedule order from head */
    smp_slot *slots;
    uint32_t nslots, head, used;
    smp_pool pool; /* the slots' pixel buffers */
    uint64_t next_seq, next_task;
    int sched_done;
    /* loaders, in order of registration */
    smp_loader *loaders;
    uint32_t nloaders, cap_loaders;
    int64_t started_ms, last_alive_ms, last_hb_ms;
    int ever_registered;
    /* the consumer */
    uint8_t cons_id[256];
    size_t cons_id_len;
    int have_consumer;
    uint64_t cons_credit;
    int cons_shm;            /* the consumer's CREDIT offered BATCH_SHM and a ring exists */
    int64_t cons_last_rx;    /* monotonic ms of the consumer's last message (or of the start) */
    pgd_batch_ring ring;     /* the shared-memory slots, when used */
    int have_ring;
    int signalled, fatal, complete;
    char reason[1024]; /* why the run failed, for the log */
    pgd_wire_stats bad;
    int logged_mismatch, logged_unexpected, logged_ppi, logged_release;
    int64_t cons_last_tx;    /* monotonic ms of the last message to the consumer */
    int64_t cons_wait_since; /* since when the stream waits for the consumer, -1 when it does not */
    smp_counts n;
} pgd_sampler;

/* sampler_setup.c */
/* Options -> manifest, grids, schedule, run folder files. PGD_EINVAL errors are usage errors. */
int pgd_sampler_setup(pgd_sampler *s, pgd_err *err);
/* Sockets: bind both ROUTERs. */
int pgd_sampler_open_net(pgd_sampler *s, pgd_err *err);
void pgd_sampler_teardown(pgd_sampler *s);
/* Record image `img` as failed (once): errors.tsv line and a WARN. */
void pgd_sampler_record_failure(pgd_sampler *s, uint32_t img, const char *reason);

/* sampler_pool.c */
int pgd_sampler_pool_init(smp_pool *p, uint32_t max_idle, pgd_err *err);
/* An idle buffer of at least need bytes (the smallest that fits), else a new one; NULL when out of memory. */
smp_buf *pgd_sampler_pool_get(smp_pool *p, size_t need);
/* A pgd_wire_free_fn (hint: the smp_buf): the buffer goes back to the idle list; beyond max_idle the smallest
 * idle buffer is freed. Thread-safe. */
void pgd_sampler_pool_put(void *data, void *hint);
/* Free the idle buffers. Call after zmq_ctx_term (every given buffer is back) and after the slots' return. */
void pgd_sampler_pool_destroy(smp_pool *p);
/* Use ring's slots for buffers of up to ring->slot_size bytes (ring outlives the pool). */
int pgd_sampler_pool_use_ring(smp_pool *p, pgd_batch_ring *ring, pgd_err *err);
/* 1 when pgd_sampler_pool_get can give a buffer of a ring slot now (always 1 without a ring). */
int pgd_sampler_pool_can_get(smp_pool *p);
/* The ring slot sent as BATCH_SHM with task id seq, back to the free list: 0, or -1 when none is held. */
int pgd_sampler_pool_release(smp_pool *p, uint64_t seq);
/* Every ring slot the consumer holds back to the free list (it is gone or was replaced); returns how many. */
uint32_t pgd_sampler_pool_reclaim(smp_pool *p);
/* How many ring slots the consumer holds (sent as BATCH_SHM, not yet released). */
uint32_t pgd_sampler_pool_held(const smp_pool *p);

/* sampler_loaders.c */
/* Take in one message from the loaders' socket. -1: fatal. */
int pgd_sampler_loader_rx(pgd_sampler *s);
/* Send queued jobs to loaders with room. -1: fatal. */
int pgd_sampler_dispatch(pgd_sampler *s);
/* Heartbeats to live loaders, and dead-loader detection (their jobs re-queued). */
int pgd_sampler_liveness(pgd_sampler *s);
/* STOP to every known loader. */
void pgd_sampler_stop_loaders(pgd_sampler *s);

/* sampler_lshm.c: loaders' answers in shared memory */
/* Map the segment PATCHES_SHM m names for loader li (at its first answer, or again when it names another one:
 * before the RELEASE that lets the loader remove the name). 0, or -1 with err: it cannot be read here
 * (PGD_ENOENT: not on this host); the loader's later JOBs then go without the SHM flag. */
int pgd_sampler_shm_map(pgd_sampler *s, int li, const pgd_wire_msg *m, pgd_err *err);
/* Copy the pixels of PATCHES_SHM m out of loader li's mapped segment into dst. 0, or -1 with err: outside
 * the segment (PGD_EFORMAT) or the region was written again (PGD_EBUSY). */
int pgd_sampler_shm_copy(pgd_sampler *s, int li, const pgd_wire_msg *m, uint8_t *dst, pgd_err *err);
/* RELEASE (task_id, attempt of h) to the loader rid: the region of its PATCHES_SHM is free again. */
void pgd_sampler_shm_release(pgd_sampler *s, pgd_wire_frame rid, const pgd_wire_header *h);
/* Unmap every loader's segment. */
void pgd_sampler_shm_unmap(pgd_sampler *s);

/* sampler_zap.c: the loaders' CURVE keys checked against curve_clients_file */
/* Read the allow-list and bind the ZAP handler (before the loaders' socket binds). Nothing without
 * curve_clients_file. -1: PGD_EINVAL for a bad file or without curve_secret_file, PGD_EIO otherwise. */
int pgd_sampler_zap_open(pgd_sampler *s, pgd_err *err);
/* Answer one waiting ZAP request. 0 answered, 1 none waiting (or no handler), -1 fatal (s->reason set). */
int pgd_sampler_zap_rx(pgd_sampler *s);
/* Close the handler's socket (before the context terminates) and free the list. */
void pgd_sampler_zap_close(pgd_sampler *s);

/* sampler_window.c */
/* Fill free slots from the schedule. -1: fatal (the schedule failed). */
int pgd_sampler_fill(pgd_sampler *s, pgd_err *err);
/* The slot and image of a task id, or NULL. */
smp_slot *pgd_sampler_find_task(pgd_sampler *s, uint64_t task, uint32_t *image);
/* Mark an image failed in every slot of the window (its jobs dropped). */
void pgd_sampler_fail_image(pgd_sampler *s, uint32_t img);
/* Send complete head slots to the consumer while credit lasts. -1: fatal. */
int pgd_sampler_emit(pgd_sampler *s);
/* Take in one message from the consumer's socket. -1: fatal. */
int pgd_sampler_consumer_rx(pgd_sampler *s);
/* The consumer's liveness: HEARTBEAT to it when nothing was sent for heartbeat_ms; -1 (s->reason set) when
 * the stream has waited for it longer than consumer_timeout_ms with no message from it. */
int pgd_sampler_consumer_liveness(pgd_sampler *s);
/* Send END (complete) or STOP to the consumer. */
void pgd_sampler_end_consumer(pgd_sampler *s, int complete);

#endif
