/* bench.h -- what the parts of `rrpc bench` share (not the other
 * subcommands: they see only cmd_bench() in cli.h).
 *
 *   cmd_bench.c     the entry point: options, --help, defaults
 *   bench_run.c     the run: threads, start line, stop flag, Ctrl-C,
 *                   progress line, counting each call
 *   bench_sync.c    the --sync driver: one call at a time per thread
 *   bench_async.c   the --async driver: --window calls in flight per thread
 *   bench_hist.c    the clock and the latency histogram
 *   bench_report.c  the summary, as text or as one JSON object
 *
 * A driver only opens its connection, makes calls until bench_stopping()
 * or its quota, hands each outcome to bench_record(), and closes; the
 * threads, the clock and the report are the same for both.
 */
#ifndef RRPC_TOOLS_BENCH_H
#define RRPC_TOOLS_BENCH_H

#include "cli.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_ERRMSG_LEN 256

/* The command line, defaults filled in (see cmd_bench.c). */
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
    int priority; /* --priority: RRPC_PRIORITY_* */
    int json;
    int help;
};

/* ---- clock and histogram (bench_hist.c) ------------------------------ */

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

/* The monotonic clock, in nanoseconds. */
uint64_t bench_now_ns(void);
void bench_hist_record(struct histogram *h, uint64_t v);
void bench_hist_merge(struct histogram *into, const struct histogram *h);
/* The value below which PERCENT of the recorded values lie. */
uint64_t bench_hist_percentile(const struct histogram *h, double percent);

/* ---- the shared state (bench_run.c) ---------------------------------- */

struct bench;
struct pending;
struct event_base;
struct event;

struct bench_worker {
    struct bench *bench;
    pthread_t thread;
    uint64_t quota;          /* calls to make; 0: until stopped */
    atomic_uint_fast64_t ok; /* read by the progress line */
    atomic_uint_fast64_t errors;
    uint64_t last_done_ns; /* when the last call finished */
    int open_status;
    char open_errmsg[BENCH_ERRMSG_LEN];
    char first_error[BENCH_ERRMSG_LEN];
    struct histogram hist;
    /* This thread's copy of the params: the library increfs them while it
     * encodes a call, and a json_t's reference count is not read
     * atomically, so threads must not share one. */
    json_t *params;
    rrpc_call_options call_opts; /* --priority other than normal: timeout and priority */
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

/* A kind of caller.  Each function runs on the worker's own thread: open
 * sets w->open_status (and w->open_errmsg), run makes the calls, close
 * frees what open made, even after a failed open. */
struct bench_driver {
    void (*open)(struct bench_worker *w);
    void (*run)(struct bench_worker *w);
    void (*close)(struct bench_worker *w);
};

extern const struct bench_driver bench_sync_driver;  /* bench_sync.c */
extern const struct bench_driver bench_async_driver; /* bench_async.c */

/* Runs the benchmark ARGS asks for and prints its report.  Returns an
 * enum cli_exit, or 1 if any call failed. */
int bench_run(const char *prog, const struct bench_args *args);

/* Nonzero once the workers must stop starting calls. */
int bench_stopping(const struct bench *b);

/* Counts one finished call.  MESSAGE describes a failure that is not a
 * JSON-RPC error object (NULL if the call succeeded at transport level). */
void bench_record(struct bench_worker *w, int status, const json_t *result, const json_t *error,
                  uint64_t latency_ns, const char *message);

/* ---- the report (bench_report.c) ------------------------------------- */

/* Merges the workers' counts and histograms and prints the report on
 * stdout (the first error on stderr).  Returns an enum cli_exit, or 1 if
 * any call failed. */
int bench_report(const char *prog, const struct bench_args *args, struct bench *b);

#endif /* RRPC_TOOLS_BENCH_H */
