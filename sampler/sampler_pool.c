/* sampler_pool.c: BATCH pixel buffers handed to ZeroMQ without a copy and taken back when it is done with
 * them, so that each message is assembled in pages already mapped (fresh pages fault on first touch); or the
 * slots of the shared-memory ring, lent to the consumer until it releases them. */
#include <stdlib.h>

#include "sampler/sampler_int.h"

int pgd_sampler_pool_init(smp_pool *p, uint32_t max_idle, pgd_err *err)
{
    p->idle = NULL;
    p->nidle = 0;
    p->max_idle = max_idle;
    p->out = 0;
    p->ring = NULL;
    p->ring_bufs = p->ring_free = NULL;
    p->nfree = 0;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        return pgd_fail(err, PGD_EIO, "buffer pool: pthread_mutex_init");
    p->ready = 1;
    return 0;
}

static void buf_free(smp_buf *b)
{
    free(b->data);
    free(b);
}

int pgd_sampler_pool_use_ring(smp_pool *p, pgd_batch_ring *ring, pgd_err *err)
{
    p->ring_bufs = calloc(ring->nslots, sizeof *p->ring_bufs);
    if (!p->ring_bufs)
        return pgd_fail(err, PGD_ENOMEM, "buffer pool: %u ring slots", ring->nslots);
    p->ring = ring;
    for (uint32_t i = ring->nslots; i-- > 0;) { /* slot 0 on top */
        smp_buf *b = &p->ring_bufs[i];
        b->data = pgd_batch_ring_slot(ring, i);
        b->cap = (size_t)ring->slot_size;
        b->pool = p;
        b->ring_slot = i;
        b->next = p->ring_free;
        p->ring_free = b;
    }
    p->nfree = ring->nslots;
    return 0;
}

int pgd_sampler_pool_can_get(smp_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int ok = !p->ring || p->nfree > 0;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* A free ring slot, or NULL (none free). Called with the lock held. */
static smp_buf *ring_take(smp_pool *p)
{
    smp_buf *b = p->ring_free;
    if (b) {
        p->ring_free = b->next;
        p->nfree--;
        p->out++;
        b->next = NULL;
    }
    return b;
}

int pgd_sampler_pool_release(smp_pool *p, uint64_t seq)
{
    for (uint32_t i = 0; p->ring && i < p->ring->nslots; i++) {
        smp_buf *b = &p->ring_bufs[i];
        if (b->at_consumer && b->seq == seq) {
            b->at_consumer = 0;
            pgd_sampler_pool_put(b->data, b);
            return 0;
        }
    }
    return -1;
}

uint32_t pgd_sampler_pool_reclaim(smp_pool *p)
{
    uint32_t n = 0;
    for (uint32_t i = 0; p->ring && i < p->ring->nslots; i++) {
        smp_buf *b = &p->ring_bufs[i];
        if (b->at_consumer) {
            b->at_consumer = 0;
            pgd_sampler_pool_put(b->data, b);
            n++;
        }
    }
    return n;
}

uint32_t pgd_sampler_pool_held(const smp_pool *p)
{
    uint32_t n = 0;
    for (uint32_t i = 0; p->ring && i < p->ring->nslots; i++)
        n += p->ring_bufs[i].at_consumer != 0;
    return n;
}

smp_buf *pgd_sampler_pool_get(smp_pool *p, size_t need)
{
    smp_buf *best = NULL, **best_at = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->ring && need <= p->ring->slot_size) {
        best = ring_take(p);
        pthread_mutex_unlock(&p->mu);
        return best;
    }
    for (smp_buf **at = &p->idle; *at; at = &(*at)->next)
        if ((*at)->cap >= need && (!best || (*at)->cap < best->cap)) {
            best = *at;
            best_at = at;
        }
    if (best) {
        *best_at = best->next;
        p->nidle--;
    }
    p->out++;
    pthread_mutex_unlock(&p->mu);
    if (best) {
        best->next = NULL;
        return best;
    }
    smp_buf *b = malloc(sizeof *b);
    uint8_t *data = b ? malloc(need ? need : 1) : NULL;
    if (!data) {
        free(b);
        pthread_mutex_lock(&p->mu);
        p->out--;
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    b->data = data;
    b->cap = need;
    b->pool = p;
    b->next = NULL;
    b->ring_slot = -1;
    b->at_consumer = 0;
    return b;
}

void pgd_sampler_pool_put(void *data, void *hint)
{
    (void)data;
    smp_buf *b = hint, *drop = NULL;
    smp_pool *p = b->pool;
    pthread_mutex_lock(&p->mu);
    p->out--;
    if (b->ring_slot >= 0) {
        b->next = p->ring_free;
        p->ring_free = b;
        p->nfree++;
        pthread_mutex_unlock(&p->mu);
        return;
    }
    b->next = p->idle;
    p->idle = b;
    p->nidle++;
    if (p->nidle > p->max_idle) { /* keep the larger buffers: they serve any message */
        smp_buf **drop_at = &p->idle;
        for (smp_buf **at = &p->idle; *at; at = &(*at)->next)
            if ((*at)->cap < (*drop_at)->cap)
                drop_at = at;
        drop = *drop_at;
        *drop_at = drop->next;
        p->nidle--;
    }
    pthread_mutex_unlock(&p->mu);
    if (drop)
        buf_free(drop);
}

void pgd_sampler_pool_destroy(smp_pool *p)
{
    if (!p->ready)
        return;
    while (p->idle) {
        smp_buf *b = p->idle;
        p->idle = b->next;
        buf_free(b);
    }
    p->nidle = 0;
    free(p->ring_bufs);
    p->ring_bufs = NULL;
    p->ring_free = NULL;
    p->ring = NULL;
    pthread_mutex_destroy(&p->mu);
    p->ready = 0;
}
