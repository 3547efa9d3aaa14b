/* sampler_lshm.c: PATCHES_SHM answers: the loader's segment mapped read-only, the checked copy of a region
 * into its place in the BATCH, and the RELEASE that hands the region back. */
#include <string.h>

#include "log.h"
#include "sampler/sampler_int.h"

int pgd_sampler_shm_map(pgd_sampler *s, int li, const pgd_wire_msg *m, pgd_err *err)
{
    smp_loader *l = &s->loaders[li];
    char name[PGD_WIRE_SEGMENT_MAX + 1];
    pgd_wire_text(m, name, sizeof name);
    if (!l->seg.base || strcmp(l->seg.name, name) != 0) {
        pgd_serve_shm_close(&l->seg);
        if (pgd_serve_shm_attach(&l->seg, name, err) != 0) {
            /* not on this host, or not a segment: its later answers come inline */
            l->shm = 0;
            l->shm_broken = 1;
            pgd_warn("loader '%s': %s: its answers go inline from now on", l->name, err ? err->msg : name);
            return -1;
        }
    }
    return 0;
}

int pgd_sampler_shm_copy(pgd_sampler *s, int li, const pgd_wire_msg *m, uint8_t *dst, pgd_err *err)
{
    return pgd_serve_shm_copy(&s->loaders[li].seg, &m->shm, dst, err);
}

void pgd_sampler_shm_release(pgd_sampler *s, pgd_wire_frame rid, const pgd_wire_header *h)
{
    pgd_wire_header r;
    pgd_wire_header_init(&r, PGD_WIRE_RELEASE);
    r.run_id = h->run_id;
    r.task_id = h->task_id;
    r.attempt = h->attempt;
    pgd_err e = PGD_ERR_INIT;
    /* best effort: a loader without a free region answers inline, so a lost RELEASE costs speed, not data */
    if (pgd_wire_send(s->lsock, &rid, &r, NULL, 0, PGD_WIRE_DONTWAIT, &e) != 0)
        pgd_debug("RELEASE of job %llu: %s", (unsigned long long)h->task_id, e.msg);
}

void pgd_sampler_shm_unmap(pgd_sampler *s)
{
    for (uint32_t i = 0; s->loaders && i < s->nloaders; i++)
        pgd_serve_shm_close(&s->loaders[i].seg);
}
