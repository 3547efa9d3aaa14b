/* err.c: recording errors with their source location, first error wins. */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int pgd_err_set(pgd_err *err, pgd_code code, int with_errno, const char *file, int line, const char *fmt, ...)
{
    int saved = errno;
    if (!err || err->code != PGD_OK)
        return -1;
    err->code = code == PGD_OK ? PGD_EINVAL : code;
    err->sys_errno = with_errno ? saved : 0;
    err->file = file;
    err->line = line;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (with_errno && n >= 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(saved));
    errno = saved;
    return -1;
}

void pgd_err_prefix(pgd_err *err, const char *fmt, ...)
{
    if (!err || err->code == PGD_OK)
        return;
    char head[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    if (snprintf(err->msg, sizeof err->msg, "%s%s", head, old) >= (int)sizeof err->msg)
        memcpy(err->msg + sizeof err->msg - 4, "...", 4); /* mark the truncation */
}

void pgd_err_clear(pgd_err *err)
{
    if (err)
        memset(err, 0, sizeof *err);
}

int pgd_err_is_set(const pgd_err *err)
{
    return err && err->code != PGD_OK;
}

const char *pgd_code_name(pgd_code code)
{
    static const char *const names[PGD_ECODE_COUNT] = {
        [PGD_OK] = "OK",           [PGD_EINVAL] = "EINVAL", [PGD_ENOMEM] = "ENOMEM",
        [PGD_EIO] = "EIO",         [PGD_EFORMAT] = "EFORMAT", [PGD_ENOENT] = "ENOENT",
        [PGD_EEXIST] = "EEXIST",   [PGD_ENOSPC] = "ENOSPC", [PGD_EBUSY] = "EBUSY",
        [PGD_ESTALE] = "ESTALE",   [PGD_ECORRUPT] = "ECORRUPT", [PGD_EEMPTY] = "EEMPTY",
    };
    return (unsigned)code < PGD_ECODE_COUNT ? names[code] : "E?";
}

pgd_code pgd_code_from_errno(int e)
{
    switch (e) {
    case ENOENT: return PGD_ENOENT;
    case EEXIST: return PGD_EEXIST;
    case ENOSPC: case EFBIG: case EDQUOT: return PGD_ENOSPC;
    case ENOMEM: return PGD_ENOMEM;
    case EINVAL: return PGD_EINVAL;
    case EBUSY: case EAGAIN: return PGD_EBUSY;
    default: return PGD_EIO;
    }
}
