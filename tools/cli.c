/* cli.c -- the helpers every `rrpc` subcommand shares (see cli.h).
 *
 * Kept apart from the subcommands so that their messages, option help and
 * exit statuses cannot drift apart as subcommands are added.
 *
 * Most of what the CLI prints comes from Redis, i.e. from anyone who can
 * write there: a caller's message in a dead letter, a worker's host name,
 * a service name, an error text.  Printed raw, an ESC sequence in it would
 * drive the operator's terminal (retitle it, rewrite the screen, answer
 * back).  So human-readable output goes through cli_safe, which shows
 * control characters, C1 controls, bidi overrides and invalid UTF-8 as
 * escapes, and JSON output escapes the few of them JSON allows raw; its
 * values stay exactly the same.  Both are the library's rrpc_safe_text, the
 * rule its own log lines follow.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- text from Redis, made safe for a terminal ----------------------------- */

const char *cli_safe(char *out, size_t len, const char *s)
{
    return rrpc_safe_text(out, len, s, 0);
}

/* JSON text from jansson with DEL, C1 controls and bidi overrides as
 * \uXXXX too: they can only occur inside strings, so the JSON still reads
 * back to the same values.  New text (free()), or NULL when out of memory. */
static char *json_terminal_safe(const char *text)
{
    size_t len = strlen(text) * 6 + 1; /* DEL, one byte, becomes six */
    char *out = malloc(len);
    return out ? (char *)rrpc_safe_text(out, len, text, RRPC_SAFE_JSON) : NULL;
}

void cli_print_connection_options(FILE *out)
{
    fputs("  --url URL          the broker: redis://[user:password@]host[:port][/db]\n"
          "                     or unix:///path[?db=N] or\n"
          "                     redis+sentinel://host[:port][,...]/MASTER[/db] or\n"
          "                     redis+cluster://host[:port][,...] or\n"
          "                     amqp://user:password@host[:port]/vhost (RabbitMQ:\n"
          "                     call, notify, ping, describe, bench --sync)\n"
          "                     (default: $RRPC_URL, else $REDIS_URL, else\n"
          "                     redis://127.0.0.1:6379)\n"
          "                     amqps://...[?cacertfile=CA.pem]: AMQP over TLS\n"
          "  --redis URL        the same as --url\n"
          "  --prefix P         key prefix of the deployment (default: none)\n",
          out);
}

void cli_print_exit_statuses(FILE *out)
{
    fputs("Exit status:\n"
          "  0  success\n"
          "  1  the service answered with a JSON-RPC error (printed on stderr)\n"
          "  2  usage error (bad option, PARAMS, service or method name)\n"
          "  3  timed out waiting for the reply\n"
          "  4  Redis could not be reached, refused the login, or failed a command\n"
          "  5  any other error (e.g. a malformed reply)\n"
          "  6  the service is unavailable: it registered workers, none is alive\n"
          "  7  the service is overloaded: its queue is at its max_queue\n",
          out);
}

int cli_usage_error(const char *prog, const char *fmt, ...)
{
    va_list args;
    fprintf(stderr, "%s: ", prog);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    return CLI_EXIT_USAGE;
}

int cli_parse_priority(const char *text, int *priority)
{
    static const struct {
        const char *name;
        int value;
    } names[] = {
        {"high", RRPC_PRIORITY_HIGH}, {"normal", RRPC_PRIORITY_NORMAL}, {"low", RRPC_PRIORITY_LOW}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(text, names[i].name) == 0) {
            *priority = names[i].value;
            return 0;
        }
    return -1;
}

int cli_parse_seconds(const char *text, double *seconds)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !isfinite(value) || value <= 0)
        return -1;
    *seconds = value;
    return 0;
}

int cli_parse_count(const char *text, uint64_t min, uint64_t max, uint64_t *count)
{
    char *end;
    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (*end != '\0' || errno != 0 || value < min || value > max)
        return -1;
    *count = value;
    return 0;
}

static const char *json_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    default: return "a structure";
    }
}

int cli_parse_params(const char *prog, const char *text, json_t **params)
{
    json_error_t error;
    /* Decoding any value lets us say "must be an array, not a number"
     * instead of jansson's less helpful "'[' or '{' expected". */
    size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
    json_t *value = json_loads(text, flags, &error);
    if (!value)
        return cli_usage_error(prog, "PARAMS is not valid JSON: %s (at character %d)", error.text,
                               error.position);
    if (!json_is_array(value) && !json_is_object(value)) {
        int status = cli_usage_error(prog, "PARAMS must be a JSON array or object, not %s",
                                     json_type_name(value));
        json_decref(value);
        return status;
    }
    *params = value;
    return CLI_EXIT_OK;
}

int cli_exit_status(int err)
{
    switch (err) {
    case RRPC_OK: return CLI_EXIT_OK;
    case RRPC_EREMOTE: return CLI_EXIT_REMOTE;
    /* Every argument the CLI hands the library comes from the command
     * line, so a rejected argument is the user's to fix. */
    case RRPC_EINVAL: return CLI_EXIT_USAGE;
    case RRPC_ETIMEDOUT: return CLI_EXIT_TIMEOUT;
    case RRPC_ECONNECT:
    case RRPC_EAUTH:
    case RRPC_EURL:
    case RRPC_EREDIS: return CLI_EXIT_CONNECT;
    case RRPC_EUNAVAILABLE: return CLI_EXIT_UNAVAILABLE;
    case RRPC_EOVERLOADED: return CLI_EXIT_OVERLOADED;
    default: return CLI_EXIT_INTERNAL;
    }
}

static void report(const char *prog, int err, const char *detail)
{
    char safe[1024];
    if (detail && *detail)
        fprintf(stderr, "%s: %s\n", prog, cli_safe(safe, sizeof safe, detail));
    else
        fprintf(stderr, "%s: %s\n", prog, rrpc_strerror(err));
}

int cli_open_client(const char *prog, const struct cli_connection *conn, rrpc_client **client)
{
    rrpc_client_options opts;
    char errmsg[512] = "";
    rrpc_client_options_init(&opts);
    opts.url = conn->url;
    opts.key_prefix = conn->prefix;
    int err = rrpc_client_open(client, &opts, errmsg, sizeof errmsg);
    if (err != RRPC_OK)
        report(prog, err, errmsg);
    return cli_exit_status(err);
}

int cli_open_admin(const char *prog, const struct cli_connection *conn, rrpc_admin **admin)
{
    rrpc_client_options opts;
    char errmsg[512] = "";
    rrpc_client_options_init(&opts);
    opts.url = conn->url;
    opts.key_prefix = conn->prefix;
    int err = rrpc_admin_open(admin, &opts, errmsg, sizeof errmsg);
    if (err != RRPC_OK)
        report(prog, err, errmsg);
    return cli_exit_status(err);
}

int cli_report_admin_failure(const char *prog, const rrpc_admin *admin, int err)
{
    report(prog, err, admin ? rrpc_admin_errmsg(admin) : NULL);
    return cli_exit_status(err);
}

int cli_report_failure(const char *prog, const rrpc_client *client, int err)
{
    report(prog, err, client ? rrpc_client_errmsg(client) : NULL);
    return cli_exit_status(err);
}

static int reads_back_as(const char *text, const json_t *value)
{
    json_t *copy = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    int same = copy && json_equal(copy, value);
    json_decref(copy);
    return same;
}

/* jansson writes reals with 17 significant digits by default, so 1 + 5.1
 * would print as 6.0999999999999996.  Fewer digits are exact for most
 * values; use the fewest that still round-trip. */
static char *dump_shortest(const json_t *value, size_t flags)
{
    for (int digits = 15; digits < 17; digits++) {
        char *text = json_dumps(value, flags | JSON_REAL_PRECISION(digits));
        if (text && reads_back_as(text, value))
            return text;
        free(text);
    }
    return json_dumps(value, flags | JSON_REAL_PRECISION(17));
}

int cli_print_json(FILE *out, const json_t *value, int pretty)
{
    size_t flags = JSON_ENCODE_ANY | (pretty ? JSON_INDENT(2) : JSON_COMPACT);
    char *dumped = dump_shortest(value, flags);
    char *text = dumped ? json_terminal_safe(dumped) : NULL;
    free(dumped);
    if (!text)
        return -1;
    int failed = fprintf(out, "%s\n", text) < 0;
    free(text);
    return failed ? -1 : 0;
}
