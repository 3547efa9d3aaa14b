/* synth_glyphs.c: a ten-digit stroke font (lines and elliptic arcs) and an anti-aliased capsule rasteriser. */
#include <math.h>
#include <string.h>

#include "synth_priv.h"

/* Width of a digit's box relative to its height. */
#define GLYPH_ASPECT 0.62
/* Arcs are flattened into chords of at most this many degrees. */
#define ARC_STEP_DEG 12.0

/* One pen stroke in the unit box (u across 0..1, v down 0..1): a line (u0, v0) -> (u1, v1), or an arc of the
 * ellipse centred (u0, v0) with radii (u1, v1) from angle a0 to a1 degrees (0 = +u, 90 = +v, i.e. down). */
typedef struct pen {
    char kind; /* 'L', 'A', or 0 at the end */
    float u0, v0, u1, v1, a0, a1;
} pen;

#define MAX_PENS 4
static const pen FONT[10][MAX_PENS] = {
    /* 0: one tall oval */
    {{'A', 0.50f, 0.50f, 0.40f, 0.46f, 0, 360}},
    /* 1: a stem with a flag */
    {{'L', 0.55f, 0.04f, 0.55f, 0.96f, 0, 0}, {'L', 0.22f, 0.26f, 0.55f, 0.04f, 0, 0}},
    /* 2: a hook, a diagonal, a base */
    {{'A', 0.50f, 0.30f, 0.38f, 0.26f, 200, 380},
     {'L', 0.857f, 0.389f, 0.10f, 0.96f, 0, 0},
     {'L', 0.10f, 0.96f, 0.92f, 0.96f, 0, 0}},
    /* 3: two open bowls stacked */
    {{'A', 0.50f, 0.27f, 0.36f, 0.23f, 200, 450}, {'A', 0.50f, 0.73f, 0.40f, 0.23f, 270, 520}},
    /* 4: stem, diagonal, bar */
    {{'L', 0.68f, 0.96f, 0.68f, 0.04f, 0, 0},
     {'L', 0.68f, 0.04f, 0.06f, 0.68f, 0, 0},
     {'L', 0.06f, 0.68f, 0.94f, 0.68f, 0, 0}},
    /* 5: top bar, short stem, open belly */
    {{'L', 0.86f, 0.04f, 0.22f, 0.04f, 0, 0},
     {'L', 0.22f, 0.04f, 0.17f, 0.50f, 0, 0},
     {'A', 0.50f, 0.68f, 0.40f, 0.28f, 215, 510}},
    /* 6: a falling curve into a closed loop */
    {{'A', 0.50f, 0.70f, 0.38f, 0.26f, 0, 360}, {'A', 0.95f, 0.70f, 0.83f, 0.66f, 250, 180}},
    /* 7: top bar and a long diagonal */
    {{'L', 0.08f, 0.04f, 0.92f, 0.04f, 0, 0}, {'L', 0.92f, 0.04f, 0.38f, 0.96f, 0, 0}},
    /* 8: two closed loops */
    {{'A', 0.50f, 0.26f, 0.33f, 0.22f, 0, 360}, {'A', 0.50f, 0.72f, 0.40f, 0.24f, 0, 360}},
    /* 9: a closed loop and a falling tail */
    {{'A', 0.50f, 0.30f, 0.38f, 0.26f, 0, 360}, {'A', 0.05f, 0.30f, 0.83f, 0.66f, 0, 70}},
};

double pgd_synth_glyph_aspect(void)
{
    return GLYPH_ASPECT;
}

static void map_point(const double m[6], double u, double v, double *x, double *y)
{
    *x = m[0] + m[1] * u + m[2] * v;
    *y = m[3] + m[4] * u + m[5] * v;
}

static int add_seg(pgd_synth_seg *out, int n, int cap, const double m[6], double u0, double v0, double u1,
                   double v1)
{
    if (n >= cap)
        return n;
    map_point(m, u0, v0, &out[n].x0, &out[n].y0);
    map_point(m, u1, v1, &out[n].x1, &out[n].y1);
    return n + 1;
}

int pgd_synth_glyph_segments(int d, const double m[6], pgd_synth_seg *out, int cap)
{
    if (d < 0 || d > 9)
        return -1;
    int n = 0;
    for (int k = 0; k < MAX_PENS && FONT[d][k].kind; k++) {
        const pen *p = &FONT[d][k];
        if (p->kind == 'L') {
            n = add_seg(out, n, cap, m, p->u0, p->v0, p->u1, p->v1);
            continue;
        }
        double span = (double)p->a1 - p->a0;
        int steps = (int)ceil(fabs(span) / ARC_STEP_DEG);
        double pu = 0, pv = 0;
        for (int i = 0; i <= steps; i++) {
            double a = (p->a0 + span * i / steps) * (M_PI / 180.0);
            double u = p->u0 + p->u1 * cos(a), v = p->v0 + p->v1 * sin(a);
            if (i > 0)
                n = add_seg(out, n, cap, m, pu, pv, u, v);
            pu = u;
            pv = v;
        }
    }
    return n;
}

/* Coverage of one capsule on one row, max-combined into cov. */
static void capsule_row(const pgd_synth_seg *g, double hw, double yc, int64_t x0, uint32_t w, float *cov)
{
    double reach = hw + 1.0;
    double dx = g->x1 - g->x0, dy = g->y1 - g->y0;
    if (yc < fmin(g->y0, g->y1) - reach || yc > fmax(g->y0, g->y1) + reach)
        return;
    /* Only the part of the segment within |y - yc| <= reach can come within reach of the row. */
    double t0 = 0, t1 = 1;
    if (fabs(dy) > 1e-12) {
        double ta = (yc - reach - g->y0) / dy, tb = (yc + reach - g->y0) / dy;
        t0 = fmax(0.0, fmin(ta, tb));
        t1 = fmin(1.0, fmax(ta, tb));
        if (t0 > t1)
            return;
    }
    double xa = g->x0 + dx * t0, xb = g->x0 + dx * t1;
    double lo = floor(fmin(xa, xb) - reach), hi = ceil(fmax(xa, xb) + reach);
    if (hi <= (double)x0 || lo >= (double)x0 + w)
        return;
    int64_t a = lo < (double)x0 ? x0 : (int64_t)lo;
    int64_t b = hi > (double)x0 + w ? x0 + (int64_t)w : (int64_t)hi;
    double len2 = dx * dx + dy * dy;
    double cy = yc - g->y0;
    for (int64_t px = a; px < b; px++) {
        double cx = (double)px + 0.5 - g->x0;
        double t = len2 > 0 ? (cx * dx + cy * dy) / len2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        double ex = cx - t * dx, ey = cy - t * dy;
        double c = hw + 0.5 - sqrt(ex * ex + ey * ey);
        if (c <= 0)
            continue;
        float cf = c >= 1 ? 1.0f : (float)c;
        if (cf > cov[px - x0])
            cov[px - x0] = cf;
    }
}

void pgd_synth_strokes_row(const pgd_synth_seg *segs, int n, double hw, double yc, int64_t x0, uint32_t w,
                           float *cov)
{
    for (int i = 0; i < n; i++)
        capsule_row(&segs[i], hw, yc, x0, w, cov);
}

int pgd_synth_glyph_draw(int d, double ox, double oy, double h, double stroke, uint8_t *raster, uint32_t w,
                         uint32_t rh)
{
    pgd_synth_seg segs[PGD_SYNTH_GLYPH_SEGS];
    const double m[6] = {ox, GLYPH_ASPECT * h, 0, oy, 0, h};
    int n = pgd_synth_glyph_segments(d, m, segs, PGD_SYNTH_GLYPH_SEGS);
    if (n < 0)
        return -1;
    double hw = (stroke > 0 ? stroke : 0.11) * h / 2;
    float row[4096];
    for (uint32_t y = 0; y < rh; y++) {
        for (uint32_t x0 = 0; x0 < w; x0 += 4096) {
            uint32_t cw = w - x0 < 4096 ? w - x0 : 4096;
            memset(row, 0, sizeof row);
            pgd_synth_strokes_row(segs, n, hw, y + 0.5, x0, cw, row);
            uint8_t *r = raster + (size_t)y * w + x0;
            for (uint32_t x = 0; x < cw; x++) {
                uint8_t v = (uint8_t)lrintf(row[x] * 255.0f);
                if (v > r[x])
                    r[x] = v;
            }
        }
    }
    return 0;
}
