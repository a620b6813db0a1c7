/* bench_report.c -- the report of `rrpc bench`: the workers' counts and
 * histograms merged into one summary, printed as text for people or as
 * one JSON object for scripts (scripts/bench.sh reads it: its keys and
 * units are an interface).  Latencies are in microseconds, to 0.1 us.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        bench_hist_merge(all, &w->hist);
        s->errors += atomic_load(&w->errors);
        if (w->last_done_ns > end_ns)
            end_ns = w->last_done_ns;
        if (s->first_error == NULL && w->first_error[0])
            s->first_error = w->first_error;
    }
    s->calls = all->count;
    s->duration_s = (double)(end_ns - b->start_ns) / 1e9;
    s->calls_per_s = s->duration_s > 0 ? (double)s->calls / s->duration_s : 0;
    s->p50_us = us(bench_hist_percentile(all, 50));
    s->p90_us = us(bench_hist_percentile(all, 90));
    s->p99_us = us(bench_hist_percentile(all, 99));
    s->p999_us = us(bench_hist_percentile(all, 99.9));
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

int bench_report(const char *prog, const struct bench_args *args, struct bench *b)
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
