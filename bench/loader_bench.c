/* loader_bench.c: the loader benchmark: a fit image and random native patches of one synthetic slide through
 * OpenSlide, the fast path and bare TurboJPEG decoding of the same tiles, then 1..N loader processes at once.
 * Command and columns: bench/README.md; results: docs/benchmarks.md. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tiffio.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "loader/patcher_more.h"
#include "loader/resample.h"
#include "loader/synth.h"
#include "rng.h"
#include "sysinfo.h"

#define MAX_PROCS 256
#define MAX_REPEAT 9

/* ---- settings ------------------------------------------------------------------------------------- */

typedef struct bench_cfg {
    char *slide, *workdir;
    int64_t width, height, seed, fit, patch, level, patches, fits, repeat, procs;
    double seconds;
} bench_cfg;

static const pgd_cfg_opt opts[] = {
    {"slide", PGD_CFG_STRING, offsetof(bench_cfg, slide), NULL, 0, 0, NULL,
     "measure this slide instead of the generated one", 0},
    {"workdir", PGD_CFG_STRING, offsetof(bench_cfg, workdir), "/tmp/pgd-bench", 0, 0, NULL,
     "where the generated slide is kept (written when missing)", 0},
    {"width", PGD_CFG_INT, offsetof(bench_cfg, width), "40000", 256, PGD_SYNTH_MAX_DIM, NULL,
     "generated slide: level-0 width", 0},
    {"height", PGD_CFG_INT, offsetof(bench_cfg, height), "30000", 256, PGD_SYNTH_MAX_DIM, NULL,
     "generated slide: level-0 height", 0},
    {"seed", PGD_CFG_INT, offsetof(bench_cfg, seed), "1", 0, INFINITY, NULL,
     "seed of the generated slide and of the patch positions", 0},
    {"fit", PGD_CFG_INT, offsetof(bench_cfg, fit), "4096", 64, 32768, NULL, "fit size S (a multiple of --patch)", 0},
    {"patch", PGD_CFG_INT, offsetof(bench_cfg, patch), "256", 16, 4096, NULL, "patch side p", 0},
    {"level", PGD_CFG_INT, offsetof(bench_cfg, level), "0", 0, 31, NULL, "level the native patches are read at", 0},
    {"seconds", PGD_CFG_FLOAT, offsetof(bench_cfg, seconds), "2", 0.01, 600, NULL,
     "length of one run of a row (at least one fit or patch is done)", 0},
    {"patches", PGD_CFG_INT, offsetof(bench_cfg, patches), "0", 0, 100000000, NULL,
     "patches per run and process (0: as many as --seconds allows; process rows then match the fast row)", 0},
    {"fits", PGD_CFG_INT, offsetof(bench_cfg, fits), "0", 0, 100000, NULL,
     "fit images per run and process (0: as for --patches)", 0},
    {"repeat", PGD_CFG_INT, offsetof(bench_cfg, repeat), "3", 1, MAX_REPEAT, NULL,
     "runs per row; the table shows the median run", 0},
    {"procs", PGD_CFG_INT, offsetof(bench_cfg, procs), "0", 0, MAX_PROCS, NULL,
     "largest number of loader processes N (0: the number of online cores)", 0},
    {NULL},
};

static const char USAGE_LINE[] =
    "loader_bench [options]\n\n"
    "On one slide (by default a seeded synthetic panda slide, written into --workdir when missing): MP/s per CPU\n"
    "second and per wall second of (a) the fit image and (b) random native patches, each through OpenSlide, the\n"
    "fast path and bare TurboJPEG decoding of the raw tiles the work touches; then 1..N fast-path processes\n"
    "doing the same work each. Prints the machine, two tables and whether each target was met.";

/* ---- the work of one process ---------------------------------------------------------------------- */

typedef enum work_kind { WORK_FIT, WORK_PATCHES } work_kind;
typedef enum path_kind { PATH_OPENSLIDE, PATH_FAST, PATH_BARE } path_kind;

static const char *const work_names[] = {"fit", "patches"};
static const char *const path_names[] = {"OpenSlide", "fast path", "bare decode"};

/* What every process of a run does. */
typedef struct job {
    const char *path;
    work_kind work;
    path_kind how;
    uint32_t fit, patch;
    int level;              /* the level read: the fit's level, or the patches' level */
    int64_t level_w, level_h;
    int den;                /* DCT scale 1/den the level is decoded at (fit; 1 for patches) */
    pgd_slide_rect bounds;  /* patches: the slide bounds at the level */
    uint32_t grid_m, grid_n;
    uint64_t seed;
    long units;             /* fits or patches per process; 0: as many as `seconds` allows */
    double seconds;
} job;

/* What a process reports, once when it is ready (ok) and once when it is done (units, times). */
typedef struct proc_report {
    int ok;
    long units;
    double cpu_s, wall_s;
    double rss_mib;   /* peak resident memory of the process */
    char msg[512]; /* a pgd_err message */
} proc_report;

/* A level of a TIFF read the bare way: raw tiles through libtiff, TurboJPEG into one tile buffer. */
typedef struct bare_level {
    TIFF *tif;
    uint32_t tw, th, tx_n, ty_n;
    uint64_t *len;          /* owned by libtiff */
    uint8_t *raw, *rgb;
    size_t raw_cap;
} bare_level;

typedef struct worker {
    const job *j;
    pgd_rng rng;
    pgd_patcher *p;         /* patches through OpenSlide or the fast path */
    uint8_t *patch;         /* one patch */
    tjhandle tj;            /* bare decode */
    bare_level b;
} worker;

static double peak_rss_mib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0;
}

static double cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static void bare_close(bare_level *b)
{
    if (b->tif)
        TIFFClose(b->tif);
    free(b->raw);
    free(b->rgb);
    memset(b, 0, sizeof *b);
}

/* Open the slide with libtiff (no memory mapping: tiles come through read(), as the fast path preads them) at
 * the tiled directory of the job's level; load its JPEGTables into the decoder when it has them (TurboJPEG
 * keeps the tables of a tables-only stream for the tiles that follow). */
static int bare_open(worker *w, pgd_err *err)
{
    const job *j = w->j;
    bare_level *b = &w->b;
    if (!(b->tif = TIFFOpen(j->path, "rm")))
        return pgd_fail(err, PGD_EFORMAT, "%s: libtiff cannot open it", j->path);
    int found = 0;
    do {
        uint32_t dw = 0, dh = 0;
        TIFFGetField(b->tif, TIFFTAG_IMAGEWIDTH, &dw);
        TIFFGetField(b->tif, TIFFTAG_IMAGELENGTH, &dh);
        found = TIFFIsTiled(b->tif) && dw == j->level_w && dh == j->level_h;
    } while (!found && TIFFReadDirectory(b->tif));
    if (!found)
        return pgd_fail(err, PGD_EFORMAT, "%s: no tiled directory of %lldx%lld (level %d)", j->path,
                        (long long)j->level_w, (long long)j->level_h, j->level);
    TIFFGetField(b->tif, TIFFTAG_TILEWIDTH, &b->tw);
    TIFFGetField(b->tif, TIFFTAG_TILELENGTH, &b->th);
    if (!b->tw || !b->th || b->tw % (uint32_t)j->den || b->th % (uint32_t)j->den ||
        !TIFFGetField(b->tif, TIFFTAG_TILEBYTECOUNTS, &b->len) || !b->len)
        return pgd_fail(err, PGD_EFORMAT, "%s: level %d: no usable tile table", j->path, j->level);
    b->tx_n = (uint32_t)((j->level_w + b->tw - 1) / b->tw);
    b->ty_n = (uint32_t)((j->level_h + b->th - 1) / b->th);
    uint32_t ntiles = TIFFNumberOfTiles(b->tif);
    if ((uint64_t)b->tx_n * b->ty_n > ntiles)
        return pgd_fail(err, PGD_EFORMAT, "%s: level %d has too few tiles", j->path, j->level);
    for (uint32_t i = 0; i < ntiles; i++)
        b->raw_cap = b->len[i] > b->raw_cap ? (size_t)b->len[i] : b->raw_cap;
    if (!(b->raw = malloc(b->raw_cap ? b->raw_cap : 1)) || !(b->rgb = malloc((size_t)b->tw * b->th * 3)))
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", j->path);
    uint32_t n = 0;
    void *tables = NULL;
    int tw, th, sub, cs;
    if (TIFFGetField(b->tif, TIFFTAG_JPEGTABLES, &n, &tables) && tables && n >= 4 &&
        tjDecompressHeader3(w->tj, tables, n, &tw, &th, &sub, &cs) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: JPEGTables: %s", j->path, tjGetErrorStr2(w->tj));
    return 0;
}

/* Read tile idx raw and decode it at 1/den into the tile buffer. A tile never written (0 bytes) is skipped. */
static int bare_tile(worker *w, uint32_t idx, pgd_err *err)
{
    bare_level *b = &w->b;
    tmsize_t n = (tmsize_t)b->len[idx];
    if (n == 0)
        return 0;
    if (TIFFReadRawTile(b->tif, idx, b->raw, n) != n)
        return pgd_fail(err, PGD_EIO, "%s: tile %u: short read", w->j->path, idx);
    int den = w->j->den;
    if (tjDecompress2(w->tj, b->raw, (unsigned long)n, b->rgb, (int)b->tw / den, 0, (int)b->th / den, TJPF_RGB,
                      0) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: tile %u: jpeg: %s", w->j->path, idx, tjGetErrorStr2(w->tj));
    return 0;
}

/* One fit image from a freshly opened slide (the bare way: every tile of the fit's level at its scale). */
static int unit_fit(worker *w, pgd_err *err)
{
    const job *j = w->j;
    if (j->how == PATH_BARE) {
        int rc = bare_open(w, err);
        for (uint32_t t = 0; rc == 0 && t < w->b.tx_n * w->b.ty_n; t++)
            rc = bare_tile(w, t, err);
        bare_close(&w->b);
        return rc;
    }
    pgd_geom_spec spec = {.kind = PGD_GEOM_FIT, .patch_size = j->patch, .fit_size = j->fit, .level = -1};
    pgd_slide_backend be = j->how == PATH_FAST ? PGD_SLIDE_FAST : PGD_SLIDE_OPENSLIDE;
    pgd_patcher *p = pgd_patcher_open_backend(j->path, &spec, be, err);
    int rc = p && pgd_patcher_fit_image(p, err) ? 0 : -1;
    pgd_patcher_close(&p);
    return rc;
}

/* One native patch at a random cell (the bare way: every tile the patch's rectangle touches). */
static int unit_patch(worker *w, pgd_err *err)
{
    const job *j = w->j;
    uint32_t cell[2] = {pgd_rng_below(&w->rng, j->grid_m), pgd_rng_below(&w->rng, j->grid_n)};
    if (j->how != PATH_BARE)
        return pgd_patcher_read(w->p, cell, 1, w->patch, err);
    const pgd_slide_rect *bd = &j->bounds;
    int64_t x0 = bd->x + (int64_t)cell[1] * j->patch, y0 = bd->y + (int64_t)cell[0] * j->patch;
    int64_t x1 = x0 + j->patch, y1 = y0 + j->patch;
    x1 = x1 < bd->x + bd->w ? x1 : bd->x + bd->w;
    y1 = y1 < bd->y + bd->h ? y1 : bd->y + bd->h;
    for (int64_t ty = y0 / w->b.th; ty <= (y1 - 1) / w->b.th; ty++)
        for (int64_t tx = x0 / w->b.tw; tx <= (x1 - 1) / w->b.tw; tx++)
            if (bare_tile(w, (uint32_t)(ty * w->b.tx_n + tx), err) != 0)
                return -1;
    return 0;
}

/* Everything a process opens before the clock starts: the decoder, and for patches the slide. */
static int worker_setup(worker *w, const job *j, int index, pgd_err *err)
{
    memset(w, 0, sizeof *w);
    w->j = j;
    pgd_rng root;
    pgd_rng_seed(&root, j->seed);
    w->rng = pgd_rng_split(&root, (uint64_t)index); /* process i draws its own cells */
    if (j->how == PATH_BARE && !(w->tj = tjInitDecompress()))
        return pgd_fail(err, PGD_ENOMEM, "jpeg: %s", tjGetErrorStr2(NULL));
    if (j->work != WORK_PATCHES)
        return 0;
    if (j->how == PATH_BARE)
        return bare_open(w, err);
    pgd_geom_spec spec = {.kind = PGD_GEOM_NATIVE, .patch_size = j->patch, .level = j->level};
    pgd_slide_backend be = j->how == PATH_FAST ? PGD_SLIDE_FAST : PGD_SLIDE_OPENSLIDE;
    if (!(w->p = pgd_patcher_open_backend(j->path, &spec, be, err)))
        return -1;
    if (!(w->patch = malloc((size_t)j->patch * j->patch * 3)))
        return pgd_fail(err, PGD_ENOMEM, "out of memory for a patch");
    return 0;
}

static void worker_free(worker *w)
{
    bare_close(&w->b);
    pgd_patcher_close(&w->p);
    free(w->patch);
    if (w->tj)
        tjDestroy(w->tj);
    w->tj = NULL;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

/* 1 when a whole report was read, 0 at end of file (every process has closed its end), -1 on error. */
static int read_report(int fd, proc_report *r)
{
    char *p = (char *)r;
    size_t n = sizeof *r;
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 && n == sizeof *r ? 0 : -1;
        p += k, n -= (size_t)k;
    }
    return 1;
}

/* A forked process: set up, say ready, wait for the start (go_fd closed), work, report. Never returns. */
static void child_main(const job *j, int index, int go_fd, int res_fd)
{
    proc_report r;
    memset(&r, 0, sizeof r);
    pgd_err err = PGD_ERR_INIT;
    worker w;
    r.ok = worker_setup(&w, j, index, &err) == 0;
    if (!r.ok)
        snprintf(r.msg, sizeof r.msg, "%s", err.msg);
    int status = write_all(res_fd, &r, sizeof r) == 0 && r.ok ? 0 : 1;
    char c;
    while (status == 0 && read(go_fd, &c, 1) < 0 && errno == EINTR) /* returns 0 once the parent closes it */
        ;
    if (status == 0) {
        double t0 = pgd_clock_s(), c0 = cpu_s(), t = t0;
        do {
            if ((j->work == WORK_FIT ? unit_fit(&w, &err) : unit_patch(&w, &err)) != 0) {
                r.ok = 0;
                snprintf(r.msg, sizeof r.msg, "%s", err.msg);
                break;
            }
            r.units++;
            t = pgd_clock_s();
        } while (j->units ? r.units < j->units : t - t0 < j->seconds);
        r.cpu_s = cpu_s() - c0, r.wall_s = t - t0;
        r.rss_mib = peak_rss_mib();
        if (write_all(res_fd, &r, sizeof r) != 0 || !r.ok)
            status = 1;
    }
    worker_free(&w);
    close(go_fd);
    close(res_fd);
    exit(status);
}

/* One run: n processes at once, started together once each has opened what it needs. */
typedef struct run_stats {
    int n;
    long units;     /* in all */
    double cpu_s;   /* in all */
    double wall_s;  /* the longest of the processes' own clocks (first unit to last) */
    double span_s;  /* from the start signal to the last report, as the parent saw it */
    double rss_mib; /* the largest peak resident memory of the processes */
    double mp;      /* output megapixels in all */
} run_stats;

static double unit_mp(const job *j)
{
    return j->work == WORK_FIT ? (double)j->fit * j->fit / 1e6 : (double)j->patch * j->patch / 1e6;
}

/* Wait until fd has something to read. -1 when a process ended first (it cannot have said it is ready: the
 * others would wait for the start for ever). */
static int wait_readable(int fd, const pid_t *pids, int n)
{
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int k = poll(&pf, 1, 500);
        if (k > 0)
            return 0;
        if (k < 0 && errno != EINTR)
            return -1;
        for (int i = 0; i < n; i++) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)pids[i], &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pids[i])
                return -1;
        }
    }
}

static int run_procs(const job *j, int n, run_stats *out, pgd_err *err)
{
    int go[2] = {-1, -1}, res[2] = {-1, -1}, started = 0, rc = -1, ready = 0, done = 0;
    pid_t pids[MAX_PROCS];
    memset(out, 0, sizeof *out);
    out->n = n;
    double t0 = 0, t1 = 0;
    if (pipe(go) != 0 || pipe(res) != 0) {
        pgd_fail_errno(err, PGD_EIO, "pipe");
        goto done;
    }
    fflush(stdout);
    fflush(stderr);
    for (; started < n; started++) {
        pid_t pid = fork();
        if (pid < 0) {
            pgd_fail_errno(err, PGD_EIO, "fork");
            break;
        }
        if (pid == 0) {
            close(go[1]);
            close(res[0]);
            child_main(j, started, go[0], res[1]);
        }
        pids[started] = pid;
    }
    close(go[0]);
    close(res[1]);
    go[0] = res[1] = -1;
    proc_report r;
    int said = 0;
    for (; said < started; said++) {
        if (wait_readable(res[0], pids, started) != 0 || read_report(res[0], &r) != 1)
            break;
        if (!r.ok)
            pgd_fail(err, PGD_EIO, "%s", r.msg);
        ready += r.ok;
    }
    t0 = pgd_clock_s();
    close(go[1]); /* the start */
    go[1] = -1;
    while (said == started && done < ready && read_report(res[0], &r) == 1) {
        if (!r.ok)
            pgd_fail(err, PGD_EIO, "%s", r.msg);
        out->units += r.units;
        out->cpu_s += r.cpu_s;
        out->wall_s = r.wall_s > out->wall_s ? r.wall_s : out->wall_s;
        out->rss_mib = r.rss_mib > out->rss_mib ? r.rss_mib : out->rss_mib;
        done++;
    }
    t1 = pgd_clock_s();
    if (done == ready && ready == n && started == n && !pgd_err_is_set(err))
        rc = 0;
    else
        pgd_fail(err, PGD_EIO, "%d of %d processes reported", done, n);
done:
    for (int i = 0; i < started; i++) {
        int st = 0;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            rc = -1;
            pgd_fail(err, PGD_EIO, "process %d ended with status %d", i, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
    }
    for (int k = 0; k < 2; k++) {
        if (go[k] >= 0)
            close(go[k]);
        if (res[k] >= 0)
            close(res[k]);
    }
    out->span_s = t1 - t0;
    out->mp = (double)out->units * unit_mp(j);
    return rc;
}

/* ---- the slide -------------------------------------------------------------------------------------- */

/* mkdir -p */
static int make_dirs(const char *dir, pgd_err *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return pgd_fail(err, PGD_EINVAL, "workdir: too long");
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0)
            continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return pgd_fail_errno(err, pgd_code_from_errno(errno), "mkdir %s", buf);
        *p = c;
        if (!c)
            return 0;
    }
}

/* The generated slide's path; written (under a private name, then renamed) when it is not there yet. */
static int ensure_slide(const bench_cfg *c, char *path, size_t cap, pgd_err *err)
{
    if (snprintf(path, cap, "%s/panda-%lldx%lld-seed%lld.tiff", c->workdir, (long long)c->width,
                 (long long)c->height, (long long)c->seed) >= (int)cap)
        return pgd_fail(err, PGD_EINVAL, "workdir: too long");
    struct stat st;
    if (stat(path, &st) == 0)
        return 0;
    if (make_dirs(c->workdir, err) != 0)
        return -1;
    pgd_synth_params sp = {.task = PGD_SYNTH_PANDA, .width = (uint32_t)c->width, .height = (uint32_t)c->height,
                           .seed = (uint64_t)c->seed};
    pgd_synth_tiff_opts to = {0};
    if (pgd_synth_params_check(&sp, err) != 0 || pgd_synth_tiff_opts_check(&to, err) != 0)
        return -1;
    pgd_synth_slide *s = pgd_synth_slide_new(&sp, 0, -1, err);
    if (!s)
        return -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
    printf("loader_bench: writing %s (once; pgd-synth panda, seed %lld)\n", path, (long long)c->seed);
    fflush(stdout);
    double t0 = pgd_clock_s();
    int rc = pgd_synth_write_slide(s, tmp, &to, NULL, NULL, 0, NULL, NULL, err);
    pgd_synth_slide_free(&s);
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = pgd_fail_errno(err, PGD_EIO, "rename %s to %s", tmp, path);
        unlink(tmp);
    }
    if (rc == 0)
        printf("loader_bench: written in %.1f s\n", pgd_clock_s() - t0);
    return rc;
}

/* ---- the rows and the tables ----------------------------------------------------------------------- */

typedef struct row {
    job j;
    int procs;      /* processes at once */
    int span;       /* a process row: wall time is the parent's span, and runs are ranked by it */
    run_stats run[MAX_REPEAT];
    int nrun;
    int failed;     /* 1: a run failed; 2: not measured (the slide has no fast path) */
} row;

static double per_core(const run_stats *r)
{
    return r->cpu_s > 0 ? r->mp / r->cpu_s : 0;
}

/* Output MP per wall second: the process's own clock, or the span of the whole run. */
static double per_wall(const run_stats *r, int span)
{
    double t = span ? r->span_s : r->wall_s;
    return t > 0 ? r->mp / t : 0;
}

/* The median run by key (per-core rate for a path row, aggregate wall rate for a process row). */
static const run_stats *median_run(const row *r)
{
    const run_stats *by[MAX_REPEAT];
    for (int i = 0; i < r->nrun; i++)
        by[i] = &r->run[i];
    for (int i = 1; i < r->nrun; i++) /* insertion sort: at most 9 */
        for (int k = i; k > 0; k--) {
            double a = r->span ? per_wall(by[k - 1], 1) : per_core(by[k - 1]);
            double b = r->span ? per_wall(by[k], 1) : per_core(by[k]);
            if (a <= b)
                break;
            const run_stats *t = by[k];
            by[k] = by[k - 1], by[k - 1] = t;
        }
    return r->nrun ? by[r->nrun / 2] : NULL;
}

static void print_machine(void)
{
    char model[256];
    pgd_sysinfo_cpu_model(model, sizeof model);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0)
        load[0] = load[1] = load[2] = -1;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
    time_t now = time(NULL);
    struct tm tm;
    char date[32] = "?";
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm);
    printf("machine: %s, %ld cores online, %.0f GiB; load average %.2f %.2f %.2f; %s\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), (double)pages * (double)psz / (1024.0 * 1024 * 1024), load[0], load[1],
           load[2], date);
}

static void print_slide(const char *path, const pgd_slide_info *in, const job *fit, const job *pat)
{
    struct stat st;
    double mb = stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;
    printf("slide: %s (%lld x %lld, %d levels, %ux%u tiles, %s, %.0f MB; backend %s)\n", path,
           (long long)in->level[0].w, (long long)in->level[0].h, in->nlevels, in->level[0].tile_w,
           in->level[0].tile_h, in->codec, mb, pgd_slide_backend_name(in->backend));
    printf("(a) fit %u: level %d (%lld x %lld) decoded at DCT 1/%d, area-resampled into a %u x %u square: "
           "%.1f MP out per fit, from a freshly opened slide each time\n",
           fit->fit, fit->level, (long long)fit->level_w, (long long)fit->level_h, fit->den, fit->fit, fit->fit,
           unit_mp(fit));
    printf("(b) patches: %u x %u at level %d, one at a time at random cells of the %u x %u grid (seed %llu); "
           "%.3f MP out per patch\n",
           pat->patch, pat->patch, pat->level, pat->grid_m, pat->grid_n, (unsigned long long)pat->seed,
           unit_mp(pat));
}

/* The jobs (fit, patches) from the slide as the loader sees it. 0, or -1 with err. */
static int plan(const bench_cfg *c, const char *path, job *fit, job *pat, pgd_slide_info *info, pgd_err *err)
{
    pgd_geom_spec fs = {.kind = PGD_GEOM_FIT, .patch_size = (uint32_t)c->patch, .fit_size = (uint32_t)c->fit,
                        .level = -1};
    pgd_geom_spec ns = {.kind = PGD_GEOM_NATIVE, .patch_size = (uint32_t)c->patch, .level = (int32_t)c->level};
    pgd_patcher *pf = pgd_patcher_open(path, &fs, err), *pn = pf ? pgd_patcher_open(path, &ns, err) : NULL;
    if (!pn) {
        pgd_patcher_close(&pf);
        return -1;
    }
    *info = *pgd_patcher_slide_info(pf);
    const pgd_slide_info *in = info;
    const pgd_geom *gf = pgd_patcher_geom(pf), *gn = pgd_patcher_geom(pn);
    job base = {.path = path, .fit = (uint32_t)c->fit, .patch = (uint32_t)c->patch, .seed = (uint64_t)c->seed,
                .seconds = c->seconds, .den = 1};
    *fit = base, *pat = base;
    fit->work = WORK_FIT;
    fit->level = gf->level;
    /* the fast path's DCT scale (loader/patcher.c): the largest den <= the level's max with den <= 1/scale */
    while (fit->den * 2 <= in->level[gf->level].max_den && fit->den * 2 <= (1 / gf->scale) * (1 + 1e-9))
        fit->den *= 2;
    fit->units = c->fits;
    pat->work = WORK_PATCHES;
    pat->level = gn->level;
    pat->grid_m = gn->grid_m, pat->grid_n = gn->grid_n;
    pat->units = c->patches;
    /* the bounds at the level, as loader/patcher.c maps them */
    const pgd_slide_level *l0 = &in->level[0], *l = &in->level[pat->level];
    double fx = (double)l->w / (double)l0->w, fy = (double)l->h / (double)l0->h;
    int64_t x0 = (int64_t)floor((double)in->bounds_x * fx);
    int64_t x1 = (int64_t)ceil((double)(in->bounds_x + in->bounds_w) * fx);
    int64_t y0 = (int64_t)floor((double)in->bounds_y * fy);
    int64_t y1 = (int64_t)ceil((double)(in->bounds_y + in->bounds_h) * fy);
    x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > l->w ? l->w : x1, y1 = y1 > l->h ? l->h : y1;
    pat->bounds = (pgd_slide_rect){x0, y0, x1 - x0, y1 - y0};
    fit->level_w = in->level[fit->level].w, fit->level_h = in->level[fit->level].h;
    pat->level_w = l->w, pat->level_h = l->h;
    info->path = path; /* the strings of info point into the patcher: keep only what outlives it */
    info->vendor = info->mpp_source = "";
    pgd_patcher_close(&pf);
    pgd_patcher_close(&pn);
    return 0;
}

static void print_single_table(row *rows, int nrows)
{
    printf("\none process (median of the runs by MP/s per core):\n\n");
    printf("| work | path | done | MP out | CPU s | wall s | MP/s per core | MP/s wall | x OpenSlide | of bare "
           "| peak RSS |\n");
    printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        const run_stats *m = median_run(r);
        if (!m || r->failed) {
            printf("| %s | %s | %s | | | | | | | | |\n", work_names[r->j.work], path_names[r->j.how],
                   r->failed == 2 ? "n/a" : "failed");
            continue;
        }
        const row *os = &rows[i - (int)r->j.how], *bare = &rows[i - (int)r->j.how + PATH_BARE];
        const run_stats *mo = median_run(os), *mb = median_run(bare);
        char vs_os[16] = "", vs_bare[16] = "";
        if (mo && !os->failed && per_core(mo) > 0)
            snprintf(vs_os, sizeof vs_os, "%.2fx", per_core(m) / per_core(mo));
        if (mb && !bare->failed && per_core(mb) > 0)
            snprintf(vs_bare, sizeof vs_bare, "%.0f%%", 100 * per_core(m) / per_core(mb));
        printf("| %s | %s | %ld | %.1f | %.3f | %.3f | %.1f | %.1f | %s | %s | %.0f MiB |\n", work_names[r->j.work],
               path_names[r->j.how], m->units, m->mp, m->cpu_s, m->wall_s, per_core(m), per_wall(m, 0), vs_os, vs_bare,
               m->rss_mib);
    }
}

/* CPU seconds of all the processes per wall second: n when each had a core to itself the whole time. */
static double cores_used(const run_stats *r)
{
    return r->span_s > 0 ? r->cpu_s / r->span_s : 0;
}

static void print_procs_table(row *rows, int nrows)
{
    printf("\n1..N loader processes, fast path, the same work in each (median of the runs by aggregate MP/s):\n\n");
    printf("| work | processes | done each | MP out | wall s | aggregate MP/s | of n x one | MP/s per core "
           "| cores used |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        const run_stats *m = median_run(r), *one = median_run(&rows[i - (r->procs - 1)]);
        if (!m || r->failed || !one || rows[i - (r->procs - 1)].failed) {
            printf("| %s | %d | failed | | | | | | |\n", work_names[r->j.work], r->procs);
            continue;
        }
        double of_n = per_wall(m, 1) / (r->procs * per_wall(one, 1));
        printf("| %s | %d | %ld | %.1f | %.3f | %.1f | %.2f | %.1f | %.2f |\n", work_names[r->j.work], r->procs,
               r->j.units, m->mp, m->span_s, per_wall(m, 1), of_n, per_core(m), cores_used(m));
    }
}

/* One pass over src (m->src_w x m->src_h) as the fit feeds the resampler: bands of STRIP rows, each in strips of
 * STRIP columns copied into a small buffer first, as tiles are decoded into one (the default implementation).
 * With resample 0 only the copies run. CPU seconds, or -1. */
enum { STRIP = 256 };
static double strips_pass_s(const pgd_resample_map *m, const uint8_t *src, uint8_t *dst, int resample)
{
    pgd_resample *r = resample ? pgd_resample_new(m, dst, (size_t)m->dst_w * 3, NULL) : NULL;
    uint32_t margin = r ? pgd_resample_strip_margin(r) : 0;
    size_t bstride = ((size_t)STRIP + margin) * 3 + 16;
    uint8_t *buf = malloc(bstride * STRIP + 16);
    double c0 = cpu_s(), t = -1;
    if ((resample && !r) || !buf)
        goto done;
    for (uint32_t y = 0; y < m->src_h; y += STRIP) {
        uint32_t n = m->src_h - y < STRIP ? m->src_h - y : STRIP, end = 0;
        while (end < m->src_w) {
            uint32_t from = r ? pgd_resample_strip_from(r) : end, to = end + STRIP < m->src_w ? end + STRIP : m->src_w;
            for (uint32_t i = 0; i < n; i++)
                memcpy(buf + i * bstride, src + ((size_t)(y + i) * m->src_w + from) * 3, (size_t)(to - from) * 3);
            if (r && pgd_resample_push_strip(r, buf, bstride, n, from, to, NULL) != 0)
                goto done;
            end = to;
        }
    }
    if (r)
        pgd_resample_finish(r);
    t = cpu_s() - c0;
done:
    pgd_resample_free(&r);
    free(buf);
    return t;
}

/* CPU seconds of the streamed resampling alone: the strips pass less its copies. */
static double streamed_s(const pgd_resample_map *m, const uint8_t *src, uint8_t *dst)
{
    double with = strips_pass_s(m, src, dst, 1), copies = strips_pass_s(m, src, dst, 0);
    return with < 0 || copies < 0 ? -1 : with > copies ? with - copies : 0;
}

/* CPU seconds of resampling the fit's decoded level into the fit rectangle, the best of three, as the fast path
 * does it (bands of strips as tiles arrive, default implementation): the level's own pixels (read through the fast path, when
 * real is set and that works) or random pixels (no flat areas). -1 when it could not be measured. */
static double resample_only_s(const job *j, int real, uint32_t *out_w, uint32_t *out_h)
{
    uint32_t sw = (uint32_t)((j->level_w + j->den - 1) / j->den), sh = (uint32_t)((j->level_h + j->den - 1) / j->den);
    double s = (double)j->fit / (double)(j->level_w > j->level_h ? j->level_w : j->level_h);
    uint32_t ow = (uint32_t)lround((double)j->level_w * s), oh = (uint32_t)lround((double)j->level_h * s);
    ow = ow < 1 ? 1 : ow > j->fit ? j->fit : ow, oh = oh < 1 ? 1 : oh > j->fit ? j->fit : oh;
    *out_w = ow, *out_h = oh;
    uint8_t *src = malloc((size_t)sw * sh * 3), *dst = malloc((size_t)ow * oh * 3);
    double best = -1;
    int ok = src && dst;
    if (ok && real) {
        pgd_err err = PGD_ERR_INIT;
        pgd_slide *sl = pgd_slide_open(j->path, PGD_SLIDE_FAST, &err);
        ok = sl && pgd_slide_read(sl, j->level, j->den, 0, 0, sw, sh, NULL, src, (size_t)sw * 3, &err) == 0;
        pgd_slide_close(&sl);
    } else if (ok) {
        pgd_rng rng;
        pgd_rng_seed(&rng, 5);
        for (size_t i = 0; i < (size_t)sw * sh * 3; i++)
            src[i] = (uint8_t)pgd_rng_below(&rng, 256);
    }
    if (ok) {
        pgd_resample_map m = {sw, sh, 0, 0, (double)j->level_w / j->den / ow, (double)j->level_h / j->den / oh, ow, oh};
        for (int k = 0; k < 3; k++) {
            double t = streamed_s(&m, src, dst);
            if (t < 0)
                break;
            best = best < 0 || t < best ? t : best;
        }
    }
    free(src), free(dst);
    return best;
}

/* FNV-1a (64 bits) of the fast path's fit image (S x S x 3 bytes, padding included): a change that must not
 * change the pixels leaves it as it was. 0, or -1 with err. */
static int fit_hash(const job *j, uint64_t *hash, pgd_err *err)
{
    pgd_geom_spec spec = {.kind = PGD_GEOM_FIT, .patch_size = j->patch, .fit_size = j->fit, .level = -1};
    pgd_patcher *p = pgd_patcher_open_backend(j->path, &spec, PGD_SLIDE_FAST, err);
    const uint8_t *img = p ? pgd_patcher_fit_image(p, err) : NULL;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; img && i < (size_t)j->fit * j->fit * 3; i++)
        h = (h ^ img[i]) * 1099511628211ull;
    pgd_patcher_close(&p);
    *hash = h;
    return img ? 0 : -1;
}

/* Where a fast-path fit's CPU time goes: the bare decode of the same tiles, the resampling alone, the rest
 * (opening the slide through OpenSlide and libtiff, reading tiles, copying edge tiles, first-touch memory). */
static void print_fit_breakdown(row *single)
{
    const run_stats *f = median_run(&single[PATH_FAST]), *b = median_run(&single[PATH_BARE]);
    if (!f || !b || single[PATH_FAST].failed || single[PATH_BARE].failed || !f->units || !b->units)
        return;
    uint32_t ow, oh;
    double rs = resample_only_s(&single[PATH_FAST].j, 1, &ow, &oh);
    double rnd = resample_only_s(&single[PATH_FAST].j, 0, &ow, &oh);
    if (rs < 0)
        return;
    double fast_ms = 1e3 * f->cpu_s / (double)f->units, bare_ms = 1e3 * b->cpu_s / (double)b->units;
    pgd_resample_impl impl = pgd_resample_impl_available(PGD_RESAMPLE_AVX2)   ? PGD_RESAMPLE_AVX2
                             : pgd_resample_impl_available(PGD_RESAMPLE_SSE2) ? PGD_RESAMPLE_SSE2
                                                                              : PGD_RESAMPLE_SCALAR;
    printf("\nfit breakdown (CPU ms per fit, medians): fast path %.1f = bare decode %.1f + resampling to %ux%u %.1f "
           "(%s, streamed in strips as the fit does, measured alone on this level's pixels; %.1f on random pixels) + "
           "the rest %.1f\n",
           fast_ms, bare_ms, ow, oh, 1e3 * rs, pgd_resample_impl_name(impl), 1e3 * rnd, fast_ms - bare_ms - 1e3 * rs);
}

static const char *verdict(double v, double target)
{
    return v >= target ? "met" : "NOT met";
}

static void print_targets(row *single, row *procs, int nprocs_rows, int N)
{
    printf("\ntargets on this machine (medians; MP/s per core for the paths, aggregate wall MP/s for processes):\n");
    for (int w = 0; w < 2; w++) {
        const row *rs = &single[w * 3];
        const run_stats *o = median_run(&rs[PATH_OPENSLIDE]), *f = median_run(&rs[PATH_FAST]),
                        *b = median_run(&rs[PATH_BARE]);
        if (!o || !f || !b || rs[0].failed || rs[1].failed || rs[2].failed) {
            printf("  %-8s not measured\n", work_names[w]);
            continue;
        }
        double x = per_core(f) / per_core(o), of = per_core(f) / per_core(b);
        printf("  %-8s fast path %.1f MP/s = %.2fx OpenSlide's %.1f (target >= 3x): %s; %.0f%% of bare decode's %.1f "
               "(target >= 70%%): %s\n",
               work_names[w], per_core(f), x, per_core(o), verdict(x, 3), 100 * of, per_core(b), verdict(of, 0.7));
    }
    for (int w = 0; w < 2 && nprocs_rows > 0; w++) {
        const row *one = &procs[w * N], *all = &procs[w * N + N - 1];
        const run_stats *m1 = median_run(one), *mn = median_run(all);
        if (!m1 || !mn || one->failed || all->failed) {
            printf("  %-8s %d processes: not measured\n", work_names[w], N);
            continue;
        }
        double ratio = per_wall(mn, 1) / per_wall(m1, 1);
        printf("  %-8s %d process%s %.1f MP/s = %.2f x one process's %.1f = %.2f N (target >= 0.9 N): %s",
               work_names[w], N, N == 1 ? "" : "es", per_wall(mn, 1), ratio, per_wall(m1, 1), ratio / N,
               verdict(ratio / N, 0.9));
        if (cores_used(mn) < 0.9 * N)
            printf(" (the processes had %.2f of %d cores: other work was running)", cores_used(mn), N);
        printf("\n");
    }
}

/* One run of a row; a failure is printed once and marks the row. */
static void run_row(row *r)
{
    pgd_err err = PGD_ERR_INIT;
    if (r->failed)
        return;
    if (run_procs(&r->j, r->procs, &r->run[r->nrun], &err) != 0) {
        fprintf(stderr, "loader_bench: %s, %s, %d processes: %s\n", work_names[r->j.work], path_names[r->j.how],
                r->procs, err.msg);
        r->failed = 1;
        return;
    }
    r->nrun++;
}

/* Units per process for the process rows: what one fast-path process did in --seconds (its first run). */
static long calibrate(const row *fast)
{
    if (fast->j.units)
        return fast->j.units;
    if (fast->failed || fast->nrun == 0 || fast->run[0].units == 0)
        return 1;
    double per = fast->run[0].wall_s / (double)fast->run[0].units;
    long u = lround(fast->j.seconds / per);
    return u < 1 ? 1 : u;
}

static int bench(const bench_cfg *c)
{
    pgd_err err = PGD_ERR_INIT;
    char path[4096];
    if (c->slide)
        snprintf(path, sizeof path, "%s", c->slide);
    else if (ensure_slide(c, path, sizeof path, &err) != 0) {
        fprintf(stderr, "loader_bench: %s\n", err.msg);
        return PGD_EXIT_FAIL;
    }
    job fit, pat;
    pgd_slide_info info;
    if (plan(c, path, &fit, &pat, &info, &err) != 0) {
        fprintf(stderr, "loader_bench: %s\n", err.msg);
        return PGD_EXIT_FAIL;
    }
    int N = c->procs ? (int)c->procs : (int)sysconf(_SC_NPROCESSORS_ONLN);
    N = N < 1 ? 1 : N > MAX_PROCS ? MAX_PROCS : N;
    print_machine();
    print_slide(path, &info, &fit, &pat);
    printf("runs: %lld per row, each %s; process rows: 1..%d fast-path processes\n", (long long)c->repeat,
           c->patches || c->fits ? "a fixed count" : "about --seconds long", N);
    if (info.backend != PGD_SLIDE_FAST)
        printf("note: %s does not qualify for the fast path (%s): only OpenSlide is measured\n", path, info.why);
    fflush(stdout);

    static row single[6], procs[2 * MAX_PROCS];
    for (int w = 0; w < 2; w++)
        for (int h = 0; h < 3; h++) {
            row *r = &single[w * 3 + h];
            r->j = w == 0 ? fit : pat;
            r->j.how = (path_kind)h;
            r->procs = 1;
            r->failed = h != PATH_OPENSLIDE && info.backend != PGD_SLIDE_FAST ? 2 : 0;
        }
    int nprocs_rows = info.backend == PGD_SLIDE_FAST ? 2 * N : 0;
    for (int i = 0; i < nprocs_rows; i++) {
        procs[i].j = single[(i / N) * 3 + PATH_FAST].j;
        procs[i].procs = i % N + 1;
        procs[i].span = 1;
    }
    for (int k = 0; k < c->repeat; k++) { /* rounds over every row, so that a busy spell hits all rows alike */
        for (int i = 0; i < 6; i++)
            run_row(&single[i]);
        if (k == 0)
            for (int i = 0; i < nprocs_rows; i++)
                procs[i].j.units = calibrate(&single[(i / N) * 3 + PATH_FAST]);
        for (int i = 0; i < nprocs_rows; i++)
            run_row(&procs[i]);
        fflush(stdout);
        fprintf(stderr, "loader_bench: round %d of %lld done\n", k + 1, (long long)c->repeat);
    }
    print_single_table(single, 6);
    if (nprocs_rows)
        print_procs_table(procs, nprocs_rows);
    print_fit_breakdown(single);
    uint64_t hash;
    if (info.backend == PGD_SLIDE_FAST && fit_hash(&fit, &hash, &err) == 0)
        printf("fit image through the fast path: FNV-1a 64 %016llx (the same for every resampling implementation)\n",
               (unsigned long long)hash);
    else if (info.backend == PGD_SLIDE_FAST)
        printf("fit image through the fast path: no hash (%s)\n", err.msg);
    print_targets(single, procs, nprocs_rows, N);
    double load[3];
    if (getloadavg(load, 3) == 3)
        printf("load average at the end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    int failed = 0;
    for (int i = 0; i < 6; i++)
        failed |= single[i].failed == 1;
    for (int i = 0; i < nprocs_rows; i++)
        failed |= procs[i].failed;
    return failed ? PGD_EXIT_FAIL : PGD_EXIT_OK;
}

int main(int argc, char **argv)
{
    bench_cfg c;
    memset(&c, 0, sizeof c);
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc = PGD_EXIT_OK;
    TIFFSetWarningHandler(NULL);
    if (pgd_cfg_parse_args(opts, &c, argc, argv, &a, &err) != 0) {
        fprintf(stderr, "loader_bench: %s\n(run loader_bench --help for the options)\n", err.msg);
        rc = PGD_EXIT_USAGE;
    } else if (a.help) {
        pgd_cfg_usage(opts, stdout, USAGE_LINE);
        fputs("\nExit status: 0 measured (whether or not the targets were met), 1 a run failed, 2 bad arguments.\n",
              stdout);
    } else if (a.npositional > 0) {
        fprintf(stderr, "loader_bench: unexpected argument '%s'\n", a.positional[0]);
        rc = PGD_EXIT_USAGE;
    } else if (c.fit % c.patch != 0) {
        fprintf(stderr, "loader_bench: --fit %lld is not a multiple of --patch %lld\n", (long long)c.fit,
                (long long)c.patch);
        rc = PGD_EXIT_USAGE;
    } else {
        rc = bench(&c);
    }
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
    return rc;
}
