/* keys.h -- every Redis key name rrpc uses, in one place (keys.c).
 *
 * PROTOCOL.md section 2 lists the keys; this is the code's copy of that
 * list, so a name is spelled once.  A service's own keys carry its request
 * list in a hash tag ("{<list>}:workers") so that, on a Cluster, they live
 * in the list's slot and one script can touch them all.  The request lists
 * of the shards are shard.c's; reliable mode's per-worker keys are built
 * by reliable.c from the suffixes below.
 */
#ifndef RRPC_KEYS_H
#define RRPC_KEYS_H

#include "core/internal.h"

#include <stddef.h>

#define RRPC__KEY_SERVICES  "rrpc:services" /* set of registered service names */
#define RRPC__KEY_REPLY     "rrpc:reply:"   /* + 32 hex digits: a call's reply list */
#define RRPC__KEY_NAMESPACE "rrpc:"         /* everything rrpc keeps under <prefix>rrpc: */
#define RRPC__SUFFIX_DEAD   ":dead"         /* <prefix><service>:dead, dead letters */
#define RRPC__SUFFIX_STATS  ":stats"        /* <prefix><service>:stats, counters */
/* Fields of <prefix><service>:stats, each counted by whoever refuses or
 * moves the request (PROTOCOL.md section 9, "Service counters"). */
#define RRPC__STAT_DEAD        "dead"        /* dead letters recorded (workers, reaper) */
#define RRPC__STAT_LOST        "lost"        /* answers Redis never took (workers) */
#define RRPC__STAT_EXPIRED     "expired"     /* not run: deadline passed (every rrpc worker) */
#define RRPC__STAT_SHED        "shed"        /* refused by max_queue (the sync C client) */
#define RRPC__STAT_REDELIVERED "redelivered" /* put back by the reaper (reliable mode) */
/* rrpc web's chart history: <prefix>rrpc:web:history:<service>, a sorted
 * set of per-minute samples scored by the minute (Unix seconds / 60). */
#define RRPC__KEY_HISTORY "rrpc:web:history:"
/* Tagged per-service keys: "{<list>}" followed by one of these. */
#define RRPC__TAG_WORKERS  ":workers"  /* zset of live workers, scored by deadline */
#define RRPC__TAG_INFO     ":info"     /* hash worker id -> record */
#define RRPC__TAG_CONFIG   ":config"   /* hash of what callers read: max_queue... */
#define RRPC__TAG_MSTATS   ":mstats"   /* hash of per-method counters */
#define RRPC__TAG_INFLIGHT "inflight"  /* reliable: set of worker ids; ":<wid>" its hash */
#define RRPC__TAG_LANDING  "landing:"  /* reliable: + <wid>, the BLMOVE target */
#define RRPC__TAG_ALIVE    "alive:"    /* reliable: + <process id>, its heartbeat */
#define RRPC__TAG_DONE     "done:"     /* reliable: + <request id>, remembered answers */
#define RRPC__TAG_APPLIED  ":applied:" /* at-most-once effects guards */
/* Limits (PROTOCOL.md section 9, "Limits"): + "<len>:<scope>[:<tenant>]". */
#define RRPC__TAG_RATE    ":rate:"    /* a rate's GCRA arrival time (ms, string) */
#define RRPC__TAG_RUNNING ":running:" /* zset of concurrency leases, by expiry */
#define RRPC__TAG_WAITING ":waiting"  /* zset of requests waiting, by when due */
/* A request list's priority lists (PROTOCOL.md section 7, "Priorities"):
 * "{<list>}" followed by one of these, for the list of the service or of
 * each of its shards; normal priority is the list itself. */
#define RRPC__TAG_HIGH ":high"
#define RRPC__TAG_LOW  ":low"

/* The names of one service's keys. */
typedef struct rrpc__service_keys {
    char list[RRPC__KEY_MAX]; /* <prefix><service>: the request list (shard 0) */
    char dead[RRPC__KEY_MAX];
    char stats[RRPC__KEY_MAX];
    char workers[RRPC__KEY_MAX];
    char info[RRPC__KEY_MAX];
    char config[RRPC__KEY_MAX];
    char mstats[RRPC__KEY_MAX];
    char services[RRPC__KEY_MAX]; /* <prefix>rrpc:services, the index */
} rrpc__service_keys;

/* Fills K with the keys of SERVICE under PREFIX (NULL: none).  RRPC_EINVAL
 * if a name does not fit RRPC__KEY_MAX. */
int rrpc__service_keys_init(rrpc__service_keys *k, const char *prefix, const char *service);

/* Builds "<prefix>rrpc:services" into buf. */
int rrpc__services_key(char *buf, size_t len, const char *prefix);

/* Builds "<prefix>rrpc:reply:<32 random hex>" into buf. */
int rrpc__new_reply_key(char *buf, size_t len, const char *prefix);

/* Builds "{LIST_KEY}SUFFIX": a per-service key in the list's cluster slot. */
int rrpc__tagged_key(char *buf, size_t len, const char *list_key, const char *suffix);

/* Builds the list of priority PRIORITY (RRPC_PRIORITY_*) of the request
 * list LIST_KEY: "{LIST_KEY}:high", LIST_KEY itself, "{LIST_KEY}:low". */
int rrpc__priority_key(char *buf, size_t len, const char *list_key, int priority);

/* Joins prefix, name and suffix (either may be NULL) into buf; RRPC_EINVAL
 * if it does not fit. */
int rrpc__key_join(char *buf, size_t len, const char *prefix, const char *name, const char *suffix);

#endif
