/* async_send.h -- the async client's submission path (async_send.c):
 * ids, per-call timers, the outbox, and batched delivery to the broker.
 * Loop thread only. */
#ifndef RRPC_ASYNC_SEND_H
#define RRPC_ASYNC_SEND_H

#include "client/async_state.h"

#include <event2/util.h>

/* Gives C its id and timer and queues it for the next flush.  Never runs
 * a callback: rrpc_async_call relies on that.  On failure (message set) C
 * is untouched and still the caller's. */
int rrpc__asend_submit(rrpc_async *a, rrpc__acall *c);
/* Delivers everything queued in this loop iteration, one group per run of
 * requests for the same service.  Calls whose group cannot be delivered
 * end here, with their callbacks. */
void rrpc__asend_flush(rrpc_async *a);
/* The flush event's callback (ARG is the client), made active by the
 * first submission of a loop iteration. */
void rrpc__asend_on_flush(evutil_socket_t fd, short what, void *arg);
/* Takes back from QUEUE the request of C (sent, to its shard's queue), if
 * no worker has it yet: a call that timed out or was cancelled. */
void rrpc__asend_withdraw(rrpc_async *a, rrpc__acall *c);
/* The link is back: queues every call in flight for sending again (same
 * text, same shard), except those past their deadline, which their timers
 * fail.  Returns how many. */
size_t rrpc__asend_resend(rrpc_async *a);
/* Starts the timer of fail fast's look at the calls in flight
 * (async_failfast.c) unless it runs, or fail fast is off. */
void rrpc__asend_arm_sweep(rrpc_async *a);
/* Puts back the outbox of a closing client: notifications and calls
 * already finished are recycled. */
void rrpc__asend_drop_outbox(rrpc_async *a);

#endif /* RRPC_ASYNC_SEND_H */
