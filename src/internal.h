/* internal.h -- declarations shared by librrpc's modules, never installed.
 *
 * The library is layered: url.c and protocol.c are pure (no I/O) and are
 * unit-tested on their own; transport.c is the only file that knows hiredis;
 * client.c and server.c build the public behaviour on top of both.  Names
 * here carry the rrpc__ prefix so they never clash with the public rrpc_ API.
 */
#ifndef RRPC_INTERNAL_H
#define RRPC_INTERNAL_H

#include <rrpc/rrpc.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define RRPC__ERRMSG_LEN 256
#define RRPC__KEY_MAX 512

/* The longest timeout rrpc honours, about three years: anything longer
 * (infinity included) means "no limit" in practice and is cut to this,
 * which struct timeval, libevent's clock arithmetic, a deadline in Redis
 * milliseconds and a BLPOP timeout all hold without overflow. */
#define RRPC__TIMEOUT_MAX_S 1e8

/* S as a safe number of seconds: NaN, negative or 0 give DFLT; more than
 * RRPC__TIMEOUT_MAX_S gives that.  For options and timevals, where a bad
 * value has a default rather than an error. */
static inline double rrpc__timeout_or(double s, double dflt)
{
    if (!(s > 0)) /* NaN too */
        return dflt;
    return s > RRPC__TIMEOUT_MAX_S ? RRPC__TIMEOUT_MAX_S : s;
}

/* Writes a formatted message into buf (truncating) and returns err, so a
 * failing path can be one `return rrpc__fail(...)` line. */
int rrpc__fail(char *buf, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- url.c: Redis URLs ------------------------------------------------ */

/* How a URL reaches Redis: one server named directly, the master a group of
 * Sentinels names, or a Redis Cluster reached through seed nodes. */
enum rrpc__url_kind { RRPC__URL_DIRECT, RRPC__URL_SENTINEL, RRPC__URL_CLUSTER };

typedef struct rrpc__addr {
    char *host;
    int port;
} rrpc__addr;

typedef struct rrpc__url {
    enum rrpc__url_kind kind;
    char *host;     /* NULL for unix sockets, Sentinel and Cluster URLs */
    int port;
    char *path;     /* unix socket path, NULL for TCP */
    char *user;     /* ACL user or NULL (for the data nodes, not the Sentinels) */
    char *password; /* NULL if none */
    int db;
    rrpc__addr *nodes; /* Sentinel addresses, or Cluster seed nodes */
    size_t nnodes;
    char *master;            /* Sentinel: the monitored master's name */
    char *sentinel_user;     /* Sentinel: AUTH for the Sentinels themselves */
    char *sentinel_password;
} rrpc__url;

/* Parses URL (NULL = $REDIS_URL, then redis://127.0.0.1:6379) into *out.
 * The caller owns the strings in *out and frees them with rrpc__url_free. */
int rrpc__url_parse(rrpc__url *out, const char *url, char *err, size_t errlen);
void rrpc__url_free(rrpc__url *url);
/* A deep copy of SRC into *dst (rrpc__url_free it).  RRPC_ENOMEM leaves
 * *dst zeroed. */
int rrpc__url_copy(rrpc__url *dst, const rrpc__url *src);
/* The URL with any password masked, for log lines.  Writes into buf. */
const char *rrpc__url_describe(const rrpc__url *url, char *buf, size_t len);
/* URL text as it may be shown (any text, parsed or not, any scheme): the
 * password of its userinfo (everything up to the last '@' but the user
 * name) and the values of password= and sentinel_password= replaced by
 * "****", redis-cli style.  Truncated to LEN; returns BUF. */
const char *rrpc__url_redact(const char *url, char *buf, size_t len);

/* ---- slot.c: Redis Cluster hash slots, no I/O ------------------------ */

#include "slot.h" /* until every module includes the headers it needs */

/* ---- shard.c: the request lists of a sharded service, no I/O ---------- */

/* Most shards a service may have (rrpc_server_options.shards). */
#define RRPC__MAX_SHARDS 1024

/* Builds the request list of shard SHARD of the service whose list key
 * (shard 0) is LIST_KEY: LIST_KEY itself for shard 0, else
 * "<LIST_KEY>#<shard>".  RRPC_EINVAL if it does not fit. */
int rrpc__shard_key(char *buf, size_t len, const char *list_key, int shard);
/* Nonzero if KEY[0..len) is the list of a shard k with 1 <= k < SHARDS. */
int rrpc__shard_is_key(const char *list_key, int shards, const char *key, size_t len);
/* N clamped to 1..RRPC__MAX_SHARDS (a count read from the registry). */
int rrpc__shard_count(long n);

/* ---- random.c: unguessable identifiers -------------------------------- */

/* Writes 32 lowercase hex digits (128 random bits) and a NUL into hex. */
int rrpc__random_hex128(char hex[33]);

/* Builds "<prefix>rrpc:reply:<32 hex>" into buf. */
int rrpc__new_reply_key(char *buf, size_t len, const char *prefix);

/* Nonzero if NAME may name a service: non-empty, no whitespace or control
 * characters (PROTOCOL.md section 1). */
int rrpc__valid_name(const char *name);

/* Joins prefix and name into buf; RRPC_EINVAL if it does not fit. */
int rrpc__key_join(char *buf, size_t len, const char *prefix, const char *name,
                   const char *suffix);

/* ---- protocol.c: JSON-RPC envelopes, no I/O --------------------------- */

/* A new request object.  params may be NULL (omitted), id NULL makes a
 * notification, reply_to NULL omits the member.  Arguments borrowed. */
json_t *rrpc__request_build(const char *method, const json_t *params, const char *id,
                            const char *reply_to);

/* New response objects.  id borrowed (NULL means JSON null); data stolen. */
json_t *rrpc__response_result(const json_t *id, json_t *result_stolen);
json_t *rrpc__response_error(const json_t *id, int code, const char *message,
                             json_t *data_stolen);
/* A response carrying ERROR (stolen), and a new error object. */
json_t *rrpc__response_error_object(const json_t *id, json_t *error_stolen);
json_t *rrpc__error_object(int code, const char *message, json_t *data_stolen);

/* The text of a response envelope built by the functions above (new,
 * free()): the same bytes as json_dumps with RRPC__JSON_ENCODE_FLAGS,
 * written directly because encoding the envelope object was a fifth of
 * a worker's instructions per call.  NULL if out of memory. */
char *rrpc__response_text(const json_t *response);

/* Checks a decoded request object against JSON-RPC 2.0.  Returns 0 when
 * valid, else RRPC_JSONRPC_INVALID_REQUEST with *why set to a static text. */
int rrpc__request_validate(const json_t *req, const char **why);

/* The key a response to REQ goes to (PROTOCOL.md section 3): reply_to, else
 * a string id, else a number id's text.  Fills buf (NUL-terminated, but the
 * key itself may hold NUL bytes: Redis keys are binary) and returns the
 * key's length, or 0 if the request names no usable key. */
size_t rrpc__reply_key(const json_t *req, char *buf, size_t len);

/* The largest magnitude of an integer every peer reads exactly: 2^53. */
#define RRPC__MAX_EXACT_INT 9007199254740992LL

/* A byte string that is not NUL-terminated (a service name read from
 * <prefix>rrpc:services). */
typedef struct rrpc__name {
    const char *s;
    size_t len;
} rrpc__name;

/* What a worker knows to judge a reply key by (PROTOCOL.md section 3,
 * "Which reply keys a worker accepts", rules 1 to 4).  Strings borrowed. */
typedef struct rrpc__key_rules {
    const char *prefix;
    const char *list_key, *dead_key, *stats_key; /* the service's own keys */
    int shards;
    const char *const *allowed_prefixes; /* NULL-terminated; NULL = any key */
    const rrpc__name *services;          /* registered names, rrpc__names_sort-ed */
    size_t nservices;
} rrpc__key_rules;

/* Sorts NAMES for rrpc__key_rules.services. */
void rrpc__names_sort(rrpc__name *names, size_t n);
/* NULL if a worker may reply on KEY[0..len), else the dead letter's reason
 * ("reply key refused: ...", a static text).  Rule 5 (the key's type, in
 * Redis) is the reply script's. */
const char *rrpc__reply_key_refusal(const rrpc__key_rules *r, const char *key, size_t len);

/* The reply script of PROTOCOL.md section 3, byte for byte as published. */
extern const char rrpc__reply_script[];

/* Decodes a response text for the call with id EXPECTED_ID.  On RRPC_OK
 * *result is new; on RRPC_EREMOTE *error is new; else both stay NULL and
 * err describes the problem. */
int rrpc__response_parse(const char *text, size_t len, const char *expected_id,
                         json_t **result, json_t **error, char *err, size_t errlen);

/* Parse flags shared by every decoder: top-level scalars are decoded (and
 * rejected as invalid requests later), NUL inside strings is allowed. */
#define RRPC__JSON_DECODE_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)
/* Compact output that keeps NUL-bearing strings intact. */
#define RRPC__JSON_ENCODE_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

/* ---- dispatch.c: one message in, one outcome out, no I/O -------------- */

typedef struct rrpc__method {
    char *name;
    char *description;
    rrpc_method_fn fn;
    void *udata;
} rrpc__method;

typedef struct rrpc__stats rrpc__stats;

typedef struct rrpc__methods {
    rrpc__method *items;
    size_t count;
    size_t cap;
    rrpc__stats *stats; /* per-method counters while a server runs, else NULL */
} rrpc__methods;

int rrpc__methods_add(rrpc__methods *m, const char *name, rrpc_method_fn fn, void *udata,
                      const char *description);
const rrpc__method *rrpc__methods_find(const rrpc__methods *m, const char *name);
void rrpc__methods_free(rrpc__methods *m);

/* The Redis server's clock as seen from this process: deadlines are
 * expressed on it (PROTOCOL.md section 7) so that callers' and workers'
 * clocks need not agree.  offset_ms is Redis time minus local wall time,
 * measured with TIME; measured_at is when (monotonic), 0 = never. */
typedef struct rrpc__clock {
    double offset_ms;
    double measured_at;
} rrpc__clock;

/* Records a TIME reply (seconds, microseconds) read at local time
 * LOCAL_MS, with the round trip RTT_MS it took. */
void rrpc__clock_set(rrpc__clock *c, long long sec, long long usec, double local_ms,
                     double rtt_ms);
/* The current time on the Redis clock, in milliseconds since the epoch. */
long long rrpc__clock_redis_ms(const rrpc__clock *c);
/* Seconds since the clock was last measured (a large number if never). */
double rrpc__clock_age(const rrpc__clock *c);

/* Sets REQ's deadline member (PROTOCOL.md section 7): TIMEOUT_S from now on
 * the Redis clock C.  Nothing is set if C was never measured. */
void rrpc__request_set_deadline(json_t *req, const rrpc__clock *c, double timeout_s);

/* A call's timeout cut to the deadline of the request the calling thread
 * is handling, if it is inside a handler (rrpc_request_time_left). */
double rrpc__inherited_timeout(double timeout_s);

typedef struct rrpc__limits {
    size_t max_request_bytes;
    size_t max_batch;
    double batch_time_s; /* a JSON-RPC batch runs this long at most; 0: no limit */
} rrpc__limits;

/* What a worker must do after handling one popped message.  Every pointer
 * is owned by the outcome and released by rrpc__outcome_clear(). */
typedef struct rrpc__outcome {
    char *reply_key;      /* where to RPUSH response, or NULL */
    size_t reply_key_len; /* binary length of reply_key */
    char *response;       /* the response text, or NULL (nothing to send) */
    char *dead_reason;    /* non-NULL: record a dead letter with this reason */
    json_t *dead_response; /* the undeliverable response, if any */
    unsigned requests;    /* request objects seen (batch elements singly) */
    unsigned notifications;
    unsigned errors;      /* error responses produced */
    unsigned expired;     /* requests refused because their deadline had passed */
    json_t *effects;      /* rrpc_request_add_effect commands: [[arg, ...], ...] or NULL */
} rrpc__outcome;

/* CLOCK (may be NULL: deadlines are then not checked) tells the Redis
 * server's time, against which request deadlines are judged. */
void rrpc__dispatch(const rrpc__methods *methods, const rrpc__limits *limits,
                    const rrpc__clock *clock, const char *text, size_t len, rrpc__outcome *out);
void rrpc__outcome_clear(rrpc__outcome *out);

/* Dead letters keep a bounded copy of what they describe (PROTOCOL.md
 * section 6): the first bytes of an oversized message or response. */
#define RRPC__DEAD_PREFIX_BYTES 4096

/* The dead-letter record for MESSAGE (PROTOCOL.md section 6), as new text.
 * A message or response of at most KEEP bytes is kept whole; a longer one
 * as its first RRPC__DEAD_PREFIX_BYTES bytes, its length and SHA-1.  The
 * response is RESPONSE (a value) or RESPONSE_TEXT (JSON text), or neither. */
char *rrpc__dead_letter_text(const char *service, const char *reason, const char *message,
                             size_t message_len, size_t keep, const json_t *response,
                             const char *response_text);

/* The SHA-1 of DATA[0..len) as 40 lowercase hex digits and a NUL. */
void rrpc__sha1_hex(const void *data, size_t len, char hex[41]);

/* ---- reliable.c: at-least-once delivery (RELIABILITY.md) --------------- */

typedef struct rrpc__conn rrpc__conn;

typedef struct rrpc__rel_options {
    int max_deliveries;
    double dedup_window_s;
    double heartbeat_ttl_s;
    long dead_letter_max;
    size_t max_request_bytes; /* larger requests are never decoded by a script */
    const char *dead_key;  /* borrowed from the server */
    const char *stats_key; /* borrowed from the server */
} rrpc__rel_options;

/* The reliable-mode state of one server: its keys and heartbeat thread. */
typedef struct rrpc__rel {
    rrpc__rel_options opts;
    const char *service;  /* borrowed */
    const char *list_key; /* borrowed */
    char tag[RRPC__KEY_MAX];        /* "{<list key>}:" */
    char pid_id[128];               /* host:pid:random, this process */
    char set_key[RRPC__KEY_MAX];    /* {L}:inflight, the set of worker ids */
    char alive_key[RRPC__KEY_MAX];  /* {L}:alive:<pid_id>, the heartbeat */
    char done_prefix[RRPC__KEY_MAX]; /* {L}:done:, + SHA-1 of a request */
    char window_text[24];
    char max_text[16];
    char size_text[24];                /* max_request_bytes */
    char trim_text[24];                /* -dead_letter_max, for LTRIM */
    char take_sha[41], commit_sha[41]; /* SHA-1s of the scripts workers send by EVALSHA */
    rrpc__conn *conn;
    pthread_t thread;
    int started;
    int reap_failing; /* the last reap failed (logged once) */
    _Atomic int stop;
    _Atomic uint_fast64_t *redelivered, *dead_letters; /* the server's counters */
} rrpc__rel;

/* One worker thread's keys: its id W, its in-flight hash {L}:inflight:W
 * and the list {L}:landing:W that BLMOVE moves a request into. */
typedef struct rrpc__rel_worker {
    char wid[RRPC__KEY_MAX];
    char inflight[RRPC__KEY_MAX];
    char landing[RRPC__KEY_MAX];
} rrpc__rel_worker;

/* An owned command: every argument is a copy (binary, with length). */
typedef struct rrpc__cmd {
    char **argv;
    size_t *lens;
    size_t argc, cap;
} rrpc__cmd;
void rrpc__cmd_free(rrpc__cmd *c);

/* The longest list key (prefix + service) whose reliable keys fit. */
size_t rrpc__rel_max_list_key(void);
/* RRPC_EINVAL if LIST_KEY is longer than rrpc__rel_max_list_key(). */
int rrpc__rel_init(rrpc__rel *r, const char *list_key, const char *service,
                   const rrpc__rel_options *opts);
/* Worker THREAD's keys. */
int rrpc__rel_worker_keys(const rrpc__rel *r, int thread, rrpc__rel_worker *k);
/* The take command (12 borrowed arguments) for COUNT more requests; BASE
 * (text) is unique to this take among the worker's takes. */
void rrpc__rel_take_argv(const rrpc__rel *r, const rrpc__rel_worker *k, const char *count,
                         const char *base, const char *argv[12]);

/* What one commit does (see the commit script). */
typedef struct rrpc__rel_commit {
    const char *inflight, *field; /* the worker's in-flight hash and the request's field */
    const char *sha1;             /* the request's identity */
    const char *key;              /* reply key (binary, key_len) or NULL: nothing to send */
    size_t key_len;
    const char *response; /* response (response_len bytes) or NULL */
    size_t response_len;
    int again;               /* the answer remembered before is sent again: no new memory */
    const json_t *effects;   /* rrpc_request_add_effect commands, or NULL */
    const char *dead_letter; /* a dead-letter record to file, or NULL */
    const char *reply_ttl;
} rrpc__rel_commit;
/* Builds into *c (owned, rrpc__cmd_free) the commit described by M. */
int rrpc__rel_commit_cmd(const rrpc__rel *r, rrpc__cmd *c, const rrpc__rel_commit *m);
/* The commit ORIG again, with DEAD_LETTER and without its reply key (which
 * was refused): into *c. */
int rrpc__rel_commit_dead(const rrpc__cmd *orig, rrpc__cmd *c, const char *dead_letter);
enum { RRPC__COMMIT_FIELD, RRPC__COMMIT_RESPONSE, RRPC__COMMIT_DEAD_LETTER };
/* A commit command's field, response or dead letter ("" if none),
 * borrowed; NULL if the command has no such argument. */
const char *rrpc__rel_commit_arg(const rrpc__cmd *c, int which, size_t *len);
/* Splits a remembered answer "K<len>:<key><response>"; 0 if it holds no
 * response.  Pointers are borrowed from ANSWER. */
int rrpc__rel_parse_answer(const char *answer, size_t len, const char **key, size_t *key_len,
                           const char **response, size_t *response_len);
/* Loads the worker scripts on C (after a reconnect: Redis may have
 * restarted and forgotten them). */
int rrpc__rel_load_scripts(const rrpc__rel *r, rrpc__conn *c);
/* Loads the worker scripts on C and keeps their SHA-1s in R, as
 * rrpc__rel_start does on its own link (server_worker.h). */
int rrpc__rel_learn_scripts(rrpc__rel *r, rrpc__conn *c);
/* Starts the heartbeat (and reaper) thread on a connection of its own, and
 * loads the worker scripts. */
int rrpc__rel_start(rrpc__rel *r, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen);
/* Stops it and unregisters the N workers WS that hold nothing. */
void rrpc__rel_stop(rrpc__rel *r, const rrpc__rel_worker *ws, int n);

/* ---- transport.c: the only module that knows hiredis ------------------ */

typedef struct rrpc__reply rrpc__reply;

enum rrpc__reply_type {
    RRPC__REPLY_STRING,
    RRPC__REPLY_ARRAY,
    RRPC__REPLY_INTEGER,
    RRPC__REPLY_NIL,
    RRPC__REPLY_STATUS,
    RRPC__REPLY_ERROR
};

/* Sets SIGPIPE to ignored if it still has its default disposition: a
 * broken link must be an error code, not the death of the process. */
void rrpc__ignore_sigpipe(void);

/* Connects, authenticates and selects the database.  On RRPC_OK *out is
 * a new connection owned by the caller (rrpc__conn_close). */
int rrpc__conn_open(rrpc__conn **out, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen);
void rrpc__conn_close(rrpc__conn *c);
/* Drops and re-establishes the link (including AUTH and SELECT). */
int rrpc__conn_reconnect(rrpc__conn *c);
/* The same, but connecting and the handshake take at most LIMIT_S (when
 * shorter than the connect timeout): a call's deadline bounds its resend. */
int rrpc__conn_reconnect_within(rrpc__conn *c, double limit_s);
/* For links that cannot ask Sentinels themselves (the async ones): finds
 * the master of the Sentinel URL URL as a sync connection would (asking
 * each Sentinel, checking ROLE) and fills *direct (new, rrpc__url_free)
 * with a plain redis:// URL of that master, with URL's credentials and db. */
int rrpc__sentinel_resolve(const rrpc__url *url, double connect_timeout_s, rrpc__url *direct,
                           char *err, size_t errlen);
/* Reads the slot map of the Cluster URL URL with CLUSTER SLOTS, asking its
 * seed nodes in turn as a sync connection would, for links that route
 * commands themselves (the async ones).  On RRPC_OK *map holds the masters
 * that own slots, no link (rrpc__cmap_free); else it is empty. */
typedef struct rrpc__cmap rrpc__cmap; /* cluster_map.h */
int rrpc__cluster_read_map(const rrpc__url *url, double connect_timeout_s, rrpc__cmap *map,
                           char *err, size_t errlen);
/* Sets the socket read timeout; 0 means wait forever. */
int rrpc__conn_set_timeout(rrpc__conn *c, double seconds);
/* Queues a command in the output buffer; nothing is sent until a reply is
 * read.  Strings are copied. */
int rrpc__conn_append(rrpc__conn *c, int argc, const char **argv, const size_t *lens);
/* Convenience for NUL-terminated arguments. */
int rrpc__conn_appendv(rrpc__conn *c, int argc, ...);
/* Sends what is queued and reads the next reply.  On RRPC_OK *out is new
 * (rrpc__reply_free).  RRPC_ECONNECT or RRPC_ETIMEDOUT leave the connection
 * unusable until rrpc__conn_reconnect. */
int rrpc__conn_read(rrpc__conn *c, rrpc__reply **out);
/* The last transport error message.  Borrowed. */
const char *rrpc__conn_errmsg(const rrpc__conn *c);
/* Nonzero if the link is known to be broken. */
int rrpc__conn_broken(const rrpc__conn *c);
/* Nonzero if the peer closed an idle link (no reply outstanding). */
int rrpc__conn_peer_closed(const rrpc__conn *c);

void rrpc__reply_free(rrpc__reply *r);
/* Nonzero for the error replies of a Redis that will serve again shortly:
 * still loading its data after a restart, busy in a script, a replica cut
 * off from its master.  Retrying after a pause is the right answer. */
int rrpc__reply_transient(const rrpc__reply *r);
enum rrpc__reply_type rrpc__reply_type(const rrpc__reply *r);
const char *rrpc__reply_str(const rrpc__reply *r, size_t *len);
long long rrpc__reply_integer(const rrpc__reply *r);
size_t rrpc__reply_count(const rrpc__reply *r);
const rrpc__reply *rrpc__reply_element(const rrpc__reply *r, size_t i);

/* ---- time ------------------------------------------------------------ */

double rrpc__now(void);      /* wall clock, seconds since the epoch */
double rrpc__monotonic(void); /* monotonic seconds */
void rrpc__sleep(double seconds);

/* Reads the Redis clock from a TIME reply R to a command sent at local
 * wall time SENT_MS. */
int rrpc__clock_parse_time(rrpc__clock *c, const rrpc__reply *r, double sent_ms);
/* Measures the Redis clock with one TIME round trip on CONN, which must
 * have no replies outstanding.  If Redis refuses TIME (an ACL, say) the
 * clock stays unmeasured and deadlines are not enforced. */
int rrpc__clock_sync(rrpc__clock *c, rrpc__conn *conn);

/* ---- stats.c: per-method counters and latency histograms ------------ */

/* Bucket 0 holds latencies below 1 us; bucket b >= 1 starts at
 * 2^e * (1 + s/4) us with e = (b-1)/4, s = (b-1)%4 (PROTOCOL.md 9). */
#define RRPC__HIST_BUCKETS 129

typedef struct rrpc__method_stats {
    atomic_uint_fast64_t calls, errors;
    atomic_uint_fast64_t hist[RRPC__HIST_BUCKETS];
    /* What the last successful flush sent; touched by the flushing thread only. */
    uint64_t sent_calls, sent_errors, sent_hist[RRPC__HIST_BUCKETS];
} rrpc__method_stats;

struct rrpc__stats {
    size_t count;                /* as many as the method table has entries */
    rrpc__method_stats *methods; /* indexed like rrpc__methods.items */
};

int rrpc__latency_bucket(double seconds);
double rrpc__bucket_lower_us(int bucket);
int rrpc__stats_init(rrpc__stats *st, size_t methods);
void rrpc__stats_free(rrpc__stats *st);
/* The start time of a handler call, or 0 without stats (no clock read). */
double rrpc__stats_start(const rrpc__stats *st);
/* Counts a call of method number METHOD that began at STARTED.  NULL ok. */
void rrpc__stats_record(rrpc__stats *st, size_t method, double started, int error);
/* Sends the changes since the last flush as HINCRBYs on KEY and waits for
 * them.  NAMES gives the method names in table order. */
int rrpc__stats_flush(rrpc__stats *st, const rrpc__methods *names, rrpc__conn *c,
                      const char *key);

/* ---- registry.c: a server's record, heartbeat and rpc.ping ----------- */

typedef struct rrpc__registry rrpc__registry;

/* Builds "{LIST_KEY}SUFFIX": a per-service key in the list's cluster slot. */
int rrpc__tagged_key(char *buf, size_t len, const char *list_key, const char *suffix);

/* A registry for a server of SERVICE whose request list is LIST_KEY.
 * Registers the built-in rpc.ping into METHODS.  NULL when out of memory. */
rrpc__registry *rrpc__registry_new(const rrpc_server_options *opts, const char *prefix,
                                   const char *list_key, rrpc__methods *methods);
void rrpc__registry_free(rrpc__registry *r);
/* Records the informal params shape of METHOD (borrowed, copied). */
int rrpc__registry_set_params(rrpc__registry *r, const char *method, const json_t *shape);
/* Called by rrpc_server_run before the workers start: turns the per-method
 * stats on, writes the record and starts the heartbeat thread.  On failure
 * ERR says why and nothing is left running. */
int rrpc__registry_start(rrpc__registry *r, const rrpc__url *url, double connect_timeout_s,
                         int threads, char *err, size_t errlen);
/* Called after the workers have returned: stops the heartbeat, flushes the
 * last stats and removes the record, so callers fail fast at once. */
void rrpc__registry_stop(rrpc__registry *r);

/* ---- failfast.c: the client's view of the registry --------------------- */

typedef struct rrpc__failfast rrpc__failfast;

/* What a caller knows about a service before and while it waits. */
typedef struct rrpc__svc_state {
    int registered;    /* the service has a registry (some worker registered) */
    int live;          /* registered workers whose heartbeat has not expired */
    long max_queue;    /* 0: none */
    double slice_s;    /* wait in BLPOP slices this long (0: one wait) */
    double deadline;   /* monotonic time the call gives up */
    int unavailable;   /* set when the last worker went during the wait */
    int shard;         /* the shard (request list, shard.c) this push goes to */
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
/* Queues the push of TEXT onto LIST: RPUSH, or for a service with a
 * max_queue the check-and-push script. */
int rrpc__failfast_append_push(rrpc__conn *c, const char *list, const char *text,
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
int rrpc__failfast_again(rrpc__failfast *ff, rrpc__conn *c, const char *list,
                         rrpc__svc_state *st);

#endif /* RRPC_INTERNAL_H */
