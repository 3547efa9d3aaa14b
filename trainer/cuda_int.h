/* cuda_int.h: what the CUDA backend's files share: its private state, the checked-call macros that put
 * file:line into the sticky error, the launch helpers and the op functions behind the table. C++ (nvcc) only. */
#ifndef PGD_CUDA_INT_H
#define PGD_CUDA_INT_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

extern "C" {
#include "trainer/backend.h"
#include "trainer/gpu_pool.h"

/* The entry points of libpgd_cuda.so, found with dlsym by trainer/cuda_load.c (pgd_backend_cuda_new and
 * pgd_cuda_device_count of backend.h). */
pgd_backend *pgd_cuda_lib_backend_new(int device, double mem_budget_gb, pgd_err *err);
int pgd_cuda_lib_device_count(char *why, size_t why_len);
}

struct pgd_cuda_conv; /* cuda_conv.cu: the per-shape descriptor and algorithm cache */

/* Backend-private state of the CUDA backend (be->impl). All work goes to one stream, so a block freed to the
 * pool may be handed out again at once: every later use of it is queued after every earlier one. */
typedef struct pgd_cuda_impl {
    int device;
    cudaStream_t stream;
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    pgd_gpu_pool *pool;
    int sync_each;                  /* PGD_CUDA_SYNC=1: synchronise and check after every op */
    void *ws;                       /* the cuDNN workspace, grown on demand (pool memory) */
    size_t ws_bytes;
    size_t ws_cap;                  /* the most workspace a cuDNN algorithm may ask for */
    void *cublas_ws;                /* cuBLAS's workspace (pool memory) */
    struct pgd_cuda_conv *convs;    /* cached conv shapes */
    cudnnTensorDescriptor_t bn_x, bn_p; /* reused by batch norm */
    char name[256];                 /* the device's name, for messages */
} pgd_cuda_impl;

static inline pgd_cuda_impl *pgd_cuda(pgd_backend *be)
{
    return (pgd_cuda_impl *)be->impl;
}

/* Each returns 0 when the status is success, else raises the sticky error with the call's text and file:line
 * and returns -1. */
int pgd_cuda_check_rt(pgd_backend *be, cudaError_t e, const char *call, const char *file, int line);
int pgd_cuda_check_dnn(pgd_backend *be, cudnnStatus_t s, const char *call, const char *file, int line);
int pgd_cuda_check_blas(pgd_backend *be, cublasStatus_t s, const char *call, const char *file, int line);
/* After kernel launches: cudaGetLastError, and with PGD_CUDA_SYNC=1 also a stream synchronisation. */
int pgd_cuda_check_launch(pgd_backend *be, const char *what, const char *file, int line);

#define CU_CHECK(be, call) pgd_cuda_check_rt((be), (call), #call, __FILE__, __LINE__)
#define DNN_CHECK(be, call) pgd_cuda_check_dnn((be), (call), #call, __FILE__, __LINE__)
#define BLAS_CHECK(be, call) pgd_cuda_check_blas((be), (call), #call, __FILE__, __LINE__)
#define LAUNCH_CHECK(be, what) pgd_cuda_check_launch((be), (what), __FILE__, __LINE__)

/* Raise the sticky error at the caller's file:line (pgd_backend_fail works too; this one takes a code). */
#define CUDA_FAIL(be, code, ...) pgd_err_set(&(be)->err, (code), 0, __FILE__, __LINE__, __VA_ARGS__)

/* At least `bytes` of cuDNN workspace (valid until the next call), NULL with the sticky error when the pool
 * refuses. */
void *pgd_cuda_workspace(pgd_backend *be, size_t bytes);

/* Launch geometry for a grid-stride loop over `count` items. */
#define PGD_CUDA_THREADS 256
static inline unsigned pgd_cuda_blocks(size_t count)
{
    size_t b = (count + PGD_CUDA_THREADS - 1) / PGD_CUDA_THREADS;
    return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

/* cuda_conv.cu */
void pgd_cuda_conv2d_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *bias,
                             const pgd_conv_shape *sh);
void pgd_cuda_conv2d_backward_data(pgd_backend *be, float *din, const float *dout, const float *w,
                                   const pgd_conv_shape *sh);
void pgd_cuda_conv2d_backward_filter(pgd_backend *be, float *dw, float *dbias, const float *dout, const float *in,
                                     const pgd_conv_shape *sh);
void pgd_cuda_conv_cache_free(pgd_backend *be);

/* cuda_norm.cu */
void pgd_cuda_bn_forward_train(pgd_backend *be, float *out, float *save_mean, float *save_invstd, float *run_mean,
                               float *run_var, const float *in, const float *gamma, const float *beta,
                               const pgd_bn_shape *sh);
void pgd_cuda_bn_forward_eval(pgd_backend *be, float *out, const float *in, const float *gamma, const float *beta,
                              const float *run_mean, const float *run_var, const pgd_bn_shape *sh);
void pgd_cuda_bn_backward(pgd_backend *be, float *din, float *dgamma, float *dbeta, const float *dout,
                          const float *in, const float *gamma, const float *save_mean, const float *save_invstd,
                          const pgd_bn_shape *sh);

/* cuda_pool.cu */
void pgd_cuda_maxpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh);
void pgd_cuda_maxpool_backward(pgd_backend *be, float *din, const float *dout, const float *in,
                               const pgd_pool_shape *sh);
void pgd_cuda_avgpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh);
void pgd_cuda_avgpool_backward(pgd_backend *be, float *din, const float *dout, const pgd_pool_shape *sh);
void pgd_cuda_global_avgpool_forward(pgd_backend *be, float *out, const float *in, int n, int c, int hw);
void pgd_cuda_global_avgpool_backward(pgd_backend *be, float *din, const float *dout, int n, int c, int hw);

/* cuda_misc.cu */
void pgd_cuda_relu_forward(pgd_backend *be, float *out, const float *in, size_t count, float cap);
void pgd_cuda_relu_backward(pgd_backend *be, float *din, const float *dout, const float *out, size_t count,
                            float cap);
void pgd_cuda_linear_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *b, int n,
                             int i, int o);
void pgd_cuda_linear_backward(pgd_backend *be, float *din, float *dw, float *db, const float *dout,
                              const float *in, const float *w, int n, int i, int o);
void pgd_cuda_dropout2d_forward(pgd_backend *be, float *out, float *mask, const float *in, int n, int c, int hw,
                                float p, uint64_t seed);
void pgd_cuda_dropout2d_backward(pgd_backend *be, float *din, const float *dout, const float *mask, int n, int c,
                                 int hw);
void pgd_cuda_add(pgd_backend *be, float *out, const float *a, const float *b, size_t count);
void pgd_cuda_accumulate(pgd_backend *be, float *dst, const float *src, size_t count);
void pgd_cuda_scale(pgd_backend *be, float *x, float alpha, size_t count);
void pgd_cuda_xent_forward(pgd_backend *be, float *loss, float *probs, const float *logits, const int32_t *labels,
                           int n, int c);
void pgd_cuda_xent_backward(pgd_backend *be, float *dlogits, const float *probs, const int32_t *labels, int n,
                            int c, float scale);
void pgd_cuda_u8_to_float(pgd_backend *be, float *out, const uint8_t *in, int n, int h, int w, int c,
                          const float *mean, const float *std);
void pgd_cuda_z_scatter(pgd_backend *be, float *z, const float *feat, const uint32_t *cell, int count, int s,
                        int mn);
void pgd_cuda_z_gather(pgd_backend *be, float *dfeat, const float *dz, const uint32_t *cell, int count, int s,
                       int mn);

/* cuda_half.cu: bf16 / fp16 (backend.h, "Precision"). Staging buffers are blocks of the pool (counted by its
 * budget), taken per call and released at its end. */
/* count 16-bit values in be->precision's format, holding src rounded (gpu_kernels.h), or uninitialised when src
 * is NULL (for a result). NULL with the sticky error; release with pgd_cuda_half_release (NULL is fine). */
void *pgd_cuda_half_stage(pgd_backend *be, const float *src, size_t count);
void pgd_cuda_half_release(pgd_backend *be, void *h);
/* dst = h as fp32 (accumulate 0), or dst += h as fp32 (accumulate 1). */
void pgd_cuda_half_unstage(pgd_backend *be, float *dst, const void *h, size_t count, int accumulate);
void pgd_cuda_nonfinite(pgd_backend *be, int32_t *flag, const float *x, size_t count);

/* cuda_optim.cu */
void pgd_cuda_adam_update(pgd_backend *be, float *param, const float *grad, float *m, float *v, size_t count,
                          const pgd_adam_hp *hp);
void pgd_cuda_sgd_update(pgd_backend *be, float *param, const float *grad, float *mom, size_t count,
                         const pgd_sgd_hp *hp);

#endif
