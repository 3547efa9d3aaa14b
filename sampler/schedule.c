/* schedule.c: the schedule iterator: epochs, batches, grid groups, the fill sweep and the inner steps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "sampler/perm.h"
#include "sampler/schedule.h"
#include "wire.h"

/* The images of one batch that share a grid, and their draw sources. */
typedef struct sched_group {
    uint32_t m, n;
    pgd_sched_plan plan;
    uint32_t first, count; /* members[first .. first + count) */
    uint32_t nsrc;         /* draw sources: 1 with shared positions, count otherwise */
    pgd_perm *src;         /* nsrc sources */
    uint32_t *drawn;       /* nsrc x plan.k: the current inner step's cells, per source */
    uint32_t step_k;       /* cells in the current inner step */
} sched_group;

struct pgd_sched {
    pgd_sched_config cfg;   /* grid_m / grid_n point to the copies below */
    uint32_t *grid_m, *grid_n;
    uint32_t epochs, batches;
    pgd_rng root;
    uint32_t *order;        /* the current epoch's image order (train) */
    int64_t order_epoch;    /* the epoch order holds, -1 = none */
    uint32_t epoch, batch;  /* the batch being streamed or next; epoch == epochs: the end */
    int in_batch;
    /* the open batch */
    uint32_t *members;      /* its manifest rows, grouped by grid */
    uint32_t *gid;          /* per batch position: group index (scratch) */
    sched_group *groups;
    uint32_t ngroups, max_step;
    uint32_t cur_step, cur_group, cur_chunk; /* the next message */
    /* reusable memory */
    uint32_t *perm_mem, *draw_mem;
    size_t perm_cap, draw_cap;
    pgd_perm *perms;
    size_t perms_cap;
    uint8_t *mark;
    size_t mark_cap;
    pgd_sched_cell *cells;
    size_t cells_cap;
    int failed;
    pgd_err err;
};

static uint32_t grid_rows(const pgd_sched *s, uint32_t row)
{
    return s->grid_m ? s->grid_m[row] : s->cfg.m;
}

static uint32_t grid_cols(const pgd_sched *s, uint32_t row)
{
    return s->grid_n ? s->grid_n[row] : s->cfg.n;
}

static uint32_t *copy_u32(const uint32_t *src, uint32_t n)
{
    uint32_t *dst = malloc((size_t)n * sizeof *dst);
    if (dst)
        memcpy(dst, src, (size_t)n * sizeof *dst);
    return dst;
}

pgd_sched *pgd_sched_open(const pgd_sched_config *cfg, pgd_err *err)
{
    if (pgd_sched_check(cfg, err))
        return NULL;
    pgd_sched *s = calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    s->cfg = *cfg;
    if (cfg->grid_m) {
        s->grid_m = copy_u32(cfg->grid_m, cfg->n_images);
        s->grid_n = copy_u32(cfg->grid_n, cfg->n_images);
        if (!s->grid_m || !s->grid_n)
            goto nomem;
    }
    s->cfg.grid_m = s->grid_m;
    s->cfg.grid_n = s->grid_n;
    int train = cfg->mode == PGD_SCHED_TRAIN;
    s->epochs = train ? cfg->epochs : 1;
    s->batches = cfg->n_images / cfg->batch_size +
                 (!(train && cfg->drop_last) && cfg->n_images % cfg->batch_size != 0);
    pgd_rng_seed(&s->root, cfg->seed);
    s->order = malloc((size_t)cfg->n_images * sizeof *s->order);
    s->members = malloc((size_t)cfg->batch_size * sizeof *s->members);
    s->gid = malloc((size_t)cfg->batch_size * sizeof *s->gid);
    s->groups = calloc(cfg->batch_size, sizeof *s->groups);
    if (!s->order || !s->members || !s->gid || !s->groups)
        goto nomem;
    s->order_epoch = -1;
    s->epoch = cfg->start_epoch;
    s->batch = cfg->start_batch;
    return s;
nomem:
    pgd_sched_close(&s);
    pgd_fail(err, PGD_ENOMEM, "schedule: out of memory for %u images", cfg->n_images);
    return NULL;
}

void pgd_sched_close(pgd_sched **sp)
{
    if (!sp || !*sp)
        return;
    pgd_sched *s = *sp;
    free(s->grid_m);
    free(s->grid_n);
    free(s->order);
    free(s->members);
    free(s->gid);
    free(s->groups);
    free(s->perm_mem);
    free(s->draw_mem);
    free(s->perms);
    free(s->mark);
    free(s->cells);
    free(s);
    *sp = NULL;
}

uint32_t pgd_sched_epochs(const pgd_sched *s)
{
    return s->epochs;
}

uint32_t pgd_sched_batches(const pgd_sched *s)
{
    return s->batches;
}

/* A buffer of at least n (and at least 1) elements of size elem: buf itself when *cap suffices, else a new one
 * (buf freed; contents not kept). NULL when it cannot be had; buf and *cap are then unchanged. */
static void *reserve(void *buf, size_t *cap, uint64_t n, size_t elem)
{
    if (n == 0)
        n = 1;
    if (n <= *cap)
        return buf;
    if (n > SIZE_MAX / elem)
        return NULL;
    void *p = malloc((size_t)n * elem);
    if (!p)
        return NULL;
    free(buf);
    *cap = (size_t)n;
    return p;
}

/* The image order of epoch e: identity for eval/infer; for train a Fisher-Yates shuffle (pgd_rng_shuffle_u32)
 * with the stream split(split(root, "shuffle"), e). */
static void epoch_order(pgd_sched *s, uint32_t e)
{
    if (s->order_epoch == (int64_t)e)
        return;
    for (uint32_t i = 0; i < s->cfg.n_images; i++)
        s->order[i] = i;
    if (s->cfg.mode == PGD_SCHED_TRAIN) {
        pgd_rng shuffle = pgd_rng_split(&s->root, PGD_SCHED_KEY_SHUFFLE);
        pgd_rng r = pgd_rng_split(&shuffle, e);
        pgd_rng_shuffle_u32(&r, s->order, s->cfg.n_images);
    }
    s->order_epoch = (int64_t)e;
}

/* Split the batch's images into groups of equal grid, in order of first appearance, each keeping batch order. */
static void form_groups(pgd_sched *s, const uint32_t *rows, uint32_t nb)
{
    s->ngroups = 0;
    for (uint32_t i = 0; i < nb; i++) {
        uint32_t m = grid_rows(s, rows[i]), n = grid_cols(s, rows[i]), g = 0;
        while (g < s->ngroups && !(s->groups[g].m == m && s->groups[g].n == n))
            g++;
        if (g == s->ngroups) {
            memset(&s->groups[g], 0, sizeof s->groups[g]);
            s->groups[g].m = m;
            s->groups[g].n = n;
            s->ngroups++;
        }
        s->groups[g].count++;
        s->gid[i] = g;
    }
    uint32_t at = 0;
    for (uint32_t g = 0; g < s->ngroups; g++) {
        s->groups[g].first = at;
        at += s->groups[g].count;
        s->groups[g].count = 0;
    }
    for (uint32_t i = 0; i < nb; i++) {
        sched_group *G = &s->groups[s->gid[i]];
        s->members[G->first + G->count++] = rows[i];
    }
}

/* Memory for the inner steps of the open batch, and one draw source per image (or per group when shared):
 * per image split(split(split(split(root, "image"), epoch), batch), row); shared
 * split(split(split(split(root, "shared"), epoch), batch), m << 32 | n). */
static int start_sources(pgd_sched *s)
{
    uint64_t perm_n = 0, draw_n = 0, nsrc = 0, mark_bits = 0;
    for (uint32_t g = 0; g < s->ngroups; g++) {
        sched_group *G = &s->groups[g];
        G->nsrc = s->cfg.shared_positions ? 1 : G->count;
        perm_n += (uint64_t)G->nsrc * G->plan.cells;
        draw_n += (uint64_t)G->nsrc * G->plan.k;
        nsrc += G->nsrc;
        if (G->plan.passes > 1 && G->plan.cells > mark_bits)
            mark_bits = G->plan.cells;
    }
    uint32_t *perm_mem = reserve(s->perm_mem, &s->perm_cap, perm_n, sizeof *perm_mem);
    if (perm_mem)
        s->perm_mem = perm_mem;
    uint32_t *draw_mem = perm_mem ? reserve(s->draw_mem, &s->draw_cap, draw_n, sizeof *draw_mem) : NULL;
    if (draw_mem)
        s->draw_mem = draw_mem;
    pgd_perm *perms = draw_mem ? reserve(s->perms, &s->perms_cap, nsrc, sizeof *perms) : NULL;
    if (perms)
        s->perms = perms;
    uint8_t *mark = perms ? reserve(s->mark, &s->mark_cap, (mark_bits + 7) / 8, 1) : NULL;
    if (!mark)
        return pgd_fail(&s->err, PGD_ENOMEM, "epoch %u batch %u: out of memory for %llu permutation cells",
                        s->epoch, s->batch, (unsigned long long)perm_n);
    s->mark = mark;
    memset(s->mark, 0, s->mark_cap);
    pgd_rng base = pgd_rng_split(&s->root, s->cfg.shared_positions ? PGD_SCHED_KEY_SHARED : PGD_SCHED_KEY_IMAGE);
    pgd_rng in_epoch = pgd_rng_split(&base, s->epoch);
    pgd_rng in_batch = pgd_rng_split(&in_epoch, s->batch);
    uint32_t *perm_at = s->perm_mem, *draw_at = s->draw_mem;
    pgd_perm *src_at = s->perms;
    for (uint32_t g = 0; g < s->ngroups; g++) {
        sched_group *G = &s->groups[g];
        G->src = src_at;
        G->drawn = draw_at;
        for (uint32_t i = 0; i < G->nsrc; i++) {
            uint64_t key = s->cfg.shared_positions ? (uint64_t)G->m << 32 | G->n : s->members[G->first + i];
            pgd_perm_start(&G->src[i], pgd_rng_split(&in_batch, key), perm_at, G->plan.cells);
            perm_at += G->plan.cells;
        }
        src_at += G->nsrc;
        draw_at += (size_t)G->nsrc * G->plan.k;
    }
    return 0;
}

static int open_batch(pgd_sched *s)
{
    epoch_order(s, s->epoch);
    uint64_t start = (uint64_t)s->batch * s->cfg.batch_size;
    uint32_t nb = (uint32_t)(s->cfg.n_images - start < s->cfg.batch_size ? s->cfg.n_images - start
                                                                         : s->cfg.batch_size);
    form_groups(s, s->order + start, nb);
    s->max_step = 0;
    for (uint32_t g = 0; g < s->ngroups; g++) {
        sched_group *G = &s->groups[g];
        if (pgd_sched_plan_grid(&s->cfg, G->m, G->n, &G->plan, &s->err)) /* checked at open: cannot fail */
            return -1;
        if (s->cfg.mode == PGD_SCHED_TRAIN && G->plan.zeta > s->max_step)
            s->max_step = G->plan.zeta;
    }
    if (s->cfg.mode == PGD_SCHED_TRAIN && start_sources(s))
        return -1;
    s->cur_step = s->cur_group = s->cur_chunk = 0;
    s->in_batch = 1;
    return 0;
}

static uint32_t inner_chunk(const pgd_sched *s, const sched_group *G)
{
    return s->cfg.inner_chunk == 0 || s->cfg.inner_chunk > G->plan.k ? G->plan.k : s->cfg.inner_chunk;
}

static uint32_t step_cells(const sched_group *G, uint32_t step)
{
    return step == G->plan.zeta ? G->plan.last_k : G->plan.k;
}

static uint32_t chunks_of(const pgd_sched *s, const sched_group *G, uint32_t step)
{
    if (step == 0)
        return G->plan.fill_messages;
    uint32_t cells = step_cells(G, step), ic = inner_chunk(s, G);
    return cells / ic + (cells % ic != 0);
}

static int group_has_step(const sched_group *G, uint32_t step)
{
    return step == 0 || G->plan.zeta >= step;
}

/* Move (step, group, chunk) to the message after it; 0 when it was the batch's last. */
static int successor(const pgd_sched *s, uint32_t *step, uint32_t *group, uint32_t *chunk)
{
    if (*chunk + 1 < chunks_of(s, &s->groups[*group], *step)) {
        ++*chunk;
        return 1;
    }
    for (uint32_t st = *step, g = *group + 1; st <= s->max_step; st++, g = 0)
        for (; g < s->ngroups; g++)
            if (group_has_step(&s->groups[g], st)) {
                *step = st;
                *group = g;
                *chunk = 0;
                return 1;
            }
    return 0;
}

static int reserve_cells(pgd_sched *s, uint64_t n)
{
    pgd_sched_cell *cells = reserve(s->cells, &s->cells_cap, n, sizeof *cells);
    if (!cells)
        return pgd_fail(&s->err, PGD_ENOMEM, "epoch %u batch %u: out of memory for %llu cells", s->epoch,
                        s->batch, (unsigned long long)n);
    s->cells = cells;
    return 0;
}

/* Fill message: cells chunk * fill_chunk onwards in row-major order, the same for every image. */
static int fill_cells(pgd_sched *s, const sched_group *G, uint32_t chunk, uint32_t *ppi)
{
    uint64_t from = (uint64_t)chunk * s->cfg.fill_chunk, left = G->plan.cells - from;
    *ppi = (uint32_t)(left < s->cfg.fill_chunk ? left : s->cfg.fill_chunk);
    if (reserve_cells(s, (uint64_t)*ppi * G->count))
        return -1;
    for (uint32_t i = 0; i < G->count; i++)
        for (uint32_t q = 0; q < *ppi; q++) {
            uint32_t c = (uint32_t)(from + q);
            s->cells[(size_t)i * *ppi + q] = (pgd_sched_cell){c / G->n, c % G->n};
        }
    return 0;
}

/* Inner message: on the step's first chunk every source draws the step's cells; chunk c is the slice
 * [c * inner_chunk, ...) of each image's (or the group's) draw. */
static int inner_cells(pgd_sched *s, sched_group *G, uint32_t step, uint32_t chunk, uint32_t *ppi)
{
    if (chunk == 0) {
        G->step_k = step_cells(G, step);
        for (uint32_t i = 0; i < G->nsrc; i++)
            if (pgd_perm_draw(&G->src[i], G->drawn + (size_t)i * G->plan.k, G->step_k, s->mark))
                return pgd_fail(&s->err, PGD_EINVAL, "epoch %u batch %u step %u: draw of %u cells failed",
                                s->epoch, s->batch, step, G->step_k);
    }
    uint32_t ic = inner_chunk(s, G), from = chunk * ic, left = G->step_k - from;
    *ppi = left < ic ? left : ic;
    if (reserve_cells(s, (uint64_t)*ppi * G->count))
        return -1;
    for (uint32_t i = 0; i < G->count; i++) {
        const uint32_t *d = G->drawn + (size_t)(G->nsrc == 1 ? 0 : i) * G->plan.k + from;
        for (uint32_t q = 0; q < *ppi; q++)
            s->cells[(size_t)i * *ppi + q] = (pgd_sched_cell){d[q] / G->n, d[q] % G->n};
    }
    return 0;
}

static uint32_t phase_flag(const pgd_sched *s, uint32_t step)
{
    if (s->cfg.mode == PGD_SCHED_EVAL)
        return PGD_WIRE_FLAG_EVAL;
    if (s->cfg.mode == PGD_SCHED_INFER)
        return PGD_WIRE_FLAG_INFER;
    return step == 0 ? PGD_WIRE_FLAG_FILL : PGD_WIRE_FLAG_INNER;
}

static int emit(pgd_sched *s, pgd_sched_step *out)
{
    sched_group *G = &s->groups[s->cur_group];
    uint32_t step = s->cur_step, chunk = s->cur_chunk, ppi = 0;
    if (step == 0 ? fill_cells(s, G, chunk, &ppi) : inner_cells(s, G, step, chunk, &ppi))
        return -1;
    memset(out, 0, sizeof *out);
    out->epoch = s->epoch;
    out->batch = s->batch;
    out->step = step;
    out->chunk = chunk;
    out->flags = phase_flag(s, step);
    out->group = s->cur_group;
    out->grid_m = G->m;
    out->grid_n = G->n;
    out->n_images = G->count;
    out->images = s->members + G->first;
    out->patches_per_image = ppi;
    out->cells = s->cells;
    int more = successor(s, &s->cur_step, &s->cur_group, &s->cur_chunk);
    out->step_end = !more || s->cur_step != step;
    if (!more) {
        out->flags |= PGD_WIRE_FLAG_BATCH_END;
        s->in_batch = 0;
        if (++s->batch == s->batches) {
            out->flags |= PGD_WIRE_FLAG_EPOCH_END;
            s->batch = 0;
            s->epoch++;
        }
    }
    return 0;
}

int pgd_sched_next(pgd_sched *s, pgd_sched_step *step, pgd_err *err)
{
    if (!s->failed) {
        if (s->epoch >= s->epochs)
            return 0;
        if (!(!s->in_batch && open_batch(s)) && !emit(s, step))
            return 1;
        s->failed = 1;
    }
    if (err && !pgd_err_is_set(err))
        *err = s->err;
    return -1;
}
