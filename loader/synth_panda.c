/* synth_panda.c: the "panda" task: white slide, textured tissue blobs, glands whose fine structure is the grade. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "synth_priv.h"

/* Geometry, in design units (unit = max(w, h) / fit level-0 pixels) unless said otherwise.
 * Glands sit in a grid of CELL x CELL cells, at most one per cell and wholly inside it, so a pixel only
 * ever looks at its own cell. */
#define LAT 8                /* tissue-field lattice spacing, level-0 pixels */
#define CELL 40.0            /* gland cell side */
#define GLAND_R 12.0         /* mean gland radius; the radius varies by +-10% */
#define GLAND_R_VAR 0.10
#define TISSUE_MIN_F 0.25    /* tissue field needed at a gland's centre */
#define NUC_RING 0.78        /* nuclei ring radius / gland radius */
#define NUC_R6 0.16          /* nucleus radius / gland radius when a gland has 6 nuclei (area is kept) */
#define LUMEN_R1 0.42        /* lumen radius / gland radius with one lumen (total lumen area is kept) */
#define MAX_NUC 24
#define MAX_LUM 7
#define NOISE_N 256          /* texture table side (periodic) */
#define MAX_BLOBS 4

/* Gland pattern of each grade: nuclei count, lumen count, irregularity. Every pattern has the same
 * nuclei area, lumen area and cytoplasm area, so a gland's mean colour does not depend on the grade. */
static const struct {
    int nuclei, lumens;
    double jitter;
} PATTERN[6] = {
    {6, 1, 0.00}, {8, 1, 0.12}, {11, 2, 0.24}, {14, 3, 0.36}, {18, 5, 0.50}, {24, 7, 0.65},
};
/* Lumen ring radius / gland radius for each lumen count (7 = one in the centre + a ring of 6). */
static double lumen_ring(int n)
{
    switch (n) {
    case 1: return 0.0;
    case 2: return 0.32;
    case 3: return 0.30;
    case 5: return 0.38;
    default: return 0.40;
    }
}

static const char *const GLEASON[6] = {"0+0", "3+3", "3+4", "4+3", "4+4", "4+5"};

/* Colours (RGB). */
static const float BG[3] = {243, 241, 245};
static const uint8_t BG8[3] = {243, 241, 245};
static const float STROMA[3] = {232, 164, 200};
static const float CYTO[3] = {208, 148, 204};
static const float LUMEN[3] = {250, 243, 250};
static const float NUC[3] = {82, 52, 138};

typedef struct blob {
    double cx, cy, c, s, ia2, ib2;
} blob;

typedef struct disc {
    float x, y, r;
} disc;

typedef struct gland {
    int present;
    float cx, cy;        /* centre, level-0 pixels */
    float c, s, inv_asp; /* local frame: u along the long axis, v across (scaled to a circle) */
    float r;             /* radius, pixels */
    float nuc_lo2, nuc_hi2, lum_hi2; /* squared radial bounds of the nuclei ring and of the lumens */
    int nn, nl;
    disc nuc[MAX_NUC], lum[MAX_LUM];
} gland;

typedef struct panda {
    int nblobs;
    blob blobs[MAX_BLOBS];
    double noise_freq, noise_amp; /* boundary wobble of the tissue field */
    double edge;                  /* tissue alpha ramp, in field units */
    double cell_px;
    double tex_k1, tex_k2;        /* texture table cells per pixel, two scales */
    float tex[NOISE_N * NOISE_N];
} panda;

/* ---- the tissue field: > 0 inside tissue; smooth, evaluated on a lattice and interpolated ---------- */

static double lattice_value(uint64_t key, int64_t i, int64_t j)
{
    return pgd_synth_u01(pgd_synth_hash2(key, i, j)) * 2.0 - 1.0;
}

static double smooth(double t)
{
    return t * t * (3.0 - 2.0 * t);
}

/* Value noise in [-1, 1] at (x, y) in lattice units. */
static double value_noise(uint64_t key, double x, double y)
{
    double fx = floor(x), fy = floor(y);
    int64_t i = (int64_t)fx, j = (int64_t)fy;
    double tx = smooth(x - fx), ty = smooth(y - fy);
    double a = lattice_value(key, i, j), b = lattice_value(key, i + 1, j);
    double c = lattice_value(key, i, j + 1), d = lattice_value(key, i + 1, j + 1);
    return (a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty;
}

static double tissue_field(const pgd_synth_slide *s, const panda *pd, double x, double y)
{
    double f = -1e9;
    for (int k = 0; k < pd->nblobs; k++) {
        const blob *b = &pd->blobs[k];
        double dx = x - b->cx, dy = y - b->cy;
        double u = dx * b->c + dy * b->s, v = -dx * b->s + dy * b->c;
        double q = 1.0 - u * u * b->ia2 - v * v * b->ib2;
        if (q > f)
            f = q;
    }
    double n = value_noise(s->key ^ 0x7469737375ull, x * pd->noise_freq, y * pd->noise_freq) +
               0.5 * value_noise(s->key ^ 0x7469737376ull, x * pd->noise_freq * 2.3 + 17.0, y * pd->noise_freq * 2.3);
    return f + pd->noise_amp * n / 1.5;
}

/* The field at any point: bilinear between the lattice values around it. */
static double field_at(const pgd_synth_slide *s, const panda *pd, double x, double y)
{
    double fx = floor(x / LAT), fy = floor(y / LAT);
    double tx = x / LAT - fx, ty = y / LAT - fy;
    double x0 = fx * LAT, y0 = fy * LAT;
    double a = tissue_field(s, pd, x0, y0), b = tissue_field(s, pd, x0 + LAT, y0);
    double c = tissue_field(s, pd, x0, y0 + LAT), d = tissue_field(s, pd, x0 + LAT, y0 + LAT);
    return (a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty;
}

/* ---- texture: a periodic smooth-noise table sampled at two scales -------------------------------- */

static void texture_init(panda *pd, pgd_rng *r)
{
    static const int periods[4] = {32, 16, 8, 4};
    static const float amps[4] = {0.53f, 0.27f, 0.13f, 0.07f};
    memset(pd->tex, 0, sizeof pd->tex);
    for (int o = 0; o < 4; o++) {
        int cells = NOISE_N / periods[o];
        float grid[64 * 64];
        for (int i = 0; i < cells * cells; i++)
            grid[i] = pgd_rng_uniformf(r) * 2.0f - 1.0f;
        for (int y = 0; y < NOISE_N; y++) {
            int gy = y / periods[o];
            float ty = (float)smooth((double)(y % periods[o]) / periods[o]);
            for (int x = 0; x < NOISE_N; x++) {
                int gx = x / periods[o];
                float tx = (float)smooth((double)(x % periods[o]) / periods[o]);
                float a = grid[gy * cells + gx], b = grid[gy * cells + (gx + 1) % cells];
                float c = grid[((gy + 1) % cells) * cells + gx], d = grid[((gy + 1) % cells) * cells + (gx + 1) % cells];
                pd->tex[y * NOISE_N + x] += amps[o] * ((a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty);
            }
        }
    }
}

static float tex_sample(const float *t, double x, double y)
{
    int64_t ix = (int64_t)x, iy = (int64_t)y;
    float fx = (float)(x - (double)ix), fy = (float)(y - (double)iy);
    int x0 = (int)(ix & (NOISE_N - 1)), y0 = (int)(iy & (NOISE_N - 1));
    int x1 = (x0 + 1) & (NOISE_N - 1), y1 = (y0 + 1) & (NOISE_N - 1);
    float a = t[y0 * NOISE_N + x0], b = t[y0 * NOISE_N + x1], c = t[y1 * NOISE_N + x0], d = t[y1 * NOISE_N + x1];
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy;
}

/* In [-1, 1] roughly; x, y level-0 pixel coordinates (non-negative). */
static float texture(const panda *pd, double x, double y)
{
    return 0.65f * tex_sample(pd->tex, x * pd->tex_k1 + 31.0, y * pd->tex_k1 + 57.0) +
           0.35f * tex_sample(pd->tex, x * pd->tex_k2 + 101.0, y * pd->tex_k2 + 13.0);
}

/* ---- glands ------------------------------------------------------------------------------------- */

/* Gland of cell (i, j). Every random draw that places it comes first and in a fixed order, so the layout is
 * the same whatever the slide's label; only the pattern drawn inside depends on it. */
static void gland_build(const pgd_synth_slide *s, const panda *pd, int64_t i, int64_t j, gland *g)
{
    pgd_rng r;
    pgd_rng_seed(&r, pgd_synth_hash2(s->key ^ 0x676C616E64ull, i, j));
    double cell = pd->cell_px, unit = s->unit;
    double rmax = GLAND_R * (1 + GLAND_R_VAR) * unit;
    double jit = cell / 2 - rmax - unit - 0.5;
    if (jit < 0)
        jit = 0;
    double u_present = pgd_rng_uniform(&r), u_tumour = pgd_rng_uniform(&r);
    double cx = (i + 0.5) * cell + (pgd_rng_uniform(&r) * 2 - 1) * jit;
    double cy = (j + 0.5) * cell + (pgd_rng_uniform(&r) * 2 - 1) * jit;
    double rad = GLAND_R * unit * (1 - GLAND_R_VAR + 2 * GLAND_R_VAR * pgd_rng_uniform(&r));
    double asp = 0.75 + 0.25 * pgd_rng_uniform(&r);
    double th = 2 * M_PI * pgd_rng_uniform(&r);
    double phase = 2 * M_PI * pgd_rng_uniform(&r);
    memset(g, 0, sizeof *g);
    if (u_present >= s->p.gland_density || cx < 0 || cy < 0 || cx >= s->p.width || cy >= s->p.height ||
        field_at(s, pd, cx, cy) < TISSUE_MIN_F)
        return;
    int type = s->label > 0 && u_tumour < s->p.tumour_fraction ? s->label : 0;
    double jt = PATTERN[type].jitter;
    g->present = 1;
    g->cx = (float)cx;
    g->cy = (float)cy;
    g->c = (float)cos(th);
    g->s = (float)sin(th);
    g->inv_asp = (float)(1.0 / asp);
    g->r = (float)rad;
    g->nn = PATTERN[type].nuclei;
    g->nl = PATTERN[type].lumens;
    double rn = NUC_R6 * rad * sqrt(6.0 / g->nn);
    double lo = 1e30, hi = 0;
    for (int k = 0; k < g->nn; k++) {
        double a = phase + 2 * M_PI * (k + jt * 0.8 * (pgd_rng_uniform(&r) - 0.5)) / g->nn;
        double rho = NUC_RING * rad * (1 + jt * 0.25 * (pgd_rng_uniform(&r) - 0.5));
        double nr = rn * (1 + jt * 0.5 * (pgd_rng_uniform(&r) - 0.5));
        g->nuc[k] = (disc){(float)(rho * cos(a)), (float)(rho * sin(a)), (float)nr};
        lo = fmin(lo, rho - nr - 0.5);
        hi = fmax(hi, rho + nr + 0.5);
    }
    g->nuc_lo2 = (float)(lo > 0 ? lo * lo : 0);
    g->nuc_hi2 = (float)(hi * hi);
    double rl = LUMEN_R1 * rad / sqrt((double)g->nl), ring = lumen_ring(g->nl) * rad;
    double lhi = 0;
    for (int k = 0; k < g->nl; k++) {
        double px = 0, py = 0;
        if (g->nl == 7 && k == 0) {
            /* the centre one */
        } else if (g->nl > 1) {
            int ringn = g->nl == 7 ? 6 : g->nl, kk = g->nl == 7 ? k - 1 : k;
            double a = phase + 2 * M_PI * kk / ringn;
            px = ring * cos(a);
            py = ring * sin(a);
        }
        px += jt * 0.15 * rad * (pgd_rng_uniform(&r) - 0.5);
        py += jt * 0.15 * rad * (pgd_rng_uniform(&r) - 0.5);
        double lr = rl * (1 + jt * 0.3 * (pgd_rng_uniform(&r) - 0.5));
        g->lum[k] = (disc){(float)px, (float)py, (float)lr};
        lhi = fmax(lhi, sqrt(px * px + py * py) + lr + 0.5);
    }
    g->lum_hi2 = (float)(lhi * lhi);
}

/* Anti-aliased coverage of a disc of radius r at squared distance d2. */
static float disc_cover(float d2, float r)
{
    float hi = r + 0.5f;
    if (d2 >= hi * hi)
        return 0.0f;
    float lo = r - 0.5f;
    if (lo > 0 && d2 <= lo * lo)
        return 1.0f;
    float c = hi - sqrtf(d2);
    return c > 1.0f ? 1.0f : c;
}

static void mix3(float *dst, const float *src, float t)
{
    for (int c = 0; c < 3; c++)
        dst[c] += (src[c] - dst[c]) * t;
}

/* Colour of gland g at local point (u, v) (pixels, v already scaled to the circle): col gets the gland's
 * colour, the return value its coverage. */
static float gland_colour(const gland *g, float u, float v, float t, float *col)
{
    float d2 = u * u + v * v;
    float cov = disc_cover(d2, g->r);
    if (cov <= 0)
        return 0;
    float m = 1.0f + 0.03f * t;
    for (int c = 0; c < 3; c++)
        col[c] = CYTO[c] * m;
    if (d2 < g->lum_hi2)
        for (int k = 0; k < g->nl; k++) {
            float dx = u - g->lum[k].x, dy = v - g->lum[k].y;
            float lc = disc_cover(dx * dx + dy * dy, g->lum[k].r);
            if (lc > 0)
                mix3(col, LUMEN, lc);
        }
    if (d2 >= g->nuc_lo2 && d2 < g->nuc_hi2)
        for (int k = 0; k < g->nn; k++) {
            float dx = u - g->nuc[k].x, dy = v - g->nuc[k].y;
            float nc = disc_cover(dx * dx + dy * dy, g->nuc[k].r);
            if (nc > 0) {
                float n[3] = {NUC[0] * m, NUC[1] * m, NUC[2] * m};
                mix3(col, n, nc);
            }
        }
    return cov;
}

/* ---- rendering ---------------------------------------------------------------------------------- */

/* Field values at lattice row lj, columns lx0 .. lx0 + n - 1. */
static void lattice_row(const pgd_synth_slide *s, const panda *pd, int64_t lj, int64_t lx0, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)tissue_field(s, pd, (double)(lx0 + i) * LAT, (double)lj * LAT);
}

static uint8_t to_u8(float v)
{
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
}

static int panda_render(const pgd_synth_slide *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                        size_t stride, pgd_err *err)
{
    const panda *pd = s->state;
    /* Working set per call: two rows of the field lattice, one row of gland cells, one interpolated row. */
    int64_t lx0 = x / LAT, nlx = (x + w - 1) / LAT - lx0 + 2;
    int64_t cx0 = (int64_t)floor(x / pd->cell_px);
    int64_t ncx = (int64_t)floor((x + w - 1) / pd->cell_px) - cx0 + 1;
    float *lat = malloc((size_t)(3 * nlx) * sizeof *lat);
    gland *cells = malloc((size_t)ncx * sizeof *cells);
    if (!lat || !cells) {
        free(lat);
        free(cells);
        return pgd_fail(err, PGD_ENOMEM, "panda: out of memory rendering %ux%u", w, h);
    }
    float *l0 = lat, *l1 = lat + nlx, *rf = lat + 2 * nlx; /* lattice rows lj, lj + 1; rf: the current row */
    int64_t have_lj = INT64_MIN, have_cj = INT64_MIN;
    float inv_edge = (float)(1.0 / pd->edge);
    for (uint32_t r = 0; r < h; r++) {
        uint32_t py = y + r;
        int64_t lj = py / LAT;
        if (lj != have_lj) {
            if (lj == have_lj + 1) { /* slide down one lattice row */
                float *t = l0;
                l0 = l1;
                l1 = t;
                lattice_row(s, pd, lj + 1, lx0, nlx, l1);
            } else {
                lattice_row(s, pd, lj, lx0, nlx, l0);
                lattice_row(s, pd, lj + 1, lx0, nlx, l1);
            }
            have_lj = lj;
        }
        float ty = (float)(py % LAT) / LAT;
        for (int64_t i = 0; i < nlx; i++)
            rf[i] = l0[i] + (l1[i] - l0[i]) * ty;
        int64_t cj = (int64_t)floor(py / pd->cell_px);
        if (cj != have_cj) {
            for (int64_t i = 0; i < ncx; i++)
                gland_build(s, pd, cx0 + i, cj, &cells[i]);
            have_cj = cj;
        }
        uint8_t *out = rgb + (size_t)r * stride;
        uint32_t c = 0;
        while (c < w) {
            /* One lattice span of this row: all background when the field stays below the ramp. */
            uint32_t px0 = x + c, end = c + (LAT - px0 % LAT);
            if (end > w)
                end = w;
            int64_t li = px0 / LAT - lx0;
            float fa = rf[li], fb = rf[li + 1];
            if ((fa > fb ? fa : fb) * inv_edge + 0.5f <= 0) {
                for (; c < end; c++)
                    memcpy(out + 3 * c, BG8, 3);
                continue;
            }
            for (; c < end; c++) {
                uint32_t px = x + c;
                float f = fa + (fb - fa) * ((float)(px % LAT) / LAT);
                float alpha = f * inv_edge + 0.5f;
                if (alpha <= 0) {
                    memcpy(out + 3 * c, BG8, 3);
                    continue;
                }
                if (alpha > 1)
                    alpha = 1;
                float t = texture(pd, px, py);
                float col[3];
                float m = 1.0f + 0.10f * t;
                for (int k = 0; k < 3; k++)
                    col[k] = STROMA[k] * m;
                int64_t ci = (int64_t)floor(px / pd->cell_px) - cx0;
                const gland *g = &cells[ci];
                if (g->present) {
                    float dx = (float)(px + 0.5 - g->cx), dy = (float)(py + 0.5 - g->cy);
                    float gu = dx * g->c + dy * g->s, gv = (-dx * g->s + dy * g->c) * g->inv_asp;
                    float gc[3];
                    float cov = gland_colour(g, gu, gv, t, gc);
                    if (cov > 0)
                        for (int k = 0; k < 3; k++)
                            col[k] += (gc[k] - col[k]) * cov;
                }
                for (int k = 0; k < 3; k++)
                    out[3 * c + k] = to_u8(BG[k] + (col[k] - BG[k]) * alpha);
            }
        }
    }
    free(lat);
    free(cells);
    return 0;
}

/* ---- scene -------------------------------------------------------------------------------------- */

static int panda_init(pgd_synth_slide *s, pgd_err *err)
{
    panda *pd = calloc(1, sizeof *pd);
    if (!pd)
        return pgd_fail(err, PGD_ENOMEM, "panda: out of memory");
    pgd_rng r;
    pgd_rng_seed(&r, s->key ^ 0x70616E6461ull);
    double w = s->p.width, h = s->p.height;
    pd->nblobs = 2 + (int)pgd_rng_below(&r, MAX_BLOBS - 1);
    double amean = 0;
    for (int k = 0; k < pd->nblobs; k++) {
        blob *b = &pd->blobs[k];
        b->cx = w * (0.18 + 0.64 * pgd_rng_uniform(&r));
        b->cy = h * (0.18 + 0.64 * pgd_rng_uniform(&r));
        double a = w * (0.08 + 0.20 * pgd_rng_uniform(&r)) * s->p.tissue;
        double bb = h * (0.07 + 0.13 * pgd_rng_uniform(&r)) * s->p.tissue;
        double th = (pgd_rng_uniform(&r) - 0.5) * 1.6;
        b->c = cos(th);
        b->s = sin(th);
        b->ia2 = 1.0 / (a * a);
        b->ib2 = 1.0 / (bb * bb);
        amean += (a + bb) / 2 / pd->nblobs;
    }
    pd->noise_freq = 1.0 / (0.05 * (w + h) / 2);
    pd->noise_amp = 0.45;
    /* Near the edge the blob term changes by about 2/a per pixel: ramp over ~2 units. */
    pd->edge = 4.0 * s->unit / amean;
    if (pd->edge < 1e-6)
        pd->edge = 1e-6;
    pd->cell_px = CELL * s->unit;
    pd->tex_k1 = 1.0 / (1.5 * s->unit);
    pd->tex_k2 = 1.0 / (0.6 * s->unit);
    texture_init(pd, &r);
    s->state = pd;
    return 0;
}

static void panda_info(const pgd_synth_slide *s, pgd_synth_info *out)
{
    snprintf(out->detail, sizeof out->detail, "%s", GLEASON[s->label]);
    out->signal_px = 2 * GLAND_R * (1 + GLAND_R_VAR) * s->unit;
}

static void panda_fini(pgd_synth_slide *s)
{
    free(s->state);
    s->state = NULL;
}

const pgd_synth_task_ops pgd_synth_panda_ops = {
    .classes = 6,
    .default_fit = 2048,
    .init = panda_init,
    .render = panda_render,
    .info = panda_info,
    .fini = panda_fini,
};
