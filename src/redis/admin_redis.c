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

#include "core/deadletter.h"
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

/* Dead letters read per round trip while requeue-one looks for a ref. */
#define FIND_BATCH 200

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
    R_COUNTERS,
    R_HEAD,
    R_LIMITS,
    R_HIGH,      /* LLEN {L}:high */
    R_HIGH_HEAD, /* LINDEX {L}:high 0 */
    R_LOW,
    R_LOW_HEAD,
    R_COUNT
};

/* The oldest of the queue heads so far: *SENT_MS the smallest "sent" seen
 * (0: none yet), *UNKNOWN set when a head has none (PROTOCOL.md section 7,
 * `sent`).  A batch is as old as its first element. */
static void judge_head(const rrpc__reply *head, long long *sent_ms, int *unknown)
{
    size_t len = 0;
    const char *text =
        rrpc__reply_type(head) == RRPC__REPLY_STRING ? rrpc__reply_str(head, &len) : NULL;
    if (text == NULL)
        return; /* an empty queue */
    json_t *req = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    json_t *first = json_is_array(req) ? json_array_get(req, 0) : req;
    json_t *sent = json_object_get(first, "sent");
    if (json_is_integer(sent) && json_integer_value(sent) > 0) {
        long long ms = (long long)json_integer_value(sent);
        if (*sent_ms == 0 || ms < *sent_ms)
            *sent_ms = ms;
    } else
        *unknown = 1;
    json_decref(req);
}

/* Queues LLEN and LINDEX 0 of LIST's priority lists (PROTOCOL.md section
 * 7, "Priorities"): four replies. */
static int append_priority_lists(rrpc__conn *c, const char *list)
{
    int rc = RRPC_OK;
    const int which[] = {RRPC_PRIORITY_HIGH, RRPC_PRIORITY_LOW};
    for (int i = 0; i < 2 && rc == RRPC_OK; i++) {
        char key[RRPC__KEY_MAX];
        if ((rc = rrpc__priority_key(key, sizeof key, list, which[i])) == RRPC_OK &&
            (rc = rrpc__conn_appendv(c, 2, "LLEN", key)) == RRPC_OK)
            rc = rrpc__conn_appendv(c, 3, "LINDEX", key, "0");
    }
    return rc;
}

/* Adds the four replies R of append_priority_lists to V. */
static void count_priority_lists(rrpc__reply *const r[4], rrpc__service_view *v)
{
    v->queue_high += rrpc__reply_integer(r[0]);
    v->queue_low += rrpc__reply_integer(r[2]);
    v->queue += rrpc__reply_integer(r[0]) + rrpc__reply_integer(r[2]);
    judge_head(r[1], &v->oldest_sent_ms, &v->oldest_unknown);
    judge_head(r[3], &v->oldest_sent_ms, &v->oldest_unknown);
}

/* The I-th value of the HMGET reply R (fields in the order queue_service
 * asks for them), 0 when absent. */
static long long field_ll(const rrpc__reply *r, size_t i)
{
    return i < rrpc__reply_count(r) ? rrpc__reply_ll(rrpc__reply_element(r, i)) : 0;
}

/* The requests queued on shards 1..SHARDS-1 of the service whose shard 0
 * is LIST (shard.c): one more round trip, taken only for sharded services. */
static int other_shards_queue(rrpc__client_link *l, const char *list, int shards,
                              rrpc__service_view *v, char *err, size_t errlen)
{
    enum { PER_SHARD = 6 }; /* LLEN, LINDEX of L, then of {L}:high and {L}:low */
    char key[RRPC__KEY_MAX];
    int n = PER_SHARD * (shards - 1);
    rrpc__reply **r = malloc((size_t)n * sizeof *r);
    if (r == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    int rc = RRPC_OK;
    for (int k = 1; k < shards && rc == RRPC_OK; k++)
        if ((rc = rrpc__shard_key(key, sizeof key, list, k)) == RRPC_OK &&
            (rc = rrpc__conn_appendv(l->conn, 2, "LLEN", key)) == RRPC_OK &&
            (rc = rrpc__conn_appendv(l->conn, 3, "LINDEX", key, "0")) == RRPC_OK)
            rc = append_priority_lists(l->conn, key);
    if (rc != RRPC_OK) {
        free(r);
        return link_fail(l, rc, err, errlen);
    }
    if ((rc = read_all(l, n, r, err, errlen)) == RRPC_OK)
        for (int k = 0; k < shards - 1; k++) {
            rrpc__reply **s = r + PER_SHARD * k;
            v->queue += rrpc__reply_integer(s[0]);
            judge_head(s[1], &v->oldest_sent_ms, &v->oldest_unknown);
            count_priority_lists(s + 2, v);
            for (int i = 0; i < PER_SHARD; i++)
                rrpc__reply_free(s[i]);
        }
    free(r);
    return rc;
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
        (rc = rrpc__conn_appendv(c, 3, "HGET", k->stats, RRPC__STAT_DEAD)) ||
        (rc = rrpc__conn_appendv(c, 2, "HGETALL", k->mstats)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k->config, "shards")) ||
        (rc = rrpc__conn_appendv(c, 6, "HMGET", k->stats, RRPC__STAT_EXPIRED, RRPC__STAT_SHED,
                                 RRPC__STAT_REDELIVERED, RRPC__STAT_LOST)) ||
        (rc = rrpc__conn_appendv(c, 3, "LINDEX", k->list, "0")) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k->config, "limits")) ||
        (rc = append_priority_lists(c, k->list)))
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
    long long now_ms = rrpc__reply_time_ms(r[R_TIME]);
    rrpc__service_view v = {
        .registered = rrpc__reply_integer(r[R_EXISTS]) > 0,
        .shards = shards,
        .queue = rrpc__reply_integer(r[R_QUEUE]),
        .max_queue = rrpc__reply_ll(r[R_CONFIG]),
        .dead = rrpc__reply_integer(r[R_DEAD]),
        .dead_total = rrpc__reply_ll(r[R_DEAD_TOTAL]),
        .expired = field_ll(r[R_COUNTERS], 0),
        .shed = field_ll(r[R_COUNTERS], 1),
        .redelivered = field_ll(r[R_COUNTERS], 2),
        .lost = field_ll(r[R_COUNTERS], 3),
        .now_ms = now_ms,
    };
    judge_head(r[R_HEAD], &v.oldest_sent_ms, &v.oldest_unknown);
    count_priority_lists(r + R_HIGH, &v);
    if (shards > 1)
        rc = other_shards_queue(l, k.list, shards, &v, err, errlen);
    if (rc == RRPC_OK) {
        v.workers = live_workers(r[R_WORKERS], r[R_INFO], now_ms);
        v.mstats = counters(r[R_MSTATS]);
        size_t n = 0;
        const char *limits = rrpc__reply_type(r[R_LIMITS]) == RRPC__REPLY_STRING
                                 ? rrpc__reply_str(r[R_LIMITS], &n)
                                 : NULL;
        v.limits = limits ? json_stringn(limits, n) : NULL;
        *view = v;
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

/* A record as JSON, with its ref: the SHA-1 of the exact stored text, so
 * that requeue-one names one record whatever happens to the list's order
 * meanwhile (a stored "ref" member is overwritten: the text is hostile). */
static json_t *decode_record(const rrpc__reply *r)
{
    size_t len;
    const char *text = rrpc__reply_str(r, &len);
    json_t *v = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return json_stringn(text, len); /* not ours: shown as it is */
    }
    char ref[41];
    rrpc__sha1_hex(text, len, ref);
    json_object_set_new(v, "ref", json_string(ref));
    return v;
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

/* Finds the stored text of the dead letter whose ref is REF: on RRPC_OK
 * *found is the LRANGE reply holding it (new) and *at its index there, or
 * *found is NULL when no record has that ref.  Reads in batches, so a
 * long list is never held at once. */
static int find_ref(rrpc__client_link *l, const keys *k, const char *ref, rrpc__reply **found,
                    size_t *at, char *err, size_t errlen)
{
    *found = NULL;
    for (long start = 0;; start += FIND_BATCH) {
        char from[32], to[32];
        snprintf(from, sizeof from, "%ld", start);
        snprintf(to, sizeof to, "%ld", start + FIND_BATCH - 1);
        rrpc__reply *r = NULL;
        const char *lrange[] = {"LRANGE", k->dead, from, to};
        int rc = command(l, &r, 4, lrange, NULL, err, errlen);
        if (rc != RRPC_OK)
            return rc;
        size_t n = rrpc__reply_count(r);
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *text = rrpc__reply_str(rrpc__reply_element(r, i), &len);
            char hex[41];
            rrpc__sha1_hex(text, len, hex);
            if (strcmp(hex, ref) == 0) {
                *found = r;
                *at = i;
                return RRPC_OK;
            }
        }
        rrpc__reply_free(r);
        if (n < FIND_BATCH)
            return RRPC_OK;
    }
}

/* Why the record REC cannot be requeued, or NULL if its message is whole. */
static const char *not_requeueable(const json_t *rec)
{
    if (json_is_string(json_object_get(rec, "message")))
        return NULL;
    if (json_object_get(rec, "message_prefix") || json_object_get(rec, "message_prefix_base64"))
        return "its message was too large and was kept truncated";
    if (json_object_get(rec, "message_base64"))
        return "its message is not UTF-8 (message_base64)";
    return "it carries no message";
}

/* Removes exactly TEXT (one copy) from the dead letters and pushes MESSAGE
 * onto the list; the record goes back if the push fails.  Removing first
 * means two operators requeueing the same record push it once. */
static int move_record(rrpc__client_link *l, const keys *k, const char *text, size_t len,
                       const json_t *message, const char *ref, char *err, size_t errlen)
{
    rrpc__reply *r = NULL;
    const char *lrem[] = {"LREM", k->dead, "1", text};
    size_t rem_lens[] = {4, strlen(k->dead), 1, len};
    int rc = command(l, &r, 4, lrem, rem_lens, err, errlen);
    long long removed = rc == RRPC_OK ? rrpc__reply_integer(r) : 0;
    rrpc__reply_free(r);
    if (rc != RRPC_OK)
        return rc;
    if (removed != 1)
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "no dead letter with ref %s (already requeued or purged)", ref);
    r = NULL;
    const char *push[] = {"RPUSH", k->list, json_string_value(message)};
    size_t push_lens[] = {5, strlen(k->list), json_string_length(message)};
    rc = command(l, &r, 3, push, push_lens, err, errlen);
    rrpc__reply_free(r);
    if (rc != RRPC_OK) { /* keep the record: the operator can try again */
        r = NULL;
        const char *back[] = {"RPUSH", k->dead, text};
        size_t back_lens[] = {5, strlen(k->dead), len};
        char ignored[64];
        (void)command(l, &r, 3, back, back_lens, ignored, sizeof ignored);
        rrpc__reply_free(r);
    }
    return rc;
}

static int dead_requeue_one(rrpc__client_link *l, const char *prefix, const char *service,
                            const char *ref, char *err, size_t errlen)
{
    keys k;
    int rc = begin(l, prefix, service, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    rrpc__reply *r = NULL;
    size_t at = 0;
    if ((rc = find_ref(l, &k, ref, &r, &at, err, errlen)) != RRPC_OK)
        return rc;
    if (r == NULL)
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "no dead letter with ref %s (already requeued or purged?)", ref);
    size_t len;
    const char *text = rrpc__reply_str(rrpc__reply_element(r, at), &len);
    json_t *rec = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    const char *why = json_is_object(rec) ? not_requeueable(rec) : "it is not a dead-letter record";
    if (why != NULL)
        rc =
            rrpc__fail(err, errlen, RRPC_EINVAL, "dead letter %s cannot be requeued: %s", ref, why);
    else
        rc = move_record(l, &k, text, len, json_object_get(rec, "message"), ref, err, errlen);
    json_decref(rec);
    rrpc__reply_free(r);
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

/* Sets (TEXT) or clears (TEXT NULL) the limits of a registered service. */
static int limits_set(rrpc__client_link *l, const char *prefix, const char *service,
                      const char *text, char *err, size_t errlen)
{
    static const char script[] = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
                                 "if ARGV[1] == '' then redis.call('HDEL', KEYS[1], 'limits')\n"
                                 "else redis.call('HSET', KEYS[1], 'limits', ARGV[1]) end\n"
                                 "return 1\n";
    if (text != NULL && l->cluster)
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "limits are not supported on Redis Cluster yet: its workers would not "
                          "enforce them (PROTOCOL.md section 9, \"Limits\")");
    keys k;
    int rc = begin(l, prefix, service, &k, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    rrpc__reply *r[1];
    if ((rc = rrpc__conn_appendv(l->conn, 5, "EVAL", script, "1", k.config, text ? text : "")))
        return link_fail(l, rc, err, errlen);
    if ((rc = read_all(l, 1, r, err, errlen)) != RRPC_OK)
        return rc;
    long long done = rrpc__reply_integer(r[0]);
    rrpc__reply_free(r[0]);
    return done == 1 ? RRPC_OK
                     : rrpc__fail(err, errlen, RRPC_EINVAL,
                                  "%s is not registered: its limits live in its configuration, "
                                  "which its first server creates",
                                  service);
}

/* ---- rrpc web's chart history ------------------------------------------------ */

static int history_key(char *buf, size_t len, const char *prefix, const char *service)
{
    char base[RRPC__KEY_MAX];
    if (rrpc__key_join(base, sizeof base, prefix, RRPC__KEY_HISTORY, NULL) != RRPC_OK)
        return RRPC_EINVAL;
    return rrpc__key_join(buf, len, base, service, NULL);
}

static int history_put(rrpc__client_link *l, const char *prefix, const char *service,
                       const char *text, int keep, char *err, size_t errlen)
{
    char key[RRPC__KEY_MAX];
    int rc = begin(l, prefix, NULL, NULL, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if (history_key(key, sizeof key, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    rrpc__reply *t = NULL;
    const char *time_cmd[] = {"TIME"};
    if ((rc = command(l, &t, 1, time_cmd, NULL, err, errlen)) != RRPC_OK)
        return rc;
    long long minute = rrpc__reply_time_ms(t) / 60000;
    rrpc__reply_free(t);
    /* The member starts with its minute, so that equal samples of two
     * minutes stay two members. */
    size_t tlen = strlen(text);
    char *member = malloc(tlen + 32);
    if (member == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    snprintf(member, tlen + 32, "%lld %s", minute, text);
    char score[32], oldest[32], ttl[32];
    snprintf(score, sizeof score, "%lld", minute);
    snprintf(oldest, sizeof oldest, "(%lld", minute - keep);
    snprintf(ttl, sizeof ttl, "%d", keep * 60);
    /* One key, so MULTI is fine on a Cluster too. */
    if ((rc = rrpc__conn_appendv(l->conn, 1, "MULTI")) ||
        (rc = rrpc__conn_appendv(l->conn, 4, "ZREMRANGEBYSCORE", key, score, score)) ||
        (rc = rrpc__conn_appendv(l->conn, 4, "ZADD", key, score, member)) ||
        (rc = rrpc__conn_appendv(l->conn, 4, "ZREMRANGEBYSCORE", key, "-inf", oldest)) ||
        (rc = rrpc__conn_appendv(l->conn, 3, "EXPIRE", key, ttl)) ||
        (rc = rrpc__conn_appendv(l->conn, 1, "EXEC"))) {
        free(member);
        return link_fail(l, rc, err, errlen);
    }
    free(member);
    rrpc__reply *r[6];
    if ((rc = read_all(l, 6, r, err, errlen)) != RRPC_OK)
        return rc;
    if (rrpc__reply_type(r[5]) != RRPC__REPLY_ARRAY)
        rc = rrpc__fail(err, errlen, RRPC_EREDIS, "Redis did not store the sample");
    for (int i = 0; i < 6; i++)
        rrpc__reply_free(r[i]);
    return rc;
}

static int history_get(rrpc__client_link *l, const char *prefix, const char *service,
                       json_t **records, char *err, size_t errlen)
{
    char key[RRPC__KEY_MAX];
    int rc = begin(l, prefix, NULL, NULL, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if (history_key(key, sizeof key, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    rrpc__reply *r = NULL;
    const char *zrange[] = {"ZRANGE", key, "0", "-1"};
    if ((rc = command(l, &r, 4, zrange, NULL, err, errlen)) != RRPC_OK)
        return rc;
    json_t *out = json_array();
    for (size_t i = 0; out && i < rrpc__reply_count(r); i++) {
        size_t len;
        const char *text = rrpc__reply_str(rrpc__reply_element(r, i), &len);
        const char *space = text ? memchr(text, ' ', len) : NULL;
        if (space == NULL)
            continue;
        json_t *sample =
            json_loadb(space + 1, len - (size_t)(space + 1 - text), RRPC__JSON_DECODE_FLAGS, NULL);
        if (sample == NULL)
            continue; /* not ours */
        json_array_append_new(out, json_pack("{s:I, s:o}", "minute", (json_int_t)(atoll(text) * 60),
                                             "sample", sample));
    }
    rrpc__reply_free(r);
    if (out == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    *records = out;
    return RRPC_OK;
}

const rrpc__admin_ops rrpc__redis_admin_ops = {
    .history_put = history_put,
    .history_get = history_get,
    .services = services,
    .service = service,
    .dead_list = dead_list,
    .dead_requeue = dead_requeue,
    .dead_requeue_one = dead_requeue_one,
    .dead_purge = dead_purge,
    .forget = forget,
    .limits_set = limits_set,
};
