/* clock.h: the monotonic clock, for timeouts, heartbeats and throughput figures. */
#ifndef PGD_CLOCK_H
#define PGD_CLOCK_H

#include <stdint.h>

/* Seconds / milliseconds on CLOCK_MONOTONIC: only differences mean anything. */
double pgd_clock_s(void);
int64_t pgd_clock_ms(void);

#endif
