/* backend.h: the trainer's compute backend, one table of ops with a CPU reference and a cuDNN implementation. */
#ifndef PGD_BACKEND_H
#define PGD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Rules for every op (both backends, tests/test_ops.c checks them):
 * - Tensors are fp32, NCHW, contiguous, in backend memory (host memory for the CPU backend, device memory for
 *   CUDA). Shapes are given by the *_shape structs or by explicit counts; a comment on each pointer says its
 *   shape. Pointers passed to one call do not overlap unless the op says so.
 * - Forward ops write their outputs (=). Backward ops write activation gradients (=) and ACCUMULATE parameter
 *   gradients (+=), so gradients of shared parameters and of accumulated steps need no extra pass.
 * - Ops return nothing. A failure (out of memory, a CUDA error) sets the backend's sticky error: later calls
 *   do nothing and pgd_backend_error() reports the first failure with its file:line. Callers check it when
 *   convenient (at least once per step).
 * - Random ops (dropout) take a 64-bit seed and draw from a counter-based hash of (seed, element index), so
 *   the CPU and GPU backends produce the same mask for the same seed.
 * - Precision (pgd_backend_set_precision; fp32 by default): in bf16 or fp16 the conv and linear ops round the
 *   tensors they multiply to that format (round to nearest even; fp16 overflows to infinity) and multiply-add
 *   in fp32, as tensor cores do. A conv also rounds what it writes (output, input gradient, and the filter
 *   gradient before it is added); a linear writes fp32 (cuBLAS with an fp32 output). Bias adds and bias
 *   gradients stay fp32. Storage stays fp32 and every other op stays fp32: parameters (the master weights),
 *   their accumulated gradients and the optimizer state never lose precision. gpu_kernels.h has the rounding
 *   both backends share; docs/gpu.md, "Mixed precision", the rest. */

typedef struct pgd_backend pgd_backend;

/* The format the conv and linear ops compute in (see the rules above). */
typedef enum pgd_precision {
    PGD_PREC_FP32 = 0,
    PGD_PREC_BF16 = 1,      /* 8 exponent bits, 7 mantissa bits: fp32's range, no loss scaling needed */
    PGD_PREC_FP16 = 2,      /* 5 exponent bits, 10 mantissa bits: gradients need loss scaling (trainer/scaler.h) */
} pgd_precision;

/* A 2-D convolution (cross-correlation, as in PyTorch): in [n, c, h, w] -> out [n, k, oh, ow], weights
 * [k, c / groups, r, s], optional bias [k]. groups divides c and k (groups == c == k is depthwise). */
typedef struct pgd_conv_shape {
    int n, c, h, w;         /* input */
    int k, r, s;            /* output channels, kernel height, kernel width */
    int stride, pad, groups;
    int oh, ow;             /* output size, set by pgd_conv_shape_init */
} pgd_conv_shape;

/* Fills oh/ow from the rest: oh = (h + 2 pad - r) / stride + 1. Returns -1 when the shape is invalid
 * (non-positive sizes, groups not dividing c and k, an empty output). */
int pgd_conv_shape_init(pgd_conv_shape *sh, pgd_err *err);

/* Element counts of a conv's input [n, c, h, w], output [n, k, oh, ow] and weights [k, c / groups, r, s]. */
static inline size_t pgd_conv_in_count(const pgd_conv_shape *sh)
{
    return (size_t)sh->n * sh->c * sh->h * sh->w;
}

static inline size_t pgd_conv_out_count(const pgd_conv_shape *sh)
{
    return (size_t)sh->n * sh->k * sh->oh * sh->ow;
}

static inline size_t pgd_conv_filter_count(const pgd_conv_shape *sh)
{
    return (size_t)sh->k * (sh->c / sh->groups) * sh->r * sh->s;
}

/* A pooling window over in [n, c, h, w] -> out [n, c, oh, ow]. Max pooling ignores padded cells; average
 * pooling counts them (PyTorch's count_include_pad = True). */
typedef struct pgd_pool_shape {
    int n, c, h, w;
    int size, stride, pad;
    int oh, ow;             /* set by pgd_pool_shape_init: floor((h + 2 pad - size) / stride) + 1 */
} pgd_pool_shape;

int pgd_pool_shape_init(pgd_pool_shape *sh, pgd_err *err);

/* Batch norm over the n x hw values of each of c channels of x [n, c, hw]. */
typedef struct pgd_bn_shape {
    int n, c, hw;
    float eps;              /* 1e-5 in torchvision */
    float momentum;         /* 0.1: running = (1 - momentum) running + momentum batch (unbiased variance) */
} pgd_bn_shape;

/* Adam (or AdamW when decoupled) with PyTorch's update rule and bias correction, and SGD with momentum. */
typedef struct pgd_adam_hp {
    float lr, beta1, beta2, eps;
    float weight_decay;
    int decoupled;          /* 0: Adam (decay added to the gradient), 1: AdamW (decay applied to the weight) */
    int64_t step;           /* 1 for the first update */
    float grad_scale;       /* gradients are multiplied by this first (1/epsilon for accumulated steps) */
} pgd_adam_hp;

typedef struct pgd_sgd_hp {
    float lr, momentum, weight_decay, grad_scale;
    int64_t step;           /* 1 for the first update: the momentum buffer starts as the gradient, as in PyTorch */
} pgd_sgd_hp;

/* Memory counters of a backend (pgd_backend_mem_stats). The CUDA backend reports its caching allocator, whose
 * blocks are rounded up to size classes; the CPU backend reports the bytes malloc gave its alloc calls. */
typedef struct pgd_mem_stats {
    size_t budget;          /* the cap on reserved bytes, 0 when there is none */
    size_t in_use;          /* bytes of live allocations (as reserved) */
    size_t cached;          /* bytes of freed blocks kept for reuse */
    size_t peak_in_use;     /* high-water mark of in_use */
    size_t peak_reserved;   /* high-water mark of in_use + cached: what the device had to hold */
    uint64_t allocs;        /* alloc calls served */
    uint64_t reuses;        /* ... of which from the cache */
    uint64_t raw_allocs;    /* allocations taken from the device (or malloc) */
    uint64_t failures;      /* requests refused (over budget or out of memory) */
} pgd_mem_stats;

typedef struct pgd_backend_ops {
    const char *name;       /* "cpu", "cuda" */

    /* --- memory ------------------------------------------------------------------------------------ */
    void *(*alloc)(pgd_backend *be, size_t bytes);                  /* zeroed; NULL + sticky error on failure */
    void (*free)(pgd_backend *be, void *p);                         /* NULL is fine */
    void (*upload)(pgd_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(pgd_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(pgd_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(pgd_backend *be, void *p, size_t bytes);
    void (*sync)(pgd_backend *be);                                  /* wait for all queued work */

    /* --- convolution ------------------------------------------------------------------------------- */
    void (*conv2d_forward)(pgd_backend *be, float *out /* [n,k,oh,ow] */, const float *in /* [n,c,h,w] */,
                           const float *w /* [k,c/g,r,s] */, const float *bias /* [k] or NULL */,
                           const pgd_conv_shape *sh);
    void (*conv2d_backward_data)(pgd_backend *be, float *din /* [n,c,h,w] = */, const float *dout /* [n,k,oh,ow] */,
                                 const float *w /* [k,c/g,r,s] */, const pgd_conv_shape *sh);
    void (*conv2d_backward_filter)(pgd_backend *be, float *dw /* [k,c/g,r,s] += */, float *dbias /* [k] += or NULL */,
                                   const float *dout /* [n,k,oh,ow] */, const float *in /* [n,c,h,w] */,
                                   const pgd_conv_shape *sh);

    /* --- batch norm ---------------------------------------------------------------------------------- */
    /* Train mode: normalise by the batch statistics, save mean and 1/sqrt(var + eps) (biased var) for the
     * backward pass, and update the running statistics (unbiased var) when run_mean is not NULL. */
    void (*bn_forward_train)(pgd_backend *be, float *out /* [n,c,hw] */, float *save_mean /* [c] */,
                             float *save_invstd /* [c] */, float *run_mean /* [c] or NULL */,
                             float *run_var /* [c] or NULL */, const float *in /* [n,c,hw] */,
                             const float *gamma /* [c] */, const float *beta /* [c] */, const pgd_bn_shape *sh);
    void (*bn_forward_eval)(pgd_backend *be, float *out /* [n,c,hw] */, const float *in /* [n,c,hw] */,
                            const float *gamma, const float *beta, const float *run_mean, const float *run_var,
                            const pgd_bn_shape *sh);
    /* The backward of train mode (batch statistics). */
    void (*bn_backward)(pgd_backend *be, float *din /* [n,c,hw] = */, float *dgamma /* [c] += */,
                        float *dbeta /* [c] += */, const float *dout /* [n,c,hw] */, const float *in /* [n,c,hw] */,
                        const float *gamma, const float *save_mean, const float *save_invstd,
                        const pgd_bn_shape *sh);

    /* --- activations --------------------------------------------------------------------------------- */
    /* out = max(x, 0), or min(max(x, 0), cap) when cap > 0 (ReLU6: cap = 6). out may equal in. */
    void (*relu_forward)(pgd_backend *be, float *out, const float *in, size_t count, float cap);
    /* din = dout where 0 < out < cap (or 0 < out without a cap), else 0; uses the forward OUTPUT, so the
     * forward may run in place. din may equal dout. */
    void (*relu_backward)(pgd_backend *be, float *din, const float *dout, const float *out, size_t count, float cap);

    /* --- pooling -------------------------------------------------------------------------------------- */
    void (*maxpool_forward)(pgd_backend *be, float *out /* [n,c,oh,ow] */, const float *in /* [n,c,h,w] */,
                            const pgd_pool_shape *sh);
    /* The gradient goes to the first maximum of each window (row-major scan), as in PyTorch's CPU code. */
    void (*maxpool_backward)(pgd_backend *be, float *din /* [n,c,h,w] = */, const float *dout /* [n,c,oh,ow] */,
                             const float *in /* [n,c,h,w] */, const pgd_pool_shape *sh);
    void (*avgpool_forward)(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh);
    void (*avgpool_backward)(pgd_backend *be, float *din /* = */, const float *dout, const pgd_pool_shape *sh);
    void (*global_avgpool_forward)(pgd_backend *be, float *out /* [n,c] */, const float *in /* [n,c,hw] */,
                                   int n, int c, int hw);
    void (*global_avgpool_backward)(pgd_backend *be, float *din /* [n,c,hw] = */, const float *dout /* [n,c] */,
                                    int n, int c, int hw);

    /* --- linear: out = in w^T + b (PyTorch's nn.Linear) ---------------------------------------------- */
    void (*linear_forward)(pgd_backend *be, float *out /* [n,o] */, const float *in /* [n,i] */,
                           const float *w /* [o,i] */, const float *b /* [o] or NULL */, int n, int i, int o);
    void (*linear_backward)(pgd_backend *be, float *din /* [n,i] = or NULL */, float *dw /* [o,i] += */,
                            float *db /* [o] += or NULL */, const float *dout /* [n,o] */,
                            const float *in /* [n,i] */, const float *w /* [o,i] */, int n, int i, int o);

    /* --- dropout2d: whole channels are zeroed with probability p, survivors scaled by 1/(1-p) ---------- */
    /* mask[n*c] receives 0 or 1/(1-p) per channel, drawn from (seed, index n*c + channel). */
    void (*dropout2d_forward)(pgd_backend *be, float *out /* [n,c,hw] */, float *mask /* [n,c] */,
                              const float *in /* [n,c,hw] */, int n, int c, int hw, float p, uint64_t seed);
    void (*dropout2d_backward)(pgd_backend *be, float *din /* [n,c,hw] = */, const float *dout,
                               const float *mask /* [n,c] */, int n, int c, int hw);

    /* --- elementwise ----------------------------------------------------------------------------------- */
    void (*add)(pgd_backend *be, float *out, const float *a, const float *b, size_t count); /* out may alias */
    void (*accumulate)(pgd_backend *be, float *dst, const float *src, size_t count);         /* dst += src */
    void (*scale)(pgd_backend *be, float *x, float alpha, size_t count);                   /* x *= alpha */

    /* --- loss: softmax cross-entropy with integer labels ------------------------------------------------ */
    /* loss[i] = -log softmax(logits[i])[labels[i]]; probs = softmax(logits). labels in [0, c). */
    void (*xent_forward)(pgd_backend *be, float *loss /* [n] */, float *probs /* [n,c] */,
                         const float *logits /* [n,c] */, const int32_t *labels /* [n] */, int n, int c);
    /* dlogits = (probs - onehot(labels)) * scale (scale = 1/n for a mean loss, divided again by epsilon). */
    void (*xent_backward)(pgd_backend *be, float *dlogits /* [n,c] = */, const float *probs,
                          const int32_t *labels, int n, int c, float scale);

    /* --- optimizers: one call per contiguous parameter buffer -------------------------------------------- */
    void (*adam_update)(pgd_backend *be, float *param, const float *grad, float *m, float *v, size_t count,
                        const pgd_adam_hp *hp);
    void (*sgd_update)(pgd_backend *be, float *param, const float *grad, float *mom, size_t count,
                       const pgd_sgd_hp *hp);

    /* --- finiteness: *flag (backend memory) = 1 when any of x[count] is an infinity or a NaN; otherwise left as it
     * was, so one flag can collect several buffers. ---------------------------------------------------------- */
    void (*nonfinite)(pgd_backend *be, int32_t *flag, const float *x, size_t count);

    /* --- data --------------------------------------------------------------------------------------------- */
    /* uint8 HWC patches -> normalised float NCHW: out = (x / 255 - mean[ch]) / std[ch]. */
    void (*u8_to_float)(pgd_backend *be, float *out /* [n,c,h,w] */, const uint8_t *in /* [n,h,w,c] */,
                        int n, int h, int w, int c, const float *mean /* [c] host */,
                        const float *std /* [c] host */);
    /* Z cells: feat row i is written to image cell[i] / cells_per_image, cell cell[i] % cells_per_image of
     * z [b, s, m*n] (cells_per_image = m*n), i.e. z[img][ch][cell] = feat[i][ch]. cell[] is in backend
     * memory; no two rows name the same cell. */
    void (*z_scatter)(pgd_backend *be, float *z /* [b,s,mn] */, const float *feat /* [count,s] */,
                      const uint32_t *cell /* [count] */, int count, int s, int mn);
    /* The inverse: dfeat[i][ch] = dz[img][ch][cell] (=). */
    void (*z_gather)(pgd_backend *be, float *dfeat /* [count,s] */, const float *dz /* [b,s,mn] */,
                     const uint32_t *cell /* [count] */, int count, int s, int mn);

    /* --- lifetime ------------------------------------------------------------------------------------- */
    /* Releases be->impl and everything the backend holds, then be itself; called by pgd_backend_free. */
    void (*destroy)(pgd_backend *be);

    /* --- memory counters (may be NULL: pgd_backend_mem_stats then reports zeros) ---------------------- */
    void (*mem_stats)(pgd_backend *be, pgd_mem_stats *st);

    /* --- a cap on the bytes alloc may hold (may be NULL: the backend takes its cap at creation, as the CUDA
     * backend does, and pgd_backend_set_budget refuses). 0: no cap. Returns 0, or -1 when the backend cannot
     * take it. --------------------------------------------------------------------------------------------- */
    int (*set_budget)(pgd_backend *be, size_t bytes);
} pgd_backend_ops;

struct pgd_backend {
    const pgd_backend_ops *ops;
    pgd_err err;            /* sticky: the first failure */
    int threads;            /* CPU threads the backend may use */
    pgd_precision precision; /* of the conv and linear ops (pgd_backend_set_precision) */
    void *impl;             /* backend-private state */
};

/* The CPU reference backend (im2col + OpenBLAS sgemm). threads <= 0: all online CPUs. */
pgd_backend *pgd_backend_cpu_new(int threads, pgd_err *err);

/* The CUDA backend (cuDNN + cuBLAS + its own kernels) on CUDA device `device`, with a caching allocator
 * capped at mem_budget_gb GiB of device memory (<= 0: no cap beyond the device's). Every device allocation of
 * the backend (tensors, cuDNN and cuBLAS workspaces) comes from that allocator. NULL with err set when the
 * build has no CUDA (PGD_HAVE_CUDA=0), there is no such device, or the libraries fail to start. Environment:
 * PGD_CUDA_SYNC=1 synchronises and checks for errors after every op (slow; for finding a failing kernel).
 * docs/gpu.md has the details. */
pgd_backend *pgd_backend_cuda_new(int device, double mem_budget_gb, pgd_err *err);

/* The number of usable CUDA devices (> 0), or 0 with a reason in why (no CUDA in this build, no driver, no
 * device). Never fails otherwise; tests use it to decide whether to skip. */
int pgd_cuda_device_count(char *why, size_t why_len);

/* The backend's memory counters (zeros for a backend without them). */
void pgd_backend_mem_stats(pgd_backend *be, pgd_mem_stats *st);

/* Caps the bytes the backend's alloc calls may hold at `bytes` (0: no cap), counted as pgd_mem_stats counts
 * in_use; an alloc that would pass it fails with a message naming the request, the budget and the bytes in use
 * (the sticky error, PGD_ENOMEM). The CPU backend takes it at any time (its conv scratch buffers are outside
 * it: see docs/trainer.md, "Memory budget"); the CUDA backend takes its cap at creation (mem_budget_gb), so
 * this fails with PGD_EINVAL there. */
int pgd_backend_set_budget(pgd_backend *be, size_t bytes, pgd_err *err);

/* Sets the precision of the conv and linear ops (the rules at the top); both backends take all three at any
 * time. Fails (PGD_EINVAL) on a value that is not a pgd_precision. */
int pgd_backend_set_precision(pgd_backend *be, pgd_precision prec, pgd_err *err);

/* "fp32", "bf16", "fp16" (pgd_precision_parse reads them back; -1 for another name). */
const char *pgd_precision_name(pgd_precision prec);
int pgd_precision_parse(const char *name);

/* Frees the backend and sets *be to NULL (NULL is fine). */
void pgd_backend_free(pgd_backend **be);

/* 0 while no op has failed; else -1, with the first failure copied into err. */
int pgd_backend_error(const pgd_backend *be, pgd_err *err);

/* Raise the sticky error (the first one wins); for backend implementations. Returns -1. */
#define pgd_backend_fail(be, code, ...) pgd_fail(&(be)->err, (code), __VA_ARGS__)

/* The dropout hash: a uniform float in [0, 1) from (seed, index), identical on every backend. */
static inline float pgd_hash_uniform(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

#endif
