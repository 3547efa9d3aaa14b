/* gd.h: the GD baseline: one classifier net on whole (downscaled) images, a step per batch. */
#ifndef PGD_GD_H
#define PGD_GD_H

#include <stdint.h>

#include "err.h"
#include "trainer/net.h"
#include "trainer/optim.h"
#include "trainer/scaler.h"

typedef struct pgd_gd_cfg {
    int max_images;         /* images per step */
    int size, channels;     /* the images: [size, size, channels] uint8 HWC */
    float mean[4], std[4];
    uint64_t seed;          /* dropout masks derive from (seed, step) */
} pgd_gd_cfg;

typedef struct pgd_gd pgd_gd;

/* net: a finished classifier taking [channels, size, size]; opt may be NULL (prediction only). Neither is
 * owned. Plans the net for max_images. */
pgd_gd *pgd_gd_new(pgd_net *net, pgd_optim *opt, const pgd_gd_cfg *cfg, pgd_err *err);
void pgd_gd_free(pgd_gd **gd);

/* One training step on `images` images (host uint8 HWC) with labels: mean cross-entropy, backward, one
 * optimizer update at learning rate lr. *loss receives the mean loss; probs (host, [images, classes], may
 * be NULL) the softmax of the train-mode forward. */
int pgd_gd_step(pgd_gd *gd, const uint8_t *pixels, const int32_t *labels, int images, float lr, float *loss,
                float *probs, pgd_err *err);

/* fp16 loss scaling, as pgd_patchgd_set_scaler: a step whose gradients are not all finite makes no update. */
void pgd_gd_set_scaler(pgd_gd *gd, pgd_scaler *sc);

/* Eval-mode forward: probs (host, [images, classes]). */
int pgd_gd_predict(pgd_gd *gd, const uint8_t *pixels, int images, float *probs, pgd_err *err);

/* The dropout-seed counter: training steps taken (*steps); the next step's masks derive from (seed, steps).
 * A run that resumes from a checkpoint sets the value saved with it, so that its masks continue where the
 * saved run was. */
void pgd_gd_get_counters(const pgd_gd *gd, int64_t *steps);
void pgd_gd_set_counters(pgd_gd *gd, int64_t steps);

#endif
