/* ckpt.c: saving nets to a safetensors file and loading them back, every tensor checked before any is written. */
#include "trainer/ckpt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"

/* --- shared with ckpt_state.c --------------------------------------------------------------------------- */

int pgd_ckpt_name(char *buf, size_t cap, const char *a, const char *b, const char *c, pgd_err *err)
{
    int n = snprintf(buf, cap, "%s%s%s", a ? a : "", b ? b : "", c ? c : "");
    if (n < 0 || (size_t)n >= cap)
        return pgd_fail(err, PGD_EINVAL, "checkpoint: tensor name '%s%s%.100s...' is too long", a ? a : "",
                        b ? b : "", c ? c : "");
    return 0;
}

static const char *ck_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

int pgd_ckpt_plan_open(pgd_ckpt_plan *p, const char *path, pgd_err *err)
{
    memset(p, 0, sizeof *p);
    p->path = path;
    p->f = pgd_st_open(path, PGD_ST_MMAP, err);
    if (!p->f)
        return -1;
    size_t n = pgd_st_count(p->f);
    p->claimed = calloc(n ? n : 1, 1);
    if (!p->claimed) {
        pgd_ckpt_plan_close(p);
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
    }
    return 0;
}

void pgd_ckpt_plan_close(pgd_ckpt_plan *p)
{
    pgd_st_close(&p->f);
    free(p->items);
    free(p->claimed);
    p->items = NULL;
    p->claimed = NULL;
    p->n = p->cap = 0;
}

int pgd_ckpt_plan_add(pgd_ckpt_plan *p, const char *name, const pgd_tensor_info *info, void *dst,
                      pgd_backend *be, int f32_only, pgd_err *err)
{
    const pgd_st_tensor *t = pgd_st_find(p->f, name);
    if (!t)
        return pgd_fail(err, PGD_ENOENT, "%s: missing tensor '%s'", p->path, name);
    int same = t->ndim == info->ndim;
    for (int i = 0; same && i < info->ndim; i++)
        same = t->shape[i] == info->shape[i];
    if (!same) {
        char want[160], got[160];
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%s': expected shape %s, found %s", p->path, name,
                        ck_shape_str(want, sizeof want, info->ndim, info->shape),
                        ck_shape_str(got, sizeof got, t->ndim, t->shape));
    }
    int is_counter = info->kind == PGD_TENSOR_COUNTER;
    if (is_counter ? t->dtype != PGD_ST_I64
                   : t->dtype != PGD_ST_F32 && (f32_only || (t->dtype != PGD_ST_F16 && t->dtype != PGD_ST_BF16 &&
                                                              t->dtype != PGD_ST_F64)))
        return pgd_fail(err, PGD_EFORMAT, "%s: tensor '%s': dtype %s is not supported (want %s)", p->path, name,
                        pgd_st_dtype_name(t->dtype), is_counter ? "I64" : f32_only ? "F32" : "F32, F16, BF16 or F64");
    if (p->n == p->cap) {
        size_t ncap = p->cap ? 2 * p->cap : 64;
        pgd_ckpt_item *grown = realloc(p->items, ncap * sizeof *grown);
        if (!grown)
            return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", p->path);
        p->items = grown;
        p->cap = ncap;
    }
    p->items[p->n++] = (pgd_ckpt_item){t, dst, be, is_counter};
    p->claimed[t - pgd_st_at(p->f, 0)] = 1;
    return 0;
}

static int ck_skipped(const char *name, const char *const *skip)
{
    for (size_t i = 0; skip && skip[i]; i++)
        if (strncmp(name, skip[i], strlen(skip[i])) == 0)
            return 1;
    return 0;
}

int pgd_ckpt_plan_check_extra(const pgd_ckpt_plan *p, const char *const *skip, pgd_err *err)
{
    const char *first = NULL;
    size_t extra = 0;
    for (size_t i = 0; i < pgd_st_count(p->f); i++) {
        const char *name = pgd_st_at(p->f, i)->name;
        if (p->claimed[i] || ck_skipped(name, skip))
            continue;
        if (!first)
            first = name;
        extra++;
    }
    if (extra)
        return pgd_fail(err, PGD_EFORMAT, "%s: extra tensor '%s' matches no tensor of the nets (%zu extra in all)",
                        p->path, first, extra);
    return 0;
}

/* The n values at src (dtype dt, little-endian, any alignment) as floats into out. */
static void ck_to_float(float *out, const uint8_t *src, uint64_t n, pgd_st_dtype dt)
{
    for (uint64_t i = 0; i < n; i++) {
        if (dt == PGD_ST_F64) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        } else {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            out[i] = dt == PGD_ST_F16 ? pgd_f16_to_f32(h) : pgd_bf16_to_f32(h);
        }
    }
}

int pgd_ckpt_plan_apply(const pgd_ckpt_plan *p, pgd_err *err)
{
    float *tmp = NULL;
    uint64_t tmp_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        const pgd_ckpt_item *it = &p->items[i];
        const uint8_t *src = pgd_st_data(p->f, it->t);
        size_t bytes = it->t->end - it->t->begin;
        if (it->is_counter) {
            memcpy(it->dst, src, bytes); /* I64, little-endian like the host */
            continue;
        }
        if (it->t->dtype == PGD_ST_F32) {
            it->be->ops->upload(it->be, it->dst, src, bytes);
        } else {
            if (it->t->count > tmp_cap) {
                free(tmp);
                tmp_cap = it->t->count;
                if (!(tmp = malloc(tmp_cap * sizeof *tmp))) {
                    rc = pgd_fail(err, PGD_ENOMEM, "%s: out of memory converting '%s'", p->path, it->t->name);
                    break;
                }
            }
            ck_to_float(tmp, src, it->t->count, it->t->dtype);
            it->be->ops->upload(it->be, it->dst, tmp, it->t->count * sizeof *tmp);
        }
        if (pgd_backend_error(it->be, err) != 0) {
            pgd_err_prefix(err, "%s: loading '%s': ", p->path, it->t->name);
            rc = -1;
        }
    }
    free(tmp);
    return rc;
}

int pgd_ckpt_put(pgd_st_writer *w, const char *name, const pgd_tensor_info *info, const void *src,
                 pgd_backend *be, pgd_err *err)
{
    int is_counter = info->kind == PGD_TENSOR_COUNTER;
    void *buf = pgd_st_writer_add_buffer(w, name, is_counter ? PGD_ST_I64 : PGD_ST_F32, info->ndim, info->shape,
                                         err);
    if (!buf)
        return -1;
    if (is_counter)
        memcpy(buf, src, info->count * sizeof(int64_t));
    else if (info->count)
        be->ops->download(be, buf, src, info->count * sizeof(float));
    return 0;
}

/* --- model checkpoints ------------------------------------------------------------------------------------ */

/* Where tensor info of net lives: backend memory, or the host counters. */
static void *ck_where(pgd_net *net, const pgd_tensor_info *info)
{
    switch (info->kind) {
    case PGD_TENSOR_PARAM: return pgd_net_params(net) + info->offset;
    case PGD_TENSOR_BUFFER: return pgd_net_buffers(net) + info->offset;
    default: return pgd_net_counters(net) + info->offset;
    }
}

int pgd_ckpt_save(const char *path, const pgd_ckpt_net *nets, int n_nets, const pgd_ckpt_kv *meta, int n_meta,
                  pgd_err *err)
{
    pgd_st_writer *w = pgd_st_writer_new(err);
    if (!w)
        return -1;
    pgd_st_writer_meta(w, "format", "pt", err);
    pgd_st_writer_meta(w, "pgd.kind", "model", err);
    pgd_st_writer_meta(w, "pgd.version", "1", err);
    for (int i = 0; i < n_meta; i++)
        pgd_st_writer_meta(w, meta[i].key, meta[i].value, err);
    int rc = -1;
    for (int k = 0; k < n_nets; k++) {
        pgd_net *net = nets[k].net;
        pgd_backend *be = pgd_net_backend(net);
        for (int i = 0; i < pgd_net_tensor_count(net); i++) {
            const pgd_tensor_info *info = pgd_net_tensor(net, i);
            char name[512];
            if (pgd_ckpt_name(name, sizeof name, nets[k].prefix, info->name, NULL, err) != 0 ||
                pgd_ckpt_put(w, name, info, ck_where(net, info), be, err) != 0)
                goto done;
        }
        if (pgd_backend_error(be, err) != 0)
            goto done;
    }
    rc = pgd_st_writer_commit(w, path, err);
done:
    pgd_st_writer_free(&w);
    return rc;
}

int pgd_ckpt_load(const char *path, const pgd_ckpt_net *nets, int n_nets, const pgd_ckpt_load_opts *opts,
                  pgd_err *err)
{
    static const pgd_ckpt_load_opts defaults = {0, NULL};
    if (!opts)
        opts = &defaults;
    pgd_ckpt_plan p;
    if (pgd_ckpt_plan_open(&p, path, err) != 0)
        return -1;
    int rc = -1;
    const char *kind = pgd_st_meta(p.f, "pgd.kind");
    if (kind && strcmp(kind, "model") != 0) {
        pgd_fail(err, PGD_EFORMAT, "%s: pgd.kind is '%.40s', not a model checkpoint", path, kind);
        goto done;
    }
    for (int k = 0; k < n_nets; k++) {
        pgd_net *net = nets[k].net;
        for (int i = 0; i < pgd_net_tensor_count(net); i++) {
            const pgd_tensor_info *info = pgd_net_tensor(net, i);
            char name[512];
            if (pgd_ckpt_name(name, sizeof name, nets[k].prefix, info->name, NULL, err) != 0)
                goto done;
            if (ck_skipped(name, opts->skip))
                continue;
            if (pgd_ckpt_plan_add(&p, name, info, ck_where(net, info), pgd_net_backend(net), 0, err) != 0)
                goto done;
        }
    }
    if (!opts->ignore_extra && pgd_ckpt_plan_check_extra(&p, opts->skip, err) != 0)
        goto done;
    rc = pgd_ckpt_plan_apply(&p, err);
done:
    pgd_ckpt_plan_close(&p);
    return rc;
}
