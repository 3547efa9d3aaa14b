/* test_manifest.c: PANDA and plain manifests, CSV quoting, line numbers in errors, a large file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/manifest.h"
#include "cunit_util.h"

/* Write text to a fresh file in the temp folder; returns its malloc'd path. */
static char *write_csv(const char *name, const char *text, size_t len)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", pgd_test_tmpdir(), name) < 0)
        return NULL;
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(text, 1, len, f), len);
    CU_ASSERT_EQUAL(fclose(f), 0);
    return path;
}

/* "@" at the start of a wanted path stands for the temp folder. */
static void expect_str(const char *what, const char *got, const char *want)
{
    char full[512];
    if (want && want[0] == '@')
        snprintf(full, sizeof full, "%s%s", pgd_test_tmpdir(), want + 1);
    else if (want)
        snprintf(full, sizeof full, "%s", want);
    int ok = want ? got && strcmp(got, full) == 0 : got == NULL;
    if (!ok)
        printf("\n    %s: got '%s', want '%s'", what, got ? got : "(null)", want ? full : "(null)");
    CU_ASSERT_TRUE(ok);
}

typedef struct want_entry {
    const char *id, *path;
    int label;
    const char *provider, *gleason;
    int line;
} want_entry;

static const struct good_case {
    const char *text;
    const char *slide_dir, *ext;
    pgd_manifest_kind kind;
    int labeled, max_label;
    size_t count;
    want_entry e[3]; /* the first entries */
} good[] = {
    {"image_id,data_provider,isup_grade,gleason_score\nabc,karolinska,0,0+0\ndef,radboud,5,5+5\n", "/s", ".tiff",
     PGD_MANIFEST_PANDA, 1, 5, 2,
     {{"abc", "/s/abc.tiff", 0, "karolinska", "0+0", 2}, {"def", "/s/def.tiff", 5, "radboud", "5+5", 3}}},
    {"isup_grade,extra,image_id\n3,x,aaa\n", "/s/", ".svs", PGD_MANIFEST_PANDA, 1, 3, 1,
     {{"aaa", "/s/aaa.svs", 3, NULL, NULL, 2}}},
    {"image_id\nabc\n", NULL, ".tiff", PGD_MANIFEST_PANDA, 0, -1, 1, {{"abc", "@/abc.tiff", -1, NULL, NULL, 2}}},
    {"image_id,isup_grade\nabc,1\n", "slides", NULL, PGD_MANIFEST_PANDA, 1, 1, 1,
     {{"abc", "slides/abc", 1, NULL, NULL, 2}}},
    {"\xEF\xBB\xBFimage_id,isup_grade\r\n\r\nabc,1\r\n  \r\ndef,2", "/s", "", PGD_MANIFEST_PANDA, 1, 2, 2,
     {{"abc", "/s/abc", 1, NULL, NULL, 3}, {"def", "/s/def", 2, NULL, NULL, 5}}},
    {"\n\n image_id , isup_grade \n  abc ,\t2  \n", "/s", "", PGD_MANIFEST_PANDA, 1, 2, 1,
     {{"abc", "/s/abc", 2, NULL, NULL, 4}}},
    {"image_id,data_provider,isup_grade,gleason_score\n\"a,b\",\"multi\nline\",1,\"3+\"\"4\"\"\"\nnext,x,2,\"\"\n",
     "/s", "", PGD_MANIFEST_PANDA, 1, 2, 2,
     {{"a,b", "/s/a,b", 1, "multi\nline", "3+\"4\"", 2}, {"next", "/s/next", 2, "x", "", 4}}},
    {"\"image_id\",\"isup_grade\"\n  \"abc\"  ,\"4\"\r\n", "/s", "", PGD_MANIFEST_PANDA, 1, 4, 1,
     {{"abc", "/s/abc", 4, NULL, NULL, 2}}},
    {"image_id,isup_grade\n", "/s", "", PGD_MANIFEST_PANDA, 1, -1, 0, {{NULL}}},
    {"image_id,isup_grade", "/s", "", PGD_MANIFEST_PANDA, 1, -1, 0, {{NULL}}},
    {"image_id\n012345678901234567890123456789012345678901234567890123456789012\n", "/s", "", PGD_MANIFEST_PANDA, 0,
     -1, 1,
     {{"012345678901234567890123456789012345678901234567890123456789012",
       "/s/012345678901234567890123456789012345678901234567890123456789012", -1, NULL, NULL, 2}}},
    {"path,label\n/abs/x.svs,1\nrel/y.tiff,0\nz.ome.tiff,12\n", NULL, ".ignored", PGD_MANIFEST_PLAIN, 1, 12, 3,
     {{"x", "/abs/x.svs", 1, NULL, NULL, 2}, {"y", "@/rel/y.tiff", 0, NULL, NULL, 3},
      {"z.ome", "@/z.ome.tiff", 12, NULL, NULL, 4}}},
    {"path\na.svs\n", NULL, NULL, PGD_MANIFEST_PLAIN, 0, -1, 1, {{"a", "@/a.svs", -1, NULL, NULL, 2}}},
    {"label,path,id\n3,a.svs,S1\n4,a.svs,S2\n", "/data", NULL, PGD_MANIFEST_PLAIN, 1, 4, 2,
     {{"S1", "/data/a.svs", 3, NULL, NULL, 2}, {"S2", "/data/a.svs", 4, NULL, NULL, 3}}},
    {"path,label\n.hidden,0\ndir/noext,65535\n", "/d", NULL, PGD_MANIFEST_PLAIN, 1, 65535, 2,
     {{".hidden", "/d/.hidden", 0, NULL, NULL, 2}, {"noext", "/d/dir/noext", 65535, NULL, NULL, 3}}},
};

static void test_good(void)
{
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        const struct good_case *g = &good[i];
        char name[32], what[64];
        snprintf(name, sizeof name, "good%zu.csv", i);
        char *path = write_csv(name, g->text, strlen(g->text));
        pgd_manifest *m = NULL;
        pgd_err e = PGD_ERR_INIT;
        int rc = pgd_manifest_load(&m, path, g->slide_dir, g->ext, &e);
        if (rc)
            printf("\n    good case %zu: %s", i, e.msg);
        CU_ASSERT_EQUAL(rc, 0);
        if (!m) {
            free(path);
            continue;
        }
        CU_ASSERT_EQUAL(m->kind, g->kind);
        CU_ASSERT_EQUAL(m->labeled, g->labeled);
        CU_ASSERT_EQUAL(m->max_label, g->max_label);
        CU_ASSERT_EQUAL(m->count, g->count);
        for (size_t k = 0; k < 3 && k < m->count && g->e[k].id; k++) {
            const pgd_manifest_entry *got = &m->entries[k];
            const want_entry *w = &g->e[k];
            snprintf(what, sizeof what, "case %zu entry %zu", i, k);
            expect_str(what, got->id, w->id);
            expect_str(what, got->path, w->path);
            expect_str(what, got->provider, w->provider);
            expect_str(what, got->gleason, w->gleason);
            CU_ASSERT_EQUAL(got->label, w->label);
            CU_ASSERT_EQUAL(got->line, w->line);
        }
        pgd_manifest_free(&m);
        CU_ASSERT_PTR_NULL(m);
        free(path);
    }
}

static const struct bad_case {
    const char *text;
    const char *want; /* after "<file>" in the message */
} bad[] = {
    {"", ": no header line"},
    {"\n\n  \r\n", ": no header line"},
    {"\xEF\xBB\xBF", ": no header line"},
    {"a,b\n1,2\n", " line 1: no image_id or path column in header 'a,b'"},
    {"\n\na,b\n", " line 3: no image_id or path column in header 'a,b'"},
    {"Image_ID,isup_grade\n", " line 1: no image_id or path column in header 'Image_ID,isup_grade'"},
    {"image_id,path\n", " line 1: header has both image_id and path columns"},
    {"image_id,isup_grade,image_id\n", " line 1: column 'image_id' appears twice in the header"},
    {"image_id,data_provider,isup_grade,gleason_score\na,b,1,c\nx,y,2\n", " line 3: expected 4 fields, found 3"},
    {"image_id,isup_grade\na,1,extra\n", " line 2: expected 2 fields, found 3"},
    {"image_id\na,\n", " line 2: expected 1 field, found 2"},
    {"image_id,isup_grade\nabc,x\n", " line 2: isup_grade 'x' is not an integer in 0..5"},
    {"image_id,isup_grade\nabc,6\n", " line 2: isup_grade '6' is not an integer in 0..5"},
    {"image_id,isup_grade\nabc,-1\n", " line 2: isup_grade '-1' is not an integer in 0..5"},
    {"image_id,isup_grade\nabc,1.0\n", " line 2: isup_grade '1.0' is not an integer in 0..5"},
    {"image_id,isup_grade\nabc,\n", " line 2: isup_grade '' is not an integer in 0..5"},
    {"image_id,isup_grade\n\n\n\nabc,99999999999999999999\n", " line 5: isup_grade '99999999999999999999'"},
    {"image_id,isup_grade\nabc,1\n\"unterminated,1\nmore\n",
     " line 3: unterminated quoted field (opened on line 3)"},
    {"image_id,data_provider,isup_grade\nabc,\"x\ny\",\"1\n", " line 2: unterminated quoted field (opened on line 3)"},
    {"image_id,isup_grade\nab\"c,1\n", " line 2: quote inside an unquoted field"},
    {"image_id,isup_grade\n\"abc\"x,1\n", " line 2: unexpected 'x' after a closing quote"},
    {"image_id,isup_grade\nabc,1\ndef,2\nabc,3\n", " line 4: image_id 'abc' already on line 2"},
    {"image_id\nb\na\nb\na\n", " line 4: image_id 'b' already on line 2"},
    {"image_id\na\na\na\n", " line 3: image_id 'a' already on line 2"},
    {"image_id,data_provider\na,\"x\ny\"\nb,z\na,w\n", " line 5: image_id 'a' already on line 2"},
    {"image_id\n\"q\nr\"\n", " line 2: image_id 'q\nr' contains a control character"},
    {"image_id,isup_grade\n,1\n", " line 2: empty image_id"},
    {"image_id,isup_grade\n\"\",1\n", " line 2: empty image_id"},
    {"image_id,isup_grade\na/b,1\n", " line 2: image_id 'a/b' contains '/'"},
    {"image_id,isup_grade\n..,1\n", " line 2: image_id '..' is not a file name"},
    {"image_id,isup_grade\n\"a\tb\",1\n", " line 2: image_id 'a\tb' contains a control character"},
    {"image_id\n0123456789012345678901234567890123456789012345678901234567890123\n",
     " line 2: image_id '0123456789012345678901234567890123456789012345678901234567890123' is longer than 63 bytes"},
    {"path,label\n,1\n", " line 2: empty path"},
    {"path,label\na.svs,x\n", " line 2: label 'x' is not an integer in 0..65535"},
    {"path,label\na.svs,-1\n", " line 2: label '-1' is not an integer in 0..65535"},
    {"path,label\na.svs,65536\n", " line 2: label '65536' is not an integer in 0..65535"},
    {"path,label\ndir1/a.svs,1\ndir2/a.tiff,0\n", " line 3: id 'a' already on line 2"},
    {"path\ndir/\n", " line 2: id '' (the file name of path 'dir/') is empty"},
    {"path,id\na.svs,\n", " line 2: empty id"},
    {"path,id\na.svs,x/y\n", " line 2: id 'x/y' contains '/'"},
    {"path,label\n/a/b.svs,1,\n", " line 2: expected 2 fields, found 3"},
};

static void test_bad(void)
{
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32], want[1024];
        snprintf(name, sizeof name, "bad%zu.csv", i);
        char *path = write_csv(name, bad[i].text, strlen(bad[i].text));
        snprintf(want, sizeof want, "%s%s", path, bad[i].want);
        static pgd_manifest dummy;
        pgd_manifest *m = &dummy; /* must be reset to NULL */
        pgd_err e = PGD_ERR_INIT;
        int rc = pgd_manifest_load(&m, path, "/s", ".tiff", &e);
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_PTR_NULL(m);
        CU_ASSERT_EQUAL(e.code, PGD_EFORMAT);
        int ok = strstr(e.msg, want) != NULL;
        if (!ok)
            printf("\n    bad case %zu: error '%s', want '%s'", i, e.msg, want);
        CU_ASSERT_TRUE(ok);
        free(path);
    }
}

static void test_nul_and_long_path(void)
{
    static const char nul[] = "image_id,isup_grade\nab\0c,1\n";
    pgd_manifest *m = NULL;
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_manifest_load_text(&m, "n.csv", nul, sizeof nul - 1, "/s", "", &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "n.csv line 2: NUL byte"));

    size_t n = 5000;
    char *text = malloc(n + 32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    strcpy(text, "path\n/");
    memset(text + 6, 'a', n);
    strcpy(text + 6 + n, "/b.svs\n");
    pgd_err_clear(&e);
    CU_ASSERT_EQUAL(pgd_manifest_load_text(&m, "l.csv", text, strlen(text), NULL, NULL, &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "l.csv line 2: path is longer than 4095 bytes"));
    free(text);
}

static void test_missing_file(void)
{
    pgd_manifest *m = NULL;
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_manifest_load(&m, "/nonexistent/train.csv", NULL, ".tiff", &e), -1);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(e.code, PGD_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "open /nonexistent/train.csv: No such file"));
    pgd_manifest_free(&m); /* NULL is fine */
    pgd_manifest_free(NULL);
}

static void test_large(void)
{
    enum { ROWS = 10000 };
    size_t cap = 64 + (size_t)ROWS * 64, len = 0;
    char *text = malloc(cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    len += (size_t)snprintf(text, cap, "image_id,data_provider,isup_grade,gleason_score\n");
    for (int i = 0; i < ROWS; i++)
        len += (size_t)snprintf(text + len, cap - len, "slide%05d,%s,%d,%d+%d\n", i, i % 2 ? "radboud" : "karolinska",
                                i % 6, 3 + i % 3, 3 + i % 2);
    char *path = write_csv("large.csv", text, len);
    free(text);
    pgd_manifest *m = NULL;
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load(&m, path, "/slides", ".tiff", &e), 0);
    CU_ASSERT_EQUAL(m->count, ROWS);
    CU_ASSERT_EQUAL(m->max_label, 5);
    int labels_ok = 1, lines_ok = 1;
    for (size_t i = 0; i < m->count; i++) {
        labels_ok &= m->entries[i].label == (int)(i % 6);
        lines_ok &= m->entries[i].line == (int)i + 2;
    }
    CU_ASSERT_TRUE(labels_ok);
    CU_ASSERT_TRUE(lines_ok);
    CU_ASSERT_STRING_EQUAL(m->entries[0].id, "slide00000");
    CU_ASSERT_STRING_EQUAL(m->entries[ROWS - 1].path, "/slides/slide09999.tiff");
    CU_ASSERT_STRING_EQUAL(m->entries[ROWS - 1].provider, "radboud");
    CU_ASSERT_STRING_EQUAL(m->entries[ROWS - 1].gleason, "3+4");
    pgd_manifest_free(&m);
    free(path);
}

static void test_id_rules(void)
{
    CU_ASSERT_TRUE(pgd_manifest_id_ok("0005f7aaab2800f6170c399693a96917"));
    CU_ASSERT_TRUE(pgd_manifest_id_ok("a b,c"));
    CU_ASSERT_TRUE(pgd_manifest_id_ok("..."));
    CU_ASSERT_FALSE(pgd_manifest_id_ok(""));
    CU_ASSERT_FALSE(pgd_manifest_id_ok(NULL));
    CU_ASSERT_FALSE(pgd_manifest_id_ok("."));
    CU_ASSERT_FALSE(pgd_manifest_id_ok("a/b"));
    CU_ASSERT_FALSE(pgd_manifest_id_ok("a\x7f"));
    CU_ASSERT_FALSE(pgd_manifest_id_ok("0123456789012345678901234567890123456789012345678901234567890123"));
    CU_ASSERT_STRING_EQUAL(pgd_manifest_kind_name(PGD_MANIFEST_PANDA), "panda");
    CU_ASSERT_STRING_EQUAL(pgd_manifest_kind_name(PGD_MANIFEST_PLAIN), "plain");
}

/* A PANDA set of n rows, label i % 6 except the first 7 rows, which all take label 5 (uneven classes). */
static pgd_manifest *panda_set(int n)
{
    size_t cap = (size_t)n * 64 + 64, len = 0;
    char *text = malloc(cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    len += (size_t)snprintf(text, cap, "image_id,isup_grade,data_provider\n");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "s%03d,%d,%s\n", i, i < 7 ? 5 : i % 6, i % 2 ? "\"a,b\"" : "r");
    pgd_manifest *m = NULL;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_manifest_load_text(&m, "k.csv", text, len, "/s", ".tiff", &err), 0);
    free(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    return m;
}

static void test_kfold(void)
{
    pgd_manifest *m = panda_set(53);
    pgd_err err = PGD_ERR_INIT;
    int fold[53], again[53], other[53];
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_kfold(m, 5, 42, fold, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_kfold(m, 5, 42, again, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_kfold(m, 5, 43, other, &err), 0);
    CU_ASSERT_EQUAL(memcmp(fold, again, sizeof fold), 0); /* the same seed, the same split */
    CU_ASSERT_NOT_EQUAL(memcmp(fold, other, sizeof fold), 0);
    int per_fold[5] = {0}, per_label[6][5] = {{0}}, label_n[6] = {0};
    for (int i = 0; i < 53; i++) {
        CU_ASSERT_FATAL(fold[i] >= 0 && fold[i] < 5);
        per_fold[fold[i]]++;
        per_label[m->entries[i].label][fold[i]]++;
        label_n[m->entries[i].label]++;
    }
    for (int f = 0; f < 5; f++) /* 53 / 5: every fold 10 or 11 */
        CU_ASSERT(per_fold[f] == 10 || per_fold[f] == 11);
    for (int l = 0; l < 6; l++) /* stratified: each label within one of its share in every fold */
        for (int f = 0; f < 5; f++)
            CU_ASSERT(per_label[l][f] >= label_n[l] / 5 && per_label[l][f] <= (label_n[l] + 4) / 5);
    /* not the file order dealt out: the first fold is not rows 0, 5, 10, ... */
    int dealt = 1;
    for (int i = 0; i < 53; i++)
        dealt &= fold[i] == i % 5;
    CU_ASSERT_FALSE(dealt);
    CU_ASSERT_EQUAL(pgd_manifest_kfold(m, 1, 42, fold, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "folds: 1 folds of 53 images"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_manifest_kfold(m, 54, 42, fold, &err), -1);
    pgd_manifest_free(&m);

    /* unlabeled: a plain shuffle dealt the same way */
    const char *text = "image_id\na\nb\nc\nd\ne\n";
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load_text(&m, "u.csv", text, strlen(text), "/s", "", &err), 0);
    int uf[5], count[2] = {0};
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_kfold(m, 2, 1, uf, &err), 0);
    for (int i = 0; i < 5; i++)
        count[uf[i]]++;
    CU_ASSERT(count[0] == 3 && count[1] == 2);
    pgd_manifest_free(&m);
}

/* Every entry of a and b equal, in order. */
static void expect_same_entries(const pgd_manifest *a, const pgd_manifest *b, const unsigned char *keep)
{
    size_t j = 0;
    for (size_t i = 0; i < a->count; i++) {
        if (keep && !keep[i])
            continue;
        CU_ASSERT_FATAL(j < b->count);
        const pgd_manifest_entry *x = &a->entries[i], *y = &b->entries[j++];
        CU_ASSERT_STRING_EQUAL(x->id, y->id);
        CU_ASSERT_STRING_EQUAL(x->path, y->path);
        CU_ASSERT_EQUAL(x->label, y->label);
        CU_ASSERT((x->provider == NULL) == (y->provider == NULL));
        if (x->provider && y->provider)
            CU_ASSERT_STRING_EQUAL(x->provider, y->provider);
    }
    CU_ASSERT_EQUAL(j, b->count);
    CU_ASSERT_EQUAL(a->kind, b->kind);
    CU_ASSERT_EQUAL(a->labeled, b->labeled);
}

static void test_write(void)
{
    pgd_manifest *m = panda_set(20), *back = NULL;
    pgd_err err = PGD_ERR_INIT;
    unsigned char keep[20];
    for (int i = 0; i < 20; i++)
        keep[i] = i % 3 != 0;
    const char *path = pgd_test_path("sub.csv");
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_write(m, keep, path, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load(&back, path, "/s", ".tiff", &err), 0);
    expect_same_entries(m, back, keep); /* "a,b" providers quoted and read back */
    pgd_manifest_free(&back);
    pgd_manifest_free(&m);

    /* plain, quoted path and id, relative paths written absolute */
    const char *text = "path,label,id\n/x/a.svs,2,a\n\"/y/b,c.svs\",0,\"b c\"\n";
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load_text(&m, "p.csv", text, strlen(text), NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_write(m, NULL, path, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load(&back, path, NULL, NULL, &err), 0);
    expect_same_entries(m, back, NULL);
    pgd_manifest_free(&back);
    pgd_manifest_free(&m);

    /* a folder that does not exist: the error names the file */
    CU_ASSERT_EQUAL_FATAL(pgd_manifest_load_text(&m, "p.csv", text, strlen(text), NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(pgd_manifest_write(m, NULL, "/nonexistent-dir/x.csv", &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/nonexistent-dir/x.csv"));
    pgd_manifest_free(&m);
}

static const pgd_test_case cases[] = {
    {"good", test_good},
    {"bad", test_bad},
    {"nul_and_long_path", test_nul_and_long_path},
    {"missing_file", test_missing_file},
    {"large", test_large},
    {"id_rules", test_id_rules},
    {"kfold", test_kfold},
    {"write", test_write},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("manifest", cases, argc, argv);
}
