/* sched_config.c: schedule config defaults and checks, and the per-grid plan (k, zeta, draws, messages). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sampler/schedule.h"

void pgd_sched_config_init(pgd_sched_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->mode = PGD_SCHED_TRAIN;
    cfg->epochs = 1;
    cfg->batch_size = 1;
    cfg->sampling = PGD_SCHED_DEFAULT_SAMPLING;
    cfg->max_sampled = PGD_SCHED_DEFAULT_MAX_SAMPLED;
    cfg->fill_chunk = PGD_SCHED_DEFAULT_FILL_CHUNK;
}

/* ceil(frac * cells), where a product within a relative 2^-40 of an integer counts as that integer (so that
 * 0.3 x 10 = 3.0000000000000004 gives 3, not 4), clamped to 1..cells. */
static uint32_t frac_cells(double frac, uint32_t cells)
{
    double x = frac * (double)cells;
    double r = round(x);
    double v = fabs(x - r) <= x * 0x1p-40 ? r : ceil(x);
    if (v < 1)
        return 1;
    if (v > (double)cells)
        return cells;
    return (uint32_t)v;
}

static int check_fraction(const char *name, double v, pgd_err *err)
{
    if (!(v > 0 && v <= 1)) /* NaN fails too */
        return pgd_fail(err, PGD_EINVAL, "%s: %g is out of range (0, 1]", name, v);
    return 0;
}

static int check_side(const char *name, long index, uint32_t v, pgd_err *err)
{
    if (v >= 1 && v <= PGD_SCHED_MAX_GRID)
        return 0;
    if (index < 0)
        return pgd_fail(err, PGD_EINVAL, "%s: %u is out of range 1..%u", name, v, PGD_SCHED_MAX_GRID);
    return pgd_fail(err, PGD_EINVAL, "%s[%ld]: %u is out of range 1..%u", name, index, v, PGD_SCHED_MAX_GRID);
}

static int check_plan_fields(const pgd_sched_config *cfg, pgd_err *err)
{
    if (check_fraction("sampling", cfg->sampling, err) || check_fraction("max_sampled", cfg->max_sampled, err))
        return -1;
    if (cfg->fill_chunk < 1)
        return pgd_fail(err, PGD_EINVAL, "fill_chunk: 0 is out of range (at least 1)");
    return 0;
}

int pgd_sched_plan_grid(const pgd_sched_config *cfg, uint32_t m, uint32_t n, pgd_sched_plan *plan, pgd_err *err)
{
    if (check_plan_fields(cfg, err) || check_side("m", -1, m, err) || check_side("n", -1, n, err))
        return -1;
    memset(plan, 0, sizeof *plan);
    uint32_t cells = (uint32_t)((uint64_t)m * n); /* <= 65535^2 < 2^32 */
    uint32_t k = frac_cells(cfg->sampling, cells);
    plan->cells = cells;
    plan->k = k;
    if (cfg->zeta == 0) {
        uint32_t d = frac_cells(cfg->max_sampled, cells);
        plan->zeta = d / k + (d % k != 0);
        plan->last_k = d - (plan->zeta - 1) * k;
        plan->draws = d;
    } else {
        plan->zeta = cfg->zeta;
        plan->last_k = k;
        plan->draws = (uint64_t)cfg->zeta * k;
    }
    plan->passes = plan->draws / cells + (plan->draws % cells != 0);
    plan->fill_messages = cells / cfg->fill_chunk + (cells % cfg->fill_chunk != 0);
    uint32_t ic = cfg->inner_chunk == 0 || cfg->inner_chunk > k ? k : cfg->inner_chunk;
    uint64_t per_full = k / ic + (k % ic != 0), per_last = plan->last_k / ic + (plan->last_k % ic != 0);
    plan->inner_messages = (uint64_t)(plan->zeta - 1) * per_full + per_last;
    return 0;
}

static int check_grids(const pgd_sched_config *c, pgd_err *err)
{
    if (!c->grid_m && !c->grid_n)
        return check_side("m", -1, c->m, err) || check_side("n", -1, c->n, err) ? -1 : 0;
    if (!c->grid_m || !c->grid_n)
        return pgd_fail(err, PGD_EINVAL, "%s: NULL while %s is set (per-image grids need both arrays)",
                        c->grid_m ? "grid_n" : "grid_m", c->grid_m ? "grid_m" : "grid_n");
    if (c->m || c->n)
        return pgd_fail(err, PGD_EINVAL, "%s: %u is set together with per-image grids (give one or the other)",
                        c->m ? "m" : "n", c->m ? c->m : c->n);
    for (uint32_t i = 0; i < c->n_images; i++)
        if (check_side("grid_m", (long)i, c->grid_m[i], err) || check_side("grid_n", (long)i, c->grid_n[i], err))
            return -1;
    return 0;
}

/* The largest message: at most min(B, N) images of one grid, each with min(fill_chunk, cells) fill cells or
 * min(inner chunk, k) inner cells. The wire's cells frame bounds n_images x ppi. */
static int check_message_size(const pgd_sched_config *c, pgd_err *err)
{
    uint64_t fill_max = 0, inner_max = 0;
    uint32_t images = c->batch_size < c->n_images ? c->batch_size : c->n_images;
    uint32_t count = c->grid_m ? c->n_images : 1;
    for (uint32_t i = 0; i < count; i++) {
        pgd_sched_plan p;
        if (pgd_sched_plan_grid(c, c->grid_m ? c->grid_m[i] : c->m, c->grid_n ? c->grid_n[i] : c->n, &p, err))
            return -1;
        uint64_t fill = c->fill_chunk < p.cells ? c->fill_chunk : p.cells;
        uint64_t inner = c->inner_chunk && c->inner_chunk < p.k ? c->inner_chunk : p.k;
        fill_max = fill > fill_max ? fill : fill_max;
        inner_max = c->mode == PGD_SCHED_TRAIN && inner > inner_max ? inner : inner_max;
    }
    const char *field = fill_max >= inner_max ? "fill_chunk" : "inner_chunk";
    uint64_t ppi = fill_max >= inner_max ? fill_max : inner_max;
    if (ppi * images > PGD_SCHED_MAX_MESSAGE_CELLS)
        return pgd_fail(err, PGD_EINVAL,
                        "%s: %llu cells per image x %u image(s) = %llu cells per message, above the limit %u "
                        "(lower %s or batch_size)",
                        field, (unsigned long long)ppi, images, (unsigned long long)(ppi * images),
                        PGD_SCHED_MAX_MESSAGE_CELLS, field);
    return 0;
}

static int check_start(const pgd_sched_config *c, pgd_err *err)
{
    uint32_t epochs = c->mode == PGD_SCHED_TRAIN ? c->epochs : 1;
    int drop = c->mode == PGD_SCHED_TRAIN && c->drop_last;
    uint32_t batches = c->n_images / c->batch_size + (!drop && c->n_images % c->batch_size != 0);
    if (batches == 0)
        return pgd_fail(err, PGD_EINVAL, "batch_size: %u with drop_last leaves no batch of %u images",
                        c->batch_size, c->n_images);
    if (c->start_epoch > epochs)
        return pgd_fail(err, PGD_EINVAL, "start_epoch: %u is out of range 0..%u (epochs %u; start_epoch %u with "
                        "start_batch 0 is the end)", c->start_epoch, epochs, epochs, epochs);
    if (c->start_epoch == epochs && c->start_batch != 0)
        return pgd_fail(err, PGD_EINVAL, "start_batch: %u with start_epoch %u (the end) must be 0",
                        c->start_batch, c->start_epoch);
    if (c->start_epoch < epochs && c->start_batch >= batches)
        return pgd_fail(err, PGD_EINVAL, "start_batch: %u is out of range 0..%u (%u batches per epoch)",
                        c->start_batch, batches - 1, batches);
    return 0;
}

int pgd_sched_check(const pgd_sched_config *c, pgd_err *err)
{
    if (c->mode != PGD_SCHED_TRAIN && c->mode != PGD_SCHED_EVAL && c->mode != PGD_SCHED_INFER)
        return pgd_fail(err, PGD_EINVAL, "mode: %d is not one of train|eval|infer", (int)c->mode);
    if (c->n_images < 1)
        return pgd_fail(err, PGD_EINVAL, "n_images: 0 is out of range (at least 1)");
    if (c->batch_size < 1 || c->batch_size > PGD_SCHED_MAX_BATCH)
        return pgd_fail(err, PGD_EINVAL, "batch_size: %u is out of range 1..%u", c->batch_size, PGD_SCHED_MAX_BATCH);
    if (c->mode == PGD_SCHED_TRAIN && c->epochs < 1)
        return pgd_fail(err, PGD_EINVAL, "epochs: 0 is out of range (at least 1)");
    if (check_plan_fields(c, err) || check_grids(c, err) || check_message_size(c, err) || check_start(c, err))
        return -1;
    return 0;
}
