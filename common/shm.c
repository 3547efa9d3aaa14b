/* shm.c: POSIX shared-memory segments with unique per-process names, and process start times for staleness. */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
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

uint64_t pgd_proc_start(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces: fields 3.. follow its last ')' */
    unsigned long long start = 0;
    if (!p || sscanf(p + 1, " %*c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu",
                     &start) != 1)
        return 0;
    return start;
}
