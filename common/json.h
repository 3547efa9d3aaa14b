/* json.h: writing JSON strings safely (escaping) for log lines, metrics and file headers. */
#ifndef PGD_JSON_H
#define PGD_JSON_H

#include <stdio.h>
#include <stddef.h>

/* Write s as a quoted JSON string to f (control characters, quotes and backslashes escaped;
 * bytes >= 0x80 are copied as they are). */
void pgd_json_fput_string(FILE *f, const char *s);

/* Escape s into buf (quoted, NUL-terminated). Returns the length the full string needs, without the NUL,
 * like snprintf; the output is truncated when that is >= cap. */
size_t pgd_json_escape(char *buf, size_t cap, const char *s);

#endif
