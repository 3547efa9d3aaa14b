/* cpu_misc.c: the small CPU ops: relu, linear, dropout2d, elementwise, softmax cross-entropy, input
 * conversion and Z-block scatter/gather. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "trainer/cpu_int.h"

void pgd_cpu_relu_forward(pgd_backend *be, float *out, const float *in, size_t count, float cap)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++) {
        float x = in[i] > 0.0f ? in[i] : 0.0f;
        out[i] = cap > 0.0f && x > cap ? cap : x;
    }
}

void pgd_cpu_relu_backward(pgd_backend *be, float *din, const float *dout, const float *out, size_t count,
                           float cap)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++) {
        int pass = out[i] > 0.0f && (cap <= 0.0f || out[i] < cap);
        din[i] = pass ? dout[i] : 0.0f;
    }
}

/* out [n, o] = in [n, i] x w^T [i, o] + b */
void pgd_cpu_linear_forward(pgd_backend *be, float *out, const float *in, const float *w, const float *b, int n,
                            int i, int o)
{
    if (be->err.code)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, in, i, w, i, 0.0f, out, o);
    if (b)
        for (int row = 0; row < n; row++)
            for (int j = 0; j < o; j++)
                out[(size_t)row * o + j] += b[j];
}

/* din [n, i] = dout [n, o] x w [o, i]; dw [o, i] += dout^T [o, n] x in [n, i]; db [o] += column sums of dout */
void pgd_cpu_linear_backward(pgd_backend *be, float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, int n, int i, int o)
{
    if (be->err.code)
        return;
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, i, o, 1.0f, dout, o, w, i, 0.0f, din, i);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, i, n, 1.0f, dout, o, in, i, 1.0f, dw, i);
    if (db)
        pgd_cpu_linear_bias_grad(db, dout, n, o);
}

void pgd_cpu_linear_bias_grad(float *db, const float *dout, int n, int o)
{
    for (int j = 0; j < o; j++) {
        double sum = 0.0;
        for (int row = 0; row < n; row++)
            sum += dout[(size_t)row * o + j];
        db[j] += (float)sum;
    }
}

/* Channel (img, ch) is kept when pgd_hash_uniform(seed, img * c + ch) >= p, so it survives with probability
 * 1 - p; p >= 1 drops everything. */
void pgd_cpu_dropout2d_forward(pgd_backend *be, float *out, float *mask, const float *in, int n, int c, int hw,
                               float p, uint64_t seed)
{
    if (be->err.code)
        return;
    float keep = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    for (size_t pl = 0; pl < (size_t)n * c; pl++)
        mask[pl] = pgd_hash_uniform(seed, pl) >= p ? keep : 0.0f;
    pgd_cpu_dropout2d_backward(be, out, in, mask, n, c, hw);
}

void pgd_cpu_dropout2d_backward(pgd_backend *be, float *din, const float *dout, const float *mask, int n, int c,
                                int hw)
{
    if (be->err.code)
        return;
    for (size_t pl = 0; pl < (size_t)n * c; pl++)
        for (int i = 0; i < hw; i++)
            din[pl * hw + i] = dout[pl * hw + i] * mask[pl];
}

void pgd_cpu_add(pgd_backend *be, float *out, const float *a, const float *b, size_t count)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++)
        out[i] = a[i] + b[i];
}

void pgd_cpu_accumulate(pgd_backend *be, float *dst, const float *src, size_t count)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++)
        dst[i] += src[i];
}

void pgd_cpu_scale(pgd_backend *be, float *x, float alpha, size_t count)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++)
        x[i] *= alpha;
}

/* Stable: with mx = max(logits), lse = mx + log(sum exp(logits - mx)); loss = lse - logit[label] and
 * probs = exp(logits - lse). No exp ever sees a positive argument. */
void pgd_cpu_xent_forward(pgd_backend *be, float *loss, float *probs, const float *logits, const int32_t *labels,
                          int n, int c)
{
    if (be->err.code)
        return;
    for (int row = 0; row < n; row++) {
        const float *x = logits + (size_t)row * c;
        float *pr = probs + (size_t)row * c;
        float mx = x[0];
        for (int j = 1; j < c; j++)
            mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < c; j++)
            sum += exp((double)x[j] - mx);
        double lse = mx + log(sum);
        for (int j = 0; j < c; j++)
            pr[j] = (float)exp((double)x[j] - lse);
        loss[row] = (float)(lse - x[labels[row]]);
    }
}

void pgd_cpu_xent_backward(pgd_backend *be, float *dlogits, const float *probs, const int32_t *labels, int n,
                           int c, float scale)
{
    if (be->err.code)
        return;
    for (int row = 0; row < n; row++)
        for (int j = 0; j < c; j++) {
            float onehot = j == labels[row] ? 1.0f : 0.0f;
            dlogits[(size_t)row * c + j] = (probs[(size_t)row * c + j] - onehot) * scale;
        }
}

void pgd_cpu_u8_to_float(pgd_backend *be, float *out, const uint8_t *in, int n, int h, int w, int c,
                         const float *mean, const float *std)
{
    if (be->err.code)
        return;
    size_t hw = (size_t)h * w;
    for (int img = 0; img < n; img++)
        for (int ch = 0; ch < c; ch++) {
            float *dst = out + ((size_t)img * c + ch) * hw;
            const uint8_t *src = in + (size_t)img * hw * c + ch;
            float m = mean[ch], sd = std[ch];
            for (size_t i = 0; i < hw; i++)
                dst[i] = ((float)src[i * c] / 255.0f - m) / sd;
        }
}

void pgd_cpu_z_scatter(pgd_backend *be, float *z, const float *feat, const uint32_t *cell, int count, int s,
                       int mn)
{
    if (be->err.code)
        return;
    for (int i = 0; i < count; i++) {
        size_t img = cell[i] / (uint32_t)mn, at = cell[i] % (uint32_t)mn;
        for (int ch = 0; ch < s; ch++)
            z[(img * s + ch) * mn + at] = feat[(size_t)i * s + ch];
    }
}

void pgd_cpu_z_gather(pgd_backend *be, float *dfeat, const float *dz, const uint32_t *cell, int count, int s,
                      int mn)
{
    if (be->err.code)
        return;
    for (int i = 0; i < count; i++) {
        size_t img = cell[i] / (uint32_t)mn, at = cell[i] % (uint32_t)mn;
        for (int ch = 0; ch < s; ch++)
            dfeat[(size_t)i * s + ch] = dz[(img * s + ch) * mn + at];
    }
}
