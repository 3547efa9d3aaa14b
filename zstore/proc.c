/* proc.c: is a process alive, and is it the same process (pid plus start time from /proc/PID/stat)? */
#include "zs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read /proc/PID/stat: the state letter (field 3) and the start time (field 22). 0, or -1 when the
 * process does not exist (or /proc cannot tell). The command name (field 2) may hold spaces and ')', so
 * parsing starts after the last ')'. */
static int proc_stat(pid_t pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0)
        return -1;
    buf[got] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2; /* field 3 */
    *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || end == p)
        return -1;
    *start = v;
    return 0;
}

int pgd_zstore_pid_start(pid_t pid, uint64_t *start)
{
    char state;
    return proc_stat(pid, &state, start);
}

int pgd_zstore_pid_alive(pid_t pid, uint64_t start)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    char state;
    uint64_t now_start;
    if (proc_stat(pid, &state, &now_start) != 0) {
        /* No /proc entry: gone, unless /proc itself is missing; then kill() said it exists. */
        return access("/proc/self/stat", R_OK) != 0;
    }
    if (state == 'Z' || state == 'X')
        return 0;
    return start == 0 || now_start == start;
}
