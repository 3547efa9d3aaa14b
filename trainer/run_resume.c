/* run_resume.c: `pgd-trainer run --resume RUN_DIR`: the saved model, optimizer moments and counters, loaded to continue. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "trainer/ckpt.h"
#include "trainer/run.h"
#include "trainer/safetensors.h"

static int resume_path(char *buf, size_t cap, const pgd_run *r, const char *name, pgd_err *err)
{
    if ((size_t)snprintf(buf, cap, "%s/%s", r->o.resume, name) >= cap)
        return pgd_fail(err, PGD_EINVAL, "resume: '%s' is too long", r->o.resume);
    return 0;
}

int pgd_run_resume_check(const pgd_run *r, pgd_err *err)
{
    static const char *const files[2] = {"model.safetensors", "state.safetensors"};
    char path[4200];
    if (!r->o.resume)
        return 0;
    if (r->o.weights)
        return pgd_fail(err, PGD_EINVAL, "resume: give resume or weights, not both (resume loads %s/%s)", r->o.resume,
                        files[0]);
    for (int i = 0; i < 2; i++) {
        if (resume_path(path, sizeof path, r, files[i], err) != 0)
            return -1;
        if (access(path, R_OK) != 0)
            return pgd_fail_errno(err, PGD_EINVAL, "resume: %s", path);
    }
    return 0;
}

/* A counter saved in the model's metadata by pgd_run_checkpoint. */
static int meta_counter(const pgd_st_file *f, const char *path, const char *key, int64_t *out, pgd_err *err)
{
    const char *v = pgd_st_meta(f, key);
    if (!v)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s' is missing (resume needs a model saved by pgd-trainer run)",
                        path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < 0)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s': '%.40s' is not a count", path, key, v);
    *out = (int64_t)x;
    return 0;
}

typedef struct resume_counters {
    int64_t step, tick, fills, inner_steps, gd_steps;
    int has_scale;              /* an fp16 run saved its loss scaler's state: */
    pgd_scaler_state scale;
} resume_counters;

/* The loss scaler's state, which only fp16 runs save (has_scale stays 0 without it). */
static int read_scale(const pgd_st_file *f, const char *path, resume_counters *c, pgd_err *err)
{
    const char *v = pgd_st_meta(f, PGD_RUN_META_SCALE);
    if (!v)
        return 0;
    char *end;
    c->scale.scale = strtof(v, &end);
    if (end == v || *end)
        return pgd_fail(err, PGD_EFORMAT, "%s: metadata '%s': '%.40s' is not a number", path, PGD_RUN_META_SCALE, v);
    c->has_scale = 1;
    return meta_counter(f, path, PGD_RUN_META_SCALE_GOOD, &c->scale.good, err) ||
                   meta_counter(f, path, PGD_RUN_META_SCALE_SKIPPED, &c->scale.skipped, err) ||
                   meta_counter(f, path, PGD_RUN_META_SCALE_STREAK, &c->scale.streak, err)
               ? -1
               : 0;
}

/* GD's step counter: a model saved before the key existed has none; GD makes one update per step, so its
 * count is then the optimizer step. */
static int read_gd_steps(const pgd_st_file *f, const char *path, resume_counters *c, pgd_err *err)
{
    if (pgd_st_meta(f, PGD_RUN_META_GD_STEPS))
        return meta_counter(f, path, PGD_RUN_META_GD_STEPS, &c->gd_steps, err);
    c->gd_steps = c->step;
    return 0;
}

static int read_counters(const char *path, resume_counters *c, pgd_err *err)
{
    pgd_st_file *f = pgd_st_open(path, PGD_ST_MMAP, err);
    if (!f)
        return -1;
    int rc = meta_counter(f, path, PGD_RUN_META_STEP, &c->step, err) ||
                     meta_counter(f, path, PGD_RUN_META_TICK, &c->tick, err) ||
                     meta_counter(f, path, PGD_RUN_META_FILLS, &c->fills, err) ||
                     meta_counter(f, path, PGD_RUN_META_INNER_STEPS, &c->inner_steps, err) ||
                     read_gd_steps(f, path, c, err) || read_scale(f, path, c, err)
                 ? -1
                 : 0;
    pgd_st_close(&f);
    return rc;
}

/* The options may change a hyper-parameter on resume (the options win); say so, since the run then differs
 * from an uninterrupted one. */
static void compare_hyper(const pgd_opt_cfg *saved, const pgd_opt_cfg *now)
{
    const struct {
        const char *name;
        float a, b;
    } h[] = {{"lr", saved->lr, now->lr}, {"weight_decay", saved->weight_decay, now->weight_decay},
             {"momentum", saved->momentum, now->momentum}};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        if (h[i].a != h[i].b)
            pgd_warn("resume: %s was %g, the options give %g (used from now on)", h[i].name, (double)h[i].a,
                     (double)h[i].b);
}

int pgd_run_resume_load(pgd_run *r, pgd_err *err)
{
    static const char *const kinds[3] = {"adam", "adamw", "sgd"};
    char model[4200], state[4200];
    if (!r->o.resume)
        return 0;
    if (!r->opt_f)
        return pgd_fail(err, PGD_EINVAL, "resume: the stream is not a train stream (start pgd-sampler with --mode train)");
    if (resume_path(model, sizeof model, r, "model.safetensors", err) != 0 ||
        resume_path(state, sizeof state, r, "state.safetensors", err) != 0)
        return -1;
    pgd_ckpt_net nets[2] = {{.net = r->f, .prefix = "", .m = r->opt_f->m, .v = r->opt_f->v},
                            {.net = r->g, .prefix = ""}};
    if (r->opt_g)
        nets[1].m = r->opt_g->m, nets[1].v = r->opt_g->v;
    int n = r->g ? 2 : 1;
    resume_counters c = {0};
    pgd_ckpt_state st;
    if (read_counters(model, &c, err) != 0 || pgd_ckpt_load(model, nets, n, NULL, err) != 0 ||
        pgd_ckpt_state_load(state, nets, n, &st, err) != 0)
        return -1;
    if (st.opt.kind != r->opt_f->cfg.kind)
        return pgd_fail(err, PGD_EINVAL, "resume: %s was saved with optimizer %s, the options give %s", state,
                        kinds[st.opt.kind], kinds[r->opt_f->cfg.kind]);
    if (st.step != c.step)
        return pgd_fail(err, PGD_EFORMAT,
                        "resume: %s is at step %" PRId64 " and %s at step %" PRId64 " (a save was cut off between them)",
                        model, c.step, state, st.step);
    if (st.inner != 0 || st.batch < 0 || st.epoch < 0)
        return pgd_fail(err, PGD_EFORMAT, "resume: %s resumes at epoch %" PRId64 " batch %" PRId64 " inner step %" PRId64
                        " (pgd-trainer saves at epoch ends only)", state, st.epoch, st.batch, st.inner);
    if (st.seed != (uint64_t)r->o.seed)
        pgd_warn("resume: the run was seeded %" PRIu64 ", the options give %lld (dropout masks follow the new seed)",
                 st.seed, (long long)r->o.seed);
    compare_hyper(&st.opt, &r->opt_f->cfg);
    r->opt_f->step = st.step;
    if (r->opt_g)
        r->opt_g->step = st.step;
    r->tick = c.tick;
    if (r->pg)
        pgd_patchgd_set_counters(r->pg, c.fills, c.inner_steps);
    if (r->gd)
        pgd_gd_set_counters(r->gd, c.gd_steps);
    if (r->scaler && c.has_scale && pgd_scaler_set(r->scaler, &c.scale, err) != 0)
        return -1;
    if (r->scaler && !c.has_scale)
        pgd_warn("resume: %s has no loss scale (saved by a run not in fp16); scaling starts at %g", model,
                 (double)pgd_scaler_scale(r->scaler));
    r->resume_check = 1;
    r->resume_epoch = st.epoch;
    r->resume_batch = st.batch;
    pgd_info("resume: %s at epoch %" PRId64 " batch %" PRId64 ", %" PRId64 " updates, %" PRId64 " batches trained",
             r->o.resume, st.epoch, st.batch, st.step, c.tick);
    return 0;
}
