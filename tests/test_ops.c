/* test_ops.c: every op of the CPU backend against plain double-precision references and central differences. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "cunit_util.h"
#include "trainer/backend.h"
#include "trainer/gpu_kernels.h"

/* Tolerances (all checks are |got - want| <= ATOL + RTOL |want|):
 * - forward and backward against the double reference: 1e-4 abs + 1e-4 rel. fp32 sums of at most a few hundred
 *   products of values in [-1, 1] are off by ~1e-6; a wrong index is off by ~0.1 or more.
 * - finite differences: h = 1e-2 (the float inputs are O(1)); the difference is divided by the perturbation
 *   actually stored in the float. Ops linear in the perturbed tensor (conv, linear, pooling, dropout, gather)
 *   make central differences exact up to fp32 rounding of L: 2e-3 abs + 2e-3 rel. Batch norm and softmax are
 *   smooth, with a truncation error of O(h^2): 5e-3 abs + 5e-3 rel. Max pooling and relu get inputs at least
 *   5h away from their kinks so no perturbation changes the winning cell or the active set. */
#define REF_ATOL 1e-4
#define REF_RTOL 1e-4
#define FD_H 1e-2
#define FD_TOL 2e-3
#define FD_TOL_SMOOTH 5e-3
#define FD_MAX_POINTS 96   /* coordinates checked per tensor (all of them when fewer) */
#define FD_BIG_POINTS 12   /* for the few large conv shapes, whose forward passes cost more */

static size_t fd_points = FD_MAX_POINTS;

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

/* Uniform in [-1, 1), with 24 random bits so it is exact in a float. */
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((int64_t)(rng_state >> 40) - (1 << 23)) / (float)(1 << 23);
}

static float *rand_floats(size_t count)
{
    float *p = malloc(count * sizeof(float));
    CU_ASSERT_FATAL(p != NULL);
    for (size_t i = 0; i < count; i++)
        p[i] = frand();
    return p;
}

static float *fill_floats(size_t count, float v)
{
    float *p = malloc(count * sizeof(float));
    CU_ASSERT_FATAL(p != NULL);
    for (size_t i = 0; i < count; i++)
        p[i] = v;
    return p;
}

static double *zero_doubles(size_t count)
{
    double *p = calloc(count ? count : 1, sizeof(double));
    CU_ASSERT_FATAL(p != NULL);
    return p;
}

static pgd_backend *new_backend(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(2, &err);
    CU_ASSERT_FATAL(be != NULL);
    return be;
}

/* Compare got (minus `base`, divided by `times`) with want; print the worst errors. Returns failures. */
static int compare_scaled(const char *what, const float *got, float base, double times, const double *want,
                          size_t count, double atol, double rtol)
{
    double max_abs = 0.0, max_rel = 0.0;
    int bad = 0;
    for (size_t i = 0; i < count; i++) {
        double g = ((double)got[i] - base) / times, e = fabs(g - want[i]);
        if (!(e <= atol + rtol * fabs(want[i]))) { /* NaN fails too */
            if (bad < 3)
                printf("\n    %s[%zu]: got %.8g want %.8g", what, i, g, want[i]);
            bad++;
        }
        if (e > max_abs || e != e)
            max_abs = e;
        if (fabs(want[i]) > 1e-3 && e / fabs(want[i]) > max_rel)
            max_rel = e / fabs(want[i]);
    }
    printf("\n    %-34s max abs err %.2e  max rel err %.2e  (%zu values)%s", what, max_abs, max_rel, count,
           bad ? "  FAIL" : "");
    CU_ASSERT_EQUAL(bad, 0);
    return bad;
}

static int compare(const char *what, const float *got, const double *want, size_t count, double atol, double rtol)
{
    return compare_scaled(what, got, 0.0f, 1.0, want, count, atol, rtol);
}

/* --- finite differences --------------------------------------------------------------------------------- */

/* A forward pass to differentiate: run() recomputes out[nout] from the current inputs. */
typedef struct fd_fn {
    void (*run)(void *ctx);
    void *ctx;
    const float *out;
    size_t nout;
    const float *R;         /* L = sum(out * R) */
} fd_fn;

static double fd_loss(const fd_fn *f)
{
    f->run(f->ctx);
    double L = 0.0;
    for (size_t i = 0; i < f->nout; i++)
        L += (double)f->out[i] * f->R[i];
    return L;
}

/* Check analytic[nx] = dL/dx by central differences at up to FD_MAX_POINTS coordinates of x. */
static void fd_check(const char *what, float *x, size_t nx, const float *analytic, const fd_fn *f, double tol)
{
    size_t step = nx > fd_points ? nx / fd_points : 1;
    double max_abs = 0.0;
    int bad = 0;
    for (size_t i = (size_t)(rng_state % step); i < nx; i += step) {
        float save = x[i];
        float xp = (float)(save + FD_H), xm = (float)(save - FD_H);
        x[i] = xp;
        double lp = fd_loss(f);
        x[i] = xm;
        double lm = fd_loss(f);
        x[i] = save;
        double fd = (lp - lm) / ((double)xp - (double)xm), e = fabs(fd - analytic[i]);
        if (!(e <= tol + tol * fabs(fd))) {
            if (bad < 3)
                printf("\n    %s[%zu]: analytic %.8g, central difference %.8g", what, i, analytic[i], fd);
            bad++;
        }
        if (e > max_abs || e != e)
            max_abs = e;
    }
    f->run(f->ctx);
    printf("\n    %-34s finite differences: max abs err %.2e%s", what, max_abs, bad ? "  FAIL" : "");
    CU_ASSERT_EQUAL(bad, 0);
}

/* --- convolution ----------------------------------------------------------------------------------------- */

/* Calls fn(ctx, out index, in index, w index) for every tap of the conv that meets a real input cell: the
 * definition of the conv, written once and plainly, shared by the forward and both backward references. */
static void conv_taps(const pgd_conv_shape *sh, void (*fn)(void *ctx, size_t o, size_t i, size_t w), void *ctx)
{
    int cg = sh->c / sh->groups, kg = sh->k / sh->groups;
    for (int n = 0; n < sh->n; n++)
        for (int k = 0; k < sh->k; k++)
            for (int oy = 0; oy < sh->oh; oy++)
                for (int ox = 0; ox < sh->ow; ox++)
                    for (int ci = 0; ci < cg; ci++)
                        for (int kr = 0; kr < sh->r; kr++)
                            for (int ks = 0; ks < sh->s; ks++) {
                                int iy = oy * sh->stride - sh->pad + kr, ix = ox * sh->stride - sh->pad + ks;
                                if (iy < 0 || iy >= sh->h || ix < 0 || ix >= sh->w)
                                    continue;
                                int c = (k / kg) * cg + ci;
                                size_t o = (((size_t)n * sh->k + k) * sh->oh + oy) * sh->ow + ox;
                                size_t i = (((size_t)n * sh->c + c) * sh->h + iy) * sh->w + ix;
                                size_t w = (((size_t)k * cg + ci) * sh->r + kr) * sh->s + ks;
                                fn(ctx, o, i, w);
                            }
}

typedef struct conv_ref {
    const float *in, *w, *dout;
    double *out, *din, *dw;
} conv_ref;

static void tap_forward(void *p, size_t o, size_t i, size_t w)
{
    conv_ref *r = p;
    r->out[o] += (double)r->in[i] * r->w[w];
}

static void tap_backward(void *p, size_t o, size_t i, size_t w)
{
    conv_ref *r = p;
    r->din[i] += (double)r->dout[o] * r->w[w];
    r->dw[w] += (double)r->dout[o] * r->in[i];
}

typedef struct conv_ctx {
    pgd_backend *be;
    const pgd_conv_shape *sh;
    float *in, *w, *b, *out;
} conv_ctx;

static void conv_run(void *p)
{
    conv_ctx *c = p;
    c->be->ops->conv2d_forward(c->be, c->out, c->in, c->w, c->b, c->sh);
}

/* One conv shape: forward, backward-data and backward-filter against the references, the = / += rules, then
 * finite differences for input, weights and bias. */
static void check_conv(pgd_backend *be, pgd_conv_shape sh, int with_bias)
{
    CU_ASSERT_FATAL(pgd_conv_shape_init(&sh, NULL) == 0);
    int cg = sh.c / sh.groups;
    size_t nin = (size_t)sh.n * sh.c * sh.h * sh.w, nout = (size_t)sh.n * sh.k * sh.oh * sh.ow;
    size_t nw = (size_t)sh.k * cg * sh.r * sh.s;
    printf("\n  conv n%d c%d %dx%d k%d %dx%d stride %d pad %d groups %d%s", sh.n, sh.c, sh.h, sh.w, sh.k, sh.r, sh.s,
           sh.stride, sh.pad, sh.groups, with_bias ? " bias" : "");
    float *in = rand_floats(nin), *w = rand_floats(nw), *b = with_bias ? rand_floats(sh.k) : NULL;
    float *dout = rand_floats(nout), *out = fill_floats(nout, 77.0f), *din = fill_floats(nin, 55.0f);
    float *dw = fill_floats(nw, 0.5f), *db = fill_floats(sh.k, 0.25f);
    conv_ref ref = {in, w, dout, zero_doubles(nout), zero_doubles(nin), zero_doubles(nw)};
    double *dbias = zero_doubles(sh.k);
    for (size_t i = 0; i < nout; i++) {
        size_t k = (i / ((size_t)sh.oh * sh.ow)) % (size_t)sh.k;
        ref.out[i] = b ? b[k] : 0.0;
        dbias[k] += dout[i];
    }
    conv_taps(&sh, tap_forward, &ref);
    conv_taps(&sh, tap_backward, &ref);

    be->ops->conv2d_forward(be, out, in, w, b, &sh);
    compare("forward", out, ref.out, nout, REF_ATOL, REF_RTOL);
    be->ops->conv2d_backward_data(be, din, dout, w, &sh); /* din was 55: must be overwritten */
    compare("backward data (=)", din, ref.din, nin, REF_ATOL, REF_RTOL);
    be->ops->conv2d_backward_filter(be, dw, b ? db : NULL, dout, in, &sh); /* dw was 0.5: must accumulate */
    compare_scaled("backward filter (+=)", dw, 0.5f, 1.0, ref.dw, nw, REF_ATOL, REF_RTOL);
    if (b)
        compare_scaled("backward bias (+=)", db, 0.25f, 1.0, dbias, sh.k, REF_ATOL, REF_RTOL);
    be->ops->conv2d_backward_filter(be, dw, b ? db : NULL, dout, in, &sh);
    compare_scaled("backward filter twice (2x)", dw, 0.5f, 2.0, ref.dw, nw, REF_ATOL, REF_RTOL);
    if (b)
        compare_scaled("backward bias twice (2x)", db, 0.25f, 2.0, dbias, sh.k, REF_ATOL, REF_RTOL);

    /* finite differences with R = dout: the analytic gradients are din, and dw, db from zero */
    memset(dw, 0, nw * sizeof(float));
    memset(db, 0, sh.k * sizeof(float));
    be->ops->conv2d_backward_filter(be, dw, b ? db : NULL, dout, in, &sh);
    conv_ctx ctx = {be, &sh, in, w, b, out};
    fd_fn f = {conv_run, &ctx, out, nout, dout};
    fd_check("d in", in, nin, din, &f, FD_TOL);
    fd_check("d weight", w, nw, dw, &f, FD_TOL);
    if (b)
        fd_check("d bias", b, sh.k, db, &f, FD_TOL);
    CU_ASSERT_EQUAL(pgd_backend_error(be, NULL), 0);
    free(in), free(w), free(b), free(dout), free(out), free(din), free(dw), free(db);
    free(ref.out), free(ref.din), free(ref.dw), free(dbias);
}

static void test_conv(void)
{
    static const pgd_conv_shape shapes[] = {
        /* n  c   h   w   k  r  s  stride pad groups */
        {2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 0, 0},     /* plain 3x3 */
        {2, 4, 11, 10, 6, 3, 3, 2, 1, 2, 0, 0},   /* stride 2, groups 2, odd sizes */
        {1, 3, 15, 13, 5, 7, 7, 2, 3, 1, 0, 0},   /* the 7x7 stem */
        {2, 2, 9, 8, 3, 7, 7, 1, 3, 1, 0, 0},     /* 7x7 stride 1 */
        {3, 8, 6, 7, 4, 1, 1, 1, 0, 1, 0, 0},     /* pointwise: no im2col */
        {2, 4, 7, 5, 6, 1, 1, 1, 0, 2, 0, 0},     /* grouped pointwise */
        {2, 4, 8, 9, 8, 1, 1, 2, 0, 1, 0, 0},     /* 1x1 stride 2 (downsample) */
        {2, 6, 9, 9, 6, 3, 3, 1, 1, 6, 0, 0},     /* depthwise */
        {2, 4, 10, 9, 4, 3, 3, 2, 1, 4, 0, 0},    /* depthwise stride 2 */
        {1, 3, 7, 6, 6, 3, 3, 1, 1, 3, 0, 0},     /* depthwise, two outputs per channel */
        {2, 2, 5, 4, 3, 3, 3, 1, 3, 1, 0, 0},     /* pad wider than the kernel */
        {2, 3, 6, 6, 4, 3, 3, 2, 0, 1, 0, 0},     /* stride 2, no padding */
        {2, 4, 7, 8, 6, 3, 3, 1, 1, 2, 0, 0},     /* groups 2, stride 1 (backward data as a forward conv) */
        {1, 2, 9, 9, 2, 5, 5, 1, 1, 1, 0, 0},     /* 5x5 pad 1 */
        /* big enough for cpu_conv.c's tiling: bands of output rows of one image, and tiles of 2 images */
        {1, 64, 33, 31, 8, 3, 3, 1, 1, 1, 0, 0},  /* 2 bands of rows */
        {1, 64, 75, 61, 4, 3, 3, 2, 1, 1, 0, 0},  /* 2 bands, stride 2 */
        {1, 512, 33, 32, 3, 1, 1, 1, 0, 1, 0, 0}, /* 1x1 read and written in place, 2 bands */
        {3, 64, 20, 20, 4, 3, 3, 1, 1, 1, 0, 0},  /* tiles of 2 whole images, then 1 */
    };
    pgd_backend *be = new_backend();
    rng_seed(1);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        fd_points = (size_t)shapes[i].c * shapes[i].h * shapes[i].w > 10000 ? FD_BIG_POINTS : FD_MAX_POINTS;
        check_conv(be, shapes[i], i % 3 != 2);
    }
    fd_points = FD_MAX_POINTS;
    pgd_backend_free(&be);
    CU_ASSERT_PTR_NULL(be);
}

/* --- batch norm ------------------------------------------------------------------------------------------ */

typedef struct bn_ctx {
    pgd_backend *be;
    const pgd_bn_shape *sh;
    float *in, *gamma, *beta, *out, *mean, *invstd;
} bn_ctx;

static void bn_run(void *p)
{
    bn_ctx *c = p;
    c->be->ops->bn_forward_train(c->be, c->out, c->mean, c->invstd, NULL, NULL, c->in, c->gamma, c->beta, c->sh);
}

static void check_bn(pgd_backend *be, pgd_bn_shape sh)
{
    size_t N = (size_t)sh.n * sh.hw, count = N * sh.c;
    printf("\n  batch norm n%d c%d hw%d", sh.n, sh.c, sh.hw);
    float *in = rand_floats(count), *gamma = rand_floats(sh.c), *beta = rand_floats(sh.c);
    float *dout = rand_floats(count), *out = fill_floats(count, 9.0f), *din = fill_floats(count, 9.0f);
    float *mean = fill_floats(sh.c, 0.0f), *invstd = fill_floats(sh.c, 0.0f);
    float *rm = rand_floats(sh.c), *rv = fill_floats(sh.c, 0.0f), *dg = fill_floats(sh.c, 0.5f);
    float *dbt = fill_floats(sh.c, 0.5f), *rm0 = malloc(sh.c * sizeof(float));
    for (int c = 0; c < sh.c; c++)
        rv[c] = 1.0f + 0.5f * frand(), in[c] += 3.0f; /* a mean away from 0 */
    memcpy(rm0, rm, sh.c * sizeof(float));
    double *r_out = zero_doubles(count), *r_eval = zero_doubles(count), *r_din = zero_doubles(count);
    double *r_mean = zero_doubles(sh.c), *r_inv = zero_doubles(sh.c), *r_rm = zero_doubles(sh.c);
    double *r_rv = zero_doubles(sh.c), *r_dg = zero_doubles(sh.c), *r_db = zero_doubles(sh.c);
    for (int c = 0; c < sh.c; c++) {
#define X(i) in[((size_t)((i) / sh.hw) * sh.c + c) * sh.hw + (i) % sh.hw]
#define DY(i) dout[((size_t)((i) / sh.hw) * sh.c + c) * sh.hw + (i) % sh.hw]
#define AT(i) (((size_t)((i) / sh.hw) * sh.c + c) * sh.hw + (i) % sh.hw)
        double mu = 0.0, var = 0.0;
        for (size_t i = 0; i < N; i++)
            mu += X(i);
        mu /= N;
        for (size_t i = 0; i < N; i++)
            var += (X(i) - mu) * (X(i) - mu);
        var /= N;
        double inv = 1.0 / sqrt(var + sh.eps), einv = 1.0 / sqrt(rv[c] + (double)sh.eps);
        r_mean[c] = mu, r_inv[c] = inv;
        r_rm[c] = 0.9 * rm0[c] + 0.1 * mu;
        r_rv[c] = 0.9 * rv[c] + 0.1 * var * N / (N - 1);
        /* the textbook chain rule through var and mean, not the compact formula the backend uses */
        double dvar = 0.0, dmu = 0.0;
        for (size_t i = 0; i < N; i++) {
            r_out[AT(i)] = gamma[c] * (X(i) - mu) * inv + beta[c];
            r_eval[AT(i)] = gamma[c] * (X(i) - rm0[c]) * einv + beta[c];
            dvar += DY(i) * gamma[c] * (X(i) - mu) * -0.5 * inv * inv * inv;
            dmu += -DY(i) * gamma[c] * inv;
            r_dg[c] += DY(i) * (X(i) - mu) * inv;
            r_db[c] += DY(i);
        }
        for (size_t i = 0; i < N; i++)
            r_din[AT(i)] = DY(i) * gamma[c] * inv + dvar * 2.0 * (X(i) - mu) / N + dmu / N;
#undef X
#undef DY
#undef AT
    }
    be->ops->bn_forward_eval(be, out, in, gamma, beta, rm, rv, &sh);
    compare("eval forward", out, r_eval, count, REF_ATOL, REF_RTOL);
    be->ops->bn_forward_train(be, out, mean, invstd, rm, rv, in, gamma, beta, &sh);
    compare("train forward", out, r_out, count, REF_ATOL, REF_RTOL);
    compare("saved mean", mean, r_mean, sh.c, REF_ATOL, REF_RTOL);
    compare("saved invstd", invstd, r_inv, sh.c, REF_ATOL, REF_RTOL);
    compare("running mean (momentum 0.1)", rm, r_rm, sh.c, REF_ATOL, REF_RTOL);
    compare("running var (unbiased)", rv, r_rv, sh.c, REF_ATOL, REF_RTOL);
    be->ops->bn_backward(be, din, dg, dbt, dout, in, gamma, mean, invstd, &sh);
    compare("backward d in (=)", din, r_din, count, REF_ATOL, REF_RTOL);
    compare_scaled("backward d gamma (+=)", dg, 0.5f, 1.0, r_dg, sh.c, REF_ATOL, REF_RTOL);
    compare_scaled("backward d beta (+=)", dbt, 0.5f, 1.0, r_db, sh.c, REF_ATOL, REF_RTOL);
    be->ops->bn_backward(be, din, dg, dbt, dout, in, gamma, mean, invstd, &sh);
    compare_scaled("backward d gamma twice (2x)", dg, 0.5f, 2.0, r_dg, sh.c, REF_ATOL, REF_RTOL);
    compare_scaled("backward d beta twice (2x)", dbt, 0.5f, 2.0, r_db, sh.c, REF_ATOL, REF_RTOL);

    memset(dg, 0, sh.c * sizeof(float));
    memset(dbt, 0, sh.c * sizeof(float));
    be->ops->bn_backward(be, din, dg, dbt, dout, in, gamma, mean, invstd, &sh);
    bn_ctx ctx = {be, &sh, in, gamma, beta, out, mean, invstd};
    fd_fn f = {bn_run, &ctx, out, count, dout};
    fd_check("d in", in, count, din, &f, FD_TOL_SMOOTH);
    fd_check("d gamma", gamma, sh.c, dg, &f, FD_TOL_SMOOTH);
    fd_check("d beta", beta, sh.c, dbt, &f, FD_TOL_SMOOTH);
    free(in), free(gamma), free(beta), free(dout), free(out), free(din), free(mean), free(invstd), free(rm);
    free(rv), free(dg), free(dbt), free(rm0), free(r_out), free(r_eval), free(r_din), free(r_mean), free(r_inv);
    free(r_rm), free(r_rv), free(r_dg), free(r_db);
}

static void test_batch_norm(void)
{
    pgd_backend *be = new_backend();
    rng_seed(2);
    check_bn(be, (pgd_bn_shape){2, 3, 25, 1e-5f, 0.1f});
    check_bn(be, (pgd_bn_shape){5, 2, 1, 1e-5f, 0.1f}); /* after global pooling */
    check_bn(be, (pgd_bn_shape){1, 4, 9, 1e-5f, 0.1f});
    pgd_backend_free(&be);
}

/* --- pooling --------------------------------------------------------------------------------------------- */

typedef struct pool_ctx {
    pgd_backend *be;
    const pgd_pool_shape *sh;
    float *in, *out;
    int max;
} pool_ctx;

static void pool_run(void *p)
{
    pool_ctx *c = p;
    if (c->max)
        c->be->ops->maxpool_forward(c->be, c->out, c->in, c->sh);
    else
        c->be->ops->avgpool_forward(c->be, c->out, c->in, c->sh);
}

static void check_pool(pgd_backend *be, pgd_pool_shape sh, int max)
{
    CU_ASSERT_FATAL(pgd_pool_shape_init(&sh, NULL) == 0);
    size_t nin = (size_t)sh.n * sh.c * sh.h * sh.w, nout = (size_t)sh.n * sh.c * sh.oh * sh.ow;
    printf("\n  %s pool n%d c%d %dx%d window %d stride %d pad %d", max ? "max" : "avg", sh.n, sh.c, sh.h, sh.w,
           sh.size, sh.stride, sh.pad);
    float *in = malloc(nin * sizeof(float)), *dout = rand_floats(nout);
    float *out = fill_floats(nout, 5.0f), *din = fill_floats(nin, 5.0f);
    CU_ASSERT_FATAL(in != NULL);
    /* distinct values 0.1 (= 10 h) apart in shuffled order, with a few ties for the first-maximum rule */
    for (size_t i = 0; i < nin; i++)
        in[i] = 0.1f * (float)i - 0.05f * (float)nin;
    for (size_t i = nin - 1; i > 0; i--) {
        size_t j = (size_t)(rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull) % (i + 1);
        float t = in[i];
        in[i] = in[j], in[j] = t;
    }
    if (max)
        in[1] = in[0], in[sh.w + 1] = in[sh.w]; /* ties: the gradient goes to the first in row-major order */
    double *r_out = zero_doubles(nout), *r_din = zero_doubles(nin);
    for (size_t pl = 0; pl < (size_t)sh.n * sh.c; pl++)
        for (int oy = 0; oy < sh.oh; oy++)
            for (int ox = 0; ox < sh.ow; ox++) {
                size_t o = (pl * sh.oh + oy) * sh.ow + ox, best = 0;
                int found = 0;
                double sum = 0.0;
                for (int y = oy * sh.stride - sh.pad; y < oy * sh.stride - sh.pad + sh.size; y++)
                    for (int x = ox * sh.stride - sh.pad; x < ox * sh.stride - sh.pad + sh.size; x++) {
                        if (y < 0 || y >= sh.h || x < 0 || x >= sh.w)
                            continue; /* padding: 0 for the average, ignored by the max */
                        size_t i = (pl * sh.h + y) * sh.w + x;
                        sum += in[i];
                        if (!found || in[i] > in[best])
                            best = i, found = 1;
                    }
                if (max) {
                    r_out[o] = in[best];
                    r_din[best] += dout[o];
                } else {
                    r_out[o] = sum / (sh.size * sh.size);
                    for (int y = oy * sh.stride - sh.pad; y < oy * sh.stride - sh.pad + sh.size; y++)
                        for (int x = ox * sh.stride - sh.pad; x < ox * sh.stride - sh.pad + sh.size; x++)
                            if (y >= 0 && y < sh.h && x >= 0 && x < sh.w)
                                r_din[(pl * sh.h + y) * sh.w + x] += dout[o] / (sh.size * sh.size);
                }
            }
    pool_run(&(pool_ctx){be, &sh, in, out, max});
    compare("forward", out, r_out, nout, REF_ATOL, REF_RTOL);
    if (max)
        be->ops->maxpool_backward(be, din, dout, in, &sh);
    else
        be->ops->avgpool_backward(be, din, dout, &sh);
    compare("backward (=)", din, r_din, nin, REF_ATOL, REF_RTOL);
    if (max) /* break the ties again so that finite differences see a unique maximum */
        in[1] += 0.05f, in[sh.w + 1] += 0.05f, be->ops->maxpool_backward(be, din, dout, in, &sh);
    pool_ctx ctx = {be, &sh, in, out, max};
    fd_fn f = {pool_run, &ctx, out, nout, dout};
    fd_check("d in", in, nin, din, &f, FD_TOL);
    free(in), free(dout), free(out), free(din), free(r_out), free(r_din);
}

static void test_pool(void)
{
    pgd_backend *be = new_backend();
    rng_seed(3);
    for (int max = 1; max >= 0; max--) {
        check_pool(be, (pgd_pool_shape){2, 3, 9, 9, 3, 2, 1, 0, 0}, max);  /* ResNet's 3x3/2 pad 1 */
        check_pool(be, (pgd_pool_shape){1, 2, 8, 7, 2, 2, 0, 0, 0}, max);  /* 2x2/2, odd width */
        check_pool(be, (pgd_pool_shape){2, 2, 5, 6, 3, 1, 1, 0, 0}, max);  /* overlapping, stride 1 */
        check_pool(be, (pgd_pool_shape){1, 3, 11, 10, 4, 3, 2, 0, 0}, max); /* even window, pad 2 */
    }
    pgd_backend_free(&be);
}

typedef struct gap_ctx {
    pgd_backend *be;
    float *in, *out;
    int n, c, hw;
} gap_ctx;

static void gap_run(void *p)
{
    gap_ctx *g = p;
    g->be->ops->global_avgpool_forward(g->be, g->out, g->in, g->n, g->c, g->hw);
}

static void test_global_avgpool(void)
{
    pgd_backend *be = new_backend();
    rng_seed(4);
    int n = 3, c = 5, hw = 49;
    size_t nin = (size_t)n * c * hw;
    float *in = rand_floats(nin), *out = fill_floats(n * c, 3.0f), *dout = rand_floats(n * c);
    float *din = fill_floats(nin, 3.0f);
    double *r_out = zero_doubles(n * c), *r_din = zero_doubles(nin);
    for (size_t i = 0; i < nin; i++) {
        r_out[i / hw] += in[i] / (double)hw;
        r_din[i] = dout[i / hw] / (double)hw;
    }
    printf("\n  global average pool n%d c%d hw%d", n, c, hw);
    be->ops->global_avgpool_forward(be, out, in, n, c, hw);
    compare("forward", out, r_out, n * c, REF_ATOL, REF_RTOL);
    be->ops->global_avgpool_backward(be, din, dout, n, c, hw);
    compare("backward (=)", din, r_din, nin, REF_ATOL, REF_RTOL);
    gap_ctx ctx = {be, in, out, n, c, hw};
    fd_fn f = {gap_run, &ctx, out, (size_t)n * c, dout};
    fd_check("d in", in, nin, din, &f, FD_TOL);
    free(in), free(out), free(dout), free(din), free(r_out), free(r_din);
    pgd_backend_free(&be);
}

/* --- relu -------------------------------------------------------------------------------------------------- */

typedef struct relu_ctx {
    pgd_backend *be;
    float *in, *out;
    size_t count;
    float cap;
} relu_ctx;

static void relu_run(void *p)
{
    relu_ctx *r = p;
    r->be->ops->relu_forward(r->be, r->out, r->in, r->count, r->cap);
}

static void test_relu(void)
{
    pgd_backend *be = new_backend();
    rng_seed(5);
    size_t count = 300;
    for (int capped = 0; capped < 2; capped++) {
        float cap = capped ? 6.0f : 0.0f;
        printf("\n  relu%s", capped ? "6" : "");
        float *in = rand_floats(count), *out = fill_floats(count, 1.0f), *dout = rand_floats(count);
        float *din = fill_floats(count, 1.0f);
        double *r_out = zero_doubles(count), *r_din = zero_doubles(count);
        for (size_t i = 0; i < count; i++) {
            in[i] = 8.0f * in[i] + (in[i] < 0 ? -0.1f : 0.1f); /* kinks at 0 and 6 stay >= 5 h away */
            if (fabsf(in[i] - 6.0f) < 0.05f)
                in[i] += 0.1f;
            r_out[i] = in[i] < 0 ? 0.0 : capped && in[i] > 6.0f ? 6.0 : in[i];
            r_din[i] = in[i] > 0 && (!capped || in[i] < 6.0f) ? dout[i] : 0.0;
        }
        be->ops->relu_forward(be, out, in, count, cap);
        compare("forward", out, r_out, count, 0.0, 0.0);
        be->ops->relu_backward(be, din, dout, out, count, cap);
        compare("backward (=)", din, r_din, count, 0.0, 0.0);
        relu_ctx ctx = {be, in, out, count, cap};
        fd_fn f = {relu_run, &ctx, out, count, dout};
        fd_check("d in", in, count, din, &f, FD_TOL);
        /* in place: out == in, then din == dout */
        be->ops->relu_forward(be, in, in, count, cap);
        compare("forward in place", in, r_out, count, 0.0, 0.0);
        be->ops->relu_backward(be, dout, dout, in, count, cap);
        compare("backward in place", dout, r_din, count, 0.0, 0.0);
        free(in), free(out), free(dout), free(din), free(r_out), free(r_din);
    }
    pgd_backend_free(&be);
}

/* --- linear ------------------------------------------------------------------------------------------------ */

typedef struct lin_ctx {
    pgd_backend *be;
    float *in, *w, *b, *out;
    int n, i, o;
} lin_ctx;

static void lin_run(void *p)
{
    lin_ctx *l = p;
    l->be->ops->linear_forward(l->be, l->out, l->in, l->w, l->b, l->n, l->i, l->o);
}

static void check_linear(pgd_backend *be, int n, int ni, int no, int with_bias, int with_din)
{
    printf("\n  linear n%d in %d out %d%s%s", n, ni, no, with_bias ? " bias" : "", with_din ? "" : " (no d in)");
    size_t nin = (size_t)n * ni, nout = (size_t)n * no, nw = (size_t)no * ni;
    float *in = rand_floats(nin), *w = rand_floats(nw), *b = with_bias ? rand_floats(no) : NULL;
    float *dout = rand_floats(nout), *out = fill_floats(nout, 4.0f), *din = fill_floats(nin, 4.0f);
    float *dw = fill_floats(nw, 0.5f), *db = fill_floats(no, 0.5f);
    double *r_out = zero_doubles(nout), *r_din = zero_doubles(nin), *r_dw = zero_doubles(nw);
    double *r_db = zero_doubles(no);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < no; j++) {
            r_out[r * no + j] = b ? b[j] : 0.0;
            r_db[j] += dout[r * no + j];
            for (int k = 0; k < ni; k++) {
                r_out[r * no + j] += (double)in[r * ni + k] * w[j * ni + k];
                r_din[r * ni + k] += (double)dout[r * no + j] * w[j * ni + k];
                r_dw[j * ni + k] += (double)dout[r * no + j] * in[r * ni + k];
            }
        }
    be->ops->linear_forward(be, out, in, w, b, n, ni, no);
    compare("forward", out, r_out, nout, REF_ATOL, REF_RTOL);
    be->ops->linear_backward(be, with_din ? din : NULL, dw, b ? db : NULL, dout, in, w, n, ni, no);
    if (with_din)
        compare("backward d in (=)", din, r_din, nin, REF_ATOL, REF_RTOL);
    compare_scaled("backward d weight (+=)", dw, 0.5f, 1.0, r_dw, nw, REF_ATOL, REF_RTOL);
    if (b)
        compare_scaled("backward d bias (+=)", db, 0.5f, 1.0, r_db, no, REF_ATOL, REF_RTOL);
    be->ops->linear_backward(be, with_din ? din : NULL, dw, b ? db : NULL, dout, in, w, n, ni, no);
    compare_scaled("backward d weight twice (2x)", dw, 0.5f, 2.0, r_dw, nw, REF_ATOL, REF_RTOL);
    if (b)
        compare_scaled("backward d bias twice (2x)", db, 0.5f, 2.0, r_db, no, REF_ATOL, REF_RTOL);
    if (with_din) {
        memset(dw, 0, nw * sizeof(float));
        memset(db, 0, no * sizeof(float));
        be->ops->linear_backward(be, din, dw, b ? db : NULL, dout, in, w, n, ni, no);
        lin_ctx ctx = {be, in, w, b, out, n, ni, no};
        fd_fn f = {lin_run, &ctx, out, nout, dout};
        fd_check("d in", in, nin, din, &f, FD_TOL);
        fd_check("d weight", w, nw, dw, &f, FD_TOL);
        if (b)
            fd_check("d bias", b, no, db, &f, FD_TOL);
    }
    free(in), free(w), free(b), free(dout), free(out), free(din), free(dw), free(db);
    free(r_out), free(r_din), free(r_dw), free(r_db);
}

static void test_linear(void)
{
    pgd_backend *be = new_backend();
    rng_seed(6);
    check_linear(be, 3, 7, 5, 1, 1);
    check_linear(be, 4, 33, 6, 0, 1);
    check_linear(be, 1, 16, 3, 1, 1);
    check_linear(be, 5, 9, 4, 1, 0);
    check_linear(be, 2, 1, 1, 0, 1);
    pgd_backend_free(&be);
}

/* --- dropout2d ------------------------------------------------------------------------------------------- */

static void test_dropout2d(void)
{
    pgd_backend *be = new_backend();
    rng_seed(7);
    int n = 40, c = 500, hw = 3;
    size_t planes = (size_t)n * c, count = planes * hw;
    float p = 0.2f, keep = 1.0f / (1.0f - p);
    float *in = rand_floats(count), *out = malloc(count * sizeof(float)), *din = malloc(count * sizeof(float));
    float *m1 = malloc(planes * sizeof(float)), *m2 = malloc(planes * sizeof(float));
    float *m3 = malloc(planes * sizeof(float));
    CU_ASSERT_FATAL(out && din && m1 && m2 && m3);
    be->ops->dropout2d_forward(be, out, m1, in, n, c, hw, p, 42);
    be->ops->dropout2d_forward(be, out, m2, in, n, c, hw, p, 42);
    CU_ASSERT_EQUAL(memcmp(m1, m2, planes * sizeof(float)), 0); /* same seed, same mask */
    be->ops->dropout2d_forward(be, out, m3, in, n, c, hw, p, 43);
    size_t kept = 0, differ = 0, bad_values = 0, bad_out = 0;
    for (size_t pl = 0; pl < planes; pl++) {
        kept += m1[pl] != 0.0f;
        differ += m1[pl] != m3[pl];
        bad_values += m1[pl] != 0.0f && m1[pl] != keep;
        bad_values += m1[pl] != (pgd_hash_uniform(42, pl) >= p ? keep : 0.0f); /* the documented draw */
    }
    double frac = (double)kept / planes;
    printf("\n  dropout2d p %.1f over %zu channels: kept %.4f, seeds 42/43 differ in %zu channels", p, planes, frac,
           differ);
    CU_ASSERT(fabs(frac - (1.0 - p)) < 0.01); /* binomial sd 0.003 */
    CU_ASSERT(differ > planes / 5);            /* expected 2 p (1 - p) = 32% */
    CU_ASSERT_EQUAL(bad_values, 0);
    /* out = in * mask per channel (survivors scaled by 1/(1-p)); the backward is the same product */
    be->ops->dropout2d_forward(be, out, m1, in, n, c, hw, p, 42);
    be->ops->dropout2d_backward(be, din, in, m1, n, c, hw);
    for (size_t i = 0; i < count; i++) {
        bad_out += out[i] != in[i] * m1[i / hw];
        bad_out += din[i] != in[i] * m1[i / hw];
    }
    CU_ASSERT_EQUAL(bad_out, 0);
    /* p = 0 keeps everything unchanged */
    be->ops->dropout2d_forward(be, out, m1, in, n, c, hw, 0.0f, 42);
    CU_ASSERT_EQUAL(memcmp(out, in, count * sizeof(float)), 0);
    free(in), free(out), free(din), free(m1), free(m2), free(m3);
    pgd_backend_free(&be);
}

/* --- elementwise ----------------------------------------------------------------------------------------- */

static void test_elementwise(void)
{
    pgd_backend *be = new_backend();
    rng_seed(8);
    size_t count = 257;
    float *a = rand_floats(count), *b = rand_floats(count), *out = fill_floats(count, 0.0f);
    float *a0 = malloc(count * sizeof(float));
    CU_ASSERT_FATAL(a0 != NULL);
    memcpy(a0, a, count * sizeof(float));
    size_t bad = 0;
    be->ops->add(be, out, a, b, count);
    for (size_t i = 0; i < count; i++)
        bad += out[i] != a[i] + b[i];
    be->ops->add(be, a, a, b, count); /* aliased */
    for (size_t i = 0; i < count; i++)
        bad += a[i] != a0[i] + b[i];
    memcpy(a, a0, count * sizeof(float));
    be->ops->accumulate(be, a, b, count);
    for (size_t i = 0; i < count; i++)
        bad += a[i] != a0[i] + b[i];
    memcpy(a, a0, count * sizeof(float));
    be->ops->scale(be, a, -0.375f, count);
    for (size_t i = 0; i < count; i++)
        bad += a[i] != a0[i] * -0.375f;
    CU_ASSERT_EQUAL(bad, 0);
    free(a), free(b), free(out), free(a0);
    pgd_backend_free(&be);
}

/* --- softmax cross-entropy ------------------------------------------------------------------------------- */

typedef struct xent_ctx {
    pgd_backend *be;
    float *loss, *probs, *logits;
    const int32_t *labels;
    int n, c;
} xent_ctx;

static void xent_run(void *p)
{
    xent_ctx *x = p;
    x->be->ops->xent_forward(x->be, x->loss, x->probs, x->logits, x->labels, x->n, x->c);
}

static void test_xent(void)
{
    pgd_backend *be = new_backend();
    rng_seed(9);
    enum { N = 4, C = 5 };
    /* large logits: exp() of any of them overflows a float (and a double past 710) */
    float logits[N * C] = {1000.0f, -1000.0f, 0.0f, 999.5f, 998.0f,  /* */
                           1e4f, 1e4f, 1e4f, 1e4f, 1e4f,             /* */
                           -3e4f, -3e4f + 2.0f, -3e4f, -3e4f, -3e4f, /* */
                           88.0f, 89.0f, -20.0f, 0.5f, 720.0f};
    int32_t labels[N] = {3, 2, 0, 1};
    float loss[N], probs[N * C], dlogits[N * C];
    double r_loss[N], r_probs[N * C];
    for (int i = 0; i < N; i++) {
        double mx = logits[i * C], sum = 0.0;
        for (int j = 1; j < C; j++)
            mx = fmax(mx, logits[i * C + j]);
        for (int j = 0; j < C; j++)
            sum += exp(logits[i * C + j] - mx);
        for (int j = 0; j < C; j++)
            r_probs[i * C + j] = exp(logits[i * C + j] - mx) / sum;
        r_loss[i] = -(logits[i * C + labels[i]] - mx - log(sum));
    }
    printf("\n  softmax cross-entropy, logits up to 3e4 in magnitude");
    be->ops->xent_forward(be, loss, probs, logits, labels, N, C);
    compare("loss", loss, r_loss, N, 1e-6, 1e-6);
    compare("probs", probs, r_probs, N * C, 1e-6, 1e-6);

    /* the gradient of scale * sum(loss) by central differences on moderate logits */
    float scale = 1.0f / N, R[N];
    for (int i = 0; i < N; i++)
        R[i] = scale;
    for (int i = 0; i < N * C; i++)
        logits[i] = 2.0f * frand();
    be->ops->xent_forward(be, loss, probs, logits, labels, N, C);
    for (int i = 0; i < N * C; i++)
        dlogits[i] = 9.0f;
    be->ops->xent_backward(be, dlogits, probs, labels, N, C, scale);
    xent_ctx ctx = {be, loss, probs, logits, labels, N, C};
    fd_fn f = {xent_run, &ctx, loss, N, R};
    fd_check("d logits", logits, N * C, dlogits, &f, FD_TOL_SMOOTH);
    pgd_backend_free(&be);
}

/* --- optimizers: three steps against values worked out by hand from torch.optim's formulas ----------------- */

static const float opt_p0[3] = {0.5f, -1.0f, 2.0f};
static const float opt_grads[3][3] = {{0.1f, -0.2f, 0.0f}, {0.3f, 0.1f, -0.5f}, {-0.2f, 0.05f, 1.0f}};

static void check_adam(pgd_backend *be, int decoupled, const double want_p[3], const double want_m[3],
                       const double want_v[3])
{
    float p[3], m[3] = {0}, v[3] = {0};
    memcpy(p, opt_p0, sizeof p);
    pgd_adam_hp hp = {0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, decoupled, 0, 0.5f};
    for (int t = 1; t <= 3; t++) {
        hp.step = t;
        be->ops->adam_update(be, p, opt_grads[t - 1], m, v, 3, &hp);
    }
    printf("\n  %s, lr 0.01, betas (0.9, 0.999), weight decay 0.1, grad scale 0.5, 3 steps",
           decoupled ? "AdamW" : "Adam");
    compare("param", p, want_p, 3, 2e-6, 0.0);
    compare("first moment", m, want_m, 3, 1e-7, 1e-5);
    /* 1 - beta2 from the float 0.999f is 0.00099998713 where PyTorch's double gives 0.001: 1.3e-5 relative */
    compare("second moment", v, want_v, 3, 1e-9, 3e-5);
}

static void test_optim(void)
{
    pgd_backend *be = new_backend();
    /* Adam: g = 0.5 grad + 0.1 p; m, v EMAs; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
    check_adam(be, 0, (const double[]){0.47452572, -0.973549648, 1.97820188},
               (const double[]){0.0208134285, -0.0279272048, 0.0814634696},
               (const double[]){5.22418446e-05, 4.76727876e-05, 0.000530469161});
    /* AdamW: p *= 1 - lr * 0.1 first, g = 0.5 grad */
    check_adam(be, 1, (const double[]){0.476773821, -0.983748395, 1.99829706},
               (const double[]){0.00755, -0.0011, 0.0275},
               (const double[]){3.49725025e-05, 1.310251e-05, 0.0003124375});

    /* SGD, lr 0.1, momentum 0.9, weight decay 0.01: buf = g at step 1, then 0.9 buf + g; p -= lr buf */
    float p[3], mom[3] = {7.0f, 7.0f, 7.0f}; /* whatever the buffer held, step 1 replaces it */
    memcpy(p, opt_p0, sizeof p);
    pgd_sgd_hp hp = {0.1f, 0.9f, 0.01f, 1.0f, 0};
    for (int t = 1; t <= 3; t++) {
        hp.step = t;
        be->ops->sgd_update(be, p, opt_grads[t - 1], mom, 3, &hp);
    }
    printf("\n  SGD, lr 0.1, momentum 0.9, weight decay 0.01, 3 steps");
    compare("param", p, (const double[]){0.433165389, -0.964260779, 1.9837396}, 3, 2e-6, 0.0);
    compare("momentum buffer", mom, (const double[]){0.163951105, -0.04860221, 0.60462402}, 3, 1e-6, 1e-6);
    /* plain SGD (momentum 0) with grad_scale: p -= lr * scale * grad */
    memcpy(p, opt_p0, sizeof p);
    pgd_sgd_hp plain = {0.5f, 0.0f, 0.0f, 0.25f, 1};
    be->ops->sgd_update(be, p, opt_grads[1], NULL, 3, &plain);
    compare("plain SGD param", p, (const double[]){0.5 - 0.5 * 0.25 * 0.3, -1.0 - 0.5 * 0.25 * 0.1, 2.0 + 0.0625},
            3, 1e-7, 1e-7);
    pgd_backend_free(&be);
}

/* --- data ----------------------------------------------------------------------------------------------- */

static void test_u8_to_float(void)
{
    pgd_backend *be = new_backend();
    enum { N = 2, H = 3, W = 4, C = 3 };
    uint8_t in[N * H * W * C];
    for (int i = 0; i < N * H * W * C; i++)
        in[i] = (uint8_t)(i * 37 % 256);
    in[0] = 0, in[1] = 255, in[2] = 51; /* pixel (0, 0, 0) of image 0 */
    float out[N * C * H * W];
    const float mean[C] = {0.5f, 0.0f, 0.2f}, sd[C] = {0.5f, 1.0f, 0.4f};
    be->ops->u8_to_float(be, out, in, N, H, W, C, mean, sd);
    /* exact: 0 -> (0 - 0.5) / 0.5 = -1, 255 -> 1 / 1 = 1, 51 -> (0.2 - 0.2) / 0.4 = 0 */
    CU_ASSERT_EQUAL(out[0], -1.0f);
    CU_ASSERT_EQUAL(out[1 * H * W], 1.0f);
    CU_ASSERT_EQUAL(out[2 * H * W], 0.0f);
    size_t bad = 0;
    double max_err = 0.0;
    for (int n = 0; n < N; n++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    double want = (in[((n * H + y) * W + x) * C + c] / 255.0 - mean[c]) / sd[c];
                    double e = fabs(out[((n * C + c) * H + y) * W + x] - want);
                    bad += e > 1e-6;
                    max_err = fmax(max_err, e);
                }
    printf("\n  u8 HWC -> float NCHW: max abs err %.2e", max_err);
    CU_ASSERT_EQUAL(bad, 0);
    pgd_backend_free(&be);
}

static void test_z_scatter_gather(void)
{
    pgd_backend *be = new_backend();
    rng_seed(10);
    enum { B = 3, S = 5, MN = 12, COUNT = 7 };
    const uint32_t cell[COUNT] = {0, 35, 13, 12, 7, 24, 23};
    float *feat = rand_floats(COUNT * S), *back = fill_floats(COUNT * S, 0.0f);
    float *z = fill_floats(B * S * MN, -5.0f);
    be->ops->z_scatter(be, z, feat, cell, COUNT, S, MN);
    size_t bad = 0, touched = 0;
    for (int i = 0; i < COUNT; i++)
        for (int ch = 0; ch < S; ch++) /* z[img][ch][cell] = feat[i][ch] */
            bad += z[((cell[i] / MN) * S + ch) * MN + cell[i] % MN] != feat[i * S + ch];
    for (int i = 0; i < B * S * MN; i++)
        touched += z[i] != -5.0f;
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(touched, COUNT * S); /* nothing else written */
    be->ops->z_gather(be, back, z, cell, COUNT, S, MN);
    CU_ASSERT_EQUAL(memcmp(back, feat, COUNT * S * sizeof(float)), 0);
    free(feat), free(back), free(z);
    pgd_backend_free(&be);
}

/* --- errors and shapes ----------------------------------------------------------------------------------- */

static void test_sticky_error(void)
{
    pgd_backend *be = new_backend();
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_STRING_EQUAL(be->ops->name, "cpu");
    CU_ASSERT(be->threads == 2);
    float *ok = be->ops->alloc(be, 64 * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ok);
    for (int i = 0; i < 64; i++)
        CU_ASSERT_EQUAL(ok[i], 0.0f); /* zeroed */
    CU_ASSERT_EQUAL(pgd_backend_error(be, &err), 0);
    CU_ASSERT_PTR_NULL(be->ops->alloc(be, SIZE_MAX / 2));
    CU_ASSERT_EQUAL(pgd_backend_error(be, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOMEM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.file, "cpu_backend.c"));
    CU_ASSERT(err.line > 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "alloc"));
    printf("\n  sticky error: %s:%d: %s", err.file, err.line, err.msg);
    /* later ops do nothing: no output written, no allocation */
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 1, 1, 1};
    be->ops->add(be, a, a, b, 4);
    be->ops->scale(be, a, 0.0f, 4);
    be->ops->relu_forward(be, b, a, 4, 0.0f);
    CU_ASSERT(a[0] == 1 && a[3] == 4 && b[0] == 1);
    CU_ASSERT_PTR_NULL(be->ops->alloc(be, 16));
    pgd_err again = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_backend_error(be, &again), -1);
    CU_ASSERT_EQUAL(again.line, err.line); /* still the first failure */
    be->ops->free(be, ok);
    be->ops->free(be, NULL);
    pgd_backend_free(&be);
    pgd_backend_free(&be); /* NULL is fine */
}

static void test_memory_ops(void)
{
    pgd_backend *be = new_backend();
    float host[8] = {1, 2, 3, 4, 5, 6, 7, 8}, back[8];
    float *d = be->ops->alloc(be, sizeof host), *e = be->ops->alloc(be, sizeof host);
    CU_ASSERT_FATAL(d && e);
    be->ops->upload(be, d, host, sizeof host);
    be->ops->copy(be, e, d, sizeof host);
    be->ops->zero(be, d, sizeof host);
    be->ops->sync(be);
    be->ops->download(be, back, e, sizeof host);
    CU_ASSERT_EQUAL(memcmp(back, host, sizeof host), 0);
    CU_ASSERT_EQUAL(d[0], 0.0f);
    CU_ASSERT_EQUAL(d[7], 0.0f);
    be->ops->free(be, d);
    be->ops->free(be, e);
    CU_ASSERT_EQUAL(pgd_backend_error(be, NULL), 0);
    pgd_backend_free(&be);
}

static void test_shape_init(void)
{
    pgd_conv_shape c = {8, 64, 56, 56, 64, 3, 3, 1, 1, 1, 0, 0};
    CU_ASSERT_EQUAL(pgd_conv_shape_init(&c, NULL), 0);
    CU_ASSERT(c.oh == 56 && c.ow == 56);
    c = (pgd_conv_shape){1, 3, 225, 224, 64, 7, 7, 2, 3, 1, 0, 0};
    CU_ASSERT_EQUAL(pgd_conv_shape_init(&c, NULL), 0);
    CU_ASSERT(c.oh == 113 && c.ow == 112);
    static const struct {
        pgd_conv_shape sh;
        const char *msg;
    } bad_conv[] = {
        {{0, 3, 8, 8, 4, 3, 3, 1, 1, 1, 0, 0}, "non-positive size"},
        {{1, 3, 8, 8, 4, 3, 3, 0, 1, 1, 0, 0}, "stride 0"},
        {{1, 3, 8, 8, 4, 3, 3, 1, -1, 1, 0, 0}, "pad -1"},
        {{1, 6, 8, 8, 4, 3, 3, 1, 1, 4, 0, 0}, "groups 4 does not divide"},
        {{1, 3, 2, 8, 4, 5, 3, 1, 1, 1, 0, 0}, "larger than padded input"},
    };
    for (size_t i = 0; i < sizeof bad_conv / sizeof bad_conv[0]; i++) {
        pgd_err err = PGD_ERR_INIT;
        pgd_conv_shape sh = bad_conv[i].sh;
        CU_ASSERT_EQUAL(pgd_conv_shape_init(&sh, &err), -1);
        CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, bad_conv[i].msg));
    }
    pgd_pool_shape p = {2, 64, 112, 112, 3, 2, 1, 0, 0};
    CU_ASSERT_EQUAL(pgd_pool_shape_init(&p, NULL), 0);
    CU_ASSERT(p.oh == 56 && p.ow == 56);
    static const struct {
        pgd_pool_shape sh;
        const char *msg;
    } bad_pool[] = {
        {{1, 1, 8, 8, 0, 1, 0, 0, 0}, "non-positive size"},
        {{1, 1, 8, 8, 3, 2, 2, 0, 0}, "pad 2 must be in [0, size/2]"},
        {{1, 1, 2, 8, 5, 1, 1, 0, 0}, "larger than padded input"},
    };
    for (size_t i = 0; i < sizeof bad_pool / sizeof bad_pool[0]; i++) {
        pgd_err err = PGD_ERR_INIT;
        pgd_pool_shape sh = bad_pool[i].sh;
        CU_ASSERT_EQUAL(pgd_pool_shape_init(&sh, &err), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, bad_pool[i].msg));
    }
}

/* --- half precision (backend.h, "Precision") ------------------------------------------------------------- */

/* One unit in the last place, relative: what a half result may differ by when fp32 sums land on either side of
 * a rounding boundary. */
static double half_rtol(pgd_precision prec)
{
    return prec == PGD_PREC_BF16 ? 1.0 / 128 : 1.0 / 1024;
}

static float *rounded_copy(const float *x, size_t n, pgd_precision prec)
{
    float *r = malloc((n ? n : 1) * sizeof(float));
    CU_ASSERT_FATAL(r != NULL);
    for (size_t i = 0; i < n; i++)
        r[i] = pgd_gk_round(x[i], prec);
    return r;
}

/* Values of x that the format cannot hold (a conv must round what it writes). */
static size_t unrepresentable(const float *x, size_t n, pgd_precision prec)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += pgd_gk_round(x[i], prec) != x[i];
    return bad;
}

/* A conv in bf16 / fp16 against the double reference on rounded operands: the output, input gradient and filter
 * gradient are that reference rounded (up to one unit in the last place), and representable; the bias gradient
 * is the fp32 one, from the unrounded dout. */
static void check_conv_half(pgd_backend *be, pgd_conv_shape sh, pgd_precision prec)
{
    CU_ASSERT_FATAL(pgd_conv_shape_init(&sh, NULL) == 0);
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, prec, NULL) == 0);
    size_t nin = pgd_conv_in_count(&sh), nout = pgd_conv_out_count(&sh), nw = pgd_conv_filter_count(&sh);
    size_t cells = (size_t)sh.oh * sh.ow;
    printf("\n  %s conv n%d c%d %dx%d k%d %dx%d stride %d pad %d groups %d", pgd_precision_name(prec), sh.n, sh.c,
           sh.h, sh.w, sh.k, sh.r, sh.s, sh.stride, sh.pad, sh.groups);
    float *in = rand_floats(nin), *w = rand_floats(nw), *b = rand_floats(sh.k), *dout = rand_floats(nout);
    float *rin = rounded_copy(in, nin, prec), *rw = rounded_copy(w, nw, prec), *rdout = rounded_copy(dout, nout, prec);
    float *out = fill_floats(nout, 77.0f), *din = fill_floats(nin, 55.0f), *dw = fill_floats(nw, 0.5f);
    float *dw0 = fill_floats(nw, 0.0f), *db = fill_floats(sh.k, 0.25f);
    conv_ref ref = {rin, rw, rdout, zero_doubles(nout), zero_doubles(nin), zero_doubles(nw)};
    double *dbias = zero_doubles(sh.k);
    conv_taps(&sh, tap_forward, &ref);
    conv_taps(&sh, tap_backward, &ref);
    for (size_t i = 0; i < nout; i++) {
        ref.out[i] = pgd_gk_round((float)ref.out[i], prec);
        dbias[(i / cells) % (size_t)sh.k] += dout[i];
    }
    for (size_t i = 0; i < nin; i++)
        ref.din[i] = pgd_gk_round((float)ref.din[i], prec);
    for (size_t i = 0; i < nw; i++)
        ref.dw[i] = pgd_gk_round((float)ref.dw[i], prec);
    double rtol = half_rtol(prec);

    be->ops->conv2d_forward(be, out, in, w, NULL, &sh);
    compare("forward", out, ref.out, nout, REF_ATOL, rtol);
    CU_ASSERT_EQUAL(unrepresentable(out, nout, prec), 0);
    float *out_b = fill_floats(nout, 77.0f); /* the bias is added in fp32 to the rounded output */
    be->ops->conv2d_forward(be, out_b, in, w, b, &sh);
    size_t off = 0;
    for (size_t i = 0; i < nout; i++)
        off += out_b[i] != out[i] + b[(i / cells) % (size_t)sh.k];
    CU_ASSERT_EQUAL(off, 0);
    free(out_b);
    be->ops->conv2d_backward_data(be, din, dout, w, &sh);
    compare("backward data (=)", din, ref.din, nin, REF_ATOL, rtol);
    CU_ASSERT_EQUAL(unrepresentable(din, nin, prec), 0);
    be->ops->conv2d_backward_filter(be, dw, db, dout, in, &sh);
    compare_scaled("backward filter (+=)", dw, 0.5f, 1.0, ref.dw, nw, REF_ATOL, rtol);
    compare_scaled("backward bias (+=, fp32)", db, 0.25f, 1.0, dbias, sh.k, REF_ATOL, REF_RTOL);
    be->ops->conv2d_backward_filter(be, dw0, NULL, dout, in, &sh);
    CU_ASSERT_EQUAL(unrepresentable(dw0, nw, prec), 0);
    CU_ASSERT_EQUAL(pgd_backend_error(be, NULL), 0);
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, PGD_PREC_FP32, NULL) == 0);
    free(in), free(w), free(b), free(dout), free(rin), free(rw), free(rdout), free(out), free(din), free(dw);
    free(dw0), free(db), free(ref.out), free(ref.din), free(ref.dw), free(dbias);
}

/* A linear layer in bf16 / fp16: the double reference on rounded operands, not rounded (an fp32 output). */
static void check_linear_half(pgd_backend *be, int n, int ni, int no, pgd_precision prec)
{
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, prec, NULL) == 0);
    printf("\n  %s linear n%d in %d out %d", pgd_precision_name(prec), n, ni, no);
    size_t nin = (size_t)n * ni, nout = (size_t)n * no, nw = (size_t)no * ni;
    float *in = rand_floats(nin), *w = rand_floats(nw), *b = rand_floats(no), *dout = rand_floats(nout);
    float *rin = rounded_copy(in, nin, prec), *rw = rounded_copy(w, nw, prec), *rdout = rounded_copy(dout, nout, prec);
    float *out = fill_floats(nout, 4.0f), *din = fill_floats(nin, 4.0f), *dw = fill_floats(nw, 0.5f);
    float *db = fill_floats(no, 0.5f);
    double *r_out = zero_doubles(nout), *r_din = zero_doubles(nin), *r_dw = zero_doubles(nw), *r_db = zero_doubles(no);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < no; j++) {
            r_out[r * no + j] = b[j];
            r_db[j] += dout[r * no + j];
            for (int k = 0; k < ni; k++) {
                r_out[r * no + j] += (double)rin[r * ni + k] * rw[j * ni + k];
                r_din[r * ni + k] += (double)rdout[r * no + j] * rw[j * ni + k];
                r_dw[j * ni + k] += (double)rdout[r * no + j] * rin[r * ni + k];
            }
        }
    be->ops->linear_forward(be, out, in, w, b, n, ni, no);
    compare("forward", out, r_out, nout, REF_ATOL, REF_RTOL);
    be->ops->linear_backward(be, din, dw, db, dout, in, w, n, ni, no);
    compare("backward d in (=)", din, r_din, nin, REF_ATOL, REF_RTOL);
    compare_scaled("backward d weight (+=)", dw, 0.5f, 1.0, r_dw, nw, REF_ATOL, REF_RTOL);
    compare_scaled("backward d bias (+=, fp32)", db, 0.5f, 1.0, r_db, no, REF_ATOL, REF_RTOL);
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, PGD_PREC_FP32, NULL) == 0);
    free(in), free(w), free(b), free(dout), free(rin), free(rw), free(rdout), free(out), free(din), free(dw);
    free(db), free(r_out), free(r_din), free(r_dw), free(r_db);
}

/* Exact cases: an operand the format cannot hold is rounded before the multiply; fp16 overflows to infinity. */
static void check_half_exact(pgd_backend *be)
{
    pgd_conv_shape sh = {1, 1, 2, 1, 1, 1, 1, 1, 0, 1, 0, 0};
    CU_ASSERT_FATAL(pgd_conv_shape_init(&sh, NULL) == 0);
    const float one = 1.0f;
    float in[2], out[2], lin[2], lout[1];
    static const struct {
        pgd_precision prec;
        float x, want;
    } cases[] = {{PGD_PREC_FP32, 1.0f + 0x1p-10f, 1.0f + 0x1p-10f},
                 {PGD_PREC_BF16, 1.0f + 0x1p-10f, 1.0f},
                 {PGD_PREC_FP16, 1.0f + 0x1p-10f, 1.0f + 0x1p-10f},
                 {PGD_PREC_FP16, 1.0f + 0x1p-12f, 1.0f}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CU_ASSERT_FATAL(pgd_backend_set_precision(be, cases[i].prec, NULL) == 0);
        in[0] = in[1] = cases[i].x;
        be->ops->conv2d_forward(be, out, in, &one, NULL, &sh);
        CU_ASSERT_EQUAL(out[0], cases[i].want);
        lin[0] = cases[i].x, lin[1] = 0.0f;
        float lw[2] = {1.0f, 1.0f};
        be->ops->linear_forward(be, lout, lin, lw, NULL, 1, 2, 1);
        CU_ASSERT_EQUAL(lout[0], cases[i].want);
    }
    /* 300 x 300 = 90000 > 65504: infinity in fp16 (forward and backward data), finite in bf16 */
    const float big = 300.0f;
    in[0] = 300.0f, in[1] = -300.0f;
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, PGD_PREC_FP16, NULL) == 0);
    be->ops->conv2d_forward(be, out, in, &big, NULL, &sh);
    CU_ASSERT(isinf(out[0]) && out[0] > 0 && isinf(out[1]) && out[1] < 0);
    be->ops->conv2d_backward_data(be, out, in, &big, &sh);
    CU_ASSERT(isinf(out[0]) && isinf(out[1]));
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, PGD_PREC_BF16, NULL) == 0);
    be->ops->conv2d_forward(be, out, in, &big, NULL, &sh);
    CU_ASSERT_EQUAL(out[0], 90112.0f); /* 90000 rounded to bf16's 8 significant bits */
    CU_ASSERT_FATAL(pgd_backend_set_precision(be, PGD_PREC_FP32, NULL) == 0);
    CU_ASSERT_EQUAL(pgd_backend_error(be, NULL), 0);
}

static void test_half(void)
{
    static const pgd_conv_shape shapes[] = {
        {2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 0, 0},    /* plain 3x3 */
        {2, 4, 11, 10, 6, 3, 3, 2, 1, 2, 0, 0},  /* stride 2, groups 2 */
        {2, 6, 9, 9, 6, 3, 3, 1, 1, 6, 0, 0},    /* depthwise */
        {3, 8, 6, 7, 4, 1, 1, 1, 0, 1, 0, 0},    /* pointwise */
        {1, 64, 33, 31, 8, 3, 3, 1, 1, 1, 0, 0}, /* cpu_conv.c's bands */
    };
    pgd_backend *be = new_backend();
    rng_seed(17);
    for (pgd_precision prec = PGD_PREC_BF16; prec <= PGD_PREC_FP16; prec++) {
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            check_conv_half(be, shapes[i], prec);
        check_linear_half(be, 3, 7, 5, prec);
        check_linear_half(be, 4, 300, 6, prec);
    }
    check_half_exact(be);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_backend_set_precision(be, (pgd_precision)3, &err), -1);
    CU_ASSERT_EQUAL(be->precision, PGD_PREC_FP32);
    CU_ASSERT_EQUAL(pgd_precision_parse("bf16"), PGD_PREC_BF16);
    CU_ASSERT_EQUAL(pgd_precision_parse("fp16"), PGD_PREC_FP16);
    CU_ASSERT_EQUAL(pgd_precision_parse("fp32"), PGD_PREC_FP32);
    CU_ASSERT_EQUAL(pgd_precision_parse("half"), -1);
    CU_ASSERT_STRING_EQUAL(pgd_precision_name(PGD_PREC_FP16), "fp16");
    pgd_backend_free(&be);
}

/* The finiteness check: a flag collects, it is never cleared. */
static void test_nonfinite(void)
{
    pgd_backend *be = new_backend();
    static const size_t sizes[] = {1, 1000, (1u << 20) + 3};
    const float bad[3] = {INFINITY, -INFINITY, NAN};
    for (size_t si = 0; si < 3; si++) {
        size_t n = sizes[si];
        float *x = fill_floats(n, 3.4e38f);
        int32_t flag = 0;
        be->ops->nonfinite(be, &flag, x, n);
        CU_ASSERT_EQUAL(flag, 0);
        flag = 1;
        be->ops->nonfinite(be, &flag, x, n);
        CU_ASSERT_EQUAL(flag, 1);
        for (int b = 0; b < 3; b++) {
            size_t at[3] = {0, n / 2, n - 1};
            for (int a = 0; a < 3; a++) {
                x[at[a]] = bad[b];
                flag = 0;
                be->ops->nonfinite(be, &flag, x, n);
                CU_ASSERT_EQUAL(flag, 1);
                x[at[a]] = -1e-45f;
            }
        }
        free(x);
    }
    CU_ASSERT_EQUAL(pgd_backend_error(be, NULL), 0);
    pgd_backend_free(&be);
}

static const pgd_test_case cases[] = {
    {"conv", test_conv},
    {"batch_norm", test_batch_norm},
    {"pool", test_pool},
    {"global_avgpool", test_global_avgpool},
    {"relu", test_relu},
    {"linear", test_linear},
    {"dropout2d", test_dropout2d},
    {"elementwise", test_elementwise},
    {"xent", test_xent},
    {"optim", test_optim},
    {"u8_to_float", test_u8_to_float},
    {"z_scatter_gather", test_z_scatter_gather},
    {"sticky_error", test_sticky_error},
    {"memory_ops", test_memory_ops},
    {"shape_init", test_shape_init},
    {"half", test_half},
    {"nonfinite", test_nonfinite},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("ops", cases, argc, argv);
}
