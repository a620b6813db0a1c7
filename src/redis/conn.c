/* transport.c -- the one module that speaks hiredis.
 *
 * Everything above this file sees rrpc__conn and rrpc__reply only, so a
 * later hiredis (with TLS, RESP3 or its own timeouts) can replace 0.14.1
 * here without touching the public API.  Two 0.14.1 quirks shape it: a read
 * timeout leaves the context dead until redisReconnect, and AUTH/SELECT
 * must be replayed by hand after every reconnect.
 *
 * Growing past one machine happens here too, so that the client, the
 * server and the async client keep working unchanged:
 * - Sentinel (redis+sentinel:// URLs): every dial asks the Sentinels, in
 *   turn, for the master's address, connects there and checks with ROLE that
 *   it really is the master.  A reconnect dials again, so after a failover
 *   the callers' usual reconnect paths land on the new master.  A demoted
 *   master answering READONLY or UNBLOCKED counts as a lost link for the
 *   same reason.
 * - Cluster (redis+cluster:// URLs): one context per node and routing by
 *   hash slot, described where that code starts below.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/defaults.h"
#include "core/internal.h"

#include "redis/cluster_map.h"
#include "redis/conn.h"
#include "core/url.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* How long one Sentinel may take to answer, at most: a dead Sentinel must
 * not eat the whole connect timeout while others are up. */
#define SENTINEL_TIMEOUT_S 1.0

struct cluster;

struct rrpc__conn {
    redisContext *ctx;  /* NULL in cluster mode, which has one per node */
    struct cluster *cl; /* cluster mode only */
    rrpc__url url;      /* owned copy, replayed on reconnect */
    double connect_timeout_s;
    double read_timeout_s;
    int broken;
    size_t sentinel_first; /* the Sentinel that answered last is asked first */
    char *master_host;     /* Sentinel: where the master was found, or NULL */
    int master_port;
    char errmsg[RRPC__ERRMSG_LEN];
};

/* rrpc__reply is redisReply itself; the cast stays inside this file. */
static redisReply *R(const rrpc__reply *r)
{
    return (redisReply *)r;
}

static struct timeval to_timeval(double s)
{
    struct timeval tv;
    s = rrpc__timeout_or(s, 0); /* NaN or huge: no undefined conversion */
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

static int fail(rrpc__conn *c, int err, const char *what)
{
    if (what != c->errmsg) /* "still broken" passes the old message itself */
        snprintf(c->errmsg, sizeof c->errmsg, "%s", what);
    if (err == RRPC_ECONNECT || err == RRPC_ETIMEDOUT)
        c->broken = 1;
    return err;
}

/* Runs one command synchronously on CTX and checks it did not fail. */
static int simple_command(rrpc__conn *c, redisContext *ctx, int argc, const char **argv,
                          int err_code)
{
    redisReply *r = redisCommandArgv(ctx, argc, argv, NULL);
    if (r == NULL)
        return fail(c, RRPC_ECONNECT, ctx->errstr);
    int rc = RRPC_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed: %s", argv[0], r->str);
        rc = err_code;
    }
    freeReplyObject(r);
    return rc;
}

/* AUTH with USER (may be NULL) and PASSWORD, if there is a password. */
static int auth(rrpc__conn *c, redisContext *ctx, const char *user, const char *password)
{
    if (password && user) {
        const char *argv[] = {"AUTH", user, password};
        return simple_command(c, ctx, 3, argv, RRPC_EAUTH);
    }
    if (password) {
        const char *argv[] = {"AUTH", password};
        return simple_command(c, ctx, 2, argv, RRPC_EAUTH);
    }
    return RRPC_OK;
}

/* AUTH and SELECT, which every new link needs. */
static int handshake(rrpc__conn *c, redisContext *ctx)
{
    int rc = auth(c, ctx, c->url.user, c->url.password);
    if (rc == RRPC_OK && c->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->url.db);
        const char *argv[] = {"SELECT", db};
        rc = simple_command(c, ctx, 2, argv, RRPC_EAUTH);
    }
    return rc;
}

/* Opens *ctx to host:port (or the unix socket PATH) with TIMEOUT_S for the
 * connect and every reply until the caller sets its own.  On failure *ctx
 * may still hold the failed context (the caller frees it). */
static int new_ctx(rrpc__conn *c, redisContext **ctx, const char *host, int port, const char *path,
                   double timeout_s)
{
    struct timeval tv = to_timeval(timeout_s);
    *ctx = path ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(host, port, tv);
    if (*ctx == NULL)
        return fail(c, RRPC_ENOMEM, "out of memory allocating a Redis context");
    if ((*ctx)->err) {
        char msg[RRPC__ERRMSG_LEN];
        if (path)
            snprintf(msg, sizeof msg, "cannot connect to unix://%s: %s", path, (*ctx)->errstr);
        else
            snprintf(msg, sizeof msg, "cannot connect to %s:%d: %s", host, port, (*ctx)->errstr);
        return fail(c, RRPC_ECONNECT, msg);
    }
    /* The handshake must not hang on a server that accepts but never talks. */
    redisSetTimeout(*ctx, tv);
    return RRPC_OK;
}

/* new_ctx for c->ctx, replacing the old one. */
static int connect_ctx(rrpc__conn *c, const char *host, int port, const char *path,
                       double timeout_s)
{
    if (c->ctx != NULL)
        redisFree(c->ctx);
    return new_ctx(c, &c->ctx, host, port, path, timeout_s);
}

/* Asks Sentinel A for the master's address: *host (new) and *port. */
static int ask_sentinel(rrpc__conn *c, const rrpc__addr *a, char **host, int *port)
{
    double t =
        c->connect_timeout_s < SENTINEL_TIMEOUT_S ? c->connect_timeout_s : SENTINEL_TIMEOUT_S;
    int rc = connect_ctx(c, a->host, a->port, NULL, t);
    if (rc == RRPC_OK)
        rc = auth(c, c->ctx, c->url.sentinel_user, c->url.sentinel_password);
    if (rc != RRPC_OK)
        return rc;
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", c->url.master};
    redisReply *r = redisCommandArgv(c->ctx, 3, argv, NULL);
    char msg[RRPC__ERRMSG_LEN];
    if (r == NULL) {
        snprintf(msg, sizeof msg, "Sentinel %s:%d: %s", a->host, a->port, c->ctx->errstr);
        return fail(c, RRPC_ECONNECT, msg);
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        *port = atoi(r->element[1]->str);
        *host = strdup(r->element[0]->str);
        rc = *host ? RRPC_OK : fail(c, RRPC_ENOMEM, "out of memory");
    } else {
        snprintf(msg, sizeof msg, "Sentinel %s:%d does not know master '%s'%s%s", a->host, a->port,
                 c->url.master, r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        rc = fail(c, RRPC_ECONNECT, msg);
    }
    freeReplyObject(r);
    return rc;
}

/* Checks with ROLE that the node on c->ctx is a master: right after a
 * failover a Sentinel may still name the old one, now a replica. */
static int check_master(rrpc__conn *c, const char *host, int port)
{
    redisReply *r = redisCommand(c->ctx, "ROLE");
    if (r == NULL)
        return fail(c, RRPC_ECONNECT, c->ctx->errstr);
    int is_master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                    r->element[0]->type == REDIS_REPLY_STRING &&
                    strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    if (is_master)
        return RRPC_OK;
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s:%d, named master '%s' by a Sentinel, is not a master", host, port,
             c->url.master);
    return fail(c, RRPC_ECONNECT, msg);
}

/* Finds the master through the Sentinels, starting with the one that
 * answered last, and connects to it.  A password the master refuses is
 * final; any other failure moves on to the next Sentinel. */
static int dial_sentinel(rrpc__conn *c)
{
    int rc = RRPC_ECONNECT;
    for (size_t k = 0; k < c->url.nnodes; k++) {
        size_t i = (c->sentinel_first + k) % c->url.nnodes;
        char *host = NULL;
        int port = 0;
        rc = ask_sentinel(c, &c->url.nodes[i], &host, &port);
        int at_master = rc == RRPC_OK;
        if (rc == RRPC_OK)
            rc = connect_ctx(c, host, port, NULL, c->connect_timeout_s);
        if (rc == RRPC_OK)
            rc = handshake(c, c->ctx);
        if (rc == RRPC_OK)
            rc = check_master(c, host, port);
        if (rc == RRPC_OK) {
            c->sentinel_first = i;
            free(c->master_host);
            c->master_host = host;
            c->master_port = port;
            return RRPC_OK;
        }
        free(host);
        if (rc == RRPC_ENOMEM || (rc == RRPC_EAUTH && at_master))
            return rc;
    }
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "no usable master '%s' from %zu Sentinel(s); last: %.160s",
             c->url.master, c->url.nnodes, c->errmsg);
    return fail(c, rc == RRPC_EAUTH ? RRPC_EAUTH : RRPC_ECONNECT, msg);
}

/* ---- Redis Cluster ------------------------------------------------------
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
 * followed; CLUSTERDOWN, READONLY and UNBLOCKED count as a lost link so
 * callers take that path. */

struct cluster {
    rrpc__cmap map;    /* each node's link is its redisContext, NULL until a command goes there */
    rrpc__ccmd **fifo; /* ring buffer of commands awaiting replies */
    size_t head, count, cap;
};

/* Node I's context, or NULL. */
static redisContext *node_ctx(const struct cluster *cl, size_t i)
{
    return cl->map.nodes[i].link;
}

/* Drops every node link and every command awaiting a reply. */
static void cluster_drop_links(struct cluster *cl)
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

static void cluster_free(struct cluster *cl)
{
    if (cl == NULL)
        return;
    cluster_drop_links(cl);
    rrpc__cmap_free(&cl->map);
    free(cl->fifo);
    free(cl);
}

/* Asks one node for CLUSTER SLOTS on a connection of its own. */
static int cluster_ask_slots(rrpc__conn *c, const char *host, int port)
{
    double t =
        c->connect_timeout_s < SENTINEL_TIMEOUT_S ? c->connect_timeout_s : SENTINEL_TIMEOUT_S;
    redisContext *ctx = NULL;
    int rc = new_ctx(c, &ctx, host, port, NULL, t);
    if (rc == RRPC_OK)
        rc = handshake(c, ctx);
    redisReply *r = rc == RRPC_OK ? redisCommand(ctx, "CLUSTER SLOTS") : NULL;
    if (rc == RRPC_OK && r == NULL)
        rc = fail(c, RRPC_ECONNECT, ctx->errstr);
    if (r != NULL) {
        char why[RRPC__ERRMSG_LEN];
        rc = rrpc__cmap_apply_slots(&c->cl->map, (rrpc__reply *)r, host, why, sizeof why);
        if (rc != RRPC_OK) {
            char msg[RRPC__ERRMSG_LEN];
            snprintf(msg, sizeof msg, "%s:%d gave no slot map: %.160s", host, port, why);
            rc = fail(c, rc == RRPC_EREDIS ? RRPC_ECONNECT : rc, msg);
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
static int cluster_refresh(rrpc__conn *c)
{
    const rrpc__cmap *map = &c->cl->map;
    size_t known = map->nnodes, tries = known + c->url.nnodes;
    int rc = RRPC_ECONNECT;
    for (size_t i = 0; i < tries; i++) {
        const char *host = i < known ? map->nodes[i].host : c->url.nodes[i - known].host;
        int port = i < known ? map->nodes[i].port : c->url.nodes[i - known].port;
        rc = cluster_ask_slots(c, host, port);
        if (rc == RRPC_OK || rc == RRPC_EAUTH || rc == RRPC_ENOMEM)
            return rc;
    }
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "no Redis Cluster node gave a slot map; last: %.180s", c->errmsg);
    return fail(c, rc, msg);
}

static int cluster_dial(rrpc__conn *c)
{
    if (c->cl == NULL) {
        c->cl = calloc(1, sizeof *c->cl);
        if (c->cl == NULL)
            return fail(c, RRPC_ENOMEM, "out of memory");
        rrpc__cmap_init(&c->cl->map);
    }
    cluster_drop_links(c->cl);
    return cluster_refresh(c);
}

/* The context of node I, connected (and authenticated) on first use. */
static redisContext *cluster_ctx(rrpc__conn *c, int i)
{
    rrpc__cnode *n = &c->cl->map.nodes[i];
    if (n->link != NULL)
        return n->link;
    redisContext *ctx = NULL;
    int rc = new_ctx(c, &ctx, n->host, n->port, NULL, c->connect_timeout_s);
    if (rc == RRPC_OK)
        rc = handshake(c, ctx);
    if (rc == RRPC_OK && redisSetTimeout(ctx, to_timeval(c->read_timeout_s)) != REDIS_OK)
        rc = fail(c, RRPC_ECONNECT, "cannot set the socket timeout");
    if (rc != RRPC_OK) {
        if (ctx)
            redisFree(ctx);
        c->broken = 1;
        return NULL;
    }
    n->link = ctx;
    return ctx;
}

static int cluster_set_timeout(rrpc__conn *c)
{
    struct timeval tv = to_timeval(c->read_timeout_s);
    for (size_t i = 0; i < c->cl->map.nnodes; i++)
        if (node_ctx(c->cl, i) && redisSetTimeout(node_ctx(c->cl, i), tv) != REDIS_OK)
            return fail(c, RRPC_ECONNECT, "cannot set the socket timeout");
    return RRPC_OK;
}

/* Remembers a copy of the command, for reading its reply and resending. */
static int cluster_remember(struct cluster *cl, int node, int argc, const char **argv,
                            const size_t *lens)
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

/* Writes the decimal text of N at P; returns the length. */
static size_t put_size(char *p, size_t n)
{
    char tmp[24];
    size_t len = 0;
    do {
        tmp[len++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (size_t i = 0; i < len; i++)
        p[i] = tmp[len - 1 - i];
    return len;
}

/* Queues a command in RESP formatted by hand.  hiredis 0.14 formats
 * through sdscatfmt, which costs a worker several thousand instructions
 * per command, an eighth of all it spends on a call (PERFORMANCE.md). */
static int append_command(redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    size_t total = 16;
    for (int i = 0; i < argc; i++)
        total += (lens ? lens[i] : strlen(argv[i])) + 32;
    char stack[2048];
    char *buf = total <= sizeof stack ? stack : malloc(total);
    if (buf == NULL)
        return REDIS_ERR;
    char *p = buf;
    *p++ = '*';
    p += put_size(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        *p++ = '$';
        p += put_size(p, len);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    int rc = redisAppendFormattedCommand(ctx, buf, (size_t)(p - buf));
    if (buf != stack)
        free(buf);
    return rc;
}

static int cluster_append(rrpc__conn *c, int argc, const char **argv, const size_t *lens)
{
    int node = rrpc__cmap_route(&c->cl->map, argc, argv, lens);
    redisContext *ctx = cluster_ctx(c, node);
    if (ctx == NULL) {
        /* Like a command queued on a link that then breaks: the conn is
         * broken and the next read reports it, so callers take their usual
         * reconnect path (which backs off while a failover is under way). */
        return RRPC_OK;
    }
    if (append_command(ctx, argc, argv, lens) != REDIS_OK ||
        cluster_remember(c->cl, node, argc, argv, lens) != RRPC_OK) {
        /* A command in the output buffer without its record would shift
         * every later reply: the link cannot be trusted any more. */
        return fail(c, RRPC_ECONNECT, "out of memory queueing a Redis Cluster command");
    }
    return RRPC_OK;
}

/* Writes every node's output buffer, so all nodes work on the pipeline
 * while we wait for the first reply. */
static int cluster_flush(rrpc__conn *c)
{
    for (size_t i = 0; i < c->cl->map.nnodes; i++) {
        redisContext *ctx = node_ctx(c->cl, i);
        int done = ctx == NULL;
        while (!done)
            if (redisBufferWrite(ctx, &done) != REDIS_OK)
                return fail(c, RRPC_ECONNECT, ctx->errstr);
    }
    return RRPC_OK;
}

/* Sends P again to host:port on a side connection (ASKING first if ASK)
 * and returns its reply, or NULL with the conn broken. */
static redisReply *cluster_resend(rrpc__conn *c, const rrpc__ccmd *p, const char *host, int port,
                                  int asking)
{
    redisContext *ctx = NULL;
    redisReply *r = NULL;
    int rc = new_ctx(c, &ctx, host, port, NULL, c->connect_timeout_s);
    if (rc == RRPC_OK)
        rc = handshake(c, ctx);
    if (rc == RRPC_OK && asking) {
        const char *argv[] = {"ASKING"};
        rc = simple_command(c, ctx, 1, argv, RRPC_EREDIS);
    }
    if (rc == RRPC_OK && redisSetTimeout(ctx, to_timeval(c->read_timeout_s)) != REDIS_OK)
        rc = RRPC_ECONNECT;
    if (rc == RRPC_OK) {
        r = redisCommandArgv(ctx, p->argc, p->argv, p->lens);
        if (r == NULL)
            fail(c, RRPC_ECONNECT, ctx->errstr);
    }
    if (ctx)
        redisFree(ctx);
    if (r == NULL)
        c->broken = 1;
    return r;
}

/* Follows MOVED and ASK for the command P whose reply is *R.  A
 * redirection that does not parse is handed to the caller as the error
 * it is, like the last one after too many hops. */
static int cluster_follow(rrpc__conn *c, const rrpc__ccmd *p, redisReply **r)
{
    rrpc__redirect rd;
    int hops = 0;
    while (rrpc__redirect_parse((rrpc__reply *)*r, &rd, NULL, 0) > 0) {
        if (++hops > RRPC__CLUSTER_MAX_REDIRECTS)
            return RRPC_OK;
        if (rd.kind == RRPC__REDIRECT_MOVED) {
            /* The map is stale: read it again; meanwhile trust the reply. */
            rrpc__cmap_redirect(&c->cl->map, &rd);
            int broken = c->broken; /* a node that fails to answer does not break us */
            cluster_refresh(c);     /* best effort: the next MOVED tries again */
            c->broken = broken;
            c->errmsg[0] = '\0';
        }
        freeReplyObject(*r);
        *r = cluster_resend(c, p, rd.host, rd.port, rd.kind == RRPC__REDIRECT_ASK);
        if (*r == NULL)
            return RRPC_ECONNECT;
    }
    return RRPC_OK;
}

static int cluster_read(rrpc__conn *c, redisReply **out)
{
    struct cluster *cl = c->cl;
    if (cl->count == 0)
        return fail(c, RRPC_EINVAL, "no Redis command awaits a reply");
    int rc = cluster_flush(c);
    if (rc != RRPC_OK)
        return rc;
    rrpc__ccmd *p = cl->fifo[cl->head];
    cl->head = (cl->head + 1) % cl->cap;
    cl->count--;
    redisContext *ctx = node_ctx(cl, (size_t)p->node);
    void *reply = NULL;
    if (redisGetReply(ctx, &reply) != REDIS_OK) {
        int timed_out = ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "Redis Cluster node %s:%d: %s", cl->map.nodes[p->node].host,
                 cl->map.nodes[p->node].port, timed_out ? "read timed out" : ctx->errstr);
        free(p);
        return fail(c, timed_out ? RRPC_ETIMEDOUT : RRPC_ECONNECT, msg);
    }
    *out = reply;
    rc = cluster_follow(c, p, out);
    free(p);
    return rc;
}

static int cluster_peer_closed(const rrpc__conn *c)
{
    for (size_t i = 0; i < c->cl->map.nnodes; i++) {
        const redisContext *ctx = node_ctx(c->cl, i);
        if (ctx == NULL)
            continue;
        struct pollfd p = {ctx->fd, POLLIN, 0};
        char byte;
        if (poll(&p, 1, 0) > 0 && recv(ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
            return 1;
    }
    return 0;
}

static int dial(rrpc__conn *c)
{
    int rc;
    if (c->url.kind == RRPC__URL_SENTINEL) {
        rc = dial_sentinel(c);
    } else if (c->url.kind == RRPC__URL_CLUSTER) {
        rc = cluster_dial(c);
    } else {
        rc = connect_ctx(c, c->url.host, c->url.port, c->url.path, c->connect_timeout_s);
        if (rc == RRPC_OK)
            rc = handshake(c, c->ctx);
    }
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(c, c->read_timeout_s);
    c->broken = rc != RRPC_OK;
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
    c->connect_timeout_s = rrpc__timeout_or(connect_timeout_s, RRPC__DEFAULT_CONNECT_TIMEOUT_S);
    int rc = rrpc__url_copy(&c->url, url);
    if (rc == RRPC_OK)
        rc = dial(c);
    if (rc != RRPC_OK) {
        rrpc__fail(err, errlen, rc, "%s", c->errmsg[0] ? c->errmsg : rrpc_strerror(rc));
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
    cluster_free(c->cl);
    rrpc__url_free(&c->url);
    free(c->master_host);
    free(c);
}

int rrpc__conn_reconnect(rrpc__conn *c)
{
    return dial(c);
}

int rrpc__conn_reconnect_within(rrpc__conn *c, double limit_s)
{
    double saved = c->connect_timeout_s;
    if (limit_s > 0 && limit_s < saved)
        c->connect_timeout_s = limit_s;
    int rc = dial(c);
    c->connect_timeout_s = saved;
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
    plain.host = c->master_host;
    plain.port = c->master_port;
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
    cluster_drop_links(c->cl);
    *map = c->cl->map;
    rrpc__cmap_init(&c->cl->map);
    rrpc__conn_close(c);
    return RRPC_OK;
}

int rrpc__conn_set_timeout(rrpc__conn *c, double seconds)
{
    c->read_timeout_s = rrpc__timeout_or(seconds, 0);
    if (c->cl != NULL)
        return cluster_set_timeout(c);
    struct timeval tv = to_timeval(c->read_timeout_s);
    if (redisSetTimeout(c->ctx, tv) != REDIS_OK)
        return fail(c, RRPC_ECONNECT, "cannot set the socket timeout");
    return RRPC_OK;
}

int rrpc__conn_append(rrpc__conn *c, int argc, const char **argv, const size_t *lens)
{
    if (c->broken)
        return fail(c, RRPC_ECONNECT, c->errmsg[0] ? c->errmsg : "connection is broken");
    if (c->cl != NULL)
        return cluster_append(c, argc, argv, lens);
    if (append_command(c->ctx, argc, argv, lens) != REDIS_OK)
        return fail(c, RRPC_ENOMEM, "cannot queue a Redis command");
    return RRPC_OK;
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
    if (c->broken)
        return fail(c, RRPC_ECONNECT, c->errmsg[0] ? c->errmsg : "connection is broken");
    void *reply = NULL;
    if (c->cl != NULL) {
        int rc = cluster_read(c, (redisReply **)&reply);
        if (rc != RRPC_OK)
            return rc;
    } else if (redisGetReply(c->ctx, &reply) != REDIS_OK) {
        int timed_out = c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "Redis connection: %s",
                 timed_out ? "read timed out" : c->ctx->errstr);
        return fail(c, timed_out ? RRPC_ETIMEDOUT : RRPC_ECONNECT, msg);
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
    return c->errmsg;
}

int rrpc__conn_broken(const rrpc__conn *c)
{
    return c->broken;
}

int rrpc__conn_peer_closed(const rrpc__conn *c)
{
    /* Only meaningful with no reply outstanding: then anything readable
     * is an EOF or an error (Redis closed an idle link, or restarted). */
    if (c->cl != NULL)
        return cluster_peer_closed(c);
    struct pollfd p = {c->ctx->fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char byte;
    return recv(c->ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

int rrpc__reply_transient(const rrpc__reply *r)
{
    static const char *const prefixes[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"};
    if (r == NULL || R(r)->type != REDIS_REPLY_ERROR || R(r)->str == NULL)
        return 0;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(R(r)->str, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

void rrpc__reply_free(rrpc__reply *r)
{
    if (r)
        freeReplyObject(R(r));
}

enum rrpc__reply_type rrpc__reply_type(const rrpc__reply *r)
{
    switch (R(r)->type) {
    case REDIS_REPLY_STRING: return RRPC__REPLY_STRING;
    case REDIS_REPLY_ARRAY: return RRPC__REPLY_ARRAY;
    case REDIS_REPLY_INTEGER: return RRPC__REPLY_INTEGER;
    case REDIS_REPLY_STATUS: return RRPC__REPLY_STATUS;
    case REDIS_REPLY_ERROR: return RRPC__REPLY_ERROR;
    default: return RRPC__REPLY_NIL;
    }
}

const char *rrpc__reply_str(const rrpc__reply *r, size_t *len)
{
    if (len)
        *len = R(r)->len;
    return R(r)->str;
}

long long rrpc__reply_integer(const rrpc__reply *r)
{
    return R(r)->integer;
}

size_t rrpc__reply_count(const rrpc__reply *r)
{
    return R(r)->type == REDIS_REPLY_ARRAY ? R(r)->elements : 0;
}

const rrpc__reply *rrpc__reply_element(const rrpc__reply *r, size_t i)
{
    return (const rrpc__reply *)R(r)->element[i];
}
