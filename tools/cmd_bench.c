/* cmd_bench.c -- `rrpc bench`: drives a service with calls and reports
 * throughput and latency.
 *
 * Two kinds of caller, each on --connections threads of its own:
 *   --sync   every thread owns an rrpc_client and makes one call at a time,
 *            like the callers of the post's design (and of the seed);
 *   --async  every thread owns a libevent base and an rrpc_async client on
 *            it, and keeps --window calls in flight: each callback starts
 *            the next call.
 * Threads share nothing while they run but a stop flag; each records its
 * latencies in a histogram of its own, and the histograms are merged at
 * the end.  The histogram is log-linear (HdrHistogram's layout): exact
 * below 256 ns, then 128 buckets per power of two, so every percentile is
 * within 0.4% of the true value.  It covers up to 2^41 ns (36 minutes).
 *
 * A call counts as an error when it fails in any way (transport, timeout,
 * a JSON-RPC error object) or when its result differs from the expected
 * one (3 for the default call, add [1, 2]).  Errors are counted, not
 * timed; the exit status is 1 if there was any.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "cli.h"

#include <event2/event.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DURATION_S   5.0
#define DEFAULT_TIMEOUT_S    10.0
#define DEFAULT_ASYNC_WINDOW 64
#define MAX_CONNECTIONS      1024
#define MAX_WINDOW           100000
#define PROGRESS_INTERVAL_S  0.25
#define ASYNC_TICK_US        50000 /* how often an async thread notices a stop */
#define ERRMSG_LEN           256

/* ---- options --------------------------------------------------------- */

enum bench_option {
    OPT_CONNECTIONS = CLI_OPT_FIRST_FREE,
    OPT_WINDOW,
    OPT_DURATION,
    OPT_CALLS,
    OPT_SYNC,
    OPT_ASYNC,
    OPT_JSON,
    OPT_METHOD,
    OPT_PARAMS,
    OPT_EXPECT
};

static const struct option bench_options[] = {
    {"redis", required_argument, NULL, CLI_OPT_REDIS},
    {"prefix", required_argument, NULL, CLI_OPT_PREFIX},
    {"timeout", required_argument, NULL, CLI_OPT_TIMEOUT},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"calls", required_argument, NULL, OPT_CALLS},
    {"sync", no_argument, NULL, OPT_SYNC},
    {"async", no_argument, NULL, OPT_ASYNC},
    {"json", no_argument, NULL, OPT_JSON},
    {"method", required_argument, NULL, OPT_METHOD},
    {"params", required_argument, NULL, OPT_PARAMS},
    {"expect", required_argument, NULL, OPT_EXPECT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct bench_args {
    struct cli_connection conn;
    const char *service;
    const char *method; /* NULL until given: then "add" */
    json_t *params;     /* NULL until given: then [1, 2] */
    json_t *expect;     /* NULL: any result is right */
    int expect_given;
    double timeout_s;
    double duration_s; /* 0 when --calls is given */
    uint64_t calls;    /* 0: run for duration_s */
    long connections;
    long window; /* 0 until given */
    int sync, async;
    int json;
    int help;
};

static void usage(FILE *out)
{
    fputs("Usage: rrpc bench [OPTIONS] SERVICE\n"
          "\n"
          "Calls a method of SERVICE as fast as it answers, from several connections\n"
          "at once, and reports calls per second, errors and latency percentiles.\n"
          "The default call is add [1, 2], and every result must be 3, so it also\n"
          "drives minimal workers that know nothing but add.\n"
          "\nOptions:\n",
          out);
    cli_print_connection_options(out);
    fputs("  --sync             each connection makes one call at a time, on a thread\n"
          "                     of its own with a sync client (the default)\n"
          "  --async            each connection is an async client on a thread and\n"
          "                     event loop of its own, with --window calls in flight\n"
          "                     (the service's workers must honour reply_to)\n"
          "  --connections C    concurrent connections (default: 1)\n"
          "  --window W         calls in flight per connection, --async only\n"
          "                     (default: 64)\n"
          "  --duration SECONDS run this long (default: 5) ...\n"
          "  --calls N          ... or make N calls in all, then stop\n"
          "  --method M         the method to call (default: add)\n"
          "  --params JSON      its params, an array or object (default: [1, 2])\n"
          "  --expect JSON      the result every call must return (default: 3 for the\n"
          "                     default call, else any result is accepted)\n"
          "  --timeout SECONDS  per-call timeout (default: 10)\n"
          "  --json             print the report as one JSON object\n"
          "  -h, --help         show this help\n"
          "\n"
          "While it runs on a terminal, a progress line is updated on stderr.  Ctrl-C\n"
          "stops early and still prints the report.  Latencies are those of the\n"
          "calls that succeeded, from a histogram precise to 0.4%.\n"
          "\n"
          "Examples:\n"
          "  rrpc bench calc\n"
          "  rrpc bench --connections 32 --duration 10 calc\n"
          "  rrpc bench --async --connections 4 --window 256 --json calc\n"
          "  rrpc bench --method echo --params '[\"x\"]' --expect '[\"x\"]' calc\n"
          "\n"
          "Exit status:\n"
          "  0  every call returned the expected result\n"
          "  1  at least one call failed or returned another result\n"
          "  2  usage error\n"
          "  4  Redis could not be reached, refused the login, or failed a command\n"
          "  5  any other error\n",
          out);
}

/* Parses an integer count in [min, max]. 0 on success, -1 if it is not. */
static int parse_count(const char *text, unsigned long long min, unsigned long long max,
                       unsigned long long *out)
{
    char *end;
    errno = 0;
    if (text[0] == '-' || text[0] == '\0')
        return -1;
    unsigned long long value = strtoull(text, &end, 10);
    if (*end != '\0' || errno != 0 || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

static int parse_json_option(const char *prog, const char *what, const char *text, json_t **out)
{
    json_error_t error;
    json_t *value = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (value == NULL)
        return cli_usage_error(prog, "%s is not valid JSON: %s (at character %d)", what, error.text,
                               error.position);
    json_decref(*out);
    *out = value;
    return CLI_EXIT_OK;
}

/* Reads one option; returns CLI_EXIT_OK or CLI_EXIT_USAGE. */
static int apply_option(const char *prog, int opt, struct bench_args *args)
{
    unsigned long long n;
    switch (opt) {
    case 'h': args->help = 1; return CLI_EXIT_OK;
    case CLI_OPT_REDIS: args->conn.url = optarg; return CLI_EXIT_OK;
    case CLI_OPT_PREFIX: args->conn.prefix = optarg; return CLI_EXIT_OK;
    case CLI_OPT_TIMEOUT:
        if (cli_parse_seconds(optarg, &args->timeout_s) != 0)
            return cli_usage_error(prog, "--timeout wants a positive number of seconds, not '%s'",
                                   optarg);
        return CLI_EXIT_OK;
    case OPT_CONNECTIONS:
        if (parse_count(optarg, 1, MAX_CONNECTIONS, &n) != 0)
            return cli_usage_error(prog, "--connections wants a count from 1 to %d, not '%s'",
                                   MAX_CONNECTIONS, optarg);
        args->connections = (long)n;
        return CLI_EXIT_OK;
    case OPT_WINDOW:
        if (parse_count(optarg, 1, MAX_WINDOW, &n) != 0)
            return cli_usage_error(prog, "--window wants a count from 1 to %d, not '%s'",
                                   MAX_WINDOW, optarg);
        args->window = (long)n;
        return CLI_EXIT_OK;
    case OPT_DURATION:
        if (cli_parse_seconds(optarg, &args->duration_s) != 0)
            return cli_usage_error(prog, "--duration wants a positive number of seconds, not '%s'",
                                   optarg);
        return CLI_EXIT_OK;
    case OPT_CALLS:
        if (parse_count(optarg, 1, UINT64_MAX, &n) != 0)
            return cli_usage_error(prog, "--calls wants a positive count, not '%s'", optarg);
        args->calls = n;
        return CLI_EXIT_OK;
    case OPT_SYNC: args->sync = 1; return CLI_EXIT_OK;
    case OPT_ASYNC: args->async = 1; return CLI_EXIT_OK;
    case OPT_JSON: args->json = 1; return CLI_EXIT_OK;
    case OPT_METHOD:
        if (optarg[0] == '\0')
            return cli_usage_error(prog, "--method wants a non-empty name");
        args->method = optarg;
        return CLI_EXIT_OK;
    case OPT_PARAMS:
        json_decref(args->params);
        args->params = NULL;
        return cli_parse_params(prog, optarg, &args->params);
    case OPT_EXPECT:
        args->expect_given = 1;
        return parse_json_option(prog, "--expect", optarg, &args->expect);
    default:
        /* getopt_long has already said what was wrong. */
        fprintf(stderr, "Try '%s --help'.\n", prog);
        return CLI_EXIT_USAGE;
    }
}

/* Checks the combination of options and fills in the defaults. */
static int finish_args(const char *prog, struct bench_args *args)
{
    if (args->sync && args->async)
        return cli_usage_error(prog, "--sync and --async exclude each other");
    if (args->calls && args->duration_s > 0)
        return cli_usage_error(prog, "--duration and --calls exclude each other");
    if (!args->async && args->window > 1)
        return cli_usage_error(prog, "--window needs --async: a sync connection makes one call "
                                     "at a time");
    int default_call = args->method == NULL && args->params == NULL;
    if (args->method == NULL)
        args->method = "add";
    if (args->params == NULL && (args->params = json_pack("[ii]", 1, 2)) == NULL)
        return CLI_EXIT_INTERNAL;
    if (default_call && !args->expect_given && (args->expect = json_integer(3)) == NULL)
        return CLI_EXIT_INTERNAL;
    if (args->connections == 0)
        args->connections = 1;
    if (args->window == 0)
        args->window = args->async ? DEFAULT_ASYNC_WINDOW : 1;
    if (args->timeout_s == 0)
        args->timeout_s = DEFAULT_TIMEOUT_S;
    if (args->calls == 0 && args->duration_s == 0)
        args->duration_s = DEFAULT_DURATION_S;
    return CLI_EXIT_OK;
}

/* Fills ARGS from the command line.  Stops early, with args->help set,
 * when help was asked for. */
static int parse_args(int argc, char **argv, struct bench_args *args)
{
    const char *prog = argv[0];
    int opt;
    while ((opt = getopt_long(argc, argv, "h", bench_options, NULL)) != -1) {
        int status = apply_option(prog, opt, args);
        if (status != CLI_EXIT_OK || args->help)
            return status;
    }
    if (argc - optind < 1)
        return cli_usage_error(prog, "expected SERVICE");
    if (argc - optind > 1)
        return cli_usage_error(prog, "expected one SERVICE, not '%s' too", argv[optind + 1]);
    args->service = argv[optind];
    return finish_args(prog, args);
}

/* ---- clock and histogram -------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define HIST_SUB_BITS  7 /* 128 buckets per power of two */
#define HIST_SUB       (1u << HIST_SUB_BITS)
#define HIST_TOP_BIT   40 /* values below 2^41 ns */
#define HIST_BUCKETS   ((HIST_TOP_BIT - HIST_SUB_BITS + 2) * HIST_SUB)
#define HIST_VALUE_MAX ((UINT64_C(1) << (HIST_TOP_BIT + 1)) - 1)

struct histogram {
    uint64_t count;
    uint64_t max;
    double sum;
    uint64_t buckets[HIST_BUCKETS];
};

/* Values below 2 * HIST_SUB have a bucket each; above, V = MANT << SHIFT
 * with MANT in [HIST_SUB, 2 * HIST_SUB) lands in bucket SHIFT * HIST_SUB +
 * MANT, which continues the exact range without a gap. */
static size_t hist_index(uint64_t v)
{
    if (v > HIST_VALUE_MAX)
        v = HIST_VALUE_MAX;
    unsigned shift = 0;
    while ((v >> shift) >= 2 * HIST_SUB)
        shift++;
    return (size_t)shift * HIST_SUB + (size_t)(v >> shift);
}

/* The middle of bucket I's range of values. */
static uint64_t hist_value(size_t i)
{
    if (i < 2 * HIST_SUB)
        return i;
    unsigned shift = (unsigned)(i / HIST_SUB) - 1;
    uint64_t low = (uint64_t)(i % HIST_SUB + HIST_SUB) << shift;
    return low + ((UINT64_C(1) << shift) - 1) / 2;
}

static void hist_record(struct histogram *h, uint64_t v)
{
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(struct histogram *into, const struct histogram *h)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->buckets[i] += h->buckets[i];
    into->count += h->count;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
}

/* The value below which PERCENT of the recorded values lie. */
static uint64_t hist_percentile(const struct histogram *h, double percent)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(percent / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- the shared state ------------------------------------------------ */

struct bench;

struct bench_worker {
    struct bench *bench;
    pthread_t thread;
    uint64_t quota;          /* calls to make; 0: until stopped */
    atomic_uint_fast64_t ok; /* read by the progress line */
    atomic_uint_fast64_t errors;
    uint64_t last_done_ns; /* when the last call finished */
    int open_status;
    char open_errmsg[ERRMSG_LEN];
    char first_error[ERRMSG_LEN];
    struct histogram hist;
    /* This thread's copy of the params: the library increfs them while it
     * encodes a call, and a json_t's reference count is not read
     * atomically, so threads must not share one. */
    json_t *params;
    /* --sync */
    rrpc_client *client;
    /* --async */
    struct event_base *base;
    struct event *tick;
    rrpc_async *async;
    struct pending *pending; /* --window records */
    struct pending **idle;   /* records whose call could not start */
    size_t nidle;
    uint64_t started;
    size_t in_flight;
};

/* One async call slot: started, answered, started again. */
struct pending {
    struct bench_worker *worker;
    uint64_t start_ns;
};

struct bench {
    const struct bench_args *args;
    struct bench_worker *workers;
    long nworkers;
    atomic_int stop;
    atomic_int finished; /* workers that are done */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    long ready;
    int go; /* 0 wait, 1 run, -1 give up */
    uint64_t start_ns;
};

static atomic_int interrupted; /* SIGINT or SIGTERM */

static void on_interrupt(int sig)
{
    (void)sig;
    atomic_store(&interrupted, 1);
}

static int stopping(const struct bench *b)
{
    return atomic_load_explicit(&b->stop, memory_order_relaxed);
}

/* Reports this worker opened (or failed to) and waits for the start.
 * Returns nonzero if the run goes ahead. */
static int await_start(struct bench_worker *w)
{
    struct bench *b = w->bench;
    pthread_mutex_lock(&b->lock);
    b->ready++;
    pthread_cond_broadcast(&b->cond);
    while (b->go == 0)
        pthread_cond_wait(&b->cond, &b->lock);
    int go = b->go > 0;
    pthread_mutex_unlock(&b->lock);
    return go;
}

/* Counts one finished call.  MESSAGE describes a failure that is not a
 * JSON-RPC error object (NULL if the call succeeded at transport level). */
static void record(struct bench_worker *w, int status, const json_t *result, const json_t *error,
                   uint64_t latency_ns, const char *message)
{
    const json_t *expect = w->bench->args->expect;
    int right = status == RRPC_OK && (expect == NULL || json_equal(result, expect));
    if (right) {
        hist_record(&w->hist, latency_ns);
        atomic_fetch_add_explicit(&w->ok, 1, memory_order_relaxed);
        return;
    }
    if (atomic_fetch_add_explicit(&w->errors, 1, memory_order_relaxed) > 0)
        return;
    if (status == RRPC_OK) {
        char *text = json_dumps(result, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(w->first_error, sizeof w->first_error, "wrong result %.200s", text ? text : "?");
        free(text);
    } else if (status == RRPC_EREMOTE && error != NULL) {
        const char *m = json_string_value(json_object_get(error, "message"));
        snprintf(w->first_error, sizeof w->first_error, "error %" JSON_INTEGER_FORMAT ": %s",
                 json_integer_value(json_object_get(error, "code")), m ? m : "");
    } else {
        snprintf(w->first_error, sizeof w->first_error, "%s",
                 message && *message ? message : rrpc_strerror(status));
    }
}

/* ---- --sync ---------------------------------------------------------- */

static void sync_open(struct bench_worker *w)
{
    const struct bench_args *args = w->bench->args;
    rrpc_client_options opts;
    rrpc_client_options_init(&opts);
    opts.url = args->conn.url;
    opts.key_prefix = args->conn.prefix;
    opts.timeout_s = args->timeout_s;
    w->open_status = rrpc_client_open(&w->client, &opts, w->open_errmsg, sizeof w->open_errmsg);
}

static void sync_run(struct bench_worker *w)
{
    const struct bench_args *args = w->bench->args;
    for (uint64_t n = 0; (w->quota == 0 || n < w->quota) && !stopping(w->bench); n++) {
        json_t *result = NULL, *error = NULL;
        uint64_t t0 = now_ns();
        int rc = rrpc_call(w->client, args->service, args->method, w->params, args->timeout_s,
                           &result, &error);
        w->last_done_ns = now_ns();
        record(w, rc, result, error, w->last_done_ns - t0, rrpc_client_errmsg(w->client));
        json_decref(result);
        json_decref(error);
    }
}

static void sync_close(struct bench_worker *w)
{
    rrpc_client_close(w->client);
    w->client = NULL;
}

/* ---- --async --------------------------------------------------------- */

static void on_reply(int status, json_t *result, json_t *error, void *udata);

static int may_start(const struct bench_worker *w)
{
    return !stopping(w->bench) && (w->quota == 0 || w->started < w->quota);
}

/* Starts P's next call.  Returns 0 if it could not start (P is then
 * idle, and counted as a failed call if it was a failure). */
static int async_start(struct bench_worker *w, struct pending *p)
{
    const struct bench_args *args = w->bench->args;
    if (!may_start(w)) {
        w->idle[w->nidle++] = p;
        return 0;
    }
    p->start_ns = now_ns();
    int rc = rrpc_async_call(w->async, args->service, args->method, w->params, args->timeout_s,
                             on_reply, p);
    w->started++;
    if (rc != RRPC_OK) {
        w->last_done_ns = now_ns();
        record(w, rc, NULL, NULL, 0, rrpc_async_errmsg(w->async));
        w->idle[w->nidle++] = p;
        return 0;
    }
    w->in_flight++;
    return 1;
}

static void async_maybe_done(struct bench_worker *w)
{
    if (w->in_flight == 0 && !may_start(w))
        event_base_loopbreak(w->base);
}

static void on_reply(int status, json_t *result, json_t *error, void *udata)
{
    struct pending *p = udata;
    struct bench_worker *w = p->worker;
    w->last_done_ns = now_ns();
    record(w, status, result, error, w->last_done_ns - p->start_ns,
           status == RRPC_OK ? NULL : rrpc_async_errmsg(w->async));
    w->in_flight--;
    async_start(w, p);
    async_maybe_done(w);
}

/* Notices a stop when no call is in flight, and retries the records
 * whose call could not start (the link was down), one failure per tick
 * at most so that a dead Redis does not spin. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct bench_worker *w = arg;
    while (w->nidle > 0 && may_start(w))
        if (!async_start(w, w->idle[--w->nidle]))
            break;
    async_maybe_done(w);
}

static void async_open(struct bench_worker *w)
{
    const struct bench_args *args = w->bench->args;
    size_t window = (size_t)args->window;
    if (w->quota != 0 && w->quota < window)
        window = (size_t)w->quota;
    w->base = event_base_new();
    w->pending = calloc(window, sizeof *w->pending);
    w->idle = calloc(window, sizeof *w->idle);
    if (w->base == NULL || w->pending == NULL || w->idle == NULL) {
        w->open_status = RRPC_ENOMEM;
        snprintf(w->open_errmsg, sizeof w->open_errmsg, "out of memory");
        return;
    }
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    struct timeval every = {0, ASYNC_TICK_US};
    if (w->tick == NULL || event_add(w->tick, &every) != 0) {
        w->open_status = RRPC_ENOMEM;
        snprintf(w->open_errmsg, sizeof w->open_errmsg, "cannot create a timer");
        return;
    }
    for (size_t i = 0; i < window; i++) {
        w->pending[i].worker = w;
        w->idle[w->nidle++] = &w->pending[i];
    }
    rrpc_async_options opts;
    rrpc_async_options_init(&opts);
    opts.url = args->conn.url;
    opts.key_prefix = args->conn.prefix;
    opts.timeout_s = args->timeout_s;
    opts.event_base = w->base;
    w->open_status = rrpc_async_open(&w->async, &opts, w->open_errmsg, sizeof w->open_errmsg);
}

static void async_run(struct bench_worker *w)
{
    while (w->nidle > 0 && may_start(w))
        if (!async_start(w, w->idle[--w->nidle]))
            break;
    if (w->in_flight > 0 || may_start(w))
        event_base_dispatch(w->base);
}

static void async_close(struct bench_worker *w)
{
    rrpc_async_close(w->async); /* on the loop's thread, as it must be */
    w->async = NULL;
    if (w->tick)
        event_free(w->tick);
    if (w->base)
        event_base_free(w->base);
    free(w->pending);
    free(w->idle);
    w->tick = NULL;
    w->base = NULL;
    w->pending = NULL;
    w->idle = NULL;
}

/* ---- running --------------------------------------------------------- */

static void *worker_main(void *arg)
{
    struct bench_worker *w = arg;
    int async = w->bench->args->async;
    if (async)
        async_open(w);
    else
        sync_open(w);
    if (await_start(w) && w->open_status == RRPC_OK) {
        if (async)
            async_run(w);
        else
            sync_run(w);
    }
    if (async)
        async_close(w);
    else
        sync_close(w);
    atomic_fetch_add(&w->bench->finished, 1);
    return NULL;
}

static void sum_counts(const struct bench *b, uint64_t *ok, uint64_t *errors)
{
    *ok = *errors = 0;
    for (long i = 0; i < b->nworkers; i++) {
        *ok += atomic_load_explicit(&b->workers[i].ok, memory_order_relaxed);
        *errors += atomic_load_explicit(&b->workers[i].errors, memory_order_relaxed);
    }
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL); /* an early wake-up (a signal) is harmless */
}

/* One progress line: elapsed time, calls, the rate since the last line. */
static void show_progress(const struct bench *b, uint64_t *last_ok, uint64_t *last_ns)
{
    uint64_t ok, errors, t = now_ns();
    sum_counts(b, &ok, &errors);
    double dt = (double)(t - *last_ns) / 1e9;
    double rate = dt > 0 ? (double)(ok - *last_ok) / dt : 0;
    fprintf(stderr, "\r\033[K%6.1f s  %12" PRIu64 " calls  %9.0f calls/s  %" PRIu64 " errors",
            (double)(t - b->start_ns) / 1e9, ok, rate, errors);
    fflush(stderr);
    *last_ok = ok;
    *last_ns = t;
}

/* Waits for the workers, stopping them at the deadline or on Ctrl-C. */
static void supervise(struct bench *b)
{
    const struct bench_args *args = b->args;
    int progress = isatty(STDERR_FILENO);
    uint64_t deadline =
        args->duration_s > 0 ? b->start_ns + (uint64_t)(args->duration_s * 1e9) : UINT64_MAX;
    uint64_t interval_ns = (uint64_t)(PROGRESS_INTERVAL_S * 1e9);
    uint64_t last_ok = 0, last_ns = b->start_ns, next_line = b->start_ns + interval_ns;
    while (atomic_load(&b->finished) < b->nworkers) {
        uint64_t t = now_ns();
        if (t >= deadline || atomic_load(&interrupted))
            atomic_store(&b->stop, 1);
        if (progress && t >= next_line) {
            show_progress(b, &last_ok, &last_ns);
            next_line = t + interval_ns;
        }
        double wait = 0.01; /* finishing workers are noticed within this */
        if (deadline > t && (double)(deadline - t) / 1e9 < wait)
            wait = (double)(deadline - t) / 1e9;
        sleep_s(wait);
    }
    if (progress)
        fputs("\r\033[K", stderr);
}

/* Blocks the signals that the workers must not take: SIGINT and SIGTERM
 * go to the supervising thread, and SIGPIPE is turned into EPIPE. */
static void block_signals(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

/* Starts the workers, waits until each has connected, runs them.
 * Returns CLI_EXIT_OK or the exit status of a failure to start. */
static int run_workers(const char *prog, struct bench *b)
{
    sigset_t old;
    block_signals(&old);
    long started = 0;
    for (; started < b->nworkers; started++) {
        struct bench_worker *w = &b->workers[started];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_mutex_lock(&b->lock);
    while (b->ready < started)
        pthread_cond_wait(&b->cond, &b->lock);
    int status = started == b->nworkers ? CLI_EXIT_OK : CLI_EXIT_INTERNAL;
    if (status != CLI_EXIT_OK)
        fprintf(stderr, "%s: cannot start a thread\n", prog);
    for (long i = 0; i < started && status == CLI_EXIT_OK; i++) {
        const struct bench_worker *w = &b->workers[i];
        if (w->open_status != RRPC_OK) {
            char safe[512];
            fprintf(stderr, "%s: %s\n", prog,
                    w->open_errmsg[0] ? cli_safe(safe, sizeof safe, w->open_errmsg)
                                      : rrpc_strerror(w->open_status));
            status = cli_exit_status(w->open_status);
        }
    }
    b->start_ns = now_ns();
    b->go = status == CLI_EXIT_OK ? 1 : -1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    if (status == CLI_EXIT_OK)
        supervise(b);
    for (long i = 0; i < started; i++)
        pthread_join(b->workers[i].thread, NULL);
    return status;
}

/* ---- the report ------------------------------------------------------ */

struct summary {
    uint64_t calls, errors;
    double duration_s, calls_per_s;
    double p50_us, p90_us, p99_us, p999_us, max_us, mean_us;
    const char *first_error; /* NULL if none */
};

static double us(uint64_t ns)
{
    return round((double)ns / 100.0) / 10.0; /* 0.1 us resolution */
}

static void summarize(struct bench *b, struct histogram *all, struct summary *s)
{
    memset(s, 0, sizeof *s);
    uint64_t end_ns = b->start_ns;
    for (long i = 0; i < b->nworkers; i++) {
        const struct bench_worker *w = &b->workers[i];
        hist_merge(all, &w->hist);
        s->errors += atomic_load(&w->errors);
        if (w->last_done_ns > end_ns)
            end_ns = w->last_done_ns;
        if (s->first_error == NULL && w->first_error[0])
            s->first_error = w->first_error;
    }
    s->calls = all->count;
    s->duration_s = (double)(end_ns - b->start_ns) / 1e9;
    s->calls_per_s = s->duration_s > 0 ? (double)s->calls / s->duration_s : 0;
    s->p50_us = us(hist_percentile(all, 50));
    s->p90_us = us(hist_percentile(all, 90));
    s->p99_us = us(hist_percentile(all, 99));
    s->p999_us = us(hist_percentile(all, 99.9));
    s->max_us = us(all->max);
    s->mean_us = all->count ? round(all->sum / (double)all->count / 100.0) / 10.0 : 0;
}

/* A latency in the unit that keeps it readable. */
static const char *format_us(char *buf, size_t len, double v)
{
    if (v < 1000)
        snprintf(buf, len, "%.1f us", v);
    else if (v < 1e6)
        snprintf(buf, len, "%.2f ms", v / 1e3);
    else
        snprintf(buf, len, "%.2f s", v / 1e6);
    return buf;
}

static int print_text(const struct bench_args *args, const struct summary *s)
{
    char p50[32], p90[32], p99[32], p999[32], max[32], mean[32];
    printf("%s.%s, %s: %ld connection%s x %ld call%s in flight\n", args->service, args->method,
           args->async ? "async" : "sync", args->connections, args->connections == 1 ? "" : "s",
           args->window, args->window == 1 ? "" : "s");
    printf("calls    %" PRIu64 " in %.2f s = %.0f calls/s\n", s->calls, s->duration_s,
           s->calls_per_s);
    printf("errors   %" PRIu64 "\n", s->errors);
    if (s->calls > 0)
        printf("latency  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s)\n",
               format_us(p50, sizeof p50, s->p50_us), format_us(p90, sizeof p90, s->p90_us),
               format_us(p99, sizeof p99, s->p99_us), format_us(p999, sizeof p999, s->p999_us),
               format_us(max, sizeof max, s->max_us), format_us(mean, sizeof mean, s->mean_us));
    return fflush(stdout) == 0 ? 0 : -1;
}

static json_t *latency_json(const struct summary *s, double v)
{
    return s->calls > 0 ? json_real(v) : json_null();
}

static int print_json(const struct bench_args *args, const struct summary *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "service", json_string(args->service));
    json_object_set_new(o, "method", json_string(args->method));
    json_object_set_new(o, "mode", json_string(args->async ? "async" : "sync"));
    json_object_set_new(o, "connections", json_integer(args->connections));
    json_object_set_new(o, "window", json_integer(args->window));
    json_object_set_new(o, "calls", json_integer((json_int_t)s->calls));
    json_object_set_new(o, "errors", json_integer((json_int_t)s->errors));
    json_object_set_new(o, "duration_s", json_real(round(s->duration_s * 1e3) / 1e3));
    json_object_set_new(o, "calls_per_s", json_real(round(s->calls_per_s * 10) / 10));
    json_object_set_new(o, "p50_us", latency_json(s, s->p50_us));
    json_object_set_new(o, "p90_us", latency_json(s, s->p90_us));
    json_object_set_new(o, "p99_us", latency_json(s, s->p99_us));
    json_object_set_new(o, "p999_us", latency_json(s, s->p999_us));
    json_object_set_new(o, "max_us", latency_json(s, s->max_us));
    json_object_set_new(o, "mean_us", latency_json(s, s->mean_us));
    json_object_set_new(o, "first_error",
                        s->first_error ? json_string(s->first_error) : json_null());
    int rc = o ? cli_print_json(stdout, o, 0) : -1;
    json_decref(o);
    return rc == 0 && fflush(stdout) == 0 ? 0 : -1;
}

static int report(const char *prog, const struct bench_args *args, struct bench *b)
{
    struct histogram *all = calloc(1, sizeof *all);
    if (all == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return CLI_EXIT_INTERNAL;
    }
    struct summary s;
    summarize(b, all, &s);
    char safe[1024];
    if (s.first_error) /* a remote error's message: anyone's text */
        fprintf(stderr, "%s: %" PRIu64 " call%s failed; the first: %s\n", prog, s.errors,
                s.errors == 1 ? "" : "s", cli_safe(safe, sizeof safe, s.first_error));
    int rc = args->json ? print_json(args, &s) : print_text(args, &s);
    free(all);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot write the report: %s\n", prog, strerror(errno));
        return CLI_EXIT_INTERNAL;
    }
    return s.errors ? 1 : CLI_EXIT_OK;
}

/* Gives each worker its share of --calls and its copy of the params. */
static int prepare_workers(struct bench *b)
{
    const struct bench_args *args = b->args;
    for (long i = 0; i < b->nworkers; i++) {
        struct bench_worker *w = &b->workers[i];
        w->bench = b;
        /* --calls N: spread N over the connections, the first ones taking
         * the remainder. */
        if (args->calls)
            w->quota = args->calls / (uint64_t)b->nworkers +
                       ((uint64_t)i < args->calls % (uint64_t)b->nworkers);
        w->params = json_deep_copy(args->params);
        if (w->params == NULL)
            return -1;
    }
    return 0;
}

/* Runs the workers with SIGINT and SIGTERM turned into a stop. */
static int run_interruptible(const char *prog, struct bench *b)
{
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sa.sa_flags = (int)SA_RESETHAND; /* a second Ctrl-C ends the process */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int status = run_workers(prog, b);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return status;
}

static int bench(const char *prog, const struct bench_args *args)
{
    struct bench b;
    memset(&b, 0, sizeof b);
    b.args = args;
    b.nworkers = args->connections;
    b.workers = calloc((size_t)b.nworkers, sizeof *b.workers);
    int status = CLI_EXIT_INTERNAL;
    if (b.workers != NULL && pthread_mutex_init(&b.lock, NULL) == 0) {
        pthread_cond_init(&b.cond, NULL);
        if (prepare_workers(&b) == 0)
            status = run_interruptible(prog, &b);
        else
            fprintf(stderr, "%s: out of memory\n", prog);
        if (status == CLI_EXIT_OK)
            status = report(prog, args, &b);
        for (long i = 0; i < b.nworkers; i++)
            json_decref(b.workers[i].params);
        pthread_cond_destroy(&b.cond);
        pthread_mutex_destroy(&b.lock);
    } else {
        fprintf(stderr, "%s: out of memory\n", prog);
    }
    free(b.workers);
    return status;
}

int cmd_bench(int argc, char **argv)
{
    const char *prog = argv[0];
    struct bench_args args;
    memset(&args, 0, sizeof args);
    int status = parse_args(argc, argv, &args);
    if (status == CLI_EXIT_OK && args.help)
        usage(stdout);
    else if (status == CLI_EXIT_OK)
        status = bench(prog, &args);
    json_decref(args.params);
    json_decref(args.expect);
    return status;
}
