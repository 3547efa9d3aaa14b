/* log.h: leveled log lines with role, pid and time, as text or JSON lines, to stderr. */
#ifndef PGD_LOG_H
#define PGD_LOG_H

#include <stdio.h>

#include "err.h"

typedef enum pgd_log_level {
    PGD_LOG_DEBUG = 0,
    PGD_LOG_INFO,
    PGD_LOG_WARN,
    PGD_LOG_ERROR,
    PGD_LOG_OFF,
} pgd_log_level;

/* Set the role ("loader", "sampler", ...), the lowest level printed and the format. The environment
 * overrides: PGD_LOG_LEVEL=debug|info|warn|error|off, PGD_LOG_JSON=1. Safe to call again. */
void pgd_log_init(const char *role, pgd_log_level level, int json);

/* Send lines to f instead of stderr (tests); NULL restores stderr. */
void pgd_log_set_stream(FILE *f);

/* Parse "debug", "info", "warn", "error", "off". Returns -1 for anything else. */
int pgd_log_level_parse(const char *s, pgd_log_level *out);

pgd_log_level pgd_log_get_level(void);

/* One line: time (UTC, ms), level, role[pid], message, source file:line. Text:
 *   2026-11-25T22:15:03.123Z INFO  zstore[1234] created pgd.run1 (zstore.c:88)
 * JSON: {"ts":"...","level":"info","role":"zstore","pid":1234,"msg":"...","src":"zstore.c:88"} */
void pgd_log_at(pgd_log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Log a recorded error at ERROR level with the file:line where it was raised. */
void pgd_log_err(const pgd_err *err);

#define pgd_debug(...) pgd_log_at(PGD_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define pgd_info(...) pgd_log_at(PGD_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define pgd_warn(...) pgd_log_at(PGD_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define pgd_error(...) pgd_log_at(PGD_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
