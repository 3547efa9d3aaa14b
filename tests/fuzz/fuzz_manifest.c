/* fuzz_manifest.c: libFuzzer target for manifest CSV text, checking every entry it accepts. */
/*
 * The input is manifest text, loaded twice by pgd_manifest_load_text: once as "fuzz/train.csv" with no
 * slide folder (paths under "fuzz"), once with a slide folder so long that a PANDA path or a relative
 * plain path can pass PGD_MANIFEST_MAX_PATH.
 *
 * Invariants checked (abort() on violation): a rejected text gives no manifest, an error code and a
 * message starting with the name; an accepted one has a known kind, and every entry an id that passes
 * pgd_manifest_id_ok, a non-empty path of at most PGD_MANIFEST_MAX_PATH bytes, a label in range (-1 only
 * without a label column), PANDA-only columns only in a PANDA manifest, lines in increasing order; ids are
 * unique and max_label is the highest label.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MANIFEST_LONG_DIR 4040 /* + "/" + a 63-byte id + ".svs" is past PGD_MANIFEST_MAX_PATH */

static int fuzz_manifest_by_id(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void fuzz_manifest_check_unique(const pgd_manifest *m)
{
    if (m->count < 2)
        return;
    char **ids = malloc(m->count * sizeof *ids);
    if (!ids)
        abort();
    for (size_t i = 0; i < m->count; i++)
        ids[i] = m->entries[i].id;
    qsort(ids, m->count, sizeof *ids, fuzz_manifest_by_id);
    for (size_t i = 1; i < m->count; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            abort();
    free(ids);
}

static void fuzz_manifest_check_entry(const pgd_manifest *m, const pgd_manifest_entry *e, int prev_line)
{
    int max = m->kind == PGD_MANIFEST_PANDA ? 5 : PGD_MANIFEST_MAX_LABEL;
    if (!pgd_manifest_id_ok(e->id) || strlen(e->id) > PGD_MANIFEST_MAX_ID)
        abort();
    if (!e->path || !e->path[0] || strlen(e->path) > PGD_MANIFEST_MAX_PATH)
        abort();
    if (m->labeled ? e->label < 0 || e->label > max : e->label != -1)
        abort();
    if (m->kind == PGD_MANIFEST_PLAIN && (e->provider || e->gleason))
        abort();
    if (e->line <= prev_line)
        abort();
}

/* Everything an accepted manifest holds must be in range and well formed. */
static void fuzz_manifest_check(const pgd_manifest *m)
{
    if (m->kind != PGD_MANIFEST_PANDA && m->kind != PGD_MANIFEST_PLAIN)
        abort();
    if ((m->count > 0) != (m->entries != NULL))
        abort();
    int max_label = -1, prev_line = 1;
    for (size_t i = 0; i < m->count; i++) {
        const pgd_manifest_entry *e = &m->entries[i];
        fuzz_manifest_check_entry(m, e, prev_line);
        prev_line = e->line;
        if (e->label > max_label)
            max_label = e->label;
    }
    if (m->max_label != max_label)
        abort();
    fuzz_manifest_check_unique(m);
}

/* Load the text once as name with slide_dir and check. Returns 1 when accepted, 0 when rejected. */
static int fuzz_manifest_load(const uint8_t *data, size_t size, const char *name, const char *slide_dir)
{
    static pgd_manifest untouched;
    pgd_manifest *m = &untouched; /* a rejected load must set it to NULL */
    pgd_err err = PGD_ERR_INIT;
    if (pgd_manifest_load_text(&m, name, (const char *)data, size, slide_dir, ".svs", &err) != 0) {
        if (m || err.code == PGD_OK || strncmp(err.msg, name, strlen(name)) != 0)
            abort();
        return 0;
    }
    if (!m || err.code != PGD_OK)
        abort();
    fuzz_manifest_check(m);
    pgd_manifest_free(&m);
    if (m)
        abort();
    return 1;
}

/* Both loads; returns what the first one (no slide folder) gave. */
static int fuzz_manifest_run(const uint8_t *data, size_t size)
{
    static char long_dir[FUZZ_MANIFEST_LONG_DIR + 1];
    if (!long_dir[0]) {
        memset(long_dir, 'd', FUZZ_MANIFEST_LONG_DIR);
        long_dir[0] = '/';
    }
    int accepted = fuzz_manifest_load(data, size, "fuzz/train.csv", NULL);
    fuzz_manifest_load(data, size, "long.csv", long_dir);
    return accepted;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_manifest_run(data, size);
    return 0;
}
