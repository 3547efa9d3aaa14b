/* batch_rx.h: the consumer's end of the sampler's stream: connect, grant credit, take BATCH messages as views
 * (pixels inline or in the sampler's shared memory), release them. Used by pgd-sink and the trainer. */
#ifndef PGD_BATCH_RX_H
#define PGD_BATCH_RX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "wire.h"

/* How to connect. Start from pgd_batch_rx_opts_init. */
typedef struct pgd_batch_rx_opts {
    const char *endpoint;       /* the sampler's consumer_endpoint: tcp://HOST:PORT or ipc://PATH (required) */
    uint32_t credit;            /* BATCH messages granted at start (>= 1; default 4) */
    int shm;                    /* PGD_BATCH_RX_SHM_AUTO (ipc:// endpoints), _YES, or _NO: offer to read BATCH
                                 * pixels from the sampler's shared memory (same host only) */
    uint32_t patches_per_image; /* asked for in CREDIT (0: the sampler's choice; see docs/sampler.md) */
    int hwm;                    /* ZeroMQ receive high-water mark (default 1000) */
    int64_t heartbeat_ms;       /* a HEARTBEAT goes out from any call when nothing was sent for this long
                                 * (default 1000) */
} pgd_batch_rx_opts;

enum { PGD_BATCH_RX_SHM_AUTO = 0, PGD_BATCH_RX_SHM_YES = 1, PGD_BATCH_RX_SHM_NO = 2 };

/* What pgd_batch_rx_next found. */
typedef enum pgd_batch_rx_status {
    PGD_BATCH_RX_NONE = 0, /* nothing within the timeout */
    PGD_BATCH_RX_BATCH,    /* a BATCH: the view is filled, release it when done */
    PGD_BATCH_RX_END,      /* END: the stream is complete (pgd_batch_rx_end_task gives its task_id) */
    PGD_BATCH_RX_STOP,     /* STOP: the sampler stopped before the end */
} pgd_batch_rx_status;

/* One BATCH, wherever its pixels lie. Every pointer stays valid until pgd_batch_rx_release (or close). The
 * payload arrays have the wire's layout: read them with pgd_wire_cell / pgd_wire_label / pgd_wire_id on
 * `msg`, which is filled as for an inline BATCH (msg.pixels included) whichever way the pixels came. */
typedef struct pgd_batch_view {
    pgd_wire_msg msg;      /* header (h.type is BATCH or BATCH_SHM), pixels, cells, ids, labels */
    const uint8_t *pixels; /* = msg.pixels: n_images x ppi x p x p x c bytes, HWC; read-only */
    size_t pixels_len;
    int shm;               /* 1: the pixels lie in the sampler's shared memory (release returns them) */
    void *priv;            /* the library's */
} pgd_batch_view;

typedef struct pgd_batch_rx pgd_batch_rx;

/* Defaults: credit 4, shm auto, ppi 0, hwm 1000, heartbeat 1000 ms; endpoint NULL (must be set). */
void pgd_batch_rx_opts_init(pgd_batch_rx_opts *o);

/* Connect a DEALER to o->endpoint and send the first CREDIT (with the SHM offer when shm applies). The
 * connection is made in the background: the sampler may start later. NULL with err: PGD_EINVAL for a bad
 * option or an endpoint ZeroMQ refuses, PGD_EIO otherwise. */
pgd_batch_rx *pgd_batch_rx_open(const pgd_batch_rx_opts *o, pgd_err *err);

/* Wait up to timeout_ms (0: do not wait, -1: forever) for the next BATCH, END or STOP. HEARTBEATs are taken in
 * silently; a message that does not decode, an unexpected type, or a BATCH_SHM that does not fit its segment
 * is counted (pgd_batch_rx_counts), logged once per kind, dropped, and the wait goes on. Returns a status >= 0,
 * or -1 with err: PGD_EIO for a socket failure, PGD_ENOENT when a BATCH_SHM names a segment this host does
 * not have (the consumer is not on the sampler's host: use shm no), PGD_EFORMAT when it is not a segment. */
int pgd_batch_rx_next(pgd_batch_rx *r, pgd_batch_view *v, long timeout_ms, pgd_err *err);

/* Done with v: its memory goes back (a BATCH_SHM's slot to the sampler, with a RELEASE message), and
 * `credit` more messages are granted in the same message (0: none; an inline BATCH then sends nothing).
 * v is cleared. Returns 0, or -1 (PGD_EIO) when the message could not be sent. */
int pgd_batch_rx_release(pgd_batch_rx *r, pgd_batch_view *v, uint32_t credit, pgd_err *err);

/* Grant n (>= 1) more messages. */
int pgd_batch_rx_credit(pgd_batch_rx *r, uint32_t n, pgd_err *err);

/* Send a HEARTBEAT if nothing was sent for heartbeat_ms (a consumer busy for long between calls may call
 * it; every other call does it too). The sampler gives up on a consumer it has not heard from for its
 * consumer_timeout_ms while BATCH messages wait. */
void pgd_batch_rx_keepalive(pgd_batch_rx *r);

/* The ZeroMQ socket, to poll for ZMQ_POLLIN beside other things; then call next with timeout 0 until NONE. */
void *pgd_batch_rx_socket(const pgd_batch_rx *r);

/* 1 when the shm offer is made (BATCH_SHM may come). */
int pgd_batch_rx_shm(const pgd_batch_rx *r);

/* Counts: messages dropped (bad ones by reason in *bad), unexpected types; END's task_id (the number of
 * messages in the schedule; 0 before END). */
const pgd_wire_stats *pgd_batch_rx_bad(const pgd_batch_rx *r);
uint64_t pgd_batch_rx_unexpected(const pgd_batch_rx *r);
uint64_t pgd_batch_rx_end_task(const pgd_batch_rx *r);

/* Release every view still held, close the socket and the context, unmap the segment; *r = NULL. */
void pgd_batch_rx_close(pgd_batch_rx **r);

#endif
