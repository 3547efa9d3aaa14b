/* rng.c: xoshiro256** with splitmix64 seeding and key-derived child streams. */
#include "rng.h"

#include <math.h>

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void seed_from(pgd_rng *r, uint64_t x)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
        r->s[0] = 1; /* the all-zero state is a fixed point */
}

void pgd_rng_seed(pgd_rng *r, uint64_t seed)
{
    seed_from(r, seed);
}

pgd_rng pgd_rng_split(const pgd_rng *r, uint64_t key)
{
    /* Hash the whole parent state together with the key; each word passes through a full mixer. */
    uint64_t k = 0x6A09E667F3BCC909ull ^ key, h = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t x = r->s[i] ^ splitmix64(&k);
        h = rotl(h, 23) ^ splitmix64(&x);
    }
    pgd_rng child;
    seed_from(&child, h);
    return child;
}

uint64_t pgd_rng_u64(pgd_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint32_t pgd_rng_below(pgd_rng *r, uint32_t n)
{
    if (n == 0)
        return 0;
    /* Lemire's multiply-shift with rejection of the biased low range. */
    uint64_t m = (uint64_t)(uint32_t)(pgd_rng_u64(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (0u - n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(pgd_rng_u64(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

double pgd_rng_uniform(pgd_rng *r)
{
    return (double)(pgd_rng_u64(r) >> 11) * 0x1.0p-53;
}

float pgd_rng_uniformf(pgd_rng *r)
{
    return (float)(pgd_rng_u64(r) >> 40) * 0x1.0p-24f;
}

double pgd_rng_normal(pgd_rng *r)
{
    double u1 = 1.0 - pgd_rng_uniform(r); /* (0, 1]: log is finite */
    double u2 = pgd_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void pgd_rng_shuffle_u32(pgd_rng *r, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = pgd_rng_below(r, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
