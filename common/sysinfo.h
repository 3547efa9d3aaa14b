/* sysinfo.h: a description of the machine, for benchmark tables and run logs. */
#ifndef PGD_SYSINFO_H
#define PGD_SYSINFO_H

#include <stddef.h>

/* The CPU's model name from /proc/cpuinfo ("AMD EPYC"), or "unknown CPU", into buf (always NUL-terminated). */
void pgd_sysinfo_cpu_model(char *buf, size_t cap);

#endif
