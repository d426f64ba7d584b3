/* cli — the store's subcommands: `ferry keys create|list|show|revoke` and `ferry usage`. They
 * read the same settings as the server (-c FILE, --store PATH, FERRY_*), so main.c loads the
 * config first with only those options, then hands the rest of the command line here. */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include "config.h"

/* 1 when arg names one of these subcommands ("keys", "usage"), else 0. */
int cli_is_command(const char *arg);

/* Reorders argv (argv[1] is the subcommand) in place into
 *   argv[0], the settings options (-c FILE, --config, --store, with their values)...,
 *   the subcommand, its own arguments...
 * and returns how many come before the subcommand: config_load takes (that count, argv), and
 * cli_run the rest. A subcommand flag's value is never taken for a settings option.
 * Returns -ENOMEM when out of memory. */
int cli_split_args(int argc, char **argv);

/* Runs the subcommand in argv[0] with its arguments. Returns the process exit code: 0, 1 for a
 * failure (no such key, store error), 2 for a usage error (bad flag or value). */
int cli_run(const struct config *cfg, int argc, char **argv);

#endif
