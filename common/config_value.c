/* config_value.c: option values: parsing text by type with range and choice checks, storing into fields. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_impl.h"

static const char *const bool_true[] = {"true", "1", "yes", "on"};
static const char *const bool_false[] = {"false", "0", "no", "off"};

/* ---- numbers and ranges ------------------------------------------------------------------------- */

/* A range is in force unless min > max (or both are 0, the value of an initializer that leaves them out). */
static int has_range(const pgd_cfg_opt *o)
{
    return o->min <= o->max && !(o->min == 0 && o->max == 0);
}

void pgd_cfg_format_double(char *buf, size_t cap, double d)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        double back = strtod(buf, NULL);
        if (memcmp(&back, &d, sizeof d) == 0)
            return;
    }
}

static void format_range(char *buf, size_t cap, const pgd_cfg_opt *o)
{
    char lo[40], hi[40];
    pgd_cfg_format_double(lo, sizeof lo, o->min);
    pgd_cfg_format_double(hi, sizeof hi, o->max);
    snprintf(buf, cap, "%s..%s", lo, hi);
}

int pgd_cfg_range_text(const pgd_cfg_opt *o, char *buf, size_t cap)
{
    if ((o->type != PGD_CFG_INT && o->type != PGD_CFG_FLOAT) || !has_range(o))
        return 0;
    format_range(buf, cap, o);
    return 1;
}

static int parse_int(const pgd_cfg_opt *o, const char *text, pgd_cfg_value *v, pgd_err *err)
{
    if (!*text)
        return pgd_fail(err, PGD_EINVAL, "empty value (expected an integer)");
    const char *p = text + (*text == '+' || *text == '-');
    if (*p < '0' || *p > '9')
        return pgd_fail(err, PGD_EINVAL, "'%s' is not an integer", text);
    char *end;
    errno = 0;
    long long x = strtoll(text, &end, 10);
    if (*end)
        return pgd_fail(err, PGD_EINVAL, "'%s' is not an integer", text);
    if (errno == ERANGE)
        return pgd_fail(err, PGD_EINVAL, "'%s' is out of the int64 range", text);
    if (has_range(o) && ((long double)x < o->min || (long double)x > o->max)) {
        char r[96];
        format_range(r, sizeof r, o);
        return pgd_fail(err, PGD_EINVAL, "%lld is out of range %s", x, r);
    }
    v->i = (int64_t)x;
    return 0;
}

static int parse_float(const pgd_cfg_opt *o, const char *text, pgd_cfg_value *v, pgd_err *err)
{
    if (!*text)
        return pgd_fail(err, PGD_EINVAL, "empty value (expected a number)");
    if (isspace((unsigned char)*text))
        return pgd_fail(err, PGD_EINVAL, "'%s' is not a number", text);
    char *end;
    errno = 0;
    double x = strtod(text, &end);
    if (end == text || *end)
        return pgd_fail(err, PGD_EINVAL, "'%s' is not a number", text);
    if (!isfinite(x))
        return pgd_fail(err, PGD_EINVAL, "'%s' is not a finite number", text);
    if (has_range(o) && (x < o->min || x > o->max)) {
        char r[96], xs[40];
        format_range(r, sizeof r, o);
        pgd_cfg_format_double(xs, sizeof xs, x);
        return pgd_fail(err, PGD_EINVAL, "%s is out of range %s", xs, r);
    }
    v->d = x; /* an underflow (ERANGE towards 0) keeps the nearest subnormal, which is fine */
    return 0;
}

/* ---- words -------------------------------------------------------------------------------------- */

int pgd_cfg_bool_word(const char *text)
{
    for (size_t i = 0; i < sizeof bool_true / sizeof *bool_true; i++) {
        if (strcasecmp(text, bool_true[i]) == 0)
            return 1;
        if (strcasecmp(text, bool_false[i]) == 0)
            return 0;
    }
    return -1;
}

/* The choice starting at p: its length, and in *next the start of the one after it (NULL: none). */
static size_t choice_len(const char *p, const char **next)
{
    const char *bar = strchr(p, '|');
    *next = bar ? bar + 1 : NULL;
    return bar ? (size_t)(bar - p) : strlen(p);
}

const char *pgd_cfg_choice_at(const char *choices, int idx, size_t *len)
{
    const char *p = choices, *next;
    *len = choice_len(p, &next);
    for (int i = 0; i < idx && next; i++) {
        p = next;
        *len = choice_len(p, &next);
    }
    return p;
}

/* Index of word in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *word)
{
    size_t wl = strlen(word);
    const char *p = choices, *next;
    for (int idx = 0; p; idx++, p = next)
        if (choice_len(p, &next) == wl && memcmp(p, word, wl) == 0)
            return idx;
    return -1;
}

/* ---- values ------------------------------------------------------------------------------------- */

int pgd_cfg_parse_value(const pgd_cfg_opt *o, const char *text, pgd_cfg_value *v, pgd_err *err)
{
    switch (o->type) {
    case PGD_CFG_INT:
        return parse_int(o, text, v, err);
    case PGD_CFG_FLOAT:
        return parse_float(o, text, v, err);
    case PGD_CFG_BOOL:
        v->n = pgd_cfg_bool_word(text);
        if (v->n < 0)
            return pgd_fail(err, PGD_EINVAL, "'%s' is not a boolean (true|false|1|0|yes|no|on|off)", text);
        return 0;
    case PGD_CFG_ENUM:
        v->n = choice_index(o->choices, text);
        if (v->n < 0)
            return pgd_fail(err, PGD_EINVAL, "'%s' is not one of %s", text, o->choices);
        return 0;
    case PGD_CFG_STRING:
        v->s = strdup(text);
        if (!v->s)
            return pgd_fail(err, PGD_ENOMEM, "out of memory");
        return 0;
    }
    return pgd_fail(err, PGD_EINVAL, "bad option type %d", (int)o->type);
}

void pgd_cfg_drop_value(const pgd_cfg_opt *o, pgd_cfg_value *v)
{
    if (o->type == PGD_CFG_STRING) {
        free(v->s);
        v->s = NULL;
    }
}

void pgd_cfg_store_value(const pgd_cfg_opt *o, void *cfg, pgd_cfg_value v)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case PGD_CFG_INT:
        memcpy(field, &v.i, sizeof v.i);
        break;
    case PGD_CFG_FLOAT:
        memcpy(field, &v.d, sizeof v.d);
        break;
    case PGD_CFG_BOOL:
    case PGD_CFG_ENUM:
        memcpy(field, &v.n, sizeof v.n);
        break;
    case PGD_CFG_STRING: {
        char *old;
        memcpy(&old, field, sizeof old);
        free(old);
        memcpy(field, &v.s, sizeof v.s);
        break;
    }
    }
}

pgd_cfg_value pgd_cfg_fetch_value(const pgd_cfg_opt *o, const void *cfg)
{
    const char *field = (const char *)cfg + o->offset;
    pgd_cfg_value v;
    memset(&v, 0, sizeof v);
    switch (o->type) {
    case PGD_CFG_INT: memcpy(&v.i, field, sizeof v.i); break;
    case PGD_CFG_FLOAT: memcpy(&v.d, field, sizeof v.d); break;
    case PGD_CFG_BOOL:
    case PGD_CFG_ENUM: memcpy(&v.n, field, sizeof v.n); break;
    case PGD_CFG_STRING: memcpy(&v.s, field, sizeof v.s); break;
    }
    return v;
}
