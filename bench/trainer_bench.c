/* trainer_bench.c: GFLOP/s of the CPU backend's 3x3 convolutions of ResNet50 (forward, backward-data,
 * backward-filter) beside one OpenBLAS cblas_sgemm of the same matrix product.
 *
 *   make BUILD=build/ops -j2 && build/ops/bench/trainer_bench
 *       options: --batch N (8), --size S (256: the input image), --repeat R (5), --threads T (online CPUs)
 *
 * Each distinct 3x3 conv of the four ResNet50 stages (torchvision: the stride sits on the 3x3 conv of each
 * stage's first block) at an S x S input, batch N. A conv as one matrix product over the whole batch has
 * M, N, K = (k, n*oh*ow, c*9) forward, (c*9, n*oh*ow, k) backward-data and (k, c*9, n*oh*ow) backward-filter;
 * the sgemm column times one cblas_sgemm call of exactly that product (same transposes, fresh buffers), the
 * ceiling the im2col conv can approach. The conv and the sgemm run alternately, R times each after one
 * warm-up; times are medians, and the ratio (sgemm time / conv time) is the median of the R paired ratios, so
 * that a busy spell on a shared machine hits both sides. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "sysinfo.h"
#include "trainer/backend.h"

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

int main(int argc, char **argv)
{
    int batch = 8, size = 256, repeat = 5, threads = 0;
    for (int i = 1; i < argc; i++) {
        int *opt = !strcmp(argv[i], "--batch") ? &batch : !strcmp(argv[i], "--size") ? &size
                   : !strcmp(argv[i], "--repeat") ? &repeat : !strcmp(argv[i], "--threads") ? &threads : NULL;
        if (!opt || i + 1 >= argc || (*opt = atoi(argv[++i])) < 0) {
            fprintf(stderr, "usage: trainer_bench [--batch N] [--size S] [--repeat R] [--threads T]\n");
            return 2;
        }
    }
    if (repeat < 1 || repeat > 64 || batch < 1 || size < 32) {
        fprintf(stderr, "trainer_bench: need 1 <= repeat <= 64, batch >= 1, size >= 32\n");
        return 2;
    }
    pgd_err err = PGD_ERR_INIT;
    pgd_backend *be = pgd_backend_cpu_new(threads, &err);
    if (!be) {
        fprintf(stderr, "trainer_bench: %s\n", err.msg);
        return 1;
    }
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
    if (pgd_backend_error(be, &err) != 0) {
        fprintf(stderr, "trainer_bench: %s:%d: %s\n", err.file, err.line, err.msg);
        return 1;
    }
    pgd_backend_free(&be);
    return 0;
}
