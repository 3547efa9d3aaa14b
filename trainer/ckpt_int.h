/* ckpt_int.h: what ckpt.c and ckpt_state.c share: a load plan (checked first, applied after) and saving. */
#ifndef PGD_CKPT_INT_H
#define PGD_CKPT_INT_H

#include <stddef.h>

#include "trainer/ckpt.h"
#include "trainer/safetensors.h"

/* One value to load: the file's tensor into dst (backend memory, or a host int64 for a counter). */
typedef struct pgd_ckpt_item {
    const pgd_st_tensor *t;
    void *dst;
    pgd_backend *be;
    int is_counter;
} pgd_ckpt_item;

typedef struct pgd_ckpt_plan {
    const char *path;
    pgd_st_file *f;
    pgd_ckpt_item *items;
    size_t n, cap;
    unsigned char *claimed; /* per file tensor (pgd_st_at order): some item loads it */
} pgd_ckpt_plan;

/* Open and validate path (mapped). */
int pgd_ckpt_plan_open(pgd_ckpt_plan *p, const char *path, pgd_err *err);
void pgd_ckpt_plan_close(pgd_ckpt_plan *p);

/* Plan to load the file's tensor `name` into dst, which holds a tensor shaped like info: it must exist, have
 * info's shape and a dtype the kind takes (counters: I64; else F32, or also F16 / BF16 / F64 unless
 * f32_only). */
int pgd_ckpt_plan_add(pgd_ckpt_plan *p, const char *name, const pgd_tensor_info *info, void *dst,
                      pgd_backend *be, int f32_only, pgd_err *err);

/* Fail on the first file tensor no item claims whose name starts with none of skip (NULL-terminated). */
int pgd_ckpt_plan_check_extra(const pgd_ckpt_plan *p, const char *const *skip, pgd_err *err);

/* Write every planned value (converting to float where needed). */
int pgd_ckpt_plan_apply(const pgd_ckpt_plan *p, pgd_err *err);

/* a + b + c into buf; -1 (PGD_EINVAL naming the name) when it does not fit. */
int pgd_ckpt_name(char *buf, size_t cap, const char *a, const char *b, const char *c, pgd_err *err);

/* Add the tensor described by info, read from src (backend memory; a host int64 for a counter), to w as
 * F32 (I64 for a counter). */
int pgd_ckpt_put(pgd_st_writer *w, const char *name, const pgd_tensor_info *info, const void *src,
                 pgd_backend *be, pgd_err *err);

#endif
