/* slide.c: open a slide and pick its backend, what the loader knows about it, clipped and white-padded reads. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "slide_priv.h"

static const char *const backend_names[] = {"auto", "openslide", "fast", "image"};

const char *pgd_slide_backend_name(pgd_slide_backend b)
{
    return (unsigned)b < sizeof backend_names / sizeof *backend_names ? backend_names[b] : "?";
}

int pgd_slide_backend_parse(const char *s, pgd_slide_backend *out)
{
    for (size_t i = 0; i < sizeof backend_names / sizeof *backend_names; i++)
        if (strcmp(s, backend_names[i]) == 0) {
            *out = (pgd_slide_backend)i;
            return 0;
        }
    return -1;
}

void pgd_slide_composite(const uint32_t *argb, size_t n, const uint8_t bg[3], uint8_t *rgb)
{
    for (size_t i = 0; i < n; i++, rgb += 3) {
        uint32_t p = argb[i], a = p >> 24;
        uint32_t c[3] = {(p >> 16) & 255, (p >> 8) & 255, p & 255};
        if (a == 255) {
            rgb[0] = (uint8_t)c[0], rgb[1] = (uint8_t)c[1], rgb[2] = (uint8_t)c[2];
            continue;
        }
        for (int k = 0; k < 3; k++) {
            uint32_t v = c[k] + ((255 - a) * bg[k] + 127) / 255;
            rgb[k] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

/* ---- opening ------------------------------------------------------------------------------------ */

/* "jpeg", "png" or NULL from the first bytes of the file. */
static const char *image_kind(const unsigned char *m, size_t n)
{
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 3 && m[0] == 0xff && m[1] == 0xd8 && m[2] == 0xff)
        return "jpeg";
    if (n >= 8 && memcmp(m, png, 8) == 0)
        return "png";
    return NULL;
}

static int is_tiff(const unsigned char *m, size_t n)
{
    return n >= 4 && ((m[0] == 'I' && m[1] == 'I' && (m[2] == 42 || m[2] == 43) && m[3] == 0) ||
                      (m[0] == 'M' && m[1] == 'M' && m[2] == 0 && (m[3] == 42 || m[3] == 43)));
}

/* Check that path is a non-empty readable file; sets *kind for plain images and *tiff for TIFF magic. */
static int sniff(const char *path, const char **kind, int *tiff, pgd_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "open %s", path);
    if (S_ISDIR(st.st_mode))
        return pgd_fail(err, PGD_EINVAL, "%s: is a folder, not a slide", path);
    if (st.st_size == 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: empty file", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "open %s", path);
    unsigned char m[8];
    ssize_t n = read(fd, m, sizeof m);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return pgd_fail_errno(err, PGD_EIO, "read %s", path);
    }
    *kind = image_kind(m, (size_t)n);
    *tiff = is_tiff(m, (size_t)n);
    return 0;
}

static int open_openslide(pgd_slide *s, int tiff, pgd_err *err)
{
    const char *vendor = openslide_detect_vendor(s->path);
    char why[256];
    if (!vendor && tiff && pgd_slide_tiff_error(s->path, why, sizeof why) == 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: a TIFF file OpenSlide %s cannot open: libtiff: %s", s->path,
                        openslide_get_version(), why);
    if (!vendor)
        return pgd_fail(err, PGD_EFORMAT, "%s: not a slide: OpenSlide %s does not recognise its format", s->path,
                        openslide_get_version());
    snprintf(s->vendor, sizeof s->vendor, "%s", vendor);
    s->osr = openslide_open(s->path);
    if (!s->osr)
        return pgd_fail(err, PGD_EFORMAT, "%s: not a slide: OpenSlide %s cannot open it", s->path,
                        openslide_get_version());
    const char *e = openslide_get_error(s->osr);
    if (e)
        return pgd_fail(err, PGD_EFORMAT, "%s: openslide: %s", s->path, e);
    return pgd_slide_os_info(s, err);
}

pgd_slide *pgd_slide_open(const char *path, pgd_slide_backend want, pgd_err *err)
{
    const char *kind = NULL;
    int tiff = 0;
    if ((unsigned)want > PGD_SLIDE_IMAGE) {
        pgd_fail(err, PGD_EINVAL, "%s: unknown backend %d", path, (int)want);
        return NULL;
    }
    if (sniff(path, &kind, &tiff, err) != 0)
        return NULL;
    pgd_slide *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    s->info.path = s->path;
    s->info.vendor = s->vendor;
    s->info.mpp_source = "none";
    memset(s->info.background, 255, 3);
    if (kind) {
        if (want != PGD_SLIDE_AUTO && want != PGD_SLIDE_IMAGE) {
            pgd_fail(err, PGD_EINVAL, "%s: a plain %s file: only the image backend reads it", path, kind);
            goto fail;
        }
        if (pgd_slide_image_attach(s, kind, err) != 0)
            goto fail;
        return s;
    }
    if (want == PGD_SLIDE_IMAGE) {
        pgd_fail(err, PGD_EINVAL, "%s: not a plain JPEG or PNG file", path);
        goto fail;
    }
    if (open_openslide(s, tiff, err) != 0)
        goto fail;
    char why[200] = "";
    int fast = want == PGD_SLIDE_OPENSLIDE ? 0 : pgd_slide_fast_attach(s, why, sizeof why, err);
    if (fast < 0)
        goto fail;
    if (!fast && want == PGD_SLIDE_FAST) {
        pgd_fail(err, PGD_EINVAL, "%s: the fast path cannot read it: %s", path, why);
        goto fail;
    }
    if (!fast) {
        if (want == PGD_SLIDE_OPENSLIDE)
            snprintf(s->info.why, sizeof s->info.why, "OpenSlide was asked for");
        else
            snprintf(s->info.why, sizeof s->info.why, "no fast path: %s", why);
        if (pgd_slide_os_attach(s, err) != 0)
            goto fail;
    }
    return s;
fail:
    pgd_slide_close(&s);
    return NULL;
}

void pgd_slide_close(pgd_slide **sp)
{
    pgd_slide *s = *sp;
    if (!s)
        return;
    if (s->ops)
        s->ops->close(s);
    if (s->osr)
        openslide_close(s->osr);
    free(s->path);
    free(s);
    *sp = NULL;
}

const pgd_slide_info *pgd_slide_get_info(const pgd_slide *s)
{
    return &s->info;
}

/* ---- reading ------------------------------------------------------------------------------------ */

void pgd_slide_scaled_size(const pgd_slide *s, int level, int den, int64_t *w, int64_t *h)
{
    const pgd_slide_level *l = &s->info.level[level];
    *w = (l->w + den - 1) / den;
    *h = (l->h + den - 1) / den;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static void fill_white(uint8_t *row, size_t pixels)
{
    memset(row, 255, pixels * 3);
}

int pgd_slide_read(pgd_slide *s, int level, int den, int64_t x, int64_t y, uint32_t w, uint32_t h,
                   const pgd_slide_rect *clip, uint8_t *rgb, size_t stride, pgd_err *err)
{
    if (level < 0 || level >= s->info.nlevels)
        return pgd_fail(err, PGD_EINVAL, "%s: level %d does not exist (the slide has %d)", s->path, level,
                        s->info.nlevels);
    if ((den != 1 && den != 2 && den != 4 && den != 8) || den > s->info.level[level].max_den)
        return pgd_fail(err, PGD_EINVAL, "%s: level %d cannot be read at scale 1/%d", s->path, level, den);
    int64_t lw, lh;
    pgd_slide_scaled_size(s, level, den, &lw, &lh);
    int64_t x0 = max64(x, 0), y0 = max64(y, 0), x1 = min64(x + w, lw), y1 = min64(y + h, lh);
    if (clip) {
        x0 = max64(x0, clip->x), y0 = max64(y0, clip->y);
        x1 = min64(x1, clip->x + clip->w), y1 = min64(y1, clip->y + clip->h);
    }
    if (x1 <= x0 || y1 <= y0) {
        for (uint32_t r = 0; r < h; r++)
            fill_white(rgb + r * stride, w);
        return 0;
    }
    for (uint32_t r = 0; r < h; r++) {
        uint8_t *row = rgb + r * stride;
        int64_t yy = y + r;
        if (yy < y0 || yy >= y1) {
            fill_white(row, w);
            continue;
        }
        fill_white(row, (size_t)(x0 - x));
        fill_white(row + (size_t)(x1 - x) * 3, (size_t)(x + w - x1));
    }
    uint8_t *inner = rgb + (size_t)(y0 - y) * stride + (size_t)(x0 - x) * 3;
    return s->ops->read(s, level, den, x0, y0, (uint32_t)(x1 - x0), (uint32_t)(y1 - y0), inner, stride, err);
}

/* ---- level choice ------------------------------------------------------------------------------- */

int pgd_slide_level_for_side(const pgd_slide_info *info, int64_t side)
{
    int best = 0;
    int64_t best_long = 0;
    for (int l = 0; l < info->nlevels; l++) {
        int64_t lng = max64(info->level[l].w, info->level[l].h);
        if (lng >= side && (best_long == 0 || lng < best_long))
            best = l, best_long = lng;
    }
    return best;
}

double pgd_slide_level_mpp(const pgd_slide_info *info, int level)
{
    if (info->mpp_x <= 0)
        return 0;
    return info->mpp_x * (double)info->level[0].w / (double)info->level[level].w;
}

int pgd_slide_level_for_mpp(const pgd_slide_info *info, double mpp, pgd_err *err)
{
    if (info->mpp_x <= 0)
        return pgd_fail(err, PGD_EINVAL, "%s: the slide has no mpp (no openslide.mpp-x or resolution tags): "
                        "choose a level instead", info->path);
    if (!(mpp > 0) || !isfinite(mpp))
        return pgd_fail(err, PGD_EINVAL, "%s: mpp %g is not a positive number", info->path, mpp);
    int best = 0;
    double best_mpp = 0;
    for (int l = 0; l < info->nlevels; l++) {
        double m = pgd_slide_level_mpp(info, l);
        if (m <= mpp * (1 + 1e-9) && m > best_mpp)
            best = l, best_mpp = m;
    }
    return best;
}
