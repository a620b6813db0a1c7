/* cmd_bench.c -- `rrpc bench`: drives a service with calls and reports
 * throughput and latency.
 *
 * This file is the subcommand's face: its options, --help, and the
 * defaults; bench.h says where the rest lives.  Two kinds of caller, each
 * on --connections threads of its own:
 *   --sync   every thread owns an rrpc_client and makes one call at a time
 *            (bench_sync.c);
 *   --async  every thread owns a libevent base and an rrpc_async client on
 *            it, and keeps --window calls in flight (bench_async.c).
 *
 * A call counts as an error when it fails in any way or when its result
 * differs from the expected one (3 for the default call, add [1, 2]); the
 * exit status is 1 if there was any.
 */
#include "bench.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_DURATION_S   5.0
#define DEFAULT_TIMEOUT_S    10.0
#define DEFAULT_ASYNC_WINDOW 64
#define MAX_CONNECTIONS      1024
#define MAX_WINDOW           100000

/* ---- options --------------------------------------------------------- */

enum bench_option {
    OPT_CONNECTIONS = CLI_OPT_FIRST_FREE,
    OPT_WINDOW,
    OPT_DURATION,
    OPT_CALLS,
    OPT_SYNC,
    OPT_ASYNC,
    OPT_JSON,
    OPT_METHOD,
    OPT_PARAMS,
    OPT_EXPECT,
    OPT_PRIORITY
};

static const struct option bench_options[] = {
    {"redis", required_argument, NULL, CLI_OPT_REDIS},
    {"url", required_argument, NULL, CLI_OPT_REDIS},
    {"prefix", required_argument, NULL, CLI_OPT_PREFIX},
    {"timeout", required_argument, NULL, CLI_OPT_TIMEOUT},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"calls", required_argument, NULL, OPT_CALLS},
    {"sync", no_argument, NULL, OPT_SYNC},
    {"async", no_argument, NULL, OPT_ASYNC},
    {"json", no_argument, NULL, OPT_JSON},
    {"method", required_argument, NULL, OPT_METHOD},
    {"params", required_argument, NULL, OPT_PARAMS},
    {"expect", required_argument, NULL, OPT_EXPECT},
    {"priority", required_argument, NULL, OPT_PRIORITY},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fputs("Usage: rrpc bench [OPTIONS] SERVICE\n"
          "\n"
          "Calls a method of SERVICE as fast as it answers, from several connections\n"
          "at once, and reports calls per second, errors and latency percentiles.\n"
          "The default call is add [1, 2], and every result must be 3, so it also\n"
          "drives minimal workers that know nothing but add.\n"
          "\nOptions:\n",
          out);
    cli_print_connection_options(out);
    fputs("  --sync             each connection makes one call at a time, on a thread\n"
          "                     of its own with a sync client (the default)\n"
          "  --async            each connection is an async client on a thread and\n"
          "                     event loop of its own, with --window calls in flight\n"
          "                     (the service's workers must honour reply_to)\n"
          "  --connections C    concurrent connections (default: 1)\n"
          "  --window W         calls in flight per connection, --async only\n"
          "                     (default: 64)\n"
          "  --duration SECONDS run this long (default: 5) ...\n"
          "  --calls N          ... or make N calls in all, then stop\n"
          "  --method M         the method to call (default: add)\n"
          "  --params JSON      its params, an array or object (default: [1, 2])\n"
          "  --expect JSON      the result every call must return (default: 3 for the\n"
          "                     default call, else any result is accepted)\n"
          "  --timeout SECONDS  per-call timeout (default: 10)\n"
          "  --priority high|normal|low\n"
          "                     the calls' priority (default: normal)\n"
          "  --json             print the report as one JSON object\n"
          "  -h, --help         show this help\n"
          "\n"
          "While it runs on a terminal, a progress line is updated on stderr.  Ctrl-C\n"
          "stops early and still prints the report.  Latencies are those of the\n"
          "calls that succeeded, from a histogram precise to 0.4%.\n"
          "\n"
          "Examples:\n"
          "  rrpc bench calc\n"
          "  rrpc bench --connections 32 --duration 10 calc\n"
          "  rrpc bench --async --connections 4 --window 256 --json calc\n"
          "  rrpc bench --method echo --params '[\"x\"]' --expect '[\"x\"]' calc\n"
          "\n"
          "Exit status:\n"
          "  0  every call returned the expected result\n"
          "  1  at least one call failed or returned another result\n"
          "  2  usage error\n"
          "  4  Redis could not be reached, refused the login, or failed a command\n"
          "  5  any other error\n",
          out);
}

static int parse_json_option(const char *prog, const char *what, const char *text, json_t **out)
{
    json_error_t error;
    json_t *value = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (value == NULL)
        return cli_usage_error(prog, "%s is not valid JSON: %s (at character %d)", what, error.text,
                               error.position);
    json_decref(*out);
    *out = value;
    return CLI_EXIT_OK;
}

/* Reads one option; returns CLI_EXIT_OK or CLI_EXIT_USAGE. */
static int apply_option(const char *prog, int opt, struct bench_args *args)
{
    uint64_t n;
    switch (opt) {
    case 'h': args->help = 1; return CLI_EXIT_OK;
    case CLI_OPT_REDIS: args->conn.url = optarg; return CLI_EXIT_OK;
    case CLI_OPT_PREFIX: args->conn.prefix = optarg; return CLI_EXIT_OK;
    case CLI_OPT_TIMEOUT:
        if (cli_parse_seconds(optarg, &args->timeout_s) != 0)
            return cli_usage_error(prog, "--timeout wants a positive number of seconds, not '%s'",
                                   optarg);
        return CLI_EXIT_OK;
    case OPT_CONNECTIONS:
        if (cli_parse_count(optarg, 1, MAX_CONNECTIONS, &n) != 0)
            return cli_usage_error(prog, "--connections wants a count from 1 to %d, not '%s'",
                                   MAX_CONNECTIONS, optarg);
        args->connections = (long)n;
        return CLI_EXIT_OK;
    case OPT_WINDOW:
        if (cli_parse_count(optarg, 1, MAX_WINDOW, &n) != 0)
            return cli_usage_error(prog, "--window wants a count from 1 to %d, not '%s'",
                                   MAX_WINDOW, optarg);
        args->window = (long)n;
        return CLI_EXIT_OK;
    case OPT_DURATION:
        if (cli_parse_seconds(optarg, &args->duration_s) != 0)
            return cli_usage_error(prog, "--duration wants a positive number of seconds, not '%s'",
                                   optarg);
        return CLI_EXIT_OK;
    case OPT_CALLS:
        if (cli_parse_count(optarg, 1, UINT64_MAX, &n) != 0)
            return cli_usage_error(prog, "--calls wants a positive count, not '%s'", optarg);
        args->calls = n;
        return CLI_EXIT_OK;
    case OPT_SYNC: args->sync = 1; return CLI_EXIT_OK;
    case OPT_ASYNC: args->async = 1; return CLI_EXIT_OK;
    case OPT_JSON: args->json = 1; return CLI_EXIT_OK;
    case OPT_PRIORITY:
        if (cli_parse_priority(optarg, &args->priority) != 0)
            return cli_usage_error(prog, "--priority wants high, normal or low, not '%s'", optarg);
        return CLI_EXIT_OK;
    case OPT_METHOD:
        if (optarg[0] == '\0')
            return cli_usage_error(prog, "--method wants a non-empty name");
        args->method = optarg;
        return CLI_EXIT_OK;
    case OPT_PARAMS:
        json_decref(args->params);
        args->params = NULL;
        return cli_parse_params(prog, optarg, &args->params);
    case OPT_EXPECT:
        args->expect_given = 1;
        return parse_json_option(prog, "--expect", optarg, &args->expect);
    default:
        /* getopt_long has already said what was wrong. */
        fprintf(stderr, "Try '%s --help'.\n", prog);
        return CLI_EXIT_USAGE;
    }
}

/* Checks the combination of options and fills in the defaults. */
static int finish_args(const char *prog, struct bench_args *args)
{
    if (args->sync && args->async)
        return cli_usage_error(prog, "--sync and --async exclude each other");
    if (args->calls && args->duration_s > 0)
        return cli_usage_error(prog, "--duration and --calls exclude each other");
    if (!args->async && args->window > 1)
        return cli_usage_error(prog, "--window needs --async: a sync connection makes one call "
                                     "at a time");
    int default_call = args->method == NULL && args->params == NULL;
    if (args->method == NULL)
        args->method = "add";
    if (args->params == NULL && (args->params = json_pack("[ii]", 1, 2)) == NULL)
        return CLI_EXIT_INTERNAL;
    if (default_call && !args->expect_given && (args->expect = json_integer(3)) == NULL)
        return CLI_EXIT_INTERNAL;
    if (args->connections == 0)
        args->connections = 1;
    if (args->window == 0)
        args->window = args->async ? DEFAULT_ASYNC_WINDOW : 1;
    if (args->timeout_s == 0)
        args->timeout_s = DEFAULT_TIMEOUT_S;
    if (args->calls == 0 && args->duration_s == 0)
        args->duration_s = DEFAULT_DURATION_S;
    return CLI_EXIT_OK;
}

/* Fills ARGS from the command line.  Stops early, with args->help set,
 * when help was asked for. */
static int parse_args(int argc, char **argv, struct bench_args *args)
{
    const char *prog = argv[0];
    int opt;
    while ((opt = getopt_long(argc, argv, "h", bench_options, NULL)) != -1) {
        int status = apply_option(prog, opt, args);
        if (status != CLI_EXIT_OK || args->help)
            return status;
    }
    if (argc - optind < 1)
        return cli_usage_error(prog, "expected SERVICE");
    if (argc - optind > 1)
        return cli_usage_error(prog, "expected one SERVICE, not '%s' too", argv[optind + 1]);
    args->service = argv[optind];
    return finish_args(prog, args);
}

int cmd_bench(int argc, char **argv)
{
    const char *prog = argv[0];
    struct bench_args args;
    memset(&args, 0, sizeof args);
    int status = parse_args(argc, argv, &args);
    if (status == CLI_EXIT_OK && args.help)
        usage(stdout);
    else if (status == CLI_EXIT_OK)
        status = bench_run(prog, &args);
    json_decref(args.params);
    json_decref(args.expect);
    return status;
}
