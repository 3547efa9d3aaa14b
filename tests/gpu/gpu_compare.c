/* gpu_compare.c: runs a model (or one PatchGD step) on the cpu or cuda backend from weights and inputs that
 * tests/gpu/torch_compare.py wrote, and writes the results as .npy files for it to compare with PyTorch.
 *
 *   gpu_compare net --arch A --size S --classes C --weights W.safetensors --input X.npy --labels L.npy
 *               [--bn train|frozen] [--loss-scale S] --backend cpu|cuda --out DIR
 *       X [n, 3, S, S] float32, L [n] float32 (class indices). Train mode forward (BN batch statistics; with
 *       --bn frozen BN uses the running statistics, as PyTorch's eval(), dropout still on), mean
 *       cross-entropy, backward (of S x the loss, as fp16 training scales it, the gradients divided by S after). Writes DIR/logits.npy [n, C], DIR/loss.npy [1], DIR/grad.NAME.npy for every
 *       parameter, DIR/buffer.NAME.npy for every BN running statistic after the forward, and for nets whose
 *       classifier starts with dropout (mobilenet_v2) DIR/dropout_mask.npy [n, features], the mask the forward
 *       drew (0 or 1/(1-p)), so that PyTorch can apply the same one.
 *
 *   gpu_compare patchgd --arch A --patch P --s S --grid M N --images B --width W --classes C --max-patches K
 *               --lr LR --weights W.safetensors --pixels PIX.npy --cells CELLS.npy --labels L.npy
 *               --backend cpu|cuda --out DIR
 *       PIX [B*M*N, P, P, 3] uint8: every patch of every image in cell order (cell = image*M*N + row*N + col).
 *       Z-filling of all cells in chunks of K patches (BN in train mode, as the reference code), then one inner
 *       step per row of CELLS (float32 cell numbers, [steps, count] or [count] for one step, count at most K)
 *       with labels L [B], head dropout 0: each step's fresh features overwrite their Z cells for the next,
 *       and the gradients accumulate (epsilon steps + 1, so they can be read); then the pending update is
 *       applied (Adam, lr LR, grads / steps). Writes z.npy [B, S, M, N] after the fill, loss.npy [steps],
 *       grad.NAME.npy (the sum over the steps), and param.NAME.npy after the update, for the backbone's
 *       tensors and the head's ("head.*").
 *
 *   Both take --precision fp32|bf16|fp16 (fp32): what the backend's conv and linear ops compute in (backend.h).
 *
 *   gpu_compare init --arch A --size S --classes C --out W.safetensors
 *   gpu_compare init --arch A --patch P --s S --grid M N --width W --classes C --out W.safetensors
 *       Writes our own initialisation of the net (or of backbone + head) as a checkpoint: the CPU smoke run of
 *       torch_compare.py uses it where there is no PyTorch to export torchvision's.
 * Exit status 0 on success, 1 on failure (with the message), 2 on a bad command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/npy.h"
#include "common/rng.h"
#include "trainer/backend.h"
#include "trainer/ckpt.h"
#include "trainer/model.h"
#include "trainer/net.h"
#include "trainer/optim.h"
#include "trainer/patchgd.h"

#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "protect_shadow_gap=0"; /* the CUDA driver reserves addresses in ASan's shadow gap */
}
#endif

typedef struct args {
    const char *mode, *arch, *weights, *input, *labels, *pixels, *cells, *backend, *out, *precision, *bn;
    int size, classes, patch, s, m, n, images, width, max_patches;
    float lr, loss_scale;
} args;

static int usage(const char *why)
{
    fprintf(stderr, "gpu_compare: %s\nusage: see the comment atop tests/gpu/gpu_compare.c\n", why);
    return 2;
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->backend = "cuda";
    a->precision = "fp32";
    a->bn = "train";
    a->lr = 1e-3f;
    a->loss_scale = 1.0f;
    if (argc < 2)
        return -1;
    a->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return -1;
        i++;
        if (!strcmp(k, "--arch")) a->arch = v;
        else if (!strcmp(k, "--weights")) a->weights = v;
        else if (!strcmp(k, "--input")) a->input = v;
        else if (!strcmp(k, "--labels")) a->labels = v;
        else if (!strcmp(k, "--pixels")) a->pixels = v;
        else if (!strcmp(k, "--cells")) a->cells = v;
        else if (!strcmp(k, "--backend")) a->backend = v;
        else if (!strcmp(k, "--out")) a->out = v;
        else if (!strcmp(k, "--precision")) a->precision = v;
        else if (!strcmp(k, "--bn")) a->bn = v;
        else if (!strcmp(k, "--size")) a->size = atoi(v);
        else if (!strcmp(k, "--classes")) a->classes = atoi(v);
        else if (!strcmp(k, "--patch")) a->patch = atoi(v);
        else if (!strcmp(k, "--s")) a->s = atoi(v);
        else if (!strcmp(k, "--images")) a->images = atoi(v);
        else if (!strcmp(k, "--width")) a->width = atoi(v);
        else if (!strcmp(k, "--max-patches")) a->max_patches = atoi(v);
        else if (!strcmp(k, "--lr")) a->lr = (float)atof(v);
        else if (!strcmp(k, "--loss-scale")) a->loss_scale = (float)atof(v);
        else if (!strcmp(k, "--grid")) {
            a->m = atoi(v);
            if (i + 1 >= argc)
                return -1;
            a->n = atoi(argv[++i]);
        } else
            return -1;
    }
    if ((strcmp(a->bn, "train") != 0 && strcmp(a->bn, "frozen") != 0) || !(a->loss_scale > 0.0f))
        return -1;
    if (!strcmp(a->mode, "init"))
        return a->arch && a->out ? 0 : -1;
    return a->arch && a->weights && a->labels && a->out ? 0 : -1;
}

static pgd_backend *open_backend(const char *name, pgd_err *err)
{
    if (!strcmp(name, "cpu"))
        return pgd_backend_cpu_new(0, err);
    if (!strcmp(name, "cuda"))
        return pgd_backend_cuda_new(0, 0, err);
    pgd_fail(err, PGD_EINVAL, "unknown backend '%s' (cpu or cuda)", name);
    return NULL;
}

/* Writes `count` floats of backend memory to DIR/PREFIX.NAME.npy with the given shape. */
static int write_dev(pgd_backend *be, const char *dir, const char *prefix, const char *name, const float *src,
                     const size_t *shape, int ndim, size_t count, pgd_err *err)
{
    float *h = malloc((count ? count : 1) * sizeof(float));
    if (!h)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    be->ops->download(be, h, src, count * sizeof(float));
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s%s.npy", dir, prefix, prefix[0] ? "." : "", name);
    int rc = pgd_backend_error(be, err) == 0 ? pgd_npy_write(path, PGD_NPY_F32, shape, ndim, h, err) : -1;
    free(h);
    return rc;
}

/* grad.NAME.npy (or param.NAME.npy / buffer.NAME.npy) for every tensor of the kind. */
static int write_tensors(pgd_net *net, const char *dir, const char *prefix, pgd_tensor_kind kind, const float *base,
                         pgd_err *err)
{
    for (int t = 0; t < pgd_net_tensor_count(net); t++) {
        const pgd_tensor_info *ti = pgd_net_tensor(net, t);
        if (ti->kind != kind)
            continue;
        size_t shape[4];
        for (int d = 0; d < ti->ndim; d++)
            shape[d] = (size_t)ti->shape[d];
        if (write_dev(pgd_net_backend(net), dir, prefix, ti->name, base + ti->offset, shape, ti->ndim, ti->count,
                      err) != 0)
            return -1;
    }
    return 0;
}

static int read_f32(const char *path, pgd_npy *a, size_t want, pgd_err *err)
{
    if (pgd_npy_read(path, a, err) != 0)
        return -1;
    if (a->dtype != PGD_NPY_F32 || (want && a->count != want))
        return pgd_fail(err, PGD_EINVAL, "%s: want %zu float32 values, found %zu of dtype %d", path, want, a->count,
                        (int)a->dtype);
    return 0;
}

/* The dropout mask node `node` drew in a forward with `seed`: the rule of net_run.c (a child stream of the
 * seed keyed by the node id) and backend.h (channel kept when the hash >= p). Checked against the node's
 * output / input wherever the input is not 0, so a change of that rule is caught rather than silently
 * compared against the wrong mask. */
static int dropout_mask(pgd_net *net, int node, uint64_t seed, int n, float p, const char *dir, pgd_err *err)
{
    int c, h, w;
    pgd_net_node_shape(net, node, &c, &h, &w);
    size_t count = (size_t)n * c * h * w, planes = (size_t)n * c, hw = (size_t)h * w;
    pgd_rng root, child;
    pgd_rng_seed(&root, seed);
    child = pgd_rng_split(&root, (uint64_t)node);
    uint64_t node_seed = pgd_rng_u64(&child);
    float *mask = malloc(planes * sizeof(float)), *in = malloc(count * sizeof(float)), *out = malloc(count * sizeof(float));
    int rc = -1;
    if (!mask || !in || !out) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t pl = 0; pl < planes; pl++)
        mask[pl] = pgd_hash_uniform(node_seed, pl) >= p ? 1.0f / (1.0f - p) : 0.0f;
    pgd_backend *be = pgd_net_backend(net);
    be->ops->download(be, in, pgd_net_node_output(net, node - 1), count * sizeof(float));
    be->ops->download(be, out, pgd_net_node_output(net, node), count * sizeof(float));
    if (pgd_backend_error(be, err) != 0)
        goto done;
    for (size_t i = 0; i < count; i++)
        if (in[i] != 0.0f && out[i] != in[i] * mask[i / hw]) {
            pgd_fail(err, PGD_EINVAL, "dropout mask of node %d: element %zu is %g, in %g x mask %g: the seed rule "
                     "of net_run.c changed; update dropout_mask()", node, i, (double)out[i], (double)in[i],
                     (double)mask[i / hw]);
            goto done;
        }
    char path[1024];
    snprintf(path, sizeof path, "%s/dropout_mask.npy", dir);
    size_t shape[2] = {(size_t)n, (size_t)c * hw};
    rc = pgd_npy_write(path, PGD_NPY_F32, shape, 2, mask, err);
done:
    free(mask), free(in), free(out);
    return rc;
}

#define NET_SEED 0x5EEDull

static int run_net(const args *a, pgd_backend *be, pgd_err *err)
{
    pgd_npy x = {0}, lab = {0};
    pgd_net *net = NULL;
    float *d_x = NULL, *d_loss = NULL, *d_probs = NULL, *d_dl = NULL;
    int32_t *labels = NULL, *d_labels = NULL;
    int rc = -1;
    if (read_f32(a->input, &x, 0, err) != 0 || x.ndim != 4 || read_f32(a->labels, &lab, x.shape[0], err) != 0) {
        pgd_fail(err, PGD_EINVAL, "%s: want [n, 3, %d, %d] float32 and labels [n]", a->input, a->size, a->size);
        goto done;
    }
    int n = (int)x.shape[0], c = a->classes;
    if (!(net = pgd_model_build(be, a->arch, a->size, c, 1, err)))
        goto done;
    pgd_ckpt_net cn = {net, "", NULL, NULL};
    if (pgd_ckpt_load(a->weights, &cn, 1, NULL, err) != 0 || pgd_net_plan(net, n, err) != 0)
        goto done;
    labels = malloc((size_t)n * sizeof *labels);
    if (!labels) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        labels[i] = (int32_t)((float *)lab.data)[i];
    d_x = be->ops->alloc(be, x.count * sizeof(float));
    d_labels = be->ops->alloc(be, (size_t)n * sizeof(int32_t));
    d_loss = be->ops->alloc(be, (size_t)n * sizeof(float));
    d_probs = be->ops->alloc(be, (size_t)n * c * sizeof(float));
    d_dl = be->ops->alloc(be, (size_t)n * c * sizeof(float));
    be->ops->upload(be, d_x, x.data, x.count * sizeof(float));
    be->ops->upload(be, d_labels, labels, (size_t)n * sizeof(int32_t));
    if (pgd_backend_error(be, err) != 0)
        goto done;
    pgd_net_mode mode = !strcmp(a->bn, "frozen") ? PGD_NET_FROZEN_BN : PGD_NET_TRAIN;
    const float *logits = pgd_net_forward(net, d_x, n, mode, NET_SEED, err);
    if (!logits)
        goto done;
    be->ops->xent_forward(be, d_loss, d_probs, logits, d_labels, n, c);
    be->ops->xent_backward(be, d_dl, d_probs, d_labels, n, c, a->loss_scale / (float)n);
    size_t lshape[2] = {(size_t)n, (size_t)c}, one = 1;
    if (write_dev(be, a->out, "", "logits", logits, lshape, 2, (size_t)n * c, err) != 0)
        goto done;
    float loss_h[4096];
    if (n > 4096) {
        pgd_fail(err, PGD_EINVAL, "at most 4096 samples");
        goto done;
    }
    be->ops->download(be, loss_h, d_loss, (size_t)n * sizeof(float));
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += loss_h[i];
    float mean = (float)(sum / n);
    char path[1024];
    snprintf(path, sizeof path, "%s/loss.npy", a->out);
    if (pgd_npy_write(path, PGD_NPY_F32, &one, 1, &mean, err) != 0)
        goto done;
    if (!strcmp(a->arch, "mobilenet_v2") &&
        dropout_mask(net, pgd_net_node_count(net) - 2, NET_SEED, n, 0.2f, a->out, err) != 0)
        goto done;
    pgd_net_zero_grad(net);
    if (pgd_net_backward(net, d_dl, NULL, err) != 0)
        goto done;
    be->ops->scale(be, pgd_net_grads(net), 1.0f / a->loss_scale, pgd_net_param_count(net));
    if (write_tensors(net, a->out, "grad", PGD_TENSOR_PARAM, pgd_net_grads(net), err) != 0 ||
        write_tensors(net, a->out, "buffer", PGD_TENSOR_BUFFER, pgd_net_buffers(net), err) != 0)
        goto done;
    rc = pgd_backend_error(be, err);
done:
    be->ops->free(be, d_x), be->ops->free(be, d_labels), be->ops->free(be, d_loss), be->ops->free(be, d_probs);
    be->ops->free(be, d_dl);
    free(labels);
    pgd_net_free(&net);
    pgd_npy_free(&x), pgd_npy_free(&lab);
    return rc;
}

static int run_patchgd(const args *a, pgd_backend *be, pgd_err *err)
{
    pgd_npy pix = {0}, cel = {0}, lab = {0};
    pgd_net *f = NULL, *g = NULL;
    pgd_optim *of = NULL, *og = NULL;
    pgd_patchgd *pg = NULL;
    uint32_t *all = NULL, *cells = NULL;
    uint8_t *chosen = NULL;
    int32_t *labels = NULL;
    float *losses = NULL;
    int rc = -1;
    int mn = a->m * a->n, total = a->images * mn;
    size_t pbytes = (size_t)a->patch * a->patch * 3;
    if (pgd_npy_read(a->pixels, &pix, err) != 0 || read_f32(a->cells, &cel, 0, err) != 0 ||
        read_f32(a->labels, &lab, (size_t)a->images, err) != 0)
        goto done;
    if (pix.dtype != PGD_NPY_U8 || pix.count != (size_t)total * pbytes) {
        pgd_fail(err, PGD_EINVAL, "%s: want [%d, %d, %d, 3] uint8", a->pixels, total, a->patch, a->patch);
        goto done;
    }
    int steps = cel.ndim == 2 ? (int)cel.shape[0] : 1, count = steps > 0 ? (int)(cel.count / (size_t)steps) : 0;
    if (cel.ndim > 2 || count < 1) {
        pgd_fail(err, PGD_EINVAL, "%s: want [steps, count] or [count] cells, at least one", a->cells);
        goto done;
    }
    if (!(f = pgd_model_build(be, a->arch, a->patch, a->s, 1, err)) ||
        !(g = pgd_model_head(be, a->s, a->m, a->n, a->width, 0.0f, 0, a->classes, 2, err)))
        goto done;
    pgd_ckpt_net cn[2] = {{f, "", NULL, NULL}, {g, "", NULL, NULL}};
    if (pgd_ckpt_load(a->weights, cn, 2, NULL, err) != 0)
        goto done;
    pgd_opt_cfg oc = pgd_opt_defaults();
    oc.lr = a->lr;
    if (!(of = pgd_optim_new(f, &oc, err)) || !(og = pgd_optim_new(g, &oc, err)))
        goto done;
    pgd_patchgd_cfg cfg = {0};
    cfg.max_images = a->images;
    cfg.m = a->m, cfg.n = a->n;
    cfg.patch = a->patch, cfg.channels = 3;
    cfg.max_patches = a->max_patches;
    cfg.epsilon = steps + 1;
    cfg.fill_train_mode = 1;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    memcpy(cfg.mean, mean, sizeof mean);
    memcpy(cfg.std, sd, sizeof sd);
    cfg.seed = 7;
    if (!(pg = pgd_patchgd_new(f, g, of, og, &cfg, err)))
        goto done;
    all = malloc((size_t)total * sizeof *all);
    cells = malloc((size_t)steps * count * sizeof *cells);
    chosen = malloc((size_t)count * pbytes);
    labels = malloc((size_t)a->images * sizeof *labels);
    losses = malloc((size_t)steps * sizeof *losses);
    if (!all || !cells || !chosen || !labels || !losses) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < total; i++)
        all[i] = (uint32_t)i;
    for (int i = 0; i < steps * count; i++) {
        float v = ((float *)cel.data)[i];
        if (!(v >= 0 && v < (float)total)) {
            pgd_fail(err, PGD_EINVAL, "%s: cell %g outside 0..%d", a->cells, (double)v, total - 1);
            goto done;
        }
        cells[i] = (uint32_t)v;
    }
    for (int i = 0; i < a->images; i++)
        labels[i] = (int32_t)((float *)lab.data)[i];
    if (pgd_patchgd_fill(pg, pix.data, all, total, err) != 0)
        goto done;
    size_t zshape[4] = {(size_t)a->images, (size_t)a->s, (size_t)a->m, (size_t)a->n};
    if (write_dev(be, a->out, "", "z", pgd_patchgd_z(pg), zshape, 4, (size_t)total * a->s, err) != 0)
        goto done;
    pgd_net_zero_grad(f);
    pgd_net_zero_grad(g);
    for (int j = 0; j < steps; j++) {
        const uint32_t *row = cells + (size_t)j * count;
        for (int i = 0; i < count; i++)
            memcpy(chosen + (size_t)i * pbytes, (uint8_t *)pix.data + row[i] * pbytes, pbytes);
        if (pgd_patchgd_inner(pg, chosen, row, count, labels, a->images, &losses[j], err) != 0)
            goto done;
    }
    size_t nsteps = (size_t)steps;
    char path[1024];
    snprintf(path, sizeof path, "%s/loss.npy", a->out);
    if (pgd_npy_write(path, PGD_NPY_F32, &nsteps, 1, losses, err) != 0)
        goto done;
    if (write_tensors(f, a->out, "grad", PGD_TENSOR_PARAM, pgd_net_grads(f), err) != 0 ||
        write_tensors(g, a->out, "grad", PGD_TENSOR_PARAM, pgd_net_grads(g), err) != 0)
        goto done;
    if (pgd_patchgd_flush(pg, err) != 0)
        goto done;
    if (write_tensors(f, a->out, "param", PGD_TENSOR_PARAM, pgd_net_params(f), err) != 0 ||
        write_tensors(g, a->out, "param", PGD_TENSOR_PARAM, pgd_net_params(g), err) != 0)
        goto done;
    rc = pgd_backend_error(be, err);
done:
    pgd_patchgd_free(&pg);
    pgd_optim_free(&of), pgd_optim_free(&og);
    pgd_net_free(&f), pgd_net_free(&g);
    free(all), free(cells), free(chosen), free(labels), free(losses);
    pgd_npy_free(&pix), pgd_npy_free(&cel), pgd_npy_free(&lab);
    return rc;
}

static int run_init(const args *a, pgd_backend *be, pgd_err *err)
{
    pgd_net *f = NULL, *g = NULL;
    int rc = -1;
    if (a->patch > 0) {
        if (!(f = pgd_model_build(be, a->arch, a->patch, a->s, 11, err)) ||
            !(g = pgd_model_head(be, a->s, a->m, a->n, a->width, 0.0f, 0, a->classes, 12, err)))
            goto done;
    } else if (!(f = pgd_model_build(be, a->arch, a->size, a->classes, 11, err)))
        goto done;
    pgd_ckpt_net cn[2] = {{f, "", NULL, NULL}, {g, "", NULL, NULL}};
    rc = pgd_ckpt_save(a->out, cn, g ? 2 : 1, NULL, 0, err);
done:
    pgd_net_free(&f), pgd_net_free(&g);
    return rc;
}

int main(int argc, char **argv)
{
    args a;
    if (parse(argc, argv, &a) != 0)
        return usage("bad arguments");
    pgd_err err = PGD_ERR_INIT;
    int prec = pgd_precision_parse(a.precision);
    if (prec < 0)
        return usage("--precision takes fp32, bf16 or fp16");
    pgd_backend *be = open_backend(a.backend, &err);
    int rc = -1;
    if (be && pgd_backend_set_precision(be, (pgd_precision)prec, &err) != 0)
        pgd_backend_free(&be);
    if (be) {
        if (!strcmp(a.mode, "init") && a.classes > 0 && (a.size > 0 || (a.patch > 0 && a.s > 0 && a.m > 0 &&
                                                                          a.n > 0 && a.width > 0)))
            rc = run_init(&a, be, &err);
        else if (!strcmp(a.mode, "net") && a.input && a.size > 0 && a.classes > 0)
            rc = run_net(&a, be, &err);
        else if (!strcmp(a.mode, "patchgd") && a.pixels && a.cells && a.patch > 0 && a.s > 0 && a.m > 0 &&
                 a.n > 0 && a.images > 0 && a.width > 0 && a.classes > 0 && a.max_patches > 0)
            rc = run_patchgd(&a, be, &err);
        else {
            pgd_backend_free(&be);
            return usage("bad mode or missing arguments");
        }
        pgd_mem_stats st;
        pgd_backend_mem_stats(be, &st);
        printf("gpu_compare %s %s on %s in %s: %s; backend memory peak %.1f MiB\n", a.mode, a.arch, a.backend,
               a.precision, rc == 0 ? "done" : "FAILED", (double)st.peak_in_use / 1048576.0);
        pgd_backend_free(&be);
    }
    if (rc != 0) {
        fprintf(stderr, "gpu_compare: %s:%d: %s\n", err.file ? err.file : "?", err.line, err.msg);
        return 1;
    }
    return 0;
}
