/* async_redis.h -- the Redis transport's async operations
 * (transport/async_ops.h), for transport_redis.c's table. */
#ifndef RRPC_ASYNC_REDIS_H
#define RRPC_ASYNC_REDIS_H

#include "transport/async_ops.h"

extern const rrpc__async_ops rrpc__redis_async_ops;

#endif /* RRPC_ASYNC_REDIS_H */
