/* cuda_optim.cu: Adam / AdamW and SGD with momentum on the GPU: the CPU reference's formulas (cpu_optim.c) per
 * element (trainer/gpu_kernels.h), with the step-dependent scalars computed on the host as the CPU does. */
#include "trainer/cuda_int.h"
#include "trainer/gpu_kernels.h"

__global__ static void adam_kernel(float *param, const float *grad, float *m, float *v, size_t count, pgd_gk_adam a)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        pgd_gk_adam_at(param, grad, m, v, i, &a);
}

void pgd_cuda_adam_update(pgd_backend *be, float *param, const float *grad, float *m, float *v, size_t count,
                          const pgd_adam_hp *hp)
{
    if (be->err.code || count == 0)
        return;
    pgd_gk_adam a = pgd_gk_adam_args(hp->lr, hp->beta1, hp->beta2, hp->eps, hp->weight_decay, hp->decoupled,
                                     hp->step, hp->grad_scale);
    adam_kernel<<<pgd_cuda_blocks(count), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(param, grad, m, v, count, a);
    LAUNCH_CHECK(be, "adam_update");
}

__global__ static void sgd_kernel(float *param, const float *grad, float *mom, size_t count, float lr, float momentum,
                                  float weight_decay, float grad_scale, int first)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        pgd_gk_sgd_at(param, grad, mom, i, lr, momentum, weight_decay, grad_scale, first);
}

void pgd_cuda_sgd_update(pgd_backend *be, float *param, const float *grad, float *mom, size_t count,
                         const pgd_sgd_hp *hp)
{
    if (be->err.code || count == 0)
        return;
    sgd_kernel<<<pgd_cuda_blocks(count), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>(
        param, grad, mom, count, hp->lr, hp->momentum, hp->weight_decay, hp->grad_scale, hp->step <= 1);
    LAUNCH_CHECK(be, "sgd_update");
}
