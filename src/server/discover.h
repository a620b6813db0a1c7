/* discover.h -- what a server says about its methods (discover.c): JSON
 * Schemas checked before handlers, documented errors, interceptors, and
 * the built-in rpc.discover. */
#ifndef RRPC_DISCOVER_H
#define RRPC_DISCOVER_H

#include "core/dispatch.h"

#include <rrpc/rrpc.h>

/* Registers rpc.discover, which describes S, into S's methods.  RRPC_OK
 * or RRPC_ENOMEM. */
int rrpc__discover_init(rrpc_server *s);

/* The OpenRPC document (new) of METHODS of SERVICE, as rpc.discover
 * answers; SHAPES maps method names to rrpc_server_set_params shapes. */
json_t *rrpc__discover_document(const rrpc__methods *methods, const char *service,
                                const json_t *shapes);

#endif
