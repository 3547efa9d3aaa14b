/* serve_shm.c: the loader's shared-memory segment of PATCHES pixels: regions with generation words, lent from
 * a PATCHES_SHM answer until the sampler's RELEASE; and the sampler's checked copy out of it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "shm.h"
#include "loader/serve.h"

#define PAGE 4096u

/* The header at offset 0, host byte order; crc covers the bytes before it. */
typedef struct shm_header {
    uint32_t magic, version, header_size, nslots;
    uint64_t slot_size, total_size, run_id;
    int32_t creator_pid;
    uint32_t crc;
} shm_header;
_Static_assert(offsetof(shm_header, crc) == 44, "patch segment header layout");

static uint32_t header_crc(const shm_header *h)
{
    return pgd_crc32c(0, h, offsetof(shm_header, crc));
}

/* The generation word of the region whose pixels start at byte `pixels` of the segment. */
static _Atomic uint64_t *gen_word(const pgd_serve_shm *g, uint64_t pixels)
{
    return (_Atomic uint64_t *)(void *)(g->base + pixels - PGD_SERVE_SHM_GEN);
}

static uint64_t region_pixels(const pgd_serve_shm *g, int i)
{
    return PGD_SERVE_SHM_HEADER + (uint64_t)i * g->slot_size + PGD_SERVE_SHM_GEN;
}

/* 1 for a pgd-patch.* object whose creator (the pid in its header) no longer runs. A pid used again by another
 * process keeps its object: a leak, never a removal of a live one. */
static int patch_segment_stale(const char *name)
{
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    shm_header h;
    int stale = pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h && h.magic == PGD_SERVE_SHM_MAGIC &&
                h.crc == header_crc(&h) && h.creator_pid > 0 && kill(h.creator_pid, 0) != 0 && errno == ESRCH;
    close(fd);
    return stale;
}

int pgd_serve_shm_create(pgd_serve_shm *g, uint32_t nslots, uint64_t bytes, uint64_t run_id, pgd_err *err)
{
    memset(g, 0, sizeof *g);
    if (nslots == 0 || bytes == 0 || bytes > PGD_WIRE_MAX_PAYLOAD)
        return pgd_fail(err, PGD_EINVAL, "patch segment: %u regions of %llu bytes", nslots, (unsigned long long)bytes);
    uint64_t slot = (bytes + PGD_SERVE_SHM_GEN + PAGE - 1) / PAGE * PAGE;
    uint64_t total = PGD_SERVE_SHM_HEADER + slot * nslots; /* nslots < 2^32 and slot < 2^32: no overflow */
    pgd_shm_reclaim(PGD_SERVE_SHM_PREFIX, patch_segment_stale);
    void *m;
    if (pgd_shm_create(PGD_SERVE_SHM_PREFIX, total, g->name, sizeof g->name, &m, err) != 0) {
        pgd_err_prefix(err, "patch segment: ");
        return -1;
    }
    g->owner = 1;
    g->reg = calloc(nslots, sizeof *g->reg);
    if (!g->reg) {
        munmap(m, total);
        shm_unlink(g->name);
        memset(g, 0, sizeof *g);
        return pgd_fail(err, PGD_ENOMEM, "patch segment: %u regions", nslots);
    }
    g->base = m;
    g->size = total;
    g->slot_size = slot;
    g->nslots = nslots;
    g->run_id = run_id;
    shm_header h;
    memset(&h, 0, sizeof h);
    h.magic = PGD_SERVE_SHM_MAGIC;
    h.version = PGD_SERVE_SHM_VERSION;
    h.header_size = PGD_SERVE_SHM_HEADER;
    h.nslots = nslots;
    h.slot_size = slot;
    h.total_size = total;
    h.run_id = run_id;
    h.creator_pid = (int32_t)getpid();
    h.crc = header_crc(&h);
    memcpy(g->base, &h, sizeof h);
    return 0;
}

int pgd_serve_shm_take(pgd_serve_shm *g, uint64_t task, uint32_t attempt, uint64_t bytes, uint8_t **pixels)
{
    if (!g->base || !g->reg || bytes + PGD_SERVE_SHM_GEN > g->slot_size)
        return -1;
    for (uint32_t i = 0; i < g->nslots; i++) {
        if (g->reg[i].lent)
            continue;
        g->reg[i].lent = 1;
        g->reg[i].task = task;
        g->reg[i].attempt = attempt;
        uint64_t px = region_pixels(g, (int)i);
        _Atomic uint64_t *w = gen_word(g, px);
        /* odd: being written. The fence keeps the pixel stores after it (the seqlock's writer side). */
        atomic_store_explicit(w, atomic_load_explicit(w, memory_order_relaxed) | 1u, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
        *pixels = g->base + px;
        return (int)i;
    }
    return -1;
}

/* The region's generation from odd (being written) to the next even value, which it returns. */
static uint64_t complete(pgd_serve_shm *g, int region)
{
    _Atomic uint64_t *w = gen_word(g, region_pixels(g, region));
    uint64_t gen = (atomic_load_explicit(w, memory_order_relaxed) | 1u) + 1;
    atomic_store_explicit(w, gen, memory_order_release);
    return gen;
}

void pgd_serve_shm_finish(pgd_serve_shm *g, int region, uint64_t bytes, pgd_wire_shmref *ref)
{
    memset(ref, 0, sizeof *ref);
    ref->generation = complete(g, region);
    ref->offset = region_pixels(g, region);
    ref->length = bytes;
    ref->slot = (uint32_t)region;
}

void pgd_serve_shm_abandon(pgd_serve_shm *g, int region)
{
    if (region < 0 || (uint32_t)region >= g->nslots || !g->reg)
        return;
    complete(g, region);
    g->reg[region].lent = 0;
}

int pgd_serve_shm_release(pgd_serve_shm *g, uint64_t task, uint32_t attempt)
{
    for (uint32_t i = 0; g->reg && i < g->nslots; i++) {
        if (!g->reg[i].lent || g->reg[i].task != task || g->reg[i].attempt != attempt)
            continue;
        g->reg[i].lent = 0;
        if (g->owner && !g->unlinked && shm_unlink(g->name) == 0)
            g->unlinked = 1;
        return 0;
    }
    return -1;
}

uint32_t pgd_serve_shm_lent(const pgd_serve_shm *g)
{
    uint32_t n = 0;
    for (uint32_t i = 0; g->reg && i < g->nslots; i++)
        n += g->reg[i].lent != 0;
    return n;
}

int pgd_serve_shm_attach(pgd_serve_shm *g, const char *name, pgd_err *err)
{
    memset(g, 0, sizeof *g);
    size_t plen = strlen(PGD_SERVE_SHM_PREFIX);
    if (name[0] != '/' || strncmp(name + 1, PGD_SERVE_SHM_PREFIX, plen) != 0 || strlen(name) >= sizeof g->name)
        return pgd_fail(err, PGD_EFORMAT, "patch segment: '%s' is not a /" PGD_SERVE_SHM_PREFIX "* name", name);
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return pgd_fail_errno(err, errno == ENOENT ? PGD_ENOENT : PGD_EIO, "patch segment: shm_open %s", name);
    struct stat st;
    shm_header h;
    if (fstat(fd, &st) != 0) {
        pgd_fail_errno(err, PGD_EIO, "patch segment: fstat %s", name);
        goto fail;
    }
    if ((uint64_t)st.st_size < sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h ||
        h.magic != PGD_SERVE_SHM_MAGIC || h.version != PGD_SERVE_SHM_VERSION || h.crc != header_crc(&h) ||
        h.header_size != PGD_SERVE_SHM_HEADER || h.nslots == 0 || h.slot_size % PAGE || h.slot_size == 0 ||
        h.total_size != PGD_SERVE_SHM_HEADER + h.slot_size * h.nslots || h.total_size > (uint64_t)st.st_size) {
        pgd_fail(err, PGD_EFORMAT, "patch segment %s: bad header", name);
        goto fail;
    }
    void *m = mmap(NULL, h.total_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        pgd_fail_errno(err, PGD_EIO, "patch segment: mmap %s", name);
        goto fail;
    }
    close(fd);
    snprintf(g->name, sizeof g->name, "%s", name);
    g->base = m;
    g->size = h.total_size;
    g->slot_size = h.slot_size;
    g->nslots = h.nslots;
    g->run_id = h.run_id;
    return 0;
fail:
    close(fd);
    return -1;
}

int pgd_serve_shm_copy(const pgd_serve_shm *g, const pgd_wire_shmref *ref, uint8_t *dst, pgd_err *err)
{
    if (!g->base || ref->offset < PGD_SERVE_SHM_HEADER + PGD_SERVE_SHM_GEN || ref->offset > g->size ||
        ref->length > g->size - ref->offset)
        return pgd_fail(err, PGD_EFORMAT, "patch segment %s: offset %llu + length %llu is outside its %llu bytes",
                        g->name, (unsigned long long)ref->offset, (unsigned long long)ref->length,
                        (unsigned long long)g->size);
    _Atomic uint64_t *w = gen_word(g, ref->offset);
    uint64_t before = atomic_load_explicit(w, memory_order_acquire);
    if (before == ref->generation)
        memcpy(dst, g->base + ref->offset, ref->length);
    atomic_thread_fence(memory_order_acquire);
    uint64_t after = atomic_load_explicit(w, memory_order_relaxed);
    if (before != ref->generation || after != before)
        return pgd_fail(err, PGD_EBUSY, "patch segment %s: region %u is at generation %llu, the answer names %llu",
                        g->name, ref->slot, (unsigned long long)(before != ref->generation ? before : after),
                        (unsigned long long)ref->generation);
    return 0;
}

void pgd_serve_shm_close(pgd_serve_shm *g)
{
    if (g->base)
        munmap(g->base, g->size);
    if (g->owner && !g->unlinked)
        shm_unlink(g->name);
    free(g->reg);
    memset(g, 0, sizeof *g);
}
