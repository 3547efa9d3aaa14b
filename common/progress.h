/* progress.h: progress of long work: a redrawn bar on a terminal, a line every few seconds otherwise. */
#ifndef PGD_PROGRESS_H
#define PGD_PROGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { PGD_PROGRESS_OFF = 0, PGD_PROGRESS_BAR = 1, PGD_PROGRESS_LINES = 2 };

typedef struct pgd_progress {
    FILE *f;
    int mode;         /* PGD_PROGRESS_ */
    double every_s;   /* LINES: seconds between lines; BAR: redraws at most every 0.2 s */
    double t0, last;  /* pgd_clock_s at start and at the last output */
    int64_t total;    /* units of work; 0: unknown (no bar, no ETA) */
    int drawn;        /* a bar is on the screen (a newline ends it) */
    char label[64], unit[16];
} pgd_progress;

/* Start (t0 = now). label: "train epoch 3/10"; unit: "batches", "slides". */
void pgd_progress_start(pgd_progress *p, FILE *f, int mode, double every_s, const char *label, const char *unit,
                        int64_t total);

/* done units so far; extra (or NULL) is appended ("loss 1.234"). Writes when the mode's interval passed. */
void pgd_progress_update(pgd_progress *p, int64_t done, const char *extra);

/* The final state: a bar is redrawn complete and ended with a newline; LINES write one last line. */
void pgd_progress_finish(pgd_progress *p, int64_t done, const char *extra);

/* The text of one update into buf[cap] (no newline): "LABEL [#####-----] 12/40 slides 30% 2.5 slides/s
 * ETA 0:00:11 EXTRA" (bar_width 0: no bar). elapsed in seconds. */
void pgd_progress_format(char *buf, size_t cap, const char *label, const char *unit, int64_t done, int64_t total,
                         double elapsed, int bar_width, const char *extra);

#endif
