/* batch_ring.h: the shared-memory segment of BATCH pixel slots that a sampler shares with a consumer on its host. */
#ifndef PGD_BATCH_RING_H
#define PGD_BATCH_RING_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "wire.h"

/* Layout (docs/formats.md, "BATCH pixel segment"): a 4096-byte header, then nslots slots of slot_size bytes
 * each (a multiple of 4096), slot i at data_offset + i x slot_size. Host byte order: it never leaves the host.
 * The object is /dev/shm/pgd-batch.PID.N, mode 0600, made by the sampler and removed when it exits; one
 * left behind by a sampler that died is stale (its creator's pid and start time no longer match a running
 * process) and the next sampler removes it. */
#define PGD_BATCH_RING_MAGIC 0x52444750u /* the bytes "PGDR" */
#define PGD_BATCH_RING_VERSION 1
#define PGD_BATCH_RING_HEADER 4096
#define PGD_BATCH_RING_PREFIX "pgd-batch."

typedef struct pgd_batch_ring {
    char name[PGD_WIRE_SEGMENT_MAX + 1]; /* "/pgd-batch.PID.N" */
    uint8_t *base;                       /* the mapping (read-only when attached) */
    uint64_t size;                       /* bytes mapped: the whole segment */
    uint32_t nslots;
    uint64_t slot_size, data_offset;
    int owner; /* made by this process: close removes the name */
} pgd_batch_ring;

/* Make a segment of nslots slots of at least slot_bytes each (rounded up to 4096), mode 0600, under a new
 * unique name; record the calling process as its creator. Returns 0, or -1 (PGD_EIO naming the object, e.g.
 * when /dev/shm is full; PGD_EINVAL for 0 slots or a size that overflows). r is zeroed first. */
int pgd_batch_ring_create(pgd_batch_ring *r, uint32_t nslots, uint64_t slot_bytes, uint64_t run_id, pgd_err *err);

/* Map the segment `name` ("/pgd-batch....") read-only and check its header (magic, version, CRC, sizes
 * against the object's size). Returns 0, or -1: PGD_ENOENT when there is no such object (the consumer runs on
 * another host, or the sampler is gone), PGD_EFORMAT for a bad header, PGD_EIO otherwise. */
int pgd_batch_ring_attach(pgd_batch_ring *r, const char *name, pgd_err *err);

/* Slot i's bytes (NULL when i is out of range) and its offset from the segment's start. */
uint8_t *pgd_batch_ring_slot(const pgd_batch_ring *r, uint32_t i);
uint64_t pgd_batch_ring_offset(const pgd_batch_ring *r, uint32_t i);

/* Unmap; the creator also removes the name (processes that still map it keep their mapping). Safe on a
 * zeroed or closed ring. */
void pgd_batch_ring_close(pgd_batch_ring *r);

/* Remove every /dev/shm/pgd-batch.* of this user whose creator is gone. Segments whose header cannot be read
 * are left alone. Returns how many were removed. */
unsigned pgd_batch_ring_reclaim_stale(void);

/* 1 when the segment `name` exists and its creator runs, 0 when it is stale, -1 when it cannot be read. */
int pgd_batch_ring_alive(const char *name);

#endif
