/* limits.h -- the library's limits interceptor (limits.c). */
#ifndef RRPC_SERVER_LIMITS_H
#define RRPC_SERVER_LIMITS_H

#include "core/dispatch.h"
#include "core/ratelimit.h"

/* Installs the limits interceptor (innermost so far) reading ST. */
int rrpc__limits_install(rrpc__methods *methods, rrpc__rl_state *st);

/* Checks the server option `limits` TEXT (NULL: none) at run: it parses,
 * names only methods of METHODS (or "*"), and HEARTBEAT is on. */
int rrpc__limits_check(const char *text, const rrpc__methods *methods, int heartbeat, char *err,
                       size_t errlen);

#endif
