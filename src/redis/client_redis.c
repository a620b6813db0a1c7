/* client_redis.c -- the sync caller's operations over Redis
 * (transport/client_ops.h).
 *
 * A call pipelines RPUSH of the request with BLPOP on its own reply key, so
 * it costs one network round trip like the post's client but never leaves
 * the request behind: if the wait times out, the request is withdrawn with
 * LREM when no worker has taken it yet.  Fail fast, max_queue and the
 * choice of shard come from the registry's view in failfast.c; the reply
 * key is the call's id, which keeps seed-style workers that only know
 * "reply to the id" working.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/client_redis.h"

#include "core/internal.h"
#include "core/keys.h"
#include "core/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How much longer than the BLPOP the socket may stay silent before the
 * link is considered dead.  Short: it is all a call may overrun its
 * deadline when Redis stalls (SIGSTOP, a long script, a swapping host),
 * and Redis answers a BLPOP that timed out within its hz tick (100 ms). */
#define SOCKET_GRACE_S 0.5

static int link_fail(int rc, const char *msg, char *err, size_t errlen)
{
    return rrpc__fail(err, errlen, rc, "%s", msg);
}

static int open_link(rrpc__client_link **out, const rrpc__url *url, double connect_timeout_s,
                     int fail_fast, rrpc__clock *clock, char *err, size_t errlen)
{
    *out = NULL;
    rrpc__client_link *l = calloc(1, sizeof *l);
    if (l == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    l->ff = rrpc__failfast_new(fail_fast); /* NULL (no memory): fail fast off */
    int rc = rrpc__conn_open(&l->conn, url, connect_timeout_s, err, errlen);
    if (rc != RRPC_OK) {
        rrpc__failfast_free(l->ff);
        free(l);
        return rc;
    }
    if (clock != NULL)
        rrpc__clock_sync(clock, l->conn); /* refused TIME: calls carry no deadline */
    l->cluster = url->kind == RRPC__URL_CLUSTER;
    *out = l;
    return RRPC_OK;
}

static void close_link(rrpc__client_link *l)
{
    if (l == NULL)
        return;
    rrpc__conn_close(l->conn);
    rrpc__failfast_free(l->ff);
    free(l);
}

static const char *link_errmsg(const rrpc__client_link *l)
{
    return rrpc__conn_errmsg(l->conn);
}

static int needs_mend(rrpc__client_link *l)
{
    return rrpc__conn_broken(l->conn) || rrpc__conn_peer_closed(l->conn);
}

static int mend(rrpc__client_link *l, double limit_s)
{
    int rc = rrpc__conn_reconnect_within(l->conn, limit_s);
    if (rc == RRPC_OK)
        l->socket_timeout_s = 0;
    return rc;
}

int rrpc__client_link_timeout(rrpc__client_link *l, double seconds)
{
    if (seconds == l->socket_timeout_s)
        return RRPC_OK;
    int rc = rrpc__conn_set_timeout(l->conn, seconds);
    if (rc == RRPC_OK)
        l->socket_timeout_s = seconds;
    return rc;
}

/* The socket timeout of a wait of TIMEOUT_S: the wait and the grace. */
static int set_socket_timeout(rrpc__client_link *l, double timeout_s)
{
    return rrpc__client_link_timeout(l, timeout_s + SOCKET_GRACE_S);
}

static int read_clock(rrpc__client_link *l, rrpc__clock *clock)
{
    int rc = set_socket_timeout(l, 0);
    return rc == RRPC_OK ? rrpc__clock_sync(clock, l->conn) : rc;
}

static int reply_address(rrpc__client_link *l, const char *prefix, char *out, size_t len)
{
    (void)l;
    return rrpc__new_reply_key(out, len, prefix);
}

/* Reads one reply, converting Redis-level errors into rrpc codes. */
static int read_reply(rrpc__client_link *l, rrpc__reply **r, char *err, size_t errlen)
{
    int rc = rrpc__conn_read(l->conn, r);
    if (rc != RRPC_OK)
        return link_fail(rc == RRPC_ETIMEDOUT ? RRPC_ECONNECT : rc, rrpc__conn_errmsg(l->conn), err,
                         errlen);
    if (rrpc__reply_type(*r) == RRPC__REPLY_ERROR) {
        /* A client that resends treats "serving again shortly" like a
         * broken link. */
        int code = rrpc__reply_transient(*r) ? RRPC_ECONNECT : RRPC_EREDIS;
        rrpc__fail(err, errlen, code, "Redis error: %s", rrpc__reply_str(*r, NULL));
        rrpc__reply_free(*r);
        *r = NULL;
        return code;
    }
    return RRPC_OK;
}

/* Every read after the first slice of a wait (failfast.c) must end by
 * the call's deadline ENDS (monotonic) plus the grace, not a whole
 * timeout after it starts: a Redis that stalls between slices would
 * otherwise hold the call for up to twice its timeout. */
static int limit_socket_to(rrpc__client_link *l, double ends)
{
    double left = ends - rrpc__monotonic();
    return set_socket_timeout(l, left > 0 ? left : 0);
}

/* Queues the LREMs that take TEXT back from LIST and, for a call of
 * PRIORITY other than normal, from LIST's list of that priority, where
 * the push script may have put it; returns how many replies to read (0:
 * the link broke). */
static int append_lrem(rrpc__client_link *l, const char *list, int priority, const char *text)
{
    char other[RRPC__KEY_MAX];
    if (rrpc__conn_appendv(l->conn, 4, "LREM", list, "1", text) != RRPC_OK)
        return 0;
    if (priority == RRPC_PRIORITY_NORMAL ||
        rrpc__priority_key(other, sizeof other, list, priority) != RRPC_OK)
        return 1; /* too long a name: the push failed, nothing is there */
    return rrpc__conn_appendv(l->conn, 4, "LREM", other, "1", text) == RRPC_OK ? 2 : 1;
}

/* Removes our own request if it is still queued: the caller gave up. */
static void withdraw(rrpc__client_link *l, const char *list, int priority, const char *text)
{
    int n = append_lrem(l, list, priority, text);
    for (int i = 0; i < n; i++) {
        rrpc__reply *r = NULL;
        if (rrpc__conn_read(l->conn, &r) != RRPC_OK)
            return;
        rrpc__reply_free(r);
    }
}

static int timed_out(const char *queue, double timeout_s, char *err, size_t errlen)
{
    return rrpc__fail(err, errlen, RRPC_ETIMEDOUT, "no reply from service '%s' within %.3f s",
                      queue, timeout_s);
}

/* One call on its way: where it goes and how it waits. */
typedef struct call {
    const char *queue, *text, *reply_to;
    int priority; /* RRPC_PRIORITY_* */
    double timeout_s, ends;
    rrpc__svc_state st;         /* fail fast: the registry's view (failfast.c) */
    char target[RRPC__KEY_MAX]; /* the shard's list (shard.c): QUEUE unless sharded */
    char timeout_text[32];      /* of the next BLPOP */
} call;

/* Counts a call refused by max_queue in <service>:stats "shed", where
 * operators read it (PROTOCOL.md section 9).  Best effort: a refusal is
 * rare, the count is a separate command on the mended link, and the call
 * fails with RRPC_EOVERLOADED whatever becomes of it. */
static void count_shed(rrpc__client_link *l, const char *queue)
{
    char stats[RRPC__KEY_MAX];
    rrpc__reply *r = NULL;
    if (rrpc__conn_broken(l->conn) ||
        rrpc__key_join(stats, sizeof stats, NULL, queue, RRPC__SUFFIX_STATS) != RRPC_OK)
        return;
    if (rrpc__conn_appendv(l->conn, 4, "HINCRBY", stats, RRPC__STAT_SHED, "1") == RRPC_OK &&
        rrpc__conn_read(l->conn, &r) == RRPC_OK)
        rrpc__reply_free(r);
}

static int next_wait(rrpc__client_link *l, call *k);

/* Checks the registry, then pipelines the push with the first BLPOP and
 * reads the push's reply. */
static int push(rrpc__client_link *l, call *k, char *err, size_t errlen)
{
    /* Every read of the call, the registry's too, ends by its deadline
     * (plus the grace) even if Redis stalls. */
    int rc = set_socket_timeout(l, k->timeout_s);
    if (rc == RRPC_OK)
        rc = rrpc__failfast_check(l->ff, l->conn, k->queue, k->timeout_s, &k->st, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    /* A resend of the same request (resend_on_reconnect: the same reply
     * key, which is one per call) goes to the shard of its first send,
     * whose dedup memory knows it: a reliable service remembers answers
     * per shard, and on another shard it could run again. */
    if (strcmp(l->last_reply_to, k->reply_to) == 0)
        k->st.shard = l->last_shard;
    else if (strlen(k->reply_to) < sizeof l->last_reply_to)
        snprintf(l->last_reply_to, sizeof l->last_reply_to, "%s", k->reply_to);
    l->last_shard = k->st.shard;
    if (rrpc__shard_key(k->target, sizeof k->target, k->queue, k->st.shard) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    /* The registry's round trip may have used up a tiny timeout: then
     * nothing is pushed, and the call times out now. */
    if (!next_wait(l, k))
        return timed_out(k->queue, k->timeout_s, err, errlen);
    rc = rrpc__failfast_append_push(l->conn, k->target, k->text, k->priority, &k->st);
    if (rc == RRPC_EINVAL)
        return rrpc__fail(err, errlen, rc, "service name too long for its priority lists");
    if (rc == RRPC_OK)
        rc = rrpc__conn_appendv(l->conn, 3, "BLPOP", k->reply_to, k->timeout_text);
    if (rc != RRPC_OK)
        return link_fail(rc, rrpc__conn_errmsg(l->conn), err, errlen);
    rrpc__reply *pushed = NULL;
    rc = read_reply(l, &pushed, err, errlen);
    if (rc == RRPC_OK)
        rc = rrpc__failfast_pushed(pushed, &k->st, err, errlen);
    rrpc__reply_free(pushed);
    if (rc != RRPC_OK) {
        /* Refused (OOM, WRONGTYPE, NOPERM, LOADING...): do not sit out
         * the queued BLPOP; a fresh link drops it.  A failed reconnect
         * leaves the link broken, and the next call retries. */
        if (!rrpc__conn_broken(l->conn))
            rrpc__conn_reconnect(l->conn);
        if (rc == RRPC_EOVERLOADED)
            count_shed(l, k->queue);
    }
    return rc;
}

/* The text of a BLPOP reply R, or NULL if it popped nothing. */
static const char *popped_text(const rrpc__reply *r, size_t *len)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ARRAY || rrpc__reply_count(r) != 2)
        return NULL;
    return rrpc__reply_str(rrpc__reply_element(r, 1), len);
}

/* The next BLPOP's timeout text: the registry's slice (failfast.c), cut
 * to the watch's slice.  0 if the call's time is up. */
static int next_wait(rrpc__client_link *l, call *k)
{
    if (!rrpc__failfast_next_wait(&k->st, k->timeout_text, sizeof k->timeout_text))
        return 0;
    if (l->watch != NULL && l->watch->slice_s > 0 && atof(k->timeout_text) > l->watch->slice_s)
        snprintf(k->timeout_text, sizeof k->timeout_text, "%.3f", l->watch->slice_s);
    return 1;
}

/* The caller cancelled: marks the request's cancel key and takes the
 * request back, in one pipeline (the mark first, so that a worker that
 * takes it meanwhile sees it before running it). */
static int cancel(rrpc__client_link *l, call *k, char *err, size_t errlen)
{
    const rrpc__call_watch *wt = l->watch;
    int n = 0, rc = set_socket_timeout(l, 0);
    if (rc == RRPC_OK && wt->cancel_key != NULL) {
        char ms[32];
        snprintf(ms, sizeof ms, "%lld", (long long)(wt->cancel_ttl_s * 1000.0) + 1);
        rc = rrpc__conn_appendv(l->conn, 5, "SET", wt->cancel_key, "1", "PX", ms);
        n++;
    }
    if (rc == RRPC_OK) {
        int lrems = append_lrem(l, k->target, k->priority, k->text);
        rc = lrems > 0 ? RRPC_OK : RRPC_ECONNECT;
        n += lrems;
    }
    for (int i = 0; rc == RRPC_OK && i < n; i++) {
        rrpc__reply *r = NULL;
        rc = rrpc__conn_read(l->conn, &r);
        rrpc__reply_free(r);
    }
    return rrpc__fail(err, errlen, RRPC_ECANCELED, "the call to '%s' was cancelled", k->queue);
}

static int keep_waiting(rrpc__client_link *l, call *k, int progress);

/* Whether the wait goes on after POPPED (taken over, freed here unless it
 * is the answer): 1 to wait again, 0 with *popped the answer or nil. */
static int wait_again(rrpc__client_link *l, call *k, rrpc__reply **popped, int *cancelled)
{
    const rrpc__call_watch *wt = l->watch;
    size_t len = 0;
    const char *text = popped_text(*popped, &len);
    int progress =
        text != NULL && wt != NULL && wt->progress != NULL && wt->progress(text, len, wt->udata);
    if (text != NULL && !progress)
        return 0; /* the answer */
    if (wt != NULL && wt->cancelled != NULL && wt->cancelled(wt->udata)) {
        *cancelled = 1;
        return 0;
    }
    int again = limit_socket_to(l, k->ends) == RRPC_OK && keep_waiting(l, k, progress);
    if (!again && progress) { /* the time is up: no answer, only progress */
        rrpc__reply_free(*popped);
        *popped = NULL;
    }
    return again;
}

/* After progress, or a slice, whether the call waits again (and the
 * timeout text of the wait). */
static int keep_waiting(rrpc__client_link *l, call *k, int progress)
{
    const rrpc__call_watch *wt = l->watch;
    /* After progress, or a slice of the watch's, the registry is asked
     * only when its own slice is due (failfast_again). */
    int sliced = k->st.slice_s > 0;
    if (!progress && sliced && !rrpc__failfast_again(l->ff, l->conn, k->queue, &k->st))
        return 0;
    if (!progress && !sliced && (wt == NULL || wt->slice_s <= 0))
        return 0;
    return next_wait(l, k);
}

/* Reads the BLPOP's reply into *popped; a registered service is awaited
 * in slices, checking between them that a worker is still alive
 * (failfast.c), and a watched call in slices of its own (progress,
 * cancellation). */
static int await(rrpc__client_link *l, call *k, rrpc__reply **popped, char *err, size_t errlen)
{
    int rc = read_reply(l, popped, err, errlen), cancelled = 0;
    while (rc == RRPC_OK && wait_again(l, k, popped, &cancelled)) {
        rrpc__reply_free(*popped);
        *popped = NULL;
        rc = rrpc__conn_appendv(l->conn, 3, "BLPOP", k->reply_to, k->timeout_text);
        rc = rc == RRPC_OK ? read_reply(l, popped, err, errlen)
                           : link_fail(rc, rrpc__conn_errmsg(l->conn), err, errlen);
    }
    if (cancelled) {
        rrpc__reply_free(*popped);
        *popped = NULL;
        return cancel(l, k, err, errlen);
    }
    if (rc == RRPC_EREDIS)
        withdraw(l, k->target, k->priority,
                 k->text); /* the wait was refused: nobody will collect */
    return rc;
}

static int deliver(rrpc__client_link *l, const char *queue, const char *text, const char *reply_to,
                   int priority, double timeout_s, rrpc__answer **answer, const char **text_out,
                   size_t *text_len, char *err, size_t errlen)
{
    call k = {.queue = queue,
              .text = text,
              .reply_to = reply_to,
              .priority = priority,
              .timeout_s = timeout_s};
    k.ends = rrpc__monotonic() + timeout_s;
    rrpc__reply *popped = NULL;
    int rc = push(l, &k, err, errlen);
    if (rc == RRPC_OK)
        rc = await(l, &k, &popped, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if (popped == NULL || rrpc__reply_type(popped) != RRPC__REPLY_ARRAY ||
        rrpc__reply_count(popped) != 2) {
        rrpc__reply_free(popped);
        withdraw(l, k.target, priority, text);
        if (k.st.unavailable)
            return rrpc__fail(err, errlen, RRPC_EUNAVAILABLE,
                              "service '%s' became unavailable while waiting: its last "
                              "worker is gone",
                              queue);
        return timed_out(queue, timeout_s, err, errlen);
    }
    *answer = (rrpc__answer *)popped; /* no copy: the text stays in the reply */
    *text_out = rrpc__reply_str(rrpc__reply_element(popped, 1), text_len);
    return RRPC_OK;
}

static void answer_free(rrpc__answer *a)
{
    rrpc__reply_free((rrpc__reply *)a);
}

/* RPUSHes TEXT onto QUEUE (or the next of its shards) without waiting for
 * any worker. */
static int send_text(rrpc__client_link *l, const char *queue, const char *text, char *err,
                     size_t errlen)
{
    rrpc__reply *r = NULL;
    char target[RRPC__KEY_MAX];
    int rc = set_socket_timeout(l, 0); /* a stalled Redis must not hang us */
    if (rc == RRPC_OK && rrpc__shard_key(target, sizeof target, queue,
                                         rrpc__failfast_shard(l->ff, l->conn, queue)) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "service name too long");
    if (rc == RRPC_OK)
        rc = rrpc__conn_appendv(l->conn, 3, "RPUSH", target, text);
    if (rc != RRPC_OK)
        return link_fail(rc, rrpc__conn_errmsg(l->conn), err, errlen);
    rc = read_reply(l, &r, err, errlen);
    rrpc__reply_free(r);
    return rc;
}

static void watch(rrpc__client_link *l, const rrpc__call_watch *w)
{
    l->watch = w;
}

const rrpc__client_ops rrpc__redis_client_ops = {
    .open = open_link,
    .close = close_link,
    .errmsg = link_errmsg,
    .needs_mend = needs_mend,
    .mend = mend,
    .read_clock = read_clock,
    .reply_address = reply_address,
    .deliver = deliver,
    .answer_free = answer_free,
    .send = send_text,
    .watch = watch,
};
