/* slide_fast_read.c: fast-path reads: raw tiles by offset, JPEGTables spliced in, TurboJPEG (DCT-scaled) decode. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tiffio.h>

#include "slide_fast.h"

#define CACHE_BYTES ((size_t)32 << 20) /* decoded tiles kept per slide */
#define TILE_MAX_BYTES (64u << 20)     /* larger stored tiles are refused */

/* APP14 "Adobe" with transform 0: tells libjpeg the three components are RGB, not YCbCr. */
static const uint8_t adobe_rgb[16] = {0xff, 0xee, 0x00, 0x0e, 'A', 'd', 'o', 'b', 'e', 0x00, 0x64, 0, 0, 0, 0, 0};

/* The tile cache of a closed slide, kept for the next slide of this process with the same tile size: a
 * stream of slides (one fit each) then does not page-fault fresh tile buffers for every slide. */
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static pgd_fast_tile *spare_cache;
static int spare_n;
static size_t spare_bytes;

static void cache_free(pgd_fast_tile *c, int n)
{
    for (int i = 0; c && i < n; i++)
        free(c[i].rgb);
    free(c);
}

/* ncache slots of tile_bytes buffers (allocated on first use), all empty: the spare when it matches. */
static pgd_fast_tile *cache_take(int n, size_t tile_bytes)
{
    pgd_fast_tile *c = NULL;
    pthread_mutex_lock(&spare_lock);
    if (spare_cache && spare_n == n && spare_bytes == tile_bytes)
        c = spare_cache, spare_cache = NULL;
    pthread_mutex_unlock(&spare_lock);
    if (!c && !(c = calloc((size_t)n, sizeof *c)))
        return NULL;
    for (int i = 0; i < n; i++)
        c[i].level = -1, c[i].used = 0;
    return c;
}

static void cache_give(pgd_fast_tile *c, int n, size_t tile_bytes)
{
    if (!c)
        return;
    pthread_mutex_lock(&spare_lock);
    pgd_fast_tile *old = spare_cache;
    int old_n = spare_n;
    spare_cache = c, spare_n = n, spare_bytes = tile_bytes;
    pthread_mutex_unlock(&spare_lock);
    cache_free(old, old_n);
}

void pgd_slide_fast_free(pgd_fast_state *st)
{
    if (!st)
        return;
    for (int l = 0; l < PGD_SLIDE_MAX_LEVELS; l++) {
        free(st->lv[l].off);
        free(st->lv[l].len);
        free(st->lv[l].tables);
    }
    cache_give(st->cache, st->ncache, st->tile_bytes);
    free(st->raw);
    free(st->stream);
    if (st->tj)
        tjDestroy(st->tj);
    if (st->fd >= 0)
        close(st->fd);
    if (st->tif)
        TIFFClose(st->tif);
    free(st);
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    uint8_t *p = realloc(*buf, need);
    if (!p)
        return -1;
    *buf = p, *cap = need;
    return 0;
}

static int read_full(int fd, uint8_t *buf, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pread(fd, buf, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO;
            return -1;
        }
        buf += k, n -= (size_t)k, off += (uint64_t)k;
    }
    return 0;
}

/* One JPEG stream from a stored tile: SOI, the level's tables (without their SOI and EOI), an Adobe marker
 * for RGB levels, then the tile after its SOI. A tile that needs neither is used as it is. */
static int splice_tables(pgd_fast_state *st, const pgd_fast_level *fl, size_t n, const uint8_t **out, size_t *out_len)
{
    const uint8_t *raw = st->raw;
    int soi = n >= 2 && raw[0] == 0xff && raw[1] == 0xd8;
    size_t tl = 0;
    const uint8_t *t = NULL;
    if (fl->tables && fl->tables[0] == 0xff && fl->tables[1] == 0xd8) {
        t = fl->tables + 2, tl = fl->tables_len - 2;
        if (tl >= 2 && t[tl - 2] == 0xff && t[tl - 1] == 0xd9)
            tl -= 2;
    }
    if (!soi || (!t && !fl->rgb)) {
        *out = raw, *out_len = n;
        return 0;
    }
    if (grow(&st->stream, &st->stream_cap, n + tl + sizeof adobe_rgb) != 0)
        return -1;
    uint8_t *p = st->stream;
    *p++ = 0xff, *p++ = 0xd8;
    if (t)
        memcpy(p, t, tl), p += tl;
    if (fl->rgb)
        memcpy(p, adobe_rgb, sizeof adobe_rgb), p += sizeof adobe_rgb;
    memcpy(p, raw + 2, n - 2), p += n - 2;
    *out = st->stream, *out_len = (size_t)(p - st->stream);
    return 0;
}

/* Report libjpeg's reason, then replace the decoder: after an error libjpeg may keep tables and state from
 * the broken stream, and the next tile must not see them. */
static int jpeg_fail(pgd_slide *s, pgd_fast_state *st, int l, uint32_t tx, uint32_t ty, pgd_err *err)
{
    pgd_fail(err, PGD_EFORMAT, "%s: level %d tile (%u, %u): jpeg: %s", s->path, l, tx, ty, tjGetErrorStr2(st->tj));
    tjDestroy(st->tj);
    if (!(st->tj = tjInitDecompress()))
        pgd_fail(err, PGD_ENOMEM, "%s: jpeg: %s", s->path, tjGetErrorStr2(NULL));
    return -1;
}

/* The frame size from the stream's SOF marker, walking the markers before it by their lengths: 1 when found,
 * 0 when the stream is anything else (then libjpeg reads the header and says what is wrong). */
static int sof_size(const uint8_t *p, size_t n, int *w, int *h)
{
    if (n < 4 || p[0] != 0xff || p[1] != 0xd8)
        return 0;
    for (size_t k = 2; k + 4 <= n;) {
        if (p[k] != 0xff)
            return 0;
        uint8_t m = p[k + 1];
        if (m == 0xff) { /* fill byte */
            k++;
            continue;
        }
        if (m == 0xd8 || m == 0xd9 || m == 0xda || (m >= 0xd0 && m <= 0xd7) || m == 0x01)
            return 0; /* image data, or an end, before any frame */
        size_t len = (size_t)p[k + 2] << 8 | p[k + 3];
        if (len < 2 || k + 2 + len > n)
            return 0;
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            if (len < 7)
                return 0;
            *h = p[k + 5] << 8 | p[k + 6];
            *w = p[k + 7] << 8 | p[k + 8];
            return 1;
        }
        k += 2 + len;
    }
    return 0;
}

/* Decode tile idx of level l at 1/den (tw/den x th/den pixels) into dst, rows pitch bytes apart. */
static int decode_tile(pgd_slide *s, pgd_fast_state *st, int l, int den, uint32_t idx, uint8_t *dst, size_t pitch,
                       pgd_err *err)
{
    const pgd_fast_level *fl = &st->lv[l];
    uint32_t tx = idx % fl->tx_n, ty = idx / fl->tx_n, dw = fl->tw / (uint32_t)den, dh = fl->th / (uint32_t)den;
    uint64_t off = fl->off[idx], n = fl->len[idx];
    if (!st->tj && !(st->tj = tjInitDecompress()))
        return pgd_fail(err, PGD_ENOMEM, "%s: jpeg: %s", s->path, tjGetErrorStr2(NULL));
    if (n == 0) { /* a tile never written: blank */
        for (uint32_t r = 0; r < dh; r++)
            memset(dst + r * pitch, 255, (size_t)dw * 3);
        return 0;
    }
    if (n > TILE_MAX_BYTES || off > st->file_size || n > st->file_size - off)
        return pgd_fail(err, PGD_EFORMAT,
                        "%s: level %d tile (%u, %u): bytes %llu..%llu lie past the end of the %llu-byte file "
                        "(truncated?)", s->path, l, tx, ty, (unsigned long long)off,
                        (unsigned long long)(off + n), (unsigned long long)st->file_size);
    if (grow(&st->raw, &st->raw_cap, (size_t)n) != 0)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a %llu-byte tile", s->path, (unsigned long long)n);
    if (read_full(st->fd, st->raw, (size_t)n, off) != 0)
        return pgd_fail_errno(err, PGD_EIO, "%s: level %d tile (%u, %u): read", s->path, l, tx, ty);
    const uint8_t *jpg;
    size_t jl;
    if (splice_tables(st, fl, (size_t)n, &jpg, &jl) != 0)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a tile", s->path);
    int w, h, sub, cs;
    /* the size from the SOF marker when it is the tile's (no second pass of libjpeg over the header); any
     * doubt, and libjpeg reads the header first, with its own words for what is wrong */
    if ((!sof_size(jpg, jl, &w, &h) || (uint32_t)w != fl->tw || (uint32_t)h != fl->th) &&
        tjDecompressHeader3(st->tj, jpg, (unsigned long)jl, &w, &h, &sub, &cs) != 0)
        return jpeg_fail(s, st, l, tx, ty, err);
    if ((uint32_t)w != fl->tw || (uint32_t)h != fl->th)
        return pgd_fail(err, PGD_EFORMAT, "%s: level %d tile (%u, %u): jpeg is %dx%d, the tile %ux%u", s->path, l, tx,
                        ty, w, h, fl->tw, fl->th);
    if (tjDecompress2(st->tj, jpg, (unsigned long)jl, dst, (int)dw, (int)pitch, (int)dh, TJPF_RGB,
                      TJFLAG_STOPONWARNING) != 0)
        return jpeg_fail(s, st, l, tx, ty, err);
    return 0;
}

/* The decoded tile, from the cache or decoded into the least recently used slot. */
static const pgd_fast_tile *get_tile(pgd_slide *s, pgd_fast_state *st, int l, int den, uint32_t idx, pgd_err *err)
{
    pgd_fast_tile *victim = &st->cache[0];
    for (int i = 0; i < st->ncache; i++) {
        pgd_fast_tile *c = &st->cache[i];
        if (c->level == l && c->den == den && c->index == idx) {
            c->used = ++st->clock;
            return c;
        }
        if (c->used < victim->used)
            victim = c;
    }
    const pgd_fast_level *fl = &st->lv[l];
    victim->level = -1;
    victim->w = fl->tw / (uint32_t)den, victim->h = fl->th / (uint32_t)den;
    if (!victim->rgb && !(victim->rgb = malloc(st->tile_bytes))) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a tile", s->path);
        return NULL;
    }
    if (decode_tile(s, st, l, den, idx, victim->rgb, (size_t)victim->w * 3, err) != 0)
        return NULL;
    victim->level = l, victim->den = den, victim->index = idx, victim->used = ++st->clock;
    return victim;
}

static int fast_read(pgd_slide *s, int level, int den, int64_t x, int64_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                     size_t stride, pgd_err *err)
{
    pgd_fast_state *st = s->impl;
    const pgd_fast_level *fl = &st->lv[level];
    int64_t tws = fl->tw / den, ths = fl->th / den;
    if (pgd_slide_fast_tables(s, st, level, err) != 0)
        return -1;
    for (int64_t ty = y / ths; ty * ths < y + h; ty++) {
        for (int64_t tx = x / tws; tx * tws < x + w; tx++) {
            uint32_t idx = (uint32_t)(ty * fl->tx_n + tx);
            if (tx * tws >= x && (tx + 1) * tws <= x + w && ty * ths >= y && (ty + 1) * ths <= y + h) {
                /* the request covers the whole tile: decode it in place, no copy, no cache */
                uint8_t *dst = rgb + (size_t)(ty * ths - y) * stride + (size_t)(tx * tws - x) * 3;
                if (decode_tile(s, st, level, den, idx, dst, stride, err) != 0)
                    return -1;
                continue;
            }
            const pgd_fast_tile *t = get_tile(s, st, level, den, idx, err);
            if (!t)
                return -1;
            int64_t x0 = tx * tws > x ? tx * tws : x, x1 = (tx + 1) * tws < x + w ? (tx + 1) * tws : x + w;
            int64_t y0 = ty * ths > y ? ty * ths : y, y1 = (ty + 1) * ths < y + h ? (ty + 1) * ths : y + h;
            for (int64_t yy = y0; yy < y1; yy++)
                memcpy(rgb + (size_t)(yy - y) * stride + (size_t)(x0 - x) * 3,
                       t->rgb + ((size_t)(yy - ty * ths) * t->w + (size_t)(x0 - tx * tws)) * 3, (size_t)(x1 - x0) * 3);
        }
    }
    return 0;
}

static void fast_close(pgd_slide *s)
{
    pgd_slide_fast_free(s->impl);
    s->impl = NULL;
}

static const pgd_slide_ops fast_ops = {fast_read, fast_close};

int pgd_slide_fast_start(pgd_slide *s, pgd_fast_state *st, pgd_err *err)
{
    struct stat sb;
    if ((st->fd = open(s->path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(st->fd, &sb) != 0)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "open %s", s->path);
    st->file_size = (uint64_t)sb.st_size;
    if (!(st->tj = tjInitDecompress()))
        return pgd_fail(err, PGD_ENOMEM, "%s: jpeg: %s", s->path, tjGetErrorStr2(NULL));
    size_t tile_bytes = 0;
    for (int l = 0; l < s->info.nlevels; l++) {
        const pgd_fast_level *fl = &st->lv[l];
        size_t b = (size_t)fl->tw * fl->th * 3;
        tile_bytes = b > tile_bytes ? b : tile_bytes;
        s->info.level[l].tile_w = fl->tw, s->info.level[l].tile_h = fl->th;
        s->info.level[l].max_den = fl->tw % 8 == 0 && fl->th % 8 == 0 ? 8 : 1;
    }
    st->ncache = (int)(CACHE_BYTES / tile_bytes);
    st->ncache = st->ncache < 4 ? 4 : st->ncache > 512 ? 512 : st->ncache;
    st->tile_bytes = tile_bytes;
    if (!(st->cache = cache_take(st->ncache, tile_bytes)))
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", s->path);
    s->impl = st;
    s->ops = &fast_ops;
    s->info.backend = PGD_SLIDE_FAST;
    snprintf(s->info.why, sizeof s->info.why, "every level is a tiled %s TIFF directory", s->info.codec);
    openslide_close(s->osr); /* not needed for pixels; its tile cache would only hold memory */
    s->osr = NULL;
    return 0;
}
