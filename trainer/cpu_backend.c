/* cpu_backend.c: the CPU reference backend: its op table, host memory ops and the conv scratch buffer. */
#include <cblas.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/cpu_int.h"

/* be->impl: the state the op files share (first, so be->impl is also a pgd_cpu_impl *) and the counters of
 * pgd_backend_mem_stats, which only this file uses. */
typedef struct cpu_state {
    pgd_cpu_impl base;
    pgd_mem_stats mem;
} cpu_state;

/* No host has this much memory: refuse before asking malloc (a sanitizer would abort instead of failing). */
#define CPU_MAX_ALLOC ((size_t)1 << 40)

static void *over_budget(pgd_backend *be, size_t bytes)
{
    cpu_state *impl = be->impl;
    impl->mem.failures++;
    pgd_backend_fail(be, PGD_ENOMEM,
                     "cpu memory: tensor of %zu bytes (%.1f MiB) is over the budget of %zu bytes (%.1f MiB), %zu "
                     "bytes (%.1f MiB) in use",
                     bytes, bytes / 1048576.0, impl->mem.budget, impl->mem.budget / 1048576.0, impl->mem.in_use,
                     impl->mem.in_use / 1048576.0);
    return NULL;
}

static void *cpu_alloc(pgd_backend *be, size_t bytes)
{
    if (be->err.code)
        return NULL;
    if (bytes > CPU_MAX_ALLOC) {
        pgd_backend_fail(be, PGD_ENOMEM, "cpu alloc of %zu bytes: more than the %zu byte limit", bytes,
                         CPU_MAX_ALLOC);
        return NULL;
    }
    cpu_state *impl = be->impl;
    if (impl->mem.budget && (bytes > impl->mem.budget || impl->mem.in_use > impl->mem.budget - bytes))
        return over_budget(be, bytes);
    void *p = calloc(1, bytes ? bytes : 1);
    if (p && impl->mem.budget && impl->mem.in_use + malloc_usable_size(p) > impl->mem.budget) {
        free(p);
        return over_budget(be, bytes);
    }
    if (!p) {
        impl->mem.failures++;
        pgd_backend_fail(be, PGD_ENOMEM, "cpu alloc of %zu bytes", bytes);
        return NULL;
    }
    /* The counters use what malloc really reserved, so free can subtract the same amount. */
    impl->mem.in_use += malloc_usable_size(p);
    impl->mem.allocs++;
    impl->mem.raw_allocs++;
    if (impl->mem.in_use > impl->mem.peak_in_use)
        impl->mem.peak_in_use = impl->mem.peak_reserved = impl->mem.in_use;
    return p;
}

static void cpu_free(pgd_backend *be, void *p)
{
    cpu_state *impl = be->impl;
    if (p)
        impl->mem.in_use -= malloc_usable_size(p);
    free(p);
}

static void cpu_mem_stats(pgd_backend *be, pgd_mem_stats *st)
{
    cpu_state *impl = be->impl;
    *st = impl->mem;
}

static int cpu_set_budget(pgd_backend *be, size_t bytes)
{
    cpu_state *impl = be->impl;
    impl->mem.budget = bytes;
    return 0;
}

static void cpu_copy(pgd_backend *be, void *dst, const void *src, size_t bytes)
{
    if (be->err.code || bytes == 0)
        return;
    memmove(dst, src, bytes);
}

static void cpu_zero(pgd_backend *be, void *p, size_t bytes)
{
    if (be->err.code || bytes == 0)
        return;
    memset(p, 0, bytes);
}

static void cpu_sync(pgd_backend *be)
{
}

float *pgd_cpu_scratch(pgd_backend *be, int slot, size_t floats)
{
    pgd_cpu_impl *impl = be->impl;
    if (be->err.code)
        return NULL;
    if (floats <= impl->scratch_floats[slot])
        return impl->scratch[slot];
    free(impl->scratch[slot]);
    impl->scratch[slot] = NULL;
    impl->scratch_floats[slot] = 0;
    if (floats > CPU_MAX_ALLOC / sizeof(float) || !(impl->scratch[slot] = malloc(floats * sizeof(float)))) {
        pgd_backend_fail(be, PGD_ENOMEM, "cpu scratch of %zu floats", floats);
        return NULL;
    }
    impl->scratch_floats[slot] = floats;
    return impl->scratch[slot];
}

static void cpu_destroy(pgd_backend *be)
{
    pgd_cpu_impl *impl = be->impl;
    for (int i = 0; impl && i < PGD_CPU_SCRATCH_COUNT; i++)
        free(impl->scratch[i]);
    free(impl);
    free(be);
}

static const pgd_backend_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .conv2d_forward = pgd_cpu_mp_conv2d_forward,
    .conv2d_backward_data = pgd_cpu_mp_conv2d_backward_data,
    .conv2d_backward_filter = pgd_cpu_mp_conv2d_backward_filter,
    .bn_forward_train = pgd_cpu_bn_forward_train,
    .bn_forward_eval = pgd_cpu_bn_forward_eval,
    .bn_backward = pgd_cpu_bn_backward,
    .relu_forward = pgd_cpu_relu_forward,
    .relu_backward = pgd_cpu_relu_backward,
    .maxpool_forward = pgd_cpu_maxpool_forward,
    .maxpool_backward = pgd_cpu_maxpool_backward,
    .avgpool_forward = pgd_cpu_avgpool_forward,
    .avgpool_backward = pgd_cpu_avgpool_backward,
    .global_avgpool_forward = pgd_cpu_global_avgpool_forward,
    .global_avgpool_backward = pgd_cpu_global_avgpool_backward,
    .linear_forward = pgd_cpu_mp_linear_forward,
    .linear_backward = pgd_cpu_mp_linear_backward,
    .dropout2d_forward = pgd_cpu_dropout2d_forward,
    .dropout2d_backward = pgd_cpu_dropout2d_backward,
    .add = pgd_cpu_add,
    .accumulate = pgd_cpu_accumulate,
    .scale = pgd_cpu_scale,
    .xent_forward = pgd_cpu_xent_forward,
    .xent_backward = pgd_cpu_xent_backward,
    .adam_update = pgd_cpu_adam_update,
    .sgd_update = pgd_cpu_sgd_update,
    .nonfinite = pgd_cpu_nonfinite,
    .u8_to_float = pgd_cpu_u8_to_float,
    .z_scatter = pgd_cpu_z_scatter,
    .z_gather = pgd_cpu_z_gather,
    .destroy = cpu_destroy,
    .mem_stats = cpu_mem_stats,
    .set_budget = cpu_set_budget,
};

pgd_backend *pgd_backend_cpu_new(int threads, pgd_err *err)
{
    pgd_backend *be = calloc(1, sizeof *be);
    cpu_state *impl = calloc(1, sizeof *impl);
    if (!be || !impl) {
        free(be);
        free(impl);
        pgd_fail(err, PGD_ENOMEM, "cpu backend");
        return NULL;
    }
    if (threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        threads = online > 0 ? (int)online : 1;
    }
    be->ops = &cpu_ops;
    be->threads = threads;
    be->impl = impl;
    /* OpenBLAS threads the sgemm calls; everything else runs on the calling thread. */
    openblas_set_num_threads(threads);
    return be;
}
