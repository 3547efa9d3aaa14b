/* slide_image.c: plain JPEG (TurboJPEG, DCT-scaled on request) and PNG files as one-level slides, decoded whole. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "file.h"
#include "png.h"
#include "slide_priv.h"

#define IMAGE_MAX_BYTES ((size_t)1 << 31)  /* largest file read */
#define IMAGE_MAX_PIXELS ((int64_t)1 << 28) /* largest decoded image (768 MiB of RGB) */

typedef struct img_state {
    int is_jpeg;
    char *bytes; /* the JPEG file */
    size_t len;
    tjhandle tj;
    uint8_t *rgb; /* the decoded image at scale 1/den, or NULL */
    int den;
    int64_t w, h; /* its size */
} img_state;

const char *pgd_slide_subsamp_name(int subsamp)
{
    switch (subsamp) {
    case TJSAMP_444: return "4:4:4";
    case TJSAMP_422: return "4:2:2";
    case TJSAMP_420: return "4:2:0";
    case TJSAMP_GRAY: return "gray";
    case TJSAMP_440: return "4:4:0";
    case TJSAMP_411: return "4:1:1";
    default: return "?";
    }
}

static const char *colorspace_name(int cs)
{
    switch (cs) {
    case TJCS_RGB: return "RGB";
    case TJCS_YCbCr: return "YCbCr";
    case TJCS_GRAY: return "gray";
    case TJCS_CMYK: return "CMYK";
    case TJCS_YCCK: return "YCCK";
    default: return "?";
    }
}

static int decode_jpeg(pgd_slide *s, img_state *st, int den, pgd_err *err)
{
    int64_t w = (s->info.level[0].w + den - 1) / den, h = (s->info.level[0].h + den - 1) / den;
    if (!st->tj && !(st->tj = tjInitDecompress()))
        return pgd_fail(err, PGD_ENOMEM, "%s: jpeg: %s", s->path, tjGetErrorStr2(NULL));
    uint8_t *rgb = malloc((size_t)(w * h * 3));
    if (!rgb)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a %lldx%lld image", s->path, (long long)w,
                        (long long)h);
    if (tjDecompress2(st->tj, (const unsigned char *)st->bytes, (unsigned long)st->len, rgb, (int)w, (int)(w * 3),
                      (int)h, TJPF_RGB, TJFLAG_STOPONWARNING) != 0) {
        pgd_fail(err, PGD_EFORMAT, "%s: jpeg: %s", s->path, tjGetErrorStr2(st->tj));
        free(rgb);
        tjDestroy(st->tj); /* no state from the broken stream may reach the next attempt */
        if (!(st->tj = tjInitDecompress()))
            pgd_fail(err, PGD_ENOMEM, "%s: jpeg: %s", s->path, tjGetErrorStr2(NULL));
        return -1;
    }
    st->rgb = rgb, st->den = den, st->w = w, st->h = h;
    return 0;
}

static int decode_png(pgd_slide *s, img_state *st, pgd_err *err)
{
    uint8_t *px;
    uint32_t w, h;
    int ch;
    if (pgd_png_read(s->path, &px, &w, &h, &ch, err) != 0)
        return -1;
    if (ch == 1) {
        uint8_t *rgb = malloc((size_t)w * h * 3);
        if (!rgb) {
            free(px);
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for a %ux%u image", s->path, w, h);
        }
        for (size_t i = 0; i < (size_t)w * h; i++)
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = px[i];
        free(px);
        px = rgb;
    }
    st->rgb = px, st->den = 1, st->w = w, st->h = h;
    return 0;
}

static int img_read(pgd_slide *s, int level, int den, int64_t x, int64_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                    size_t stride, pgd_err *err)
{
    img_state *st = s->impl;
    (void)level;
    if (!st->rgb || st->den != den) {
        free(st->rgb);
        st->rgb = NULL;
        if ((st->is_jpeg ? decode_jpeg(s, st, den, err) : decode_png(s, st, err)) != 0)
            return -1;
    }
    for (uint32_t r = 0; r < h; r++)
        memcpy(rgb + r * stride, st->rgb + ((size_t)(y + r) * st->w + x) * 3, (size_t)w * 3);
    return 0;
}

static void img_close(pgd_slide *s)
{
    img_state *st = s->impl;
    if (!st)
        return;
    if (st->tj)
        tjDestroy(st->tj);
    free(st->bytes);
    free(st->rgb);
    free(st);
    s->impl = NULL;
}

static const pgd_slide_ops img_ops = {img_read, img_close};

static int jpeg_header(pgd_slide *s, img_state *st, pgd_err *err)
{
    if (pgd_file_read(s->path, IMAGE_MAX_BYTES, &st->bytes, &st->len, err) != 0)
        return -1;
    if (!(st->tj = tjInitDecompress()))
        return pgd_fail(err, PGD_ENOMEM, "%s: jpeg: %s", s->path, tjGetErrorStr2(NULL));
    int w, h, sub, cs;
    if (tjDecompressHeader3(st->tj, (const unsigned char *)st->bytes, (unsigned long)st->len, &w, &h, &sub, &cs) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: jpeg: %s", s->path, tjGetErrorStr2(st->tj));
    s->info.level[0].w = w, s->info.level[0].h = h;
    s->info.level[0].max_den = 8;
    snprintf(s->info.codec, sizeof s->info.codec, "JPEG %s %s", colorspace_name(cs), pgd_slide_subsamp_name(sub));
    return 0;
}

/* Width and height from the IHDR chunk, which must come first. */
static int png_header(pgd_slide *s, pgd_err *err)
{
    FILE *f = fopen(s->path, "rb");
    unsigned char b[26];
    if (!f)
        return pgd_fail_errno(err, PGD_EIO, "open %s", s->path);
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n < sizeof b || memcmp(b + 12, "IHDR", 4) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: png: truncated or no IHDR chunk", s->path);
    uint32_t w = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
    uint32_t h = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
    s->info.level[0].w = w, s->info.level[0].h = h;
    s->info.level[0].max_den = 1;
    snprintf(s->info.codec, sizeof s->info.codec, "PNG, %u-bit, colour type %u", b[24], b[25]);
    return 0;
}

int pgd_slide_image_attach(pgd_slide *s, const char *kind, pgd_err *err)
{
    img_state *st = calloc(1, sizeof *st);
    if (!st)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", s->path);
    s->impl = st;
    s->ops = &img_ops;
    st->is_jpeg = strcmp(kind, "jpeg") == 0;
    snprintf(s->vendor, sizeof s->vendor, "%s", kind);
    s->info.backend = PGD_SLIDE_IMAGE;
    snprintf(s->info.why, sizeof s->info.why, "a plain %s file (decoded whole, %s)", st->is_jpeg ? "JPEG" : "PNG",
             st->is_jpeg ? "TurboJPEG" : "libpng");
    s->info.nlevels = 1;
    s->info.level[0].downsample = 1;
    if ((st->is_jpeg ? jpeg_header(s, st, err) : png_header(s, err)) != 0)
        return -1;
    pgd_slide_level *l = &s->info.level[0];
    if (l->w <= 0 || l->h <= 0 || l->w * l->h > IMAGE_MAX_PIXELS)
        return pgd_fail(err, PGD_EFORMAT, "%s: %lldx%lld pixels: outside 1..%lld pixels", s->path, (long long)l->w,
                        (long long)l->h, (long long)IMAGE_MAX_PIXELS);
    s->info.bounds_w = l->w, s->info.bounds_h = l->h;
    return 0;
}
