/* test_synth.c: pgd-synth: determinism, labels, OpenSlide and libtiff reading the pyramid back, the small signal. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <openslide/openslide.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tiffio.h>
#include <unistd.h>

#include "common/manifest.h"
#include "cunit_util.h"
#include "loader/synth.h"

/* JPEG error bound between what OpenSlide (or libtiff) decodes and what the renderer drew, per channel, at
 * quality 85 (docs/synthetic-data.md gives the measured values): the mean absolute difference, the largest
 * one (sharp purple-on-pink nucleus edges), and the share of samples off by more than JPEG_TAIL_AT. */
#define JPEG_MEAN_BOUND 3.0
#define JPEG_MAX_BOUND 64
#define JPEG_TAIL_AT 16
#define JPEG_TAIL_BOUND 0.01

/* ---- helpers ------------------------------------------------------------------------------------ */

static pgd_synth_slide *make_slide(pgd_synth_task task, uint32_t w, uint32_t h, uint64_t seed, uint32_t index,
                                   int label)
{
    pgd_synth_params p = {.task = task, .width = w, .height = h, .seed = seed};
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_slide *s = pgd_synth_slide_new(&p, index, label, &err);
    if (!s)
        fprintf(stderr, "slide: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL(s);
    return s;
}

static int write_slide(const pgd_synth_slide *s, const char *path, const pgd_synth_tiff_opts *o)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_tiff_opts def = {0};
    int rc = pgd_synth_write_slide(s, path, o ? o : &def, NULL, NULL, 0, NULL, NULL, &err);
    if (rc < 0)
        fprintf(stderr, "write %s: %s\n", path, err.msg);
    return rc;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int same_bytes(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    uint8_t *x = read_file(a, &la), *y = read_file(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

typedef struct diff_stats {
    double mean[3];
    int max[3];
    double tail; /* share of samples (all channels) off by more than JPEG_TAIL_AT */
} diff_stats;

static void stats_add(diff_stats *d, double sum[3], size_t *tail, const int got[3], const uint8_t *want)
{
    for (int c = 0; c < 3; c++) {
        int e = abs(got[c] - want[c]);
        sum[c] += e;
        *tail += e > JPEG_TAIL_AT;
        if (e > d->max[c])
            d->max[c] = e;
    }
}

static void stats_finish(diff_stats *d, const double sum[3], size_t tail, size_t n)
{
    for (int c = 0; c < 3; c++)
        d->mean[c] = sum[c] / (double)n;
    d->tail = (double)tail / (3.0 * (double)n);
}

static void stats_check(const diff_stats *d, const char *what)
{
    printf("\n    %s: |decoded - render| mean %.3f %.3f %.3f, max %d %d %d, %.4f%% over %d ", what, d->mean[0],
           d->mean[1], d->mean[2], d->max[0], d->max[1], d->max[2], 100 * d->tail, JPEG_TAIL_AT);
    for (int c = 0; c < 3; c++) {
        CU_ASSERT(d->mean[c] < JPEG_MEAN_BOUND);
        CU_ASSERT(d->max[c] < JPEG_MAX_BOUND);
    }
    CU_ASSERT(d->tail < JPEG_TAIL_BOUND);
}

/* Read a whole level with OpenSlide and compare it with the renderer. */
static void check_level_pixels(openslide_t *o, const pgd_synth_slide *s, int level, uint32_t w, uint32_t h)
{
    uint32_t *argb = malloc((size_t)w * h * 4);
    uint8_t *rgb = malloc((size_t)w * h * 3);
    CU_ASSERT_FATAL(argb && rgb);
    openslide_read_region(o, argb, 0, 0, level, w, h);
    CU_ASSERT_PTR_NULL(openslide_get_error(o));
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_synth_render_level(s, level, 0, 0, w, h, rgb, &err), 0);
    diff_stats d = {0};
    double sum[3] = {0};
    size_t tail = 0, clear = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        uint32_t p = argb[i];
        clear += p >> 24 != 255; /* every pixel is inside the slide: opaque */
        int got[3] = {(int)(p >> 16) & 255, (int)(p >> 8) & 255, (int)p & 255};
        stats_add(&d, sum, &tail, got, rgb + 3 * i);
    }
    CU_ASSERT_EQUAL(clear, 0);
    stats_finish(&d, sum, tail, (size_t)w * h);
    char what[64];
    snprintf(what, sizeof what, "openslide level %d", level);
    stats_check(&d, what);
    free(argb);
    free(rgb);
}

/* ---- options, geometry, labels ------------------------------------------------------------------ */

static void test_bad_options(void)
{
    static const struct {
        const char *what;
        pgd_synth_task task;
        uint32_t w, h, count, tile;
        int quality, levels, subsampling, jobs;
        double mpp;
        const char *prefix, *out;
        const char *expect;
    } cases[] = {
        {"zero width", PGD_SYNTH_PANDA, 0, 100, 1, 0, 0, 0, 0, 0, 0, NULL, "d", "width: 0 is outside 1..1048576"},
        {"huge height", PGD_SYNTH_PANDA, 100, 2000000, 1, 0, 0, 0, 0, 0, 0, NULL, "d", "height: 2000000 is outside"},
        {"small tile", PGD_SYNTH_PANDA, 100, 100, 1, 128, 0, 0, 0, 0, 0, NULL, "d", "tile: 128 is outside 240..1024"},
        {"odd tile", PGD_SYNTH_PANDA, 100, 100, 1, 250, 0, 0, 0, 0, 0, NULL, "d", "tile: 250 is not a multiple of 16"},
        {"quality", PGD_SYNTH_PANDA, 100, 100, 1, 0, 101, 0, 0, 0, 0, NULL, "d", "quality: 101 is outside 1..100"},
        {"mpp", PGD_SYNTH_PANDA, 100, 100, 1, 0, 0, 0, 0, 0, -1, NULL, "d", "mpp: -1 is not a positive number"},
        {"levels", PGD_SYNTH_PANDA, 3000, 2000, 1, 0, 0, 14, 0, 0, 0, NULL, "d",
         "levels: 14 is more than the 13 levels a 3000x2000 slide can have"},
        {"subsampling", PGD_SYNTH_PANDA, 100, 100, 1, 0, 0, 0, 422, 0, 0, NULL, "d", "subsampling: 422 is not 420"},
        {"count", PGD_SYNTH_PANDA, 100, 100, 0, 0, 0, 0, 0, 0, 0, NULL, "d", "count: 0 is outside 1..1000000"},
        {"jobs", PGD_SYNTH_PANDA, 100, 100, 1, 0, 0, 0, 0, 65, 0, NULL, "d", "jobs: 65 is outside 1..64"},
        {"prefix", PGD_SYNTH_PANDA, 100, 100, 1, 0, 0, 0, 0, 0, 0, "a/b", "d", "prefix: 'a/b' must be"},
        {"dot prefix", PGD_SYNTH_PANDA, 100, 100, 1, 0, 0, 0, 0, 0, 0, ".x", "d", "prefix: '.x' must be"},
        {"no out", PGD_SYNTH_PANDA, 100, 100, 1, 0, 0, 0, 0, 0, 0, NULL, "", "out: no output folder given"},
        {"tiny canvas", PGD_SYNTH_ULTRAMNIST, 100, 500, 1, 0, 0, 0, 0, 0, 0, NULL, "d",
         "width: ultramnist needs a canvas of at least 128x128"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pgd_synth_batch b = {
            .params = {.task = cases[i].task, .width = cases[i].w, .height = cases[i].h},
            .tiff = {.tile = cases[i].tile, .quality = cases[i].quality, .levels = cases[i].levels,
                     .subsampling = cases[i].subsampling, .mpp = cases[i].mpp},
            .count = cases[i].count, .jobs = cases[i].jobs, .prefix = cases[i].prefix, .out_dir = cases[i].out,
        };
        pgd_err err = PGD_ERR_INIT;
        int rc = pgd_synth_batch_check(&b, &err);
        int ok = rc < 0 && err.code == PGD_EINVAL && strstr(err.msg, cases[i].expect) != NULL;
        if (!ok)
            printf("\n    case '%s': rc %d, message '%s', expected '%s' ", cases[i].what, rc, err.msg, cases[i].expect);
        CU_ASSERT(ok);
    }
    pgd_synth_batch good = {.params = {.task = PGD_SYNTH_PANDA, .width = 100, .height = 100}, .count = 1,
                            .out_dir = "d"};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_synth_batch_check(&good, &err), 0);
}

static void test_level_geometry(void)
{
    static const struct {
        uint32_t w, h, tile;
        int levels, expect;
    } cases[] = {
        {3000, 2000, 256, 0, 5}, {256, 256, 256, 0, 1}, {257, 10, 256, 0, 2}, {1, 1, 256, 0, 1},
        {100000, 100000, 256, 0, 10}, {3000, 2000, 512, 0, 4}, {3000, 2000, 256, 13, 13}, {3000, 2000, 256, 2, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pgd_err err = PGD_ERR_INIT;
        int n = pgd_synth_level_count(cases[i].w, cases[i].h, cases[i].tile, cases[i].levels, &err);
        if (n != cases[i].expect)
            printf("\n    %ux%u tile %u levels %d: got %d, expected %d ", cases[i].w, cases[i].h, cases[i].tile,
                   cases[i].levels, n, cases[i].expect);
        CU_ASSERT_EQUAL(n, cases[i].expect);
    }
    uint32_t w, h;
    pgd_synth_level_size(3000, 2001, 4, &w, &h);
    CU_ASSERT_EQUAL(w, 188);
    CU_ASSERT_EQUAL(h, 126);
}

static void test_labels_balanced(void)
{
    for (int t = 0; t < 2; t++) {
        pgd_synth_task task = t ? PGD_SYNTH_ULTRAMNIST : PGD_SYNTH_PANDA;
        int k = pgd_synth_classes(task);
        CU_ASSERT_EQUAL(k, t ? 10 : 6);
        int seen[10] = {0};
        for (uint32_t i = 0; i < (uint32_t)(3 * k); i++) {
            int l = pgd_synth_label(task, 77, i);
            CU_ASSERT(l >= 0 && l < k);
            if (l >= 0 && l < k)
                seen[l]++;
            CU_ASSERT_EQUAL(l, pgd_synth_label(task, 77, i)); /* deterministic */
        }
        for (int l = 0; l < k; l++)
            CU_ASSERT_EQUAL(seen[l], 3);
        /* The first block alone holds every class; another seed orders it differently. */
        int first[10] = {0}, differ = 0;
        for (uint32_t i = 0; i < (uint32_t)k; i++) {
            first[pgd_synth_label(task, 77, i)]++;
            differ += pgd_synth_label(task, 77, i) != pgd_synth_label(task, 78, i);
        }
        for (int l = 0; l < k; l++)
            CU_ASSERT_EQUAL(first[l], 1);
        CU_ASSERT(differ > 0);
    }
    /* Ultramnist digits add up to the label, 3 to 5 of them. */
    for (uint32_t i = 0; i < 20; i++) {
        pgd_synth_slide *s = make_slide(PGD_SYNTH_ULTRAMNIST, 1024, 1024, 5, i, -1);
        if (!s)
            continue;
        pgd_synth_info info;
        pgd_synth_slide_info(s, &info);
        int sum = 0;
        for (int d = 0; d < info.ndigits; d++)
            sum += info.digits[d];
        CU_ASSERT(info.ndigits >= 3 && info.ndigits <= 5);
        CU_ASSERT_EQUAL(sum, info.label);
        CU_ASSERT_EQUAL(info.label, pgd_synth_label(PGD_SYNTH_ULTRAMNIST, 5, i));
        pgd_synth_slide_free(&s);
    }
}

/* ---- rendering ---------------------------------------------------------------------------------- */

/* Any tiling gives the same pixels: the whole region at once equals the sum of odd-sized pieces. */
static void test_render_tiling_invariant(void)
{
    for (int t = 0; t < 2; t++) {
        uint32_t w = 700, h = 500;
        pgd_synth_slide *s = make_slide(t ? PGD_SYNTH_ULTRAMNIST : PGD_SYNTH_PANDA, 1400, 1000, 3, 1, -1);
        if (!s)
            return;
        uint8_t *whole = malloc((size_t)w * h * 3), *pieces = malloc((size_t)w * h * 3);
        CU_ASSERT_FATAL(whole && pieces);
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_synth_render(s, 350, 250, w, h, whole, (size_t)w * 3, &err), 0);
        const uint32_t xs[] = {0, 13, 301, 700}, ys[] = {0, 7, 250, 500};
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 3; i++)
                CU_ASSERT_EQUAL(pgd_synth_render(s, 350 + xs[i], 250 + ys[j], xs[i + 1] - xs[i], ys[j + 1] - ys[j],
                                                 pieces + ((size_t)ys[j] * w + xs[i]) * 3, (size_t)w * 3, &err),
                                0);
        CU_ASSERT_EQUAL(memcmp(whole, pieces, (size_t)w * h * 3), 0);
        /* Not trivially blank: the region has more than one colour. */
        int distinct = 0;
        for (size_t i = 3; i < (size_t)w * h * 3 && !distinct; i += 3)
            distinct = memcmp(whole, whole + i, 3) != 0;
        CU_ASSERT(distinct);
        CU_ASSERT(pgd_synth_render(s, 1300, 0, 101, 1, whole, 303, &err) < 0); /* outside the slide */
        free(whole);
        free(pieces);
        pgd_synth_slide_free(&s);
    }
}

static void test_downsample(void)
{
    /* 3 x 3 -> 2 x 2: full 2x2 mean, 2x1 and 1x2 edge means, 1x1 corner. */
    const uint8_t src[27] = {0, 0, 0, 10, 10, 10, 100, 100, 100, 20, 20, 20, 31, 31, 31, 200, 200, 200,
                             7, 7, 7,  9,  9,  9,  50,  50,  50};
    uint8_t dst[12];
    pgd_synth_downsample2(src, 3, 3, 9, dst, 6);
    CU_ASSERT_EQUAL(dst[0], (0 + 10 + 20 + 31 + 2) / 4);
    CU_ASSERT_EQUAL(dst[3], (100 + 200 + 1) / 2);
    CU_ASSERT_EQUAL(dst[6], (7 + 9 + 1) / 2);
    CU_ASSERT_EQUAL(dst[9], 50);
}

/* ---- files -------------------------------------------------------------------------------------- */

static void test_deterministic_files(void)
{
    pgd_synth_slide *a = make_slide(PGD_SYNTH_PANDA, 1200, 900, 11, 4, -1);
    pgd_synth_slide *b = make_slide(PGD_SYNTH_PANDA, 1200, 900, 11, 4, -1);
    pgd_synth_slide *c = make_slide(PGD_SYNTH_PANDA, 1200, 900, 12, 4, -1);
    if (!a || !b || !c)
        return;
    char *pa = pgd_test_path("det_a.tiff"), *pb = pgd_test_path("det_b.tiff"), *pc = pgd_test_path("det_c.tiff");
    CU_ASSERT_EQUAL(write_slide(a, pa, NULL), 0);
    CU_ASSERT_EQUAL(write_slide(b, pb, NULL), 0);
    CU_ASSERT_EQUAL(write_slide(c, pc, NULL), 0);
    CU_ASSERT(same_bytes(pa, pb));
    CU_ASSERT(!same_bytes(pa, pc));
    CU_ASSERT(!exists(pgd_test_path("det_a.tiff.tmp")));
    pgd_synth_slide_free(&a);
    pgd_synth_slide_free(&b);
    pgd_synth_slide_free(&c);
}

/* The slide opens with OpenSlide as generic-tiff, with the right levels and mpp, and the pixels it decodes
 * match the renderer within the JPEG bound at levels 0 and 1. */
static void check_openslide(pgd_synth_task task, const char *name)
{
    const uint32_t W = 3000, H = 2000;
    pgd_synth_slide *s = make_slide(task, W, H, 21, 2, -1);
    if (!s)
        return;
    char *path = pgd_test_path(name);
    pgd_synth_tiff_opts o = {.mpp = 0.25};
    CU_ASSERT_EQUAL_FATAL(write_slide(s, path, &o), 0);
    const char *vendor = openslide_detect_vendor(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(vendor);
    CU_ASSERT_STRING_EQUAL(vendor, "generic-tiff");
    openslide_t *os = openslide_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(os);
    CU_ASSERT_PTR_NULL_FATAL(openslide_get_error(os));
    int n = openslide_get_level_count(os);
    CU_ASSERT_EQUAL(n, 5); /* 3000 -> 1500 -> 750 -> 375 -> 188 <= 256 */
    for (int l = 0; l < n; l++) {
        int64_t lw, lh;
        uint32_t ew, eh;
        openslide_get_level_dimensions(os, l, &lw, &lh);
        pgd_synth_level_size(W, H, l, &ew, &eh);
        CU_ASSERT_EQUAL(lw, ew);
        CU_ASSERT_EQUAL(lh, eh);
    }
    const char *xres = openslide_get_property_value(os, "tiff.XResolution");
    const char *unit = openslide_get_property_value(os, "tiff.ResolutionUnit");
    CU_ASSERT_PTR_NOT_NULL_FATAL(xres);
    CU_ASSERT_PTR_NOT_NULL_FATAL(unit);
    CU_ASSERT_STRING_EQUAL(unit, "centimeter");
    double mpp = 1e4 / strtod(xres, NULL);
    CU_ASSERT(fabs(mpp - 0.25) < 1e-9);
    const char *desc = openslide_get_property_value(os, "tiff.ImageDescription");
    CU_ASSERT_PTR_NOT_NULL_FATAL(desc);
    char want[128];
    snprintf(want, sizeof want, "pgd-synth task=%s seed=21 index=2 label=%d", pgd_synth_task_name(task),
             pgd_synth_label(task, 21, 2));
    CU_ASSERT(strncmp(desc, want, strlen(want)) == 0);
    check_level_pixels(os, s, 0, W, H);
    check_level_pixels(os, s, 1, W / 2, H / 2);
    openslide_close(os);
    pgd_synth_slide_free(&s);
}

static void test_openslide_panda(void)
{
    check_openslide(PGD_SYNTH_PANDA, "os_panda.tiff");
}

static void test_openslide_ultramnist(void)
{
    check_openslide(PGD_SYNTH_ULTRAMNIST, "os_um.tiff");
}

/* libtiff's own reader agrees on the layout: BigTIFF, tiled JPEG YCbCr, reduced-image levels, and its JPEG
 * decoder (which checks the subsampling tag against the stream) decodes a tile close to the render. */
static void check_libtiff_layout(int subsampling)
{
    pgd_synth_slide *s = make_slide(PGD_SYNTH_PANDA, 1100, 700, 8, 0, 3);
    if (!s)
        return;
    char *path = pgd_test_path(subsampling == 444 ? "layout444.tiff" : "layout420.tiff");
    pgd_synth_tiff_opts o = {.tile = 512, .quality = 90, .subsampling = subsampling};
    CU_ASSERT_EQUAL_FATAL(write_slide(s, path, &o), 0);
    TIFF *t = TIFFOpen(path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT(TIFFIsBigTIFF(t));
    int dirs = 0;
    do {
        uint32_t w = 0, h = 0, tw = 0, th = 0, sub = 99;
        uint16_t comp = 0, photo = 0, spp = 0, ysub = 0, xsub = 0;
        TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
        TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
        TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
        TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
        TIFFGetField(t, TIFFTAG_COMPRESSION, &comp);
        TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &photo);
        TIFFGetField(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
        TIFFGetFieldDefaulted(t, TIFFTAG_SUBFILETYPE, &sub);
        TIFFGetFieldDefaulted(t, TIFFTAG_YCBCRSUBSAMPLING, &xsub, &ysub);
        uint32_t ew, eh;
        pgd_synth_level_size(1100, 700, dirs, &ew, &eh);
        CU_ASSERT(TIFFIsTiled(t));
        CU_ASSERT_EQUAL(w, ew);
        CU_ASSERT_EQUAL(h, eh);
        CU_ASSERT_EQUAL(tw, 512);
        CU_ASSERT_EQUAL(th, 512);
        CU_ASSERT_EQUAL(comp, COMPRESSION_JPEG);
        CU_ASSERT_EQUAL(photo, PHOTOMETRIC_YCBCR);
        CU_ASSERT_EQUAL(spp, 3);
        CU_ASSERT_EQUAL(xsub, subsampling == 444 ? 1 : 2);
        CU_ASSERT_EQUAL(ysub, subsampling == 444 ? 1 : 2);
        CU_ASSERT_EQUAL(sub, dirs ? (uint32_t)FILETYPE_REDUCEDIMAGE : 0u);
        dirs++;
    } while (TIFFReadDirectory(t));
    CU_ASSERT_EQUAL(dirs, 3); /* 1100 -> 550 -> 275 <= 512 */
    /* Tile (1, 0) of level 0 (cut by the right edge at 588 columns) through libtiff's JPEG codec. */
    CU_ASSERT_FATAL(TIFFSetDirectory(t, 0));
    uint32_t *rgba = malloc(512 * 512 * 4);
    uint8_t *rgb = malloc(512 * 512 * 3);
    CU_ASSERT_FATAL(rgba && rgb);
    CU_ASSERT_EQUAL(TIFFReadRGBATile(t, 512, 0, rgba), 1);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_synth_render(s, 512, 0, 512, 512, rgb, 512 * 3, &err), 0);
    diff_stats d = {0};
    double sum[3] = {0};
    size_t tail = 0;
    for (uint32_t y = 0; y < 512; y++)
        for (uint32_t x = 0; x < 512; x++) {
            uint32_t p = rgba[(511 - y) * 512 + x]; /* RGBA tiles come bottom-up */
            int got[3] = {(int)TIFFGetR(p), (int)TIFFGetG(p), (int)TIFFGetB(p)};
            stats_add(&d, sum, &tail, got, rgb + (y * 512 + x) * 3);
        }
    stats_finish(&d, sum, tail, 512 * 512);
    stats_check(&d, subsampling == 444 ? "libtiff tile, 4:4:4" : "libtiff tile, 4:2:0");
    free(rgba);
    free(rgb);
    TIFFClose(t);
    pgd_synth_slide_free(&s);
}

static void test_libtiff_layout(void)
{
    check_libtiff_layout(420);
    check_libtiff_layout(444);
}

/* A set written with 2 worker processes equals the set written by one, and its train.csv (read by the
 * project's manifest reader) names every file with the label that file carries. */
static void test_batch_and_manifest(void)
{
    char *d1 = pgd_test_path("set1"), *d2 = pgd_test_path("set2");
    pgd_synth_batch b = {
        .params = {.task = PGD_SYNTH_ULTRAMNIST, .width = 640, .height = 480, .seed = 9},
        .count = 11, .out_dir = d1, .prefix = "um-", .jobs = 2,
    };
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_synth_generate(&b, &err), 0);
    b.out_dir = d2;
    b.jobs = 1;
    CU_ASSERT_EQUAL_FATAL(pgd_synth_generate(&b, &err), 0);
    char csv[600];
    snprintf(csv, sizeof csv, "%s/train.csv", d1);
    pgd_manifest *m = NULL;
    int loaded = pgd_manifest_load(&m, csv, NULL, ".tiff", &err);
    if (loaded < 0)
        printf("\n    manifest: %s ", err.msg);
    CU_ASSERT_EQUAL_FATAL(loaded, 0);
    CU_ASSERT_EQUAL(m->count, 11);
    CU_ASSERT_EQUAL(m->kind, PGD_MANIFEST_PLAIN); /* labels 0-9 do not fit PANDA's isup_grade */
    int seen[10] = {0};
    for (size_t i = 0; i < m->count; i++) {
        char id[64], other[700];
        pgd_synth_image_id("um-", (uint32_t)i, id, sizeof id);
        CU_ASSERT_STRING_EQUAL(m->entries[i].id, id);
        CU_ASSERT_EQUAL(m->entries[i].label, pgd_synth_label(PGD_SYNTH_ULTRAMNIST, 9, (uint32_t)i));
        if (m->entries[i].label >= 0 && m->entries[i].label < 10)
            seen[m->entries[i].label]++;
        snprintf(other, sizeof other, "%s/%s.tiff", d2, id);
        CU_ASSERT(same_bytes(m->entries[i].path, other));
        openslide_t *os = openslide_open(m->entries[i].path);
        CU_ASSERT_PTR_NOT_NULL_FATAL(os);
        const char *desc = openslide_get_property_value(os, "tiff.ImageDescription");
        char want[32];
        snprintf(want, sizeof want, " label=%d ", m->entries[i].label);
        CU_ASSERT(desc && strstr(desc, want));
        openslide_close(os);
    }
    for (int l = 0; l < 10; l++)
        CU_ASSERT(seen[l] >= 1);
    pgd_manifest_free(&m);
    char csv2[600];
    snprintf(csv2, sizeof csv2, "%s/train.csv", d2);
    CU_ASSERT(same_bytes(csv, csv2));
    /* Nothing but slides and the manifest is left behind. */
    DIR *dir = opendir(d1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    int files = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.') {
            files++;
            CU_ASSERT(strstr(e->d_name, ".tmp") == NULL && strstr(e->d_name, ".spool") == NULL);
        }
    closedir(dir);
    CU_ASSERT_EQUAL(files, 12);
    /* A panda set: PANDA's columns, every grade once, Gleason scores that go with the grades. */
    static const char *const gleason[6] = {"0+0", "3+3", "3+4", "4+3", "4+4", "4+5"};
    char *d3 = pgd_test_path("set3");
    pgd_synth_batch p = {.params = {.task = PGD_SYNTH_PANDA, .width = 400, .height = 300, .seed = 4}, .count = 6,
                         .out_dir = d3};
    CU_ASSERT_EQUAL_FATAL(pgd_synth_generate(&p, &err), 0);
    snprintf(csv, sizeof csv, "%s/train.csv", d3);
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load(&m, csv, NULL, ".tiff", &err), 0);
    CU_ASSERT_EQUAL(m->kind, PGD_MANIFEST_PANDA);
    CU_ASSERT_EQUAL(m->count, 6);
    int grades = 0;
    for (size_t i = 0; i < m->count; i++) {
        int l = m->entries[i].label;
        CU_ASSERT_FATAL(l >= 0 && l < 6);
        grades |= 1 << l;
        CU_ASSERT_STRING_EQUAL(m->entries[i].provider, "pgd-synth");
        CU_ASSERT_STRING_EQUAL(m->entries[i].gleason, gleason[l]);
        CU_ASSERT(exists(m->entries[i].path));
    }
    CU_ASSERT_EQUAL(grades, 63);
    pgd_manifest_free(&m);
}

/* A failure while writing leaves nothing under the final name and no temporary file. */
static void test_write_failure_cleans_up(void)
{
    char *dir = pgd_test_path("fail");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
    /* The final name is taken by a non-empty folder, so the closing rename fails. */
    char blocker[600], inner[700];
    snprintf(blocker, sizeof blocker, "%s/panda_00000.tiff", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(blocker, 0755), 0);
    snprintf(inner, sizeof inner, "%s/keep", blocker);
    FILE *f = fopen(inner, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fclose(f);
    pgd_synth_batch b = {.params = {.task = PGD_SYNTH_PANDA, .width = 600, .height = 500}, .count = 2,
                         .out_dir = dir};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT(pgd_synth_generate(&b, &err) < 0);
    CU_ASSERT(err.code != PGD_EINVAL);
    CU_ASSERT(strstr(err.msg, "panda_00000.tiff") != NULL);
    char p[700];
    snprintf(p, sizeof p, "%s/panda_00000.tiff.tmp", dir);
    CU_ASSERT(!exists(p));
    snprintf(p, sizeof p, "%s/train.csv", dir);
    CU_ASSERT(!exists(p));
    DIR *d = opendir(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    for (struct dirent *e; (e = readdir(d));)
        CU_ASSERT(strstr(e->d_name, ".tmp") == NULL && strstr(e->d_name, ".spool") == NULL);
    closedir(d);
    /* An output folder that cannot be made. */
    char sub[800];
    snprintf(sub, sizeof sub, "%s/sub", inner);
    b.out_dir = sub;
    pgd_err_clear(&err);
    CU_ASSERT(pgd_synth_generate(&b, &err) < 0);
    if (!strstr(err.msg, "is not a folder"))
        printf("\n    unexpected message: %s ", err.msg);
    CU_ASSERT(strncmp(err.msg, "out: ", 5) == 0 && strstr(err.msg, "/keep is not a folder") != NULL);
}

static void test_pyramid_misuse(void)
{
    pgd_synth_tiff_opts o = {0};
    CU_ASSERT_EQUAL(pgd_synth_tiff_opts_check(&o, NULL), 0);
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_pyramid *p = pgd_synth_pyramid_open(pgd_test_path("short.tiff"), 300, 1000, &o, NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    uint32_t y, rows;
    size_t stride;
    uint8_t *band = pgd_synth_pyramid_band(p, &y, &rows, &stride);
    CU_ASSERT_EQUAL(y, 0);
    CU_ASSERT_EQUAL(rows, 256);
    CU_ASSERT_EQUAL(stride, 900);
    memset(band, 200, stride * rows);
    CU_ASSERT_EQUAL(pgd_synth_pyramid_push(p, &err), 0);
    CU_ASSERT(pgd_synth_pyramid_close(p, &err) < 0);
    CU_ASSERT(strstr(err.msg, "only 256 of 1000 rows were pushed") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_synth_pyramid_open(pgd_test_path("no/such/dir/x.tiff"), 300, 300, &o, NULL, &err));
    CU_ASSERT(strstr(err.msg, "no/such/dir") != NULL);
}

/* A write error (here: the file size limit, standing in for a full disk) fails the push that hit it, every
 * later call on the writer, and the slide: no final name, no .tmp left. Runs in a child for the limit. */
static void test_write_error_sticky(void)
{
    char *path = pgd_test_path("limit.tiff"), *slide = pgd_test_path("limit_slide.tiff");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {200000, 200000};
        if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(10);
        pgd_synth_tiff_opts o = {.quality = 100};
        pgd_err err = PGD_ERR_INIT;
        pgd_synth_pyramid *p = pgd_synth_pyramid_open(path, 3000, 3000, &o, NULL, &err);
        if (!p)
            _exit(11);
        int failed = 0;
        uint32_t seed = 1;
        for (int band = 0; band < 12 && !failed; band++) {
            uint32_t y, rows;
            size_t stride;
            uint8_t *b = pgd_synth_pyramid_band(p, &y, &rows, &stride);
            for (size_t i = 0; i < stride * rows; i++) /* noise: JPEG cannot shrink it */
                b[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 24);
            failed = pgd_synth_pyramid_push(p, &err) < 0;
        }
        if (!failed || !strstr(err.msg, "limit.tiff"))
            _exit(12);
        pgd_err again = PGD_ERR_INIT;
        if (pgd_synth_pyramid_push(p, &again) == 0 || !strstr(again.msg, "an earlier write failed"))
            _exit(13);
        if (pgd_synth_pyramid_close(p, &again) == 0)
            _exit(14);
        /* A whole slide that does not fit: fails, and leaves nothing. */
        pgd_synth_params sp = {.task = PGD_SYNTH_PANDA, .width = 3000, .height = 3000};
        pgd_synth_slide *s = pgd_synth_slide_new(&sp, 0, -1, NULL);
        pgd_synth_tiff_opts q = {.quality = 100, .subsampling = 444};
        pgd_err e2 = PGD_ERR_INIT;
        if (!s || pgd_synth_write_slide(s, slide, &q, NULL, NULL, 0, NULL, NULL, &e2) == 0)
            _exit(15);
        pgd_synth_slide_free(&s);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", slide);
        _exit(exists(slide) || exists(tmp) ? 16 : 0);
    }
    int st = -1;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        printf("\n    child status %d ", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- glyphs and the size of the signal ---------------------------------------------------------- */

static void test_glyphs_distinct(void)
{
    enum { GW = 40, GH = 56 };
    uint8_t r[10][GW * GH];
    int ink[10] = {0};
    for (int d = 0; d < 10; d++) {
        memset(r[d], 0, sizeof r[d]);
        CU_ASSERT_EQUAL(pgd_synth_glyph_draw(d, 4, 4, 48, 0, r[d], GW, GH), 0);
        for (int i = 0; i < GW * GH; i++)
            ink[d] += r[d][i] >= 128;
        CU_ASSERT(ink[d] > 60); /* a visible glyph */
    }
    CU_ASSERT_EQUAL(pgd_synth_glyph_draw(10, 0, 0, 10, 0, r[0], GW, GH), -1);
    double closest = 1.0;
    for (int a = 0; a < 10; a++)
        for (int b = a + 1; b < 10; b++) {
            int uni = 0, diff = 0;
            for (int i = 0; i < GW * GH; i++) {
                int x = r[a][i] >= 128, y = r[b][i] >= 128;
                uni += x || y;
                diff += x != y;
            }
            double frac = (double)diff / uni;
            closest = frac < closest ? frac : closest;
            if (frac < 0.25)
                printf("\n    digits %d and %d differ in only %.2f of their ink ", a, b, frac);
            CU_ASSERT(frac >= 0.25);
        }
    printf("\n    closest pair of digits differs in %.2f of their ink ", closest);
}

/* Box-average an RGB image by an integer factor (partial boxes at the edges are averaged over what they hold). */
static double *box_down(const uint8_t *rgb, uint32_t w, uint32_t h, uint32_t f, uint32_t *ow, uint32_t *oh)
{
    *ow = (w + f - 1) / f;
    *oh = (h + f - 1) / f;
    double *out = calloc((size_t)*ow * *oh * 3, sizeof *out);
    int *cnt = calloc((size_t)*ow * *oh, sizeof *cnt);
    for (uint32_t y = 0; out && cnt && y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            size_t o = (size_t)(y / f) * *ow + x / f;
            cnt[o]++;
            for (int c = 0; c < 3; c++)
                out[o * 3 + c] += rgb[((size_t)y * w + x) * 3 + c];
        }
    for (size_t i = 0; out && cnt && i < (size_t)*ow * *oh; i++)
        for (int c = 0; c < 3; c++)
            out[i * 3 + c] /= cnt[i];
    free(cnt);
    return out;
}

/* Panda: the glands are small (diameter <= 26.4 design units: <= 3.3 pixels once the slide is fitted into its
 * design size and shrunk 8x), and two slides that differ only in grade differ plainly at full resolution,
 * hardly at all 8x below the fit size, and not at all in mean colour. */
static void test_panda_signal_small(void)
{
    const uint32_t W = 2048, H = 1536; /* = the design fit size: 1 unit = 1 pixel */
    pgd_synth_slide *lo = make_slide(PGD_SYNTH_PANDA, W, H, 31, 0, 0);
    pgd_synth_slide *hi = make_slide(PGD_SYNTH_PANDA, W, H, 31, 0, 5);
    pgd_synth_slide *mid = make_slide(PGD_SYNTH_PANDA, W, H, 31, 0, 3);
    if (!lo || !hi || !mid)
        return;
    pgd_synth_info info;
    pgd_synth_slide_info(hi, &info);
    CU_ASSERT(fabs(info.unit_px - 1.0) < 1e-12);
    CU_ASSERT(info.signal_px <= 26.4 + 1e-9);
    CU_ASSERT(info.signal_px / 8 <= 3.3 + 1e-9);
    size_t n = (size_t)W * H * 3;
    uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
    CU_ASSERT_FATAL(a && b && c);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_synth_render(lo, 0, 0, W, H, a, (size_t)W * 3, &err), 0);
    CU_ASSERT_EQUAL(pgd_synth_render(hi, 0, 0, W, H, b, (size_t)W * 3, &err), 0);
    CU_ASSERT_EQUAL(pgd_synth_render(mid, 0, 0, W, H, c, (size_t)W * 3, &err), 0);
    /* Full resolution: over the pixels that differ at all, the difference is large. */
    double sum_full = 0;
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs(a[i] - b[i]);
        sum_full += d;
        changed += d > 0;
    }
    CU_ASSERT_FATAL(changed > 1000); /* the grade changed some glands */
    double full = sum_full / (double)changed;
    /* 8x below the fit size, over the same area. */
    uint32_t ow, oh;
    double *da = box_down(a, W, H, 8, &ow, &oh), *db = box_down(b, W, H, 8, &ow, &oh);
    double *dc = box_down(c, W, H, 8, &ow, &oh);
    CU_ASSERT_FATAL(da && db && dc);
    double sum_small = 0, mean_a[3] = {0}, mean_b[3] = {0}, mean_c[3] = {0};
    size_t changed_small = 0;
    for (size_t i = 0; i < (size_t)ow * oh * 3; i++) {
        double d = fabs(da[i] - db[i]);
        sum_small += d;
        changed_small += d > 0;
        mean_a[i % 3] += da[i] / ((double)ow * oh);
        mean_b[i % 3] += db[i] / ((double)ow * oh);
        mean_c[i % 3] += dc[i] / ((double)ow * oh);
    }
    double small = sum_small / (double)(changed_small ? changed_small : 1);
    printf("\n    grade 0 vs 5: mean |diff| where changed: %.2f at full size, %.2f at 1/8; slide means "
           "%.2f/%.2f/%.2f vs %.2f/%.2f/%.2f vs (grade 3) %.2f/%.2f/%.2f ",
           full, small, mean_a[0], mean_a[1], mean_a[2], mean_b[0], mean_b[1], mean_b[2], mean_c[0], mean_c[1],
           mean_c[2]);
    CU_ASSERT(full > 30);
    CU_ASSERT(small < full / 4);
    for (int k = 0; k < 3; k++) {
        CU_ASSERT(fabs(mean_a[k] - mean_b[k]) < 0.25);
        CU_ASSERT(fabs(mean_a[k] - mean_c[k]) < 0.25);
    }
    free(da);
    free(db);
    free(dc);
    free(a);
    free(b);
    free(c);
    pgd_synth_slide_free(&lo);
    pgd_synth_slide_free(&hi);
    pgd_synth_slide_free(&mid);
}

/* The panda density knobs: with every gland cell filled, every graded gland patterned and bigger tissue, a
 * grade changes far more pixels of a small slide than with the defaults; the tumour fraction leaves a grade-0
 * slide alone; values out of range are refused, naming the field. */
static void test_panda_density(void)
{
    const uint32_t W = 512, H = 384;
    const pgd_synth_params base = {.task = PGD_SYNTH_PANDA, .width = W, .height = H, .seed = 7, .fit = 256};
    pgd_synth_params dense = base;
    dense.gland_density = 1;
    dense.tumour_fraction = 1;
    dense.tissue = 1.6;
    size_t n = (size_t)W * H * 3;
    uint8_t *a = malloc(n), *b = malloc(n);
    CU_ASSERT_FATAL(a && b);
    size_t changed[2] = {0, 0};
    pgd_err err = PGD_ERR_INIT;
    for (uint32_t idx = 0; idx < 8; idx++)
        for (int v = 0; v < 2; v++) {
            const pgd_synth_params *p = v ? &dense : &base;
            pgd_synth_slide *lo = pgd_synth_slide_new(p, idx, 0, &err), *hi = pgd_synth_slide_new(p, idx, 5, &err);
            CU_ASSERT_FATAL(lo && hi);
            CU_ASSERT_EQUAL(pgd_synth_render(lo, 0, 0, W, H, a, (size_t)W * 3, &err), 0);
            CU_ASSERT_EQUAL(pgd_synth_render(hi, 0, 0, W, H, b, (size_t)W * 3, &err), 0);
            for (size_t i = 0; i < n; i++)
                changed[v] += a[i] != b[i];
            pgd_synth_slide_free(&lo);
            pgd_synth_slide_free(&hi);
        }
    printf("\n    samples changed by grade 5 over 8 slides: %zu default, %zu dense ", changed[0], changed[1]);
    CU_ASSERT(changed[1] > 3 * changed[0]);
    /* Grade 0 has no pattern to show: the tumour fraction changes nothing. */
    pgd_synth_params all = base;
    all.tumour_fraction = 1;
    pgd_synth_slide *x = pgd_synth_slide_new(&base, 3, 0, &err), *y = pgd_synth_slide_new(&all, 3, 0, &err);
    CU_ASSERT_FATAL(x && y);
    CU_ASSERT_EQUAL(pgd_synth_render(x, 0, 0, W, H, a, (size_t)W * 3, &err), 0);
    CU_ASSERT_EQUAL(pgd_synth_render(y, 0, 0, W, H, b, (size_t)W * 3, &err), 0);
    CU_ASSERT_EQUAL(memcmp(a, b, n), 0);
    pgd_synth_slide_free(&x);
    pgd_synth_slide_free(&y);
    static const struct {
        double density, tumour, tissue;
        const char *expect;
    } bad[] = {
        {1.5, 0, 0, "gland_density: 1.5 is outside (0, 1]"},
        {-0.1, 0, 0, "gland_density: -0.1 is outside"},
        {0, 2, 0, "tumour_fraction: 2 is outside (0, 1]"},
        {0, 0, 5, "tissue: 5 is outside (0, 4]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pgd_synth_params p = base;
        p.gland_density = bad[i].density;
        p.tumour_fraction = bad[i].tumour;
        p.tissue = bad[i].tissue;
        pgd_err e = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_synth_params_check(&p, &e), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, bad[i].expect));
    }
    free(a);
    free(b);
}

/* Ultramnist: one digit is tiny (<= 26 design units: <= 3.3 pixels 8x below the fit size) and one is large,
 * whatever the slide size. */
static void test_ultramnist_signal_small(void)
{
    const uint32_t sizes[3][2] = {{512, 512}, {4000, 4000}, {6000, 3000}};
    for (int k = 0; k < 3; k++)
        for (uint32_t i = 0; i < 10; i++) {
            pgd_synth_slide *s = make_slide(PGD_SYNTH_ULTRAMNIST, sizes[k][0], sizes[k][1], 2, i, -1);
            if (!s)
                return;
            pgd_synth_info info;
            pgd_synth_slide_info(s, &info);
            double lo = 1e300, hi = 0;
            for (int d = 0; d < info.ndigits; d++) {
                lo = fmin(lo, info.digit_height[d]);
                hi = fmax(hi, info.digit_height[d]);
            }
            CU_ASSERT(fabs(lo - info.signal_px) < 1e-9);
            CU_ASSERT(info.signal_px <= 26.0 * info.unit_px + 1e-9);
            CU_ASSERT(info.signal_px / info.unit_px / 8 <= 3.3);
            CU_ASSERT(hi >= 0.15 * fmin(sizes[k][0], sizes[k][1]));
            pgd_synth_slide_free(&s);
        }
}

/* ---- memory ------------------------------------------------------------------------------------- */

/* The writer's buffers depend on the width and the tile, never on the height. */
static void test_memory_independent_of_height(void)
{
    pgd_synth_tiff_opts o = {0};
    pgd_synth_tiff_opts_check(&o, NULL);
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_pyramid *a = pgd_synth_pyramid_open(pgd_test_path("m1.tiff"), 8192, 512, &o, NULL, &err);
    pgd_synth_pyramid *b = pgd_synth_pyramid_open(pgd_test_path("m2.tiff"), 8192, 100000, &o, NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    size_t ba = pgd_synth_pyramid_buffer_bytes(a), bb = pgd_synth_pyramid_buffer_bytes(b);
    /* One band per level, each level at most half as wide as the one above: < 2 level-0 bands, + a tile. */
    size_t bound = (size_t)2 * 8192 * 256 * 3 + ((size_t)1 << 20);
    printf("\n    writer buffers: 8192x512 %zu bytes, 8192x100000 %zu bytes (bound %zu) ", ba, bb, bound);
    CU_ASSERT(ba <= bound);
    CU_ASSERT(bb <= bound);
    CU_ASSERT(bb - ba < (size_t)64 * 256 * 3 * 8); /* the extra small levels of the tall one */
    pgd_synth_pyramid_abort(a);
    pgd_synth_pyramid_abort(b);
}

/* Peak RSS in KiB of the pgd-synth binary writing one w x h slide, as it reports it (VmHWM of its own
 * address space: the parent's memory, copied at fork, does not count), or -1 (-2: the binary is missing). */
static long synth_peak_kib(uint32_t w, uint32_t h, const char *name)
{
    char bin[512], ws[16], hs[16], log[600];
    snprintf(bin, sizeof bin, "%s/pgd-synth", pgd_test_build_dir());
    if (access(bin, X_OK) != 0)
        return -2;
    snprintf(ws, sizeof ws, "%u", w);
    snprintf(hs, sizeof hs, "%u", h);
    snprintf(log, sizeof log, "%s.log", pgd_test_path(name));
    char *argv[] = {bin, "--task", "ultramnist", "--count", "1", "--width", ws, "--height", hs,
                    "--out", pgd_test_path(name), NULL};
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "w", stdout);
        if (f)
            execv(bin, argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    size_t len;
    char *text = (char *)read_file(log, &len);
    if (!text)
        return -1;
    text[len] = '\0';
    const char *at = strstr(text, "peak RSS ");
    double mib = at ? strtod(at + 9, NULL) : -1;
    free(text);
    return mib > 0 ? (long)(mib * 1024) : -1;
}

/* A slide 8x taller takes no more memory to write: peak RSS is O(width x tile), measured on the binary. */
static void test_peak_rss_bounded(void)
{
    long small = synth_peak_kib(4096, 1024, "rss_small");
    long tall = synth_peak_kib(4096, 8192, "rss_tall");
    if (small == -2 || tall == -2) {
        pgd_test_skip("pgd-synth is not built in PGD_BUILD");
        return;
    }
    printf("\n    peak RSS of pgd-synth writing 4096x1024: %ld KiB, 4096x8192: %ld KiB ", small, tall);
    CU_ASSERT(small > 0 && tall > 0);
#if defined(__SANITIZE_ADDRESS__)
    pgd_test_skip("RSS bound not checked under AddressSanitizer (its shadow memory and quarantine dominate)");
#else
    CU_ASSERT(tall < small + 4096); /* within 4 MiB */
    CU_ASSERT(tall < 48 * 1024);    /* and small in absolute terms */
#endif
}

static const pgd_test_case cases[] = {
    {"bad_options", test_bad_options},
    {"level_geometry", test_level_geometry},
    {"labels_balanced", test_labels_balanced},
    {"render_tiling_invariant", test_render_tiling_invariant},
    {"downsample", test_downsample},
    {"deterministic_files", test_deterministic_files},
    {"openslide_panda", test_openslide_panda},
    {"openslide_ultramnist", test_openslide_ultramnist},
    {"libtiff_layout", test_libtiff_layout},
    {"batch_and_manifest", test_batch_and_manifest},
    {"write_failure_cleans_up", test_write_failure_cleans_up},
    {"pyramid_misuse", test_pyramid_misuse},
    {"write_error_sticky", test_write_error_sticky},
    {"glyphs_distinct", test_glyphs_distinct},
    {"panda_signal_small", test_panda_signal_small},
    {"panda_density", test_panda_density},
    {"ultramnist_signal_small", test_ultramnist_signal_small},
    {"memory_independent_of_height", test_memory_independent_of_height},
    {"peak_rss_bounded", test_peak_rss_bounded},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("synth", cases, argc, argv);
}
