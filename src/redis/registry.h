/* registry.h -- a server's record, heartbeat and rpc.ping (registry.c). */
#ifndef RRPC_REGISTRY_H
#define RRPC_REGISTRY_H

#include "core/dispatch.h"
#include "core/url.h"

#include <rrpc/rrpc.h>

typedef struct rrpc__registry rrpc__registry;

/* A registry for a server of SERVICE whose request list is LIST_KEY.
 * Registers the built-in rpc.ping into METHODS.  NULL when out of memory. */
rrpc__registry *rrpc__registry_new(const rrpc_server_options *opts, const char *prefix,
                                   const char *list_key, rrpc__methods *methods);
void rrpc__registry_free(rrpc__registry *r);
/* Records the informal params shape of METHOD (borrowed, copied). */
int rrpc__registry_set_params(rrpc__registry *r, const char *method, const json_t *shape);
/* Called by rrpc_server_run before the workers start: turns the per-method
 * stats on, writes the record and starts the heartbeat thread.  On failure
 * ERR says why and nothing is left running. */
int rrpc__registry_start(rrpc__registry *r, const rrpc__url *url, double connect_timeout_s,
                         int threads, char *err, size_t errlen);
/* Called after the workers have returned: stops the heartbeat, flushes the
 * last stats and removes the record, so callers fail fast at once. */
void rrpc__registry_stop(rrpc__registry *r);

#endif
