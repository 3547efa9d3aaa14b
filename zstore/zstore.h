/* zstore.h: the Z-block store, one POSIX shared-memory segment per run holding a block per image. */
#ifndef PGD_ZSTORE_H
#define PGD_ZSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The layout, the slot state machine and the seqlock protocol are documented in docs/formats.md
 * (section "Z-block store"). In short: the user name NAME is the shm object "/pgd.NAME"
 * (/dev/shm/pgd.NAME); a 4096-byte header, a table of 128-byte slot entries, then one 4096-aligned
 * data block per slot holding an m x n x s array, row-major [m][n][s], in the stored dtype.
 *
 * A handle is used by one thread at a time and belongs to the process that opened it (after fork, open a
 * new handle in the child). Errors on a handle are sticky: an invalid argument or a failed system call
 * records the first error, and from then on every call on that handle returns -1 (or NULL / 0) and does
 * nothing until pgd_zstore_close. The outcome of reading or writing one slot (empty, busy, corrupt) is
 * reported through err but is not sticky. */

#define PGD_ZSTORE_NAME_MAX 200 /* characters of NAME, from [A-Za-z0-9._-] */
#define PGD_ZSTORE_ID_MAX 63    /* bytes of an image id (a NUL follows in the slot) */
#define PGD_ZSTORE_VERSION 1
#define PGD_ZSTORE_DEFAULT_TIMEOUT_MS 1000

typedef struct pgd_zstore pgd_zstore;

typedef enum pgd_zdtype { PGD_ZDTYPE_F32 = 1, PGD_ZDTYPE_F16 = 2, PGD_ZDTYPE_BF16 = 3 } pgd_zdtype;

typedef enum pgd_zslot_state {
    PGD_ZSLOT_EMPTY = 0,  /* never written */
    PGD_ZSLOT_WRITING,    /* a live writer holds it */
    PGD_ZSLOT_READY,      /* a complete block is published */
    PGD_ZSLOT_ABANDONED,  /* its writer died mid-write: the contents are invalid until rewritten */
    PGD_ZSLOT_ABORTED,    /* its writer gave up mid-write (write_abort or close): invalid until rewritten */
} pgd_zslot_state;

/* What the header says, plus whether the creator still runs (checked when the info was taken). */
typedef struct pgd_zstore_info {
    char name[PGD_ZSTORE_NAME_MAX + 1]; /* NAME, without the "pgd." prefix */
    uint32_t m, n, s;
    pgd_zdtype dtype;
    uint32_t slots;
    uint64_t block_bytes; /* m * n * s * element size */
    uint64_t slot_stride; /* block_bytes rounded up to 4096 */
    uint64_t data_offset;
    uint64_t total_size; /* bytes of the segment */
    uint32_t creator_pid;
    uint64_t creator_start; /* the creator's start time, clock ticks after boot (/proc/PID/stat field 22) */
    int64_t created_time;   /* unix seconds */
    int alive;              /* 1: the creator runs; 0: it is gone, the segment is stale */
} pgd_zstore_info;

/* One slot's metadata. */
typedef struct pgd_zslot_info {
    pgd_zslot_state state;
    char image_id[PGD_ZSTORE_ID_MAX + 1];
    int32_t label;
    uint64_t generation; /* completed writes of this slot */
    uint32_t crc;        /* CRC-32C of the block bytes as stored */
    uint32_t writer_pid; /* pid of the last writer (or of the one writing now) */
    int64_t written_ns;  /* unix time of the last completed write, nanoseconds */
    uint64_t seq;        /* the seqlock word the info was read under */
} pgd_zslot_info;

/* One entry of pgd_zstore_list. code is PGD_OK when the header was valid (then info is filled and
 * info.alive tells alive from stale); otherwise error says what is wrong and only info.name is set. */
typedef struct pgd_zstore_entry {
    pgd_zstore_info info;
    pgd_code code;
    char error[512];
} pgd_zstore_entry;

/* Create segment NAME for slots blocks of m x n x s in dtype, owned by this process. Fails with PGD_EEXIST
 * when it exists, PGD_ENOSPC when /dev/shm cannot hold it (nothing is left behind), PGD_EINVAL for a bad
 * name, zero or overflowing sizes. Every slot starts empty. Returns a writable handle or NULL. */
pgd_zstore *pgd_zstore_create(const char *name, uint32_t m, uint32_t n, uint32_t s, uint32_t slots,
                              pgd_zdtype dtype, pgd_err *err);

/* The same, recording owner_pid (a running process) as the creator instead of the caller: the segment
 * counts as stale once that process is gone. */
pgd_zstore *pgd_zstore_create_owned(const char *name, uint32_t m, uint32_t n, uint32_t s, uint32_t slots,
                                    pgd_zdtype dtype, int owner_pid, pgd_err *err);

/* Open an existing segment, read-only (writable 0) or for writing. The header is verified (magic,
 * version, CRC, consistent sizes, file size); a stale segment opens too. NULL with err on failure. */
pgd_zstore *pgd_zstore_open(const char *name, int writable, pgd_err *err);

/* Unmap and free the handle and set *z = NULL. Slots this handle was still writing (write_begin without
 * write_end) are released as aborted. Never removes the segment. *z may be NULL. */
void pgd_zstore_close(pgd_zstore **z);

/* Remove segment NAME (shm_unlink), whoever owns it. Processes that have it open keep their mapping. */
int pgd_zstore_remove(const char *name, pgd_err *err);

/* The handle's sticky first error message, or NULL while there is none ("zstore: no handle" for NULL). */
const char *pgd_zstore_error(const pgd_zstore *z);

/* How long a read or write waits for a slot another live process is writing before giving up with
 * PGD_EBUSY (0: do not wait). Default PGD_ZSTORE_DEFAULT_TIMEOUT_MS. */
int pgd_zstore_set_timeout(pgd_zstore *z, unsigned ms, pgd_err *err);

/* The header (and whether the creator is alive now). */
int pgd_zstore_get_info(pgd_zstore *z, pgd_zstore_info *info, pgd_err *err);

/* Elements of one block (m * n * s), 0 on an errored handle. */
size_t pgd_zstore_block_elems(const pgd_zstore *z);

/* The metadata of slot i without touching its data and without waiting: state EMPTY, WRITING or
 * ABANDONED come from the seqlock word; READY or ABORTED with the fields of the last write. */
int pgd_zstore_get_slot(pgd_zstore *z, uint32_t slot, pgd_zslot_info *info, pgd_err *err);

/* Write a whole block from count == m*n*s floats (converted to the stored dtype) into slot, with its image
 * id (at most 63 bytes, may be "") and label, and publish it. Waits (bounded) while another live process
 * writes the slot, then PGD_EBUSY (not sticky); takes over a slot whose writer died. */
int pgd_zstore_write(pgd_zstore *z, uint32_t slot, const float *src, size_t count, const char *image_id,
                     int32_t label, pgd_err *err);

/* Zero-copy write: take slot for writing and set *ptr to its data in the stored dtype (block_bytes,
 * row-major [m][n][s], 4096-aligned). Readers see the slot as being written until write_end, which
 * computes the CRC of the data, stores id and label, and publishes it. write_abort releases the slot
 * instead; the slot then reads as corrupt until it is written again. A bad id in write_end makes a sticky
 * error and the slot stays held until close, which aborts it. */
int pgd_zstore_write_begin(pgd_zstore *z, uint32_t slot, void **ptr, pgd_err *err);
int pgd_zstore_write_end(pgd_zstore *z, uint32_t slot, const char *image_id, int32_t label, pgd_err *err);
int pgd_zstore_write_abort(pgd_zstore *z, uint32_t slot, pgd_err *err);

/* Read slot into dst (room for cap >= m*n*s floats, converted from the stored dtype) and its metadata into
 * meta (may be NULL). Never blocks a writer. Not sticky outcomes, each -1 with err->code:
 * PGD_EEMPTY never written; PGD_EBUSY a live writer held it past the timeout; PGD_ECORRUPT abandoned,
 * aborted, or the CRC of the copy does not match. On any failure dst holds no valid data. */
int pgd_zstore_read(pgd_zstore *z, uint32_t slot, float *dst, size_t cap, pgd_zslot_info *meta, pgd_err *err);

/* The same, copying the stored bytes as they are (cap >= block_bytes). */
int pgd_zstore_read_raw(pgd_zstore *z, uint32_t slot, void *dst, size_t cap, pgd_zslot_info *meta, pgd_err *err);

/* Read the header of NAME and whether its creator is alive, without keeping it open. */
int pgd_zstore_probe(const char *name, pgd_zstore_info *info, pgd_err *err);

/* Remove NAME only when it is stale (its creator is gone): *removed = 1 then, 0 when it is alive.
 * A segment whose header cannot be read is an error and is left alone. */
int pgd_zstore_reclaim(const char *name, int *removed, pgd_err *err);

/* Every pgd segment (/dev/shm/pgd.*), sorted by name. *entries is malloc'd (free() it); *count may be 0. */
int pgd_zstore_list(pgd_zstore_entry **entries, size_t *count, pgd_err *err);

/* Helpers. */
int pgd_zstore_name_check(const char *name, pgd_err *err); /* 0 when NAME is valid */
const char *pgd_zstore_dtype_name(pgd_zdtype dtype);       /* "f32", "f16", "bf16", "?" */
int pgd_zstore_dtype_parse(const char *s, pgd_zdtype *out); /* 0, or -1 for an unknown name */
size_t pgd_zstore_dtype_size(pgd_zdtype dtype);            /* 4, 2, 2; 0 for an unknown dtype */
const char *pgd_zstore_state_name(pgd_zslot_state state);  /* "empty", "writing", ... */

#endif
