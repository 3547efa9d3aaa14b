/* zstore_bench.c: write and read throughput of whole Z-blocks through the store (seqlock + CRC-32C) beside
 * plain memcpy of the same bytes into and out of the same shared memory. Usage in bench/README.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "sysinfo.h"
#include "zstore/zstore.h"

typedef struct bench_shape {
    uint32_t m, n, s;
} bench_shape;

typedef struct bench_ctx {
    pgd_zstore *z;
    uint32_t slots;
    size_t elems, bytes;
    float *buf;         /* the caller's block */
    unsigned char **at; /* each slot's data in the segment */
} bench_ctx;

typedef enum { OP_MEMCPY_WRITE, OP_STORE_WRITE, OP_MEMCPY_READ, OP_STORE_READ } bench_op;

static const char *const op_names[] = {"memcpy write", "store write", "memcpy read", "store read"};

/* One operation on slot i; 0, or -1 when the store refused it. */
static int run_op(bench_ctx *c, bench_op op, uint32_t i)
{
    switch (op) {
    case OP_MEMCPY_WRITE:
        memcpy(c->at[i], c->buf, c->bytes);
        return 0;
    case OP_STORE_WRITE:
        return pgd_zstore_write(c->z, i, c->buf, c->elems, "bench", (int32_t)i, NULL);
    case OP_MEMCPY_READ:
        memcpy(c->buf, c->at[i], c->bytes);
        return 0;
    case OP_STORE_READ:
        return pgd_zstore_read(c->z, i, c->buf, c->elems, NULL, NULL);
    }
    return -1;
}

/* GB/s (1e9 bytes) of op, cycling over the slots for at least seconds; negative on failure. */
static double measure(bench_ctx *c, bench_op op, double seconds)
{
    for (uint32_t i = 0; i < c->slots; i++) /* warm up: touch every slot once */
        if (run_op(c, op, i) != 0)
            return -1.0;
    long ops = 0;
    double t0 = pgd_clock_s(), t;
    do {
        for (uint32_t i = 0; i < c->slots; i++, ops++)
            if (run_op(c, op, i) != 0)
                return -1.0;
        t = pgd_clock_s();
    } while (t - t0 < seconds);
    return (double)ops * (double)c->bytes / (t - t0) / 1e9;
}

static void print_machine(double seconds, uint32_t slots)
{
    char model[256];
    pgd_sysinfo_cpu_model(model, sizeof model);
    printf("zstore_bench: %s, %ld cores; %u slots per segment, %.1f s per row, f32 blocks\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), slots, seconds);
}

/* Measure the four rows for one block shape. 0, or -1 on failure (printed). */
static int bench_shape_run(const bench_shape *sh, uint32_t slots, double seconds)
{
    char name[64], block[48];
    snprintf(name, sizeof name, "bench-%d", (int)getpid());
    snprintf(block, sizeof block, "%ux%ux%u", sh->m, sh->n, sh->s);
    pgd_err err = PGD_ERR_INIT;
    bench_ctx c = {0};
    c.slots = slots;
    c.z = pgd_zstore_create(name, sh->m, sh->n, sh->s, slots, PGD_ZDTYPE_F32, &err);
    if (!c.z) {
        fprintf(stderr, "zstore_bench: %s\n", err.msg);
        return -1;
    }
    c.elems = pgd_zstore_block_elems(c.z);
    c.bytes = c.elems * sizeof(float);
    c.buf = malloc(c.bytes);
    c.at = calloc(slots, sizeof *c.at);
    int rc = -1;
    if (!c.buf || !c.at)
        goto done;
    for (size_t i = 0; i < c.elems; i++)
        c.buf[i] = (float)(i % 1000) * 0.001f;
    for (uint32_t i = 0; i < slots; i++) { /* find each slot's data; leave it written */
        void *p;
        if (pgd_zstore_write_begin(c.z, i, &p, &err) != 0 || pgd_zstore_write_end(c.z, i, "", 0, &err) != 0)
            goto done;
        c.at[i] = p;
    }
    /* Plain writes go first: they bypass the CRC, which the store write then makes right again. */
    double gbs[4];
    for (int op = 0; op < 4; op++) {
        if ((gbs[op] = measure(&c, (bench_op)op, seconds)) < 0) {
            fprintf(stderr, "zstore_bench: %s failed\n", op_names[op]);
            goto done;
        }
    }
    for (int op = 0; op < 4; op++) {
        double base = gbs[op < 2 ? OP_MEMCPY_WRITE : OP_MEMCPY_READ];
        printf("| %-12s | %10zu | %-12s | %7.2f | %8.2fx |\n", block, c.bytes, op_names[op], gbs[op], gbs[op] / base);
    }
    rc = 0;
done:
    if (rc != 0 && err.code != PGD_OK)
        fprintf(stderr, "zstore_bench: %s\n", err.msg);
    free(c.buf);
    free(c.at);
    pgd_zstore_close(&c.z);
    pgd_zstore_remove(name, NULL);
    return rc;
}

int main(int argc, char **argv)
{
    double seconds = 1.0;
    long slots = 8;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--slots") == 0 && i + 1 < argc)
            slots = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: zstore_bench [--seconds S (1.0)] [--slots K (8)]\n");
            return 2;
        }
    }
    if (seconds <= 0.0 || slots < 1 || slots > 4096) {
        fprintf(stderr, "zstore_bench: --seconds must be > 0 and --slots in 1..4096\n");
        return 2;
    }
    static const bench_shape shapes[] = {{16, 16, 256}, {32, 32, 2048}};
    print_machine(seconds, (uint32_t)slots);
    printf("| %-12s | %10s | %-12s | %7s | %9s |\n", "block", "bytes", "op", "GB/s", "vs memcpy");
    printf("|--------------|------------|--------------|---------|-----------|\n");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        if (bench_shape_run(&shapes[i], (uint32_t)slots, seconds) != 0)
            return 1;
    return 0;
}
