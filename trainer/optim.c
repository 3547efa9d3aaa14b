/* optim.c: Adam, AdamW and SGD-momentum over a net's contiguous parameter buffer, with warm-up and linear decay. */
#include "trainer/optim.h"

#include <stdlib.h>

pgd_opt_cfg pgd_opt_defaults(void)
{
    return (pgd_opt_cfg){.kind = PGD_OPT_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
}

float pgd_opt_lr(const pgd_opt_cfg *cfg, int64_t step)
{
    if (step < 1)
        step = 1;
    if (cfg->warmup_steps > 0 && step <= cfg->warmup_steps)
        return cfg->lr * (float)((double)step / (double)cfg->warmup_steps);
    if (cfg->total_steps > cfg->warmup_steps) {
        double left = (double)(cfg->total_steps - step) / (double)(cfg->total_steps - cfg->warmup_steps);
        return left > 0 ? cfg->lr * (float)left : 0.0f;
    }
    return cfg->lr;
}

pgd_optim *pgd_optim_new(pgd_net *net, const pgd_opt_cfg *cfg, pgd_err *err)
{
    pgd_backend *be = pgd_net_backend(net);
    size_t bytes = pgd_net_param_count(net) * sizeof(float);
    pgd_optim *o = calloc(1, sizeof *o);
    if (!o) {
        pgd_fail(err, PGD_ENOMEM, "optimizer: out of memory");
        return NULL;
    }
    o->cfg = *cfg;
    o->net = net;
    o->m = be->ops->alloc(be, bytes ? bytes : sizeof(float));
    if (cfg->kind != PGD_OPT_SGD)
        o->v = be->ops->alloc(be, bytes ? bytes : sizeof(float));
    if (pgd_backend_error(be, err) != 0) {
        pgd_optim_free(&o);
        return NULL;
    }
    return o;
}

void pgd_optim_free(pgd_optim **o)
{
    if (!o || !*o)
        return;
    pgd_backend *be = pgd_net_backend((*o)->net);
    be->ops->free(be, (*o)->m);
    be->ops->free(be, (*o)->v);
    free(*o);
    *o = NULL;
}

int pgd_optim_step(pgd_optim *o, float lr, float grad_scale, pgd_err *err)
{
    pgd_backend *be = pgd_net_backend(o->net);
    size_t count = pgd_net_param_count(o->net);
    int64_t t = ++o->step;
    if (o->cfg.kind == PGD_OPT_SGD) {
        pgd_sgd_hp hp = {.lr = lr, .momentum = o->cfg.momentum, .weight_decay = o->cfg.weight_decay,
                         .grad_scale = grad_scale, .step = t};
        be->ops->sgd_update(be, pgd_net_params(o->net), pgd_net_grads(o->net), o->m, count, &hp);
    } else {
        pgd_adam_hp hp = {.lr = lr, .beta1 = o->cfg.beta1, .beta2 = o->cfg.beta2, .eps = o->cfg.eps,
                          .weight_decay = o->cfg.weight_decay, .decoupled = o->cfg.kind == PGD_OPT_ADAMW,
                          .step = t, .grad_scale = grad_scale};
        be->ops->adam_update(be, pgd_net_params(o->net), pgd_net_grads(o->net), o->m, o->v, count, &hp);
    }
    pgd_net_zero_grad(o->net);
    return pgd_backend_error(be, err);
}
