/* progress.c: progress bars and progress lines with rate and ETA. */
#include "progress.h"

#include <string.h>

#include "clock.h"

#define BAR_WIDTH 24
#define BAR_REDRAW_S 0.2

void pgd_progress_start(pgd_progress *p, FILE *f, int mode, double every_s, const char *label, const char *unit,
                        int64_t total)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->mode = f ? mode : PGD_PROGRESS_OFF;
    p->every_s = every_s > 0 ? every_s : 30;
    p->t0 = p->last = pgd_clock_s();
    p->total = total;
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
}

static void hms(char *buf, size_t cap, double s)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

void pgd_progress_format(char *buf, size_t cap, const char *label, const char *unit, int64_t done, int64_t total,
                         double elapsed, int bar_width, const char *extra)
{
    size_t n = (size_t)snprintf(buf, cap, "%s", label);
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    if (total > 0 && bar_width > 0 && n < cap) {
        char bar[128];
        int w = bar_width < (int)sizeof bar ? bar_width : (int)sizeof bar - 1;
        int fill = (int)((double)w * (double)(done < total ? done : total) / (double)total);
        for (int i = 0; i < w; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[w] = '\0';
        n += (size_t)snprintf(buf + n, cap - n, " [%s]", bar);
    }
    if (n >= cap)
        return;
    if (total > 0) {
        char eta[32];
        hms(eta, sizeof eta, rate > 0 && done < total ? (double)(total - done) / rate : 0);
        n += (size_t)snprintf(buf + n, cap - n, " %lld/%lld %s %d%% %.2f %s/s ETA %s", (long long)done,
                              (long long)total, unit, (int)(100.0 * (double)done / (double)total), rate, unit, eta);
    } else {
        n += (size_t)snprintf(buf + n, cap - n, " %lld %s %.2f %s/s", (long long)done, unit, rate, unit);
    }
    if (extra && *extra && n < cap)
        snprintf(buf + n, cap - n, " %s", extra);
}

static void emit(pgd_progress *p, int64_t done, const char *extra, double now, int final)
{
    char line[512];
    pgd_progress_format(line, sizeof line, p->label, p->unit, done, p->total, now - p->t0,
                        p->mode == PGD_PROGRESS_BAR ? BAR_WIDTH : 0, extra);
    if (p->mode == PGD_PROGRESS_BAR) {
        fprintf(p->f, "\r%s\033[K%s", line, final ? "\n" : "");
        p->drawn = !final;
    } else {
        fprintf(p->f, "%s\n", line);
    }
    fflush(p->f);
    p->last = now;
}

void pgd_progress_update(pgd_progress *p, int64_t done, const char *extra)
{
    if (p->mode == PGD_PROGRESS_OFF)
        return;
    double now = pgd_clock_s();
    if (now - p->last >= (p->mode == PGD_PROGRESS_BAR ? BAR_REDRAW_S : p->every_s) ||
        (p->mode == PGD_PROGRESS_BAR && !p->drawn))
        emit(p, done, extra, now, 0);
}

void pgd_progress_finish(pgd_progress *p, int64_t done, const char *extra)
{
    if (p->mode == PGD_PROGRESS_OFF)
        return;
    emit(p, done, extra, pgd_clock_s(), 1);
    p->mode = PGD_PROGRESS_OFF;
}
