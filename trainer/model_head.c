/* model_head.c: the PatchGD head g over a Z-block [s, m, n]: four conv-ReLU-BN-Dropout2d layers, flatten or pool, Linear. */
#include <stdio.h>

#include "trainer/model.h"

/* Numbered as one nn.Sequential: head.0 conv, .1 ReLU, .2 BN, .3 Dropout2d, ... head.12-15 the fourth layer,
 * head.16 Flatten (or the global average pool), head.17 Linear. Conv and Linear keep PyTorch's default initialisation and biases. */
pgd_net *pgd_model_head(pgd_backend *be, int s, int m, int n, int width, float dropout, int pool, int classes,
                        uint64_t seed, pgd_err *err)
{
    if (s < 1 || m < 1 || n < 1 || width < 1 || classes < 1) {
        pgd_fail(err, PGD_EINVAL, "head: z [%d, %d, %d], width %d and classes %d must be positive", s, m, n, width,
                 classes);
        return NULL;
    }
    pgd_net *net = pgd_net_new(be, err);
    if (!net)
        return NULL;
    pgd_net_set_init(net, PGD_INIT_TORCH_DEFAULT, PGD_INIT_TORCH_DEFAULT);
    int x = pgd_net_input(net, s, m, n);
    for (int layer = 0; layer < 4; layer++) {
        char conv[32], bn[32];
        snprintf(conv, sizeof conv, "head.%d", 4 * layer);
        snprintf(bn, sizeof bn, "head.%d", 4 * layer + 2);
        x = pgd_net_conv(net, x, conv, width, 3, layer == 0 || pool ? 1 : 2, 1, 1, 1);
        x = pgd_net_dropout2d(net, pgd_net_bn(net, pgd_net_relu(net, x, 0), bn), dropout);
    }
    if (pool)
        x = pgd_net_global_avgpool(net, x);
    x = pgd_net_linear(net, x, "head.17", classes, 1);
    return pgd_model_finish(net, seed, err);
}
