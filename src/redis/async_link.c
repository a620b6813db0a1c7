/* async_link.c -- hiredis async connections on a libevent base.
 *
 * The async client's session (async_redis.c) needs non-blocking Redis links
 * that share one event loop with the client's timers.  hiredis 0.14.1 provides the async protocol
 * engine and a libevent adapter but no connect timeout and no handshake, so
 * this file adds both: AUTH and SELECT are queued ahead of everything else
 * (hiredis sends queued commands in order once connected), and a libevent
 * timer gives up on a link that is not ready in time.  Like conn.c it
 * keeps hiredis out of every other module: callers see rrpc__alink,
 * commands as argv arrays, and replies as rrpc__reply (which is redisReply,
 * so the accessors of conn.c work on them).
 *
 * Sentinel URLs are resolved when a link opens, synchronously, with the
 * sync transport (rrpc__sentinel_resolve: each Sentinel gets at most a
 * second, the master the connect timeout).  That blocks the loop for that
 * long on every (re)connect, which is acceptable because it happens only
 * when a link is (re)made, not per call; the link then talks to that
 * master like to any redis:// one, and a failover shows up as a lost link
 * whose reconnect resolves again.  A Cluster URL is not for this file:
 * async_cluster.c makes a routed link of several of these, one per master,
 * and this file never calls it.
 *
 * Lifetime rules that come from hiredis: when a link breaks, hiredis frees
 * the context itself (after running pending callbacks with a NULL reply),
 * and a context must never be freed from inside one of its own callbacks.
 * So a broken link only reports the event; its owner closes it later, from
 * a fresh event-loop callback.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/defaults.h"
#include "redis/async_link.h"

#include "core/internal.h"
#include "redis/conn.h"
#include "core/url.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum link_report { REPORTED_NOTHING, REPORTED_READY, REPORTED_LOST };

struct rrpc__alink {
    redisAsyncContext *ctx; /* NULL once hiredis has freed it */
    struct event *connect_timer;
    rrpc__alink_reply_fn on_reply;
    rrpc__alink_event_fn on_event;
    void *udata;
    int handshake_left; /* handshake replies still awaited */
    int connected;      /* hiredis reported the TCP/unix connect */
    int closing;        /* rrpc__alink_close is tearing it down */
    enum link_report reported;
    char where[160]; /* the URL with the password masked, for messages */
};

/* Reports READY once, or LOST once; after LOST nothing more. */
static void report(rrpc__alink *l, int status, const char *msg)
{
    if (l->closing || l->reported == REPORTED_LOST)
        return;
    if (status == RRPC_OK && l->reported != REPORTED_NOTHING)
        return;
    l->reported = status == RRPC_OK ? REPORTED_READY : REPORTED_LOST;
    event_del(l->connect_timer);
    l->on_event(status, msg, l->udata);
}

static void report_lost(rrpc__alink *l, int status, const char *what, const char *detail)
{
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s %s: %s", what, l->where, detail ? detail : "unknown error");
    report(l, status, msg);
}

/* hiredis calls this once the socket is connected, or failed to connect;
 * in the latter case it frees the context right after. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    rrpc__alink *l = ac->data;
    if (status != REDIS_OK) {
        l->ctx = NULL;
        report_lost(l, RRPC_ECONNECT, "cannot connect to", ac->errstr);
        return;
    }
    l->connected = 1;
    if (l->handshake_left == 0)
        report(l, RRPC_OK, NULL);
}

/* The context is going away (error, or our own redisAsyncFree); hiredis
 * frees it when this returns. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rrpc__alink *l = ac->data;
    (void)status;
    l->ctx = NULL;
    report_lost(l, RRPC_ECONNECT, "lost the connection to", ac->errstr ? ac->errstr : "closed");
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__alink *l = arg;
    report_lost(l, RRPC_ECONNECT, "timed out connecting to",
                l->connected ? "no answer to the handshake" : "no connection");
}

static void on_handshake_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    rrpc__alink *l = privdata;
    const redisReply *r = reply;
    if (r == NULL)
        return; /* the link went away; on_disconnect or on_connect reports it */
    if (r->type == REDIS_REPLY_ERROR) {
        report_lost(l, RRPC_EAUTH, "handshake refused by", r->str);
        return;
    }
    if (--l->handshake_left == 0 && l->connected)
        report(l, RRPC_OK, NULL);
}

/* The single hiredis callback of every command: forwards to the owner's
 * reply function with the command's privdata. */
static void on_command_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rrpc__alink *l = ac->data;
    l->on_reply((const rrpc__reply *)reply, privdata, l->udata);
}

static int queue_handshake_command(rrpc__alink *l, int argc, const char **argv)
{
    if (redisAsyncCommandArgv(l->ctx, on_handshake_reply, l, argc, argv, NULL) != REDIS_OK)
        return RRPC_ENOMEM;
    l->handshake_left++;
    return RRPC_OK;
}

/* AUTH and SELECT go first in the output buffer, so every command queued
 * after them runs authenticated and in the right database. */
static int queue_handshake(rrpc__alink *l, const rrpc__url *url)
{
    int rc = RRPC_OK;
    if (url->password && url->user) {
        const char *argv[] = {"AUTH", url->user, url->password};
        rc = queue_handshake_command(l, 3, argv);
    } else if (url->password) {
        const char *argv[] = {"AUTH", url->password};
        rc = queue_handshake_command(l, 2, argv);
    }
    if (rc == RRPC_OK && url->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", url->db);
        const char *argv[] = {"SELECT", db};
        rc = queue_handshake_command(l, 2, argv);
    }
    return rc;
}

/* Creates the hiredis context and hooks it to the loop.  A failure that
 * hiredis detects at once (no such unix socket, bad address) ends here. */
static int start_context(rrpc__alink *l, struct event_base *base, const rrpc__url *url, char *err,
                         size_t errlen)
{
    l->ctx = url->path ? redisAsyncConnectUnix(url->path) : redisAsyncConnect(url->host, url->port);
    if (l->ctx == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory allocating a Redis context");
    if (l->ctx->err) {
        int rc = rrpc__fail(err, errlen, RRPC_ECONNECT, "cannot connect to %s: %s", l->where,
                            l->ctx->errstr);
        redisAsyncFree(l->ctx);
        l->ctx = NULL;
        return rc;
    }
    l->ctx->data = l;
    if (url->path == NULL)
        redisEnableKeepAlive(&l->ctx->c); /* notices a peer that vanished silently */
    if (redisLibeventAttach(l->ctx, base) != REDIS_OK ||
        redisAsyncSetConnectCallback(l->ctx, on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(l->ctx, on_disconnect) != REDIS_OK)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "cannot attach Redis to the event loop");
    return RRPC_OK;
}

/* Opens a link to the single Redis that URL (not a Sentinel one) names. */
static int open_resolved(rrpc__alink **out, struct event_base *base, const rrpc__url *url,
                         double connect_timeout_s, rrpc__alink_reply_fn on_reply,
                         rrpc__alink_event_fn on_event, void *udata, char *err, size_t errlen)
{
    rrpc__alink *l = calloc(1, sizeof *l);
    if (l == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    l->on_reply = on_reply;
    l->on_event = on_event;
    l->udata = udata;
    rrpc__url_describe(url, l->where, sizeof l->where);
    l->connect_timer = evtimer_new(base, on_connect_timeout, l);
    int rc =
        l->connect_timer ? RRPC_OK : rrpc__fail(err, errlen, RRPC_ENOMEM, "cannot create a timer");
    if (rc == RRPC_OK)
        rc = start_context(l, base, url, err, errlen);
    if (rc == RRPC_OK && queue_handshake(l, url) != RRPC_OK)
        rc = rrpc__fail(err, errlen, RRPC_ENOMEM, "cannot queue the handshake");
    if (rc != RRPC_OK) {
        l->closing = 1;
        rrpc__alink_close(l);
        return rc;
    }
    struct timeval tv =
        rrpc__timeval(connect_timeout_s > 0 ? connect_timeout_s : RRPC__DEFAULT_CONNECT_TIMEOUT_S);
    evtimer_add(l->connect_timer, &tv);
    *out = l;
    return RRPC_OK;
}

int rrpc__alink_open(rrpc__alink **out, struct event_base *base, const rrpc__url *url,
                     double connect_timeout_s, rrpc__alink_reply_fn on_reply,
                     rrpc__alink_event_fn on_event, void *udata, char *err, size_t errlen)
{
    *out = NULL;
    if (url->kind == RRPC__URL_CLUSTER)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "a Redis Cluster needs a link per master");
    if (url->kind != RRPC__URL_SENTINEL)
        return open_resolved(out, base, url, connect_timeout_s, on_reply, on_event, udata, err,
                             errlen);
    rrpc__url master;
    int rc = rrpc__sentinel_resolve(url, connect_timeout_s, &master, err, errlen);
    if (rc == RRPC_OK)
        rc = open_resolved(out, base, &master, connect_timeout_s, on_reply, on_event, udata, err,
                           errlen);
    rrpc__url_free(&master);
    return rc;
}

int rrpc__alink_command(rrpc__alink *l, int argc, const char **argv, const size_t *lens,
                        void *privdata)
{
    if (l == NULL || l->ctx == NULL || l->reported == REPORTED_LOST)
        return RRPC_ECONNECT;
    if (redisAsyncCommandArgv(l->ctx, on_command_reply, privdata, argc, argv, lens) != REDIS_OK)
        return RRPC_ECONNECT; /* hiredis refuses commands on a closing context */
    return RRPC_OK;
}

void rrpc__alink_close(rrpc__alink *l)
{
    if (l == NULL)
        return;
    l->closing = 1;
    if (l->ctx != NULL)
        redisAsyncFree(l->ctx); /* runs pending callbacks with NULL, then on_disconnect */
    l->ctx = NULL;
    if (l->connect_timer)
        event_free(l->connect_timer);
    free(l);
}
