/* run_report.c: what `pgd-trainer run` reports besides metrics lines: TensorBoard scalars, the best checkpoint by
 * validation QWK, status=error rows for slides that could not be read, and progress on stdout. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "file.h"
#include "json_parse.h"
#include "log.h"
#include "manifest.h"
#include "tfevents.h"
#include "trainer/run.h"

#define MAX_SMALL_FILE ((size_t)1 << 20)
#define MAX_ERRORS_FILE ((size_t)1 << 30)

int pgd_run_board(pgd_run *r, const char *phase, uint32_t epoch, double images_per_s, double data_wait,
                  pgd_err *err)
{
    if (!r->tb)
        return 0;
    static const char *const keys[5] = {"loss", "accuracy", "qwk", "images_per_s", "data_wait"};
    double v[5] = {r->last_loss, r->last_acc, r->last_qwk, images_per_s, data_wait};
    char names[5][64];
    const char *tags[5];
    float vals[5];
    int n = 0;
    for (int i = 0; i < 5; i++) {
        if (!isfinite(v[i])) /* undefined (no labels, one class): no point rather than a NaN */
            continue;
        snprintf(names[n], sizeof names[n], "%s/%s", phase, keys[i]);
        tags[n] = names[n];
        vals[n] = (float)v[i];
        n++;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return pgd_tfevents_scalars(r->tb, (double)ts.tv_sec + ts.tv_nsec * 1e-9, epoch, n, tags, vals, err);
}

/* The QWK of DIR/best.json: 1 and *qwk (NaN for null) when the file is there, 0 when it is not. */
static int read_best(const char *path, double *qwk, pgd_err *err)
{
    char *text = NULL;
    size_t len = 0;
    pgd_err e = PGD_ERR_INIT;
    if (pgd_file_read(path, MAX_SMALL_FILE, &text, &len, &e) != 0) {
        if (e.sys_errno == ENOENT)
            return 0;
        *err = e;
        return -1;
    }
    pgd_json *root = pgd_json_parse(text, len, NULL, err);
    free(text);
    if (!root) {
        pgd_err_prefix(err, "%s: ", path);
        return -1;
    }
    const pgd_json *q = pgd_json_get(root, "qwk");
    int rc = 1;
    if (q && (q->type == PGD_JSON_NUMBER || q->type == PGD_JSON_INT))
        *qwk = q->num;
    else if (q && q->type == PGD_JSON_NULL)
        *qwk = NAN;
    else
        rc = pgd_fail(err, PGD_EFORMAT, "%s: no \"qwk\" number", path);
    pgd_json_free(&root);
    return rc;
}

static int copy_file(const char *from, const char *to, pgd_err *err)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", to, (long)getpid());
    FILE *in = fopen(from, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
    if (!in || !out) {
        pgd_fail_errno(err, PGD_EIO, "best: open %s", in ? tmp : from);
        goto fail;
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            break;
    if (ferror(in) || ferror(out) || fflush(out) != 0 || fsync(fileno(out)) != 0) {
        pgd_fail_errno(err, PGD_EIO, "best: copy %s to %s", from, tmp);
        goto fail;
    }
    fclose(in);
    in = NULL;
    if (fclose(out) != 0) {
        out = NULL;
        pgd_fail_errno(err, PGD_EIO, "best: write %s", tmp);
        goto fail;
    }
    out = NULL;
    if (rename(tmp, to) != 0) {
        pgd_fail_errno(err, PGD_EIO, "best: rename %s to %s", tmp, to);
        goto fail;
    }
    return 0;
fail:
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    unlink(tmp);
    return -1;
}

static void put_num(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.6g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

int pgd_run_best(pgd_run *r, uint32_t epoch, pgd_err *err)
{
    char json[4200], model[4200], tmp[4300];
    if (!r->o.best)
        return 0;
    if (!r->o.weights)
        return pgd_fail(err, PGD_EINVAL, "best: needs the weights that were evaluated");
    if ((size_t)snprintf(json, sizeof json, "%s/best.json", r->o.best) >= sizeof json ||
        (size_t)snprintf(model, sizeof model, "%s/best.safetensors", r->o.best) >= sizeof model)
        return pgd_fail(err, PGD_EINVAL, "best: '%s' is too long", r->o.best);
    double old = NAN, now = r->last_qwk;
    int have = read_best(json, &old, err);
    if (have < 0)
        return -1;
    /* a defined QWK beats an undefined one; ties keep the earlier epoch; the first pass always counts */
    if (have && !(isfinite(now) && (!isfinite(old) || now > old))) {
        pgd_info("best: epoch %u qwk %.4f does not beat %.4f (%s)", epoch, now, old, json);
        return 0;
    }
    if (copy_file(r->o.weights, model, err) != 0)
        return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", json, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return pgd_fail_errno(err, PGD_EIO, "best: open %s", tmp);
    fprintf(f, "{\"epoch\":%u", epoch);
    put_num(f, "qwk", now);
    put_num(f, "accuracy", r->last_acc);
    put_num(f, "loss", r->last_loss);
    fprintf(f, "}\n");
    if (fclose(f) != 0 || rename(tmp, json) != 0) {
        unlink(tmp);
        return pgd_fail_errno(err, PGD_EIO, "best: write %s", json);
    }
    pgd_info("best: epoch %u qwk %.4f -> %s", epoch, now, model);
    return 0;
}

int pgd_run_error_rows(pgd_run *r, pgd_err *err)
{
    if (!r->o.errors)
        return 0;
    char *text = NULL;
    size_t len = 0;
    pgd_err e = PGD_ERR_INIT;
    if (pgd_file_read(r->o.errors, MAX_ERRORS_FILE, &text, &len, &e) != 0) {
        if (e.sys_errno == ENOENT) /* the sampler never opened a run folder: nothing failed there */
            return 0;
        *err = e;
        return -1;
    }
    if (pgd_run_predictions_open(r, err) != 0) {
        free(text);
        return -1;
    }
    int rows = 0;
    char *line = text, *next;
    for (; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *tab = strchr(line, '\t');
        if (!tab || strncmp(line, "image_id\t", 9) == 0) /* the header, or not a row */
            continue;
        *tab = '\0';
        if (!r->predictions)
            continue;
        pgd_manifest_put_field(r->predictions, line);
        fputc(',', r->predictions);
        for (int k = 0; k < r->o.classes; k++)
            fputc(',', r->predictions);
        fputs(",error,", r->predictions);
        pgd_manifest_put_field(r->predictions, tab + 1);
        fputc('\n', r->predictions);
        rows++;
    }
    free(text);
    if (r->predictions && fflush(r->predictions) != 0)
        return pgd_fail_errno(err, PGD_EIO, "write predictions");
    if (rows)
        pgd_warn("%d slide(s) could not be read: status=error rows in the predictions", rows);
    return 0;
}

/* --- progress ------------------------------------------------------------------------------------- */

static int progress_mode(const pgd_run *r)
{
    switch (r->o.progress) {
    case PGD_PROGRESS_OPT_BAR: return PGD_PROGRESS_BAR;
    case PGD_PROGRESS_OPT_LINES: return PGD_PROGRESS_LINES;
    case PGD_PROGRESS_OPT_NO: return PGD_PROGRESS_OFF;
    default: return isatty(STDOUT_FILENO) ? PGD_PROGRESS_BAR : PGD_PROGRESS_LINES;
    }
}

static void progress_extra(const pgd_run *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (r->tally.losses)
        snprintf(buf, cap, "loss %.4f", r->tally.loss_sum / (double)r->tally.losses);
}

void pgd_run_progress(pgd_run *r, const pgd_wire_header *h)
{
    int train = (h->flags & PGD_WIRE_FLAG_INNER) != 0;
    int infer = (h->flags & PGD_WIRE_FLAG_INFER) != 0;
    if (!r->prog_started) {
        char label[64];
        if (train)
            snprintf(label, sizeof label, "train epoch %u/%lld", h->epoch + 1, (long long)r->o.epochs);
        else
            snprintf(label, sizeof label, "%s", infer ? "infer" : "eval");
        pgd_progress_start(&r->prog, stdout, progress_mode(r), (double)r->o.progress_s, label,
                           train ? "batches" : "slides", train ? r->batches_per_epoch : r->manifest_images);
        r->prog.t0 = r->tally.t0; /* the pass started before its first batch ended */
        r->prog_started = 1;
    }
    char extra[64];
    progress_extra(r, extra, sizeof extra);
    r->prog_done = train ? (int64_t)h->batch + 1 : r->tally.images;
    pgd_progress_update(&r->prog, r->prog_done, extra);
}

void pgd_run_progress_end(pgd_run *r)
{
    if (!r->prog_started)
        return;
    char extra[64];
    progress_extra(r, extra, sizeof extra);
    pgd_progress_finish(&r->prog, r->prog_done, extra);
    r->prog_started = 0;
}
