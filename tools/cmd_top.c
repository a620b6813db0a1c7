/* cmd_top.c -- `rrpc top`: a live view of every registered service, in the
 * spirit of `redis-cli --stat`.
 *
 * Every --interval it reads the registry (rrpc_admin_services) and shows
 * each service's live workers, queue depth, dead letters and calls per
 * second, the latter from the change in the call counters since the
 * previous refresh.  Workers send their counters with each heartbeat
 * (about once a second), so the rate is smoothed over that period.  On a
 * terminal the screen is redrawn; otherwise each refresh is appended, and
 * with --json each refresh is one line of JSON.
 */
#include "ops.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_INTERVAL_S 1.0

static void usage(FILE *out)
{
    fputs("Usage: rrpc top [OPTIONS]\n"
          "\n"
          "Shows all registered services, refreshed every --interval: live workers,\n"
          "queue depth, dead letters, calls/s and errors/s (from the counters the\n"
          "workers send with each heartbeat), until interrupted or --iterations.\n"
          "With --json, each refresh is one line: {\"time\": ..., \"services\": [...]}.\n",
          out);
    ops_print_options(out, OPS_INTERVAL | OPS_ITERATIONS);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Adds "calls_per_s" and "errors_per_s" to each service, from PREV (the
 * previous refresh's {service: [calls, errors]}), and updates PREV. */
static void add_rates(json_t *services, json_t *prev, double elapsed)
{
    size_t i;
    json_t *s;
    json_array_foreach(services, i, s)
    {
        const char *name = json_string_value(json_object_get(s, "service"));
        json_t *before = json_object_get(prev, name);
        long long calls = ops_int(s, "calls"), errors = ops_int(s, "errors");
        double cps = 0, eps = 0;
        if (before != NULL && elapsed > 0) {
            cps = (double)(calls - json_integer_value(json_array_get(before, 0))) / elapsed;
            eps = (double)(errors - json_integer_value(json_array_get(before, 1))) / elapsed;
        }
        json_object_set_new(s, "calls_per_s", json_real(cps < 0 ? 0 : cps));
        json_object_set_new(s, "errors_per_s", json_real(eps < 0 ? 0 : eps));
        json_object_set_new(prev, name, json_pack("[I,I]", (json_int_t)calls, (json_int_t)errors));
    }
}

static void draw(const json_t *services, int tty, double interval)
{
    time_t t = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", localtime(&t));
    if (tty)
        fputs("\033[H\033[2J", stdout); /* home and clear: redraw in place */
    printf("rrpc top - %s - %zu service%s - every %.1f s\n", when, json_array_size(services),
           json_array_size(services) == 1 ? "" : "s", interval);
    printf("%-24s %7s %7s %9s %7s %10s %9s %10s\n", "SERVICE", "WORKERS", "QUEUE", "MAX_QUEUE",
           "DEAD", "CALLS/S", "ERRORS/S", "CALLS");
    size_t i;
    json_t *s;
    json_array_foreach(services, i, s)
    {
        char limit[32], name[256]; /* a service name is anyone's text: escaped */
        const char *service = json_string_value(json_object_get(s, "service"));
        if (ops_int(s, "max_queue") > 0)
            snprintf(limit, sizeof limit, "%lld", ops_int(s, "max_queue"));
        else
            snprintf(limit, sizeof limit, "-");
        printf("%-24s %7lld %7lld %9s %7lld %10.1f %9.1f %10lld\n",
               cli_safe(name, sizeof name, service ? service : "?"), ops_int(s, "workers"),
               ops_int(s, "queue"), limit, ops_int(s, "dead"),
               json_number_value(json_object_get(s, "calls_per_s")),
               json_number_value(json_object_get(s, "errors_per_s")), ops_int(s, "calls"));
    }
    if (!tty)
        putchar('\n');
    fflush(stdout);
}

int cmd_top(int argc, char **argv)
{
    const char *prog = argv[0];
    struct ops_args args;
    int status = ops_parse(argc, argv, OPS_INTERVAL | OPS_ITERATIONS, 0, 0, &args);
    if (status != CLI_EXIT_OK || args.help) {
        if (args.help)
            usage(stdout);
        return status;
    }
    double interval = args.interval_s > 0 ? args.interval_s : DEFAULT_INTERVAL_S;
    int tty = !args.json && isatty(STDOUT_FILENO);
    rrpc_admin *admin = NULL;
    if ((status = cli_open_admin(prog, &args.conn, &admin)) != CLI_EXIT_OK)
        return status;
    json_t *prev = json_object();
    double last = 0;
    for (long n = 0; args.iterations == 0 || n < args.iterations; n++) {
        if (n > 0)
            sleep_s(interval);
        json_t *services = NULL;
        int err = rrpc_admin_services(admin, &services);
        if (err != RRPC_OK) {
            status = cli_report_admin_failure(prog, admin, err);
            break;
        }
        double t = now_s();
        add_rates(services, prev, last > 0 ? t - last : 0);
        last = t;
        if (args.json) {
            json_t *doc = json_pack("{s:f, s:O}", "time", (double)time(NULL), "services", services);
            status = ops_print_json(prog, doc);
            json_decref(doc);
        } else {
            draw(services, tty, interval);
        }
        json_decref(services);
        if (status != CLI_EXIT_OK)
            break;
    }
    json_decref(prev);
    rrpc_admin_close(admin);
    return status;
}
