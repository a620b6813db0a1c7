/* cluster_link.c -- the sync link over a Redis Cluster (cluster_link.h).
 *
 * One hiredis context per node, opened when a command first goes there,
 * hung on the nodes of a cluster map (cluster_map.c, which the async client
 * uses too: the node table and each slot's owner, read with CLUSTER SLOTS,
 * corrected by MOVED, and the parsing of both).  Each command is appended
 * to the context of the node that owns its key's slot and remembered,
 * with a copy of its arguments, in a FIFO; reads take replies in the
 * order commands were appended, each from its own node, so callers
 * pipeline across nodes exactly as on one Redis.  Before blocking on one
 * node every node's output is flushed, so a pipeline still costs one round
 * trip per node, in parallel.
 *
 * A MOVED reply means the map is stale: it is read again, and the command
 * is sent again to the node named, synchronously, on a short-lived side
 * connection -- the node's main context may have later commands of this
 * pipeline in flight, whose replies would come first.  ASK does the same
 * with ASKING first and leaves the map alone.  A reconnect drops every
 * context and reads the map again, which is how a master failover is
 * followed; CLUSTERDOWN, READONLY and UNBLOCKED count as a lost link
 * (conn.c) so callers take that path.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/cluster_link.h"

#include <rrpc/rrpc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrpc__cluster {
    rrpc__dial *d;     /* the link's settings and error state */
    rrpc__cmap map;    /* each node's link is its redisContext, NULL until a command goes there */
    rrpc__ccmd **fifo; /* ring buffer of commands awaiting replies */
    size_t head, count, cap;
};

/* Node I's context, or NULL. */
static redisContext *node_ctx(const rrpc__cluster *cl, size_t i)
{
    return cl->map.nodes[i].link;
}

/* Drops every node link and every command awaiting a reply. */
static void drop_links(rrpc__cluster *cl)
{
    for (size_t i = 0; i < cl->map.nnodes; i++) {
        if (node_ctx(cl, i))
            redisFree(node_ctx(cl, i));
        cl->map.nodes[i].link = NULL;
    }
    for (; cl->count > 0; cl->count--) {
        free(cl->fifo[cl->head]);
        cl->head = (cl->head + 1) % cl->cap;
    }
    cl->head = 0;
}

rrpc__cluster *rrpc__cluster_new(rrpc__dial *d)
{
    rrpc__cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return NULL;
    cl->d = d;
    rrpc__cmap_init(&cl->map);
    return cl;
}

void rrpc__cluster_free(rrpc__cluster *cl)
{
    if (cl == NULL)
        return;
    drop_links(cl);
    rrpc__cmap_free(&cl->map);
    free(cl->fifo);
    free(cl);
}

/* Asks one node for CLUSTER SLOTS on a connection of its own. */
static int ask_slots(rrpc__cluster *cl, const char *host, int port)
{
    rrpc__dial *d = cl->d;
    double t =
        d->connect_timeout_s < RRPC__PROBE_TIMEOUT_S ? d->connect_timeout_s : RRPC__PROBE_TIMEOUT_S;
    redisContext *ctx = NULL;
    int rc = rrpc__dial_ctx(d, &ctx, host, port, NULL, t);
    if (rc == RRPC_OK)
        rc = rrpc__dial_handshake(d, ctx);
    redisReply *r = rc == RRPC_OK ? redisCommand(ctx, "CLUSTER SLOTS") : NULL;
    if (rc == RRPC_OK && r == NULL)
        rc = rrpc__dial_fail(d, RRPC_ECONNECT, ctx->errstr);
    if (r != NULL) {
        char why[RRPC__ERRMSG_LEN];
        rc = rrpc__cmap_apply_slots(&cl->map, (rrpc__reply *)r, host, why, sizeof why);
        if (rc != RRPC_OK) {
            char msg[RRPC__ERRMSG_LEN];
            snprintf(msg, sizeof msg, "%s:%d gave no slot map: %.160s", host, port, why);
            rc = rrpc__dial_fail(d, rc == RRPC_EREDIS ? RRPC_ECONNECT : rc, msg);
        }
        freeReplyObject(r);
    }
    if (ctx)
        redisFree(ctx);
    return rc;
}

/* Reads the slot map from the first node that answers: the nodes already
 * known (the cluster may have grown past the seeds), then the seeds.  A
 * refused password is final. */
static int refresh(rrpc__cluster *cl)
{
    const rrpc__url *url = cl->d->url;
    const rrpc__cmap *map = &cl->map;
    size_t known = map->nnodes, tries = known + url->nnodes;
    int rc = RRPC_ECONNECT;
    for (size_t i = 0; i < tries; i++) {
        const char *host = i < known ? map->nodes[i].host : url->nodes[i - known].host;
        int port = i < known ? map->nodes[i].port : url->nodes[i - known].port;
        rc = ask_slots(cl, host, port);
        if (rc == RRPC_OK || rc == RRPC_EAUTH || rc == RRPC_ENOMEM)
            return rc;
    }
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "no Redis Cluster node gave a slot map; last: %.180s", cl->d->errmsg);
    return rrpc__dial_fail(cl->d, rc, msg);
}

int rrpc__cluster_dial(rrpc__cluster *cl)
{
    drop_links(cl);
    return refresh(cl);
}

void rrpc__cluster_take_map(rrpc__cluster *cl, rrpc__cmap *map)
{
    drop_links(cl);
    *map = cl->map;
    rrpc__cmap_init(&cl->map);
}

/* The context of node I, connected (and authenticated) on first use. */
static redisContext *connected_node(rrpc__cluster *cl, int i)
{
    rrpc__dial *d = cl->d;
    rrpc__cnode *n = &cl->map.nodes[i];
    if (n->link != NULL)
        return n->link;
    redisContext *ctx = NULL;
    int rc = rrpc__dial_ctx(d, &ctx, n->host, n->port, NULL, d->connect_timeout_s);
    if (rc == RRPC_OK)
        rc = rrpc__dial_handshake(d, ctx);
    if (rc == RRPC_OK && redisSetTimeout(ctx, rrpc__dial_timeval(d->read_timeout_s)) != REDIS_OK)
        rc = rrpc__dial_fail(d, RRPC_ECONNECT, "cannot set the socket timeout");
    if (rc != RRPC_OK) {
        if (ctx)
            redisFree(ctx);
        d->broken = 1;
        return NULL;
    }
    n->link = ctx;
    return ctx;
}

int rrpc__cluster_set_timeout(rrpc__cluster *cl)
{
    struct timeval tv = rrpc__dial_timeval(cl->d->read_timeout_s);
    for (size_t i = 0; i < cl->map.nnodes; i++)
        if (node_ctx(cl, i) && redisSetTimeout(node_ctx(cl, i), tv) != REDIS_OK)
            return rrpc__dial_fail(cl->d, RRPC_ECONNECT, "cannot set the socket timeout");
    return RRPC_OK;
}

/* Remembers a copy of the command, for reading its reply and resending. */
static int remember(rrpc__cluster *cl, int node, int argc, const char **argv, const size_t *lens)
{
    if (cl->count == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 16;
        rrpc__ccmd **fifo = malloc(cap * sizeof *fifo);
        if (fifo == NULL)
            return RRPC_ENOMEM;
        for (size_t i = 0; i < cl->count; i++)
            fifo[i] = cl->fifo[(cl->head + i) % cl->cap];
        free(cl->fifo);
        cl->fifo = fifo;
        cl->cap = cap;
        cl->head = 0;
    }
    rrpc__ccmd *p = rrpc__ccmd_new(argc, argv, lens);
    if (p == NULL)
        return RRPC_ENOMEM;
    p->node = node;
    cl->fifo[(cl->head + cl->count++) % cl->cap] = p;
    return RRPC_OK;
}

static int append_at(rrpc__cluster *cl, int node, int argc, const char **argv, const size_t *lens);

int rrpc__cluster_append(rrpc__cluster *cl, int argc, const char **argv, const size_t *lens)
{
    return append_at(cl, rrpc__cmap_route(&cl->map, argc, argv, lens), argc, argv, lens);
}

int rrpc__cluster_append_routed(rrpc__cluster *cl, const char *route, int argc, const char **argv,
                                const size_t *lens)
{
    const char *probe[] = {"GET", route}; /* routed as a command on ROUTE would be */
    return append_at(cl, rrpc__cmap_route(&cl->map, 2, probe, NULL), argc, argv, lens);
}

static int append_at(rrpc__cluster *cl, int node, int argc, const char **argv, const size_t *lens)
{
    redisContext *ctx = connected_node(cl, node);
    if (ctx == NULL) {
        /* Like a command queued on a link that then breaks: the link is
         * broken and the next read reports it, so callers take their usual
         * reconnect path (which backs off while a failover is under way). */
        return RRPC_OK;
    }
    if (rrpc__dial_append(ctx, argc, argv, lens) != REDIS_OK ||
        remember(cl, node, argc, argv, lens) != RRPC_OK) {
        /* A command in the output buffer without its record would shift
         * every later reply: the link cannot be trusted any more. */
        return rrpc__dial_fail(cl->d, RRPC_ECONNECT,
                               "out of memory queueing a Redis Cluster command");
    }
    return RRPC_OK;
}

/* Writes every node's output buffer, so all nodes work on the pipeline
 * while we wait for the first reply. */
static int flush(rrpc__cluster *cl)
{
    for (size_t i = 0; i < cl->map.nnodes; i++) {
        redisContext *ctx = node_ctx(cl, i);
        int done = ctx == NULL;
        while (!done)
            if (redisBufferWrite(ctx, &done) != REDIS_OK)
                return rrpc__dial_fail(cl->d, RRPC_ECONNECT, ctx->errstr);
    }
    return RRPC_OK;
}

/* Sends P again to host:port on a side connection (ASKING first if ASK)
 * and returns its reply, or NULL with the link broken. */
static redisReply *resend(rrpc__cluster *cl, const rrpc__ccmd *p, const char *host, int port,
                          int asking)
{
    rrpc__dial *d = cl->d;
    redisContext *ctx = NULL;
    redisReply *r = NULL;
    int rc = rrpc__dial_ctx(d, &ctx, host, port, NULL, d->connect_timeout_s);
    if (rc == RRPC_OK)
        rc = rrpc__dial_handshake(d, ctx);
    if (rc == RRPC_OK && asking) {
        const char *argv[] = {"ASKING"};
        rc = rrpc__dial_command(d, ctx, 1, argv, RRPC_EREDIS);
    }
    if (rc == RRPC_OK && redisSetTimeout(ctx, rrpc__dial_timeval(d->read_timeout_s)) != REDIS_OK)
        rc = RRPC_ECONNECT;
    if (rc == RRPC_OK) {
        r = redisCommandArgv(ctx, p->argc, p->argv, p->lens);
        if (r == NULL)
            rrpc__dial_fail(d, RRPC_ECONNECT, ctx->errstr);
    }
    if (ctx)
        redisFree(ctx);
    if (r == NULL)
        d->broken = 1;
    return r;
}

/* Follows MOVED and ASK for the command P whose reply is *R.  A
 * redirection that does not parse is handed to the caller as the error
 * it is, like the last one after too many hops. */
static int follow(rrpc__cluster *cl, const rrpc__ccmd *p, redisReply **r)
{
    rrpc__redirect rd;
    int hops = 0;
    while (rrpc__redirect_parse((rrpc__reply *)*r, &rd, NULL, 0) > 0) {
        if (++hops > RRPC__CLUSTER_MAX_REDIRECTS)
            return RRPC_OK;
        if (rd.kind == RRPC__REDIRECT_MOVED) {
            /* The map is stale: read it again; meanwhile trust the reply. */
            rrpc__cmap_redirect(&cl->map, &rd);
            int broken = cl->d->broken; /* a node that fails to answer does not break us */
            refresh(cl);                /* best effort: the next MOVED tries again */
            cl->d->broken = broken;
            cl->d->errmsg[0] = '\0';
        }
        freeReplyObject(*r);
        *r = resend(cl, p, rd.host, rd.port, rd.kind == RRPC__REDIRECT_ASK);
        if (*r == NULL)
            return RRPC_ECONNECT;
    }
    return RRPC_OK;
}

int rrpc__cluster_read(rrpc__cluster *cl, void **out)
{
    if (cl->count == 0)
        return rrpc__dial_fail(cl->d, RRPC_EINVAL, "no Redis command awaits a reply");
    int rc = flush(cl);
    if (rc != RRPC_OK)
        return rc;
    rrpc__ccmd *p = cl->fifo[cl->head];
    cl->head = (cl->head + 1) % cl->cap;
    cl->count--;
    redisContext *ctx = node_ctx(cl, (size_t)p->node);
    void *reply = NULL;
    if (redisGetReply(ctx, &reply) != REDIS_OK) {
        int saved = errno; /* rrpc__dial_lost tells a timeout by it */
        char who[RRPC__ERRMSG_LEN];
        snprintf(who, sizeof who, "Redis Cluster node %s:%d", cl->map.nodes[p->node].host,
                 cl->map.nodes[p->node].port);
        free(p);
        errno = saved;
        return rrpc__dial_lost(cl->d, ctx, who);
    }
    redisReply *r = reply;
    rc = follow(cl, p, &r);
    *out = r;
    free(p);
    return rc;
}

int rrpc__cluster_peer_closed(const rrpc__cluster *cl)
{
    for (size_t i = 0; i < cl->map.nnodes; i++) {
        const redisContext *ctx = node_ctx(cl, i);
        if (ctx != NULL && rrpc__dial_peer_closed(ctx))
            return 1;
    }
    return 0;
}
