/* model.c: the architecture names and pgd_model_build, which hands a name to its builder. */
#include <stdio.h>
#include <string.h>

#include "trainer/model.h"

const char *const pgd_model_archs[] = {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "small_cnn", NULL};

pgd_net *pgd_model_finish(pgd_net *net, uint64_t seed, pgd_err *err)
{
    if (!net)
        return NULL;
    if (pgd_net_finish(net, seed, err) < 0) {
        pgd_net_free(&net);
        return NULL;
    }
    return net;
}

/* "resnet18, resnet34, ..." into buf. */
static void known_archs(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; pgd_model_archs[i] && used < size; i++) {
        int len = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", pgd_model_archs[i]);
        if (len < 0)
            break;
        used += (size_t)len;
    }
}

pgd_net *pgd_model_build(pgd_backend *be, const char *arch, int size, int out, uint64_t seed, pgd_err *err)
{
    if (size < 1 || out < 1) {
        pgd_fail(err, PGD_EINVAL, "model %s: input size %d and outputs %d must be positive", arch ? arch : "(null)",
                 size, out);
        return NULL;
    }
    const char *name = arch ? arch : "";
    if (strcmp(name, "resnet18") == 0)
        return pgd_model_resnet(be, 18, size, out, seed, err);
    if (strcmp(name, "resnet34") == 0)
        return pgd_model_resnet(be, 34, size, out, seed, err);
    if (strcmp(name, "resnet50") == 0)
        return pgd_model_resnet(be, 50, size, out, seed, err);
    if (strcmp(name, "mobilenet_v2") == 0)
        return pgd_model_mobilenet_v2(be, size, out, seed, err);
    if (strcmp(name, "small_cnn") == 0)
        return pgd_model_small_cnn(be, size, out, seed, err);
    char known[256];
    known_archs(known, sizeof known);
    pgd_fail(err, PGD_EINVAL, "unknown model arch \"%s\" (known: %s)", name, known);
    return NULL;
}
