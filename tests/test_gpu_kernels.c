/* test_gpu_kernels.c: the CUDA backend's own kernel bodies (trainer/gpu_kernels.h) run on the host, element by
 * element as the kernels launch them, against the CPU reference backend: they must agree bit for bit. This runs
 * everywhere, so the index arithmetic of the GPU kernels (pooling windows, gathers, layouts) is checked even
 * without a GPU; tests/test_gpu_ops.c checks the real kernels on a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "cunit_util.h"
#include "trainer/backend.h"
#include "trainer/gpu_kernels.h"

static pgd_backend *cpu;
static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((int64_t)(rng_state >> 40) - (1 << 23)) / (float)(1 << 23);
}

static float *floats(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    CU_ASSERT_FATAL(p != NULL);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

/* Bitwise equality (NaN equals NaN); prints the first difference. */
static int same(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int both_nan = isnan(got[i]) && isnan(want[i]);
        if (!both_nan && memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            printf("\n    %s: element %zu of %zu: kernel body %.9g, cpu %.9g", what, i, n, (double)got[i],
                   (double)want[i]);
            CU_FAIL("kernel body differs from the CPU backend");
            return 0;
        }
    }
    CU_PASS(what);
    return 1;
}

static void test_hash(void)
{
    uint64_t seed = 1;
    for (int k = 0; k < 100000; k++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t index = seed >> (k % 64);
        float a = pgd_gk_hash_uniform(seed, index), b = pgd_hash_uniform(seed, index);
        if (memcmp(&a, &b, sizeof a) != 0) {
            CU_FAIL("device hash differs from pgd_hash_uniform");
            return;
        }
    }
}

/* The covering range of every input coordinate equals the brute-force set of windows holding it. */
static void test_covering(void)
{
    for (int size = 1; size <= 7; size++)
        for (int stride = 1; stride <= 4; stride++)
            for (int pad = 0; 2 * pad <= size; pad++)
                for (int h = size > 2 * pad ? size - 2 * pad : 1; h <= 13; h++) {
                    int on = (h + 2 * pad - size) / stride + 1;
                    for (int y = 0; y < h; y++) {
                        int lo, hi, blo = -1, bhi = -2;
                        pgd_gk_covering(y, size, stride, pad, on, &lo, &hi);
                        for (int o = 0; o < on; o++)
                            if (o * stride - pad <= y && y < o * stride - pad + size) {
                                if (blo < 0)
                                    blo = o;
                                bhi = o;
                            }
                        if (blo < 0 ? lo <= hi : lo != blo || hi != bhi) {
                            printf("\n    size %d stride %d pad %d h %d y %d: [%d, %d], brute force [%d, %d]", size,
                                   stride, pad, h, y, lo, hi, blo, bhi);
                            CU_FAIL("covering range");
                            return;
                        }
                    }
                }
}

static void run_pool(int n, int c, int h, int w, int size, int stride, int pad, int ties, int with_nan)
{
    pgd_pool_shape sh = {n, c, h, w, size, stride, pad, 0, 0};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_FATAL(pgd_pool_shape_init(&sh, &err) == 0);
    pgd_gk_pool g = {sh.h, sh.w, sh.oh, sh.ow, sh.size, sh.stride, sh.pad};
    size_t nin = (size_t)n * c * h * w, nout = (size_t)n * c * sh.oh * sh.ow;
    float *in = floats(nin, 1), *dout = floats(nout, 1);
    if (ties)
        for (size_t i = 0; i < nin; i++)
            in[i] = floorf(in[i] * 2.0f) / 2.0f;
    if (with_nan)
        in[nin / 2] = NAN;
    size_t most = nin > nout ? nin : nout; /* padding can make the output larger than the input */
    float *want = malloc(most * sizeof(float)), *got = malloc(most * sizeof(float));
    CU_ASSERT_FATAL(want && got);
    float inv = 1.0f / (float)(size * size);
    char what[128];
    snprintf(what, sizeof what, "pool n%d c%d %dx%d size %d stride %d pad %d%s%s", n, c, h, w, size, stride, pad,
             ties ? " ties" : "", with_nan ? " NaN" : "");

    cpu->ops->maxpool_forward(cpu, want, in, &sh);
    for (size_t i = 0; i < nout; i++)
        got[i] = pgd_gk_maxpool_fwd(in, &g, i);
    same(what, got, want, nout);
    cpu->ops->maxpool_backward(cpu, want, dout, in, &sh);
    for (size_t i = 0; i < nin; i++)
        got[i] = pgd_gk_maxpool_bwd(dout, in, &g, i);
    same(what, got, want, nin);
    cpu->ops->avgpool_forward(cpu, want, in, &sh);
    for (size_t i = 0; i < nout; i++)
        got[i] = pgd_gk_avgpool_fwd(in, &g, i, inv);
    same(what, got, want, nout);
    cpu->ops->avgpool_backward(cpu, want, dout, &sh);
    for (size_t i = 0; i < nin; i++)
        got[i] = pgd_gk_avgpool_bwd(dout, &g, i, inv);
    same(what, got, want, nin);
    free(in), free(dout), free(want), free(got);
}

static void test_pool(void)
{
    for (int size = 1; size <= 5; size++)
        for (int stride = 1; stride <= 3; stride++)
            for (int pad = 0; 2 * pad <= size; pad++)
                for (int ties = 0; ties < 2; ties++)
                    run_pool(2, 3, 9 + stride, 7 + size, size, stride, pad, ties, 0);
    run_pool(2, 2, 9, 9, 3, 2, 1, 1, 1);
    run_pool(1, 4, 112, 112, 3, 2, 1, 1, 0); /* the ResNet stem's max pool */
}

static void test_relu(void)
{
    size_t n = 5000;
    float *in = floats(n, 8), *dout = floats(n, 1), *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    CU_ASSERT_FATAL(want && got);
    in[0] = 0.0f, in[1] = 6.0f, in[2] = -0.0f, in[3] = 6.0000005f;
    for (int k = 0; k < 2; k++) {
        float cap = k ? 6.0f : 0.0f;
        cpu->ops->relu_forward(cpu, want, in, n, cap);
        for (size_t i = 0; i < n; i++)
            got[i] = pgd_gk_relu(in[i], cap);
        same("relu forward", got, want, n);
        float *out = malloc(n * sizeof(float));
        CU_ASSERT_FATAL(out != NULL);
        memcpy(out, want, n * sizeof(float));
        cpu->ops->relu_backward(cpu, want, dout, out, n, cap);
        for (size_t i = 0; i < n; i++)
            got[i] = pgd_gk_relu_grad(dout[i], out[i], cap);
        same("relu backward", got, want, n);
        free(out);
    }
    free(in), free(dout), free(want), free(got);
}

static void test_xent(void)
{
    int n = 6, c = 1000;
    float *logits = floats((size_t)n * c, 20), *loss = malloc(n * sizeof(float)), *probs = malloc((size_t)n * c * 4);
    float *gl = malloc(n * sizeof(float)), *gp = malloc((size_t)n * c * 4);
    CU_ASSERT_FATAL(loss && probs && gl && gp);
    logits[0] = 3e4f, logits[1] = -3e4f;
    int32_t labels[6] = {0, 999, 5, 17, 500, 1};
    cpu->ops->xent_forward(cpu, loss, probs, logits, labels, n, c);
    for (int row = 0; row < n; row++)
        gl[row] = pgd_gk_xent_row(gp + (size_t)row * c, logits + (size_t)row * c, c, labels[row]);
    same("xent loss", gl, loss, n);
    same("xent probs", gp, probs, (size_t)n * c);
    free(logits), free(loss), free(probs), free(gl), free(gp);
}

static void test_u8_and_z(void)
{
    int n = 2, h = 5, w = 3, c = 3;
    size_t nb = (size_t)n * h * w * c;
    uint8_t *px = malloc(nb);
    float *want = malloc(nb * sizeof(float)), *got = malloc(nb * sizeof(float));
    CU_ASSERT_FATAL(px && want && got);
    for (size_t i = 0; i < nb; i++)
        px[i] = (uint8_t)(i * 53 + 7);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    cpu->ops->u8_to_float(cpu, want, px, n, h, w, c, mean, sd);
    for (size_t i = 0; i < nb; i++)
        got[i] = pgd_gk_u8(px, (size_t)h * w, c, mean, sd, i);
    same("u8_to_float", got, want, nb);

    int b = 3, s = 5, mn = 12, count = 7;
    uint32_t cell[7] = {0, 13, 35, 5, 24, 11, 30};
    size_t nz = (size_t)b * s * mn, nf = (size_t)count * s;
    float *feat = floats(nf, 1), *z1 = floats(nz, 1), *z2 = malloc(nz * sizeof(float));
    float *df1 = malloc(nf * sizeof(float)), *df2 = malloc(nf * sizeof(float));
    CU_ASSERT_FATAL(z2 && df1 && df2);
    memcpy(z2, z1, nz * sizeof(float));
    cpu->ops->z_scatter(cpu, z1, feat, cell, count, s, mn);
    for (size_t t = 0; t < nf; t++)
        z2[pgd_gk_z_index(cell, s, (unsigned)mn, t)] = feat[t];
    same("z_scatter", z2, z1, nz);
    cpu->ops->z_gather(cpu, df1, z1, cell, count, s, mn);
    for (size_t t = 0; t < nf; t++)
        df2[t] = z1[pgd_gk_z_index(cell, s, (unsigned)mn, t)];
    same("z_gather", df2, df1, nf);
    free(px), free(want), free(got), free(feat), free(z1), free(z2), free(df1), free(df2);
}

static void test_dropout_mask(void)
{
    int n = 5, c = 41, hw = 3;
    size_t planes = (size_t)n * c, nx = planes * hw;
    float *in = floats(nx, 1), *out = malloc(nx * sizeof(float)), *mask = malloc(planes * sizeof(float));
    float *got = malloc(planes * sizeof(float));
    CU_ASSERT_FATAL(out && mask && got);
    float p = 0.3f, keep = 1.0f / (1.0f - p);
    uint64_t seed = 0xDEADBEEFCAFEull;
    cpu->ops->dropout2d_forward(cpu, out, mask, in, n, c, hw, p, seed);
    for (size_t pl = 0; pl < planes; pl++) /* cuda_misc.cu's dropout_mask_kernel */
        got[pl] = pgd_gk_hash_uniform(seed, pl) >= p ? keep : 0.0f;
    same("dropout2d mask", got, mask, planes);
    free(in), free(out), free(mask), free(got);
}

static void test_optim(void)
{
    size_t n = 3001;
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        float *p1 = floats(n, 1), *p2 = malloc(n * 4), *m1 = calloc(n, 4), *m2 = calloc(n, 4);
        float *v1 = calloc(n, 4), *v2 = calloc(n, 4);
        CU_ASSERT_FATAL(p2 && m1 && m2 && v1 && v2);
        memcpy(p2, p1, n * 4);
        for (int step = 1; step <= 3; step++) {
            float *g = floats(n, 0.1f);
            pgd_adam_hp hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, decoupled, step, 0.5f};
            cpu->ops->adam_update(cpu, p1, g, m1, v1, n, &hp);
            pgd_gk_adam a = pgd_gk_adam_args(hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.decoupled, hp.step,
                                             hp.grad_scale);
            for (size_t i = 0; i < n; i++)
                pgd_gk_adam_at(p2, g, m2, v2, i, &a);
            free(g);
        }
        same(decoupled ? "adamw param" : "adam param", p2, p1, n);
        same("adam m", m2, m1, n);
        same("adam v", v2, v1, n);
        free(p1), free(p2), free(m1), free(m2), free(v1), free(v2);
    }
    for (int with_mom = 0; with_mom < 2; with_mom++) {
        float *p1 = floats(n, 1), *p2 = malloc(n * 4), *b1 = calloc(n, 4), *b2 = calloc(n, 4);
        CU_ASSERT_FATAL(p2 && b1 && b2);
        memcpy(p2, p1, n * 4);
        for (int step = 1; step <= 3; step++) {
            float *g = floats(n, 0.1f);
            pgd_sgd_hp hp = {0.01f, with_mom ? 0.9f : 0.0f, 1e-4f, 0.5f, step};
            cpu->ops->sgd_update(cpu, p1, g, b1, n, &hp);
            for (size_t i = 0; i < n; i++)
                pgd_gk_sgd_at(p2, g, b2, i, hp.lr, hp.momentum, hp.weight_decay, hp.grad_scale, hp.step <= 1);
            free(g);
        }
        same("sgd param", p2, p1, n);
        same("sgd momentum", b2, b1, n);
        free(p1), free(p2), free(b1), free(b2);
    }
}

/* bf16 by another route: the two neighbours in double, nearest wins, a tie goes to the even one. */
static uint16_t bf16_reference(float x)
{
    uint32_t u = pgd_gk_bits(x);
    if (isnan(x))
        return (uint16_t)((u >> 16) | 0x40u);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double mag = fabs((double)x), a = fabs((double)pgd_gk_float(lo));
    double b = (hi & 0x7fffffffu) == 0x7f800000u ? ldexp(1.0, 128) : fabs((double)pgd_gk_float(hi));
    if ((u & 0x7fffffffu) == 0x7f800000u)
        return (uint16_t)(u >> 16);
    if (mag - a < b - mag || (mag - a == b - mag && !((lo >> 16) & 1u)))
        return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

/* Checks one float against the compiler's _Float16 (round to nearest even in libgcc) and the bf16 reference. */
static int check_half(float x, long *bad)
{
    _Float16 h = (_Float16)x;
    uint16_t want, got = pgd_gk_to_fp16(x);
    memcpy(&want, &h, 2);
    if (isnan(x) ? (got & 0x7c00u) != 0x7c00u || !(got & 0x3ffu) : got != want) {
        if ((*bad)++ < 5)
            fprintf(stderr, "fp16 of %a (0x%08x): got 0x%04x want 0x%04x\n", (double)x, pgd_gk_bits(x), got, want);
        return -1;
    }
    uint16_t b = pgd_gk_to_bf16(x), rb = bf16_reference(x);
    if (b != rb) {
        if ((*bad)++ < 5)
            fprintf(stderr, "bf16 of %a (0x%08x): got 0x%04x want 0x%04x\n", (double)x, pgd_gk_bits(x), b, rb);
        return -1;
    }
    return 0;
}

static void test_half_convert(void)
{
    long bad = 0;
    /* Every 16-bit pattern back to float: fp16 against _Float16, bf16 exactly the top half of a float. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        uint16_t b = (uint16_t)h;
        _Float16 f;
        memcpy(&f, &b, 2);
        float want = (float)f, got = pgd_gk_from_fp16(b);
        if (isnan(want) ? !isnan(got) : pgd_gk_bits(got) != pgd_gk_bits(want))
            bad++;
        if (pgd_gk_bits(pgd_gk_from_bf16(b)) != h << 16)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* Floats around every fp16 value and every midpoint between neighbours (the ties), both signs. */
    for (uint32_t h = 0; h < 0x7c00u; h++) {
        float v = pgd_gk_from_fp16((uint16_t)h), next = pgd_gk_from_fp16((uint16_t)(h + 1));
        float mid = h + 1 < 0x7c00u ? (float)(((double)v + (double)next) / 2) : 65520.0f;
        for (int d = -2; d <= 2; d++) {
            check_half(pgd_gk_float(pgd_gk_bits(v) + (uint32_t)d), &bad);
            check_half(pgd_gk_float(pgd_gk_bits(mid) + (uint32_t)d), &bad);
            check_half(-pgd_gk_float(pgd_gk_bits(mid) + (uint32_t)d), &bad);
        }
    }
    /* A sweep over all float bit patterns (every 251st), infinities, NaNs and huge values included. */
    for (uint64_t u = 0; u <= 0xffffffffull; u += 251)
        check_half(pgd_gk_float((uint32_t)u), &bad);
    check_half(INFINITY, &bad);
    check_half(-INFINITY, &bad);
    check_half(NAN, &bad);
    CU_ASSERT_EQUAL(bad, 0);
    /* pgd_gk_round and pgd_gk_nonfinite. */
    CU_ASSERT_EQUAL(pgd_gk_round(1.0f + 1.0f / 256, 1), 1.0f);           /* ties go to even */
    CU_ASSERT_EQUAL(pgd_gk_round(1.0f + 3.0f / 256, 1), 1.0f + 1.0f / 64);
    CU_ASSERT_EQUAL(pgd_gk_round(65519.0f, 2), 65504.0f);
    CU_ASSERT(isinf(pgd_gk_round(65520.0f, 2)));
    CU_ASSERT_EQUAL(pgd_gk_round(0.1f, 0), 0.1f);
    CU_ASSERT(pgd_gk_nonfinite(INFINITY) && pgd_gk_nonfinite(-INFINITY) && pgd_gk_nonfinite(NAN));
    CU_ASSERT(!pgd_gk_nonfinite(3.4e38f) && !pgd_gk_nonfinite(0.0f) && !pgd_gk_nonfinite(-1e-45f));
}

int main(int argc, char **argv)
{
    pgd_err err = PGD_ERR_INIT;
    cpu = pgd_backend_cpu_new(1, &err);
    if (!cpu) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    static const pgd_test_case cases[] = {
        {"hash", test_hash},
        {"covering", test_covering},
        {"pool", test_pool},
        {"relu", test_relu},
        {"xent", test_xent},
        {"u8_and_z", test_u8_and_z},
        {"dropout_mask", test_dropout_mask},
        {"optim", test_optim},
        {"half_convert", test_half_convert},
        {NULL, NULL},
    };
    int rc = pgd_test_main("gpu_kernels", cases, argc, argv);
    pgd_backend_free(&cpu);
    return rc;
}
