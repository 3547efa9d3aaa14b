/* config_impl.h: private to common/config*.c: what the config files share (not for other modules). */
#ifndef PGD_CONFIG_IMPL_H
#define PGD_CONFIG_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "err.h"

/* A parsed value before it is stored into the caller's struct. */
typedef union pgd_cfg_value {
    int64_t i;
    double d;
    int n;   /* BOOL (0/1) and ENUM (choice index) */
    char *s; /* STRING: malloc'd, may be NULL */
} pgd_cfg_value;

static inline int pgd_cfg_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- keys (config.c) ---------------------------------------------------------------------------- */

/* Does key (NUL-terminated) equal the n bytes at s, with '-' == '_'? */
int pgd_cfg_key_equals(const char *key, const char *s, size_t n);

/* The option whose key equals the n bytes at s, or NULL. */
const pgd_cfg_opt *pgd_cfg_find_n(const pgd_cfg_opt *opts, const char *s, size_t n);

/* Number of options before the {NULL} entry. */
size_t pgd_cfg_count(const pgd_cfg_opt *opts);

/* The key closest to the n bytes at s when it is close enough to be a likely typo, else NULL. */
const char *pgd_cfg_suggest(const pgd_cfg_opt *opts, const char *s, size_t n);

/* Fail with "unknown key 'x'", adding "(did you mean 'y'?)" when a key is close. Returns -1. */
int pgd_cfg_unknown_key(pgd_err *err, const pgd_cfg_opt *opts, const char *s, size_t n);

/* ---- values (config_value.c) -------------------------------------------------------------------- */

/* Parse text as a value of o's type, checking range and choices. A STRING is strdup'd into v->s. The
 * message names no key (callers prefix it). */
int pgd_cfg_parse_value(const pgd_cfg_opt *o, const char *text, pgd_cfg_value *v, pgd_err *err);

/* Free what pgd_cfg_parse_value allocated in v (a STRING). */
void pgd_cfg_drop_value(const pgd_cfg_opt *o, pgd_cfg_value *v);

/* Store v into o's field of cfg, taking ownership of a string and freeing the old one. */
void pgd_cfg_store_value(const pgd_cfg_opt *o, void *cfg, pgd_cfg_value v);

/* The current value of o's field (a STRING is borrowed, not copied). */
pgd_cfg_value pgd_cfg_fetch_value(const pgd_cfg_opt *o, const void *cfg);

/* 1 for a true word (true|1|yes|on, any case), 0 for a false one, -1 for anything else. */
int pgd_cfg_bool_word(const char *text);

/* The idx-th choice of "a|b|c" as a pointer and length (the last one when idx is too large). */
const char *pgd_cfg_choice_at(const char *choices, int idx, size_t *len);

/* Shortest of %.15g..%.17g that reads back to exactly d. */
void pgd_cfg_format_double(char *buf, size_t cap, double d);

/* For an INT or FLOAT option with a range in force, write "min..max" into buf and return 1; else 0. */
int pgd_cfg_range_text(const pgd_cfg_opt *o, char *buf, size_t cap);

/* ---- files and writing (config_file.c, config_write.c) ----------------------------------------- */

/* Load a config file over cfg (all or nothing); seen (one flag per option, may be NULL) gets a 1 for
 * every key the file sets. */
int pgd_cfg_load_seen(const pgd_cfg_opt *opts, void *cfg, const char *path, unsigned char *seen, pgd_err *err);

/* Write s as a config value, quoted and escaped when it would not read back as it is. */
void pgd_cfg_put_string(FILE *f, const char *s);

/* Write s (may be NULL) on one line, control characters made blanks. */
void pgd_cfg_put_line(FILE *f, const char *s);

#endif
