/* shm.h: POSIX shared-memory segments with unique per-process names, and process start times for staleness. */
#ifndef PGD_SHM_H
#define PGD_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* Create a new segment "/PREFIX<pid>.<n>" (the first n free in this process; O_EXCL, mode exactly 0600),
 * sized to `size` bytes (zero-filled) and mapped read-write at *base. The name (with its leading '/') goes
 * to name[cap]. On failure nothing is left behind; the message names the segment ("shm_open /pgd-x.1.0: ..."). */
int pgd_shm_create(const char *prefix, uint64_t size, char *name, size_t cap, void **base, pgd_err *err);

/* The start time of process pid (clock ticks since boot, /proc/PID/stat field 22), or 0 when unknown. With
 * the pid it tells a live creator from a new process that reuses its pid. */
uint64_t pgd_proc_start(pid_t pid);

#endif
