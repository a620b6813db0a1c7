/* bench_hist.c -- the clock and the latency histogram of `rrpc bench`.
 *
 * The histogram is log-linear (HdrHistogram's layout): exact below 256 ns,
 * then 128 buckets per power of two, so every percentile is within 0.4% of
 * the true value.  It covers up to 2^41 ns (36 minutes).  Each worker
 * thread records into a histogram of its own, and the report merges them,
 * so recording needs no lock.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "bench.h"

#include <math.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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

void bench_hist_record(struct histogram *h, uint64_t v)
{
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

void bench_hist_merge(struct histogram *into, const struct histogram *h)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->buckets[i] += h->buckets[i];
    into->count += h->count;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
}

/* The value below which PERCENT of the recorded values lie. */
uint64_t bench_hist_percentile(const struct histogram *h, double percent)
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
