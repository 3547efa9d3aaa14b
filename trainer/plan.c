/* plan.c: the trainer's memory plan: the buffers of nets, optimizer, Z and a forward, rounded as the backend does. */
#include "trainer/plan.h"

#include <stdio.h>
#include <string.h>

#include "trainer/gpu_pool.h"

#define MIB 1048576.0
#define CUBLAS_WORKSPACE ((size_t)32 << 20) /* trainer/cuda_backend.cu: CUBLAS_WORKSPACE_BYTES */
#define CONV_WS_CAP ((size_t)1 << 30)       /* trainer/cuda_backend.cu: CONV_WS_CAP_BYTES */

/* glibc's chunk for calloc(1, bytes) less its header, which malloc_usable_size reports: 16-byte steps from a
 * 24-byte minimum on the heap; whole pages less 16 bytes for requests of 128 KiB and more (served by mmap while
 * they are above the allocator's threshold, which starts there; below it they take the heap rule, up to 4 KiB
 * less, so the plan may be above the peak by that much per buffer, never below). */
static size_t round_cpu(size_t bytes)
{
    size_t n = bytes ? bytes : 1;
    if (n >= ((size_t)128 << 10))
        return ((n + 8 + 15) / 16 * 16 + 8 + 4095) / 4096 * 4096 - 16;
    size_t chunk = (n + 8 + 15) / 16 * 16;
    return (chunk < 32 ? 32 : chunk) - 8;
}

static size_t round_cuda(size_t bytes)
{
    return pgd_gpu_pool_round(bytes);
}

static int is_cuda(const pgd_backend *be)
{
    return be && strcmp(be->ops->name, "cuda") == 0;
}

size_t pgd_plan_round(const pgd_backend *be, size_t bytes)
{
    return is_cuda(be) ? round_cuda(bytes) : round_cpu(bytes);
}

size_t pgd_plan_overhead(const pgd_backend *be, size_t budget)
{
    if (!is_cuda(be))
        return 0;
    size_t ws = budget && budget / 4 < CONV_WS_CAP ? budget / 4 : CONV_WS_CAP;
    return round_cuda(CUBLAS_WORKSPACE) + round_cuda(ws);
}

/* A net's parameters, gradients and BN buffers (pgd_net_finish: one buffer each, at least one float). */
static size_t net_bytes(const pgd_plan *p, const pgd_net *net)
{
    size_t pc = pgd_net_param_count(net), bc = pgd_net_buffer_count(net);
    return 2 * p->round((pc ? pc : 1) * sizeof(float)) + p->round((bc ? bc : 1) * sizeof(float));
}

static size_t moment_bytes(const pgd_plan *p, const pgd_net *net)
{
    size_t pc = pgd_net_param_count(net);
    return (size_t)p->req.moments * p->round((pc ? pc : 1) * sizeof(float));
}

/* The per-forward buffers of pgd_patchgd_new (u8, x, cells, dfeat) or pgd_gd_new (u8, x, labels, loss, probs,
 * dlogits) for per samples. */
static size_t sample_buffers(const pgd_plan *p, size_t per)
{
    int c, h, w;
    pgd_net_in_shape(p->req.f, &c, &h, &w);
    size_t px = (size_t)c * h * w, out = pgd_net_out_count(p->req.f);
    size_t b = p->round(per * px) + p->round(per * px * sizeof(float));
    if (p->req.g)
        return b + p->round(per * sizeof(uint32_t)) + p->round(per * out * sizeof(float));
    return b + 2 * p->round(per * sizeof(int32_t)) + 2 * p->round(per * out * sizeof(float));
}

/* In bf16 / fp16 the CUDA backend holds 16-bit copies of a conv's or linear's operands while it runs (the CPU
 * backend keeps them in its scratch buffers, outside the budget): the largest such op of f at per samples or of
 * g at B images. */
static size_t half_staging(const pgd_plan *p, int per)
{
    const pgd_backend *be = pgd_net_backend(p->req.f);
    if (!is_cuda(be) || be->precision == PGD_PREC_FP32)
        return 0;
    size_t f = pgd_net_half_bytes(p->req.f, per, p->round);
    size_t g = p->req.g ? pgd_net_half_bytes(p->req.g, p->req.images, p->round) : 0;
    return f > g ? f : g;
}

size_t pgd_plan_bytes(const pgd_plan *p, int per)
{
    if (per < 1)
        return p->fixed;
    return p->fixed + pgd_net_plan_bytes(p->req.f, per, p->round) + sample_buffers(p, (size_t)per) +
           half_staging(p, per);
}

static int fits(const pgd_plan *p, int per)
{
    return pgd_plan_bytes(p, per) <= p->req.budget;
}

int pgd_plan_make(const pgd_plan_req *req, pgd_plan *p, pgd_err *err)
{
    memset(p, 0, sizeof *p);
    if (!req->f || req->images < 1 || req->budget == 0 || req->moments < 0 || req->moments > 2)
        return pgd_fail(err, PGD_EINVAL, "memory plan: needs a backbone, images >= 1, a budget and 0..2 moments");
    p->req = *req;
    p->round = is_cuda(pgd_net_backend(req->f)) ? round_cuda : round_cpu;
    size_t B = (size_t)req->images;
    p->nets = net_bytes(p, req->f);
    p->moments = moment_bytes(p, req->f);
    if (req->g) {
        int gc, gh, gw;
        pgd_net_in_shape(req->g, &gc, &gh, &gw);
        if ((size_t)gc != pgd_net_out_count(req->f))
            return pgd_fail(err, PGD_EINVAL, "memory plan: the head takes %d channels, the backbone gives %zu", gc,
                            pgd_net_out_count(req->f));
        size_t nz = B * (size_t)gc * gh * gw, classes = pgd_net_out_count(req->g);
        p->nets += net_bytes(p, req->g);
        p->moments += moment_bytes(p, req->g);
        p->z = 2 * p->round(nz * sizeof(float));
        p->head = pgd_net_plan_bytes(req->g, req->images, p->round) + 2 * p->round(B * sizeof(int32_t)) +
                  2 * p->round(B * classes * sizeof(float));
    }
    p->fixed = req->overhead + p->nets + p->moments + p->z + p->head;
    if (req->moments > 0 && pgd_net_backend(req->f)->precision == PGD_PREC_FP16)
        p->fixed += p->round(sizeof(int32_t)); /* the loss scaler's flag */
    p->per_patch = pgd_plan_bytes(p, 2) - pgd_plan_bytes(p, 1);
    /* bytes grow with per: double to the first that does not fit, then bisect */
    int lo = 0, hi = 1;
    while (hi <= PGD_PLAN_MAX_FORWARD && fits(p, hi))
        lo = hi, hi = hi < PGD_PLAN_MAX_FORWARD / 2 ? 2 * hi : PGD_PLAN_MAX_FORWARD + 1;
    if (hi > PGD_PLAN_MAX_FORWARD)
        hi = PGD_PLAN_MAX_FORWARD + 1;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (fits(p, mid))
            lo = mid;
        else
            hi = mid;
    }
    p->most = lo;
    return 0;
}

/* A budget as "4.00 GiB" from 1 GiB on, "2.60 MiB" below. */
static const char *budget_text(size_t bytes, char *buf, size_t len)
{
    if (bytes >= ((size_t)1 << 30))
        snprintf(buf, len, "%.2f GiB", bytes / (1024 * MIB));
    else
        snprintf(buf, len, "%.2f MiB", bytes / MIB);
    return buf;
}

static const char *units(const pgd_plan *p, int n)
{
    return p->req.g ? (n == 1 ? "patch" : "patches") : (n == 1 ? "image" : "images");
}

int pgd_plan_check(const pgd_plan *p, int per, const char *what, const char *hint, pgd_err *err)
{
    if (per <= p->most)
        return 0;
    const char *unit = units(p, 1);
    char b[32];
    size_t need = pgd_plan_bytes(p, per);
    if (p->most == 0)
        return pgd_fail(err, PGD_EINVAL,
                        "memory budget %s: %s needs %.1f MiB: nets %.1f + optimizer %.1f + Z %.1f + head %.1f "
                        "+ backend %.1f = %.1f MiB fixed, and %.1f MiB per %s; not even one %s per forward fits%s%s",
                        budget_text(p->req.budget, b, sizeof b), what, need / MIB, p->nets / MIB, p->moments / MIB,
                        p->z / MIB, p->head / MIB, p->req.overhead / MIB, p->fixed / MIB, p->per_patch / MIB, unit,
                        unit, hint ? "; " : "", hint ? hint : "");
    return pgd_fail(err, PGD_EINVAL,
                    "memory budget %s: %s needs %.1f MiB (%.1f MiB fixed + %.1f MiB per %s); at most %d %s "
                    "per forward fit%s%s",
                    budget_text(p->req.budget, b, sizeof b), what, need / MIB, p->fixed / MIB, p->per_patch / MIB,
                    unit, p->most, units(p, p->most), hint ? "; " : "", hint ? hint : "");
}

void pgd_plan_describe(const pgd_plan *p, int fill, int chunk, char *buf, size_t len)
{
    int per = chunk > fill ? chunk : fill;
    size_t used = pgd_plan_bytes(p, per), f_act = used - p->fixed;
    const char *net = p->req.g ? "backbone" : "classifier";
    char b[32];
    int n = snprintf(buf, len,
                     "memory plan: budget %s = backend %.1f MiB + nets %.1f MiB + optimizer %.1f MiB + Z %.1f "
                     "MiB + head %.1f MiB + %s %.1f MiB for %d %s + free %.1f MiB; %s %.2f MiB per %s: ",
                     budget_text(p->req.budget, b, sizeof b), p->req.overhead / MIB, p->nets / MIB,
                     p->moments / MIB, p->z / MIB, p->head / MIB, net, f_act / MIB, per, units(p, per),
                     used <= p->req.budget ? (p->req.budget - used) / MIB : 0.0, net, p->per_patch / MIB,
                     units(p, 1));
    if (n < 0 || (size_t)n >= len)
        return;
    if (!p->req.g)
        snprintf(buf + n, len - (size_t)n, "%d %s per step, at most %d fit", fill, units(p, fill), p->most);
    else if (chunk < 0)
        snprintf(buf + n, len - (size_t)n, "Z-filling %d %s per forward (at most %d fit)", fill, units(p, fill),
                 p->most);
    else if (chunk > 0)
        snprintf(buf + n, len - (size_t)n,
                 "Z-filling %d %s per forward, inner steps in chunks of %d (at most %d fit)", fill, units(p, fill),
                 chunk, p->most);
    else
        snprintf(buf + n, len - (size_t)n,
                 "Z-filling %d %s per forward, an inner step's patches in one forward of at most %d", fill,
                 units(p, fill), p->most);
}
