/* test_plan.c: the memory planner against the CPU backend's measured peaks, its refusals, auto choices monotone in
 * the budget, the CPU backend's budget, and the paper's ResNet50 at 4096 x 4096 within 4 GiB. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "trainer/backend.h"
#include "trainer/gd.h"
#include "trainer/gpu_pool.h"
#include "trainer/model.h"
#include "trainer/net.h"
#include "trainer/optim.h"
#include "trainer/patchgd.h"
#include "trainer/plan.h"

#define MIB 1048576.0
/* The planned bytes and the measured peak_in_use agree within this fraction of the plan (docs/trainer.md,
 * "Memory budget": glibc serves some large requests from the heap instead of mmap, a page less). */
#define MARGIN 0.02

enum { PATCH = 32, S = 16, GM = 3, GN = 3, MN = GM * GN, B = 2, CLASSES = 3, WIDTH = 16 };

typedef struct rig {
    pgd_backend *be;
    pgd_net *f, *g;
    pgd_optim *of, *og;
    pgd_plan plan;
} rig;

static void rig_open(rig *r, const char *arch, int moments, size_t budget)
{
    pgd_err err = PGD_ERR_INIT;
    memset(r, 0, sizeof *r);
    r->be = pgd_backend_cpu_new(2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->be);
    r->f = pgd_model_build(r->be, arch, PATCH, S, 1, &err);
    r->g = pgd_model_head(r->be, S, GM, GN, WIDTH, 0.2f, 0, CLASSES, 2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->g);
    pgd_opt_cfg oc = pgd_opt_defaults();
    if (moments == 1)
        oc.kind = PGD_OPT_SGD;
    if (moments) {
        r->of = pgd_optim_new(r->f, &oc, &err);
        r->og = pgd_optim_new(r->g, &oc, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r->og);
    } else { /* inference, as pgd-trainer builds it: no gradient buffers */
        pgd_net_forward_only(r->f);
        pgd_net_forward_only(r->g);
    }
    pgd_plan_req req = {.f = r->f, .g = r->g, .moments = moments, .images = B, .budget = budget,
                        .overhead = pgd_plan_overhead(r->be, budget)};
    CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &r->plan, &err), 0);
}

static void rig_close(rig *r)
{
    pgd_optim_free(&r->of);
    pgd_optim_free(&r->og);
    pgd_net_free(&r->f);
    pgd_net_free(&r->g);
    pgd_backend_free(&r->be);
}

/* Z-filling of all B x MN cells, then one inner step of `count` patches, through a PatchGD with max_patches
 * `per` (and inner_chunk `chunk`); returns the peak bytes in use, or 0 when something failed (err says what). */
static size_t run_step(rig *r, int per, int chunk, int count, pgd_err *err)
{
    pgd_patchgd_cfg c = {.max_images = B, .m = GM, .n = GN, .patch = PATCH, .channels = 3, .max_patches = per,
                         .epsilon = 1, .freeze_bn = 1, .inner_chunk = chunk, .seed = 5};
    for (int ch = 0; ch < 3; ch++)
        c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
    size_t peak = 0;
    uint8_t *px = malloc((size_t)B * MN * PATCH * PATCH * 3);
    uint32_t cells[B * MN];
    int32_t labels[B] = {0, 2};
    float loss;
    CU_ASSERT_PTR_NOT_NULL_FATAL(px);
    for (size_t i = 0; i < (size_t)B * MN * PATCH * PATCH * 3; i++)
        px[i] = (uint8_t)(i * 2654435761u >> 24);
    for (int i = 0; i < B * MN; i++)
        cells[i] = (uint32_t)((i * 7) % (B * MN));
    pgd_patchgd *pg = pgd_patchgd_new(r->f, r->g, r->of, r->og, &c, err);
    if (pg && pgd_patchgd_fill(pg, px, cells, B * MN, err) == 0 &&
        pgd_patchgd_inner(pg, px, cells, count, labels, B, &loss, err) == 0) {
        pgd_mem_stats st;
        pgd_backend_mem_stats(r->be, &st);
        peak = st.peak_in_use;
    }
    pgd_patchgd_free(&pg);
    free(px);
    return peak;
}

/* The plan of a fill + inner step against the measured peak, unchunked and chunked, for three backbones. */
static void test_planned_vs_measured(void)
{
    static const char *const archs[] = {"small_cnn", "resnet18", "mobilenet_v2"};
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        static const int per[] = {6, 3}, chunk[] = {0, 3}, count[] = {6, 8};
        for (int k = 0; k < 2; k++) {
            rig r;
            pgd_err err = PGD_ERR_INIT;
            rig_open(&r, archs[a], 2, (size_t)8 << 30);
            size_t planned = pgd_plan_bytes(&r.plan, per[k]);
            size_t measured = run_step(&r, per[k], chunk[k], count[k], &err);
            if (!measured)
                fprintf(stderr, "%s\n", err.msg);
            double diff = ((double)measured - (double)planned) / (double)planned;
            printf("\n  %-12s forward of %d (%s): planned %.3f MiB, measured peak_in_use %.3f MiB (%+.3f%%)",
                   archs[a], per[k], chunk[k] ? "chunked" : "one forward", planned / MIB, measured / MIB,
                   100.0 * diff);
            CU_ASSERT_TRUE(measured > 0);
            CU_ASSERT_TRUE(diff <= MARGIN && diff >= -MARGIN);
            rig_close(&r);
        }
    }
}

/* Inference (forward-only nets, no optimizer): the plan of Z-filling in forwards of `per` and the head's
 * prediction against the measured peak, and more patches per forward than training fits in the same budget. */
static void test_planned_vs_measured_infer(void)
{
    static const char *const archs[] = {"small_cnn", "resnet18", "mobilenet_v2"};
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        rig r, t;
        pgd_err err = PGD_ERR_INIT;
        rig_open(&r, archs[a], 0, (size_t)8 << 30);
        pgd_patchgd_cfg c = {.max_images = B, .m = GM, .n = GN, .patch = PATCH, .channels = 3, .max_patches = 6,
                             .epsilon = 1, .seed = 5};
        for (int ch = 0; ch < 3; ch++)
            c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
        uint8_t *px = calloc((size_t)B * MN * PATCH * PATCH * 3, 1);
        uint32_t cells[B * MN];
        float probs[B * CLASSES];
        CU_ASSERT_PTR_NOT_NULL_FATAL(px);
        for (int i = 0; i < B * MN; i++)
            cells[i] = (uint32_t)i;
        pgd_patchgd *pg = pgd_patchgd_new(r.f, r.g, NULL, NULL, &c, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(pg);
        CU_ASSERT_EQUAL(pgd_patchgd_fill(pg, px, cells, B * MN, &err), 0);
        CU_ASSERT_EQUAL(pgd_patchgd_predict(pg, B, probs, &err), 0);
        pgd_mem_stats st;
        pgd_backend_mem_stats(r.be, &st);
        size_t planned = pgd_plan_bytes(&r.plan, 6);
        double diff = ((double)st.peak_in_use - (double)planned) / (double)planned;
        rig_open(&t, archs[a], 2, (size_t)8 << 30);
        printf("\n  %-12s inference, forward of 6: planned %.3f MiB, measured %.3f MiB (%+.3f%%); per patch %.3f MiB "
               "(training %.3f)", archs[a], planned / MIB, st.peak_in_use / MIB, 100.0 * diff, r.plan.per_patch / MIB,
               t.plan.per_patch / MIB);
        CU_ASSERT_TRUE(diff <= MARGIN && diff >= -MARGIN);
        CU_ASSERT_TRUE(r.plan.per_patch < 0.6 * t.plan.per_patch);
        pgd_patchgd_free(&pg);
        free(px);
        rig_close(&t);
        rig_close(&r);
    }
}

/* With the CPU backend capped at the plan for `most`, the planned step runs; far more patches are refused. */
static void test_budget_holds(void)
{
    rig r;
    pgd_err err = PGD_ERR_INIT;
    rig_open(&r, "resnet18", 2, (size_t)200 << 20);
    int most = r.plan.most;
    printf("\n  resnet18 within 200 MiB: %d patches per forward (%.3f MiB planned)", most,
           pgd_plan_bytes(&r.plan, most) / MIB);
    CU_ASSERT_TRUE_FATAL(most >= 2);
    /* capped at exactly the planned bytes */
    size_t cap = pgd_plan_bytes(&r.plan, most);
    CU_ASSERT_EQUAL(pgd_backend_set_budget(r.be, cap, &err), 0);
    CU_ASSERT_TRUE(run_step(&r, most, 0, most < B * MN ? most : B * MN, &err) > 0);
    rig_close(&r);

    pgd_err e2 = PGD_ERR_INIT;
    rig_open(&r, "resnet18", 2, (size_t)200 << 20);
    CU_ASSERT_EQUAL(pgd_backend_set_budget(r.be, (size_t)200 << 20, &e2), 0);
    int over = 2 * most + 2;
    CU_ASSERT_EQUAL(run_step(&r, over, 0, over > B * MN ? B * MN : over, &e2), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(e2.msg, "over the budget"));
    pgd_mem_stats st;
    pgd_backend_mem_stats(r.be, &st);
    CU_ASSERT_EQUAL(st.budget, (size_t)200 << 20);
    CU_ASSERT_TRUE(st.failures >= 1);
    CU_ASSERT_TRUE(st.peak_in_use <= ((size_t)200 << 20));
    rig_close(&r);
}

/* The CPU backend's cap: an alloc over it fails with the budget message; 0 lifts it. */
static void test_cpu_budget(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    CU_ASSERT_EQUAL(pgd_backend_set_budget(be, (size_t)1 << 20, &err), 0);
    void *a = be->ops->alloc(be, 600000);
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_EQUAL(pgd_backend_error(be, &err), 0);
    CU_ASSERT_PTR_NULL(be->ops->alloc(be, 600000));
    CU_ASSERT_EQUAL(pgd_backend_error(be, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOMEM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cpu memory: tensor of 600000 bytes"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "over the budget of 1048576 bytes"));
    be->ops->free(be, a);
    pgd_backend_free(&be);

    pgd_err e2 = PGD_ERR_INIT;
    be = pgd_backend_cpu_new(1, &e2);
    CU_ASSERT_EQUAL(pgd_backend_set_budget(be, (size_t)1 << 20, &e2), 0);
    CU_ASSERT_EQUAL(pgd_backend_set_budget(be, 0, &e2), 0);
    a = be->ops->alloc(be, (size_t)4 << 20);
    CU_ASSERT_PTR_NOT_NULL(a);
    be->ops->free(be, a);
    pgd_backend_free(&be);
}

/* Budgets that fit nothing, or fewer patches than asked, are refused with the numbers and the hint. */
static void test_refusals(void)
{
    rig r;
    pgd_err err = PGD_ERR_INIT;
    rig_open(&r, "small_cnn", 2, 4096);
    CU_ASSERT_EQUAL(r.plan.most, 0);
    CU_ASSERT_EQUAL(pgd_plan_check(&r.plan, 1, "Z-filling of 1 patch", NULL, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "memory budget 0.00 MiB"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not even one patch per forward fits"));
    rig_close(&r);

    pgd_err e2 = PGD_ERR_INIT;
    rig_open(&r, "small_cnn", 2, (size_t)8 << 20);
    int most = r.plan.most;
    CU_ASSERT_TRUE_FATAL(most >= 1);
    CU_ASSERT_EQUAL(pgd_plan_check(&r.plan, most, "x", NULL, &e2), 0);
    CU_ASSERT_EQUAL(pgd_plan_check(&r.plan, most + 1, "an inner step of many patches", "use --freeze-bn", &e2), -1);
    char want[64];
    snprintf(want, sizeof want, "at most %d patches per forward fit; use --freeze-bn", most);
    CU_ASSERT_PTR_NOT_NULL(strstr(e2.msg, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(e2.msg, "an inner step of many patches needs"));
    char line[512];
    pgd_plan_describe(&r.plan, most, most, line, sizeof line);
    printf("\n  %s", line);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "memory plan: budget 8.00 MiB"));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "inner steps in chunks of"));
    rig_close(&r);

    pgd_err e3 = PGD_ERR_INIT;
    pgd_plan p;
    pgd_plan_req bad = {.f = NULL, .images = 1, .budget = 1};
    CU_ASSERT_EQUAL(pgd_plan_make(&bad, &p, &e3), -1);
    CU_ASSERT_EQUAL(e3.code, PGD_EINVAL);
}

/* The largest forward never shrinks as the budget grows, and is exactly the last that fits. */
static void test_monotone(void)
{
    rig r;
    rig_open(&r, "mobilenet_v2", 1, (size_t)1 << 20);
    int last = 0;
    for (size_t mb = 1; mb <= 256; mb = mb * 3 / 2 + 1) {
        pgd_err err = PGD_ERR_INIT;
        pgd_plan p;
        pgd_plan_req req = r.plan.req;
        req.budget = mb << 20;
        CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &p, &err), 0);
        CU_ASSERT_TRUE(p.most >= last);
        if (p.most > 0)
            CU_ASSERT_TRUE(pgd_plan_bytes(&p, p.most) <= req.budget);
        CU_ASSERT_TRUE(pgd_plan_bytes(&p, p.most + 1) > req.budget);
        last = p.most;
    }
    CU_ASSERT_TRUE(last > 10);
    rig_close(&r);
}

/* GD: the planned bytes of a step against the measured peak; a batch that does not fit is refused. */
static void test_gd(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(2, &err);
    pgd_net *net = pgd_model_build(be, "small_cnn", 64, CLASSES, 3, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    pgd_opt_cfg oc = pgd_opt_defaults();
    pgd_optim *opt = pgd_optim_new(net, &oc, &err);
    pgd_plan p;
    pgd_plan_req req = {.f = net, .moments = 2, .images = 4, .budget = (size_t)1 << 30};
    CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &p, &err), 0);
    pgd_gd_cfg c = {.max_images = 4, .size = 64, .channels = 3, .seed = 1};
    for (int ch = 0; ch < 3; ch++)
        c.mean[ch] = 0.5f, c.std[ch] = 0.25f;
    pgd_gd *gd = pgd_gd_new(net, opt, &c, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gd);
    uint8_t *px = calloc(4, 64 * 64 * 3);
    int32_t labels[4] = {0, 1, 2, 0};
    float loss;
    CU_ASSERT_EQUAL(pgd_gd_step(gd, px, labels, 4, 1e-3f, &loss, NULL, &err), 0);
    pgd_mem_stats st;
    pgd_backend_mem_stats(be, &st);
    size_t planned = pgd_plan_bytes(&p, 4);
    double diff = ((double)st.peak_in_use - (double)planned) / (double)planned;
    printf("\n  gd small_cnn 64 px x 4: planned %.3f MiB, measured %.3f MiB (%+.3f%%)", planned / MIB,
           st.peak_in_use / MIB, 100.0 * diff);
    CU_ASSERT_TRUE(diff <= MARGIN && diff >= -MARGIN);
    req.budget = pgd_plan_bytes(&p, 2);
    CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &p, &err), 0);
    CU_ASSERT_EQUAL(p.most, 2);
    CU_ASSERT_EQUAL(pgd_plan_check(&p, 4, "a GD step of 4 images", NULL, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "at most 2 images per forward fit"));
    free(px);
    pgd_gd_free(&gd);
    pgd_optim_free(&opt);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* The paper: PatchGD trains ResNet50 at 4096 x 4096 (256 px patches, a 16 x 16 grid) within 4 GB. Planned, not
 * run: s = 256, the head of width 256, Adam, frozen BN, B = 1..4, with the CUDA backend's workspace allowance. */
static void test_resnet50_4gib(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(2, &err);
    pgd_net *f = pgd_model_build(be, "resnet50", 256, 256, 1, &err);
    pgd_net *g = pgd_model_head(be, 256, 16, 16, 256, 0.2f, 0, 6, 2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    size_t budget = (size_t)4 << 30;
    size_t cuda_overhead = ((size_t)32 << 20) + budget / 4; /* pgd_plan_overhead of a CUDA backend */
    int k = (256 + 9) / 10;                                 /* 10% of the 256 cells, rounded up */
    printf("\n  resnet50 %zu parameters, head %zu", pgd_net_param_count(f), pgd_net_param_count(g));
    for (int b = 1; b <= 4; b++) {
        for (int cuda = 0; cuda < 2; cuda++) {
            pgd_plan p;
            pgd_plan_req req = {.f = f, .g = g, .moments = 2, .images = b, .budget = budget,
                                .overhead = cuda ? cuda_overhead : 0};
            CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &p, &err), 0);
            CU_ASSERT_TRUE(p.most >= 1);
            int unchunked = k * b;
            printf("\n  resnet50 256 px, 16 x 16, B %d, %s: fixed %.1f MiB (nets %.1f, Adam %.1f, Z %.1f, head %.1f, "
                   "backend %.1f), %.1f MiB per patch: chunks of %d; unchunked k x B = %d needs %.1f MiB: %s",
                   b, cuda ? "cuda allowance" : "cpu", p.fixed / MIB, p.nets / MIB, p.moments / MIB, p.z / MIB,
                   p.head / MIB, p.req.overhead / MIB, p.per_patch / MIB, p.most, unchunked,
                   pgd_plan_bytes(&p, unchunked) / MIB, unchunked <= p.most ? "fits" : "does not fit");
            /* the claim needs chunks: 26 x B patches' activations are far beyond 4 GiB */
            CU_ASSERT_TRUE(unchunked > p.most);
            if (cuda) { /* bf16 / fp16 on CUDA adds the largest op's 16-bit copies: half the chunk still fits */
                int half_chunk = p.most / 2 > 0 ? p.most / 2 : 1;
                size_t staging = pgd_net_half_bytes(f, half_chunk, pgd_gpu_pool_round);
                printf("\n    in bf16 / fp16 on cuda: chunks of %d patches need %.1f MiB more for 16-bit copies, "
                       "%.1f MiB in all", half_chunk, staging / MIB, (pgd_plan_bytes(&p, half_chunk) + staging) / MIB);
                CU_ASSERT_TRUE(pgd_plan_bytes(&p, half_chunk) + staging <= budget);
            }
        }
    }
    pgd_net_free(&f);
    pgd_net_free(&g);
    pgd_backend_free(&be);
}

/* pgd_net_half_bytes: the largest conv or linear op's 16-bit copies of input, weights and output. */
static size_t round_512(size_t bytes)
{
    return (bytes + 511) / 512 * 512;
}

static void test_half_bytes(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(1, &err);
    pgd_net *net = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    int x = pgd_net_input(net, 3, 8, 8);
    x = pgd_net_conv(net, x, "conv", 4, 3, 1, 1, 1, 0);   /* n 2: in 384, w 108, out 512 values */
    x = pgd_net_conv(net, x, "dw", 4, 3, 1, 1, 4, 0);     /* depthwise: in 512, w 36, out 512 */
    x = pgd_net_linear(net, pgd_net_global_avgpool(net, x), "fc", 5, 1); /* in 8, w 20, out 10 */
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, 1, &err), 0);
    CU_ASSERT_EQUAL(pgd_net_half_bytes(net, 2, NULL), 2 * (512 + 36 + 512));
    CU_ASSERT_EQUAL(pgd_net_half_bytes(net, 2, round_512), 1024 + 512 + 1024); /* each buffer rounded */
    CU_ASSERT_EQUAL(pgd_net_half_bytes(net, 1, NULL), 2 * (192 + 108 + 256)); /* n 1: the first conv is larger */
    CU_ASSERT_EQUAL(pgd_net_half_bytes(net, 0, NULL), 0);
    /* the CPU backend keeps its copies outside the budget: its plan does not change with the precision */
    pgd_plan_req req = {.f = net, .moments = 0, .images = 2, .budget = (size_t)1 << 30};
    pgd_plan a, b;
    CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &a, &err), 0);
    CU_ASSERT_EQUAL(pgd_backend_set_precision(be, PGD_PREC_BF16, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_plan_make(&req, &b, &err), 0);
    CU_ASSERT_EQUAL(pgd_plan_bytes(&a, 7), pgd_plan_bytes(&b, 7));
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static const pgd_test_case cases[] = {
    {"planned_vs_measured", test_planned_vs_measured},
    {"planned_vs_measured_infer", test_planned_vs_measured_infer},
    {"budget_holds", test_budget_holds},
    {"cpu_budget", test_cpu_budget},
    {"refusals", test_refusals},
    {"monotone", test_monotone},
    {"gd", test_gd},
    {"resnet50_4gib", test_resnet50_4gib},
    {"half_bytes", test_half_bytes},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("plan", cases, argc, argv);
}
