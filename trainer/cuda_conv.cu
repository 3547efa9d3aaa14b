/* cuda_conv.cu: 2-D convolution on the GPU with cuDNN: descriptors and algorithms chosen once per shape and
 * precision and cached, workspace from the backend's budgeted pool, groups (and depthwise) through the group
 * count; in bf16 / fp16 cuDNN runs on 16-bit copies staged by cuda_half.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cuda_int.h"

/* One conv shape in one precision: its descriptors and, per direction, the chosen algorithm and its workspace.
 * Algorithms are chosen by cuDNN's heuristics (no trial runs, so nothing is overwritten and no memory is
 * needed): the first suggestion that is deterministic, uses plain fp32 FMA (no TF32; in bf16 / fp16 also tensor
 * ops, which multiply the 16-bit values exactly and add in fp32), fits the workspace cap and whose workspace
 * size cuDNN confirms; failing that, the first non-deterministic one that does.
 * x, y and w have the precision's data type (the compute type is fp32 in all three); yf is y's layout in fp32,
 * for the bias add and the bias gradient, which stay fp32. */
struct pgd_cuda_conv {
    pgd_conv_shape sh;
    pgd_precision prec;
    cudnnTensorDescriptor_t x, y, yf, bias;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int have_fwd, have_bwd_data, have_bwd_filter;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
    struct pgd_cuda_conv *next;
};

static int same_shape(const pgd_conv_shape *a, const pgd_conv_shape *b)
{
    return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->k == b->k && a->r == b->r &&
           a->s == b->s && a->stride == b->stride && a->pad == b->pad && a->groups == b->groups;
}

static void entry_free(struct pgd_cuda_conv *e)
{
    if (e->x)
        cudnnDestroyTensorDescriptor(e->x);
    if (e->y)
        cudnnDestroyTensorDescriptor(e->y);
    if (e->yf)
        cudnnDestroyTensorDescriptor(e->yf);
    if (e->bias)
        cudnnDestroyTensorDescriptor(e->bias);
    if (e->w)
        cudnnDestroyFilterDescriptor(e->w);
    if (e->conv)
        cudnnDestroyConvolutionDescriptor(e->conv);
    free(e);
}

void pgd_cuda_conv_cache_free(pgd_backend *be)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    while (impl->convs) {
        struct pgd_cuda_conv *next = impl->convs->next;
        entry_free(impl->convs);
        impl->convs = next;
    }
}

/* The cached entry of this shape in the backend's precision, made (descriptors only) on first use; NULL with the
 * sticky error. */
static struct pgd_cuda_conv *conv_entry(pgd_backend *be, const pgd_conv_shape *sh)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    if (be->err.code)
        return NULL;
    for (struct pgd_cuda_conv **at = &impl->convs; *at; at = &(*at)->next)
        if (same_shape(&(*at)->sh, sh) && (*at)->prec == be->precision) {
            struct pgd_cuda_conv *e = *at; /* move to the front: a net repeats its shapes in order */
            *at = e->next;
            e->next = impl->convs;
            impl->convs = e;
            return e;
        }
    struct pgd_cuda_conv *e = (struct pgd_cuda_conv *)calloc(1, sizeof *e);
    if (!e) {
        CUDA_FAIL(be, PGD_ENOMEM, "cuda conv: out of host memory");
        return NULL;
    }
    e->sh = *sh;
    e->prec = be->precision;
    cudnnDataType_t type = e->prec == PGD_PREC_BF16 ? CUDNN_DATA_BFLOAT16
                         : e->prec == PGD_PREC_FP16 ? CUDNN_DATA_HALF
                                                    : CUDNN_DATA_FLOAT;
    cudnnMathType_t math = e->prec == PGD_PREC_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    int on = 0, oc = 0, oh = 0, ow = 0;
    if (DNN_CHECK(be, cudnnCreateTensorDescriptor(&e->x)) < 0 ||
        DNN_CHECK(be, cudnnCreateTensorDescriptor(&e->y)) < 0 ||
        DNN_CHECK(be, cudnnCreateTensorDescriptor(&e->yf)) < 0 ||
        DNN_CHECK(be, cudnnCreateTensorDescriptor(&e->bias)) < 0 ||
        DNN_CHECK(be, cudnnCreateFilterDescriptor(&e->w)) < 0 ||
        DNN_CHECK(be, cudnnCreateConvolutionDescriptor(&e->conv)) < 0)
        goto fail;
    if (DNN_CHECK(be, cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NCHW, type, sh->n, sh->c, sh->h, sh->w)) < 0 ||
        DNN_CHECK(be, cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NCHW, type, sh->n, sh->k, sh->oh, sh->ow)) < 0 ||
        DNN_CHECK(be, cudnnSetTensor4dDescriptor(e->yf, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, sh->n, sh->k, sh->oh,
                                                 sh->ow)) < 0 ||
        DNN_CHECK(be, cudnnSetTensor4dDescriptor(e->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, sh->k, 1, 1)) < 0 ||
        DNN_CHECK(be, cudnnSetFilter4dDescriptor(e->w, type, CUDNN_TENSOR_NCHW, sh->k, sh->c / sh->groups, sh->r,
                                                 sh->s)) < 0 ||
        DNN_CHECK(be, cudnnSetConvolution2dDescriptor(e->conv, sh->pad, sh->pad, sh->stride, sh->stride, 1, 1,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) < 0 ||
        DNN_CHECK(be, cudnnSetConvolutionGroupCount(e->conv, sh->groups)) < 0 ||
        DNN_CHECK(be, cudnnSetConvolutionMathType(e->conv, math)) < 0 ||
        DNN_CHECK(be, cudnnGetConvolution2dForwardOutputDim(e->conv, e->x, e->w, &on, &oc, &oh, &ow)) < 0)
        goto fail;
    if (on != sh->n || oc != sh->k || oh != sh->oh || ow != sh->ow) {
        CUDA_FAIL(be, PGD_EINVAL, "cuda conv: cuDNN computes output [%d, %d, %d, %d], the shape says [%d, %d, %d, %d]",
                  on, oc, oh, ow, sh->n, sh->k, sh->oh, sh->ow);
        goto fail;
    }
    e->next = impl->convs;
    impl->convs = e;
    return e;
fail:
    entry_free(e);
    return NULL;
}

/* fp32: plain FMA only (a tensor-op variant would be TF32). bf16 / fp16: tensor ops too, but never
 * CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (it may convert to another format). */
static int math_ok(cudnnMathType_t m, int half)
{
    return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH || (half && m == CUDNN_TENSOR_OP_MATH);
}

/* The usable suggestions in order of preference (see struct pgd_cuda_conv): their indices into perf, in
 * order[]; returns how many. */
template <typename Perf> static int candidates(const Perf *perf, int count, size_t cap, int half, int *order)
{
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < count; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > cap)
                continue;
            if (!math_ok(perf[i].mathType, half))
                continue;
            if ((perf[i].determinism == CUDNN_DETERMINISTIC) != (pass == 0))
                continue;
            order[k++] = i;
        }
    return k;
}

static int no_algorithm(pgd_backend *be, const char *dir, const struct pgd_cuda_conv *e, int suggested, int usable)
{
    char d[192];
    const pgd_conv_shape *sh = &e->sh;
    snprintf(d, sizeof d, "in [%d, %d, %d, %d] k %d kernel %dx%d stride %d pad %d groups %d (%s)", sh->n, sh->c,
             sh->h, sh->w, sh->k, sh->r, sh->s, sh->stride, sh->pad, sh->groups,
             e->prec == PGD_PREC_BF16 ? "bf16" : e->prec == PGD_PREC_FP16 ? "fp16" : "fp32");
    return CUDA_FAIL(be, PGD_EINVAL,
                     "cuda conv %s: no cuDNN algorithm for %s: %d suggested, %d %s within the %zu byte workspace "
                     "cap, none accepted", dir, d, suggested, usable,
                     e->prec == PGD_PREC_FP32 ? "plain fp32" : "fp32-accumulating", pgd_cuda(be)->ws_cap);
}

/* Each chooser asks the heuristics, then takes the first candidate whose workspace size cuDNN confirms. */
static int choose_fwd(pgd_backend *be, struct pgd_cuda_conv *e)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int count = 0, order[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    if (DNN_CHECK(be, cudnnGetConvolutionForwardAlgorithm_v7(impl->cudnn, e->x, e->w, e->conv, e->y,
                                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf)) < 0)
        return -1;
    int k = candidates(perf, count, impl->ws_cap, e->prec != PGD_PREC_FP32, order);
    for (int j = 0; j < k; j++) {
        size_t ws = 0;
        cudnnConvolutionFwdAlgo_t algo = perf[order[j]].algo;
        if (cudnnGetConvolutionForwardWorkspaceSize(impl->cudnn, e->x, e->w, e->conv, e->y, algo, &ws) ==
                CUDNN_STATUS_SUCCESS && ws <= impl->ws_cap) {
            e->fwd = algo, e->fwd_ws = ws, e->have_fwd = 1;
            return 0;
        }
    }
    return no_algorithm(be, "forward", e, count, k);
}

static int choose_bwd_data(pgd_backend *be, struct pgd_cuda_conv *e)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int count = 0, order[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    if (DNN_CHECK(be, cudnnGetConvolutionBackwardDataAlgorithm_v7(impl->cudnn, e->w, e->y, e->conv, e->x,
                                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count,
                                                                  perf)) < 0)
        return -1;
    int k = candidates(perf, count, impl->ws_cap, e->prec != PGD_PREC_FP32, order);
    for (int j = 0; j < k; j++) {
        size_t ws = 0;
        cudnnConvolutionBwdDataAlgo_t algo = perf[order[j]].algo;
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(impl->cudnn, e->w, e->y, e->conv, e->x, algo, &ws) ==
                CUDNN_STATUS_SUCCESS && ws <= impl->ws_cap) {
            e->bwd_data = algo, e->bwd_data_ws = ws, e->have_bwd_data = 1;
            return 0;
        }
    }
    return no_algorithm(be, "backward data", e, count, k);
}

static int choose_bwd_filter(pgd_backend *be, struct pgd_cuda_conv *e)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int count = 0, order[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    if (DNN_CHECK(be, cudnnGetConvolutionBackwardFilterAlgorithm_v7(impl->cudnn, e->x, e->y, e->conv, e->w,
                                                                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count,
                                                                    perf)) < 0)
        return -1;
    int k = candidates(perf, count, impl->ws_cap, e->prec != PGD_PREC_FP32, order);
    for (int j = 0; j < k; j++) {
        size_t ws = 0;
        cudnnConvolutionBwdFilterAlgo_t algo = perf[order[j]].algo;
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(impl->cudnn, e->x, e->y, e->conv, e->w, algo, &ws) ==
                CUDNN_STATUS_SUCCESS && ws <= impl->ws_cap) {
            e->bwd_filter = algo, e->bwd_filter_ws = ws, e->have_bwd_filter = 1;
            return 0;
        }
    }
    return no_algorithm(be, "backward filter", e, count, k);
}

/* --- bf16 / fp16 (backend.h, "Precision"): cuDNN reads and writes 16-bit copies staged in pool buffers (the
 * operands rounded by cuda_half.cu, the result rounded by cuDNN), which are released at the end of the call: the
 * memory plan counts exactly these three per direction, beside the workspace. ------------------------------- */

static void forward_half(pgd_backend *be, struct pgd_cuda_conv *e, float *out, const float *in, const float *w,
                         const float *bias)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    const pgd_conv_shape *sh = &e->sh;
    void *hin = pgd_cuda_half_stage(be, in, pgd_conv_in_count(sh));
    void *hw = pgd_cuda_half_stage(be, w, pgd_conv_filter_count(sh));
    void *hout = pgd_cuda_half_stage(be, NULL, pgd_conv_out_count(sh));
    void *ws = e->fwd_ws ? pgd_cuda_workspace(be, e->fwd_ws) : NULL;
    const float one = 1.0f, zero = 0.0f;
    if (!be->err.code && DNN_CHECK(be, cudnnConvolutionForward(impl->cudnn, &one, e->x, hin, e->w, hw, e->conv, e->fwd,
                                                               ws, e->fwd_ws, &zero, e->y, hout)) == 0) {
        pgd_cuda_half_unstage(be, out, hout, pgd_conv_out_count(sh), 0);
        if (bias && !be->err.code)
            DNN_CHECK(be, cudnnAddTensor(impl->cudnn, &one, e->bias, bias, &one, e->yf, out)); /* in fp32 */
    }
    pgd_cuda_half_release(be, hin), pgd_cuda_half_release(be, hw), pgd_cuda_half_release(be, hout);
    if (!be->err.code)
        LAUNCH_CHECK(be, "conv2d_forward");
}

static void backward_data_half(pgd_backend *be, struct pgd_cuda_conv *e, float *din, const float *dout,
                               const float *w)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    const pgd_conv_shape *sh = &e->sh;
    void *hdout = pgd_cuda_half_stage(be, dout, pgd_conv_out_count(sh));
    void *hw = pgd_cuda_half_stage(be, w, pgd_conv_filter_count(sh));
    void *hdin = pgd_cuda_half_stage(be, NULL, pgd_conv_in_count(sh));
    void *ws = e->bwd_data_ws ? pgd_cuda_workspace(be, e->bwd_data_ws) : NULL;
    const float one = 1.0f, zero = 0.0f;
    if (!be->err.code && DNN_CHECK(be, cudnnConvolutionBackwardData(impl->cudnn, &one, e->w, hw, e->y, hdout, e->conv,
                                                                    e->bwd_data, ws, e->bwd_data_ws, &zero, e->x,
                                                                    hdin)) == 0)
        pgd_cuda_half_unstage(be, din, hdin, pgd_conv_in_count(sh), 0);
    pgd_cuda_half_release(be, hdout), pgd_cuda_half_release(be, hw), pgd_cuda_half_release(be, hdin);
    if (!be->err.code)
        LAUNCH_CHECK(be, "conv2d_backward_data");
}

/* The filter gradient of the call is written (beta = 0) in 16 bits, then added to dw in fp32; the bias gradient
 * comes from the fp32 dout, added by cuDNN (beta = 1). */
static void backward_filter_half(pgd_backend *be, struct pgd_cuda_conv *e, float *dw, float *dbias,
                                 const float *dout, const float *in)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    const pgd_conv_shape *sh = &e->sh;
    void *hdout = pgd_cuda_half_stage(be, dout, pgd_conv_out_count(sh));
    void *hin = pgd_cuda_half_stage(be, in, pgd_conv_in_count(sh));
    void *hdw = pgd_cuda_half_stage(be, NULL, pgd_conv_filter_count(sh));
    void *ws = e->bwd_filter_ws ? pgd_cuda_workspace(be, e->bwd_filter_ws) : NULL;
    const float one = 1.0f, zero = 0.0f;
    if (!be->err.code && DNN_CHECK(be, cudnnConvolutionBackwardFilter(impl->cudnn, &one, e->x, hin, e->y, hdout,
                                                                      e->conv, e->bwd_filter, ws, e->bwd_filter_ws,
                                                                      &zero, e->w, hdw)) == 0) {
        pgd_cuda_half_unstage(be, dw, hdw, pgd_conv_filter_count(sh), 1);
        if (dbias && !be->err.code)
            DNN_CHECK(be, cudnnConvolutionBackwardBias(impl->cudnn, &one, e->yf, dout, &one, e->bias, dbias));
    }
    pgd_cuda_half_release(be, hdout), pgd_cuda_half_release(be, hin), pgd_cuda_half_release(be, hdw);
    if (!be->err.code)
        LAUNCH_CHECK(be, "conv2d_backward_filter");
}

/* --- the ops ------------------------------------------------------------------------------------------------ */

void pgd_cuda_conv2d_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *bias,
                             const pgd_conv_shape *sh)
{
    struct pgd_cuda_conv *e = conv_entry(be, sh);
    if (!e || (!e->have_fwd && choose_fwd(be, e) < 0))
        return;
    if (e->prec != PGD_PREC_FP32) {
        forward_half(be, e, out, in, w, bias);
        return;
    }
    pgd_cuda_impl *impl = pgd_cuda(be);
    void *ws = e->fwd_ws ? pgd_cuda_workspace(be, e->fwd_ws) : NULL;
    if (be->err.code)
        return;
    const float one = 1.0f, zero = 0.0f;
    if (DNN_CHECK(be, cudnnConvolutionForward(impl->cudnn, &one, e->x, in, e->w, w, e->conv, e->fwd, ws, e->fwd_ws,
                                              &zero, e->y, out)) < 0)
        return;
    if (bias && DNN_CHECK(be, cudnnAddTensor(impl->cudnn, &one, e->bias, bias, &one, e->y, out)) < 0)
        return;
    LAUNCH_CHECK(be, "conv2d_forward");
}

void pgd_cuda_conv2d_backward_data(pgd_backend *be, float *din, const float *dout, const float *w,
                                   const pgd_conv_shape *sh)
{
    struct pgd_cuda_conv *e = conv_entry(be, sh);
    if (!e || (!e->have_bwd_data && choose_bwd_data(be, e) < 0))
        return;
    if (e->prec != PGD_PREC_FP32) {
        backward_data_half(be, e, din, dout, w);
        return;
    }
    pgd_cuda_impl *impl = pgd_cuda(be);
    void *ws = e->bwd_data_ws ? pgd_cuda_workspace(be, e->bwd_data_ws) : NULL;
    if (be->err.code)
        return;
    const float one = 1.0f, zero = 0.0f;
    if (DNN_CHECK(be, cudnnConvolutionBackwardData(impl->cudnn, &one, e->w, w, e->y, dout, e->conv, e->bwd_data, ws,
                                                   e->bwd_data_ws, &zero, e->x, din)) < 0)
        return;
    LAUNCH_CHECK(be, "conv2d_backward_data");
}

/* fp32: beta = 1: cuDNN adds to dw and dbias, the accumulate rule of backend.h. */
void pgd_cuda_conv2d_backward_filter(pgd_backend *be, float *dw, float *dbias, const float *dout, const float *in,
                                     const pgd_conv_shape *sh)
{
    struct pgd_cuda_conv *e = conv_entry(be, sh);
    if (!e || (!e->have_bwd_filter && choose_bwd_filter(be, e) < 0))
        return;
    if (e->prec != PGD_PREC_FP32) {
        backward_filter_half(be, e, dw, dbias, dout, in);
        return;
    }
    pgd_cuda_impl *impl = pgd_cuda(be);
    void *ws = e->bwd_filter_ws ? pgd_cuda_workspace(be, e->bwd_filter_ws) : NULL;
    if (be->err.code)
        return;
    const float one = 1.0f;
    if (DNN_CHECK(be, cudnnConvolutionBackwardFilter(impl->cudnn, &one, e->x, in, e->y, dout, e->conv, e->bwd_filter,
                                                     ws, e->bwd_filter_ws, &one, e->w, dw)) < 0)
        return;
    if (dbias && DNN_CHECK(be, cudnnConvolutionBackwardBias(impl->cudnn, &one, e->y, dout, &one, e->bias, dbias)) < 0)
        return;
    LAUNCH_CHECK(be, "conv2d_backward_filter");
}
