/* transport_redis.c -- the Redis transport's table (transport/transport.h):
 * every URL kind of core/url.c (redis://, unix sockets, Sentinel and
 * Cluster) is Redis's.  The operations are in the files named in each
 * group's header. */
#include "transport/transport.h"

#include "redis/admin_redis.h"
#include "redis/async_redis.h"
#include "redis/client_redis.h"

static int accepts(const rrpc__url *url)
{
    return url->kind == RRPC__URL_DIRECT || url->kind == RRPC__URL_SENTINEL ||
           url->kind == RRPC__URL_CLUSTER;
}

extern const struct rrpc__server_ops rrpc__redis_server_ops; /* server_ops.c */

const rrpc__transport rrpc__redis_transport = {
    .name = "Redis",
    .accepts = accepts,
    .client = &rrpc__redis_client_ops,
    .async = &rrpc__redis_async_ops,
    .server = &rrpc__redis_server_ops,
    .admin = &rrpc__redis_admin_ops,
};
