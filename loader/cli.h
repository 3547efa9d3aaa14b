/* cli.h: the one-shot subcommands of pgd-loader: `info` and `decode` (loader/main.c dispatches to them). */
#ifndef PGD_LOADER_CLI_H
#define PGD_LOADER_CLI_H

#include "config.h"

/* Each takes argv[0] = the subcommand name (skipped) and its words after it, parses its options with the
 * shared config module, and returns a process exit code: PGD_EXIT_OK, PGD_EXIT_FAIL (the slide could not be
 * read: the message names it) or PGD_EXIT_USAGE (bad arguments: nothing was done). */

/* pgd-loader info SLIDE [--json] [--backend B]: what the loader sees in a slide. */
int pgd_loader_info_main(int argc, char **argv);

/* pgd-loader decode SLIDE --out FILE.png (--fit S [--grid] | --level L | --mpp X) [--patch P] [--cells ...]:
 * decode one slide outside the graph. */
int pgd_loader_decode_main(int argc, char **argv);

/* Log "CMD: message" (cmd may be NULL) and the usage line (NULL: the general one); returns PGD_EXIT_USAGE. */
int pgd_loader_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse a subcommand's options and its one SLIDE word into cfg (see common/config.h). Returns -1 when the
 * command should run (*slide points into argv), else the exit code to return at once: PGD_EXIT_OK after
 * --help (usage printed to stdout), PGD_EXIT_USAGE after an error (logged). cfg is freed by the caller
 * (pgd_cfg_free) either way. */
int pgd_loader_parse_cmd(const pgd_cfg_opt *opts, void *cfg, int argc, char **argv, const char *usage,
                         const char *about, const char **slide);

#endif
