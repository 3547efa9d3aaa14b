/* zblock.c: a Z-block written as a float32 .npy or as a heatmap PNG of its per-cell norms. */
#include "zstore/zblock.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "npy.h"
#include "png.h"

int pgd_zstore_save_npy(const char *path, const float *block, uint32_t m, uint32_t n, uint32_t s, pgd_err *err)
{
    size_t shape[3] = {m, n, s};
    return pgd_npy_write(path, PGD_NPY_F32, shape, 3, block, err);
}

int pgd_zstore_save_heatmap(const char *path, const float *block, uint32_t m, uint32_t n, uint32_t s,
                            pgd_err *err)
{
    size_t cells = (size_t)m * n;
    float *norm = malloc(cells * sizeof *norm);
    if (!norm)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for %zu cell norms", path, cells);
    for (size_t c = 0; c < cells; c++) {
        double sum = 0.0;
        const float *v = block + c * s;
        for (uint32_t k = 0; k < s; k++)
            sum += (double)v[k] * (double)v[k];
        norm[c] = (float)sqrt(sum);
    }
    uint32_t side = m > n ? m : n;
    uint32_t scale = side >= 256 ? 1 : (256 + side - 1) / side;
    int rc = pgd_png_write_heatmap(path, norm, n, m, scale, err);
    free(norm);
    return rc;
}
