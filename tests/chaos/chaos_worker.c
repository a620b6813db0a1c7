/* chaos_worker.c -- the service the chaos test (tests/chaos/chaos.py) kills.
 *
 * It is an ordinary rrpc server on the public API only, so what the chaos
 * test measures is what any user of the library gets.  Its one interesting
 * method, `effect`, leaves a trace in Redis for every time it really ran:
 * it adds HINCRBY chaos:effects <call id> 1 to its answer with
 * rrpc_request_add_effect, so the orchestrator can count afterwards how
 * often each call's effect happened (never, once, or more than once).  The
 * optional sleep makes SIGKILLs land while requests are being handled.
 * Over AMQP there is no Redis to count in: with --effects-log the effect
 * is the line "effect <call id> <request id>" on stderr, written when the
 * handler has done its work (one write(2), as the trace), and the
 * orchestrator counts those lines.  On Redis, --effects-log makes the
 * worker add no effect at all, so that reliable mode commits its answers
 * with the grouped layout (plain answers only, src/redis/reliable.c), the
 * one a busy service without effects runs; the request id (the caller's
 * reply key) lets the orchestrator look for answers pushed twice.
 *
 * Methods:
 *   effect [call_id, value, work_ms?]  records the effect, sleeps work_ms
 *                                      (0..10000), returns value * 2
 *   ping                               returns "pong"
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <rrpc/rrpc.h>

#include "parse_number.h" /* examples/ */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WORK_MS = 10000 };
#define MAX_VALUE ((json_int_t)1 << 50)

/* The hash the orchestrator reads; field = call id, value = times run. */
static const char *effects_key = "chaos:effects";

/* With --trace every start of `effect` is logged, so the orchestrator can
 * count handlers that ran more than once for one call (a redelivery after
 * a kill, or a caller's resend) even though the effect happened once. */
static int trace;
static int effects_log; /* --effects-log: effects are stderr lines */

static void trace_line(const char *what, const char *call_id)
{
    char line[300];
    int n = snprintf(line, sizeof line, "%s %.260s\n", what, call_id);
    /* One write(2) per line: lines from both threads stay whole in the log,
     * and nothing waits in a buffer when SIGKILL comes. */
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere to report it */
    }
}

/* "effect <call id> <request id>": the request id is the reply key of a
 * Redis caller ("-" if it is not a string). */
static void effect_line(rrpc_request *req, const char *call_id)
{
    const char *id = json_string_value(rrpc_request_id(req));
    char both[260];
    snprintf(both, sizeof both, "%.120s %.120s", call_id, id ? id : "-");
    trace_line("effect", both);
}

static void sleep_ms(json_int_t ms)
{
    struct timespec left = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    /* A stop signal may interrupt the sleep; the handler still finishes its
     * work, because stopping is graceful. */
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

static json_t *chaos_effect(rrpc_request *req, void *udata)
{
    const char *call_id;
    json_int_t value, work_ms = 0;
    (void)udata;
    if (rrpc_param_count_max(req, 3) != RRPC_OK ||
        rrpc_param_string(req, 0, "call_id", &call_id) != RRPC_OK ||
        rrpc_param_int(req, 1, "value", &value) != RRPC_OK)
        return NULL;
    json_t *params = rrpc_request_params(req);
    if (json_array_size(params) > 2 && rrpc_param_int(req, 2, "work_ms", &work_ms) != RRPC_OK)
        return NULL;
    if (work_ms < 0 || work_ms > MAX_WORK_MS)
        return rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS,
                                  "work_ms must be between 0 and 10000", NULL);
    /* Keep the doubled answer exact (and well inside what JSON peers read
     * exactly: 2^53). */
    if (value > MAX_VALUE || value < -MAX_VALUE)
        return rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS, "value out of range", NULL);
    if (trace)
        trace_line("start", call_id);
    const char *argv[] = {"HINCRBY", effects_key, call_id, "1"};
    if (!effects_log && rrpc_request_add_effect(req, 4, argv) != RRPC_OK)
        return NULL; /* -32603: the effect could not be recorded */
    sleep_ms(work_ms);
    if (effects_log)
        effect_line(req, call_id);
    return json_integer(value * 2);
}

static json_t *chaos_ping(rrpc_request *req, void *udata)
{
    (void)udata;
    if (rrpc_param_count_max(req, 0) != RRPC_OK)
        return NULL;
    return json_string("pong");
}

/* --- command line ---------------------------------------------------- */

enum {
    OPT_REDIS = 0x100,
    OPT_SERVICE,
    OPT_WORKERS,
    OPT_RELIABLE,
    OPT_MAX_DELIVERIES,
    OPT_HEARTBEAT_TTL,
    OPT_EFFECTS_KEY,
    OPT_TRACE,
    OPT_SHARDS,
    OPT_EFFECTS_LOG,
    OPT_REPLY_TTL
};

static const struct option long_options[] = {
    {"redis", required_argument, NULL, OPT_REDIS},
    {"service", required_argument, NULL, OPT_SERVICE},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"reliable", no_argument, NULL, OPT_RELIABLE},
    {"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES},
    {"heartbeat-ttl", required_argument, NULL, OPT_HEARTBEAT_TTL},
    {"effects-key", required_argument, NULL, OPT_EFFECTS_KEY},
    {"trace", no_argument, NULL, OPT_TRACE},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"effects-log", no_argument, NULL, OPT_EFFECTS_LOG},
    {"reply-ttl", required_argument, NULL, OPT_REPLY_TTL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fputs("Usage: chaos_worker [OPTIONS]\n"
          "\n"
          "Serves `effect` and `ping` for the chaos test until SIGINT or SIGTERM.\n"
          "\n"
          "Options:\n"
          "  --redis URL           Redis to use (default: $REDIS_URL)\n"
          "  --service NAME        service name (default: chaos)\n"
          "  --workers N           worker threads (default: 2)\n"
          "  --reliable            at-least-once delivery with dedup (default: at-most-once)\n"
          "  --max-deliveries N    reliable: deliveries before a dead letter (default: 3)\n"
          "  --heartbeat-ttl S     seconds of silence that mean dead (library default: 5)\n"
          "  --effects-key KEY     hash that counts effects (default: chaos:effects)\n"
          "  --trace               log \"start <call id>\" on stderr when `effect` starts\n"
          "  --shards N            spread the service over N request lists (default: 1)\n"
          "  --effects-log         log each effect as \"effect CALL_ID\" on stderr instead\n"
          "                        of counting it in Redis (AMQP; on Redis: no effect\n"
          "                        added, so reliable commits are plain answers)\n"
          "  --reply-ttl S         expiry of reply keys in seconds (library default: 60)\n"
          "  -h, --help            show this help\n",
          out);
}

static int usage_error(const char *option, const char *got)
{
    fprintf(stderr, "chaos_worker: bad value '%s' for --%s\nTry 'chaos_worker --help'.\n", got,
            option);
    return 2;
}

/* Returns 0 to serve, or the exit status of a usage error. */
static int parse_options(int argc, char **argv, rrpc_server_options *opts)
{
    int opt;
    while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_REDIS: opts->url = optarg; break;
        case OPT_SERVICE: opts->service = optarg; break;
        case OPT_WORKERS:
            if (parse_int(optarg, 1, 256, &opts->workers) != 0)
                return usage_error("workers", optarg);
            break;
        case OPT_RELIABLE: opts->reliable = 1; break;
        case OPT_MAX_DELIVERIES:
            if (parse_int(optarg, 1, 1000, &opts->max_deliveries) != 0)
                return usage_error("max-deliveries", optarg);
            break;
        case OPT_HEARTBEAT_TTL:
            if (parse_seconds(optarg, &opts->heartbeat_ttl_s) != 0)
                return usage_error("heartbeat-ttl", optarg);
            break;
        case OPT_EFFECTS_KEY: effects_key = optarg; break;
        case OPT_TRACE: trace = 1; break;
        case OPT_EFFECTS_LOG: effects_log = 1; break;
        case OPT_REPLY_TTL:
            if (parse_int(optarg, 1, 86400, &opts->reply_ttl_s) != 0)
                return usage_error("reply-ttl", optarg);
            break;
        case OPT_SHARDS:
            if (parse_int(optarg, 1, 64, &opts->shards) != 0)
                return usage_error("shards", optarg);
            break;
        case 'h': usage(stdout); exit(0);
        default: fputs("Try 'chaos_worker --help'.\n", stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "chaos_worker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int serve(const rrpc_server_options *opts)
{
    rrpc_server *server = NULL;
    int err = rrpc_server_new(&server, opts);
    if (err == RRPC_OK)
        err = rrpc_server_register(server, "effect", chaos_effect, NULL,
                                   "effect(call_id, value, work_ms?): counts call_id, value*2");
    if (err == RRPC_OK)
        err = rrpc_server_register(server, "ping", chaos_ping, NULL, "ping(): \"pong\"");
    if (err == RRPC_OK)
        err = rrpc_server_run(server); /* until SIGINT/SIGTERM (or SIGKILL) */
    if (err != RRPC_OK) {
        const char *detail = server ? rrpc_server_errmsg(server) : "";
        fprintf(stderr, "chaos_worker: %s\n", *detail ? detail : rrpc_strerror(err));
    }
    rrpc_server_free(server);
    return err == RRPC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    rrpc_server_options opts;
    rrpc_server_options_init(&opts);
    opts.service = "chaos";
    opts.workers = 2;
    int status = parse_options(argc, argv, &opts);
    return status != 0 ? status : serve(&opts);
}
