/* cuda_half.cu: bf16 and fp16 on the GPU (backend.h, "Precision"): the 16-bit staging buffers the conv and linear
 * ops multiply from, the kernels that convert into and out of them with gpu_kernels.h's rounding (the CPU
 * backend's, so both round alike), and the finiteness check that dynamic loss scaling reads. */
#include "trainer/cuda_int.h"
#include "trainer/gpu_kernels.h"

#define GRID_LOOP(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)
#define LAUNCH(be, total) <<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>

/* prec: PGD_PREC_BF16 or PGD_PREC_FP16 (the codes gpu_kernels.h takes). */
static __device__ uint16_t to_half(float x, int prec)
{
    return prec == PGD_PREC_BF16 ? pgd_gk_to_bf16(x) : pgd_gk_to_fp16(x);
}

static __device__ float from_half(uint16_t h, int prec)
{
    return prec == PGD_PREC_BF16 ? pgd_gk_from_bf16(h) : pgd_gk_from_fp16(h);
}

__global__ static void to_half_kernel(uint16_t *h, const float *x, size_t count, int prec)
{
    GRID_LOOP(i, count)
    h[i] = to_half(x[i], prec);
}

__global__ static void from_half_kernel(float *x, const uint16_t *h, size_t count, int prec)
{
    GRID_LOOP(i, count)
    x[i] = from_half(h[i], prec);
}

__global__ static void accumulate_half_kernel(float *x, const uint16_t *h, size_t count, int prec)
{
    GRID_LOOP(i, count)
    x[i] += from_half(h[i], prec);
}

/* --- staging ----------------------------------------------------------------------------------------------- */

void *pgd_cuda_half_stage(pgd_backend *be, const float *src, size_t count)
{
    if (be->err.code)
        return NULL;
    if (be->precision != PGD_PREC_BF16 && be->precision != PGD_PREC_FP16) {
        CUDA_FAIL(be, PGD_EINVAL, "cuda half staging: precision %d is not a 16-bit format", (int)be->precision);
        return NULL;
    }
    uint16_t *h = (uint16_t *)pgd_gpu_pool_alloc(pgd_cuda(be)->pool, count * sizeof(uint16_t), "half staging",
                                                 &be->err);
    if (!h || !src || count == 0)
        return h;
    to_half_kernel LAUNCH(be, count)(h, src, count, (int)be->precision);
    if (LAUNCH_CHECK(be, "half staging") < 0) {
        pgd_gpu_pool_free(pgd_cuda(be)->pool, h);
        return NULL;
    }
    return h;
}

/* Freed at once: later users of the block are queued on the same stream, after the work that reads it. */
void pgd_cuda_half_release(pgd_backend *be, void *h)
{
    if (h && pgd_gpu_pool_free(pgd_cuda(be)->pool, h) < 0)
        CUDA_FAIL(be, PGD_EINVAL, "cuda half staging: %p is not a live allocation of this backend", h);
}

void pgd_cuda_half_unstage(pgd_backend *be, float *dst, const void *h, size_t count, int accumulate)
{
    if (be->err.code || count == 0)
        return;
    if (accumulate)
        accumulate_half_kernel LAUNCH(be, count)(dst, (const uint16_t *)h, count, (int)be->precision);
    else
        from_half_kernel LAUNCH(be, count)(dst, (const uint16_t *)h, count, (int)be->precision);
    LAUNCH_CHECK(be, accumulate ? "half accumulate" : "half unstage");
}

/* --- finiteness ------------------------------------------------------------------------------------------- */

/* Threads that see a non-finite element all write the same 1; the others write nothing. */
__global__ static void nonfinite_kernel(int32_t *flag, const float *x, size_t count)
{
    GRID_LOOP(i, count)
    if (pgd_gk_nonfinite(x[i])) {
        *flag = 1;
        return;
    }
}

void pgd_cuda_nonfinite(pgd_backend *be, int32_t *flag, const float *x, size_t count)
{
    if (be->err.code || count == 0)
        return;
    nonfinite_kernel LAUNCH(be, count)(flag, x, count);
    LAUNCH_CHECK(be, "nonfinite");
}
