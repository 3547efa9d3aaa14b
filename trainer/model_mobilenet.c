/* model_mobilenet.c: torchvision's MobileNetV2 (width 1.0): inverted residual blocks with ReLU6, a Dropout +
 * Linear classifier, and the same tensor names ("features.N.conv.M...", "classifier.1"). */
#include <stdio.h>

#include "trainer/model.h"

/* torchvision's _make_divisible: round to the nearest multiple of 8, never more than 10% down. */
static int divisible8(double v)
{
    int r = (int)(v + 4) / 8 * 8;
    if (r < 8)
        r = 8;
    if (r < 0.9 * v)
        r += 8;
    return r;
}

/* Conv (no bias) + BN + ReLU6 as torchvision's Conv2dNormActivation "<name>.0" / "<name>.1". */
static int conv_bn_relu6(pgd_net *net, int x, const char *name, int out_c, int size, int stride, int groups)
{
    char conv[96], bn[96];
    snprintf(conv, sizeof conv, "%s.0", name);
    snprintf(bn, sizeof bn, "%s.1", name);
    int y = pgd_net_bn(net, pgd_net_conv(net, x, conv, out_c, size, stride, (size - 1) / 2, groups, 0), bn);
    return pgd_net_relu(net, y, 6);
}

/* features.<idx>: [1x1 expand + ReLU6], 3x3 depthwise + ReLU6, 1x1 linear projection + BN, and the identity
 * skip when the stride is 1 and the channel count stays. */
static int inverted_residual(pgd_net *net, int x, int idx, int in_c, int out_c, int stride, int expand)
{
    int hidden = in_c * expand, m = 0, y = x;
    char name[96];
    if (expand != 1) {
        snprintf(name, sizeof name, "features.%d.conv.%d", idx, m++);
        y = conv_bn_relu6(net, y, name, hidden, 1, 1, 1);
    }
    snprintf(name, sizeof name, "features.%d.conv.%d", idx, m++);
    y = conv_bn_relu6(net, y, name, hidden, 3, stride, hidden);
    snprintf(name, sizeof name, "features.%d.conv.%d", idx, m++);
    y = pgd_net_conv(net, y, name, out_c, 1, 1, 0, 1, 0);
    snprintf(name, sizeof name, "features.%d.conv.%d", idx, m);
    y = pgd_net_bn(net, y, name);
    return stride == 1 && in_c == out_c ? pgd_net_add(net, x, y) : y;
}

pgd_net *pgd_model_mobilenet_v2(pgd_backend *be, int size, int out, uint64_t seed, pgd_err *err)
{
    /* expansion t, channels c, repeats n, first stride s */
    static const int setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                      {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    pgd_net *net = pgd_net_new(be, err);
    if (!net)
        return NULL;
    pgd_net_set_init(net, PGD_INIT_KAIMING_OUT, PGD_INIT_NORMAL_001);
    int in_c = divisible8(32), last_c = divisible8(1280), idx = 0;
    int x = pgd_net_input(net, 3, size, size);
    x = conv_bn_relu6(net, x, "features.0", in_c, 3, 2, 1);
    for (int g = 0; g < 7; g++) {
        int out_c = divisible8(setting[g][1]);
        for (int r = 0; r < setting[g][2]; r++) {
            x = inverted_residual(net, x, ++idx, in_c, out_c, r == 0 ? setting[g][3] : 1, setting[g][0]);
            in_c = out_c;
        }
    }
    char name[32];
    snprintf(name, sizeof name, "features.%d", ++idx);
    x = conv_bn_relu6(net, x, name, last_c, 1, 1, 1);
    x = pgd_net_dropout2d(net, pgd_net_global_avgpool(net, x), 0.2f);
    x = pgd_net_linear(net, x, "classifier.1", out, 1);
    return pgd_model_finish(net, seed, err);
}
