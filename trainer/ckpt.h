/* ckpt.h: checkpoints of nets (torchvision state_dict names) and of the training state, as safetensors. */
#ifndef PGD_CKPT_H
#define PGD_CKPT_H

#include <stdint.h>

#include "err.h"
#include "rng.h"
#include "trainer/net.h"
#include "trainer/optim.h"

/* One net in a checkpoint. Its tensors are stored as prefix + the net's tensor name: "" for the backbone (so
 * torchvision's names stay as they are: "layer1.0.conv1.weight"), "head." for the PatchGD head. */
typedef struct pgd_ckpt_net {
    pgd_net *net;
    const char *prefix; /* NULL is "" */
    float *m, *v;       /* training state only: the net's optimizer moments (backend memory, the layout of its
                         * params: pgd_net_param_count floats; pgd_optim's m and v). v is unused for SGD. */
} pgd_ckpt_net;

/* A metadata entry. */
typedef struct pgd_ckpt_kv {
    const char *key, *value;
} pgd_ckpt_kv;

/* --- model checkpoints --- */

/* Save the nets' PARAM and BUFFER tensors as F32 and their COUNTERs (BN num_batches_tracked) as I64 of
 * shape [], under their prefixes, into one file, atomically (safetensors.h: temporary file, fsync, rename).
 * Metadata: "format": "pt", "pgd.kind": "model", "pgd.version": "1", then meta[0..n_meta) (a key given
 * twice is an error). Two nets giving the same name is an error. */
int pgd_ckpt_save(const char *path, const pgd_ckpt_net *nets, int n_nets, const pgd_ckpt_kv *meta, int n_meta,
                  pgd_err *err);

typedef struct pgd_ckpt_load_opts {
    int ignore_extra;        /* tensors of the file that no net has are ignored (default: an error) */
    const char *const *skip; /* NULL-terminated list of name prefixes, matched against the file's names
                              * (prefix included): such tensors are neither loaded nor required, and the net
                              * keeps its own values, e.g. {"fc.", NULL} to take an ImageNet backbone whose fc
                              * has another size. NULL: none. */
} pgd_ckpt_load_opts;

/* Load the nets from path (opts NULL: the defaults). Everything is checked before any value is written, so
 * a failed load leaves the nets as they were: the file (pgd_st_open's checks, e.g. "truncated file"), then
 * for every net tensor not skipped: present ("PATH: missing tensor 'NAME'"), the same shape ("PATH: tensor
 * 'NAME': expected shape [5, 8], found [10, 8]"), a dtype it can take ("PATH: tensor 'NAME': dtype I32 is
 * not supported (want F32, F16, BF16 or F64)"; counters want I64), and then no tensor of the file left over
 * ("PATH: extra tensor 'NAME' matches no tensor of the nets (3 extra in all)") unless ignore_extra.
 * F16, BF16 and F64 values are converted to float (F64 rounded to nearest). */
int pgd_ckpt_load(const char *path, const pgd_ckpt_net *nets, int n_nets, const pgd_ckpt_load_opts *opts,
                  pgd_err *err);

/* --- training state --- */

#define PGD_CKPT_STATE_VERSION 1
#define PGD_CKPT_MAX_RNG 8

/* The scalars of a training run besides the weights: with the model file and the moments this is all that
 * continuing needs, bit for bit. */
typedef struct pgd_ckpt_state {
    pgd_opt_cfg opt;              /* optimizer kind and hyper-parameters (schedule included) */
    int64_t step;                 /* optimizer updates done (pgd_optim.step) */
    int64_t epoch;                /* where the sampler resumes: the epoch, */
    int64_t batch;                /* the image batch within it, */
    int64_t inner;                /* and the inner step within that */
    uint64_t seed;                /* the run's seed */
    int n_rng;                    /* 0..PGD_CKPT_MAX_RNG generator states kept */
    pgd_rng rng[PGD_CKPT_MAX_RNG];
} pgd_ckpt_state;

/* Save the state: for each PARAM tensor NAME (with its net's prefix) "m.NAME" and "v.NAME" (Adam, AdamW) or
 * "momentum.NAME" (SGD) as F32 from the nets' m / v, and metadata strings: "pgd.kind": "train-state",
 * "pgd.version", "optimizer" (adam|adamw|sgd), "lr", "beta1", "beta2", "eps", "weight_decay", "momentum"
 * (floats as "%.9g", which gives back the same float), "warmup_steps", "total_steps", "step", "epoch",
 * "batch", "inner", "seed" (decimal), "rng.count" and "rng.0".. (64 hex digits: s[0..3] as 16 each).
 * Atomic like pgd_ckpt_save. */
int pgd_ckpt_state_save(const char *path, const pgd_ckpt_net *nets, int n_nets, const pgd_ckpt_state *st,
                        pgd_err *err);

/* Load a state saved by pgd_ckpt_state_save into st and the nets' m / v (which must be set for the
 * optimizer the file names). Checked first like pgd_ckpt_load, with no options: every moment present with
 * its tensor's shape, F32, nothing extra, every metadata value well formed ("PATH: metadata 'step': 'x' is
 * not an integer"). On failure neither st nor the moments change. */
int pgd_ckpt_state_load(const char *path, const pgd_ckpt_net *nets, int n_nets, pgd_ckpt_state *st,
                        pgd_err *err);

#endif
