/* gd.c: the GD baseline step: whole images through one classifier, cross-entropy, one update per batch. */
#include "trainer/gd.h"

#include <stdlib.h>

struct pgd_gd {
    pgd_gd_cfg cfg;
    pgd_backend *be;
    pgd_net *net;
    pgd_optim *opt;
    int classes;
    size_t image_bytes;
    int64_t steps;
    uint8_t *u8;            /* backend: [max_images, size, size, c] */
    float *x;               /* backend: [max_images, c, size, size] */
    int32_t *labels;
    float *loss, *probs, *dlogits;
    float *loss_host;
    pgd_scaler *scaler;     /* fp16 loss scaling, or NULL */
};

pgd_gd *pgd_gd_new(pgd_net *net, pgd_optim *opt, const pgd_gd_cfg *cfg, pgd_err *err)
{
    int c, h, w;
    pgd_net_in_shape(net, &c, &h, &w);
    if (cfg->max_images < 1 || cfg->channels < 1 || cfg->channels > 4 || c != cfg->channels || h != cfg->size ||
        w != cfg->size) {
        pgd_fail(err, PGD_EINVAL, "gd: the net takes [%d, %d, %d], the images are [%d, %d, %d]", c, h, w,
                 cfg->channels, cfg->size, cfg->size);
        return NULL;
    }
    pgd_gd *gd = calloc(1, sizeof *gd);
    if (!gd) {
        pgd_fail(err, PGD_ENOMEM, "gd: out of memory");
        return NULL;
    }
    gd->cfg = *cfg;
    gd->be = pgd_net_backend(net);
    gd->net = net;
    gd->opt = opt;
    gd->classes = (int)pgd_net_out_count(net);
    gd->image_bytes = (size_t)cfg->size * cfg->size * cfg->channels;
    size_t ni = (size_t)cfg->max_images;
    pgd_backend *be = gd->be;
    gd->u8 = be->ops->alloc(be, ni * gd->image_bytes);
    gd->x = be->ops->alloc(be, ni * gd->image_bytes * sizeof(float));
    gd->labels = be->ops->alloc(be, ni * sizeof(int32_t));
    gd->loss = be->ops->alloc(be, ni * sizeof(float));
    gd->probs = be->ops->alloc(be, ni * gd->classes * sizeof(float));
    gd->dlogits = be->ops->alloc(be, ni * gd->classes * sizeof(float));
    gd->loss_host = calloc(ni, sizeof(float));
    if (!gd->loss_host)
        pgd_fail(err, PGD_ENOMEM, "gd: out of memory");
    if (!gd->loss_host || pgd_backend_error(be, err) != 0 || pgd_net_plan(net, cfg->max_images, err) != 0) {
        pgd_gd_free(&gd);
        return NULL;
    }
    return gd;
}

void pgd_gd_free(pgd_gd **gdp)
{
    pgd_gd *gd = gdp ? *gdp : NULL;
    if (!gd)
        return;
    void *dev[] = {gd->u8, gd->x, gd->labels, gd->loss, gd->probs, gd->dlogits};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        gd->be->ops->free(gd->be, dev[i]);
    free(gd->loss_host);
    free(gd);
    *gdp = NULL;
}

/* Uploads images, runs the forward in mode, and the softmax (with labels, or zeros for prediction). */
static const float *forward(pgd_gd *gd, const uint8_t *pixels, const int32_t *labels, int images,
                            pgd_net_mode mode, pgd_err *err)
{
    pgd_backend *be = gd->be;
    if (images < 1 || images > gd->cfg.max_images) {
        pgd_fail(err, PGD_EINVAL, "gd: a step takes 1..%d images, not %d", gd->cfg.max_images, images);
        return NULL;
    }
    for (int i = 0; labels && i < images; i++)
        if (labels[i] < 0 || labels[i] >= gd->classes) {
            pgd_fail(err, PGD_EINVAL, "gd: label %d of image %d is outside 0..%d", labels[i], i, gd->classes - 1);
            return NULL;
        }
    be->ops->upload(be, gd->u8, pixels, (size_t)images * gd->image_bytes);
    be->ops->u8_to_float(be, gd->x, gd->u8, images, gd->cfg.size, gd->cfg.size, gd->cfg.channels, gd->cfg.mean,
                         gd->cfg.std);
    const float *logits = pgd_net_forward(gd->net, gd->x, images, mode,
                                          gd->cfg.seed ^ ((uint64_t)gd->steps * 0x9E3779B97F4A7C15ull), err);
    if (!logits)
        return NULL;
    if (labels)
        be->ops->upload(be, gd->labels, labels, (size_t)images * sizeof(int32_t));
    else
        be->ops->zero(be, gd->labels, (size_t)images * sizeof(int32_t));
    be->ops->xent_forward(be, gd->loss, gd->probs, logits, gd->labels, images, gd->classes);
    return pgd_backend_error(be, err) == 0 ? logits : NULL;
}

int pgd_gd_step(pgd_gd *gd, const uint8_t *pixels, const int32_t *labels, int images, float lr, float *loss,
                float *probs, pgd_err *err)
{
    pgd_backend *be = gd->be;
    if (!gd->opt)
        return pgd_fail(err, PGD_EINVAL, "gd: no optimizer: this model only predicts");
    if (!forward(gd, pixels, labels, images, PGD_NET_TRAIN, err))
        return -1;
    be->ops->xent_backward(be, gd->dlogits, gd->probs, gd->labels, images, gd->classes,
                           pgd_scaler_scale(gd->scaler) / (float)images);
    if (pgd_net_backward(gd->net, gd->dlogits, NULL, err) != 0)
        return -1;
    be->ops->download(be, gd->loss_host, gd->loss, (size_t)images * sizeof(float));
    if (probs)
        be->ops->download(be, probs, gd->probs, (size_t)images * gd->classes * sizeof(float));
    if (pgd_backend_error(be, err) != 0)
        return -1;
    double sum = 0;
    for (int i = 0; i < images; i++)
        sum += gd->loss_host[i];
    *loss = (float)(sum / images);
    gd->steps++;
    float unscale;
    int finite = pgd_scaler_check(gd->scaler, &gd->net, 1, &unscale, err);
    if (finite <= 0) /* skipped for an overflow (0), or an error */
        return finite;
    return pgd_optim_step(gd->opt, lr, unscale, err);
}

void pgd_gd_set_scaler(pgd_gd *gd, pgd_scaler *sc)
{
    gd->scaler = sc;
}

int pgd_gd_predict(pgd_gd *gd, const uint8_t *pixels, int images, float *probs, pgd_err *err)
{
    if (!forward(gd, pixels, NULL, images, PGD_NET_EVAL, err))
        return -1;
    gd->be->ops->download(gd->be, probs, gd->probs, (size_t)images * gd->classes * sizeof(float));
    return pgd_backend_error(gd->be, err);
}

void pgd_gd_get_counters(const pgd_gd *gd, int64_t *steps)
{
    *steps = gd->steps;
}

void pgd_gd_set_counters(pgd_gd *gd, int64_t steps)
{
    gd->steps = steps;
}
