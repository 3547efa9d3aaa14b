/* sched_digest.c: a CRC-32C over the serialised steps of a schedule, to compare whole streams. */
#include <stdint.h>

#include "crc32c.h"
#include "sampler/schedule.h"

/* Values are serialised as u32 little-endian, buffered so that the CRC runs over long spans. */
typedef struct digest_buf {
    uint32_t crc;
    uint32_t used;
    unsigned char b[4096];
} digest_buf;

static void put(digest_buf *d, uint32_t v)
{
    if (d->used + 4 > sizeof d->b) {
        d->crc = pgd_crc32c(d->crc, d->b, d->used);
        d->used = 0;
    }
    d->b[d->used++] = (unsigned char)v;
    d->b[d->used++] = (unsigned char)(v >> 8);
    d->b[d->used++] = (unsigned char)(v >> 16);
    d->b[d->used++] = (unsigned char)(v >> 24);
}

uint32_t pgd_sched_digest_step(uint32_t crc, const pgd_sched_step *st)
{
    digest_buf d;
    d.crc = crc;
    d.used = 0;
    const uint32_t head[] = {st->epoch,  st->batch,  st->step,     st->chunk,    st->flags,
                             (uint32_t)(st->step_end != 0), st->group, st->grid_m, st->grid_n,
                             st->n_images, st->patches_per_image};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        put(&d, head[i]);
    for (uint32_t i = 0; i < st->n_images; i++)
        put(&d, st->images[i]);
    uint64_t cells = (uint64_t)st->n_images * st->patches_per_image;
    for (uint64_t i = 0; i < cells; i++) {
        put(&d, st->cells[i].row);
        put(&d, st->cells[i].col);
    }
    return pgd_crc32c(d.crc, d.b, d.used);
}

int pgd_sched_digest(const pgd_sched_config *cfg, uint32_t *crc, uint64_t *messages, pgd_err *err)
{
    pgd_sched *s = pgd_sched_open(cfg, err);
    if (!s)
        return -1;
    uint32_t c = 0;
    uint64_t count = 0;
    pgd_sched_step st;
    int rc;
    while ((rc = pgd_sched_next(s, &st, err)) == 1) {
        c = pgd_sched_digest_step(c, &st);
        count++;
    }
    pgd_sched_close(&s);
    if (rc < 0)
        return -1;
    if (crc)
        *crc = c;
    if (messages)
        *messages = count;
    return 0;
}
