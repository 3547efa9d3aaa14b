/* test_scaler.c: fp16 loss scaling (trainer/scaler.h) and mixed-precision training on the CPU backend: the
 * scale's rule, skipped updates that change nothing, and PatchGD / GD steps in bf16 and fp16 that move the
 * weights as fp32 does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "rng.h"
#include "trainer/backend.h"
#include "trainer/gd.h"
#include "trainer/model.h"
#include "trainer/patchgd.h"
#include "trainer/scaler.h"

enum { P = 16, C = 3, S = 6, M = 2, N = 2, MN = M * N, B = 2, CLASSES = 3, K = 2 };

static pgd_backend *cpu(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    return be;
}

/* A net whose gradient buffer the test writes itself (host memory on the CPU backend). */
static pgd_net *linear_net(pgd_backend *be)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    pgd_net_linear(net, pgd_net_input(net, 4, 1, 1), "fc", 3, 1);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, 1, &err), 0);
    return net;
}

/* Updates the scaler skipped so far (0 without one). */
static int64_t skipped(const pgd_scaler *sc)
{
    pgd_scaler_state st = {0};
    if (sc)
        pgd_scaler_get(sc, &st);
    return st.skipped;
}

static void fill_grads(pgd_net *net, float v)
{
    float *g = pgd_net_grads(net);
    for (size_t i = 0; i < pgd_net_param_count(net); i++)
        g[i] = v;
}

/* Finite: 1 and 1 / S, S doubles after `interval` finite checks. Not finite: 0, gradients zeroed, S halved,
 * never below 1; give_up skips in a row fail with a message. */
static void test_rule(void)
{
    pgd_backend *be = cpu();
    pgd_net *a = linear_net(be), *b = linear_net(be);
    pgd_err err = PGD_ERR_INIT;
    pgd_scaler_cfg cfg = {.init = 8.0f, .interval = 3, .give_up = 6};
    pgd_scaler *sc = pgd_scaler_new(be, &cfg, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sc);
    pgd_net *nets[3] = {a, NULL, b};
    float unscale = 0;
    fill_grads(a, 0.5f), fill_grads(b, -2.0f);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 8.0f);
        CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 1);
        CU_ASSERT_EQUAL(unscale, 0.125f);
    }
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 16.0f); /* three finite updates: doubled */
    CU_ASSERT_EQUAL(pgd_net_grads(a)[0], 0.5f);   /* a finite check leaves the gradients to the update */
    pgd_net_grads(b)[pgd_net_param_count(b) - 1] = INFINITY;
    CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 0);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 8.0f);
    for (size_t i = 0; i < pgd_net_param_count(a); i++)
        CU_ASSERT_EQUAL(pgd_net_grads(a)[i], 0.0f);
    for (size_t i = 0; i < pgd_net_param_count(b); i++)
        CU_ASSERT_EQUAL(pgd_net_grads(b)[i], 0.0f);
    /* a NaN in the first net; the good count restarted with the skip */
    fill_grads(b, 1.0f);
    pgd_net_grads(a)[0] = NAN;
    CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 0);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 4.0f);
    pgd_scaler_state st;
    pgd_scaler_get(sc, &st);
    CU_ASSERT_EQUAL(st.skipped, 2);
    CU_ASSERT_EQUAL(st.streak, 2);
    CU_ASSERT_EQUAL(st.good, 0);
    /* S stops at 1; the sixth skip in a row fails, naming the scale */
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        pgd_net_grads(a)[1] = INFINITY;
        rc = pgd_scaler_check(sc, nets, 3, &unscale, &err);
        if (i < 3)
            CU_ASSERT_EQUAL(rc, 0);
    }
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 1.0f);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "6 updates in a row"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bf16"));
    /* a finite update ends the streak */
    err = (pgd_err)PGD_ERR_INIT;
    fill_grads(a, 0.0f);
    CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 1);
    pgd_scaler_get(sc, &st);
    CU_ASSERT_EQUAL(st.streak, 0);
    CU_ASSERT_EQUAL(st.skipped, 6);
    /* state round trip, and bad states refused */
    pgd_scaler_state set = {.scale = 512.0f, .good = 2, .skipped = 9, .streak = 1};
    CU_ASSERT_EQUAL(pgd_scaler_set(sc, &set, &err), 0);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 512.0f);
    CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 1); /* the third good one: doubles */
    CU_ASSERT_EQUAL(unscale, 1.0f / 512);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 1024.0f);
    pgd_scaler_state bad[3] = {{.scale = 0.5f}, {.scale = INFINITY}, {.scale = 2.0f, .good = -1}};
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(pgd_scaler_set(sc, &bad[i], &err), -1);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 1024.0f);
    pgd_scaler_free(&sc);
    CU_ASSERT_PTR_NULL(sc);
    /* interval 0: S stays; bad configurations are refused */
    pgd_scaler_cfg fixed = {.init = 4.0f, .interval = 0, .give_up = 10};
    sc = pgd_scaler_new(be, &fixed, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sc);
    pgd_net_grads(a)[0] = INFINITY;
    CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 0);
    CU_ASSERT_EQUAL(pgd_scaler_check(sc, nets, 3, &unscale, &err), 1);
    CU_ASSERT_EQUAL(pgd_scaler_scale(sc), 4.0f);
    pgd_scaler_free(&sc);
    pgd_scaler_cfg bad_cfg[3] = {{.init = 0.5f, .interval = 1, .give_up = 1}, {.init = NAN, .interval = 1, .give_up = 1},
                                 {.init = 2.0f, .interval = -1, .give_up = 1}};
    for (int i = 0; i < 3; i++)
        CU_ASSERT_PTR_NULL(pgd_scaler_new(be, &bad_cfg[i], &err));
    pgd_net_free(&a);
    pgd_net_free(&b);
    pgd_backend_free(&be);
}

/* --- training steps --------------------------------------------------------------------------------------- */

typedef struct run {
    pgd_backend *be;
    pgd_net *f, *g;
    pgd_optim *of, *og;
    pgd_patchgd *pg;
    pgd_scaler *sc;
    float *f0, *g0;         /* the parameters before */
} run;

/* small_cnn backbone + pooled head, SGD at lr 1 without momentum (an update is minus the gradient), in `prec`;
 * fp16 gets a scaler starting at `scale`, with no growth. Z filled with every patch. The backbone's BN is frozen:
 * batch statistics over 4 patches would turn the formats' rounding into large gradient differences (a
 * variance of nearly alike values), which says nothing about the scaling under test. */
static void run_open(run *r, pgd_precision prec, float scale, const uint8_t *px)
{
    pgd_err err = PGD_ERR_INIT;
    memset(r, 0, sizeof *r);
    r->be = cpu();
    CU_ASSERT_EQUAL_FATAL(pgd_backend_set_precision(r->be, prec, &err), 0);
    r->f = pgd_model_build(r->be, "small_cnn", P, S, 7, &err);
    r->g = pgd_model_head(r->be, S, M, N, 8, 0.0f, 1, CLASSES, 8, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->g);
    pgd_opt_cfg oc = {.kind = PGD_OPT_SGD, .lr = 1.0f};
    r->of = pgd_optim_new(r->f, &oc, &err);
    r->og = pgd_optim_new(r->g, &oc, &err);
    pgd_patchgd_cfg c = {.max_images = B, .m = M, .n = N, .patch = P, .channels = C, .max_patches = B * MN,
                         .epsilon = 1, .freeze_bn = 1, .seed = 4};
    for (int ch = 0; ch < C; ch++)
        c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
    r->pg = pgd_patchgd_new(r->f, r->g, r->of, r->og, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->pg);
    pgd_patchgd_set_lr(r->pg, 1.0f);
    if (prec == PGD_PREC_FP16) {
        pgd_scaler_cfg sc = {.init = scale, .interval = 0, .give_up = 1000};
        r->sc = pgd_scaler_new(r->be, &sc, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r->sc);
        pgd_patchgd_set_scaler(r->pg, r->sc);
    }
    uint32_t all[B * MN];
    for (uint32_t i = 0; i < B * MN; i++)
        all[i] = i;
    CU_ASSERT_EQUAL_FATAL(pgd_patchgd_fill(r->pg, px, all, B * MN, &err), 0);
    size_t nf = pgd_net_param_count(r->f), ng = pgd_net_param_count(r->g);
    r->f0 = malloc(nf * sizeof(float));
    r->g0 = malloc(ng * sizeof(float));
    CU_ASSERT_FATAL(r->f0 && r->g0);
    memcpy(r->f0, pgd_net_params(r->f), nf * sizeof(float));
    memcpy(r->g0, pgd_net_params(r->g), ng * sizeof(float));
}

static void run_close(run *r)
{
    pgd_patchgd_free(&r->pg);
    pgd_scaler_free(&r->sc);
    pgd_optim_free(&r->of);
    pgd_optim_free(&r->og);
    pgd_net_free(&r->f);
    pgd_net_free(&r->g);
    pgd_backend_free(&r->be);
    free(r->f0), free(r->g0);
}

/* One inner step (K fresh cells per image) and its update. */
static int run_step(run *r, const uint8_t *px, pgd_err *err)
{
    static const uint32_t cells[B * K] = {0, 3, MN + 1, MN + 2};
    static const int32_t labels[B] = {2, 0};
    uint8_t step_px[B * K * P * P * C];
    for (int i = 0; i < B * K; i++)
        memcpy(step_px + (size_t)i * P * P * C, px + (size_t)cells[i] * P * P * C, (size_t)P * P * C);
    float loss;
    return pgd_patchgd_inner(r->pg, step_px, cells, B * K, labels, B, &loss, err);
}

/* max |delta - ref delta| / max |ref delta| of a net's parameter change. */
static double delta_diff(const float *p, const float *p0, const float *q, const float *q0, size_t count)
{
    double d = 0, scale = 0;
    for (size_t i = 0; i < count; i++) {
        double a = (double)p[i] - p0[i], b = (double)q[i] - q0[i];
        d = fmax(d, fabs(a - b));
        scale = fmax(scale, fabs(b));
    }
    return scale > 0 ? d / scale : INFINITY;
}

static void random_pixels(uint8_t *px, size_t n)
{
    pgd_rng r;
    pgd_rng_seed(&r, 12);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)pgd_rng_below(&r, 256);
}

/* The same PatchGD step in fp32, bf16 and fp16 (loss scale 1024): the updates agree up to the formats'
 * rounding, so the scaled gradients were unscaled exactly once. */
static void test_patchgd_precisions(void)
{
    static uint8_t px[B * MN * P * P * C];
    random_pixels(px, sizeof px);
    run ref, half;
    pgd_err err = PGD_ERR_INIT;
    run_open(&ref, PGD_PREC_FP32, 1.0f, px);
    CU_ASSERT_EQUAL_FATAL(run_step(&ref, px, &err), 0);
    static const struct {
        pgd_precision prec;
        double tol;
    } cases[] = {{PGD_PREC_BF16, 0.1}, {PGD_PREC_FP16, 0.02}};
    for (int c = 0; c < 2; c++) {
        run_open(&half, cases[c].prec, 1024.0f, px);
        CU_ASSERT_EQUAL_FATAL(run_step(&half, px, &err), 0);
        CU_ASSERT_EQUAL(skipped(half.sc), 0);
        double df = delta_diff(pgd_net_params(half.f), half.f0, pgd_net_params(ref.f), ref.f0,
                               pgd_net_param_count(ref.f));
        double dg = delta_diff(pgd_net_params(half.g), half.g0, pgd_net_params(ref.g), ref.g0,
                               pgd_net_param_count(ref.g));
        printf("\n  %s step against fp32: backbone update off by %.2e, head update by %.2e (relative, max)",
               pgd_precision_name(cases[c].prec), df, dg);
        CU_ASSERT_TRUE(df < cases[c].tol);
        CU_ASSERT_TRUE(dg < cases[c].tol);
        CU_ASSERT_TRUE(df > 0 && dg > 0); /* the half run did round */
        run_close(&half);
    }
    run_close(&ref);
}

/* fp16 at a loss scale of 2^60: the scaled gradients overflow; the update is skipped (no parameter moves, the
 * optimizer does not count it), the scale halves, and steps go on until one fits. */
static void test_patchgd_overflow(void)
{
    static uint8_t px[B * MN * P * P * C];
    random_pixels(px, sizeof px);
    run r;
    pgd_err err = PGD_ERR_INIT;
    run_open(&r, PGD_PREC_FP16, 0x1p60f, px);
    pgd_scaler_free(&r.sc); /* a scaler that adapts */
    pgd_scaler_cfg cfg = {.init = 0x1p60f, .interval = 2000, .give_up = 100};
    r.sc = pgd_scaler_new(r.be, &cfg, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.sc);
    pgd_patchgd_set_scaler(r.pg, r.sc);
    CU_ASSERT_EQUAL_FATAL(run_step(&r, px, &err), 0);
    CU_ASSERT_EQUAL(skipped(r.sc), 1);
    CU_ASSERT_EQUAL(pgd_scaler_scale(r.sc), 0x1p59f);
    CU_ASSERT_EQUAL(r.of->step, 0);
    CU_ASSERT_EQUAL(memcmp(r.f0, pgd_net_params(r.f), pgd_net_param_count(r.f) * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(r.g0, pgd_net_params(r.g), pgd_net_param_count(r.g) * sizeof(float)), 0);
    int steps = 1;
    while (skipped(r.sc) == steps && steps < 80) {
        CU_ASSERT_EQUAL_FATAL(run_step(&r, px, &err), 0);
        steps++;
    }
    printf("\n  fp16 from a loss scale of 2^60: %lld updates skipped, the first update at scale 2^%d",
           (long long)skipped(r.sc), (int)log2f(pgd_scaler_scale(r.sc)));
    CU_ASSERT_TRUE(steps > 1 && steps < 80);
    CU_ASSERT_EQUAL(r.of->step, 1);
    CU_ASSERT_NOT_EQUAL(memcmp(r.g0, pgd_net_params(r.g), pgd_net_param_count(r.g) * sizeof(float)), 0);
    for (size_t i = 0; i < pgd_net_param_count(r.g); i++)
        CU_ASSERT_FATAL(isfinite(pgd_net_params(r.g)[i]));
    run_close(&r);
}

/* GD in fp16: an overflowing step makes no update; at a sane scale it matches fp32's update. */
static void test_gd(void)
{
    enum { GS = 32, GB = 2 };
    static uint8_t px[GB * GS * GS * C];
    random_pixels(px, sizeof px);
    const int32_t labels[GB] = {1, 2};
    float *before = NULL, *ref_after = NULL;
    size_t count = 0;
    for (int pass = 0; pass < 3; pass++) { /* fp32, fp16 at 2^60, fp16 at 2^10 */
        pgd_err err = PGD_ERR_INIT;
        pgd_backend *be = cpu();
        CU_ASSERT_EQUAL(pgd_backend_set_precision(be, pass ? PGD_PREC_FP16 : PGD_PREC_FP32, &err), 0);
        pgd_net *net = pgd_model_build(be, "small_cnn", GS, CLASSES, 3, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(net);
        pgd_opt_cfg oc = {.kind = PGD_OPT_SGD, .lr = 1.0f};
        pgd_optim *opt = pgd_optim_new(net, &oc, &err);
        pgd_gd_cfg c = {.max_images = GB, .size = GS, .channels = C, .seed = 1};
        for (int ch = 0; ch < C; ch++)
            c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
        pgd_gd *gd = pgd_gd_new(net, opt, &c, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(gd);
        pgd_scaler_cfg sc = {.init = pass == 1 ? 0x1p60f : 0x1p10f, .interval = 0, .give_up = 10};
        pgd_scaler *scaler = pass ? pgd_scaler_new(be, &sc, &err) : NULL;
        pgd_gd_set_scaler(gd, scaler);
        count = pgd_net_param_count(net);
        if (!before) {
            before = malloc(count * sizeof(float));
            ref_after = malloc(count * sizeof(float));
            CU_ASSERT_FATAL(before && ref_after);
            memcpy(before, pgd_net_params(net), count * sizeof(float));
        }
        float loss;
        CU_ASSERT_EQUAL_FATAL(pgd_gd_step(gd, px, labels, GB, 1.0f, &loss, NULL, &err), 0);
        const float *after = pgd_net_params(net);
        if (pass == 0) {
            memcpy(ref_after, after, count * sizeof(float));
        } else if (pass == 1) {
            CU_ASSERT_EQUAL(skipped(scaler), 1);
            CU_ASSERT_EQUAL(memcmp(before, after, count * sizeof(float)), 0);
        } else {
            CU_ASSERT_EQUAL(skipped(scaler), 0);
            double d = delta_diff(after, before, ref_after, before, count);
            printf("\n  gd fp16 step against fp32: update off by %.2e (relative, max)", d);
            CU_ASSERT_TRUE(d < 0.02);
        }
        pgd_gd_free(&gd);
        pgd_scaler_free(&scaler);
        pgd_optim_free(&opt);
        pgd_net_free(&net);
        pgd_backend_free(&be);
    }
    free(before), free(ref_after);
}

int main(int argc, char **argv)
{
    static const pgd_test_case cases[] = {
        {"rule", test_rule},
        {"patchgd_precisions", test_patchgd_precisions},
        {"patchgd_overflow", test_patchgd_overflow},
        {"gd", test_gd},
        {NULL, NULL},
    };
    return pgd_test_main("scaler", cases, argc, argv);
}
