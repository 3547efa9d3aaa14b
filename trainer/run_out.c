/* run_out.c: what `pgd-trainer run` leaves in its run folder: run.conf, metrics.jsonl, predictions.csv, checkpoints. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "clock.h"
#include "json.h"
#include "log.h"
#include "tfevents.h"
#include "trainer/ckpt.h"
#include "trainer/run.h"

static int path_in(char *buf, size_t cap, const pgd_run *r, const char *name, pgd_err *err)
{
    if ((size_t)snprintf(buf, cap, "%s/%s", r->o.run_dir, name) >= cap)
        return pgd_fail(err, PGD_EINVAL, "run_dir: '%s' is too long", r->o.run_dir);
    return 0;
}

int pgd_run_out_open(pgd_run *r, pgd_err *err)
{
    char path[4200];
    r->last_loss = r->last_acc = r->last_qwk = NAN;
    if (r->o.run_dir) {
        if (mkdir(r->o.run_dir, 0755) != 0 && errno != EEXIST)
            return pgd_fail_errno(err, PGD_EIO, "run_dir: mkdir %s", r->o.run_dir);
        if (path_in(path, sizeof path, r, "trainer.conf", err) != 0 ||
            pgd_cfg_save(pgd_run_options(), &r->o, path, err) != 0)
            return -1;
    }
    if (r->o.tensorboard && !(r->tb = pgd_tfevents_open(r->o.tensorboard, err)))
        return -1;
    if (r->o.metrics)
        snprintf(path, sizeof path, "%s", r->o.metrics);
    else if (!r->o.run_dir)
        return 0;
    else if (path_in(path, sizeof path, r, "metrics.jsonl", err) != 0)
        return -1;
    if (!(r->metrics = fopen(path, "a")))
        return pgd_fail_errno(err, PGD_EIO, "open %s", path);
    return 0;
}

void pgd_run_out_close(pgd_run *r)
{
    if (r->metrics)
        fclose(r->metrics);
    if (r->predictions)
        fclose(r->predictions);
    r->metrics = r->predictions = NULL;
    pgd_tfevents_close(&r->tb);
}

void pgd_run_tally_reset(pgd_run_tally *t)
{
    if (t->conf.counts) /* not before the nets (and the class count) exist */
        pgd_confusion_reset(&t->conf);
    t->loss_sum = 0;
    t->images = t->losses = 0;
    t->t0 = pgd_clock_s();
    t->wait_s = 0;
}

/* The process's peak resident memory so far, in MB. */
static double peak_rss_mb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : NAN;
}

/* JSON has no NaN: undefined metrics are written as null. */
static void put_number(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.6g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

void pgd_run_report(pgd_run *r, const char *phase, uint32_t epoch)
{
    pgd_run_tally *t = &r->tally;
    double secs = pgd_clock_s() - t->t0;
    double loss = t->losses ? t->loss_sum / (double)t->losses : NAN;
    double acc = pgd_metric_accuracy(&t->conf), qwk = pgd_metric_qwk(&t->conf);
    double ips = secs > 0 ? (double)t->images / secs : 0, wait = secs > 0 ? t->wait_s / secs : 0;
    if (strcmp(phase, "train") != 0 && r->o.report_epoch >= 0)
        epoch = (uint32_t)r->o.report_epoch;
    r->last_loss = loss, r->last_acc = acc, r->last_qwk = qwk;
    r->eval_reported |= strcmp(phase, "eval") == 0;
    pgd_err e = PGD_ERR_INIT;
    if (pgd_run_board(r, phase, epoch, ips, wait, &e) != 0) {
        pgd_log_err(&e);
        pgd_tfevents_close(&r->tb); /* once: the metrics line still goes out */
    }
    pgd_info("%s epoch %u: loss %.4f, accuracy %.4f, qwk %.4f, %lld images in %.1f s (%.2f images/s), data wait %.1f%%",
             phase, epoch, loss, acc, qwk, (long long)t->images, secs, ips, 100.0 * wait);
    if (!r->metrics)
        return;
    fprintf(r->metrics, "{\"phase\":\"%s\",\"epoch\":%u,\"images\":%lld", phase, epoch, (long long)t->images);
    put_number(r->metrics, "loss", loss);
    put_number(r->metrics, "accuracy", acc);
    put_number(r->metrics, "qwk", qwk);
    put_number(r->metrics, "seconds", secs);
    put_number(r->metrics, "images_per_s", ips);
    put_number(r->metrics, "data_wait", wait);
    put_number(r->metrics, "peak_rss_mb", peak_rss_mb());
    if (r->be) { /* what the backend's memory reached: device memory on a GPU */
        pgd_mem_stats st;
        pgd_backend_mem_stats(r->be, &st);
        put_number(r->metrics, "backend_peak_mb", (double)st.peak_reserved / (1024.0 * 1024.0));
    }
    if (r->scaler) { /* fp16: the loss scale now and the updates skipped for overflow so far */
        pgd_scaler_state st;
        pgd_scaler_get(r->scaler, &st);
        put_number(r->metrics, "loss_scale", (double)st.scale);
        put_number(r->metrics, "skipped_updates", (double)st.skipped);
    }
    fprintf(r->metrics, ",\"confusion\":");
    pgd_confusion_json(r->metrics, &t->conf);
    fprintf(r->metrics, "}\n");
    fflush(r->metrics);
}

int pgd_run_predictions_open(pgd_run *r, pgd_err *err)
{
    char path[4200];
    if (r->predictions)
        return 0;
    if (r->o.predictions_path)
        snprintf(path, sizeof path, "%s", r->o.predictions_path);
    else if (!r->o.run_dir)
        return 0;
    else if (path_in(path, sizeof path, r, "predictions.csv", err) != 0)
        return -1;
    if (!(r->predictions = fopen(path, "a")))
        return pgd_fail_errno(err, PGD_EIO, "open %s", path);
    /* a new file gets the header; a rerun appends below the rows it kept */
    if (fseek(r->predictions, 0, SEEK_END) == 0 && ftell(r->predictions) == 0) {
        fprintf(r->predictions, "image_id,predicted");
        for (int k = 0; k < r->o.classes; k++)
            fprintf(r->predictions, ",p%d", k);
        fprintf(r->predictions, ",status,reason\n");
    }
    if (fflush(r->predictions) != 0)
        return pgd_fail_errno(err, PGD_EIO, "write %s", path);
    return 0;
}

int pgd_run_predictions(pgd_run *r, int images, pgd_err *err)
{
    int classes = r->tally.conf.k;
    if (pgd_run_predictions_open(r, err) != 0)
        return -1;
    if (!r->predictions)
        return 0;
    for (int i = 0; i < images; i++) {
        const float *p = r->probs + (size_t)i * classes;
        int best = pgd_run_argmax(p, classes);
        fprintf(r->predictions, "%s,%d", r->slot_id[i], best);
        for (int k = 0; k < classes; k++)
            fprintf(r->predictions, ",%.6f", p[k]);
        fprintf(r->predictions, ",ok,\n");
    }
    if (fflush(r->predictions) != 0)
        return pgd_fail_errno(err, PGD_EIO, "write predictions.csv");
    return 0;
}

/* The counters a resumed run needs besides the state file's, as model metadata (decimal strings): the
 * optimizer step, the schedule's tick, PatchGD's fill and inner-step counters, GD's step counter. */
enum { N_COUNTERS = 5 };

static void counter_meta(const pgd_run *r, char vals[N_COUNTERS][24])
{
    int64_t fills = 0, steps = 0, gd_steps = 0;
    if (r->pg)
        pgd_patchgd_get_counters(r->pg, &fills, &steps);
    if (r->gd)
        pgd_gd_get_counters(r->gd, &gd_steps);
    snprintf(vals[0], 24, "%lld", (long long)(r->opt_f ? r->opt_f->step : 0));
    snprintf(vals[1], 24, "%lld", (long long)r->tick);
    snprintf(vals[2], 24, "%lld", (long long)fills);
    snprintf(vals[3], 24, "%lld", (long long)steps);
    snprintf(vals[4], 24, "%lld", (long long)gd_steps);
}

/* An fp16 run's loss scaler state (scale, good, skipped, streak), so that a resumed run scales as this one
 * would have; returns the entries written to kv (0 without a scaler). */
enum { N_SCALER = 4 };

static int scaler_meta(const pgd_run *r, pgd_ckpt_kv *kv, char vals[N_SCALER][32])
{
    if (!r->scaler)
        return 0;
    pgd_scaler_state st;
    pgd_scaler_get(r->scaler, &st);
    snprintf(vals[0], 32, "%.9g", (double)st.scale);
    snprintf(vals[1], 32, "%lld", (long long)st.good);
    snprintf(vals[2], 32, "%lld", (long long)st.skipped);
    snprintf(vals[3], 32, "%lld", (long long)st.streak);
    static const char *const keys[N_SCALER] = {PGD_RUN_META_SCALE, PGD_RUN_META_SCALE_GOOD,
                                               PGD_RUN_META_SCALE_SKIPPED, PGD_RUN_META_SCALE_STREAK};
    for (int i = 0; i < N_SCALER; i++)
        kv[i] = (pgd_ckpt_kv){keys[i], vals[i]};
    return N_SCALER;
}

int pgd_run_checkpoint(pgd_run *r, uint32_t next_epoch, pgd_err *err)
{
    char path[4200], vals[N_COUNTERS][24];
    if (!r->o.run_dir || !r->built)
        return 0;
    pgd_ckpt_net nets[2] = {{.net = r->f, .prefix = ""}, {.net = r->g, .prefix = ""}};
    counter_meta(r, vals);
    pgd_ckpt_kv meta[2 + N_COUNTERS + N_SCALER] = {{"pgd.arch", r->o.arch},
                                                   {"pgd.method", r->o.method == PGD_METHOD_GD ? "gd" : "patchgd"},
                                                   {PGD_RUN_META_STEP, vals[0]},
                                                   {PGD_RUN_META_TICK, vals[1]},
                                                   {PGD_RUN_META_FILLS, vals[2]},
                                                   {PGD_RUN_META_INNER_STEPS, vals[3]},
                                                   {PGD_RUN_META_GD_STEPS, vals[4]}};
    char scaler_vals[N_SCALER][32];
    int count = 2 + N_COUNTERS + scaler_meta(r, meta + 2 + N_COUNTERS, scaler_vals);
    if (path_in(path, sizeof path, r, "model.safetensors", err) != 0 ||
        pgd_ckpt_save(path, nets, r->g ? 2 : 1, meta, count, err) != 0)
        return -1;
    pgd_info("checkpoint: %s", path);
    if (!r->opt_f)
        return 0;
    nets[0].m = r->opt_f->m, nets[0].v = r->opt_f->v;
    if (r->opt_g)
        nets[1].m = r->opt_g->m, nets[1].v = r->opt_g->v;
    pgd_ckpt_state st;
    memset(&st, 0, sizeof st);
    st.opt = r->opt_f->cfg;
    if (r->batches_per_epoch > 0) { /* the schedule pgd-trainer follows (run.c, current_lr) */
        st.opt.warmup_steps = r->o.warmup_epochs * r->batches_per_epoch;
        st.opt.total_steps = r->o.epochs * r->batches_per_epoch;
    }
    st.step = r->opt_f->step;
    st.epoch = next_epoch;
    st.batch = 0;
    st.inner = 0;
    st.seed = (uint64_t)r->o.seed;
    if (path_in(path, sizeof path, r, "state.safetensors", err) != 0 ||
        pgd_ckpt_state_save(path, nets, r->g ? 2 : 1, &st, err) != 0)
        return -1;
    return 0;
}
