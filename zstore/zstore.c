/* zstore.c: zstore segments: layout, create, open with header checks, close, remove, info. */
#include "zs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "shm.h"

#define ZS_SHM_DIR "/dev/shm"

int pgd_zstore_sticky(pgd_zstore *z, pgd_err *err)
{
    if (err && err->code == PGD_OK && z)
        *err = z->err;
    return -1;
}

const char *pgd_zstore_dtype_name(pgd_zdtype dtype)
{
    switch (dtype) {
    case PGD_ZDTYPE_F32: return "f32";
    case PGD_ZDTYPE_F16: return "f16";
    case PGD_ZDTYPE_BF16: return "bf16";
    }
    return "?";
}

int pgd_zstore_dtype_parse(const char *s, pgd_zdtype *out)
{
    static const pgd_zdtype all[] = {PGD_ZDTYPE_F32, PGD_ZDTYPE_F16, PGD_ZDTYPE_BF16};
    for (size_t i = 0; s && i < sizeof all / sizeof *all; i++) {
        if (strcmp(s, pgd_zstore_dtype_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return -1;
}

size_t pgd_zstore_dtype_size(pgd_zdtype dtype)
{
    switch (dtype) {
    case PGD_ZDTYPE_F32: return 4;
    case PGD_ZDTYPE_F16:
    case PGD_ZDTYPE_BF16: return 2;
    }
    return 0;
}

const char *pgd_zstore_state_name(pgd_zslot_state state)
{
    static const char *const names[] = {"empty", "writing", "ready", "abandoned", "aborted"};
    return (unsigned)state < sizeof names / sizeof *names ? names[state] : "?";
}

int pgd_zstore_name_check(const char *name, pgd_err *err)
{
    if (!name || !*name)
        return pgd_fail(err, PGD_EINVAL, "zstore: empty segment name");
    size_t len = strlen(name);
    if (len > PGD_ZSTORE_NAME_MAX)
        return pgd_fail(err, PGD_EINVAL, "zstore: segment name is %zu characters, at most %d allowed", len,
                        PGD_ZSTORE_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return pgd_fail(err, PGD_EINVAL,
                            "zstore: segment name '%s': character %zu is not one of A-Z a-z 0-9 . _ -", name,
                            i + 1);
    }
    return 0;
}

static uint64_t round_page(uint64_t v, int *overflow)
{
    uint64_t r;
    if (__builtin_add_overflow(v, (uint64_t)ZS_PAGE - 1, &r))
        *overflow = 1;
    return r & ~(uint64_t)(ZS_PAGE - 1);
}

int pgd_zstore_layout(const char *name, uint32_t m, uint32_t n, uint32_t s, uint32_t slots, pgd_zdtype dtype,
                      zs_header *h, pgd_err *err)
{
    size_t esz = pgd_zstore_dtype_size(dtype);
    if (!esz)
        return pgd_fail(err, PGD_EINVAL, "zstore pgd.%s: dtype %d is not f32 (1), f16 (2) or bf16 (3)", name,
                        (int)dtype);
    if (!m || !n || !s)
        return pgd_fail(err, PGD_EINVAL, "zstore pgd.%s: shape %ux%ux%u: every dimension must be at least 1",
                        name, m, n, s);
    if (!slots)
        return pgd_fail(err, PGD_EINVAL, "zstore pgd.%s: slot count must be at least 1", name);
    int over = 0;
    uint64_t block = (uint64_t)m * n, stride, slots_bytes, total;
    over |= __builtin_mul_overflow(block, (uint64_t)s, &block);
    over |= __builtin_mul_overflow(block, (uint64_t)esz, &block);
    stride = round_page(block, &over);
    uint64_t data_off = round_page((uint64_t)ZS_HEADER_SIZE + (uint64_t)slots * ZS_SLOT_SIZE, &over);
    over |= __builtin_mul_overflow(stride, (uint64_t)slots, &slots_bytes);
    over |= __builtin_add_overflow(data_off, slots_bytes, &total);
    if (over || total > (uint64_t)INT64_MAX || total > (uint64_t)SIZE_MAX)
        return pgd_fail(err, PGD_EINVAL, "zstore pgd.%s: %ux%ux%u %s x %u slots is too large (size overflows)",
                        name, m, n, s, pgd_zstore_dtype_name(dtype), slots);
    memset(h, 0, sizeof *h);
    memcpy(h->magic, ZS_MAGIC, 8);
    h->version = PGD_ZSTORE_VERSION;
    h->header_size = ZS_HEADER_SIZE;
    h->m = m;
    h->n = n;
    h->s = s;
    h->dtype = (uint32_t)dtype;
    h->slots = slots;
    h->slot_entry_size = ZS_SLOT_SIZE;
    h->slot_table_offset = ZS_HEADER_SIZE;
    h->data_offset = data_off;
    h->block_bytes = block;
    h->slot_stride = stride;
    h->total_size = total;
    return 0;
}

static int check_field(const char *name, const char *field, uint64_t got, uint64_t want, pgd_err *err)
{
    if (got == want)
        return 0;
    return pgd_fail(err, PGD_EFORMAT, "zstore pgd.%s: header %s is %llu, expected %llu", name, field,
                    (unsigned long long)got, (unsigned long long)want);
}

int pgd_zstore_header_check(const char *name, const zs_header *h, uint64_t file_size, pgd_err *err)
{
    if (file_size < ZS_HEADER_SIZE)
        return pgd_fail(err, PGD_EFORMAT, "zstore pgd.%s: size %llu, smaller than the %u-byte header", name,
                        (unsigned long long)file_size, ZS_HEADER_SIZE);
    if (memcmp(h->magic, ZS_MAGIC, 8) != 0)
        return pgd_fail(err, PGD_EFORMAT, "zstore pgd.%s: bad magic (not a zstore segment)", name);
    if (h->version != PGD_ZSTORE_VERSION)
        return pgd_fail(err, PGD_EFORMAT, "zstore pgd.%s: version %u, this build reads %d", name, h->version,
                        PGD_ZSTORE_VERSION);
    uint32_t crc = pgd_crc32c(0, h, ZS_HEADER_CRC_LEN);
    if (crc != h->header_crc)
        return pgd_fail(err, PGD_EFORMAT, "zstore pgd.%s: header crc mismatch (stored 0x%08x, computed 0x%08x)",
                        name, h->header_crc, crc);
    zs_header want;
    pgd_err lerr = PGD_ERR_INIT;
    if (pgd_zstore_layout(name, h->m, h->n, h->s, h->slots, (pgd_zdtype)h->dtype, &want, &lerr) != 0)
        return pgd_fail(err, PGD_EFORMAT, "%s (in the header)", lerr.msg);
    if (check_field(name, "header size", h->header_size, want.header_size, err) ||
        check_field(name, "slot entry size", h->slot_entry_size, want.slot_entry_size, err) ||
        check_field(name, "slot table offset", h->slot_table_offset, want.slot_table_offset, err) ||
        check_field(name, "data offset", h->data_offset, want.data_offset, err) ||
        check_field(name, "block bytes", h->block_bytes, want.block_bytes, err) ||
        check_field(name, "slot stride", h->slot_stride, want.slot_stride, err) ||
        check_field(name, "total size", h->total_size, want.total_size, err))
        return -1;
    if (file_size != h->total_size)
        return pgd_fail(err, PGD_EFORMAT, "zstore pgd.%s: size %llu, header says %llu", name,
                        (unsigned long long)file_size, (unsigned long long)h->total_size);
    return 0;
}

static void shm_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "/pgd.%s", name);
}

/* A handle over a mapped, verified segment. Takes ownership of base on success. */
static pgd_zstore *handle_new(const char *name, const zs_header *h, void *base, int writable, pgd_err *err)
{
    pgd_zstore *z = calloc(1, sizeof *z);
    if (!z) {
        pgd_fail(err, PGD_ENOMEM, "zstore pgd.%s: out of memory for the handle", name);
        return NULL;
    }
    snprintf(z->name, sizeof z->name, "%s", name);
    z->writable = writable;
    z->base = base;
    z->map_size = (size_t)h->total_size;
    z->hdr = *h;
    z->table = (zs_slot *)(z->base + h->slot_table_offset);
    z->pid = getpid();
    if (!(z->start = pgd_proc_start(z->pid)))
        z->start = 0;
    z->timeout_ms = PGD_ZSTORE_DEFAULT_TIMEOUT_MS;
    if (writable) {
        z->held = calloc(h->slots, sizeof *z->held);
        if (!z->held) {
            free(z);
            pgd_fail(err, PGD_ENOMEM, "zstore pgd.%s: out of memory for %u slot records", name, h->slots);
            return NULL;
        }
    }
    return z;
}

static int fail_nospace(const char *name, const zs_header *h, pgd_err *err)
{
    struct statvfs vfs;
    unsigned long long size = 0, avail = 0;
    if (statvfs(ZS_SHM_DIR, &vfs) == 0) {
        size = (unsigned long long)vfs.f_blocks * vfs.f_frsize;
        avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
    }
    return pgd_fail(err, PGD_ENOSPC,
                    "zstore pgd.%s: %s cannot hold the segment: it needs %llu bytes (%.1f MiB: %u slots of "
                    "%llu bytes), %llu of %llu bytes are free",
                    name, ZS_SHM_DIR, (unsigned long long)h->total_size, (double)h->total_size / 1048576.0,
                    h->slots, (unsigned long long)h->slot_stride, avail, size);
}

/* Size the new segment's file and reserve its memory now, so that a full /dev/shm fails here and not
 * later as a SIGBUS on first touch. */
static int size_segment(int fd, const char *name, const zs_header *h, pgd_err *err)
{
    if (ftruncate(fd, (off_t)h->total_size) != 0) {
        if (errno == ENOSPC || errno == EFBIG)
            return fail_nospace(name, h, err);
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore pgd.%s: ftruncate to %llu bytes", name,
                              (unsigned long long)h->total_size);
    }
    int rc;
    do
        rc = posix_fallocate(fd, 0, (off_t)h->total_size);
    while (rc == EINTR);
    if (rc == ENOSPC || rc == EFBIG)
        return fail_nospace(name, h, err);
    if (rc != 0) {
        errno = rc;
        return pgd_fail_errno(err, pgd_code_from_errno(rc), "zstore pgd.%s: posix_fallocate of %llu bytes", name,
                              (unsigned long long)h->total_size);
    }
    return 0;
}

pgd_zstore *pgd_zstore_create_owned(const char *name, uint32_t m, uint32_t n, uint32_t s, uint32_t slots,
                                    pgd_zdtype dtype, int owner_pid, pgd_err *err)
{
    zs_header h;
    char path[PGD_ZSTORE_NAME_MAX + 8];
    int fd = -1, made = 0;
    void *base = MAP_FAILED;
    uint64_t owner_start = 0;
    if (pgd_zstore_name_check(name, err) != 0 || pgd_zstore_layout(name, m, n, s, slots, dtype, &h, err) != 0)
        return NULL;
    if (owner_pid <= 0 || !(owner_start = pgd_proc_start(owner_pid))) {
        if (owner_pid != getpid()) {
            pgd_fail(err, PGD_EINVAL, "zstore pgd.%s: owner pid %d is not a running process", name, owner_pid);
            return NULL;
        }
        owner_start = 0; /* no /proc: liveness by pid alone */
    }
    shm_path(path, sizeof path, name);
    fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            pgd_fail(err, PGD_EEXIST,
                     "zstore pgd.%s: segment already exists (%s/pgd.%s); remove it (pgd-zstore rm) or pick another "
                     "name",
                     name, ZS_SHM_DIR, name);
        else
            pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore pgd.%s: shm_open", name);
        goto fail;
    }
    made = 1;
    if (size_segment(fd, name, &h, err) != 0)
        goto fail;
    base = mmap(NULL, (size_t)h.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore pgd.%s: mmap of %llu bytes", name,
                       (unsigned long long)h.total_size);
        goto fail;
    }
    h.creator_pid = (uint32_t)owner_pid;
    h.creator_start = owner_start;
    h.created_time = (int64_t)time(NULL);
    h.header_crc = pgd_crc32c(0, &h, ZS_HEADER_CRC_LEN);
    /* The slot table and data are zero (fresh tmpfs pages). The magic goes in last, so that a concurrent
     * open sees either no magic or a complete header. */
    memcpy((char *)base + 8, (char *)&h + 8, sizeof h - 8);
    atomic_thread_fence(memory_order_release);
    memcpy(base, h.magic, 8);
    pgd_zstore *z = handle_new(name, &h, base, 1, err);
    if (!z)
        goto fail;
    close(fd);
    return z;
fail:
    if (base != MAP_FAILED)
        munmap(base, (size_t)h.total_size);
    if (fd >= 0)
        close(fd);
    if (made)
        shm_unlink(path);
    return NULL;
}

pgd_zstore *pgd_zstore_create(const char *name, uint32_t m, uint32_t n, uint32_t s, uint32_t slots,
                              pgd_zdtype dtype, pgd_err *err)
{
    return pgd_zstore_create_owned(name, m, n, s, slots, dtype, (int)getpid(), err);
}

pgd_zstore *pgd_zstore_open(const char *name, int writable, pgd_err *err)
{
    char path[PGD_ZSTORE_NAME_MAX + 8];
    zs_header h;
    struct stat st;
    void *base = MAP_FAILED;
    if (pgd_zstore_name_check(name, err) != 0)
        return NULL;
    shm_path(path, sizeof path, name);
    int fd = shm_open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            pgd_fail(err, PGD_ENOENT, "zstore pgd.%s: no such segment (%s/pgd.%s)", name, ZS_SHM_DIR, name);
        else
            pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore pgd.%s: shm_open", name);
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        pgd_fail_errno(err, PGD_EIO, "zstore pgd.%s: fstat", name);
        goto fail;
    }
    memset(&h, 0, sizeof h);
    if ((uint64_t)st.st_size >= ZS_HEADER_SIZE && pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        pgd_fail_errno(err, PGD_EIO, "zstore pgd.%s: reading the header", name);
        goto fail;
    }
    if (pgd_zstore_header_check(name, &h, (uint64_t)st.st_size, err) != 0)
        goto fail;
    base = mmap(NULL, (size_t)h.total_size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore pgd.%s: mmap of %llu bytes", name,
                       (unsigned long long)h.total_size);
        goto fail;
    }
    pgd_zstore *z = handle_new(name, &h, base, writable, err);
    if (!z)
        goto fail;
    close(fd);
    return z;
fail:
    if (base != MAP_FAILED)
        munmap(base, (size_t)h.total_size);
    close(fd);
    return NULL;
}

void pgd_zstore_close(pgd_zstore **zp)
{
    if (!zp || !*zp)
        return;
    pgd_zstore *z = *zp;
    /* A child that inherited the handle must not release its parent's slots. */
    for (uint32_t i = 0; z->held && getpid() == z->pid && i < z->hdr.slots; i++)
        if (z->held[i])
            pgd_zstore_slot_abort(z, i);
    munmap(z->base, z->map_size);
    free(z->held);
    free(z->scratch);
    free(z);
    *zp = NULL;
}

int pgd_zstore_remove(const char *name, pgd_err *err)
{
    char path[PGD_ZSTORE_NAME_MAX + 8];
    if (pgd_zstore_name_check(name, err) != 0)
        return -1;
    shm_path(path, sizeof path, name);
    if (shm_unlink(path) != 0) {
        if (errno == ENOENT)
            return pgd_fail(err, PGD_ENOENT, "zstore pgd.%s: no such segment (%s/pgd.%s)", name, ZS_SHM_DIR,
                            name);
        return pgd_fail_errno(err, pgd_code_from_errno(errno), "zstore pgd.%s: shm_unlink", name);
    }
    return 0;
}

const char *pgd_zstore_error(const pgd_zstore *z)
{
    if (!z)
        return "zstore: no handle";
    return z->err.code != PGD_OK ? z->err.msg : NULL;
}

int pgd_zstore_set_timeout(pgd_zstore *z, unsigned ms, pgd_err *err)
{
    ZS_ENTER(z, err);
    z->timeout_ms = ms;
    return 0;
}

int pgd_zstore_get_info(pgd_zstore *z, pgd_zstore_info *info, pgd_err *err)
{
    ZS_ENTER(z, err);
    if (!info) {
        pgd_fail(&z->err, PGD_EINVAL, "zstore pgd.%s: get_info: info is NULL", z->name);
        return pgd_zstore_sticky(z, err);
    }
    const zs_header *h = &z->hdr;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", z->name);
    info->m = h->m;
    info->n = h->n;
    info->s = h->s;
    info->dtype = (pgd_zdtype)h->dtype;
    info->slots = h->slots;
    info->block_bytes = h->block_bytes;
    info->slot_stride = h->slot_stride;
    info->data_offset = h->data_offset;
    info->total_size = h->total_size;
    info->creator_pid = h->creator_pid;
    info->creator_start = h->creator_start;
    info->created_time = h->created_time;
    info->alive = pgd_proc_alive((pid_t)h->creator_pid, h->creator_start);
    return 0;
}

size_t pgd_zstore_block_elems(const pgd_zstore *z)
{
    if (!z || z->err.code != PGD_OK)
        return 0;
    return (size_t)z->hdr.m * z->hdr.n * z->hdr.s;
}
