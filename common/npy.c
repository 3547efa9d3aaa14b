/* npy.c: writing and reading NumPy .npy arrays (C order; <f4, <f2, |u1). */
#include "npy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

size_t pgd_npy_dtype_size(pgd_npy_dtype dtype)
{
    switch (dtype) {
    case PGD_NPY_F32: return 4;
    case PGD_NPY_F16: return 2;
    case PGD_NPY_U8: return 1;
    }
    return 0;
}

const char *pgd_npy_descr(pgd_npy_dtype dtype)
{
    switch (dtype) {
    case PGD_NPY_F32: return "<f4";
    case PGD_NPY_F16: return "<f2";
    case PGD_NPY_U8: return "|u1";
    }
    return NULL;
}

size_t pgd_npy_preamble(char *buf, size_t cap, pgd_npy_dtype dtype, const size_t *shape, int ndim)
{
    const char *descr = pgd_npy_descr(dtype);
    if (!descr || ndim < 0 || ndim > PGD_NPY_MAX_DIMS || (ndim && !shape))
        return 0;
    char dict[512], dims[256] = "";
    size_t dl = 0;
    for (int i = 0; i < ndim; i++)
        dl += (size_t)snprintf(dims + dl, sizeof dims - dl, "%s%zu", i ? ", " : "", shape[i]);
    if (ndim == 1)
        snprintf(dims + dl, sizeof dims - dl, ",");
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, dims);
    size_t total = 10 + (size_t)n + 1; /* preamble, dict, newline */
    total = (total + 63) / 64 * 64;
    size_t hlen = total - 10;
    if (total > cap || hlen > 0xFFFF)
        return 0;
    memcpy(buf, npy_magic, 6);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)(hlen & 0xFF);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', hlen - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}

int pgd_npy_write(const char *path, pgd_npy_dtype dtype, const size_t *shape, int ndim, const void *data,
                  pgd_err *err)
{
    char pre[1024];
    size_t plen = pgd_npy_preamble(pre, sizeof pre, dtype, shape, ndim);
    if (!plen)
        return pgd_fail(err, PGD_EINVAL, "npy %s: bad dtype %d or rank %d", path, (int)dtype, ndim);
    size_t count = 1, bytes;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(count, shape[i], &count))
            return pgd_fail(err, PGD_EINVAL, "npy %s: shape overflows", path);
    if (__builtin_mul_overflow(count, pgd_npy_dtype_size(dtype), &bytes))
        return pgd_fail(err, PGD_EINVAL, "npy %s: shape overflows", path);
    if (bytes && !data)
        return pgd_fail(err, PGD_EINVAL, "npy %s: no data", path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "npy %s: open", path);
    if (fwrite(pre, 1, plen, f) != plen || (bytes && fwrite(data, 1, bytes, f) != bytes)) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "npy %s: write", path);
        fclose(f);
        unlink(path);
        return -1;
    }
    if (fclose(f) != 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "npy %s: close", path);
        unlink(path);
        return -1;
    }
    return 0;
}

/* --- the header dict: a tiny parser for the Python literal NumPy writes -------------------------------- */

typedef struct npy_cur {
    const char *start, *p, *end;
    const char *name;
    pgd_err *err;
} npy_cur;

static int cur_fail(npy_cur *c, const char *what)
{
    return pgd_fail(c->err, PGD_EFORMAT, "npy %s: header column %d: %s", c->name, (int)(c->p - c->start) + 1,
                    what);
}

static void skip_ws(npy_cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int expect(npy_cur *c, char ch)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p != ch) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", ch);
        return cur_fail(c, what);
    }
    c->p++;
    return 0;
}

static int parse_str(npy_cur *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return cur_fail(c, "expected a quoted string");
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap)
            return cur_fail(c, *c->p == '\\' ? "escapes are not supported" : "string too long");
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return cur_fail(c, "unterminated string");
    c->p++;
    out[n] = 0;
    return 0;
}

static int parse_bool(npy_cur *c, int *out)
{
    skip_ws(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
        c->p += 4;
        *out = 1;
    } else if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
        c->p += 5;
        *out = 0;
    } else {
        return cur_fail(c, "expected True or False");
    }
    return 0;
}

static int parse_shape(npy_cur *c, pgd_npy *a)
{
    if (expect(c, '('))
        return -1;
    a->ndim = 0;
    for (;;) {
        skip_ws(c);
        if (c->p < c->end && *c->p == ')')
            break;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return cur_fail(c, "expected a dimension (a non-negative integer)");
        size_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (__builtin_mul_overflow(v, (size_t)10, &v) || __builtin_add_overflow(v, (size_t)(*c->p - '0'), &v))
                return cur_fail(c, "dimension too large");
            c->p++;
        }
        if (c->p < c->end && (*c->p == 'L' || *c->p == 'l'))
            c->p++; /* Python 2 long suffix */
        if (a->ndim == PGD_NPY_MAX_DIMS)
            return cur_fail(c, "more than 8 dimensions");
        a->shape[a->ndim++] = v;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p >= c->end || *c->p != ')')
            return cur_fail(c, "expected ',' or ')' in the shape");
    }
    c->p++;
    return 0;
}

static int set_descr(npy_cur *c, const char *descr, pgd_npy *a)
{
    if (strcmp(descr, "<f4") == 0)
        a->dtype = PGD_NPY_F32;
    else if (strcmp(descr, "<f2") == 0)
        a->dtype = PGD_NPY_F16;
    else if (strcmp(descr, "|u1") == 0 || strcmp(descr, "<u1") == 0 || strcmp(descr, ">u1") == 0 ||
             strcmp(descr, "u1") == 0)
        a->dtype = PGD_NPY_U8;
    else
        return pgd_fail(c->err, PGD_EFORMAT, "npy %s: dtype '%s' not supported (only <f4, <f2 and |u1)", c->name,
                        descr);
    return 0;
}

/* One "key: value" of the dict. seen: bit 0 descr, 1 fortran_order, 2 shape. */
static int parse_item(npy_cur *c, pgd_npy *a, unsigned *seen)
{
    char key[32], descr[32];
    const char *at = c->p;
    if (parse_str(c, key, sizeof key) || expect(c, ':'))
        return -1;
    unsigned bit = strcmp(key, "descr") == 0 ? 1u : strcmp(key, "fortran_order") == 0 ? 2u
                                                   : strcmp(key, "shape") == 0         ? 4u
                                                                                       : 0u;
    char what[80];
    if (!bit || (*seen & bit)) {
        c->p = at;
        snprintf(what, sizeof what, "%s key '%s'", bit ? "repeated" : "unknown", key);
        return cur_fail(c, what);
    }
    *seen |= bit;
    if (bit == 1)
        return parse_str(c, descr, sizeof descr) || set_descr(c, descr, a);
    if (bit == 4)
        return parse_shape(c, a);
    int fortran = 0;
    if (parse_bool(c, &fortran))
        return -1;
    if (fortran)
        return pgd_fail(c->err, PGD_EFORMAT, "npy %s: fortran_order True is not supported (C order only)",
                        c->name);
    return 0;
}

static int parse_dict(npy_cur *c, pgd_npy *a)
{
    unsigned seen = 0;
    if (expect(c, '{'))
        return -1;
    for (;;) {
        skip_ws(c);
        if (c->p < c->end && *c->p == '}')
            break;
        if (parse_item(c, a, &seen))
            return -1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',')
            c->p++;
        else if (c->p >= c->end || *c->p != '}')
            return cur_fail(c, "expected ',' or '}'");
    }
    c->p++;
    skip_ws(c);
    if (c->p != c->end)
        return cur_fail(c, "text after the closing '}'");
    static const char *const keys[] = {"descr", "fortran_order", "shape"};
    for (int i = 0; i < 3; i++)
        if (!(seen & (1u << i)))
            return pgd_fail(c->err, PGD_EFORMAT, "npy %s: header has no '%s' key", c->name, keys[i]);
    return 0;
}

int pgd_npy_parse(const char *name, const void *buf, size_t len, pgd_npy *out, size_t *data_offset, pgd_err *err)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(b, npy_magic, 6) != 0)
        return pgd_fail(err, PGD_EFORMAT, "npy %s: bad magic (not a .npy file)", name);
    size_t hstart, hlen;
    if (b[6] == 1) {
        hstart = 10;
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if (b[6] == 2 || b[6] == 3) {
        if (len < 12)
            return pgd_fail(err, PGD_EFORMAT, "npy %s: truncated preamble", name);
        hstart = 12;
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    } else {
        return pgd_fail(err, PGD_EFORMAT, "npy %s: format version %u.%u not supported (1.0 to 3.0)", name, b[6],
                        b[7]);
    }
    if (hlen > len - hstart)
        return pgd_fail(err, PGD_EFORMAT, "npy %s: header of %zu bytes, only %zu present", name, hlen,
                        len - hstart);
    npy_cur c = {(const char *)b + hstart, (const char *)b + hstart, (const char *)b + hstart + hlen, name, err};
    if (parse_dict(&c, out) != 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    size_t count = 1, bytes;
    for (int i = 0; i < out->ndim; i++)
        if (__builtin_mul_overflow(count, out->shape[i], &count))
            return pgd_fail(err, PGD_EFORMAT, "npy %s: shape overflows", name);
    if (__builtin_mul_overflow(count, pgd_npy_dtype_size(out->dtype), &bytes))
        return pgd_fail(err, PGD_EFORMAT, "npy %s: shape overflows", name);
    out->count = count;
    *data_offset = hstart + hlen;
    return 0;
}

/* Read the preamble of f (at offset 0) into a malloc'd buffer of *len bytes. */
static unsigned char *read_preamble(FILE *f, const char *path, size_t *len, pgd_err *err)
{
    unsigned char head[12];
    size_t got = fread(head, 1, sizeof head, f);
    if (got < 10 || memcmp(head, npy_magic, 6) != 0) {
        pgd_fail(err, PGD_EFORMAT, "npy %s: bad magic (not a .npy file)", path);
        return NULL;
    }
    size_t hlen = got; /* an unknown version: the parser names it */
    if (head[6] == 1)
        hlen = 10 + ((size_t)head[8] | (size_t)head[9] << 8);
    else if ((head[6] == 2 || head[6] == 3) && got >= 12)
        hlen = 12 + ((size_t)head[8] | (size_t)head[9] << 8 | (size_t)head[10] << 16 | (size_t)head[11] << 24);
    if (hlen > (1u << 24)) {
        pgd_fail(err, PGD_EFORMAT, "npy %s: header of %zu bytes is implausibly large", path, hlen);
        return NULL;
    }
    unsigned char *buf = malloc(hlen > got ? hlen : got);
    if (!buf) {
        pgd_fail(err, PGD_ENOMEM, "npy %s: out of memory", path);
        return NULL;
    }
    memcpy(buf, head, got);
    size_t more = hlen > got ? hlen - got : 0;
    *len = got + (more ? fread(buf + got, 1, more, f) : 0);
    return buf;
}

int pgd_npy_read(const char *path, pgd_npy *out, pgd_err *err)
{
    unsigned char *pre = NULL;
    size_t plen = 0, off = 0;
    struct stat st;
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "npy %s: open", path);
    if (!(pre = read_preamble(f, path, &plen, err)) || pgd_npy_parse(path, pre, plen, out, &off, err) != 0)
        goto fail;
    if (fstat(fileno(f), &st) != 0) {
        pgd_fail_errno(err, PGD_EIO, "npy %s: fstat", path);
        goto fail;
    }
    size_t bytes = out->count * pgd_npy_dtype_size(out->dtype);
    uint64_t have = (uint64_t)st.st_size > off ? (uint64_t)st.st_size - off : 0;
    if (have != bytes) {
        pgd_fail(err, PGD_EFORMAT, "npy %s: %llu bytes of data, the shape needs %zu", path,
                 (unsigned long long)have, bytes);
        goto fail;
    }
    if (!(out->data = malloc(bytes ? bytes : 1))) {
        pgd_fail(err, PGD_ENOMEM, "npy %s: out of memory for %zu bytes", path, bytes);
        goto fail;
    }
    if (fseek(f, (long)off, SEEK_SET) != 0 || fread(out->data, 1, bytes, f) != bytes) {
        pgd_fail_errno(err, PGD_EIO, "npy %s: read", path);
        goto fail;
    }
    free(pre);
    fclose(f);
    return 0;
fail:
    free(pre);
    fclose(f);
    pgd_npy_free(out);
    return -1;
}

void pgd_npy_free(pgd_npy *a)
{
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}
