/* json_parse.c: a strict recursive-descent JSON reader with depth and size limits. */
#include "json_parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct json_parser {
    const char *s;
    size_t len, pos;
    int depth, max_depth;
    pgd_err *err;
} json_parser;

static int json_error(json_parser *p, size_t at, const char *what)
{
    return pgd_fail(p->err, PGD_EFORMAT, "at byte %zu: %s", at, what);
}

static int json_nomem(json_parser *p)
{
    return pgd_fail(p->err, PGD_ENOMEM, "at byte %zu: out of memory", p->pos);
}

static void json_free_value(pgd_json *v)
{
    for (size_t i = 0; i < v->count; i++)
        json_free_value(&v->items[i]);
    free(v->items);
    free((char *)v->key);
    free((char *)v->str);
}

void pgd_json_free(pgd_json **root)
{
    if (!root || !*root)
        return;
    json_free_value(*root);
    free(*root);
    *root = NULL;
}

static void json_skip_ws(json_parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* The length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t json_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need;
    unsigned min, cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2, min = 0x80, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3, min = 0x800, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need;
}

static size_t json_put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Four hex digits at p->pos into *cp. */
static int json_hex4(json_parser *p, unsigned *cp)
{
    if (p->len - p->pos < 4)
        return json_error(p, p->pos, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return json_error(p, p->pos + (size_t)i, "bad hex digit in \\u escape");
        v = v << 4 | (unsigned)d;
    }
    p->pos += 4;
    *cp = v;
    return 0;
}

/* A \u escape (p->pos just after the 'u'), a surrogate pair joined. */
static int json_unicode_escape(json_parser *p, size_t at, unsigned *cp)
{
    if (json_hex4(p, cp) != 0)
        return -1;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return json_error(p, at, "lone low surrogate in \\u escape");
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        unsigned lo;
        if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
            return json_error(p, at, "high surrogate not followed by a low one");
        p->pos += 2;
        if (json_hex4(p, &lo) != 0)
            return -1;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return json_error(p, at, "high surrogate not followed by a low one");
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (*cp == 0)
        return json_error(p, at, "\\u0000 in a string is not supported");
    return 0;
}

/* One escape sequence (p->pos at the backslash): its UTF-8 bytes appended to out. */
static int json_escape(json_parser *p, char *out, size_t *n)
{
    size_t at = p->pos;
    if (p->len - p->pos < 2)
        return json_error(p, at, "unterminated string");
    char c = p->s[p->pos + 1];
    p->pos += 2;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = c ? strchr(from, c) : NULL;
    if (hit) {
        out[(*n)++] = to[hit - from];
        return 0;
    }
    if (c != 'u')
        return json_error(p, at, "unknown escape in string");
    unsigned cp;
    if (json_unicode_escape(p, at, &cp) != 0)
        return -1;
    *n += json_put_utf8(out + *n, cp);
    return 0;
}

/* A string (p->pos at the opening quote) into a malloc'd NUL-terminated buffer. */
static int json_string(json_parser *p, char **out, size_t *out_len)
{
    size_t start = p->pos++;
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') /* an upper bound for the decoded size */
        end += p->s[end] == '\\' && end + 1 < p->len ? 2 : 1;
    if (end >= p->len)
        return json_error(p, start, "unterminated string");
    char *buf = malloc(end - p->pos + 1);
    if (!buf)
        return json_nomem(p);
    size_t n = 0;
    while (p->s[p->pos] != '"') {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '\\') {
            if (json_escape(p, buf, &n) != 0)
                goto fail;
            continue;
        }
        if (c < 0x20) {
            json_error(p, p->pos, c ? "control character in string" : "NUL byte in string");
            goto fail;
        }
        size_t k = json_utf8_len((const unsigned char *)p->s + p->pos, end - p->pos);
        if (k == 0) {
            json_error(p, p->pos, "invalid UTF-8 in string");
            goto fail;
        }
        memcpy(buf + n, p->s + p->pos, k);
        n += k;
        p->pos += k;
    }
    p->pos++;
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return 0;
fail:
    free(buf);
    return -1;
}

static int json_is_digit(json_parser *p, size_t at)
{
    return at < p->len && p->s[at] >= '0' && p->s[at] <= '9';
}

/* A number: an int64 when written without fraction and exponent, else a finite double. */
static int json_number(json_parser *p, pgd_json *v)
{
    size_t start = p->pos, at = p->pos;
    int neg = 0, is_int = 1;
    if (p->s[at] == '-')
        neg = 1, at++;
    if (!json_is_digit(p, at))
        return json_error(p, start, "expected a digit");
    if (p->s[at] == '0' && json_is_digit(p, at + 1))
        return json_error(p, start, "leading zero in number");
    while (json_is_digit(p, at))
        at++;
    if (at < p->len && p->s[at] == '.') {
        is_int = 0;
        if (!json_is_digit(p, ++at))
            return json_error(p, at, "expected a digit after '.'");
        while (json_is_digit(p, at))
            at++;
    }
    if (at < p->len && (p->s[at] == 'e' || p->s[at] == 'E')) {
        is_int = 0;
        at++;
        if (at < p->len && (p->s[at] == '+' || p->s[at] == '-'))
            at++;
        if (!json_is_digit(p, at))
            return json_error(p, at, "expected a digit in exponent");
        while (json_is_digit(p, at))
            at++;
    }
    p->pos = at;
    if (is_int) {
        int64_t x = 0; /* accumulated negatively so that INT64_MIN fits */
        for (size_t i = start + (size_t)neg; i < at; i++) {
            int d = p->s[i] - '0';
            if (x < (INT64_MIN + d) / 10)
                return json_error(p, start, "integer out of the int64 range");
            x = x * 10 - d;
        }
        if (!neg && x == INT64_MIN)
            return json_error(p, start, "integer out of the int64 range");
        v->type = PGD_JSON_INT;
        v->i = neg ? x : -x;
        v->num = (double)v->i;
        return 0;
    }
    char *tmp = malloc(at - start + 1);
    if (!tmp)
        return json_nomem(p);
    memcpy(tmp, p->s + start, at - start);
    tmp[at - start] = 0;
    errno = 0;
    v->num = strtod(tmp, NULL);
    free(tmp);
    if (!isfinite(v->num))
        return json_error(p, start, "number out of the double range");
    v->type = PGD_JSON_NUMBER;
    return 0;
}

static int json_value(json_parser *p, pgd_json *v);

/* Append a zeroed slot to items[*count] (growing *cap). */
static pgd_json *json_push(json_parser *p, pgd_json **items, size_t *count, size_t *cap)
{
    if (*count == *cap) {
        size_t ncap = *cap ? 2 * *cap : 4;
        pgd_json *grown = realloc(*items, ncap * sizeof *grown);
        if (!grown) {
            json_nomem(p);
            return NULL;
        }
        *items = grown;
        *cap = ncap;
    }
    pgd_json *slot = &(*items)[(*count)++];
    memset(slot, 0, sizeof *slot);
    return slot;
}

static int json_by_key(const void *a, const void *b)
{
    const pgd_json *x = *(const pgd_json *const *)a, *y = *(const pgd_json *const *)b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Refuse a key seen twice in one object (sorted copy of member pointers: n log n). */
static int json_check_duplicates(json_parser *p, const pgd_json *obj)
{
    if (obj->count < 2)
        return 0;
    const pgd_json **sorted = malloc(obj->count * sizeof *sorted);
    if (!sorted)
        return json_nomem(p);
    for (size_t i = 0; i < obj->count; i++)
        sorted[i] = &obj->items[i];
    qsort(sorted, obj->count, sizeof *sorted, json_by_key);
    int rc = 0;
    for (size_t i = 1; i < obj->count && rc == 0; i++) {
        if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0) {
            const pgd_json *dup = sorted[i];
            rc = pgd_fail(p->err, PGD_EFORMAT, "at byte %zu: duplicate key '%.200s'",
                          dup->offset, dup->key);
        }
    }
    free(sorted);
    return rc;
}

/* An array or object (p->pos at '[' or '{'). */
static int json_container(json_parser *p, pgd_json *v, int is_object)
{
    char close = is_object ? '}' : ']';
    size_t cap = 0;
    v->type = is_object ? PGD_JSON_OBJECT : PGD_JSON_ARRAY;
    if (++p->depth > p->max_depth)
        return json_error(p, p->pos, "nested too deeply");
    p->pos++;
    json_skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        json_skip_ws(p);
        pgd_json *item = json_push(p, &v->items, &v->count, &cap);
        if (!item)
            return -1;
        if (is_object) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return json_error(p, p->pos, "expected a string key");
            char *key;
            if (json_string(p, &key, &item->key_len) != 0)
                return -1;
            item->key = key;
            json_skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return json_error(p, p->pos, "expected ':' after key");
            p->pos++;
            json_skip_ws(p);
        }
        if (json_value(p, item) != 0)
            return -1;
        json_skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close)
            break;
        return json_error(p, p->pos, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->pos++;
    p->depth--;
    return is_object ? json_check_duplicates(p, v) : 0;
}

static int json_literal(json_parser *p, pgd_json *v, const char *word, pgd_json_type type)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return json_error(p, p->pos, "expected a value");
    p->pos += n;
    v->type = type;
    return 0;
}

/* One value at p->pos (whitespace already skipped). */
static int json_value(json_parser *p, pgd_json *v)
{
    if (p->pos >= p->len)
        return json_error(p, p->pos, "unexpected end of text");
    v->offset = p->pos;
    char c = p->s[p->pos];
    switch (c) {
    case '{': return json_container(p, v, 1);
    case '[': return json_container(p, v, 0);
    case 't': return json_literal(p, v, "true", PGD_JSON_TRUE);
    case 'f': return json_literal(p, v, "false", PGD_JSON_FALSE);
    case 'n': return json_literal(p, v, "null", PGD_JSON_NULL);
    case '"': {
        char *s;
        if (json_string(p, &s, &v->len) != 0)
            return -1;
        v->type = PGD_JSON_STRING;
        v->str = s;
        return 0;
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return json_number(p, v);
        return json_error(p, p->pos, "expected a value");
    }
}

pgd_json *pgd_json_parse(const char *text, size_t len, const pgd_json_limits *lim, pgd_err *err)
{
    size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : PGD_JSON_DEFAULT_MAX_BYTES;
    json_parser p = {text, len, 0, 0, lim && lim->max_depth > 0 ? lim->max_depth : PGD_JSON_DEFAULT_MAX_DEPTH,
                     err};
    if (len > max_bytes) {
        pgd_fail(err, PGD_EFORMAT, "at byte 0: text of %zu bytes is longer than the %zu-byte limit", len,
                 max_bytes);
        return NULL;
    }
    pgd_json *root = calloc(1, sizeof *root);
    if (!root) {
        json_nomem(&p);
        return NULL;
    }
    json_skip_ws(&p);
    if (json_value(&p, root) != 0)
        goto fail;
    json_skip_ws(&p);
    if (p.pos < p.len) {
        json_error(&p, p.pos, "text after the value");
        goto fail;
    }
    return root;
fail:
    pgd_json_free(&root);
    return NULL;
}

const pgd_json *pgd_json_get(const pgd_json *obj, const char *key)
{
    if (!obj || obj->type != PGD_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->items[i].key, key) == 0)
            return &obj->items[i];
    return NULL;
}

const char *pgd_json_type_name(pgd_json_type type)
{
    static const char *const names[] = {"null", "false", "true", "integer", "number", "string", "array",
                                        "object"};
    return (unsigned)type < sizeof names / sizeof *names ? names[type] : "?";
}
