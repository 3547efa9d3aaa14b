/* test_schedule.c: the PatchGD schedule: sweeps, draws without replacement, k and zeta, the RNG derivation,
 * flags and order, native grid groups, resume, determinism and bad configs. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/wire.h"
#include "cunit_util.h"
#include "sampler/perm.h"
#include "sampler/schedule.h"

/* ---- helpers ------------------------------------------------------------------------------------ */

static pgd_sched_config fit_cfg(uint32_t n_images, uint32_t m, uint32_t n, uint32_t batch)
{
    pgd_sched_config c;
    pgd_sched_config_init(&c);
    c.seed = 1234;
    c.n_images = n_images;
    c.m = m;
    c.n = n;
    c.batch_size = batch;
    return c;
}

static uint32_t grid_m_of(const pgd_sched_config *c, uint32_t row)
{
    return c->grid_m ? c->grid_m[row] : c->m;
}

static uint32_t grid_n_of(const pgd_sched_config *c, uint32_t row)
{
    return c->grid_n ? c->grid_n[row] : c->n;
}

static pgd_sched_plan plan_of(const pgd_sched_config *c, uint32_t m, uint32_t n)
{
    pgd_sched_plan p;
    memset(&p, 0, sizeof p);
    CU_ASSERT_EQUAL(pgd_sched_plan_grid(c, m, n, &p, NULL), 0);
    return p;
}

static uint64_t pack_key(const char *word)
{
    uint64_t k = 0;
    for (int i = 0; word[i]; i++)
        k |= (uint64_t)(unsigned char)word[i] << (8 * i);
    return k;
}

/* ---- an independent model of the documented derivation (docs/schedule.md) -------------------------- */

static uint32_t ref_batches(const pgd_sched_config *c)
{
    int drop = c->mode == PGD_SCHED_TRAIN && c->drop_last;
    return c->n_images / c->batch_size + (!drop && c->n_images % c->batch_size != 0);
}

static void ref_order(const pgd_sched_config *c, uint32_t epoch, uint32_t *order)
{
    for (uint32_t i = 0; i < c->n_images; i++)
        order[i] = i;
    if (c->mode != PGD_SCHED_TRAIN)
        return;
    pgd_rng root, r;
    pgd_rng_seed(&root, c->seed);
    r = pgd_rng_split(&root, pack_key("shuffle"));
    r = pgd_rng_split(&r, epoch);
    pgd_rng_shuffle_u32(&r, order, c->n_images);
}

/* The inner draws of one source for one batch, step by step: forward Fisher-Yates passes from the identity;
 * after a pass boundary inside a step, a draw whose cell the step already holds is repeated. */
static void ref_draws(const pgd_sched_config *c, uint32_t epoch, uint32_t batch, uint64_t key,
                      const pgd_sched_plan *p, uint32_t *out)
{
    pgd_rng root, r;
    pgd_rng_seed(&root, c->seed);
    r = pgd_rng_split(&root, pack_key(c->shared_positions ? "shared" : "image"));
    r = pgd_rng_split(&r, epoch);
    r = pgd_rng_split(&r, batch);
    r = pgd_rng_split(&r, key);
    uint32_t *a = malloc((size_t)p->cells * sizeof *a), t = p->cells;
    uint64_t o = 0;
    for (uint32_t s = 1; s <= p->zeta; s++) {
        uint32_t want = s == p->zeta ? p->last_k : p->k;
        uint64_t step_start = o, before_reset = 0;
        for (uint32_t q = 0; q < want; q++) {
            if (t == p->cells) {
                for (uint32_t i = 0; i < p->cells; i++)
                    a[i] = i;
                t = 0;
                before_reset = o - step_start; /* cells of this step drawn from the old pass */
            }
            uint32_t j;
            int again;
            do {
                j = t + pgd_rng_below(&r, p->cells - t);
                again = 0;
                for (uint64_t i = 0; i < before_reset; i++)
                    again |= out[step_start + i] == a[j];
            } while (again);
            uint32_t cell = a[j];
            a[j] = a[t];
            a[t] = cell;
            t++;
            out[o++] = cell;
        }
    }
    free(a);
}

/* ---- a stream checker: runs a schedule and verifies every rule, against the model above ------------ */

enum { MAX_REPORTS = 5 };

typedef struct checker {
    const pgd_sched_config *cfg;
    uint32_t epochs, batches;
    uint64_t bad;
    uint64_t messages, fill_messages, inner_messages, batches_seen;
    uint32_t *order;         /* the model's order of the current epoch */
    int64_t order_epoch;
    uint8_t **fill;          /* per image: per cell fill count this batch */
    uint32_t **drawn;        /* per image: inner cells drawn this batch, in order */
    uint64_t *ndrawn;
    uint32_t *ref;           /* model draws (scratch) */
    uint32_t *stamp;         /* per cell: tag of the last set it was seen in */
    uint32_t tag;
    uint32_t *in_batch;      /* per image: batch serial + 1 when in the current batch */
    uint32_t *epoch_seen;    /* per image: times seen in the current epoch */
    uint32_t *members;       /* the batch's images in order of first appearance */
    uint32_t nmembers;
    uint32_t gm[PGD_SCHED_MAX_BATCH], gn[PGD_SCHED_MAX_BATCH], gfirst[PGD_SCHED_MAX_BATCH], gcount[PGD_SCHED_MAX_BATCH];
    uint32_t ngroups;
    int have_prev;
    pgd_sched_step prev;     /* scalar fields only */
    uint32_t first_epoch_full; /* first epoch the stream covers from its batch 0 */
} checker;

__attribute__((format(printf, 2, 3))) static void bad(checker *k, const char *fmt, ...)
{
    if (k->bad++ >= MAX_REPORTS)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n    schedule check: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void checker_init(checker *k, const pgd_sched_config *c)
{
    memset(k, 0, sizeof *k);
    k->cfg = c;
    k->epochs = c->mode == PGD_SCHED_TRAIN ? c->epochs : 1;
    k->batches = ref_batches(c);
    k->order = malloc(c->n_images * sizeof *k->order);
    k->order_epoch = -1;
    k->fill = calloc(c->n_images, sizeof *k->fill);
    k->drawn = calloc(c->n_images, sizeof *k->drawn);
    k->ndrawn = calloc(c->n_images, sizeof *k->ndrawn);
    k->in_batch = calloc(c->n_images, sizeof *k->in_batch);
    k->epoch_seen = calloc(c->n_images, sizeof *k->epoch_seen);
    k->members = malloc(c->batch_size * sizeof *k->members);
    uint64_t max_cells = 1, max_draws = 1;
    for (uint32_t i = 0; i < c->n_images; i++) {
        pgd_sched_plan p = plan_of(c, grid_m_of(c, i), grid_n_of(c, i));
        k->fill[i] = calloc(p.cells, 1);
        k->drawn[i] = malloc((p.draws ? p.draws : 1) * sizeof **k->drawn);
        max_cells = p.cells > max_cells ? p.cells : max_cells;
        max_draws = p.draws > max_draws ? p.draws : max_draws;
    }
    k->ref = malloc(max_draws * sizeof *k->ref);
    k->stamp = calloc(max_cells, sizeof *k->stamp);
    k->first_epoch_full = c->start_batch == 0 ? c->start_epoch : c->start_epoch + 1;
}

static void checker_free(checker *k)
{
    for (uint32_t i = 0; i < k->cfg->n_images; i++) {
        free(k->fill[i]);
        free(k->drawn[i]);
    }
    free(k->fill);
    free(k->drawn);
    free(k->ndrawn);
    free(k->in_batch);
    free(k->epoch_seen);
    free(k->members);
    free(k->order);
    free(k->ref);
    free(k->stamp);
}

/* 1 when cells[0..n) are distinct. */
static int distinct(checker *k, const uint32_t *cells, uint64_t n)
{
    k->tag++;
    for (uint64_t i = 0; i < n; i++) {
        if (k->stamp[cells[i]] == k->tag)
            return 0;
        k->stamp[cells[i]] = k->tag;
    }
    return 1;
}

static void check_draws(checker *k, uint32_t row, const pgd_sched_plan *p, uint32_t epoch, uint32_t batch, uint32_t gi)
{
    const uint32_t *d = k->drawn[row];
    if (k->ndrawn[row] != p->draws) {
        bad(k, "image %u: %llu cells drawn in batch %u, expected %llu", row, (unsigned long long)k->ndrawn[row],
            batch, (unsigned long long)p->draws);
        return;
    }
    for (uint64_t at = 0, s = 1; s <= p->zeta; s++) { /* each step: distinct cells */
        uint32_t n = s == p->zeta ? p->last_k : p->k;
        if (!distinct(k, d + at, n))
            bad(k, "image %u batch %u step %llu: a cell twice in one step", row, batch, (unsigned long long)s);
        at += n;
    }
    for (uint64_t at = 0; at < p->draws; at += p->cells) { /* each pass: distinct, a full one covers all */
        uint64_t n = p->draws - at < p->cells ? p->draws - at : p->cells;
        if (!distinct(k, d + at, n))
            bad(k, "image %u batch %u: a cell twice in one pass", row, batch);
    }
    int shared = k->cfg->shared_positions;
    uint64_t key = shared ? (uint64_t)k->gm[gi] << 32 | k->gn[gi] : row;
    ref_draws(k->cfg, epoch, batch, key, p, k->ref);
    if (memcmp(k->ref, d, p->draws * sizeof *d) != 0)
        bad(k, "image %u epoch %u batch %u: draws differ from the documented derivation", row, epoch, batch);
}

/* The batch is over: compare its images and groups with the model, then every image's fill and draws. */
static void finish_batch(checker *k, uint32_t epoch, uint32_t batch)
{
    const pgd_sched_config *c = k->cfg;
    if (k->order_epoch != epoch) {
        ref_order(c, epoch, k->order);
        k->order_epoch = epoch;
    }
    uint32_t start = batch * c->batch_size;
    uint32_t nb = c->n_images - start < c->batch_size ? c->n_images - start : c->batch_size;
    /* stable grouping by grid of the model's slice */
    uint32_t at = 0;
    for (uint32_t g = 0; g < k->ngroups; g++)
        for (uint32_t i = 0; i < nb; i++) {
            uint32_t row = k->order[start + i];
            if (grid_m_of(c, row) == k->gm[g] && grid_n_of(c, row) == k->gn[g]) {
                if (at >= k->nmembers || k->members[at] != row)
                    bad(k, "epoch %u batch %u: image %u missing or out of order", epoch, batch, row);
                at++;
            }
        }
    if (at != nb || k->nmembers != nb)
        bad(k, "epoch %u batch %u: %u images in %u groups, expected %u", epoch, batch, k->nmembers, k->ngroups, nb);
    for (uint32_t g = 0; g < k->ngroups; g++) {
        pgd_sched_plan p = plan_of(c, k->gm[g], k->gn[g]);
        for (uint32_t i = 0; i < k->gcount[g]; i++) {
            uint32_t row = k->members[k->gfirst[g] + i];
            uint32_t wrong = 0;
            for (uint32_t cell = 0; cell < p.cells; cell++) {
                wrong += k->fill[row][cell] != 1;
                k->fill[row][cell] = 0;
            }
            if (wrong)
                bad(k, "image %u epoch %u batch %u: %u cells not filled exactly once", row, epoch, batch, wrong);
            if (c->mode == PGD_SCHED_TRAIN)
                check_draws(k, row, &p, epoch, batch, g);
            else if (k->ndrawn[row])
                bad(k, "image %u: inner draws in eval/infer", row);
            k->ndrawn[row] = 0;
            k->in_batch[row] = 0;
            if (epoch >= k->first_epoch_full)
                k->epoch_seen[row]++;
        }
    }
    k->batches_seen++;
    if (batch + 1 == k->batches && epoch >= k->first_epoch_full) { /* a whole epoch: every image once */
        uint32_t expect_total = c->mode == PGD_SCHED_TRAIN && c->drop_last ? k->batches * c->batch_size
                                                                           : c->n_images;
        uint32_t total = 0;
        for (uint32_t i = 0; i < c->n_images; i++) {
            if (k->epoch_seen[i] > 1)
                bad(k, "epoch %u: image %u seen %u times", epoch, i, k->epoch_seen[i]);
            total += k->epoch_seen[i];
            k->epoch_seen[i] = 0;
        }
        if (total != expect_total)
            bad(k, "epoch %u: %u images seen, expected %u", epoch, total, expect_total);
    }
}

/* Order, continuity and flags of st against the previous message. */
static void check_sequence(checker *k, const pgd_sched_step *st)
{
    const pgd_sched_step *p = &k->prev;
    uint32_t phase = st->flags & PGD_WIRE_PHASE_MASK;
    uint32_t want_phase = k->cfg->mode == PGD_SCHED_EVAL    ? PGD_WIRE_FLAG_EVAL
                          : k->cfg->mode == PGD_SCHED_INFER ? PGD_WIRE_FLAG_INFER
                          : st->step == 0                   ? PGD_WIRE_FLAG_FILL
                                                            : PGD_WIRE_FLAG_INNER;
    uint32_t known = PGD_WIRE_PHASE_MASK | PGD_WIRE_FLAG_BATCH_END | PGD_WIRE_FLAG_EPOCH_END;
    if (phase != want_phase || (st->flags & ~known))
        bad(k, "message %llu: flags 0x%x, phase should be 0x%x", (unsigned long long)k->messages, st->flags,
            want_phase);
    if ((st->flags & PGD_WIRE_FLAG_EPOCH_END) && !(st->flags & PGD_WIRE_FLAG_BATCH_END))
        bad(k, "message %llu: EPOCH_END without BATCH_END", (unsigned long long)k->messages);
    int epoch_end = !!(st->flags & PGD_WIRE_FLAG_EPOCH_END);
    if ((st->flags & PGD_WIRE_FLAG_BATCH_END) && epoch_end != (st->batch + 1 == k->batches))
        bad(k, "message %llu: EPOCH_END on batch %u of %u", (unsigned long long)k->messages, st->batch, k->batches);
    if ((st->flags & PGD_WIRE_FLAG_BATCH_END) && !st->step_end)
        bad(k, "message %llu: BATCH_END without step_end", (unsigned long long)k->messages);
    uint32_t e = k->cfg->start_epoch, b = k->cfg->start_batch;
    int new_batch = !k->have_prev || (p->flags & PGD_WIRE_FLAG_BATCH_END);
    if (k->have_prev && new_batch) {
        e = p->flags & PGD_WIRE_FLAG_EPOCH_END ? p->epoch + 1 : p->epoch;
        b = p->flags & PGD_WIRE_FLAG_EPOCH_END ? 0 : p->batch + 1;
    }
    if (new_batch) {
        if (st->epoch != e || st->batch != b || st->step != 0 || st->group != 0 || st->chunk != 0)
            bad(k, "message %llu: starts (%u, %u) step %u group %u chunk %u, expected batch (%u, %u) step 0",
                (unsigned long long)k->messages, st->epoch, st->batch, st->step, st->group, st->chunk, e, b);
        return;
    }
    if (st->epoch != p->epoch || st->batch != p->batch)
        bad(k, "message %llu: batch changed without BATCH_END", (unsigned long long)k->messages);
    if (p->step_end != (st->step != p->step))
        bad(k, "message %llu: step_end %d before step %u -> %u", (unsigned long long)k->messages, p->step_end,
            p->step, st->step);
    int ok = st->step == p->step ? (st->group == p->group ? st->chunk == p->chunk + 1
                                                          : st->group > p->group && st->chunk == 0)
                                 : st->step == p->step + 1 && st->chunk == 0;
    if (!ok)
        bad(k, "message %llu: (step %u, group %u, chunk %u) after (%u, %u, %u)", (unsigned long long)k->messages,
            st->step, st->group, st->chunk, p->step, p->group, p->chunk);
}

/* Group bookkeeping: a group appears first in the fill sweep, in order, and keeps its images and grid. */
static void check_group(checker *k, const pgd_sched_step *st)
{
    if (st->group == k->ngroups && st->step == 0 && st->chunk == 0) {
        uint32_t g = k->ngroups++;
        k->gm[g] = st->grid_m;
        k->gn[g] = st->grid_n;
        k->gfirst[g] = k->nmembers;
        k->gcount[g] = st->n_images;
        for (uint32_t i = 0; i < st->n_images; i++) {
            uint32_t row = st->images[i];
            if (row >= k->cfg->n_images || k->in_batch[row] || k->nmembers >= k->cfg->batch_size) {
                bad(k, "image %u repeated or out of range in a batch", row);
                continue;
            }
            k->in_batch[row] = 1;
            k->members[k->nmembers++] = row;
        }
        return;
    }
    if (st->group >= k->ngroups) {
        bad(k, "message %llu: group %u appears out of order", (unsigned long long)k->messages, st->group);
        return;
    }
    uint32_t g = st->group;
    if (st->grid_m != k->gm[g] || st->grid_n != k->gn[g] || st->n_images != k->gcount[g] ||
        memcmp(st->images, k->members + k->gfirst[g], st->n_images * sizeof *st->images) != 0)
        bad(k, "message %llu: group %u changed its grid or images", (unsigned long long)k->messages, g);
}

static void check_cells(checker *k, const pgd_sched_step *st)
{
    const pgd_sched_config *c = k->cfg;
    pgd_sched_plan p = plan_of(c, st->grid_m, st->grid_n);
    uint32_t ppi = st->patches_per_image;
    for (uint32_t i = 0; i < st->n_images; i++)
        if (st->images[i] >= c->n_images || grid_m_of(c, st->images[i]) != st->grid_m ||
            grid_n_of(c, st->images[i]) != st->grid_n) {
            bad(k, "message %llu: image %u is not one of the manifest's %ux%u images",
                (unsigned long long)k->messages, st->images[i], st->grid_m, st->grid_n);
            return;
        }
    if (st->step == 0) {
        uint64_t from = (uint64_t)st->chunk * c->fill_chunk;
        uint64_t want = from >= p.cells ? 0 : (p.cells - from < c->fill_chunk ? p.cells - from : c->fill_chunk);
        if (ppi != want || ppi == 0) {
            bad(k, "message %llu: fill chunk %u has %u cells, expected %llu", (unsigned long long)k->messages,
                st->chunk, ppi, (unsigned long long)want);
            return;
        }
        k->fill_messages++;
        for (uint32_t i = 0; i < st->n_images; i++)
            for (uint32_t q = 0; q < ppi; q++) {
                pgd_sched_cell cell = st->cells[(size_t)i * ppi + q];
                uint64_t idx = from + q;
                if (cell.row != idx / st->grid_n || cell.col != idx % st->grid_n)
                    bad(k, "message %llu: fill cell %u of image %u is (%u, %u), expected row-major",
                        (unsigned long long)k->messages, q, i, cell.row, cell.col);
                else if (k->fill[st->images[i]][idx] < 255)
                    k->fill[st->images[i]][idx]++;
            }
        return;
    }
    k->inner_messages++;
    uint32_t step_k = st->step == p.zeta ? p.last_k : p.k;
    uint32_t ic = c->inner_chunk && c->inner_chunk < p.k ? c->inner_chunk : p.k;
    uint64_t from = (uint64_t)st->chunk * ic;
    uint64_t want = from >= step_k ? 0 : (step_k - from < ic ? step_k - from : ic);
    if (st->step > p.zeta || ppi != want || ppi == 0) {
        bad(k, "message %llu: step %u chunk %u has %u cells, expected %llu (zeta %u)",
            (unsigned long long)k->messages, st->step, st->chunk, ppi, (unsigned long long)want, p.zeta);
        return;
    }
    for (uint32_t i = 0; i < st->n_images; i++) {
        uint32_t row = st->images[i];
        for (uint32_t q = 0; q < ppi; q++) {
            pgd_sched_cell cell = st->cells[(size_t)i * ppi + q];
            if (cell.row >= st->grid_m || cell.col >= st->grid_n || k->ndrawn[row] >= p.draws) {
                bad(k, "message %llu: cell (%u, %u) outside the grid or too many draws",
                    (unsigned long long)k->messages, cell.row, cell.col);
                return;
            }
            k->drawn[row][k->ndrawn[row]++] = cell.row * st->grid_n + cell.col;
        }
        if (c->shared_positions && i > 0 &&
            memcmp(st->cells, st->cells + (size_t)i * ppi, ppi * sizeof *st->cells) != 0)
            bad(k, "message %llu: shared positions differ between images", (unsigned long long)k->messages);
    }
}

static void check_message(checker *k, const pgd_sched_step *st)
{
    check_sequence(k, st);
    if (!k->have_prev || (k->prev.flags & PGD_WIRE_FLAG_BATCH_END)) {
        k->ngroups = 0;
        k->nmembers = 0;
    }
    if (st->n_images < 1 || st->n_images > k->cfg->batch_size || !st->images || !st->cells)
        bad(k, "message %llu: %u images", (unsigned long long)k->messages, st->n_images);
    else {
        check_group(k, st);
        check_cells(k, st);
    }
    if (st->flags & PGD_WIRE_FLAG_BATCH_END)
        finish_batch(k, st->epoch, st->batch);
    k->prev = *st;
    k->prev.images = NULL;
    k->prev.cells = NULL;
    k->have_prev = 1;
    k->messages++;
}

/* Run cfg's whole stream through the checker; returns the number of violations (0 = all rules hold). */
static uint64_t check_stream(const pgd_sched_config *cfg, checker *out)
{
    checker k;
    checker_init(&k, cfg);
    pgd_err err = PGD_ERR_INIT;
    pgd_sched *s = pgd_sched_open(cfg, &err);
    if (!s) {
        fprintf(stderr, "\n    open: %s", err.msg);
        checker_free(&k);
        return 1;
    }
    CU_ASSERT_EQUAL(pgd_sched_epochs(s), k.epochs);
    CU_ASSERT_EQUAL(pgd_sched_batches(s), k.batches);
    pgd_sched_step st;
    int rc;
    while ((rc = pgd_sched_next(s, &st, &err)) == 1)
        check_message(&k, &st);
    if (rc != 0)
        bad(&k, "next returned %d: %s", rc, err.msg);
    if (pgd_sched_next(s, &st, &err) != 0)
        bad(&k, "next after the end is not 0");
    if (k.have_prev && (k.prev.flags & (PGD_WIRE_FLAG_BATCH_END | PGD_WIRE_FLAG_EPOCH_END)) !=
                           (PGD_WIRE_FLAG_BATCH_END | PGD_WIRE_FLAG_EPOCH_END))
        bad(&k, "the stream does not end with BATCH_END | EPOCH_END");
    pgd_sched_close(&s);
    CU_ASSERT_PTR_NULL(s);
    uint64_t nbad = k.bad;
    checker_free(&k);
    if (out)
        *out = k;
    return nbad;
}

/* ---- k, zeta and the paper's setups -------------------------------------------------------------- */

static void test_plan_paper_setups(void)
{
    pgd_sched_config c = fit_cfg(1, 16, 16, 1);
    pgd_sched_plan p = plan_of(&c, 16, 16); /* PANDA 2048 fit, patch 128 (and 4096 with patch 256) */
    CU_ASSERT_EQUAL(p.cells, 256);
    CU_ASSERT_EQUAL(p.k, 26);
    CU_ASSERT_EQUAL(p.zeta, 10);
    CU_ASSERT_EQUAL(p.last_k, 22); /* 9 x 26 + 22 = 256 */
    CU_ASSERT_EQUAL(p.draws, 256);
    CU_ASSERT_EQUAL(p.passes, 1);
    CU_ASSERT_EQUAL(p.fill_messages, 4); /* fill_chunk 64 */
    CU_ASSERT_EQUAL(p.inner_messages, 10);
    p = plan_of(&c, 4, 4); /* PANDA 512, patch 128 */
    CU_ASSERT(p.k == 2 && p.zeta == 8 && p.last_k == 2);
    p = plan_of(&c, 32, 32); /* PANDA 4096, patch 128 */
    CU_ASSERT(p.k == 103 && p.zeta == 10 && p.last_k == 97);
    p = plan_of(&c, 8, 8); /* PANDA 2048, patch 256 */
    CU_ASSERT(p.k == 7 && p.zeta == 10 && p.last_k == 1);
    p = plan_of(&c, 2, 2); /* UltraMNIST 512, patch 256: 0.4 -> 1 cell per step, each cell once */
    CU_ASSERT(p.k == 1 && p.zeta == 4 && p.last_k == 1);
    c.zeta = 10; /* the reference code's zeta = ceil(1 / sampling): more than one pass */
    p = plan_of(&c, 2, 2);
    CU_ASSERT(p.k == 1 && p.zeta == 10 && p.last_k == 1 && p.draws == 10 && p.passes == 3);

    /* Messages of a PANDA-like run: 10 images, B = 4 -> batches of 4, 4, 2; each batch 4 fill + 10 inner. */
    c = fit_cfg(10, 16, 16, 4);
    c.epochs = 2;
    checker k;
    CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
    CU_ASSERT_EQUAL(k.messages, 2 * 3 * 14);
    CU_ASSERT_EQUAL(k.fill_messages, 2 * 3 * 4);
    CU_ASSERT_EQUAL(k.inner_messages, 2 * 3 * 10);
    CU_ASSERT_EQUAL(k.batches_seen, 6);
    c.inner_chunk = 10; /* 26 -> 10 + 10 + 6, 22 -> 10 + 10 + 2 */
    p = plan_of(&c, 16, 16);
    CU_ASSERT_EQUAL(p.inner_messages, 30);
    CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
    CU_ASSERT_EQUAL(k.messages, 2 * 3 * (4 + 30));
}

static void test_plan_edges(void)
{
    pgd_sched_config c = fit_cfg(1, 10, 10, 1);
    c.sampling = 1e-9; /* tiny: k = 1, one cell per step, every cell once */
    pgd_sched_plan p = plan_of(&c, 10, 10);
    CU_ASSERT(p.k == 1 && p.zeta == 100 && p.last_k == 1 && p.draws == 100);
    c.sampling = 1.0; /* all: k = m * n, one step */
    p = plan_of(&c, 10, 10);
    CU_ASSERT(p.k == 100 && p.zeta == 1 && p.last_k == 100);
    c.sampling = 0.5;
    c.max_sampled = 0.2; /* max_sampled < sampling: one short step of D cells */
    p = plan_of(&c, 10, 10);
    CU_ASSERT(p.k == 50 && p.zeta == 1 && p.last_k == 20 && p.draws == 20);
    c.max_sampled = 0.55; /* D = 55: 50 + 5 */
    p = plan_of(&c, 10, 10);
    CU_ASSERT(p.k == 50 && p.zeta == 2 && p.last_k == 5 && p.draws == 55);
    c.sampling = 0.3; /* 0.3 x 10 is 3.0000000000000004 in doubles: still 3 */
    c.max_sampled = 1.0;
    p = plan_of(&c, 2, 5);
    CU_ASSERT(p.k == 3 && p.zeta == 4 && p.last_k == 1);
    c.sampling = 0.7; /* 7.000000000000001 -> 7 */
    p = plan_of(&c, 1, 10);
    CU_ASSERT(p.k == 7 && p.zeta == 2 && p.last_k == 3);
    c.sampling = 0.31; /* 3.1 -> 4 */
    p = plan_of(&c, 1, 10);
    CU_ASSERT(p.k == 4);
    c.sampling = 0.1; /* 1x1: everything is 1 */
    p = plan_of(&c, 1, 1);
    CU_ASSERT(p.cells == 1 && p.k == 1 && p.zeta == 1 && p.last_k == 1 && p.draws == 1 && p.fill_messages == 1);
    c.zeta = 25; /* explicit zeta beyond one pass: every step k, passes restart */
    c.sampling = 0.3;
    p = plan_of(&c, 5, 5); /* 7.5 -> 8 */
    CU_ASSERT(p.k == 8 && p.zeta == 25 && p.last_k == 8 && p.draws == 200 && p.passes == 8);
    c.zeta = 2; /* explicit zeta below one pass */
    p = plan_of(&c, 5, 5);
    CU_ASSERT(p.draws == 16 && p.passes == 1);
    c.zeta = 0; /* the largest grid: no overflow */
    c.sampling = 0.1;
    p = plan_of(&c, 65535, 65535);
    CU_ASSERT_EQUAL(p.cells, 4294836225u);
    CU_ASSERT_EQUAL(p.k, 429483623u);
    CU_ASSERT_EQUAL(p.zeta, 10);
    CU_ASSERT_EQUAL(p.last_k, 4294836225u - 9u * 429483623u);
    CU_ASSERT_EQUAL(p.fill_messages, (4294836225u + 63) / 64);
    c.zeta = 0xFFFFFFFFu;
    p = plan_of(&c, 65535, 65535);
    CU_ASSERT_EQUAL(p.draws, 0xFFFFFFFFull * 429483623u);
    c.fill_chunk = 1000; /* fill_chunk above m x n: one message */
    p = plan_of(&c, 7, 9);
    CU_ASSERT_EQUAL(p.fill_messages, 1);
    c.fill_chunk = 10; /* 63 = 6 x 10 + 3 */
    p = plan_of(&c, 7, 9);
    CU_ASSERT_EQUAL(p.fill_messages, 7);
    pgd_err err = PGD_ERR_INIT;
    c.sampling = 0;
    CU_ASSERT_EQUAL(pgd_sched_plan_grid(&c, 4, 4, &p, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.msg, "sampling: 0 is out of range (0, 1]");
    pgd_err_clear(&err);
    c.sampling = 0.1;
    CU_ASSERT_EQUAL(pgd_sched_plan_grid(&c, 0, 4, &p, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.msg, "m: 0 is out of range 1..65535");
}

/* ---- sweeps and draws ---------------------------------------------------------------------------- */

static void test_fill_sweep_every_cell_once(void)
{
    static const struct {
        uint32_t m, n, fill_chunk;
    } grids[] = {{7, 9, 10}, {7, 9, 100}, {7, 9, 63}, {7, 9, 1}, {1, 1, 1}, {1, 1, 64}, {1, 13, 5}, {13, 1, 4}};
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++)
        for (int mode = PGD_SCHED_TRAIN; mode <= PGD_SCHED_INFER; mode++) {
            pgd_sched_config c = fit_cfg(5, grids[i].m, grids[i].n, 2);
            c.mode = (pgd_sched_mode)mode;
            c.fill_chunk = grids[i].fill_chunk;
            c.epochs = 2;
            checker k;
            CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
            uint32_t fills = (grids[i].m * grids[i].n + grids[i].fill_chunk - 1) / grids[i].fill_chunk;
            uint32_t epochs = mode == PGD_SCHED_TRAIN ? 2 : 1;
            CU_ASSERT_EQUAL(k.fill_messages, (uint64_t)epochs * 3 * fills);
            if (mode != PGD_SCHED_TRAIN)
                CU_ASSERT_EQUAL(k.inner_messages, 0);
        }
}

static void test_big_grid_1000x800(void)
{
    pgd_sched_config c = fit_cfg(3, 1000, 800, 2);
    c.fill_chunk = 4096; /* 800000 = 195 x 4096 + 1280 */
    checker k;
    CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
    pgd_sched_plan p = plan_of(&c, 1000, 800);
    CU_ASSERT(p.k == 80000 && p.zeta == 10 && p.last_k == 80000);
    CU_ASSERT_EQUAL(k.fill_messages, 2 * 196);
    CU_ASSERT_EQUAL(k.inner_messages, 2 * 10);
    c.mode = PGD_SCHED_EVAL;
    c.fill_chunk = 799999;
    CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
    CU_ASSERT_EQUAL(k.fill_messages, 4);
}

static void test_inner_draws_without_replacement(void)
{
    static const struct {
        uint32_t m, n, zeta;
        double sampling, max_sampled;
        uint32_t inner_chunk;
    } cases[] = {
        {16, 16, 0, 0.1, 1.0, 0},   {5, 7, 0, 0.2, 1.0, 3},  {3, 3, 0, 1e-6, 1.0, 0},  {6, 6, 0, 1.0, 1.0, 0},
        {6, 6, 0, 1.0, 1.0, 7},     {9, 11, 0, 0.3, 0.5, 0}, {9, 11, 0, 0.5, 0.2, 4},  {5, 5, 7, 0.3, 1.0, 0},
        {5, 5, 25, 0.3, 1.0, 3},    {4, 4, 40, 0.9, 1.0, 0}, {1, 1, 5, 0.5, 1.0, 0},   {2, 3, 9, 0.99, 1.0, 0},
        {7, 3, 13, 0.45, 0.1, 2},   {1, 2, 3, 0.5, 1.0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int shared = 0; shared <= 1; shared++) {
            pgd_sched_config c = fit_cfg(7, cases[i].m, cases[i].n, 3);
            c.zeta = cases[i].zeta;
            c.sampling = cases[i].sampling;
            c.max_sampled = cases[i].max_sampled;
            c.inner_chunk = cases[i].inner_chunk;
            c.shared_positions = shared;
            c.fill_chunk = 5;
            c.epochs = 2;
            c.seed = 77 + i;
            uint64_t nbad = check_stream(&c, NULL);
            CU_ASSERT_EQUAL(nbad, 0);
            if (nbad)
                fprintf(stderr, "\n    (case %zu, shared %d)", i, shared);
        }
}

/* The cells of image i in a message, as cell indices. */
static void message_cells(const pgd_sched_step *st, uint32_t i, uint32_t *out)
{
    for (uint32_t q = 0; q < st->patches_per_image; q++) {
        pgd_sched_cell c = st->cells[(size_t)i * st->patches_per_image + q];
        out[q] = c.row * st->grid_n + c.col;
    }
}

static void test_per_image_and_shared_positions(void)
{
    for (int shared = 0; shared <= 1; shared++) {
        pgd_sched_config c = fit_cfg(4, 16, 16, 4);
        c.shared_positions = shared;
        c.epochs = 2;
        pgd_sched *s = pgd_sched_open(&c, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        pgd_sched_step st;
        uint32_t first[2][4][26];
        int steps_seen = 0, equal_pairs = 0, pairs = 0;
        while (pgd_sched_next(s, &st, NULL) == 1) {
            if (st.step != 1)
                continue;
            CU_ASSERT_EQUAL(st.patches_per_image, 26);
            for (uint32_t i = 0; i < 4; i++) /* keyed by manifest row, to compare epochs */
                message_cells(&st, i, first[st.epoch][st.images[i]]);
            for (uint32_t i = 0; i < 4; i++)
                for (uint32_t j = i + 1; j < 4; j++, pairs++)
                    equal_pairs += memcmp(first[st.epoch][st.images[i]], first[st.epoch][st.images[j]],
                                          sizeof first[0][0]) == 0;
            steps_seen++;
        }
        CU_ASSERT_EQUAL(steps_seen, 2);
        CU_ASSERT_EQUAL(equal_pairs, shared ? pairs : 0);
        for (uint32_t i = 0; i < 4; i++) /* a new epoch, new positions */
            CU_ASSERT(memcmp(first[0][i], first[1][i], sizeof first[0][0]) != 0);
        pgd_sched_close(&s);
        CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);
    }
}

/* ---- order, flags, batches ----------------------------------------------------------------------- */

typedef struct expect_msg {
    uint32_t epoch, batch, step, chunk, flags, n_images, ppi;
    int step_end;
} expect_msg;

static void test_exact_small_stream(void)
{
    /* 3 images, B = 2, a 2x2 grid, fill_chunk 3, sampling 0.5 -> k = 2, zeta = 2. */
    pgd_sched_config c = fit_cfg(3, 2, 2, 2);
    c.fill_chunk = 3;
    c.sampling = 0.5;
    enum { F = PGD_WIRE_FLAG_FILL, I = PGD_WIRE_FLAG_INNER, BE = PGD_WIRE_FLAG_BATCH_END,
           EE = PGD_WIRE_FLAG_EPOCH_END };
    static const expect_msg want[] = {
        {0, 0, 0, 0, F, 2, 3, 0}, {0, 0, 0, 1, F, 2, 1, 1}, {0, 0, 1, 0, I, 2, 2, 1}, {0, 0, 2, 0, I | BE, 2, 2, 1},
        {0, 1, 0, 0, F, 1, 3, 0}, {0, 1, 0, 1, F, 1, 1, 1}, {0, 1, 1, 0, I, 1, 2, 1},
        {0, 1, 2, 0, I | BE | EE, 1, 2, 1},
    };
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(pgd_sched_batches(s), 2);
    pgd_sched_step st;
    uint32_t order[3];
    ref_order(&c, 0, order);
    size_t n = 0;
    while (pgd_sched_next(s, &st, NULL) == 1) {
        CU_ASSERT_FATAL(n < sizeof want / sizeof want[0]);
        const expect_msg *w = &want[n++];
        CU_ASSERT(st.epoch == w->epoch && st.batch == w->batch && st.step == w->step && st.chunk == w->chunk);
        CU_ASSERT_EQUAL(st.flags, w->flags);
        CU_ASSERT_EQUAL(st.n_images, w->n_images);
        CU_ASSERT_EQUAL(st.patches_per_image, w->ppi);
        CU_ASSERT_EQUAL(st.step_end, w->step_end);
        CU_ASSERT(st.grid_m == 2 && st.grid_n == 2 && st.group == 0);
        CU_ASSERT_EQUAL(st.images[0], order[st.batch * 2]);
        if (st.step == 0 && st.chunk == 0)
            for (uint32_t i = 0; i < st.n_images; i++) { /* (0,0) (0,1) (1,0) */
                const pgd_sched_cell *cl = st.cells + i * 3;
                CU_ASSERT(cl[0].row == 0 && cl[0].col == 0 && cl[1].row == 0 && cl[1].col == 1 &&
                          cl[2].row == 1 && cl[2].col == 0);
            }
        if (st.step == 0 && st.chunk == 1)
            CU_ASSERT(st.cells[0].row == 1 && st.cells[0].col == 1);
        if (st.batch == 0 && st.step == 1) { /* the worked example in docs/schedule.md */
            static const pgd_sched_cell ex[4] = {{0, 0}, {1, 0}, {0, 1}, {1, 0}};
            CU_ASSERT(st.images[0] == 1 && st.images[1] == 0);
            CU_ASSERT_EQUAL(memcmp(st.cells, ex, sizeof ex), 0);
        }
    }
    CU_ASSERT_EQUAL(n, sizeof want / sizeof want[0]);
    CU_ASSERT_EQUAL(pgd_sched_next(s, &st, NULL), 0);
    CU_ASSERT_EQUAL(pgd_sched_next(s, &st, NULL), 0);
    pgd_sched_close(&s);
    pgd_sched_close(&s); /* NULL is fine */
    pgd_sched_close(NULL);
    c.epochs = 2;
    uint32_t crc = 0;
    uint64_t messages = 0;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &crc, &messages, NULL), 0);
    CU_ASSERT_EQUAL(crc, 0x4D2371D3u); /* docs/schedule.md, "A worked example" */
    CU_ASSERT_EQUAL(messages, 16);
}

static void test_epoch_shuffle(void)
{
    pgd_sched_config c = fit_cfg(50, 2, 2, 7);
    c.epochs = 4;
    c.sampling = 1.0;
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint32_t seen[4][50], count[4] = {0};
    pgd_sched_step st;
    while (pgd_sched_next(s, &st, NULL) == 1)
        if (st.step == 0 && st.chunk == 0)
            for (uint32_t i = 0; i < st.n_images; i++)
                seen[st.epoch][count[st.epoch]++] = st.images[i];
    pgd_sched_close(&s);
    for (int e = 0; e < 4; e++) {
        CU_ASSERT_EQUAL_FATAL(count[e], 50);
        uint32_t expect[50], hits[50] = {0};
        ref_order(&c, (uint32_t)e, expect);
        CU_ASSERT_EQUAL(memcmp(seen[e], expect, sizeof expect), 0);
        for (int i = 0; i < 50; i++)
            hits[seen[e][i]]++;
        for (int i = 0; i < 50; i++)
            CU_ASSERT_EQUAL(hits[i], 1);
        int identity = 1;
        for (int i = 0; i < 50; i++)
            identity &= seen[e][i] == (uint32_t)i;
        CU_ASSERT_FALSE(identity);
        for (int f = 0; f < e; f++)
            CU_ASSERT(memcmp(seen[e], seen[f], sizeof seen[e]) != 0);
    }
    CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);
    /* Eval and infer: manifest order, whatever the seed. */
    c.mode = PGD_SCHED_EVAL;
    s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint32_t next_row = 0;
    while (pgd_sched_next(s, &st, NULL) == 1) {
        CU_ASSERT_EQUAL(st.step, 0);
        CU_ASSERT_EQUAL(st.epoch, 0);
        if (st.chunk == 0)
            for (uint32_t i = 0; i < st.n_images; i++)
                CU_ASSERT_EQUAL(st.images[i], next_row++);
    }
    CU_ASSERT_EQUAL(next_row, 50);
    pgd_sched_close(&s);
}

static void test_last_batch_and_drop_last(void)
{
    pgd_sched_config c = fit_cfg(10, 3, 3, 4);
    c.epochs = 3;
    uint32_t sizes[3][3] = {{0}};
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(pgd_sched_batches(s), 3);
    pgd_sched_step st;
    while (pgd_sched_next(s, &st, NULL) == 1)
        if (st.step == 0 && st.chunk == 0)
            sizes[st.epoch][st.batch] = st.n_images;
    pgd_sched_close(&s);
    for (int e = 0; e < 3; e++)
        CU_ASSERT(sizes[e][0] == 4 && sizes[e][1] == 4 && sizes[e][2] == 2);
    CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);

    c.drop_last = 1; /* two batches of 4; the last 2 images of each epoch's order are left out */
    s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(pgd_sched_batches(s), 2);
    uint32_t seen[3] = {0}, order[10];
    while (pgd_sched_next(s, &st, NULL) == 1) {
        CU_ASSERT_EQUAL(st.n_images, 4);
        if (st.step == 0 && st.chunk == 0) {
            ref_order(&c, st.epoch, order);
            for (uint32_t i = 0; i < 4; i++)
                CU_ASSERT(st.images[i] != order[8] && st.images[i] != order[9]);
            seen[st.epoch] += st.n_images;
        }
    }
    pgd_sched_close(&s);
    CU_ASSERT(seen[0] == 8 && seen[1] == 8 && seen[2] == 8);
    CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);
    c.n_images = 8; /* B divides N: drop_last changes nothing */
    uint32_t d1, d2;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d1, NULL, NULL), 0);
    c.drop_last = 0;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d2, NULL, NULL), 0);
    CU_ASSERT_EQUAL(d1, d2);
    /* Eval never drops: 10 images, 3 batches, whatever drop_last and epochs say. */
    c.n_images = 10;
    c.mode = PGD_SCHED_EVAL;
    c.drop_last = 1;
    c.epochs = 0;
    checker k;
    CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
    CU_ASSERT_EQUAL(k.batches_seen, 3);
    /* B larger than N: one batch of all the images. */
    c = fit_cfg(3, 2, 2, 4096);
    CU_ASSERT_EQUAL(check_stream(&c, &k), 0);
    CU_ASSERT_EQUAL(k.batches_seen, 1);
}

/* ---- native geometry: groups of equal grid --------------------------------------------------------- */

static const uint32_t native_m[9] = {3, 1, 4, 3, 1, 4, 4, 3, 3};
static const uint32_t native_n[9] = {5, 1, 4, 5, 1, 4, 4, 5, 7};

static pgd_sched_config native_cfg(void)
{
    pgd_sched_config c = fit_cfg(9, 0, 0, 5);
    c.grid_m = native_m;
    c.grid_n = native_n;
    c.fill_chunk = 4;
    c.sampling = 0.2;
    return c;
}

static void test_native_groups(void)
{
    pgd_sched_config c = native_cfg();
    c.epochs = 3;
    for (int mode = PGD_SCHED_TRAIN; mode <= PGD_SCHED_INFER; mode++)
        for (int shared = 0; shared <= 1; shared++) {
            c.mode = (pgd_sched_mode)mode;
            c.shared_positions = shared;
            CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);
        }
    /* Eval, batch 0 = rows 0..4: groups 3x5 {0, 3}, 1x1 {1, 4}, 4x4 {2}, in order of first appearance. */
    c.mode = PGD_SCHED_EVAL;
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    pgd_sched_step st;
    uint32_t groups = 0;
    while (pgd_sched_next(s, &st, NULL) == 1 && st.batch == 0) {
        if (st.chunk != 0)
            continue;
        groups++;
        if (st.group == 0)
            CU_ASSERT(st.grid_m == 3 && st.grid_n == 5 && st.n_images == 2 && st.images[0] == 0 && st.images[1] == 3);
        if (st.group == 1)
            CU_ASSERT(st.grid_m == 1 && st.grid_n == 1 && st.n_images == 2 && st.images[0] == 1 && st.images[1] == 4);
        if (st.group == 2)
            CU_ASSERT(st.grid_m == 4 && st.grid_n == 4 && st.n_images == 1 && st.images[0] == 2);
    }
    CU_ASSERT_EQUAL(groups, 3);
    pgd_sched_close(&s);
    /* Train, all 9 images in one batch: groups with fewer inner steps drop out of the later steps, which stay
     * in step-major order (the checker). 1x1: zeta 1; 3x5: k = 3, zeta 5; 4x4: k = 4 (3.2), zeta 4; 3x7: k = 5
     * (4.2), zeta 5. */
    c.mode = PGD_SCHED_TRAIN;
    c.batch_size = 9;
    CU_ASSERT(plan_of(&c, 1, 1).zeta == 1 && plan_of(&c, 3, 5).zeta == 5 && plan_of(&c, 4, 4).zeta == 4 &&
              plan_of(&c, 3, 7).zeta == 5);
    CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);
    s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint32_t groups_at[7] = {0}, last_flags = 0, last_step = 0;
    while (pgd_sched_next(s, &st, NULL) == 1 && st.epoch == 0) {
        CU_ASSERT_FATAL(st.step <= 6);
        groups_at[st.step] += st.chunk == 0;
        last_flags = st.flags;
        last_step = st.step;
    }
    CU_ASSERT(groups_at[0] == 4 && groups_at[1] == 4 && groups_at[2] == 3 && groups_at[3] == 3 &&
              groups_at[4] == 3 && groups_at[5] == 2 && groups_at[6] == 0);
    CU_ASSERT_EQUAL(last_step, 5);
    CU_ASSERT_EQUAL(last_flags, PGD_WIRE_FLAG_INNER | PGD_WIRE_FLAG_BATCH_END | PGD_WIRE_FLAG_EPOCH_END);
    pgd_sched_close(&s);
    /* All images with one grid given as arrays: the same stream as the fit form. */
    uint32_t same_m[9], same_n[9], d_fit, d_arr;
    for (int i = 0; i < 9; i++) {
        same_m[i] = 6;
        same_n[i] = 5;
    }
    pgd_sched_config a = native_cfg(), f = fit_cfg(9, 6, 5, 5);
    a.grid_m = same_m;
    a.grid_n = same_n;
    f.fill_chunk = a.fill_chunk;
    f.sampling = a.sampling;
    CU_ASSERT_EQUAL(pgd_sched_digest(&a, &d_arr, NULL, NULL), 0);
    CU_ASSERT_EQUAL(pgd_sched_digest(&f, &d_fit, NULL, NULL), 0);
    CU_ASSERT_EQUAL(d_arr, d_fit);
}

static void test_native_grids_copied(void)
{
    uint32_t gm[4] = {2, 3, 2, 3}, gn[4] = {2, 3, 2, 3};
    pgd_sched_config c = fit_cfg(4, 0, 0, 4);
    c.grid_m = gm;
    c.grid_n = gn;
    uint32_t before, after;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &before, NULL, NULL), 0);
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int i = 0; i < 4; i++)
        gm[i] = gn[i] = 9; /* the caller's arrays may change after open */
    pgd_sched_step st;
    uint32_t crc = 0;
    while (pgd_sched_next(s, &st, NULL) == 1) {
        CU_ASSERT(st.grid_m == 2 || st.grid_m == 3);
        crc = pgd_sched_digest_step(crc, &st);
    }
    pgd_sched_close(&s);
    CU_ASSERT_EQUAL(crc, before);
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &after, NULL, NULL), 0);
    CU_ASSERT_NOT_EQUAL(after, before);
}

/* ---- determinism, digests, resume ---------------------------------------------------------------- */

static void test_determinism_and_digest(void)
{
    pgd_sched_config c = fit_cfg(13, 6, 7, 4);
    c.epochs = 3;
    c.inner_chunk = 3;
    uint32_t d1, d2, d3;
    uint64_t n1, n2;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d1, &n1, NULL), 0);
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d2, &n2, NULL), 0);
    CU_ASSERT_EQUAL(d1, d2);
    CU_ASSERT_EQUAL(n1, n2);
    CU_ASSERT(n1 > 0);
    /* Pinned: the stream is part of the format; a change here changes every run's schedule. */
    CU_ASSERT_EQUAL(d1, 0x5E915D82u);
    if (d1 != 0x5E915D82u)
        fprintf(stderr, "\n    pinned digest: got 0x%08X", d1);
    c.seed = 1235;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d3, NULL, NULL), 0);
    CU_ASSERT_NOT_EQUAL(d1, d3);
    c.seed = 1234;
    c.shared_positions = 1;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d3, NULL, NULL), 0);
    CU_ASSERT_NOT_EQUAL(d1, d3);
    c.shared_positions = 0;
    c.fill_chunk = 43; /* 42 cells: still one fill message, the same stream */
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d3, NULL, NULL), 0);
    CU_ASSERT_EQUAL(d1, d3);
    c.fill_chunk = 41;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d3, NULL, NULL), 0);
    CU_ASSERT_NOT_EQUAL(d1, d3);
    c.fill_chunk = 64;
    pgd_err err = PGD_ERR_INIT;
    c.batch_size = 0;
    CU_ASSERT_EQUAL(pgd_sched_digest(&c, &d3, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.msg, "batch_size: 0 is out of range 1..4096");

    /* Each field of a step changes its digest. */
    uint32_t images[2] = {4, 9};
    pgd_sched_cell cells[2] = {{1, 2}, {3, 0}};
    pgd_sched_step st = {.epoch = 1, .batch = 2, .step = 3, .chunk = 4, .flags = PGD_WIRE_FLAG_INNER,
                         .step_end = 1, .group = 0, .grid_m = 5, .grid_n = 6, .n_images = 2,
                         .images = images, .patches_per_image = 1, .cells = cells};
    uint32_t base = pgd_sched_digest_step(0, &st);
    CU_ASSERT_EQUAL(base, pgd_sched_digest_step(0, &st));
    pgd_sched_step v[12];
    for (int i = 0; i < 12; i++)
        v[i] = st;
    v[0].epoch++, v[1].batch++, v[2].step++, v[3].chunk++, v[4].flags |= PGD_WIRE_FLAG_BATCH_END;
    v[5].step_end = 0, v[6].group++, v[7].grid_m++, v[8].grid_n++, v[9].n_images = 1;
    uint32_t images2[2] = {4, 8};
    pgd_sched_cell cells2[2] = {{1, 2}, {3, 1}};
    v[10].images = images2, v[11].cells = cells2;
    for (int i = 0; i < 12; i++)
        CU_ASSERT_NOT_EQUAL(pgd_sched_digest_step(0, &v[i]), base);
}

typedef struct trace {
    uint32_t epoch, batch, crc;
} trace;

static size_t collect(const pgd_sched_config *c, trace *t, size_t cap)
{
    pgd_sched *s = pgd_sched_open(c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    pgd_sched_step st;
    size_t n = 0;
    while (pgd_sched_next(s, &st, NULL) == 1) {
        CU_ASSERT_FATAL(n < cap);
        t[n++] = (trace){st.epoch, st.batch, pgd_sched_digest_step(0, &st)};
    }
    pgd_sched_close(&s);
    return n;
}

static void check_resume(pgd_sched_config c)
{
    enum { CAP = 20000 };
    trace *full = malloc(CAP * sizeof *full), *part = malloc(CAP * sizeof *part);
    c.start_epoch = c.start_batch = 0;
    size_t nfull = collect(&c, full, CAP);
    uint32_t epochs = c.mode == PGD_SCHED_TRAIN ? c.epochs : 1, batches = ref_batches(&c);
    for (uint32_t e = 0; e <= epochs; e++)
        for (uint32_t b = 0; b < (e == epochs ? 1 : batches); b++) {
            c.start_epoch = e;
            c.start_batch = b;
            size_t from = 0;
            while (from < nfull && !(full[from].epoch == e && full[from].batch == b))
                from++;
            size_t npart = collect(&c, part, CAP);
            CU_ASSERT_EQUAL(npart, nfull - from);
            if (npart == nfull - from)
                CU_ASSERT_EQUAL(memcmp(part, full + from, npart * sizeof *part), 0);
            if (e < epochs)
                CU_ASSERT_EQUAL(check_stream(&c, NULL), 0);
        }
    free(full);
    free(part);
}

static void test_resume_equals_tail(void)
{
    pgd_sched_config c = fit_cfg(11, 5, 6, 3);
    c.epochs = 3;
    c.fill_chunk = 7;
    check_resume(c);
    c.zeta = 9; /* several passes */
    c.inner_chunk = 2;
    c.drop_last = 1;
    check_resume(c);
    c = native_cfg();
    c.epochs = 2;
    c.shared_positions = 1;
    check_resume(c);
    c.mode = PGD_SCHED_INFER;
    check_resume(c);
}

/* ---- statistics with fixed seeds ----------------------------------------------------------------- */

static void test_draws_uniform(void)
{
    /* 8x8 grid, k = 8: over 800 batches each cell is the first step's pick 100 times on average. */
    pgd_sched_config c = fit_cfg(800, 8, 8, 1);
    c.sampling = 0.125;
    c.fill_chunk = 64;
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    double hits[64] = {0}, first_pos[8] = {0};
    pgd_sched_step st;
    while (pgd_sched_next(s, &st, NULL) == 1)
        if (st.step == 1)
            for (uint32_t q = 0; q < st.patches_per_image; q++)
                hits[st.cells[q].row * 8 + st.cells[q].col]++;
    pgd_sched_close(&s);
    double chi = 0;
    for (int i = 0; i < 64; i++)
        chi += (hits[i] - 100) * (hits[i] - 100) / 100;
    CU_ASSERT(chi < 63 + 5 * sqrt(2 * 63.0)); /* 63 degrees of freedom, 5 sigma */
    /* Shuffles: where image 0 lands over 800 epochs of 8 images, 100 times per position on average. */
    c = fit_cfg(8, 1, 1, 8);
    c.epochs = 800;
    s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    while (pgd_sched_next(s, &st, NULL) == 1)
        if (st.step == 0)
            for (uint32_t i = 0; i < 8; i++)
                if (st.images[i] == 0)
                    first_pos[i]++;
    pgd_sched_close(&s);
    chi = 0;
    for (int i = 0; i < 8; i++)
        chi += (first_pos[i] - 100) * (first_pos[i] - 100) / 100;
    CU_ASSERT(chi < 7 + 5 * sqrt(2 * 7.0));
}

/* ---- the draw source alone ----------------------------------------------------------------------- */

static void test_perm_source(void)
{
    pgd_rng r;
    pgd_rng_seed(&r, 5);
    uint32_t a[10], out[10];
    uint8_t mark[2] = {0, 0};
    pgd_perm p;
    pgd_perm_start(&p, r, a, 10);
    CU_ASSERT_EQUAL(p.passes, 1);
    CU_ASSERT_EQUAL(pgd_perm_draw(&p, out, 0, mark), -1);
    CU_ASSERT_EQUAL(pgd_perm_draw(&p, out, 11, mark), -1);
    CU_ASSERT_EQUAL(pgd_perm_draw(&p, out, 6, NULL), 0);
    CU_ASSERT_EQUAL(pgd_perm_draw(&p, out, 6, NULL), -1); /* crosses the pass without a bitmap */
    pgd_perm_start(&p, r, a, 10);
    uint32_t seen[10] = {0};
    for (int round = 0; round < 5; round++) { /* 6 + 6 + 6 + 6 + 6 = 3 passes */
        CU_ASSERT_EQUAL(pgd_perm_draw(&p, out, 6, mark), 0);
        int dup = 0;
        for (int i = 0; i < 6; i++) {
            seen[out[i]]++;
            for (int j = 0; j < i; j++)
                dup |= out[i] == out[j];
        }
        CU_ASSERT_FALSE(dup);
    }
    CU_ASSERT_EQUAL(p.passes, 3);
    CU_ASSERT(mark[0] == 0 && mark[1] == 0); /* cleared again */
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(seen[i], 3); /* three full passes */
    pgd_perm_start(&p, r, a, 1);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(pgd_perm_draw(&p, out, 1, NULL), 0);
        CU_ASSERT_EQUAL(out[0], 0);
    }
    CU_ASSERT_EQUAL(p.passes, 3);
    CU_ASSERT_EQUAL(PGD_SCHED_KEY_SHUFFLE, pack_key("shuffle"));
    CU_ASSERT_EQUAL(PGD_SCHED_KEY_IMAGE, pack_key("image"));
    CU_ASSERT_EQUAL(PGD_SCHED_KEY_SHARED, pack_key("shared"));
}

/* ---- bad configs --------------------------------------------------------------------------------- */

static const uint32_t ok_m[3] = {4, 4, 4}, ok_n[3] = {4, 4, 4};
static const uint32_t bad_m[3] = {4, 0, 4}, bad_n[3] = {4, 4, 70000};

static void set_mode(pgd_sched_config *c) { c->mode = (pgd_sched_mode)7; }
static void set_images0(pgd_sched_config *c) { c->n_images = 0; }
static void set_batch0(pgd_sched_config *c) { c->batch_size = 0; }
static void set_batch_big(pgd_sched_config *c) { c->batch_size = 4097; }
static void set_epochs0(pgd_sched_config *c) { c->epochs = 0; }
static void set_sampling0(pgd_sched_config *c) { c->sampling = 0; }
static void set_sampling_big(pgd_sched_config *c) { c->sampling = 1.5; }
static void set_sampling_nan(pgd_sched_config *c) { c->sampling = NAN; }
static void set_sampling_neg(pgd_sched_config *c) { c->sampling = -0.1; }
static void set_max0(pgd_sched_config *c) { c->max_sampled = 0; }
static void set_max_big(pgd_sched_config *c) { c->max_sampled = 1.01; }
static void set_fill0(pgd_sched_config *c) { c->fill_chunk = 0; }
static void set_m0(pgd_sched_config *c) { c->m = 0; }
static void set_n_big(pgd_sched_config *c) { c->n = 65536; }
static void set_only_gm(pgd_sched_config *c) { c->m = c->n = 0, c->grid_m = ok_m; }
static void set_only_gn(pgd_sched_config *c) { c->m = c->n = 0, c->grid_n = ok_n; }
static void set_both(pgd_sched_config *c) { c->n = 0, c->grid_m = ok_m, c->grid_n = ok_n; }
static void set_gm_bad(pgd_sched_config *c) { c->m = c->n = 0, c->grid_m = bad_m, c->grid_n = ok_n; }
static void set_gn_bad(pgd_sched_config *c) { c->m = c->n = 0, c->grid_m = ok_m, c->grid_n = bad_n; }
static void set_drop_all(pgd_sched_config *c) { c->batch_size = 8, c->drop_last = 1; }
static void set_start_epoch(pgd_sched_config *c) { c->epochs = 2, c->start_epoch = 5; }
static void set_start_end(pgd_sched_config *c) { c->epochs = 2, c->start_epoch = 2, c->start_batch = 1; }
static void set_start_batch(pgd_sched_config *c) { c->start_batch = 2; }
static void set_eval_start(pgd_sched_config *c) { c->mode = PGD_SCHED_EVAL, c->epochs = 9, c->start_epoch = 2; }
static void set_fill_huge(pgd_sched_config *c)
{
    c->m = c->n = 65535, c->fill_chunk = (1u << 27) + 1, c->sampling = 1e-6;
}
static void set_inner_huge(pgd_sched_config *c) { c->m = c->n = 65535, c->batch_size = 1; }

static void test_bad_configs(void)
{
    static const struct {
        void (*set)(pgd_sched_config *);
        const char *msg;
    } cases[] = {
        {set_mode, "mode: 7 is not one of train|eval|infer"},
        {set_images0, "n_images: 0 is out of range (at least 1)"},
        {set_batch0, "batch_size: 0 is out of range 1..4096"},
        {set_batch_big, "batch_size: 4097 is out of range 1..4096"},
        {set_epochs0, "epochs: 0 is out of range (at least 1)"},
        {set_sampling0, "sampling: 0 is out of range (0, 1]"},
        {set_sampling_big, "sampling: 1.5 is out of range (0, 1]"},
        {set_sampling_nan, "sampling: nan is out of range (0, 1]"},
        {set_sampling_neg, "sampling: -0.1 is out of range (0, 1]"},
        {set_max0, "max_sampled: 0 is out of range (0, 1]"},
        {set_max_big, "max_sampled: 1.01 is out of range (0, 1]"},
        {set_fill0, "fill_chunk: 0 is out of range (at least 1)"},
        {set_m0, "m: 0 is out of range 1..65535"},
        {set_n_big, "n: 65536 is out of range 1..65535"},
        {set_only_gm, "grid_n: NULL while grid_m is set (per-image grids need both arrays)"},
        {set_only_gn, "grid_m: NULL while grid_n is set (per-image grids need both arrays)"},
        {set_both, "m: 4 is set together with per-image grids (give one or the other)"},
        {set_gm_bad, "grid_m[1]: 0 is out of range 1..65535"},
        {set_gn_bad, "grid_n[2]: 70000 is out of range 1..65535"},
        {set_drop_all, "batch_size: 8 with drop_last leaves no batch of 3 images"},
        {set_start_epoch,
         "start_epoch: 5 is out of range 0..2 (epochs 2; start_epoch 2 with start_batch 0 is the end)"},
        {set_start_end, "start_batch: 1 with start_epoch 2 (the end) must be 0"},
        {set_start_batch, "start_batch: 2 is out of range 0..1 (2 batches per epoch)"},
        {set_eval_start, "start_epoch: 2 is out of range 0..1 (epochs 1; start_epoch 1 with start_batch 0 is the end)"},
        {set_fill_huge, "fill_chunk: 134217729 cells per image x 2 image(s) = 268435458 cells per message, above "
                        "the limit 268435456 (lower fill_chunk or batch_size)"},
        {set_inner_huge, "inner_chunk: 429483623 cells per image x 1 image(s) = 429483623 cells per message, above "
                         "the limit 268435456 (lower inner_chunk or batch_size)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgd_sched_config c = fit_cfg(3, 4, 4, 2);
        cases[i].set(&c);
        pgd_err err = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_sched_check(&c, &err), -1);
        CU_ASSERT_EQUAL(err.code, PGD_EINVAL);
        if (strcmp(err.msg, cases[i].msg) != 0)
            fprintf(stderr, "\n    case %zu: got '%s'\n    want '%s'", i, err.msg, cases[i].msg);
        CU_ASSERT_STRING_EQUAL(err.msg, cases[i].msg);
        pgd_err_clear(&err);
        CU_ASSERT_PTR_NULL(pgd_sched_open(&c, &err));
        CU_ASSERT_STRING_EQUAL(err.msg, cases[i].msg);
        CU_ASSERT_EQUAL(pgd_sched_check(&c, NULL), -1); /* NULL err is fine */
    }
    /* Edges that are allowed. */
    pgd_sched_config c = fit_cfg(3, 65535, 65535, 2);
    c.fill_chunk = 1u << 27; /* exactly the limit: 2 x 2^27 = 2^28 */
    c.sampling = 1e-6;
    CU_ASSERT_EQUAL(pgd_sched_check(&c, NULL), 0);
    c = fit_cfg(3, 4, 4, 2);
    c.epochs = 2;
    c.start_epoch = 2; /* the end */
    pgd_sched *s = pgd_sched_open(&c, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    pgd_sched_step st;
    CU_ASSERT_EQUAL(pgd_sched_next(s, &st, NULL), 0);
    pgd_sched_close(&s);
    c = fit_cfg(3, 4, 4, 2);
    c.mode = PGD_SCHED_INFER;
    c.epochs = 0; /* ignored outside train */
    c.sampling = 1.0;
    c.max_sampled = 1.0;
    CU_ASSERT_EQUAL(pgd_sched_check(&c, NULL), 0);
}

static const pgd_test_case cases[] = {
    {"plan_paper_setups", test_plan_paper_setups},
    {"plan_edges", test_plan_edges},
    {"fill_sweep_every_cell_once", test_fill_sweep_every_cell_once},
    {"big_grid_1000x800", test_big_grid_1000x800},
    {"inner_draws_without_replacement", test_inner_draws_without_replacement},
    {"per_image_and_shared_positions", test_per_image_and_shared_positions},
    {"exact_small_stream", test_exact_small_stream},
    {"epoch_shuffle", test_epoch_shuffle},
    {"last_batch_and_drop_last", test_last_batch_and_drop_last},
    {"native_groups", test_native_groups},
    {"native_grids_copied", test_native_grids_copied},
    {"determinism_and_digest", test_determinism_and_digest},
    {"resume_equals_tail", test_resume_equals_tail},
    {"draws_uniform", test_draws_uniform},
    {"perm_source", test_perm_source},
    {"bad_configs", test_bad_configs},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return pgd_test_main("schedule", cases, argc, argv);
}
