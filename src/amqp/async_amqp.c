/* async_amqp.c -- the async client's session on RabbitMQ (transport/async_ops.h).
 *
 * One connection, one channel, as the sync caller (client_amqp.c): the
 * channel consumes the direct reply-to pseudo-queue (amq.rabbitmq.reply-to,
 * no-ack) and every request is published to its service's queue through
 * the default exchange, mandatory, with reply_to = amq.rabbitmq.reply-to,
 * correlation_id = the request's id, content_type application/json and
 * expiration = its call's time left (deliver()'s TTL_MS: a request nobody
 * took in time leaves the queue by itself).  Calls are published
 * persistent (delivery_mode 2), as the sync caller's: in a reliable
 * service's durable queue they survive a broker restart, which is what a
 * call kept in flight by resend_on_reconnect waits through (in a plain
 * queue the flag costs nothing).  The answers carry their ids in the body,
 * which is what the client matches them by.
 *
 * Fail fast: rrpc_async_options.fail_fast reads Redis's registry; over
 * AMQP it is ignored (no consumer-count probe per call), but a request to
 * a service with no queue still ends at once, by the basic.return below.
 *
 * librabbitmq blocks; the session runs it on the client's libevent loop
 * anyway, without a thread of its own, because what it asks of the socket
 * is small:
 *   - reading: an EV_READ event on the connection's socket.  When it fires
 *     the session consumes with a ZERO timeout until librabbitmq says
 *     "nothing more" (AMQP_STATUS_TIMEOUT) -- so the frames librabbitmq
 *     has already pulled into its own buffer (which no longer make the
 *     socket readable: amqp_data_in_buffer, amqp_frames_enqueued) are
 *     taken before the loop waits again.  A batch is capped, and the rest
 *     handled on the next loop iteration, so timers and other clients'
 *     events are not starved.  librabbitmq reads a message's header and
 *     body frames with no timeout once its deliver method is in; RabbitMQ
 *     sends the three together, so this waits for the network, not for a
 *     peer.
 *   - writing: publishes go out from the loop thread as deliver() is
 *     called (librabbitmq writes the frames to the socket at once), but
 *     only while the socket's send buffer has room for them
 *     (rrpc__amqp_room): librabbitmq's writes block, so a request that
 *     does not fit -- RabbitMQ is not reading: paused, its flow control, a
 *     memory alarm, a stalled network -- waits in its group (copied) with
 *     every request behind it, and goes out in order from an EV_WRITE
 *     event once there is room.  A held call whose time ran out meanwhile
 *     is not sent at all.  The loop never waits for the broker.
 *   - heartbeats: the link asks for them at login (?heartbeat=S, 20 s by
 *     default, link.h); librabbitmq sends ours and checks the broker's
 *     only inside its own calls, so a timer ticks four times per
 *     heartbeat: it lets librabbitmq send one when due (when the socket
 *     has room) and declares the link lost when nothing came from the
 *     broker for two heartbeats -- a paused node or a dead network is
 *     found out, its groups end as lost and the session reconnects.
 *   - connecting: open() connects inline (it may block, async_ops.h), but
 *     a reconnect is made by a short-lived thread of its own (connect,
 *     login, consume, confirm.select), which hands the finished connection
 *     back through an eventfd: a broker that is down or a host that drops
 *     packets never stalls the loop.  Backoff: 50 ms doubling to 5 s, with
 *     jitter.
 *
 * The channel is in confirm mode (publisher confirms), which is what makes
 * `delivered` true to its word: a group has been delivered when the broker
 * acked its last request.  It also places a basic.return: RabbitMQ sends
 * the return of an unroutable mandatory message before its ack, and the
 * returned message's correlation_id is the request's id, so the group of
 * a request to a service with no queue ends with RRPC_EUNAVAILABLE at once
 * (a group is one queue's: all of it would come back).  A basic.nack (a
 * queue at its x-max-length with reject-publish, max_queue) ends the group
 * with RRPC_EOVERLOADED.
 *
 * What AMQP does not offer is said, not faked: withdraw() and
 * mark_cancelled() do nothing (RabbitMQ cannot take one message out of a
 * queue, and has no keys: a cancelled call's request still runs if a
 * worker takes it before it expires), priorities other than normal are
 * refused per group (RRPC_EINVAL), there is one queue per service (no
 * shards) and no broker clock (calls carry no deadline member; their
 * expiration does that job).  docs/PROTOCOL.md section 12.
 */
#define _GNU_SOURCE /* eventfd */
#include "amqp/link.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/protocol.h"
#include "transport/async_ops.h"

#include <amqp_framing.h>
#include <event2/event.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define DIRECT_REPLY_TO "amq.rabbitmq.reply-to"
#define DELIVER_MAX     256
#define PUMP_MAX        512 /* frames handled per loop iteration */
#define BACKOFF_MIN_S   0.05
#define BACKOFF_MAX_S   5.0

enum state { UP, DOWN };

/* A request held back (copied) until the socket has room for it. */
typedef struct held {
    char *text;
    size_t len;
    long long ttl_ms;
} held;

/* A group deliver() accepted and the broker has not confirmed whole yet:
 * its requests went out with the delivery tags FIRST..FIRST+TAGS-1 (TAGS
 * published so far; 0 for a group refused without a publish).  SENT
 * requests were published or dropped (held past their time, settled
 * without a tag); the rest wait in HELD for room, in order. */
typedef struct pending {
    struct pending *next;
    void *group;
    uint64_t first;
    size_t n, tags, confirmed, sent;
    held *held;     /* N entries once one request is held; NULL before */
    double held_at; /* monotonic: when the first request was held */
    int status;     /* RRPC_OK, or why the group failed (a return, a nack, a refusal) */
    char *msg;      /* with a failure */
    char *queue;
    uint64_t *ids;       /* the requests' ids (0: a notification), for returns */
    unsigned char *bits; /* confirmed tags */
} pending;

/* A connection being made by the dialer thread. */
typedef struct dial {
    rrpc__amqp_link link;
    int rc;
} dial;

struct rrpc__async_session {
    struct event_base *base;
    rrpc__url url;
    double connect_timeout_s;
    const rrpc__async_handlers *h;
    void *udata;
    rrpc__amqp_link a;
    enum state state;
    int closing;
    int report_up; /* the kick event tells the client it is connected */
    int outage_logged;
    double backoff_s;
    uint64_t rng;
    uint64_t next_tag; /* the delivery tag of the next publish (confirm mode) */
    pending *head, *tail;
    pending *unsent; /* the first group with requests held for room; NULL: none */
    double last_in;  /* monotonic: when the socket was last readable */
    struct event *read_ev, *write_ev, *kick_ev, *retry_ev, *dial_ev, *beat_ev;
    int dial_fd;
    int dialing;
    pthread_t dialer;
    dial d;
};

static void log_line(rrpc_log_level level, const char *what, const char *detail)
{
    rrpc__log(level, NULL, "async", what, detail);
}

/* ---- connecting -------------------------------------------------------- */

/* L connected to URL, consuming direct replies, in confirm mode. */
static int link_up(rrpc__amqp_link *l, const rrpc__url *url, double timeout_s)
{
    int rc = rrpc__amqp_connect(l, url, timeout_s);
    if (rc != RRPC_OK)
        return rc;
    amqp_basic_consume(l->conn, RRPC__AMQP_CHANNEL, amqp_cstring_bytes(DIRECT_REPLY_TO),
                       amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    rc = rrpc__amqp_judge(l, amqp_get_rpc_reply(l->conn), "consuming direct replies");
    if (rc == RRPC_OK) {
        amqp_confirm_select(l->conn, RRPC__AMQP_CHANNEL);
        rc = rrpc__amqp_judge(l, amqp_get_rpc_reply(l->conn), "confirm.select");
    }
    if (rc != RRPC_OK)
        rrpc__amqp_disconnect(l);
    return rc;
}

static void *dial_main(void *arg)
{
    rrpc__async_session *s = arg;
    /* Only s->url, s->connect_timeout_s (read-only) and s->d are touched. */
    memset(&s->d.link, 0, sizeof s->d.link);
    s->d.rc = link_up(&s->d.link, &s->url, s->connect_timeout_s);
    uint64_t one = 1;
    if (write(s->dial_fd, &one, sizeof one) < 0) {
        /* cannot fail: an eventfd's counter does not fill up with one write */
    }
    return NULL;
}

/* Waits for the dialer thread, if any; its result stays in s->d. */
static void dial_join(rrpc__async_session *s)
{
    if (!s->dialing)
        return;
    pthread_join(s->dialer, NULL);
    s->dialing = 0;
    uint64_t count;
    if (read(s->dial_fd, &count, sizeof count) < 0) {
        /* EAGAIN: already read */
    }
}

static double jitter(rrpc__async_session *s)
{
    s->rng ^= s->rng << 13; /* xorshift64: spreads a herd of reconnecting clients */
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return 0.5 + (double)(s->rng % 1000) / 1000.0;
}

static void retry_later(rrpc__async_session *s)
{
    struct timeval tv = rrpc__timeval(s->backoff_s * jitter(s));
    evtimer_add(s->retry_ev, &tv);
    s->backoff_s = s->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : s->backoff_s * 2;
}

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

/* The heartbeat timer's period for a heartbeat of H s: four ticks per
 * heartbeat, so that ours goes out in time and a silent broker is found
 * out within two heartbeats and a quarter. */
static double beat_period(int h)
{
    double t = h / 4.0;
    return t < 0.25 ? 0.25 : t > 5 ? 5 : t;
}

/* Takes the connection L as the session's: reading starts, the client is
 * told (from the kick event). */
static int adopt(rrpc__async_session *s, rrpc__amqp_link *l)
{
    if (s->read_ev != NULL)
        event_free(s->read_ev);
    if (s->write_ev != NULL)
        event_free(s->write_ev);
    s->write_ev = NULL;
    s->a = *l;
    s->next_tag = 1;
    s->last_in = rrpc__monotonic();
    int fd = amqp_get_sockfd(s->a.conn);
    s->read_ev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_readable, s);
    s->write_ev = event_new(s->base, fd, EV_WRITE, on_writable, s);
    if (s->read_ev == NULL || s->write_ev == NULL || event_add(s->read_ev, NULL) != 0)
        return RRPC_ENOMEM;
    if (s->a.heartbeat > 0) {
        struct timeval tv = rrpc__timeval(beat_period(s->a.heartbeat));
        if (event_add(s->beat_ev, &tv) != 0)
            return RRPC_ENOMEM;
    }
    s->state = UP;
    s->report_up = 1;
    /* The handshake may have left frames in librabbitmq's buffer. */
    event_active(s->kick_ev, EV_TIMEOUT, 0);
    return RRPC_OK;
}

static void on_dialed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__async_session *s = arg;
    dial_join(s);
    if (s->closing)
        return;
    int adopted = s->d.rc == RRPC_OK && adopt(s, &s->d.link) == RRPC_OK;
    s->d.link.conn = NULL; /* s->a's now, or closed below */
    if (adopted) {
        s->backoff_s = BACKOFF_MIN_S;
        if (s->outage_logged)
            log_line(RRPC_LOG_INFO, "reconnected to RabbitMQ", NULL);
        s->outage_logged = 0;
        return;
    }
    if (s->d.rc == RRPC_OK) { /* adopt failed: out of memory */
        s->a.broken = 1;
        rrpc__amqp_disconnect(&s->a);
    }
    retry_later(s);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__async_session *s = arg;
    if (s->closing || s->dialing)
        return;
    sigset_t all, old; /* the dialer takes no signals (SIGPIPE, the application's) */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->dialer, NULL, dial_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        s->dialing = 1;
    else
        retry_later(s);
}

/* ---- groups ------------------------------------------------------------ */

static void pending_free(pending *p)
{
    for (size_t i = p->sent; p->held != NULL && i < p->n; i++)
        free(p->held[i].text);
    free(p->held);
    free(p->msg);
    free(p);
}

/* Ends every group still waiting for the broker with STATUS. */
static void end_all(rrpc__async_session *s, int status)
{
    pending *p = s->head;
    s->head = s->tail = s->unsent = NULL;
    while (p != NULL) {
        pending *next = p->next;
        s->h->delivered(p->group, status, NULL, s->udata);
        pending_free(p);
        p = next;
    }
}

/* Ends the groups at the head whose tags are all confirmed (or that were
 * refused without a publish), in order. */
static void end_confirmed(rrpc__async_session *s)
{
    while (s->head != NULL && s->head->confirmed == s->head->n) {
        pending *p = s->head;
        s->head = p->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->h->delivered(p->group, p->status, p->msg, s->udata);
        pending_free(p);
    }
}

static void confirm_one(pending *p, uint64_t tag)
{
    size_t i = (size_t)(tag - p->first);
    if (!(p->bits[i / 8] & (1u << (i % 8)))) {
        p->bits[i / 8] |= (unsigned char)(1u << (i % 8));
        p->confirmed++;
    }
}

static void fail_group(pending *p, int status, const char *fmt, const char *queue)
{
    if (p->status != RRPC_OK)
        return; /* the first reason stands */
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, fmt, queue);
    p->status = status;
    p->msg = strdup(msg);
}

/* basic.ack or basic.nack of TAG (and, with MULTIPLE, every tag before). */
static void on_confirm(rrpc__async_session *s, uint64_t tag, int multiple, int nack)
{
    for (pending *p = s->head; p != NULL && p->first <= tag; p = p->next) {
        if (p->tags == 0)
            continue; /* refused without a publish: no tags of its own */
        uint64_t lo = multiple ? p->first : tag, hi = p->first + p->tags - 1;
        if (hi > tag)
            hi = tag;
        if (lo < p->first || lo > hi)
            continue;
        for (uint64_t t = lo; t <= hi; t++)
            confirm_one(p, t);
        if (nack)
            fail_group(p, RRPC_EOVERLOADED,
                       "RabbitMQ refused the request to '%s' (basic.nack: its queue is full, "
                       "max_queue)",
                       p->queue);
    }
    end_confirmed(s);
}

/* A mandatory request came back unrouted: its group fails (before its
 * ack, which follows). */
static void on_return(rrpc__async_session *s, uint64_t id)
{
    for (pending *p = s->head; p != NULL && id != 0; p = p->next)
        for (size_t i = 0; i < p->n; i++)
            if (p->ids[i] == id) {
                fail_group(p, RRPC_EUNAVAILABLE,
                           "service '%s' has no queue on the broker (the request came back "
                           "unrouted): is its server running?",
                           p->queue);
                return;
            }
}

/* ---- losing the connection --------------------------------------------- */

/* The connection is gone (or failed): groups waiting for confirms end as
 * lost, the client is told once, a reconnect is scheduled. */
static void link_lost(rrpc__async_session *s, const char *why)
{
    if (s->state == DOWN || s->closing)
        return;
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s", why);
    s->state = DOWN;
    s->report_up = 0;
    if (!s->outage_logged)
        log_line(RRPC_LOG_WARN, "lost the RabbitMQ connection, reconnecting", msg);
    s->outage_logged = 1;
    if (s->read_ev != NULL)
        event_del(s->read_ev);
    if (s->write_ev != NULL)
        event_del(s->write_ev);
    event_del(s->beat_ev);
    s->a.broken = 1;
    rrpc__amqp_disconnect(&s->a);
    retry_later(s);
    end_all(s, RRPC_ECONNECT);
    s->h->link(RRPC_ECONNECT, msg, s->udata);
}

/* ---- reading ----------------------------------------------------------- */

/* The decimal id in B (a correlation_id), or 0. */
static uint64_t bytes_id(amqp_bytes_t b)
{
    uint64_t v = 0;
    const char *p = b.bytes;
    if (b.len == 0 || b.len > 19)
        return 0;
    for (size_t i = 0; i < b.len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return v;
}

/* Reads the method frame that made amqp_consume_message stop (it is
 * enqueued: no wait) and acts on it.  RRPC_OK, or RRPC_ECONNECT with
 * s->a.errmsg set. */
static int other_frame(rrpc__async_session *s)
{
    amqp_frame_t f;
    struct timeval zero = {0, 0};
    int st = amqp_simple_wait_frame_noblock(s->a.conn, &f, &zero);
    if (st == AMQP_STATUS_TIMEOUT)
        return RRPC_OK;
    if (st != AMQP_STATUS_OK)
        return rrpc__fail(s->a.errmsg, sizeof s->a.errmsg, RRPC_ECONNECT, "reading a frame: %s",
                          amqp_error_string2(st));
    if (f.frame_type != AMQP_FRAME_METHOD)
        return RRPC_OK;
    amqp_method_t *m = &f.payload.method;
    switch (m->id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *ack = m->decoded;
        on_confirm(s, ack->delivery_tag, ack->multiple, 0);
        return RRPC_OK;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *nack = m->decoded;
        on_confirm(s, nack->delivery_tag, nack->multiple, 1);
        return RRPC_OK;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t msg;
        int rc = rrpc__amqp_judge(&s->a, amqp_read_message(s->a.conn, f.channel, &msg, 0),
                                  "reading a returned request");
        if (rc != RRPC_OK)
            return RRPC_ECONNECT;
        if (msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
            on_return(s, bytes_id(msg.properties.correlation_id));
        amqp_destroy_message(&msg);
        return RRPC_OK;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
        /* judge() says why and answers the close, as AMQP asks. */
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = *m};
        rrpc__amqp_judge(&s->a, r, "the broker closed the link");
        return RRPC_ECONNECT;
    }
    default: return RRPC_OK; /* connection.blocked and the like: nothing to do */
    }
}

/* Takes what librabbitmq has -- in its buffer or on the socket -- without
 * waiting, PUMP_MAX frames at most; the rest on the next loop iteration. */
static void pump(rrpc__async_session *s)
{
    int replies = 0, more = 1;
    for (int i = 0; i < PUMP_MAX && s->state == UP; i++) {
        struct timeval zero = {0, 0};
        amqp_envelope_t env;
        amqp_maybe_release_buffers(s->a.conn);
        amqp_rpc_reply_t r = amqp_consume_message(s->a.conn, &env, &zero, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            s->h->reply(env.message.body.bytes, env.message.body.len, s->udata);
            replies++;
            amqp_destroy_envelope(&env);
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_TIMEOUT) {
            more = 0;
            break;
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            if (other_frame(s) != RRPC_OK)
                link_lost(s, s->a.errmsg);
        } else {
            rrpc__amqp_judge(&s->a, r, "reading");
            link_lost(s, s->a.errmsg);
        }
    }
    if (replies > 0)
        s->h->replies_end(s->udata);
    if (more && s->state == UP)
        event_active(s->kick_ev, EV_TIMEOUT, 0);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__async_session *s = arg;
    s->last_in = rrpc__monotonic();
    pump(s);
}

/* How long the broker has sent nothing, s: the kernel's count (whoever
 * read the bytes -- librabbitmq also reads inside a publish, which no
 * EV_READ shows), else since the socket was last readable. */
static double quiet_s(const rrpc__async_session *s)
{
#ifdef TCP_INFO
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(amqp_get_sockfd(s->a.conn), IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
        len >= sizeof ti)
        return ti.tcpi_last_data_recv / 1000.0;
#endif
    return rrpc__monotonic() - s->last_in;
}

/* The heartbeat timer: librabbitmq sends our heartbeat (when due) and
 * notices a silent broker only inside its calls, so pump() is called --
 * not when the send buffer is full (a heartbeat written then would block
 * the loop); the silence is measured here too, for that case. */
static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__async_session *s = arg;
    if (s->state != UP || s->closing)
        return;
    double quiet = quiet_s(s);
    if (quiet > 2.0 * s->a.heartbeat) {
        char why[RRPC__ERRMSG_LEN];
        snprintf(why, sizeof why,
                 "RabbitMQ sent nothing for %.1f s (heartbeat %d s): the broker is stuck or the "
                 "network stalled",
                 quiet, s->a.heartbeat);
        link_lost(s, why);
        return;
    }
    if (rrpc__amqp_room(&s->a, 8, 1))
        pump(s);
    if (s->state == UP) {
        struct timeval tv = rrpc__timeval(beat_period(s->a.heartbeat));
        evtimer_add(s->beat_ev, &tv);
    }
}

/* Deferred work: a loss an operation found, the first report after a
 * connect, groups refused without a publish, frames left to read. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__async_session *s = arg;
    if (s->state == UP && s->a.broken) {
        link_lost(s, s->a.errmsg);
        return;
    }
    if (s->state == UP && s->report_up) {
        s->report_up = 0;
        s->h->link(RRPC_OK, NULL, s->udata);
    }
    end_confirmed(s);
    if (s->state == UP)
        pump(s);
}

/* ---- the operations ---------------------------------------------------- */

static void session_close(rrpc__async_session *s)
{
    if (s == NULL)
        return;
    s->closing = 1;
    int was_dialing = s->dialing;
    dial_join(s);
    if (was_dialing && s->d.rc == RRPC_OK)
        rrpc__amqp_disconnect(&s->d.link); /* made while closing: never adopted */
    rrpc__amqp_disconnect(&s->a);
    end_all(s, RRPC_ECONNECT);
    if (s->read_ev)
        event_free(s->read_ev);
    if (s->write_ev)
        event_free(s->write_ev);
    if (s->beat_ev)
        event_free(s->beat_ev);
    if (s->kick_ev)
        event_free(s->kick_ev);
    if (s->retry_ev)
        event_free(s->retry_ev);
    if (s->dial_ev)
        event_free(s->dial_ev);
    if (s->dial_fd >= 0)
        close(s->dial_fd);
    rrpc__url_free(&s->url);
    free(s);
}

static int session_init(rrpc__async_session *s, struct event_base *base, const rrpc__url *url,
                        const char *reply_to, char *err, size_t errlen)
{
    s->base = base;
    s->backoff_s = BACKOFF_MIN_S;
    s->state = DOWN;
    s->dial_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rrpc__url_copy(&s->url, url) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    size_t n = strlen(reply_to); /* its random tail seeds the backoff's jitter */
    if (n >= sizeof s->rng)
        memcpy(&s->rng, reply_to + n - sizeof s->rng, sizeof s->rng);
    s->rng |= 1;
    s->kick_ev = event_new(base, -1, 0, on_kick, s);
    s->retry_ev = evtimer_new(base, on_retry, s);
    s->beat_ev = evtimer_new(base, on_beat, s);
    s->dial_ev =
        s->dial_fd >= 0 ? event_new(base, s->dial_fd, EV_READ | EV_PERSIST, on_dialed, s) : NULL;
    if (s->kick_ev == NULL || s->retry_ev == NULL || s->beat_ev == NULL || s->dial_ev == NULL ||
        event_add(s->dial_ev, NULL) != 0)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "cannot create events");
    return RRPC_OK;
}

static int session_open(rrpc__async_session **out, struct event_base *base, const rrpc__url *url,
                        const char *reply_to, double connect_timeout_s,
                        const rrpc__async_handlers *h, void *udata, rrpc__clock *clock, char *err,
                        size_t errlen)
{
    (void)clock; /* no broker clock over AMQP: requests carry an expiration instead */
    *out = NULL;
    rrpc__async_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    s->connect_timeout_s = connect_timeout_s;
    s->h = h;
    s->udata = udata;
    s->dial_fd = -1;
    int rc = session_init(s, base, url, reply_to, err, errlen);
    if (rc == RRPC_OK) {
        rrpc__amqp_link l;
        memset(&l, 0, sizeof l);
        rc = link_up(&l, url, connect_timeout_s);
        if (rc != RRPC_OK)
            rrpc__fail(err, errlen, rc, "%s", l.errmsg);
        else if ((rc = adopt(s, &l)) != RRPC_OK)
            rrpc__fail(err, errlen, rc, "cannot create events");
    }
    if (rc != RRPC_OK) {
        session_close(s);
        return rc;
    }
    *out = s;
    return RRPC_OK;
}

/* The id at the end of a request TEXT ("id":N} is last: async_request.c),
 * as digits in ID; 0 for a notification. */
static size_t tail_id(const char *text, size_t len, char *id, size_t idlen)
{
    static const char key[] = "\"id\":";
    size_t k = sizeof key - 1;
    if (len < k + 2 || text[len - 1] != '}')
        return 0;
    size_t end = len - 1, start = end;
    while (start > 0 && text[start - 1] >= '0' && text[start - 1] <= '9')
        start--;
    size_t n = end - start;
    if (n == 0 || n >= idlen || start < k || memcmp(text + start - k, key, k) != 0)
        return 0;
    memcpy(id, text + start, n);
    id[n] = '\0';
    return n;
}

static pending *pending_new(const char *queue, size_t qlen, size_t n, void *group)
{
    size_t bits = (n + 7) / 8;
    pending *p = calloc(1, sizeof *p + qlen + 1 + n * sizeof(uint64_t) + bits);
    if (p == NULL)
        return NULL;
    p->group = group;
    p->n = n;
    p->ids = (uint64_t *)(p + 1);
    p->queue = (char *)(p->ids + n);
    memcpy(p->queue, queue, qlen);
    p->bits = (unsigned char *)p->queue + qlen + 1;
    return p;
}

static void pending_add(rrpc__async_session *s, pending *p)
{
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
}

/* Publishes one request: a call mandatory and persistent, with the
 * tutorial's properties and its expiration; a notification plainly (nobody
 * waits to hear that it found no queue).  Nonzero when the link broke. */
static int publish_one(rrpc__async_session *s, const char *queue, const char *text, size_t len,
                       long long ttl_ms, uint64_t *id_out)
{
    char id[24], ms[24];
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(RRPC__AMQP_JSON);
    size_t idn = tail_id(text, len, id, sizeof id);
    *id_out = 0;
    if (idn > 0 && ttl_ms > 0) {
        p._flags |= AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                    AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
        p.delivery_mode = AMQP_DELIVERY_PERSISTENT; /* as the sync caller's */
        p.reply_to = amqp_cstring_bytes(DIRECT_REPLY_TO);
        p.correlation_id = (amqp_bytes_t){.len = idn, .bytes = id};
        snprintf(ms, sizeof ms, "%lld", ttl_ms);
        p.expiration = amqp_cstring_bytes(ms);
        *id_out = strtoull(id, NULL, 10);
    }
    /* Room was made sure of (deliver, flush): never a wait here. */
    return rrpc__amqp_publish_now(&s->a, queue, text, len, &p, idn > 0 && ttl_ms > 0) != RRPC_OK;
}

/* Publishes request I of P: the next delivery tag.  Nonzero when the
 * link broke (told from the kick event, never from inside an operation;
 * the group ends there as lost). */
static int send_one(rrpc__async_session *s, pending *p, size_t i, const char *text, size_t len,
                    long long ttl_ms)
{
    if (p->tags == 0)
        p->first = s->next_tag; /* groups' tags ascend along the list */
    if (publish_one(s, p->queue, text, len, ttl_ms, &p->ids[i]) != 0) {
        event_active(s->kick_ev, EV_TIMEOUT, 0);
        return 1;
    }
    p->tags++;
    s->next_tag++;
    return 0;
}

/* Settles P's requests from SENT on without a publish (their held copies
 * freed): no tag will confirm them. */
static void settle_rest(pending *p)
{
    for (size_t i = p->sent; p->held != NULL && i < p->n; i++) {
        free(p->held[i].text);
        p->held[i].text = NULL;
    }
    p->confirmed += p->n - p->sent;
    p->sent = p->n;
}

/* Holds request I of P (a copy) until the socket has room for it. */
static int hold(pending *p, size_t i, const char *text, size_t len, long long ttl_ms)
{
    if (p->held == NULL) {
        p->held = calloc(p->n, sizeof *p->held);
        if (p->held == NULL)
            return RRPC_ENOMEM;
        p->held_at = rrpc__monotonic();
    }
    held *h = &p->held[i];
    h->text = malloc(len > 0 ? len : 1);
    if (h->text == NULL)
        return RRPC_ENOMEM;
    if (len > 0)
        memcpy(h->text, text, len);
    h->len = len;
    h->ttl_ms = ttl_ms;
    return RRPC_OK;
}

/* Sends the held requests, in order, while the socket has room; waits for
 * EV_WRITE again when it has none.  A held call whose time ran out is
 * dropped, not sent: its caller has gone (its timer ended it). */
static void flush(rrpc__async_session *s)
{
    double now = rrpc__monotonic();
    while (s->unsent != NULL && s->state == UP && !s->a.broken) {
        pending *p = s->unsent;
        while (p->sent < p->n) {
            held *h = &p->held[p->sent];
            long long left = h->ttl_ms - (long long)((now - p->held_at) * 1000);
            if (h->ttl_ms > 0 && left <= 0) {
                free(h->text);
                h->text = NULL;
                p->sent++;
                p->confirmed++;
                continue;
            }
            if (!rrpc__amqp_room(&s->a, h->len, 1)) {
                event_add(s->write_ev, NULL);
                return;
            }
            int broke = send_one(s, p, p->sent, h->text, h->len, h->ttl_ms > 0 ? left : 0);
            free(h->text);
            h->text = NULL;
            p->sent++;
            if (broke)
                return;
        }
        s->unsent = p->next; /* every group behind is held whole (or refused) */
        while (s->unsent != NULL && s->unsent->sent == s->unsent->n)
            s->unsent = s->unsent->next;
    }
    end_confirmed(s); /* dropped requests may have completed a group */
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

static int session_deliver(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                           const char **texts, size_t *lens, const long long *ttl_ms, size_t n,
                           void *group)
{
    if (s->state != UP || s->a.broken)
        return RRPC_ECONNECT;
    pending *p = pending_new(queue, qlen, n, group);
    if (p == NULL)
        return RRPC_ENOMEM;
    pending_add(s, p);
    if (priority != RRPC_PRIORITY_NORMAL) {
        /* As the sync caller: no priority queues over AMQP yet. */
        fail_group(p, RRPC_EINVAL, "priorities are not supported over AMQP yet (service '%s')",
                   p->queue);
        settle_rest(p);
        event_active(s->kick_ev, EV_TIMEOUT, 0);
        return RRPC_OK;
    }
    /* One look at the socket for the whole group when it fits (the common
     * case), one per request when it does not. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i] + RRPC__AMQP_PUBLISH_OVERHEAD;
    int fits = s->unsent == NULL && rrpc__amqp_room(&s->a, total, 0);
    for (size_t i = 0; i < n; i++) {
        /* In order: behind a held request, everything is held. */
        if (fits || (s->unsent == NULL && rrpc__amqp_room(&s->a, lens[i], 1))) {
            p->sent++;
            if (send_one(s, p, i, texts[i], lens[i], ttl_ms[i]) != 0)
                break;
            continue;
        }
        if (hold(p, i, texts[i], lens[i], ttl_ms[i]) != RRPC_OK) {
            fail_group(p, RRPC_ENOMEM, "out of memory holding requests to '%s'", p->queue);
            settle_rest(p);
            if (s->unsent == p)
                s->unsent = NULL; /* the last group: nothing held behind it */
            event_active(s->kick_ev, EV_TIMEOUT, 0);
            break;
        }
        if (s->unsent == NULL) {
            s->unsent = p;
            event_add(s->write_ev, NULL);
        }
    }
    return RRPC_OK;
}

/* RabbitMQ cannot take one message out of a queue: a request whose caller
 * gave up expires there by itself (its expiration is its call's time). */
static void session_withdraw(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                             const char *text, size_t tlen)
{
    (void)s;
    (void)queue;
    (void)qlen;
    (void)priority;
    (void)text;
    (void)tlen;
}

/* No keys over AMQP: a worker is not told of a cancel (PROTOCOL.md 12). */
static void session_mark_cancelled(rrpc__async_session *s, const char *key, size_t klen,
                                   long long ttl_ms)
{
    (void)s;
    (void)key;
    (void)klen;
    (void)ttl_ms;
}

const rrpc__async_ops rrpc__amqp_async_ops = {
    .broker = "RabbitMQ",
    .deliver_max = DELIVER_MAX,
    .deliver_headroom = 0,
    .open = session_open,
    .deliver = session_deliver,
    .withdraw = session_withdraw,
    .mark_cancelled = session_mark_cancelled,
    .shards = NULL, /* one queue per service */
    .close = session_close,
};
