/* sampler_bench.c: the stream benchmark: pgd-sampler -> pgd-sink throughput with 1..N real loaders and with
 * N fake loaders that answer every JOB at once (no decoding: the sampler and the wire alone), beside memcpy.
 * Command and columns: docs/sampler.md ("Benchmark"). */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "config.h"
#include "loader/serve.h"
#include "loader/synth.h"
#include "wire.h"
#include "wire_zmq.h"

typedef struct bench_cfg {
    char *workdir, *bin;
    int64_t slides, width, height, fit, patch, batch, epochs, fill_chunk, max_loaders, window, credit;
    double sampling;
    int real, instant, loader_shm;
} bench_cfg;

#define O(f) offsetof(bench_cfg, f)
static const pgd_cfg_opt opts[] = {
    {"workdir", PGD_CFG_STRING, O(workdir), "/tmp/pgd-bench-sampler", 0, 0, NULL, "slides and sockets go here", 0},
    {"bin", PGD_CFG_STRING, O(bin), "build", 0, 0, NULL, "folder of pgd-sampler, pgd-loader, pgd-sink", 0},
    {"slides", PGD_CFG_INT, O(slides), "8", 1, 10000, NULL, "synthetic panda slides", 0},
    {"width", PGD_CFG_INT, O(width), "2048", 64, 100000, NULL, "slide width", 0},
    {"height", PGD_CFG_INT, O(height), "1536", 64, 100000, NULL, "slide height", 0},
    {"fit", PGD_CFG_INT, O(fit), "1024", 64, 65536, NULL, "fit size S", 0},
    {"patch", PGD_CFG_INT, O(patch), "128", 8, 4096, NULL, "patch size", 0},
    {"batch", PGD_CFG_INT, O(batch), "4", 1, 4096, NULL, "images per batch", 0},
    {"epochs", PGD_CFG_INT, O(epochs), "2", 1, 1000, NULL, "epochs", 0},
    {"fill_chunk", PGD_CFG_INT, O(fill_chunk), "64", 1, 1000000, NULL, "fill chunk", 0},
    {"sampling", PGD_CFG_FLOAT, O(sampling), "0.25", 0.001, 1, NULL, "sampling", 0},
    {"max_loaders", PGD_CFG_INT, O(max_loaders), "2", 1, 64, NULL, "loaders: 1..N", 0},
    {"window", PGD_CFG_INT, O(window), "4", 1, 4096, NULL, "sampler window", 0},
    {"credit", PGD_CFG_INT, O(credit), "4", 1, 10000, NULL, "sink credit", 0},
    {"real", PGD_CFG_BOOL, O(real), "yes", 0, 0, NULL, "run the rows with real pgd-loader processes", 0},
    {"instant", PGD_CFG_BOOL, O(instant), "yes", 0, 0, NULL, "run the rows with instant (fake) loaders", 0},
    {"loader_shm", PGD_CFG_BOOL, O(loader_shm), "yes", 0, 0, NULL,
     "loaders answer through shared memory (PATCHES_SHM); no: inline PATCHES", 0},
    {NULL},
};

static pid_t spawn(const char *bin, const char *const *argv, const char *out)
{
    fflush(stdout); /* or the child's freopen writes our buffered lines again */
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    FILE *o = freopen(out ? out : "/dev/null", "w", stdout);
    FILE *e = freopen("/dev/null", "w", stderr);
    if (!o || !e)
        _exit(126);
    execv(bin, (char *const *)argv);
    _exit(127);
}

/* The fake loader's pixels never change: ZeroMQ may send them in place, nothing to give back. */
static void keep_pixels(void *data, void *hint)
{
    (void)data;
    (void)hint;
}

/* The instant loader's answer to a JOB allowing PATCHES_SHM: a region of its segment, made grey the first
 * time it is used (the pixels never change), then only the reference. 0 sent, -1 no region (go inline). */
static int fake_shm_answer(void *s, pgd_serve_shm *g, uint8_t *grey, const pgd_wire_msg *m, size_t need)
{
    if (!g->base || need + PGD_SERVE_SHM_GEN > g->slot_size) {
        if (g->base && pgd_serve_shm_lent(g) > 0)
            return -1;
        pgd_serve_shm_close(g);
        if (pgd_serve_shm_create(g, 4, need, m->h.run_id, NULL) != 0)
            return -1;
        memset(grey, 0, 4);
    }
    uint8_t *px;
    int r = pgd_serve_shm_take(g, m->h.task_id, m->h.attempt, need, &px);
    if (r < 0)
        return -1;
    if (!grey[r]) { /* the first use of this region */
        memset(px, 200, g->slot_size - PGD_SERVE_SHM_GEN);
        grey[r] = 1;
    }
    pgd_wire_shmref ref;
    pgd_serve_shm_finish(g, r, need, &ref);
    uint8_t rb[PGD_WIRE_SHMREF_SIZE];
    pgd_wire_put_shmref(rb, &ref);
    pgd_wire_header h = m->h;
    h.type = PGD_WIRE_PATCHES_SHM;
    h.flags = 0;
    pgd_wire_frame f[3] = {{rb, sizeof rb}, {m->cells, m->n_cells * PGD_WIRE_CELL_SIZE}, {g->name, strlen(g->name)}};
    if (pgd_wire_send(s, NULL, &h, f, 3, 0, NULL) != 0) {
        pgd_serve_shm_abandon(g, r);
        return -1;
    }
    return 0;
}

/* A loader that answers every JOB at once with grey pixels and the JOB's cells (through shared memory when
 * the JOB allows it and shm is set); exits at STOP. */
static void fake_loader(const char *endpoint, int shm)
{
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(s, endpoint);
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_HELLO);
    h.credit = 2;
    h.flags = shm ? PGD_WIRE_HELLO_SHM : 0;
    pgd_wire_frame name = {"instant", 7};
    pgd_wire_send(s, NULL, &h, &name, 1, 0, NULL);
    uint8_t *px = NULL, grey[64] = {0};
    size_t cap = 0;
    pgd_serve_shm seg;
    memset(&seg, 0, sizeof seg);
    for (;;) {
        pgd_wire_rx rx;
        memset(&rx, 0, sizeof rx);
        if (pgd_wire_recv(s, &rx, 0, 0, NULL) != 0) {
            pgd_wire_rx_close(&rx);
            continue;
        }
        const pgd_wire_msg *m = &rx.msg;
        if (m->h.type == PGD_WIRE_STOP) {
            pgd_wire_rx_close(&rx);
            break;
        }
        if (m->h.type == PGD_WIRE_RELEASE)
            pgd_serve_shm_release(&seg, m->h.task_id, m->h.attempt);
        if (m->h.type == PGD_WIRE_JOB) {
            size_t need = m->n_cells * m->h.patch_size * m->h.patch_size * 3;
            if (shm && (m->h.flags & PGD_WIRE_JOB_SHM) && fake_shm_answer(s, &seg, grey, m, need) == 0) {
                pgd_wire_rx_close(&rx);
                continue;
            }
            if (need > cap) {
                free(px);
                px = malloc(need);
                cap = px ? need : 0;
                if (px)
                    memset(px, 200, need);
            }
            if (px) {
                pgd_wire_header r = m->h;
                r.type = PGD_WIRE_PATCHES;
                r.flags = 0;
                pgd_wire_frame f[2] = {{px, need}, {m->cells, m->n_cells * PGD_WIRE_CELL_SIZE}};
                int given;
                pgd_wire_send_zc(s, NULL, &r, f, 2, 0, keep_pixels, NULL, 0, &given, NULL);
            }
        }
        pgd_wire_rx_close(&rx);
    }
    free(px);
    pgd_serve_shm_close(&seg);
    zmq_close(s);
    zmq_ctx_term(ctx);
    _exit(0);
}

/* One run: sampler + n loaders (real or instant) + sink. Prints a table row from the sink's summary. */
static void run(const bench_cfg *c, int n, int instant)
{
    char sampler[600], loader[600], sink[600], man[600], lep[600], cep[600], out[600], num[8][32];
    snprintf(sampler, sizeof sampler, "%s/pgd-sampler", c->bin);
    snprintf(loader, sizeof loader, "%s/pgd-loader", c->bin);
    snprintf(sink, sizeof sink, "%s/pgd-sink", c->bin);
    snprintf(man, sizeof man, "%s/slides/train.csv", c->workdir);
    snprintf(lep, sizeof lep, "ipc://%s/l.ipc", c->workdir);
    snprintf(cep, sizeof cep, "ipc://%s/c.ipc", c->workdir);
    snprintf(out, sizeof out, "%s/sink.out", c->workdir);
    snprintf(num[0], 32, "%lld", (long long)c->fit);
    snprintf(num[1], 32, "%lld", (long long)c->patch);
    snprintf(num[2], 32, "%lld", (long long)c->batch);
    snprintf(num[3], 32, "%lld", (long long)c->epochs);
    snprintf(num[4], 32, "%g", c->sampling);
    snprintf(num[5], 32, "%lld", (long long)c->fill_chunk);
    snprintf(num[6], 32, "%lld", (long long)c->window);
    snprintf(num[7], 32, "%lld", (long long)c->credit);
    const char *sa[] = {sampler, "--manifest", man, "--fit-size", num[0], "--patch", num[1], "--batch-size", num[2],
                        "--epochs", num[3], "--sampling", num[4], "--fill-chunk", num[5], "--window", num[6],
                        "--loaders-endpoint", lep, "--consumer-endpoint", cep, "--heartbeat-timeout-ms", "600000",
                        NULL};
    double t0 = pgd_clock_s();
    pid_t sp = spawn(sampler, sa, NULL);
    pid_t lp[64];
    for (int i = 0; i < n; i++) {
        if (instant) {
            fflush(stdout);
            lp[i] = fork();
            if (lp[i] == 0)
                fake_loader(lep, c->loader_shm);
        } else {
            const char *la[] = {loader, "serve", "--connect", lep, "--shm", c->loader_shm ? "auto" : "no", NULL};
            lp[i] = spawn(loader, la, NULL);
        }
    }
    const char *ka[] = {sink, "--connect", cep, "--credit", num[7], NULL};
    pid_t kp = spawn(sink, ka, out);
    int st;
    waitpid(kp, &st, 0);
    waitpid(sp, &st, 0);
    for (int i = 0; i < n; i++)
        waitpid(lp[i], &st, 0);
    double wall = pgd_clock_s() - t0;
    FILE *f = fopen(out, "r");
    char line[1024] = "";
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "# sink:", 7) == 0)
            break;
    if (f)
        fclose(f);
    unsigned long long msgs = 0, patches = 0;
    double mb = 0, secs = 0, ps = 0, mbs = 0;
    if (sscanf(line, "# sink: END; %llu BATCH messages, %llu patches, %lf MB in %lf s: %lf patches/s, %lf MB/s", &msgs,
               &patches, &mb, &secs, &ps, &mbs) != 6) {
        printf("%-10s %3d  (no result: %s)\n", instant ? "instant" : "pgd-loader", n, line);
        return;
    }
    printf("%-10s %3d %8llu %9llu %9.1f %8.3f %10.0f %8.3f %8.2f\n", instant ? "instant" : "pgd-loader", n, msgs,
           patches, mb, secs, ps, mbs / 1000.0, wall);
    fflush(stdout);
}

static void memcpy_row(void)
{
    size_t n = 8u << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a);
        free(b);
        return;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    double t0 = pgd_clock_s(), t;
    size_t bytes = 0;
    do {
        memcpy(b, a, n);
        a[bytes % n] ^= b[(bytes + 1) % n];
        bytes += n;
        t = pgd_clock_s();
    } while (t - t0 < 0.5);
    printf("memcpy of 8 MiB blocks: %.2f GB/s\n", (double)bytes / (t - t0) / 1e9);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    bench_cfg c;
    memset(&c, 0, sizeof c);
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_cfg_parse_args(opts, &c, argc, argv, &a, &err) != 0 || a.help) {
        if (!a.help)
            fprintf(stderr, "sampler_bench: %s\n", err.msg);
        pgd_cfg_usage(opts, a.help ? stdout : stderr, "sampler_bench [options]");
        pgd_cfg_args_free(&a);
        pgd_cfg_free(opts, &c);
        return a.help ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char man[700], dir[600];
    snprintf(dir, sizeof dir, "%s/slides", c.workdir);
    snprintf(man, sizeof man, "%s/train.csv", dir);
    mkdir(c.workdir, 0755);
    if (access(man, R_OK) != 0) {
        pgd_synth_batch b;
        memset(&b, 0, sizeof b);
        b.params.task = PGD_SYNTH_PANDA;
        b.params.width = (uint32_t)c.width;
        b.params.height = (uint32_t)c.height;
        b.params.seed = 1;
        b.count = (uint32_t)c.slides;
        b.out_dir = dir;
        if (pgd_synth_generate(&b, &err) != 0) {
            fprintf(stderr, "sampler_bench: %s\n", err.msg);
            return 1;
        }
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("sampler_bench: %ld cores; %lld slides %lldx%lld, fit %lld, patch %lld, batch %lld, epochs %lld, "
           "sampling %g, fill_chunk %lld, window %lld, sink credit %lld, loader pixels %s\n",
           cores, (long long)c.slides, (long long)c.width, (long long)c.height, (long long)c.fit, (long long)c.patch,
           (long long)c.batch, (long long)c.epochs, c.sampling, (long long)c.fill_chunk, (long long)c.window,
           (long long)c.credit, c.loader_shm ? "in shared memory" : "inline");
    memcpy_row();
    printf("%-10s %3s %8s %9s %9s %8s %10s %8s %8s\n", "loaders", "n", "batches", "patches", "MB", "stream_s",
           "patches/s", "GB/s", "wall_s");
    for (int n = 1; c.real && n <= c.max_loaders; n++)
        run(&c, n, 0);
    for (int n = 1; c.instant && n <= c.max_loaders; n++)
        run(&c, n, 1);
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
    return 0;
}
