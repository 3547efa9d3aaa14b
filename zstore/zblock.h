/* zblock.h: one Z-block ([m][n][s] float32 in host memory) as a file: a .npy or a heatmap PNG. */
#ifndef PGD_ZBLOCK_H
#define PGD_ZBLOCK_H

#include <stdint.h>

#include "err.h"

/* Write block (m * n * s floats, row-major [m][n][s]) as a float32 .npy of shape [m, n, s], replacing path.
 * On failure the partial file is removed. */
int pgd_zstore_save_npy(const char *path, const float *block, uint32_t m, uint32_t n, uint32_t s, pgd_err *err);

/* Write block as an RGB heatmap PNG of its per-cell L2 norms over s: m rows of n cells, each cell a square of
 * ceil(256 / max(m, n)) pixels (1 when the long side has 256 cells or more), coloured as
 * pgd_png_write_heatmap does. What `pgd-zstore dump --out FILE.png` writes. */
int pgd_zstore_save_heatmap(const char *path, const float *block, uint32_t m, uint32_t n, uint32_t s,
                            pgd_err *err);

#endif
