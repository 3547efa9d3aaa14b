/* png.h: 8-bit gray and RGB PNG files with libpng (write, a small reader) and float-grid heatmaps. */
#ifndef PGD_PNG_H
#define PGD_PNG_H

#include <stdint.h>

#include "err.h"

/* Write width x height pixels of channels 1 (gray) or 3 (RGB), 8 bits each, rows top to bottom, each row
 * width * channels bytes with no padding. On failure the partial file is removed. */
int pgd_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                  pgd_err *err);

/* Read a PNG as 8-bit gray (*channels = 1) or RGB (3): palettes and low bit depths are expanded, 16-bit
 * samples reduced to 8, alpha dropped. *pixels is malloc'd (free() it), rows top to bottom, no padding.
 * Images over 2^28 pixels are refused. */
int pgd_png_read(const char *path, uint8_t **pixels, uint32_t *width, uint32_t *height, int *channels,
                 pgd_err *err);

/* The colour of t in [0, 1] (clamped; NaN gives mid-gray) on a perceptually uniform dark-blue -> green ->
 * yellow map: 11 anchor colours of viridis, linearly interpolated. */
void pgd_png_colormap(float t, uint8_t rgb[3]);

/* Write values (height rows of width, row-major) as an RGB heatmap, each value a scale x scale square,
 * coloured from the smallest finite value (dark blue) to the largest (yellow). A constant grid is one
 * colour (the low end); NaN and infinite values are mid-gray. scale >= 1. */
int pgd_png_write_heatmap(const char *path, const float *values, uint32_t width, uint32_t height, uint32_t scale,
                          pgd_err *err);

#endif
