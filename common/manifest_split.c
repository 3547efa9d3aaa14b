/* manifest_split.c: seeded stratified k-fold splits of a manifest, and manifest subsets written back as CSV. */
#include "manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rng.h"

int pgd_manifest_kfold(const pgd_manifest *m, int k, uint64_t seed, int *fold, pgd_err *err)
{
    if (k < 2 || (size_t)k > m->count)
        return pgd_fail(err, PGD_EINVAL, "folds: %d folds of %zu images (want 2..%zu)", k, m->count, m->count);
    uint32_t *order = malloc(m->count * sizeof *order);
    if (!order)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    pgd_rng root;
    pgd_rng_seed(&root, seed);
    size_t dealt = 0;
    int lo = m->labeled ? 0 : -1, hi = m->labeled ? m->max_label : -1;
    for (int label = lo; label <= hi; label++) { /* unlabeled: one pass over "label" -1, every entry */
        size_t n = 0;
        for (size_t i = 0; i < m->count; i++)
            if (!m->labeled || m->entries[i].label == label)
                order[n++] = (uint32_t)i;
        pgd_rng r = pgd_rng_split(&root, (uint64_t)(int64_t)label);
        pgd_rng_shuffle_u32(&r, order, n);
        for (size_t j = 0; j < n; j++)
            fold[order[j]] = (int)(dealt++ % (size_t)k);
    }
    free(order);
    return 0;
}

void pgd_manifest_put_field(FILE *f, const char *s)
{
    size_t n = strlen(s);
    if (strpbrk(s, ",\"\r\n") == NULL && (n == 0 || (s[0] != ' ' && s[0] != '\t' && s[n - 1] != ' ' &&
                                                     s[n - 1] != '\t'))) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void write_rows(FILE *f, const pgd_manifest *m, const unsigned char *keep)
{
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        cwd[0] = '\0';
    int panda = m->kind == PGD_MANIFEST_PANDA;
    int prov = 0, gle = 0;
    for (size_t i = 0; i < m->count; i++) {
        prov |= m->entries[i].provider != NULL;
        gle |= m->entries[i].gleason != NULL;
    }
    if (panda)
        fprintf(f, "image_id%s%s%s\n", m->labeled ? ",isup_grade" : "", prov ? ",data_provider" : "",
                gle ? ",gleason_score" : "");
    else
        fprintf(f, "path%s,id\n", m->labeled ? ",label" : "");
    for (size_t i = 0; i < m->count; i++) {
        const pgd_manifest_entry *e = &m->entries[i];
        if (keep && !keep[i])
            continue;
        if (!panda && e->path[0] != '/' && cwd[0]) { /* relative to where we run: made absolute */
            char full[8200];
            snprintf(full, sizeof full, "%s/%s", cwd, e->path);
            pgd_manifest_put_field(f, full);
        } else {
            pgd_manifest_put_field(f, panda ? e->id : e->path);
        }
        if (m->labeled)
            fprintf(f, ",%d", e->label);
        if (!panda) {
            fputc(',', f);
            pgd_manifest_put_field(f, e->id);
        }
        if (panda && prov) {
            fputc(',', f);
            pgd_manifest_put_field(f, e->provider ? e->provider : "");
        }
        if (panda && gle) {
            fputc(',', f);
            pgd_manifest_put_field(f, e->gleason ? e->gleason : "");
        }
        fputc('\n', f);
    }
}

int pgd_manifest_write(const pgd_manifest *m, const unsigned char *keep, const char *path, pgd_err *err)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return pgd_fail(err, PGD_EINVAL, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return pgd_fail_errno(err, PGD_EIO, "open %s", tmp);
    write_rows(f, m, keep);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return pgd_fail_errno(err, PGD_EIO, "write %s", tmp);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return pgd_fail_errno(err, PGD_EIO, "rename %s to %s", tmp, path);
    }
    return 0;
}
