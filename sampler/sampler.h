/* sampler.h: `pgd-sampler`, the process that runs the schedule: jobs to loaders, patch batches to the trainer. */
#ifndef PGD_SAMPLER_H
#define PGD_SAMPLER_H

#include "err.h"

/* Run the sampler process (docs/sampler.md): argv[0] is skipped, the rest are options for the shared config
 * module (--manifest is required; --help lists the others). It binds a ROUTER for loaders and a ROUTER for
 * the consumer, streams every BATCH of the schedule in order to the consumer within the credit the consumer
 * grants, then sends END to the consumer and STOP to the loaders.
 *
 * Returns a process exit code: PGD_EXIT_OK when the stream is complete, PGD_EXIT_FAIL when it is not (no
 * loader registered within loader_wait_ms, a socket or file failure, or SIGINT / SIGTERM: then STOP goes to
 * the loaders and to the consumer instead of END), PGD_EXIT_USAGE for a bad option, manifest or endpoint.
 * Installs SIGINT / SIGTERM handlers for its run and restores the previous ones before returning. */
int pgd_sampler_main(int argc, char **argv);

#endif
