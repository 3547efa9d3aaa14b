/* main.c: pgd-zstore, the command-line tool to create, list, dump, fill and remove zstore segments. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "half.h"
#include "log.h"
#include "npy.h"
#include "zstore/zblock.h"
#include "zstore/zstore.h"

/* The options of every command. A command accepts only the keys its cmds[] entry names, so an option
 * meant for another command is a usage error ("--force: unknown option"). */
typedef struct zcli {
    int64_t m, n, s, slots, owner_pid, label;
    int dtype, force;
    char *out, *id;
} zcli;

static const pgd_cfg_opt opts[] = {
    {"m", PGD_CFG_INT, offsetof(zcli, m), NULL, 1, UINT32_MAX, NULL, "rows of cells in a block", PGD_CFG_REQUIRED},
    {"n", PGD_CFG_INT, offsetof(zcli, n), NULL, 1, UINT32_MAX, NULL, "columns of cells in a block",
     PGD_CFG_REQUIRED},
    {"s", PGD_CFG_INT, offsetof(zcli, s), NULL, 1, UINT32_MAX, NULL, "values per cell", PGD_CFG_REQUIRED},
    {"slots", PGD_CFG_INT, offsetof(zcli, slots), NULL, 1, UINT32_MAX, NULL, "blocks in the segment",
     PGD_CFG_REQUIRED},
    {"dtype", PGD_CFG_ENUM, offsetof(zcli, dtype), "f32", 0, 0, "f32|f16|bf16", "stored value type", 0},
    {"owner_pid", PGD_CFG_INT, offsetof(zcli, owner_pid), "0", 0, INT32_MAX, NULL,
     "the segment is live while this process runs (0: the parent of this command)", 0},
    {"out", PGD_CFG_STRING, offsetof(zcli, out), NULL, 0, 0, NULL,
     "FILE.npy (float32 [m,n,s]) or FILE.png (heatmap of per-cell L2 norms)", PGD_CFG_REQUIRED},
    {"id", PGD_CFG_STRING, offsetof(zcli, id), NULL, 0, 0, NULL, "image id, at most 63 bytes (default empty)", 0},
    {"label", PGD_CFG_INT, offsetof(zcli, label), "0", INT32_MIN, INT32_MAX, NULL, "label kept with the block", 0},
    {"force", PGD_CFG_BOOL, offsetof(zcli, force), "false", 0, 0, NULL, "remove a live or unreadable one too", 0},
    {NULL},
};
#define NOPTS (sizeof opts / sizeof *opts)

static const pgd_zdtype dtypes[] = {PGD_ZDTYPE_F32, PGD_ZDTYPE_F16, PGD_ZDTYPE_BF16}; /* by "dtype" choice */

typedef struct zcmd {
    const char *name;
    const char *usage; /* its usage line, after "pgd-zstore " */
    const char *about; /* what it does */
    const char *keys;  /* the options it takes, blank-separated */
    int min_pos, max_pos; /* how many words follow the command */
    int (*fn)(const zcli *c, const char *const *pos, int npos);
} zcmd;

static const zcmd *find_cmd(const char *name);

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Log "cmd: message" and the command's usage line (or the general one). Returns PGD_EXIT_USAGE. */
static int usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const zcmd *c = cmd ? find_cmd(cmd) : NULL;
    pgd_error("%s%s%s", c ? c->name : "", c ? ": " : "", msg);
    if (c)
        fprintf(stderr, "usage: pgd-zstore %s\n       (pgd-zstore %s --help lists its options)\n", c->usage,
                c->name);
    else
        fputs("usage: pgd-zstore COMMAND [ARGS] [options] (pgd-zstore --help lists the commands)\n", stderr);
    return PGD_EXIT_USAGE;
}

static int fail(const pgd_err *err)
{
    pgd_log_err(err);
    return PGD_EXIT_FAIL;
}

static const char *fmt_time(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, cap, "%lld", (long long)t);
    return buf;
}

static int cmd_create(const zcli *c, const char *const *pos, int npos)
{
    pgd_err err = PGD_ERR_INIT;
    if (pgd_zstore_name_check(pos[0], &err) != 0)
        return usage_error("create", "%s", err.msg);
    int owner = c->owner_pid ? (int)c->owner_pid : (int)getppid();
    pgd_zstore *z = pgd_zstore_create_owned(pos[0], (uint32_t)c->m, (uint32_t)c->n, (uint32_t)c->s,
                                            (uint32_t)c->slots, dtypes[c->dtype], owner, &err);
    if (!z)
        return fail(&err);
    pgd_zstore_info info;
    pgd_zstore_get_info(z, &info, NULL);
    printf("created pgd.%s: %ux%ux%u %s, %u slots, %.2f MiB, owner pid %u\n", info.name, info.m, info.n, info.s,
           pgd_zstore_dtype_name(info.dtype), info.slots, (double)info.total_size / 1048576.0, info.creator_pid);
    pgd_zstore_close(&z);
    return PGD_EXIT_OK;
}

static int ls_all(void)
{
    pgd_zstore_entry *v;
    size_t n;
    pgd_err err = PGD_ERR_INIT;
    if (pgd_zstore_list(&v, &n, &err) != 0)
        return fail(&err);
    printf("%-24s %-16s %-5s %7s %11s %8s  %s\n", "NAME", "SHAPE", "DTYPE", "SLOTS", "SIZE", "PID", "STATUS");
    for (size_t i = 0; i < n; i++) {
        const pgd_zstore_info *f = &v[i].info;
        if (v[i].code != PGD_OK) {
            printf("%-24s %-16s %-5s %7s %11s %8s  unreadable: %s\n", f->name, "-", "-", "-", "-", "-", v[i].error);
            continue;
        }
        char shape[48];
        snprintf(shape, sizeof shape, "%ux%ux%u", f->m, f->n, f->s);
        printf("%-24s %-16s %-5s %7u %7.2f MiB %8u  %s\n", f->name, shape, pgd_zstore_dtype_name(f->dtype), f->slots,
               (double)f->total_size / 1048576.0, f->creator_pid, f->alive ? "alive" : "stale");
    }
    if (n == 0)
        printf("(no pgd segments in /dev/shm)\n");
    free(v);
    return PGD_EXIT_OK;
}

/* The CRC column of ls NAME: read the slot to check its block. */
static const char *slot_check(pgd_zstore *z, uint32_t slot, void *buf, size_t cap)
{
    pgd_err err = PGD_ERR_INIT;
    if (pgd_zstore_read_raw(z, slot, buf, cap, NULL, &err) == 0)
        return "ok";
    return err.code == PGD_ECORRUPT ? "BAD" : err.code == PGD_EBUSY ? "busy" : "?";
}

static int ls_one(const char *name)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore_info f;
    pgd_zstore *z = pgd_zstore_open(name, 0, &err);
    if (!z || pgd_zstore_get_info(z, &f, &err) != 0) {
        pgd_zstore_close(&z);
        return fail(&err);
    }
    void *buf = malloc((size_t)f.block_bytes);
    if (!buf) {
        pgd_zstore_close(&z);
        pgd_fail(&err, PGD_ENOMEM, "ls: out of memory for a %llu-byte block", (unsigned long long)f.block_bytes);
        return fail(&err);
    }
    char when[40];
    printf("segment pgd.%s (/dev/shm/pgd.%s)\n", f.name, f.name);
    printf("  shape %ux%ux%u %s, %u slots, block %llu bytes, stride %llu, size %.2f MiB\n", f.m, f.n, f.s,
           pgd_zstore_dtype_name(f.dtype), f.slots, (unsigned long long)f.block_bytes,
           (unsigned long long)f.slot_stride, (double)f.total_size / 1048576.0);
    printf("  creator pid %u (%s), created %s\n", f.creator_pid, f.alive ? "alive" : "stale",
           fmt_time(f.created_time, when, sizeof when));
    printf("%6s  %-9s %10s %8s %-5s %8s  %s\n", "SLOT", "STATE", "GEN", "LABEL", "CRC", "PID", "IMAGE");
    for (uint32_t i = 0; i < f.slots; i++) {
        pgd_zslot_info s;
        if (pgd_zstore_get_slot(z, i, &s, &err) != 0) {
            printf("%6u  %s\n", i, err.msg);
            pgd_err_clear(&err);
            continue;
        }
        if (s.state == PGD_ZSLOT_EMPTY) {
            printf("%6u  %-9s %10s %8s %-5s %8s  -\n", i, "empty", "-", "-", "-", "-");
            continue;
        }
        if (s.state != PGD_ZSLOT_READY) {
            printf("%6u  %-9s %10s %8s %-5s %8u  -\n", i, pgd_zstore_state_name(s.state), "-", "-",
                   s.state == PGD_ZSLOT_WRITING ? "-" : "BAD", s.writer_pid);
            continue;
        }
        printf("%6u  %-9s %10llu %8d %-5s %8u  %s\n", i, pgd_zstore_state_name(s.state),
               (unsigned long long)s.generation, s.label, slot_check(z, i, buf, (size_t)f.block_bytes), s.writer_pid,
               s.image_id[0] ? s.image_id : "\"\"");
    }
    free(buf);
    pgd_zstore_close(&z);
    return PGD_EXIT_OK;
}

static int cmd_ls(const zcli *c, const char *const *pos, int npos)
{
    return npos ? ls_one(pos[0]) : ls_all();
}

static const char *file_ext(const char *path)
{
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    return dot && (!slash || dot > slash) ? dot : "";
}

/* Open NAME read-only (or writable) and check SLOT against its slot count. 0, or an exit code. */
static int open_slot(const char *cmd, const char *name, const char *slot_text, int writable, pgd_zstore **z,
                     pgd_zstore_info *f, uint32_t *slot)
{
    pgd_err err = PGD_ERR_INIT;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(slot_text, &end, 10);
    if (slot_text[0] < '0' || slot_text[0] > '9' || *end || errno)
        return usage_error(cmd, "SLOT: '%s' is not a slot number", slot_text);
    if (!(*z = pgd_zstore_open(name, writable, &err)) || pgd_zstore_get_info(*z, f, &err) != 0) {
        pgd_zstore_close(z);
        return fail(&err);
    }
    if (v >= f->slots) {
        pgd_zstore_close(z);
        return usage_error(cmd, "slot %llu out of range: pgd.%s has %u slots (0..%u)", v, name, f->slots,
                           f->slots - 1);
    }
    *slot = (uint32_t)v;
    return 0;
}

static int cmd_dump(const zcli *c, const char *const *pos, int npos)
{
    const char *ext = file_ext(c->out);
    int as_png = strcmp(ext, ".png") == 0;
    if (!as_png && strcmp(ext, ".npy") != 0)
        return usage_error("dump", "--out %s: the name must end in .npy or .png", c->out);
    pgd_zstore *z;
    pgd_zstore_info f;
    uint32_t slot;
    int rc = open_slot("dump", pos[0], pos[1], 0, &z, &f, &slot);
    if (rc)
        return rc;
    pgd_err err = PGD_ERR_INIT;
    size_t elems = pgd_zstore_block_elems(z);
    float *block = malloc(elems * sizeof *block);
    pgd_zslot_info meta;
    if (!block)
        pgd_fail(&err, PGD_ENOMEM, "dump: out of memory for a block of %zu floats", elems);
    if (block && pgd_zstore_read(z, slot, block, elems, &meta, &err) == 0) {
        if (as_png)
            pgd_zstore_save_heatmap(c->out, block, f.m, f.n, f.s, &err);
        else
            pgd_zstore_save_npy(c->out, block, f.m, f.n, f.s, &err);
    }
    free(block);
    pgd_zstore_close(&z);
    if (pgd_err_is_set(&err))
        return fail(&err);
    printf("dumped pgd.%s slot %u (image '%s', label %d, generation %llu) to %s\n", f.name, slot, meta.image_id,
           meta.label, (unsigned long long)meta.generation, c->out);
    return PGD_EXIT_OK;
}

/* The .npy as float32 values, checked against the segment's block shape. */
static float *npy_block(const char *path, const pgd_zstore_info *f, pgd_err *err)
{
    pgd_npy a;
    if (pgd_npy_read(path, &a, err) != 0)
        return NULL;
    float *v = NULL;
    if (a.ndim != 3 || a.shape[0] != f->m || a.shape[1] != f->n || a.shape[2] != f->s) {
        char shape[96] = "";
        for (int i = 0, k = 0; i < a.ndim; i++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%zu", i ? ", " : "", a.shape[i]);
        pgd_fail(err, PGD_EFORMAT, "put: %s has shape (%s), pgd.%s holds blocks of (%u, %u, %u)", path, shape,
                 f->name, f->m, f->n, f->s);
    } else if (a.dtype == PGD_NPY_U8) {
        pgd_fail(err, PGD_EFORMAT, "put: %s is uint8; a block must be float32 or float16", path);
    } else if (a.dtype == PGD_NPY_F32) {
        v = a.data;
        a.data = NULL;
    } else if (!(v = malloc(a.count * sizeof *v))) {
        pgd_fail(err, PGD_ENOMEM, "put: out of memory");
    } else {
        pgd_f16_to_f32_n(v, a.data, a.count);
    }
    pgd_npy_free(&a);
    return v;
}

static int cmd_put(const zcli *c, const char *const *pos, int npos)
{
    const char *id = c->id ? c->id : "";
    if (strlen(id) > PGD_ZSTORE_ID_MAX)
        return usage_error("put", "--id: '%s' is longer than %d bytes", id, PGD_ZSTORE_ID_MAX);
    pgd_zstore *z;
    pgd_zstore_info f;
    uint32_t slot;
    int rc = open_slot("put", pos[0], pos[1], 1, &z, &f, &slot);
    if (rc)
        return rc;
    pgd_err err = PGD_ERR_INIT;
    float *v = npy_block(pos[2], &f, &err);
    if (v)
        pgd_zstore_write(z, slot, v, pgd_zstore_block_elems(z), id, (int32_t)c->label, &err);
    free(v);
    pgd_zstore_close(&z);
    if (pgd_err_is_set(&err))
        return fail(&err);
    printf("wrote %s to pgd.%s slot %u\n", pos[2], f.name, slot);
    return PGD_EXIT_OK;
}

static int cmd_rm(const zcli *c, const char *const *pos, int npos)
{
    pgd_err err = PGD_ERR_INIT;
    pgd_zstore_info f;
    if (pgd_zstore_probe(pos[0], &f, &err) != 0) {
        if (err.code == PGD_ENOENT || err.code == PGD_EINVAL || !c->force) {
            if (err.code == PGD_EFORMAT)
                pgd_err_prefix(&err, "rm: not removed (use --force): ");
            return fail(&err);
        }
    } else if (f.alive && !c->force) {
        pgd_fail(&err, PGD_EBUSY, "rm: pgd.%s is live (creator pid %u runs); not removed (use --force)", pos[0],
                 f.creator_pid);
        return fail(&err);
    }
    pgd_err_clear(&err);
    if (pgd_zstore_remove(pos[0], &err) != 0)
        return fail(&err);
    printf("removed pgd.%s\n", pos[0]);
    return PGD_EXIT_OK;
}

static int cmd_reclaim(const zcli *c, const char *const *pos, int npos)
{
    pgd_zstore_entry *v;
    size_t n, removed = 0, live = 0, bad = 0;
    pgd_err err = PGD_ERR_INIT;
    int rc = PGD_EXIT_OK;
    if (pgd_zstore_list(&v, &n, &err) != 0)
        return fail(&err);
    for (size_t i = 0; i < n; i++) {
        const pgd_zstore_info *f = &v[i].info;
        int gone = 0;
        if (v[i].code != PGD_OK) {
            printf("skipped pgd.%s: %s\n", f->name, v[i].error);
            bad++;
        } else if (f->alive) {
            live++;
        } else if (pgd_zstore_reclaim(f->name, &gone, &err) != 0) {
            pgd_log_err(&err);
            pgd_err_clear(&err);
            rc = PGD_EXIT_FAIL;
        } else if (gone) {
            printf("removed pgd.%s (creator pid %u is gone)\n", f->name, f->creator_pid);
            removed++;
        } else {
            live++; /* its creator turned out to be alive */
        }
    }
    printf("reclaimed %zu stale segment(s); %zu live, %zu unreadable left alone\n", removed, live, bad);
    free(v);
    return rc;
}

static const zcmd cmds[] = {
    {"create", "create NAME --m M --n N --s S --slots K [--dtype f32|f16|bf16] [--owner-pid PID]",
     "make segment /dev/shm/pgd.NAME, live while PID runs (default: the parent of this command)",
     "m n s slots dtype owner_pid", 1, 1, cmd_create},
    {"ls", "ls [NAME]", "list every pgd segment, or one segment's header and slots", "", 0, 1, cmd_ls},
    {"dump", "dump NAME SLOT --out FILE.npy|FILE.png",
     "write a slot as a float32 [m,n,s] .npy, or as a heatmap of its per-cell L2 norms", "out", 2, 2, cmd_dump},
    {"put", "put NAME SLOT FILE.npy [--id ID] [--label L]", "write a float32/float16 [m,n,s] .npy into a slot",
     "id label", 3, 3, cmd_put},
    {"rm", "rm NAME [--force]", "remove a segment (a live one only with --force)", "force", 1, 1, cmd_rm},
    {"reclaim", "reclaim", "remove every stale segment (its creator is gone)", "", 0, 0, cmd_reclaim},
};
#define NCMDS (sizeof cmds / sizeof *cmds)

static const zcmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(name, cmds[i].name) == 0)
            return &cmds[i];
    return NULL;
}

/* Copy into sub the options whose keys cmd->keys names, ending with {NULL}. */
static void cmd_opts(const zcmd *cmd, pgd_cfg_opt sub[NOPTS])
{
    char keys[128], word[40];
    size_t k = 0;
    snprintf(keys, sizeof keys, " %s ", cmd->keys);
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        snprintf(word, sizeof word, " %s ", o->key);
        if (strstr(keys, word))
            sub[k++] = *o;
    }
    sub[k] = (pgd_cfg_opt){NULL};
}

/* pgd-zstore --help: the commands, then every option with the command that takes it. */
static void general_usage(void)
{
    char text[2048];
    size_t used = (size_t)snprintf(text, sizeof text, "pgd-zstore COMMAND [ARGS] [options]\n\ncommands:");
    for (size_t i = 0; i < NCMDS && used < sizeof text; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "\n  %s\n      %s%s%s%s", cmds[i].usage,
                                 cmds[i].about, *cmds[i].keys ? " (options: " : "", cmds[i].keys,
                                 *cmds[i].keys ? ")" : "");
    pgd_cfg_usage(opts, stdout, text);
    fputs("pgd-zstore COMMAND --help lists the options of one command. Exit: 0 ok, 1 failure, 2 usage error.\n",
          stdout);
}

/* Resolve the options of cmd (the word after the program name) and run it. */
static int run_cmd(const zcmd *cmd, int argc, char **argv)
{
    pgd_cfg_opt sub[NOPTS];
    cmd_opts(cmd, sub);
    zcli c = {0};
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    int rc, npos;
    if (pgd_cfg_parse_args(sub, &c, argc, argv, &a, &err) != 0) {
        rc = usage_error(cmd->name, "%s", err.msg);
    } else if (a.help) {
        char line[256];
        snprintf(line, sizeof line, "pgd-zstore %s\n  %s", cmd->usage, cmd->about);
        pgd_cfg_usage(sub, stdout, line);
        rc = PGD_EXIT_OK;
    } else if ((npos = a.npositional - 1) < cmd->min_pos) { /* positional[0] is the command */
        rc = usage_error(cmd->name, "missing argument (%d needed, %d given)", cmd->min_pos, npos);
    } else if (npos > cmd->max_pos) {
        rc = usage_error(cmd->name, "unexpected argument '%s'", a.positional[1 + cmd->max_pos]);
    } else {
        if (a.saved_to)
            pgd_info("settings written to %s", a.saved_to);
        rc = cmd->fn(&c, a.positional + 1, npos);
    }
    pgd_cfg_args_free(&a);
    pgd_cfg_free(opts, &c);
    return rc;
}

int main(int argc, char **argv)
{
    pgd_log_init("zstore", PGD_LOG_INFO, 0);
    if (argc < 2)
        return usage_error(NULL, "no command given");
    const zcmd *cmd = find_cmd(argv[1]);
    if (cmd)
        return run_cmd(cmd, argc, argv);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        general_usage();
        return PGD_EXIT_OK;
    }
    if (argv[1][0] == '-')
        return usage_error(NULL, "'%s': the command comes first, then its options", argv[1]);
    return usage_error(NULL, "unknown command '%s'", argv[1]);
}
