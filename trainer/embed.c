/* embed.c: `pgd-trainer embed`: run a model on an NCHW float32 .npy batch and write its logits or features. */
#include "trainer/embed.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "npy.h"
#include "trainer/ckpt.h"
#include "trainer/model.h"

#define USAGE "pgd-trainer embed --model M --weights W.safetensors --input X.npy --out Y.npy [options]"

#define O(f) offsetof(pgd_embed_opts, f)
static const pgd_cfg_opt opts[] = {
    {"model", PGD_CFG_STRING, O(model), NULL, 0, 0, NULL, "resnet18|resnet34|resnet50|mobilenet_v2|small_cnn",
     PGD_CFG_REQUIRED},
    {"weights", PGD_CFG_STRING, O(weights), NULL, 0, 0, NULL,
     "safetensors with the model's tensors (torchvision names); without it: the seeded initialisation", 0},
    {"input", PGD_CFG_STRING, O(input), NULL, 0, 0, NULL, "float32 .npy [N, 3, H, W], already normalised",
     PGD_CFG_REQUIRED},
    {"out", PGD_CFG_STRING, O(out), NULL, 0, 0, NULL, "the .npy to write: [N, classes] or [N, features]",
     PGD_CFG_REQUIRED},
    {"features", PGD_CFG_BOOL, O(features), "no", 0, 0, NULL,
     "write what enters the classifier (e.g. 2048 per image for resnet50) instead of the logits", 0},
    {"classes", PGD_CFG_INT, O(classes), "1000", 1, 1 << 20, NULL, "outputs of the model's classifier", 0},
    {"skip", PGD_CFG_STRING, O(skip), NULL, 0, 0, NULL, "tensor-name prefix not loaded (e.g. fc.)", 0},
    {"batch", PGD_CFG_INT, O(batch), "16", 1, 1 << 16, NULL, "images per forward", 0},
    {"threads", PGD_CFG_INT, O(threads), "0", 0, 1024, NULL, "CPU threads (0: all)", 0},
    {NULL},
};

int pgd_embed_run(const pgd_embed_opts *o, pgd_err *err)
{
    pgd_npy in = {0};
    pgd_backend *be = NULL;
    pgd_net *net = NULL;
    float *out = NULL;
    int rc = -1, known = 0;
    char names[256] = "";
    for (int i = 0; pgd_model_archs[i]; i++) {
        known |= strcmp(o->model, pgd_model_archs[i]) == 0;
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? "|" : "", pgd_model_archs[i]);
    }
    if (!known) /* a usage error, found before any file is read */
        return pgd_fail(err, PGD_EINVAL, "model: '%s' is not one of %s", o->model, names);
    if (pgd_npy_read(o->input, &in, err) != 0)
        goto fail;
    if (in.dtype != PGD_NPY_F32 || in.ndim != 4 || in.shape[1] != 3 || in.shape[2] != in.shape[3] || in.shape[0] < 1) {
        char shape[160] = "";
        for (int d = 0; d < in.ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%zu", d ? ", " : "", in.shape[d]);
        pgd_fail(err, PGD_EFORMAT, "%s: expected float32 [N, 3, S, S] (N >= 1), found %s [%s]", o->input,
                 in.dtype == PGD_NPY_F32 ? "float32" : in.dtype == PGD_NPY_F16 ? "float16" : "uint8", shape);
        goto fail;
    }
    int n = (int)in.shape[0], size = (int)in.shape[2];
    if (!(be = pgd_backend_cpu_new((int)o->threads, err)) ||
        !(net = pgd_model_build(be, o->model, size, (int)o->classes, 0, err)))
        goto fail;
    if (o->weights) {
        pgd_ckpt_net nets[1] = {{.net = net, .prefix = ""}};
        const char *const skip[2] = {o->skip, NULL};
        pgd_ckpt_load_opts lo = {.skip = skip, .ignore_extra = o->features};
        if (pgd_ckpt_load(o->weights, nets, 1, &lo, err) != 0)
            goto fail;
    }
    int node = pgd_net_node_count(net) - 1 - (o->features ? 1 : 0);
    int c, h, w;
    pgd_net_node_shape(net, node, &c, &h, &w);
    size_t per = (size_t)c * h * w, per_in = (size_t)3 * size * size;
    if (!(out = malloc((size_t)n * per * sizeof(float)))) {
        pgd_fail(err, PGD_ENOMEM, "embed: out of memory");
        goto fail;
    }
    int batch = (int)o->batch < n ? (int)o->batch : n;
    pgd_net_forward_only(net); /* the logits and the classifier's input outlive the forward */
    if (pgd_net_plan(net, batch, err) != 0)
        goto fail;
    for (int done = 0; done < n; done += batch) {
        int k = n - done < batch ? n - done : batch;
        if (!pgd_net_forward(net, (const float *)in.data + (size_t)done * per_in, k, PGD_NET_EVAL, 0, err))
            goto fail;
        be->ops->download(be, out + (size_t)done * per, pgd_net_node_output(net, node), (size_t)k * per * sizeof(float));
        if (pgd_backend_error(be, err) != 0)
            goto fail;
        pgd_info("embed: %d / %d images", done + k, n);
    }
    size_t shape[2] = {(size_t)n, per};
    rc = pgd_npy_write(o->out, PGD_NPY_F32, shape, 2, out, err);
fail:
    free(out);
    pgd_net_free(&net);
    pgd_backend_free(&be);
    pgd_npy_free(&in);
    return rc;
}

int pgd_embed_main(int argc, char **argv)
{
    pgd_log_init("embed", PGD_LOG_INFO, 0);
    pgd_embed_opts o;
    memset(&o, 0, sizeof o);
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc;
    if (pgd_cfg_parse_args(opts, &o, argc, argv, &a, &err) != 0 || a.npositional > 0) {
        if (!pgd_err_is_set(&err))
            pgd_fail(&err, PGD_EINVAL, "unexpected argument '%s'", a.positional[0]);
        pgd_error("%s", err.msg);
        fprintf(stderr, "usage: %s (--help for options)\n", USAGE);
        rc = PGD_EXIT_USAGE;
    } else if (a.help) {
        pgd_cfg_usage(opts, stdout, USAGE "\n  run a model on an NCHW float32 batch; write logits or features");
        fputs("Exit status: 0 the output was written, 1 an input could not be used (the .npy, the weights), "
              "2 bad arguments.\n", stdout);
        rc = PGD_EXIT_OK;
    } else if (pgd_embed_run(&o, &err) != 0) {
        pgd_log_err(&err);
        rc = err.code == PGD_EINVAL ? PGD_EXIT_USAGE : PGD_EXIT_FAIL;
    } else {
        rc = PGD_EXIT_OK;
    }
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &o);
    return rc;
}

const pgd_cfg_opt *pgd_embed_options(void)
{
    return opts;
}
