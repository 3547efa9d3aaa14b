/* run_model.c: `pgd-trainer run` builds its nets from the first message's shape, loads weights, makes optimizers,
 * plans its memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "trainer/ckpt.h"
#include "trainer/model.h"
#include "trainer/run.h"

/* ImageNet statistics, as torchvision's pretrained models expect. */
static const float mean_rgb[4] = {0.485f, 0.456f, 0.406f, 0.5f};
static const float std_rgb[4] = {0.229f, 0.224f, 0.225f, 0.25f};

static int load_weights(pgd_run *r, pgd_err *err)
{
    if (!r->o.weights)
        return 0;
    pgd_ckpt_net nets[2] = {{.net = r->f, .prefix = ""}, {.net = r->g, .prefix = ""}};
    const char *const skip[2] = {r->o.skip, NULL};
    pgd_ckpt_load_opts lo = {.skip = skip};
    if (pgd_ckpt_load(r->o.weights, nets, r->g ? 2 : 1, &lo, err) != 0)
        return -1;
    pgd_info("weights: loaded %s", r->o.weights);
    return 0;
}

static int make_optimizers(pgd_run *r, pgd_err *err)
{
    pgd_opt_cfg oc = pgd_opt_defaults();
    oc.kind = (pgd_opt_kind)r->o.optimizer;
    oc.lr = (float)r->o.lr;
    oc.weight_decay = (float)r->o.weight_decay;
    oc.momentum = (float)r->o.momentum;
    r->opt_f = pgd_optim_new(r->f, &oc, err);
    if (!r->opt_f)
        return -1;
    if (r->g && !(r->opt_g = pgd_optim_new(r->g, &oc, err)))
        return -1;
    return 0;
}

/* fp16 training scales its loss (scaler.h); bf16 has fp32's range and needs no scaling. */
static int make_scaler(pgd_run *r, pgd_err *err)
{
    if (r->o.precision != PGD_PREC_FP16)
        return 0;
    pgd_scaler_cfg sc = pgd_scaler_defaults();
    sc.init = (float)r->o.loss_scale;
    sc.interval = (int)r->o.loss_scale_interval;
    if (!(r->scaler = pgd_scaler_new(r->be, &sc, err)))
        return -1;
    if (r->pg)
        pgd_patchgd_set_scaler(r->pg, r->scaler);
    if (r->gd)
        pgd_gd_set_scaler(r->gd, r->scaler);
    return 0;
}

size_t pgd_run_budget(const pgd_run_opts *o)
{
    double gb = o->mem_gb > 0 ? o->mem_gb : o->device == PGD_DEVICE_CUDA ? o->gpu_mem_gb : 0;
    return gb > 0 ? (size_t)(gb * 1073741824.0) : 0;
}

/* The plan of the built nets (and optimizers when training) within the budget. */
static int plan_make(pgd_run *r, int train, pgd_err *err)
{
    size_t budget = pgd_run_budget(&r->o);
    pgd_plan_req req = {.f = r->f, .g = r->g, .moments = !train ? 0 : r->o.optimizer == PGD_OPT_SGD ? 1 : 2,
                        .images = (int)r->o.batch_size, .budget = budget,
                        .overhead = pgd_plan_overhead(r->be, budget)};
    return pgd_plan_make(&req, &r->plan, err);
}

/* Logs the plan and caps a backend that takes a budget now (the CPU backend; CUDA took it at creation). */
static int plan_apply(pgd_run *r, int fill, int chunk, pgd_err *err)
{
    char line[512];
    pgd_plan_describe(&r->plan, fill, chunk, line, sizeof line);
    pgd_info("%s", line);
    return r->be->ops->set_budget ? pgd_backend_set_budget(r->be, r->plan.req.budget, err) : 0;
}

int pgd_run_plan_inner(const pgd_run *r, int count, pgd_err *err)
{
    if (!r->plan.req.budget || !r->g || r->plan_chunk > 0 || count <= r->plan.most)
        return 0;
    char what[96], hint[160];
    snprintf(what, sizeof what, "an inner step of %d patches (k x B) in one forward", count);
    if (r->o.freeze_bn)
        snprintf(hint, sizeof hint, "set --inner-chunk %d (or 0 with a budget: auto)", r->plan.most);
    else
        snprintf(hint, sizeof hint, "use --freeze-bn --inner-chunk %d (chunked steps need frozen batch norm)",
                 r->plan.most > 0 ? r->plan.most : 1);
    return pgd_plan_check(&r->plan, count, what, hint, err);
}

/* With a budget: max_patches and inner_chunk left at 0 become the largest that fit (chunks only with freeze_bn);
 * set ones are checked. largest: the first message's patches. */
static int plan_patchgd(pgd_run *r, const pgd_wire_header *h, int train, int largest, pgd_patchgd_cfg *c,
                        pgd_err *err)
{
    if (!pgd_run_budget(&r->o))
        return 0;
    if (plan_make(r, train, err) != 0)
        return -1;
    const pgd_plan *p = &r->plan;
    char what[96];
    if (r->o.max_patches > 0) {
        snprintf(what, sizeof what, "max_patches %lld", (long long)r->o.max_patches);
        if (pgd_plan_check(p, (int)r->o.max_patches, what, "lower max_patches, or 0 picks it", err) != 0)
            return -1;
    } else {
        if (p->most == 0)
            return pgd_plan_check(p, 1, "one patch per backbone forward", NULL, err);
        c->max_patches = largest < p->most ? largest : p->most;
    }
    int chunk = 0;
    if (r->o.inner_chunk > 0) {
        snprintf(what, sizeof what, "inner_chunk %lld", (long long)r->o.inner_chunk);
        if (pgd_plan_check(p, (int)r->o.inner_chunk, what, "lower inner_chunk, or 0 picks it", err) != 0)
            return -1;
        chunk = (int)r->o.inner_chunk;
    } else if (train && r->o.freeze_bn) {
        chunk = p->most;
    }
    c->inner_chunk = chunk;
    r->plan_chunk = chunk;
    if (train && (h->flags & PGD_WIRE_FLAG_INNER) && pgd_run_plan_inner(r, largest, err) != 0)
        return -1;
    return plan_apply(r, c->max_patches, train ? chunk : -1, err);
}

static int build_patchgd(pgd_run *r, const pgd_wire_header *h, int train, pgd_err *err)
{
    uint64_t seed = (uint64_t)r->o.seed;
    r->f = pgd_model_build(r->be, r->o.arch, (int)h->patch_size, (int)r->o.proj, seed, err);
    if (!r->f)
        return -1;
    r->g = pgd_model_head(r->be, (int)r->o.proj, (int)h->grid_m, (int)h->grid_n, (int)r->o.head_width,
                          (float)r->o.dropout, (int)r->o.head_pool, (int)r->o.classes, seed + 1, err);
    if (!r->g || load_weights(r, err) != 0 || (train && make_optimizers(r, err) != 0))
        return -1;
    if (!train) { /* evaluation and inference: no gradient buffers (planned and allocated) */
        pgd_net_forward_only(r->f);
        pgd_net_forward_only(r->g);
    }
    int largest = (int)(h->n_images * h->patches_per_image);
    pgd_patchgd_cfg c = {.max_images = (int)r->o.batch_size, .m = (int)h->grid_m, .n = (int)h->grid_n,
                         .patch = (int)h->patch_size, .channels = (int)h->channels,
                         .max_patches = r->o.max_patches ? (int)r->o.max_patches : largest,
                         .epsilon = r->o.epsilon ? (int)r->o.epsilon : 1 << 30,
                         /* evaluation and inference fill Z with the running statistics (eval mode) */
                         .fill_train_mode = train && r->o.fill_mode == PGD_FILL_TRAIN && !r->o.freeze_bn,
                         .freeze_bn = r->o.freeze_bn, .inner_chunk = (int)r->o.inner_chunk, .seed = seed};
    memcpy(c.mean, mean_rgb, sizeof c.mean);
    memcpy(c.std, std_rgb, sizeof c.std);
    if (plan_patchgd(r, h, train, largest, &c, err) != 0)
        return -1;
    r->pg = pgd_patchgd_new(r->f, r->g, r->opt_f, r->opt_g, &c, err);
    return r->pg ? 0 : -1;
}

static int build_gd(pgd_run *r, const pgd_wire_header *h, int train, pgd_err *err)
{
    if (h->grid_m != 1 || h->grid_n != 1 || h->patches_per_image != 1)
        return pgd_fail(err, PGD_EINVAL,
                        "method gd takes whole images (a 1 x 1 grid, patch = fit_size), the stream has a %u x %u "
                        "grid of %u px patches",
                        h->grid_m, h->grid_n, h->patch_size);
    uint64_t seed = (uint64_t)r->o.seed;
    r->f = pgd_model_build(r->be, r->o.arch, (int)h->patch_size, (int)r->o.classes, seed, err);
    if (!r->f || load_weights(r, err) != 0 || (train && make_optimizers(r, err) != 0))
        return -1;
    if (!train)
        pgd_net_forward_only(r->f);
    pgd_gd_cfg c = {.max_images = (int)r->o.batch_size, .size = (int)h->patch_size, .channels = (int)h->channels,
                    .seed = seed};
    memcpy(c.mean, mean_rgb, sizeof c.mean);
    memcpy(c.std, std_rgb, sizeof c.std);
    if (pgd_run_budget(&r->o)) {
        char what[96];
        snprintf(what, sizeof what, "a GD step of %d images (batch_size)", c.max_images);
        if (plan_make(r, train, err) != 0 ||
            pgd_plan_check(&r->plan, c.max_images, what, "lower batch_size: GD runs a batch in one forward",
                           err) != 0 ||
            plan_apply(r, c.max_images, 0, err) != 0)
            return -1;
    }
    r->gd = pgd_gd_new(r->f, r->opt_f, &c, err);
    return r->gd ? 0 : -1;
}

int pgd_run_build(pgd_run *r, const pgd_wire_header *h, pgd_err *err)
{
    int train = (h->flags & (PGD_WIRE_FLAG_FILL | PGD_WIRE_FLAG_INNER)) != 0;
    size_t B = (size_t)r->o.batch_size, px = (size_t)h->patch_size * h->patch_size * h->channels;
    size_t most = B * (h->patches_per_image > 0 ? h->patches_per_image : 1);
    if (h->n_images > B)
        return pgd_fail(err, PGD_EINVAL, "a message has %u images, more than batch_size %zu", h->n_images, B);
    if (h->channels < 1 || h->channels > 4)
        return pgd_fail(err, PGD_EINVAL, "patches with %u channels (1..4 are supported)", h->channels);
    /* the CUDA allocator's cap: gpu_mem_gb, else the memory budget */
    double cap_gb = r->o.gpu_mem_gb > 0 ? r->o.gpu_mem_gb : r->o.mem_gb;
    r->be = r->o.device == PGD_DEVICE_CUDA ? pgd_backend_cuda_new((int)r->o.gpu, cap_gb, err)
                                           : pgd_backend_cpu_new((int)r->o.threads, err);
    if (!r->be || pgd_backend_set_precision(r->be, (pgd_precision)r->o.precision, err) != 0)
        return -1;
    int rc = r->o.method == PGD_METHOD_GD ? build_gd(r, h, train, err) : build_patchgd(r, h, train, err);
    if (rc != 0 || (train && make_scaler(r, err) != 0))
        return -1;
    int classes = (int)pgd_net_out_count(r->g ? r->g : r->f);
    r->slot_id = calloc(B, sizeof *r->slot_id);
    r->slot_label = calloc(B, sizeof *r->slot_label);
    r->probs = calloc(B * (size_t)classes, sizeof *r->probs);
    r->labels = calloc(B, sizeof *r->labels);
    r->u8 = malloc(most * px);
    r->cells = calloc(most, sizeof *r->cells);
    if (!r->slot_id || !r->slot_label || !r->probs || !r->labels || !r->u8 || !r->cells ||
        pgd_confusion_init(&r->tally.conf, classes, err) != 0)
        return pgd_fail(err, PGD_ENOMEM, "trainer: out of memory");
    r->patch = (int)h->patch_size;
    r->channels = (int)h->channels;
    r->grid_m = (int)h->grid_m;
    r->grid_n = (int)h->grid_n;
    if (pgd_run_resume_load(r, err) != 0 || pgd_run_z_open(r, h->flags, err) != 0)
        return -1;
    r->built = 1;
    pgd_info("model: %s %s, %zu + %zu parameters, %s backend in %s, grid %d x %d of %d px patches",
             r->o.method == PGD_METHOD_GD ? "gd" : "patchgd", r->o.arch, pgd_net_param_count(r->f),
             r->g ? pgd_net_param_count(r->g) : (size_t)0, r->be->ops->name,
             pgd_precision_name(r->be->precision), r->grid_m, r->grid_n, r->patch);
    return 0;
}

void pgd_run_unbuild(pgd_run *r)
{
    pgd_run_z_close(r);
    pgd_patchgd_free(&r->pg);
    pgd_gd_free(&r->gd);
    pgd_scaler_free(&r->scaler);
    pgd_optim_free(&r->opt_f);
    pgd_optim_free(&r->opt_g);
    pgd_net_free(&r->f);
    pgd_net_free(&r->g);
    pgd_backend_free(&r->be);
    pgd_confusion_free(&r->tally.conf);
    free(r->slot_id);
    free(r->slot_label);
    free(r->probs);
    free(r->labels);
    free(r->u8);
    free(r->cells);
}
