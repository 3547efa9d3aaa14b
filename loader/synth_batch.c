/* synth_batch.c: a set of synthetic slides (optionally over worker processes), its manifest and a PNG preview. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "png.h"
#include "synth_priv.h"

#define MAX_COUNT 1000000u
#define MAX_JOBS 64
#define PREVIEW_MAX_SOURCE 4096 /* the preview is cut from a pyramid level no larger than this */

static const char *batch_prefix(const pgd_synth_batch *b, char *buf, size_t cap)
{
    if (b->prefix)
        return b->prefix;
    snprintf(buf, cap, "%s_", pgd_synth_task_name(b->params.task));
    return buf;
}

/* Smallest pyramid level whose long side is <= size (or the last level). */
static int preview_level(const pgd_synth_batch *b, int nlevels, uint32_t size)
{
    int l = 0;
    for (; l + 1 < nlevels; l++) {
        uint32_t w, h;
        pgd_synth_level_size(b->params.width, b->params.height, l, &w, &h);
        if (w <= size && h <= size)
            break;
    }
    return l;
}

int pgd_synth_batch_check(const pgd_synth_batch *b, pgd_err *err)
{
    pgd_synth_params p = b->params;
    pgd_synth_tiff_opts o = b->tiff;
    if (pgd_synth_params_check(&p, err) < 0 || pgd_synth_tiff_opts_check(&o, err) < 0)
        return -1;
    if (p.task == PGD_SYNTH_ULTRAMNIST && (p.width < 128 || p.height < 128))
        return pgd_fail(err, PGD_EINVAL, "%s: ultramnist needs a canvas of at least 128x128 (got %ux%u)",
                        p.width < 128 ? "width" : "height", p.width, p.height);
    int n = pgd_synth_level_count(p.width, p.height, o.tile, o.levels, err);
    if (n < 0)
        return -1;
    if (b->count < 1 || b->count > MAX_COUNT)
        return pgd_fail(err, PGD_EINVAL, "count: %u is outside 1..%u", b->count, MAX_COUNT);
    if (!b->out_dir || !*b->out_dir)
        return pgd_fail(err, PGD_EINVAL, "out: no output folder given");
    char pbuf[32], id[PGD_SYNTH_MAX_ID + 1];
    const char *prefix = batch_prefix(b, pbuf, sizeof pbuf);
    if (!pgd_synth_prefix_ok(prefix))
        return pgd_fail(err, PGD_EINVAL, "prefix: '%s' must be at most 40 of [A-Za-z0-9._-], not starting with '.'",
                        prefix);
    if (pgd_synth_image_id(prefix, b->count - 1, id, sizeof id) < 0)
        return pgd_fail(err, PGD_EINVAL, "prefix: ids would be longer than %d bytes", PGD_SYNTH_MAX_ID);
    if (b->jobs < 0 || b->jobs > MAX_JOBS)
        return pgd_fail(err, PGD_EINVAL, "jobs: %d is outside 1..%d", b->jobs, MAX_JOBS);
    if (b->preview_png) {
        uint32_t size = b->preview_size ? b->preview_size : 1024;
        if (size < 16 || size > 8192)
            return pgd_fail(err, PGD_EINVAL, "png-size: %u is outside 16..8192", size);
        uint32_t w, h;
        pgd_synth_level_size(p.width, p.height, preview_level(b, n, size), &w, &h);
        if (w > PREVIEW_MAX_SOURCE || h > PREVIEW_MAX_SOURCE)
            return pgd_fail(err, PGD_EINVAL, "render-png: the smallest of the %d levels is %ux%u; allow more levels",
                            n, w, h);
    }
    return 0;
}

/* mkdir -p. */
static int make_dirs(const char *dir, pgd_err *err)
{
    char *d = strdup(dir);
    if (!d)
        return pgd_fail(err, PGD_ENOMEM, "out: out of memory");
    int rc = 0;
    for (char *c = d + 1;; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char keep = *c;
        *c = '\0';
        struct stat st;
        if (mkdir(d, 0777) < 0 && errno != EEXIST) {
            rc = pgd_fail_errno(err, pgd_code_from_errno(errno), "out: cannot create folder %s", d);
            break;
        }
        if (stat(d, &st) < 0 || !S_ISDIR(st.st_mode)) {
            rc = pgd_fail(err, PGD_EIO, "out: %s is not a folder", d);
            break;
        }
        *c = keep;
        if (keep == '\0')
            break;
    }
    free(d);
    return rc;
}

/* Halve the preview in place until it fits, then write it. */
static int write_preview(const char *path, uint8_t *rgb, uint32_t w, uint32_t h, uint32_t size, pgd_err *err)
{
    while (w > size || h > size) {
        pgd_synth_downsample2(rgb, w, h, (size_t)w * 3, rgb, (size_t)((w + 1) / 2) * 3);
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    return pgd_png_write(path, rgb, w, h, 3, err);
}

/* Write slide i (and the preview when i == 0 and one is wanted). */
static int write_one(const pgd_synth_batch *b, uint32_t i, const char *prefix, pgd_err *err)
{
    char id[PGD_SYNTH_MAX_ID + 1];
    if (pgd_synth_image_id(prefix, i, id, sizeof id) < 0)
        return pgd_fail(err, PGD_EINVAL, "prefix: id too long");
    size_t n = strlen(b->out_dir) + strlen(id) + 8;
    char *path = malloc(n);
    uint8_t *preview = NULL;
    pgd_synth_slide *s = NULL;
    int rc = -1, plevel = 0;
    uint32_t pw = 0, ph = 0, psize = b->preview_size ? b->preview_size : 1024;
    if (!path) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(path, n, "%s/%s.tiff", b->out_dir, id);
    s = pgd_synth_slide_new(&b->params, i, -1, err);
    if (!s)
        goto done;
    if (i == 0 && b->preview_png) {
        pgd_synth_tiff_opts o = b->tiff;
        if (pgd_synth_tiff_opts_check(&o, err) < 0)
            goto done;
        int nl = pgd_synth_level_count(b->params.width, b->params.height, o.tile, o.levels, err);
        if (nl < 0)
            goto done;
        plevel = preview_level(b, nl, psize);
        pgd_synth_level_size(b->params.width, b->params.height, plevel, &pw, &ph);
        preview = malloc((size_t)pw * ph * 3);
        if (!preview) {
            pgd_fail(err, PGD_ENOMEM, "render-png: out of memory");
            goto done;
        }
    }
    double t0 = pgd_clock_s();
    uint64_t bytes = 0;
    pgd_synth_progress_fn progress = b->jobs <= 1 ? b->progress : NULL;
    if (pgd_synth_write_slide(s, path, &b->tiff, progress, b->ctx, plevel, preview, &bytes, err) < 0)
        goto done;
    double dt = pgd_clock_s() - t0;
    if (preview && write_preview(b->preview_png, preview, pw, ph, psize, err) < 0)
        goto done;
    if (b->on_slide) {
        pgd_synth_info info;
        pgd_synth_slide_info(s, &info);
        b->on_slide(b->ctx, i, id, &info, bytes, dt);
    }
    rc = 0;
done:
    pgd_synth_slide_free(&s);
    free(preview);
    free(path);
    return rc;
}

/* Worker processes: worker k writes slides k, k + jobs, ... and exits 0, or 1 after logging its error. */
static int generate_forked(const pgd_synth_batch *b, const char *prefix, int jobs, pgd_err *err)
{
    pid_t pids[MAX_JOBS];
    int started = 0, failed = 0;
    fflush(stdout);
    fflush(stderr);
    for (; started < jobs; started++) {
        pid_t pid = fork();
        if (pid < 0) {
            pgd_fail_errno(err, PGD_EIO, "jobs: fork");
            break;
        }
        if (pid == 0) {
            pgd_err e = PGD_ERR_INIT;
            for (uint32_t i = (uint32_t)started; i < b->count; i += (uint32_t)jobs)
                if (write_one(b, i, prefix, &e) < 0) {
                    pgd_log_err(&e);
                    _exit(1);
                }
            _exit(0);
        }
        pids[started] = pid;
    }
    for (int k = 0; k < started; k++) {
        int st;
        while (waitpid(pids[k], &st, 0) < 0)
            if (errno != EINTR) {
                st = 1;
                break;
            }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    if (failed)
        return pgd_fail(err, PGD_EIO, "%d of %d worker processes failed (their errors are logged above)", failed,
                        started);
    return pgd_err_is_set(err) ? -1 : 0;
}

int pgd_synth_generate(const pgd_synth_batch *b, pgd_err *err)
{
    if (pgd_synth_batch_check(b, err) < 0)
        return -1;
    if (make_dirs(b->out_dir, err) < 0)
        return -1;
    char pbuf[32];
    const char *prefix = batch_prefix(b, pbuf, sizeof pbuf);
    int jobs = b->jobs < 1 ? 1 : b->jobs;
    if ((uint32_t)jobs > b->count)
        jobs = (int)b->count;
    if (jobs > 1) {
        if (generate_forked(b, prefix, jobs, err) < 0)
            return -1;
    } else {
        for (uint32_t i = 0; i < b->count; i++)
            if (write_one(b, i, prefix, err) < 0)
                return -1;
    }
    size_t n = strlen(b->out_dir) + 16;
    char *csv = malloc(n);
    if (!csv)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    snprintf(csv, n, "%s/train.csv", b->out_dir);
    int rc = pgd_synth_manifest_write(csv, &b->params, prefix, b->count, err);
    free(csv);
    return rc;
}
