/* config.c: option tables: key lookup and typo hints, table checks, defaults, setting one key, freeing. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"

#define SUGGEST_DISTANCE 2

/* ---- keys --------------------------------------------------------------------------------------- */

/* '-' and '_' are the same character in keys. */
static char key_char(char c)
{
    return c == '-' ? '_' : c;
}

int pgd_cfg_key_equals(const char *key, const char *s, size_t n)
{
    size_t i = 0;
    for (; i < n && key[i]; i++)
        if (key_char(key[i]) != key_char(s[i]))
            return 0;
    return i == n && key[i] == '\0';
}

const pgd_cfg_opt *pgd_cfg_find_n(const pgd_cfg_opt *opts, const char *s, size_t n)
{
    for (const pgd_cfg_opt *o = opts; o->key; o++)
        if (pgd_cfg_key_equals(o->key, s, n))
            return o;
    return NULL;
}

const pgd_cfg_opt *pgd_cfg_find(const pgd_cfg_opt *opts, const char *key)
{
    return key ? pgd_cfg_find_n(opts, key, strlen(key)) : NULL;
}

size_t pgd_cfg_count(const pgd_cfg_opt *opts)
{
    size_t n = 0;
    while (opts[n].key)
        n++;
    return n;
}

/* Edit distance (insert, delete, substitute, swap two neighbours), or a large number for long keys. */
static int edit_distance(const char *a, size_t na, const char *b)
{
    enum { CAP = 64 };
    size_t nb = strlen(b);
    if (na >= CAP || nb >= CAP)
        return 1000;
    int d[CAP + 1][CAP + 1];
    for (size_t i = 0; i <= na; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        for (size_t j = 1; j <= nb; j++) {
            int cost = key_char(a[i - 1]) != key_char(b[j - 1]);
            int best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && key_char(a[i - 1]) == key_char(b[j - 2]) &&
                key_char(a[i - 2]) == key_char(b[j - 1]) && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[na][nb];
}

const char *pgd_cfg_suggest(const pgd_cfg_opt *opts, const char *s, size_t n)
{
    const char *best = NULL;
    int best_d = SUGGEST_DISTANCE + 1;
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        int d = edit_distance(s, n, o->key);
        if (d < best_d && (size_t)d < n) {
            best = o->key;
            best_d = d;
        }
    }
    return best;
}

int pgd_cfg_unknown_key(pgd_err *err, const pgd_cfg_opt *opts, const char *s, size_t n)
{
    const char *near = pgd_cfg_suggest(opts, s, n);
    if (near)
        return pgd_fail(err, PGD_ENOENT, "unknown key '%.*s' (did you mean '%s'?)", (int)n, s, near);
    return pgd_fail(err, PGD_ENOENT, "unknown key '%.*s'", (int)n, s);
}

const char *pgd_cfg_type_name(pgd_cfg_type type)
{
    switch (type) {
    case PGD_CFG_INT: return "int";
    case PGD_CFG_FLOAT: return "float";
    case PGD_CFG_BOOL: return "bool";
    case PGD_CFG_STRING: return "string";
    case PGD_CFG_ENUM: return "enum";
    }
    return "?";
}

/* ---- setting and freeing ------------------------------------------------------------------------ */

int pgd_cfg_set(const pgd_cfg_opt *opts, void *cfg, const char *key, const char *value, pgd_err *err)
{
    const pgd_cfg_opt *o = pgd_cfg_find(opts, key);
    if (!o)
        return pgd_cfg_unknown_key(err, opts, key ? key : "", key ? strlen(key) : 0);
    pgd_err e = PGD_ERR_INIT;
    pgd_cfg_value v;
    if (pgd_cfg_parse_value(o, value ? value : "", &v, &e)) {
        pgd_err_prefix(&e, "'%s': ", o->key);
        return pgd_fail(err, e.code, "%s", e.msg);
    }
    pgd_cfg_store_value(o, cfg, v);
    return 0;
}

void pgd_cfg_free(const pgd_cfg_opt *opts, void *cfg)
{
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        if (o->type == PGD_CFG_STRING) {
            pgd_cfg_value none = {.s = NULL};
            pgd_cfg_store_value(o, cfg, none);
        }
    }
}

/* ---- the table and its defaults ----------------------------------------------------------------- */

static int check_key(const pgd_cfg_opt *opts, const pgd_cfg_opt *o, pgd_err *err)
{
    static const char *const reserved[] = {"config", "save_config", "help"};
    if (!*o->key)
        return pgd_fail(err, PGD_EINVAL, "option table: empty key");
    for (const char *p = o->key; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '_' || *p == '.';
        if (!ok)
            return pgd_fail(err, PGD_EINVAL, "option table: key '%s' has a character outside [A-Za-z0-9_.]",
                            o->key);
    }
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (pgd_cfg_key_equals(o->key, reserved[i], strlen(reserved[i])))
            return pgd_fail(err, PGD_EINVAL, "option table: key '%s' is reserved for the command line", o->key);
    if (pgd_cfg_find(opts, o->key) != o)
        return pgd_fail(err, PGD_EINVAL, "option table: key '%s' appears twice", o->key);
    return 0;
}

static int check_choices(const pgd_cfg_opt *o, pgd_err *err)
{
    const char *c = o->choices;
    if (!c || !*c || *c == '|' || c[strlen(c) - 1] == '|' || strstr(c, "||"))
        return pgd_fail(err, PGD_EINVAL, "option table: '%s': enum needs choices like \"a|b|c\"", o->key);
    return 0;
}

/* Validate one entry and compute its default value into v. */
static int default_value(const pgd_cfg_opt *opts, const pgd_cfg_opt *o, pgd_cfg_value *v, pgd_err *err)
{
    if (check_key(opts, o, err))
        return -1;
    if ((unsigned)o->type > PGD_CFG_ENUM)
        return pgd_fail(err, PGD_EINVAL, "option table: '%s': bad type %d", o->key, (int)o->type);
    if (o->type == PGD_CFG_ENUM && check_choices(o, err))
        return -1;
    if (isnan(o->min) || isnan(o->max))
        return pgd_fail(err, PGD_EINVAL, "option table: '%s': range bound is NaN", o->key);
    memset(v, 0, sizeof *v);
    if (o->flags & PGD_CFG_REQUIRED)
        return 0; /* zero until a file or the command line sets it */
    if (!o->def) {
        if (o->type == PGD_CFG_STRING)
            return 0;
        return pgd_fail(err, PGD_EINVAL, "option table: '%s' has no default and is not required", o->key);
    }
    pgd_err e = PGD_ERR_INIT;
    if (pgd_cfg_parse_value(o, o->def, v, &e)) {
        pgd_err_prefix(&e, "option table: '%s': default: ", o->key);
        return pgd_fail(err, e.code, "%s", e.msg);
    }
    return 0;
}

int pgd_cfg_defaults(const pgd_cfg_opt *opts, void *cfg, pgd_err *err)
{
    /* Validate the whole table before touching cfg, so that a bad table changes nothing. */
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        pgd_cfg_value v;
        if (default_value(opts, o, &v, err))
            return -1;
        pgd_cfg_drop_value(o, &v);
    }
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        pgd_cfg_value v;
        if (default_value(opts, o, &v, err))
            return -1;
        pgd_cfg_store_value(o, cfg, v);
    }
    return 0;
}
