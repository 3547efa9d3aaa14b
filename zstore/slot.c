/* slot.c: the per-slot seqlock: CAS-acquired writers, lock-free readers, takeover of abandoned slots. */
#include "zs_int.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "half.h"
#include "shm.h"

/* The seqlock word: bits 63..32 the pid that last changed it, bits 31..0 the count (odd: being
 * written). 0 means never written; a written slot always has a pid, so it is never 0 again. */
static uint32_t seq_pid(uint64_t s)
{
    return (uint32_t)(s >> 32);
}

static uint64_t seq_next(uint64_t s, uint32_t pid, uint32_t step)
{
    return ((uint64_t)pid << 32) | (uint32_t)((uint32_t)s + step);
}

/* A bounded wait with backoff: yields first, then sleeps doubling from 1 us up to 1 ms. */
typedef struct zs_wait {
    struct timespec start;
    unsigned limit_ms;
    unsigned step;
} zs_wait;

static void wait_init(zs_wait *w, unsigned limit_ms)
{
    clock_gettime(CLOCK_MONOTONIC, &w->start);
    w->limit_ms = limit_ms;
    w->step = 0;
}

static int wait_expired(const zs_wait *w)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(now.tv_sec - w->start.tv_sec) * 1000 + (now.tv_nsec - w->start.tv_nsec) / 1000000;
    return ms >= (int64_t)w->limit_ms;
}

static void wait_pause(zs_wait *w)
{
    if (w->step < 8) {
        sched_yield();
    } else {
        unsigned shift = w->step - 8 < 10 ? w->step - 8 : 10;
        struct timespec ts = {0, 1000L << shift}; /* 1 us .. ~1 ms */
        nanosleep(&ts, NULL);
    }
    w->step++;
}

/* Copy len bytes and return the CRC-32C of the copy, a chunk at a time so that each chunk is checksummed
 * while it is still in the L1 cache (one pass over memory instead of two). */
#define ZS_CHUNK 16384
static uint32_t copy_crc(void *dst, const void *src, size_t len, int crc_of_dst)
{
    uint32_t crc = 0;
    for (size_t off = 0; off < len; off += ZS_CHUNK) {
        size_t n = len - off < ZS_CHUNK ? len - off : ZS_CHUNK;
        memcpy((unsigned char *)dst + off, (const unsigned char *)src + off, n);
        crc = pgd_crc32c(crc, (const unsigned char *)(crc_of_dst ? dst : src) + off, n);
    }
    return crc;
}

static unsigned char *slot_data(const pgd_zstore *z, uint32_t slot)
{
    return z->base + z->hdr.data_offset + (uint64_t)slot * z->hdr.slot_stride;
}

/* Whether the writer that made seq value s (odd) still runs. Its start time is known only once it has
 * stored it (owner_tag == s); before that the pid alone decides. */
static int writer_alive(zs_slot *e, uint64_t s)
{
    uint64_t start = 0;
    if (atomic_load_explicit(&e->owner_tag, memory_order_acquire) == s)
        start = atomic_load_explicit(&e->writer_start, memory_order_relaxed);
    return pgd_proc_alive((pid_t)seq_pid(s), start);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Argument checks shared by the slot calls; each failure is sticky. */
static int check_slot(pgd_zstore *z, uint32_t slot, const char *what, pgd_err *err)
{
    if (slot >= z->hdr.slots) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: %s: slot %u out of range (the segment has %u slots)",
                 z->name, what, slot, z->hdr.slots);
        return pgd_zstore_sticky(z, err);
    }
    return 0;
}

static int check_writer(pgd_zstore *z, uint32_t slot, const char *what, pgd_err *err)
{
    if (!z->writable)
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: %s: the segment was opened read-only", z->name, what);
    else if (getpid() != z->pid)
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: %s: handle used in a child process; open a new one there",
                 z->name, what);
    if (z->err.code != PGD_OK)
        return pgd_zstore_sticky(z, err);
    return check_slot(z, slot, what, err);
}

static int check_id(pgd_zstore *z, const char *id, const char *what, pgd_err *err)
{
    size_t len = id ? strlen(id) : 0;
    if (len > PGD_ZSTORE_ID_MAX) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: %s: image id '%.40s...' is %zu bytes, at most %d allowed",
                 z->name, what, id, len, PGD_ZSTORE_ID_MAX);
        return pgd_zstore_sticky(z, err);
    }
    return 0;
}

/* Take slot for writing: CAS an even seq e to e+1, or, when its writer died mid-write, an odd o to o+2.
 * Waits (bounded) while a live writer holds it: PGD_EBUSY, not sticky. */
static int slot_acquire(pgd_zstore *z, uint32_t slot, pgd_err *err)
{
    zs_slot *e = &z->table[slot];
    zs_wait w;
    wait_init(&w, z->timeout_ms);
    for (;;) {
        uint64_t s = atomic_load_explicit(&e->seq, memory_order_acquire), want;
        if (!(s & 1)) {
            want = seq_next(s, (uint32_t)z->pid, 1);
        } else if (!writer_alive(e, s)) {
            want = seq_next(s, (uint32_t)z->pid, 2); /* take over an abandoned slot */
        } else {
            if (wait_expired(&w))
                return pgd_fail(err, PGD_EBUSY, "zstore pgd.%s: slot %u is being written by pid %u (waited %u ms)",
                                z->name, slot, seq_pid(s), z->timeout_ms);
            wait_pause(&w);
            continue;
        }
        if (atomic_compare_exchange_strong_explicit(&e->seq, &s, want, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            /* Order the odd seq before every store that follows (the data above all). */
            atomic_thread_fence(memory_order_release);
            atomic_store_explicit(&e->writer_start, z->start, memory_order_relaxed);
            atomic_store_explicit(&e->owner_tag, want, memory_order_release);
            e->state = PGD_ZSLOT_WRITING;
            z->held[slot] = want;
            return 0;
        }
    }
}

/* Publish a held slot: store meta, then release-store the next (even) seq. Fails (not sticky) when
 * another process took the slot over meanwhile, having judged this one dead. */
static int slot_publish(pgd_zstore *z, uint32_t slot, uint32_t crc, const char *id, int32_t label,
                        pgd_zslot_state state, pgd_err *err)
{
    zs_slot *e = &z->table[slot];
    uint64_t held = z->held[slot];
    z->held[slot] = 0;
    if (state == PGD_ZSLOT_READY) {
        e->crc = crc;
        e->generation++;
        e->written_ns = now_ns();
        e->label = label;
        memset(e->image_id, 0, sizeof e->image_id);
        if (id)
            memcpy(e->image_id, id, strlen(id));
    }
    e->state = (uint32_t)state;
    uint64_t expect = held;
    if (!atomic_compare_exchange_strong_explicit(&e->seq, &expect, seq_next(held, (uint32_t)z->pid, 1),
                                                 memory_order_release, memory_order_relaxed))
        return pgd_fail(err, PGD_ESTALE, "zstore pgd.%s: slot %u was taken over by pid %u during this write",
                        z->name, slot, seq_pid(expect));
    return 0;
}

void pgd_zstore_slot_abort(pgd_zstore *z, uint32_t slot)
{
    if (z->held && slot < z->hdr.slots && z->held[slot])
        slot_publish(z, slot, 0, NULL, 0, PGD_ZSLOT_ABORTED, NULL);
}

int pgd_zstore_write(pgd_zstore *z, uint32_t slot, const float *src, size_t count, const char *image_id,
                     int32_t label, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_writer(z, slot, "write", err) || check_id(z, image_id, "write", err))
        return -1;
    size_t elems = pgd_zstore_block_elems(z);
    if (!src || count != elems) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: write slot %u: %zu values given, a block is %ux%ux%u = %zu",
                 z->name, slot, src ? count : 0, z->hdr.m, z->hdr.n, z->hdr.s, elems);
        return pgd_zstore_sticky(z, err);
    }
    if (z->held[slot]) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: write slot %u: this handle is writing it (write_begin)",
                 z->name, slot);
        return pgd_zstore_sticky(z, err);
    }
    if (slot_acquire(z, slot, err) != 0)
        return -1;
    unsigned char *dst = slot_data(z, slot);
    size_t bytes = (size_t)z->hdr.block_bytes;
    uint32_t crc;
    switch ((pgd_zdtype)z->hdr.dtype) {
    case PGD_ZDTYPE_F32:
        crc = copy_crc(dst, src, bytes, 0);
        break;
    case PGD_ZDTYPE_F16:
        pgd_f32_to_f16_n((uint16_t *)(void *)dst, src, elems);
        crc = pgd_crc32c(0, dst, bytes);
        break;
    default:
        pgd_f32_to_bf16_n((uint16_t *)(void *)dst, src, elems);
        crc = pgd_crc32c(0, dst, bytes);
        break;
    }
    return slot_publish(z, slot, crc, image_id, label, PGD_ZSLOT_READY, err);
}

int pgd_zstore_write_begin(pgd_zstore *z, uint32_t slot, void **ptr, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_writer(z, slot, "write_begin", err))
        return -1;
    if (!ptr || z->held[slot]) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: write_begin slot %u: %s", z->name, slot,
                 ptr ? "this handle is already writing it" : "ptr is NULL");
        return pgd_zstore_sticky(z, err);
    }
    if (slot_acquire(z, slot, err) != 0)
        return -1;
    *ptr = slot_data(z, slot);
    return 0;
}

int pgd_zstore_write_end(pgd_zstore *z, uint32_t slot, const char *image_id, int32_t label, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_writer(z, slot, "write_end", err))
        return -1;
    if (!z->held[slot]) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: write_end slot %u without write_begin", z->name, slot);
        return pgd_zstore_sticky(z, err);
    }
    if (check_id(z, image_id, "write_end", err))
        return -1;
    uint32_t crc = pgd_crc32c(0, slot_data(z, slot), (size_t)z->hdr.block_bytes);
    return slot_publish(z, slot, crc, image_id, label, PGD_ZSLOT_READY, err);
}

int pgd_zstore_write_abort(pgd_zstore *z, uint32_t slot, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_writer(z, slot, "write_abort", err))
        return -1;
    if (!z->held[slot]) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: write_abort slot %u without write_begin", z->name, slot);
        return pgd_zstore_sticky(z, err);
    }
    return slot_publish(z, slot, 0, NULL, 0, PGD_ZSLOT_ABORTED, err);
}

/* The metadata fields of entry e (read racily: callers validate with the seq). */
static void meta_copy(zs_slot *e, uint64_t s, pgd_zslot_info *out)
{
    memset(out, 0, sizeof *out);
    out->state = (pgd_zslot_state)e->state;
    memcpy(out->image_id, e->image_id, sizeof out->image_id);
    out->image_id[PGD_ZSTORE_ID_MAX] = 0;
    out->label = e->label;
    out->generation = e->generation;
    out->crc = e->crc;
    out->written_ns = e->written_ns;
    out->writer_pid = seq_pid(s);
    out->seq = s;
}

/* Copy slot's bytes into dst and its meta under the seqlock, then check state and CRC of the copy. */
static int slot_read(pgd_zstore *z, uint32_t slot, void *dst, pgd_zslot_info *meta, pgd_err *err)
{
    zs_slot *e = &z->table[slot];
    const unsigned char *data = slot_data(z, slot);
    size_t bytes = (size_t)z->hdr.block_bytes;
    pgd_zslot_info m;
    uint32_t crc = 0;
    zs_wait w;
    wait_init(&w, z->timeout_ms);
    for (;;) {
        uint64_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (s1 == 0)
            return pgd_fail(err, PGD_EEMPTY, "zstore pgd.%s: slot %u is empty (never written)", z->name, slot);
        if (s1 & 1) {
            if (z->held && z->held[slot] == s1)
                return pgd_fail(err, PGD_EBUSY, "zstore pgd.%s: slot %u is being written by this handle", z->name,
                                slot);
            if (!writer_alive(e, s1)) {
                if (atomic_load_explicit(&e->seq, memory_order_acquire) != s1)
                    continue; /* taken over meanwhile */
                return pgd_fail(err, PGD_ECORRUPT, "zstore pgd.%s: slot %u was abandoned mid-write by pid %u",
                                z->name, slot, seq_pid(s1));
            }
        } else {
            meta_copy(e, s1, &m);
            crc = copy_crc(dst, data, bytes, 1); /* of the copy: only it is known to be stable */
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s1)
                break;
        }
        if (wait_expired(&w))
            return pgd_fail(err, PGD_EBUSY, "zstore pgd.%s: slot %u is being written by pid %u (waited %u ms)",
                            z->name, slot, seq_pid(atomic_load_explicit(&e->seq, memory_order_relaxed)),
                            z->timeout_ms);
        wait_pause(&w);
    }
    if (m.state == PGD_ZSLOT_ABORTED)
        return pgd_fail(err, PGD_ECORRUPT, "zstore pgd.%s: slot %u holds a write that pid %u aborted", z->name, slot,
                        m.writer_pid);
    if (crc != m.crc)
        return pgd_fail(err, PGD_ECORRUPT, "zstore pgd.%s: slot %u crc mismatch (stored 0x%08x, data 0x%08x)",
                        z->name, slot, m.crc, crc);
    m.state = PGD_ZSLOT_READY;
    if (meta)
        *meta = m;
    return 0;
}

int pgd_zstore_read_raw(pgd_zstore *z, uint32_t slot, void *dst, size_t cap, pgd_zslot_info *meta, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_slot(z, slot, "read", err))
        return -1;
    if (!dst || cap < z->hdr.block_bytes) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: read slot %u: buffer of %zu bytes, a block needs %llu",
                 z->name, slot, dst ? cap : 0, (unsigned long long)z->hdr.block_bytes);
        return pgd_zstore_sticky(z, err);
    }
    return slot_read(z, slot, dst, meta, err);
}

int pgd_zstore_read(pgd_zstore *z, uint32_t slot, float *dst, size_t cap, pgd_zslot_info *meta, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_slot(z, slot, "read", err))
        return -1;
    size_t elems = pgd_zstore_block_elems(z);
    if (!dst || cap < elems) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: read slot %u: room for %zu values, a block is %ux%ux%u = %zu",
                 z->name, slot, dst ? cap : 0, z->hdr.m, z->hdr.n, z->hdr.s, elems);
        return pgd_zstore_sticky(z, err);
    }
    if (z->hdr.dtype == PGD_ZDTYPE_F32)
        return slot_read(z, slot, dst, meta, err);
    if (!z->scratch && !(z->scratch = malloc((size_t)z->hdr.block_bytes))) {
        pgd_fail(&z->err, PGD_ENOMEM, "zstore pgd.%s: out of memory for a %llu-byte block", z->name,
                 (unsigned long long)z->hdr.block_bytes);
        return pgd_zstore_sticky(z, err);
    }
    if (slot_read(z, slot, z->scratch, meta, err) != 0)
        return -1;
    if (z->hdr.dtype == PGD_ZDTYPE_F16)
        pgd_f16_to_f32_n(dst, z->scratch, elems);
    else
        pgd_bf16_to_f32_n(dst, z->scratch, elems);
    return 0;
}

int pgd_zstore_get_slot(pgd_zstore *z, uint32_t slot, pgd_zslot_info *info, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (check_slot(z, slot, "get_slot", err))
        return -1;
    if (!info) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: get_slot %u: info is NULL", z->name, slot);
        return pgd_zstore_sticky(z, err);
    }
    zs_slot *e = &z->table[slot];
    zs_wait w;
    wait_init(&w, z->timeout_ms);
    for (;;) {
        uint64_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (s1 == 0 || (s1 & 1)) {
            memset(info, 0, sizeof *info);
            info->seq = s1;
            info->writer_pid = seq_pid(s1);
            info->state = s1 == 0 ? PGD_ZSLOT_EMPTY
                                  : writer_alive(e, s1) ? PGD_ZSLOT_WRITING : PGD_ZSLOT_ABANDONED;
            return 0;
        }
        meta_copy(e, s1, info);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s1)
            return 0;
        if (wait_expired(&w))
            return pgd_fail(err, PGD_EBUSY, "zstore pgd.%s: slot %u changed during every look for %u ms", z->name,
                            slot, z->timeout_ms);
        wait_pause(&w);
    }
}
