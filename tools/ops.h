/* ops.h -- what the operations subcommands (ls, info, stats, ping, top,
 * dead) share: one option parser and a few table helpers.
 *
 * They all take --redis, --prefix, --json and --help, plus a few options of
 * their own chosen by flags, so their command lines cannot drift apart.
 */
#ifndef RRPC_TOOLS_OPS_H
#define RRPC_TOOLS_OPS_H

#include "cli.h"

enum ops_option_flags {
    OPS_TIMEOUT = 1,     /* --timeout SECONDS */
    OPS_INTERVAL = 2,    /* --interval SECONDS */
    OPS_COUNT = 4,       /* --count N */
    OPS_LIMIT = 8,       /* --limit N */
    OPS_ITERATIONS = 16, /* --iterations N */
    OPS_REF = 32         /* --ref REF */
};

struct ops_args {
    struct cli_connection conn;
    int json, help;
    double timeout_s;  /* 0: default */
    double interval_s; /* 0: default */
    long count, limit, iterations;
    const char *ref; /* NULL: not given */
    int noperands;
    char **operands;
};

/* Parses ARGV accepting the shared options and those in FLAGS, and
 * between MIN and MAX operands.  Returns CLI_EXIT_OK or CLI_EXIT_USAGE
 * (after saying why); args->help is set when --help was given. */
int ops_parse(int argc, char **argv, unsigned flags, int min, int max, struct ops_args *args);

/* The help lines of the shared options and of those in FLAGS. */
void ops_print_options(FILE *out, unsigned flags);

/* Prints VALUE as one line of JSON on stdout; CLI_EXIT_OK or
 * CLI_EXIT_INTERNAL if stdout failed. */
int ops_print_json(const char *prog, const json_t *value);

/* An integer member of OBJ, 0 if absent. */
long long ops_int(const json_t *obj, const char *key);

#endif /* RRPC_TOOLS_OPS_H */
