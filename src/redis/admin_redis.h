/* admin_redis.h -- the Redis transport's admin operations
 * (admin_redis.c, transport/admin_ops.h). */
#ifndef RRPC_ADMIN_REDIS_H
#define RRPC_ADMIN_REDIS_H

#include "transport/admin_ops.h"

extern const rrpc__admin_ops rrpc__redis_admin_ops;

#endif /* RRPC_ADMIN_REDIS_H */
