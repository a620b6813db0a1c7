/* ops.c -- the option parser and output helpers of the operations
 * subcommands (see ops.h).
 */
#include "ops.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum { OPT_INTERVAL = CLI_OPT_FIRST_FREE, OPT_COUNT, OPT_LIMIT, OPT_ITERATIONS, OPT_REF };

static const struct option options[] = {
    {"redis", required_argument, NULL, CLI_OPT_REDIS},
    {"url", required_argument, NULL, CLI_OPT_REDIS},
    {"prefix", required_argument, NULL, CLI_OPT_PREFIX},
    {"json", no_argument, NULL, CLI_OPT_JSON},
    {"timeout", required_argument, NULL, CLI_OPT_TIMEOUT},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"count", required_argument, NULL, OPT_COUNT},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"iterations", required_argument, NULL, OPT_ITERATIONS},
    {"ref", required_argument, NULL, OPT_REF},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_count(const char *prog, const char *option, const char *text, long *out)
{
    uint64_t v;
    if (cli_parse_count(text, 1, LONG_MAX, &v) != 0)
        return cli_usage_error(prog, "--%s wants a positive integer, not '%s'", option, text);
    *out = (long)v;
    return CLI_EXIT_OK;
}

static unsigned flag_of(int opt)
{
    switch (opt) {
    case CLI_OPT_TIMEOUT: return OPS_TIMEOUT;
    case OPT_INTERVAL: return OPS_INTERVAL;
    case OPT_COUNT: return OPS_COUNT;
    case OPT_LIMIT: return OPS_LIMIT;
    case OPT_ITERATIONS: return OPS_ITERATIONS;
    case OPT_REF: return OPS_REF;
    default: return 0;
    }
}

static int apply(const char *prog, int opt, unsigned flags, struct ops_args *a)
{
    unsigned needs = flag_of(opt);
    if (needs != 0 && !(flags & needs))
        return cli_usage_error(prog, "this command takes no such option");
    switch (opt) {
    case 'h': a->help = 1; return CLI_EXIT_OK;
    case CLI_OPT_REDIS: a->conn.url = optarg; return CLI_EXIT_OK;
    case CLI_OPT_PREFIX: a->conn.prefix = optarg; return CLI_EXIT_OK;
    case CLI_OPT_JSON: a->json = 1; return CLI_EXIT_OK;
    case CLI_OPT_TIMEOUT:
    case OPT_INTERVAL:
        if (cli_parse_seconds(optarg, opt == OPT_INTERVAL ? &a->interval_s : &a->timeout_s))
            return cli_usage_error(prog, "--%s wants a positive number of seconds, not '%s'",
                                   opt == OPT_INTERVAL ? "interval" : "timeout", optarg);
        return CLI_EXIT_OK;
    case OPT_COUNT: return parse_count(prog, "count", optarg, &a->count);
    case OPT_LIMIT: return parse_count(prog, "limit", optarg, &a->limit);
    case OPT_ITERATIONS: return parse_count(prog, "iterations", optarg, &a->iterations);
    case OPT_REF: a->ref = optarg; return CLI_EXIT_OK;
    default: fprintf(stderr, "Try '%s --help'.\n", prog); return CLI_EXIT_USAGE;
    }
}

int ops_parse(int argc, char **argv, unsigned flags, int min, int max, struct ops_args *args)
{
    const char *prog = argv[0];
    int opt;
    memset(args, 0, sizeof *args);
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        int status = apply(prog, opt, flags, args);
        if (status != CLI_EXIT_OK || args->help)
            return status;
    }
    args->noperands = argc - optind;
    args->operands = argv + optind;
    if (args->noperands < min)
        return cli_usage_error(prog, "missing arguments");
    if (args->noperands > max)
        return cli_usage_error(prog, "unexpected argument '%s'", args->operands[max]);
    return CLI_EXIT_OK;
}

void ops_print_options(FILE *out, unsigned flags)
{
    fputs("\nOptions:\n", out);
    cli_print_connection_options(out);
    fputs("  --json             print JSON (one document, or one line per refresh)\n", out);
    if (flags & OPS_TIMEOUT)
        fputs("  --timeout SECONDS  how long to wait for each reply (default: 5)\n", out);
    if (flags & OPS_COUNT)
        fputs("  --count N          how many round trips (default: 1)\n", out);
    if (flags & OPS_INTERVAL)
        fputs("  --interval SECONDS time between refreshes (default: 1)\n", out);
    if (flags & OPS_ITERATIONS)
        fputs("  --iterations N     stop after N refreshes (default: until interrupted)\n", out);
    if (flags & OPS_LIMIT)
        fputs("  --limit N          list at most N dead letters (default: all)\n", out);
    if (flags & OPS_REF)
        fputs("  --ref REF          requeue only the dead letter with this ref (its \"ref\"\n"
              "                     in `list --json`)\n",
              out);
    fputs("  -h, --help         show this help\n\n", out);
    cli_print_exit_statuses(out);
}

int ops_print_json(const char *prog, const json_t *value)
{
    if (cli_print_json(stdout, value, 0) != 0 || fflush(stdout) != 0) {
        fprintf(stderr, "%s: cannot write the output: %s\n", prog, strerror(errno));
        return CLI_EXIT_INTERNAL;
    }
    return CLI_EXIT_OK;
}

long long ops_int(const json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}
