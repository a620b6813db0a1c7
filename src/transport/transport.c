/* transport.c -- picks the transport that serves a URL (transport.h).
 * The list is the one place that knows which brokers this build has. */
#include "transport/transport.h"

#include "core/internal.h"

static const rrpc__transport *const transports[] = {&rrpc__redis_transport, &rrpc__amqp_transport};

const rrpc__transport *rrpc__transport_for(const rrpc__url *url, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof transports / sizeof transports[0]; i++)
        if (transports[i]->accepts(url))
            return transports[i];
    rrpc__fail(err, errlen, RRPC_EINVAL, "no transport serves this URL");
    return NULL;
}
