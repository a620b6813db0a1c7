/* async_request.h -- the async client's request text (async_request.c).
 *
 * A record's buffer holds the service's queue name, a NUL, then the request
 * text.  The text is built on the calling thread up to and including "id":
 * and the loop appends the id when it gives one, so the request puts "id"
 * last and the JSON work is spread over the callers' threads.
 */
#ifndef RRPC_ASYNC_REQUEST_H
#define RRPC_ASYNC_REQUEST_H

#include "client/async_state.h"
#include "client/call_options.h"

#include <jansson.h>

/* Room kept after a call's text for the id's digits and the closing brace. */
#define RRPC__ASYNC_ID_ROOM 24

/* Sets a->request_tail: ,"reply_to":<reply key as JSON>,"id": -- the same
 * for every call.  RRPC_EINVAL if the key is not valid UTF-8. */
int rrpc__areq_make_tail(rrpc_async *a);
/* Fills C's buffer for SERVICE, METHOD and PARAMS (borrowed; NULL for
 * none): the queue name, then the request text, whole for a notification,
 * up to "id": for a call (with its deadline if a->clock is measured, and
 * the trace context TRACE).  RRPC_EINVAL or RRPC_ENOMEM with the message
 * set.  Any thread. */
/* The cancel key of A's call HANDLE: "<reply key>:cancel:<handle>". */
int rrpc__areq_cancel_key(const rrpc_async *a, uint64_t handle, char *out, size_t len);

int rrpc__areq_build(rrpc_async *a, rrpc__acall *c, const char *service, const char *method,
                     const json_t *params, const rrpc__call_trace_ctx *trace,
                     const json_t *members);
/* Appends C's id and the closing brace (room was kept).  Loop thread. */
void rrpc__areq_put_id(rrpc__acall *c);

static inline char *rrpc__areq_text(const rrpc__acall *c)
{
    return c->buf + c->list_len + 1;
}

#endif /* RRPC_ASYNC_REQUEST_H */
