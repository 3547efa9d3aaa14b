/* run.h: `pgd-trainer run`: consume a sampler's stream and train (PatchGD or GD), evaluate or predict. */
#ifndef PGD_RUN_H
#define PGD_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "err.h"
#include "metrics.h"
#include "progress.h"
#include "sampler/batch_rx.h"
#include "trainer/gd.h"
#include "trainer/net.h"
#include "trainer/optim.h"
#include "trainer/patchgd.h"
#include "trainer/plan.h"
#include "zstore/zstore.h"

enum { PGD_METHOD_PATCHGD = 0, PGD_METHOD_GD = 1 };
enum { PGD_FILL_TRAIN = 0, PGD_FILL_EVAL = 1 };
enum { PGD_DEVICE_CPU = 0, PGD_DEVICE_CUDA = 1 };

/* Every key of docs/trainer.md ("pgd-trainer run"). */
typedef struct pgd_run_opts {
    char *connect;          /* the sampler's consumer endpoint */
    int method;             /* PGD_METHOD_ */
    char *arch;             /* pgd_model_archs */
    int64_t proj;           /* s: the backbone's output per patch (PatchGD) */
    int64_t classes;
    int64_t head_width;
    int head_pool;          /* the head pools over the grid instead of flattening it */
    double dropout;         /* the head's Dropout2d */
    int64_t batch_size;     /* most images in a message (the sampler's batch_size) */
    int64_t max_patches;    /* most patches per backbone forward; 0: the largest message */
    int64_t epsilon;        /* inner steps per update; 0: all inner steps of a batch */
    int fill_mode;          /* PGD_FILL_: BN statistics during Z-filling */
    int freeze_bn;          /* the backbone's BN keeps its running statistics (PatchGD) */
    int64_t inner_chunk;    /* patches per backbone forward of an inner step; 0: one forward */
    int optimizer;          /* PGD_OPT_ */
    double lr, weight_decay, momentum;
    int64_t epochs, warmup_epochs;
    char *manifest;         /* counted for the learning-rate schedule (optional) */
    int drop_last;
    int64_t seed, threads, credit;
    int device;             /* PGD_DEVICE_: the compute backend */
    int64_t gpu;            /* CUDA device index */
    double gpu_mem_gb;      /* cap on the CUDA backend's device memory, GiB (0: the device's) */
    double mem_gb;          /* the memory budget the trainer plans within, GiB, any backend (0: gpu_mem_gb on cuda,
                             * else none) */
    int precision;          /* pgd_precision of the conv and linear ops */
    double loss_scale;      /* fp16: the first loss scale */
    int64_t loss_scale_interval; /* fp16: finite updates before the scale doubles (0: fixed) */
    char *weights;          /* initial weights (safetensors), or the model to evaluate */
    char *skip;             /* tensor-name prefix not loaded from weights ("fc.") */
    char *run_dir;          /* metrics.jsonl, model.safetensors, state.safetensors, predictions.csv */
    int shm;                /* PGD_BATCH_RX_SHM_ */
    int64_t idle_ms;        /* give up after this long without a message */
    int64_t log_every;      /* a progress line every this many image batches (0: only per epoch) */
    char *zstore;           /* zstore segment NAME mirroring Z (PatchGD), or NULL */
    int64_t zstore_slots;   /* its slots; 0: batch_size (train), the manifest's images or 256 (eval, infer) */
    int zstore_dtype;       /* PGD_ZDTYPE_ - 1 of a segment the trainer creates */
    int zstore_keep;        /* leave the segment at exit */
    char *z_export;         /* infer: DIR/<image_id>.npy per slide */
    char *z_heatmap;        /* infer: DIR/<image_id>.png per slide */
    char *resume;           /* a run folder with model.safetensors + state.safetensors to continue from */
    char *metrics;          /* the metrics file (default RUN_DIR/metrics.jsonl), appended */
    char *predictions_path; /* infer: the predictions file (default RUN_DIR/predictions.csv), appended */
    int64_t report_epoch;   /* eval / infer: the epoch their metrics line names; -1: the stream's */
    char *tensorboard;      /* DIR: every metrics line also as TensorBoard scalars in DIR */
    char *best;             /* eval: DIR/best.safetensors + best.json when this pass's QWK is the best yet */
    char *errors;           /* infer: the sampler's errors.tsv, turned into status=error rows at the end */
    int progress;           /* PGD_PROGRESS_OPT_: a bar on a terminal, lines otherwise */
    int64_t progress_s;     /* seconds between progress lines (not on a terminal) */
} pgd_run_opts;

enum { PGD_PROGRESS_OPT_AUTO = 0, PGD_PROGRESS_OPT_BAR, PGD_PROGRESS_OPT_LINES, PGD_PROGRESS_OPT_NO };

const pgd_cfg_opt *pgd_run_options(void);

/* One pass's tallies: a train epoch, an evaluation, an inference. */
typedef struct pgd_run_tally {
    pgd_confusion conf;
    double loss_sum;
    int64_t images, losses;
    double t0, wait_s;      /* start (pgd_clock_s), seconds spent waiting for messages */
} pgd_run_tally;

/* The trainer's state while it consumes a stream. */
typedef struct pgd_run {
    pgd_run_opts o;
    pgd_backend *be;
    pgd_net *f, *g;         /* PatchGD: backbone and head; GD: f is the classifier, g NULL */
    pgd_optim *opt_f, *opt_g;
    pgd_patchgd *pg;
    pgd_gd *gd;
    pgd_scaler *scaler;     /* fp16 training: dynamic loss scaling; else NULL */
    pgd_plan plan;          /* the memory plan (plan.req.budget 0: no budget) */
    int plan_chunk;         /* the inner_chunk the plan settled on (0: an inner step in one forward) */
    int built, patch, channels, grid_m, grid_n;
    int64_t batches_per_epoch; /* from the manifest, for the schedule; 0: unknown */
    int64_t manifest_images;   /* rows of the manifest; 0: unknown */
    int64_t tick;           /* image batches trained (the schedule's clock) */
    /* the image batch in progress */
    int have_batch;
    uint32_t epoch, batch;
    int n_slots;
    char (*slot_id)[64];    /* [batch_size] */
    int32_t *slot_label;
    int train_batch;        /* the batch had inner steps */
    float *probs;           /* host [batch_size, classes] */
    uint8_t *u8;            /* host: the patches of one message in slot order (GD: the images) */
    uint32_t *cells;        /* host: global cells of one message */
    int32_t *labels;
    pgd_run_tally tally;
    FILE *metrics, *predictions;
    struct pgd_tfevents *tb;   /* tensorboard writer, or NULL */
    pgd_progress prog;         /* the progress bar or lines of the current pass */
    int prog_started;
    int64_t prog_done;         /* batches (train) or images (eval, infer) of the pass so far */
    int eval_reported;         /* an eval metrics line was written (the best checkpoint compares it) */
    uint32_t stream_flags;     /* the flags of the last BATCH (train, eval or infer stream) */
    double last_loss, last_acc, last_qwk; /* the last metrics line's values (NaN: undefined) */
    int stop;               /* a signal asked to stop */
    /* Z mirrored to the zstore and to files (run_z.c) */
    pgd_zstore *zs;
    int zs_owned;           /* the trainer created the segment (and removes it unless zstore_keep) */
    uint32_t zs_slots;
    int64_t zs_images;      /* eval / infer: images mirrored so far (slot = this modulo zs_slots) */
    float *zt, *zb;         /* host: one image's Z as [s][m*n] (from the backend) and as [m][n][s] */
    /* resume: where the stream must start, checked on the first message */
    int resume_check;
    int64_t resume_epoch, resume_batch;
} pgd_run;

/* The predicted class: the index of the largest of probs[0..classes) (the first one on ties). */
static inline int pgd_run_argmax(const float *probs, int classes)
{
    int best = 0;
    for (int k = 1; k < classes; k++)
        if (probs[k] > probs[best])
            best = k;
    return best;
}

/* pgd-trainer run (argv[0] is "run"). Returns a PGD_EXIT_ code. */
int pgd_run_main(int argc, char **argv);

/* run_model.c: build the nets for the first message's shape, load weights, make optimizers; with a memory budget,
 * plan max_patches and inner_chunk within it (or refuse, PGD_EINVAL, before anything runs). */
int pgd_run_build(pgd_run *r, const pgd_wire_header *h, pgd_err *err);
/* The memory budget in bytes (mem_gb, else gpu_mem_gb on cuda; 0: none). */
size_t pgd_run_budget(const pgd_run_opts *o);
/* An inner step of `count` patches against the plan: -1 with a message when it needs one forward that does not
 * fit (no budget, or chunked steps: 0). */
int pgd_run_plan_inner(const pgd_run *r, int count, pgd_err *err);
void pgd_run_unbuild(pgd_run *r);

/* Metadata keys of model.safetensors that a resumed run reads: optimizer updates, image batches trained
 * (the schedule's clock), and PatchGD's dropout-seed counters (backbone forwards of Z-filling, inner steps). */
#define PGD_RUN_META_STEP "pgd.step"
#define PGD_RUN_META_TICK "pgd.tick"
#define PGD_RUN_META_FILLS "pgd.fills"
#define PGD_RUN_META_INNER_STEPS "pgd.inner_steps"
#define PGD_RUN_META_GD_STEPS "pgd.gd_steps"
#define PGD_RUN_META_SCALE "pgd.loss_scale"          /* fp16 runs: the loss scaler's state (scaler.h) */
#define PGD_RUN_META_SCALE_GOOD "pgd.loss_scale_good"
#define PGD_RUN_META_SCALE_SKIPPED "pgd.loss_scale_skipped"
#define PGD_RUN_META_SCALE_STREAK "pgd.loss_scale_streak"

/* run_out.c: the run folder: metrics lines, predictions, checkpoints. */
int pgd_run_out_open(pgd_run *r, pgd_err *err);
void pgd_run_out_close(pgd_run *r);
void pgd_run_tally_reset(pgd_run_tally *t);
/* Writes one metrics line (phase "train", "eval", "infer") and logs it. */
void pgd_run_report(pgd_run *r, const char *phase, uint32_t epoch);
int pgd_run_predictions(pgd_run *r, int images, pgd_err *err);
/* At the end of a train epoch: model.safetensors (with the counters a resume needs in its metadata) and,
 * when training, state.safetensors; next_epoch is where a resumed stream starts (batch 0). */
int pgd_run_checkpoint(pgd_run *r, uint32_t next_epoch, pgd_err *err);

/* run_report.c: TensorBoard scalars of a metrics line, the best checkpoint by validation QWK, status=error rows of
 * an inference for the slides the sampler could not read, progress. */
int pgd_run_board(pgd_run *r, const char *phase, uint32_t epoch, double images_per_s, double data_wait,
                  pgd_err *err);
int pgd_run_best(pgd_run *r, uint32_t epoch, pgd_err *err);
int pgd_run_error_rows(pgd_run *r, pgd_err *err);
/* Opens predictions.csv for appending (the header when it is empty); a no-op when open or without a path. */
int pgd_run_predictions_open(pgd_run *r, pgd_err *err);
/* At an image batch end: advance the progress of the pass (its epoch, phase and the batch's images). */
void pgd_run_progress(pgd_run *r, const pgd_wire_header *h);
void pgd_run_progress_end(pgd_run *r);

/* run_tools.c: `pgd-trainer kfold|pending|scan|state`: the launchers' helpers (argv[0] is the command). */
int pgd_run_tool_main(int argc, char **argv);

/* run_resume.c: `resume RUN_DIR`: the files are there (before anything runs); after the build, load the model,
 * the optimizer moments and the counters. */
int pgd_run_resume_check(const pgd_run *r, pgd_err *err);
int pgd_run_resume_load(pgd_run *r, pgd_err *err);

/* run_z.c: Z into the zstore segment and, for inference, into files. open after the build (flags: the
 * first message's); batch at every image batch end for the batch's n_slots images; close removes the
 * segment the trainer created unless zstore_keep. */
int pgd_run_z_open(pgd_run *r, uint32_t flags, pgd_err *err);
int pgd_run_z_batch(pgd_run *r, pgd_err *err);
void pgd_run_z_close(pgd_run *r);

#endif
