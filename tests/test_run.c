/* test_run.c: pgd-trainer run's parts in one process: Z mirrored into a zstore segment and into files ([m][n][s],
 * slots, ids, labels, wrapping, clean-up), and save -> resume -> continue ending bit for bit where the uninterrupted
 * run ends (PatchGD, and GD with dropout). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cunit_util.h"
#include "half.h"
#include "npy.h"
#include "png.h"
#include "rng.h"
#include "trainer/run.h"
#include "zstore/zstore.h"

#define GM 2
#define GN 3
#define MN (GM * GN)
#define S 5
#define PATCH 8
#define PX (PATCH * PATCH * 3)
#define GD_SIZE 32
#define GD_PX (GD_SIZE * GD_SIZE * 3)

/* Options from words (the real parser, so every default is the documented one). */
static int run_init(pgd_run *r, const char *const *words)
{
    char *argv[48];
    int argc = 0;
    argv[argc++] = "run";
    static const char *const base[] = {"--connect", "ipc:///nonexistent", "--proj", "5", "--head-width", "4",
                                       "--classes", "3", "--batch-size", "2", "--threads", "1", "--seed", "3", NULL};
    for (int i = 0; base[i]; i++)
        argv[argc++] = (char *)base[i];
    for (int i = 0; words[i] && argc < 47; i++)
        argv[argc++] = (char *)words[i];
    argv[argc] = NULL;
    memset(r, 0, sizeof *r);
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc = pgd_cfg_parse_args(pgd_run_options(), &r->o, argc, argv, &a, &err);
    pgd_cfg_args_free(&a);
    if (rc != 0)
        fprintf(stderr, "options: %s\n", err.msg);
    return rc;
}

static void run_free(pgd_run *r)
{
    pgd_run_out_close(r);
    pgd_run_unbuild(r);
    pgd_cfg_free(pgd_run_options(), &r->o);
}

static pgd_wire_header header(uint32_t flags)
{
    pgd_wire_header h;
    memset(&h, 0, sizeof h);
    h.flags = flags;
    h.n_images = 2;
    h.patches_per_image = MN;
    h.patch_size = PATCH;
    h.channels = 3;
    h.grid_m = GM;
    h.grid_n = GN;
    return h;
}

static float pattern(int image, int k, int cell)
{
    return (float)(100 * image + 10 * k + cell) + 0.25f;
}

/* Z rows 0..n-1 hold images first.. with the pattern, as the trainer keeps them ([s][m*n] per row); the batch's
 * ids and labels as map_images leaves them. */
static void fake_batch(pgd_run *r, int first, int n, const char *const *ids)
{
    float row[S * MN];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < S; k++)
            for (int c = 0; c < MN; c++)
                row[k * MN + c] = pattern(first + i, k, c);
        r->be->ops->upload(r->be, pgd_patchgd_z(r->pg) + (size_t)i * S * MN, row, sizeof row);
        snprintf(r->slot_id[i], sizeof r->slot_id[i], "%s", ids[i]);
        r->slot_label[i] = first + i;
    }
    r->n_slots = n;
}

/* Slot `slot` of segment name holds image `image` in [m][n][s] order with its id and label. */
static void check_slot(pgd_zstore *z, uint32_t slot, int image, const char *id)
{
    float block[MN * S];
    pgd_zslot_info meta;
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_zstore_read(z, slot, block, MN * S, &meta, &err), 0);
    CU_ASSERT_STRING_EQUAL(meta.image_id, id);
    CU_ASSERT_EQUAL(meta.label, image);
    int bad = 0;
    for (int row = 0; row < GM; row++)
        for (int col = 0; col < GN; col++)
            for (int k = 0; k < S; k++)
                bad += block[(row * GN + col) * S + k] != pattern(image, k, row * GN + col);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_z_infer(void)
{
    const char *zdir = pgd_test_path("z"), *pdir = pgd_test_path("png");
    char name[64];
    snprintf(name, sizeof name, "test_run.%d.i", (int)getpid());
    const char *words[] = {"--zstore", name, "--zstore-slots", "3", "--z-export", zdir, "--z-heatmap", pdir, NULL};
    pgd_run r;
    CU_ASSERT_EQUAL_FATAL(run_init(&r, words), 0);
    pgd_wire_header h = header(PGD_WIRE_FLAG_INFER | PGD_WIRE_FLAG_BATCH_END);
    pgd_err err = PGD_ERR_INIT;
    CU_ASSERT_EQUAL_FATAL(pgd_run_build(&r, &h, &err), 0);
    CU_ASSERT_EQUAL(r.zs_owned, 1);
    CU_ASSERT_EQUAL(r.zs_slots, 3);
    const char *ids1[] = {"img0", "img1"}, *ids2[] = {"a/b", ".hidden"};
    fake_batch(&r, 0, 2, ids1);
    CU_ASSERT_EQUAL(pgd_run_z_batch(&r, &err), 0);
    fake_batch(&r, 2, 2, ids2);
    CU_ASSERT_EQUAL(pgd_run_z_batch(&r, &err), 0);

    /* one slot per image of the run, wrapping at 3: image 3 overwrote slot 0 */
    pgd_zstore *z = pgd_zstore_open(name, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    check_slot(z, 0, 3, ".hidden");
    check_slot(z, 1, 1, "img1");
    check_slot(z, 2, 2, "a/b");
    pgd_zstore_close(&z);

    /* the files: float32 [m, n, s] and a heatmap of 86-pixel cells; ids made into safe names */
    pgd_npy a;
    CU_ASSERT_EQUAL_FATAL(pgd_npy_read(pgd_test_path("z/a_b.npy"), &a, &err), 0);
    CU_ASSERT_EQUAL(a.ndim, 3);
    CU_ASSERT(a.shape[0] == GM && a.shape[1] == GN && a.shape[2] == S);
    CU_ASSERT_EQUAL(((float *)a.data)[(1 * GN + 2) * S + 4], pattern(2, 4, 1 * GN + 2));
    pgd_npy_free(&a);
    CU_ASSERT_EQUAL(access(pgd_test_path("z/_hidden.npy"), R_OK), 0);
    uint8_t *px = NULL;
    uint32_t w = 0, hh = 0;
    int ch = 0;
    CU_ASSERT_EQUAL(pgd_png_read(pgd_test_path("png/img0.png"), &px, &w, &hh, &ch, &err), 0);
    CU_ASSERT(w == GN * 86 && hh == GM * 86 && ch == 3);
    free(px);

    /* made by the trainer, not kept: removed at the end */
    run_free(&r);
    pgd_zstore_info info;
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_zstore_probe(name, &info, &e), -1);
    CU_ASSERT_EQUAL(e.code, PGD_ENOENT);
}

/* A segment a launcher made (alive: this process) is written into and left in place; another shape is refused. */
static void test_z_existing(void)
{
    char name[64];
    snprintf(name, sizeof name, "test_run.%d.e", (int)getpid());
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore *made = pgd_zstore_create(name, GM, GN, S, 4, PGD_ZDTYPE_F16, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(made);
    pgd_zstore_close(&made);
    const char *words[] = {"--zstore", name, NULL};
    pgd_run r;
    CU_ASSERT_EQUAL_FATAL(run_init(&r, words), 0);
    pgd_wire_header h = header(PGD_WIRE_FLAG_FILL);
    CU_ASSERT_EQUAL_FATAL(pgd_run_build(&r, &h, &err), 0);
    CU_ASSERT_EQUAL(r.zs_owned, 0);
    const char *ids[] = {"x", "y"};
    fake_batch(&r, 7, 2, ids);
    r.train_batch = 1; /* train: slot = position in the batch */
    CU_ASSERT_EQUAL(pgd_run_z_batch(&r, &err), 0);
    run_free(&r);
    pgd_zstore *z = pgd_zstore_open(name, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    float block[MN * S];
    pgd_zslot_info meta;
    CU_ASSERT_EQUAL(pgd_zstore_read(z, 1, block, MN * S, &meta, &err), 0);
    CU_ASSERT_STRING_EQUAL(meta.image_id, "y");
    CU_ASSERT_EQUAL(block[(0 * GN + 1) * S + 2], pgd_f16_to_f32(pgd_f32_to_f16(pattern(8, 2, 1)))); /* stored as f16 */
    pgd_zstore_close(&z);
    CU_ASSERT_EQUAL(pgd_zstore_remove(name, &err), 0);

    /* another s */
    made = pgd_zstore_create(name, GM, GN, S + 2, 4, PGD_ZDTYPE_F32, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(made);
    pgd_zstore_close(&made);
    CU_ASSERT_EQUAL_FATAL(run_init(&r, words), 0);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_run_build(&r, &h, &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "holds 2x3x7 blocks, Z is 2x3x5"));
    run_free(&r);
    CU_ASSERT_EQUAL(pgd_zstore_remove(name, &err), 0);
}

static void test_z_refused(void)
{
    static const struct {
        const char *key, *value;
        uint32_t flags;
        const char *expect;
    } cases[] = {
        {"--z-export", "zx", PGD_WIRE_FLAG_FILL, "z_export: Z files are written for an infer stream"},
        {"--z-heatmap", "zx", PGD_WIRE_FLAG_EVAL, "z_heatmap: Z files are written for an infer stream"},
        {"--resume", "nowhere", PGD_WIRE_FLAG_INFER, "resume: the stream is not a train stream"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *words[] = {cases[i].key, cases[i].value, NULL};
        pgd_run r;
        CU_ASSERT_EQUAL_FATAL(run_init(&r, words), 0);
        pgd_wire_header h = header(cases[i].flags);
        pgd_err e = PGD_ERR_INIT;
        CU_ASSERT_EQUAL(pgd_run_build(&r, &h, &e), -1);
        CU_ASSERT_EQUAL(e.code, PGD_EINVAL);
        if (!strstr(e.msg, cases[i].expect))
            fprintf(stderr, "\n  case %zu: %s\n", i, e.msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, cases[i].expect));
        run_free(&r);
    }
}

/* The learning rate of the next batch, as pgd-trainer's schedule gives it (run.c, current_lr). */
static float scheduled_lr(const pgd_run *r)
{
    pgd_opt_cfg c = pgd_opt_defaults();
    c.lr = (float)r->o.lr;
    c.warmup_steps = r->o.warmup_epochs * r->batches_per_epoch;
    c.total_steps = r->o.epochs * r->batches_per_epoch;
    return pgd_opt_lr(&c, r->tick + 1);
}

/* One image batch as the trainer runs it: the fill sweep, 2 inner steps of 2 cells per image, the update. */
static int train_batch(pgd_run *r, int b, pgd_err *err)
{
    uint8_t px[2 * MN * PX];
    uint32_t cells[2 * MN];
    int32_t labels[2] = {b % 3, (b + 1) % 3};
    pgd_rng rng;
    pgd_rng_seed(&rng, 100 + (uint64_t)b);
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(pgd_rng_u64(&rng) >> 56);
    for (uint32_t i = 0; i < 2 * MN; i++)
        cells[i] = i;
    if (pgd_patchgd_fill(r->pg, px, cells, 2 * MN, err) != 0)
        return -1;
    for (uint32_t step = 0; step < 2; step++) {
        uint32_t fresh[4] = {step * 2, step * 2 + 1, MN + 5 - step * 2, MN + 4 - step * 2};
        float loss;
        pgd_patchgd_set_lr(r->pg, scheduled_lr(r));
        if (pgd_patchgd_inner(r->pg, px, fresh, 4, labels, 2, &loss, err) != 0)
            return -1;
    }
    if (pgd_patchgd_flush(r->pg, err) != 0)
        return -1;
    r->tick++;
    return 0;
}

static void download(pgd_run *r, float *dst, const float *src, size_t n)
{
    r->be->ops->download(r->be, dst, src, n * sizeof(float));
}

/* Everything a continued run depends on, as bytes: parameters, BN statistics and counters, moments, steps, and
 * the dropout-seed counters (PatchGD's or GD's). */
static size_t snapshot(pgd_run *r, unsigned char **out)
{
    pgd_net *nets[2] = {r->f, r->g};
    pgd_optim *opts[2] = {r->opt_f, r->opt_g};
    int n = r->g ? 2 : 1;
    size_t total = 0, cap = 0;
    for (int k = 0; k < n; k++)
        cap += (3 * pgd_net_param_count(nets[k]) + pgd_net_buffer_count(nets[k])) * sizeof(float) +
               8 * (size_t)pgd_net_tensor_count(nets[k]) + 8;
    unsigned char *b = malloc(cap + 64);
    for (int k = 0; k < n; k++) {
        size_t np = pgd_net_param_count(nets[k]), nb = pgd_net_buffer_count(nets[k]);
        download(r, (float *)(b + total), pgd_net_params(nets[k]), np), total += np * sizeof(float);
        download(r, (float *)(b + total), pgd_net_buffers(nets[k]), nb), total += nb * sizeof(float);
        download(r, (float *)(b + total), opts[k]->m, np), total += np * sizeof(float);
        download(r, (float *)(b + total), opts[k]->v, np), total += np * sizeof(float);
        for (int i = 0; i < pgd_net_tensor_count(nets[k]); i++)
            if (pgd_net_tensor(nets[k], i)->kind == PGD_TENSOR_COUNTER) {
                memcpy(b + total, &pgd_net_counters(nets[k])[pgd_net_tensor(nets[k], i)->offset], 8);
                total += 8;
            }
        memcpy(b + total, &opts[k]->step, 8), total += 8;
    }
    int64_t c[3] = {r->tick};
    if (r->pg)
        pgd_patchgd_get_counters(r->pg, &c[1], &c[2]);
    if (r->gd)
        pgd_gd_get_counters(r->gd, &c[1]);
    memcpy(b + total, c, sizeof c), total += sizeof c;
    *out = b;
    return total;
}

/* Whether runs a and b hold the same bytes (snapshot). */
static int same_state(pgd_run *a, pgd_run *b)
{
    unsigned char *sa, *sb;
    size_t na = snapshot(a, &sa), nb = snapshot(b, &sb);
    int same = na == nb && memcmp(sa, sb, na) == 0;
    free(sa);
    free(sb);
    return same;
}

static void test_resume_bit_exact(void)
{
    const char *dir = pgd_test_path("resume");
    const char *common[] = {"--dropout", "0.3", "--lr", "0.01", "--epochs", "2", "--warmup-epochs", "1",
                            "--run-dir", dir, NULL};
    pgd_run a, b;
    pgd_err err = PGD_ERR_INIT;
    pgd_wire_header h = header(PGD_WIRE_FLAG_FILL);
    CU_ASSERT_EQUAL_FATAL(run_init(&a, common), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_out_open(&a, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_build(&a, &h, &err), 0);
    a.batches_per_epoch = 2;
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(train_batch(&a, i, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_checkpoint(&a, 1, &err), 0);
    for (int i = 2; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(train_batch(&a, i, &err), 0);

    const char *resumed[] = {"--dropout", "0.3", "--lr", "0.01", "--epochs", "2", "--warmup-epochs", "1",
                             "--resume", dir, NULL};
    CU_ASSERT_EQUAL_FATAL(run_init(&b, resumed), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_resume_check(&b, &err), 0);
    b.batches_per_epoch = 2;
    CU_ASSERT_EQUAL_FATAL(pgd_run_build(&b, &h, &err), 0);
    CU_ASSERT_EQUAL(b.resume_check, 1);
    CU_ASSERT_EQUAL(b.resume_epoch, 1);
    CU_ASSERT_EQUAL(b.resume_batch, 0);
    CU_ASSERT_EQUAL(b.tick, 2);
    CU_ASSERT_EQUAL(b.opt_f->step, 2);
    for (int i = 2; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(train_batch(&b, i, &err), 0);
    CU_ASSERT(same_state(&a, &b));
    run_free(&b);

    /* a different optimizer cannot take the saved moments */
    const char *sgd[] = {"--optimizer", "sgd", "--resume", dir, NULL};
    CU_ASSERT_EQUAL_FATAL(run_init(&b, sgd), 0);
    pgd_err e = PGD_ERR_INIT;
    CU_ASSERT_EQUAL(pgd_run_build(&b, &h, &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "state.safetensors"));
    run_free(&b);
    run_free(&a);
}

/* One GD step as the trainer runs it, on 2 seeded random images. */
static int gd_batch(pgd_run *r, int b, pgd_err *err)
{
    uint8_t px[2 * GD_PX];
    int32_t labels[2] = {b % 3, (b + 1) % 3};
    pgd_rng rng;
    pgd_rng_seed(&rng, 200 + (uint64_t)b);
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(pgd_rng_u64(&rng) >> 56);
    float loss;
    if (pgd_gd_step(r->gd, px, labels, 2, scheduled_lr(r), &loss, NULL, err) != 0)
        return -1;
    r->tick++;
    return 0;
}

/* GD with dropout (mobilenet_v2's classifier, p = 0.2): 2 steps, save, 2 more vs. resume and the same 2, byte for
 * byte; the same resume with the step counter put back to 0 (dropout masks of steps 0 and 1 again) differs, so
 * the counter is what carries the masks across. */
static void test_resume_gd_dropout(void)
{
    const char *dir = pgd_test_path("resume_gd");
    const char *common[] = {"--method", "gd", "--arch", "mobilenet_v2", "--lr", "0.01", "--epochs", "2",
                            "--warmup-epochs", "1", "--run-dir", dir, NULL};
    const char *resumed[] = {"--method", "gd", "--arch", "mobilenet_v2", "--lr", "0.01", "--epochs", "2",
                             "--warmup-epochs", "1", "--resume", dir, NULL};
    pgd_run a, b;
    pgd_err err = PGD_ERR_INIT;
    pgd_wire_header h = header(PGD_WIRE_FLAG_INNER | PGD_WIRE_FLAG_BATCH_END);
    h.patches_per_image = 1;
    h.patch_size = GD_SIZE;
    h.grid_m = h.grid_n = 1;
    CU_ASSERT_EQUAL_FATAL(run_init(&a, common), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_out_open(&a, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_build(&a, &h, &err), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a.gd);
    a.batches_per_epoch = 2;
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(gd_batch(&a, i, &err), 0);
    CU_ASSERT_EQUAL_FATAL(pgd_run_checkpoint(&a, 1, &err), 0);
    for (int i = 2; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(gd_batch(&a, i, &err), 0);

    for (int reset = 0; reset < 2; reset++) {
        CU_ASSERT_EQUAL_FATAL(run_init(&b, resumed), 0);
        CU_ASSERT_EQUAL_FATAL(pgd_run_resume_check(&b, &err), 0);
        b.batches_per_epoch = 2;
        CU_ASSERT_EQUAL_FATAL(pgd_run_build(&b, &h, &err), 0);
        int64_t steps = -1;
        pgd_gd_get_counters(b.gd, &steps);
        CU_ASSERT_EQUAL(steps, 2);
        CU_ASSERT_EQUAL(b.tick, 2);
        CU_ASSERT_EQUAL(b.opt_f->step, 2);
        if (reset)
            pgd_gd_set_counters(b.gd, 0);
        for (int i = 2; i < 4; i++)
            CU_ASSERT_EQUAL_FATAL(gd_batch(&b, i, &err), 0);
        if (reset) /* the counter put right again, so that only the masks differ */
            pgd_gd_set_counters(b.gd, 4);
        CU_ASSERT_EQUAL(same_state(&a, &b), !reset);
        run_free(&b);
    }
    run_free(&a);
}

static const pgd_test_case cases[] = {
    {"z_infer", test_z_infer},
    {"z_existing", test_z_existing},
    {"z_refused", test_z_refused},
    {"resume_bit_exact", test_resume_bit_exact},
    {"resume_gd_dropout", test_resume_gd_dropout},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    int rc = pgd_test_main("run", cases, argc, argv);
    /* a case that stopped half-way leaves no segment behind */
    static const char *const tags[] = {"i", "e"};
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "test_run.%d.%s", (int)getpid(), tags[i]);
        pgd_zstore_remove(name, NULL);
    }
    return rc;
}
