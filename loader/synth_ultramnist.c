/* synth_ultramnist.c: the "ultramnist" task: 3-5 stroke-font digits of very different sizes; label = their sum. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "synth_priv.h"

/* Sizes in design units (unit = max(w, h) / fit level-0 pixels) or fractions of the short side. */
#define TINY_MIN 18.0    /* one digit per image is tiny: 18..26 units tall */
#define TINY_SPAN 8.0
#define LARGE_MIN 0.22   /* one digit is large: 0.22..0.42 of the short side */
#define LARGE_SPAN 0.20
#define SIZE_TOP 0.42    /* the rest: log-uniform between TINY_MIN units and this fraction of the short side */
#define MARGIN 0.01      /* fraction of the short side kept clear at the border */
#define GAP_UNITS 4.0    /* clear space between digit boxes */
#define PLACE_TRIES 400
#define SHRINK_TRIES 30

static const float PAPER[3] = {246, 246, 244};
static const float INK[3] = {30, 30, 36};

typedef struct digit {
    int value;
    double height, hw;          /* pixels: digit height, stroke half-width */
    double bx0, by0, bx1, by1;  /* bounding box (pixels) */
    int nseg;
    pgd_synth_seg seg[PGD_SYNTH_GLYPH_SEGS];
} digit;

typedef struct ultramnist {
    int n;
    digit d[PGD_SYNTH_MAX_DIGITS];
} ultramnist;

/* The affine of a digit of height h centred at (cx, cy), with width factor wf, slant sl and rotation rot. */
static void digit_affine(double cx, double cy, double h, double wf, double sl, double rot, double m[6])
{
    double co = cos(rot), si = sin(rot), a = pgd_synth_glyph_aspect();
    m[1] = co * a * h * wf;
    m[2] = -h * (co * sl + si);
    m[4] = si * a * h * wf;
    m[5] = h * (co - si * sl);
    m[0] = cx - 0.5 * m[1] - 0.5 * m[2];
    m[3] = cy - 0.5 * m[4] - 0.5 * m[5];
}

/* Bounding box of the affine image of the unit box, grown by pad. */
static void affine_box(const double m[6], double pad, double box[4])
{
    box[0] = box[1] = 1e300;
    box[2] = box[3] = -1e300;
    for (int k = 0; k < 4; k++) {
        double u = k & 1, v = k >> 1;
        double x = m[0] + m[1] * u + m[2] * v, y = m[3] + m[4] * u + m[5] * v;
        box[0] = fmin(box[0], x - pad);
        box[1] = fmin(box[1], y - pad);
        box[2] = fmax(box[2], x + pad);
        box[3] = fmax(box[3], y + pad);
    }
}

static int boxes_overlap(const digit *a, const double b[4], double gap)
{
    return !(b[0] > a->bx1 + gap || b[2] < a->bx0 - gap || b[1] > a->by1 + gap || b[3] < a->by0 - gap);
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Digit values summing to label, in random order (a random weak composition of label into n parts). */
static void digit_values(pgd_rng *r, int label, int n, int *out)
{
    uint32_t cut[PGD_SYNTH_MAX_DIGITS + 1];
    cut[0] = 0;
    for (int i = 1; i < n; i++)
        cut[i] = pgd_rng_below(r, (uint32_t)label + 1);
    cut[n] = (uint32_t)label;
    for (int i = 1; i < n; i++) /* insertion sort of the n - 1 cuts */
        for (int j = i; j > 1 && cut[j - 1] > cut[j]; j--) {
            uint32_t t = cut[j];
            cut[j] = cut[j - 1];
            cut[j - 1] = t;
        }
    for (int i = 0; i < n; i++)
        out[i] = (int)(cut[i + 1] - cut[i]);
}

/* Place digit k of height h without overlapping the ones before; shrinks it when the canvas is crowded. */
static int place_digit(const pgd_synth_slide *s, ultramnist *um, int k, double h, pgd_rng *r, double m[6],
                       double *hw)
{
    double W = s->p.width, H = s->p.height, side = fmin(W, H);
    double margin = MARGIN * side, gap = GAP_UNITS * s->unit + 2;
    double wf = 0.85 + 0.30 * pgd_rng_uniform(r), sl = 0.4 * (pgd_rng_uniform(r) - 0.5);
    double rot = 0.4 * (pgd_rng_uniform(r) - 0.5), stroke = 0.09 + 0.04 * pgd_rng_uniform(r);
    for (int shrink = 0; shrink < SHRINK_TRIES; shrink++, h *= 0.85) {
        *hw = stroke * h / 2;
        double box[4];
        digit_affine(0, 0, h, wf, sl, rot, m);
        affine_box(m, *hw + 2, box);
        double bw = box[2] - box[0], bh = box[3] - box[1];
        if (bw + 2 * margin > W || bh + 2 * margin > H)
            continue;
        for (int t = 0; t < PLACE_TRIES; t++) {
            double cx = margin - box[0] + pgd_rng_uniform(r) * (W - 2 * margin - bw);
            double cy = margin - box[1] + pgd_rng_uniform(r) * (H - 2 * margin - bh);
            double b[4] = {box[0] + cx, box[1] + cy, box[2] + cx, box[3] + cy};
            int clear = 1;
            for (int j = 0; j < k && clear; j++)
                clear = !boxes_overlap(&um->d[j], b, gap);
            if (!clear)
                continue;
            digit_affine(cx, cy, h, wf, sl, rot, m);
            digit *d = &um->d[k];
            d->height = h;
            d->hw = *hw;
            d->bx0 = b[0];
            d->by0 = b[1];
            d->bx1 = b[2];
            d->by1 = b[3];
            return 0;
        }
    }
    return -1;
}

static int um_init(pgd_synth_slide *s, pgd_err *err)
{
    ultramnist *um = calloc(1, sizeof *um);
    if (!um)
        return pgd_fail(err, PGD_ENOMEM, "ultramnist: out of memory");
    /* The layout stream (count, sizes, places) does not see the label; the values stream does. */
    pgd_rng lay, val;
    pgd_rng_seed(&lay, s->key ^ 0x756D6C6179ull);
    pgd_rng_seed(&val, s->key ^ 0x756D76616Cull);
    double side = fmin(s->p.width, s->p.height);
    um->n = 3 + (int)pgd_rng_below(&lay, 3);
    double tiny = TINY_MIN * s->unit, top = fmax(SIZE_TOP * side, tiny);
    double hs[PGD_SYNTH_MAX_DIGITS];
    hs[0] = fmin((TINY_MIN + TINY_SPAN * pgd_rng_uniform(&lay)) * s->unit, top);
    hs[1] = fmax((LARGE_MIN + LARGE_SPAN * pgd_rng_uniform(&lay)) * side, tiny);
    for (int k = 2; k < um->n; k++)
        hs[k] = tiny * exp(log(top / tiny) * pgd_rng_uniform(&lay));
    qsort(hs, (size_t)um->n, sizeof *hs, cmp_desc);
    int values[PGD_SYNTH_MAX_DIGITS];
    digit_values(&val, s->label, um->n, values);
    for (int k = 0; k < um->n; k++) {
        double m[6], hw;
        if (place_digit(s, um, k, hs[k], &lay, m, &hw) < 0) {
            int n = um->n;
            free(um);
            return pgd_fail(err, PGD_EINVAL, "ultramnist: cannot place %d digits apart on a %ux%u canvas", n,
                            s->p.width, s->p.height);
        }
        digit *d = &um->d[k];
        d->value = values[k];
        d->nseg = pgd_synth_glyph_segments(d->value, m, d->seg, PGD_SYNTH_GLYPH_SEGS);
    }
    s->state = um;
    return 0;
}

static int um_render(const pgd_synth_slide *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                     size_t stride, pgd_err *err)
{
    const ultramnist *um = s->state;
    float *cov = malloc((size_t)w * sizeof *cov);
    uint8_t *paper = malloc((size_t)w * 3);
    if (!cov || !paper) {
        free(cov);
        free(paper);
        return pgd_fail(err, PGD_ENOMEM, "ultramnist: out of memory rendering %ux%u", w, h);
    }
    uint8_t p8[3], ink[3];
    for (int k = 0; k < 3; k++) {
        p8[k] = (uint8_t)PAPER[k];
        ink[k] = (uint8_t)INK[k];
    }
    for (uint32_t c = 0; c < w; c++)
        memcpy(paper + 3 * c, p8, 3);
    for (uint32_t r = 0; r < h; r++) {
        double yc = (double)(y + r) + 0.5;
        uint8_t *out = rgb + (size_t)r * stride;
        int any = 0;
        for (int k = 0; k < um->n; k++) {
            const digit *d = &um->d[k];
            if (yc < d->by0 || yc > d->by1 || d->bx1 < x || d->bx0 > (double)x + w)
                continue;
            if (!any)
                memset(cov, 0, (size_t)w * sizeof *cov);
            any = 1;
            pgd_synth_strokes_row(d->seg, d->nseg, d->hw, yc, x, w, cov);
        }
        memcpy(out, paper, (size_t)w * 3);
        for (uint32_t c = 0; any && c < w; c++) {
            float a = cov[c];
            if (a <= 0)
                continue;
            if (a >= 1) {
                memcpy(out + 3 * c, ink, 3);
                continue;
            }
            for (int k = 0; k < 3; k++)
                out[3 * c + k] = (uint8_t)(PAPER[k] + (INK[k] - PAPER[k]) * a + 0.5f);
        }
    }
    free(cov);
    free(paper);
    return 0;
}

static void um_info(const pgd_synth_slide *s, pgd_synth_info *out)
{
    const ultramnist *um = s->state;
    size_t len = 0;
    out->ndigits = um->n;
    out->signal_px = 1e300;
    for (int k = 0; k < um->n; k++) {
        out->digits[k] = um->d[k].value;
        out->digit_height[k] = um->d[k].height;
        out->signal_px = fmin(out->signal_px, um->d[k].height);
        len += (size_t)snprintf(out->detail + len, sizeof out->detail - len, "%s%d", k ? "+" : "", um->d[k].value);
    }
}

static void um_fini(pgd_synth_slide *s)
{
    free(s->state);
    s->state = NULL;
}

const pgd_synth_task_ops pgd_synth_ultramnist_ops = {
    .classes = 10,
    .default_fit = 512,
    .init = um_init,
    .render = um_render,
    .info = um_info,
    .fini = um_fini,
};
