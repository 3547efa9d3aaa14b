/* test_slide.c: slide opening and reading: backend choice, info, level choice, fast path vs OpenSlide pixels,
 * ARGB compositing, plain JPEG/PNG inputs, and a table of broken inputs with the errors they must give. */
#include <errno.h>
#include <math.h>
#include <openslide/openslide.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "common/png.h"
#include "cunit_util.h"
#include "loader/resample.h"
#include "loader/slide.h"
#include "loader/synth.h"

/* Fast path vs OpenSlide, measured on pgd-synth slides (docs/loader.md): identical at full scale (both run
 * libjpeg-turbo's ISLOW IDCT with fancy upsampling). At DCT scales the fast path's reduced IDCT is compared
 * with OpenSlide's full decode box-averaged den x den: bounds on the mean and the largest difference. */
#define FULL_MAX_BOUND 0
#define DCT_MEAN_BOUND 0.2
#define DCT_MAX_BOUND 20
#define RSS_GROWTH_KB (32 * 1024) /* 1000 failed opens or reads may not grow RSS by more than this */

/* ---- helpers ------------------------------------------------------------------------------------ */

/* Write a panda slide with these writer options to tmp/name; returns its path (NULL on failure). */
static const char *make_slide(const char *name, uint32_t w, uint32_t h, uint64_t seed, pgd_synth_tiff_opts o)
{
    pgd_synth_params p = {.task = PGD_SYNTH_PANDA, .width = w, .height = h, .seed = seed};
    pgd_err err = PGD_ERR_INIT;
    const char *path = pgd_test_path(name);
    struct stat st;
    if (stat(path, &st) == 0)
        return path;
    pgd_synth_slide *s = NULL;
    if (pgd_synth_params_check(&p, &err) != 0 || pgd_synth_tiff_opts_check(&o, &err) != 0 ||
        !(s = pgd_synth_slide_new(&p, 0, -1, &err)) ||
        pgd_synth_write_slide(s, path, &o, NULL, NULL, 0, NULL, NULL, &err) != 0) {
        fprintf(stderr, "make_slide %s: %s\n", name, err.msg);
        pgd_synth_slide_free(&s);
        CU_FAIL("synthetic slide not written");
        return NULL;
    }
    pgd_synth_slide_free(&s);
    return path;
}

static const char *std_slide(void)
{
    return make_slide("std.tiff", 1000, 760, 1, (pgd_synth_tiff_opts){.mpp = 0.25});
}

static pgd_slide *open_ok(const char *path, pgd_slide_backend b)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_slide *s = pgd_slide_open(path, b, &err);
    if (!s)
        fprintf(stderr, "open %s: %s\n", path, err.msg);
    CU_ASSERT_PTR_NOT_NULL(s);
    return s;
}

/* Read a whole scaled level into a new buffer. */
static uint8_t *read_level(pgd_slide *s, int level, int den, int64_t *w, int64_t *h)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_slide_scaled_size(s, level, den, w, h);
    uint8_t *buf = malloc((size_t)(*w * *h * 3));
    if (pgd_slide_read(s, level, den, 0, 0, (uint32_t)*w, (uint32_t)*h, NULL, buf, (size_t)*w * 3, &err) != 0) {
        fprintf(stderr, "read level %d at 1/%d: %s\n", level, den, err.msg);
        CU_FAIL("read failed");
        free(buf);
        return NULL;
    }
    return buf;
}

static void diff_stats(const uint8_t *a, const uint8_t *b, size_t n, int *max, double *mean)
{
    double sum = 0;
    *max = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        if (d > *max)
            *max = d;
    }
    *mean = n ? sum / (double)n : 0;
}

static int contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", hay, needle);
        return 0;
    }
    return 1;
}

static long rss_kb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- backends and info -------------------------------------------------------------------------- */

static void test_synthetic_is_fast(void)
{
    const char *path = std_slide();
    pgd_slide *s = open_ok(path, PGD_SLIDE_AUTO);
    if (!s)
        return;
    const pgd_slide_info *in = pgd_slide_get_info(s);
    CU_ASSERT_EQUAL(in->backend, PGD_SLIDE_FAST);
    CU_ASSERT(contains(in->why, "JPEG YCbCr 4:2:0"));
    CU_ASSERT_STRING_EQUAL(in->vendor, "generic-tiff");
    int n = pgd_synth_level_count(1000, 760, 256, 0, NULL);
    CU_ASSERT_EQUAL(in->nlevels, n);
    for (int l = 0; l < in->nlevels && l < n; l++) {
        uint32_t w, h;
        pgd_synth_level_size(1000, 760, l, &w, &h);
        CU_ASSERT_EQUAL(in->level[l].w, w);
        CU_ASSERT_EQUAL(in->level[l].h, h);
        CU_ASSERT_EQUAL(in->level[l].tile_w, 256);
        CU_ASSERT_EQUAL(in->level[l].max_den, 8);
    }
    /* pgd-synth writes XResolution in pixels per centimetre: 1e4 / 0.25 */
    CU_ASSERT(fabs(in->mpp_x - 0.25) < 1e-6 && fabs(in->mpp_y - 0.25) < 1e-6);
    CU_ASSERT(contains(in->mpp_source, "tiff.XResolution (centimeter)"));
    CU_ASSERT(fabs(pgd_slide_level_mpp(in, 1) - 0.5) < 1e-6);
    CU_ASSERT_EQUAL(in->has_bounds, 0);
    CU_ASSERT_EQUAL(in->bounds_w, 1000);
    CU_ASSERT_EQUAL(in->bounds_h, 760);
    CU_ASSERT(in->background[0] == 255 && in->background[1] == 255 && in->background[2] == 255);
    pgd_slide_close(&s);
    CU_ASSERT_PTR_NULL(s);
    /* the same file through OpenSlide when asked */
    s = open_ok(path, PGD_SLIDE_OPENSLIDE);
    if (s)
        CU_ASSERT_EQUAL(pgd_slide_get_info(s)->backend, PGD_SLIDE_OPENSLIDE);
    pgd_slide_close(&s);
}

static void test_fixture_backends(void)
{
    const char *small = pgd_test_fixture("small.svs"), *boxes = pgd_test_fixture("boxes.tiff");
    if (!small) {
        pgd_test_skip("no ../shared/testdata");
        return;
    }
    /* small.svs: Aperio, JPEG tiles with JPEGTables, photometric RGB: the fast path */
    pgd_slide *s = open_ok(small, PGD_SLIDE_AUTO);
    if (s) {
        const pgd_slide_info *in = pgd_slide_get_info(s);
        CU_ASSERT_EQUAL(in->backend, PGD_SLIDE_FAST);
        CU_ASSERT_STRING_EQUAL(in->vendor, "aperio");
        CU_ASSERT_STRING_EQUAL(in->codec, "JPEG RGB");
        CU_ASSERT(fabs(in->mpp_x - 0.499) < 1e-9);
        CU_ASSERT(contains(in->mpp_source, "openslide.mpp"));
        CU_ASSERT_EQUAL(in->level[0].w, 16);
    }
    pgd_slide_close(&s);
    /* boxes.tiff: deflate tiles: OpenSlide, and the reason says so */
    s = open_ok(boxes, PGD_SLIDE_AUTO);
    if (s) {
        const pgd_slide_info *in = pgd_slide_get_info(s);
        CU_ASSERT_EQUAL(in->backend, PGD_SLIDE_OPENSLIDE);
        CU_ASSERT(contains(in->why, "deflate compression (8)"));
        CU_ASSERT_EQUAL(in->nlevels, 4);
        /* 28.346 pixels per centimetre */
        CU_ASSERT(fabs(in->mpp_x - 1e4 / 28.346456527709961) < 1e-6);
    }
    pgd_slide_close(&s);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_slide_open(boxes, PGD_SLIDE_FAST, &err));
    CU_ASSERT(contains(err.msg, "the fast path cannot read it: level 0 is deflate compression"));
    CU_ASSERT(contains(err.msg, "boxes.tiff"));
}

static void test_level_choice_by_dimensions(void)
{
    const char *boxes = pgd_test_fixture("boxes.tiff");
    if (!boxes) {
        pgd_test_skip("no ../shared/testdata");
        return;
    }
    pgd_slide *s = open_ok(boxes, PGD_SLIDE_AUTO);
    if (!s)
        return;
    const pgd_slide_info *in = pgd_slide_get_info(s);
    /* 300x250, 150x125, 75x62, 37x31 with stored downsamples 1, 2, 4.016, 8.086 */
    CU_ASSERT(fabs(in->level[2].downsample - 4.016129) < 1e-5);
    static const struct { int64_t side; int level; } sides[] = {
        {1000, 0}, {300, 0}, {299, 0}, {151, 0}, {150, 1}, {149, 1}, {76, 1}, {75, 2}, {38, 2}, {37, 3}, {10, 3}, {1, 3},
    };
    for (size_t i = 0; i < sizeof sides / sizeof *sides; i++)
        CU_ASSERT_EQUAL(pgd_slide_level_for_side(in, sides[i].side), sides[i].level);
    double m0 = in->mpp_x;
    pgd_err err = PGD_ERR_INIT;
    /* level 2 is exactly 4x coarser by its width; OpenSlide's stored 4.016 makes its own pick level 1 */
    CU_ASSERT_EQUAL(pgd_slide_level_for_mpp(in, 4 * m0, &err), 2);
    openslide_t *osr = openslide_open(boxes);
    CU_ASSERT_EQUAL(openslide_get_best_level_for_downsample(osr, 4.0), 1);
    openslide_close(osr);
    CU_ASSERT_EQUAL(pgd_slide_level_for_mpp(in, 8 * m0, &err), 2);          /* level 3 is 300/37 = 8.1x */
    CU_ASSERT_EQUAL(pgd_slide_level_for_mpp(in, 300.0 / 37 * m0, &err), 3);
    CU_ASSERT_EQUAL(pgd_slide_level_for_mpp(in, 100 * m0, &err), 3);
    CU_ASSERT_EQUAL(pgd_slide_level_for_mpp(in, 0.5 * m0, &err), 0);        /* finer than level 0: level 0 */
    CU_ASSERT_EQUAL(pgd_slide_level_for_mpp(in, 1.99 * m0, &err), 0);
    CU_ASSERT_FALSE(pgd_err_is_set(&err));
    pgd_slide_close(&s);
}

/* ---- pixels ------------------------------------------------------------------------------------- */

static void compare_full(const char *path, int levels)
{
    pgd_slide *a = open_ok(path, PGD_SLIDE_FAST), *b = open_ok(path, PGD_SLIDE_OPENSLIDE);
    for (int l = 0; a && b && l < levels; l++) {
        int64_t w, h, w2, h2;
        uint8_t *x = read_level(a, l, 1, &w, &h), *y = read_level(b, l, 1, &w2, &h2);
        if (x && y) {
            int max;
            double mean;
            diff_stats(x, y, (size_t)(w * h * 3), &max, &mean);
            printf("\n  %s level %d (%lldx%lld): fast vs OpenSlide max %d mean %.4f", path, l, (long long)w,
                   (long long)h, max, mean);
            CU_ASSERT(max <= FULL_MAX_BOUND);
        }
        free(x), free(y);
    }
    pgd_slide_close(&a);
    pgd_slide_close(&b);
}

static void test_fast_matches_openslide(void)
{
    compare_full(std_slide(), 2);
    compare_full(make_slide("s444.tiff", 776, 520, 2, (pgd_synth_tiff_opts){.subsampling = 444, .tile = 240}), 2);
    const char *small = pgd_test_fixture("small.svs");
    if (small)
        compare_full(small, 1); /* RGB-coded JPEG with JPEGTables */
}

/* Random rectangles, some hanging over the edges, through both backends, with and without a clip. */
static void test_regions_and_padding(void)
{
    pgd_slide *a = open_ok(std_slide(), PGD_SLIDE_FAST), *b = open_ok(std_slide(), PGD_SLIDE_OPENSLIDE);
    if (!a || !b)
        goto done;
    uint8_t *x = malloc(300 * 300 * 3), *y = malloc(300 * 300 * 3);
    pgd_err err = PGD_ERR_INIT;
    unsigned seed = 7;
    for (int i = 0; i < 40; i++) {
        int level = i % 2;
        int64_t x0 = (int64_t)(rand_r(&seed) % 1100) - 100, y0 = (int64_t)(rand_r(&seed) % 900) - 100;
        uint32_t w = 1 + (uint32_t)rand_r(&seed) % 300, h = 1 + (uint32_t)rand_r(&seed) % 300;
        pgd_slide_rect clip = {50, 40, 300, 200}, *cp = i % 3 == 0 ? &clip : NULL;
        CU_ASSERT_EQUAL(pgd_slide_read(a, level, 1, x0, y0, w, h, cp, x, (size_t)w * 3, &err), 0);
        CU_ASSERT_EQUAL(pgd_slide_read(b, level, 1, x0, y0, w, h, cp, y, (size_t)w * 3, &err), 0);
        CU_ASSERT(memcmp(x, y, (size_t)w * h * 3) == 0);
        /* outside the level (or the clip) is white */
        int64_t lw = level ? 500 : 1000, lh = level ? 380 : 760;
        for (uint32_t r = 0; r < h; r++)
            for (uint32_t c = 0; c < w; c++) {
                int64_t px = x0 + c, py = y0 + r;
                int out = px < 0 || py < 0 || px >= lw || py >= lh ||
                          (cp && (px < clip.x || py < clip.y || px >= clip.x + clip.w || py >= clip.y + clip.h));
                const uint8_t *q = x + ((size_t)r * w + c) * 3;
                if (out && (q[0] != 255 || q[1] != 255 || q[2] != 255)) {
                    CU_FAIL("a pixel outside the level or clip is not white");
                    r = h;
                    break;
                }
            }
    }
    CU_ASSERT_FALSE(pgd_err_is_set(&err));
    free(x), free(y);
done:
    pgd_slide_close(&a);
    pgd_slide_close(&b);
}

static void test_dct_scales(void)
{
    pgd_slide *a = open_ok(std_slide(), PGD_SLIDE_FAST), *b = open_ok(std_slide(), PGD_SLIDE_OPENSLIDE);
    int64_t w, h;
    uint8_t *full = b ? read_level(b, 0, 1, &w, &h) : NULL;
    pgd_err err = PGD_ERR_INIT;
    for (int den = 2; a && full && den <= 8; den *= 2) {
        int64_t sw, sh;
        uint8_t *x = read_level(a, 0, den, &sw, &sh);
        CU_ASSERT_EQUAL(sw, (1000 + den - 1) / den);
        CU_ASSERT_EQUAL(sh, (760 + den - 1) / den);
        uint8_t *ref = malloc((size_t)(sw * sh * 3));
        pgd_resample_map m = {1000, 760, 0, 0, den, den, (uint32_t)sw, (uint32_t)sh};
        CU_ASSERT_EQUAL(pgd_resample_area(&m, full, 1000 * 3, ref, (size_t)sw * 3, &err), 0);
        if (x) {
            int max;
            double mean;
            diff_stats(x, ref, (size_t)(sw * sh * 3), &max, &mean);
            printf("\n  DCT 1/%d vs OpenSlide box-averaged: max %d mean %.4f", den, max, mean);
            CU_ASSERT(max <= DCT_MAX_BOUND);
            CU_ASSERT(mean <= DCT_MEAN_BOUND);
        }
        free(x), free(ref);
    }
    /* a scale the level does not allow */
    if (b) {
        uint8_t px[3];
        CU_ASSERT_EQUAL(pgd_slide_read(b, 0, 2, 0, 0, 1, 1, NULL, px, 3, &err), -1);
        CU_ASSERT(contains(err.msg, "cannot be read at scale 1/2"));
    }
    free(full);
    pgd_slide_close(&a);
    pgd_slide_close(&b);
}

static void test_composite(void)
{
    /* premultiplied: colour channels already carry alpha */
    const uint32_t argb[] = {0x00000000u, 0xff102030u, 0x80400080u, 0x40404040u, 0x80808080u};
    const uint8_t white[3] = {255, 255, 255}, bg[3] = {0, 100, 200};
    uint8_t out[15];
    pgd_slide_composite(argb, 5, white, out);
    const uint8_t want_white[15] = {255, 255, 255, 0x10, 0x20, 0x30, 64 + 127, 127, 128 + 127, 255, 255, 255,
                                    255, 255, 255};
    /* 0x40 + 191 = 255; 0x80 + 127 = 255 */
    CU_ASSERT(memcmp(out, want_white, 15) == 0);
    pgd_slide_composite(argb, 5, bg, out);
    const uint8_t want_bg[15] = {0, 100, 200, 0x10, 0x20, 0x30, 64, 50, 128 + 100, 64, 64 + 75, 64 + 150,
                                 128, 128 + 50, 128 + 100};
    CU_ASSERT(memcmp(out, want_bg, 15) == 0);
}

static uint8_t *slurp(const char *path, size_t *n);

/* ---- plain images ------------------------------------------------------------------------------- */

static uint8_t *test_image(uint32_t w, uint32_t h)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / w), p[1] = (uint8_t)(y * 255 / h), p[2] = (uint8_t)((x / 16 + y / 16) % 2 * 200);
        }
    return px;
}

/* Encode the test image as a JPEG file (quality 90, 4:2:0); returns the bytes (tjFree them) and *len. */
static unsigned char *write_jpeg(const char *path, uint32_t w, uint32_t h)
{
    uint8_t *px = test_image(w, h);
    tjhandle tc = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long len = 0;
    CU_ASSERT_EQUAL(tjCompress2(tc, px, (int)w, 0, (int)h, TJPF_RGB, &jpg, &len, TJSAMP_420, 90, 0), 0);
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f) {
        CU_ASSERT_EQUAL(fwrite(jpg, 1, len, f), len);
        fclose(f);
    }
    tjDestroy(tc);
    free(px);
    return jpg;
}

static void test_plain_png(void)
{
    pgd_err err = PGD_ERR_INIT;
    uint8_t *px = test_image(123, 77), got[50 * 40 * 3];
    const char *path = pgd_test_path("plain.png");
    CU_ASSERT_EQUAL(pgd_png_write(path, px, 123, 77, 3, &err), 0);
    pgd_slide *s = open_ok(path, PGD_SLIDE_AUTO);
    if (s) {
        const pgd_slide_info *in = pgd_slide_get_info(s);
        CU_ASSERT_EQUAL(in->backend, PGD_SLIDE_IMAGE);
        CU_ASSERT_STRING_EQUAL(in->vendor, "png");
        CU_ASSERT_EQUAL(in->nlevels, 1);
        CU_ASSERT(in->level[0].w == 123 && in->level[0].h == 77 && in->level[0].max_den == 1);
        CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 100, 50, 50, 40, NULL, got, 150, &err), 0);
        int ok = 1;
        for (int y = 0; y < 40; y++)
            for (int x = 0; x < 50; x++) {
                const uint8_t *g = got + (y * 50 + x) * 3;
                if (100 + x >= 123 || 50 + y >= 77)
                    ok &= g[0] == 255 && g[1] == 255 && g[2] == 255;
                else
                    ok &= memcmp(g, px + ((size_t)(50 + y) * 123 + 100 + x) * 3, 3) == 0;
            }
        CU_ASSERT(ok);
    }
    pgd_slide_close(&s);
    /* gray PNG: expanded to RGB */
    uint8_t gray[4 * 3] = {0, 50, 100, 150, 200, 250, 1, 2, 3, 4, 5, 6};
    path = pgd_test_path("gray.png");
    CU_ASSERT_EQUAL(pgd_png_write(path, gray, 4, 3, 1, &err), 0);
    if ((s = open_ok(path, PGD_SLIDE_IMAGE))) {
        CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 0, 1, 4, 1, NULL, got, 12, &err), 0);
        CU_ASSERT(got[0] == 200 && got[1] == 200 && got[2] == 200 && got[6] == 1 && got[9] == 2 && got[11] == 2);
    }
    pgd_slide_close(&s);
    CU_ASSERT_PTR_NULL(pgd_slide_open(path, PGD_SLIDE_FAST, &err));
    CU_ASSERT(contains(err.msg, "only the image backend reads it"));
    free(px);
}

static void test_plain_jpeg(void)
{
    uint32_t w = 300, h = 200;
    const char *path = pgd_test_path("plain.jpg");
    unsigned char *jpg = write_jpeg(path, w, h);
    size_t len;
    free(slurp(path, &len));
    tjhandle td = tjInitDecompress();
    pgd_slide *s = open_ok(path, PGD_SLIDE_AUTO);
    for (int den = 1; s && den <= 8; den *= 2) {
        const pgd_slide_info *in = pgd_slide_get_info(s);
        CU_ASSERT(in->backend == PGD_SLIDE_IMAGE && in->level[0].max_den == 8);
        CU_ASSERT_STRING_EQUAL(in->codec, "JPEG YCbCr 4:2:0");
        int64_t sw, sh;
        uint8_t *got = read_level(s, 0, den, &sw, &sh), *want = malloc((size_t)(sw * sh * 3));
        CU_ASSERT(sw == (w + den - 1) / den && sh == (h + den - 1) / den);
        CU_ASSERT_EQUAL(tjDecompress2(td, jpg, (unsigned long)len, want, (int)sw, 0, (int)sh, TJPF_RGB, 0), 0);
        CU_ASSERT(got && memcmp(got, want, (size_t)(sw * sh * 3)) == 0);
        free(got), free(want);
    }
    pgd_slide_close(&s);
    tjFree(jpg);
    tjDestroy(td);
}

/* ---- broken inputs ------------------------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    uint8_t *d = malloc(*n ? *n : 1);
    if (fread(d, 1, *n, f) != *n)
        *n = 0;
    fclose(f);
    return d;
}

/* Write a copy of src cut to `keep` bytes with `len` bytes at `at` set to `val`. */
static const char *corrupt_copy(const char *src, const char *name, size_t keep, size_t at, size_t len, int val)
{
    size_t n;
    uint8_t *d = slurp(src, &n);
    const char *path = pgd_test_path(name);
    if (!d)
        return path;
    if (at + len <= n)
        memset(d + at, val, len);
    FILE *f = fopen(path, "wb");
    if (f) {
        CU_ASSERT_EQUAL(fwrite(d, 1, keep < n ? keep : n, f), keep < n ? keep : n);
        fclose(f);
    }
    free(d);
    return path;
}

/* Byte offset and length of tile 0 of level 0. */
static void tile0(const char *path, uint64_t *off, uint64_t *len)
{
    TIFF *t = TIFFOpen(path, "r");
    *off = t ? TIFFGetStrileOffset(t, 0) : 0;
    *len = t ? TIFFGetStrileByteCount(t, 0) : 0;
    if (t)
        TIFFClose(t);
}

typedef struct bad_case {
    const char *name;
    const char *path;
    int fails_at_read;       /* 0: open fails; 1: open works, reading tile 0 fails */
    pgd_slide_backend backend;
    const char *want;        /* substring of the error */
} bad_case;

static void check_bad(const bad_case *c)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_slide *s = pgd_slide_open(c->path, c->backend, &err);
    if (!c->fails_at_read) {
        CU_ASSERT_PTR_NULL(s);
    } else {
        CU_ASSERT_PTR_NOT_NULL(s);
        uint8_t px[16 * 16 * 3];
        if (s)
            CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 0, 0, 16, 16, NULL, px, 48, &err), -1);
    }
    if (!strstr(err.msg, c->want) || !strstr(err.msg, c->path))
        fprintf(stderr, "case %s: '%s' lacks '%s' or the path\n", c->name, err.msg, c->want);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, c->want));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, c->path));
    pgd_slide_close(&s);
}

static void test_bad_inputs(void)
{
    const char *good = std_slide();
    size_t n;
    uint8_t *d = slurp(good, &n);
    free(d);
    uint64_t off, len;
    tile0(good, &off, &len);
    const char *text = pgd_test_path("notes.txt"), *empty = pgd_test_path("empty.tiff");
    FILE *f = fopen(text, "w");
    fputs("not a slide at all\n", f);
    fclose(f);
    fclose(fopen(empty, "w"));
    uint8_t *px = test_image(64, 64);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_png_write(pgd_test_path("ok.png"), px, 64, 64, 3, &err), 0);
    free(px);
    const char *png_cut = corrupt_copy(pgd_test_path("ok.png"), "cut.png", 60, 0, 0, 0);
    tjFree(write_jpeg(pgd_test_path("ok.jpg"), 200, 120));
    size_t jn;
    free(slurp(pgd_test_path("ok.jpg"), &jn));
    const char *jpg_cut = corrupt_copy(pgd_test_path("ok.jpg"), "cut.jpg", jn / 2, 0, 0, 0);
    bad_case cases[] = {
        {"missing", pgd_test_path("nothing-here.svs"), 0, PGD_SLIDE_AUTO, "No such file or directory"},
        {"empty", empty, 0, PGD_SLIDE_AUTO, "empty file"},
        {"folder", pgd_test_tmpdir(), 0, PGD_SLIDE_AUTO, "is a folder"},
        {"text", text, 0, PGD_SLIDE_AUTO, "not a slide: OpenSlide 3.4.1 does not recognise its format"},
        {"zeroed header", corrupt_copy(good, "zero-head.tiff", n, 0, 16, 0), 0, PGD_SLIDE_AUTO,
         "does not recognise its format"},
        {"truncated in tile data", corrupt_copy(good, "cut.tiff", off + len / 2, 0, 0, 0), 0, PGD_SLIDE_AUTO,
         "a TIFF file OpenSlide 3.4.1 cannot open: libtiff: Can not read TIFF directory count"},
        {"truncated PNG", png_cut, 1, PGD_SLIDE_AUTO, "png "},
        {"truncated JPEG", jpg_cut, 1, PGD_SLIDE_AUTO, "jpeg: Premature end of JPEG file"},
        {"tile start zeroed, fast", corrupt_copy(good, "t0.tiff", n, off, 16, 0), 1, PGD_SLIDE_FAST,
         "level 0 tile (0, 0): jpeg: Not a JPEG file: starts with 0x00 0x00"},
        {"tile start zeroed, openslide", pgd_test_path("t0.tiff"), 1, PGD_SLIDE_OPENSLIDE,
         "openslide: level 0 region (0, 0) 16x16: Not a JPEG file: starts with 0x00 0x00"},
        {"tile bytes overwritten, fast", corrupt_copy(good, "t1.tiff", n, off + len / 2, 64, 0xff), 1,
         PGD_SLIDE_FAST, "jpeg: Corrupt JPEG data: premature end of data segment"},
        {"tile bytes overwritten, openslide", pgd_test_path("t1.tiff"), 1, PGD_SLIDE_OPENSLIDE,
         "Corrupt JPEG data: premature end of data segment"},
        {"tile end cut, fast", corrupt_copy(good, "t2.tiff", n, off + len - 2, 2, 0), 1, PGD_SLIDE_FAST,
         "Premature end of JPEG file"},
        {"unopenable.tiff", pgd_test_fixture("unopenable.tiff"), 0, PGD_SLIDE_AUTO,
         "openslide: Unsupported TIFF compression: 52479"},
        {"unreadable.svs, fast", pgd_test_fixture("unreadable.svs"), 1, PGD_SLIDE_AUTO, "jpeg: Bogus marker length"},
        {"unreadable.svs, openslide", pgd_test_fixture("unreadable.svs"), 1, PGD_SLIDE_OPENSLIDE,
         "openslide: level 0 region (0, 0) 16x16: Bogus marker length"},
        {"plain jpeg as fast", pgd_test_path("ok.jpg"), 0, PGD_SLIDE_FAST, "only the image backend reads it"},
        {"slide as image", good, 0, PGD_SLIDE_IMAGE, "not a plain JPEG or PNG file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (!cases[i].path)
            continue; /* a fixture that is absent */
        check_bad(&cases[i]);
    }
}

/* After a failed region the same slide still reads the others (OpenSlide's handle is reopened). */
static void test_recovers_after_error(void)
{
    const char *path = pgd_test_path("t1.tiff");
    if (access(path, F_OK) != 0)
        test_bad_inputs();
    pgd_slide_backend backends[] = {PGD_SLIDE_FAST, PGD_SLIDE_OPENSLIDE};
    pgd_slide *ref = open_ok(std_slide(), PGD_SLIDE_OPENSLIDE);
    uint8_t a[64 * 64 * 3], b[64 * 64 * 3];
    pgd_err e0 = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_slide_read(ref, 0, 1, 300, 300, 64, 64, NULL, b, 192, &e0), 0);
    for (int k = 0; k < 2; k++) {
        pgd_slide *s = open_ok(path, backends[k]);
        for (int round = 0; s && round < 3; round++) {
            pgd_err err = PGD_ERR_INIT;
            CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 10, 10, 64, 64, NULL, a, 192, &err), -1);
            pgd_err_clear(&err);
            CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 300, 300, 64, 64, NULL, a, 192, &err), 0);
            CU_ASSERT(memcmp(a, b, sizeof a) == 0);
        }
        pgd_slide_close(&s);
    }
    pgd_slide_close(&ref);
}

/* RSS after 1000 failed opens and 1000 failed reads stays within a generous bound. */
static void test_no_growth_on_failures(void)
{
    char bad_tile[512], cut[512], none[512];
    snprintf(bad_tile, sizeof bad_tile, "%s", pgd_test_path("t1.tiff"));
    snprintf(cut, sizeof cut, "%s", pgd_test_path("cut.tiff"));
    snprintf(none, sizeof none, "%s", pgd_test_path("nothing.svs"));
    if (access(bad_tile, F_OK) != 0)
        test_bad_inputs();
    const char *unopenable = pgd_test_fixture("unopenable.tiff");
    uint8_t px[32 * 32 * 3];
    long before = 0;
    for (int i = 0; i < 1050; i++) {
        if (i == 50)
            before = rss_kb();
        pgd_err err = PGD_ERR_INIT;
        const char *paths[] = {cut, none, unopenable ? unopenable : cut};
        CU_ASSERT_PTR_NULL(pgd_slide_open(paths[i % 3], PGD_SLIDE_AUTO, &err));
        pgd_slide *s = pgd_slide_open(bad_tile, i % 2 ? PGD_SLIDE_FAST : PGD_SLIDE_OPENSLIDE, &err);
        CU_ASSERT_PTR_NOT_NULL(s);
        if (s)
            CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 0, 0, 32, 32, NULL, px, 96, &err), -1);
        pgd_slide_close(&s);
    }
    long after = rss_kb();
    printf("\n  RSS over 1000 failed opens and reads: %ld kB -> %ld kB", before, after);
#ifdef __SANITIZE_ADDRESS__
    /* AddressSanitizer keeps freed memory in quarantine, so RSS grows by design; LeakSanitizer checks at exit */
    (void)before, (void)after;
#else
    CU_ASSERT(after - before < RSS_GROWTH_KB);
#endif
}

static const pgd_test_case cases[] = {
    {"synthetic_is_fast", test_synthetic_is_fast},
    {"fixture_backends", test_fixture_backends},
    {"level_choice_by_dimensions", test_level_choice_by_dimensions},
    {"fast_matches_openslide", test_fast_matches_openslide},
    {"regions_and_padding", test_regions_and_padding},
    {"dct_scales", test_dct_scales},
    {"composite", test_composite},
    {"plain_png", test_plain_png},
    {"plain_jpeg", test_plain_jpeg},
    {"bad_inputs", test_bad_inputs},
    {"recovers_after_error", test_recovers_after_error},
    {"no_growth_on_failures", test_no_growth_on_failures},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("slide", cases, argc, argv);
}
