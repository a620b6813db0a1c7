/* cluster_map.c -- a Redis Cluster's nodes and slot owners, no I/O.
 *
 * Both cluster links (cluster_link.c's, async_cluster.c's) keep one of these
 * and do their own talking; see cluster_map.h.  The replies parsed here
 * come from the network, so nothing in them is trusted: a CLUSTER SLOTS
 * entry of the wrong shape is skipped, a reply with no usable entry is an
 * error that leaves the map as it was, and a MOVED or ASK whose slot, host
 * or port does not parse is reported instead of followed.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "redis/cluster_map.h"

#include "core/internal.h"
#include "core/slot.h"
#include "redis/reply.h"

#include <stdlib.h>
#include <string.h>

/* Owners are shorts, a 32 KiB table per map; no cluster comes near this. */
#define MAX_NODES 32000

void rrpc__cmap_init(rrpc__cmap *m)
{
    m->nodes = NULL;
    m->nnodes = m->cap = 0;
    for (size_t s = 0; s < RRPC__CLUSTER_SLOTS; s++)
        m->owner[s] = -1;
}

void rrpc__cmap_free(rrpc__cmap *m)
{
    for (size_t i = 0; i < m->nnodes; i++)
        free(m->nodes[i].host);
    free(m->nodes);
    rrpc__cmap_init(m);
}

int rrpc__cmap_node(rrpc__cmap *m, const char *host, int port)
{
    for (size_t i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return (int)i;
    if (m->nnodes >= MAX_NODES)
        return -1;
    if (m->nnodes == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        rrpc__cnode *nodes = realloc(m->nodes, cap * sizeof *nodes);
        if (nodes == NULL)
            return -1;
        m->nodes = nodes;
        m->cap = cap;
    }
    rrpc__cnode *n = &m->nodes[m->nnodes];
    n->host = strdup(host);
    n->port = port;
    n->link = NULL;
    if (n->host == NULL)
        return -1;
    return (int)m->nnodes++;
}

/* A CLUSTER SLOTS entry, [from, to, [host, port, ...], replicas...]:
 * nonzero with *from, *to and *master set if E has that shape and a port
 * that can be one. */
static int slot_range(const rrpc__reply *e, long long *from, long long *to,
                      const rrpc__reply **master)
{
    if (rrpc__reply_count(e) < 3) /* 0 for anything but an array */
        return 0;
    const rrpc__reply *a = rrpc__reply_element(e, 0), *b = rrpc__reply_element(e, 1);
    const rrpc__reply *m = rrpc__reply_element(e, 2);
    if (rrpc__reply_type(a) != RRPC__REPLY_INTEGER || rrpc__reply_type(b) != RRPC__REPLY_INTEGER ||
        rrpc__reply_count(m) < 2 ||
        rrpc__reply_type(rrpc__reply_element(m, 0)) != RRPC__REPLY_STRING ||
        rrpc__reply_type(rrpc__reply_element(m, 1)) != RRPC__REPLY_INTEGER)
        return 0;
    long long port = rrpc__reply_integer(rrpc__reply_element(m, 1));
    if (port < 1 || port > 65535)
        return 0;
    *from = rrpc__reply_integer(a);
    *to = rrpc__reply_integer(b);
    *master = m;
    return 1;
}

/* Checks that R holds at least one slot range before the map is touched:
 * a node that is not (yet) in a cluster must not wipe a good map. */
static int check_slots(const rrpc__reply *r, char *err, size_t errlen)
{
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR)
        return rrpc__fail(err, errlen, RRPC_EREDIS, "%.160s", rrpc__reply_str(r, NULL));
    if (rrpc__reply_count(r) == 0)
        return rrpc__fail(err, errlen, RRPC_EREDIS, "empty CLUSTER SLOTS");
    long long from, to;
    const rrpc__reply *master;
    for (size_t i = 0; i < rrpc__reply_count(r); i++)
        if (slot_range(rrpc__reply_element(r, i), &from, &to, &master))
            return RRPC_OK;
    return rrpc__fail(err, errlen, RRPC_EREDIS, "no slot range in CLUSTER SLOTS");
}

int rrpc__cmap_apply_slots(rrpc__cmap *m, const rrpc__reply *r, const char *asked_host, char *err,
                           size_t errlen)
{
    int rc = check_slots(r, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    for (size_t s = 0; s < RRPC__CLUSTER_SLOTS; s++)
        m->owner[s] = -1;
    for (size_t i = 0; i < rrpc__reply_count(r); i++) {
        long long from, to;
        const rrpc__reply *master;
        if (!slot_range(rrpc__reply_element(r, i), &from, &to, &master))
            continue;
        size_t hlen = 0;
        const char *host = rrpc__reply_str(rrpc__reply_element(master, 0), &hlen);
        int port = (int)rrpc__reply_integer(rrpc__reply_element(master, 1));
        /* An empty host means "the address you reached me at". */
        int node = rrpc__cmap_node(m, hlen > 0 ? host : asked_host, port);
        if (node < 0)
            return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
        for (long long s = from < 0 ? 0 : from; s <= to && s < RRPC__CLUSTER_SLOTS; s++)
            m->owner[s] = (short)node;
    }
    return RRPC_OK;
}

/* A command without a key (TIME, PING) goes to the owner of slot 0 rather
 * than to a seed: a master of the current map, so a live one after a
 * failover, where the first seed may be the node that died. */
int rrpc__cmap_route(const rrpc__cmap *m, int argc, const char **argv, const size_t *lens)
{
    int k = rrpc__command_key_index(argc, argv);
    if (k >= 0) {
        size_t len = lens ? lens[k] : strlen(argv[k]);
        int node = m->owner[rrpc__key_slot(argv[k], len)];
        if (node >= 0)
            return node;
    }
    return m->owner[0] >= 0 ? m->owner[0] : 0;
}

/* The decimal number at *P, at most MAX, and *P moved past it; -1 if *P
 * holds no digit or the number is larger. */
static long decimal(const char **p, long max)
{
    const char *s = *p;
    long n = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (*s - '0');
        if (n > max)
            return -1;
    }
    *p = s;
    return n;
}

/* Nonzero if TEXT's first word is WORD ("ASKING" is not "ASK"). */
static int is_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    return strncmp(text, word, n) == 0 && (text[n] == ' ' || text[n] == '\0');
}

int rrpc__redirect_parse(const rrpc__reply *r, rrpc__redirect *out, char *err, size_t errlen)
{
    out->kind = RRPC__REDIRECT_NONE;
    if (rrpc__reply_type(r) != RRPC__REPLY_ERROR)
        return RRPC__REDIRECT_NONE;
    const char *text = rrpc__reply_str(r, NULL);
    size_t skip = is_word(text, "MOVED") ? 5 : is_word(text, "ASK") ? 3 : 0;
    if (skip == 0)
        return RRPC__REDIRECT_NONE;
    const char *p = text + skip + (text[skip] == ' ');
    long slot = decimal(&p, RRPC__CLUSTER_SLOTS - 1);
    const char *addr = slot >= 0 && *p == ' ' ? p + 1 : "";
    const char *colon = strrchr(addr, ':'); /* the last one: an IPv6 host has its own */
    const char *q = colon ? colon + 1 : "";
    long port = decimal(&q, 65535);
    size_t hlen = colon ? (size_t)(colon - addr) : 0;
    if (colon == NULL || port <= 0 || *q != '\0' || hlen >= sizeof out->host ||
        memchr(addr, ' ', hlen) != NULL)
        return rrpc__fail(err, errlen, RRPC_EREDIS, "malformed Redis Cluster redirection: %.160s",
                          text);
    memcpy(out->host, addr, hlen);
    out->host[hlen] = '\0';
    if (hlen == 0)
        strcpy(out->host, "127.0.0.1");
    out->slot = (int)slot;
    out->port = (int)port;
    out->kind = skip == 5 ? RRPC__REDIRECT_MOVED : RRPC__REDIRECT_ASK;
    return out->kind;
}

int rrpc__cmap_redirect(rrpc__cmap *m, const rrpc__redirect *rd)
{
    int node = rrpc__cmap_node(m, rd->host, rd->port);
    if (node >= 0 && rd->kind == RRPC__REDIRECT_MOVED)
        m->owner[rd->slot] = (short)node;
    return node;
}

rrpc__ccmd *rrpc__ccmd_new(int argc, const char **argv, const size_t *lens)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    size_t n = (size_t)argc;
    rrpc__ccmd *c = malloc(sizeof *c + n * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (c == NULL)
        return NULL;
    c->privdata = NULL;
    c->node = c->hops = 0;
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
