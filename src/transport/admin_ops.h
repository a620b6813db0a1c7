/* admin_ops.h -- the transport interface's admin group: what operators
 * read and mend (client/admin.c, rrpc_admin_*; the CLI's ls, info, stats,
 * top and dead).
 *
 * The operations run on a sync caller's link (client_ops.h: opened,
 * mended and closed with the client group's open, mend and close), so an
 * admin handle is a client link that asks other questions.  What stays
 * with the caller, above this table: checking arguments and service names,
 * mending a broken link before an operation, and every shape of JSON the
 * public API returns -- sorting services, totals, the union of the
 * workers' methods, quantiles from the per-method histograms.  What is
 * the broker's, below it: where the registry, the statistics and the dead
 * letters live and how they are read, all in as few round trips as it can
 * (Redis: the keys of PROTOCOL.md sections 1 and 9, one pipeline per
 * service), and liveness judged on the broker's own clock.
 *
 * PREFIX is the key prefix ("" if none), SERVICE a valid service name
 * (core/random.h: rrpc__valid_name), both borrowed.  Errors are negative
 * rrpc_err codes with a message in ERR (ERRLEN bytes): RRPC_ECONNECT or
 * RRPC_ETIMEDOUT when the link broke (mend it before the next operation),
 * RRPC_EREDIS when the broker refused a question, RRPC_EINVAL when a name
 * built from SERVICE is too long, RRPC_ENOMEM.  On an error no output is
 * set, except for the counts said below.
 *
 * The Redis implementation: redis/admin_redis.c.
 */
#ifndef RRPC_ADMIN_OPS_H
#define RRPC_ADMIN_OPS_H

#include "transport/client_ops.h"

#include <rrpc/rrpc.h>

#include <stddef.h>

/* Everything the broker knows about one service. */
typedef struct rrpc__service_view {
    int registered;       /* a server of the service has registered (and not been forgotten) */
    int shards;           /* request queues the service is spread over; 1 if not sharded */
    long long queue;      /* requests waiting, over all its queues and priorities */
    long long queue_high; /* of which in the high lists (PROTOCOL.md section 7) */
    long long queue_low;  /* of which in the low lists */
    long long max_queue;  /* 0: no limit */
    long long dead;       /* dead letters kept */
    long long dead_total; /* dead letters ever recorded */
    /* New (json_decref): the live workers' records as their servers wrote
     * them (objects; a record missing or unreadable is {"id": ID}), each
     * with "expires_in": the seconds its heartbeat has left. */
    json_t *workers;
    /* The service's counters (PROTOCOL.md section 9, "Service counters"):
     * calls not run because their deadline passed, refused by max_queue,
     * put back by the reaper, answers lost. */
    long long expired, shed, redelivered, lost;
    /* The oldest queued request (the head of each queue): its "sent" time
     * in ms on the broker's clock, 0 if no queue holds one; OLDEST_UNKNOWN
     * is set when a head carries no "sent" (a peer that does not stamp
     * it).  NOW_MS is the broker's clock when it was read. */
    long long oldest_sent_ms, now_ms;
    int oldest_unknown;
    /* New (json_decref): the per-method counters summed over the workers,
     * an object of integers named "calls:<method>", "errors:<method>" and
     * "h<bucket>:<method>" (core/stats.h's latency buckets). */
    json_t *mstats;
    /* New (json_decref) or NULL: the `limits` field of its configuration,
     * as a JSON string (unparsed: it may be wrong). */
    json_t *limits;
} rrpc__service_view;

typedef struct rrpc__admin_ops {
    /* The names of the services that ever registered under PREFIX and
     * were not forgotten, in no order, unchecked (a name need not be
     * valid).  On RRPC_OK *names is a new array of strings. */
    int (*services)(rrpc__client_link *l, const char *prefix, json_t **names, char *err,
                    size_t errlen);
    /* Fills *view for SERVICE (in one round trip over Redis, two for a
     * sharded service).  A service nobody knows is all zeros and empty
     * arrays, not an error. */
    int (*service)(rrpc__client_link *l, const char *prefix, const char *service,
                   rrpc__service_view *view, char *err, size_t errlen);
    /* The first LIMIT dead letters of SERVICE (LIMIT <= 0: all), oldest
     * first.  On RRPC_OK *records is a new array: each record decoded from
     * its JSON (docs/RELIABILITY.md) with a "ref" member added (the SHA-1
     * hex of its stored text: what dead_requeue_one takes), or as a string
     * if it is not a JSON object. */
    int (*dead_list)(rrpc__client_link *l, const char *prefix, const char *service, long limit,
                     json_t **records, char *err, size_t errlen);
    /* Puts each dead letter of SERVICE present when it starts back on the
     * service's queue once (its "message"), and keeps, at the back, those
     * that have no message or could not be pushed.  Adds to *moved (if not
     * NULL) each one requeued, also when it then fails. */
    int (*dead_requeue)(rrpc__client_link *l, const char *prefix, const char *service, long *moved,
                        char *err, size_t errlen);
    /* Requeues the one dead letter of SERVICE whose ref (the SHA-1 hex of
     * its stored text, as dead_list gives it) is REF: removes exactly that
     * text from the dead letters, then pushes its "message" onto the
     * service's queue (the record goes back if the push fails).  No such
     * record (e.g. already requeued or purged): RRPC_EINVAL and nothing
     * changes; a record without a whole message (truncated, not UTF-8):
     * RRPC_EINVAL and it stays. */
    int (*dead_requeue_one)(rrpc__client_link *l, const char *prefix, const char *service,
                            const char *ref, char *err, size_t errlen);
    /* Removes every dead letter of SERVICE, those arriving meanwhile too.
     * Adds to *removed (if not NULL) each one removed, also when it then
     * fails. */
    int (*dead_purge)(rrpc__client_link *l, const char *prefix, const char *service, long *removed,
                      char *err, size_t errlen);
    /* Forgets SERVICE's registration: its workers, their records and its
     * configuration, and its name in the list of services.  Its queue, dead
     * letters and statistics stay.  A running server registers again with
     * its next heartbeat. */
    int (*forget)(rrpc__client_link *l, const char *prefix, const char *service, char *err,
                  size_t errlen);
    /* Sets SERVICE's limits to TEXT (checked by the caller), or clears
     * them (TEXT NULL); RRPC_EINVAL if the service is not registered. */
    int (*limits_set)(rrpc__client_link *l, const char *prefix, const char *service,
                      const char *text, char *err, size_t errlen);
    /* Stores TEXT as SERVICE's sample for the broker's current minute (one
     * per minute: a second one replaces the first), drops samples older
     * than KEEP minutes, and lets the lot expire KEEP minutes after the
     * last write (rrpc web's chart history). */
    int (*history_put)(rrpc__client_link *l, const char *prefix, const char *service,
                       const char *text, int keep, char *err, size_t errlen);
    /* SERVICE's samples, oldest first: on RRPC_OK *records is a new array
     * of {"minute": <Unix seconds of its start>, "sample": <decoded>}. */
    int (*history_get)(rrpc__client_link *l, const char *prefix, const char *service,
                       json_t **records, char *err, size_t errlen);
} rrpc__admin_ops;

#endif /* RRPC_ADMIN_OPS_H */
