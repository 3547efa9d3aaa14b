/* sampler_setup.c: pgd-sampler's options, manifest, grids, schedule, run folder and sockets. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "loader/patcher.h"
#include "log.h"
#include "sampler/sampler_int.h"
#include "sampler/sampler_opts.h"

#define O(f) offsetof(pgd_sampler_opts, f)
static const pgd_cfg_opt opts[] = {
    {"manifest", PGD_CFG_STRING, O(manifest), NULL, 0, 0, NULL, "the slide manifest CSV (PANDA train.csv or path,label)",
     PGD_CFG_REQUIRED},
    {"slides", PGD_CFG_STRING, O(slides), NULL, 0, 0, NULL, "folder of PANDA slides (default: the manifest's folder)", 0},
    {"ext", PGD_CFG_STRING, O(ext), ".tiff", 0, 0, NULL, "PANDA slide file extension", 0},
    {"geometry", PGD_CFG_ENUM, O(geometry), "fit", 0, 0, "fit|native", "fit: S x S square; native: grid at a level", 0},
    {"fit_size", PGD_CFG_INT, O(fit_size), "2048", 1, 1048576, NULL, "fit: S, a multiple of patch", 0},
    {"patch", PGD_CFG_INT, O(patch), "128", 1, 8192, NULL, "patch side p in pixels", 0},
    {"level", PGD_CFG_INT, O(level), "0", 0, 64, NULL, "native: pyramid level (when mpp is 0)", 0},
    {"mpp", PGD_CFG_FLOAT, O(mpp), "0", 0, 1e6, NULL, "native: microns per pixel (0: use level)", 0},
    {"mode", PGD_CFG_ENUM, O(mode), "train", 0, 0, "train|eval|infer", "schedule mode", 0},
    {"epochs", PGD_CFG_INT, O(epochs), "1", 1, 1000000, NULL, "train: epochs", 0},
    {"batch_size", PGD_CFG_INT, O(batch_size), "1", 1, PGD_SCHED_MAX_BATCH, NULL, "images per batch", 0},
    {"drop_last", PGD_CFG_BOOL, O(drop_last), "no", 0, 0, NULL, "train: drop a last short batch", 0},
    {"sampling", PGD_CFG_FLOAT, O(sampling), "0.1", 0, 1, NULL, "fraction of cells per inner step, (0, 1]", 0},
    {"max_sampled", PGD_CFG_FLOAT, O(max_sampled), "1", 0, 1, NULL, "fraction of cells drawn per batch, (0, 1]", 0},
    {"zeta", PGD_CFG_INT, O(zeta), "0", 0, 1000000, NULL, "inner steps per batch (0: derived)", 0},
    {"fill_chunk", PGD_CFG_INT, O(fill_chunk), "64", 1, 4294967295.0, NULL, "most cells per image in a fill BATCH", 0},
    {"inner_chunk", PGD_CFG_INT, O(inner_chunk), "0", 0, 4294967295.0, NULL, "most cells per image in an INNER BATCH (0: k)",
     0},
    {"shared_positions", PGD_CFG_BOOL, O(shared_positions), "no", 0, 0, NULL, "same inner cells for every image of a batch",
     0},
    {"seed", PGD_CFG_INT, O(seed), "0", 0, 9007199254740991.0, NULL, "the root of every random choice", 0},
    {"start_epoch", PGD_CFG_INT, O(start_epoch), "0", 0, 1000000, NULL,
     "resume: the stream starts at this epoch (epochs: the end, an empty stream)", 0},
    {"start_batch", PGD_CFG_INT, O(start_batch), "0", 0, 4294967295.0, NULL,
     "resume: the stream starts at this image batch of start_epoch", 0},
    {"run_id", PGD_CFG_INT, O(run_id), "0", 0, 9007199254740991.0, NULL, "run id in wire headers (0: from the clock)", 0},
    {"loaders_endpoint", PGD_CFG_STRING, O(loaders_endpoint), "tcp://127.0.0.1:5555", 0, 0, NULL,
     "ROUTER the loaders connect to", 0},
    {"consumer_endpoint", PGD_CFG_STRING, O(consumer_endpoint), "tcp://127.0.0.1:5556", 0, 0, NULL,
     "ROUTER the trainer (or pgd-sink) connects to", 0},
    {"heartbeat_ms", PGD_CFG_INT, O(heartbeat_ms), "1000", 1, 3600000, NULL, "HEARTBEAT period to loaders", 0},
    {"heartbeat_timeout_ms", PGD_CFG_INT, O(heartbeat_timeout_ms), "5000", 1, 86400000, NULL,
     "a loader silent this long is dead: its jobs go to others", 0},
    {"window", PGD_CFG_INT, O(window), "4", 1, 4096, NULL, "BATCH messages being assembled ahead of the consumer", 0},
    {"loader_wait_ms", PGD_CFG_INT, O(loader_wait_ms), "60000", 1, 86400000, NULL,
     "fail when no loader is alive for this long while work waits", 0},
    {"hwm", PGD_CFG_INT, O(hwm), "1000", 1, 1000000, NULL, "ZeroMQ high-water marks, in messages", 0},
    {"run_dir", PGD_CFG_STRING, O(run_dir), NULL, 0, 0, NULL, "folder for run.conf, errors.tsv, progress.log", 0},
    {"shm", PGD_CFG_ENUM, O(shm), "auto", 0, 0, "auto|yes|no",
     "BATCH pixels in shared memory for a consumer on this host (auto: ipc:// consumer endpoints)", 0},
    {"shm_slots", PGD_CFG_INT, O(shm_slots), "0", 0, 65536, NULL,
     "BATCH slots in shared memory (0: window + 8); the consumer's held messages and the window share them", 0},
    {"shm_mb", PGD_CFG_INT, O(shm_mb), "4096", 1, 1048576, NULL, "most MB of shared memory for the slots", 0},
    {"curve_secret_file", PGD_CFG_STRING, O(curve_secret_file), NULL, 0, 0, NULL,
     "CURVE secret key file for the loaders' socket (pgd-sampler keygen makes one): encrypted links, and only "
     "loaders given the matching public key connect", 0},
    {"curve_clients_file", PGD_CFG_STRING, O(curve_clients_file), NULL, 0, 0, NULL,
     "with curve_secret_file: file of the loaders' CURVE public keys allowed to connect, one Z85 key per line "
     "(a ZAP handler refuses every other key)", 0},
    {"loader_shm", PGD_CFG_BOOL, O(loader_shm), "yes", 0, 0, NULL,
     "take PATCHES pixels from the shared memory of loaders on this host that offer it (only a reference crosses "
     "the socket)", 0},
    {"consumer_timeout_ms", PGD_CFG_INT, O(consumer_timeout_ms), "60000", 1, 86400000, NULL,
     "fail when a BATCH is ready and no consumer has been heard from for this long", 0},
    {NULL},
};

const pgd_cfg_opt *pgd_sampler_options(void)
{
    return opts;
}

void pgd_sampler_record_failure(pgd_sampler *s, uint32_t img, const char *reason)
{
    if (s->failed[img])
        return;
    s->failed[img] = 1;
    const char *id = s->man->entries[img].id;
    pgd_warn("image %s left out of the run: %s", id, reason);
    if (s->errors) {
        fputs(id, s->errors);
        fputc('\t', s->errors);
        for (const char *c = reason; *c; c++) /* one line per image: tabs and newlines become spaces */
            fputc(*c == '\t' || *c == '\n' || *c == '\r' ? ' ' : *c, s->errors);
        fputc('\n', s->errors);
        fflush(s->errors);
    }
}

/* One slide's native grid: the loader's patcher resolves it; opening a slide this way decodes nothing. */
static int native_grid(const char *path, uint32_t patch, int32_t level, double mpp, uint32_t *grid_m,
                       uint32_t *grid_n, pgd_err *err)
{
    pgd_geom_spec spec = {PGD_GEOM_NATIVE, patch, 0, level, mpp};
    pgd_patcher *p = pgd_patcher_open(path, &spec, err);
    if (!p)
        return -1;
    *grid_m = pgd_patcher_geom(p)->grid_m;
    *grid_n = pgd_patcher_geom(p)->grid_n;
    pgd_patcher_close(&p);
    return 0;
}

/* Native geometry: open each slide here (cheap: nothing is decoded) to learn its grid. A slide that does not
 * open is recorded as failed and given a 1 x 1 grid, so the schedule stays the same. */
static int native_grids(pgd_sampler *s, pgd_err *err)
{
    size_t n = s->man->count;
    s->grid_m = calloc(n, sizeof *s->grid_m);
    s->grid_n = calloc(n, sizeof *s->grid_n);
    if (!s->grid_m || !s->grid_n)
        return pgd_fail(err, PGD_ENOMEM, "grids of %zu images", n);
    int32_t level = s->o.mpp > 0 ? -1 : (int32_t)s->o.level;
    for (size_t i = 0; i < n; i++) {
        pgd_err e = PGD_ERR_INIT;
        if (native_grid(s->man->entries[i].path, (uint32_t)s->o.patch, level, s->o.mpp, &s->grid_m[i], &s->grid_n[i],
                       &e) != 0) {
            s->grid_m[i] = s->grid_n[i] = 1;
            pgd_sampler_record_failure(s, (uint32_t)i, e.msg);
        }
    }
    return 0;
}

static int sched_config(pgd_sampler *s, pgd_err *err)
{
    pgd_sched_config *c = &s->scfg;
    pgd_sched_config_init(c);
    c->mode = s->o.mode == 0 ? PGD_SCHED_TRAIN : s->o.mode == 1 ? PGD_SCHED_EVAL : PGD_SCHED_INFER;
    c->seed = (uint64_t)s->o.seed;
    c->n_images = (uint32_t)s->man->count;
    if (s->o.geometry == 0) {
        if (s->o.fit_size % s->o.patch != 0 || s->o.fit_size < s->o.patch)
            return pgd_fail(err, PGD_EINVAL, "'fit_size': %lld is not a multiple of patch %lld", (long long)s->o.fit_size,
                            (long long)s->o.patch);
        c->m = c->n = (uint32_t)(s->o.fit_size / s->o.patch);
    } else {
        c->grid_m = s->grid_m;
        c->grid_n = s->grid_n;
    }
    c->batch_size = (uint32_t)s->o.batch_size;
    c->epochs = (uint32_t)s->o.epochs;
    c->drop_last = s->o.drop_last;
    c->sampling = s->o.sampling;
    c->max_sampled = s->o.max_sampled;
    c->zeta = (uint32_t)s->o.zeta;
    c->fill_chunk = (uint32_t)s->o.fill_chunk;
    c->inner_chunk = (uint32_t)s->o.inner_chunk;
    c->shared_positions = s->o.shared_positions;
    c->start_epoch = (uint32_t)s->o.start_epoch;
    c->start_batch = (uint32_t)s->o.start_batch;
    s->sched = pgd_sched_open(c, err);
    return s->sched ? 0 : -1;
}

static FILE *open_in_run(const pgd_sampler *s, const char *name, pgd_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", s->o.run_dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        pgd_fail_errno(err, PGD_EIO, "open %s", path);
    return f;
}

static int run_dir(pgd_sampler *s, pgd_err *err)
{
    if (!s->o.run_dir)
        return 0;
    if (mkdir(s->o.run_dir, 0755) != 0 && errno != EEXIST)
        return pgd_fail_errno(err, PGD_EIO, "mkdir %s", s->o.run_dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/run.conf", s->o.run_dir);
    if (pgd_cfg_save(opts, &s->o, path, err) != 0)
        return -1;
    if (!(s->errors = open_in_run(s, "errors.tsv", err)) || !(s->progress = open_in_run(s, "progress.log", err)))
        return -1;
    fputs("image_id\treason\n", s->errors);
    fflush(s->errors);
    fputs("# seq epoch batch step flags n_images ppi patches ms\n", s->progress);
    fflush(s->progress);
    return 0;
}

/* The largest BATCH pixels any message of the schedule can have: batch_size images x the largest chunk of
 * any grid (fill: fill_chunk; inner: inner_chunk or k) x p x p x c. 0 when a grid cannot be planned. */
static uint64_t max_message_bytes(const pgd_sampler *s)
{
    const pgd_sched_config *c = &s->scfg;
    uint64_t ppi = 0;
    for (uint32_t i = 0; i < (c->grid_m ? c->n_images : 1); i++) {
        pgd_sched_plan pl;
        uint32_t m = c->grid_m ? c->grid_m[i] : c->m, n = c->grid_n ? c->grid_n[i] : c->n;
        if (pgd_sched_plan_grid(c, m, n, &pl, NULL) != 0)
            return 0;
        uint64_t fill = c->fill_chunk < pl.cells ? c->fill_chunk : pl.cells;
        uint64_t inner = c->mode != PGD_SCHED_TRAIN ? 0 : c->inner_chunk && c->inner_chunk < pl.k ? c->inner_chunk : pl.k;
        ppi = fill > ppi ? fill : ppi;
        ppi = inner > ppi ? inner : ppi;
    }
    uint64_t imgs = c->batch_size < c->n_images ? c->batch_size : c->n_images;
    return imgs * ppi * (uint64_t)s->o.patch * (uint64_t)s->o.patch * s->channels;
}

/* The shared-memory slots, when the consumer may read them (shm yes, or auto with an ipc:// endpoint). A
 * ring that cannot be made is not fatal: BATCH pixels then travel inline. */
static void make_ring(pgd_sampler *s)
{
    if (s->o.shm == 2 || (s->o.shm == 0 && strncmp(s->o.consumer_endpoint, "ipc://", 6) != 0))
        return;
    unsigned stale = pgd_batch_ring_reclaim_stale();
    if (stale)
        pgd_info("removed %u stale BATCH segment%s of samplers that are gone", stale, stale > 1 ? "s" : "");
    uint64_t slot = max_message_bytes(s);
    uint64_t want = s->o.shm_slots ? (uint64_t)s->o.shm_slots : (uint64_t)s->nslots + 8;
    uint64_t cap = slot ? ((uint64_t)s->o.shm_mb << 20) / slot : 0;
    uint64_t n = want < cap ? want : cap;
    if (n < 2) {
        pgd_warn("shm: a BATCH may take %llu bytes, so 'shm_mb' %lld holds fewer than 2 of them: pixels go inline",
                 (unsigned long long)slot, (long long)s->o.shm_mb);
        return;
    }
    pgd_err e = PGD_ERR_INIT;
    if (pgd_batch_ring_create(&s->ring, (uint32_t)n, slot, (uint64_t)s->o.run_id, &e) != 0 ||
        pgd_sampler_pool_use_ring(&s->pool, &s->ring, &e) != 0) {
        pgd_warn("shm: %s: BATCH pixels go inline", e.msg);
        pgd_batch_ring_close(&s->ring);
        return;
    }
    s->have_ring = 1;
    pgd_info("shm: %s, %u slots of %.1f MB for consumers on this host", s->ring.name, s->ring.nslots,
             (double)s->ring.slot_size / 1e6);
}

int pgd_sampler_setup(pgd_sampler *s, pgd_err *err)
{
    s->channels = 3;
    if (pgd_manifest_load(&s->man, s->o.manifest, s->o.slides, s->o.ext, err) != 0) {
        if (err)
            err->code = PGD_EINVAL; /* a bad manifest is a usage error: nothing was done */
        return -1;
    }
    if (s->man->count == 0)
        return pgd_fail(err, PGD_EINVAL, "'manifest': %s has no slides", s->o.manifest);
    if (s->o.run_id == 0)
        s->o.run_id = (int64_t)time(NULL);
    s->failed = calloc(s->man->count, 1);
    s->img_loader = malloc(s->man->count * sizeof *s->img_loader);
    s->nslots = (uint32_t)s->o.window;
    s->slots = calloc(s->nslots, sizeof *s->slots);
    if (!s->failed || !s->slots || !s->img_loader)
        return pgd_fail(err, PGD_ENOMEM, "sampler state");
    for (size_t i = 0; i < s->man->count; i++)
        s->img_loader[i] = -1;
    /* idle buffers: enough for the window and the messages ZeroMQ still holds for the consumer */
    if (pgd_sampler_pool_init(&s->pool, s->nslots + 4, err) != 0)
        return -1;
    if (run_dir(s, err) != 0)
        return -1;
    if (s->o.geometry == 1 && native_grids(s, err) != 0)
        return -1;
    if (sched_config(s, err) != 0)
        return -1;
    make_ring(s);
    return 0;
}

static int setopt(void *sock, int opt, int v, const char *name, pgd_err *err)
{
    if (zmq_setsockopt(sock, opt, &v, sizeof v) != 0)
        return pgd_fail_errno(err, PGD_EIO, "zmq_setsockopt %s", name);
    return 0;
}

/* A tcp endpoint that is not on the loopback interface. */
static int tcp_beyond_loopback(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return 0;
    const char *host = endpoint + 6;
    return strncmp(host, "127.", 4) != 0 && strncmp(host, "localhost:", 10) != 0 && strncmp(host, "[::1]:", 6) != 0;
}

static void *bind_router(pgd_sampler *s, const char *endpoint, const char *key, const char *curve, pgd_err *err)
{
    void *sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    if (!sock) {
        pgd_fail_errno(err, PGD_EIO, "zmq_socket ROUTER");
        return NULL;
    }
    int hwm = (int)s->o.hwm;
    if (setopt(sock, ZMQ_ROUTER_MANDATORY, 1, "ROUTER_MANDATORY", err) || setopt(sock, ZMQ_LINGER, 200, "LINGER", err) ||
        setopt(sock, ZMQ_SNDHWM, hwm, "SNDHWM", err) || setopt(sock, ZMQ_RCVHWM, hwm, "RCVHWM", err))
        goto fail;
    if (curve && pgd_wire_curve_server(sock, curve, err) != 0) {
        if (err)
            err->code = PGD_EINVAL;
        pgd_err_prefix(err, "'curve_secret_file': ");
        goto fail;
    }
    if (!curve && tcp_beyond_loopback(endpoint))
        pgd_warn("'%s' %s binds beyond the loopback interface without CURVE: anyone who reaches it may connect "
                 "(set curve_secret_file)", key, endpoint);
    if (zmq_bind(sock, endpoint) != 0) {
        int e = errno;
        pgd_fail_errno(err, e == EINVAL || e == EPROTONOSUPPORT ? PGD_EINVAL : PGD_EIO, "'%s': bind %s", key, endpoint);
        goto fail;
    }
    return sock;
fail:
    zmq_close(sock);
    return NULL;
}

int pgd_sampler_open_net(pgd_sampler *s, pgd_err *err)
{
    s->ctx = zmq_ctx_new();
    if (!s->ctx)
        return pgd_fail_errno(err, PGD_EIO, "zmq_ctx_new");
    if (pgd_sampler_zap_open(s, err) != 0) /* before the loaders' socket: no handshake goes unchecked */
        return -1;
    s->lsock = bind_router(s, s->o.loaders_endpoint, "loaders_endpoint", s->o.curve_secret_file, err);
    if (!s->lsock)
        return -1;
    s->csock = bind_router(s, s->o.consumer_endpoint, "consumer_endpoint", NULL, err);
    return s->csock ? 0 : -1;
}

void pgd_sampler_teardown(pgd_sampler *s)
{
    if (s->lsock)
        zmq_close(s->lsock);
    if (s->csock)
        zmq_close(s->csock);
    s->lsock = s->csock = NULL;
    pgd_sampler_zap_close(s);
    while (s->ctx && zmq_ctx_term(s->ctx) != 0 && errno == EINTR)
        ;
    s->ctx = NULL;
    for (uint32_t i = 0; s->slots && i < s->nslots; i++) {
        smp_slot *sl = &s->slots[i];
        free(sl->images);
        free(sl->cells);
        if (sl->pix)
            pgd_sampler_pool_put(sl->pix->data, sl->pix);
        free(sl->jobs);
    }
    pgd_sampler_pool_destroy(&s->pool);
    if (s->have_ring)
        pgd_batch_ring_close(&s->ring);
    s->have_ring = 0;
    free(s->slots);
    s->slots = NULL;
    pgd_sampler_shm_unmap(s);
    free(s->loaders);
    s->loaders = NULL;
    pgd_sched_close(&s->sched);
    free(s->grid_m);
    free(s->grid_n);
    free(s->failed);
    free(s->img_loader);
    s->img_loader = NULL;
    s->grid_m = s->grid_n = NULL;
    s->failed = NULL;
    if (s->errors)
        fclose(s->errors);
    if (s->progress)
        fclose(s->progress);
    s->errors = s->progress = NULL;
    pgd_manifest_free(&s->man);
}
