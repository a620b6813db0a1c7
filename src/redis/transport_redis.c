/* transport_redis.c -- the Redis transport's table (transport/transport.h):
 * every URL kind of core/url.c (redis://, unix sockets, Sentinel and
 * Cluster) is Redis's.  The operations are in the files named in each
 * group's header. */
#include "transport/transport.h"

#include "redis/async_redis.h"

static int accepts(const rrpc__url *url)
{
    return url->kind == RRPC__URL_DIRECT || url->kind == RRPC__URL_SENTINEL ||
           url->kind == RRPC__URL_CLUSTER;
}

const rrpc__transport rrpc__redis_transport = {
    .name = "redis",
    .accepts = accepts,
    .client = NULL, /* filled as each group moves behind the interface */
    .async = &rrpc__redis_async_ops,
    .server = NULL,
    .admin = NULL,
};
