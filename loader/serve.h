/* serve.h: `pgd-loader serve`, the loader process: decode jobs from the sampler over ZeroMQ, answer each. */
#ifndef PGD_SERVE_H
#define PGD_SERVE_H

/* Run the loader process until the sampler says STOP or a signal arrives. argv[0] is the subcommand
 * ("serve") and is skipped; the rest are options for the shared config module (--connect ENDPOINT is
 * required; --help lists the others; docs/loader-process.md describes them and the protocol).
 *
 * It connects a DEALER socket to the sampler's ROUTER, sends HELLO, then serves JOB messages one at a time,
 * answering each with PATCHES or JOB_ERROR, with HEARTBEATs in between (also while a long job decodes).
 * Bad slides and bad messages never stop it. SIGINT / SIGTERM: the job being decoded is finished and
 * answered, then it returns; a second signal ends the process at once (_exit with PGD_EXIT_FAIL). Installs
 * its own SIGINT / SIGTERM handlers and restores the previous ones before returning.
 *
 * Returns a process exit code: PGD_EXIT_OK after STOP or a signal, PGD_EXIT_USAGE for a bad option or
 * endpoint (nothing was done), PGD_EXIT_FAIL when the socket fails. Call it at most once at a time per
 * process (signal handlers are process-wide), after any fork (slides are opened in this process). */
int pgd_loader_serve_main(int argc, char **argv);

#endif
