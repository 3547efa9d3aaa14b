/* fuzz_safetensors.c: libFuzzer target for the safetensors reader and the JSON reader under it. */
/*
 * The input is a safetensors file image, as it is (the seeds in tests/corpus/safetensors are files). It is
 * also given to pgd_json_parse as JSON text, which must either give a tree or fail with "at byte N".
 *
 * Invariants checked (abort() on violation): a rejected file gives NULL, an error code and a message starting
 * with the name; an accepted one has unique names in sorted order, every tensor's byte range inside the data
 * with end - begin = count x dtype size, the ranges tiling the data exactly, sorted metadata keys; written
 * again by pgd_st_writer it opens with the same tensors, bytes and metadata, and writing that once more
 * gives the same bytes (the writer's output is canonical).
 *
 * `make fuzz` builds this file with the common sources only, so it compiles the reader in; the replay test
 * (tests/test_safetensors_corpus.c) defines FUZZ_SAFETENSORS_LINKED and uses libpgd_trainer instead.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_parse.h"
#include "trainer/safetensors.h"
#ifndef FUZZ_SAFETENSORS_LINKED
#include "trainer/safetensors.c"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ST_NAME "fuzz.st"

static void fuzz_st_json(const uint8_t *data, size_t size)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_json_limits lim = {1u << 20, 32};
    pgd_json *root = pgd_json_parse((const char *)data, size, &lim, &err);
    if (!root && (err.code == PGD_OK || strncmp(err.msg, "at byte ", 8) != 0))
        abort();
    if (root && err.code != PGD_OK)
        abort();
    pgd_json_free(&root);
    if (root)
        abort();
}

static int fuzz_st_by_begin(const void *a, const void *b)
{
    const pgd_st_tensor *x = *(const pgd_st_tensor *const *)a, *y = *(const pgd_st_tensor *const *)b;
    return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1) : (x->end < y->end ? -1 : x->end > y->end);
}

/* Everything an accepted file exposes must be in range and consistent. */
static void fuzz_st_check(const pgd_st_file *f, size_t size)
{
    size_t n = pgd_st_count(f), off = pgd_st_data_offset(f);
    if (off < 8 || off > size || pgd_st_at(f, n))
        abort();
    const pgd_st_tensor **by = malloc((n + 1) * sizeof *by);
    if (!by)
        abort();
    for (size_t i = 0; i < n; i++) {
        const pgd_st_tensor *t = pgd_st_at(f, i);
        if (!t->name[0] || (i && strcmp(pgd_st_at(f, i - 1)->name, t->name) >= 0) || pgd_st_find(f, t->name) != t)
            abort();
        if (t->ndim < 0 || t->ndim > PGD_ST_MAX_DIMS || t->end < t->begin || t->end > size - off)
            abort();
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++)
            count *= (uint64_t)t->shape[d];
        if (count != t->count || t->count * pgd_st_dtype_size(t->dtype) != t->end - t->begin)
            abort();
        by[i] = t;
    }
    qsort(by, n, sizeof *by, fuzz_st_by_begin);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (by[i]->begin != pos)
            abort();
        pos = by[i]->end;
    }
    free(by);
    if (pos != size - off)
        abort();
    for (size_t i = 1; i < pgd_st_meta_count(f); i++)
        if (strcmp(pgd_st_meta_key(f, i - 1), pgd_st_meta_key(f, i)) >= 0)
            abort();
}

/* The file written again by the writer (malloc'd; aborts when the writer refuses it). */
static uint8_t *fuzz_st_rewrite(const pgd_st_file *f, size_t *len)
{
    pgd_st_writer *w = pgd_st_writer_new(NULL);
    if (!w)
        abort();
    for (size_t i = 0; i < pgd_st_count(f); i++) {
        const pgd_st_tensor *t = pgd_st_at(f, i);
        if (pgd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, pgd_st_data(f, t), NULL) != 0)
            abort();
    }
    for (size_t i = 0; i < pgd_st_meta_count(f); i++)
        if (pgd_st_writer_meta(w, pgd_st_meta_key(f, i), pgd_st_meta(f, pgd_st_meta_key(f, i)), NULL) != 0)
            abort();
    uint8_t *out = NULL;
    if (pgd_st_writer_to_mem(w, &out, len, NULL) != 0)
        abort();
    pgd_st_writer_free(&w);
    return out;
}

static void fuzz_st_same(const pgd_st_file *a, const pgd_st_file *b)
{
    if (pgd_st_count(a) != pgd_st_count(b) || pgd_st_meta_count(a) != pgd_st_meta_count(b))
        abort();
    for (size_t i = 0; i < pgd_st_count(a); i++) {
        const pgd_st_tensor *x = pgd_st_at(a, i), *y = pgd_st_at(b, i);
        if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim || x->count != y->count)
            abort();
        if (memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof *x->shape) ||
            memcmp(pgd_st_data(a, x), pgd_st_data(b, y), x->end - x->begin))
            abort();
        if ((pgd_st_data_offset(b) + y->begin) % pgd_st_dtype_size(y->dtype))
            abort(); /* the writer aligns every tensor */
    }
    for (size_t i = 0; i < pgd_st_meta_count(a); i++)
        if (strcmp(pgd_st_meta_key(a, i), pgd_st_meta_key(b, i)) ||
            strcmp(pgd_st_meta(a, pgd_st_meta_key(a, i)), pgd_st_meta(b, pgd_st_meta_key(b, i))))
            abort();
}

/* Open, check, rewrite twice. Returns 1 when the file was accepted, 0 when it was rejected. */
static int fuzz_st_run(const uint8_t *data, size_t size)
{
    fuzz_st_json(data, size);
    pgd_err err = PGD_ERR_INIT;
    pgd_st_file *f = pgd_st_open_mem(data, size, FUZZ_ST_NAME, &err);
    if (!f) {
        if (err.code == PGD_OK || strncmp(err.msg, FUZZ_ST_NAME ": ", strlen(FUZZ_ST_NAME) + 2) != 0)
            abort();
        return 0;
    }
    fuzz_st_check(f, size);
    size_t len1, len2;
    uint8_t *once = fuzz_st_rewrite(f, &len1);
    pgd_st_file *g = pgd_st_open_mem(once, len1, "again", NULL);
    if (!g)
        abort();
    fuzz_st_check(g, len1);
    fuzz_st_same(f, g);
    uint8_t *twice = fuzz_st_rewrite(g, &len2);
    if (len1 != len2 || memcmp(once, twice, len1) != 0 || pgd_st_data_offset(g) % 8 != 0)
        abort();
    free(twice);
    pgd_st_close(&g);
    free(once);
    pgd_st_close(&f);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_st_run(data, size);
    return 0;
}
