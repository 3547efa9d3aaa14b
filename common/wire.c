/* wire.c: the pgd wire format (version 1, revision 3): header packing, one table-driven validator, encode, decode, accessors. */
#include "wire.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crc32c.h"
#include "log.h"

/* --- little-endian access to unaligned bytes ----------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* --- header layout ----------------------------------------------------------------------------- */

enum {
    OFF_MAGIC = 0, OFF_VERSION = 4, OFF_TYPE = 6, OFF_FLAGS = 8, OFF_NFRAMES = 12, OFF_RUN_ID = 16,
    OFF_TASK_ID = 24, OFF_EPOCH = 32, OFF_BATCH = 36, OFF_STEP = 40, OFF_ATTEMPT = 44, OFF_N_IMAGES = 48,
    OFF_PPI = 52, OFF_PATCH = 56, OFF_CHANNELS = 60, OFF_GRID_M = 64, OFF_GRID_N = 68, OFF_CREDIT = 72,
    OFF_RESERVED0 = 76, OFF_FRAME_LEN = 80, OFF_RESERVED1 = 120, OFF_CRC = 124,
};

void pgd_wire_header_init(pgd_wire_header *h, pgd_wire_type type)
{
    memset(h, 0, sizeof *h);
    h->magic = PGD_WIRE_MAGIC;
    h->version = PGD_WIRE_VERSION;
    h->type = (uint16_t)type;
}

void pgd_wire_header_pack(const pgd_wire_header *h, uint8_t out[PGD_WIRE_HEADER_SIZE])
{
    put_u32(out + OFF_MAGIC, h->magic);
    put_u16(out + OFF_VERSION, h->version);
    put_u16(out + OFF_TYPE, h->type);
    put_u32(out + OFF_FLAGS, h->flags);
    put_u32(out + OFF_NFRAMES, h->nframes);
    put_u64(out + OFF_RUN_ID, h->run_id);
    put_u64(out + OFF_TASK_ID, h->task_id);
    put_u32(out + OFF_EPOCH, h->epoch);
    put_u32(out + OFF_BATCH, h->batch);
    put_u32(out + OFF_STEP, h->step);
    put_u32(out + OFF_ATTEMPT, h->attempt);
    put_u32(out + OFF_N_IMAGES, h->n_images);
    put_u32(out + OFF_PPI, h->patches_per_image);
    put_u32(out + OFF_PATCH, h->patch_size);
    put_u32(out + OFF_CHANNELS, h->channels);
    put_u32(out + OFF_GRID_M, h->grid_m);
    put_u32(out + OFF_GRID_N, h->grid_n);
    put_u32(out + OFF_CREDIT, h->credit);
    put_u32(out + OFF_RESERVED0, h->reserved0);
    for (int i = 0; i < PGD_WIRE_MAX_FRAMES; i++)
        put_u64(out + OFF_FRAME_LEN + 8 * i, h->frame_len[i]);
    put_u32(out + OFF_RESERVED1, h->reserved1);
    put_u32(out + OFF_CRC, pgd_crc32c(0, out, OFF_CRC));
}

void pgd_wire_header_unpack(const uint8_t in[PGD_WIRE_HEADER_SIZE], pgd_wire_header *h)
{
    h->magic = get_u32(in + OFF_MAGIC);
    h->version = get_u16(in + OFF_VERSION);
    h->type = get_u16(in + OFF_TYPE);
    h->flags = get_u32(in + OFF_FLAGS);
    h->nframes = get_u32(in + OFF_NFRAMES);
    h->run_id = get_u64(in + OFF_RUN_ID);
    h->task_id = get_u64(in + OFF_TASK_ID);
    h->epoch = get_u32(in + OFF_EPOCH);
    h->batch = get_u32(in + OFF_BATCH);
    h->step = get_u32(in + OFF_STEP);
    h->attempt = get_u32(in + OFF_ATTEMPT);
    h->n_images = get_u32(in + OFF_N_IMAGES);
    h->patches_per_image = get_u32(in + OFF_PPI);
    h->patch_size = get_u32(in + OFF_PATCH);
    h->channels = get_u32(in + OFF_CHANNELS);
    h->grid_m = get_u32(in + OFF_GRID_M);
    h->grid_n = get_u32(in + OFF_GRID_N);
    h->credit = get_u32(in + OFF_CREDIT);
    h->reserved0 = get_u32(in + OFF_RESERVED0);
    for (int i = 0; i < PGD_WIRE_MAX_FRAMES; i++)
        h->frame_len[i] = get_u64(in + OFF_FRAME_LEN + 8 * i);
    h->reserved1 = get_u32(in + OFF_RESERVED1);
    h->crc = get_u32(in + OFF_CRC);
}

/* --- the rules: one table row per message type ---------------------------------------------------- */

/* The count fields whose presence depends on the type. run_id, task_id, epoch, batch and step are ids
 * the sender chooses freely and are not checked. */
enum { F_N_IMAGES, F_PPI, F_PATCH, F_CHANNELS, F_GRID_M, F_GRID_N, F_CREDIT, F_ATTEMPT, F_COUNT };

/* What a count field must hold: ZERO (the type does not use it), ONE, POS (1..max), ANY. */
enum { ZERO = 0, ONE, POS, ANY };

static const struct {
    const char *name;
    size_t off;
    uint32_t max;
} fields[F_COUNT] = {
    [F_N_IMAGES] = {"n_images", offsetof(pgd_wire_header, n_images), PGD_WIRE_MAX_IMAGES},
    [F_PPI] = {"patches_per_image", offsetof(pgd_wire_header, patches_per_image), UINT32_MAX},
    [F_PATCH] = {"patch_size", offsetof(pgd_wire_header, patch_size), PGD_WIRE_MAX_PATCH},
    [F_CHANNELS] = {"channels", offsetof(pgd_wire_header, channels), 4},
    [F_GRID_M] = {"grid_m", offsetof(pgd_wire_header, grid_m), PGD_WIRE_MAX_GRID},
    [F_GRID_N] = {"grid_n", offsetof(pgd_wire_header, grid_n), PGD_WIRE_MAX_GRID},
    [F_CREDIT] = {"credit", offsetof(pgd_wire_header, credit), UINT32_MAX},
    [F_ATTEMPT] = {"attempt", offsetof(pgd_wire_header, attempt), UINT32_MAX},
};

/* Payload frame kinds. Text kinds have a length range, the others an exact length from the counts. */
enum { FR_NONE = 0, FR_NAME, FR_SPEC, FR_PATH, FR_REASON, FR_PIXELS, FR_CELLS, FR_IDS, FR_LABELS, FR_SHMREF,
       FR_SEGMENT };

static const struct {
    const char *name;
    uint32_t text_max; /* 0: not text */
} kinds[] = {
    [FR_NONE] = {"?", 0},
    [FR_NAME] = {"name", PGD_WIRE_NAME_MAX},
    [FR_SPEC] = {"spec", 0},
    [FR_PATH] = {"path", PGD_WIRE_TEXT_MAX},
    [FR_REASON] = {"reason", PGD_WIRE_TEXT_MAX},
    [FR_PIXELS] = {"pixels", 0},
    [FR_CELLS] = {"cells", 0},
    [FR_IDS] = {"ids", 0},
    [FR_LABELS] = {"labels", 0},
    [FR_SHMREF] = {"shmref", 0},
    [FR_SEGMENT] = {"segment", PGD_WIRE_SEGMENT_MAX},
};

typedef struct type_rule {
    const char *name;
    uint8_t count[F_COUNT];                 /* ZERO / ONE / POS / ANY per count field */
    uint32_t flags;                         /* flag bits allowed */
    uint32_t phases;                        /* exactly one of these must be set; 0: no such rule */
    uint32_t nframes;
    uint8_t frame[PGD_WIRE_MAX_FRAMES];     /* kind of each payload frame */
} type_rule;

#define IMAGE_COUNTS [F_PPI] = POS, [F_PATCH] = POS, [F_CHANNELS] = POS, [F_GRID_M] = POS, [F_GRID_N] = POS
#define BATCH_FLAGS (PGD_WIRE_PHASE_MASK | PGD_WIRE_FLAG_BATCH_END | PGD_WIRE_FLAG_EPOCH_END)

static const type_rule rules[PGD_WIRE_TYPE_MAX + 1] = {
    [PGD_WIRE_HELLO] = {"HELLO", {[F_CREDIT] = POS}, PGD_WIRE_HELLO_SHM, 0, 1, {FR_NAME}},
    [PGD_WIRE_HEARTBEAT] = {"HEARTBEAT", {0}, 0, 0, 0, {0}},
    [PGD_WIRE_JOB] = {"JOB", {[F_N_IMAGES] = ONE, IMAGE_COUNTS, [F_ATTEMPT] = POS}, PGD_WIRE_JOB_SHM, 0, 3,
                      {FR_SPEC, FR_PATH, FR_CELLS}},
    [PGD_WIRE_PATCHES] = {"PATCHES", {[F_N_IMAGES] = ONE, IMAGE_COUNTS, [F_ATTEMPT] = POS}, 0, 0, 2,
                          {FR_PIXELS, FR_CELLS}},
    [PGD_WIRE_JOB_ERROR] = {"JOB_ERROR", {[F_ATTEMPT] = POS}, 0, 0, 1, {FR_REASON}},
    [PGD_WIRE_STOP] = {"STOP", {0}, 0, 0, 0, {0}},
    [PGD_WIRE_BATCH] = {"BATCH", {[F_N_IMAGES] = POS, IMAGE_COUNTS}, BATCH_FLAGS, PGD_WIRE_PHASE_MASK, 4,
                        {FR_PIXELS, FR_CELLS, FR_IDS, FR_LABELS}},
    [PGD_WIRE_CREDIT] = {"CREDIT", {[F_PPI] = ANY, [F_CREDIT] = POS}, PGD_WIRE_CREDIT_SHM, 0, 0, {0}},
    [PGD_WIRE_END] = {"END", {0}, 0, 0, 0, {0}},
    [PGD_WIRE_BATCH_SHM] = {"BATCH_SHM", {[F_N_IMAGES] = POS, IMAGE_COUNTS}, BATCH_FLAGS, PGD_WIRE_PHASE_MASK, 5,
                            {FR_SHMREF, FR_CELLS, FR_IDS, FR_LABELS, FR_SEGMENT}},
    [PGD_WIRE_RELEASE] = {"RELEASE", {[F_CREDIT] = ANY, [F_ATTEMPT] = ANY}, 0, 0, 0, {0}},
    [PGD_WIRE_PATCHES_SHM] = {"PATCHES_SHM", {[F_N_IMAGES] = ONE, IMAGE_COUNTS, [F_ATTEMPT] = POS}, 0, 0, 3,
                              {FR_SHMREF, FR_CELLS, FR_SEGMENT}},
};

static const type_rule *rule_of(unsigned type)
{
    return type >= 1 && type <= PGD_WIRE_TYPE_MAX ? &rules[type] : NULL;
}

const char *pgd_wire_type_name(unsigned type)
{
    const type_rule *t = rule_of(type);
    return t ? t->name : "UNKNOWN";
}

const char *pgd_wire_reason_name(pgd_wire_reason reason)
{
    static const char *const names[PGD_WIRE_R_MAX] = {
        [PGD_WIRE_R_OK] = "ok",           [PGD_WIRE_R_HEADER_SIZE] = "header_size",
        [PGD_WIRE_R_MAGIC] = "magic",     [PGD_WIRE_R_VERSION] = "version",
        [PGD_WIRE_R_CRC] = "crc",         [PGD_WIRE_R_TYPE] = "type",
        [PGD_WIRE_R_RESERVED] = "reserved", [PGD_WIRE_R_FLAGS] = "flags",
        [PGD_WIRE_R_COUNT] = "count",     [PGD_WIRE_R_NFRAMES] = "nframes",
        [PGD_WIRE_R_FRAME_LEN] = "frame_len", [PGD_WIRE_R_TOO_LARGE] = "too_large",
        [PGD_WIRE_R_SPEC] = "spec",       [PGD_WIRE_R_TEXT] = "text",
        [PGD_WIRE_R_CELL] = "cell",       [PGD_WIRE_R_ID] = "id",
        [PGD_WIRE_R_LABEL] = "label",     [PGD_WIRE_R_SHMREF] = "shmref",
    };
    return (unsigned)reason < PGD_WIRE_R_MAX ? names[reason] : "unknown";
}

/* --- failing with a reason ------------------------------------------------------------------------ */

typedef struct vctx {
    pgd_err *err;
    pgd_code code;          /* PGD_EINVAL when encoding, PGD_EFORMAT when decoding */
    pgd_wire_reason reason; /* the first failure's reason */
} vctx;

static int vfail(vctx *v, pgd_wire_reason reason, pgd_code code, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int vfail(vctx *v, pgd_wire_reason reason, pgd_code code, int line, const char *fmt, ...)
{
    if (v->reason == PGD_WIRE_R_OK)
        v->reason = reason;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pgd_err_set(v->err, code, 0, __FILE__, line, "%s", msg);
}

#define VFAIL(v, reason, ...) vfail((v), (reason), (v)->code, __LINE__, __VA_ARGS__)

/* --- header checks (no payload byte is read here) --------------------------------------------------- */

static uint32_t field_value(const pgd_wire_header *h, int f)
{
    uint32_t x;
    memcpy(&x, (const char *)h + fields[f].off, sizeof x);
    return x;
}

static int check_count(const pgd_wire_header *h, const type_rule *t, int f, vctx *v)
{
    uint32_t x = field_value(h, f), max = fields[f].max;
    const char *tn = t->name, *fn = fields[f].name;
    switch (t->count[f]) {
    case ZERO:
        if (x != 0)
            return VFAIL(v, PGD_WIRE_R_COUNT, "wire: %s %s %u, expected 0", tn, fn, x);
        return 0;
    case ONE:
        if (x != 1)
            return VFAIL(v, PGD_WIRE_R_COUNT, "wire: %s %s %u, expected 1", tn, fn, x);
        return 0;
    case POS:
        if (f == F_CHANNELS && x != 1 && x != 3 && x != 4)
            return VFAIL(v, PGD_WIRE_R_COUNT, "wire: %s channels %u, expected 1, 3 or 4", tn, x);
        if (x == 0 && max == UINT32_MAX)
            return VFAIL(v, PGD_WIRE_R_COUNT, "wire: %s %s 0, expected >= 1", tn, fn);
        if (x == 0 || x > max)
            return VFAIL(v, PGD_WIRE_R_COUNT, "wire: %s %s %u, expected 1..%u", tn, fn, x, max);
        return 0;
    default:
        return 0;
    }
}

static int check_counts(const pgd_wire_header *h, const type_rule *t, vctx *v)
{
    for (int f = 0; f < F_COUNT; f++)
        if (check_count(h, t, f, v) < 0)
            return -1;
    if (t->count[F_GRID_M] == POS && t->count[F_PPI] == POS) {
        uint64_t cells = (uint64_t)h->grid_m * h->grid_n;
        if (h->patches_per_image > cells)
            return VFAIL(v, PGD_WIRE_R_COUNT, "wire: %s patches_per_image %u exceeds grid_m %u x grid_n %u = %llu",
                         t->name, h->patches_per_image, h->grid_m, h->grid_n, (unsigned long long)cells);
    }
    return 0;
}

static int popcount32(uint32_t x)
{
    int n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

static int check_flags(const pgd_wire_header *h, const type_rule *t, vctx *v)
{
    uint32_t unknown = h->flags & ~t->flags;
    if (unknown)
        return VFAIL(v, PGD_WIRE_R_FLAGS, "wire: %s flags 0x%x has unknown bits 0x%x", t->name, h->flags, unknown);
    if (t->phases) {
        int n = popcount32(h->flags & t->phases);
        if (n != 1)
            return VFAIL(v, PGD_WIRE_R_FLAGS,
                         "wire: %s flags 0x%x has %d phase flags, expected exactly one of FILL, INNER, EVAL, INFER",
                         t->name, h->flags, n);
    }
    return 0;
}

/* The exact byte length of a non-text frame as the counts imply, multiplied in 64 bits with a bound
 * check after each factor (a product <= 2^31 times a factor < 2^32 cannot overflow). Writes the factors
 * to why. Returns -1 when the length exceeds PGD_WIRE_MAX_PAYLOAD. */
static int expected_len(const pgd_wire_header *h, int kind, uint64_t *out, char *why, size_t cap)
{
    uint64_t f[5];
    int n = 0;
    switch (kind) {
    case FR_SPEC:
        snprintf(why, cap, "job spec");
        f[n++] = PGD_WIRE_SPEC_SIZE;
        break;
    case FR_SHMREF:
        snprintf(why, cap, "shmref");
        f[n++] = PGD_WIRE_SHMREF_SIZE;
        break;
    case FR_PIXELS:
        snprintf(why, cap, "n_images %u x patches_per_image %u x patch_size %u x %u x channels %u", h->n_images,
                 h->patches_per_image, h->patch_size, h->patch_size, h->channels);
        f[n++] = h->n_images, f[n++] = h->patches_per_image, f[n++] = h->patch_size, f[n++] = h->patch_size;
        f[n++] = h->channels;
        break;
    case FR_CELLS:
        snprintf(why, cap, "n_images %u x patches_per_image %u x %d", h->n_images, h->patches_per_image,
                 PGD_WIRE_CELL_SIZE);
        f[n++] = h->n_images, f[n++] = h->patches_per_image, f[n++] = PGD_WIRE_CELL_SIZE;
        break;
    case FR_IDS:
        snprintf(why, cap, "n_images %u x %d", h->n_images, PGD_WIRE_ID_SLOT);
        f[n++] = h->n_images, f[n++] = PGD_WIRE_ID_SLOT;
        break;
    default: /* FR_LABELS */
        snprintf(why, cap, "n_images %u x %d", h->n_images, PGD_WIRE_LABEL_SIZE);
        f[n++] = h->n_images, f[n++] = PGD_WIRE_LABEL_SIZE;
        break;
    }
    uint64_t len = 1;
    for (int i = 0; i < n; i++) {
        len *= f[i];
        if (len > PGD_WIRE_MAX_PAYLOAD)
            return -1;
    }
    *out = len;
    return 0;
}

static int check_frame_len(const pgd_wire_header *h, const type_rule *t, unsigned i, vctx *v)
{
    int kind = t->frame[i];
    unsigned long long got = (unsigned long long)h->frame_len[i];
    if (kinds[kind].text_max) {
        if (got < 1 || got > kinds[kind].text_max)
            return VFAIL(v, PGD_WIRE_R_FRAME_LEN, "wire: %s frame %u (%s) is %llu bytes, expected 1..%u", t->name,
                         i + 1, kinds[kind].name, got, kinds[kind].text_max);
        return 0;
    }
    uint64_t want;
    char why[200];
    if (expected_len(h, kind, &want, why, sizeof why) < 0)
        return VFAIL(v, PGD_WIRE_R_TOO_LARGE, "wire: %s frame %u (%s) size %s exceeds the %llu-byte frame limit",
                     t->name, i + 1, kinds[kind].name, why, (unsigned long long)PGD_WIRE_MAX_PAYLOAD);
    if (got != want)
        return VFAIL(v, PGD_WIRE_R_FRAME_LEN, "wire: %s frame %u (%s) is %llu bytes, expected %llu (%s)", t->name,
                     i + 1, kinds[kind].name, got, (unsigned long long)want, why);
    return 0;
}

/* Every header rule of the type: reserved fields, flags, counts, frame count and frame lengths. */
static int check_header(const pgd_wire_header *h, vctx *v)
{
    const type_rule *t = rule_of(h->type);
    if (!t)
        return VFAIL(v, PGD_WIRE_R_TYPE, "wire: unknown message type %u", h->type);
    if (h->reserved0 != 0)
        return VFAIL(v, PGD_WIRE_R_RESERVED, "wire: %s reserved0 is 0x%x, must be 0", t->name, h->reserved0);
    if (h->reserved1 != 0)
        return VFAIL(v, PGD_WIRE_R_RESERVED, "wire: %s reserved1 is 0x%x, must be 0", t->name, h->reserved1);
    if (check_flags(h, t, v) < 0 || check_counts(h, t, v) < 0)
        return -1;
    if (h->nframes != t->nframes)
        return VFAIL(v, PGD_WIRE_R_NFRAMES, "wire: %s nframes %u, expected %u", t->name, h->nframes, t->nframes);
    for (unsigned i = 0; i < PGD_WIRE_MAX_FRAMES; i++) {
        if (i < t->nframes) {
            if (check_frame_len(h, t, i, v) < 0)
                return -1;
        } else if (h->frame_len[i] != 0) {
            return VFAIL(v, PGD_WIRE_R_FRAME_LEN, "wire: %s frame_len[%u] is %llu, must be 0 (unused)", t->name,
                         i, (unsigned long long)h->frame_len[i]);
        }
    }
    return 0;
}

/* --- payload checks ------------------------------------------------------------------------------- */

/* Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) without NUL. */
static int check_text(const type_rule *t, unsigned i, const uint8_t *s, size_t len, vctx *v)
{
    const char *fn = kinds[t->frame[i]].name;
    for (size_t k = 0; k < len;) {
        uint8_t c = s[k];
        if (c == 0)
            return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s %s has a NUL at byte %zu", t->name, fn, k);
        size_t extra;
        uint32_t cp, min;
        if (c < 0x80) {
            k++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            extra = 1, cp = c & 0x1Fu, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2, cp = c & 0x0Fu, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s %s is not valid UTF-8 at byte %zu", t->name, fn, k);
        }
        if (len - k <= extra)
            return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s %s is not valid UTF-8 at byte %zu", t->name, fn, k);
        for (size_t j = 1; j <= extra; j++) {
            if ((s[k + j] & 0xC0) != 0x80)
                return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s %s is not valid UTF-8 at byte %zu", t->name, fn, k);
            cp = cp << 6 | (s[k + j] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s %s is not valid UTF-8 at byte %zu", t->name, fn, k);
        k += extra + 1;
    }
    return 0;
}

static void read_spec(const uint8_t *p, pgd_wire_job_spec *s)
{
    uint64_t bits = get_u64(p + 16);
    s->geometry = get_u32(p);
    s->fit_size = get_u32(p + 4);
    s->level = (int32_t)get_u32(p + 8);
    memcpy(&s->mpp, &bits, sizeof s->mpp);
}

static int check_spec(const pgd_wire_header *h, const uint8_t *p, pgd_wire_job_spec *s, vctx *v)
{
    read_spec(p, s);
    uint32_t r12 = get_u32(p + 12);
    uint64_t r24 = get_u64(p + 24);
    if (r12 != 0 || r24 != 0)
        return VFAIL(v, PGD_WIRE_R_RESERVED, "wire: JOB spec reserved field at byte %d is 0x%llx, must be 0",
                     r12 ? 12 : 24, (unsigned long long)(r12 ? r12 : r24));
    if (s->geometry == PGD_WIRE_GEOM_FIT) {
        if (s->fit_size < h->patch_size)
            return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec fit_size %u is below patch_size %u", s->fit_size,
                         h->patch_size);
        if (s->level != -1)
            return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec level %d with fit geometry, expected -1", s->level);
        if (s->mpp != 0.0)
            return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec mpp %g with fit geometry, expected 0", s->mpp);
        return 0;
    }
    if (s->geometry != PGD_WIRE_GEOM_NATIVE)
        return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec geometry %u, expected 1 (fit) or 2 (native)", s->geometry);
    if (s->fit_size != 0)
        return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec fit_size %u with native geometry, expected 0", s->fit_size);
    if (s->level < -1)
        return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec level %d, expected >= 0 or -1 (by mpp)", s->level);
    if (s->level == -1 && !(isfinite(s->mpp) && s->mpp > 0.0))
        return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec mpp %g with level -1, expected a finite value > 0", s->mpp);
    if (s->level >= 0 && s->mpp != 0.0)
        return VFAIL(v, PGD_WIRE_R_SPEC, "wire: JOB spec mpp %g with level %d, expected 0", s->mpp, s->level);
    return 0;
}

static void read_shmref(const uint8_t *p, pgd_wire_shmref *r)
{
    r->offset = get_u64(p);
    r->length = get_u64(p + 8);
    r->slot = get_u32(p + 16);
    r->generation = get_u64(p + 24);
}

/* The shmref: reserved bytes 0, an aligned offset that leaves room for the length without wrapping, the
 * length the counts give a pixels frame (which also bounds it by PGD_WIRE_MAX_PAYLOAD); PATCHES_SHM also
 * carries the region's generation (even, >= 2), which is reserved (0) in BATCH_SHM. */
static int check_shmref(const pgd_wire_header *h, const type_rule *t, const uint8_t *p, pgd_wire_shmref *r, vctx *v)
{
    read_shmref(p, r);
    uint32_t r20 = get_u32(p + 20);
    int has_gen = h->type == PGD_WIRE_PATCHES_SHM;
    if (r20 != 0 || (!has_gen && r->generation != 0))
        return VFAIL(v, PGD_WIRE_R_RESERVED, "wire: %s shmref reserved field at byte %d is 0x%llx, must be 0", t->name,
                     r20 ? 20 : 24, (unsigned long long)(r20 ? r20 : r->generation));
    if (has_gen && (r->generation < 2 || r->generation % 2 != 0))
        return VFAIL(v, PGD_WIRE_R_SHMREF, "wire: %s shmref generation %llu, expected an even number >= 2", t->name,
                     (unsigned long long)r->generation);
    if (r->offset % PGD_WIRE_SHM_ALIGN != 0 || r->offset > UINT64_MAX - PGD_WIRE_MAX_PAYLOAD)
        return VFAIL(v, PGD_WIRE_R_SHMREF, "wire: %s shmref offset %llu is not a multiple of %d below 2^64 - 2^31",
                     t->name, (unsigned long long)r->offset, PGD_WIRE_SHM_ALIGN);
    uint64_t want;
    char why[200];
    if (expected_len(h, FR_PIXELS, &want, why, sizeof why) < 0)
        return VFAIL(v, PGD_WIRE_R_TOO_LARGE, "wire: %s pixels (%s) exceed the %llu-byte frame limit", t->name, why,
                     (unsigned long long)PGD_WIRE_MAX_PAYLOAD);
    if (r->length != want)
        return VFAIL(v, PGD_WIRE_R_SHMREF, "wire: %s shmref length %llu, expected %llu (%s)", t->name,
                     (unsigned long long)r->length, (unsigned long long)want, why);
    return 0;
}

/* A POSIX shared-memory object name: '/', then 1..254 of [A-Za-z0-9._-] (no second '/'). */
static int check_segment(const type_rule *t, const uint8_t *p, size_t len, vctx *v)
{
    if (len < 2 || p[0] != '/')
        return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s segment name must be '/' and 1..%d more characters", t->name,
                     PGD_WIRE_SEGMENT_MAX - 1);
    for (size_t k = 1; k < len; k++) {
        uint8_t c = p[k];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '-';
        if (!ok)
            return VFAIL(v, PGD_WIRE_R_TEXT, "wire: %s segment name has byte 0x%02x at %zu, expected [A-Za-z0-9._-]",
                         t->name, c, k);
    }
    return 0;
}

static int check_cells(const pgd_wire_header *h, const type_rule *t, const uint8_t *p, size_t n, vctx *v)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t row = get_u32(p + i * PGD_WIRE_CELL_SIZE), col = get_u32(p + i * PGD_WIRE_CELL_SIZE + 4);
        if (row >= h->grid_m || col >= h->grid_n)
            return VFAIL(v, PGD_WIRE_R_CELL, "wire: %s cell %zu is (row %u, col %u), outside the %u x %u grid",
                         t->name, i, row, col, h->grid_m, h->grid_n);
    }
    return 0;
}

static int check_ids(const type_rule *t, const uint8_t *p, size_t n, vctx *v)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *slot = p + i * PGD_WIRE_ID_SLOT;
        const uint8_t *nul = memchr(slot, 0, PGD_WIRE_ID_SLOT);
        if (!nul)
            return VFAIL(v, PGD_WIRE_R_ID, "wire: %s id %zu has no NUL in its %d-byte slot", t->name, i,
                         PGD_WIRE_ID_SLOT);
        if (nul == slot)
            return VFAIL(v, PGD_WIRE_R_ID, "wire: %s id %zu is empty", t->name, i);
        for (const uint8_t *q = nul + 1; q < slot + PGD_WIRE_ID_SLOT; q++)
            if (*q)
                return VFAIL(v, PGD_WIRE_R_ID, "wire: %s id %zu has a non-zero byte at %td after its NUL",
                             t->name, i, q - slot);
    }
    return 0;
}

static int check_labels(const type_rule *t, const uint8_t *p, size_t n, vctx *v)
{
    for (size_t i = 0; i < n; i++) {
        int32_t label = (int32_t)get_u32(p + i * PGD_WIRE_LABEL_SIZE);
        if (label < -1)
            return VFAIL(v, PGD_WIRE_R_LABEL, "wire: %s label %zu is %d, expected >= -1", t->name, i, label);
    }
    return 0;
}

/* Content rules of payload frame i, whose length is already known to be right. */
static int check_payload(const pgd_wire_header *h, const type_rule *t, unsigned i, const uint8_t *p,
                         pgd_wire_job_spec *spec, pgd_wire_shmref *shm, vctx *v)
{
    size_t len = (size_t)h->frame_len[i], cells = (size_t)h->n_images * h->patches_per_image;
    switch (t->frame[i]) {
    case FR_NAME:
    case FR_PATH:
    case FR_REASON:
        return check_text(t, i, p, len, v);
    case FR_SPEC:
        return check_spec(h, p, spec, v);
    case FR_SHMREF:
        return check_shmref(h, t, p, shm, v);
    case FR_SEGMENT:
        return check_text(t, i, p, len, v) < 0 ? -1 : check_segment(t, p, len, v);
    case FR_CELLS:
        return check_cells(h, t, p, cells, v);
    case FR_IDS:
        return check_ids(t, p, h->n_images, v);
    case FR_LABELS:
        return check_labels(t, p, h->n_images, v);
    default: /* pixels: any byte value */
        return 0;
    }
}

/* The validator shared by encoder and decoder: the header first, then the frame count and lengths
 * against it, then the payload bytes. spec receives the parsed JOB spec. */
static int validate(const pgd_wire_header *h, const pgd_wire_frame *pay, size_t n, pgd_wire_job_spec *spec,
                    pgd_wire_shmref *shm, vctx *v)
{
    if (check_header(h, v) < 0)
        return -1;
    const type_rule *t = rule_of(h->type);
    if (n != h->nframes)
        return VFAIL(v, PGD_WIRE_R_NFRAMES, "wire: %s header says %u payload frames, message has %zu", t->name,
                     h->nframes, n);
    for (unsigned i = 0; i < n; i++) {
        if (pay[i].len != h->frame_len[i])
            return VFAIL(v, PGD_WIRE_R_FRAME_LEN, "wire: %s frame %u (%s) is %zu bytes, header says %llu", t->name,
                         i + 1, kinds[t->frame[i]].name, pay[i].len, (unsigned long long)h->frame_len[i]);
        if (!pay[i].data)
            return VFAIL(v, PGD_WIRE_R_FRAME_LEN, "wire: %s frame %u (%s) has no data", t->name, i + 1,
                         kinds[t->frame[i]].name);
    }
    for (unsigned i = 0; i < n; i++)
        if (check_payload(h, t, i, pay[i].data, spec, shm, v) < 0)
            return -1;
    return 0;
}

/* --- encode and decode ------------------------------------------------------------------------------ */

int pgd_wire_encode(const pgd_wire_header *h, const pgd_wire_frame *frames, size_t n,
                    uint8_t out[PGD_WIRE_HEADER_SIZE], pgd_err *err)
{
    vctx v = {err, PGD_EINVAL, PGD_WIRE_R_OK};
    if (n > PGD_WIRE_MAX_FRAMES)
        return VFAIL(&v, PGD_WIRE_R_NFRAMES, "wire: %s with %zu payload frames, at most %d",
                     pgd_wire_type_name(h->type), n, PGD_WIRE_MAX_FRAMES);
    pgd_wire_header c = *h;
    c.magic = PGD_WIRE_MAGIC;
    c.version = PGD_WIRE_VERSION;
    c.nframes = (uint32_t)n;
    for (size_t i = 0; i < PGD_WIRE_MAX_FRAMES; i++)
        c.frame_len[i] = i < n ? frames[i].len : 0;
    pgd_wire_job_spec spec;
    pgd_wire_shmref shm;
    if (validate(&c, frames, n, &spec, &shm, &v) < 0)
        return -1;
    pgd_wire_header_pack(&c, out);
    return 0;
}

/* Size, magic, version and CRC of the header frame, in that order. */
static int check_envelope(const pgd_wire_frame *f, pgd_wire_header *h, vctx *v)
{
    if (f->len != PGD_WIRE_HEADER_SIZE)
        return VFAIL(v, PGD_WIRE_R_HEADER_SIZE, "wire: header frame is %zu bytes, expected %d", f->len,
                     PGD_WIRE_HEADER_SIZE);
    if (!f->data)
        return VFAIL(v, PGD_WIRE_R_HEADER_SIZE, "wire: header frame has no data");
    pgd_wire_header_unpack(f->data, h);
    if (h->magic != PGD_WIRE_MAGIC)
        return VFAIL(v, PGD_WIRE_R_MAGIC, "wire: bad magic 0x%08x", h->magic);
    if (h->version != PGD_WIRE_VERSION)
        return VFAIL(v, PGD_WIRE_R_VERSION, "wire: version %u, this build speaks %d", h->version, PGD_WIRE_VERSION);
    uint32_t crc = pgd_crc32c(0, f->data, OFF_CRC);
    if (crc != h->crc)
        return vfail(v, PGD_WIRE_R_CRC, PGD_ECORRUPT, __LINE__,
                     "wire: header crc mismatch (header says 0x%08x, bytes give 0x%08x)", h->crc, crc);
    return 0;
}

static void point_msg(pgd_wire_msg *m, const pgd_wire_frame *pay)
{
    const type_rule *t = rule_of(m->h.type);
    m->n_cells = (size_t)m->h.n_images * m->h.patches_per_image;
    for (unsigned i = 0; i < t->nframes; i++) {
        switch (t->frame[i]) {
        case FR_NAME:
        case FR_PATH:
        case FR_REASON:
        case FR_SEGMENT:
            m->text = pay[i].data;
            m->text_len = pay[i].len;
            break;
        case FR_PIXELS:
            m->pixels = pay[i].data;
            m->pixels_len = pay[i].len;
            break;
        case FR_CELLS:
            m->cells = pay[i].data;
            break;
        case FR_IDS:
            m->ids = pay[i].data;
            break;
        case FR_LABELS:
            m->labels = pay[i].data;
            break;
        default: /* the spec and the shmref were parsed while they were checked */
            break;
        }
    }
}

int pgd_wire_decode(const pgd_wire_frame *frames, size_t n, pgd_wire_msg *msg, pgd_err *err)
{
    vctx v = {err, PGD_EFORMAT, PGD_WIRE_R_OK};
    memset(msg, 0, sizeof *msg);
    if (n == 0)
        VFAIL(&v, PGD_WIRE_R_NFRAMES, "wire: empty message, no header frame");
    else if (n > 1 + PGD_WIRE_MAX_FRAMES)
        VFAIL(&v, PGD_WIRE_R_NFRAMES, "wire: message has %zu frames, at most %d (header + %d payload)", n,
              1 + PGD_WIRE_MAX_FRAMES, PGD_WIRE_MAX_FRAMES);
    else if (check_envelope(&frames[0], &msg->h, &v) == 0 && validate(&msg->h, frames + 1, n - 1, &msg->spec, &msg->shm, &v) == 0)
        point_msg(msg, frames + 1);
    msg->reason = v.reason;
    return v.reason == PGD_WIRE_R_OK ? 0 : -1;
}

/* --- accessors and payload writers ------------------------------------------------------------------ */

int pgd_wire_cell(const pgd_wire_msg *m, size_t i, uint32_t *row, uint32_t *col)
{
    if (!m->cells || i >= m->n_cells) {
        *row = *col = 0;
        return -1;
    }
    *row = get_u32(m->cells + i * PGD_WIRE_CELL_SIZE);
    *col = get_u32(m->cells + i * PGD_WIRE_CELL_SIZE + 4);
    return 0;
}

int32_t pgd_wire_label(const pgd_wire_msg *m, size_t i)
{
    if (!m->labels || i >= m->h.n_images)
        return -1;
    return (int32_t)get_u32(m->labels + i * PGD_WIRE_LABEL_SIZE);
}

const char *pgd_wire_id(const pgd_wire_msg *m, size_t i)
{
    if (!m->ids || i >= m->h.n_images)
        return NULL;
    return (const char *)m->ids + i * PGD_WIRE_ID_SLOT;
}

const uint8_t *pgd_wire_patch(const pgd_wire_msg *m, size_t image, size_t k)
{
    if (!m->pixels || image >= m->h.n_images || k >= m->h.patches_per_image)
        return NULL;
    size_t patch = (size_t)m->h.patch_size * m->h.patch_size * m->h.channels;
    return m->pixels + (image * m->h.patches_per_image + k) * patch;
}

size_t pgd_wire_text(const pgd_wire_msg *m, char *buf, size_t cap)
{
    if (cap == 0)
        return m->text_len;
    size_t n = m->text_len < cap - 1 ? m->text_len : cap - 1;
    if (n)
        memcpy(buf, m->text, n);
    buf[n] = '\0';
    return m->text_len;
}

void pgd_wire_put_cell(void *cells, size_t i, uint32_t row, uint32_t col)
{
    uint8_t *p = (uint8_t *)cells + i * PGD_WIRE_CELL_SIZE;
    put_u32(p, row);
    put_u32(p + 4, col);
}

void pgd_wire_put_label(void *labels, size_t i, int32_t label)
{
    put_u32((uint8_t *)labels + i * PGD_WIRE_LABEL_SIZE, (uint32_t)label);
}

int pgd_wire_put_id(void *ids, size_t i, const char *id, pgd_err *err)
{
    size_t len = strlen(id);
    if (len == 0)
        return pgd_fail(err, PGD_EINVAL, "wire: image id %zu is empty", i);
    if (len >= PGD_WIRE_ID_SLOT)
        return pgd_fail(err, PGD_EINVAL, "wire: image id %zu '%.20s...' is %zu bytes, at most %d fit", i, id, len,
                        PGD_WIRE_ID_SLOT - 1);
    uint8_t *slot = (uint8_t *)ids + i * PGD_WIRE_ID_SLOT;
    memset(slot, 0, PGD_WIRE_ID_SLOT);
    memcpy(slot, id, len);
    return 0;
}

void pgd_wire_put_spec(void *out, const pgd_wire_job_spec *spec)
{
    uint8_t *p = out;
    uint64_t bits;
    memcpy(&bits, &spec->mpp, sizeof bits);
    put_u32(p, spec->geometry);
    put_u32(p + 4, spec->fit_size);
    put_u32(p + 8, (uint32_t)spec->level);
    put_u32(p + 12, 0);
    put_u64(p + 16, bits);
    put_u64(p + 24, 0);
}

void pgd_wire_put_shmref(void *out, const pgd_wire_shmref *ref)
{
    uint8_t *p = out;
    put_u64(p, ref->offset);
    put_u64(p + 8, ref->length);
    put_u32(p + 16, ref->slot);
    put_u32(p + 20, 0);
    put_u64(p + 24, ref->generation);
}

/* --- bad-message bookkeeping ------------------------------------------------------------------------ */

int pgd_wire_stats_reject(pgd_wire_stats *s, pgd_wire_reason reason, const pgd_err *err)
{
    if ((unsigned)reason >= PGD_WIRE_R_MAX)
        reason = PGD_WIRE_R_OK;
    s->rejected++;
    if (s->by_reason[reason]++ > 0)
        return 0;
    pgd_warn("wire: dropped a bad message (%s): %s; later ones of this kind are only counted",
             pgd_wire_reason_name(reason), err && err->code != PGD_OK ? err->msg : "no details");
    return 1;
}

void pgd_wire_stats_log(const pgd_wire_stats *s)
{
    if (s->rejected == 0)
        return;
    char line[1024] = "";
    size_t off = 0;
    for (int r = 0; r < PGD_WIRE_R_MAX && off < sizeof line; r++) {
        if (!s->by_reason[r])
            continue;
        int k = snprintf(line + off, sizeof line - off, "%s%s %llu", off ? ", " : "",
                         pgd_wire_reason_name((pgd_wire_reason)r), (unsigned long long)s->by_reason[r]);
        if (k < 0)
            break;
        off += (size_t)k;
    }
    pgd_info("wire: rejected %llu messages: %s", (unsigned long long)s->rejected, line);
}
