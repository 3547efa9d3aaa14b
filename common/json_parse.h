/* json_parse.h: a small, strict JSON reader (RFC 8259) into a tree of values, for file headers. */
#ifndef PGD_JSON_PARSE_H
#define PGD_JSON_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Strict means: one value surrounded by optional whitespace, no comments, no trailing commas, no leading
 * zeros, no NaN/Infinity, no control characters inside strings, valid UTF-8 only (no overlong forms, no
 * encoded surrogates), \u escapes with surrogate pairs joined and lone surrogates refused. Also refused,
 * although JSON allows them: a duplicate key in one object, "\u0000" (strings are C strings here), an
 * integer literal outside the int64 range, and a number that overflows a double. */

typedef enum pgd_json_type {
    PGD_JSON_NULL,
    PGD_JSON_FALSE,
    PGD_JSON_TRUE,
    PGD_JSON_INT,    /* a number written without '.', 'e' or 'E' that fits in int64 */
    PGD_JSON_NUMBER, /* any other number (a finite double) */
    PGD_JSON_STRING,
    PGD_JSON_ARRAY,
    PGD_JSON_OBJECT,
} pgd_json_type;

typedef struct pgd_json pgd_json;

/* One value. The tree is read-only for callers; pgd_json_free releases all of it. */
struct pgd_json {
    pgd_json_type type;
    size_t offset;        /* byte offset of the value's first character in the text */
    const char *key;      /* the member name when this value sits in an object, else NULL */
    size_t key_len;
    int64_t i;            /* PGD_JSON_INT */
    double num;           /* PGD_JSON_INT (converted) and PGD_JSON_NUMBER */
    const char *str;      /* PGD_JSON_STRING: decoded UTF-8, NUL-terminated */
    size_t len;           /* its length in bytes */
    pgd_json *items;      /* PGD_JSON_ARRAY elements / PGD_JSON_OBJECT members, in text order */
    size_t count;
};

typedef struct pgd_json_limits {
    size_t max_bytes; /* longest text accepted (0: PGD_JSON_DEFAULT_MAX_BYTES) */
    int max_depth;    /* deepest nesting of arrays and objects (0: PGD_JSON_DEFAULT_MAX_DEPTH) */
} pgd_json_limits;

#define PGD_JSON_DEFAULT_MAX_BYTES (100u * 1000u * 1000u)
#define PGD_JSON_DEFAULT_MAX_DEPTH 64

/* Parse text[0..len) (NULs inside are errors; no terminator needed). lim NULL: the defaults. Returns the
 * root value (free it with pgd_json_free), or NULL with PGD_EFORMAT and a message "at byte N: ..." (N is
 * the offset in text; PGD_ENOMEM when memory runs out). */
pgd_json *pgd_json_parse(const char *text, size_t len, const pgd_json_limits *lim, pgd_err *err);

/* Free a tree from pgd_json_parse and set *root to NULL (NULL is fine). */
void pgd_json_free(pgd_json **root);

/* The member of obj named key, or NULL (also when obj is NULL or not an object). Linear in the members. */
const pgd_json *pgd_json_get(const pgd_json *obj, const char *key);

/* "null", "false", "true", "integer", "number", "string", "array", "object". */
const char *pgd_json_type_name(pgd_json_type type);

#endif
