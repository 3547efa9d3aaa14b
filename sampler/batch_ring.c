/* batch_ring.c: the shared-memory segment of BATCH pixel slots: create, attach, stale detection, removal. */
#include "sampler/batch_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "shm.h"

#define PAGE 4096u

/* The header at offset 0, host byte order. crc covers the bytes before it. */
typedef struct ring_header {
    uint32_t magic, version, header_size, nslots;
    uint64_t slot_size, data_offset, total_size, run_id;
    int32_t creator_pid;
    uint32_t reserved;
    uint64_t creator_start; /* /proc/PID/stat field 22 */
    uint32_t crc;
} ring_header;
_Static_assert(offsetof(ring_header, crc) == 64, "ring header layout");

static uint32_t header_crc(const ring_header *h)
{
    return pgd_crc32c(0, h, offsetof(ring_header, crc));
}

int pgd_batch_ring_create(pgd_batch_ring *r, uint32_t nslots, uint64_t slot_bytes, uint64_t run_id, pgd_err *err)
{
    memset(r, 0, sizeof *r);
    uint64_t slot = (slot_bytes + PAGE - 1) / PAGE * PAGE;
    if (nslots == 0 || slot == 0 || slot > (UINT64_MAX - PAGE) / nslots)
        return pgd_fail(err, PGD_EINVAL, "batch ring: %u slots of %llu bytes", nslots, (unsigned long long)slot_bytes);
    uint64_t total = PGD_BATCH_RING_HEADER + slot * nslots;
    void *m;
    if (pgd_shm_create(PGD_BATCH_RING_PREFIX, total, r->name, sizeof r->name, &m, err) != 0) {
        pgd_err_prefix(err, "batch ring: ");
        return -1;
    }
    r->owner = 1;
    r->base = m;
    r->size = total;
    r->nslots = nslots;
    r->slot_size = slot;
    r->data_offset = PGD_BATCH_RING_HEADER;
    ring_header h;
    memset(&h, 0, sizeof h);
    h.magic = PGD_BATCH_RING_MAGIC;
    h.version = PGD_BATCH_RING_VERSION;
    h.header_size = PGD_BATCH_RING_HEADER;
    h.nslots = nslots;
    h.slot_size = slot;
    h.data_offset = PGD_BATCH_RING_HEADER;
    h.total_size = total;
    h.run_id = run_id;
    h.creator_pid = (int32_t)getpid();
    h.creator_start = pgd_proc_start(getpid());
    h.crc = header_crc(&h);
    memcpy(r->base, &h, sizeof h);
    return 0;
}

/* Check a header against the object's size: 0, or -1 with PGD_EFORMAT naming the fault. */
static int check_header(const char *name, const ring_header *h, uint64_t file_size, pgd_err *err)
{
    if (h->magic != PGD_BATCH_RING_MAGIC)
        return pgd_fail(err, PGD_EFORMAT, "batch ring %s: bad magic 0x%08x", name, h->magic);
    if (h->version != PGD_BATCH_RING_VERSION)
        return pgd_fail(err, PGD_EFORMAT, "batch ring %s: version %u, this build reads %d", name, h->version,
                        PGD_BATCH_RING_VERSION);
    if (h->crc != header_crc(h))
        return pgd_fail(err, PGD_EFORMAT, "batch ring %s: header crc mismatch", name);
    if (h->header_size != PGD_BATCH_RING_HEADER || h->data_offset != PGD_BATCH_RING_HEADER || h->nslots == 0 ||
        h->slot_size == 0 || h->slot_size % PAGE || h->slot_size > (UINT64_MAX - PAGE) / h->nslots ||
        h->total_size != h->data_offset + h->slot_size * h->nslots || h->total_size > file_size)
        return pgd_fail(err, PGD_EFORMAT, "batch ring %s: inconsistent sizes (%u slots of %llu bytes, %llu of %llu)",
                        name, h->nslots, (unsigned long long)h->slot_size, (unsigned long long)h->total_size,
                        (unsigned long long)file_size);
    return 0;
}

/* Open name read-only and read its header; fd is left open on success. */
static int read_header(const char *name, int *fd_out, ring_header *h, uint64_t *file_size, pgd_err *err)
{
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return pgd_fail_errno(err, errno == ENOENT ? PGD_ENOENT : PGD_EIO, "batch ring: shm_open %s", name);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        pgd_fail_errno(err, PGD_EIO, "batch ring: fstat %s", name);
        goto fail;
    }
    if ((uint64_t)st.st_size < sizeof *h || pread(fd, h, sizeof *h, 0) != (ssize_t)sizeof *h) {
        pgd_fail(err, PGD_EFORMAT, "batch ring %s: %lld bytes, no header", name, (long long)st.st_size);
        goto fail;
    }
    *file_size = (uint64_t)st.st_size;
    if (check_header(name, h, *file_size, err) != 0)
        goto fail;
    *fd_out = fd;
    return 0;
fail:
    close(fd);
    return -1;
}

int pgd_batch_ring_attach(pgd_batch_ring *r, const char *name, pgd_err *err)
{
    memset(r, 0, sizeof *r);
    if (strlen(name) >= sizeof r->name)
        return pgd_fail(err, PGD_EINVAL, "batch ring: name of %zu bytes", strlen(name));
    int fd;
    ring_header h;
    uint64_t file_size;
    if (read_header(name, &fd, &h, &file_size, err) != 0)
        return -1;
    void *m = mmap(NULL, h.total_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return pgd_fail_errno(err, PGD_EIO, "batch ring: mmap %s", name);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->base = m;
    r->size = h.total_size;
    r->nslots = h.nslots;
    r->slot_size = h.slot_size;
    r->data_offset = h.data_offset;
    return 0;
}

uint8_t *pgd_batch_ring_slot(const pgd_batch_ring *r, uint32_t i)
{
    return r->base && i < r->nslots ? r->base + pgd_batch_ring_offset(r, i) : NULL;
}

uint64_t pgd_batch_ring_offset(const pgd_batch_ring *r, uint32_t i)
{
    return r->data_offset + (uint64_t)i * r->slot_size;
}

void pgd_batch_ring_close(pgd_batch_ring *r)
{
    if (r->base)
        munmap(r->base, r->size);
    if (r->owner)
        shm_unlink(r->name);
    memset(r, 0, sizeof *r);
}

int pgd_batch_ring_alive(const char *name)
{
    int fd;
    ring_header h;
    uint64_t size;
    if (read_header(name, &fd, &h, &size, NULL) != 0)
        return -1;
    close(fd);
    return pgd_proc_alive(h.creator_pid, h.creator_start);
}

static int ring_stale(const char *name)
{
    return pgd_batch_ring_alive(name) == 0;
}

unsigned pgd_batch_ring_reclaim_stale(void)
{
    return pgd_shm_reclaim(PGD_BATCH_RING_PREFIX, ring_stale);
}
