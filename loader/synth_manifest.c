/* synth_manifest.c: slide ids and the train.csv of a synthetic set (PANDA's columns, or plain ones for ultramnist). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "synth_priv.h"

#define PREFIX_MAX 40

int pgd_synth_prefix_ok(const char *prefix)
{
    size_t n = strlen(prefix);
    if (n > PREFIX_MAX || prefix[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return 0;
    }
    return 1;
}

int pgd_synth_image_id(const char *prefix, uint32_t index, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%05u", prefix, index);
    return n < 0 || (size_t)n >= cap || n > PGD_SYNTH_MAX_ID ? -1 : 0;
}

/* panda: PANDA's train.csv columns. ultramnist: labels run to 9, past PANDA's isup_grade range (0..5, which
 * the manifest reader enforces), so its rows use the plain columns path,label,id plus the digits. */
static int write_rows(FILE *f, const pgd_synth_params *p, const char *prefix, uint32_t count, pgd_err *err)
{
    int panda = p->task == PGD_SYNTH_PANDA;
    if (fputs(panda ? "image_id,data_provider,isup_grade,gleason_score\n" : "path,label,id,digits\n", f) == EOF)
        return pgd_fail_errno(err, PGD_EIO, "writing the manifest");
    for (uint32_t i = 0; i < count; i++) {
        char id[PGD_SYNTH_MAX_ID + 1];
        if (pgd_synth_image_id(prefix, i, id, sizeof id) < 0)
            return pgd_fail(err, PGD_EINVAL, "prefix: id of slide %u is longer than %d bytes", i, PGD_SYNTH_MAX_ID);
        pgd_synth_slide *s = pgd_synth_slide_new(p, i, -1, err);
        if (!s)
            return -1;
        pgd_synth_info info;
        pgd_synth_slide_info(s, &info);
        pgd_synth_slide_free(&s);
        int n = panda ? fprintf(f, "%s,pgd-synth,%d,%s\n", id, info.label, info.detail)
                      : fprintf(f, "%s.tiff,%d,%s,%s\n", id, info.label, id, info.detail);
        if (n < 0)
            return pgd_fail_errno(err, PGD_EIO, "writing the manifest");
    }
    return 0;
}

int pgd_synth_manifest_write(const char *path, const pgd_synth_params *p, const char *prefix, uint32_t count,
                             pgd_err *err)
{
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: cannot create", tmp);
        free(tmp);
        return -1;
    }
    int rc = write_rows(f, p, prefix, count, err);
    if (fflush(f) != 0 && rc == 0)
        rc = pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: write", tmp);
    if (fclose(f) != 0 && rc == 0)
        rc = pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: close", tmp);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = pgd_fail_errno(err, pgd_code_from_errno(errno), "%s: renaming to %s", tmp, path);
    if (rc < 0) {
        pgd_err_prefix(err, "manifest %s: ", path);
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
