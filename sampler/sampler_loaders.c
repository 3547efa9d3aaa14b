/* sampler_loaders.c: the loaders' side of the sampler: registration, least-loaded dispatch within credit,
 * results, heartbeats both ways, and re-issue of a dead loader's jobs. */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "sampler/sampler_int.h"

static int find_loader(const pgd_sampler *s, pgd_wire_frame rid)
{
    for (uint32_t i = 0; i < s->nloaders; i++)
        if (s->loaders[i].id_len == rid.len && memcmp(s->loaders[i].id, rid.data, rid.len) == 0)
            return (int)i;
    return -1;
}

static int add_loader(pgd_sampler *s, pgd_wire_frame rid)
{
    if (rid.len == 0 || rid.len > sizeof s->loaders[0].id)
        return -1;
    if (s->nloaders == s->cap_loaders) {
        uint32_t cap = s->cap_loaders ? s->cap_loaders * 2 : 8;
        smp_loader *l = realloc(s->loaders, cap * sizeof *l);
        if (!l)
            return -1;
        s->loaders = l;
        s->cap_loaders = cap;
    }
    smp_loader *l = &s->loaders[s->nloaders];
    memset(l, 0, sizeof *l);
    memcpy(l->id, rid.data, rid.len);
    l->id_len = rid.len;
    return (int)s->nloaders++;
}

/* Put every job the loader holds back in the queue (their next JOB gets attempt + 1). */
static void requeue_jobs_of(pgd_sampler *s, int li)
{
    for (uint32_t k = 0; k < s->used; k++) {
        smp_slot *sl = &s->slots[(s->head + k) % s->nslots];
        for (uint32_t i = 0; i < sl->st.n_images; i++)
            if (sl->jobs[i].state == SMP_JOB_SENT && sl->jobs[i].loader == li) {
                sl->jobs[i].state = SMP_JOB_QUEUED;
                sl->jobs[i].loader = -1;
            }
    }
    s->loaders[li].out = 0;
}

static void mark_dead(pgd_sampler *s, int li, const char *why)
{
    smp_loader *l = &s->loaders[li];
    if (!l->alive)
        return;
    l->alive = 0;
    s->n.loaders_dead++;
    pgd_warn("loader '%s' %s: its %u jobs go to others", l->name, why, l->out);
    requeue_jobs_of(s, li);
}

static void mismatch(pgd_sampler *s, const char *fmt, uint64_t task)
{
    s->n.mismatched++;
    if (!s->logged_mismatch++)
        pgd_warn(fmt, (unsigned long long)task);
}

/* The pending job a PATCHES or PATCHES_SHM answers (slot and image), or NULL: a late or duplicate answer, or
 * one whose counts or cells differ from the JOB's (both counted). */
static smp_slot *match_result(pgd_sampler *s, const pgd_wire_msg *m, uint32_t *img)
{
    uint32_t i;
    smp_slot *sl = m->h.run_id == (uint64_t)s->o.run_id ? pgd_sampler_find_task(s, m->h.task_id, &i) : NULL;
    if (!sl || sl->jobs[i].state == SMP_JOB_DONE || sl->jobs[i].state == SMP_JOB_FAILED) {
        s->n.duplicates++;
        return NULL;
    }
    uint32_t ppi = sl->st.patches_per_image;
    size_t cl = (size_t)ppi * PGD_WIRE_CELL_SIZE;
    if (m->h.patches_per_image != ppi || m->h.patch_size != (uint32_t)s->o.patch || m->h.channels != s->channels ||
        m->h.grid_m != sl->st.grid_m || m->h.grid_n != sl->st.grid_n || m->n_cells != ppi ||
        memcmp(m->cells, sl->cells + i * cl, cl) != 0) {
        mismatch(s, "PATCHES for job %llu do not match the JOB (counts or cells differ): dropped", m->h.task_id);
        return NULL;
    }
    *img = i;
    return sl;
}

static size_t image_bytes(const pgd_sampler *s, const smp_slot *sl)
{
    return (size_t)sl->st.patches_per_image * s->o.patch * s->o.patch * s->channels;
}

/* Job i of sl is answered: the first answer counts. */
static void accept_result(pgd_sampler *s, smp_slot *sl, uint32_t i)
{
    smp_job *j = &sl->jobs[i];
    if (j->state == SMP_JOB_SENT && j->loader >= 0 && s->loaders[j->loader].out > 0)
        s->loaders[j->loader].out--;
    j->state = SMP_JOB_DONE;
    j->loader = -1;
    sl->pending--;
    s->n.results++;
}

/* A PATCHES reply: the pixels are copied into the message's buffer at the image's place. */
static void on_patches(pgd_sampler *s, const pgd_wire_msg *m)
{
    uint32_t i;
    smp_slot *sl = match_result(s, m, &i);
    if (!sl)
        return;
    size_t pb = image_bytes(s, sl);
    memcpy(sl->pixels + i * pb, m->pixels, pb);
    accept_result(s, sl, i);
}

/* A PATCHES_SHM reply: the pixels are copied from the loader's region into their place; the region goes back
 * to the loader (RELEASE) whatever became of the answer. When the copy fails (the segment is not readable
 * here, or the region was written again), the answer does not count: the job goes out again if this was its
 * current attempt (another attempt in flight will answer otherwise). */
static void on_patches_shm(pgd_sampler *s, int li, pgd_wire_frame rid, const pgd_wire_msg *m)
{
    uint32_t i;
    pgd_err e = PGD_ERR_INIT;
    /* mapped even for an answer that does not count: the RELEASE below lets the loader remove the name */
    int mapped = li >= 0 && pgd_sampler_shm_map(s, li, m, &e) == 0;
    smp_slot *sl = li >= 0 ? match_result(s, m, &i) : NULL;
    if (sl) {
        size_t pb = image_bytes(s, sl);
        if (mapped && pgd_sampler_shm_copy(s, li, m, sl->pixels + i * pb, &e) == 0) {
            accept_result(s, sl, i);
            s->n.shm_results++;
        } else {
            smp_job *j = &sl->jobs[i];
            s->n.shm_failed++;
            if (e.code == PGD_EBUSY) /* an unreadable segment was logged when it was found so */
                pgd_warn("PATCHES_SHM for job %llu attempt %u dropped: %s", (unsigned long long)m->h.task_id,
                         m->h.attempt, e.msg);
            if (j->state == SMP_JOB_SENT && j->attempt == m->h.attempt) {
                if (j->loader >= 0 && s->loaders[j->loader].out > 0)
                    s->loaders[j->loader].out--;
                j->state = SMP_JOB_QUEUED;
                j->loader = -1;
            }
        }
    }
    pgd_sampler_shm_release(s, rid, &m->h);
}

static void on_job_error(pgd_sampler *s, const pgd_wire_msg *m)
{
    uint32_t i;
    smp_slot *sl = m->h.run_id == (uint64_t)s->o.run_id ? pgd_sampler_find_task(s, m->h.task_id, &i) : NULL;
    if (!sl || sl->jobs[i].state == SMP_JOB_DONE || sl->jobs[i].state == SMP_JOB_FAILED) {
        s->n.duplicates++;
        return;
    }
    char reason[PGD_WIRE_TEXT_MAX + 1];
    pgd_wire_text(m, reason, sizeof reason);
    uint32_t img = sl->images[i];
    s->n.job_errors++;
    /* a decode error is a property of the slide: record it now, leave the image out from here on */
    pgd_sampler_record_failure(s, img, reason);
    pgd_sampler_fail_image(s, img);
}

static void on_hello(pgd_sampler *s, int li, const pgd_wire_msg *m)
{
    smp_loader *l = &s->loaders[li];
    l->credit = m->h.credit;
    /* a segment that could not be read here once keeps the loader inline, even if it offers again */
    l->shm = s->o.loader_shm && (m->h.flags & PGD_WIRE_HELLO_SHM) && !l->shm_broken;
    size_t n = m->text_len < PGD_WIRE_NAME_MAX ? m->text_len : PGD_WIRE_NAME_MAX;
    memcpy(l->name, m->text, n);
    l->name[n] = '\0';
    if (!s->ever_registered)
        pgd_info("first loader registered: '%s', credit %u", l->name, l->credit);
    else
        pgd_debug("loader '%s' registered, credit %u", l->name, l->credit);
    s->ever_registered = 1;
}

int pgd_sampler_loader_rx(pgd_sampler *s)
{
    pgd_wire_rx rx;
    memset(&rx, 0, sizeof rx);
    pgd_err e = PGD_ERR_INIT;
    int rc = 0;
    if (pgd_wire_recv(s->lsock, &rx, 1, PGD_WIRE_DONTWAIT, &e) != 0) {
        if (e.code == PGD_EBUSY)
            rc = 1;
        else if (e.code == PGD_EIO) {
            snprintf(s->reason, sizeof s->reason, "loaders socket: %s", e.msg);
            rc = -1;
        } else
            pgd_wire_stats_reject(&s->bad, rx.msg.reason, &e);
        goto out;
    }
    const pgd_wire_msg *m = &rx.msg;
    int li = find_loader(s, pgd_wire_rx_routing_id(&rx));
    if (li < 0 && m->h.type == PGD_WIRE_HELLO)
        li = add_loader(s, pgd_wire_rx_routing_id(&rx));
    if (li >= 0) {
        smp_loader *l = &s->loaders[li];
        l->last_rx = pgd_clock_ms();
        if (!l->alive) { /* new, or back after a stall: what it held was re-issued already */
            if (l->name[0])
                pgd_info("loader '%s' is back", l->name);
            l->alive = 1;
            l->out = 0;
        }
    }
    switch (m->h.type) {
    case PGD_WIRE_HELLO:
        if (li >= 0)
            on_hello(s, li, m);
        break;
    case PGD_WIRE_HEARTBEAT:
        break;
    case PGD_WIRE_PATCHES:
        on_patches(s, m);
        if (li >= 0)
            s->loaders[li].done++;
        break;
    case PGD_WIRE_PATCHES_SHM:
        on_patches_shm(s, li, pgd_wire_rx_routing_id(&rx), m);
        if (li >= 0)
            s->loaders[li].done++;
        break;
    case PGD_WIRE_JOB_ERROR:
        on_job_error(s, m);
        break;
    default:
        s->n.unexpected++;
        if (!s->logged_unexpected++)
            pgd_warn("unexpected %s message from a loader, dropped", pgd_wire_type_name(m->h.type));
    }
out:
    pgd_wire_rx_close(&rx);
    return rc;
}

#define WAIT_FOR_AFFINE (-2)

/* The loader for a job of image img. Image-affine: the live loader that image's last job went to keeps its
 * images (it has the slide open, and for "fit" its fitted image: a new loader would resample the whole slide
 * again), while it has room; when it is full the job waits for it (WAIT_FOR_AFFINE), unless a live loader is
 * idle. An image without a live loader goes to the live loader with the fewest jobs. -1: no loader has room. */
static int pick_loader(const pgd_sampler *s, uint32_t img)
{
    int pref = s->img_loader[img], best = -1, idle = -1;
    for (uint32_t i = 0; i < s->nloaders; i++) {
        const smp_loader *l = &s->loaders[i];
        if (!l->alive || l->out >= l->credit)
            continue;
        if ((int)i == pref)
            return pref;
        if (l->out == 0 && idle < 0)
            idle = (int)i;
        if (best < 0 || l->out < s->loaders[best].out)
            best = (int)i;
    }
    if (pref >= 0 && (uint32_t)pref < s->nloaders && s->loaders[pref].alive)
        return idle >= 0 ? idle : best >= 0 ? WAIT_FOR_AFFINE : -1;
    return best;
}

static int send_job(pgd_sampler *s, int li, smp_slot *sl, uint32_t i, pgd_err *err)
{
    smp_job *j = &sl->jobs[i];
    const pgd_manifest_entry *e = &s->man->entries[sl->images[i]];
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_JOB);
    h.flags = s->loaders[li].shm ? PGD_WIRE_JOB_SHM : 0;
    h.run_id = (uint64_t)s->o.run_id;
    h.task_id = sl->task0 + i;
    h.epoch = sl->st.epoch;
    h.batch = sl->st.batch;
    h.step = sl->st.step;
    h.attempt = j->attempt + 1;
    h.n_images = 1;
    h.patches_per_image = sl->st.patches_per_image;
    h.patch_size = (uint32_t)s->o.patch;
    h.channels = s->channels;
    h.grid_m = sl->st.grid_m;
    h.grid_n = sl->st.grid_n;
    pgd_wire_job_spec spec = {0};
    if (s->o.geometry == 0) {
        spec.geometry = PGD_WIRE_GEOM_FIT;
        spec.fit_size = (uint32_t)s->o.fit_size;
        spec.level = -1;
    } else {
        spec.geometry = PGD_WIRE_GEOM_NATIVE;
        spec.level = s->o.mpp > 0 ? -1 : (int32_t)s->o.level;
        spec.mpp = s->o.mpp;
    }
    uint8_t specbuf[PGD_WIRE_SPEC_SIZE];
    pgd_wire_put_spec(specbuf, &spec);
    size_t cl = (size_t)h.patches_per_image * PGD_WIRE_CELL_SIZE;
    pgd_wire_frame f[3] = {{specbuf, sizeof specbuf}, {e->path, strlen(e->path)}, {sl->cells + i * cl, cl}};
    pgd_wire_frame rid = {s->loaders[li].id, s->loaders[li].id_len};
    if (pgd_wire_send(s->lsock, &rid, &h, f, 3, PGD_WIRE_DONTWAIT, err) != 0)
        return -1;
    j->attempt = h.attempt;
    j->state = SMP_JOB_SENT;
    j->loader = li;
    s->loaders[li].out++;
    s->img_loader[sl->images[i]] = li;
    s->n.jobs_sent++;
    if (j->attempt > 1)
        s->n.reissued++;
    return 0;
}

/* After a job for image img went to loader li, give li the queued jobs of the same image in later messages
 * of the window too, while it has room: it decodes them with the slide it has open (its queue is served in
 * order). Stops at the first send that fails; dispatch handles the rest. */
static void same_image_to(pgd_sampler *s, int li, uint32_t from, uint32_t img)
{
    for (uint32_t k = from; k < s->used; k++) {
        smp_slot *sl = &s->slots[(s->head + k) % s->nslots];
        for (uint32_t i = 0; i < sl->st.n_images; i++) {
            if (sl->jobs[i].state != SMP_JOB_QUEUED || sl->images[i] != img)
                continue;
            if (s->loaders[li].out >= s->loaders[li].credit || send_job(s, li, sl, i, NULL) != 0)
                return;
        }
    }
}

int pgd_sampler_dispatch(pgd_sampler *s)
{
    for (uint32_t k = 0; k < s->used; k++) {
        smp_slot *sl = &s->slots[(s->head + k) % s->nslots];
        for (uint32_t i = 0; i < sl->st.n_images; i++) {
            if (sl->jobs[i].state != SMP_JOB_QUEUED)
                continue;
            int li = pick_loader(s, sl->images[i]);
            if (li == WAIT_FOR_AFFINE)
                continue; /* its loader is busy: later jobs may go to others meanwhile */
            if (li < 0)
                return 0;
            pgd_err e = PGD_ERR_INIT;
            if (send_job(s, li, sl, i, &e) == 0) {
                same_image_to(s, li, k + 1, sl->images[i]);
                continue;
            }
            if (e.code == PGD_EBUSY)
                return 0; /* its queue is full: try again after the next poll */
            if (e.code == PGD_ENOENT) {
                mark_dead(s, (int)li, "is gone (disconnected)");
                i--; /* the same job to another loader */
                continue;
            }
            if (e.code == PGD_EINVAL) { /* the encoder refused the JOB: a path the wire cannot carry */
                pgd_sampler_record_failure(s, sl->images[i], e.msg);
                pgd_sampler_fail_image(s, sl->images[i]);
                continue;
            }
            snprintf(s->reason, sizeof s->reason, "send JOB: %s", e.msg);
            return -1;
        }
    }
    return 0;
}

static void send_plain(pgd_sampler *s, const smp_loader *l, pgd_wire_type type)
{
    pgd_wire_header h;
    pgd_wire_header_init(&h, type);
    h.run_id = (uint64_t)s->o.run_id;
    pgd_wire_frame rid = {l->id, l->id_len};
    pgd_wire_send(s->lsock, &rid, &h, NULL, 0, PGD_WIRE_DONTWAIT, NULL); /* best effort: liveness decides */
}

int pgd_sampler_liveness(pgd_sampler *s)
{
    int64_t now = pgd_clock_ms();
    int any = 0;
    for (uint32_t i = 0; i < s->nloaders; i++) {
        smp_loader *l = &s->loaders[i];
        if (l->alive && now - l->last_rx > s->o.heartbeat_timeout_ms) {
            char why[64];
            snprintf(why, sizeof why, "silent for %lld ms", (long long)(now - l->last_rx));
            mark_dead(s, (int)i, why);
        }
        any |= l->alive;
    }
    if (any)
        s->last_alive_ms = now;
    if (now - s->last_hb_ms >= s->o.heartbeat_ms) {
        for (uint32_t i = 0; i < s->nloaders; i++)
            if (s->loaders[i].alive)
                send_plain(s, &s->loaders[i], PGD_WIRE_HEARTBEAT);
        s->last_hb_ms = now;
    }
    return 0;
}

void pgd_sampler_stop_loaders(pgd_sampler *s)
{
    for (uint32_t i = 0; i < s->nloaders; i++)
        send_plain(s, &s->loaders[i], PGD_WIRE_STOP);
}
