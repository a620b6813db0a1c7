/* transport_amqp.c -- the AMQP 0-9-1 transport's table
 * (transport/transport.h): amqp:// and amqps:// URLs (RabbitMQ).  This
 * step has the sync client, the async client, the server (at most once)
 * and the operators' questions (admin_amqp.c). */
#include "transport/admin_ops.h"
#include "transport/async_ops.h"
#include "transport/client_ops.h"
#include "transport/server_ops.h"
#include "transport/transport.h"

static int accepts(const rrpc__url *url)
{
    return url->kind == RRPC__URL_AMQP;
}

extern const rrpc__client_ops rrpc__amqp_client_ops; /* client_amqp.c */
extern const rrpc__server_ops rrpc__amqp_server_ops; /* server_amqp.c */
extern const rrpc__admin_ops rrpc__amqp_admin_ops;   /* admin_amqp.c */
extern const rrpc__async_ops rrpc__amqp_async_ops;   /* async_amqp.c */

const rrpc__transport rrpc__amqp_transport = {
    .name = "AMQP",
    .accepts = accepts,
    .client = &rrpc__amqp_client_ops,
    .async = &rrpc__amqp_async_ops,
    .server = &rrpc__amqp_server_ops,
    .admin = &rrpc__amqp_admin_ops,
};
