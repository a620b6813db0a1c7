/* call_hooks.c -- the interceptors of the sync and async clients.
 *
 * Both clients run the same befores (caller's thread, before the request
 * is encoded) and afters (once the outcome is known, before the caller
 * sees it); only where the outcome arrives differs, so the rules live
 * here.  A before adds request members through an object of its own
 * rather than the request itself: the async client never builds a
 * request object (it writes the text straight into its buffer), and the
 * members rrpc sets must stay rrpc's.
 */
#define _POSIX_C_SOURCE 200809L
#include "client/call_hooks.h"

#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

/* Members rrpc writes itself (docs/PROTOCOL.md): not an interceptor's. */
static const char *const RESERVED[] = {"jsonrpc",         "method",   "params",      "id",
                                       "reply_to",        "deadline", "traceparent", "tracestate",
                                       "idempotency_key", "priority"};

int rrpc__call_hooks_add(rrpc__call_hooks *h, rrpc_call_before_fn before, rrpc_call_after_fn after,
                         void *udata)
{
    if (before == NULL && after == NULL)
        return RRPC_EINVAL;
    rrpc__call_hook *items = realloc(h->items, (h->count + 1) * sizeof *items);
    if (items == NULL)
        return RRPC_ENOMEM;
    items[h->count++] = (rrpc__call_hook){before, after, udata};
    h->items = items;
    return RRPC_OK;
}

void rrpc__call_hooks_free(rrpc__call_hooks *h)
{
    free(h->items);
    h->items = NULL;
    h->count = 0;
}

static const char *reserved_member(const json_t *members)
{
    for (size_t i = 0; i < sizeof RESERVED / sizeof RESERVED[0]; i++)
        if (json_object_get(members, RESERVED[i]) != NULL)
            return RESERVED[i];
    return NULL;
}

int rrpc__call_hooks_before(const rrpc__call_hooks *h, const char *service, const char *method,
                            const json_t *params, json_t **members, size_t *passed, char *err,
                            size_t errlen)
{
    *members = NULL;
    *passed = 0;
    json_t *added = json_object();
    if (added == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    int rc = RRPC_OK;
    for (; *passed < h->count; ++*passed) {
        const rrpc__call_hook *k = &h->items[*passed];
        if (k->before == NULL)
            continue;
        rc = k->before(service, method, params, added, k->udata);
        if (rc != RRPC_OK) {
            rc = rrpc__fail(err, errlen, rc < 0 ? rc : RRPC_EINVAL,
                            "refused by client interceptor %zu", *passed);
            break;
        }
    }
    const char *bad = rc == RRPC_OK ? reserved_member(added) : NULL;
    if (bad != NULL)
        rc = rrpc__fail(err, errlen, RRPC_EINVAL,
                        "an interceptor set the member '%s', which rrpc sets itself", bad);
    if (rc == RRPC_OK && json_object_size(added) > 0)
        *members = added;
    else
        json_decref(added);
    return rc;
}

void rrpc__call_hooks_after(const rrpc__call_hooks *h, size_t passed, const char *service,
                            const char *method, int status, const json_t *result,
                            const json_t *error)
{
    while (passed-- > 0) {
        const rrpc__call_hook *k = &h->items[passed];
        if (k->after != NULL)
            k->after(service, method, status, result, error, k->udata);
    }
}
