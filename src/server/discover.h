/* discover.h -- what a server says about its methods (discover.c): JSON
 * Schemas checked before handlers, documented errors, interceptors, and
 * the built-in rpc.discover. */
#ifndef RRPC_DISCOVER_H
#define RRPC_DISCOVER_H

#include "core/dispatch.h"
#include "server/record.h"

#include <rrpc/rrpc.h>

/* Registers rpc.discover, which describes R's service and methods, into
 * R's method table (R is its udata: it must outlive the table).  RRPC_OK
 * or RRPC_ENOMEM. */
int rrpc__discover_init(rrpc__record *r);

/* rrpc_server_set_schema and rrpc_server_add_error on METHODS, with ERR
 * for the message; the caller checked that the server is not running. */
int rrpc__discover_set_schema(rrpc__methods *methods, const char *method,
                              const json_t *params_schema, const json_t *result_schema, char *err,
                              size_t errlen);
int rrpc__discover_add_error(rrpc__methods *methods, const char *method, int code,
                             const char *message, char *err, size_t errlen);

/* The OpenRPC document (new) of METHODS of SERVICE, as rpc.discover
 * answers; SHAPES maps method names to rrpc_server_set_params shapes. */
json_t *rrpc__discover_document(const rrpc__methods *methods, const char *service,
                                const json_t *shapes);

#endif
