/* stats.h -- per-method counters and latency histograms (stats.c). */
#ifndef RRPC_STATS_H
#define RRPC_STATS_H

#include "core/dispatch.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct rrpc__conn rrpc__conn;

/* Bucket 0 holds latencies below 1 us; bucket b >= 1 starts at
 * 2^e * (1 + s/4) us with e = (b-1)/4, s = (b-1)%4 (PROTOCOL.md 9). */
#define RRPC__HIST_BUCKETS 129

typedef struct rrpc__method_stats {
    atomic_uint_fast64_t calls, errors;
    atomic_uint_fast64_t hist[RRPC__HIST_BUCKETS];
    /* What the last successful flush sent; touched by the flushing thread only. */
    uint64_t sent_calls, sent_errors, sent_hist[RRPC__HIST_BUCKETS];
} rrpc__method_stats;

struct rrpc__stats {
    size_t count;                /* as many as the method table has entries */
    rrpc__method_stats *methods; /* indexed like rrpc__methods.items */
};

int rrpc__latency_bucket(double seconds);
double rrpc__bucket_lower_us(int bucket);
int rrpc__stats_init(rrpc__stats *st, size_t methods);
void rrpc__stats_free(rrpc__stats *st);
/* The start time of a handler call, or 0 without stats (no clock read). */
double rrpc__stats_start(const rrpc__stats *st);
/* Counts a call of method number METHOD that began at STARTED.  NULL ok. */
void rrpc__stats_record(rrpc__stats *st, size_t method, double started, int error);
/* Sends the changes since the last flush as HINCRBYs on KEY and waits for
 * them.  NAMES gives the method names in table order. */
int rrpc__stats_flush(rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c, const char *key);

#endif
