/* stats.c -- per-method call counters and latency histograms of a server.
 *
 * Worker threads record every handler call here (a few relaxed atomic
 * increments, no lock); the transport's heartbeat sends what changed since
 * its last flush to the broker (Redis: redis/mstats.c, HINCRBY), so `rrpc
 * stats` can add up histograms of every worker and every restart.  Latencies go into
 * log buckets: four per power of two of microseconds, which bounds the
 * error of a percentile to 25% while keeping a method's histogram at one
 * kilobyte.  The bucket rule is part of the protocol (PROTOCOL.md 9).
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/internal.h"
#include "core/stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rrpc__latency_bucket(double seconds)
{
    double us = seconds * 1e6;
    if (!(us >= 1.0))
        return 0; /* below a microsecond (or NaN) */
    int e;
    double m = frexp(us, &e); /* us = m * 2^e, m in [0.5, 1) */
    int exp2 = e - 1;         /* us = (2m) * 2^exp2, 2m in [1, 2) */
    int sub = (int)((2.0 * m - 1.0) * 4.0);
    if (sub > 3)
        sub = 3;
    int b = 1 + 4 * exp2 + sub;
    return b < RRPC__HIST_BUCKETS ? b : RRPC__HIST_BUCKETS - 1;
}

double rrpc__bucket_lower_us(int b)
{
    if (b <= 0)
        return 0.0;
    int e = (b - 1) / 4, s = (b - 1) % 4;
    return ldexp(1.0 + s / 4.0, e);
}

int rrpc__stats_init(rrpc__stats *st, size_t methods)
{
    memset(st, 0, sizeof *st);
    if (methods == 0)
        return RRPC_OK;
    st->methods = calloc(methods, sizeof *st->methods);
    if (st->methods == NULL)
        return RRPC_ENOMEM;
    for (size_t i = 0; i < methods; i++) {
        rrpc__method_stats *m = &st->methods[i];
        atomic_init(&m->calls, 0);
        atomic_init(&m->errors, 0);
        for (int b = 0; b < RRPC__HIST_BUCKETS; b++)
            atomic_init(&m->hist[b], 0);
    }
    st->count = methods;
    return RRPC_OK;
}

void rrpc__stats_free(rrpc__stats *st)
{
    free(st->methods);
    memset(st, 0, sizeof *st);
}

double rrpc__stats_start(const rrpc__stats *st)
{
    return st != NULL ? rrpc__monotonic() : 0.0;
}

void rrpc__stats_record(rrpc__stats *st, size_t method, double started, int error)
{
    if (st == NULL || method >= st->count)
        return;
    rrpc__method_stats *m = &st->methods[method];
    int b = rrpc__latency_bucket(rrpc__monotonic() - started);
    atomic_fetch_add_explicit(&m->calls, 1, memory_order_relaxed);
    if (error)
        atomic_fetch_add_explicit(&m->errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->hist[b], 1, memory_order_relaxed);
}

void rrpc__stats_snapshot(const rrpc__stats *st, uint64_t *snap)
{
    for (size_t i = 0; i < st->count; i++) {
        rrpc__method_stats *m = &st->methods[i];
        uint64_t *s = snap + i * RRPC__STATS_PER_METHOD;
        s[RRPC__STATS_CALLS] = atomic_load_explicit(&m->calls, memory_order_relaxed);
        s[RRPC__STATS_ERRORS] = atomic_load_explicit(&m->errors, memory_order_relaxed);
        for (int b = 0; b < RRPC__HIST_BUCKETS; b++)
            s[RRPC__STATS_HIST + b] = atomic_load_explicit(&m->hist[b], memory_order_relaxed);
    }
}

uint64_t rrpc__stats_delta(const rrpc__stats *st, const uint64_t *snap, size_t i, int k)
{
    const rrpc__method_stats *m = &st->methods[i];
    uint64_t now = snap[i * RRPC__STATS_PER_METHOD + (size_t)k];
    uint64_t sent = k == RRPC__STATS_CALLS    ? m->sent_calls
                    : k == RRPC__STATS_ERRORS ? m->sent_errors
                                              : m->sent_hist[k - RRPC__STATS_HIST];
    return now - sent;
}

void rrpc__stats_confirm(rrpc__stats *st, const uint64_t *snap)
{
    for (size_t i = 0; i < st->count; i++) {
        rrpc__method_stats *m = &st->methods[i];
        const uint64_t *s = snap + i * RRPC__STATS_PER_METHOD;
        m->sent_calls = s[RRPC__STATS_CALLS];
        m->sent_errors = s[RRPC__STATS_ERRORS];
        memcpy(m->sent_hist, s + RRPC__STATS_HIST, sizeof m->sent_hist);
    }
}
