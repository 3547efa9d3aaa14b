/* file.c: reading a whole small file into memory. */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int pgd_file_read(const char *path, size_t max, char **out, size_t *len, pgd_err *err)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "open %s", path);
    size_t cap = 4096, n = 0;
    char *buf = NULL;
    for (;;) {
        char *bigger = realloc(buf, cap + 1);
        if (!bigger) {
            pgd_fail(err, PGD_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        buf = bigger;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap > max) {
            pgd_fail(err, PGD_EFORMAT, "%s: larger than %zu bytes", path, max);
            goto fail;
        }
        cap *= 2;
    }
    if (ferror(f)) {
        pgd_fail_errno(err, PGD_EIO, "read %s", path);
        goto fail;
    }
    if (n > max) {
        pgd_fail(err, PGD_EFORMAT, "%s: larger than %zu bytes", path, max);
        goto fail;
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}
