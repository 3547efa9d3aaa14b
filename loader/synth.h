/* synth.h: synthetic whole-slide images for the "panda" and "ultramnist" tasks, written as pyramidal JPEG BigTIFF. */
#ifndef PGD_SYNTH_H
#define PGD_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* ---- tasks and slides ---------------------------------------------------------------------------- */

typedef enum pgd_synth_task {
    PGD_SYNTH_PANDA = 0,      /* tissue with glands; 6 grades (ISUP 0-5) */
    PGD_SYNTH_ULTRAMNIST = 1, /* 3-5 digits of very different sizes; label = their sum (0-9) */
} pgd_synth_task;

#define PGD_SYNTH_MAX_DIM 1048576u /* largest width or height accepted */
#define PGD_SYNTH_MAX_LEVELS 24
#define PGD_SYNTH_MAX_DIGITS 5

/* What a slide is made of. Zero-initialised fields take defaults (pgd_synth_params_check fills them). */
typedef struct pgd_synth_params {
    pgd_synth_task task;
    uint32_t width, height; /* level-0 size in pixels, 1..PGD_SYNTH_MAX_DIM */
    uint64_t seed;
    /* The design fit size S: the slide is meant to be fitted into an S x S square, and every structure is
     * sized in "units" of max(width, height) / S level-0 pixels. 0 = the task's default (panda 2048,
     * ultramnist 512). */
    uint32_t fit;
    /* panda only; 0 = the default. gland_density: the chance that a gland cell inside tissue holds a gland
     * (0.6); tumour_fraction: the chance that a gland of a slide of grade >= 1 shows the grade's pattern, the
     * others being benign (0.5); tissue: a scale on the tissue blobs' size (1). The first two in (0, 1], tissue
     * in (0, 4]. Raising them puts more label-bearing glands on a slide: a denser, easier task. */
    double gland_density, tumour_fraction, tissue;
} pgd_synth_params;

/* Fill defaults (fit) and validate. Errors name the field ("width: 0 is outside 1..1048576"). */
int pgd_synth_params_check(pgd_synth_params *p, pgd_err *err);

/* "panda" / "ultramnist" <-> enum. parse returns -1 for an unknown name. */
int pgd_synth_task_parse(const char *s, pgd_synth_task *out);
const char *pgd_synth_task_name(pgd_synth_task t);

/* Number of classes: 6 for panda, 10 for ultramnist. */
int pgd_synth_classes(pgd_synth_task t);

/* The label of slide `index` in a set made with this seed: each block of `classes` consecutive indices
 * holds every class once, in a seeded order, so any count >= classes contains every class. */
int pgd_synth_label(pgd_synth_task task, uint64_t seed, uint32_t index);

typedef struct pgd_synth_slide pgd_synth_slide;

/* Build slide `index` of the set (p must have passed pgd_synth_params_check). label < 0 takes
 * pgd_synth_label; label >= 0 forces a class: the layout (tissue, gland places, digit places) depends only on
 * seed and index, so two slides that differ only in label differ only in what decides the label. Returns a
 * slide to free with pgd_synth_slide_free, or NULL. */
pgd_synth_slide *pgd_synth_slide_new(const pgd_synth_params *p, uint32_t index, int label, pgd_err *err);
void pgd_synth_slide_free(pgd_synth_slide **s);

/* Facts about a slide, for the manifest, the description tag and the tests. */
typedef struct pgd_synth_info {
    int label;
    char detail[32];  /* panda: the Gleason score ("0+0", "3+4", ...); ultramnist: the digits ("3+0+5") */
    double unit_px;   /* level-0 pixels per design unit: max(w, h) / fit */
    /* The size in level-0 pixels of what decides the label. panda: the largest gland diameter, whose
     * nuclei and lumens carry the grade; ultramnist: the height of the smallest digit. */
    double signal_px;
    int ndigits;                           /* ultramnist only */
    int digits[PGD_SYNTH_MAX_DIGITS];      /* ultramnist only */
    double digit_height[PGD_SYNTH_MAX_DIGITS]; /* ultramnist only, level-0 pixels */
} pgd_synth_info;

void pgd_synth_slide_info(const pgd_synth_slide *s, pgd_synth_info *out);

/* Render the level-0 rectangle (x, y, w, h) as RGB bytes, rows `stride` bytes apart. The content is a pure
 * function of (params, index, label, x, y): any tiling of the slide gives the same pixels. The rectangle must
 * lie inside the slide. Thread-safe for one slide. */
int pgd_synth_render(const pgd_synth_slide *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint8_t *rgb,
                     size_t stride, pgd_err *err);

/* Render the rectangle (x, y, w, h) of pyramid level `level` (level l is level 0 halved l times, rounding
 * sizes up) into rgb (w * 3 bytes per row): the exact pixels the TIFF writer encodes there, before JPEG.
 * Needs a buffer for the level-0 footprint (w * h * 4^level * 3 bytes): meant for tests and previews. */
int pgd_synth_render_level(const pgd_synth_slide *s, int level, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                           uint8_t *rgb, pgd_err *err);

/* Halve an RGB image (w x h, rows sstride bytes apart) into dst (ceil(w/2) x ceil(h/2), rows dstride apart):
 * each output pixel is the rounded mean of the 2 x 2 (at the right or bottom edge 2 x 1, 1 x 2 or 1 x 1)
 * input pixels it covers. */
void pgd_synth_downsample2(const uint8_t *src, uint32_t w, uint32_t h, size_t sstride, uint8_t *dst,
                           size_t dstride);

/* ---- glyphs (the digit font of ultramnist) ------------------------------------------------------- */

/* Draw digit d (0-9) upright, h pixels tall, its box's top-left at (ox, oy), into an 8-bit coverage raster
 * (w x rh, 0 = paper, 255 = ink; coverage is max-combined with what is there). stroke is the stroke width
 * as a fraction of h (0 = the default 0.11). Returns -1 for a digit outside 0-9. */
int pgd_synth_glyph_draw(int d, double ox, double oy, double h, double stroke, uint8_t *raster, uint32_t w,
                         uint32_t rh);

/* Width of a digit's box relative to its height. */
double pgd_synth_glyph_aspect(void);

/* ---- the TIFF writer ----------------------------------------------------------------------------- */

typedef struct pgd_synth_tiff_opts {
    uint32_t tile;   /* tile width and height: 240..1024, a multiple of 16; 0 = 256 */
    int quality;     /* JPEG quality 1..100; 0 = 85 */
    double mpp;      /* level-0 microns per pixel, > 0; 0 = 0.5 */
    int levels;      /* pyramid levels; 0 = halve until the long side fits in one tile */
    int subsampling; /* JPEG chroma subsampling: 420 or 444; 0 = 420 */
} pgd_synth_tiff_opts;

/* Fill defaults and validate. Errors name the option ("tile: 250 is not a multiple of 16"). */
int pgd_synth_tiff_opts_check(pgd_synth_tiff_opts *o, pgd_err *err);

/* Pyramid levels of a w x h slide: `levels` when > 0 (an error when a w x h slide cannot have that many:
 * the long side reaches 1 pixel first), else halve until the long side is <= tile. Returns the count or -1. */
int pgd_synth_level_count(uint32_t w, uint32_t h, uint32_t tile, int levels, pgd_err *err);

/* Size of level `level` of a w x h slide (each level half the previous, rounded up). */
void pgd_synth_level_size(uint32_t w, uint32_t h, int level, uint32_t *lw, uint32_t *lh);

/* A streaming writer of one pyramidal BigTIFF. The caller fills level-0 bands of `tile` rows (the last
 * band may be shorter), top to bottom; each band is JPEG-encoded as one row of tiles and halved into the
 * next level as it goes, so memory is O(width x tile), whatever the height. Lower levels are spooled to an
 * unlinked temporary file beside the output and copied in as their own directories at the end. */
typedef struct pgd_synth_pyramid pgd_synth_pyramid;

/* Create path (truncating it). desc is the level-0 ImageDescription (may be NULL); o must have passed
 * pgd_synth_tiff_opts_check. */
pgd_synth_pyramid *pgd_synth_pyramid_open(const char *path, uint32_t w, uint32_t h, const pgd_synth_tiff_opts *o,
                                          const char *desc, pgd_err *err);

/* The buffer for the next level-0 band: *y its first row, *rows its height (0 once every row was pushed),
 * *stride the bytes between rows. Fill w x rows RGB pixels, then call pgd_synth_pyramid_push, which encodes
 * and writes them. Errors are sticky: after a failed push, push and close fail at once. */
uint8_t *pgd_synth_pyramid_band(pgd_synth_pyramid *p, uint32_t *y, uint32_t *rows, size_t *stride);
int pgd_synth_pyramid_push(pgd_synth_pyramid *p, pgd_err *err);

/* Ask for a copy of every pixel of `level` (its pre-JPEG pixels) in rgb (lw x lh x 3, tightly packed, owned
 * by the caller, alive until close). Call before the first push. */
int pgd_synth_pyramid_capture(pgd_synth_pyramid *p, int level, uint8_t *rgb, pgd_err *err);

int pgd_synth_pyramid_levels(const pgd_synth_pyramid *p);

/* Bytes of pixel and JPEG buffers the writer holds (its whole working set, apart from libtiff's tile
 * offset tables and the lower-level tile index). */
size_t pgd_synth_pyramid_buffer_bytes(const pgd_synth_pyramid *p);

/* Write the lower levels, the directories, and close. Fails if a band is missing. Frees p either way; on
 * failure the file is left as it is (the caller removes it). */
int pgd_synth_pyramid_close(pgd_synth_pyramid *p, pgd_err *err);

/* Stop and free without finishing (the file is left incomplete; the caller removes it). NULL is fine. */
void pgd_synth_pyramid_abort(pgd_synth_pyramid *p);

/* Progress of one slide: level-0 rows done out of total. */
typedef void (*pgd_synth_progress_fn)(void *ctx, uint32_t rows_done, uint32_t rows_total);

/* Render a slide into path with the writer: written as path + ".tmp" and renamed at the end, so that the
 * final name only ever holds a complete file (the .tmp is removed on failure). preview, when not NULL, gets
 * a copy of level preview_level (see pgd_synth_pyramid_capture). *bytes (may be NULL) gets the file size. */
int pgd_synth_write_slide(const pgd_synth_slide *s, const char *path, const pgd_synth_tiff_opts *o,
                          pgd_synth_progress_fn progress, void *ctx, int preview_level, uint8_t *preview,
                          uint64_t *bytes, pgd_err *err);

/* ---- a set of slides + manifest ------------------------------------------------------------------ */

#define PGD_SYNTH_MAX_ID 63 /* the manifest's id limit */

/* The id of slide index: prefix + 5-digit index ("panda_00007"). Returns -1 if it would not fit in
 * PGD_SYNTH_MAX_ID bytes. */
int pgd_synth_image_id(const char *prefix, uint32_t index, char *out, size_t cap);

/* Is the prefix usable in ids and file names ([A-Za-z0-9._-], at most 40 bytes, not starting with '.')? */
int pgd_synth_prefix_ok(const char *prefix);

/* Called after each slide is written (from the process that wrote it). */
typedef void (*pgd_synth_slide_fn)(void *ctx, uint32_t index, const char *id, const pgd_synth_info *info,
                                   uint64_t bytes, double seconds);

typedef struct pgd_synth_batch {
    pgd_synth_params params;
    pgd_synth_tiff_opts tiff;
    uint32_t count;
    const char *out_dir; /* created (with parents) when missing */
    const char *prefix;  /* NULL = task name + "_" */
    int jobs;            /* worker processes; 0 or 1 = this process */
    const char *preview_png; /* when not NULL: a PNG preview of slide 0, long side <= preview_size */
    uint32_t preview_size;   /* 0 = 1024 */
    pgd_synth_progress_fn progress; /* per band of rows (only with one job) */
    pgd_synth_slide_fn on_slide;
    void *ctx;
} pgd_synth_batch;

/* Validate the batch (errors name the option), then write out_dir/<id>.tiff for every slide and
 * out_dir/train.csv (see pgd_synth_manifest_write; written last, via a .tmp and a rename). Same batch ->
 * byte-identical files, whatever the number of jobs. Returns 0, or -1 with err set: code PGD_EINVAL for a bad
 * option (nothing was written), another code for a failure while writing. */
int pgd_synth_generate(const pgd_synth_batch *b, pgd_err *err);

/* Validate a batch without writing anything (what pgd_synth_generate checks first). */
int pgd_synth_batch_check(const pgd_synth_batch *b, pgd_err *err);

/* Write the manifest of a set of count slides to path (via path.tmp and a rename). panda: PANDA's train.csv
 * columns image_id,data_provider,isup_grade,gleason_score ("panda_00003,pgd-synth,2,3+4"). ultramnist: its
 * labels (0-9) do not fit PANDA's isup_grade (0-5), so the plain columns path,label,id,digits
 * ("ultramnist_00003.tiff,7,ultramnist_00003,3+0+4"); both load with pgd_manifest_load. */
int pgd_synth_manifest_write(const char *path, const pgd_synth_params *p, const char *prefix, uint32_t count,
                             pgd_err *err);

#endif
