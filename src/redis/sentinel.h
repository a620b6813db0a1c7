/* sentinel.h -- finding a Redis master through its Sentinels (sentinel.c),
 * for links of redis+sentinel:// URLs. */
#ifndef RRPC_SENTINEL_H
#define RRPC_SENTINEL_H

#include "redis/dial.h"

/* What a link remembers between dials. */
typedef struct rrpc__sentinel {
    size_t first;      /* the Sentinel that answered last is asked first */
    char *master_host; /* where the master was found (owned), or NULL */
    int master_port;
} rrpc__sentinel;

/* Asks the Sentinels of D's URL, in turn, for the master, connects *CTX
 * (replacing what it held) to it, authenticates, selects the database
 * and checks with ROLE that it is the master.  A password the master
 * refuses is final (RRPC_EAUTH); any other failure moves on to the next
 * Sentinel, and when none is left D's message says what the last one
 * did (RRPC_ECONNECT). */
int rrpc__sentinel_dial(rrpc__dial *d, rrpc__sentinel *s, redisContext **ctx);
void rrpc__sentinel_free(rrpc__sentinel *s);

#endif /* RRPC_SENTINEL_H */
