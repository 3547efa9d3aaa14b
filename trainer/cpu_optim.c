/* cpu_optim.c: Adam / AdamW and SGD with momentum on the CPU, with torch.optim's exact update formulas. */
#include <math.h>

#include "trainer/cpu_int.h"

/* torch.optim.Adam / AdamW (amsgrad off), per element, with g = grad * grad_scale:
 *   Adam:  g += weight_decay * param            AdamW: param *= 1 - lr * weight_decay
 *   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
 *   param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps) */
void pgd_cpu_adam_update(pgd_backend *be, float *param, const float *grad, float *m, float *v, size_t count,
                         const pgd_adam_hp *hp)
{
    if (be->err.code)
        return;
    double step = (double)hp->step;
    float bc1 = (float)(1.0 - pow(hp->beta1, step));
    float bc2_sqrt = (float)sqrt(1.0 - pow(hp->beta2, step));
    float step_size = hp->lr / bc1;
    float decay = hp->decoupled ? 1.0f - hp->lr * hp->weight_decay : 1.0f;
    for (size_t i = 0; i < count; i++) {
        float g = grad[i] * hp->grad_scale;
        if (!hp->decoupled)
            g += hp->weight_decay * param[i];
        float p = param[i] * decay;
        m[i] = hp->beta1 * m[i] + (1.0f - hp->beta1) * g;
        v[i] = hp->beta2 * v[i] + (1.0f - hp->beta2) * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + hp->eps;
        param[i] = p - step_size * m[i] / denom;
    }
}

/* torch.optim.SGD (dampening 0, no Nesterov), with g = grad * grad_scale + weight_decay * param:
 *   step 1: buf = g; later: buf = momentum buf + g;   param -= lr buf
 * With momentum 0: param -= lr g, and mom is not touched (it may be NULL). */
void pgd_cpu_sgd_update(pgd_backend *be, float *param, const float *grad, float *mom, size_t count,
                        const pgd_sgd_hp *hp)
{
    if (be->err.code)
        return;
    for (size_t i = 0; i < count; i++) {
        float g = grad[i] * hp->grad_scale + hp->weight_decay * param[i];
        if (hp->momentum != 0.0f) {
            mom[i] = hp->step <= 1 ? g : hp->momentum * mom[i] + g;
            g = mom[i];
        }
        param[i] -= hp->lr * g;
    }
}
