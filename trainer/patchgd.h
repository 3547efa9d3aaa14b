/* patchgd.h: Patch Gradient Descent over a backbone f and a head g: Z-filling, inner steps, prediction. */
#ifndef PGD_PATCHGD_H
#define PGD_PATCHGD_H

#include <stdint.h>

#include "err.h"
#include "trainer/net.h"
#include "trainer/optim.h"
#include "trainer/scaler.h"

/* Z is a block [images, s, m*n] in backend memory, one row per image of the current batch ("slot"); a
 * cell is named by slot * m*n + row * n + col everywhere below. The backbone f maps a patch [c, p, p] to
 * an s-vector; the head g maps [s, m, n] to class logits. */
typedef struct pgd_patchgd_cfg {
    int max_images;         /* B: Z slots */
    int m, n;               /* grid */
    int patch, channels;    /* p, c of the patches */
    int max_patches;        /* patches per backbone forward (fill chunks; an inner step must fit in one
                             * without inner_chunk) */
    int epsilon;            /* inner steps accumulated per optimizer update (Algorithm 1) */
    int fill_train_mode;    /* 1: BN uses batch statistics during Z-filling (the reference code); 0: eval */
    int freeze_bn;          /* 1: f's BN keeps its running statistics: inner steps run f in PGD_NET_FROZEN_BN
                             * mode (BN on the running statistics, gamma and beta still trained, dropout on);
                             * needs fill_train_mode 0, which would move them. 0: f in train mode */
    int inner_chunk;        /* 0: an inner step runs f once on its count <= max_patches patches, keeping their
                             * activations. c > 0: every forward of f takes at most min(c, max_patches) patches;
                             * an inner step takes any count: forwards without backward to fill Z, g, then per
                             * chunk a forward again and the backward of that chunk's slice of dZ. f's memory is
                             * that of one chunk whatever k. The same step as c = 0: f's gradients up to float
                             * summation order, the rest byte for byte where the backend rounds a patch alike in
                             * any batch size (docs/trainer.md). Needs freeze_bn when f has batch norm. */
    float mean[4], std[4];  /* per-channel normalisation of the uint8 pixels */
    uint64_t seed;          /* dropout masks derive from (seed, inner step) */
} pgd_patchgd_cfg;

typedef struct pgd_patchgd pgd_patchgd;

/* Takes f and g (finished nets on one backend; f's input [c, p, p], output s; g's input [s, m, n], output
 * classes) and their optimizers (NULL for inference only); it does not own them. Plans their activations. */
pgd_patchgd *pgd_patchgd_new(pgd_net *f, pgd_net *g, pgd_optim *opt_f, pgd_optim *opt_g,
                             const pgd_patchgd_cfg *cfg, pgd_err *err);
void pgd_patchgd_free(pgd_patchgd **pg);

/* Algorithm 2 for `count` patches (uint8 HWC, host memory) at cells[count]: f without gradient, the
 * outputs written to their Z cells. Any number of patches (chunked by max_patches). */
int pgd_patchgd_fill(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count, pgd_err *err);

/* One inner iteration of Algorithm 1 over the images in slots 0..images-1: f WITH gradient on the count
 * fresh patches, their Z cells overwritten, g on Z, mean cross-entropy against labels[images], backward
 * into g and through the fresh cells only into f. Gradients accumulate; every epsilon-th call applies
 * one optimizer update with the gradients divided by epsilon. *loss receives the mean loss. count is at most
 * max_patches, or any number of distinct cells with inner_chunk (run in chunks, see pgd_patchgd_cfg). */
int pgd_patchgd_inner(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count,
                      const int32_t *labels, int images, float *loss, pgd_err *err);

/* The learning rate of the next updates (both optimizers); the caller follows its schedule (pgd_opt_lr).
 * Starts at the backbone optimizer's cfg.lr. */
void pgd_patchgd_set_lr(pgd_patchgd *pg, float lr);

/* fp16 loss scaling (scaler.h; NULL: none, the default): the loss gradient is multiplied by its scale, and an
 * update whose gradients are not all finite is skipped (gradients dropped; the scaler counts it). Not owned. */
void pgd_patchgd_set_scaler(pgd_patchgd *pg, pgd_scaler *sc);

/* Applies a pending partial accumulation now (at an epoch end), scaled by the steps it holds. */
int pgd_patchgd_flush(pgd_patchgd *pg, pgd_err *err);

/* g in eval mode on Z's slots 0..images-1; probs (host, [images, classes]) receives softmax(logits). */
int pgd_patchgd_predict(pgd_patchgd *pg, int images, float *probs, pgd_err *err);

/* The softmax of the last inner step's train-mode forward: probs (host, [images, classes]). */
int pgd_patchgd_train_probs(pgd_patchgd *pg, int images, float *probs, pgd_err *err);

/* Raise max_patches to `patches` (an inner step without inner_chunk must fit in one forward); Z is kept. The
 * buffers and f's activations grow to min(inner_chunk, patches) patches with inner_chunk, so at most to one
 * chunk. */
int pgd_patchgd_reserve(pgd_patchgd *pg, int patches, pgd_err *err);

/* Z (backend memory, [max_images, s, m*n]) and the inner steps taken. */
float *pgd_patchgd_z(pgd_patchgd *pg);
int64_t pgd_patchgd_steps(const pgd_patchgd *pg);

/* The dropout-seed counters: backbone forwards made by Z-filling so far (*fills) and inner steps taken
 * (*steps); the seeds of the next fill chunk and the next inner step derive from them. A run that resumes
 * from a checkpoint sets the values saved with it, so that its masks continue where the saved run was. */
void pgd_patchgd_get_counters(const pgd_patchgd *pg, int64_t *fills, int64_t *steps);
void pgd_patchgd_set_counters(pgd_patchgd *pg, int64_t fills, int64_t steps);

#endif
