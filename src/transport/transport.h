/* transport.h -- the transport interface: what clients and servers need
 * from a broker, and the table a broker's implementation fills in.
 *
 * rrpc's logic -- encoding requests, timeouts and resends (client/), the
 * method table, dispatch, stats and the lifecycle of a server (server/),
 * the protocol itself (core/) -- never names a broker.  It reaches one
 * through a transport: a constant table of operations in four groups,
 * each declared in its own header beside this one:
 *
 *   client_ops.h  a sync caller's link: connect, deliver a request and wait
 *                 for its answer on a reply address, send a notification
 *   async_ops.h   the same for the multiplexed async client's event loop
 *   server_ops.h  a server's workers: take requests, answer them, settle
 *                 them (reliable mode), keep dead letters, announce the
 *                 service (registry and heartbeat)
 *   admin_ops.h   what operators read and mend: services, workers, stats,
 *                 dead letters
 *
 * A transport is chosen by the URL (rrpc__transport_for): Redis (src/redis/)
 * or AMQP 0-9-1, i.e. RabbitMQ (src/amqp/).  A broker adds a folder of its
 * own, a table, and a line in transport.c -- nothing in client/ or server/
 * changes.  A group a transport lacks is NULL: its callers refuse with
 * "... is not supported over <name> yet".
 * docs/DESIGN.md names each operation and says what it promises.
 */
#ifndef RRPC_TRANSPORT_H
#define RRPC_TRANSPORT_H

#include "core/url.h"

struct rrpc__client_ops; /* client_ops.h */
struct rrpc__async_ops;  /* async_ops.h */
struct rrpc__server_ops; /* server_ops.h */
struct rrpc__admin_ops;  /* admin_ops.h */

typedef struct rrpc__transport {
    const char *name; /* "Redis", "AMQP": for messages */
    /* Nonzero if this transport serves URL (parsed by core/url.c). */
    int (*accepts)(const rrpc__url *url);
    const struct rrpc__client_ops *client;
    const struct rrpc__async_ops *async;
    const struct rrpc__server_ops *server;
    const struct rrpc__admin_ops *admin;
} rrpc__transport;

/* The transports this build has, each defined by its folder. */
extern const rrpc__transport rrpc__redis_transport; /* redis/transport_redis.c */
extern const rrpc__transport rrpc__amqp_transport;  /* amqp/transport_amqp.c */

/* The transport that serves URL.  Borrowed (a constant).  NULL, with a
 * message in ERR, if none does. */
const rrpc__transport *rrpc__transport_for(const rrpc__url *url, char *err, size_t errlen);

#endif
