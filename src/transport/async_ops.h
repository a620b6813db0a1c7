/* async_ops.h -- the async client's operations on a broker (transport.h).
 *
 * The multiplexed async client (src/client/async*.c) owns every call: its
 * id, its timer, its record and its callback.  From the broker it needs a
 * session on the client's event loop that can
 *   - deliver a group of requests to one service's queue in one go (the
 *     batching that makes the client fast: one broker operation per group,
 *     not per call),
 *   - hand it every response that arrives on its reply address,
 *   - withdraw a request that no worker has taken yet, when its caller gave
 *     up on it,
 *   - and keep itself connected: report when it is lost and when it is back.
 * Redis does this with two links per session (RPUSH on one, BLMPOP on the
 * client's reply list on the other), LREM, Sentinel and Cluster routing and
 * a backoff-and-reconnect of its own (src/redis/async_redis.c); a broker
 * with queues (RabbitMQ: a queue per service, a reply queue per client,
 * basic.get/cancel to withdraw) fits the same calls.
 *
 * Threads: a session lives on one libevent loop (BASE, the client's own or
 * the application's).  Every operation is called, and every handler runs,
 * on that loop's thread.  No operation runs a handler before it returns,
 * except close() (which runs the pending `delivered` ones).
 *
 * Names the client gives: the queue of a service and the reply address are
 * core/keys.c's (<prefix><service>, rrpc__new_reply_key) and travel in the
 * requests (reply_to, PROTOCOL.md); the transport uses them as they are.
 */
#ifndef RRPC_ASYNC_OPS_H
#define RRPC_ASYNC_OPS_H

#include "core/clock.h"
#include "core/registry_view.h"
#include "core/url.h"

#include <stddef.h>

struct event_base; /* libevent's; the client's loop, never the transport's */

/* A session: the transport's connection(s) for one async client.  Opaque;
 * defined by the transport (redis/async_redis.c). */
typedef struct rrpc__async_session rrpc__async_session;

/* What a session reports to its client, each with the UDATA given to
 * open().  All run on the loop thread, never from inside an operation
 * (close() aside).  A handler may start new operations on the session but
 * must not close it. */
typedef struct rrpc__async_handlers {
    /* One response TEXT (LEN bytes, not NUL-terminated, borrowed for the
     * call) arrived on the reply address.  It may be one nobody waits for
     * any more (a call that timed out, or from before a reconnect). */
    void (*reply)(const char *text, size_t len, void *udata);
    /* The responses that arrived together have all been passed to reply():
     * a moment to hand recycled records back in bulk. */
    void (*replies_end)(void *udata);
    /* The end of a group that deliver() accepted, exactly once per group:
     * RRPC_OK, the broker has the requests; another negative code, the
     * broker refused the whole group and its calls fail with that code
     * (MSG says why): RRPC_EREDIS (an error answer), RRPC_EUNAVAILABLE (no
     * queue took it: AMQP's mandatory publish came back), RRPC_EOVERLOADED
     * (the queue is full), RRPC_EINVAL (what the broker cannot carry);
     * RRPC_ECONNECT,
     * the session was lost or closed before the broker answered (MSG may be
     * NULL; `link` reports the loss, once, for every call). */
    void (*delivered)(void *group, int status, const char *msg, void *udata);
    /* The session's state: RRPC_OK when it is connected (after open, and
     * again after every reconnect); a negative code when it is lost, MSG
     * saying why.  After a loss every request delivered and not yet
     * answered may be lost with it, deliver() and withdraw() refuse or
     * ignore until RRPC_OK comes again, and the session reconnects by
     * itself, with backoff.  Never reported after close(). */
    void (*link)(int status, const char *msg, void *udata);
    /* Call I (0-based, in deliver_bounded()'s order) of GROUP was refused
     * on its own: STATUS RRPC_EOVERLOADED (its queue was full) or
     * RRPC_EREDIS (an error answer), MSG saying why.  The group's other
     * calls are unaffected, and `delivered` still ends the group, after. */
    void (*refused)(void *group, size_t i, int status, const char *msg, void *udata);
    /* A read of a service's registry (the `view` operation) ended, answered
     * or not: calls held back for it may go now, and the calls waiting for
     * that service may look at it again.  Only a transport with `view`
     * reports it. */
    void (*view_read)(void *udata);
} rrpc__async_handlers;

/* What the `view` operation knows of a service. */
enum {
    RRPC__AVIEW_NONE,   /* nothing, and nothing asked (the session is down) */
    RRPC__AVIEW_ASKING, /* nothing yet: the first read is out (`view_read` ends it) */
    RRPC__AVIEW_KNOWN   /* the view, perhaps up to about a second old */
};

typedef struct rrpc__async_ops {
    /* The broker's name as the client's messages say it ("Redis"). */
    const char *broker;
    /* deliver() takes at most this many requests per group. */
    size_t deliver_max;
    /* Slots in front of deliver()'s TEXTS and LENS that the transport may
     * write (Redis puts the command and the queue there, so a group goes
     * out without copying the array).  The client allocates them. */
    size_t deliver_headroom;

    /* Checks that the broker behind URL is reachable, takes the URL's
     * credentials and can serve an async client, then starts the session
     * on BASE: responses to REPLY_TO (copied) will reach H->reply.  Blocks
     * for at most about CONNECT_TIMEOUT_S per step; the connection itself
     * may finish later (requests delivered meanwhile wait for it; a failure
     * then is a `link` loss).  CLOCK is set to the broker's clock, which
     * request deadlines are written on (left unmeasured if the broker has
     * none: calls then carry no deadline).  H is borrowed for the session's
     * life.  On RRPC_OK *out is new (free with close); on failure (
     * RRPC_ECONNECT, RRPC_EAUTH, RRPC_EREDIS for a broker too old,
     * RRPC_ENOMEM, ...) ERR says why, *out is NULL and no handler runs. */
    int (*open)(rrpc__async_session **out, struct event_base *base, const rrpc__url *url,
                const char *reply_to, double connect_timeout_s, const rrpc__async_handlers *h,
                void *udata, rrpc__clock *clock, char *err, size_t errlen);
    /* Sends N (1..deliver_max) request TEXTS of LENS bytes, in order, to
     * the queue QUEUE (QLEN bytes), all of PRIORITY (RRPC_PRIORITY_*: the
     * queue's list of that priority behind a backlog, PROTOCOL.md section
     * 7), as one group.  TTL_MS[i] is the time left to request i's call
     * in milliseconds (>= 1; 0 for a notification): a broker without
     * request deadlines (AMQP) expires the request with it; Redis ignores
     * it (the deadline member does that job).  Everything is borrowed
     * for the call only: the texts are copied out before it returns.
     * TEXTS[-deliver_headroom..-1] and LENS[...] are scratch for the
     * transport.  RRPC_OK: `delivered` will run once with GROUP.
     * RRPC_ECONNECT (the session is down), RRPC_ENOMEM: nothing was sent
     * and `delivered` does not run. */
    int (*deliver)(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                   const char **texts, size_t *lens, const long long *ttl_ms, size_t n,
                   void *group);
    /* Takes the request TEXT (TLEN bytes), delivered with PRIORITY, out of
     * QUEUE if no worker has it yet, so that it does not run after its
     * caller gave up.  Fire and forget: no answer, nothing if the session
     * is down. */
    void (*withdraw)(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                     const char *text, size_t tlen);
    /* How many request lists (shards, core/shard.h) the service whose
     * queue -- shard 0's list -- is QUEUE (QLEN bytes) is spread over, as
     * the broker last said (Redis: its registry, PROTOCOL.md section 9);
     * 1 while nothing is known.  Never blocks: a view older than about a
     * second is asked for again in the background (not while the session
     * is down), and later calls get the answer.  The client picks the
     * shard of each request and hands deliver() that shard's queue. */
    int (*shards)(rrpc__async_session *s, const char *queue, size_t qlen);
    /* The registry's view of the service whose queue -- shard 0's list --
     * is QUEUE (QLEN bytes): RRPC__AVIEW_KNOWN with *OUT filled (its shards
     * replace the `shards` operation's answer), or RRPC__AVIEW_ASKING /
     * RRPC__AVIEW_NONE.  Never blocks: a view older than about a second is
     * read again in the background (one read per service per second at
     * most; none while the session is down), and `view_read` runs when a
     * read ends.  NULL: a broker without a registry (no fail fast, no
     * max_queue; `shards` then says the shards). */
    int (*view)(rrpc__async_session *s, const char *queue, size_t qlen, rrpc__registry_view *out);
    /* As deliver(), but each request is pushed only while QUEUE's lists
     * (with its priority lists) hold fewer than MAX_QUEUE (> 0) requests,
     * the check and the push one atomic step (PROTOCOL.md section 9); a
     * request refused reaches the handlers' `refused`, and is counted in
     * the stats of the service whose queue is SERVICE (SLEN bytes: shard
     * 0's list) as shed.  Calls only (notifications are not bounded).
     * NULL: a broker without max_queue. */
    int (*deliver_bounded)(rrpc__async_session *s, const char *queue, size_t qlen,
                           const char *service, size_t slen, int priority, const char **texts,
                           size_t *lens, size_t n, long max_queue, void *group);
    /* Marks the cancel key KEY (KLEN bytes) of a cancelled call for TTL_MS
     * milliseconds, so that a worker sees the cancel (PROTOCOL.md section
     * 7, "cancel_key"); before the withdraw() of its request.  Fire and
     * forget, as withdraw. */
    void (*mark_cancelled)(rrpc__async_session *s, const char *key, size_t klen, long long ttl_ms);
    /* Ends the session: pending `delivered` handlers run with RRPC_ECONNECT
     * and no other handler runs again.  Not from inside a handler.  NULL
     * is allowed. */
    void (*close)(rrpc__async_session *s);
} rrpc__async_ops;

#endif /* RRPC_ASYNC_OPS_H */
