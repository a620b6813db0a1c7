/* server.h -- struct rrpc_server, shared by the files of server/ only: the
 * rest of the library sees a server through rrpc.h, a transport through
 * the neutral part it is handed (transport/server_ops.h). */
#ifndef RRPC_SERVER_H
#define RRPC_SERVER_H

#include "core/dispatch.h"
#include "server/record.h"
#include "transport/server_ops.h"
#include "transport/transport.h"

#include <rrpc/rrpc.h>

#include <stdatomic.h>

struct rrpc_server {
    rrpc__serving base;          /* what the transport reads: settings, decide, counters */
    const rrpc__server_ops *ops; /* the transport's, chosen by the URL */
    rrpc__server_broker *broker; /* the transport's part (opaque) */
    char *prefix;
    char *service;
    char **reply_prefixes; /* the allow-list (NULL-terminated), or NULL */
    int handle_signals;
    double start_timeout_s; /* waiting for the broker at start; 0 = forever, < 0 = not */
    rrpc__methods methods;
    rrpc__record record; /* identity, record, rpc.ping, per-method stats */
    atomic_int running;
    char *limits_text; /* rrpc_server_options.limits (copied), or NULL */
};

#endif
