/* test_safetensors_corpus.c: replays the safetensors fuzzer's seed corpus (tests/corpus/safetensors). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "file.h"

#define FUZZ_SAFETENSORS_LINKED /* the reader comes from libpgd_trainer */
#include "fuzz/fuzz_safetensors.c"

#define CORPUS_DIR "tests/corpus/safetensors"

/* A committed bad seed and the start of the error message it must give. */
static const struct {
    const char *file, *want;
} bad_seeds[] = {
    {"bad-short.safetensors", "fuzz.st: file is 3 bytes, shorter than the 8-byte header length"},
    {"bad-header-too-large.safetensors", "fuzz.st: header length 200000000 is larger than the 100000000-byte "
                                         "limit"},
    {"bad-header-past-end.safetensors", "fuzz.st: header length 100 runs past the end of the file (10 bytes): "
                                        "truncated file"},
    {"bad-json.safetensors", "fuzz.st: header JSON at byte 53: expected ',' or '}'"},
    {"bad-not-object.safetensors", "fuzz.st: header does not start with '{'"},
    {"bad-unknown-dtype.safetensors", "fuzz.st: tensor 'a': unknown dtype 'F128'"},
    {"bad-overlap.safetensors", "fuzz.st: tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
    {"bad-hole.safetensors", "fuzz.st: hole in the data: no tensor holds bytes [4, 8)"},
    {"bad-trailing-bytes.safetensors", "fuzz.st: hole in the data: no tensor holds bytes [4, 6)"},
    {"bad-truncated.safetensors", "fuzz.st: tensor 'a': data_offsets [0, 16] run past the end of the data "
                                  "(13 bytes): truncated file"},
    {"bad-shape-size.safetensors", "fuzz.st: tensor 'a': shape [3] of F32 is 12 bytes but data_offsets [0, 8] "
                                   "hold 8"},
    {"bad-shape-overflow.safetensors", "fuzz.st: tensor 'a': shape [4294967296, 4294967296, 16] is too large"},
    {"bad-duplicate.safetensors", "fuzz.st: header JSON at byte 57: duplicate key 'a'"},
    {"bad-entry-not-object.safetensors", "fuzz.st: tensor 'a': entry is array, not an object"},
    {"bad-metadata-value.safetensors", "fuzz.st: __metadata__ 'step' is integer, not a string"},
    {"bad-negative-shape.safetensors", "fuzz.st: tensor 'a': shape[0] is not a non-negative integer"},
    {"bad-bad-utf8.safetensors", "fuzz.st: header JSON at byte 3: invalid UTF-8 in string"},
    {"bad-deep.safetensors", "fuzz.st: header JSON at byte 79: nested too deeply"},
};

static uint8_t *read_seed(const char *path, size_t *size)
{
    char *buf = NULL;
    *size = 0;
    return pgd_file_read(path, (size_t)1 << 26, &buf, size, NULL) == 0 ? (uint8_t *)buf : NULL;
}

/* Check a bad seed's message against the table; returns 1 when the seed is listed. */
static int check_bad_message(const char *file, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < sizeof bad_seeds / sizeof *bad_seeds; i++) {
        if (strcmp(bad_seeds[i].file, file) != 0)
            continue;
        pgd_err e = PGD_ERR_INIT;
        pgd_st_file *f = pgd_st_open_mem(data, size, FUZZ_ST_NAME, &e);
        pgd_st_close(&f);
        int ok = strncmp(e.msg, bad_seeds[i].want, strlen(bad_seeds[i].want)) == 0;
        if (!ok)
            printf("\n    %s: got '%s', want '%s'", file, e.msg, bad_seeds[i].want);
        CU_ASSERT(ok);
        return 1;
    }
    return 0;
}

static void test_replay_corpus(void)
{
    DIR *d = opendir(CORPUS_DIR);
    if (!d)
        printf("\n    cannot open %s (run from the project root)\n", CORPUS_DIR);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int valid = 0, bad = 0;
    size_t bad_known = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        size_t size = 0;
        uint8_t *data = read_seed(path, &size);
        CU_ASSERT_PTR_NOT_NULL(data);
        if (!data)
            continue;
        int is_valid = strncmp(e->d_name, "valid-", 6) == 0, is_bad = strncmp(e->d_name, "bad-", 4) == 0;
        CU_ASSERT(is_valid || is_bad); /* seeds are named valid-* or bad-* */
        CU_ASSERT_EQUAL(LLVMFuzzerTestOneInput(data, size), 0);
        int accepted = fuzz_st_run(data, size);
        if (is_valid && !accepted) {
            pgd_err err = PGD_ERR_INIT;
            pgd_st_file *f = pgd_st_open_mem(data, size, FUZZ_ST_NAME, &err);
            pgd_st_close(&f);
            printf("\n    %s rejected: %s", e->d_name, err.msg);
        }
        if (is_bad && accepted)
            printf("\n    %s accepted", e->d_name);
        CU_ASSERT_EQUAL(accepted, is_valid);
        valid += is_valid;
        bad += is_bad;
        if (is_bad)
            bad_known += (size_t)check_bad_message(e->d_name, data, size);
        free(data);
    }
    closedir(d);
    CU_ASSERT(valid >= 3);
    CU_ASSERT(bad >= 3);
    CU_ASSERT_EQUAL(bad_known, sizeof bad_seeds / sizeof *bad_seeds); /* every listed seed is there */
}

/* The checks themselves: a valid seed's rewrite is canonical and opens; a JSON text alone is parsed. */
static void test_rewrite_canonical(void)
{
    size_t size = 0;
    uint8_t *data = read_seed(CORPUS_DIR "/valid-handmade.safetensors", &size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    pgd_st_file *f = pgd_st_open_mem(data, size, "h", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    size_t len = 0;
    uint8_t *once = fuzz_st_rewrite(f, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(once);
    CU_ASSERT(len != size); /* padded and re-ordered: not the hand-made bytes */
    CU_ASSERT_EQUAL(once[8], '{');
    pgd_st_file *g = pgd_st_open_mem(once, len, "again", NULL);
    CU_ASSERT_PTR_NOT_NULL(g);
    CU_ASSERT(g && pgd_st_data_offset(g) % 8 == 0 && pgd_st_count(g) == 2);
    CU_ASSERT_STRING_EQUAL(pgd_st_meta(g, "note"), "caf\xc3\xa9 \xf0\x9f\x98\x80");
    pgd_st_close(&g);
    pgd_st_close(&f);
    free(once);
    free(data);
    fuzz_st_json((const uint8_t *)"{\"a\": [1, 2.5]}", 15);
}

static const pgd_test_case cases[] = {
    {"replay_corpus", test_replay_corpus},
    {"rewrite_canonical", test_rewrite_canonical},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("safetensors_corpus", cases, argc, argv);
}
