/* main.c: pgd-sampler, the process that runs the PatchGD schedule (see sampler/sampler.h). */
#include "sampler/sampler.h"

int main(int argc, char **argv)
{
    return pgd_sampler_main(argc, argv);
}
