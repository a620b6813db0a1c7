/* mstats.h -- a server's per-method stats sent to Redis (mstats.c). */
#ifndef RRPC_MSTATS_H
#define RRPC_MSTATS_H

#include "core/dispatch.h"
#include "core/stats.h"

typedef struct rrpc__conn rrpc__conn;

/* Sends ST's changes since the last confirmed flush as HINCRBYs on the
 * hash KEY ({L}:mstats, fields "calls:<method>", "errors:<method>",
 * "h<bucket>:<method>": PROTOCOL.md section 9) over C, and waits for
 * them.  NAMES gives the method names in table order.  RRPC_OK, or the
 * first error (RRPC_EREDIS: a command was refused); then the same deltas
 * are sent again next time. */
int rrpc__mstats_flush(rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c, const char *key);

#endif
