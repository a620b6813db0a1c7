/* admin_amqp.c -- the operator's questions over AMQP
 * (transport/admin_ops.h), on a sync caller's link (client_amqp.c).
 *
 * Without the management plugin RabbitMQ answers three kinds of question,
 * and these operations are made of them:
 *   - who is there: a query published to the registry exchange, answered
 *     by every live server (registry_amqp.c) to our direct reply-to;
 *   - how long is a queue, how many consume it: queue.declare, passive;
 *   - what is in the dead letters: basic.get, then nack with requeue (the
 *     letters stay, in their order), or ack once moved.
 * The service's request queue itself is never peeked: a message taken and
 * put back is marked redelivered, which an at-most-once worker drops.
 *
 * Passive declares of a queue that does not exist close their channel, so
 * they run on a side channel opened for the operation (channel 1 keeps the
 * link's direct reply-to consumer).  What has no home in the broker is
 * said: the registry is the live servers' answers (nothing to forget), the
 * statistics are the live servers' since they started, rrpc web's chart
 * history is kept in its own memory, and limits are refused like the
 * server refuses them.  PROTOCOL.md section 12, "Operations over AMQP".
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/registry_amqp.h"

#include "core/clock.h"
#include "core/deadletter.h"
#include "core/keys.h"
#include "core/protocol.h"
#include "core/random.h"
#include "transport/admin_ops.h"

#include <amqp_framing.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIDE ((amqp_channel_t)2)
/* Answers to a query are awaited this long at most... */
#define WINDOW_S 0.5
/* ...and, when nobody says how many will answer (rrpc ls), until none
 * came for QUIET_S after the last, or FIRST_S after the query. */
#define QUIET_S 0.15
#define FIRST_S 0.3
/* The broker confirms a requeued dead letter within this. */
#define CONFIRM_S 10.0

/* ---- the side channel ------------------------------------------------------- */

/* Judges the reply R of a method on the side channel.  A channel the
 * broker closed is answered and opened again: 1 if it was 404 NOT_FOUND
 * (the queue or exchange does not exist), an error for any other code;
 * a broken connection is rrpc__amqp_judge's. */
static int side_judge(rrpc__amqp_link *a, amqp_rpc_reply_t r, const char *what, char *err,
                      size_t errlen)
{
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *c = r.reply.decoded;
        int code = c->reply_code;
        char why[RRPC__ERRMSG_LEN / 2];
        snprintf(why, sizeof why, "%.*s", (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        amqp_channel_close_ok_t ok;
        amqp_send_method(a->conn, SIDE, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        amqp_channel_open(a->conn, SIDE);
        int rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), "channel.open");
        if (rc != RRPC_OK)
            return rrpc__fail(err, errlen, rc, "%s", a->errmsg);
        if (code == 404)
            return 1;
        return rrpc__fail(err, errlen, code == 403 ? RRPC_EAUTH : RRPC_EREDIS, "%s: %d %s", what,
                          code, why);
    }
    int rc = rrpc__amqp_judge(a, r, what);
    return rc == RRPC_OK ? rc : rrpc__fail(err, errlen, rc, "%s", a->errmsg);
}

static int side_open(rrpc__amqp_link *a, char *err, size_t errlen)
{
    amqp_channel_open(a->conn, SIDE);
    int rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), "channel.open");
    return rc == RRPC_OK ? rc : rrpc__fail(err, errlen, rc, "%s", a->errmsg);
}

static void side_close(rrpc__amqp_link *a)
{
    if (a->broken || a->conn == NULL)
        return;
    amqp_rpc_reply_t r = amqp_channel_close(a->conn, SIDE, AMQP_REPLY_SUCCESS);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        a->broken = 1; /* mended whole before the next question */
}

/* queue.declare passive of NAME: *MESSAGES and *CONSUMERS (0 if it does
 * not exist), *EXISTS. */
static int peek_queue(rrpc__amqp_link *a, const char *name, long long *messages,
                      long long *consumers, int *exists, char *err, size_t errlen)
{
    *messages = *consumers = 0;
    *exists = 0;
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(a->conn, SIDE, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    int rc = side_judge(a, amqp_get_rpc_reply(a->conn), "queue.declare (passive)", err, errlen);
    if (rc == RRPC_OK && ok != NULL) {
        *messages = ok->message_count;
        *consumers = ok->consumer_count;
        *exists = 1;
    }
    return rc < 0 ? rc : RRPC_OK;
}

/* ---- who is there --------------------------------------------------------------- */

static double timeout_left(double end)
{
    double left = end - rrpc__monotonic();
    return left > 0 ? left : 0;
}

/* Publishes the query to the registry EXCHANGE with routing KEY, from
 * direct reply-to, with correlation id CID. */
static int publish_query(rrpc__amqp_link *a, const char *exchange, const char *key, const char *cid,
                         char *err, size_t errlen)
{
    char ms[32];
    snprintf(ms, sizeof ms, "%.0f", WINDOW_S * 1000);
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
               AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_EXPIRATION_FLAG;
    p.content_type = amqp_cstring_bytes(RRPC__AMQP_JSON);
    p.reply_to = amqp_cstring_bytes(RRPC__AMQP_DIRECT_REPLY);
    p.correlation_id = amqp_cstring_bytes(cid);
    p.expiration = amqp_cstring_bytes(ms); /* nobody waits for a later answer */
    const char *body = "{\"query\":\"" RRPC__AMQP_REGISTRY_QUERY "\"}";
    amqp_bytes_t b = {.len = strlen(body), .bytes = (void *)body};
    int st = amqp_basic_publish(a->conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(exchange),
                                amqp_cstring_bytes(key), 0, 0, &p, b);
    if (st == AMQP_STATUS_OK)
        return RRPC_OK;
    a->broken = 1;
    return rrpc__fail(err, errlen, RRPC_ECONNECT, "publishing the registry query: %s",
                      amqp_error_string2(st));
}

/* An answer's body as a JSON object if it is ours (correlation id CID),
 * else NULL. */
static json_t *take_answer(const amqp_envelope_t *env, const char *cid)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    size_t n = strlen(cid);
    if (!(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) || p->correlation_id.len != n ||
        memcmp(p->correlation_id.bytes, cid, n) != 0)
        return NULL;
    json_t *doc =
        json_loadb(env->message.body.bytes, env->message.body.len, RRPC__JSON_DECODE_FLAGS, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Asks the servers that routing KEY reaches (RRPC__AMQP_REGISTRY_ALL:
 * every one) who they are.  EXPECT >= 0: done once the answers' threads
 * add up to EXPECT (the service queue's consumers); < 0: done when
 * answers stop coming.  *ANSWERS: a new array of the answers.  No
 * registry exchange (no server ever ran): an empty array. */
static int ask_workers(rrpc__amqp_link *a, const char *prefix, const char *key, long long expect,
                       json_t **answers, char *err, size_t errlen)
{
    char exchange[RRPC__KEY_MAX], cid[33];
    *answers = NULL;
    if (rrpc__amqp_registry_exchange(exchange, sizeof exchange, prefix) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "prefix too long");
    int rc = rrpc__random_hex128(cid);
    if (rc != RRPC_OK)
        return rrpc__fail(err, errlen, rc, "no random bytes");
    amqp_exchange_declare(a->conn, SIDE, amqp_cstring_bytes(exchange),
                          amqp_cstring_bytes(RRPC__AMQP_REGISTRY_TYPE), 1, 0, 0, 0,
                          amqp_empty_table);
    rc = side_judge(a, amqp_get_rpc_reply(a->conn), "exchange.declare (passive)", err, errlen);
    json_t *out = json_array();
    if (rc == 1 || out == NULL) { /* no registry exchange: nobody to ask */
        *answers = out;
        return out ? RRPC_OK : RRPC_ENOMEM;
    }
    if (rc == RRPC_OK)
        rc = publish_query(a, exchange, key, cid, err, errlen);
    double start = rrpc__monotonic(), last = 0;
    long long threads = 0;
    while (rc == RRPC_OK) {
        double end = start + WINDOW_S;
        if (expect < 0) {
            double quiet = last > 0 ? last + QUIET_S : start + FIRST_S;
            end = quiet < end ? quiet : end;
        } else if (threads >= expect && json_array_size(out) > 0)
            break;
        double left = timeout_left(end);
        if (left <= 0)
            break;
        struct timeval tv = rrpc__amqp_tv(left);
        amqp_envelope_t env;
        amqp_maybe_release_buffers(a->conn);
        amqp_rpc_reply_t r = amqp_consume_message(a->conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            json_t *doc = take_answer(&env, cid);
            amqp_destroy_envelope(&env);
            if (doc != NULL) {
                threads += json_integer_value(json_object_get(doc, "threads"));
                json_array_append_new(out, doc);
                last = rrpc__monotonic();
            }
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_TIMEOUT) {
            continue;
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            char ignored[8];
            if (rrpc__amqp_other_frame(a, ignored, sizeof ignored) < 0)
                rc = rrpc__fail(err, errlen, RRPC_ECONNECT, "%s", a->errmsg);
        } else {
            rc = rrpc__amqp_judge(a, r, "waiting for registry answers");
            rc = rrpc__fail(err, errlen, rc == RRPC_OK ? RRPC_ECONNECT : rc, "%s", a->errmsg);
        }
    }
    if (rc != RRPC_OK) {
        json_decref(out);
        return rc;
    }
    *answers = out;
    return RRPC_OK;
}

/* Runs FN between opening and closing the side channel. */
#define WITH_SIDE(a, err, errlen, call)                                                            \
    do {                                                                                           \
        rc = side_open(a, err, errlen);                                                            \
        if (rc == RRPC_OK) {                                                                       \
            rc = (call);                                                                           \
            side_close(a);                                                                         \
        }                                                                                          \
    } while (0)

static int services(rrpc__client_link *l, const char *prefix, json_t **names, char *err,
                    size_t errlen)
{
    rrpc__amqp_link *a = rrpc__amqp_client_amqp(l);
    json_t *answers = NULL;
    int rc;
    WITH_SIDE(a, err, errlen,
              ask_workers(a, prefix, RRPC__AMQP_REGISTRY_ALL, -1, &answers, err, errlen));
    if (rc != RRPC_OK)
        return rc;
    json_t *seen = json_object(), *out = json_array();
    size_t i;
    json_t *w;
    json_array_foreach(answers, i, w)
    {
        const char *name = json_string_value(json_object_get(w, "service"));
        if (name != NULL && json_object_get(seen, name) == NULL) {
            json_object_set_new(seen, name, json_true());
            json_array_append_new(out, json_string(name));
        }
    }
    json_decref(seen);
    json_decref(answers);
    *names = out;
    return out ? RRPC_OK : rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
}

/* ---- one service -------------------------------------------------------------------- */

/* Adds the integers of FROM into the object TO, member by member. */
static void add_into(json_t *to, const json_t *from)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)from, k, v)
    {
        if (!json_is_integer(v))
            continue;
        json_int_t had = json_integer_value(json_object_get(to, k));
        json_object_set_new(to, k, json_integer(had + json_integer_value(v)));
    }
}

/* The view's parts taken from the servers' ANSWERS (consumed). */
static void from_answers(rrpc__service_view *v, json_t *answers)
{
    json_t *counters = json_object();
    size_t i;
    json_t *w;
    json_array_foreach(answers, i, w)
    {
        add_into(v->mstats, json_object_get(w, "mstats"));
        add_into(counters, json_object_get(w, "counters"));
        long long mq = json_integer_value(json_object_get(w, "max_queue"));
        v->max_queue = mq > v->max_queue ? mq : v->max_queue;
        /* Live while its connection is: the broker drops its queue when
         * the connection goes, so the ttl is what it is promised. */
        json_t *rec = json_copy(w);
        json_object_del(rec, "mstats");
        json_object_del(rec, "counters");
        json_object_del(rec, "time");
        json_object_set(rec, "expires_in", json_object_get(w, "ttl_s"));
        json_array_append_new(v->workers, rec);
    }
    v->registered = json_array_size(answers) > 0;
    v->expired = json_integer_value(json_object_get(counters, "expired"));
    v->redelivered = json_integer_value(json_object_get(counters, "redelivered"));
    v->lost = json_integer_value(json_object_get(counters, "lost"));
    json_decref(counters);
    json_decref(answers);
}

static int look(rrpc__amqp_link *a, const char *prefix, const char *service,
                const rrpc__service_keys *k, rrpc__service_view *v, char *err, size_t errlen);

static int service(rrpc__client_link *l, const char *prefix, const char *service,
                   rrpc__service_view *v, char *err, size_t errlen)
{
    rrpc__service_keys k;
    if (rrpc__service_keys_init(&k, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    memset(v, 0, sizeof *v);
    v->shards = 1;
    v->workers = json_array();
    v->mstats = json_object();
    if (v->workers == NULL || v->mstats == NULL) {
        json_decref(v->workers);
        json_decref(v->mstats);
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    }
    rrpc__amqp_link *a = rrpc__amqp_client_amqp(l);
    int rc;
    WITH_SIDE(a, err, errlen, look(a, prefix, service, &k, v, err, errlen));
    if (rc != RRPC_OK) {
        json_decref(v->workers);
        json_decref(v->mstats);
        memset(v, 0, sizeof *v);
    }
    return rc;
}

/* The queues' counts, then the service's servers: asked until as many
 * threads answered as the queue has consumers (a consumer that is not an
 * rrpc server -- a tutorial worker -- makes it wait the whole window). */
static int look(rrpc__amqp_link *a, const char *prefix, const char *service,
                const rrpc__service_keys *k, rrpc__service_view *v, char *err, size_t errlen)
{
    long long consumers = 0, dead_consumers;
    int exists = 0, dead_exists;
    int rc = peek_queue(a, k->list, &v->queue, &consumers, &exists, err, errlen);
    if (rc == RRPC_OK)
        rc = peek_queue(a, k->dead, &v->dead, &dead_consumers, &dead_exists, err, errlen);
    v->dead_total = v->dead; /* the broker counts what is kept, not what ever was */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v->now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    v->oldest_unknown = v->queue > 0; /* peeking would mark it redelivered */
    json_t *answers = NULL;
    if (rc == RRPC_OK && exists) /* no queue: no rrpc server of it runs */
        rc = ask_workers(a, prefix, service, consumers > 0 ? consumers : -1, &answers, err, errlen);
    if (rc == RRPC_OK && answers != NULL)
        from_answers(v, answers);
    return rc;
}

/* ---- dead letters ------------------------------------------------------------------- */

/* The entry KEY of the AMQP table T, or NULL. */
static const amqp_field_value_t *table_get(const amqp_table_t *t, const char *key)
{
    size_t n = strlen(key);
    for (int i = 0; t != NULL && i < t->num_entries; i++)
        if (t->entries[i].key.len == n && memcmp(t->entries[i].key.bytes, key, n) == 0)
            return &t->entries[i].value;
    return NULL;
}

static json_t *field_string(const amqp_field_value_t *f)
{
    if (f == NULL || (f->kind != AMQP_FIELD_KIND_UTF8 && f->kind != AMQP_FIELD_KIND_BYTES))
        return NULL;
    return json_stringn(f->value.bytes.bytes, f->value.bytes.len);
}

/* "reason" and "time" of a dead letter from its headers: rrpc's own
 * x-rrpc-reason and x-rrpc-time if a worker filed it, else the broker's
 * x-death (the first: the most recent) -- "expired", "rejected",
 * "maxlen"... */
static void dead_reason(json_t *rec, const amqp_basic_properties_t *p)
{
    const amqp_table_t *h = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;
    json_t *reason = field_string(table_get(h, "x-rrpc-reason"));
    const amqp_field_value_t *death = table_get(h, "x-death");
    const amqp_table_t *first = NULL;
    if (death != NULL && death->kind == AMQP_FIELD_KIND_ARRAY &&
        death->value.array.num_entries > 0 &&
        death->value.array.entries[0].kind == AMQP_FIELD_KIND_TABLE)
        first = &death->value.array.entries[0].value.table;
    if (reason == NULL)
        reason = field_string(table_get(first, "reason"));
    if (reason == NULL)
        reason = field_string(table_get(h, "x-first-death-reason"));
    json_object_set_new(rec, "reason", reason ? reason : json_string("unknown"));
    const amqp_field_value_t *t = table_get(first, "time");
    json_t *own = field_string(table_get(h, "x-rrpc-time")); /* "<Unix s>.<ms>" */
    double when = 0;
    if (own != NULL)
        when = strtod(json_string_value(own), NULL);
    else if (t != NULL && t->kind == AMQP_FIELD_KIND_TIMESTAMP)
        when = (double)t->value.u64;
    else if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        when = (double)p->timestamp;
    json_object_set_new(rec, "time", json_real(when));
    json_decref(own);
}

/* The record of one dead letter: "service", "reason", "time", "message"
 * (the request's text; "message_bytes" instead if it is not UTF-8) and
 * "ref" (the SHA-1 of the body). */
static json_t *dead_record(const char *service, const amqp_message_t *m)
{
    json_t *rec = json_object();
    char ref[41];
    rrpc__sha1_hex(m->body.bytes, m->body.len, ref);
    json_object_set_new(rec, "service", json_string(service));
    dead_reason(rec, &m->properties);
    json_t *text = json_stringn(m->body.bytes, m->body.len);
    if (text != NULL)
        json_object_set_new(rec, "message", text);
    else
        json_object_set_new(rec, "message_bytes", json_integer((json_int_t)m->body.len));
    json_object_set_new(rec, "ref", json_string(ref));
    return rec;
}

/* basic.get of one message of QUEUE into *M (unacked, *TAG its delivery
 * tag): 1, or 0 if the queue is empty. */
static int get_one(rrpc__amqp_link *a, const char *queue, amqp_message_t *m, uint64_t *tag,
                   char *err, size_t errlen)
{
    amqp_rpc_reply_t r = amqp_basic_get(a->conn, SIDE, amqp_cstring_bytes(queue), 0);
    int rc = side_judge(a, r, "basic.get", err, errlen);
    if (rc != RRPC_OK)
        return rc < 0 ? rc : 0; /* the queue went away: nothing more */
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
        return 0;
    *tag = ((const amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
    rc = rrpc__amqp_judge(a, amqp_read_message(a->conn, SIDE, m, 0), "reading a dead letter");
    return rc == RRPC_OK ? 1 : rrpc__fail(err, errlen, rc, "%s", a->errmsg);
}

/* Puts back, unchanged and in place, every message taken since FIRST up
 * to LAST (delivery tags), except SKIP (0: none). */
static void give_back(rrpc__amqp_link *a, uint64_t first, uint64_t last, uint64_t skip)
{
    for (uint64_t t = first; t > 0 && t <= last && !a->broken; t++)
        if (t != skip && amqp_basic_nack(a->conn, SIDE, t, 0, 1) != AMQP_STATUS_OK)
            a->broken = 1;
}

static int list_dead(rrpc__amqp_link *a, const char *service, const char *queue, long limit,
                     json_t *out, char *err, size_t errlen)
{
    long long n, consumers;
    int exists, rc = peek_queue(a, queue, &n, &consumers, &exists, err, errlen);
    uint64_t first = 0, last = 0;
    for (long long i = 0; rc == RRPC_OK && i < n && (limit <= 0 || i < limit); i++) {
        amqp_message_t m;
        uint64_t tag;
        int got = get_one(a, queue, &m, &tag, err, errlen);
        if (got <= 0) {
            rc = got;
            break;
        }
        first = first ? first : tag;
        last = tag;
        json_array_append_new(out, dead_record(service, &m));
        amqp_destroy_message(&m);
    }
    give_back(a, first, last, 0);
    return rc;
}

static int dead_list(rrpc__client_link *l, const char *prefix, const char *service, long limit,
                     json_t **records, char *err, size_t errlen)
{
    rrpc__service_keys k;
    if (rrpc__service_keys_init(&k, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    rrpc__amqp_link *a = rrpc__amqp_client_amqp(l);
    json_t *out = json_array();
    int rc;
    WITH_SIDE(a, err, errlen, list_dead(a, service, k.dead, limit, out, err, errlen));
    if (rc != RRPC_OK) {
        json_decref(out);
        return rc;
    }
    *records = out;
    return RRPC_OK;
}

/* Publishes dead letter M back to the service's QUEUE with what its
 * caller set (reply_to, correlation_id, content type, delivery mode), and
 * waits for the broker's confirm: RRPC_OK once the queue has it. */
static int republish(rrpc__amqp_link *a, const char *queue, const amqp_message_t *m, char *err,
                     size_t errlen)
{
    const amqp_basic_properties_t *in = &m->properties;
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = in->_flags & (AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
                             AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG);
    p.content_type = in->content_type;
    p.reply_to = in->reply_to;
    p.correlation_id = in->correlation_id;
    p.delivery_mode = in->delivery_mode;
    int st = amqp_basic_publish(a->conn, SIDE, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0,
                                &p, m->body);
    amqp_frame_t f;
    double end = rrpc__monotonic() + CONFIRM_S;
    while (st == AMQP_STATUS_OK) {
        struct timeval tv = rrpc__amqp_tv(timeout_left(end));
        st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        /* Anything else (a late answer on channel 1) is dropped. */
        if (st != AMQP_STATUS_OK || f.channel != SIDE || f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD)
            return RRPC_OK;
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD)
            return rrpc__fail(err, errlen, RRPC_EOVERLOADED,
                              "the broker refused the requeued message (is the queue full?)");
    }
    a->broken = 1;
    return rrpc__fail(err, errlen, RRPC_ECONNECT, "requeueing a dead letter: %s",
                      amqp_error_string2(st));
}

/* Moves dead letters of K back to the service's queue: every one present
 * at the start, or (REF not NULL) the one whose ref is REF.  *MOVED
 * counts them.  Those not moved go back to the dead letters, in place. */
static int requeue(rrpc__amqp_link *a, const rrpc__service_keys *k, const char *ref, long *moved,
                   char *err, size_t errlen)
{
    long long n, q, consumers;
    int exists, rc = peek_queue(a, k->list, &q, &consumers, &exists, err, errlen);
    if (rc == RRPC_OK && !exists)
        return rrpc__fail(err, errlen, RRPC_EUNAVAILABLE,
                          "the service has no queue to requeue into: is its server running?");
    if (rc == RRPC_OK)
        rc = peek_queue(a, k->dead, &n, &consumers, &exists, err, errlen);
    if (rc == RRPC_OK) {
        amqp_confirm_select(a->conn, SIDE);
        rc = side_judge(a, amqp_get_rpc_reply(a->conn), "confirm.select", err, errlen);
    }
    uint64_t first = 0, last = 0, done = 0;
    int found = 0;
    for (long long i = 0; rc == RRPC_OK && i < n && !found; i++) {
        amqp_message_t m;
        uint64_t tag;
        int got = get_one(a, k->dead, &m, &tag, err, errlen);
        if (got <= 0) {
            rc = got;
            break;
        }
        first = first ? first : tag;
        last = tag;
        char hex[41];
        rrpc__sha1_hex(m.body.bytes, m.body.len, hex);
        if (ref == NULL || strcmp(hex, ref) == 0) {
            found = ref != NULL;
            rc = republish(a, k->list, &m, err, errlen);
            if (rc == RRPC_OK && amqp_basic_ack(a->conn, SIDE, tag, 0) == AMQP_STATUS_OK) {
                done = ref ? tag : done;
                if (moved)
                    (*moved)++;
            }
        }
        amqp_destroy_message(&m);
    }
    if (ref != NULL)
        give_back(a, first, last, done);
    else if (rc != RRPC_OK && last > 0 && !a->broken)
        amqp_basic_nack(a->conn, SIDE, last, 1, 1); /* the rest, unacked: back */
    if (rc == RRPC_OK && ref != NULL && !found)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "no dead letter has ref %s", ref);
    return rc;
}

static int dead_requeue(rrpc__client_link *l, const char *prefix, const char *service, long *moved,
                        char *err, size_t errlen)
{
    rrpc__service_keys k;
    if (rrpc__service_keys_init(&k, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    rrpc__amqp_link *a = rrpc__amqp_client_amqp(l);
    int rc;
    WITH_SIDE(a, err, errlen, requeue(a, &k, NULL, moved, err, errlen));
    return rc;
}

static int dead_requeue_one(rrpc__client_link *l, const char *prefix, const char *service,
                            const char *ref, char *err, size_t errlen)
{
    rrpc__service_keys k;
    if (rrpc__service_keys_init(&k, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    rrpc__amqp_link *a = rrpc__amqp_client_amqp(l);
    int rc;
    WITH_SIDE(a, err, errlen, requeue(a, &k, ref, NULL, err, errlen));
    return rc;
}

static int purge(rrpc__amqp_link *a, const char *queue, long *removed, char *err, size_t errlen)
{
    amqp_queue_purge_ok_t *ok = amqp_queue_purge(a->conn, SIDE, amqp_cstring_bytes(queue));
    int rc = side_judge(a, amqp_get_rpc_reply(a->conn), "queue.purge", err, errlen);
    if (rc == RRPC_OK && ok != NULL && removed != NULL)
        *removed += (long)ok->message_count;
    return rc < 0 ? rc : RRPC_OK; /* 1: no dead-letter queue, nothing to purge */
}

static int dead_purge(rrpc__client_link *l, const char *prefix, const char *service, long *removed,
                      char *err, size_t errlen)
{
    rrpc__service_keys k;
    if (rrpc__service_keys_init(&k, prefix, service) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    rrpc__amqp_link *a = rrpc__amqp_client_amqp(l);
    int rc;
    WITH_SIDE(a, err, errlen, purge(a, k.dead, removed, err, errlen));
    return rc;
}

/* ---- what has no home in the broker ------------------------------------------------ */

static int forget(rrpc__client_link *l, const char *prefix, const char *service, char *err,
                  size_t errlen)
{
    (void)l;
    (void)prefix;
    (void)service;
    return rrpc__fail(err, errlen, RRPC_EINVAL,
                      "over AMQP nothing is stored to forget: the registry is the live servers' "
                      "answers, and a stopped server leaves it by itself");
}

static int limits_set(rrpc__client_link *l, const char *prefix, const char *service,
                      const char *text, char *err, size_t errlen)
{
    (void)l;
    (void)prefix;
    (void)service;
    (void)text;
    return rrpc__fail(err, errlen, RRPC_EINVAL, "limits are not supported over AMQP yet");
}

/* rrpc web's chart history: the broker has no place for it without the
 * management plugin, so it stays in this process (lost when rrpc web
 * restarts), one sample per service and minute, KEEP minutes. */
typedef struct history {
    char *name;      /* "<prefix>\n<service>" */
    json_t *samples; /* [{"minute", "sample"}], oldest first */
} history;

static pthread_mutex_t history_lock = PTHREAD_MUTEX_INITIALIZER;
static history *histories;
static size_t n_histories;

/* The history of PREFIX and SERVICE (made if MAKE), under the lock. */
static history *history_of(const char *prefix, const char *service, int make)
{
    char name[2 * RRPC__KEY_MAX];
    snprintf(name, sizeof name, "%s\n%s", prefix, service);
    for (size_t i = 0; i < n_histories; i++)
        if (strcmp(histories[i].name, name) == 0)
            return &histories[i];
    if (!make)
        return NULL;
    history *grown = realloc(histories, (n_histories + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    histories = grown;
    history *h = &histories[n_histories];
    h->name = strdup(name);
    h->samples = json_array();
    if (h->name == NULL || h->samples == NULL) {
        free(h->name);
        json_decref(h->samples);
        return NULL;
    }
    n_histories++;
    return h;
}

static int history_put(rrpc__client_link *l, const char *prefix, const char *service,
                       const char *text, int keep, char *err, size_t errlen)
{
    (void)l;
    json_t *sample = json_loads(text, 0, NULL);
    if (sample == NULL)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "a sample that is not JSON");
    json_int_t minute = (json_int_t)(time(NULL) / 60 * 60);
    pthread_mutex_lock(&history_lock);
    history *h = history_of(prefix, service, 1);
    if (h != NULL) {
        size_t n = json_array_size(h->samples);
        json_t *lastone = n ? json_array_get(h->samples, n - 1) : NULL;
        if (lastone && json_integer_value(json_object_get(lastone, "minute")) == minute)
            json_array_remove(h->samples, n - 1); /* a second one replaces the first */
        json_array_append_new(h->samples,
                              json_pack("{s:I, s:o}", "minute", minute, "sample", sample));
        sample = NULL;
        while (json_array_size(h->samples) > 0 &&
               json_integer_value(json_object_get(json_array_get(h->samples, 0), "minute")) <=
                   minute - (json_int_t)keep * 60)
            json_array_remove(h->samples, 0);
    }
    pthread_mutex_unlock(&history_lock);
    json_decref(sample);
    return h != NULL ? RRPC_OK : rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
}

static int history_get(rrpc__client_link *l, const char *prefix, const char *service,
                       json_t **records, char *err, size_t errlen)
{
    (void)l;
    pthread_mutex_lock(&history_lock);
    history *h = history_of(prefix, service, 0);
    *records = h ? json_deep_copy(h->samples) : json_array();
    pthread_mutex_unlock(&history_lock);
    return *records ? RRPC_OK : rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
}

const rrpc__admin_ops rrpc__amqp_admin_ops = {
    .services = services,
    .service = service,
    .dead_list = dead_list,
    .dead_requeue = dead_requeue,
    .dead_requeue_one = dead_requeue_one,
    .dead_purge = dead_purge,
    .forget = forget,
    .limits_set = limits_set,
    .history_put = history_put,
    .history_get = history_get,
};
