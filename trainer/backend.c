/* backend.c: the backend-independent parts of backend.h: shape checks, freeing, the sticky error. */
#include "trainer/backend.h"

#include <string.h>

int pgd_conv_shape_init(pgd_conv_shape *sh, pgd_err *err)
{
    if (sh->n <= 0 || sh->c <= 0 || sh->h <= 0 || sh->w <= 0 || sh->k <= 0 || sh->r <= 0 || sh->s <= 0)
        return pgd_fail(err, PGD_EINVAL, "conv shape: non-positive size (n %d c %d h %d w %d k %d r %d s %d)",
                        sh->n, sh->c, sh->h, sh->w, sh->k, sh->r, sh->s);
    if (sh->stride <= 0 || sh->pad < 0)
        return pgd_fail(err, PGD_EINVAL, "conv shape: stride %d pad %d", sh->stride, sh->pad);
    if (sh->groups <= 0 || sh->c % sh->groups != 0 || sh->k % sh->groups != 0)
        return pgd_fail(err, PGD_EINVAL, "conv shape: groups %d does not divide c %d and k %d", sh->groups,
                        sh->c, sh->k);
    if (sh->h + 2 * sh->pad < sh->r || sh->w + 2 * sh->pad < sh->s)
        return pgd_fail(err, PGD_EINVAL, "conv shape: kernel %dx%d larger than padded input %dx%d", sh->r, sh->s,
                        sh->h + 2 * sh->pad, sh->w + 2 * sh->pad);
    sh->oh = (sh->h + 2 * sh->pad - sh->r) / sh->stride + 1;
    sh->ow = (sh->w + 2 * sh->pad - sh->s) / sh->stride + 1;
    return 0;
}

int pgd_pool_shape_init(pgd_pool_shape *sh, pgd_err *err)
{
    if (sh->n <= 0 || sh->c <= 0 || sh->h <= 0 || sh->w <= 0 || sh->size <= 0 || sh->stride <= 0)
        return pgd_fail(err, PGD_EINVAL, "pool shape: non-positive size (n %d c %d h %d w %d size %d stride %d)",
                        sh->n, sh->c, sh->h, sh->w, sh->size, sh->stride);
    /* PyTorch's rule: padding at most half the window, so every window holds a real cell. */
    if (sh->pad < 0 || 2 * sh->pad > sh->size)
        return pgd_fail(err, PGD_EINVAL, "pool shape: pad %d must be in [0, size/2] (size %d)", sh->pad,
                        sh->size);
    if (sh->h + 2 * sh->pad < sh->size || sh->w + 2 * sh->pad < sh->size)
        return pgd_fail(err, PGD_EINVAL, "pool shape: window %d larger than padded input %dx%d", sh->size,
                        sh->h + 2 * sh->pad, sh->w + 2 * sh->pad);
    sh->oh = (sh->h + 2 * sh->pad - sh->size) / sh->stride + 1;
    sh->ow = (sh->w + 2 * sh->pad - sh->size) / sh->stride + 1;
    return 0;
}

void pgd_backend_free(pgd_backend **be)
{
    if (!be || !*be)
        return;
    (*be)->ops->destroy(*be);
    *be = NULL;
}

int pgd_backend_error(const pgd_backend *be, pgd_err *err)
{
    if (!be->err.code)
        return 0;
    if (err && !err->code)
        memcpy(err, &be->err, sizeof *err);
    return -1;
}

void pgd_backend_mem_stats(pgd_backend *be, pgd_mem_stats *st)
{
    memset(st, 0, sizeof *st);
    if (be && be->ops->mem_stats)
        be->ops->mem_stats(be, st);
}

int pgd_backend_set_budget(pgd_backend *be, size_t bytes, pgd_err *err)
{
    if (!be->ops->set_budget)
        return pgd_fail(err, PGD_EINVAL, "%s backend: the memory budget is set when the backend is made",
                        be->ops->name);
    if (be->ops->set_budget(be, bytes) != 0)
        return pgd_fail(err, PGD_EINVAL, "%s backend: cannot take a budget of %zu bytes", be->ops->name, bytes);
    return 0;
}

int pgd_backend_set_precision(pgd_backend *be, pgd_precision prec, pgd_err *err)
{
    if (prec != PGD_PREC_FP32 && prec != PGD_PREC_BF16 && prec != PGD_PREC_FP16)
        return pgd_fail(err, PGD_EINVAL, "%s backend: unknown precision %d", be->ops->name, (int)prec);
    be->precision = prec;
    return 0;
}

static const char *const precision_names[] = {"fp32", "bf16", "fp16"};

const char *pgd_precision_name(pgd_precision prec)
{
    return prec >= PGD_PREC_FP32 && prec <= PGD_PREC_FP16 ? precision_names[prec] : "?";
}

int pgd_precision_parse(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, precision_names[i]) == 0)
            return i;
    return -1;
}
