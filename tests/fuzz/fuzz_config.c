/* fuzz_config.c: libFuzzer target for config text, checking that a written config loads back unchanged. */
/*
 * The input is config text, loaded over the defaults of a table with an option of every type (and the
 * range kinds: bounded, unbounded, one-sided) by pgd_cfg_load_text.
 *
 * Invariants checked (abort() on violation): a rejected text has an error code and a message naming the
 * text, and leaves every field as it was; an accepted one, written with pgd_cfg_write and loaded over
 * fresh defaults, gives back the same value in every field (floats bit for bit), and writing that again
 * gives the same bytes.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CONFIG_NAME "fuzz.conf"

typedef struct fuzz_config {
    int64_t batch_size, seed, workers;
    double lr, momentum, scale;
    int verbose, dtype, resample;
    char *name, *out_dir, *manifest;
} fuzz_config;

static const pgd_cfg_opt fuzz_config_opts[] = {
    {"batch_size", PGD_CFG_INT, offsetof(fuzz_config, batch_size), "8", 1, 4096, NULL, "images per batch", 0},
    {"seed", PGD_CFG_INT, offsetof(fuzz_config, seed), "0", 1, -1, NULL, "random seed", 0},
    {"data.workers", PGD_CFG_INT, offsetof(fuzz_config, workers), "-1", -1, 64, NULL, "-1: one per core", 0},
    {"lr", PGD_CFG_FLOAT, offsetof(fuzz_config, lr), "1e-3", 0, 10, NULL, "learning rate", 0},
    {"momentum", PGD_CFG_FLOAT, offsetof(fuzz_config, momentum), "0.9", 1, -1, NULL, "", 0},
    {"zstore.scale", PGD_CFG_FLOAT, offsetof(fuzz_config, scale), "1", 0, INFINITY, NULL, "at least 0", 0},
    {"verbose", PGD_CFG_BOOL, offsetof(fuzz_config, verbose), "false", 0, 0, NULL, "more log lines", 0},
    {"zstore.dtype", PGD_CFG_ENUM, offsetof(fuzz_config, dtype), "f16", 0, 0, "f32|f16|bf16", "Z dtype", 0},
    {"data.resample", PGD_CFG_ENUM, offsetof(fuzz_config, resample), "box", 0, 0, "box", NULL, 0},
    {"name", PGD_CFG_STRING, offsetof(fuzz_config, name), NULL, 0, 0, NULL, "run name", 0},
    {"out_dir", PGD_CFG_STRING, offsetof(fuzz_config, out_dir), "runs", 0, 0, NULL, "where runs go", 0},
    {"data.manifest", PGD_CFG_STRING, offsetof(fuzz_config, manifest), NULL, 0, 0, NULL, "slide list",
     PGD_CFG_REQUIRED},
    {.key = NULL},
};

static int fuzz_config_str_same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Are the two configs equal field by field (floats compared bit for bit)? */
static int fuzz_config_same(const fuzz_config *a, const fuzz_config *b)
{
    return a->batch_size == b->batch_size && a->seed == b->seed && a->workers == b->workers &&
           memcmp(&a->lr, &b->lr, sizeof a->lr) == 0 && memcmp(&a->momentum, &b->momentum, sizeof a->momentum) == 0 &&
           memcmp(&a->scale, &b->scale, sizeof a->scale) == 0 && a->verbose == b->verbose && a->dtype == b->dtype &&
           a->resample == b->resample && fuzz_config_str_same(a->name, b->name) &&
           fuzz_config_str_same(a->out_dir, b->out_dir) && fuzz_config_str_same(a->manifest, b->manifest);
}

/* A zeroed config set to the defaults (the table is fixed, so this cannot fail). */
static void fuzz_config_defaults(fuzz_config *c)
{
    memset(c, 0, sizeof *c);
    if (pgd_cfg_defaults(fuzz_config_opts, c, NULL) != 0)
        abort();
}

/* pgd_cfg_write into a malloc'd buffer; *len gets its length. */
static char *fuzz_config_write(const fuzz_config *c, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        abort();
    if (pgd_cfg_write(fuzz_config_opts, c, f, NULL) != 0 || fclose(f) != 0)
        abort();
    return buf;
}

/* Write c, load the text over fresh defaults, and check that nothing changed. */
static void fuzz_config_round_trip(const fuzz_config *c)
{
    size_t len = 0, len2 = 0;
    char *text = fuzz_config_write(c, &len);
    fuzz_config back;
    fuzz_config_defaults(&back);
    if (pgd_cfg_load_text(fuzz_config_opts, &back, "written.conf", text, len, NULL) != 0)
        abort();
    if (!fuzz_config_same(c, &back))
        abort();
    char *again = fuzz_config_write(&back, &len2);
    if (len2 != len || memcmp(again, text, len) != 0)
        abort();
    free(again);
    free(text);
    pgd_cfg_free(fuzz_config_opts, &back);
}

/* Load and check. Returns 1 when the text was accepted, 0 when it was rejected. */
static int fuzz_config_run(const uint8_t *data, size_t size)
{
    fuzz_config c, before;
    fuzz_config_defaults(&c);
    fuzz_config_defaults(&before);
    pgd_err err = PGD_ERR_INIT;
    int rc = pgd_cfg_load_text(fuzz_config_opts, &c, FUZZ_CONFIG_NAME, (const char *)data, size, &err);
    if (rc != 0) {
        if (err.code == PGD_OK || strncmp(err.msg, FUZZ_CONFIG_NAME " line ", strlen(FUZZ_CONFIG_NAME) + 6) != 0)
            abort();
        if (!fuzz_config_same(&c, &before)) /* all or nothing */
            abort();
    } else {
        if (err.code != PGD_OK)
            abort();
        fuzz_config_round_trip(&c);
    }
    pgd_cfg_free(fuzz_config_opts, &c);
    pgd_cfg_free(fuzz_config_opts, &before);
    return rc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_config_run(data, size);
    return 0;
}
