/* async_cluster.c -- the async client's link to a URL, routed by hash slot
 * on a Redis Cluster.
 *
 * With a redis+cluster:// URL the async client's two links (push and pop)
 * must each reach several masters: a service list lives on the master that
 * owns its slot, the client's reply list on another.  This file makes one
 * rrpc__aconn out of several plain async links (async_link.c), one per
 * master, so async_redis.c keeps seeing "a push link" and "a pop link" and needs
 * no cluster code at all.  Any other URL makes an rrpc__aconn of one plain
 * link that reports straight to the owner: a direct link pays one branch
 * per command for the cluster case.
 *
 * - The slot map (cluster_map.c, the one the sync transport uses too) is
 *   read synchronously when the conn opens (CLUSTER SLOTS through the sync
 *   transport, like a Sentinel URL is resolved there), and a link to every
 *   master in it is opened at once.  The conn is ready when all of them
 *   are, so a master that the map still names but that is gone (a failover
 *   under way) shows up as a lost link at (re)connect, and the owner's
 *   backoff-and-reconnect runs until the map is healthy again.
 * - Each command goes to the master that owns its key's slot.  A copy of
 *   its arguments is kept until its reply arrives: a MOVED reply updates
 *   that slot's owner and sends the command again to the node named; ASK
 *   sends ASKING then the command there, and leaves the map alone.  Nodes
 *   named only by a redirection are connected on first use.  The copy is
 *   the price of cluster mode only: a direct link never comes here.
 * - Losing any node link loses the whole conn: the owner fails what is in
 *   flight and reconnects, which re-reads the map.  That is coarser than
 *   failing only the calls pushed through the dead node, but a call's
 *   request and reply usually live on different masters, so a failover
 *   touches most calls in flight anyway, and it keeps one recovery path.
 *
 * The node links report to this file through their callbacks; this file
 * reports to the owner with the owner's callbacks, under the same rules as
 * a single link: READY once, then LOST once, and every command's reply
 * function runs exactly once (NULL when its link went away).
 */
#include "redis/async_cluster.h"

#include "redis/async_link.h"
#include "redis/cluster_map.h"
#include "core/internal.h"
#include "redis/conn.h"
#include "core/url.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NOTHING, READY, LOST };

struct rrpc__aconn {
    rrpc__alink *direct; /* not a Cluster URL: the one link, with the owner's callbacks */
    /* The rest serves a Cluster URL only. */
    struct event_base *base;
    rrpc__url url; /* the Cluster URL: credentials for every node */
    double connect_timeout_s;
    rrpc__alink_reply_fn on_reply;
    rrpc__alink_event_fn on_event;
    void *udata;
    rrpc__cmap map;       /* each node's link is its rrpc__alink, NULL until needed */
    size_t opened, ready; /* node links opened, and how many of them reported ready */
    int reported;
    struct event *lost_ev; /* reports a loss found while sending, from the loop */
    char lost_msg[RRPC__ERRMSG_LEN];
};

/* The privdata of the ASKING sent ahead of a command after ASK. */
static char asking_mark;

static void report(rrpc__aconn *c, int status, const char *msg)
{
    if (c->reported == LOST || (status == RRPC_OK && c->reported != NOTHING))
        return;
    c->reported = status == RRPC_OK ? READY : LOST;
    c->on_event(status, msg, c->udata);
}

/* A node link that cannot even be opened is found while a command is being
 * sent, inside the owner's own code (a delivery from the client's flush): the loss is reported
 * from a fresh loop callback instead, as a broken hiredis link would be. */
static void report_later(rrpc__aconn *c, const char *msg)
{
    if (c->reported == LOST || c->lost_msg[0] != '\0')
        return;
    snprintf(c->lost_msg, sizeof c->lost_msg, "%s", msg);
    event_active(c->lost_ev, EV_TIMEOUT, 0);
}

static void on_lost(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__aconn *c = arg;
    report(c, RRPC_ECONNECT, c->lost_msg);
}

static void on_node_reply(const rrpc__reply *r, void *privdata, void *udata);
static void on_node_event(int status, const char *msg, void *udata);

/* The link to node I, opened on first use. */
static rrpc__alink *node_link(rrpc__aconn *c, int i, char *err, size_t errlen)
{
    rrpc__cnode *n = &c->map.nodes[i];
    if (n->link != NULL)
        return n->link;
    rrpc__url direct = {0};
    direct.kind = RRPC__URL_DIRECT;
    direct.host = n->host;
    direct.port = n->port;
    direct.user = c->url.user;
    direct.password = c->url.password;
    rrpc__alink *l = NULL;
    if (rrpc__alink_open(&l, c->base, &direct, c->connect_timeout_s, on_node_reply, on_node_event,
                         c, err, errlen) != RRPC_OK)
        return NULL;
    n->link = l;
    c->opened++;
    return l;
}

/* Sends CMD to node I (after ASKING if ASKING is set). */
static int send_to(rrpc__aconn *c, int i, rrpc__ccmd *cmd, int asking, char *err, size_t errlen)
{
    if (c->reported == LOST)
        return rrpc__fail(err, errlen, RRPC_ECONNECT, "the Redis Cluster link is down");
    rrpc__alink *l = node_link(c, i, err, errlen);
    if (l == NULL)
        return RRPC_ECONNECT;
    if (asking) {
        const char *argv[] = {"ASKING"};
        const size_t lens[] = {6};
        if (rrpc__alink_command(l, 1, argv, lens, &asking_mark) != RRPC_OK)
            return rrpc__fail(err, errlen, RRPC_ECONNECT, "lost the link to %s:%d",
                              c->map.nodes[i].host, c->map.nodes[i].port);
    }
    if (rrpc__alink_command(l, cmd->argc, cmd->argv, cmd->lens, cmd) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_ECONNECT, "lost the link to %s:%d",
                          c->map.nodes[i].host, c->map.nodes[i].port);
    return RRPC_OK;
}

/* Follows a MOVED or ASK reply: nonzero if CMD was sent again (its reply
 * function then runs later, for the new reply).  A redirection that does
 * not parse goes to the owner as the error reply it is. */
static int follow(rrpc__aconn *c, const rrpc__reply *r, rrpc__ccmd *cmd)
{
    rrpc__redirect rd;
    if (r == NULL || cmd->hops >= RRPC__CLUSTER_MAX_REDIRECTS ||
        rrpc__redirect_parse(r, &rd, NULL, 0) <= 0)
        return 0;
    int node = rrpc__cmap_redirect(&c->map, &rd);
    if (node < 0)
        return 0;
    cmd->hops++;
    char err[RRPC__ERRMSG_LEN];
    if (send_to(c, node, cmd, rd.kind == RRPC__REDIRECT_ASK, err, sizeof err) == RRPC_OK)
        return 1;
    /* The command is lost with the link: its reply function runs with
     * NULL, as for any command on a link that breaks. */
    c->on_reply(NULL, cmd->privdata, c->udata);
    free(cmd);
    report_later(c, err);
    return 1;
}

static void on_node_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    rrpc__aconn *c = udata;
    rrpc__ccmd *cmd = privdata;
    if (privdata == &asking_mark)
        return; /* ASKING's own +OK (or an error the command's reply repeats) */
    if (follow(c, r, cmd))
        return;
    c->on_reply(r, cmd->privdata, c->udata);
    free(cmd);
}

/* Each node link reports ready once: the conn is ready when every link
 * opened so far is. */
static void on_node_event(int status, const char *msg, void *udata)
{
    rrpc__aconn *c = udata;
    if (status != RRPC_OK)
        report(c, status, msg);
    else if (++c->ready >= c->opened)
        report(c, RRPC_OK, NULL);
}

int rrpc__aconn_command(rrpc__aconn *c, int argc, const char **argv, const size_t *lens,
                        void *privdata)
{
    if (c == NULL)
        return RRPC_ECONNECT; /* closed, as rrpc__alink_command allows */
    if (c->direct != NULL)
        return rrpc__alink_command(c->direct, argc, argv, lens, privdata);
    if (argc < 1)
        return RRPC_EINVAL;
    rrpc__ccmd *cmd = rrpc__ccmd_new(argc, argv, lens);
    if (cmd == NULL)
        return RRPC_ENOMEM;
    cmd->privdata = privdata;
    char err[RRPC__ERRMSG_LEN];
    int node = rrpc__cmap_route(&c->map, cmd->argc, cmd->argv, cmd->lens);
    int rc = send_to(c, node, cmd, 0, err, sizeof err);
    if (rc != RRPC_OK) {
        free(cmd);
        report_later(c, err);
    }
    return rc;
}

/* Reads the slot map and starts a link to every master in it. */
static int open_cluster(rrpc__aconn *c, const rrpc__url *url, char *err, size_t errlen)
{
    int rc = rrpc__url_copy(&c->url, url);
    c->lost_ev = rc == RRPC_OK ? event_new(c->base, -1, 0, on_lost, c) : NULL;
    if (c->lost_ev == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    rc = rrpc__cluster_read_map(url, c->connect_timeout_s, &c->map, err, errlen);
    for (size_t i = 0; rc == RRPC_OK && i < c->map.nnodes; i++)
        if (node_link(c, (int)i, err, errlen) == NULL)
            rc = RRPC_ECONNECT;
    if (rc == RRPC_OK && c->map.nnodes == 0)
        rc = rrpc__fail(err, errlen, RRPC_ECONNECT, "the Redis Cluster has no master");
    return rc;
}

int rrpc__aconn_open(rrpc__aconn **out, struct event_base *base, const rrpc__url *url,
                     double connect_timeout_s, rrpc__alink_reply_fn on_reply,
                     rrpc__alink_event_fn on_event, void *udata, char *err, size_t errlen)
{
    *out = NULL;
    rrpc__aconn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    rrpc__cmap_init(&c->map);
    c->base = base;
    c->connect_timeout_s = connect_timeout_s;
    c->on_reply = on_reply;
    c->on_event = on_event;
    c->udata = udata;
    int rc = url->kind == RRPC__URL_CLUSTER
                 ? open_cluster(c, url, err, errlen)
                 : rrpc__alink_open(&c->direct, base, url, connect_timeout_s, on_reply, on_event,
                                    udata, err, errlen);
    if (rc != RRPC_OK) {
        rrpc__aconn_close(c);
        return rc;
    }
    *out = c;
    return RRPC_OK;
}

void rrpc__aconn_close(rrpc__aconn *c)
{
    if (c == NULL)
        return;
    c->reported = LOST; /* nothing is reported or re-sent while closing */
    rrpc__alink_close(c->direct);
    for (size_t i = 0; i < c->map.nnodes; i++) {
        rrpc__alink *l = c->map.nodes[i].link;
        c->map.nodes[i].link = NULL;
        rrpc__alink_close(l); /* pending replies run with NULL: forwarded to the owner */
    }
    rrpc__cmap_free(&c->map);
    if (c->lost_ev)
        event_free(c->lost_ev);
    rrpc__url_free(&c->url);
    free(c);
}
