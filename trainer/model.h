/* model.h: the architectures the trainer builds: torchvision's ResNets and MobileNetV2, a small CNN, the PatchGD head. */
#ifndef PGD_MODEL_H
#define PGD_MODEL_H

#include "err.h"
#include "trainer/net.h"

/* Builds and finishes a classifier net of the named architecture for inputs [3, size, size]:
 *   "resnet18", "resnet34", "resnet50", "mobilenet_v2": torchvision's exact layers, tensor names and weight
 *       initialisation, with `out` outputs (1000 = torchvision's ImageNet model; the PatchGD backbone uses
 *       out = s, which is torchvision's model with its last Linear replaced by Linear(features -> s));
 *   "small_cnn": a few conv-BN-ReLU stages, global average pooling and a Linear, for quick CPU runs.
 * Returns NULL with err set for an unknown name (the message lists the known ones) or a size too small. */
pgd_net *pgd_model_build(pgd_backend *be, const char *arch, int size, int out, uint64_t seed, pgd_err *err);

/* The known architecture names, NULL-terminated. */
extern const char *const pgd_model_archs[];

/* The builders behind pgd_model_build (same contract): depth 18, 34 or 50; torchvision's MobileNetV2 at
 * width 1.0; the small CNN described in docs/trainer.md. */
pgd_net *pgd_model_resnet(pgd_backend *be, int depth, int size, int out, uint64_t seed, pgd_err *err);
pgd_net *pgd_model_mobilenet_v2(pgd_backend *be, int size, int out, uint64_t seed, pgd_err *err);
pgd_net *pgd_model_small_cnn(pgd_backend *be, int size, int out, uint64_t seed, pgd_err *err);

/* Finishes a built net (pgd_net_finish) and returns it, or frees it and returns NULL with err set. */
pgd_net *pgd_model_finish(pgd_net *net, uint64_t seed, pgd_err *err);

/* The PatchGD head g over a Z-block [s, m, n]: Conv3x3(s -> width, stride 1, pad 1) + ReLU + BN +
 * Dropout2d(p), then 3 x [Conv3x3(width -> width, stride 2, pad 1) + ReLU + BN + Dropout2d(p)], flatten,
 * Linear -> classes. With pool set, the three later convs keep stride 1 and a global average pool replaces
 * the flatten: the head then sees no cell's position, only what the cells hold. Tensor names
 * "head.<i>.weight" in the order of the layers (as nn.Sequential numbers them; head.16 is the flatten or the
 * pool). Any grid m x n >= 1 and any class count. */
pgd_net *pgd_model_head(pgd_backend *be, int s, int m, int n, int width, float dropout, int pool, int classes,
                        uint64_t seed, pgd_err *err);

#endif
