/* test_models.c: the architectures against torchvision (parameter counts, state_dict names and shapes,
 * initialisation), output shapes for several input sizes, the PatchGD head for several grids. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "trainer/model.h"

static pgd_backend *backend(void)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    return be;
}

/* Tensor `name` exists with the given kind and shape. */
static void check_tensor(const pgd_net *net, const char *name, pgd_tensor_kind kind, int ndim, int64_t d0,
                         int64_t d1, int64_t d2, int64_t d3)
{
    int i = pgd_net_find(net, name);
    if (i < 0) {
        printf("\n  missing tensor %s\n", name);
        CU_FAIL("tensor missing");
        return;
    }
    const pgd_tensor_info *t = pgd_net_tensor(net, i);
    int64_t want[4] = {d0, d1, d2, d3};
    CU_ASSERT_STRING_EQUAL(t->name, name);
    CU_ASSERT_EQUAL(t->kind, kind);
    CU_ASSERT_EQUAL(t->ndim, ndim);
    size_t count = 1;
    for (int k = 0; k < ndim; k++) {
        CU_ASSERT_EQUAL(t->shape[k], want[k]);
        count *= (size_t)want[k];
    }
    CU_ASSERT_EQUAL(t->count, count);
}

/* Counts tensors by kind and checks that params and buffers tile their buffers in order without gaps. */
static void check_layout(const pgd_net *net, int *entries)
{
    size_t next[3] = {0, 0, 0};
    *entries = pgd_net_tensor_count(net);
    for (int i = 0; i < *entries; i++) {
        const pgd_tensor_info *t = pgd_net_tensor(net, i);
        CU_ASSERT_EQUAL(t->offset, next[t->kind]);
        next[t->kind] += t->count;
    }
    CU_ASSERT_EQUAL(next[PGD_TENSOR_PARAM], pgd_net_param_count(net));
    CU_ASSERT_EQUAL(next[PGD_TENSOR_BUFFER], pgd_net_buffer_count(net));
}

static void check_arch(pgd_backend *be, const char *arch, int out, size_t params, int entries)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_model_build(be, arch, 64, out, 1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    int got = 0;
    check_layout(net, &got);
    printf("\n  %s out %d: %zu params (want %zu), %d entries (want %d)", arch, out, pgd_net_param_count(net), params,
           got, entries);
    CU_ASSERT_EQUAL(pgd_net_param_count(net), params);
    CU_ASSERT_EQUAL(got, entries);
    pgd_net_free(&net);
    CU_ASSERT_PTR_NULL(net);
}

static void test_param_counts(void)
{
    pgd_backend *be = backend();
    check_arch(be, "resnet18", 1000, 11689512, 122);
    check_arch(be, "resnet34", 1000, 21797672, 218);
    check_arch(be, "resnet50", 1000, 25557032, 320);
    check_arch(be, "mobilenet_v2", 1000, 3504872, 314);
    /* small_cnn: 3x3 convs 3->16->32->64->128, four BNs, fc 128 -> 10 */
    check_arch(be, "small_cnn", 10, 432 + 4608 + 18432 + 73728 + 2 * (16 + 32 + 64 + 128) + 1290, 4 * 6 + 2);
    pgd_backend_free(&be);
}

static void test_resnet_names(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    /* the PatchGD backbone: torchvision's ResNet-50 with fc = Linear(2048 -> 256) */
    pgd_net *r50 = pgd_model_build(be, "resnet50", 64, 256, 2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r50);
    CU_ASSERT_EQUAL(pgd_net_param_count(r50), 25557032 - 2048 * 1000 - 1000 + 2048 * 256 + 256);
    CU_ASSERT_EQUAL(pgd_net_tensor_count(r50), 320);
    CU_ASSERT_STRING_EQUAL(pgd_net_tensor(r50, 0)->name, "conv1.weight");
    CU_ASSERT_STRING_EQUAL(pgd_net_tensor(r50, 1)->name, "bn1.weight");
    CU_ASSERT_STRING_EQUAL(pgd_net_tensor(r50, 5)->name, "bn1.num_batches_tracked");
    CU_ASSERT_STRING_EQUAL(pgd_net_tensor(r50, 319)->name, "fc.bias");
    check_tensor(r50, "conv1.weight", PGD_TENSOR_PARAM, 4, 64, 3, 7, 7);
    check_tensor(r50, "bn1.running_var", PGD_TENSOR_BUFFER, 1, 64, 0, 0, 0);
    check_tensor(r50, "bn1.num_batches_tracked", PGD_TENSOR_COUNTER, 0, 0, 0, 0, 0);
    check_tensor(r50, "layer1.0.conv1.weight", PGD_TENSOR_PARAM, 4, 64, 64, 1, 1);
    check_tensor(r50, "layer1.0.conv3.weight", PGD_TENSOR_PARAM, 4, 256, 64, 1, 1);
    check_tensor(r50, "layer1.0.downsample.0.weight", PGD_TENSOR_PARAM, 4, 256, 64, 1, 1);
    check_tensor(r50, "layer1.0.downsample.1.running_mean", PGD_TENSOR_BUFFER, 1, 256, 0, 0, 0);
    check_tensor(r50, "layer2.0.conv2.weight", PGD_TENSOR_PARAM, 4, 128, 128, 3, 3);
    check_tensor(r50, "layer3.5.bn3.bias", PGD_TENSOR_PARAM, 1, 1024, 0, 0, 0);
    check_tensor(r50, "layer4.2.conv3.weight", PGD_TENSOR_PARAM, 4, 2048, 512, 1, 1);
    check_tensor(r50, "fc.weight", PGD_TENSOR_PARAM, 2, 256, 2048, 0, 0);
    check_tensor(r50, "fc.bias", PGD_TENSOR_PARAM, 1, 256, 0, 0, 0);
    CU_ASSERT_EQUAL(pgd_net_find(r50, "layer1.1.downsample.0.weight"), -1);
    CU_ASSERT_EQUAL(pgd_net_find(r50, "layer1.0.conv1.bias"), -1);
    pgd_net_free(&r50);

    pgd_net *r18 = pgd_model_build(be, "resnet18", 64, 1000, 2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r18);
    check_tensor(r18, "layer1.1.conv2.weight", PGD_TENSOR_PARAM, 4, 64, 64, 3, 3);
    check_tensor(r18, "layer2.0.downsample.0.weight", PGD_TENSOR_PARAM, 4, 128, 64, 1, 1);
    check_tensor(r18, "layer4.1.bn2.running_var", PGD_TENSOR_BUFFER, 1, 512, 0, 0, 0);
    check_tensor(r18, "fc.weight", PGD_TENSOR_PARAM, 2, 1000, 512, 0, 0);
    CU_ASSERT_EQUAL(pgd_net_find(r18, "layer1.0.downsample.0.weight"), -1);
    CU_ASSERT_EQUAL(pgd_net_find(r18, "layer1.0.conv3.weight"), -1);
    pgd_net_free(&r18);
    pgd_backend_free(&be);
}

static void test_mobilenet_names(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_model_build(be, "mobilenet_v2", 64, 1000, 3, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    CU_ASSERT_STRING_EQUAL(pgd_net_tensor(net, 0)->name, "features.0.0.weight");
    check_tensor(net, "features.0.0.weight", PGD_TENSOR_PARAM, 4, 32, 3, 3, 3);
    check_tensor(net, "features.0.1.running_mean", PGD_TENSOR_BUFFER, 1, 32, 0, 0, 0);
    check_tensor(net, "features.1.conv.0.0.weight", PGD_TENSOR_PARAM, 4, 32, 1, 3, 3);
    check_tensor(net, "features.1.conv.1.weight", PGD_TENSOR_PARAM, 4, 16, 32, 1, 1);
    check_tensor(net, "features.1.conv.2.weight", PGD_TENSOR_PARAM, 1, 16, 0, 0, 0);
    check_tensor(net, "features.2.conv.0.0.weight", PGD_TENSOR_PARAM, 4, 96, 16, 1, 1);
    check_tensor(net, "features.2.conv.1.0.weight", PGD_TENSOR_PARAM, 4, 96, 1, 3, 3);
    check_tensor(net, "features.2.conv.2.weight", PGD_TENSOR_PARAM, 4, 24, 96, 1, 1);
    check_tensor(net, "features.2.conv.3.num_batches_tracked", PGD_TENSOR_COUNTER, 0, 0, 0, 0, 0);
    check_tensor(net, "features.17.conv.2.weight", PGD_TENSOR_PARAM, 4, 320, 960, 1, 1);
    check_tensor(net, "features.18.0.weight", PGD_TENSOR_PARAM, 4, 1280, 320, 1, 1);
    check_tensor(net, "features.18.1.bias", PGD_TENSOR_PARAM, 1, 1280, 0, 0, 0);
    check_tensor(net, "classifier.1.weight", PGD_TENSOR_PARAM, 2, 1000, 1280, 0, 0);
    check_tensor(net, "classifier.1.bias", PGD_TENSOR_PARAM, 1, 1000, 0, 0, 0);
    CU_ASSERT_EQUAL(pgd_net_find(net, "features.19.0.weight"), -1);
    CU_ASSERT_EQUAL(pgd_net_find(net, "features.1.conv.3.weight"), -1);
    pgd_net_free(&net);
    pgd_backend_free(&be);
}

/* Mean and standard deviation of a tensor's values, and its largest magnitude. */
static void tensor_stats(pgd_net *net, const char *name, double *mean, double *sd, double *maxabs)
{
    const pgd_tensor_info *t = pgd_net_tensor(net, pgd_net_find(net, name));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    float *host = malloc(t->count * sizeof *host);
    CU_ASSERT_PTR_NOT_NULL_FATAL(host);
    pgd_backend *be = pgd_net_backend(net);
    const float *base = t->kind == PGD_TENSOR_PARAM ? pgd_net_params(net) : pgd_net_buffers(net);
    be->ops->download(be, host, base + t->offset, t->count * sizeof *host);
    double s = 0, s2 = 0, m = 0;
    for (size_t i = 0; i < t->count; i++) {
        s += host[i];
        s2 += (double)host[i] * host[i];
        m = fabs(host[i]) > m ? fabs(host[i]) : m;
    }
    *mean = s / (double)t->count;
    *sd = sqrt(s2 / (double)t->count - *mean * *mean);
    *maxabs = m;
    free(host);
}

static void test_init_distributions(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    double mean, sd, maxabs;
    pgd_net *r18 = pgd_model_build(be, "resnet18", 32, 1000, 5, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r18);
    /* kaiming_normal fan_out: layer4.0.conv2 [512, 512, 3, 3], std sqrt(2 / (512 * 9)) = 0.02083 */
    tensor_stats(r18, "layer4.0.conv2.weight", &mean, &sd, &maxabs);
    CU_ASSERT(fabs(mean) < 0.0002);
    CU_ASSERT(fabs(sd / sqrt(2.0 / (512 * 9)) - 1) < 0.01);
    /* fc: PyTorch's Linear default, U(+-1/sqrt(512)): sd = bound / sqrt 3 */
    tensor_stats(r18, "fc.weight", &mean, &sd, &maxabs);
    CU_ASSERT(maxabs <= 1 / sqrt(512.0));
    CU_ASSERT(maxabs > 0.99 / sqrt(512.0));
    CU_ASSERT(fabs(sd / (1 / sqrt(512.0 * 3)) - 1) < 0.01);
    tensor_stats(r18, "fc.bias", &mean, &sd, &maxabs);
    CU_ASSERT(maxabs <= 1 / sqrt(512.0) && sd > 0.5 / sqrt(512.0 * 3));
    /* BN: weight 1, bias 0, running 0 / 1; the last BN of a block is not zeroed */
    tensor_stats(r18, "layer1.0.bn2.weight", &mean, &sd, &maxabs);
    CU_ASSERT(mean == 1 && sd == 0);
    tensor_stats(r18, "layer1.0.bn2.bias", &mean, &sd, &maxabs);
    CU_ASSERT(maxabs == 0);
    tensor_stats(r18, "bn1.running_var", &mean, &sd, &maxabs);
    CU_ASSERT(mean == 1 && sd == 0);
    tensor_stats(r18, "bn1.running_mean", &mean, &sd, &maxabs);
    CU_ASSERT(maxabs == 0);
    pgd_net_free(&r18);

    pgd_net *mb = pgd_model_build(be, "mobilenet_v2", 32, 1000, 5, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mb);
    /* classifier N(0, 0.01), bias 0; a depthwise conv [960, 1, 3, 3]: fan_out 960 * 9 */
    tensor_stats(mb, "classifier.1.weight", &mean, &sd, &maxabs);
    CU_ASSERT(fabs(sd / 0.01 - 1) < 0.01);
    tensor_stats(mb, "classifier.1.bias", &mean, &sd, &maxabs);
    CU_ASSERT(maxabs == 0);
    tensor_stats(mb, "features.17.conv.1.0.weight", &mean, &sd, &maxabs);
    CU_ASSERT(fabs(sd / sqrt(2.0 / (960 * 9)) - 1) < 0.05);
    pgd_net_free(&mb);
    pgd_backend_free(&be);
}

/* Forward one batch of n random inputs through a model; checks the output shape and that it is finite. */
static void check_forward(pgd_backend *be, const char *arch, int size, int out, int n, pgd_net_mode mode)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_model_build(be, arch, size, out, 7, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    int c, h, w;
    pgd_net_in_shape(net, &c, &h, &w);
    CU_ASSERT(c == 3 && h == size && w == size);
    pgd_net_out_shape(net, &c, &h, &w);
    CU_ASSERT(c == out && h == 1 && w == 1);
    CU_ASSERT_EQUAL(pgd_net_out_count(net), (size_t)out);
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, n, &err), 0);
    size_t in_count = (size_t)n * 3 * size * size;
    float *host = malloc(in_count * sizeof *host);
    CU_ASSERT_PTR_NOT_NULL_FATAL(host);
    for (size_t i = 0; i < in_count; i++)
        host[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    float *in = be->ops->alloc(be, in_count * sizeof *in);
    be->ops->upload(be, in, host, in_count * sizeof *in);
    const float *y = pgd_net_forward(net, in, n, mode, 3, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    be->ops->download(be, host, y, (size_t)n * out * sizeof *host);
    int finite = 1;
    double spread = 0;
    for (int i = 0; i < n * out; i++) {
        finite &= isfinite(host[i]) != 0;
        spread += fabs(host[i] - host[0]);
    }
    CU_ASSERT(finite);
    CU_ASSERT(spread > 0);
    CU_ASSERT(pgd_net_bytes(net) > 2 * pgd_net_param_count(net) * sizeof(float));
    if (mode == PGD_NET_TRAIN) {
        /* a backward through the whole model: finite gradients, every weight reached */
        float *dout = be->ops->alloc(be, (size_t)n * out * sizeof *dout);
        float *din = be->ops->alloc(be, in_count * sizeof *din);
        for (int i = 0; i < n * out; i++)
            host[i] = (float)(i % 3) - 1.0f;
        be->ops->upload(be, dout, host, (size_t)n * out * sizeof *host);
        CU_ASSERT_EQUAL(pgd_net_backward(net, dout, din, &err), 0);
        be->ops->download(be, host, din, in_count * sizeof *host);
        double sum = 0;
        for (size_t i = 0; i < in_count; i++)
            sum += fabs(host[i]);
        CU_ASSERT(isfinite(sum) && sum > 0);
        size_t pc = pgd_net_param_count(net);
        float *g = malloc(pc * sizeof *g);
        CU_ASSERT_PTR_NOT_NULL_FATAL(g);
        be->ops->download(be, g, pgd_net_grads(net), pc * sizeof *g);
        int untouched = 0;
        for (int t = 0; t < pgd_net_tensor_count(net); t++) {
            const pgd_tensor_info *ti = pgd_net_tensor(net, t);
            double mag = 0;
            for (size_t i = 0; ti->kind == PGD_TENSOR_PARAM && i < ti->count; i++)
                mag += fabs(g[ti->offset + i]);
            /* a BN bias before a 1x1 conv and another BN may get an exactly zero gradient (BN removes a
             * shift), but every conv and linear weight must be reached */
            if (ti->kind == PGD_TENSOR_PARAM && !(isfinite(mag) && (mag > 0 || ti->ndim < 2))) {
                printf("\n  %s: gradient of %s is %g", arch, ti->name, mag);
                untouched++;
            }
        }
        CU_ASSERT_EQUAL(untouched, 0);
        free(g);
        be->ops->free(be, dout);
        be->ops->free(be, din);
    }
    be->ops->free(be, in);
    free(host);
    pgd_net_free(&net);
}

static void test_output_shapes(void)
{
    pgd_backend *be = backend();
    check_forward(be, "resnet18", 32, 10, 2, PGD_NET_TRAIN);
    check_forward(be, "resnet18", 45, 1000, 1, PGD_NET_EVAL);
    check_forward(be, "resnet34", 33, 7, 1, PGD_NET_EVAL);
    check_forward(be, "resnet50", 49, 256, 2, PGD_NET_TRAIN);
    check_forward(be, "mobilenet_v2", 32, 1000, 2, PGD_NET_TRAIN);
    check_forward(be, "mobilenet_v2", 50, 3, 1, PGD_NET_EVAL);
    check_forward(be, "small_cnn", 32, 6, 3, PGD_NET_TRAIN);
    check_forward(be, "small_cnn", 96, 2, 1, PGD_NET_EVAL);
    pgd_backend_free(&be);
}

/* ceil(g / 2) three times: the grid after the head's three stride-2 convs. */
static int head_grid(int g)
{
    for (int i = 0; i < 3; i++)
        g = (g - 1) / 2 + 1;
    return g;
}

static void check_head(pgd_backend *be, int s, int m, int n, int width, int classes, int pool)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_model_head(be, s, m, n, width, 0.2f, pool, classes, 9, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    int flat = pool ? width : width * head_grid(m) * head_grid(n);
    CU_ASSERT_EQUAL(pgd_net_tensor_count(net), 4 * 7 + 2);
    check_tensor(net, "head.0.weight", PGD_TENSOR_PARAM, 4, width, s, 3, 3);
    check_tensor(net, "head.0.bias", PGD_TENSOR_PARAM, 1, width, 0, 0, 0);
    check_tensor(net, "head.2.running_mean", PGD_TENSOR_BUFFER, 1, width, 0, 0, 0);
    check_tensor(net, "head.4.weight", PGD_TENSOR_PARAM, 4, width, width, 3, 3);
    check_tensor(net, "head.14.num_batches_tracked", PGD_TENSOR_COUNTER, 0, 0, 0, 0, 0);
    check_tensor(net, "head.17.weight", PGD_TENSOR_PARAM, 2, classes, flat, 0, 0);
    check_tensor(net, "head.17.bias", PGD_TENSOR_PARAM, 1, classes, 0, 0, 0);
    size_t want = (size_t)(s * 9 + 1) * width + 3 * (size_t)(width * 9 + 1) * width + 4 * 2 * (size_t)width +
                  (size_t)(flat + 1) * classes;
    CU_ASSERT_EQUAL(pgd_net_param_count(net), want);
    int c, h, w;
    pgd_net_in_shape(net, &c, &h, &w);
    CU_ASSERT(c == s && h == m && w == n);
    CU_ASSERT_EQUAL(pgd_net_out_count(net), (size_t)classes);
    /* a train step (batch 2, so BN has two values per channel even on a 1 x 1 grid) and an eval pass */
    CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 2, &err), 0);
    size_t in_count = (size_t)2 * s * m * n;
    float *host = malloc((in_count + (size_t)2 * classes) * sizeof *host);
    CU_ASSERT_PTR_NOT_NULL_FATAL(host);
    for (size_t i = 0; i < in_count; i++)
        host[i] = (float)((i * 31) % 17) / 8.0f - 1.0f;
    float *in = be->ops->alloc(be, in_count * sizeof *in);
    be->ops->upload(be, in, host, in_count * sizeof *in);
    for (int mode = 0; mode < 2; mode++) {
        const float *y = pgd_net_forward(net, in, 2, mode ? PGD_NET_EVAL : PGD_NET_TRAIN, 1, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        be->ops->download(be, host, y, (size_t)2 * classes * sizeof *host);
        for (int i = 0; i < 2 * classes; i++)
            CU_ASSERT(isfinite(host[i]));
    }
    CU_ASSERT_EQUAL(pgd_net_counters(net)[0], 1);
    be->ops->free(be, in);
    free(host);
    pgd_net_free(&net);
}

static void test_head(void)
{
    pgd_backend *be = backend();
    for (int pool = 0; pool < 2; pool++) {
        check_head(be, 4, 1, 1, 8, 2, pool);
        check_head(be, 8, 3, 5, 16, 6, pool);
        check_head(be, 16, 16, 16, 32, 10, pool);
        check_head(be, 3, 1, 9, 4, 1, pool);
        check_head(be, 2, 7, 2, 5, 1000, pool);
    }
    /* the reference configuration: s 256, width 256, a 16 x 16 grid, 6 classes */
    pgd_err err = PGD_ERR_INIT;
    pgd_net *net = pgd_model_head(be, 256, 16, 16, 256, 0.2f, 0, 6, 1, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    check_tensor(net, "head.17.weight", PGD_TENSOR_PARAM, 2, 6, 256 * 2 * 2, 0, 0);
    pgd_net_free(&net);
    CU_ASSERT_PTR_NULL(pgd_model_head(be, 256, 0, 16, 256, 0.2f, 0, 6, 1, &err));
    CU_ASSERT(strstr(err.msg, "head") != NULL);
    pgd_backend_free(&be);
}

/* Logits (eval mode) of a head for a Z-block of zeros but for one 2 x 2 patch of features at (y, x). */
static void blob_logits(pgd_backend *be, pgd_net *net, int s, int g, int y, int x, float *out, int classes)
{
    pgd_err err = PGD_ERR_INIT;
    size_t count = (size_t)s * g * g;
    float *host = calloc(count, sizeof *host);
    CU_ASSERT_PTR_NOT_NULL_FATAL(host);
    for (int c = 0; c < s; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++)
                host[((size_t)c * g + y + dy) * g + x + dx] = (float)(c + 1) * (dy ? 2.0f : -3.0f) + 4.0f * (float)dx;
    float *in = be->ops->alloc(be, count * sizeof *in);
    be->ops->upload(be, in, host, count * sizeof *in);
    const float *logits = pgd_net_forward(net, in, 1, PGD_NET_EVAL, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(logits);
    be->ops->download(be, out, logits, (size_t)classes * sizeof *out);
    be->ops->free(be, in);
    free(host);
}

/* The pooled head cannot see where in the grid a pattern lies: moved between two places far enough from the
 * borders (the four 3x3 convs reach 4 cells), it gives the same logits; the flattening head does not. */
static void test_head_pool_position(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    enum { S = 3, G = 24, W = 8, K = 4 };
    for (int pool = 0; pool < 2; pool++) {
        pgd_net *net = pgd_model_head(be, S, G, G, W, 0.0f, pool, K, 17, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(net);
        CU_ASSERT_EQUAL_FATAL(pgd_net_plan(net, 1, &err), 0);
        float a[K], b[K];
        blob_logits(be, net, S, G, 6, 7, a, K);
        blob_logits(be, net, S, G, 14, 12, b, K);
        double diff = 0, mag = 0;
        for (int k = 0; k < K; k++) {
            diff = fmax(diff, fabs(a[k] - b[k]));
            mag = fmax(mag, fabs(a[k]));
        }
        printf("\n    %s head: largest logit change when the pattern moves: %.3g (logits up to %.3g) ",
               pool ? "pooled" : "flattening", diff, mag);
        CU_ASSERT(pool ? diff <= 1e-5 * (1 + mag) : diff > 1e-3);
        pgd_net_free(&net);
    }
    pgd_backend_free(&be);
}

static void test_errors(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_PTR_NULL(pgd_model_build(be, "resnet101", 224, 1000, 1, &err));
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT(strstr(err.msg, "resnet101") != NULL);
    for (int i = 0; pgd_model_archs[i]; i++)
        CU_ASSERT(strstr(err.msg, pgd_model_archs[i]) != NULL);
    CU_ASSERT_EQUAL(pgd_model_archs[5], NULL);
    printf("\n  %s", err.msg);
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_model_build(be, NULL, 224, 1000, 1, &err));
    CU_ASSERT(strstr(err.msg, "known: resnet18") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_model_build(be, "resnet18", 0, 1000, 1, &err));
    CU_ASSERT(strstr(err.msg, "size 0") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_model_build(be, "small_cnn", 32, 0, 1, &err));
    CU_ASSERT(strstr(err.msg, "outputs 0") != NULL);
    pgd_err_clear(&err);
    CU_ASSERT_PTR_NULL(pgd_model_resnet(be, 20, 32, 10, 1, &err));
    CU_ASSERT(strstr(err.msg, "depth 20") != NULL);
    pgd_backend_free(&be);
}

static void test_same_seed_same_model(void)
{
    pgd_backend *be = backend();
    pgd_err err = PGD_ERR_INIT;
    pgd_net *a = pgd_model_build(be, "small_cnn", 32, 5, 11, &err);
    pgd_net *b = pgd_model_build(be, "small_cnn", 32, 5, 11, &err);
    pgd_net *c = pgd_model_build(be, "small_cnn", 32, 5, 12, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    size_t count = pgd_net_param_count(a);
    /* the CPU backend's memory is host memory */
    CU_ASSERT_EQUAL(memcmp(pgd_net_params(a), pgd_net_params(b), count * sizeof(float)), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(pgd_net_params(a), pgd_net_params(c), count * sizeof(float)), 0);
    pgd_net_free(&a);
    pgd_net_free(&b);
    pgd_net_free(&c);
    pgd_backend_free(&be);
}

static const pgd_test_case cases[] = {
    {"param_counts", test_param_counts},
    {"resnet_names", test_resnet_names},
    {"mobilenet_names", test_mobilenet_names},
    {"init_distributions", test_init_distributions},
    {"output_shapes", test_output_shapes},
    {"head", test_head},
    {"head_pool_position", test_head_pool_position},
    {"errors", test_errors},
    {"same_seed_same_model", test_same_seed_same_model},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("models", cases, argc, argv);
}
