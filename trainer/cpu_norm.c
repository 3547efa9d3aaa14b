/* cpu_norm.c: batch norm on the CPU (train, eval, backward) with PyTorch's semantics. */
#include <math.h>

#include "trainer/cpu_int.h"

/* Statistics are summed in double: a channel can hold millions of values. The batch variance is the biased
 * one (divide by N) for normalising and the unbiased one (N - 1) for the running estimate, as in PyTorch. */
void pgd_cpu_bn_forward_train(pgd_backend *be, float *out, float *save_mean, float *save_invstd, float *run_mean,
                              float *run_var, const float *in, const float *gamma, const float *beta,
                              const pgd_bn_shape *sh)
{
    if (be->err.code)
        return;
    size_t hw = (size_t)sh->hw, count = (size_t)sh->n * hw;
    for (int ch = 0; ch < sh->c; ch++) {
        double sum = 0.0;
        for (int img = 0; img < sh->n; img++) {
            const float *x = in + ((size_t)img * sh->c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                sum += x[i];
        }
        double mean = sum / (double)count, ss = 0.0;
        for (int img = 0; img < sh->n; img++) {
            const float *x = in + ((size_t)img * sh->c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                double dev = x[i] - mean;
                ss += dev * dev;
            }
        }
        double var = ss / (double)count;
        double invstd = 1.0 / sqrt(var + sh->eps);
        float a = (float)(gamma[ch] * invstd), b = (float)(beta[ch] - mean * gamma[ch] * invstd);
        for (int img = 0; img < sh->n; img++) {
            const float *x = in + ((size_t)img * sh->c + ch) * hw;
            float *y = out + ((size_t)img * sh->c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                y[i] = a * x[i] + b;
        }
        save_mean[ch] = (float)mean;
        save_invstd[ch] = (float)invstd;
        if (run_mean && run_var) {
            double unbiased = count > 1 ? ss / (double)(count - 1) : var;
            run_mean[ch] = (float)((1.0 - sh->momentum) * run_mean[ch] + sh->momentum * mean);
            run_var[ch] = (float)((1.0 - sh->momentum) * run_var[ch] + sh->momentum * unbiased);
        }
    }
}

void pgd_cpu_bn_forward_eval(pgd_backend *be, float *out, const float *in, const float *gamma, const float *beta,
                             const float *run_mean, const float *run_var, const pgd_bn_shape *sh)
{
    if (be->err.code)
        return;
    size_t hw = (size_t)sh->hw;
    for (int ch = 0; ch < sh->c; ch++) {
        double invstd = 1.0 / sqrt((double)run_var[ch] + sh->eps);
        float a = (float)(gamma[ch] * invstd), b = (float)(beta[ch] - run_mean[ch] * gamma[ch] * invstd);
        for (int img = 0; img < sh->n; img++) {
            const float *x = in + ((size_t)img * sh->c + ch) * hw;
            float *y = out + ((size_t)img * sh->c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                y[i] = a * x[i] + b;
        }
    }
}

/* With xhat = (x - mean) invstd and N values per channel:
 *   dbeta += sum(dy), dgamma += sum(dy xhat),
 *   dx = gamma invstd (dy - sum(dy) / N - xhat sum(dy xhat) / N). */
void pgd_cpu_bn_backward(pgd_backend *be, float *din, float *dgamma, float *dbeta, const float *dout,
                         const float *in, const float *gamma, const float *save_mean, const float *save_invstd,
                         const pgd_bn_shape *sh)
{
    if (be->err.code)
        return;
    size_t hw = (size_t)sh->hw, count = (size_t)sh->n * hw;
    for (int ch = 0; ch < sh->c; ch++) {
        float mean = save_mean[ch], invstd = save_invstd[ch];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int img = 0; img < sh->n; img++) {
            const float *x = in + ((size_t)img * sh->c + ch) * hw;
            const float *dy = dout + ((size_t)img * sh->c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                sum_dy += dy[i];
                sum_dy_xhat += (double)dy[i] * ((x[i] - mean) * invstd);
            }
        }
        float k = gamma[ch] * invstd;
        float mean_dy = (float)(sum_dy / (double)count), mean_dy_xhat = (float)(sum_dy_xhat / (double)count);
        for (int img = 0; img < sh->n; img++) {
            const float *x = in + ((size_t)img * sh->c + ch) * hw;
            const float *dy = dout + ((size_t)img * sh->c + ch) * hw;
            float *dx = din + ((size_t)img * sh->c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                float xhat = (x[i] - mean) * invstd;
                dx[i] = k * (dy[i] - mean_dy - xhat * mean_dy_xhat);
            }
        }
        dgamma[ch] += (float)sum_dy_xhat;
        dbeta[ch] += (float)sum_dy;
    }
}
