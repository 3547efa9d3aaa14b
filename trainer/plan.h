/* plan.h: the trainer's memory plan: what the nets, the optimizer, Z and one backbone forward need within a budget. */
#ifndef PGD_PLAN_H
#define PGD_PLAN_H

#include <stddef.h>

#include "err.h"
#include "trainer/net.h"

/* What a plan is made for. The nets are built and finished (nothing else needs to exist yet); the plan counts
 * every buffer that pgd_patchgd_new / pgd_gd_new, pgd_optim_new and pgd_net_plan allocate, each rounded as the
 * backend rounds allocations (pgd_plan_round). */
typedef struct pgd_plan_req {
    pgd_net *f;             /* PatchGD: the backbone; GD: the classifier */
    pgd_net *g;             /* PatchGD: the head (its input [s, m, n] gives the grid); GD: NULL */
    int moments;            /* optimizer moment buffers per parameter: 2 Adam / AdamW, 1 SGD, 0 no optimizer */
    int images;             /* B: Z slots (PatchGD) or images per step (GD) */
    size_t budget;          /* bytes the backend may hold */
    size_t overhead;        /* bytes the backend holds besides (pgd_plan_overhead) */
} pgd_plan_req;

/* The plan: fixed parts and the largest forward that fits. Every size is in bytes, as the backend reserves. */
typedef struct pgd_plan {
    pgd_plan_req req;
    size_t (*round)(size_t bytes); /* the backend's allocation granularity */
    size_t nets;            /* parameters, gradients and BN buffers of f and g */
    size_t moments;         /* the optimizer's moments of f and g */
    size_t z;               /* Z and dZ, [B, s, m*n] each (PatchGD; 0 for GD) */
    size_t head;            /* g's activations for B images, labels, losses, probabilities, logit gradients */
    size_t fixed;           /* overhead + nets + moments + z + head */
    size_t per_patch;       /* bytes(2) - bytes(1): f's activations and the patch buffers of one more patch */
    int most;               /* the largest patches (GD: images) per backbone forward within the budget; 0: none */
} pgd_plan;

/* The largest patches per forward the planner looks at (the trainer's max_patches limit). */
#define PGD_PLAN_MAX_FORWARD (1 << 24)

/* Makes the plan. Fails (PGD_EINVAL) on a request that makes no sense (no f, images < 1, budget 0, a head
 * whose input is not f's output); a budget that fits nothing is NOT a failure: plan->most is then 0 (see
 * pgd_plan_check). */
int pgd_plan_make(const pgd_plan_req *req, pgd_plan *plan, pgd_err *err);

/* Total backend bytes with `per` patches (GD: images) per backbone forward: fixed + f's activations for per
 * samples + the patch (or image) buffers of per samples + on CUDA in bf16 / fp16, the 16-bit copies the
 * largest conv or linear op holds while it runs (pgd_net_half_bytes). */
size_t pgd_plan_bytes(const pgd_plan *plan, int per);

/* 0 when `per` patches per forward fit the budget; else -1 with a PGD_EINVAL message that names `what` ("an
 * inner step of 96 patches"), the bytes it needs (fixed and per patch), the budget, the most that fit, and
 * `hint` when not NULL (what to change). */
int pgd_plan_check(const pgd_plan *plan, int per, const char *what, const char *hint, pgd_err *err);

/* One line describing the plan with `fill` patches per Z-filling forward and inner steps in chunks of `chunk`
 * (0: one forward; < 0: no inner steps, evaluation); GD (no head) names images per step instead. */
void pgd_plan_describe(const pgd_plan *plan, int fill, int chunk, char *buf, size_t len);

/* The backend's allocation granularity for a request of `bytes`: the caching allocator's size class on CUDA
 * (pgd_gpu_pool_round), glibc malloc's chunk (its usable size) on the CPU. */
size_t pgd_plan_round(const pgd_backend *be, size_t bytes);

/* Bytes a backend holds beyond the buffers the plan counts, for a budget: on CUDA the cuBLAS workspace (32
 * MiB) and the most a cuDNN algorithm may take as workspace (min(budget / 4, 1 GiB)); on the CPU 0 (its conv
 * scratch buffers are outside its counters and its budget). */
size_t pgd_plan_overhead(const pgd_backend *be, size_t budget);

#endif
