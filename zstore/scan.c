/* scan.c: finding pgd segments in /dev/shm, telling live ones from stale ones, reclaiming stale ones. */
#include "zs_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZS_SHM_DIR "/dev/shm"
#define ZS_PREFIX "pgd."

int pgd_zstore_probe(const char *name, pgd_zstore_info *info, pgd_err *err)
{
    pgd_zstore *z = pgd_zstore_open(name, 0, err);
    if (!z)
        return -1;
    int rc = pgd_zstore_get_info(z, info, err);
    pgd_zstore_close(&z);
    return rc;
}

int pgd_zstore_reclaim(const char *name, int *removed, pgd_err *err)
{
    pgd_zstore_info info;
    if (removed)
        *removed = 0;
    if (pgd_zstore_probe(name, &info, err) != 0)
        return -1;
    if (info.alive)
        return 0;
    if (pgd_zstore_remove(name, err) != 0)
        return -1;
    if (removed)
        *removed = 1;
    return 0;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const pgd_zstore_entry *)a)->info.name, ((const pgd_zstore_entry *)b)->info.name);
}

/* Append one entry for /dev/shm/pgd.NAME, probing its header. */
static int list_add(pgd_zstore_entry **v, size_t *n, size_t *cap, const char *name, pgd_err *err)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        pgd_zstore_entry *nv = realloc(*v, ncap * sizeof *nv);
        if (!nv)
            return pgd_fail(err, PGD_ENOMEM, "zstore: out of memory listing %s", ZS_SHM_DIR);
        *v = nv;
        *cap = ncap;
    }
    pgd_zstore_entry *e = &(*v)[(*n)++];
    memset(e, 0, sizeof *e);
    pgd_err perr = PGD_ERR_INIT;
    if (pgd_zstore_probe(name, &e->info, &perr) != 0) {
        e->code = perr.code;
        snprintf(e->error, sizeof e->error, "%s", perr.msg);
    }
    snprintf(e->info.name, sizeof e->info.name, "%s", name);
    return 0;
}

int pgd_zstore_list(pgd_zstore_entry **entries, size_t *count, pgd_err *err)
{
    pgd_zstore_entry *v = NULL;
    size_t n = 0, cap = 0;
    *entries = NULL;
    *count = 0;
    DIR *d = opendir(ZS_SHM_DIR);
    if (!d)
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore: opendir %s", ZS_SHM_DIR);
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name + strlen(ZS_PREFIX);
        if (strncmp(de->d_name, ZS_PREFIX, strlen(ZS_PREFIX)) != 0 || pgd_zstore_name_check(name, NULL) != 0)
            continue;
        if (list_add(&v, &n, &cap, name, err) != 0)
            goto fail;
        errno = 0;
    }
    if (errno != 0) {
        pgd_fail_errno(err, PGD_EIO, "zstore: reading %s", ZS_SHM_DIR);
        goto fail;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof *v, entry_cmp);
    *entries = v;
    *count = n;
    return 0;
fail:
    closedir(d);
    free(v);
    return -1;
}
