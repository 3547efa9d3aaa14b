/* patcher_more.h: what the loader's own tools need beyond loader/patcher.h (backend choice, the fit image). */
#ifndef PGD_PATCHER_MORE_H
#define PGD_PATCHER_MORE_H

#include "patcher.h"
#include "slide.h"

/* pgd_patcher_open with a chosen backend (PGD_SLIDE_AUTO is what pgd_patcher_open uses). */
pgd_patcher *pgd_patcher_open_backend(const char *path, const pgd_geom_spec *spec, pgd_slide_backend backend,
                                      pgd_err *err);

/* The slide under the patcher (its info: levels, backend, ...). */
const pgd_slide_info *pgd_patcher_slide_info(const pgd_patcher *p);

/* FIT only: the whole fit_size x fit_size RGB image the patches are cut from (built on first use and kept
 * until close; the pointer is owned by the patcher). NULL with an error for NATIVE or a failed decode. */
const uint8_t *pgd_patcher_fit_image(pgd_patcher *p, pgd_err *err);

/* Check a geometry spec on its own ("patch_size: 0 ..."). */
int pgd_patcher_spec_check(const pgd_geom_spec *spec, pgd_err *err);

#endif
