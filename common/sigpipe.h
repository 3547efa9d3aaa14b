/* sigpipe.h: SIGINT / SIGTERM as a self-pipe for one poll loop per process; a second signal exits at once. */
#ifndef PGD_SIGPIPE_H
#define PGD_SIGPIPE_H

#include "err.h"

/* Install SIGINT and SIGTERM handlers. The first signal writes a byte to a non-blocking self-pipe whose read
 * end is returned in *read_fd (watch it with zmq_poll / poll); a second one writes "ROLE: second signal,
 * exiting now" to stderr and ends the process with _exit(PGD_EXIT_FAIL). role is copied (up to 31 bytes).
 * One installation per process at a time: a second call fails with PGD_EBUSY. */
int pgd_sigpipe_install(const char *role, int *read_fd, pgd_err *err);

/* Drain the pipe; returns how many signals arrived since install (0 when none). */
int pgd_sigpipe_take(int read_fd);

/* Restore the previous handlers and close the pipe. Safe when nothing is installed. */
void pgd_sigpipe_restore(void);

#endif
