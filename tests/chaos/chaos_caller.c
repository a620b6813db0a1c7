/* chaos_caller.c -- the load of the chaos test (tests/chaos/chaos.py).
 *
 * N threads, each with a sync client of its own, call `effect` one call
 * after another for D seconds while the orchestrator kills workers and
 * Redis.  Every call has a unique call id, passed as the first param, so
 * the orchestrator can match each caller-side outcome with the effects the
 * workers recorded.  The latency is measured here, on the monotonic clock,
 * around rrpc_call itself: it is what the caller waited, whatever the
 * library did inside (reconnects, resends).
 *
 * Output: one line per call, written when the call returns:
 *   <call id> <rrpc status> <remote error code or 0> <latency s> <right 0|1> <start s>
 * where right says that the status is RRPC_OK and the result is value * 2,
 * and start is when the call started on CLOCK_MONOTONIC (the clock of
 * Python's time.monotonic(), so the orchestrator can tell which faults a
 * call lived through).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <rrpc/rrpc.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* After a failure that is not a timeout (Redis down, say), a thread waits
 * this long before its next call, so that an outage costs a few failed
 * calls rather than thousands of instant ones. */
#define PAUSE_AFTER_FAILURE_S 0.05

struct config {
    const char *url;
    const char *service;
    const char *run;
    int threads;
    double seconds;
    double timeout_s;
    int max_work_ms;
    int reliable;
};

struct shared {
    const struct config *cfg;
    FILE *out;
    pthread_mutex_t out_lock;
    double stop_at; /* monotonic: no call starts after this */
};

struct thread_arg {
    struct shared *sh;
    int index;
    unsigned seed;
    long calls;
    int failed; /* could never open a client */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec left = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

/* Opens a client, retrying while Redis is down (it may be restarting), up
 * to the end of the run. */
static rrpc_client *open_client(struct thread_arg *t)
{
    const struct config *cfg = t->sh->cfg;
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    o.url = cfg->url;
    o.timeout_s = cfg->timeout_s;
    o.connect_timeout_s = 2;
    o.resend_on_reconnect = cfg->reliable;
    char err[256];
    while (now() < t->sh->stop_at) {
        rrpc_client *c = NULL;
        if (rrpc_client_open(&c, &o, err, sizeof err) == RRPC_OK)
            return c;
        sleep_s(0.1);
    }
    fprintf(stderr, "chaos_caller: thread %d never connected: %s\n", t->index, err);
    return NULL;
}

/* Whether a successful call's result is the right answer. */
static int is_right(const json_t *result, json_int_t value)
{
    return json_is_integer(result) && json_integer_value(result) == value * 2;
}

static void record(struct shared *sh, const char *call_id, int status, json_int_t code,
                   double latency, int right, double started)
{
    pthread_mutex_lock(&sh->out_lock);
    fprintf(sh->out, "%s %d %lld %.6f %d %.6f\n", call_id, status, (long long)code, latency, right,
            started);
    pthread_mutex_unlock(&sh->out_lock);
}

/* One call; returns its rrpc status. */
static int one_call(struct thread_arg *t, rrpc_client *c, long seq)
{
    const struct config *cfg = t->sh->cfg;
    char call_id[128];
    snprintf(call_id, sizeof call_id, "%s-%d-%ld", cfg->run, t->index, seq);
    json_int_t value = (json_int_t)(rand_r(&t->seed) % 1000000);
    json_int_t work_ms = cfg->max_work_ms > 0 ? rand_r(&t->seed) % (cfg->max_work_ms + 1) : 0;
    json_t *params = json_pack("[s,I,I]", call_id, value, work_ms);
    json_t *result = NULL, *error = NULL;
    double started = now();
    int rc = rrpc_call(c, cfg->service, "effect", params, cfg->timeout_s, &result, &error);
    double latency = now() - started;
    json_int_t code = rc == RRPC_EREMOTE ? json_integer_value(json_object_get(error, "code")) : 0;
    record(t->sh, call_id, rc, code, latency, rc == RRPC_OK && is_right(result, value), started);
    /* Say why a call failed, except for the expected flood of instant
     * refusals while Redis is down. */
    if (rc != RRPC_OK && !(rc == RRPC_ECONNECT && latency < 0.01))
        fprintf(stderr, "chaos_caller: %s after %.3f s: %s: %s\n", call_id, latency,
                rrpc_strerror(rc), rrpc_client_errmsg(c));
    json_decref(params);
    json_decref(result);
    json_decref(error);
    return rc;
}

static void *caller_thread(void *arg)
{
    struct thread_arg *t = arg;
    rrpc_client *c = open_client(t);
    if (c == NULL) {
        t->failed = 1;
        return NULL;
    }
    for (long seq = 0; now() < t->sh->stop_at; seq++) {
        int rc = one_call(t, c, seq);
        t->calls++;
        if (rc != RRPC_OK && rc != RRPC_EREMOTE && rc != RRPC_ETIMEDOUT)
            sleep_s(PAUSE_AFTER_FAILURE_S);
    }
    rrpc_client_close(c);
    return NULL;
}

/* --- command line ---------------------------------------------------- */

enum {
    OPT_REDIS = 0x100,
    OPT_SERVICE,
    OPT_RUN,
    OPT_THREADS,
    OPT_SECONDS,
    OPT_TIMEOUT,
    OPT_WORK_MS,
    OPT_RELIABLE,
    OPT_OUT
};

static const struct option long_options[] = {
    {"redis", required_argument, NULL, OPT_REDIS},
    {"service", required_argument, NULL, OPT_SERVICE},
    {"run", required_argument, NULL, OPT_RUN},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"seconds", required_argument, NULL, OPT_SECONDS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"work-ms", required_argument, NULL, OPT_WORK_MS},
    {"reliable", no_argument, NULL, OPT_RELIABLE},
    {"out", required_argument, NULL, OPT_OUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fputs("Usage: chaos_caller --out FILE [OPTIONS]\n"
          "\n"
          "Calls effect(call_id, value, work_ms) from several threads for a while and\n"
          "writes one line per call: id, status, remote code, latency, right.\n"
          "\n"
          "Options:\n"
          "  --redis URL      Redis to use (default: $REDIS_URL)\n"
          "  --service NAME   service to call (default: chaos)\n"
          "  --run NAME       prefix of the call ids (default: run)\n"
          "  --threads N      caller threads, one client each (default: 4)\n"
          "  --seconds D      how long to start calls (default: 10)\n"
          "  --timeout T      per-call timeout in seconds (default: 15)\n"
          "  --work-ms M      each call asks for 0..M ms of work (default: 20)\n"
          "  --reliable       resend_on_reconnect: re-send a call after a broken link\n"
          "  --out FILE       where the lines go (required)\n"
          "  -h, --help       show this help\n",
          out);
}

static int parse_number(const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

/* Returns 0, or the exit status of a usage error. */
static int parse_options(int argc, char **argv, struct config *cfg, const char **out_path)
{
    int opt;
    double n;
    while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_REDIS: cfg->url = optarg; break;
        case OPT_SERVICE: cfg->service = optarg; break;
        case OPT_RUN: cfg->run = optarg; break;
        case OPT_THREADS:
            bad = parse_number(optarg, 1, 256, &n);
            cfg->threads = (int)n;
            break;
        case OPT_SECONDS: bad = parse_number(optarg, 0, 1e6, &cfg->seconds); break;
        case OPT_TIMEOUT: bad = parse_number(optarg, 0.001, 1e6, &cfg->timeout_s); break;
        case OPT_WORK_MS:
            bad = parse_number(optarg, 0, 10000, &n);
            cfg->max_work_ms = (int)n;
            break;
        case OPT_RELIABLE: cfg->reliable = 1; break;
        case OPT_OUT: *out_path = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: fputs("Try 'chaos_caller --help'.\n", stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "chaos_caller: bad value '%s'\nTry 'chaos_caller --help'.\n", optarg);
            return 2;
        }
    }
    if (optind < argc || *out_path == NULL) {
        fputs("chaos_caller: --out FILE is required (and no other arguments)\n", stderr);
        return 2;
    }
    return 0;
}

static int run(const struct config *cfg, FILE *out)
{
    struct shared sh = {.cfg = cfg, .out = out, .stop_at = now() + cfg->seconds};
    pthread_mutex_init(&sh.out_lock, NULL);
    struct thread_arg *args = calloc((size_t)cfg->threads, sizeof *args);
    pthread_t *tids = calloc((size_t)cfg->threads, sizeof *tids);
    int started = 0, failed = 0;
    long calls = 0;
    if (args == NULL || tids == NULL) {
        fputs("chaos_caller: out of memory\n", stderr);
        failed = 1;
    }
    for (int i = 0; !failed && i < cfg->threads; i++, started++) {
        args[i] = (struct thread_arg){.sh = &sh, .index = i, .seed = (unsigned)(i * 7919 + 17)};
        if (pthread_create(&tids[i], NULL, caller_thread, &args[i]) != 0) {
            fputs("chaos_caller: cannot start a thread\n", stderr);
            failed = 1;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
        calls += args[i].calls;
        failed |= args[i].failed;
    }
    fprintf(stderr, "chaos_caller: %ld calls from %d threads\n", calls, started);
    free(args);
    free(tids);
    pthread_mutex_destroy(&sh.out_lock);
    return failed;
}

int main(int argc, char **argv)
{
    struct config cfg = {.service = "chaos",
                         .run = "run",
                         .threads = 4,
                         .seconds = 10,
                         .timeout_s = 15,
                         .max_work_ms = 20};
    const char *out_path = NULL;
    int status = parse_options(argc, argv, &cfg, &out_path);
    if (status != 0)
        return status;
    FILE *out = fopen(out_path, "w");
    if (out == NULL) {
        fprintf(stderr, "chaos_caller: cannot write %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    int failed = run(&cfg, out);
    if (fclose(out) != 0) {
        fprintf(stderr, "chaos_caller: cannot write %s\n", out_path);
        failed = 1;
    }
    return failed ? 1 : 0;
}
