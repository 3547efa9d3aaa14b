/* run_tools.c: `pgd-trainer kfold|pending|scan|state`: the small steps of the launchers (launch/panda.sh,
 * launch/infer.sh) done in C: a seeded stratified split, the slides an inference still has to do, a folder of
 * slides as a manifest, where a saved run continues. */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "file.h"
#include "log.h"
#include "manifest.h"
#include "trainer/run.h"
#include "trainer/safetensors.h"

typedef struct tool_opts {
    char *manifest, *slides, *ext, *train_out, *val_out, *predictions, *out, *dir, *exts;
    int64_t folds, fold, seed;
} tool_opts;

#define O(f) offsetof(tool_opts, f)
#define MANIFEST_OPTS                                                                                              \
    {"manifest", PGD_CFG_STRING, O(manifest), NULL, 0, 0, NULL, "the manifest (PANDA train.csv or path,label,id)",  \
     PGD_CFG_REQUIRED},                                                                                            \
        {"slides", PGD_CFG_STRING, O(slides), NULL, 0, 0, NULL, "PANDA slide folder (default: the manifest's)", 0}, \
        {"ext", PGD_CFG_STRING, O(ext), ".tiff", 0, 0, NULL, "PANDA slide file extension", 0}

static const pgd_cfg_opt kfold_opts[] = {
    MANIFEST_OPTS,
    {"folds", PGD_CFG_INT, O(folds), "5", 2, 1000000, NULL, "k", 0},
    {"fold", PGD_CFG_INT, O(fold), "0", 0, 999999, NULL, "the fold that validates", 0},
    {"seed", PGD_CFG_INT, O(seed), "0", 0, 9007199254740992.0, NULL, "the split's seed", 0},
    {"train_out", PGD_CFG_STRING, O(train_out), NULL, 0, 0, NULL, "the training manifest written", PGD_CFG_REQUIRED},
    {"val_out", PGD_CFG_STRING, O(val_out), NULL, 0, 0, NULL, "the validation manifest written", PGD_CFG_REQUIRED},
    {NULL},
};

static const pgd_cfg_opt pending_opts[] = {
    MANIFEST_OPTS,
    {"predictions", PGD_CFG_STRING, O(predictions), NULL, 0, 0, NULL,
     "predictions.csv of earlier runs: its status=ok rows are done; other rows are removed from it", PGD_CFG_REQUIRED},
    {"out", PGD_CFG_STRING, O(out), NULL, 0, 0, NULL, "the manifest of the slides still to do", PGD_CFG_REQUIRED},
    {NULL},
};

static const pgd_cfg_opt scan_opts[] = {
    {"dir", PGD_CFG_STRING, O(dir), NULL, 0, 0, NULL, "the folder of slides (not recursive)", PGD_CFG_REQUIRED},
    {"out", PGD_CFG_STRING, O(out), NULL, 0, 0, NULL, "the manifest written (path,id)", PGD_CFG_REQUIRED},
    {"exts", PGD_CFG_STRING, O(exts), ".svs,.tif,.tiff,.ndpi,.mrxs,.scn,.vms,.vmu,.bif,.svslide,.jpg,.jpeg,.png", 0,
     0, NULL, "file extensions taken as slides (comma-separated, case-insensitive)", 0},
    {NULL},
};

static const pgd_cfg_opt state_opts[] = {{NULL}};

/* ---- kfold ---------------------------------------------------------------------------------------- */

static int do_kfold(tool_opts *o, pgd_err *err)
{
    pgd_manifest *m = NULL;
    int *fold = NULL, rc = -1;
    unsigned char *val = NULL, *train = NULL;
    if (o->fold >= o->folds) {
        pgd_fail(err, PGD_EINVAL, "fold: %lld is not below folds %lld", (long long)o->fold, (long long)o->folds);
        return -2;
    }
    if (pgd_manifest_load(&m, o->manifest, o->slides, o->ext, err) != 0)
        return -1;
    if (!(fold = malloc(m->count * sizeof *fold)) || !(val = malloc(m->count)) || !(train = malloc(m->count))) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto done;
    }
    if (pgd_manifest_kfold(m, (int)o->folds, (uint64_t)o->seed, fold, err) != 0)
        goto done;
    size_t nv = 0;
    for (size_t i = 0; i < m->count; i++) {
        val[i] = fold[i] == (int)o->fold;
        train[i] = !val[i];
        nv += val[i];
    }
    if (pgd_manifest_write(m, train, o->train_out, err) != 0 || pgd_manifest_write(m, val, o->val_out, err) != 0)
        goto done;
    printf("kfold: %zu slides: %zu train (%s), %zu validation (%s), fold %lld of %lld, seed %lld\n", m->count,
           m->count - nv, o->train_out, nv, o->val_out, (long long)o->fold, (long long)o->folds, (long long)o->seed);
    rc = 0;
done:
    free(fold);
    free(val);
    free(train);
    pgd_manifest_free(&m);
    return rc;
}

/* ---- pending -------------------------------------------------------------------------------------- */

/* Split one CSV line in place into fields (quotes removed, "" -> "); returns the count (at most cap). */
static int csv_fields(char *line, char **f, int cap)
{
    int n = 0;
    char *r = line, *w = line;
    while (n < cap) {
        f[n++] = w;
        if (*r == '"') {
            r++;
            while (*r && !(*r == '"' && r[1] != '"'))
                *w++ = (*r == '"') ? (r++, '"') : *r, r++;
            if (*r == '"')
                r++;
            while (*r && *r != ',')
                *w++ = *r++;
        } else {
            while (*r && *r != ',')
                *w++ = *r++;
        }
        if (*r != ',') {
            *w = '\0';
            break;
        }
        r++;
        *w++ = '\0';
    }
    return n;
}

typedef struct idset {
    char **ids;
    size_t n, cap;
} idset;

static int idset_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read predictions: the ids of its ok rows into done; rewrite it with only the header and those rows when it
 * holds others (error rows are tried again). A missing file is no rows. */
static int read_done(const char *path, idset *done, size_t *dropped, pgd_err *err)
{
    char *text = NULL;
    size_t len = 0;
    pgd_err e = PGD_ERR_INIT;
    *dropped = 0;
    if (pgd_file_read(path, (size_t)1 << 31, &text, &len, &e) != 0) {
        if (e.sys_errno == ENOENT)
            return 0;
        *err = e;
        return -1;
    }
    char *copy = strdup(text), *line = text, *next, *keep = NULL, *fields[4096];
    size_t klen = 0;
    int id_col = -1, st_col = -1, rc = -1, lineno = 0;
    if (!copy || !(keep = malloc(len + 1))) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto done;
    }
    for (const char *src = copy; line && *line; line = next, lineno++) {
        next = strchr(line, '\n');
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        const char *orig = src;
        src += ll + (next ? 1 : 0);
        if (next)
            *next++ = '\0';
        if (ll && line[ll - 1] == '\r')
            line[ll - 1] = '\0';
        if (!*line)
            continue;
        int n = csv_fields(line, fields, 4096);
        if (lineno == 0) {
            for (int i = 0; i < n; i++) {
                if (strcmp(fields[i], "image_id") == 0)
                    id_col = i;
                if (strcmp(fields[i], "status") == 0)
                    st_col = i;
            }
            if (id_col < 0 || st_col < 0) {
                pgd_fail(err, PGD_EFORMAT, "%s line 1: no image_id and status columns", path);
                goto done;
            }
        } else if (n > st_col && strcmp(fields[st_col], "ok") == 0) {
            if (done->n == done->cap) {
                size_t cap = done->cap ? done->cap * 2 : 256;
                char **ids = realloc(done->ids, cap * sizeof *ids);
                if (!ids) {
                    pgd_fail(err, PGD_ENOMEM, "out of memory");
                    goto done;
                }
                done->ids = ids, done->cap = cap;
            }
            if (!(done->ids[done->n++] = strdup(fields[id_col]))) {
                pgd_fail(err, PGD_ENOMEM, "out of memory");
                goto done;
            }
        } else {
            (*dropped)++;
            continue;
        }
        memcpy(keep + klen, orig, ll);
        klen += ll;
        keep[klen++] = '\n';
    }
    if (done->n)
        qsort(done->ids, done->n, sizeof *done->ids, idset_cmp);
    if (*dropped) { /* the rows kept, atomically */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "w");
        if (!f || fwrite(keep, 1, klen, f) != klen || fclose(f) != 0 || rename(tmp, path) != 0) {
            pgd_fail_errno(err, PGD_EIO, "rewrite %s", path);
            unlink(tmp);
            goto done;
        }
    }
    rc = 0;
done:
    free(text);
    free(copy);
    free(keep);
    return rc;
}

static int do_pending(tool_opts *o, pgd_err *err)
{
    pgd_manifest *m = NULL;
    idset done = {0};
    unsigned char *todo = NULL;
    size_t dropped = 0, left = 0;
    int rc = -1;
    if (pgd_manifest_load(&m, o->manifest, o->slides, o->ext, err) != 0 ||
        read_done(o->predictions, &done, &dropped, err) != 0)
        goto out;
    if (!(todo = malloc(m->count ? m->count : 1))) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->count; i++) {
        const char *id = m->entries[i].id;
        todo[i] = !done.n || !bsearch(&id, done.ids, done.n, sizeof *done.ids, idset_cmp);
        left += todo[i];
    }
    if (pgd_manifest_write(m, todo, o->out, err) != 0)
        goto out;
    printf("pending: %zu of %zu slides to do (%zu done", left, m->count, m->count - left);
    if (dropped)
        printf("; %zu earlier row(s) without status ok removed, to be tried again", dropped);
    printf(")\n");
    rc = 0;
out:
    for (size_t i = 0; i < done.n; i++)
        free(done.ids[i]);
    free(done.ids);
    free(todo);
    pgd_manifest_free(&m);
    return rc;
}

/* ---- scan ----------------------------------------------------------------------------------------- */

static int has_ext(const char *name, const char *exts)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return 0;
    size_t n = strlen(dot);
    for (const char *p = exts; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == n && strncasecmp(p, dot, n) == 0)
            return 1;
        p += l + (c ? 1 : 0);
    }
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const pgd_manifest_entry *)a)->path, ((const pgd_manifest_entry *)b)->path);
}

static int do_scan(tool_opts *o, pgd_err *err)
{
    pgd_manifest m = {.kind = PGD_MANIFEST_PLAIN, .labeled = 0, .max_label = -1};
    size_t cap = 0;
    int rc = -1;
    DIR *d = opendir(o->dir);
    if (!d)
        return pgd_fail_errno(err, PGD_EIO, "scan: %s", o->dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        char path[4200];
        struct stat st;
        if (de->d_name[0] == '.' || !has_ext(de->d_name, o->exts))
            continue;
        snprintf(path, sizeof path, "%s/%s", o->dir, de->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (m.count == cap) {
            cap = cap ? cap * 2 : 64;
            pgd_manifest_entry *e = realloc(m.entries, cap * sizeof *e);
            if (!e) {
                pgd_fail(err, PGD_ENOMEM, "out of memory");
                goto out;
            }
            m.entries = e;
        }
        pgd_manifest_entry *e = &m.entries[m.count];
        memset(e, 0, sizeof *e);
        e->label = -1;
        e->path = strdup(path);
        const char *dot = strrchr(de->d_name, '.');
        size_t n = (size_t)(dot - de->d_name);
        e->id = strndup(de->d_name, n > PGD_MANIFEST_MAX_ID ? PGD_MANIFEST_MAX_ID : n);
        m.count++;
        if (!e->path || !e->id) {
            pgd_fail(err, PGD_ENOMEM, "out of memory");
            goto out;
        }
        for (char *c = e->id; *c; c++) /* a safe file name: what the Z files and the wire take */
            if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.' ||
                  *c == '_' || *c == '-'))
                *c = '_';
    }
    if (m.count)
        qsort(m.entries, m.count, sizeof *m.entries, name_cmp);
    for (size_t i = 0; i < m.count; i++)
        for (size_t j = i + 1; j < m.count; j++)
            if (strcmp(m.entries[i].id, m.entries[j].id) == 0) {
                pgd_fail(err, PGD_EFORMAT, "scan: %s and %s give the same image id '%s'", m.entries[i].path,
                         m.entries[j].path, m.entries[i].id);
                goto out;
            }
    if (pgd_manifest_write(&m, NULL, o->out, err) != 0)
        goto out;
    printf("scan: %zu slides in %s -> %s\n", m.count, o->dir, o->out);
    rc = 0;
out:
    closedir(d);
    for (size_t i = 0; i < m.count; i++) {
        free(m.entries[i].path);
        free(m.entries[i].id);
    }
    free(m.entries);
    return rc;
}

/* ---- state ---------------------------------------------------------------------------------------- */

static int do_state(const char *dir, pgd_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    pgd_st_file *f = pgd_st_open(path, PGD_ST_MMAP, err);
    if (!f)
        return -1;
    const char *epoch = pgd_st_meta(f, "epoch"), *step = pgd_st_meta(f, "step");
    int rc = 0;
    if (!epoch || !step)
        rc = pgd_fail(err, PGD_EFORMAT, "%s: no epoch / step metadata (not a pgd-trainer training state)", path);
    else
        printf("epoch %s step %s\n", epoch, step);
    pgd_st_close(&f);
    return rc;
}

/* ---- the commands --------------------------------------------------------------------------------- */

static const struct tool {
    const char *name, *usage;
    const pgd_cfg_opt *opts;
    int npos;
} tools[] = {
    {"kfold", "pgd-trainer kfold --manifest train.csv --train-out T.csv --val-out V.csv [--folds 5 --fold 0 --seed 0]\n"
              "  a seeded stratified k-fold split: fold `fold` validates, the others train",
     kfold_opts, 0},
    {"pending", "pgd-trainer pending --manifest M.csv --predictions predictions.csv --out todo.csv\n"
                "  the slides of M without a status=ok row in predictions.csv (whose other rows are removed)",
     pending_opts, 0},
    {"scan", "pgd-trainer scan --dir SLIDES --out manifest.csv [--exts .svs,.tiff,...]\n"
             "  a folder of slides as a path,id manifest (ids: file names without extension, made safe)",
     scan_opts, 0},
    {"state", "pgd-trainer state RUN_DIR\n  where a saved training continues: 'epoch E step S'", state_opts, 1},
};

int pgd_run_tool_main(int argc, char **argv)
{
    const struct tool *t = NULL;
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++)
        if (strcmp(argv[0], tools[i].name) == 0)
            t = &tools[i];
    if (!t)
        return PGD_EXIT_USAGE;
    pgd_log_init("trainer", PGD_LOG_INFO, 0);
    tool_opts o;
    memset(&o, 0, sizeof o);
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc;
    if (pgd_cfg_parse_args(t->opts, &o, argc, argv, &a, &err) != 0 || (!a.help && a.npositional != t->npos)) {
        if (!pgd_err_is_set(&err))
            pgd_fail(&err, PGD_EINVAL, "%s: expected %d word(s) besides options, found %d", t->name, t->npos,
                     a.npositional);
        pgd_error("%s", err.msg);
        fprintf(stderr, "usage: %s\n", t->usage);
        rc = PGD_EXIT_USAGE;
    } else if (a.help) {
        pgd_cfg_usage(t->opts, stdout, t->usage);
        rc = PGD_EXIT_OK;
    } else {
        int st = strcmp(t->name, "kfold") == 0     ? do_kfold(&o, &err)
                 : strcmp(t->name, "pending") == 0 ? do_pending(&o, &err)
                 : strcmp(t->name, "scan") == 0    ? do_scan(&o, &err)
                                                   : do_state(a.positional[0], &err);
        if (st != 0)
            pgd_log_err(&err);
        rc = st == 0 ? PGD_EXIT_OK : st == -2 ? PGD_EXIT_USAGE : PGD_EXIT_FAIL;
    }
    pgd_cfg_args_free(&a);
    pgd_cfg_free(t->opts, &o);
    return rc;
}
