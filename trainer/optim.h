/* optim.h: an optimizer over one net's parameter buffer (Adam, AdamW, SGD-momentum) and the learning-rate schedule. */
#ifndef PGD_OPTIM_H
#define PGD_OPTIM_H

#include <stdint.h>

#include "err.h"
#include "trainer/net.h"

typedef enum pgd_opt_kind { PGD_OPT_ADAM, PGD_OPT_ADAMW, PGD_OPT_SGD } pgd_opt_kind;

typedef struct pgd_opt_cfg {
    pgd_opt_kind kind;
    float lr;               /* peak learning rate */
    float beta1, beta2, eps;/* Adam: 0.9, 0.999, 1e-8 */
    float weight_decay;
    float momentum;         /* SGD */
    int64_t warmup_steps;   /* schedule (pgd_opt_lr): linear warm-up over this many ticks (0: none) */
    int64_t total_steps;    /* then linear decay to 0 at this tick (0: constant after warm-up) */
} pgd_opt_cfg;

/* Adam with lr 1e-3 and PyTorch's default betas and eps, no schedule. */
pgd_opt_cfg pgd_opt_defaults(void);

/* The learning rate at tick `step` (1 for the first; the trainer ticks once per image batch):
 *   lr * step / warmup                              while step <= warmup_steps,
 *   lr * (total - step) / (total - warmup)          after it, clamped at 0, when total_steps > warmup_steps,
 *   lr                                              otherwise. */
float pgd_opt_lr(const pgd_opt_cfg *cfg, int64_t step);

typedef struct pgd_optim {
    pgd_opt_cfg cfg;
    pgd_net *net;
    int64_t step;           /* updates done so far */
    float *m, *v;           /* moments, the layout of the net's params (backend memory); v NULL for SGD */
} pgd_optim;

/* Moments allocated on the net's backend, zeroed. The net must be finished. */
pgd_optim *pgd_optim_new(pgd_net *net, const pgd_opt_cfg *cfg, pgd_err *err);
void pgd_optim_free(pgd_optim **o);

/* One update of every parameter with learning rate lr from the net's gradients times grad_scale (1/epsilon
 * after epsilon accumulated steps), then the gradients are zeroed. */
int pgd_optim_step(pgd_optim *o, float lr, float grad_scale, pgd_err *err);

#endif
