/* fuzz_wire.c: libFuzzer target for the wire decoder, checking that the encoder agrees with it. */
/*
 * Input layout (the seeds in tests/corpus/wire use it):
 *   byte 0            frame count n = byte & 7 (0..7; 7 is one more than a message may have)
 *   2 x (n - 1) bytes u16 little-endian lengths of frames 0 .. n-2
 *   the rest          the frames' bytes, one after another; the last frame takes whatever is left
 * A length that runs past the end of the input is cut short, missing lengths count as 0: every input
 * maps to some message.
 *
 * Invariants checked (abort() on violation): a rejected message has a reason and an error text; an
 * accepted one re-encodes to exactly the same 128 header bytes, and every cell, id, label, text and patch
 * pointer it exposes is within its frame and obeys the rules.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_WIRE_MAX_SPLIT 7

/* Cut the input into frames as described above. Returns the frame count. */
static size_t fuzz_wire_split(const uint8_t *data, size_t size, pgd_wire_frame *f)
{
    if (size == 0)
        return 0;
    size_t n = data[0] & 7u, table = 1 + 2 * (n ? n - 1 : 0);
    size_t pos = table < size ? table : size;
    for (size_t i = 0; i < n; i++) {
        size_t at = 1 + 2 * i, want;
        if (i + 1 == n)
            want = size - pos;
        else
            want = at + 1 < size ? (size_t)(data[at] | data[at + 1] << 8) : 0;
        if (want > size - pos)
            want = size - pos;
        f[i].data = data + pos;
        f[i].len = want;
        pos += want;
    }
    return n;
}

/* Everything an accepted message exposes must be in range and well formed. */
static void fuzz_wire_check_msg(const pgd_wire_msg *m, const pgd_wire_frame *f, size_t n)
{
    uint8_t again[PGD_WIRE_HEADER_SIZE];
    if (pgd_wire_encode(&m->h, f + 1, n - 1, again, NULL) != 0)
        abort();
    if (memcmp(again, f[0].data, PGD_WIRE_HEADER_SIZE) != 0)
        abort();
    for (size_t i = 0; i < m->n_cells && m->cells; i++) {
        uint32_t row, col;
        if (pgd_wire_cell(m, i, &row, &col) != 0 || row >= m->h.grid_m || col >= m->h.grid_n)
            abort();
    }
    for (size_t i = 0; m->ids && i < m->h.n_images; i++) {
        size_t len = strnlen(pgd_wire_id(m, i), PGD_WIRE_ID_SLOT);
        if (len == 0 || len >= PGD_WIRE_ID_SLOT)
            abort();
    }
    for (size_t i = 0; m->labels && i < m->h.n_images; i++)
        if (pgd_wire_label(m, i) < -1)
            abort();
    if (m->text && (m->text_len == 0 || memchr(m->text, 0, m->text_len)))
        abort();
    if (m->pixels) {
        size_t patch = (size_t)m->h.patch_size * m->h.patch_size * m->h.channels;
        const uint8_t *last = pgd_wire_patch(m, m->h.n_images - 1, m->h.patches_per_image - 1);
        if (!last || last + patch != m->pixels + m->pixels_len)
            abort();
    }
}

/* Split, decode and check. Returns 1 when the message was accepted, 0 when it was rejected. */
static int fuzz_wire_run(const uint8_t *data, size_t size)
{
    pgd_wire_frame f[FUZZ_WIRE_MAX_SPLIT];
    size_t n = fuzz_wire_split(data, size, f);
    pgd_wire_msg m;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_wire_decode(f, n, &m, &err) != 0) {
        if (m.reason == PGD_WIRE_R_OK || err.code == PGD_OK || err.msg[0] == '\0')
            abort();
        return 0;
    }
    if (m.reason != PGD_WIRE_R_OK || err.code != PGD_OK)
        abort();
    fuzz_wire_check_msg(&m, f, n);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_wire_run(data, size);
    return 0;
}
