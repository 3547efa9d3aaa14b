/* test_tfevents.c: TensorBoard event files: masked CRCs, TFRecord frames, Event protobufs decoded back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "common/tfevents.h"
#include "cunit_util.h"

/* Values computed apart from this code (a bitwise CRC-32C and the mask formula). */
static void test_masked_crc(void)
{
    CU_ASSERT_EQUAL(pgd_tfrecord_masked_crc("123456789", 9), 0xc78ab0e5u);
    const uint8_t len24[8] = {24, 0, 0, 0, 0, 0, 0, 0};
    CU_ASSERT_EQUAL(pgd_tfrecord_masked_crc(len24, 8), 0x224b7fa3u);
}

/* A protobuf reader written for the test: the next field of p[*o..n). Returns 0 at the end, -1 on error. */
static int next_field(const uint8_t *p, size_t n, size_t *o, unsigned *field, unsigned *wire, uint64_t *v,
                      const uint8_t **bytes)
{
    if (*o >= n)
        return 0;
    uint64_t x = 0;
    int shift = 0;
    uint64_t key = 0;
    for (;;) { /* key */
        if (*o >= n || shift > 63)
            return -1;
        uint8_t b = p[(*o)++];
        key |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
        if (!(b & 0x80))
            break;
    }
    *field = (unsigned)(key >> 3), *wire = (unsigned)(key & 7);
    if (*wire == 0 || *wire == 2) {
        shift = 0;
        for (;;) {
            if (*o >= n || shift > 63)
                return -1;
            uint8_t b = p[(*o)++];
            x |= (uint64_t)(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80))
                break;
        }
        *v = x;
        if (*wire == 2) {
            if (x > n - *o)
                return -1;
            *bytes = p + *o;
            *o += x;
        }
        return 1;
    }
    int w = *wire == 1 ? 8 : *wire == 5 ? 4 : 0;
    if (!w || n - *o < (size_t)w)
        return -1;
    for (int i = 0; i < w; i++)
        x |= (uint64_t)p[*o + i] << (8 * i);
    *o += (size_t)w;
    *v = x;
    return 1;
}

typedef struct event {
    double wall;
    int64_t step;
    char version[32];
    int n;
    char tags[8][32];
    float values[8];
} event;

static int decode_event(const uint8_t *p, size_t n, event *e)
{
    memset(e, 0, sizeof *e);
    size_t o = 0;
    unsigned f, w;
    uint64_t v;
    const uint8_t *b = NULL;
    int rc;
    while ((rc = next_field(p, n, &o, &f, &w, &v, &b)) == 1) {
        if (f == 1 && w == 1)
            memcpy(&e->wall, &v, 8);
        else if (f == 2 && w == 0)
            e->step = (int64_t)v;
        else if (f == 3 && w == 2 && v < sizeof e->version)
            memcpy(e->version, b, v);
        else if (f == 5 && w == 2) { /* Summary */
            size_t so = 0, sn = v;
            const uint8_t *s = b;
            unsigned sf, sw;
            uint64_t sv;
            const uint8_t *vb;
            while ((rc = next_field(s, sn, &so, &sf, &sw, &sv, &vb)) == 1) {
                if (sf != 1 || sw != 2 || e->n == 8)
                    return -1;
                size_t vo = 0;
                unsigned vf, vw;
                uint64_t vv;
                const uint8_t *tb;
                while ((rc = next_field(vb, sv, &vo, &vf, &vw, &vv, &tb)) == 1) {
                    if (vf == 1 && vw == 2 && vv < 32)
                        memcpy(e->tags[e->n], tb, vv);
                    else if (vf == 2 && vw == 5) {
                        uint32_t u = (uint32_t)vv;
                        memcpy(&e->values[e->n], &u, 4);
                    } else
                        return -1;
                }
                if (rc < 0)
                    return -1;
                e->n++;
            }
            if (rc < 0)
                return -1;
        } else
            return -1;
    }
    return rc;
}

static void test_file_roundtrip(void)
{
    pgd_err err = PGD_ERR_INIT;
    const char *dir = pgd_test_path("tb");
    const char *tags1[] = {"train/loss", "train/qwk"}, *tags2[] = {"eval/accuracy"};
    float v1[] = {1.25f, -0.5f}, v2[] = {0.75f};
    pgd_tfevents *t = pgd_tfevents_open(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(pgd_tfevents_scalars(t, 1700000000.5, 0, 2, tags1, v1, &err), 0);
    pgd_tfevents_close(&t);
    CU_ASSERT_PTR_NULL(t);
    t = pgd_tfevents_open(dir, &err); /* a second writer appends: no second version event */
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(pgd_tfevents_scalars(t, 1700000001.0, 300, 1, tags2, v2, &err), 0);
    pgd_tfevents_close(&t);

    char path[512], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", dir, PGD_TFEVENTS_FILE);
    CU_ASSERT_EQUAL_FATAL(pgd_file_read(path, 1 << 20, &text, &len, &err), 0);
    const uint8_t *buf = (const uint8_t *)text, *data;
    size_t off = 0, dlen;
    event e[3];
    int k = 0;
    while (off < len && k < 4) {
        CU_ASSERT_EQUAL_FATAL(pgd_tfrecord_next(buf, len, &off, &data, &dlen, &err), 0);
        CU_ASSERT_FATAL(k < 3);
        CU_ASSERT_EQUAL(decode_event(data, dlen, &e[k]), 0);
        k++;
    }
    CU_ASSERT_EQUAL(k, 3);
    CU_ASSERT_STRING_EQUAL(e[0].version, "brain.Event:2");
    CU_ASSERT(e[0].wall > 1e9);
    CU_ASSERT_EQUAL(e[1].step, 0);
    CU_ASSERT_EQUAL(e[1].wall, 1700000000.5);
    CU_ASSERT_EQUAL(e[1].n, 2);
    CU_ASSERT_STRING_EQUAL(e[1].tags[0], "train/loss");
    CU_ASSERT_EQUAL(e[1].values[0], 1.25f);
    CU_ASSERT_STRING_EQUAL(e[1].tags[1], "train/qwk");
    CU_ASSERT_EQUAL(e[1].values[1], -0.5f);
    CU_ASSERT_EQUAL(e[2].step, 300);
    CU_ASSERT_EQUAL(e[2].n, 1);
    CU_ASSERT_STRING_EQUAL(e[2].tags[0], "eval/accuracy");
    CU_ASSERT_EQUAL(e[2].values[0], 0.75f);

    /* a flipped data byte and a flipped length byte fail their CRCs; a cut file is truncated */
    uint8_t *bad = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
    memcpy(bad, buf, len);
    bad[20] ^= 1;
    off = 0;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_tfrecord_next(bad, len, &off, &data, &dlen, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "data CRC"));
    memcpy(bad, buf, len);
    bad[0] ^= 1;
    off = 0;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_tfrecord_next(bad, len, &off, &data, &dlen, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "length CRC"));
    off = 0;
    pgd_err_clear(&err);
    CU_ASSERT_EQUAL(pgd_tfrecord_next(buf, 20, &off, &data, &dlen, &err), -1);
    CU_ASSERT_EQUAL(err.code, PGD_EFORMAT);
    free(bad);
    free(text);
}

/* A tag of 200 bytes needs two-byte varints for its own length and its Value's. */
static void test_long_tag(void)
{
    char tag[201];
    memset(tag, 'a', 200);
    tag[200] = '\0';
    const char *tags[] = {tag};
    float v = 3.0f;
    uint8_t ev[512], rec[600];
    size_t n = pgd_tfevents_encode(ev, sizeof ev, 2.0, 7, NULL, 1, tags, &v);
    CU_ASSERT_FATAL(n > 200);
    CU_ASSERT_EQUAL(pgd_tfevents_encode(ev, 100, 2.0, 7, NULL, 1, tags, &v), 0); /* too small: 0 */
    size_t r = pgd_tfrecord_frame(rec, sizeof rec, ev, n);
    CU_ASSERT_EQUAL_FATAL(r, n + 16);
    const uint8_t *data;
    size_t off = 0, dlen;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_tfrecord_next(rec, r, &off, &data, &dlen, &err), 0);
    CU_ASSERT_EQUAL(off, r);
    size_t o = 0, so = 0, vo = 0;
    unsigned f, w;
    uint64_t x, slen = 0, vlen = 0, tlen = 0, fbits = 0;
    const uint8_t *b = NULL, *sb = NULL, *vb = NULL, *tb = NULL;
    int fields = 0;
    while (next_field(data, dlen, &o, &f, &w, &x, &b) == 1) {
        fields++;
        if (f == 5)
            sb = b, slen = x;
    }
    CU_ASSERT_EQUAL(o, dlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
    CU_ASSERT_EQUAL_FATAL(next_field(sb, slen, &so, &f, &w, &vlen, &vb), 1);
    CU_ASSERT_EQUAL(so, slen);
    CU_ASSERT_EQUAL_FATAL(next_field(vb, vlen, &vo, &f, &w, &tlen, &tb), 1);
    CU_ASSERT_EQUAL(tlen, 200);
    CU_ASSERT_EQUAL(memcmp(tb, tag, 200), 0);
    CU_ASSERT_EQUAL_FATAL(next_field(vb, vlen, &vo, &f, &w, &fbits, &tb), 1);
    uint32_t u = (uint32_t)fbits;
    float got;
    memcpy(&got, &u, 4);
    CU_ASSERT_EQUAL(got, 3.0f);
    CU_ASSERT_EQUAL(vo, vlen);
    CU_ASSERT_EQUAL(fields, 3); /* wall_time, step, summary */
}

int main(int argc, char **argv)
{
    static const pgd_test_case cases[] = {
        {"masked_crc", test_masked_crc},
        {"file_roundtrip", test_file_roundtrip},
        {"long_tag", test_long_tag},
        {NULL, NULL},
    };
    return pgd_test_main("tfevents", cases, argc, argv);
}
