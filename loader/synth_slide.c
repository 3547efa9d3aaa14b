/* synth_slide.c: slide parameters, balanced labels, the slide object and rendering at any pyramid level. */
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "synth_priv.h"

#define FIT_MIN 64u
#define FIT_MAX 65536u

static const pgd_synth_task_ops *task_ops(pgd_synth_task t)
{
    switch (t) {
    case PGD_SYNTH_PANDA: return &pgd_synth_panda_ops;
    case PGD_SYNTH_ULTRAMNIST: return &pgd_synth_ultramnist_ops;
    }
    return NULL;
}

int pgd_synth_task_parse(const char *s, pgd_synth_task *out)
{
    if (s && strcmp(s, "panda") == 0)
        *out = PGD_SYNTH_PANDA;
    else if (s && strcmp(s, "ultramnist") == 0)
        *out = PGD_SYNTH_ULTRAMNIST;
    else
        return -1;
    return 0;
}

const char *pgd_synth_task_name(pgd_synth_task t)
{
    return t == PGD_SYNTH_PANDA ? "panda" : t == PGD_SYNTH_ULTRAMNIST ? "ultramnist" : "?";
}

int pgd_synth_classes(pgd_synth_task t)
{
    const pgd_synth_task_ops *ops = task_ops(t);
    return ops ? ops->classes : 0;
}

int pgd_synth_params_check(pgd_synth_params *p, pgd_err *err)
{
    const pgd_synth_task_ops *ops = task_ops(p->task);
    if (!ops)
        return pgd_fail(err, PGD_EINVAL, "task: unknown task %d (panda or ultramnist)", (int)p->task);
    if (p->width < 1 || p->width > PGD_SYNTH_MAX_DIM)
        return pgd_fail(err, PGD_EINVAL, "width: %u is outside 1..%u", p->width, PGD_SYNTH_MAX_DIM);
    if (p->height < 1 || p->height > PGD_SYNTH_MAX_DIM)
        return pgd_fail(err, PGD_EINVAL, "height: %u is outside 1..%u", p->height, PGD_SYNTH_MAX_DIM);
    if (p->fit == 0)
        p->fit = ops->default_fit;
    if (p->fit < FIT_MIN || p->fit > FIT_MAX)
        return pgd_fail(err, PGD_EINVAL, "fit: %u is outside %u..%u", p->fit, FIT_MIN, FIT_MAX);
    if (p->gland_density == 0)
        p->gland_density = 0.6;
    if (p->tumour_fraction == 0)
        p->tumour_fraction = 0.5;
    if (p->tissue == 0)
        p->tissue = 1.0;
    if (!(p->gland_density > 0 && p->gland_density <= 1))
        return pgd_fail(err, PGD_EINVAL, "gland_density: %g is outside (0, 1]", p->gland_density);
    if (!(p->tumour_fraction > 0 && p->tumour_fraction <= 1))
        return pgd_fail(err, PGD_EINVAL, "tumour_fraction: %g is outside (0, 1]", p->tumour_fraction);
    if (!(p->tissue > 0 && p->tissue <= 4))
        return pgd_fail(err, PGD_EINVAL, "tissue: %g is outside (0, 4]", p->tissue);
    return 0;
}

int pgd_synth_label(pgd_synth_task task, uint64_t seed, uint32_t index)
{
    int k = pgd_synth_classes(task);
    if (k <= 0)
        return -1;
    /* Block b of k consecutive slides holds a seeded permutation of 0..k-1. */
    uint32_t perm[16];
    for (int i = 0; i < k; i++)
        perm[i] = (uint32_t)i;
    pgd_rng r;
    pgd_rng_seed(&r, seed ^ 0x6C6162656C73ull);
    pgd_rng b = pgd_rng_split(&r, index / (uint32_t)k);
    pgd_rng_shuffle_u32(&b, perm, (size_t)k);
    return (int)perm[index % (uint32_t)k];
}

pgd_synth_slide *pgd_synth_slide_new(const pgd_synth_params *p, uint32_t index, int label, pgd_err *err)
{
    pgd_synth_params chk = *p;
    if (pgd_synth_params_check(&chk, err) < 0)
        return NULL;
    int classes = pgd_synth_classes(chk.task);
    if (label >= classes) {
        pgd_fail(err, PGD_EINVAL, "label: %d is outside 0..%d for task %s", label, classes - 1,
                 pgd_synth_task_name(chk.task));
        return NULL;
    }
    pgd_synth_slide *s = calloc(1, sizeof *s);
    if (!s) {
        pgd_fail(err, PGD_ENOMEM, "slide: out of memory");
        return NULL;
    }
    s->p = chk;
    s->index = index;
    s->label = label >= 0 ? label : pgd_synth_label(chk.task, chk.seed, index);
    s->unit = (double)(chk.width > chk.height ? chk.width : chk.height) / chk.fit;
    s->key = pgd_synth_mix(pgd_synth_mix(chk.seed) ^ ((uint64_t)index * 0x9E3779B97F4A7C15ull + 1));
    s->ops = task_ops(chk.task);
    if (s->ops->init(s, err) < 0) {
        pgd_synth_slide_free(&s);
        return NULL;
    }
    return s;
}

void pgd_synth_slide_free(pgd_synth_slide **s)
{
    if (!s || !*s)
        return;
    if ((*s)->ops && (*s)->ops->fini)
        (*s)->ops->fini(*s);
    free(*s);
    *s = NULL;
}

void pgd_synth_slide_info(const pgd_synth_slide *s, pgd_synth_info *out)
{
    memset(out, 0, sizeof *out);
    out->label = s->label;
    out->unit_px = s->unit;
    s->ops->info(s, out);
}

int pgd_synth_render(const pgd_synth_slide *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                     size_t stride, pgd_err *err)
{
    if ((uint64_t)x + w > s->p.width || (uint64_t)y + h > s->p.height)
        return pgd_fail(err, PGD_EINVAL, "render: rectangle %u,%u %ux%u is outside the %ux%u slide", x, y, w, h,
                        s->p.width, s->p.height);
    if (w == 0 || h == 0)
        return 0;
    return s->ops->render(s, x, y, w, h, rgb, stride, err);
}

void pgd_synth_downsample2(const uint8_t *src, uint32_t w, uint32_t h, size_t sstride, uint8_t *dst,
                           size_t dstride)
{
    uint32_t ow = (w + 1) / 2, oh = (h + 1) / 2;
    for (uint32_t oy = 0; oy < oh; oy++) {
        const uint8_t *a = src + (size_t)(2 * oy) * sstride;
        const uint8_t *b = 2 * oy + 1 < h ? a + sstride : NULL;
        uint8_t *o = dst + (size_t)oy * dstride;
        uint32_t full = w / 2; /* output pixels with two input columns */
        if (b) {
            for (uint32_t ox = 0; ox < full; ox++) {
                const uint8_t *pa = a + 6 * ox, *pb = b + 6 * ox;
                uint8_t *po = o + 3 * ox;
                unsigned r = (pa[0] + pa[3] + pb[0] + pb[3] + 2) >> 2;
                unsigned g = (pa[1] + pa[4] + pb[1] + pb[4] + 2) >> 2;
                unsigned bl = (pa[2] + pa[5] + pb[2] + pb[5] + 2) >> 2;
                po[0] = (uint8_t)r;
                po[1] = (uint8_t)g;
                po[2] = (uint8_t)bl;
            }
            if (ow > full)
                for (int c = 0; c < 3; c++)
                    o[3 * full + c] = (uint8_t)((a[6 * full + c] + b[6 * full + c] + 1) >> 1);
        } else {
            for (uint32_t ox = 0; ox < full; ox++)
                for (int c = 0; c < 3; c++)
                    o[3 * ox + c] = (uint8_t)((a[6 * ox + c] + a[6 * ox + 3 + c] + 1) >> 1);
            if (ow > full)
                memmove(o + 3 * full, a + 6 * full, 3); /* in place when full == 0 */
        }
    }
}

int pgd_synth_render_level(const pgd_synth_slide *s, int level, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                           uint8_t *rgb, pgd_err *err)
{
    if (level < 0 || level >= PGD_SYNTH_MAX_LEVELS)
        return pgd_fail(err, PGD_EINVAL, "render: level %d is outside 0..%d", level, PGD_SYNTH_MAX_LEVELS - 1);
    uint32_t lw, lh;
    pgd_synth_level_size(s->p.width, s->p.height, level, &lw, &lh);
    if ((uint64_t)x + w > lw || (uint64_t)y + h > lh)
        return pgd_fail(err, PGD_EINVAL, "render: rectangle %u,%u %ux%u is outside level %d (%ux%u)", x, y, w, h,
                        level, lw, lh);
    if (w == 0 || h == 0)
        return 0;
    /* The level-0 footprint, clipped at the slide's right and bottom edges exactly as the pyramid clips. */
    uint64_t fx = (uint64_t)x << level, fy = (uint64_t)y << level;
    uint64_t fw = ((uint64_t)w << level), fh = ((uint64_t)h << level);
    if (fx + fw > s->p.width)
        fw = s->p.width - fx;
    if (fy + fh > s->p.height)
        fh = s->p.height - fy;
    uint8_t *buf = malloc((size_t)(fw * fh * 3));
    if (!buf)
        return pgd_fail(err, PGD_ENOMEM, "render: out of memory for a %llux%llu footprint",
                        (unsigned long long)fw, (unsigned long long)fh);
    if (pgd_synth_render(s, (uint32_t)fx, (uint32_t)fy, (uint32_t)fw, (uint32_t)fh, buf, (size_t)fw * 3, err) < 0) {
        free(buf);
        return -1;
    }
    /* Halve in place, level by level (the output of a halving never overtakes its input). */
    uint32_t cw = (uint32_t)fw, ch = (uint32_t)fh;
    for (int l = 0; l < level; l++) {
        pgd_synth_downsample2(buf, cw, ch, (size_t)cw * 3, buf, (size_t)((cw + 1) / 2) * 3);
        cw = (cw + 1) / 2;
        ch = (ch + 1) / 2;
    }
    for (uint32_t r = 0; r < h; r++)
        memcpy(rgb + (size_t)r * w * 3, buf + (size_t)r * cw * 3, (size_t)w * 3);
    free(buf);
    return 0;
}
