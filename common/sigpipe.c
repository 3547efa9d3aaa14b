/* sigpipe.c: SIGINT / SIGTERM handlers that wake a poll loop through a self-pipe (see sigpipe.h). */
#include "sigpipe.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_count;
static int g_pipe[2] = {-1, -1};
static struct sigaction g_old_int, g_old_term;
static int g_installed;
static char g_msg[64];
static size_t g_msg_len;

static void on_signal(int sig)
{
    int saved = errno;
    g_count++;
    if (g_count >= 2) {
        ssize_t r = write(STDERR_FILENO, g_msg, g_msg_len);
        (void)r;
        _exit(PGD_EXIT_FAIL);
    }
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(g_pipe[1], &b, 1);
    (void)r; /* a full pipe already wakes the loop */
    errno = saved;
}

int pgd_sigpipe_install(const char *role, int *read_fd, pgd_err *err)
{
    if (g_installed)
        return pgd_fail(err, PGD_EBUSY, "signal handlers already installed (one poll loop per process)");
    int n = snprintf(g_msg, sizeof g_msg, "%.31s: second signal, exiting now\n", role ? role : "pgd");
    g_msg_len = n > 0 && (size_t)n < sizeof g_msg ? (size_t)n : 0;
    if (pipe2(g_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return pgd_fail_errno(err, PGD_EIO, "pipe2 for signals");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = SA_RESTART;
    g_count = 0;
    if (sigaction(SIGINT, &sa, &g_old_int) != 0) {
        pgd_fail_errno(err, PGD_EIO, "sigaction SIGINT");
        goto fail;
    }
    if (sigaction(SIGTERM, &sa, &g_old_term) != 0) {
        pgd_fail_errno(err, PGD_EIO, "sigaction SIGTERM");
        sigaction(SIGINT, &g_old_int, NULL);
        goto fail;
    }
    g_installed = 1;
    *read_fd = g_pipe[0];
    return 0;
fail:
    close(g_pipe[0]);
    close(g_pipe[1]);
    g_pipe[0] = g_pipe[1] = -1;
    return -1;
}

int pgd_sigpipe_take(int read_fd)
{
    unsigned char buf[16];
    while (read(read_fd, buf, sizeof buf) > 0)
        ;
    return (int)g_count;
}

void pgd_sigpipe_restore(void)
{
    if (!g_installed)
        return;
    sigaction(SIGINT, &g_old_int, NULL);
    sigaction(SIGTERM, &g_old_term, NULL);
    close(g_pipe[0]);
    close(g_pipe[1]);
    g_pipe[0] = g_pipe[1] = -1;
    g_installed = 0;
}
