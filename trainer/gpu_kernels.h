/* gpu_kernels.h: the per-element bodies of the CUDA backend's own kernels, in plain C that nvcc compiles for the
 * device and gcc for the host, so that tests/test_gpu_kernels.c runs them on the CPU against the reference
 * backend. Each body computes one output element the way cpu_*.c does (same operations, same order). */
#ifndef PGD_GPU_KERNELS_H
#define PGD_GPU_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define PGD_HD __host__ __device__
#else
#define PGD_HD
#endif

/* The dropout hash of backend.h (pgd_hash_uniform), callable on the device: the same integer arithmetic. */
static inline PGD_HD float pgd_gk_hash_uniform(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* --- pooling over planes [h, w] -> [oh, ow] ---------------------------------------------------------------- */

typedef struct pgd_gk_pool {
    int h, w, oh, ow, size, stride, pad;
} pgd_gk_pool;

/* The window of output (oy, ox) clipped to the input: rows [y0, y1), columns [x0, x1) (cpu_pool.c's window). */
static inline PGD_HD void pgd_gk_window(const pgd_gk_pool *g, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    int ys = oy * g->stride - g->pad, xs = ox * g->stride - g->pad;
    int ye = ys + g->size, xe = xs + g->size;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ye > g->h ? g->h : ye;
    *x1 = xe > g->w ? g->w : xe;
}

/* The first maximum of the window in row-major order; a NaN wins (v != v), as on the CPU. */
static inline PGD_HD int pgd_gk_first_argmax(const float *plane, const pgd_gk_pool *g, int oy, int ox)
{
    int y0, y1, x0, x1;
    pgd_gk_window(g, oy, ox, &y0, &y1, &x0, &x1);
    int best = y0 * g->w + x0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            float v = plane[y * g->w + x];
            if (v > plane[best] || v != v)
                best = y * g->w + x;
        }
    return best;
}

/* The outputs along one axis whose window holds input coordinate y: [*lo, *hi], empty when lo > hi. Output o
 * covers [o stride - pad, o stride - pad + size), so o stride > y + pad - size and o stride <= y + pad. */
static inline PGD_HD void pgd_gk_covering(int y, int size, int stride, int pad, int on, int *lo, int *hi)
{
    int a = y + pad - size + 1;
    *lo = a <= 0 ? 0 : (a + stride - 1) / stride;
    *hi = (y + pad) / stride;
    if (*hi > on - 1)
        *hi = on - 1;
}

/* Output element i of [planes, oh, ow]. */
static inline PGD_HD float pgd_gk_maxpool_fwd(const float *in, const pgd_gk_pool *g, size_t i)
{
    size_t ohw = (size_t)g->oh * g->ow, pl = i / ohw;
    int o = (int)(i % ohw);
    const float *plane = in + pl * (size_t)g->h * g->w;
    return plane[pgd_gk_first_argmax(plane, g, o / g->ow, o % g->ow)];
}

/* Input-gradient element i of [planes, h, w]: the sum, in the CPU's (oy, ox) order, of the output gradients of
 * the windows whose first maximum is this cell. */
static inline PGD_HD float pgd_gk_maxpool_bwd(const float *dout, const float *in, const pgd_gk_pool *g, size_t i)
{
    size_t hw = (size_t)g->h * g->w, ohw = (size_t)g->oh * g->ow, pl = i / hw;
    int at = (int)(i % hw), oy0, oy1, ox0, ox1;
    const float *plane = in + pl * hw;
    pgd_gk_covering(at / g->w, g->size, g->stride, g->pad, g->oh, &oy0, &oy1);
    pgd_gk_covering(at % g->w, g->size, g->stride, g->pad, g->ow, &ox0, &ox1);
    float sum = 0.0f;
    for (int oy = oy0; oy <= oy1; oy++)
        for (int ox = ox0; ox <= ox1; ox++)
            if (pgd_gk_first_argmax(plane, g, oy, ox) == at)
                sum += dout[pl * ohw + (size_t)oy * g->ow + ox];
    return sum;
}

/* Average pooling divides by size^2 (count_include_pad); inv = 1 / size^2. */
static inline PGD_HD float pgd_gk_avgpool_fwd(const float *in, const pgd_gk_pool *g, size_t i, float inv)
{
    size_t ohw = (size_t)g->oh * g->ow, pl = i / ohw;
    int o = (int)(i % ohw), y0, y1, x0, x1;
    const float *plane = in + pl * (size_t)g->h * g->w;
    pgd_gk_window(g, o / g->ow, o % g->ow, &y0, &y1, &x0, &x1);
    float sum = 0.0f;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            sum += plane[y * g->w + x];
    return sum * inv;
}

static inline PGD_HD float pgd_gk_avgpool_bwd(const float *dout, const pgd_gk_pool *g, size_t i, float inv)
{
    size_t hw = (size_t)g->h * g->w, ohw = (size_t)g->oh * g->ow, pl = i / hw;
    int at = (int)(i % hw), oy0, oy1, ox0, ox1;
    pgd_gk_covering(at / g->w, g->size, g->stride, g->pad, g->oh, &oy0, &oy1);
    pgd_gk_covering(at % g->w, g->size, g->stride, g->pad, g->ow, &ox0, &ox1);
    float sum = 0.0f;
    for (int oy = oy0; oy <= oy1; oy++)
        for (int ox = ox0; ox <= ox1; ox++)
            sum += dout[pl * ohw + (size_t)oy * g->ow + ox] * inv;
    return sum;
}

/* --- activations, loss, data ------------------------------------------------------------------------------- */

static inline PGD_HD float pgd_gk_relu(float in, float cap)
{
    float x = in > 0.0f ? in : 0.0f;
    return cap > 0.0f && x > cap ? cap : x;
}

static inline PGD_HD float pgd_gk_relu_grad(float dout, float out, float cap)
{
    int pass = out > 0.0f && (cap <= 0.0f || out < cap);
    return pass ? dout : 0.0f;
}

/* One row of softmax cross-entropy: probs[c] written, the loss returned (NaN for a label outside [0, c)). */
static inline PGD_HD float pgd_gk_xent_row(float *pr, const float *x, int c, int label)
{
    float mx = x[0];
    for (int j = 1; j < c; j++)
        mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < c; j++)
        sum += exp((double)x[j] - mx);
    double lse = mx + log(sum);
    for (int j = 0; j < c; j++)
        pr[j] = (float)exp((double)x[j] - lse);
    return label >= 0 && label < c ? (float)(lse - x[label]) : (float)NAN;
}

/* Element i of the NCHW output from uint8 HWC pixels (hw = h w, c channels). */
static inline PGD_HD float pgd_gk_u8(const uint8_t *in, size_t hw, int c, const float *mean, const float *std,
                                     size_t i)
{
    size_t plane = i / hw, at = i % hw, img = plane / (size_t)c;
    int ch = (int)(plane % (size_t)c);
    return ((float)in[(img * hw + at) * (size_t)c + ch] / 255.0f - mean[ch]) / std[ch];
}

/* Where element t of feat [count, s] lives in z [b, s, mn]. */
static inline PGD_HD size_t pgd_gk_z_index(const uint32_t *cell, int s, unsigned mn, size_t t)
{
    size_t i = t / (size_t)s, img = cell[i] / mn, at = cell[i] % mn;
    return (img * (size_t)s + t % (size_t)s) * mn + at;
}

/* --- optimizers -------------------------------------------------------------------------------------------- */

/* Adam's per-element arguments; the step-dependent scalars are computed on the host as cpu_optim.c does. */
typedef struct pgd_gk_adam {
    float beta1, beta2, eps, weight_decay, grad_scale, bc2_sqrt, step_size, decay;
    int decoupled;
} pgd_gk_adam;

static inline pgd_gk_adam pgd_gk_adam_args(float lr, float beta1, float beta2, float eps, float weight_decay,
                                           int decoupled, int64_t step, float grad_scale)
{
    pgd_gk_adam a;
    a.beta1 = beta1;
    a.beta2 = beta2;
    a.eps = eps;
    a.weight_decay = weight_decay;
    a.grad_scale = grad_scale;
    float bc1 = (float)(1.0 - pow(beta1, (double)step));
    a.bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    a.step_size = lr / bc1;
    a.decay = decoupled ? 1.0f - lr * weight_decay : 1.0f;
    a.decoupled = decoupled;
    return a;
}

static inline PGD_HD void pgd_gk_adam_at(float *param, const float *grad, float *m, float *v, size_t i,
                                         const pgd_gk_adam *a)
{
    float g = grad[i] * a->grad_scale;
    if (!a->decoupled)
        g += a->weight_decay * param[i];
    float p = param[i] * a->decay;
    float mi = a->beta1 * m[i] + (1.0f - a->beta1) * g;
    float vi = a->beta2 * v[i] + (1.0f - a->beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / a->bc2_sqrt + a->eps;
    param[i] = p - a->step_size * mi / denom;
}

/* SGD: first = 1 at step 1 (the buffer starts as the gradient); mom is untouched when momentum is 0. */
static inline PGD_HD void pgd_gk_sgd_at(float *param, const float *grad, float *mom, size_t i, float lr,
                                        float momentum, float weight_decay, float grad_scale, int first)
{
    float g = grad[i] * grad_scale + weight_decay * param[i];
    if (momentum != 0.0f) {
        float b = first ? g : momentum * mom[i] + g;
        mom[i] = b;
        g = b;
    }
    param[i] -= lr * g;
}

/* --- 16-bit floats: bf16 and IEEE fp16 as bit patterns, rounded to nearest even -------------------------- */
/* The CUDA backend's conversion kernels and the CPU backend's emulation of half precision (cpu_half.c) share
 * these, so both round alike. Precision codes as pgd_precision of backend.h: 1 bf16, 2 fp16. */

static inline PGD_HD uint32_t pgd_gk_bits(float x)
{
    union { float f; uint32_t u; } v;
    v.f = x;
    return v.u;
}

static inline PGD_HD float pgd_gk_float(uint32_t u)
{
    union { float f; uint32_t u; } v;
    v.u = u;
    return v.f;
}

/* bf16 keeps float's exponent and the top 7 bits of its mantissa; a NaN stays a (quiet) NaN. */
static inline PGD_HD uint16_t pgd_gk_to_bf16(float x)
{
    uint32_t u = pgd_gk_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline PGD_HD float pgd_gk_from_bf16(uint16_t h)
{
    return pgd_gk_float((uint32_t)h << 16);
}

/* fp16: 5 exponent bits, 10 mantissa bits, subnormals; 65520 and above round to infinity. */
static inline PGD_HD uint16_t pgd_gk_to_fp16(float x)
{
    uint32_t u = pgd_gk_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)                         /* NaN: quiet, the top of the payload kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u)                        /* 65520 and up, and infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) {                      /* a normal fp16: 2^-14 and up */
        uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
    }
    uint32_t e = a >> 23;
    if (e < 102)                                 /* below 2^-25: rounds to zero */
        return sign;
    uint32_t m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e; /* units of 2^-24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

static inline PGD_HD float pgd_gk_from_fp16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return pgd_gk_float(sign | 0x7f800000u | (m << 13));
    if (e == 0)
        return pgd_gk_float(sign | pgd_gk_bits((float)m * (1.0f / 16777216.0f)));
    return pgd_gk_float(sign | ((e + 112) << 23) | (m << 13));
}

/* x rounded to precision prec (1 bf16, 2 fp16; anything else: x). */
static inline PGD_HD float pgd_gk_round(float x, int prec)
{
    return prec == 1 ? pgd_gk_from_bf16(pgd_gk_to_bf16(x)) : prec == 2 ? pgd_gk_from_fp16(pgd_gk_to_fp16(x)) : x;
}

/* One element of a finiteness check: 1 when x is an infinity or a NaN. */
static inline PGD_HD int pgd_gk_nonfinite(float x)
{
    return (pgd_gk_bits(x) & 0x7f800000u) == 0x7f800000u;
}

#endif
