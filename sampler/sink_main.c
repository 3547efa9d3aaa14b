/* sink_main.c: pgd-sink, a consumer of the sampler's stream for tests and benchmarks (see sampler/sink.h). */
#include "sampler/sink.h"

int main(int argc, char **argv)
{
    return pgd_sink_main(argc, argv);
}
