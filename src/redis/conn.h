/* conn.h -- the sync link to Redis (conn.c), the only module of the sync
 * side that talks to Redis: one connection (or, for a Redis Cluster, one
 * per node), pipelined commands and their replies, reconnects, Sentinel
 * and Cluster discovery.  Above it nothing sees hiredis: replies are read
 * through reply.h, which this header includes. */
#ifndef RRPC_CONN_H
#define RRPC_CONN_H

#include "core/url.h"
#include "redis/reply.h"

#include <stddef.h>

typedef struct rrpc__conn rrpc__conn;

/* Sets SIGPIPE to ignored if it still has its default disposition: a
 * broken link must be an error code, not the death of the process. */
void rrpc__ignore_sigpipe(void);

/* Connects, authenticates and selects the database.  On RRPC_OK *out is
 * a new connection owned by the caller (rrpc__conn_close). */
int rrpc__conn_open(rrpc__conn **out, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen);
void rrpc__conn_close(rrpc__conn *c);
/* Drops and re-establishes the link (including AUTH and SELECT). */
int rrpc__conn_reconnect(rrpc__conn *c);
/* The same, but connecting and the handshake take at most LIMIT_S (when
 * shorter than the connect timeout): a call's deadline bounds its resend. */
int rrpc__conn_reconnect_within(rrpc__conn *c, double limit_s);
/* For links that cannot ask Sentinels themselves (the async ones): finds
 * the master of the Sentinel URL URL as a sync connection would (asking
 * each Sentinel, checking ROLE) and fills *direct (new, rrpc__url_free)
 * with a plain redis:// URL of that master, with URL's credentials and db. */
int rrpc__sentinel_resolve(const rrpc__url *url, double connect_timeout_s, rrpc__url *direct,
                           char *err, size_t errlen);
/* Reads the slot map of the Cluster URL URL with CLUSTER SLOTS, asking its
 * seed nodes in turn as a sync connection would, for links that route
 * commands themselves (the async ones).  On RRPC_OK *map holds the masters
 * that own slots, no link (rrpc__cmap_free); else it is empty. */
typedef struct rrpc__cmap rrpc__cmap; /* cluster_map.h */
int rrpc__cluster_read_map(const rrpc__url *url, double connect_timeout_s, rrpc__cmap *map,
                           char *err, size_t errlen);
/* Sets the socket read timeout; 0 means wait forever. */
int rrpc__conn_set_timeout(rrpc__conn *c, double seconds);
/* Queues a command in the output buffer; nothing is sent until a reply is
 * read.  Strings are copied. */
int rrpc__conn_append(rrpc__conn *c, int argc, const char **argv, const size_t *lens);
/* As rrpc__conn_append, but on a Cluster the command goes to the node that
 * owns ROUTE's slot (a command without a key that must reach a given
 * node: SCRIPT LOAD, whose cache is per node).  One Redis: ROUTE unused. */
int rrpc__conn_append_routed(rrpc__conn *c, const char *route, int argc, const char **argv,
                             const size_t *lens);
/* Convenience for NUL-terminated arguments. */
int rrpc__conn_appendv(rrpc__conn *c, int argc, ...);
/* Sends what is queued and reads the next reply.  On RRPC_OK *out is new
 * (rrpc__reply_free).  RRPC_ECONNECT or RRPC_ETIMEDOUT leave the connection
 * unusable until rrpc__conn_reconnect. */
int rrpc__conn_read(rrpc__conn *c, rrpc__reply **out);
/* The last transport error message.  Borrowed. */
const char *rrpc__conn_errmsg(const rrpc__conn *c);
/* Nonzero if the link is known to be broken. */
int rrpc__conn_broken(const rrpc__conn *c);
/* Nonzero if the peer closed an idle link (no reply outstanding). */
int rrpc__conn_peer_closed(const rrpc__conn *c);
/* For links idle between uses (heartbeats, a stop's last writes): if the
 * link is broken, or Redis closed it while idle (its `timeout`, CLIENT
 * KILL, a proxy), reconnects now, so that the next use does not fail on
 * it.  RRPC_OK if the link is usable. */
int rrpc__conn_mend_if_closed(rrpc__conn *c);

/* Measures the Redis clock (core/clock.h) with one TIME round trip on
 * CONN, which must have no replies outstanding.  If Redis refuses TIME (an
 * ACL, say) the clock stays unmeasured and deadlines are not enforced. */
int rrpc__clock_sync(rrpc__clock *c, rrpc__conn *conn);

#endif /* RRPC_CONN_H */
