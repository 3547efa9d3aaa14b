/* test_wire.c: the wire format: round trips, a table of bad messages, encoder refusals, CRC bit flips, zmq. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cunit_util.h"
#include "crc32c.h"
#include "log.h"
#include "wire.h"
#include "wire_zmq.h"

/* --- building test messages -------------------------------------------------------------------------- */

#define BUFCAP 8192 /* per frame; room for the over-long text cases */
#define GRID_M 5
#define GRID_N 6
#define PATCH 4
#define CHANNELS 3
#define PPI 3

typedef struct tmsg {
    pgd_wire_header h;
    pgd_wire_frame f[PGD_WIRE_MAX_FRAMES + 1];
    size_t n;                  /* payload frames */
    uint8_t buf[PGD_WIRE_MAX_FRAMES + 1][BUFCAP];
    int keep_lens;             /* nframes / frame_len set by hand: do not derive them from f */
    size_t head_len;           /* header frame length to present (0: 128) */
    uint8_t head[PGD_WIRE_HEADER_SIZE + 8];
} tmsg;

static const char *const batch_ids[2] = {"img-a", "0005f7aaab2800f6170c399693a96917"};
static const char job_path[] = "slides/a b/\xc3\xa9t\xc3\xa9.svs";
static const char segment[] = "/pgd-batch.1234.0";
static const char patch_segment[] = "/pgd-patch.4321.2";

static void set_frame(tmsg *m, size_t i, const void *data, size_t len)
{
    if (len && data != m->buf[i])
        memmove(m->buf[i], data, len);
    m->f[i].data = m->buf[i];
    m->f[i].len = len;
    if (i + 1 > m->n)
        m->n = i + 1;
}

static void fill_cells(tmsg *m, size_t i, size_t count)
{
    for (size_t k = 0; k < count; k++)
        pgd_wire_put_cell(m->buf[i], k, (uint32_t)(k % GRID_M), (uint32_t)((k * 5 + 1) % GRID_N));
    m->f[i].data = m->buf[i];
    m->f[i].len = count * PGD_WIRE_CELL_SIZE;
    if (i + 1 > m->n)
        m->n = i + 1;
}

static void fill_pixels(tmsg *m, size_t i, size_t len)
{
    for (size_t k = 0; k < len; k++)
        m->buf[i][k] = (uint8_t)(k * 7 + 1);
    m->f[i].data = m->buf[i];
    m->f[i].len = len;
    if (i + 1 > m->n)
        m->n = i + 1;
}

static void image_counts(pgd_wire_header *h, uint32_t n_images)
{
    h->n_images = n_images;
    h->patches_per_image = PPI;
    h->patch_size = PATCH;
    h->channels = CHANNELS;
    h->grid_m = GRID_M;
    h->grid_n = GRID_N;
}

/* A valid message of the given type, with distinctive ids. */
static void make_msg(tmsg *m, pgd_wire_type type)
{
    memset(m, 0, sizeof *m);
    pgd_wire_header_init(&m->h, type);
    m->h.run_id = 0x1122334455667788ull;
    m->h.task_id = 0x0102030405060708ull;
    m->h.epoch = 7;
    m->h.batch = 11;
    m->h.step = 2;
    switch (type) {
    case PGD_WIRE_HELLO:
        m->h.credit = 4;
        set_frame(m, 0, "host-1:1234", 11);
        break;
    case PGD_WIRE_JOB: {
        image_counts(&m->h, 1);
        m->h.attempt = 1;
        pgd_wire_job_spec spec = {PGD_WIRE_GEOM_FIT, 20, -1, 0.0};
        pgd_wire_put_spec(m->buf[0], &spec);
        set_frame(m, 0, m->buf[0], PGD_WIRE_SPEC_SIZE);
        set_frame(m, 1, job_path, strlen(job_path));
        fill_cells(m, 2, PPI);
        break;
    }
    case PGD_WIRE_PATCHES:
        image_counts(&m->h, 1);
        m->h.attempt = 2;
        fill_pixels(m, 0, PPI * PATCH * PATCH * CHANNELS);
        fill_cells(m, 1, PPI);
        break;
    case PGD_WIRE_JOB_ERROR:
        m->h.attempt = 3;
        set_frame(m, 0, "openslide: cannot open slides/x.svs", 35);
        break;
    case PGD_WIRE_BATCH:
        image_counts(&m->h, 2);
        m->h.flags = PGD_WIRE_FLAG_INNER | PGD_WIRE_FLAG_BATCH_END;
        fill_pixels(m, 0, 2 * PPI * PATCH * PATCH * CHANNELS);
        fill_cells(m, 1, 2 * PPI);
        memset(m->buf[2], 0, 2 * PGD_WIRE_ID_SLOT);
        for (size_t i = 0; i < 2; i++)
            CU_ASSERT_EQUAL_FATAL(pgd_wire_put_id(m->buf[2], i, batch_ids[i], NULL), 0);
        set_frame(m, 2, m->buf[2], 2 * PGD_WIRE_ID_SLOT);
        pgd_wire_put_label(m->buf[3], 0, 3);
        pgd_wire_put_label(m->buf[3], 1, -1);
        set_frame(m, 3, m->buf[3], 2 * PGD_WIRE_LABEL_SIZE);
        break;
    case PGD_WIRE_CREDIT:
        m->h.credit = 3;
        m->h.patches_per_image = 16;
        m->h.flags = PGD_WIRE_CREDIT_SHM;
        break;
    case PGD_WIRE_BATCH_SHM: {
        make_msg(m, PGD_WIRE_BATCH);
        m->h.type = PGD_WIRE_BATCH_SHM;
        pgd_wire_shmref ref = {4096 + 64 * 3, 2 * PPI * PATCH * PATCH * CHANNELS, 7, 0};
        pgd_wire_put_shmref(m->buf[0], &ref);
        set_frame(m, 0, m->buf[0], PGD_WIRE_SHMREF_SIZE);
        set_frame(m, 4, segment, strlen(segment));
        break;
    }
    case PGD_WIRE_RELEASE:
        m->h.credit = 0;
        break;
    case PGD_WIRE_PATCHES_SHM: {
        image_counts(&m->h, 1);
        m->h.attempt = 2;
        pgd_wire_shmref ref = {4096 + 64, PPI * PATCH * PATCH * CHANNELS, 3, 8};
        pgd_wire_put_shmref(m->buf[0], &ref);
        set_frame(m, 0, m->buf[0], PGD_WIRE_SHMREF_SIZE);
        fill_cells(m, 1, PPI);
        set_frame(m, 2, patch_segment, strlen(patch_segment));
        break;
    }
    default: /* HEARTBEAT, STOP, END: no frames, no counts */
        break;
    }
}

/* Write the header bytes without validation (derive nframes / frame_len from the frames unless keep_lens). */
static void pack_raw(tmsg *m)
{
    if (!m->keep_lens) {
        m->h.nframes = (uint32_t)m->n;
        for (size_t i = 0; i < PGD_WIRE_MAX_FRAMES; i++)
            m->h.frame_len[i] = i < m->n ? m->f[i].len : 0;
    }
    pgd_wire_header_pack(&m->h, m->head);
}

static int decode_raw(const tmsg *m, pgd_wire_msg *out, pgd_err *err)
{
    pgd_wire_frame frames[PGD_WIRE_MAX_FRAMES + 2];
    frames[0].data = m->head;
    frames[0].len = m->head_len ? m->head_len : PGD_WIRE_HEADER_SIZE;
    for (size_t i = 0; i < m->n; i++)
        frames[i + 1] = m->f[i];
    return pgd_wire_decode(frames, m->n + 1, out, err);
}

static const pgd_wire_type all_types[] = {PGD_WIRE_HELLO, PGD_WIRE_HEARTBEAT, PGD_WIRE_JOB, PGD_WIRE_PATCHES,
                                          PGD_WIRE_JOB_ERROR, PGD_WIRE_STOP, PGD_WIRE_BATCH, PGD_WIRE_CREDIT,
                                          PGD_WIRE_END, PGD_WIRE_BATCH_SHM, PGD_WIRE_RELEASE,
                                          PGD_WIRE_PATCHES_SHM};
#define N_TYPES (sizeof all_types / sizeof *all_types)

static int header_eq(const pgd_wire_header *a, const pgd_wire_header *b)
{
    int eq = a->magic == b->magic && a->version == b->version && a->type == b->type && a->flags == b->flags &&
             a->nframes == b->nframes && a->run_id == b->run_id && a->task_id == b->task_id &&
             a->epoch == b->epoch && a->batch == b->batch && a->step == b->step && a->attempt == b->attempt &&
             a->n_images == b->n_images && a->patches_per_image == b->patches_per_image &&
             a->patch_size == b->patch_size && a->channels == b->channels && a->grid_m == b->grid_m &&
             a->grid_n == b->grid_n && a->credit == b->credit && a->reserved0 == b->reserved0 &&
             a->reserved1 == b->reserved1;
    for (int i = 0; i < PGD_WIRE_MAX_FRAMES; i++)
        eq = eq && a->frame_len[i] == b->frame_len[i];
    return eq;
}

/* The decoded message carries exactly what m was built from, and points into seen, the payload frames
 * the decoder was given (zero copy). */
static void check_decoded(const tmsg *m, const pgd_wire_msg *d, const pgd_wire_frame *seen)
{
    for (size_t i = 0; i < m->n; i++) {
        CU_ASSERT_EQUAL(seen[i].len, m->f[i].len);
        CU_ASSERT_EQUAL(memcmp(seen[i].data, m->f[i].data, m->f[i].len), 0);
    }
    pgd_wire_header want = m->h;
    want.nframes = (uint32_t)m->n;
    for (size_t i = 0; i < PGD_WIRE_MAX_FRAMES; i++)
        want.frame_len[i] = i < m->n ? m->f[i].len : 0;
    CU_ASSERT(header_eq(&want, &d->h));
    CU_ASSERT_EQUAL(d->reason, PGD_WIRE_R_OK);
    switch (m->h.type) {
    case PGD_WIRE_HELLO:
    case PGD_WIRE_JOB_ERROR: {
        char text[PGD_WIRE_TEXT_MAX + 1];
        CU_ASSERT_PTR_EQUAL(d->text, seen[0].data);
        CU_ASSERT_EQUAL(pgd_wire_text(d, text, sizeof text), m->f[0].len);
        CU_ASSERT_EQUAL(memcmp(text, m->f[0].data, m->f[0].len), 0);
        CU_ASSERT_EQUAL(text[m->f[0].len], '\0');
        break;
    }
    case PGD_WIRE_JOB: {
        char path[64];
        CU_ASSERT_EQUAL(d->spec.geometry, PGD_WIRE_GEOM_FIT);
        CU_ASSERT_EQUAL(d->spec.fit_size, 20);
        CU_ASSERT_EQUAL(d->spec.level, -1);
        CU_ASSERT_EQUAL(d->spec.mpp, 0.0);
        CU_ASSERT_EQUAL(pgd_wire_text(d, path, sizeof path), strlen(job_path));
        CU_ASSERT_STRING_EQUAL(path, job_path);
        CU_ASSERT_PTR_EQUAL(d->cells, seen[2].data);
        break;
    }
    case PGD_WIRE_PATCHES:
    case PGD_WIRE_BATCH:
        CU_ASSERT_PTR_EQUAL(d->pixels, seen[0].data);
        CU_ASSERT_EQUAL(d->pixels_len, m->f[0].len);
        CU_ASSERT_PTR_EQUAL(d->cells, seen[1].data);
        break;
    case PGD_WIRE_BATCH_SHM: {
        char name[64];
        CU_ASSERT_PTR_NULL(d->pixels);
        CU_ASSERT_EQUAL(d->shm.offset, 4096 + 64 * 3);
        CU_ASSERT_EQUAL(d->shm.length, 2 * PPI * PATCH * PATCH * CHANNELS);
        CU_ASSERT_EQUAL(d->shm.slot, 7);
        CU_ASSERT_PTR_EQUAL(d->cells, seen[1].data);
        CU_ASSERT_EQUAL(pgd_wire_text(d, name, sizeof name), strlen(segment));
        CU_ASSERT_STRING_EQUAL(name, segment);
        CU_ASSERT_STRING_EQUAL(pgd_wire_id(d, 1), batch_ids[1]);
        break;
    }
    case PGD_WIRE_PATCHES_SHM: {
        char name[64];
        CU_ASSERT_PTR_NULL(d->pixels);
        CU_ASSERT_EQUAL(d->shm.offset, 4096 + 64);
        CU_ASSERT_EQUAL(d->shm.length, PPI * PATCH * PATCH * CHANNELS);
        CU_ASSERT_EQUAL(d->shm.slot, 3);
        CU_ASSERT_EQUAL(d->shm.generation, 8);
        CU_ASSERT_PTR_EQUAL(d->cells, seen[1].data);
        CU_ASSERT_EQUAL(pgd_wire_text(d, name, sizeof name), strlen(patch_segment));
        CU_ASSERT_STRING_EQUAL(name, patch_segment);
        break;
    }
    default:
        CU_ASSERT_PTR_NULL(d->text);
        CU_ASSERT_PTR_NULL(d->pixels);
        CU_ASSERT_PTR_NULL(d->cells);
        break;
    }
    for (size_t k = 0; k < d->n_cells; k++) {
        uint32_t row, col;
        CU_ASSERT_EQUAL(pgd_wire_cell(d, k, &row, &col), 0);
        CU_ASSERT_EQUAL(row, k % GRID_M);
        CU_ASSERT_EQUAL(col, (k * 5 + 1) % GRID_N);
    }
    if (m->h.type == PGD_WIRE_BATCH) {
        CU_ASSERT_EQUAL(d->n_cells, 2 * PPI);
        CU_ASSERT_STRING_EQUAL(pgd_wire_id(d, 0), batch_ids[0]);
        CU_ASSERT_STRING_EQUAL(pgd_wire_id(d, 1), batch_ids[1]);
        CU_ASSERT_EQUAL(pgd_wire_label(d, 0), 3);
        CU_ASSERT_EQUAL(pgd_wire_label(d, 1), -1);
        const uint8_t *p = pgd_wire_patch(d, 1, 2); /* patch 5 of the frame */
        CU_ASSERT_PTR_EQUAL(p, d->pixels + 5 * PATCH * PATCH * CHANNELS);
    }
}

/* --- round trips ------------------------------------------------------------------------------------- */

static void test_round_trip_every_type(void)
{
    static tmsg m;
    for (size_t t = 0; t < N_TYPES; t++) {
        make_msg(&m, all_types[t]);
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, &err), 0);
        pgd_wire_msg d;
        CU_ASSERT_EQUAL(decode_raw(&m, &d, &err), 0);
        if (err.code)
            printf("\n    %s: %s\n", pgd_wire_type_name(all_types[t]), err.msg);
        check_decoded(&m, &d, m.f);
        uint8_t again[PGD_WIRE_HEADER_SIZE];
        pgd_wire_header_pack(&d.h, again);
        CU_ASSERT_EQUAL(memcmp(again, m.head, sizeof again), 0);
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The bytes land at the documented offsets, little-endian. */
static void test_header_layout(void)
{
    static tmsg m;
    make_msg(&m, PGD_WIRE_BATCH);
    m.h.attempt = 0;
    CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, NULL), 0);
    const uint8_t *b = m.head;
    CU_ASSERT_EQUAL(memcmp(b, "PGDW", 4), 0);
    CU_ASSERT_EQUAL(b[4], 1);
    CU_ASSERT_EQUAL(b[5], 0);
    CU_ASSERT_EQUAL(b[6], PGD_WIRE_BATCH);
    CU_ASSERT_EQUAL(b[7], 0);
    CU_ASSERT_EQUAL(le32(b + 8), PGD_WIRE_FLAG_INNER | PGD_WIRE_FLAG_BATCH_END);
    CU_ASSERT_EQUAL(le32(b + 12), 4);
    CU_ASSERT_EQUAL(le64(b + 16), 0x1122334455667788ull);
    CU_ASSERT_EQUAL(b[16], 0x88);
    CU_ASSERT_EQUAL(le64(b + 24), 0x0102030405060708ull);
    CU_ASSERT_EQUAL(le32(b + 32), 7);
    CU_ASSERT_EQUAL(le32(b + 36), 11);
    CU_ASSERT_EQUAL(le32(b + 40), 2);
    CU_ASSERT_EQUAL(le32(b + 44), 0);
    CU_ASSERT_EQUAL(le32(b + 48), 2);
    CU_ASSERT_EQUAL(le32(b + 52), PPI);
    CU_ASSERT_EQUAL(le32(b + 56), PATCH);
    CU_ASSERT_EQUAL(le32(b + 60), CHANNELS);
    CU_ASSERT_EQUAL(le32(b + 64), GRID_M);
    CU_ASSERT_EQUAL(le32(b + 68), GRID_N);
    CU_ASSERT_EQUAL(le32(b + 72), 0);
    CU_ASSERT_EQUAL(le32(b + 76), 0);
    CU_ASSERT_EQUAL(le64(b + 80), 2 * PPI * PATCH * PATCH * CHANNELS);
    CU_ASSERT_EQUAL(le64(b + 88), 2 * PPI * 8);
    CU_ASSERT_EQUAL(le64(b + 96), 128);
    CU_ASSERT_EQUAL(le64(b + 104), 8);
    CU_ASSERT_EQUAL(le64(b + 112), 0);
    CU_ASSERT_EQUAL(le32(b + 120), 0);
    CU_ASSERT_EQUAL(le32(b + 124), pgd_crc32c(0, b, 124));
}

/* Valid edge cases the validator must accept. */
static void edge_native_mpp(tmsg *m)
{
    pgd_wire_job_spec s = {PGD_WIRE_GEOM_NATIVE, 0, -1, 0.25};
    pgd_wire_put_spec(m->buf[0], &s);
}
static void edge_native_level(tmsg *m)
{
    pgd_wire_job_spec s = {PGD_WIRE_GEOM_NATIVE, 0, 3, 0.0};
    pgd_wire_put_spec(m->buf[0], &s);
}
static void edge_fit_equal(tmsg *m)
{
    pgd_wire_job_spec s = {PGD_WIRE_GEOM_FIT, PATCH, -1, 0.0};
    pgd_wire_put_spec(m->buf[0], &s);
}
static void edge_id_63(tmsg *m)
{
    char id[64];
    memset(id, 'x', 63);
    id[63] = '\0';
    CU_ASSERT_EQUAL(pgd_wire_put_id(m->buf[2], 1, id, NULL), 0);
}
static void edge_full_grid(tmsg *m)
{
    m->h.patches_per_image = GRID_M * GRID_N;
    m->h.n_images = 1;
    fill_pixels(m, 0, GRID_M * GRID_N * PATCH * PATCH * CHANNELS);
    fill_cells(m, 1, GRID_M * GRID_N);
    for (uint32_t r = 0; r < GRID_M; r++)
        for (uint32_t c = 0; c < GRID_N; c++)
            pgd_wire_put_cell(m->buf[1], r * GRID_N + c, r, c);
    m->f[2].len = PGD_WIRE_ID_SLOT;
    m->f[3].len = PGD_WIRE_LABEL_SIZE;
}
static void edge_gray(tmsg *m)
{
    m->h.channels = 1;
    m->f[0].len = 2 * PPI * PATCH * PATCH;
}
static void edge_rgba_fill_epoch_end(tmsg *m)
{
    m->h.channels = 4;
    m->h.flags = PGD_WIRE_FLAG_FILL | PGD_WIRE_FLAG_BATCH_END | PGD_WIRE_FLAG_EPOCH_END;
    fill_pixels(m, 0, 2 * PPI * PATCH * PATCH * 4);
}
static void edge_infer(tmsg *m)
{
    m->h.flags = PGD_WIRE_FLAG_INFER;
}
static void edge_eval_labels(tmsg *m)
{
    m->h.flags = PGD_WIRE_FLAG_EVAL;
    pgd_wire_put_label(m->buf[3], 0, 0);
    pgd_wire_put_label(m->buf[3], 1, 2147483647);
}
static void edge_name_255_utf8(tmsg *m)
{
    /* 63 four-byte characters (U+1F600) and 3 ASCII bytes: 255 bytes */
    for (int i = 0; i < 63; i++)
        memcpy(m->buf[0] + 4 * i, "\xf0\x9f\x98\x80", 4);
    memcpy(m->buf[0] + 252, "abc", 3);
    m->f[0].len = 255;
}
static void edge_reason_4095(tmsg *m)
{
    memset(m->buf[0], 'r', 4095);
    memcpy(m->buf[0], "\xe2\x82\xac\xc3\xa9\xed\x9f\xbf\xef\xbf\xbd", 11); /* U+20AC, U+E9, U+D7FF, U+FFFD */
    m->f[0].len = 4095;
}
static void edge_credit_any_ppi(tmsg *m)
{
    m->h.patches_per_image = 0;
}
static void edge_max_ids(tmsg *m)
{
    m->h.run_id = UINT64_MAX;
    m->h.task_id = UINT64_MAX;
    m->h.epoch = m->h.batch = m->h.step = UINT32_MAX;
    m->h.credit = UINT32_MAX;
}

static const struct {
    const char *name;
    pgd_wire_type type;
    void (*mut)(tmsg *);
} edges[] = {
    {"native by mpp", PGD_WIRE_JOB, edge_native_mpp},
    {"native by level", PGD_WIRE_JOB, edge_native_level},
    {"fit_size == patch_size", PGD_WIRE_JOB, edge_fit_equal},
    {"63-byte id", PGD_WIRE_BATCH, edge_id_63},
    {"patches_per_image == grid cells", PGD_WIRE_BATCH, edge_full_grid},
    {"1 channel", PGD_WIRE_BATCH, edge_gray},
    {"4 channels, FILL + BATCH_END + EPOCH_END", PGD_WIRE_BATCH, edge_rgba_fill_epoch_end},
    {"INFER", PGD_WIRE_BATCH, edge_infer},
    {"EVAL, label 0 and INT32_MAX", PGD_WIRE_BATCH, edge_eval_labels},
    {"255-byte UTF-8 name", PGD_WIRE_HELLO, edge_name_255_utf8},
    {"4095-byte reason", PGD_WIRE_JOB_ERROR, edge_reason_4095},
    {"CREDIT with patches_per_image 0", PGD_WIRE_CREDIT, edge_credit_any_ppi},
    {"ids at their maximum", PGD_WIRE_HELLO, edge_max_ids},
};

static void test_valid_edges(void)
{
    static tmsg m;
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        make_msg(&m, edges[i].type);
        edges[i].mut(&m);
        pgd_err err = PGD_ERR_INIT;
        int rc = pgd_wire_encode(&m.h, m.f, m.n, m.head, &err);
        pgd_wire_msg d;
        if (rc == 0)
            rc = decode_raw(&m, &d, &err);
        if (rc != 0)
            printf("\n    edge '%s' rejected: %s\n", edges[i].name, err.msg);
        CU_ASSERT_EQUAL(rc, 0);
    }
}

/* --- bad messages ------------------------------------------------------------------------------------ */

static void mut_version2(tmsg *m) { m->h.version = 2; }
static void mut_type10(tmsg *m) { m->h.type = 200; }
static void mut_type0(tmsg *m) { m->h.type = 0; }
static void mut_reserved0(tmsg *m) { m->h.reserved0 = 1; }
static void mut_reserved1(tmsg *m) { m->h.reserved1 = 0x80000000u; }
static void mut_head127(tmsg *m) { m->head_len = 127; }
static void mut_head129(tmsg *m) { m->head_len = 129; }
static void mut_extra_frame(tmsg *m) { set_frame(m, m->n, "x", 1); }
static void mut_drop_last(tmsg *m) { m->n--; }
static void mut_header_says_more(tmsg *m)
{
    m->keep_lens = 1;
    m->h.nframes = 3;
    for (size_t i = 0; i < 3; i++)
        m->h.frame_len[i] = m->f[i].len;
    m->n = 2;
}
static void mut_labels_short_of_header(tmsg *m)
{
    m->keep_lens = 1;
    m->h.nframes = 4;
    for (size_t i = 0; i < 4; i++)
        m->h.frame_len[i] = m->f[i].len;
    m->f[3].len--;
}
static void mut_unused_len(tmsg *m)
{
    m->keep_lens = 1;
    m->h.frame_len[2] = 5;
}
static void mut_cells_short(tmsg *m) { m->f[1].len -= 4 * PGD_WIRE_CELL_SIZE; }
static void mut_ids_long(tmsg *m) { m->f[2].len += PGD_WIRE_ID_SLOT; }
static void mut_n_images_1(tmsg *m) { m->h.n_images = 1; }
static void mut_n_images_2(tmsg *m) { m->h.n_images = 2; }
static void mut_n_images_0(tmsg *m) { m->h.n_images = 0; }
static void mut_n_images_4097(tmsg *m) { m->h.n_images = 4097; }
static void mut_credit_1(tmsg *m) { m->h.credit = 1; }
static void mut_credit_0(tmsg *m) { m->h.credit = 0; }
static void mut_patch_0(tmsg *m) { m->h.patch_size = 0; }
static void mut_patch_8193(tmsg *m) { m->h.patch_size = 8193; }
static void mut_channels_2(tmsg *m) { m->h.channels = 2; }
static void mut_channels_0(tmsg *m) { m->h.channels = 0; }
static void mut_channels_5(tmsg *m) { m->h.channels = 5; }
static void mut_grid_m_0(tmsg *m) { m->h.grid_m = 0; }
static void mut_grid_n_65536(tmsg *m) { m->h.grid_n = 65536; }
static void mut_ppi_0(tmsg *m) { m->h.patches_per_image = 0; }
static void mut_ppi_31(tmsg *m) { m->h.patches_per_image = GRID_M * GRID_N + 1; }
static void mut_attempt_1(tmsg *m) { m->h.attempt = 1; }
static void mut_attempt_0(tmsg *m) { m->h.attempt = 0; }
static void mut_grid_m_1(tmsg *m) { m->h.grid_m = 1; }
static void mut_channels_3(tmsg *m) { m->h.channels = 3; }
static void mut_flag_40(tmsg *m) { m->h.flags |= 0x40; }
static void mut_flag_1(tmsg *m) { m->h.flags = 1; }
static void mut_flag_high(tmsg *m) { m->h.flags = 0x80000000u; }
static void mut_two_phases(tmsg *m) { m->h.flags = PGD_WIRE_FLAG_FILL | PGD_WIRE_FLAG_INNER; }
static void mut_all_phases(tmsg *m) { m->h.flags = PGD_WIRE_PHASE_MASK | PGD_WIRE_FLAG_EPOCH_END; }
static void mut_no_phase(tmsg *m) { m->h.flags = PGD_WIRE_FLAG_BATCH_END; }

/* Sizes over the frame limit; the header claims an empty pixels frame, which a wrapped product would match. */
static void set_big(tmsg *m, uint32_t n_images, uint32_t ppi, uint32_t grid, uint32_t p, uint32_t c)
{
    m->h.n_images = n_images;
    m->h.patches_per_image = ppi;
    m->h.grid_m = m->h.grid_n = grid;
    m->h.patch_size = p;
    m->h.channels = c;
    m->keep_lens = 1;
    m->h.nframes = 4;
    m->h.frame_len[0] = 0;
}
static void mut_wrap32(tmsg *m) { set_big(m, 1, 65536, 256, 128, 4); }      /* 2^32: 0 in 32 bits */
static void mut_wrap64(tmsg *m) { set_big(m, 4096, 1u << 24, 4096, 8192, 4); } /* 2^64: 0 in 64 bits */
static void mut_huge(tmsg *m) { set_big(m, 4096, 65535u * 65535u, 65535, 8192, 3); }
static void mut_over_by_half(tmsg *m) { set_big(m, 3, 65536, 256, 64, 4); } /* 3 x 2^30 */
static void mut_at_limit(tmsg *m) { set_big(m, 2, 65536, 256, 64, 4); }     /* exactly 2^31: allowed size */
static void mut_job_cells_huge(tmsg *m)
{
    m->h.patches_per_image = 65535u * 65535u;
    m->h.grid_m = m->h.grid_n = 65535;
}

static void mut_cell_row(tmsg *m) { pgd_wire_put_cell(m->buf[1], 1, GRID_M, 0); }
static void mut_cell_col(tmsg *m) { pgd_wire_put_cell(m->buf[2], 2, 0, GRID_N); }
static void mut_cell_max(tmsg *m) { pgd_wire_put_cell(m->buf[1], 0, UINT32_MAX, 0); }
static void mut_id_no_nul(tmsg *m) { memset(m->buf[2] + PGD_WIRE_ID_SLOT, 'a', PGD_WIRE_ID_SLOT); }
static void mut_id_empty(tmsg *m) { memset(m->buf[2], 0, PGD_WIRE_ID_SLOT); }
static void mut_id_garbage(tmsg *m) { m->buf[2][63] = 'x'; }
static void mut_label_m2(tmsg *m) { pgd_wire_put_label(m->buf[3], 1, -2); }
static void mut_label_min(tmsg *m) { pgd_wire_put_label(m->buf[3], 0, INT32_MIN); }
static void mut_name_nul(tmsg *m) { set_frame(m, 0, "ab\0c", 4); }
static void mut_name_empty(tmsg *m) { m->f[0].len = 0; }
static void mut_name_256(tmsg *m)
{
    memset(m->buf[0], 'n', 256);
    m->f[0].len = 256;
}
static void mut_path_4096(tmsg *m)
{
    memset(m->buf[1], 'p', 4096);
    m->f[1].len = 4096;
}
static void mut_reason_nul(tmsg *m) { m->buf[0][0] = 0; }
static void mut_path_ff(tmsg *m) { set_frame(m, 1, "a\xff", 2); }
static void mut_path_overlong(tmsg *m) { set_frame(m, 1, "\xc0\xaf", 2); }
static void mut_path_cut(tmsg *m) { set_frame(m, 1, "ab\xe2\x82", 4); }
static void mut_path_surrogate(tmsg *m) { set_frame(m, 1, "\xed\xa0\x80", 3); }
static void mut_path_too_high(tmsg *m) { set_frame(m, 1, "x\xf4\x90\x80\x80", 5); }

static void put_spec(tmsg *m, uint32_t geometry, uint32_t fit, int32_t level, double mpp)
{
    pgd_wire_job_spec s = {geometry, fit, level, mpp};
    pgd_wire_put_spec(m->buf[0], &s);
}
static void mut_spec_geom3(tmsg *m) { put_spec(m, 3, 20, -1, 0); }
static void mut_spec_geom0(tmsg *m) { put_spec(m, 0, 20, -1, 0); }
static void mut_spec_fit_small(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_FIT, PATCH - 1, -1, 0); }
static void mut_spec_fit_level(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_FIT, 20, 0, 0); }
static void mut_spec_fit_mpp(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_FIT, 20, -1, 0.5); }
static void mut_spec_native_fit(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 20, 0, 0); }
static void mut_spec_native_m2(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 0, -2, 0.5); }
static void mut_spec_native_mpp0(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 0, -1, 0); }
static void mut_spec_native_nan(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 0, -1, NAN); }
static void mut_spec_native_inf(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 0, -1, INFINITY); }
static void mut_spec_native_neg(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 0, -1, -0.5); }
static void mut_spec_level_mpp(tmsg *m) { put_spec(m, PGD_WIRE_GEOM_NATIVE, 0, 2, 0.25); }
static void mut_spec_res12(tmsg *m) { m->buf[0][12] = 7; }
static void mut_spec_res24(tmsg *m) { m->buf[0][31] = 1; }
static void put_ref(tmsg *m, uint64_t off, uint64_t len)
{
    pgd_wire_shmref r = {off, len, 0, 0};
    pgd_wire_put_shmref(m->buf[0], &r);
}
static void mut_ref_unaligned(tmsg *m) { put_ref(m, 4096 + 8, 2 * PPI * PATCH * PATCH * CHANNELS); }
static void mut_ref_huge(tmsg *m) { put_ref(m, UINT64_MAX - 63, 2 * PPI * PATCH * PATCH * CHANNELS); }
static void mut_ref_len(tmsg *m) { put_ref(m, 4096, 2 * PPI * PATCH * PATCH * CHANNELS - 1); }
static void mut_ref_res(tmsg *m) { m->buf[0][20] = 1; }
static void mut_seg_noslash(tmsg *m) { set_frame(m, 4, "pgd-batch.1", 11); }
static void mut_seg_slash(tmsg *m) { set_frame(m, 4, "/pgd/batch", 10); }
static void mut_seg_slash_only(tmsg *m) { set_frame(m, 4, "/", 1); }
static void mut_no_phase_shm(tmsg *m) { m->h.flags = PGD_WIRE_FLAG_BATCH_END; }
static void mut_credit_flag(tmsg *m) { m->h.flags = 0x2; }
static void mut_release_frame(tmsg *m) { set_frame(m, 0, "x", 1); }
static void put_gen(tmsg *m, uint64_t gen)
{
    pgd_wire_shmref r = {4096 + 64, PPI * PATCH * PATCH * CHANNELS, 0, gen};
    pgd_wire_put_shmref(m->buf[0], &r);
}
static void mut_gen_odd(tmsg *m) { put_gen(m, 9); }
static void mut_gen_zero(tmsg *m) { put_gen(m, 0); }
static void mut_batch_gen(tmsg *m) { m->buf[0][24] = 2; }
static void mut_patches_flag(tmsg *m) { m->h.flags = PGD_WIRE_JOB_SHM; }
static void mut_hello_flag2(tmsg *m) { m->h.flags = 0x2; }
static void mut_job_flag2(tmsg *m) { m->h.flags = 0x3; }
static void mut_pshm_two_images(tmsg *m) { m->h.n_images = 2; }
static void mut_pshm_seg_slash(tmsg *m) { set_frame(m, 2, "pgd-patch.1", 11); }

/* Byte-level changes after packing. */
static void post_magic(uint8_t *h) { memcpy(h, "\x78\x56\x34\x12", 4); }
static void post_run_id(uint8_t *h) { h[17] ^= 0x10; }
static void post_crc(uint8_t *h) { h[127] ^= 0x80; }

typedef struct bad_case {
    const char *name;
    pgd_wire_type type;
    void (*mut)(tmsg *);
    void (*post)(uint8_t *);
    const char *want;       /* substring of the error text */
    pgd_wire_reason reason;
    int encoder_refuses;    /* the encoder must refuse it with the same text */
} bad_case;

static const bad_case bad_cases[] = {
    /* envelope */
    {"bad magic", PGD_WIRE_BATCH, NULL, post_magic, "wire: bad magic 0x12345678", PGD_WIRE_R_MAGIC, 0},
    {"version 2", PGD_WIRE_BATCH, mut_version2, NULL, "wire: version 2, this build speaks 1", PGD_WIRE_R_VERSION, 0},
    {"crc of a changed byte", PGD_WIRE_BATCH, NULL, post_run_id, "wire: header crc mismatch", PGD_WIRE_R_CRC, 0},
    {"crc field changed", PGD_WIRE_HEARTBEAT, NULL, post_crc, "wire: header crc mismatch", PGD_WIRE_R_CRC, 0},
    {"header 127 bytes", PGD_WIRE_STOP, mut_head127, NULL, "wire: header frame is 127 bytes, expected 128",
     PGD_WIRE_R_HEADER_SIZE, 0},
    {"header 129 bytes", PGD_WIRE_STOP, mut_head129, NULL, "wire: header frame is 129 bytes, expected 128",
     PGD_WIRE_R_HEADER_SIZE, 0},
    {"unknown type 200", PGD_WIRE_HEARTBEAT, mut_type10, NULL, "wire: unknown message type 200", PGD_WIRE_R_TYPE, 1},
    {"type 0", PGD_WIRE_HEARTBEAT, mut_type0, NULL, "wire: unknown message type 0", PGD_WIRE_R_TYPE, 1},
    {"reserved0", PGD_WIRE_JOB, mut_reserved0, NULL, "wire: JOB reserved0 is 0x1, must be 0", PGD_WIRE_R_RESERVED, 1},
    {"reserved1", PGD_WIRE_END, mut_reserved1, NULL, "wire: END reserved1 is 0x80000000, must be 0",
     PGD_WIRE_R_RESERVED, 1},
    /* frame counts and lengths */
    {"HEARTBEAT with a frame", PGD_WIRE_HEARTBEAT, mut_extra_frame, NULL, "wire: HEARTBEAT nframes 1, expected 0",
     PGD_WIRE_R_NFRAMES, 1},
    {"BATCH with 5 frames", PGD_WIRE_BATCH, mut_extra_frame, NULL, "wire: BATCH nframes 5, expected 4",
     PGD_WIRE_R_NFRAMES, 1},
    {"JOB without cells", PGD_WIRE_JOB, mut_drop_last, NULL, "wire: JOB nframes 2, expected 3", PGD_WIRE_R_NFRAMES, 1},
    {"header says 3 frames, 2 sent", PGD_WIRE_JOB, mut_header_says_more, NULL,
     "wire: JOB header says 3 payload frames, message has 2", PGD_WIRE_R_NFRAMES, 0},
    {"frame shorter than the header says", PGD_WIRE_BATCH, mut_labels_short_of_header, NULL,
     "wire: BATCH frame 4 (labels) is 7 bytes, header says 8", PGD_WIRE_R_FRAME_LEN, 0},
    {"unused frame_len", PGD_WIRE_HEARTBEAT, mut_unused_len, NULL, "wire: HEARTBEAT frame_len[2] is 5, must be 0",
     PGD_WIRE_R_FRAME_LEN, 0},
    {"cells short", PGD_WIRE_BATCH, mut_cells_short, NULL,
     "wire: BATCH frame 2 (cells) is 16 bytes, expected 48 (n_images 2 x patches_per_image 3 x 8)",
     PGD_WIRE_R_FRAME_LEN, 1},
    {"ids long", PGD_WIRE_BATCH, mut_ids_long, NULL,
     "wire: BATCH frame 3 (ids) is 192 bytes, expected 128 (n_images 2 x 64)",
     PGD_WIRE_R_FRAME_LEN, 1},
    /* counts */
    {"HEARTBEAT n_images", PGD_WIRE_HEARTBEAT, mut_n_images_1, NULL, "wire: HEARTBEAT n_images 1, expected 0",
     PGD_WIRE_R_COUNT, 1},
    {"STOP credit", PGD_WIRE_STOP, mut_credit_1, NULL, "wire: STOP credit 1, expected 0", PGD_WIRE_R_COUNT, 1},
    {"JOB n_images 2", PGD_WIRE_JOB, mut_n_images_2, NULL, "wire: JOB n_images 2, expected 1", PGD_WIRE_R_COUNT, 1},
    {"PATCHES n_images 0", PGD_WIRE_PATCHES, mut_n_images_0, NULL, "wire: PATCHES n_images 0, expected 1",
     PGD_WIRE_R_COUNT, 1},
    {"BATCH n_images 0", PGD_WIRE_BATCH, mut_n_images_0, NULL, "wire: BATCH n_images 0, expected 1..4096",
     PGD_WIRE_R_COUNT, 1},
    {"BATCH n_images 4097", PGD_WIRE_BATCH, mut_n_images_4097, NULL, "wire: BATCH n_images 4097, expected 1..4096",
     PGD_WIRE_R_COUNT, 1},
    {"patch_size 0", PGD_WIRE_BATCH, mut_patch_0, NULL,
     "wire: BATCH patch_size 0, expected 1..8192", PGD_WIRE_R_COUNT, 1},
    {"patch_size 8193", PGD_WIRE_PATCHES, mut_patch_8193, NULL, "wire: PATCHES patch_size 8193, expected 1..8192",
     PGD_WIRE_R_COUNT, 1},
    {"channels 2", PGD_WIRE_BATCH, mut_channels_2, NULL,
     "wire: BATCH channels 2, expected 1, 3 or 4", PGD_WIRE_R_COUNT, 1},
    {"channels 0", PGD_WIRE_JOB, mut_channels_0, NULL, "wire: JOB channels 0, expected 1, 3 or 4", PGD_WIRE_R_COUNT, 1},
    {"channels 5", PGD_WIRE_PATCHES, mut_channels_5, NULL, "wire: PATCHES channels 5, expected 1, 3 or 4",
     PGD_WIRE_R_COUNT, 1},
    {"grid_m 0", PGD_WIRE_BATCH, mut_grid_m_0, NULL, "wire: BATCH grid_m 0, expected 1..65535", PGD_WIRE_R_COUNT, 1},
    {"grid_n 65536", PGD_WIRE_JOB, mut_grid_n_65536, NULL, "wire: JOB grid_n 65536, expected 1..65535",
     PGD_WIRE_R_COUNT, 1},
    {"patches_per_image 0", PGD_WIRE_BATCH, mut_ppi_0, NULL, "wire: BATCH patches_per_image 0, expected >= 1",
     PGD_WIRE_R_COUNT, 1},
    {"patches_per_image beyond the grid", PGD_WIRE_BATCH, mut_ppi_31, NULL,
     "wire: BATCH patches_per_image 31 exceeds grid_m 5 x grid_n 6 = 30", PGD_WIRE_R_COUNT, 1},
    {"BATCH attempt", PGD_WIRE_BATCH, mut_attempt_1, NULL, "wire: BATCH attempt 1, expected 0", PGD_WIRE_R_COUNT, 1},
    {"JOB attempt 0", PGD_WIRE_JOB, mut_attempt_0, NULL, "wire: JOB attempt 0, expected >= 1", PGD_WIRE_R_COUNT, 1},
    {"JOB_ERROR attempt 0", PGD_WIRE_JOB_ERROR, mut_attempt_0, NULL, "wire: JOB_ERROR attempt 0, expected >= 1",
     PGD_WIRE_R_COUNT, 1},
    {"HELLO credit 0", PGD_WIRE_HELLO, mut_credit_0, NULL, "wire: HELLO credit 0, expected >= 1", PGD_WIRE_R_COUNT, 1},
    {"CREDIT credit 0", PGD_WIRE_CREDIT, mut_credit_0, NULL,
     "wire: CREDIT credit 0, expected >= 1", PGD_WIRE_R_COUNT, 1},
    {"CREDIT grid_m", PGD_WIRE_CREDIT, mut_grid_m_1, NULL, "wire: CREDIT grid_m 1, expected 0", PGD_WIRE_R_COUNT, 1},
    {"JOB_ERROR channels", PGD_WIRE_JOB_ERROR, mut_channels_3, NULL, "wire: JOB_ERROR channels 3, expected 0",
     PGD_WIRE_R_COUNT, 1},
    /* frame sizes over the limit (products that overflow 32 and 64 bits when multiplied naively) */
    {"pixels 2^32 bytes (0 in 32 bits)", PGD_WIRE_BATCH, mut_wrap32, NULL,
     "wire: BATCH frame 1 (pixels) size n_images 1 x patches_per_image 65536 x patch_size 128 x 128 x channels 4 "
     "exceeds the 2147483648-byte frame limit", PGD_WIRE_R_TOO_LARGE, 0},
    {"pixels 2^64 bytes (0 in 64 bits)", PGD_WIRE_BATCH, mut_wrap64, NULL,
     "wire: BATCH frame 1 (pixels) size n_images 4096 x patches_per_image 16777216 x patch_size 8192 x 8192 x "
     "channels 4 exceeds", PGD_WIRE_R_TOO_LARGE, 0},
    {"pixels beyond 2^64 bytes", PGD_WIRE_BATCH, mut_huge, NULL,
     "patches_per_image 4294836225 x patch_size 8192 x 8192 x channels 3 exceeds", PGD_WIRE_R_TOO_LARGE, 0},
    {"pixels 3 GiB", PGD_WIRE_BATCH, mut_over_by_half, NULL, "(pixels) size n_images 3 x", PGD_WIRE_R_TOO_LARGE, 0},
    {"pixels exactly 2 GiB is a legal size", PGD_WIRE_BATCH, mut_at_limit, NULL,
     "wire: BATCH frame 1 (pixels) is 0 bytes, expected 2147483648", PGD_WIRE_R_FRAME_LEN, 0},
    {"JOB cells over the limit", PGD_WIRE_JOB, mut_job_cells_huge, NULL,
     "wire: JOB frame 3 (cells) size n_images 1 x patches_per_image 4294836225 x 8 exceeds", PGD_WIRE_R_TOO_LARGE, 1},
    /* flags */
    {"unknown BATCH flag", PGD_WIRE_BATCH, mut_flag_40, NULL, "wire: BATCH flags 0x52 has unknown bits 0x40",
     PGD_WIRE_R_FLAGS, 1},
    {"flag on HEARTBEAT", PGD_WIRE_HEARTBEAT, mut_flag_1, NULL, "wire: HEARTBEAT flags 0x1 has unknown bits 0x1",
     PGD_WIRE_R_FLAGS, 1},
    {"high flag on JOB", PGD_WIRE_JOB, mut_flag_high, NULL, "wire: JOB flags 0x80000000 has unknown bits 0x80000000",
     PGD_WIRE_R_FLAGS, 1},
    {"two phase flags", PGD_WIRE_BATCH, mut_two_phases, NULL,
     "wire: BATCH flags 0x3 has 2 phase flags, expected exactly one of FILL, INNER, EVAL, INFER", PGD_WIRE_R_FLAGS, 1},
    {"four phase flags", PGD_WIRE_BATCH, mut_all_phases, NULL, "wire: BATCH flags 0x2f has 4 phase flags",
     PGD_WIRE_R_FLAGS, 1},
    {"no phase flag", PGD_WIRE_BATCH, mut_no_phase, NULL,
     "wire: BATCH flags 0x10 has 0 phase flags", PGD_WIRE_R_FLAGS, 1},
    /* cells, ids, labels */
    {"cell row out of range", PGD_WIRE_BATCH, mut_cell_row, NULL,
     "wire: BATCH cell 1 is (row 5, col 0), outside the 5 x 6 grid", PGD_WIRE_R_CELL, 1},
    {"cell col out of range", PGD_WIRE_JOB, mut_cell_col, NULL,
     "wire: JOB cell 2 is (row 0, col 6), outside the 5 x 6 grid", PGD_WIRE_R_CELL, 1},
    {"cell row 2^32-1", PGD_WIRE_PATCHES, mut_cell_max, NULL, "wire: PATCHES cell 0 is (row 4294967295, col 0)",
     PGD_WIRE_R_CELL, 1},
    {"id without NUL", PGD_WIRE_BATCH, mut_id_no_nul, NULL, "wire: BATCH id 1 has no NUL in its 64-byte slot",
     PGD_WIRE_R_ID, 1},
    {"empty id", PGD_WIRE_BATCH, mut_id_empty, NULL, "wire: BATCH id 0 is empty", PGD_WIRE_R_ID, 1},
    {"garbage after the NUL of an id", PGD_WIRE_BATCH, mut_id_garbage, NULL,
     "wire: BATCH id 0 has a non-zero byte at 63 after its NUL", PGD_WIRE_R_ID, 1},
    {"label -2", PGD_WIRE_BATCH, mut_label_m2, NULL, "wire: BATCH label 1 is -2, expected >= -1", PGD_WIRE_R_LABEL, 1},
    {"label INT32_MIN", PGD_WIRE_BATCH, mut_label_min, NULL, "wire: BATCH label 0 is -2147483648, expected >= -1",
     PGD_WIRE_R_LABEL, 1},
    /* text */
    {"name with NUL", PGD_WIRE_HELLO, mut_name_nul, NULL, "wire: HELLO name has a NUL at byte 2", PGD_WIRE_R_TEXT, 1},
    {"empty name", PGD_WIRE_HELLO, mut_name_empty, NULL, "wire: HELLO frame 1 (name) is 0 bytes, expected 1..255",
     PGD_WIRE_R_FRAME_LEN, 1},
    {"name 256 bytes", PGD_WIRE_HELLO, mut_name_256, NULL, "wire: HELLO frame 1 (name) is 256 bytes, expected 1..255",
     PGD_WIRE_R_FRAME_LEN, 1},
    {"path 4096 bytes", PGD_WIRE_JOB, mut_path_4096, NULL, "wire: JOB frame 2 (path) is 4096 bytes, expected 1..4095",
     PGD_WIRE_R_FRAME_LEN, 1},
    {"reason starting with NUL", PGD_WIRE_JOB_ERROR, mut_reason_nul, NULL, "wire: JOB_ERROR reason has a NUL at byte 0",
     PGD_WIRE_R_TEXT, 1},
    {"empty reason", PGD_WIRE_JOB_ERROR, mut_name_empty, NULL,
     "wire: JOB_ERROR frame 1 (reason) is 0 bytes, expected 1..4095", PGD_WIRE_R_FRAME_LEN, 1},
    {"path with byte 0xff", PGD_WIRE_JOB, mut_path_ff, NULL, "wire: JOB path is not valid UTF-8 at byte 1",
     PGD_WIRE_R_TEXT, 1},
    {"path with an overlong form", PGD_WIRE_JOB, mut_path_overlong, NULL, "wire: JOB path is not valid UTF-8 at byte 0",
     PGD_WIRE_R_TEXT, 1},
    {"path cut inside a character", PGD_WIRE_JOB, mut_path_cut, NULL, "wire: JOB path is not valid UTF-8 at byte 2",
     PGD_WIRE_R_TEXT, 1},
    {"path with a surrogate", PGD_WIRE_JOB, mut_path_surrogate, NULL, "wire: JOB path is not valid UTF-8 at byte 0",
     PGD_WIRE_R_TEXT, 1},
    {"path above U+10FFFF", PGD_WIRE_JOB, mut_path_too_high, NULL, "wire: JOB path is not valid UTF-8 at byte 1",
     PGD_WIRE_R_TEXT, 1},
    /* JOB spec */
    {"spec geometry 3", PGD_WIRE_JOB, mut_spec_geom3, NULL, "wire: JOB spec geometry 3, expected 1 (fit) or 2 (native)",
     PGD_WIRE_R_SPEC, 1},
    {"spec geometry 0", PGD_WIRE_JOB, mut_spec_geom0, NULL, "wire: JOB spec geometry 0, expected", PGD_WIRE_R_SPEC, 1},
    {"fit_size below patch_size", PGD_WIRE_JOB, mut_spec_fit_small, NULL,
     "wire: JOB spec fit_size 3 is below patch_size 4", PGD_WIRE_R_SPEC, 1},
    {"fit with a level", PGD_WIRE_JOB, mut_spec_fit_level, NULL,
     "wire: JOB spec level 0 with fit geometry, expected -1",
     PGD_WIRE_R_SPEC, 1},
    {"fit with an mpp", PGD_WIRE_JOB, mut_spec_fit_mpp, NULL, "wire: JOB spec mpp 0.5 with fit geometry, expected 0",
     PGD_WIRE_R_SPEC, 1},
    {"native with fit_size", PGD_WIRE_JOB, mut_spec_native_fit, NULL,
     "wire: JOB spec fit_size 20 with native geometry, expected 0", PGD_WIRE_R_SPEC, 1},
    {"native level -2", PGD_WIRE_JOB, mut_spec_native_m2, NULL, "wire: JOB spec level -2, expected >= 0 or -1 (by mpp)",
     PGD_WIRE_R_SPEC, 1},
    {"native level -1 without mpp", PGD_WIRE_JOB, mut_spec_native_mpp0, NULL,
     "wire: JOB spec mpp 0 with level -1, expected a finite value > 0", PGD_WIRE_R_SPEC, 1},
    {"native mpp NaN", PGD_WIRE_JOB, mut_spec_native_nan, NULL, "with level -1, expected a finite value > 0",
     PGD_WIRE_R_SPEC, 1},
    {"native mpp inf", PGD_WIRE_JOB, mut_spec_native_inf, NULL, "wire: JOB spec mpp inf with level -1",
     PGD_WIRE_R_SPEC, 1},
    {"native mpp negative", PGD_WIRE_JOB, mut_spec_native_neg, NULL, "wire: JOB spec mpp -0.5 with level -1",
     PGD_WIRE_R_SPEC, 1},
    {"native level with mpp", PGD_WIRE_JOB, mut_spec_level_mpp, NULL,
     "wire: JOB spec mpp 0.25 with level 2, expected 0",
     PGD_WIRE_R_SPEC, 1},
    {"spec reserved u32", PGD_WIRE_JOB, mut_spec_res12, NULL,
     "wire: JOB spec reserved field at byte 12 is 0x7, must be 0", PGD_WIRE_R_RESERVED, 1},
    {"spec reserved u64", PGD_WIRE_JOB, mut_spec_res24, NULL,
     "wire: JOB spec reserved field at byte 24 is 0x100000000000000, must be 0", PGD_WIRE_R_RESERVED, 1},
    /* revision 2: shared-memory BATCH, RELEASE, the CREDIT offer */
    {"shmref offset not aligned", PGD_WIRE_BATCH_SHM, mut_ref_unaligned, NULL,
     "wire: BATCH_SHM shmref offset 4104 is not a multiple of 64", PGD_WIRE_R_SHMREF, 1},
    {"shmref offset near 2^64", PGD_WIRE_BATCH_SHM, mut_ref_huge, NULL, "wire: BATCH_SHM shmref offset 18446744073709551552",
     PGD_WIRE_R_SHMREF, 1},
    {"shmref length", PGD_WIRE_BATCH_SHM, mut_ref_len, NULL,
     "wire: BATCH_SHM shmref length 287, expected 288 (n_images 2 x patches_per_image 3", PGD_WIRE_R_SHMREF, 1},
    {"shmref reserved", PGD_WIRE_BATCH_SHM, mut_ref_res, NULL,
     "wire: BATCH_SHM shmref reserved field at byte 20 is 0x1, must be 0", PGD_WIRE_R_RESERVED, 1},
    {"segment without '/'", PGD_WIRE_BATCH_SHM, mut_seg_noslash, NULL, "wire: BATCH_SHM segment name must be '/'",
     PGD_WIRE_R_TEXT, 1},
    {"segment with a second '/'", PGD_WIRE_BATCH_SHM, mut_seg_slash, NULL,
     "wire: BATCH_SHM segment name has byte 0x2f at 4", PGD_WIRE_R_TEXT, 1},
    {"segment '/'", PGD_WIRE_BATCH_SHM, mut_seg_slash_only, NULL, "wire: BATCH_SHM segment name must be '/'",
     PGD_WIRE_R_TEXT, 1},
    {"BATCH_SHM without a phase", PGD_WIRE_BATCH_SHM, mut_no_phase_shm, NULL, "wire: BATCH_SHM flags 0x10 has 0 phase",
     PGD_WIRE_R_FLAGS, 1},
    {"CREDIT flag 0x2", PGD_WIRE_CREDIT, mut_credit_flag, NULL, "wire: CREDIT flags 0x2 has unknown bits 0x2",
     PGD_WIRE_R_FLAGS, 1},
    {"RELEASE with a frame", PGD_WIRE_RELEASE, mut_release_frame, NULL, "wire: RELEASE nframes 1, expected 0",
     PGD_WIRE_R_NFRAMES, 1},
    /* revision 3: PATCHES_SHM, the HELLO offer and the JOB's permission */
    {"PATCHES_SHM odd generation", PGD_WIRE_PATCHES_SHM, mut_gen_odd, NULL,
     "wire: PATCHES_SHM shmref generation 9, expected an even number >= 2", PGD_WIRE_R_SHMREF, 1},
    {"PATCHES_SHM generation 0", PGD_WIRE_PATCHES_SHM, mut_gen_zero, NULL,
     "wire: PATCHES_SHM shmref generation 0, expected an even number >= 2", PGD_WIRE_R_SHMREF, 1},
    {"BATCH_SHM with a generation", PGD_WIRE_BATCH_SHM, mut_batch_gen, NULL,
     "wire: BATCH_SHM shmref reserved field at byte 24 is 0x2, must be 0", PGD_WIRE_R_RESERVED, 1},
    {"PATCHES_SHM 2 images", PGD_WIRE_PATCHES_SHM, mut_pshm_two_images, NULL, "wire: PATCHES_SHM n_images 2, expected 1",
     PGD_WIRE_R_COUNT, 1},
    {"PATCHES_SHM segment without '/'", PGD_WIRE_PATCHES_SHM, mut_pshm_seg_slash, NULL,
     "wire: PATCHES_SHM segment name must be '/'", PGD_WIRE_R_TEXT, 1},
    {"PATCHES with a flag", PGD_WIRE_PATCHES, mut_patches_flag, NULL, "wire: PATCHES flags 0x1 has unknown bits 0x1",
     PGD_WIRE_R_FLAGS, 1},
    {"HELLO flag 0x2", PGD_WIRE_HELLO, mut_hello_flag2, NULL, "wire: HELLO flags 0x2 has unknown bits 0x2",
     PGD_WIRE_R_FLAGS, 1},
    {"JOB flags 0x3", PGD_WIRE_JOB, mut_job_flag2, NULL, "wire: JOB flags 0x3 has unknown bits 0x2", PGD_WIRE_R_FLAGS,
     1},
};

static void test_bad_messages(void)
{
    static tmsg m;
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        make_msg(&m, c->type);
        if (c->mut)
            c->mut(&m);
        pgd_wire_header asked = m.h; /* before pack_raw derives the lengths */
        pack_raw(&m);
        if (c->post)
            c->post(m.head);
        pgd_wire_msg d;
        pgd_err err = PGD_ERR_INIT;
        int rc = decode_raw(&m, &d, &err);
        int ok = rc == -1 && strstr(err.msg, c->want) && d.reason == c->reason &&
                 err.code == (c->reason == PGD_WIRE_R_CRC ? PGD_ECORRUPT : PGD_EFORMAT);
        if (!ok)
            printf("\n    case '%s': rc %d reason %s code %s msg '%s'\n", c->name, rc, pgd_wire_reason_name(d.reason),
                   pgd_code_name(err.code), err.msg);
        CU_ASSERT(ok);
        if (!c->encoder_refuses)
            continue;
        pgd_err eerr = PGD_ERR_INIT;
        uint8_t out[PGD_WIRE_HEADER_SIZE];
        memset(out, 0xAA, sizeof out);
        rc = pgd_wire_encode(&asked, m.f, m.n, out, &eerr);
        ok = rc == -1 && eerr.code == PGD_EINVAL && strstr(eerr.msg, c->want) && out[0] == 0xAA;
        if (!ok)
            printf("\n    encoder, case '%s': rc %d msg '%s'\n", c->name, rc, eerr.msg);
        CU_ASSERT(ok);
    }
}

/* Every exact-length payload frame off by one, either as the header states it or as it is sent. */
static void test_frame_lengths_off_by_one(void)
{
    static tmsg m;
    for (size_t t = 0; t < N_TYPES; t++) {
        make_msg(&m, all_types[t]);
        size_t n = m.n;
        for (size_t i = 0; i < n; i++) {
            for (int delta = -1; delta <= 1; delta += 2) {
                pgd_err err = PGD_ERR_INIT;
                pgd_wire_msg d;
                int text = all_types[t] == PGD_WIRE_HELLO || all_types[t] == PGD_WIRE_JOB_ERROR ||
                           (all_types[t] == PGD_WIRE_JOB && i == 1) || (all_types[t] == PGD_WIRE_BATCH_SHM && i == 4) ||
                           (all_types[t] == PGD_WIRE_PATCHES_SHM && i == 2);
                /* the header states the true length, the frame sent differs by one */
                make_msg(&m, all_types[t]);
                pack_raw(&m);
                m.f[i].len = (size_t)((long)m.f[i].len + delta);
                char want[80];
                snprintf(want, sizeof want, "frame %zu (", i + 1);
                CU_ASSERT_EQUAL(decode_raw(&m, &d, &err), -1);
                CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "header says"));
                CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
                CU_ASSERT_EQUAL(d.reason, PGD_WIRE_R_FRAME_LEN);
                if (text) /* any length in 1..max is valid text */
                    continue;
                /* header and frame agree with each other, not with the counts */
                make_msg(&m, all_types[t]);
                m.f[i].len = (size_t)((long)m.f[i].len + delta);
                pack_raw(&m);
                pgd_err_clear(&err);
                CU_ASSERT_EQUAL(decode_raw(&m, &d, &err), -1);
                CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bytes, expected"));
                CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
                CU_ASSERT_EQUAL(d.reason, PGD_WIRE_R_FRAME_LEN);
                pgd_err_clear(&err);
                uint8_t out[PGD_WIRE_HEADER_SIZE];
                CU_ASSERT_EQUAL(pgd_wire_encode(&m.h, m.f, m.n, out, &err), -1);
                CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
            }
        }
    }
}

/* Flipping any one of the 1024 header bits of any message type is caught. */
static void test_every_bit_flip_rejected(void)
{
    static tmsg m;
    int accepted = 0;
    for (size_t t = 0; t < N_TYPES; t++) {
        make_msg(&m, all_types[t]);
        CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, NULL), 0);
        uint8_t good[PGD_WIRE_HEADER_SIZE];
        memcpy(good, m.head, sizeof good);
        for (int bit = 0; bit < 8 * PGD_WIRE_HEADER_SIZE; bit++) {
            memcpy(m.head, good, sizeof good);
            m.head[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            pgd_wire_msg d;
            if (decode_raw(&m, &d, NULL) == 0) {
                accepted++;
                printf("\n    %s: bit %d flipped and accepted\n", pgd_wire_type_name(all_types[t]), bit);
            } else {
                CU_ASSERT(d.reason == PGD_WIRE_R_CRC || d.reason == PGD_WIRE_R_MAGIC ||
                          d.reason == PGD_WIRE_R_VERSION);
            }
        }
        memcpy(m.head, good, sizeof good);
        pgd_wire_msg d;
        CU_ASSERT_EQUAL(decode_raw(&m, &d, NULL), 0);
    }
    CU_ASSERT_EQUAL(accepted, 0);
}

static void test_frame_count_limits(void)
{
    static tmsg m;
    pgd_err err = PGD_ERR_INIT;
    pgd_wire_msg d;
    CU_ASSERT_EQUAL(pgd_wire_decode(NULL, 0, &d, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: empty message, no header frame"));
    CU_ASSERT_EQUAL(d.reason, PGD_WIRE_R_NFRAMES);

    pgd_wire_frame no_data = {NULL, PGD_WIRE_HEADER_SIZE};
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_decode(&no_data, 1, &d, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: header frame has no data"));

    make_msg(&m, PGD_WIRE_HEARTBEAT);
    for (size_t i = 0; i < 6; i++)
        set_frame(&m, i, "z", 1);
    pack_raw(&m);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(decode_raw(&m, &d, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: message has 7 frames, at most 6 (header + 5 payload)"));
    CU_ASSERT_EQUAL(d.reason, PGD_WIRE_R_NFRAMES);

    pgd_err_clear(&err);
    uint8_t out[PGD_WIRE_HEADER_SIZE];
    CU_ASSERT_EQUAL(pgd_wire_encode(&m.h, m.f, 6, out, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: HEARTBEAT with 6 payload frames, at most 5"));

    /* a payload frame of the right length but no data */
    make_msg(&m, PGD_WIRE_HELLO);
    m.f[0].data = NULL;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_encode(&m.h, m.f, m.n, out, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: HELLO frame 1 (name) has no data"));
}

/* The encoder overwrites magic, version, nframes and frame_len, and refuses what the decoder would. */
static void test_encoder_fills_and_refuses(void)
{
    static tmsg m;
    make_msg(&m, PGD_WIRE_PATCHES);
    m.h.magic = 0;
    m.h.version = 9;
    m.h.nframes = 77;
    m.h.frame_len[4] = 12345;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, &err), 0);
    pgd_wire_msg d;
    CU_ASSERT_EQUAL(decode_raw(&m, &d, &err), 0);
    CU_ASSERT_EQUAL(d.h.nframes, 2);
    CU_ASSERT_EQUAL(d.h.frame_len[4], 0);
    CU_ASSERT_EQUAL(d.h.magic, PGD_WIRE_MAGIC);

    /* the JOB spec is validated against the header's patch_size */
    make_msg(&m, PGD_WIRE_JOB);
    m.h.patch_size = 21;
    m.h.channels = 1;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: JOB spec fit_size 20 is below patch_size 21"));
}

static void test_helpers(void)
{
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_BATCH), "BATCH");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_JOB_ERROR), "JOB_ERROR");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_HELLO), "HELLO");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_END), "END");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(0), "UNKNOWN");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_BATCH_SHM), "BATCH_SHM");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_RELEASE), "RELEASE");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_PATCHES_SHM), "PATCHES_SHM");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(13), "UNKNOWN");
    CU_ASSERT_STRING_EQUAL(pgd_wire_type_name(PGD_WIRE_TYPE_MAX + 1), "UNKNOWN");
    CU_ASSERT_STRING_EQUAL(pgd_wire_reason_name(PGD_WIRE_R_SHMREF), "shmref");
    CU_ASSERT_STRING_EQUAL(pgd_wire_reason_name(PGD_WIRE_R_CRC), "crc");
    CU_ASSERT_STRING_EQUAL(pgd_wire_reason_name(PGD_WIRE_R_FRAME_LEN), "frame_len");
    CU_ASSERT_STRING_EQUAL(pgd_wire_reason_name(PGD_WIRE_R_MAX), "unknown");
    for (int r = 0; r < PGD_WIRE_R_MAX; r++)
        CU_ASSERT_STRING_NOT_EQUAL(pgd_wire_reason_name((pgd_wire_reason)r), "unknown");

    uint8_t ids[2 * PGD_WIRE_ID_SLOT];
    memset(ids, 0x55, sizeof ids);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_wire_put_id(ids, 1, "", &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: image id 1 is empty"));
    char long_id[65];
    memset(long_id, 'q', 64);
    long_id[64] = '\0';
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_put_id(ids, 0, long_id, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "is 64 bytes, at most 63 fit"));
    CU_ASSERT_EQUAL(ids[0], 0x55); /* untouched */
    CU_ASSERT_EQUAL(pgd_wire_put_id(ids, 1, "ab", NULL), 0);
    CU_ASSERT_EQUAL(memcmp(ids + PGD_WIRE_ID_SLOT, "ab\0\0", 4), 0);
    CU_ASSERT_EQUAL(ids[2 * PGD_WIRE_ID_SLOT - 1], 0);

    /* accessors do not read past their frames */
    static tmsg m;
    make_msg(&m, PGD_WIRE_BATCH);
    CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, NULL), 0);
    pgd_wire_msg d;
    CU_ASSERT_EQUAL_FATAL(decode_raw(&m, &d, NULL), 0);
    uint32_t row = 9, col = 9;
    CU_ASSERT_EQUAL(pgd_wire_cell(&d, 2 * PPI, &row, &col), -1);
    CU_ASSERT_EQUAL(row, 0);
    CU_ASSERT_PTR_NULL(pgd_wire_id(&d, 2));
    CU_ASSERT_EQUAL(pgd_wire_label(&d, 2), -1);
    CU_ASSERT_PTR_NULL(pgd_wire_patch(&d, 2, 0));
    CU_ASSERT_PTR_NULL(pgd_wire_patch(&d, 0, PPI));
    CU_ASSERT_PTR_EQUAL(pgd_wire_patch(&d, 0, 0), d.pixels);
    char small[4];
    CU_ASSERT_EQUAL(pgd_wire_text(&d, small, sizeof small), 0);
    CU_ASSERT_STRING_EQUAL(small, "");

    make_msg(&m, PGD_WIRE_HELLO);
    CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(decode_raw(&m, &d, NULL), 0);
    CU_ASSERT_EQUAL(pgd_wire_text(&d, small, sizeof small), 11);
    CU_ASSERT_STRING_EQUAL(small, "hos");
}

/* Count every reject, log each reason once. */
static void test_stats_log_once(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wire-log.txt", pgd_test_tmpdir());
    FILE *f = fopen(path, "w+");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    pgd_log_init("test", PGD_LOG_INFO, 0);
    pgd_log_set_stream(f);

    pgd_wire_stats s = {0};
    pgd_err crc = PGD_ERR_INIT, magic = PGD_ERR_INIT;
    pgd_fail(&crc, PGD_ECORRUPT, "wire: header crc mismatch (first)");
    pgd_fail(&magic, PGD_EFORMAT, "wire: bad magic 0x12345678");
    CU_ASSERT_EQUAL(pgd_wire_stats_reject(&s, PGD_WIRE_R_CRC, &crc), 1);
    CU_ASSERT_EQUAL(pgd_wire_stats_reject(&s, PGD_WIRE_R_CRC, &crc), 0);
    CU_ASSERT_EQUAL(pgd_wire_stats_reject(&s, PGD_WIRE_R_MAGIC, &magic), 1);
    CU_ASSERT_EQUAL(pgd_wire_stats_reject(&s, PGD_WIRE_R_CRC, NULL), 0);
    CU_ASSERT_EQUAL(s.rejected, 4);
    CU_ASSERT_EQUAL(s.by_reason[PGD_WIRE_R_CRC], 3);
    CU_ASSERT_EQUAL(s.by_reason[PGD_WIRE_R_MAGIC], 1);
    pgd_wire_stats_log(&s);
    pgd_wire_stats empty = {0};
    pgd_wire_stats_log(&empty); /* says nothing */

    pgd_log_set_stream(NULL);
    rewind(f);
    char line[1024];
    int lines = 0, crc_lines = 0, magic_lines = 0, summary = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        crc_lines += strstr(line, "dropped a bad message (crc): wire: header crc mismatch (first)") != NULL;
        magic_lines += strstr(line, "dropped a bad message (magic): wire: bad magic 0x12345678") != NULL;
        summary += strstr(line, "wire: rejected 4 messages: magic 1, crc 3") != NULL;
    }
    fclose(f);
    CU_ASSERT_EQUAL(lines, 3);
    CU_ASSERT_EQUAL(crc_lines, 1);
    CU_ASSERT_EQUAL(magic_lines, 1);
    CU_ASSERT_EQUAL(summary, 1);
}

/* --- over ZeroMQ ------------------------------------------------------------------------------------- */

static void *g_ctx;

static void *open_sock(int type, const char *endpoint, int bind)
{
    if (!g_ctx)
        g_ctx = zmq_ctx_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(g_ctx);
    void *s = zmq_socket(g_ctx, type);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int zero = 0, timeout = 5000;
    CU_ASSERT_EQUAL(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
    CU_ASSERT_EQUAL(zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout), 0); /* a hang fails, not blocks */
    if (endpoint) {
        int rc = bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint);
        if (rc != 0)
            printf("\n    %s %s: %s\n", bind ? "bind" : "connect", endpoint, zmq_strerror(zmq_errno()));
        CU_ASSERT_EQUAL_FATAL(rc, 0);
    }
    return s;
}

static void close_sock(void *s)
{
    CU_ASSERT_EQUAL(zmq_close(s), 0);
}

static void send_tmsg(void *s, const pgd_wire_frame *rid, tmsg *m)
{
    pgd_err err = PGD_ERR_INIT;
    int rc = pgd_wire_send(s, rid, &m->h, m->f, m->n, 0, &err);
    if (rc != 0)
        printf("\n    send %s: %s\n", pgd_wire_type_name(m->h.type), err.msg);
    CU_ASSERT_EQUAL(rc, 0);
}

/* Receive, expecting a good message equal to m. */
static void recv_expect(void *s, int want_rid, tmsg *m)
{
    pgd_wire_rx rx;
    pgd_err err = PGD_ERR_INIT;
    int rc = pgd_wire_recv(s, &rx, want_rid, 0, &err);
    if (rc != 0)
        printf("\n    recv: %s\n", err.msg);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc == 0) {
        pgd_wire_frame seen[PGD_WIRE_MAX_FRAMES];
        CU_ASSERT_EQUAL(rx.nparts, m->n + 1);
        for (size_t i = 0; i < m->n; i++) {
            seen[i].data = zmq_msg_data(&rx.parts[i + 1]);
            seen[i].len = zmq_msg_size(&rx.parts[i + 1]);
        }
        CU_ASSERT_EQUAL(rx.msg.h.type, m->h.type);
        check_decoded(m, &rx.msg, seen);
    }
    pgd_wire_rx_close(&rx);
    pgd_wire_rx_close(&rx); /* twice is harmless */
}

static void pair_round_trip(const char *endpoint)
{
    static tmsg m;
    void *a = open_sock(ZMQ_PAIR, endpoint, 1), *b = open_sock(ZMQ_PAIR, endpoint, 0);
    for (size_t t = 0; t < N_TYPES; t++) {
        make_msg(&m, all_types[t]);
        send_tmsg(a, NULL, &m);
        recv_expect(b, 0, &m);
        send_tmsg(b, NULL, &m);
        recv_expect(a, 0, &m);
    }
    close_sock(a);
    close_sock(b);
}

static void test_zmq_pair_inproc(void)
{
    pair_round_trip("inproc://wire-pair");
}

static void test_zmq_pair_ipc(void)
{
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/wire-pair.sock", pgd_test_tmpdir());
    pair_round_trip(ep);
}

static void dealer_router(const char *endpoint)
{
    static tmsg m;
    void *router = open_sock(ZMQ_ROUTER, endpoint, 1);
    void *dealer = open_sock(ZMQ_DEALER, NULL, 0);
    CU_ASSERT_EQUAL(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "loader-7", 8), 0);
    CU_ASSERT_EQUAL_FATAL(zmq_connect(dealer, endpoint), 0);

    make_msg(&m, PGD_WIRE_HELLO);
    send_tmsg(dealer, NULL, &m);
    pgd_wire_rx rx;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_wire_recv(router, &rx, 1, 0, &err), 0);
    CU_ASSERT_EQUAL(rx.msg.h.type, PGD_WIRE_HELLO);
    CU_ASSERT_EQUAL(rx.msg.h.credit, 4);
    pgd_wire_frame rid = pgd_wire_rx_routing_id(&rx);
    CU_ASSERT_EQUAL(rid.len, 8);
    CU_ASSERT_EQUAL(memcmp(rid.data, "loader-7", 8), 0);
    char rid_copy[8];
    memcpy(rid_copy, rid.data, sizeof rid_copy);
    pgd_wire_rx_close(&rx);
    CU_ASSERT_EQUAL(pgd_wire_rx_routing_id(&rx).len, 0);

    /* the router answers that peer with a JOB, the dealer answers with PATCHES */
    pgd_wire_frame to = {rid_copy, sizeof rid_copy};
    make_msg(&m, PGD_WIRE_JOB);
    send_tmsg(router, &to, &m);
    recv_expect(dealer, 0, &m);
    make_msg(&m, PGD_WIRE_PATCHES);
    send_tmsg(dealer, NULL, &m);
    recv_expect(router, 1, &m);

    /* an unknown peer with ROUTER_MANDATORY */
    int one = 1;
    CU_ASSERT_EQUAL(zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one), 0);
    pgd_wire_frame nobody = {"nobody", 6};
    make_msg(&m, PGD_WIRE_STOP);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_send(router, &nobody, &m.h, m.f, m.n, 0, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ENOENT);

    /* a raw bad message from the dealer: the router keeps the routing id and reports the fault */
    CU_ASSERT_EQUAL(zmq_send(dealer, "garbage", 7, 0), 7);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_recv(router, &rx, 1, 0, &err), -1);
    CU_ASSERT_EQUAL(rx.msg.reason, PGD_WIRE_R_HEADER_SIZE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wire: header frame is 7 bytes, expected 128"));
    CU_ASSERT_EQUAL(pgd_wire_rx_routing_id(&rx).len, 8);
    pgd_wire_rx_close(&rx);
    make_msg(&m, PGD_WIRE_HEARTBEAT);
    send_tmsg(dealer, NULL, &m);
    recv_expect(router, 1, &m);

    close_sock(dealer);
    close_sock(router);
}

static void test_zmq_dealer_router_inproc(void)
{
    dealer_router("inproc://wire-router");
}

static void test_zmq_dealer_router_ipc(void)
{
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/wire-router.sock", pgd_test_tmpdir());
    dealer_router(ep);
}

/* Send the given frames raw (no validation). */
static void send_raw(void *s, const pgd_wire_frame *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(zmq_send(s, f[i].data, f[i].len, i + 1 < n ? ZMQ_SNDMORE : 0), (int)f[i].len);
}

/* A bad message is consumed whole: the next good one arrives intact. */
static void expect_bad_then_good(void *tx, void *rx_sock, const char *want, pgd_wire_reason reason, size_t frames)
{
    static tmsg good;
    pgd_wire_rx rx;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_wire_recv(rx_sock, &rx, 0, 0, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    CU_ASSERT_EQUAL(rx.msg.reason, reason);
    CU_ASSERT_EQUAL(rx.nreceived, frames);
    if (!strstr(err.msg, want))
        printf("\n    got '%s', want '%s'\n", err.msg, want);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
    pgd_wire_rx_close(&rx);
    make_msg(&good, PGD_WIRE_BATCH);
    send_tmsg(tx, NULL, &good);
    recv_expect(rx_sock, 0, &good);
}

static void raw_bad_messages(const char *endpoint)
{
    static tmsg m;
    void *a = open_sock(ZMQ_PAIR, endpoint, 1), *b = open_sock(ZMQ_PAIR, endpoint, 0);

    /* a truncated header */
    make_msg(&m, PGD_WIRE_HEARTBEAT);
    pack_raw(&m);
    pgd_wire_frame f[12] = {{m.head, 100}};
    send_raw(a, f, 1);
    expect_bad_then_good(a, b, "wire: header frame is 100 bytes, expected 128", PGD_WIRE_R_HEADER_SIZE, 1);

    /* a JOB header announcing 3 frames, with 2 sent */
    make_msg(&m, PGD_WIRE_JOB);
    pack_raw(&m);
    f[0] = (pgd_wire_frame){m.head, PGD_WIRE_HEADER_SIZE};
    f[1] = m.f[0];
    f[2] = m.f[1];
    send_raw(a, f, 3);
    expect_bad_then_good(a, b, "wire: JOB header says 3 payload frames, message has 2", PGD_WIRE_R_NFRAMES, 3);

    /* a BATCH with a frame too many and then 11 frames: the extra ones are drained */
    make_msg(&m, PGD_WIRE_BATCH);
    pack_raw(&m);
    f[0] = (pgd_wire_frame){m.head, PGD_WIRE_HEADER_SIZE};
    for (size_t i = 0; i < 4; i++)
        f[i + 1] = m.f[i];
    f[5] = (pgd_wire_frame){"extra", 5};
    send_raw(a, f, 6);
    expect_bad_then_good(a, b, "wire: BATCH header says 4 payload frames, message has 5", PGD_WIRE_R_NFRAMES, 6);
    for (size_t i = 6; i < 11; i++)
        f[i] = (pgd_wire_frame){"more", 4};
    send_raw(a, f, 11);
    expect_bad_then_good(a, b, "wire: message has 11 frames, at most 6 (header + 5 payload); dropped",
                         PGD_WIRE_R_NFRAMES, 11);

    /* a header with a bad CRC */
    make_msg(&m, PGD_WIRE_END);
    pack_raw(&m);
    m.head[20] ^= 1;
    f[0] = (pgd_wire_frame){m.head, PGD_WIRE_HEADER_SIZE};
    send_raw(a, f, 1);
    pgd_wire_rx rx;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_wire_recv(b, &rx, 0, 0, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ECORRUPT);
    CU_ASSERT_EQUAL(rx.msg.reason, PGD_WIRE_R_CRC);
    pgd_wire_rx_close(&rx);

    close_sock(a);
    close_sock(b);
}

static void test_zmq_raw_bad_inproc(void)
{
    raw_bad_messages("inproc://wire-raw");
}

static void test_zmq_raw_bad_ipc(void)
{
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/wire-raw.sock", pgd_test_tmpdir());
    raw_bad_messages(ep);
}

static void test_zmq_dontwait_and_refusal(void)
{
    static tmsg m;
    void *a = open_sock(ZMQ_PAIR, "inproc://wire-nowait", 1);
    pgd_wire_rx rx;
    pgd_err err = PGD_ERR_INIT;

    /* nothing waiting */
    CU_ASSERT_EQUAL(pgd_wire_recv(a, &rx, 0, PGD_WIRE_DONTWAIT, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EBUSY);
    CU_ASSERT_EQUAL(rx.msg.reason, PGD_WIRE_R_OK);
    pgd_wire_rx_close(&rx);

    /* no peer to take it */
    make_msg(&m, PGD_WIRE_HEARTBEAT);
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_send(a, NULL, &m.h, m.f, m.n, PGD_WIRE_DONTWAIT, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EBUSY);

    /* an invalid message is not sent at all */
    void *b = open_sock(ZMQ_PAIR, "inproc://wire-nowait", 0);
    make_msg(&m, PGD_WIRE_BATCH);
    m.h.flags = 0;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_send(a, NULL, &m.h, m.f, m.n, 0, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "has 0 phase flags"));
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_wire_recv(b, &rx, 0, PGD_WIRE_DONTWAIT, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EBUSY);
    pgd_wire_rx_close(&rx);

    /* once the peer is known to a (it has heard from b), a good message goes through without waiting */
    make_msg(&m, PGD_WIRE_HEARTBEAT);
    send_tmsg(b, NULL, &m);
    recv_expect(a, 0, &m);
    make_msg(&m, PGD_WIRE_CREDIT);
    pgd_err_clear(&err);
    int rc = pgd_wire_send(a, NULL, &m.h, m.f, m.n, PGD_WIRE_DONTWAIT, &err);
    if (rc != 0)
        printf("\n    send: %s\n", err.msg);
    CU_ASSERT_EQUAL(rc, 0);
    recv_expect(b, 0, &m);

    close_sock(a);
    close_sock(b);
    CU_ASSERT_EQUAL(zmq_ctx_term(g_ctx), 0);
    g_ctx = NULL;
}

/* --- zero-copy send ---------------------------------------------------------------------------------- */

typedef struct zc_seen {
    int calls;
    const void *data;
    void *hint;
} zc_seen;

static void zc_record(void *data, void *hint)
{
    zc_seen *z = hint; /* ZeroMQ's thread writes, the test reads only after zmq_ctx_term (a barrier) */
    z->calls++;
    z->data = data;
    z->hint = hint;
}

/* A BATCH sent with its pixels given: same bytes on arrival, the free function called once with the buffer
 * after the context is gone, never for refused sends. */
static void zc_round_trip(const char *endpoint)
{
    static tmsg m, copy;
    static zc_seen z;
    memset(&z, 0, sizeof z);
    void *ctx = zmq_ctx_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0, timeout = 5000;
    CU_ASSERT_EQUAL(zmq_setsockopt(a, ZMQ_LINGER, &zero, sizeof zero), 0);
    CU_ASSERT_EQUAL(zmq_setsockopt(b, ZMQ_LINGER, &zero, sizeof zero), 0);
    CU_ASSERT_EQUAL(zmq_setsockopt(b, ZMQ_RCVTIMEO, &timeout, sizeof timeout), 0);
    CU_ASSERT_EQUAL_FATAL(zmq_bind(a, endpoint), 0);
    CU_ASSERT_EQUAL_FATAL(zmq_connect(b, endpoint), 0);
    make_msg(&m, PGD_WIRE_BATCH);
    copy = m;
    pgd_err err = PGD_ERR_INIT;
    int given = -1;

    /* refusals keep the buffer with the caller */
    CU_ASSERT_EQUAL(pgd_wire_send_zc(a, NULL, &m.h, m.f, m.n, m.n, zc_record, &z, 0, &given, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_EQUAL(given, 0);
    m.h.flags = 0;
    pgd_err_clear(&err);
    given = -1;
    CU_ASSERT_EQUAL(pgd_wire_send_zc(a, NULL, &m.h, m.f, m.n, 0, zc_record, &z, 0, &given, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
    CU_ASSERT_EQUAL(given, 0);
    m.h.flags = copy.h.flags;

    pgd_err_clear(&err);
    int rc = pgd_wire_send_zc(a, NULL, &m.h, m.f, m.n, 0, zc_record, &z, 0, &given, &err);
    if (rc != 0)
        printf("\n    send_zc: %s\n", err.msg);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(given, 1);
    recv_expect(b, 0, &copy);
    CU_ASSERT_EQUAL(zmq_close(a), 0);
    CU_ASSERT_EQUAL(zmq_close(b), 0);
    CU_ASSERT_EQUAL(zmq_ctx_term(ctx), 0);
    CU_ASSERT_EQUAL(z.calls, 1);
    CU_ASSERT_PTR_EQUAL(z.data, m.f[0].data);
    CU_ASSERT_PTR_EQUAL(z.hint, &z);
}

static void test_zmq_send_zc_inproc(void)
{
    zc_round_trip("inproc://wire-zc");
}

static void test_zmq_send_zc_ipc(void)
{
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/wire-zc.sock", pgd_test_tmpdir());
    zc_round_trip(ep);
}

/* With PGD_WIRE_DONTWAIT and no peer, nothing is sent and the buffer stays the caller's. */
static void test_zmq_send_zc_busy(void)
{
    static tmsg m;
    static zc_seen z;
    memset(&z, 0, sizeof z);
    void *ctx = zmq_ctx_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    void *a = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0;
    CU_ASSERT_EQUAL(zmq_setsockopt(a, ZMQ_LINGER, &zero, sizeof zero), 0);
    CU_ASSERT_EQUAL_FATAL(zmq_bind(a, "inproc://wire-zc-busy"), 0);
    make_msg(&m, PGD_WIRE_BATCH);
    pgd_err err = PGD_ERR_INIT;
    int given = -1;
    CU_ASSERT_EQUAL(pgd_wire_send_zc(a, NULL, &m.h, m.f, m.n, 0, zc_record, &z, PGD_WIRE_DONTWAIT, &given, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EBUSY);
    CU_ASSERT_EQUAL(given, 0);
    CU_ASSERT_EQUAL(zmq_close(a), 0);
    CU_ASSERT_EQUAL(zmq_ctx_term(ctx), 0);
    CU_ASSERT_EQUAL(z.calls, 0);
}

/* Revision 3 round trips: the HELLO offer, the JOB's permission, RELEASE from the sampler to a loader (with
 * the answer's attempt), each encoded and decoded with the flag or field kept. */
static void test_revision3_fields(void)
{
    static tmsg m;
    const struct {
        pgd_wire_type type;
        uint32_t flags, attempt;
    } v[] = {{PGD_WIRE_HELLO, PGD_WIRE_HELLO_SHM, 0}, {PGD_WIRE_JOB, PGD_WIRE_JOB_SHM, 1}, {PGD_WIRE_RELEASE, 0, 4}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        make_msg(&m, v[i].type);
        m.h.flags = v[i].flags;
        m.h.attempt = v[i].attempt;
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL_FATAL(pgd_wire_encode(&m.h, m.f, m.n, m.head, &err), 0);
        pgd_wire_msg d;
        CU_ASSERT_EQUAL(decode_raw(&m, &d, &err), 0);
        CU_ASSERT_EQUAL(d.h.flags, v[i].flags);
        CU_ASSERT_EQUAL(d.h.attempt, v[i].attempt);
    }
    CU_ASSERT_EQUAL(PGD_WIRE_REVISION, 3);
}

static const pgd_test_case cases[] = {
    {"revision3_fields", test_revision3_fields},
    {"round_trip_every_type", test_round_trip_every_type},
    {"header_layout", test_header_layout},
    {"valid_edges", test_valid_edges},
    {"bad_messages", test_bad_messages},
    {"frame_lengths_off_by_one", test_frame_lengths_off_by_one},
    {"every_bit_flip_rejected", test_every_bit_flip_rejected},
    {"frame_count_limits", test_frame_count_limits},
    {"encoder_fills_and_refuses", test_encoder_fills_and_refuses},
    {"helpers", test_helpers},
    {"stats_log_once", test_stats_log_once},
    {"zmq_pair_inproc", test_zmq_pair_inproc},
    {"zmq_pair_ipc", test_zmq_pair_ipc},
    {"zmq_dealer_router_inproc", test_zmq_dealer_router_inproc},
    {"zmq_dealer_router_ipc", test_zmq_dealer_router_ipc},
    {"zmq_raw_bad_inproc", test_zmq_raw_bad_inproc},
    {"zmq_raw_bad_ipc", test_zmq_raw_bad_ipc},
    {"zmq_dontwait_and_refusal", test_zmq_dontwait_and_refusal},
    {"zmq_send_zc_inproc", test_zmq_send_zc_inproc},
    {"zmq_send_zc_ipc", test_zmq_send_zc_ipc},
    {"zmq_send_zc_busy", test_zmq_send_zc_busy},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("wire", cases, argc, argv);
}
