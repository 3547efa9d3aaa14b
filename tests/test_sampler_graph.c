/* test_sampler_graph.c: the real process graph (pgd-sampler, pgd-loader serve x N, pgd-sink) on synthetic
 * slides: digests of a clean run, the same with 1 or 3 loaders, with a loader killed, stopped past the
 * heartbeat timeout, a corrupt slide, and fake loaders that answer with a malformed message or go silent. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "cunit_util.h"
#include "loader/serve.h"
#include "loader/synth.h"
#include "sampler/schedule.h"
#include "wire.h"
#include "wire_zmq.h"

#define N_SLIDES 7
#define BAD_SLIDE 3          /* manifest row replaced by a corrupt file in the "bad" set */
#define WAIT_MS 60000        /* a guard against hangs, not a speed check */
#define MAX_LINES 256
#define LINE_LEN 96

/* The schedule every run uses (the test recomputes it with pgd_sched to know each message's images). */
#define FIT 512
#define PATCH 64
#define BATCH 2
#define EPOCHS 2
#define SAMPLING "0.25"
#define FILL_CHUNK 32
#define SEED 5

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- fixtures ------------------------------------------------------------------------------------- */

static struct {
    int made, ok;
    char good[512], bad[512]; /* slide folders; both hold train.csv */
} fx;

static int fixtures(void)
{
    if (fx.made)
        return fx.ok ? 0 : -1;
    fx.made = 1;
    snprintf(fx.good, sizeof fx.good, "%s/good", pgd_test_tmpdir());
    snprintf(fx.bad, sizeof fx.bad, "%s/bad", pgd_test_tmpdir());
    pgd_synth_batch b;
    memset(&b, 0, sizeof b);
    b.params.task = PGD_SYNTH_PANDA;
    b.params.width = 1024;
    b.params.height = 768;
    b.params.seed = 1;
    b.count = N_SLIDES;
    b.out_dir = fx.good;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_synth_generate(&b, &err) != 0) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return -1;
    }
    if (mkdir(fx.bad, 0755) != 0)
        return -1;
    char src[700], dst[700];
    snprintf(src, sizeof src, "%s/train.csv", fx.good);
    snprintf(dst, sizeof dst, "%s/train.csv", fx.bad);
    if (symlink(src, dst) != 0)
        return -1;
    for (int i = 0; i < N_SLIDES; i++) {
        snprintf(src, sizeof src, "%s/panda_%05d.tiff", fx.good, i);
        snprintf(dst, sizeof dst, "%s/panda_%05d.tiff", fx.bad, i);
        if (i != BAD_SLIDE) {
            if (symlink(src, dst) != 0)
                return -1;
            continue;
        }
        FILE *f = fopen(dst, "w"); /* a TIFF magic and then nonsense */
        if (!f)
            return -1;
        fputs("II*\0this is not a slide at all", f);
        fclose(f);
    }
    fx.ok = 1;
    return 0;
}

/* ---- processes ------------------------------------------------------------------------------------ */

/* fork + exec build/NAME with args (NULL-terminated), stdout and stderr to files (NULL: /dev/null). */
static pid_t spawn(const char *name, const char *const *args, const char *out, const char *errf)
{
    char bin[600];
    snprintf(bin, sizeof bin, "%s/%s", pgd_test_build_dir(), name);
    const char *argv[48];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; args[i] && n < 47; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fo = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(errf ? errf : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
        _exit(126);
    execv(bin, (char *const *)argv);
    _exit(127);
}

/* Wait for pid up to ms; kill it when it overstays. Returns the exit status, or -1. */
static int reap(pid_t pid, int ms)
{
    int64_t end = pgd_clock_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0 || pgd_clock_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        nap_ms(5);
    }
}

/* ---- fake loaders (this process, a DEALER) -------------------------------------------------------- */

enum { FAKE_NONE, FAKE_MALFORMED, FAKE_SILENT, FAKE_SHM_REWRITTEN, FAKE_SHM_ELSEWHERE };

typedef struct fake {
    void *ctx, *sock;
    int kind, answered;
    int inline_jobs; /* JOBs without the SHM flag after the first answer */
    pgd_serve_shm seg; /* FAKE_SHM_REWRITTEN: its patch segment */
} fake;

static int fake_open(fake *f, int kind, const char *endpoint)
{
    memset(f, 0, sizeof *f);
    f->kind = kind;
    if (kind == FAKE_NONE)
        return 0;
    f->ctx = zmq_ctx_new();
    f->sock = f->ctx ? zmq_socket(f->ctx, ZMQ_DEALER) : NULL;
    int zero = 0;
    if (!f->sock || zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_connect(f->sock, endpoint) != 0)
        return -1;
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_HELLO);
    h.credit = 1;
    h.flags = kind == FAKE_SHM_REWRITTEN || kind == FAKE_SHM_ELSEWHERE ? PGD_WIRE_HELLO_SHM : 0;
    pgd_wire_frame name = {"fake", 4};
    return pgd_wire_send(f->sock, NULL, &h, &name, 1, 0, NULL);
}

/* A PATCHES_SHM whose region is written again before the sampler reads it (a stale writer at work): the
 * region is completed, then written once more, so its generation no longer matches the answer's. */
static void fake_rewritten(fake *f, const pgd_wire_header *jh, const uint8_t *cells, size_t ncells)
{
    size_t px = ncells * jh->patch_size * jh->patch_size * 3;
    uint8_t *p;
    if (pgd_serve_shm_create(&f->seg, 2, px, jh->run_id, NULL) != 0 ||
        pgd_serve_shm_take(&f->seg, jh->task_id, jh->attempt, px, &p) != 0) {
        CU_FAIL("fake patch segment");
        return;
    }
    memset(p, 0, px);
    pgd_wire_shmref ref;
    pgd_serve_shm_finish(&f->seg, 0, px, &ref);
    char name[PGD_WIRE_SEGMENT_MAX + 1];
    snprintf(name, sizeof name, "%s", f->seg.name);
    if (f->kind == FAKE_SHM_REWRITTEN)
        pgd_serve_shm_abandon(&f->seg, 0); /* the generation moves on (2 -> 4) */
    else
        snprintf(name, sizeof name, "/%s1.999999", PGD_SERVE_SHM_PREFIX); /* not on this host */
    uint8_t rb[PGD_WIRE_SHMREF_SIZE];
    pgd_wire_put_shmref(rb, &ref);
    pgd_wire_header h = *jh;
    h.type = PGD_WIRE_PATCHES_SHM;
    h.flags = 0;
    pgd_wire_frame fr[3] = {{rb, sizeof rb}, {cells, ncells * PGD_WIRE_CELL_SIZE}, {name, strlen(name)}};
    CU_ASSERT_EQUAL(pgd_wire_send(f->sock, NULL, &h, fr, 3, 0, NULL), 0);
}

/* Answer the first JOB with a PATCHES whose header CRC is wrong (malformed kind); take in anything else. */
static void fake_pump(fake *f)
{
    if (!f->sock)
        return;
    for (;;) {
        pgd_wire_rx rx;
        memset(&rx, 0, sizeof rx);
        int rc = pgd_wire_recv(f->sock, &rx, 0, PGD_WIRE_DONTWAIT, NULL);
        int is_job = rc == 0 && rx.msg.h.type == PGD_WIRE_JOB;
        pgd_wire_header jh = rx.msg.h;
        size_t ncells = rx.msg.n_cells;
        if (is_job && f->answered && !(jh.flags & PGD_WIRE_JOB_SHM))
            f->inline_jobs++;
        if (is_job && (f->kind == FAKE_SHM_REWRITTEN || f->kind == FAKE_SHM_ELSEWHERE) && !f->answered) {
            CU_ASSERT(jh.flags & PGD_WIRE_JOB_SHM); /* the offer was taken */
            fake_rewritten(f, &jh, rx.msg.cells, ncells);
            f->answered = 1;
        }
        pgd_wire_rx_close(&rx);
        if (rc != 0)
            return;
        if (!is_job || f->kind != FAKE_MALFORMED || f->answered)
            continue;
        f->answered = 1;
        pgd_wire_header h = jh;
        h.type = PGD_WIRE_PATCHES;
        uint8_t head[PGD_WIRE_HEADER_SIZE];
        size_t px = ncells * jh.patch_size * jh.patch_size * 3;
        h.nframes = 2;
        h.frame_len[0] = px;
        h.frame_len[1] = ncells * PGD_WIRE_CELL_SIZE;
        pgd_wire_header_pack(&h, head);
        head[124] ^= 0x5a; /* the CRC no longer matches */
        uint8_t *zeros = calloc(1, px + ncells * PGD_WIRE_CELL_SIZE + 1);
        zmq_send(f->sock, head, sizeof head, ZMQ_SNDMORE);
        zmq_send(f->sock, zeros, px, ZMQ_SNDMORE);
        zmq_send(f->sock, zeros, ncells * PGD_WIRE_CELL_SIZE, 0);
        free(zeros);
    }
}

static void fake_close(fake *f)
{
    pgd_serve_shm_close(&f->seg);
    if (f->sock)
        zmq_close(f->sock);
    if (f->ctx)
        zmq_ctx_term(f->ctx);
    f->sock = f->ctx = NULL;
}

/* ---- one run of the graph ------------------------------------------------------------------------- */

enum { ACT_NONE, ACT_KILL, ACT_STOP };

typedef struct run_spec {
    const char *tag;
    int loaders;
    int bad_set;    /* slides from the folder with a corrupt slide */
    int action;     /* on loader 0, act_ms after start */
    int act_ms;
    int fake;
    int sink_delay; /* ms per BATCH */
    const char *shm_sampler, *shm_sink; /* --shm of each (NULL: the default, auto: shared memory on ipc://) */
    const char *shm_loader;             /* the loaders' --shm (NULL: auto, PATCHES_SHM on ipc://) */
    const char *loader_shm;             /* the sampler's --loader-shm (NULL: yes) */
} run_spec;

typedef struct run_out {
    int sampler_rc, sink_rc;
    char lines[MAX_LINES][LINE_LEN]; /* digest lines by seq ("" when absent) */
    int nlines, max_seq;
    char sampler_log[600], run_dir[600], digest[600];
    int sampler_pid, loader_pid[3];
    int fake_inline_jobs;
} run_out;

static int read_digests(const char *path, run_out *o)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    o->max_seq = -1;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        unsigned seq;
        if (sscanf(line, "%u", &seq) != 1 || seq >= MAX_LINES)
            continue;
        line[strcspn(line, "\n")] = '\0';
        line[LINE_LEN - 1] = '\0';
        memcpy(o->lines[seq], line, LINE_LEN);
        o->nlines++;
        if ((int)seq > o->max_seq)
            o->max_seq = (int)seq;
    }
    fclose(f);
    return 0;
}

static int file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static void run_graph(const run_spec *r, run_out *o)
{
    memset(o, 0, sizeof *o);
    o->sampler_rc = o->sink_rc = -1;
    if (fixtures() != 0) {
        CU_FAIL("fixtures");
        return;
    }
    const char *d = pgd_test_tmpdir();
    char lep[600], cep[600], man[600], slides[600], digest[600], sinklog[600], delay[16];
    snprintf(lep, sizeof lep, "ipc://%s/%s.l", d, r->tag);
    snprintf(cep, sizeof cep, "ipc://%s/%s.c", d, r->tag);
    snprintf(man, sizeof man, "%s/train.csv", fx.good);
    snprintf(slides, sizeof slides, "%s", r->bad_set ? fx.bad : fx.good);
    snprintf(digest, sizeof digest, "%s/%s.digest", d, r->tag);
    snprintf(sinklog, sizeof sinklog, "%s/%s.sink.log", d, r->tag);
    snprintf(o->sampler_log, sizeof o->sampler_log, "%s/%s.sampler.log", d, r->tag);
    snprintf(o->run_dir, sizeof o->run_dir, "%s/%s.run", d, r->tag);
    snprintf(delay, sizeof delay, "%d", r->sink_delay);
    const char *sargs[] = {"--manifest", man, "--slides", slides, "--fit-size", "512", "--patch", "64",
                           "--batch-size", "2", "--epochs", "2", "--sampling", SAMPLING, "--fill-chunk", "32",
                           "--seed", "5", "--loaders-endpoint", lep, "--consumer-endpoint", cep,
                           "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "500", "--loader-wait-ms", "20000",
                           "--run-dir", o->run_dir, NULL, NULL, NULL, NULL, NULL};
    size_t na = sizeof sargs / sizeof *sargs - 5;
    if (r->shm_sampler) {
        sargs[na++] = "--shm";
        sargs[na++] = r->shm_sampler;
    }
    if (r->loader_shm) {
        sargs[na++] = "--loader-shm";
        sargs[na++] = r->loader_shm;
    }
    pid_t sp = spawn("pgd-sampler", sargs, NULL, o->sampler_log);
    o->sampler_pid = (int)sp;
    fake fk;
    if (fake_open(&fk, r->fake, lep) != 0)
        CU_FAIL("fake loader");
    if (r->fake) { /* let the fake register first, so that it gets the first job (however slow the start) */
        for (int i = 0; i < 2000 && !file_has(o->sampler_log, "first loader registered: 'fake'"); i++) {
            fake_pump(&fk);
            nap_ms(5);
        }
        CU_ASSERT(file_has(o->sampler_log, "first loader registered: 'fake'"));
    }
    pid_t lp[3] = {0, 0, 0};
    for (int i = 0; i < r->loaders && i < 3; i++) {
        char log[600];
        snprintf(log, sizeof log, "%s/%s.loader%d.log", d, r->tag, i);
        const char *largs[] = {"serve", "--connect", lep, "--heartbeat-ms", "100", "--shm",
                               r->shm_loader ? r->shm_loader : "auto", NULL};
        lp[i] = spawn("pgd-loader", largs, NULL, log);
        o->loader_pid[i] = (int)lp[i];
    }
    const char *kargs[] = {"--connect", cep, "--digest", "--delay-ms", delay, "--idle-ms", "30000",
                           r->shm_sink ? "--shm" : NULL, r->shm_sink, NULL};
    snprintf(o->digest, sizeof o->digest, "%s", digest);
    pid_t kp = spawn("pgd-sink", kargs, digest, sinklog);
    int64_t t0 = pgd_clock_ms(), stopped_at = -1, ready_at = -1;
    int acted = 0;
    char victim_log[600];
    snprintf(victim_log, sizeof victim_log, "%s/%s.loader0.log", d, r->tag);
    for (;;) {
        fake_pump(&fk);
        int64_t t = pgd_clock_ms() - t0;
        /* the victim acts on the stream once it serves (however slow its start), act_ms at the earliest */
        if (ready_at < 0 && r->action != ACT_NONE && file_has(victim_log, "serving"))
            ready_at = t;
        if (!acted && ready_at >= 0 && t >= r->act_ms && t >= ready_at + 200) {
            kill(lp[0], r->action == ACT_KILL ? SIGKILL : SIGSTOP);
            acted = 1;
            stopped_at = t;
        }
        if (r->action == ACT_STOP && stopped_at >= 0 && t - stopped_at > 800) {
            kill(lp[0], SIGCONT);
            stopped_at = -1;
        }
        int st;
        pid_t w = waitpid(kp, &st, WNOHANG);
        if (w == kp) {
            o->sink_rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            break;
        }
        if (t > WAIT_MS) {
            kill(kp, SIGKILL);
            waitpid(kp, &st, 0);
            CU_FAIL("the sink did not finish");
            break;
        }
        nap_ms(5);
    }
    if (stopped_at >= 0)
        kill(lp[0], SIGCONT);
    o->sampler_rc = reap(sp, 10000);
    for (int i = 0; i < 3; i++)
        if (lp[i] > 0)
            reap(lp[i], 10000);
    o->fake_inline_jobs = fk.inline_jobs;
    fake_close(&fk);
    CU_ASSERT_EQUAL(read_digests(digest, o), 0);
}

/* ---- the reference stream -------------------------------------------------------------------------- */

static run_out ref;
static int ref_done;

static const run_out *reference(void)
{
    if (!ref_done) {
        run_spec r = {"ref", 1, 0, ACT_NONE, 0, FAKE_NONE, 0, NULL, NULL, NULL, NULL};
        run_graph(&r, &ref);
        ref_done = 1;
    }
    return &ref;
}

/* Which schedule messages hold manifest row img (by seq). Returns the message count. */
static int messages_with(uint32_t img, int *has)
{
    pgd_sched_config c;
    pgd_sched_config_init(&c);
    c.n_images = N_SLIDES;
    c.m = c.n = FIT / PATCH;
    c.batch_size = BATCH;
    c.epochs = EPOCHS;
    c.sampling = 0.25;
    c.fill_chunk = FILL_CHUNK;
    c.seed = SEED;
    pgd_sched *s = pgd_sched_open(&c, NULL);
    pgd_sched_step st;
    int n = 0;
    while (s && pgd_sched_next(s, &st, NULL) == 1 && n < MAX_LINES) {
        has[n] = 0;
        for (uint32_t i = 0; i < st.n_images; i++)
            has[n] |= st.images[i] == img;
        n++;
    }
    pgd_sched_close(&s);
    return n;
}

/* With PGD_TEST_VERBOSE set, print the sampler's summary line (what the fault did: re-issues, duplicates). */
static void show_summary(const run_out *o)
{
    if (!getenv("PGD_TEST_VERBOSE"))
        return;
    FILE *f = fopen(o->sampler_log, "r");
    char line[2048];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "stream complete") || strstr(line, "silent for") || strstr(line, "is gone") ||
            strstr(line, "patch segment"))
            fputs(line, stderr);
    if (f)
        fclose(f);
}

static void assert_same_as_ref(const run_out *o)
{
    const run_out *r = reference();
    CU_ASSERT_EQUAL(o->sink_rc, 0);
    CU_ASSERT_EQUAL(o->sampler_rc, 0);
    CU_ASSERT_EQUAL(o->nlines, r->nlines);
    int diff = 0;
    for (int i = 0; i < MAX_LINES; i++)
        diff += strcmp(o->lines[i], r->lines[i]) != 0;
    CU_ASSERT_EQUAL(diff, 0);
}

/* ---- cases ------------------------------------------------------------------------------------------ */

static void test_clean_run(void)
{
    const run_out *r = reference();
    CU_ASSERT_EQUAL(r->sink_rc, 0);
    CU_ASSERT_EQUAL(r->sampler_rc, 0);
    int has[MAX_LINES];
    int n = messages_with(0, has);
    CU_ASSERT(n > 10);
    CU_ASSERT_EQUAL(r->nlines, n); /* every message of the schedule, once */
    CU_ASSERT_EQUAL(r->max_seq, n - 1);
    /* the first message: epoch 0 batch 0 step 0, a FILL of 2 images x 32 patches */
    CU_ASSERT_EQUAL(strncmp(r->lines[0], "0 0 0 0 0x01 2 32 ", 18), 0);
    char p[1400];
    snprintf(p, sizeof p, "%s/run.conf", r->run_dir);
    CU_ASSERT(file_has(p, "seed = 5"));
    snprintf(p, sizeof p, "%s/progress.log", r->run_dir);
    CU_ASSERT(file_has(p, "# complete"));
}

static void test_three_loaders(void)
{
    run_spec r = {"three", 3, 0, ACT_NONE, 0, FAKE_NONE, 0, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    free(o);
}

static void test_kill_loader(void)
{
    run_spec r = {"kill", 3, 0, ACT_KILL, 600, FAKE_NONE, 30, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "declared dead 1;"));
    show_summary(o);
    free(o);
}

static void test_stop_loader(void)
{
    run_spec r = {"stop", 3, 0, ACT_STOP, 600, FAKE_NONE, 30, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "declared dead 1;"));
    show_summary(o);
    free(o);
}

static void test_corrupt_slide(void)
{
    const run_out *ro = reference();
    run_spec r = {"corrupt", 2, 1, ACT_NONE, 0, FAKE_NONE, 0, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    CU_ASSERT_EQUAL(o->sink_rc, 0);
    CU_ASSERT_EQUAL(o->sampler_rc, 0);
    int has[MAX_LINES];
    int n = messages_with(BAD_SLIDE, has);
    int same = 0, shrunk = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        if (!has[i]) {
            same += strcmp(o->lines[i], ro->lines[i]) == 0;
            bad += strcmp(o->lines[i], ro->lines[i]) != 0;
            continue;
        }
        unsigned seq, e, b, s, fl, ni, ppi, rn;
        if (sscanf(ro->lines[i], "%u %u %u %u %x %u %u", &seq, &e, &b, &s, &fl, &rn, &ppi) != 7 ||
            sscanf(o->lines[i], "%u %u %u %u %x %u %u", &seq, &e, &b, &s, &fl, &ni, &ppi) != 7 || ni != rn - 1)
            bad++;
        else
            shrunk++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(shrunk > 0);
    CU_ASSERT(same > 0);
    char p[700];
    snprintf(p, sizeof p, "%s/errors.tsv", o->run_dir);
    CU_ASSERT(file_has(p, "panda_00003\t"));
    CU_ASSERT(file_has(p, "panda_00003.tiff"));
    free(o);
}

static void test_fake_malformed(void)
{
    run_spec r = {"malformed", 2, 0, ACT_NONE, 0, FAKE_MALFORMED, 0, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "rejected 1 messages: crc 1"));
    CU_ASSERT(file_has(o->sampler_log, "loader 'fake' silent for"));
    show_summary(o);
    free(o);
}

static void test_fake_silent(void)
{
    run_spec r = {"silent", 1, 0, ACT_NONE, 0, FAKE_SILENT, 0, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "re-issued)") && !file_has(o->sampler_log, "(0 re-issued)"));
    show_summary(o);
    free(o);
}

/* The segment a sampler made is gone once it has exited. */
static int segments_of(int pid)
{
    char prefix[64], path[600];
    snprintf(prefix, sizeof prefix, "pgd-batch.%d.", pid);
    int n = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/dev/shm/%s%d", prefix, i);
        n += access(path, F_OK) == 0;
    }
    return n;
}

/* Pixels in shared memory (the default on ipc://), inline (shm no on both sides), and from the shared slots
 * to a consumer that does not take the offer: the same bytes in every BATCH. */
static void test_shm_and_inline(void)
{
    const run_out *ro = reference();
    CU_ASSERT(file_has(ro->digest, "; in shared memory 48"));
    CU_ASSERT_EQUAL(segments_of(ro->sampler_pid), 0);
    run_out *o = malloc(sizeof *o);
    run_spec r = {"inline", 2, 0, ACT_NONE, 0, FAKE_NONE, 0, "no", "no", NULL, NULL};
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->digest, "; in shared memory 0"));
    run_spec m = {"mixed", 2, 0, ACT_NONE, 0, FAKE_NONE, 5, "yes", "no", NULL, NULL};
    run_graph(&m, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->digest, "; in shared memory 0"));
    CU_ASSERT_EQUAL(segments_of(o->sampler_pid), 0);
    free(o);
}

/* The patch segments (pgd-patch.PID.*) of process pid that exist. */
static int patch_segments_of(int pid)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s%d.", PGD_SERVE_SHM_PREFIX, pid);
    DIR *d = opendir("/dev/shm");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return n;
}

/* Loaders' pixels through their shared memory (PATCHES_SHM, the default on ipc://), inline (the loaders'
 * shm no), and inline because the sampler does not take the offer (loader_shm no): the same bytes in every
 * BATCH, and no patch segment left once the loaders have exited. */
static void test_loader_shm_and_inline(void)
{
    const run_out *ro = reference();
    CU_ASSERT(file_has(ro->sampler_log, "(dropped 0)"));
    CU_ASSERT(!file_has(ro->sampler_log, "loader answers from shared memory 0 "));
    CU_ASSERT_EQUAL(patch_segments_of(ro->loader_pid[0]), 0);
    run_out *o = malloc(sizeof *o);
    run_spec r = {"linline", 2, 0, ACT_NONE, 0, FAKE_NONE, 0, NULL, NULL, "no", NULL};
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "loader answers from shared memory 0 (dropped 0)"));
    run_spec n = {"lrefused", 2, 0, ACT_NONE, 0, FAKE_NONE, 0, NULL, NULL, NULL, "no"};
    run_graph(&n, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "loader answers from shared memory 0 (dropped 0)"));
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL(patch_segments_of(o->loader_pid[i]), 0);
    free(o);
}

/* A PATCHES_SHM whose region was written again before the sampler read it: dropped (its generation no longer
 * matches), the job goes out again, and the stream is the same. */
static void test_shm_region_rewritten(void)
{
    run_spec r = {"rewritten", 1, 0, ACT_NONE, 0, FAKE_SHM_REWRITTEN, 0, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "(dropped 1)"));
    CU_ASSERT(file_has(o->sampler_log, "PATCHES_SHM for job"));
    CU_ASSERT(file_has(o->sampler_log, "the answer names"));
    show_summary(o);
    free(o);
}

/* A PATCHES_SHM naming a segment this host does not have (a loader elsewhere told shm yes): dropped, the
 * job goes out again, and that loader's JOBs no longer allow PATCHES_SHM. */
static void test_shm_segment_elsewhere(void)
{
    run_spec r = {"elsewhere", 1, 0, ACT_NONE, 0, FAKE_SHM_ELSEWHERE, 0, NULL, NULL, NULL, NULL};
    run_out *o = malloc(sizeof *o);
    run_graph(&r, o);
    assert_same_as_ref(o);
    CU_ASSERT(file_has(o->sampler_log, "(dropped 1)"));
    CU_ASSERT(file_has(o->sampler_log, "its answers go inline from now on"));
    CU_ASSERT(o->fake_inline_jobs >= 1);
    show_summary(o);
    free(o);
}

/* A stream held up by a consumer that never comes: exit 1 after consumer_timeout_ms, saying so. */
static void test_consumer_timeout(void)
{
    if (fixtures() != 0) {
        CU_FAIL("fixtures");
        return;
    }
    char man[600], lep[600], cep[600], log[600];
    snprintf(man, sizeof man, "%s/train.csv", fx.good);
    snprintf(lep, sizeof lep, "ipc://%s/ct.l", pgd_test_tmpdir());
    snprintf(cep, sizeof cep, "ipc://%s/ct.c", pgd_test_tmpdir());
    snprintf(log, sizeof log, "%s/ct.log", pgd_test_tmpdir());
    const char *a[] = {"--manifest", man, "--fit-size", "512", "--patch", "64", "--loaders-endpoint", lep,
                       "--consumer-endpoint", cep, "--heartbeat-ms", "100", "--consumer-timeout-ms", "400", NULL};
    pid_t sp = spawn("pgd-sampler", a, NULL, log);
    const char *la[] = {"serve", "--connect", lep, "--heartbeat-ms", "100", NULL};
    pid_t lp = spawn("pgd-loader", la, NULL, NULL);
    CU_ASSERT_EQUAL(reap(sp, 20000), 1);
    reap(lp, 10000);
    CU_ASSERT(file_has(log, "no consumer connected for"));
    CU_ASSERT(file_has(log, "while BATCH messages wait"));
}

static void test_no_loader(void)
{
    if (fixtures() != 0) {
        CU_FAIL("fixtures");
        return;
    }
    char man[600], lep[600], cep[600], log[600];
    snprintf(man, sizeof man, "%s/train.csv", fx.good);
    snprintf(lep, sizeof lep, "ipc://%s/none.l", pgd_test_tmpdir());
    snprintf(cep, sizeof cep, "ipc://%s/none.c", pgd_test_tmpdir());
    snprintf(log, sizeof log, "%s/none.log", pgd_test_tmpdir());
    const char *a[] = {"--manifest", man, "--loaders-endpoint", lep, "--consumer-endpoint", cep,
                       "--loader-wait-ms", "200", NULL};
    CU_ASSERT_EQUAL(reap(spawn("pgd-sampler", a, NULL, log), 10000), 1);
    CU_ASSERT(file_has(log, "no loader registered within 200 ms"));
    const char *b[] = {"--manifest", man, "--batch-size", "0", NULL};
    CU_ASSERT_EQUAL(reap(spawn("pgd-sampler", b, NULL, log), 10000), 2);
    CU_ASSERT(file_has(log, "batch-size: 0 is out of range 1..4096"));
}

static const pgd_test_case cases[] = {
    {"clean_run", test_clean_run},
    {"three_loaders", test_three_loaders},
    {"kill_loader", test_kill_loader},
    {"stop_loader", test_stop_loader},
    {"corrupt_slide", test_corrupt_slide},
    {"fake_malformed", test_fake_malformed},
    {"fake_silent", test_fake_silent},
    {"shm_and_inline", test_shm_and_inline},
    {"loader_shm_and_inline", test_loader_shm_and_inline},
    {"shm_region_rewritten", test_shm_region_rewritten},
    {"shm_segment_elsewhere", test_shm_segment_elsewhere},
    {"consumer_timeout", test_consumer_timeout},
    {"no_loader", test_no_loader},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("sampler_graph", cases, argc, argv);
}
