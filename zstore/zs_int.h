/* zs_int.h: the zstore segment layout and the handle, shared by the zstore sources only. */
#ifndef PGD_ZS_INT_H
#define PGD_ZS_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "zstore.h"

#define ZS_MAGIC "PGDZSTOR"
#define ZS_PAGE 4096u
#define ZS_HEADER_SIZE 4096u
#define ZS_SLOT_SIZE 128u
#define ZS_HEADER_CRC_LEN 104u /* the CRC covers header bytes [0, 104) */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "zstore needs lock-free 64-bit atomics");

/* The header as stored (native byte order: the segment never leaves the host). Offsets in docs. */
typedef struct zs_header {
    char magic[8];              /* 0 */
    uint32_t version;           /* 8 */
    uint32_t header_size;       /* 12 */
    uint32_t m, n, s;           /* 16, 20, 24 */
    uint32_t dtype;             /* 28 */
    uint32_t slots;             /* 32 */
    uint32_t slot_entry_size;   /* 36 */
    uint64_t slot_table_offset; /* 40 */
    uint64_t data_offset;       /* 48 */
    uint64_t block_bytes;       /* 56 */
    uint64_t slot_stride;       /* 64 */
    uint64_t total_size;        /* 72 */
    uint32_t creator_pid;       /* 80 */
    uint32_t reserved0;         /* 84 */
    uint64_t creator_start;     /* 88 */
    int64_t created_time;       /* 96 */
    uint32_t header_crc;        /* 104 */
} zs_header;
_Static_assert(sizeof(zs_header) == 112, "header layout");

/* One slot table entry. seq is the seqlock word: bits 63..32 the pid of the process that last changed
 * it, bits 31..0 a count, odd while a write is in progress. */
typedef struct zs_slot {
    _Atomic uint64_t seq;          /* 0 */
    _Atomic uint64_t owner_tag;    /* 8: the seq value whose writer's start time is in writer_start */
    _Atomic uint64_t writer_start; /* 16 */
    uint64_t generation;           /* 24 */
    int64_t written_ns;            /* 32 */
    uint32_t crc;                  /* 40 */
    int32_t label;                 /* 44 */
    uint32_t state;                /* 48: pgd_zslot_state as the last writer left it */
    uint32_t reserved[3];          /* 52 */
    char image_id[64];             /* 64 */
} zs_slot;
_Static_assert(sizeof(zs_slot) == ZS_SLOT_SIZE, "slot entry layout");

struct pgd_zstore {
    char name[PGD_ZSTORE_NAME_MAX + 1];
    int writable;
    unsigned char *base; /* the whole mapping */
    size_t map_size;
    zs_header hdr;       /* a private copy of the verified header */
    zs_slot *table;
    pid_t pid;           /* the process that opened the handle */
    uint64_t start;      /* its start time */
    unsigned timeout_ms;
    uint64_t *held;      /* per slot: the odd seq value this handle holds, 0 when none (writable only) */
    void *scratch;       /* one block, for f16/bf16 reads (lazily allocated) */
    pgd_err err;         /* sticky */
};

/* The layout derived from a shape, overflow-checked: 0, or -1 with err. */
int pgd_zstore_layout(const char *name, uint32_t m, uint32_t n, uint32_t s, uint32_t slots, pgd_zdtype dtype,
                      zs_header *h, pgd_err *err);

/* Check a header read from a segment of file_size bytes: 0, or -1 with a clear err. */
int pgd_zstore_header_check(const char *name, const zs_header *h, uint64_t file_size, pgd_err *err);


/* Copy the handle's sticky error into err (unless err already holds one) and return -1. Raise a sticky
 * error with pgd_fail(&z->err, ...) first. */
int pgd_zstore_sticky(pgd_zstore *z, pgd_err *err);

/* The common entry check of every handle call: a NULL handle, or one with a sticky error, fails. */
#define ZS_ENTER(z, err)                                                                                     \
    do {                                                                                                     \
        if (!(z))                                                                                            \
            return pgd_fail((err), PGD_EINVAL, "zstore: no handle");                                        \
        if ((z)->err.code != PGD_OK)                                                                         \
            return pgd_zstore_sticky((z), (err));                                                            \
    } while (0)

/* Release a slot held by this handle as aborted (close and write_abort). */
void pgd_zstore_slot_abort(pgd_zstore *z, uint32_t slot);

#endif
