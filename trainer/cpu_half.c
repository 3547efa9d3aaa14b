/* cpu_half.c: bf16 and fp16 on the CPU: the conv and linear ops round their operands and results as backend.h
 * says (with gpu_kernels.h's rounding, as the CUDA backend converts) around the fp32 ops, and the finiteness
 * check that dynamic loss scaling reads. */
#include "trainer/cpu_int.h"
#include "trainer/gpu_kernels.h"

static void round_all(float *x, size_t count, int prec)
{
    for (size_t i = 0; i < count; i++)
        x[i] = pgd_gk_round(x[i], prec);
}

/* A copy of src[count] rounded to the backend's precision, in scratch slot `slot`; NULL with the sticky error. */
static const float *rounded(pgd_backend *be, int slot, const float *src, size_t count)
{
    float *dst = pgd_cpu_scratch(be, slot, count ? count : 1);
    if (!dst)
        return NULL;
    for (size_t i = 0; i < count; i++)
        dst[i] = pgd_gk_round(src[i], be->precision);
    return dst;
}

void pgd_cpu_mp_conv2d_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *bias,
                               const pgd_conv_shape *sh)
{
    if (be->precision == PGD_PREC_FP32 || be->err.code) {
        pgd_cpu_conv2d_forward(be, out, in, w, bias, sh);
        return;
    }
    const float *hin = rounded(be, PGD_CPU_SCRATCH_HALF_A, in, pgd_conv_in_count(sh));
    const float *hw = rounded(be, PGD_CPU_SCRATCH_HALF_B, w, pgd_conv_filter_count(sh));
    if (!hin || !hw)
        return;
    pgd_cpu_conv2d_forward(be, out, hin, hw, NULL, sh);
    round_all(out, pgd_conv_out_count(sh), be->precision);
    if (bias)
        pgd_cpu_conv_add_bias(out, bias, sh); /* fp32, after the rounding */
}

void pgd_cpu_mp_conv2d_backward_data(pgd_backend *be, float *din, const float *dout, const float *w,
                                     const pgd_conv_shape *sh)
{
    if (be->precision == PGD_PREC_FP32 || be->err.code) {
        pgd_cpu_conv2d_backward_data(be, din, dout, w, sh);
        return;
    }
    const float *hdout = rounded(be, PGD_CPU_SCRATCH_HALF_A, dout, pgd_conv_out_count(sh));
    const float *hw = rounded(be, PGD_CPU_SCRATCH_HALF_B, w, pgd_conv_filter_count(sh));
    if (!hdout || !hw)
        return;
    pgd_cpu_conv2d_backward_data(be, din, hdout, hw, sh);
    round_all(din, pgd_conv_in_count(sh), be->precision);
}

/* The filter gradient of this call is rounded before it is added to dw (cuDNN writes it in the half format). */
void pgd_cpu_mp_conv2d_backward_filter(pgd_backend *be, float *dw, float *dbias, const float *dout,
                                       const float *in, const pgd_conv_shape *sh)
{
    if (be->precision == PGD_PREC_FP32 || be->err.code) {
        pgd_cpu_conv2d_backward_filter(be, dw, dbias, dout, in, sh);
        return;
    }
    size_t nw = pgd_conv_filter_count(sh);
    const float *hdout = rounded(be, PGD_CPU_SCRATCH_HALF_A, dout, pgd_conv_out_count(sh));
    const float *hin = rounded(be, PGD_CPU_SCRATCH_HALF_B, in, pgd_conv_in_count(sh));
    float *part = pgd_cpu_scratch(be, PGD_CPU_SCRATCH_HALF_C, nw);
    if (!hdout || !hin || !part)
        return;
    for (size_t i = 0; i < nw; i++)
        part[i] = 0.0f;
    pgd_cpu_conv2d_backward_filter(be, part, NULL, hdout, hin, sh);
    for (size_t i = 0; i < nw; i++)
        dw[i] += pgd_gk_round(part[i], be->precision);
    if (dbias)
        pgd_cpu_conv_bias_grad(dbias, dout, sh);
}

void pgd_cpu_mp_linear_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *b, int n,
                               int i, int o)
{
    if (be->precision == PGD_PREC_FP32 || be->err.code) {
        pgd_cpu_linear_forward(be, out, in, w, b, n, i, o);
        return;
    }
    const float *hin = rounded(be, PGD_CPU_SCRATCH_HALF_A, in, (size_t)n * i);
    const float *hw = rounded(be, PGD_CPU_SCRATCH_HALF_B, w, (size_t)o * i);
    if (hin && hw)
        pgd_cpu_linear_forward(be, out, hin, hw, b, n, i, o);
}

void pgd_cpu_mp_linear_backward(pgd_backend *be, float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *w, int n, int i, int o)
{
    if (be->precision == PGD_PREC_FP32 || be->err.code) {
        pgd_cpu_linear_backward(be, din, dw, db, dout, in, w, n, i, o);
        return;
    }
    const float *hdout = rounded(be, PGD_CPU_SCRATCH_HALF_A, dout, (size_t)n * o);
    const float *hin = rounded(be, PGD_CPU_SCRATCH_HALF_B, in, (size_t)n * i);
    const float *hw = rounded(be, PGD_CPU_SCRATCH_HALF_C, w, (size_t)o * i);
    if (!hdout || !hin || !hw)
        return;
    pgd_cpu_linear_backward(be, din, dw, NULL, hdout, hin, hw, n, i, o);
    if (db)
        pgd_cpu_linear_bias_grad(db, dout, n, o);
}

void pgd_cpu_nonfinite(pgd_backend *be, int32_t *flag, const float *x, size_t count)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++)
        if (pgd_gk_nonfinite(x[i])) {
            *flag = 1;
            return;
        }
}
