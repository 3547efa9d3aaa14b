/* test_npy_png.c: .npy writing and parsing (good files and a table of broken ones), PNG round trips, the
 * heatmap renderer and its colour map. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cunit_util.h"
#include "half.h"
#include "npy.h"
#include "png.h"

static const char *tmp_path(const char *file)
{
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 512, "%s/%s", pgd_test_tmpdir(), file);
    return b;
}

/* The whole file as bytes (malloc'd), its length in *len. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

static void test_npy_f32_roundtrip_and_header(void)
{
    const char *path = tmp_path("a.npy");
    float v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (float)i * 0.25f - 3.0f;
    size_t shape[3] = {2, 3, 4};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_write(path, PGD_NPY_F32, shape, 3, v, &err), 0);
    size_t len = 0;
    unsigned char *raw = slurp(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
    CU_ASSERT_EQUAL(len, 128 + sizeof v);
    CU_ASSERT_EQUAL(memcmp(raw, "\x93NUMPY\x01\x00", 8), 0);
    CU_ASSERT_EQUAL(raw[8] | raw[9] << 8, 118);
    static const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }";
    CU_ASSERT_EQUAL(memcmp(raw + 10, dict, sizeof dict - 1), 0);
    CU_ASSERT_EQUAL(raw[127], '\n');
    CU_ASSERT_EQUAL(raw[126], ' ');
    CU_ASSERT_EQUAL(memcmp(raw + 128, v, sizeof v), 0);
    free(raw);

    pgd_npy a;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_read(path, &a, &err), 0);
    CU_ASSERT_EQUAL(a.dtype, PGD_NPY_F32);
    CU_ASSERT_EQUAL(a.ndim, 3);
    CU_ASSERT(a.shape[0] == 2 && a.shape[1] == 3 && a.shape[2] == 4);
    CU_ASSERT_EQUAL(a.count, 24);
    CU_ASSERT_EQUAL(memcmp(a.data, v, sizeof v), 0);
    pgd_npy_free(&a);
    CU_ASSERT_PTR_NULL(a.data);
    pgd_npy_free(NULL);
}

static void test_npy_f16_u8_ranks(void)
{
    pgd_err err = PGD_ERR_INIT;
    uint16_t h[5];
    for (int i = 0; i < 5; i++)
        h[i] = pgd_f32_to_f16((float)i - 1.5f);
    size_t s1[1] = {5};
    CU_ASSERT_EQUAL(pgd_npy_write(tmp_path("h.npy"), PGD_NPY_F16, s1, 1, h, &err), 0);
    pgd_npy a;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_read(tmp_path("h.npy"), &a, &err), 0);
    CU_ASSERT(a.dtype == PGD_NPY_F16 && a.ndim == 1 && a.shape[0] == 5 && a.count == 5);
    CU_ASSERT_EQUAL(memcmp(a.data, h, sizeof h), 0);
    pgd_npy_free(&a);

    uint8_t px[6] = {0, 1, 2, 253, 254, 255};
    size_t s2[2] = {3, 2};
    CU_ASSERT_EQUAL(pgd_npy_write(tmp_path("u.npy"), PGD_NPY_U8, s2, 2, px, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_npy_read(tmp_path("u.npy"), &a, &err), 0);
    CU_ASSERT(a.dtype == PGD_NPY_U8 && a.ndim == 2 && a.count == 6);
    CU_ASSERT_EQUAL(memcmp(a.data, px, 6), 0);
    pgd_npy_free(&a);

    float one = 7.0f;
    CU_ASSERT_EQUAL(pgd_npy_write(tmp_path("s.npy"), PGD_NPY_F32, NULL, 0, &one, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_npy_read(tmp_path("s.npy"), &a, &err), 0);
    CU_ASSERT(a.ndim == 0 && a.count == 1 && ((float *)a.data)[0] == 7.0f);
    pgd_npy_free(&a);

    size_t s0[2] = {0, 4}; /* an empty array */
    CU_ASSERT_EQUAL(pgd_npy_write(tmp_path("e.npy"), PGD_NPY_F32, s0, 2, NULL, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_npy_read(tmp_path("e.npy"), &a, &err), 0);
    CU_ASSERT(a.ndim == 2 && a.count == 0);
    pgd_npy_free(&a);
    CU_ASSERT_EQUAL(err.code, PGD_OK);

    char pre[256];
    size_t n = pgd_npy_preamble(pre, sizeof pre, PGD_NPY_U8, s1, 1);
    CU_ASSERT_EQUAL(n, 128);
    CU_ASSERT_PTR_NOT_NULL(strstr(pre + 10, "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }"));
    CU_ASSERT_EQUAL(pgd_npy_preamble(pre, 64, PGD_NPY_U8, s1, 1), 0); /* does not fit */
    CU_ASSERT_EQUAL(pgd_npy_preamble(pre, sizeof pre, PGD_NPY_U8, s1, 9), 0);
}

/* Build a preamble around dict (version major, 16- or 32-bit length) into buf; returns its length. */
static size_t make_npy(unsigned char *buf, int major, const char *dict, size_t claimed_extra)
{
    size_t dl = strlen(dict), start = major == 1 ? 10 : 12, hlen = dl + claimed_extra;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)(hlen & 0xFF);
    buf[9] = (unsigned char)(hlen >> 8);
    if (major != 1) {
        buf[10] = (unsigned char)(hlen >> 16);
        buf[11] = (unsigned char)(hlen >> 24);
    }
    memcpy(buf + start, dict, dl);
    return start + dl;
}

static void test_npy_parse_table(void)
{
    const struct {
        int major;
        const char *dict;
        size_t extra;
        const char *expect; /* NULL: parses */
    } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 0, NULL},
        {2, "{\"shape\": (7,), \"fortran_order\": False, \"descr\": \"<f2\"}", 0, NULL},
        {3, "{'descr':'|u1','fortran_order':False,'shape':(4L,5)}   ", 0, NULL},
        {4, "{}", 0, "format version 4.0 not supported"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 40, "header of 97 bytes, only 57 present"},
        {1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 0, "dtype '>f4' not supported"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 0, "dtype '<f8' not supported"},
        {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 0, "fortran_order True is not supported"},
        {1, "{'descr': '<f4', 'fortran_order': False, }", 0, "header has no 'shape' key"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'foo': 1}", 0, "unknown key 'foo'"},
        {1, "{'descr': '<f4', 'descr': '<f4'}", 0, "repeated key 'descr'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x)}", 0, "expected a dimension"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", 0, "more than 8 dimensions"},
        {1, "{'descr': '<f4", 0, "unterminated string"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", 0, "text after the closing '}'"},
        {1, "{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,)}", 0, "header column 35: expected True or False"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", 0, "expected ',' or ')' in the shape"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 0, "dimension too large"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 0, "shape overflows"},
        {1, "'descr': '<f4'", 0, "header column 1: expected '{'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned char buf[512];
        size_t len = make_npy(buf, cases[i].major, cases[i].dict, cases[i].extra);
        pgd_err err = PGD_ERR_INIT;
        pgd_npy a;
        size_t off = 0;
        int rc = pgd_npy_parse("t.npy", buf, len, &a, &off, &err);
        if (!cases[i].expect) {
            CU_ASSERT_EQUAL(rc, 0);
            CU_ASSERT_EQUAL(off, len);
            if (rc != 0)
                printf("\n    case %zu: unexpected error '%s'", i, err.msg);
            continue;
        }
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
        if (!strstr(err.msg, cases[i].expect) || strncmp(err.msg, "npy t.npy: ", 11) != 0) {
            printf("\n    case %zu: got '%s', expected '%s'", i, err.msg, cases[i].expect);
            CU_FAIL("error text");
        }
    }
    /* the parsed values of the good cases */
    unsigned char buf[256];
    size_t len = make_npy(buf, 3, "{'descr':'|u1','fortran_order':False,'shape':(4L,5)}", 0), off;
    pgd_npy a;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_parse("t", buf, len, &a, &off, NULL), 0);
    CU_ASSERT(a.dtype == PGD_NPY_U8 && a.ndim == 2 && a.shape[0] == 4 && a.shape[1] == 5 && a.count == 20);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_npy_parse("t", "\x93NUMP", 6, &a, &off, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bad magic"));
}

static void test_npy_read_errors(void)
{
    float v[6] = {1, 2, 3, 4, 5, 6};
    size_t shape[2] = {2, 3};
    const char *path = tmp_path("t.npy");
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_write(path, PGD_NPY_F32, shape, 2, v, &err), 0);
    CU_ASSERT_EQUAL(truncate(path, 128 + 20), 0);
    pgd_npy a;
    CU_ASSERT_EQUAL(pgd_npy_read(path, &a, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "20 bytes of data, the shape needs 24"));
    CU_ASSERT_PTR_NULL(a.data);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(truncate(path, 60), 0);
    CU_ASSERT_EQUAL(pgd_npy_read(path, &a, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "header of 118 bytes, only 50 present"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_npy_read(tmp_path("missing.npy"), &a, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_npy_write(tmp_path("no/such/dir.npy"), PGD_NPY_F32, shape, 2, v, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_npy_write(path, (pgd_npy_dtype)9, shape, 2, v, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
}

static void test_png_roundtrip(void)
{
    const uint8_t rgb[3 * 2 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90};
    const uint8_t gray[4 * 3] = {0, 16, 32, 48, 64, 80, 96, 112, 128, 160, 200, 255};
    pgd_err err = PGD_ERR_INIT;
    const char *p1 = tmp_path("rgb.png"), *p2 = tmp_path("gray.png");
    CU_ASSERT_EQUAL_FATAL(pgd_png_write(p1, rgb, 3, 2, 3, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_png_write(p2, gray, 4, 3, 1, &err), 0);
    size_t len;
    unsigned char *raw = slurp(p1, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
    CU_ASSERT(len > 33 && memcmp(raw, "\x89PNG\r\n\x1a\n", 8) == 0);
    CU_ASSERT_EQUAL(memcmp(raw + 12, "IHDR", 4), 0);
    CU_ASSERT(raw[16] == 0 && raw[17] == 0 && raw[18] == 0 && raw[19] == 3); /* width 3, big-endian */
    CU_ASSERT_EQUAL(raw[23], 2);                                              /* height 2 */
    CU_ASSERT(raw[24] == 8 && raw[25] == 2);                                  /* 8-bit RGB */
    free(raw);
    uint8_t *px;
    uint32_t w, h;
    int ch;
    CU_ASSERT_EQUAL_FATAL(pgd_png_read(p1, &px, &w, &h, &ch, &err), 0);
    CU_ASSERT(w == 3 && h == 2 && ch == 3);
    CU_ASSERT_EQUAL(memcmp(px, rgb, sizeof rgb), 0);
    free(px);
    CU_ASSERT_EQUAL_FATAL(pgd_png_read(p2, &px, &w, &h, &ch, &err), 0);
    CU_ASSERT(w == 4 && h == 3 && ch == 1);
    CU_ASSERT_EQUAL(memcmp(px, gray, sizeof gray), 0);
    free(px);
    CU_ASSERT_EQUAL(err.code, PGD_OK);
}

static void test_png_errors(void)
{
    uint8_t px[4] = {0};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_png_write(tmp_path("x.png"), px, 2, 2, 2, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "need 1 or 3"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_png_write(tmp_path("x.png"), px, 0, 2, 1, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_png_write(tmp_path("nodir/x.png"), px, 2, 2, 1, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    /* not a PNG, and a PNG cut short */
    const char *bad = tmp_path("bad.png");
    FILE *f = fopen(bad, "wb");
    CU_ASSERT_FATAL(f != NULL);
    fputs("GIF89a not a png", f);
    fclose(f);
    uint8_t *out = NULL;
    uint32_t w, h;
    int ch;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_png_read(bad, &out, &w, &h, &ch, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not a PNG file"));
    CU_ASSERT_PTR_NULL(out);
    uint8_t big[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        big[i] = (uint8_t)(i * 7);
    const char *cut = tmp_path("cut.png");
    CU_ASSERT_EQUAL_FATAL(pgd_png_write(cut, big, 64, 64, 1, NULL), 0);
    struct stat st;
    CU_ASSERT_FATAL(stat(cut, &st) == 0);
    CU_ASSERT_EQUAL(truncate(cut, st.st_size / 2), 0);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_png_read(cut, &out, &w, &h, &ch, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    CU_ASSERT_PTR_NULL(out);
}

static void test_colormap(void)
{
    uint8_t c[3];
    pgd_png_colormap(0.0f, c);
    CU_ASSERT(c[0] == 68 && c[1] == 1 && c[2] == 84);
    pgd_png_colormap(1.0f, c);
    CU_ASSERT(c[0] == 253 && c[1] == 231 && c[2] == 37);
    pgd_png_colormap(-5.0f, c);
    CU_ASSERT(c[0] == 68 && c[1] == 1);
    pgd_png_colormap(7.0f, c);
    CU_ASSERT(c[0] == 253 && c[1] == 231);
    pgd_png_colormap(NAN, c);
    CU_ASSERT(c[0] == 128 && c[1] == 128 && c[2] == 128);
    pgd_png_colormap(0.025f, c); /* a quarter of the way from the first anchor to the second */
    CU_ASSERT(c[0] == 69 && c[1] == 10 && c[2] == 92);
    /* perceptual order: brightness (the green channel here) rises with t */
    uint8_t prev = 0;
    for (int i = 0; i <= 100; i++) {
        pgd_png_colormap((float)i / 100.0f, c);
        CU_ASSERT(c[1] >= prev);
        prev = c[1];
    }
}

static void test_heatmap(void)
{
    const float grid[2 * 3] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f}; /* 2 rows of 3 */
    const char *path = tmp_path("heat.png");
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_png_write_heatmap(path, grid, 3, 2, 4, &err), 0);
    uint8_t *px;
    uint32_t w, h;
    int ch;
    CU_ASSERT_EQUAL_FATAL(pgd_png_read(path, &px, &w, &h, &ch, &err), 0);
    CU_ASSERT(w == 12 && h == 8 && ch == 3);
    uint8_t lo[3], hi[3], mid[3];
    pgd_png_colormap(0.0f, lo);
    pgd_png_colormap(1.0f, hi);
    pgd_png_colormap(0.4f, mid); /* value 2 of 0..5 */
    CU_ASSERT_EQUAL(memcmp(px, lo, 3), 0);                            /* top-left cell */
    CU_ASSERT_EQUAL(memcmp(px + (7 * 12 + 11) * 3, hi, 3), 0);        /* bottom-right cell */
    CU_ASSERT_EQUAL(memcmp(px + (3 * 12 + 8) * 3, mid, 3), 0);        /* row 0, cell 2, inner pixel */
    int uniform = 1; /* every pixel of a cell's square has the cell's colour */
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            uniform &= memcmp(px + (y * w + x) * 3, px + ((y / 4 * 4) * w + x / 4 * 4) * 3, 3) == 0;
    CU_ASSERT(uniform);
    free(px);

    /* A constant grid is one colour, not a division by zero; NaN is gray. */
    const float flat[4] = {2.5f, 2.5f, NAN, 2.5f};
    CU_ASSERT_EQUAL_FATAL(pgd_png_write_heatmap(path, flat, 2, 2, 1, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_png_read(path, &px, &w, &h, &ch, &err), 0);
    CU_ASSERT(w == 2 && h == 2);
    CU_ASSERT_EQUAL(memcmp(px, lo, 3), 0);
    CU_ASSERT_EQUAL(memcmp(px + 3, lo, 3), 0);
    CU_ASSERT(px[6] == 128 && px[7] == 128 && px[8] == 128);
    CU_ASSERT_EQUAL(memcmp(px + 9, lo, 3), 0);
    free(px);
    CU_ASSERT_EQUAL(pgd_png_write_heatmap(path, flat, 2, 2, 0, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
}

static const pgd_test_case cases[] = {
    {"npy_f32_roundtrip_and_header", test_npy_f32_roundtrip_and_header},
    {"npy_f16_u8_ranks", test_npy_f16_u8_ranks},
    {"npy_parse_table", test_npy_parse_table},
    {"npy_read_errors", test_npy_read_errors},
    {"png_roundtrip", test_png_roundtrip},
    {"png_errors", test_png_errors},
    {"colormap", test_colormap},
    {"heatmap", test_heatmap},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("npy_png", cases, argc, argv);
}
