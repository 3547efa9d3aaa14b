/* patchgd.c: Algorithms 1 and 2 of PatchGD on any backend: Z-filling, inner steps with accumulation, prediction. */
#include "trainer/patchgd.h"

#include <stdlib.h>
#include <string.h>

#define KEY_FILL 0x6C6C6966ull  /* "fill": dropout seeds of Z-filling */
#define KEY_INNER 0x72656E6Eull /* "nner": dropout seeds of inner steps */

struct pgd_patchgd {
    pgd_patchgd_cfg cfg;
    pgd_backend *be;
    pgd_net *f, *g;
    pgd_optim *opt_f, *opt_g;
    int s, mn, classes;
    int per;                /* patches per forward of f: max_patches, or min(inner_chunk, max_patches) */
    size_t patch_bytes;     /* p * p * c */
    /* backend memory */
    uint8_t *u8;            /* [per, p, p, c] */
    float *x;               /* [per, c, p, p] */
    uint32_t *cells;        /* [per] */
    float *dfeat;           /* [per, s] */
    float *z, *dz;          /* [max_images, s, mn] */
    int32_t *labels;        /* [max_images] */
    float *loss, *probs, *dlogits;
    /* host memory */
    uint8_t *seen;          /* [max_images * mn]: duplicate-cell check of an inner step */
    float *loss_host;
    int64_t fills, steps;   /* forward passes of Z-filling, inner steps taken */
    int pending;            /* inner steps accumulated since the last update */
    float lr;               /* of the next update */
    pgd_scaler *scaler;     /* fp16 loss scaling, or NULL */
};

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t z = a ^ (b * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 32)) * 0xD6E8FEB86659FD93ull;
    return z ^ (z >> 32);
}

static int check_cfg(const pgd_patchgd_cfg *c, pgd_net *f, pgd_net *g, pgd_err *err)
{
    int fc, fh, fw, gc, gh, gw, oc, oh, ow;
    if (c->max_images < 1 || c->m < 1 || c->n < 1 || c->patch < 1 || c->channels < 1 || c->channels > 4 ||
        c->max_patches < 1 || c->epsilon < 1)
        return pgd_fail(err, PGD_EINVAL, "patchgd: images, grid, patch, channels (1..4), max_patches and "
                                         "epsilon must be positive");
    for (int ch = 0; ch < c->channels; ch++)
        if (!(c->std[ch] > 0))
            return pgd_fail(err, PGD_EINVAL, "patchgd: std of channel %d must be > 0", ch);
    pgd_net_in_shape(f, &fc, &fh, &fw);
    if (fc != c->channels || fh != c->patch || fw != c->patch)
        return pgd_fail(err, PGD_EINVAL, "patchgd: the backbone takes [%d, %d, %d], the patches are [%d, %d, %d]",
                        fc, fh, fw, c->channels, c->patch, c->patch);
    pgd_net_in_shape(g, &gc, &gh, &gw);
    pgd_net_out_shape(f, &oc, &oh, &ow);
    if (gc != (int)pgd_net_out_count(f) || gh != c->m || gw != c->n)
        return pgd_fail(err, PGD_EINVAL, "patchgd: the head takes [%d, %d, %d], Z is [%zu, %d, %d]", gc, gh, gw,
                        pgd_net_out_count(f), c->m, c->n);
    if (pgd_net_backend(f) != pgd_net_backend(g))
        return pgd_fail(err, PGD_EINVAL, "patchgd: the backbone and the head are on different backends");
    if (c->inner_chunk < 0)
        return pgd_fail(err, PGD_EINVAL, "patchgd: inner_chunk %d is negative", c->inner_chunk);
    if (c->freeze_bn && c->fill_train_mode)
        return pgd_fail(err, PGD_EINVAL, "patchgd: freeze_bn keeps the backbone's batch-norm statistics; Z-filling "
                                         "in train mode (fill_train_mode) would move them");
    /* BN's running statistics are the only buffers a net has */
    if (c->inner_chunk > 0 && !c->freeze_bn && pgd_net_buffer_count(f) > 0)
        return pgd_fail(err, PGD_EINVAL, "patchgd: inner_chunk needs freeze_bn: the backbone has batch norm, which "
                                         "in train mode normalises each chunk by its own statistics, so a chunked "
                                         "step would not be the step over all the patches");
    return 0;
}

/* Patches per forward of f for max_patches: min(inner_chunk, max_patches), or max_patches without chunks. */
static int forward_size(const pgd_patchgd_cfg *c, int max_patches)
{
    return c->inner_chunk > 0 && c->inner_chunk < max_patches ? c->inner_chunk : max_patches;
}

pgd_patchgd *pgd_patchgd_new(pgd_net *f, pgd_net *g, pgd_optim *opt_f, pgd_optim *opt_g,
                             const pgd_patchgd_cfg *cfg, pgd_err *err)
{
    if (check_cfg(cfg, f, g, err) != 0)
        return NULL;
    pgd_patchgd *pg = calloc(1, sizeof *pg);
    if (!pg) {
        pgd_fail(err, PGD_ENOMEM, "patchgd: out of memory");
        return NULL;
    }
    pg->cfg = *cfg;
    pg->be = pgd_net_backend(f);
    pg->f = f, pg->g = g, pg->opt_f = opt_f, pg->opt_g = opt_g;
    pg->lr = opt_f ? opt_f->cfg.lr : opt_g ? opt_g->cfg.lr : 0.0f;
    pg->s = (int)pgd_net_out_count(f);
    pg->mn = cfg->m * cfg->n;
    pg->classes = (int)pgd_net_out_count(g);
    pg->patch_bytes = (size_t)cfg->patch * cfg->patch * cfg->channels;
    pg->per = forward_size(cfg, cfg->max_patches);
    size_t np = (size_t)pg->per, nz = (size_t)cfg->max_images * pg->s * pg->mn;
    size_t ni = (size_t)cfg->max_images, nc = ni * pg->classes;
    pgd_backend *be = pg->be;
    pg->u8 = be->ops->alloc(be, np * pg->patch_bytes);
    pg->x = be->ops->alloc(be, np * pg->patch_bytes * sizeof(float));
    pg->cells = be->ops->alloc(be, np * sizeof(uint32_t));
    pg->dfeat = be->ops->alloc(be, np * pg->s * sizeof(float));
    pg->z = be->ops->alloc(be, nz * sizeof(float));
    pg->dz = be->ops->alloc(be, nz * sizeof(float));
    pg->labels = be->ops->alloc(be, ni * sizeof(int32_t));
    pg->loss = be->ops->alloc(be, ni * sizeof(float));
    pg->probs = be->ops->alloc(be, nc * sizeof(float));
    pg->dlogits = be->ops->alloc(be, nc * sizeof(float));
    pg->seen = calloc(ni * pg->mn, 1);
    pg->loss_host = calloc(ni, sizeof(float));
    if (!pg->seen || !pg->loss_host)
        pgd_fail(err, PGD_ENOMEM, "patchgd: out of memory");
    if (pgd_backend_error(be, err) != 0 || !pg->seen || !pg->loss_host ||
        pgd_net_plan(f, pg->per, err) != 0 || pgd_net_plan(g, cfg->max_images, err) != 0) {
        pgd_patchgd_free(&pg);
        return NULL;
    }
    return pg;
}

void pgd_patchgd_free(pgd_patchgd **pgp)
{
    pgd_patchgd *pg = pgp ? *pgp : NULL;
    if (!pg)
        return;
    pgd_backend *be = pg->be;
    void *dev[] = {pg->u8, pg->x, pg->cells, pg->dfeat, pg->z, pg->dz, pg->labels, pg->loss, pg->probs, pg->dlogits};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        be->ops->free(be, dev[i]);
    free(pg->seen);
    free(pg->loss_host);
    free(pg);
    *pgp = NULL;
}

/* Uploads `count` patches and their cells and converts the pixels to normalised floats in pg->x. */
static void load_patches(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count)
{
    pgd_backend *be = pg->be;
    be->ops->upload(be, pg->u8, pixels, (size_t)count * pg->patch_bytes);
    be->ops->upload(be, pg->cells, cells, (size_t)count * sizeof(uint32_t));
    be->ops->u8_to_float(be, pg->x, pg->u8, count, pg->cfg.patch, pg->cfg.patch, pg->cfg.channels, pg->cfg.mean,
                         pg->cfg.std);
}

static int check_cells(pgd_patchgd *pg, const uint32_t *cells, int count, int images, int unique, pgd_err *err)
{
    uint32_t limit = (uint32_t)images * (uint32_t)pg->mn;
    if (unique)
        memset(pg->seen, 0, limit);
    for (int i = 0; i < count; i++) {
        if (cells[i] >= limit)
            return pgd_fail(err, PGD_EINVAL, "patchgd: cell %u of patch %d is outside %d images of %d cells",
                            cells[i], i, images, pg->mn);
        if (unique && pg->seen[cells[i]]++)
            return pgd_fail(err, PGD_EINVAL, "patchgd: cell %u appears twice in one inner step", cells[i]);
    }
    return 0;
}

int pgd_patchgd_fill(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count, pgd_err *err)
{
    if (count < 0 || check_cells(pg, cells, count, pg->cfg.max_images, 0, err) != 0)
        return pgd_fail(err, PGD_EINVAL, "patchgd: bad fill of %d patches", count);
    pgd_net_mode mode = pg->cfg.fill_train_mode ? PGD_NET_TRAIN : PGD_NET_EVAL;
    for (int done = 0; done < count; done += pg->per) {
        int n = count - done < pg->per ? count - done : pg->per;
        load_patches(pg, pixels + (size_t)done * pg->patch_bytes, cells + done, n);
        const float *feat = pgd_net_forward(pg->f, pg->x, n, mode, mix(mix(pg->cfg.seed, KEY_FILL), pg->fills++), err);
        if (!feat)
            return -1;
        pg->be->ops->z_scatter(pg->be, pg->z, feat, pg->cells, n, pg->s, pg->mn);
    }
    return pgd_backend_error(pg->be, err);
}

/* One optimizer update of f and g with the accumulated gradients divided by the steps they hold. */
static int update(pgd_patchgd *pg, pgd_err *err)
{
    float scale = 1.0f / (float)pg->pending;
    pg->pending = 0;
    pgd_net *nets[2] = {pg->opt_f ? pg->f : NULL, pg->opt_g ? pg->g : NULL};
    float unscale;
    int finite = pgd_scaler_check(pg->scaler, nets, 2, &unscale, err);
    if (finite <= 0) /* skipped for an overflow (0), or an error */
        return finite;
    scale *= unscale;
    if (pg->opt_f && pgd_optim_step(pg->opt_f, pg->lr, scale, err) != 0)
        return -1;
    if (pg->opt_g && pgd_optim_step(pg->opt_g, pg->lr, scale, err) != 0)
        return -1;
    return 0;
}

/* Step 1 of an inner step: the count fresh patches through f in forwards of at most pg->per patches (one
 * forward without inner_chunk), each output scattered into its Z cells. Patch i is sample i of the step
 * wherever it falls (pgd_net_forward_part), so dropout draws the masks of a single forward of all of them.
 * The last forward's activations stay in f for backward_chunks. */
static int forward_chunks(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count,
                          pgd_net_mode mode, uint64_t seed, pgd_err *err)
{
    for (int done = 0; done < count; done += pg->per) {
        int n = count - done < pg->per ? count - done : pg->per;
        load_patches(pg, pixels + (size_t)done * pg->patch_bytes, cells + done, n);
        const float *feat = pgd_net_forward_part(pg->f, pg->x, n, done, mode, seed, err);
        if (!feat)
            return -1;
        pg->be->ops->z_scatter(pg->be, pg->z, feat, pg->cells, n, pg->s, pg->mn);
    }
    return 0;
}

/* Step 3: dZ at the fresh cells back-propagated into f's parameter gradients (+=), chunk by chunk from the
 * last, whose activations (and patches and cells) the forward left in place; every other chunk is forwarded
 * again first, with the same samples and seed as in forward_chunks, so the same activations and masks. */
static int backward_chunks(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count,
                           pgd_net_mode mode, uint64_t seed, pgd_err *err)
{
    int last = (count - 1) / pg->per * pg->per;
    for (int done = last; done >= 0; done -= pg->per) {
        int n = count - done < pg->per ? count - done : pg->per;
        if (done != last) {
            load_patches(pg, pixels + (size_t)done * pg->patch_bytes, cells + done, n);
            if (!pgd_net_forward_part(pg->f, pg->x, n, done, mode, seed, err))
                return -1;
        }
        pg->be->ops->z_gather(pg->be, pg->dfeat, pg->dz, pg->cells, n, pg->s, pg->mn);
        if (pgd_net_backward(pg->f, pg->dfeat, NULL, err) != 0)
            return -1;
    }
    return 0;
}

int pgd_patchgd_inner(pgd_patchgd *pg, const uint8_t *pixels, const uint32_t *cells, int count,
                      const int32_t *labels, int images, float *loss, pgd_err *err)
{
    pgd_backend *be = pg->be;
    int most = pg->cfg.inner_chunk > 0 ? pg->cfg.max_images * pg->mn : pg->cfg.max_patches;
    if (images < 1 || images > pg->cfg.max_images || count < 1 || count > most)
        return pgd_fail(err, PGD_EINVAL, "patchgd: an inner step takes 1..%d images and 1..%d patches, not %d and %d",
                        pg->cfg.max_images, most, images, count);
    for (int i = 0; i < images; i++)
        if (labels[i] < 0 || labels[i] >= pg->classes)
            return pgd_fail(err, PGD_EINVAL, "patchgd: label %d of image %d is outside 0..%d", labels[i], i,
                            pg->classes - 1);
    if (check_cells(pg, cells, count, images, 1, err) != 0)
        return -1;
    uint64_t seed = mix(mix(pg->cfg.seed, KEY_INNER), (uint64_t)pg->steps);
    pgd_net_mode mode = pg->cfg.freeze_bn ? PGD_NET_FROZEN_BN : PGD_NET_TRAIN;
    if (forward_chunks(pg, pixels, cells, count, mode, mix(seed, 1), err) != 0)
        return -1;
    const float *logits = pgd_net_forward(pg->g, pg->z, images, PGD_NET_TRAIN, mix(seed, 2), err);
    if (!logits)
        return -1;
    be->ops->upload(be, pg->labels, labels, (size_t)images * sizeof(int32_t));
    be->ops->xent_forward(be, pg->loss, pg->probs, logits, pg->labels, images, pg->classes);
    be->ops->xent_backward(be, pg->dlogits, pg->probs, pg->labels, images, pg->classes,
                           pgd_scaler_scale(pg->scaler) / (float)images);
    if (pgd_net_backward(pg->g, pg->dlogits, pg->dz, err) != 0 ||
        backward_chunks(pg, pixels, cells, count, mode, mix(seed, 1), err) != 0)
        return -1;
    be->ops->download(be, pg->loss_host, pg->loss, (size_t)images * sizeof(float));
    if (pgd_backend_error(be, err) != 0)
        return -1;
    double sum = 0;
    for (int i = 0; i < images; i++)
        sum += pg->loss_host[i];
    *loss = (float)(sum / images);
    pg->steps++;
    if (++pg->pending == pg->cfg.epsilon)
        return update(pg, err);
    return 0;
}

void pgd_patchgd_set_lr(pgd_patchgd *pg, float lr)
{
    pg->lr = lr;
}

void pgd_patchgd_set_scaler(pgd_patchgd *pg, pgd_scaler *sc)
{
    pg->scaler = sc;
}

int pgd_patchgd_flush(pgd_patchgd *pg, pgd_err *err)
{
    return pg->pending ? update(pg, err) : 0;
}

int pgd_patchgd_predict(pgd_patchgd *pg, int images, float *probs, pgd_err *err)
{
    pgd_backend *be = pg->be;
    if (images < 1 || images > pg->cfg.max_images)
        return pgd_fail(err, PGD_EINVAL, "patchgd: predict takes 1..%d images, not %d", pg->cfg.max_images, images);
    const float *logits = pgd_net_forward(pg->g, pg->z, images, PGD_NET_EVAL, 0, err);
    if (!logits)
        return -1;
    be->ops->zero(be, pg->labels, (size_t)images * sizeof(int32_t));
    be->ops->xent_forward(be, pg->loss, pg->probs, logits, pg->labels, images, pg->classes);
    be->ops->download(be, probs, pg->probs, (size_t)images * pg->classes * sizeof(float));
    return pgd_backend_error(be, err);
}

int pgd_patchgd_train_probs(pgd_patchgd *pg, int images, float *probs, pgd_err *err)
{
    if (images < 1 || images > pg->cfg.max_images)
        return pgd_fail(err, PGD_EINVAL, "patchgd: probs of 1..%d images, not %d", pg->cfg.max_images, images);
    pg->be->ops->download(pg->be, probs, pg->probs, (size_t)images * pg->classes * sizeof(float));
    return pgd_backend_error(pg->be, err);
}

int pgd_patchgd_reserve(pgd_patchgd *pg, int patches, pgd_err *err)
{
    if (patches <= pg->cfg.max_patches)
        return 0;
    int per = forward_size(&pg->cfg, patches);
    if (per <= pg->per) {
        pg->cfg.max_patches = patches;
        return 0;
    }
    pgd_backend *be = pg->be;
    size_t np = (size_t)per;
    void *old[] = {pg->u8, pg->x, pg->cells, pg->dfeat};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        be->ops->free(be, old[i]);
    pg->u8 = be->ops->alloc(be, np * pg->patch_bytes);
    pg->x = be->ops->alloc(be, np * pg->patch_bytes * sizeof(float));
    pg->cells = be->ops->alloc(be, np * sizeof(uint32_t));
    pg->dfeat = be->ops->alloc(be, np * pg->s * sizeof(float));
    if (pgd_backend_error(be, err) != 0 || pgd_net_plan(pg->f, per, err) != 0)
        return -1;
    pg->cfg.max_patches = patches;
    pg->per = per;
    return 0;
}

float *pgd_patchgd_z(pgd_patchgd *pg)
{
    return pg->z;
}

int64_t pgd_patchgd_steps(const pgd_patchgd *pg)
{
    return pg->steps;
}

void pgd_patchgd_get_counters(const pgd_patchgd *pg, int64_t *fills, int64_t *steps)
{
    *fills = pg->fills;
    *steps = pg->steps;
}

void pgd_patchgd_set_counters(pgd_patchgd *pg, int64_t fills, int64_t steps)
{
    pg->fills = fills;
    pg->steps = steps;
}
