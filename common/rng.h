/* rng.h: a seedable, splittable random number generator (xoshiro256**), the same stream on every machine. */
#ifndef PGD_RNG_H
#define PGD_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Plain state: copy it, store it in a checkpoint, restore it. */
typedef struct pgd_rng {
    uint64_t s[4];
} pgd_rng;

/* Seed from one 64-bit value (expanded with splitmix64). */
void pgd_rng_seed(pgd_rng *r, uint64_t seed);

/* A child stream for `key` (an epoch, an image index, a loader id...). The parent is not advanced, so the
 * child depends only on (parent state, key): work handed out in any order draws the same numbers. Children
 * of different keys, and the parent itself, are statistically independent streams. */
pgd_rng pgd_rng_split(const pgd_rng *r, uint64_t key);

uint64_t pgd_rng_u64(pgd_rng *r);

/* Uniform in [0, n), without modulo bias. n == 0 returns 0. */
uint32_t pgd_rng_below(pgd_rng *r, uint32_t n);

/* Uniform in [0, 1) with 53 (double) or 24 (float) random bits. */
double pgd_rng_uniform(pgd_rng *r);
float pgd_rng_uniformf(pgd_rng *r);

/* Standard normal (Box-Muller; uses two uniforms per call, no cached state). */
double pgd_rng_normal(pgd_rng *r);

/* Fisher-Yates shuffle of a[0..n). */
void pgd_rng_shuffle_u32(pgd_rng *r, uint32_t *a, size_t n);

#endif
