/* test_config.c: config files, command lines, defaults, usage and the write/load round trip. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "cunit_util.h"

typedef struct tcfg {
    int64_t batch_size;
    int64_t slots;
    int64_t seed;
    double lr;
    int verbose;
    char *name;
    char *out_dir;
    int dtype;
} tcfg;

static const pgd_cfg_opt opts[] = {
    {"batch_size", PGD_CFG_INT, offsetof(tcfg, batch_size), "8", 1, 4096, NULL, "images per batch", 0},
    {"slots", PGD_CFG_INT, offsetof(tcfg, slots), "16", 1, 1048576, NULL, "Z-block slots", 0},
    {"seed", PGD_CFG_INT, offsetof(tcfg, seed), "0", 1, -1, NULL, "random seed", 0},
    {"lr", PGD_CFG_FLOAT, offsetof(tcfg, lr), "1e-3", 0, 10, NULL, "learning rate", 0},
    {"verbose", PGD_CFG_BOOL, offsetof(tcfg, verbose), "false", 0, 0, NULL, "more log lines", 0},
    {"name", PGD_CFG_STRING, offsetof(tcfg, name), NULL, 0, 0, NULL, "run name", 0},
    {"out_dir", PGD_CFG_STRING, offsetof(tcfg, out_dir), "runs", 0, 0, NULL, "where runs go", 0},
    {"zstore.dtype", PGD_CFG_ENUM, offsetof(tcfg, dtype), "f16", 0, 0, "f32|f16|bf16", "Z-block dtype", 0},
    {NULL},
};

/* Render a field the way the expectations below are written (independent of the module's writer). */
static void render(const char *key, const tcfg *c, char *buf, size_t cap)
{
    const pgd_cfg_opt *o = pgd_cfg_find(opts, key);
    if (!o) {
        snprintf(buf, cap, "<no key %s>", key);
        return;
    }
    const char *f = (const char *)c + o->offset;
    switch (o->type) {
    case PGD_CFG_INT: snprintf(buf, cap, "%" PRId64, *(const int64_t *)f); break;
    case PGD_CFG_FLOAT: snprintf(buf, cap, "%.17g", *(const double *)f); break;
    case PGD_CFG_BOOL:
    case PGD_CFG_ENUM: snprintf(buf, cap, "%d", *(const int *)f); break;
    case PGD_CFG_STRING: snprintf(buf, cap, "%s", *(char *const *)f ? *(char *const *)f : "(null)"); break;
    }
}

static void expect_field(const char *what, const tcfg *c, const char *key, const char *want)
{
    char got[256];
    render(key, c, got, sizeof got);
    if (strcmp(got, want) != 0)
        printf("\n    %s: %s = '%s', want '%s'", what, key, got, want);
    CU_ASSERT_STRING_EQUAL(got, want);
}

static void expect_error(const char *what, int rc, const pgd_err *e, const char *want)
{
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_TRUE(pgd_err_is_set(e));
    int ok = strstr(e->msg, want) != NULL;
    if (!ok)
        printf("\n    %s: error '%s', want '%s'", what, e->msg, want);
    CU_ASSERT_TRUE(ok);
}

static void fresh(tcfg *c)
{
    memset(c, 0, sizeof *c);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_cfg_defaults(opts, c, &e), 0);
}

static void test_defaults(void)
{
    tcfg c;
    fresh(&c);
    CU_ASSERT_EQUAL(c.batch_size, 8);
    CU_ASSERT_EQUAL(c.slots, 16);
    CU_ASSERT_EQUAL(c.seed, 0);
    CU_ASSERT_EQUAL(c.lr, 1e-3);
    CU_ASSERT_EQUAL(c.verbose, 0);
    CU_ASSERT_PTR_NULL(c.name);
    CU_ASSERT_STRING_EQUAL(c.out_dir, "runs");
    CU_ASSERT_EQUAL(c.dtype, 1);
    /* applying the defaults again frees the strings it replaces (ASan checks) */
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "name", "x", &e), 0);
    CU_ASSERT_EQUAL(pgd_cfg_defaults(opts, &c, &e), 0);
    CU_ASSERT_PTR_NULL(c.name);
    pgd_cfg_free(opts, &c);
    CU_ASSERT_PTR_NULL(c.out_dir);
}

/* ---- files: good ---- */

typedef struct kv {
    const char *key, *want;
} kv;

static const struct good_case {
    const char *text;
    kv want[4];
} good_files[] = {
    {"batch_size = 32\n", {{"batch_size", "32"}}},
    {"  batch_size=32  \n", {{"batch_size", "32"}}},
    {"batch_size = 32 # comment\n", {{"batch_size", "32"}}},
    {"batch_size = 32\t; comment\n", {{"batch_size", "32"}}},
    {"# whole line\n; whole line\n\n   \n\t\nbatch_size = 3\n", {{"batch_size", "3"}}},
    {"batch-size = 4\n", {{"batch_size", "4"}}},
    {"slots = 7", {{"slots", "7"}}}, /* no final newline */
    {"\xEF\xBB\xBF" "batch_size = 5\r\nlr = 0.5\r\n", {{"batch_size", "5"}, {"lr", "0.5"}}},
    {"name = a#b\n", {{"name", "a#b"}}},
    {"name = path;x\n", {{"name", "path;x"}}},
    {"name = a # b\n", {{"name", "a"}}},
    {"name = x\t# tab then comment\n", {{"name", "x"}}},
    {"name = a b  c \n", {{"name", "a b  c"}}},
    {"name = \"a # b\"\n", {{"name", "a # b"}}},
    {"name = \"say \\\"hi\\\" \\\\ ok\"  # c\n", {{"name", "say \"hi\" \\ ok"}}},
    {"name = \"two\\nlines\\tand tab\"\n", {{"name", "two\nlines\tand tab"}}},
    {"name = \"  padded  \"\n", {{"name", "  padded  "}}},
    {"name = \"\"\n", {{"name", ""}}},
    {"name =\n", {{"name", ""}}},
    {"name = # only a comment\n", {{"name", ""}}},
    {"name = h\xC3\xA9llo\n", {{"name", "h\xC3\xA9llo"}}},
    {"name = a=b\n", {{"name", "a=b"}}},
    {"[zstore]\ndtype = bf16\n", {{"zstore.dtype", "2"}}},
    {"[ zstore ]  # section comment\ndtype = f32\n", {{"zstore.dtype", "0"}}},
    {"zstore.dtype = f32\n", {{"zstore.dtype", "0"}}},
    {"verbose = yes\n", {{"verbose", "1"}}},
    {"verbose = ON\n", {{"verbose", "1"}}},
    {"verbose = true\n", {{"verbose", "1"}}},
    {"verbose = 0\n", {{"verbose", "0"}}},
    {"lr = 1e-2\n", {{"lr", "0.01"}}},
    {"lr = 0x1p-4\n", {{"lr", "0.0625"}}},
    {"lr = 10\n", {{"lr", "10"}}},
    {"seed = -9223372036854775808\n", {{"seed", "-9223372036854775808"}}},
    {"seed = 9223372036854775807\n", {{"seed", "9223372036854775807"}}},
    {"seed = +5\n", {{"seed", "5"}}},
    {"batch_size = 4096\nslots = 1\n", {{"batch_size", "4096"}, {"slots", "1"}, {"lr", "0.001"}}},
    {"", {{"batch_size", "8"}, {"name", "(null)"}, {"out_dir", "runs"}}},
};

static void test_file_good(void)
{
    for (size_t i = 0; i < sizeof good_files / sizeof *good_files; i++) {
        const struct good_case *g = &good_files[i];
        tcfg c;
        fresh(&c);
        pgd_err e = PGD_ERR_INIT;
        int rc = pgd_cfg_load_text(opts, &c, "cfg.conf", g->text, strlen(g->text), &e);
        if (rc)
            printf("\n    case %zu: %s", i, e.msg);
        CU_ASSERT_EQUAL(rc, 0);
        for (const kv *w = g->want; w->key; w++) {
            char what[32];
            snprintf(what, sizeof what, "case %zu", i);
            expect_field(what, &c, w->key, w->want);
        }
        pgd_cfg_free(opts, &c);
    }
}

/* ---- files: bad ---- */

static const struct bad_case {
    const char *text;
    const char *want;   /* substring of the error */
    const char *absent; /* must not be in the error (or NULL) */
} bad_files[] = {
    {"batchsize = 4\n", "cfg.conf line 1: unknown key 'batchsize' (did you mean 'batch_size'?)", NULL},
    {"bacth_size = 4\n", "unknown key 'bacth_size' (did you mean 'batch_size'?)", NULL},
    {"\n\nfoo = 1\n", "cfg.conf line 3: unknown key 'foo'", "did you mean"},
    {"[zstore]\nbatch_size = 3\n", "line 2: unknown key 'zstore.batch_size'", NULL},
    {"dtype = f16\n", "line 1: unknown key 'dtype'", NULL},
    {"batch_size 4\n", "cfg.conf line 1: expected 'key = value'", NULL},
    {"= 4\n", "line 1: expected 'key = value'", NULL},
    {"name = \"abc\n", "cfg.conf line 1: unterminated quote", NULL},
    {"name = \"abc\\\"\n", "line 1: unterminated quote", NULL},
    {"name = \"abc\" x\n", "line 1: unexpected text after the closing quote", NULL},
    {"name = \"a\\qb\"\n", "line 1: unknown escape '\\q'", NULL},
    {"[zstore\n", "line 1: expected '[section]'", NULL},
    {"[zstore] x\n", "line 1: expected '[section]'", NULL},
    {"[ ]\n", "line 1: empty section name", NULL},
    {"slots = 12x\n", "cfg.conf line 1: 'slots': '12x' is not an integer", NULL},
    {"slots = 0\n", "line 1: 'slots': 0 is out of range 1..1048576", NULL},
    {"slots = 1048577\n", "'slots': 1048577 is out of range 1..1048576", NULL},
    {"slots =\n", "line 1: 'slots': empty value (expected an integer)", NULL},
    {"slots = \"\"\n", "'slots': empty value (expected an integer)", NULL},
    {"seed = 9223372036854775808\n", "'seed': '9223372036854775808' is out of the int64 range", NULL},
    {"seed = -9223372036854775809\n", "'seed': '-9223372036854775809' is out of the int64 range", NULL},
    {"seed = 1.5\n", "'seed': '1.5' is not an integer", NULL},
    {"seed = 0x10\n", "'seed': '0x10' is not an integer", NULL},
    {"seed = - 1\n", "'seed': '- 1' is not an integer", NULL},
    {"lr = nan\n", "'lr': 'nan' is not a finite number", NULL},
    {"lr = inf\n", "'lr': 'inf' is not a finite number", NULL},
    {"lr = -Infinity\n", "'lr': '-Infinity' is not a finite number", NULL},
    {"lr = 1e999\n", "'lr': '1e999' is not a finite number", NULL},
    {"lr = abc\n", "'lr': 'abc' is not a number", NULL},
    {"lr = 1.0.0\n", "'lr': '1.0.0' is not a number", NULL},
    {"lr = 11\n", "'lr': 11 is out of range 0..10", NULL},
    {"lr = -0.5\n", "'lr': -0.5 is out of range 0..10", NULL},
    {"lr =\n", "'lr': empty value (expected a number)", NULL},
    {"verbose = maybe\n", "'verbose': 'maybe' is not a boolean (true|false|1|0|yes|no|on|off)", NULL},
    {"zstore.dtype = f64\n", "'zstore.dtype': 'f64' is not one of f32|f16|bf16", NULL},
    {"[zstore]\ndtype = F16\n", "line 2: 'zstore.dtype': 'F16' is not one of f32|f16|bf16", NULL},
    {"slots = 4\nbatch_size = 2\nslots = 5\n", "cfg.conf line 3: key 'slots' already set on line 1", NULL},
    {"[zstore]\ndtype=f32\n[zstore]\ndtype = f16\n", "line 4: key 'zstore.dtype' already set on line 2", NULL},
    {"batch-size = 2\nbatch_size = 3\n", "line 2: key 'batch_size' already set on line 1", NULL},
    {"# ok\nslots = 2\nlr = 0.1\n\nverbose = nope\n", "cfg.conf line 5: 'verbose'", NULL},
    {"a\r\nb = 1\r\n", "cfg.conf line 1: expected 'key = value'", NULL},
};

static void test_file_bad(void)
{
    for (size_t i = 0; i < sizeof bad_files / sizeof *bad_files; i++) {
        const struct bad_case *b = &bad_files[i];
        tcfg c;
        fresh(&c);
        pgd_err e = PGD_ERR_INIT;
        char what[32];
        snprintf(what, sizeof what, "case %zu", i);
        int rc = pgd_cfg_load_text(opts, &c, "cfg.conf", b->text, strlen(b->text), &e);
        expect_error(what, rc, &e, b->want);
        if (b->absent)
            CU_ASSERT_PTR_NULL(strstr(e.msg, b->absent));
        pgd_cfg_free(opts, &c);
    }
}

static void test_file_all_or_nothing(void)
{
    tcfg c;
    fresh(&c);
    pgd_err e = PGD_ERR_INIT;
    const char *text = "slots = 3\nname = kept?\nlr = abc\n";
    CU_ASSERT_EQUAL(pgd_cfg_load_text(opts, &c, "x.conf", text, strlen(text), &e), -1);
    CU_ASSERT_EQUAL(c.slots, 16);
    CU_ASSERT_PTR_NULL(c.name);
    CU_ASSERT_EQUAL(e.code, PGD_EINVAL);
    pgd_cfg_free(opts, &c);
}

static void test_file_nul_byte(void)
{
    tcfg c;
    fresh(&c);
    pgd_err e = PGD_ERR_INIT;
    static const char text[] = "slots = 3\nname = a\0b\n";
    int rc = pgd_cfg_load_text(opts, &c, "x.conf", text, sizeof text - 1, &e);
    expect_error("nul", rc, &e, "x.conf line 2: NUL byte in line");
    pgd_cfg_free(opts, &c);
}

static char *write_tmp(const char *name, const char *text)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", pgd_test_tmpdir(), name) < 0)
        return NULL;
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    CU_ASSERT_EQUAL(fclose(f), 0);
    return path;
}

static void test_file_on_disk(void)
{
    char *path = write_tmp("run.conf", "# run\n\n\n\n\n\n\n\n\n\n\nbatchsize = 12\n");
    tcfg c;
    fresh(&c);
    pgd_err e = PGD_ERR_INIT;
    int rc = pgd_cfg_load(opts, &c, path, &e);
    char want[512];
    snprintf(want, sizeof want, "%s line 12: unknown key 'batchsize' (did you mean 'batch_size'?)", path);
    expect_error("disk", rc, &e, want);
    free(path);

    pgd_err_clear(&e);
    rc = pgd_cfg_load(opts, &c, "/nonexistent/dir/run.conf", &e);
    expect_error("missing", rc, &e, "open /nonexistent/dir/run.conf: No such file");
    CU_ASSERT_EQUAL(e.code, PGD_ENOENT);

    path = write_tmp("ok.conf", "[zstore]\ndtype = bf16\n");
    pgd_err_clear(&e);
    CU_ASSERT_EQUAL(pgd_cfg_load(opts, &c, path, &e), 0);
    CU_ASSERT_EQUAL(c.dtype, 2);
    free(path);
    pgd_cfg_free(opts, &c);
}

static void test_set(void)
{
    tcfg c;
    fresh(&c);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "out_dir", "/tmp/x", &e), 0);
    CU_ASSERT_STRING_EQUAL(c.out_dir, "/tmp/x");
    CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "zstore-dtype", "f32", &e), -1); /* '-' stands only for '_' */
    expect_error("set", -1, &e, "unknown key 'zstore-dtype'");
    pgd_err_clear(&e);
    int rc = pgd_cfg_set(opts, &c, "slots", "x", &e);
    expect_error("set", rc, &e, "'slots': 'x' is not an integer");
    CU_ASSERT_EQUAL(c.slots, 16);
    pgd_err_clear(&e);
    rc = pgd_cfg_set(opts, &c, "slot", "3", &e);
    expect_error("set", rc, &e, "unknown key 'slot' (did you mean 'slots'?)");
    CU_ASSERT_EQUAL(e.code, PGD_ENOENT);
    pgd_cfg_free(opts, &c);
}

/* ---- command lines ---- */

#define ARGV(...) ((char *[]){"prog", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"prog", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(c, a, e, ...) pgd_cfg_parse_args(opts, (c), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (a), (e))

static void test_args_basic(void)
{
    tcfg c = {0};
    pgd_cfg_args a;
    pgd_err e = PGD_ERR_INIT;
    int rc = PARSE(&c, &a, &e, "--batch-size", "4", "--lr=0.5", "create", "NAME", "--zstore.dtype", "bf16",
                   "--verbose", "--", "--x", "-y");
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(c.batch_size, 4);
    CU_ASSERT_EQUAL(c.lr, 0.5);
    CU_ASSERT_EQUAL(c.dtype, 2);
    CU_ASSERT_EQUAL(c.verbose, 1);
    CU_ASSERT_EQUAL(c.slots, 16);
    CU_ASSERT_FALSE(a.help);
    CU_ASSERT_PTR_NULL(a.saved_to);
    CU_ASSERT_EQUAL_FATAL(a.npositional, 4);
    CU_ASSERT_STRING_EQUAL(a.positional[0], "create");
    CU_ASSERT_STRING_EQUAL(a.positional[1], "NAME");
    CU_ASSERT_STRING_EQUAL(a.positional[2], "--x");
    CU_ASSERT_STRING_EQUAL(a.positional[3], "-y");
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
}

static void test_args_values(void)
{
    tcfg c = {0};
    pgd_cfg_args a;
    pgd_err e = PGD_ERR_INIT;
    /* negative numbers are values or positionals, "-" is a positional, the last repeat wins */
    CU_ASSERT_EQUAL_FATAL(PARSE(&c, &a, &e, "--seed", "-3", "-", "-5", "--slots", "3", "--slots=4", "--name=",
                                "--out_dir", "a b"), 0);
    CU_ASSERT_EQUAL(c.seed, -3);
    CU_ASSERT_EQUAL(c.slots, 4);
    CU_ASSERT_STRING_EQUAL(c.name, "");
    CU_ASSERT_STRING_EQUAL(c.out_dir, "a b");
    CU_ASSERT_EQUAL_FATAL(a.npositional, 2);
    CU_ASSERT_STRING_EQUAL(a.positional[0], "-");
    CU_ASSERT_STRING_EQUAL(a.positional[1], "-5");
    pgd_cfg_args_free(&a);
    /* a string value may hold '=' and start with '-' (not "--") */
    CU_ASSERT_EQUAL_FATAL(PARSE(&c, &a, &e, "--name=a=b", "--out-dir", "-dash"), 0);
    CU_ASSERT_STRING_EQUAL(c.name, "a=b");
    CU_ASSERT_STRING_EQUAL(c.out_dir, "-dash");
    CU_ASSERT_EQUAL(a.npositional, 0);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
}

static const struct bool_case {
    int argc;
    char *argv[5];
    int want;
    int npos;
} bool_cases[] = {
    {2, {"prog", "--verbose"}, 1, 0},
    {3, {"prog", "--verbose", "no"}, 0, 0},
    {3, {"prog", "--verbose", "TRUE"}, 1, 0},
    {3, {"prog", "--verbose", "create"}, 1, 1},
    {4, {"prog", "--verbose", "--slots", "3"}, 1, 0},
    {2, {"prog", "--verbose=off"}, 0, 0},
    {2, {"prog", "--verbose=1"}, 1, 0},
    {3, {"prog", "--verbose=0", "--verbose"}, 1, 0},
    {1, {"prog"}, 0, 0},
};

static void test_args_bool(void)
{
    for (size_t i = 0; i < sizeof bool_cases / sizeof *bool_cases; i++) {
        const struct bool_case *b = &bool_cases[i];
        tcfg c = {0};
        pgd_cfg_args a;
        pgd_err e = PGD_ERR_INIT;
        int rc = pgd_cfg_parse_args(opts, &c, b->argc, (char **)b->argv, &a, &e);
        if (rc)
            printf("\n    bool case %zu: %s", i, e.msg);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(c.verbose, b->want);
        CU_ASSERT_EQUAL(a.npositional, b->npos);
        pgd_cfg_args_free(&a);
        pgd_cfg_free(opts, &c);
    }
}

static const struct bad_args {
    int argc;
    char *argv[5];
    const char *want;
} bad_args[] = {
    {3, {"prog", "--zstore.dtype", "f64"}, "--zstore.dtype: 'f64' is not one of f32|f16|bf16"},
    {3, {"prog", "--slots", "0"}, "--slots: 0 is out of range 1..1048576"},
    {2, {"prog", "--slots"}, "--slots: missing value"},
    {4, {"prog", "--slots", "--lr", "1"}, "--slots: missing value"},
    {2, {"prog", "--slots="}, "--slots: empty value (expected an integer)"},
    {3, {"prog", "--batchsize", "3"}, "--batchsize: unknown option (did you mean --batch_size?)"},
    {3, {"prog", "--batch-sise", "3"}, "--batch-sise: unknown option (did you mean --batch_size?)"},
    {3, {"prog", "--nothing-like-it", "3"}, "--nothing-like-it: unknown option"},
    {2, {"prog", "-x"}, "-x: unknown option (options start with --)"},
    {2, {"prog", "--config"}, "--config: missing value"},
    {3, {"prog", "--config", "/nonexistent/x.conf"}, "open /nonexistent/x.conf: No such file"},
    {2, {"prog", "--save-config"}, "--save-config: missing value"},
    {2, {"prog", "--verbose=maybe"}, "--verbose: 'maybe' is not a boolean"},
    {3, {"prog", "--lr", "nan"}, "--lr: 'nan' is not a finite number"},
    {3, {"prog", "--seed", "99999999999999999999"}, "--seed: '99999999999999999999' is out of the int64 range"},
    {2, {"prog", "--help=1"}, "--help takes no value"},
};

static void test_args_bad(void)
{
    for (size_t i = 0; i < sizeof bad_args / sizeof *bad_args; i++) {
        const struct bad_args *b = &bad_args[i];
        tcfg c = {0};
        pgd_cfg_args a;
        pgd_err e = PGD_ERR_INIT;
        char what[32];
        snprintf(what, sizeof what, "args case %zu", i);
        int rc = pgd_cfg_parse_args(opts, &c, b->argc, (char **)b->argv, &a, &e);
        expect_error(what, rc, &e, b->want);
        pgd_cfg_args_free(&a);
        pgd_cfg_free(opts, &c);
    }
}

static void test_args_help(void)
{
    tcfg c = {0};
    pgd_cfg_args a;
    pgd_err e = PGD_ERR_INIT;
    /* --help wins over everything else on the line; only the defaults are applied */
    CU_ASSERT_EQUAL(PARSE(&c, &a, &e, "--slots", "bad", "--bogus", "--help"), 0);
    CU_ASSERT_TRUE(a.help);
    CU_ASSERT_EQUAL(c.slots, 16);
    CU_ASSERT_FALSE(pgd_err_is_set(&e));
    pgd_cfg_args_free(&a);
    CU_ASSERT_EQUAL(PARSE(&c, &a, &e, "-h"), 0);
    CU_ASSERT_TRUE(a.help);
    pgd_cfg_args_free(&a);
    /* after "--" it is a positional */
    CU_ASSERT_EQUAL(PARSE(&c, &a, &e, "--", "--help"), 0);
    CU_ASSERT_FALSE(a.help);
    CU_ASSERT_EQUAL_FATAL(a.npositional, 1);
    CU_ASSERT_STRING_EQUAL(a.positional[0], "--help");
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
}

static void test_args_precedence(void)
{
    char *f1 = write_tmp("base.conf", "batch_size = 10\nslots = 20\nname = from-file\n");
    char *f2 = write_tmp("exp.conf", "slots = 30\n");
    tcfg c = {0};
    pgd_cfg_args a;
    pgd_err e = PGD_ERR_INIT;
    /* the command line wins over the file even when --config comes after it */
    CU_ASSERT_EQUAL_FATAL(PARSE(&c, &a, &e, "--batch_size", "3", "--config", f1), 0);
    CU_ASSERT_EQUAL(c.batch_size, 3);
    CU_ASSERT_EQUAL(c.slots, 20);
    CU_ASSERT_STRING_EQUAL(c.name, "from-file");
    CU_ASSERT_EQUAL(c.lr, 1e-3);
    CU_ASSERT_EQUAL(a.npositional, 0);
    pgd_cfg_args_free(&a);
    /* several files: later ones win; --config=FILE works too */
    char eq[512];
    snprintf(eq, sizeof eq, "--config=%s", f2);
    CU_ASSERT_EQUAL_FATAL(PARSE(&c, &a, &e, "--config", f1, eq, "--name", "cli"), 0);
    CU_ASSERT_EQUAL(c.batch_size, 10);
    CU_ASSERT_EQUAL(c.slots, 30);
    CU_ASSERT_STRING_EQUAL(c.name, "cli");
    pgd_cfg_args_free(&a);
    /* a bad file line names the file and line */
    char *bad = write_tmp("bad.conf", "slots = 2\nlr = 99\n");
    int rc = PARSE(&c, &a, &e, "--config", bad);
    char want[512];
    snprintf(want, sizeof want, "%s line 2: 'lr': 99 is out of range 0..10", bad);
    expect_error("bad file", rc, &e, want);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
    free(f1);
    free(f2);
    free(bad);
}

static int same_cfg(const tcfg *x, const tcfg *y)
{
    int same_name = (!x->name && !y->name) || (x->name && y->name && strcmp(x->name, y->name) == 0);
    int same_dir = (!x->out_dir && !y->out_dir) || (x->out_dir && y->out_dir && strcmp(x->out_dir, y->out_dir) == 0);
    return x->batch_size == y->batch_size && x->slots == y->slots && x->seed == y->seed &&
           memcmp(&x->lr, &y->lr, sizeof x->lr) == 0 && x->verbose == y->verbose && x->dtype == y->dtype &&
           same_name && same_dir;
}

static void test_args_save_config(void)
{
    char *path = NULL;
    CU_ASSERT_FATAL(asprintf(&path, "%s/saved.conf", pgd_test_tmpdir()) > 0);
    tcfg c = {0}, back;
    pgd_cfg_args a;
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(PARSE(&c, &a, &e, "--save-config", path, "--lr", "0.1", "--name", "a # \"b\"", "go"), 0);
    CU_ASSERT_PTR_NOT_NULL(a.saved_to);
    if (a.saved_to)
        CU_ASSERT_STRING_EQUAL(a.saved_to, path);
    CU_ASSERT_EQUAL(a.npositional, 1);
    fresh(&back);
    CU_ASSERT_EQUAL(pgd_cfg_load(opts, &back, path, &e), 0);
    CU_ASSERT_TRUE(same_cfg(&c, &back));
    CU_ASSERT_STRING_EQUAL(back.name, "a # \"b\"");
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
    pgd_cfg_free(opts, &back);
    free(path);
}

/* ---- write + load round trip ---- */

static char *write_to_string(const tcfg *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_cfg_write(opts, c, f, &e), 0);
    CU_ASSERT_EQUAL(fclose(f), 0);
    return text;
}

static void round_trip(const tcfg *c, const char *what)
{
    char *text = write_to_string(c);
    tcfg back;
    fresh(&back);
    pgd_err e = PGD_ERR_INIT;
    int rc = pgd_cfg_load_text(opts, &back, "written", text, strlen(text), &e);
    if (rc)
        printf("\n    %s: %s\n%s", what, e.msg, text);
    CU_ASSERT_EQUAL(rc, 0);
    int same = same_cfg(c, &back);
    if (!same)
        printf("\n    %s: differs after reload:\n%s", what, text);
    CU_ASSERT_TRUE(same);
    pgd_cfg_free(opts, &back);
    free(text);
}

static void test_round_trip(void)
{
    static const char *const strings[] = {
        "plain", "", " leading", "trailing ", "a # b", "a;b", "#start", ";start", "quote \" inside",
        "back\\slash", "\"fully quoted\"", "new\nline", "tab\there", "cr\r\n", "=", "x = y", "h\xC3\xA9llo",
        "\\\"", "end\\",
    };
    static const double floats[] = {0.1, 1.0 / 3.0, 1e-300, 5e-324, 2.2250738585072014e-308, 10.0, 0.0,
                                    9.999999999999998, 0.30000000000000004, 7.0e-17, 3.141592653589793, 6.02214076e-23};
    tcfg c;
    fresh(&c);
    pgd_err e = PGD_ERR_INIT;
    round_trip(&c, "defaults"); /* name is NULL: written as a comment, stays NULL */
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
        CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "name", strings[i], &e), 0);
        CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "out_dir", strings[sizeof strings / sizeof *strings - 1 - i], &e), 0);
        char what[64];
        snprintf(what, sizeof what, "string %zu", i);
        round_trip(&c, what);
    }
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++) {
        c.lr = floats[i];
        char what[64];
        snprintf(what, sizeof what, "float %.17g", floats[i]);
        round_trip(&c, what);
    }
    c.seed = INT64_MIN;
    c.batch_size = 4096;
    c.verbose = 1;
    c.dtype = 0;
    round_trip(&c, "extremes");
    c.seed = INT64_MAX;
    round_trip(&c, "int64 max");
    pgd_cfg_free(opts, &c);
}

static void test_write_format(void)
{
    tcfg c;
    fresh(&c);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "lr", "0.1", &e), 0);
    char *text = write_to_string(&c);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# images per batch (int, range 1..4096)\nbatch_size = 8\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lr = 0.1\n"));           /* shortest exact form, not 0.10000000000000001 */
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "zstore.dtype = f16\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "verbose = false\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# name = (not set)\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "out_dir = runs\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "(enum: f32|f16|bf16)"));
    free(text);
    CU_ASSERT_EQUAL(pgd_cfg_set(opts, &c, "name", "a \"b\"", &e), 0);
    text = write_to_string(&c);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "name = \"a \\\"b\\\"\"\n"));
    free(text);
    pgd_cfg_free(opts, &c);
}

static void test_usage(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    pgd_cfg_usage(opts, f, "prog [options] create NAME");
    CU_ASSERT_EQUAL_FATAL(fclose(f), 0);
    static const char *const want[] = {
        "usage: prog [options] create NAME\n", "--batch_size <int>", "images per batch [default: 8; range: 1..4096]",
        "--lr <float>", "[default: 1e-3; range: 0..10]", "--verbose[=<bool>]", "--zstore.dtype <f32|f16|bf16>",
        "[default: f16]", "run name [default: not set]", "--seed <int>", "random seed [default: 0]\n",
        "--config <file>", "--save-config <file>", "--help",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int ok = strstr(text, want[i]) != NULL;
        if (!ok)
            printf("\n    usage lacks '%s':\n%s", want[i], text);
        CU_ASSERT_TRUE(ok);
    }
    free(text);
}

/* ---- required options and table checks ---- */

typedef struct shape {
    int64_t m, n;
    char *dir;
} shape;

static const pgd_cfg_opt shape_opts[] = {
    {"m", PGD_CFG_INT, offsetof(shape, m), NULL, 1, 65535, NULL, "grid rows", PGD_CFG_REQUIRED},
    {"n", PGD_CFG_INT, offsetof(shape, n), NULL, 1, 65535, NULL, "grid columns", PGD_CFG_REQUIRED},
    {"dir", PGD_CFG_STRING, offsetof(shape, dir), "/tmp", 0, 0, NULL, "folder", 0},
    {NULL},
};

static void test_required(void)
{
    shape s = {0};
    pgd_cfg_args a;
    pgd_err e = PGD_ERR_INIT;
    int rc = pgd_cfg_parse_args(shape_opts, &s, 1, ARGV(NULL), &a, &e);
    expect_error("required", rc, &e, "missing required options --m, --n");
    pgd_cfg_args_free(&a);
    pgd_err_clear(&e);
    rc = pgd_cfg_parse_args(shape_opts, &s, 3, ARGV("--m", "4"), &a, &e);
    expect_error("required", rc, &e, "missing required option --n (");
    pgd_cfg_args_free(&a);
    char *conf = write_tmp("shape.conf", "n = 7\n");
    pgd_err_clear(&e);
    rc = pgd_cfg_parse_args(shape_opts, &s, 5, ARGV("--m", "4", "--config", conf), &a, &e);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(s.m, 4);
    CU_ASSERT_EQUAL(s.n, 7);
    CU_ASSERT_STRING_EQUAL(s.dir, "/tmp");
    pgd_cfg_args_free(&a);
    rc = pgd_cfg_parse_args(shape_opts, &s, 2, ARGV("--help"), &a, &e);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_TRUE(a.help);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(shape_opts, &s);
    free(conf);
}

static const struct table_case {
    pgd_cfg_opt opt[3];
    const char *want;
} bad_tables[] = {
    {{{"slots", PGD_CFG_INT, 0, "0", 1, 8, NULL, NULL, 0}, {NULL}},
     "option table: 'slots': default: 0 is out of range 1..8"},
    {{{"slots", PGD_CFG_INT, 0, NULL, 1, 8, NULL, NULL, 0}, {NULL}}, "option table: 'slots' has no default"},
    {{{"a", PGD_CFG_INT, 0, "1", 0, 0, NULL, NULL, 0}, {"a", PGD_CFG_INT, 8, "1", 0, 0, NULL, NULL, 0}, {NULL}},
     "option table: key 'a' appears twice"},
    {{{"config", PGD_CFG_STRING, 0, NULL, 0, 0, NULL, NULL, 0}, {NULL}}, "key 'config' is reserved"},
    {{{"save_config", PGD_CFG_STRING, 0, NULL, 0, 0, NULL, NULL, 0}, {NULL}}, "key 'save_config' is reserved"},
    {{{"bad key", PGD_CFG_INT, 0, "1", 0, 0, NULL, NULL, 0}, {NULL}}, "key 'bad key' has a character outside"},
    {{{"", PGD_CFG_INT, 0, "1", 0, 0, NULL, NULL, 0}, {NULL}}, "option table: empty key"},
    {{{"e", PGD_CFG_ENUM, 0, "a", 0, 0, NULL, NULL, 0}, {NULL}}, "'e': enum needs choices"},
    {{{"e", PGD_CFG_ENUM, 0, "a", 0, 0, "a||b", NULL, 0}, {NULL}}, "'e': enum needs choices"},
    {{{"e", PGD_CFG_ENUM, 0, "c", 0, 0, "a|b", NULL, 0}, {NULL}}, "'e': default: 'c' is not one of a|b"},
    {{{"f", PGD_CFG_FLOAT, 0, "1", NAN, 1, NULL, NULL, 0}, {NULL}}, "'f': range bound is NaN"},
};

static void test_bad_tables(void)
{
    for (size_t i = 0; i < sizeof bad_tables / sizeof *bad_tables; i++) {
        int64_t space[4] = {0};
        pgd_err e = PGD_ERR_INIT;
        char what[32];
        snprintf(what, sizeof what, "table %zu", i);
        int rc = pgd_cfg_defaults(bad_tables[i].opt, space, &e);
        expect_error(what, rc, &e, bad_tables[i].want);
    }
}

static void test_one_sided_range(void)
{
    typedef struct { double f; int64_t i; } one;
    const pgd_cfg_opt o[] = {
        {"f", PGD_CFG_FLOAT, offsetof(one, f), "0.5", 0, INFINITY, NULL, NULL, 0},
        {"i", PGD_CFG_INT, offsetof(one, i), "1", -INFINITY, 3, NULL, NULL, 0},
        {NULL},
    };
    one v = {0};
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_cfg_defaults(o, &v, &e), 0);
    CU_ASSERT_EQUAL(pgd_cfg_set(o, &v, "f", "1e300", &e), 0);
    CU_ASSERT_EQUAL(pgd_cfg_set(o, &v, "i", "-9223372036854775808", &e), 0);
    CU_ASSERT_EQUAL(v.i, INT64_MIN);
    int rc = pgd_cfg_set(o, &v, "f", "-1", &e);
    expect_error("one-sided", rc, &e, "'f': -1 is out of range 0..inf");
    pgd_err_clear(&e);
    rc = pgd_cfg_set(o, &v, "i", "4", &e);
    expect_error("one-sided", rc, &e, "'i': 4 is out of range -inf..3");
}

static const pgd_test_case cases[] = {
    {"defaults", test_defaults},
    {"file_good", test_file_good},
    {"file_bad", test_file_bad},
    {"file_all_or_nothing", test_file_all_or_nothing},
    {"file_nul_byte", test_file_nul_byte},
    {"file_on_disk", test_file_on_disk},
    {"set", test_set},
    {"args_basic", test_args_basic},
    {"args_values", test_args_values},
    {"args_bool", test_args_bool},
    {"args_bad", test_args_bad},
    {"args_help", test_args_help},
    {"args_precedence", test_args_precedence},
    {"args_save_config", test_args_save_config},
    {"round_trip", test_round_trip},
    {"write_format", test_write_format},
    {"usage", test_usage},
    {"required", test_required},
    {"bad_tables", test_bad_tables},
    {"one_sided_range", test_one_sided_range},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("config", cases, argc, argv);
}
