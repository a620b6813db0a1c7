/* limits_beat.h -- the heartbeat's part of the limits (limits_beat.c). */
#ifndef RRPC_LIMITS_BEAT_H
#define RRPC_LIMITS_BEAT_H

#include "core/ratelimit.h"
#include "redis/conn.h"

/* One beat on C: writes WRITE_TEXT (NULL: nothing) into CONFIG_KEY's
 * `limits`, reads the field into ST, renews ST's leases, and moves the
 * due waiting requests of LIST_KEY back.  RRPC_OK, a link error, or
 * RRPC_EREDIS with WHY set (a refused command; the rest still ran). */
int rrpc__limits_beat(rrpc__conn *c, rrpc__rl_state *st, const char *config_key,
                      const char *list_key, const char *write_text, char *why, size_t whylen);

#endif
