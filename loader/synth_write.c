/* synth_write.c: render one slide band by band through the pyramid writer, under a .tmp name renamed at the end. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "synth_priv.h"

/* The level-0 ImageDescription: names the generator, the task, the seed and what the slide shows. */
static void describe(const pgd_synth_slide *s, const pgd_synth_tiff_opts *o, char *out, size_t cap)
{
    pgd_synth_info info;
    pgd_synth_slide_info(s, &info);
    snprintf(out, cap, "pgd-synth task=%s seed=%llu index=%u label=%d detail=%s fit=%u unit_px=%.6f mpp=%g",
             pgd_synth_task_name(s->p.task), (unsigned long long)s->p.seed, s->index, s->label, info.detail,
             s->p.fit, s->unit, o->mpp);
}

static int render_bands(const pgd_synth_slide *s, pgd_synth_pyramid *p, pgd_synth_progress_fn progress,
                        void *ctx, pgd_err *err)
{
    for (;;) {
        uint32_t y, rows;
        size_t stride;
        uint8_t *band = pgd_synth_pyramid_band(p, &y, &rows, &stride);
        if (rows == 0)
            return 0;
        if (pgd_synth_render(s, 0, y, s->p.width, rows, band, stride, err) < 0 || pgd_synth_pyramid_push(p, err) < 0)
            return -1;
        if (progress)
            progress(ctx, y + rows, s->p.height);
    }
}

int pgd_synth_write_slide(const pgd_synth_slide *s, const char *path, const pgd_synth_tiff_opts *o,
                          pgd_synth_progress_fn progress, void *ctx, int preview_level, uint8_t *preview,
                          uint64_t *bytes, pgd_err *err)
{
    pgd_synth_tiff_opts opts = *o;
    if (pgd_synth_tiff_opts_check(&opts, err) < 0)
        return -1;
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp", path);
    char desc[512];
    describe(s, &opts, desc, sizeof desc);
    pgd_synth_pyramid *p = pgd_synth_pyramid_open(tmp, s->p.width, s->p.height, &opts, desc, err);
    if (!p)
        goto fail;
    if (preview && pgd_synth_pyramid_capture(p, preview_level, preview, err) < 0)
        goto fail;
    if (render_bands(s, p, progress, ctx, err) < 0)
        goto fail;
    int rc = pgd_synth_pyramid_close(p, err);
    p = NULL;
    if (rc < 0)
        goto fail;
    struct stat st;
    if (stat(tmp, &st) < 0) {
        pgd_fail_errno(err, PGD_EIO, "%s: stat", tmp);
        goto fail;
    }
    if (rename(tmp, path) < 0) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: renaming to %s", tmp, path);
        goto fail;
    }
    if (bytes)
        *bytes = (uint64_t)st.st_size;
    free(tmp);
    return 0;
fail:
    pgd_synth_pyramid_abort(p);
    if (unlink(tmp) < 0 && errno != ENOENT)
        pgd_err_prefix(err, "(and %s could not be removed) ", tmp);
    free(tmp);
    return -1;
}
