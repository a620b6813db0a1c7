/* registry_view.h -- what a caller knows of a service from its registry
 * (docs/PROTOCOL.md section 9) and the fail fast and max_queue rules that
 * follow from it, in one place for the sync client (redis/failfast.c) and
 * the async one (client/async_send.c).  No I/O: redis/failfast.c reads the
 * registry into it. */
#ifndef RRPC_REGISTRY_VIEW_H
#define RRPC_REGISTRY_VIEW_H

/* One service's registry, as last read. */
typedef struct rrpc__registry_view {
    int registered; /* {L}:config exists (and Redis let us read it) */
    int live;       /* nonzero: some registered worker's heartbeat has not expired */
    long max_queue; /* {L}:config max_queue; 0: none */
    int shards;     /* request lists (core/shard.h); 1 unless registered and sharded */
} rrpc__registry_view;

/* A call to a service that registered but has no live worker fails at
 * once, or stops waiting (RRPC_EUNAVAILABLE); an unregistered one (a
 * seed-style worker) is waited on. */
static inline int rrpc__view_unavailable(const rrpc__registry_view *v)
{
    return v->registered && !v->live;
}

/* The bound a call's push must respect (the max_queue script), or 0 for a
 * plain push: only a registered service with a live worker bounds it. */
static inline long rrpc__view_max_queue(const rrpc__registry_view *v)
{
    return v->registered && v->live && v->max_queue > 0 ? v->max_queue : 0;
}

/* The messages of the two fail fast outcomes (one %s: the service). */
#define RRPC__UNAVAILABLE_FMT                                                                      \
    "service '%s' is unavailable: its registered workers are all gone "                            \
    "(stopped, or their heartbeat expired)"
#define RRPC__UNAVAILABLE_WAITING_FMT                                                              \
    "service '%s' became unavailable while waiting: its last worker is gone"

#endif /* RRPC_REGISTRY_VIEW_H */
