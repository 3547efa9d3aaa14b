/* resample.c: separable area resampling in fixed point: Q15 tap tables per axis, the source rows of one output
 * row summed into a 16-bit row (vertical pass), then a horizontal pass with a fixed tap count per pixel. Plain C
 * and SSE2 do one output row at a time; AVX2 does 16 rows at once, one per 16-bit lane, so that the horizontal
 * taps are aligned whole-vector loads, can take a band in vertical strips (chunk by chunk of output pixels, as
 * their source columns arrive), and skips the sums for chunks whose source rows are one colour (blank
 * background). The arithmetic is the same in all three (see resample.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_SSE2 1
#else
#define HAVE_SSE2 0
#endif

#include "resample.h"

#define ONE 32768 /* 1.0 in Q15 */
#define BLK 16    /* output rows the AVX2 code does at once: one per 16-bit lane */
#define PFW_AHEAD 384 /* bytes ahead in an output row that the AVX2 code prefetches for writing */
#define BLK_MIN 8 /* fewer rows than this (the end of a band) go one by one through the SSE2 code */
#define XC 64     /* output pixels per chunk of a block (the chunk's vectors stay in the L1 cache) */

/* Source pixels and weights of each output pixel along one axis. */
typedef struct taps {
    uint32_t *start, *count, *off; /* first source index, how many, where its weights begin in w */
    uint16_t *w;                   /* Q15 weights, each output's summing to ONE */
} taps;

struct pgd_resample {
    pgd_resample_map m;
    pgd_resample_impl impl; /* SCALAR, SSE2 or AVX2 */
    uint8_t *dst;
    size_t dstride;
    taps h, v;
    uint32_t kh;       /* horizontal taps per output pixel, the shorter spans padded with zero weights */
    uint32_t npix;     /* dst_w rounded up to a multiple of 4: the horizontal pass does pixels in fours */
    uint32_t *hoff;    /* per output pixel (npix), its first sample in the summed row */
    uint16_t *hw;      /* per four output pixels and tap, 16 weights: each pixel's weight 4 times (hw_at) */
    uint16_t *hwx;     /* per output pixel, its kh weights (AVX2 blocks) */
    uint32_t *white;   /* output columns that no source pixel maps to */
    uint32_t nwhite;
    uint32_t kv;       /* the most source rows one output row covers */
    uint16_t *col;     /* one output row's source rows summed (vertical pass), plus zeroed slack for the taps */
    uint16_t *out16;   /* the output row before rounding: npix x 3 samples plus slack */
    uint8_t *carry;    /* source rows [carry_first, next_src) kept for output rows still open: < kv rows */
    uint8_t *carry2;   /* the next band's carry, filled while the band arrives */
    uint32_t carry_first;
    const uint8_t **rowp; /* kv source row pointers per row of a block (BLK x kv; row by row: the first kv) */
    const uint16_t *bw[BLK]; /* a block's rows: their vertical weights and source row counts (0: no row) */
    uint32_t bc[BLK];
    uint16_t *colT;    /* AVX2: a chunk's summed samples, BLK rows each (32-byte aligned) */
    uint16_t *outT;    /* AVX2: a chunk's output samples, BLK rows each */
    uint8_t *rowT;     /* AVX2: a chunk's output bytes row by row (BLK x XC x 3), when streamed */
    int stream;        /* AVX2: the output rows are 32-byte aligned: whole chunks are streamed (non-temporal) */
    uint16_t *vrows;   /* AVX2: a chunk's summed samples, row by row (BLK rows of vspan) */
    size_t vspan;
    uint32_t nchunk;   /* AVX2: chunks of XC output pixels across a row */
    size_t *ca, *cb;   /* AVX2: per chunk, the summed samples [ca, cb) its taps read */
    uint8_t pat[3][32]; /* AVX2: a colour's bytes (pat_c) from a sample of channel 0, 1 and 2 on (solid_avx2) */
    uint8_t pat_c[3];
    int pat_set;
    uint8_t flat[XC * 3 + 32]; /* AVX2: a chunk's row of one output colour (flat_c) (store_flat_avx2) */
    uint8_t flat_c[3];
    int flat_set;
    uint16_t *lw;      /* AVX2: the block rows' weights by tap, a lane per row (kv x 16, vsolid_avx2) */
    int lw_ok;         /* lw holds the current block's */
    int part;          /* a band pushed in strips (pgd_resample_push_strip) is open */
    uint32_t part_base, part_end; /* its first source row; the first output row it does not complete */
    uint32_t part_chunk; /* the first chunk its blocks have not done yet */
    uint32_t part_keep;  /* the first of its rows the next band still needs (the next carry_first) */
    uint32_t part_col;   /* the columns that have arrived: [0, part_col) */
    uint8_t *band;       /* not AVX2: a band pushed in strips, put together (band_cap bytes) */
    size_t band_cap;
    uint32_t next_src; /* the next source row to arrive */
    uint32_t next_out; /* the first output row not yet written */
};

static int have_avx2(void)
{
#if HAVE_SSE2
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int pgd_resample_impl_available(pgd_resample_impl impl)
{
    switch (impl) {
    case PGD_RESAMPLE_AUTO:
    case PGD_RESAMPLE_SCALAR: return 1;
    case PGD_RESAMPLE_SSE2: return HAVE_SSE2;
    case PGD_RESAMPLE_AVX2: return have_avx2();
    }
    return 0;
}

const char *pgd_resample_impl_name(pgd_resample_impl impl)
{
    switch (impl) {
    case PGD_RESAMPLE_AUTO: return "auto";
    case PGD_RESAMPLE_SCALAR: return "scalar";
    case PGD_RESAMPLE_SSE2: return "sse2";
    case PGD_RESAMPLE_AVX2: return "avx2";
    }
    return "unknown";
}

static void taps_free(taps *t)
{
    free(t->start), free(t->count), free(t->off), free(t->w);
    memset(t, 0, sizeof *t);
}

/* Q15 weights of one span from its exact areas: rounded running sums, so that they add up to ONE exactly;
 * then the zero weights at either end are dropped (start and count move). */
static void quantise(taps *t, uint32_t i, const double *area, double sum)
{
    uint16_t *w = t->w + t->off[i];
    uint32_t n = t->count[i];
    double run = 0;
    long prev = 0;
    for (uint32_t k = 0; k < n; k++) {
        run += area[k];
        long q = k + 1 == n ? ONE : lround(run / sum * ONE);
        q = q < prev ? prev : q > ONE ? ONE : q;
        w[k] = (uint16_t)(q - prev);
        prev = q;
    }
    uint32_t lead = 0;
    while (lead < n && w[lead] == 0)
        lead++;
    while (n > lead && w[n - 1] == 0)
        n--;
    t->start[i] += lead, t->off[i] += lead, t->count[i] = n - lead;
}

/* Tables for n outputs over n_src inputs: output i covers [o + i*r, o + (i+1)*r). */
static int taps_build(taps *t, uint32_t n, double o, double r, uint32_t n_src)
{
    size_t per = (size_t)ceil(r) + 2, total = 0;
    t->start = malloc(n * sizeof *t->start);
    t->count = malloc(n * sizeof *t->count);
    t->off = malloc(n * sizeof *t->off);
    t->w = malloc((size_t)n * per * sizeof *t->w);
    double *area = malloc(per * sizeof *area);
    if (!t->start || !t->count || !t->off || !t->w || !area) {
        free(area);
        return -1;
    }
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
            area[j - j0] = hi - lo;
            sum += hi - lo;
        }
        quantise(t, i, area, sum);
        total += j1 - j0;
    }
    free(area);
    return 0;
}

/* Where the 4 copies of output pixel x's weight for tap t start in hw (k taps per pixel). */
static inline size_t hw_at(uint32_t x, uint32_t t, uint32_t k)
{
    return ((size_t)(x / 4) * k + t) * 16 + (x % 4) * 4;
}

/* The horizontal taps padded to a fixed kh per output pixel (zero weights past each span), laid out by fours
 * of pixels, and the columns left white. The pad pixels past dst_w have no weights and read pixel 0. */
static int hpad_build(pgd_resample *r)
{
    const taps *h = &r->h;
    uint32_t n = r->m.dst_w, k = 1;
    for (uint32_t x = 0; x < n; x++)
        k = h->count[x] > k ? h->count[x] : k;
    r->kh = k;
    r->npix = (n + 3) / 4 * 4;
    r->hoff = calloc(r->npix, sizeof *r->hoff);
    r->hw = calloc((size_t)r->npix * k * 4, sizeof *r->hw);
    r->hwx = calloc((size_t)n * k, sizeof *r->hwx);
    r->white = malloc(n * sizeof *r->white);
    if (!r->hoff || !r->hw || !r->hwx || !r->white)
        return -1;
    for (uint32_t x = 0; x < n; x++) {
        r->hoff[x] = h->start[x] * 3;
        for (uint32_t t = 0; t < h->count[x]; t++) {
            for (int lane = 0; lane < 4; lane++)
                r->hw[hw_at(x, t, k) + lane] = h->w[h->off[x] + t];
            r->hwx[(size_t)x * k + t] = h->w[h->off[x] + t];
        }
        if (!h->count[x])
            r->white[r->nwhite++] = x;
    }
    return 0;
}

/* AVX2: each chunk's sample range, and the chunk buffers, colT and vrows as large as the samples the widest
 * chunk reads (whole 16s). */
static int chunks_alloc(pgd_resample *r)
{
    size_t span = 0, k3 = 3 * (size_t)r->kh;
    r->nchunk = (r->m.dst_w + XC - 1) / XC;
    r->ca = malloc(r->nchunk * sizeof *r->ca);
    r->cb = malloc(r->nchunk * sizeof *r->cb);
    if (!r->ca || !r->cb)
        return -1;
    for (uint32_t x0 = 0; x0 < r->m.dst_w; x0 += XC) {
        uint32_t x1 = r->m.dst_w - x0 < XC ? r->m.dst_w : x0 + XC;
        size_t a = r->hoff[x0], b = a + k3;
        for (uint32_t x = x0 + 1; x < x1; x++) {
            a = r->hoff[x] < a ? r->hoff[x] : a;
            b = r->hoff[x] + k3 > b ? r->hoff[x] + k3 : b;
        }
        r->ca[x0 / XC] = a, r->cb[x0 / XC] = b;
        span = b - a > span ? b - a : span;
    }
    r->vspan = (span + 15) / 16 * 16;
    size_t ncol = r->vspan * BLK * sizeof *r->colT, nout = (size_t)XC * 3 * BLK * sizeof *r->outT;
    r->colT = aligned_alloc(32, ncol);
    r->vrows = aligned_alloc(32, ncol);
    r->outT = aligned_alloc(32, nout);
    r->rowT = aligned_alloc(32, (size_t)BLK * XC * 3);
    if (!r->colT || !r->vrows || !r->outT || !r->rowT)
        return -1;
    r->stream = (uintptr_t)r->dst % 32 == 0 && r->dstride % 32 == 0;
    if (!(r->lw = aligned_alloc(32, (size_t)r->kv * 16 * sizeof *r->lw)))
        return -1;
    memset(r->vrows, 0, ncol); /* rows past a block are read (then dropped): keep them defined */
    memset(r->outT, 0, nout);
    return 0;
}

pgd_resample *pgd_resample_new_impl(const pgd_resample_map *m, pgd_resample_impl impl, uint8_t *dst,
                                    size_t dst_stride, pgd_err *err)
{
    if (!m->src_w || !m->src_h || !m->dst_w || !m->dst_h || !(m->rx > 0) || !(m->ry > 0) || !isfinite(m->ox) ||
        !isfinite(m->oy) || !isfinite(m->rx) || !isfinite(m->ry)) {
        pgd_fail(err, PGD_EINVAL, "resample: bad mapping %ux%u -> %ux%u (ratio %g, %g)", m->src_w, m->src_h,
                 m->dst_w, m->dst_h, m->rx, m->ry);
        return NULL;
    }
    if (!pgd_resample_impl_available(impl)) {
        pgd_fail(err, PGD_EINVAL, "resample: the %s code is not available here", pgd_resample_impl_name(impl));
        return NULL;
    }
    pgd_resample *r = calloc(1, sizeof *r);
    if (!r)
        goto nomem;
    r->m = *m;
    if (impl == PGD_RESAMPLE_AUTO)
        impl = have_avx2() ? PGD_RESAMPLE_AVX2 : HAVE_SSE2 ? PGD_RESAMPLE_SSE2 : PGD_RESAMPLE_SCALAR;
    r->impl = impl;
    r->dst = dst;
    r->dstride = dst_stride;
    if (taps_build(&r->h, m->dst_w, m->ox, m->rx, m->src_w) != 0 ||
        taps_build(&r->v, m->dst_h, m->oy, m->ry, m->src_h) != 0 || hpad_build(r) != 0)
        goto nomem;
    r->kv = 1;
    for (uint32_t y = 0; y < m->dst_h; y++)
        r->kv = r->v.count[y] > r->kv ? r->v.count[y] : r->kv;
    /* a padded tap reads up to kh - 1 pixels past a span, and each tap one sample past its pixel */
    r->col = calloc(((size_t)m->src_w + r->kh) * 3 + 8, sizeof *r->col);
    r->out16 = malloc(((size_t)r->npix * 3 + 8) * sizeof *r->out16);
    r->carry = malloc((size_t)r->kv * m->src_w * 3);
    r->carry2 = malloc((size_t)r->kv * m->src_w * 3);
    r->rowp = calloc((size_t)r->kv * BLK, sizeof *r->rowp);
    if (!r->col || !r->out16 || !r->carry || !r->carry2 || !r->rowp ||
        (impl == PGD_RESAMPLE_AVX2 && chunks_alloc(r) != 0))
        goto nomem;
    return r;
nomem:
    pgd_resample_free(&r);
    pgd_fail(err, PGD_ENOMEM, "resample: out of memory for %ux%u -> %ux%u", m->src_w, m->src_h, m->dst_w, m->dst_h);
    return NULL;
}

pgd_resample *pgd_resample_new(const pgd_resample_map *m, uint8_t *dst, size_t dst_stride, pgd_err *err)
{
    return pgd_resample_new_impl(m, PGD_RESAMPLE_AUTO, dst, dst_stride, err);
}

void pgd_resample_free(pgd_resample **rp)
{
    pgd_resample *r = *rp;
    if (!r)
        return;
    taps_free(&r->h);
    taps_free(&r->v);
    free(r->hoff), free(r->hw), free(r->hwx), free(r->white);
    free(r->col), free(r->out16), free(r->carry), free(r->rowp), free(r->colT), free(r->vrows), free(r->outT);
    free(r->ca), free(r->cb), free(r->rowT), free(r->carry2), free(r->band), free(r->lw);
    free(r);
    *rp = NULL;
}

/* ---- plain C: the reference arithmetic ---------------------------------------------------------------- */

/* floor(a * b / 65536): what SSE2's pmulhuw does in each 16-bit lane. */
static inline uint16_t mulhi(uint16_t a, uint16_t b)
{
    return (uint16_t)(((uint32_t)a * b) >> 16);
}

/* col[k] = 2 * sum over the c source rows p[t] of floor(p[t][k] * w[t] / 256), for k in [k0, n). */
static void vpass_c(uint16_t *restrict col, const uint8_t *const *p, const uint16_t *w, uint32_t c, size_t k0,
                    size_t n)
{
    for (size_t k = k0; k < n; k++) {
        uint16_t s = 0;
        for (uint32_t t = 0; t < c; t++)
            s = (uint16_t)(s + mulhi((uint16_t)(p[t][k] << 8), w[t]));
        col[k] = (uint16_t)(s << 1);
    }
}

/* out (3 samples per pixel) = the horizontal pass over the summed row col, kh taps per pixel. */
static void hpass_c(const pgd_resample *r, const uint16_t *restrict col, uint16_t *restrict out)
{
    uint32_t k = r->kh;
    for (uint32_t x = 0; x < r->m.dst_w; x++) {
        const uint16_t *p = col + r->hoff[x];
        for (int ch = 0; ch < 3; ch++) {
            uint16_t s = 0;
            for (uint32_t t = 0; t < k; t++)
                s = (uint16_t)(s + mulhi(p[3 * t + ch], r->hw[hw_at(x, t, k)]));
            out[3 * (size_t)x + ch] = s;
        }
    }
}

/* Bytes from the 8.7 samples: (v + 64) >> 7. */
static void to_u8_c(uint8_t *restrict out, const uint16_t *restrict in, size_t n)
{
    for (size_t k = 0; k < n; k++)
        out[k] = (uint8_t)((in[k] + 64) >> 7);
}

/* ---- SSE2: the same lanes, 8 at a time --------------------------------------------------------------- */

#if HAVE_SSE2
/* 16 samples of c source rows: bytes to p << 8 (zero in the low byte), times the weight, high half:
 * floor(p * w / 256), summed; doubled on the way out. Inlined with c a constant for 1..3 rows. */
static inline __attribute__((always_inline)) size_t vpass_sse2_c(uint16_t *restrict col, const uint8_t *const *p,
                                                                 const uint16_t *w, uint32_t c, size_t n)
{
    const __m128i z = _mm_setzero_si128();
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m128i lo = z, hi = z;
#pragma GCC unroll 4
        for (uint32_t t = 0; t < c; t++) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p[t] + k)), wt = _mm_set1_epi16((short)w[t]);
            lo = _mm_add_epi16(lo, _mm_mulhi_epu16(_mm_unpacklo_epi8(z, v), wt));
            hi = _mm_add_epi16(hi, _mm_mulhi_epu16(_mm_unpackhi_epi8(z, v), wt));
        }
        _mm_storeu_si128((__m128i *)(col + k), _mm_slli_epi16(lo, 1));
        _mm_storeu_si128((__m128i *)(col + k + 8), _mm_slli_epi16(hi, 1));
    }
    return k;
}

static void vpass_sse2(uint16_t *restrict col, const uint8_t *const *p, const uint16_t *w, uint32_t c, size_t n)
{
    size_t k;
    switch (c) {
    case 1: k = vpass_sse2_c(col, p, w, 1, n); break;
    case 2: k = vpass_sse2_c(col, p, w, 2, n); break;
    case 3: k = vpass_sse2_c(col, p, w, 3, n); break;
    default: k = vpass_sse2_c(col, p, w, c, n); break;
    }
    vpass_c(col, p, w, c, k, n);
}

/* Two output pixels per vector, two vectors per step: each tap loads 4 samples (RGB and the next pixel's R)
 * at each pixel's offset, multiplies by its weights and adds. The fourth lane of each pixel is stored and
 * then overwritten by the next pixel. Inlined with k a constant for the common tap counts. */
static inline __attribute__((always_inline)) void hpass_sse2_k(const uint16_t *col, const uint32_t *off,
                                                               const uint16_t *w, uint32_t nquads, uint32_t k,
                                                               uint16_t *out)
{
    for (uint32_t q = 0; q < nquads; q++, w += 16 * k, off += 4, out += 12) {
        const uint16_t *a = col + off[0], *b = col + off[1], *c = col + off[2], *d = col + off[3];
        __m128i s = _mm_setzero_si128(), u = s;
#pragma GCC unroll 4
        for (uint32_t t = 0; t < k; t++) {
            __m128i v = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(a + 3 * t)),
                                           _mm_loadl_epi64((const __m128i *)(b + 3 * t)));
            __m128i x = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(c + 3 * t)),
                                           _mm_loadl_epi64((const __m128i *)(d + 3 * t)));
            s = _mm_add_epi16(s, _mm_mulhi_epu16(v, _mm_loadu_si128((const __m128i *)(w + 16 * t))));
            u = _mm_add_epi16(u, _mm_mulhi_epu16(x, _mm_loadu_si128((const __m128i *)(w + 16 * t + 8))));
        }
        _mm_storel_epi64((__m128i *)out, s);
        _mm_storel_epi64((__m128i *)(out + 3), _mm_unpackhi_epi64(s, s));
        _mm_storel_epi64((__m128i *)(out + 6), u);
        _mm_storel_epi64((__m128i *)(out + 9), _mm_unpackhi_epi64(u, u));
    }
}

static void hpass_sse2(const pgd_resample *r, const uint16_t *col, uint16_t *out)
{
    uint32_t nq = r->npix / 4;
    switch (r->kh) {
    case 1: hpass_sse2_k(col, r->hoff, r->hw, nq, 1, out); break;
    case 2: hpass_sse2_k(col, r->hoff, r->hw, nq, 2, out); break;
    case 3: hpass_sse2_k(col, r->hoff, r->hw, nq, 3, out); break;
    case 4: hpass_sse2_k(col, r->hoff, r->hw, nq, 4, out); break;
    default: hpass_sse2_k(col, r->hoff, r->hw, nq, r->kh, out); break;
    }
}

static void to_u8_sse2(uint8_t *restrict out, const uint16_t *restrict in, size_t n)
{
    const __m128i half = _mm_set1_epi16(64);
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m128i a = _mm_srli_epi16(_mm_add_epi16(_mm_loadu_si128((const __m128i *)(in + k)), half), 7);
        __m128i b = _mm_srli_epi16(_mm_add_epi16(_mm_loadu_si128((const __m128i *)(in + k + 8)), half), 7);
        _mm_storeu_si128((__m128i *)(out + k), _mm_packus_epi16(a, b));
    }
    to_u8_c(out + k, in + k, n - k);
}
#endif

/* ---- AVX2 (chosen at run time): 16 output rows at once, one per 16-bit lane ----------------------------
 * A block of up to BLK output rows is resampled in chunks of XC output pixels. For each chunk the vertical
 * sums of the samples it reads are computed row by row, 32 samples at a time, and transposed in 16 x 16
 * blocks, so that each summed sample is one vector holding its 16 rows. The horizontal taps then load whole
 * aligned vectors (no gathers) and multiply them by one broadcast weight; the sums start at 64, so a shift
 * gives the bytes, which are paired, transposed back to rows and stored 32 at a time. */

#if HAVE_SSE2
#define AVX2 __attribute__((target("avx2,prfchw")))
#define AVX2_INLINE static inline AVX2 __attribute__((always_inline))

/* out[i] word r = in[r] word i, for 16 x 16 words: unpacks of 16, 32 and 64 bits inside the 128-bit halves,
 * then the halves swapped across. */
AVX2_INLINE void transpose16(const __m256i *in, __m256i *out)
{
    __m256i a[16], b[16], c[16];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) { /* a[2j]: words 0-3 (8-11) of rows 2j, 2j+1 interleaved; a[2j+1]: 4-7 (12-15) */
        a[2 * j] = _mm256_unpacklo_epi16(in[2 * j], in[2 * j + 1]);
        a[2 * j + 1] = _mm256_unpackhi_epi16(in[2 * j], in[2 * j + 1]);
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) { /* b[4q+m]: words 2m, 2m+1 (2m+8, 2m+9) of rows 4q..4q+3 */
        b[4 * q] = _mm256_unpacklo_epi32(a[4 * q], a[4 * q + 2]);
        b[4 * q + 1] = _mm256_unpackhi_epi32(a[4 * q], a[4 * q + 2]);
        b[4 * q + 2] = _mm256_unpacklo_epi32(a[4 * q + 1], a[4 * q + 3]);
        b[4 * q + 3] = _mm256_unpackhi_epi32(a[4 * q + 1], a[4 * q + 3]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) /* c[8h+w]: word w (w+8) of rows 8h..8h+7 */
#pragma GCC unroll 4
        for (int m = 0; m < 4; m++) {
            c[8 * h + 2 * m] = _mm256_unpacklo_epi64(b[8 * h + m], b[8 * h + 4 + m]);
            c[8 * h + 2 * m + 1] = _mm256_unpackhi_epi64(b[8 * h + m], b[8 * h + 4 + m]);
        }
#pragma GCC unroll 8
    for (int w = 0; w < 8; w++) {
        out[w] = _mm256_permute2x128_si256(c[w], c[8 + w], 0x20);
        out[w + 8] = _mm256_permute2x128_si256(c[w], c[8 + w], 0x31);
    }
}

/* One row's vertical sums of samples [k0, k0 + len) into out (len a multiple of 16; 0 past the source row):
 * 16 samples a step as p << 8, times the weight, high half, summed, doubled. The last samples of the row go
 * through the plain C code. Inlined with c a constant for 1..3 rows. */
AVX2_INLINE void vrow_avx2_c(uint16_t *restrict out, const uint8_t *const *p, const uint16_t *w, uint32_t c,
                             size_t k0, size_t len, size_t n, size_t pf)
{
    size_t end = k0 + len < n ? k0 + len : n, k = k0;
    for (uint32_t t = 0; t < c; t++) /* the next chunk's bytes, those that have arrived (below pf) */
        for (size_t ahead = end; ahead < end + len && ahead < pf; ahead += 64)
            _mm_prefetch((const char *)(p[t] + ahead), _MM_HINT_T0);
    for (; k + 16 <= end; k += 16) {
        __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (uint32_t t = 0; t < c; t++) {
            __m256i v = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p[t] + k))), 8);
            s = _mm256_add_epi16(s, _mm256_mulhi_epu16(v, _mm256_set1_epi16((short)w[t])));
        }
        _mm256_store_si256((__m256i *)(out + (k - k0)), _mm256_slli_epi16(s, 1));
    }
    for (; k < k0 + len; k++) {
        uint16_t v = 0;
        for (uint32_t t = 0; k < end && t < c; t++)
            v = (uint16_t)(v + mulhi((uint16_t)(p[t][k] << 8), w[t]));
        out[k - k0] = (uint16_t)(v << 1);
    }
}

static AVX2 void vrow_avx2(uint16_t *out, const uint8_t *const *p, const uint16_t *w, uint32_t c, size_t k0,
                           size_t len, size_t n, size_t pf)
{
    switch (c) {
    case 1: vrow_avx2_c(out, p, w, 1, k0, len, n, pf); break;
    case 2: vrow_avx2_c(out, p, w, 2, k0, len, n, pf); break;
    case 3: vrow_avx2_c(out, p, w, 3, k0, len, n, pf); break;
    default: vrow_avx2_c(out, p, w, c, k0, len, n, pf); break;
    }
}

/* 1 when every source row of the block's nb rows holds one colour over samples [a, e) (a a multiple of 3,
 * e - a at least 3): the bytes of samples a, a + 1, a + 2 repeated, which go into c. Blank background (a
 * slide's white, or any flat fill) is such a region; textured rows fail within their first 32 bytes. */
static AVX2 int solid_avx2(pgd_resample *r, uint32_t nb, size_t a, size_t e, size_t len, size_t pf, uint8_t c[3])
{
    const uint8_t *first = NULL, *last = NULL;
    for (uint32_t row = 0; row < nb && !first; row++)
        first = r->bc[row] ? r->rowp[(size_t)row * r->kv] : NULL;
    if (!first)
        return 0; /* no source rows at all: the general code makes those rows white */
    c[0] = first[a], c[1] = first[a + 1], c[2] = first[a + 2];
    if (e - a >= 6 && memcmp(first + a, first + a + 3, 3) != 0)
        return 0; /* texture: its first two pixels differ already */
    if (!r->pat_set || memcmp(c, r->pat_c, 3) != 0) { /* the colour's bytes from a sample of channel 0, 1, 2 on */
        for (int ph = 0; ph < 3; ph++)
            for (int j = 0, ch = ph; j < 32; j++, ch = ch == 2 ? 0 : ch + 1)
                r->pat[ph][j] = c[ch];
        memcpy(r->pat_c, c, 3);
        r->pat_set = 1;
    }
    const __m256i pat[3] = {_mm256_loadu_si256((const __m256i *)r->pat[0]),
                            _mm256_loadu_si256((const __m256i *)r->pat[1]),
                            _mm256_loadu_si256((const __m256i *)r->pat[2])};
    size_t span = e - a;
    for (uint32_t row = 0; row < nb; row++)
        for (uint32_t t = 0; t < r->bc[row]; t++) {
            const uint8_t *p = r->rowp[(size_t)row * r->kv + t] + a;
            if (p == last)
                continue; /* the same source row as the last one checked (rows share source rows) */
            last = p;
            for (size_t ahead = span; ahead < span + len && a + ahead < pf; ahead += 64)
                _mm_prefetch((const char *)(p + ahead), _MM_HINT_T0); /* the next chunk's bytes, as vrow_avx2_c */
            if (span < 32) {
                for (size_t k = 0, ch = 0; k < span; k++, ch = ch == 2 ? 0 : ch + 1)
                    if (p[k] != c[ch])
                        return 0;
                continue;
            }
            /* 32 bytes at a time (byte o is channel o % 3: pat[o % 3] for a load at o), the last load ending
             * at e */
            __m256i d = _mm256_setzero_si256();
            size_t o = 0;
            for (int ph = 0; o + 32 < span; o += 32, ph = ph == 0 ? 2 : ph - 1)
                d = _mm256_or_si256(d, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + o)), pat[ph]));
            o = span - 32;
            d = _mm256_or_si256(d, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + o)), pat[o % 3]));
            if (!_mm256_testz_si256(d, d))
                return 0;
        }
    return 1;
}

/* For a block whose source rows are one colour c over the chunk (solid_avx2): each row's vertical sums are
 * the same for every sample of a channel, computed as vrow_avx2_c does into v (one vector per channel, a lane
 * per row), with the rows' weights as vectors (tap t of each row in its lane, 0 past its taps and in rows past
 * the block: then its sum is 0, as vrow_avx2_c makes it), built once per block. */
static AVX2 void vsolid_avx2(pgd_resample *r, uint32_t nb, const uint8_t c[3], __m256i v[3])
{
    if (!r->lw_ok) {
        memset(r->lw, 0, (size_t)r->kv * 16 * sizeof *r->lw);
        for (uint32_t row = 0; row < nb; row++)
            for (uint32_t t = 0; t < r->bc[row]; t++)
                r->lw[t * 16 + row] = r->bw[row][t];
        r->lw_ok = 1;
    }
    for (int ch = 0; ch < 3; ch++) {
        __m256i p = _mm256_set1_epi16((short)(c[ch] << 8)), sum = _mm256_setzero_si256();
        for (uint32_t t = 0; t < r->kv; t++)
            sum = _mm256_add_epi16(sum, _mm256_mulhi_epu16(p, _mm256_load_si256((const __m256i *)(r->lw + t * 16))));
        v[ch] = _mm256_slli_epi16(sum, 1);
    }
}

/* The vertical sums of samples [a, a + len) of the block's rows (len a multiple of 16), row by row into
 * vrows, then transposed in 16 x 16 blocks into colT: one vector (16 rows) per sample. Rows past the block
 * keep whatever they held: their lanes are dropped. Only samples [a, e) are read by the taps (e <= a + len):
 * when the block's rows are one colour there, nothing is summed or transposed: the three samples of each row
 * go into solid and the return is 1 (else 0). */
static AVX2 int vchunk_avx2(pgd_resample *r, uint32_t nb, size_t a, size_t len, size_t e, __m256i solid[3])
{
    size_t n = (size_t)r->m.src_w * 3, pf = r->part ? (size_t)r->part_col * 3 : n;
    uint8_t c[3];
    e = e < n ? e : n;
    if (e >= a + 3 && solid_avx2(r, nb, a, e, len, pf, c)) {
        vsolid_avx2(r, nb, c, solid);
        return 1;
    }
    for (uint32_t row = 0; row < nb; row++)
        vrow_avx2(r->vrows + row * r->vspan, r->rowp + (size_t)row * r->kv, r->bw[row], r->bc[row], a, len, n, pf);
    __m256i *colT = (__m256i *)r->colT;
    for (size_t g = 0; g < len; g += 16) {
        __m256i in[16];
#pragma GCC unroll 16
        for (int row = 0; row < 16; row++)
            in[row] = _mm256_load_si256((const __m256i *)(r->vrows + row * r->vspan + g));
        transpose16(in, colT + g);
    }
    return 0;
}

/* The output of npx pixels from colT (whose first sample is a): 64 + the sum of the taps, shifted to bytes,
 * two samples to a 16-bit word (the first in the low byte: a row's bytes in order once transposed back).
 * Pixels go in pairs (six samples, three words). Inlined with kh a constant for the common tap counts, and
 * with ps 1, or 0 for a chunk of one colour: then colT holds just its three samples, the same for every tap. */
AVX2_INLINE void hchunk_avx2_k(const __m256i *colT, const uint32_t *hoff, const uint16_t *hw, uint32_t npx,
                               uint32_t kh, size_t a, __m256i *outT, size_t ps)
{
    const __m256i half = _mm256_set1_epi16(64);
    uint32_t x = 0;
    for (; x + 1 < npx; x += 2, hw += 2 * kh, outT += 3) {
        const __m256i *p = colT + (hoff[x] - a) * ps, *q = colT + (hoff[x + 1] - a) * ps;
        __m256i s0 = half, s1 = half, s2 = half, s3 = half, s4 = half, s5 = half;
#pragma GCC unroll 4
        for (uint32_t t = 0; t < kh; t++) {
            __m256i w = _mm256_set1_epi16((short)hw[t]), v = _mm256_set1_epi16((short)hw[kh + t]);
            s0 = _mm256_add_epi16(s0, _mm256_mulhi_epu16(_mm256_load_si256(p + 3 * t * ps), w));
            s1 = _mm256_add_epi16(s1, _mm256_mulhi_epu16(_mm256_load_si256(p + 3 * t * ps + 1), w));
            s2 = _mm256_add_epi16(s2, _mm256_mulhi_epu16(_mm256_load_si256(p + 3 * t * ps + 2), w));
            s3 = _mm256_add_epi16(s3, _mm256_mulhi_epu16(_mm256_load_si256(q + 3 * t * ps), v));
            s4 = _mm256_add_epi16(s4, _mm256_mulhi_epu16(_mm256_load_si256(q + 3 * t * ps + 1), v));
            s5 = _mm256_add_epi16(s5, _mm256_mulhi_epu16(_mm256_load_si256(q + 3 * t * ps + 2), v));
        }
        outT[0] = _mm256_or_si256(_mm256_srli_epi16(s0, 7), _mm256_slli_epi16(_mm256_srli_epi16(s1, 7), 8));
        outT[1] = _mm256_or_si256(_mm256_srli_epi16(s2, 7), _mm256_slli_epi16(_mm256_srli_epi16(s3, 7), 8));
        outT[2] = _mm256_or_si256(_mm256_srli_epi16(s4, 7), _mm256_slli_epi16(_mm256_srli_epi16(s5, 7), 8));
    }
    if (x < npx) { /* an odd last pixel: its blue sample pairs with nothing */
        const __m256i *p = colT + (hoff[x] - a) * ps;
        __m256i s0 = half, s1 = half, s2 = half;
        for (uint32_t t = 0; t < kh; t++) {
            __m256i w = _mm256_set1_epi16((short)hw[t]);
            s0 = _mm256_add_epi16(s0, _mm256_mulhi_epu16(_mm256_load_si256(p + 3 * t * ps), w));
            s1 = _mm256_add_epi16(s1, _mm256_mulhi_epu16(_mm256_load_si256(p + 3 * t * ps + 1), w));
            s2 = _mm256_add_epi16(s2, _mm256_mulhi_epu16(_mm256_load_si256(p + 3 * t * ps + 2), w));
        }
        outT[0] = _mm256_or_si256(_mm256_srli_epi16(s0, 7), _mm256_slli_epi16(_mm256_srli_epi16(s1, 7), 8));
        outT[1] = _mm256_srli_epi16(s2, 7);
    }
}

/* The output of npx pixels from x0 on, from colT, or from the three samples at solid (a chunk of one colour). */
static AVX2 void hchunk_avx2(const pgd_resample *r, uint32_t x0, uint32_t npx, size_t a, const __m256i *solid)
{
    const __m256i *colT = solid ? solid : (const __m256i *)r->colT;
    const uint32_t *hoff = r->hoff + x0;
    const uint16_t *hw = r->hwx + (size_t)x0 * r->kh;
    __m256i *outT = (__m256i *)r->outT;
    size_t ps = solid ? 0 : 1;
    switch (r->kh * 2 + (uint32_t)ps) {
    case 2: hchunk_avx2_k(colT, hoff, hw, npx, 1, a, outT, 0); break;
    case 3: hchunk_avx2_k(colT, hoff, hw, npx, 1, a, outT, 1); break;
    case 4: hchunk_avx2_k(colT, hoff, hw, npx, 2, a, outT, 0); break;
    case 5: hchunk_avx2_k(colT, hoff, hw, npx, 2, a, outT, 1); break;
    case 6: hchunk_avx2_k(colT, hoff, hw, npx, 3, a, outT, 0); break;
    case 7: hchunk_avx2_k(colT, hoff, hw, npx, 3, a, outT, 1); break;
    case 8: hchunk_avx2_k(colT, hoff, hw, npx, 4, a, outT, 0); break;
    case 9: hchunk_avx2_k(colT, hoff, hw, npx, 4, a, outT, 1); break;
    default: hchunk_avx2_k(colT, hoff, hw, npx, r->kh, a, outT, ps); break;
    }
}

/* The ns output bytes in outT (paired into words, 16 rows each) to the block's nb rows at out (row_left bytes
 * left in each row from there): transposed back to rows, 32 bytes a store (the last, partial store through a
 * buffer). */
static AVX2 void hstore_avx2(const pgd_resample *r, uint32_t nb, size_t ns, size_t row_left, uint8_t *out)
{
    const __m256i *outT = (const __m256i *)r->outT;
    if (r->stream && ns == (size_t)XC * 3) {
        /* whole 32-byte-aligned lines: transposed into rowT, then each row's 192 bytes streamed past the
         * caches (no read of the lines before they are written; the output is not read again here) */
        __m256i *rowT = (__m256i *)r->rowT;
        for (size_t s = 0; s < ns; s += 32) {
            __m256i o[16];
            transpose16(outT + s / 2, o);
            for (uint32_t row = 0; row < nb; row++)
                _mm256_store_si256(rowT + row * (XC * 3 / 32) + s / 32, o[row]);
        }
        for (uint32_t row = 0; row < nb; row++) {
            __m256i *dst = (__m256i *)(out + row * r->dstride);
#pragma GCC unroll 6
            for (int k = 0; k < XC * 3 / 32; k++)
                _mm256_stream_si256(dst + k, _mm256_load_si256(rowT + row * (XC * 3 / 32) + k));
        }
        return;
    }
    for (size_t s = 0; s < ns; s += 32) {
        __m256i o[16];
        transpose16(outT + s / 2, o);
        for (uint32_t row = 0; row < nb; row++) {
            uint8_t *dst = out + row * r->dstride + s;
            if (s + PFW_AHEAD < row_left)
                _m_prefetchw(dst + PFW_AHEAD); /* the next chunk's output, with the intent to write */
            if (s + 32 <= ns) {
                _mm256_storeu_si256((__m256i *)dst, o[row]);
            } else {
                uint8_t last[32];
                _mm256_storeu_si256((__m256i *)last, o[row]);
                memcpy(dst, last, ns - s);
            }
        }
    }
}

/* A chunk of a block whose source rows are one colour (vsolid_avx2 put each row's vertical sums, V = 2 S, in
 * v): every output sample of a row and channel is O = sum_t floor(S w_t / 32768) over weights w_t that add
 * up to 32768, so S - kh < O <= S whatever the pixel's weights, and when (S + 64) >> 7 is the same at both
 * ends (at 0 for the lower end) that byte is the sample of every pixel, as the general code would compute it
 * (blank background always is). Then each of the nb rows gets its colour over the chunk's ns bytes at out,
 * streamed as hstore_avx2 streams, and the return is 1; else 0 (nothing written). */
static AVX2 int store_flat_avx2(pgd_resample *r, uint32_t nb, const __m256i v[3], size_t ns, uint8_t *out)
{
    const __m256i half = _mm256_set1_epi16(64), below = _mm256_set1_epi16((short)(r->kh - 1));
    uint16_t b[3][16] __attribute__((aligned(32)));
    for (int ch = 0; ch < 3; ch++) {
        __m256i top = _mm256_add_epi16(_mm256_srli_epi16(v[ch], 1), half);
        __m256i hi = _mm256_srli_epi16(top, 7), lo = _mm256_srli_epi16(_mm256_subs_epu16(top, below), 7);
        uint32_t same = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(hi, lo));
        if (nb < 16 ? (same | ~((1u << 2 * nb) - 1)) != ~0u : same != ~0u)
            return 0;
        _mm256_store_si256((__m256i *)b[ch], hi);
    }
    uint8_t *pat = (uint8_t *)(((uintptr_t)r->flat + 31) & ~(uintptr_t)31);
    for (uint32_t i = 0; i < nb; i++) {
        uint8_t c[3] = {(uint8_t)b[0][i], (uint8_t)b[1][i], (uint8_t)b[2][i]};
        if (!r->flat_set || memcmp(c, r->flat_c, 3) != 0) { /* the row's colour over a whole chunk */
            for (size_t k = 0, ch = 0; k < (size_t)XC * 3; k++, ch = ch == 2 ? 0 : ch + 1)
                pat[k] = c[ch];
            memcpy(r->flat_c, c, 3);
            r->flat_set = 1;
        }
        uint8_t *row = out + i * r->dstride;
        if (r->stream && ns == (size_t)XC * 3) {
#pragma GCC unroll 6
            for (int k = 0; k < XC * 3 / 32; k++)
                _mm256_stream_si256((__m256i *)row + k, _mm256_load_si256((const __m256i *)pat + k));
        } else {
            memcpy(row, pat, ns);
        }
    }
    return 1;
}

/* Chunks [c0, c1) of output rows y0 .. y0 + nb - 1 (nb <= BLK) from the rows and weights in rowp, bw, bc. */
static AVX2 void block_avx2(pgd_resample *r, uint32_t y0, uint32_t nb, uint32_t c0, uint32_t c1)
{
    uint8_t *out = r->dst + y0 * r->dstride;
    r->lw_ok = 0; /* a new block: its weights by tap are built again when needed */
    for (uint32_t c = c0; c < c1; c++) {
        uint32_t x0 = c * XC, npx = r->m.dst_w - x0 < XC ? r->m.dst_w - x0 : XC;
        size_t a = r->ca[c];
        __m256i solid[3];
        int one = vchunk_avx2(r, nb, a, (r->cb[c] - a + 15) / 16 * 16, r->cb[c], solid);
        if (one && store_flat_avx2(r, nb, solid, (size_t)npx * 3, out + (size_t)x0 * 3))
            continue; /* blank background: neither taps across nor transposes */
        hchunk_avx2(r, x0, npx, a, one ? solid : NULL);
        hstore_avx2(r, nb, (size_t)npx * 3, (size_t)(r->m.dst_w - x0) * 3, out + (size_t)x0 * 3);
    }
}
#undef AVX2
#undef AVX2_INLINE
#endif

/* ---- streaming --------------------------------------------------------------------------------------- */

/* Source row j: in the carry when it came before `base`, else row j - base of the rows being pushed. */
static const uint8_t *src_row(const pgd_resample *r, uint32_t j, uint32_t base, const uint8_t *rows, size_t stride)
{
    if (j < base)
        return r->carry + (size_t)(j - r->carry_first) * r->m.src_w * 3;
    return rows + (size_t)(j - base) * stride;
}

/* The source rows of output row y that have arrived (all of them, except at finish) into rows_out; their
 * count (0: none, the row is white). */
static uint32_t gather_rows(const pgd_resample *r, uint32_t y, uint32_t base, const uint8_t *rows, size_t stride,
                            const uint8_t **rows_out)
{
    uint32_t j0 = r->v.start[y], c = r->v.count[y];
    if (j0 + c > r->next_src)
        c = r->next_src > j0 ? r->next_src - j0 : 0;
    for (uint32_t t = 0; t < c; t++)
        rows_out[t] = src_row(r, j0 + t, base, rows, stride);
    return c;
}

/* Output row y on its own: the plain C code, or SSE2 (for SSE2, and for AVX2 rows too few to fill a block). */
static void write_row(pgd_resample *r, uint32_t y, uint32_t base, const uint8_t *rows, size_t stride)
{
    uint8_t *out = r->dst + y * r->dstride;
    uint32_t c = gather_rows(r, y, base, rows, stride, r->rowp);
    if (!c) {
        memset(out, 255, (size_t)r->m.dst_w * 3);
        return;
    }
    const uint16_t *w = r->v.w + r->v.off[y];
    size_t n = (size_t)r->m.src_w * 3, nout = (size_t)r->m.dst_w * 3;
#if HAVE_SSE2
    if (r->impl != PGD_RESAMPLE_SCALAR) {
        vpass_sse2(r->col, r->rowp, w, c, n);
        hpass_sse2(r, r->col, r->out16);
        to_u8_sse2(out, r->out16, nout);
    } else
#endif
    {
        vpass_c(r->col, r->rowp, w, c, 0, n);
        hpass_c(r, r->col, r->out16);
        to_u8_c(out, r->out16, nout);
    }
    for (uint32_t i = 0; i < r->nwhite; i++)
        memset(out + (size_t)r->white[i] * 3, 255, 3);
}

/* White where output rows y .. y + nb - 1 of a block get nothing: whole rows without source rows, and the
 * columns no source pixel maps to. */
static void block_white(pgd_resample *r, uint32_t y, uint32_t nb)
{
    for (uint32_t i = 0; i < nb; i++) {
        uint8_t *out = r->dst + (y + i) * r->dstride;
        if (!r->bc[i])
            memset(out, 255, (size_t)r->m.dst_w * 3);
        for (uint32_t k = 0; r->bc[i] && k < r->nwhite; k++)
            memset(out + (size_t)r->white[k] * 3, 255, 3);
    }
}

/* After the AVX2 code streamed bytes past the caches: they are in memory before the caller (or another
 * thread it hands them to) reads them. */
static void stream_fence(const pgd_resample *r)
{
#if HAVE_SSE2
    if (r->stream)
        _mm_sfence();
#else
    (void)r;
#endif
}

#if HAVE_SSE2
/* Chunks [c0, c1) of the AVX2 block of output rows y .. y + nb - 1 (nb <= BLK); the last chunk also makes
 * the rows' white. */
static void block_chunks(pgd_resample *r, uint32_t y, uint32_t nb, uint32_t c0, uint32_t c1, uint32_t base,
                         const uint8_t *rows, size_t stride)
{
    for (uint32_t i = 0; i < BLK; i++) {
        r->bc[i] = i < nb ? gather_rows(r, y + i, base, rows, stride, r->rowp + (size_t)i * r->kv) : 0;
        r->bw[i] = i < nb ? r->v.w + r->v.off[y + i] : NULL;
    }
    if (c1 > c0)
        block_avx2(r, y, nb, c0, c1);
    if (c1 == r->nchunk)
        block_white(r, y, nb);
}
#endif

/* Output rows y .. y + nb - 1: a block of the AVX2 code (nb <= BLK, at least half of it), or row after row. */
static void write_rows(pgd_resample *r, uint32_t y, uint32_t nb, uint32_t base, const uint8_t *rows, size_t stride)
{
#if HAVE_SSE2
    if (r->impl == PGD_RESAMPLE_AVX2 && nb >= BLK_MIN) {
        block_chunks(r, y, nb, 0, r->nchunk, base, rows, stride);
        return;
    }
#endif
    for (uint32_t i = 0; i < nb; i++)
        write_row(r, y + i, base, rows, stride);
}

/* 1 when every source row of output row y has arrived. */
static int row_ready(const pgd_resample *r, uint32_t y)
{
    return y < r->m.dst_h && r->v.start[y] + r->v.count[y] <= r->next_src;
}

/* Rows [base, base + n) of the source arrive: the output rows they complete are [next_out, part_end); the
 * rows the next band still needs, [part_keep, base + n), go to carry2 (those before base from the carry
 * now; the new ones as their columns arrive). */
static void band_start(pgd_resample *r, uint32_t n)
{
    size_t len = (size_t)r->m.src_w * 3;
    uint32_t base = r->next_src;
    if (n > r->m.src_h - base)
        n = r->m.src_h - base;
    r->next_src = base + n;
    r->part = 1, r->part_base = base, r->part_chunk = 0, r->part_col = 0, r->part_end = r->next_out;
    while (row_ready(r, r->part_end))
        r->part_end++;
    uint32_t keep = r->part_end < r->m.dst_h ? r->v.start[r->part_end] : r->next_src;
    keep = keep > r->next_src ? r->next_src : keep;
    r->part_keep = keep;
    for (uint32_t j = keep; j < base; j++)
        memcpy(r->carry2 + (size_t)(j - keep) * len, r->carry + (size_t)(j - r->carry_first) * len, len);
}

/* The band is complete: carry2 becomes the carry. */
static void band_end(pgd_resample *r)
{
    uint8_t *t = r->carry;
    r->carry = r->carry2, r->carry2 = t;
    r->carry_first = r->part_keep;
    r->part = 0;
}

/* The output rows [next_out, part_end) of a band whose rows are all in rows (column 0 at rows): AVX2 blocks
 * (at least BLK_MIN rows each), then the rest row by row. */
static void band_rows(pgd_resample *r, const uint8_t *rows, size_t stride)
{
    while (r->next_out < r->part_end) {
        uint32_t nb = r->part_end - r->next_out < BLK ? r->part_end - r->next_out : BLK;
        write_rows(r, r->next_out, nb, r->part_base, rows, stride);
        r->next_out += nb;
    }
}

#if HAVE_SSE2
/* AVX2: chunks [part_chunk, c1) of the band's output rows, in blocks of BLK rows (the last one shorter: its
 * rows cannot wait for whole rows, which a band pushed in strips never has). */
static void band_chunks(pgd_resample *r, uint32_t c1, const uint8_t *rows, size_t stride)
{
    for (uint32_t y = r->next_out; y < r->part_end; y += BLK) {
        uint32_t nb = r->part_end - y < BLK ? r->part_end - y : BLK;
        block_chunks(r, y, nb, r->part_chunk, c1, r->part_base, rows, stride);
    }
    r->part_chunk = c1;
}
#endif

uint32_t pgd_resample_strip_from(const pgd_resample *r)
{
    if (!r->part || r->part_chunk >= r->nchunk || r->impl != PGD_RESAMPLE_AVX2)
        return r->part ? r->part_col : 0;
    uint32_t c = (uint32_t)(r->ca[r->part_chunk] / 3);
    return c < r->part_col ? c : r->part_col;
}

uint32_t pgd_resample_strip_margin(const pgd_resample *r)
{
    return r->impl == PGD_RESAMPLE_AVX2 ? (uint32_t)(r->vspan / 3) + 2 : 0;
}

int pgd_resample_push_strip(pgd_resample *r, const uint8_t *strip, size_t stride, uint32_t n, uint32_t col0,
                            uint32_t col1, pgd_err *err)
{
    size_t len = (size_t)r->m.src_w * 3;
    int whole = !r->part && col0 == 0 && col1 >= r->m.src_w;
    if (!r->part)
        band_start(r, n);
    uint32_t base = r->part_base, nrows = r->next_src - base, from = r->part_col;
    col1 = col1 > r->m.src_w ? r->m.src_w : col1;
    /* column 0 of the band's first row, as if the strip were whole rows (where col0 lies, it is the strip) */
    const uint8_t *rows = (const uint8_t *)((uintptr_t)strip - (uintptr_t)col0 * 3);
    for (uint32_t j = r->part_keep > base ? r->part_keep : base; j < r->next_src && col1 > from; j++)
        memcpy(r->carry2 + (size_t)(j - r->part_keep) * len + (size_t)from * 3,
               strip + (size_t)(j - base) * stride + (size_t)(from - col0) * 3, (size_t)(col1 - from) * 3);
    r->part_col = col1 > from ? col1 : from;
    if (whole) { /* the whole band in one call: straight from the caller's rows */
        band_rows(r, rows, stride);
        band_end(r);
        stream_fence(r);
        return 0;
    }
#if HAVE_SSE2
    if (r->impl == PGD_RESAMPLE_AVX2) {
        uint32_t c1 = r->part_chunk;
        while (c1 < r->nchunk && (r->cb[c1] <= (size_t)col1 * 3 || col1 == r->m.src_w))
            c1++;
        if (c1 > r->part_chunk)
            band_chunks(r, c1, rows, stride);
        if (col1 == r->m.src_w) {
            r->next_out = r->part_end;
            band_end(r);
        }
        stream_fence(r);
        return 0;
    }
#endif
    /* the row-by-row code needs whole rows: the strips are put together first */
    if ((size_t)nrows * len > r->band_cap) {
        uint8_t *b = realloc(r->band, (size_t)nrows * len);
        if (!b)
            return pgd_fail(err, PGD_ENOMEM, "resample: out of memory for a band of %u rows of %u pixels", nrows,
                            r->m.src_w);
        r->band = b, r->band_cap = (size_t)nrows * len;
    }
    for (uint32_t j = 0; j < nrows && col1 > from; j++)
        memcpy(r->band + (size_t)j * len + (size_t)from * 3, strip + (size_t)j * stride + (size_t)(from - col0) * 3,
               (size_t)(col1 - from) * 3);
    if (col1 == r->m.src_w) {
        band_rows(r, r->band, len);
        band_end(r);
    }
    return 0;
}

void pgd_resample_push(pgd_resample *r, const uint8_t *rows, size_t stride, uint32_t n)
{
    (void)pgd_resample_push_strip(r, rows, stride, n, 0, r->m.src_w, NULL); /* whole rows: nothing to allocate */
}

void pgd_resample_finish(pgd_resample *r)
{
    while (r->next_out < r->m.dst_h) {
        uint32_t nb = r->m.dst_h - r->next_out < BLK ? r->m.dst_h - r->next_out : BLK;
        write_rows(r, r->next_out, nb, r->next_src, NULL, 0);
        r->next_out += nb;
    }
    stream_fence(r);
}

int pgd_resample_area_impl(const pgd_resample_map *m, pgd_resample_impl impl, const uint8_t *src, size_t sstride,
                           uint8_t *dst, size_t dstride, pgd_err *err)
{
    pgd_resample *r = pgd_resample_new_impl(m, impl, dst, dstride, err);
    if (!r)
        return -1;
    pgd_resample_push(r, src, sstride, m->src_h);
    pgd_resample_finish(r);
    pgd_resample_free(&r);
    return 0;
}

int pgd_resample_area(const pgd_resample_map *m, const uint8_t *src, size_t sstride, uint8_t *dst,
                      size_t dstride, pgd_err *err)
{
    return pgd_resample_area_impl(m, PGD_RESAMPLE_AUTO, src, sstride, dst, dstride, err);
}
