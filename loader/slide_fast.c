/* slide_fast.c: does a slide qualify for the fast path? Map OpenSlide's levels to tiled JPEG TIFF directories. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "slide_fast.h"

typedef pgd_fast_msg tiff_msg;

static int on_tiff_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)tif, (void)module;
    tiff_msg *m = user;
    if (!m->set)
        vsnprintf(m->text, sizeof m->text, fmt, ap);
    m->set = 1;
    return 1;
}

static int on_tiff_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
    return 1; /* unknown tags and the like: OpenSlide already accepted the file */
}

static const char *compression_name(uint16_t c)
{
    switch (c) {
    case COMPRESSION_NONE: return "none";
    case COMPRESSION_LZW: return "LZW";
    case COMPRESSION_OJPEG: return "old-style JPEG";
    case COMPRESSION_JPEG: return "JPEG";
    case COMPRESSION_ADOBE_DEFLATE:
    case COMPRESSION_DEFLATE: return "deflate";
    case COMPRESSION_PACKBITS: return "PackBits";
    case 33003:
    case 33005: return "Aperio JPEG 2000";
    case COMPRESSION_JP2000: return "JPEG 2000";
    case COMPRESSION_LZMA: return "LZMA";
    case COMPRESSION_ZSTD: return "zstd";
    case COMPRESSION_WEBP: return "WebP";
    default: return "unknown";
    }
}

/* The directory's facts; "" in why when it is a JPEG level the fast path reads. */
static void describe_dir(TIFF *tif, pgd_fast_level *fl, char *codec, size_t ccap, char *why, size_t wcap)
{
    uint16_t comp = 0, photo = 0, bps = 0, spp = 0, planar = PLANARCONFIG_CONTIG, sub_h = 2, sub_v = 2;
    TIFFGetField(tif, TIFFTAG_COMPRESSION, &comp);
    TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photo);
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
    if (photo == PHOTOMETRIC_YCBCR)
        TIFFGetFieldDefaulted(tif, TIFFTAG_YCBCRSUBSAMPLING, &sub_h, &sub_v);
    const char *space = photo == PHOTOMETRIC_YCBCR ? "YCbCr" : photo == PHOTOMETRIC_RGB ? "RGB" : "other colour";
    if (comp == COMPRESSION_JPEG && photo == PHOTOMETRIC_YCBCR)
        snprintf(codec, ccap, "JPEG YCbCr 4:%d:%d", sub_h == 1 ? 4 : sub_h == 2 ? 2 : 1,
                 sub_v == 1 ? (sub_h == 1 ? 4 : 2) : 0);
    else if (comp == COMPRESSION_JPEG)
        snprintf(codec, ccap, "JPEG %s", space);
    else
        snprintf(codec, ccap, "%s %s (compression %u)", compression_name(comp), space, comp);
    why[0] = 0;
    if (comp != COMPRESSION_JPEG)
        snprintf(why, wcap, "%s compression (%u)", compression_name(comp), comp);
    else if (bps != 8 || spp != 3 || planar != PLANARCONFIG_CONTIG)
        snprintf(why, wcap, "JPEG with %u samples of %u bits, planar config %u", spp, bps, planar);
    else if (photo != PHOTOMETRIC_YCBCR && photo != PHOTOMETRIC_RGB)
        snprintf(why, wcap, "JPEG with photometric %u", photo);
    fl->rgb = photo == PHOTOMETRIC_RGB;
}

/* Copy the tile table and JPEG tables of the current directory into fl (its tile size and count are known). */
static int take_tables(TIFF *tif, pgd_fast_level *fl, const char *path, pgd_err *err)
{
    uint32_t tw = fl->tw, th = fl->th;
    uint64_t *off = NULL, *len = NULL;
    if (!tw || !th || !fl->ntiles || !TIFFGetField(tif, TIFFTAG_TILEOFFSETS, &off) ||
        !TIFFGetField(tif, TIFFTAG_TILEBYTECOUNTS, &len) || !off || !len)
        return pgd_fail(err, PGD_EFORMAT, "%s: directory %d: no tile table", path, fl->dir);
    fl->off = malloc(fl->ntiles * sizeof *fl->off);
    fl->len = malloc(fl->ntiles * sizeof *fl->len);
    if (!fl->off || !fl->len)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for %u tile offsets", path, fl->ntiles);
    memcpy(fl->off, off, fl->ntiles * sizeof *off);
    memcpy(fl->len, len, fl->ntiles * sizeof *len);
    uint32_t n = 0;
    void *tables = NULL;
    if (TIFFGetField(tif, TIFFTAG_JPEGTABLES, &n, &tables) && tables && n >= 4) {
        if (!(fl->tables = malloc(n)))
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
        memcpy(fl->tables, tables, n);
        fl->tables_len = n;
    }
    return 0;
}

#define MAX_DIRS 256

/* Find the tiled directory of each OpenSlide level (by its dimensions) and check it. */
static int map_levels(pgd_slide *s, TIFF *tif, pgd_fast_state *st, char *why, size_t cap, pgd_err *err)
{
    uint32_t dw[MAX_DIRS], dh[MAX_DIRS];
    int ndirs = 0, used[MAX_DIRS] = {0};
    do { /* one pass over the directories: size, or 0 x 0 when not tiled */
        dw[ndirs] = dh[ndirs] = 0;
        if (TIFFIsTiled(tif)) {
            TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &dw[ndirs]);
            TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &dh[ndirs]);
        }
    } while (++ndirs < MAX_DIRS && TIFFReadDirectory(tif));
    for (int l = 0; l < s->info.nlevels; l++) {
        const pgd_slide_level *lv = &s->info.level[l];
        int found = -1;
        for (int d = 0; found < 0 && d < ndirs; d++)
            if (!used[d] && dw[d] == lv->w && dh[d] == lv->h)
                found = d;
        if (found < 0 || !TIFFSetDirectory(tif, (tdir_t)found)) {
            snprintf(why, cap, "level %d (%lldx%lld) matches no tiled TIFF directory", l, (long long)lv->w,
                     (long long)lv->h);
            return 0;
        }
        used[found] = 1;
        pgd_fast_level *fl = &st->lv[l];
        fl->dir = found;
        char codec[96], reason[128];
        describe_dir(tif, fl, codec, sizeof codec, reason, sizeof reason);
        if (l == 0)
            snprintf(s->info.codec, sizeof s->info.codec, "%s", codec);
        if (reason[0]) {
            snprintf(why, cap, "level %d is %s", l, reason);
            return 0;
        }
        uint32_t tw = 0, th = 0; /* the tile table itself is read when the level is first read */
        TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tw);
        TIFFGetField(tif, TIFFTAG_TILELENGTH, &th);
        fl->tw = tw, fl->th = th;
        fl->ntiles = TIFFNumberOfTiles(tif);
        if (!tw || !th || !fl->ntiles)
            return pgd_fail(err, PGD_EFORMAT, "%s: directory %d: no tile table", s->path, fl->dir);
        fl->tx_n = (uint32_t)((lv->w + fl->tw - 1) / fl->tw);
        fl->ty_n = (uint32_t)((lv->h + fl->th - 1) / fl->th);
        if ((uint64_t)fl->tx_n * fl->ty_n > fl->ntiles) {
            snprintf(why, cap, "level %d has %u tiles, fewer than its size needs", l, fl->ntiles);
            return 0;
        }
    }
    return 1;
}

int pgd_slide_fast_attach(pgd_slide *s, char *why, size_t cap, pgd_err *err)
{
    if (strcmp(s->vendor, "generic-tiff") != 0 && strcmp(s->vendor, "aperio") != 0) {
        snprintf(why, cap, "vendor '%s' is not a generic TIFF or Aperio SVS", s->vendor);
        return 0;
    }
    pgd_fast_state *st = calloc(1, sizeof *st);
    TIFFOpenOptions *o = TIFFOpenOptionsAlloc();
    TIFF *tif = NULL;
    int rc = -1;
    if (!st || !o) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", s->path);
        goto done;
    }
    st->fd = -1;
    TIFFOpenOptionsSetErrorHandlerExtR(o, on_tiff_error, &st->msg);
    TIFFOpenOptionsSetWarningHandlerExtR(o, on_tiff_warning, NULL);
    /* D: the tile tables are read when asked for (level by level, on first use), not with every directory */
    if (!(tif = TIFFOpenExt(s->path, "rmD", o))) {
        snprintf(why, cap, "libtiff cannot open it: %s", st->msg.set ? st->msg.text : "unknown error");
        rc = 0;
        goto done;
    }
    st->tif = tif;
    if ((rc = map_levels(s, tif, st, why, cap, err)) != 1)
        goto done;
    if ((rc = pgd_slide_fast_start(s, st, err)) == 0) {
        st = NULL; /* the backend owns it now (and the TIFF) */
        rc = 1;
    }
done:
    if (o)
        TIFFOpenOptionsFree(o);
    pgd_slide_fast_free(st);
    return rc;
}

int pgd_slide_fast_tables(pgd_slide *s, pgd_fast_state *st, int l, pgd_err *err)
{
    pgd_fast_level *fl = &st->lv[l];
    if (fl->off)
        return 0;
    st->msg.set = 0;
    if (!TIFFSetDirectory(st->tif, (tdir_t)fl->dir))
        return pgd_fail(err, PGD_EFORMAT, "%s: directory %d: %s", s->path, fl->dir,
                        st->msg.set ? st->msg.text : "cannot be read again");
    if (take_tables(st->tif, fl, s->path, err) != 0) {
        free(fl->off), free(fl->len), free(fl->tables);
        fl->off = fl->len = NULL, fl->tables = NULL, fl->tables_len = 0;
        return -1;
    }
    return 0;
}

int pgd_slide_tiff_error(const char *path, char *msg, size_t cap)
{
    tiff_msg m = {{0}, 0};
    TIFFOpenOptions *o = TIFFOpenOptionsAlloc();
    if (!o)
        return -1;
    TIFFOpenOptionsSetErrorHandlerExtR(o, on_tiff_error, &m);
    TIFFOpenOptionsSetWarningHandlerExtR(o, on_tiff_warning, NULL);
    TIFF *tif = TIFFOpenExt(path, "rm", o);
    if (tif)
        TIFFClose(tif);
    TIFFOpenOptionsFree(o);
    if (!m.set)
        return -1;
    size_t n = strlen(path);
    const char *text = m.text;
    if (strncmp(text, path, n) == 0 && text[n] == ':') /* libtiff often starts with the file name */
        text += n + (text[n + 1] == ' ' ? 2 : 1);
    snprintf(msg, cap, "%s", text);
    return 0;
}
