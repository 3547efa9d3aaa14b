/* cuda_pool.cu: max, average and global average pooling on the GPU. Own kernels rather than cuDNN's: the
 * backward of max pooling must send the gradient to the FIRST maximum of a window (row-major) with a NaN
 * winning, as the CPU reference does, and cuDNN documents no tie rule. The backward kernels gather per input
 * cell (no atomics), so they are deterministic. */
#include "trainer/cuda_int.h"
#include "trainer/gpu_kernels.h"

static pgd_gk_pool geo_of(const pgd_pool_shape *sh)
{
    pgd_gk_pool g = {sh->h, sh->w, sh->oh, sh->ow, sh->size, sh->stride, sh->pad};
    return g;
}

#define GRID_LOOP(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* The bodies (trainer/gpu_kernels.h) are tested on the host against cpu_pool.c by tests/test_gpu_kernels.c. */
__global__ static void maxpool_fwd_kernel(float *out, const float *in, pgd_gk_pool g, size_t total)
{
    GRID_LOOP(i, total)
    out[i] = pgd_gk_maxpool_fwd(in, &g, i);
}

__global__ static void maxpool_bwd_kernel(float *din, const float *dout, const float *in, pgd_gk_pool g, size_t total)
{
    GRID_LOOP(i, total)
    din[i] = pgd_gk_maxpool_bwd(dout, in, &g, i);
}

__global__ static void avgpool_fwd_kernel(float *out, const float *in, pgd_gk_pool g, size_t total, float inv)
{
    GRID_LOOP(i, total)
    out[i] = pgd_gk_avgpool_fwd(in, &g, i, inv);
}

__global__ static void avgpool_bwd_kernel(float *din, const float *dout, pgd_gk_pool g, size_t total, float inv)
{
    GRID_LOOP(i, total)
    din[i] = pgd_gk_avgpool_bwd(dout, &g, i, inv);
}

/* One block per plane, the sum in double as on the CPU. */
__global__ static void gap_fwd_kernel(float *out, const float *in, size_t planes, int hw)
{
    __shared__ double part[PGD_CUDA_THREADS];
    for (size_t pl = blockIdx.x; pl < planes; pl += gridDim.x) {
        const float *x = in + pl * hw;
        double s = 0.0;
        for (int i = threadIdx.x; i < hw; i += blockDim.x)
            s += x[i];
        part[threadIdx.x] = s;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half /= 2) {
            if ((int)threadIdx.x < half)
                part[threadIdx.x] += part[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0)
            out[pl] = (float)(part[0] / hw);
        __syncthreads();
    }
}

__global__ static void gap_bwd_kernel(float *din, const float *dout, int hw, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        din[i] = dout[i / hw] / (float)hw;
}

void pgd_cuda_maxpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t total = (size_t)sh->n * sh->c * sh->oh * sh->ow;
    maxpool_fwd_kernel<<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(out, in, geo_of(sh),
                                                                                             total);
    LAUNCH_CHECK(be, "maxpool_forward");
}

void pgd_cuda_maxpool_backward(pgd_backend *be, float *din, const float *dout, const float *in,
                               const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t total = (size_t)sh->n * sh->c * sh->h * sh->w;
    maxpool_bwd_kernel<<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(din, dout, in,
                                                                                             geo_of(sh), total);
    LAUNCH_CHECK(be, "maxpool_backward");
}

void pgd_cuda_avgpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t total = (size_t)sh->n * sh->c * sh->oh * sh->ow;
    float inv = 1.0f / (float)(sh->size * sh->size);
    avgpool_fwd_kernel<<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(out, in, geo_of(sh),
                                                                                             total, inv);
    LAUNCH_CHECK(be, "avgpool_forward");
}

void pgd_cuda_avgpool_backward(pgd_backend *be, float *din, const float *dout, const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t total = (size_t)sh->n * sh->c * sh->h * sh->w;
    float inv = 1.0f / (float)(sh->size * sh->size);
    avgpool_bwd_kernel<<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(din, dout, geo_of(sh),
                                                                                             total, inv);
    LAUNCH_CHECK(be, "avgpool_backward");
}

void pgd_cuda_global_avgpool_forward(pgd_backend *be, float *out, const float *in, int n, int c, int hw)
{
    if (be->err.code)
        return;
    size_t planes = (size_t)n * c;
    unsigned blocks = planes > 65535 ? 65535u : (unsigned)planes;
    gap_fwd_kernel<<<blocks, PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(out, in, planes, hw);
    LAUNCH_CHECK(be, "global_avgpool_forward");
}

void pgd_cuda_global_avgpool_backward(pgd_backend *be, float *din, const float *dout, int n, int c, int hw)
{
    if (be->err.code)
        return;
    size_t total = (size_t)n * c * hw;
    gap_bwd_kernel<<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(din, dout, hw, total);
    LAUNCH_CHECK(be, "global_avgpool_backward");
}
