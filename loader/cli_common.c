/* cli_common.c: what the pgd-loader subcommands share: usage errors and parsing "SUBCOMMAND SLIDE [options]". */
#include <stdarg.h>
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "loader/cli.h"

int pgd_loader_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pgd_error("%s%s%s", cmd ? cmd : "", cmd ? ": " : "", msg);
    if (usage)
        fprintf(stderr, "usage: pgd-loader %s\n       (pgd-loader %s --help lists its options)\n", usage,
                cmd ? cmd : "");
    else
        fputs("usage: pgd-loader COMMAND [ARGS] [options] (pgd-loader --help lists the commands)\n", stderr);
    return PGD_EXIT_USAGE;
}

int pgd_loader_parse_cmd(const pgd_cfg_opt *opts, void *cfg, int argc, char **argv, const char *usage,
                         const char *about, const char **slide)
{
    pgd_cfg_args a;
    pgd_err err = PGD_ERR_INIT;
    const char *cmd = argv[0];
    int rc = -1;
    if (pgd_cfg_parse_args(opts, cfg, argc, argv, &a, &err) != 0) {
        rc = pgd_loader_usage_error(cmd, usage, "%s", err.msg);
    } else if (a.help) {
        char line[512];
        snprintf(line, sizeof line, "pgd-loader %s\n  %s", usage, about);
        pgd_cfg_usage(opts, stdout, line);
        fputs("Exit status: 0 done, 1 the slide could not be read (the message names it), 2 bad arguments.\n",
              stdout);
        rc = PGD_EXIT_OK;
    } else if (a.npositional < 1) {
        rc = pgd_loader_usage_error(cmd, usage, "missing SLIDE (the file to read)");
    } else if (a.npositional > 1) {
        rc = pgd_loader_usage_error(cmd, usage, "unexpected argument '%s'", a.positional[1]);
    } else {
        *slide = a.positional[0];
        if (a.saved_to)
            pgd_info("settings written to %s", a.saved_to);
    }
    pgd_cfg_args_free(&a);
    return rc;
}
