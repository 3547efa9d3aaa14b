/* half.h: float <-> IEEE fp16 and bfloat16 conversion, round to nearest even, NaN and Inf kept. */
#ifndef PGD_HALF_H
#define PGD_HALF_H

#include <stddef.h>
#include <stdint.h>

uint16_t pgd_f32_to_f16(float f);
float pgd_f16_to_f32(uint16_t h);
uint16_t pgd_f32_to_bf16(float f);
float pgd_bf16_to_f32(uint16_t b);

/* Array forms: n values from src to dst. */
void pgd_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void pgd_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void pgd_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);
void pgd_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);

#endif
