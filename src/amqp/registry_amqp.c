/* registry_amqp.c -- a server's presence over AMQP (registry_amqp.h): it
 * answers the operators' "who is there" queries.
 *
 * RabbitMQ has no place to keep a record without the management plugin
 * (off on many installs), so the registry is a question rather than a
 * store: each server binds an exclusive, auto-delete queue of its own to
 * the registry exchange, and answers every query published there with its
 * record (PROTOCOL.md section 9), its per-method counters and its
 * counters, sent to the query's reply_to.  The queue lives exactly as long
 * as the server's connection: a stopped or killed server stops answering
 * at once, so nothing expires and nothing needs reaping.
 *
 * It runs on a connection and thread of its own, so that a slow handler
 * never keeps a query waiting and the workers' loops (server_amqp.c) know
 * nothing of it.  PROTOCOL.md section 12, "Operations over AMQP".
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/registry_amqp.h"

#include "core/keys.h"
#include "core/log.h"

#include <amqp_framing.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define POLL_S        0.2 /* the thread notices the stop flag this often */
#define BACKOFF_MIN_S 0.2
#define BACKOFF_MAX_S 5.0

struct rrpc__amqp_registry {
    rrpc__serving *s;
    const rrpc__announcement *a;
    json_t *record; /* A's record, parsed once */
    rrpc__amqp_link link;
    char exchange[RRPC__KEY_MAX];
    char queue[RRPC__KEY_MAX];
    pthread_t thread;
    atomic_int stop;
};

int rrpc__amqp_registry_exchange(char *buf, size_t len, const char *prefix)
{
    return rrpc__key_join(buf, len, prefix, RRPC__AMQP_REGISTRY, NULL);
}

int rrpc__amqp_registry_queue(char *buf, size_t len, const char *prefix, const char *id)
{
    char tail[RRPC__KEY_MAX];
    if (rrpc__key_join(tail, sizeof tail, RRPC__AMQP_REGISTRY, ":", id) != RRPC_OK)
        return RRPC_EINVAL;
    return rrpc__key_join(buf, len, prefix, tail, NULL);
}

/* The exchange, the server's queue bound to it with the service's key and
 * the key of queries to everyone, and a no-ack consumer on it. */
static int declare(rrpc__amqp_registry *r)
{
    amqp_connection_state_t c = r->link.conn;
    amqp_bytes_t ex = amqp_cstring_bytes(r->exchange), q = amqp_cstring_bytes(r->queue);
    amqp_exchange_declare(c, RRPC__AMQP_CHANNEL, ex, amqp_cstring_bytes(RRPC__AMQP_REGISTRY_TYPE),
                          0, 0, 0, 0, amqp_empty_table);
    int rc = rrpc__amqp_judge(&r->link, amqp_get_rpc_reply(c), "declaring the registry exchange");
    if (rc == RRPC_OK) {
        amqp_queue_declare(c, RRPC__AMQP_CHANNEL, q, 0, 0, 1, 1, amqp_empty_table);
        rc = rrpc__amqp_judge(&r->link, amqp_get_rpc_reply(c), "declaring the registry queue");
    }
    const char *keys[] = {r->s->service, RRPC__AMQP_REGISTRY_ALL};
    for (int i = 0; i < 2 && rc == RRPC_OK; i++) {
        amqp_queue_bind(c, RRPC__AMQP_CHANNEL, q, ex, amqp_cstring_bytes(keys[i]),
                        amqp_empty_table);
        rc = rrpc__amqp_judge(&r->link, amqp_get_rpc_reply(c), "binding the registry queue");
    }
    if (rc == RRPC_OK) {
        amqp_basic_consume(c, RRPC__AMQP_CHANNEL, q, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
        rc = rrpc__amqp_judge(&r->link, amqp_get_rpc_reply(c), "consuming registry queries");
    }
    return rc;
}

static int link_up(rrpc__amqp_registry *r)
{
    int rc = rrpc__amqp_connect(&r->link, &r->s->url, r->s->connect_timeout_s);
    if (rc == RRPC_OK && (rc = declare(r)) != RRPC_OK)
        rrpc__amqp_disconnect(&r->link);
    return rc;
}

/* {"calls:<m>": n, "errors:<m>": n, "h<b>:<m>": n} of the counts so far
 * (only those not 0), as over Redis's {L}:mstats -- but this process's
 * totals, not increments. */
static json_t *mstats(const rrpc__announcement *a)
{
    json_t *out = json_object();
    const rrpc__stats *st = a->stats;
    for (size_t i = 0; out && st && a->methods && i < st->count && i < a->methods->count; i++) {
        const rrpc__method_stats *m = &st->methods[i];
        const char *name = a->methods->items[i].name;
        char field[RRPC__KEY_MAX];
        uint64_t v;
        if ((v = atomic_load(&m->calls)) > 0 &&
            snprintf(field, sizeof field, "calls:%s", name) < (int)sizeof field)
            json_object_set_new(out, field, json_integer((json_int_t)v));
        if ((v = atomic_load(&m->errors)) > 0 &&
            snprintf(field, sizeof field, "errors:%s", name) < (int)sizeof field)
            json_object_set_new(out, field, json_integer((json_int_t)v));
        for (int b = 0; b < RRPC__HIST_BUCKETS; b++)
            if ((v = atomic_load(&m->hist[b])) > 0 &&
                snprintf(field, sizeof field, "h%d:%s", b, name) < (int)sizeof field)
                json_object_set_new(out, field, json_integer((json_int_t)v));
    }
    return out;
}

static json_t *counters(rrpc__server_counters *n)
{
#define C(x) (json_int_t) atomic_load(&n->x)
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "requests", C(requests),
                     "notifications", C(notifications), "errors", C(errors), "expired", C(expired),
                     "dead_letters", C(dead_letters), "redelivered", C(redelivered), "given_back",
                     C(given_back), "lost", C(lost));
#undef C
}

/* The answer to a query: the record with "mstats", "counters" and "time"
 * (this process's Unix time) added.  New text, or NULL. */
static char *answer_text(rrpc__amqp_registry *r)
{
    json_t *doc = json_deep_copy(r->record);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (doc == NULL)
        return NULL;
    json_object_set_new(doc, "mstats", mstats(r->a));
    json_object_set_new(doc, "counters", counters(&r->s->n));
    json_object_set_new(doc, "time", json_real((double)ts.tv_sec + (double)ts.tv_nsec / 1e9));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

/* Answers one query: to its reply_to, with its correlation_id.  A query
 * without reply_to has nobody to answer. */
static void answer(rrpc__amqp_registry *r, const amqp_basic_properties_t *in)
{
    char to[RRPC__KEY_MAX];
    if (!(in->_flags & AMQP_BASIC_REPLY_TO_FLAG) || in->reply_to.len == 0 ||
        in->reply_to.len >= sizeof to)
        return;
    memcpy(to, in->reply_to.bytes, in->reply_to.len);
    to[in->reply_to.len] = '\0';
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(RRPC__AMQP_JSON);
    if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = in->correlation_id;
    }
    char *text = answer_text(r);
    if (text != NULL)
        rrpc__amqp_publish(&r->link, to, text, strlen(text), &p, 0);
    free(text);
}

static void pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Connects again with backoff until it works or the server stops; says
 * so once per outage. */
static void mend(rrpc__amqp_registry *r)
{
    rrpc__logf(RRPC_LOG_WARN, r->s->service, NULL, "registry link lost: %s", r->link.errmsg);
    double delay = BACKOFF_MIN_S;
    while (!atomic_load(&r->stop)) {
        rrpc__amqp_disconnect(&r->link);
        if (link_up(r) == RRPC_OK) {
            rrpc__logf(RRPC_LOG_INFO, r->s->service, NULL, "registry: reconnected");
            return;
        }
        pause_s(delay);
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}

static void *run(void *arg)
{
    rrpc__amqp_registry *r = arg;
    while (!atomic_load(&r->stop)) {
        if (r->link.broken || r->link.conn == NULL) {
            mend(r);
            continue;
        }
        struct timeval tv = rrpc__amqp_tv(POLL_S);
        amqp_envelope_t env;
        amqp_maybe_release_buffers(r->link.conn);
        amqp_rpc_reply_t rep = amqp_consume_message(r->link.conn, &env, &tv, 0);
        if (rep.reply_type == AMQP_RESPONSE_NORMAL) {
            answer(r, &env.message.properties);
            amqp_destroy_envelope(&env);
        } else if (rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   rep.library_error == AMQP_STATUS_TIMEOUT) {
            continue;
        } else if (rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   rep.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            char ignored[8];
            rrpc__amqp_other_frame(&r->link, ignored, sizeof ignored);
        } else {
            rrpc__amqp_judge(&r->link, rep, "reading registry queries");
        }
    }
    return NULL;
}

static void destroy(rrpc__amqp_registry *r)
{
    rrpc__amqp_disconnect(&r->link);
    json_decref(r->record);
    free(r);
}

int rrpc__amqp_registry_start(rrpc__amqp_registry **out, rrpc__serving *s,
                              const rrpc__announcement *a)
{
    *out = NULL;
    if (a == NULL)
        return RRPC_OK;
    rrpc__amqp_registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ENOMEM, "out of memory");
    r->s = s;
    r->a = a;
    r->record = json_loads(a->record, 0, NULL);
    if (!json_is_object(r->record) ||
        rrpc__amqp_registry_exchange(r->exchange, sizeof r->exchange, s->prefix) != RRPC_OK ||
        rrpc__amqp_registry_queue(r->queue, sizeof r->queue, s->prefix, a->id) != RRPC_OK) {
        destroy(r);
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                          "cannot build the registry's names");
    }
    /* The first try runs here, so that a refusal is said at start; a
     * server runs unregistered rather than not at all (the tutorial's
     * permissions grant a worker its queue only). */
    int rc = link_up(r);
    if (rc == RRPC_EAUTH || rc == RRPC_EREDIS) {
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "not in the registry (rrpc ls/info/stats cannot see this server): %s",
                   r->link.errmsg);
        destroy(r);
        return RRPC_OK;
    }
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        destroy(r);
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ENOMEM,
                          "cannot start the registry thread");
    }
    *out = r;
    return RRPC_OK;
}

void rrpc__amqp_registry_stop(rrpc__amqp_registry *r)
{
    if (r == NULL)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    destroy(r);
}
