/* synth_main.c: pgd-synth, the command that writes a set of synthetic slides and their train.csv. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "synth.h"

/* The settings, as the option table fills them. */
typedef struct synth_cfg {
    int task, subsampling, quiet;
    int64_t count, width, height, seed, fit, tile, quality, levels, jobs, png_size;
    double mpp, gland_density, tumour_fraction, tissue;
    char *out, *prefix, *render_png;
} synth_cfg;

static const pgd_cfg_opt opts[] = {
    {"task", PGD_CFG_ENUM, offsetof(synth_cfg, task), NULL, 0, 0, "panda|ultramnist",
     "panda (6 grades, glands in tissue) or ultramnist (3-5 digits, label = their sum)", PGD_CFG_REQUIRED},
    {"count", PGD_CFG_INT, offsetof(synth_cfg, count), NULL, 1, 1000000, NULL,
     "slides; labels are balanced in blocks of 6 or 10", PGD_CFG_REQUIRED},
    {"out", PGD_CFG_STRING, offsetof(synth_cfg, out), NULL, 0, 0, NULL, "output folder (created when missing)",
     PGD_CFG_REQUIRED},
    {"width", PGD_CFG_INT, offsetof(synth_cfg, width), NULL, 1, PGD_SYNTH_MAX_DIM, NULL, "level-0 width in pixels",
     PGD_CFG_REQUIRED},
    {"height", PGD_CFG_INT, offsetof(synth_cfg, height), NULL, 1, PGD_SYNTH_MAX_DIM, NULL, "level-0 height in pixels",
     PGD_CFG_REQUIRED},
    {"seed", PGD_CFG_INT, offsetof(synth_cfg, seed), "0", 0, INFINITY, NULL, "random seed", 0},
    {"fit", PGD_CFG_INT, offsetof(synth_cfg, fit), "0", 0, 65536, NULL,
     "structures are sized for the slide fitted into S x S, S >= 64 (0: panda 2048, ultramnist 512)", 0},
    {"gland_density", PGD_CFG_FLOAT, offsetof(synth_cfg, gland_density), "0.6", 0.001, 1, NULL,
     "panda: chance that a gland cell inside tissue holds a gland", 0},
    {"tumour_fraction", PGD_CFG_FLOAT, offsetof(synth_cfg, tumour_fraction), "0.5", 0.001, 1, NULL,
     "panda: chance that a gland of a graded slide shows the grade's pattern", 0},
    {"tissue", PGD_CFG_FLOAT, offsetof(synth_cfg, tissue), "1", 0.05, 4, NULL,
     "panda: scale on the size of the tissue blobs", 0},
    {"tile", PGD_CFG_INT, offsetof(synth_cfg, tile), "256", 240, 1024, NULL, "tile size, a multiple of 16", 0},
    {"quality", PGD_CFG_INT, offsetof(synth_cfg, quality), "85", 1, 100, NULL, "JPEG quality", 0},
    {"subsampling", PGD_CFG_ENUM, offsetof(synth_cfg, subsampling), "420", 0, 0, "420|444",
     "JPEG chroma subsampling", 0},
    {"mpp", PGD_CFG_FLOAT, offsetof(synth_cfg, mpp), "0.5", 1e-6, 1e6, NULL, "level-0 microns per pixel", 0},
    {"levels", PGD_CFG_INT, offsetof(synth_cfg, levels), "0", 0, PGD_SYNTH_MAX_LEVELS, NULL,
     "pyramid levels (0: halve until the long side fits in one tile)", 0},
    {"prefix", PGD_CFG_STRING, offsetof(synth_cfg, prefix), NULL, 0, 0, NULL,
     "id prefix; ids are prefix + 5-digit index (not set: '<task>_')", 0},
    {"jobs", PGD_CFG_INT, offsetof(synth_cfg, jobs), "1", 1, 64, NULL, "worker processes, one slide each at a time", 0},
    {"render_png", PGD_CFG_STRING, offsetof(synth_cfg, render_png), NULL, 0, 0, NULL,
     "also write a PNG preview of slide 0 to this file", 0},
    {"png_size", PGD_CFG_INT, offsetof(synth_cfg, png_size), "1024", 16, 8192, NULL, "long side of the preview", 0},
    {"quiet", PGD_CFG_BOOL, offsetof(synth_cfg, quiet), "false", 0, 0, NULL, "no progress lines", 0},
    {NULL},
};

static const pgd_synth_task tasks[] = {PGD_SYNTH_PANDA, PGD_SYNTH_ULTRAMNIST}; /* by "task" choice */
static const int subsamplings[] = {420, 444};                                 /* by "subsampling" choice */

static const char USAGE_LINE[] =
    "pgd-synth --task panda|ultramnist --count N --out DIR --width W --height H [options]\n\n"
    "Writes DIR/<id>.tiff (pyramidal tiled JPEG BigTIFF, OpenSlide 'generic-tiff') for N synthetic slides and\n"
    "DIR/train.csv (panda: image_id,data_provider,isup_grade,gleason_score; ultramnist: path,label,id,digits).\n"
    "Same settings, same bytes.";

typedef struct cli {
    pgd_synth_batch b;
    int quiet;
    int tty;
    uint32_t current;    /* index of the slide being written (for row progress) */
    int shown_rows;      /* a row progress line is on the terminal */
} cli;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Say what is wrong with the settings; returns the usage exit status. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pgd-synth: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(run pgd-synth --help for the options)\n");
    va_end(ap);
    return PGD_EXIT_USAGE;
}

static void on_rows(void *ctx, uint32_t done, uint32_t total)
{
    cli *c = ctx;
    if (c->quiet || !c->tty || total < 4096) /* only big slides get a row counter */
        return;
    fprintf(stderr, "\r  slide %u: rows %u/%u (%.0f%%)", c->current, done, total, 100.0 * done / total);
    c->shown_rows = 1;
}

static void on_slide(void *ctx, uint32_t index, const char *id, const pgd_synth_info *info, uint64_t bytes,
                     double secs)
{
    cli *c = ctx;
    double mp = (double)c->b.params.width * c->b.params.height / 1e6;
    c->current = index + 1;
    if (c->quiet)
        return;
    if (c->shown_rows) {
        fprintf(stderr, "\r\033[K");
        c->shown_rows = 0;
    }
    printf("[%u/%u] %s label %d (%s) %ux%u %.1f MB %.2f s %.1f MP/s\n", index + 1, c->b.count, id, info->label,
           info->detail, c->b.params.width, c->b.params.height, bytes / 1e6, secs, secs > 0 ? mp / secs : 0.0);
    fflush(stdout);
}

/* Peak resident memory of this process (VmHWM: its own address space only, not what the process that
 * started it held before exec) and of its worker processes, in MiB. */
static double peak_rss_mib(void)
{
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    struct rusage ru;
    if (kb == 0 && getrusage(RUSAGE_SELF, &ru) == 0)
        kb = ru.ru_maxrss;
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0 && ru.ru_maxrss > kb)
        kb = ru.ru_maxrss;
    return kb / 1024.0;
}

/* The batch the settings describe (its strings point into s). The table's ranges keep every value within
 * its field; 0 in fit and levels means the library's default. */
static void fill_batch(const synth_cfg *s, pgd_synth_batch *b)
{
    b->params.task = tasks[s->task];
    b->params.width = (uint32_t)s->width;
    b->params.height = (uint32_t)s->height;
    b->params.seed = (uint64_t)s->seed;
    b->params.fit = (uint32_t)s->fit;
    b->params.gland_density = s->gland_density;
    b->params.tumour_fraction = s->tumour_fraction;
    b->params.tissue = s->tissue;
    b->tiff.tile = (uint32_t)s->tile;
    b->tiff.quality = (int)s->quality;
    b->tiff.subsampling = subsamplings[s->subsampling];
    b->tiff.mpp = s->mpp;
    b->tiff.levels = (int)s->levels;
    b->count = (uint32_t)s->count;
    b->out_dir = s->out;
    b->prefix = s->prefix;
    b->jobs = (int)s->jobs;
    b->preview_png = s->render_png;
    b->preview_size = (uint32_t)s->png_size;
}

/* Resolve the command line into c (strings stay owned by s). Returns -1 to go on, or an exit status. */
static int parse_args(cli *c, synth_cfg *s, int argc, char **argv)
{
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc = -1;
    if (pgd_cfg_parse_args(opts, s, argc, argv, &a, &err) < 0) {
        rc = usage_error("%s", err.msg);
    } else if (a.help) {
        pgd_cfg_usage(opts, stdout, USAGE_LINE);
        fputs("\nExit status: 0 done, 1 the work failed (nothing is left under a final name half-written), "
              "2 bad arguments.\n", stdout);
        rc = PGD_EXIT_OK;
    } else if (a.npositional > 0) {
        rc = usage_error("unexpected argument '%s'", a.positional[0]);
    } else {
        fill_batch(s, &c->b);
        c->quiet = s->quiet;
        if (a.saved_to && !c->quiet)
            printf("pgd-synth: settings written to %s\n", a.saved_to);
    }
    pgd_cfg_args_free(&a);
    return rc;
}

/* Check the batch (what the table cannot: tile a multiple of 16, levels the slide can have, the prefix)
 * and write it. Returns the exit status. */
static int run(cli *c)
{
    pgd_err err = PGD_ERR_INIT;
    if (pgd_synth_batch_check(&c->b, &err) < 0)
        return usage_error("--%s", err.msg); /* the library names the option */
    double t0 = pgd_clock_s();
    if (pgd_synth_generate(&c->b, &err) < 0) {
        if (c->shown_rows)
            fprintf(stderr, "\n");
        fprintf(stderr, "pgd-synth: %s\n", err.msg);
        return PGD_EXIT_FAIL;
    }
    double dt = pgd_clock_s() - t0;
    double mp = (double)c->b.params.width * c->b.params.height * c->b.count / 1e6;
    if (!c->quiet)
        printf("pgd-synth: wrote %u slides and %s/train.csv: %.1f MP in %.2f s (%.1f MP/s), peak RSS %.1f MiB\n",
               c->b.count, c->b.out_dir, mp, dt, dt > 0 ? mp / dt : 0.0, peak_rss_mib());
    return PGD_EXIT_OK;
}

int main(int argc, char **argv)
{
    pgd_log_init("synth", PGD_LOG_INFO, 0);
    synth_cfg s = {0};
    cli c;
    memset(&c, 0, sizeof c);
    int rc = parse_args(&c, &s, argc, argv);
    if (rc < 0) {
        c.tty = isatty(STDERR_FILENO);
        c.b.progress = on_rows;
        c.b.on_slide = on_slide;
        c.b.ctx = &c;
        rc = run(&c);
    }
    pgd_cfg_free(opts, &s);
    return rc;
}
