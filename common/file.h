/* file.h: whole-file helpers shared by the readers of small text files (configs, manifests). */
#ifndef PGD_FILE_H
#define PGD_FILE_H

#include <stddef.h>

#include "err.h"

/* Read the whole file at path into a malloc'd buffer with a NUL after the last byte (*len does not count
 * it; the caller frees *out). A file larger than max bytes is refused with PGD_EFORMAT
 * ("PATH: larger than MAX bytes"); open and read failures carry errno's message. */
int pgd_file_read(const char *path, size_t max, char **out, size_t *len, pgd_err *err);

#endif
