/* cluster_link.h -- the sync link's Redis Cluster mode (cluster_link.c):
 * one context per node, commands routed by hash slot, MOVED and ASK
 * followed, replies read back in the order the commands were queued. */
#ifndef RRPC_CLUSTER_LINK_H
#define RRPC_CLUSTER_LINK_H

#include "redis/cluster_map.h"
#include "redis/dial.h"

typedef struct rrpc__cluster rrpc__cluster;

/* A cluster link that keeps its errors and settings in D (borrowed for
 * its life; the URL's nodes are the seeds).  NULL when out of memory.
 * No node is asked until rrpc__cluster_dial. */
rrpc__cluster *rrpc__cluster_new(rrpc__dial *d);
void rrpc__cluster_free(rrpc__cluster *cl);
/* Drops every node link and every command awaiting a reply, then reads
 * the slot map from the first node that answers (the nodes known, then
 * the seeds).  A refused password is final (RRPC_EAUTH). */
int rrpc__cluster_dial(rrpc__cluster *cl);
/* Applies D's read timeout to every open node link. */
int rrpc__cluster_set_timeout(rrpc__cluster *cl);
/* Queues a command on the node owning its key's slot (connected on first
 * use).  A node that cannot be reached breaks the link, reported by the
 * next read, as for a command queued on a link that then breaks. */
int rrpc__cluster_append(rrpc__cluster *cl, int argc, const char **argv, const size_t *lens);
/* The same, on the node that owns ROUTE's slot whatever the command. */
int rrpc__cluster_append_routed(rrpc__cluster *cl, const char *route, int argc, const char **argv,
                                const size_t *lens);
/* The reply (a redisReply, new) of the oldest queued command, after
 * following its redirections. */
int rrpc__cluster_read(rrpc__cluster *cl, void **reply);
/* Nonzero if some node closed its idle link. */
int rrpc__cluster_peer_closed(const rrpc__cluster *cl);
/* Moves the slot map into *MAP (without links; the caller frees it) and
 * leaves CL's empty. */
void rrpc__cluster_take_map(rrpc__cluster *cl, rrpc__cmap *map);

#endif /* RRPC_CLUSTER_LINK_H */
