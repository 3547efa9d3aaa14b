/* metrics.h: classification metrics in double precision: confusion matrix, accuracy, quadratic weighted kappa. */
#ifndef PGD_METRICS_H
#define PGD_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* k x k counts; row = true class, column = predicted class. */
typedef struct pgd_confusion {
    int k;
    uint64_t *counts;
    uint64_t total;
} pgd_confusion;

int pgd_confusion_init(pgd_confusion *c, int k, pgd_err *err); /* k in 1..1024 */
void pgd_confusion_free(pgd_confusion *c);
void pgd_confusion_reset(pgd_confusion *c);

/* Count one prediction. Out-of-range classes are refused (-1, err names the value). */
int pgd_confusion_add(pgd_confusion *c, int truth, int pred, pgd_err *err);

/* Fraction correct; NaN when nothing was counted. */
double pgd_metric_accuracy(const pgd_confusion *c);

/* Cohen's kappa with quadratic weights w_ij = (i - j)^2 / (k - 1)^2:
 *   1 - sum(w * O) / sum(w * E), O the observed joint distribution, E the outer product of its marginals.
 * Returns 1 for perfect agreement, 0 for chance level, negative below it. It is undefined (0 / 0) when the
 * expected disagreement is zero, i.e. every true and predicted label is the same single class, or k < 2, or
 * nothing was counted: then it returns NaN (printed as "n/a" by pgd_confusion_print). */
double pgd_metric_qwk(const pgd_confusion *c);

/* The matrix as an aligned table with accuracy and QWK. */
void pgd_confusion_print(FILE *f, const pgd_confusion *c);

/* The matrix as JSON: {"k":K,"counts":[[...],...],"accuracy":A,"qwk":Q} (null for NaN), no newline. */
void pgd_confusion_json(FILE *f, const pgd_confusion *c);

#endif
