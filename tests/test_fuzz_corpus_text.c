/* test_fuzz_corpus_text.c: replays the config and manifest fuzzers' seed corpora through their entry points. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cunit_util.h"
#include "file.h"

/* Both targets define the libFuzzer entry point: give each its own name here. */
#define LLVMFuzzerTestOneInput fuzz_config_entry
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_manifest_entry
#include "fuzz/fuzz_manifest.c"
#undef LLVMFuzzerTestOneInput

#define MANIFEST_NAME "fuzz/train.csv"

/* A committed bad seed and text its error message must contain. */
typedef struct bad_seed {
    const char *file, *want;
} bad_seed;

static const bad_seed config_bad[] = {
    {"bad-unknown-key.conf", "fuzz.conf line 1: unknown key 'batchsize' (did you mean 'batch_size'?)"},
    {"bad-range.conf", "fuzz.conf line 3: 'batch_size': 0 is out of range 1..4096"},
    {"bad-unterminated-quote.conf", "fuzz.conf line 1: unterminated quote"},
    {"bad-duplicate.conf", "fuzz.conf line 3: key 'lr' already set on line 1"},
    {"bad-section.conf", "fuzz.conf line 1: expected '[section]'"},
    {"bad-nul.conf", "fuzz.conf line 1: NUL byte in line"},
    {"bad-enum.conf", "fuzz.conf line 2: 'zstore.dtype': 'f64' is not one of f32|f16|bf16"},
    {"bad-escape.conf", "fuzz.conf line 1: unknown escape '\\q' in quoted value"},
    {"bad-not-finite.conf", "fuzz.conf line 1: 'lr': 'nan' is not a finite number"},
    {"bad-int64.conf", "fuzz.conf line 1: 'seed': '9223372036854775808' is out of the int64 range"},
    {"bad-no-equals.conf", "fuzz.conf line 1: expected 'key = value'"},
};

static const bad_seed manifest_bad[] = {
    {"bad-empty.csv", MANIFEST_NAME ": no header line (empty file)"},
    {"bad-both-columns.csv", MANIFEST_NAME " line 1: header has both image_id and path columns"},
    {"bad-no-id-column.csv", MANIFEST_NAME " line 1: no image_id or path column in header 'name,grade'"},
    {"bad-field-count.csv", MANIFEST_NAME " line 3: expected 4 fields, found 3"},
    {"bad-duplicate-id.csv", MANIFEST_NAME " line 4: image_id 'abc' already on line 2"},
    {"bad-grade.csv", MANIFEST_NAME " line 2: isup_grade '6' is not an integer in 0..5"},
    {"bad-unterminated.csv", MANIFEST_NAME " line 2: unterminated quoted field (opened on line 2)"},
    {"bad-id-slash.csv", MANIFEST_NAME " line 2: id 'a/b' contains '/'"},
    {"bad-long-id.csv", "' is longer than 63 bytes"},
    {"bad-label.csv", MANIFEST_NAME " line 2: label '65536' is not an integer in 0..65535"},
    {"bad-stray-quote.csv", MANIFEST_NAME " line 2: quote inside an unquoted field"},
};

/* One corpus: its folder, the fuzz entry point, the run function (1: accepted), the loader that gives the
 * error text, and the bad seeds with their expected messages. */
typedef struct corpus {
    const char *dir;
    int (*entry)(const uint8_t *data, size_t size);
    int (*run)(const uint8_t *data, size_t size);
    void (*message)(const uint8_t *data, size_t size, pgd_err *err);
    const bad_seed *bad;
    size_t nbad;
} corpus;

static void config_message(const uint8_t *data, size_t size, pgd_err *err)
{
    fuzz_config c;
    fuzz_config_defaults(&c);
    pgd_cfg_load_text(fuzz_config_opts, &c, FUZZ_CONFIG_NAME, (const char *)data, size, err);
    pgd_cfg_free(fuzz_config_opts, &c);
}

static void manifest_message(const uint8_t *data, size_t size, pgd_err *err)
{
    pgd_manifest *m = NULL;
    pgd_manifest_load_text(&m, MANIFEST_NAME, (const char *)data, size, NULL, ".svs", err);
    pgd_manifest_free(&m);
}

static uint8_t *read_seed(const char *path, size_t *size)
{
    char *buf = NULL;
    *size = 0;
    return pgd_file_read(path, (size_t)1 << 26, &buf, size, NULL) == 0 ? (uint8_t *)buf : NULL;
}

/* Check one bad seed's message against the table; returns 1 when the seed is listed. */
static int check_bad_message(const corpus *c, const char *file, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < c->nbad; i++) {
        if (strcmp(c->bad[i].file, file) != 0)
            continue;
        pgd_err e = PGD_ERR_INIT;
        c->message(data, size, &e);
        int ok = strstr(e.msg, c->bad[i].want) != NULL;
        if (!ok)
            printf("\n    %s: got '%s', want '%s'", file, e.msg, c->bad[i].want);
        CU_ASSERT(ok);
        return 1;
    }
    return 0;
}

static void replay(const corpus *c)
{
    DIR *d = opendir(c->dir);
    if (!d)
        printf("\n    cannot open %s (run from the project root)\n", c->dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int valid = 0, bad = 0;
    size_t bad_known = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", c->dir, e->d_name);
        size_t size = 0;
        uint8_t *data = read_seed(path, &size);
        CU_ASSERT_PTR_NOT_NULL(data);
        if (!data)
            continue;
        int is_valid = strncmp(e->d_name, "valid-", 6) == 0, is_bad = strncmp(e->d_name, "bad-", 4) == 0;
        CU_ASSERT(is_valid || is_bad); /* seeds are named valid-* or bad-* */
        CU_ASSERT_EQUAL(c->entry(data, size), 0);
        int accepted = c->run(data, size);
        if (is_valid && !accepted) {
            pgd_err err = PGD_ERR_INIT;
            c->message(data, size, &err);
            printf("\n    %s rejected: %s", e->d_name, err.msg);
        }
        if (is_bad && accepted)
            printf("\n    %s accepted", e->d_name);
        CU_ASSERT_EQUAL(accepted, is_valid);
        valid += is_valid;
        bad += is_bad;
        if (is_bad)
            bad_known += (size_t)check_bad_message(c, e->d_name, data, size);
        free(data);
    }
    closedir(d);
    CU_ASSERT(valid >= 3);
    CU_ASSERT(bad >= 3);
    CU_ASSERT_EQUAL(bad_known, c->nbad); /* every listed seed is there */
}

static void test_config_corpus(void)
{
    const corpus c = {"tests/corpus/config", fuzz_config_entry, fuzz_config_run, config_message,
                      config_bad, sizeof config_bad / sizeof *config_bad};
    replay(&c);
}

static void test_manifest_corpus(void)
{
    const corpus c = {"tests/corpus/manifest", fuzz_manifest_entry, fuzz_manifest_run, manifest_message,
                      manifest_bad, sizeof manifest_bad / sizeof *manifest_bad};
    replay(&c);
}

/* The config comparison the round trip relies on sees a change in any one field. */
static void test_config_compare(void)
{
    fuzz_config a, b;
    fuzz_config_defaults(&a);
    fuzz_config_defaults(&b);
    CU_ASSERT_TRUE(fuzz_config_same(&a, &b));
    b.momentum = -0.0;
    a.momentum = 0.0;
    CU_ASSERT_FALSE(fuzz_config_same(&a, &b)); /* bit for bit */
    a.momentum = b.momentum;
    CU_ASSERT_EQUAL(pgd_cfg_set(fuzz_config_opts, &b, "name", "", NULL), 0);
    CU_ASSERT_FALSE(fuzz_config_same(&a, &b)); /* "" is not NULL */
    CU_ASSERT_EQUAL(pgd_cfg_set(fuzz_config_opts, &a, "name", "", NULL), 0);
    CU_ASSERT_TRUE(fuzz_config_same(&a, &b));
    CU_ASSERT_EQUAL(pgd_cfg_set(fuzz_config_opts, &b, "zstore.dtype", "bf16", NULL), 0);
    CU_ASSERT_FALSE(fuzz_config_same(&a, &b));
    pgd_cfg_free(fuzz_config_opts, &a);
    pgd_cfg_free(fuzz_config_opts, &b);
}

/* Run fuzz_manifest_check on m in a child; 1 when it aborted. */
static int manifest_check_aborts(const pgd_manifest *m)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        fuzz_manifest_check(m);
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

/* The manifest checks fire on each broken property. */
static void test_manifest_checks(void)
{
    char id0[] = "a", id1[] = "b", path[] = "x/a.svs";
    pgd_manifest_entry e[2] = {{id0, path, 1, NULL, NULL, 2}, {id1, path, 3, NULL, NULL, 3}};
    pgd_manifest m = {e, 2, PGD_MANIFEST_PLAIN, 1, 3};
    CU_ASSERT_EQUAL(manifest_check_aborts(&m), 0);
    pgd_manifest broken = m;
    broken.max_label = 2;
    CU_ASSERT_EQUAL(manifest_check_aborts(&broken), 1);
    char slash[] = "a/b";
    e[1].id = slash;
    CU_ASSERT_EQUAL(manifest_check_aborts(&m), 1);
    e[1].id = id0; /* a repeated id */
    CU_ASSERT_EQUAL(manifest_check_aborts(&m), 1);
    e[1].id = id1;
    e[1].line = 2; /* lines must increase */
    CU_ASSERT_EQUAL(manifest_check_aborts(&m), 1);
    e[1].line = 3;
    char *long_path = malloc(PGD_MANIFEST_MAX_PATH + 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(long_path);
    memset(long_path, 'p', PGD_MANIFEST_MAX_PATH + 1);
    long_path[PGD_MANIFEST_MAX_PATH + 1] = '\0';
    e[1].path = long_path;
    CU_ASSERT_EQUAL(manifest_check_aborts(&m), 1);
    free(long_path);
}

/* A PANDA path made from a long slide folder and a long id is refused like a long plain path. */
static void test_manifest_long_path(void)
{
    char dir[FUZZ_MANIFEST_LONG_DIR + 1];
    memset(dir, 'd', sizeof dir - 1);
    dir[0] = '/';
    dir[sizeof dir - 1] = '\0';
    const char *text = "image_id\nshort\n012345678901234567890123456789012345678901234567890123456789012\n";
    pgd_manifest *m = NULL;
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_manifest_load_text(&m, "t.csv", text, strlen(text), dir, ".svs", &e), -1);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_STRING_EQUAL(e.msg, "t.csv line 3: path is longer than 4095 bytes");
    pgd_err_clear(&e);
    CU_ASSERT_EQUAL(pgd_manifest_load_text(&m, "t.csv", text, 15, dir, ".svs", &e), 0); /* "short" only */
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->count, 1);
    CU_ASSERT_EQUAL(strlen(m->entries[0].path), FUZZ_MANIFEST_LONG_DIR + 1 + 5 + 4);
    pgd_manifest_free(&m);
}

static const pgd_test_case cases[] = {
    {"config_corpus", test_config_corpus},
    {"manifest_corpus", test_manifest_corpus},
    {"config_compare", test_config_compare},
    {"manifest_checks", test_manifest_checks},
    {"manifest_long_path", test_manifest_long_path},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("fuzz_corpus_text", cases, argc, argv);
}
