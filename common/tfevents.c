/* tfevents.c: TensorBoard event files written by hand: protobuf varints and fixed fields, TFRecord frames. */
#include "tfevents.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"

struct pgd_tfevents {
    int fd;
    char path[4200];
};

uint32_t pgd_tfrecord_masked_crc(const void *data, size_t len)
{
    uint32_t crc = pgd_crc32c(0, data, len);
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* A protobuf writer over buf[cap]; on overflow ok becomes 0 and nothing more is written. */
typedef struct pb {
    uint8_t *buf;
    size_t cap, len;
    int ok;
} pb;

static void pb_bytes(pb *b, const void *p, size_t n)
{
    if (!b->ok || b->cap - b->len < n) {
        b->ok = 0;
        return;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void pb_varint(pb *b, uint64_t v)
{
    uint8_t t[10];
    int n = 0;
    do {
        t[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            t[n] |= 0x80;
        n++;
    } while (v);
    pb_bytes(b, t, (size_t)n);
}

static void pb_tag(pb *b, unsigned field, unsigned wire)
{
    pb_varint(b, (uint64_t)(field << 3 | wire));
}

static void pb_string(pb *b, unsigned field, const char *s)
{
    pb_tag(b, field, 2);
    pb_varint(b, strlen(s));
    pb_bytes(b, s, strlen(s));
}

/* Summary.Value {tag = 1, simple_value = 2}: its encoded length. */
static size_t value_len(const char *tag)
{
    size_t n = strlen(tag), v = 1;
    for (size_t x = n; x >= 0x80; x >>= 7)
        v++;
    return 1 + v + n + 1 + 4;
}

size_t pgd_tfevents_encode(uint8_t *buf, size_t cap, double wall_time, int64_t step, const char *version, int n,
                           const char *const *tags, const float *values)
{
    pb b = {buf, cap, 0, 1};
    uint8_t t[8];
    uint64_t bits;
    memcpy(&bits, &wall_time, 8);
    put_le(t, bits, 8);
    pb_tag(&b, 1, 1); /* Event.wall_time: double */
    pb_bytes(&b, t, 8);
    pb_tag(&b, 2, 0); /* Event.step: int64 */
    pb_varint(&b, (uint64_t)step);
    if (version) {
        pb_string(&b, 3, version); /* Event.file_version */
        return b.ok ? b.len : 0;
    }
    size_t summary = 0;
    for (int i = 0; i < n; i++) {
        size_t v = value_len(tags[i]);
        summary += 2 + v + (v >= 0x80) + (v >= 0x4000) + (v >= 0x200000); /* tag, varint length, value */
    }
    pb_tag(&b, 5, 2); /* Event.summary */
    pb_varint(&b, summary);
    for (int i = 0; i < n; i++) {
        pb_tag(&b, 1, 2); /* Summary.value */
        pb_varint(&b, value_len(tags[i]));
        pb_string(&b, 1, tags[i]); /* Value.tag */
        uint32_t f;
        memcpy(&f, &values[i], 4);
        put_le(t, f, 4);
        pb_tag(&b, 2, 5); /* Value.simple_value: float */
        pb_bytes(&b, t, 4);
    }
    return b.ok ? b.len : 0;
}

size_t pgd_tfrecord_frame(uint8_t *buf, size_t cap, const uint8_t *data, size_t len)
{
    if (cap < 16 || cap - 16 < len)
        return 0;
    put_le(buf, len, 8);
    put_le(buf + 8, pgd_tfrecord_masked_crc(buf, 8), 4);
    memcpy(buf + 12, data, len);
    put_le(buf + 12 + len, pgd_tfrecord_masked_crc(data, len), 4);
    return len + 16;
}

int pgd_tfrecord_next(const uint8_t *buf, size_t len, size_t *off, const uint8_t **data, size_t *dlen, pgd_err *err)
{
    size_t o = *off;
    if (len - o < 12)
        return pgd_fail(err, PGD_EFORMAT, "record at byte %zu: truncated header", o);
    uint64_t n = get_le(buf + o, 8);
    if ((uint32_t)get_le(buf + o + 8, 4) != pgd_tfrecord_masked_crc(buf + o, 8))
        return pgd_fail(err, PGD_ECORRUPT, "record at byte %zu: length CRC mismatch", o);
    if (n > len - o - 12 || len - o - 12 - n < 4)
        return pgd_fail(err, PGD_EFORMAT, "record at byte %zu: %llu bytes announced, the file ends first", o,
                        (unsigned long long)n);
    if ((uint32_t)get_le(buf + o + 12 + n, 4) != pgd_tfrecord_masked_crc(buf + o + 12, n))
        return pgd_fail(err, PGD_ECORRUPT, "record at byte %zu: data CRC mismatch", o);
    *data = buf + o + 12;
    *dlen = n;
    *off = o + 16 + n;
    return 0;
}

static int append(pgd_tfevents *t, const uint8_t *ev, size_t n, pgd_err *err)
{
    uint8_t *rec = malloc(n + 16);
    if (!rec)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    size_t len = pgd_tfrecord_frame(rec, n + 16, ev, n), done = 0;
    while (done < len) { /* one write for the whole record as a rule; short writes go on */
        ssize_t w = write(t->fd, rec + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            free(rec);
            return pgd_fail_errno(err, PGD_EIO, "write %s", t->path);
        }
        done += (size_t)w;
    }
    free(rec);
    return 0;
}

pgd_tfevents *pgd_tfevents_open(const char *dir, pgd_err *err)
{
    pgd_tfevents *t = calloc(1, sizeof *t);
    if (!t) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        return NULL;
    }
    t->fd = -1;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        pgd_fail_errno(err, PGD_EIO, "tensorboard: mkdir %s", dir);
        goto fail;
    }
    if ((size_t)snprintf(t->path, sizeof t->path, "%s/%s", dir, PGD_TFEVENTS_FILE) >= sizeof t->path) {
        pgd_fail(err, PGD_EINVAL, "tensorboard: '%s' is too long", dir);
        goto fail;
    }
    if ((t->fd = open(t->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        pgd_fail_errno(err, PGD_EIO, "open %s", t->path);
        goto fail;
    }
    struct stat st;
    if (fstat(t->fd, &st) != 0) {
        pgd_fail_errno(err, PGD_EIO, "stat %s", t->path);
        goto fail;
    }
    if (st.st_size == 0) {
        uint8_t ev[64];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        size_t n = pgd_tfevents_encode(ev, sizeof ev, (double)ts.tv_sec + ts.tv_nsec * 1e-9, 0, PGD_TFEVENTS_VERSION, 0,
                                NULL, NULL);
        if (append(t, ev, n, err) != 0)
            goto fail;
    }
    return t;
fail:
    pgd_tfevents_close(&t);
    return NULL;
}

int pgd_tfevents_scalars(pgd_tfevents *t, double wall_time, int64_t step, int n, const char *const *tags,
                         const float *values, pgd_err *err)
{
    size_t cap = 64;
    for (int i = 0; i < n; i++)
        cap += strlen(tags[i]) + 32;
    uint8_t *ev = malloc(cap);
    if (!ev)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    size_t len = pgd_tfevents_encode(ev, cap, wall_time, step, NULL, n, tags, values);
    int rc = len ? append(t, ev, len, err) : pgd_fail(err, PGD_EINVAL, "tensorboard: event too large");
    free(ev);
    return rc;
}

void pgd_tfevents_close(pgd_tfevents **t)
{
    if (!t || !*t)
        return;
    if ((*t)->fd >= 0)
        close((*t)->fd);
    free(*t);
    *t = NULL;
}
