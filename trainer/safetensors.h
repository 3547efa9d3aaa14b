/* safetensors.h: reading and writing safetensors files (Hugging Face's tensor format), fully validated. */
#ifndef PGD_SAFETENSORS_H
#define PGD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* A file is: u64 little-endian N, N bytes of UTF-8 JSON (the header), then the data buffer. The header maps
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (byte offsets into the data buffer)
 * and may hold "__metadata__": {string: string}. Tensors are little-endian, row-major, and together cover
 * the data buffer exactly. docs/formats.md ("safetensors") says what this code writes and accepts. */

typedef enum pgd_st_dtype {
    PGD_ST_F64,
    PGD_ST_F32,
    PGD_ST_F16,
    PGD_ST_BF16,
    PGD_ST_I64,
    PGD_ST_I32,
    PGD_ST_I16,
    PGD_ST_I8,
    PGD_ST_U64,
    PGD_ST_U32,
    PGD_ST_U16,
    PGD_ST_U8,
    PGD_ST_BOOL,
    PGD_ST_DTYPE_COUNT
} pgd_st_dtype;

#define PGD_ST_MAX_DIMS 8
#define PGD_ST_MAX_HEADER (100u * 1000u * 1000u) /* header bytes accepted, as the reference reader */
#define PGD_ST_MAX_META 1024                     /* __metadata__ entries accepted */

/* "F32", "BF16", ... */
const char *pgd_st_dtype_name(pgd_st_dtype dtype);
/* Bytes per element (BOOL: 1). */
size_t pgd_st_dtype_size(pgd_st_dtype dtype);
/* The dtype named name ("F32"); -1 when unknown. */
int pgd_st_dtype_parse(const char *name, pgd_st_dtype *dtype);

/* One tensor of an open file. */
typedef struct pgd_st_tensor {
    const char *name;
    pgd_st_dtype dtype;
    int ndim;                        /* 0 (a scalar) .. PGD_ST_MAX_DIMS */
    int64_t shape[PGD_ST_MAX_DIMS];
    uint64_t count;                  /* elements: the product of shape (1 for a scalar) */
    size_t begin, end;               /* byte range in the data buffer; end - begin = count * dtype size */
} pgd_st_tensor;

/* --- reading --- */

typedef struct pgd_st_file pgd_st_file;

enum {
    PGD_ST_READ = 0, /* read the file into memory */
    PGD_ST_MMAP = 1, /* map it read-only (the data pointers stay valid until close) */
};

/* Open and validate the safetensors file at path: header length (<= PGD_ST_MAX_HEADER and within the file),
 * strict JSON (json_parse.h), every entry (known dtype, shape of non-negative integers, size = product x
 * dtype size without overflow, offsets in range), and that the tensors cover the data exactly (no overlap,
 * no hole, nothing after the last). Nothing of the data buffer is read before the header passed. Errors
 * (PGD_EFORMAT, or the I/O code) start with path. Free with pgd_st_close. */
pgd_st_file *pgd_st_open(const char *path, int mode, pgd_err *err);

/* The same over size bytes in memory, which must outlive the file handle (not copied). name is used in
 * error messages. */
pgd_st_file *pgd_st_open_mem(const void *data, size_t size, const char *name, pgd_err *err);

/* Close and set *f to NULL (NULL is fine). */
void pgd_st_close(pgd_st_file **f);

/* Tensors, sorted by name (byte order). */
size_t pgd_st_count(const pgd_st_file *f);
const pgd_st_tensor *pgd_st_at(const pgd_st_file *f, size_t i);
/* The tensor named name, or NULL. Binary search. */
const pgd_st_tensor *pgd_st_find(const pgd_st_file *f, const char *name);
/* Its little-endian bytes (end - begin of them). Only byte-aligned: a file written without padding may give
 * a pointer that is not aligned for the dtype, so copy with memcpy. */
const uint8_t *pgd_st_data(const pgd_st_file *f, const pgd_st_tensor *t);

/* __metadata__ entries, sorted by key; pgd_st_meta returns the value of key or NULL. */
size_t pgd_st_meta_count(const pgd_st_file *f);
const char *pgd_st_meta_key(const pgd_st_file *f, size_t i);
const char *pgd_st_meta(const pgd_st_file *f, const char *key);

/* The byte offset of the data buffer in the file (8 + header length). */
size_t pgd_st_data_offset(const pgd_st_file *f);

/* --- writing --- */

/* A writer collects tensors (copied, or filled in place) and metadata, then writes one file. The header JSON
 * has __metadata__ first, then the tensors sorted by name; the data is laid out by dtype size (largest
 * first), then by name, so every tensor is aligned for its dtype; the header is padded with spaces so that
 * the data starts at a multiple of 8. The writer keeps the first error (sticky): later calls do nothing
 * and commit reports it. */
typedef struct pgd_st_writer pgd_st_writer;

pgd_st_writer *pgd_st_writer_new(pgd_err *err);
void pgd_st_writer_free(pgd_st_writer **w);

/* Add a tensor and return its buffer (count * dtype size bytes, zeroed, owned by the writer) to fill before
 * commit; NULL on failure (duplicate or empty name, "__metadata__", bad shape, out of memory). A tensor of
 * no bytes gets a non-NULL pointer that must not be written. */
void *pgd_st_writer_add_buffer(pgd_st_writer *w, const char *name, pgd_st_dtype dtype, int ndim,
                               const int64_t *shape, pgd_err *err);
/* The same, copying data (count * dtype size bytes, little-endian). */
int pgd_st_writer_add(pgd_st_writer *w, const char *name, pgd_st_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, pgd_err *err);
/* A __metadata__ entry (both strings copied; a duplicate key is an error). */
int pgd_st_writer_meta(pgd_st_writer *w, const char *key, const char *value, pgd_err *err);

/* The whole file in a malloc'd buffer (*out, *len; the caller frees it). */
int pgd_st_writer_to_mem(pgd_st_writer *w, uint8_t **out, size_t *len, pgd_err *err);

/* Write the file to path atomically: a temporary file in the same folder (mode 0644), written, fsync'ed,
 * renamed over path, then the folder fsync'ed. On failure path is untouched and the temporary file is
 * removed. The writer may be committed again. */
int pgd_st_writer_commit(pgd_st_writer *w, const char *path, pgd_err *err);

#endif
