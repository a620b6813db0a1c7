/* registry.c -- a server's announcement in Redis: record and heartbeat.
 *
 * A running server keeps one record for itself (all its worker threads) in
 * the registry of docs/PROTOCOL.md section 9 -- the record's content is
 * server/record.c's -- with a heartbeat deadline in a sorted set that
 * expires unless it is renewed.  One thread with a connection of its own
 * renews it every second or so and, in the same breath, sends the
 * per-method stats the workers counted (mstats.c) and clears the records
 * of workers whose heartbeat ran out.  On a graceful stop the record is
 * removed at once, so callers fail fast instead of waiting for the
 * deadline to pass.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/internal.h"
#include "core/keys.h"
#include "core/log.h"
#include "core/ratelimit.h"
#include "redis/conn.h"
#include "redis/limits_beat.h"
#include "redis/mstats.h"
#include "redis/registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SOCKET_TIMEOUT_S 5.0
/* How long a service stays "registered" (callers fail fast) after its last
 * heartbeat; then it is waited on like an unregistered one again. */
#define REGISTERED_FOR_MS "3600000"
/* Commands remembered per pipeline for error messages; later ones are
 * still sent, just reported without their name. */
#define QUEUED_MAX 16

struct rrpc__registry {
    char *service;
    char services_key[RRPC__KEY_MAX]; /* <prefix>rrpc:services */
    char workers_key[RRPC__KEY_MAX];  /* {L}:workers */
    char info_key[RRPC__KEY_MAX];     /* {L}:info */
    char config_key[RRPC__KEY_MAX];   /* {L}:config */
    char mstats_key[RRPC__KEY_MAX];   /* {L}:mstats */
    char list_key[RRPC__KEY_MAX];     /* L: waiting requests go back there */
    int limits_written;               /* the limits option is in {L}:config */
    int cluster;                      /* Redis Cluster: limits not enforced (below) */
    int cluster_limits_told;          /* ... and the log has said so */
    const rrpc__announcement *a;      /* while running: what to write (borrowed) */
    rrpc__conn *conn;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, running, link_down;
    /* The commands queued since the last read, so that a refusal can say
     * which command on which key Redis refused (an ACL, typically). */
    const char *queued_cmd[QUEUED_MAX], *queued_key[QUEUED_MAX];
    int nqueued;
    char why[RRPC__ERRMSG_LEN]; /* the first refusal of the current beat */
};

/* ---- set-up -------------------------------------------------------------- */

static int set_keys(rrpc__registry *r, const char *prefix, const char *list_key)
{
    if (rrpc__key_join(r->services_key, sizeof r->services_key, prefix, RRPC__KEY_SERVICES, NULL) ||
        rrpc__tagged_key(r->workers_key, sizeof r->workers_key, list_key, RRPC__TAG_WORKERS) ||
        rrpc__tagged_key(r->info_key, sizeof r->info_key, list_key, RRPC__TAG_INFO) ||
        rrpc__tagged_key(r->config_key, sizeof r->config_key, list_key, RRPC__TAG_CONFIG) ||
        rrpc__tagged_key(r->mstats_key, sizeof r->mstats_key, list_key, RRPC__TAG_MSTATS) ||
        rrpc__key_join(r->list_key, sizeof r->list_key, NULL, list_key, NULL))
        return RRPC_EINVAL;
    return RRPC_OK;
}

rrpc__registry *rrpc__registry_new(const char *service, const char *prefix, const char *list_key)
{
    rrpc__registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->service = strdup(service);
    if (r->service == NULL || set_keys(r, prefix, list_key) != RRPC_OK) {
        free(r->service);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return r;
}

void rrpc__registry_free(rrpc__registry *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->service);
    free(r);
}

/* ---- talking to Redis ---------------------------------------------------- */

/* Queues one command, remembering its name and key (both outlive the
 * pipeline: literals and fields of R) for the error message. */
static int queue(rrpc__registry *r, int argc, const char **argv)
{
    if (r->nqueued < QUEUED_MAX) {
        r->queued_cmd[r->nqueued] = argv[0];
        r->queued_key[r->nqueued] = argc > 1 ? argv[1] : NULL;
    }
    int rc = rrpc__conn_append(r->conn, argc, argv, NULL);
    r->nqueued += rc == RRPC_OK;
    return rc;
}

/* Keeps the first refusal as "<command> <key>: <Redis's error>". */
static void note_refusal(rrpc__registry *r, int i, const rrpc__reply *reply)
{
    if (r->why[0] != '\0')
        return;
    const char *text = rrpc__reply_str(reply, NULL);
    if (i < QUEUED_MAX)
        snprintf(r->why, sizeof r->why, "%s%s%s: %s", r->queued_cmd[i], r->queued_key[i] ? " " : "",
                 r->queued_key[i] ? r->queued_key[i] : "", text ? text : "refused");
    else
        snprintf(r->why, sizeof r->why, "%s", text ? text : "a command was refused");
}

/* Reads the replies to everything queued; the first error wins.  LAST, if
 * not NULL, gets the last reply. */
static int read_queued(rrpc__registry *r, rrpc__reply **last)
{
    int rc = RRPC_OK, n = r->nqueued;
    r->nqueued = 0;
    for (int i = 0; i < n; i++) {
        rrpc__reply *reply = NULL;
        int read_rc = rrpc__conn_read(r->conn, &reply);
        if (read_rc == RRPC_OK && rrpc__reply_type(reply) == RRPC__REPLY_ERROR) {
            note_refusal(r, i, reply);
            read_rc = RRPC_EREDIS;
        }
        if (rc == RRPC_OK)
            rc = read_rc;
        if (last != NULL && i == n - 1) {
            *last = reply;
            reply = NULL;
        }
        rrpc__reply_free(reply);
        if (read_rc == RRPC_ECONNECT || read_rc == RRPC_ETIMEDOUT)
            return read_rc;
    }
    return rc;
}

/* Why the last beat failed, for people. */
static const char *failure(const rrpc__registry *r, int rc)
{
    if (r->why[0] != '\0')
        return r->why;
    const char *conn = r->conn ? rrpc__conn_errmsg(r->conn) : "";
    return conn[0] != '\0' ? conn : rrpc_strerror(rc);
}

/* Redis's own clock in milliseconds: every peer compares heartbeats with
 * it, so the workers' and callers' clocks never need to agree. */
static int redis_time_ms(rrpc__registry *r, long long *ms)
{
    rrpc__reply *t = NULL;
    const char *argv[] = {"TIME"};
    int rc = queue(r, 1, argv);
    if (rc == RRPC_OK)
        rc = read_queued(r, &t);
    if (rc == RRPC_OK && rrpc__reply_count(t) == 2) {
        *ms = atoll(rrpc__reply_str(rrpc__reply_element(t, 0), NULL)) * 1000 +
              atoll(rrpc__reply_str(rrpc__reply_element(t, 1), NULL)) / 1000;
    } else if (rc == RRPC_OK) {
        rc = RRPC_EPROTO;
    }
    rrpc__reply_free(t);
    return rc;
}

/* Removes the records of workers whose heartbeat ran out (a killed
 * process cannot remove its own). */
static int prune(rrpc__registry *r, long long now_ms)
{
    char before[32];
    snprintf(before, sizeof before, "(%lld", now_ms);
    rrpc__reply *ids = NULL;
    const char *range[] = {"ZRANGEBYSCORE", r->workers_key, "-inf", before};
    int rc = queue(r, 4, range);
    if (rc == RRPC_OK)
        rc = read_queued(r, &ids);
    size_t n = rc == RRPC_OK ? rrpc__reply_count(ids) : 0;
    for (size_t i = 0; i < n && rc == RRPC_OK; i++) {
        const char *hdel[] = {"HDEL", r->info_key,
                              rrpc__reply_str(rrpc__reply_element(ids, i), NULL)};
        rc = queue(r, 3, hdel);
    }
    if (n > 0 && rc == RRPC_OK) {
        /* By score, not by id: a worker that beat meanwhile stays. */
        const char *drop[] = {"ZREMRANGEBYSCORE", r->workers_key, "-inf", before};
        rc = queue(r, 4, drop);
    }
    rrpc__reply_free(ids); /* the queued commands hold copies of the ids */
    int read_rc = read_queued(r, NULL);
    return rc != RRPC_OK ? rc : read_rc;
}

static void log_registry(const rrpc__registry *r, rrpc_log_level level, const char *what,
                         const char *detail)
{
    rrpc__log(level, r->service, "registry", what, detail);
}

/* Limits are not supported on Redis Cluster yet: their counters, the
 * waiting requests and a reliable shard's in-flight hash would span slots,
 * which one script cannot touch.  rrpc_server_run refuses the limits
 * option there; a `limits` field set by other means is not enforced, and
 * the log says so once (again after it was cleared and set anew). */
static void tell_cluster_limits(rrpc__registry *r)
{
    const char *hget[] = {"HGET", r->config_key, RRPC__CONFIG_LIMITS};
    rrpc__reply *reply = NULL;
    if (rrpc__conn_append(r->conn, 3, hget, NULL) != RRPC_OK ||
        rrpc__conn_read(r->conn, &reply) != RRPC_OK)
        return;
    int set = rrpc__reply_type(reply) == RRPC__REPLY_STRING;
    if (set && !r->cluster_limits_told)
        log_registry(r, RRPC_LOG_ERROR,
                     "the service's limits are NOT enforced: limits are not supported on Redis "
                     "Cluster yet",
                     r->config_key);
    r->cluster_limits_told = set;
    rrpc__reply_free(reply);
}

/* One heartbeat: renew the deadline and the record, publish the service's
 * settings, clear dead workers, send stats. */
static int beat(rrpc__registry *r)
{
    long long now_ms = 0;
    r->why[0] = '\0';
    r->nqueued = 0;
    int rc = redis_time_ms(r, &now_ms);
    if (rc != RRPC_OK)
        return rc;
    char deadline[32], max_queue[32], ttl_ms[32], shards[16];
    const rrpc__announcement *a = r->a;
    snprintf(deadline, sizeof deadline, "%lld", now_ms + (long long)(a->ttl_s * 1000));
    snprintf(max_queue, sizeof max_queue, "%ld", a->max_queue);
    snprintf(ttl_ms, sizeof ttl_ms, "%lld", (long long)(a->ttl_s * 1000));
    snprintf(shards, sizeof shards, "%d", a->shards);
    const char *zadd[] = {"ZADD", r->workers_key, deadline, a->id};
    const char *hset[] = {"HSET", r->info_key, a->id, a->record};
    /* shards: how many request lists callers may spread calls over. */
    const char *config[] = {"HSET",   r->config_key, "max_queue", max_queue,
                            "ttl_ms", ttl_ms,        "shards",    shards};
    const char *sadd[] = {"SADD", r->services_key, r->service};
    const char *expire[] = {"PEXPIRE", r->config_key, REGISTERED_FOR_MS};
    rc = queue(r, 4, zadd);
    if (rc == RRPC_OK)
        rc = queue(r, 4, hset);
    if (rc == RRPC_OK)
        rc = queue(r, 8, config);
    if (rc == RRPC_OK)
        rc = queue(r, 3, sadd);
    if (rc == RRPC_OK)
        rc = queue(r, 3, expire);
    int read_rc = read_queued(r, NULL); /* whatever was queued, even after a failure */
    rc = rc != RRPC_OK ? rc : read_rc;
    if (rc == RRPC_OK)
        rc = prune(r, now_ms);
    if (rc == RRPC_OK && a->limits != NULL && r->cluster) {
        tell_cluster_limits(r);
    } else if (rc == RRPC_OK && a->limits != NULL) {
        /* Written until Redis took it once: the first beat is at start. */
        const char *text = r->limits_written ? NULL : a->limits_text;
        rc = rrpc__limits_beat(r->conn, a->limits, r->config_key, r->list_key, text, r->why,
                               sizeof r->why);
        r->limits_written |= rc == RRPC_OK;
    }
    if (rc == RRPC_OK) {
        rc = rrpc__mstats_flush(a->stats, a->methods, r->conn, r->mstats_key);
        if (rc == RRPC_EREDIS && r->why[0] == '\0')
            snprintf(r->why, sizeof r->why, "HINCRBY %.200s: refused", r->mstats_key);
    }
    return rc;
}

/* A beat that survives a broken link: reconnect once per beat, log once
 * per outage.  A link Redis closed while it was idle between beats (its
 * `timeout`, CLIENT KILL, a proxy) is seen before the beat and mended at
 * once: else that beat fails and the deadline goes unrenewed for two
 * intervals, which with a slow beat before can let it expire and callers
 * fail fast on a live service. */
static void beat_or_recover(rrpc__registry *r)
{
    if (rrpc__conn_mend_if_closed(r->conn) != RRPC_OK)
        return;
    rrpc__conn_set_timeout(r->conn, SOCKET_TIMEOUT_S);
    int rc = beat(r);
    if (rc != RRPC_OK && !r->link_down)
        log_registry(r, RRPC_LOG_WARN, "heartbeat failed", failure(r, rc));
    else if (rc == RRPC_OK && r->link_down)
        log_registry(r, RRPC_LOG_INFO, "heartbeat restored", NULL);
    r->link_down = rc != RRPC_OK;
}

static void *heartbeat_main(void *arg)
{
    rrpc__registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double t = (double)until.tv_sec + until.tv_nsec / 1e9 + r->a->interval_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
        pthread_cond_timedwait(&r->cv, &r->mu, &until);
        if (r->stop)
            break;
        pthread_mutex_unlock(&r->mu);
        beat_or_recover(r);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- start and stop ------------------------------------------------------ */

int rrpc__registry_start(rrpc__registry *r, const rrpc__announcement *a, const rrpc__url *url,
                         double connect_timeout_s, char *err, size_t errlen)
{
    r->a = a;
    r->stop = 0;
    r->link_down = 0;
    r->limits_written = 0;
    r->cluster = url->kind == RRPC__URL_CLUSTER;
    r->cluster_limits_told = 0;
    int rc = rrpc__conn_open(&r->conn, url, connect_timeout_s, err, errlen);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(r->conn, SOCKET_TIMEOUT_S);
    if (rc == RRPC_OK && (rc = beat(r)) != RRPC_OK)
        rrpc__fail(err, errlen, rc, "cannot register: %s", failure(r, rc));
    if (rc == RRPC_OK && pthread_create(&r->thread, NULL, heartbeat_main, r) != 0)
        rc = rrpc__fail(err, errlen, RRPC_ESYS, "cannot start the heartbeat thread");
    if (rc != RRPC_OK) {
        rrpc__conn_close(r->conn);
        r->conn = NULL;
        r->a = NULL;
        return rc;
    }
    r->running = 1;
    return RRPC_OK;
}

void rrpc__registry_stop(rrpc__registry *r)
{
    if (r == NULL || !r->running)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    rrpc__conn_mend_if_closed(r->conn);
    /* The last counts, then the record goes: callers fail fast from now. */
    rrpc__mstats_flush(r->a->stats, r->a->methods, r->conn, r->mstats_key);
    const char *zrem[] = {"ZREM", r->workers_key, r->a->id};
    const char *hdel[] = {"HDEL", r->info_key, r->a->id};
    r->why[0] = '\0';
    r->nqueued = 0;
    int rc = queue(r, 3, zrem);
    if (rc == RRPC_OK)
        rc = queue(r, 3, hdel);
    int read_rc = read_queued(r, NULL);
    if (rc != RRPC_OK || read_rc != RRPC_OK)
        log_registry(r, RRPC_LOG_WARN, "cannot remove the record",
                     failure(r, rc != RRPC_OK ? rc : read_rc));
    rrpc__conn_close(r->conn);
    r->conn = NULL;
    r->a = NULL;
    r->running = 0;
}
