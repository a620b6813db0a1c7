/* server_ops.h -- the server's side of the transport interface.
 *
 * server/ owns a server's logic: its options and their checks, the method
 * table, dispatch and the protocol's per-request decisions (reply-key rules
 * by name, deadlines, dead-letter reasons), the counters, the registry
 * record's content, signals and the start/stop lifecycle.  What it needs
 * from a broker it asks through these operations:
 *
 *   create / destroy   the transport's part of one server (its keys, its
 *                      delivery mode, chosen once here)
 *   connect            one try at the broker: every worker's link, and the
 *                      broker's fitness (Redis: ready, eviction policy)
 *   may_heal           whether a failed connect or announce may work later
 *   announce / withdraw  the service's presence: the record and heartbeat
 *                      (with the per-method stats), and reliable mode's own
 *                      heartbeat and reaper of dead workers' requests
 *   run_worker         one worker's loop: take a batch of requests, hand
 *                      each to the server's decide, answer / settle /
 *                      dead-letter the outcomes -- all in the broker's terms
 *   disconnect         closes the workers' links
 *   run_alone          one worker on a link of its own (the fuzz harness)
 *
 * The server hands the transport a struct rrpc__serving (below): its
 * settings, the decide callback and the counters, read-only while the
 * workers run except for the atomics.  The transport keeps its own state in
 * a struct rrpc__server_broker that server/ never looks into.
 *
 * Threads: server/ calls create, connect, may_heal, announce, withdraw,
 * disconnect and destroy from the thread in rrpc_server_new/_run/_free,
 * never two at once; run_worker runs on one thread per worker id, all at
 * once, between a successful connect and disconnect.
 */
#ifndef RRPC_SERVER_OPS_H
#define RRPC_SERVER_OPS_H

#include "core/clock.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "core/stats.h"
#include "core/url.h"

#include <rrpc/rrpc.h>

#include <stdatomic.h>

/* The transport's part of one server: links, keys, threads.  Defined by
 * the transport (Redis: redis/worker.h). */
typedef struct rrpc__server_broker rrpc__server_broker;

typedef struct rrpc__serving rrpc__serving;

/* The server's decision about one request (server/serve.c): dispatches TEXT
 * (LEN bytes, borrowed) against the method table and the request's
 * deadline on CLOCK (the broker's time; NULL: no deadlines), counts it, and
 * applies rules 1 to 4 of the reply keys by name with RULES (the worker's
 * copy, which holds the registered services).  OUT is filled as
 * rrpc__dispatch does (owned by the caller: rrpc__outcome_clear); a reply
 * key the rules refuse is taken out (reply_key and response NULL), its
 * response moved to *REFUSED (new, free()) and out->dead_reason says why;
 * else *REFUSED is NULL.  Rule 5 (what the key holds in the broker) is the
 * transport's.  Thread-safe: the workers call it at once. */
typedef void (*rrpc__decide_fn)(rrpc__serving *s, const rrpc__key_rules *rules,
                                const rrpc__clock *clock, const char *text, size_t len,
                                rrpc__outcome *out, char **refused);

/* What a server counts (rrpc_server_get_stats): decide counts requests,
 * notifications, errors and expired; the transport the rest. */
typedef struct rrpc__server_counters {
    atomic_uint_fast64_t requests, notifications, errors, expired;
    atomic_uint_fast64_t dead_letters; /* dead letters the broker confirmed */
    atomic_uint_fast64_t duplicates;   /* reliable: answered again, not run */
    atomic_uint_fast64_t redelivered;  /* reliable: taken back from dead workers */
    atomic_uint_fast64_t given_back;   /* unstarted requests handed back */
    atomic_uint_fast64_t lost;         /* answers, dead letters... given up (logged) */
} rrpc__server_counters;

/* The neutral part of a server, owned by server/ (struct rrpc_server holds
 * it).  Every field is set before create and read-only afterwards, except
 * the atomics, errmsg and refusal. */
struct rrpc__serving {
    rrpc__url url;       /* parsed rrpc_server_options.url */
    const char *service; /* the service name (valid: rrpc__valid_name) */
    const char *prefix;  /* key prefix, "" if none */
    /* The protocol's names of the service's addresses (core/keys.h):
     * its request list (shard 0), dead letters and counters. */
    char list_key[RRPC__KEY_MAX];
    char dead_key[RRPC__KEY_MAX];
    char stats_key[RRPC__KEY_MAX];
    rrpc__key_rules rules; /* rules 1 to 4 without the services (borrows the above) */
    int workers;           /* worker threads (>= shards) */
    int shards;            /* request lists; worker i takes from shard i % shards */
    int reliable;          /* delivery: 0 at most once, 1 at least once (RELIABILITY.md) */
    int reply_ttl_s;       /* how long an answer waits for its caller */
    long dead_letter_max;  /* dead letters kept */
    int batch_max;         /* requests one take asks for beyond the first */
    double connect_timeout_s;
    rrpc__limits limits;
    /* Rate limits and concurrency caps (core/ratelimit.h): the table in
     * force, refreshed by the heartbeat; the leases held. */
    rrpc__rl_state rl;
    rrpc__decide_fn decide;
    atomic_int stop;      /* set by rrpc_server_stop or a signal: workers finish */
    atomic_int batch_now; /* requests a take asks for beyond the first, now */
    rrpc__server_counters n;
    /* Not 0: rrpc_server_run refuses to start and errmsg says why (set by
     * server/'s checks or by create, which may judge the URL and options
     * unfit for its broker). */
    int refusal;
    char errmsg[RRPC__ERRMSG_LEN]; /* why the last operation failed */
};

/* The service's presence, as announce gives it to the broker.  Borrowed:
 * server/ keeps it alive until withdraw returns. */
typedef struct rrpc__announcement {
    const char *id;               /* this process's identity among the service's servers */
    const char *record;           /* its JSON record (PROTOCOL.md section 9) */
    double interval_s;            /* heartbeat period */
    double ttl_s;                 /* a record not renewed this long is dead */
    long max_queue;               /* published for callers' load shedding; 0 none */
    int shards;                   /* published: request lists callers spread over */
    rrpc__stats *stats;           /* per-method counters to send with each beat */
    const rrpc__methods *methods; /* their names, in table order */
    /* Limits: the `limits` field to write at start (NULL: leave it), and
     * the state each beat refreshes from the field and renews leases of. */
    const char *limits_text;
    rrpc__rl_state *limits;
} rrpc__announcement;

typedef struct rrpc__server_ops {
    /* The broker as messages name it ("Redis": "waiting for Redis"). */
    const char *broker;

    /* Creates into *OUT the transport's part of S (borrowed: S outlives
     * it), for OPTS (borrowed, read now: reliable mode's settings).  The
     * delivery mode is chosen here, once.  A server the broker cannot run
     * as configured (Redis: reliable mode on a Cluster, keys too long) is
     * still created, with S->refusal and S->errmsg set.  RRPC_ENOMEM (*OUT
     * NULL) otherwise the only error. */
    int (*create)(rrpc__serving *s, const rrpc_server_options *opts, rrpc__server_broker **out);
    /* Frees B (NULL ok); after disconnect, or before any connect. */
    void (*destroy)(rrpc__server_broker *b);

    /* One try at the broker: opens the link of every worker, so that a
     * wrong URL or password is reported by rrpc_server_run rather than
     * retried, and checks that the broker serves and suits (Redis: PING
     * not LOADING, maxmemory-policy noeviction -- required by reliable
     * mode, else warned once).  RRPC_OK, or an error with S->errmsg set and
     * nothing left open.  Judge a failure with may_heal. */
    int (*connect)(rrpc__server_broker *b);
    /* Nonzero if the failure RC of connect or announce (S->errmsg says
     * more) may pass by waiting: the broker not listening yet, loading,
     * failing over.  A refused password or ACL never does. */
    int (*may_heal)(const rrpc__server_broker *b, int rc);
    /* After connect, before any worker runs: makes the service known --
     * writes A's record and keeps it alive on a thread of its own, sending
     * A->stats' changes with every beat -- and, in reliable mode, starts
     * the in-flight heartbeat and the reaper of dead workers' requests.  A
     * NULL: no record (heartbeat off), reliable mode's part still starts.
     * RRPC_OK, or an error with S->errmsg set and nothing left running. */
    int (*announce)(rrpc__server_broker *b, const rrpc__announcement *a);
    /* After every worker returned: stops the heartbeats, sends the last
     * stats and removes the record (callers fail fast at once), and
     * unregisters the reliable workers that hold nothing.  Failures are
     * logged, not returned.  No-op if announce did not succeed. */
    void (*withdraw)(rrpc__server_broker *b);
    /* Closes the workers' links opened by connect. */
    void (*disconnect)(rrpc__server_broker *b);

    /* Runs worker ID (0 <= ID < S->workers) on the calling thread on its
     * link from connect: takes batches of requests from its shard, asks
     * S->decide about each, and sends the answers, dead letters, effects
     * and (reliable) commits back, riding out broken links and a busy or
     * full broker (what it must give up is logged as LOST and counted).
     * Returns once S->stop is set and nothing it holds can still be
     * delivered (a few seconds at most). */
    void (*run_worker)(rrpc__server_broker *b, int id);
    /* As run_worker, on a link of its own opened (and closed) here, with
     * no connect, record or heartbeat: for a harness that plays the broker
     * (tests/fuzz/fuzz_worker.c).  RRPC_OK, or the link's error. */
    int (*run_alone)(rrpc__server_broker *b, int id);
} rrpc__server_ops;

#endif
