/* sampler_pool.c: BATCH pixel buffers handed to ZeroMQ without a copy and taken back when it is done with
 * them, so that each message is assembled in pages already mapped (fresh pages fault on first touch). */
#include <stdlib.h>

#include "sampler/sampler_int.h"

int pgd_sampler_pool_init(smp_pool *p, uint32_t max_idle, pgd_err *err)
{
    p->idle = NULL;
    p->nidle = 0;
    p->max_idle = max_idle;
    p->out = 0;
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

smp_buf *pgd_sampler_pool_get(smp_pool *p, size_t need)
{
    smp_buf *best = NULL, **best_at = NULL;
    pthread_mutex_lock(&p->mu);
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
    return b;
}

void pgd_sampler_pool_put(void *data, void *hint)
{
    (void)data;
    smp_buf *b = hint, *drop = NULL;
    smp_pool *p = b->pool;
    pthread_mutex_lock(&p->mu);
    p->out--;
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
    pthread_mutex_destroy(&p->mu);
    p->ready = 0;
}
