/* server_amqp.c -- the AMQP transport's server operations
 * (transport/server_ops.h), at most once.
 *
 * Each worker has a connection and channel of its own, declares the
 * service's queue <prefix><service> plainly (not durable, no arguments:
 * the same declaration as RabbitMQ's RPC tutorial, so either side may
 * declare it first), sets a prefetch of one (basic.qos) and consumes with
 * manual acks.  A delivery is acked on receipt, before it runs: at most
 * once, and the broker sends the next message while this one runs.  A
 * delivery the broker marks redelivered may have been acked by a worker
 * whose link broke after running it: at most once, it is dropped (logged,
 * counted as lost) rather than run again.
 *
 * Each message goes through the server's decide (server/), the same
 * per-request logic as over Redis; the answer goes to the message's
 * reply_to with its correlation_id.  Over AMQP the reply address is the
 * reply_to property, not the body's id, so every answer dispatch makes is
 * sent there -- also the ones Redis cannot address: -32600 for an invalid
 * request without an id, and -32700 for a body that is not JSON.  A
 * message without reply_to is a notification: run, not answered.
 * docs/PROTOCOL.md, "AMQP 0-9-1".
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/link.h"
#include "amqp/registry_amqp.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/protocol.h"
#include "transport/server_ops.h"

#include <amqp_framing.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_S        0.2 /* a worker notices the stop flag this often */
#define BACKOFF_MIN_S 0.1
#define BACKOFF_MAX_S 2.0
#define PREFETCH      1

typedef struct amqp_worker {
    rrpc__server_broker *b;
    int id;
    rrpc__amqp_link a;
    rrpc__key_rules rules;
} amqp_worker;

struct rrpc__server_broker {
    rrpc__serving *s;
    amqp_worker *ws;
    rrpc__amqp_registry *registry; /* registry_amqp.c: answers rrpc ls/info/stats */
};

/* What this step of the AMQP transport refuses, said by rrpc_server_run. */
static const char *unsupported(const rrpc__serving *s, const rrpc_server_options *opts)
{
    (void)s; /* amqps:// is served since TLS came (link.c) */
    if (opts->reliable)
        return "reliable mode is not supported over AMQP yet";
    if (opts->shards > 1)
        return "shards are not supported over AMQP yet";
    if (opts->limits != NULL)
        return "limits are not supported over AMQP yet";
    if (opts->max_queue > 0)
        return "max_queue is not supported over AMQP yet";
    return NULL;
}

static int broker_create(rrpc__serving *s, const rrpc_server_options *opts,
                         rrpc__server_broker **out)
{
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return RRPC_ENOMEM;
    (*out)->s = s;
    const char *why = unsupported(s, opts);
    if (why != NULL)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL, "%s", why);
    return RRPC_OK;
}

static void broker_destroy(rrpc__server_broker *b)
{
    free(b);
}

/* Declares the queue, sets the prefetch and starts consuming. */
static int consume(amqp_worker *w)
{
    rrpc__amqp_link *a = &w->a;
    amqp_bytes_t queue = amqp_cstring_bytes(w->b->s->list_key);
    char what[RRPC__ERRMSG_LEN / 2];
    snprintf(what, sizeof what, "declaring queue '%.100s'", w->b->s->list_key);
    amqp_queue_declare(a->conn, RRPC__AMQP_CHANNEL, queue, 0, 0, 0, 0, amqp_empty_table);
    int rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), what);
    if (rc == RRPC_OK) {
        amqp_basic_qos(a->conn, RRPC__AMQP_CHANNEL, 0, PREFETCH, 0);
        rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), "basic.qos");
    }
    if (rc == RRPC_OK) {
        amqp_basic_consume(a->conn, RRPC__AMQP_CHANNEL, queue, amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), "basic.consume");
    }
    return rc;
}

/* Worker W's link, consuming. */
static int worker_up(amqp_worker *w)
{
    rrpc__serving *s = w->b->s;
    int rc = rrpc__amqp_connect(&w->a, &s->url, s->connect_timeout_s);
    if (rc == RRPC_OK && (rc = consume(w)) != RRPC_OK)
        rrpc__amqp_disconnect(&w->a);
    return rc;
}

static void broker_disconnect(rrpc__server_broker *b)
{
    for (int i = 0; b->ws != NULL && i < b->s->workers; i++)
        rrpc__amqp_disconnect(&b->ws[i].a);
    free(b->ws);
    b->ws = NULL;
}

static int broker_connect(rrpc__server_broker *b)
{
    rrpc__serving *s = b->s;
    s->errmsg[0] = '\0';
    b->ws = calloc((size_t)s->workers, sizeof *b->ws);
    if (b->ws == NULL)
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ENOMEM, "out of memory");
    for (int i = 0; i < s->workers; i++) {
        amqp_worker *w = &b->ws[i];
        w->b = b;
        w->id = i;
        w->rules = s->rules;
        int rc = worker_up(w);
        if (rc != RRPC_OK) {
            snprintf(s->errmsg, sizeof s->errmsg, "%s", w->a.errmsg);
            broker_disconnect(b);
            return rc;
        }
    }
    return RRPC_OK;
}

/* A broker not listening yet heals; a refused login or vhost never. */
static int broker_may_heal(const rrpc__server_broker *b, int rc)
{
    (void)b;
    return rc == RRPC_ECONNECT || rc == RRPC_ETIMEDOUT;
}

/* The registry answers operators' queries on a connection of its own
 * (registry_amqp.c). */
static int broker_announce(rrpc__server_broker *b, const rrpc__announcement *a)
{
    rrpc__logf(RRPC_LOG_INFO, b->s->service, NULL, "serving queue '%s' over AMQP (at most once)",
               b->s->list_key);
    return rrpc__amqp_registry_start(&b->registry, b->s, a);
}

static void broker_withdraw(rrpc__server_broker *b)
{
    rrpc__amqp_registry_stop(b->registry);
    b->registry = NULL;
}

/* The text to answer an outcome with (new), or NULL: dispatch's response,
 * the one a reply-key rule withheld (REFUSED: over AMQP the body's id
 * addresses nothing), the answer Redis could not address (no id), or the
 * JSON-RPC error for a message dispatch could not read. */
static char *answer_text(rrpc__outcome *out, char **refused)
{
    char *text = NULL;
    if (out->response != NULL) {
        text = out->response;
        out->response = NULL;
    } else if (*refused != NULL) {
        text = *refused;
        *refused = NULL;
    } else if (out->dead_response != NULL) {
        text = rrpc__response_text(out->dead_response);
    } else if (out->dead_reason != NULL) {
        int parse = strncmp(out->dead_reason, "parse error", 11) == 0 ||
                    strncmp(out->dead_reason, "invalid UTF-8", 13) == 0;
        json_t *r = rrpc__response_error(
            NULL, parse ? RRPC_JSONRPC_PARSE_ERROR : RRPC_JSONRPC_INVALID_REQUEST,
            parse ? "Parse error" : "Invalid Request", json_string(out->dead_reason));
        text = r ? rrpc__response_text(r) : NULL;
        json_decref(r);
    }
    return text;
}

/* Sends TEXT to the message's reply_to with its correlation_id. */
static void answer(amqp_worker *w, const amqp_basic_properties_t *in, const char *text)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(RRPC__AMQP_JSON);
    if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = in->correlation_id;
    }
    char queue[RRPC__KEY_MAX];
    size_t n = in->reply_to.len < sizeof queue ? in->reply_to.len : 0;
    memcpy(queue, in->reply_to.bytes, n);
    queue[n] = '\0';
    if (n == 0 || rrpc__amqp_publish(&w->a, queue, text, strlen(text), &p, 0) != RRPC_OK) {
        atomic_fetch_add(&w->b->s->n.lost, 1);
        rrpc__logf(RRPC_LOG_WARN, w->b->s->service, NULL, "answer lost: %s",
                   n == 0 ? "reply_to too long" : w->a.errmsg);
    }
}

/* One delivery: acked first (at most once), decided, answered. */
static void handle(amqp_worker *w, amqp_envelope_t *env)
{
    rrpc__serving *s = w->b->s;
    int acked = amqp_basic_ack(w->a.conn, RRPC__AMQP_CHANNEL, env->delivery_tag, 0);
    if (acked != AMQP_STATUS_OK) {
        w->a.broken = 1; /* the broker will hand it to another worker */
        snprintf(w->a.errmsg, sizeof w->a.errmsg, "basic.ack: %s", amqp_error_string2(acked));
        return;
    }
    if (env->redelivered) {
        atomic_fetch_add(&s->n.lost, 1);
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "dropped a redelivered request: at most once, it may have run already");
        return;
    }
    const amqp_basic_properties_t *in = &env->message.properties;
    rrpc__outcome out;
    char *refused = NULL;
    s->decide(s, &w->rules, NULL, env->message.body.bytes, env->message.body.len, &out, &refused);
    int has_reply_to = (in->_flags & AMQP_BASIC_REPLY_TO_FLAG) && in->reply_to.len > 0;
    char *text = has_reply_to && out.deferred == 0 ? answer_text(&out, &refused) : NULL;
    if (text != NULL)
        answer(w, in, text);
    free(text);
    free(refused);
    rrpc__outcome_clear(&out);
}

static void pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Connects again with backoff until it works or the server stops. */
static void mend(amqp_worker *w)
{
    rrpc__serving *s = w->b->s;
    rrpc__logf(RRPC_LOG_WARN, s->service, NULL, "worker %d: link lost: %s", w->id, w->a.errmsg);
    double delay = BACKOFF_MIN_S;
    while (!atomic_load(&s->stop)) {
        rrpc__amqp_disconnect(&w->a);
        if (worker_up(w) == RRPC_OK) {
            rrpc__logf(RRPC_LOG_INFO, s->service, NULL, "worker %d: reconnected", w->id);
            return;
        }
        pause_s(delay);
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}

static void broker_run_worker(rrpc__server_broker *b, int id)
{
    amqp_worker *w = &b->ws[id];
    rrpc__serving *s = b->s;
    while (!atomic_load(&s->stop)) {
        if (w->a.broken || w->a.conn == NULL) {
            mend(w);
            continue;
        }
        struct timeval tv = rrpc__amqp_tv(POLL_S);
        amqp_envelope_t env;
        amqp_maybe_release_buffers(w->a.conn);
        amqp_rpc_reply_t r = amqp_consume_message(w->a.conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            handle(w, &env);
            amqp_destroy_envelope(&env);
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_TIMEOUT) {
            continue;
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            char ignored[8];
            rrpc__amqp_other_frame(&w->a, ignored, sizeof ignored);
        } else {
            rrpc__amqp_judge(&w->a, r, "consuming");
        }
    }
}

static int broker_run_alone(rrpc__server_broker *b, int id)
{
    (void)id;
    return rrpc__fail(b->s->errmsg, sizeof b->s->errmsg, RRPC_EINVAL,
                      "a lone worker is not supported over AMQP yet");
}

const rrpc__server_ops rrpc__amqp_server_ops = {
    .broker = "RabbitMQ",
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
