/* test_gpu_pool.c: the CUDA backend's caching allocator (trainer/gpu_pool.c) over malloc: size classes, reuse,
 * the budget and its message, peaks, trimming, bad frees and a failing raw allocator. Runs without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "cunit_util.h"
#include "trainer/gpu_pool.h"

#if defined(__SANITIZE_ADDRESS__)
/* cuda_absent probes the CUDA driver, whose address reservations collide with ASan's shadow gap. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "protect_shadow_gap=0";
}
#endif

/* A raw allocator over malloc that counts, and fails while `fail` is set. */
typedef struct fake_raw {
    int live;
    int allocs, frees;
    int fail;
} fake_raw;

static void *fake_alloc(void *ctx, size_t bytes, char *why, size_t why_len)
{
    fake_raw *f = ctx;
    if (f->fail) {
        snprintf(why, why_len, "fake device full");
        return NULL;
    }
    void *p = malloc(bytes);
    if (p) {
        memset(p, 0xab, bytes); /* the pool must not rely on zeroed memory */
        f->live++;
        f->allocs++;
    }
    return p;
}

static void fake_free(void *ctx, void *p)
{
    fake_raw *f = ctx;
    f->live--;
    f->frees++;
    free(p);
}

static pgd_gpu_pool *new_pool(fake_raw *f, size_t budget)
{
    pgd_gpu_pool_raw raw = {fake_alloc, fake_free, f};
    pgd_err err = PGD_ERR_INIT;
    pgd_gpu_pool *pool = pgd_gpu_pool_new(budget, &raw, &err);
    CU_ASSERT_FATAL(pool != NULL);
    return pool;
}

static void test_round(void)
{
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(0), 512);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(1), 512);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(512), 512);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(513), 1024);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(4096), 4096);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(4097), 4608);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(1000000), 1048576);  /* granule 64 KiB above 512 KiB */
    CU_ASSERT_EQUAL(pgd_gpu_pool_round((size_t)1 << 30), (size_t)1 << 30);
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(((size_t)1 << 30) + 1), ((size_t)1 << 30) + ((size_t)1 << 27));
    CU_ASSERT_EQUAL(pgd_gpu_pool_round(SIZE_MAX), 0);       /* no class */
    /* Every class holds its request and wastes less than 1/8 of it (or < 512 bytes). */
    for (size_t b = 1; b < ((size_t)1 << 26); b = b * 3 + 7) {
        size_t r = pgd_gpu_pool_round(b);
        CU_ASSERT(r >= b);
        CU_ASSERT(r - b < 512 || (r - b) * 8 < b);
        CU_ASSERT_EQUAL(r % 512, 0);
    }
}

static void test_reuse_and_stats(void)
{
    fake_raw f = {0};
    pgd_gpu_pool *pool = new_pool(&f, 0);
    pgd_err err = PGD_ERR_INIT;
    void *a = pgd_gpu_pool_alloc(pool, 1000, "a", &err);
    void *b = pgd_gpu_pool_alloc(pool, 5000, "b", &err);
    CU_ASSERT_FATAL(a && b && a != b);
    CU_ASSERT_EQUAL(pgd_gpu_pool_block_size(pool, a), 1024);
    CU_ASSERT_EQUAL(pgd_gpu_pool_block_size(pool, b), 5120);
    pgd_mem_stats st;
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.in_use, 1024 + 5120);
    CU_ASSERT_EQUAL(st.cached, 0);
    CU_ASSERT_EQUAL(st.raw_allocs, 2);

    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, a), 0);
    CU_ASSERT_EQUAL(pgd_gpu_pool_block_size(pool, a), 0); /* no longer live */
    void *c = pgd_gpu_pool_alloc(pool, 1001, "c", &err);  /* same class: reused, no raw alloc */
    CU_ASSERT_PTR_EQUAL(c, a);
    void *d = pgd_gpu_pool_alloc(pool, 700, "d", &err);   /* 1024 class again, none cached: raw */
    CU_ASSERT_PTR_NOT_EQUAL(d, a);
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.allocs, 4);
    CU_ASSERT_EQUAL(st.reuses, 1);
    CU_ASSERT_EQUAL(st.raw_allocs, 3);
    CU_ASSERT_EQUAL(st.in_use, 1024 * 2 + 5120);
    CU_ASSERT_EQUAL(st.peak_in_use, 1024 * 2 + 5120);

    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, b), 0);
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, c), 0);
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, NULL), 0);
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.in_use, 1024);
    CU_ASSERT_EQUAL(st.cached, 1024 + 5120);
    CU_ASSERT_EQUAL(st.peak_in_use, 1024 * 2 + 5120);
    CU_ASSERT_EQUAL(st.peak_reserved, 1024 * 2 + 5120);
    CU_ASSERT_EQUAL(f.live, 3);

    pgd_gpu_pool_trim(pool);
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.cached, 0);
    CU_ASSERT_EQUAL(st.in_use, 1024);
    CU_ASSERT_EQUAL(f.live, 1);
    CU_ASSERT_EQUAL(err.code, PGD_OK);
    pgd_gpu_pool_destroy(pool); /* releases d too */
    CU_ASSERT_EQUAL(f.live, 0);
}

static void test_bad_free(void)
{
    fake_raw f = {0};
    pgd_gpu_pool *pool = new_pool(&f, 0);
    pgd_err err = PGD_ERR_INIT;
    int x;
    void *a = pgd_gpu_pool_alloc(pool, 64, "a", &err);
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, &x), -1);           /* never handed out */
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, (char *)a + 8), -1); /* inside a block */
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, a), 0);
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, a), -1);            /* twice */
    pgd_mem_stats st;
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.in_use, 0);
    CU_ASSERT_EQUAL(st.cached, 512);
    pgd_gpu_pool_destroy(pool);
    CU_ASSERT_EQUAL(f.live, 0);
}

static void test_budget(void)
{
    fake_raw f = {0};
    size_t mib = (size_t)1 << 20;
    pgd_gpu_pool *pool = new_pool(&f, 10 * mib);
    pgd_err err = PGD_ERR_INIT;
    void *a = pgd_gpu_pool_alloc(pool, 6 * mib, "tensor", &err);
    CU_ASSERT_FATAL(a != NULL);
    void *b = pgd_gpu_pool_alloc(pool, 5 * mib, "conv workspace", &err);
    CU_ASSERT_PTR_NULL(b);
    CU_ASSERT_EQUAL(err.code, PGD_ENOMEM);
    printf("\n    over-budget message: %s\n", err.msg);
    CU_ASSERT(strstr(err.msg, "conv workspace of 5242880 bytes") != NULL);
    CU_ASSERT(strstr(err.msg, "budget of 10485760 bytes") != NULL);
    CU_ASSERT(strstr(err.msg, "6291456 bytes (6.0 MiB) in use") != NULL);
    pgd_mem_stats st;
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.failures, 1);
    CU_ASSERT_EQUAL(st.budget, 10 * mib);

    /* Cached blocks of another class are released to make room within the budget. */
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, a), 0);
    pgd_err_clear(&err);
    b = pgd_gpu_pool_alloc(pool, 5 * mib, "tensor", &err);
    CU_ASSERT_PTR_NOT_NULL(b);
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.cached, 0);
    CU_ASSERT_EQUAL(st.in_use, 5 * mib);
    CU_ASSERT_EQUAL(st.peak_in_use, 6 * mib);
    CU_ASSERT_EQUAL(f.live, 1);
    /* Exactly the budget fits; one more class does not; a request larger than the budget says so. */
    void *c = pgd_gpu_pool_alloc(pool, 5 * mib, "tensor", &err);
    CU_ASSERT_PTR_NOT_NULL(c);
    CU_ASSERT_PTR_NULL(pgd_gpu_pool_alloc(pool, 1, "tensor", &err));
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_gpu_pool_alloc(pool, 11 * mib, "tensor", &err));
    CU_ASSERT(strstr(err.msg, "over the budget") != NULL);
    pgd_gpu_pool_destroy(pool);
    CU_ASSERT_EQUAL(f.live, 0);
}

static void test_raw_failure(void)
{
    fake_raw f = {0};
    pgd_gpu_pool *pool = new_pool(&f, 0);
    pgd_err err = PGD_ERR_INIT;
    void *a = pgd_gpu_pool_alloc(pool, 4096, "a", &err);
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, a), 0);
    f.fail = 1;
    /* The cached block of another class is released before the retry; the message names the raw reason. */
    CU_ASSERT_PTR_NULL(pgd_gpu_pool_alloc(pool, 100000, "activations", &err));
    CU_ASSERT_EQUAL(err.code, PGD_ENOMEM);
    CU_ASSERT(strstr(err.msg, "activations of 100000 bytes") != NULL);
    CU_ASSERT(strstr(err.msg, "fake device full") != NULL);
    CU_ASSERT_EQUAL(f.live, 0);
    /* A cached block of the same class is still served while the raw allocator fails. */
    f.fail = 0;
    a = pgd_gpu_pool_alloc(pool, 4096, "a", &err);
    CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, a), 0);
    f.fail = 1;
    CU_ASSERT_PTR_EQUAL(pgd_gpu_pool_alloc(pool, 4000, "a", &err), a);
    pgd_gpu_pool_destroy(pool);
    CU_ASSERT_EQUAL(f.live, 0);
}

/* Many blocks: the address table grows and every block is found again. */
static void test_many_blocks(void)
{
    fake_raw f = {0};
    pgd_gpu_pool *pool = new_pool(&f, 0);
    pgd_err err = PGD_ERR_INIT;
    enum { N = 3000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = pgd_gpu_pool_alloc(pool, (size_t)(i % 17 + 1) * 100, "t", &err);
        CU_ASSERT_FATAL(p[i] != NULL);
    }
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(pgd_gpu_pool_block_size(pool, p[i]), pgd_gpu_pool_round((size_t)(i % 17 + 1) * 100));
    for (int i = 0; i < N; i += 2)
        CU_ASSERT_EQUAL(pgd_gpu_pool_free(pool, p[i]), 0);
    int raw_before = f.allocs;
    for (int i = 0; i < N; i += 2)
        CU_ASSERT_PTR_NOT_NULL(pgd_gpu_pool_alloc(pool, (size_t)(i % 17 + 1) * 100, "t", &err));
    CU_ASSERT_EQUAL(f.allocs, raw_before); /* all served from the cache */
    pgd_mem_stats st;
    pgd_gpu_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.cached, 0);
    pgd_gpu_pool_destroy(pool);
    CU_ASSERT_EQUAL(f.live, 0);
}

/* The CPU backend answers pgd_backend_mem_stats with what malloc gave its alloc calls. */
static void test_cpu_backend_stats(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_FATAL(be != NULL);
    pgd_mem_stats st;
    pgd_backend_mem_stats(be, &st);
    CU_ASSERT_EQUAL(st.in_use, 0);
    void *a = be->ops->alloc(be, 1 << 20), *b = be->ops->alloc(be, 1000);
    pgd_backend_mem_stats(be, &st);
    CU_ASSERT(st.in_use >= (1 << 20) + 1000);
    CU_ASSERT_EQUAL(st.allocs, 2);
    size_t peak = st.in_use;
    be->ops->free(be, a);
    pgd_backend_mem_stats(be, &st);
    CU_ASSERT(st.in_use >= 1000 && st.in_use < (1 << 20));
    CU_ASSERT_EQUAL(st.peak_in_use, peak);
    be->ops->free(be, b);
    pgd_backend_mem_stats(be, &st);
    CU_ASSERT_EQUAL(st.in_use, 0);
    CU_ASSERT_EQUAL(st.budget, 0);
    pgd_backend_free(&be);
    /* No backend: zeros. */
    pgd_backend_mem_stats(NULL, &st);
    CU_ASSERT_EQUAL(st.peak_in_use, 0);
}

/* Without CUDA in the build, or without a device, the CUDA entry points fail with a reason. */
static void test_cuda_absent(void)
{
    char why[256] = "";
    int count = pgd_cuda_device_count(why, sizeof why);
    if (count > 0) {
        pgd_test_skip("a CUDA device is present (test_gpu_ops covers it)");
        return;
    }
    printf("\n    no device: %s\n", why);
    CU_ASSERT(why[0] != 0);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_backend_cuda_new(0, 1.0, &err));
    printf("    pgd_backend_cuda_new: %s\n", err.msg);
    CU_ASSERT(strstr(err.msg, "cuda backend") != NULL);
}

int main(int argc, char **argv)
{
    static const pgd_test_case cases[] = {
        {"round", test_round},
        {"reuse_and_stats", test_reuse_and_stats},
        {"bad_free", test_bad_free},
        {"budget", test_budget},
        {"raw_failure", test_raw_failure},
        {"many_blocks", test_many_blocks},
        {"cpu_backend_stats", test_cpu_backend_stats},
        {"cuda_absent", test_cuda_absent},
        {NULL, NULL},
    };
    return pgd_test_main("gpu_pool", cases, argc, argv);
}
