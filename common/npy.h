/* npy.h: NumPy .npy files (format 1.0/2.0/3.0), C order, float32, float16 and uint8, little-endian. */
#ifndef PGD_NPY_H
#define PGD_NPY_H

#include <stddef.h>

#include "err.h"

#define PGD_NPY_MAX_DIMS 8

typedef enum pgd_npy_dtype { PGD_NPY_F32 = 1, PGD_NPY_F16 = 2, PGD_NPY_U8 = 3 } pgd_npy_dtype;

/* An array read from a file. data holds count elements (count = product of shape; 1 for ndim 0). */
typedef struct pgd_npy {
    pgd_npy_dtype dtype;
    int ndim;
    size_t shape[PGD_NPY_MAX_DIMS];
    size_t count;
    void *data; /* malloc'd; pgd_npy_free releases it */
} pgd_npy;

/* Bytes per element: 4, 2, 1; 0 for an unknown dtype. */
size_t pgd_npy_dtype_size(pgd_npy_dtype dtype);

/* The descr text of a dtype: "<f4", "<f2", "|u1"; NULL for an unknown dtype. */
const char *pgd_npy_descr(pgd_npy_dtype dtype);

/* The complete preamble of a version 1.0 file (magic, version, length, header dict padded with spaces and a
 * newline to a multiple of 64 bytes) into buf. Returns its length, or 0 when it does not fit in cap or the
 * arguments are bad (ndim outside 0..PGD_NPY_MAX_DIMS, unknown dtype). */
size_t pgd_npy_preamble(char *buf, size_t cap, pgd_npy_dtype dtype, const size_t *shape, int ndim);

/* Write data (the product of shape elements of dtype, C order) to path, replacing it. On failure the
 * partial file is removed. */
int pgd_npy_write(const char *path, pgd_npy_dtype dtype, const size_t *shape, int ndim, const void *data,
                  pgd_err *err);

/* Parse the preamble in buf[0..len): fills out (data stays NULL) and *data_offset, the byte where the data
 * starts. Errors name what is wrong ("npy NAME: ..."), NAME being what to call the input. */
int pgd_npy_parse(const char *name, const void *buf, size_t len, pgd_npy *out, size_t *data_offset, pgd_err *err);

/* Read a whole file. The data size must match the shape exactly. out is zeroed on failure. */
int pgd_npy_read(const char *path, pgd_npy *out, pgd_err *err);

/* Free out->data and zero *a. NULL is fine. */
void pgd_npy_free(pgd_npy *a);

#endif
