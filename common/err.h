/* err.h: error values that carry a code, a message and the file:line where they were raised. */
#ifndef PGD_ERR_H
#define PGD_ERR_H

#include <stddef.h>

/* Process exit codes, the same for every pgd binary (documented in README.md). */
enum {
    PGD_EXIT_OK = 0,    /* success */
    PGD_EXIT_FAIL = 1,  /* the work failed: I/O, bad data, a dead peer */
    PGD_EXIT_USAGE = 2, /* bad command line or config: nothing was done */
};

typedef enum pgd_code {
    PGD_OK = 0,
    PGD_EINVAL,   /* bad argument, option or config value */
    PGD_ENOMEM,   /* allocation failed */
    PGD_EIO,      /* a system call failed (errno is kept) */
    PGD_EFORMAT,  /* malformed input: file, message or line */
    PGD_ENOENT,   /* no such file, segment or key */
    PGD_EEXIST,   /* already exists */
    PGD_ENOSPC,   /* no space left (disk, /dev/shm) */
    PGD_EBUSY,    /* held by someone else right now; try again */
    PGD_ESTALE,   /* left behind by a process that is gone */
    PGD_ECORRUPT, /* data failed its integrity check */
    PGD_EEMPTY,   /* nothing there yet */
    PGD_ECODE_COUNT
} pgd_code;

/* An error slot. Zero-initialise it (PGD_ERR_INIT); the first error set is kept and later ones are
 * ignored, so a cleanup path never hides the root cause. Functions that take a pgd_err * accept NULL. */
typedef struct pgd_err {
    pgd_code code;
    int sys_errno;    /* errno at the failure, 0 if none */
    const char *file; /* where it was raised */
    int line;
    char msg[512];
} pgd_err;

#define PGD_ERR_INIT {0}

/* Record an error (when none is recorded yet) and return -1, so that `return pgd_fail(...)` reads well. */
#define pgd_fail(err, code, ...) pgd_err_set((err), (code), 0, __FILE__, __LINE__, __VA_ARGS__)
/* The same, appending ": strerror(errno)" and keeping errno. */
#define pgd_fail_errno(err, code, ...) pgd_err_set((err), (code), 1, __FILE__, __LINE__, __VA_ARGS__)

int pgd_err_set(pgd_err *err, pgd_code code, int with_errno, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Prefix the recorded message with context ("manifest train.csv: " + msg). No-op when no error. */
void pgd_err_prefix(pgd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void pgd_err_clear(pgd_err *err);
int pgd_err_is_set(const pgd_err *err);

/* "EINVAL", "EIO", ...: the code's short name. */
const char *pgd_code_name(pgd_code code);

/* Map an errno value to the closest pgd_code (ENOENT -> PGD_ENOENT, ENOSPC -> PGD_ENOSPC, ...). */
pgd_code pgd_code_from_errno(int e);

#endif
