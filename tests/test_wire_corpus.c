/* test_wire_corpus.c: replays the wire fuzzer's seed corpus (tests/corpus/wire) through its entry point. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_util.h"

#include "fuzz/fuzz_wire.c"

#define CORPUS_DIR "tests/corpus/wire"

/* The reason each committed bad seed must be rejected for. */
static const struct {
    const char *file;
    pgd_wire_reason reason;
} bad_reasons[] = {
    {"bad-magic.bin", PGD_WIRE_R_MAGIC},
    {"bad-version.bin", PGD_WIRE_R_VERSION},
    {"bad-crc.bin", PGD_WIRE_R_CRC},
    {"bad-type.bin", PGD_WIRE_R_TYPE},
    {"bad-reserved.bin", PGD_WIRE_R_RESERVED},
    {"bad-nframes.bin", PGD_WIRE_R_NFRAMES},
    {"bad-cell.bin", PGD_WIRE_R_CELL},
    {"bad-id-no-nul.bin", PGD_WIRE_R_ID},
    {"bad-id-garbage.bin", PGD_WIRE_R_ID},
    {"bad-label.bin", PGD_WIRE_R_LABEL},
    {"bad-two-phases.bin", PGD_WIRE_R_FLAGS},
    {"bad-pixels-len.bin", PGD_WIRE_R_FRAME_LEN},
    {"bad-overflow.bin", PGD_WIRE_R_TOO_LARGE},
    {"bad-text-nul.bin", PGD_WIRE_R_TEXT},
    {"bad-spec-geometry.bin", PGD_WIRE_R_SPEC},
    {"bad-spec-mpp-nan.bin", PGD_WIRE_R_SPEC},
    {"bad-header-short.bin", PGD_WIRE_R_HEADER_SIZE},
    {"bad-empty.bin", PGD_WIRE_R_NFRAMES},
    {"bad-too-many-frames.bin", PGD_WIRE_R_NFRAMES},
    {"bad-shmref-offset.bin", PGD_WIRE_R_SHMREF},
    {"bad-patches-shm-generation.bin", PGD_WIRE_R_SHMREF},
    {"bad-hello-flags.bin", PGD_WIRE_R_FLAGS},
};

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *size = n;
    return buf;
}

/* Decode a seed again to learn its type and reject reason. */
static pgd_wire_msg decode_seed(const uint8_t *data, size_t size)
{
    pgd_wire_frame f[FUZZ_WIRE_MAX_SPLIT];
    size_t n = fuzz_wire_split(data, size, f);
    pgd_wire_msg m;
    pgd_wire_decode(f, n, &m, NULL);
    return m;
}

static void test_replay_corpus(void)
{
    DIR *d = opendir(CORPUS_DIR);
    if (!d)
        printf("\n    cannot open %s (run from the project root)\n", CORPUS_DIR);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int valid = 0, bad = 0, types_seen[PGD_WIRE_TYPE_MAX + 1] = {0};
    size_t bad_known = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        size_t size = 0;
        uint8_t *data = read_all(path, &size);
        CU_ASSERT_PTR_NOT_NULL(data);
        if (!data)
            continue;
        int is_valid = strncmp(e->d_name, "valid-", 6) == 0, is_bad = strncmp(e->d_name, "bad-", 4) == 0;
        CU_ASSERT(is_valid || is_bad); /* seeds are named valid-* or bad-* */
        CU_ASSERT_EQUAL(LLVMFuzzerTestOneInput(data, size), 0);
        int accepted = fuzz_wire_run(data, size);
        pgd_wire_msg m = decode_seed(data, size);
        if (is_valid) {
            valid++;
            if (!accepted)
                printf("\n    %s rejected (%s)\n", e->d_name, pgd_wire_reason_name(m.reason));
            CU_ASSERT_EQUAL(accepted, 1);
            if (accepted && m.h.type <= PGD_WIRE_TYPE_MAX)
                types_seen[m.h.type] = 1;
        } else if (is_bad) {
            bad++;
            if (accepted)
                printf("\n    %s accepted\n", e->d_name);
            CU_ASSERT_EQUAL(accepted, 0);
            for (size_t i = 0; i < sizeof bad_reasons / sizeof *bad_reasons; i++) {
                if (strcmp(bad_reasons[i].file, e->d_name) != 0)
                    continue;
                bad_known++;
                if (m.reason != bad_reasons[i].reason)
                    printf("\n    %s rejected for %s, expected %s\n", e->d_name, pgd_wire_reason_name(m.reason),
                           pgd_wire_reason_name(bad_reasons[i].reason));
                CU_ASSERT_EQUAL(m.reason, bad_reasons[i].reason);
            }
        }
        free(data);
    }
    closedir(d);
    CU_ASSERT(valid >= PGD_WIRE_TYPE_MAX);
    CU_ASSERT(bad >= 1);
    CU_ASSERT_EQUAL(bad_known, sizeof bad_reasons / sizeof *bad_reasons); /* every listed seed is there */
    for (int t = 1; t <= PGD_WIRE_TYPE_MAX; t++) {
        if (!types_seen[t])
            printf("\n    no valid seed of type %s\n", pgd_wire_type_name((unsigned)t));
        CU_ASSERT(types_seen[t]);
    }
}

/* The split rules of the fuzz input format, on hand-made inputs. */
static void test_split_format(void)
{
    pgd_wire_frame f[FUZZ_WIRE_MAX_SPLIT];
    CU_ASSERT_EQUAL(fuzz_wire_split(NULL, 0, f), 0);
    const uint8_t three[] = {3, 2, 0, 1, 0, 'a', 'b', 'c', 'd', 'e'};
    CU_ASSERT_EQUAL_FATAL(fuzz_wire_split(three, sizeof three, f), 3);
    CU_ASSERT_EQUAL(f[0].len, 2);
    CU_ASSERT_EQUAL(memcmp(f[0].data, "ab", 2), 0);
    CU_ASSERT_EQUAL(f[1].len, 1);
    CU_ASSERT_EQUAL(memcmp(f[1].data, "c", 1), 0);
    CU_ASSERT_EQUAL(f[2].len, 2); /* the rest */
    CU_ASSERT_EQUAL(memcmp(f[2].data, "de", 2), 0);
    const uint8_t clipped[] = {0x0A, 0xFF, 0xFF, 'x'}; /* 2 frames, the first claiming 65535 bytes */
    CU_ASSERT_EQUAL_FATAL(fuzz_wire_split(clipped, 1, f), 2);
    CU_ASSERT_EQUAL(f[0].len, 0);
    CU_ASSERT_EQUAL(f[1].len, 0);
    CU_ASSERT_EQUAL_FATAL(fuzz_wire_split(clipped, sizeof clipped, f), 2);
    CU_ASSERT_EQUAL(f[0].len, 1);
    CU_ASSERT_EQUAL(f[1].len, 0);
    CU_ASSERT_EQUAL(fuzz_wire_run(clipped, sizeof clipped), 0);
}

static const pgd_test_case cases[] = {
    {"replay_corpus", test_replay_corpus},
    {"split_format", test_split_format},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("wire_corpus", cases, argc, argv);
}
