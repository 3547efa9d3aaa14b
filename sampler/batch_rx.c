/* batch_rx.c: the consumer's end of the sampler's stream: credit, BATCH views inline or in shared memory. */
#include "sampler/batch_rx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "log.h"
#include "sampler/batch_ring.h"
#include "wire_zmq.h"

/* A message held for a view, in a doubly linked list so that close can free what was not released. */
typedef struct held {
    pgd_wire_rx rx;
    struct held *prev, *next;
} held;

struct pgd_batch_rx {
    pgd_batch_rx_opts o;
    char *endpoint;
    void *ctx, *sock;
    int shm;              /* the offer is made */
    pgd_batch_ring ring;  /* the segment last named by a BATCH_SHM, mapped read-only */
    int64_t last_tx;      /* monotonic ms */
    held *held;
    pgd_wire_stats bad;
    uint64_t unexpected, end_task;
    int logged_unexpected;
};

void pgd_batch_rx_opts_init(pgd_batch_rx_opts *o)
{
    memset(o, 0, sizeof *o);
    o->credit = 4;
    o->shm = PGD_BATCH_RX_SHM_AUTO;
    o->hwm = 1000;
    o->heartbeat_ms = 1000;
}

/* Send a frameless message of type t (CREDIT, RELEASE, HEARTBEAT). */
static int send_small(pgd_batch_rx *r, pgd_wire_type t, uint64_t task, uint32_t credit, pgd_err *err)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, t);
    h.task_id = task;
    h.credit = credit;
    if (t == PGD_WIRE_CREDIT) {
        h.flags = r->shm ? PGD_WIRE_CREDIT_SHM : 0;
        h.patches_per_image = r->o.patches_per_image;
    }
    if (pgd_wire_send(r->sock, NULL, &h, NULL, 0, 0, err) != 0)
        return -1;
    r->last_tx = pgd_clock_ms();
    return 0;
}

pgd_batch_rx *pgd_batch_rx_open(const pgd_batch_rx_opts *o, pgd_err *err)
{
    if (!o->endpoint || !*o->endpoint || o->credit < 1 || o->hwm < 1 || o->heartbeat_ms < 1 ||
        o->shm < PGD_BATCH_RX_SHM_AUTO || o->shm > PGD_BATCH_RX_SHM_NO) {
        pgd_fail(err, PGD_EINVAL, "batch_rx: an endpoint, credit >= 1, hwm >= 1 and heartbeat_ms >= 1 are needed");
        return NULL;
    }
    pgd_batch_rx *r = calloc(1, sizeof *r);
    if (!r || !(r->endpoint = strdup(o->endpoint))) {
        free(r);
        pgd_fail(err, PGD_ENOMEM, "batch_rx: out of memory");
        return NULL;
    }
    r->o = *o;
    r->o.endpoint = r->endpoint;
    r->shm = o->shm == PGD_BATCH_RX_SHM_YES || (o->shm == PGD_BATCH_RX_SHM_AUTO && strncmp(o->endpoint, "ipc://", 6) == 0);
    int zero = 0, hwm = o->hwm;
    if (!(r->ctx = zmq_ctx_new()) || !(r->sock = zmq_socket(r->ctx, ZMQ_DEALER))) {
        pgd_fail_errno(err, PGD_EIO, "batch_rx: zmq socket");
        goto fail;
    }
    if (zmq_setsockopt(r->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(r->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0) {
        pgd_fail_errno(err, PGD_EIO, "batch_rx: zmq_setsockopt");
        goto fail;
    }
    if (zmq_connect(r->sock, o->endpoint) != 0) {
        pgd_fail_errno(err, PGD_EINVAL, "batch_rx: connect %s", o->endpoint);
        goto fail;
    }
    if (send_small(r, PGD_WIRE_CREDIT, 0, o->credit, err) != 0)
        goto fail;
    return r;
fail:
    pgd_batch_rx_close(&r);
    return NULL;
}

void pgd_batch_rx_keepalive(pgd_batch_rx *r)
{
    if (pgd_clock_ms() - r->last_tx >= r->o.heartbeat_ms)
        send_small(r, PGD_WIRE_HEARTBEAT, 0, 0, NULL); /* best effort: the next one comes soon */
}

/* Point the view's pixels into the segment the BATCH_SHM names (mapped on first use, or again when the name
 * changes: a new sampler). 0; 1 when the reference falls outside the segment (a bad message); -1 when the
 * segment cannot be mapped. */
static int resolve_shm(pgd_batch_rx *r, pgd_wire_msg *m, pgd_err *err)
{
    char name[PGD_WIRE_SEGMENT_MAX + 1];
    pgd_wire_text(m, name, sizeof name);
    if (!r->ring.base || strcmp(name, r->ring.name) != 0) {
        pgd_batch_ring_close(&r->ring);
        if (pgd_batch_ring_attach(&r->ring, name, err) != 0) {
            pgd_err_prefix(err, "BATCH_SHM %llu: ", (unsigned long long)m->h.task_id);
            return -1;
        }
    }
    const pgd_wire_shmref *s = &m->shm;
    if (s->offset < r->ring.data_offset || s->offset > r->ring.size || s->length > r->ring.size - s->offset)
        return 1;
    m->pixels = r->ring.base + s->offset;
    m->pixels_len = (size_t)s->length;
    return 0;
}

/* Take one message that is waiting. 1 with a status in *st, 0 when nothing is waiting, -1 on failure. */
static int take(pgd_batch_rx *r, pgd_batch_view *v, int *st, pgd_err *err)
{
    held *hd = calloc(1, sizeof *hd);
    if (!hd)
        return pgd_fail(err, PGD_ENOMEM, "batch_rx: out of memory");
    pgd_err e = PGD_ERR_INIT;
    int rc = 0;
    if (pgd_wire_recv(r->sock, &hd->rx, 0, PGD_WIRE_DONTWAIT, &e) != 0) {
        if (e.code == PGD_EIO) {
            pgd_fail(err, PGD_EIO, "%s", e.msg);
            rc = -1;
        } else if (e.code != PGD_EBUSY) {
            pgd_wire_stats_reject(&r->bad, hd->rx.msg.reason, &e);
            rc = 1, *st = -1;
        }
        goto drop;
    }
    pgd_wire_msg *m = &hd->rx.msg;
    rc = 1, *st = -1;
    switch (m->h.type) {
    case PGD_WIRE_BATCH_SHM: {
        int k = resolve_shm(r, m, err);
        if (k < 0) {
            rc = -1;
            goto drop;
        }
        if (k > 0) {
            pgd_fail(&e, PGD_EFORMAT, "wire: BATCH_SHM %llu: offset %llu + length %llu is outside %s (%llu bytes)",
                     (unsigned long long)m->h.task_id, (unsigned long long)m->shm.offset,
                     (unsigned long long)m->shm.length, r->ring.name, (unsigned long long)r->ring.size);
            pgd_wire_stats_reject(&r->bad, PGD_WIRE_R_SHMREF, &e);
            send_small(r, PGD_WIRE_RELEASE, m->h.task_id, 0, NULL);
            goto drop;
        }
    }
        /* fall through */
    case PGD_WIRE_BATCH:
        memset(v, 0, sizeof *v);
        v->msg = *m;
        v->pixels = m->pixels;
        v->pixels_len = m->pixels_len;
        v->shm = m->h.type == PGD_WIRE_BATCH_SHM;
        v->priv = hd;
        hd->next = r->held;
        if (r->held)
            r->held->prev = hd;
        r->held = hd;
        *st = PGD_BATCH_RX_BATCH;
        return 1;
    case PGD_WIRE_END:
        r->end_task = m->h.task_id;
        *st = PGD_BATCH_RX_END;
        break;
    case PGD_WIRE_STOP:
        *st = PGD_BATCH_RX_STOP;
        break;
    case PGD_WIRE_HEARTBEAT:
        break;
    default:
        r->unexpected++;
        if (!r->logged_unexpected++)
            pgd_warn("unexpected %s message from the sampler, dropped", pgd_wire_type_name(m->h.type));
    }
drop:
    pgd_wire_rx_close(&hd->rx);
    free(hd);
    return rc;
}

int pgd_batch_rx_next(pgd_batch_rx *r, pgd_batch_view *v, long timeout_ms, pgd_err *err)
{
    int64_t end = timeout_ms < 0 ? -1 : pgd_clock_ms() + timeout_ms;
    for (;;) {
        pgd_batch_rx_keepalive(r);
        int st, rc;
        while ((rc = take(r, v, &st, err)) > 0)
            if (st >= 0)
                return st;
        if (rc < 0)
            return -1;
        int64_t now = pgd_clock_ms();
        if (end >= 0 && now >= end)
            return PGD_BATCH_RX_NONE;
        int64_t wait = r->o.heartbeat_ms;
        if (end >= 0 && end - now < wait)
            wait = end - now;
        zmq_pollitem_t it = {r->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)wait) < 0 && errno != EINTR)
            return pgd_fail_errno(err, PGD_EIO, "batch_rx: zmq_poll");
    }
}

int pgd_batch_rx_release(pgd_batch_rx *r, pgd_batch_view *v, uint32_t credit, pgd_err *err)
{
    held *hd = v->priv;
    int shm = v->shm;
    uint64_t task = v->msg.h.task_id;
    if (hd) {
        if (hd->prev)
            hd->prev->next = hd->next;
        else
            r->held = hd->next;
        if (hd->next)
            hd->next->prev = hd->prev;
        pgd_wire_rx_close(&hd->rx);
        free(hd);
    }
    memset(v, 0, sizeof *v);
    if (shm)
        return send_small(r, PGD_WIRE_RELEASE, task, credit, err);
    return credit ? send_small(r, PGD_WIRE_CREDIT, 0, credit, err) : 0;
}

int pgd_batch_rx_credit(pgd_batch_rx *r, uint32_t n, pgd_err *err)
{
    if (n == 0)
        return pgd_fail(err, PGD_EINVAL, "batch_rx: credit 0");
    return send_small(r, PGD_WIRE_CREDIT, 0, n, err);
}

void *pgd_batch_rx_socket(const pgd_batch_rx *r)
{
    return r->sock;
}

int pgd_batch_rx_shm(const pgd_batch_rx *r)
{
    return r->shm;
}

const pgd_wire_stats *pgd_batch_rx_bad(const pgd_batch_rx *r)
{
    return &r->bad;
}

uint64_t pgd_batch_rx_unexpected(const pgd_batch_rx *r)
{
    return r->unexpected;
}

uint64_t pgd_batch_rx_end_task(const pgd_batch_rx *r)
{
    return r->end_task;
}

void pgd_batch_rx_close(pgd_batch_rx **rp)
{
    pgd_batch_rx *r = rp ? *rp : NULL;
    if (!r)
        return;
    while (r->held) {
        held *hd = r->held;
        r->held = hd->next;
        pgd_wire_rx_close(&hd->rx);
        free(hd);
    }
    if (r->sock)
        zmq_close(r->sock);
    while (r->ctx && zmq_ctx_term(r->ctx) != 0 && errno == EINTR)
        ;
    pgd_batch_ring_close(&r->ring);
    free(r->endpoint);
    free(r);
    *rp = NULL;
}
