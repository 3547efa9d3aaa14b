/* manifest.h: the slide list of a run, read from a PANDA train.csv or a plain path,label CSV. */
#ifndef PGD_MANIFEST_H
#define PGD_MANIFEST_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "err.h"

#define PGD_MANIFEST_MAX_ID 63      /* id bytes; ids travel in 64-byte NUL-terminated wire slots */
#define PGD_MANIFEST_MAX_PATH 4095  /* slide path bytes (the wire's limit for a job path) */
#define PGD_MANIFEST_MAX_LABEL 65535

typedef enum pgd_manifest_kind {
    PGD_MANIFEST_PANDA = 1, /* image_id[,isup_grade][,data_provider][,gleason_score] */
    PGD_MANIFEST_PLAIN = 2, /* path[,label][,id] */
} pgd_manifest_kind;

typedef struct pgd_manifest_entry {
    char *id;       /* 1..63 bytes, safe as a file name */
    char *path;     /* the slide file */
    int label;      /* class index, -1 when the manifest has no label column (inference) */
    char *provider; /* PANDA data_provider, NULL when the column is absent */
    char *gleason;  /* PANDA gleason_score ("3+4", "negative"), NULL when absent */
    int line;       /* line of the manifest where the row starts */
} pgd_manifest_entry;

typedef struct pgd_manifest {
    pgd_manifest_entry *entries; /* in file order */
    size_t count;
    pgd_manifest_kind kind;
    int labeled;   /* 1 when the label column (isup_grade / label) is present */
    int max_label; /* highest label, -1 when there is none */
} pgd_manifest;

/* Read a manifest CSV. The format is chosen by the header: a `path` column means plain, an `image_id`
 * column means PANDA (both at once is an error). PANDA slide paths are slide_dir + "/" + image_id + ext;
 * plain relative paths are taken relative to the manifest's folder. slide_dir NULL: the manifest's folder;
 * ext NULL: "". A header-only file gives 0 entries (not an error); a file without a header is an error.
 * Errors name the file and line ("train.csv line 17: expected 4 fields, found 3"). On success *out is a
 * new manifest to free with pgd_manifest_free; on error *out is NULL. */
int pgd_manifest_load(pgd_manifest **out, const char *csv_path, const char *slide_dir, const char *ext,
                      pgd_err *err);

/* The same from CSV text in memory (len bytes); name is used in messages and as the manifest's path for
 * resolving relative plain paths. */
int pgd_manifest_load_text(pgd_manifest **out, const char *name, const char *text, size_t len,
                           const char *slide_dir, const char *ext, pgd_err *err);

/* Free the manifest and set *m = NULL. NULL or *m == NULL is fine. */
void pgd_manifest_free(pgd_manifest **m);

/* Is id usable as a slide id: 1..63 bytes, no '/', no control character, not "." or ".."? */
int pgd_manifest_id_ok(const char *id);

/* "panda" or "plain". */
const char *pgd_manifest_kind_name(pgd_manifest_kind kind);

/* --- splits and subsets (manifest_split.c) --- */

/* Seeded k-fold assignment: fold[i] in 0..k-1 for entry i. Labeled manifests are stratified: the entries of
 * each label (ascending) are shuffled with a stream split from the seed by label, then dealt round-robin to
 * the folds, the deal going on from one label to the next; so every fold holds within one entry of count / k
 * and of each label's share. Unlabeled manifests: one seeded shuffle dealt the same way. The result depends
 * only on (entries in file order, labels, k, seed). k must be 2..count (PGD_EINVAL otherwise). */
int pgd_manifest_kfold(const pgd_manifest *m, int k, uint64_t seed, int *fold, pgd_err *err);

/* Write the entries with keep[i] != 0 (keep NULL: all), in file order, as a manifest CSV that loads back to
 * the same entries: PANDA: image_id then isup_grade, data_provider, gleason_score where the source had them
 * (slide paths then come from the reader's slide_dir and ext again); plain: path[,label],id with the resolved
 * paths. Fields are quoted when they need it. Written to a temporary file and renamed over path. */
int pgd_manifest_write(const pgd_manifest *m, const unsigned char *keep, const char *path, pgd_err *err);

/* Write s as one CSV field, quoted (quotes doubled) when it holds a comma, a quote, a line break or edge blanks,
 * so that this module's reader gives s back. */
void pgd_manifest_put_field(FILE *f, const char *s);

#endif
