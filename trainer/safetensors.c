/* safetensors.c: the safetensors reader (validate the header, then map or read the data) and writer. */
#include "trainer/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "json_parse.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* --- dtypes ----------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[PGD_ST_DTYPE_COUNT] = {
    [PGD_ST_F64] = {"F64", 8}, [PGD_ST_F32] = {"F32", 4}, [PGD_ST_F16] = {"F16", 2},
    [PGD_ST_BF16] = {"BF16", 2}, [PGD_ST_I64] = {"I64", 8}, [PGD_ST_I32] = {"I32", 4},
    [PGD_ST_I16] = {"I16", 2}, [PGD_ST_I8] = {"I8", 1}, [PGD_ST_U64] = {"U64", 8},
    [PGD_ST_U32] = {"U32", 4}, [PGD_ST_U16] = {"U16", 2}, [PGD_ST_U8] = {"U8", 1},
    [PGD_ST_BOOL] = {"BOOL", 1},
};

const char *pgd_st_dtype_name(pgd_st_dtype dtype)
{
    return (unsigned)dtype < PGD_ST_DTYPE_COUNT ? st_dtypes[dtype].name : "?";
}

size_t pgd_st_dtype_size(pgd_st_dtype dtype)
{
    return (unsigned)dtype < PGD_ST_DTYPE_COUNT ? st_dtypes[dtype].size : 0;
}

int pgd_st_dtype_parse(const char *name, pgd_st_dtype *dtype)
{
    for (int i = 0; i < PGD_ST_DTYPE_COUNT; i++) {
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *dtype = (pgd_st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* Elements and bytes of a shape; -1 when a dimension is negative or the byte count overflows size_t. */
static int st_shape_size(int ndim, const int64_t *shape, pgd_st_dtype dtype, uint64_t *count, size_t *bytes)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] && n > SIZE_MAX / (uint64_t)shape[i])
            return -1;
        n *= (uint64_t)shape[i];
    }
    size_t es = pgd_st_dtype_size(dtype);
    if (n > SIZE_MAX / es)
        return -1;
    *count = n;
    *bytes = (size_t)n * es;
    return 0;
}

/* "[2, 3]" into buf. */
static const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

/* --- reading ------------------------------------------------------------------------------------------ */

typedef struct st_meta {
    char *key, *value;
} st_meta;

struct pgd_st_file {
    char *name;
    const uint8_t *base;  /* the whole file */
    size_t size;
    uint8_t *owned;       /* PGD_ST_READ: base */
    void *map;            /* PGD_ST_MMAP: base */
    size_t data_off, data_len;
    pgd_st_tensor *tensors;
    size_t n;
    st_meta *meta;
    size_t n_meta;
};

static int st_by_name(const void *a, const void *b)
{
    return strcmp(((const pgd_st_tensor *)a)->name, ((const pgd_st_tensor *)b)->name);
}

static int st_meta_by_key(const void *a, const void *b)
{
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

static int st_by_offset(const void *a, const void *b)
{
    const pgd_st_tensor *x = *(const pgd_st_tensor *const *)a, *y = *(const pgd_st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int st_read_meta(pgd_st_file *f, const pgd_json *m, pgd_err *err)
{
    if (m->type != PGD_JSON_OBJECT)
        return pgd_fail(err, PGD_EFORMAT, "%s: __metadata__ is %s, not an object", f->name,
                        pgd_json_type_name(m->type));
    if (m->count > PGD_ST_MAX_META)
        return pgd_fail(err, PGD_EFORMAT, "%s: __metadata__ has %zu entries, more than %d", f->name, m->count,
                        PGD_ST_MAX_META);
    f->meta = calloc(m->count ? m->count : 1, sizeof *f->meta);
    if (!f->meta)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", f->name);
    for (size_t i = 0; i < m->count; i++) {
        const pgd_json *v = &m->items[i];
        if (v->type != PGD_JSON_STRING)
            return pgd_fail(err, PGD_EFORMAT, "%s: __metadata__ '%.100s' is %s, not a string", f->name, v->key,
                            pgd_json_type_name(v->type));
        st_meta *e = &f->meta[f->n_meta];
        e->key = strdup(v->key);
        e->value = strdup(v->str);
        f->n_meta++;
        if (!e->key || !e->value)
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", f->name);
    }
    qsort(f->meta, f->n_meta, sizeof *f->meta, st_meta_by_key);
    return 0;
}

/* The fields of one tensor entry into t (name already set). */
static int st_read_entry(const pgd_st_file *f, const pgd_json *e, pgd_st_tensor *t, pgd_err *err)
{
    const char *nm = t->name;
    char sh[256];
    if (e->type != PGD_JSON_OBJECT)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': entry is %s, not an object", f->name, nm,
                        pgd_json_type_name(e->type));
    for (size_t i = 0; i < e->count; i++)
        if (strcmp(e->items[i].key, "dtype") && strcmp(e->items[i].key, "shape") &&
            strcmp(e->items[i].key, "data_offsets"))
            return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': unknown field '%.100s'", f->name, nm,
                            e->items[i].key);
    const pgd_json *dt = pgd_json_get(e, "dtype"), *shape = pgd_json_get(e, "shape");
    const pgd_json *off = pgd_json_get(e, "data_offsets");
    if (!dt || !shape || !off)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': no '%s'", f->name, nm,
                        !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (dt->type != PGD_JSON_STRING)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': dtype is %s, not a string", f->name, nm,
                        pgd_json_type_name(dt->type));
    if (pgd_st_dtype_parse(dt->str, &t->dtype) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': unknown dtype '%.40s'", f->name, nm, dt->str);
    if (shape->type != PGD_JSON_ARRAY)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': shape is %s, not an array", f->name, nm,
                        pgd_json_type_name(shape->type));
    if (shape->count > PGD_ST_MAX_DIMS)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': shape has %zu dimensions, more than %d",
                        f->name, nm, shape->count, PGD_ST_MAX_DIMS);
    t->ndim = (int)shape->count;
    for (int i = 0; i < t->ndim; i++) {
        const pgd_json *d = &shape->items[i];
        if (d->type != PGD_JSON_INT || d->i < 0)
            return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': shape[%d] is not a non-negative integer",
                            f->name, nm, i);
        t->shape[i] = d->i;
    }
    if (off->type != PGD_JSON_ARRAY || off->count != 2 || off->items[0].type != PGD_JSON_INT ||
        off->items[1].type != PGD_JSON_INT || off->items[0].i < 0 || off->items[1].i < 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': data_offsets is not [begin, end] of "
                        "non-negative integers", f->name, nm);
    t->begin = (size_t)off->items[0].i;
    t->end = (size_t)off->items[1].i;
    if (t->end < t->begin)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': data_offsets [%zu, %zu] end before they begin",
                        f->name, nm, t->begin, t->end);
    size_t bytes;
    if (st_shape_size(t->ndim, t->shape, t->dtype, &t->count, &bytes) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': shape %s is too large", f->name, nm,
                        st_shape_str(sh, sizeof sh, t->ndim, t->shape));
    if (bytes != t->end - t->begin)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': shape %s of %s is %zu bytes but data_offsets "
                        "[%zu, %zu] hold %zu", f->name, nm, st_shape_str(sh, sizeof sh, t->ndim, t->shape),
                        pgd_st_dtype_name(t->dtype), bytes, t->begin, t->end, t->end - t->begin);
    if (t->end > f->data_len)
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%.100s': data_offsets [%zu, %zu] run past the end of "
                        "the data (%zu bytes): truncated file", f->name, nm, t->begin, t->end, f->data_len);
    return 0;
}

/* The tensors, in offset order, must tile [0, data_len) exactly. */
static int st_check_cover(const pgd_st_file *f, pgd_err *err)
{
    const pgd_st_tensor **by = malloc((f->n ? f->n : 1) * sizeof *by);
    if (!by)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", f->name);
    for (size_t i = 0; i < f->n; i++)
        by[i] = &f->tensors[i];
    qsort(by, f->n, sizeof *by, st_by_offset);
    size_t pos = 0;
    const pgd_st_tensor *prev = NULL;
    int rc = 0;
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        const pgd_st_tensor *t = by[i];
        if (t->begin > pos)
            rc = pgd_fail(err, PGD_EFORMAT, "%s: hole in the data: no tensor holds bytes [%zu, %zu)", f->name,
                          pos, t->begin);
        else if (t->begin < pos)
            rc = pgd_fail(err, PGD_EFORMAT, "%s: tensors '%.100s' [%zu, %zu] and '%.100s' [%zu, %zu] overlap",
                          f->name, prev->name, prev->begin, prev->end, t->name, t->begin, t->end);
        pos = t->end;
        prev = t;
    }
    if (rc == 0 && pos != f->data_len)
        rc = pgd_fail(err, PGD_EFORMAT, "%s: hole in the data: no tensor holds bytes [%zu, %zu)", f->name, pos,
                      f->data_len);
    free(by);
    return rc;
}

/* Parse and validate the header JSON; fills tensors and metadata. */
static int st_read_header(pgd_st_file *f, const char *json, size_t len, pgd_err *err)
{
    if (len == 0 || json[0] != '{')
        return pgd_fail(err, PGD_EFORMAT, "%s: header does not start with '{'", f->name);
    pgd_err jerr = PGD_ERR_INIT;
    pgd_json_limits lim = {PGD_ST_MAX_HEADER, 64};
    pgd_json *root = pgd_json_parse(json, len, &lim, &jerr);
    if (!root)
        return pgd_fail(err, jerr.code, "%s: header JSON %s", f->name, jerr.msg);
    int rc = -1;
    f->tensors = calloc(root->count ? root->count : 1, sizeof *f->tensors);
    if (!f->tensors) {
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", f->name);
        goto done;
    }
    for (size_t i = 0; i < root->count; i++) {
        const pgd_json *e = &root->items[i];
        if (strcmp(e->key, "__metadata__") == 0) {
            if (st_read_meta(f, e, err) != 0)
                goto done;
            continue;
        }
        if (e->key_len == 0) {
            pgd_fail(err, PGD_EFORMAT, "%s: tensor with an empty name", f->name);
            goto done;
        }
        pgd_st_tensor *t = &f->tensors[f->n];
        if (!(t->name = strdup(e->key))) {
            pgd_fail(err, PGD_ENOMEM, "%s: out of memory", f->name);
            goto done;
        }
        f->n++;
        if (st_read_entry(f, e, t, err) != 0)
            goto done;
    }
    qsort(f->tensors, f->n, sizeof *f->tensors, st_by_name);
    rc = st_check_cover(f, err);
done:
    pgd_json_free(&root);
    return rc;
}

static void st_free(pgd_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    if (f->map)
        munmap(f->map, f->size);
    free(f->owned);
    free(f->name);
    free(f);
}

void pgd_st_close(pgd_st_file **f)
{
    if (!f)
        return;
    st_free(*f);
    *f = NULL;
}

static pgd_st_file *st_new(const char *name, pgd_err *err)
{
    pgd_st_file *f = calloc(1, sizeof *f);
    if (f && !(f->name = strdup(name))) {
        free(f);
        f = NULL;
    }
    if (!f)
        pgd_fail(err, PGD_ENOMEM, "%s: out of memory", name);
    return f;
}

/* The 8-byte length: sane and within size bytes of file. Sets data_off and data_len. */
static int st_check_length(pgd_st_file *f, const uint8_t head[8], size_t size, pgd_err *err)
{
    if (size < 8)
        return pgd_fail(err, PGD_EFORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length",
                        f->name, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | head[i];
    if (n > PGD_ST_MAX_HEADER)
        return pgd_fail(err, PGD_EFORMAT, "%s: header length %llu is larger than the %u-byte limit", f->name,
                        (unsigned long long)n, PGD_ST_MAX_HEADER);
    if (n > size - 8)
        return pgd_fail(err, PGD_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes): "
                        "truncated file", f->name, (unsigned long long)n, size);
    f->data_off = 8 + (size_t)n;
    f->data_len = size - f->data_off;
    return 0;
}

pgd_st_file *pgd_st_open_mem(const void *data, size_t size, const char *name, pgd_err *err)
{
    pgd_st_file *f = st_new(name, err);
    if (!f)
        return NULL;
    f->base = data;
    f->size = size;
    if (st_check_length(f, data, size, err) != 0 ||
        st_read_header(f, (const char *)f->base + 8, f->data_off - 8, err) != 0) {
        st_free(f);
        return NULL;
    }
    return f;
}

/* Read len bytes at off, all of them. */
static int st_pread_all(int fd, uint8_t *buf, size_t len, size_t off, const char *path, pgd_err *err)
{
    while (len > 0) {
        ssize_t got = pread(fd, buf, len, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return pgd_fail_errno(err, PGD_EIO, "read %s", path);
        if (got == 0)
            return pgd_fail(err, PGD_EFORMAT, "%s: file shrank while being read: truncated file", path);
        buf += got;
        len -= (size_t)got;
        off += (size_t)got;
    }
    return 0;
}

/* PGD_ST_READ: the header first, validated, then the data. */
static int st_load_read(pgd_st_file *f, int fd, size_t size, pgd_err *err)
{
    uint8_t head[8] = {0};
    if (size >= 8 && st_pread_all(fd, head, 8, 0, f->name, err) != 0)
        return -1;
    if (st_check_length(f, head, size, err) != 0)
        return -1;
    if (!(f->owned = malloc(size))) /* size >= 8 here */
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory for %zu bytes", f->name, size);
    memcpy(f->owned, head, 8);
    f->base = f->owned;
    if (st_pread_all(fd, f->owned + 8, f->data_off - 8, 8, f->name, err) != 0 ||
        st_read_header(f, (const char *)f->owned + 8, f->data_off - 8, err) != 0)
        return -1;
    return st_pread_all(fd, f->owned + f->data_off, f->data_len, f->data_off, f->name, err);
}

static int st_load_mmap(pgd_st_file *f, int fd, size_t size, pgd_err *err)
{
    if (size == 0)
        return st_check_length(f, NULL, 0, err);
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
        return pgd_fail_errno(err, PGD_EIO, "mmap %s", f->name);
    f->map = map;
    f->base = map;
    if (st_check_length(f, f->base, size, err) != 0)
        return -1;
    return st_read_header(f, (const char *)f->base + 8, f->data_off - 8, err);
}

pgd_st_file *pgd_st_open(const char *path, int mode, pgd_err *err)
{
    pgd_st_file *f = st_new(path, err);
    if (!f)
        return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "open %s", path);
        goto fail;
    }
    if (fstat(fd, &sb) != 0) {
        pgd_fail_errno(err, PGD_EIO, "stat %s", path);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        pgd_fail(err, PGD_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    if ((mode == PGD_ST_MMAP ? st_load_mmap(f, fd, f->size, err) : st_load_read(f, fd, f->size, err)) != 0)
        goto fail;
    close(fd);
    return f;
fail:
    if (fd >= 0)
        close(fd);
    st_free(f);
    return NULL;
}

size_t pgd_st_count(const pgd_st_file *f)
{
    return f->n;
}

const pgd_st_tensor *pgd_st_at(const pgd_st_file *f, size_t i)
{
    return i < f->n ? &f->tensors[i] : NULL;
}

const pgd_st_tensor *pgd_st_find(const pgd_st_file *f, const char *name)
{
    pgd_st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, f->n, sizeof *f->tensors, st_by_name);
}

const uint8_t *pgd_st_data(const pgd_st_file *f, const pgd_st_tensor *t)
{
    return f->base + f->data_off + t->begin;
}

size_t pgd_st_meta_count(const pgd_st_file *f)
{
    return f->n_meta;
}

const char *pgd_st_meta_key(const pgd_st_file *f, size_t i)
{
    return i < f->n_meta ? f->meta[i].key : NULL;
}

const char *pgd_st_meta(const pgd_st_file *f, const char *key)
{
    st_meta k = {(char *)key, NULL};
    const st_meta *m = f->n_meta ? bsearch(&k, f->meta, f->n_meta, sizeof *f->meta, st_meta_by_key) : NULL;
    return m ? m->value : NULL;
}

size_t pgd_st_data_offset(const pgd_st_file *f)
{
    return f->data_off;
}

/* --- writing ------------------------------------------------------------------------------------------ */

typedef struct st_wtensor {
    char *name;
    pgd_st_dtype dtype;
    int ndim;
    int64_t shape[PGD_ST_MAX_DIMS];
    size_t bytes, offset; /* offset: in the data buffer, set when the file is laid out */
    uint8_t *data;
} st_wtensor;

struct pgd_st_writer {
    st_wtensor *t;
    size_t n, cap;
    st_meta *meta;
    size_t n_meta, cap_meta;
    pgd_err err; /* sticky */
};

/* Copy the sticky error out; returns -1 when there is one. */
static int st_sticky(const pgd_st_writer *w, pgd_err *err)
{
    if (w->err.code == PGD_OK)
        return 0;
    if (err && err->code == PGD_OK)
        *err = w->err;
    return -1;
}

pgd_st_writer *pgd_st_writer_new(pgd_err *err)
{
    pgd_st_writer *w = calloc(1, sizeof *w);
    if (!w)
        pgd_fail(err, PGD_ENOMEM, "safetensors writer: out of memory");
    return w;
}

void pgd_st_writer_free(pgd_st_writer **w)
{
    if (!w || !*w)
        return;
    pgd_st_writer *x = *w;
    for (size_t i = 0; i < x->n; i++) {
        free(x->t[i].name);
        free(x->t[i].data);
    }
    free(x->t);
    for (size_t i = 0; i < x->n_meta; i++) {
        free(x->meta[i].key);
        free(x->meta[i].value);
    }
    free(x->meta);
    free(x);
    *w = NULL;
}

void *pgd_st_writer_add_buffer(pgd_st_writer *w, const char *name, pgd_st_dtype dtype, int ndim,
                               const int64_t *shape, pgd_err *err)
{
    char sh[256];
    uint64_t count;
    size_t bytes = 0;
    if (st_sticky(w, err) != 0)
        return NULL;
    if (!name[0] || strcmp(name, "__metadata__") == 0)
        pgd_fail(&w->err, PGD_EINVAL, "safetensors writer: bad tensor name '%s'", name);
    else if ((unsigned)dtype >= PGD_ST_DTYPE_COUNT)
        pgd_fail(&w->err, PGD_EINVAL, "safetensors writer: tensor '%.100s': bad dtype %d", name, (int)dtype);
    else if (ndim < 0 || ndim > PGD_ST_MAX_DIMS)
        pgd_fail(&w->err, PGD_EINVAL, "safetensors writer: tensor '%.100s': %d dimensions", name, ndim);
    else if (st_shape_size(ndim, shape, dtype, &count, &bytes) != 0)
        pgd_fail(&w->err, PGD_EINVAL, "safetensors writer: tensor '%.100s': bad shape %s", name,
                 st_shape_str(sh, sizeof sh, ndim, shape));
    for (size_t i = 0; i < w->n && w->err.code == PGD_OK; i++)
        if (strcmp(w->t[i].name, name) == 0)
            pgd_fail(&w->err, PGD_EEXIST, "safetensors writer: duplicate tensor name '%.100s'", name);
    if (w->err.code == PGD_OK && w->n == w->cap) {
        size_t ncap = w->cap ? 2 * w->cap : 16;
        st_wtensor *grown = realloc(w->t, ncap * sizeof *grown);
        if (grown) {
            w->t = grown;
            w->cap = ncap;
        } else {
            pgd_fail(&w->err, PGD_ENOMEM, "safetensors writer: out of memory");
        }
    }
    if (st_sticky(w, err) != 0)
        return NULL;
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = calloc(bytes ? bytes : 1, 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        pgd_fail(&w->err, PGD_ENOMEM, "safetensors writer: out of memory for tensor '%.100s'", name);
        st_sticky(w, err);
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->bytes = bytes;
    w->n++;
    return t->data;
}

int pgd_st_writer_add(pgd_st_writer *w, const char *name, pgd_st_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, pgd_err *err)
{
    void *buf = pgd_st_writer_add_buffer(w, name, dtype, ndim, shape, err);
    if (!buf)
        return -1;
    if (w->t[w->n - 1].bytes)
        memcpy(buf, data, w->t[w->n - 1].bytes);
    return 0;
}

int pgd_st_writer_meta(pgd_st_writer *w, const char *key, const char *value, pgd_err *err)
{
    if (st_sticky(w, err) != 0)
        return -1;
    for (size_t i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0)
            pgd_fail(&w->err, PGD_EEXIST, "safetensors writer: duplicate metadata key '%.100s'", key);
    if (w->err.code == PGD_OK && w->n_meta == w->cap_meta) {
        size_t ncap = w->cap_meta ? 2 * w->cap_meta : 8;
        st_meta *grown = realloc(w->meta, ncap * sizeof *grown);
        if (grown) {
            w->meta = grown;
            w->cap_meta = ncap;
        } else {
            pgd_fail(&w->err, PGD_ENOMEM, "safetensors writer: out of memory");
        }
    }
    if (st_sticky(w, err) != 0)
        return -1;
    st_meta *m = &w->meta[w->n_meta];
    m->key = strdup(key);
    m->value = strdup(value);
    if (!m->key || !m->value) {
        free(m->key);
        free(m->value);
        pgd_fail(&w->err, PGD_ENOMEM, "safetensors writer: out of memory");
        return st_sticky(w, err);
    }
    w->n_meta++;
    return 0;
}

/* A growable string for the header. */
typedef struct st_buf {
    char *s;
    size_t len, cap;
    int oom;
} st_buf;

static void st_put(st_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 1024;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *grown = realloc(b->s, ncap);
        if (!grown) {
            b->oom = 1;
            return;
        }
        b->s = grown;
        b->cap = ncap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void st_puts(st_buf *b, const char *s)
{
    st_put(b, s, strlen(s));
}

static void st_put_string(st_buf *b, const char *s)
{
    size_t need = pgd_json_escape(NULL, 0, s);
    char small[256], *tmp = need < sizeof small ? small : malloc(need + 1);
    if (!tmp) {
        b->oom = 1;
        return;
    }
    pgd_json_escape(tmp, need + 1, s);
    st_put(b, tmp, need);
    if (tmp != small)
        free(tmp);
}

static int st_w_by_name(const void *a, const void *b)
{
    return strcmp((*(const st_wtensor *const *)a)->name, (*(const st_wtensor *const *)b)->name);
}

/* Data order: larger elements first (so each tensor is aligned for its dtype), then by name. */
static int st_w_by_layout(const void *a, const void *b)
{
    const st_wtensor *x = *(const st_wtensor *const *)a, *y = *(const st_wtensor *const *)b;
    size_t sx = pgd_st_dtype_size(x->dtype), sy = pgd_st_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int st_meta_ptr_by_key(const void *a, const void *b)
{
    return strcmp((*(const st_meta *const *)a)->key, (*(const st_meta *const *)b)->key);
}

static void st_put_meta(st_buf *b, const pgd_st_writer *w)
{
    const st_meta **m = malloc(w->n_meta * sizeof *m);
    if (!m) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < w->n_meta; i++)
        m[i] = &w->meta[i];
    qsort(m, w->n_meta, sizeof *m, st_meta_ptr_by_key);
    st_puts(b, "\"__metadata__\":{");
    for (size_t i = 0; i < w->n_meta; i++) {
        if (i)
            st_puts(b, ",");
        st_put_string(b, m[i]->key);
        st_puts(b, ":");
        st_put_string(b, m[i]->value);
    }
    st_puts(b, "}");
    free(m);
}

/* Lay the data out (sets each offset) and build the padded header; returns the data size in *data_len and
 * the tensors in data order in *order (malloc'd). */
static int st_build(pgd_st_writer *w, st_buf *b, st_wtensor ***order, size_t *data_len, pgd_err *err)
{
    st_wtensor **by = malloc((w->n ? w->n : 1) * sizeof *by);
    if (!by)
        return pgd_fail(err, PGD_ENOMEM, "safetensors writer: out of memory");
    for (size_t i = 0; i < w->n; i++)
        by[i] = &w->t[i];
    qsort(by, w->n, sizeof *by, st_w_by_layout);
    size_t pos = 0;
    for (size_t i = 0; i < w->n; i++) {
        by[i]->offset = pos;
        pos += by[i]->bytes;
    }
    *data_len = pos;
    qsort(by, w->n, sizeof *by, st_w_by_name);
    st_puts(b, "{");
    if (w->n_meta)
        st_put_meta(b, w);
    for (size_t i = 0; i < w->n; i++) {
        const st_wtensor *t = by[i];
        char num[64];
        if (i || w->n_meta)
            st_puts(b, ",");
        st_put_string(b, t->name);
        st_puts(b, ":{\"dtype\":\"");
        st_puts(b, pgd_st_dtype_name(t->dtype));
        st_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            st_puts(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", t->offset, t->offset + t->bytes);
        st_puts(b, num);
    }
    st_puts(b, "}");
    while (!b->oom && b->len % 8)
        st_puts(b, " ");
    qsort(by, w->n, sizeof *by, st_w_by_layout);
    *order = by;
    if (b->oom)
        return pgd_fail(err, PGD_ENOMEM, "safetensors writer: out of memory for the header");
    /* Never write a file the reader would refuse (names and values must be valid UTF-8, for one). */
    pgd_err jerr = PGD_ERR_INIT;
    pgd_json *check = pgd_json_parse(b->s, b->len, NULL, &jerr);
    if (!check)
        return pgd_fail(err, PGD_EINVAL, "safetensors writer: header would not parse: %s", jerr.msg);
    pgd_json_free(&check);
    return 0;
}

static void st_put_u64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

int pgd_st_writer_to_mem(pgd_st_writer *w, uint8_t **out, size_t *len, pgd_err *err)
{
    *out = NULL;
    *len = 0;
    if (st_sticky(w, err) != 0)
        return -1;
    st_buf b = {0};
    st_wtensor **order = NULL;
    size_t data_len;
    int rc = -1;
    if (st_build(w, &b, &order, &data_len, err) != 0)
        goto done;
    uint8_t *buf = malloc(8 + b.len + data_len);
    if (!buf) {
        pgd_fail(err, PGD_ENOMEM, "safetensors writer: out of memory");
        goto done;
    }
    st_put_u64(buf, b.len);
    memcpy(buf + 8, b.s, b.len);
    for (size_t i = 0; i < w->n; i++)
        if (order[i]->bytes)
            memcpy(buf + 8 + b.len + order[i]->offset, order[i]->data, order[i]->bytes);
    *out = buf;
    *len = 8 + b.len + data_len;
    rc = 0;
done:
    free(order);
    free(b.s);
    return rc;
}

static int st_write_all(int fd, const void *data, size_t len, const char *path, pgd_err *err)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pgd_fail_errno(err, pgd_code_from_errno(errno), "write %s", path);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The folder of path ("." when it has none) into dir. */
static int st_dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int n = slash ? snprintf(dir, cap, "%.*s", (int)(slash == path ? 1 : slash - path), path)
                  : snprintf(dir, cap, ".");
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int st_fsync_dir(const char *dir, pgd_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pgd_fail_errno(err, PGD_EIO, "open folder %s", dir);
    int rc = fsync(fd) == 0 ? 0 : pgd_fail_errno(err, PGD_EIO, "fsync folder %s", dir);
    close(fd);
    return rc;
}

/* Write header and data to fd in data order. */
static int st_write_file(int fd, const pgd_st_writer *w, const st_buf *b, st_wtensor *const *order,
                         const char *tmp, pgd_err *err)
{
    uint8_t len8[8];
    st_put_u64(len8, b->len);
    if (st_write_all(fd, len8, 8, tmp, err) != 0 || st_write_all(fd, b->s, b->len, tmp, err) != 0)
        return -1;
    for (size_t i = 0; i < w->n; i++)
        if (st_write_all(fd, order[i]->data, order[i]->bytes, tmp, err) != 0)
            return -1;
    if (fchmod(fd, 0644) != 0)
        return pgd_fail_errno(err, PGD_EIO, "chmod %s", tmp);
    if (fsync(fd) != 0)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "fsync %s", tmp);
    return 0;
}

int pgd_st_writer_commit(pgd_st_writer *w, const char *path, pgd_err *err)
{
    if (st_sticky(w, err) != 0)
        return -1;
    char dir[4096], tmp[4352];
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (!base[0] || st_dir_of(path, dir, sizeof dir) != 0 ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp-XXXXXX", dir, base) >= (int)sizeof tmp)
        return pgd_fail(err, PGD_EINVAL, "save %s: bad path", path);
    st_buf b = {0};
    st_wtensor **order = NULL;
    size_t data_len;
    int fd = -1, rc = -1, created = 0;
    if (st_build(w, &b, &order, &data_len, err) != 0)
        goto done;
    fd = mkstemp(tmp);
    created = fd >= 0;
    if (fd < 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "save %s: create %s", path, tmp);
        goto done;
    }
    if (st_write_file(fd, w, &b, order, tmp, err) != 0)
        goto done;
    int closed = close(fd);
    fd = -1;
    if (closed != 0) {
        pgd_fail_errno(err, PGD_EIO, "close %s", tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "save %s: rename %s", path, tmp);
        goto done;
    }
    created = 0; /* renamed: nothing to remove */
    rc = st_fsync_dir(dir, err);
done:
    if (fd >= 0)
        close(fd);
    if (created)
        unlink(tmp);
    free(order);
    free(b.s);
    return rc;
}
