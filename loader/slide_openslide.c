/* slide_openslide.c: slide facts from OpenSlide properties, and the OpenSlide read backend (ARGB -> RGB). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slide_priv.h"

#define CHUNK_PIXELS (4u << 20) /* largest read_region call, in pixels (16 MiB of ARGB) */

typedef struct os_state {
    uint32_t *argb;
    size_t cap; /* pixels */
} os_state;

/* ---- info --------------------------------------------------------------------------------------- */

static const char *prop(openslide_t *osr, const char *name)
{
    const char *v = openslide_get_property_value(osr, name);
    return v && *v ? v : NULL;
}

static int prop_double(openslide_t *osr, const char *name, double *out)
{
    const char *v = prop(osr, name);
    char *end;
    if (!v)
        return -1;
    double d = strtod(v, &end);
    if (end == v || *end || !isfinite(d))
        return -1;
    *out = d;
    return 0;
}

static int prop_int(openslide_t *osr, const char *name, int64_t *out)
{
    double d;
    if (prop_double(osr, name, &d) != 0 || d != floor(d) || fabs(d) > 9e15)
        return -1;
    *out = (int64_t)d;
    return 0;
}

/* mpp from openslide.mpp-*, else from the TIFF resolution tags (OpenSlide 3.4.1 derives none for
 * generic TIFF): pixels per centimetre or per inch. */
static void mpp_from_props(pgd_slide *s)
{
    double x, y;
    if (prop_double(s->osr, OPENSLIDE_PROPERTY_NAME_MPP_X, &x) == 0 && x > 0) {
        if (prop_double(s->osr, OPENSLIDE_PROPERTY_NAME_MPP_Y, &y) != 0 || !(y > 0))
            y = x;
        s->info.mpp_x = x, s->info.mpp_y = y;
        snprintf(s->mpp_source, sizeof s->mpp_source, "openslide.mpp-x/y");
        s->info.mpp_source = s->mpp_source;
        return;
    }
    const char *unit = prop(s->osr, "tiff.ResolutionUnit");
    double per_unit = !unit ? 0 : strcmp(unit, "centimeter") == 0 ? 1e4 : strcmp(unit, "inch") == 0 ? 25400 : 0;
    if (per_unit == 0 || prop_double(s->osr, "tiff.XResolution", &x) != 0 || !(x > 0))
        return;
    if (prop_double(s->osr, "tiff.YResolution", &y) != 0 || !(y > 0))
        y = x;
    s->info.mpp_x = per_unit / x, s->info.mpp_y = per_unit / y;
    snprintf(s->mpp_source, sizeof s->mpp_source, "tiff.XResolution (%s)", unit);
    s->info.mpp_source = s->mpp_source;
}

static void background_from_props(pgd_slide *s)
{
    const char *v = prop(s->osr, OPENSLIDE_PROPERTY_NAME_BACKGROUND_COLOR);
    char *end;
    if (!v || strlen(v) != 6)
        return;
    unsigned long c = strtoul(v, &end, 16);
    if (*end)
        return;
    s->info.background[0] = (uint8_t)(c >> 16), s->info.background[1] = (uint8_t)(c >> 8);
    s->info.background[2] = (uint8_t)c;
}

int pgd_slide_os_info(pgd_slide *s, pgd_err *err)
{
    openslide_t *osr = s->osr;
    int32_t n = openslide_get_level_count(osr);
    if (n < 1)
        return pgd_fail(err, PGD_EFORMAT, "%s: openslide: %s", s->path,
                        openslide_get_error(osr) ? openslide_get_error(osr) : "no levels");
    if (n > PGD_SLIDE_MAX_LEVELS)
        return pgd_fail(err, PGD_EFORMAT, "%s: %d levels, more than the %d the loader handles", s->path, n,
                        PGD_SLIDE_MAX_LEVELS);
    s->info.nlevels = n;
    for (int l = 0; l < n; l++) {
        pgd_slide_level *lv = &s->info.level[l];
        openslide_get_level_dimensions(osr, l, &lv->w, &lv->h);
        lv->downsample = openslide_get_level_downsample(osr, l);
        lv->max_den = 1;
        if (lv->w <= 0 || lv->h <= 0)
            return pgd_fail(err, PGD_EFORMAT, "%s: level %d has size %lldx%lld", s->path, l, (long long)lv->w,
                            (long long)lv->h);
        char name[64];
        int64_t t;
        snprintf(name, sizeof name, "openslide.level[%d].tile-width", l);
        if (prop_int(osr, name, &t) == 0 && t > 0 && t <= UINT32_MAX)
            lv->tile_w = (uint32_t)t;
        snprintf(name, sizeof name, "openslide.level[%d].tile-height", l);
        if (prop_int(osr, name, &t) == 0 && t > 0 && t <= UINT32_MAX)
            lv->tile_h = (uint32_t)t;
    }
    mpp_from_props(s);
    background_from_props(s);
    pgd_slide_info *in = &s->info;
    in->bounds_x = 0, in->bounds_y = 0, in->bounds_w = in->level[0].w, in->bounds_h = in->level[0].h;
    int64_t b[4];
    if (prop_int(osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_X, &b[0]) == 0 &&
        prop_int(osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_Y, &b[1]) == 0 &&
        prop_int(osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_WIDTH, &b[2]) == 0 &&
        prop_int(osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_HEIGHT, &b[3]) == 0 && b[2] > 0 && b[3] > 0) {
        in->has_bounds = 1;
        in->bounds_x = b[0], in->bounds_y = b[1], in->bounds_w = b[2], in->bounds_h = b[3];
    }
    return 0;
}

/* ---- the read backend --------------------------------------------------------------------------- */

/* OpenSlide errors are sticky: after one, every call on the handle fails. Close it; the next read reopens. */
static int reopen(pgd_slide *s, pgd_err *err)
{
    if (s->osr)
        return 0;
    s->osr = openslide_open(s->path);
    if (!s->osr)
        return pgd_fail(err, PGD_EFORMAT, "%s: openslide: cannot reopen the slide", s->path);
    const char *e = openslide_get_error(s->osr);
    if (e) {
        pgd_fail(err, PGD_EFORMAT, "%s: openslide: %s", s->path, e);
        openslide_close(s->osr);
        s->osr = NULL;
        return -1;
    }
    return 0;
}

static int os_read(pgd_slide *s, int level, int den, int64_t x, int64_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                   size_t stride, pgd_err *err)
{
    os_state *st = s->impl;
    (void)den; /* always 1: max_den is 1 for every level */
    if (reopen(s, err) != 0)
        return -1;
    uint32_t rows = w >= CHUNK_PIXELS ? 1 : CHUNK_PIXELS / w;
    if (rows > h)
        rows = h;
    size_t need = (size_t)w * rows;
    if (need > st->cap) {
        uint32_t *p = realloc(st->argb, need * sizeof *p);
        if (!p)
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a %ux%u region", s->path, w, rows);
        st->argb = p, st->cap = need;
    }
    double ds = s->info.level[level].downsample;
    for (uint32_t r = 0; r < h; r += rows) {
        uint32_t n = h - r < rows ? h - r : rows;
        int64_t x0 = llround((double)x * ds), y0 = llround((double)(y + r) * ds);
        openslide_read_region(s->osr, st->argb, x0, y0, level, w, n);
        const char *e = openslide_get_error(s->osr);
        if (e) {
            pgd_fail(err, PGD_EFORMAT, "%s: openslide: level %d region (%lld, %lld) %ux%u: %s", s->path, level,
                     (long long)x, (long long)(y + r), w, n, e);
            openslide_close(s->osr);
            s->osr = NULL;
            return -1;
        }
        for (uint32_t k = 0; k < n; k++)
            pgd_slide_composite(st->argb + (size_t)k * w, w, s->info.background, rgb + (r + k) * stride);
    }
    return 0;
}

static void os_close(pgd_slide *s)
{
    os_state *st = s->impl;
    if (st)
        free(st->argb);
    free(st);
    s->impl = NULL;
}

static const pgd_slide_ops os_ops = {os_read, os_close};

int pgd_slide_os_attach(pgd_slide *s, pgd_err *err)
{
    os_state *st = calloc(1, sizeof *st);
    if (!st)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", s->path);
    s->impl = st;
    s->ops = &os_ops;
    s->info.backend = PGD_SLIDE_OPENSLIDE;
    for (int l = 0; l < s->info.nlevels; l++)
        s->info.level[l].max_den = 1;
    return 0;
}
