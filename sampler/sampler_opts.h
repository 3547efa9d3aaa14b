/* sampler_opts.h: the option table of pgd-sampler (for --help and run.conf). */
#ifndef PGD_SAMPLER_OPTS_H
#define PGD_SAMPLER_OPTS_H

#include "config.h"

/* The table: every key of docs/sampler.md, fields of pgd_sampler_opts. */
const pgd_cfg_opt *pgd_sampler_options(void);

#endif
