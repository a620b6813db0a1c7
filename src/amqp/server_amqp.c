/* server_amqp.c -- the AMQP transport's server operations
 * (transport/server_ops.h): at most once, or reliable (at least once).
 *
 * Each worker has a connection and channel of its own, declares the
 * service's queue <prefix><service> and its dead-letter queue
 * <prefix><service>:dead, sets a prefetch (basic.qos, per consumer) and
 * consumes with manual acks.  How the queue is declared depends on the options
 * (docs/PROTOCOL.md section 12, "Queue declarations"): plainly (not
 * durable, no arguments, as RabbitMQ's RPC tutorial does) for an at most
 * once service without max_queue, so that tutorial-style peers and rrpc
 * declare the same queue; durable (reliable) and with the arguments
 * x-dead-letter-* and x-max-length / x-overflow reject-publish (max_queue)
 * when those options are asked for.  A queue that exists with other
 * settings is refused by the broker (PRECONDITION_FAILED) and the server
 * says why and stops rather than hang.
 *
 * At most once: a delivery is acked on receipt, before it runs, and one
 * the broker marks redelivered (it may have run on a worker whose link
 * broke) becomes a dead letter instead of running again.  The prefetch is a
 * window of 16 per worker: the worker takes the deliveries already there
 * (up to the window), acks them with one basic.ack `multiple`, and runs
 * them in order -- a prefetch of 1 with an ack each cost about two thirds
 * of the no-ack floor's throughput (docs/PERFORMANCE.md).  Why not no-ack:
 * the broker would push the whole queue into the workers' sockets (no
 * window at all: max_queue and the calls' expirations would stop meaning
 * anything, and a dead worker would lose all it was sent).  What the
 * window costs: a worker that dies or is cut off leaves the deliveries it
 * had not taken unacked; the broker hands them to the other workers marked
 * redelivered, and they become dead letters (never run twice, but not run:
 * an operator can requeue them), up to 15 per lost worker instead of 1.
 * A worker that stops cleanly cancels its consumer and runs what it was
 * sent.  Fairness: behind a slow handler the rest of a window would wait
 * while other workers idle, so a handler slower than 20 ms makes the
 * window 1 (a new consumer: RabbitMQ applies a prefetch when a consumer
 * starts) and 64 quick ones in a row double it back, as the Redis worker's
 * batch_max does.
 *
 * Reliable: the prefetch stays 1 (a window's unrun messages would come
 * back from a dead worker counted as deliveries, towards max_deliveries).
 * The channel is in confirm mode; a delivery is acked only after
 * its answer (and its dead letter, if any) was published and confirmed by
 * the broker, so a worker killed mid-call leaves its message unacked and
 * the broker hands it to another worker.  A redelivered message is first
 * looked up in the process's memory of answers (dedup.c: answered again,
 * not run); else it is counted -- published again with the header
 * x-rrpc-deliveries + 1 and the original acked -- and once counted
 * max_deliveries times it becomes a dead letter ("taken by N workers that
 * died").  What this promises, and what not: docs/RELIABILITY.md, "Over
 * AMQP".
 *
 * Heartbeats (link.h): librabbitmq sends the worker's and checks the
 * broker's inside its waits, which is where an idle worker sits (take()),
 * so a paused broker or a dead network breaks the link within two
 * heartbeats and the worker mends it.  A handler runs outside librabbitmq
 * for as long as it takes, though, and a broker that hears nothing from a
 * link for two or three heartbeats closes it -- the answer would be lost
 * (at most once) or the request run again elsewhere (reliable).  So each
 * worker holds its link's mutex except while its handler runs (or it
 * waits for another worker's), and one keeper thread per server sends a
 * heartbeat frame, every half heartbeat, on the links of the workers that
 * are away in a handler.
 *
 * Each message goes through the server's decide (server/), the same
 * per-request logic as over Redis; the answer goes to the message's
 * reply_to with its correlation_id.  Over AMQP the reply address is the
 * reply_to property, not the body's id, so every answer dispatch makes is
 * sent there -- also the ones Redis cannot address: -32600 for an invalid
 * request without an id, and -32700 for a body that is not JSON (also
 * filed as dead letters).  A message without reply_to is a notification:
 * run, not answered.
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/dedup.h"
#include "amqp/link.h"
#include "amqp/registry_amqp.h"
#include "core/clock.h"
#include "core/dispatch.h"
#include "core/log.h"
#include "core/protocol.h"
#include "transport/server_ops.h"

#include <amqp_framing.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_S            0.2 /* a worker notices the stop flag this often */
#define BACKOFF_MIN_S     0.1
#define BACKOFF_MAX_S     2.0
#define PREFETCH_ONCE     16   /* at most once: a window per worker (file banner) */
#define PREFETCH_RELIABLE 1    /* reliable: a window would count unrun deliveries */
#define SLOW_S            0.02 /* a handler this slow shrinks the window to 1 */
#define GROW_AFTER        64   /* quick handlers in a row before the window doubles */
#define CONFIRM_S         10.0 /* a broker that confirms nothing this long: mend */
#define DELIVERIES_HEADER "x-rrpc-deliveries"

typedef struct amqp_worker {
    rrpc__server_broker *b;
    int id;
    rrpc__amqp_link a;
    rrpc__key_rules rules;
    uint64_t published; /* publishes since confirm.select (reliable) */
    char tag[128];      /* the consumer tag the broker gave, for basic.cancel */
    int window;         /* the consumer's prefetch now (at most once: 1..PREFETCH_ONCE) */
    int quick;          /* quick handlers in a row since the window last changed */
    /* Held by the worker's thread while it uses its link, let go while a
     * handler runs (AWAY set): then the keeper may send heartbeats on it. */
    pthread_mutex_t io;
    int away;
} amqp_worker;

struct rrpc__server_broker {
    rrpc__serving *s;
    amqp_worker *ws;
    rrpc__amqp_registry *registry; /* registry_amqp.c: answers rrpc ls/info/stats */
    int reliable;
    int max_deliveries;
    long max_queue;
    int with_args;       /* the queue is declared with rrpc's arguments */
    atomic_int dead_off; /* a plain service may not declare its dead queue */
    rrpc__dedup dedup;   /* reliable: answers this process sent */
    pthread_t keeper;    /* sends heartbeats for workers away in a handler */
    int keeping;         /* the keeper runs */
    atomic_int keeper_stop;
    int mutexes; /* how many workers' io mutexes are initialised */
};

/* What the AMQP transport refuses, said by rrpc_server_run. */
static const char *unsupported(const rrpc__serving *s, const rrpc_server_options *opts)
{
    (void)s; /* amqps:// is served since TLS came (link.c) */
    if (opts->shards > 1)
        return "shards are not supported over AMQP yet";
    if (opts->limits != NULL)
        return "limits are not supported over AMQP yet";
    return NULL;
}

static int broker_create(rrpc__serving *s, const rrpc_server_options *opts,
                         rrpc__server_broker **out)
{
    rrpc__server_broker *b = calloc(1, sizeof *b);
    if (b == NULL)
        return RRPC_ENOMEM;
    b->s = s;
    b->reliable = opts->reliable != 0;
    b->max_deliveries = opts->max_deliveries > 0 ? opts->max_deliveries : 3;
    b->max_queue = opts->max_queue > 0 ? opts->max_queue : 0;
    b->with_args = b->reliable || b->max_queue > 0;
    if (b->reliable && rrpc__dedup_init(&b->dedup, opts->dedup_window_s) != RRPC_OK) {
        free(b);
        return RRPC_ENOMEM;
    }
    *out = b;
    const char *why = unsupported(s, opts);
    if (why != NULL)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL, "%s", why);
    return RRPC_OK;
}

static void broker_destroy(rrpc__server_broker *b)
{
    if (b != NULL && b->reliable)
        rrpc__dedup_free(&b->dedup);
    free(b);
}

static amqp_table_entry_t utf8_entry(const char *key, const char *value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

static amqp_table_entry_t i64_entry(const char *key, int64_t value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = value;
    return e;
}

/* Declares QUEUE (durable or not, with ARGS) and judges the answer: a
 * queue that exists with other settings says what to do about it. */
static int declare(amqp_worker *w, const char *queue, int durable, amqp_table_t args)
{
    rrpc__amqp_link *a = &w->a;
    char what[RRPC__ERRMSG_LEN / 2];
    snprintf(what, sizeof what, "declaring queue '%.100s'", queue);
    amqp_queue_declare(a->conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(queue), 0, durable, 0, 0,
                       args);
    int rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), what);
    if (rc != RRPC_OK && strstr(a->errmsg, "PRECONDITION_FAILED") != NULL) {
        char was[RRPC__ERRMSG_LEN];
        snprintf(was, sizeof was, "%s", a->errmsg);
        rc = rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_EINVAL,
                        "%.300s -- the queue exists with other settings (a plain queue of an "
                        "at-most-once service or a tutorial-style worker, or one of a server with "
                        "other reliable/max_queue options): stop its users and delete it "
                        "(rabbitmqctl delete_queue), or serve with the same options "
                        "(docs/PROTOCOL.md section 12)",
                        was);
    }
    return rc;
}

/* The service's queue: plain, or durable with rrpc's arguments. */
static int declare_service(amqp_worker *w)
{
    rrpc__server_broker *b = w->b;
    amqp_table_entry_t e[4];
    int n = 0;
    if (b->with_args) {
        e[n++] = utf8_entry("x-dead-letter-exchange", "");
        e[n++] = utf8_entry("x-dead-letter-routing-key", b->s->dead_key);
        if (b->max_queue > 0) {
            e[n++] = i64_entry("x-max-length", b->max_queue);
            e[n++] = utf8_entry("x-overflow", "reject-publish");
        }
    }
    amqp_table_t args = {.num_entries = n, .entries = e};
    return declare(w, b->s->list_key, b->reliable, n > 0 ? args : amqp_empty_table);
}

/* The dead-letter queue, durable and bounded (dead_letter_max, oldest
 * dropped).  A plain service whose user may not declare it (a vhost
 * recipe that predates it) serves without: its dead letters are logged. */
static int declare_dead(amqp_worker *w)
{
    rrpc__server_broker *b = w->b;
    if (atomic_load(&b->dead_off))
        return RRPC_OK;
    amqp_table_entry_t e[1] = {i64_entry("x-max-length", b->s->dead_letter_max)};
    amqp_table_t args = {.num_entries = 1, .entries = e};
    int rc = declare(w, b->s->dead_key, 1, args);
    if (rc == RRPC_EAUTH && !b->with_args) {
        if (!atomic_exchange(&b->dead_off, 1))
            rrpc__logf(RRPC_LOG_WARN, b->s->service, NULL,
                       "no dead-letter queue (%s): dead letters are only logged", w->a.errmsg);
        rrpc__amqp_disconnect(&w->a); /* the broker closed the channel */
        rc = rrpc__amqp_connect(&w->a, &b->s->url, b->s->connect_timeout_s);
        if (rc == RRPC_OK)
            rc = declare_service(w);
    }
    return rc;
}

/* Sets the prefetch (w->window, per consumer) and starts a consumer. */
static int start_consumer(amqp_worker *w)
{
    rrpc__amqp_link *a = &w->a;
    amqp_basic_qos(a->conn, RRPC__AMQP_CHANNEL, 0, (uint16_t)w->window, 0);
    int rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), "basic.qos");
    w->tag[0] = '\0';
    if (rc == RRPC_OK) {
        amqp_basic_consume_ok_t *ok =
            amqp_basic_consume(a->conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(w->b->s->list_key),
                               amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        rc = rrpc__amqp_judge(a, amqp_get_rpc_reply(a->conn), "basic.consume");
        if (rc == RRPC_OK && ok != NULL && ok->consumer_tag.len < sizeof w->tag) {
            memcpy(w->tag, ok->consumer_tag.bytes, ok->consumer_tag.len);
            w->tag[ok->consumer_tag.len] = '\0';
        }
    }
    return rc;
}

/* Declares the queues and starts consuming. */
static int consume(amqp_worker *w)
{
    int rc = declare_service(w);
    if (rc == RRPC_OK)
        rc = declare_dead(w);
    if (rc == RRPC_OK && w->b->reliable) {
        rc = rrpc__amqp_confirm_select(&w->a);
        w->published = 0;
    }
    return rc == RRPC_OK ? start_consumer(w) : rc;
}

/* At most once: a new window of N.  RabbitMQ applies a consumer's
 * prefetch when it starts consuming, so the consumer is replaced: the
 * deliveries the old one was sent stay this channel's, taken and acked as
 * before.  A failure breaks the link (mend starts one with the new
 * window). */
static void set_window(amqp_worker *w, int n)
{
    w->window = n;
    w->quick = 0;
    if (w->tag[0] == '\0')
        return;
    amqp_basic_cancel(w->a.conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(w->tag));
    int rc = rrpc__amqp_judge(&w->a, amqp_get_rpc_reply(w->a.conn), "basic.cancel");
    if (rc == RRPC_OK)
        rc = start_consumer(w);
    if (rc != RRPC_OK)
        w->a.broken = 1;
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

/* ---- the keeper: heartbeats while handlers run -------------------------- */

/* A worker leaves its link to the keeper (a handler is about to run)... */
static void away(amqp_worker *w)
{
    w->away = 1;
    pthread_mutex_unlock(&w->io);
}

/* ... and takes it back. */
static void back(amqp_worker *w)
{
    pthread_mutex_lock(&w->io);
    w->away = 0;
}

/* One heartbeat frame on the link of W, if W is away and its link has
 * room (a full send buffer: the worker finds the broker stuck itself). */
static void beat(amqp_worker *w)
{
    if (pthread_mutex_trylock(&w->io) != 0)
        return; /* the worker is in librabbitmq, which beats by itself */
    if (w->away && w->a.conn != NULL && !w->a.broken && rrpc__amqp_room(&w->a, 8, 1)) {
        amqp_frame_t f;
        memset(&f, 0, sizeof f);
        f.frame_type = AMQP_FRAME_HEARTBEAT;
        f.channel = 0;
        amqp_send_frame(w->a.conn, &f);
    }
    pthread_mutex_unlock(&w->io);
}

static void *keeper_main(void *arg)
{
    rrpc__server_broker *b = arg;
    double period = b->ws[0].a.heartbeat / 2.0;
    period = period < 0.5 ? 0.5 : period > 5 ? 5 : period;
    while (!atomic_load(&b->keeper_stop)) {
        for (double t = 0; t < period && !atomic_load(&b->keeper_stop); t += 0.1)
            rrpc__sleep(0.1);
        for (int i = 0; i < b->s->workers && !atomic_load(&b->keeper_stop); i++)
            beat(&b->ws[i]);
    }
    return NULL;
}

static void keeper_start(rrpc__server_broker *b)
{
    if (b->ws[0].a.heartbeat <= 0)
        return; /* ?heartbeat=0: nothing to keep */
    atomic_store(&b->keeper_stop, 0);
    sigset_t all, old; /* the keeper takes no signals (the server's SIGINT/SIGTERM) */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    b->keeping = pthread_create(&b->keeper, NULL, keeper_main, b) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void broker_disconnect(rrpc__server_broker *b)
{
    if (b->keeping) {
        atomic_store(&b->keeper_stop, 1);
        pthread_join(b->keeper, NULL);
        b->keeping = 0;
    }
    for (int i = 0; b->ws != NULL && i < b->s->workers; i++)
        rrpc__amqp_disconnect(&b->ws[i].a);
    for (int i = 0; b->ws != NULL && i < b->mutexes; i++)
        pthread_mutex_destroy(&b->ws[i].io);
    b->mutexes = 0;
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
    for (b->mutexes = 0; b->mutexes < s->workers; b->mutexes++)
        if (pthread_mutex_init(&b->ws[b->mutexes].io, NULL) != 0) {
            broker_disconnect(b);
            return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ENOMEM, "out of memory");
        }
    for (int i = 0; i < s->workers; i++) {
        amqp_worker *w = &b->ws[i];
        w->b = b;
        w->id = i;
        w->rules = s->rules;
        w->window = b->reliable ? PREFETCH_RELIABLE : PREFETCH_ONCE;
        int rc = worker_up(w);
        if (rc != RRPC_OK) {
            snprintf(s->errmsg, sizeof s->errmsg, "%s", w->a.errmsg);
            broker_disconnect(b);
            return rc;
        }
    }
    keeper_start(b);
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
    rrpc__logf(RRPC_LOG_INFO, b->s->service, NULL, "serving queue '%s' over AMQP (%s%s)",
               b->s->list_key,
               b->reliable ? "reliable: durable queue, at least once" : "at most once",
               b->max_queue > 0 ? ", max_queue" : "");
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

/* Publishes to QUEUE; in reliable mode waits for the broker's confirm. */
static int publish(amqp_worker *w, const char *queue, const char *body, size_t len,
                   const amqp_basic_properties_t *p)
{
    int rc = rrpc__amqp_publish(&w->a, queue, body, len, p, 0);
    if (rc == RRPC_OK && w->b->reliable)
        rc = rrpc__amqp_wait_confirm(&w->a, ++w->published, CONFIRM_S);
    /* A confirm cannot be waited for again, and a broker that read
     * nothing for so long is stuck: mend (reliable: the message stays
     * unacked, the broker hands it out again). */
    if (rc == RRPC_ETIMEDOUT)
        w->a.broken = 1;
    return rc;
}

/* The bytes B as a string in BUF (LEN bytes); "" if they do not fit. */
static const char *bytes_str(amqp_bytes_t b, char *buf, size_t len)
{
    size_t n = b.len < len ? b.len : 0;
    if (n > 0)
        memcpy(buf, b.bytes, n);
    buf[n] = '\0';
    return buf;
}

/* Sends TEXT to the message's reply_to with its correlation_id.  RRPC_OK,
 * or an error (logged, counted as lost). */
static int answer(amqp_worker *w, const amqp_basic_properties_t *in, const char *text)
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
    bytes_str(in->reply_to, queue, sizeof queue);
    int rc = queue[0] ? publish(w, queue, text, strlen(text), &p) : RRPC_EINVAL;
    if (rc != RRPC_OK) {
        atomic_fetch_add(&w->b->s->n.lost, 1);
        rrpc__logf(RRPC_LOG_WARN, w->b->s->service, NULL, "answer lost: %s",
                   queue[0] ? w->a.errmsg : "reply_to too long");
    }
    return rc;
}

/* Files ENV's message as a dead letter: its body and properties as they
 * came, persistent, with the reason in the header x-rrpc-reason, on the
 * service's dead-letter queue (logged instead when it has none).
 * RRPC_OK, or the publish's error (logged, counted as lost). */
static int dead_letter(amqp_worker *w, const amqp_envelope_t *env, const char *reason)
{
    rrpc__serving *s = w->b->s;
    const amqp_message_t *m = &env->message;
    if (atomic_load(&w->b->dead_off)) {
        atomic_fetch_add(&s->n.lost, 1);
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "dead letter not kept (no dead-letter queue): %s: %.*s", reason,
                   (int)(m->body.len < 200 ? m->body.len : 200), (const char *)m->body.bytes);
        return RRPC_OK;
    }
    amqp_basic_properties_t p = m->properties;
    char when[32];
    snprintf(when, sizeof when, "%.3f", rrpc__now());
    amqp_table_entry_t e[3] = {utf8_entry("x-rrpc-reason", reason),
                               utf8_entry("x-rrpc-service", s->service),
                               utf8_entry("x-rrpc-time", when)};
    p._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p._flags &= ~AMQP_BASIC_EXPIRATION_FLAG; /* kept until an operator looks */
    p.headers.num_entries = 3;
    p.headers.entries = e;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    int rc = publish(w, s->dead_key, m->body.bytes, m->body.len, &p);
    if (rc == RRPC_OK) {
        atomic_fetch_add(&s->n.dead_letters, 1);
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL, "dead letter: %s", reason);
    } else {
        atomic_fetch_add(&s->n.lost, 1);
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL, "dead letter lost (%s): %s", reason,
                   w->a.errmsg);
    }
    return rc;
}

static int ack(amqp_worker *w, const amqp_envelope_t *env)
{
    int st = amqp_basic_ack(w->a.conn, RRPC__AMQP_CHANNEL, env->delivery_tag, 0);
    if (st == AMQP_STATUS_OK)
        return RRPC_OK;
    w->a.broken = 1; /* the broker will hand it to another worker */
    return rrpc__fail(w->a.errmsg, sizeof w->a.errmsg, RRPC_ECONNECT, "basic.ack: %s",
                      amqp_error_string2(st));
}

/* Runs the message through decide; answers it (if it has a reply_to) and
 * files its dead letter.  *TEXT_OUT: the answer (new; NULL: none).
 * RRPC_OK, or the error of a publish that failed. */
static int run(amqp_worker *w, const amqp_envelope_t *env, char **text_out)
{
    rrpc__serving *s = w->b->s;
    const amqp_basic_properties_t *in = &env->message.properties;
    rrpc__outcome out;
    char *refused = NULL;
    away(w); /* the handler may take longer than the heartbeat: the keeper beats */
    s->decide(s, &w->rules, NULL, env->message.body.bytes, env->message.body.len, &out, &refused);
    back(w);
    int has_reply_to = (in->_flags & AMQP_BASIC_REPLY_TO_FLAG) && in->reply_to.len > 0;
    char *text = has_reply_to && out.deferred == 0 ? answer_text(&out, &refused) : NULL;
    int rc = text != NULL ? answer(w, in, text) : RRPC_OK;
    if (rc == RRPC_OK && out.dead_reason != NULL)
        rc = dead_letter(w, env, out.dead_reason);
    *text_out = text;
    free(refused);
    rrpc__outcome_clear(&out);
    return rc;
}

/* At most once: the N deliveries in ENVS (the worker's batch, in delivery
 * order) are acked first, with one basic.ack `multiple` up to the last,
 * then run in order; a redelivery is not run again. */
static void handle_once(amqp_worker *w, amqp_envelope_t *envs, int n)
{
    int slow = 0;
    int st = amqp_basic_ack(w->a.conn, RRPC__AMQP_CHANNEL, envs[n - 1].delivery_tag, 1);
    if (st != AMQP_STATUS_OK) {
        w->a.broken = 1; /* not taken: the broker hands them out again */
        rrpc__fail(w->a.errmsg, sizeof w->a.errmsg, RRPC_ECONNECT, "basic.ack: %s",
                   amqp_error_string2(st));
        return;
    }
    for (int i = 0; i < n; i++) {
        if (envs[i].redelivered) {
            dead_letter(w, &envs[i], "redelivered: at most once, it may have run already");
            continue;
        }
        char *text = NULL;
        double t0 = rrpc__monotonic();
        run(w, &envs[i], &text);
        slow |= rrpc__monotonic() - t0 > SLOW_S;
        free(text);
    }
    /* Fairness: behind a slow handler the rest of a window waits while
     * other workers may idle, so slow handlers get a window of 1 (what
     * the broker hands out is then spread by who is free); quick ones
     * earn the window back, doubling. */
    if (slow && w->window > 1)
        set_window(w, 1);
    else if (!slow && w->window < PREFETCH_ONCE && (w->quick += n) >= GROW_AFTER)
        set_window(w, w->window * 2 > PREFETCH_ONCE ? PREFETCH_ONCE : w->window * 2);
}

static int is_deliveries(const amqp_table_entry_t *e)
{
    return e->key.len == strlen(DELIVERIES_HEADER) &&
           memcmp(e->key.bytes, DELIVERIES_HEADER, e->key.len) == 0;
}

/* The count in a message's x-rrpc-deliveries header, 0 if none. */
static long deliveries(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (is_deliveries(e) && e->value.kind == AMQP_FIELD_KIND_I64)
            return (long)e->value.value.i64;
    }
    return 0;
}

/* Reliable: a message the broker took back from a worker whose link
 * broke (killed, cut off, or the broker restarted): counted by publishing
 * it again with x-rrpc-deliveries + 1 (the copy goes behind the queue),
 * then the original is acked; a message counted max_deliveries times
 * becomes a dead letter instead. */
static void count_delivery(amqp_worker *w, amqp_envelope_t *env)
{
    rrpc__server_broker *b = w->b;
    atomic_fetch_add(&b->s->n.redelivered, 1);
    const amqp_message_t *m = &env->message;
    long n = deliveries(&m->properties) + 1;
    int rc;
    if (n >= b->max_deliveries) {
        char reason[96];
        snprintf(reason, sizeof reason, "taken by %ld workers that died (max_deliveries %d)", n,
                 b->max_deliveries);
        rc = dead_letter(w, env, reason);
    } else {
        amqp_basic_properties_t p = m->properties;
        amqp_table_entry_t e[32];
        int k = 0;
        for (int i = 0; (p._flags & AMQP_BASIC_HEADERS_FLAG) && i < p.headers.num_entries && k < 31;
             i++)
            if (!is_deliveries(&p.headers.entries[i]))
                e[k++] = p.headers.entries[i];
        e[k++] = i64_entry(DELIVERIES_HEADER, n);
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = k;
        p.headers.entries = e;
        rc = publish(w, b->s->list_key, m->body.bytes, m->body.len, &p);
        if (rc != RRPC_OK)
            rrpc__logf(RRPC_LOG_WARN, b->s->service, NULL,
                       "could not count a redelivered request (left to the broker): %s",
                       w->a.errmsg);
    }
    if (rc == RRPC_OK)
        ack(w, env);
}

/* Reliable: waits while another worker of this process runs the same
 * request; its answer is then sent from memory.  The state when it ends. */
static int wait_running(amqp_worker *w, amqp_bytes_t id, char **cached)
{
    int st;
    away(w);
    while ((st = rrpc__dedup_begin(&w->b->dedup, id.bytes, id.len, cached)) ==
               RRPC__DEDUP_RUNNING &&
           !atomic_load(&w->b->s->stop))
        rrpc__sleep(0.01);
    back(w);
    return st;
}

/* Reliable: one delivery, acked only once its answer is confirmed. */
static void handle_reliable(amqp_worker *w, amqp_envelope_t *env)
{
    rrpc__server_broker *b = w->b;
    const amqp_basic_properties_t *in = &env->message.properties;
    amqp_bytes_t id = in->correlation_id;
    int keyed = (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) && id.len > 0;
    char *cached = NULL;
    int st = keyed ? wait_running(w, id, &cached) : RRPC__DEDUP_NEW;
    if (st == RRPC__DEDUP_RUNNING)
        return; /* stopping: left unacked, the broker hands it out again */
    if (st == RRPC__DEDUP_DONE) {
        /* A redelivery or a caller's resend of a request answered here. */
        atomic_fetch_add(&b->s->n.duplicates, 1);
        int has_reply_to = (in->_flags & AMQP_BASIC_REPLY_TO_FLAG) && in->reply_to.len > 0;
        if (cached[0] == '\0' || !has_reply_to || answer(w, in, cached) == RRPC_OK)
            ack(w, env);
        free(cached);
        return;
    }
    if (env->redelivered) {
        if (keyed)
            rrpc__dedup_forget(&b->dedup, id.bytes, id.len); /* not run here */
        count_delivery(w, env);
        return;
    }
    char *text = NULL;
    int rc = run(w, env, &text);
    /* Remembered even if the answer was lost with the link: a redelivery
     * here is answered, not run again. */
    if (keyed)
        rrpc__dedup_done(&b->dedup, id.bytes, id.len, text);
    free(text);
    if (rc == RRPC_OK || !w->a.broken)
        ack(w, env);
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

/* No progress, no cancel keys and no Redis over AMQP: the handlers of
 * this thread get RRPC_ESTATE for progress and RRPC_ENOTSUP for effects
 * (an effect that would be dropped is refused where the handler sees it). */
static const rrpc__handler_io amqp_handler_io = {.no_effects = 1};

/* Takes one delivery into ENV, waiting up to WAIT_S: 1, or 0 (none came,
 * or another frame was handled, or the link broke: w->a.broken). */
static int take(amqp_worker *w, amqp_envelope_t *env, double wait_s)
{
    struct timeval tv = rrpc__amqp_tv(wait_s);
    amqp_rpc_reply_t r = amqp_consume_message(w->a.conn, env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        char ignored[8];
        rrpc__amqp_other_frame(&w->a, ignored, sizeof ignored);
    } else {
        rrpc__amqp_judge(&w->a, r, "consuming");
    }
    return 0;
}

/* At most once: ENVS[0] came; the deliveries already there behind it (read
 * without waiting, up to the window) join it.  The batch's size. */
static int gather(amqp_worker *w, amqp_envelope_t *envs)
{
    int n = 1;
    while (n < PREFETCH_ONCE && !w->a.broken && take(w, &envs[n], 0))
        n++;
    return n;
}

static void run_batch(amqp_worker *w, amqp_envelope_t *envs, int n)
{
    if (n > 0 && !w->a.broken)
        handle_once(w, envs, n);
    for (int i = 0; i < n; i++)
        amqp_destroy_envelope(&envs[i]);
}

/* At most once, stopping: the consumer is cancelled and the deliveries the
 * broker sent before it confirmed (its window) are run, not left unacked:
 * given back, they would come to the other workers marked redelivered and
 * become dead letters without having run. */
static void drain(amqp_worker *w)
{
    if (w->a.conn == NULL || w->a.broken || w->tag[0] == '\0')
        return;
    amqp_basic_cancel(w->a.conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(w->tag));
    if (rrpc__amqp_judge(&w->a, amqp_get_rpc_reply(w->a.conn), "basic.cancel") != RRPC_OK)
        return;
    amqp_envelope_t envs[PREFETCH_ONCE];
    int n = 0;
    while (n < PREFETCH_ONCE && !w->a.broken && take(w, &envs[n], 0))
        n++;
    run_batch(w, envs, n);
}

static void broker_run_worker(rrpc__server_broker *b, int id)
{
    amqp_worker *w = &b->ws[id];
    rrpc__serving *s = b->s;
    rrpc__handler_io_set(&amqp_handler_io);
    amqp_envelope_t envs[PREFETCH_ONCE];
    pthread_mutex_lock(&w->io);
    while (!atomic_load(&s->stop)) {
        if (w->a.broken || w->a.conn == NULL) {
            mend(w);
            continue;
        }
        amqp_maybe_release_buffers(w->a.conn);
        if (!take(w, &envs[0], POLL_S))
            continue;
        if (b->reliable) {
            handle_reliable(w, &envs[0]);
            amqp_destroy_envelope(&envs[0]);
        } else {
            run_batch(w, envs, gather(w, envs));
        }
    }
    if (!b->reliable)
        drain(w);
    pthread_mutex_unlock(&w->io);
    rrpc__handler_io_set(NULL);
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
