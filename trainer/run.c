/* run.c: `pgd-trainer run`: the loop over the sampler's BATCH messages: Z-fill, inner steps, GD steps, evaluation. */
#include "trainer/run.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "log.h"
#include "manifest.h"
#include "sigpipe.h"
#include "trainer/model.h"
#include "wire_zmq.h"

#define USAGE "pgd-trainer run --connect ENDPOINT [options]"

/* Slots of the image batch in progress: an image keeps its Z row for the whole batch. Messages list the
 * batch's images in batch order; one left out (its slide failed) is dropped from Z by moving later rows up. */
static int map_images(pgd_run *r, const pgd_wire_msg *m, pgd_err *err)
{
    const pgd_wire_header *h = &m->h;
    if (!r->have_batch || h->epoch != r->epoch || h->batch != r->batch) {
        r->have_batch = 1, r->epoch = h->epoch, r->batch = h->batch;
        r->n_slots = 0;
        r->train_batch = 0;
    }
    size_t row = r->pg ? (size_t)pgd_net_out_count(r->f) * r->grid_m * r->grid_n : 0;
    for (uint32_t i = 0; i < h->n_images; i++) {
        const char *id = pgd_wire_id(m, i);
        int slot = -1;
        for (int j = (int)i; j < r->n_slots && slot < 0; j++)
            if (strcmp(r->slot_id[j], id) == 0)
                slot = j;
        if (slot < 0) {
            if (r->n_slots >= r->o.batch_size)
                return pgd_fail(err, PGD_EFORMAT, "image batch %u of epoch %u has more than batch_size %lld images",
                                h->batch, h->epoch, (long long)r->o.batch_size);
            if ((int)i != r->n_slots)
                return pgd_fail(err, PGD_EFORMAT, "image %s of batch %u appears out of batch order", id, h->batch);
            slot = r->n_slots++;
            snprintf(r->slot_id[slot], sizeof r->slot_id[slot], "%s", id);
            r->slot_label[slot] = pgd_wire_label(m, i);
        } else if (slot != (int)i) { /* images before it were left out: move its Z row up */
            if (r->pg) {
                float *z = pgd_patchgd_z(r->pg);
                r->be->ops->copy(r->be, z + i * row, z + (size_t)slot * row, row * sizeof(float));
            }
            memcpy(r->slot_id[i], r->slot_id[slot], sizeof r->slot_id[i]);
            r->slot_label[i] = r->slot_label[slot];
        }
    }
    if (h->n_images < (uint32_t)r->n_slots) /* every message lists all live images: the rest left for good */
        r->n_slots = (int)h->n_images;
    return 0;
}

/* The message's patches in host memory and their global Z cells (slot * m * n + row * n + col). */
static void gather_cells(pgd_run *r, const pgd_wire_msg *m)
{
    size_t count = (size_t)m->h.n_images * m->h.patches_per_image;
    for (size_t i = 0; i < count; i++) {
        uint32_t row, col;
        pgd_wire_cell(m, i, &row, &col);
        uint32_t slot = (uint32_t)(i / m->h.patches_per_image);
        r->cells[i] = slot * (uint32_t)(r->grid_m * r->grid_n) + row * (uint32_t)r->grid_n + col;
    }
    for (uint32_t i = 0; i < m->h.n_images; i++)
        r->labels[i] = pgd_wire_label(m, i);
}

/* Confusion counts from r->probs for images with a label; with_loss: their cross-entropy too. */
static void count_predictions(pgd_run *r, int images, const int32_t *labels, int with_loss)
{
    int classes = r->tally.conf.k;
    for (int i = 0; i < images; i++) {
        const float *p = r->probs + (size_t)i * classes;
        int best = pgd_run_argmax(p, classes);
        if (labels[i] < 0 || labels[i] >= classes)
            continue;
        pgd_confusion_add(&r->tally.conf, labels[i], best, NULL);
        if (with_loss) {
            r->tally.loss_sum -= log(p[labels[i]] > 1e-30f ? (double)p[labels[i]] : 1e-30);
            r->tally.losses++;
        }
    }
    r->tally.images += images;
}

static float current_lr(pgd_run *r)
{
    pgd_opt_cfg c = pgd_opt_defaults();
    c.lr = (float)r->o.lr;
    if (r->batches_per_epoch > 0) {
        c.warmup_steps = r->o.warmup_epochs * r->batches_per_epoch;
        c.total_steps = r->o.epochs * r->batches_per_epoch;
    }
    return pgd_opt_lr(&c, r->tick + 1);
}

static int on_patchgd(pgd_run *r, const pgd_wire_msg *m, pgd_err *err)
{
    const pgd_wire_header *h = &m->h;
    int count = (int)(h->n_images * h->patches_per_image);
    gather_cells(r, m);
    if (h->flags & PGD_WIRE_FLAG_INNER) {
        float loss;
        pgd_patchgd_set_lr(r->pg, current_lr(r));
        if (pgd_patchgd_inner(r->pg, m->pixels, r->cells, count, r->labels, (int)h->n_images, &loss, err) != 0)
            return -1;
        r->train_batch = 1;
        r->tally.loss_sum += loss * h->n_images;
        r->tally.losses += h->n_images;
    } else if (pgd_patchgd_fill(r->pg, m->pixels, r->cells, count, err) != 0) {
        return -1;
    }
    if (!(h->flags & PGD_WIRE_FLAG_BATCH_END))
        return 0;
    if (pgd_run_z_batch(r, err) != 0)
        return -1;
    if (r->train_batch) { /* the loss was counted per inner step; the predictions of the last one count */
        if (pgd_patchgd_flush(r->pg, err) != 0 || pgd_patchgd_train_probs(r->pg, (int)h->n_images, r->probs, err) != 0)
            return -1;
        count_predictions(r, (int)h->n_images, r->labels, 0);
        r->tick++;
        return 0;
    }
    if (pgd_patchgd_predict(r->pg, r->n_slots, r->probs, err) != 0)
        return -1;
    count_predictions(r, r->n_slots, r->slot_label, 1);
    return (h->flags & PGD_WIRE_FLAG_INFER) ? pgd_run_predictions(r, r->n_slots, err) : 0;
}

static int on_gd(pgd_run *r, const pgd_wire_msg *m, pgd_err *err)
{
    const pgd_wire_header *h = &m->h;
    int n = (int)h->n_images;
    for (int i = 0; i < n; i++) {
        r->labels[i] = pgd_wire_label(m, i);
        snprintf(r->slot_id[i], sizeof r->slot_id[i], "%s", pgd_wire_id(m, i));
    }
    r->n_slots = n;
    if (h->flags & PGD_WIRE_FLAG_FILL)
        return 0; /* a train stream's fill sweep: GD has no Z */
    if (h->flags & PGD_WIRE_FLAG_INNER) {
        float loss;
        if (pgd_gd_step(r->gd, m->pixels, r->labels, n, current_lr(r), &loss, r->probs, err) != 0)
            return -1;
        count_predictions(r, n, r->labels, 0);
        r->tally.loss_sum += (double)loss * n;
        r->tally.losses += n;
        if (h->flags & PGD_WIRE_FLAG_BATCH_END)
            r->tick++;
        return 0;
    }
    if (pgd_gd_predict(r->gd, m->pixels, n, r->probs, err) != 0)
        return -1;
    count_predictions(r, n, r->labels, 1);
    return (h->flags & PGD_WIRE_FLAG_INFER) ? pgd_run_predictions(r, n, err) : 0;
}

static const char *phase_name(uint32_t flags)
{
    return (flags & PGD_WIRE_FLAG_EVAL) ? "eval" : (flags & PGD_WIRE_FLAG_INFER) ? "infer" : "train";
}

static int on_batch(pgd_run *r, const pgd_wire_msg *m, pgd_err *err)
{
    const pgd_wire_header *h = &m->h;
    if (!r->built && pgd_run_build(r, h, err) != 0)
        return -1;
    if (r->resume_check) {
        r->resume_check = 0;
        if (h->epoch != r->resume_epoch || h->batch != r->resume_batch)
            return pgd_fail(err, PGD_EINVAL,
                            "resume: the saved run continues at epoch %lld batch %lld, the stream starts at epoch %u "
                            "batch %u (start pgd-sampler with --start-epoch %lld --start-batch %lld)",
                            (long long)r->resume_epoch, (long long)r->resume_batch, h->epoch, h->batch,
                            (long long)r->resume_epoch, (long long)r->resume_batch);
    }
    if ((int)h->patch_size != r->patch || (int)h->channels != r->channels || (int)h->grid_m != r->grid_m ||
        (int)h->grid_n != r->grid_n)
        return pgd_fail(err, PGD_EFORMAT,
                        "the stream changed shape: %u x %u grid of %u px x %u patches, the model is built for %d x %d "
                        "of %d px x %d (native slides with different grids need one head per grid)",
                        h->grid_m, h->grid_n, h->patch_size, h->channels, r->grid_m, r->grid_n, r->patch, r->channels);
    if (h->n_images > (uint32_t)r->o.batch_size)
        return pgd_fail(err, PGD_EFORMAT, "a message has %u images, more than batch_size %lld", h->n_images,
                        (long long)r->o.batch_size);
    if ((h->flags & PGD_WIRE_FLAG_INNER) && !r->opt_f)
        return pgd_fail(err, PGD_EINVAL, "a train stream needs a trainable model");
    /* Z-filling, eval and infer messages go through the backbone in chunks of max_patches; an inner step's
     * patches in one forward (or chunks of inner_chunk). */
    if (r->pg && (h->flags & PGD_WIRE_FLAG_INNER) &&
        pgd_run_plan_inner(r, (int)(h->n_images * h->patches_per_image), err) != 0)
        return -1;
    if (r->pg && (h->flags & PGD_WIRE_FLAG_INNER) &&
        pgd_patchgd_reserve(r->pg, (int)(h->n_images * h->patches_per_image), err) != 0)
        return -1;
    int rc = r->pg ? (map_images(r, m, err) == 0 ? on_patchgd(r, m, err) : -1) : on_gd(r, m, err);
    if (rc != 0)
        return -1;
    r->stream_flags = h->flags;
    if (h->flags & PGD_WIRE_FLAG_BATCH_END)
        pgd_run_progress(r, h);
    if ((h->flags & PGD_WIRE_FLAG_BATCH_END) && r->o.log_every > 0 && (h->batch + 1) % r->o.log_every == 0)
        pgd_info("%s epoch %u batch %u: %lld images, loss %.4f, %.2f images/s", phase_name(h->flags), h->epoch,
                 h->batch + 1, (long long)r->tally.images,
                 r->tally.losses ? r->tally.loss_sum / (double)r->tally.losses : 0.0,
                 r->tally.images / (pgd_clock_s() - r->tally.t0 + 1e-9));
    if (h->flags & PGD_WIRE_FLAG_EPOCH_END) {
        pgd_run_progress_end(r);
        pgd_run_report(r, phase_name(h->flags), h->epoch);
        if ((h->flags & PGD_WIRE_FLAG_INNER) && pgd_run_checkpoint(r, h->epoch + 1, err) != 0)
            return -1;
        pgd_run_tally_reset(&r->tally);
    }
    return 0;
}

/* Waits for and handles messages until END (returns 1), STOP or a signal (returns 2), or an error (-1). */
static int consume(pgd_run *r, pgd_batch_rx *rx, int sigfd, pgd_err *err)
{
    double last = pgd_clock_s();
    for (;;) {
        pgd_batch_view v;
        double t = pgd_clock_s();
        int st = pgd_batch_rx_next(rx, &v, 100, err);
        r->tally.wait_s += pgd_clock_s() - t;
        if (st < 0)
            return -1;
        if (pgd_sigpipe_take(sigfd) > 0) {
            if (st == PGD_BATCH_RX_BATCH)
                pgd_batch_rx_release(rx, &v, 0, NULL);
            pgd_warn("signal: stopping after the last completed message");
            return 2;
        }
        if (st == PGD_BATCH_RX_END)
            return 1;
        if (st == PGD_BATCH_RX_STOP) {
            pgd_warn("the sampler sent STOP before the end of the stream");
            return 2;
        }
        if (st == PGD_BATCH_RX_NONE) {
            if ((pgd_clock_s() - last) * 1000.0 > (double)r->o.idle_ms)
                return pgd_fail(err, PGD_EIO, "nothing from the sampler at %s for %lld ms", r->o.connect,
                                (long long)r->o.idle_ms);
            continue;
        }
        int rc = on_batch(r, &v.msg, err);
        pgd_batch_rx_keepalive(rx);
        if (pgd_batch_rx_release(rx, &v, 1, rc == 0 ? err : NULL) != 0 || rc != 0)
            return -1;
        last = pgd_clock_s();
    }
}

static int64_t count_batches(const pgd_run_opts *o, int64_t *images, pgd_err *err)
{
    if (!o->manifest)
        return 0;
    pgd_manifest *m = NULL;
    if (pgd_manifest_load(&m, o->manifest, NULL, NULL, err) != 0)
        return -1;
    int64_t n = (int64_t)m->count, b = o->batch_size;
    pgd_manifest_free(&m);
    *images = n;
    return o->drop_last ? n / b : (n + b - 1) / b;
}

/* An unknown arch is a usage error found before anything runs. */
static int check_arch(const char *arch, pgd_err *err)
{
    char known[256] = "";
    for (int i = 0; pgd_model_archs[i]; i++) {
        if (strcmp(arch, pgd_model_archs[i]) == 0)
            return 0;
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? "|" : "", pgd_model_archs[i]);
    }
    return pgd_fail(err, PGD_EINVAL, "arch: '%s' is not one of %s", arch, known);
}

static int run(pgd_run *r, pgd_err *err)
{
    if (check_arch(r->o.arch, err) != 0)
        return -1;
    if (r->o.inner_chunk > 0 && !r->o.freeze_bn)
        return pgd_fail(err, PGD_EINVAL, "inner_chunk: chunked inner steps need freeze_bn (the backbones' batch "
                                         "norm would see other statistics per chunk)");
    if (pgd_run_resume_check(r, err) != 0)
        return -1;
    if ((r->batches_per_epoch = count_batches(&r->o, &r->manifest_images, err)) < 0 || pgd_run_out_open(r, err) != 0)
        return -1;
    if (r->o.warmup_epochs > 0 && r->batches_per_epoch == 0)
        pgd_warn("warmup_epochs without manifest: the learning rate stays at %g", r->o.lr);
    pgd_batch_rx_opts ro;
    pgd_batch_rx_opts_init(&ro);
    ro.endpoint = r->o.connect;
    ro.credit = (uint32_t)r->o.credit;
    ro.shm = r->o.shm;
    pgd_batch_rx *rx = pgd_batch_rx_open(&ro, err);
    int sigfd = -1;
    if (!rx || pgd_sigpipe_install("trainer", &sigfd, err) != 0) {
        pgd_batch_rx_close(&rx);
        return -1;
    }
    pgd_run_tally_reset(&r->tally);
    int rc = consume(r, rx, sigfd, err);
    pgd_sigpipe_restore();
    pgd_batch_rx_close(&rx);
    pgd_run_progress_end(r);
    int infer = (r->stream_flags & PGD_WIRE_FLAG_INFER) != 0, eval = (r->stream_flags & PGD_WIRE_FLAG_EVAL) != 0;
    if (rc == 1 && !r->opt_f && (infer || !r->built) && pgd_run_error_rows(r, err) != 0)
        return -1;
    if (rc == 1 && r->tally.images > 0) /* eval / infer: one pass, reported at the end */
        pgd_run_report(r, r->opt_f ? "train" : infer ? "infer" : "eval", r->epoch);
    if (rc == 1 && eval && r->eval_reported &&
        pgd_run_best(r, r->o.report_epoch >= 0 ? (uint32_t)r->o.report_epoch : r->epoch, err) != 0)
        return -1;
    if (rc == 1 && !r->built)
        pgd_warn("the stream ended without a single BATCH");
    return rc == 1 ? 0 : rc == 2 ? 1 : -1;
}

int pgd_run_main(int argc, char **argv)
{
    pgd_log_init("trainer", PGD_LOG_INFO, 0);
    pgd_wire_keep_pages();
    pgd_run r;
    memset(&r, 0, sizeof r);
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc;
    if (pgd_cfg_parse_args(pgd_run_options(), &r.o, argc, argv, &a, &err) != 0 || a.npositional > 0) {
        if (!pgd_err_is_set(&err))
            pgd_fail(&err, PGD_EINVAL, "unexpected argument '%s'", a.positional[0]);
        pgd_error("%s", err.msg);
        fprintf(stderr, "usage: %s (--help for options)\n", USAGE);
        rc = PGD_EXIT_USAGE;
    } else if (a.help) {
        pgd_cfg_usage(pgd_run_options(), stdout,
                      USAGE "\n  consume a sampler's stream: train (PatchGD or GD), evaluate or predict");
        fputs("Exit status: 0 the stream ended and everything was consumed, 1 failure or stopped early, "
              "2 bad arguments.\n", stdout);
        rc = PGD_EXIT_OK;
    } else {
        int st = run(&r, &err);
        if (st < 0)
            pgd_log_err(&err);
        rc = st == 0 ? PGD_EXIT_OK : (st < 0 && err.code == PGD_EINVAL && !r.built) ? PGD_EXIT_USAGE : PGD_EXIT_FAIL;
    }
    pgd_run_out_close(&r);
    pgd_run_unbuild(&r);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(pgd_run_options(), &r.o);
    return rc;
}
