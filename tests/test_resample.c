/* test_resample.c: the area resampler's implementations (plain C, SSE2, AVX2 in 16-row blocks) give the same
 * bytes on random images of odd sizes at integer and non-integer ratios, and on images of flat colour, whole or
 * streamed in uneven bands (also pushed in vertical strips), write nothing between the output rows, and stay
 * within one level of the exact area mean. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "loader/resample.h"

static uint8_t *random_bytes(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rand_r(&seed) >> 5);
    return p;
}

/* The exact area-weighted mean of each output pixel in doubles, rounded half up; white where nothing maps. */
static void exact_area(const pgd_resample_map *m, const uint8_t *src, size_t sstride, uint8_t *dst)
{
    for (uint32_t y = 0; y < m->dst_h; y++)
        for (uint32_t x = 0; x < m->dst_w; x++) {
            double a0 = fmax(m->ox + x * m->rx, 0), a1 = fmin(m->ox + (x + 1) * m->rx, m->src_w);
            double b0 = fmax(m->oy + y * m->ry, 0), b1 = fmin(m->oy + (y + 1) * m->ry, m->src_h);
            double acc[3] = {0, 0, 0}, wsum = 0;
            for (int64_t j = (int64_t)floor(b0); j < (int64_t)ceil(b1); j++)
                for (int64_t i = (int64_t)floor(a0); i < (int64_t)ceil(a1); i++) {
                    double w = (fmin(a1, i + 1.0) - fmax(a0, (double)i)) * (fmin(b1, j + 1.0) - fmax(b0, (double)j));
                    if (w <= 0)
                        continue;
                    for (int k = 0; k < 3; k++)
                        acc[k] += w * src[(size_t)j * sstride + (size_t)i * 3 + k];
                    wsum += w;
                }
            for (int k = 0; k < 3; k++)
                dst[((size_t)y * m->dst_w + x) * 3 + k] = wsum > 0 ? (uint8_t)floor(acc[k] / wsum + 0.5) : 255;
        }
}

/* Mappings: odd sizes, fractional offsets, ratios below 1 (upsampling), between 1 and 2 (the fit case),
 * integer (box averages), large, and mappings that run past the source (white borders). */
static const struct {
    uint32_t sw, sh, dw, dh;
    double ox, oy, rx, ry;
} maps[] = {
    {5000, 37, 4096, 30, 0, 0, 5000.0 / 4096, 37.0 / 30},
    {97, 61, 70, 44, 0, 0, 1.37, 1.37},
    {101, 67, 47, 31, 0.3, 0.7, 2.0, 2.0},
    {33, 29, 75, 65, 0, 0, 0.44, 0.45},
    {64, 64, 16, 8, 0, 0, 4, 8},
    {257, 131, 31, 17, 0.5, 0.25, 257.0 / 31, 131.0 / 17},
    {99, 77, 120, 80, -5.5, -3, 1.0, 1.0},
    {49, 53, 23, 19, 10.25, 4.5, 3.7, 1.9},
    {1, 1, 3, 2, 0, 0, 0.3, 0.5},
    {7, 5, 3, 3, 0.1, 0.2, 7.0 / 3, 5.0 / 3},
    {300, 200, 299, 199, 0, 0, 300.0 / 299, 200.0 / 199},
    {1023, 9, 1017, 7, 0, 0, 1023.0 / 1017, 9.0 / 7},
};
#define NMAPS (sizeof maps / sizeof *maps)

static pgd_resample_map map_at(size_t k)
{
    return (pgd_resample_map){maps[k].sw, maps[k].sh, maps[k].ox, maps[k].oy, maps[k].rx, maps[k].ry,
                              maps[k].dw, maps[k].dh};
}

/* Resample with impl, the source pushed in bands of 1, 2, ... rows (cycling), into dst. */
static int run_banded(const pgd_resample_map *m, pgd_resample_impl impl, const uint8_t *src, size_t sstride,
                      uint8_t *dst)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_resample *r = pgd_resample_new_impl(m, impl, dst, (size_t)m->dst_w * 3, &err);
    if (!r)
        return -1;
    for (uint32_t y = 0, step = 1; y < m->src_h; y += step, step = step % 7 + 1)
        pgd_resample_push(r, src + (size_t)y * sstride, sstride, step > m->src_h - y ? m->src_h - y : step);
    pgd_resample_finish(r);
    pgd_resample_free(&r);
    return 0;
}

static void test_impls_identical(void)
{
    static const pgd_resample_impl impls[] = {PGD_RESAMPLE_SSE2, PGD_RESAMPLE_AVX2, PGD_RESAMPLE_AUTO};
    int compared = 0;
    for (size_t k = 0; k < NMAPS; k++) {
        pgd_resample_map m = map_at(k);
        size_t sstride = (size_t)m.src_w * 3 + 5, n = (size_t)m.dst_w * m.dst_h * 3; /* rows with slack */
        uint8_t *src = random_bytes(sstride * m.src_h, (unsigned)k + 1), *ref = malloc(n), *got = malloc(n);
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL_FATAL(pgd_resample_area_impl(&m, PGD_RESAMPLE_SCALAR, src, sstride, ref,
                                                     (size_t)m.dst_w * 3, &err), 0);
        for (size_t i = 0; i < sizeof impls / sizeof *impls; i++) {
            if (!pgd_resample_impl_available(impls[i]))
                continue;
            memset(got, 0, n);
            CU_ASSERT_EQUAL(pgd_resample_area_impl(&m, impls[i], src, sstride, got, (size_t)m.dst_w * 3, &err), 0);
            int same = memcmp(ref, got, n) == 0;
            memset(got, 0, n);
            CU_ASSERT_EQUAL(run_banded(&m, impls[i], src, sstride, got), 0);
            same &= memcmp(ref, got, n) == 0;
            if (!same)
                fprintf(stderr, "\n  map %zu (%ux%u -> %ux%u): %s differs from scalar", k, m.src_w, m.src_h, m.dst_w,
                        m.dst_h, pgd_resample_impl_name(impls[i]));
            CU_ASSERT(same);
            compared++;
        }
        free(src), free(ref), free(got);
    }
    printf("\n  %d comparisons with the scalar code (sse2 %s, avx2 %s here)", compared,
           pgd_resample_impl_available(PGD_RESAMPLE_SSE2) ? "yes" : "no",
           pgd_resample_impl_available(PGD_RESAMPLE_AVX2) ? "yes" : "no");
    CU_ASSERT(compared > 0 || !pgd_resample_impl_available(PGD_RESAMPLE_SSE2));
}

/* Random bytes at random mappings (seeded): the same bytes from every implementation. */
static void test_impls_identical_random(void)
{
    unsigned seed = 7;
    int compared = 0;
    for (int it = 0; it < 200; it++) {
        pgd_resample_map m;
        m.src_w = 1 + (uint32_t)rand_r(&seed) % 300, m.src_h = 1 + (uint32_t)rand_r(&seed) % 40;
        m.rx = 0.2 + (rand_r(&seed) % 1000) / 100.0, m.ry = 0.2 + (rand_r(&seed) % 1000) / 100.0;
        m.ox = (rand_r(&seed) % 100) / 10.0 - 2, m.oy = (rand_r(&seed) % 100) / 10.0 - 2;
        m.dst_w = 1 + (uint32_t)(m.src_w / m.rx), m.dst_h = 1 + (uint32_t)(m.src_h / m.ry);
        size_t sstride = (size_t)m.src_w * 3, n = (size_t)m.dst_w * m.dst_h * 3;
        uint8_t *src = random_bytes(sstride * m.src_h, seed), *ref = malloc(n), *got = malloc(n);
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL_FATAL(pgd_resample_area_impl(&m, PGD_RESAMPLE_SCALAR, src, sstride, ref,
                                                     (size_t)m.dst_w * 3, &err), 0);
        for (pgd_resample_impl impl = PGD_RESAMPLE_SSE2; impl <= PGD_RESAMPLE_AVX2; impl++) {
            if (!pgd_resample_impl_available(impl))
                continue;
            CU_ASSERT_EQUAL(run_banded(&m, impl, src, sstride, got), 0);
            if (memcmp(ref, got, n) != 0)
                fprintf(stderr, "\n  random map %d (%ux%u -> %ux%u, ratio %g x %g): %s differs", it, m.src_w, m.src_h,
                        m.dst_w, m.dst_h, m.rx, m.ry, pgd_resample_impl_name(impl));
            CU_ASSERT(memcmp(ref, got, n) == 0);
            compared++;
        }
        free(src), free(ref), free(got);
    }
    printf("\n  %d random comparisons", compared);
}

/* Resample with impl into rows `dstride` bytes apart, the source pushed in bands of `band` rows (0: cycling
 * 1..7). */
static int run_into(const pgd_resample_map *m, pgd_resample_impl impl, const uint8_t *src, size_t sstride,
                    uint8_t *dst, size_t dstride, uint32_t band)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_resample *r = pgd_resample_new_impl(m, impl, dst, dstride, &err);
    if (!r)
        return -1;
    for (uint32_t y = 0, step = band ? band : 1; y < m->src_h; y += step, step = band ? band : step % 7 + 1)
        pgd_resample_push(r, src + (size_t)y * sstride, sstride, step > m->src_h - y ? m->src_h - y : step);
    pgd_resample_finish(r);
    pgd_resample_free(&r);
    return 0;
}

/* The AVX2 code's 16-row blocks and 64-pixel chunks: wide and tall images whose sizes are not multiples of
 * either, every tap count from 1 (ratio 1) to 10 (ratio 8.9), upsampling, white borders, bands that end
 * with a few rows (done one by one) or fill whole blocks; the same bytes as the plain C code, and nothing
 * written between the rows (each row is followed by 7 bytes that must keep their value). */
static void test_blocks_identical(void)
{
    static const struct {
        uint32_t sw, sh, dw, dh;
        double ox, oy, rx, ry;
    } bm[] = {
        {1000, 300, 819, 246, 0, 0, 1000.0 / 819, 300.0 / 246},  /* the fit's ratio */
        {517, 97, 300, 50, 0, 0, 517.0 / 300, 97.0 / 50},        /* near 2 */
        {130, 70, 390, 210, 0, 0, 1.0 / 3, 1.0 / 3},            /* upsampling */
        {900, 64, 101, 7, 0, 0, 900.0 / 101, 64.0 / 7},          /* 10 taps across */
        {77, 41, 77, 41, 0, 0, 1, 1},                            /* one tap */
        {200, 90, 150, 70, -7.5, -3, 1.5, 1.5},                  /* white columns and rows */
        {129, 33, 65, 17, 0.25, 0.5, 2, 2},                      /* one pixel past a chunk */
    };
    static const uint32_t bands[] = {0, 40, 1000};
    int compared = 0;
    for (size_t k = 0; k < sizeof bm / sizeof *bm; k++) {
        pgd_resample_map m = {bm[k].sw, bm[k].sh, bm[k].ox, bm[k].oy, bm[k].rx, bm[k].ry, bm[k].dw, bm[k].dh};
        size_t sstride = (size_t)m.src_w * 3, dstride = (size_t)m.dst_w * 3 + 7, n = dstride * m.dst_h;
        uint8_t *src = random_bytes(sstride * m.src_h, (unsigned)k + 50), *ref = malloc(n), *got = malloc(n);
        memset(ref, 0xa5, n);
        CU_ASSERT_EQUAL_FATAL(run_into(&m, PGD_RESAMPLE_SCALAR, src, sstride, ref, dstride, 1000), 0);
        for (pgd_resample_impl impl = PGD_RESAMPLE_SSE2; impl <= PGD_RESAMPLE_AVX2; impl++)
            for (size_t b = 0; b < sizeof bands / sizeof *bands && pgd_resample_impl_available(impl); b++) {
                memset(got, 0xa5, n);
                CU_ASSERT_EQUAL(run_into(&m, impl, src, sstride, got, dstride, bands[b]), 0);
                if (memcmp(ref, got, n) != 0)
                    fprintf(stderr, "\n  block map %zu (%ux%u -> %ux%u), bands of %u: %s differs", k, m.src_w,
                            m.src_h, m.dst_w, m.dst_h, bands[b], pgd_resample_impl_name(impl));
                CU_ASSERT(memcmp(ref, got, n) == 0);
                compared++;
            }
        int slack_kept = 1;
        for (uint32_t y = 0; y < m.dst_h; y++)
            for (size_t i = (size_t)m.dst_w * 3; i < dstride; i++)
                slack_kept &= ref[y * dstride + i] == 0xa5;
        CU_ASSERT(slack_kept);
        free(src), free(ref), free(got);
    }
    printf("\n  %d comparisons of whole blocks and banded rows", compared);
}

/* Resample with impl, each band of `band` rows pushed in vertical strips as a tile-by-tile reader does:
 * strips of 1, 6, 11, ... columns (cycling below `most`), the columns pgd_resample_strip_from still asks for
 * moved to the left edge of a strip buffer `most` + pgd_resample_strip_margin columns wide. */
static int run_strips(const pgd_resample_map *m, pgd_resample_impl impl, const uint8_t *src, size_t sstride,
                      uint8_t *dst, size_t dstride, uint32_t band, uint32_t most)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_resample *r = pgd_resample_new_impl(m, impl, dst, dstride, &err);
    if (!r)
        return -1;
    uint32_t width = most + pgd_resample_strip_margin(r);
    size_t pitch = (size_t)width * 3 + 1; /* odd on purpose */
    uint8_t *strip = calloc((size_t)band * pitch + 64, 1);
    int rc = 0;
    for (uint32_t y = 0; y < m->src_h && rc == 0; y += band) {
        uint32_t n = m->src_h - y < band ? m->src_h - y : band, s0 = 0, step = 1;
        for (uint32_t x = 0; x < m->src_w && rc == 0; x += step, step = (step + 5) % most + 1) {
            uint32_t w = m->src_w - x < step ? m->src_w - x : step, from = x ? pgd_resample_strip_from(r) : 0;
            if (from > x || x - from + w > width) {
                rc = -1; /* asked for more than its margin */
                break;
            }
            for (uint32_t k = 0; k < n && from > s0; k++)
                memmove(strip + k * pitch, strip + k * pitch + (size_t)(from - s0) * 3, (size_t)(x - from) * 3);
            s0 = from;
            for (uint32_t k = 0; k < n; k++)
                memcpy(strip + k * pitch + (size_t)(x - s0) * 3, src + (size_t)(y + k) * sstride + (size_t)x * 3,
                       (size_t)w * 3);
            rc = pgd_resample_push_strip(r, strip, pitch, n, s0, x + w, &err);
        }
    }
    pgd_resample_finish(r);
    pgd_resample_free(&r);
    free(strip);
    return rc;
}

/* Bands pushed in strips give the bytes of the whole image in one piece, with every implementation, into
 * rows with slack and into 32-byte-aligned rows (which the AVX2 code streams past the caches). */
static void test_strips_identical(void)
{
    static const struct {
        uint32_t sw, sh, dw, dh;
        double ox, oy, rx, ry;
    } sm[] = {
        {1000, 300, 819, 246, 0, 0, 1000.0 / 819, 300.0 / 246}, /* the fit's ratio */
        {517, 97, 300, 50, 0, 0, 517.0 / 300, 97.0 / 50},
        {130, 70, 390, 210, 0, 0, 1.0 / 3, 1.0 / 3},           /* upsampling */
        {900, 64, 101, 7, 0, 0, 900.0 / 101, 64.0 / 7},         /* 10 taps across */
        {200, 90, 150, 70, -7.5, -3, 1.5, 1.5},                 /* white columns and rows */
        {640, 40, 512, 33, 0, 0, 1.25, 40.0 / 33},              /* whole chunks only */
    };
    static const uint32_t bands[] = {1, 7, 40, 1000}, mosts[] = {1, 17, 64, 300};
    int compared = 0;
    for (size_t k = 0; k < sizeof sm / sizeof *sm; k++) {
        pgd_resample_map m = {sm[k].sw, sm[k].sh, sm[k].ox, sm[k].oy, sm[k].rx, sm[k].ry, sm[k].dw, sm[k].dh};
        size_t sstride = (size_t)m.src_w * 3, aligned = ((size_t)m.dst_w * 3 + 63) / 64 * 64;
        size_t n = ((aligned > (size_t)m.dst_w * 3 + 7 ? aligned : (size_t)m.dst_w * 3 + 7) * m.dst_h + 63) / 64 * 64;
        uint8_t *src = random_bytes(sstride * m.src_h, (unsigned)k + 70), *ref = aligned_alloc(64, n);
        uint8_t *got = aligned_alloc(64, n);
        for (size_t d = 0; d < 2; d++) {
            size_t dstride = d ? aligned : (size_t)m.dst_w * 3 + 7;
            memset(ref, 0xa5, n);
            CU_ASSERT_EQUAL_FATAL(run_into(&m, PGD_RESAMPLE_SCALAR, src, sstride, ref, dstride, 1000), 0);
            for (pgd_resample_impl impl = PGD_RESAMPLE_SCALAR; impl <= PGD_RESAMPLE_AVX2; impl++)
                for (size_t b = 0; b < sizeof bands / sizeof *bands && pgd_resample_impl_available(impl); b++)
                    for (size_t w = 0; w < sizeof mosts / sizeof *mosts; w++) {
                        memset(got, 0xa5, n);
                        CU_ASSERT_EQUAL(run_strips(&m, impl, src, sstride, got, dstride, bands[b], mosts[w]), 0);
                        int same = memcmp(ref, got, n) == 0;
                        if (d) { /* and whole bands into the aligned rows */
                            memset(got, 0xa5, n);
                            CU_ASSERT_EQUAL(run_into(&m, impl, src, sstride, got, dstride, bands[b]), 0);
                            same &= memcmp(ref, got, n) == 0;
                        }
                        if (!same)
                            fprintf(stderr, "\n  strip map %zu (%ux%u -> %ux%u), bands of %u, strips below %u, "
                                    "%s rows: %s differs", k, m.src_w, m.src_h, m.dst_w, m.dst_h, bands[b], mosts[w],
                                    d ? "aligned" : "odd", pgd_resample_impl_name(impl));
                        CU_ASSERT(same);
                        compared++;
                    }
        }
        free(src), free(ref), free(got);
    }
    printf("\n  %d comparisons of bands pushed in strips", compared);
}

/* A source of flat rectangles (white, black, grey, coloured, textured) over white, and stray bits in single
 * bytes: the AVX2 code's shortcut for source rows of one colour (and output chunks of one colour) is taken
 * and missed by a byte, in every channel and at chunk edges. */
static uint8_t *patchwork(uint32_t w, uint32_t h, size_t stride, unsigned seed)
{
    static const uint8_t colours[][3] = {{255, 255, 255}, {0, 0, 0}, {128, 128, 128}, {200, 30, 90}, {1, 2, 3},
                                         {255, 255, 254}};
    uint8_t *p = malloc(stride * h);
    memset(p, 255, stride * h);
    for (int k = 0; k < 30; k++) {
        uint32_t x0 = (uint32_t)rand_r(&seed) % w, y0 = (uint32_t)rand_r(&seed) % h;
        uint32_t x1 = x0 + 1 + (uint32_t)rand_r(&seed) % (w - x0), y1 = y0 + 1 + (uint32_t)rand_r(&seed) % (h - y0);
        int c = rand_r(&seed) % 7; /* 6: texture */
        for (uint32_t y = y0; y < y1; y++)
            for (uint32_t x = x0; x < x1; x++)
                for (int ch = 0; ch < 3; ch++)
                    p[y * stride + x * 3 + ch] = c == 6 ? (uint8_t)(rand_r(&seed) >> 5) : colours[c][ch];
    }
    for (int k = 0; k < 25; k++) {
        uint32_t x = (uint32_t)rand_r(&seed) % w, y = (uint32_t)rand_r(&seed) % h;
        p[y * stride + x * 3 + (uint32_t)rand_r(&seed) % 3] ^= (uint8_t)(1 << rand_r(&seed) % 8);
    }
    return p;
}

/* Sources of flat colour (patchwork, and one colour all over) give the same bytes from every implementation,
 * whole, in bands and in strips, into rows with slack and into aligned rows. */
static void test_flat_identical(void)
{
    static const struct {
        uint32_t sw, sh, dw, dh;
        double ox, oy, rx, ry;
    } fm[] = {
        {1000, 300, 819, 246, 0, 0, 1000.0 / 819, 300.0 / 246}, /* the fit's ratio */
        {517, 97, 300, 50, 0, 0, 517.0 / 300, 97.0 / 50},
        {130, 70, 390, 210, 0, 0, 1.0 / 3, 1.0 / 3},           /* upsampling */
        {900, 64, 101, 7, 0, 0, 900.0 / 101, 64.0 / 7},         /* 10 taps across */
        {77, 41, 77, 41, 0, 0, 1, 1},                           /* one tap */
        {200, 90, 150, 70, -7.5, -3, 1.5, 1.5},                 /* white columns and rows */
        {640, 40, 512, 33, 0, 0, 1.25, 40.0 / 33},              /* whole chunks only */
        {25600, 40, 128, 20, 0, 0, 200, 2},                     /* 201 taps across: the floors lose a level */
    };
    static const uint8_t one[][3] = {{255, 255, 255}, {0, 0, 0}, {200, 30, 90}};
    int compared = 0;
    for (size_t k = 0; k < sizeof fm / sizeof *fm; k++)
        for (size_t f = 0; f < 1 + sizeof one / sizeof *one; f++) {
            pgd_resample_map m = {fm[k].sw, fm[k].sh, fm[k].ox, fm[k].oy, fm[k].rx, fm[k].ry, fm[k].dw, fm[k].dh};
            size_t sstride = (size_t)m.src_w * 3, aligned = ((size_t)m.dst_w * 3 + 63) / 64 * 64;
            size_t odd = (size_t)m.dst_w * 3 + 7, n = ((aligned > odd ? aligned : odd) * m.dst_h + 63) / 64 * 64;
            uint8_t *src = patchwork(m.src_w, m.src_h, sstride, (unsigned)k + 90), *ref = aligned_alloc(64, n);
            uint8_t *got = aligned_alloc(64, n);
            for (size_t i = 0; f && i < sstride * m.src_h; i++)
                src[i] = one[f - 1][i % 3];
            for (size_t d = 0; d < 2; d++) {
                size_t dstride = d ? aligned : (size_t)m.dst_w * 3 + 7;
                memset(ref, 0xa5, n);
                CU_ASSERT_EQUAL_FATAL(run_into(&m, PGD_RESAMPLE_SCALAR, src, sstride, ref, dstride, 1000), 0);
                for (pgd_resample_impl impl = PGD_RESAMPLE_SSE2; impl <= PGD_RESAMPLE_AVX2; impl++) {
                    if (!pgd_resample_impl_available(impl))
                        continue;
                    memset(got, 0xa5, n);
                    CU_ASSERT_EQUAL(run_into(&m, impl, src, sstride, got, dstride, 1000), 0);
                    int same = memcmp(ref, got, n) == 0;
                    memset(got, 0xa5, n);
                    CU_ASSERT_EQUAL(run_into(&m, impl, src, sstride, got, dstride, 0), 0);
                    same &= memcmp(ref, got, n) == 0;
                    memset(got, 0xa5, n);
                    CU_ASSERT_EQUAL(run_strips(&m, impl, src, sstride, got, dstride, 40, 300), 0);
                    same &= memcmp(ref, got, n) == 0;
                    if (!same)
                        fprintf(stderr, "\n  flat map %zu (%ux%u -> %ux%u), %s source, %s rows: %s differs", k,
                                m.src_w, m.src_h, m.dst_w, m.dst_h, f ? "one-colour" : "patchwork",
                                d ? "aligned" : "odd", pgd_resample_impl_name(impl));
                    CU_ASSERT(same);
                    compared++;
                }
            }
            free(src), free(ref), free(got);
        }
    printf("\n  %d comparisons on flat sources", compared);
}

/* Fixed point against the exact mean: at most one level off anywhere, and identical for box averages
 * (power-of-two ratios lose nothing to the floors). */
static void test_close_to_exact(void)
{
    int worst = 0;
    for (size_t k = 0; k < NMAPS; k++) {
        pgd_resample_map m = map_at(k);
        size_t sstride = (size_t)m.src_w * 3, n = (size_t)m.dst_w * m.dst_h * 3;
        uint8_t *src = random_bytes(sstride * m.src_h, (unsigned)k + 100), *a = malloc(n), *b = malloc(n);
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_resample_area_impl(&m, PGD_RESAMPLE_SCALAR, src, sstride, a, (size_t)m.dst_w * 3, &err), 0);
        exact_area(&m, src, sstride, b);
        int max = 0;
        for (size_t i = 0; i < n; i++)
            max = abs(a[i] - b[i]) > max ? abs(a[i] - b[i]) : max;
        worst = max > worst ? max : worst;
        CU_ASSERT(max <= 1);
        if (m.rx == 4 && m.ry == 8)
            CU_ASSERT_EQUAL(max, 0);
        free(src), free(a), free(b);
    }
    printf("\n  largest difference from the exact area mean: %d", worst);
}

static void test_unavailable_and_bad(void)
{
    pgd_err err = PGD_ERR_INIT;
    uint8_t px[12];
    pgd_resample_map ok = {2, 2, 0, 0, 1, 1, 2, 2};
    CU_ASSERT(pgd_resample_impl_available(PGD_RESAMPLE_SCALAR));
    CU_ASSERT(pgd_resample_impl_available(PGD_RESAMPLE_AUTO));
    CU_ASSERT_FALSE(pgd_resample_impl_available((pgd_resample_impl)99));
    CU_ASSERT_PTR_NULL(pgd_resample_new_impl(&ok, (pgd_resample_impl)99, px, 6, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "resample: the unknown code is not available here"));
    pgd_err err2 = PGD_ERR_INIT;
    pgd_resample_map bad = {2, 2, 0, 0, INFINITY, 1, 2, 2};
    CU_ASSERT_PTR_NULL(pgd_resample_new_impl(&bad, PGD_RESAMPLE_SCALAR, px, 6, &err2));
    CU_ASSERT_PTR_NOT_NULL(strstr(err2.msg, "resample: bad mapping"));
}

static const pgd_test_case cases[] = {
    {"impls_identical", test_impls_identical},
    {"impls_identical_random", test_impls_identical_random},
    {"blocks_identical", test_blocks_identical},
    {"strips_identical", test_strips_identical},
    {"flat_identical", test_flat_identical},
    {"close_to_exact", test_close_to_exact},
    {"unavailable_and_bad", test_unavailable_and_bad},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("resample", cases, argc, argv);
}
