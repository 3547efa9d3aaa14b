/* perm.h: cells of one grid drawn in seeded passes without replacement (the inner-step sample source). */
#ifndef PGD_PERM_H
#define PGD_PERM_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* One draw source: a grid of `cells` cells (indices 0..cells-1, row-major) and an RNG stream. A pass is
 * a forward Fisher-Yates shuffle of the cell indices made one draw at a time, so a pass that is only
 * partly used costs only the draws made. When a pass is used up the next one starts from the identity
 * again. docs/schedule.md states the algorithm exactly. */
typedef struct pgd_perm {
    pgd_rng rng;
    uint32_t *a;    /* cells entries: a[0..t) drawn in this pass, a[t..cells) not yet (caller's memory) */
    uint32_t cells; /* 1..65535^2 */
    uint32_t t;     /* draws made in the current pass */
    uint64_t passes; /* passes started, the current one included */
} pgd_perm;

/* Start a source over `cells` cells with the stream `rng`. `storage` holds `cells` entries and must live
 * as long as the source; it is set to the identity here. */
void pgd_perm_start(pgd_perm *p, pgd_rng rng, uint32_t *storage, uint32_t cells);

/* Draw `count` (1..cells) distinct cells into out[0..count), in draw order. When the current pass runs out
 * in the middle, the rest come from a new pass, and cells already in out are redrawn (see the docs), so
 * the cells of one call are always distinct. `mark` is a zeroed bitmap of at least cells bits, used and
 * cleared again only when a pass boundary falls inside the call; it may be NULL when the caller knows that
 * cannot happen (then a boundary inside the call returns -1). Returns 0, or -1 on a bad argument. */
int pgd_perm_draw(pgd_perm *p, uint32_t *out, uint32_t count, uint8_t *mark);

#endif
