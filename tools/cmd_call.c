/* cmd_call.c -- `rrpc call` and `rrpc notify`: one JSON-RPC call from the
 * shell.
 *
 * The two share their command line (SERVICE METHOD [PARAMS]) and differ
 * only in whether a reply is awaited, so they live together.  Output is
 * meant for scripts: the result alone on stdout, everything else on stderr,
 * and the exit status says what went wrong (cli.h).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

enum {
    OPT_IDEMPOTENCY_KEY = CLI_OPT_FIRST_FREE,
    OPT_TRACEPARENT,
    OPT_TRACESTATE,
    OPT_STREAM,
    OPT_TENANT,
    OPT_PRIORITY
};

/* Exit status of a call cancelled with Ctrl-C: 128 + SIGINT, as shells say. */
#define EXIT_CANCELLED 130

struct call_args {
    struct cli_connection conn;
    double timeout_s;            /* 0: the client's default */
    const char *idempotency_key; /* notify: NULL, or the notification's key */
    const char *traceparent;     /* call: NULL (a new trace), or the caller's */
    const char *tracestate;
    int pretty;
    int stream;         /* --stream: ask for progress, print each value as it comes */
    const char *tenant; /* --tenant: the request's tenant member, or NULL */
    int priority;       /* --priority: RRPC_PRIORITY_* */
    int help;
    const char *service;
    const char *method;
    json_t *params; /* NULL when PARAMS was omitted */
};

static const struct option call_options[] = {
    {"redis", required_argument, NULL, CLI_OPT_REDIS},
    {"url", required_argument, NULL, CLI_OPT_REDIS},
    {"prefix", required_argument, NULL, CLI_OPT_PREFIX},
    {"timeout", required_argument, NULL, CLI_OPT_TIMEOUT},
    {"pretty", no_argument, NULL, CLI_OPT_PRETTY},
    {"traceparent", required_argument, NULL, OPT_TRACEPARENT},
    {"tracestate", required_argument, NULL, OPT_TRACESTATE},
    {"stream", no_argument, NULL, OPT_STREAM},
    {"tenant", required_argument, NULL, OPT_TENANT},
    {"priority", required_argument, NULL, OPT_PRIORITY},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option notify_options[] = {
    {"redis", required_argument, NULL, CLI_OPT_REDIS},
    {"url", required_argument, NULL, CLI_OPT_REDIS},
    {"prefix", required_argument, NULL, CLI_OPT_PREFIX},
    {"idempotency-key", required_argument, NULL, OPT_IDEMPOTENCY_KEY},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void print_params_help(FILE *out)
{
    fputs("PARAMS is one JSON array (positional parameters) or object (named\n"
          "parameters); quote it for the shell.  Omit it to send no params.\n",
          out);
}

static void usage_call(FILE *out)
{
    fputs("Usage: rrpc call [OPTIONS] SERVICE METHOD [PARAMS]\n"
          "\n"
          "Calls METHOD of SERVICE, waits for the reply and prints the result as\n"
          "JSON on stdout.\n",
          out);
    print_params_help(out);
    fputs("\nOptions:\n", out);
    cli_print_connection_options(out);
    fputs("  --timeout SECONDS  how long to wait for the reply (default: 30)\n"
          "  --pretty           indent the result instead of printing one line\n"
          "  --traceparent VALUE\n"
          "                     send the call as part of this W3C trace\n"
          "                     (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>);\n"
          "                     without it the call starts a new trace\n"
          "  --tracestate VALUE the W3C tracestate sent with it\n"
          "  --stream           ask for the handler's progress and print each value as\n"
          "                     one JSON line as it comes, then the result\n"
          "  --tenant T         send the call as tenant T (1 to 128 bytes): the\n"
          "                     service's per-tenant limits count it apart\n"
          "  --priority high|normal|low\n"
          "                     the call's priority (default: normal): when the service\n"
          "                     has a backlog its workers take high calls first, low last\n"
          "  -h, --help         show this help\n"
          "\n"
          "Ctrl-C cancels the call: its request is taken back if no worker has it,\n"
          "a handler running it sees the cancel, and rrpc exits with status 130.\n"
          "\n"
          "A JSON-RPC error is printed on stderr as 'error CODE: MESSAGE', followed\n"
          "by 'data: JSON' when the error carries data.\n"
          "\n"
          "Examples:\n"
          "  rrpc call calc add '[1, 5.1]'\n"
          "  rrpc call --timeout 2 calc divide '{\"a\": 1, \"b\": 4}'\n"
          "  rrpc call --stream calc count '[3, 100]'\n"
          "  rrpc call --priority high calc add '[1, 2]'\n"
          "  rrpc call --traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 \\\n"
          "      calc add '[1, 2]'\n"
          "\n",
          out);
    cli_print_exit_statuses(out);
}

static void usage_notify(FILE *out)
{
    fputs("Usage: rrpc notify [OPTIONS] SERVICE METHOD [PARAMS]\n"
          "\n"
          "Sends a JSON-RPC notification: the service runs METHOD but sends no\n"
          "reply.  Prints nothing; returns once Redis has accepted the message.\n",
          out);
    print_params_help(out);
    fputs("\nOptions:\n", out);
    cli_print_connection_options(out);
    fputs("  --idempotency-key KEY\n"
          "                     a reliable service runs the notifications sent with the\n"
          "                     same KEY once (within its dedup window); without it every\n"
          "                     send runs.  At-most-once services run every send.\n"
          "  -h, --help         show this help\n"
          "\n"
          "Examples:\n"
          "  rrpc notify calc sleep '[100]'\n"
          "  rrpc notify --idempotency-key invoice-42 billing send '[42]'\n"
          "\n",
          out);
    cli_print_exit_statuses(out);
}

/* Reads one option; returns CLI_EXIT_OK or CLI_EXIT_USAGE. */
static int apply_option(const char *prog, int opt, struct call_args *args)
{
    switch (opt) {
    case 'h': args->help = 1; return CLI_EXIT_OK;
    case CLI_OPT_REDIS: args->conn.url = optarg; return CLI_EXIT_OK;
    case CLI_OPT_PREFIX: args->conn.prefix = optarg; return CLI_EXIT_OK;
    case CLI_OPT_TIMEOUT:
        if (cli_parse_seconds(optarg, &args->timeout_s) != 0)
            return cli_usage_error(prog, "--timeout wants a positive number of seconds, not '%s'",
                                   optarg);
        return CLI_EXIT_OK;
    case CLI_OPT_PRETTY: args->pretty = 1; return CLI_EXIT_OK;
    case OPT_TRACEPARENT: args->traceparent = optarg; return CLI_EXIT_OK;
    case OPT_TRACESTATE: args->tracestate = optarg; return CLI_EXIT_OK;
    case OPT_STREAM: args->stream = 1; return CLI_EXIT_OK;
    case OPT_TENANT: args->tenant = optarg; return CLI_EXIT_OK;
    case OPT_PRIORITY:
        if (cli_parse_priority(optarg, &args->priority) != 0)
            return cli_usage_error(prog, "--priority wants high, normal or low, not '%s'", optarg);
        return CLI_EXIT_OK;
    case OPT_IDEMPOTENCY_KEY:
        if (*optarg == '\0')
            return cli_usage_error(prog, "--idempotency-key wants a non-empty key");
        args->idempotency_key = optarg;
        return CLI_EXIT_OK;
    default:
        /* getopt_long has already said what was wrong. */
        fprintf(stderr, "Try '%s --help'.\n", prog);
        return CLI_EXIT_USAGE;
    }
}

static int apply_operands(const char *prog, int count, char **operands, struct call_args *args)
{
    if (count < 2)
        return cli_usage_error(prog, "expected SERVICE METHOD [PARAMS]");
    if (count > 3)
        return cli_usage_error(prog, "too many arguments: PARAMS must be one argument (quote it)");
    args->service = operands[0];
    args->method = operands[1];
    return count == 3 ? cli_parse_params(prog, operands[2], &args->params) : CLI_EXIT_OK;
}

/* Fills ARGS from the command line.  Stops early, with args->help set,
 * when help was asked for. */
static int parse_args(int argc, char **argv, const struct option *options, struct call_args *args)
{
    const char *prog = argv[0];
    int opt;
    memset(args, 0, sizeof *args);
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        int status = apply_option(prog, opt, args);
        if (status != CLI_EXIT_OK || args->help)
            return status;
    }
    return apply_operands(prog, argc - optind, argv + optind, args);
}

static int print_result(const char *prog, const json_t *result, int pretty)
{
    if (cli_print_json(stdout, result, pretty) != 0 || fflush(stdout) != 0) {
        fprintf(stderr, "%s: cannot write the result: %s\n", prog, strerror(errno));
        return CLI_EXIT_INTERNAL;
    }
    return CLI_EXIT_OK;
}

static int print_remote_error(const json_t *error)
{
    const char *message = json_string_value(json_object_get(error, "message"));
    const json_t *data = json_object_get(error, "data");
    char safe[1024];
    fprintf(stderr, "error %" JSON_INTEGER_FORMAT ": %s\n",
            json_integer_value(json_object_get(error, "code")),
            cli_safe(safe, sizeof safe, message ? message : ""));
    if (data) {
        fputs("data: ", stderr);
        cli_print_json(stderr, data, 0);
    }
    return CLI_EXIT_REMOTE;
}

/* Set by Ctrl-C while a call waits: the call stops (rrpc_call_options.cancel). */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* --stream: one progress value, one compact JSON line, at once. */
static void print_progress(const json_t *value, void *udata)
{
    (void)udata;
    cli_print_json(stdout, value, 0);
    fflush(stdout);
}

static int perform_call(const char *prog, rrpc_client *client, const struct call_args *args)
{
    json_t *result = NULL;
    json_t *error = NULL;
    rrpc_call_options opts;
    rrpc_call_options_init(&opts);
    opts.timeout_s = args->timeout_s;
    opts.traceparent = args->traceparent;
    opts.tracestate = args->tracestate;
    opts.cancel = &interrupted;
    opts.tenant = args->tenant;
    opts.priority = args->priority;
    if (args->stream)
        opts.progress = print_progress;
    struct sigaction sa, old_int;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    int err =
        rrpc_call_with(client, args->service, args->method, args->params, &opts, &result, &error);
    sigaction(SIGINT, &old_int, NULL);
    int status;
    if (err == RRPC_ECANCELED) {
        fprintf(stderr, "%s: cancelled\n", prog);
        status = EXIT_CANCELLED;
    } else if (err == RRPC_OK)
        status = print_result(prog, result, args->pretty);
    else if (err == RRPC_EREMOTE && error)
        status = print_remote_error(error);
    else
        status = cli_report_failure(prog, client, err);
    json_decref(result);
    json_decref(error);
    return status;
}

static int perform_notify(const char *prog, rrpc_client *client, const struct call_args *args)
{
    int err = rrpc_notify_idempotent(client, args->service, args->method, args->params,
                                     args->idempotency_key);
    return err == RRPC_OK ? CLI_EXIT_OK : cli_report_failure(prog, client, err);
}

typedef int (*perform_fn)(const char *prog, rrpc_client *client, const struct call_args *args);

/* The shape both subcommands share: parse, connect, act, clean up. */
static int run(int argc, char **argv, const struct option *options, void (*usage)(FILE *out),
               perform_fn perform)
{
    const char *prog = argv[0];
    struct call_args args;
    int status = parse_args(argc, argv, options, &args);
    if (status == CLI_EXIT_OK && args.help) {
        usage(stdout);
    } else if (status == CLI_EXIT_OK) {
        rrpc_client *client = NULL;
        status = cli_open_client(prog, &args.conn, &client);
        if (status == CLI_EXIT_OK)
            status = perform(prog, client, &args);
        rrpc_client_close(client);
    }
    json_decref(args.params);
    return status;
}

int cmd_call(int argc, char **argv)
{
    return run(argc, argv, call_options, usage_call, perform_call);
}

int cmd_notify(int argc, char **argv)
{
    return run(argc, argv, notify_options, usage_notify, perform_notify);
}
