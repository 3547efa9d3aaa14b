/* gpu_pool.h: a caching allocator with a byte budget over an abstract raw allocator (device memory for the
 * CUDA backend, malloc in the tests). Plain C: no CUDA types, so its bookkeeping is tested on the CPU. */
#ifndef PGD_GPU_POOL_H
#define PGD_GPU_POOL_H

#include <stddef.h>

#include "common/err.h"
#include "trainer/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the pool's memory comes from. alloc returns NULL on failure and may then fill why (a short reason,
 * e.g. "cudaMalloc: out of memory"); free releases what alloc returned. */
typedef struct pgd_gpu_pool_raw {
    void *(*alloc)(void *ctx, size_t bytes, char *why, size_t why_len);
    void (*free)(void *ctx, void *p);
    void *ctx;
} pgd_gpu_pool_raw;

typedef struct pgd_gpu_pool pgd_gpu_pool;

/* Requests are rounded up to a size class, a multiple of max(512, 2^floor(log2(bytes)) / 8) bytes, so a block
 * wastes less than 1/8 of the request (or less than 512 bytes for small ones).
 * A freed block is cached and handed out again for a request of the same class. The budget caps the bytes
 * taken from the raw allocator (blocks in use + cached); a request that would pass it first releases the
 * cached blocks, then fails. budget 0: no cap. */
pgd_gpu_pool *pgd_gpu_pool_new(size_t budget, const pgd_gpu_pool_raw *raw, pgd_err *err);

/* Releases every block (in use or cached) to the raw allocator and the pool itself. NULL is fine. */
void pgd_gpu_pool_destroy(pgd_gpu_pool *pool);

/* A block of at least `bytes` (0 is served as 1), or NULL with err set: over the budget (the message names the
 * request, the budget, the bytes in use and the bytes cached), or the raw allocator failed even after the cache
 * was released. `what` names the request in the message ("tensor", "conv workspace"). */
void *pgd_gpu_pool_alloc(pgd_gpu_pool *pool, size_t bytes, const char *what, pgd_err *err);

/* Returns a block to the cache. NULL is fine; a pointer the pool did not hand out returns -1 (and changes
 * nothing), else 0. */
int pgd_gpu_pool_free(pgd_gpu_pool *pool, void *p);

/* The size class (bytes actually reserved) of a live block, 0 for an unknown pointer. */
size_t pgd_gpu_pool_block_size(const pgd_gpu_pool *pool, const void *p);

/* Gives every cached (free) block back to the raw allocator. */
void pgd_gpu_pool_trim(pgd_gpu_pool *pool);

/* The pool's counters (see pgd_mem_stats in backend.h). */
void pgd_gpu_pool_stats(const pgd_gpu_pool *pool, pgd_mem_stats *st);

/* The size class of a request (exposed for the tests). */
size_t pgd_gpu_pool_round(size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
