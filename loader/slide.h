/* slide.h: open one slide (OpenSlide, the TIFF+TurboJPEG fast path, or a plain JPEG/PNG) and read RGB regions. */
#ifndef PGD_SLIDE_H
#define PGD_SLIDE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PGD_SLIDE_MAX_LEVELS 32

/* Which code decodes the pixels. */
typedef enum pgd_slide_backend {
    PGD_SLIDE_AUTO = 0,      /* for pgd_slide_open: the fast path when the slide qualifies, else OpenSlide */
    PGD_SLIDE_OPENSLIDE = 1, /* openslide_read_region, premultiplied ARGB composited onto the background */
    PGD_SLIDE_FAST = 2,      /* tiled TIFF/SVS with JPEG tiles: raw tiles (libtiff's tables) + TurboJPEG */
    PGD_SLIDE_IMAGE = 3,     /* a plain JPEG (TurboJPEG) or PNG file, decoded whole */
} pgd_slide_backend;

typedef struct pgd_slide_level {
    int64_t w, h;            /* size in pixels */
    double downsample;       /* OpenSlide's downsample (level 0 = 1); for display, never for choosing */
    uint32_t tile_w, tile_h; /* 0 when not tiled or unknown */
    int max_den;             /* largest DCT scale denominator reads may use: 1, 2, 4 or 8 */
} pgd_slide_level;

/* What the loader sees in a slide. Strings point into the slide and live until pgd_slide_close. */
typedef struct pgd_slide_info {
    const char *path;
    const char *vendor;       /* OpenSlide's vendor ("aperio", "generic-tiff", ...), or "jpeg" / "png" */
    int nlevels;
    pgd_slide_level level[PGD_SLIDE_MAX_LEVELS];
    double mpp_x, mpp_y;      /* microns per level-0 pixel; 0 when unknown */
    const char *mpp_source;   /* "openslide.mpp-x/y", "tiff.XResolution (centimeter)", ..., or "none" */
    int has_bounds;           /* openslide.bounds-* were present */
    int64_t bounds_x, bounds_y, bounds_w, bounds_h; /* level-0 pixels; the whole level 0 when absent */
    uint8_t background[3];    /* openslide.background-color, else white */
    pgd_slide_backend backend;
    char why[256];            /* why that backend was chosen */
    char codec[96];           /* the level-0 compression as far as known ("JPEG YCbCr 4:2:0", "deflate") */
} pgd_slide_info;

typedef struct pgd_slide pgd_slide;

/* Open path with the backend `want` (PGD_SLIDE_AUTO: a JPEG or PNG file -> image, a slide whose every
 * level is a tiled 8-bit RGB/YCbCr JPEG TIFF directory -> fast path, anything else OpenSlide reads ->
 * OpenSlide). Asking for PGD_SLIDE_FAST on a slide that does not qualify fails with the reason. Errors
 * name the file and the reason: OpenSlide's message, libtiff's, or what is wrong ("empty file").
 * OpenSlide is only ever opened here, so call this after fork, never before, and keep one slide per
 * process and file. */
pgd_slide *pgd_slide_open(const char *path, pgd_slide_backend want, pgd_err *err);

const pgd_slide_info *pgd_slide_get_info(const pgd_slide *s);

/* Size of level `level` read at DCT scale 1/den: ceil(w / den) x ceil(h / den). */
void pgd_slide_scaled_size(const pgd_slide *s, int level, int den, int64_t *w, int64_t *h);

/* A rectangle in the pixel grid of one level at one scale. */
typedef struct pgd_slide_rect {
    int64_t x, y, w, h;
} pgd_slide_rect;

/* Read the w x h rectangle at (x, y) of level `level` decoded at scale 1/den (den 1, 2, 4, 8 and at most
 * the level's max_den; coordinates are in that scaled grid) into rgb, rows `stride` bytes apart. Pixels
 * outside the level, or outside `clip` when it is not NULL, are white. A failed read names the file and
 * region; the slide stays usable for other regions (an OpenSlide handle in error is reopened). */
int pgd_slide_read(pgd_slide *s, int level, int den, int64_t x, int64_t y, uint32_t w, uint32_t h,
                   const pgd_slide_rect *clip, uint8_t *rgb, size_t stride, pgd_err *err);

/* The smallest level whose long side is still >= side (level 0 when even level 0 is smaller). Levels are
 * compared by their dimensions, not by their stored downsamples. */
int pgd_slide_level_for_side(const pgd_slide_info *info, int64_t side);

/* The level whose mpp (level-0 mpp x level-0 width / level width) is the largest <= mpp (level 0 when
 * none is). -1 with an error naming the file when the slide has no mpp. */
int pgd_slide_level_for_mpp(const pgd_slide_info *info, double mpp, pgd_err *err);

/* Microns per pixel of a level along x, from the dimensions (0 when the slide has no mpp). */
double pgd_slide_level_mpp(const pgd_slide_info *info, int level);

/* Composite n premultiplied ARGB pixels (OpenSlide's 0xAARRGGBB words) onto bg into packed RGB:
 * out = c + (255 - a) * bg / 255, rounded. */
void pgd_slide_composite(const uint32_t *argb, size_t n, const uint8_t bg[3], uint8_t *rgb);

/* "openslide", "fast", "image" ("auto" for PGD_SLIDE_AUTO); parse returns -1 for anything else. */
const char *pgd_slide_backend_name(pgd_slide_backend b);
int pgd_slide_backend_parse(const char *s, pgd_slide_backend *out);

void pgd_slide_close(pgd_slide **s);

#endif
