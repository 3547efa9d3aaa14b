/* shm.h: POSIX shared-memory segments with unique per-process names, stale ones reclaimed, process liveness. */
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

/* Unlink this user's shared-memory objects /PREFIX* for which stale(name) (name with its leading '/') returns
 * 1. Returns how many were removed. */
unsigned pgd_shm_reclaim(const char *prefix, int (*stale)(const char *name));

/* Read /proc/PID/stat: the state letter (field 3) and the start time (field 22, clock ticks since boot).
 * 0, or -1 when the process does not exist (or /proc cannot tell). */
int pgd_proc_stat(pid_t pid, char *state, uint64_t *start);

/* The start time of process pid, or 0 when unknown. With the pid it tells a live process from a new one that
 * reuses its pid. */
uint64_t pgd_proc_start(pid_t pid);

/* 1 when pid runs and (when start != 0) its start time is start; 0 when it is gone, a zombie, or reused. */
int pgd_proc_alive(pid_t pid, uint64_t start);

#endif
