/* serve.h: `pgd-loader serve`, the loader process: decode jobs from the sampler over ZeroMQ, answer each;
 * and the loader's shared-memory segment of PATCHES pixels, which the sampler reads. */
#ifndef PGD_SERVE_H
#define PGD_SERVE_H

#include <stdint.h>

#include "err.h"
#include "wire.h"

/* Run the loader process until the sampler says STOP or a signal arrives. argv[0] is the subcommand
 * ("serve") and is skipped; the rest are options for the shared config module (--connect ENDPOINT is
 * required; --help lists the others; docs/loader-process.md describes them and the protocol).
 *
 * It connects a DEALER socket to the sampler's ROUTER, sends HELLO, then serves JOB messages one at a time,
 * answering each with PATCHES or JOB_ERROR, with HEARTBEATs in between (also while a long job decodes).
 * Bad slides and bad messages never stop it. SIGINT / SIGTERM: the job being decoded is finished and
 * answered, then it returns; a second signal ends the process at once (_exit with PGD_EXIT_FAIL). Installs
 * its own SIGINT / SIGTERM handlers and restores the previous ones before returning.
 *
 * Returns a process exit code: PGD_EXIT_OK after STOP or a signal, PGD_EXIT_USAGE for a bad option or
 * endpoint (nothing was done), PGD_EXIT_FAIL when the socket fails. Call it at most once at a time per
 * process (signal handlers are process-wide), after any fork (slides are opened in this process). */
int pgd_loader_serve_main(int argc, char **argv);

/* --- the PATCHES pixel segment (docs/formats.md, "PATCHES pixel segment") -------------------------------
 * A loader on the sampler's host decodes a job straight into a region of a POSIX shared-memory object of its
 * own (/dev/shm/pgd-patch.PID.N, mode 0600) and answers PATCHES_SHM: only the reference crosses the socket,
 * and the sampler copies the pixels once, into their place in the BATCH. A region is lent from the answer
 * until the sampler's RELEASE (task_id, attempt). Each region starts with a 64-byte word, its generation:
 * odd while it is written, even when complete; the answer names the even value, and the reader checks it
 * before and after its copy (a seqlock), so a region written again meanwhile is never taken for the answer.
 * A stale writer (a loader declared dead that wakes up) only ever writes its own segment. */
#define PGD_SERVE_SHM_MAGIC 0x50444750u /* the bytes "PGDP" */
#define PGD_SERVE_SHM_VERSION 1
#define PGD_SERVE_SHM_HEADER 4096
#define PGD_SERVE_SHM_GEN 64 /* the generation word's room before a region's pixels */
#define PGD_SERVE_SHM_PREFIX "pgd-patch."

typedef struct pgd_serve_region {
    uint64_t task;
    uint32_t attempt;
    int lent; /* 1 from take to release (or abandon) */
} pgd_serve_region;

typedef struct pgd_serve_shm {
    char name[PGD_WIRE_SEGMENT_MAX + 1]; /* "/pgd-patch.PID.N" */
    uint8_t *base;
    uint64_t size, slot_size;
    uint32_t nslots;
    uint64_t run_id;
    int owner;    /* made here: close removes the name unless it is gone already */
    int unlinked; /* the name was removed (the reader has it mapped) */
    pgd_serve_region *reg; /* owner only: nslots */
} pgd_serve_shm;

/* Make a segment of nslots regions of at least bytes pixels each, for run_id; stale pgd-patch.* objects of
 * this user whose creator is gone are removed first. g is zeroed first. 0, or -1 (PGD_EINVAL for sizes that
 * do not fit, PGD_EIO naming the object). */
int pgd_serve_shm_create(pgd_serve_shm *g, uint32_t nslots, uint64_t bytes, uint64_t run_id, pgd_err *err);

/* A free region for job (task, attempt) holding bytes of pixels: its index, with *pixels where to write;
 * its generation is made odd (being written). -1 when every region is lent or bytes does not fit a region. */
int pgd_serve_shm_take(pgd_serve_shm *g, uint64_t task, uint32_t attempt, uint64_t bytes, uint8_t **pixels);

/* The region's pixels are complete: its generation is made even, and ref describes it for PATCHES_SHM. The
 * region stays lent until pgd_serve_shm_release. */
void pgd_serve_shm_finish(pgd_serve_shm *g, int region, uint64_t bytes, pgd_wire_shmref *ref);

/* Give up a taken region without answering (the job failed or was abandoned). */
void pgd_serve_shm_abandon(pgd_serve_shm *g, int region);

/* The reader is done with the region of (task, attempt): it is free again, and the first release of the
 * segment removes its name (the reader has mapped it, so a killed loader leaves nothing behind). 0, or -1
 * when no region holds that job. */
int pgd_serve_shm_release(pgd_serve_shm *g, uint64_t task, uint32_t attempt);

/* Regions lent now. */
uint32_t pgd_serve_shm_lent(const pgd_serve_shm *g);

/* Reader side: map the segment `name` read-only and check its header. 0, or -1: PGD_ENOENT when there is no
 * such object (the loader is on another host), PGD_EFORMAT for a name without the pgd-patch. prefix or a bad
 * header, PGD_EIO otherwise. */
int pgd_serve_shm_attach(pgd_serve_shm *g, const char *name, pgd_err *err);

/* Reader side: copy the pixels ref names into dst (ref->length bytes). 0, or -1: PGD_EFORMAT when the
 * region lies outside the segment, PGD_EBUSY when its generation is not ref's before or after the copy (it
 * was written again: dst must not be used). */
int pgd_serve_shm_copy(const pgd_serve_shm *g, const pgd_wire_shmref *ref, uint8_t *dst, pgd_err *err);

/* Unmap; the creator removes the name if it is still there. Safe on a zeroed or closed segment. */
void pgd_serve_shm_close(pgd_serve_shm *g);

#endif
