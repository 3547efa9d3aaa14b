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

/* A streaming resampler writing into dst (dst_h rows of dst_w RGB pixels, rows dst_stride apart, owned by
 * the caller, alive until finish). Memory is O(src_w x (ceil(1/ry) + 3)) floats whatever src_h is. */
pgd_resample *pgd_resample_new(const pgd_resample_map *m, uint8_t *dst, size_t dst_stride, pgd_err *err);

/* Feed the next n source rows (top to bottom; src_w RGB pixels each, rows stride apart). Output rows are
 * written as soon as every source row they cover has arrived. */
void pgd_resample_push(pgd_resample *r, const uint8_t *rows, size_t stride, uint32_t n);

/* Write the output rows still pending (those covering rows that were never pushed get what did arrive, or
 * white). */
void pgd_resample_finish(pgd_resample *r);

void pgd_resample_free(pgd_resample **r);

/* One call: resample a whole src image (rows sstride apart) into dst. */
int pgd_resample_area(const pgd_resample_map *m, const uint8_t *src, size_t sstride, uint8_t *dst,
                      size_t dstride, pgd_err *err);

#endif
