/* bench_run.c -- the run of `rrpc bench`: one thread per --connections,
 * a common start line, a stop flag, Ctrl-C, the progress line, and the
 * counting of every call.
 *
 * Threads share nothing while they run but the stop flag: each counts its
 * calls and records its latencies in a histogram of its own, merged at the
 * end by the report.  Every worker opens its connection before any starts
 * calling, so connecting is not measured, and a failure to connect stops
 * the run before it begins.
 *
 * A call counts as an error when it fails in any way (transport, timeout,
 * a JSON-RPC error object) or when its result differs from the expected
 * one.  Errors are counted, not timed.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_INTERVAL_S 0.25

/* ---- what the drivers share ------------------------------------------ */

static atomic_int interrupted; /* SIGINT or SIGTERM */

static void on_interrupt(int sig)
{
    (void)sig;
    atomic_store(&interrupted, 1);
}

int bench_stopping(const struct bench *b)
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
void bench_record(struct bench_worker *w, int status, const json_t *result, const json_t *error,
                  uint64_t latency_ns, const char *message)
{
    const json_t *expect = w->bench->args->expect;
    int right = status == RRPC_OK && (expect == NULL || json_equal(result, expect));
    if (right) {
        bench_hist_record(&w->hist, latency_ns);
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

/* ---- the threads ----------------------------------------------------- */

static void *worker_main(void *arg)
{
    struct bench_worker *w = arg;
    const struct bench_driver *driver =
        w->bench->args->async ? &bench_async_driver : &bench_sync_driver;
    driver->open(w);
    if (await_start(w) && w->open_status == RRPC_OK)
        driver->run(w);
    driver->close(w);
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
    uint64_t ok, errors, t = bench_now_ns();
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
        uint64_t t = bench_now_ns();
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
    b->start_ns = bench_now_ns();
    b->go = status == CLI_EXIT_OK ? 1 : -1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    if (status == CLI_EXIT_OK)
        supervise(b);
    for (long i = 0; i < started; i++)
        pthread_join(b->workers[i].thread, NULL);
    return status;
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
        rrpc_call_options_init(&w->call_opts);
        w->call_opts.timeout_s = args->timeout_s;
        w->call_opts.priority = args->priority;
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

int bench_run(const char *prog, const struct bench_args *args)
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
            status = bench_report(prog, args, &b);
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
