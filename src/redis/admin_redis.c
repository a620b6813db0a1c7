/* admin_redis.c -- the operator's questions over Redis
 * (transport/admin_ops.h), on a sync caller's link (client_redis.h).
 *
 * The registry, statistics and dead letters live in the keys of
 * docs/PROTOCOL.md sections 1 and 9 (registry.c and the workers write
 * them, failfast.c reads part of them too).  Each question about a service
 * is one pipelined round trip; liveness is judged against Redis's own
 * clock, like everywhere else.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/admin_redis.h"

#include "core/internal.h"
#include "core/keys.h"
#include "core/protocol.h"
#include "core/shard.h"
#include "redis/client_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long any reply of an admin question may take: an operator's tool
 * must not hang on a stalled Redis. */
#define ADMIN_TIMEOUT_S 10.0

/* Dead letters taken per round trip by purge: bounds the memory a purge
 * holds at once. */
#define PURGE_BATCH      1000
#define PURGE_BATCH_TEXT "1000"

typedef rrpc__service_keys keys;

static int link_fail(rrpc__client_link *l, int rc, char *err, size_t errlen)
{
    return rrpc__fail(err, errlen, rc, "%s", rrpc__conn_errmsg(l->conn));
}

/* The start of every question: the admin timeout on the link, and the
 * keys of SERVICE (if not NULL). */
static int begin(rrpc__client_link *l, const char *prefix, const char *service, keys *k, char *err,
                 size_t errlen)
{
    int rc = rrpc__client_link_timeout(l, ADMIN_TIMEOUT_S);
    if (rc != RRPC_OK)
        return link_fail(l, rc, err, errlen);
    if (service != NULL && rrpc__service_keys_init(k, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    return RRPC_OK;
}

/* Reads N replies into R (all new).  A Redis error reply fails the lot. */
static int read_all(rrpc__client_link *l, int n, rrpc__reply **r, char *err, size_t errlen)
{
    int rc = RRPC_OK;
    for (int i = 0; i < n; i++)
        r[i] = NULL;
    for (int i = 0; i < n && rc == RRPC_OK; i++) {
        rc = rrpc__conn_read(l->conn, &r[i]);
        if (rc != RRPC_OK)
            link_fail(l, rc, err, errlen);
    }
    for (int i = 0; i < n && rc == RRPC_OK; i++)
        if (rrpc__reply_type(r[i]) == RRPC__REPLY_ERROR)
            rc = rrpc__fail(err, errlen, RRPC_EREDIS, "Redis error: %s",
                            rrpc__reply_str(r[i], NULL));
    if (rc != RRPC_OK)
        for (int i = 0; i < n; i++) {
            rrpc__reply_free(r[i]);
            r[i] = NULL;
        }
    return rc;
}

/* Runs one command and returns its reply (new) in *r. */
static int command(rrpc__client_link *l, rrpc__reply **r, int argc, const char **argv,
                   const size_t *lens, char *err, size_t errlen)
{
    int rc = rrpc__conn_append(l->conn, argc, argv, lens);
    if (rc != RRPC_OK)
        return link_fail(l, rc, err, errlen);
    return read_all(l, 1, r, err, errlen);
}

static int services(rrpc__client_link *l, const char *prefix, json_t **names, char *err,
                    size_t errlen)
{
    int rc = begin(l, prefix, NULL, NULL, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    char index[RRPC__KEY_MAX];
    rrpc__services_key(index, sizeof index, prefix);
    rrpc__reply *r = NULL;
    const char *smembers[] = {"SMEMBERS", index};
    if ((rc = command(l, &r, 2, smembers, NULL, err, errlen)) != RRPC_OK)
        return rc;
    json_t *out = json_array();
    for (size_t i = 0; out && i < rrpc__reply_count(r); i++) {
        size_t len;
        const char *name = rrpc__reply_str(rrpc__reply_element(r, i), &len);
        if (json_array_append_new(out, json_stringn_nocheck(name, len)) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    rrpc__reply_free(r);
    if (out == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    *names = out;
    return RRPC_OK;
}

/* ---- one service, in one round trip -------------------------------------- */

enum {
    R_TIME,
    R_WORKERS,
    R_INFO,
    R_CONFIG,
    R_EXISTS,
    R_QUEUE,
    R_DEAD,
    R_DEAD_TOTAL,
    R_MSTATS,
    R_SHARDS,
    R_COUNT
};

/* The requests queued on shards 1..SHARDS-1 of the service whose shard 0
 * is LIST (shard.c): one more round trip, taken only for sharded services. */
static int other_shards_queue(rrpc__client_link *l, const char *list, int shards, long long *sum,
                              char *err, size_t errlen)
{
    char key[RRPC__KEY_MAX];
    int rc = RRPC_OK;
    for (int k = 1; k < shards && rc == RRPC_OK; k++)
        if ((rc = rrpc__shard_key(key, sizeof key, list, k)) == RRPC_OK)
            rc = rrpc__conn_appendv(l->conn, 2, "LLEN", key);
    if (rc != RRPC_OK)
        return link_fail(l, rc, err, errlen);
    rrpc__reply *r[RRPC__MAX_SHARDS];
    if ((rc = read_all(l, shards - 1, r, err, errlen)) != RRPC_OK)
        return rc;
    for (int k = 0; k < shards - 1; k++) {
        *sum += rrpc__reply_integer(r[k]);
        rrpc__reply_free(r[k]);
    }
    return RRPC_OK;
}

/* The record of worker ID in the HGETALL reply INFO, decoded; {"id": ID}
 * when it is missing or not an object. */
static json_t *worker_record(const rrpc__reply *info, const char *id)
{
    json_t *rec = NULL;
    for (size_t j = 0; j + 1 < rrpc__reply_count(info) && rec == NULL; j += 2)
        if (strcmp(rrpc__reply_str(rrpc__reply_element(info, j), NULL), id) == 0) {
            size_t len;
            const char *text = rrpc__reply_str(rrpc__reply_element(info, j + 1), &len);
            rec = json_loadb(text, len, 0, NULL);
        }
    if (!json_is_object(rec)) {
        json_decref(rec);
        rec = json_pack("{s:s}", "id", id); /* alive, record missing */
    }
    return rec;
}

/* The live workers of the ZRANGE ... WITHSCORES reply WORKERS, at Redis
 * time NOW_MS, with their records from INFO. */
static json_t *live_workers(const rrpc__reply *workers, const rrpc__reply *info, long long now_ms)
{
    json_t *out = json_array();
    for (size_t i = 0; i + 1 < rrpc__reply_count(workers); i += 2) {
        const char *id = rrpc__reply_str(rrpc__reply_element(workers, i), NULL);
        long long deadline = rrpc__reply_ll(rrpc__reply_element(workers, i + 1));
        if (deadline <= now_ms)
            continue; /* expired: dead, whatever its record says */
        json_t *rec = worker_record(info, id);
        json_object_set_new(rec, "expires_in", json_real((double)(deadline - now_ms) / 1000.0));
        json_array_append_new(out, rec);
    }
    return out;
}

static json_t *counters(const rrpc__reply *mstats)
{
    json_t *out = json_object();
    for (size_t i = 0; i + 1 < rrpc__reply_count(mstats); i += 2)
        json_object_set_new(out, rrpc__reply_str(rrpc__reply_element(mstats, i), NULL),
                            json_integer(rrpc__reply_ll(rrpc__reply_element(mstats, i + 1))));
    return out;
}

static int queue_service(rrpc__conn *c, const keys *k)
{
    int rc;
    if ((rc = rrpc__conn_appendv(c, 1, "TIME")) ||
        (rc = rrpc__conn_appendv(c, 5, "ZRANGE", k->workers, "0", "-1", "WITHSCORES")) ||
        (rc = rrpc__conn_appendv(c, 2, "HGETALL", k->info)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k->config, "max_queue")) ||
        (rc = rrpc__conn_appendv(c, 2, "EXISTS", k->config)) ||
        (rc = rrpc__conn_appendv(c, 2, "LLEN", k->list)) ||
        (rc = rrpc__conn_appendv(c, 2, "LLEN", k->dead)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k->stats, "dead")) ||
        (rc = rrpc__conn_appendv(c, 2, "HGETALL", k->mstats)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k->config, "shards")))
        return rc;
    return RRPC_OK;
}

static int service(rrpc__client_link *l, const char *prefix, const char *name,
                   rrpc__service_view *view, char *err, size_t errlen)
{
    keys k;
    int rc = begin(l, prefix, name, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if ((rc = queue_service(l->conn, &k)) != RRPC_OK)
        return link_fail(l, rc, err, errlen);
    rrpc__reply *r[R_COUNT];
    if ((rc = read_all(l, R_COUNT, r, err, errlen)) != RRPC_OK)
        return rc;
    /* A sharded service's queue is the sum over its lists. */
    int shards = rrpc__shard_count((long)rrpc__reply_ll(r[R_SHARDS]));
    long long queue = rrpc__reply_integer(r[R_QUEUE]);
    if (shards > 1)
        rc = other_shards_queue(l, k.list, shards, &queue, err, errlen);
    if (rc == RRPC_OK) {
        long long now_ms = rrpc__reply_time_ms(r[R_TIME]);
        *view = (rrpc__service_view){
            .registered = rrpc__reply_integer(r[R_EXISTS]) > 0,
            .shards = shards,
            .queue = queue,
            .max_queue = rrpc__reply_ll(r[R_CONFIG]),
            .dead = rrpc__reply_integer(r[R_DEAD]),
            .dead_total = rrpc__reply_ll(r[R_DEAD_TOTAL]),
            .workers = live_workers(r[R_WORKERS], r[R_INFO], now_ms),
            .mstats = counters(r[R_MSTATS]),
        };
        if (view->workers == NULL || view->mstats == NULL) {
            json_decref(view->workers);
            json_decref(view->mstats);
            rc = rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
        }
    }
    for (int i = 0; i < R_COUNT; i++)
        rrpc__reply_free(r[i]);
    return rc;
}

/* ---- dead letters ------------------------------------------------------------ */

static json_t *decode_record(const rrpc__reply *r)
{
    size_t len;
    const char *text = rrpc__reply_str(r, &len);
    json_t *v = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    return v ? v : json_stringn(text, len); /* not ours: shown as it is */
}

static int dead_list(rrpc__client_link *l, const char *prefix, const char *service, long limit,
                     json_t **records, char *err, size_t errlen)
{
    keys k;
    int rc = begin(l, prefix, service, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    char stop[32];
    snprintf(stop, sizeof stop, "%ld", limit > 0 ? limit - 1 : -1);
    rrpc__reply *r = NULL;
    const char *lrange[] = {"LRANGE", k.dead, "0", stop};
    if ((rc = command(l, &r, 4, lrange, NULL, err, errlen)) != RRPC_OK)
        return rc;
    json_t *list = json_array();
    for (size_t i = 0; i < rrpc__reply_count(r); i++)
        json_array_append_new(list, decode_record(rrpc__reply_element(r, i)));
    rrpc__reply_free(r);
    *records = list;
    return RRPC_OK;
}

/* Moves one dead letter: pops it, pushes its message onto the list, or
 * back onto the dead letters when it has none.  *moved is set to 1 when it
 * was requeued. */
static int requeue_one(rrpc__client_link *l, const keys *k, int *moved, int *empty, char *err,
                       size_t errlen)
{
    rrpc__reply *popped = NULL, *pushed = NULL;
    const char *pop[] = {"LPOP", k->dead};
    int rc = command(l, &popped, 2, pop, NULL, err, errlen);
    *moved = 0;
    *empty = rc == RRPC_OK && rrpc__reply_type(popped) != RRPC__REPLY_STRING;
    if (rc != RRPC_OK || *empty) {
        rrpc__reply_free(popped);
        return rc;
    }
    size_t len;
    const char *text = rrpc__reply_str(popped, &len);
    json_t *rec = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    json_t *message = json_object_get(rec, "message");
    if (json_is_string(message)) {
        const char *push[] = {"RPUSH", k->list, json_string_value(message)};
        size_t lens[] = {5, strlen(k->list), json_string_length(message)};
        rc = command(l, &pushed, 3, push, lens, err, errlen);
        *moved = rc == RRPC_OK;
    }
    if (!*moved) { /* nothing to requeue, or the push failed: keep the record */
        rrpc__reply_free(pushed);
        pushed = NULL;
        const char *back[] = {"RPUSH", k->dead, text};
        size_t lens[] = {5, strlen(k->dead), len};
        int back_rc = command(l, &pushed, 3, back, lens, err, errlen);
        rc = rc != RRPC_OK ? rc : back_rc;
    }
    json_decref(rec);
    rrpc__reply_free(pushed);
    rrpc__reply_free(popped);
    return rc;
}

static int dead_requeue(rrpc__client_link *l, const char *prefix, const char *service, long *moved,
                        char *err, size_t errlen)
{
    keys k;
    int rc = begin(l, prefix, service, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    rrpc__reply *len = NULL;
    const char *llen[] = {"LLEN", k.dead};
    if ((rc = command(l, &len, 2, llen, NULL, err, errlen)) != RRPC_OK)
        return rc;
    long long n = rrpc__reply_integer(len);
    rrpc__reply_free(len);
    /* Each record is looked at once: those kept go to the back. */
    for (long long i = 0; i < n && rc == RRPC_OK; i++) {
        int one = 0, empty = 0;
        rc = requeue_one(l, &k, &one, &empty, err, errlen);
        if (moved)
            *moved += one;
        if (empty)
            break;
    }
    return rc;
}

static int dead_purge(rrpc__client_link *l, const char *prefix, const char *service, long *removed,
                      char *err, size_t errlen)
{
    keys k;
    int rc = begin(l, prefix, service, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    /* LPOP with a count, until the list is empty: each pop is one command
     * on the key's own node (MULTI/EXEC has no key, so on a Redis Cluster
     * it went to another node than LLEN and DEL), and the count is exactly
     * what was removed, dead letters that arrive meanwhile included. */
    const char *pop[] = {"LPOP", k.dead, PURGE_BATCH_TEXT};
    for (;;) {
        rrpc__reply *r = NULL;
        if ((rc = command(l, &r, 3, pop, NULL, err, errlen)) != RRPC_OK)
            return rc;
        size_t n = rrpc__reply_type(r) == RRPC__REPLY_ARRAY ? rrpc__reply_count(r) : 0;
        rrpc__reply_free(r);
        if (removed)
            *removed += (long)n;
        if (n < PURGE_BATCH)
            return RRPC_OK;
    }
}

static int forget(rrpc__client_link *l, const char *prefix, const char *service, char *err,
                  size_t errlen)
{
    keys k;
    int rc = begin(l, prefix, service, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    char index[RRPC__KEY_MAX];
    rrpc__services_key(index, sizeof index, prefix);
    rrpc__reply *r[2];
    if ((rc = rrpc__conn_appendv(l->conn, 4, "DEL", k.workers, k.info, k.config)) ||
        (rc = rrpc__conn_appendv(l->conn, 3, "SREM", index, service)))
        return link_fail(l, rc, err, errlen);
    if ((rc = read_all(l, 2, r, err, errlen)) != RRPC_OK)
        return rc;
    rrpc__reply_free(r[0]);
    rrpc__reply_free(r[1]);
    return RRPC_OK;
}

const rrpc__admin_ops rrpc__redis_admin_ops = {
    .services = services,
    .service = service,
    .dead_list = dead_list,
    .dead_requeue = dead_requeue,
    .dead_purge = dead_purge,
    .forget = forget,
};
