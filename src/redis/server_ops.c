/* server_ops.c -- the Redis transport's server operations (server_ops.h).
 *
 * A server's Redis side: its keys and delivery mode (create), every
 * worker's link opened before any thread starts, so that a wrong URL or
 * password is reported by rrpc_server_run instead of being retried, and
 * the broker's fitness checked (connect: PING, eviction policy), the
 * record and heartbeats (announce, withdraw: registry.c, reliable.c), and
 * the worker loop of worker*.c on each link (run_worker).  Waiting for a
 * Redis that is not there yet is server/'s, with may_heal's judgement.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/internal.h"
#include "core/keys.h"
#include "core/log.h"
#include "core/protocol.h"
#include "core/deadletter.h"
#include "core/shard.h"
#include "redis/conn.h"
#include "redis/registry.h"
#include "redis/reliable.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- create and destroy -------------------------------------------------- */

/* Reliable mode's keys and settings; a refusal (the keys do not fit) is
 * left for rrpc_server_run, which can say why (rrpc_server_errmsg). */
static int init_reliable(rrpc__server_broker *b, const rrpc_server_options *opts)
{
    rrpc__serving *s = b->s;
    rrpc__rel_options ro = {
        .max_deliveries = opts->max_deliveries > 0 ? opts->max_deliveries : 3,
        .dedup_window_s = opts->dedup_window_s > 0 ? opts->dedup_window_s : 600,
        .heartbeat_ttl_s = opts->heartbeat_ttl_s > 0 ? opts->heartbeat_ttl_s : 5,
        .dead_letter_max = s->dead_letter_max,
        .max_request_bytes = s->limits.max_request_bytes,
        .dead_key = s->dead_key,
        .stats_key = s->stats_key,
    };
    int rc = rrpc__rel_init(&b->rel, s->list_key, s->shards, s->url.kind == RRPC__URL_CLUSTER,
                            s->service, &ro);
    b->rel.redelivered = &s->n.redelivered;
    b->rel.dead_letters = &s->n.dead_letters;
    /* A key cut short would silently mix services.  The longest list is
     * the last shard's (server/ checked that it fits a key). */
    char last[RRPC__KEY_MAX];
    if (rc == RRPC_EINVAL &&
        rrpc__shard_key(last, sizeof last, s->list_key, s->shards - 1) != RRPC_OK)
        snprintf(last, sizeof last, "%s", s->list_key);
    if (rc == RRPC_EINVAL)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                                "reliable mode: key prefix + service name too long (%zu bytes%s; "
                                "at most %zu, so that every reliable key fits in %d bytes)",
                                strlen(last), s->shards > 1 ? " with the shard suffix" : "",
                                rrpc__rel_max_list_key(), RRPC__KEY_MAX - 1);
    return rc == RRPC_EINVAL ? RRPC_OK : rc;
}

static void broker_destroy(rrpc__server_broker *b)
{
    if (b == NULL)
        return;
    rrpc__registry_free(b->registry);
    rrpc__rel_free(&b->rel);
    free(b);
}

static int broker_create(rrpc__serving *s, const rrpc_server_options *opts,
                         rrpc__server_broker **out)
{
    rrpc__server_broker *b = calloc(1, sizeof *b);
    *out = NULL;
    if (b == NULL)
        return RRPC_ENOMEM;
    b->s = s;
    b->mode = s->reliable ? &rrpc__at_least_once : &rrpc__at_most_once;
    rrpc__sha1_hex(rrpc__reply_script, strlen(rrpc__reply_script), b->reply_sha);
    int rc = rrpc__key_join(b->services_key, sizeof b->services_key, s->prefix, RRPC__KEY_SERVICES,
                            NULL) == RRPC_OK
                 ? RRPC_OK
                 : RRPC_ENOMEM; /* cannot be: server/ checked the list key, which is longer */
    if (rc == RRPC_OK &&
        (b->registry = rrpc__registry_new(s->service, s->prefix, s->list_key)) == NULL)
        rc = RRPC_ENOMEM;
    if (rc == RRPC_OK && s->reliable)
        rc = init_reliable(b, opts);
    if (rc == RRPC_OK && s->url.kind == RRPC__URL_CLUSTER && opts->limits != NULL)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                                "limits are not supported on Redis Cluster yet (their counters "
                                "and waiting requests would span hash slots): use one Redis, or "
                                "serve without limits");
    if (rc != RRPC_OK) {
        broker_destroy(b);
        return rc;
    }
    *out = b;
    return RRPC_OK;
}

/* ---- the workers' links -------------------------------------------------- */

/* Worker I's settings, before its link is opened. */
void rrpc__init_worker(rrpc__server_broker *b, worker *w, int i)
{
    rrpc__serving *s = b->s;
    w->srv = s;
    w->b = b;
    w->mode = b->mode;
    w->id = i;
    snprintf(w->ttl_text, sizeof w->ttl_text, "%d", s->reply_ttl_s);
    snprintf(w->trim_text, sizeof w->trim_text, "%ld", -s->dead_letter_max);
    snprintf(w->batch_text, sizeof w->batch_text, "%d", s->batch_max);
    w->rules = s->rules; /* the services are the worker's own copy */
    w->retry_pause = BACKOFF_MIN_S;
    /* Fits: server/ checked the last shard's name and its priority lists'. */
    rrpc__shard_key(w->list, sizeof w->list, s->list_key, i % s->shards);
    rrpc__priority_key(w->high, sizeof w->high, w->list, RRPC_PRIORITY_HIGH);
    rrpc__priority_key(w->low, sizeof w->low, w->list, RRPC_PRIORITY_LOW);
    if (w->mode->init_worker != NULL)
        w->mode->init_worker(w);
}

static void close_workers(worker *ws, int n)
{
    for (int i = 0; ws != NULL && i < n; i++)
        rrpc__conn_close(ws[i].conn);
    free(ws);
}

static void broker_disconnect(rrpc__server_broker *b)
{
    close_workers(b->ws, b->s->workers);
    b->ws = NULL;
}

/* Connects every worker. */
static int connect_workers(rrpc__server_broker *b)
{
    rrpc__serving *s = b->s;
    worker *ws = calloc((size_t)s->workers, sizeof *ws);
    if (ws == NULL)
        return RRPC_ENOMEM;
    for (int i = 0; i < s->workers; i++) {
        worker *w = &ws[i];
        rrpc__init_worker(b, w, i);
        int rc =
            rrpc__conn_open(&w->conn, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
        if (rc == RRPC_OK)
            rc = rrpc__conn_set_timeout(w->conn, SOCKET_TIMEOUT_S);
        if (rc == RRPC_OK && rrpc__clock_sync(&w->clock, w->conn) != RRPC_OK)
            rc = rrpc__conn_broken(w->conn) ? RRPC_ECONNECT : RRPC_OK; /* see below */
        if (rc != RRPC_OK) {
            close_workers(ws, i + 1);
            return rc;
        }
    }
    b->ws = ws;
    return RRPC_OK;
}

/* An eviction policy other than noeviction lets Redis drop request lists
 * and in-flight keys under memory pressure: requests lost without a trace.
 * Reliable mode refuses to run on it; at-most-once says so once.  A user
 * that may not read the configuration (ACL) is told once what to check. */
static int check_eviction(rrpc__server_broker *b, rrpc__conn *c)
{
    rrpc__serving *s = b->s;
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
    else if (strcmp(policy, "noeviction") != 0 && b->mode->needs_noeviction)
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

/* Nonzero if a failed start may work later: Redis is not listening yet,
 * is loading its data, a failover or a forming Cluster has no master for
 * the slot yet.  A refused password or ACL never heals by waiting. */
static int broker_may_heal(const rrpc__server_broker *b, int rc)
{
    const char *why = b->s->errmsg;
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
static int redis_ready(rrpc__serving *s, rrpc__conn *c)
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

/* One try: every worker's link, then whether Redis serves and suits. */
static int broker_connect(rrpc__server_broker *b)
{
    rrpc__serving *s = b->s;
    s->errmsg[0] = '\0';
    int rc = connect_workers(b);
    if (rc == RRPC_OK && (rc = redis_ready(s, b->ws[0].conn)) == RRPC_OK)
        rc = check_eviction(b, b->ws[0].conn);
    if (rc != RRPC_OK && b->ws != NULL)
        broker_disconnect(b);
    return rc;
}

/* ---- announcement -------------------------------------------------------- */

/* The registry's heartbeat and the delivery mode's (reliable: the
 * in-flight lists' heartbeat and reaper): both before any worker takes a
 * request. */
static int broker_announce(rrpc__server_broker *b, const rrpc__announcement *a)
{
    rrpc__serving *s = b->s;
    int rc = a == NULL ? RRPC_OK
                       : rrpc__registry_start(b->registry, a, &s->url, s->connect_timeout_s,
                                              s->errmsg, sizeof s->errmsg);
    if (rc == RRPC_OK && b->mode->announce != NULL && (rc = b->mode->announce(b)) != RRPC_OK)
        rrpc__registry_stop(b->registry);
    b->announced = rc == RRPC_OK;
    return rc;
}

static void broker_withdraw(rrpc__server_broker *b)
{
    if (!b->announced)
        return;
    rrpc__registry_stop(b->registry); /* after the last answer: record removed */
    if (b->mode->withdraw != NULL)
        b->mode->withdraw(b);
    b->announced = 0;
}

/* ---- running workers ----------------------------------------------------- */

static void broker_run_worker(rrpc__server_broker *b, int id)
{
    rrpc__worker_main(&b->ws[id]);
}

/* One worker on a link of its own: no registry, heartbeat or reaper. */
static int broker_run_alone(rrpc__server_broker *b, int id)
{
    rrpc__serving *s = b->s;
    worker w;
    memset(&w, 0, sizeof w);
    rrpc__init_worker(b, &w, id);
    int rc = rrpc__conn_open(&w.conn, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(w.conn, SOCKET_TIMEOUT_S);
    if (rc == RRPC_OK && b->mode->learn != NULL)
        rc = b->mode->learn(b, w.conn);
    if (rc == RRPC_OK)
        rrpc__worker_main(&w); /* until the stop flag and nothing left to send */
    rrpc__conn_close(w.conn);
    return rc;
}

const rrpc__server_ops rrpc__redis_server_ops = {
    .broker = "Redis",
    .create = broker_create,
    .destroy = broker_destroy,
    .connect = broker_connect,
    .may_heal = broker_may_heal,
    .announce = broker_announce,
    .withdraw = broker_withdraw,
    .disconnect = broker_disconnect,
    .run_worker = broker_run_worker,
    .run_alone = broker_run_alone,
};
