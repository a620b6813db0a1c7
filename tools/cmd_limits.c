/* cmd_limits.c -- `rrpc limits`: show, set or clear a service's rate limits
 * and concurrency caps (docs/PROTOCOL.md section 9, "Limits").
 *
 * The limits live in the service's configuration in Redis, so setting them
 * needs no restart: every C worker of the service follows within a
 * heartbeat.  Method names are checked against what the live workers
 * serve only to warn: a worker that serves the method may come later.
 */
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAFE(buf, text) cli_safe(buf, sizeof buf, text)

static const char help[] =
    "Usage: rrpc limits [OPTIONS] SERVICE [set LIMITS | clear]\n"
    "\n"
    "Shows SERVICE's rate limits and concurrency caps, or sets them to LIMITS\n"
    "(a JSON object, quoted for the shell), or clears them.  Its running workers\n"
    "follow within a heartbeat (about a second); no restart.  LIMITS maps a\n"
    "method name, or \"*\" for the whole service, to\n"
    "  {\"rate\": N, \"burst\": B, \"concurrency\": M, \"per_tenant\": true|false,\n"
    "   \"over\": \"wait\"|\"refuse\"}\n"
    "(rate: calls per second, > 0; burst >= 1, default 1; concurrency: calls\n"
    "running at once over all workers; per_tenant: count each 'tenant' member\n"
    "apart; over: a call over a limit waits in Redis, or is answered -32003 with\n"
    "retry_after_ms -- the default).  LIMITS that do not parse are refused; a\n"
    "method no live worker serves is set, with a warning.  The service must be\n"
    "registered (a server of it started).\n"
    "\n"
    "Examples:\n"
    "  rrpc limits calc set '{\"add\": {\"rate\": 100}, \"*\": {\"concurrency\": 8}}'\n"
    "  rrpc limits calc set '{\"sleep\": {\"concurrency\": 2, \"over\": \"wait\"}}'\n"
    "  rrpc limits calc clear\n"
    "\n";

/* Warns about each method of LIMITS that no live worker of INFO serves. */
static void warn_unknown(const char *prog, const json_t *limits, const json_t *info)
{
    const char *name;
    json_t *rule;
    json_object_foreach((json_t *)limits, name, rule)
    {
        if (strcmp(name, "*") == 0)
            continue;
        int served = 0;
        char n[256];
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(info, "methods"), i, m)
        {
            const char *served_name = json_string_value(json_object_get(m, "name"));
            served |= served_name != NULL && strcmp(served_name, name) == 0;
        }
        if (!served)
            fprintf(stderr, "%s: warning: no live worker serves \"%s\"\n", prog, SAFE(n, name));
    }
}

static void print_limits(const json_t *info)
{
    const json_t *limits = json_object_get(info, "limits");
    const char *error = json_string_value(json_object_get(info, "limits_error"));
    if (error != NULL) {
        char a[512], b[512];
        printf("limits field does not parse (the workers keep their last good limits): %s\n"
               "field: %s\n",
               SAFE(a, error),
               SAFE(b, json_string_value(limits) ? json_string_value(limits) : "?"));
        return;
    }
    if (!json_is_object(limits)) {
        puts("(no limits)");
        return;
    }
    printf("%-24s %10s %6s %12s %10s %7s\n", "METHOD", "RATE/S", "BURST", "CONCURRENCY",
           "PER_TENANT", "OVER");
    const char *name;
    json_t *r;
    json_object_foreach((json_t *)limits, name, r)
    {
        const json_t *rate = json_object_get(r, "rate"), *burst = json_object_get(r, "burst");
        const json_t *conc = json_object_get(r, "concurrency");
        const char *over = json_string_value(json_object_get(r, "over"));
        char a[32] = "-", b[32] = "-", c[32] = "-";
        if (rate)
            snprintf(a, sizeof a, "%g", json_number_value(rate));
        if (burst)
            snprintf(b, sizeof b, "%g", json_number_value(burst));
        if (conc)
            snprintf(c, sizeof c, "%lld", (long long)json_integer_value(conc));
        char n[256];
        printf("%-24s %10s %6s %12s %10s %7s\n", SAFE(n, name), a, b, c,
               json_is_true(json_object_get(r, "per_tenant")) ? "yes" : "no",
               over ? over : "refuse");
    }
}

int cmd_limits(int argc, char **argv)
{
    const char *prog = argv[0];
    struct ops_args args;
    int status = ops_parse(argc, argv, 0, 1, 3, &args);
    if (status != CLI_EXIT_OK || args.help) {
        if (args.help) {
            fputs(help, stdout);
            ops_print_options(stdout, 0);
        }
        return status;
    }
    const char *service = args.operands[0];
    const char *action = args.noperands > 1 ? args.operands[1] : NULL;
    const char *text = NULL;
    if (action != NULL && strcmp(action, "set") == 0 && args.noperands == 3)
        text = args.operands[2];
    else if (action != NULL && (strcmp(action, "clear") != 0 || args.noperands != 2))
        return cli_usage_error(prog, "expected SERVICE [set LIMITS | clear]");
    rrpc_admin *admin = NULL;
    if ((status = cli_open_admin(prog, &args.conn, &admin)) != CLI_EXIT_OK)
        return status;
    json_t *info = NULL;
    int err = action ? rrpc_admin_set_limits(admin, service, text) : RRPC_OK;
    if (err == RRPC_OK)
        err = rrpc_admin_info(admin, service, &info);
    if (err != RRPC_OK) {
        status = cli_report_admin_failure(prog, admin, err);
    } else {
        if (text != NULL)
            warn_unknown(prog, json_object_get(info, "limits"), info);
        if (args.json) {
            json_t *doc = json_pack("{s:s,s:O}", "service", service, "limits",
                                    json_object_get(info, "limits"));
            if (json_object_get(info, "limits_error"))
                json_object_set(doc, "limits_error", json_object_get(info, "limits_error"));
            status = ops_print_json(prog, doc);
            json_decref(doc);
        } else {
            print_limits(info);
        }
    }
    json_decref(info);
    rrpc_admin_close(admin);
    return status;
}
