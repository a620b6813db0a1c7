/* rrpc.c -- the `rrpc` command: talks to rrpc services from the shell.
 *
 * This file only dispatches.  Each subcommand is a cli_command_fn in its
 * own cmd_*.c file; adding one means writing that file and adding a line
 * to the table below, which also feeds `rrpc --help`.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

struct subcommand {
    const char *name;
    const char *summary; /* one line for `rrpc --help` */
    cli_command_fn run;
};

static const struct subcommand subcommands[] = {
    {"call", "call a method and print its result", cmd_call},
    {"notify", "send a notification (no reply is awaited)", cmd_notify},
    {"bench", "measure calls/s and latency of a service", cmd_bench},
    {"ls", "list registered services: live workers, queue depth", cmd_ls},
    {"info", "show a service's workers and methods", cmd_info},
    {"ping", "time a real round trip through a service's list", cmd_ping},
    {"stats", "per-method calls, errors, latency p50/p99 of a service", cmd_stats},
    {"top", "a live, refreshing view of all services", cmd_top},
    {"dead", "list, requeue or purge a service's dead letters", cmd_dead},
    {"forget", "drop a service from the registry (no more fail fast)", cmd_forget},
    {"limits", "show, set or clear a service's rate limits and caps", cmd_limits},
    {"describe", "show a service's methods, params and errors (rpc.discover)", cmd_describe},
    {"web", "serve /metrics, health probes and a dashboard over HTTP", cmd_web},
};

#define SUBCOMMAND_COUNT (sizeof subcommands / sizeof subcommands[0])

static void usage(FILE *out)
{
    fputs("Usage: rrpc [--help] [--version] COMMAND [ARGS...]\n"
          "\n"
          "Talks to services that speak JSON-RPC 2.0 over Redis lists.\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++)
        fprintf(out, "  %-8s  %s\n", subcommands[i].name, subcommands[i].summary);
    fputs("  help      show the help of a command\n"
          "\n"
          "Run 'rrpc help COMMAND' or 'rrpc COMMAND --help' for a command's options.\n"
          "\n"
          "Environment:\n"
          "  RRPC_URL   the broker to use when --url is not given (Redis or AMQP)\n"
          "  REDIS_URL  the Redis to use when neither --url nor RRPC_URL is given\n"
          "             (else redis://127.0.0.1:6379)\n"
          "\n",
          out);
    cli_print_exit_statuses(out);
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("rrpc: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n\n", stderr);
    usage(stderr);
    return CLI_EXIT_USAGE;
}

static const struct subcommand *find_subcommand(const char *name)
{
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++)
        if (strcmp(subcommands[i].name, name) == 0)
            return &subcommands[i];
    return NULL;
}

/* Runs CMD with ARGV[1..] as its arguments.  ARGV[0] becomes "rrpc NAME"
 * so that getopt's messages and our own name the subcommand. */
static int run_subcommand(const struct subcommand *cmd, int argc, char **argv)
{
    char prog[64];
    snprintf(prog, sizeof prog, "rrpc %s", cmd->name);
    argv[0] = prog;
    return cmd->run(argc, argv);
}

/* `rrpc help [COMMAND]`: the same text as `rrpc COMMAND --help`. */
static int help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (argc > 2)
        return usage_error("help takes one COMMAND, not '%s' too", argv[2]);
    const struct subcommand *cmd = find_subcommand(argv[1]);
    if (!cmd)
        return usage_error("no such command: '%s'", argv[1]);
    char help_flag[] = "--help";
    char *help_argv[] = {argv[1], help_flag, NULL};
    return run_subcommand(cmd, 2, help_argv);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s", "a COMMAND is required");
    const char *first = argv[1];
    if (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0 || strcmp(first, "help") == 0)
        return help(argc - 1, argv + 1);
    if (strcmp(first, "--version") == 0 || strcmp(first, "-V") == 0) {
        printf("rrpc %s\n", rrpc_version());
        return CLI_EXIT_OK;
    }
    if (first[0] == '-')
        return usage_error("unknown option '%s'", first);
    const struct subcommand *cmd = find_subcommand(first);
    if (!cmd)
        return usage_error("no such command: '%s'", first);
    return run_subcommand(cmd, argc - 1, argv + 1);
}
