/* test_patchgd.c: PatchGD on the CPU backend: the end-to-end identity, gradients only through fresh cells,
 * accumulation over epsilon steps, finite differences of the whole loss, and a loss that falls. */
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

static pgd_net *backbone(pgd_backend *be, uint64_t seed)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *f = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    int x = pgd_net_input(f, C, P, P);
    x = pgd_net_conv(f, x, "conv1", 4, 3, 1, 1, 1, 0);
    x = pgd_net_bn(f, x, "bn1");
    x = pgd_net_relu(f, x, 0);
    x = pgd_net_maxpool(f, x, 2, 2, 0);
    x = pgd_net_global_avgpool(f, x);
    x = pgd_net_linear(f, x, "fc", S, 1);
    CU_ASSERT_TRUE_FATAL(x >= 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(f, seed, &err), 0);
    return f;
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

static const pgd_test_case cases[] = {
    {"identity with all cells (and finite differences)", test_identity},
    {"gradient only through fresh cells", test_fresh_cells_only},
    {"accumulation over epsilon steps", test_accumulation},
    {"bad calls", test_bad_calls},
    {"loss falls on a tiny task", test_loss_falls},
    {"learning-rate schedule", test_lr_schedule},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("patchgd", cases, argc, argv);
}
