/* cpu_int.h: what the CPU backend's files share: the op functions behind the table and the scratch buffers. */
#ifndef PGD_CPU_INT_H
#define PGD_CPU_INT_H

#include "trainer/backend.h"

/* Scratch buffers reused by conv and by the half-precision emulation; each grows, never shrinks. */
enum {
    PGD_CPU_SCRATCH_COLS,
    PGD_CPU_SCRATCH_WEIGHTS,
    PGD_CPU_SCRATCH_HALF_A,     /* cpu_half.c: rounded copies of operands, and a filter gradient */
    PGD_CPU_SCRATCH_HALF_B,
    PGD_CPU_SCRATCH_HALF_C,
    PGD_CPU_SCRATCH_COUNT
};

/* Backend-private state of the CPU backend (be->impl). */
typedef struct pgd_cpu_impl {
    float *scratch[PGD_CPU_SCRATCH_COUNT];
    size_t scratch_floats[PGD_CPU_SCRATCH_COUNT];
} pgd_cpu_impl;

/* At least `floats` floats of scratch buffer `slot` (PGD_CPU_SCRATCH_*), valid until the next call for that
 * slot; NULL (and the sticky error) when it cannot grow. Contents are undefined. PGD_CPU_SCRATCH_COLS holds
 * column matrices and staging, PGD_CPU_SCRATCH_WEIGHTS rearranged weights. */
float *pgd_cpu_scratch(pgd_backend *be, int slot, size_t floats);

/* cpu_conv.c */
void pgd_cpu_conv2d_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *bias,
                            const pgd_conv_shape *sh);
void pgd_cpu_conv2d_backward_data(pgd_backend *be, float *din, const float *dout, const float *w,
                                  const pgd_conv_shape *sh);
void pgd_cpu_conv2d_backward_filter(pgd_backend *be, float *dw, float *dbias, const float *dout, const float *in,
                                    const pgd_conv_shape *sh);
/* out [n, k, oh, ow] += bias [k] per channel. */
void pgd_cpu_conv_add_bias(float *out, const float *bias, const pgd_conv_shape *sh);
/* dbias [k] += dout summed over images and cells. */
void pgd_cpu_conv_bias_grad(float *dbias, const float *dout, const pgd_conv_shape *sh);

/* cpu_half.c: the conv and linear ops of the table, which emulate be->precision (backend.h) around the fp32
 * ones, and the finiteness check */
void pgd_cpu_mp_conv2d_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *bias,
                               const pgd_conv_shape *sh);
void pgd_cpu_mp_conv2d_backward_data(pgd_backend *be, float *din, const float *dout, const float *w,
                                     const pgd_conv_shape *sh);
void pgd_cpu_mp_conv2d_backward_filter(pgd_backend *be, float *dw, float *dbias, const float *dout,
                                       const float *in, const pgd_conv_shape *sh);
void pgd_cpu_mp_linear_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *b, int n,
                               int i, int o);
void pgd_cpu_mp_linear_backward(pgd_backend *be, float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *w, int n, int i, int o);
void pgd_cpu_nonfinite(pgd_backend *be, int32_t *flag, const float *x, size_t count);

/* cpu_norm.c */
void pgd_cpu_bn_forward_train(pgd_backend *be, float *out, float *save_mean, float *save_invstd, float *run_mean,
                              float *run_var, const float *in, const float *gamma, const float *beta,
                              const pgd_bn_shape *sh);
void pgd_cpu_bn_forward_eval(pgd_backend *be, float *out, const float *in, const float *gamma, const float *beta,
                             const float *run_mean, const float *run_var, const pgd_bn_shape *sh);
void pgd_cpu_bn_backward(pgd_backend *be, float *din, float *dgamma, float *dbeta, const float *dout,
                         const float *in, const float *gamma, const float *save_mean, const float *save_invstd,
                         const pgd_bn_shape *sh);

/* cpu_pool.c */
void pgd_cpu_maxpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh);
void pgd_cpu_maxpool_backward(pgd_backend *be, float *din, const float *dout, const float *in,
                              const pgd_pool_shape *sh);
void pgd_cpu_avgpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh);
void pgd_cpu_avgpool_backward(pgd_backend *be, float *din, const float *dout, const pgd_pool_shape *sh);
void pgd_cpu_global_avgpool_forward(pgd_backend *be, float *out, const float *in, int n, int c, int hw);
void pgd_cpu_global_avgpool_backward(pgd_backend *be, float *din, const float *dout, int n, int c, int hw);

/* cpu_misc.c */
void pgd_cpu_relu_forward(pgd_backend *be, float *out, const float *in, size_t count, float cap);
void pgd_cpu_relu_backward(pgd_backend *be, float *din, const float *dout, const float *out, size_t count,
                           float cap);
void pgd_cpu_linear_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *b, int n,
                            int i, int o);
void pgd_cpu_linear_backward(pgd_backend *be, float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, int n, int i, int o);
/* db [o] += the column sums of dout [n, o] (in double). */
void pgd_cpu_linear_bias_grad(float *db, const float *dout, int n, int o);
void pgd_cpu_dropout2d_forward(pgd_backend *be, float *out, float *mask, const float *in, int n, int c, int hw,
                               float p, uint64_t seed);
void pgd_cpu_dropout2d_backward(pgd_backend *be, float *din, const float *dout, const float *mask, int n, int c,
                                int hw);
void pgd_cpu_add(pgd_backend *be, float *out, const float *a, const float *b, size_t count);
void pgd_cpu_accumulate(pgd_backend *be, float *dst, const float *src, size_t count);
void pgd_cpu_scale(pgd_backend *be, float *x, float alpha, size_t count);
void pgd_cpu_xent_forward(pgd_backend *be, float *loss, float *probs, const float *logits, const int32_t *labels,
                          int n, int c);
void pgd_cpu_xent_backward(pgd_backend *be, float *dlogits, const float *probs, const int32_t *labels, int n,
                           int c, float scale);
void pgd_cpu_u8_to_float(pgd_backend *be, float *out, const uint8_t *in, int n, int h, int w, int c,
                         const float *mean, const float *std);
void pgd_cpu_z_scatter(pgd_backend *be, float *z, const float *feat, const uint32_t *cell, int count, int s,
                       int mn);
void pgd_cpu_z_gather(pgd_backend *be, float *dfeat, const float *dz, const uint32_t *cell, int count, int s,
                      int mn);

/* cpu_optim.c */
void pgd_cpu_adam_update(pgd_backend *be, float *param, const float *grad, float *m, float *v, size_t count,
                         const pgd_adam_hp *hp);
void pgd_cpu_sgd_update(pgd_backend *be, float *param, const float *grad, float *mom, size_t count,
                        const pgd_sgd_hp *hp);

#endif
