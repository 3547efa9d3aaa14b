/* slide_bench.c: decode speed of one slide through each backend: a fit image, and random native patches.
 * Usage: slide_bench SLIDE [--backend auto|fast|openslide|image] [--fit S] [--patches N] [--patch P] [--level L]
 * (docs/loader.md gives the command and the results). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loader/patcher_more.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_fit(const char *path, pgd_slide_backend b, uint32_t S)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_geom_spec spec = {.kind = PGD_GEOM_FIT, .patch_size = S, .fit_size = S, .level = -1};
    double t0 = now_s();
    pgd_patcher *p = pgd_patcher_open_backend(path, &spec, b, &err);
    if (!p || !pgd_patcher_fit_image(p, &err)) {
        fprintf(stderr, "slide_bench: %s\n", err.msg);
        pgd_patcher_close(&p);
        return -1;
    }
    double t = now_s() - t0;
    const pgd_geom *g = pgd_patcher_geom(p);
    const pgd_slide_info *in = pgd_patcher_slide_info(p);
    double mp = (double)in->level[g->level].w * (double)in->level[g->level].h / 1e6;
    printf("%-9s  fit %-6u  level %d (%lldx%lld)  %8.1f MP read  %7.3f s  %7.1f MP/s\n",
           pgd_slide_backend_name(in->backend), S, g->level, (long long)in->level[g->level].w,
           (long long)in->level[g->level].h, mp, t, mp / t);
    pgd_patcher_close(&p);
    return 0;
}

static int bench_native(const char *path, pgd_slide_backend b, int level, uint32_t ps, int n)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_geom_spec spec = {.kind = PGD_GEOM_NATIVE, .patch_size = ps, .level = level};
    pgd_patcher *p = pgd_patcher_open_backend(path, &spec, b, &err);
    uint8_t *out = malloc((size_t)ps * ps * 3);
    if (!p || !out) {
        fprintf(stderr, "slide_bench: %s\n", err.msg);
        pgd_patcher_close(&p);
        free(out);
        return -1;
    }
    const pgd_geom *g = pgd_patcher_geom(p);
    unsigned seed = 1;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        uint32_t cell[2] = {(uint32_t)rand_r(&seed) % g->grid_m, (uint32_t)rand_r(&seed) % g->grid_n};
        if (pgd_patcher_read(p, cell, 1, out, &err) != 0) {
            fprintf(stderr, "slide_bench: %s\n", err.msg);
            break;
        }
    }
    double t = now_s() - t0, mp = (double)n * ps * ps / 1e6;
    printf("%-9s  %d random %ux%u patches at level %d (grid %ux%u)  %8.1f MP out  %7.3f s  %7.1f MP/s\n",
           pgd_slide_backend_name(pgd_patcher_slide_info(p)->backend), n, ps, ps, level, g->grid_m, g->grid_n, mp, t,
           mp / t);
    free(out);
    pgd_patcher_close(&p);
    return pgd_err_is_set(&err) ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: slide_bench SLIDE [--backend auto|fast|openslide|image] [--fit S] [--patches N] "
                        "[--patch P] [--level L]\n");
        return 2;
    }
    pgd_slide_backend b = PGD_SLIDE_AUTO;
    long fit = 2048, patches = 200, patch = 256, level = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--backend") == 0 && pgd_slide_backend_parse(argv[i + 1], &b) == 0)
            continue;
        long *v = strcmp(argv[i], "--fit") == 0       ? &fit
                  : strcmp(argv[i], "--patches") == 0 ? &patches
                  : strcmp(argv[i], "--patch") == 0   ? &patch
                  : strcmp(argv[i], "--level") == 0   ? &level
                                                      : NULL;
        if (!v) {
            fprintf(stderr, "slide_bench: bad option %s\n", argv[i]);
            return 2;
        }
        *v = strtol(argv[i + 1], NULL, 10);
    }
    int rc = 0;
    if (fit > 0)
        rc |= bench_fit(argv[1], b, (uint32_t)fit);
    if (patches > 0)
        rc |= bench_native(argv[1], b, (int)level, (uint32_t)patch, (int)patches);
    return rc ? 1 : 0;
}
