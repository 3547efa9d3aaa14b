/* test_zstore.c: the Z-block store: segment lifecycle, header checks, dtypes, sticky errors, the seqlock
 * under concurrent processes, writers killed mid-write, stale segments. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "cunit_util.h"
#include "half.h"
#include "zstore/zstore.h"

/* Byte offsets of the header fields, as docs/formats.md gives them. */
enum { H_MAGIC = 0, H_VERSION = 8, H_M = 16, H_DTYPE = 28, H_SLOTS = 32, H_DATA_OFFSET = 48,
       H_TOTAL = 72, H_CREATOR_PID = 80, H_CREATOR_START = 88, H_CRC = 104, H_CRC_LEN = 104 };

/* A segment name unique to this process and case. */
static const char *seg(const char *tag)
{
    static char names[8][64];
    static int next;
    char *b = names[next++ % 8];
    snprintf(b, 64, "pgdtest-%d-%s", (int)getpid(), tag);
    return b;
}

static int seg_exists(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "/dev/shm/pgd.%s", name);
    return access(path, F_OK) == 0;
}

static int seg_fd(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "/dev/shm/pgd.%s", name);
    return open(path, O_RDWR);
}

static void remove_quietly(const char *name)
{
    pgd_zstore_remove(name, NULL);
}

static void poke(const char *name, off_t off, const void *bytes, size_t len)
{
    int fd = seg_fd(name);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(pwrite(fd, bytes, len, off) == (ssize_t)len);
    close(fd);
}

static void poke_u32(const char *name, off_t off, uint32_t v)
{
    poke(name, off, &v, 4);
}

static void poke_u64(const char *name, off_t off, uint64_t v)
{
    poke(name, off, &v, 8);
}

/* Recompute the header CRC after a deliberate edit, so that the consistency checks get their turn. */
static void fix_crc(const char *name)
{
    unsigned char h[H_CRC_LEN];
    int fd = seg_fd(name);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h);
    uint32_t crc = pgd_crc32c(0, h, sizeof h);
    CU_ASSERT(pwrite(fd, &crc, 4, H_CRC) == 4);
    close(fd);
}

static void fill_block(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = scale * (float)sin((double)i * 0.37) * (float)(1 + i % 7);
}

static void test_create_open_close_remove(void)
{
    const char *name = seg("rt");
    pgd_err err = PGD_ERR_INIT;
    time_t before = time(NULL);
    pgd_zstore *z = pgd_zstore_create(name, 3, 5, 7, 4, PGD_ZDTYPE_F16, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    CU_ASSERT_PTR_NULL(pgd_zstore_error(z));
    CU_ASSERT_EQUAL(pgd_zstore_block_elems(z), 3 * 5 * 7);
    pgd_zstore_info info;
    CU_ASSERT_EQUAL(pgd_zstore_get_info(z, &info, &err), 0);
    CU_ASSERT_STRING_EQUAL(info.name, name);
    CU_ASSERT(info.m == 3 && info.n == 5 && info.s == 7 && info.slots == 4 && info.dtype == PGD_ZDTYPE_F16);
    CU_ASSERT_EQUAL(info.block_bytes, 3 * 5 * 7 * 2);
    CU_ASSERT_EQUAL(info.slot_stride, 4096);
    CU_ASSERT_EQUAL(info.data_offset, 8192);
    CU_ASSERT_EQUAL(info.total_size, 8192 + 4 * 4096);
    CU_ASSERT_EQUAL(info.creator_pid, (uint32_t)getpid());
    CU_ASSERT(info.creator_start > 0);
    CU_ASSERT(info.created_time >= before && info.created_time <= time(NULL));
    CU_ASSERT_EQUAL(info.alive, 1);
    pgd_zstore_close(&z);
    CU_ASSERT_PTR_NULL(z);
    pgd_zstore_close(&z); /* twice is harmless */

    CU_ASSERT_TRUE(seg_exists(name)); /* close never removes */
    z = pgd_zstore_open(name, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    pgd_zstore_info again;
    CU_ASSERT_EQUAL(pgd_zstore_get_info(z, &again, &err), 0);
    CU_ASSERT_EQUAL(memcmp(&info, &again, sizeof info), 0);
    pgd_zstore_close(&z);
    CU_ASSERT_EQUAL(err.code, PGD_OK);

    CU_ASSERT_EQUAL(pgd_zstore_remove(name, &err), 0);
    CU_ASSERT_FALSE(seg_exists(name));
    CU_ASSERT_PTR_NULL(pgd_zstore_open(name, 0, &err));
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no such segment"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_zstore_remove(name, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
}

static void test_create_exclusive(void)
{
    const char *name = seg("excl");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *a = pgd_zstore_create(name, 2, 2, 2, 1, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    pgd_zstore *b = pgd_zstore_create(name, 2, 2, 2, 1, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NULL(b);
    CU_ASSERT_EQUAL(err.code, PGD_EEXIST);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "already exists"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, name));
    /* The failed create left the first segment intact. */
    pgd_err_clear(&err);
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, r[8];
    CU_ASSERT_EQUAL(pgd_zstore_write(a, 0, v, 8, "x", 1, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_read(a, 0, r, 8, NULL, &err), 0);
    pgd_zstore_close(&a);
    remove_quietly(name);
}

static void test_mode_0600(void)
{
    const char *name = seg("mode");
    mode_t old = umask(0);
    pgd_zstore *z = pgd_zstore_create(name, 1, 1, 1, 1, PGD_ZDTYPE_F32, NULL);
    umask(old);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    int fd = seg_fd(name);
    struct stat st;
    CU_ASSERT_FATAL(fd >= 0 && fstat(fd, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    CU_ASSERT_EQUAL(st.st_size, 3 * 4096); /* header page, slot table page, one data page */
    close(fd);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

static void test_create_enospc(void)
{
    struct statvfs vfs;
    CU_ASSERT_FATAL(statvfs("/dev/shm", &vfs) == 0);
    uint64_t fs = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    uint64_t block = 32ull * 32 * 2048 * 4; /* 8 MiB */
    uint64_t slots = fs / block + 2;
    if (slots > UINT32_MAX) {
        pgd_test_skip("/dev/shm too large to overfill with 2^32 slots");
        return;
    }
    const char *name = seg("nospc");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 32, 32, 2048, (uint32_t)slots, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NULL(z);
    CU_ASSERT_EQUAL(err.code, PGD_ENOSPC);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cannot hold"));
    char need[64];
    uint64_t data_offset = 4096 + (slots * 128 + 4095) / 4096 * 4096;
    snprintf(need, sizeof need, "needs %llu bytes", (unsigned long long)(data_offset + slots * block));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, need));
    CU_ASSERT_FALSE(seg_exists(name)); /* the half-made segment is gone */
    pgd_zstore_close(&z);
    remove_quietly(name);
}

/* Bad create arguments, each with the error text expected. */
static void test_create_bad_args(void)
{
    char long_name[PGD_ZSTORE_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    static const char *const bad = "bad/name";
    const struct {
        const char *name;
        uint32_t m, n, s, slots;
        int dtype;
        const char *expect;
    } cases[] = {
        {"", 1, 1, 1, 1, 1, "empty segment name"},
        {bad, 1, 1, 1, 1, 1, "character 4 is not one of"},
        {"white space", 1, 1, 1, 1, 1, "character 6 is not one of"},
        {long_name, 1, 1, 1, 1, 1, "201 characters, at most 200"},
        {"ok", 0, 1, 1, 1, 1, "shape 0x1x1: every dimension must be at least 1"},
        {"ok", 1, 1, 0, 1, 1, "shape 1x1x0"},
        {"ok", 1, 1, 1, 0, 1, "slot count must be at least 1"},
        {"ok", 1, 1, 1, 1, 7, "dtype 7 is not f32 (1), f16 (2) or bf16 (3)"},
        {"ok", UINT32_MAX, UINT32_MAX, UINT32_MAX, 2, 1, "is too large (size overflows)"},
        {"ok", 65536, 65536, 65536, UINT32_MAX, 2, "is too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pgd_err err = PGD_ERR_INIT;
        pgd_zstore *z = pgd_zstore_create(cases[i].name, cases[i].m, cases[i].n, cases[i].s, cases[i].slots,
                                          (pgd_zdtype)cases[i].dtype, &err);
        CU_ASSERT_PTR_NULL(z);
        CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
        if (!strstr(err.msg, cases[i].expect)) {
            printf("\n    case %zu: got '%s', expected '%s'", i, err.msg, cases[i].expect);
            CU_FAIL("error text");
        }
        pgd_zstore_close(&z);
    }
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_zstore_create_owned(seg("owner"), 1, 1, 1, 1, PGD_ZDTYPE_F32, 0x7ffffff0, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "is not a running process"));
    CU_ASSERT_FALSE(seg_exists(seg("owner")));
}

/* A good segment corrupted by hand, one way per case; open must name the problem. */
typedef void (*corrupt_fn)(const char *name, const pgd_zstore_info *info);

static void cor_magic(const char *name, const pgd_zstore_info *info)
{
    (void)info;
    poke(name, H_MAGIC, "PGDZSTOX", 8);
}
static void cor_version(const char *name, const pgd_zstore_info *info)
{
    (void)info;
    poke_u32(name, H_VERSION, 7);
}
static void cor_crc(const char *name, const pgd_zstore_info *info)
{
    poke_u32(name, H_M, info->m + 1); /* no CRC fix */
}
static void cor_size(const char *name, const pgd_zstore_info *info)
{
    (void)info;
    int fd = seg_fd(name);
    CU_ASSERT(fd >= 0 && ftruncate(fd, 4096) == 0);
    close(fd);
}
static void cor_tiny(const char *name, const pgd_zstore_info *info)
{
    (void)info;
    int fd = seg_fd(name);
    CU_ASSERT(fd >= 0 && ftruncate(fd, 100) == 0);
    close(fd);
}
static void cor_data_offset(const char *name, const pgd_zstore_info *info)
{
    poke_u64(name, H_DATA_OFFSET, info->data_offset + 4096);
    fix_crc(name);
}
static void cor_slots(const char *name, const pgd_zstore_info *info)
{
    poke_u32(name, H_SLOTS, info->slots + 1);
    fix_crc(name);
}
static void cor_dtype(const char *name, const pgd_zstore_info *info)
{
    (void)info;
    poke_u32(name, H_DTYPE, 9);
    fix_crc(name);
}
static void cor_total(const char *name, const pgd_zstore_info *info)
{
    poke_u64(name, H_TOTAL, info->total_size * 2);
    fix_crc(name);
}

static void test_open_corrupt_header(void)
{
    const struct {
        const char *tag;
        corrupt_fn fn;
        const char *expect; /* %s: name; %llu: total size */
    } cases[] = {
        {"magic", cor_magic, "zstore pgd.%s: bad magic"},
        {"version", cor_version, "zstore pgd.%s: version 7, this build reads 1"},
        {"crc", cor_crc, "zstore pgd.%s: header crc mismatch (stored 0x"},
        {"size", cor_size, "zstore pgd.%s: size 4096, header says %llu"},
        {"tiny", cor_tiny, "zstore pgd.%s: size 100, smaller than the 4096-byte header"},
        {"dataoff", cor_data_offset, "zstore pgd.%s: header data offset is 12288, expected 8192"},
        {"slots", cor_slots, "zstore pgd.%s: header total size is %llu, expected"},
        {"dtype", cor_dtype, "zstore pgd.%s: dtype 9 is not f32"},
        {"total", cor_total, "zstore pgd.%s: header total size is"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *name = seg(cases[i].tag);
        pgd_err err = PGD_ERR_INIT;
        pgd_zstore *z = pgd_zstore_create(name, 4, 4, 4, 2, PGD_ZDTYPE_F32, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(z);
        pgd_zstore_info info;
        pgd_zstore_get_info(z, &info, &err);
        pgd_zstore_close(&z);
        cases[i].fn(name, &info);
        z = pgd_zstore_open(name, 1, &err);
        CU_ASSERT_PTR_NULL(z);
        CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
        char want[256];
        snprintf(want, sizeof want, cases[i].expect, name, (unsigned long long)info.total_size);
        if (!strstr(err.msg, want)) {
            printf("\n    case %s: got '%s', expected '%s'", cases[i].tag, err.msg, want);
            CU_FAIL("error text");
        }
        /* probe says the same; list shows it as unreadable */
        pgd_err perr = PGD_ERR_INIT;
        pgd_zstore_info pinfo;
        CU_ASSERT_EQUAL(pgd_zstore_probe(name, &pinfo, &perr), -1);
        CU_ASSERT_STRING_EQUAL(perr.msg, err.msg);
        pgd_zstore_close(&z);
        remove_quietly(name);
    }
}

static void test_roundtrip_f32_exact(void)
{
    const char *name = seg("f32");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 5, 6, 33, 3, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    size_t n = pgd_zstore_block_elems(z);
    float *v = malloc(n * sizeof *v), *r = malloc(n * sizeof *r);
    CU_ASSERT_FATAL(v && r);
    fill_block(v, n, 1e-3f);
    v[0] = -0.0f;
    v[1] = 3.4e38f;
    v[2] = 1e-45f; /* subnormal */
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 2, v, n, "slide-042", 5, &err), 0);
    pgd_zslot_info meta;
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 2, r, n, &meta, &err), 0);
    CU_ASSERT_EQUAL(memcmp(v, r, n * sizeof *v), 0);
    CU_ASSERT_EQUAL(meta.state, PGD_ZSLOT_READY);
    CU_ASSERT_STRING_EQUAL(meta.image_id, "slide-042");
    CU_ASSERT_EQUAL(meta.label, 5);
    CU_ASSERT_EQUAL(meta.generation, 1);
    CU_ASSERT_EQUAL(meta.writer_pid, (uint32_t)getpid());
    CU_ASSERT_EQUAL(meta.crc, pgd_crc32c(0, v, n * sizeof *v));
    CU_ASSERT(meta.written_ns > 0);
    /* A second write bumps the generation; another handle sees it. */
    v[7] = 42.0f;
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 2, v, n, "", -3, &err), 0);
    pgd_zstore *ro = pgd_zstore_open(name, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ro);
    CU_ASSERT_EQUAL(pgd_zstore_read(ro, 2, r, n, &meta, &err), 0);
    CU_ASSERT_EQUAL(r[7], 42.0f);
    CU_ASSERT_EQUAL(meta.generation, 2);
    CU_ASSERT_STRING_EQUAL(meta.image_id, "");
    CU_ASSERT_EQUAL(meta.label, -3);
    pgd_zslot_info si;
    CU_ASSERT_EQUAL(pgd_zstore_get_slot(ro, 2, &si, &err), 0);
    CU_ASSERT_EQUAL(si.state, PGD_ZSLOT_READY);
    CU_ASSERT_EQUAL(si.generation, 2);
    CU_ASSERT_EQUAL(si.seq & 0xffffffffu, 4); /* two writes: 0 -> 1 -> 2 -> 3 -> 4 */
    CU_ASSERT_EQUAL(si.seq >> 32, (uint64_t)getpid());
    CU_ASSERT_EQUAL(err.code, PGD_OK);
    free(v);
    free(r);
    pgd_zstore_close(&ro);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

/* Write random values through a half-precision store; each read value must be the rounded value exactly,
 * and within half a unit in the last place (2^-(bits+1) relative) of the original. */
static void roundtrip_half(pgd_zdtype dtype, const char *tag, float (*to)(float), double rel)
{
    const char *name = seg(tag);
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 4, 4, 64, 2, dtype, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    size_t n = pgd_zstore_block_elems(z);
    float *v = malloc(n * sizeof *v), *r = malloc(n * sizeof *r);
    uint16_t *raw = malloc(n * 2);
    CU_ASSERT_FATAL(v && r && raw);
    fill_block(v, n, 3.0f);
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 1, v, n, "h", 0, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, n, NULL, &err), 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i] != to(v[i]) || fabs((double)r[i] - (double)v[i]) > fabs((double)v[i]) * rel + 1e-7)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(pgd_zstore_read_raw(z, 1, raw, n * 2, NULL, &err), 0);
    CU_ASSERT_EQUAL(raw[3], dtype == PGD_ZDTYPE_F16 ? pgd_f32_to_f16(v[3]) : pgd_f32_to_bf16(v[3]));
    CU_ASSERT_EQUAL(err.code, PGD_OK);
    free(v);
    free(r);
    free(raw);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

static float via_f16(float f)
{
    return pgd_f16_to_f32(pgd_f32_to_f16(f));
}

static float via_bf16(float f)
{
    return pgd_bf16_to_f32(pgd_f32_to_bf16(f));
}

static void test_roundtrip_f16(void)
{
    roundtrip_half(PGD_ZDTYPE_F16, "f16", via_f16, 1.0 / 2048);
}

static void test_roundtrip_bf16(void)
{
    roundtrip_half(PGD_ZDTYPE_BF16, "bf16", via_bf16, 1.0 / 256);
}

static void test_sticky_error(void)
{
    const char *name = seg("sticky");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 2, 2, 2, 2, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    float v[8] = {0}, r[8];
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 9, r, 8, NULL, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slot 9 out of range (the segment has 2 slots)"));
    const char *first = pgd_zstore_error(z);
    CU_ASSERT_PTR_NOT_NULL_FATAL(first);
    CU_ASSERT_STRING_EQUAL(first, err.msg);
    /* Every later call fails with the same first error and does nothing. */
    pgd_err e2 = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 0, v, 8, "x", 0, &e2), -1);
    CU_ASSERT_STRING_EQUAL(e2.msg, first);
    pgd_zslot_info si;
    CU_ASSERT_EQUAL(pgd_zstore_get_slot(z, 0, &si, NULL), -1);
    pgd_zstore_info info;
    CU_ASSERT_EQUAL(pgd_zstore_get_info(z, &info, NULL), -1);
    CU_ASSERT_EQUAL(pgd_zstore_set_timeout(z, 5, NULL), -1);
    CU_ASSERT_EQUAL(pgd_zstore_block_elems(z), 0);
    void *p = NULL;
    CU_ASSERT_EQUAL(pgd_zstore_write_begin(z, 1, &p, NULL), -1);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_STRING_EQUAL(pgd_zstore_error(z), first);
    pgd_zstore_close(&z);
    /* The write really did not happen: slot 0 is still empty for a fresh handle. */
    z = pgd_zstore_open(name, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    pgd_err e3 = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 0, r, 8, NULL, &e3), -1);
    CU_ASSERT_EQUAL(e3.code, PGD_EEMPTY);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

/* Misuse of the API, each a sticky EINVAL with its text. */
static void test_sticky_cases(void)
{
    const char *name = seg("misuse");
    pgd_zstore *setup = pgd_zstore_create(name, 2, 2, 2, 2, PGD_ZDTYPE_F32, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(setup);
    float v[8] = {0}, r[8];
    char long_id[80];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    for (int c = 0; c < 6; c++) {
        pgd_err err = PGD_ERR_INIT;
        pgd_zstore *z = pgd_zstore_open(name, c != 1, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(z);
        const char *expect = NULL;
        void *p;
        switch (c) {
        case 0:
            pgd_zstore_write(z, 0, v, 7, "x", 0, &err);
            expect = "7 values given, a block is 2x2x2 = 8";
            break;
        case 1:
            pgd_zstore_write(z, 0, v, 8, "x", 0, &err);
            expect = "opened read-only";
            break;
        case 2:
            pgd_zstore_write(z, 0, v, 8, long_id, 0, &err);
            expect = "is 79 bytes, at most 63 allowed";
            break;
        case 3:
            pgd_zstore_write_end(z, 0, "x", 0, &err);
            expect = "write_end slot 0 without write_begin";
            break;
        case 4:
            pgd_zstore_read(z, 0, r, 4, NULL, &err);
            expect = "room for 4 values, a block is 2x2x2 = 8";
            break;
        case 5:
            pgd_zstore_write_begin(z, 1, &p, NULL);
            pgd_zstore_write_begin(z, 1, &p, &err);
            expect = "already writing it";
            break;
        }
        CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
        if (!strstr(err.msg, expect)) {
            printf("\n    case %d: got '%s', expected '%s'", c, err.msg, expect);
            CU_FAIL("error text");
        }
        CU_ASSERT_PTR_NOT_NULL(pgd_zstore_error(z));
        pgd_zstore_close(&z);
    }
    /* Case 5's slot was held when its handle closed: it reads as aborted now. */
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_zstore_read(setup, 1, r, 8, NULL, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "aborted"));
    pgd_zstore_close(&setup);
    remove_quietly(name);
}

static void test_empty_slot(void)
{
    const char *name = seg("empty");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 2, 2, 2, 2, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, r[8];
    pgd_zslot_info si;
    CU_ASSERT_EQUAL(pgd_zstore_get_slot(z, 1, &si, &err), 0);
    CU_ASSERT_EQUAL(si.state, PGD_ZSLOT_EMPTY);
    CU_ASSERT_EQUAL(si.seq, 0);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, 8, NULL, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EEMPTY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slot 1 is empty"));
    CU_ASSERT_PTR_NULL(pgd_zstore_error(z)); /* an outcome, not a sticky error */
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 1, v, 8, "now", 1, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, 8, NULL, &err), 0);
    CU_ASSERT_EQUAL(r[7], 8.0f);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

static void test_crc_mismatch(void)
{
    const char *name = seg("crc");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 4, 4, 16, 3, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    size_t n = pgd_zstore_block_elems(z);
    float v[256], r[256];
    fill_block(v, n, 1.0f);
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 0, v, n, "a", 0, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 1, v, n, "b", 0, &err), 0);
    pgd_zstore_info info;
    pgd_zstore_get_info(z, &info, &err);
    /* Flip one bit of slot 1's data behind the library's back. */
    off_t at = (off_t)(info.data_offset + info.slot_stride + 37);
    int fd = seg_fd(name);
    unsigned char byte;
    CU_ASSERT_FATAL(fd >= 0 && pread(fd, &byte, 1, at) == 1);
    byte ^= 0x10;
    CU_ASSERT(pwrite(fd, &byte, 1, at) == 1);
    close(fd);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, n, NULL, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slot 1 crc mismatch (stored 0x"));
    CU_ASSERT_PTR_NULL(pgd_zstore_error(z));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 0, r, n, NULL, &err), 0);
    CU_ASSERT_EQUAL(memcmp(v, r, n * sizeof *v), 0);
    /* Rewriting the slot heals it. */
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 1, v, n, "b", 0, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, n, NULL, &err), 0);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

static void test_zero_copy_write(void)
{
    const char *name = seg("zc");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 3, 3, 8, 2, PGD_ZDTYPE_F16, &err);
    pgd_zstore *other = pgd_zstore_open(name, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);
    size_t n = pgd_zstore_block_elems(z);
    void *p = NULL;
    CU_ASSERT_EQUAL(pgd_zstore_write_begin(z, 0, &p, &err), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL((uintptr_t)p % 4096, 0);
    uint16_t *cells = p;
    for (size_t i = 0; i < n; i++)
        cells[i] = pgd_f32_to_f16((float)i * 0.5f);
    /* While it is held: other handles see it as being written, the holder gets EBUSY at once. */
    pgd_zslot_info si;
    CU_ASSERT_EQUAL(pgd_zstore_get_slot(other, 0, &si, &err), 0);
    CU_ASSERT_EQUAL(si.state, PGD_ZSLOT_WRITING);
    CU_ASSERT_EQUAL(si.seq & 1, 1);
    float r[72];
    CU_ASSERT_EQUAL(pgd_zstore_set_timeout(other, 0, &err), 0);
    pgd_err busy = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_zstore_read(other, 0, r, n, NULL, &busy), -1);
    CU_ASSERT_EQUAL(busy.code, PGD_EBUSY);
    pgd_err_clear(&busy);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 0, r, n, NULL, &busy), -1);
    CU_ASSERT_EQUAL(busy.code, PGD_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(busy.msg, "by this handle"));
    CU_ASSERT_EQUAL(pgd_zstore_write_end(z, 0, "zc-1", 9, &err), 0);
    pgd_zslot_info meta;
    CU_ASSERT_EQUAL(pgd_zstore_read(other, 0, r, n, &meta, &err), 0);
    CU_ASSERT_EQUAL(r[5], 2.5f);
    CU_ASSERT_EQUAL(r[n - 1], (float)(n - 1) * 0.5f);
    CU_ASSERT_STRING_EQUAL(meta.image_id, "zc-1");
    CU_ASSERT_EQUAL(meta.label, 9);
    /* abort: the slot reads as corrupt until written again */
    CU_ASSERT_EQUAL(pgd_zstore_write_begin(z, 1, &p, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_write_abort(z, 1, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_get_slot(other, 1, &si, &err), 0);
    CU_ASSERT_EQUAL(si.state, PGD_ZSLOT_ABORTED);
    pgd_err_clear(&busy);
    CU_ASSERT_EQUAL(pgd_zstore_read(other, 1, r, n, NULL, &busy), -1);
    CU_ASSERT_EQUAL(busy.code, PGD_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(busy.msg, "aborted"));
    CU_ASSERT_EQUAL(err.code, PGD_OK);
    pgd_zstore_close(&other);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

/* --- concurrency: one writer and three readers in separate processes ----------------------------------- */

#define MP_SLOTS 2
#define MP_READERS 3
#define MP_MIN_WRITES 20000
#define MP_MAX_WRITES 2000000
#define MP_MIN_ACCEPTED 2000

typedef struct mp_shared {
    _Atomic int ready;
    _Atomic int done;
    _Atomic long accepted[MP_READERS];
    _Atomic long writes;
} mp_shared;

typedef struct mp_counts {
    long accepted, torn, empty, busy, corrupt, other;
} mp_counts;

/* Element i of the block of write number w: exact in float32 (< 2^24). */
static float mp_value(uint32_t w, size_t i)
{
    return (float)((w * 2654435761u + (uint32_t)i * 40503u) & 0xFFFFFFu);
}

static int mp_writer(const char *name, mp_shared *sh)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_open(name, 1, &err);
    if (!z)
        return 1;
    size_t n = pgd_zstore_block_elems(z);
    float *v = malloc(n * sizeof *v);
    if (!v)
        return 1;
    while (atomic_load(&sh->ready) < MP_READERS)
        sched_yield();
    uint32_t w;
    for (w = 0; w < MP_MAX_WRITES; w++) {
        int enough = w >= MP_MIN_WRITES;
        for (int r = 0; enough && r < MP_READERS; r++)
            enough = atomic_load(&sh->accepted[r]) >= MP_MIN_ACCEPTED;
        if (enough)
            break;
        char id[32];
        snprintf(id, sizeof id, "w%u", w);
        if ((w / MP_SLOTS) % 2 == 0) { /* the copying writer */
            for (size_t i = 0; i < n; i++)
                v[i] = mp_value(w, i);
            if (pgd_zstore_write(z, w % MP_SLOTS, v, n, id, (int32_t)w, &err) != 0)
                break;
            continue;
        }
        /* the in-place writer, back to front, so that a reader copying front to back during the write
         * would certainly see a mix */
        void *p;
        if (pgd_zstore_write_begin(z, w % MP_SLOTS, &p, &err) != 0)
            break;
        float *cells = p;
        for (size_t i = n; i-- > 0;)
            cells[i] = mp_value(w, i);
        if (pgd_zstore_write_end(z, w % MP_SLOTS, id, (int32_t)w, &err) != 0)
            break;
    }
    atomic_store(&sh->writes, (long)w);
    atomic_store(&sh->done, 1);
    free(v);
    pgd_zstore_close(&z);
    return err.code != PGD_OK;
}

/* Is an accepted block exactly what write number meta->label put there? */
static int mp_consistent(uint32_t slot, const float *v, size_t n, const pgd_zslot_info *meta)
{
    uint32_t w = (uint32_t)meta->label;
    char id[32];
    snprintf(id, sizeof id, "w%u", w);
    if (w % MP_SLOTS != slot || meta->generation != w / MP_SLOTS + 1 || strcmp(meta->image_id, id) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] != mp_value(w, i))
            return 0;
    return 1;
}

static int mp_reader(const char *name, mp_shared *sh, int me, mp_counts *c)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_open(name, 0, &err);
    if (!z)
        return 1;
    size_t n = pgd_zstore_block_elems(z);
    float *v = malloc(n * sizeof *v);
    if (!v)
        return 1;
    atomic_fetch_add(&sh->ready, 1);
    memset(c, 0, sizeof *c);
    for (uint32_t k = (uint32_t)me; !atomic_load(&sh->done); k++) {
        pgd_zslot_info meta;
        pgd_err_clear(&err);
        uint32_t slot = (k * 7u + (uint32_t)me) % MP_SLOTS;
        if (pgd_zstore_read(z, slot, v, n, &meta, &err) == 0) {
            if (mp_consistent(slot, v, n, &meta)) {
                c->accepted++;
                atomic_fetch_add(&sh->accepted[me], 1);
            } else {
                c->torn++;
            }
        } else if (err.code == PGD_EEMPTY) {
            c->empty++;
        } else if (err.code == PGD_EBUSY) {
            c->busy++;
        } else if (err.code == PGD_ECORRUPT) {
            c->corrupt++;
        } else {
            c->other++;
        }
    }
    free(v);
    pgd_zstore_close(&z);
    return 0;
}

static void test_multiprocess_seqlock(void)
{
    const char *name = seg("mp");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 16, 16, 64, MP_SLOTS, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    mp_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CU_ASSERT_FATAL(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    int pipes[MP_READERS][2];
    pid_t readers[MP_READERS], writer;
    fflush(stdout);
    for (int r = 0; r < MP_READERS; r++) {
        CU_ASSERT_FATAL(pipe(pipes[r]) == 0);
        readers[r] = fork();
        CU_ASSERT_FATAL(readers[r] >= 0);
        if (readers[r] == 0) {
            mp_counts c;
            int rc = mp_reader(name, sh, r, &c);
            if (write(pipes[r][1], &c, sizeof c) != (ssize_t)sizeof c)
                rc = 1;
            _exit(rc);
        }
        close(pipes[r][1]);
    }
    writer = fork();
    CU_ASSERT_FATAL(writer >= 0);
    if (writer == 0)
        _exit(mp_writer(name, sh));
    int status;
    CU_ASSERT(waitpid(writer, &status, 0) == writer && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    atomic_store(&sh->done, 1); /* in case the writer failed before setting it */
    mp_counts sum = {0};
    for (int r = 0; r < MP_READERS; r++) {
        mp_counts c;
        memset(&c, 0, sizeof c);
        CU_ASSERT(read(pipes[r][0], &c, sizeof c) == (ssize_t)sizeof c);
        close(pipes[r][0]);
        CU_ASSERT(waitpid(readers[r], &status, 0) == readers[r] && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CU_ASSERT(c.accepted > 0);
        sum.accepted += c.accepted;
        sum.torn += c.torn;
        sum.empty += c.empty;
        sum.busy += c.busy;
        sum.corrupt += c.corrupt;
        sum.other += c.other;
    }
    printf("\n    multi-process: %ld writes by 1 writer; %d readers: %ld accepted reads, %ld torn reads accepted, "
           "%ld empty, %ld busy, %ld corrupt, %ld other ",
           atomic_load(&sh->writes), MP_READERS, sum.accepted, sum.torn, sum.empty, sum.busy, sum.corrupt, sum.other);
    CU_ASSERT(atomic_load(&sh->writes) >= MP_MIN_WRITES);
    CU_ASSERT(sum.accepted >= MP_READERS);
    CU_ASSERT_EQUAL(sum.torn, 0);
    CU_ASSERT_EQUAL(sum.corrupt, 0);
    CU_ASSERT_EQUAL(sum.other, 0);
    munmap(sh, sizeof *sh);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

/* A writer SIGKILLed halfway through a zero-copy write leaves that slot abandoned, the others usable, and the
 * slot writable again. */
static void test_sigkill_mid_write(void)
{
    const char *name = seg("kill");
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *z = pgd_zstore_create(name, 4, 4, 16, 3, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    size_t n = pgd_zstore_block_elems(z);
    float v[256], r[256];
    fill_block(v, n, 2.0f);
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 0, v, n, "before", 1, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 1, v, n, "old", 2, &err), 0);
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    fflush(stdout);
    pid_t child = fork();
    CU_ASSERT_FATAL(child >= 0);
    if (child == 0) {
        pgd_zstore *w = pgd_zstore_open(name, 1, NULL);
        void *ptr;
        if (!w || pgd_zstore_write_begin(w, 1, &ptr, NULL) != 0)
            _exit(1);
        float *cells = ptr;
        for (size_t i = 0; i < n / 2; i++)
            cells[i] = -1.0f;
        if (write(p[1], "h", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    char c = 0;
    CU_ASSERT_EQUAL(read(p[0], &c, 1), 1);
    close(p[0]);
    CU_ASSERT_EQUAL(c, 'h');
    CU_ASSERT_EQUAL(kill(child, SIGKILL), 0);
    int status;
    CU_ASSERT(waitpid(child, &status, 0) == child && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    pgd_zslot_info si;
    CU_ASSERT_EQUAL(pgd_zstore_get_slot(z, 1, &si, &err), 0);
    CU_ASSERT_EQUAL(si.state, PGD_ZSLOT_ABANDONED);
    CU_ASSERT_EQUAL(si.writer_pid, (uint32_t)child);
    pgd_err rerr = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, n, NULL, &rerr), -1);
    CU_ASSERT_EQUAL(rerr.code, PGD_ECORRUPT); /* at once, not EBUSY after waiting */
    char want[96];
    snprintf(want, sizeof want, "slot 1 was abandoned mid-write by pid %d", (int)child);
    CU_ASSERT_PTR_NOT_NULL(strstr(rerr.msg, want));
    CU_ASSERT_PTR_NULL(pgd_zstore_error(z));
    /* other slots are fine */
    pgd_zslot_info meta;
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 0, r, n, &meta, &err), 0);
    CU_ASSERT_STRING_EQUAL(meta.image_id, "before");
    CU_ASSERT_EQUAL(memcmp(v, r, n * sizeof *v), 0);
    /* and the abandoned slot can be taken over: odd 3 -> 5 -> 6 */
    v[0] = 123.0f;
    CU_ASSERT_EQUAL(pgd_zstore_write(z, 1, v, n, "after", 3, &err), 0);
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, r, n, &meta, &err), 0);
    CU_ASSERT_EQUAL(r[0], 123.0f);
    CU_ASSERT_STRING_EQUAL(meta.image_id, "after");
    CU_ASSERT_EQUAL(meta.generation, 2);
    CU_ASSERT_EQUAL(meta.seq & 0xffffffffu, 6);
    CU_ASSERT_EQUAL(err.code, PGD_OK);
    pgd_zstore_close(&z);
    remove_quietly(name);
}

static void test_stale_probe_reclaim(void)
{
    const char *dead = seg("dead"), *live = seg("live");
    pgd_err err = PGD_ERR_INIT;
    fflush(stdout);
    pid_t child = fork();
    CU_ASSERT_FATAL(child >= 0);
    if (child == 0) {
        pgd_zstore *c = pgd_zstore_create(dead, 2, 2, 2, 1, PGD_ZDTYPE_F32, NULL);
        int made = c != NULL;
        pgd_zstore_close(&c);
        _exit(made ? 0 : 1);
    }
    /* Wait for the exit but leave the child a zombie: a zombie creator counts as gone. */
    siginfo_t si;
    CU_ASSERT(waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT) == 0);
    pgd_zstore_info info;
    CU_ASSERT_EQUAL(pgd_zstore_probe(dead, &info, &err), 0);
    CU_ASSERT_EQUAL(info.creator_pid, (uint32_t)child);
    CU_ASSERT_EQUAL(info.alive, 0);
    int status;
    CU_ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL(pgd_zstore_probe(dead, &info, &err), 0);
    CU_ASSERT_EQUAL(info.alive, 0);
    /* A stale segment still opens, for inspection. */
    pgd_zstore *z = pgd_zstore_open(dead, 0, &err);
    CU_ASSERT_PTR_NOT_NULL(z);
    pgd_zstore_close(&z);

    z = pgd_zstore_create(live, 2, 2, 2, 1, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    CU_ASSERT_EQUAL(pgd_zstore_probe(live, &info, &err), 0);
    CU_ASSERT_EQUAL(info.alive, 1);
    int removed = -1;
    CU_ASSERT_EQUAL(pgd_zstore_reclaim(live, &removed, &err), 0);
    CU_ASSERT_EQUAL(removed, 0);
    CU_ASSERT_TRUE(seg_exists(live));
    CU_ASSERT_EQUAL(pgd_zstore_reclaim(dead, &removed, &err), 0);
    CU_ASSERT_EQUAL(removed, 1);
    CU_ASSERT_FALSE(seg_exists(dead));
    CU_ASSERT_EQUAL(err.code, PGD_OK);
    CU_ASSERT_EQUAL(pgd_zstore_reclaim(dead, &removed, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);
    pgd_zstore_close(&z);
    remove_quietly(live);
}

/* The creator's pid is alive but its start time differs: the pid was reused, the segment is stale. */
static void test_stale_pid_reuse(void)
{
    const char *name = seg("reuse");
    pgd_zstore *z = pgd_zstore_create(name, 1, 1, 4, 1, PGD_ZDTYPE_F32, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    pgd_zstore_close(&z);
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore_info info;
    CU_ASSERT_EQUAL(pgd_zstore_probe(name, &info, &err), 0);
    CU_ASSERT_EQUAL(info.alive, 1);
    poke_u64(name, H_CREATOR_START, info.creator_start + 12345);
    fix_crc(name);
    CU_ASSERT_EQUAL(pgd_zstore_probe(name, &info, &err), 0);
    CU_ASSERT_EQUAL(info.creator_pid, (uint32_t)getpid());
    CU_ASSERT_EQUAL(info.alive, 0);
    remove_quietly(name);
}

static void test_list(void)
{
    const char *a = seg("lista"), *b = seg("listb");
    pgd_zstore *za = pgd_zstore_create(a, 2, 3, 4, 5, PGD_ZDTYPE_BF16, NULL);
    pgd_zstore *zb = pgd_zstore_create(b, 1, 1, 1, 1, PGD_ZDTYPE_F32, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(za);
    CU_ASSERT_PTR_NOT_NULL_FATAL(zb);
    poke(b, H_MAGIC, "garbage!", 8);
    pgd_zstore_entry *v = NULL;
    size_t n = 0;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_zstore_list(&v, &n, &err), 0);
    int seen_a = 0, seen_b = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            CU_ASSERT(strcmp(v[i - 1].info.name, v[i].info.name) < 0);
        if (strcmp(v[i].info.name, a) == 0) {
            seen_a++;
            CU_ASSERT_EQUAL(v[i].code, PGD_OK);
            CU_ASSERT(v[i].info.m == 2 && v[i].info.n == 3 && v[i].info.s == 4 && v[i].info.slots == 5);
            CU_ASSERT_EQUAL(v[i].info.dtype, PGD_ZDTYPE_BF16);
            CU_ASSERT_EQUAL(v[i].info.alive, 1);
        } else if (strcmp(v[i].info.name, b) == 0) {
            seen_b++;
            CU_ASSERT_EQUAL(v[i].code, PGD_EFORMAT);
            CU_ASSERT_PTR_NOT_NULL(strstr(v[i].error, "bad magic"));
        }
    }
    CU_ASSERT_EQUAL(seen_a, 1);
    CU_ASSERT_EQUAL(seen_b, 1);
    /* reclaim leaves an unreadable segment alone */
    int removed = -1;
    CU_ASSERT_EQUAL(pgd_zstore_reclaim(b, &removed, &err), -1);
    CU_ASSERT_EQUAL(removed, 0);
    CU_ASSERT_TRUE(seg_exists(b));
    free(v);
    pgd_zstore_close(&za);
    pgd_zstore_close(&zb);
    remove_quietly(a);
    remove_quietly(b);
}

static void test_names_and_dtypes(void)
{
    pgd_zdtype d;
    CU_ASSERT_EQUAL(pgd_zstore_dtype_parse("bf16", &d), 0);
    CU_ASSERT_EQUAL(d, PGD_ZDTYPE_BF16);
    CU_ASSERT_EQUAL(pgd_zstore_dtype_parse("f64", &d), -1);
    CU_ASSERT_STRING_EQUAL(pgd_zstore_dtype_name(PGD_ZDTYPE_F16), "f16");
    CU_ASSERT_EQUAL(pgd_zstore_dtype_size(PGD_ZDTYPE_F32), 4);
    CU_ASSERT_EQUAL(pgd_zstore_dtype_size((pgd_zdtype)0), 0);
    CU_ASSERT_STRING_EQUAL(pgd_zstore_state_name(PGD_ZSLOT_ABANDONED), "abandoned");
    CU_ASSERT_EQUAL(pgd_zstore_name_check("run-1_a.B", NULL), 0);
    CU_ASSERT_EQUAL(pgd_zstore_name_check("a b", NULL), -1);
}

static const pgd_test_case cases[] = {
    {"create_open_close_remove", test_create_open_close_remove},
    {"create_exclusive", test_create_exclusive},
    {"mode_0600", test_mode_0600},
    {"create_enospc", test_create_enospc},
    {"create_bad_args", test_create_bad_args},
    {"open_corrupt_header", test_open_corrupt_header},
    {"roundtrip_f32_exact", test_roundtrip_f32_exact},
    {"roundtrip_f16", test_roundtrip_f16},
    {"roundtrip_bf16", test_roundtrip_bf16},
    {"sticky_error", test_sticky_error},
    {"sticky_cases", test_sticky_cases},
    {"empty_slot", test_empty_slot},
    {"crc_mismatch", test_crc_mismatch},
    {"zero_copy_write", test_zero_copy_write},
    {"multiprocess_seqlock", test_multiprocess_seqlock},
    {"sigkill_mid_write", test_sigkill_mid_write},
    {"stale_probe_reclaim", test_stale_probe_reclaim},
    {"stale_pid_reuse", test_stale_pid_reuse},
    {"list", test_list},
    {"names_and_dtypes", test_names_and_dtypes},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("zstore", cases, argc, argv);
}
