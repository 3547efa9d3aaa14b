/* test_patchgd.c: PatchGD on the CPU backend: the end-to-end identity, gradients only through fresh cells,
 * accumulation over epsilon steps, finite differences of the whole loss, a loss that falls, and chunked inner
 * steps (the same step as unchunked with frozen BN, refusals, memory that does not grow with k). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "rng.h"
#include "trainer/backend.h"
#include "trainer/model.h"
#include "trainer/net.h"
#include "trainer/optim.h"
#include "trainer/patchgd.h"

enum { P = 8, C = 3, S = 5, M = 2, N = 3, MN = M * N, B = 2, CLASSES = 3 };

typedef struct fixture {
    pgd_backend *be;
    pgd_net *f, *g;
    uint8_t px[B * MN * P * P * C];
    uint32_t all[B * MN];
    int32_t labels[B];
} fixture;

/* conv-BN-ReLU-maxpool-global pool[-dropout]-fc: bn 0 leaves BN out, dropout > 0 adds Dropout before fc. */
static pgd_net *backbone_with(pgd_backend *be, uint64_t seed, int bn, float dropout)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *f = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    int x = pgd_net_input(f, C, P, P);
    x = pgd_net_conv(f, x, "conv1", 4, 3, 1, 1, 1, 0);
    if (bn)
        x = pgd_net_bn(f, x, "bn1");
    x = pgd_net_relu(f, x, 0);
    x = pgd_net_maxpool(f, x, 2, 2, 0);
    x = pgd_net_global_avgpool(f, x);
    if (dropout > 0)
        x = pgd_net_dropout2d(f, x, dropout);
    x = pgd_net_linear(f, x, "fc", S, 1);
    CU_ASSERT_TRUE_FATAL(x >= 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(f, seed, &err), 0);
    return f;
}

static pgd_net *backbone(pgd_backend *be, uint64_t seed)
{
    return backbone_with(be, seed, 1, 0.0f);
}

/* bn1 of f (host memory: the CPU backend) gets running statistics and an affine map away from 0 / 1. */
static void move_bn(pgd_net *f)
{
    static const char *const names[4] = {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"};
    static const float lo[4] = {0.5f, -0.3f, -0.4f, 0.3f}, hi[4] = {1.5f, 0.3f, 0.4f, 1.5f};
    pgd_rng r;
    pgd_rng_seed(&r, 41);
    for (int k = 0; k < 4; k++) {
        int t = pgd_net_find(f, names[k]);
        CU_ASSERT_TRUE_FATAL(t >= 0);
        const pgd_tensor_info *ti = pgd_net_tensor(f, t);
        float *v = (ti->kind == PGD_TENSOR_PARAM ? pgd_net_params(f) : pgd_net_buffers(f)) + ti->offset;
        for (size_t i = 0; i < ti->count; i++)
            v[i] = lo[k] + (hi[k] - lo[k]) * pgd_rng_uniformf(&r);
    }
}

static void setup(fixture *fx, float dropout)
{
    pgd_err err = PGD_ERR_INIT;
    memset(fx, 0, sizeof *fx);
    fx->be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx->be);
    fx->f = backbone(fx->be, 11);
    fx->g = pgd_model_head(fx->be, S, M, N, 6, dropout, 0, CLASSES, 12, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx->g);
    pgd_rng r;
    pgd_rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof fx->px; i++)
        fx->px[i] = (uint8_t)pgd_rng_below(&r, 256);
    for (uint32_t i = 0; i < B * MN; i++)
        fx->all[i] = i;
    fx->labels[0] = 2, fx->labels[1] = 0;
}

static void teardown(fixture *fx)
{
    pgd_net_free(&fx->f);
    pgd_net_free(&fx->g);
    pgd_backend_free(&fx->be);
}

static pgd_patchgd_cfg cfg_for(int epsilon)
{
    pgd_patchgd_cfg c = {.max_images = B, .m = M, .n = N, .patch = P, .channels = C, .max_patches = B * MN,
                         .epsilon = epsilon, .fill_train_mode = 1, .seed = 9};
    for (int ch = 0; ch < C; ch++)
        c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
    return c;
}

/* The plain end-to-end computation on the CPU backend (host pointers): f on every patch, Z assembled from
 * the features, g, mean cross-entropy; with grads, back-propagated through all of it. Returns the loss. */
static double end_to_end(fixture *fx, int with_grad)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_patchgd_cfg c = cfg_for(1);
    int count = B * MN;
    float *x = malloc(sizeof(float) * count * C * P * P);
    float z[B * S * MN], dz[B * S * MN], dfeat[B * MN * S], probs[B * CLASSES], dlogits[B * CLASSES], loss[B];
    fx->be->ops->u8_to_float(fx->be, x, fx->px, count, P, P, C, c.mean, c.std);
    const float *feat = pgd_net_forward(fx->f, x, count, PGD_NET_TRAIN, 1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(feat);
    for (int i = 0; i < count; i++)
        for (int ch = 0; ch < S; ch++)
            z[(i / MN) * S * MN + ch * MN + i % MN] = feat[i * S + ch];
    const float *logits = pgd_net_forward(fx->g, z, B, PGD_NET_TRAIN, 2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(logits);
    double total = 0;
    for (int b = 0; b < B; b++) {
        double mx = -INFINITY, sum = 0;
        for (int k = 0; k < CLASSES; k++)
            mx = fmax(mx, logits[b * CLASSES + k]);
        for (int k = 0; k < CLASSES; k++)
            sum += exp(logits[b * CLASSES + k] - mx);
        for (int k = 0; k < CLASSES; k++)
            probs[b * CLASSES + k] = (float)(exp(logits[b * CLASSES + k] - mx) / sum);
        loss[b] = (float)(log(sum) + mx - logits[b * CLASSES + fx->labels[b]]);
        total += loss[b];
    }
    if (with_grad) {
        for (int b = 0; b < B; b++)
            for (int k = 0; k < CLASSES; k++)
                dlogits[b * CLASSES + k] = (probs[b * CLASSES + k] - (k == fx->labels[b])) / B;
        CU_ASSERT_EQUAL(pgd_net_backward(fx->g, dlogits, dz, &err), 0);
        for (int i = 0; i < count; i++)
            for (int ch = 0; ch < S; ch++)
                dfeat[i * S + ch] = dz[(i / MN) * S * MN + ch * MN + i % MN];
        CU_ASSERT_EQUAL(pgd_net_backward(fx->f, dfeat, NULL, &err), 0);
    }
    free(x);
    return total / B;
}

/* Max |a - b| / max(1, max |b|) over count floats. */
static double rel_diff(const float *a, const float *b, size_t count)
{
    double d = 0, scale = 1;
    for (size_t i = 0; i < count; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return d / scale;
}

/* Sampling 100% of the cells, one inner step, epsilon 1: PatchGD's gradients are those of head(backbone(all
 * patches)), and both match central differences of the loss. */
static void test_identity(void)
{
    fixture fx;
    setup(&fx, 0.0f);
    pgd_err err = PGD_ERR_INIT;
    pgd_patchgd_cfg c = cfg_for(1);
    pgd_patchgd *pg = pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    CU_ASSERT_EQUAL(pgd_patchgd_fill(pg, fx.px, fx.all, B * MN, &err), 0);
    float loss = 0;
    CU_ASSERT_EQUAL_FATAL(pgd_patchgd_inner(pg, fx.px, fx.all, B * MN, fx.labels, B, &loss, &err), 0);
    size_t nf = pgd_net_param_count(fx.f), ng = pgd_net_param_count(fx.g);
    float *gf = malloc(nf * sizeof(float)), *gg = malloc(ng * sizeof(float));
    memcpy(gf, pgd_net_grads(fx.f), nf * sizeof(float));
    memcpy(gg, pgd_net_grads(fx.g), ng * sizeof(float));
    pgd_net_zero_grad(fx.f);
    pgd_net_zero_grad(fx.g);
    double ref_loss = end_to_end(&fx, 1);
    CU_ASSERT_DOUBLE_EQUAL(loss, ref_loss, 1e-5);
    double df = rel_diff(gf, pgd_net_grads(fx.f), nf), dg = rel_diff(gg, pgd_net_grads(fx.g), ng);
    printf("\n  identity: loss %.6f vs %.6f, backbone grads max rel diff %.2e, head %.2e\n", loss, ref_loss, df, dg);
    CU_ASSERT_TRUE(df < 1e-5);
    CU_ASSERT_TRUE(dg < 1e-5);

    /* central differences of the end-to-end loss on a sample of parameters of each net */
    pgd_net *nets[2] = {fx.f, fx.g};
    float *grads[2] = {gf, gg};
    size_t counts[2] = {nf, ng};
    double worst = 0;
    for (int k = 0; k < 2; k++) {
        float *params = pgd_net_params(nets[k]);
        for (size_t t = 0; t < 24; t++) {
            size_t i = (t * 7919u) % counts[k];
            float keep = params[i], h = 2e-3f;
            params[i] = keep + h;
            double up = end_to_end(&fx, 0);
            params[i] = keep - h;
            double down = end_to_end(&fx, 0);
            params[i] = keep;
            double fd = (up - down) / (2.0 * h), an = grads[k][i];
            double e = fabs(fd - an) / fmax(1e-2, fabs(fd) + fabs(an));
            if (e > 1e-2)
                printf("  net %d param %zu: fd %.6f analytic %.6f\n", k, i, fd, an);
            worst = fmax(worst, e);
        }
    }
    printf("  finite differences vs PatchGD gradients: worst relative error %.2e\n", worst);
    CU_ASSERT_TRUE(worst < 2e-2);
    free(gf);
    free(gg);
    pgd_patchgd_free(&pg);
    teardown(&fx);
}

/* With k < all cells, the backbone gradient comes only from the fresh cells: it equals the end-to-end
 * gradient where every other cell of Z is a constant (the filled value). */
static void test_fresh_cells_only(void)
{
    fixture fx;
    setup(&fx, 0.0f);
    pgd_err err = PGD_ERR_INIT;
    pgd_patchgd_cfg c = cfg_for(1);
    pgd_patchgd *pg = pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    CU_ASSERT_EQUAL(pgd_patchgd_fill(pg, fx.px, fx.all, B * MN, &err), 0);
    float z_filled[B * S * MN];
    memcpy(z_filled, pgd_patchgd_z(pg), sizeof z_filled);
    /* two fresh cells per image: 1 and 4 of image 0, 0 and 5 of image 1 */
    const uint32_t fresh[4] = {1, 4, MN + 0, MN + 5};
    uint8_t px[4 * P * P * C];
    for (int i = 0; i < 4; i++)
        memcpy(px + (size_t)i * P * P * C, fx.px + (size_t)fresh[i] * P * P * C, (size_t)P * P * C);
    float loss;
    CU_ASSERT_EQUAL_FATAL(pgd_patchgd_inner(pg, px, fresh, 4, fx.labels, B, &loss, &err), 0);
    size_t nf = pgd_net_param_count(fx.f);
    float *gf = malloc(nf * sizeof(float));
    memcpy(gf, pgd_net_grads(fx.f), nf * sizeof(float));
    /* the same by hand: f on the 4 fresh patches, Z = filled values elsewhere */
    pgd_net_zero_grad(fx.f);
    pgd_net_zero_grad(fx.g);
    float x[4 * C * P * P], z[B * S * MN], dz[B * S * MN], dfeat[4 * S];
    fx.be->ops->u8_to_float(fx.be, x, px, 4, P, P, C, c.mean, c.std);
    const float *feat = pgd_net_forward(fx.f, x, 4, PGD_NET_TRAIN, 1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(feat);
    memcpy(z, z_filled, sizeof z);
    for (int i = 0; i < 4; i++)
        for (int ch = 0; ch < S; ch++)
            z[(fresh[i] / MN) * S * MN + ch * MN + fresh[i] % MN] = feat[i * S + ch];
    CU_ASSERT_TRUE(rel_diff(z, pgd_patchgd_z(pg), B * S * MN) < 1e-6);
    const float *logits = pgd_net_forward(fx.g, z, B, PGD_NET_TRAIN, 2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(logits);
    float probs[B * CLASSES], dlogits[B * CLASSES], l[B];
    int32_t *lab = fx.labels;
    fx.be->ops->xent_forward(fx.be, l, probs, logits, lab, B, CLASSES);
    fx.be->ops->xent_backward(fx.be, dlogits, probs, lab, B, CLASSES, 1.0f / B);
    CU_ASSERT_EQUAL(pgd_net_backward(fx.g, dlogits, dz, &err), 0);
    for (int i = 0; i < 4; i++)
        for (int ch = 0; ch < S; ch++)
            dfeat[i * S + ch] = dz[(fresh[i] / MN) * S * MN + ch * MN + fresh[i] % MN];
    CU_ASSERT_EQUAL(pgd_net_backward(fx.f, dfeat, NULL, &err), 0);
    double d = rel_diff(gf, pgd_net_grads(fx.f), nf);
    printf("\n  fresh cells only: backbone grads max rel diff %.2e\n", d);
    CU_ASSERT_TRUE(d < 1e-5);
    free(gf);
    pgd_patchgd_free(&pg);
    teardown(&fx);
}

/* Runs a fill and the two inner steps of test_accumulation on fx (optimizers may be NULL). */
static void two_steps(fixture *fx, pgd_optim *of, pgd_optim *og, const float *before, size_t ng)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_patchgd_cfg c = cfg_for(2);
    pgd_patchgd *pg = pgd_patchgd_new(fx->f, fx->g, of, og, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    CU_ASSERT_EQUAL(pgd_patchgd_fill(pg, fx->px, fx->all, B * MN, &err), 0);
    const uint32_t steps[2][2] = {{0, MN + 1}, {3, MN + 2}};
    for (int s = 0; s < 2; s++) {
        uint8_t px[2 * P * P * C];
        for (int i = 0; i < 2; i++)
            memcpy(px + (size_t)i * P * P * C, fx->px + (size_t)steps[s][i] * P * P * C, (size_t)P * P * C);
        float loss;
        CU_ASSERT_EQUAL_FATAL(pgd_patchgd_inner(pg, px, steps[s], 2, fx->labels, B, &loss, &err), 0);
        if (s == 0 && before) /* nothing moves before the epsilon-th step */
            CU_ASSERT_EQUAL(memcmp(before, pgd_net_params(fx->g), ng * sizeof(float)), 0);
    }
    pgd_patchgd_free(&pg);
}

/* epsilon = 2 with plain SGD (lr 1, no momentum): nothing moves after the first step; after the second the
 * parameters moved by minus the mean of the two steps' gradients (taken from a twin run without updates). */
static void test_accumulation(void)
{
    fixture fx, twin;
    setup(&fx, 0.0f);
    setup(&twin, 0.0f);
    pgd_err err = PGD_ERR_INIT;
    pgd_opt_cfg oc = {.kind = PGD_OPT_SGD, .lr = 1.0f};
    pgd_optim *of = pgd_optim_new(fx.f, &oc, &err), *og = pgd_optim_new(fx.g, &oc, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(of);
    CU_ASSERT_PTR_NOT_NULL_FATAL(og);
    size_t ng = pgd_net_param_count(fx.g);
    float *before = malloc(ng * sizeof(float));
    memcpy(before, pgd_net_params(fx.g), ng * sizeof(float));
    two_steps(&fx, of, og, before, ng);
    two_steps(&twin, NULL, NULL, NULL, ng);
    const float *after = pgd_net_params(fx.g), *sum = pgd_net_grads(twin.g);
    double worst = 0;
    for (size_t i = 0; i < ng; i++)
        worst = fmax(worst, fabs((double)after[i] - ((double)before[i] - sum[i] / 2.0)));
    printf("\n  accumulation: max |params - (before - (g1 + g2) / 2)| = %.2e\n", worst);
    CU_ASSERT_TRUE(worst < 1e-6);
    CU_ASSERT_EQUAL(of->step, 1);
    CU_ASSERT_EQUAL(og->step, 1);
    for (size_t i = 0; i < ng; i++)
        CU_ASSERT_EQUAL(pgd_net_grads(fx.g)[i], 0.0f);
    free(before);
    pgd_optim_free(&of);
    pgd_optim_free(&og);
    teardown(&fx);
    teardown(&twin);
}

/* Bad calls are refused with a reason and change nothing. */
static void test_bad_calls(void)
{
    fixture fx;
    setup(&fx, 0.2f);
    pgd_err err = PGD_ERR_INIT;
    pgd_patchgd_cfg c = cfg_for(1);
    pgd_patchgd *pg = pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    float loss;
    uint32_t dup[2] = {3, 3}, out[1] = {B * MN};
    int32_t bad[B] = {0, CLASSES};
    CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, fx.px, dup, 2, fx.labels, B, &loss, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "appears twice"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, fx.px, out, 1, fx.labels, B, &loss, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "outside"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, fx.px, fx.all, 2, bad, B, &loss, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "label"));
    CU_ASSERT_EQUAL(pgd_patchgd_steps(pg), 0);
    pgd_patchgd_free(&pg);
    /* a head that does not match the grid */
    pgd_err_clear(&err);
    c.m = 3;
    CU_ASSERT_PTR_NULL(pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "head takes"));
    teardown(&fx);
}

/* A tiny task on its own shapes (8 images of a 4 x 4 grid): the label says in which half of the grid a
 * bright patch lies, or that there is none. Training by PatchGD with 25% sampling per inner step brings the
 * loss well below where it starts. */
enum { TB = 8, TM = 4, TMN = TM * TM, TK = 4, TCLASSES = 3, TPX = P * P * C };

static void tiny_batch(pgd_rng *r, uint8_t *px, int32_t *labels)
{
    for (int b = 0; b < TB; b++) {
        labels[b] = (int32_t)pgd_rng_below(r, TCLASSES);
        uint32_t hot = labels[b] < 2 ? (uint32_t)labels[b] * (TMN / 2) + pgd_rng_below(r, TMN / 2) : UINT32_MAX;
        for (uint32_t cell = 0; cell < TMN; cell++)
            for (int i = 0; i < TPX; i++)
                px[((size_t)b * TMN + cell) * TPX + i] =
                    (uint8_t)(cell == hot ? 180 + pgd_rng_below(r, 76) : pgd_rng_below(r, 90));
    }
}

static void test_loss_falls(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    pgd_net *f = backbone(be, 21), *g = pgd_model_head(be, S, TM, TM, 8, 0.1f, 0, TCLASSES, 22, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    pgd_opt_cfg oc = pgd_opt_defaults();
    oc.lr = 3e-3f;
    pgd_optim *of = pgd_optim_new(f, &oc, &err), *og = pgd_optim_new(g, &oc, &err);
    pgd_patchgd_cfg c = {.max_images = TB, .m = TM, .n = TM, .patch = P, .channels = C, .max_patches = TB * TMN,
                         .epsilon = TMN / TK, .fill_train_mode = 1, .seed = 3};
    for (int ch = 0; ch < C; ch++)
        c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
    pgd_patchgd *pg = pgd_patchgd_new(f, g, of, og, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    static uint8_t px[TB * TMN * TPX], step_px[TB * TK * TPX];
    int32_t labels[TB];
    uint32_t all[TB * TMN], cells[TB * TK];
    for (uint32_t i = 0; i < TB * TMN; i++)
        all[i] = i;
    pgd_rng r;
    pgd_rng_seed(&r, 77);
    double first = 0, last = 0;
    const int rounds = 80;
    for (int it = 0; it < rounds; it++) {
        tiny_batch(&r, px, labels);
        CU_ASSERT_EQUAL_FATAL(pgd_patchgd_fill(pg, px, all, TB * TMN, &err), 0);
        uint32_t perm[TMN];
        for (uint32_t i = 0; i < TMN; i++)
            perm[i] = i;
        pgd_rng_shuffle_u32(&r, perm, TMN);
        double batch = 0;
        for (int step = 0; step < TMN / TK; step++) {
            for (int b = 0; b < TB; b++)
                for (int j = 0; j < TK; j++) {
                    uint32_t cell = (uint32_t)b * TMN + perm[step * TK + j];
                    cells[b * TK + j] = cell;
                    memcpy(step_px + (size_t)(b * TK + j) * TPX, px + (size_t)cell * TPX, TPX);
                }
            float loss;
            CU_ASSERT_EQUAL_FATAL(pgd_patchgd_inner(pg, step_px, cells, TB * TK, labels, TB, &loss, &err), 0);
            batch += loss / (TMN / TK);
        }
        if (it < 10)
            first += batch / 10;
        if (it >= rounds - 10)
            last += batch / 10;
    }
    printf("\n  tiny task: mean loss of the first 10 batches %.3f, of the last 10 %.3f (chance %.3f)\n", first, last,
           log(TCLASSES));
    CU_ASSERT_TRUE(last < 0.6 * first);
    pgd_patchgd_free(&pg);
    pgd_optim_free(&of);
    pgd_optim_free(&og);
    pgd_net_free(&f);
    pgd_net_free(&g);
    pgd_backend_free(&be);
}

static void test_lr_schedule(void)
{
    pgd_opt_cfg c = pgd_opt_defaults();
    c.lr = 1.0f, c.warmup_steps = 4, c.total_steps = 12;
    CU_ASSERT_DOUBLE_EQUAL(pgd_opt_lr(&c, 1), 0.25, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(pgd_opt_lr(&c, 4), 1.0, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(pgd_opt_lr(&c, 8), 0.5, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(pgd_opt_lr(&c, 12), 0.0, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(pgd_opt_lr(&c, 20), 0.0, 1e-7);
    c.warmup_steps = 0, c.total_steps = 0;
    CU_ASSERT_DOUBLE_EQUAL(pgd_opt_lr(&c, 100), 1.0, 1e-7);
}

/* --- chunked inner steps ---------------------------------------------------------------------------------- */

/* What one run of chunk_run leaves: the two losses, Z and both nets' gradients after the first inner step
 * (epsilon 2: nothing applied yet), both nets' parameters after the second (one SGD update). */
typedef struct chunk_result {
    float loss[2];
    float z[B * S * MN];
    float *gf, *gg, *pf, *pg;
    size_t nf, ng;
} chunk_result;

static float *dup_floats(const float *src, size_t count)
{
    float *p = malloc(count * sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memcpy(p, src, count * sizeof *p);
    return p;
}

/* Copies the patches of cells[count] out of fx->px. */
static void gather_px(const fixture *fx, const uint32_t *cells, int count, uint8_t *px)
{
    for (int i = 0; i < count; i++)
        memcpy(px + (size_t)i * P * P * C, fx->px + (size_t)cells[i] * P * P * C, (size_t)P * P * C);
}

/* Fresh nets (f with frozen, moved BN and Dropout 0.3; the head with Dropout2d 0.2), SGD with momentum, Z
 * filled, then two inner steps of 5 fresh cells per image (10 patches) with inner_chunk = chunk. */
static void chunk_run(int chunk, chunk_result *res)
{
    pgd_err err = PGD_ERR_INIT;
    fixture fx;
    setup(&fx, 0.2f);
    pgd_net_free(&fx.f);
    fx.f = backbone_with(fx.be, 11, 1, 0.3f);
    move_bn(fx.f);
    size_t nb = pgd_net_buffer_count(fx.f);
    float *buffers = dup_floats(pgd_net_buffers(fx.f), nb);
    pgd_opt_cfg oc = {.kind = PGD_OPT_SGD, .lr = 0.5f, .momentum = 0.9f};
    pgd_optim *of = pgd_optim_new(fx.f, &oc, &err), *og = pgd_optim_new(fx.g, &oc, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(of);
    CU_ASSERT_PTR_NOT_NULL_FATAL(og);
    pgd_patchgd_cfg c = cfg_for(2);
    c.fill_train_mode = 0, c.freeze_bn = 1, c.inner_chunk = chunk;
    pgd_patchgd *pg = pgd_patchgd_new(fx.f, fx.g, of, og, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    CU_ASSERT_EQUAL_FATAL(pgd_patchgd_fill(pg, fx.px, fx.all, B * MN, &err), 0);
    /* the images' cells interleaved, so chunks straddle images */
    static const uint32_t steps[2][10] = {{0, MN + 5, 2, MN + 0, 4, MN + 3, 5, MN + 2, 1, MN + 4},
                                          {3, MN + 1, 1, MN + 0, 5, MN + 5, 0, MN + 3, 2, MN + 2}};
    uint8_t px[10 * P * P * C];
    for (int s = 0; s < 2; s++) {
        gather_px(&fx, steps[s], 10, px);
        CU_ASSERT_EQUAL_FATAL(pgd_patchgd_inner(pg, px, steps[s], 10, fx.labels, B, &res->loss[s], &err), 0);
        if (s == 0) {
            memcpy(res->z, pgd_patchgd_z(pg), sizeof res->z);
            res->nf = pgd_net_param_count(fx.f), res->ng = pgd_net_param_count(fx.g);
            res->gf = dup_floats(pgd_net_grads(fx.f), res->nf);
            res->gg = dup_floats(pgd_net_grads(fx.g), res->ng);
        }
    }
    CU_ASSERT_EQUAL(of->step, 1);
    res->pf = dup_floats(pgd_net_params(fx.f), res->nf);
    res->pg = dup_floats(pgd_net_params(fx.g), res->ng);
    /* frozen: the backbone's statistics and counter did not move */
    CU_ASSERT_EQUAL(memcmp(buffers, pgd_net_buffers(fx.f), nb * sizeof(float)), 0);
    CU_ASSERT_EQUAL(pgd_net_counters(fx.f)[pgd_net_tensor(fx.f, pgd_net_find(fx.f, "bn1.num_batches_tracked"))->offset],
                    0);
    free(buffers);
    pgd_patchgd_free(&pg);
    pgd_optim_free(&of);
    pgd_optim_free(&og);
    teardown(&fx);
}

static void chunk_result_free(chunk_result *r)
{
    free(r->gf);
    free(r->gg);
    free(r->pf);
    free(r->pg);
}

/* Max |a - b| over count floats, and max |b| in *scale. */
static double abs_diff(const float *a, const float *b, size_t count, double *scale)
{
    double d = 0;
    *scale = 0;
    for (size_t i = 0; i < count; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        *scale = fmax(*scale, fabs((double)b[i]));
    }
    return d;
}

/* 1 when the backend gives every patch the same features through chunk_run's backbone (frozen BN, dropout)
 * in forwards of `chunk` patches as in one forward of all 12: the premise of byte-for-byte equality. (A
 * backend may round a sample differently in another batch size: OpenBLAS picks its kernels by matrix size,
 * cuDNN its algorithms by shape.) */
static int batch_invariant(int chunk)
{
    pgd_err err = PGD_ERR_INIT;
    fixture fx;
    setup(&fx, 0.0f);
    pgd_net_free(&fx.f);
    fx.f = backbone_with(fx.be, 11, 1, 0.3f);
    move_bn(fx.f);
    pgd_patchgd_cfg c = cfg_for(1);
    enum { ALL = B * MN };
    static float x[ALL * C * P * P], whole[ALL * S];
    fx.be->ops->u8_to_float(fx.be, x, fx.px, ALL, P, P, C, c.mean, c.std);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(fx.f, ALL, &err), 0);
    memcpy(whole, pgd_net_forward(fx.f, x, ALL, PGD_NET_FROZEN_BN, 7, &err), sizeof whole);
    int same = 1;
    for (int done = 0; done < ALL; done += chunk) {
        int n = ALL - done < chunk ? ALL - done : chunk;
        const float *y = pgd_net_forward_part(fx.f, x + (size_t)done * C * P * P, n, done, PGD_NET_FROZEN_BN, 7, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        same &= memcmp(y, whole + (size_t)done * S, (size_t)n * S * sizeof(float)) == 0;
    }
    teardown(&fx);
    return same;
}

/* With frozen BN, a chunked inner step is the unchunked one: the losses, Z, the head's gradients and (after
 * an update) parameters equal byte for byte for chunks of 1, 3, 4 (not dividing the 10 patches), 10 and 16;
 * the backbone's gradients too when one chunk holds all patches. With several chunks, the backbone's
 * parameter gradients are batch sums (conv backward-filter, linear, BN's dgamma and dbeta) added chunk by
 * chunk instead of in one pass, so they may differ in the last bits: bounded by 1e-6 of the largest. Byte
 * equality rests on the backend computing each patch alike in any batch size (batch_invariant, true for this
 * backbone on the CPU backend); where it does not, the features differ by rounding, and everything is only
 * bounded (relative 1e-5). */
static void test_chunked_identity(void)
{
    chunk_result ref, got;
    chunk_run(0, &ref);
    static const int chunks[] = {1, 3, 4, 10, 16};
    printf("\n");
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        int c = chunks[k];
        chunk_run(c, &got);
        int exact = batch_invariant(c), single = c >= 10;
        if (!exact)
            printf("  chunk %2d: the backend rounds a patch differently in a batch of %d: bounds only\n", c, c);
        double sgf, spf, sgg;
        double dgf = abs_diff(got.gf, ref.gf, ref.nf, &sgf), dpf = abs_diff(got.pf, ref.pf, ref.nf, &spf);
        double dgg = abs_diff(got.gg, ref.gg, ref.ng, &sgg);
        int same_loss = memcmp(got.loss, ref.loss, sizeof ref.loss) == 0, same_z = memcmp(got.z, ref.z, sizeof ref.z) == 0;
        int same_g = memcmp(got.gg, ref.gg, ref.ng * sizeof(float)) == 0;
        int same_pg = memcmp(got.pg, ref.pg, ref.ng * sizeof(float)) == 0;
        int same_gf = memcmp(got.gf, ref.gf, ref.nf * sizeof(float)) == 0;
        int same_pf = memcmp(got.pf, ref.pf, ref.nf * sizeof(float)) == 0;
        printf("  chunk %2d: losses %.7f %.7f (%s), Z %s, head grads %s (max diff %.1e), head params %s; backbone "
               "grads %s (max |diff| %.2e of %.2e), params %s (max |diff| %.2e of %.2e)\n",
               c, got.loss[0], got.loss[1], same_loss ? "equal" : "DIFFER", same_z ? "equal" : "DIFFERS",
               same_g ? "equal" : "DIFFER", dgg, same_pg ? "equal" : "DIFFER", same_gf ? "equal" : "differ", dgf,
               sgf, same_pf ? "equal" : "differ", dpf, spf);
        if (exact) {
            CU_ASSERT_TRUE(same_loss);
            CU_ASSERT_TRUE(same_z);
            CU_ASSERT_TRUE(same_g);
            CU_ASSERT_TRUE(same_pg);
            if (single) {
                CU_ASSERT_TRUE(same_gf);
                CU_ASSERT_TRUE(same_pf);
            }
            CU_ASSERT_TRUE(dgf <= 1e-6 * sgf);
            CU_ASSERT_TRUE(dpf <= 1e-6 * spf);
        } else {
            double sz, spg;
            CU_ASSERT_TRUE(fabs((double)got.loss[0] - ref.loss[0]) <= 1e-5 * fabs((double)ref.loss[0]));
            CU_ASSERT_TRUE(fabs((double)got.loss[1] - ref.loss[1]) <= 1e-5 * fabs((double)ref.loss[1]));
            CU_ASSERT_TRUE(abs_diff(got.z, ref.z, B * S * MN, &sz) <= 1e-5 * sz);
            CU_ASSERT_TRUE(dgg <= 1e-5 * sgg);
            CU_ASSERT_TRUE(abs_diff(got.pg, ref.pg, ref.ng, &spg) <= 1e-5 * spg);
            CU_ASSERT_TRUE(dgf <= 1e-5 * sgf);
            CU_ASSERT_TRUE(dpf <= 1e-5 * spf);
        }
        CU_ASSERT_TRUE(sgf > 0);
        chunk_result_free(&got);
    }
    chunk_result_free(&ref);
}

/* Chunking is refused where it could not be exact, and freeze_bn where filling would move the statistics;
 * a backbone without BN may chunk in train mode (the same loss as unchunked). */
static void test_chunk_refusals(void)
{
    fixture fx;
    setup(&fx, 0.0f);
    pgd_err err = PGD_ERR_INIT;
    pgd_patchgd_cfg c = cfg_for(1);
    c.fill_train_mode = 0, c.inner_chunk = 2;
    CU_ASSERT_PTR_NULL(pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "inner_chunk needs freeze_bn"));
    printf("\n  refused: %s\n", err.msg);
    pgd_err_clear(&err);
    c.freeze_bn = 1, c.fill_train_mode = 1;
    CU_ASSERT_PTR_NULL(pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "fill_train_mode"));
    printf("  refused: %s\n", err.msg);
    pgd_err_clear(&err);
    c.fill_train_mode = 0, c.inner_chunk = -1;
    CU_ASSERT_PTR_NULL(pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "negative"));
    pgd_err_clear(&err);
    /* unchunked, an inner step must fit in max_patches; chunked, it may hold more */
    c.inner_chunk = 0, c.max_patches = 4;
    pgd_patchgd *pg = pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    float loss[2];
    CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, fx.px, fx.all, 5, fx.labels, B, &loss[0], &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "1..4 patches"));
    pgd_err_clear(&err);
    pgd_patchgd_free(&pg);
    teardown(&fx);
    /* chunks of 3 with max_patches 2: forwards of 2; reserving grows them to one chunk, no further */
    setup(&fx, 0.0f);
    c.inner_chunk = 3, c.max_patches = 2;
    pg = pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    size_t bytes2 = pgd_net_bytes(fx.f);
    CU_ASSERT_EQUAL(pgd_patchgd_reserve(pg, 100, &err), 0);
    size_t bytes3 = pgd_net_bytes(fx.f);
    CU_ASSERT_TRUE(bytes3 > bytes2);
    CU_ASSERT_EQUAL(pgd_patchgd_reserve(pg, 200, &err), 0);
    CU_ASSERT_EQUAL(pgd_net_bytes(fx.f), bytes3);
    CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, fx.px, fx.all, B * MN, fx.labels, B, &loss[0], &err), 0);
    pgd_patchgd_free(&pg);
    teardown(&fx);

    /* no BN: train mode chunks exactly */
    for (int k = 0; k < 2; k++) {
        setup(&fx, 0.0f);
        pgd_net_free(&fx.f);
        fx.f = backbone_with(fx.be, 11, 0, 0.3f);
        c = cfg_for(1);
        c.inner_chunk = k ? 4 : 0;
        pg = pgd_patchgd_new(fx.f, fx.g, NULL, NULL, &c, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
        CU_ASSERT_EQUAL(pgd_patchgd_fill(pg, fx.px, fx.all, B * MN, &err), 0);
        CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, fx.px, fx.all, B * MN, fx.labels, B, &loss[k], &err), 0);
        pgd_patchgd_free(&pg);
        teardown(&fx);
    }
    CU_ASSERT_EQUAL(memcmp(&loss[0], &loss[1], sizeof loss[0]), 0);
}

/* The backend's peak memory over building and one inner step of k fresh patches per image (2 images of a
 * 4 x 4 grid), unchunked or with chunks of 2, on a fresh backend each time. */
static size_t step_peak(int k, int chunk)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    pgd_net *f = backbone(be, 31), *g = pgd_model_head(be, S, TM, TM, 8, 0.1f, 0, TCLASSES, 32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    move_bn(f);
    pgd_patchgd_cfg c = {.max_images = 2, .m = TM, .n = TM, .patch = P, .channels = C, .max_patches = 2 * k,
                         .epsilon = 1, .freeze_bn = 1, .inner_chunk = chunk, .seed = 3};
    for (int ch = 0; ch < C; ch++)
        c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
    pgd_patchgd *pg = pgd_patchgd_new(f, g, NULL, NULL, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
    uint8_t *px = malloc((size_t)2 * k * TPX);
    uint32_t cells[2 * TMN];
    int32_t labels[2] = {0, 2};
    CU_ASSERT_PTR_NOT_NULL_FATAL(px);
    for (int i = 0; i < 2 * k; i++)
        cells[i] = (uint32_t)((i % 2) * TMN + i / 2);
    for (size_t i = 0; i < (size_t)2 * k * TPX; i++)
        px[i] = (uint8_t)(i * 37 % 251);
    float loss;
    CU_ASSERT_EQUAL(pgd_patchgd_inner(pg, px, cells, 2 * k, labels, 2, &loss, &err), 0);
    pgd_mem_stats st;
    pgd_backend_mem_stats(be, &st);
    free(px);
    pgd_patchgd_free(&pg);
    pgd_net_free(&f);
    pgd_net_free(&g);
    pgd_backend_free(&be);
    return st.peak_in_use;
}

/* Unchunked, the peak grows with k by at least the backbone's activations of the added patches; with chunks
 * of 2 it is the same for every k, and the unchunked peak of k = 1 (2 patches: one chunk), up to less than one
 * patch's activations: the CPU backend counts malloc_usable_size, which may exceed a request by 16 bytes or so
 * depending on the heap's state (seen: 48 bytes; under AddressSanitizer, which reports requested sizes, the
 * chunked peaks are equal to the byte). */
static void test_chunk_memory(void)
{
    static const int ks[] = {1, 2, 4, 8, 16};
    enum { NK = sizeof ks / sizeof ks[0] };
    size_t plain[NK], chunked[NK];
    /* the backbone's activation bytes per patch: what planning one more patch costs */
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    pgd_net *f = backbone(be, 31);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(f, 1, &err), 0);
    size_t one = pgd_net_bytes(f);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(f, 2, &err), 0);
    size_t per_patch = pgd_net_bytes(f) - one;
    pgd_net_free(&f);
    pgd_backend_free(&be);
    printf("\n  backbone activations per patch: %zu bytes\n  k per image | peak unchunked | peak chunks of 2\n",
           per_patch);
    for (int i = 0; i < NK; i++) {
        plain[i] = step_peak(ks[i], 0);
        chunked[i] = step_peak(ks[i], 2);
        printf("  %11d | %14zu | %16zu\n", ks[i], plain[i], chunked[i]);
    }
    for (int i = 1; i < NK; i++) {
        CU_ASSERT_TRUE(plain[i] >= plain[i - 1] + (size_t)(2 * (ks[i] - ks[i - 1])) * per_patch);
        CU_ASSERT_TRUE(chunked[i] < chunked[0] + per_patch && chunked[0] < chunked[i] + per_patch);
    }
    CU_ASSERT_TRUE(chunked[0] < plain[0] + per_patch && plain[0] < chunked[0] + per_patch);
}

static const pgd_test_case cases[] = {
    {"identity with all cells (and finite differences)", test_identity},
    {"gradient only through fresh cells", test_fresh_cells_only},
    {"accumulation over epsilon steps", test_accumulation},
    {"bad calls", test_bad_calls},
    {"loss falls on a tiny task", test_loss_falls},
    {"learning-rate schedule", test_lr_schedule},
    {"chunked inner step equals the unchunked one (frozen BN)", test_chunked_identity},
    {"chunking refusals and limits", test_chunk_refusals},
    {"chunked inner step memory does not grow with k", test_chunk_memory},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("patchgd", cases, argc, argv);
}
