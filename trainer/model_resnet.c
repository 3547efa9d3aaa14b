/* model_resnet.c: torchvision's ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, v1.5: stride on the 3x3). */
#include <stdio.h>

#include "trainer/model.h"

/* conv (no bias) + BN [+ ReLU] named "<block>.conv<i>" / "<block>.bn<i>"; returns the last node id. */
static int conv_bn(pgd_net *net, int x, const char *block, int i, int out_c, int size, int stride, int relu)
{
    char conv[96], bn[96];
    snprintf(conv, sizeof conv, "%s.conv%d", block, i);
    snprintf(bn, sizeof bn, "%s.bn%d", block, i);
    int y = pgd_net_bn(net, pgd_net_conv(net, x, conv, out_c, size, stride, size / 2, 1, 0), bn);
    return relu ? pgd_net_relu(net, y, 0) : y;
}

/* One residual block "layerL.B" from x with in_c channels: BasicBlock (3x3, 3x3) or Bottleneck (1x1, 3x3
 * with the stride, 1x1 to 4 planes), the 1x1 conv + BN "downsample" when the shape changes, add, ReLU. */
static int block(pgd_net *net, int x, const char *name, int in_c, int planes, int stride, int bottleneck)
{
    int out_c = bottleneck ? 4 * planes : planes, y;
    if (bottleneck) {
        y = conv_bn(net, x, name, 1, planes, 1, 1, 1);
        y = conv_bn(net, y, name, 2, planes, 3, stride, 1);
        y = conv_bn(net, y, name, 3, out_c, 1, 1, 0);
    } else {
        y = conv_bn(net, x, name, 1, planes, 3, stride, 1);
        y = conv_bn(net, y, name, 2, planes, 3, 1, 0);
    }
    int skip = x;
    if (stride != 1 || in_c != out_c) {
        char conv[96], bn[96];
        snprintf(conv, sizeof conv, "%s.downsample.0", name);
        snprintf(bn, sizeof bn, "%s.downsample.1", name);
        skip = pgd_net_bn(net, pgd_net_conv(net, x, conv, out_c, 1, stride, 0, 1, 0), bn);
    }
    return pgd_net_relu(net, pgd_net_add(net, y, skip), 0);
}

pgd_net *pgd_model_resnet(pgd_backend *be, int depth, int size, int out, uint64_t seed, pgd_err *err)
{
    static const int blocks18[4] = {2, 2, 2, 2}, blocks34[4] = {3, 4, 6, 3};
    if (depth != 18 && depth != 34 && depth != 50) {
        pgd_fail(err, PGD_EINVAL, "resnet: depth %d (known: 18, 34, 50)", depth);
        return NULL;
    }
    const int *blocks = depth == 18 ? blocks18 : blocks34;
    int bottleneck = depth == 50;
    pgd_net *net = pgd_net_new(be, err);
    if (!net)
        return NULL;
    pgd_net_set_init(net, PGD_INIT_KAIMING_OUT, PGD_INIT_TORCH_DEFAULT);
    int x = pgd_net_input(net, 3, size, size);
    x = pgd_net_relu(net, pgd_net_bn(net, pgd_net_conv(net, x, "conv1", 64, 7, 2, 3, 1, 0), "bn1"), 0);
    x = pgd_net_maxpool(net, x, 3, 2, 1);
    int in_c = 64;
    for (int l = 0; l < 4; l++) {
        int planes = 64 << l;
        for (int b = 0; b < blocks[l]; b++) {
            char name[32];
            snprintf(name, sizeof name, "layer%d.%d", l + 1, b);
            x = block(net, x, name, in_c, planes, b == 0 && l > 0 ? 2 : 1, bottleneck);
            in_c = bottleneck ? 4 * planes : planes;
        }
    }
    x = pgd_net_linear(net, pgd_net_global_avgpool(net, x), "fc", out, 1);
    return pgd_model_finish(net, seed, err);
}
