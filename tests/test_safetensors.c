/* test_safetensors.c: the strict JSON reader, the safetensors reader and writer, and net checkpoints. */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cunit_util.h"
#include "half.h"
#include "json_parse.h"
#include "rng.h"
#include "trainer/ckpt.h"
#include "trainer/optim.h"
#include "trainer/safetensors.h"

/* --- JSON ----------------------------------------------------------------------------------------------- */

static void test_json_values(void)
{
    const char *text = " {\"i\": -9223372036854775808, \"max\": 9223372036854775807, \"n\": -1.5e3,"
                       " \"s\": \"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\xc3\xa9\", \"t\": true,"
                       " \"f\": false, \"z\": null, \"a\": [1, [], {}], \"\": 0} ";
    pgd_err err = PGD_ERR_INIT;
    pgd_json *root = pgd_json_parse(text, strlen(text), NULL, &err);
    if (!root)
        printf("\n    %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_EQUAL(root->type, PGD_JSON_OBJECT);
    CU_ASSERT_EQUAL(root->offset, 1);
    CU_ASSERT_EQUAL(root->count, 9);
    const pgd_json *i = pgd_json_get(root, "i"), *mx = pgd_json_get(root, "max"), *n = pgd_json_get(root, "n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(i);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mx);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT_EQUAL(i->type, PGD_JSON_INT);
    CU_ASSERT(i->i == INT64_MIN);
    CU_ASSERT_EQUAL(i->offset, 7);
    CU_ASSERT(mx->i == INT64_MAX);
    CU_ASSERT_EQUAL(n->type, PGD_JSON_NUMBER);
    CU_ASSERT(n->num == -1500.0);
    const pgd_json *s = pgd_json_get(root, "s");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const char want[] = "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\xc3\xa9";
    CU_ASSERT_EQUAL(s->len, sizeof want - 1);
    CU_ASSERT_EQUAL(memcmp(s->str, want, sizeof want), 0);
    CU_ASSERT_EQUAL(pgd_json_get(root, "t")->type, PGD_JSON_TRUE);
    CU_ASSERT_EQUAL(pgd_json_get(root, "f")->type, PGD_JSON_FALSE);
    CU_ASSERT_EQUAL(pgd_json_get(root, "z")->type, PGD_JSON_NULL);
    const pgd_json *a = pgd_json_get(root, "a");
    CU_ASSERT_EQUAL_FATAL(a->count, 3);
    CU_ASSERT_EQUAL(a->items[0].i, 1);
    CU_ASSERT_PTR_NULL(a->items[0].key);
    CU_ASSERT_EQUAL(a->items[1].type, PGD_JSON_ARRAY);
    CU_ASSERT_EQUAL(a->items[1].count, 0);
    CU_ASSERT_EQUAL(a->items[2].type, PGD_JSON_OBJECT);
    CU_ASSERT_PTR_NOT_NULL(pgd_json_get(root, ""));
    CU_ASSERT_PTR_NULL(pgd_json_get(root, "nope"));
    CU_ASSERT_PTR_NULL(pgd_json_get(a, "i"));
    pgd_json_free(&root);
    CU_ASSERT_PTR_NULL(root);
    pgd_json_free(&root);
}

/* Depth exactly at the limit passes, one more fails. */
static void test_json_limits(void)
{
    char deep[200];
    pgd_json_limits lim = {0, 10};
    for (int d = 10; d <= 11; d++) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        pgd_err err = PGD_ERR_INIT;
        pgd_json *root = pgd_json_parse(deep, 2 * (size_t)d, &lim, &err);
        CU_ASSERT_EQUAL(root != NULL, d == 10);
        if (d == 11)
            CU_ASSERT_STRING_EQUAL(err.msg, "at byte 10: nested too deeply");
        pgd_json_free(&root);
    }
    lim.max_bytes = 4;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_json_parse("[1,2]", 5, &lim, &err));
    CU_ASSERT_STRING_EQUAL(err.msg, "at byte 0: text of 5 bytes is longer than the 4-byte limit");
}

static const struct {
    const char *text;
    size_t len; /* 0: strlen */
    const char *want;
} json_bad[] = {
    {"", 0, "at byte 0: unexpected end of text"},
    {"   ", 0, "at byte 3: unexpected end of text"},
    {"{\"a\":1,}", 0, "at byte 7: expected a string key"},
    {"[1,2", 0, "at byte 4: expected ',' or ']'"},
    {"[1,]", 0, "at byte 3: expected a value"},
    {"{\"a\" 1}", 0, "at byte 5: expected ':' after key"},
    {"{1:2}", 0, "at byte 1: expected a string key"},
    {"01", 0, "at byte 0: leading zero in number"},
    {"-", 0, "at byte 0: expected a digit"},
    {"1.", 0, "at byte 2: expected a digit after '.'"},
    {"1e+", 0, "at byte 3: expected a digit in exponent"},
    {"9223372036854775808", 0, "at byte 0: integer out of the int64 range"},
    {"[-9223372036854775809]", 0, "at byte 1: integer out of the int64 range"},
    {"1e999", 0, "at byte 0: number out of the double range"},
    {"NaN", 0, "at byte 0: expected a value"},
    {"tru", 0, "at byte 0: expected a value"},
    {"[1] x", 0, "at byte 4: text after the value"},
    {"[1]\0", 4, "at byte 3: text after the value"},
    {"\"abc", 0, "at byte 0: unterminated string"},
    {"\"\\x\"", 0, "at byte 1: unknown escape in string"},
    {"\"\\u12G4\"", 0, "at byte 5: bad hex digit in \\u escape"},
    {"\"\\ud800\"", 0, "at byte 1: high surrogate not followed by a low one"},
    {"\"\\ud800\\u0041\"", 0, "at byte 1: high surrogate not followed by a low one"},
    {"\"\\udc00\"", 0, "at byte 1: lone low surrogate in \\u escape"},
    {"\"\\u0000\"", 0, "at byte 1: \\u0000 in a string is not supported"},
    {"\"a\x01\"", 0, "at byte 2: control character in string"},
    {"\"a\0\"", 4, "at byte 2: NUL byte in string"},
    {"\"\xc0\xaf\"", 0, "at byte 1: invalid UTF-8 in string"},    /* overlong '/' */
    {"\"\xed\xa0\x80\"", 0, "at byte 1: invalid UTF-8 in string"}, /* an encoded surrogate */
    {"\"\xf4\x90\x80\x80\"", 0, "at byte 1: invalid UTF-8 in string"}, /* past U+10FFFF */
    {"\"\xe2\x82\"", 0, "at byte 1: invalid UTF-8 in string"},     /* cut short */
    {"{\"a\":1,\"b\":2,\"a\":3}", 0, "at byte 17: duplicate key 'a'"},
    {"{\"x\":{\"k\":[],\"k\":{}}}", 0, "at byte 17: duplicate key 'k'"},
};

static void test_json_bad(void)
{
    for (size_t i = 0; i < sizeof json_bad / sizeof *json_bad; i++) {
        size_t len = json_bad[i].len ? json_bad[i].len : strlen(json_bad[i].text);
        pgd_err err = PGD_ERR_INIT;
        pgd_json *root = pgd_json_parse(json_bad[i].text, len, NULL, &err);
        CU_ASSERT_PTR_NULL(root);
        CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
        if (strcmp(err.msg, json_bad[i].want) != 0)
            printf("\n    case %zu: got '%s', want '%s'", i, err.msg, json_bad[i].want);
        CU_ASSERT_STRING_EQUAL(err.msg, json_bad[i].want);
        pgd_json_free(&root);
    }
}

/* --- safetensors: helpers ---------------------------------------------------------------------------------- */

/* A file image: u64 length, header, then data_len bytes of 0x5A. */
static uint8_t *make_file(const char *header, size_t data_len, size_t *size)
{
    size_t hl = strlen(header);
    *size = 8 + hl + data_len;
    uint8_t *b = malloc(*size);
    if (!b)
        return NULL;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, 0x5A, data_len);
    return b;
}

static int write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(data, 1, size, f);
    return fclose(f) == 0 && n == size ? 0 : -1;
}

static uint8_t *read_bytes(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = malloc(1 << 20);
    *size = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

/* Entries of dir whose names start with prefix. */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* --- safetensors: the spec, by hand --------------------------------------------------------------------- */

/* A file laid out by hand as another writer might: no padding, fields and tensors in another order, the
 * data in another order than the names, whitespace, metadata last. */
static void test_read_handmade(void)
{
    const char *header = "{ \"w\" : {\"data_offsets\": [2, 10], \"shape\": [1, 2], \"dtype\": \"F32\"},\n"
                         "  \"c\": {\"dtype\": \"I16\", \"shape\": [], \"data_offsets\": [0, 2]},\n"
                         "  \"e\": {\"dtype\": \"U8\", \"shape\": [0, 3], \"data_offsets\": [10, 10]},\n"
                         "  \"__metadata__\": {\"format\": \"pt\", \"note\": \"caf\\u00e9\"} }";
    size_t size;
    uint8_t *file = make_file(header, 10, &size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(file);
    uint8_t *data = file + 8 + strlen(header);
    const uint8_t bytes[10] = {0xFE, 0xFF, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC1}; /* -2; 1.0, -10.0 */
    memcpy(data, bytes, sizeof bytes);
    pgd_err err = PGD_ERR_INIT;
    pgd_st_file *f = pgd_st_open_mem(file, size, "hand.st", &err);
    if (!f)
        printf("\n    %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(pgd_st_count(f), 3);
    CU_ASSERT_STRING_EQUAL(pgd_st_at(f, 0)->name, "c"); /* sorted by name */
    CU_ASSERT_STRING_EQUAL(pgd_st_at(f, 1)->name, "e");
    CU_ASSERT_STRING_EQUAL(pgd_st_at(f, 2)->name, "w");
    CU_ASSERT_PTR_NULL(pgd_st_at(f, 3));
    const pgd_st_tensor *w = pgd_st_find(f, "w"), *c = pgd_st_find(f, "c"), *e = pgd_st_find(f, "e");
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_PTR_NULL(pgd_st_find(f, "x"));
    CU_ASSERT_EQUAL(w->dtype, PGD_ST_F32);
    CU_ASSERT_EQUAL(w->ndim, 2);
    CU_ASSERT_EQUAL(w->shape[0], 1);
    CU_ASSERT_EQUAL(w->shape[1], 2);
    CU_ASSERT_EQUAL(w->count, 2);
    float v[2];
    memcpy(v, pgd_st_data(f, w), sizeof v); /* at data byte 2: not aligned */
    CU_ASSERT(v[0] == 1.0f && v[1] == -10.0f);
    CU_ASSERT_EQUAL(c->ndim, 0);
    CU_ASSERT_EQUAL(c->count, 1);
    int16_t cv;
    memcpy(&cv, pgd_st_data(f, c), 2);
    CU_ASSERT_EQUAL(cv, -2);
    CU_ASSERT_EQUAL(e->count, 0);
    CU_ASSERT_EQUAL(e->begin, 10);
    CU_ASSERT_EQUAL(pgd_st_meta_count(f), 2);
    CU_ASSERT_STRING_EQUAL(pgd_st_meta_key(f, 0), "format");
    CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "note"), "caf\xc3\xa9");
    CU_ASSERT_PTR_NULL(pgd_st_meta(f, "nope"));
    CU_ASSERT_EQUAL(pgd_st_data_offset(f), 8 + strlen(header));
    pgd_st_close(&f);
    CU_ASSERT_PTR_NULL(f);
    free(file);
}

/* The writer's bytes, against a layout worked out by hand from the spec: the header length, the JSON
 * (metadata first, tensors by name, compact), space padding to a multiple of 8, then F32 before I8. */
static void test_write_layout(void)
{
    static const char header[] = "{\"__metadata__\":{\"format\":\"pgd\"},"
                                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                 "\"b\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[8,9]}}       ";
    CU_ASSERT_EQUAL_FATAL(sizeof header - 1, 144);
    uint8_t want[8 + 144 + 9] = {0x90, 0, 0, 0, 0, 0, 0, 0};
    memcpy(want + 8, header, 144);
    const uint8_t data[9] = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, 0x7F}; /* 1.0f, -2.0f, 127 */
    memcpy(want + 152, data, 9);

    pgd_err err = PGD_ERR_INIT;
    pgd_st_writer *w = pgd_st_writer_new(&err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    int8_t b = 127;
    float a[2] = {1.0f, -2.0f};
    int64_t shape_a[1] = {2};
    CU_ASSERT_EQUAL(pgd_st_writer_add(w, "b", PGD_ST_I8, 0, NULL, &b, &err), 0);
    CU_ASSERT_EQUAL(pgd_st_writer_add(w, "a", PGD_ST_F32, 1, shape_a, a, &err), 0);
    CU_ASSERT_EQUAL(pgd_st_writer_meta(w, "format", "pgd", &err), 0);
    uint8_t *out = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(pgd_st_writer_to_mem(w, &out, &len, &err), 0);
    CU_ASSERT_EQUAL(len, sizeof want);
    CU_ASSERT(len == sizeof want && memcmp(out, want, len) == 0);
    const char *path = pgd_test_path("layout.safetensors");
    CU_ASSERT_EQUAL_FATAL(pgd_st_writer_commit(w, path, &err), 0);
    size_t flen = 0;
    uint8_t *fbytes = read_bytes(path, &flen);
    CU_ASSERT(fbytes && flen == len && memcmp(fbytes, want, len) == 0);
    struct stat sb;
    CU_ASSERT(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);
    free(fbytes);
    free(out);
    pgd_st_writer_free(&w);
    CU_ASSERT_PTR_NULL(w);
}

/* --- round trips ------------------------------------------------------------------------------------------ */

/* Every dtype, a scalar and an empty tensor, and metadata with escapes, through a file read both ways. */
static void test_round_trip_dtypes(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_st_writer *w = pgd_st_writer_new(&err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    int64_t shape[3] = {3, 1, 2};
    uint8_t pattern[6 * 8];
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)(i * 37 + 11);
    for (int d = 0; d < PGD_ST_DTYPE_COUNT; d++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", pgd_st_dtype_name((pgd_st_dtype)d));
        CU_ASSERT_EQUAL(pgd_st_writer_add(w, name, (pgd_st_dtype)d, 3, shape, pattern, &err), 0);
    }
    int64_t empty[2] = {4, 0};
    CU_ASSERT_EQUAL(pgd_st_writer_add(w, "empty", PGD_ST_F16, 2, empty, NULL, &err), 0);
    CU_ASSERT_EQUAL(pgd_st_writer_add(w, "scalar", PGD_ST_I64, 0, NULL, pattern, &err), 0);
    CU_ASSERT_EQUAL(pgd_st_writer_meta(w, "quote\"back\\slash", "line\nbreak\ttab \xc3\xa9 \x01", &err), 0);
    CU_ASSERT_EQUAL(pgd_st_writer_meta(w, "empty", "", &err), 0);
    const char *path = pgd_test_path("dtypes.safetensors");
    CU_ASSERT_EQUAL_FATAL(pgd_st_writer_commit(w, path, &err), 0);
    pgd_st_writer_free(&w);

    for (int mode = PGD_ST_READ; mode <= PGD_ST_MMAP; mode++) {
        pgd_st_file *f = pgd_st_open(path, mode, &err);
        if (!f)
            printf("\n    %s\n", err.msg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_EQUAL(pgd_st_count(f), PGD_ST_DTYPE_COUNT + 2);
        CU_ASSERT_EQUAL(pgd_st_data_offset(f) % 8, 0);
        for (int d = 0; d < PGD_ST_DTYPE_COUNT; d++) {
            char name[32];
            snprintf(name, sizeof name, "t.%s", pgd_st_dtype_name((pgd_st_dtype)d));
            const pgd_st_tensor *t = pgd_st_find(f, name);
            CU_ASSERT_PTR_NOT_NULL_FATAL(t);
            size_t es = pgd_st_dtype_size((pgd_st_dtype)d);
            CU_ASSERT_EQUAL(t->dtype, d);
            CU_ASSERT_EQUAL(t->ndim, 3);
            CU_ASSERT(t->shape[0] == 3 && t->shape[1] == 1 && t->shape[2] == 2);
            CU_ASSERT_EQUAL(t->count, 6);
            CU_ASSERT_EQUAL(t->end - t->begin, 6 * es);
            CU_ASSERT_EQUAL((pgd_st_data_offset(f) + t->begin) % es, 0); /* aligned for its dtype */
            CU_ASSERT_EQUAL(memcmp(pgd_st_data(f, t), pattern, 6 * es), 0);
        }
        const pgd_st_tensor *e = pgd_st_find(f, "empty"), *s = pgd_st_find(f, "scalar");
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        CU_ASSERT(e->count == 0 && e->ndim == 2 && e->shape[1] == 0 && e->begin == e->end);
        CU_ASSERT(s->ndim == 0 && s->count == 1 && s->dtype == PGD_ST_I64);
        CU_ASSERT_EQUAL(memcmp(pgd_st_data(f, s), pattern, 8), 0);
        CU_ASSERT_EQUAL(pgd_st_meta_count(f), 2);
        CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "quote\"back\\slash"), "line\nbreak\ttab \xc3\xa9 \x01");
        CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "empty"), "");
        pgd_st_close(&f);
    }
    CU_ASSERT_EQUAL(pgd_st_dtype_size(PGD_ST_BF16), 2);
    pgd_st_dtype dt;
    CU_ASSERT_EQUAL(pgd_st_dtype_parse("BOOL", &dt), 0);
    CU_ASSERT_EQUAL(dt, PGD_ST_BOOL);
    CU_ASSERT_EQUAL(pgd_st_dtype_parse("f32", &dt), -1);
}

/* A file with no tensors at all is valid (header "{}" padded). */
static void test_round_trip_empty(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_st_writer *w = pgd_st_writer_new(&err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    uint8_t *out = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(pgd_st_writer_to_mem(w, &out, &len, &err), 0);
    CU_ASSERT_EQUAL(len, 16);
    CU_ASSERT(len == 16 && memcmp(out, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    pgd_st_file *f = pgd_st_open_mem(out, len, "empty", &err);
    CU_ASSERT_PTR_NOT_NULL(f);
    CU_ASSERT(f && pgd_st_count(f) == 0 && pgd_st_meta_count(f) == 0);
    pgd_st_close(&f);
    free(out);
    pgd_st_writer_free(&w);
}

/* --- bad files --------------------------------------------------------------------------------------------- */

#define T1(name, dtype, shape, b, e) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape \
                                     ",\"data_offsets\":[" #b "," #e "]}"

static const struct {
    const char *header;
    size_t data_len;
    const char *want;
} st_bad[] = {
    {"", 0, "t.st: header does not start with '{'"},
    {" {}", 0, "t.st: header does not start with '{'"},
    {"{\"a\":1", 0, "t.st: header JSON at byte 6: expected ',' or '}'"},
    {"{} x", 0, "t.st: header JSON at byte 3: text after the value"},
    {"{\"a\xff\":{}}", 0, "t.st: header JSON at byte 3: invalid UTF-8 in string"},
    {"{" T1("a", "F32", "[1]", 0, 4) "," T1("a", "F32", "[1]", 4, 8) "}", 8, "t.st: header JSON at byte 58: "
     "duplicate key 'a'"},
    {"{" T1("a", "F128", "[1]", 0, 4) "}", 4, "t.st: tensor 'a': unknown dtype 'F128'"},
    {"{" T1("a", "F32", "[2]", 0, 8) "," T1("b", "F32", "[2]", 4, 12) "}", 12,
     "t.st: tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
    {"{" T1("a", "F32", "[1]", 0, 4) "," T1("b", "F32", "[1]", 8, 12) "}", 12,
     "t.st: hole in the data: no tensor holds bytes [4, 8)"},
    {"{" T1("a", "F32", "[1]", 0, 4) "}", 8, "t.st: hole in the data: no tensor holds bytes [4, 8)"},
    {"{" T1("a", "F32", "[1]", 4, 8) "}", 8, "t.st: hole in the data: no tensor holds bytes [0, 4)"},
    {"{" T1("a", "F32", "[2]", 0, 8) "," T1("z", "U8", "[0]", 4, 4) "}", 8,
     "t.st: tensors 'a' [0, 8] and 'z' [4, 4] overlap"},
    {"{" T1("a", "F32", "[2]", 0, 8) "}", 4,
     "t.st: tensor 'a': data_offsets [0, 8] run past the end of the data (4 bytes): truncated file"},
    {"{" T1("a", "F32", "[1]", 9223372036854775800, 9223372036854775804) "}", 4,
     "t.st: tensor 'a': data_offsets [9223372036854775800, 9223372036854775804] run past the end"},
    {"{" T1("a", "F32", "[1]", 0, 99999999999999999999) "}", 4,
     "t.st: header JSON at byte 50: integer out of the int64 range"},
    {"{" T1("a", "F32", "[3]", 0, 8) "}", 8,
     "t.st: tensor 'a': shape [3] of F32 is 12 bytes but data_offsets [0, 8] hold 8"},
    {"{" T1("a", "F32", "[4294967296,4294967296,16]", 0, 8) "}", 8,
     "t.st: tensor 'a': shape [4294967296, 4294967296, 16] is too large"},
    {"{" T1("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4,
     "t.st: tensor 'a': shape has 9 dimensions, more than 8"},
    {"{" T1("a", "F32", "[-1]", 0, 4) "}", 4, "t.st: tensor 'a': shape[0] is not a non-negative integer"},
    {"{" T1("a", "F32", "[1.0]", 0, 4) "}", 4, "t.st: tensor 'a': shape[0] is not a non-negative integer"},
    {"{" T1("a", "F32", "{}", 0, 4) "}", 4, "t.st: tensor 'a': shape is object, not an array"},
    {"{" T1("a", "F32", "[1]", 4, 0) "}", 4, "t.st: tensor 'a': data_offsets [4, 0] end before they begin"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
     "t.st: tensor 'a': data_offsets is not [begin, end] of non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
     "t.st: tensor 'a': data_offsets is not [begin, end] of non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "t.st: tensor 'a': no 'data_offsets'"},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "t.st: tensor 'a': no 'dtype'"},
    {"{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "t.st: tensor 'a': dtype is integer, not a string"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
     "t.st: tensor 'a': unknown field 'x'"},
    {"{\"a\":[0,4]}", 4, "t.st: tensor 'a': entry is array, not an object"},
    {"{\"a\":\"F32\"}", 0, "t.st: tensor 'a': entry is string, not an object"},
    {"{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "t.st: tensor with an empty name"},
    {"{\"__metadata__\":[]}", 0, "t.st: __metadata__ is array, not an object"},
    {"{\"__metadata__\":{\"k\":1}}", 0, "t.st: __metadata__ 'k' is integer, not a string"},
    {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "t.st: header JSON at byte 29: duplicate key 'k'"},
};

static void check_msg(const char *what, const pgd_err *err, const char *want)
{
    int ok = strstr(err->msg, want) == err->msg; /* a prefix of the message */
    if (!ok)
        printf("\n    %s: got '%s', want '%s'", what, err->msg, want);
    CU_ASSERT(ok);
}

static void test_bad_headers(void)
{
    for (size_t i = 0; i < sizeof st_bad / sizeof *st_bad; i++) {
        size_t size;
        uint8_t *file = make_file(st_bad[i].header, st_bad[i].data_len, &size);
        CU_ASSERT_PTR_NOT_NULL_FATAL(file);
        pgd_err err = PGD_ERR_INIT;
        pgd_st_file *f = pgd_st_open_mem(file, size, "t.st", &err);
        CU_ASSERT_PTR_NULL(f);
        CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
        char what[32];
        snprintf(what, sizeof what, "case %zu", i);
        check_msg(what, &err, st_bad[i].want);
        pgd_st_close(&f);
        free(file);
    }
}

/* Header lengths that do not fit, and the same errors through the file readers. */
static void test_bad_lengths(void)
{
    static const struct {
        uint8_t bytes[24];
        size_t size;
        const char *want;
    } cases[] = {
        {{0}, 0, "t.st: file is 0 bytes, shorter than the 8-byte header length"},
        {{2, 0, 0, 0, 0}, 5, "t.st: file is 5 bytes, shorter than the 8-byte header length"},
        {{0x00, 0xC2, 0xEB, 0x0B, 0, 0, 0, 0}, 8, "t.st: header length 200000000 is larger than the "
                                                  "100000000-byte limit"},
        {{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 8, "t.st: header length 18446744073709551615 is "
                                                              "larger than the 100000000-byte limit"},
        {{100, 0, 0, 0, 0, 0, 0, 0, '{', '}'}, 18, "t.st: header length 100 runs past the end of the file "
                                                   "(18 bytes): truncated file"},
        {{0}, 8, "t.st: header does not start with '{'"},
    };
    const char *path = pgd_test_path("t.st");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char what[48];
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_PTR_NULL(pgd_st_open_mem(cases[i].bytes, cases[i].size, "t.st", &err));
        snprintf(what, sizeof what, "case %zu (memory)", i);
        check_msg(what, &err, cases[i].want);
        CU_ASSERT_EQUAL_FATAL(write_bytes(path, cases[i].bytes, cases[i].size), 0);
        for (int mode = PGD_ST_READ; mode <= PGD_ST_MMAP; mode++) {
            pgd_err ferr = PGD_ERR_INIT;
            CU_ASSERT_PTR_NULL(pgd_st_open(path, mode, &ferr));
            snprintf(what, sizeof what, "case %zu (mode %d)", i, mode);
            check_msg(what, &ferr, path); /* the message names the file... */
            CU_ASSERT_PTR_NOT_NULL(strstr(ferr.msg, cases[i].want + 4)); /* ...then says the same */
        }
    }
    /* A cut-off data buffer read from a file. */
    size_t size;
    uint8_t *file = make_file("{" T1("a", "F32", "[4]", 0, 16) "}", 16, &size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(file);
    CU_ASSERT_EQUAL_FATAL(write_bytes(path, file, size - 3), 0);
    for (int mode = PGD_ST_READ; mode <= PGD_ST_MMAP; mode++) {
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_PTR_NULL(pgd_st_open(path, mode, &err));
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "tensor 'a': data_offsets [0, 16] run past the end of the data "
                                               "(13 bytes): truncated file"));
    }
    free(file);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_st_open(pgd_test_path("missing.st"), PGD_ST_READ, &err));
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_st_open(pgd_test_tmpdir(), PGD_ST_MMAP, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not a regular file"));
}

/* The writer refuses what the reader would refuse, and keeps its first error. */
static void test_writer_errors(void)
{
    pgd_err err = PGD_ERR_INIT;
    static const int64_t neg[1] = {-1}, one[1] = {1};
    float x = 1;
    static const struct {
        const char *name;
        int ndim;
        const int64_t *shape;
        const char *want;
    } cases[] = {
        {"", 1, one, "safetensors writer: bad tensor name ''"},
        {"__metadata__", 1, one, "safetensors writer: bad tensor name '__metadata__'"},
        {"n", 1, neg, "safetensors writer: tensor 'n': bad shape [-1]"},
        {"n", 9, one, "safetensors writer: tensor 'n': 9 dimensions"},
        {"dup", 1, one, "safetensors writer: duplicate tensor name 'dup'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pgd_st_writer *w = pgd_st_writer_new(&err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(w);
        CU_ASSERT_EQUAL(pgd_st_writer_add(w, "dup", PGD_ST_F32, 1, one, &x, &err), 0);
        pgd_err e = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_st_writer_add(w, cases[i].name, PGD_ST_F32, cases[i].ndim, cases[i].shape, &x, &e), -1);
        check_msg(cases[i].name, &e, cases[i].want);
        pgd_err later = PGD_ERR_INIT; /* sticky: a later good call fails with the first error */
        CU_ASSERT_EQUAL(pgd_st_writer_meta(w, "k", "v", &later), -1);
        CU_ASSERT_STRING_EQUAL(later.msg, e.msg);
        pgd_err_clear(&later);
        CU_ASSERT_EQUAL(pgd_st_writer_commit(w, pgd_test_path("never.st"), &later), -1);
        CU_ASSERT_STRING_EQUAL(later.msg, e.msg);
        pgd_st_writer_free(&w);
    }
    CU_ASSERT_EQUAL(access(pgd_test_path("never.st"), F_OK), -1);
    pgd_st_writer *w = pgd_st_writer_new(&err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(pgd_st_writer_meta(w, "k", "v", &err), 0);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_st_writer_meta(w, "k", "w", &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "safetensors writer: duplicate metadata key 'k'");
    pgd_st_writer_free(&w);
    w = pgd_st_writer_new(&err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(pgd_st_writer_add(w, "bad\xff", PGD_ST_F32, 1, one, &x, &err), 0);
    pgd_err_clear(&e);
    CU_ASSERT_EQUAL(pgd_st_writer_commit(w, pgd_test_path("never.st"), &e), -1);
    check_msg("utf8", &e, "safetensors writer: header would not parse: at byte 5: invalid UTF-8 in string");
    pgd_st_writer_free(&w);
    CU_ASSERT_EQUAL(access(pgd_test_path("never.st"), F_OK), -1);
}

/* --- atomic commit ------------------------------------------------------------------------------------------ */

static pgd_st_writer *big_writer(size_t floats, float value)
{
    pgd_st_writer *w = pgd_st_writer_new(NULL);
    int64_t shape[1] = {(int64_t)floats};
    float *buf = w ? pgd_st_writer_add_buffer(w, "big", PGD_ST_F32, 1, shape, NULL) : NULL;
    for (size_t i = 0; buf && i < floats; i++)
        buf[i] = value;
    if (!buf)
        pgd_st_writer_free(&w);
    return w;
}

/* 1 when path holds the "big" tensor filled with value. */
static int holds_value(const char *path, size_t floats, float value)
{
    pgd_st_file *f = pgd_st_open(path, PGD_ST_MMAP, NULL);
    const pgd_st_tensor *t = f ? pgd_st_find(f, "big") : NULL;
    int ok = t && t->count == floats;
    for (size_t i = 0; ok && i < floats; i++) {
        float v;
        memcpy(&v, pgd_st_data(f, t) + 4 * i, 4);
        ok = v == value;
    }
    pgd_st_close(&f);
    return ok;
}

/* A save that fails half-way (the file size limit cuts the write) leaves the old file as it was and no
 * temporary file; so does a save whose rename fails. */
static void test_atomic_commit(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/atomic", pgd_test_tmpdir());
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    pgd_st_writer *w = big_writer(1000, 1.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL_FATAL(pgd_st_writer_commit(w, path, NULL), 0);
    pgd_st_writer_free(&w);
    CU_ASSERT(holds_value(path, 1000, 1.0f));

    fflush(stdout);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        struct rlimit lim = {100000, 100000}; /* bytes: the 400 KB file cannot be written */
        signal(SIGXFSZ, SIG_IGN);
        pgd_st_writer *big = big_writer(100000, 2.0f);
        if (!big || setrlimit(RLIMIT_FSIZE, &lim) != 0)
            _exit(3);
        pgd_err err = PGD_ERR_INIT;
        int rc = pgd_st_writer_commit(big, path, &err);
        pgd_st_writer_free(&big);
        _exit(rc == -1 && strstr(err.msg, "write ") && strstr(err.msg, "File too large") ? 0 : 4);
    }
    int status = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT(holds_value(path, 1000, 1.0f));
    CU_ASSERT_EQUAL(count_entries(dir, "."), 2); /* "." and "..": no temporary file */
    CU_ASSERT_EQUAL(count_entries(dir, ""), 3);

    /* The rename fails: the target is a folder. */
    char sub[700];
    snprintf(sub, sizeof sub, "%s/folder", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(sub, 0700), 0);
    char inner[800];
    snprintf(inner, sizeof inner, "%s/x", sub);
    CU_ASSERT_EQUAL_FATAL(write_bytes(inner, "x", 1), 0);
    w = big_writer(10, 3.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_st_writer_commit(w, sub, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "rename"));
    CU_ASSERT_EQUAL(count_entries(dir, "."), 2);
    /* And the writer can still be committed elsewhere, replacing the old file. */
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_st_writer_commit(w, path, &err), 0);
    CU_ASSERT(holds_value(path, 10, 3.0f));
    CU_ASSERT_EQUAL(count_entries(dir, "."), 2);
    pgd_st_writer_free(&w);
    /* A folder that does not exist. */
    pgd_err_clear(&err);
    w = big_writer(10, 3.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(pgd_st_writer_commit(w, pgd_test_path("nowhere/x.st"), &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    pgd_st_writer_free(&w);
}

/* --- net checkpoints ------------------------------------------------------------------------------------- */

static pgd_backend *g_be;

static pgd_backend *backend(void)
{
    if (!g_be)
        g_be = pgd_backend_cpu_new(1, NULL);
    return g_be;
}

/* input [3,8,8] -> conv1 (4) [-> bn1] -> relu -> global pool -> fc (fc_out) */
static pgd_net *small_net(int with_bn, int fc_out, uint64_t seed)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = backend() ? pgd_net_new(backend(), &err) : NULL;
    if (!net)
        return NULL;
    int x = pgd_net_input(net, 3, 8, 8);
    x = pgd_net_conv(net, x, "conv1", 4, 3, 1, 1, 1, 0);
    if (with_bn)
        x = pgd_net_bn(net, x, "bn1");
    x = pgd_net_relu(net, x, 0);
    x = pgd_net_global_avgpool(net, x);
    pgd_net_linear(net, x, "fc", fc_out, 1);
    if (pgd_net_finish(net, seed, &err) != 0) {
        printf("\n    small_net: %s\n", err.msg);
        pgd_net_free(&net);
    }
    return net;
}

/* Everything a net holds that a checkpoint carries, on the host. */
typedef struct snap {
    float *p, *b;
    int64_t c[16];
    size_t np, nb, nc;
} snap;

static void snap_take(snap *s, pgd_net *net)
{
    pgd_backend *be = pgd_net_backend(net);
    s->np = pgd_net_param_count(net);
    s->nb = pgd_net_buffer_count(net);
    s->p = malloc((s->np + 1) * sizeof(float));
    s->b = malloc((s->nb + 1) * sizeof(float));
    if (s->p)
        be->ops->download(be, s->p, pgd_net_params(net), s->np * sizeof(float));
    if (s->b)
        be->ops->download(be, s->b, pgd_net_buffers(net), s->nb * sizeof(float));
    s->nc = 0;
    for (int i = 0; i < pgd_net_tensor_count(net) && s->nc < 16; i++)
        if (pgd_net_tensor(net, i)->kind == PGD_TENSOR_COUNTER)
            s->c[s->nc++] = pgd_net_counters(net)[pgd_net_tensor(net, i)->offset];
}

static int snap_same(const snap *a, const snap *b)
{
    return a->p && b->p && a->b && b->b && a->np == b->np && a->nb == b->nb && a->nc == b->nc &&
           memcmp(a->p, b->p, a->np * sizeof(float)) == 0 && memcmp(a->b, b->b, a->nb * sizeof(float)) == 0 &&
           memcmp(a->c, b->c, a->nc * sizeof(int64_t)) == 0;
}

static void snap_free(snap *s)
{
    free(s->p);
    free(s->b);
    s->p = s->b = NULL;
}

/* Running statistics and counters that init would never give. */
static void fill_buffers(pgd_net *net, float base)
{
    pgd_backend *be = pgd_net_backend(net);
    size_t nb = pgd_net_buffer_count(net);
    float *tmp = malloc((nb + 1) * sizeof *tmp);
    for (size_t i = 0; tmp && i < nb; i++)
        tmp[i] = base + 0.37f * (float)i;
    if (tmp)
        be->ops->upload(be, pgd_net_buffers(net), tmp, nb * sizeof *tmp);
    free(tmp);
    for (int i = 0; i < pgd_net_tensor_count(net); i++)
        if (pgd_net_tensor(net, i)->kind == PGD_TENSOR_COUNTER)
            pgd_net_counters(net)[pgd_net_tensor(net, i)->offset] = (int64_t)(base * 1000) + i;
}

/* Save a net (prefix "") to path; 0 on success. */
static int save_one(pgd_net *net, const char *path)
{
    pgd_ckpt_net n = {net, "", NULL, NULL};
    pgd_err err = PGD_ERR_INIT;
    int rc = pgd_ckpt_save(path, &n, 1, NULL, 0, &err);
    if (rc)
        printf("\n    save %s: %s\n", path, err.msg);
    return rc;
}

static void test_net_round_trip(void)
{
    pgd_net *a = small_net(1, 5, 1), *b = small_net(1, 5, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    fill_buffers(a, 3.0f);
    const char *path = pgd_test_path("net.safetensors");
    const pgd_ckpt_kv meta[] = {{"arch", "small"}, {"epoch", "3"}};
    pgd_ckpt_net n = {a, NULL, NULL, NULL};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_ckpt_save(path, &n, 1, meta, 2, &err), 0);
    snap sa, sb;
    snap_take(&sa, a);
    snap_take(&sb, b);
    CU_ASSERT_FALSE(snap_same(&sa, &sb));
    snap_free(&sb);
    n.net = b;
    CU_ASSERT_EQUAL(pgd_ckpt_load(path, &n, 1, NULL, &err), 0);
    snap_take(&sb, b);
    CU_ASSERT(snap_same(&sa, &sb));
    CU_ASSERT_EQUAL(sa.nc, 1);
    CU_ASSERT_EQUAL(sb.c[0], 3000 + pgd_net_find(b, "bn1.num_batches_tracked"));

    /* What the file holds: torchvision names, F32 and an I64 scalar counter, the metadata. */
    pgd_st_file *f = pgd_st_open(path, PGD_ST_READ, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(pgd_st_count(f), 8);
    const pgd_st_tensor *w = pgd_st_find(f, "conv1.weight"), *c = pgd_st_find(f, "bn1.num_batches_tracked");
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT(w->dtype == PGD_ST_F32 && w->ndim == 4 && w->shape[0] == 4 && w->shape[1] == 3 && w->shape[3] == 3);
    CU_ASSERT(c->dtype == PGD_ST_I64 && c->ndim == 0);
    CU_ASSERT_PTR_NOT_NULL(pgd_st_find(f, "bn1.running_var"));
    CU_ASSERT_PTR_NOT_NULL(pgd_st_find(f, "fc.bias"));
    CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "format"), "pt");
    CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "pgd.kind"), "model");
    CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "arch"), "small");
    pgd_st_close(&f);
    snap_free(&sa);
    snap_free(&sb);
    pgd_net_free(&a);
    pgd_net_free(&b);
}

/* A backbone and a head in one file, under "" and "head.". */
static void test_net_prefixes(void)
{
    pgd_net *bb = small_net(1, 6, 1), *hd = small_net(0, 3, 2), *bb2 = small_net(1, 6, 3), *hd2 = small_net(0, 3, 4);
    CU_ASSERT_FATAL(bb && hd && bb2 && hd2);
    fill_buffers(bb, 1.0f);
    const char *path = pgd_test_path("pair.safetensors");
    pgd_ckpt_net nets[2] = {{bb, "", NULL, NULL}, {hd, "head.", NULL, NULL}};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_ckpt_save(path, nets, 2, NULL, 0, &err), 0);
    pgd_ckpt_net nets2[2] = {{bb2, "", NULL, NULL}, {hd2, "head.", NULL, NULL}};
    CU_ASSERT_EQUAL(pgd_ckpt_load(path, nets2, 2, NULL, &err), 0);
    snap s1, s2;
    snap_take(&s1, bb);
    snap_take(&s2, bb2);
    CU_ASSERT(snap_same(&s1, &s2));
    snap_free(&s1);
    snap_free(&s2);
    snap_take(&s1, hd);
    snap_take(&s2, hd2);
    CU_ASSERT(snap_same(&s1, &s2));
    snap_free(&s1);
    snap_free(&s2);
    pgd_st_file *f = pgd_st_open(path, PGD_ST_MMAP, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL(pgd_st_find(f, "head.fc.weight"));
    CU_ASSERT_PTR_NOT_NULL(pgd_st_find(f, "fc.weight"));
    CU_ASSERT_EQUAL(pgd_st_count(f), 8 + 3);
    pgd_st_close(&f);
    /* The head alone cannot take the pair's file: the backbone's tensors are extra. */
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_ckpt_load(path, &nets2[1], 1, NULL, &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "extra tensor 'bn1.bias' matches no tensor of the nets (8 extra in all)"));
    /* Two nets under the same prefix give the same names. */
    nets[1].prefix = "";
    pgd_err_clear(&e);
    CU_ASSERT_EQUAL(pgd_ckpt_save(pgd_test_path("dup.safetensors"), nets, 2, NULL, 0, &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "safetensors writer: duplicate tensor name 'conv1.weight'");
    CU_ASSERT_EQUAL(access(pgd_test_path("dup.safetensors"), F_OK), -1);
    pgd_net_free(&bb);
    pgd_net_free(&hd);
    pgd_net_free(&bb2);
    pgd_net_free(&hd2);
}

/* Element i of src (dtype from) as a double. */
static double elem_get(const uint8_t *src, pgd_st_dtype from, uint64_t i)
{
    if (from == PGD_ST_I64) {
        int64_t v;
        memcpy(&v, src + 8 * i, 8);
        return (double)v;
    }
    float v;
    memcpy(&v, src + 4 * i, 4);
    return v;
}

static void elem_put(uint8_t *dst, pgd_st_dtype to, uint64_t i, double v)
{
    float f = (float)v;
    uint16_t h;
    int32_t i32 = (int32_t)v;
    int64_t i64 = (int64_t)v;
    switch (to) {
    case PGD_ST_F64: memcpy(dst + 8 * i, &v, 8); break;
    case PGD_ST_F16: h = pgd_f32_to_f16(f); memcpy(dst + 2 * i, &h, 2); break;
    case PGD_ST_BF16: h = pgd_f32_to_bf16(f); memcpy(dst + 2 * i, &h, 2); break;
    case PGD_ST_I32: memcpy(dst + 4 * i, &i32, 4); break;
    case PGD_ST_I64: memcpy(dst + 8 * i, &i64, 8); break;
    default: memcpy(dst + 4 * i, &f, 4); break;
    }
}

/* Copy src to dst changing dtypes: every F32 tensor to floats_as, the tensor `one` to one_as; metadata key
 * set to value (when key is not NULL), and the tensor `drop` left out. */
static int rewrite(const char *src, const char *dst, pgd_st_dtype floats_as, const char *one, pgd_st_dtype one_as,
                   const char *key, const char *value, const char *drop)
{
    pgd_st_file *f = pgd_st_open(src, PGD_ST_READ, NULL);
    pgd_st_writer *w = pgd_st_writer_new(NULL);
    int rc = f && w ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < pgd_st_count(f); i++) {
        const pgd_st_tensor *t = pgd_st_at(f, i);
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        pgd_st_dtype to = one && strcmp(t->name, one) == 0 ? one_as : t->dtype == PGD_ST_F32 ? floats_as : t->dtype;
        uint8_t *out = pgd_st_writer_add_buffer(w, t->name, to, t->ndim, t->shape, NULL);
        for (uint64_t k = 0; out && k < t->count; k++)
            elem_put(out, to, k, elem_get(pgd_st_data(f, t), t->dtype, k));
        rc = out ? 0 : -1;
    }
    for (size_t i = 0; rc == 0 && i < pgd_st_meta_count(f); i++) {
        const char *k = pgd_st_meta_key(f, i);
        rc = pgd_st_writer_meta(w, k, key && strcmp(k, key) == 0 ? value : pgd_st_meta(f, k), NULL);
    }
    if (rc == 0 && key && !pgd_st_meta(f, key))
        rc = pgd_st_writer_meta(w, key, value, NULL);
    if (rc == 0)
        rc = pgd_st_writer_commit(w, dst, NULL);
    pgd_st_writer_free(&w);
    pgd_st_close(&f);
    return rc;
}

/* F64, F16 and BF16 files load, converted to float. */
static void test_net_dtypes(void)
{
    static const pgd_st_dtype dts[] = {PGD_ST_F64, PGD_ST_F16, PGD_ST_BF16};
    pgd_net *a = small_net(1, 5, 1), *b = small_net(1, 5, 2);
    CU_ASSERT_FATAL(a && b);
    fill_buffers(a, 2.0f);
    const char *path = pgd_test_path("f32.safetensors"), *conv = pgd_test_path("conv.safetensors");
    CU_ASSERT_EQUAL_FATAL(save_one(a, path), 0);
    snap sa;
    snap_take(&sa, a);
    for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
        CU_ASSERT_EQUAL_FATAL(rewrite(path, conv, dts[d], NULL, PGD_ST_F32, NULL, NULL, NULL), 0);
        pgd_ckpt_net n = {b, "", NULL, NULL};
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_ckpt_load(conv, &n, 1, NULL, &err), 0);
        snap sb;
        snap_take(&sb, b);
        CU_ASSERT_FATAL(sb.p && sb.b);
        int same = sb.nc == 1 && sb.c[0] == sa.c[0];
        for (size_t i = 0; i < sa.np + sa.nb; i++) {
            float x = i < sa.np ? sa.p[i] : sa.b[i - sa.np], y = i < sa.np ? sb.p[i] : sb.b[i - sa.np];
            float want = dts[d] == PGD_ST_F64 ? x
                       : dts[d] == PGD_ST_F16 ? pgd_f16_to_f32(pgd_f32_to_f16(x)) : pgd_bf16_to_f32(pgd_f32_to_bf16(x));
            same &= memcmp(&want, &y, sizeof y) == 0;
        }
        if (!same)
            printf("\n    %s: values differ\n", pgd_st_dtype_name(dts[d]));
        CU_ASSERT(same);
        snap_free(&sb);
    }
    snap_free(&sa);
    pgd_net_free(&a);
    pgd_net_free(&b);
}

/* Every refused load names the file and the tensor, and leaves the net as it was. */
static void test_net_load_errors(void)
{
    pgd_net *bn5 = small_net(1, 5, 1), *bn10 = small_net(1, 10, 2), *nobn5 = small_net(0, 5, 3);
    CU_ASSERT_FATAL(bn5 && bn10 && nobn5);
    char p_bn5[512], p_nobn5[512], p_x[512];
    snprintf(p_bn5, sizeof p_bn5, "%s", pgd_test_path("bn5.safetensors"));
    snprintf(p_nobn5, sizeof p_nobn5, "%s", pgd_test_path("nobn5.safetensors"));
    snprintf(p_x, sizeof p_x, "%s", pgd_test_path("x.safetensors"));
    CU_ASSERT_EQUAL_FATAL(save_one(bn5, p_bn5), 0);
    CU_ASSERT_EQUAL_FATAL(save_one(nobn5, p_nobn5), 0);
    snap s5; /* what p_bn5 holds */
    snap_take(&s5, bn5);
    static const char *const skip_fc[] = {"fc.", NULL}, *const skip_bn[] = {"bn1.", NULL};
    static const pgd_ckpt_load_opts ignore = {1, NULL}, skip_fc_opts = {0, skip_fc}, skip_bn_opts = {0, skip_bn};
    size_t size = 0;
    uint8_t *bytes = read_bytes(p_bn5, &size);
    CU_ASSERT_FATAL(bytes && size > 16);

    struct {
        const char *file;
        pgd_net *into;
        const pgd_ckpt_load_opts *opts;
        const char *want; /* NULL: loads */
    } cases[] = {
        {p_nobn5, bn5, NULL, "missing tensor 'bn1.weight'"},
        {p_bn5, bn10, NULL, "tensor 'fc.weight': expected shape [10, 4], found [5, 4]"},
        {p_bn5, nobn5, NULL, "extra tensor 'bn1.bias' matches no tensor of the nets (5 extra in all)"},
        {p_bn5, nobn5, &ignore, NULL},
        {p_bn5, bn10, &skip_fc_opts, NULL},
        {p_nobn5, bn10, &skip_bn_opts, "tensor 'fc.weight': expected shape [10, 4], found [5, 4]"},
        {p_nobn5, bn5, &skip_bn_opts, NULL},
        {p_x, bn5, NULL, "tensor 'fc.bias': dtype I32 is not supported (want F32, F16, BF16 or F64)"},
        {p_x, bn5, NULL, "tensor 'bn1.num_batches_tracked': dtype F32 is not supported (want I64)"},
        {p_x, bn5, NULL, "run past the end of the data"},
        {p_x, bn5, NULL, "header does not start with '{'"},
        {p_x, bn5, NULL, "pgd.kind is 'train-state', not a model checkpoint"},
        {p_x, bn5, NULL, "missing tensor 'bn1.running_var'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* the hand-made files of the cases that use p_x */
        if (i == 7)
            CU_ASSERT_EQUAL_FATAL(rewrite(p_bn5, p_x, PGD_ST_F32, "fc.bias", PGD_ST_I32, NULL, NULL, NULL), 0);
        if (i == 8)
            CU_ASSERT_EQUAL_FATAL(rewrite(p_bn5, p_x, PGD_ST_F32, "bn1.num_batches_tracked", PGD_ST_F32, NULL,
                                          NULL, NULL), 0);
        if (i == 9)
            CU_ASSERT_EQUAL_FATAL(write_bytes(p_x, bytes, size - 3), 0);
        if (i == 10) {
            bytes[8] = 'x';
            CU_ASSERT_EQUAL_FATAL(write_bytes(p_x, bytes, size), 0);
        }
        if (i == 11)
            CU_ASSERT_EQUAL_FATAL(rewrite(p_bn5, p_x, PGD_ST_F32, NULL, PGD_ST_F32, "pgd.kind", "train-state", NULL),
                                  0);
        if (i == 12)
            CU_ASSERT_EQUAL_FATAL(rewrite(p_bn5, p_x, PGD_ST_F32, NULL, PGD_ST_F32, NULL, NULL, "bn1.running_var"), 0);
        snap before, after;
        snap_take(&before, cases[i].into);
        pgd_ckpt_net n = {cases[i].into, "", NULL, NULL};
        pgd_err err = PGD_ERR_INIT;
        int rc = pgd_ckpt_load(cases[i].file, &n, 1, cases[i].opts, &err);
        snap_take(&after, cases[i].into);
        if (cases[i].want) {
            char want[700];
            snprintf(want, sizeof want, "%s: %s", cases[i].file, cases[i].want);
            int ok = rc == -1 && (strcmp(err.msg, want) == 0 || (i == 9 && strstr(err.msg, cases[i].want)));
            if (!ok)
                printf("\n    case %zu: got '%s', want '%s'", i, err.msg, want);
            CU_ASSERT(ok);
            CU_ASSERT(snap_same(&before, &after)); /* nothing written */
        } else {
            if (rc)
                printf("\n    case %zu: %s", i, err.msg);
            CU_ASSERT_EQUAL(rc, 0);
        }
        snap_free(&before);
        snap_free(&after);
    }
    /* After the skip load (case 4), bn10 holds p_bn5's conv and bn but its own fc. */
    snap s10;
    snap_take(&s10, bn10);
    const pgd_tensor_info *conv = pgd_net_tensor(bn10, pgd_net_find(bn10, "conv1.weight"));
    CU_ASSERT_FATAL(conv && s5.p && s10.p);
    CU_ASSERT_EQUAL(memcmp(s5.p + conv->offset, s10.p + conv->offset, conv->count * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(s5.b, s10.b, s5.nb * sizeof(float)), 0);
    snap_free(&s5);
    snap_free(&s10);
    free(bytes);
    pgd_net_free(&bn5);
    pgd_net_free(&bn10);
    pgd_net_free(&nobn5);
}

/* --- training state ------------------------------------------------------------------------------------- */

/* steps of: forward (train), backward of a fixed dout, optimizer step with the scheduled lr. */
static int train(pgd_net *net, pgd_optim *o, const float *in, const float *dout, int steps)
{
    pgd_err err = PGD_ERR_INIT;
    for (int s = 0; s < steps; s++) {
        if (!pgd_net_forward(net, in, 2, PGD_NET_TRAIN, 100 + (uint64_t)o->step, &err) ||
            pgd_net_backward(net, dout, NULL, &err) != 0 ||
            pgd_optim_step(o, pgd_opt_lr(&o->cfg, o->step + 1), 0.5f, &err) != 0) {
            printf("\n    train: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

static int same_backend_floats(pgd_backend *be, const float *a, const float *b, size_t n)
{
    if (!a || !b)
        return a == b;
    float *x = malloc(n * sizeof *x + 1), *y = malloc(n * sizeof *y + 1);
    int same = x && y;
    if (same) {
        be->ops->download(be, x, a, n * sizeof *x);
        be->ops->download(be, y, b, n * sizeof *y);
        same = memcmp(x, y, n * sizeof *x) == 0;
    }
    free(x);
    free(y);
    return same;
}

/* Train 3 steps, save model and state, train 3 more; a fresh net loading both and training 3 steps ends
 * bit for bit where the first did. */
static void check_resume(pgd_opt_kind kind)
{
    pgd_backend *be = backend();
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    pgd_net *a = small_net(1, 5, 1), *b = small_net(1, 5, 9);
    CU_ASSERT_FATAL(a && b);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(a, 2, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(b, 2, &err), 0);
    pgd_opt_cfg cfg = pgd_opt_defaults();
    cfg.kind = kind;
    cfg.lr = 0.05f;
    cfg.weight_decay = 0.01f;
    cfg.momentum = 0.9f;
    cfg.warmup_steps = 2;
    cfg.total_steps = 20;
    pgd_optim *oa = pgd_optim_new(a, &cfg, &err), *ob = pgd_optim_new(b, &cfg, &err);
    CU_ASSERT_FATAL(oa && ob);
    float hin[2 * 3 * 8 * 8], hdout[2 * 5];
    pgd_rng r;
    pgd_rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof hin / sizeof *hin; i++)
        hin[i] = (float)pgd_rng_normal(&r);
    for (size_t i = 0; i < sizeof hdout / sizeof *hdout; i++)
        hdout[i] = (float)pgd_rng_normal(&r);
    float *in = be->ops->alloc(be, sizeof hin), *dout = be->ops->alloc(be, sizeof hdout);
    CU_ASSERT_FATAL(in && dout);
    be->ops->upload(be, in, hin, sizeof hin);
    be->ops->upload(be, dout, hdout, sizeof hdout);

    CU_ASSERT_EQUAL_FATAL(train(a, oa, in, dout, 3), 0);
    pgd_ckpt_state st = {.opt = oa->cfg, .step = oa->step, .epoch = 4, .batch = 17, .inner = 2,
                         .seed = 0xFEDCBA9876543210ull, .n_rng = 2};
    pgd_rng_seed(&st.rng[0], 11);
    st.rng[1] = pgd_rng_split(&st.rng[0], 3);
    pgd_ckpt_net na = {a, "", oa->m, oa->v}, nb = {b, "", ob->m, ob->v};
    const char *model = pgd_test_path("resume.safetensors"), *state = pgd_test_path("resume.state.safetensors");
    CU_ASSERT_EQUAL_FATAL(pgd_ckpt_save(model, &na, 1, NULL, 0, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_ckpt_state_save(state, &na, 1, &st, &err), 0);
    CU_ASSERT_EQUAL_FATAL(train(a, oa, in, dout, 3), 0);

    pgd_ckpt_state got;
    memset(&got, 0xAB, sizeof got);
    CU_ASSERT_EQUAL_FATAL(pgd_ckpt_load(model, &nb, 1, NULL, &err), 0);
    if (pgd_ckpt_state_load(state, &nb, 1, &got, &err) != 0)
        printf("\n    %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(err.code, PGD_OK);
    CU_ASSERT_EQUAL(got.opt.kind, kind);
    CU_ASSERT(got.opt.lr == cfg.lr && got.opt.beta1 == cfg.beta1 && got.opt.beta2 == cfg.beta2);
    CU_ASSERT(got.opt.eps == cfg.eps && got.opt.weight_decay == cfg.weight_decay);
    CU_ASSERT(got.opt.momentum == cfg.momentum && got.opt.warmup_steps == 2 && got.opt.total_steps == 20);
    CU_ASSERT(got.step == 3 && got.epoch == 4 && got.batch == 17 && got.inner == 2);
    CU_ASSERT(got.seed == 0xFEDCBA9876543210ull && got.n_rng == 2);
    CU_ASSERT_EQUAL(memcmp(got.rng, st.rng, 2 * sizeof *st.rng), 0);
    ob->cfg = got.opt;
    ob->step = got.step;
    CU_ASSERT_EQUAL_FATAL(train(b, ob, in, dout, 3), 0);

    snap sa, sb;
    snap_take(&sa, a);
    snap_take(&sb, b);
    CU_ASSERT(snap_same(&sa, &sb));
    size_t np = pgd_net_param_count(a);
    CU_ASSERT(same_backend_floats(be, oa->m, ob->m, np));
    CU_ASSERT(same_backend_floats(be, oa->v, ob->v, np));
    CU_ASSERT_EQUAL(oa->step, ob->step);
    snap_free(&sa);
    snap_free(&sb);

    /* The state file's tensors are named after the moments. */
    pgd_st_file *f = pgd_st_open(state, PGD_ST_READ, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL(pgd_st_find(f, kind == PGD_OPT_SGD ? "momentum.fc.weight" : "v.conv1.weight"));
    CU_ASSERT_EQUAL(pgd_st_count(f), kind == PGD_OPT_SGD ? 5 : 10); /* conv1.weight, bn1 x2, fc x2 */
    CU_ASSERT_STRING_EQUAL(pgd_st_meta(f, "optimizer"), kind == PGD_OPT_SGD ? "sgd" : "adamw");
    pgd_st_close(&f);
    be->ops->free(be, in);
    be->ops->free(be, dout);
    pgd_optim_free(&oa);
    pgd_optim_free(&ob);
    pgd_net_free(&a);
    pgd_net_free(&b);
}

static void test_state_resume_adamw(void)
{
    check_resume(PGD_OPT_ADAMW);
}

static void test_state_resume_sgd(void)
{
    check_resume(PGD_OPT_SGD);
}

/* Refused state files name what is wrong; st and the moments stay as they were. */
static void test_state_errors(void)
{
    pgd_backend *be = backend();
    pgd_net *a = small_net(1, 5, 1), *other = small_net(0, 5, 2);
    CU_ASSERT_FATAL(be && a && other);
    pgd_err err = PGD_ERR_INIT;
    pgd_opt_cfg cfg = pgd_opt_defaults();
    pgd_optim *o = pgd_optim_new(a, &cfg, &err), *o2 = pgd_optim_new(other, &cfg, &err);
    CU_ASSERT_FATAL(o && o2);
    pgd_ckpt_state st = {.opt = cfg, .step = 7, .n_rng = 1};
    pgd_rng_seed(&st.rng[0], 1);
    pgd_ckpt_net n = {a, "", o->m, o->v};
    char state[512], model[512], x[512];
    snprintf(state, sizeof state, "%s", pgd_test_path("s.safetensors"));
    snprintf(model, sizeof model, "%s", pgd_test_path("m.safetensors"));
    snprintf(x, sizeof x, "%s", pgd_test_path("sx.safetensors"));
    CU_ASSERT_EQUAL_FATAL(pgd_ckpt_state_save(state, &n, 1, &st, &err), 0);
    CU_ASSERT_EQUAL_FATAL(save_one(a, model), 0);
    pgd_ckpt_net no_v = {a, "", o->m, NULL}, wrong = {other, "", o2->m, o2->v}, pre = {a, "bb.", o->m, o->v};
    struct {
        const char *file;
        const pgd_ckpt_net *n;
        const char *key, *value; /* metadata changed in a copy (x) */
        const char *want;
    } cases[] = {
        {model, &n, NULL, NULL, "not a training-state file (pgd.kind is 'model')"},
        {state, &no_v, NULL, NULL, "adam state needs a v buffer for net ''"},
        {state, &wrong, NULL, NULL, "extra tensor 'm.bn1.bias' matches no tensor of the nets (4 extra in all)"},
        {state, &pre, NULL, NULL, "missing tensor 'm.bb.conv1.weight'"},
        {x, &n, "step", "7x", "metadata 'step': '7x' is not an integer"},
        {x, &n, "seed", "-1", "metadata 'seed': '-1' is not an unsigned integer"},
        {x, &n, "lr", "nan", "metadata 'lr': 'nan' is not a finite number"},
        {x, &n, "optimizer", "lion", "metadata 'optimizer': 'lion' is not adam, adamw or sgd"},
        {x, &n, "rng.0", "abc", "metadata 'rng.0': 'abc' is not 64 hex digits"},
        {x, &n, "rng.count", "9", "metadata 'rng.count': 9 is not in 0..8"},
        {x, &n, "rng.count", "2", "metadata 'rng.1' is missing"},
        {x, &n, "pgd.version", "2", "training-state version '2' is not supported (this build reads 1)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (cases[i].key)
            CU_ASSERT_EQUAL_FATAL(rewrite(state, x, PGD_ST_F32, NULL, PGD_ST_F32, cases[i].key, cases[i].value,
                                          NULL), 0);
        pgd_ckpt_state got, before;
        memset(&got, 0x5C, sizeof got);
        before = got;
        pgd_err e = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_ckpt_state_load(cases[i].file, cases[i].n, 1, &got, &e), -1);
        char want[700];
        snprintf(want, sizeof want, "%s: %s", cases[i].file, cases[i].want);
        if (strcmp(e.msg, want) != 0)
            printf("\n    case %zu: got '%s', want '%s'", i, e.msg, want);
        CU_ASSERT_STRING_EQUAL(e.msg, want);
        CU_ASSERT_EQUAL(memcmp(&got, &before, sizeof got), 0);
    }
    pgd_err e = PGD_ERR_INIT;
    st.n_rng = 9;
    CU_ASSERT_EQUAL(pgd_ckpt_state_save(x, &n, 1, &st, &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "9 generator states (at most 8)"));
    pgd_optim_free(&o);
    pgd_optim_free(&o2);
    pgd_net_free(&a);
    pgd_net_free(&other);
}

static const pgd_test_case cases[] = {
    {"json_values", test_json_values},
    {"json_limits", test_json_limits},
    {"json_bad", test_json_bad},
    {"read_handmade", test_read_handmade},
    {"write_layout", test_write_layout},
    {"round_trip_dtypes", test_round_trip_dtypes},
    {"round_trip_empty", test_round_trip_empty},
    {"bad_headers", test_bad_headers},
    {"bad_lengths", test_bad_lengths},
    {"writer_errors", test_writer_errors},
    {"atomic_commit", test_atomic_commit},
    {"net_round_trip", test_net_round_trip},
    {"net_prefixes", test_net_prefixes},
    {"net_dtypes", test_net_dtypes},
    {"net_load_errors", test_net_load_errors},
    {"state_resume_adamw", test_state_resume_adamw},
    {"state_resume_sgd", test_state_resume_sgd},
    {"state_errors", test_state_errors},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    int rc = pgd_test_main("safetensors", cases, argc, argv);
    pgd_backend_free(&g_be);
    return rc;
}
