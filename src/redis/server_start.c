/* server_start.c -- bringing a server's workers up, and waiting for Redis.
 *
 * Every worker's link is opened before any thread starts, so that a wrong
 * URL or password is reported by rrpc_server_run instead of being retried;
 * a Redis that is not there yet (or still loading) is waited for with the
 * workers' reconnect backoff.  Also the start's checks (eviction policy)
 * and the heartbeats that must run before any request is taken.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/internal.h"
#include "core/log.h"
#include "redis/registry.h"
#include "redis/reliable.h"
#include "core/shard.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rrpc__close_workers(worker *ws, int n)
{
    for (int i = 0; i < n; i++)
        rrpc__conn_close(ws[i].conn);
    free(ws);
}

/* Worker I's settings, before its link is opened. */
void rrpc__init_worker(rrpc_server *s, worker *w, int i)
{
    w->srv = s;
    w->id = i;
    snprintf(w->ttl_text, sizeof w->ttl_text, "%d", s->reply_ttl_s);
    snprintf(w->trim_text, sizeof w->trim_text, "%ld", -s->dead_letter_max);
    snprintf(w->batch_text, sizeof w->batch_text, "%d", s->batch_max);
    w->rules = s->rules; /* the services are the worker's own copy */
    w->retry_pause = BACKOFF_MIN_S;
    rrpc__shard_key(w->list, sizeof w->list, s->list_key, i % s->shards); /* fits: set_keys */
    if (s->reliable)
        rrpc__rel_worker_keys(&s->rel, i, &w->rk); /* fits: rrpc__rel_init checked */
}

/* Connects every worker before any thread starts, so that a wrong URL or
 * password is reported by rrpc_server_run instead of being retried. */
static int connect_workers(rrpc_server *s, worker **out)
{
    worker *ws = calloc((size_t)s->workers, sizeof *ws);
    if (ws == NULL)
        return RRPC_ENOMEM;
    for (int i = 0; i < s->workers; i++) {
        worker *w = &ws[i];
        rrpc__init_worker(s, w, i);
        int rc =
            rrpc__conn_open(&w->conn, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
        if (rc == RRPC_OK)
            rc = rrpc__conn_set_timeout(w->conn, SOCKET_TIMEOUT_S);
        if (rc == RRPC_OK && rrpc__clock_sync(&w->clock, w->conn) != RRPC_OK)
            rc = rrpc__conn_broken(w->conn) ? RRPC_ECONNECT : RRPC_OK; /* see below */
        if (rc != RRPC_OK) {
            rrpc__close_workers(ws, i + 1);
            return rc;
        }
    }
    *out = ws;
    return RRPC_OK;
}

/* Stops the heartbeat and unregisters the workers that hold nothing. */
void rrpc__stop_reliable(rrpc_server *s, const worker *ws)
{
    rrpc__rel_worker *keys = malloc((size_t)s->workers * sizeof *keys);
    int n = keys ? s->workers : 0; /* without memory: the reaper cleans up */
    for (int i = 0; i < n; i++)
        keys[i] = ws[i].rk;
    rrpc__rel_stop(&s->rel, keys, n);
    free(keys);
}

/* An eviction policy other than noeviction lets Redis drop request lists
 * and in-flight keys under memory pressure: requests lost without a trace.
 * Reliable mode refuses to run on it; at-most-once says so once.  A user
 * that may not read the configuration (ACL) is told once what to check. */
static int check_eviction(rrpc_server *s, rrpc__conn *c)
{
    const char *get[] = {"CONFIG", "GET", "maxmemory-policy"};
    rrpc__reply *r = NULL;
    int rc = rrpc__conn_append(c, 3, get, NULL);
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &r);
    if (rc != RRPC_OK)
        return rrpc__fail(s->errmsg, sizeof s->errmsg, rc, "%s", rrpc__conn_errmsg(c));
    const char *policy = rrpc__reply_type(r) == RRPC__REPLY_ARRAY && rrpc__reply_count(r) == 2
                             ? rrpc__reply_str(rrpc__reply_element(r, 1), NULL)
                             : NULL;
    if (policy == NULL)
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "Redis's maxmemory-policy is unknown (CONFIG GET: %s): make sure it is "
                   "noeviction, or Redis may evict requests under memory pressure",
                   rrpc__reply_str(r, NULL) ? rrpc__reply_str(r, NULL) : "unexpected reply");
    else if (strcmp(policy, "noeviction") != 0 && s->reliable)
        rc = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                        "reliable mode needs Redis's maxmemory-policy noeviction, not %s: an "
                        "eviction policy can drop request lists and in-flight requests",
                        policy);
    else if (strcmp(policy, "noeviction") != 0)
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "Redis's maxmemory-policy is %s: under memory pressure it may evict request "
                   "lists and reply keys (use noeviction)",
                   policy);
    rrpc__reply_free(r);
    return rc;
}

/* The registry's heartbeat and, in reliable mode, the in-flight lists'
 * heartbeat and reaper: both before any worker takes a request. */
static int start_heartbeats(rrpc_server *s)
{
    int rc = rrpc__registry_start(s->registry, &s->url, s->connect_timeout_s, s->workers, s->errmsg,
                                  sizeof s->errmsg);
    if (rc == RRPC_OK && s->reliable &&
        (rc = rrpc__rel_start(&s->rel, &s->url, s->connect_timeout_s, s->errmsg,
                              sizeof s->errmsg)) != RRPC_OK)
        rrpc__registry_stop(s->registry);
    return rc;
}

/* ---- waiting for Redis at start ------------------------------------------ */

static void log_start(const rrpc_server *s, rrpc_log_level level, const char *what,
                      const char *detail)
{
    rrpc__log(level, s->service, "start", what, detail);
}

/* Nonzero if a failed start may work later: Redis is not listening yet,
 * is loading its data, a failover or a forming Cluster has no master for
 * the slot yet.  A refused password or ACL never heals by waiting. */
static int start_may_heal(int rc, const char *why)
{
    static const char *const refusals[] = {"WRONGPASS", "NOPERM", "NOAUTH"};
    static const char *const not_yet[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN",
                                          "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
        if (strstr(why, refusals[i]) != NULL)
            return 0;
    if (rc == RRPC_ECONNECT || rc == RRPC_ETIMEDOUT)
        return 1;
    for (size_t i = 0; i < sizeof not_yet / sizeof not_yet[0]; i++)
        if (strstr(why, not_yet[i]) != NULL)
            return 1;
    return 0;
}

/* Whether Redis serves commands yet: a Redis still loading its data
 * accepts connections but answers LOADING, which the workers' links alone
 * would not notice (without heartbeats nothing else asks).  Anything but
 * a transient error (even an ACL without PING) counts as ready. */
static int redis_ready(rrpc_server *s, rrpc__conn *c)
{
    rrpc__reply *r = NULL;
    const char *ping[] = {"PING"};
    int rc = rrpc__conn_append(c, 1, ping, NULL);
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &r);
    if (rc != RRPC_OK)
        return rrpc__fail(s->errmsg, sizeof s->errmsg, rc, "%s", rrpc__conn_errmsg(c));
    if (rrpc__reply_transient(r))
        rc = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ECONNECT, "Redis is not ready: %s",
                        rrpc__reply_str(r, NULL));
    rrpc__reply_free(r);
    return rc;
}

/* One try: every worker's link, then the heartbeats. */
static int start_once(rrpc_server *s, worker **ws)
{
    s->errmsg[0] = '\0';
    int rc = connect_workers(s, ws);
    if (rc == RRPC_OK && (rc = redis_ready(s, (*ws)[0].conn)) != RRPC_OK) {
        rrpc__close_workers(*ws, s->workers);
        *ws = NULL;
    }
    if (rc == RRPC_OK && (rc = check_eviction(s, (*ws)[0].conn)) != RRPC_OK) {
        rrpc__close_workers(*ws, s->workers);
        *ws = NULL;
    }
    if (rc == RRPC_OK && (rc = start_heartbeats(s)) != RRPC_OK) {
        rrpc__close_workers(*ws, s->workers);
        *ws = NULL;
    }
    return rc;
}

/* Sleeps SECONDS in short steps, so that a stop is noticed; nonzero if
 * the server was stopped. */
static int sleep_unless_stopped(rrpc_server *s, double seconds)
{
    double until = rrpc__monotonic() + seconds;
    for (double left = seconds; left > 0; left = until - rrpc__monotonic()) {
        if (atomic_load(&s->stop))
            return 1;
        rrpc__sleep(left < 0.1 ? left : 0.1);
    }
    return atomic_load(&s->stop);
}

/* Starts the workers, waiting for Redis with the workers' reconnect
 * backoff (see start_timeout_s in rrpc.h).  *ws stays NULL if the server
 * was stopped while waiting. */
int rrpc__start_waiting(rrpc_server *s, worker **ws)
{
    double began = rrpc__monotonic(), delay = BACKOFF_MIN_S;
    int waited = 0;
    for (;;) {
        int rc = start_once(s, ws);
        if (rc == RRPC_OK) {
            if (waited) {
                char after[64];
                snprintf(after, sizeof after, "Redis answered after %.1f s, serving",
                         rrpc__monotonic() - began);
                log_start(s, RRPC_LOG_INFO, after, NULL);
            }
            return RRPC_OK;
        }
        if (s->start_timeout_s < 0 || !start_may_heal(rc, s->errmsg))
            return rc;
        double left = s->start_timeout_s > 0 ? began + s->start_timeout_s - rrpc__monotonic() : 1e9;
        if (left <= 0) {
            char why[RRPC__ERRMSG_LEN];
            snprintf(why, sizeof why, "%s", s->errmsg);
            return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ECONNECT,
                              "Redis did not answer within the start timeout (%g s): %s",
                              s->start_timeout_s, why);
        }
        if (!waited) {
            char what[64] = "waiting for Redis";
            if (s->start_timeout_s > 0)
                snprintf(what, sizeof what, "waiting for Redis (up to %g s)", s->start_timeout_s);
            log_start(s, RRPC_LOG_WARN, what, s->errmsg); /* once, not every try */
            waited = 1;
        }
        double jitter = (double)(rand() % 1000) / 1000.0; /* spreads a herd of servers */
        double pause = delay * (0.5 + jitter);
        if (sleep_unless_stopped(s, pause < left ? pause : left))
            return RRPC_OK;
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}
