/* scaler.h: dynamic loss scaling for fp16 training: skip an update whose gradients overflowed, adapt the scale. */
#ifndef PGD_SCALER_H
#define PGD_SCALER_H

#include <stdint.h>

#include "err.h"
#include "trainer/net.h"

/* In fp16 (backend.h, "Precision") a small gradient rounds to zero. So the loss gradient is multiplied by a scale
 * S (xent_backward's scale), every gradient downstream is S times larger, and the update divides by S again (the
 * optimizer's grad_scale). When S is too large a gradient overflows to infinity (or a NaN appears): the update is
 * then skipped, the gradients are dropped and S is halved. After `interval` updates in a row without overflow S
 * doubles, so it stays near the largest that fits. PyTorch's GradScaler follows the same rule (2^16, 0.5, 2, 2000).
 * S never goes below 1: an overflow at S = 1 is in the forward pass or the weights, and after `give_up` updates in
 * a row were skipped the check fails with a message instead of training on. */
typedef struct pgd_scaler_cfg {
    float init;             /* the first S: 65536 */
    int interval;           /* finite updates in a row before S doubles: 2000; 0: S stays fixed */
    int give_up;            /* skipped updates in a row that fail the run: 64 */
} pgd_scaler_cfg;

/* The state a checkpoint keeps, so that a resumed run continues with the same S. */
typedef struct pgd_scaler_state {
    float scale;            /* S */
    int64_t good;           /* finite updates since S last changed */
    int64_t skipped;        /* updates skipped so far (all runs) */
    int64_t streak;         /* updates skipped in a row */
} pgd_scaler_state;

typedef struct pgd_scaler pgd_scaler;

pgd_scaler_cfg pgd_scaler_defaults(void);
/* NULL with err set on a bad cfg (init not finite or < 1, interval < 0, give_up < 1) or no memory. */
pgd_scaler *pgd_scaler_new(pgd_backend *be, const pgd_scaler_cfg *cfg, pgd_err *err);
void pgd_scaler_free(pgd_scaler **sc);

/* S: the factor for the loss gradient; 1 for sc NULL (no scaling). */
float pgd_scaler_scale(const pgd_scaler *sc);

/* Before an update: are the accumulated gradients of nets[0..count) (NULL entries skipped) all finite? 1: yes,
 * *unscale = 1 / S for the update, and S doubles when `interval` finite updates have passed. 0: no: the
 * gradients are zeroed, S is halved (not below 1) and the caller skips the update. -1 on a backend error, or
 * when give_up updates in a row were skipped (PGD_EINVAL, with the scale and the count). sc NULL (no scaling):
 * 1 and *unscale = 1, nothing checked. */
int pgd_scaler_check(pgd_scaler *sc, pgd_net *const *nets, int count, float *unscale, pgd_err *err);

void pgd_scaler_get(const pgd_scaler *sc, pgd_scaler_state *st);
/* Takes a saved state; -1 (PGD_EINVAL) when its scale is not finite or below 1, or a count is negative. */
int pgd_scaler_set(pgd_scaler *sc, const pgd_scaler_state *st, pgd_err *err);

#endif
