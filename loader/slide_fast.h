/* slide_fast.h: the fast path's state, shared by slide_fast.c (setup) and slide_fast_read.c (tiles). */
#ifndef PGD_SLIDE_FAST_H
#define PGD_SLIDE_FAST_H

#include <turbojpeg.h>

#include "slide_priv.h"

/* One pyramid level: a tiled JPEG TIFF directory. */
typedef struct pgd_fast_level {
    int dir;                /* TIFF directory index */
    uint32_t tw, th;        /* tile size */
    uint32_t tx_n, ty_n;    /* tiles across and down */
    uint32_t ntiles;
    uint64_t *off, *len;    /* where each tile's bytes are: read from the file when the level is first read */
    uint8_t *tables;        /* JPEGTables (SOI, DQT/DHT, EOI) or NULL */
    uint32_t tables_len;
    int rgb;                /* photometric RGB: the stream gets an Adobe marker saying "no transform" */
} pgd_fast_level;

/* A decoded tile kept for reuse (neighbouring patches share tiles). */
typedef struct pgd_fast_tile {
    int level, den;         /* level -1: empty slot */
    uint32_t index;
    uint64_t used;          /* clock of the last use */
    uint32_t w, h;          /* decoded size (tile / den) */
    uint8_t *rgb;
} pgd_fast_tile;

/* libtiff's first error since it was last cleared. */
typedef struct pgd_fast_msg {
    char text[256];
    int set;
} pgd_fast_msg;

typedef struct pgd_fast_state {
    void *tif;              /* the TIFF (libtiff's TIFF *), open to read tile tables level by level */
    pgd_fast_msg msg;       /* its errors */
    int fd;
    uint64_t file_size;
    pgd_fast_level lv[PGD_SLIDE_MAX_LEVELS];
    tjhandle tj;
    uint8_t *raw, *stream;  /* a tile's bytes as stored, and spliced into one JPEG stream */
    size_t raw_cap, stream_cap;
    pgd_fast_tile *cache;   /* ncache slots, each buffer tile_bytes (the largest tile of any level) */
    int ncache;
    size_t tile_bytes;
    uint64_t clock;
} pgd_fast_state;

/* Open the file, set up the decoder and cache, close OpenSlide's handle and attach the backend. On failure
 * st is left to the caller. */
int pgd_slide_fast_start(pgd_slide *s, pgd_fast_state *st, pgd_err *err);

void pgd_slide_fast_free(pgd_fast_state *st);

/* Level l's tile offsets, byte counts and JPEGTables from the TIFF, when not read yet (0, or -1 with err). */
int pgd_slide_fast_tables(pgd_slide *s, pgd_fast_state *st, int l, pgd_err *err);

#endif
