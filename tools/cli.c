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
 * values stay exactly the same.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- text from Redis, made safe for a terminal ----------------------------- */

/* Decodes the UTF-8 sequence at S (N bytes left): its length, with the code
 * point in *cp, or 0 if it is not valid (truncated, overlong, a surrogate,
 * beyond U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (len == 0 || s[0] > 0xF4 || n < len)
        return 0;
    uint32_t c = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* Code points beyond ASCII that a terminal acts on rather than shows: the
 * C1 controls (U+009B is CSI) and the bidirectional overrides and
 * isolates, which reorder what follows them ("Trojan Source"), plus the
 * line and paragraph separators. */
static int unsafe_code_point(uint32_t c)
{
    return (c >= 0x80 && c <= 0x9F) || c == 0x200E || c == 0x200F || (c >= 0x2028 && c <= 0x202E) ||
           (c >= 0x2066 && c <= 0x2069);
}

/* Appends TEXT (N bytes) to OUT if it fits whole in LEN; 0 if it did not. */
static int put_whole(char *out, size_t len, size_t *used, const char *text, size_t n)
{
    if (*used + n >= len)
        return 0;
    memcpy(out + *used, text, n);
    *used += n;
    return 1;
}

const char *cli_safe(char *out, size_t len, const char *s)
{
    size_t used = 0, n = strlen(s);
    const unsigned char *p = (const unsigned char *)s;
    if (len == 0)
        return out;
    for (size_t i = 0; i < n;) {
        char esc[16];
        uint32_t cp = 0;
        size_t step = p[i] < 0x80 ? 1 : utf8_decode(p + i, n - i, &cp);
        const char *piece = s + i;
        size_t piece_len = step;
        if (step == 0) { /* not UTF-8: the byte, in hex */
            piece_len = (size_t)snprintf(esc, sizeof esc, "\\x%02x", p[i]);
            piece = esc;
            step = 1;
        } else if (p[i] < 0x20 || p[i] == 0x7F) {
            const char *named = p[i] == '\n'   ? "\\n"
                                : p[i] == '\t' ? "\\t"
                                : p[i] == '\r' ? "\\r"
                                               : NULL;
            piece_len = named ? (size_t)snprintf(esc, sizeof esc, "%s", named)
                              : (size_t)snprintf(esc, sizeof esc, "\\x%02x", p[i]);
            piece = esc;
        } else if (step > 1 && unsafe_code_point(cp)) {
            piece_len = (size_t)snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            piece = esc;
        }
        if (!put_whole(out, len, &used, piece, piece_len))
            break; /* truncated between characters, never inside one */
        i += step;
    }
    out[used] = '\0';
    return out;
}

/* JSON text from jansson (valid UTF-8, C0 controls already escaped) with
 * DEL, C1 controls and bidi overrides as \uXXXX too: they can only occur
 * inside strings, so the JSON still reads back to the same values.  New
 * text (free()), or NULL when out of memory. */
static char *json_terminal_safe(const char *text)
{
    size_t n = strlen(text), used = 0;
    char *out = malloc(n * 6 + 1); /* DEL, one byte, becomes six */
    if (out == NULL)
        return NULL;
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        uint32_t cp = p[i];
        size_t step = p[i] < 0x80 ? 1 : utf8_decode(p + i, n - i, &cp);
        if (step == 0) { /* cannot happen with jansson: copied as is */
            step = 1;
            cp = 0;
        }
        if (cp == 0x7F || (step > 1 && unsafe_code_point(cp))) {
            used += (size_t)sprintf(out + used, "\\u%04x", (unsigned)cp);
        } else {
            memcpy(out + used, text + i, step);
            used += step;
        }
        i += step;
    }
    out[used] = '\0';
    return out;
}

void cli_print_connection_options(FILE *out)
{
    fputs("  --redis URL        Redis to use: redis://[user:password@]host[:port][/db]\n"
          "                     or unix:///path[?db=N] or\n"
          "                     redis+sentinel://host[:port][,...]/MASTER[/db] or\n"
          "                     redis+cluster://host[:port][,...] (not --async)\n"
          "                     (default: $REDIS_URL, else redis://127.0.0.1:6379)\n"
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
