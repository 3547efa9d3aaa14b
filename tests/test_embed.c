/* test_embed.c: `pgd-trainer embed` on small_cnn: logits equal the in-process forward, features map to them through
 * fc, a bad .npy and a weights file missing a tensor fail naming the file / tensor, with the documented exit codes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"
#include "npy.h"
#include "rng.h"
#include "trainer/ckpt.h"
#include "trainer/embed.h"
#include "trainer/model.h"
#include "trainer/safetensors.h"

#define N 3
#define SIZE 32
#define CLASSES 10
#define FEATURES 128 /* small_cnn's last stage */

typedef struct fixture {
    pgd_backend *be;
    pgd_net *net;
    float in[N * 3 * SIZE * SIZE];
    char input[512], weights[512];
} fixture;

/* A small_cnn whose BN running statistics moved away from (0, 1) (one train-mode forward), saved; a random
 * input batch written as float32 [N, 3, SIZE, SIZE]. */
static int fixture_open(fixture *fx, const char *tag)
{
    pgd_err err = PGD_ERR_INIT;
    memset(fx, 0, sizeof *fx);
    snprintf(fx->input, sizeof fx->input, "%s", pgd_test_path("in.npy"));
    char name[64];
    snprintf(name, sizeof name, "%s.safetensors", tag);
    snprintf(fx->weights, sizeof fx->weights, "%s", pgd_test_path(name));
    pgd_rng rng;
    pgd_rng_seed(&rng, 11);
    for (size_t i = 0; i < sizeof fx->in / sizeof fx->in[0]; i++)
        fx->in[i] = (float)(pgd_rng_uniform(&rng) * 4.0 - 2.0);
    size_t shape[4] = {N, 3, SIZE, SIZE};
    pgd_ckpt_net nets[1];
    if (!(fx->be = pgd_backend_cpu_new(1, &err)) ||
        !(fx->net = pgd_model_build(fx->be, "small_cnn", SIZE, CLASSES, 5, &err)) ||
        pgd_net_plan(fx->net, N, &err) != 0 || !pgd_net_forward(fx->net, fx->in, N, PGD_NET_TRAIN, 1, &err))
        goto fail;
    nets[0] = (pgd_ckpt_net){.net = fx->net, .prefix = ""};
    if (pgd_ckpt_save(fx->weights, nets, 1, NULL, 0, &err) != 0 ||
        pgd_npy_write(fx->input, PGD_NPY_F32, shape, 4, fx->in, &err) != 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "fixture: %s\n", err.msg);
    return -1;
}

static void fixture_close(fixture *fx)
{
    pgd_net_free(&fx->net);
    pgd_backend_free(&fx->be);
}

static pgd_embed_opts opts_for(fixture *fx, const char *out, int features)
{
    pgd_embed_opts o = {.model = "small_cnn", .weights = fx->weights, .input = fx->input, .out = (char *)out,
                        .features = features, .classes = CLASSES, .batch = 2, .threads = 1};
    return o;
}

/* The output .npy: float32 [rows, cols]. */
static float *read_out(const char *path, size_t rows, size_t cols)
{
    pgd_npy a;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_npy_read(path, &a, &err) != 0) {
        CU_FAIL(err.msg);
        return NULL;
    }
    CU_ASSERT_EQUAL(a.dtype, PGD_NPY_F32);
    CU_ASSERT_EQUAL(a.ndim, 2);
    CU_ASSERT_EQUAL(a.shape[0], rows);
    CU_ASSERT_EQUAL(a.shape[1], cols);
    if (a.dtype != PGD_NPY_F32 || a.ndim != 2 || a.shape[0] != rows || a.shape[1] != cols) {
        pgd_npy_free(&a);
        return NULL;
    }
    return a.data;
}

static void test_logits_match_forward(void)
{
    fixture fx;
    if (fixture_open(&fx, "w") != 0) {
        CU_FAIL("fixture");
        return;
    }
    const char *out = pgd_test_path("logits.npy");
    pgd_embed_opts o = opts_for(&fx, out, 0);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_embed_run(&o, &err), 0);
    float *got = read_out(out, N, CLASSES);
    /* the same weights in this process, the same chunks of 2 images as embed's --batch 2 */
    float want[N * CLASSES];
    for (int done = 0; done < N; done += 2) {
        int k = N - done < 2 ? N - done : 2;
        const float *y = pgd_net_forward(fx.net, fx.in + (size_t)done * 3 * SIZE * SIZE, k, PGD_NET_EVAL, 0, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        fx.be->ops->download(fx.be, want + done * CLASSES, y, (size_t)k * CLASSES * sizeof(float));
    }
    double max_diff = 0, max_abs = 0;
    for (int i = 0; got && i < N * CLASSES; i++) {
        max_diff = fmax(max_diff, fabs((double)got[i] - want[i]));
        max_abs = fmax(max_abs, fabs(want[i]));
    }
    printf("\n  logits: max |embed - forward| = %g (max |logit| %g)\n", max_diff, max_abs);
    CU_ASSERT(got != NULL);
    CU_ASSERT_EQUAL(max_diff, 0.0);
    CU_ASSERT(max_abs > 1e-3); /* not a degenerate all-zero output */
    free(got);
    fixture_close(&fx);
}

static void test_features_through_fc(void)
{
    fixture fx;
    if (fixture_open(&fx, "w") != 0) {
        CU_FAIL("fixture");
        return;
    }
    const char *lpath = pgd_test_path("logits2.npy"), *fpath = pgd_test_path("features.npy");
    pgd_embed_opts lo = opts_for(&fx, lpath, 0), fo = opts_for(&fx, fpath, 1);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_embed_run(&lo, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_embed_run(&fo, &err), 0);
    float *logits = read_out(lpath, N, CLASSES), *feat = read_out(fpath, N, FEATURES);
    int wi = pgd_net_find(fx.net, "fc.weight"), bi = pgd_net_find(fx.net, "fc.bias");
    CU_ASSERT_FATAL(wi >= 0 && bi >= 0);
    const pgd_tensor_info *wt = pgd_net_tensor(fx.net, wi), *bt = pgd_net_tensor(fx.net, bi);
    CU_ASSERT_EQUAL(wt->shape[0], CLASSES);
    CU_ASSERT_EQUAL(wt->shape[1], FEATURES);
    float w[CLASSES * FEATURES], b[CLASSES];
    fx.be->ops->download(fx.be, w, pgd_net_params(fx.net) + wt->offset, sizeof w);
    fx.be->ops->download(fx.be, b, pgd_net_params(fx.net) + bt->offset, sizeof b);
    double worst = 0;
    for (int i = 0; logits && feat && i < N; i++)
        for (int k = 0; k < CLASSES; k++) {
            double y = b[k];
            for (int j = 0; j < FEATURES; j++)
                y += (double)w[k * FEATURES + j] * feat[i * FEATURES + j];
            double d = fabs(y - logits[i * CLASSES + k]) / fmax(1.0, fabs(y));
            worst = fmax(worst, d);
        }
    printf("\n  fc(features) vs logits: max relative difference %g\n", worst);
    CU_ASSERT(logits && feat);
    CU_ASSERT(worst < 1e-5);
    free(logits);
    free(feat);
    fixture_close(&fx);
}

/* The weights of fx without one tensor. */
static int drop_tensor(const char *from, const char *to, const char *name)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_st_file *f = pgd_st_open(from, PGD_ST_READ, &err);
    pgd_st_writer *w = pgd_st_writer_new(&err);
    int rc = -1;
    if (!f || !w)
        goto done;
    for (size_t i = 0; i < pgd_st_count(f); i++) {
        const pgd_st_tensor *t = pgd_st_at(f, i);
        if (strcmp(t->name, name) != 0 &&
            pgd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, pgd_st_data(f, t), &err) != 0)
            goto done;
    }
    rc = pgd_st_writer_commit(w, to, &err);
done:
    if (rc != 0)
        fprintf(stderr, "drop_tensor: %s\n", err.msg);
    pgd_st_writer_free(&w);
    pgd_st_close(&f);
    return rc;
}

/* Run `pgd-trainer embed` in this process with the words given; returns its exit code. */
static int embed_main(const char *const *words)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "embed";
    for (; words[argc - 1] && argc < 31; argc++)
        argv[argc] = (char *)words[argc - 1];
    argv[argc] = NULL;
    return pgd_embed_main(argc, argv);
}

static void test_bad_inputs(void)
{
    fixture fx;
    if (fixture_open(&fx, "w") != 0) {
        CU_FAIL("fixture");
        return;
    }
    char bad_npy[512], missing[512], out[512], msg[1024];
    snprintf(bad_npy, sizeof bad_npy, "%s", pgd_test_path("bad.npy"));
    snprintf(missing, sizeof missing, "%s", pgd_test_path("nofcbias.safetensors"));
    snprintf(out, sizeof out, "%s", pgd_test_path("never.npy"));
    size_t shape[4] = {2, 3, SIZE, SIZE - 1};
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_write(bad_npy, PGD_NPY_F32, shape, 4, fx.in, &err), 0);
    CU_ASSERT_EQUAL_FATAL(drop_tensor(fx.weights, missing, "fc.bias"), 0);

    struct {
        const char *input, *weights, *expect;
        int code, exit_code;
    } cases[] = {
        {bad_npy, fx.weights, "expected float32 [N, 3, S, S] (N >= 1), found float32 [2, 3, 32, 31]", PGD_EFORMAT, 1},
        {fx.input, missing, "missing tensor 'fc.bias'", PGD_ENOENT, 1},
        {pgd_test_path("absent.npy"), fx.weights, "absent.npy", PGD_ENOENT, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgd_embed_opts o = opts_for(&fx, out, 0);
        o.input = (char *)cases[i].input;
        o.weights = (char *)cases[i].weights;
        pgd_err e = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_embed_run(&o, &e), -1);
        /* the message names the file at fault and what is wrong with it */
        const char *file = strcmp(cases[i].weights, missing) == 0 ? missing : cases[i].input;
        snprintf(msg, sizeof msg, "case %zu: %s", i, e.msg);
        if (!strstr(e.msg, file) || !strstr(e.msg, cases[i].expect))
            fprintf(stderr, "\n  %s (want '%s')\n", msg, cases[i].expect);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, file));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, cases[i].expect));
        CU_ASSERT_EQUAL(e.code, cases[i].code);
        const char *words[] = {"--model", "small_cnn", "--classes", "10", "--threads", "1", "--input", o.input,
                               "--weights", o.weights, "--out", out, NULL};
        CU_ASSERT_EQUAL(embed_main(words), cases[i].exit_code);
    }
    FILE *f = fopen(out, "rb");
    CU_ASSERT_PTR_NULL(f); /* nothing was written */
    if (f)
        fclose(f);

    /* usage errors: exit 2 */
    const char *unknown[] = {"--model", "nope", "--input", fx.input, "--out", out, NULL};
    const char *no_out[] = {"--model", "small_cnn", "--input", fx.input, NULL};
    const char *stray[] = {"--model", "small_cnn", "--input", fx.input, "--out", out, "extra", NULL};
    CU_ASSERT_EQUAL(embed_main(unknown), 2);
    CU_ASSERT_EQUAL(embed_main(no_out), 2);
    CU_ASSERT_EQUAL(embed_main(stray), 2);
    fixture_close(&fx);
}

static const pgd_test_case cases[] = {
    {"logits_match_forward", test_logits_match_forward},
    {"features_through_fc", test_features_through_fc},
    {"bad_inputs", test_bad_inputs},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("embed", cases, argc, argv);
}
