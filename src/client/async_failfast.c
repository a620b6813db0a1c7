/* async_failfast.c -- the async client's calls in flight and their
 * services' registries (async_failfast.h; rrpc_async_options.fail_fast).
 *
 * A new call is checked against its service's registry as it is flushed
 * (async_send.c).  A call already waiting learns that the last worker of
 * its service went here: while calls are in flight a timer looks them over
 * every half second, asking the transport for each service's view (which
 * also keeps the views of the services waited on fresh: the transport reads
 * one again when it is a second old, in the background).  A call whose
 * service is now registered with no live worker is withdrawn from its queue
 * (LREM, as on a timeout) and ends with RRPC_EUNAVAILABLE, as the sync
 * client's slices do (PROTOCOL.md section 9): within about a second and a
 * half of the worker going.  A service that never registered is left
 * alone.  The look is a scan of the slot table, twice a second, and costs
 * nothing per call.
 *
 * When a registry read ends the same look runs at once, after a flush of
 * the calls held back for that read (async_send.c's hold).
 */
#include "client/async_failfast.h"

#include "client/async_calls.h"
#include "client/async_send.h"
#include "core/registry_view.h"

#include <event2/event.h>

#include <string.h>

/* Whether C's service is now registered with no live worker; LAST caches
 * the answer for the service looked at last (most calls in flight share a
 * few services). */
typedef struct last_service {
    char name[RRPC__KEY_MAX];
    size_t len; /* 0: none */
    int unavailable;
} last_service;

static int gone(rrpc_async *a, const rrpc__acall *c, last_service *last)
{
    if (last->len == c->list_len && memcmp(last->name, c->buf, c->list_len) == 0)
        return last->unavailable;
    rrpc__registry_view v;
    int known = a->ops->view(a->session, c->buf, c->list_len, &v);
    int unavailable = known == RRPC__AVIEW_KNOWN && rrpc__view_unavailable(&v);
    if (c->list_len < sizeof last->name) {
        memcpy(last->name, c->buf, c->list_len);
        last->len = c->list_len;
        last->unavailable = unavailable;
    }
    return unavailable;
}

/* Ends the calls sent to a service that is now registered with no live
 * worker.  A callback may start calls meanwhile: they are in the outbox,
 * not sent, and left to the flush. */
static void fail_gone(rrpc_async *a)
{
    last_service last = {.len = 0};
    for (uint32_t i = 0; i < a->nslots && a->session != NULL; i++) {
        rrpc__acall *c = a->slots[i].call;
        if (c == NULL || c->in_outbox || c->shard < 0 || !gone(a, c, &last))
            continue;
        rrpc__asend_withdraw(a, c);
        rrpc__async_error(a, RRPC_EUNAVAILABLE, RRPC__UNAVAILABLE_WAITING_FMT, c->buf);
        rrpc__acall_finish(a, c, RRPC_EUNAVAILABLE, NULL, NULL);
    }
    rrpc__acall_give_back(a);
}

void rrpc__aff_on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc_async *a = arg;
    a->sweep_armed = 0; /* a timer that fired, or ran early (view_read), is no longer pending */
    if (a->shutting_down || a->session == NULL || a->ops->view == NULL)
        return;
    if (a->nout > 0 && !a->flush_scheduled) /* calls held back for a view */
        rrpc__asend_flush(a);
    if (a->fail_fast)
        fail_gone(a);
    if (atomic_load(&a->in_flight) > 0)
        rrpc__asend_arm_sweep(a);
}

void rrpc__aff_view_read(rrpc_async *a)
{
    if (a->sweep_ev != NULL && !a->shutting_down)
        event_active(a->sweep_ev, EV_TIMEOUT, 0);
}
