/* conn.c -- the sync link to Redis (conn.h).
 *
 * Everything above this file sees rrpc__conn and rrpc__reply only, so a
 * later hiredis (with TLS, RESP3 or its own timeouts) can replace 0.14.1
 * below it without touching the public API.  A link is one of three
 * kinds, by its URL: a plain connection (TCP or unix socket); a master
 * found through Sentinels (sentinel.c), dialled again on every reconnect
 * so that a failover is followed; or a Redis Cluster (cluster_link.c),
 * one context per node.  What they share -- contexts, the handshake, RESP,
 * the error state -- is dial.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/conn.h"

#include "core/clock.h"
#include "core/defaults.h"
#include "core/internal.h"
#include "redis/cluster_link.h"
#include "redis/dial.h"
#include "redis/sentinel.h"

#include <hiredis/hiredis.h>

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrpc__conn {
    redisContext *ctx;  /* NULL in cluster mode, which has one per node */
    rrpc__cluster *cl;  /* cluster mode only */
    rrpc__url url;      /* owned copy, replayed on reconnect */
    rrpc__dial d;       /* timeouts and error state; d.url is &url */
    rrpc__sentinel sen; /* Sentinel mode: where the master was found */
};

static int fail(rrpc__conn *c, int err, const char *what)
{
    return rrpc__dial_fail(&c->d, err, what);
}

static int dial_direct(rrpc__conn *c)
{
    if (c->ctx != NULL)
        redisFree(c->ctx);
    int rc = rrpc__dial_ctx(&c->d, &c->ctx, c->url.host, c->url.port, c->url.path,
                            c->d.connect_timeout_s);
    return rc == RRPC_OK ? rrpc__dial_handshake(&c->d, c->ctx) : rc;
}

static int dial_cluster(rrpc__conn *c)
{
    if (c->cl == NULL && (c->cl = rrpc__cluster_new(&c->d)) == NULL)
        return fail(c, RRPC_ENOMEM, "out of memory");
    return rrpc__cluster_dial(c->cl);
}

static int dial(rrpc__conn *c)
{
    int rc;
    if (c->url.kind == RRPC__URL_SENTINEL)
        rc = rrpc__sentinel_dial(&c->d, &c->sen, &c->ctx);
    else if (c->url.kind == RRPC__URL_CLUSTER)
        rc = dial_cluster(c);
    else
        rc = dial_direct(c);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(c, c->d.read_timeout_s);
    c->d.broken = rc != RRPC_OK;
    return rc;
}

void rrpc__ignore_sigpipe(void)
{
    /* hiredis writes with write(2): a peer that vanished would raise
     * SIGPIPE and kill the process.  Only a default disposition is changed,
     * so an application's own handler stays in place. */
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

int rrpc__conn_open(rrpc__conn **out, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen)
{
    *out = NULL;
    rrpc__ignore_sigpipe();
    rrpc__conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    c->d.url = &c->url;
    c->d.connect_timeout_s = rrpc__timeout_or(connect_timeout_s, RRPC__DEFAULT_CONNECT_TIMEOUT_S);
    int rc = rrpc__url_copy(&c->url, url);
    if (rc == RRPC_OK)
        rc = dial(c);
    if (rc != RRPC_OK) {
        rrpc__fail(err, errlen, rc, "%s", c->d.errmsg[0] ? c->d.errmsg : rrpc_strerror(rc));
        rrpc__conn_close(c);
        return rc;
    }
    *out = c;
    return RRPC_OK;
}

void rrpc__conn_close(rrpc__conn *c)
{
    if (c == NULL)
        return;
    if (c->ctx)
        redisFree(c->ctx);
    rrpc__cluster_free(c->cl);
    rrpc__url_free(&c->url);
    rrpc__sentinel_free(&c->sen);
    free(c);
}

int rrpc__conn_reconnect(rrpc__conn *c)
{
    return dial(c);
}

int rrpc__conn_reconnect_within(rrpc__conn *c, double limit_s)
{
    double saved = c->d.connect_timeout_s;
    if (limit_s > 0 && limit_s < saved)
        c->d.connect_timeout_s = limit_s;
    int rc = dial(c);
    c->d.connect_timeout_s = saved;
    return rc;
}

int rrpc__sentinel_resolve(const rrpc__url *url, double connect_timeout_s, rrpc__url *direct,
                           char *err, size_t errlen)
{
    memset(direct, 0, sizeof *direct);
    rrpc__conn *c = NULL;
    int rc = rrpc__conn_open(&c, url, connect_timeout_s, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    rrpc__url plain = {0};
    plain.kind = RRPC__URL_DIRECT;
    plain.host = c->sen.master_host;
    plain.port = c->sen.master_port;
    plain.user = url->user;
    plain.password = url->password;
    plain.db = url->db;
    rc = rrpc__url_copy(direct, &plain); /* borrowed strings, so copy them */
    rrpc__conn_close(c);
    return rc == RRPC_OK ? rc : rrpc__fail(err, errlen, rc, "out of memory");
}

int rrpc__cluster_read_map(const rrpc__url *url, double connect_timeout_s, rrpc__cmap *map,
                           char *err, size_t errlen)
{
    rrpc__cmap_init(map);
    if (url->kind != RRPC__URL_CLUSTER)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "not a redis+cluster:// URL");
    rrpc__conn *c = NULL;
    int rc = rrpc__conn_open(&c, url, connect_timeout_s, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    /* The map changes hands without its contexts (a dial opens none, but
     * the caller's links are its own). */
    rrpc__cluster_take_map(c->cl, map);
    rrpc__conn_close(c);
    return RRPC_OK;
}

int rrpc__conn_set_timeout(rrpc__conn *c, double seconds)
{
    c->d.read_timeout_s = rrpc__timeout_or(seconds, 0);
    if (c->cl != NULL)
        return rrpc__cluster_set_timeout(c->cl);
    if (redisSetTimeout(c->ctx, rrpc__dial_timeval(c->d.read_timeout_s)) != REDIS_OK)
        return fail(c, RRPC_ECONNECT, "cannot set the socket timeout");
    return RRPC_OK;
}

int rrpc__conn_append(rrpc__conn *c, int argc, const char **argv, const size_t *lens)
{
    if (c->d.broken)
        return fail(c, RRPC_ECONNECT, c->d.errmsg[0] ? c->d.errmsg : "connection is broken");
    if (c->cl != NULL)
        return rrpc__cluster_append(c->cl, argc, argv, lens);
    if (rrpc__dial_append(c->ctx, argc, argv, lens) != REDIS_OK)
        return fail(c, RRPC_ENOMEM, "cannot queue a Redis command");
    return RRPC_OK;
}

int rrpc__conn_append_routed(rrpc__conn *c, const char *route, int argc, const char **argv,
                             const size_t *lens)
{
    if (c->cl == NULL || c->d.broken)
        return rrpc__conn_append(c, argc, argv, lens);
    return rrpc__cluster_append_routed(c->cl, route, argc, argv, lens);
}

int rrpc__conn_appendv(rrpc__conn *c, int argc, ...)
{
    const char *argv[8];
    if (argc > 8)
        return RRPC_EINVAL;
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, const char *);
    va_end(ap);
    return rrpc__conn_append(c, argc, argv, NULL);
}

/* Nonzero for the errors of a master that became a replica under us:
 * writes are refused (READONLY) and blocked pops are cut off (UNBLOCKED);
 * or of a cluster that lost slots (CLUSTERDOWN).  With Sentinel or Cluster
 * that means "dial again", exactly like a lost link. */
static int demoted(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "UNBLOCKED", 9) == 0 ||
            strncmp(r->str, "CLUSTERDOWN", 11) == 0);
}

int rrpc__conn_read(rrpc__conn *c, rrpc__reply **out)
{
    *out = NULL;
    if (c->d.broken)
        return fail(c, RRPC_ECONNECT, c->d.errmsg[0] ? c->d.errmsg : "connection is broken");
    void *reply = NULL;
    if (c->cl != NULL) {
        int rc = rrpc__cluster_read(c->cl, &reply);
        if (rc != RRPC_OK)
            return rc;
    } else if (redisGetReply(c->ctx, &reply) != REDIS_OK) {
        return rrpc__dial_lost(&c->d, c->ctx, "Redis connection");
    }
    if (c->url.kind != RRPC__URL_DIRECT && demoted(reply)) {
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "the master changed: %.200s", ((redisReply *)reply)->str);
        freeReplyObject(reply);
        return fail(c, RRPC_ECONNECT, msg);
    }
    *out = (rrpc__reply *)reply;
    return RRPC_OK;
}

const char *rrpc__conn_errmsg(const rrpc__conn *c)
{
    return c->d.errmsg;
}

int rrpc__conn_broken(const rrpc__conn *c)
{
    return c->d.broken;
}

int rrpc__conn_mend_if_closed(rrpc__conn *c)
{
    if (!rrpc__conn_broken(c) && !rrpc__conn_peer_closed(c))
        return RRPC_OK;
    return rrpc__conn_reconnect(c);
}

int rrpc__conn_peer_closed(const rrpc__conn *c)
{
    /* Only meaningful with no reply outstanding: then anything readable
     * is an EOF or an error (Redis closed an idle link, or restarted). */
    if (c->cl != NULL)
        return rrpc__cluster_peer_closed(c->cl);
    return rrpc__dial_peer_closed(c->ctx);
}

/* ---- Redis's clock ------------------------------------------------------ */

int rrpc__clock_sync(rrpc__clock *c, rrpc__conn *conn)
{
    double sent_ms = rrpc__now() * 1000.0;
    rrpc__reply *r = NULL;
    int rc = rrpc__conn_appendv(conn, 1, "TIME");
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(conn, &r);
    if (rc == RRPC_OK)
        rc = rrpc__clock_parse_time(c, r, sent_ms);
    rrpc__reply_free(r);
    return rc;
}
