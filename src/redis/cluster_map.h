/* cluster_map.h -- what rrpc knows of a Redis Cluster, without any I/O.
 *
 * The sync cluster link (cluster_link.c) and the async cluster link
 * (async_cluster.c) both route commands over a Redis Cluster; this is the
 * part they share: the table of nodes, the owner of each slot, the
 * CLUSTER SLOTS reply that fills it and the MOVED/ASK errors that correct
 * it.  Connections stay with the caller: each node carries a pointer the
 * map keeps but never uses.  Pure, so tests/unit/test_cluster_map.c checks
 * the parsing on replies of any shape without a Redis.
 */
#ifndef RRPC_CLUSTER_MAP_H
#define RRPC_CLUSTER_MAP_H

#include "core/slot.h"
#include "redis/reply.h"

#include <stddef.h>

/* How many times one command follows MOVED or ASK before its last
 * redirection is handed to the caller as an error. */
#define RRPC__CLUSTER_MAX_REDIRECTS 5

typedef struct rrpc__cnode {
    char *host;
    int port;
    void *link; /* the caller's connection to the node, or NULL; never touched here */
} rrpc__cnode;

typedef struct rrpc__cmap {
    rrpc__cnode *nodes; /* every node ever named: an index stays valid for the map's life */
    size_t nnodes, cap;
    short owner[RRPC__CLUSTER_SLOTS]; /* index into nodes, -1 when unknown */
} rrpc__cmap;

/* An empty map: no node, every slot unknown. */
void rrpc__cmap_init(rrpc__cmap *m);
/* Frees the node table (the caller closes the nodes' links first) and
 * leaves M empty. */
void rrpc__cmap_free(rrpc__cmap *m);
/* The index of node HOST:PORT, added if new; -1 when out of memory or when
 * the map is full (the index must fit in a slot's owner). */
int rrpc__cmap_node(rrpc__cmap *m, const char *host, int port);
/* Sets every slot's owner from a CLUSTER SLOTS reply got from ASKED_HOST
 * (the host an empty address means).  Nodes are added in the reply's
 * order, so a new map's node I is its I-th master.  RRPC_EREDIS, with ERR
 * saying why and M unchanged, if R holds no usable slot range (an error,
 * an empty or malformed reply); RRPC_ENOMEM. */
int rrpc__cmap_apply_slots(rrpc__cmap *m, const rrpc__reply *r, const char *asked_host, char *err,
                           size_t errlen);
/* The node a command goes to: the owner of its key's slot (a stale guess
 * is answered with MOVED), else -- no key, or nobody known to own the
 * slot -- the owner of slot 0, a master of the current map; else node 0. */
int rrpc__cmap_route(const rrpc__cmap *m, int argc, const char **argv, const size_t *lens);

enum rrpc__redirect_kind { RRPC__REDIRECT_NONE, RRPC__REDIRECT_MOVED, RRPC__REDIRECT_ASK };

/* "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>", parsed. */
typedef struct rrpc__redirect {
    enum rrpc__redirect_kind kind;
    int slot;
    int port;
    char host[256]; /* an empty host (the node we asked) reads 127.0.0.1 */
} rrpc__redirect;

/* Reads a redirection from the reply R: RRPC__REDIRECT_MOVED or _ASK with
 * *out filled; RRPC__REDIRECT_NONE for any other reply; RRPC_EREDIS, with
 * ERR saying why, for a MOVED or ASK that does not parse (callers hand
 * that reply on as the error it is). */
int rrpc__redirect_parse(const rrpc__reply *r, rrpc__redirect *out, char *err, size_t errlen);
/* Notes redirection RD in M: the index of the node it names (added if new),
 * and after MOVED that node owns the slot from now on.  -1 when the node
 * cannot be added. */
int rrpc__cmap_redirect(rrpc__cmap *m, const rrpc__redirect *rd);

/* A command on its way through a cluster, kept with a copy of its
 * arguments until its final reply so that a redirection can send it again.
 * One allocation (free() it); each argument is NUL-terminated as well, for
 * slot.c's command names.  The price of cluster mode only. */
typedef struct rrpc__ccmd {
    void *privdata; /* the caller's */
    int node;       /* where it was sent */
    int hops;       /* redirections followed so far */
    int argc;
    const char **argv;
    size_t *lens;
} rrpc__ccmd;

/* A copy of the command (LENS NULL: C strings), privdata NULL, node and
 * hops 0; NULL when out of memory. */
rrpc__ccmd *rrpc__ccmd_new(int argc, const char **argv, const size_t *lens);

#endif /* RRPC_CLUSTER_MAP_H */
