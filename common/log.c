/* log.c: the log line writer. One line per call, written with a single fwrite so lines from
 * concurrent processes sharing stderr do not interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

static struct {
    char role[32];
    pgd_log_level level;
    int json;
    FILE *stream;
} g_log = {"pgd", PGD_LOG_INFO, 0, NULL};

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int pgd_log_level_parse(const char *s, pgd_log_level *out)
{
    for (int i = 0; i <= PGD_LOG_OFF; i++) {
        if (s && strcasecmp(s, level_names[i]) == 0) {
            *out = (pgd_log_level)i;
            return 0;
        }
    }
    return -1;
}

void pgd_log_init(const char *role, pgd_log_level level, int json)
{
    snprintf(g_log.role, sizeof g_log.role, "%s", role ? role : "pgd");
    g_log.level = level;
    g_log.json = json;
    const char *env = getenv("PGD_LOG_LEVEL");
    pgd_log_level parsed;
    if (env && pgd_log_level_parse(env, &parsed) == 0)
        g_log.level = parsed;
    env = getenv("PGD_LOG_JSON");
    if (env && *env)
        g_log.json = strcmp(env, "0") != 0;
}

void pgd_log_set_stream(FILE *f)
{
    g_log.stream = f;
}

pgd_log_level pgd_log_get_level(void)
{
    return g_log.level;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void log_write(pgd_log_level level, const char *file, int line, const char *msg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);

    char out[4096];
    int n;
    if (g_log.json) {
        char emsg[2048], erole[80], esrc[256], src[200];
        snprintf(src, sizeof src, "%s:%d", base_name(file), line);
        pgd_json_escape(emsg, sizeof emsg, msg);
        pgd_json_escape(erole, sizeof erole, g_log.role);
        pgd_json_escape(esrc, sizeof esrc, src);
        n = snprintf(out, sizeof out, "{\"ts\":\"%s\",\"level\":\"%s\",\"role\":%s,\"pid\":%d,\"msg\":%s,\"src\":%s}\n",
                     when, level_names[level], erole, (int)getpid(), emsg, esrc);
    } else {
        static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
        n = snprintf(out, sizeof out, "%s %s %s[%d] %s (%s:%d)\n", when, tags[level], g_log.role, (int)getpid(),
                     msg, base_name(file), line);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof out) {
        n = sizeof out - 1;
        out[n - 1] = '\n';
    }
    FILE *f = g_log.stream ? g_log.stream : stderr;
    fwrite(out, 1, (size_t)n, f);
    fflush(f);
}

void pgd_log_at(pgd_log_level level, const char *file, int line, const char *fmt, ...)
{
    if (level < g_log.level || level >= PGD_LOG_OFF)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_write(level, file, line, msg);
}

void pgd_log_err(const pgd_err *err)
{
    if (!err || err->code == PGD_OK || g_log.level > PGD_LOG_ERROR)
        return;
    char msg[700];
    snprintf(msg, sizeof msg, "%s [%s]", err->msg, pgd_code_name(err->code));
    log_write(PGD_LOG_ERROR, err->file ? err->file : "?", err->line, msg);
}
