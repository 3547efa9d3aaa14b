/* wire.h: the pgd wire format, version 1 (revision 3): header layout, message types, encode, validate, decode. */
#ifndef PGD_WIRE_H
#define PGD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Every message is multipart: frame 0 is a 128-byte little-endian header, then 0..5 payload frames whose
 * lengths the header states. docs/formats.md has the byte layout and every validation rule. */
#define PGD_WIRE_MAGIC 0x57444750u                 /* the bytes "PGDW" */
#define PGD_WIRE_VERSION 1
#define PGD_WIRE_HEADER_SIZE 128
#define PGD_WIRE_MAX_FRAMES 5                      /* payload frames after the header */
#define PGD_WIRE_MAX_PAYLOAD ((uint64_t)1 << 31)   /* bytes per payload frame (2 GiB) */
#define PGD_WIRE_MAX_IMAGES 4096
#define PGD_WIRE_MAX_PATCH 8192
#define PGD_WIRE_MAX_GRID 65535
#define PGD_WIRE_CELL_SIZE 8                       /* u32 row, u32 col */
#define PGD_WIRE_ID_SLOT 64                        /* one image id, NUL-terminated and NUL-padded */
#define PGD_WIRE_LABEL_SIZE 4                      /* i32 */
#define PGD_WIRE_SPEC_SIZE 32                      /* JOB spec frame */
#define PGD_WIRE_NAME_MAX 255                      /* HELLO name bytes */
#define PGD_WIRE_TEXT_MAX 4095                     /* JOB path, JOB_ERROR reason bytes */
#define PGD_WIRE_SHMREF_SIZE 32                    /* BATCH_SHM: where the pixels lie in the segment */
#define PGD_WIRE_SEGMENT_MAX 255                   /* BATCH_SHM: the shared-memory object's name */
#define PGD_WIRE_SHM_ALIGN 64                      /* BATCH_SHM: offsets are multiples of this */
#define PGD_WIRE_REVISION 3                        /* additions within version 1 (docs/formats.md) */

typedef enum pgd_wire_type {
    PGD_WIRE_HELLO = 1,     /* loader -> sampler: registration, credit = jobs it can hold; frame: name */
    PGD_WIRE_HEARTBEAT = 2, /* both ways, no frames */
    PGD_WIRE_JOB = 3,       /* sampler -> loader: frames spec, path, cells */
    PGD_WIRE_PATCHES = 4,   /* loader -> sampler: a job's result; frames pixels, cells */
    PGD_WIRE_JOB_ERROR = 5, /* loader -> sampler: a job failed; frame: reason */
    PGD_WIRE_STOP = 6,      /* sampler -> loader or trainer, no frames */
    PGD_WIRE_BATCH = 7,     /* sampler -> trainer: frames pixels, cells, ids, labels */
    PGD_WIRE_CREDIT = 8,    /* trainer -> sampler: credit, patches_per_image wanted; no frames */
    PGD_WIRE_END = 9,       /* sampler -> trainer: the stream is over; no frames */
    PGD_WIRE_BATCH_SHM = 10, /* sampler -> trainer (revision 2): a BATCH whose pixels lie in shared memory;
                              * frames shmref, cells, ids, labels, segment */
    PGD_WIRE_RELEASE = 11,  /* trainer -> sampler (revision 2): BATCH_SHM task_id read, its memory is free
                             * again; credit = more messages granted (0 allowed); no frames. sampler -> loader
                             * (revision 3): the region of PATCHES_SHM task_id / attempt is read */
    PGD_WIRE_PATCHES_SHM = 12, /* loader -> sampler (revision 3): a PATCHES whose pixels lie in the loader's
                                * shared memory; frames shmref, cells, segment */
} pgd_wire_type;
#define PGD_WIRE_TYPE_MAX 12

/* BATCH flags: exactly one phase flag, plus the optional markers. Other types take no flags. */
#define PGD_WIRE_FLAG_FILL 0x01u      /* Z-fill sweep, no gradient */
#define PGD_WIRE_FLAG_INNER 0x02u     /* inner iteration, with gradient */
#define PGD_WIRE_FLAG_EVAL 0x04u      /* evaluation */
#define PGD_WIRE_FLAG_INFER 0x08u     /* inference */
#define PGD_WIRE_FLAG_BATCH_END 0x10u /* last message of this image batch */
#define PGD_WIRE_FLAG_EPOCH_END 0x20u /* last message of this epoch */
#define PGD_WIRE_PHASE_MASK 0x0Fu

/* CREDIT flags (revision 2). */
#define PGD_WIRE_CREDIT_SHM 0x01u /* the consumer reads BATCH_SHM (it runs on the sampler's host) */

/* HELLO and JOB flags (revision 3). */
#define PGD_WIRE_HELLO_SHM 0x01u /* the loader can answer PATCHES_SHM (it offers; the sampler decides per JOB) */
#define PGD_WIRE_JOB_SHM 0x01u   /* the sampler takes a PATCHES_SHM answer to this JOB */

/* JOB spec geometry. */
#define PGD_WIRE_GEOM_FIT 1u
#define PGD_WIRE_GEOM_NATIVE 2u

/* Why a message was rejected: one code per kind of fault, for counting and log-once bookkeeping. */
typedef enum pgd_wire_reason {
    PGD_WIRE_R_OK = 0,
    PGD_WIRE_R_HEADER_SIZE, /* frame 0 is not 128 bytes */
    PGD_WIRE_R_MAGIC,
    PGD_WIRE_R_VERSION,
    PGD_WIRE_R_CRC,
    PGD_WIRE_R_TYPE,      /* unknown message type */
    PGD_WIRE_R_RESERVED,  /* a reserved header or spec field is not 0 */
    PGD_WIRE_R_FLAGS,
    PGD_WIRE_R_COUNT,     /* a count or id field out of its range for the type */
    PGD_WIRE_R_NFRAMES,   /* wrong number of frames */
    PGD_WIRE_R_FRAME_LEN, /* a frame length differs from what the counts imply */
    PGD_WIRE_R_TOO_LARGE, /* a frame would exceed PGD_WIRE_MAX_PAYLOAD */
    PGD_WIRE_R_SPEC,      /* bad JOB spec */
    PGD_WIRE_R_TEXT,      /* text frame with a NUL or invalid UTF-8 */
    PGD_WIRE_R_CELL,      /* cell outside the grid */
    PGD_WIRE_R_ID,        /* malformed image id slot */
    PGD_WIRE_R_LABEL,     /* label below -1 */
    PGD_WIRE_R_SHMREF,    /* bad shmref frame (alignment, length, generation) */
    PGD_WIRE_R_MAX
} pgd_wire_reason;

/* The header, field by field (the in-memory struct is never sent as it is: see pgd_wire_header_pack). */
typedef struct pgd_wire_header {
    uint32_t magic;
    uint16_t version;
    uint16_t type;     /* pgd_wire_type */
    uint32_t flags;
    uint32_t nframes;  /* payload frames that follow */
    uint64_t run_id;
    uint64_t task_id;  /* job id for JOB / PATCHES / JOB_ERROR, a message sequence otherwise */
    uint32_t epoch;
    uint32_t batch;
    uint32_t step;
    uint32_t attempt;
    uint32_t n_images;
    uint32_t patches_per_image;
    uint32_t patch_size;
    uint32_t channels;
    uint32_t grid_m;
    uint32_t grid_n;
    uint32_t credit;
    uint32_t reserved0;
    uint64_t frame_len[PGD_WIRE_MAX_FRAMES];
    uint32_t reserved1;
    uint32_t crc;
} pgd_wire_header;

/* A frame: bytes owned by someone else. */
typedef struct pgd_wire_frame {
    const void *data;
    size_t len;
} pgd_wire_frame;

/* The parsed JOB spec frame (32 bytes on the wire, reserved fields 0). */
typedef struct pgd_wire_job_spec {
    uint32_t geometry; /* PGD_WIRE_GEOM_FIT or PGD_WIRE_GEOM_NATIVE */
    uint32_t fit_size; /* fit: the S of the S x S square (>= patch_size); native: 0 */
    int32_t level;     /* native: pyramid level >= 0, or -1 when mpp picks it; fit: -1 */
    double mpp;        /* native with level -1: microns per pixel (finite, > 0); otherwise 0 */
} pgd_wire_job_spec;

/* The parsed shmref frame of BATCH_SHM and PATCHES_SHM (32 bytes on the wire, reserved fields 0). */
typedef struct pgd_wire_shmref {
    uint64_t offset;     /* bytes from the start of the segment; a multiple of PGD_WIRE_SHM_ALIGN */
    uint64_t length;     /* the pixels' bytes: n_images x ppi x p x p x c, as a pixels frame */
    uint32_t slot;       /* the sender's slot number (for logs) */
    uint64_t generation; /* PATCHES_SHM: the region's generation, even and >= 2; BATCH_SHM: 0 */
} pgd_wire_shmref;

/* A decoded message. Every pointer points into the frames given to pgd_wire_decode (no copies): it is
 * valid as long as they are. Fields a type does not carry are NULL / 0. Payload arrays are unaligned
 * little-endian bytes: read them with the accessors below. */
typedef struct pgd_wire_msg {
    pgd_wire_header h;
    pgd_wire_reason reason;  /* PGD_WIRE_R_OK after a successful decode, else why it failed */
    const uint8_t *pixels;   /* PATCHES, BATCH: uint8, image-major, patch-major, HWC */
    size_t pixels_len;
    const uint8_t *cells;    /* JOB, PATCHES, BATCH: n_cells x (u32 row, u32 col) */
    size_t n_cells;          /* n_images x patches_per_image */
    const uint8_t *ids;      /* BATCH: n_images x 64-byte slots */
    const uint8_t *labels;   /* BATCH: n_images x i32 */
    const char *text;        /* HELLO name, JOB path, JOB_ERROR reason, BATCH_SHM / PATCHES_SHM segment: NOT
                              * NUL-terminated */
    size_t text_len;
    pgd_wire_job_spec spec;  /* JOB */
    pgd_wire_shmref shm;     /* BATCH_SHM, PATCHES_SHM (pixels is then NULL: they lie in the segment) */
} pgd_wire_msg;

/* "HELLO", "BATCH", ...; "UNKNOWN" for anything else. */
const char *pgd_wire_type_name(unsigned type);

/* "crc", "frame_len", ...: a short name for a reject reason. */
const char *pgd_wire_reason_name(pgd_wire_reason reason);

/* Zero h and set magic, version and type. Fill in ids, counts and flags, then call pgd_wire_encode. */
void pgd_wire_header_init(pgd_wire_header *h, pgd_wire_type type);

/* Low level: write every field of h at its offset and the CRC-32C of bytes 0..123 at offset 124 (h->crc is
 * ignored). Validates nothing: use pgd_wire_encode to build messages. */
void pgd_wire_header_pack(const pgd_wire_header *h, uint8_t out[PGD_WIRE_HEADER_SIZE]);

/* Low level: read every field (crc included) from 128 bytes. Checks nothing: pgd_wire_decode does. */
void pgd_wire_header_unpack(const uint8_t in[PGD_WIRE_HEADER_SIZE], pgd_wire_header *h);

/* Build the header frame of a message: copies h, sets magic, version, nframes = n and frame_len[] from the
 * payload frames (unused entries 0), validates the header and every payload byte exactly as the decoder
 * will, and writes the 128 header bytes with their CRC to out. Returns 0, or -1 (PGD_EINVAL, naming the
 * field at fault) without writing out: it never produces a message a receiver would reject. */
int pgd_wire_encode(const pgd_wire_header *h, const pgd_wire_frame *frames, size_t n,
                    uint8_t out[PGD_WIRE_HEADER_SIZE], pgd_err *err);

/* Decode a received message: frames[0] is the header, frames[1..n-1] the payload. Checks the header size,
 * magic, version and CRC, then every header field for the type, the frame count and each frame length,
 * and only then the payload bytes (cells in range, ids, labels, text, spec). On success fills msg, which
 * points into the frames (zero copy), and returns 0. On failure returns -1 with PGD_EFORMAT (PGD_ECORRUPT
 * for a CRC mismatch), an error naming the field and values, and msg->reason set; the rest of msg is then
 * unspecified. */
int pgd_wire_decode(const pgd_wire_frame *frames, size_t n, pgd_wire_msg *msg, pgd_err *err);

/* Accessors for a decoded message. Out-of-range indexes give 0 / -1 / NULL instead of reading past the
 * frame. Cell i in [0, n_cells): row and column in the grid. */
int pgd_wire_cell(const pgd_wire_msg *m, size_t i, uint32_t *row, uint32_t *col);
/* Label of image i (BATCH): >= 0 a class, -1 unknown. */
int32_t pgd_wire_label(const pgd_wire_msg *m, size_t i);
/* Id of image i (BATCH) as a NUL-terminated string inside the frame. */
const char *pgd_wire_id(const pgd_wire_msg *m, size_t i);
/* Pixels of patch k of image i (patch_size^2 x channels bytes, HWC). For PATCHES the image is 0. */
const uint8_t *pgd_wire_patch(const pgd_wire_msg *m, size_t image, size_t k);
/* Copy the text frame into buf as a NUL-terminated string (truncated to cap - 1). Returns text_len. */
size_t pgd_wire_text(const pgd_wire_msg *m, char *buf, size_t cap);

/* Payload writers for senders (little-endian, unaligned buffers). */
void pgd_wire_put_cell(void *cells, size_t i, uint32_t row, uint32_t col);
void pgd_wire_put_label(void *labels, size_t i, int32_t label);
/* Write id into slot i of an ids frame, NUL-padded. Fails (PGD_EINVAL) for an empty id or one longer than
 * 63 bytes; the slot is then left untouched. */
int pgd_wire_put_id(void *ids, size_t i, const char *id, pgd_err *err);
/* Write the 32-byte JOB spec frame (reserved fields 0). Its rules are checked by pgd_wire_encode. */
void pgd_wire_put_spec(void *out, const pgd_wire_job_spec *spec);
/* Write the 32-byte shmref frame (reserved fields 0; generation for PATCHES_SHM). Checked by pgd_wire_encode. */
void pgd_wire_put_shmref(void *out, const pgd_wire_shmref *ref);

/* Bad-message bookkeeping for receivers: count every rejected message, log each reason once. */
typedef struct pgd_wire_stats {
    uint64_t rejected;
    uint64_t by_reason[PGD_WIRE_R_MAX];
} pgd_wire_stats;

/* Count one rejected message. The first of each reason is logged at WARN with err's message; later ones
 * are only counted. Returns 1 when it logged, 0 otherwise. */
int pgd_wire_stats_reject(pgd_wire_stats *s, pgd_wire_reason reason, const pgd_err *err);

/* Log one INFO line with the totals per reason ("wire: rejected 5 messages: crc 3, frame_len 2"), nothing
 * when no message was rejected. */
void pgd_wire_stats_log(const pgd_wire_stats *s);

#endif
