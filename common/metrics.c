/* metrics.c: confusion matrix, accuracy and quadratic weighted kappa. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int pgd_confusion_init(pgd_confusion *c, int k, pgd_err *err)
{
    memset(c, 0, sizeof *c);
    if (k < 1 || k > 1024)
        return pgd_fail(err, PGD_EINVAL, "confusion matrix: %d classes, allowed 1..1024", k);
    c->counts = calloc((size_t)k * (size_t)k, sizeof *c->counts);
    if (!c->counts)
        return pgd_fail(err, PGD_ENOMEM, "confusion matrix: out of memory for %d classes", k);
    c->k = k;
    return 0;
}

void pgd_confusion_free(pgd_confusion *c)
{
    free(c->counts);
    memset(c, 0, sizeof *c);
}

void pgd_confusion_reset(pgd_confusion *c)
{
    memset(c->counts, 0, (size_t)c->k * (size_t)c->k * sizeof *c->counts);
    c->total = 0;
}

int pgd_confusion_add(pgd_confusion *c, int truth, int pred, pgd_err *err)
{
    if (truth < 0 || truth >= c->k || pred < 0 || pred >= c->k)
        return pgd_fail(err, PGD_EINVAL, "confusion matrix: class pair (true %d, predicted %d) outside 0..%d",
                        truth, pred, c->k - 1);
    c->counts[(size_t)truth * (size_t)c->k + (size_t)pred]++;
    c->total++;
    return 0;
}

double pgd_metric_accuracy(const pgd_confusion *c)
{
    if (c->total == 0)
        return NAN;
    uint64_t hit = 0;
    for (int i = 0; i < c->k; i++)
        hit += c->counts[(size_t)i * (size_t)c->k + (size_t)i];
    return (double)hit / (double)c->total;
}

double pgd_metric_qwk(const pgd_confusion *c)
{
    int k = c->k;
    if (k < 2 || c->total == 0)
        return NAN;
    double *row = calloc((size_t)k * 2, sizeof *row), *col = row ? row + k : NULL;
    if (!row)
        return NAN;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double v = (double)c->counts[(size_t)i * (size_t)k + (size_t)j];
            row[i] += v;
            col[j] += v;
        }
    double n = (double)c->total, observed = 0, expected = 0, norm = (double)(k - 1) * (k - 1);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double w = (double)(i - j) * (i - j) / norm;
            observed += w * (double)c->counts[(size_t)i * (size_t)k + (size_t)j] / n;
            expected += w * (row[i] / n) * (col[j] / n);
        }
    free(row);
    return expected > 0 ? 1.0 - observed / expected : NAN;
}

static void put_metric(FILE *f, const char *name, double v, int json)
{
    if (json)
        isnan(v) ? fprintf(f, ",\"%s\":null", name) : fprintf(f, ",\"%s\":%.6f", name, v);
    else
        isnan(v) ? fprintf(f, "%s n/a", name) : fprintf(f, "%s %.4f", name, v);
}

void pgd_confusion_print(FILE *f, const pgd_confusion *c)
{
    fprintf(f, "true\\pred");
    for (int j = 0; j < c->k; j++)
        fprintf(f, " %7d", j);
    fputc('\n', f);
    for (int i = 0; i < c->k; i++) {
        fprintf(f, "%9d", i);
        for (int j = 0; j < c->k; j++)
            fprintf(f, " %7llu", (unsigned long long)c->counts[(size_t)i * (size_t)c->k + (size_t)j]);
        fputc('\n', f);
    }
    fprintf(f, "n %llu, ", (unsigned long long)c->total);
    put_metric(f, "accuracy", pgd_metric_accuracy(c), 0);
    fprintf(f, ", ");
    put_metric(f, "qwk", pgd_metric_qwk(c), 0);
    fputc('\n', f);
}

void pgd_confusion_json(FILE *f, const pgd_confusion *c)
{
    fprintf(f, "{\"k\":%d,\"counts\":[", c->k);
    for (int i = 0; i < c->k; i++) {
        fprintf(f, "%s[", i ? "," : "");
        for (int j = 0; j < c->k; j++)
            fprintf(f, "%s%llu", j ? "," : "", (unsigned long long)c->counts[(size_t)i * (size_t)c->k + (size_t)j]);
        fputc(']', f);
    }
    fputc(']', f);
    put_metric(f, "accuracy", pgd_metric_accuracy(c), 1);
    put_metric(f, "qwk", pgd_metric_qwk(c), 1);
    fputc('}', f);
}
