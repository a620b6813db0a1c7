/* async_cluster.c -- an async link that routes commands by hash slot.
 *
 * With a redis+cluster:// URL the async client's two links (push and pop)
 * must each reach several masters: a service list lives on the master that
 * owns its slot, the client's reply list on another.  This file makes one
 * rrpc__alink out of several plain ones, one per master, so async.c keeps
 * seeing "a push link" and "a pop link" and needs no cluster code at all.
 *
 * - The slot map is read synchronously when the link opens (CLUSTER SLOTS
 *   through the sync transport, like a Sentinel URL is resolved there),
 *   and a link to every master in it is opened at once.  The link is ready
 *   when all of them are, so a master that the map still names but that is
 *   gone (a failover under way) shows up as a lost link at (re)connect, and
 *   the owner's backoff-and-reconnect runs until the map is healthy again.
 * - Each command goes to the master that owns its key's slot (slot.c knows
 *   where the key is).  A copy of its arguments is kept until its reply
 *   arrives: a MOVED reply updates that slot's owner and sends the command
 *   again to the node named; ASK sends ASKING then the command there, and
 *   leaves the map alone.  Nodes named only by a redirection are connected
 *   on first use.  The copy is the price of cluster mode only: a direct
 *   link never comes here.
 * - Losing any node link loses the whole link: the owner fails what is in
 *   flight and reconnects, which re-reads the map.  That is coarser than
 *   failing only the calls pushed through the dead node, but a call's
 *   request and reply usually live on different masters, so a failover
 *   touches most calls in flight anyway, and it keeps one recovery path.
 *
 * The node links report to this file; this file reports to the owner with
 * the owner's callbacks, under the same rules as async_transport.c: READY
 * once, then LOST once, and every command's reply function runs exactly
 * once (NULL when its link went away).
 */
#include "internal.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REDIRECTS 5

enum { NOTHING, READY, LOST };

typedef struct anode {
    char *host;
    int port;
    rrpc__alink *link; /* NULL until a command goes there (or at open, for masters) */
    int ready;
} anode;

struct rrpc__acluster {
    struct event_base *base;
    rrpc__url url; /* the Cluster URL: credentials for every node */
    double connect_timeout_s;
    rrpc__alink *outer; /* the link the owner holds */
    rrpc__alink_reply_fn on_reply;
    rrpc__alink_event_fn on_event;
    void *udata;
    anode *nodes;
    size_t nnodes, cap;
    short owner[RRPC__CLUSTER_SLOTS];
    int reported;
    struct event *lost_ev; /* reports a loss found while sending, from the loop */
    char lost_msg[RRPC__ERRMSG_LEN];
};

/* A command awaiting its reply, with its own copy of the arguments. */
typedef struct acmd {
    void *privdata; /* the owner's */
    int hops;
    int argc;
    const char **argv;
    size_t *lens;
} acmd;

/* The privdata of the ASKING sent ahead of a command after ASK. */
static char asking_mark;

static void report(rrpc__acluster *cl, int status, const char *msg)
{
    if (cl->reported == LOST || (status == RRPC_OK && cl->reported != NOTHING))
        return;
    cl->reported = status == RRPC_OK ? READY : LOST;
    cl->on_event(cl->outer, status, msg, cl->udata);
}

/* A node link that cannot even be opened is found while a command is being
 * sent, inside the owner's own code (async.c's flush): the loss is reported
 * from a fresh loop callback instead, as a broken hiredis link would be. */
static void report_later(rrpc__acluster *cl, const char *msg)
{
    if (cl->reported == LOST || cl->lost_msg[0] != '\0')
        return;
    snprintf(cl->lost_msg, sizeof cl->lost_msg, "%s", msg);
    event_active(cl->lost_ev, EV_TIMEOUT, 0);
}

static void on_lost(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__acluster *cl = arg;
    report(cl, RRPC_ECONNECT, cl->lost_msg);
}

/* The index of node host:port, added if new; -1 when out of memory. */
static int find_node(rrpc__acluster *cl, const char *host, int port)
{
    for (size_t i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].port == port && strcmp(cl->nodes[i].host, host) == 0)
            return (int)i;
    if (cl->nnodes >= 32000)
        return -1;
    if (cl->nnodes == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 8;
        anode *nodes = realloc(cl->nodes, cap * sizeof *nodes);
        if (nodes == NULL)
            return -1;
        cl->nodes = nodes;
        cl->cap = cap;
    }
    anode *n = &cl->nodes[cl->nnodes];
    memset(n, 0, sizeof *n);
    n->host = strdup(host);
    n->port = port;
    if (n->host == NULL)
        return -1;
    return (int)cl->nnodes++;
}

static void on_node_reply(const rrpc__reply *r, void *privdata, void *udata);
static void on_node_event(rrpc__alink *l, int status, const char *msg, void *udata);

/* The link to node I, opened on first use. */
static rrpc__alink *node_link(rrpc__acluster *cl, int i, char *err, size_t errlen)
{
    anode *n = &cl->nodes[i];
    if (n->link != NULL)
        return n->link;
    rrpc__url direct = {0};
    direct.kind = RRPC__URL_DIRECT;
    direct.host = n->host;
    direct.port = n->port;
    direct.user = cl->url.user;
    direct.password = cl->url.password;
    if (rrpc__alink_open(&n->link, cl->base, &direct, cl->connect_timeout_s, on_node_reply,
                         on_node_event, cl, err, errlen) != RRPC_OK)
        n->link = NULL;
    return n->link;
}

/* The node a command goes to: its key's slot owner (a wrong guess is
 * answered with MOVED), or any master for a command without a key. */
static int route(const rrpc__acluster *cl, const acmd *c)
{
    int k = rrpc__command_key_index(c->argc, c->argv);
    int node = k >= 0 ? cl->owner[rrpc__key_slot(c->argv[k], c->lens[k])] : -1;
    if (node < 0)
        node = cl->owner[0];
    return node >= 0 ? node : 0;
}

/* Sends C to node I (after ASKING if ASKING is set). */
static int send_to(rrpc__acluster *cl, int i, acmd *c, int asking, char *err, size_t errlen)
{
    if (cl->reported == LOST)
        return rrpc__fail(err, errlen, RRPC_ECONNECT, "the Redis Cluster link is down");
    rrpc__alink *l = node_link(cl, i, err, errlen);
    if (l == NULL)
        return RRPC_ECONNECT;
    if (asking) {
        const char *argv[] = {"ASKING"};
        const size_t lens[] = {6};
        if (rrpc__alink_command(l, 1, argv, lens, &asking_mark) != RRPC_OK)
            return rrpc__fail(err, errlen, RRPC_ECONNECT, "lost the link to %s:%d",
                              cl->nodes[i].host, cl->nodes[i].port);
    }
    if (rrpc__alink_command(l, c->argc, c->argv, c->lens, c) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_ECONNECT, "lost the link to %s:%d", cl->nodes[i].host,
                          cl->nodes[i].port);
    return RRPC_OK;
}

/* Parses "MOVED 3999 host:port" or "ASK 3999 host:port": returns 1 for
 * MOVED, 2 for ASK, 0 for any other reply; fills *slot, *node. */
static int redirection(rrpc__acluster *cl, const rrpc__reply *r, int *slot, int *node)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ERROR)
        return 0;
    const char *s = rrpc__reply_str(r, NULL);
    int kind = strncmp(s, "MOVED ", 6) == 0 ? 1 : strncmp(s, "ASK ", 4) == 0 ? 2 : 0;
    const char *at = kind ? strchr(s, ' ') + 1 : NULL;
    const char *addr = at ? strchr(at, ' ') : NULL;
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (colon == NULL)
        return 0;
    addr++;
    char host[256];
    size_t hlen = (size_t)(colon - addr);
    if (hlen >= sizeof host)
        return 0;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    *slot = atoi(at);
    *node = find_node(cl, hlen ? host : "127.0.0.1", atoi(colon + 1));
    return *node >= 0 && *slot >= 0 && *slot < RRPC__CLUSTER_SLOTS ? kind : 0;
}

/* Follows a MOVED or ASK reply: nonzero if C was sent again (its reply
 * function then runs later, for the new reply). */
static int follow(rrpc__acluster *cl, const rrpc__reply *r, acmd *c)
{
    int slot = 0, node = 0;
    int kind = r != NULL && c->hops < MAX_REDIRECTS ? redirection(cl, r, &slot, &node) : 0;
    if (kind == 0)
        return 0;
    c->hops++;
    if (kind == 1)
        cl->owner[slot] = (short)node;
    char err[RRPC__ERRMSG_LEN];
    if (send_to(cl, node, c, kind == 2, err, sizeof err) == RRPC_OK)
        return 1;
    /* The command is lost with the link: its reply function runs with
     * NULL, as for any command on a link that breaks. */
    cl->on_reply(NULL, c->privdata, cl->udata);
    free(c);
    report_later(cl, err);
    return 1;
}

static void on_node_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    rrpc__acluster *cl = udata;
    acmd *c = privdata;
    if (privdata == &asking_mark)
        return; /* ASKING's own +OK (or an error the command's reply repeats) */
    if (follow(cl, r, c))
        return;
    cl->on_reply(r, c->privdata, cl->udata);
    free(c);
}

static void on_node_event(rrpc__alink *l, int status, const char *msg, void *udata)
{
    rrpc__acluster *cl = udata;
    if (status != RRPC_OK) {
        report(cl, status, msg);
        return;
    }
    int all = 1;
    for (size_t i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i].link == l)
            cl->nodes[i].ready = 1;
        if (cl->nodes[i].link != NULL && !cl->nodes[i].ready)
            all = 0;
    }
    if (all)
        report(cl, RRPC_OK, NULL);
}

/* One allocation: the record, the argument pointers and lengths, the
 * argument bytes (each NUL-terminated, for slot.c's command names). */
static acmd *copy_command(int argc, const char **argv, const size_t *lens, void *privdata)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    size_t n = (size_t)argc;
    acmd *c = malloc(sizeof *c + n * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (c == NULL)
        return NULL;
    c->privdata = privdata;
    c->hops = 0;
    c->argc = argc;
    c->argv = (const char **)(c + 1);
    c->lens = (size_t *)(c->argv + n);
    char *p = (char *)(c->lens + n);
    for (int i = 0; i < argc; i++) {
        c->lens[i] = lens ? lens[i] : strlen(argv[i]);
        memcpy(p, argv[i], c->lens[i]);
        p[c->lens[i]] = '\0';
        c->argv[i] = p;
        p += c->lens[i] + 1;
    }
    return c;
}

int rrpc__acluster_command(rrpc__acluster *cl, int argc, const char **argv, const size_t *lens,
                           void *privdata)
{
    if (argc < 1)
        return RRPC_EINVAL;
    acmd *c = copy_command(argc, argv, lens, privdata);
    if (c == NULL)
        return RRPC_ENOMEM;
    char err[RRPC__ERRMSG_LEN];
    int rc = send_to(cl, route(cl, c), c, 0, err, sizeof err);
    if (rc != RRPC_OK) {
        free(c);
        report_later(cl, err);
    }
    return rc;
}

int rrpc__acluster_open(rrpc__acluster **out, struct event_base *base, const rrpc__url *url,
                        double connect_timeout_s, rrpc__alink *outer, rrpc__alink_reply_fn on_reply,
                        rrpc__alink_event_fn on_event, void *udata, char *err, size_t errlen)
{
    *out = NULL;
    rrpc__acluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    cl->base = base;
    cl->connect_timeout_s = connect_timeout_s;
    cl->outer = outer;
    cl->on_reply = on_reply;
    cl->on_event = on_event;
    cl->udata = udata;
    rrpc__slot_map map;
    int rc = rrpc__url_copy(&cl->url, url);
    cl->lost_ev = rc == RRPC_OK ? event_new(base, -1, 0, on_lost, cl) : NULL;
    if (cl->lost_ev == NULL) {
        rrpc__acluster_close(cl);
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    }
    rc = rrpc__cluster_read_map(url, connect_timeout_s, &map, err, errlen);
    if (rc != RRPC_OK) {
        rrpc__acluster_close(cl);
        return rc;
    }
    for (size_t s = 0; s < RRPC__CLUSTER_SLOTS; s++)
        cl->owner[s] = -1;
    /* Nodes are added in the map's order, so its indexes stay valid. */
    for (size_t i = 0; rc == RRPC_OK && i < map.nnodes; i++)
        if (find_node(cl, map.nodes[i].host, map.nodes[i].port) != (int)i)
            rc = rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    if (rc == RRPC_OK)
        memcpy(cl->owner, map.owner, sizeof cl->owner);
    for (size_t i = 0; rc == RRPC_OK && i < cl->nnodes; i++)
        if (node_link(cl, (int)i, err, errlen) == NULL)
            rc = RRPC_ECONNECT;
    rrpc__slot_map_free(&map);
    if (rc == RRPC_OK && cl->nnodes == 0)
        rc = rrpc__fail(err, errlen, RRPC_ECONNECT, "the Redis Cluster has no master");
    if (rc != RRPC_OK) {
        rrpc__acluster_close(cl);
        return rc;
    }
    *out = cl;
    return RRPC_OK;
}

void rrpc__acluster_close(rrpc__acluster *cl)
{
    if (cl == NULL)
        return;
    cl->reported = LOST; /* nothing is reported or re-sent while closing */
    for (size_t i = 0; i < cl->nnodes; i++) {
        rrpc__alink *l = cl->nodes[i].link;
        cl->nodes[i].link = NULL;
        rrpc__alink_close(l); /* pending replies run with NULL: forwarded to the owner */
        free(cl->nodes[i].host);
    }
    free(cl->nodes);
    if (cl->lost_ev)
        event_free(cl->lost_ev);
    rrpc__url_free(&cl->url);
    free(cl);
}
