/* model_small.c: small_cnn, a four-stage conv-BN-ReLU net for quick CPU runs (docs/trainer.md). */
#include <stdio.h>

#include "trainer/model.h"

/* features.i = [Conv3x3 stride 2 (no bias), BN, ReLU] with widths 16, 32, 64, 128; global average pool;
 * fc = Linear(128 -> out). Initialised as torchvision's ResNets are. */
pgd_net *pgd_model_small_cnn(pgd_backend *be, int size, int out, uint64_t seed, pgd_err *err)
{
    pgd_net *net = pgd_net_new(be, err);
    if (!net)
        return NULL;
    pgd_net_set_init(net, PGD_INIT_KAIMING_OUT, PGD_INIT_TORCH_DEFAULT);
    int x = pgd_net_input(net, 3, size, size);
    for (int i = 0; i < 4; i++) {
        char conv[32], bn[32];
        snprintf(conv, sizeof conv, "features.%d.0", i);
        snprintf(bn, sizeof bn, "features.%d.1", i);
        x = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, x, conv, 16 << i, 3, 2, 1, 1, 0), bn), 0);
    }
    x = pgd_net_linear(net, pgd_net_global_avgpool(net, x), "fc", out, 1);
    return pgd_model_finish(net, seed, err);
}
