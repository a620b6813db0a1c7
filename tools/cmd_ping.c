/* cmd_ping.c -- `rrpc ping`: a real round trip through a service's list.
 *
 * It calls the built-in method rpc.ping, so the request takes the same
 * path as any call (RPUSH onto the list, a worker pops and answers), and
 * reports the latency the caller saw.  A seed-style worker that does not
 * know rpc.ping answers "method not found", which still proves a full
 * round trip, so that counts as a successful ping too.
 */
#include "ops.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define DEFAULT_TIMEOUT_S 5.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *out)
{
    fputs("Usage: rrpc ping [OPTIONS] SERVICE\n"
          "\n"
          "Sends the built-in call rpc.ping through SERVICE's request list and\n"
          "prints the round-trip latency.  Every rrpc server answers it with its\n"
          "worker id; a worker that does not know rpc.ping answers 'method not\n"
          "found', which also counts as a round trip.  A registered service with no\n"
          "live worker fails at once (exit status 6).\n",
          out);
    ops_print_options(out, OPS_TIMEOUT | OPS_COUNT);
}

/* One ping; on a round trip fills *entry (new) and returns RRPC_OK. */
static int ping_once(rrpc_client *client, const char *service, double timeout_s, json_t **entry)
{
    json_t *result = NULL, *error = NULL;
    double start = now_s();
    int err = rrpc_call(client, service, "rpc.ping", NULL, timeout_s, &result, &error);
    double ms = (now_s() - start) * 1000.0;
    int not_found = err == RRPC_EREMOTE && json_integer_value(json_object_get(error, "code")) ==
                                               RRPC_JSONRPC_METHOD_NOT_FOUND;
    if (err == RRPC_OK || not_found) {
        *entry = json_pack("{s:f, s:s?, s:b}", "latency_ms", ms, "worker",
                           json_string_value(json_object_get(result, "worker")), "method_not_found",
                           not_found);
        err = RRPC_OK;
    }
    json_decref(result);
    json_decref(error);
    return err;
}

static void print_line(const char *service, const json_t *entry)
{
    const char *worker = json_string_value(json_object_get(entry, "worker"));
    char safe[256]; /* the worker's id is its own text: escaped */
    printf("reply from %s", cli_safe(safe, sizeof safe, service));
    if (worker)
        printf(" (worker %s)", cli_safe(safe, sizeof safe, worker));
    else
        printf(" (a worker without rpc.ping: 'method not found')");
    printf(" in %.3f ms\n", json_number_value(json_object_get(entry, "latency_ms")));
    fflush(stdout);
}

static json_t *summary(const char *service, json_t *pings)
{
    double min = 0, max = 0, sum = 0;
    size_t i;
    json_t *p;
    json_array_foreach(pings, i, p)
    {
        double ms = json_number_value(json_object_get(p, "latency_ms"));
        min = i == 0 || ms < min ? ms : min;
        max = ms > max ? ms : max;
        sum += ms;
    }
    size_t n = json_array_size(pings);
    return json_pack("{s:s, s:o, s:f, s:f, s:f}", "service", service, "pings", pings, "min_ms", min,
                     "avg_ms", n ? sum / (double)n : 0.0, "max_ms", max);
}

int cmd_ping(int argc, char **argv)
{
    const char *prog = argv[0];
    struct ops_args args;
    int status = ops_parse(argc, argv, OPS_TIMEOUT | OPS_COUNT, 1, 1, &args);
    if (status != CLI_EXIT_OK || args.help) {
        if (args.help)
            usage(stdout);
        return status;
    }
    const char *service = args.operands[0];
    long count = args.count > 0 ? args.count : 1;
    rrpc_client *client = NULL;
    if ((status = cli_open_client(prog, &args.conn, &client)) != CLI_EXIT_OK)
        return status;
    json_t *pings = json_array();
    for (long i = 0; i < count && status == CLI_EXIT_OK; i++) {
        json_t *entry = NULL;
        int err = ping_once(client, service,
                            args.timeout_s > 0 ? args.timeout_s : DEFAULT_TIMEOUT_S, &entry);
        if (err != RRPC_OK) {
            status = cli_report_failure(prog, client, err);
            break;
        }
        if (!args.json)
            print_line(service, entry);
        json_array_append_new(pings, entry);
    }
    json_t *doc = summary(service, pings);
    if (status == CLI_EXIT_OK && args.json)
        status = ops_print_json(prog, doc);
    else if (status == CLI_EXIT_OK && count > 1)
        printf("%ld pings: min %.3f ms, avg %.3f ms, max %.3f ms\n", count,
               json_number_value(json_object_get(doc, "min_ms")),
               json_number_value(json_object_get(doc, "avg_ms")),
               json_number_value(json_object_get(doc, "max_ms")));
    json_decref(doc);
    rrpc_client_close(client);
    return status;
}
