/* limits_beat.c -- the heartbeat's part of the limits (PROTOCOL.md section
 * 9, "Limits"): write the server's `limits` option at start, read the
 * field every beat (so a change applies within a beat, no restart), renew
 * the leases of the concurrency slots this process holds, and move the
 * waiting requests that are due back to the list.  One pipeline, on the
 * heartbeat's link: nothing on the path of a request.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/limits_beat.h"

#include "core/keys.h"
#include "core/ratelimit.h"
#include "redis/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char rrpc__promote_script[]; /* worker_limits.c */

/* KEYS: the running sets; ARGV: lease ms, then each key's member. */
static const char renew_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local lease = tonumber(ARGV[1])\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('ZADD', KEYS[i], 'XX', string.format('%d', now + lease), ARGV[i + 1])\n"
    "  redis.call('PEXPIRE', KEYS[i], lease * 2)\n"
    "end\n"
    "return #KEYS\n";

/* Queues the renewal of every lease held; the count of commands queued. */
static int queue_renew(rrpc__conn *c, rrpc__rl_state *st)
{
    size_t n = 0;
    rrpc__rl_lease *l = rrpc__rl_leases(st, &n);
    if (n == 0)
        return 0;
    size_t argc = 4 + 2 * n;
    const char **argv = malloc(argc * sizeof *argv);
    char nkeys[24], lease[24];
    snprintf(nkeys, sizeof nkeys, "%zu", n);
    snprintf(lease, sizeof lease, "%ld", st->lease_ms);
    int queued = 0;
    if (argv != NULL) {
        argv[0] = "EVAL";
        argv[1] = renew_script;
        argv[2] = nkeys;
        for (size_t i = 0; i < n; i++) {
            argv[3 + i] = l[i].key;
            argv[4 + n + i] = l[i].member;
        }
        argv[3 + n] = lease;
        queued = rrpc__conn_append(c, (int)argc, argv, NULL) == RRPC_OK;
    }
    free(argv);
    free(l);
    return queued;
}

int rrpc__limits_beat(rrpc__conn *c, rrpc__rl_state *st, const char *config_key,
                      const char *list_key, const char *write_text, char *why, size_t whylen)
{
    char waiting[RRPC__KEY_MAX];
    if (rrpc__tagged_key(waiting, sizeof waiting, list_key, RRPC__TAG_WAITING) != RRPC_OK)
        return RRPC_EINVAL;
    int queued = 0, read_at = -1;
    if (write_text != NULL) {
        const char *hset[] = {"HSET", config_key, RRPC__CONFIG_LIMITS, write_text};
        queued += rrpc__conn_append(c, 4, hset, NULL) == RRPC_OK;
    }
    const char *hget[] = {"HGET", config_key, RRPC__CONFIG_LIMITS};
    if (rrpc__conn_append(c, 3, hget, NULL) == RRPC_OK)
        read_at = queued++;
    queued += queue_renew(c, st);
    if (atomic_load(&st->ever) || atomic_load(&st->current) != NULL) {
        const char *promote[] = {"EVAL", rrpc__promote_script, "2", waiting, list_key, "100"};
        queued += rrpc__conn_append(c, 6, promote, NULL) == RRPC_OK;
    }
    int rc = RRPC_OK;
    for (int i = 0; i < queued; i++) {
        rrpc__reply *r = NULL;
        int read_rc = rrpc__conn_read(c, &r);
        if (read_rc != RRPC_OK)
            return read_rc;
        if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
            if (rc == RRPC_OK)
                snprintf(why, whylen, "limits: %s", rrpc__reply_str(r, NULL));
            rc = RRPC_EREDIS;
        } else if (i == read_at) {
            size_t len = 0;
            const char *text =
                rrpc__reply_type(r) == RRPC__REPLY_STRING ? rrpc__reply_str(r, &len) : NULL;
            rrpc__rl_update(st, text, len);
        }
        rrpc__reply_free(r);
    }
    return rc;
}
