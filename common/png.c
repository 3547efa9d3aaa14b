/* png.c: PNG writing and reading through libpng (errors caught with setjmp), and heatmap rendering. */
#include "png.h"

#include <errno.h>
#include <math.h>
#include <libpng16/png.h> /* not <png.h>: -Icommon would find this module's own png.h */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PNG_MAX_PIXELS (1u << 28)

/* What libpng's error callback leaves for the caller, and what a longjmp must free. */
typedef struct png_ctx {
    char msg[256];
    uint8_t *pixels;
    png_bytep *rows;
} png_ctx;

static void on_png_error(png_structp png, png_const_charp msg)
{
    png_ctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* The libpng part of a write; 0, or -1 with ctx->msg set. */
static int encode_rows(FILE *f, png_ctx *ctx, const uint8_t *pixels, uint32_t width, uint32_t height,
                          int channels)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        png_destroy_write_struct(&png, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, width, height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)channels;
    for (uint32_t y = 0; y < height; y++)
        png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int pgd_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                  pgd_err *err)
{
    if (!pixels || !width || !height || (channels != 1 && channels != 3))
        return pgd_fail(err, PGD_EINVAL, "png %s: bad image (%ux%u, %d channels; need 1 or 3)", path, width,
                        height, channels);
    if ((uint64_t)width * height > PNG_MAX_PIXELS)
        return pgd_fail(err, PGD_EINVAL, "png %s: %ux%u is over the %u-pixel limit", path, width, height,
                        PNG_MAX_PIXELS);
    FILE *f = fopen(path, "wb");
    if (!f)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "png %s: open", path);
    png_ctx ctx = {{0}, NULL, NULL};
    if (encode_rows(f, &ctx, pixels, width, height, channels) != 0) {
        pgd_fail(err, PGD_EIO, "png %s: %s", path, ctx.msg);
        fclose(f);
        unlink(path);
        return -1;
    }
    if (fclose(f) != 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "png %s: close", path);
        unlink(path);
        return -1;
    }
    return 0;
}

/* The libpng part of a read: fills ctx->pixels (owned by the caller afterwards). */
static int decode_rows(FILE *f, png_ctx *ctx, uint32_t *width, uint32_t *height, int *channels)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        png_destroy_read_struct(&png, NULL, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_init_io(png, f);
    png_read_info(png, info);
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_read_update_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ch = png_get_channels(png, info);
    if ((uint64_t)w * h > PNG_MAX_PIXELS || (ch != 1 && ch != 3))
        png_error(png, (ch != 1 && ch != 3) ? "unexpected channel count" : "image too large");
    size_t stride = png_get_rowbytes(png, info);
    size_t bytes = stride * (size_t)h;
    ctx->pixels = malloc(bytes ? bytes : 1);
    ctx->rows = malloc(sizeof *ctx->rows * (h ? h : 1));
    if (!ctx->pixels || !ctx->rows)
        png_error(png, "out of memory");
    for (uint32_t y = 0; y < h; y++)
        ctx->rows[y] = ctx->pixels + (size_t)y * stride;
    png_read_image(png, ctx->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    *width = w;
    *height = h;
    *channels = ch;
    return 0;
}

int pgd_png_read(const char *path, uint8_t **pixels, uint32_t *width, uint32_t *height, int *channels,
                 pgd_err *err)
{
    *pixels = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "png %s: open", path);
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fclose(f);
        return pgd_fail(err, PGD_EFORMAT, "png %s: not a PNG file (bad signature)", path);
    }
    rewind(f);
    png_ctx ctx = {{0}, NULL, NULL};
    int rc = decode_rows(f, &ctx, width, height, channels);
    fclose(f);
    free(ctx.rows);
    if (rc != 0) {
        free(ctx.pixels);
        return pgd_fail(err, PGD_EFORMAT, "png %s: %s", path, ctx.msg);
    }
    *pixels = ctx.pixels;
    return 0;
}

void pgd_png_colormap(float t, uint8_t rgb[3])
{
    /* viridis at t = 0, 0.1, ..., 1 */
    static const uint8_t anchors[11][3] = {
        {68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},  {42, 120, 142}, {33, 145, 140},
        {34, 168, 132}, {68, 191, 112}, {122, 209, 81}, {189, 223, 38}, {253, 231, 37},
    };
    if (isnan(t)) {
        rgb[0] = rgb[1] = rgb[2] = 128;
        return;
    }
    float x = (t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t) * 10.0f;
    int i = (int)x;
    if (i >= 10)
        i = 9;
    float f = x - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lrintf((float)anchors[i][c] + f * ((float)anchors[i + 1][c] - (float)anchors[i][c]));
}

int pgd_png_write_heatmap(const char *path, const float *values, uint32_t width, uint32_t height, uint32_t scale,
                          pgd_err *err)
{
    if (!values || !width || !height || !scale)
        return pgd_fail(err, PGD_EINVAL, "png %s: bad heatmap (%ux%u cells, scale %u)", path, width, height, scale);
    uint64_t pw = (uint64_t)width * scale, ph = (uint64_t)height * scale;
    if (pw * ph > PNG_MAX_PIXELS)
        return pgd_fail(err, PGD_EINVAL, "png %s: heatmap of %llux%llu pixels is over the %u-pixel limit", path,
                        (unsigned long long)pw, (unsigned long long)ph, PNG_MAX_PIXELS);
    size_t cells = (size_t)width * height;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < cells; i++) {
        if (isfinite(values[i])) {
            lo = values[i] < lo ? values[i] : lo;
            hi = values[i] > hi ? values[i] : hi;
        }
    }
    double range = hi > lo ? (double)hi - (double)lo : 0.0;
    uint8_t *pix = malloc((size_t)(pw * ph * 3));
    if (!pix)
        return pgd_fail(err, PGD_ENOMEM, "png %s: out of memory for the heatmap", path);
    for (uint64_t y = 0; y < ph; y++) {
        uint8_t *row = pix + y * pw * 3;
        for (uint32_t cx = 0; cx < width; cx++) {
            float v = values[(size_t)(y / scale) * width + cx];
            uint8_t rgb[3];
            float t = !isfinite(v) ? NAN : range > 0.0 ? (float)(((double)v - lo) / range) : 0.0f;
            pgd_png_colormap(t, rgb);
            for (uint32_t k = 0; k < scale; k++)
                memcpy(row + ((size_t)cx * scale + k) * 3, rgb, 3);
        }
    }
    int rc = pgd_png_write(path, pix, (uint32_t)pw, (uint32_t)ph, 3, err);
    free(pix);
    return rc;
}
