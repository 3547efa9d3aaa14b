/* patcher.h: cut one slide into p x p RGB patches under a geometry ("fit" or "native"), the loader's job unit. */
#ifndef PGD_PATCHER_H
#define PGD_PATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum pgd_geom_kind {
    PGD_GEOM_FIT = 1,    /* best level, area-resampled so the long side is fit_size, white-padded (centred)
                            to fit_size x fit_size, cut into patch_size x patch_size: grid fit/p x fit/p */
    PGD_GEOM_NATIVE = 2, /* patches read at a pyramid level (or the level nearest an mpp, resampled to it) on
                            a grid over the slide bounds; the level is never materialised */
} pgd_geom_kind;

/* What the sampler asks for (the JOB spec frame of the wire format, plus the patch size). */
typedef struct pgd_geom_spec {
    pgd_geom_kind kind;
    uint32_t patch_size; /* p */
    uint32_t fit_size;   /* FIT: S, a multiple of p; NATIVE: 0 */
    int32_t level;       /* NATIVE: pyramid level >= 0, or -1 when mpp chooses; FIT: -1 */
    double mpp;          /* NATIVE with level -1: microns per pixel > 0; otherwise 0 */
} pgd_geom_spec;

/* The resolved geometry of one slide. */
typedef struct pgd_geom {
    pgd_geom_spec spec;
    uint32_t grid_m, grid_n; /* rows, columns of patches */
    int level;               /* the pyramid level read */
    double scale;            /* output pixels per level pixel (1 for native at a level) */
} pgd_geom;

typedef struct pgd_patcher pgd_patcher;

/* Open the slide at path (any format the loader reads) and resolve the geometry. Errors name the file and
 * the reason (OpenSlide's or libjpeg's words where they come from there). */
pgd_patcher *pgd_patcher_open(const char *path, const pgd_geom_spec *spec, pgd_err *err);

const pgd_geom *pgd_patcher_geom(const pgd_patcher *p);

/* Decode n patches at cells[2i] = row, cells[2i+1] = column (each inside the grid, any order, repeats
 * allowed) into out: n x p x p x 3 bytes, RGB, HWC, patch after patch. A corrupt region fails the call
 * with an error naming the file; the patcher stays usable for other cells. */
int pgd_patcher_read(pgd_patcher *p, const uint32_t *cells, size_t n, uint8_t *out, pgd_err *err);

/* Free everything and set *p = NULL. */
void pgd_patcher_close(pgd_patcher **p);

#endif
