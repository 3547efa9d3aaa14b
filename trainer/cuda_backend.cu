/* cuda_backend.cu: the CUDA backend: its op table, start-up and teardown, device memory through the caching
 * allocator, and the checked-call helpers that record file:line in the sticky error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cuda_int.h"

#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20) /* what cuBLAS asks for on Hopper */
#define CONV_WS_CAP_BYTES ((size_t)1 << 30)       /* the most a conv algorithm may use, budget permitting */

static const char *blas_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
    }
}

int pgd_cuda_check_rt(pgd_backend *be, cudaError_t e, const char *call, const char *file, int line)
{
    if (e == cudaSuccess)
        return 0;
    (void)cudaGetLastError(); /* clear a non-sticky error so the message below is the first one */
    pgd_err_set(&be->err, e == cudaErrorMemoryAllocation ? PGD_ENOMEM : PGD_EIO, 0, file, line, "CUDA: %s: %s (%s)",
                call, cudaGetErrorString(e), cudaGetErrorName(e));
    return -1;
}

int pgd_cuda_check_dnn(pgd_backend *be, cudnnStatus_t s, const char *call, const char *file, int line)
{
    if (s == CUDNN_STATUS_SUCCESS)
        return 0;
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    pgd_err_set(&be->err, s == CUDNN_STATUS_ALLOC_FAILED ? PGD_ENOMEM : PGD_EIO, 0, file, line, "cuDNN: %s: %s%s%s",
                call, cudnnGetErrorString(s), detail[0] ? ": " : "", detail);
    return -1;
}

int pgd_cuda_check_blas(pgd_backend *be, cublasStatus_t s, const char *call, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    pgd_err_set(&be->err, s == CUBLAS_STATUS_ALLOC_FAILED ? PGD_ENOMEM : PGD_EIO, 0, file, line, "cuBLAS: %s: %s",
                call, blas_status_name(s));
    return -1;
}

int pgd_cuda_check_launch(pgd_backend *be, const char *what, const char *file, int line)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && pgd_cuda(be)->sync_each)
        e = cudaStreamSynchronize(pgd_cuda(be)->stream);
    if (e == cudaSuccess)
        return 0;
    pgd_err_set(&be->err, PGD_EIO, 0, file, line, "CUDA: %s: %s (%s)", what, cudaGetErrorString(e),
                cudaGetErrorName(e));
    return -1;
}

/* --- the pool's raw allocator: cudaMalloc / cudaFree on the backend's device ---------------------------- */

static void *raw_alloc(void *ctx, size_t bytes, char *why, size_t why_len)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
            snprintf(why, why_len, "cudaMalloc: %s (device: %.1f MiB free of %.1f MiB)", cudaGetErrorString(e),
                     (double)free_b / 1048576.0, (double)total_b / 1048576.0);
        else
            snprintf(why, why_len, "cudaMalloc: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void raw_free(void *ctx, void *p)
{
    cudaFree(p);
}

static void *dev_alloc(pgd_backend *be, const char *what, size_t bytes)
{
    if (be->err.code)
        return NULL;
    return pgd_gpu_pool_alloc(pgd_cuda(be)->pool, bytes, what, &be->err);
}

void *pgd_cuda_workspace(pgd_backend *be, size_t bytes)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    if (be->err.code)
        return NULL;
    if (bytes <= impl->ws_bytes)
        return impl->ws;
    pgd_gpu_pool_free(impl->pool, impl->ws); /* queued work that reads it runs before any reuse (one stream) */
    impl->ws = NULL;
    impl->ws_bytes = 0;
    impl->ws = dev_alloc(be, "cuDNN workspace", bytes);
    if (impl->ws)
        impl->ws_bytes = bytes;
    return impl->ws;
}

/* --- memory ops ------------------------------------------------------------------------------------------ */

static void *cuda_alloc(pgd_backend *be, size_t bytes)
{
    void *p = dev_alloc(be, "tensor", bytes);
    if (p && CU_CHECK(be, cudaMemsetAsync(p, 0, bytes ? bytes : 1, pgd_cuda(be)->stream)) < 0)
        return NULL;
    return p;
}

static void cuda_free(pgd_backend *be, void *p)
{
    if (p && pgd_gpu_pool_free(pgd_cuda(be)->pool, p) < 0)
        CUDA_FAIL(be, PGD_EINVAL, "cuda free of %p: not a live allocation of this backend", p);
}

/* Uploads wait for the copy, so the host buffer may be reused (or be pinned) as soon as the call returns. */
static void cuda_upload(pgd_backend *be, void *dst, const void *host_src, size_t bytes)
{
    if (be->err.code || bytes == 0)
        return;
    pgd_cuda_impl *impl = pgd_cuda(be);
    if (CU_CHECK(be, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, impl->stream)) == 0)
        CU_CHECK(be, cudaStreamSynchronize(impl->stream));
}

static void cuda_download(pgd_backend *be, void *host_dst, const void *src, size_t bytes)
{
    if (be->err.code || bytes == 0)
        return;
    pgd_cuda_impl *impl = pgd_cuda(be);
    if (CU_CHECK(be, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, impl->stream)) == 0)
        CU_CHECK(be, cudaStreamSynchronize(impl->stream));
}

static void cuda_copy(pgd_backend *be, void *dst, const void *src, size_t bytes)
{
    if (be->err.code || bytes == 0 || dst == src)
        return;
    CU_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, pgd_cuda(be)->stream));
}

static void cuda_zero(pgd_backend *be, void *p, size_t bytes)
{
    if (be->err.code || bytes == 0)
        return;
    CU_CHECK(be, cudaMemsetAsync(p, 0, bytes, pgd_cuda(be)->stream));
}

static void cuda_sync(pgd_backend *be)
{
    if (be->err.code)
        return;
    CU_CHECK(be, cudaStreamSynchronize(pgd_cuda(be)->stream));
}

static void cuda_mem_stats(pgd_backend *be, pgd_mem_stats *st)
{
    pgd_gpu_pool_stats(pgd_cuda(be)->pool, st);
}

/* --- lifetime -------------------------------------------------------------------------------------------- */

static void cuda_destroy(pgd_backend *be)
{
    pgd_cuda_impl *impl = pgd_cuda(be);
    if (impl) {
        cudaSetDevice(impl->device);
        if (impl->stream)
            cudaStreamSynchronize(impl->stream);
        pgd_cuda_conv_cache_free(be);
        if (impl->bn_x)
            cudnnDestroyTensorDescriptor(impl->bn_x);
        if (impl->bn_p)
            cudnnDestroyTensorDescriptor(impl->bn_p);
        if (impl->cublas)
            cublasDestroy(impl->cublas);
        if (impl->cudnn)
            cudnnDestroy(impl->cudnn);
        pgd_gpu_pool_destroy(impl->pool); /* the workspaces are pool blocks */
        if (impl->stream)
            cudaStreamDestroy(impl->stream);
        free(impl);
    }
    free(be);
}

static pgd_backend_ops make_ops(void)
{
    pgd_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.alloc = cuda_alloc;
    o.free = cuda_free;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.copy = cuda_copy;
    o.zero = cuda_zero;
    o.sync = cuda_sync;
    o.conv2d_forward = pgd_cuda_conv2d_forward;
    o.conv2d_backward_data = pgd_cuda_conv2d_backward_data;
    o.conv2d_backward_filter = pgd_cuda_conv2d_backward_filter;
    o.bn_forward_train = pgd_cuda_bn_forward_train;
    o.bn_forward_eval = pgd_cuda_bn_forward_eval;
    o.bn_backward = pgd_cuda_bn_backward;
    o.relu_forward = pgd_cuda_relu_forward;
    o.relu_backward = pgd_cuda_relu_backward;
    o.maxpool_forward = pgd_cuda_maxpool_forward;
    o.maxpool_backward = pgd_cuda_maxpool_backward;
    o.avgpool_forward = pgd_cuda_avgpool_forward;
    o.avgpool_backward = pgd_cuda_avgpool_backward;
    o.global_avgpool_forward = pgd_cuda_global_avgpool_forward;
    o.global_avgpool_backward = pgd_cuda_global_avgpool_backward;
    o.linear_forward = pgd_cuda_linear_forward;
    o.linear_backward = pgd_cuda_linear_backward;
    o.dropout2d_forward = pgd_cuda_dropout2d_forward;
    o.dropout2d_backward = pgd_cuda_dropout2d_backward;
    o.add = pgd_cuda_add;
    o.accumulate = pgd_cuda_accumulate;
    o.scale = pgd_cuda_scale;
    o.xent_forward = pgd_cuda_xent_forward;
    o.xent_backward = pgd_cuda_xent_backward;
    o.adam_update = pgd_cuda_adam_update;
    o.sgd_update = pgd_cuda_sgd_update;
    o.nonfinite = pgd_cuda_nonfinite;
    o.u8_to_float = pgd_cuda_u8_to_float;
    o.z_scatter = pgd_cuda_z_scatter;
    o.z_gather = pgd_cuda_z_gather;
    o.destroy = cuda_destroy;
    o.mem_stats = cuda_mem_stats;
    return o;
}

static const pgd_backend_ops cuda_ops = make_ops();

int pgd_cuda_lib_device_count(char *why, size_t why_len)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && why_len)
            snprintf(why, why_len, "cudaGetDeviceCount: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        return 0;
    }
    if (count <= 0 && why && why_len)
        snprintf(why, why_len, "cudaGetDeviceCount found no device");
    return count > 0 ? count : 0;
}

pgd_backend *pgd_cuda_lib_backend_new(int device, double mem_budget_gb, pgd_err *err)
{
    char why[256] = "";
    int count = pgd_cuda_lib_device_count(why, sizeof why);
    if (count == 0) {
        pgd_fail(err, PGD_EINVAL, "cuda backend: no CUDA device: %s", why);
        return NULL;
    }
    if (device < 0 || device >= count) {
        pgd_fail(err, PGD_EINVAL, "cuda backend: device %d does not exist (%d device%s)", device, count,
                 count == 1 ? "" : "s");
        return NULL;
    }
    if (!(mem_budget_gb < 1e9)) { /* also NaN */
        pgd_fail(err, PGD_EINVAL, "cuda backend: gpu_mem_gb %g is not a sensible budget", mem_budget_gb);
        return NULL;
    }
    pgd_backend *be = (pgd_backend *)calloc(1, sizeof *be);
    pgd_cuda_impl *impl = (pgd_cuda_impl *)calloc(1, sizeof *impl);
    if (!be || !impl) {
        free(be);
        free(impl);
        pgd_fail(err, PGD_ENOMEM, "cuda backend: out of host memory");
        return NULL;
    }
    be->ops = &cuda_ops;
    be->threads = 1;
    be->impl = impl;
    impl->device = device;
    const char *sync_env = getenv("PGD_CUDA_SYNC");
    impl->sync_each = sync_env && strcmp(sync_env, "1") == 0;
    size_t budget = mem_budget_gb > 0 ? (size_t)(mem_budget_gb * 1073741824.0) : 0;
    impl->ws_cap = budget && budget / 4 < CONV_WS_CAP_BYTES ? budget / 4 : CONV_WS_CAP_BYTES;
    pgd_gpu_pool_raw raw = {raw_alloc, raw_free, impl};
    cudaDeviceProp prop;

    if (CU_CHECK(be, cudaSetDevice(device)) < 0 || CU_CHECK(be, cudaGetDeviceProperties(&prop, device)) < 0)
        goto fail;
    snprintf(impl->name, sizeof impl->name, "%.200s (sm_%d%d, %.1f GiB)", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / 1073741824.0);
    if (!(impl->pool = pgd_gpu_pool_new(budget, &raw, &be->err)))
        goto fail;
    if (CU_CHECK(be, cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking)) < 0)
        goto fail;
    if (DNN_CHECK(be, cudnnCreate(&impl->cudnn)) < 0 || DNN_CHECK(be, cudnnSetStream(impl->cudnn, impl->stream)) < 0)
        goto fail;
    if (DNN_CHECK(be, cudnnCreateTensorDescriptor(&impl->bn_x)) < 0 ||
        DNN_CHECK(be, cudnnCreateTensorDescriptor(&impl->bn_p)) < 0)
        goto fail;
    if (BLAS_CHECK(be, cublasCreate(&impl->cublas)) < 0 ||
        BLAS_CHECK(be, cublasSetStream(impl->cublas, impl->stream)) < 0 ||
        BLAS_CHECK(be, cublasSetMathMode(impl->cublas, CUBLAS_DEFAULT_MATH)) < 0) /* fp32 sgemm: no TF32 */
        goto fail;
    if (!(impl->cublas_ws = dev_alloc(be, "cuBLAS workspace", CUBLAS_WORKSPACE_BYTES)) ||
        BLAS_CHECK(be, cublasSetWorkspace(impl->cublas, impl->cublas_ws, CUBLAS_WORKSPACE_BYTES)) < 0)
        goto fail;
    return be;
fail:
    pgd_err_set(err, be->err.code ? be->err.code : PGD_EIO, 0, be->err.file ? be->err.file : __FILE__,
                be->err.line ? be->err.line : __LINE__, "cuda backend on device %d: %s", device, be->err.msg);
    cuda_destroy(be);
    return NULL;
}
