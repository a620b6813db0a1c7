/* client_amqp.c -- the AMQP transport's sync caller (transport/client_ops.h).
 *
 * One connection, one channel.  At open the channel consumes RabbitMQ's
 * direct reply-to pseudo-queue (amq.rabbitmq.reply-to, no-ack, as the
 * broker requires), so a call is one publish and one wait: the request
 * goes to the service's queue through the default exchange with
 * reply_to = amq.rabbitmq.reply-to, correlation_id = the call's id (its
 * "reply address"), content_type application/json and an expiration of
 * the call's timeout, mandatory -- a service with no queue gets the
 * request back at once (basic.return) and the call fails fast instead of
 * timing out.  Answers whose correlation_id is not the call's (late
 * answers of calls that timed out) are dropped.
 *
 * The channel is in confirm mode: a request refused by a full queue
 * (max_queue: x-max-length with x-overflow reject-publish) comes back as a
 * basic.nack and the call fails with RRPC_EOVERLOADED; a notification
 * returns once the broker confirmed it.  Calls are published persistent
 * (delivery_mode 2): in a reliable service's durable queue they survive a
 * broker restart (in a plain queue the flag costs nothing).  Fail fast:
 * before publishing, the queue's consumer count (a passive queue.declare
 * on a second channel, cached for a second) -- no consumer, no call --
 * except for a few seconds after the link was mended, while the workers
 * come back from the same broker restart.  docs/PROTOCOL.md,
 * "AMQP 0-9-1", says why direct reply-to rather than a callback queue.
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/link.h"
#include "amqp/registry_amqp.h"
#include "core/clock.h"
#include "core/keys.h"
#include "transport/client_ops.h"

#include <amqp_framing.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DIRECT_REPLY_TO "amq.rabbitmq.reply-to"
#define PROBE_CHANNEL   2   /* passive declares: a 404 closes it, not the calls' */
#define PROBE_TTL_S     1.0 /* a consumer count is trusted this long */
#define MEND_GRACE_S    5.0 /* no fail fast this long after a mend */
#define CONFIRM_S       10.0
#define RPC_TIMEOUT_S   10.0 /* link.c's for synchronous methods */

struct rrpc__client_link {
    rrpc__amqp_link a;
    rrpc__url url; /* a copy, for mend */
    double connect_timeout_s;
    const rrpc__call_watch *watch;
    uint64_t published; /* publishes since confirm.select */
    int fail_fast;
    int probe_open;             /* PROBE_CHANNEL is open */
    int probe_refused;          /* the user may not declare passively: no fail fast */
    double mended_at;           /* monotonic; 0: never mended */
    char probed[RRPC__KEY_MAX]; /* the queue last probed */
    double probed_at;
    long consumers; /* its consumer count then; -1: no such queue */
};

struct rrpc__answer {
    size_t len;
    char text[];
};

/* Connects and starts consuming direct replies on the channel. */
static int link_up(rrpc__client_link *l, double timeout_s)
{
    int rc = rrpc__amqp_connect(&l->a, &l->url, timeout_s);
    if (rc != RRPC_OK)
        return rc;
    l->published = 0;
    l->probe_open = 0;
    l->probed[0] = '\0';
    rc = rrpc__amqp_confirm_select(&l->a);
    if (rc != RRPC_OK) {
        rrpc__amqp_disconnect(&l->a);
        return rc;
    }
    amqp_basic_consume(l->a.conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(DIRECT_REPLY_TO),
                       amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    rc = rrpc__amqp_judge(&l->a, amqp_get_rpc_reply(l->a.conn), "consuming direct replies");
    if (rc != RRPC_OK)
        rrpc__amqp_disconnect(&l->a);
    return rc;
}

static void client_close(rrpc__client_link *l)
{
    if (l == NULL)
        return;
    rrpc__amqp_disconnect(&l->a);
    rrpc__url_free(&l->url);
    free(l);
}

static int client_open(rrpc__client_link **out, const rrpc__url *url, double connect_timeout_s,
                       int fail_fast, rrpc__clock *clock, char *err, size_t errlen)
{
    (void)clock; /* no broker clock over AMQP: calls carry an expiration instead */
    *out = NULL;
    rrpc__client_link *l = calloc(1, sizeof *l);
    if (l == NULL || rrpc__url_copy(&l->url, url) != RRPC_OK) {
        free(l);
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    }
    l->connect_timeout_s = connect_timeout_s;
    l->fail_fast = fail_fast;
    int rc = link_up(l, connect_timeout_s);
    if (rc != RRPC_OK) {
        rrpc__fail(err, errlen, rc, "%s", l->a.errmsg);
        client_close(l);
        return rc;
    }
    *out = l;
    return RRPC_OK;
}

static const char *client_errmsg(const rrpc__client_link *l)
{
    return l->a.errmsg;
}

/* Reads what arrived while L was idle, without waiting: late answers of
 * calls that timed out (dropped), and a close of the channel or the
 * connection by the broker (a restart, an operator's close_connection),
 * which breaks L.  Nonzero if L is broken. */
static int drain_idle(rrpc__client_link *l)
{
    for (int i = 0; i < 64 && !l->a.broken; i++) {
        struct timeval now = {0, 0};
        amqp_envelope_t env;
        amqp_rpc_reply_t r = amqp_consume_message(l->a.conn, &env, &now, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL)
            amqp_destroy_envelope(&env);
        else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                 r.library_error == AMQP_STATUS_TIMEOUT)
            break;
        else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                 r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            char ignored[8];
            rrpc__amqp_other_frame(&l->a, ignored, sizeof ignored);
        } else
            rrpc__amqp_judge(&l->a, r, "reading while idle");
    }
    return l->a.broken;
}

/* Broken, never connected, or closed by the broker while idle: one peek
 * at the socket, no round trip; what is there (EOF, a close, late
 * answers) is read without waiting. */
static int client_needs_mend(rrpc__client_link *l)
{
    if (l->a.broken || l->a.conn == NULL)
        return 1;
    char c;
    ssize_t n = recv(amqp_get_sockfd(l->a.conn), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        l->a.broken = 1;
        snprintf(l->a.errmsg, sizeof l->a.errmsg, "the broker closed the connection");
        return 1;
    }
    if (n > 0 || amqp_data_in_buffer(l->a.conn))
        return drain_idle(l);
    return 0;
}

static int client_mend(rrpc__client_link *l, double limit_s)
{
    rrpc__amqp_disconnect(&l->a);
    l->mended_at = rrpc__monotonic();
    double t = l->connect_timeout_s;
    if (limit_s > 0 && (t <= 0 || limit_s < t))
        t = limit_s;
    return link_up(l, t);
}

/* AMQP brokers do not tell the time: requests carry no deadline member;
 * their expiration does that job in the queue (PROTOCOL.md, "AMQP 0-9-1"). */
static int client_read_clock(rrpc__client_link *l, rrpc__clock *clock)
{
    (void)l;
    (void)clock;
    return RRPC_EINVAL;
}

static int client_reply_address(rrpc__client_link *l, const char *prefix, char *out, size_t len)
{
    (void)l;
    return rrpc__new_reply_key(out, len, prefix);
}

/* What a call asks that this step of the transport cannot do yet. */
static int unsupported(const rrpc__client_link *l, int priority, char *err, size_t errlen)
{
    if (priority != RRPC_PRIORITY_NORMAL)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "priorities are not supported over AMQP yet");
    if (l->watch != NULL && l->watch->progress != NULL)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "progress is not supported over AMQP yet");
    return RRPC_OK;
}

/* The call's properties: the tutorial's three, and the expiration. */
static amqp_basic_properties_t call_props(const char *reply_to, double timeout_s, char *ms,
                                          size_t mslen)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
               AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.content_type = amqp_cstring_bytes(RRPC__AMQP_JSON);
    p.reply_to = amqp_cstring_bytes(DIRECT_REPLY_TO);
    p.correlation_id = amqp_cstring_bytes(reply_to);
    if (timeout_s > 0 && timeout_s < 1e9) {
        /* Not taken by a worker in time: the broker drops it, so it is
         * never handled after the caller gave up. */
        snprintf(ms, mslen, "%.0f", ceil(timeout_s * 1000));
        p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        p.expiration = amqp_cstring_bytes(ms);
    }
    return p;
}

/* Takes the answer out of ENV if it is the call's (REPLY_TO): 1, or 0 if
 * it is another's (a late answer), or RRPC_ENOMEM. */
static int take_answer(amqp_envelope_t *env, const char *reply_to, rrpc__answer **answer)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    size_t n = strlen(reply_to);
    if (!(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) || p->correlation_id.len != n ||
        memcmp(p->correlation_id.bytes, reply_to, n) != 0)
        return 0;
    size_t len = env->message.body.len;
    rrpc__answer *a = malloc(sizeof *a + len + 1);
    if (a == NULL)
        return RRPC_ENOMEM;
    a->len = len;
    if (len > 0)
        memcpy(a->text, env->message.body.bytes, len);
    a->text[len] = '\0';
    *answer = a;
    return 1;
}

/* Judges a frame that is not a delivery (a return, a confirm, a close)
 * for the call REPLY_TO (NULL: a notification) published as number SEQ:
 * RRPC_OK (wait on), 1 (the notification is confirmed), or the call's
 * error. */
static int judge_event(rrpc__client_link *l, const char *queue, const char *reply_to, uint64_t seq,
                       char *err, size_t errlen)
{
    rrpc__amqp_event ev;
    int rc = rrpc__amqp_next_event(&l->a, 1.0, &ev);
    if (rc != RRPC_OK)
        return rrpc__fail(err, errlen, rc, "%s", l->a.errmsg);
    if (ev.kind == RRPC__AMQP_EV_RETURN && reply_to != NULL && strcmp(ev.returned, reply_to) == 0)
        return rrpc__fail(err, errlen, RRPC_EUNAVAILABLE,
                          "service '%s' has no queue on the broker (the request came back "
                          "unrouted): is its server running?",
                          queue);
    if (!rrpc__amqp_confirms(&ev, seq))
        return RRPC_OK;
    if (ev.kind == RRPC__AMQP_EV_NACK)
        return rrpc__fail(err, errlen, RRPC_EOVERLOADED,
                          "service '%s' is overloaded: its queue is full (max_queue; the broker "
                          "refused the request)",
                          queue);
    return reply_to == NULL ? 1 : RRPC_OK;
}

/* Waits until DEADLINE (monotonic) for the answer to REPLY_TO, published
 * as number SEQ (REPLY_TO NULL: for SEQ's confirm only).  A watched call
 * waits in slices and asks whether it was cancelled between them:
 * cancelling stops the wait, but over AMQP nothing tells the worker (no
 * cancel key yet) and a request already queued stays there until it
 * expires. */
static int await_answer(rrpc__client_link *l, const char *queue, const char *reply_to, uint64_t seq,
                        double timeout_s, double deadline, rrpc__answer **answer, char *err,
                        size_t errlen)
{
    for (;;) {
        double left = deadline - rrpc__monotonic();
        if (left <= 0 && reply_to == NULL) {
            l->a.broken = 1; /* the confirm may still come: start afresh */
            return rrpc__fail(err, errlen, RRPC_ECONNECT,
                              "the broker did not confirm the message within %g s", timeout_s);
        }
        if (left <= 0)
            return rrpc__fail(err, errlen, RRPC_ETIMEDOUT, "no reply from service '%s' within %g s",
                              queue, timeout_s);
        const rrpc__call_watch *w = l->watch;
        if (w != NULL && w->cancelled != NULL && w->cancelled(w->udata))
            return rrpc__fail(err, errlen, RRPC_ECANCELED,
                              "the call was cancelled (over AMQP the worker is not told)");
        if (w != NULL && w->cancelled != NULL && w->slice_s > 0 && left > w->slice_s)
            left = w->slice_s;
        struct timeval tv = rrpc__amqp_tv(left);
        amqp_envelope_t env;
        amqp_maybe_release_buffers(l->a.conn);
        amqp_rpc_reply_t r = amqp_consume_message(l->a.conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            int got = reply_to != NULL ? take_answer(&env, reply_to, answer) : 0;
            amqp_destroy_envelope(&env);
            if (got != 0)
                return got < 0 ? rrpc__fail(err, errlen, got, "out of memory") : RRPC_OK;
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            continue; /* the deadline decides */
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            int rc = judge_event(l, queue, reply_to, seq, err, errlen);
            if (rc != RRPC_OK)
                return rc == 1 ? RRPC_OK : rc;
            continue;
        }
        int rc = rrpc__amqp_judge(&l->a, r, "waiting for the answer");
        return rrpc__fail(err, errlen, rc == RRPC_OK ? RRPC_ECONNECT : rc, "%s", l->a.errmsg);
    }
}

/* The broker's close of the probe channel, answered. */
static void probe_closed(rrpc__client_link *l)
{
    amqp_channel_close_ok_t ok;
    amqp_send_method(l->a.conn, PROBE_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    l->probe_open = 0;
}

/* The passive declare of probe(), with the connection's rpc timeout. */
static int probe_rpc(rrpc__client_link *l, const char *queue, long *consumers)
{
    amqp_connection_state_t c = l->a.conn;
    if (!l->probe_open) {
        amqp_channel_open(c, PROBE_CHANNEL);
        int rc = rrpc__amqp_judge(&l->a, amqp_get_rpc_reply(c), "opening the probe channel");
        if (rc != RRPC_OK)
            return rc;
        l->probe_open = 1;
    }
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(c, PROBE_CHANNEL, amqp_cstring_bytes(queue), 1,
                                                     0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL && ok != NULL) {
        *consumers = (long)ok->consumer_count;
        return RRPC_OK;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *cl = r.reply.decoded;
        probe_closed(l);
        if (cl->reply_code == AMQP_NOT_FOUND) {
            *consumers = -1;
            return RRPC_OK;
        }
        l->probe_refused = 1; /* e.g. ACCESS_REFUSED: this user cannot look */
        return RRPC_EAUTH;
    }
    return rrpc__amqp_judge(&l->a, r, "queue.declare (passive)");
}

/* How many consumers QUEUE has (-1: no such queue), by a passive declare
 * on the probe channel, waiting LIMIT_S at most (the call's time: a
 * stuck broker fails the call in time, the link broken).  RRPC_OK;
 * RRPC_EAUTH if the user may not (then never asked again); RRPC_ECONNECT
 * with errmsg set. */
static int probe(rrpc__client_link *l, const char *queue, double limit_s, long *consumers)
{
    amqp_connection_state_t c = l->a.conn;
    struct timeval tv = rrpc__amqp_tv(limit_s < RPC_TIMEOUT_S ? limit_s : RPC_TIMEOUT_S);
    amqp_set_rpc_timeout(c, &tv);
    int rc = probe_rpc(l, queue, consumers);
    tv = rrpc__amqp_tv(RPC_TIMEOUT_S);
    if (l->a.conn != NULL)
        amqp_set_rpc_timeout(l->a.conn, &tv);
    return rc;
}

/* Fail fast: RRPC_EUNAVAILABLE if QUEUE has no queue or no consumer. */
static int check_consumers(rrpc__client_link *l, const char *queue, double timeout_s, char *err,
                           size_t errlen)
{
    if (!l->fail_fast || l->probe_refused ||
        (l->mended_at > 0 && rrpc__monotonic() - l->mended_at < MEND_GRACE_S))
        return RRPC_OK;
    double now = rrpc__monotonic();
    if (strcmp(l->probed, queue) != 0 || now - l->probed_at > PROBE_TTL_S) {
        long n = 1; /* unknown: no refusal */
        int rc = probe(l, queue, timeout_s, &n);
        if (rc == RRPC_EAUTH)
            return RRPC_OK;
        if (rc != RRPC_OK)
            return rrpc__fail(err, errlen, rc, "%s", l->a.errmsg);
        snprintf(l->probed, sizeof l->probed, "%s", queue);
        l->probed_at = now;
        l->consumers = n;
    }
    if (l->consumers < 0)
        return rrpc__fail(err, errlen, RRPC_EUNAVAILABLE,
                          "service '%s' has no queue on the broker: is its server running?", queue);
    if (l->consumers == 0)
        return rrpc__fail(err, errlen, RRPC_EUNAVAILABLE,
                          "service '%s' has no worker: nothing consumes its queue (fail fast)",
                          queue);
    return RRPC_OK;
}

static int client_deliver(rrpc__client_link *l, const char *queue, const char *text,
                          const char *reply_to, int priority, double timeout_s,
                          rrpc__answer **answer, const char **text_out, size_t *text_len, char *err,
                          size_t errlen)
{
    *answer = NULL;
    int rc = unsupported(l, priority, err, errlen);
    if (rc == RRPC_OK)
        rc = check_consumers(l, queue, timeout_s, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    double deadline = rrpc__monotonic() + timeout_s;
    char ms[32];
    amqp_basic_properties_t p = call_props(reply_to, timeout_s, ms, sizeof ms);
    l->a.write_wait_s = timeout_s; /* a broker that reads nothing: the call times out */
    rc = rrpc__amqp_publish(&l->a, queue, text, strlen(text), &p, 1);
    if (rc != RRPC_OK)
        return rrpc__fail(err, errlen, rc, "%s", l->a.errmsg);
    uint64_t seq = ++l->published;
    rc = await_answer(l, queue, reply_to, seq, timeout_s, deadline, answer, err, errlen);
    if (rc == RRPC_OK) {
        *text_out = (*answer)->text;
        *text_len = (*answer)->len;
    }
    return rc;
}

static void client_answer_free(rrpc__answer *a)
{
    free(a);
}

/* A notification: no reply_to, not mandatory (nobody waits to hear that
 * it found no queue); returns once the broker confirmed it, or with
 * RRPC_EOVERLOADED if a full queue refused it. */
static int client_send(rrpc__client_link *l, const char *queue, const char *text, char *err,
                       size_t errlen)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(RRPC__AMQP_JSON);
    l->a.write_wait_s = CONFIRM_S;
    int rc = rrpc__amqp_publish(&l->a, queue, text, strlen(text), &p, 0);
    if (rc != RRPC_OK)
        return rrpc__fail(err, errlen, rc, "%s", l->a.errmsg);
    uint64_t seq = ++l->published;
    return await_answer(l, queue, NULL, seq, CONFIRM_S, rrpc__monotonic() + CONFIRM_S, NULL, err,
                        errlen);
}

static void client_watch(rrpc__client_link *l, const rrpc__call_watch *w)
{
    l->watch = w;
}

const rrpc__client_ops rrpc__amqp_client_ops = {
    .open = client_open,
    .close = client_close,
    .errmsg = client_errmsg,
    .needs_mend = client_needs_mend,
    .mend = client_mend,
    .read_clock = client_read_clock,
    .reply_address = client_reply_address,
    .deliver = client_deliver,
    .answer_free = client_answer_free,
    .send = client_send,
    .watch = client_watch,
};

rrpc__amqp_link *rrpc__amqp_client_amqp(rrpc__client_link *l)
{
    return &l->a; /* admin_amqp.c asks its questions on the caller's link */
}
