/* async_cluster.h -- the async client's link to whatever a URL names.
 *
 * async_redis.c's session holds two of these (push and pop) and needs no
 * cluster code: for a redis:// or redis+sentinel:// URL an rrpc__aconn is
 * one rrpc__alink,
 * whose callbacks are the owner's own; for a redis+cluster:// URL it is one
 * rrpc__alink per master, each command routed by its key's hash slot and
 * MOVED and ASK followed, reporting to the owner as one link would.  Sits
 * on top of async_link.h, which never calls back into it.
 */
#ifndef RRPC_ASYNC_CLUSTER_H
#define RRPC_ASYNC_CLUSTER_H

#include "redis/async_link.h"
#include "core/url.h"

typedef struct rrpc__aconn rrpc__aconn;

/* As rrpc__alink_open, for any URL.  With a Cluster URL the slot map is
 * read first (synchronously) and a link to every master started; the
 * conn is ready (ON_EVENT with RRPC_OK) when all of them are, and losing
 * any of them loses it. */
int rrpc__aconn_open(rrpc__aconn **out, struct event_base *base, const rrpc__url *url,
                     double connect_timeout_s, rrpc__alink_reply_fn on_reply,
                     rrpc__alink_event_fn on_event, void *udata, char *err, size_t errlen);
/* As rrpc__alink_command (C may be NULL: RRPC_ECONNECT); ON_REPLY runs
 * once per command, for its final reply after any redirections, or with
 * NULL when the conn is lost. */
int rrpc__aconn_command(rrpc__aconn *c, int argc, const char **argv, const size_t *lens,
                        void *privdata);
/* As rrpc__alink_close.  NULL is allowed. */
void rrpc__aconn_close(rrpc__aconn *c);

#endif /* RRPC_ASYNC_CLUSTER_H */
