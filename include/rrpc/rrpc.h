/* rrpc.h -- the whole public contract of librrpc.
 *
 * rrpc is JSON-RPC 2.0 over Redis lists: a client RPUSHes a request onto the
 * list named after a service and blocks on a reply list; a worker pops the
 * request, runs the method and RPUSHes the response onto the reply list,
 * which expires.  docs/PROTOCOL.md describes the wire format.
 *
 * Conventions (borrowed from jansson and libuv):
 *   - Functions that can fail return an int: RRPC_OK (0) or a negative
 *     rrpc_err code; rrpc_strerror() names it and each handle keeps a
 *     longer message (rrpc_client_errmsg(), rrpc_server_errmsg()).
 *   - json_t parameters are borrowed unless the comment says "stolen".
 *     json_t results handed to the caller are new references the caller
 *     must json_decref().
 *   - Handles are opaque; options structs are filled with defaults by their
 *     _init function before the caller changes the fields it cares about.
 *     The structs may gain fields in later versions without breaking
 *     programs built against this one (docs/DESIGN.md, "An ABI that can
 *     grow"): each starts with a size_t size that _init sets to the
 *     caller's sizeof and the library reads no byte beyond; fields a
 *     caller's struct lacks take their defaults.  Leave size alone.
 *   - A JSON-RPC error object returned by a peer is data (a json_t), not a C
 *     error code: calls return RRPC_EREMOTE and hand the object over.
 */
#ifndef RRPC_RRPC_H
#define RRPC_RRPC_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(RRPC_BUILDING_LIBRARY)
#define RRPC_EXPORT __attribute__((visibility("default")))
#else
#define RRPC_EXPORT
#endif

/* The version; equal to the VERSION file at the top of the source tree, as
 * configuring checks. */
#define RRPC_VERSION_MAJOR  0
#define RRPC_VERSION_MINOR  2
#define RRPC_VERSION_PATCH  0
#define RRPC_VERSION_STRING "0.2.0"

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

typedef enum rrpc_err {
    RRPC_OK = 0,
    RRPC_EINVAL = -1,        /* an argument was invalid (NULL, bad name, bad JSON) */
    RRPC_ENOMEM = -2,        /* out of memory */
    RRPC_EURL = -3,          /* the Redis URL could not be parsed */
    RRPC_ECONNECT = -4,      /* Redis could not be reached or the link broke */
    RRPC_EAUTH = -5,         /* AUTH or SELECT was refused */
    RRPC_EREDIS = -6,        /* Redis answered a command with an error */
    RRPC_ETIMEDOUT = -7,     /* no reply arrived before the timeout */
    RRPC_EPROTO = -8,        /* a peer sent something that is not valid JSON-RPC */
    RRPC_EREMOTE = -9,       /* the peer answered with a JSON-RPC error object */
    RRPC_ECANCELED = -10,    /* the call was cancelled: by its caller (rrpc_async_cancel,
                              * rrpc_call_options.cancel) or the client closed */
    RRPC_ETOOBIG = -11,      /* the message is larger than the configured limit */
    RRPC_EEXIST = -12,       /* a method of that name is already registered */
    RRPC_ESTATE = -13,       /* the handle is in the wrong state for this call */
    RRPC_ESYS = -14,         /* an operating-system call failed (threads, signals) */
    RRPC_EUNAVAILABLE = -15, /* the service registered workers, but none is alive */
    RRPC_EOVERLOADED = -16,  /* the service's queue is at its max_queue: call refused */
    RRPC_ENOTSUP = -17       /* not supported by this transport (e.g. effects over AMQP) */
} rrpc_err;

/* A static, human-readable name for an rrpc_err code.  Never NULL. */
RRPC_EXPORT const char *rrpc_strerror(int err);

/* The library version as "MAJOR.MINOR.PATCH".  Static storage. */
RRPC_EXPORT const char *rrpc_version(void);

/* ------------------------------------------------------------------ */
/* Logging                                                             */
/* ------------------------------------------------------------------ */

/* How much a log line matters; the smaller, the more. */
typedef enum rrpc_log_level {
    RRPC_LOG_ERROR = 0, /* something was lost or cannot work without an operator:
                         * an answer or dead letter that could not be stored */
    RRPC_LOG_WARN = 1,  /* a fault the library rides out: a lost link, a command
                         * Redis refused, a risky Redis setting */
    RRPC_LOG_INFO = 2,  /* back to normal: reconnected, a heartbeat restored */
    RRPC_LOG_DEBUG = 3  /* detail for debugging (none is logged yet) */
} rrpc_log_level;

/* Receives one log line: MSG is "rrpc[ORIGIN]: text" without a newline,
 * e.g. "rrpc[calc/2]: lost the Redis connection, reconnecting: ...",
 * where ORIGIN names the service and thread (a worker number, "registry",
 * "heartbeat", "start") or "async".  MSG is borrowed for the call and has
 * been made safe for a terminal with rrpc_safe_text (it often quotes text
 * from Redis).  LEVEL lets the callback filter: the library hands over
 * every line. */
typedef void (*rrpc_log_fn)(rrpc_log_level level, const char *msg, void *udata);

/* Sends every line the library logs to FN (with UDATA) instead of stderr;
 * FN NULL restores the default, each line on stderr followed by a newline.
 * Process-wide and safe from any thread at any time.  FN runs on whichever
 * thread logs -- a server's worker or heartbeat thread, the async client's
 * loop thread, the caller's -- but never on two at once: the library holds
 * a lock around it, so FN need not be thread-safe, should be quick (a
 * thread that logs meanwhile waits), and once rrpc_set_log_fn returns the
 * previous FN is not running and will not run again (its UDATA may be
 * freed).  Lines logged from inside FN (FN calling into rrpc) go to
 * stderr, and rrpc_set_log_fn called from inside FN does nothing. */
RRPC_EXPORT void rrpc_set_log_fn(rrpc_log_fn fn, void *udata);

/* Flags of rrpc_safe_text. */
#define RRPC_SAFE_JSON 1u

/* Copies TEXT (NULL reads as "") into OUT (LEN bytes, always
 * NUL-terminated if LEN > 0; truncated between characters, never inside
 * one) with whatever a terminal would act on rather than show written as
 * an escape: C0 controls as \n, \t, \r or \xNN, DEL as \x7f, the C1
 * controls, bidi overrides and isolates and the line and paragraph
 * separators as \uXXXX, bytes that are not UTF-8 as \xNN.  For text
 * from Redis -- anyone who can write there chose it -- before it reaches
 * a person: the library's log lines get it, and the rrpc CLI shows
 * everything it reads through it.  With RRPC_SAFE_JSON, TEXT is JSON as an
 * encoder such as jansson wrote it and only DEL, the C1 controls and the
 * bidi and separator characters become \uXXXX (C0 controls are already
 * escaped inside its strings and are whitespace outside them), so the
 * result reads back to the same values.  6 * strlen(TEXT) + 1 bytes never
 * truncate.  Returns OUT. */
RRPC_EXPORT const char *rrpc_safe_text(char *out, size_t len, const char *text, unsigned flags);

/* JSON-RPC 2.0 error codes (spec section 5.1). */
#define RRPC_JSONRPC_PARSE_ERROR      -32700
#define RRPC_JSONRPC_INVALID_REQUEST  -32600
#define RRPC_JSONRPC_METHOD_NOT_FOUND -32601
#define RRPC_JSONRPC_INVALID_PARAMS   -32602
#define RRPC_JSONRPC_INTERNAL_ERROR   -32603
/* Implementation-defined server error (spec range -32000..-32099): the
 * request's deadline passed before a worker could run it. */
#define RRPC_JSONRPC_DEADLINE_EXCEEDED -32000
/* Server error: the batch this request was part of had already run for the
 * worker's batch time limit (rrpc_server_options.batch_time_limit_s), so
 * it was not run; sending it again on its own is safe. */
#define RRPC_JSONRPC_BATCH_TIME_EXCEEDED -32001
/* Server error: the caller cancelled the request (PROTOCOL.md section 7,
 * "cancel_key") before it ran, or its handler stopped because of that. */
#define RRPC_JSONRPC_CANCELLED -32002
/* Server error: the call is over a limit of the service (PROTOCOL.md
 * section 9, "Limits") that refuses rather than waits: message "Rate
 * limited" or "Too many running", data {"limit": "rate"|"concurrency",
 * "retry_after_ms": <ms>, "scope": <method or "*">}.  Not run. */
#define RRPC_JSONRPC_LIMITED -32003

/* ------------------------------------------------------------------ */
/* Sync client                                                         */
/* ------------------------------------------------------------------ */

typedef struct rrpc_client rrpc_client;

typedef struct rrpc_client_options {
    /* sizeof the struct as the caller compiled it: set by _init, read by
     * the library to know which fields the caller has.  Leave it alone. */
    size_t size;
    /* redis://[user:password@]host[:port][/db] or unix:///path[?db=N], or
     * the master a group of Sentinels watches:
     *   redis+sentinel://[user:password@]host[:port][,host[:port]...]/NAME[/db]
     *       [?sentinel_password=P[&sentinel_user=U]]
     * (Sentinel port 26379 by default; user and password are the master's;
     * every (re)connect asks the Sentinels, so a failover is followed), or
     * a Redis Cluster through one or more of its nodes:
     *   redis+cluster://[user:password@]host[:port][,host[:port]...]
     * (port 6379 by default; db 0 only; every command goes to the master
     * that owns its key's slot, MOVED and ASK are followed, and a
     * reconnect re-reads the slot map, so a failover is followed).
     * NULL means $REDIS_URL, then redis://127.0.0.1:6379.  Copied. */
    const char *url;
    /* Prepended to every key rrpc touches (service lists, reply keys).
     * NULL or "" means none.  Copied. */
    const char *key_prefix;
    /* Default call timeout in seconds when a call passes 0. Default 30.
     * Here and in connect_timeout_s, 0, negative or NaN mean the default
     * and more than 1e8 s (about three years) is cut to 1e8 s. */
    double timeout_s;
    /* How long connecting may take, in seconds.  Default 5. */
    double connect_timeout_s;
    /* What a call does when the Redis link breaks while it waits for its
     * reply.  0 (default): it fails at once with RRPC_ECONNECT.  1: it
     * reconnects (with backoff, within the call's timeout) and sends the
     * same request again, with the same id, then goes on waiting.  Only
     * safe against services in reliable mode (docs/RELIABILITY.md), which
     * answer a repeated request from their memory instead of running it
     * twice. */
    int resend_on_reconnect;
    /* Fail fast (default 1): a call to a service that registered workers
     * (docs/PROTOCOL.md section 9) but has none alive -- all stopped, or
     * their heartbeats expired -- returns RRPC_EUNAVAILABLE at once instead
     * of waiting out its timeout, and a call already waiting fails within
     * about a second of the last worker going.  A service that never
     * registered (e.g. a seed-style worker) is waited on as usual.  The
     * client caches each service's state for a second, so this costs one
     * extra round trip per service per second, not one per call.  0 turns
     * it off (and with it the max_queue check, RRPC_EOVERLOADED). */
    int fail_fast;
} rrpc_client_options;

/* Fills the SIZE bytes at OPTS with the defaults above and sets
 * opts->size = SIZE.  Programs call rrpc_client_options_init, which passes
 * the sizeof they were compiled with; this is for bindings that cannot. */
RRPC_EXPORT void rrpc_client_options_init_sized(rrpc_client_options *opts, size_t size);

/* Fills *opts with the defaults above. */
static inline void rrpc_client_options_init(rrpc_client_options *opts)
{
    rrpc_client_options_init_sized(opts, sizeof *opts);
}

/* Connects a client.  On RRPC_OK *out is a new handle the caller owns and
 * must rrpc_client_close().  If SIGPIPE still has its default disposition
 * it is set to ignored (as by every rrpc handle that connects), so a broken
 * link is reported as RRPC_ECONNECT instead of killing the process.
 * On failure *out is NULL; if errmsg is not NULL
 * up to errmsg_len bytes of a description are written there.  OPTS (NULL:
 * all defaults) with a size below sizeof(size_t) -- not filled by _init --
 * or beyond this library's struct with a nonzero byte there (an option
 * this librrpc does not know) is RRPC_EINVAL; so for every function that
 * takes an options struct. */
RRPC_EXPORT int rrpc_client_open(rrpc_client **out, const rrpc_client_options *opts, char *errmsg,
                                 size_t errmsg_len);

/* Closes the connection and frees the handle.  NULL is allowed. */
RRPC_EXPORT void rrpc_client_close(rrpc_client *client);

/* The message of the last failed call on this handle ("" if none).
 * Borrowed: valid until the next call on the handle. */
RRPC_EXPORT const char *rrpc_client_errmsg(const rrpc_client *client);

/* Calls SERVICE.METHOD with PARAMS (an array, an object or NULL; borrowed)
 * and waits up to timeout_s seconds (0 means the client's default; more
 * than 1e8 s, about three years, infinity included, is cut to 1e8 s, i.e.
 * no limit in practice; negative or NaN is RRPC_EINVAL).  A call whose
 * time is up before it could wait returns RRPC_ETIMEDOUT at once.
 *
 * RRPC_OK: *result is a new reference to the result.
 * RRPC_EREMOTE: *error is a new reference to the JSON-RPC error object
 *   ({"code":..., "message":..., "data":...}).
 * RRPC_ETIMEDOUT: no reply in time; the request was withdrawn from the
 *   service's list if no worker had taken it yet.
 * Other codes: transport or argument errors; see rrpc_client_errmsg().
 * On any failure *result is NULL; *error is NULL unless RRPC_EREMOTE.
 * error may be NULL if the caller does not want the object. */
RRPC_EXPORT int rrpc_call(rrpc_client *client, const char *service, const char *method,
                          const json_t *params, double timeout_s, json_t **result, json_t **error);

/* Per-call options, for rrpc_call_with and rrpc_async_call_with.  Like
 * the other options structs it grows: fill it with rrpc_call_options_init
 * first. */
typedef struct rrpc_call_options {
    size_t size; /* as in rrpc_client_options: set by _init */
    /* As rrpc_call's timeout_s: 0 (default) is the client's default. */
    double timeout_s;
    /* W3C Trace Context (PROTOCOL.md section 7).  TRACEPARENT is sent as
     * the request's parent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex
     * flags>" (a later version is sent as 00); a value the recommendation
     * calls invalid (uppercase, an all-zero id, version ff, a wrong length)
     * is RRPC_EINVAL.  NULL (default): inside a handler, the handled
     * request's trace continues (same trace id and flags, a new random
     * parent id, its tracestate); elsewhere a new trace starts (random
     * ids, flags 00: rrpc records no spans, so it claims none sampled).
     * TRACESTATE (NULL: none, or the handled request's) is sent with it;
     * more than 512 characters or any outside printable ASCII is
     * RRPC_EINVAL.  Both copied before the call returns. */
    const char *traceparent;
    const char *tracestate;
    /* Progress (PROTOCOL.md section 7, "progress").  PROGRESS not NULL
     * asks the worker for the progress its handler sends
     * (rrpc_request_progress): each value runs PROGRESS(value, udata) --
     * VALUE borrowed for the call -- in the order sent, before the call
     * returns (sync: on the calling thread; async: on the loop thread,
     * before the call's callback).  UDATA is PROGRESS_UDATA.  NULL
     * (default): none is asked for, and none is ever sent. */
    void (*progress)(const json_t *value, void *udata);
    void *progress_udata;
    /* Cancellation (PROTOCOL.md section 7, "cancel_key").  Sync: when
     * *CANCEL becomes nonzero (e.g. set by a signal handler: writing a
     * volatile sig_atomic_t is async-signal-safe) the call stops waiting
     * within about 0.1 s and returns RRPC_ECANCELED; its request is taken
     * back if no worker has it yet, and a handler running it sees
     * rrpc_request_cancelled.  The call waits in slices of 0.1 s to look.
     * NULL (default): not cancellable. */
    volatile sig_atomic_t *cancel;
    /* Async: nonzero makes the call cancellable by rrpc_async_cancel (its
     * request carries a cancel key; without it, cancelling still takes
     * a queued request back and ends the call, but a running handler does
     * not see it).  HANDLE, if not NULL, receives the call's handle for
     * rrpc_async_cancel (whether or not it is cancellable), before
     * rrpc_async_call_with returns. */
    int cancellable;
    uint64_t *handle;
    /* The request's "tenant" member (PROTOCOL.md section 7): whose call it
     * is, for the per-tenant limits of the service.  1 to 128 bytes, no
     * control characters (else RRPC_EINVAL); copied.  NULL (default):
     * none -- the call shares the bucket of calls without a tenant. */
    const char *tenant;
    /* Priority (PROTOCOL.md section 7, "Priorities"): RRPC_PRIORITY_HIGH,
     * RRPC_PRIORITY_NORMAL (0, the default) or RRPC_PRIORITY_LOW.  When the
     * service has a backlog, its workers take high before normal before
     * low (strict: low waits while high keeps coming); with no backlog
     * every call goes straight to a worker.  Any other value is
     * RRPC_EINVAL.  Notifications are always normal. */
    int priority;
} rrpc_call_options;

/* rrpc_call_options.priority. */
#define RRPC_PRIORITY_HIGH   1
#define RRPC_PRIORITY_NORMAL 0
#define RRPC_PRIORITY_LOW    (-1)

/* As rrpc_client_options_init_sized, for bindings. */
RRPC_EXPORT void rrpc_call_options_init_sized(rrpc_call_options *opts, size_t size);

/* Fills *opts with the defaults above. */
static inline void rrpc_call_options_init(rrpc_call_options *opts)
{
    rrpc_call_options_init_sized(opts, sizeof *opts);
}

/* rrpc_call with per-call options OPTS (NULL: all defaults). */
RRPC_EXPORT int rrpc_call_with(rrpc_client *client, const char *service, const char *method,
                               const json_t *params, const rrpc_call_options *opts, json_t **result,
                               json_t **error);

/* Sends a notification: no id, no reply, no reply key.  Returns once
 * Redis has accepted it. */
RRPC_EXPORT int rrpc_notify(rrpc_client *client, const char *service, const char *method,
                            const json_t *params);

/* As rrpc_notify, with the member "idempotency_key" (PROTOCOL.md section
 * 7): a service in reliable mode runs the notifications that carry the
 * same non-empty IDEMPOTENCY_KEY (UTF-8) once within its dedup window,
 * however often they are sent; at-most-once services run every send.
 * NULL sends a plain notification; "" is RRPC_EINVAL. */
RRPC_EXPORT int rrpc_notify_idempotent(rrpc_client *client, const char *service, const char *method,
                                       const json_t *params, const char *idempotency_key);

/* Sends a batch and waits for its response.  CALLS is a borrowed array of
 * {"method": string, "params": array|object (optional),
 *  "notify": true (optional)} descriptions.  On RRPC_OK *responses is a new
 * reference to an array with one entry per call, in the order of CALLS:
 * for a call, its response object ({"result":...} or {"error":...});
 * for a notification, null. */
RRPC_EXPORT int rrpc_call_batch(rrpc_client *client, const char *service, const json_t *calls,
                                double timeout_s, json_t **responses);

/* --- client interceptors ----------------------------------------------- */

/* Runs before a call (rrpc_call, rrpc_call_with, rrpc_async_call,
 * rrpc_async_call_with; not notifications or batches) is encoded, on the
 * calling thread.  MEMBERS is an empty object the hook may fill with
 * request members of its own, sent with the request (e.g. {"auth":
 * "token"}, which a server reads with rrpc_request_member); a member rrpc
 * sets itself (jsonrpc, method, params, id, reply_to, deadline, sent,
 * traceparent, tracestate, idempotency_key, progress, cancel_key,
 * priority) makes
 * the call fail with
 * RRPC_EINVAL.  Returns RRPC_OK to go on, or a negative rrpc_err to
 * refuse: nothing is sent, the call returns that code (an async call's
 * callback never runs) and the client's errmsg says "refused by client
 * interceptor N" (a positive return reads as RRPC_EINVAL).  PARAMS is
 * borrowed, read-only. */
typedef int (*rrpc_call_before_fn)(const char *service, const char *method, const json_t *params,
                                   json_t *members, void *udata);
/* Runs once the call's outcome is known, before the caller sees it (sync:
 * before rrpc_call returns; async: on the loop thread, just before the
 * callback): STATUS as the call returns it, RESULT and ERROR borrowed
 * (NULL unless RRPC_OK / RRPC_EREMOTE).  Observes only. */
typedef void (*rrpc_call_after_fn)(const char *service, const char *method, int status,
                                   const json_t *result, const json_t *error, void *udata);

/* Adds an interceptor to CLIENT: BEFORE and/or AFTER (not both NULL) with
 * UDATA.  Befores run in the order added, afters in reverse, each after
 * only if its before let the call through.  Not thread-safe against calls
 * on the same handle: add them right after opening.  A client without
 * interceptors pays nothing for them. */
RRPC_EXPORT int rrpc_client_add_interceptor(rrpc_client *client, rrpc_call_before_fn before,
                                            rrpc_call_after_fn after, void *udata);

/* ------------------------------------------------------------------ */
/* Server                                                              */
/* ------------------------------------------------------------------ */

typedef struct rrpc_server rrpc_server;

/* One request being handled.  Valid only during the handler's call. */
typedef struct rrpc_request rrpc_request;

/* A method handler.  Returns the result as a new reference (json_null()
 * for "nothing"), or NULL after rrpc_request_error() to answer with an
 * error.  Returning NULL without setting an error answers -32603.
 * Runs on one of the server's worker threads; udata is the pointer given
 * to rrpc_server_register(). */
typedef json_t *(*rrpc_method_fn)(rrpc_request *req, void *udata);

typedef struct rrpc_server_options {
    size_t size;              /* as in rrpc_client_options: set by _init */
    const char *url;          /* as in rrpc_client_options; copied */
    const char *key_prefix;   /* as in rrpc_client_options; copied */
    const char *service;      /* the service name (request list key); required */
    int workers;              /* worker threads; 0 = number of CPU cores */
    int reply_ttl_s;          /* expiry of reply keys; default 60 */
    size_t max_request_bytes; /* larger requests go to the dead letters; default 1 MiB */
    long dead_letter_max;     /* length bound of <service>:dead; default 1000 */
    int batch_max;            /* requests popped at once per worker; default 128.
                               * After a handler slower than 20 ms the workers take
                               * one at a time, and double back up while handlers
                               * are quick; the rest of a batch held up by a slow
                               * handler goes back to the list (at-most-once) */
    int handle_signals;       /* stop on SIGINT/SIGTERM in rrpc_server_run; default 1 */
    double connect_timeout_s; /* default 5 */
    /* Delivery mode (docs/RELIABILITY.md).  0 (default): at-most-once, as
     * in the seed: a request popped by a worker that dies is lost.  1:
     * at-least-once: requests move to a per-worker in-flight hash until
     * answered, a dead worker's requests go back to the service's list,
     * and every answer is remembered (by the request's reply key and id,
     * docs/PROTOCOL.md section 10) for dedup_window_s so that a redelivered
     * or repeated request is answered once, not run twice (a notification
     * runs once per send, unless it carries an "idempotency_key").
     * rrpc_server_run refuses it (RRPC_EINVAL, rrpc_server_errmsg says
     * why) on a Redis whose maxmemory-policy is not noeviction, and when
     * key_prefix + service is longer than 361 bytes (its keys would not
     * fit).  On a Redis Cluster the response is pushed after the commit,
     * at least once, and effects must name keys of the service's slot
     * (hash tag "{<prefix><service>}"): docs/RELIABILITY.md. */
    int reliable;
    int max_deliveries;    /* reliable: a request that was taken by this many
                            * workers that died becomes a dead letter; default 3 */
    double dedup_window_s; /* reliable: how long answers are remembered; default 600 */
    /* Registry (docs/PROTOCOL.md section 9).  With heartbeat on (default 1)
     * the server registers one record for itself (all its threads) with
     * its methods, refreshes it every heartbeat_interval_s seconds (default
     * 1) with a time-to-live of heartbeat_ttl_s (default 5; at least twice
     * the interval; in reliable mode also the silence after which a
     * worker's requests are redelivered), sends per-method stats with each beat, and removes the
     * record when it stops gracefully.  A second connection is used for
     * this.  0 turns all of it off (rpc.ping is still answered). */
    int heartbeat;
    double heartbeat_interval_s;
    double heartbeat_ttl_s;
    /* Most requests the service's list may hold (0, the default: no limit).
     * Published in the registry, so it needs heartbeat; rrpc clients then
     * refuse a call with RRPC_EOVERLOADED instead of queueing it when the
     * list is this long.  All servers of a service should agree on it.
     * With shards, the limit holds for each shard's list. */
    long max_queue;
    /* Request lists the service is spread over (docs/PROTOCOL.md section
     * 1), so that one busy service can use several Redis Cluster masters.
     * 1 (the default; 0 means 1 too): the one list <prefix><service>.
     * N > 1 (at most 1024): shard 0 is that list and shard k is
     * <prefix><service>#<k>, each in its own hash slot; with M masters use
     * M or more shards.  Worker thread i pops only shard i % N, and workers
     * is raised to N if it is smaller.  The count is published in the
     * registry (it needs heartbeat), where rrpc's sync and async clients read it and
     * spread their calls over the shards round-robin; callers that know
     * nothing of shards (other peers, a sync client with fail_fast = 0)
     * push onto shard 0, which is always served.  All servers of a service
     * must agree on it.  With reliable, each shard has its own in-flight
     * and dedup keys (in its list's hash slot), and a dead worker's
     * requests go back to their own shard (docs/RELIABILITY.md). */
    int shards;
    /* How long rrpc_server_run waits for Redis at start, in seconds.  A
     * server is often started together with its Redis (supervisors, compose
     * files, Kubernetes): while Redis refuses connections, is loading its
     * data, or (Cluster) has no slot map yet, run retries with backoff
     * (0.05 s doubling to 5 s, with jitter), logs once that it waits and
     * once when Redis answers, and then serves.  0 (the default): wait as
     * long as it takes, as a running worker does after losing Redis.
     * > 0: give up after this long with RRPC_ECONNECT.  < 0: do not wait
     * (fail at the first refusal).  A refused password or ACL (WRONGPASS,
     * NOPERM) fails at once whatever this says; rrpc_server_stop or a
     * signal (handle_signals) ends the wait with RRPC_OK. */
    double start_timeout_s;
    /* Reply keys this service may answer on (docs/PROTOCOL.md section 3):
     * a NULL-terminated array of prefixes (copied), e.g. {"rrpc:reply:",
     * NULL}; a request whose reply key starts with none of them is run,
     * and its answer becomes a dead letter ("reply key refused: not under
     * an allowed prefix").  NULL (the default): any key the other rules
     * accept.  A worker never writes to a key that is not a reply list
     * (missing, or a list with an expiry) whatever this says. */
    const char *const *reply_prefixes;
    /* The longest a JSON-RPC batch (one message of many requests) may keep
     * a worker thread (docs/PROTOCOL.md section 5): once it has run this
     * long, its requests not started are answered -32001 (Batch time limit
     * exceeded) without running, and its notifications are not run.
     * Default 5 s (0 means the default); a negative value: no limit. */
    double batch_time_limit_s;
    /* Rate limits and concurrency caps (PROTOCOL.md section 9, "Limits"):
     * a JSON object such as {"add": {"rate": 10}, "*": {"concurrency": 4,
     * "over": "wait"}}, written to the service's `limits` field of
     * {L}:config when the server starts (copied).  NULL (default): the
     * field is left as it is -- limits set by an operator (rrpc limits)
     * stay.  Whatever the field says is enforced by every rrpc C worker of
     * the service and followed within a heartbeat (it needs the heartbeat
     * on).  A value that does not parse, or names a method the server
     * does not serve, makes rrpc_server_run fail with RRPC_EINVAL. */
    const char *limits;
} rrpc_server_options;

/* As rrpc_client_options_init_sized, for bindings. */
RRPC_EXPORT void rrpc_server_options_init_sized(rrpc_server_options *opts, size_t size);

/* Fills *opts with the defaults above (service is NULL). */
static inline void rrpc_server_options_init(rrpc_server_options *opts)
{
    rrpc_server_options_init_sized(opts, sizeof *opts);
}

/* Creates a server (it does not connect yet).  On RRPC_OK *out is a new
 * handle the caller owns and must rrpc_server_free(). */
RRPC_EXPORT int rrpc_server_new(rrpc_server **out, const rrpc_server_options *opts);

/* Frees a server that is not running.  NULL is allowed. */
RRPC_EXPORT void rrpc_server_free(rrpc_server *server);

/* The message of the last failure on this server.  Borrowed. */
RRPC_EXPORT const char *rrpc_server_errmsg(const rrpc_server *server);

/* Registers METHOD (copied) with handler FN.  DESCRIPTION (copied, may be
 * NULL) is a one-line summary for discovery.  Must be called before
 * rrpc_server_run().  RRPC_EEXIST if the name is taken. */
RRPC_EXPORT int rrpc_server_register(rrpc_server *server, const char *method, rrpc_method_fn fn,
                                     void *udata, const char *description);

/* Publishes the shape of METHOD's params in the registry, for `rrpc info`.
 * SHAPE (borrowed, copied) is informal documentation, e.g.
 * {"a": "number", "b": "number"} or ["ms"].  Must be called before
 * rrpc_server_run(); RRPC_EINVAL if METHOD is not registered. */
RRPC_EXPORT int rrpc_server_set_params(rrpc_server *server, const char *method,
                                       const json_t *shape);

/* --- schemas and discovery (docs/PROTOCOL.md section 11) ------------- */

/* Gives METHOD JSON Schemas (both borrowed and copied; either may be
 * NULL: none).  PARAMS_SCHEMA is checked before the handler runs: params
 * that do not match are answered -32602 with a message naming the first
 * failing path ("params.b: expected integer"), data {"path": "params.b"},
 * and the handler never sees them.  A schema of type "object" describes
 * the params by name, and params sent by position are matched to its
 * properties in the order it lists them, so [1, 2] and {"a": 1, "b": 2}
 * are checked alike; absent params read as {}.  RESULT_SCHEMA documents
 * the result in rpc.discover and is not checked.  The validator knows a
 * subset of JSON Schema (draft 2020-12 meanings): type, properties,
 * required, items (one schema), enum, minimum, maximum, minLength,
 * maxLength (in characters), minItems, maxItems, additionalProperties,
 * and the annotations title, description, default, examples, $comment;
 * true and false are schemas.  A schema with any other keyword, or that
 * is malformed, is refused: RRPC_EINVAL, and rrpc_server_errmsg says
 * where and why ("params schema of add: schema.properties.a: unsupported
 * keyword 'pattern'").  Calling it again replaces both schemas.  Must be
 * called before rrpc_server_run(): RRPC_ESTATE while running; RRPC_EINVAL
 * if METHOD is not registered.  Costs nothing for methods without one. */
RRPC_EXPORT int rrpc_server_set_schema(rrpc_server *server, const char *method,
                                       const json_t *params_schema, const json_t *result_schema);

/* Documents an application error METHOD may answer with (CODE, MESSAGE
 * copied), listed under the method's "errors" in rpc.discover.  Only
 * documentation: handlers answer errors with rrpc_request_error.  Before
 * rrpc_server_run(); RRPC_EINVAL if METHOD is not registered. */
RRPC_EXPORT int rrpc_server_add_error(rrpc_server *server, const char *method, int code,
                                      const char *message);

/* Every server answers the built-in method "rpc.discover" (no params)
 * with an OpenRPC 1.3 document of the service: {"openrpc": "1.3.2",
 * "info": {"title": SERVICE, "version": rrpc's}, "methods": [...]} with,
 * for each registered method but rpc.discover itself, its name,
 * description, params (content descriptors from the params schema's
 * properties, or from the rrpc_server_set_params shape), result and
 * errors.  PROTOCOL.md section 11 has the details; `rrpc describe` shows
 * it. */

/* --- interceptors ------------------------------------------------------ */

/* Runs before a request's handler, on its worker thread.  Returns 0 to let
 * the call go on, nonzero to refuse it: the request is then answered with
 * the error the hook set with rrpc_request_error (-32603 "Internal error"
 * if it set none) and neither the handler nor later hooks run.  It may
 * read everything a handler may (rrpc_request_member for members beyond
 * JSON-RPC's, e.g. an "auth" token). */
typedef int (*rrpc_before_fn)(rrpc_request *req, void *udata);
/* Runs after the handler (or after a refusal by a later hook), with the
 * outcome: RESULT (borrowed) or ERROR (borrowed, the error object), one of
 * them NULL.  It observes only: it cannot change the answer. */
typedef void (*rrpc_after_fn)(rrpc_request *req, const json_t *result, const json_t *error,
                              void *udata);

/* Adds an interceptor: BEFORE and/or AFTER (either may be NULL, not both)
 * with UDATA.  Interceptors wrap each call to a registered method
 * (rpc.ping and rpc.discover included; not a request refused earlier: an
 * unknown method, an invalid request, a passed deadline) in the order
 * they were added: the befores first to last, then the handler, then the
 * afters last to first, each only for the interceptors whose before let
 * the call through (or that have none).  The library's own checks run
 * innermost, after every interceptor added here: the params schema of
 * rrpc_server_set_schema is one, so an authorisation hook refuses a call
 * before its params are judged.  Before rrpc_server_run() (RRPC_ESTATE
 * while running).  A server without interceptors pays nothing for them. */
RRPC_EXPORT int rrpc_server_add_interceptor(rrpc_server *server, rrpc_before_fn before,
                                            rrpc_after_fn after, void *udata);

/* Every server also answers the built-in method "rpc.ping" (JSON-RPC
 * reserves the rpc. prefix for such extensions) with
 * {"service":..., "worker":..., "host":..., "pid":..., "version":...,
 *  "time": <Unix seconds>}. */

/* Connects the workers and serves until rrpc_server_stop() is called (or a
 * SIGINT/SIGTERM arrives, if handle_signals).  Stopping is graceful: the
 * workers stop popping, finish and answer what they hold, and return.
 * A worker whose Redis link breaks reconnects with backoff; only a failure
 * to connect at start makes this return an error. */
RRPC_EXPORT int rrpc_server_run(rrpc_server *server);

/* Asks a running server to stop.  Safe from any thread and from a signal
 * handler. */
RRPC_EXPORT void rrpc_server_stop(rrpc_server *server);

/* Counters since the server started.  All fields are totals. */
typedef struct rrpc_server_stats {
    uint64_t requests;      /* request objects handled (batch elements count singly) */
    uint64_t notifications; /* of which notifications */
    uint64_t errors;        /* responses that carried an error */
    uint64_t dead_letters;  /* messages sent to the dead-letter list */
    uint64_t expired;       /* requests not run because their deadline had passed */
    uint64_t duplicates;    /* reliable: repeated requests answered from memory */
    uint64_t redelivered;   /* reliable: requests of dead workers put back */
    uint64_t given_back;    /* requests handed back to the list unstarted because a
                             * slow handler held up their batch */
    uint64_t lost;          /* at-most-once: answers, dead letters, effects and handed-back
                             * requests Redis never took (out of memory past the reply TTL,
                             * refused, or unconfirmed at stop); each is logged "LOST" */
} rrpc_server_stats;

/* Copies the counters into the SIZE bytes at STATS: the fields that fit
 * whole (a program built against an older rrpc.h has fewer).  For
 * bindings; programs call rrpc_server_get_stats. */
RRPC_EXPORT void rrpc_server_get_stats_sized(const rrpc_server *server, rrpc_server_stats *stats,
                                             size_t size);

/* Copies the counters into *stats. */
static inline void rrpc_server_get_stats(const rrpc_server *server, rrpc_server_stats *stats)
{
    rrpc_server_get_stats_sized(server, stats, sizeof *stats);
}

/* --- inside a handler ------------------------------------------------ */

/* The method name.  Borrowed. */
RRPC_EXPORT const char *rrpc_request_method(const rrpc_request *req);

/* The params: an array, an object, or NULL if absent.  Borrowed. */
RRPC_EXPORT json_t *rrpc_request_params(const rrpc_request *req);

/* The request id (string, number or null), NULL for a notification.
 * Borrowed. */
RRPC_EXPORT json_t *rrpc_request_id(const rrpc_request *req);

/* Sets the error this request answers with.  MESSAGE is copied; DATA (may
 * be NULL) is stolen.  Returns NULL so a handler can write
 * `return rrpc_request_error(req, 1, "division by zero", NULL);`. */
RRPC_EXPORT json_t *rrpc_request_error(rrpc_request *req, int code, const char *message,
                                       json_t *data);

/* The time the caller still waits for this request, from its deadline
 * (PROTOCOL.md, `deadline`).  Returns 1 and stores the seconds left in
 * *seconds_left (at least 0) if the request has a deadline, else returns 0
 * and leaves *seconds_left alone.  Calls made with rrpc_call or
 * rrpc_async_call from inside a handler, on the handler's thread, inherit
 * this deadline: their timeout is cut to the time left. */
RRPC_EXPORT int rrpc_request_time_left(const rrpc_request *req, double *seconds_left);

/* The request's W3C traceparent (PROTOCOL.md section 7), as version 00
 * ("00-<trace id>-<parent id>-<flags>"), or NULL if it carried none or an
 * invalid one (ignored, as the recommendation says).  Calls made from
 * inside the handler, on its thread, continue this trace: the same trace
 * id and flags with a new parent id.  Borrowed: valid during the handler. */
RRPC_EXPORT const char *rrpc_request_traceparent(const rrpc_request *req);

/* The request's tracestate, or NULL (none, not printable ASCII, longer
 * than 512 characters, or without a valid traceparent).  Borrowed. */
RRPC_EXPORT const char *rrpc_request_tracestate(const rrpc_request *req);

/* Nonzero if the caller cancelled this request (PROTOCOL.md section 7,
 * "cancel_key"): the handler should stop and may answer
 * RRPC_JSONRPC_CANCELLED.  Cheap enough for a loop: for a request its
 * caller cannot cancel it reads a flag; otherwise it asks the broker at
 * most every 50 ms and remembers a yes.  Calls made from inside the
 * handler, on its thread, are cancelled with it: their requests carry the
 * same cancel key, and a sync call waiting for its answer stops with
 * RRPC_ECANCELED.  0 outside a handler. */
RRPC_EXPORT int rrpc_request_cancelled(rrpc_request *req);

/* Sends VALUE (borrowed) as progress of this request, before its answer
 * (PROTOCOL.md section 7, "progress"), if its caller asked for progress;
 * else sends nothing.  Only during the handler, on its thread: anywhere
 * else -- after the handler returned its answer, say -- it is refused
 * with RRPC_ESTATE.  RRPC_OK (sent, or not asked for; also for an element
 * of a batch, which gets none), RRPC_EINVAL (REQ or VALUE NULL),
 * RRPC_EREDIS (its reply key was refused: no progress is sent), or the
 * broker's error. */
RRPC_EXPORT int rrpc_request_progress(rrpc_request *req, const json_t *value);

/* Adds a Redis command (ARGC strings in ARGV, copied) that is applied
 * together with this request's answer.  In reliable mode the answer, the
 * memory of it and these commands form one atomic step that happens
 * exactly once per request, however often the request is delivered: the
 * way to make a side effect on data in the same Redis exactly-once.  In
 * at-most-once mode the commands are sent right after the answer.  An
 * error reply to one of them is logged by the worker.  Over AMQP there is
 * no Redis to apply them on: a request that came over AMQP refuses them
 * with RRPC_ENOTSUP (nothing is added; the handler decides whether to
 * answer without the effect or fail).  Returns RRPC_OK, RRPC_EINVAL,
 * RRPC_ENOMEM or RRPC_ENOTSUP. */
RRPC_EXPORT int rrpc_request_add_effect(rrpc_request *req, int argc, const char **argv);

/* The member NAME of the request object as it arrived (e.g. "auth", a
 * member rrpc itself does not define), or NULL if it has none.  For
 * interceptors and handlers.  Borrowed: valid during the handler. */
RRPC_EXPORT json_t *rrpc_request_member(const rrpc_request *req, const char *name);
/* Typed parameter access.  Each looks the parameter up by position POS in
 * array params or by NAME in object params.  On success it stores the value
 * and returns RRPC_OK.  If the parameter is missing or has the wrong type it
 * sets an invalid-params (-32602) error on REQ naming the parameter and
 * returns RRPC_EINVAL, so a handler can simply `return NULL;`. */
RRPC_EXPORT int rrpc_param_int(rrpc_request *req, size_t pos, const char *name, json_int_t *out);
RRPC_EXPORT int rrpc_param_number(rrpc_request *req, size_t pos, const char *name, double *out);
/* *out is borrowed from the params: valid during the handler. */
RRPC_EXPORT int rrpc_param_string(rrpc_request *req, size_t pos, const char *name,
                                  const char **out);
RRPC_EXPORT int rrpc_param_bool(rrpc_request *req, size_t pos, const char *name, int *out);
/* Any JSON value; *out is borrowed. */
RRPC_EXPORT int rrpc_param_json(rrpc_request *req, size_t pos, const char *name, json_t **out);

/* Checks that the params hold at most MAX parameters (array length or
 * object size) and sets an invalid-params error otherwise. */
RRPC_EXPORT int rrpc_param_count_max(rrpc_request *req, size_t max);

/* ------------------------------------------------------------------ */
/* Operations: the registry, stats and dead letters (what `rrpc ls`,    */
/* `info`, `stats`, `top` and `dead` show)                              */
/* ------------------------------------------------------------------ */

/* A connection for reading the registry (docs/PROTOCOL.md section 9) and
 * managing dead letters.  Not thread-safe; one handle per thread. */
typedef struct rrpc_admin rrpc_admin;

/* Connects with the url, key_prefix and connect_timeout_s of OPTS (NULL:
 * defaults).  On RRPC_OK *out is a new handle to rrpc_admin_close(). */
RRPC_EXPORT int rrpc_admin_open(rrpc_admin **out, const rrpc_client_options *opts, char *errmsg,
                                size_t errmsg_len);
RRPC_EXPORT void rrpc_admin_close(rrpc_admin *admin);
/* The message of the last failure.  Borrowed. */
RRPC_EXPORT const char *rrpc_admin_errmsg(const rrpc_admin *admin);

/* Every registered service, sorted by name.  *out (new) is an array of
 * {"service", "workers" (live), "threads" (of live workers), "queue"
 * (list length, summed over the lists of a sharded service and over the
 * priority lists), "max_queue", "dead" (dead letters
 * held), "calls", "errors" (totals over all methods and workers)}. */
RRPC_EXPORT int rrpc_admin_services(rrpc_admin *admin, json_t **out);

/* One service.  *out (new): {"service", "registered" (bool), "queue"
 * (summed over its lists and priorities), "queue_high", "queue_low" (of
 * which in the high and low lists), "shards" (request lists, from the registry; 1
 * if not sharded), "max_queue", "dead", "workers": [the live workers'
 * records, each with "expires_in" seconds], "methods": [{"name",
 * "description", "params"}, ...] (the union over live workers), "limits":
 * the limits object (null: none), and "limits_error" (a string) when the
 * field does not parse -- "limits" is then its text}.  An unregistered
 * service is not an error: it has "registered": false and no workers. */
RRPC_EXPORT int rrpc_admin_info(rrpc_admin *admin, const char *service, json_t **out);

/* Per-method stats summed over every worker and restart.  *out (new):
 * {"service", "queue", "dead", "dead_total" (ever counted), "methods":
 * {NAME: {"calls", "errors", "p50_ms", "p99_ms"}}}.  Percentiles are the
 * upper bound of the histogram bucket they fall in (within 25%). */
RRPC_EXPORT int rrpc_admin_stats(rrpc_admin *admin, const char *service, json_t **out);

/* The oldest LIMIT dead letters of SERVICE (LIMIT <= 0: all), as an array
 * (new) of the records of PROTOCOL.md section 6, each with a "ref" added:
 * the SHA-1 (40 lowercase hex digits) of its stored text, which names it
 * for rrpc_admin_dead_requeue_one().  An entry that is not a JSON object
 * is a string and has no ref. */
RRPC_EXPORT int rrpc_admin_dead_list(rrpc_admin *admin, const char *service, long limit,
                                     json_t **out);
/* Pushes every dead letter that carries its original message back onto the
 * service's list, oldest first, and removes it from the dead letters;
 * records without one stay.  *moved (may be NULL) counts the requeued. */
RRPC_EXPORT int rrpc_admin_dead_requeue(rrpc_admin *admin, const char *service, long *moved);
/* Requeues one dead letter: the one whose "ref" (rrpc_admin_dead_list) is
 * REF is removed -- exactly that record, whatever else changed meanwhile --
 * and its original message pushed back onto the service's list.  No dead
 * letter has that ref (e.g. it was requeued or purged meanwhile), or its
 * message was not kept whole (truncated, not UTF-8): RRPC_EINVAL with a
 * message, and nothing changes. */
RRPC_EXPORT int rrpc_admin_dead_requeue_one(rrpc_admin *admin, const char *service,
                                            const char *ref);
/* Removes SERVICE from the registry (its workers' records, its config and
 * its index entry), so callers wait on it as on an unregistered service
 * instead of failing fast -- e.g. after it moved to peers that do not
 * register.  Live workers register again with their next heartbeat.  Its
 * stats and dead letters stay. */
RRPC_EXPORT int rrpc_admin_forget(rrpc_admin *admin, const char *service);
/* Sets SERVICE's rate limits and concurrency caps (PROTOCOL.md section 9,
 * "Limits") to the JSON object LIMITS, or clears them (LIMITS NULL): its
 * running C workers follow within a heartbeat.  LIMITS that do not parse,
 * or a service that is not registered: RRPC_EINVAL with a message, and
 * nothing changes.  Method names are not checked against what the
 * workers serve (rrpc limits warns). */
RRPC_EXPORT int rrpc_admin_set_limits(rrpc_admin *admin, const char *service, const char *limits);

/* Deletes the dead letters of SERVICE; *removed (may be NULL) counts them. */
RRPC_EXPORT int rrpc_admin_dead_purge(rrpc_admin *admin, const char *service, long *removed);

/* What a metrics exporter needs about SERVICE (`rrpc web`'s /metrics), in
 * one round trip.  *out (new): {"service", "registered", "workers" (live),
 * "threads", "queue", "max_queue", "dead", "dead_total", "expired",
 * "shed", "redelivered", "lost" (the counters of PROTOCOL.md section 9,
 * "Service counters"), "oldest_age_s" (how long the oldest queued request
 * has waited, from its `sent` member on the broker's clock; 0 when the
 * queue is empty, null when the oldest carries no `sent`), "methods":
 * {NAME: {"calls", "errors", "le": [upper bounds in seconds],
 * "buckets": [cumulative counts, one per bound], "sum_s" (an estimate:
 * each call counted at the middle of its histogram bucket)}}}.  The
 * bounds are powers of 4 from 64 us to 67 s, each the exact edge of
 * histogram buckets; calls above the last are in "calls" only. */
RRPC_EXPORT int rrpc_admin_metrics(rrpc_admin *admin, const char *service, json_t **out);

/* Keeps SAMPLE (a JSON object, borrowed) in the broker as SERVICE's sample
 * for its current minute -- a second one in the same minute replaces the
 * first -- keeping at most KEEP_MINUTES minutes of them (<= 0: 60); the
 * lot expires KEEP_MINUTES after the last.  For charts that outlive the
 * program drawing them. */
RRPC_EXPORT int rrpc_admin_history_put(rrpc_admin *admin, const char *service, const json_t *sample,
                                       int keep_minutes);
/* SERVICE's samples, oldest first: *out (new) is an array of {"minute":
 * <Unix seconds at its start>, "sample": <as stored>}. */
RRPC_EXPORT int rrpc_admin_history(rrpc_admin *admin, const char *service, json_t **out);

/* ------------------------------------------------------------------ */
/* Async client                                                        */
/* ------------------------------------------------------------------ */

/* A multiplexed client: many calls in flight over one pair of Redis
 * connections (with a redis+cluster:// URL, one pair per master: requests
 * go to the master of their service list's slot, responses come from the
 * master of the reply list's), every response collected from one reply
 * list of its own (PROTOCOL.md section 3, reply_to) and matched to its call
 * by id.  Calls and notifications to a sharded service
 * (rrpc_server_options.shards) are spread over its lists, as the sync
 * client does: the shard count comes from the registry, read in the
 * background and trusted for a second, which also gives fail fast and
 * max_queue (rrpc_async_options.fail_fast).  It runs on a libevent 2.1
 * loop: either one it owns on a background thread, or the application's
 * (see rrpc_async_options.event_base).  Needs Redis >= 7 (BLMPOP) and
 * workers that honour reply_to (all rrpc workers do).  With an amqp:// URL
 * it is one RabbitMQ connection instead: direct reply-to, publisher confirms, each
 * request expiring with its call (PROTOCOL.md section 12). */
typedef struct rrpc_async rrpc_async;

/* The outcome of one call.  It runs exactly once per call that
 * rrpc_async_call accepted, on the event loop's thread, never from inside
 * rrpc_async_call itself:
 *   RRPC_OK         result is the call's result (borrowed: json_incref it
 *                   to keep it past the callback); error is NULL.
 *   RRPC_EREMOTE    error is the JSON-RPC error object (borrowed).
 *   RRPC_ETIMEDOUT  no response in time; the request was withdrawn from the
 *                   service list if no worker had taken it yet.
 *   RRPC_ECONNECT   the Redis link broke while the call was in flight (on
 *                   a Cluster: the link to any master, e.g. a failover);
 *                   not with resend_on_reconnect, which sends it again.
 *   RRPC_ECANCELED  rrpc_async_close() was called.
 *   RRPC_EREDIS, RRPC_EPROTO  Redis refused the request / the response
 *                   was malformed.
 *   RRPC_EUNAVAILABLE, RRPC_EOVERLOADED  with fail_fast: the service's
 *                   registered workers are all gone / its queue is at its
 *                   max_queue; over AMQP: the service has no queue (the
 *                   request came back) / its queue is full.
 *   RRPC_EINVAL     over AMQP: a priority (not supported there yet).
 * On failure both pointers are NULL unless stated; rrpc_async_errmsg(),
 * called inside the callback, describes the failure.  A callback may start
 * new calls but must not call rrpc_async_close(). */
typedef void (*rrpc_async_cb)(int status, json_t *result, json_t *error, void *udata);

typedef struct rrpc_async_options {
    size_t size;              /* as in rrpc_client_options: set by _init */
    const char *url;          /* as in rrpc_client_options; copied */
    const char *key_prefix;   /* as in rrpc_client_options; copied */
    double timeout_s;         /* default call timeout when a call passes 0; default 30 */
    double connect_timeout_s; /* connecting and reconnecting; default 5 */
    /* A libevent `struct event_base *` that the application owns and runs.
     * The client then creates no thread: rrpc_async_call and
     * rrpc_async_close must be called on the thread that runs the base,
     * and callbacks run there.  NULL (the default) gives the client a base
     * and a thread of its own: calls are then safe from any thread and
     * callbacks run on that background thread.  Ignore SIGPIPE (or block
     * it on the loop thread) in an application-owned loop, as with any
     * socket library; the background thread blocks all signals itself. */
    void *event_base;
    /* Calls in flight at most (accepted, callback not yet run); a call
     * beyond the limit fails with RRPC_ESTATE.  0 (default) = unlimited. */
    size_t max_in_flight;
    /* What the calls in flight do when the Redis link breaks.  0 (the
     * default, as rrpc_client_options.resend_on_reconnect): they fail at
     * once with RRPC_ECONNECT.  1: they stay in flight, and when the link
     * is back (the client reconnects by itself) every call not yet
     * answered whose deadline has not passed is sent again -- the same
     * request text, so the same id and reply key, to the same shard --
     * and goes on waiting; again after each later reconnect, until it is
     * answered or its timeout fails it with RRPC_ETIMEDOUT.  A service in
     * reliable mode answers such a call once (its dedup knows the resend
     * by reply_to and id); an at-most-once service may run it twice, and
     * the caller still gets one callback.  Notifications are never
     * resent.  docs/RELIABILITY.md section 3. */
    int resend_on_reconnect;
    /* Fail fast and max_queue, as rrpc_client_options.fail_fast (default
     * 1; docs/PROTOCOL.md section 9): a call to a service that registered
     * workers but has none alive -- all stopped, or their heartbeats
     * expired -- ends at once with RRPC_EUNAVAILABLE, nothing pushed, and
     * the calls already waiting for it end so within a second or two, their
     * requests withdrawn; a service that never registered (e.g. a
     * seed-style worker) is waited on as usual.  A service with a max_queue
     * gets each call pushed with the max_queue script, and a call that
     * finds its queue full ends at once with RRPC_EOVERLOADED (counted as
     * "shed" in its stats).  The client reads each service's registry at
     * most once a second, in the background, never per call; only the
     * first call to a service waits for the first read (one round trip).
     * 0 turns both off: calls are pushed and waited on, as before (a
     * sharded service's calls are still spread over its lists).  Ignored
     * over AMQP (amqp://), where a service with no queue is refused by the
     * broker. */
    int fail_fast;
} rrpc_async_options;

/* As rrpc_client_options_init_sized, for bindings. */
RRPC_EXPORT void rrpc_async_options_init_sized(rrpc_async_options *opts, size_t size);

/* Fills *opts with the defaults above. */
static inline void rrpc_async_options_init(rrpc_async_options *opts)
{
    rrpc_async_options_init_sized(opts, sizeof *opts);
}

/* Creates an async client.  It checks synchronously (up to
 * connect_timeout_s) that Redis is reachable, accepts the credentials and
 * supports BLMPOP, then connects its event-loop links (on a Cluster, after
 * reading the slot map; a reconnect reads it again, blocking the loop for
 * up to connect_timeout_s, never per call).  On RRPC_OK *out is
 * a new handle the caller owns and must rrpc_async_close().  On failure
 * *out is NULL and errmsg (if not NULL) receives a description. */
RRPC_EXPORT int rrpc_async_open(rrpc_async **out, const rrpc_async_options *opts, char *errmsg,
                                size_t errmsg_len);

/* Starts SERVICE.METHOD with PARAMS (an array, an object or NULL;
 * borrowed, encoded before this returns) and a timeout of timeout_s
 * seconds (0 = the client's default; more than 1e8 s, infinity included,
 * is cut to 1e8 s; negative or NaN is RRPC_EINVAL).  RRPC_OK: the call is queued and CB
 * will run exactly once, later.  A negative code: CB will never run;
 * RRPC_ECONNECT means the link is down (it is being re-established in the
 * background; calls fail fast meanwhile), RRPC_ESTATE that the client is
 * closing or max_in_flight calls are in flight, RRPC_EINVAL a bad
 * argument. */
RRPC_EXPORT int rrpc_async_call(rrpc_async *client, const char *service, const char *method,
                                const json_t *params, double timeout_s, rrpc_async_cb cb,
                                void *udata);

/* rrpc_async_call with per-call options OPTS (NULL: all defaults; read
 * before this returns).  The trace context of a call started from inside
 * a handler, on the handler's thread, continues the handled request's. */
RRPC_EXPORT int rrpc_async_call_with(rrpc_async *client, const char *service, const char *method,
                                     const json_t *params, const rrpc_call_options *opts,
                                     rrpc_async_cb cb, void *udata);

/* Cancels the call HANDLE (rrpc_call_options.handle) in flight: its
 * request is taken back if no worker has it yet, a handler running it
 * sees rrpc_request_cancelled if the call was started cancellable, and
 * its callback runs once, with RRPC_ECANCELED, before this returns (on
 * the loop thread: an own-loop client hands the cancel to it and waits).
 * RRPC_EINVAL: no such call in flight -- unknown, or already finished
 * (its callback ran or is running); RRPC_ESTATE: the client is closing. */
RRPC_EXPORT int rrpc_async_cancel(rrpc_async *client, uint64_t handle);

/* Queues a notification (no id, no reply).  RRPC_OK means queued; a
 * notification queued just before the link breaks may be lost. */
RRPC_EXPORT int rrpc_async_notify(rrpc_async *client, const char *service, const char *method,
                                  const json_t *params);

/* As rrpc_client_add_interceptor, for the async client: befores run on
 * the thread that calls rrpc_async_call, afters on the loop thread.  Add
 * them before the first call (RRPC_ESTATE once a call was made). */
RRPC_EXPORT int rrpc_async_add_interceptor(rrpc_async *client, rrpc_call_before_fn before,
                                           rrpc_call_after_fn after, void *udata);

/* Calls accepted whose callback has not started yet. */
RRPC_EXPORT size_t rrpc_async_in_flight(const rrpc_async *client);

/* Closes the client.  Every pending callback runs with RRPC_ECANCELED (on
 * the loop thread) before this returns; then the links are closed and the
 * handle is freed.  Must not be called from inside a callback, nor while
 * other threads may still call rrpc_async_call on the handle.  With an
 * application-owned base, call it on the loop thread; the base itself is
 * left alone.  NULL is allowed. */
RRPC_EXPORT void rrpc_async_close(rrpc_async *client);

/* The message of the last failure seen by the calling thread on this
 * client: a call that returned an error, or -- inside a callback -- the
 * reason for that callback's status.  "" if none.  Borrowed: valid on this
 * thread until its next call into the client. */
RRPC_EXPORT const char *rrpc_async_errmsg(const rrpc_async *client);

#ifdef __cplusplus
}
#endif

#endif /* RRPC_RRPC_H */
