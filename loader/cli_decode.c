/* cli_decode.c: `pgd-loader decode`: one slide to a PNG: the fit image (grid optional) or a mosaic of native patches. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "png.h"
#include "loader/cli.h"
#include "loader/patcher_more.h"

typedef struct decode_cfg {
    int64_t fit, patch, level, max_pixels;
    double mpp;
    int grid, backend;
    char *out, *cells;
} decode_cfg;

static const pgd_cfg_opt opts[] = {
    {"out", PGD_CFG_STRING, offsetof(decode_cfg, out), NULL, 0, 0, NULL, "the PNG file to write", PGD_CFG_REQUIRED},
    {"fit", PGD_CFG_INT, offsetof(decode_cfg, fit), "0", 0, 32768, NULL,
     "fit geometry: the slide resampled into an S x S white square (0: not fit)", 0},
    {"patch", PGD_CFG_INT, offsetof(decode_cfg, patch), "256", 1, 16384, NULL, "patch side p", 0},
    {"level", PGD_CFG_INT, offsetof(decode_cfg, level), "-1", -1, 31, NULL,
     "native geometry: patches read at this pyramid level (-1: not native by level)", 0},
    {"mpp", PGD_CFG_FLOAT, offsetof(decode_cfg, mpp), "0", 0, 1e6, NULL,
     "native geometry: patches at this many microns per pixel (0: not native by mpp)", 0},
    {"grid", PGD_CFG_BOOL, offsetof(decode_cfg, grid), "false", 0, 0, NULL, "fit: draw the patch grid", 0},
    {"cells", PGD_CFG_STRING, offsetof(decode_cfg, cells), NULL, 0, 0, NULL,
     "native: only the window r0:r1,c0:c1 (rows r0..r1-1, columns c0..c1-1; default: every cell)", 0},
    {"max_pixels", PGD_CFG_INT, offsetof(decode_cfg, max_pixels), "400000000", 1, 4e9, NULL,
     "native: refuse a mosaic with more pixels than this", 0},
    {"backend", PGD_CFG_ENUM, offsetof(decode_cfg, backend), "auto", 0, 0, "auto|openslide|fast|image",
     "the backend to read with (auto: what the loader would use)", 0},
    {NULL},
};

static const char USAGE[] = "decode SLIDE --out FILE.png (--fit S [--grid] | --level L | --mpp X) [--patch P] "
                            "[--cells r0:r1,c0:c1] [--max-pixels N]";
#define CMD "decode"

/* Dark lines between the patches of an S x S image. */
static void draw_grid(uint8_t *img, uint32_t S, uint32_t p)
{
    for (uint32_t k = p; k < S; k += p)
        for (uint32_t i = 0; i < S; i++) {
            memset(img + ((size_t)k * S + i) * 3, 40, 3);
            memset(img + ((size_t)i * S + k) * 3, 40, 3);
        }
}

static int decode_fit(pgd_patcher *pt, const decode_cfg *c)
{
    pgd_err err = PGD_ERR_INIT;
    const pgd_geom *g = pgd_patcher_geom(pt);
    uint32_t S = g->spec.fit_size;
    const uint8_t *img = pgd_patcher_fit_image(pt, &err);
    uint8_t *copy = NULL;
    if (img && c->grid) {
        if (!(copy = malloc((size_t)S * S * 3))) {
            pgd_fail(&err, PGD_ENOMEM, "out of memory for a %ux%u image", S, S);
        } else {
            memcpy(copy, img, (size_t)S * S * 3);
            draw_grid(copy, S, g->spec.patch_size);
            img = copy;
        }
    }
    if (img && !pgd_err_is_set(&err))
        pgd_png_write(c->out, img, S, S, 3, &err);
    free(copy);
    if (pgd_err_is_set(&err)) {
        pgd_log_err(&err);
        return PGD_EXIT_FAIL;
    }
    const pgd_slide_info *in = pgd_patcher_slide_info(pt);
    printf("wrote %s: %ux%u, fit %u from level %d (%lldx%lld, %s backend) at scale %.6g, %ux%u patches of %u\n",
           c->out, S, S, S, g->level, (long long)in->level[g->level].w, (long long)in->level[g->level].h,
           pgd_slide_backend_name(in->backend), g->scale, g->grid_m, g->grid_n, g->spec.patch_size);
    return PGD_EXIT_OK;
}

/* "r0:r1,c0:c1" -> a window inside the m x n grid. Exit code or -1 when fine. */
static int parse_cells(const char *s, const pgd_geom *g, uint32_t w[4])
{
    int used = -1;
    if (sscanf(s, "%u:%u,%u:%u%n", &w[0], &w[1], &w[2], &w[3], &used) != 4 || used != (int)strlen(s))
        return pgd_loader_usage_error(CMD, USAGE, "--cells: '%s' is not r0:r1,c0:c1", s);
    if (w[0] >= w[1] || w[2] >= w[3])
        return pgd_loader_usage_error(CMD, USAGE, "--cells: '%s' is an empty window (need r0 < r1, c0 < c1)", s);
    if (w[1] > g->grid_m || w[3] > g->grid_n)
        return pgd_loader_usage_error(CMD, USAGE, "--cells: '%s' runs past the %u x %u grid (rows 0:%u, columns 0:%u)",
                                      s, g->grid_m, g->grid_n, g->grid_m, g->grid_n);
    return -1;
}

static int decode_native(pgd_patcher *pt, const decode_cfg *c)
{
    const pgd_geom *g = pgd_patcher_geom(pt);
    uint32_t win[4] = {0, g->grid_m, 0, g->grid_n}, p = g->spec.patch_size;
    int rc = c->cells ? parse_cells(c->cells, g, win) : -1;
    if (rc >= 0)
        return rc;
    uint64_t W = (uint64_t)(win[3] - win[2]) * p, H = (uint64_t)(win[1] - win[0]) * p;
    if (W * H > (uint64_t)c->max_pixels || W > UINT32_MAX || H > UINT32_MAX)
        return pgd_loader_usage_error(CMD, USAGE,
                                      "the mosaic of %ux%u cells would be %llux%llu pixels, more than --max-pixels %lld: "
                                      "pick a window with --cells r0:r1,c0:c1 or raise --max-pixels",
                                      win[1] - win[0], win[3] - win[2], (unsigned long long)W, (unsigned long long)H,
                                      (long long)c->max_pixels);
    uint32_t n = win[3] - win[2];
    uint8_t *img = malloc((size_t)(W * H * 3)), *row = malloc((size_t)n * p * p * 3);
    uint32_t *cells = malloc((size_t)n * 2 * sizeof *cells);
    pgd_err err = PGD_ERR_INIT;
    if (!img || !row || !cells)
        pgd_fail(&err, PGD_ENOMEM, "out of memory for a %llux%llu mosaic", (unsigned long long)W, (unsigned long long)H);
    for (uint32_t r = win[0]; r < win[1] && !pgd_err_is_set(&err); r++) {
        for (uint32_t k = 0; k < n; k++)
            cells[2 * k] = r, cells[2 * k + 1] = win[2] + k;
        if (pgd_patcher_read(pt, cells, n, row, &err) != 0)
            break;
        for (uint32_t k = 0; k < n; k++)
            for (uint32_t y = 0; y < p; y++)
                memcpy(img + (((size_t)(r - win[0]) * p + y) * W + (size_t)k * p) * 3,
                       row + ((size_t)k * p * p + (size_t)y * p) * 3, (size_t)p * 3);
    }
    if (!pgd_err_is_set(&err))
        pgd_png_write(c->out, img, (uint32_t)W, (uint32_t)H, 3, &err);
    free(img), free(row), free(cells);
    if (pgd_err_is_set(&err)) {
        pgd_log_err(&err);
        return PGD_EXIT_FAIL;
    }
    const pgd_slide_info *in = pgd_patcher_slide_info(pt);
    printf("wrote %s: %llux%llu, cells %u:%u,%u:%u of the %ux%u grid of %u-pixel patches, level %d (%s backend) "
           "at scale %.6g\n", c->out, (unsigned long long)W, (unsigned long long)H, win[0], win[1], win[2], win[3],
           g->grid_m, g->grid_n, p, g->level, pgd_slide_backend_name(in->backend), g->scale);
    return PGD_EXIT_OK;
}

/* The geometry the options ask for, or an exit code. */
static int spec_from(const decode_cfg *c, pgd_geom_spec *g)
{
    int modes = (c->fit > 0) + (c->level >= 0) + (c->mpp > 0);
    if (modes != 1)
        return pgd_loader_usage_error(CMD, USAGE, "give exactly one of --fit S, --level L, --mpp X (%d given)", modes);
    size_t n = strlen(c->out);
    if (n < 4 || strcmp(c->out + n - 4, ".png") != 0)
        return pgd_loader_usage_error(CMD, USAGE, "--out %s: the name must end in .png", c->out);
    if (c->grid && c->fit == 0)
        return pgd_loader_usage_error(CMD, USAGE, "--grid goes with --fit");
    if (c->cells && c->fit > 0)
        return pgd_loader_usage_error(CMD, USAGE, "--cells goes with --level or --mpp");
    *g = (pgd_geom_spec){.patch_size = (uint32_t)c->patch, .level = -1};
    if (c->fit > 0)
        g->kind = PGD_GEOM_FIT, g->fit_size = (uint32_t)c->fit;
    else
        g->kind = PGD_GEOM_NATIVE, g->level = (int32_t)c->level, g->mpp = c->level >= 0 ? 0 : c->mpp;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_patcher_spec_check(g, &err) != 0)
        return pgd_loader_usage_error(CMD, USAGE, "%s", err.msg);
    return -1;
}

int pgd_loader_decode_main(int argc, char **argv)
{
    decode_cfg c = {0};
    const char *path = NULL;
    pgd_geom_spec spec;
    int rc = pgd_loader_parse_cmd(opts, &c, argc, argv, USAGE,
                                  "decode SLIDE outside the graph into a PNG: the fit image, or a mosaic of native "
                                  "patches", &path);
    if (rc < 0)
        rc = spec_from(&c, &spec);
    if (rc < 0) {
        pgd_err err = PGD_ERR_INIT;
        pgd_slide_backend want;
        const char *names[] = {"auto", "openslide", "fast", "image"};
        pgd_slide_backend_parse(names[c.backend], &want);
        pgd_patcher *pt = pgd_patcher_open_backend(path, &spec, want, &err);
        if (!pt) {
            pgd_log_err(&err);
            rc = PGD_EXIT_FAIL;
        } else {
            rc = spec.kind == PGD_GEOM_FIT ? decode_fit(pt, &c) : decode_native(pt, &c);
            pgd_patcher_close(&pt);
        }
    }
    pgd_cfg_free(opts, &c);
    return rc;
}
