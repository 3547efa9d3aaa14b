/* patcher.c: resolve a fit or native geometry on a slide and cut p x p RGB patches from it. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "patcher_more.h"
#include "resample.h"

#define FIT_MAX 32768u                       /* largest fit size S (S x S x 3 bytes are kept) */
#define PATCH_MAX 16384u                     /* largest patch side */
#define BAND_MAX_BYTES ((size_t)64 << 20)   /* largest band of level rows read at once while fitting */

/* A buffer that can outlive its patcher (see the spares below). */
typedef struct spare {
    uint8_t *buf;
    size_t size;
    uint32_t x, y, w, h; /* fit image: the written rectangle */
} spare;

struct pgd_patcher {
    pgd_slide *slide;
    const pgd_slide_info *info;
    pgd_geom geom;
    int den; /* DCT scale 1/den the level is read at */
    /* FIT */
    uint8_t *fit;             /* S x S x 3, built on first read */
    spare fit_buf;            /* fit's buffer as the spares see it */
    uint32_t fit_w, fit_h;    /* the resampled level inside the square */
    uint32_t pad_x, pad_y;    /* its top-left corner */
    /* NATIVE */
    pgd_slide_rect bounds;    /* slide bounds in level pixels */
    pgd_slide_rect sbounds;   /* the same in the 1/den grid */
    uint8_t *buf;             /* a patch's source footprint */
    size_t cap;
};

/* Buffers kept from a closed patcher for the next one in this process, so that a stream of slides does not
 * page-fault fresh ones each time: the S x S x 3 fit image (with the rectangle its pixels were written into:
 * everything outside it is still white) and the band of level rows the fit is streamed through. */
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static spare spare_fit, spare_band;

#define HUGE_PAGE ((size_t)2 << 20)

static size_t huge_round(size_t n)
{
    return (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
}

/* n bytes of fresh memory on 2 MiB boundaries, in transparent huge pages where the kernel gives them (the
 * first touch of a 48 MiB fit image is then 24 page faults, not 12288). NULL when out of memory. */
static uint8_t *big_alloc(size_t n)
{
    size_t keep = huge_round(n), len = keep + HUGE_PAGE;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uint8_t *a = p + (HUGE_PAGE - (uintptr_t)p % HUGE_PAGE) % HUGE_PAGE;
    /* trimming the slack or advising can only fail on a bad range; the buffer is usable either way */
    if (a > p && munmap(p, (size_t)(a - p)) != 0)
        return a;
    if (p + len > a + keep && munmap(a + keep, (size_t)(p + len - (a + keep))) != 0)
        return a;
    (void)madvise(a, keep, MADV_HUGEPAGE);
    return a;
}

static void big_free(uint8_t *p, size_t n)
{
    if (p && munmap(p, huge_round(n)) != 0)
        return; /* EINVAL only: a range big_alloc did not map; nothing to release */
}

/* A buffer of n bytes: the spare when it has that size (its rectangle in *got), else a new one (NULL when out
 * of memory; *got then has size 0). */
static uint8_t *spare_take(spare *s, size_t n, spare *got)
{
    memset(got, 0, sizeof *got);
    pthread_mutex_lock(&spare_lock);
    if (s->buf && s->size == n)
        *got = *s, memset(s, 0, sizeof *s);
    pthread_mutex_unlock(&spare_lock);
    if (!got->buf && (got->buf = big_alloc(n)))
        got->size = n;
    return got->buf;
}

/* Keep b as the spare, replacing an older one. */
static void spare_give(spare *s, const spare *b)
{
    if (!b->buf)
        return;
    pthread_mutex_lock(&spare_lock);
    spare old = *s;
    *s = *b;
    pthread_mutex_unlock(&spare_lock);
    if (old.buf != b->buf)
        big_free(old.buf, old.size);
}

int pgd_patcher_spec_check(const pgd_geom_spec *g, pgd_err *err)
{
    if (g->patch_size < 1 || g->patch_size > PATCH_MAX)
        return pgd_fail(err, PGD_EINVAL, "patch_size: %u is outside 1..%u", g->patch_size, PATCH_MAX);
    if (g->kind == PGD_GEOM_FIT) {
        if (g->fit_size < g->patch_size || g->fit_size > FIT_MAX)
            return pgd_fail(err, PGD_EINVAL, "fit_size: %u is outside %u..%u", g->fit_size, g->patch_size, FIT_MAX);
        if (g->fit_size % g->patch_size)
            return pgd_fail(err, PGD_EINVAL, "fit_size: %u is not a multiple of the patch size %u", g->fit_size,
                            g->patch_size);
        return 0;
    }
    if (g->kind != PGD_GEOM_NATIVE)
        return pgd_fail(err, PGD_EINVAL, "geometry kind %d is neither fit (1) nor native (2)", (int)g->kind);
    if (g->level < -1)
        return pgd_fail(err, PGD_EINVAL, "level: %d is not a level (or -1 to choose by mpp)", (int)g->level);
    if (g->level == -1 && !(g->mpp > 0 && isfinite(g->mpp)))
        return pgd_fail(err, PGD_EINVAL, "mpp: %g is not a positive number of microns per pixel (level -1)", g->mpp);
    return 0;
}

/* The largest DCT denominator (<= the level's max) that keeps the decoded level at least `ratio` times the
 * output: the level is never decoded smaller than what is made of it. */
static int pick_den(const pgd_slide_level *l, double ratio)
{
    int den = 1;
    while (den * 2 <= l->max_den && den * 2 <= ratio * (1 + 1e-9))
        den *= 2;
    return den;
}

static int resolve_fit(pgd_patcher *p, pgd_err *err)
{
    const pgd_geom_spec *g = &p->geom.spec;
    int L = pgd_slide_level_for_side(p->info, g->fit_size);
    const pgd_slide_level *l = &p->info->level[L];
    int64_t lng = l->w > l->h ? l->w : l->h;
    double s = (double)g->fit_size / (double)lng;
    long ow = lround((double)l->w * s), oh = lround((double)l->h * s);
    p->fit_w = (uint32_t)(ow < 1 ? 1 : ow > g->fit_size ? g->fit_size : ow);
    p->fit_h = (uint32_t)(oh < 1 ? 1 : oh > g->fit_size ? g->fit_size : oh);
    p->pad_x = (g->fit_size - p->fit_w) / 2;
    p->pad_y = (g->fit_size - p->fit_h) / 2;
    p->den = pick_den(l, 1 / s);
    p->geom.level = L;
    p->geom.scale = s;
    p->geom.grid_m = p->geom.grid_n = g->fit_size / g->patch_size;
    (void)err;
    return 0;
}

/* [a, b) level-0 pixels -> the level pixels that cover them, clipped to [0, n). */
static void to_level(int64_t a, int64_t len, int64_t n0, int64_t n, int64_t *lo, int64_t *hi)
{
    double f = (double)n / (double)n0;
    int64_t x0 = (int64_t)floor((double)a * f), x1 = (int64_t)ceil((double)(a + len) * f);
    *lo = x0 < 0 ? 0 : x0 > n ? n : x0;
    *hi = x1 < *lo ? *lo : x1 > n ? n : x1;
}

static int resolve_native(pgd_patcher *p, pgd_err *err)
{
    const pgd_geom_spec *g = &p->geom.spec;
    const pgd_slide_info *in = p->info;
    int L = g->level;
    double s = 1;
    if (L >= in->nlevels)
        return pgd_fail(err, PGD_EINVAL, "%s: level %d does not exist (levels 0..%d)", in->path, L, in->nlevels - 1);
    if (L < 0) {
        if ((L = pgd_slide_level_for_mpp(in, g->mpp, err)) < 0)
            return -1;
        s = pgd_slide_level_mpp(in, L) / g->mpp;
        if (fabs(s - 1) < 1e-9)
            s = 1;
    }
    const pgd_slide_level *l = &in->level[L];
    int64_t x0, x1, y0, y1;
    to_level(in->bounds_x, in->bounds_w, in->level[0].w, l->w, &x0, &x1);
    to_level(in->bounds_y, in->bounds_h, in->level[0].h, l->h, &y0, &y1);
    if (x1 <= x0 || y1 <= y0)
        return pgd_fail(err, PGD_EFORMAT, "%s: the slide bounds are empty at level %d", in->path, L);
    p->bounds = (pgd_slide_rect){x0, y0, x1 - x0, y1 - y0};
    p->den = s == 1 ? 1 : pick_den(l, 1 / s);
    int64_t d = p->den;
    p->sbounds = (pgd_slide_rect){x0 / d, y0 / d, (x1 + d - 1) / d - x0 / d, (y1 + d - 1) / d - y0 / d};
    double gm = ceil((double)(y1 - y0) * s / g->patch_size - 1e-9), gn = ceil((double)(x1 - x0) * s / g->patch_size - 1e-9);
    if (gm > UINT32_MAX || gn > UINT32_MAX || gm * gn > 1e12)
        return pgd_fail(err, PGD_EINVAL, "%s: a %.0f x %.0f grid is too large", in->path, gm, gn);
    p->geom.grid_m = gm < 1 ? 1 : (uint32_t)gm;
    p->geom.grid_n = gn < 1 ? 1 : (uint32_t)gn;
    p->geom.level = L;
    p->geom.scale = s;
    return 0;
}

pgd_patcher *pgd_patcher_open_backend(const char *path, const pgd_geom_spec *spec, pgd_slide_backend backend,
                                      pgd_err *err)
{
    if (pgd_patcher_spec_check(spec, err) != 0) {
        pgd_err_prefix(err, "%s: ", path);
        return NULL;
    }
    pgd_patcher *p = calloc(1, sizeof *p);
    if (!p) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    p->geom.spec = *spec;
    if (!(p->slide = pgd_slide_open(path, backend, err)))
        goto fail;
    p->info = pgd_slide_get_info(p->slide);
    if ((spec->kind == PGD_GEOM_FIT ? resolve_fit(p, err) : resolve_native(p, err)) != 0)
        goto fail;
    return p;
fail:
    pgd_patcher_close(&p);
    return NULL;
}

pgd_patcher *pgd_patcher_open(const char *path, const pgd_geom_spec *spec, pgd_err *err)
{
    return pgd_patcher_open_backend(path, spec, PGD_SLIDE_AUTO, err);
}

const pgd_geom *pgd_patcher_geom(const pgd_patcher *p)
{
    return &p->geom;
}

const pgd_slide_info *pgd_patcher_slide_info(const pgd_patcher *p)
{
    return p->info;
}

void pgd_patcher_close(pgd_patcher **pp)
{
    pgd_patcher *p = *pp;
    if (!p)
        return;
    pgd_slide_close(&p->slide);
    if (p->fit)
        spare_give(&spare_fit, &p->fit_buf);
    free(p->buf);
    free(p);
    *pp = NULL;
}

/* ---- fit: the S x S image, built once by streaming the level in bands through the resampler ------------ */

static uint32_t band_rows(const pgd_patcher *p, int64_t sw)
{
    uint32_t th = p->info->level[p->geom.level].tile_h / (uint32_t)p->den, rows = th ? th : 256;
    while (rows < 64)
        rows += th ? th : 64;
    size_t most = BAND_MAX_BYTES / ((size_t)sw * 3);
    if (rows > most)
        rows = most ? (uint32_t)most : 1;
    return rows;
}

/* White around the resampled rectangle of img, except where it is white already (a reused buffer whose
 * pixels were written inside that rectangle). */
static void fit_pad(const pgd_patcher *p, uint8_t *img, const spare *was)
{
    uint32_t S = p->geom.spec.fit_size, x = p->pad_x, y = p->pad_y, w = p->fit_w, h = p->fit_h;
    if (was->w && was->x >= x && was->y >= y && was->x + was->w <= x + w && was->y + was->h <= y + h)
        return; /* the old pixels lie inside the new rectangle, which the resampler writes in full */
    size_t row = (size_t)S * 3, in_w = (size_t)w * 3, left = (size_t)x * 3;
    memset(img, 255, y * row);
    for (uint32_t r = y; r < y + h; r++) {
        memset(img + r * row, 255, left);
        memset(img + r * row + left + in_w, 255, row - left - in_w);
    }
    memset(img + (size_t)(y + h) * row, 255, (size_t)(S - y - h) * row);
}

/* Stream the level through r in bands of `rows` rows, each read whole into band (sw x rows pixels). */
static int fit_bands(pgd_patcher *p, pgd_resample *r, int64_t sw, int64_t sh, uint32_t rows, uint8_t *band,
                     pgd_err *err)
{
    for (int64_t y = 0; y < sh; y += rows) {
        uint32_t n = sh - y < rows ? (uint32_t)(sh - y) : rows;
        if (pgd_slide_read(p->slide, p->geom.level, p->den, 0, y, (uint32_t)sw, n, NULL, band, (size_t)sw * 3,
                           err) != 0)
            return -1;
        pgd_resample_push(r, band, (size_t)sw * 3, n);
    }
    return 0;
}

/* The same, each band read one tile column at a time into strip (sw_strip pixels wide, rows high): the
 * columns the resampler still needs move to its left edge, the next tiles are decoded after them and
 * resampled at once, while they are in the cache. */
static int fit_strips(pgd_patcher *p, pgd_resample *r, int64_t sw, int64_t sh, uint32_t rows, uint32_t step,
                      uint8_t *strip, uint32_t sw_strip, pgd_err *err)
{
    size_t pitch = (size_t)sw_strip * 3;
    for (int64_t y = 0; y < sh; y += rows) {
        uint32_t n = sh - y < rows ? (uint32_t)(sh - y) : rows, s0 = 0;
        for (uint32_t x = 0; x < (uint32_t)sw; x += step) {
            uint32_t w = (uint32_t)sw - x < step ? (uint32_t)sw - x : step, from = pgd_resample_strip_from(r);
            if (x == 0 || from > x)
                from = x;
            if (from > s0) /* columns [from, x) to the left edge */
                for (uint32_t k = 0; k < n; k++)
                    memmove(strip + k * pitch, strip + k * pitch + (size_t)(from - s0) * 3, (size_t)(x - from) * 3);
            s0 = from;
            if (x - s0 + w > sw_strip)
                return pgd_fail(err, PGD_EINVAL, "%s: a strip of %u columns has no room for %u", p->info->path,
                                sw_strip, x - s0 + w);
            if (pgd_slide_read(p->slide, p->geom.level, p->den, x, y, w, n, NULL, strip + (size_t)(x - s0) * 3, pitch,
                               err) != 0 ||
                pgd_resample_push_strip(r, strip, pitch, n, s0, x + w, err) != 0)
                return -1;
        }
    }
    return 0;
}

static int build_fit(pgd_patcher *p, pgd_err *err)
{
    uint32_t S = p->geom.spec.fit_size;
    int L = p->geom.level;
    int64_t sw, sh;
    pgd_slide_scaled_size(p->slide, L, p->den, &sw, &sh);
    if (sw > UINT32_MAX / 4 || sh > UINT32_MAX)
        return pgd_fail(err, PGD_EINVAL, "%s: level %d is too wide to fit", p->info->path, L);
    const pgd_slide_level *l = &p->info->level[L];
    uint32_t rows = band_rows(p, sw);
    pgd_resample_map m = {(uint32_t)sw, (uint32_t)sh, 0, 0, (double)l->w / p->den / p->fit_w,
                          (double)l->h / p->den / p->fit_h, p->fit_w, p->fit_h};
    spare img, band = {0};
    pgd_resample *r = NULL;
    spare_take(&spare_fit, (size_t)S * S * 3, &img);
    if (!img.buf) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory for the %ux%u fit image", p->info->path, S, S);
        goto fail;
    }
    fit_pad(p, img.buf, &img);
    /* from here on only the rectangle is written, whatever happens */
    img.x = p->pad_x, img.y = p->pad_y, img.w = p->fit_w, img.h = p->fit_h;
    if (!(r = pgd_resample_new(&m, img.buf + ((size_t)p->pad_y * S + p->pad_x) * 3, (size_t)S * 3, err)))
        goto fail;
    /* the fast path reads tile columns into a strip (with AVX2; elsewhere the resampler would only put the band
     * together again), other backends whole bands */
    uint32_t step = p->info->backend == PGD_SLIDE_FAST ? l->tile_w / (uint32_t)p->den : 0;
    uint32_t margin = pgd_resample_strip_margin(r), sw_strip = step + margin;
    int strips = step && margin && sw_strip < sw;
    /* a strip's last row is read up to 16 bytes past its end (see pgd_resample_push_strip) */
    size_t bytes = strips ? (size_t)sw_strip * rows * 3 + 64 : (size_t)sw * rows * 3;
    if (!spare_take(&spare_band, bytes, &band)) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a band of %u rows", p->info->path, rows);
        goto fail;
    }
    if ((strips ? fit_strips(p, r, sw, sh, rows, step, band.buf, sw_strip, err)
                : fit_bands(p, r, sw, sh, rows, band.buf, err)) != 0)
        goto fail;
    pgd_resample_finish(r);
    pgd_resample_free(&r);
    spare_give(&spare_band, &band);
    p->fit = img.buf;
    p->fit_buf = img;
    return 0;
fail:
    pgd_resample_free(&r);
    spare_give(&spare_band, &band);
    if (img.buf && !img.w)
        big_free(img.buf, img.size); /* not padded yet: its white is unknown */
    else
        spare_give(&spare_fit, &img);
    return -1;
}

const uint8_t *pgd_patcher_fit_image(pgd_patcher *p, pgd_err *err)
{
    if (p->geom.spec.kind != PGD_GEOM_FIT) {
        pgd_fail(err, PGD_EINVAL, "%s: not a fit geometry", p->info->path);
        return NULL;
    }
    if (!p->fit && build_fit(p, err) != 0)
        return NULL;
    return p->fit;
}

static void fit_patch(const pgd_patcher *p, uint32_t r, uint32_t c, uint8_t *out)
{
    uint32_t S = p->geom.spec.fit_size, ps = p->geom.spec.patch_size;
    const uint8_t *src = p->fit + ((size_t)r * ps * S + (size_t)c * ps) * 3;
    for (uint32_t y = 0; y < ps; y++)
        memcpy(out + (size_t)y * ps * 3, src + (size_t)y * S * 3, (size_t)ps * 3);
}

/* ---- native: each patch read (and resampled when the mpp asks) on its own --------------------------- */

static int native_patch(pgd_patcher *p, uint32_t r, uint32_t c, uint8_t *out, pgd_err *err)
{
    uint32_t ps = p->geom.spec.patch_size;
    int L = p->geom.level;
    double s = p->geom.scale;
    if (s == 1)
        return pgd_slide_read(p->slide, L, 1, p->bounds.x + (int64_t)c * ps, p->bounds.y + (int64_t)r * ps, ps, ps,
                              &p->bounds, out, (size_t)ps * 3, err);
    double d = p->den, fx = (p->bounds.x + (double)c * ps / s) / d, fy = (p->bounds.y + (double)r * ps / s) / d;
    double fw = ps / (s * d);
    int64_t ix = (int64_t)floor(fx), iy = (int64_t)floor(fy);
    int64_t iw = (int64_t)ceil(fx + fw) - ix, ih = (int64_t)ceil(fy + fw) - iy;
    size_t need = (size_t)(iw * ih * 3);
    if (need > p->cap) {
        uint8_t *b = realloc(p->buf, need);
        if (!b)
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a %lldx%lld region", p->info->path,
                            (long long)iw, (long long)ih);
        p->buf = b, p->cap = need;
    }
    if (pgd_slide_read(p->slide, L, p->den, ix, iy, (uint32_t)iw, (uint32_t)ih, &p->sbounds, p->buf,
                       (size_t)iw * 3, err) != 0)
        return -1;
    pgd_resample_map m = {(uint32_t)iw, (uint32_t)ih, fx - ix, fy - iy, 1 / (s * d), 1 / (s * d), ps, ps};
    return pgd_resample_area(&m, p->buf, (size_t)iw * 3, out, (size_t)ps * 3, err);
}

int pgd_patcher_read(pgd_patcher *p, const uint32_t *cells, size_t n, uint8_t *out, pgd_err *err)
{
    const pgd_geom *g = &p->geom;
    size_t patch_bytes = (size_t)g->spec.patch_size * g->spec.patch_size * 3;
    for (size_t i = 0; i < n; i++)
        if (cells[2 * i] >= g->grid_m || cells[2 * i + 1] >= g->grid_n)
            return pgd_fail(err, PGD_EINVAL, "%s: cell %zu (row %u, column %u) is outside the %u x %u grid",
                            p->info->path, i, cells[2 * i], cells[2 * i + 1], g->grid_m, g->grid_n);
    if (g->spec.kind == PGD_GEOM_FIT) {
        if (!p->fit && build_fit(p, err) != 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            fit_patch(p, cells[2 * i], cells[2 * i + 1], out + i * patch_bytes);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (native_patch(p, cells[2 * i], cells[2 * i + 1], out + i * patch_bytes, err) != 0)
            return -1;
    return 0;
}
