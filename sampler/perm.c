/* perm.c: seeded passes over the cells of a grid, drawn one at a time without replacement. */
#include "sampler/perm.h"

static void new_pass(pgd_perm *p)
{
    for (uint32_t i = 0; i < p->cells; i++)
        p->a[i] = i;
    p->t = 0;
    p->passes++;
}

void pgd_perm_start(pgd_perm *p, pgd_rng rng, uint32_t *storage, uint32_t cells)
{
    p->rng = rng;
    p->a = storage;
    p->cells = cells;
    p->passes = 0;
    new_pass(p);
}

static int marked(const uint8_t *mark, uint32_t cell)
{
    return mark && (mark[cell >> 3] >> (cell & 7)) & 1;
}

static void set_marks(uint8_t *mark, const uint32_t *cells, uint32_t n, int on)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t bit = (uint8_t)(1u << (cells[i] & 7));
        if (on)
            mark[cells[i] >> 3] |= bit;
        else
            mark[cells[i] >> 3] &= (uint8_t)~bit;
    }
}

/* One forward Fisher-Yates step: pick a not-yet-drawn position j >= t (redrawing while its cell is marked),
 * move its cell to position t and return it. */
static uint32_t draw_one(pgd_perm *p, const uint8_t *mark)
{
    uint32_t j;
    do
        j = p->t + pgd_rng_below(&p->rng, p->cells - p->t);
    while (marked(mark, p->a[j]));
    uint32_t cell = p->a[j];
    p->a[j] = p->a[p->t];
    p->a[p->t] = cell;
    p->t++;
    return cell;
}

int pgd_perm_draw(pgd_perm *p, uint32_t *out, uint32_t count, uint8_t *mark)
{
    if (count == 0 || count > p->cells)
        return -1;
    if (p->t == p->cells)
        new_pass(p);
    uint32_t left = p->cells - p->t, q = 0;
    uint32_t first = count < left ? count : left;
    for (; q < first; q++)
        out[q] = draw_one(p, NULL);
    if (q == count)
        return 0;
    /* The pass ran out inside this call: the rest come from a new pass, minus the cells already taken. */
    if (!mark)
        return -1;
    set_marks(mark, out, first, 1);
    new_pass(p);
    for (; q < count; q++)
        out[q] = draw_one(p, mark);
    set_marks(mark, out, first, 0);
    return 0;
}
