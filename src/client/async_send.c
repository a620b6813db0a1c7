/* async_send.c -- the async client's submission path (async_send.h).
 *
 * A submitted call gets its id (the slot table), its timer, and a place in
 * the outbox.  The outbox is flushed once per loop iteration: requests for
 * the same service queued in one iteration go to the transport as one
 * group, which is most of the speed: the broker then does one operation
 * per group (one RPUSH on Redis), not one per call.  A call whose timer fires is withdrawn from its
 * service's queue, so that it does not run after its caller gave up.
 *
 * A sharded service (core/shard.h) has several queues; the transport says
 * how many (ops->shards, from the registry), and each flush cuts a run of
 * calls for the service into one block per shard, the blocks going to the
 * shards in turn: still one group per queue, and over a few flushes every
 * shard gets its share.  A call keeps the shard it was first sent to, so
 * that a resend (rrpc_async_options.resend_on_reconnect) reaches the same
 * queue, where a reliable service's dedup looks for it.
 *
 * Fail fast and max_queue (rrpc_async_options.fail_fast, PROTOCOL.md
 * section 9) are decided here, per run, from the transport's view of the
 * service's registry (ops->view, at most a second old, never a round trip
 * of the call's own): a service registered with no live worker fails the
 * run's calls at once, nothing pushed; one with a max_queue gets its calls
 * pushed through deliver_bounded, which refuses each call that does not
 * fit.  The calls already waiting are async_failfast.c's.
 */
#include "core/clock.h"
#include "client/async_send.h"

#include "client/async_calls.h"
#include "client/async_request.h"
#include "core/registry_view.h"
#include "core/shard.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- timers ------------------------------------------------------------ */

/* Calls with equal timeouts (the usual case) share a libevent "common
 * timeout": a FIFO instead of the heap, so adding and removing is O(1). */
static const struct timeval *timeout_tv(rrpc_async *a, double s, struct timeval *tmp)
{
    for (int i = 0; i < a->ncommon; i++)
        if (a->common[i].s == s)
            return a->common[i].tv;
    *tmp = rrpc__timeval(s);
    if (a->ncommon < RRPC__ASYNC_COMMON_MAX) {
        const struct timeval *tv = event_base_init_common_timeout(a->base, tmp);
        if (tv != NULL) {
            a->common[a->ncommon].s = s;
            a->common[a->ncommon++].tv = tv;
            return tv;
        }
    }
    return tmp;
}

/* The queue of C's shard in KEY (LEN bytes at least RRPC__KEY_MAX + 8);
 * its length. */
static size_t shard_queue(const rrpc__acall *c, int shard, char *key, size_t len)
{
    if (shard <= 0 || rrpc__shard_key(key, len, c->buf, shard) != RRPC_OK)
        return 0;
    return strlen(key);
}

void rrpc__asend_withdraw(rrpc_async *a, rrpc__acall *c)
{
    char key[RRPC__KEY_MAX + 8];
    if (c->in_outbox || c->shard < 0 || a->session == NULL)
        return; /* never sent: nothing to take back */
    size_t n = shard_queue(c, c->shard, key, sizeof key);
    a->ops->withdraw(a->session, n ? key : c->buf, n ? n : c->list_len, c->priority,
                     rrpc__areq_text(c), c->text_len);
}

static void on_call_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__acall *c = arg;
    rrpc_async *a = c->owner;
    rrpc__asend_withdraw(a, c);
    rrpc__async_error(a, RRPC_ETIMEDOUT, "no reply from '%s' within %.3f s", c->buf, c->timeout_s);
    rrpc__acall_finish(a, c, RRPC_ETIMEDOUT, NULL, NULL);
}

/* ---- the outbox -------------------------------------------------------- */

/* How often the calls in flight are looked over (async_failfast.c). */
#define SWEEP_S 0.5

void rrpc__asend_arm_sweep(rrpc_async *a)
{
    static const struct timeval every = {0, (long)(SWEEP_S * 1e6)};
    if (a->fail_fast && !a->sweep_armed && a->sweep_ev != NULL)
        a->sweep_armed = evtimer_add(a->sweep_ev, &every) == 0;
}

/* Queues C for a flush; SCHEDULE: make sure one comes (not for calls held
 * back for a view, which view_read flushes). */
static int outbox_put(rrpc_async *a, rrpc__acall *c, int schedule)
{
    if (a->nout == a->outbox_cap) {
        size_t cap = a->outbox_cap ? a->outbox_cap * 2 : 256;
        rrpc__acall **box = realloc(a->outbox, cap * sizeof *box);
        if (box == NULL)
            return rrpc__async_error(a, RRPC_ENOMEM, "out of memory");
        a->outbox = box;
        a->outbox_cap = cap;
    }
    a->outbox[a->nout++] = c;
    c->in_outbox = 1;
    if (schedule && !a->flush_scheduled) {
        a->flush_scheduled = 1;
        event_active(a->flush_ev, EV_TIMEOUT, 0);
    }
    return RRPC_OK;
}

static int outbox_add(rrpc_async *a, rrpc__acall *c)
{
    return outbox_put(a, c, 1);
}

int rrpc__asend_submit(rrpc_async *a, rrpc__acall *c)
{
    if (c->notify)
        return outbox_add(a, c);
    int rc = rrpc__acall_take_slot(a, c);
    if (rc != RRPC_OK)
        return rc;
    rrpc__areq_put_id(c);
    if (c->timer == NULL)
        c->timer = evtimer_new(a->base, on_call_timeout, c);
    struct timeval tmp;
    c->expires_at = rrpc__monotonic() + c->timeout_s;
    if (c->timer == NULL || evtimer_add(c->timer, timeout_tv(a, c->timeout_s, &tmp)) != 0)
        rc = rrpc__async_error(a, RRPC_ENOMEM, "cannot start a timer");
    if (rc == RRPC_OK)
        rc = outbox_add(a, c);
    if (rc == RRPC_OK)
        rrpc__asend_arm_sweep(a);
    if (rc != RRPC_OK) {
        if (c->timer)
            event_del(c->timer);
        rrpc__acall_release_slot(a, c);
    }
    return rc;
}

void rrpc__asend_drop_outbox(rrpc_async *a)
{
    for (size_t i = 0; i < a->nout; i++) {
        a->outbox[i]->in_outbox = a->outbox[i]->done = 0;
        rrpc__acall_put(a, a->outbox[i]); /* notifications, and calls finished before */
    }
    a->nout = 0;
}

/* ---- delivery ---------------------------------------------------------- */

/* Nonzero if X and Y go in one group: the same service and priority. */
static int same_list(const rrpc__acall *x, const rrpc__acall *y)
{
    return x->list_len == y->list_len && x->priority == y->priority &&
           memcmp(x->buf, y->buf, x->list_len) == 0;
}

/* Hands BOX[0..n) -- all live, all for one service, shard and priority -- to
 * the transport as one group (the texts go into a->argv after the transport's
 * headroom).  Calls whose group cannot be delivered end here, unless the
 * link is down and they are to be resent when it is back. */
static void push_group(rrpc_async *a, rrpc__acall **box, size_t n, long max_queue)
{
    char key[RRPC__KEY_MAX + 8];
    size_t klen = shard_queue(box[0], box[0]->shard, key, sizeof key);
    rrpc__agroup *b = malloc(sizeof *b + n * sizeof b->ids[0]);
    double now = rrpc__monotonic();
    for (size_t i = 0; i < n; i++) {
        a->argv[i] = rrpc__areq_text(box[i]);
        a->lens[i] = box[i]->text_len;
        /* The time left, rounded up: a resend's is what its timer has left. */
        double left_ms = (box[i]->expires_at - now) * 1000.0 + 0.999;
        a->ttls[i] = box[i]->notify ? 0 : left_ms >= 1 ? (long long)left_ms : 1;
        if (b)
            b->ids[i] = box[i]->id;
    }
    if (b)
        b->n = n;
    int rc = RRPC_ECONNECT;
    if (b == NULL)
        rc = rrpc__async_error(a, RRPC_ENOMEM, "out of memory");
    else if (a->session != NULL && max_queue > 0)
        rc = a->ops->deliver_bounded(a->session, klen ? key : box[0]->buf,
                                     klen ? klen : box[0]->list_len, box[0]->buf, box[0]->list_len,
                                     box[0]->priority, a->argv, a->lens, n, max_queue, b);
    else if (a->session != NULL)
        rc = a->ops->deliver(a->session, klen ? key : box[0]->buf, klen ? klen : box[0]->list_len,
                             box[0]->priority, a->argv, a->lens, a->ttls, n, b);
    if (rc == RRPC_ECONNECT)
        rrpc__async_error(a, rc, "not connected to %s", a->ops->broker);
    else if (rc == RRPC_EINVAL)
        rrpc__async_error(a, rc, "service name too long for its priority lists");
    if (rc != RRPC_OK)
        free(b);
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s", rrpc__async_error_text());
    for (size_t i = 0; i < n; i++) {
        rrpc__acall *c = box[i];
        c->in_outbox = 0;
        if (c->notify)
            rrpc__acall_put(a, c); /* the transport copied the text */
        else if (rc == RRPC_ECONNECT && a->resend && !a->shutting_down && a->session != NULL)
            continue; /* in flight still: resent when the link is back */
        else if (rc != RRPC_OK && !c->done) {
            rrpc__async_error(a, rc, "%s", msg);
            rrpc__acall_finish(a, c, rc, NULL, NULL);
        }
    }
}

/* As push_group, but with MAX_QUEUE (> 0, a transport that bounds) only
 * the calls are bounded: the notifications among them go in groups of
 * their own, pushed as they are (PROTOCOL.md section 9). */
static void push_groups(rrpc_async *a, rrpc__acall **box, size_t n, long max_queue)
{
    if (max_queue <= 0 || a->ops->deliver_bounded == NULL) {
        push_group(a, box, n, 0);
        return;
    }
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && box[j]->notify == box[i]->notify;)
            j++;
        push_group(a, box + i, j - i, box[i]->notify ? 0 : max_queue);
    }
}

/* The registry's view of C's service (RRPC__AVIEW_*). */
static int service_view(rrpc_async *a, const rrpc__acall *c, rrpc__registry_view *v)
{
    if (a->session == NULL || a->ops->view == NULL)
        return RRPC__AVIEW_NONE;
    return a->ops->view(a->session, c->buf, c->list_len, v);
}

/* Holds the calls of BOX[0..n) back, in the outbox, until the first read
 * of their service's registry ends (view_read: async_failfast.c flushes
 * then); returns how many are left to push now: the notifications, which
 * are not checked, moved to the front.  One round trip for the first
 * calls to a service beats pushing blind: a call to a service that is
 * down would sit in its queue until the next look, and a push past
 * max_queue cannot be taken back.  Later calls use the view they find (up
 * to a second old, read again in the background) and never wait. */
static size_t hold(rrpc_async *a, rrpc__acall **box, size_t n)
{
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        rrpc__acall *c = box[i];
        if (c->notify)
            box[keep++] = c;
        else if (outbox_put(a, c, 0) != RRPC_OK) {
            c->in_outbox = 0;
            rrpc__acall_finish(a, c, RRPC_ENOMEM, NULL, NULL);
        }
    }
    return keep;
}

/* Fails the calls of BOX[0..n) -- a service registered with no live
 * worker -- with RRPC_EUNAVAILABLE, nothing pushed; returns how many are
 * left: the notifications, which are not checked, moved to the front. */
static size_t refuse_unavailable(rrpc_async *a, rrpc__acall **box, size_t n)
{
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        rrpc__acall *c = box[i];
        if (c->notify) {
            box[keep++] = c;
            continue;
        }
        c->in_outbox = 0;
        rrpc__async_error(a, RRPC_EUNAVAILABLE, RRPC__UNAVAILABLE_FMT, c->buf);
        rrpc__acall_finish(a, c, RRPC_EUNAVAILABLE, NULL, NULL);
    }
    return keep;
}

/* Gives the calls of BOX[0..n) (one service) that have no shard yet one
 * of SHARDS: one block per shard, the blocks going to the next shards in
 * turn, so a run stays a few big groups and successive flushes rotate. */
static void assign_shards(rrpc_async *a, rrpc__acall **box, size_t n, int shards)
{
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++)
        fresh += box[i]->shard < 0;
    if (fresh == 0)
        return;
    size_t blocks = fresh < (size_t)shards ? fresh : (size_t)shards;
    size_t per = (fresh + blocks - 1) / blocks, k = 0;
    unsigned first = a->next_shard;
    for (size_t i = 0; i < n; i++)
        if (box[i]->shard < 0)
            box[i]->shard = shards > 1 ? (int)((first + k++ / per) % (unsigned)shards) : 0;
    a->next_shard = first + (unsigned)blocks;
}

/* Delivers a run BOX[0..n) of live calls for one service: one group per
 * shard, in the order of their first call (stable within a shard). */
static void push_run(rrpc_async *a, rrpc__acall **box, size_t n)
{
    rrpc__registry_view v;
    int known = service_view(a, box[0], &v);
    long max_queue = 0;
    if (a->fail_fast && known == RRPC__AVIEW_ASKING && (n = hold(a, box, n)) == 0)
        return;
    if (a->fail_fast && known == RRPC__AVIEW_KNOWN) {
        if (rrpc__view_unavailable(&v) && (n = refuse_unavailable(a, box, n)) == 0)
            return;
        max_queue = rrpc__view_max_queue(&v);
    }
    int shards = known == RRPC__AVIEW_KNOWN ? v.shards
                 : a->session != NULL && a->ops->shards != NULL
                     ? a->ops->shards(a->session, box[0]->buf, box[0]->list_len)
                     : 1; /* a transport without shards, or nothing known yet */
    if (shards == 1) {    /* the usual case: one list, unless resends name others */
        int mixed = 0;
        for (size_t i = 0; i < n; i++) {
            if (box[i]->shard < 0)
                box[i]->shard = 0;
            mixed |= box[i]->shard;
        }
        if (!mixed) {
            push_groups(a, box, n, max_queue);
            return;
        }
    }
    assign_shards(a, box, n, shards);
    size_t i = 0;
    while (i < n) {
        /* The common case: a block of one shard, taken as it is. */
        size_t j = i + 1;
        while (j < n && box[j]->shard == box[i]->shard)
            j++;
        int rest_same = 1;
        for (size_t k = j; k < n && rest_same; k++)
            rest_same = box[k]->shard != box[i]->shard;
        if (rest_same || a->by_shard == NULL) {
            push_groups(a, box + i, j - i, max_queue);
            i = j;
            continue;
        }
        /* Calls of this shard further on (resends mixed with new calls):
         * gather them, and keep the others in order behind. */
        size_t m = 0, keep = i;
        int shard = box[i]->shard;
        for (size_t k = i; k < n; k++) {
            if (box[k]->shard == shard)
                a->by_shard[m++] = box[k];
            else
                box[keep++] = box[k];
        }
        memcpy(box + keep, a->by_shard, m * sizeof *box);
        push_groups(a, box + keep, m, max_queue);
        n = keep;
    }
}

/* Callbacks run here (on failures) may queue more; they go to the other
 * outbox and the next flush. */
void rrpc__asend_flush(rrpc_async *a)
{
    a->flush_scheduled = 0;
    rrpc__acall **box = a->outbox;
    size_t n = a->nout, cap = a->outbox_cap;
    a->outbox = a->outbox_spare;
    a->outbox_cap = a->spare_cap;
    a->nout = 0;
    size_t max = a->ops->deliver_max;
    size_t i = 0;
    while (i < n) {
        size_t start = i, live = 0;
        /* Compact the run's live records to the front of box[start..]. */
        while (i < n && live < max && (live == 0 || same_list(box[start], box[i]))) {
            rrpc__acall *c = box[i++];
            if (c->done) {
                c->in_outbox = c->done = 0;
                rrpc__acall_put(a, c);
            } else {
                box[start + live++] = c;
            }
        }
        if (live > 0)
            push_run(a, box + start, live);
    }
    a->outbox_spare = box;
    a->spare_cap = cap;
    rrpc__acall_give_back(a);
}

size_t rrpc__asend_resend(rrpc_async *a)
{
    long long now = a->clock.measured_at > 0 ? rrpc__clock_redis_ms(&a->clock) : 0;
    size_t again = 0;
    for (uint32_t i = 0; i < a->nslots; i++) {
        rrpc__acall *c = a->slots[i].call;
        /* Past its deadline: not sent again; its timer fails it with
         * RRPC_ETIMEDOUT (now, if it is due). */
        if (c == NULL || c->in_outbox || (c->deadline_ms > 0 && now >= c->deadline_ms))
            continue;
        if (outbox_add(a, c) != RRPC_OK) {
            rrpc__acall_finish(a, c, RRPC_ENOMEM, NULL, NULL);
            continue;
        }
        again++;
    }
    return again;
}

void rrpc__asend_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__asend_flush(arg);
}
