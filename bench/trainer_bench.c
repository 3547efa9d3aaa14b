/* trainer_bench.c: speed of the CPU backend: its ResNet50 3x3 convolutions beside OpenBLAS sgemm, and whole
 * PatchGD backbones (ResNet50, MobileNetV2) forward and forward + backward in patches per second.
 *
 *   make BUILD=build/ops -j2 && build/ops/bench/trainer_bench
 *       options: --table conv|net|all (all), --batch N (8), --size S (256: the conv table's input image),
 *                --net-sizes A,B,.. (128,256: the net table's patch sizes), --repeat R (5), --threads T (online CPUs),
 *                --device cpu|cuda (cpu; cuda: the net table only, on CUDA device 0), --precision fp32|bf16|fp16
 *                (fp32: what the conv and linear ops compute in, backend.h)
 *
 * The conv table: each distinct 3x3 conv of the four ResNet50 stages (torchvision: the stride sits on the 3x3
 * conv of each stage's first block) at an S x S input, batch N. A conv as one matrix product over the whole
 * batch has M, N, K = (k, n*oh*ow, c*9) forward, (c*9, n*oh*ow, k) backward-data and (k, c*9, n*oh*ow)
 * backward-filter; the sgemm column times one cblas_sgemm call of exactly that product (same transposes, fresh
 * buffers), the ceiling the im2col conv can approach. The conv and the sgemm run alternately, R times each
 * after one warm-up; times are medians, and the ratio (sgemm time / conv time) is the median of the R paired
 * ratios, so that a busy spell on a shared machine hits both sides.
 *
 * The net table: pgd_model_build(arch, size, out = 256), the PatchGD backbone, planned for N patches, in train
 * mode (batch statistics, BN running statistics updated). "fwd" is one pgd_net_forward of N patches; "f+b" a
 * forward and a pgd_net_backward with din NULL (as PatchGD's inner step runs the backbone: parameter gradients
 * only). The two alternate, R times each after one warm-up; times are medians. GFLOP counts 2 per multiply-add
 * of the convs and linears only (from the nodes' shapes; BN, ReLU, pooling and adds are not counted): forward
 * once, backward = backward-filter of each plus backward-data of each whose input needs a gradient (all but
 * the first conv's). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "sysinfo.h"
#include "trainer/backend.h"
#include "trainer/model.h"
#include "trainer/net_int.h"

typedef struct conv_case {
    const char *name;
    int c, hw, stride;  /* k = c, 3x3, pad 1 */
} conv_case;

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER };
static const char *const dir_names[] = {"forward", "bwd data", "bwd filter"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct bufs {
    float *in, *w, *out, *din, *dw, *dout;      /* the conv's tensors */
    float *a, *b, *c;                           /* the reference sgemm's matrices */
} bufs;

static void run_conv(pgd_backend *be, int dir, bufs *x, const pgd_conv_shape *sh)
{
    if (dir == DIR_FWD)
        be->ops->conv2d_forward(be, x->out, x->in, x->w, NULL, sh);
    else if (dir == DIR_BWD_DATA)
        be->ops->conv2d_backward_data(be, x->din, x->dout, x->w, sh);
    else
        be->ops->conv2d_backward_filter(be, x->dw, NULL, x->dout, x->in, sh);
}

/* The whole-batch product of the same direction: C [M, N] = op(A) op(B). */
static void run_gemm(int dir, bufs *x, int M, int N, int K)
{
    if (dir == DIR_FWD) /* out [k, nP] = w [k, c9] x col [c9, nP] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x->a, K, x->b, N, 0.0f, x->c, N);
    else if (dir == DIR_BWD_DATA) /* col [c9, nP] = w^T [c9, k] x dout [k, nP] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, x->a, M, x->b, N, 0.0f, x->c, N);
    else /* dw [k, c9] += dout [k, nP] x col^T [nP, c9] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x->a, K, x->b, K, 1.0f, x->c, N);
}

static double median(double *t, int count)
{
    qsort(t, (size_t)count, sizeof t[0], cmp_double);
    return t[count / 2];
}

/* Median seconds of the conv (*tc) and of the sgemm (*tg), and the median of the paired ratios, timed
 * alternately so that both see the same load on a shared machine. */
static double measure(pgd_backend *be, int dir, bufs *x, const pgd_conv_shape *sh, int M, int N, int K,
                      int repeat, double *tc, double *tg)
{
    double c[64], g[64], ratio[64];
    for (int r = -1; r < repeat; r++) { /* r = -1: warm-up (scratch growth, page faults) */
        double t0 = pgd_clock_s();
        run_conv(be, dir, x, sh);
        double t1 = pgd_clock_s();
        run_gemm(dir, x, M, N, K);
        double t2 = pgd_clock_s();
        if (r >= 0)
            c[r] = t1 - t0, g[r] = t2 - t1, ratio[r] = g[r] / c[r];
    }
    *tc = median(c, repeat);
    *tg = median(g, repeat);
    return median(ratio, repeat);
}

static float *rand_buf(size_t count)
{
    float *p = malloc(count * sizeof(float));
    if (!p) {
        fprintf(stderr, "trainer_bench: out of memory (%zu floats)\n", count);
        exit(1);
    }
    for (size_t i = 0; i < count; i++)
        p[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    return p;
}

/* The 3x3-conv table; returns 0, or 1 after printing a failure. */
static int conv_table(pgd_backend *be, int batch, int size, int repeat)
{
    pgd_err err = PGD_ERR_INIT;
    /* the stem and maxpool take S down by 4 before stage 1 */
    int s1 = size / 4;
    const conv_case cases[] = {
        {"layer1 64@s1", 64, s1, 1},         {"layer2 128@s2", 128, s1, 2},
        {"layer2 128@s1", 128, s1 / 2, 1},   {"layer3 256@s2", 256, s1 / 2, 2},
        {"layer3 256@s1", 256, s1 / 4, 1},   {"layer4 512@s2", 512, s1 / 4, 2},
        {"layer4 512@s1", 512, s1 / 8, 1},
    };
    char cpu[128];
    pgd_sysinfo_cpu_model(cpu, sizeof cpu);
    printf("trainer_bench: %s, %d threads, ResNet50 3x3 convs at %dx%d, batch %d, median of %d\n", cpu,
           be->threads, size, size, batch, repeat);
    printf("%-14s %-10s %6s %7s %6s %9s %9s %9s %6s\n", "conv", "op", "M", "N", "K", "conv ms", "conv GF/s",
           "sgemm GF/s", "ratio");
    double sum_ratio = 0.0;
    int rows = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *cc = &cases[i];
        pgd_conv_shape sh = {batch, cc->c, cc->hw, cc->hw, cc->c, 3, 3, cc->stride, 1, 1, 0, 0};
        if (pgd_conv_shape_init(&sh, &err) != 0) {
            fprintf(stderr, "trainer_bench: %s\n", err.msg);
            return 1;
        }
        size_t nin = (size_t)batch * sh.c * sh.h * sh.w, nout = (size_t)batch * sh.k * sh.oh * sh.ow;
        size_t nw = (size_t)sh.k * sh.c * 9, P = (size_t)batch * sh.oh * sh.ow;
        bufs x = {rand_buf(nin), rand_buf(nw), rand_buf(nout), rand_buf(nin), rand_buf(nw), rand_buf(nout),
                  NULL, NULL, NULL};
        for (int dir = DIR_FWD; dir <= DIR_BWD_FILTER; dir++) {
            int M = dir == DIR_BWD_DATA ? (int)(sh.c * 9) : sh.k;
            int N = dir == DIR_BWD_FILTER ? (int)(sh.c * 9) : (int)P;
            int K = dir == DIR_FWD ? sh.c * 9 : dir == DIR_BWD_DATA ? sh.k : (int)P;
            x.a = rand_buf((size_t)M * K), x.b = rand_buf((size_t)K * N), x.c = rand_buf((size_t)M * N);
            double flop = 2.0 * M * N * K;
            double tc, tg, ratio = measure(be, dir, &x, &sh, M, N, K, repeat, &tc, &tg);
            printf("%-14s %-10s %6d %7d %6d %9.1f %9.1f %9.1f %5.0f%%\n", cc->name, dir_names[dir], M, N, K,
                   tc * 1e3, flop / tc * 1e-9, flop / tg * 1e-9, ratio * 100.0);
            fflush(stdout);
            sum_ratio += ratio, rows++;
            free(x.a), free(x.b), free(x.c);
        }
        free(x.in), free(x.w), free(x.out), free(x.din), free(x.dw), free(x.dout);
    }
    printf("mean conv / sgemm: %.0f%%\n", sum_ratio / rows * 100.0);
    return 0;
}

/* FLOPs (2 per multiply-add) of one sample through the convs and linears of a finished net: *fwd for the
 * forward, *bwd for the backward pgd_net_backward runs with din NULL: backward-filter of every conv and linear,
 * backward-data of those whose input needs a gradient (a parameter lies upstream of it, as in net_run.c). */
static void count_flops(const pgd_net *net, double *fwd, double *bwd)
{
    unsigned char *needs = calloc((size_t)net->node_count, 1);
    if (!needs) {
        fprintf(stderr, "trainer_bench: out of memory\n");
        exit(1);
    }
    *fwd = *bwd = 0.0;
    for (int i = 0; i < net->node_count; i++) {
        const pgd_node *nd = &net->nodes[i];
        int has_params = nd->op == PGD_OP_CONV || nd->op == PGD_OP_BN || nd->op == PGD_OP_LINEAR;
        needs[i] = (unsigned char)(nd->op != PGD_OP_INPUT && has_params);
        for (int k = 0; k < 2; k++)
            if (nd->in[k] >= 0 && needs[nd->in[k]])
                needs[i] = 1;
        if (nd->op != PGD_OP_CONV && nd->op != PGD_OP_LINEAR)
            continue;
        const pgd_node *x = &net->nodes[nd->in[0]];
        double f = nd->op == PGD_OP_CONV
                       ? 2.0 * (double)pgd_node_count(nd) * (x->c / nd->groups) * nd->size * nd->size
                       : 2.0 * (double)pgd_node_count(x) * (double)pgd_node_count(nd);
        *fwd += f;
        *bwd += f + (needs[nd->in[0]] ? f : 0.0);
    }
    free(needs);
}

/* One row of the net table: arch at size x size, batch patches; returns 0, or 1 after printing a failure. */
static int net_row(pgd_backend *be, const char *arch, int size, int batch, int repeat)
{
    pgd_err err = PGD_ERR_INIT;
    const int out = 256; /* s: the PatchGD backbone's features per patch */
    pgd_net *net = pgd_model_build(be, arch, size, out, 1, &err);
    if (!net || pgd_net_plan(net, batch, &err) != 0) {
        fprintf(stderr, "trainer_bench: %s at %d: %s\n", arch, size, err.msg);
        pgd_net_free(&net);
        return 1;
    }
    size_t nin = (size_t)batch * 3 * size * size, nout = (size_t)batch * out;
    float *host_in = rand_buf(nin), *host_dout = rand_buf(nout);
    float *in = be->ops->alloc(be, nin * sizeof(float)), *dout = be->ops->alloc(be, nout * sizeof(float));
    int rc = 1;
    if (pgd_backend_error(be, &err) != 0)
        goto fail;
    be->ops->upload(be, in, host_in, nin * sizeof(float));
    be->ops->upload(be, dout, host_dout, nout * sizeof(float));
    double tf[64], tb[64];
    for (int r = -1; r < repeat; r++) { /* r = -1: warm-up */
        double t0 = pgd_clock_s();
        if (!pgd_net_forward(net, in, batch, PGD_NET_TRAIN, (uint64_t)r, &err))
            goto fail;
        be->ops->sync(be);
        double t1 = pgd_clock_s();
        if (!pgd_net_forward(net, in, batch, PGD_NET_TRAIN, (uint64_t)r, &err) ||
            pgd_net_backward(net, dout, NULL, &err) != 0)
            goto fail;
        be->ops->sync(be);
        double t2 = pgd_clock_s();
        if (r >= 0)
            tf[r] = t1 - t0, tb[r] = t2 - t1;
    }
    if (pgd_backend_error(be, &err) != 0)
        goto fail;
    double fwd, bwd;
    count_flops(net, &fwd, &bwd);
    double mf = median(tf, repeat), mb = median(tb, repeat);
    printf("%-13s %5d %8.2f %8.2f %7.0f %9.1f %9.1f %8.1f %9.1f %9.1f %8.1f\n", arch, size, fwd * 1e-9,
           (fwd + bwd) * 1e-9, (double)pgd_net_bytes(net) / 1048576.0, mf * 1e3, batch / mf,
           fwd * batch / mf * 1e-9, mb * 1e3, batch / mb, (fwd + bwd) * batch / mb * 1e-9);
    fflush(stdout);
    rc = 0;
fail:
    if (rc != 0)
        fprintf(stderr, "trainer_bench: %s at %d: %s\n", arch, size, err.msg);
    be->ops->free(be, in);
    be->ops->free(be, dout);
    free(host_in);
    free(host_dout);
    pgd_net_free(&net);
    return rc;
}

/* The backbone table over sizes[0..n_sizes-1]. */
static int net_table(pgd_backend *be, const int *sizes, int n_sizes, int batch, int repeat)
{
    static const char *const archs[] = {"resnet50", "mobilenet_v2"};
    char cpu[128];
    pgd_sysinfo_cpu_model(cpu, sizeof cpu);
    if (!strcmp(be->ops->name, "cpu"))
        printf("trainer_bench: %s, %d threads, ", cpu, be->threads);
    else
        printf("trainer_bench: %s backend, ", be->ops->name);
    printf("%s, PatchGD backbones (out 256), train mode, batch %d, median of %d\n",
           pgd_precision_name(be->precision), batch, repeat);
    printf("%-13s %5s %8s %8s %7s %9s %9s %8s %9s %9s %8s\n", "arch", "size", "fwd GF", "f+b GF", "MiB",
           "fwd ms", "fwd p/s", "fwd GF/s", "f+b ms", "f+b p/s", "f+b GF/s");
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++)
        for (int i = 0; i < n_sizes; i++)
            if (net_row(be, archs[a], sizes[i], batch, repeat) != 0)
                return 1;
    return 0;
}

/* "128,256" -> sizes; returns the count, or -1 for anything else (at most cap sizes, each >= 32). */
static int parse_sizes(const char *s, int *sizes, int cap)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 32 || v > 4096 || n == cap || (*end && *end != ','))
            return -1;
        sizes[n++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

#define USAGE                                                                                                    \
    "usage: trainer_bench [--table conv|net|all] [--batch N] [--size S] [--net-sizes A,B,..] [--repeat R] "     \
    "[--threads T] [--device cpu|cuda] [--precision fp32|bf16|fp16]\n"

int main(int argc, char **argv)
{
    int batch = 8, size = 256, repeat = 5, threads = 0, sizes[8] = {128, 256}, n_sizes = 2;
    const char *table = NULL, *device = "cpu", *precision = "fp32";
    for (int i = 1; i < argc; i++) {
        const char **word = !strcmp(argv[i], "--table") ? &table : !strcmp(argv[i], "--device") ? &device
                            : !strcmp(argv[i], "--precision") ? &precision : NULL;
        if (word && i + 1 < argc) {
            *word = argv[++i];
            continue;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--net-sizes")) {
            if ((n_sizes = parse_sizes(argv[++i], sizes, 8)) < 1) {
                fprintf(stderr, "trainer_bench: --net-sizes takes sizes >= 32 separated by commas\n");
                return 2;
            }
            continue;
        }
        int *opt = !strcmp(argv[i], "--batch") ? &batch : !strcmp(argv[i], "--size") ? &size
                   : !strcmp(argv[i], "--repeat") ? &repeat : !strcmp(argv[i], "--threads") ? &threads : NULL;
        if (!opt || i + 1 >= argc || (*opt = atoi(argv[++i])) < 0) {
            fprintf(stderr, USAGE);
            return 2;
        }
    }
    int cuda = !strcmp(device, "cuda"), prec = pgd_precision_parse(precision);
    if (!table)
        table = cuda ? "net" : "all"; /* the conv table measures against OpenBLAS: a CPU table */
    int do_conv = !strcmp(table, "conv") || !strcmp(table, "all");
    int do_net = !strcmp(table, "net") || !strcmp(table, "all");
    if ((!do_conv && !do_net) || (!cuda && strcmp(device, "cpu")) || prec < 0) {
        fprintf(stderr, USAGE);
        return 2;
    }
    if (cuda && do_conv) {
        fprintf(stderr, "trainer_bench: the conv table compares the CPU backend with OpenBLAS: use --table net on cuda\n");
        return 2;
    }
    if (repeat < 1 || repeat > 64 || batch < 1 || size < 32) {
        fprintf(stderr, "trainer_bench: need 1 <= repeat <= 64, batch >= 1, size >= 32\n");
        return 2;
    }
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = cuda ? pgd_backend_cuda_new(0, 0, &err) : pgd_backend_cpu_new(threads, &err);
    if (be && pgd_backend_set_precision(be, (pgd_precision)prec, &err) != 0)
        pgd_backend_free(&be);
    if (!be) {
        fprintf(stderr, "trainer_bench: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (do_conv)
        rc = conv_table(be, batch, size, repeat);
    if (rc == 0 && do_conv && do_net)
        printf("\n");
    if (rc == 0 && do_net)
        rc = net_table(be, sizes, n_sizes, batch, repeat);
    if (rc == 0 && pgd_backend_error(be, &err) != 0) {
        fprintf(stderr, "trainer_bench: %s:%d: %s\n", err.file, err.line, err.msg);
        rc = 1;
    }
    pgd_backend_free(&be);
    return rc;
}
