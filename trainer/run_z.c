/* run_z.c: `pgd-trainer run` mirrors PatchGD's Z into a zstore segment and, for inference, into .npy / PNG files. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "half.h"
#include "log.h"
#include "trainer/run.h"
#include "zstore/zblock.h"

#define DEFAULT_INFER_SLOTS 256

static uint32_t block_s(const pgd_run *r)
{
    return (uint32_t)pgd_net_out_count(r->f);
}

static uint32_t default_slots(const pgd_run *r, int train)
{
    if (r->o.zstore_slots > 0)
        return (uint32_t)r->o.zstore_slots;
    if (train)
        return (uint32_t)r->o.batch_size;
    return r->manifest_images > 0 ? (uint32_t)r->manifest_images : DEFAULT_INFER_SLOTS;
}

/* Create the segment; when NAME exists, take it over if it is stale, else open it (a launcher made it) and
 * check that its blocks have Z's shape. */
static int open_segment(pgd_run *r, int train, pgd_err *err)
{
    const char *name = r->o.zstore;
    uint32_t m = (uint32_t)r->grid_m, n = (uint32_t)r->grid_n, s = block_s(r);
    pgd_zdtype dtype = (pgd_zdtype)(r->o.zstore_dtype + 1);
    pgd_err e = PGD_ERR_INIT;
    r->zs = pgd_zstore_create(name, m, n, s, default_slots(r, train), dtype, &e);
    if (!r->zs && e.code == PGD_EEXIST) {
        pgd_zstore_info info;
        int removed = 0;
        if (pgd_zstore_probe(name, &info, err) != 0 || (!info.alive && pgd_zstore_reclaim(name, &removed, err) != 0))
            return -1;
        if (removed) {
            pgd_info("zstore: removed the stale segment pgd.%s of pid %u", name, info.creator_pid);
            pgd_err_clear(&e);
            r->zs = pgd_zstore_create(name, m, n, s, default_slots(r, train), dtype, &e);
        } else {
            if (!(r->zs = pgd_zstore_open(name, 1, err)))
                return -1;
            if (info.m != m || info.n != n || info.s != s)
                return pgd_fail(err, PGD_EINVAL, "zstore: pgd.%s holds %ux%ux%u blocks, Z is %ux%ux%u (m x n x s)",
                                name, info.m, info.n, info.s, m, n, s);
            r->zs_slots = info.slots;
            pgd_info("zstore: writing Z into the existing segment pgd.%s (%u slots, %s, made by pid %u)", name,
                     info.slots, pgd_zstore_dtype_name(info.dtype), info.creator_pid);
            return 0;
        }
    }
    if (!r->zs) {
        if (err)
            *err = e;
        pgd_err_prefix(err, "zstore: ");
        return -1;
    }
    r->zs_owned = 1;
    r->zs_slots = default_slots(r, train);
    pgd_info("zstore: created pgd.%s: %ux%ux%u %s, %u slots", name, m, n, s, pgd_zstore_dtype_name(dtype),
             r->zs_slots);
    return 0;
}

static int make_dir(const char *key, const char *dir, pgd_err *err)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return pgd_fail_errno(err, PGD_EIO, "%s: mkdir %s", key, dir);
    return 0;
}

int pgd_run_z_open(pgd_run *r, uint32_t flags, pgd_err *err)
{
    int files = r->o.z_export || r->o.z_heatmap;
    if (!r->o.zstore && !files)
        return 0;
    if (!r->pg)
        return pgd_fail(err, PGD_EINVAL, "%s: method gd has no Z", r->o.zstore ? "zstore" : "z_export/z_heatmap");
    if (files && !(flags & PGD_WIRE_FLAG_INFER))
        return pgd_fail(err, PGD_EINVAL, "%s: Z files are written for an infer stream (pgd-sampler --mode infer) only",
                        r->o.z_export ? "z_export" : "z_heatmap");
    size_t elems = (size_t)block_s(r) * r->grid_m * r->grid_n;
    r->zt = malloc(elems * sizeof *r->zt);
    r->zb = files ? malloc(elems * sizeof *r->zb) : NULL;
    if (!r->zt || (files && !r->zb))
        return pgd_fail(err, PGD_ENOMEM, "trainer: out of memory for a Z-block of %zu floats", elems);
    if ((r->o.z_export && make_dir("z_export", r->o.z_export, err) != 0) ||
        (r->o.z_heatmap && make_dir("z_heatmap", r->o.z_heatmap, err) != 0))
        return -1;
    return r->o.zstore ? open_segment(r, (flags & (PGD_WIRE_FLAG_FILL | PGD_WIRE_FLAG_INNER)) != 0, err) : 0;
}

/* zt [s][cells] -> dst [cells][s] in the segment's dtype. */
static void transpose_into(void *dst, pgd_zdtype dtype, const float *zt, size_t s, size_t cells)
{
    for (size_t c = 0; c < cells; c++)
        for (size_t k = 0; k < s; k++) {
            float v = zt[k * cells + c];
            if (dtype == PGD_ZDTYPE_F32)
                ((float *)dst)[c * s + k] = v;
            else
                ((uint16_t *)dst)[c * s + k] = dtype == PGD_ZDTYPE_F16 ? pgd_f32_to_f16(v) : pgd_f32_to_bf16(v);
        }
}

/* One image's Z (in r->zt) into a slot, written in place between write_begin and write_end. A slot another
 * live process holds past the timeout is skipped with a warning; any other failure stops the run. */
static int mirror_slot(pgd_run *r, uint32_t slot, const char *id, int32_t label, pgd_err *err)
{
    pgd_zstore_info info;
    void *ptr;
    pgd_err e = PGD_ERR_INIT;
    if (pgd_zstore_get_info(r->zs, &info, err) != 0)
        return -1;
    if (pgd_zstore_write_begin(r->zs, slot, &ptr, &e) != 0) {
        if (e.code != PGD_EBUSY) {
            if (err)
                *err = e;
            return -1;
        }
        pgd_warn("zstore: pgd.%s slot %u is busy, image %s not mirrored: %s", info.name, slot, id, e.msg);
        return 0;
    }
    transpose_into(ptr, info.dtype, r->zt, info.s, (size_t)info.m * info.n);
    return pgd_zstore_write_end(r->zs, slot, id, label, err);
}

/* An image id as a file name: characters outside [A-Za-z0-9._-] and a leading dot become '_'. */
static int file_for(char *buf, size_t cap, const char *dir, const char *id, const char *ext, pgd_err *err)
{
    char safe[64];
    size_t i = 0;
    for (; id[i] && i + 1 < sizeof safe; i++) {
        char c = id[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 (c == '.' && i > 0);
        safe[i] = ok ? c : '_';
    }
    safe[i] = '\0';
    if (i == 0 || (size_t)snprintf(buf, cap, "%s/%s%s", dir, safe, ext) >= cap)
        return pgd_fail(err, PGD_EINVAL, "%s: no file name for image '%s'", dir, id);
    return 0;
}

static int export_files(pgd_run *r, const char *id, pgd_err *err)
{
    uint32_t m = (uint32_t)r->grid_m, n = (uint32_t)r->grid_n, s = block_s(r);
    char path[4200];
    transpose_into(r->zb, PGD_ZDTYPE_F32, r->zt, s, (size_t)m * n);
    if (r->o.z_export && (file_for(path, sizeof path, r->o.z_export, id, ".npy", err) != 0 ||
                          pgd_zstore_save_npy(path, r->zb, m, n, s, err) != 0))
        return -1;
    if (r->o.z_heatmap && (file_for(path, sizeof path, r->o.z_heatmap, id, ".png", err) != 0 ||
                           pgd_zstore_save_heatmap(path, r->zb, m, n, s, err) != 0))
        return -1;
    return 0;
}

int pgd_run_z_batch(pgd_run *r, pgd_err *err)
{
    if (!r->zt)
        return 0;
    size_t row = (size_t)block_s(r) * r->grid_m * r->grid_n;
    const float *z = pgd_patchgd_z(r->pg);
    for (int i = 0; i < r->n_slots; i++) {
        r->be->ops->download(r->be, r->zt, z + (size_t)i * row, row * sizeof(float));
        if (pgd_backend_error(r->be, err) != 0)
            return -1;
        if (r->zs) {
            uint32_t slot = r->train_batch ? (uint32_t)i % r->zs_slots : (uint32_t)(r->zs_images++ % r->zs_slots);
            if (mirror_slot(r, slot, r->slot_id[i], r->slot_label[i], err) != 0)
                return -1;
        }
        if (r->zb && export_files(r, r->slot_id[i], err) != 0)
            return -1;
    }
    return 0;
}

void pgd_run_z_close(pgd_run *r)
{
    if (r->zs) {
        pgd_zstore_info info;
        int have = pgd_zstore_get_info(r->zs, &info, NULL) == 0;
        pgd_zstore_close(&r->zs);
        if (r->zs_owned && !r->o.zstore_keep) {
            pgd_err e = PGD_ERR_INIT;
            if (pgd_zstore_remove(r->o.zstore, &e) != 0)
                pgd_warn("zstore: %s", e.msg);
        } else if (r->zs_owned && have) {
            pgd_info("zstore: pgd.%s kept (%u slots); pgd-zstore rm %s removes it", info.name, info.slots, info.name);
        }
    }
    free(r->zt);
    free(r->zb);
    r->zt = r->zb = NULL;
}
