/* dial.h -- one hiredis context to one Redis node (dial.c): connecting
 * with a timeout, the AUTH/SELECT handshake, commands in RESP, and the
 * error state a link keeps.  What the plain link (conn.c), Sentinel
 * discovery (sentinel.c) and the cluster link (cluster_link.c) share; only
 * redis/ files include it, as it names hiredis. */
#ifndef RRPC_DIAL_H
#define RRPC_DIAL_H

#include "core/internal.h"
#include "core/url.h"

#include <hiredis/hiredis.h>

#include <stddef.h>
#include <sys/time.h>

/* How long one Sentinel or one seed node asked for the slot map may take
 * to answer, at most: a dead one must not eat the whole connect timeout
 * while others are up. */
#define RRPC__PROBE_TIMEOUT_S 1.0

/* What every context of one link shares: where and as whom to connect,
 * the timeouts, and the link's error state. */
typedef struct rrpc__dial {
    const rrpc__url *url; /* borrowed from the link */
    double connect_timeout_s;
    double read_timeout_s; /* 0: wait forever */
    int broken;            /* set by a lost link or a timeout */
    char errmsg[RRPC__ERRMSG_LEN];
} rrpc__dial;

/* Records WHAT as the link's error; RRPC_ECONNECT and RRPC_ETIMEDOUT also
 * mark the link broken.  Returns ERR. */
int rrpc__dial_fail(rrpc__dial *d, int err, const char *what);
/* S seconds as a timeval (NaN, negative or huge: clamped, never undefined). */
struct timeval rrpc__dial_timeval(double s);
/* Opens *ctx to HOST:PORT, or to the unix socket PATH if not NULL, with
 * TIMEOUT_S for the connect and every reply until the caller sets its
 * own.  On failure *ctx may still hold the failed context (the caller
 * frees it). */
int rrpc__dial_ctx(rrpc__dial *d, redisContext **ctx, const char *host, int port, const char *path,
                   double timeout_s);
/* AUTH with USER (may be NULL) and PASSWORD, if there is a password:
 * RRPC_EAUTH if refused. */
int rrpc__dial_auth(rrpc__dial *d, redisContext *ctx, const char *user, const char *password);
/* AUTH and SELECT of the link's URL, which every new context needs. */
int rrpc__dial_handshake(rrpc__dial *d, redisContext *ctx);
/* Runs one command synchronously on CTX: ERR_CODE if Redis refuses it. */
int rrpc__dial_command(rrpc__dial *d, redisContext *ctx, int argc, const char **argv, int err_code);
/* Queues a command on CTX in RESP formatted here (LENS NULL: C strings):
 * REDIS_OK or REDIS_ERR, as hiredis's own append. */
int rrpc__dial_append(redisContext *ctx, int argc, const char **argv, const size_t *lens);
/* After redisGetReply failed on CTX (errno still as it left it): the link
 * is broken, its message "WHO: read timed out" or "WHO: <hiredis's
 * error>", and the result RRPC_ETIMEDOUT or RRPC_ECONNECT. */
int rrpc__dial_lost(rrpc__dial *d, const redisContext *ctx, const char *who);
/* Nonzero if the peer closed CTX while no reply was outstanding (anything
 * readable is then an EOF or an error). */
int rrpc__dial_peer_closed(const redisContext *ctx);

#endif /* RRPC_DIAL_H */
