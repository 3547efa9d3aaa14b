/* slide_priv.h: what slide.c shares with its backends (slide_openslide.c, slide_fast.c, slide_image.c). */
#ifndef PGD_SLIDE_PRIV_H
#define PGD_SLIDE_PRIV_H

#include <openslide/openslide.h>

#include "slide.h"

/* A backend reads a rectangle that lies wholly inside the scaled level (slide.c clips and pads). */
typedef struct pgd_slide_ops {
    int (*read)(pgd_slide *s, int level, int den, int64_t x, int64_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                size_t stride, pgd_err *err);
    void (*close)(pgd_slide *s);
} pgd_slide_ops;

struct pgd_slide {
    pgd_slide_info info;
    char *path;
    char vendor[64];
    char mpp_source[64];
    openslide_t *osr; /* the OpenSlide handle: kept by the OpenSlide backend, closed by the others */
    const pgd_slide_ops *ops;
    void *impl;       /* the backend's state */
};

/* Fill s->info from the open OpenSlide handle s->osr (levels, mpp, bounds, background). */
int pgd_slide_os_info(pgd_slide *s, pgd_err *err);

/* OpenSlide backend: adopt s->osr. */
int pgd_slide_os_attach(pgd_slide *s, pgd_err *err);

/* Fast path: 1 when every level of the slide is a tiled JPEG TIFF directory (the backend is then attached
 * and info.codec / max_den set), 0 when it does not qualify (why says what stops it), -1 on an error. */
int pgd_slide_fast_attach(pgd_slide *s, char *why, size_t cap, pgd_err *err);

/* libtiff's first error opening path (a TIFF that OpenSlide does not recognise): 0 and msg, or -1. */
int pgd_slide_tiff_error(const char *path, char *msg, size_t cap);

/* Plain JPEG or PNG (kind "jpeg" / "png"): read the header, fill info, attach the image backend. */
int pgd_slide_image_attach(pgd_slide *s, const char *kind, pgd_err *err);

/* "4:2:0", "4:4:4", "gray", ... for a TurboJPEG subsampling code. */
const char *pgd_slide_subsamp_name(int subsamp);

#endif
