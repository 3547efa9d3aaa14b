/* test_gpu_ops.c: every op of the CUDA backend against the CPU reference backend on the same random inputs.
 * Without a CUDA device it prints one line saying why and exits 77 (tests/run.sh shows "skip"). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "cunit_util.h"
#include "trainer/backend.h"

/* Tolerances: the largest |gpu - cpu| over a tensor divided by the largest |cpu| of that tensor (a max-norm
 * relative error), so a tensor whose values are near zero in places is not judged by those places alone.
 * - EXACT (0): ops that are the same float operations in the same order on both sides: relu, max pooling
 *   (first-maximum rule, gradients summed in the same order), dropout (same hash), add/accumulate/scale,
 *   u8 conversion, Z scatter/gather, the cross-entropy gradient, SGD and Adam (our kernels are built with
 *   -fmad=false, so no fused multiply-add changes a rounding; the step scalars are computed on the host as the
 *   CPU does).
 * - SUM_TOL 2e-6: a different summation order over at most a few thousand terms (average and global average
 *   pooling, cross-entropy's double log-sum-exp with the GPU's exp/log).
 * - LINEAR_TOL 5e-5: cuBLAS sgemm vs OpenBLAS sgemm, sums of up to 2048 products (expected ~3e-6).
 * - BN_TOL 1e-4: cuDNN's batch norm computes its statistics in float, the CPU in double.
 * - CONV_TOL 5e-4: cuDNN may pick Winograd or FFT algorithms (plain fp32, never TF32), whose rounding is
 *   larger than a direct sum; an indexing bug is off by O(1).
 * Half precision (both backends set to bf16 or fp16; backend.h, "Precision"):
 * - CONV_BF16_TOL 1e-2, CONV_FP16_TOL 2e-3: a conv rounds its result to the 16-bit format after an fp32 sum
 *   whose order differs between the backends, so an element may land one unit in the last place of that format
 *   away (bf16 2^-8 = 3.9e-3, fp16 2^-11 = 4.9e-4 of the element), plus the summation order. The filter
 *   gradient is rounded before it is added to dw, so the same holds for dw. The bias gradient comes from the
 *   fp32 dout: CONV_TOL.
 * - LINEAR_TOL holds in both: products of 16-bit values are exact in fp32 and a linear writes fp32 (unrounded),
 *   so only the summation order differs.
 * - EXACT for the finiteness flag and for where an fp16 conv overflows to infinity. */
#define EXACT 0.0
#define SUM_TOL 2e-6
#define LINEAR_TOL 5e-5
#define BN_TOL 1e-4
#define CONV_TOL 5e-4
#define CONV_BF16_TOL 1e-2
#define CONV_FP16_TOL 2e-3

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer's shadow gap collides with the CUDA driver's address reservations. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "protect_shadow_gap=0";
}
#endif

static pgd_backend *gpu, *cpu;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* Uniform in [-1, 1) with 24 random bits (exact in a float). */
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((int64_t)(rng_state >> 40) - (1 << 23)) / (float)(1 << 23);
}

static float *host_rand(size_t n, float scale, float offset)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    CU_ASSERT_FATAL(p != NULL);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale + offset;
    return p;
}

static float *host_fill(size_t n, float v)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    CU_ASSERT_FATAL(p != NULL);
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

/* A device copy of host memory. */
static void *dev(const void *host, size_t bytes)
{
    void *d = gpu->ops->alloc(gpu, bytes);
    CU_ASSERT_FATAL(d != NULL);
    if (host)
        gpu->ops->upload(gpu, d, host, bytes);
    return d;
}

/* A device copy of n host floats; host NULL: an output buffer, filled with NaN so that an op that fails to
 * write (or reads what it should overwrite: the = rule) shows up as a NaN mismatch. */
static float *devf(const float *host, size_t n)
{
    if (host)
        return dev(host, n * sizeof(float));
    float *nan = host_fill(n, NAN);
    float *d = dev(nan, n * sizeof(float));
    free(nan);
    return d;
}

/* A host copy of device floats (the caller frees it). */
static float *fetch(const float *d, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    CU_ASSERT_FATAL(h != NULL);
    gpu->ops->download(gpu, h, d, n * sizeof(float));
    return h;
}

/* Both backends in precision prec. */
static void set_precision(pgd_precision prec)
{
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_FATAL(pgd_backend_set_precision(gpu, prec, &err) == 0);
    CU_ASSERT_FATAL(pgd_backend_set_precision(cpu, prec, &err) == 0);
}

/* A case that failed on a backend error leaves the backend's sticky error set: the next case starts on a fresh
 * backend (the old one's pool releases what the aborted case left), so every case reports for itself. Every case
 * starts in fp32, also after a half-precision case that stopped half way. */
static void fresh_backend_if_failed(void)
{
    pgd_err err = PGD_ERR_INIT;
    if (pgd_backend_error(gpu, NULL) != 0) {
        pgd_backend_free(&gpu);
        gpu = pgd_backend_cuda_new(0, 0, &err);
        if (!gpu)
            printf("\n    cannot restart the cuda backend: %s\n", err.msg);
        CU_ASSERT_FATAL(gpu != NULL);
    }
    set_precision(PGD_PREC_FP32);
}

static void gpu_ok(const char *where)
{
    pgd_err err = PGD_ERR_INIT;
    if (pgd_backend_error(gpu, &err) < 0)
        printf("\n    %s: cuda backend error at %s:%d: %s\n", where, err.file, err.line, err.msg);
    CU_ASSERT_FATAL(pgd_backend_error(gpu, NULL) == 0);
    CU_ASSERT_FATAL(pgd_backend_error(cpu, NULL) == 0);
}

/* Compare a device tensor with the CPU's; prints the max-norm relative error. NaN equals NaN. */
static void check(const char *op, const char *tensor, const float *d, const float *want, size_t n, double tol)
{
    gpu_ok(op);
    float *got = fetch(d, n);
    double max_err = 0.0, max_ref = 0.0;
    size_t worst = 0, nan_mismatch = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isnan(want[i])) {
            nan_mismatch += isnan(got[i]) != isnan(want[i]);
            continue;
        }
        double e = fabs((double)got[i] - want[i]);
        if (e > max_err) {
            max_err = e;
            worst = i;
        }
        if (fabs(want[i]) > max_ref)
            max_ref = fabs(want[i]);
    }
    double rel = max_ref > 0 ? max_err / max_ref : max_err;
    int ok = rel <= tol && nan_mismatch == 0;
    printf("\n    %-22s %-10s n %-8zu max err %.3g (rel %.3g, tol %.0e)%s", op, tensor, n, max_err, rel, tol,
           ok ? "" : "  <-- FAIL");
    if (!ok)
        printf(" worst [%zu] gpu %.9g cpu %.9g, NaN mismatches %zu", worst, (double)got[worst], (double)want[worst],
               nan_mismatch);
    CU_ASSERT(ok);
    free(got);
}

/* --- convolution ---------------------------------------------------------------------------------------- */

typedef struct conv_case {
    int n, c, h, w, k, r, s, stride, pad, groups, bias;
} conv_case;

/* Forward, backward data and backward filter (+ bias) in the backends' precision; tol for the tensors a conv
 * computes, CONV_TOL for the bias gradient (fp32 in every precision). */
static void run_conv(const conv_case *cc, double tol)
{
    pgd_conv_shape sh = {cc->n, cc->c, cc->h, cc->w, cc->k, cc->r, cc->s, cc->stride, cc->pad, cc->groups, 0, 0};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_FATAL(pgd_conv_shape_init(&sh, &err) == 0);
    char name[128];
    snprintf(name, sizeof name, "conv n%d c%d %dx%d k%d %dx%d s%d p%d g%d%s %s", cc->n, cc->c, cc->h, cc->w, cc->k,
             cc->r, cc->s, cc->stride, cc->pad, cc->groups, cc->bias ? " b" : "", pgd_precision_name(gpu->precision));
    printf("\n  %s", name);
    size_t nin = (size_t)sh.n * sh.c * sh.h * sh.w, nout = (size_t)sh.n * sh.k * sh.oh * sh.ow;
    size_t nw = (size_t)sh.k * (sh.c / sh.groups) * sh.r * sh.s;
    float *in = host_rand(nin, 1, 0), *w = host_rand(nw, 1, 0), *b = host_rand(sh.k, 1, 0);
    float *dout = host_rand(nout, 1, 0);
    float *out = host_fill(nout, 0), *din = host_fill(nin, 0);
    float *dw = host_fill(nw, 0.5f), *db = host_fill(sh.k, 0.5f);
    float *d_in = devf(in, nin), *d_w = devf(w, nw), *d_b = devf(b, sh.k), *d_dout = devf(dout, nout);
    float *d_out = devf(NULL, nout), *d_din = devf(NULL, nin), *d_dw = devf(dw, nw), *d_db = devf(db, sh.k);

    cpu->ops->conv2d_forward(cpu, out, in, w, cc->bias ? b : NULL, &sh);
    gpu->ops->conv2d_forward(gpu, d_out, d_in, d_w, cc->bias ? d_b : NULL, &sh);
    check("conv forward", "out", d_out, out, nout, tol);
    cpu->ops->conv2d_backward_data(cpu, din, dout, w, &sh);
    gpu->ops->conv2d_backward_data(gpu, d_din, d_dout, d_w, &sh);
    check("conv backward data", "din", d_din, din, nin, tol);
    cpu->ops->conv2d_backward_filter(cpu, dw, cc->bias ? db : NULL, dout, in, &sh);
    gpu->ops->conv2d_backward_filter(gpu, d_dw, cc->bias ? d_db : NULL, d_dout, d_in, &sh);
    check("conv backward filter", "dw (+=)", d_dw, dw, nw, tol);
    if (cc->bias)
        check("conv backward filter", "db (+=)", d_db, db, sh.k, CONV_TOL);

    gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_w), gpu->ops->free(gpu, d_b), gpu->ops->free(gpu, d_dout);
    gpu->ops->free(gpu, d_out), gpu->ops->free(gpu, d_din), gpu->ops->free(gpu, d_dw), gpu->ops->free(gpu, d_db);
    free(in), free(w), free(b), free(dout), free(out), free(din), free(dw), free(db);
}

static void test_conv(void)
{
    fresh_backend_if_failed();
    static const conv_case cases[] = {
        {2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1},        /* padded 3x3 */
        {2, 3, 10, 11, 5, 3, 3, 2, 1, 1, 0},      /* strided, odd sizes */
        {1, 3, 32, 32, 8, 7, 7, 2, 3, 1, 0},      /* the ResNet stem */
        {3, 8, 7, 7, 16, 1, 1, 1, 0, 1, 1},       /* 1x1 */
        {2, 16, 8, 8, 8, 1, 1, 2, 0, 1, 0},       /* strided 1x1 (downsample) */
        {2, 8, 9, 9, 8, 3, 3, 1, 1, 2, 1},        /* groups 2 */
        {2, 12, 10, 10, 12, 3, 3, 1, 1, 12, 0},   /* depthwise */
        {2, 12, 11, 11, 12, 3, 3, 2, 1, 12, 0},   /* strided depthwise */
        {1, 6, 8, 8, 12, 3, 3, 1, 1, 6, 1},       /* depthwise x2 */
        {1, 2, 5, 5, 3, 5, 5, 1, 3, 1, 1},        /* pad wider than the kernel reach */
        {4, 64, 28, 28, 64, 3, 3, 1, 1, 1, 0},    /* a ResNet body shape */
        {2, 256, 14, 14, 512, 1, 1, 2, 0, 1, 0},  /* a bottleneck downsample */
        {2, 96, 28, 28, 96, 3, 3, 2, 1, 96, 0},   /* a MobileNetV2 depthwise */
        {2, 256, 8, 8, 256, 3, 3, 2, 1, 1, 1},    /* the PatchGD head */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_conv(&cases[i], CONV_TOL);
}

/* bf16 and fp16 on a few of the shapes above, then fp32 again on one of them: the cache of cuda_conv.cu keys its
 * descriptors by shape and precision, so that one must not run on a 16-bit entry. */
static void test_conv_half(void)
{
    fresh_backend_if_failed();
    static const conv_case cases[] = {
        {2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1},        /* padded 3x3 */
        {2, 3, 10, 11, 5, 3, 3, 2, 1, 1, 0},      /* strided, odd sizes */
        {3, 8, 7, 7, 16, 1, 1, 1, 0, 1, 1},       /* 1x1 */
        {2, 8, 9, 9, 8, 3, 3, 1, 1, 2, 1},        /* groups 2 */
        {2, 12, 11, 11, 12, 3, 3, 2, 1, 12, 0},   /* strided depthwise */
        {4, 64, 28, 28, 64, 3, 3, 1, 1, 1, 0},    /* a ResNet body shape (tensor-core friendly channels) */
        {2, 256, 8, 8, 256, 3, 3, 2, 1, 1, 1},    /* the PatchGD head */
    };
    static const pgd_precision precs[] = {PGD_PREC_BF16, PGD_PREC_FP16};
    for (size_t p = 0; p < sizeof precs / sizeof *precs; p++) {
        set_precision(precs[p]);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            run_conv(&cases[i], precs[p] == PGD_PREC_BF16 ? CONV_BF16_TOL : CONV_FP16_TOL);
    }
    set_precision(PGD_PREC_FP32);
    run_conv(&cases[0], CONV_TOL);
}

/* fp16 overflows to infinity (backend.h): a 1x1 conv whose exact outputs pass 65504 gives +-inf on both backends
 * at the same elements (cuDNN's conversion of its fp32 sums, gpu_kernels.h's on the CPU). Every input and weight
 * is exact in fp16 and every output an exact sum of four equal products, so the finite outputs agree exactly. */
static void test_fp16_overflow(void)
{
    fresh_backend_if_failed();
    set_precision(PGD_PREC_FP16);
    pgd_conv_shape sh = {2, 4, 4, 4, 2, 1, 1, 1, 0, 1, 0, 0};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_FATAL(pgd_conv_shape_init(&sh, &err) == 0);
    /* Output channel 0 is 1024 x the input value: 256 -> 262144 (+inf), 64 -> 65536 (+inf: 65520 and up round
     * to infinity), 63.75 -> 65280 (the largest but one fp16, finite), -256 and -64 -> -inf. Channel 1 is
     * input / 64, finite. */
    static const float vals[8] = {256.0f, -256.0f, 16.0f, 63.75f, 64.0f, -64.0f, 0.5f, 255.0f};
    size_t nin = (size_t)sh.n * sh.c * sh.h * sh.w, nout = (size_t)sh.n * sh.k * sh.oh * sh.ow, nw = 8;
    size_t hw = (size_t)sh.h * sh.w;
    float in[128], w[8], b[2] = {0.5f, -0.25f}, out[64], got[64];
    CU_ASSERT_FATAL(nin == 128 && nout == 64);
    for (size_t i = 0; i < nin; i++)
        in[i] = vals[(i % hw) % 8];
    for (size_t i = 0; i < nw; i++)
        w[i] = i < 4 ? 256.0f : 1.0f / 256.0f;
    float *d_in = devf(in, nin), *d_w = devf(w, nw), *d_b = devf(b, 2), *d_out = devf(NULL, nout);
    cpu->ops->conv2d_forward(cpu, out, in, w, b, &sh);
    gpu->ops->conv2d_forward(gpu, d_out, d_in, d_w, d_b, &sh);
    gpu_ok("fp16 overflow");
    gpu->ops->download(gpu, got, d_out, sizeof got);
    size_t pos_inf = 0, neg_inf = 0, differ = 0;
    for (size_t i = 0; i < nout; i++) {
        pos_inf += isinf(out[i]) && out[i] > 0;
        neg_inf += isinf(out[i]) && out[i] < 0;
        if (!(got[i] == out[i])) { /* inf == inf; a NaN anywhere differs */
            if (differ++ == 0)
                printf("\n    first difference at [%zu]: gpu %.9g cpu %.9g", i, (double)got[i], (double)out[i]);
        }
    }
    printf("\n    fp16 conv: cpu %zu +inf, %zu -inf of %zu; gpu differs at %zu", pos_inf, neg_inf, nout, differ);
    CU_ASSERT_EQUAL(pos_inf, 2 * 2 * 3); /* 2 images, 2 cells per value, 3 values */
    CU_ASSERT_EQUAL(neg_inf, 2 * 2 * 2);
    CU_ASSERT_EQUAL(differ, 0);
    /* The finiteness check sees them on both backends. */
    int32_t cflag = 0, gflag = 0, *d_flag = dev(&gflag, sizeof gflag);
    cpu->ops->nonfinite(cpu, &cflag, out, nout);
    gpu->ops->nonfinite(gpu, d_flag, d_out, nout);
    gpu->ops->download(gpu, &gflag, d_flag, sizeof gflag);
    gpu_ok("fp16 overflow nonfinite");
    CU_ASSERT(cflag == 1 && gflag == 1);
    set_precision(PGD_PREC_FP32);
    gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_w), gpu->ops->free(gpu, d_b), gpu->ops->free(gpu, d_out);
    gpu->ops->free(gpu, d_flag);
}

/* --- batch norm ----------------------------------------------------------------------------------------- */

static void run_bn(int n, int c, int hw, int running)
{
    pgd_bn_shape sh = {n, c, hw, 1e-5f, 0.1f};
    printf("\n  bn n%d c%d hw%d%s", n, c, hw, running ? "" : " (no running stats)");
    size_t nx = (size_t)n * c * hw;
    float *in = host_rand(nx, 2.0f, 0.5f), *gamma = host_rand(c, 1, 0), *beta = host_rand(c, 1, 0);
    float *rm = host_rand(c, 0.1f, 0), *rv = host_rand(c, 0.1f, 1.0f), *dout = host_rand(nx, 1, 0);
    float *out = host_fill(nx, 0), *smean = host_fill(c, 0), *sinv = host_fill(c, 0), *din = host_fill(nx, 0);
    float *dg = host_fill(c, 0.25f), *dbt = host_fill(c, 0.25f);
    float *d_in = devf(in, nx), *d_gamma = devf(gamma, c), *d_beta = devf(beta, c), *d_rm = devf(rm, c);
    float *d_rv = devf(rv, c), *d_dout = devf(dout, nx), *d_out = devf(NULL, nx), *d_smean = devf(NULL, c);
    float *d_sinv = devf(NULL, c), *d_din = devf(NULL, nx), *d_dg = devf(dg, c), *d_dbt = devf(dbt, c);

    cpu->ops->bn_forward_train(cpu, out, smean, sinv, running ? rm : NULL, running ? rv : NULL, in, gamma, beta, &sh);
    gpu->ops->bn_forward_train(gpu, d_out, d_smean, d_sinv, running ? d_rm : NULL, running ? d_rv : NULL, d_in,
                               d_gamma, d_beta, &sh);
    check("bn forward train", "out", d_out, out, nx, BN_TOL);
    check("bn forward train", "save_mean", d_smean, smean, c, BN_TOL);
    check("bn forward train", "save_invstd", d_sinv, sinv, c, BN_TOL);
    if (running) {
        check("bn forward train", "run_mean", d_rm, rm, c, BN_TOL);
        check("bn forward train", "run_var", d_rv, rv, c, BN_TOL);
    }
    /* Backward from the CPU's saved statistics on both sides, so only the backward itself is compared. */
    gpu->ops->upload(gpu, d_smean, smean, c * sizeof(float));
    gpu->ops->upload(gpu, d_sinv, sinv, c * sizeof(float));
    cpu->ops->bn_backward(cpu, din, dg, dbt, dout, in, gamma, smean, sinv, &sh);
    gpu->ops->bn_backward(gpu, d_din, d_dg, d_dbt, d_dout, d_in, d_gamma, d_smean, d_sinv, &sh);
    check("bn backward", "din", d_din, din, nx, BN_TOL);
    check("bn backward", "dgamma (+=)", d_dg, dg, c, BN_TOL);
    check("bn backward", "dbeta (+=)", d_dbt, dbt, c, BN_TOL);
    /* Eval with the (CPU's) running statistics. */
    gpu->ops->upload(gpu, d_rm, rm, c * sizeof(float));
    gpu->ops->upload(gpu, d_rv, rv, c * sizeof(float));
    cpu->ops->bn_forward_eval(cpu, out, in, gamma, beta, rm, rv, &sh);
    gpu->ops->bn_forward_eval(gpu, d_out, d_in, d_gamma, d_beta, d_rm, d_rv, &sh);
    check("bn forward eval", "out", d_out, out, nx, BN_TOL);

    float *all[] = {d_in, d_gamma, d_beta, d_rm, d_rv, d_dout, d_out, d_smean, d_sinv, d_din, d_dg, d_dbt};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        gpu->ops->free(gpu, all[i]);
    free(in), free(gamma), free(beta), free(rm), free(rv), free(dout), free(out), free(smean), free(sinv);
    free(din), free(dg), free(dbt);
}

static void test_batch_norm(void)
{
    fresh_backend_if_failed();
    run_bn(4, 8, 25, 1);
    run_bn(2, 16, 1, 1);   /* hw = 1, as after global pooling */
    run_bn(3, 5, 49, 0);
    run_bn(8, 64, 196, 1);
}

/* --- pooling -------------------------------------------------------------------------------------------- */

static void run_pool(int n, int c, int h, int w, int size, int stride, int pad, int with_nan)
{
    pgd_pool_shape sh = {n, c, h, w, size, stride, pad, 0, 0};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_FATAL(pgd_pool_shape_init(&sh, &err) == 0);
    printf("\n  pool n%d c%d %dx%d size %d stride %d pad %d%s", n, c, h, w, size, stride, pad,
           with_nan ? " with a NaN" : "");
    size_t nin = (size_t)n * c * h * w, nout = (size_t)n * c * sh.oh * sh.ow;
    float *in = host_rand(nin, 1, 0), *dout = host_rand(nout, 1, 0);
    for (size_t i = 0; i < nin; i++)
        in[i] = floorf(in[i] * 2.0f) / 2.0f; /* four values: windows are full of ties */
    if (with_nan)
        in[nin / 3] = NAN;
    float *out = host_fill(nout, 0), *din = host_fill(nin, 0);
    float *d_in = devf(in, nin), *d_dout = devf(dout, nout), *d_out = devf(NULL, nout), *d_din = devf(NULL, nin);

    cpu->ops->maxpool_forward(cpu, out, in, &sh);
    gpu->ops->maxpool_forward(gpu, d_out, d_in, &sh);
    check("maxpool forward", "out", d_out, out, nout, EXACT);
    cpu->ops->maxpool_backward(cpu, din, dout, in, &sh);
    gpu->ops->maxpool_backward(gpu, d_din, d_dout, d_in, &sh);
    check("maxpool backward", "din", d_din, din, nin, EXACT);
    if (!with_nan) {
        cpu->ops->avgpool_forward(cpu, out, in, &sh);
        gpu->ops->avgpool_forward(gpu, d_out, d_in, &sh);
        check("avgpool forward", "out", d_out, out, nout, SUM_TOL);
        cpu->ops->avgpool_backward(cpu, din, dout, &sh);
        gpu->ops->avgpool_backward(gpu, d_din, d_dout, &sh);
        check("avgpool backward", "din", d_din, din, nin, SUM_TOL);
    }
    gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_dout), gpu->ops->free(gpu, d_out), gpu->ops->free(gpu, d_din);
    free(in), free(dout), free(out), free(din);
}

static void test_pool(void)
{
    fresh_backend_if_failed();
    run_pool(2, 3, 9, 9, 3, 2, 1, 0);    /* the ResNet max pool */
    run_pool(1, 4, 8, 8, 2, 2, 0, 0);
    run_pool(2, 2, 7, 7, 3, 1, 1, 0);    /* overlapping windows */
    run_pool(1, 3, 10, 13, 4, 3, 2, 0);  /* pad = size / 2, odd sizes */
    run_pool(2, 8, 32, 32, 3, 2, 1, 0);
    run_pool(1, 2, 9, 9, 3, 2, 1, 1);
}

static void test_global_avgpool(void)
{
    fresh_backend_if_failed();
    static const int shapes[][3] = {{4, 16, 49}, {2, 3, 1}, {1, 8, 3136}, {3, 2048, 7}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        int n = shapes[k][0], c = shapes[k][1], hw = shapes[k][2];
        size_t nx = (size_t)n * c * hw, np = (size_t)n * c;
        printf("\n  global avgpool n%d c%d hw%d", n, c, hw);
        float *in = host_rand(nx, 1, 0.25f), *dout = host_rand(np, 1, 0);
        float *out = host_fill(np, 0), *din = host_fill(nx, 0);
        float *d_in = devf(in, nx), *d_dout = devf(dout, np), *d_out = devf(NULL, np), *d_din = devf(NULL, nx);
        cpu->ops->global_avgpool_forward(cpu, out, in, n, c, hw);
        gpu->ops->global_avgpool_forward(gpu, d_out, d_in, n, c, hw);
        check("global avgpool fwd", "out", d_out, out, np, SUM_TOL);
        cpu->ops->global_avgpool_backward(cpu, din, dout, n, c, hw);
        gpu->ops->global_avgpool_backward(gpu, d_din, d_dout, n, c, hw);
        check("global avgpool bwd", "din", d_din, din, nx, EXACT);
        gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_dout), gpu->ops->free(gpu, d_out);
        gpu->ops->free(gpu, d_din);
        free(in), free(dout), free(out), free(din);
    }
}

/* --- relu ----------------------------------------------------------------------------------------------- */

static void test_relu(void)
{
    fresh_backend_if_failed();
    size_t n = 10007;
    float *in = host_rand(n, 8.0f, 0), *dout = host_rand(n, 1, 0);
    in[0] = 0.0f, in[1] = 6.0f, in[2] = -0.0f, in[3] = 6.0000005f, in[4] = 5.9999995f;
    float *out = host_fill(n, 0), *din = host_fill(n, 0);
    float *d_in = devf(in, n), *d_dout = devf(dout, n), *d_out = devf(NULL, n), *d_din = devf(NULL, n);
    for (int k = 0; k < 2; k++) {
        float cap = k ? 6.0f : 0.0f;
        printf("\n  relu cap %g", (double)cap);
        cpu->ops->relu_forward(cpu, out, in, n, cap);
        gpu->ops->relu_forward(gpu, d_out, d_in, n, cap);
        check("relu forward", "out", d_out, out, n, EXACT);
        cpu->ops->relu_backward(cpu, din, dout, out, n, cap);
        gpu->ops->relu_backward(gpu, d_din, d_dout, d_out, n, cap);
        check("relu backward", "din", d_din, din, n, EXACT);
    }
    /* In place: out == in, din == dout. */
    gpu->ops->relu_forward(gpu, d_in, d_in, n, 6.0f);
    gpu->ops->relu_backward(gpu, d_dout, d_dout, d_in, n, 6.0f);
    check("relu in place", "out", d_in, out, n, EXACT);
    check("relu in place", "din", d_dout, din, n, EXACT);
    gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_dout), gpu->ops->free(gpu, d_out), gpu->ops->free(gpu, d_din);
    free(in), free(dout), free(out), free(din);
}

/* --- linear --------------------------------------------------------------------------------------------- */

/* In the backends' precision; LINEAR_TOL in every precision (see the top). */
static void run_linear(int n, int i, int o, int bias, int want_din)
{
    printf("\n  linear n%d i%d o%d%s%s %s", n, i, o, bias ? " bias" : "", want_din ? "" : " din=NULL",
           pgd_precision_name(gpu->precision));
    size_t nin = (size_t)n * i, nw = (size_t)o * i, nout = (size_t)n * o;
    float *in = host_rand(nin, 1, 0), *w = host_rand(nw, 1, 0), *b = host_rand(o, 1, 0), *dout = host_rand(nout, 1, 0);
    float *out = host_fill(nout, 0), *din = host_fill(nin, 0), *dw = host_fill(nw, 0.5f), *db = host_fill(o, 0.5f);
    float *d_in = devf(in, nin), *d_w = devf(w, nw), *d_b = devf(b, o), *d_dout = devf(dout, nout);
    float *d_out = devf(NULL, nout), *d_din = devf(NULL, nin), *d_dw = devf(dw, nw), *d_db = devf(db, o);
    cpu->ops->linear_forward(cpu, out, in, w, bias ? b : NULL, n, i, o);
    gpu->ops->linear_forward(gpu, d_out, d_in, d_w, bias ? d_b : NULL, n, i, o);
    check("linear forward", "out", d_out, out, nout, LINEAR_TOL);
    cpu->ops->linear_backward(cpu, want_din ? din : NULL, dw, bias ? db : NULL, dout, in, w, n, i, o);
    gpu->ops->linear_backward(gpu, want_din ? d_din : NULL, d_dw, bias ? d_db : NULL, d_dout, d_in, d_w, n, i, o);
    if (want_din)
        check("linear backward", "din", d_din, din, nin, LINEAR_TOL);
    check("linear backward", "dw (+=)", d_dw, dw, nw, LINEAR_TOL);
    if (bias)
        check("linear backward", "db (+=)", d_db, db, o, LINEAR_TOL);
    gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_w), gpu->ops->free(gpu, d_b), gpu->ops->free(gpu, d_dout);
    gpu->ops->free(gpu, d_out), gpu->ops->free(gpu, d_din), gpu->ops->free(gpu, d_dw), gpu->ops->free(gpu, d_db);
    free(in), free(w), free(b), free(dout), free(out), free(din), free(dw), free(db);
}

static void test_linear(void)
{
    fresh_backend_if_failed();
    run_linear(5, 7, 3, 1, 1);
    run_linear(32, 2048, 256, 1, 1); /* the ResNet50 backbone's fc -> s */
    run_linear(1, 512, 10, 0, 0);
    run_linear(3, 4096, 6, 1, 1);    /* the head's classifier */
}

static void test_linear_half(void)
{
    fresh_backend_if_failed();
    static const pgd_precision precs[] = {PGD_PREC_BF16, PGD_PREC_FP16};
    for (size_t p = 0; p < sizeof precs / sizeof *precs; p++) {
        set_precision(precs[p]);
        run_linear(5, 7, 3, 1, 1);       /* odd sizes: no tensor-core alignment */
        run_linear(32, 2048, 256, 1, 1);
        run_linear(1, 512, 10, 0, 0);
        run_linear(3, 4096, 6, 1, 1);
    }
    set_precision(PGD_PREC_FP32);
}

/* --- dropout2d ------------------------------------------------------------------------------------------ */

static void test_dropout2d(void)
{
    fresh_backend_if_failed();
    int n = 6, c = 37, hw = 11;
    size_t nx = (size_t)n * c * hw, np = (size_t)n * c;
    float *in = host_rand(nx, 1, 0), *dout = host_rand(nx, 1, 0);
    float *out = host_fill(nx, 0), *mask = host_fill(np, 0), *din = host_fill(nx, 0);
    float *d_in = devf(in, nx), *d_dout = devf(dout, nx), *d_out = devf(NULL, nx), *d_mask = devf(NULL, np);
    float *d_din = devf(NULL, nx);
    static const float ps[] = {0.2f, 0.0f, 0.5f, 1.0f};
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        uint64_t seed = 0x1234567ull + k * 0x9E3779B97F4A7C15ull;
        printf("\n  dropout2d p %g", (double)ps[k]);
        cpu->ops->dropout2d_forward(cpu, out, mask, in, n, c, hw, ps[k], seed);
        gpu->ops->dropout2d_forward(gpu, d_out, d_mask, d_in, n, c, hw, ps[k], seed);
        check("dropout2d forward", "mask", d_mask, mask, np, EXACT);
        check("dropout2d forward", "out", d_out, out, nx, EXACT);
        cpu->ops->dropout2d_backward(cpu, din, dout, mask, n, c, hw);
        gpu->ops->dropout2d_backward(gpu, d_din, d_dout, d_mask, n, c, hw);
        check("dropout2d backward", "din", d_din, din, nx, EXACT);
    }
    gpu->ops->free(gpu, d_in), gpu->ops->free(gpu, d_dout), gpu->ops->free(gpu, d_out), gpu->ops->free(gpu, d_mask);
    gpu->ops->free(gpu, d_din);
    free(in), free(dout), free(out), free(mask), free(din);
}

/* --- elementwise ---------------------------------------------------------------------------------------- */

static void test_elementwise(void)
{
    fresh_backend_if_failed();
    size_t n = 70001;
    float *a = host_rand(n, 3, 0), *b = host_rand(n, 3, 0), *out = host_fill(n, 0);
    float *d_a = devf(a, n), *d_b = devf(b, n), *d_out = devf(NULL, n);
    cpu->ops->add(cpu, out, a, b, n);
    gpu->ops->add(gpu, d_out, d_a, d_b, n);
    check("add", "out", d_out, out, n, EXACT);
    cpu->ops->add(cpu, a, a, b, n); /* aliased */
    gpu->ops->add(gpu, d_a, d_a, d_b, n);
    check("add aliased", "out", d_a, a, n, EXACT);
    cpu->ops->accumulate(cpu, a, b, n);
    gpu->ops->accumulate(gpu, d_a, d_b, n);
    check("accumulate", "dst", d_a, a, n, EXACT);
    cpu->ops->scale(cpu, a, -0.37f, n);
    gpu->ops->scale(gpu, d_a, -0.37f, n);
    check("scale", "x", d_a, a, n, EXACT);
    /* copy and zero */
    gpu->ops->copy(gpu, d_out, d_a, n * sizeof(float));
    check("copy", "dst", d_out, a, n, EXACT);
    gpu->ops->zero(gpu, d_out, 1000 * sizeof(float));
    memset(a, 0, 1000 * sizeof(float));
    check("zero", "dst", d_out, a, n, EXACT);
    gpu->ops->free(gpu, d_a), gpu->ops->free(gpu, d_b), gpu->ops->free(gpu, d_out);
    free(a), free(b), free(out);
}

/* --- finiteness ---------------------------------------------------------------------------------------- */

/* One call of nonfinite on both backends from a flag preset to `preset`; both must end at `want`. */
static void check_flag(const char *what, size_t at, const float *x, const float *d_x, size_t n, int32_t *d_flag,
                       int32_t preset, int32_t want)
{
    int32_t cflag = preset, gflag = -1;
    gpu->ops->upload(gpu, d_flag, &preset, sizeof preset);
    cpu->ops->nonfinite(cpu, &cflag, x, n);
    gpu->ops->nonfinite(gpu, d_flag, d_x, n);
    gpu->ops->download(gpu, &gflag, d_flag, sizeof gflag);
    gpu_ok("nonfinite");
    int ok = cflag == want && gflag == want;
    if (!ok)
        printf("\n    n %zu, %s at [%zu], flag preset %d: cpu %d gpu %d, want %d  <-- FAIL", n, what, at, (int)preset,
               (int)cflag, (int)gflag, (int)want);
    CU_ASSERT(ok);
}

static void test_nonfinite(void)
{
    fresh_backend_if_failed();
    static const size_t sizes[] = {1, 1000, ((size_t)1 << 20) + 3};
    static const char *const bad_names[] = {"+inf", "-inf", "NaN"};
    const float bad[] = {INFINITY, -INFINITY, NAN};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k], checks = 0;
        float *x = host_rand(n, 1e30f, 0);
        if (n > 3) { /* finite extremes: the largest float, a subnormal, negative zero */
            x[1] = 3.40282347e38f;
            x[2] = -1e-40f;
            x[n - 2] = -0.0f;
        }
        float *d_x = devf(x, n);
        int32_t *d_flag = dev(NULL, sizeof(int32_t));
        check_flag("nothing", 0, x, d_x, n, d_flag, 0, 0);   /* a clean buffer leaves the flag as it was */
        check_flag("nothing", 0, x, d_x, n, d_flag, 1, 1);
        checks += 2;
        const size_t at[] = {0, n / 2, n - 1};
        for (size_t a = 0; a < sizeof at / sizeof *at; a++)
            for (size_t v = 0; v < sizeof bad / sizeof *bad; v++) {
                float keep = x[at[a]];
                x[at[a]] = bad[v];
                gpu->ops->upload(gpu, d_x + at[a], &x[at[a]], sizeof(float));
                check_flag(bad_names[v], at[a], x, d_x, n, d_flag, 0, 1);
                check_flag(bad_names[v], at[a], x, d_x, n, d_flag, 1, 1);
                x[at[a]] = keep;
                gpu->ops->upload(gpu, d_x + at[a], &keep, sizeof(float));
                checks += 2;
            }
        printf("\n  nonfinite n %zu: %zu flags compared", n, checks);
        gpu->ops->free(gpu, d_x), gpu->ops->free(gpu, d_flag);
        free(x);
    }
}

/* --- cross-entropy -------------------------------------------------------------------------------------- */

static void test_xent(void)
{
    fresh_backend_if_failed();
    int n = 9, c = 10;
    size_t nl = (size_t)n * c;
    float *logits = host_rand(nl, 10.0f, 0);
    for (int j = 0; j < c; j++)
        logits[(size_t)(n - 1) * c + j] = (j % 2 ? 3e4f : -3e4f) * (float)(j + 1) / (float)c; /* extreme row */
    int32_t labels[9] = {0, 3, 9, 1, 1, 5, 7, 2, 4};
    float *loss = host_fill(n, 0), *probs = host_fill(nl, 0), *dl = host_fill(nl, 0);
    float *d_logits = devf(logits, nl), *d_loss = devf(NULL, n), *d_probs = devf(NULL, nl), *d_dl = devf(NULL, nl);
    int32_t *d_labels = dev(labels, sizeof labels);
    cpu->ops->xent_forward(cpu, loss, probs, logits, labels, n, c);
    gpu->ops->xent_forward(gpu, d_loss, d_probs, d_logits, d_labels, n, c);
    check("xent forward", "loss", d_loss, loss, n, SUM_TOL);
    check("xent forward", "probs", d_probs, probs, nl, SUM_TOL);
    gpu->ops->upload(gpu, d_probs, probs, nl * sizeof(float)); /* the same probs on both sides */
    cpu->ops->xent_backward(cpu, dl, probs, labels, n, c, 1.0f / 9.0f);
    gpu->ops->xent_backward(gpu, d_dl, d_probs, d_labels, n, c, 1.0f / 9.0f);
    check("xent backward", "dlogits", d_dl, dl, nl, EXACT);
    gpu->ops->free(gpu, d_logits), gpu->ops->free(gpu, d_loss), gpu->ops->free(gpu, d_probs);
    gpu->ops->free(gpu, d_dl), gpu->ops->free(gpu, d_labels);
    free(logits), free(loss), free(probs), free(dl);
}

/* --- optimizers ----------------------------------------------------------------------------------------- */

static void test_optim(void)
{
    fresh_backend_if_failed();
    size_t n = 10001;
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        printf("\n  %s, 3 steps", decoupled ? "AdamW" : "Adam");
        float *p = host_rand(n, 1, 0), *m = host_fill(n, 0), *v = host_fill(n, 0);
        float *d_p = devf(p, n), *d_m = devf(m, n), *d_v = devf(v, n);
        for (int step = 1; step <= 3; step++) {
            float *g = host_rand(n, 0.1f, 0);
            float *d_g = devf(g, n);
            pgd_adam_hp hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, decoupled, step, 0.5f};
            cpu->ops->adam_update(cpu, p, g, m, v, n, &hp);
            gpu->ops->adam_update(gpu, d_p, d_g, d_m, d_v, n, &hp);
            gpu->ops->free(gpu, d_g);
            free(g);
        }
        check("adam", "param", d_p, p, n, EXACT);
        check("adam", "m", d_m, m, n, EXACT);
        check("adam", "v", d_v, v, n, EXACT);
        gpu->ops->free(gpu, d_p), gpu->ops->free(gpu, d_m), gpu->ops->free(gpu, d_v);
        free(p), free(m), free(v);
    }
    for (int with_mom = 0; with_mom < 2; with_mom++) {
        printf("\n  SGD momentum %s, 3 steps", with_mom ? "0.9" : "0 (no buffer)");
        float *p = host_rand(n, 1, 0), *mom = host_fill(n, 0);
        float *d_p = devf(p, n), *d_mom = with_mom ? devf(mom, n) : NULL;
        for (int step = 1; step <= 3; step++) {
            float *g = host_rand(n, 0.1f, 0);
            float *d_g = devf(g, n);
            pgd_sgd_hp hp = {0.01f, with_mom ? 0.9f : 0.0f, 1e-4f, 0.5f, step};
            cpu->ops->sgd_update(cpu, p, g, with_mom ? mom : NULL, n, &hp);
            gpu->ops->sgd_update(gpu, d_p, d_g, d_mom, n, &hp);
            gpu->ops->free(gpu, d_g);
            free(g);
        }
        check("sgd", "param", d_p, p, n, EXACT);
        if (with_mom)
            check("sgd", "momentum", d_mom, mom, n, EXACT);
        gpu->ops->free(gpu, d_p), gpu->ops->free(gpu, d_mom);
        free(p), free(mom);
    }
}

/* --- data ----------------------------------------------------------------------------------------------- */

static void test_u8_to_float(void)
{
    fresh_backend_if_failed();
    int n = 3, h = 5, w = 7, c = 3;
    size_t nb = (size_t)n * h * w * c;
    uint8_t *px = malloc(nb);
    CU_ASSERT_FATAL(px != NULL);
    for (size_t i = 0; i < nb; i++)
        px[i] = (uint8_t)(i * 37 + 11);
    px[0] = 0, px[1] = 255;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    float *out = host_fill(nb, 0);
    uint8_t *d_px = dev(px, nb);
    float *d_out = devf(NULL, nb);
    cpu->ops->u8_to_float(cpu, out, px, n, h, w, c, mean, sd);
    gpu->ops->u8_to_float(gpu, d_out, d_px, n, h, w, c, mean, sd);
    check("u8_to_float", "out", d_out, out, nb, EXACT);
    gpu->ops->free(gpu, d_px), gpu->ops->free(gpu, d_out);
    free(px), free(out);
}

static void test_z_scatter_gather(void)
{
    fresh_backend_if_failed();
    int b = 3, s = 16, mn = 20, count = 25;
    size_t nz = (size_t)b * s * mn, nf = (size_t)count * s;
    uint32_t cell[25];
    for (int i = 0; i < count; i++)
        cell[i] = (uint32_t)((i * 7 + 3) % (b * mn)); /* 7 is prime to 60: distinct cells */
    float *z = host_rand(nz, 1, 0), *feat = host_rand(nf, 1, 0), *dfeat = host_fill(nf, 0);
    float *d_z = devf(z, nz), *d_feat = devf(feat, nf), *d_dfeat = devf(NULL, nf);
    uint32_t *d_cell = dev(cell, sizeof cell);
    cpu->ops->z_scatter(cpu, z, feat, cell, count, s, mn);
    gpu->ops->z_scatter(gpu, d_z, d_feat, d_cell, count, s, mn);
    check("z_scatter", "z", d_z, z, nz, EXACT);
    float *dz = host_rand(nz, 1, 0);
    gpu->ops->upload(gpu, d_z, dz, nz * sizeof(float));
    cpu->ops->z_gather(cpu, dfeat, dz, cell, count, s, mn);
    gpu->ops->z_gather(gpu, d_dfeat, d_z, d_cell, count, s, mn);
    check("z_gather", "dfeat", d_dfeat, dfeat, nf, EXACT);
    gpu->ops->free(gpu, d_z), gpu->ops->free(gpu, d_feat), gpu->ops->free(gpu, d_dfeat), gpu->ops->free(gpu, d_cell);
    free(z), free(feat), free(dfeat), free(dz);
}

/* --- memory, budget, errors ----------------------------------------------------------------------------- */

static void test_budget(void)
{
    fresh_backend_if_failed();
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cuda_new(0, 0.25, &err); /* 256 MiB */
    CU_ASSERT_FATAL(be != NULL);
    pgd_mem_stats st;
    pgd_backend_mem_stats(be, &st);
    printf("\n    at start: in use %zu (the cuBLAS workspace), budget %zu", st.in_use, st.budget);
    CU_ASSERT_EQUAL(st.budget, (size_t)1 << 28);
    size_t base = st.in_use;
    void *a = be->ops->alloc(be, (size_t)150 << 20);
    CU_ASSERT_PTR_NOT_NULL(a);
    float one = 1.0f, back = 0.0f;
    be->ops->upload(be, (char *)a + ((size_t)150 << 20) - 4, &one, 4); /* the last float is usable */
    be->ops->download(be, &back, (char *)a + ((size_t)150 << 20) - 4, 4);
    CU_ASSERT_EQUAL(back, 1.0f);
    CU_ASSERT_PTR_NULL(be->ops->alloc(be, (size_t)150 << 20));
    CU_ASSERT_EQUAL(pgd_backend_error(be, &err), -1);
    printf("\n    over budget: %s:%d: %s", err.file, err.line, err.msg);
    CU_ASSERT(strstr(err.msg, "over the budget of 268435456 bytes") != NULL);
    pgd_backend_mem_stats(be, &st);
    CU_ASSERT(st.peak_in_use >= base + ((size_t)150 << 20));
    CU_ASSERT_EQUAL(st.failures, 1);
    be->ops->free(be, a);
    pgd_backend_mem_stats(be, &st);
    CU_ASSERT_EQUAL(st.in_use, base);
    pgd_backend_free(&be);
    CU_ASSERT_PTR_NULL(be);
}

static void test_errors(void)
{
    fresh_backend_if_failed();
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_backend_cuda_new(999, 0, &err));
    printf("\n    device 999: %s", err.msg);
    CU_ASSERT(strstr(err.msg, "does not exist") != NULL);

    pgd_err_clear(&err);
    pgd_backend *be = pgd_backend_cuda_new(0, 0, &err);
    CU_ASSERT_FATAL(be != NULL);
    int x;
    be->ops->free(be, &x); /* not the backend's */
    CU_ASSERT_EQUAL(pgd_backend_error(be, &err), -1);
    printf("\n    bad free: %s:%d: %s", err.file, err.line, err.msg);
    CU_ASSERT(strstr(err.file, "trainer/cuda_backend.cu") != NULL);
    /* Sticky: later ops do nothing, the first error stays. */
    CU_ASSERT_PTR_NULL(be->ops->alloc(be, 16));
    pgd_err again = PGD_ERR_INIT;
    pgd_backend_error(be, &again);
    CU_ASSERT_STRING_EQUAL(again.msg, err.msg);
    pgd_backend_free(&be);

    /* PGD_CUDA_SYNC=1: every op synchronises; results are the same. */
    setenv("PGD_CUDA_SYNC", "1", 1);
    pgd_err_clear(&err);
    be = pgd_backend_cuda_new(0, 0, &err);
    unsetenv("PGD_CUDA_SYNC");
    CU_ASSERT_FATAL(be != NULL);
    float h[4] = {-1, 2, -3, 4}, r[4];
    float *d = be->ops->alloc(be, sizeof h);
    be->ops->upload(be, d, h, sizeof h);
    be->ops->relu_forward(be, d, d, 4, 0);
    be->ops->download(be, r, d, sizeof r);
    CU_ASSERT(r[0] == 0 && r[1] == 2 && r[2] == 0 && r[3] == 4);
    CU_ASSERT_EQUAL(pgd_backend_error(be, NULL), 0);
    be->ops->free(be, d);
    pgd_backend_free(&be);
}

int main(int argc, char **argv)
{
    char why[256] = "";
    if (pgd_cuda_device_count(why, sizeof why) <= 0) {
        printf("test_gpu_ops: skipped: no CUDA device (%s)\n", why);
        return 77;
    }
    pgd_err err = PGD_ERR_INIT;
    gpu = pgd_backend_cuda_new(0, 0, &err);
    if (!gpu) {
        printf("test_gpu_ops: cannot start the cuda backend: %s:%d: %s\n", err.file, err.line, err.msg);
        return 1;
    }
    cpu = pgd_backend_cpu_new(0, &err);
    if (!cpu) {
        printf("test_gpu_ops: cannot start the cpu backend: %s\n", err.msg);
        return 1;
    }
    static const pgd_test_case cases[] = {
        {"conv", test_conv},
        {"conv_half", test_conv_half},
        {"fp16_overflow", test_fp16_overflow},
        {"batch_norm", test_batch_norm},
        {"pool", test_pool},
        {"global_avgpool", test_global_avgpool},
        {"relu", test_relu},
        {"linear", test_linear},
        {"linear_half", test_linear_half},
        {"dropout2d", test_dropout2d},
        {"elementwise", test_elementwise},
        {"nonfinite", test_nonfinite},
        {"xent", test_xent},
        {"optim", test_optim},
        {"u8_to_float", test_u8_to_float},
        {"z_scatter_gather", test_z_scatter_gather},
        {"budget", test_budget},
        {"errors", test_errors},
        {NULL, NULL},
    };
    int rc = pgd_test_main("gpu_ops", cases, argc, argv);
    pgd_mem_stats st;
    pgd_backend_mem_stats(gpu, &st);
    printf("gpu_ops: device memory peak %.1f MiB in use, %.1f MiB reserved; %llu allocations, %llu from the cache\n",
           (double)st.peak_in_use / 1048576.0, (double)st.peak_reserved / 1048576.0, (unsigned long long)st.allocs,
           (unsigned long long)st.reuses);
    pgd_backend_free(&gpu);
    pgd_backend_free(&cpu);
    return rc;
}
