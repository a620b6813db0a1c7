/* stats.c -- per-method call counters and latency histograms of a server.
 *
 * Worker threads record every handler call here (a few relaxed atomic
 * increments, no lock), and the registry's heartbeat thread sends what
 * changed since its last flush to Redis with HINCRBY, so `rrpc stats` can
 * add up histograms of every worker and every restart.  Latencies go into
 * log buckets: four per power of two of microseconds, which bounds the
 * error of a percentile to 25% while keeping a method's histogram at one
 * kilobyte.  The bucket rule is part of the protocol (PROTOCOL.md 9).
 */
#define _POSIX_C_SOURCE 200809L
#include "core/keys.h"
#include "core/clock.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/random.h"
#include "core/stats.h"
#include "redis/conn.h"

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

/* Appends one HINCRBY of FIELD-PREFIX + NAME by DELTA; counts the commands. */
static int incr(rrpc__conn *c, const char *key, const char *field_prefix, const char *name,
                uint64_t delta, int *queued)
{
    char field[RRPC__KEY_MAX], by[32];
    if (rrpc__key_join(field, sizeof field, field_prefix, name, NULL) != RRPC_OK)
        return RRPC_OK; /* a method name too long to count: skipped, not fatal */
    snprintf(by, sizeof by, "%llu", (unsigned long long)delta);
    const char *argv[] = {"HINCRBY", key, field, by};
    int rc = rrpc__conn_append(c, 4, argv, NULL);
    if (rc == RRPC_OK)
        (*queued)++;
    return rc;
}

/* Takes a snapshot of everything not yet sent into SNAP, queues HINCRBYs for
 * it and returns how many commands were queued (or a negative error). */
static int queue_deltas(const rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c,
                        const char *key, uint64_t *snap)
{
    int queued = 0, rc = RRPC_OK;
    const size_t per = 2 + RRPC__HIST_BUCKETS;
    for (size_t i = 0; i < st->count && rc == RRPC_OK; i++) {
        rrpc__method_stats *m = &st->methods[i];
        uint64_t *s = snap + i * per;
        const char *name = names->items[i].name;
        s[0] = atomic_load_explicit(&m->calls, memory_order_relaxed);
        s[1] = atomic_load_explicit(&m->errors, memory_order_relaxed);
        if (s[0] != m->sent_calls)
            rc = incr(c, key, "calls:", name, s[0] - m->sent_calls, &queued);
        if (rc == RRPC_OK && s[1] != m->sent_errors)
            rc = incr(c, key, "errors:", name, s[1] - m->sent_errors, &queued);
        for (int b = 0; b < RRPC__HIST_BUCKETS && rc == RRPC_OK; b++) {
            s[2 + b] = atomic_load_explicit(&m->hist[b], memory_order_relaxed);
            if (s[2 + b] != m->sent_hist[b]) {
                char prefix[16];
                snprintf(prefix, sizeof prefix, "h%d:", b);
                rc = incr(c, key, prefix, name, s[2 + b] - m->sent_hist[b], &queued);
            }
        }
    }
    return rc == RRPC_OK ? queued : rc;
}

int rrpc__stats_flush(rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c, const char *key)
{
    if (st->count == 0)
        return RRPC_OK;
    const size_t per = 2 + RRPC__HIST_BUCKETS;
    uint64_t *snap = malloc(st->count * per * sizeof *snap);
    if (snap == NULL)
        return RRPC_ENOMEM;
    int queued = queue_deltas(st, names, c, key, snap);
    int rc = queued < 0 ? queued : RRPC_OK;
    for (int i = 0; i < queued; i++) {
        rrpc__reply *r = NULL;
        int read_rc = rrpc__conn_read(c, &r);
        if (read_rc == RRPC_OK && rrpc__reply_type(r) == RRPC__REPLY_ERROR)
            read_rc = RRPC_EREDIS;
        rrpc__reply_free(r);
        if (read_rc != RRPC_OK && rc == RRPC_OK)
            rc = read_rc;
        if (read_rc == RRPC_ECONNECT || read_rc == RRPC_ETIMEDOUT)
            break;
    }
    /* Only a fully confirmed flush moves the mark; otherwise the same
     * deltas are sent again next time (at worst counted twice, never lost
     * silently). */
    if (rc == RRPC_OK)
        for (size_t i = 0; i < st->count; i++) {
            rrpc__method_stats *m = &st->methods[i];
            const uint64_t *s = snap + i * per;
            m->sent_calls = s[0];
            m->sent_errors = s[1];
            memcpy(m->sent_hist, s + 2, sizeof m->sent_hist);
        }
    free(snap);
    return rc;
}
