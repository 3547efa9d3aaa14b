/* schedule.h: the PatchGD schedule as pure logic: which images and cells every BATCH message carries, in order. */
#ifndef PGD_SCHEDULE_H
#define PGD_SCHEDULE_H

#include <stdint.h>

#include "err.h"

/* docs/schedule.md is the specification: message order, k and zeta, the RNG derivation, edge cases. */

typedef enum pgd_sched_mode {
    PGD_SCHED_TRAIN = 0, /* epochs of shuffled batches: the fill sweep, then zeta inner steps per batch */
    PGD_SCHED_EVAL = 1,  /* one pass in manifest order, fill sweep only (flag EVAL) */
    PGD_SCHED_INFER = 2, /* the same with flag INFER */
} pgd_sched_mode;

#define PGD_SCHED_DEFAULT_SAMPLING 0.1
#define PGD_SCHED_DEFAULT_MAX_SAMPLED 1.0
#define PGD_SCHED_DEFAULT_FILL_CHUNK 64
#define PGD_SCHED_MAX_BATCH 4096             /* = PGD_WIRE_MAX_IMAGES */
#define PGD_SCHED_MAX_GRID 65535             /* = PGD_WIRE_MAX_GRID, per side */
#define PGD_SCHED_MAX_MESSAGE_CELLS (1u << 28) /* n_images x ppi: the wire's 2 GiB cells frame / 8 */

/* RNG keys (the ASCII bytes of the word, little-endian, in a u64): see docs/schedule.md. */
#define PGD_SCHED_KEY_SHUFFLE 0x00656C6666756873ull /* "shuffle" */
#define PGD_SCHED_KEY_IMAGE 0x0000006567616D69ull   /* "image" */
#define PGD_SCHED_KEY_SHARED 0x0000646572616873ull  /* "shared" */

/* What the schedule is built from. Start from pgd_sched_config_init and set fields. Images are the
 * manifest rows 0..n_images-1. Give either one grid (m, n: fit geometry, every image the same) or
 * per-image grids (grid_m, grid_n with n_images entries each, m = n = 0: native geometry). */
typedef struct pgd_sched_config {
    pgd_sched_mode mode;
    uint64_t seed;
    uint32_t n_images;       /* >= 1 */
    uint32_t m, n;           /* the one grid: rows, columns, 1..65535 each; 0 with per-image grids */
    const uint32_t *grid_m;  /* per-image rows, or NULL; copied by pgd_sched_open */
    const uint32_t *grid_n;  /* per-image columns, or NULL */
    uint32_t batch_size;     /* B: images per batch, 1..4096 */
    uint32_t epochs;         /* train: >= 1; eval and infer make one pass and ignore it */
    int drop_last;           /* train: drop a last batch smaller than B (default 0); eval/infer ignore it */
    double sampling;         /* (0, 1]: k = ceil(sampling * m * n) cells per image per inner step */
    double max_sampled;      /* (0, 1]: D = ceil(max_sampled * m * n) cells drawn per image per batch */
    uint32_t zeta;           /* inner steps per batch; 0 = derived ceil(D / k) per grid */
    uint32_t fill_chunk;     /* >= 1: most cells per image in one fill (FILL/EVAL/INFER) message */
    uint32_t inner_chunk;    /* most cells per image in one INNER message; 0 = k (one message per step) */
    int shared_positions;    /* 1: all images of a grid group in a batch get the same inner cells */
    uint32_t start_epoch;    /* resume at (start_epoch, start_batch); (epochs, 0) = the end */
    uint32_t start_batch;
} pgd_sched_config;

/* Defaults: train, seed 0, epochs 1, batch_size 1, sampling 0.1, max_sampled 1.0, zeta 0 (derived),
 * fill_chunk 64, inner_chunk 0, per-image positions, start (0, 0). n_images and the grid must be set. */
void pgd_sched_config_init(pgd_sched_config *cfg);

/* Check every field; the message names the field and the allowed range ("sampling: 0 is out of range
 * (0, 1]", "grid_m[3]: 0 is out of range 1..65535"). Returns 0 or -1 (PGD_EINVAL). */
int pgd_sched_check(const pgd_sched_config *cfg, pgd_err *err);

/* The numbers the schedule uses for one m x n grid under cfg's sampling, max_sampled, zeta and chunks. */
typedef struct pgd_sched_plan {
    uint32_t cells;          /* m * n */
    uint32_t k;              /* cells per image per inner step (the last step may have fewer) */
    uint32_t zeta;           /* inner steps per batch */
    uint32_t last_k;         /* cells in inner step zeta */
    uint64_t draws;          /* cells drawn per image per batch: D (derived zeta) or zeta * k (given) */
    uint64_t passes;         /* passes over the grid those draws need: ceil(draws / cells) */
    uint32_t fill_messages;  /* fill messages per grid group per batch: ceil(cells / fill_chunk) */
    uint64_t inner_messages; /* inner messages per grid group per batch (train) */
} pgd_sched_plan;

/* Fill `plan` for an m x n grid (only sampling, max_sampled, zeta, fill_chunk and inner_chunk of cfg are
 * used and checked). Returns 0 or -1 (PGD_EINVAL naming the bad field). */
int pgd_sched_plan_grid(const pgd_sched_config *cfg, uint32_t m, uint32_t n, pgd_sched_plan *plan, pgd_err *err);

/* One cell of a grid: row 0..m-1, column 0..n-1. */
typedef struct pgd_sched_cell {
    uint32_t row, col;
} pgd_sched_cell;

/* One message-to-be (a BATCH without pixels). The arrays belong to the scheduler and stay valid until the
 * next pgd_sched_next or pgd_sched_close. */
typedef struct pgd_sched_step {
    uint32_t epoch;          /* train: 0..epochs-1; eval/infer: 0 */
    uint32_t batch;          /* image batch within the epoch */
    uint32_t step;           /* 0: fill sweep (FILL, EVAL, INFER); 1..zeta: inner step (INNER) */
    uint32_t chunk;          /* index of this message within its (batch, group, step), from 0 */
    uint32_t flags;          /* one PGD_WIRE_FLAG_ phase flag | BATCH_END | EPOCH_END */
    int step_end;            /* 1 on the last message of this step in this batch (all groups) */
    uint32_t group;          /* grid group within the batch, in order of first appearance; 0 in fit */
    uint32_t grid_m, grid_n; /* the grid every image of the message has */
    uint32_t n_images;       /* 1..batch_size */
    const uint32_t *images;  /* n_images manifest rows, in batch order */
    uint32_t patches_per_image;
    const pgd_sched_cell *cells; /* n_images * patches_per_image, image-major: image i's at i * ppi */
} pgd_sched_step;

typedef struct pgd_sched pgd_sched;

/* Check cfg and make a scheduler positioned at (start_epoch, start_batch). Copies everything it needs
 * from cfg (the grid arrays too). Returns NULL on error. */
pgd_sched *pgd_sched_open(const pgd_sched_config *cfg, pgd_err *err);

/* The next message: returns 1 and fills *step, 0 at the end of the stream (every later call too), or -1
 * on error (out of memory for a batch's permutations). Errors are sticky: once a call failed, every later
 * call returns -1 with the same error. */
int pgd_sched_next(pgd_sched *s, pgd_sched_step *step, pgd_err *err);

/* Free everything and set *s to NULL. NULL and *s == NULL are fine. */
void pgd_sched_close(pgd_sched **s);

/* Epochs in the stream (train: cfg.epochs; eval/infer: 1) and image batches per epoch. */
uint32_t pgd_sched_epochs(const pgd_sched *s);
uint32_t pgd_sched_batches(const pgd_sched *s);

/* Fold one step into a CRC-32C (start with 0): the fields and arrays serialised as docs/schedule.md
 * says. Equal streams give equal digests; any changed field, image or cell changes it. */
uint32_t pgd_sched_digest_step(uint32_t crc, const pgd_sched_step *step);

/* Run the whole stream of cfg: *crc = the fold of every step, *messages = how many (both optional). */
int pgd_sched_digest(const pgd_sched_config *cfg, uint32_t *crc, uint64_t *messages, pgd_err *err);

#endif
