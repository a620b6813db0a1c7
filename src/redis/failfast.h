/* failfast.h -- the client's view of the registry (failfast.c): fail fast,
 * max_queue and shard choice before a call. */
#ifndef RRPC_FAILFAST_H
#define RRPC_FAILFAST_H

#include "core/keys.h"
#include "core/registry_view.h"

#include <stddef.h>

typedef struct rrpc__conn rrpc__conn;
typedef struct rrpc__reply rrpc__reply;

typedef struct rrpc__failfast rrpc__failfast;

/* What a caller knows about a service before and while it waits. */
typedef struct rrpc__svc_state {
    int registered;  /* the service has a registry (some worker registered) */
    int live;        /* registered workers whose heartbeat has not expired */
    long max_queue;  /* 0: none */
    double slice_s;  /* wait in BLPOP slices this long (0: one wait) */
    double deadline; /* monotonic time the call gives up */
    int unavailable; /* set when the last worker went during the wait */
    int shard;       /* the shard (request list, shard.c) this push goes to */
} rrpc__svc_state;

rrpc__failfast *rrpc__failfast_new(int enabled);
void rrpc__failfast_free(rrpc__failfast *ff);
/* Before a call on LIST (shard 0's list): RRPC_OK with *st filled (and
 * st->shard picked), RRPC_EUNAVAILABLE when the service is registered but
 * has no live worker.  Costs a round trip only when the cached view of
 * LIST is older than a second. */
int rrpc__failfast_check(rrpc__failfast *ff, rrpc__conn *c, const char *list, double timeout_s,
                         rrpc__svc_state *st, char *err, size_t errlen);
/* The shard a push that is not checked (a notification) goes to, for a
 * service whose registry says it is sharded; else 0.  Never fails: a
 * broken link is reported by the push. */
int rrpc__failfast_shard(rrpc__failfast *ff, rrpc__conn *c, const char *list);
/* Queues the push of TEXT onto LIST with PRIORITY (RRPC_PRIORITY_*):
 * RPUSH, or for a service with a max_queue (which counts LIST's three
 * priority lists) or a call that is not normal a push script
 * (core/priority.h).  RRPC_EINVAL if LIST's priority lists' names do not
 * fit. */
int rrpc__failfast_append_push(rrpc__conn *c, const char *list, const char *text, int priority,
                               const rrpc__svc_state *st);
/* Judges the push's reply: RRPC_EOVERLOADED when the script refused. */
int rrpc__failfast_pushed(const rrpc__reply *r, const rrpc__svc_state *st, char *err,
                          size_t errlen);
/* Writes the BLPOP timeout text of the next wait (never "0", which Redis
 * reads as forever) and returns 1; returns 0, writing nothing, when the
 * call's time is up (the caller then times out without waiting). */
int rrpc__failfast_next_wait(rrpc__svc_state *st, char *text, size_t len);
/* After an empty slice: nonzero to wait again (a worker is still alive and
 * time is left); sets st->unavailable when the last worker went. */
int rrpc__failfast_again(rrpc__failfast *ff, rrpc__conn *c, const char *list, rrpc__svc_state *st);

/* ---- reading the registry: shared with the async session (async_redis.c) */

/* A read of one service's registry is five commands (PROTOCOL.md section
 * 9): TIME, ZRANGE {L}:workers 0 -1 WITHSCORES, HGET {L}:config max_queue,
 * EXISTS {L}:config, HGET {L}:config shards. */
#define RRPC__VIEW_PARTS 5

typedef struct rrpc__view_cmds {
    char workers[RRPC__KEY_MAX], config[RRPC__KEY_MAX];
    int argc[RRPC__VIEW_PARTS];
    const char *argv[RRPC__VIEW_PARTS][5];
} rrpc__view_cmds;

/* The five commands that read the registry of LIST (shard 0's list);
 * RRPC_EINVAL if its keys do not fit. */
int rrpc__view_cmds_make(rrpc__view_cmds *k, const char *list);

/* The answers of a read, taken one at a time and in any order: over a
 * Cluster, TIME (no key) and the {L} keys may be answered by different
 * masters. */
typedef struct rrpc__view_read {
    unsigned got; /* bit i: part i answered */
    int refused;  /* some part was an error reply (an ACL, say) */
    long long now_ms, latest_ms, max_queue, exists, shards;
} rrpc__view_read;

/* Takes R, the reply to part PART (0..RRPC__VIEW_PARTS-1), into RD. */
void rrpc__view_take(rrpc__view_read *rd, int part, const rrpc__reply *r);
/* Nonzero once every part is in. */
int rrpc__view_complete(const rrpc__view_read *rd);
/* What a complete read says.  A Redis that refused any of it means no
 * registry for this caller: wait as usual rather than fail. */
void rrpc__view_result(const rrpc__view_read *rd, rrpc__registry_view *v);

#endif
