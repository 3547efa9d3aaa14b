/* test_patcher.c: fit and native geometries: grids, white centred padding, area resampling against a plain
 * reference, patches against the renderer, the fast path's fit streamed in strips against the whole level,
 * mpp level choice, cell errors, repeats, and broken slides. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "common/png.h"
#include "cunit_util.h"
#include "loader/patcher_more.h"
#include "loader/resample.h"
#include "loader/slide.h"
#include "loader/synth.h"

/* A fit image against the renderer's pixels resampled by the reference below: JPEG (quality 85) error,
 * smoothed by the downscale. Measured values are in docs/loader.md. */
#define RENDER_MEAN_BOUND 2.0
#define RENDER_MAX_BOUND 64
/* Fast path at a DCT scale vs OpenSlide at full scale, both then area-resampled to the same output. */
#define DCT_FIT_MEAN_BOUND 0.5
#define DCT_FIT_MAX_BOUND 64

/* ---- helpers ------------------------------------------------------------------------------------ */

static pgd_synth_slide *synth(uint32_t w, uint32_t h, uint64_t seed)
{
    pgd_synth_params p = {.task = PGD_SYNTH_PANDA, .width = w, .height = h, .seed = seed};
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_slide *s = NULL;
    if (pgd_synth_params_check(&p, &err) != 0 || !(s = pgd_synth_slide_new(&p, 0, -1, &err)))
        fprintf(stderr, "synth: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL(s);
    return s;
}

/* Write the slide to tmp/name once (returns the path). */
static const char *make_slide(const char *name, uint32_t w, uint32_t h, uint64_t seed, pgd_synth_tiff_opts o)
{
    const char *path = pgd_test_path(name);
    struct stat st;
    if (stat(path, &st) == 0)
        return path;
    pgd_err err = PGD_ERR_INIT;
    pgd_synth_slide *s = synth(w, h, seed);
    if (!s || pgd_synth_tiff_opts_check(&o, &err) != 0 ||
        pgd_synth_write_slide(s, path, &o, NULL, NULL, 0, NULL, NULL, &err) != 0) {
        fprintf(stderr, "make_slide %s: %s\n", name, err.msg);
        CU_FAIL("slide not written");
    }
    pgd_synth_slide_free(&s);
    return path;
}

static const char *std_slide(void) /* 1000x760, levels 1000x760, 500x380, 250x190, mpp 0.25 */
{
    return make_slide("std.tiff", 1000, 760, 1, (pgd_synth_tiff_opts){.mpp = 0.25});
}

static pgd_patcher *open_ok(const char *path, pgd_geom_spec spec, pgd_slide_backend b)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_patcher *p = pgd_patcher_open_backend(path, &spec, b, &err);
    if (!p)
        fprintf(stderr, "patcher %s: %s\n", path, err.msg);
    CU_ASSERT_PTR_NOT_NULL(p);
    return p;
}

static pgd_geom_spec fit_spec(uint32_t S, uint32_t p)
{
    return (pgd_geom_spec){.kind = PGD_GEOM_FIT, .patch_size = p, .fit_size = S, .level = -1};
}

static pgd_geom_spec native_spec(uint32_t p, int level, double mpp)
{
    return (pgd_geom_spec){.kind = PGD_GEOM_NATIVE, .patch_size = p, .level = level, .mpp = mpp};
}

/* The reference: each output pixel the exact area-weighted mean, in doubles, white where nothing maps. */
static void naive_area(const uint8_t *src, uint32_t sw, uint32_t sh, double ox, double oy, double rx, double ry,
                       uint8_t *dst, uint32_t dw, uint32_t dh)
{
    for (uint32_t y = 0; y < dh; y++)
        for (uint32_t x = 0; x < dw; x++) {
            double a0 = fmax(ox + x * rx, 0), a1 = fmin(ox + (x + 1) * rx, sw);
            double b0 = fmax(oy + y * ry, 0), b1 = fmin(oy + (y + 1) * ry, sh);
            double acc[3] = {0, 0, 0}, wsum = 0;
            for (int64_t j = (int64_t)floor(b0); j < (int64_t)ceil(b1); j++)
                for (int64_t i = (int64_t)floor(a0); i < (int64_t)ceil(a1); i++) {
                    double w = (fmin(a1, i + 1.0) - fmax(a0, (double)i)) * (fmin(b1, j + 1.0) - fmax(b0, (double)j));
                    if (w <= 0)
                        continue;
                    for (int k = 0; k < 3; k++)
                        acc[k] += w * src[((size_t)j * sw + (size_t)i) * 3 + k];
                    wsum += w;
                }
            for (int k = 0; k < 3; k++)
                dst[((size_t)y * dw + x) * 3 + k] = wsum > 0 ? (uint8_t)floor(acc[k] / wsum + 0.5) : 255;
        }
}

static void diff_stats(const uint8_t *a, const uint8_t *b, size_t n, int *max, double *mean)
{
    double sum = 0;
    *max = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        *max = d > *max ? d : *max;
    }
    *mean = n ? sum / (double)n : 0;
}

static int is_white(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 255)
            return 0;
    return 1;
}

static uint8_t *random_image(uint32_t w, uint32_t h, unsigned seed)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        px[i] = (uint8_t)(rand_r(&seed) >> 7);
    return px;
}

/* ---- resampling --------------------------------------------------------------------------------- */

static void test_resample_constant_exact(void)
{
    uint32_t sw = 173, sh = 91;
    uint8_t *src = malloc((size_t)sw * sh * 3), *dst = malloc(400 * 400 * 3);
    for (size_t i = 0; i < (size_t)sw * sh; i++)
        src[3 * i] = 10, src[3 * i + 1] = 200, src[3 * i + 2] = 255;
    static const double ratios[] = {0.25, 0.3, 0.5, 1, 1.7, 2, 3.3, 7.9, 8};
    pgd_err err = PGD_ERR_INIT;
    for (size_t k = 0; k < sizeof ratios / sizeof *ratios; k++) {
        double r = ratios[k];
        uint32_t dw = (uint32_t)floor(sw / r), dh = (uint32_t)floor(sh / r);
        dw = dw > 400 ? 400 : dw, dh = dh > 400 ? 400 : dh;
        pgd_resample_map m = {sw, sh, 0.1, 0.2, r, r, dw, dh};
        CU_ASSERT_EQUAL(pgd_resample_area(&m, src, (size_t)sw * 3, dst, (size_t)dw * 3, &err), 0);
        int exact = 1;
        for (size_t i = 0; i < (size_t)dw * dh; i++)
            exact &= dst[3 * i] == 10 && dst[3 * i + 1] == 200 && dst[3 * i + 2] == 255;
        if (!exact)
            fprintf(stderr, "ratio %g: not exact\n", r);
        CU_ASSERT(exact);
    }
    free(src), free(dst);
}

static void test_resample_matches_reference(void)
{
    uint32_t sw = 97, sh = 61;
    uint8_t *src = random_image(sw, sh, 3), *a = malloc(300 * 300 * 3), *b = malloc(300 * 300 * 3),
            *c = malloc(300 * 300 * 3);
    struct { double ox, oy, rx, ry; uint32_t dw, dh; } maps[] = {
        {0, 0, 1.37, 1.37, 70, 44}, {0.3, 0.7, 2.0, 2.0, 48, 30}, {0, 0, 0.45, 0.45, 215, 135},
        {-5.5, -3, 1.0, 1.0, 110, 70}, {10.25, 4.5, 3.7, 1.9, 25, 30}, {0, 0, 97.0 / 13, 61.0 / 8, 13, 8},
    };
    pgd_err err = PGD_ERR_INIT;
    for (size_t k = 0; k < sizeof maps / sizeof *maps; k++) {
        pgd_resample_map m = {sw, sh, maps[k].ox, maps[k].oy, maps[k].rx, maps[k].ry, maps[k].dw, maps[k].dh};
        size_t n = (size_t)m.dst_w * m.dst_h * 3;
        CU_ASSERT_EQUAL(pgd_resample_area(&m, src, (size_t)sw * 3, a, (size_t)m.dst_w * 3, &err), 0);
        naive_area(src, sw, sh, m.ox, m.oy, m.rx, m.ry, b, m.dst_w, m.dst_h);
        int max;
        double mean;
        diff_stats(a, b, n, &max, &mean);
        CU_ASSERT(max <= 1);
        /* streamed in uneven bands: the same bytes */
        pgd_resample *r = pgd_resample_new(&m, c, (size_t)m.dst_w * 3, &err);
        CU_ASSERT_PTR_NOT_NULL(r);
        for (uint32_t y = 0, step = 1; r && y < sh; y += step, step = step % 9 + 2)
            pgd_resample_push(r, src + (size_t)y * sw * 3, (size_t)sw * 3, step > sh - y ? sh - y : step);
        if (r)
            pgd_resample_finish(r);
        pgd_resample_free(&r);
        CU_ASSERT(memcmp(a, c, n) == 0);
    }
    pgd_resample_map bad = {0, 10, 0, 0, 1, 1, 5, 5};
    CU_ASSERT_PTR_NULL(pgd_resample_new(&bad, a, 15, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "resample: bad mapping"));
    free(src), free(a), free(b), free(c);
}

/* ---- fit ---------------------------------------------------------------------------------------- */

/* Rows (or columns) of pure white at each end of the fit image. */
static void white_bands(const uint8_t *img, uint32_t S, int by_rows, uint32_t *lead, uint32_t *trail)
{
    uint8_t *line = malloc((size_t)S * 3);
    *lead = *trail = 0;
    for (int end = 0; end < 2; end++)
        for (uint32_t k = 0; k < S; k++) {
            uint32_t idx = end ? S - 1 - k : k;
            for (uint32_t i = 0; i < S; i++)
                memcpy(line + (size_t)i * 3, img + (by_rows ? (size_t)idx * S + i : (size_t)i * S + idx) * 3, 3);
            if (!is_white(line, (size_t)S * 3))
                break;
            (end ? (*trail)++ : (*lead)++);
        }
    free(line);
}

static void test_fit_grid_and_padding(void)
{
    struct { const char *name; uint32_t w, h; int wide; } shapes[] = {
        {"wide.tiff", 900, 300, 1}, {"tall.tiff", 300, 900, 0}};
    for (int k = 0; k < 2; k++) {
        const char *path = make_slide(shapes[k].name, shapes[k].w, shapes[k].h, 5, (pgd_synth_tiff_opts){0});
        pgd_patcher *p = open_ok(path, fit_spec(256, 64), PGD_SLIDE_AUTO);
        if (!p)
            continue;
        const pgd_geom *g = pgd_patcher_geom(p);
        CU_ASSERT(g->grid_m == 4 && g->grid_n == 4);
        CU_ASSERT_EQUAL(g->level, 1); /* 450 is the smallest long side >= 256 (225 is not) */
        CU_ASSERT(fabs(g->scale - 256.0 / 450) < 1e-12);
        pgd_err err = PGD_ERR_INIT;
        const uint8_t *img = pgd_patcher_fit_image(p, &err);
        CU_ASSERT_PTR_NOT_NULL(img);
        if (img) {
            uint32_t lead, trail, side_lead, side_trail;
            white_bands(img, 256, shapes[k].wide, &lead, &trail);
            white_bands(img, 256, !shapes[k].wide, &side_lead, &side_trail);
            /* 150 level pixels -> 85 output pixels: 171 white lines, 85 before and 86 after */
            printf("\n  %s: white bands %u and %u", shapes[k].name, lead, trail);
            CU_ASSERT(lead == 85 && trail == 86);
            CU_ASSERT(side_lead == 0 && side_trail == 0);
        }
        /* patches are crops of that image */
        uint32_t cells[4] = {0, 0, 3, 2};
        uint8_t *out = malloc(2 * 64 * 64 * 3);
        CU_ASSERT_EQUAL(pgd_patcher_read(p, cells, 2, out, &err), 0);
        int same = 1;
        for (int y = 0; img && y < 64; y++) {
            same &= memcmp(out + (size_t)y * 64 * 3, img + (size_t)y * 256 * 3, 64 * 3) == 0;
            same &= memcmp(out + (64 * 64 + (size_t)y * 64) * 3, img + ((size_t)(192 + y) * 256 + 128) * 3, 64 * 3) == 0;
        }
        CU_ASSERT(same);
        CU_ASSERT(is_white(out, 64 * 64 * 3)); /* the top-left corner is padding either way */
        free(out);
        pgd_patcher_close(&p);
        CU_ASSERT_PTR_NULL(p);
    }
}

static void test_fit_constant_image_exact(void)
{
    uint32_t w = 1000, h = 700;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++)
        px[3 * i] = 10, px[3 * i + 1] = 200, px[3 * i + 2] = 30;
    pgd_err err = PGD_ERR_INIT;
    const char *path = pgd_test_path("flat.png");
    CU_ASSERT_EQUAL(pgd_png_write(path, px, w, h, 3, &err), 0);
    free(px);
    pgd_patcher *p = open_ok(path, fit_spec(512, 128), PGD_SLIDE_AUTO);
    const uint8_t *img = p ? pgd_patcher_fit_image(p, &err) : NULL;
    CU_ASSERT_PTR_NOT_NULL(img);
    /* 700 * 0.512 = 358.4 -> 358 rows, from row (512 - 358) / 2 = 77 */
    int ok = 1;
    for (uint32_t y = 0; img && y < 512; y++)
        for (uint32_t x = 0; x < 512; x++) {
            const uint8_t *q = img + ((size_t)y * 512 + x) * 3;
            if (y >= 77 && y < 77 + 358)
                ok &= q[0] == 10 && q[1] == 200 && q[2] == 30;
            else
                ok &= q[0] == 255 && q[1] == 255 && q[2] == 255;
        }
    CU_ASSERT(ok);
    pgd_patcher_close(&p);
}

/* The fit image against the renderer's level pixels, area-resampled by the reference. */
static void check_against_render(const char *path, pgd_synth_slide *s, uint32_t S, pgd_slide_backend b)
{
    pgd_patcher *p = open_ok(path, fit_spec(S, S / 4), b);
    pgd_err err = PGD_ERR_INIT;
    const uint8_t *img = p ? pgd_patcher_fit_image(p, &err) : NULL;
    if (!img)
        goto done;
    const pgd_geom *g = pgd_patcher_geom(p);
    const pgd_slide_info *in = pgd_patcher_slide_info(p);
    uint32_t lw = (uint32_t)in->level[g->level].w, lh = (uint32_t)in->level[g->level].h;
    uint32_t ow = (uint32_t)lround(lw * g->scale), oh = (uint32_t)lround(lh * g->scale);
    uint8_t *lvl = malloc((size_t)lw * lh * 3), *ref = malloc((size_t)ow * oh * 3), *got = malloc((size_t)ow * oh * 3);
    CU_ASSERT_EQUAL(pgd_synth_render_level(s, g->level, 0, 0, lw, lh, lvl, &err), 0);
    naive_area(lvl, lw, lh, 0, 0, (double)lw / ow, (double)lh / oh, ref, ow, oh);
    uint32_t px = (S - ow) / 2, py = (S - oh) / 2;
    for (uint32_t y = 0; y < oh; y++)
        memcpy(got + (size_t)y * ow * 3, img + ((size_t)(py + y) * S + px) * 3, (size_t)ow * 3);
    int max;
    double mean;
    diff_stats(got, ref, (size_t)ow * oh * 3, &max, &mean);
    printf("\n  %s fit %u (level %d, %s): vs renderer max %d mean %.3f", path, S, g->level,
           pgd_slide_backend_name(in->backend), max, mean);
    CU_ASSERT(max <= RENDER_MAX_BOUND);
    CU_ASSERT(mean <= RENDER_MEAN_BOUND);
    free(lvl), free(ref), free(got);
done:
    pgd_patcher_close(&p);
}

static void test_fit_matches_renderer(void)
{
    pgd_synth_slide *s = synth(1000, 760, 1);
    if (s)
        check_against_render(std_slide(), s, 512, PGD_SLIDE_AUTO);
    pgd_synth_slide_free(&s);
}

/* A slide with no pyramid: fit streams level 0 in bands; the fast path decodes at 1/8. */
static void test_fit_level0_only(void)
{
    const char *path = make_slide("flat0.tiff", 2400, 1800, 9, (pgd_synth_tiff_opts){.levels = 1});
    pgd_patcher *a = open_ok(path, fit_spec(256, 64), PGD_SLIDE_FAST),
                *b = open_ok(path, fit_spec(256, 64), PGD_SLIDE_OPENSLIDE);
    pgd_err err = PGD_ERR_INIT;
    const uint8_t *x = a ? pgd_patcher_fit_image(a, &err) : NULL, *y = b ? pgd_patcher_fit_image(b, &err) : NULL;
    CU_ASSERT(x && y);
    if (x && y) {
        CU_ASSERT_EQUAL(pgd_patcher_geom(a)->level, 0);
        int max;
        double mean;
        diff_stats(x, y, 256 * 256 * 3, &max, &mean);
        printf("\n  level-0-only fit 256: fast (DCT 1/8) vs OpenSlide max %d mean %.3f", max, mean);
        CU_ASSERT(max <= DCT_FIT_MAX_BOUND);
        CU_ASSERT(mean <= DCT_FIT_MEAN_BOUND);
    }
    pgd_patcher_close(&a);
    pgd_patcher_close(&b);
    pgd_synth_slide *s = synth(2400, 1800, 9);
    if (s)
        check_against_render(path, s, 256, PGD_SLIDE_AUTO);
    pgd_synth_slide_free(&s);
}

static void test_fit_backends_agree(void)
{
    pgd_patcher *a = open_ok(std_slide(), fit_spec(384, 128), PGD_SLIDE_FAST),
                *b = open_ok(std_slide(), fit_spec(384, 128), PGD_SLIDE_OPENSLIDE);
    pgd_err err = PGD_ERR_INIT;
    const uint8_t *x = a ? pgd_patcher_fit_image(a, &err) : NULL, *y = b ? pgd_patcher_fit_image(b, &err) : NULL;
    CU_ASSERT(x && y && memcmp(x, y, 384 * 384 * 3) == 0);
    pgd_patcher_close(&a);
    pgd_patcher_close(&b);
}

/* The fast path's fit (tile columns decoded into a strip and resampled as they arrive) against the whole
 * level read at once and resampled in one call: the same bytes. The level-0-only slide at DCT 1/8 has
 * tiles 32 pixels wide, so its bands arrive in ten strips. */
static void check_fit_whole_level(const char *path, uint32_t S)
{
    pgd_patcher *p = open_ok(path, fit_spec(S, S / 4), PGD_SLIDE_FAST);
    pgd_err err = PGD_ERR_INIT;
    pgd_slide *s = pgd_slide_open(path, PGD_SLIDE_FAST, &err);
    const uint8_t *img = p ? pgd_patcher_fit_image(p, &err) : NULL;
    CU_ASSERT(img && s);
    if (!img || !s)
        goto done;
    const pgd_geom *g = pgd_patcher_geom(p);
    const pgd_slide_level *l = &pgd_patcher_slide_info(p)->level[g->level];
    int den = 1;
    while (den * 2 <= l->max_den && den * 2 <= (1 / g->scale) * (1 + 1e-9))
        den *= 2;
    int64_t sw, sh;
    pgd_slide_scaled_size(s, g->level, den, &sw, &sh);
    uint32_t ow = (uint32_t)lround((double)l->w * g->scale), oh = (uint32_t)lround((double)l->h * g->scale);
    uint8_t *lvl = malloc((size_t)sw * sh * 3), *ref = malloc((size_t)ow * oh * 3);
    CU_ASSERT_EQUAL(
        pgd_slide_read(s, g->level, den, 0, 0, (uint32_t)sw, (uint32_t)sh, NULL, lvl, (size_t)sw * 3, &err), 0);
    pgd_resample_map m = {(uint32_t)sw, (uint32_t)sh, 0, 0, (double)l->w / den / ow, (double)l->h / den / oh, ow, oh};
    CU_ASSERT_EQUAL(pgd_resample_area(&m, lvl, (size_t)sw * 3, ref, (size_t)ow * 3, &err), 0);
    uint32_t px = (S - ow) / 2, py = (S - oh) / 2;
    int same = 1;
    for (uint32_t y = 0; y < oh; y++)
        same &= memcmp(ref + (size_t)y * ow * 3, img + ((size_t)(py + y) * S + px) * 3, (size_t)ow * 3) == 0;
    printf("\n  %s fit %u (level %d at 1/%d, %lldx%lld): %s the whole level resampled at once", path, S, g->level,
           den, (long long)sw, (long long)sh, same ? "the same bytes as" : "DIFFERS from");
    CU_ASSERT(same);
    free(lvl), free(ref);
done:
    pgd_slide_close(&s);
    pgd_patcher_close(&p);
}

static void test_fit_strips_match_whole_level(void)
{
    check_fit_whole_level(std_slide(), 384);
    check_fit_whole_level(std_slide(), 512);
    check_fit_whole_level(make_slide("flat0.tiff", 2400, 1800, 9, (pgd_synth_tiff_opts){.levels = 1}), 256);
}

/* ---- native ------------------------------------------------------------------------------------- */

static void test_native_grid(void)
{
    struct { uint32_t p; int level; uint32_t m, n; } grids[] = {
        {256, 0, 3, 4}, {256, 1, 2, 2}, {256, 2, 1, 1}, {100, 0, 8, 10}, {1000, 0, 1, 1}, {190, 2, 1, 2},
    };
    for (size_t k = 0; k < sizeof grids / sizeof *grids; k++) {
        pgd_patcher *p = open_ok(std_slide(), native_spec(grids[k].p, grids[k].level, 0), PGD_SLIDE_AUTO);
        if (!p)
            continue;
        const pgd_geom *g = pgd_patcher_geom(p);
        CU_ASSERT(g->grid_m == grids[k].m && g->grid_n == grids[k].n && g->level == grids[k].level && g->scale == 1);
        pgd_patcher_close(&p);
    }
    /* patch (2, 3) at level 0: x 768..1023 (1000 wide), y 512..767 (760 high): the rest white */
    pgd_patcher *p = open_ok(std_slide(), native_spec(256, 0, 0), PGD_SLIDE_AUTO);
    pgd_slide *s = pgd_slide_open(std_slide(), PGD_SLIDE_OPENSLIDE, NULL);
    uint8_t *out = malloc(256 * 256 * 3), *ref = malloc(232 * 248 * 3);
    uint32_t cell[2] = {2, 3};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_patcher_read(p, cell, 1, out, &err), 0);
    CU_ASSERT_EQUAL(pgd_slide_read(s, 0, 1, 768, 512, 232, 248, NULL, ref, 232 * 3, &err), 0);
    int ok = 1;
    for (int y = 0; y < 256; y++)
        for (int x = 0; x < 256; x++) {
            const uint8_t *q = out + ((size_t)y * 256 + x) * 3;
            ok &= x < 232 && y < 248 ? memcmp(q, ref + ((size_t)y * 232 + x) * 3, 3) == 0 : is_white(q, 3);
        }
    CU_ASSERT(ok);
    free(out), free(ref);
    pgd_slide_close(&s);
    pgd_patcher_close(&p);
}

/* Patch (r, c) of a native-by-mpp patcher against the reference resampling of the level it reads. */
static void check_mpp_patch(pgd_patcher *p, uint32_t r, uint32_t c, int max_bound)
{
    const pgd_geom *g = pgd_patcher_geom(p);
    const pgd_slide_info *in = pgd_patcher_slide_info(p);
    uint32_t ps = g->spec.patch_size, lw = (uint32_t)in->level[g->level].w, lh = (uint32_t)in->level[g->level].h;
    /* the level on a white canvas reaching past the patch's footprint: white outside the bounds */
    uint32_t cw = (uint32_t)ceil((c + 1) * ps / g->scale) + 2, ch = (uint32_t)ceil((r + 1) * ps / g->scale) + 2;
    cw = cw > lw ? cw : lw, ch = ch > lh ? ch : lh;
    pgd_slide *s = pgd_slide_open(in->path, PGD_SLIDE_OPENSLIDE, NULL);
    uint8_t *lvl = malloc((size_t)cw * ch * 3), *ref = malloc((size_t)ps * ps * 3), *out = malloc((size_t)ps * ps * 3);
    memset(lvl, 255, (size_t)cw * ch * 3);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_slide_read(s, g->level, 1, 0, 0, lw, lh, NULL, lvl, (size_t)cw * 3, &err), 0);
    naive_area(lvl, cw, ch, c * ps / g->scale, r * ps / g->scale, 1 / g->scale, 1 / g->scale, ref, ps, ps);
    uint32_t cell[2] = {r, c};
    CU_ASSERT_EQUAL(pgd_patcher_read(p, cell, 1, out, &err), 0);
    int max;
    double mean;
    diff_stats(out, ref, (size_t)ps * ps * 3, &max, &mean);
    printf("\n  mpp %g: level %d scale %.4f cell (%u, %u): max %d mean %.3f", g->spec.mpp, g->level, g->scale, r, c,
           max, mean);
    CU_ASSERT(max <= max_bound);
    free(lvl), free(ref), free(out);
    pgd_slide_close(&s);
}

static void test_native_mpp(void)
{
    struct { double mpp; int level; double scale; uint32_t m, n; int den_used; } cases[] = {
        {0.5, 1, 1, 3, 4, 0},            /* exactly level 1 */
        {0.75, 1, 0.5 / 0.75, 2, 3, 0},  /* level 1, 0.667x: 253.3 x 333.3 pixels */
        {0.2, 0, 1.25, 8, 10, 0},        /* finer than level 0: level 0 upsampled */
        {4.0, 2, 0.25, 1, 1, 1},         /* level 2 (mpp 1) at 1/4: the fast path decodes at 1/4 */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        pgd_patcher *p = open_ok(std_slide(), native_spec(128, -1, cases[k].mpp), PGD_SLIDE_AUTO);
        if (!p)
            continue;
        const pgd_geom *g = pgd_patcher_geom(p);
        CU_ASSERT_EQUAL(g->level, cases[k].level);
        CU_ASSERT(fabs(g->scale - cases[k].scale) < 1e-9);
        CU_ASSERT(g->grid_m == cases[k].m && g->grid_n == cases[k].n);
        if (g->grid_m != cases[k].m || g->grid_n != cases[k].n)
            fprintf(stderr, "mpp %g: grid %ux%u\n", cases[k].mpp, g->grid_m, g->grid_n);
        /* the cell at the far corner runs past the bounds: white there */
        check_mpp_patch(p, g->grid_m - 1, g->grid_n - 1, cases[k].den_used ? DCT_FIT_MAX_BOUND : 1);
        check_mpp_patch(p, 0, 0, cases[k].den_used ? DCT_FIT_MAX_BOUND : 1);
        pgd_patcher_close(&p);
    }
    /* boxes.tiff: level 2 is 4x by its width, stored downsample 4.016: an mpp of 4x level 0 reads level 2 */
    const char *boxes = pgd_test_fixture("boxes.tiff");
    if (boxes) {
        pgd_slide *s = pgd_slide_open(boxes, PGD_SLIDE_AUTO, NULL);
        double m0 = s ? pgd_slide_get_info(s)->mpp_x : 1;
        pgd_slide_close(&s);
        pgd_patcher *p = open_ok(boxes, native_spec(32, -1, 4 * m0), PGD_SLIDE_AUTO);
        if (p) {
            const pgd_geom *g = pgd_patcher_geom(p);
            CU_ASSERT(g->level == 2 && g->scale == 1 && g->grid_m == 2 && g->grid_n == 3);
        }
        pgd_patcher_close(&p);
    }
}

/* ---- cells, repeats, errors --------------------------------------------------------------------- */

static void test_cells_and_repeats(void)
{
    pgd_geom_spec specs[2] = {native_spec(128, 0, 0), fit_spec(256, 128)};
    for (int k = 0; k < 2; k++) {
        pgd_patcher *p = open_ok(std_slide(), specs[k], PGD_SLIDE_AUTO);
        if (!p)
            continue;
        const pgd_geom *g = pgd_patcher_geom(p);
        size_t pb = (size_t)g->spec.patch_size * g->spec.patch_size * 3;
        uint8_t *out = malloc(4 * pb);
        pgd_err err = PGD_ERR_INIT;
        uint32_t bad[4] = {0, 0, g->grid_m, 0};
        CU_ASSERT_EQUAL(pgd_patcher_read(p, bad, 2, out, &err), -1);
        char want[128];
        snprintf(want, sizeof want, "cell 1 (row %u, column 0) is outside the %u x %u grid", g->grid_m, g->grid_m,
                 g->grid_n);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "std.tiff"));
        CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
        pgd_err_clear(&err);
        uint32_t col[2] = {0, g->grid_n};
        CU_ASSERT_EQUAL(pgd_patcher_read(p, col, 1, out, &err), -1);
        pgd_err_clear(&err);
        /* any order, repeats: the same cell gives the same bytes */
        uint32_t r = g->grid_m / 2, c = g->grid_n / 2; /* tissue there; background or padding at (0, 0) */
        uint32_t cells[8] = {r, c, 0, 0, r, c, 0, 1};
        CU_ASSERT_EQUAL(pgd_patcher_read(p, cells, 4, out, &err), 0);
        CU_ASSERT(memcmp(out, out + 2 * pb, pb) == 0);
        CU_ASSERT(memcmp(out, out + pb, pb) != 0);
        uint8_t *again = malloc(pb);
        CU_ASSERT_EQUAL(pgd_patcher_read(p, cells + 2, 1, again, &err), 0);
        CU_ASSERT(memcmp(again, out + pb, pb) == 0);
        CU_ASSERT_EQUAL(pgd_patcher_read(p, cells, 0, again, &err), 0); /* nothing asked, nothing done */
        free(again), free(out);
        pgd_patcher_close(&p);
    }
}

static void test_bad_specs(void)
{
    const char *path = std_slide(), *png = pgd_test_path("flat.png");
    if (access(png, F_OK) != 0)
        test_fit_constant_image_exact();
    struct { pgd_geom_spec spec; const char *path; const char *want; } cases[] = {
        {fit_spec(256, 0), path, "patch_size: 0 is outside 1..16384"},
        {fit_spec(100, 64), path, "fit_size: 100 is not a multiple of the patch size 64"},
        {fit_spec(32, 64), path, "fit_size: 32 is outside 64..32768"},
        {fit_spec(65536, 64), path, "fit_size: 65536 is outside 64..32768"},
        {{.kind = 3, .patch_size = 64}, path, "geometry kind 3 is neither fit (1) nor native (2)"},
        {native_spec(64, -2, 0), path, "level: -2 is not a level"},
        {native_spec(64, -1, 0), path, "mpp: 0 is not a positive number"},
        {native_spec(64, -1, NAN), path, "mpp: nan is not a positive number"},
        {native_spec(64, 3, 0), path, "level 3 does not exist (levels 0..2)"},
        {native_spec(64, -1, 0.5), png, "the slide has no mpp"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_PTR_NULL(pgd_patcher_open(cases[k].path, &cases[k].spec, &err));
        if (!strstr(err.msg, cases[k].want) || !strstr(err.msg, cases[k].path))
            fprintf(stderr, "spec case %zu: '%s' lacks '%s' or the path\n", k, err.msg, cases[k].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, cases[k].want));
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, cases[k].path));
        CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    }
}

/* A copy of the standard slide with the first bytes of level 0's tile 0 zeroed. */
static const char *bad_tile_slide(void)
{
    const char *src = std_slide(), *path = pgd_test_path("badtile.tiff");
    TIFF *t = TIFFOpen(src, "r");
    uint64_t off = t ? TIFFGetStrileOffset(t, 0) : 0;
    if (t)
        TIFFClose(t);
    FILE *f = fopen(src, "rb"), *g = fopen(path, "wb");
    int ch;
    for (uint64_t i = 0; f && g && (ch = fgetc(f)) != EOF; i++)
        fputc(i >= off && i < off + 16 ? 0 : ch, g);
    if (f)
        fclose(f);
    if (g)
        fclose(g);
    return path;
}

static void test_corrupt_slides(void)
{
    const char *bad = bad_tile_slide(), *cut = pgd_test_path("cut.tiff");
    FILE *fin = fopen(std_slide(), "rb"), *fout = fopen(cut, "wb");
    for (int i = 0, ch; fin && fout && i < 30000 && (ch = fgetc(fin)) != EOF; i++)
        fputc(ch, fout);
    if (fin)
        fclose(fin);
    if (fout)
        fclose(fout);
    /* opening fails */
    struct { const char *path; const char *want; } opens[] = {
        {pgd_test_path("absent.tiff"), "No such file or directory"},
        {cut, "libtiff: Can not read TIFF directory count"},
        {pgd_test_fixture("unopenable.tiff"), "Unsupported TIFF compression: 52479"},
    };
    for (size_t k = 0; k < sizeof opens / sizeof *opens; k++) {
        if (!opens[k].path)
            continue;
        pgd_err err = PGD_ERR_INIT;
        pgd_geom_spec spec = fit_spec(256, 64);
        CU_ASSERT_PTR_NULL(pgd_patcher_open(opens[k].path, &spec, &err));
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, opens[k].want));
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, opens[k].path));
    }
    /* reading fails on the bad region, and only there; again and again */
    struct { const char *path; pgd_slide_backend b; const char *want; } reads[] = {
        {bad, PGD_SLIDE_FAST, "level 0 tile (0, 0): jpeg: Not a JPEG file: starts with 0x00 0x00"},
        {bad, PGD_SLIDE_OPENSLIDE, "openslide: level 0 region (0, 0) 128x128: Not a JPEG file"},
        {pgd_test_fixture("unreadable.svs"), PGD_SLIDE_AUTO, "Bogus marker length"},
    };
    for (size_t k = 0; k < sizeof reads / sizeof *reads; k++) {
        if (!reads[k].path)
            continue;
        pgd_patcher *p = open_ok(reads[k].path, native_spec(128, 0, 0), reads[k].b);
        if (!p)
            continue;
        const pgd_geom *g = pgd_patcher_geom(p);
        uint8_t *out = malloc(2 * 128 * 128 * 3);
        uint32_t cells[4] = {0, 0, g->grid_m - 1, g->grid_n - 1};
        for (int round = 0; round < 3; round++) {
            pgd_err err = PGD_ERR_INIT;
            CU_ASSERT_EQUAL(pgd_patcher_read(p, cells, 1, out, &err), -1);
            if (!strstr(err.msg, reads[k].want))
                fprintf(stderr, "read case %zu: '%s' lacks '%s'\n", k, err.msg, reads[k].want);
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, reads[k].want));
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, reads[k].path));
            pgd_err_clear(&err);
            if (g->grid_m * g->grid_n > 1)
                CU_ASSERT_EQUAL(pgd_patcher_read(p, cells + 2, 1, out + 128 * 128 * 3, &err), 0);
        }
        free(out);
        pgd_patcher_close(&p);
    }
    /* fit needs the whole level: every read fails, and keeps failing the same way */
    pgd_patcher *p = open_ok(bad, fit_spec(512, 128), PGD_SLIDE_AUTO); /* level 0, where the bad tile is */
    uint8_t *out = malloc(128 * 128 * 3);
    uint32_t cell[2] = {1, 1};
    for (int round = 0; p && round < 2; round++) {
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_patcher_read(p, cell, 1, out, &err), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "Not a JPEG file"));
    }
    free(out);
    pgd_patcher_close(&p);
}

static const pgd_test_case cases[] = {
    {"resample_constant_exact", test_resample_constant_exact},
    {"resample_matches_reference", test_resample_matches_reference},
    {"fit_grid_and_padding", test_fit_grid_and_padding},
    {"fit_constant_image_exact", test_fit_constant_image_exact},
    {"fit_matches_renderer", test_fit_matches_renderer},
    {"fit_level0_only", test_fit_level0_only},
    {"fit_backends_agree", test_fit_backends_agree},
    {"fit_strips_match_whole_level", test_fit_strips_match_whole_level},
    {"native_grid", test_native_grid},
    {"native_mpp", test_native_mpp},
    {"cells_and_repeats", test_cells_and_repeats},
    {"bad_specs", test_bad_specs},
    {"corrupt_slides", test_corrupt_slides},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("patcher", cases, argc, argv);
}
