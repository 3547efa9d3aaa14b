/* half.c: bit-exact software conversions between fp32 and fp16 / bf16. */
#include "half.h"

#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t pgd_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xFF;
    uint32_t man = x & 0x7FFFFF;
    if (exp == 0xFF) /* Inf or NaN (keep a quiet NaN) */
        return sign | 0x7C00 | (man ? 0x200 | (uint16_t)(man >> 13) : 0);
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return sign | 0x7C00;
    if (e <= 0) { /* subnormal half or zero */
        if (e < -10)
            return sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t h = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return sign | (uint16_t)h;
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent, up to Inf: correct */
    return sign | (uint16_t)h;
}

float pgd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    if (exp == 0x1F)
        return bits_f32(sign | 0x7F800000 | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        int e = -1;
        do { /* normalise the subnormal */
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        return bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FF) << 13));
    }
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

uint16_t pgd_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7F800000) == 0x7F800000 && (x & 0x7FFFFF))
        return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7FFF + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

float pgd_bf16_to_f32(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

void pgd_f32_to_f16_n(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = pgd_f32_to_f16(src[i]);
}

void pgd_f16_to_f32_n(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = pgd_f16_to_f32(src[i]);
}

void pgd_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = pgd_f32_to_bf16(src[i]);
}

void pgd_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = pgd_bf16_to_f32(src[i]);
}
