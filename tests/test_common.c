/* test_common.c: errors, logging, JSON escaping, CRC-32C and half-float conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/file.h"
#include "common/half.h"
#include "common/json.h"
#include "common/log.h"
#include "cunit_util.h"

static int raise_two(pgd_err *err)
{
    pgd_fail(err, PGD_EFORMAT, "first %d", 1);
    return pgd_fail(err, PGD_EIO, "second");
}

static void test_err_first_wins(void)
{
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(raise_two(&err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    CU_ASSERT_STRING_EQUAL(err.msg, "first 1");
    CU_ASSERT_PTR_NOT_NULL(strstr(err.file, "test_common.c"));
    CU_ASSERT(err.line > 0);
    pgd_err_prefix(&err, "manifest %s: ", "a.csv");
    CU_ASSERT_STRING_EQUAL(err.msg, "manifest a.csv: first 1");
    CU_ASSERT_STRING_EQUAL(pgd_code_name(err.code), "EFORMAT");
    pgd_err_clear(&err);
    CU_ASSERT_FALSE(pgd_err_is_set(&err));
    CU_ASSERT_EQUAL(raise_two(NULL), -1); /* NULL is allowed */
}

static void test_err_errno(void)
{
    pgd_err err = PGD_ERR_INIT;
    FILE *f = fopen("/nonexistent/dir/x", "r");
    CU_ASSERT_PTR_NULL(f);
    pgd_fail_errno(&err, pgd_code_from_errno(2), "open %s", "/nonexistent/dir/x");
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    CU_ASSERT_EQUAL(err.sys_errno, 2);
    CU_ASSERT_STRING_EQUAL(err.msg, "open /nonexistent/dir/x: No such file or directory");
}

static char *read_all(FILE *f)
{
    long n = ftell(f);
    rewind(f);
    char *buf = calloc(1, (size_t)n + 1);
    CU_ASSERT_EQUAL(fread(buf, 1, (size_t)n, f), (size_t)n);
    return buf;
}

static void test_log_text_and_json(void)
{
    FILE *f = tmpfile();
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    pgd_log_set_stream(f);
    unsetenv("PGD_LOG_LEVEL");
    unsetenv("PGD_LOG_JSON");
    pgd_log_init("tester", PGD_LOG_INFO, 0);
    pgd_debug("hidden %d", 1);
    pgd_info("hello %s", "world");
    pgd_log_init("tester", PGD_LOG_INFO, 1);
    pgd_warn("quote \" and\nnewline");
    pgd_err err = PGD_ERR_INIT;
    pgd_fail(&err, PGD_ECORRUPT, "slot 3 bad");
    pgd_log_err(&err);
    pgd_log_set_stream(NULL);
    char *out = read_all(f);
    fclose(f);
    CU_ASSERT_PTR_NULL(strstr(out, "hidden"));
    char want[64];
    snprintf(want, sizeof want, "INFO  tester[%d] hello world (test_common.c:", (int)getpid());
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"level\":\"warn\",\"role\":\"tester\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"msg\":\"quote \\\" and\\nnewline\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"msg\":\"slot 3 bad [ECORRUPT]\""));
    /* Exactly 3 lines: every line ends with one newline. */
    int lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    CU_ASSERT_EQUAL(lines, 3);
    free(out);
    pgd_log_level lv;
    CU_ASSERT_EQUAL(pgd_log_level_parse("WARN", &lv), 0);
    CU_ASSERT_EQUAL(lv, PGD_LOG_WARN);
    CU_ASSERT_EQUAL(pgd_log_level_parse("loud", &lv), -1);
    pgd_log_init("tester", PGD_LOG_WARN, 0);
}

static void test_json_escape(void)
{
    char buf[64];
    CU_ASSERT_EQUAL(pgd_json_escape(buf, sizeof buf, "a\"b\\c\x01"), 15);
    CU_ASSERT_STRING_EQUAL(buf, "\"a\\\"b\\\\c\\u0001\"");
    char small[5];
    CU_ASSERT_EQUAL(pgd_json_escape(small, sizeof small, "abcdef"), 8);
    CU_ASSERT_STRING_EQUAL(small, "\"abc");
}

static void test_crc32c_vectors(void)
{
    CU_ASSERT_EQUAL(pgd_crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(pgd_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(pgd_crc32c(0, "", 0), 0u);
    unsigned char zeros[32] = {0}, ones[32];
    memset(ones, 0xFF, sizeof ones);
    CU_ASSERT_EQUAL(pgd_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    CU_ASSERT_EQUAL(pgd_crc32c(0, ones, 32), 0x62A8AB43u);
    /* Incremental == one shot. */
    CU_ASSERT_EQUAL(pgd_crc32c(pgd_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void test_crc32c_hw_matches_sw(void)
{
    enum { N = 20000 }; /* past several rounds of the three-lane hardware loop */
    unsigned char *buf = malloc(N + 8);
    for (int i = 0; i < N + 8; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 3));
    for (int off = 0; off < 8; off++)
        for (int len = 0; len < N; len += 1 + len / 7)
            CU_ASSERT_EQUAL(pgd_crc32c(7, buf + off, (size_t)len), pgd_crc32c_sw(7, buf + off, (size_t)len));
    free(buf);
}

static void test_half_known_values(void)
{
    CU_ASSERT_EQUAL(pgd_f32_to_f16(1.0f), 0x3C00);
    CU_ASSERT_EQUAL(pgd_f32_to_f16(-2.0f), 0xC000);
    CU_ASSERT_EQUAL(pgd_f32_to_f16(65504.0f), 0x7BFF);
    CU_ASSERT_EQUAL(pgd_f32_to_f16(65520.0f), 0x7C00);        /* rounds up to Inf */
    CU_ASSERT_EQUAL(pgd_f32_to_f16(5.9604645e-8f), 0x0001);   /* smallest subnormal */
    CU_ASSERT_EQUAL(pgd_f32_to_f16(2.9802322e-8f), 0x0000);   /* half of it: tie to even (0) */
    CU_ASSERT_EQUAL(pgd_f32_to_f16(1.0f + 0x1p-11f), 0x3C00); /* tie to even, down */
    CU_ASSERT_EQUAL(pgd_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02); /* tie to even, up */
    CU_ASSERT_EQUAL(pgd_f32_to_f16(INFINITY), 0x7C00);
    CU_ASSERT((pgd_f32_to_f16(NAN) & 0x7C00) == 0x7C00 && (pgd_f32_to_f16(NAN) & 0x3FF));
    CU_ASSERT_EQUAL(pgd_f32_to_bf16(1.0f), 0x3F80);
    CU_ASSERT_EQUAL(pgd_f32_to_bf16(1.0f + 0x1p-8f), 0x3F80); /* tie to even */
    CU_ASSERT_EQUAL(pgd_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);
    CU_ASSERT(isnan(pgd_bf16_to_f32(pgd_f32_to_bf16(NAN))));
    CU_ASSERT_EQUAL(pgd_bf16_to_f32(0xC040), -3.0f);
}

static void test_half_round_trip_all(void)
{
    /* Every f16 value converts to f32 and back unchanged (NaNs stay NaN). */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pgd_f16_to_f32((uint16_t)h);
        uint16_t back = pgd_f32_to_f16(f);
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF))
            bad += !isnan(f);
        else
            bad += back != h;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* Conversion error is within half an ulp for random floats in range. */
    float v[4] = {0.1f, -3.14159f, 1000.5f, 1e-5f};
    uint16_t h[4];
    float r[4];
    pgd_f32_to_f16_n(h, v, 4);
    pgd_f16_to_f32_n(r, h, 4);
    for (int i = 0; i < 4; i++)
        CU_ASSERT(fabsf(r[i] - v[i]) <= fabsf(v[i]) * 0x1p-11f + 0x1p-25f);
    pgd_f32_to_bf16_n(h, v, 4);
    pgd_bf16_to_f32_n(r, h, 4);
    for (int i = 0; i < 4; i++)
        CU_ASSERT(fabsf(r[i] - v[i]) <= fabsf(v[i]) * 0x1p-8f);
}

static void test_file_read(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/f.txt", pgd_test_tmpdir());
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (int i = 0; i < 10000; i++) /* 50000 bytes: several buffer growths */
        fputs("abcd\n", f);
    fclose(f);
    char *text = NULL;
    size_t len = 0;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_file_read(path, 1 << 20, &text, &len, &err), 0);
    CU_ASSERT_EQUAL(len, 50000u);
    CU_ASSERT_EQUAL(text[len], 0);
    CU_ASSERT_EQUAL(memcmp(text + 49995, "abcd\n", 5), 0);
    free(text);
    CU_ASSERT_EQUAL(pgd_file_read(path, 50000, &text, &len, &err), 0); /* exactly max is fine */
    free(text);
    CU_ASSERT_EQUAL(pgd_file_read(path, 49999, &text, &len, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "larger than 49999 bytes"));
    CU_ASSERT_PTR_NULL(text);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_file_read("/nonexistent/x.csv", 100, &text, &len, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    CU_ASSERT_STRING_EQUAL(err.msg, "open /nonexistent/x.csv: No such file or directory");
}

int main(int argc, char **argv)
{
    static const pgd_test_case cases[] = {
        {"err_first_wins", test_err_first_wins},
        {"err_errno", test_err_errno},
        {"log_text_and_json", test_log_text_and_json},
        {"json_escape", test_json_escape},
        {"crc32c_vectors", test_crc32c_vectors},
        {"crc32c_hw_matches_sw", test_crc32c_hw_matches_sw},
        {"half_known_values", test_half_known_values},
        {"half_round_trip_all", test_half_round_trip_all},
        {"file_read", test_file_read},
        {NULL, NULL},
    };
    return pgd_test_main("common", cases, argc, argv);
}
