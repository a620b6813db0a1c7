/* async_receive.h -- what the async client does with the transport's
 * reports (async_receive.c): the handlers it opens its session with. */
#ifndef RRPC_ASYNC_RECEIVE_H
#define RRPC_ASYNC_RECEIVE_H

#include "transport/async_ops.h"

/* UDATA is the rrpc_async.  Loop thread. */
extern const rrpc__async_handlers rrpc__areceive_handlers;

#endif /* RRPC_ASYNC_RECEIVE_H */
