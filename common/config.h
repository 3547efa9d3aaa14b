/* config.h: schema-driven settings for every pgd binary: defaults < config files < command line. */
#ifndef PGD_CONFIG_H
#define PGD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "err.h"

/* The C type behind each option type (the field that `offset` points at):
 *   INT    int64_t          FLOAT  double (finite)         BOOL  int (0 or 1)
 *   STRING char * (malloc'd by this module, freed by pgd_cfg_free; NULL = not set)
 *   ENUM   int (index into the option's choices) */
typedef enum pgd_cfg_type {
    PGD_CFG_INT,
    PGD_CFG_FLOAT,
    PGD_CFG_BOOL,
    PGD_CFG_STRING,
    PGD_CFG_ENUM,
} pgd_cfg_type;

/* Option flags. */
enum {
    PGD_CFG_REQUIRED = 1u << 0, /* must be set by a config file or the command line (def is then ignored) */
};

/* One option of a binary's table. A table is an array ending with an entry whose key is NULL ({NULL}).
 * Keys are [A-Za-z0-9_.]+ ("batch_size", "zstore.dtype"); "config", "save_config" and "help" are taken by
 * the command line. */
typedef struct pgd_cfg_opt {
    const char *key;
    pgd_cfg_type type;
    size_t offset;        /* offsetof(your struct, field); the field's C type is given above */
    const char *def;      /* default as text; NULL only for STRING (default NULL) or a REQUIRED option */
    double min, max;      /* INT/FLOAT inclusive range; min > max: unbounded; +-INFINITY: one-sided */
    const char *choices;  /* ENUM: "f32|f16|bf16" */
    const char *help;     /* one line */
    unsigned flags;       /* PGD_CFG_REQUIRED, or 0 */
} pgd_cfg_opt;

/* What pgd_cfg_parse_args found besides option values. */
typedef struct pgd_cfg_args {
    int help;                /* --help or -h was given: print pgd_cfg_usage and exit 0 */
    const char *saved_to;    /* --save-config FILE: the resolved config was written there (else NULL) */
    const char **positional; /* non-option words in order (pointers into argv; the array is malloc'd) */
    int npositional;
} pgd_cfg_args;

/* Check the table (unique valid keys, valid defaults and choices) and set every field to its default.
 * cfg must be zero-initialised or hold values set by this module: string fields are freed before they
 * are replaced. Errors here are programming errors in the table ("option table: ..."). */
int pgd_cfg_defaults(const pgd_cfg_opt *opts, void *cfg, pgd_err *err);

/* Set one option from text (what a file line or a command-line word holds). On error (unknown key,
 * value that does not parse or is out of range) the field keeps its value and the message names the key:
 * "'slots': '12x' is not an integer", "unknown key 'batchsize' (did you mean 'batch_size'?)". */
int pgd_cfg_set(const pgd_cfg_opt *opts, void *cfg, const char *key, const char *value, pgd_err *err);

/* Load a config file over the current values. All or nothing: on any error cfg is left unchanged.
 * Errors name the file and line: "run.conf line 9: unterminated quote". A key set twice in one file is
 * an error. */
int pgd_cfg_load(const pgd_cfg_opt *opts, void *cfg, const char *path, pgd_err *err);

/* The same for text already in memory (len bytes, may contain no NUL); name is used in messages. */
int pgd_cfg_load_text(const pgd_cfg_opt *opts, void *cfg, const char *name, const char *text, size_t len,
                      pgd_err *err);

/* Write every option as a loadable config file: "# help (type, range)" then "key = value". Floats are
 * written with the fewest digits that read back to the same double, strings are quoted when needed, and
 * a NULL string is written as a comment (it stays at its default, NULL, when loaded). Loading the output
 * over the defaults gives back identical values. */
int pgd_cfg_write(const pgd_cfg_opt *opts, const void *cfg, FILE *f, pgd_err *err);

/* pgd_cfg_write into a new file at path (replaced when it exists). */
int pgd_cfg_save(const pgd_cfg_opt *opts, const void *cfg, const char *path, pgd_err *err);

/* Resolve a binary's settings from its command line (argv[0] is skipped):
 *   1. defaults (pgd_cfg_defaults);
 *   2. every --config FILE, wherever it stands, in the order given;
 *   3. --key value / --key=value, left to right (the last one wins); '-' may replace '_' in keys.
 *      BOOL: --flag alone, or followed by a word starting with "--" or by a word that is not a boolean,
 *      means true; --flag=no or --flag no sets it false.
 * Words that are not options are returned as positionals, and so is everything after "--". With --help
 * (or -h) only the defaults are applied, out->help is set and 0 is returned, whatever else is wrong. A
 * REQUIRED option not set by a file or the command line is an error. --save-config FILE writes the
 * resolved config to FILE once everything else succeeded and sets out->saved_to.
 * Free out with pgd_cfg_args_free (also after an error), and cfg with pgd_cfg_free. */
int pgd_cfg_parse_args(const pgd_cfg_opt *opts, void *cfg, int argc, char **argv, pgd_cfg_args *out,
                       pgd_err *err);

void pgd_cfg_args_free(pgd_cfg_args *args);

/* Print usage_line ("pgd-zstore [options] create NAME"), then every option with its type, default,
 * range or choices and help, then the built-in --config, --save-config and --help. */
void pgd_cfg_usage(const pgd_cfg_opt *opts, FILE *f, const char *usage_line);

/* Free the string fields (set to NULL). Other fields are left as they are. */
void pgd_cfg_free(const pgd_cfg_opt *opts, void *cfg);

/* The option with this key ('-' and '_' compare equal), or NULL. */
const pgd_cfg_opt *pgd_cfg_find(const pgd_cfg_opt *opts, const char *key);

/* "int", "float", "bool", "string", "enum". */
const char *pgd_cfg_type_name(pgd_cfg_type type);

#endif
