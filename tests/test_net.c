/* test_net.c: the net executor: whole-net finite-difference gradient checks (ResNet-like, MobileNet-like, the
 * PatchGD head with dropout, a node read several times, frozen BN), BN modes and running statistics, dropout,
 * forwards in parts, zero_grad, deterministic initialisation, and building errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "cunit_util.h"
#include "trainer/model.h"
#include "trainer/net.h"

static pgd_backend *backend(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    return be;
}

static float *dev_alloc(pgd_backend *be, size_t count)
{
    float *p = be->ops->alloc(be, count * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static float *host_alloc(size_t count)
{
    float *p = calloc(count ? count : 1, sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static void fill_uniform(float *x, size_t count, uint64_t seed, float lo, float hi)
{
    pgd_rng r;
    pgd_rng_seed(&r, seed);
    for (size_t i = 0; i < count; i++)
        x[i] = lo + (hi - lo) * pgd_rng_uniformf(&r);
}

static void set_tensor(pgd_net *net, const char *name, float value)
{
    int t = pgd_net_find(net, name);
    CU_ASSERT_FATAL(t >= 0);
    const pgd_tensor_info *ti = pgd_net_tensor(net, t);
    pgd_backend *be = pgd_net_backend(net);
    float *host = host_alloc(ti->count);
    for (size_t i = 0; i < ti->count; i++)
        host[i] = value;
    float *base = ti->kind == PGD_TENSOR_PARAM ? pgd_net_params(net) : pgd_net_buffers(net);
    be->ops->upload(be, base + ti->offset, host, ti->count * sizeof(float));
    free(host);
}

/* --- the finite-difference check ------------------------------------------------------------------------- */

/* A gradient check of L = sum(r * net(x)) in train (or frozen-BN) mode with a fixed forward seed. */
typedef struct fd_case {
    pgd_net *net;
    pgd_backend *be;
    int n;
    pgd_net_mode mode;
    size_t in_count, out_count;
    float *x, *r, *din, *params;   /* backend memory */
    uint64_t seed;
} fd_case;

static double fd_loss(fd_case *fc)
{
    pgd_err err = PGD_ERR_INIT;
    const float *y = pgd_net_forward(fc->net, fc->x, fc->n, fc->mode, fc->seed, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    float *yh = host_alloc(fc->out_count), *rh = host_alloc(fc->out_count);
    fc->be->ops->download(fc->be, yh, y, fc->out_count * sizeof(float));
    fc->be->ops->download(fc->be, rh, fc->r, fc->out_count * sizeof(float));
    double loss = 0;
    for (size_t i = 0; i < fc->out_count; i++)
        loss += (double)yh[i] * rh[i];
    free(yh);
    free(rh);
    return loss;
}

/* The loss after setting element i of buf (backend memory) to v. */
static double fd_loss_at(fd_case *fc, float *buf, size_t i, float v)
{
    fc->be->ops->upload(fc->be, buf + i, &v, sizeof v);
    return fd_loss(fc);
}

typedef struct fd_stats {
    int checked, skipped, bad;
    double max_err, sum_err2, sum_ana2;
} fd_stats;

/* Checks the analytic derivative of the loss in element i of buf against the central difference. ReLU and
 * max pooling make the loss piecewise smooth: when a kink lies within the step, the one-sided differences
 * disagree, and the element is skipped (the caller bounds how many are). Otherwise the kink can move the
 * central difference by at most half that disagreement, so the tolerance
 * |num - ana| <= 2e-3 + 3e-2 max(|num|, |ana|) holds for a correct gradient. */
static void fd_element(fd_case *fc, fd_stats *st, const char *what, float *buf, size_t i, double ana)
{
    const float step = 1e-3f;
    float v0;
    fc->be->ops->download(fc->be, &v0, buf + i, sizeof v0);
    float vp = v0 + step, vm = v0 - step;
    double l0 = fd_loss_at(fc, buf, i, v0), lp = fd_loss_at(fc, buf, i, vp), lm = fd_loss_at(fc, buf, i, vm);
    fd_loss_at(fc, buf, i, v0);
    double fwd = (lp - l0) / ((double)vp - v0), bwd = (l0 - lm) / ((double)v0 - vm);
    double num = (lp - lm) / ((double)vp - vm);
    double scale = fmax(fabs(num), fabs(ana)), tol = 2e-3 + 3e-2 * scale, diff = fabs(num - ana);
    st->checked++;
    if (fabs(fwd - bwd) > tol) {
        st->skipped++;
        return;
    }
    st->sum_err2 += diff * diff;
    st->sum_ana2 += ana * ana;
    if (diff > st->max_err)
        st->max_err = diff;
    if (diff > tol) {
        st->bad++;
        printf("\n    %s[%zu]: numeric %.6f analytic %.6f", what, i, num, ana);
    }
}

/* Samples of [0, count): the first, the last, then drawn from a fixed stream. */
static size_t fd_sample(pgd_rng *r, size_t count, int j)
{
    if (j == 0 || count == 1)
        return 0;
    if (j == 1)
        return count - 1;
    return pgd_rng_below(r, (uint32_t)count);
}

/* Runs the check on `net` for inputs x_host [n, in]: every parameter tensor (up to `per_tensor` elements
 * each) and `in_samples` input elements. */
static void fd_check_mode(const char *label, pgd_net *net, int n, const float *x_host, uint64_t seed,
                          int per_tensor, int in_samples, pgd_net_mode mode)
{
    pgd_err err = PGD_ERR_INIT;
    fd_case fc = {.net = net, .be = pgd_net_backend(net), .n = n, .mode = mode, .seed = seed};
    int c, h, w;
    pgd_net_in_shape(net, &c, &h, &w);
    fc.in_count = (size_t)n * c * h * w;
    fc.out_count = (size_t)n * pgd_net_out_count(net);
    fc.x = dev_alloc(fc.be, fc.in_count);
    fc.din = dev_alloc(fc.be, fc.in_count);
    fc.r = dev_alloc(fc.be, fc.out_count);
    fc.params = pgd_net_params(net);
    fc.be->ops->upload(fc.be, fc.x, x_host, fc.in_count * sizeof(float));
    float *rh = host_alloc(fc.out_count);
    fill_uniform(rh, fc.out_count, seed + 1, -1, 1);
    fc.be->ops->upload(fc.be, fc.r, rh, fc.out_count * sizeof(float));
    free(rh);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, n, &err), 0);

    /* analytic */
    pgd_net_zero_grad(net);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, fc.x, n, mode, seed, &err));
    CU_ASSERT_EQUAL_FATAL(pgd_net_backward(net, fc.r, fc.din, &err), 0);
    size_t pc = pgd_net_param_count(net);
    float *grads = host_alloc(pc), *din = host_alloc(fc.in_count);
    fc.be->ops->download(fc.be, grads, pgd_net_grads(net), pc * sizeof(float));
    fc.be->ops->download(fc.be, din, fc.din, fc.in_count * sizeof(float));

    fd_stats st = {0};
    pgd_rng r;
    pgd_rng_seed(&r, seed + 2);
    int tensors = 0;
    for (int t = 0; t < pgd_net_tensor_count(net); t++) {
        const pgd_tensor_info *ti = pgd_net_tensor(net, t);
        if (ti->kind != PGD_TENSOR_PARAM)
            continue;
        tensors++;
        for (int j = 0; j < per_tensor && (size_t)j < ti->count; j++) {
            size_t i = fd_sample(&r, ti->count, j);
            fd_element(&fc, &st, ti->name, fc.params + ti->offset, i, grads[ti->offset + i]);
        }
    }
    for (int j = 0; j < in_samples; j++) {
        size_t i = fd_sample(&r, fc.in_count, j);
        fd_element(&fc, &st, "input", fc.x, i, din[i]);
    }
    double rel = sqrt(st.sum_err2 / fmax(st.sum_ana2, 1e-30));
    printf("\n  %s: %d values of %d tensors + input, %d skipped at kinks, max |err| %.2e, relative L2 error %.2e, "
           "%d out of tolerance",
           label, st.checked, tensors, st.skipped, st.max_err, rel, st.bad);
    CU_ASSERT_EQUAL(st.bad, 0);
    CU_ASSERT(st.skipped * 10 <= st.checked);
    CU_ASSERT(rel < 1e-2);
    CU_ASSERT(st.sum_ana2 > 0);

    /* the input gradient is not needed for the parameter gradients: NULL din gives the same grads */
    pgd_net_zero_grad(net);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, fc.x, n, mode, seed, &err));
    CU_ASSERT_EQUAL(pgd_net_backward(net, fc.r, NULL, &err), 0);
    float *again = host_alloc(pc);
    fc.be->ops->download(fc.be, again, pgd_net_grads(net), pc * sizeof(float));
    CU_ASSERT_EQUAL(memcmp(again, grads, pc * sizeof(float)), 0);
    free(again);
    free(grads);
    free(din);
    fc.be->ops->free(fc.be, fc.x);
    fc.be->ops->free(fc.be, fc.din);
    fc.be->ops->free(fc.be, fc.r);
}

static void fd_check(const char *label, pgd_net *net, int n, const float *x_host, uint64_t seed, int per_tensor,
                     int in_samples)
{
    fd_check_mode(label, net, n, x_host, seed, per_tensor, in_samples, PGD_NET_TRAIN);
}

/* --- the nets ----------------------------------------------------------------------------------------------- */

/* 3x12x12 -> conv-BN-ReLU (8) -> maxpool -> a BasicBlock to 12 channels at stride 2 with a downsample
 * branch -> global pool -> fc (5). */
static pgd_net *tiny_resnet(pgd_backend *be, uint64_t seed)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    pgd_net_set_init(net, PGD_INIT_KAIMING_OUT, PGD_INIT_TORCH_DEFAULT);
    int x = pgd_net_input(net, 3, 12, 12);
    x = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, x, "conv1", 8, 3, 1, 1, 1, 0), "bn1"), 0);
    x = pgd_net_maxpool(net, x, 3, 2, 1);
    int y = pgd_net_conv(net, x, "layer1.0.conv1", 12, 3, 2, 1, 1, 0);
    y = pgd_net_relu(net, pgd_net_bn(net, y, "layer1.0.bn1"), 0);
    y = pgd_net_bn(net, pgd_net_conv(net, y, "layer1.0.conv2", 12, 3, 1, 1, 1, 0), "layer1.0.bn2");
    int skip = pgd_net_conv(net, x, "layer1.0.downsample.0", 12, 1, 2, 0, 1, 0);
    skip = pgd_net_bn(net, skip, "layer1.0.downsample.1");
    x = pgd_net_relu(net, pgd_net_add(net, y, skip), 0);
    x = pgd_net_linear(net, pgd_net_global_avgpool(net, x), "fc", 5, 1);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, seed, &err), 0);
    return net;
}

/* 3x8x8 -> conv-BN-ReLU6 stem (8, with bias) -> inverted residual (1x1 expand to 24, 3x3 depthwise, 1x1 project
 * to 8, each with BN; ReLU6 after the first two) added to the stem -> global pool -> fc (4). */
static pgd_net *tiny_mobilenet(pgd_backend *be, uint64_t seed)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    pgd_net_set_init(net, PGD_INIT_KAIMING_OUT, PGD_INIT_NORMAL_001);
    int x = pgd_net_input(net, 3, 8, 8);
    int s = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, x, "stem.0", 8, 3, 1, 1, 1, 1), "stem.1"), 6);
    int y = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, s, "conv.0.0", 24, 1, 1, 0, 1, 0), "conv.0.1"), 6);
    y = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, y, "conv.1.0", 24, 3, 1, 1, 24, 0), "conv.1.1"), 6);
    y = pgd_net_bn(net, pgd_net_conv(net, y, "conv.2", 8, 1, 1, 0, 1, 0), "conv.3");
    x = pgd_net_add(net, s, y);
    x = pgd_net_linear(net, pgd_net_global_avgpool(net, x), "fc", 4, 1);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, seed, &err), 0);
    /* BN scales of 3 spread the ReLU6 inputs to about +-9, so the cap at 6 is crossed */
    set_tensor(net, "stem.1.weight", 3);
    set_tensor(net, "conv.0.1.weight", 3);
    set_tensor(net, "conv.1.1.weight", 3);
    set_tensor(net, "conv.1.1.bias", 1);
    return net;
}

/* 2x5x5 -> conv a; b = relu(a); c = a + b; d = c + a; e = d + d; 2x2 average pool; fc (2): node a has three
 * consumers and e reads d twice. */
static pgd_net *shared_net(pgd_backend *be, uint64_t seed)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    int x = pgd_net_input(net, 2, 5, 5);
    int a = pgd_net_conv(net, x, "a", 3, 3, 1, 1, 1, 1);
    int b = pgd_net_relu(net, a, 0);
    int c = pgd_net_add(net, a, b);
    int d = pgd_net_add(net, c, a);
    int e = pgd_net_add(net, d, d);
    x = pgd_net_linear(net, pgd_net_avgpool(net, e, 2, 1, 0), "fc", 2, 1);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, seed, &err), 0);
    return net;
}

static float *random_input(size_t count, uint64_t seed)
{
    float *x = host_alloc(count);
    fill_uniform(x, count, seed, -1.5f, 1.5f);
    return x;
}

static void test_grad_resnet(void)
{
    pgd_backend *be = backend();
    pgd_net *net = tiny_resnet(be, 21);
    float *x = random_input(3 * 3 * 12 * 12, 22);
    fd_check("tiny resnet, batch 3", net, 3, x, 23, 6, 24);
    free(x);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static void test_grad_mobilenet(void)
{
    pgd_backend *be = backend();
    pgd_net *net = tiny_mobilenet(be, 31);
    float *x = random_input(2 * 3 * 8 * 8, 32);
    fd_check("tiny mobilenet block, batch 2", net, 2, x, 33, 6, 24);
    free(x);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static void test_grad_head(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    /* a 12 x 12 grid of 3-vectors, width 6, dropout 0.3, 3 classes: grids 12, 6, 3, 2 */
    pgd_net *net = pgd_model_head(be, 3, 12, 12, 6, 0.3f, 0, 3, 41, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    float *x = random_input(3 * 3 * 12 * 12, 42);
    fd_check("head 12x12 with dropout 0.3, batch 3", net, 3, x, 43, 5, 16);
    pgd_net_free(&net);
    /* the pooled head: every conv at stride 1, a global average pool before the Linear */
    net = pgd_model_head(be, 3, 12, 12, 6, 0.3f, 1, 3, 44, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    fd_check("pooled head 12x12 with dropout 0.3, batch 3", net, 3, x, 45, 5, 16);
    free(x);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static void test_grad_shared(void)
{
    pgd_backend *be = backend();
    pgd_net *net = shared_net(be, 51);
    float *x = random_input(2 * 2 * 5 * 5, 52);
    fd_check("a node with three consumers, batch 2", net, 2, x, 53, 8, 20);
    free(x);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* d(sum r * (x + x)) / dx = 2 r: the two gradient contributions of one consumer reading a node twice add. */
static void test_add_same_node(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    int x = pgd_net_input(net, 2, 2, 2);
    int a = pgd_net_avgpool(net, x, 1, 1, 0);
    pgd_net_add(net, a, a);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, 1, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 2, &err), 0);
    float xh[16], rh[16], out[16];
    fill_uniform(xh, 16, 1, -1, 1);
    fill_uniform(rh, 16, 2, -1, 1);
    float *xd = dev_alloc(be, 16), *rd = dev_alloc(be, 16), *dd = dev_alloc(be, 16);
    be->ops->upload(be, xd, xh, sizeof xh);
    be->ops->upload(be, rd, rh, sizeof rh);
    const float *y = pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    be->ops->download(be, out, y, sizeof out);
    for (int i = 0; i < 16; i++)
        CU_ASSERT_DOUBLE_EQUAL(out[i], 2 * xh[i], 1e-6);
    CU_ASSERT_EQUAL(pgd_net_backward(net, rd, dd, &err), 0);
    be->ops->download(be, out, dd, sizeof out);
    for (int i = 0; i < 16; i++)
        CU_ASSERT_DOUBLE_EQUAL(out[i], 2 * rh[i], 1e-6);
    be->ops->free(be, xd);
    be->ops->free(be, rd);
    be->ops->free(be, dd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* --- modes, statistics, dropout ---------------------------------------------------------------------------- */

static void test_bn_running_stats(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    int x = pgd_net_input(net, 2, 1, 3);
    pgd_net_bn(net, x, "bn");
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, 1, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 2, &err), 0);
    CU_ASSERT_EQUAL(pgd_net_buffer_count(net), 4);
    /* [n=2, c=2, hw=3]: channel 0 holds 1..6 (mean 3.5, unbiased var 3.5), channel 1 holds 10 x 6 */
    float xh[12] = {1, 2, 3, 10, 10, 10, 4, 5, 6, 10, 10, 10}, out[12], buf[4];
    float *xd = dev_alloc(be, 12);
    be->ops->upload(be, xd, xh, sizeof xh);
    int64_t *count = pgd_net_counters(net);
    CU_ASSERT_EQUAL(count[0], 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT_EQUAL(count[0], 1);
    be->ops->download(be, buf, pgd_net_buffers(net), sizeof buf);
    /* running_mean [2], running_var [2] */
    CU_ASSERT_DOUBLE_EQUAL(buf[0], 0.35, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(buf[1], 1.0, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(buf[2], 0.9 + 0.35, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(buf[3], 0.9, 1e-6);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT_EQUAL(count[0], 2);
    be->ops->download(be, buf, pgd_net_buffers(net), sizeof buf);
    CU_ASSERT_DOUBLE_EQUAL(buf[0], 0.9 * 0.35 + 0.35, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(buf[2], 0.9 * 1.25 + 0.35, 1e-6);
    /* eval: the running statistics, no update, no count */
    const float *y = pgd_net_forward(net, xd, 2, PGD_NET_EVAL, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    CU_ASSERT_EQUAL(count[0], 2);
    be->ops->download(be, out, y, sizeof out);
    CU_ASSERT_DOUBLE_EQUAL(out[0], (1 - buf[0]) / sqrt(buf[2] + 1e-5), 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(out[3], (10 - buf[1]) / sqrt(buf[3] + 1e-5), 1e-4);
    float again[4];
    be->ops->download(be, again, pgd_net_buffers(net), sizeof again);
    CU_ASSERT_EQUAL(memcmp(again, buf, sizeof buf), 0);
    /* a backward after an eval forward is refused */
    CU_ASSERT_EQUAL(pgd_net_backward(net, xd, NULL, &err), -1);
    CU_ASSERT(strstr(err.msg, "eval") != NULL);
    /* re-initialising resets the statistics and the counter */
    CU_ASSERT_EQUAL(pgd_net_init(net, 1, NULL), 0);
    CU_ASSERT_EQUAL(count[0], 0);
    be->ops->download(be, buf, pgd_net_buffers(net), sizeof buf);
    CU_ASSERT(buf[0] == 0 && buf[1] == 0 && buf[2] == 1 && buf[3] == 1);
    be->ops->free(be, xd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static void test_train_eval(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = tiny_resnet(be, 61);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 3, &err), 0);
    enum { IN = 3 * 12 * 12, OUT = 5 };
    float *xh = random_input(3 * IN, 62), y3[3 * OUT], y1[OUT], t3[3 * OUT], t2[2 * OUT];
    float *xd = dev_alloc(be, 3 * IN);
    be->ops->upload(be, xd, xh, 3 * IN * sizeof(float));
    /* a few train steps move the running statistics away from 0 / 1 */
    for (int i = 0; i < 3; i++)
        CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, xd, 3, PGD_NET_TRAIN, 0, &err));
    int bn1 = pgd_net_find(net, "bn1.num_batches_tracked");
    int ds = pgd_net_find(net, "layer1.0.downsample.1.num_batches_tracked");
    CU_ASSERT_FATAL(bn1 >= 0 && ds >= 0);
    CU_ASSERT_EQUAL(pgd_net_counters(net)[pgd_net_tensor(net, bn1)->offset], 3);
    CU_ASSERT_EQUAL(pgd_net_counters(net)[pgd_net_tensor(net, ds)->offset], 3);
    be->ops->download(be, t3, pgd_net_forward(net, xd, 3, PGD_NET_TRAIN, 0, &err), sizeof t3);
    be->ops->download(be, t2, pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 0, &err), sizeof t2);
    be->ops->download(be, y3, pgd_net_forward(net, xd, 3, PGD_NET_EVAL, 0, &err), sizeof y3);
    be->ops->download(be, y1, pgd_net_forward(net, xd, 1, PGD_NET_EVAL, 0, &err), sizeof y1);
    CU_ASSERT_EQUAL(pgd_net_counters(net)[pgd_net_tensor(net, bn1)->offset], 5);
    double train_vs_eval = 0, train_batch = 0;
    for (int i = 0; i < OUT; i++) {
        /* eval works sample by sample; train mode depends on the batch */
        CU_ASSERT_DOUBLE_EQUAL(y1[i], y3[i], 1e-5);
        train_vs_eval += fabs(t3[i] - y3[i]);
        train_batch += fabs(t3[i] - t2[i]);
    }
    CU_ASSERT(train_vs_eval > 1e-3);
    CU_ASSERT(train_batch > 1e-3);
    free(xh);
    be->ops->free(be, xd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static void test_dropout(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    int x = pgd_net_input(net, 16, 2, 2);
    pgd_net_dropout2d(net, pgd_net_avgpool(net, x, 1, 1, 0), 0.5f);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, 1, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 2, &err), 0);
    enum { N = 2 * 16 * 4 };
    float xh[N], a[N], b[N], c[N], e[N], g[N];
    for (int i = 0; i < N; i++)
        xh[i] = 1.0f + (float)i;
    float *xd = dev_alloc(be, N), *gd = dev_alloc(be, N);
    be->ops->upload(be, xd, xh, sizeof xh);
    be->ops->download(be, a, pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 7, &err), sizeof a);
    be->ops->download(be, b, pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 7, &err), sizeof b);
    be->ops->download(be, c, pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 8, &err), sizeof c);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof a), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, c, sizeof a), 0);
    /* whole channels: all four cells dropped or all doubled */
    int dropped = 0;
    for (int ch = 0; ch < 32; ch++) {
        int zeros = 0, kept = 0;
        for (int k = 0; k < 4; k++) {
            zeros += a[ch * 4 + k] == 0;
            kept += fabsf(a[ch * 4 + k] - 2 * xh[ch * 4 + k]) < 1e-5f;
        }
        CU_ASSERT(zeros == 4 || kept == 4);
        dropped += zeros == 4;
    }
    CU_ASSERT(dropped > 4 && dropped < 28);
    /* the gradient goes through the same mask */
    be->ops->download(be, a, pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 7, &err), sizeof a);
    CU_ASSERT_EQUAL(pgd_net_backward(net, xd, gd, &err), 0);
    be->ops->download(be, g, gd, sizeof g);
    for (int i = 0; i < N; i++)
        CU_ASSERT_DOUBLE_EQUAL(g[i], a[i], 1e-4);
    /* eval: identity */
    be->ops->download(be, e, pgd_net_forward(net, xd, 2, PGD_NET_EVAL, 7, &err), sizeof e);
    CU_ASSERT_EQUAL(memcmp(e, xh, sizeof e), 0);
    be->ops->free(be, xd);
    be->ops->free(be, gd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* Every BN of net gets running statistics and an affine map away from the initial 0 / 1 (uniform draws). */
static void move_bn(pgd_net *net, uint64_t seed)
{
    pgd_backend *be = pgd_net_backend(net);
    for (int t = 0; t < pgd_net_tensor_count(net); t++) {
        const pgd_tensor_info *ti = pgd_net_tensor(net, t);
        const char *dot = strrchr(ti->name, '.');
        float lo, hi;
        if (ti->kind == PGD_TENSOR_BUFFER && dot && strcmp(dot, ".running_mean") == 0)
            lo = -0.5f, hi = 0.5f;
        else if (ti->kind == PGD_TENSOR_BUFFER)
            lo = 0.5f, hi = 2.0f;
        else if (ti->kind == PGD_TENSOR_PARAM && t + 1 < pgd_net_tensor_count(net) &&
                 pgd_net_tensor(net, t + 1)->kind == PGD_TENSOR_BUFFER)
            lo = -0.3f, hi = 0.3f; /* a BN bias: its running_mean follows */
        else if (ti->kind == PGD_TENSOR_PARAM && t + 2 < pgd_net_tensor_count(net) &&
                 pgd_net_tensor(net, t + 2)->kind == PGD_TENSOR_BUFFER)
            lo = 0.5f, hi = 1.5f; /* a BN weight: its bias, then its running_mean follow */
        else
            continue;
        float *host = host_alloc(ti->count);
        fill_uniform(host, ti->count, seed + (uint64_t)t, lo, hi);
        float *base = ti->kind == PGD_TENSOR_PARAM ? pgd_net_params(net) : pgd_net_buffers(net);
        be->ops->upload(be, base + ti->offset, host, ti->count * sizeof(float));
        free(host);
    }
}

/* Frozen BN: the forward is the eval forward byte for byte and moves no statistics or counters; its backward
 * (gamma, beta and the input through the fixed affine map) matches central differences. */
static void test_frozen_bn(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = tiny_resnet(be, 91);
    move_bn(net, 92);
    enum { IN = 3 * 12 * 12, OUT = 5 };
    float *xh = random_input(3 * IN, 93), ye[3 * OUT], yf[3 * OUT];
    float *xd = dev_alloc(be, 3 * IN);
    be->ops->upload(be, xd, xh, 3 * IN * sizeof(float));
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 3, &err), 0);
    size_t nb = pgd_net_buffer_count(net), nc = 0;
    for (int t = 0; t < pgd_net_tensor_count(net); t++)
        nc += pgd_net_tensor(net, t)->kind == PGD_TENSOR_COUNTER;
    float *buf0 = host_alloc(nb), *buf1 = host_alloc(nb);
    int64_t cnt0[8];
    CU_ASSERT_FATAL(nc <= 8);
    be->ops->download(be, buf0, pgd_net_buffers(net), nb * sizeof(float));
    memcpy(cnt0, pgd_net_counters(net), nc * sizeof(int64_t));
    be->ops->download(be, ye, pgd_net_forward(net, xd, 3, PGD_NET_EVAL, 4, &err), sizeof ye);
    be->ops->download(be, yf, pgd_net_forward(net, xd, 3, PGD_NET_FROZEN_BN, 4, &err), sizeof yf);
    CU_ASSERT_EQUAL(memcmp(ye, yf, sizeof ye), 0);
    CU_ASSERT_EQUAL(pgd_net_backward(net, xd, NULL, &err), 0); /* allowed after a frozen forward */
    be->ops->download(be, buf1, pgd_net_buffers(net), nb * sizeof(float));
    CU_ASSERT_EQUAL(memcmp(buf0, buf1, nb * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(cnt0, pgd_net_counters(net), nc * sizeof(int64_t)), 0);
    fd_check_mode("tiny resnet, frozen BN, batch 3", net, 3, xh, 94, 6, 24, PGD_NET_FROZEN_BN);
    be->ops->download(be, buf1, pgd_net_buffers(net), nb * sizeof(float));
    CU_ASSERT_EQUAL(memcmp(buf0, buf1, nb * sizeof(float)), 0);
    free(xh);
    free(buf0);
    free(buf1);
    be->ops->free(be, xd);
    pgd_net_free(&net);
    pgd_backend_free(&be);

    be = backend();
    net = tiny_mobilenet(be, 95);
    move_bn(net, 96);
    xh = random_input(2 * 3 * 8 * 8, 97);
    fd_check_mode("tiny mobilenet block, frozen BN, batch 2", net, 2, xh, 98, 6, 24, PGD_NET_FROZEN_BN);
    free(xh);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* A batch run in parts (pgd_net_forward_part) in frozen-BN mode: each part's outputs are the whole batch's
 * rows byte for byte, dropout masks included, and so are the input gradients; the parameter gradients summed
 * over the parts equal the whole batch's up to the order of the float sums. */
static void test_forward_part(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    int x = pgd_net_input(net, 4, 5, 5);
    x = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, x, "c", 6, 3, 1, 1, 1, 0), "b"), 0);
    x = pgd_net_dropout2d(net, x, 0.4f);
    x = pgd_net_dropout2d(net, pgd_net_global_avgpool(net, x), 0.3f);
    pgd_net_linear(net, x, "fc", 3, 1);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(net, 101, &err), 0);
    move_bn(net, 102);
    enum { NS = 7, IN = 4 * 5 * 5, OUT = 3 };
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, NS, &err), 0);
    float *xh = random_input(NS * IN, 103), rh[NS * OUT], yall[NS * OUT], ypart[NS * OUT];
    float *dall = host_alloc(NS * IN), *dpart = host_alloc(NS * IN);
    fill_uniform(rh, NS * OUT, 104, -1, 1);
    float *xd = dev_alloc(be, NS * IN), *rd = dev_alloc(be, NS * OUT), *dd = dev_alloc(be, NS * IN);
    be->ops->upload(be, xd, xh, NS * IN * sizeof(float));
    be->ops->upload(be, rd, rh, sizeof rh);
    size_t pc = pgd_net_param_count(net);
    float *gall = host_alloc(pc);
    pgd_net_zero_grad(net);
    be->ops->download(be, yall, pgd_net_forward(net, xd, NS, PGD_NET_FROZEN_BN, 5, &err), sizeof yall);
    CU_ASSERT_EQUAL_FATAL(pgd_net_backward(net, rd, dd, &err), 0);
    be->ops->download(be, dall, dd, NS * IN * sizeof(float));
    be->ops->download(be, gall, pgd_net_grads(net), pc * sizeof(float));
    pgd_net_zero_grad(net);
    const int parts[4] = {0, 3, 4, NS};
    for (int k = 0; k < 3; k++) {
        int first = parts[k], n = parts[k + 1] - first;
        const float *y = pgd_net_forward_part(net, xd + first * IN, n, first, PGD_NET_FROZEN_BN, 5, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        be->ops->download(be, ypart + first * OUT, y, (size_t)n * OUT * sizeof(float));
        CU_ASSERT_EQUAL_FATAL(pgd_net_backward(net, rd + first * OUT, dd + first * IN, &err), 0);
    }
    be->ops->download(be, dpart, dd, NS * IN * sizeof(float));
    CU_ASSERT_EQUAL(memcmp(yall, ypart, sizeof yall), 0);
    /* The input gradients are byte for byte the whole batch's where the BLAS sums a sample alike in any batch
     * size; OpenBLAS's AVX-512 kernels take another path for small matrices, so there they are bounded. */
    double dworst = 0, dscale = 0;
    for (size_t i = 0; i < NS * IN; i++) {
        dworst = fmax(dworst, fabs((double)dpart[i] - dall[i]));
        dscale = fmax(dscale, fabs((double)dall[i]));
    }
    int dsame = memcmp(dall, dpart, NS * IN * sizeof(float)) == 0;
    CU_ASSERT(dworst <= 1e-6 * dscale);
    const float *gpart = pgd_net_grads(net);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < pc; i++) {
        worst = fmax(worst, fabs((double)gpart[i] - gall[i]));
        scale = fmax(scale, fabs((double)gall[i]));
    }
    printf("\n  forward in parts 3 + 1 + 3: outputs equal; input gradients %s (max |diff| %.2e of max %.2e); "
           "parameter gradients max |diff| %.2e of max %.2e", dsame ? "equal" : "differ", dworst, dscale, worst,
           scale);
    CU_ASSERT(worst <= 1e-6 * scale);
    /* the masks depend on the position: sample 3 run as sample 0 of its own batch gets other ones */
    float y0[OUT];
    be->ops->download(be, y0, pgd_net_forward_part(net, xd + 3 * IN, 1, 0, PGD_NET_FROZEN_BN, 5, &err), sizeof y0);
    CU_ASSERT_NOT_EQUAL(memcmp(y0, yall + 3 * OUT, sizeof y0), 0);
    /* what the part's seed relies on: seed + k * 0x9E3779B97F4A7C15 draws for e what seed draws for e + k */
    for (uint64_t k = 0; k < 50; k += 7)
        for (uint64_t e = 0; e < 20; e++)
            CU_ASSERT_EQUAL(pgd_hash_uniform(12345 + k * 0x9E3779B97F4A7C15ull, e), pgd_hash_uniform(12345, e + k));
    CU_ASSERT_PTR_NULL(pgd_net_forward_part(net, xd, 1, -1, PGD_NET_FROZEN_BN, 5, &err));
    free(xh);
    free(dall);
    free(dpart);
    free(gall);
    be->ops->free(be, xd);
    be->ops->free(be, rd);
    be->ops->free(be, dd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* --- gradients buffer, initialisation, planning ------------------------------------------------------------ */

static void test_zero_grad_accumulate(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = tiny_resnet(be, 71);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 2, &err), 0);
    size_t pc = pgd_net_param_count(net);
    float *xh = random_input(2 * 3 * 12 * 12, 72), rh[10];
    fill_uniform(rh, 10, 73, -1, 1);
    float *xd = dev_alloc(be, 2 * 3 * 12 * 12), *rd = dev_alloc(be, 10);
    be->ops->upload(be, xd, xh, 2 * 3 * 12 * 12 * sizeof(float));
    be->ops->upload(be, rd, rh, sizeof rh);
    float *g1 = host_alloc(pc), *g2 = host_alloc(pc);
    /* finish leaves the gradients at zero */
    be->ops->download(be, g1, pgd_net_grads(net), pc * sizeof(float));
    int zero = 1;
    for (size_t i = 0; i < pc; i++)
        zero &= g1[i] == 0;
    CU_ASSERT(zero);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT_EQUAL(pgd_net_backward(net, rd, NULL, &err), 0);
    be->ops->download(be, g1, pgd_net_grads(net), pc * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_forward(net, xd, 2, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT_EQUAL(pgd_net_backward(net, rd, NULL, &err), 0);
    be->ops->download(be, g2, pgd_net_grads(net), pc * sizeof(float));
    size_t nonzero = 0;
    int doubled = 1;
    for (size_t i = 0; i < pc; i++) {
        nonzero += g1[i] != 0;
        doubled &= fabsf(g2[i] - 2 * g1[i]) <= 1e-6f * (1 + fabsf(g1[i]));
    }
    CU_ASSERT(nonzero > pc / 2);
    CU_ASSERT(doubled);
    pgd_net_zero_grad(net);
    be->ops->download(be, g2, pgd_net_grads(net), pc * sizeof(float));
    zero = 1;
    for (size_t i = 0; i < pc; i++)
        zero &= g2[i] == 0;
    CU_ASSERT(zero);
    free(xh);
    free(g1);
    free(g2);
    be->ops->free(be, xd);
    be->ops->free(be, rd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

static float *download_params(pgd_net *net)
{
    pgd_backend *be = pgd_net_backend(net);
    size_t pc = pgd_net_param_count(net);
    float *p = host_alloc(pc);
    be->ops->download(be, p, pgd_net_params(net), pc * sizeof(float));
    return p;
}

static void test_init_deterministic(void)
{
    pgd_backend *be = backend();
    pgd_net *a = tiny_resnet(be, 5), *b = tiny_resnet(be, 5), *c = tiny_resnet(be, 6);
    size_t pc = pgd_net_param_count(a);
    float *pa = download_params(a), *pb = download_params(b), *pc6 = download_params(c);
    CU_ASSERT_EQUAL(memcmp(pa, pb, pc * sizeof(float)), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(pa, pc6, pc * sizeof(float)), 0);
    /* re-initialising with the first seed gives the same values back */
    CU_ASSERT_EQUAL(pgd_net_init(c, 5, NULL), 0);
    float *again = download_params(c);
    CU_ASSERT_EQUAL(memcmp(pa, again, pc * sizeof(float)), 0);
    /* each tensor draws from its own stream: a net with a layer more starts with the same tensors */
    pgd_err err = PGD_ERR_INIT;
    pgd_net *d = pgd_net_new(be, &err), *e = pgd_net_new(be, &err);
    int x = pgd_net_input(d, 3, 6, 6);
    pgd_net_conv(d, x, "c", 4, 3, 1, 1, 1, 1);
    x = pgd_net_input(e, 3, 6, 6);
    pgd_net_conv(e, pgd_net_conv(e, x, "c", 4, 3, 1, 1, 1, 1), "c2", 4, 3, 1, 1, 1, 1);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(d, 9, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_net_finish(e, 9, &err), 0);
    float *pd = download_params(d), *pe = download_params(e);
    CU_ASSERT_EQUAL(memcmp(pd, pe, pgd_net_param_count(d) * sizeof(float)), 0);
    /* PyTorch's default: conv weight and bias within 1/sqrt(fan_in) = 1/sqrt(27) */
    double bound = 1 / sqrt(27.0), m = 0;
    for (size_t i = 0; i < pgd_net_param_count(d); i++)
        m = fmax(m, fabs(pd[i]));
    CU_ASSERT(m <= bound && m > 0.8 * bound);
    free(pa);
    free(pb);
    free(pc6);
    free(again);
    free(pd);
    free(pe);
    pgd_net_free(&a);
    pgd_net_free(&b);
    pgd_net_free(&c);
    pgd_net_free(&d);
    pgd_net_free(&e);
    pgd_backend_free(&be);
}

static void test_plan_and_forward_limits(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = tiny_resnet(be, 81);
    float *xd = dev_alloc(be, 5 * 3 * 12 * 12);
    CU_ASSERT_PTR_NULL(pgd_net_forward(net, xd, 1, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT(strstr(err.msg, "before pgd_net_plan") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_net_backward(net, xd, NULL, &err), -1);
    CU_ASSERT(strstr(err.msg, "without a forward") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_net_plan(net, 2, &err), 0);
    size_t bytes2 = pgd_net_bytes(net);
    CU_ASSERT_EQUAL(pgd_net_plan(net, 1, &err), 0); /* a smaller batch fits already */
    CU_ASSERT_EQUAL(pgd_net_bytes(net), bytes2);
    CU_ASSERT_EQUAL(pgd_net_plan(net, 4, &err), 0);
    CU_ASSERT(pgd_net_bytes(net) > bytes2);
    CU_ASSERT_PTR_NOT_NULL(pgd_net_forward(net, xd, 4, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT_PTR_NULL(pgd_net_forward(net, xd, 5, PGD_NET_TRAIN, 0, &err));
    CU_ASSERT(strstr(err.msg, "5 samples, planned for 1..4") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_net_plan(net, 0, &err), -1);
    be->ops->free(be, xd);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* Forward-only nets: outputs in buffers shared by liveness, no gradients. For a tiny ResNet, resnet18 and
 * mobilenet_v2 (residual adds, in-place ReLUs, ReLU6, the classifier's dropout): the plan holds what
 * pgd_net_plan_bytes says, far under a full plan; every forward (eval, train, frozen BN) gives the full net's
 * output bit for bit, and the classifier's input stays readable; backward is refused. */
static void test_forward_only(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    for (int k = 0; k < 3; k++) {
        const char *arch = k == 0 ? "tiny_resnet" : k == 1 ? "resnet18" : "mobilenet_v2";
        int size = k == 0 ? 12 : 32;
        pgd_net *full = k == 0 ? tiny_resnet(be, 81) : pgd_model_build(be, arch, size, 10, 81, &err);
        pgd_net *fwd = k == 0 ? tiny_resnet(be, 81) : pgd_model_build(be, arch, size, 10, 81, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(full);
        CU_ASSERT_PTR_NOT_NULL_FATAL(fwd);
        CU_ASSERT_EQUAL(pgd_net_plan(fwd, 2, &err), 0); /* a plan made before is released */
        pgd_net_forward_only(fwd);
        CU_ASSERT_EQUAL(pgd_net_bytes(fwd), pgd_net_bytes(full));
        CU_ASSERT_EQUAL(pgd_net_plan(full, 4, &err), 0);
        CU_ASSERT_EQUAL(pgd_net_plan(fwd, 4, &err), 0);
        size_t act_full = pgd_net_plan_bytes(full, 4, NULL), act_fwd = pgd_net_plan_bytes(fwd, 4, NULL);
        CU_ASSERT_EQUAL(pgd_net_bytes(full) - act_full, pgd_net_bytes(fwd) - act_fwd);
        CU_ASSERT_TRUE(act_fwd < act_full / 2);
        printf("\n  %-12s 4 samples: activations %zu bytes, forward only %zu", arch, act_full, act_fwd);
        int c, h, w, feat = pgd_net_node_count(full) - 2;
        pgd_net_node_shape(full, feat, &c, &h, &w);
        size_t count = 4 * 3 * (size_t)size * size, out = 4 * pgd_net_out_count(full), nf = 4 * (size_t)c * h * w;
        float *xh = host_alloc(count), *a = host_alloc(out), *b = host_alloc(out);
        float *fa = host_alloc(nf), *fb = host_alloc(nf);
        fill_uniform(xh, count, 3, -1.0f, 1.0f);
        float *xd = dev_alloc(be, count);
        be->ops->upload(be, xd, xh, count * sizeof(float));
        static const pgd_net_mode modes[] = {PGD_NET_EVAL, PGD_NET_TRAIN, PGD_NET_FROZEN_BN};
        for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
            const float *ya = pgd_net_forward(full, xd, 4, modes[m], 5, &err);
            const float *yb = pgd_net_forward(fwd, xd, 4, modes[m], 5, &err);
            CU_ASSERT_PTR_NOT_NULL_FATAL(ya);
            CU_ASSERT_PTR_NOT_NULL_FATAL(yb);
            CU_ASSERT_PTR_NOT_NULL_FATAL(pgd_net_node_output(fwd, feat));
            be->ops->download(be, a, ya, out * sizeof(float));
            be->ops->download(be, b, yb, out * sizeof(float));
            be->ops->download(be, fa, pgd_net_node_output(full, feat), nf * sizeof(float));
            be->ops->download(be, fb, pgd_net_node_output(fwd, feat), nf * sizeof(float));
            CU_ASSERT_EQUAL(memcmp(a, b, out * sizeof(float)), 0);
            CU_ASSERT_EQUAL(memcmp(fa, fb, nf * sizeof(float)), 0);
        }
        int reused = 0;
        for (int i = 1; i < pgd_net_node_count(fwd); i++)
            reused += pgd_net_node_output(fwd, i) == NULL;
        CU_ASSERT_TRUE(reused > 0); /* early outputs were overwritten: NULL, not stale data */
        CU_ASSERT_EQUAL(pgd_net_backward(fwd, xd, NULL, &err), -1);
        CU_ASSERT(strstr(err.msg, "forward only") != NULL);
        pgd_err_clear(&err);
        be->ops->free(be, xd);
        free(xh), free(a), free(b), free(fa), free(fb);
        pgd_net_free(&full), pgd_net_free(&fwd);
    }
    pgd_backend_free(&be);
}

/* --- building errors: each case breaks one call; finish reports the first error ----------------------- */

typedef struct build_case {
    int which;
    const char *want;
} build_case;

static void build_bad(pgd_net *net, int which)
{
    int x = pgd_net_input(net, 4, 8, 8);
    int c = pgd_net_conv(net, x, "c", 6, 3, 1, 1, 1, 0);
    switch (which) {
    case 0: pgd_net_conv(net, x, "g", 6, 3, 1, 1, 3, 0); break;        /* groups 3 do not divide 4 channels */
    case 1: pgd_net_conv(net, x, "c", 6, 3, 1, 1, 1, 0); break;        /* duplicate name */
    case 2: pgd_net_add(net, x, c); break;                             /* shapes differ */
    case 3: pgd_net_bn(net, 17, "b"); break;                           /* no such node */
    case 4: pgd_net_dropout2d(net, c, 1.0f); break;
    case 5: pgd_net_input(net, 3, 8, 8); break;
    case 6: pgd_net_maxpool(net, c, 9, 1, 0); break;                   /* window larger than the input */
    case 7: pgd_net_conv(net, c, "k", 2, 11, 1, 1, 1, 0); break;       /* kernel larger than the padded input */
    case 8: pgd_net_relu(net, c, -1); break;
    case 9: pgd_net_linear(net, c, "fc", 0, 1); break;
    case 10: pgd_net_conv(net, x, "a.very.long.name.repeated.a.very.long.name.repeated.a.very.long.name.repeated."
                                  "a.very.long.name.repeated.a.very.long.name.repeated", 2, 1, 1, 0, 1, 0); break;
    default: break;
    }
    pgd_net_relu(net, c, 0); /* ignored once an error is set */
}

static void test_build_errors(void)
{
    static const build_case cases[] = {
        {0, "conv g on [4, 8, 8]"},
        {1, "duplicate tensor name c.weight"},
        {2, "add of nodes 0 [4, 8, 8] and 1 [6, 8, 8]"},
        {3, "bn input 17 is not a node"},
        {4, "dropout probability 1 is outside [0, 1)"},
        {5, "a second input node"},
        {6, "maxpool on [6, 8, 8]"},
        {7, "conv k on [6, 8, 8]"},
        {8, "relu cap -1 is negative"},
        {9, "linear fc"},
        {10, "is longer than 127 bytes"},
    };
    pgd_backend *be = backend();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgd_err err = PGD_ERR_INIT;
        pgd_net *net = pgd_net_new(be, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(net);
        build_bad(net, cases[i].which);
        CU_ASSERT_EQUAL(pgd_net_finish(net, 1, &err), -1);
        if (!strstr(err.msg, cases[i].want))
            printf("\n  case %d: got \"%s\", want \"%s\"", cases[i].which, err.msg, cases[i].want);
        CU_ASSERT(strstr(err.msg, cases[i].want) != NULL);
        CU_ASSERT(strstr(err.msg, "net: ") == err.msg);
        pgd_net_free(&net);
    }
    /* no input, nothing after the input, building after finish */
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_net_new(be, &err);
    CU_ASSERT_EQUAL(pgd_net_finish(net, 1, &err), -1);
    CU_ASSERT(strstr(err.msg, "no input node") != NULL);
    pgd_net_free(&net);
    pgd_err_clear(&err);
    net = pgd_net_new(be, &err);
    pgd_net_input(net, 1, 1, 1);
    CU_ASSERT_EQUAL(pgd_net_finish(net, 1, &err), -1);
    CU_ASSERT(strstr(err.msg, "no layer after the input") != NULL);
    pgd_net_free(&net);
    pgd_err_clear(&err);
    net = pgd_net_new(be, &err);
    int x = pgd_net_input(net, 1, 4, 4);
    CU_ASSERT(pgd_net_relu(net, x, 0) == 1);
    CU_ASSERT_EQUAL(pgd_net_finish(net, 1, &err), 0);
    CU_ASSERT_EQUAL(pgd_net_relu(net, x, 0), -1);
    CU_ASSERT_EQUAL(pgd_net_finish(net, 1, &err), -1);
    CU_ASSERT(strstr(err.msg, "relu added after pgd_net_finish") != NULL);
    pgd_net_free(&net);
    CU_ASSERT_PTR_NULL(pgd_net_new(NULL, &err));
    pgd_backend_free(&be);
}

static const pgd_test_case cases[] = {
    {"grad_resnet", test_grad_resnet},
    {"grad_mobilenet", test_grad_mobilenet},
    {"grad_head", test_grad_head},
    {"grad_shared", test_grad_shared},
    {"add_same_node", test_add_same_node},
    {"bn_running_stats", test_bn_running_stats},
    {"train_eval", test_train_eval},
    {"dropout", test_dropout},
    {"frozen_bn", test_frozen_bn},
    {"forward_part", test_forward_part},
    {"zero_grad_accumulate", test_zero_grad_accumulate},
    {"init_deterministic", test_init_deterministic},
    {"plan_and_forward_limits", test_plan_and_forward_limits},
    {"forward_only", test_forward_only},
    {"build_errors", test_build_errors},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("net", cases, argc, argv);
}
