/* ckpt_state.c: the training-state file: optimizer moments as tensors, run scalars as metadata strings. */
#include "trainer/ckpt_int.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ck_opt_names[] = {[PGD_OPT_ADAM] = "adam", [PGD_OPT_ADAMW] = "adamw",
                                           [PGD_OPT_SGD] = "sgd"};

/* The moment tensors of one optimizer kind: name prefixes and which buffer of pgd_ckpt_net. */
static int ck_moments(pgd_opt_kind kind, const char **names)
{
    if (kind == PGD_OPT_SGD) {
        names[0] = "momentum.";
        return 1;
    }
    names[0] = "m.";
    names[1] = "v.";
    return 2;
}

static float *ck_moment_buf(const pgd_ckpt_net *n, int which)
{
    return which == 0 ? n->m : n->v;
}

static int ck_check_kind(pgd_opt_kind kind, const char *what, pgd_err *err)
{
    if ((unsigned)kind > PGD_OPT_SGD)
        return pgd_fail(err, PGD_EINVAL, "%s: unknown optimizer kind %d", what, (int)kind);
    return 0;
}

/* --- saving --------------------------------------------------------------------------------------------- */

static void ck_meta_fmt(pgd_st_writer *w, const char *key, pgd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void ck_meta_fmt(pgd_st_writer *w, const char *key, pgd_err *err, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pgd_st_writer_meta(w, key, buf, err);
}

static void ck_put_scalars(pgd_st_writer *w, const pgd_ckpt_state *st, pgd_err *err)
{
    const pgd_opt_cfg *o = &st->opt;
    pgd_st_writer_meta(w, "pgd.kind", "train-state", err);
    ck_meta_fmt(w, "pgd.version", err, "%d", PGD_CKPT_STATE_VERSION);
    pgd_st_writer_meta(w, "optimizer", ck_opt_names[o->kind], err);
    ck_meta_fmt(w, "lr", err, "%.9g", (double)o->lr);
    ck_meta_fmt(w, "beta1", err, "%.9g", (double)o->beta1);
    ck_meta_fmt(w, "beta2", err, "%.9g", (double)o->beta2);
    ck_meta_fmt(w, "eps", err, "%.9g", (double)o->eps);
    ck_meta_fmt(w, "weight_decay", err, "%.9g", (double)o->weight_decay);
    ck_meta_fmt(w, "momentum", err, "%.9g", (double)o->momentum);
    ck_meta_fmt(w, "warmup_steps", err, "%" PRId64, o->warmup_steps);
    ck_meta_fmt(w, "total_steps", err, "%" PRId64, o->total_steps);
    ck_meta_fmt(w, "step", err, "%" PRId64, st->step);
    ck_meta_fmt(w, "epoch", err, "%" PRId64, st->epoch);
    ck_meta_fmt(w, "batch", err, "%" PRId64, st->batch);
    ck_meta_fmt(w, "inner", err, "%" PRId64, st->inner);
    ck_meta_fmt(w, "seed", err, "%" PRIu64, st->seed);
    ck_meta_fmt(w, "rng.count", err, "%d", st->n_rng);
    for (int i = 0; i < st->n_rng; i++) {
        char key[32];
        snprintf(key, sizeof key, "rng.%d", i);
        const uint64_t *s = st->rng[i].s;
        ck_meta_fmt(w, key, err, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, s[0], s[1], s[2], s[3]);
    }
}

int pgd_ckpt_state_save(const char *path, const pgd_ckpt_net *nets, int n_nets, const pgd_ckpt_state *st,
                        pgd_err *err)
{
    if (ck_check_kind(st->opt.kind, path, err) != 0)
        return -1;
    if (st->n_rng < 0 || st->n_rng > PGD_CKPT_MAX_RNG)
        return pgd_fail(err, PGD_EINVAL, "%s: %d generator states (at most %d)", path, st->n_rng,
                        PGD_CKPT_MAX_RNG);
    pgd_st_writer *w = pgd_st_writer_new(err);
    if (!w)
        return -1;
    ck_put_scalars(w, st, err);
    const char *kinds[2];
    int n_kinds = ck_moments(st->opt.kind, kinds), rc = -1;
    for (int k = 0; k < n_nets; k++) {
        pgd_net *net = nets[k].net;
        pgd_backend *be = pgd_net_backend(net);
        for (int j = 0; j < n_kinds; j++) {
            float *buf = ck_moment_buf(&nets[k], j);
            if (!buf) {
                pgd_fail(err, PGD_EINVAL, "%s: net '%s' has no %s buffer", path, nets[k].prefix ? nets[k].prefix : "",
                         j ? "v" : "m");
                goto done;
            }
            for (int i = 0; i < pgd_net_tensor_count(net); i++) {
                const pgd_tensor_info *info = pgd_net_tensor(net, i);
                char name[512];
                if (info->kind != PGD_TENSOR_PARAM)
                    continue;
                if (pgd_ckpt_name(name, sizeof name, kinds[j], nets[k].prefix, info->name, err) != 0 ||
                    pgd_ckpt_put(w, name, info, buf + info->offset, be, err) != 0)
                    goto done;
            }
        }
        if (pgd_backend_error(be, err) != 0)
            goto done;
    }
    rc = pgd_st_writer_commit(w, path, err);
done:
    pgd_st_writer_free(&w);
    return rc;
}

/* --- loading -------------------------------------------------------------------------------------------- */

/* Metadata value of key, or NULL with an error. */
static const char *ck_meta(const pgd_ckpt_plan *p, const char *key, pgd_err *err)
{
    const char *v = pgd_st_meta(p->f, key);
    if (!v)
        pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s' is missing", p->path, key);
    return v;
}

static int ck_meta_i64(const pgd_ckpt_plan *p, const char *key, int64_t *out, pgd_err *err)
{
    const char *v = ck_meta(p, key, err);
    if (!v)
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s': '%.40s' is not an integer", p->path, key, v);
    *out = x;
    return 0;
}

static int ck_meta_u64(const pgd_ckpt_plan *p, const char *key, uint64_t *out, pgd_err *err)
{
    const char *v = ck_meta(p, key, err);
    if (!v)
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *v == '-' || *v == '+' || *end || errno)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s': '%.40s' is not an unsigned integer", p->path, key, v);
    *out = x;
    return 0;
}

static int ck_meta_float(const pgd_ckpt_plan *p, const char *key, float *out, pgd_err *err)
{
    const char *v = ck_meta(p, key, err);
    if (!v)
        return -1;
    char *end;
    float x = strtof(v, &end);
    if (!*v || *end || !isfinite(x))
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s': '%.40s' is not a finite number", p->path, key, v);
    *out = x;
    return 0;
}

/* 64 hex digits into the four state words. */
static int ck_meta_rng(const pgd_ckpt_plan *p, int i, pgd_rng *r, pgd_err *err)
{
    char key[32];
    snprintf(key, sizeof key, "rng.%d", i);
    const char *v = ck_meta(p, key, err);
    if (!v)
        return -1;
    if (strlen(v) != 64 || strspn(v, "0123456789abcdefABCDEF") != 64)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s': '%.70s' is not 64 hex digits", p->path, key, v);
    for (int w = 0; w < 4; w++) {
        char word[17];
        memcpy(word, v + 16 * w, 16);
        word[16] = 0;
        r->s[w] = strtoull(word, NULL, 16);
    }
    return 0;
}

static int ck_read_optimizer(const pgd_ckpt_plan *p, pgd_opt_cfg *o, pgd_err *err)
{
    const char *name = ck_meta(p, "optimizer", err);
    if (!name)
        return -1;
    int kind = -1;
    for (int k = 0; k <= PGD_OPT_SGD; k++)
        if (strcmp(name, ck_opt_names[k]) == 0)
            kind = k;
    if (kind < 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata 'optimizer': '%.40s' is not adam, adamw or sgd", p->path,
                        name);
    o->kind = (pgd_opt_kind)kind;
    if (ck_meta_float(p, "lr", &o->lr, err) || ck_meta_float(p, "beta1", &o->beta1, err) ||
        ck_meta_float(p, "beta2", &o->beta2, err) || ck_meta_float(p, "eps", &o->eps, err) ||
        ck_meta_float(p, "weight_decay", &o->weight_decay, err) || ck_meta_float(p, "momentum", &o->momentum, err) ||
        ck_meta_i64(p, "warmup_steps", &o->warmup_steps, err) || ck_meta_i64(p, "total_steps", &o->total_steps, err))
        return -1;
    return 0;
}

static int ck_read_scalars(const pgd_ckpt_plan *p, pgd_ckpt_state *st, pgd_err *err)
{
    const char *kind = pgd_st_meta(p->f, "pgd.kind"), *version = pgd_st_meta(p->f, "pgd.version");
    if (!kind || strcmp(kind, "train-state") != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: not a training-state file (pgd.kind is %s%.40s%s)", p->path,
                        kind ? "'" : "", kind ? kind : "missing", kind ? "'" : "");
    char want[16];
    snprintf(want, sizeof want, "%d", PGD_CKPT_STATE_VERSION);
    if (!version || strcmp(version, want) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: training-state version '%.40s' is not supported (this build reads %s)",
                        p->path, version ? version : "", want);
    int64_t n_rng;
    if (ck_read_optimizer(p, &st->opt, err) || ck_meta_i64(p, "step", &st->step, err) ||
        ck_meta_i64(p, "epoch", &st->epoch, err) || ck_meta_i64(p, "batch", &st->batch, err) ||
        ck_meta_i64(p, "inner", &st->inner, err) || ck_meta_u64(p, "seed", &st->seed, err) ||
        ck_meta_i64(p, "rng.count", &n_rng, err))
        return -1;
    if (n_rng < 0 || n_rng > PGD_CKPT_MAX_RNG)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata 'rng.count': %" PRId64 " is not in 0..%d", p->path, n_rng,
                        PGD_CKPT_MAX_RNG);
    st->n_rng = (int)n_rng;
    for (int i = 0; i < st->n_rng; i++)
        if (ck_meta_rng(p, i, &st->rng[i], err) != 0)
            return -1;
    return 0;
}

int pgd_ckpt_state_load(const char *path, const pgd_ckpt_net *nets, int n_nets, pgd_ckpt_state *st,
                        pgd_err *err)
{
    pgd_ckpt_plan p;
    if (pgd_ckpt_plan_open(&p, path, err) != 0)
        return -1;
    pgd_ckpt_state got = {0};
    int rc = -1;
    if (ck_read_scalars(&p, &got, err) != 0)
        goto done;
    const char *kinds[2];
    int n_kinds = ck_moments(got.opt.kind, kinds);
    for (int k = 0; k < n_nets; k++) {
        pgd_net *net = nets[k].net;
        for (int j = 0; j < n_kinds; j++) {
            float *buf = ck_moment_buf(&nets[k], j);
            if (!buf) {
                pgd_fail(err, PGD_EINVAL, "%s: %s state needs a %s buffer for net '%s'", path,
                         ck_opt_names[got.opt.kind], j ? "v" : "m", nets[k].prefix ? nets[k].prefix : "");
                goto done;
            }
            for (int i = 0; i < pgd_net_tensor_count(net); i++) {
                const pgd_tensor_info *info = pgd_net_tensor(net, i);
                char name[512];
                if (info->kind != PGD_TENSOR_PARAM)
                    continue;
                if (pgd_ckpt_name(name, sizeof name, kinds[j], nets[k].prefix, info->name, err) != 0 ||
                    pgd_ckpt_plan_add(&p, name, info, buf + info->offset, pgd_net_backend(net), 1, err) != 0)
                    goto done;
            }
        }
    }
    if (pgd_ckpt_plan_check_extra(&p, NULL, err) != 0 || pgd_ckpt_plan_apply(&p, err) != 0)
        goto done;
    *st = got;
    rc = 0;
done:
    pgd_ckpt_plan_close(&p);
    return rc;
}
