/* client_redis.h -- the Redis transport's sync caller link
 * (client_redis.c, transport/client_ops.h), shared with its admin
 * operations (admin_redis.c), which run on the same link. */
#ifndef RRPC_CLIENT_REDIS_H
#define RRPC_CLIENT_REDIS_H

#include "redis/conn.h"
#include "redis/failfast.h"
#include "transport/client_ops.h"

struct rrpc__client_link {
    rrpc__conn *conn;
    rrpc__failfast *ff;      /* registry view: fail fast, max_queue, shards (failfast.c) */
    double socket_timeout_s; /* the read timeout last set on conn; 0: none set since dialling */
    const rrpc__call_watch *watch; /* progress and cancellation of the next calls, or NULL */
    /* The last push's reply key and shard: a resend of the same request
     * (resend_on_reconnect) goes to the same shard, whose dedup memory
     * knows it (a reliable service remembers answers per shard). */
    char last_reply_to[RRPC__KEY_MAX];
    int last_shard;
    int cluster; /* a Redis Cluster URL: what it cannot do is refused */
};

extern const rrpc__client_ops rrpc__redis_client_ops;

/* Sets L's socket read timeout to SECONDS, unless it already is: a call
 * sets it to its timeout plus a grace, the admin operations to their own.
 * RRPC_ECONNECT if it cannot be set. */
int rrpc__client_link_timeout(rrpc__client_link *l, double seconds);

#endif /* RRPC_CLIENT_REDIS_H */
