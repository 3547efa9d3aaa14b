/* gpu_pool.c: the caching allocator behind the CUDA backend: size classes, a cache of freed blocks, the byte
 * budget and the counters. Knows nothing of CUDA: the raw allocator is a pair of function pointers. */
#include "trainer/gpu_pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One block taken from the raw allocator. Live and cached blocks sit in a hash table by address; cached
 * blocks are also on a doubly linked free list (most recently freed first). */
typedef struct block {
    void *ptr;
    size_t size;            /* the size class: what was taken from the raw allocator */
    int cached;             /* 1 while on the free list */
    struct block *hnext;    /* hash chain */
    struct block *fprev, *fnext;
} block;

struct pgd_gpu_pool {
    pgd_gpu_pool_raw raw;
    size_t budget;
    block **buckets;
    size_t nbuckets;        /* a power of two */
    size_t nblocks;
    block *free_head;
    pgd_mem_stats st;
};

size_t pgd_gpu_pool_round(size_t bytes)
{
    if (bytes <= 512)
        return 512;
    size_t top = (size_t)1 << (63 - __builtin_clzll((unsigned long long)bytes));
    size_t granule = top / 8 > 512 ? top / 8 : 512;
    if (bytes > SIZE_MAX - granule)
        return 0; /* no class holds it */
    return (bytes + granule - 1) / granule * granule;
}

static size_t hash_ptr(const void *p, size_t nbuckets)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & (nbuckets - 1);
}

static int grow_table(pgd_gpu_pool *pool)
{
    size_t n = pool->nbuckets ? pool->nbuckets * 2 : 256;
    block **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < pool->nbuckets; i++)
        for (block *blk = pool->buckets[i], *next; blk; blk = next) {
            next = blk->hnext;
            size_t h = hash_ptr(blk->ptr, n);
            blk->hnext = b[h];
            b[h] = blk;
        }
    free(pool->buckets);
    pool->buckets = b;
    pool->nbuckets = n;
    return 0;
}

static block *find_block(const pgd_gpu_pool *pool, const void *p)
{
    if (!pool->nbuckets)
        return NULL;
    for (block *blk = pool->buckets[hash_ptr(p, pool->nbuckets)]; blk; blk = blk->hnext)
        if (blk->ptr == p)
            return blk;
    return NULL;
}

static void unlink_hash(pgd_gpu_pool *pool, block *blk)
{
    block **at = &pool->buckets[hash_ptr(blk->ptr, pool->nbuckets)];
    while (*at != blk)
        at = &(*at)->hnext;
    *at = blk->hnext;
    pool->nblocks--;
}

static void unlink_free(pgd_gpu_pool *pool, block *blk)
{
    if (blk->fprev)
        blk->fprev->fnext = blk->fnext;
    else
        pool->free_head = blk->fnext;
    if (blk->fnext)
        blk->fnext->fprev = blk->fprev;
    blk->fprev = blk->fnext = NULL;
    blk->cached = 0;
}

pgd_gpu_pool *pgd_gpu_pool_new(size_t budget, const pgd_gpu_pool_raw *raw, pgd_err *err)
{
    pgd_gpu_pool *pool = calloc(1, sizeof *pool);
    if (!pool || grow_table(pool) < 0) {
        free(pool);
        pgd_fail(err, PGD_ENOMEM, "gpu pool: out of host memory");
        return NULL;
    }
    pool->raw = *raw;
    pool->budget = budget;
    pool->st.budget = budget;
    return pool;
}

void pgd_gpu_pool_trim(pgd_gpu_pool *pool)
{
    while (pool->free_head) {
        block *blk = pool->free_head;
        unlink_free(pool, blk);
        unlink_hash(pool, blk);
        pool->st.cached -= blk->size;
        pool->raw.free(pool->raw.ctx, blk->ptr);
        free(blk);
    }
}

void pgd_gpu_pool_destroy(pgd_gpu_pool *pool)
{
    if (!pool)
        return;
    for (size_t i = 0; i < pool->nbuckets; i++)
        for (block *blk = pool->buckets[i], *next; blk; blk = next) {
            next = blk->hnext;
            pool->raw.free(pool->raw.ctx, blk->ptr);
            free(blk);
        }
    free(pool->buckets);
    free(pool);
}

static void note_peaks(pgd_gpu_pool *pool)
{
    if (pool->st.in_use > pool->st.peak_in_use)
        pool->st.peak_in_use = pool->st.in_use;
    if (pool->st.in_use + pool->st.cached > pool->st.peak_reserved)
        pool->st.peak_reserved = pool->st.in_use + pool->st.cached;
}

/* The most recently freed cached block of exactly this class, or NULL. */
static block *take_cached(pgd_gpu_pool *pool, size_t size)
{
    for (block *blk = pool->free_head; blk; blk = blk->fnext)
        if (blk->size == size) {
            unlink_free(pool, blk);
            pool->st.cached -= size;
            pool->st.in_use += size;
            return blk;
        }
    return NULL;
}

static int over_budget(const pgd_gpu_pool *pool, size_t size)
{
    size_t reserved = pool->st.in_use + pool->st.cached;
    return pool->budget && (size > pool->budget || reserved > pool->budget - size);
}

#define MIB(x) ((double)(x) / 1048576.0)

void *pgd_gpu_pool_alloc(pgd_gpu_pool *pool, size_t bytes, const char *what, pgd_err *err)
{
    size_t size = pgd_gpu_pool_round(bytes ? bytes : 1);
    if (!what)
        what = "allocation";
    if (!size) {
        pool->st.failures++;
        pgd_fail(err, PGD_ENOMEM, "gpu memory: %s of %zu bytes: no size class holds it", what, bytes);
        return NULL;
    }
    block *blk = take_cached(pool, size);
    if (blk) {
        pool->st.allocs++;
        pool->st.reuses++;
        note_peaks(pool);
        return blk->ptr;
    }
    if (over_budget(pool, size))
        pgd_gpu_pool_trim(pool); /* cached blocks of other classes make room */
    if (over_budget(pool, size)) {
        pool->st.failures++;
        pgd_fail(err, PGD_ENOMEM,
                 "gpu memory: %s of %zu bytes (%.1f MiB) is over the budget of %zu bytes (%.1f MiB): %zu bytes "
                 "(%.1f MiB) in use, peak %.1f MiB; raise gpu_mem_gb or lower the batch or patch size",
                 what, bytes, MIB(bytes), pool->budget, MIB(pool->budget), pool->st.in_use, MIB(pool->st.in_use),
                 MIB(pool->st.peak_in_use));
        return NULL;
    }
    if (pool->nblocks + 1 > 2 * pool->nbuckets && grow_table(pool) < 0) {
        pool->st.failures++;
        pgd_fail(err, PGD_ENOMEM, "gpu memory: %s of %zu bytes: out of host memory for the block table", what,
                 bytes);
        return NULL;
    }
    blk = calloc(1, sizeof *blk);
    char why[160] = "";
    void *p = blk ? pool->raw.alloc(pool->raw.ctx, size, why, sizeof why) : NULL;
    if (blk && !p && pool->free_head) {
        pgd_gpu_pool_trim(pool); /* the device is full: give the cache back and try once more */
        why[0] = 0;
        p = pool->raw.alloc(pool->raw.ctx, size, why, sizeof why);
    }
    if (!p) {
        free(blk);
        pool->st.failures++;
        pgd_fail(err, PGD_ENOMEM, "gpu memory: %s of %zu bytes (%.1f MiB) failed%s%s (%zu bytes in use, budget %zu)",
                 what, bytes, MIB(bytes), why[0] ? ": " : "", why, pool->st.in_use, pool->budget);
        return NULL;
    }
    blk->ptr = p;
    blk->size = size;
    size_t h = hash_ptr(p, pool->nbuckets);
    blk->hnext = pool->buckets[h];
    pool->buckets[h] = blk;
    pool->nblocks++;
    pool->st.in_use += size;
    pool->st.allocs++;
    pool->st.raw_allocs++;
    note_peaks(pool);
    return p;
}

int pgd_gpu_pool_free(pgd_gpu_pool *pool, void *p)
{
    if (!p)
        return 0;
    block *blk = find_block(pool, p);
    if (!blk || blk->cached)
        return -1;
    blk->cached = 1;
    blk->fprev = NULL;
    blk->fnext = pool->free_head;
    if (pool->free_head)
        pool->free_head->fprev = blk;
    pool->free_head = blk;
    pool->st.in_use -= blk->size;
    pool->st.cached += blk->size;
    return 0;
}

size_t pgd_gpu_pool_block_size(const pgd_gpu_pool *pool, const void *p)
{
    const block *blk = find_block(pool, p);
    return blk && !blk->cached ? blk->size : 0;
}

void pgd_gpu_pool_stats(const pgd_gpu_pool *pool, pgd_mem_stats *st)
{
    *st = pool->st;
}
