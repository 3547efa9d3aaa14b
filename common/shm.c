/* shm.c: POSIX shared-memory segments with unique per-process names, stale ones reclaimed, process liveness. */
#include "shm.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int pgd_shm_create(const char *prefix, uint64_t size, char *name, size_t cap, void **base, pgd_err *err)
{
    static unsigned serial;
    int fd = -1;
    *base = NULL;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        if ((size_t)snprintf(name, cap, "/%s%d.%u", prefix, (int)getpid(), serial++) >= cap)
            return pgd_fail(err, PGD_EINVAL, "shm name /%s%d.N is too long", prefix, (int)getpid());
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return pgd_fail_errno(err, PGD_EIO, "shm_open %s", name);
    }
    if (fd < 0)
        return pgd_fail(err, PGD_EIO, "no free shm name /%s%d.N", prefix, (int)getpid());
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)size) != 0) {
        pgd_fail_errno(err, PGD_EIO, "size %s to %llu bytes", name, (unsigned long long)size);
        goto fail;
    }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        pgd_fail_errno(err, PGD_EIO, "mmap %s (%llu bytes)", name, (unsigned long long)size);
        goto fail;
    }
    close(fd);
    *base = m;
    return 0;
fail:
    close(fd);
    shm_unlink(name);
    return -1;
}

unsigned pgd_shm_reclaim(const char *prefix, int (*stale)(const char *name))
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return 0;
    unsigned removed = 0;
    size_t plen = strlen(prefix);
    for (struct dirent *e; (e = readdir(d));) {
        char name[NAME_MAX + 2], path[NAME_MAX + 16];
        struct stat st;
        if (strncmp(e->d_name, prefix, plen) != 0)
            continue;
        snprintf(name, sizeof name, "/%s", e->d_name);
        snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
        if (stat(path, &st) == 0 && st.st_uid == getuid() && stale(name) == 1 && shm_unlink(name) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

/* The command name (field 2) may hold spaces and ')', so parsing starts after the last ')'. */
int pgd_proc_stat(pid_t pid, char *state, uint64_t *start)
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

uint64_t pgd_proc_start(pid_t pid)
{
    char state;
    uint64_t start;
    return pgd_proc_stat(pid, &state, &start) == 0 ? start : 0;
}

int pgd_proc_alive(pid_t pid, uint64_t start)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    char state;
    uint64_t now_start;
    if (pgd_proc_stat(pid, &state, &now_start) != 0) /* no /proc entry: gone, unless /proc itself is missing */
        return access("/proc/self/stat", R_OK) != 0;
    if (state == 'Z' || state == 'X')
        return 0;
    return start == 0 || now_start == start;
}
