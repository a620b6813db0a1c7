/* cli.h -- what the `rrpc` subcommands share.
 *
 * Every subcommand lives in its own cmd_*.c file, exposes one entry point
 * with the signature of cli_command_fn and is listed in the table in rrpc.c.
 * The helpers here keep option handling, error reporting and exit statuses
 * identical across subcommands, so scripts can rely on them.
 */
#ifndef RRPC_TOOLS_CLI_H
#define RRPC_TOOLS_CLI_H

#include <rrpc/rrpc.h>

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses.  They are part of the CLI's interface: scripts branch on
 * them, so a value never changes meaning once released. */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_REMOTE = 1,      /* the service answered with a JSON-RPC error */
    CLI_EXIT_USAGE = 2,       /* bad command line */
    CLI_EXIT_TIMEOUT = 3,     /* no reply in time */
    CLI_EXIT_CONNECT = 4,     /* Redis unreachable, refused us, or errored */
    CLI_EXIT_INTERNAL = 5,    /* anything else, e.g. a malformed reply */
    CLI_EXIT_UNAVAILABLE = 6, /* the service registered workers but none is alive */
    CLI_EXIT_OVERLOADED = 7   /* the service's queue is full (max_queue) */
};

/* A subcommand.  argv[0] is "rrpc NAME" (so getopt's own messages name the
 * subcommand) and getopt's state is fresh.  Returns an enum cli_exit. */
typedef int (*cli_command_fn)(int argc, char **argv);

int cmd_call(int argc, char **argv);
int cmd_notify(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_dead(int argc, char **argv);
int cmd_ping(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_forget(int argc, char **argv);
int cmd_limits(int argc, char **argv);
int cmd_describe(int argc, char **argv);
int cmd_web(int argc, char **argv);

/* getopt_long values for long options that several subcommands accept.
 * They start above any character so they never clash with short options. */
enum cli_option {
    CLI_OPT_REDIS = 0x100,
    CLI_OPT_PREFIX,
    CLI_OPT_TIMEOUT,
    CLI_OPT_PRETTY,
    CLI_OPT_JSON,
    CLI_OPT_FIRST_FREE /* subcommands number their own options from here */
};

/* Where to find the service; NULL fields mean the library's defaults. */
struct cli_connection {
    const char *url;
    const char *prefix;
};

/* Help text fragments, so every --help describes shared things alike. */
void cli_print_connection_options(FILE *out);
void cli_print_exit_statuses(FILE *out);

/* Prints "PROG: MESSAGE" and a pointer to --help on stderr; returns
 * CLI_EXIT_USAGE so callers can `return cli_usage_error(...)`. */
int cli_usage_error(const char *prog, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Parses a positive, finite number of seconds.  0 on success, -1 if TEXT
 * is not one. */
int cli_parse_seconds(const char *text, double *seconds);

/* Parses "high", "normal" or "low" (--priority) into RRPC_PRIORITY_*.  0
 * on success, -1 if TEXT is none of them. */
int cli_parse_priority(const char *text, int *priority);

/* Parses a count in [MIN, MAX]: decimal digits only, so no sign (strtoull
 * would turn "-5" into 2^64 - 5), no blanks, nothing after.  0 on success,
 * -1 if TEXT is not one. */
int cli_parse_count(const char *text, uint64_t min, uint64_t max, uint64_t *count);

/* Parses PARAMS text, which must be a JSON array or object.  On success
 * stores a new reference and returns CLI_EXIT_OK; otherwise reports why
 * and returns CLI_EXIT_USAGE. */
int cli_parse_params(const char *prog, const char *text, json_t **params);

/* The exit status for an rrpc_err code. */
int cli_exit_status(int err);

/* Opens a client, reporting a failure on stderr.  Returns CLI_EXIT_OK or
 * the exit status for the failure. */
int cli_open_client(const char *prog, const struct cli_connection *conn, rrpc_client **client);

/* Opens an operations handle (rrpc_admin), reporting a failure on stderr.
 * Returns CLI_EXIT_OK or the exit status for the failure. */
int cli_open_admin(const char *prog, const struct cli_connection *conn, rrpc_admin **admin);

/* Reports a failed rrpc_admin call like cli_report_failure. */
int cli_report_admin_failure(const char *prog, const rrpc_admin *admin, int err);

/* Reports a failed library call on stderr as "PROG: DETAIL", DETAIL being
 * the client's message (or rrpc_strerror() if it has none; CLIENT may be
 * NULL), and returns its exit status. */
int cli_report_failure(const char *prog, const rrpc_client *client, int err);

/* S made safe to print for people: control characters (C0 and DEL, as
 * \n, \t, \r or \xNN), C1 controls and bidi overrides (\uNNNN) and bytes
 * that are not UTF-8 (\xNN) escaped, so text from Redis cannot drive the
 * terminal.  Written into OUT (LEN bytes, truncated between characters);
 * returns OUT.  Use it on every string from Redis in human-readable
 * output, never in --json output. */
const char *cli_safe(char *out, size_t len, const char *s);
/* Writes VALUE and a newline to OUT, compact or indented, with reals in
 * the shortest form that reads back to the same number, and DEL, C1
 * controls and bidi overrides escaped as \uNNNN like JSON's own control
 * characters (the same value, but nothing a terminal acts on).  0 on
 * success. */
int cli_print_json(FILE *out, const json_t *value, int pretty);

#endif /* RRPC_TOOLS_CLI_H */
