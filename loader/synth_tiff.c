/* synth_tiff.c: a streaming writer of pyramidal, tiled, JPEG-compressed BigTIFF (libtiff + TurboJPEG). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "synth_priv.h"

/* Layout written (OpenSlide 3.4.1 reads it as "generic-tiff"): one directory per level, level 0 first, each
 * tiled, COMPRESSION_JPEG with PHOTOMETRIC_YCBCR; every tile is a complete baseline JPEG stream made by
 * TurboJPEG (no JPEGTables tag), so a reader can hand a raw tile straight to a JPEG decoder. Levels >= 1
 * carry SUBFILETYPE = reduced image. Resolution tags are pixels per centimetre. */

typedef struct tiff_level {
    uint32_t w, h;         /* size in pixels */
    uint32_t tiles_x, tiles_y;
    uint8_t *band;         /* one row of tiles: tile x w x 3 */
    uint32_t rows;         /* rows filled in band */
    uint32_t y;            /* level row of band's first row */
    uint64_t *off;         /* levels >= 1: where each encoded tile sits in the spool */
    uint32_t *len;
    uint8_t *capture;      /* caller's copy of the whole level, or NULL */
} tiff_level;

struct pgd_synth_pyramid {
    TIFF *tif;
    TIFFOpenOptions *topts;
    char tiff_msg[256]; /* first libtiff error */
    int tiff_failed;
    char *path;
    char *desc;
    pgd_synth_tiff_opts o;
    int nlevels;
    tiff_level lv[PGD_SYNTH_MAX_LEVELS];
    tjhandle tj;
    unsigned char *jpeg;
    unsigned long jpeg_cap;
    uint8_t *tile;   /* tile x tile x 3, for tiles cut by the right or bottom edge */
    int spool;       /* unlinked temporary file holding the encoded tiles of levels >= 1, or -1 */
    uint64_t spool_size;
    size_t buffer_bytes;
    int failed; /* sticky: after a failed push every later call fails */
};

/* ---- options and geometry ----------------------------------------------------------------------- */

int pgd_synth_tiff_opts_check(pgd_synth_tiff_opts *o, pgd_err *err)
{
    if (o->tile == 0)
        o->tile = 256;
    if (o->tile < 240 || o->tile > 1024)
        return pgd_fail(err, PGD_EINVAL, "tile: %u is outside 240..1024", o->tile);
    if (o->tile % 16)
        return pgd_fail(err, PGD_EINVAL, "tile: %u is not a multiple of 16", o->tile);
    if (o->quality == 0)
        o->quality = 85;
    if (o->quality < 1 || o->quality > 100)
        return pgd_fail(err, PGD_EINVAL, "quality: %d is outside 1..100", o->quality);
    if (o->mpp == 0)
        o->mpp = 0.5;
    if (!(o->mpp > 0) || !isfinite(o->mpp) || o->mpp > 1e6)
        return pgd_fail(err, PGD_EINVAL, "mpp: %g is not a positive number of microns per pixel", o->mpp);
    if (o->levels < 0 || o->levels > PGD_SYNTH_MAX_LEVELS)
        return pgd_fail(err, PGD_EINVAL, "levels: %d is outside 1..%d (or 0: automatic)", o->levels,
                        PGD_SYNTH_MAX_LEVELS);
    if (o->subsampling == 0)
        o->subsampling = 420;
    if (o->subsampling != 420 && o->subsampling != 444)
        return pgd_fail(err, PGD_EINVAL, "subsampling: %d is not 420 or 444", o->subsampling);
    return 0;
}

void pgd_synth_level_size(uint32_t w, uint32_t h, int level, uint32_t *lw, uint32_t *lh)
{
    for (int l = 0; l < level; l++) {
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    *lw = w;
    *lh = h;
}

int pgd_synth_level_count(uint32_t w, uint32_t h, uint32_t tile, int levels, pgd_err *err)
{
    int most = 1, fit = 0;
    for (uint32_t a = w, b = h; a > 1 || b > 1; most++) {
        if (!fit && a <= tile && b <= tile)
            fit = most;
        a = (a + 1) / 2;
        b = (b + 1) / 2;
    }
    if (!fit)
        fit = most;
    if (levels <= 0)
        return fit;
    if (levels > most || levels > PGD_SYNTH_MAX_LEVELS)
        return pgd_fail(err, PGD_EINVAL, "levels: %d is more than the %d levels a %ux%u slide can have", levels,
                        most < PGD_SYNTH_MAX_LEVELS ? most : PGD_SYNTH_MAX_LEVELS, w, h);
    return levels;
}

/* ---- libtiff plumbing --------------------------------------------------------------------------- */

static int on_tiff_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)tif;
    pgd_synth_pyramid *p = user;
    if (!p->tiff_failed) {
        int n = snprintf(p->tiff_msg, sizeof p->tiff_msg, "%s: ", module ? module : "libtiff");
        if (n > 0 && (size_t)n < sizeof p->tiff_msg)
            vsnprintf(p->tiff_msg + n, sizeof p->tiff_msg - (size_t)n, fmt, ap);
    }
    p->tiff_failed = 1;
    return 1;
}

static int on_tiff_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
    return 1; /* nothing we write should warn; stay quiet */
}

static int tiff_fail(pgd_synth_pyramid *p, const char *what, pgd_err *err)
{
    return pgd_fail(err, PGD_EIO, "%s: %s: %s", p->path, what, p->tiff_failed ? p->tiff_msg : "libtiff failed");
}

/* Tags of the directory of level l (the current one). */
static int set_tags(pgd_synth_pyramid *p, int l, pgd_err *err)
{
    const tiff_level *lv = &p->lv[l];
    double mx = p->o.mpp * ((double)p->lv[0].w / lv->w), my = p->o.mpp * ((double)p->lv[0].h / lv->h);
    uint16_t sub = p->o.subsampling == 444 ? 1 : 2;
    int ok = TIFFSetField(p->tif, TIFFTAG_SUBFILETYPE, (uint32_t)(l ? FILETYPE_REDUCEDIMAGE : 0)) &&
             TIFFSetField(p->tif, TIFFTAG_IMAGEWIDTH, lv->w) && TIFFSetField(p->tif, TIFFTAG_IMAGELENGTH, lv->h) &&
             TIFFSetField(p->tif, TIFFTAG_TILEWIDTH, p->o.tile) &&
             TIFFSetField(p->tif, TIFFTAG_TILELENGTH, p->o.tile) &&
             TIFFSetField(p->tif, TIFFTAG_BITSPERSAMPLE, 8) && TIFFSetField(p->tif, TIFFTAG_SAMPLESPERPIXEL, 3) &&
             TIFFSetField(p->tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG) &&
             TIFFSetField(p->tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG) &&
             TIFFSetField(p->tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR) &&
             TIFFSetField(p->tif, TIFFTAG_YCBCRSUBSAMPLING, sub, sub) &&
             TIFFSetField(p->tif, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER) &&
             TIFFSetField(p->tif, TIFFTAG_XRESOLUTION, 1e4 / mx) &&
             TIFFSetField(p->tif, TIFFTAG_YRESOLUTION, 1e4 / my) &&
             TIFFSetField(p->tif, TIFFTAG_SOFTWARE, "pgd-synth");
    if (ok && l == 0 && p->desc)
        ok = TIFFSetField(p->tif, TIFFTAG_IMAGEDESCRIPTION, p->desc);
    if (!ok)
        return tiff_fail(p, "setting tags", err);
    /* libtiff's JPEG codec reserves a JPEGTables tag for the encoder it would run; tiles are written raw and
     * complete, so drop it (an all-zero table would make readers fail). */
    TIFFUnsetField(p->tif, TIFFTAG_JPEGTABLES);
    return 0;
}

/* ---- the spool of lower-level tiles ------------------------------------------------------------- */

static int spool_append(pgd_synth_pyramid *p, const void *buf, size_t n, pgd_err *err)
{
    const char *c = buf;
    while (n > 0) {
        ssize_t k = pwrite(p->spool, c, n, (off_t)p->spool_size);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: writing the level spool", p->path);
        c += k;
        n -= (size_t)k;
        p->spool_size += (uint64_t)k;
    }
    return 0;
}

static int spool_read(pgd_synth_pyramid *p, uint64_t off, void *buf, size_t n, pgd_err *err)
{
    char *c = buf;
    while (n > 0) {
        ssize_t k = pread(p->spool, c, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 ? pgd_fail(err, PGD_EIO, "%s: level spool is short", p->path)
                          : pgd_fail_errno(err, PGD_EIO, "%s: reading the level spool", p->path);
        c += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int spool_open(pgd_synth_pyramid *p, pgd_err *err)
{
    size_t n = strlen(p->path) + 16;
    char *tmpl = malloc(n);
    if (!tmpl)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", p->path);
    snprintf(tmpl, n, "%s.spoolXXXXXX", p->path);
    p->spool = mkstemp(tmpl);
    if (p->spool < 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: creating the level spool", tmpl);
        free(tmpl);
        return -1;
    }
    /* Unlinked at once: it vanishes with the process, whatever happens. */
    int rc = unlink(tmpl);
    if (rc < 0)
        pgd_fail_errno(err, PGD_EIO, "%s: unlinking the level spool", tmpl);
    free(tmpl);
    return rc;
}

/* ---- encoding ----------------------------------------------------------------------------------- */

/* Encode tile tx of level l's band into p->jpeg; *size gets its length. Tiles cut by the level's edge are
 * padded by repeating the last column and row (OpenSlide clips them; repeating keeps JPEG ringing away). */
static int encode_tile(pgd_synth_pyramid *p, int l, uint32_t tx, unsigned long *size, pgd_err *err)
{
    tiff_level *lv = &p->lv[l];
    uint32_t t = p->o.tile, x0 = tx * t, cw = lv->w - x0 < t ? lv->w - x0 : t;
    const uint8_t *src = lv->band + (size_t)x0 * 3;
    int pitch = (int)(lv->w * 3);
    if (cw < t || lv->rows < t) {
        for (uint32_t r = 0; r < t; r++) {
            uint8_t *d = p->tile + (size_t)r * t * 3;
            if (r < lv->rows) {
                memcpy(d, src + (size_t)r * pitch, (size_t)cw * 3);
                for (uint32_t c = cw; c < t; c++)
                    memcpy(d + 3 * c, d + 3 * (cw - 1), 3);
            } else {
                memcpy(d, d - (size_t)t * 3, (size_t)t * 3);
            }
        }
        src = p->tile;
        pitch = (int)(t * 3);
    }
    *size = p->jpeg_cap;
    int samp = p->o.subsampling == 444 ? TJSAMP_444 : TJSAMP_420;
    if (tjCompress2(p->tj, src, (int)t, pitch, (int)t, TJPF_RGB, &p->jpeg, size, samp, p->o.quality,
                    TJFLAG_NOREALLOC) != 0)
        return pgd_fail(err, PGD_EIO, "%s: level %d tile %u,%u: jpeg: %s", p->path, l, tx, lv->y / t,
                        tjGetErrorStr2(p->tj));
    return 0;
}

static int flush_level(pgd_synth_pyramid *p, int l, pgd_err *err);

/* Halve level l's band into the next level's band; flush that one when it is full or complete. */
static int cascade(pgd_synth_pyramid *p, int l, pgd_err *err)
{
    tiff_level *a = &p->lv[l], *b = &p->lv[l + 1];
    size_t bstride = (size_t)b->w * 3;
    pgd_synth_downsample2(a->band, a->w, a->rows, (size_t)a->w * 3, b->band + b->rows * bstride, bstride);
    b->rows += (a->rows + 1) / 2;
    if (b->rows == p->o.tile || b->y + b->rows == b->h)
        return flush_level(p, l + 1, err);
    return 0;
}

/* Encode level l's band as one row of tiles (level 0 into the TIFF, the others into the spool). */
static int flush_level(pgd_synth_pyramid *p, int l, pgd_err *err)
{
    tiff_level *lv = &p->lv[l];
    uint32_t trow = lv->y / p->o.tile;
    for (uint32_t tx = 0; tx < lv->tiles_x; tx++) {
        unsigned long size;
        if (encode_tile(p, l, tx, &size, err) < 0)
            return -1;
        uint32_t idx = trow * lv->tiles_x + tx;
        if (l == 0) {
            if (TIFFWriteRawTile(p->tif, idx, p->jpeg, (tmsize_t)size) != (tmsize_t)size)
                return tiff_fail(p, "writing a level 0 tile", err);
        } else {
            lv->off[idx] = p->spool_size;
            lv->len[idx] = (uint32_t)size;
            if (spool_append(p, p->jpeg, size, err) < 0)
                return -1;
        }
    }
    if (lv->capture)
        memcpy(lv->capture + (size_t)lv->y * lv->w * 3, lv->band, (size_t)lv->rows * lv->w * 3);
    if (l + 1 < p->nlevels && cascade(p, l, err) < 0)
        return -1;
    lv->y += lv->rows;
    lv->rows = 0;
    return 0;
}

/* ---- the public writer -------------------------------------------------------------------------- */

static void pyramid_free(pgd_synth_pyramid *p)
{
    if (!p)
        return;
    if (p->tif)
        TIFFClose(p->tif);
    if (p->topts)
        TIFFOpenOptionsFree(p->topts);
    if (p->spool >= 0)
        close(p->spool);
    for (int l = 0; l < p->nlevels; l++) {
        free(p->lv[l].band);
        free(p->lv[l].off);
        free(p->lv[l].len);
    }
    if (p->tj)
        tjDestroy(p->tj);
    tjFree(p->jpeg);
    free(p->tile);
    free(p->path);
    free(p->desc);
    free(p);
}

static int pyramid_alloc(pgd_synth_pyramid *p, pgd_err *err)
{
    uint32_t t = p->o.tile;
    for (int l = 0; l < p->nlevels; l++) {
        tiff_level *lv = &p->lv[l];
        pgd_synth_level_size(p->lv[0].w, p->lv[0].h, l, &lv->w, &lv->h);
        lv->tiles_x = (lv->w + t - 1) / t;
        lv->tiles_y = (lv->h + t - 1) / t;
        size_t band = (size_t)t * lv->w * 3;
        lv->band = malloc(band);
        p->buffer_bytes += band;
        if (!lv->band)
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a %ux%u band", p->path, lv->w, t);
        if (l > 0) {
            size_t n = (size_t)lv->tiles_x * lv->tiles_y;
            lv->off = calloc(n, sizeof *lv->off);
            lv->len = calloc(n, sizeof *lv->len);
            if (!lv->off || !lv->len)
                return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for the tile index", p->path);
        }
    }
    p->tile = malloc((size_t)t * t * 3);
    p->tj = tjInitCompress();
    p->jpeg_cap = tjBufSize((int)t, (int)t, p->o.subsampling == 444 ? TJSAMP_444 : TJSAMP_420);
    p->jpeg = p->jpeg_cap != (unsigned long)-1 ? tjAlloc((int)p->jpeg_cap) : NULL;
    p->buffer_bytes += (size_t)t * t * 3 + p->jpeg_cap;
    if (!p->tile || !p->tj || !p->jpeg)
        return pgd_fail(err, PGD_ENOMEM, "%s: cannot set up the jpeg encoder", p->path);
    return 0;
}

pgd_synth_pyramid *pgd_synth_pyramid_open(const char *path, uint32_t w, uint32_t h, const pgd_synth_tiff_opts *o,
                                          const char *desc, pgd_err *err)
{
    pgd_synth_tiff_opts chk = *o;
    if (pgd_synth_tiff_opts_check(&chk, err) < 0)
        return NULL;
    if (w < 1 || h < 1 || w > PGD_SYNTH_MAX_DIM || h > PGD_SYNTH_MAX_DIM) {
        pgd_fail(err, PGD_EINVAL, "%s: %ux%u is not a slide size (1..%u)", path, w, h, PGD_SYNTH_MAX_DIM);
        return NULL;
    }
    int n = pgd_synth_level_count(w, h, chk.tile, chk.levels, err);
    if (n < 0)
        return NULL;
    pgd_synth_pyramid *p = calloc(1, sizeof *p);
    if (!p) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    p->spool = -1;
    p->o = chk;
    p->nlevels = n;
    p->lv[0].w = w;
    p->lv[0].h = h;
    p->path = strdup(path);
    p->desc = desc ? strdup(desc) : NULL;
    if (!p->path || (desc && !p->desc)) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (pyramid_alloc(p, err) < 0)
        goto fail;
    if (n > 1 && spool_open(p, err) < 0)
        goto fail;
    p->topts = TIFFOpenOptionsAlloc();
    if (!p->topts) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    TIFFOpenOptionsSetErrorHandlerExtR(p->topts, on_tiff_error, p);
    TIFFOpenOptionsSetWarningHandlerExtR(p->topts, on_tiff_warning, p);
    errno = 0;
    p->tif = TIFFOpenExt(path, "w8", p->topts);
    if (!p->tif) {
        if (errno)
            pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: cannot create", path);
        else
            tiff_fail(p, "cannot create", err);
        goto fail;
    }
    if (set_tags(p, 0, err) < 0)
        goto fail;
    return p;
fail:
    pyramid_free(p);
    return NULL;
}

uint8_t *pgd_synth_pyramid_band(pgd_synth_pyramid *p, uint32_t *y, uint32_t *rows, size_t *stride)
{
    tiff_level *lv = &p->lv[0];
    *y = lv->y;
    *rows = lv->h - lv->y < p->o.tile ? lv->h - lv->y : p->o.tile;
    *stride = (size_t)lv->w * 3;
    return lv->band;
}

int pgd_synth_pyramid_push(pgd_synth_pyramid *p, pgd_err *err)
{
    tiff_level *lv = &p->lv[0];
    if (p->failed)
        return pgd_fail(err, PGD_EIO, "%s: an earlier write failed", p->path);
    if (lv->y >= lv->h)
        return pgd_fail(err, PGD_EINVAL, "%s: every row was already pushed", p->path);
    lv->rows = lv->h - lv->y < p->o.tile ? lv->h - lv->y : p->o.tile;
    if (flush_level(p, 0, err) < 0) {
        p->failed = 1;
        return -1;
    }
    return 0;
}

int pgd_synth_pyramid_capture(pgd_synth_pyramid *p, int level, uint8_t *rgb, pgd_err *err)
{
    if (level < 0 || level >= p->nlevels)
        return pgd_fail(err, PGD_EINVAL, "%s: capture: level %d is outside 0..%d", p->path, level, p->nlevels - 1);
    if (p->lv[0].y > 0)
        return pgd_fail(err, PGD_EINVAL, "%s: capture: asked for after the first band", p->path);
    p->lv[level].capture = rgb;
    return 0;
}

int pgd_synth_pyramid_levels(const pgd_synth_pyramid *p)
{
    return p->nlevels;
}

size_t pgd_synth_pyramid_buffer_bytes(const pgd_synth_pyramid *p)
{
    return p->buffer_bytes;
}

/* Copy level l's tiles from the spool into a new directory. */
static int write_spooled_level(pgd_synth_pyramid *p, int l, pgd_err *err)
{
    tiff_level *lv = &p->lv[l];
    if (set_tags(p, l, err) < 0)
        return -1;
    size_t n = (size_t)lv->tiles_x * lv->tiles_y;
    for (size_t i = 0; i < n; i++) {
        if (lv->len[i] > p->jpeg_cap)
            return pgd_fail(err, PGD_ECORRUPT, "%s: level %d tile %zu is larger than any jpeg tile", p->path, l, i);
        if (spool_read(p, lv->off[i], p->jpeg, lv->len[i], err) < 0)
            return -1;
        if (TIFFWriteRawTile(p->tif, (uint32_t)i, p->jpeg, (tmsize_t)lv->len[i]) != (tmsize_t)lv->len[i])
            return tiff_fail(p, "writing a reduced level tile", err);
    }
    if (!TIFFWriteDirectory(p->tif))
        return tiff_fail(p, "writing a directory", err);
    return 0;
}

int pgd_synth_pyramid_close(pgd_synth_pyramid *p, pgd_err *err)
{
    int rc = -1;
    if (p->failed) {
        pgd_fail(err, PGD_EIO, "%s: an earlier write failed", p->path);
        goto done;
    }
    if (p->lv[0].y != p->lv[0].h) {
        pgd_fail(err, PGD_EINVAL, "%s: only %u of %u rows were pushed", p->path, p->lv[0].y, p->lv[0].h);
        goto done;
    }
    if (!TIFFWriteDirectory(p->tif)) {
        tiff_fail(p, "writing a directory", err);
        goto done;
    }
    for (int l = 1; l < p->nlevels; l++)
        if (write_spooled_level(p, l, err) < 0)
            goto done;
    if (!TIFFFlush(p->tif) || p->tiff_failed) {
        tiff_fail(p, "flushing", err);
        goto done;
    }
    TIFFClose(p->tif);
    p->tif = NULL;
    rc = p->tiff_failed ? tiff_fail(p, "closing", err) : 0;
done:
    pyramid_free(p);
    return rc;
}

void pgd_synth_pyramid_abort(pgd_synth_pyramid *p)
{
    pyramid_free(p);
}
