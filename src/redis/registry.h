/* registry.h -- a server's announcement in Redis: its record, heartbeat
 * and per-method stats (registry.c). */
#ifndef RRPC_REGISTRY_H
#define RRPC_REGISTRY_H

#include "core/url.h"
#include "transport/server_ops.h"

typedef struct rrpc__registry rrpc__registry;

/* The announcement of SERVICE, whose request list is LIST_KEY, under
 * PREFIX.  NULL when out of memory or a key is too long. */
rrpc__registry *rrpc__registry_new(const char *service, const char *prefix, const char *list_key);
void rrpc__registry_free(rrpc__registry *r);
/* Before the workers start: writes A's record (A borrowed until
 * rrpc__registry_stop) and starts the heartbeat thread on a link of its
 * own to URL.  On failure ERR says why and nothing is left running. */
int rrpc__registry_start(rrpc__registry *r, const rrpc__announcement *a, const rrpc__url *url,
                         double connect_timeout_s, char *err, size_t errlen);
/* After the workers have returned: stops the heartbeat, flushes the last
 * stats and removes the record, so callers fail fast at once.  No-op if
 * not started. */
void rrpc__registry_stop(rrpc__registry *r);

#endif
