/* config_args.c: command lines: --key value, --config, --save-config, --help, positionals, and usage text. */
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"

/* ---- usage -------------------------------------------------------------------------------------- */

/* "--key <int>" as the left column. */
static int usage_left(char *buf, size_t cap, const pgd_cfg_opt *o)
{
    switch (o->type) {
    case PGD_CFG_BOOL: return snprintf(buf, cap, "--%s[=<bool>]", o->key);
    case PGD_CFG_ENUM: return snprintf(buf, cap, "--%s <%s>", o->key, o->choices);
    default: return snprintf(buf, cap, "--%s <%s>", o->key, pgd_cfg_type_name(o->type));
    }
}

static void usage_entry(FILE *f, int width, const char *left, const char *help)
{
    if ((int)strlen(left) > width)
        fprintf(f, "  %s\n  %*s  ", left, width, "");
    else
        fprintf(f, "  %-*s  ", width, left);
    pgd_cfg_put_line(f, help);
}

/* "[default: 8; range: 1..4096]" after an option's help. */
static void usage_note(FILE *f, const pgd_cfg_opt *o)
{
    char r[96];
    fputs(o->help && *o->help ? " [" : "[", f);
    if (o->flags & PGD_CFG_REQUIRED) {
        fputs("required", f);
    } else {
        fputs("default: ", f);
        if (!o->def)
            fputs("not set", f);
        else if (o->type == PGD_CFG_STRING)
            pgd_cfg_put_string(f, o->def);
        else
            fputs(o->def, f);
    }
    if (pgd_cfg_range_text(o, r, sizeof r))
        fprintf(f, "; range: %s", r);
    fputs("]\n", f);
}

void pgd_cfg_usage(const pgd_cfg_opt *opts, FILE *f, const char *usage_line)
{
    enum { MAX_WIDTH = 32 };
    char left[512];
    int width = (int)strlen("--save-config <file>");
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        int n = usage_left(left, sizeof left, o);
        if (n > width && n <= MAX_WIDTH)
            width = n;
    }
    fprintf(f, "usage: %s\n\noptions (--key value or --key=value; '-' may replace '_' in keys;\n"
               "         defaults < --config files < command line):\n", usage_line ? usage_line : "");
    for (const pgd_cfg_opt *o = opts; o->key; o++) {
        usage_left(left, sizeof left, o);
        usage_entry(f, width, left, o->help);
        usage_note(f, o);
    }
    usage_entry(f, width, "--config <file>", "load a config file first (may be repeated: later files win)");
    fputc('\n', f);
    usage_entry(f, width, "--save-config <file>", "write the resolved config to <file>");
    fputc('\n', f);
    usage_entry(f, width, "--help", "print this help and exit");
    fputc('\n', f);
}

/* ---- words to tokens ---------------------------------------------------------------------------- */

enum tok_kind { TOK_OPT, TOK_CONFIG, TOK_SAVE, TOK_POS };

typedef struct token {
    enum tok_kind kind;
    const pgd_cfg_opt *opt; /* TOK_OPT */
    const char *name;       /* the word as typed, up to '=' (for messages) */
    int name_len;
    const char *value;      /* the value (NULL: a bare BOOL flag) or the positional word */
} token;

static int is_word(const char *arg, const char *name)
{
    return strcmp(arg, name) == 0;
}

/* Is the word the value of the option before it (rather than another option)? */
static int takes_word(const pgd_cfg_opt *o, const char *next)
{
    if (!next || strncmp(next, "--", 2) == 0)
        return 0;
    return !o || o->type != PGD_CFG_BOOL || pgd_cfg_bool_word(next) >= 0;
}

/* Turn one option word (and perhaps the next) into a token. Returns how many words it used, or -1. */
static int option_token(const pgd_cfg_opt *opts, const char *arg, const char *next, token *t, pgd_err *err)
{
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t n = eq ? (size_t)(eq - name) : strlen(name);
    t->name = arg;
    t->name_len = (int)(n + 2);
    t->value = eq ? eq + 1 : NULL;
    t->opt = NULL;
    if (pgd_cfg_key_equals("help", name, n))
        return pgd_fail(err, PGD_EINVAL, "--help takes no value");
    if (pgd_cfg_key_equals("config", name, n)) {
        t->kind = TOK_CONFIG;
    } else if (pgd_cfg_key_equals("save_config", name, n)) {
        t->kind = TOK_SAVE;
    } else {
        t->kind = TOK_OPT;
        t->opt = pgd_cfg_find_n(opts, name, n);
        if (!t->opt) {
            const char *near = pgd_cfg_suggest(opts, name, n);
            if (near)
                return pgd_fail(err, PGD_ENOENT, "%.*s: unknown option (did you mean --%s?)", t->name_len, arg,
                                near);
            return pgd_fail(err, PGD_ENOENT, "%.*s: unknown option", t->name_len, arg);
        }
    }
    if (eq)
        return 1;
    if (takes_word(t->opt, next)) {
        t->value = next;
        return 2;
    }
    if (t->opt && t->opt->type == PGD_CFG_BOOL)
        return 1; /* bare flag: true */
    return pgd_fail(err, PGD_EINVAL, "%.*s: missing value", t->name_len, arg);
}

/* Words that are not options: plain words, "-" and negative numbers like "-5". */
static int is_positional(const char *arg)
{
    if (arg[0] != '-' || arg[1] == '\0')
        return 1;
    return arg[1] != '-' && !((arg[1] >= 'a' && arg[1] <= 'z') || (arg[1] >= 'A' && arg[1] <= 'Z'));
}

static int tokenize(const pgd_cfg_opt *opts, int argc, char **argv, token *toks, int *ntok, pgd_err *err)
{
    int n = 0, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        token *t = &toks[n];
        memset(t, 0, sizeof *t);
        if (!only_pos && is_word(arg, "--")) {
            only_pos = 1;
            continue;
        }
        if (only_pos || is_positional(arg)) {
            t->kind = TOK_POS;
            t->value = arg;
        } else if (arg[1] != '-') {
            return pgd_fail(err, PGD_EINVAL, "%s: unknown option (options start with --)", arg);
        } else {
            int used = option_token(opts, arg, i + 1 < argc ? argv[i + 1] : NULL, t, err);
            if (used < 0)
                return -1;
            i += used - 1;
        }
        n++;
    }
    *ntok = n;
    return 0;
}

/* ---- resolving ---------------------------------------------------------------------------------- */

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc && !is_word(argv[i], "--"); i++)
        if (is_word(argv[i], "--help") || is_word(argv[i], "-h"))
            return 1;
    return 0;
}

/* Every REQUIRED option must have been seen; name all that were not. */
static int check_required(const pgd_cfg_opt *opts, const unsigned char *seen, pgd_err *err)
{
    char list[400] = "";
    size_t used = 0;
    int missing = 0;
    for (size_t i = 0; opts[i].key; i++) {
        if (!(opts[i].flags & PGD_CFG_REQUIRED) || seen[i])
            continue;
        missing++;
        int n = snprintf(list + used, sizeof list - used, "%s--%s", used ? ", " : "", opts[i].key);
        if (n > 0 && (size_t)n < sizeof list - used)
            used += (size_t)n;
    }
    if (missing)
        return pgd_fail(err, PGD_EINVAL, "missing required option%s %s (set on the command line or in a config file)",
                        missing > 1 ? "s" : "", list);
    return 0;
}

/* Apply the tokens: config files, then options left to right. */
static int apply_tokens(const pgd_cfg_opt *opts, void *cfg, const token *toks, int ntok, unsigned char *seen,
                        pgd_cfg_args *out, const char **save, pgd_err *err)
{
    for (int i = 0; i < ntok; i++)
        if (toks[i].kind == TOK_CONFIG && pgd_cfg_load_seen(opts, cfg, toks[i].value, seen, err))
            return -1;
    for (int i = 0; i < ntok; i++) {
        const token *t = &toks[i];
        if (t->kind == TOK_POS) {
            out->positional[out->npositional++] = t->value;
        } else if (t->kind == TOK_SAVE) {
            *save = t->value;
        } else if (t->kind == TOK_OPT) {
            pgd_err e = PGD_ERR_INIT;
            pgd_cfg_value v;
            if (pgd_cfg_parse_value(t->opt, t->value ? t->value : "true", &v, &e)) {
                pgd_err_prefix(&e, "%.*s: ", t->name_len, t->name);
                return pgd_fail(err, e.code, "%s", e.msg);
            }
            pgd_cfg_store_value(t->opt, cfg, v);
            seen[t->opt - opts] = 1;
        }
    }
    return 0;
}

int pgd_cfg_parse_args(const pgd_cfg_opt *opts, void *cfg, int argc, char **argv, pgd_cfg_args *out,
                       pgd_err *err)
{
    memset(out, 0, sizeof *out);
    if (pgd_cfg_defaults(opts, cfg, err))
        return -1;
    if (wants_help(argc, argv)) {
        out->help = 1;
        return 0;
    }
    size_t nwords = argc > 0 ? (size_t)argc : 1;
    token *toks = calloc(nwords, sizeof *toks);
    unsigned char *seen = calloc(pgd_cfg_count(opts) + 1, 1);
    const char *save = NULL;
    int ntok = 0, rc = -1;
    out->positional = calloc(nwords, sizeof *out->positional);
    if (!toks || !seen || !out->positional) {
        pgd_fail(err, PGD_ENOMEM, "out of memory");
        goto fail;
    }
    if (tokenize(opts, argc, argv, toks, &ntok, err) ||
        apply_tokens(opts, cfg, toks, ntok, seen, out, &save, err) || check_required(opts, seen, err))
        goto fail;
    if (save) {
        if (pgd_cfg_save(opts, cfg, save, err))
            goto fail;
        out->saved_to = save;
    }
    rc = 0;
fail:
    free(toks);
    free(seen);
    return rc;
}

void pgd_cfg_args_free(pgd_cfg_args *args)
{
    if (!args)
        return;
    free(args->positional);
    memset(args, 0, sizeof *args);
}
