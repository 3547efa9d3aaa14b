/* resample.c: separable area resampling: per-axis tap tables, source rows summed into a ring of output rows
 * (vertical first, vectorisable), then one horizontal pass per finished output row with a fixed tap count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resample.h"

/* Four floats: one RGB pixel and one lane of slack, so a pixel is weighted with a single vector operation. */
typedef float v4f __attribute__((vector_size(16)));

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
    uint32_t kh;       /* horizontal taps per output pixel, the shorter spans padded with zero weights */
    uint32_t *hoff;    /* per output pixel, its first source float in an accumulated row */
    float *hw;         /* dst_w x kh horizontal weights */
    uint32_t *white;   /* output columns that no source pixel maps to */
    uint32_t nwhite;
    uint32_t kv;       /* the most source rows one output row covers */
    float *col;        /* one output row's source rows summed (vertical pass), plus zeroed slack for the taps */
    float *outf;       /* the output row before rounding: dst_w x 3 plus slack */
    uint8_t *carry;    /* source rows [carry_first, next_src) kept for output rows still open: < kv rows */
    uint32_t carry_first;
    const uint8_t **rowp; /* kv source row pointers */
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

/* The horizontal taps padded to a fixed kh per output pixel (zero weights past each span), and the columns
 * left white. */
static int hpad_build(pgd_resample *r)
{
    const taps *h = &r->h;
    uint32_t n = r->m.dst_w, k = 1;
    for (uint32_t x = 0; x < n; x++)
        k = h->count[x] > k ? h->count[x] : k;
    r->kh = k;
    r->hoff = malloc(n * sizeof *r->hoff);
    r->hw = calloc((size_t)n * k, sizeof *r->hw);
    r->white = malloc(n * sizeof *r->white);
    if (!r->hoff || !r->hw || !r->white)
        return -1;
    for (uint32_t x = 0; x < n; x++) {
        r->hoff[x] = h->start[x] * 3;
        memcpy(r->hw + (size_t)x * k, h->w + h->off[x], h->count[x] * sizeof *r->hw);
        if (!h->count[x])
            r->white[r->nwhite++] = x;
    }
    return 0;
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
        taps_build(&r->v, m->dst_h, m->oy, m->ry, m->src_h) != 0 || hpad_build(r) != 0)
        goto nomem;
    r->kv = 1;
    for (uint32_t y = 0; y < m->dst_h; y++)
        r->kv = r->v.count[y] > r->kv ? r->v.count[y] : r->kv;
    /* a padded tap reads up to kh - 1 pixels past a span, and every tap one float past its pixel */
    r->col = calloc((size_t)m->src_w * 3 + (size_t)r->kh * 3 + 4, sizeof *r->col);
    r->outf = malloc(((size_t)m->dst_w * 3 + 4) * sizeof *r->outf);
    r->carry = malloc((size_t)r->kv * m->src_w * 3);
    r->rowp = malloc(r->kv * sizeof *r->rowp);
    if (!r->col || !r->outf || !r->carry || !r->rowp)
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
    free(r->hoff), free(r->hw), free(r->white);
    free(r->col), free(r->outf), free(r->carry), free(r->rowp);
    free(r);
    *rp = NULL;
}

static v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* out (3 floats per pixel, one float of slack) = the horizontal pass over the summed row acc, kh taps per
 * pixel; each pixel's fourth lane spills into the next pixel and is overwritten by it. */
static void hpass(const pgd_resample *r, const float *restrict acc, float *restrict out)
{
    const uint32_t *off = r->hoff;
    const float *w = r->hw;
    uint32_t n = r->m.dst_w, k = r->kh;
    switch (k) {
    case 1:
        for (uint32_t x = 0; x < n; x++, w += 1) {
            v4f s = load4(acc + off[x]) * w[0];
            memcpy(out + 3 * (size_t)x, &s, sizeof s);
        }
        return;
    case 2:
        for (uint32_t x = 0; x < n; x++, w += 2) {
            const float *p = acc + off[x];
            v4f s = load4(p) * w[0] + load4(p + 3) * w[1];
            memcpy(out + 3 * (size_t)x, &s, sizeof s);
        }
        return;
    case 3:
        for (uint32_t x = 0; x < n; x++, w += 3) {
            const float *p = acc + off[x];
            v4f s = load4(p) * w[0] + load4(p + 3) * w[1] + load4(p + 6) * w[2];
            memcpy(out + 3 * (size_t)x, &s, sizeof s);
        }
        return;
    case 4:
        for (uint32_t x = 0; x < n; x++, w += 4) {
            const float *p = acc + off[x];
            v4f s = load4(p) * w[0] + load4(p + 3) * w[1] + load4(p + 6) * w[2] + load4(p + 9) * w[3];
            memcpy(out + 3 * (size_t)x, &s, sizeof s);
        }
        return;
    default:
        for (uint32_t x = 0; x < n; x++, w += k) {
            const float *p = acc + off[x];
            v4f s = load4(p) * w[0];
            for (uint32_t t = 1; t < k; t++)
                s += load4(p + 3 * t) * w[t];
            memcpy(out + 3 * (size_t)x, &s, sizeof s);
        }
    }
}

/* Round and clamp n floats to bytes. Blocks of a fixed 16 let the compiler vectorise it at -O2. */
static void to_u8(uint8_t *restrict out, const float *restrict in, size_t n)
{
    size_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int q = 0; q < 16; q++) {
            float v = in[k + q] + 0.5f;
            v = v < 0 ? 0 : v;
            v = v > 255 ? 255 : v;
            out[k + q] = (uint8_t)(int32_t)v;
        }
    for (; k < n; k++) {
        float v = in[k] + 0.5f;
        v = v < 0 ? 0 : v;
        v = v > 255 ? 255 : v;
        out[k] = (uint8_t)(int32_t)v;
    }
}

/* col = sum over c source rows p[t] of w[t] * p[t], n bytes each: the vertical pass. Blocks of a fixed 16
 * let the compiler vectorise it at -O2. */
static void vpass(float *restrict col, const uint8_t *const *p, const float *w, uint32_t c, size_t n)
{
    size_t k = 0;
    const uint8_t *restrict a = p[0], *restrict b = c > 1 ? p[1] : NULL, *restrict d = c > 2 ? p[2] : NULL;
    float wa = w[0], wb = c > 1 ? w[1] : 0, wd = c > 2 ? w[2] : 0;
    if (c == 1) {
        for (; k + 16 <= n; k += 16)
            for (int q = 0; q < 16; q++)
                col[k + q] = wa * a[k + q];
        for (; k < n; k++)
            col[k] = wa * a[k];
        return;
    }
    if (c == 2) {
        for (; k + 16 <= n; k += 16)
            for (int q = 0; q < 16; q++)
                col[k + q] = wa * a[k + q] + wb * b[k + q];
        for (; k < n; k++)
            col[k] = wa * a[k] + wb * b[k];
        return;
    }
    for (; k + 16 <= n; k += 16)
        for (int q = 0; q < 16; q++)
            col[k + q] = wa * a[k + q] + wb * b[k + q] + wd * d[k + q];
    for (; k < n; k++)
        col[k] = wa * a[k] + wb * b[k] + wd * d[k];
    for (uint32_t t = 3; t < c; t++) {
        const uint8_t *restrict e = p[t];
        float we = w[t];
        for (k = 0; k + 16 <= n; k += 16)
            for (int q = 0; q < 16; q++)
                col[k + q] += we * e[k + q];
        for (; k < n; k++)
            col[k] += we * e[k];
    }
}

/* Source row j: in the carry when it came before `base`, else row j - base of the rows being pushed. */
static const uint8_t *src_row(const pgd_resample *r, uint32_t j, uint32_t base, const uint8_t *rows, size_t stride)
{
    if (j < base)
        return r->carry + (size_t)(j - r->carry_first) * r->m.src_w * 3;
    return rows + (size_t)(j - base) * stride;
}

/* Output row y from its source rows that have arrived (all of them, except at finish; none: white). */
static void write_row(pgd_resample *r, uint32_t y, uint32_t base, const uint8_t *rows, size_t stride)
{
    uint8_t *out = r->dst + y * r->dstride;
    uint32_t j0 = r->v.start[y], c = r->v.count[y];
    if (j0 + c > r->next_src)
        c = r->next_src > j0 ? r->next_src - j0 : 0;
    if (!c) {
        memset(out, 255, (size_t)r->m.dst_w * 3);
        return;
    }
    for (uint32_t t = 0; t < c; t++)
        r->rowp[t] = src_row(r, j0 + t, base, rows, stride);
    vpass(r->col, r->rowp, r->v.w + r->v.off[y], c, (size_t)r->m.src_w * 3);
    hpass(r, r->col, r->outf);
    to_u8(out, r->outf, (size_t)r->m.dst_w * 3);
    for (uint32_t i = 0; i < r->nwhite; i++)
        memset(out + (size_t)r->white[i] * 3, 255, 3);
}

void pgd_resample_push(pgd_resample *r, const uint8_t *rows, size_t stride, uint32_t n)
{
    size_t len = (size_t)r->m.src_w * 3;
    uint32_t base = r->next_src;
    if (n > r->m.src_h - base)
        n = r->m.src_h - base;
    r->next_src = base + n;
    while (r->next_out < r->m.dst_h && r->v.start[r->next_out] + r->v.count[r->next_out] <= r->next_src)
        write_row(r, r->next_out++, base, rows, stride);
    /* keep the arrived rows the open output rows still need: fewer than kv */
    uint32_t keep = r->next_out < r->m.dst_h ? r->v.start[r->next_out] : r->next_src;
    keep = keep > r->next_src ? r->next_src : keep;
    if (keep < base && keep > r->carry_first)
        memmove(r->carry, r->carry + (size_t)(keep - r->carry_first) * len, (size_t)(base - keep) * len);
    for (uint32_t j = keep > base ? keep : base; j < r->next_src; j++)
        memcpy(r->carry + (size_t)(j - keep) * len, rows + (size_t)(j - base) * stride, len);
    r->carry_first = keep;
}

void pgd_resample_finish(pgd_resample *r)
{
    while (r->next_out < r->m.dst_h)
        write_row(r, r->next_out++, r->next_src, NULL, 0);
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
