/* embed.h: `pgd-trainer embed`: a model's logits or features for an NCHW float32 .npy batch. */
#ifndef PGD_EMBED_H
#define PGD_EMBED_H

#include <stdint.h>

#include "config.h"
#include "err.h"

/* The options (docs/trainer.md, "The trainer process"). */
typedef struct pgd_embed_opts {
    char *model, *weights, *input, *out, *skip;
    int features;           /* write what enters the classifier instead of the logits */
    int64_t classes, batch, threads;
} pgd_embed_opts;

/* The option table (fields of pgd_embed_opts). */
const pgd_cfg_opt *pgd_embed_options(void);

/* Read o->input (float32 [N, 3, S, S]), build o->model for S x S inputs with o->classes outputs (seed 0),
 * load o->weights when given (o->skip: a name prefix left out; with features, tensors the net lacks are
 * ignored), run it in eval mode o->batch images at a time and write o->out: float32 [N, classes], or
 * [N, features] with o->features. Errors name the file and, for weights, the tensor; an unknown model is
 * PGD_EINVAL, a bad file PGD_EFORMAT or an I/O code. */
int pgd_embed_run(const pgd_embed_opts *o, pgd_err *err);

/* argv[0] is "embed". Returns a PGD_EXIT_ code: 0 written, 1 an input could not be used, 2 bad arguments. */
int pgd_embed_main(int argc, char **argv);

#endif
