/* scaler.c: dynamic loss scaling (scaler.h): the finiteness check of the gradients and the scale's rule. */
#include "trainer/scaler.h"

#include <math.h>
#include <stdlib.h>

struct pgd_scaler {
    pgd_backend *be;
    pgd_scaler_cfg cfg;
    pgd_scaler_state st;
    int32_t *flag;          /* backend memory: set by the nonfinite op */
};

pgd_scaler_cfg pgd_scaler_defaults(void)
{
    return (pgd_scaler_cfg){.init = 65536.0f, .interval = 2000, .give_up = 64};
}

pgd_scaler *pgd_scaler_new(pgd_backend *be, const pgd_scaler_cfg *cfg, pgd_err *err)
{
    if (!isfinite(cfg->init) || cfg->init < 1.0f || cfg->interval < 0 || cfg->give_up < 1) {
        pgd_fail(err, PGD_EINVAL, "loss scaling: initial scale %g (finite, >= 1), interval %d (>= 0), give-up %d "
                 "(>= 1)", (double)cfg->init, cfg->interval, cfg->give_up);
        return NULL;
    }
    pgd_scaler *sc = calloc(1, sizeof *sc);
    if (!sc) {
        pgd_fail(err, PGD_ENOMEM, "loss scaling: out of memory");
        return NULL;
    }
    sc->be = be;
    sc->cfg = *cfg;
    sc->st.scale = cfg->init;
    sc->flag = be->ops->alloc(be, sizeof(int32_t));
    if (pgd_backend_error(be, err) != 0) {
        pgd_scaler_free(&sc);
        return NULL;
    }
    return sc;
}

void pgd_scaler_free(pgd_scaler **sc)
{
    if (!sc || !*sc)
        return;
    (*sc)->be->ops->free((*sc)->be, (*sc)->flag);
    free(*sc);
    *sc = NULL;
}

float pgd_scaler_scale(const pgd_scaler *sc)
{
    return sc ? sc->st.scale : 1.0f;
}

int pgd_scaler_check(pgd_scaler *sc, pgd_net *const *nets, int count, float *unscale, pgd_err *err)
{
    *unscale = 1.0f;
    if (!sc)
        return 1;
    pgd_backend *be = sc->be;
    int32_t bad = 0;
    be->ops->zero(be, sc->flag, sizeof(int32_t));
    for (int i = 0; i < count; i++)
        if (nets[i])
            be->ops->nonfinite(be, sc->flag, pgd_net_grads(nets[i]), pgd_net_param_count(nets[i]));
    be->ops->download(be, &bad, sc->flag, sizeof bad);
    if (pgd_backend_error(be, err) != 0)
        return -1;
    if (!bad) {
        *unscale = 1.0f / sc->st.scale;
        sc->st.streak = 0;
        if (sc->cfg.interval > 0 && ++sc->st.good >= sc->cfg.interval) {
            sc->st.scale *= 2.0f; /* stays finite: beyond 2^127 every gradient of a real net overflows first */
            sc->st.good = 0;
        }
        return 1;
    }
    for (int i = 0; i < count; i++)
        if (nets[i])
            pgd_net_zero_grad(nets[i]);
    float was = sc->st.scale;
    sc->st.skipped++;
    sc->st.good = 0;
    if (sc->cfg.interval > 0 && sc->st.scale > 1.0f)
        sc->st.scale = sc->st.scale * 0.5f < 1.0f ? 1.0f : sc->st.scale * 0.5f;
    if (++sc->st.streak >= sc->cfg.give_up)
        return pgd_fail(err, PGD_EINVAL,
                        "fp16: %lld updates in a row had an infinite or NaN gradient (loss scale now %g, was %g): "
                        "the forward pass or the weights overflow fp16; train in bf16 or fp32, or lower the "
                        "learning rate", (long long)sc->st.streak, (double)sc->st.scale, (double)was);
    return pgd_backend_error(be, err) != 0 ? -1 : 0;
}

void pgd_scaler_get(const pgd_scaler *sc, pgd_scaler_state *st)
{
    *st = sc->st;
}

int pgd_scaler_set(pgd_scaler *sc, const pgd_scaler_state *st, pgd_err *err)
{
    if (!isfinite(st->scale) || st->scale < 1.0f || st->good < 0 || st->skipped < 0 || st->streak < 0)
        return pgd_fail(err, PGD_EINVAL, "loss scaling: saved state scale %g good %lld skipped %lld streak %lld",
                        (double)st->scale, (long long)st->good, (long long)st->skipped, (long long)st->streak);
    sc->st = *st;
    return 0;
}
