/* stats.h -- per-method counters and latency histograms (stats.c). */
#ifndef RRPC_STATS_H
#define RRPC_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Bucket 0 holds latencies below 1 us; bucket b >= 1 starts at
 * 2^e * (1 + s/4) us with e = (b-1)/4, s = (b-1)%4 (PROTOCOL.md 9). */
#define RRPC__HIST_BUCKETS 129

typedef struct rrpc__method_stats {
    atomic_uint_fast64_t calls, errors;
    atomic_uint_fast64_t hist[RRPC__HIST_BUCKETS];
    /* What the last confirmed flush sent (rrpc__stats_delta); touched by
     * the flushing thread only. */
    uint64_t sent_calls, sent_errors, sent_hist[RRPC__HIST_BUCKETS];
} rrpc__method_stats;

typedef struct rrpc__stats rrpc__stats;

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

/* Sending the counters somewhere (a transport's heartbeat) without losing
 * or repeating a count: take a snapshot, send each value's delta, and
 * confirm the snapshot only once everything sent was taken -- else the
 * same deltas go again next time (at worst counted twice, never lost
 * silently).  A snapshot holds RRPC__STATS_PER_METHOD values per method:
 * calls, errors, then the buckets. */
#define RRPC__STATS_PER_METHOD (2 + RRPC__HIST_BUCKETS)
enum { RRPC__STATS_CALLS, RRPC__STATS_ERRORS, RRPC__STATS_HIST };
/* Reads ST's counters into SNAP (st->count * RRPC__STATS_PER_METHOD). */
void rrpc__stats_snapshot(const rrpc__stats *st, uint64_t *snap);
/* How much value K (RRPC__STATS_CALLS, _ERRORS, or _HIST + bucket) of
 * method I grew in SNAP since the last confirmed snapshot. */
uint64_t rrpc__stats_delta(const rrpc__stats *st, const uint64_t *snap, size_t i, int k);
/* SNAP was delivered whole: later deltas count from it. */
void rrpc__stats_confirm(rrpc__stats *st, const uint64_t *snap);

#endif
