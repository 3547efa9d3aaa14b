/* synth_main.c: pgd-synth, the command that writes a set of synthetic slides and their train.csv. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "synth.h"

static const char USAGE[] =
    "usage: pgd-synth --task panda|ultramnist --count N --out DIR --width W --height H [options]\n"
    "Writes DIR/<id>.tiff (pyramidal tiled JPEG BigTIFF, OpenSlide 'generic-tiff') for N synthetic slides and\n"
    "DIR/train.csv (panda: image_id,data_provider,isup_grade,gleason_score; ultramnist: path,label,id,digits).\n"
    "Same arguments, same bytes.\n"
    "\n"
    "  --task T          panda (6 grades, glands in tissue) or ultramnist (3-5 digits, label = their sum)\n"
    "  --count N         number of slides (1..1000000); labels are balanced in blocks of 6 or 10\n"
    "  --out DIR         output folder (created when missing)\n"
    "  --width W         level-0 width in pixels (1..1048576)\n"
    "  --height H        level-0 height in pixels (1..1048576)\n"
    "  --seed S          random seed (default 0)\n"
    "  --fit S           design fit size: structures are sized for the slide fitted into S x S\n"
    "                    (default panda 2048, ultramnist 512; 64..65536)\n"
    "  --tile T          tile size, 240..1024, a multiple of 16 (default 256)\n"
    "  --quality Q       JPEG quality 1..100 (default 85)\n"
    "  --subsampling S   JPEG chroma subsampling 420 or 444 (default 420)\n"
    "  --mpp X           level-0 microns per pixel (default 0.5)\n"
    "  --levels L        pyramid levels (default: halve until the long side fits in one tile)\n"
    "  --prefix P        id prefix (default '<task>_'); ids are P + 5-digit index\n"
    "  --jobs N          worker processes, one slide each at a time (default 1)\n"
    "  --render-png FILE also write a PNG preview of slide 0 (long side <= --png-size, default 1024)\n"
    "  --png-size N      long side of the preview (16..8192)\n"
    "  --quiet           no progress lines\n"
    "  --help            this text\n"
    "Exit status: 0 done, 1 the work failed (nothing is left under a final name half-written), 2 bad arguments.\n";

typedef struct cli {
    pgd_synth_batch b;
    int quiet;
    int tty;
    uint32_t current;    /* index of the slide being written (for row progress) */
    int shown_rows;      /* a row progress line is on the terminal */
} cli;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Say what is wrong with the command line; returns the usage exit status. */
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

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        goto bad;
    *out = v;
    return 0;
bad:
    usage_error("--%s: '%s' is not a whole number in range", opt, s ? s : "");
    return -1;
}

static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(opt, s, UINT32_MAX, &v) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || errno || *end || !isfinite(v) || v <= 0) {
        usage_error("--%s: '%s' is not a positive number", opt, s);
        return -1;
    }
    *out = v;
    return 0;
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

enum {
    OPT_TASK = 1000, OPT_COUNT, OPT_OUT, OPT_WIDTH, OPT_HEIGHT, OPT_SEED, OPT_FIT, OPT_TILE, OPT_QUALITY,
    OPT_SUBSAMPLING, OPT_MPP, OPT_LEVELS, OPT_PREFIX, OPT_JOBS, OPT_PNG, OPT_PNG_SIZE, OPT_QUIET, OPT_HELP,
};

static const struct option OPTIONS[] = {
    {"task", required_argument, NULL, OPT_TASK},       {"count", required_argument, NULL, OPT_COUNT},
    {"out", required_argument, NULL, OPT_OUT},         {"width", required_argument, NULL, OPT_WIDTH},
    {"height", required_argument, NULL, OPT_HEIGHT},   {"seed", required_argument, NULL, OPT_SEED},
    {"fit", required_argument, NULL, OPT_FIT},         {"tile", required_argument, NULL, OPT_TILE},
    {"quality", required_argument, NULL, OPT_QUALITY}, {"subsampling", required_argument, NULL, OPT_SUBSAMPLING},
    {"mpp", required_argument, NULL, OPT_MPP},         {"levels", required_argument, NULL, OPT_LEVELS},
    {"prefix", required_argument, NULL, OPT_PREFIX},   {"jobs", required_argument, NULL, OPT_JOBS},
    {"render-png", required_argument, NULL, OPT_PNG},  {"png-size", required_argument, NULL, OPT_PNG_SIZE},
    {"quiet", no_argument, NULL, OPT_QUIET},           {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* A value where 0 would silently mean "the default": refuse it, naming the option and its range. */
static int parse_nonzero(const char *opt, const char *s, const char *range, uint32_t *out)
{
    if (parse_u32(opt, s, out) < 0)
        return -1;
    if (*out == 0) {
        usage_error("--%s: 0 is outside %s", opt, range);
        return -1;
    }
    return 0;
}

static int parse_nonzero_int(const char *opt, const char *s, const char *range, int *out)
{
    uint32_t v;
    if (parse_nonzero(opt, s, range, &v) < 0)
        return -1;
    if (v > 1000000) {
        usage_error("--%s: '%s' is too large", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* One option into c; returns 0, or an exit status. */
static int apply_option(cli *c, int opt, const char *arg, int *have)
{
    pgd_synth_batch *b = &c->b;
    uint64_t seed;
    int rc = 0;
    switch (opt) {
    case OPT_TASK:
        if (pgd_synth_task_parse(arg, &b->params.task) < 0)
            return usage_error("--task: '%s' is not a task (panda or ultramnist)", arg);
        have[0] = 1;
        break;
    case OPT_COUNT: have[1] = 1; rc = parse_u32("count", arg, &b->count); break;
    case OPT_OUT: have[2] = 1; b->out_dir = arg; break;
    case OPT_WIDTH: have[3] = 1; rc = parse_u32("width", arg, &b->params.width); break;
    case OPT_HEIGHT: have[4] = 1; rc = parse_u32("height", arg, &b->params.height); break;
    case OPT_SEED:
        rc = parse_u64("seed", arg, UINT64_MAX, &seed);
        b->params.seed = seed;
        break;
    case OPT_FIT: rc = parse_nonzero("fit", arg, "64..65536", &b->params.fit); break;
    case OPT_TILE: rc = parse_nonzero("tile", arg, "240..1024", &b->tiff.tile); break;
    case OPT_QUALITY: rc = parse_nonzero_int("quality", arg, "1..100", &b->tiff.quality); break;
    case OPT_SUBSAMPLING: rc = parse_nonzero_int("subsampling", arg, "420 or 444", &b->tiff.subsampling); break;
    case OPT_MPP: rc = parse_double("mpp", arg, &b->tiff.mpp); break;
    case OPT_LEVELS: rc = parse_nonzero_int("levels", arg, "1..24", &b->tiff.levels); break;
    case OPT_PREFIX: b->prefix = arg; break;
    case OPT_JOBS: rc = parse_nonzero_int("jobs", arg, "1..64", &b->jobs); break;
    case OPT_PNG: b->preview_png = arg; break;
    case OPT_PNG_SIZE: rc = parse_nonzero("png-size", arg, "16..8192", &b->preview_size); break;
    case OPT_QUIET: c->quiet = 1; break;
    default: return PGD_EXIT_USAGE;
    }
    return rc < 0 ? PGD_EXIT_USAGE : 0;
}

static int parse_args(cli *c, int argc, char **argv)
{
    static const char *const required[5] = {"task", "count", "out", "width", "height"};
    int have[5] = {0};
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":", OPTIONS, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(USAGE, stdout);
            exit(PGD_EXIT_OK);
        }
        if (opt == '?')
            return usage_error("unknown option %s", argv[optind - 1]);
        if (opt == ':')
            return usage_error("option %s needs a value", argv[optind - 1]);
        int rc = apply_option(c, opt, optarg, have);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    for (int i = 0; i < 5; i++)
        if (!have[i])
            return usage_error("--%s is required", required[i]);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    pgd_log_init("synth", PGD_LOG_INFO, 0);
    cli c;
    memset(&c, 0, sizeof c);
    int rc = parse_args(&c, argc, argv);
    if (rc)
        return rc;
    c.tty = isatty(STDERR_FILENO);
    c.b.progress = on_rows;
    c.b.on_slide = on_slide;
    c.b.ctx = &c;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_synth_batch_check(&c.b, &err) < 0) {
        fprintf(stderr, "pgd-synth: --%s\n(run pgd-synth --help for the options)\n", err.msg);
        return PGD_EXIT_USAGE;
    }
    double t0 = now_s();
    if (pgd_synth_generate(&c.b, &err) < 0) {
        if (c.shown_rows)
            fprintf(stderr, "\n");
        fprintf(stderr, "pgd-synth: %s\n", err.msg);
        return PGD_EXIT_FAIL;
    }
    double dt = now_s() - t0;
    double mp = (double)c.b.params.width * c.b.params.height * c.b.count / 1e6;
    if (!c.quiet)
        printf("pgd-synth: wrote %u slides and %s/train.csv: %.1f MP in %.2f s (%.1f MP/s), peak RSS %.1f MiB\n",
               c.b.count, c.b.out_dir, mp, dt, dt > 0 ? mp / dt : 0.0, peak_rss_mib());
    return PGD_EXIT_OK;
}
