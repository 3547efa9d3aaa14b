/* cuda_norm.cu: batch norm on the GPU with cuDNN's spatial batch norm (train, eval, backward). cuDNN keeps
 * PyTorch's semantics: biased variance to normalise, unbiased for the running estimate, saved 1/sqrt(var+eps). */
#include "trainer/cuda_int.h"

/* x as [n, c, hw, 1] and the per-channel [1, c, 1, 1] descriptor derived from it. */
static int set_desc(pgd_backend *be, const pgd_bn_shape *sh)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    if (be->err.code)
        return -1;
    if ((double)sh->eps < CUDNN_BN_MIN_EPSILON)
        return CUDA_FAIL(be, PGD_EINVAL, "cuda batch norm: eps %g is below cuDNN's minimum %g", (double)sh->eps,
                         (double)CUDNN_BN_MIN_EPSILON);
    if (DNN_CHECK(be, cudnnSetTensor4dDescriptor(impl->bn_x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, sh->n, sh->c, sh->hw,
                                                 1)) < 0 ||
        DNN_CHECK(be, cudnnDeriveBNTensorDescriptor(impl->bn_p, impl->bn_x, CUDNN_BATCHNORM_SPATIAL)) < 0)
        return -1;
    return 0;
}

void pgd_cuda_bn_forward_train(pgd_backend *be, float *out, float *save_mean, float *save_invstd, float *run_mean,
                               float *run_var, const float *in, const float *gamma, const float *beta,
                               const pgd_bn_shape *sh)
{
    if (set_desc(be, sh) < 0)
        return;
    if ((size_t)sh->n * sh->hw < 2) {
        CUDA_FAIL(be, PGD_EINVAL, "cuda batch norm: train mode needs more than one value per channel (n %d hw %d)",
                  sh->n, sh->hw);
        return;
    }
    pgd_cuda_impl *impl = pgd_cuda(be);
    const float one = 1.0f, zero = 0.0f;
    int running = run_mean && run_var;
    if (DNN_CHECK(be, cudnnBatchNormalizationForwardTraining(
                          impl->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, impl->bn_x, in, impl->bn_x, out,
                          impl->bn_p, gamma, beta, (double)sh->momentum, running ? run_mean : NULL,
                          running ? run_var : NULL, (double)sh->eps, save_mean, save_invstd)) < 0)
        return;
    LAUNCH_CHECK(be, "bn_forward_train");
}

void pgd_cuda_bn_forward_eval(pgd_backend *be, float *out, const float *in, const float *gamma, const float *beta,
                              const float *run_mean, const float *run_var, const pgd_bn_shape *sh)
{
    if (set_desc(be, sh) < 0)
        return;
    pgd_cuda_impl *impl = pgd_cuda(be);
    const float one = 1.0f, zero = 0.0f;
    if (DNN_CHECK(be, cudnnBatchNormalizationForwardInference(impl->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero,
                                                              impl->bn_x, in, impl->bn_x, out, impl->bn_p, gamma, beta,
                                                              run_mean, run_var, (double)sh->eps)) < 0)
        return;
    LAUNCH_CHECK(be, "bn_forward_eval");
}

/* Data gradient written (alpha 1, beta 0), parameter gradients accumulated (alpha 1, beta 1). */
void pgd_cuda_bn_backward(pgd_backend *be, float *din, float *dgamma, float *dbeta, const float *dout,
                          const float *in, const float *gamma, const float *save_mean, const float *save_invstd,
                          const pgd_bn_shape *sh)
{
    if (set_desc(be, sh) < 0)
        return;
    pgd_cuda_impl *impl = pgd_cuda(be);
    const float one = 1.0f, zero = 0.0f;
    if (DNN_CHECK(be, cudnnBatchNormalizationBackward(impl->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &one,
                                                      impl->bn_x, in, impl->bn_x, dout, impl->bn_x, din, impl->bn_p,
                                                      gamma, dgamma, dbeta, (double)sh->eps, save_mean,
                                                      save_invstd)) < 0)
        return;
    LAUNCH_CHECK(be, "bn_backward");
}
