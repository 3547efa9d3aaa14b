/* resample.c: separable area resampling: per-axis tap tables, source rows summed into a ring of output rows
 * (vertical first, vectorisable), then one horizontal pass per finished output row. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resample.h"

/* Source pixels and weights of each output pixel along one axis. */
typedef struct taps {
    uint32_t *start, *count, *off; /* first source index, how many, where its weights begin in w */
    float *w;                      /* weights, each output's summing to 1 */
} taps;

struct pgd_resample {
    pgd_resample_map m;
    uint8_t *dst;
    size_t dstride;
    taps h, v;
    float *acc;        /* ring of ring_n output rows being summed, each src_w x 3 (vertical pass done first) */
    uint32_t ring_n;
    uint32_t next_src; /* the next source row to arrive */
    uint32_t next_out; /* the first output row not yet written */
};

static void taps_free(taps *t)
{
    free(t->start), free(t->count), free(t->off), free(t->w);
    memset(t, 0, sizeof *t);
}

/* Tables for n outputs over n_src inputs: output i covers [o + i*r, o + (i+1)*r). */
static int taps_build(taps *t, uint32_t n, double o, double r, uint32_t n_src)
{
    size_t per = (size_t)ceil(r) + 2, total = 0;
    t->start = malloc(n * sizeof *t->start);
    t->count = malloc(n * sizeof *t->count);
    t->off = malloc(n * sizeof *t->off);
    t->w = malloc((size_t)n * per * sizeof *t->w);
    if (!t->start || !t->count || !t->off || !t->w)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        double a = o + i * r, b = a + r;
        a = a < 0 ? 0 : a > n_src ? n_src : a;
        b = b < 0 ? 0 : b > n_src ? n_src : b;
        uint32_t j0 = (uint32_t)floor(a), j1 = (uint32_t)ceil(b);
        if (j1 > n_src)
            j1 = n_src;
        /* drop slivers that only float rounding put there */
        while (j0 < j1 && (j0 + 1.0) - a < 1e-7)
            j0++;
        while (j1 > j0 && b - (j1 - 1.0) < 1e-7)
            j1--;
        t->start[i] = j0;
        t->off[i] = (uint32_t)total;
        t->count[i] = b - a > 1e-9 ? j1 - j0 : 0;
        if (!t->count[i])
            continue;
        double sum = 0;
        for (uint32_t j = j0; j < j1; j++) {
            double lo = a > j ? a : j, hi = b < j + 1.0 ? b : j + 1.0;
            sum += hi - lo;
        }
        for (uint32_t j = j0; j < j1; j++) {
            double lo = a > j ? a : j, hi = b < j + 1.0 ? b : j + 1.0;
            t->w[total++] = (float)((hi - lo) / sum);
        }
    }
    return 0;
}

/* The most output rows open at once: those that started before a source row minus those already done. */
static uint32_t ring_size(const pgd_resample_map *m, const taps *v)
{
    uint32_t done = 0, started = 0, most = 1;
    for (uint32_t j = 0; j < m->src_h; j++) {
        while (started < m->dst_h && v->start[started] <= j)
            started++;
        while (done < m->dst_h && v->start[done] + v->count[done] <= j)
            done++;
        if (started > done && started - done > most)
            most = started - done;
    }
    return most;
}

pgd_resample *pgd_resample_new(const pgd_resample_map *m, uint8_t *dst, size_t dst_stride, pgd_err *err)
{
    if (!m->src_w || !m->src_h || !m->dst_w || !m->dst_h || !(m->rx > 0) || !(m->ry > 0) || !isfinite(m->ox) ||
        !isfinite(m->oy)) {
        pgd_fail(err, PGD_EINVAL, "resample: bad mapping %ux%u -> %ux%u (ratio %g, %g)", m->src_w, m->src_h,
                 m->dst_w, m->dst_h, m->rx, m->ry);
        return NULL;
    }
    pgd_resample *r = calloc(1, sizeof *r);
    if (!r)
        goto nomem;
    r->m = *m;
    r->dst = dst;
    r->dstride = dst_stride;
    if (taps_build(&r->h, m->dst_w, m->ox, m->rx, m->src_w) != 0 ||
        taps_build(&r->v, m->dst_h, m->oy, m->ry, m->src_h) != 0)
        goto nomem;
    r->ring_n = ring_size(m, &r->v);
    r->acc = calloc((size_t)r->ring_n * m->src_w * 3, sizeof *r->acc);
    if (!r->acc)
        goto nomem;
    return r;
nomem:
    pgd_resample_free(&r);
    pgd_fail(err, PGD_ENOMEM, "resample: out of memory for %ux%u -> %ux%u", m->src_w, m->src_h, m->dst_w, m->dst_h);
    return NULL;
}

void pgd_resample_free(pgd_resample **rp)
{
    pgd_resample *r = *rp;
    if (!r)
        return;
    taps_free(&r->h);
    taps_free(&r->v);
    free(r->acc);
    free(r);
    *rp = NULL;
}

static uint8_t to_u8(float v)
{
    v += 0.5f;
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

/* Output row y from its summed source row: the horizontal pass, then clear the sum for reuse. */
static void write_row(pgd_resample *r, uint32_t y)
{
    uint8_t *out = r->dst + y * r->dstride;
    float *acc = r->acc + (size_t)(y % r->ring_n) * r->m.src_w * 3;
    const taps *h = &r->h;
    if (!r->v.count[y]) {
        memset(out, 255, (size_t)r->m.dst_w * 3);
        return;
    }
    for (uint32_t x = 0; x < r->m.dst_w; x++, out += 3) {
        uint32_t c = h->count[x];
        if (!c) {
            out[0] = out[1] = out[2] = 255;
            continue;
        }
        const float *p = acc + (size_t)h->start[x] * 3, *w = h->w + h->off[x];
        float s0 = 0, s1 = 0, s2 = 0;
        for (uint32_t k = 0; k < c; k++, p += 3) {
            s0 += w[k] * p[0];
            s1 += w[k] * p[1];
            s2 += w[k] * p[2];
        }
        out[0] = to_u8(s0), out[1] = to_u8(s1), out[2] = to_u8(s2);
    }
    memset(acc, 0, (size_t)r->m.src_w * 3 * sizeof *acc);
}

/* Write every output row whose source rows have all arrived (all, when `all`). */
static void flush(pgd_resample *r, int all)
{
    while (r->next_out < r->m.dst_h &&
           (all || r->v.start[r->next_out] + r->v.count[r->next_out] <= r->next_src))
        write_row(r, r->next_out++);
}

/* acc += w * src over n values (the vertical pass). Blocks of a fixed 16 let the compiler vectorise it at -O2. */
static void add_row(float *restrict acc, const uint8_t *restrict src, float w, size_t n)
{
    size_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int q = 0; q < 16; q++)
            acc[k + q] += w * (float)src[k + q];
    for (; k < n; k++)
        acc[k] += w * (float)src[k];
}

void pgd_resample_push(pgd_resample *r, const uint8_t *rows, size_t stride, uint32_t n)
{
    size_t len = (size_t)r->m.src_w * 3;
    for (uint32_t i = 0; i < n && r->next_src < r->m.src_h; i++) {
        uint32_t j = r->next_src;
        flush(r, 0);
        for (uint32_t y = r->next_out; y < r->m.dst_h && r->v.start[y] <= j; y++) {
            if (j >= r->v.start[y] + r->v.count[y])
                continue;
            float w = r->v.w[r->v.off[y] + (j - r->v.start[y])];
            add_row(r->acc + (size_t)(y % r->ring_n) * len, rows + i * stride, w, len);
        }
        r->next_src = j + 1;
    }
    flush(r, 0);
}

void pgd_resample_finish(pgd_resample *r)
{
    flush(r, 1);
}

int pgd_resample_area(const pgd_resample_map *m, const uint8_t *src, size_t sstride, uint8_t *dst,
                      size_t dstride, pgd_err *err)
{
    pgd_resample *r = pgd_resample_new(m, dst, dstride, err);
    if (!r)
        return -1;
    pgd_resample_push(r, src, sstride, m->src_h);
    pgd_resample_finish(r);
    pgd_resample_free(&r);
    return 0;
}
