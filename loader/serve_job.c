/* serve_job.c: one decode job of the loader process: check it, open the slide (or reuse it from the cache of
 * open slides), decode the cells in chunks with heartbeats in between, answer PATCHES or JOB_ERROR. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "loader/serve_int.h"
#include "log.h"

enum { JOB_DONE = 0, JOB_FAILED = 1, JOB_ABORTED = 2, JOB_FATAL = -1 };

size_t pgd_serve_reason(const char *text, char *out, size_t cap)
{
    const unsigned char *t = (const unsigned char *)(text && *text ? text : "unknown error");
    size_t o = 0;
    while (*t) {
        size_t len = 1;
        uint32_t cp = *t;
        if (*t >= 0xC2 && *t <= 0xF4) { /* a lead byte: take its continuation bytes, reject overlong forms */
            len = *t < 0xE0 ? 2 : *t < 0xF0 ? 3 : 4;
            cp = *t & (0x7Fu >> len);
            for (size_t i = 1; i < len && len; i++) {
                if ((t[i] & 0xC0) != 0x80)
                    len = 0;
                else
                    cp = cp << 6 | (t[i] & 0x3Fu);
            }
            if (len && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
                        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
                len = 0;
        } else if (*t >= 0x80 || *t < 0x20 || *t == 0x7F) {
            len = 0;
        }
        if (o + (len ? len : 1) >= cap)
            break;
        if (len == 0) {
            out[o++] = '?';
            t++;
        } else {
            memcpy(out + o, t, len);
            o += len;
            t += len;
        }
    }
    if (o == 0)
        out[o++] = '?';
    out[o] = '\0';
    return o;
}

static int same_spec(const pgd_geom_spec *a, const pgd_geom_spec *b)
{
    return a->kind == b->kind && a->patch_size == b->patch_size && a->fit_size == b->fit_size &&
           a->level == b->level && a->mpp == b->mpp;
}

/* What identifies the file at path now (all 0 when stat fails: then it never matches an open slide). */
static void file_identity(const char *path, uint64_t id[4])
{
    struct stat st;
    memset(id, 0, 4 * sizeof *id);
    if (stat(path, &st) == 0) {
        id[0] = (uint64_t)st.st_dev;
        id[1] = (uint64_t)st.st_ino;
        id[2] = (uint64_t)st.st_size;
        id[3] = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    }
}

/* What an open slide may hold in memory: the fitted S x S RGB image for "fit" (made on its first read);
 * for "native" an allowance of 16 MB for the reader's tiles and caches. */
static uint64_t slide_bytes(const pgd_geom_spec *spec)
{
    return spec->kind == PGD_GEOM_FIT ? (uint64_t)spec->fit_size * spec->fit_size * 3 : (uint64_t)16 << 20;
}

/* Close cached slide i; the last one takes its place. */
static void close_slide(pgd_serve *s, size_t i)
{
    pgd_serve_slide *e = &s->slides[i];
    if (s->patcher == e->patcher)
        s->patcher = NULL;
    pgd_patcher_close(&e->patcher);
    free(e->path);
    s->slides[i] = s->slides[--s->nslides];
}

/* Close least recently used slides until one of `need` bytes fits within cache_mb and cache_slides. */
static void make_room(pgd_serve *s, uint64_t need)
{
    uint64_t cap = (uint64_t)s->o.cache_mb << 20, held = 0;
    for (size_t i = 0; i < s->nslides; i++)
        held += s->slides[i].bytes;
    while (s->nslides > 0 && (s->nslides >= (size_t)s->o.cache_slides || held + need > cap)) {
        size_t lru = 0;
        for (size_t i = 1; i < s->nslides; i++)
            if (s->slides[i].last_use < s->slides[lru].last_use)
                lru = i;
        held -= s->slides[lru].bytes;
        pgd_debug("closed %s (least recently used) to make room", s->slides[lru].path);
        close_slide(s, lru);
        s->n.slide_evictions++;
    }
}

/* Make s->patcher the slide at path under spec: an open one when path, spec and file are the same (a slide
 * rewritten or replaced on disk since it was opened is opened again), else a new one, kept open for later
 * jobs within cache_mb and cache_slides (the least recently used is closed first). */
static int use_slide(pgd_serve *s, const char *path, const pgd_geom_spec *spec, pgd_err *err)
{
    uint64_t id[4];
    file_identity(path, id);
    for (size_t i = 0; i < s->nslides; i++) {
        pgd_serve_slide *e = &s->slides[i];
        if (strcmp(e->path, path) != 0 || !same_spec(&e->spec, spec))
            continue;
        if (id[1] != 0 && memcmp(id, e->file, sizeof id) == 0) {
            e->last_use = ++s->use_clock;
            s->patcher = e->patcher;
            s->n.slide_hits++;
            return 0;
        }
        close_slide(s, i); /* the file changed since: open it again */
        break;
    }
    s->patcher = NULL;
    make_room(s, slide_bytes(spec));
    if (!s->slides && !(s->slides = calloc((size_t)s->o.cache_slides, sizeof *s->slides)))
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
    char *copy = strdup(path);
    if (!copy)
        return pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
    pgd_patcher *p = pgd_patcher_open(path, spec, err);
    if (!p) {
        free(copy);
        return -1;
    }
    pgd_serve_slide *e = &s->slides[s->nslides++];
    e->patcher = p;
    e->path = copy;
    e->spec = *spec;
    memcpy(e->file, id, sizeof id);
    e->bytes = slide_bytes(spec);
    e->last_use = ++s->use_clock;
    s->patcher = p;
    s->n.slide_opens++;
    const pgd_geom *g = pgd_patcher_geom(p);
    pgd_debug("opened %s: grid %ux%u of %u px patches, level %d, scale %g (%zu slides open)", path, g->grid_m,
              g->grid_n, g->spec.patch_size, g->level, g->scale, s->nslides);
    return 0;
}

/* Everything that can be checked before decoding: channels, size, the slide opens, the grid matches. */
static int prepare(pgd_serve *s, const pgd_wire_msg *m, const char *path, pgd_err *err)
{
    const pgd_wire_header *h = &m->h;
    if (h->channels != 3)
        return pgd_fail(err, PGD_EINVAL, "%s: the job asks for %u channels; the loader makes RGB patches (3)",
                        path, h->channels);
    uint64_t bytes = (uint64_t)m->n_cells * h->patch_size * h->patch_size * 3;
    if (bytes > PGD_WIRE_MAX_PAYLOAD)
        return pgd_fail(err, PGD_EINVAL, "%s: %zu patches of %u px are %llu bytes, more than one message carries",
                        path, m->n_cells, h->patch_size, (unsigned long long)bytes);
    pgd_geom_spec spec = {
        .kind = m->spec.geometry == PGD_WIRE_GEOM_FIT ? PGD_GEOM_FIT : PGD_GEOM_NATIVE,
        .patch_size = h->patch_size,
        .fit_size = m->spec.fit_size,
        .level = m->spec.level,
        .mpp = m->spec.mpp,
    };
    if (use_slide(s, path, &spec, err) != 0)
        return -1;
    const pgd_geom *g = pgd_patcher_geom(s->patcher);
    if (g->grid_m != h->grid_m || g->grid_n != h->grid_n || g->spec.patch_size != h->patch_size)
        return pgd_fail(err, PGD_EINVAL,
                        "%s: the job's grid %ux%u of %u px patches does not match the slide's %ux%u of %u px patches",
                        path, h->grid_m, h->grid_n, h->patch_size, g->grid_m, g->grid_n, g->spec.patch_size);
    return 0;
}

/* Decode every cell of the job into out, `chunk` cells at a time; between chunks, heartbeats go out and
 * the socket and signals are looked at. */
static int decode(pgd_serve *s, const pgd_wire_msg *m, uint8_t *out, pgd_err *err)
{
    size_t n = m->n_cells, chunk = (size_t)s->o.chunk;
    size_t patch = (size_t)m->h.patch_size * m->h.patch_size * 3;
    uint32_t *cells = malloc(2 * (chunk < n ? chunk : n) * sizeof *cells);
    if (!cells) {
        pgd_fail(err, PGD_ENOMEM, "out of memory for %zu cells", chunk);
        return JOB_FAILED;
    }
    int rc = JOB_DONE;
    for (size_t i = 0; i < n && rc == JOB_DONE; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        for (size_t j = 0; j < k; j++)
            pgd_wire_cell(m, i + j, &cells[2 * j], &cells[2 * j + 1]);
        if (pgd_patcher_read(s->patcher, cells, k, out + i * patch, err) != 0)
            rc = JOB_FAILED;
        else if (i + k < n && (pgd_serve_pump(s, 0) != 0 || pgd_serve_tick(s) != 0))
            rc = JOB_FATAL;
        else if (s->stop)
            rc = JOB_ABORTED;
    }
    free(cells);
    return rc;
}

/* A reply header: the job's ids echoed. */
static void reply_header(pgd_wire_header *r, pgd_wire_type type, const pgd_wire_header *job)
{
    pgd_wire_header_init(r, type);
    r->run_id = job->run_id;
    r->task_id = job->task_id;
    r->epoch = job->epoch;
    r->batch = job->batch;
    r->step = job->step;
    r->attempt = job->attempt;
}

static int send_patches(pgd_serve *s, const pgd_wire_msg *m, const uint8_t *pixels, pgd_err *err)
{
    pgd_wire_header r;
    reply_header(&r, PGD_WIRE_PATCHES, &m->h);
    r.n_images = 1;
    r.patches_per_image = m->h.patches_per_image;
    r.patch_size = m->h.patch_size;
    r.channels = 3;
    r.grid_m = m->h.grid_m;
    r.grid_n = m->h.grid_n;
    size_t bytes = m->n_cells * (size_t)m->h.patch_size * m->h.patch_size * 3;
    pgd_wire_frame f[2] = {{pixels, bytes}, {m->cells, m->n_cells * PGD_WIRE_CELL_SIZE}};
    return pgd_serve_send_reply(s, &r, f, 2, err);
}

/* PATCHES_SHM: the pixels are in region `region` of the segment; only the reference goes. */
static int send_patches_shm(pgd_serve *s, const pgd_wire_msg *m, int region, pgd_err *err)
{
    pgd_wire_header r;
    reply_header(&r, PGD_WIRE_PATCHES_SHM, &m->h);
    r.n_images = 1;
    r.patches_per_image = m->h.patches_per_image;
    r.patch_size = m->h.patch_size;
    r.channels = 3;
    r.grid_m = m->h.grid_m;
    r.grid_n = m->h.grid_n;
    size_t bytes = m->n_cells * (size_t)m->h.patch_size * m->h.patch_size * 3;
    pgd_wire_shmref ref;
    pgd_serve_shm_finish(&s->shm, region, bytes, &ref);
    uint8_t refbuf[PGD_WIRE_SHMREF_SIZE];
    pgd_wire_put_shmref(refbuf, &ref);
    pgd_wire_frame f[3] = {{refbuf, sizeof refbuf},
                           {m->cells, m->n_cells * PGD_WIRE_CELL_SIZE},
                           {s->shm.name, strlen(s->shm.name)}};
    return pgd_serve_send_reply(s, &r, f, 3, err);
}

/* Where a job's pixels go when the sampler takes PATCHES_SHM: a region of this run's segment (made at the
 * first such job, and again for a new run or a larger job once no region is lent). Returns the region, or -1:
 * the job's pixels go inline (every region lent, or no segment could be made: then shm stays off). */
static int shm_region(pgd_serve *s, const pgd_wire_msg *m, size_t bytes, uint8_t **pixels)
{
    if (!s->shm_on || !(m->h.flags & PGD_WIRE_JOB_SHM))
        return -1;
    pgd_serve_shm *g = &s->shm;
    if (!g->base || g->run_id != m->h.run_id || bytes + PGD_SERVE_SHM_GEN > g->slot_size) {
        if (g->base && g->run_id == m->h.run_id && pgd_serve_shm_lent(g) > 0)
            return -1; /* a larger job while regions are lent: this one inline, the segment grows later */
        pgd_serve_shm_close(g);
        uint32_t regions = s->o.credit + 2 < 64 ? (uint32_t)s->o.credit + 2 : 64;
        pgd_err e = PGD_ERR_INIT;
        if (pgd_serve_shm_create(g, regions, bytes, m->h.run_id, &e) != 0) {
            pgd_warn("%s: answers go inline from now on", e.msg);
            s->shm_on = 0;
            return -1;
        }
        pgd_debug("patch segment %s: %u regions of %.1f MB", g->name, g->nslots, (double)g->slot_size / 1e6);
    }
    return pgd_serve_shm_take(g, m->h.task_id, m->h.attempt, bytes, pixels);
}

static int send_error(pgd_serve *s, const pgd_wire_msg *m, const char *reason)
{
    char text[PGD_WIRE_TEXT_MAX + 1];
    pgd_wire_header r;
    reply_header(&r, PGD_WIRE_JOB_ERROR, &m->h);
    size_t len = pgd_serve_reason(reason, text, sizeof text);
    pgd_wire_frame f = {text, len};
    pgd_err err = PGD_ERR_INIT;
    int rc = pgd_serve_send_reply(s, &r, &f, 1, &err);
    if (rc < 0 && !s->fatal) { /* the encoder refused it: cannot happen for a sanitised reason */
        pgd_log_err(&err);
        s->fatal = 1;
    }
    return rc;
}

int pgd_serve_job(pgd_serve *s, const pgd_wire_rx *rx)
{
    const pgd_wire_msg *m = &rx->msg;
    char path[PGD_WIRE_TEXT_MAX + 1];
    pgd_wire_text(m, path, sizeof path);
    s->run_id = m->h.run_id;
    unsigned long long task = (unsigned long long)m->h.task_id;
    int64_t t0 = pgd_clock_ms();
    pgd_err err = PGD_ERR_INIT;
    uint8_t *pixels = NULL;
    int rc = JOB_FAILED, region = -1;
    pgd_debug("job %llu attempt %u: %s, %zu cells", task, m->h.attempt, path, m->n_cells);
    if (prepare(s, m, path, &err) == 0) {
        size_t bytes = m->n_cells * (size_t)m->h.patch_size * m->h.patch_size * 3;
        region = shm_region(s, m, bytes, &pixels);
        if (region < 0)
            pixels = malloc(bytes ? bytes : 1);
        if (!pixels)
            pgd_fail(&err, PGD_ENOMEM, "%s: out of memory for %zu bytes of patches", path, bytes);
        else
            rc = decode(s, m, pixels, &err);
    }
    if (rc == JOB_DONE) {
        int sent = region >= 0 ? send_patches_shm(s, m, region, &err) : send_patches(s, m, pixels, &err);
        if (sent < 0 && !s->fatal) /* the encoder refused the reply: say so to the sampler */
            rc = JOB_FAILED;
        else
            rc = sent < 0 ? JOB_FATAL : sent > 0 ? JOB_ABORTED : JOB_DONE;
        if (sent == 0 && region >= 0)
            s->n.shm_answers++;
        else if (region >= 0)
            pgd_serve_shm_abandon(&s->shm, region);
    } else if (region >= 0) {
        pgd_serve_shm_abandon(&s->shm, region);
    }
    if (region < 0)
        free(pixels);
    if (rc == JOB_FAILED) {
        if (!pgd_err_is_set(&err))
            pgd_fail(&err, PGD_EIO, "decoding failed");
        /* the reason names the file: the whole path goes in front when the message lacks it */
        char reason[PGD_WIRE_TEXT_MAX + 3 + sizeof err.msg]; /* cut to the wire's limit by send_error */
        snprintf(reason, sizeof reason, "%s%s%s", strstr(err.msg, path) ? "" : path,
                 strstr(err.msg, path) ? "" : ": ", err.msg);
        pgd_warn("job %llu attempt %u failed: %s", task, m->h.attempt, reason);
        int sent = send_error(s, m, reason);
        rc = sent < 0 ? JOB_FATAL : sent > 0 ? JOB_ABORTED : JOB_FAILED;
        if (rc == JOB_FAILED)
            s->n.jobs_failed++;
    }
    if (rc == JOB_DONE) {
        s->n.jobs_ok++;
        s->n.patches += m->n_cells;
        s->n.megapixels += (double)m->n_cells * m->h.patch_size * m->h.patch_size / 1e6;
        pgd_debug("job %llu attempt %u: %s, %zu patches in %lld ms", task, m->h.attempt, path, m->n_cells,
                  (long long)(pgd_clock_ms() - t0));
    } else if (rc == JOB_ABORTED) {
        s->n.jobs_dropped++;
        pgd_info("job %llu attempt %u left unanswered: STOP", task, m->h.attempt);
    }
    return rc == JOB_FATAL ? -1 : 0;
}

void pgd_serve_drop_slide(pgd_serve *s)
{
    while (s->nslides > 0)
        close_slide(s, s->nslides - 1);
    free(s->slides);
    s->slides = NULL;
    s->patcher = NULL;
}
