/* patchgd_bench.c: the trainer's PatchGD steps fed from memory: training and inference images per second and
 * the backend's peak memory for one configuration (bench/gpu/run.sh puts it beside a PyTorch PatchGD).
 *
 *   build/bench/patchgd_bench [--arch resnet50] [--fit 4096] [--patch 256] [--sampling 0.1] [--batch 4]
 *       [--s 256] [--head-width 256] [--classes 6] [--fill-chunk 64] [--max-patches P] [--inner-chunk C]
 *       [--batches 3] [--warmup 1] [--device cpu|cuda] [--precision fp32|bf16|fp16] [--mem-gb G] [--threads T]
 *       [--json]
 *
 * A batch is what pgd-trainer does with one batch of the sampler's training stream (docs/schedule.md), with the
 * schedule's own numbers (pgd_sched_plan_grid: k = ceil(sampling * cells), zeta = ceil(cells / k) inner steps,
 * the last one of last_k cells, every cell once): Z-filling of the B images' m x m cells in chunks of
 * fill-chunk patches (no gradient, BN on batch statistics as the reference code), then zeta inner steps of
 * B x k patches (one forward when max-patches allows it, the default; or chunks of inner-chunk with frozen BN),
 * one optimizer update (Adam) per batch (epsilon = zeta); the head has pgd-trainer's default dropout, 0.2.
 * Inference (nets without gradient buffers, as pgd-trainer builds them for it): Z-filling in eval mode and the
 * head's prediction. The pixels are random uint8 patches in host memory, uploaded by each fill and inner step
 * as the trainer's are; every timed batch ends with a result on the host (the loss, the probabilities), so the
 * device has finished it. Inference runs first, so the peak of its backend memory is its own; training's peak
 * follows. --mem-gb caps the backend's memory (pgd-trainer's
 * gpu_mem_gb / mem_gb), planned as pgd-trainer plans (trainer/plan.h): max-patches 0 becomes the most patches
 * per forward that fit, --batch 0 the largest batch whose inner step fits one forward (--batches 0 only prints
 * it); a configuration that does not fit fails with the budget message.
 * Prints one table row (or, with --json, one JSON object) of: images/s for training and inference, ms per
 * batch, peak backend MiB of each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "rng.h"
#include "sampler/schedule.h"
#include "trainer/backend.h"
#include "trainer/model.h"
#include "trainer/optim.h"
#include "trainer/patchgd.h"
#include "trainer/plan.h"

typedef struct opts {
    const char *arch, *device, *precision;
    int fit, patch, batch, s, width, classes, fill_chunk, max_patches, inner_chunk, batches, warmup, threads, json;
    double sampling, mem_gb;
} opts;

typedef struct bench {
    opts o;
    pgd_backend *be;
    pgd_sched_plan plan;
    int cells;               /* m * m per image */
    size_t pbytes;           /* bytes of one patch */
    uint8_t *pixels;         /* every patch of the B images, cell order (cell = image * cells + index) */
    uint8_t *picked;         /* the patches of one inner step */
    uint32_t *all, *order, *step_cells;
    int32_t *labels;
    float *probs;
    pgd_rng rng;
} bench;

typedef struct result {
    double ms, images_per_s;
    size_t peak;
} result;

static int fail(const char *what, const pgd_err *err)
{
    fprintf(stderr, "patchgd_bench: %s: %s\n", what, err->msg);
    return -1;
}

static pgd_patchgd *make_pg(bench *b, pgd_net *f, pgd_net *g, pgd_optim *of, pgd_optim *og, int train, pgd_err *err)
{
    const opts *o = &b->o;
    pgd_patchgd_cfg c = {0};
    int step = o->batch * (int)b->plan.k;
    c.max_images = o->batch;
    c.m = c.n = o->fit / o->patch;
    c.patch = o->patch, c.channels = 3;
    int want = train && !o->inner_chunk && step > o->fill_chunk ? step : o->fill_chunk;
    c.max_patches = o->max_patches ? o->max_patches : want;
    if (!train && c.max_patches > o->fill_chunk) /* inference forwards no more than a fill message */
        c.max_patches = o->fill_chunk;
    c.epsilon = (int)b->plan.zeta;
    c.fill_train_mode = train && !o->inner_chunk;
    c.freeze_bn = train && o->inner_chunk > 0;
    c.inner_chunk = train ? o->inner_chunk : 0;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    memcpy(c.mean, mean, sizeof mean);
    memcpy(c.std, sd, sizeof sd);
    c.seed = 7;
    return pgd_patchgd_new(f, g, of, og, &c, err);
}

/* Z-filling of every cell of the batch, in chunks of fill-chunk patches as the sampler sends them. */
static int fill(bench *b, pgd_patchgd *pg, pgd_err *err)
{
    int total = b->o.batch * b->cells;
    for (int at = 0; at < total; at += b->o.fill_chunk) {
        int count = total - at < b->o.fill_chunk ? total - at : b->o.fill_chunk;
        if (pgd_patchgd_fill(pg, b->pixels + (size_t)at * b->pbytes, b->all + at, count, err) != 0)
            return -1;
    }
    return 0;
}

/* One training batch: fill, then zeta inner steps over a fresh permutation of each image's cells. */
static int train_batch(bench *b, pgd_patchgd *pg, pgd_err *err)
{
    const opts *o = &b->o;
    if (fill(b, pg, err) != 0)
        return -1;
    for (int i = 0; i < o->batch; i++) {
        uint32_t *p = b->order + (size_t)i * b->cells;
        for (int c = 0; c < b->cells; c++)
            p[c] = (uint32_t)c;
        for (int c = b->cells - 1; c > 0; c--) {
            uint32_t j = pgd_rng_below(&b->rng, (uint32_t)c + 1), t = p[c];
            p[c] = p[j], p[j] = t;
        }
    }
    for (uint32_t step = 0; step < b->plan.zeta; step++) {
        int k = step + 1 == b->plan.zeta ? (int)b->plan.last_k : (int)b->plan.k, count = 0;
        for (int i = 0; i < o->batch; i++)
            for (int j = 0; j < k; j++) {
                const uint32_t *p = b->order + (size_t)i * b->cells + step * b->plan.k;
                uint32_t cell = (uint32_t)i * (uint32_t)b->cells + p[j];
                b->step_cells[count] = cell;
                memcpy(b->picked + (size_t)count * b->pbytes, b->pixels + (size_t)cell * b->pbytes, b->pbytes);
                count++;
            }
        float loss;
        if (pgd_patchgd_inner(pg, b->picked, b->step_cells, count, b->labels, o->batch, &loss, err) != 0)
            return -1;
    }
    return 0;
}

static int infer_batch(bench *b, pgd_patchgd *pg, pgd_err *err)
{
    return fill(b, pg, err) != 0 ? -1 : pgd_patchgd_predict(pg, b->o.batch, b->probs, err);
}

/* warmup + batches calls of one, timed over the last `batches`; peak backend memory after. */
static int time_batches(bench *b, pgd_patchgd *pg, int (*one)(bench *, pgd_patchgd *, pgd_err *), result *r,
                        pgd_err *err)
{
    double t0 = 0;
    for (int i = 0; i < b->o.warmup + b->o.batches; i++) {
        if (i == b->o.warmup)
            t0 = pgd_clock_s();
        if (one(b, pg, err) != 0 || pgd_backend_error(b->be, err) != 0)
            return -1;
    }
    double secs = pgd_clock_s() - t0;
    pgd_mem_stats st;
    pgd_backend_mem_stats(b->be, &st);
    r->ms = secs * 1e3 / b->o.batches;
    r->images_per_s = (double)b->o.batch * b->o.batches / secs;
    r->peak = st.peak_in_use;
    return 0;
}

/* f and g as pgd-trainer builds them; forward-only for inference (no gradient buffers). */
static int nets(bench *b, int train, pgd_net **f, pgd_net **g, pgd_err *err)
{
    const opts *o = &b->o;
    int m = o->fit / o->patch;
    if (!(*f = pgd_model_build(b->be, o->arch, o->patch, o->s, 1, err)) ||
        !(*g = pgd_model_head(b->be, o->s, m, m, o->width, 0.2f, 0, o->classes, 2, err)))
        return -1;
    if (!train) {
        pgd_net_forward_only(*f);
        pgd_net_forward_only(*g);
    }
    return 0;
}

static int run(bench *b, result *train, result *infer)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *f = NULL, *g = NULL;
    pgd_optim *of = NULL, *og = NULL;
    pgd_patchgd *pg = NULL;
    int rc = -1;
    if (nets(b, 0, &f, &g, &err) != 0 || !(pg = make_pg(b, f, g, NULL, NULL, 0, &err)) ||
        time_batches(b, pg, infer_batch, infer, &err) != 0) {
        fail("inference", &err);
        goto done;
    }
    pgd_patchgd_free(&pg);
    pgd_net_free(&f), pgd_net_free(&g);
    pgd_opt_cfg oc = pgd_opt_defaults();
    if (nets(b, 1, &f, &g, &err) != 0 || !(of = pgd_optim_new(f, &oc, &err)) || !(og = pgd_optim_new(g, &oc, &err)) ||
        !(pg = make_pg(b, f, g, of, og, 1, &err)) || time_batches(b, pg, train_batch, train, &err) != 0) {
        fail("training", &err);
        goto done;
    }
    rc = 0;
done:
    pgd_patchgd_free(&pg);
    pgd_optim_free(&of), pgd_optim_free(&og);
    pgd_net_free(&f), pgd_net_free(&g);
    return rc;
}

/* The patches per backbone forward that the trainer's memory plan (trainer/plan.h) fits into --mem-gb with
 * the training nets f and g, `batch` images and the optimizer (0: not even one; -1: the plan failed). */
static int plan_most(bench *b, pgd_net *f, pgd_net *g, int batch, pgd_err *err)
{
    size_t budget = (size_t)(b->o.mem_gb * 1073741824.0);
    pgd_plan_req req = {.f = f, .g = g, .moments = 2, .images = batch, .budget = budget,
                        .overhead = pgd_plan_overhead(b->be, budget)};
    pgd_plan p;
    return pgd_plan_make(&req, &p, err) == 0 ? p.most : -1;
}

/* With --mem-gb, as pgd-trainer plans: --batch 0 becomes the largest batch (up to 4096) whose inner step (B x k
 * patches, or inner-chunk) fits one forward, and --max-patches 0 the most that fit (at most what a message
 * holds), so that Z-filling runs in forwards that fit too. */
static int plan_batch(bench *b)
{
    opts *o = &b->o;
    pgd_err err = PGD_ERR_INIT;
    pgd_net *f = NULL, *g = NULL;
    int most = -1;
    if (nets(b, 1, &f, &g, &err) == 0 && o->batch == 0) {
        most = 0;
        for (int batch = 1; batch <= 4096; batch++) {
            int n = plan_most(b, f, g, batch, &err), need = o->inner_chunk ? o->inner_chunk : batch * (int)b->plan.k;
            if (n < need) {
                most = n < 0 ? -1 : most;
                break;
            }
            o->batch = batch, most = n;
        }
    } else if (g) {
        most = plan_most(b, f, g, o->batch, &err);
    }
    pgd_net_free(&f), pgd_net_free(&g);
    if (most < 0)
        return fail("the memory plan", &err);
    if (o->batch == 0) {
        fprintf(stderr, "patchgd_bench: not even a batch of 1 fits %.3g GiB\n", o->mem_gb);
        return -1;
    }
    int largest = o->batch * (int)b->plan.k > o->fill_chunk ? o->batch * (int)b->plan.k : o->fill_chunk;
    if (o->max_patches == 0 && most > 0)
        o->max_patches = largest < most ? largest : most;
    return 0;
}

static int setup(bench *b)
{
    opts *o = &b->o;
    pgd_err err = PGD_ERR_INIT;
    pgd_sched_config sc;
    pgd_sched_config_init(&sc);
    sc.sampling = o->sampling;
    int m = o->fit / o->patch;
    if (pgd_sched_plan_grid(&sc, (uint32_t)m, (uint32_t)m, &b->plan, &err) != 0)
        return fail("the schedule", &err);
    int cuda = !strcmp(o->device, "cuda");
    b->be = cuda ? pgd_backend_cuda_new(0, o->mem_gb, &err) : pgd_backend_cpu_new(o->threads, &err);
    if (b->be && pgd_backend_set_precision(b->be, (pgd_precision)pgd_precision_parse(o->precision), &err) != 0)
        pgd_backend_free(&b->be);
    if (!b->be)
        return fail(o->device, &err);
    if (o->mem_gb > 0 && plan_batch(b) != 0)
        return -1;
    if (!cuda && o->mem_gb > 0 && pgd_backend_set_budget(b->be, (size_t)(o->mem_gb * 1073741824.0), &err) != 0)
        return fail("the budget", &err);
    b->cells = m * m;
    b->pbytes = (size_t)o->patch * o->patch * 3;
    size_t total = (size_t)o->batch * b->cells, step = (size_t)o->batch * b->plan.k;
    b->pixels = malloc(total * b->pbytes);
    b->picked = malloc(step * b->pbytes);
    b->all = malloc(total * sizeof *b->all);
    b->order = malloc(total * sizeof *b->order);
    b->step_cells = malloc(step * sizeof *b->step_cells);
    b->labels = malloc((size_t)o->batch * sizeof *b->labels);
    b->probs = malloc((size_t)o->batch * o->classes * sizeof *b->probs);
    if (!b->pixels || !b->picked || !b->all || !b->order || !b->step_cells || !b->labels || !b->probs) {
        fprintf(stderr, "patchgd_bench: out of memory for %zu patches of %d px\n", total, o->patch);
        return -1;
    }
    pgd_rng_seed(&b->rng, 1);
    for (size_t i = 0; i < total * b->pbytes; i += 8) {
        uint64_t v = pgd_rng_u64(&b->rng);
        memcpy(b->pixels + i, &v, total * b->pbytes - i < 8 ? total * b->pbytes - i : 8);
    }
    for (size_t i = 0; i < total; i++)
        b->all[i] = (uint32_t)i;
    for (int i = 0; i < o->batch; i++)
        b->labels[i] = (int32_t)(i % o->classes);
    return 0;
}

static void teardown(bench *b)
{
    pgd_backend_free(&b->be);
    free(b->pixels), free(b->picked), free(b->all), free(b->order), free(b->step_cells), free(b->labels);
    free(b->probs);
}

#define USAGE                                                                                                    \
    "usage: patchgd_bench [--arch A] [--fit F] [--patch P] [--sampling X] [--batch B] [--s S] [--head-width W] " \
    "[--classes C] [--fill-chunk N] [--max-patches N] [--inner-chunk N] [--batches N] [--warmup N] "            \
    "[--device cpu|cuda] [--precision fp32|bf16|fp16] [--mem-gb G] [--threads T] [--json]\n"

static int parse(int argc, char **argv, opts *o)
{
    *o = (opts){.arch = "resnet50", .device = "cpu", .precision = "fp32", .fit = 4096, .patch = 256, .batch = 4,
                .s = 256, .width = 256, .classes = 6, .fill_chunk = 64, .batches = 3, .warmup = 1, .sampling = 0.1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--json")) {
            o->json = 1;
            continue;
        }
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        const char **word = !strcmp(k, "--arch") ? &o->arch : !strcmp(k, "--device") ? &o->device
                            : !strcmp(k, "--precision") ? &o->precision : NULL;
        int *num = !strcmp(k, "--fit") ? &o->fit : !strcmp(k, "--patch") ? &o->patch : !strcmp(k, "--batch") ? &o->batch
                   : !strcmp(k, "--s") ? &o->s : !strcmp(k, "--head-width") ? &o->width
                   : !strcmp(k, "--classes") ? &o->classes : !strcmp(k, "--fill-chunk") ? &o->fill_chunk
                   : !strcmp(k, "--max-patches") ? &o->max_patches : !strcmp(k, "--inner-chunk") ? &o->inner_chunk
                   : !strcmp(k, "--batches") ? &o->batches : !strcmp(k, "--warmup") ? &o->warmup
                   : !strcmp(k, "--threads") ? &o->threads : NULL;
        if (word)
            *word = v;
        else if (num)
            *num = atoi(v);
        else if (!strcmp(k, "--sampling"))
            o->sampling = atof(v);
        else if (!strcmp(k, "--mem-gb"))
            o->mem_gb = atof(v);
        else
            return -1;
    }
    if (o->patch < 32 || o->fit < o->patch || o->fit % o->patch || o->batch < 0 || o->s < 1 || o->width < 1 ||
        o->classes < 2 || o->fill_chunk < 1 || o->max_patches < 0 || o->inner_chunk < 0 || o->batches < 0 ||
        o->warmup < 0 || !(o->sampling > 0 && o->sampling <= 1) || !(o->mem_gb >= 0) ||
        (o->batch == 0 && o->mem_gb == 0) || pgd_precision_parse(o->precision) < 0 ||
        (strcmp(o->device, "cpu") && strcmp(o->device, "cuda")))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    bench b = {0};
    if (parse(argc, argv, &b.o) != 0) {
        fprintf(stderr, USAGE "  (fit a multiple of patch >= 32; 0 < sampling <= 1)\n");
        return 2;
    }
    result tr = {0}, in = {0};
    int rc = setup(&b) == 0 && (b.o.batches == 0 || run(&b, &tr, &in) == 0) ? 0 : 1;
    const opts *o = &b.o;
    int m = o->fit / o->patch;
    if (rc == 0 && o->batches == 0) { /* the batch alone (--batch 0 picks it) */
        printf(o->json ? "{\"side\":\"pgd\",\"batch\":%d,\"k\":%u,\"zeta\":%u}\n" : "batch %d (k %u, zeta %u)\n",
               o->batch, b.plan.k, b.plan.zeta);
        teardown(&b);
        return 0;
    }
    if (rc == 0 && o->json)
        printf("{\"side\":\"pgd\",\"arch\":\"%s\",\"fit\":%d,\"patch\":%d,\"grid\":%d,\"k\":%u,\"zeta\":%u,"
               "\"batch\":%d,\"device\":\"%s\",\"precision\":\"%s\",\"train_images_per_s\":%.4g,\"train_ms\":%.4g,"
               "\"train_peak_mib\":%.1f,\"infer_images_per_s\":%.4g,\"infer_ms\":%.4g,\"infer_peak_mib\":%.1f}\n",
               o->arch, o->fit, o->patch, m, b.plan.k, b.plan.zeta, o->batch, o->device, o->precision,
               tr.images_per_s, tr.ms, tr.peak / 1048576.0, in.images_per_s, in.ms, in.peak / 1048576.0);
    else if (rc == 0)
        printf("patchgd_bench: %s on %s in %s, %d x %d fit, %d px patches (%d x %d), k %u, zeta %u, batch %d, "
               "%d batches\n  train %.3g images/s (%.1f ms a batch, peak %.0f MiB); infer %.3g images/s (%.1f ms, "
               "peak %.0f MiB)\n",
               o->arch, o->device, o->precision, o->fit, o->fit, o->patch, m, m, b.plan.k, b.plan.zeta, o->batch,
               o->batches, tr.images_per_s, tr.ms, tr.peak / 1048576.0, in.images_per_s, in.ms, in.peak / 1048576.0);
    teardown(&b);
    return rc;
}
