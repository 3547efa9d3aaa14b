/* resample.h: area (box-filter) resampling of RGB images, streamed by rows, with white where nothing maps. */
#ifndef PGD_RESAMPLE_H
#define PGD_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The mapping: output pixel (x, y) covers the source rectangle [ox + x*rx, ox + (x+1)*rx) x
 * [oy + y*ry, oy + (y+1)*ry), clipped to the src_w x src_h source; its value is the mean of the source over
 * that rectangle, each source pixel weighted by the area it shares with it (so rx, ry < 1 upsamples and
 * integer ratios average whole blocks). An output pixel whose rectangle misses the source is white. */
typedef struct pgd_resample_map {
    uint32_t src_w, src_h;
    double ox, oy, rx, ry;
    uint32_t dst_w, dst_h;
} pgd_resample_map;

typedef struct pgd_resample pgd_resample;

/* The arithmetic is fixed point and the same for every implementation (they differ in speed only, never in
 * a byte): each output pixel's weights along one axis are Q15 integers summing to exactly 32768; the vertical
 * pass keeps, per source sample, V = 2 * sum_t floor(p_t * Wv_t / 256) (the 8.7 fixed-point mean, doubled);
 * the horizontal pass O = sum_t floor(V_t * Wh_t / 65536) (8.7); the byte is (O + 64) >> 7. Every floor
 * loses less than 1/128, so a byte is at most (taps down + taps across) / 128 below the exact area mean
 * before rounding, and power-of-two box averages (no floor loses anything) round exactly. */
typedef enum pgd_resample_impl {
    PGD_RESAMPLE_AUTO = 0,   /* the fastest this build and CPU have */
    PGD_RESAMPLE_SCALAR = 1, /* plain C: the reference the vector code is tested against */
    PGD_RESAMPLE_SSE2 = 2,   /* x86-64 SSE2 (baseline there): 16 bytes down, two pixels across at a time */
    PGD_RESAMPLE_AVX2 = 3,   /* x86-64 AVX2 when the CPU has it (checked at run time): 16 output rows at
                                once, one per 16-bit lane (a few rows at the end of a push: SSE2) */
} pgd_resample_impl;

/* 1 when impl can run here (AUTO and SCALAR always can). */
int pgd_resample_impl_available(pgd_resample_impl impl);

/* "auto", "scalar", "sse2", "avx2". */
const char *pgd_resample_impl_name(pgd_resample_impl impl);

/* A streaming resampler writing into dst (dst_h rows of dst_w RGB pixels, rows dst_stride apart, owned by
 * the caller, alive until finish; nothing outside those rows' dst_w x 3 bytes is written). Memory is
 * O(src_w x (ceil(ry) + 3) + rx) bytes whatever src_h is. */
pgd_resample *pgd_resample_new(const pgd_resample_map *m, uint8_t *dst, size_t dst_stride, pgd_err *err);

/* The same with a chosen implementation (an unavailable one is an error). */
pgd_resample *pgd_resample_new_impl(const pgd_resample_map *m, pgd_resample_impl impl, uint8_t *dst,
                                    size_t dst_stride, pgd_err *err);

/* Feed the next n source rows (top to bottom; src_w RGB pixels each, rows stride apart). Output rows are
 * written as soon as every source row they cover has arrived. */
void pgd_resample_push(pgd_resample *r, const uint8_t *rows, size_t stride, uint32_t n);

/* The same band of n source rows arriving in vertical strips, left to right, so that a band decoded tile by
 * tile is resampled while each tile is still in the cache, without ever being whole: strip holds columns
 * [col0, col1) of the band's rows (column col0 of its first row at strip, rows stride apart). The first call
 * of a band has col0 = 0; each later one starts where the last one ended, or to the left of it (columns
 * already given, again), but never to the right of pgd_resample_strip_from(r) (called after the last strip);
 * the band is complete with col1 = src_w, and no other call on r may come in between. The AVX2 code writes
 * the parts of the band's output rows whose source columns have all arrived and reads up to 16 bytes past
 * col1 in each row (they count for nothing: they only have to be readable, also after the last row); the
 * other implementations put the band together and resample it when it is complete (the bytes are the same
 * either way). Returns 0, or -1 when out of memory for that (then r is unusable). */
int pgd_resample_push_strip(pgd_resample *r, const uint8_t *strip, size_t stride, uint32_t n, uint32_t col0,
                            uint32_t col1, pgd_err *err);

/* The first column of the open band that the next strip has to hold (0 when no band is open). */
uint32_t pgd_resample_strip_from(const pgd_resample *r);

/* At most how many columns to the left of the last strip's end pgd_resample_strip_from can ask for (0 for
 * the implementations that put bands together): a strip buffer that is this much wider than the new columns
 * of each strip always has room. */
uint32_t pgd_resample_strip_margin(const pgd_resample *r);

/* Write the output rows still pending (those covering rows that were never pushed get what did arrive, or
 * white). */
void pgd_resample_finish(pgd_resample *r);

void pgd_resample_free(pgd_resample **r);

/* One call: resample a whole src image (rows sstride apart) into dst. */
int pgd_resample_area(const pgd_resample_map *m, const uint8_t *src, size_t sstride, uint8_t *dst,
                      size_t dstride, pgd_err *err);

/* pgd_resample_area with a chosen implementation. */
int pgd_resample_area_impl(const pgd_resample_map *m, pgd_resample_impl impl, const uint8_t *src, size_t sstride,
                           uint8_t *dst, size_t dstride, pgd_err *err);

#endif
