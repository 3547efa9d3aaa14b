/* main.c: pgd-trainer: `run` consumes a sampler's stream (train, evaluate, predict); `embed` runs a model on a batch;
 * `kfold`, `pending`, `scan`, `state` are the launchers' helpers. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "trainer/embed.h"
#include "trainer/run.h"

static void usage(FILE *f)
{
    fputs("usage: pgd-trainer run --connect ENDPOINT [options]   train / evaluate / predict from a sampler's stream\n"
          "       pgd-trainer embed --model M --input X.npy --out Y.npy [options]   logits or features of a batch\n"
          "       pgd-trainer kfold --manifest M --train-out T --val-out V [--folds K --fold F --seed S]\n"
          "       pgd-trainer pending --manifest M --predictions P --out TODO   slides without a prediction yet\n"
          "       pgd-trainer scan --dir SLIDES --out M   a folder of slides as a manifest\n"
          "       pgd-trainer state RUN_DIR   where a saved training continues\n"
          "       pgd-trainer COMMAND --help   the options of a command\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return PGD_EXIT_USAGE;
    }
    if (strcmp(argv[1], "run") == 0)
        return pgd_run_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "embed") == 0)
        return pgd_embed_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "kfold") == 0 || strcmp(argv[1], "pending") == 0 || strcmp(argv[1], "scan") == 0 ||
        strcmp(argv[1], "state") == 0)
        return pgd_run_tool_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return PGD_EXIT_OK;
    }
    fprintf(stderr, "pgd-trainer: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return PGD_EXIT_USAGE;
}
