/* cuda_misc.cu: the small GPU ops: relu, linear (cuBLAS), dropout2d, elementwise, softmax cross-entropy,
 * input conversion and Z-block scatter/gather, each the CPU reference's formula (cpu_misc.c) per thread. */
#include "trainer/cuda_int.h"
#include "trainer/gpu_kernels.h"

#define GRID_LOOP(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)
#define LAUNCH(be, total) <<<pgd_cuda_blocks(total), PGD_CUDA_THREADS, 0, pgd_cuda(be)->stream>>>

/* --- relu: own kernels, so the rule at the cap (din = 0 where out == cap) is the CPU's exactly ----------- */

__global__ static void relu_fwd_kernel(float *out, const float *in, size_t count, float cap)
{
    GRID_LOOP(i, count)
    out[i] = pgd_gk_relu(in[i], cap);
}

__global__ static void relu_bwd_kernel(float *din, const float *dout, const float *out, size_t count, float cap)
{
    GRID_LOOP(i, count)
    din[i] = pgd_gk_relu_grad(dout[i], out[i], cap);
}

void pgd_cuda_relu_forward(pgd_backend *be, float *out, const float *in, size_t count, float cap)
{
    if (be->err.code || count == 0)
        return;
    relu_fwd_kernel LAUNCH(be, count)(out, in, count, cap);
    LAUNCH_CHECK(be, "relu_forward");
}

void pgd_cuda_relu_backward(pgd_backend *be, float *din, const float *dout, const float *out, size_t count,
                            float cap)
{
    if (be->err.code || count == 0)
        return;
    relu_bwd_kernel LAUNCH(be, count)(din, dout, out, count, cap);
    LAUNCH_CHECK(be, "relu_backward");
}

/* --- linear: cuBLAS is column-major; a row-major [r, c] matrix is its column-major transpose [c, r] ------- */

__global__ static void add_bias_kernel(float *out, const float *b, int o, size_t total)
{
    GRID_LOOP(i, total)
    out[i] += b[i % o];
}

/* db[j] += sum over rows of dout[row][j], in double as on the CPU (one thread per column: coalesced rows). */
__global__ static void bias_grad_kernel(float *db, const float *dout, int n, int o)
{
    GRID_LOOP(j, (size_t)o)
    {
        double sum = 0.0;
        for (int row = 0; row < n; row++)
            sum += dout[(size_t)row * o + j];
        db[j] += (float)sum;
    }
}

/* bf16 / fp16 (backend.h, "Precision"): the same products with cublasGemmEx on 16-bit copies of the operands
 * (staged by cuda_half.cu, released at the end of the call), fp32 accumulation (CUBLAS_COMPUTE_32F) and an fp32
 * C, which is written or accumulated unrounded. The handle's CUBLAS_DEFAULT_MATH lets 16-bit inputs use tensor
 * cores (only fp32 inputs would need CUBLAS_TF32_TENSOR_OP_MATH for TF32, which the backend never sets). */
static cudaDataType half_type(const pgd_backend *be)
{
    return be->precision == PGD_PREC_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

/* C [m, nc] (ld ldc, fp32) = alpha op(A) op(B) + beta C, A and B 16-bit: cublasSgemm's arguments for GemmEx. */
static int gemm_half(pgd_backend *be, cublasOperation_t ta, cublasOperation_t tb, int m, int nc, int k,
                     const float *alpha, const void *a, int lda, const void *b, int ldb, const float *beta, float *c,
                     int ldc)
{
    cudaDataType t = half_type(be);
    return BLAS_CHECK(be, cublasGemmEx(pgd_cuda(be)->cublas, ta, tb, m, nc, k, alpha, a, t, lda, b, t, ldb, beta, c,
                                       CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void linear_forward_half(pgd_backend *be, float *out, const float *in, const float *w, int n, int i, int o)
{
    void *hin = pgd_cuda_half_stage(be, in, (size_t)n * i);
    void *hw = pgd_cuda_half_stage(be, w, (size_t)o * i);
    const float one = 1.0f, zero = 0.0f;
    if (!be->err.code)
        gemm_half(be, CUBLAS_OP_T, CUBLAS_OP_N, o, n, i, &one, hw, i, hin, i, &zero, out, o);
    pgd_cuda_half_release(be, hin), pgd_cuda_half_release(be, hw);
}

/* w is staged only when din is asked for. The bias gradient is the caller's, from the fp32 dout. */
static void linear_backward_half(pgd_backend *be, float *din, float *dw, const float *dout, const float *in,
                                 const float *w, int n, int i, int o)
{
    void *hdout = pgd_cuda_half_stage(be, dout, (size_t)n * o);
    void *hw = din ? pgd_cuda_half_stage(be, w, (size_t)o * i) : NULL;
    void *hin = pgd_cuda_half_stage(be, in, (size_t)n * i);
    const float one = 1.0f, zero = 0.0f;
    if (!be->err.code && (!din || gemm_half(be, CUBLAS_OP_N, CUBLAS_OP_N, i, n, o, &one, hw, i, hdout, o, &zero, din,
                                            i) == 0))
        gemm_half(be, CUBLAS_OP_N, CUBLAS_OP_T, i, o, n, &one, hin, i, hdout, o, &one, dw, i);
    pgd_cuda_half_release(be, hdout), pgd_cuda_half_release(be, hw), pgd_cuda_half_release(be, hin);
}

/* out [n, o] = in [n, i] w^T: column-major out^T [o, n] (ld o) = (w^T [i, o], ld i)^T x in^T [i, n] (ld i). */
void pgd_cuda_linear_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *b, int n,
                             int i, int o)
{
    if (be->err.code)
        return;
    pgd_cuda_impl *impl = pgd_cuda(be);
    const float one = 1.0f, zero = 0.0f;
    if (be->precision != PGD_PREC_FP32)
        linear_forward_half(be, out, in, w, n, i, o);
    else
        BLAS_CHECK(be, cublasSgemm(impl->cublas, CUBLAS_OP_T, CUBLAS_OP_N, o, n, i, &one, w, i, in, i, &zero, out, o));
    if (be->err.code)
        return;
    if (b) {
        size_t total = (size_t)n * o;
        add_bias_kernel LAUNCH(be, total)(out, b, o, total);
    }
    LAUNCH_CHECK(be, "linear_forward");
}

/* din [n, i] = dout [n, o] w [o, i]:   column-major din^T [i, n] = w^T [i, o] (ld i) x dout^T [o, n] (ld o).
 * dw [o, i] += dout^T [o, n] in [n, i]: column-major dw^T [i, o] += in^T [i, n] (ld i) x (dout^T)^T [n, o]. */
void pgd_cuda_linear_backward(pgd_backend *be, float *din, float *dw, float *db, const float *dout,
                              const float *in, const float *w, int n, int i, int o)
{
    if (be->err.code)
        return;
    pgd_cuda_impl *impl = pgd_cuda(be);
    const float one = 1.0f, zero = 0.0f;
    if (be->precision != PGD_PREC_FP32) {
        linear_backward_half(be, din, dw, dout, in, w, n, i, o);
        if (be->err.code)
            return;
    } else {
        if (din && BLAS_CHECK(be, cublasSgemm(impl->cublas, CUBLAS_OP_N, CUBLAS_OP_N, i, n, o, &one, w, i, dout, o,
                                              &zero, din, i)) < 0)
            return;
        if (BLAS_CHECK(be, cublasSgemm(impl->cublas, CUBLAS_OP_N, CUBLAS_OP_T, i, o, n, &one, in, i, dout, o, &one,
                                       dw, i)) < 0)
            return;
    }
    if (db)
        bias_grad_kernel LAUNCH(be, (size_t)o)(db, dout, n, o);
    LAUNCH_CHECK(be, "linear_backward");
}

/* --- dropout2d: the mask from the same hash as the CPU, so it is identical bit for bit -------------------- */

__global__ static void dropout_mask_kernel(float *mask, size_t planes, float p, float keep,
                                           unsigned long long seed)
{
    GRID_LOOP(pl, planes)
    mask[pl] = pgd_gk_hash_uniform(seed, pl) >= p ? keep : 0.0f;
}

__global__ static void plane_scale_kernel(float *out, const float *in, const float *mask, int hw, size_t total)
{
    GRID_LOOP(i, total)
    out[i] = in[i] * mask[i / hw];
}

void pgd_cuda_dropout2d_forward(pgd_backend *be, float *out, float *mask, const float *in, int n, int c, int hw,
                                float p, uint64_t seed)
{
    if (be->err.code)
        return;
    size_t planes = (size_t)n * c, total = planes * hw;
    float keep = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    dropout_mask_kernel LAUNCH(be, planes)(mask, planes, p, keep, (unsigned long long)seed);
    if (total)
        plane_scale_kernel LAUNCH(be, total)(out, in, mask, hw, total);
    LAUNCH_CHECK(be, "dropout2d_forward");
}

void pgd_cuda_dropout2d_backward(pgd_backend *be, float *din, const float *dout, const float *mask, int n, int c,
                                 int hw)
{
    if (be->err.code)
        return;
    size_t total = (size_t)n * c * hw;
    if (total)
        plane_scale_kernel LAUNCH(be, total)(din, dout, mask, hw, total);
    LAUNCH_CHECK(be, "dropout2d_backward");
}

/* --- elementwise ------------------------------------------------------------------------------------------ */

__global__ static void add_kernel(float *out, const float *a, const float *b, size_t count)
{
    GRID_LOOP(i, count)
    out[i] = a[i] + b[i];
}

__global__ static void accumulate_kernel(float *dst, const float *src, size_t count)
{
    GRID_LOOP(i, count)
    dst[i] += src[i];
}

__global__ static void scale_kernel(float *x, float alpha, size_t count)
{
    GRID_LOOP(i, count)
    x[i] *= alpha;
}

void pgd_cuda_add(pgd_backend *be, float *out, const float *a, const float *b, size_t count)
{
    if (be->err.code || count == 0)
        return;
    add_kernel LAUNCH(be, count)(out, a, b, count);
    LAUNCH_CHECK(be, "add");
}

void pgd_cuda_accumulate(pgd_backend *be, float *dst, const float *src, size_t count)
{
    if (be->err.code || count == 0)
        return;
    accumulate_kernel LAUNCH(be, count)(dst, src, count);
    LAUNCH_CHECK(be, "accumulate");
}

void pgd_cuda_scale(pgd_backend *be, float *x, float alpha, size_t count)
{
    if (be->err.code || count == 0)
        return;
    scale_kernel LAUNCH(be, count)(x, alpha, count);
    LAUNCH_CHECK(be, "scale");
}

/* --- softmax cross-entropy: one thread per row, in double, the CPU's formula ------------------------------ */

__global__ static void xent_fwd_kernel(float *loss, float *probs, const float *logits, const int32_t *labels, int n,
                                       int c)
{
    GRID_LOOP(row, (size_t)n)
    loss[row] = pgd_gk_xent_row(probs + row * c, logits + row * c, c, labels[row]);
}

__global__ static void xent_bwd_kernel(float *dlogits, const float *probs, const int32_t *labels, int c,
                                       float scale, size_t total)
{
    GRID_LOOP(i, total)
    {
        float onehot = (int)(i % c) == labels[i / c] ? 1.0f : 0.0f;
        dlogits[i] = (probs[i] - onehot) * scale;
    }
}

void pgd_cuda_xent_forward(pgd_backend *be, float *loss, float *probs, const float *logits, const int32_t *labels,
                           int n, int c)
{
    if (be->err.code || n <= 0)
        return;
    xent_fwd_kernel LAUNCH(be, (size_t)n)(loss, probs, logits, labels, n, c);
    LAUNCH_CHECK(be, "xent_forward");
}

void pgd_cuda_xent_backward(pgd_backend *be, float *dlogits, const float *probs, const int32_t *labels, int n,
                            int c, float scale)
{
    if (be->err.code || n <= 0)
        return;
    size_t total = (size_t)n * c;
    xent_bwd_kernel LAUNCH(be, total)(dlogits, probs, labels, c, scale, total);
    LAUNCH_CHECK(be, "xent_backward");
}

/* --- uint8 HWC -> normalised float NCHW -------------------------------------------------------------------- */

#define U8_MAX_CHANNELS 16
struct norm_params {
    float mean[U8_MAX_CHANNELS], std[U8_MAX_CHANNELS];
};

__global__ static void u8_kernel(float *out, const uint8_t *in, size_t hw, int c, norm_params np, size_t total)
{
    GRID_LOOP(i, total)
    out[i] = pgd_gk_u8(in, hw, c, np.mean, np.std, i);
}

void pgd_cuda_u8_to_float(pgd_backend *be, float *out, const uint8_t *in, int n, int h, int w, int c,
                          const float *mean, const float *std)
{
    if (be->err.code)
        return;
    if (c <= 0 || c > U8_MAX_CHANNELS) {
        CUDA_FAIL(be, PGD_EINVAL, "cuda u8_to_float: %d channels (1 to %d supported)", c, U8_MAX_CHANNELS);
        return;
    }
    norm_params np;
    for (int ch = 0; ch < U8_MAX_CHANNELS; ch++) {
        np.mean[ch] = ch < c ? mean[ch] : 0.0f;
        np.std[ch] = ch < c ? std[ch] : 1.0f;
    }
    size_t hw = (size_t)h * w, total = (size_t)n * c * hw;
    if (total)
        u8_kernel LAUNCH(be, total)(out, in, hw, c, np, total);
    LAUNCH_CHECK(be, "u8_to_float");
}

/* --- Z cells: z[img][ch][cell] <-> feat[i][ch] ------------------------------------------------------------- */

__global__ static void z_scatter_kernel(float *z, const float *feat, const uint32_t *cell, int s, unsigned mn,
                                        size_t total)
{
    GRID_LOOP(t, total)
    z[pgd_gk_z_index(cell, s, mn, t)] = feat[t];
}

__global__ static void z_gather_kernel(float *dfeat, const float *dz, const uint32_t *cell, int s, unsigned mn,
                                       size_t total)
{
    GRID_LOOP(t, total)
    dfeat[t] = dz[pgd_gk_z_index(cell, s, mn, t)];
}

void pgd_cuda_z_scatter(pgd_backend *be, float *z, const float *feat, const uint32_t *cell, int count, int s,
                        int mn)
{
    if (be->err.code || count <= 0 || s <= 0)
        return;
    size_t total = (size_t)count * s;
    z_scatter_kernel LAUNCH(be, total)(z, feat, cell, s, (unsigned)mn, total);
    LAUNCH_CHECK(be, "z_scatter");
}

void pgd_cuda_z_gather(pgd_backend *be, float *dfeat, const float *dz, const uint32_t *cell, int count, int s,
                       int mn)
{
    if (be->err.code || count <= 0 || s <= 0)
        return;
    size_t total = (size_t)count * s;
    z_gather_kernel LAUNCH(be, total)(dfeat, dz, cell, s, (unsigned)mn, total);
    LAUNCH_CHECK(be, "z_gather");
}
