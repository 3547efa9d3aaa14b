/* cpu_conv.c: 2-D convolution on the CPU: im2col + OpenBLAS sgemm over tiles of output columns, 1x1 convs
 * straight into sgemm, stride-1 backward-data as a forward conv, direct loops for depthwise convs. */
#include <cblas.h>
#include <string.h>

#include "trainer/cpu_int.h"

/* The per-group matrix view of a conv: out_g [kg, P] = w_g [kg, K] x col_g [K, P], where col_g holds, for each
 * (input channel, kernel row, kernel column), the input values that tap meets at each of the P output cells. */
typedef struct conv_dims {
    int cg, kg;     /* input / output channels per group */
    int P;          /* output cells per image: oh * ow */
    int HW;         /* input cells per image: h * w */
    int K;          /* cg * r * s */
} conv_dims;

static conv_dims dims_of(const pgd_conv_shape *sh)
{
    conv_dims d;
    d.cg = sh->c / sh->groups;
    d.kg = sh->k / sh->groups;
    d.P = sh->oh * sh->ow;
    d.HW = sh->h * sh->w;
    d.K = d.cg * sh->r * sh->s;
    return d;
}

/* 1x1, stride 1, no padding: the input planes already are the column matrix. */
static int is_pointwise(const pgd_conv_shape *sh)
{
    return sh->r == 1 && sh->s == 1 && sh->stride == 1 && sh->pad == 0;
}

/* One input channel per group (depthwise and its channel-multiplier variant): direct loops. */
static int is_depthwise(const pgd_conv_shape *sh)
{
    return sh->groups > 1 && sh->c == sh->groups;
}

/* The output columns [*lo, *hi) whose input column ox * stride - pad + ks lies inside [0, w). */
static void valid_cols(const pgd_conv_shape *sh, int ks, int *lo, int *hi)
{
    int first = sh->pad - ks > 0 ? (sh->pad - ks + sh->stride - 1) / sh->stride : 0;
    int last = sh->w - 1 + sh->pad - ks; /* largest ox * stride allowed */
    int end = last >= 0 ? last / sh->stride + 1 : 0;
    if (first > sh->ow)
        first = sh->ow;
    if (end > sh->ow)
        end = sh->ow;
    if (end < first)
        end = first;
    *lo = first;
    *hi = end;
}

/* col [channels * r * s, (oy1 - oy0) * ow] (row stride ldcol) <- the taps of in [channels, h, w] for output rows
 * [oy0, oy1); padding reads as 0. */
static void im2col(float *col, size_t ldcol, const float *in, int channels, int oy0, int oy1,
                   const pgd_conv_shape *sh)
{
    for (int ch = 0; ch < channels; ch++) {
        const float *plane = in + (size_t)ch * sh->h * sh->w;
        for (int kr = 0; kr < sh->r; kr++) {
            for (int ks = 0; ks < sh->s; ks++) {
                float *row = col + (size_t)((ch * sh->r + kr) * sh->s + ks) * ldcol;
                int lo, hi;
                valid_cols(sh, ks, &lo, &hi);
                for (int oy = oy0; oy < oy1; oy++) {
                    float *dst = row + (size_t)(oy - oy0) * sh->ow;
                    int iy = oy * sh->stride - sh->pad + kr;
                    if (iy < 0 || iy >= sh->h) {
                        memset(dst, 0, (size_t)sh->ow * sizeof(float));
                        continue;
                    }
                    const float *src = plane + (size_t)iy * sh->w - sh->pad + ks;
                    for (int ox = 0; ox < lo; ox++)
                        dst[ox] = 0.0f;
                    if (sh->stride == 1) {
                        memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
                    } else if (sh->stride == 2) { /* a constant stride: a tighter loop */
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[2 * ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[ox * sh->stride];
                    }
                    for (int ox = hi; ox < sh->ow; ox++)
                        dst[ox] = 0.0f;
                }
            }
        }
    }
}

/* dst[i] += src[i]: unrolled by 8 over non-overlapping rows so that the compiler emits vector adds. */
static void add_row(float *restrict dst, const float *restrict src, int count)
{
    int i = 0;
    for (; i + 8 <= count; i += 8)
        for (int j = 0; j < 8; j++)
            dst[i + j] += src[i + j];
    for (; i < count; i++)
        dst[i] += src[i];
}

/* din [channels, h, w] += the columns of output rows [oy0, oy1) folded back onto the input (im2col's
 * adjoint). */
static void col2im_add(float *din, const float *col, size_t ldcol, int channels, int oy0, int oy1,
                       const pgd_conv_shape *sh)
{
    for (int ch = 0; ch < channels; ch++) {
        float *plane = din + (size_t)ch * sh->h * sh->w;
        for (int kr = 0; kr < sh->r; kr++) {
            for (int ks = 0; ks < sh->s; ks++) {
                const float *row = col + (size_t)((ch * sh->r + kr) * sh->s + ks) * ldcol;
                int lo, hi;
                valid_cols(sh, ks, &lo, &hi);
                for (int oy = oy0; oy < oy1; oy++) {
                    int iy = oy * sh->stride - sh->pad + kr;
                    if (iy < 0 || iy >= sh->h)
                        continue;
                    const float *src = row + (size_t)(oy - oy0) * sh->ow;
                    float *dst = plane + (size_t)iy * sh->w - sh->pad + ks;
                    if (sh->stride == 1) {
                        add_row(dst + lo, src + lo, hi - lo);
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox * sh->stride] += src[ox];
                    }
                }
            }
        }
    }
}

/* --- depthwise: out channel o reads input channel o / kg only ------------------------------------------ */

static void dw_forward(float *out, const float *in, const float *w, const float *bias, const pgd_conv_shape *sh)
{
    conv_dims d = dims_of(sh);
    for (int img = 0; img < sh->n; img++) {
        for (int o = 0; o < sh->k; o++) {
            const float *plane = in + ((size_t)img * sh->c + o / d.kg) * d.HW;
            const float *wo = w + (size_t)o * sh->r * sh->s;
            float *dst = out + ((size_t)img * sh->k + o) * d.P;
            float b = bias ? bias[o] : 0.0f;
            for (int p = 0; p < d.P; p++)
                dst[p] = b;
            for (int kr = 0; kr < sh->r; kr++) {
                for (int ks = 0; ks < sh->s; ks++) {
                    float wv = wo[kr * sh->s + ks];
                    int lo, hi;
                    valid_cols(sh, ks, &lo, &hi);
                    for (int oy = 0; oy < sh->oh; oy++) {
                        int iy = oy * sh->stride - sh->pad + kr;
                        if (iy < 0 || iy >= sh->h)
                            continue;
                        const float *src = plane + (size_t)iy * sh->w - sh->pad + ks;
                        float *row = dst + (size_t)oy * sh->ow;
                        for (int ox = lo; ox < hi; ox++)
                            row[ox] += wv * src[ox * sh->stride];
                    }
                }
            }
        }
    }
}

static void dw_backward_data(float *din, const float *dout, const float *w, const pgd_conv_shape *sh)
{
    conv_dims d = dims_of(sh);
    memset(din, 0, (size_t)sh->n * sh->c * d.HW * sizeof(float));
    for (int img = 0; img < sh->n; img++) {
        for (int o = 0; o < sh->k; o++) {
            float *plane = din + ((size_t)img * sh->c + o / d.kg) * d.HW;
            const float *wo = w + (size_t)o * sh->r * sh->s;
            const float *src = dout + ((size_t)img * sh->k + o) * d.P;
            for (int kr = 0; kr < sh->r; kr++) {
                for (int ks = 0; ks < sh->s; ks++) {
                    float wv = wo[kr * sh->s + ks];
                    int lo, hi;
                    valid_cols(sh, ks, &lo, &hi);
                    for (int oy = 0; oy < sh->oh; oy++) {
                        int iy = oy * sh->stride - sh->pad + kr;
                        if (iy < 0 || iy >= sh->h)
                            continue;
                        float *dst = plane + (size_t)iy * sh->w - sh->pad + ks;
                        const float *row = src + (size_t)oy * sh->ow;
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox * sh->stride] += wv * row[ox];
                    }
                }
            }
        }
    }
}

static void dw_backward_filter(float *dw, const float *dout, const float *in, const pgd_conv_shape *sh)
{
    conv_dims d = dims_of(sh);
    for (int o = 0; o < sh->k; o++) {
        float *dwo = dw + (size_t)o * sh->r * sh->s;
        for (int kr = 0; kr < sh->r; kr++) {
            for (int ks = 0; ks < sh->s; ks++) {
                int lo, hi;
                valid_cols(sh, ks, &lo, &hi);
                double sum = 0.0;
                for (int img = 0; img < sh->n; img++) {
                    const float *plane = in + ((size_t)img * sh->c + o / d.kg) * d.HW;
                    const float *g = dout + ((size_t)img * sh->k + o) * d.P;
                    for (int oy = 0; oy < sh->oh; oy++) {
                        int iy = oy * sh->stride - sh->pad + kr;
                        if (iy < 0 || iy >= sh->h)
                            continue;
                        const float *src = plane + (size_t)iy * sh->w - sh->pad + ks;
                        const float *row = g + (size_t)oy * sh->ow;
                        float part = 0.0f;
                        for (int ox = lo; ox < hi; ox++)
                            part += row[ox] * src[ox * sh->stride];
                        sum += part;
                    }
                }
                dwo[kr * sh->s + ks] += (float)sum;
            }
        }
    }
}

/* --- tiles: which output columns one sgemm covers ---------------------------------------------------------- */

/* A tile is the output rows [oy0, oy1) of images [img, img + nimg): either a band of rows of one large image
 * (so the column buffer stays in cache) or several whole small images (so the sgemm is not too thin). Its
 * columns are image-major: image i's rows start at column i * (oy1 - oy0) * ow. */
typedef struct conv_tile {
    int img, nimg, oy0, oy1;
    int width;              /* columns: nimg * (oy1 - oy0) * ow */
} conv_tile;

#define COL_TILE_FLOATS ((size_t)1 << 19) /* aim for a 2 MiB column tile */
#define MIN_TILE_COLS 256                 /* but no thinner than this when the batch allows */

/* Images per tile and rows per tile for this conv (one of the two is 1 image / all rows). */
static void plan_tiles(const pgd_conv_shape *sh, const conv_dims *d, int *nimg, int *rows)
{
    size_t target = COL_TILE_FLOATS / (size_t)d->K;
    if (target < MIN_TILE_COLS)
        target = MIN_TILE_COLS;
    if ((size_t)d->P >= target) {
        *nimg = 1;
        *rows = (int)(target / (size_t)sh->ow);
        *rows = *rows < 1 ? 1 : *rows > sh->oh ? sh->oh : *rows;
    } else {
        *nimg = (int)(target / (size_t)d->P);
        *nimg = *nimg < 1 ? 1 : *nimg > sh->n ? sh->n : *nimg;
        *rows = sh->oh;
    }
}

/* The t-th tile of the plan; returns 0 past the last one. */
static int next_tile(const pgd_conv_shape *sh, int nimg, int rows, int t, conv_tile *tile)
{
    int bands = (sh->oh + rows - 1) / rows;
    tile->img = (t / bands) * nimg;
    if (tile->img >= sh->n)
        return 0;
    tile->nimg = sh->n - tile->img < nimg ? sh->n - tile->img : nimg;
    tile->oy0 = (t % bands) * rows;
    tile->oy1 = tile->oy0 + rows < sh->oh ? tile->oy0 + rows : sh->oh;
    tile->width = tile->nimg * (tile->oy1 - tile->oy0) * sh->ow;
    return 1;
}

/* Scratch for one tile of the plan: the column matrix [K, width] then a staging matrix [kg, width]. */
static float *tile_scratch(pgd_backend *be, const pgd_conv_shape *sh, const conv_dims *d, int nimg, int rows,
                           float **stage)
{
    size_t width = (size_t)nimg * rows * sh->ow;
    float *col = pgd_cpu_scratch(be, PGD_CPU_SCRATCH_COLS, ((size_t)d->K + d->kg) * width);
    if (col)
        *stage = col + (size_t)d->K * width;
    return col;
}

/* The tile's column matrix for group g: in place when a 1x1 conv reads one image, else built by im2col. (Threads
 * for im2col / col2im were measured and did not pay: OpenBLAS's own threads are still spinning then.) */
static const float *tile_cols(float *col, size_t *ld, const float *in, int g, const conv_tile *t,
                              const pgd_conv_shape *sh, const conv_dims *d)
{
    size_t band = (size_t)(t->oy1 - t->oy0) * sh->ow;
    if (is_pointwise(sh) && t->nimg == 1) {
        *ld = (size_t)d->P;
        return in + ((size_t)t->img * sh->c + (size_t)g * d->cg) * d->HW + (size_t)t->oy0 * sh->ow;
    }
    for (int i = 0; i < t->nimg; i++)
        im2col(col + i * band, (size_t)t->width, in + ((size_t)(t->img + i) * sh->c + (size_t)g * d->cg) * d->HW,
               d->cg, t->oy0, t->oy1, sh);
    *ld = (size_t)t->width;
    return col;
}

/* The tile's slice [kg, width] of the output-side tensor x [n, k, P] for group g: in place for one image, else
 * gathered into stage when gather is set (stage is then also where a result goes before scatter_stage). */
static float *tile_outs(float *stage, size_t *ld, float *x, int g, const conv_tile *t, int gather,
                        const pgd_conv_shape *sh, const conv_dims *d)
{
    if (t->nimg == 1) {
        *ld = (size_t)d->P;
        return x + ((size_t)t->img * sh->k + (size_t)g * d->kg) * d->P + (size_t)t->oy0 * sh->ow;
    }
    for (int o = 0; gather && o < d->kg; o++)
        for (int i = 0; i < t->nimg; i++)
            memcpy(stage + (size_t)o * t->width + (size_t)i * d->P,
                   x + ((size_t)(t->img + i) * sh->k + (size_t)g * d->kg + o) * d->P, (size_t)d->P * sizeof(float));
    *ld = (size_t)t->width;
    return stage;
}

/* The inverse of tile_outs' gather for a tile of whole images: stage -> x [n, k, P]. */
static void scatter_stage(float *x, const float *stage, int g, const conv_tile *t, const pgd_conv_shape *sh,
                          const conv_dims *d)
{
    for (int o = 0; o < d->kg; o++)
        for (int i = 0; i < t->nimg; i++)
            memcpy(x + ((size_t)(t->img + i) * sh->k + (size_t)g * d->kg + o) * d->P,
                   stage + (size_t)o * t->width + (size_t)i * d->P, (size_t)d->P * sizeof(float));
}

/* --- the op entry points -------------------------------------------------------------------------------- */

void pgd_cpu_conv_add_bias(float *out, const float *bias, const pgd_conv_shape *sh)
{
    size_t P = (size_t)sh->oh * sh->ow;
    for (int img = 0; img < sh->n; img++)
        for (int o = 0; o < sh->k; o++) {
            float *dst = out + ((size_t)img * sh->k + o) * P;
            for (size_t p = 0; p < P; p++)
                dst[p] += bias[o];
        }
}

/* Per tile and group: out_g [kg, width] = w_g [kg, K] x col [K, width]. */
void pgd_cpu_conv2d_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *bias,
                            const pgd_conv_shape *sh)
{
    if (be->err.code)
        return;
    if (is_depthwise(sh)) {
        dw_forward(out, in, w, bias, sh);
        return;
    }
    conv_dims d = dims_of(sh);
    int nimg, rows;
    plan_tiles(sh, &d, &nimg, &rows);
    float *stage, *col = tile_scratch(be, sh, &d, nimg, rows, &stage);
    if (!col)
        return;
    conv_tile t;
    for (int ti = 0; next_tile(sh, nimg, rows, ti, &t); ti++) {
        for (int g = 0; g < sh->groups; g++) {
            size_t ldb, ldc;
            const float *B = tile_cols(col, &ldb, in, g, &t, sh, &d);
            float *C = tile_outs(stage, &ldc, out, g, &t, 0, sh, &d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.kg, t.width, d.K, 1.0f,
                        w + (size_t)g * d.kg * d.K, d.K, B, (int)ldb, 0.0f, C, (int)ldc);
            if (t.nimg > 1)
                scatter_stage(out, stage, g, &t, sh, &d);
        }
    }
    if (bias)
        pgd_cpu_conv_add_bias(out, bias, sh);
}

/* With stride 1 and pad < r = s, the gradient of the input is itself a convolution: of dout, padded by
 * r - 1 - pad, with the weights flipped in space and input / output channels swapped within each group. That
 * runs as a forward conv (im2col reads, a deep sgemm, no col2im scatter), which is faster. */
static int backward_as_forward(const pgd_conv_shape *sh)
{
    return sh->stride == 1 && sh->r == sh->s && sh->pad < sh->r && !is_pointwise(sh) && !is_depthwise(sh);
}

static void backward_data_by_forward(pgd_backend *be, float *din, const float *dout, const float *w,
                                     const pgd_conv_shape *sh)
{
    conv_dims d = dims_of(sh);
    int rs = sh->r * sh->s;
    float *wt = pgd_cpu_scratch(be, PGD_CPU_SCRATCH_WEIGHTS, (size_t)sh->k * d.K);
    if (!wt)
        return;
    /* wt [c, kg, r, s]: wt[g cg + ci][j][r-1-kr][s-1-ks] = w[g kg + j][ci][kr][ks] */
    for (int g = 0; g < sh->groups; g++)
        for (int j = 0; j < d.kg; j++)
            for (int ci = 0; ci < d.cg; ci++) {
                const float *src = w + ((size_t)(g * d.kg + j) * d.cg + ci) * rs;
                float *dst = wt + ((size_t)(g * d.cg + ci) * d.kg + j) * rs;
                for (int t = 0; t < rs; t++)
                    dst[rs - 1 - t] = src[t];
            }
    pgd_conv_shape tr = {sh->n, sh->k, sh->oh, sh->ow, sh->c, sh->r, sh->s, 1, sh->r - 1 - sh->pad, sh->groups,
                         0, 0};
    if (pgd_conv_shape_init(&tr, &be->err) != 0)
        return;
    pgd_cpu_conv2d_forward(be, din, dout, wt, NULL, &tr);
}

/* Per tile and group: col [K, width] = w_g^T [K, kg] x dout_g [kg, width], folded back onto din by col2im;
 * a 1x1 conv over one image writes din directly. */
void pgd_cpu_conv2d_backward_data(pgd_backend *be, float *din, const float *dout, const float *w,
                                  const pgd_conv_shape *sh)
{
    if (be->err.code)
        return;
    if (is_depthwise(sh)) {
        dw_backward_data(din, dout, w, sh);
        return;
    }
    if (backward_as_forward(sh)) {
        backward_data_by_forward(be, din, dout, w, sh);
        return;
    }
    conv_dims d = dims_of(sh);
    int nimg, rows;
    plan_tiles(sh, &d, &nimg, &rows);
    float *stage, *col = tile_scratch(be, sh, &d, nimg, rows, &stage);
    if (!col)
        return;
    int direct = is_pointwise(sh) && nimg == 1;
    if (!direct)
        memset(din, 0, (size_t)sh->n * sh->c * d.HW * sizeof(float));
    conv_tile t;
    for (int ti = 0; next_tile(sh, nimg, rows, ti, &t); ti++) {
        for (int g = 0; g < sh->groups; g++) {
            size_t ldb;
            const float *B = tile_outs(stage, &ldb, (float *)dout, g, &t, 1, sh, &d);
            const float *w_g = w + (size_t)g * d.kg * d.K;
            if (direct) { /* din_g [cg, width] = w_g^T [cg, kg] x dout_g [kg, width] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.cg, t.width, d.kg, 1.0f, w_g, d.K, B,
                            (int)ldb, 0.0f,
                            din + ((size_t)t.img * sh->c + (size_t)g * d.cg) * d.HW + (size_t)t.oy0 * sh->ow,
                            d.HW);
                continue;
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.K, t.width, d.kg, 1.0f, w_g, d.K, B, (int)ldb,
                        0.0f, col, t.width);
            size_t band = (size_t)(t.oy1 - t.oy0) * sh->ow;
            for (int i = 0; i < t.nimg; i++)
                col2im_add(din + ((size_t)(t.img + i) * sh->c + (size_t)g * d.cg) * d.HW, col + i * band,
                           (size_t)t.width, d.cg, t.oy0, t.oy1, sh);
        }
    }
}

/* dbias [k] += the sums of dout [n, k, oh, ow] over images and cells (per image in float, over images in
 * double). */
void pgd_cpu_conv_bias_grad(float *dbias, const float *dout, const pgd_conv_shape *sh)
{
    size_t cells = (size_t)sh->oh * sh->ow;
    for (int o = 0; o < sh->k; o++) {
        double sum = 0.0;
        for (int img = 0; img < sh->n; img++) {
            const float *g = dout + ((size_t)img * sh->k + o) * cells;
            float part = 0.0f;
            for (size_t p = 0; p < cells; p++)
                part += g[p];
            sum += part;
        }
        dbias[o] += (float)sum;
    }
}

/* Per tile and group: dw_g [kg, K] += dout_g [kg, width] x col^T [width, K]. */
void pgd_cpu_conv2d_backward_filter(pgd_backend *be, float *dw, float *dbias, const float *dout, const float *in,
                                    const pgd_conv_shape *sh)
{
    if (be->err.code)
        return;
    conv_dims d = dims_of(sh);
    if (dbias)
        pgd_cpu_conv_bias_grad(dbias, dout, sh);
    if (is_depthwise(sh)) {
        dw_backward_filter(dw, dout, in, sh);
        return;
    }
    int nimg, rows;
    plan_tiles(sh, &d, &nimg, &rows);
    float *stage, *col = tile_scratch(be, sh, &d, nimg, rows, &stage);
    if (!col)
        return;
    conv_tile t;
    for (int ti = 0; next_tile(sh, nimg, rows, ti, &t); ti++) {
        for (int g = 0; g < sh->groups; g++) {
            size_t lda, ldb;
            const float *A = tile_outs(stage, &lda, (float *)dout, g, &t, 1, sh, &d);
            const float *B = tile_cols(col, &ldb, in, g, &t, sh, &d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.kg, d.K, t.width, 1.0f, A, (int)lda, B,
                        (int)ldb, 1.0f, dw + (size_t)g * d.kg * d.K, d.K);
        }
    }
}
