/* mstats.c -- the per-method counters of core/stats.c, sent to Redis.
 *
 * The registry's heartbeat thread (registry.c) calls this with every beat:
 * one pipeline of HINCRBYs on {L}:mstats, so that `rrpc stats` can add up
 * the histograms of every worker and every restart.  Which deltas to send,
 * and when a flush counts as delivered, is core/stats.c's.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/internal.h"
#include "core/keys.h"
#include "redis/conn.h"
#include "redis/mstats.h"

#include <stdio.h>
#include <stdlib.h>

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

/* Queues a HINCRBY for every value of SNAP that changed; returns how many
 * commands were queued (or a negative error). */
static int queue_deltas(const rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c,
                        const char *key, const uint64_t *snap)
{
    int queued = 0, rc = RRPC_OK;
    for (size_t i = 0; i < st->count && rc == RRPC_OK; i++) {
        const char *name = names->items[i].name;
        uint64_t d = rrpc__stats_delta(st, snap, i, RRPC__STATS_CALLS);
        if (d != 0)
            rc = incr(c, key, "calls:", name, d, &queued);
        d = rrpc__stats_delta(st, snap, i, RRPC__STATS_ERRORS);
        if (rc == RRPC_OK && d != 0)
            rc = incr(c, key, "errors:", name, d, &queued);
        for (int b = 0; b < RRPC__HIST_BUCKETS && rc == RRPC_OK; b++) {
            d = rrpc__stats_delta(st, snap, i, RRPC__STATS_HIST + b);
            if (d != 0) {
                char prefix[16];
                snprintf(prefix, sizeof prefix, "h%d:", b);
                rc = incr(c, key, prefix, name, d, &queued);
            }
        }
    }
    return rc == RRPC_OK ? queued : rc;
}

int rrpc__mstats_flush(rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c, const char *key)
{
    if (st->count == 0)
        return RRPC_OK;
    uint64_t *snap = malloc(st->count * RRPC__STATS_PER_METHOD * sizeof *snap);
    if (snap == NULL)
        return RRPC_ENOMEM;
    rrpc__stats_snapshot(st, snap);
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
    /* Only a fully confirmed flush moves the mark (core/stats.h). */
    if (rc == RRPC_OK)
        rrpc__stats_confirm(st, snap);
    free(snap);
    return rc;
}
