/* cuda_stub.c: the CUDA entry points of a build without CUDA (PGD_HAVE_CUDA=0): they exist and say why they
 * cannot work. With CUDA they live in cuda_backend.cu and this file is empty. */
#include <stdio.h>

#include "trainer/backend.h"

#if !PGD_HAVE_CUDA
#define NO_CUDA "this pgd was built without CUDA (the Makefile found no nvcc and cudnn.h under CUDA_HOME)"

pgd_backend *pgd_backend_cuda_new(int device, double mem_budget_gb, pgd_err *err)
{
    pgd_fail(err, PGD_EINVAL, "cuda backend: %s; rebuild with CUDA_HOME set, or use the cpu backend", NO_CUDA);
    return NULL;
}

int pgd_cuda_device_count(char *why, size_t why_len)
{
    if (why && why_len)
        snprintf(why, why_len, "%s", NO_CUDA);
    return 0;
}
#else
typedef int pgd_cuda_stub_empty; /* ISO C wants a declaration in every file */
#endif
