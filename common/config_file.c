/* config_file.c: reading config text and files: lines, [sections], quotes, comments, all-or-nothing loads. */
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"
#include "file.h"

#define MAX_FILE_BYTES ((size_t)16 << 20) /* a config file is small; anything bigger is a mistake */
#define MAX_KEY 256
#define MAX_SECTION (MAX_KEY / 2)

/* A value from a file line before it is stored: which line set it. */
typedef struct pending {
    int line; /* 0: not set by this file */
    pgd_cfg_value v;
} pending;

/* ---- pieces of a line --------------------------------------------------------------------------- */

static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && pgd_cfg_is_blank(*p))
        p++;
    return p;
}

/* The end of the text from p to q with trailing blanks cut off. */
static const char *trim_blanks(const char *p, const char *q)
{
    while (q > p && pgd_cfg_is_blank(q[-1]))
        q--;
    return q;
}

static int is_comment_start(char c)
{
    return c == '#' || c == ';';
}

/* Is the text from p to end empty, blanks, or blanks and a comment? */
static int only_comment(const char *p, const char *end)
{
    p = skip_blanks(p, end);
    return p == end || is_comment_start(*p);
}

/* Parse a double-quoted value starting at *p (on the quote) into out (malloc'd). On return *p is past the
 * closing quote. */
static int unquote(const char **p, const char *end, char **out, pgd_err *err)
{
    const char *s = *p + 1;
    char *buf = malloc((size_t)(end - s) + 1), *w = buf;
    if (!buf)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    for (; s < end && *s != '"'; s++) {
        if (*s != '\\') {
            *w++ = *s;
            continue;
        }
        if (++s == end)
            break;
        switch (*s) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        default:
            free(buf);
            return pgd_fail(err, PGD_EFORMAT, "unknown escape '\\%c' in quoted value (use \\\" \\\\ \\n \\t \\r)",
                            *s);
        }
    }
    if (s >= end) {
        free(buf);
        return pgd_fail(err, PGD_EFORMAT, "unterminated quote");
    }
    *w = '\0';
    *out = buf;
    *p = s + 1;
    return 0;
}

/* The value part of a line (after '='), as a malloc'd string. A comment starts at '#' or ';' at the
 * start of the value or after a blank. */
static int line_value(const char *p, const char *end, char **out, pgd_err *err)
{
    p = skip_blanks(p, end);
    if (p < end && *p == '"') {
        if (unquote(&p, end, out, err))
            return -1;
        if (!only_comment(p, end)) {
            free(*out);
            *out = NULL;
            return pgd_fail(err, PGD_EFORMAT, "unexpected text after the closing quote");
        }
        return 0;
    }
    const char *q = p;
    while (q < end && !(is_comment_start(*q) && (q == p || pgd_cfg_is_blank(q[-1]))))
        q++;
    q = trim_blanks(p, q);
    *out = strndup(p, (size_t)(q - p));
    return *out ? 0 : pgd_fail(err, PGD_ENOMEM, "out of memory");
}

/* ---- lines -------------------------------------------------------------------------------------- */

/* "[name]" line: set section (trimmed name). */
static int section_line(const char *p, const char *end, char *section, size_t cap, pgd_err *err)
{
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (!close || !only_comment(close + 1, end))
        return pgd_fail(err, PGD_EFORMAT, "expected '[section]'");
    p = skip_blanks(p + 1, close);
    const char *q = trim_blanks(p, close);
    if (q == p)
        return pgd_fail(err, PGD_EFORMAT, "empty section name");
    if ((size_t)(q - p) >= cap)
        return pgd_fail(err, PGD_EFORMAT, "section name too long");
    memcpy(section, p, (size_t)(q - p));
    section[q - p] = '\0';
    return 0;
}

/* One "key = value" line (p at its first non-blank) into the pending table. */
static int key_line(const pgd_cfg_opt *opts, pending *pend, const char *section, int line, const char *p,
                    const char *end, pgd_err *err)
{
    const char *eq = memchr(p, '=', (size_t)(end - p));
    const char *kend = eq ? trim_blanks(p, eq) : p;
    if (kend == p)
        return pgd_fail(err, PGD_EFORMAT, "expected 'key = value'");
    char key[MAX_KEY];
    int n = snprintf(key, sizeof key, "%s%s%.*s", section, *section ? "." : "", (int)(kend - p), p);
    if (n < 0 || (size_t)n >= sizeof key)
        return pgd_fail(err, PGD_EFORMAT, "key too long");
    const pgd_cfg_opt *o = pgd_cfg_find(opts, key);
    if (!o)
        return pgd_cfg_unknown_key(err, opts, key, (size_t)n);
    pending *slot = &pend[o - opts];
    if (slot->line)
        return pgd_fail(err, PGD_EINVAL, "key '%s' already set on line %d", o->key, slot->line);
    char *text = NULL;
    if (line_value(eq + 1, end, &text, err))
        return -1;
    pgd_err e = PGD_ERR_INIT;
    int rc = pgd_cfg_parse_value(o, text, &slot->v, &e);
    free(text);
    if (rc) {
        pgd_err_prefix(&e, "'%s': ", o->key);
        return pgd_fail(err, e.code, "%s", e.msg);
    }
    slot->line = line;
    return 0;
}

static int parse_line(const pgd_cfg_opt *opts, pending *pend, char *section, int line, const char *p,
                      const char *end, pgd_err *err)
{
    if (end > p && memchr(p, '\0', (size_t)(end - p)))
        return pgd_fail(err, PGD_EFORMAT, "NUL byte in line");
    if (only_comment(p, end))
        return 0;
    p = skip_blanks(p, end);
    if (*p == '[')
        return section_line(p, end, section, MAX_SECTION, err);
    return key_line(opts, pend, section, line, p, end, err);
}

/* Parse the whole text into pend (no change to cfg). Lines end at "\n" or "\r\n"; a UTF-8 BOM is skipped. */
static int parse_text(const pgd_cfg_opt *opts, pending *pend, const char *name, const char *text, size_t len,
                      pgd_err *err)
{
    char section[MAX_SECTION] = "";
    const char *p = text, *end = text + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    for (int line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le > p && le[-1] == '\r')
            le--;
        pgd_err e = PGD_ERR_INIT;
        if (parse_line(opts, pend, section, line, p, le, &e)) {
            pgd_err_prefix(&e, "%s line %d: ", name, line);
            return pgd_fail(err, e.code, "%s", e.msg);
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------------ */

/* Load text; seen (one flag per option, may be NULL) gets a 1 for every key the text sets. */
static int load_text_seen(const pgd_cfg_opt *opts, void *cfg, const char *name, const char *text, size_t len,
                          unsigned char *seen, pgd_err *err)
{
    size_t n = pgd_cfg_count(opts);
    pending *pend = calloc(n + 1, sizeof *pend);
    if (!pend)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    int rc = parse_text(opts, pend, name ? name : "config", text, len, err);
    for (size_t i = 0; i < n; i++) {
        if (!pend[i].line)
            continue;
        if (rc == 0) {
            pgd_cfg_store_value(&opts[i], cfg, pend[i].v);
            if (seen)
                seen[i] = 1;
        } else {
            pgd_cfg_drop_value(&opts[i], &pend[i].v);
        }
    }
    free(pend);
    return rc;
}

int pgd_cfg_load_text(const pgd_cfg_opt *opts, void *cfg, const char *name, const char *text, size_t len,
                      pgd_err *err)
{
    return load_text_seen(opts, cfg, name, text, len, NULL, err);
}

int pgd_cfg_load_seen(const pgd_cfg_opt *opts, void *cfg, const char *path, unsigned char *seen, pgd_err *err)
{
    char *text = NULL;
    size_t len = 0;
    if (pgd_file_read(path, MAX_FILE_BYTES, &text, &len, err))
        return -1;
    int rc = load_text_seen(opts, cfg, path, text, len, seen, err);
    free(text);
    return rc;
}

int pgd_cfg_load(const pgd_cfg_opt *opts, void *cfg, const char *path, pgd_err *err)
{
    return pgd_cfg_load_seen(opts, cfg, path, NULL, err);
}
