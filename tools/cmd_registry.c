/* cmd_registry.c -- `rrpc ls`, `rrpc info` and `rrpc stats`: what the
 * registry says about services (docs/PROTOCOL.md section 9).
 *
 * The three read the same records through rrpc_admin and differ only in
 * the question and the table, so they live together.  --json prints the
 * library's document unchanged, which is the stable interface for scripts;
 * the tables are for people.
 */
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*query_fn)(rrpc_admin *admin, const char *service, json_t **out);
typedef void (*table_fn)(const json_t *doc);

static int services_query(rrpc_admin *admin, const char *service, json_t **out)
{
    (void)service;
    return rrpc_admin_services(admin, out);
}

static void limit_text(char *buf, size_t len, long long max_queue)
{
    if (max_queue > 0)
        snprintf(buf, len, "%lld", max_queue);
    else
        snprintf(buf, len, "-");
}

static const char *str_or(const json_t *obj, const char *key, const char *fallback)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : fallback;
}

/* Every string in these tables comes from the registry, which any worker
 * (or anyone who can write its keys) fills: escaped with cli_safe. */
#define SAFE(buf, text) cli_safe(buf, sizeof buf, text)

static void ls_table(const json_t *doc)
{
    size_t i;
    json_t *s;
    char name[256];
    printf("%-24s %7s %7s %7s %9s %7s %10s %8s\n", "SERVICE", "WORKERS", "THREADS", "QUEUE",
           "MAX_QUEUE", "DEAD", "CALLS", "ERRORS");
    json_array_foreach(doc, i, s)
    {
        char limit[32];
        limit_text(limit, sizeof limit, ops_int(s, "max_queue"));
        printf("%-24s %7lld %7lld %7lld %9s %7lld %10lld %8lld\n",
               SAFE(name, str_or(s, "service", "?")), ops_int(s, "workers"), ops_int(s, "threads"),
               ops_int(s, "queue"), limit, ops_int(s, "dead"), ops_int(s, "calls"),
               ops_int(s, "errors"));
    }
    if (json_array_size(doc) == 0)
        puts("(no registered services)");
}

static void info_table(const json_t *doc)
{
    char limit[32];
    limit_text(limit, sizeof limit, ops_int(doc, "max_queue"));
    char shards[48] = ""; /* a sharded service's queue is over all its lists */
    if (ops_int(doc, "shards") > 1)
        snprintf(shards, sizeof shards, " over %lld shards", ops_int(doc, "shards"));
    char a[256], b[256], c[256], d[512];
    char prio[96] = ""; /* only when priorities are in use: PROTOCOL.md section 7 */
    long long high = ops_int(doc, "queue_high"), low = ops_int(doc, "queue_low");
    if (high > 0 || low > 0)
        snprintf(prio, sizeof prio, " (high %lld, normal %lld, low %lld)", high,
                 ops_int(doc, "queue") - high - low, low);
    printf("service %s: %s, queue %lld%s%s, max_queue %s, dead letters %lld\n",
           SAFE(a, str_or(doc, "service", "?")),
           json_is_true(json_object_get(doc, "registered")) ? "registered" : "not registered",
           ops_int(doc, "queue"), prio, shards, limit, ops_int(doc, "dead"));
    const json_t *workers = json_object_get(doc, "workers");
    printf("\n%-36s %-16s %8s %7s %-12s %10s\n", "WORKER", "HOST", "PID", "THREADS", "VERSION",
           "EXPIRES_IN");
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w)
    {
        printf("%-36s %-16s %8lld %7lld %-12s %9.1fs\n", SAFE(a, str_or(w, "id", "?")),
               SAFE(b, str_or(w, "host", "?")), ops_int(w, "pid"), ops_int(w, "threads"),
               SAFE(c, str_or(w, "version", "?")),
               json_number_value(json_object_get(w, "expires_in")));
    }
    if (json_array_size(workers) == 0)
        puts("(no live workers)");
    const json_t *limits = json_object_get(doc, "limits");
    if (json_object_get(doc, "limits_error") != NULL) {
        printf("\nlimits: the field does not parse (workers keep their last good ones): %s\n",
               SAFE(a, json_string_value(json_object_get(doc, "limits_error"))));
    } else if (json_is_object(limits)) {
        char *text = json_dumps(limits, JSON_COMPACT | JSON_SORT_KEYS);
        printf("\nlimits: %s\n", text ? SAFE(d, text) : "?");
        free(text);
    }
    printf("\n%-20s %-28s %s\n", "METHOD", "PARAMS", "DESCRIPTION");
    json_array_foreach(json_object_get(doc, "methods"), i, w)
    {
        json_t *params = json_object_get(w, "params");
        char *shape = params ? json_dumps(params, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        printf("%-20s %-28s %s\n", SAFE(a, str_or(w, "name", "?")), SAFE(b, shape ? shape : "-"),
               SAFE(d, str_or(w, "description", "")));
        free(shape);
    }
}

static void stats_table(const json_t *doc)
{
    char a[256];
    printf("service %s: %lld live worker(s), queue %lld, dead letters %lld (%lld ever)\n\n",
           SAFE(a, str_or(doc, "service", "?")), ops_int(doc, "workers"), ops_int(doc, "queue"),
           ops_int(doc, "dead"), ops_int(doc, "dead_total"));
    printf("%-24s %10s %8s %10s %10s\n", "METHOD", "CALLS", "ERRORS", "P50_MS", "P99_MS");
    const char *name;
    json_t *m;
    json_object_foreach(json_object_get(doc, "methods"), name, m)
    {
        printf("%-24s %10lld %8lld %10.3f %10.3f\n", SAFE(a, name), ops_int(m, "calls"),
               ops_int(m, "errors"), json_number_value(json_object_get(m, "p50_ms")),
               json_number_value(json_object_get(m, "p99_ms")));
    }
    if (json_object_size(json_object_get(doc, "methods")) == 0)
        puts("(no calls recorded)");
}

static int run(int argc, char **argv, int operands, const char *help, query_fn query,
               table_fn table)
{
    const char *prog = argv[0];
    struct ops_args args;
    int status = ops_parse(argc, argv, 0, operands, operands, &args);
    if (status != CLI_EXIT_OK || args.help) {
        if (args.help) {
            fputs(help, stdout);
            ops_print_options(stdout, 0);
        }
        return status;
    }
    rrpc_admin *admin = NULL;
    if ((status = cli_open_admin(prog, &args.conn, &admin)) != CLI_EXIT_OK)
        return status;
    json_t *doc = NULL;
    int err = query(admin, operands ? args.operands[0] : NULL, &doc);
    if (err != RRPC_OK)
        status = cli_report_admin_failure(prog, admin, err);
    else if (args.json)
        status = ops_print_json(prog, doc);
    else
        table(doc);
    json_decref(doc);
    rrpc_admin_close(admin);
    return status;
}

static int forget_query(rrpc_admin *admin, const char *service, json_t **out)
{
    int err = rrpc_admin_forget(admin, service);
    *out = err == RRPC_OK ? json_pack("{s:s, s:b}", "service", service, "forgotten", 1) : NULL;
    return err;
}

static void forget_table(const json_t *doc)
{
    char a[256];
    printf("forgot %s: callers now wait on it as on an unregistered service\n",
           SAFE(a, str_or(doc, "service", "?")));
}

int cmd_forget(int argc, char **argv)
{
    return run(argc, argv, 1,
               "Usage: rrpc forget [OPTIONS] SERVICE\n"
               "\n"
               "Removes SERVICE from the registry, so that callers wait on it like on a\n"
               "service that never registered instead of failing fast (e.g. after it was\n"
               "handed to workers that do not register).  A service stays registered for\n"
               "an hour after its last heartbeat otherwise.  Live workers register again\n"
               "with their next heartbeat; stats and dead letters are kept.\n",
               forget_query, forget_table);
}

int cmd_ls(int argc, char **argv)
{
    return run(argc, argv, 0,
               "Usage: rrpc ls [OPTIONS]\n"
               "\n"
               "Lists the registered services: live workers (and their threads), the\n"
               "requests waiting in the list (QUEUE), the queue limit, dead letters held,\n"
               "and calls and errors counted over all workers and restarts.  Services\n"
               "whose workers never registered (e.g. seed-style peers) are not listed.\n",
               services_query, ls_table);
}

int cmd_info(int argc, char **argv)
{
    return run(argc, argv, 1,
               "Usage: rrpc info [OPTIONS] SERVICE\n"
               "\n"
               "Shows SERVICE's live workers (host, pid, threads, rrpc version, seconds\n"
               "until their heartbeat expires) and the methods they serve, with their\n"
               "params shape and description.\n",
               rrpc_admin_info, info_table);
}

int cmd_stats(int argc, char **argv)
{
    return run(argc, argv, 1,
               "Usage: rrpc stats [OPTIONS] SERVICE\n"
               "\n"
               "Per method of SERVICE: calls, errors and latency p50/p99 (handler time,\n"
               "merged over every worker and restart; a percentile is the upper bound of\n"
               "its histogram bucket, within 25%), plus queue depth and dead letters.\n"
               "Workers send their counts with each heartbeat, so the last second or so\n"
               "may be missing.\n",
               rrpc_admin_stats, stats_table);
}
