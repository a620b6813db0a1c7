/* client_ops.h -- the transport interface's client group: what a sync
 * caller (client/client.c) needs from a broker.
 *
 * A caller holds one link to the broker and, per call, delivers a request
 * to a service's queue and awaits the answer on a reply address of its
 * own, or sends a notification that nobody answers.  What stays with the
 * caller, above this table: checking arguments, encoding requests and
 * their ids, the call's timeout (its own, its default, or what is left of
 * the request being handled), the request's deadline on the broker's
 * clock, whether a broken link is mended and the request delivered again
 * (resend_on_reconnect) and with what backoff, batches, and turning
 * answers into results.  What is the broker's, below it: connecting and
 * authenticating, how a request reaches a worker and its answer comes back
 * (Redis: RPUSH pipelined with BLPOP on the reply key), refusing a service
 * whose workers are all gone (fail fast) or whose queue is full
 * (max_queue), which shard of a sharded service a request goes to, and
 * taking back a request nobody took in time.
 *
 * Names: QUEUE is a service's request queue name, the key prefix and the
 * service name joined by the caller (core/keys.h: rrpc__key_join); a reply
 * address is made by the link (reply_address) and is also the request's
 * id (PROTOCOL.md section 2).  Errors are negative rrpc_err codes with a
 * message in ERR (ERRLEN bytes, always NUL-terminated) unless said
 * otherwise; RRPC_ECONNECT always means "the link is broken: mend it".
 * A link is used by one thread at a time.
 *
 * The Redis implementation: redis/client_redis.c.
 */
#ifndef RRPC_CLIENT_OPS_H
#define RRPC_CLIENT_OPS_H

#include "core/clock.h"
#include "core/url.h"

#include <stddef.h>

/* What a call that streams progress or can be cancelled asks of deliver
 * (PROTOCOL.md section 7), set with watch().  While it waits, deliver hands
 * every text that arrives on the reply address to PROGRESS first: nonzero
 * means it was progress, taken, and the wait goes on (for the rest of the
 * timeout).  It waits at most SLICE_S (> 0) at a time and asks CANCELLED
 * between slices and after each progress: nonzero ends the call with
 * RRPC_ECANCELED, after marking CANCEL_KEY (if not NULL) cancelled for
 * CANCEL_TTL_S seconds and taking the request back if no worker has it. */
typedef struct rrpc__call_watch {
    int (*progress)(const char *text, size_t len, void *udata); /* NULL: none */
    int (*cancelled)(void *udata);                              /* NULL: never */
    double slice_s;
    const char *cancel_key;
    double cancel_ttl_s;
    void *udata;
} rrpc__call_watch;

/* A sync caller's link to the broker; each transport defines it. */
typedef struct rrpc__client_link rrpc__client_link;
/* An answer as it came from the broker, holding its text (no copy). */
typedef struct rrpc__answer rrpc__answer;

typedef struct rrpc__client_ops {
    /* Connects to the broker of URL (the transport accepts it) within
     * CONNECT_TIMEOUT_S (0: the default) and authenticates; then, if
     * CLOCK is not NULL, measures the broker's clock onto it as read_clock
     * does, but waiting as long as the broker takes (a caller's first
     * reading).  FAIL_FAST nonzero: deliver refuses services whose
     * registered workers are all gone.  On RRPC_OK *out is new (close);
     * else NULL, and RRPC_ECONNECT, RRPC_EAUTH or RRPC_ENOMEM with ERR
     * saying why.  A clock that could not be read is no error. */
    int (*open)(rrpc__client_link **out, const rrpc__url *url, double connect_timeout_s,
                int fail_fast, rrpc__clock *clock, char *err, size_t errlen);
    /* Closes L and frees it; NULL is a no-op.  Answers already handed out
     * stay valid. */
    void (*close)(rrpc__client_link *l);
    /* The message of L's last link-level failure (of open, mend or an
     * operation that broke the link).  Borrowed, valid until the next call
     * on L. */
    const char *(*errmsg)(const rrpc__client_link *l);
    /* Nonzero if L must be mended before it is used: it broke, or the
     * broker closed it while idle (restarted, or dropped idle links).
     * Costs no round trip. */
    int (*needs_mend)(rrpc__client_link *l);
    /* Drops L's connection and connects again, giving connecting and the
     * handshake at most LIMIT_S when that is shorter than the connect
     * timeout (0: the connect timeout).  One attempt: backoff and retries
     * are the caller's.  RRPC_OK, or the error of open, with errmsg set. */
    int (*mend)(rrpc__client_link *l, double limit_s);
    /* Measures the broker's clock onto *CLOCK (core/clock.h) for request
     * deadlines again: one round trip, bounded by a short grace.  A broker
     * that will not tell (Redis: TIME refused by an ACL) leaves *CLOCK
     * unmeasured, and calls then carry no deadline; the result is then
     * an error the caller may ignore. */
    int (*read_clock)(rrpc__client_link *l, rrpc__clock *clock);
    /* Writes a new, unguessable reply address under the key prefix PREFIX
     * (borrowed) into OUT (LEN bytes): the id of one call, on which only
     * its answer arrives.  RRPC_ESYS if no random bytes could be read,
     * RRPC_EINVAL if it does not fit.  No I/O; ERR untouched. */
    int (*reply_address)(rrpc__client_link *l, const char *prefix, char *out, size_t len);
    /* Delivers the request TEXT (a JSON-RPC request or batch, borrowed) to
     * QUEUE with PRIORITY (RRPC_PRIORITY_*: the queue's list of that
     * priority behind a backlog, PROTOCOL.md section 7) and waits, until
     * TIMEOUT_S from now, for its answer on REPLY_TO, in one round trip
     * when nothing goes wrong.  Before that it
     * may refuse: RRPC_EUNAVAILABLE when the service is registered but has
     * no live worker (if opened with FAIL_FAST), RRPC_EOVERLOADED when the
     * service's queue is at its max_queue.  While it waits it notices the
     * last worker going (RRPC_EUNAVAILABLE).  A request not taken by a
     * worker when the wait ends is withdrawn from the queue, so it is
     * never handled after the caller gave up.  On RRPC_OK *answer is new
     * (answer_free) and *text_out / *text_len are the answer's text, borrowed
     * from it.  RRPC_ETIMEDOUT: no answer in time ("no reply from service
     * '<queue>' within <timeout> s"), or the broker's registry did not
     * answer in time.  RRPC_ECONNECT: the link broke or the broker will
     * serve again shortly (Redis: LOADING, BUSY...): the request may or may
     * not have been delivered, and L needs mending.  RRPC_EREDIS: the
     * broker refused the request.  The reads of a wait never outlast
     * TIMEOUT_S by more than a short grace, even if the broker stalls. */
    int (*deliver)(rrpc__client_link *l, const char *queue, const char *text, const char *reply_to,
                   int priority, double timeout_s, rrpc__answer **answer, const char **text_out,
                   size_t *text_len, char *err, size_t errlen);
    /* Frees an answer of deliver; NULL is a no-op. */
    void (*answer_free)(rrpc__answer *a);
    /* Sends TEXT (a notification, or a batch of them; borrowed) to QUEUE
     * (or to the next shard of a sharded service) and returns once the
     * broker has it, without waiting for any worker.  No fail fast, no
     * max_queue.  Errors as deliver's. */
    int (*send)(rrpc__client_link *l, const char *queue, const char *text, char *err,
                size_t errlen);
    /* Makes the next delivers on L follow W (borrowed until the next
     * watch; NULL: plain calls again). */
    void (*watch)(rrpc__client_link *l, const rrpc__call_watch *w);
} rrpc__client_ops;

#endif /* RRPC_CLIENT_OPS_H */
