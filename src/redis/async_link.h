/* async_link.h -- one hiredis async link on a libevent base.
 *
 * One async connection to one Redis (named directly or by Sentinels), with
 * the handshake (AUTH, SELECT) and a connect timeout that hiredis 0.14.1
 * lacks.  With conn.c it is the only place that knows hiredis; callers see
 * commands and rrpc__reply only.  It knows nothing of Redis Cluster:
 * async_cluster.h builds a routed link out of several of these.
 * Everything runs on the base's loop thread.
 */
#ifndef RRPC_ASYNC_LINK_H
#define RRPC_ASYNC_LINK_H

#include <stddef.h>

typedef struct rrpc__alink rrpc__alink;
typedef struct rrpc__reply rrpc__reply; /* conn.c's accessors read it */
typedef struct rrpc__url rrpc__url;     /* url.c */
struct event_base;

/* A reply to a command sent with rrpc__alink_command.  R is borrowed for
 * the duration of the call; NULL means the command will never be answered
 * (link lost or closed).  PRIVDATA is the command's, UDATA the link's.  One
 * function per link (not per command) so no wrapper is allocated per call. */
typedef void (*rrpc__alink_reply_fn)(const rrpc__reply *r, void *privdata, void *udata);

/* The link's state changes, reported at most once each and in this order:
 * RRPC_OK when the handshake is done, then an error code when the link is
 * unusable (MSG says why).  After an error the owner must
 * rrpc__alink_close() the link, but not from inside one of its callbacks. */
typedef void (*rrpc__alink_event_fn)(int status, const char *msg, void *udata);

/* Starts connecting to the Redis that URL names (a redis+cluster:// URL is
 * RRPC_EINVAL: see rrpc__aconn_open).  Commands may be queued at once: they
 * are sent after the handshake.  On RRPC_OK *out is new; on failure err
 * says why and no callback ever runs. */
int rrpc__alink_open(rrpc__alink **out, struct event_base *base, const rrpc__url *url,
                     double connect_timeout_s, rrpc__alink_reply_fn on_reply,
                     rrpc__alink_event_fn on_event, void *udata, char *err, size_t errlen);
/* Queues a command (arguments are copied into the output buffer, which is
 * written when the loop next runs).  RRPC_ECONNECT if the link is down, in
 * which case on_reply does not run for it. */
int rrpc__alink_command(rrpc__alink *l, int argc, const char **argv, const size_t *lens,
                        void *privdata);
/* Drops the link; pending reply functions run with NULL first.  No event
 * is reported.  NULL is allowed. */
void rrpc__alink_close(rrpc__alink *l);

#endif /* RRPC_ASYNC_LINK_H */
