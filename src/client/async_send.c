/* async_send.c -- the async client's submission path (async_send.h).
 *
 * A submitted call gets its id (the slot table), its timer, and a place in
 * the outbox.  The outbox is flushed once per loop iteration: requests for
 * the same service queued in one iteration go to the transport as one
 * group, which is most of the speed: the broker then does one operation
 * per group (one RPUSH on Redis), not one per call.  A call whose timer fires is withdrawn from its
 * service's queue, so that it does not run after its caller gave up.
 */
#include "core/clock.h"
#include "client/async_send.h"

#include "client/async_calls.h"
#include "client/async_request.h"

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

static void on_call_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__acall *c = arg;
    rrpc_async *a = c->owner;
    if (!c->in_outbox && a->session != NULL)
        a->ops->withdraw(a->session, c->buf, c->list_len, c->priority, rrpc__areq_text(c),
                         c->text_len);
    rrpc__async_error(a, RRPC_ETIMEDOUT, "no reply from '%s' within %.3f s", c->buf, c->timeout_s);
    rrpc__acall_finish(a, c, RRPC_ETIMEDOUT, NULL, NULL);
}

/* ---- the outbox -------------------------------------------------------- */

static int outbox_add(rrpc_async *a, rrpc__acall *c)
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
    if (!a->flush_scheduled) {
        a->flush_scheduled = 1;
        event_active(a->flush_ev, EV_TIMEOUT, 0);
    }
    return RRPC_OK;
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
    if (c->timer == NULL || evtimer_add(c->timer, timeout_tv(a, c->timeout_s, &tmp)) != 0)
        rc = rrpc__async_error(a, RRPC_ENOMEM, "cannot start a timer");
    if (rc == RRPC_OK)
        rc = outbox_add(a, c);
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

/* Hands BOX[0..n) -- all live, all for one service and priority -- to the transport as
 * one group (the texts go into a->argv after the transport's headroom). */
static void push_group(rrpc_async *a, rrpc__acall **box, size_t n)
{
    rrpc__agroup *b = malloc(sizeof *b + n * sizeof b->ids[0]);
    for (size_t i = 0; i < n; i++) {
        a->argv[i] = rrpc__areq_text(box[i]);
        a->lens[i] = box[i]->text_len;
        if (b)
            b->ids[i] = box[i]->id;
    }
    if (b)
        b->n = n;
    int rc = RRPC_ECONNECT;
    if (b == NULL)
        rc = rrpc__async_error(a, RRPC_ENOMEM, "out of memory");
    else if (a->session != NULL)
        rc = a->ops->deliver(a->session, box[0]->buf, box[0]->list_len, box[0]->priority, a->argv,
                             a->lens, n, b);
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
        else if (rc != RRPC_OK && !c->done) {
            rrpc__async_error(a, rc, "%s", msg);
            rrpc__acall_finish(a, c, rc, NULL, NULL);
        }
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
            push_group(a, box + start, live);
    }
    a->outbox_spare = box;
    a->spare_cap = cap;
    rrpc__acall_give_back(a);
}

void rrpc__asend_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__asend_flush(arg);
}
