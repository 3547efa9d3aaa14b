/* sampler_window.c: the window of BATCH messages being assembled, in schedule order, and the consumer. */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "sampler/sampler_int.h"

static int grow(void **p, size_t *cap, size_t need, pgd_err *err)
{
    if (need <= *cap)
        return 0;
    void *q = realloc(*p, need);
    if (!q)
        return pgd_fail(err, PGD_ENOMEM, "window buffer of %zu bytes", need);
    *p = q;
    *cap = need;
    return 0;
}

static size_t patch_bytes(const pgd_sampler *s)
{
    return (size_t)s->o.patch * (size_t)s->o.patch * s->channels;
}

/* Copy a schedule step into a free slot and make its jobs. */
static int take_step(pgd_sampler *s, smp_slot *sl, const pgd_sched_step *st, pgd_err *err)
{
    uint32_t n = st->n_images, ppi = st->patches_per_image;
    uint64_t px = (uint64_t)n * ppi * patch_bytes(s);
    if (px > PGD_WIRE_MAX_PAYLOAD)
        return pgd_fail(err, PGD_EINVAL, "'fill_chunk': a BATCH of %u images x %u patches is %llu bytes, over the "
                        "wire's 2 GiB", n, ppi, (unsigned long long)px);
    if (grow((void **)&sl->images, &sl->cap_images, n * sizeof *sl->images, err) ||
        grow((void **)&sl->jobs, &sl->cap_jobs, n * sizeof *sl->jobs, err) ||
        grow((void **)&sl->cells, &sl->cap_cells, (size_t)n * ppi * PGD_WIRE_CELL_SIZE, err))
        return -1;
    if (sl->pix && sl->pix->cap < px) {
        pgd_sampler_pool_put(sl->pix->data, sl->pix);
        sl->pix = NULL;
    }
    if (!sl->pix && !(sl->pix = pgd_sampler_pool_get(&s->pool, (size_t)px)))
        return pgd_fail(err, PGD_ENOMEM, "window buffer of %llu bytes", (unsigned long long)px);
    sl->pixels = sl->pix->data;
    sl->st = *st;
    memcpy(sl->images, st->images, n * sizeof *sl->images);
    sl->st.images = sl->images;
    sl->st.cells = NULL;
    for (size_t i = 0; i < (size_t)n * ppi; i++)
        pgd_wire_put_cell(sl->cells, i, st->cells[i].row, st->cells[i].col);
    sl->pending = 0;
    for (uint32_t i = 0; i < n; i++) {
        sl->jobs[i].attempt = 0;
        sl->jobs[i].loader = -1;
        sl->jobs[i].state = s->failed[sl->images[i]] ? SMP_JOB_FAILED : SMP_JOB_QUEUED;
        sl->pending += sl->jobs[i].state == SMP_JOB_QUEUED;
    }
    sl->seq = s->next_seq++;
    sl->task0 = s->next_task;
    s->next_task += n;
    sl->used = 1;
    return 0;
}

int pgd_sampler_fill(pgd_sampler *s, pgd_err *err)
{
    while (!s->sched_done && s->used < s->nslots) {
        smp_slot *next = &s->slots[(s->head + s->used) % s->nslots];
        if (!next->pix && !pgd_sampler_pool_can_get(&s->pool))
            break; /* every shared-memory slot is taken (the consumer holds the rest): wait for a RELEASE */
        pgd_sched_step st;
        int rc = pgd_sched_next(s->sched, &st, err);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            s->sched_done = 1;
            break;
        }
        if (take_step(s, next, &st, err) != 0)
            return -1;
        s->used++;
    }
    return 0;
}

smp_slot *pgd_sampler_find_task(pgd_sampler *s, uint64_t task, uint32_t *image)
{
    for (uint32_t k = 0; k < s->used; k++) {
        smp_slot *sl = &s->slots[(s->head + k) % s->nslots];
        if (task >= sl->task0 && task - sl->task0 < sl->st.n_images) {
            *image = (uint32_t)(task - sl->task0);
            return sl;
        }
    }
    return NULL;
}

void pgd_sampler_fail_image(pgd_sampler *s, uint32_t img)
{
    for (uint32_t k = 0; k < s->used; k++) {
        smp_slot *sl = &s->slots[(s->head + k) % s->nslots];
        for (uint32_t i = 0; i < sl->st.n_images; i++) {
            smp_job *j = &sl->jobs[i];
            if (sl->images[i] != img || j->state == SMP_JOB_DONE || j->state == SMP_JOB_FAILED)
                continue;
            if (j->state == SMP_JOB_SENT && j->loader >= 0 && s->loaders[j->loader].out > 0)
                s->loaders[j->loader].out--;
            j->state = SMP_JOB_FAILED;
            j->loader = -1;
            sl->pending--;
        }
    }
}

/* Move the images that were decoded to the front (the failed ones are left out), fill ids and labels, and
 * shrink the slot to them, so that a second call (after a send that could not go) changes nothing. Returns
 * the number kept. */
static uint32_t compact(pgd_sampler *s, smp_slot *sl, uint8_t *ids, uint8_t *labels)
{
    uint32_t ppi = sl->st.patches_per_image, kept = 0;
    size_t pxi = (size_t)ppi * patch_bytes(s), cli = (size_t)ppi * PGD_WIRE_CELL_SIZE;
    for (uint32_t i = 0; i < sl->st.n_images; i++) {
        if (sl->jobs[i].state != SMP_JOB_DONE)
            continue;
        if (kept != i) {
            memmove(sl->pixels + kept * pxi, sl->pixels + i * pxi, pxi);
            memmove(sl->cells + kept * cli, sl->cells + i * cli, cli);
            sl->images[kept] = sl->images[i];
            sl->jobs[kept] = sl->jobs[i];
        }
        const pgd_manifest_entry *e = &s->man->entries[sl->images[i]];
        pgd_wire_put_id(ids, kept, e->id, NULL); /* manifest ids are 1..63 bytes */
        pgd_wire_put_label(labels, kept, e->label);
        kept++;
    }
    sl->st.n_images = kept;
    return kept;
}

static void progress_line(pgd_sampler *s, const smp_slot *sl, uint32_t kept)
{
    if (!s->progress)
        return;
    fprintf(s->progress, "%llu %u %u %u 0x%x %u %u %llu %lld\n", (unsigned long long)sl->seq, sl->st.epoch,
            sl->st.batch, sl->st.step, sl->st.flags, kept, sl->st.patches_per_image,
            (unsigned long long)kept * sl->st.patches_per_image, (long long)(pgd_clock_ms() - s->started_ms));
    fflush(s->progress);
}

/* Send the head slot as one BATCH. 0 sent (or skipped), 1 the socket cannot take it now, -1 fatal. */
static int send_head(pgd_sampler *s, smp_slot *sl)
{
    uint32_t n = sl->st.n_images, ppi = sl->st.patches_per_image;
    uint8_t *ids = calloc(n, PGD_WIRE_ID_SLOT), *labels = calloc(n, PGD_WIRE_LABEL_SIZE);
    if (!ids || !labels) {
        free(ids);
        free(labels);
        snprintf(s->reason, sizeof s->reason, "out of memory for a BATCH");
        return -1;
    }
    uint32_t kept = compact(s, sl, ids, labels);
    int rc = 0;
    if (kept == 0) {
        s->n.skipped++;
        pgd_info("BATCH %llu (epoch %u batch %u step %u) skipped: every image failed", (unsigned long long)sl->seq,
                 sl->st.epoch, sl->st.batch, sl->st.step);
        goto done;
    }
    pgd_wire_header h;
    pgd_wire_header_init(&h, PGD_WIRE_BATCH);
    h.flags = sl->st.flags;
    h.run_id = (uint64_t)s->o.run_id;
    h.task_id = sl->seq;
    h.epoch = sl->st.epoch;
    h.batch = sl->st.batch;
    h.step = sl->st.step;
    h.n_images = kept;
    h.patches_per_image = ppi;
    h.patch_size = (uint32_t)s->o.patch;
    h.channels = s->channels;
    h.grid_m = sl->st.grid_m;
    h.grid_n = sl->st.grid_n;
    size_t px = (size_t)kept * ppi * patch_bytes(s);
    pgd_wire_frame f[5] = {{sl->pixels, px},
                           {sl->cells, (size_t)kept * ppi * PGD_WIRE_CELL_SIZE},
                           {ids, (size_t)kept * PGD_WIRE_ID_SLOT},
                           {labels, (size_t)kept * PGD_WIRE_LABEL_SIZE},
                           {NULL, 0}};
    pgd_wire_frame rid = {s->cons_id, s->cons_id_len};
    pgd_err e = PGD_ERR_INIT;
    int given = 0;
    if (s->cons_shm && sl->pix->ring_slot >= 0) {
        /* the pixels stay where they were assembled; the consumer reads them there and sends RELEASE */
        uint8_t ref[PGD_WIRE_SHMREF_SIZE];
        pgd_wire_shmref sr = {pgd_batch_ring_offset(&s->ring, (uint32_t)sl->pix->ring_slot), px,
                              (uint32_t)sl->pix->ring_slot, 0};
        pgd_wire_put_shmref(ref, &sr);
        f[0].data = ref;
        f[0].len = sizeof ref;
        f[4].data = s->ring.name;
        f[4].len = strlen(s->ring.name);
        h.type = PGD_WIRE_BATCH_SHM;
        rc = pgd_wire_send(s->csock, &rid, &h, f, 5, PGD_WIRE_DONTWAIT, &e);
        if (rc == 0) {
            sl->pix->at_consumer = 1;
            sl->pix->seq = sl->seq;
            sl->pix = NULL;
            sl->pixels = NULL;
        }
    } else {
        rc = pgd_wire_send_zc(s->csock, &rid, &h, f, 4, 0, pgd_sampler_pool_put, sl->pix, PGD_WIRE_DONTWAIT, &given,
                              &e);
        if (given) { /* ZeroMQ sends the pixels from this buffer and gives it back to the pool when done */
            sl->pix = NULL;
            sl->pixels = NULL;
        }
    }
    if (rc != 0) {
        if (!given && e.code == PGD_EBUSY) {
            rc = 1;
            goto out; /* nothing changed but the compaction, which is idempotent */
        }
        if (!given && e.code == PGD_ENOENT) { /* the consumer went away: wait for it (or another) to grant credit */
            pgd_warn("consumer gone: %s", e.msg);
            s->have_consumer = 0;
            s->cons_credit = 0;
            s->cons_shm = 0;
            pgd_sampler_pool_reclaim(&s->pool); /* what it held is free again */
            rc = 1;
            goto out;
        }
        snprintf(s->reason, sizeof s->reason, "send BATCH: %s", e.msg);
        rc = -1;
        goto out;
    }
    s->cons_credit--;
    s->cons_last_tx = pgd_clock_ms();
    s->n.batches++;
    s->n.patches += (uint64_t)kept * ppi;
    s->n.bytes += px;
done:
    progress_line(s, sl, kept);
    sl->used = 0;
    s->head = (s->head + 1) % s->nslots;
    s->used--;
out:
    free(ids);
    free(labels);
    return rc;
}

int pgd_sampler_emit(pgd_sampler *s)
{
    while (s->used > 0) {
        smp_slot *sl = &s->slots[s->head];
        if (sl->pending > 0)
            return 0;
        int all_failed = 1;
        for (uint32_t i = 0; i < sl->st.n_images && all_failed; i++)
            all_failed = sl->jobs[i].state != SMP_JOB_DONE;
        if (!all_failed && (!s->have_consumer || s->cons_credit == 0))
            return 0;
        int rc = send_head(s, sl);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
    return 0;
}

int pgd_sampler_consumer_rx(pgd_sampler *s)
{
    pgd_wire_rx rx;
    memset(&rx, 0, sizeof rx);
    pgd_err e = PGD_ERR_INIT;
    int rc = pgd_wire_recv(s->csock, &rx, 1, PGD_WIRE_DONTWAIT, &e);
    if (rc != 0) {
        int r = 0;
        if (e.code == PGD_EIO) {
            snprintf(s->reason, sizeof s->reason, "consumer socket: %s", e.msg);
            r = -1;
        } else if (e.code != PGD_EBUSY)
            pgd_wire_stats_reject(&s->bad, rx.msg.reason, &e);
        pgd_wire_rx_close(&rx);
        return r == 0 && e.code == PGD_EBUSY ? 1 : r;
    }
    const pgd_wire_header *h = &rx.msg.h;
    pgd_wire_frame rid = pgd_wire_rx_routing_id(&rx);
    int known = s->have_consumer && rid.len == s->cons_id_len && memcmp(rid.data, s->cons_id, rid.len) == 0;
    if (h->type == PGD_WIRE_CREDIT || h->type == PGD_WIRE_HEARTBEAT || h->type == PGD_WIRE_RELEASE) {
        if (!known && h->type != PGD_WIRE_RELEASE && rid.len <= sizeof s->cons_id) {
            memcpy(s->cons_id, rid.data, rid.len);
            s->cons_id_len = rid.len;
            if (s->have_consumer) {
                uint32_t n = pgd_sampler_pool_reclaim(&s->pool);
                pgd_info("a new consumer connected: credit starts again (%u shared-memory slots of the old one freed)",
                         n);
            }
            s->have_consumer = 1;
            s->cons_credit = 0;
            s->cons_shm = 0;
            known = 1;
        }
        if (known) {
            s->cons_last_rx = pgd_clock_ms();
            if (h->type == PGD_WIRE_CREDIT) {
                s->cons_credit += h->credit;
                s->cons_shm = (h->flags & PGD_WIRE_CREDIT_SHM) && s->have_ring;
                if (h->patches_per_image && !s->logged_ppi++)
                    pgd_info("the consumer asks for at most %u patches per image per BATCH: not honoured, the "
                             "schedule's fill_chunk and inner_chunk decide (docs/sampler.md)", h->patches_per_image);
            }
            if (h->type == PGD_WIRE_RELEASE) {
                s->cons_credit += h->credit;
                if (pgd_sampler_pool_release(&s->pool, h->task_id) != 0 && !s->logged_release++)
                    pgd_warn("RELEASE of BATCH %llu, which the consumer does not hold: ignored",
                             (unsigned long long)h->task_id);
            }
        }
    } else {
        s->n.unexpected++;
        if (!s->logged_unexpected++)
            pgd_warn("unexpected %s message from the consumer, dropped", pgd_wire_type_name(h->type));
    }
    pgd_wire_rx_close(&rx);
    return 0;
}

/* Is the stream held up by the consumer: a BATCH ready without credit (or without a consumer), or every
 * shared-memory slot lent to it? */
static int waiting_for_consumer(pgd_sampler *s)
{
    if (s->used > 0 && s->slots[s->head].pending == 0 && (!s->have_consumer || s->cons_credit == 0))
        return 1;
    return !s->sched_done && s->used < s->nslots && !s->slots[(s->head + s->used) % s->nslots].pix &&
           !pgd_sampler_pool_can_get(&s->pool);
}

int pgd_sampler_consumer_liveness(pgd_sampler *s)
{
    int64_t now = pgd_clock_ms();
    if (!waiting_for_consumer(s))
        s->cons_wait_since = -1;
    else if (s->cons_wait_since < 0)
        s->cons_wait_since = now;
    /* the consumer's last sign of life, or the moment the wait began when that is later */
    int64_t since = s->cons_last_rx > s->cons_wait_since ? s->cons_last_rx : s->cons_wait_since;
    if (s->cons_wait_since >= 0 && now - since > s->o.consumer_timeout_ms) {
        snprintf(s->reason, sizeof s->reason, "%s for %lld ms while BATCH messages wait (consumer_endpoint %s)",
                 !s->have_consumer ? "no consumer connected" : "the consumer was silent",
                 (long long)(now - since), s->o.consumer_endpoint);
        return -1;
    }
    if (s->have_consumer && now - s->cons_last_tx >= s->o.heartbeat_ms) {
        pgd_wire_header h;
        pgd_wire_header_init(&h, PGD_WIRE_HEARTBEAT);
        h.run_id = (uint64_t)s->o.run_id;
        pgd_wire_frame rid = {s->cons_id, s->cons_id_len};
        pgd_wire_send(s->csock, &rid, &h, NULL, 0, PGD_WIRE_DONTWAIT, NULL); /* best effort */
        s->cons_last_tx = now;
    }
    return 0;
}

void pgd_sampler_end_consumer(pgd_sampler *s, int complete)
{
    if (!s->have_consumer || !s->csock)
        return;
    pgd_wire_header h;
    pgd_wire_header_init(&h, complete ? PGD_WIRE_END : PGD_WIRE_STOP);
    h.run_id = (uint64_t)s->o.run_id;
    h.task_id = s->next_seq;
    pgd_wire_frame rid = {s->cons_id, s->cons_id_len};
    pgd_err e = PGD_ERR_INIT;
    if (pgd_wire_send(s->csock, &rid, &h, NULL, 0, 0, &e) != 0)
        pgd_warn("could not send %s to the consumer: %s", complete ? "END" : "STOP", e.msg);
}
