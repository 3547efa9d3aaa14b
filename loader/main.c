/* main.c: pgd-loader, the slide decoder: the loader process (`serve`) and the one-shot `info` and `decode`. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "loader/cli.h"
#include "loader/serve.h"

typedef struct loader_cmd {
    const char *name;
    const char *usage; /* after "pgd-loader " */
    const char *about;
    int (*main)(int argc, char **argv); /* argv[0] is the subcommand */
} loader_cmd;

static const loader_cmd cmds[] = {
    {"info", "info SLIDE [--json] [--backend auto|openslide|fast|image]",
     "print what the loader sees in SLIDE: vendor, levels, mpp, bounds, background, backend and why",
     pgd_loader_info_main},
    {"decode",
     "decode SLIDE --out FILE.png (--fit S [--grid] | --level L | --mpp X) [--patch P] [--cells r0:r1,c0:c1]",
     "decode SLIDE outside the graph: the fit image, or the mosaic of native patches", pgd_loader_decode_main},
    {"serve", "serve --connect ENDPOINT [--credit N] [--heartbeat-ms MS] [--name NAME] [options]",
     "the loader process: decode jobs from the sampler over ZeroMQ (docs/loader-process.md)",
     pgd_loader_serve_main},
};
#define NCMDS (sizeof cmds / sizeof *cmds)

static void general_usage(void)
{
    printf("usage: pgd-loader COMMAND [ARGS] [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        printf("  %s\n      %s\n", cmds[i].usage, cmds[i].about);
    printf("\npgd-loader COMMAND --help lists the options of one command.\n"
           "Exit status: 0 done, 1 the slide could not be read (the message names it), 2 bad arguments.\n");
}

int main(int argc, char **argv)
{
    pgd_log_init("loader", PGD_LOG_INFO, 0);
    if (argc < 2)
        return pgd_loader_usage_error(NULL, NULL, "no command given");
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].main(argc - 1, argv + 1);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        general_usage();
        return PGD_EXIT_OK;
    }
    if (argv[1][0] == '-')
        return pgd_loader_usage_error(NULL, NULL, "'%s': the command comes first, then its options", argv[1]);
    return pgd_loader_usage_error(NULL, NULL, "unknown command '%s'", argv[1]);
}
