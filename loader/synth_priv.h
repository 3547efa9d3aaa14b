/* synth_priv.h: what the synth_*.c files share: the slide object, the task table, hashing and stroke raster. */
#ifndef PGD_SYNTH_PRIV_H
#define PGD_SYNTH_PRIV_H

#include <stdint.h>

#include "synth.h"

typedef struct pgd_synth_task_ops {
    int classes;
    uint32_t default_fit;
    /* Build the task's scene in s->state from s->key and s->label. */
    int (*init)(pgd_synth_slide *s, pgd_err *err);
    /* Level-0 rectangle -> RGB (see pgd_synth_render). */
    int (*render)(const pgd_synth_slide *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                  size_t stride, pgd_err *err);
    void (*info)(const pgd_synth_slide *s, pgd_synth_info *out);
    void (*fini)(pgd_synth_slide *s);
} pgd_synth_task_ops;

extern const pgd_synth_task_ops pgd_synth_panda_ops;
extern const pgd_synth_task_ops pgd_synth_ultramnist_ops;

struct pgd_synth_slide {
    pgd_synth_params p;
    uint32_t index;
    int label;
    double unit;  /* level-0 pixels per design unit */
    uint64_t key; /* hash of (seed, index): the root of every random choice of the layout */
    const pgd_synth_task_ops *ops;
    void *state;
};

/* ---- hashing: content is a function of coordinates, so any tile can be rendered on its own ---------- */

static inline uint64_t pgd_synth_mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t pgd_synth_hash2(uint64_t key, int64_t a, int64_t b)
{
    return pgd_synth_mix(key ^ pgd_synth_mix((uint64_t)a * 0xD1B54A32D192ED03ull + (uint64_t)b));
}

/* Uniform in [0, 1) from 53 bits of h. */
static inline double pgd_synth_u01(uint64_t h)
{
    return (double)(h >> 11) * 0x1p-53;
}

/* ---- strokes: anti-aliased capsules, rasterised one pixel row at a time --------------------------- */

typedef struct pgd_synth_seg {
    double x0, y0, x1, y1;
} pgd_synth_seg;

/* Max segments one digit flattens into. */
#define PGD_SYNTH_GLYPH_SEGS 96

/* The strokes of digit d (0-9) mapped to pixels by the affine m: a point (u, v) of the digit's unit box
 * (u across 0..1, v down 0..1) lands at (m[0] + m[1] u + m[2] v, m[3] + m[4] u + m[5] v). Returns the
 * segment count, or -1 for a digit outside 0-9. */
int pgd_synth_glyph_segments(int d, const double m[6], pgd_synth_seg *out, int cap);

/* Coverage (0..1, max-combined into cov[0..w)) of the capsules of half-width hw around segs, on the pixel
 * row whose centres are at y = yc, pixels x0 .. x0 + w - 1 (centres at x + 0.5). */
void pgd_synth_strokes_row(const pgd_synth_seg *segs, int n, double hw, double yc, int64_t x0, uint32_t w,
                           float *cov);

#endif
