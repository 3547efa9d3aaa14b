/* config_write.c: writing a resolved config as a loadable, commented config file. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "config_impl.h"

static int needs_quotes(const char *s)
{
    if (!*s || pgd_cfg_is_blank(s[0]) || pgd_cfg_is_blank(s[strlen(s) - 1]))
        return 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == '#' || *p == ';' || *p == '"' || *p == '\\' || *p < 0x20 || *p == 0x7f)
            return 1;
    return 0;
}

void pgd_cfg_put_string(FILE *f, const char *s)
{
    if (!needs_quotes(s)) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        switch (*s) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '\r': fputs("\\r", f); break;
        default: fputc(*s, f);
        }
    }
    fputc('"', f);
}

void pgd_cfg_put_line(FILE *f, const char *s)
{
    for (; s && *s; s++)
        fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
}

/* Write the field's value as config text. */
static void put_value(FILE *f, const pgd_cfg_opt *o, const void *cfg)
{
    pgd_cfg_value v = pgd_cfg_fetch_value(o, cfg);
    char buf[40];
    size_t len;
    const char *c;
    switch (o->type) {
    case PGD_CFG_INT:
        fprintf(f, "%" PRId64, v.i);
        break;
    case PGD_CFG_FLOAT:
        pgd_cfg_format_double(buf, sizeof buf, v.d);
        fputs(buf, f);
        break;
    case PGD_CFG_BOOL:
        fputs(v.n ? "true" : "false", f);
        break;
    case PGD_CFG_ENUM:
        c = pgd_cfg_choice_at(o->choices, v.n, &len);
        fprintf(f, "%.*s", (int)len, c);
        break;
    case PGD_CFG_STRING:
        pgd_cfg_put_string(f, v.s ? v.s : "");
        break;
    }
}

/* "(int, range 1..8, required)" etc. */
static void put_kind(FILE *f, const pgd_cfg_opt *o)
{
    char r[96];
    fprintf(f, "(%s", pgd_cfg_type_name(o->type));
    if (o->type == PGD_CFG_ENUM)
        fprintf(f, ": %s", o->choices);
    if (pgd_cfg_range_text(o, r, sizeof r))
        fprintf(f, ", range %s", r);
    if (o->flags & PGD_CFG_REQUIRED)
        fputs(", required", f);
    fputc(')', f);
}

int pgd_cfg_write(const pgd_cfg_opt *opts, const void *cfg, FILE *f, pgd_err *err)
{
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        fputs("# ", f);
        if (o->help && *o->help) {
            pgd_cfg_put_line(f, o->help);
            fputc(' ', f);
        }
        put_kind(f, o);
        fputc('\n', f);
        if (o->type == PGD_CFG_STRING && !pgd_cfg_fetch_value(o, cfg).s) {
            fprintf(f, "# %s = (not set)\n", o->key);
            continue;
        }
        fprintf(f, "%s = ", o->key);
        put_value(f, o, cfg);
        fputc('\n', f);
    }
    if (ferror(f))
        return pgd_fail_errno(err, PGD_EIO, "write config");
    return 0;
}

int pgd_cfg_save(const pgd_cfg_opt *opts, const void *cfg, const char *path, pgd_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "open %s", path);
    pgd_err e = PGD_ERR_INIT;
    int rc = pgd_cfg_write(opts, cfg, f, &e);
    if (fclose(f) != 0 && rc == 0)
        return pgd_fail_errno(err, PGD_EIO, "write %s", path);
    if (rc) {
        pgd_err_prefix(&e, "%s: ", path);
        return pgd_fail(err, e.code, "%s", e.msg);
    }
    return 0;
}
