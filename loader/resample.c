/* resample.c: separable area resampling in fixed point: Q15 tap tables per axis, the source rows of one output
 * row summed into a 16-bit row (vertical pass), then a horizontal pass with a fixed tap count per pixel; SSE2
 * and AVX2 code on x86-64 and the same arithmetic in plain C (see resample.h for the exact formulas). */
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
    uint32_t *white;   /* output columns that no source pixel maps to */
    uint32_t nwhite;
    uint32_t kv;       /* the most source rows one output row covers */
    uint16_t *col;     /* one output row's source rows summed (vertical pass), plus zeroed slack for the taps */
    uint16_t *out16;   /* the output row before rounding: npix x 3 samples plus slack */
    uint8_t *carry;    /* source rows [carry_first, next_src) kept for output rows still open: < kv rows */
    uint32_t carry_first;
    const uint8_t **rowp; /* kv source row pointers */
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
    r->white = malloc(n * sizeof *r->white);
    if (!r->hoff || !r->hw || !r->white)
        return -1;
    for (uint32_t x = 0; x < n; x++) {
        r->hoff[x] = h->start[x] * 3;
        for (uint32_t t = 0; t < h->count[x]; t++)
            for (int lane = 0; lane < 4; lane++)
                r->hw[hw_at(x, t, k) + lane] = h->w[h->off[x] + t];
        if (!h->count[x])
            r->white[r->nwhite++] = x;
    }
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
    r->rowp = malloc(r->kv * sizeof *r->rowp);
    if (!r->col || !r->out16 || !r->carry || !r->rowp)
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
    free(r->hoff), free(r->hw), free(r->white);
    free(r->col), free(r->out16), free(r->carry), free(r->rowp);
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

/* ---- AVX2 (chosen at run time): the same lanes, 16 at a time ------------------------------------------ */

#if HAVE_SSE2
#define AVX2 __attribute__((target("avx2")))

static inline AVX2 __attribute__((always_inline)) size_t vpass_avx2_c(uint16_t *restrict col, const uint8_t *const *p,
                                                                      const uint16_t *w, uint32_t c, size_t n)
{
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (uint32_t t = 0; t < c; t++) {
            __m256i v = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p[t] + k))), 8);
            s = _mm256_add_epi16(s, _mm256_mulhi_epu16(v, _mm256_set1_epi16((short)w[t])));
        }
        _mm256_storeu_si256((__m256i *)(col + k), _mm256_slli_epi16(s, 1));
    }
    return k;
}

static AVX2 void vpass_avx2(uint16_t *restrict col, const uint8_t *const *p, const uint16_t *w, uint32_t c, size_t n)
{
    size_t k;
    switch (c) {
    case 1: k = vpass_avx2_c(col, p, w, 1, n); break;
    case 2: k = vpass_avx2_c(col, p, w, 2, n); break;
    case 3: k = vpass_avx2_c(col, p, w, 3, n); break;
    default: k = vpass_avx2_c(col, p, w, c, n); break;
    }
    vpass_c(col, p, w, c, k, n);
}

/* Four output pixels per vector: as hpass_sse2_k with both halves in one register. */
static inline AVX2 __attribute__((always_inline)) void hpass_avx2_k(const uint16_t *col, const uint32_t *off,
                                                                    const uint16_t *w, uint32_t nquads, uint32_t k,
                                                                    uint16_t *out)
{
    for (uint32_t q = 0; q < nquads; q++, w += 16 * k, off += 4, out += 12) {
        const uint16_t *a = col + off[0], *b = col + off[1], *c = col + off[2], *d = col + off[3];
        __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (uint32_t t = 0; t < k; t++) {
            __m128i v = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(a + 3 * t)),
                                           _mm_loadl_epi64((const __m128i *)(b + 3 * t)));
            __m128i x = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(c + 3 * t)),
                                           _mm_loadl_epi64((const __m128i *)(d + 3 * t)));
            __m256i vx = _mm256_inserti128_si256(_mm256_castsi128_si256(v), x, 1);
            s = _mm256_add_epi16(s, _mm256_mulhi_epu16(vx, _mm256_loadu_si256((const __m256i *)(w + 16 * t))));
        }
        __m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
        _mm_storel_epi64((__m128i *)out, lo);
        _mm_storel_epi64((__m128i *)(out + 3), _mm_unpackhi_epi64(lo, lo));
        _mm_storel_epi64((__m128i *)(out + 6), hi);
        _mm_storel_epi64((__m128i *)(out + 9), _mm_unpackhi_epi64(hi, hi));
    }
}

static AVX2 void hpass_avx2(const pgd_resample *r, const uint16_t *col, uint16_t *out)
{
    uint32_t nq = r->npix / 4;
    switch (r->kh) {
    case 1: hpass_avx2_k(col, r->hoff, r->hw, nq, 1, out); break;
    case 2: hpass_avx2_k(col, r->hoff, r->hw, nq, 2, out); break;
    case 3: hpass_avx2_k(col, r->hoff, r->hw, nq, 3, out); break;
    case 4: hpass_avx2_k(col, r->hoff, r->hw, nq, 4, out); break;
    default: hpass_avx2_k(col, r->hoff, r->hw, nq, r->kh, out); break;
    }
}

static AVX2 void to_u8_avx2(uint8_t *restrict out, const uint16_t *restrict in, size_t n)
{
    const __m256i half = _mm256_set1_epi16(64);
    size_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i a = _mm256_srli_epi16(_mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(in + k)), half), 7);
        __m256i b = _mm256_srli_epi16(_mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(in + k + 16)), half), 7);
        /* packus works within 128-bit halves: put the quarters back in order */
        __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(out + k), pk);
    }
    to_u8_c(out + k, in + k, n - k);
}

static AVX2 void row_avx2(pgd_resample *r, uint8_t *out, const uint16_t *w, uint32_t c)
{
    vpass_avx2(r->col, r->rowp, w, c, (size_t)r->m.src_w * 3);
    hpass_avx2(r, r->col, r->out16);
    to_u8_avx2(out, r->out16, (size_t)r->m.dst_w * 3);
}
#undef AVX2
#endif

/* ---- streaming --------------------------------------------------------------------------------------- */

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
    const uint16_t *w = r->v.w + r->v.off[y];
    size_t n = (size_t)r->m.src_w * 3, nout = (size_t)r->m.dst_w * 3;
#if HAVE_SSE2
    if (r->impl == PGD_RESAMPLE_AVX2) {
        row_avx2(r, out, w, c);
    } else if (r->impl == PGD_RESAMPLE_SSE2) {
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
