/* async_failfast.h -- fail fast for the async client's calls in flight
 * (async_failfast.c).  Loop thread only. */
#ifndef RRPC_ASYNC_FAILFAST_H
#define RRPC_ASYNC_FAILFAST_H

#include "client/async_state.h"

#include <event2/util.h>

/* The sweep timer's callback (ARG is the client), also run at once when a
 * registry read ends (rrpc__aff_view_read). */
void rrpc__aff_on_sweep(evutil_socket_t fd, short what, void *arg);
/* A read of a service's registry ended (the session's `view_read`): the
 * calls held back for it go, and the calls waiting look again. */
void rrpc__aff_view_read(rrpc_async *a);

#endif /* RRPC_ASYNC_FAILFAST_H */
