/* server.c -- the multi-threaded worker pool behind rrpc_server_run.
 *
 * Each worker thread owns one Redis connection and runs the loop of
 * docs/PROTOCOL.md: pop a batch of requests, dispatch them, and send every
 * reply, expiry and dead letter in one pipeline together with the next pop.
 * The pop is a pair, like bench/floor_server.c's: BLPOP waits for one
 * request (with a short timeout, so that a stop request is noticed quickly)
 * and LPOP with a count takes the rest that are queued.  So every batch,
 * full or not, costs exactly one round trip; an empty LPOP never costs one
 * of its own.  Threads share nothing but the method table (read-only while
 * running) and atomic counters.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "server_worker.h"
#include "log.h"
#include "opts.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK_TIMEOUT      "0.5"
#define QUICK_TIMEOUT      "0.01" /* the pop's wait while something awaits confirmation */
#define SOCKET_TIMEOUT_S   10.0
#define BACKOFF_MIN_S      0.05
#define BACKOFF_MAX_S      5.0
#define MAX_BATCH_ELEMENTS 1000
#define FLUSH_AFTER_S      0.005 /* send a batch's finished replies after this long */
#define GIVE_BACK_AFTER_S  0.02  /* a batch still busy after this hands back its rest */
#define CLOCK_REFRESH_S    10.0  /* re-read the Redis clock this often */
#define SERVICES_REFRESH_S 5.0   /* re-read <prefix>rrpc:services this often */
#define RETRY_PAUSE_MAX_S  1.0   /* longest pause before resending after "not now" */
#define STOP_RETRY_S       5.0   /* a stopping worker tries this long to deliver */
#define BATCH_BYTES_LIMITS 4     /* pop one at a time after a batch of 4 size limits */
#define BATCH_TIME_S       5.0   /* default rrpc_server_options.batch_time_limit_s */

struct rrpc_server {
    rrpc__url url;
    char *prefix;
    char *service;
    char list_key[RRPC__KEY_MAX];
    char dead_key[RRPC__KEY_MAX];
    char stats_key[RRPC__KEY_MAX];
    char services_key[RRPC__KEY_MAX]; /* <prefix>rrpc:services */
    char reply_sha[41];               /* SHA-1 of rrpc__reply_script */
    char **reply_prefixes;            /* the allow-list (NULL-terminated), or NULL */
    rrpc__key_rules rules;            /* the reply-key rules, without the services */
    int workers;
    int shards; /* request lists (shard.c); worker i pops shard i % shards */
    int reply_ttl_s;
    long dead_letter_max;
    int batch_max;
    int handle_signals;
    double connect_timeout_s;
    double start_timeout_s; /* waiting for Redis at start; 0 = forever, < 0 = not */
    int reliable;
    rrpc__rel rel; /* reliable mode's keys and heartbeat */
    int refusal;   /* not 0: rrpc_server_run refuses to start, errmsg says why */
    rrpc__methods methods;
    rrpc__limits limits;
    rrpc__registry *registry; /* record, heartbeat, stats, rpc.ping (registry.c) */
    atomic_int stop;
    atomic_int running;
    atomic_uint_fast64_t requests, notifications, errors, dead_letters, expired;
    atomic_uint_fast64_t duplicates, redelivered, given_back, lost;
    atomic_int batch_now; /* requests a pop takes beyond the first (adapt_batch) */
    char errmsg[RRPC__ERRMSG_LEN];
};

/* One pipelined command whose reply the worker must check. */
/* A reply and a dead letter own their texts until Redis has confirmed
 * them, so that after a broken link, or while Redis says "not now", they
 * can be sent again instead of being lost with hiredis's output buffer. */
enum op_kind {
    OP_PLAIN, /* follows an OP_DEAD (LTRIM, HINCRBY), effects, acks */
    OP_REPLY, /* the reply script for a batch's responses: items owned */
    OP_DEAD,  /* RPUSH of a dead letter: text owned */
    OP_POP,
    OP_TIME,     /* TIME, to keep the Redis clock estimate fresh */
    OP_SERVICES, /* SMEMBERS <prefix>rrpc:services, for the reply-key rules */
    OP_COMMIT,   /* reliable mode: the commit script of one request; cmd owned */
    OP_GIVEBACK, /* LPUSH of requests handed back unstarted; cmd owned */
    OP_EFFECTS,  /* the effects script of one request (effects_script); cmd owned */
    OP_LOST      /* HINCRBY <service>:stats lost <count> */
};

/* Reliable mode: how long a commit Redis refused waits before it is sent
 * again (doubling up to the maximum), while its request stays held. */
#define HOLD_MIN_S 0.05
#define HOLD_MAX_S 2.0

/* At-most-once: how long a refused answer's guard against applying its
 * effects twice lives if the worker never learns that they were applied
 * (it deletes the guard once Redis confirms them). */
#define EFFECTS_GUARD_MS "3600000"
/* How much of an id (as escaped JSON) a LOST line shows at most. */
#define LOG_ID_MAX 1024

/* One response on its way to its reply key. */
typedef struct reply_item {
    const char *msg; /* the request text, for a dead letter: borrowed, or msg_owned */
    size_t msg_len;
    char *msg_owned;
    char *key; /* owned reply key (binary, key_len bytes) */
    size_t key_len;
    char *text;        /* owned response text */
    int alone;         /* refused as part of a call: sent in a call of its own */
    double give_up_at; /* refused for memory: lost if still refused then (0: not yet) */
} reply_item;

typedef struct op {
    enum op_kind kind;
    const char *msg; /* OP_COMMIT: the request text, for a dead letter */
    size_t msg_len;
    char *msg_owned; /* msg's copy once the op outlives the popped reply */
    char *key;
    char *text;        /* OP_DEAD: owned text to push */
    double sent_ms;    /* OP_TIME: local wall time it was queued */
    rrpc__cmd cmd;     /* OP_COMMIT: the whole command, resent as it is */
    reply_item *items; /* OP_REPLY: the responses of the call, owned */
    size_t nitems;
    int eval;                 /* OP_REPLY: sent as EVAL, so the script is cached now */
    double give_up_at;        /* at-most-once, refused for memory: lost if still refused then */
    unsigned long long count; /* OP_LOST: the count added */
} op;

typedef struct worker {
    rrpc_server *srv;
    rrpc__conn *conn;
    pthread_t thread;
    int id;
    op *ops; /* commands sent, replies not yet read */
    size_t nops, capops;
    reply_item *pend; /* responses held for the next reply script call */
    size_t npend, cappend;
    op *retry; /* ops to send again: the link broke, or Redis said "not now" */
    size_t nretry, capretry;
    int retry_wait;     /* Redis said "not now": pause before resending */
    double retry_pause; /* that pause, growing while it keeps saying so */
    int reload_scripts; /* reliable mode's scripts are gone from Redis */
    int script_known;   /* the reply script is cached on this link: EVALSHA */
    int split_pending;  /* answers of a refused call wait to go one by one */
    rrpc__key_rules rules;
    rrpc__name *services; /* registered names, sorted, for rules.services */
    char *services_buf;
    double services_at; /* when SMEMBERS was last sent (monotonic), 0 never */
    int services_refused;
    rrpc__reply *in_hand[2];          /* the popped pair the pending replies refer to */
    rrpc__clock clock;                /* the Redis server's time, for request deadlines */
    char transient[RRPC__ERRMSG_LEN]; /* why collect gave up on a working link */
    char ttl_text[16];
    char trim_text[24];
    char batch_text[16];      /* how many more requests the next pop takes */
    char list[RRPC__KEY_MAX]; /* the request list it pops: its shard's */
    /* Reliable mode. */
    rrpc__rel_worker rk;      /* its id and keys */
    unsigned long long takes; /* takes sent: makes every in-flight field unique */
    char base_text[24];       /* the take's token base: takes as 16 hex digits */
    int registered;           /* its id is in {L}:inflight (else SADD before BLMOVE) */
    int pop_failing;          /* the last pop was refused (logged once) */
    op *held; /* commits Redis refused (not transiently), at-most-once answers, dead letters,
               * effects and give-backs refused for memory: sent again later */
    size_t nheld, capheld;
    double held_at, held_delay; /* when, and the current backoff */
    unsigned long long lost_unsent;  /* losses not yet added to <service>:stats */
    unsigned long long effects_sent; /* makes every effects guard key unique */
    char token[33];                  /* this thread's random part of the guard keys */
} worker;

void rrpc_server_options_init_sized(rrpc_server_options *opts, size_t size)
{
    rrpc_server_options d = {.size = sizeof d,
                             .reply_ttl_s = 60,
                             .max_request_bytes = 1024 * 1024,
                             .dead_letter_max = 1000,
                             .batch_max = 128,
                             .handle_signals = 1,
                             .connect_timeout_s = 5,
                             .max_deliveries = 3,
                             .dedup_window_s = 600,
                             .heartbeat = 1,
                             .heartbeat_interval_s = 1,
                             .heartbeat_ttl_s = 5,
                             .batch_time_limit_s = BATCH_TIME_S};
    rrpc__opts_init(opts, size, &d, sizeof d);
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int set_keys(rrpc_server *s)
{
    if (rrpc__key_join(s->list_key, sizeof s->list_key, s->prefix, s->service, NULL) ||
        rrpc__key_join(s->dead_key, sizeof s->dead_key, s->prefix, s->service, ":dead") ||
        rrpc__key_join(s->stats_key, sizeof s->stats_key, s->prefix, s->service, ":stats"))
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL, "service name too long");
    char last[RRPC__KEY_MAX];
    if (rrpc__shard_key(last, sizeof last, s->list_key, s->shards - 1) != RRPC_OK ||
        rrpc__key_join(s->services_key, sizeof s->services_key, s->prefix, "rrpc:services", NULL))
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL, "service name too long");
    s->rules = (rrpc__key_rules){.prefix = s->prefix,
                                 .list_key = s->list_key,
                                 .dead_key = s->dead_key,
                                 .stats_key = s->stats_key,
                                 .shards = s->shards,
                                 .allowed_prefixes = (const char *const *)s->reply_prefixes};
    return RRPC_OK;
}

/* Copies the NULL-terminated allow-list of reply-key prefixes. */
static int copy_prefixes(rrpc_server *s, const char *const *prefixes)
{
    if (prefixes == NULL)
        return RRPC_OK;
    size_t n = 0;
    while (prefixes[n] != NULL)
        n++;
    s->reply_prefixes = calloc(n + 1, sizeof *s->reply_prefixes);
    if (s->reply_prefixes == NULL)
        return RRPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if ((s->reply_prefixes[i] = strdup(prefixes[i])) == NULL)
            return RRPC_ENOMEM;
    return RRPC_OK;
}

static int init_reliable(rrpc_server *s, const rrpc_server_options *opts)
{
    rrpc__rel_options ro = {
        .max_deliveries = opts->max_deliveries > 0 ? opts->max_deliveries : 3,
        .dedup_window_s = opts->dedup_window_s > 0 ? opts->dedup_window_s : 600,
        .heartbeat_ttl_s = opts->heartbeat_ttl_s > 0 ? opts->heartbeat_ttl_s : 5,
        .dead_letter_max = s->dead_letter_max,
        .max_request_bytes = s->limits.max_request_bytes,
        .dead_key = s->dead_key,
        .stats_key = s->stats_key,
    };
    int rc = rrpc__rel_init(&s->rel, s->list_key, s->service, &ro);
    s->rel.redelivered = &s->redelivered;
    s->rel.dead_letters = &s->dead_letters;
    /* Refused by rrpc_server_run, which can say why (rrpc_server_errmsg);
     * a key cut short would silently mix services. */
    if (rc == RRPC_EINVAL)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                                "reliable mode: key prefix + service name too long (%zu bytes; at "
                                "most %zu, so that every reliable key fits in %d bytes)",
                                strlen(s->list_key), rrpc__rel_max_list_key(), RRPC__KEY_MAX - 1);
    return rc == RRPC_EINVAL ? RRPC_OK : rc;
}

int rrpc_server_new(rrpc_server **out, const rrpc_server_options *caller)
{
    rrpc_server_options own; /* the caller's options, as long as this library's */
    const rrpc_server_options *opts = &own;
    if (out == NULL || caller == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    rrpc_server_options_init(&own);
    if (rrpc__opts_load(&own, sizeof own, caller, NULL, 0) != RRPC_OK)
        return RRPC_EINVAL;
    if (!rrpc__valid_name(opts->service))
        return RRPC_EINVAL; /* empty, or whitespace/control characters */
    /* Reliable mode keeps one in-flight state per request list; it is not
     * sharded (yet), so the two do not mix. */
    if (opts->shards < 0 || opts->shards > RRPC__MAX_SHARDS || (opts->reliable && opts->shards > 1))
        return RRPC_EINVAL;
    rrpc_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RRPC_ENOMEM;
    s->service = strdup(opts->service);
    s->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    s->workers = opts->workers > 0 ? opts->workers : cpu_count();
    s->shards = opts->shards > 1 ? opts->shards : 1;
    if (s->workers < s->shards)
        s->workers = s->shards; /* every shard needs a worker of its own */
    s->reply_ttl_s = opts->reply_ttl_s > 0 ? opts->reply_ttl_s : 60;
    s->dead_letter_max = opts->dead_letter_max > 0 ? opts->dead_letter_max : 1000;
    s->batch_max = opts->batch_max > 0 ? opts->batch_max : 128;
    atomic_store(&s->batch_now, s->batch_max);
    s->handle_signals = opts->handle_signals;
    s->connect_timeout_s = opts->connect_timeout_s;
    s->start_timeout_s = opts->start_timeout_s;
    s->limits.max_request_bytes = opts->max_request_bytes ? opts->max_request_bytes : 1 << 20;
    s->limits.max_batch = MAX_BATCH_ELEMENTS;
    s->limits.batch_time_s = opts->batch_time_limit_s > 0   ? opts->batch_time_limit_s
                             : opts->batch_time_limit_s < 0 ? 0 /* no limit */
                                                            : BATCH_TIME_S;
    s->reliable = opts->reliable;
    rrpc__sha1_hex(rrpc__reply_script, strlen(rrpc__reply_script), s->reply_sha);
    int rc = s->service && s->prefix ? RRPC_OK : RRPC_ENOMEM;
    if (rc == RRPC_OK)
        rc = copy_prefixes(s, opts->reply_prefixes);
    if (rc == RRPC_OK)
        rc = set_keys(s);
    if (rc == RRPC_OK &&
        (s->registry = rrpc__registry_new(opts, s->prefix, s->list_key, &s->methods)) == NULL)
        rc = RRPC_ENOMEM;
    if (rc == RRPC_OK && s->reliable)
        rc = init_reliable(s, opts);
    if (rc == RRPC_OK)
        rc = rrpc__url_parse(&s->url, opts->url, s->errmsg, sizeof s->errmsg);
    /* The reaper writes the dead-letter list and stats, outside the
     * service's slot: Cluster would refuse it, and killed workers' requests
     * would never come back.  Say so at start rather than half-run. */
    if (rc == RRPC_OK && s->reliable && !s->refusal && s->url.kind == RRPC__URL_CLUSTER)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                                "reliable mode does not work on Redis Cluster (yet): use a "
                                "single Redis or Sentinel, or serve without --reliable");
    if (rc != RRPC_OK) {
        rrpc_server_free(s);
        return rc;
    }
    *out = s;
    return RRPC_OK;
}

void rrpc_server_free(rrpc_server *s)
{
    if (s == NULL)
        return;
    rrpc__registry_free(s->registry);
    rrpc__methods_free(&s->methods);
    rrpc__url_free(&s->url);
    for (size_t i = 0; s->reply_prefixes && s->reply_prefixes[i]; i++)
        free(s->reply_prefixes[i]);
    free(s->reply_prefixes);
    free(s->service);
    free(s->prefix);
    free(s);
}

const char *rrpc_server_errmsg(const rrpc_server *s)
{
    return s ? s->errmsg : "no server";
}

int rrpc_server_register(rrpc_server *s, const char *method, rrpc_method_fn fn, void *udata,
                         const char *description)
{
    if (s == NULL || method == NULL || fn == NULL)
        return RRPC_EINVAL;
    if (atomic_load(&s->running))
        return RRPC_ESTATE;
    return rrpc__methods_add(&s->methods, method, fn, udata, description);
}

int rrpc_server_set_params(rrpc_server *s, const char *method, const json_t *shape)
{
    if (s == NULL || method == NULL || shape == NULL)
        return RRPC_EINVAL;
    if (atomic_load(&s->running))
        return RRPC_ESTATE;
    return rrpc__registry_set_params(s->registry, method, shape);
}

void rrpc_server_stop(rrpc_server *s)
{
    if (s)
        atomic_store(&s->stop, 1);
}

void rrpc_server_get_stats_sized(const rrpc_server *s, rrpc_server_stats *out, size_t size)
{
    rrpc_server *m = (rrpc_server *)s; /* atomics need a non-const pointer */
    rrpc_server_stats all, *st = &all;
    st->requests = atomic_load(&m->requests);
    st->notifications = atomic_load(&m->notifications);
    st->errors = atomic_load(&m->errors);
    st->dead_letters = atomic_load(&m->dead_letters);
    st->expired = atomic_load(&m->expired);
    st->duplicates = atomic_load(&m->duplicates);
    st->redelivered = atomic_load(&m->redelivered);
    st->given_back = atomic_load(&m->given_back);
    st->lost = atomic_load(&m->lost);
    /* An older caller's struct is shorter: only what it has. */
    memcpy(out, st, size < sizeof all ? size : sizeof all);
}

/* ---- one worker ---------------------------------------------------------- */

static void log_worker_at(const worker *w, rrpc_log_level level, const char *what,
                          const char *detail)
{
    char who[16];
    snprintf(who, sizeof who, "%d", w->id);
    rrpc__log(level, w->srv->service, who, what, detail);
}

/* The common case: a fault the worker rides out. */
static void log_worker(const worker *w, const char *what, const char *detail)
{
    log_worker_at(w, RRPC_LOG_WARN, what, detail);
}

static int grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return RRPC_OK;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*items, n * size);
    if (p == NULL)
        return RRPC_ENOMEM;
    *items = p;
    *cap = n;
    return RRPC_OK;
}

static int push_op(worker *w, op o)
{
    if (grow((void **)&w->ops, &w->capops, w->nops + 1, sizeof o) != RRPC_OK)
        return RRPC_ENOMEM;
    w->ops[w->nops++] = o;
    return RRPC_OK;
}

static void free_item(reply_item *it)
{
    free(it->key);
    free(it->text);
    free(it->msg_owned);
}

static void free_op(op *o)
{
    free(o->key);
    free(o->text);
    free(o->msg_owned);
    for (size_t i = 0; i < o->nitems; i++)
        free_item(&o->items[i]);
    free(o->items);
    rrpc__cmd_free(&o->cmd);
    memset(o, 0, sizeof *o);
}

/* Replies, dead letters and effects must survive a broken link or a Redis
 * that is busy for a while (see keep_for_retry) or out of memory (hold). */
static int kept_for_resend(const op *o)
{
    return o->kind == OP_REPLY || o->kind == OP_DEAD || o->kind == OP_COMMIT ||
           o->kind == OP_GIVEBACK || o->kind == OP_EFFECTS;
}

/* The request text a kept op refers to lives in the popped reply, which
 * is freed once the next pop comes in; a retry outlives it, so it gets a
 * copy of its own. */
static void own_msg(const char **msg, size_t len, char **owned)
{
    if (*msg == NULL || *owned != NULL)
        return;
    *owned = malloc(len + 1);
    if (*owned != NULL) {
        memcpy(*owned, *msg, len);
        (*owned)[len] = '\0';
    }
    *msg = *owned ? *owned : ""; /* without memory the dead letter says less */
}

/* ---- what is lost is said, with its ids, and counted ------------------- */

/* Appends to OUT (of CAP bytes, NUL-terminated) the JSON of V escaped to
 * ASCII -- control characters as \u00XX, so that a hostile id cannot write
 * to an operator's terminal -- or its first LOG_ID_MAX bytes and its
 * length when it is longer. */
static void append_json(char *out, size_t cap, const json_t *v)
{
    size_t at = strlen(out);
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    if (text == NULL)
        snprintf(out + at, cap - at, "(unprintable)");
    else if (strlen(text) > LOG_ID_MAX)
        snprintf(out + at, cap - at, "%.*s... (%zu bytes)", LOG_ID_MAX, text, strlen(text));
    else
        snprintf(out + at, cap - at, "%s", text);
    free(text);
}

/* How a LOST line names the request(s) of TEXT -- a request, a response or
 * a batch of either: "id 7", "ids [1,2]", "a notification", or what it is
 * when it is not JSON-RPC (then its length). */
static void describe_ids(const char *text, size_t len, char *out, size_t cap)
{
    json_t *doc = text ? json_loadb(text, len, 0, NULL) : NULL;
    out[0] = '\0';
    if (json_is_object(doc) && json_object_get(doc, "id") != NULL) {
        snprintf(out, cap, "id ");
        append_json(out, cap, json_object_get(doc, "id"));
    } else if (json_is_object(doc)) {
        snprintf(out, cap, "a notification");
    } else if (json_is_array(doc)) {
        json_t *ids = json_array();
        size_t i;
        const json_t *e;
        json_array_foreach(doc, i, e)
        {
            if (json_object_get(e, "id"))
                json_array_append(ids, json_object_get(e, "id"));
        }
        snprintf(out, cap, "ids ");
        append_json(out, cap, ids);
        json_decref(ids);
    } else {
        snprintf(out, cap, "a message of %zu bytes that is not JSON-RPC", len);
    }
    json_decref(doc);
}

/* Logs the loss of an answer, dead letter, effects or request (WHAT, of
 * IDS, with MORE) and counts it: rrpc_server_stats.lost, and
 * <service>:stats "lost" with the next round (send_lost).  One line per
 * loss, with the whole id: operators and tests match them. */
static void lose(worker *w, const char *what, const char *ids, const char *more, const char *why)
{
    atomic_fetch_add(&w->srv->lost, 1);
    w->lost_unsent++;
    char who[16];
    snprintf(who, sizeof who, "%d", w->id);
    rrpc__logf(RRPC_LOG_ERROR, w->srv->service, who, "LOST %s %s%s: %s", what, ids,
               more ? more : "", why ? why : "");
}

/* The reply key of IT as escaped JSON, for a LOST line. */
static void describe_key(const reply_item *it, char *out, size_t cap)
{
    json_t *key = json_stringn(it->key, it->key_len);
    out[0] = '\0';
    if (key == NULL)
        snprintf(out, cap, "(%zu bytes, not UTF-8)", it->key_len);
    else
        append_json(out, cap, key);
    json_decref(key);
}

static void lose_item(worker *w, const reply_item *it, const char *why)
{
    char ids[LOG_ID_MAX + 64], key[LOG_ID_MAX + 64], more[LOG_ID_MAX + 96];
    describe_ids(it->text, it->text ? strlen(it->text) : 0, ids, sizeof ids);
    describe_key(it, key, sizeof key);
    snprintf(more, sizeof more, " (reply key %s)", key);
    lose(w, "answer to", ids, more, why);
}

/* Says what of O (an at-most-once op kept for resending) is lost and why;
 * frees nothing. */
static void lose_op(worker *w, const op *o, const char *why)
{
    char ids[LOG_ID_MAX + 64];
    if (o->kind == OP_REPLY) {
        for (size_t i = 0; i < o->nitems; i++)
            lose_item(w, &o->items[i], why);
    } else if (o->kind == OP_DEAD) {
        /* The record keeps the message whole unless it was oversized. */
        json_t *rec = o->text ? json_loads(o->text, 0, NULL) : NULL;
        const char *msg = json_string_value(json_object_get(rec, "message"));
        if (msg)
            describe_ids(msg, json_string_length(json_object_get(rec, "message")), ids, sizeof ids);
        else
            snprintf(ids, sizeof ids, "an oversized message (SHA-1 %s)",
                     json_string_value(json_object_get(rec, "message_sha1"))
                         ? json_string_value(json_object_get(rec, "message_sha1"))
                         : "unknown");
        json_decref(rec);
        lose(w, "dead letter of", ids, NULL, why);
    } else if (o->kind == OP_EFFECTS) {
        describe_ids(o->msg, o->msg_len, ids, sizeof ids);
        lose(w, "effects of", ids, NULL, why);
    } else if (o->kind == OP_GIVEBACK) {
        for (size_t i = 2; i < o->cmd.argc; i++) {
            describe_ids(o->cmd.argv[i], o->cmd.lens[i], ids, sizeof ids);
            lose(w, "unstarted request, handed back:", ids, NULL, why);
        }
    }
}

/* Moves O (taking ownership) to the ops to send again. */
static void keep_for_retry(worker *w, op *o)
{
    own_msg(&o->msg, o->msg_len, &o->msg_owned);
    for (size_t i = 0; i < o->nitems; i++)
        own_msg(&o->items[i].msg, o->items[i].msg_len, &o->items[i].msg_owned);
    if (grow((void **)&w->retry, &w->capretry, w->nretry + 1, sizeof *o) != RRPC_OK) {
        if (o->kind == OP_COMMIT) /* its request stays held in Redis */
            log_worker(w, "out of memory: a request stays in flight until taken again", NULL);
        else
            lose_op(w, o, "out of memory");
        free_op(o);
        return;
    }
    w->retry[w->nretry++] = *o;
    memset(o, 0, sizeof *o);
}

/* Queues one command and remembers how to judge its reply. */
static int send_cmd(worker *w, op o, int argc, const char **argv, const size_t *lens)
{
    int rc = rrpc__conn_append(w->conn, argc, argv, lens);
    /* On a broken link a reply or dead letter is still kept: the next read
     * fails, and it is sent again on the new link. */
    if (rc == RRPC_OK || (rc == RRPC_ECONNECT && kept_for_resend(&o)))
        rc = push_op(w, o) == RRPC_OK ? rc : RRPC_ENOMEM;
    else
        free_op(&o);
    return rc;
}

static const op plain = {.kind = OP_PLAIN};

/* Holds a response for the batch's reply script call (flush_replies);
 * takes ownership of IT's key, text and msg_owned. */
static void hold_reply(worker *w, reply_item it)
{
    if (grow((void **)&w->pend, &w->cappend, w->npend + 1, sizeof *w->pend) != RRPC_OK) {
        lose_item(w, &it, "out of memory");
        free_item(&it);
        return;
    }
    w->pend[w->npend++] = it;
}

/* As hold_reply; MSG (the request, for a dead letter) is borrowed. */
static void queue_reply(worker *w, const char *msg, size_t len, char *key, size_t key_len,
                        char *text)
{
    hold_reply(
        w, (reply_item){.msg = msg, .msg_len = len, .key = key, .key_len = key_len, .text = text});
}

/* Sends one reply script call for ITEMS (owned, all in one hash slot on a
 * Cluster): KEYS are their reply keys, ARGV the TTL and the responses. */
static void send_reply_call(worker *w, reply_item *items, size_t n)
{
    size_t argc = 2 * n + 4;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    char numkeys[24];
    op o = {.kind = OP_REPLY, .items = items, .nitems = n};
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        keep_for_retry(w, &o); /* sent again with the next round */
        return;
    }
    int eval = !w->script_known;
    argv[0] = eval ? "EVAL" : "EVALSHA";
    argv[1] = eval ? rrpc__reply_script : w->srv->reply_sha;
    snprintf(numkeys, sizeof numkeys, "%zu", n);
    argv[2] = numkeys;
    for (size_t i = 0; i < n; i++) {
        argv[3 + i] = items[i].key;
        lens[3 + i] = items[i].key_len;
        argv[4 + n + i] = items[i].text;
        lens[4 + n + i] = strlen(items[i].text);
    }
    argv[3 + n] = w->ttl_text;
    for (size_t i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    lens[3 + n] = strlen(w->ttl_text);
    o.eval = eval;
    send_cmd(w, o, (int)argc, argv, lens);
    free(argv);
    free(lens);
}

typedef struct slotted {
    unsigned slot;
    size_t index;
} slotted;

static int by_slot(const void *a, const void *b)
{
    const slotted *x = a, *y = b;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* On a Cluster the keys of one script call must share a hash slot: one
 * call per slot, each with the replies of that slot in their order. */
static void send_by_slot(worker *w, reply_item *items, size_t n)
{
    slotted *order = malloc(n * sizeof *order);
    if (order == NULL) {
        for (size_t i = 0; i < n; i++) { /* one call per key needs no sorting */
            reply_item *one = malloc(sizeof *one);
            if (one == NULL) {
                lose_item(w, &items[i], "out of memory");
                free_item(&items[i]);
                continue;
            }
            *one = items[i];
            send_reply_call(w, one, 1);
        }
        free(items);
        return;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = (slotted){rrpc__key_slot(items[i].key, items[i].key_len), i};
    qsort(order, n, sizeof *order, by_slot);
    for (size_t from = 0, to; from < n; from = to) {
        for (to = from + 1; to < n && order[to].slot == order[from].slot; to++)
            ;
        reply_item *group = malloc((to - from) * sizeof *group);
        for (size_t k = from; k < to; k++) {
            if (group != NULL)
                group[k - from] = items[order[k].index];
            else {
                lose_item(w, &items[order[k].index], "out of memory");
                free_item(&items[order[k].index]);
            }
        }
        if (group != NULL)
            send_reply_call(w, group, to - from);
    }
    free(order);
    free(items);
}

/* Sends the responses held since the last call: on one Redis all of them
 * in one reply script call, on a Cluster one call per hash slot. */
static void flush_replies(worker *w)
{
    if (w->npend == 0)
        return;
    reply_item *items = w->pend;
    size_t n = w->npend;
    w->pend = NULL;
    w->npend = w->cappend = 0;
    /* Those that were in a call Redis refused as a whole (an ACL that
     * does not cover one of its keys) go one by one, so that one caller's
     * reply key cannot fail the answers of others. */
    size_t together = 0;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].alone) {
            items[together++] = items[i];
            continue;
        }
        reply_item *one = malloc(sizeof *one);
        if (one == NULL) {
            lose_item(w, &items[i], "out of memory");
            free_item(&items[i]);
            continue;
        }
        *one = items[i];
        send_reply_call(w, one, 1);
    }
    n = together;
    if (n == 0)
        free(items);
    else if (w->srv->url.kind == RRPC__URL_CLUSTER)
        send_by_slot(w, items, n);
    else
        send_reply_call(w, items, n);
}

/* Queues RPUSH+LTRIM+HINCRBY of a dead letter; takes ownership of text.
 * GIVE_UP_AT: see op.give_up_at (0 for a new one). */
static void queue_dead(worker *w, char *text, double give_up_at)
{
    rrpc_server *s = w->srv;
    const char *push[] = {"RPUSH", s->dead_key, text};
    const char *trim[] = {"LTRIM", s->dead_key, w->trim_text, "-1"};
    const char *count[] = {"HINCRBY", s->stats_key, "dead", "1"};
    if (send_cmd(w, (op){.kind = OP_DEAD, .text = text, .give_up_at = give_up_at}, 3, push, NULL) ==
        RRPC_OK) {
        send_cmd(w, plain, 4, trim, NULL);
        send_cmd(w, plain, 4, count, NULL);
    }
}

/* At-most-once effects: KEYS[1] is a guard key unique to this request's
 * effects, ARGV[1] its lifetime (ms), ARGV[2] the effect count, then per
 * effect its argc and arguments.  Applies them unless the guard exists --
 * they are sent again after a broken link, and the first copy may have
 * been applied although its confirmation was lost -- and returns the
 * effects Redis refused (the rest stand), or 0 when they had been applied.
 * The guard is its first write, so a script refused for memory changed
 * nothing and can be sent again. */
const char rrpc__effects_script[] =
    "-- rrpc effects v1\n"
    "if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end\n"
    "local i, refused = 3, {}\n"
    "for _ = 1, tonumber(ARGV[2]) do\n"
    "  local argc = tonumber(ARGV[i])\n"
    "  local r = redis.pcall(unpack(ARGV, i + 1, i + argc))\n"
    "  if type(r) == 'table' and r.err then\n"
    "    refused[#refused + 1] = ARGV[i + 1] .. ': ' .. r.err\n"
    "  end\n"
    "  i = i + argc + 1\n"
    "end\n"
    "return refused\n";

static int cmd_add(rrpc__cmd *c, const char *s, size_t len)
{
    if (c->argc == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **argv = realloc(c->argv, cap * sizeof *argv);
        if (argv == NULL)
            return RRPC_ENOMEM;
        c->argv = argv;
        size_t *lens = realloc(c->lens, cap * sizeof *lens);
        if (lens == NULL)
            return RRPC_ENOMEM;
        c->lens = lens;
        c->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return RRPC_ENOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    c->argv[c->argc] = copy;
    c->lens[c->argc++] = len;
    return RRPC_OK;
}

static int cmd_add_num(rrpc__cmd *c, size_t n)
{
    char text[24];
    snprintf(text, sizeof text, "%zu", n);
    return cmd_add(c, text, strlen(text));
}

/* The effects script call for EFFECTS into *C (owned); its guard key is
 * {L}:applied:<this thread's token>:<counter>. */
static int effects_cmd(worker *w, const json_t *effects, rrpc__cmd *c)
{
    char suffix[80], guard[RRPC__KEY_MAX];
    if (w->token[0] == '\0' && rrpc__random_hex128(w->token) != RRPC_OK)
        return RRPC_ENOMEM;
    snprintf(suffix, sizeof suffix, ":applied:%s:%llx", w->token, w->effects_sent++);
    if (rrpc__tagged_key(guard, sizeof guard, w->srv->list_key, suffix) != RRPC_OK)
        return RRPC_EINVAL;
    int rc = cmd_add(c, "EVAL", 4);
    rc = rc ? rc : cmd_add(c, rrpc__effects_script, strlen(rrpc__effects_script));
    rc = rc ? rc : cmd_add(c, "1", 1);
    rc = rc ? rc : cmd_add(c, guard, strlen(guard));
    rc = rc ? rc : cmd_add(c, EFFECTS_GUARD_MS, strlen(EFFECTS_GUARD_MS));
    rc = rc ? rc : cmd_add_num(c, json_array_size(effects));
    size_t i;
    const json_t *one;
    json_array_foreach(effects, i, one)
    {
        rc = rc ? rc : cmd_add_num(c, json_array_size(one));
        for (size_t k = 0; rc == RRPC_OK && k < json_array_size(one); k++)
            rc = cmd_add(c, json_string_value(json_array_get(one, k)),
                         json_string_length(json_array_get(one, k)));
    }
    return rc;
}

/* Queues the commands handlers added with rrpc_request_add_effect for the
 * request MSG (borrowed): one effects script call, kept and sent again
 * with its answer after a broken link or a refusal for memory.  On a
 * Cluster, whose scripts cannot reach keys of other slots, they go as
 * plain commands and are not sent again (lost with a link that breaks). */
static void queue_effects(worker *w, const char *msg, size_t len, const json_t *effects)
{
    op o = {.kind = OP_EFFECTS, .msg = msg, .msg_len = len};
    if (w->srv->url.kind != RRPC__URL_CLUSTER) {
        int rc = effects_cmd(w, effects, &o.cmd);
        if (rc == RRPC_OK) {
            send_cmd(w, o, (int)o.cmd.argc, (const char **)o.cmd.argv, o.cmd.lens);
            return;
        }
        free_op(&o);
        if (rc == RRPC_ENOMEM) {
            lose_op(w, &(op){.kind = OP_EFFECTS, .msg = msg, .msg_len = len}, "out of memory");
            return;
        } /* a guard key too long for the service name: plain commands */
    }
    size_t i;
    const json_t *cmd;
    json_array_foreach(effects, i, cmd)
    {
        size_t argc = json_array_size(cmd);
        const char **argv = malloc(argc * sizeof *argv);
        size_t *lens = malloc(argc * sizeof *lens);
        if (argv == NULL || lens == NULL) {
            log_worker_at(w, RRPC_LOG_ERROR, "out of memory: an effect was not applied", NULL);
        } else {
            for (size_t k = 0; k < argc; k++) {
                argv[k] = json_string_value(json_array_get(cmd, k));
                lens[k] = json_string_length(json_array_get(cmd, k));
            }
            send_cmd(w, plain, (int)argc, argv, lens);
        }
        free(argv);
        free(lens);
    }
}

/* Queues the dead letter of MSG; RESPONSE (a value) or RESPONSE_TEXT, if
 * any, is the answer that could not be delivered. */
static void send_dead_letter(worker *w, const char *reason, const char *msg, size_t len,
                             const json_t *response, const char *response_text)
{
    char *text = rrpc__dead_letter_text(w->srv->service, reason, msg, len,
                                        w->srv->limits.max_request_bytes, response, response_text);
    if (text == NULL) {
        log_worker_at(w, RRPC_LOG_ERROR, "cannot encode a dead letter", reason);
        return;
    }
    queue_dead(w, text, 0);
}

/* Reliable mode: queues the commit M of the request MSG (reliable.c). */
static void queue_commit(worker *w, const char *msg, size_t len, rrpc__rel_commit *m)
{
    op o = {.kind = OP_COMMIT, .msg = msg, .msg_len = len};
    m->inflight = w->rk.inflight;
    m->reply_ttl = w->ttl_text;
    if (rrpc__rel_commit_cmd(&w->srv->rel, &o.cmd, m) != RRPC_OK) {
        log_worker(w, "out of memory: a request stays in flight until taken again", NULL);
        return;
    }
    send_cmd(w, o, (int)o.cmd.argc, (const char **)o.cmd.argv, o.cmd.lens);
}

/* Reliable mode: a request that will not run (its dedup key is not a
 * string) is released with a dead letter saying why. */
static void queue_dead_commit(worker *w, const char *msg, size_t len, const char *field,
                              const char *sha1, const char *reason)
{
    char *text = rrpc__dead_letter_text(w->srv->service, reason, msg, len,
                                        w->srv->limits.max_request_bytes, NULL, NULL);
    if (text == NULL) {
        log_worker_at(w, RRPC_LOG_ERROR, "cannot encode a dead letter", reason);
        return;
    }
    rrpc__rel_commit m = {.field = field, .sha1 = sha1, .dead_letter = text};
    queue_commit(w, msg, len, &m);
    free(text);
}

/* Reliable mode: the outcome of a request becomes one commit -- its answer,
 * effects and dead letter (if any) together, so that none of them can be
 * lost or repeated without the others.  REFUSED is the response withheld
 * from a reply key that rules 1 to 4 refused, or NULL. */
static void commit_outcome(worker *w, const char *msg, size_t len, const char *field,
                           const char *sha1, const rrpc__outcome *out, const char *refused)
{
    char *dead = NULL;
    if (out->dead_reason != NULL &&
        (dead = rrpc__dead_letter_text(w->srv->service, out->dead_reason, msg, len,
                                       w->srv->limits.max_request_bytes, out->dead_response,
                                       refused)) == NULL) {
        log_worker(w, "cannot encode a dead letter: the request stays in flight", out->dead_reason);
        return;
    }
    int with_reply = out->reply_key != NULL && out->response != NULL;
    rrpc__rel_commit m = {
        .field = field,
        .sha1 = sha1,
        .key = with_reply ? out->reply_key : NULL,
        .key_len = out->reply_key_len,
        .response = with_reply ? out->response : NULL,
        .response_len = with_reply ? strlen(out->response) : 0,
        .effects = out->effects,
        .dead_letter = dead,
    };
    queue_commit(w, msg, len, &m);
    free(dead);
}

/* Dispatches one request; FIELD and SHA1 are its in-flight field and
 * identity in reliable mode, else NULL.  At-most-once, a dead letter is
 * queued before the reply, so that a crash in between may lose the reply
 * but not the record. */
static void handle_message(worker *w, const char *msg, size_t len, const char *field,
                           const char *sha1)
{
    rrpc_server *s = w->srv;
    rrpc__outcome out;
    rrpc__dispatch(&s->methods, &s->limits, &w->clock, msg, len, &out);
    atomic_fetch_add(&s->requests, out.requests);
    atomic_fetch_add(&s->notifications, out.notifications);
    atomic_fetch_add(&s->errors, out.errors);
    atomic_fetch_add(&s->expired, out.expired);
    /* Rules 1 to 4, by name, in both modes; rule 5 (what the key is in
     * Redis) is the reply script's, or reliable mode's commit script's. */
    char *refused = NULL; /* the response withheld from a refused reply key */
    if (out.reply_key != NULL) {
        const char *why = rrpc__reply_key_refusal(&w->rules, out.reply_key, out.reply_key_len);
        if (why != NULL) {
            free(out.dead_reason);
            out.dead_reason = strdup(why);
            refused = out.response;
            free(out.reply_key);
            out.reply_key = out.response = NULL;
        }
    }
    if (sha1 != NULL) {
        commit_outcome(w, msg, len, field, sha1, &out, refused);
        free(refused);
        rrpc__outcome_clear(&out);
        return;
    }
    if (out.dead_reason != NULL)
        send_dead_letter(w, out.dead_reason, msg, len, out.dead_response, refused);
    free(refused);
    /* Effects go out before the answer (replies wait for the batch's
     * reply script call), so a caller never sees an answer whose
     * effects are not applied yet. */
    if (out.effects != NULL)
        queue_effects(w, msg, len, out.effects);
    if (out.response != NULL && out.reply_key != NULL) {
        queue_reply(w, msg, len, out.reply_key, out.reply_key_len, out.response);
        out.reply_key = out.response = NULL; /* now owned by the queued reply */
    }
    rrpc__outcome_clear(&out);
}

/* Reliable mode: a request answered before (a redelivery, or a caller that
 * sent it again): the remembered response goes out again, through the same
 * commit script (which releases the request and accepts the reply key only
 * if it is a reply list), and nothing runs.  Its key meets rules 1 to 4
 * again: they may have changed since (an allow-list set, a service
 * registered); refused, the response becomes a dead letter instead. */
static void answer_again(worker *w, const char *msg, size_t len, const char *field,
                         const char *sha1, const rrpc__reply *answer)
{
    size_t text_len = 0;
    const char *text = rrpc__reply_str(answer, &text_len);
    rrpc__rel_commit m = {.field = field, .sha1 = sha1, .again = 1};
    char *dead = NULL;
    atomic_fetch_add(&w->srv->duplicates, 1);
    if (!rrpc__rel_parse_answer(text, text_len, &m.key, &m.key_len, &m.response, &m.response_len))
        m.key = m.response = NULL; /* a notification or a dead letter: nothing to send */
    const char *why = m.key ? rrpc__reply_key_refusal(&w->rules, m.key, m.key_len) : NULL;
    if (why != NULL) {
        /* The response runs to the end of the reply's string: NUL-terminated. */
        dead = rrpc__dead_letter_text(w->srv->service, why, msg, len,
                                      w->srv->limits.max_request_bytes, NULL, m.response);
        if (dead == NULL) {
            log_worker(w, "cannot encode a dead letter: the request stays in flight", why);
            return;
        }
        m.key = m.response = NULL;
        m.dead_letter = dead;
    }
    queue_commit(w, msg, len, &m);
    free(dead);
}

static int collect(worker *w, rrpc__reply *popped[2]);
static void recover(worker *w);

static size_t pop_count(const rrpc__reply *r)
{
    return r && rrpc__reply_type(r) == RRPC__REPLY_ARRAY ? rrpc__reply_count(r) : 0;
}

/* The requests of a pop pair, in order.  At-most-once: BLPOP gives [list
 * name, request] or nil, LPOP with a count [request, ...] or nil.
 * Reliable: the take script gives [request, identity (a SHA-1), answer-or-nil, ...] for
 * everything in the worker's in-flight list (BLMOVE's element included). */
typedef struct batch {
    const rrpc__reply *blocked; /* at-most-once: BLPOP's request, or NULL */
    const rrpc__reply *rest;    /* LPOP's or the take script's array, or NULL */
    size_t stride;              /* 1, or 3 for reliable triples */
    size_t count;
} batch;

static batch batch_of(const worker *w, rrpc__reply *const popped[2])
{
    batch b = {NULL, NULL, w->srv->reliable ? 3 : 1, 0};
    if (!w->srv->reliable && pop_count(popped[0]) == 2) {
        b.blocked = rrpc__reply_element(popped[0], 1);
        b.count = 1;
    }
    if (pop_count(popped[1]) > 0) {
        b.rest = popped[1];
        b.count += pop_count(popped[1]) / b.stride;
    }
    return b;
}

/* One request of a batch.  Reliable mode adds where it is held (its field
 * in the in-flight hash), its identity, and the answer remembered for it:
 * NULL, a string, or an error (its dedup key is not a string). */
typedef struct entry {
    const char *msg;
    size_t len;
    const char *field;
    char sha1[41];
    const rrpc__reply *answer;
} entry;

/* The in-flight record: identity (40 hex digits), delivery counter key
 * (40), then the request (reliable.c). */
#define RECORD_HEAD 80

/* Entry K of B; 0 if the take script's answer is malformed there. */
static int batch_entry(const batch *b, size_t k, entry *e)
{
    memset(e, 0, sizeof *e);
    if (b->blocked != NULL && k-- == 0) {
        e->msg = rrpc__reply_str(b->blocked, &e->len);
        return 1;
    }
    if (b->stride == 1) {
        e->msg = rrpc__reply_str(rrpc__reply_element(b->rest, k), &e->len);
        return 1;
    }
    const rrpc__reply *field = rrpc__reply_element(b->rest, 3 * k);
    const rrpc__reply *rec = rrpc__reply_element(b->rest, 3 * k + 1);
    const rrpc__reply *a = rrpc__reply_element(b->rest, 3 * k + 2);
    size_t len = 0;
    const char *text = rrpc__reply_str(rec, &len);
    if (rrpc__reply_type(field) != RRPC__REPLY_STRING ||
        rrpc__reply_type(rec) != RRPC__REPLY_STRING || len < RECORD_HEAD)
        return 0;
    e->field = rrpc__reply_str(field, NULL);
    memcpy(e->sha1, text, 40);
    e->sha1[40] = '\0';
    e->msg = text + RECORD_HEAD;
    e->len = len - RECORD_HEAD;
    int t = rrpc__reply_type(a);
    e->answer = t == RRPC__REPLY_STRING || t == RRPC__REPLY_ERROR ? a : NULL;
    return 1;
}

/* At-most-once: hands the requests of B from FIRST on back to the head of
 * the list, in their order, so that other workers take them while this
 * one is held up by a slow handler. */
static void give_back(worker *w, const batch *b, size_t first)
{
    size_t n = b->count - first, argc = n + 2;
    /* The requests are in no list now: the command owns copies, so that it
     * can be sent again after a broken link or a Redis busy in a script. */
    op o = {.kind = OP_GIVEBACK};
    o.cmd.argv = calloc(argc, sizeof *o.cmd.argv);
    o.cmd.lens = calloc(argc, sizeof *o.cmd.lens);
    int ok = o.cmd.argv != NULL && o.cmd.lens != NULL;
    if (ok)
        o.cmd.argc = o.cmd.cap = argc;
    for (size_t i = 0; ok && i < argc; i++) {
        const char *arg = i == 0 ? "LPUSH" : w->list;
        size_t len = strlen(arg);
        if (i >= 2) { /* LPUSH reverses: the last goes first */
            entry e;
            batch_entry(b, b->count - 1 - (i - 2), &e);
            arg = e.msg;
            len = e.len;
        }
        ok = (o.cmd.argv[i] = malloc(len + 1)) != NULL;
        if (ok) {
            memcpy(o.cmd.argv[i], arg, len);
            o.cmd.argv[i][len] = '\0';
            o.cmd.lens[i] = len;
        }
    }
    if (!ok) {
        /* Without memory the worker runs them itself, late but not lost. */
        free_op(&o);
        for (size_t k = first; k < b->count; k++) {
            entry e;
            batch_entry(b, k, &e);
            handle_message(w, e.msg, e.len, NULL, NULL);
        }
        return;
    }
    send_cmd(w, o, (int)argc, (const char **)o.cmd.argv, o.cmd.lens);
    atomic_fetch_add(&w->srv->given_back, n);
}

/* Sizes the next batches of all workers from the slowest handler of the
 * last one: after a slow handler every worker takes one request at a time
 * (BLPOP alone), so that requests do not queue up behind a slow one in its
 * batch while other workers could take them; while handlers are quick the
 * extra count doubles back to batch_max.  Slowness is the service's, so
 * the count is shared.  Bulk counts as well: after a batch of more than
 * BATCH_BYTES_LIMITS size limits' worth of text (hostile or not), the next
 * pops take one message at a time, so that a worker never holds more than
 * that plus one message. */
static void adapt_batch(worker *w, double slowest, size_t bytes)
{
    rrpc_server *s = w->srv;
    int now = atomic_load(&s->batch_now);
    int heavy = bytes > BATCH_BYTES_LIMITS * s->limits.max_request_bytes;
    int next = slowest > GIVE_BACK_AFTER_S || heavy ? 0 : now < 1 ? 1 : now * 2;
    atomic_store(&s->batch_now, next > s->batch_max ? s->batch_max : next);
}

/* Sends what the batch has finished so far and reads the replies, while
 * a slow handler holds the rest: answers are not held back by it. */
static void flush_finished(worker *w)
{
    flush_replies(w);
    if (w->nops == 0)
        return;
    rrpc__reply *none[2] = {NULL, NULL};
    if (collect(w, none) != RRPC_OK)
        recover(w); /* the link broke: what was not confirmed waits in retry */
}

/* The bytes of all the requests in B. */
static size_t batch_bytes(const batch *b)
{
    size_t bytes = 0;
    for (size_t k = 0; k < b->count; k++) {
        entry e;
        batch_entry(b, k, &e);
        bytes += e.len;
    }
    return bytes;
}

/* Reliable mode: nonzero if the request held under FIELD has a commit not
 * yet confirmed (in this round, waiting to be sent again, or refused and
 * held for a retry): the take script returns it again, but it must not
 * run again. */
static int pending(const worker *w, const char *field)
{
    const op *lists[] = {w->ops, w->retry, w->held};
    size_t counts[] = {w->nops, w->nretry, w->nheld};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l]; i++) {
            const op *o = &lists[l][i];
            const char *f = o->kind == OP_COMMIT
                                ? rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_FIELD, NULL)
                                : NULL;
            if (f && strcmp(f, field) == 0)
                return 1;
        }
    return 0;
}

/* Handles one request of a batch. */
static void handle_entry(worker *w, const entry *e)
{
    if (e->field == NULL)
        handle_message(w, e->msg, e->len, NULL, NULL);
    else if (pending(w, e->field))
        return;
    else if (e->answer == NULL)
        handle_message(w, e->msg, e->len, e->field, e->sha1);
    else if (rrpc__reply_type(e->answer) == RRPC__REPLY_STRING)
        answer_again(w, e->msg, e->len, e->field, e->sha1, e->answer);
    else /* its dedup key is poisoned: it cannot be run at most once */
        queue_dead_commit(w, e->msg, e->len, e->field, e->sha1, rrpc__reply_str(e->answer, NULL));
}

/* Handles every request of a pop pair in order. */
static void handle_popped(worker *w, rrpc__reply *const popped[2])
{
    batch b = batch_of(w, popped);
    if (b.count == 0)
        return; /* a pop that timed out says nothing about the handlers */
    double started = rrpc__monotonic(), flushed_at = started, slowest = 0;
    size_t bytes = batch_bytes(&b);
    for (size_t k = 0; k < b.count; k++) {
        entry e;
        double began = rrpc__monotonic();
        if (batch_entry(&b, k, &e))
            handle_entry(w, &e);
        else
            log_worker(w, "the take script answered something unexpected", NULL);
        double now = rrpc__monotonic();
        slowest = now - began > slowest ? now - began : slowest;
        if (k + 1 == b.count)
            break;
        /* A slow handler must not hold back the rest of the batch: the
         * requests not started go back to the list for other workers
         * (reliable mode keeps them: they are in this worker's in-flight
         * hash), and answers already computed are sent at once. */
        if (!w->srv->reliable && now - started > GIVE_BACK_AFTER_S) {
            give_back(w, &b, k + 1);
            break;
        }
        if ((w->nops > 0 || w->npend > 0) && now - flushed_at > FLUSH_AFTER_S) {
            flush_finished(w);
            flushed_at = rrpc__monotonic();
        }
    }
    adapt_batch(w, slowest, bytes);
}

/* Reliable mode: the commit O was refused its reply key (or its dedup key
 * is not a string) and changed nothing; it is committed again with a dead
 * letter that says so and keeps the response (a bounded copy), without the
 * reply key. */
static void commit_refused(worker *w, const op *o, const char *reason)
{
    size_t len = 0;
    const char *text = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_RESPONSE, &len);
    char *dead =
        rrpc__dead_letter_text(w->srv->service, reason, o->msg, o->msg_len,
                               w->srv->limits.max_request_bytes, NULL, text && len ? text : NULL);
    /* Its own copy of the request: O's goes away with O or the popped reply. */
    op again = {.kind = OP_COMMIT, .msg_owned = malloc(o->msg_len ? o->msg_len : 1)};
    if (dead == NULL || again.msg_owned == NULL ||
        rrpc__rel_commit_dead(&o->cmd, &again.cmd, dead) != RRPC_OK) {
        log_worker(w, "out of memory: a request stays in flight until taken again", reason);
        free_op(&again);
    } else {
        memcpy(again.msg_owned, o->msg, o->msg_len);
        again.msg = again.msg_owned;
        again.msg_len = o->msg_len;
        send_cmd(w, again, (int)again.cmd.argc, (const char **)again.cmd.argv, again.cmd.lens);
    }
    free(dead);
}

/* A write that Redis refused for memory went through: the streak of
 * refusals (logged once at its start, hold) is over once none is held. */
static void writes_taken(worker *w)
{
    if (w->held_delay != 0 && w->nheld == 0) {
        log_worker_at(w, RRPC_LOG_INFO,
                      w->srv->reliable ? "Redis takes commits again" : "Redis takes answers again",
                      NULL);
        w->held_delay = 0;
    }
}

/* Reliable mode: acts on the answer of a commit script (see reliable.c). */
static void judge_commit(worker *w, const op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) == RRPC__REPLY_INTEGER) {
        const char *dead = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_DEAD_LETTER, NULL);
        if (rrpc__reply_integer(r) == 0)
            atomic_fetch_add(&w->srv->duplicates, 1); /* answered already */
        else if (dead && *dead)
            atomic_fetch_add(&w->srv->dead_letters, 1);
        return;
    }
    const rrpc__reply *first = rrpc__reply_element(r, 0);
    const char *reason = rrpc__reply_str(rrpc__reply_element(r, 1), NULL);
    if (rrpc__reply_type(first) == RRPC__REPLY_STRING && reason != NULL)
        commit_refused(w, o, reason);
    else
        log_worker(w, "Redis refused an effect", reason);
}

/* A response that could not be delivered, as a dead letter. */
static void reply_dead(worker *w, const reply_item *it, const char *reason)
{
    send_dead_letter(w, reason, it->msg, it->msg_len, NULL, it->text);
}

/* Acts on the reply script's answer: per key 1 (pushed) or what the key
 * is instead of a reply list (refused, PROTOCOL.md section 3 rule 5). */
static void judge_replies(worker *w, op *o, const rrpc__reply *r)
{
    char reason[RRPC__ERRMSG_LEN];
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR && o->nitems > 1) {
        /* Refused as a whole: which key is to blame, if any, is found by
         * sending each on its own (the items move out of the op). */
        for (size_t i = 0; i < o->nitems; i++) {
            o->items[i].alone = 1;
            own_msg(&o->items[i].msg, o->items[i].msg_len, &o->items[i].msg_owned);
            hold_reply(w, o->items[i]);
        }
        o->nitems = 0;
        w->split_pending = 1;
        return;
    }
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        snprintf(reason, sizeof reason, "reply failed: %s", rrpc__reply_str(r, NULL));
        for (size_t i = 0; i < o->nitems; i++)
            reply_dead(w, &o->items[i], reason);
        return;
    }
    if (o->eval)
        w->script_known = 1; /* EVAL cached it: EVALSHA from now on */
    size_t n = pop_count(r);
    for (size_t i = 0; i < o->nitems; i++) {
        const rrpc__reply *e = i < n ? rrpc__reply_element(r, i) : NULL;
        enum rrpc__reply_type t = e ? rrpc__reply_type(e) : RRPC__REPLY_NIL;
        if (t == RRPC__REPLY_INTEGER && rrpc__reply_integer(e) == 1)
            continue;
        if (t == RRPC__REPLY_STRING || t == RRPC__REPLY_STATUS)
            snprintf(reason, sizeof reason, "reply key refused: %s", rrpc__reply_str(e, NULL));
        else
            snprintf(reason, sizeof reason, "reply failed: unexpected answer of the reply script");
        reply_dead(w, &o->items[i], reason);
    }
}

/* Keeps the registered services' names (rule 3 of the reply keys) from an
 * SMEMBERS reply.  A refusal (an ACL) leaves the rule off, logged once. */
static void take_services(worker *w, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ARRAY) {
        if (!w->services_refused)
            log_worker(w,
                       "cannot read the registered services; their request lists are not "
                       "recognised as reply keys",
                       rrpc__reply_type(r) == RRPC__REPLY_ERROR ? rrpc__reply_str(r, NULL) : NULL);
        w->services_refused = 1;
        return;
    }
    size_t n = rrpc__reply_count(r), bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        rrpc__reply_str(rrpc__reply_element(r, i), &len);
        bytes += len;
    }
    rrpc__name *names = malloc((n ? n : 1) * sizeof *names);
    char *buf = malloc(bytes ? bytes : 1);
    if (names == NULL || buf == NULL) {
        free(names);
        free(buf);
        return; /* keep the last list */
    }
    for (size_t i = 0, at = 0; i < n; i++) {
        size_t len = 0;
        const char *s = rrpc__reply_str(rrpc__reply_element(r, i), &len);
        memcpy(buf + at, s, len);
        names[i] = (rrpc__name){buf + at, len};
        at += len;
    }
    rrpc__names_sort(names, n);
    free(w->services);
    free(w->services_buf);
    w->services = names;
    w->services_buf = buf;
    w->rules.services = names;
    w->rules.nservices = n;
    w->services_refused = 0;
}

/* At-most-once: acts on the answer of the effects script.  Once they are
 * applied, their guard is no longer needed (nothing sends them again). */
static void judge_effects(worker *w, const op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        lose_op(w, o, rrpc__reply_str(r, NULL));
        return;
    }
    if (rrpc__reply_type(r) == RRPC__REPLY_ARRAY && rrpc__reply_count(r) > 0)
        log_worker(w, "Redis refused an effect", rrpc__reply_str(rrpc__reply_element(r, 0), NULL));
    const char *del[] = {"DEL", o->cmd.argv[3]};
    const size_t lens[] = {3, o->cmd.lens[3]};
    send_cmd(w, plain, 2, del, lens);
}

/* Acts on the reply to one queued command. */
static void judge(worker *w, op *o, const rrpc__reply *r)
{
    int error = rrpc__reply_type(r) == RRPC__REPLY_ERROR;
    if (kept_for_resend(o) && !error)
        writes_taken(w);
    if (o->kind == OP_REPLY) {
        judge_replies(w, o, r);
        return;
    }
    if (o->kind == OP_LOST) {
        if (error) /* counted again with the next round */
            w->lost_unsent += o->count;
        return;
    }
    if (o->kind == OP_EFFECTS) {
        judge_effects(w, o, r);
        return;
    }
    if (o->kind == OP_SERVICES) {
        take_services(w, r);
        return;
    }
    if (o->kind == OP_COMMIT && rrpc__reply_type(r) != RRPC__REPLY_ERROR) {
        judge_commit(w, o, r); /* an error is collect's: refused_reply_key, hold */
        return;
    }
    if (rrpc__reply_type(r) != RRPC__REPLY_ERROR) {
        if (o->kind == OP_DEAD)
            atomic_fetch_add(&w->srv->dead_letters, 1);
        return;
    }
    const char *e = rrpc__reply_str(r, NULL);
    if (o->kind == OP_GIVEBACK || o->kind == OP_DEAD) {
        /* Nowhere left to keep it: say so loudly, with what was lost. */
        lose_op(w, o, e);
    } else if (o->kind != OP_TIME) {
        log_worker(w, "Redis refused a command", e);
    }
}

/* At-most-once: drops what of O (refused for memory again) has been
 * refused for longer than the reply TTL -- an answer that late would
 * outlive what any caller waits -- saying so with its ids (lose_op);
 * the first refusal starts that clock.  Returns nonzero if nothing of O
 * is left to hold (O is then freed). */
static int give_up_late(worker *w, op *o, const char *error)
{
    double now = rrpc__monotonic(), until = now + w->srv->reply_ttl_s;
    char why[RRPC__ERRMSG_LEN];
    snprintf(why, sizeof why, "Redis refused it for %d s: %s", w->srv->reply_ttl_s,
             error ? error : "");
    if (o->kind == OP_REPLY) {
        size_t kept = 0;
        for (size_t i = 0; i < o->nitems; i++) {
            reply_item *it = &o->items[i];
            if (it->give_up_at != 0 && now >= it->give_up_at) {
                lose_item(w, it, why);
                free_item(it);
                continue;
            }
            if (it->give_up_at == 0)
                it->give_up_at = until;
            o->items[kept++] = *it;
        }
        o->nitems = kept;
    } else if (o->give_up_at != 0 && now >= o->give_up_at) {
        lose_op(w, o, why);
        free_op(o);
        return 1;
    } else if (o->give_up_at == 0) {
        o->give_up_at = until;
    }
    if (o->kind == OP_REPLY && o->nitems == 0) {
        free_op(o);
        return 1;
    }
    return 0;
}

/* Holds O, which Redis refused for memory (takes it over), and sends it
 * again after a backoff (0.05 s doubling to 2 s; send_held).  Reliable
 * mode: a commit, never given up: its request stays held in the in-flight
 * hash meanwhile (redelivered if this worker dies) -- never a dead letter,
 * which would be refused too, and the request lost.  At-most-once: an
 * answer, dead letter, effects or give-back, given up after the reply TTL
 * (give_up_late) -- never a dead letter either. */
static void hold(worker *w, op *o, const char *error)
{
    if (o->kind != OP_COMMIT && give_up_late(w, o, error))
        return;
    own_msg(&o->msg, o->msg_len, &o->msg_owned); /* the popped reply goes away */
    for (size_t i = 0; i < o->nitems; i++)
        own_msg(&o->items[i].msg, o->items[i].msg_len, &o->items[i].msg_owned);
    if (grow((void **)&w->held, &w->capheld, w->nheld + 1, sizeof *o) != RRPC_OK) {
        if (o->kind == OP_COMMIT)
            log_worker(w, "out of memory: a request stays in flight until taken again", NULL);
        else
            lose_op(w, o, "out of memory");
        free_op(o);
        return;
    }
    if (w->held_delay == 0) {
        if (w->srv->reliable)
            log_worker(w,
                       "Redis refused a commit; its request stays held and the commit is retried",
                       error);
        else {
            char what[RRPC__ERRMSG_LEN + 80];
            snprintf(what, sizeof what, "%s; kept and retried for up to %d s", error ? error : "",
                     w->srv->reply_ttl_s);
            log_worker(w, "Redis refused answers for memory", what);
        }
        w->held_delay = HOLD_MIN_S;
    }
    w->held[w->nheld++] = *o;
    memset(o, 0, sizeof *o);
    w->held_at = rrpc__monotonic() + w->held_delay;
}

/* Nonzero if Redis refused R for memory ("OOM command not allowed ..."). */
static int refused_for_memory(const rrpc__reply *r)
{
    const char *e = rrpc__reply_type(r) == RRPC__REPLY_ERROR ? rrpc__reply_str(r, NULL) : NULL;
    return e != NULL && strncmp(e, "OOM", 3) == 0;
}

/* Nonzero if an at-most-once answer, dead letter, effects or give-back
 * waits in held (a stopping worker tries to deliver it). */
static int holds_answers(const worker *w)
{
    for (size_t i = 0; i < w->nheld; i++)
        if (w->held[i].kind != OP_COMMIT)
            return 1;
    return 0;
}

/* Reliable mode: nonzero if the error R to the commit O is the ACL's
 * refusal of its reply key (EVALSHA declares it): then, as for a refusal
 * by the script, the request is committed again with a dead letter and
 * without the key.  Any other error is held for a retry. */
static int refused_reply_key(worker *w, const op *o, const rrpc__reply *r)
{
    const char *e = rrpc__reply_str(r, NULL);
    size_t len = 0;
    if (e == NULL || strncmp(e, "NOPERM", 6) != 0 ||
        rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_RESPONSE, &len) == NULL || len == 0)
        return 0;
    char reason[RRPC__ERRMSG_LEN];
    snprintf(reason, sizeof reason, "reply failed: %s", e);
    commit_refused(w, o, reason);
    return 1;
}

/* Queues O (taken over) again: an answer with the round's reply script
 * call, the rest as it was.  A commit is idempotent (SET NX guards it),
 * and so are effects (their guard key); a give-back that failed was not
 * applied (Redis runs a command whole or not). */
static void resend(worker *w, op *o)
{
    if (o->kind == OP_REPLY) {
        for (size_t k = 0; k < o->nitems; k++)
            hold_reply(w, o->items[k]);
        free(o->items);
    } else if (o->kind == OP_DEAD) {
        queue_dead(w, o->text, o->give_up_at);
        free(o->msg_owned);
    } else if (o->kind == OP_COMMIT || o->kind == OP_GIVEBACK || o->kind == OP_EFFECTS) {
        send_cmd(w, *o, (int)o->cmd.argc, (const char **)o->cmd.argv, o->cmd.lens);
    } else {
        free_op(o);
    }
}

/* Sends the held ops again once their backoff is over: before the round's
 * answers are flushed, so that effects still go before their answer. */
static void send_held(worker *w)
{
    if (w->nheld == 0 || rrpc__monotonic() < w->held_at)
        return;
    op *held = w->held;
    size_t n = w->nheld;
    w->held = NULL;
    w->nheld = w->capheld = 0;
    w->held_delay = w->held_delay * 2 > HOLD_MAX_S ? HOLD_MAX_S : w->held_delay * 2;
    for (size_t i = 0; i < n; i++)
        resend(w, &held[i]);
    free(held);
}

/* What of an op that was not confirmed is kept: an answer, dead letter,
 * effects, commit or give-back waits in retry; a count of losses is
 * added again; the rest is dropped. */
static void keep_or_drop(worker *w, op *o)
{
    if (kept_for_resend(o)) {
        keep_for_retry(w, o);
        return;
    }
    if (o->kind == OP_LOST)
        w->lost_unsent += o->count;
    free_op(o);
}

/* After a broken link: the replies and dead letters of OPS not yet
 * confirmed, and those queued since, wait in retry; the rest is dropped. */
static void keep_unconfirmed(worker *w, op *ops, size_t nops)
{
    for (size_t i = 0; i < nops; i++)
        keep_or_drop(w, &ops[i]);
    op *queued = w->ops; /* queued during this collect, on the broken link */
    size_t n = w->nops;
    w->ops = NULL;
    w->nops = w->capops = 0;
    for (size_t i = 0; i < n; i++)
        keep_or_drop(w, &queued[i]);
    free(queued);
}

/* Queues again what waits in retry (after a broken link, or a round that
 * Redis answered with "not now"). */
static void requeue_retries(worker *w)
{
    size_t n = w->nretry;
    op *ops = w->retry;
    w->retry = NULL;
    w->nretry = w->capretry = 0;
    for (size_t i = 0; i < n; i++)
        resend(w, &ops[i]);
    free(ops);
}

/* How a reply that is an error is to be taken: 0 it is the answer;
 * RETRY_LATER "not now" -- Redis is loading, busy in a script, a replica
 * cut off from its master (the op is sent again after a pause); RETRY_NOW
 * the reply script is not cached on that node (sent again at once, as
 * EVAL); RETRY_RELOAD reliable mode's scripts are gone (reloaded first). */
enum { RETRY_NO, RETRY_LATER, RETRY_NOW, RETRY_RELOAD };

static int retry_kind(const op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ERROR)
        return RETRY_NO;
    const char *e = rrpc__reply_str(r, NULL);
    int noscript = e && strncmp(e, "NOSCRIPT", 8) == 0;
    if (o->kind == OP_REPLY && noscript)
        return RETRY_NOW;
    if ((o->kind == OP_COMMIT || o->kind == OP_POP) && noscript)
        return RETRY_RELOAD;
    if (rrpc__reply_transient(r))
        return RETRY_LATER; /* for ops that are not kept, only the pause */
    return RETRY_NO;
}

/* Reads the reply of every command sent, in order, so that each is paired
 * with its own command whatever Redis answers; the pop pair's replies
 * (NULL if no pop was sent) land in popped.  Returns RRPC_OK while the link
 * is in step, even when some replies said "not now" (those ops wait in
 * retry); an error only when the link broke (everything unconfirmed waits
 * in retry, the link must be recovered).  A refused reply becomes a dead
 * letter in the next round. */
static int collect(worker *w, rrpc__reply *popped[2])
{
    int npopped = 0;
    size_t nops = w->nops;
    op *ops = w->ops;
    w->ops = NULL;
    w->nops = w->capops = 0;
    int rc = RRPC_OK, transient = 0;
    size_t i = 0;
    for (; i < nops; i++) {
        rrpc__reply *r = NULL;
        rc = rrpc__conn_read(w->conn, &r);
        if (rc != RRPC_OK)
            break;
        int again = retry_kind(&ops[i], r);
        if (again == RETRY_LATER) {
            transient = 1;
            snprintf(w->transient, sizeof w->transient, "%s", rrpc__reply_str(r, NULL));
        } else if (again == RETRY_NOW) {
            w->script_known = 0;
        } else if (again == RETRY_RELOAD) {
            w->reload_scripts = 1;
        }
        if (ops[i].kind == OP_POP) {
            if (npopped < 2)
                popped[npopped++] = r; /* an error reply there holds no request */
            else
                rrpc__reply_free(r);
            continue;
        }
        if (again != RETRY_NO && kept_for_resend(&ops[i])) {
            keep_for_retry(w, &ops[i]);
        } else if (ops[i].kind == OP_COMMIT && rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
            /* Refused for good: the ACL refused its reply key (committed
             * again with a dead letter), or out of memory (held, retried). */
            if (refused_reply_key(w, &ops[i], r))
                free_op(&ops[i]);
            else
                hold(w, &ops[i], rrpc__reply_str(r, NULL)); /* takes it over */
        } else if (kept_for_resend(&ops[i]) && refused_for_memory(r)) {
            hold(w, &ops[i], rrpc__reply_str(r, NULL)); /* at-most-once: until the TTL */
        } else {
            if (ops[i].kind == OP_TIME && again == RETRY_NO)
                rrpc__clock_parse_time(&w->clock, r, ops[i].sent_ms);
            else
                judge(w, &ops[i], r);
            free_op(&ops[i]);
        }
        rrpc__reply_free(r);
    }
    if (rc != RRPC_OK) {
        keep_unconfirmed(w, ops + i, nops - i);
        for (size_t k = 0; k < i; k++)
            free_op(&ops[k]);
        free(ops);
        return rc;
    }
    if (transient && !w->retry_wait)
        log_worker(w, "Redis says not now; answers wait and are sent again", w->transient);
    w->retry_wait |= transient;
    free(ops);
    return RRPC_OK;
}

static void send_clock_refresh(worker *w)
{
    if (rrpc__clock_age(&w->clock) > CLOCK_REFRESH_S) {
        const char *time[] = {"TIME"};
        send_cmd(w, (op){.kind = OP_TIME, .sent_ms = rrpc__now() * 1000.0}, 1, time, NULL);
    }
}

/* Reads the registered services again (rule 3 of the reply keys) at most
 * every SERVICES_REFRESH_S, in the pipeline of a pop: no round trip of
 * its own, never on the path of a request. */
static void send_services_refresh(worker *w)
{
    double now = rrpc__monotonic();
    if (w->services_at > 0 && now - w->services_at < SERVICES_REFRESH_S)
        return;
    w->services_at = now;
    const char *members[] = {"SMEMBERS", w->srv->services_key};
    send_cmd(w, (op){.kind = OP_SERVICES}, 2, members, NULL);
}

/* Queues the pop pair: block for one request, then take what else waits.
 * In reliable mode the pair moves requests into the in-flight list.
 * QUICK: commands queued since the last round (dead letters, answers sent
 * one by one) would otherwise wait behind the pop's block: it is short. */
static void send_pop(worker *w, int quick)
{
    const char *timeout = quick ? QUICK_TIMEOUT : BLOCK_TIMEOUT;
    rrpc_server *s = w->srv;
    const op pop = {.kind = OP_POP};
    send_clock_refresh(w);
    send_services_refresh(w);
    int extra = atomic_load(&s->batch_now);
    snprintf(w->batch_text, sizeof w->batch_text, "%d", extra);
    if (s->reliable) {
        /* Registered before the first BLMOVE, so that a request it lands is
         * found by the reaper even if this worker dies before its take. */
        const char *sadd[] = {"SADD", s->rel.set_key, w->rk.wid};
        const char *block[] = {"BLMOVE", s->list_key, w->rk.landing, "LEFT", "RIGHT", timeout};
        const char *take[12];
        snprintf(w->base_text, sizeof w->base_text, "%016llx", w->takes++);
        rrpc__rel_take_argv(&s->rel, &w->rk, w->batch_text, w->base_text, take);
        if (!w->registered && send_cmd(w, plain, 3, sadd, NULL) == RRPC_OK)
            w->registered = 1;
        if (send_cmd(w, pop, 6, block, NULL) == RRPC_OK)
            send_cmd(w, pop, 12, take, NULL);
        return;
    }
    const char *block[] = {"BLPOP", w->list, timeout};
    const char *more[] = {"LPOP", w->list, w->batch_text};
    if (send_cmd(w, pop, 3, block, NULL) == RRPC_OK && extra > 0)
        send_cmd(w, pop, 3, more, NULL);
}

/* Adds the losses counted since the last round to <service>:stats "lost"
 * (a refused or unconfirmed count is added again later). */
static void send_lost(worker *w)
{
    if (w->lost_unsent == 0)
        return;
    char n[24];
    snprintf(n, sizeof n, "%llu", w->lost_unsent);
    const char *incr[] = {"HINCRBY", w->srv->stats_key, "lost", n};
    if (send_cmd(w, (op){.kind = OP_LOST, .count = w->lost_unsent}, 4, incr, NULL) == RRPC_OK)
        w->lost_unsent = 0;
}

static void free_pair(rrpc__reply *pair[2])
{
    rrpc__reply_free(pair[0]);
    rrpc__reply_free(pair[1]);
    pair[0] = pair[1] = NULL;
}

/* Nonzero if Redis refused a pop (e.g. WRONGTYPE, BUSY, or out of memory:
 * BLMOVE and the take script write); logged once until a pop works.  What
 * the other half of the pair took is handled all the same. */
static int pop_refused(worker *w, rrpc__reply *const pair[2])
{
    int refused = 0;
    for (int i = 0; i < 2; i++)
        if (pair[i] && rrpc__reply_type(pair[i]) == RRPC__REPLY_ERROR) {
            if (!refused && !w->pop_failing)
                log_worker(w, "cannot pop requests (retried every 0.5 s)",
                           rrpc__reply_str(pair[i], NULL));
            refused = 1;
        }
    if (!refused && w->pop_failing)
        log_worker_at(w, RRPC_LOG_INFO, "pops work again", NULL);
    w->pop_failing = refused;
    return refused;
}

static void drop_pending(worker *w)
{
    for (size_t i = 0; i < w->nops; i++)
        free_op(&w->ops[i]);
    free(w->ops);
    w->ops = NULL;
    w->nops = w->capops = 0;
    /* A commit (reliable mode) is not lost: its request is still held in
     * Redis, and reaped once this worker is gone.  The rest is. */
    const char *why = "the worker stopped before Redis took it";
    for (size_t i = 0; i < w->npend; i++)
        lose_item(w, &w->pend[i], why);
    for (size_t i = 0; i < w->nretry; i++)
        lose_op(w, &w->retry[i], why);
    for (size_t i = 0; i < w->nheld; i++)
        lose_op(w, &w->held[i], why);
    for (size_t i = 0; i < w->nretry; i++)
        free_op(&w->retry[i]);
    free(w->retry);
    w->retry = NULL;
    w->nretry = w->capretry = 0;
    for (size_t i = 0; i < w->nheld; i++) /* still held in Redis: reaped once we are gone */
        free_op(&w->held[i]);
    free(w->held);
    w->held = NULL;
    w->nheld = w->capheld = 0;
    for (size_t i = 0; i < w->npend; i++)
        free_item(&w->pend[i]);
    free(w->pend);
    w->pend = NULL;
    w->npend = w->cappend = 0;
    free(w->services);
    free(w->services_buf);
    w->services = NULL;
    w->services_buf = NULL;
    free_pair(w->in_hand);
}

/* Reconnects with exponential backoff and jitter until it works or the
 * server is stopped.  Logs once per outage.  Whatever was sent and not
 * confirmed waits in retry and is sent again by the loop. */
static void recover(worker *w)
{
    keep_unconfirmed(w, NULL, 0); /* nothing queued on the old link is answered */
    log_worker(w, "lost the Redis connection, reconnecting",
               w->transient[0] ? w->transient : rrpc__conn_errmsg(w->conn));
    w->transient[0] = '\0';
    w->script_known = 0; /* maybe a restarted Redis, without our script */
    w->reload_scripts = 0;
    w->registered = 0; /* the reaper may have taken this worker for dead */
    double delay = BACKOFF_MIN_S;
    for (;;) {
        double jitter = (double)(rand() % 1000) / 1000.0; /* spreads a herd of workers */
        rrpc__sleep(delay * (0.5 + jitter));
        if (rrpc__conn_reconnect(w->conn) == RRPC_OK &&
            rrpc__conn_set_timeout(w->conn, SOCKET_TIMEOUT_S) == RRPC_OK &&
            (!w->srv->reliable || rrpc__rel_load_scripts(&w->srv->rel, w->conn) == RRPC_OK) &&
            (rrpc__clock_sync(&w->clock, w->conn) == RRPC_OK || !rrpc__conn_broken(w->conn))) {
            log_worker_at(w, RRPC_LOG_INFO, "reconnected", NULL);
            return;
        }
        /* A stopping worker still tries, once per round, to deliver the
         * answers it holds; the stop grace bounds its rounds. */
        if (atomic_load(&w->srv->stop))
            return;
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}

/* Before a round: what waits in retry is queued again -- after a pause
 * if Redis said "not now" (growing while it keeps saying so), after
 * reloading reliable mode's scripts if Redis forgot them. */
static void prepare_retries(worker *w)
{
    if (w->reload_scripts) {
        /* A synchronous SCRIPT LOAD needs a link with nothing in flight:
         * take a fresh one (what was queued waits in retry). */
        w->transient[0] = '\0';
        snprintf(w->transient, sizeof w->transient, "NOSCRIPT: reloading the scripts");
        recover(w);
    }
    if (w->retry_wait) {
        rrpc__sleep(w->retry_pause);
        w->retry_pause =
            w->retry_pause * 2 > RETRY_PAUSE_MAX_S ? RETRY_PAUSE_MAX_S : w->retry_pause * 2;
        w->retry_wait = 0;
    } else {
        w->retry_pause = BACKOFF_MIN_S;
    }
    if (w->nretry > 0)
        requeue_retries(w);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    rrpc_server *s = w->srv;
    double give_up_at = 0;
    for (;;) {
        int stopping = atomic_load(&s->stop);
        if (stopping && give_up_at == 0)
            give_up_at = rrpc__monotonic() + STOP_RETRY_S;
        if (stopping && rrpc__monotonic() > give_up_at)
            break; /* Redis never took them: drop_pending says what was lost */
        /* Answers, dead letters and retries are judged by their replies,
         * which come after the pop's: a short block keeps their dead
         * letters (a refused key, say) from waiting for a long one. */
        int quick = w->nops > 0 || w->npend > 0 || w->nretry > 0 || w->split_pending;
        w->split_pending = 0;
        prepare_retries(w);
        send_held(w); /* what Redis refused for memory, once its backoff is over */
        flush_replies(w);
        send_lost(w);
        if (!stopping)
            send_pop(w, quick);
        if (w->nops == 0 && stopping && w->nretry == 0 && w->npend == 0) {
            if (!holds_answers(w))
                break;
            rrpc__sleep(HOLD_MIN_S); /* until send_held, within STOP_RETRY_S */
            continue;
        }
        if (w->nops == 0) { /* the pop could not even be queued: the link is down */
            if (stopping && w->nretry == 0)
                break;
            recover(w);
            continue;
        }
        rrpc__reply *popped[2] = {NULL, NULL};
        int rc = collect(w, popped);
        if (rc != RRPC_OK) {
            /* Whatever a lost pop took is lost with the link (at-most-once). */
            free_pair(popped);
            if (stopping && w->nretry == 0)
                break;
            recover(w);
            continue;
        }
        free_pair(w->in_hand); /* nothing refers to it any more: retries own copies */
        w->in_hand[0] = popped[0];
        w->in_hand[1] = popped[1];
        int refused = pop_refused(w, popped);
        if (popped[0] != NULL || popped[1] != NULL)
            handle_popped(w, popped);
        if (refused && !w->retry_wait)
            rrpc__sleep(BACKOFF_MIN_S * 10); /* e.g. WRONGTYPE: do not spin */
    }
    drop_pending(w);
    return NULL;
}

/* ---- running the pool ---------------------------------------------------- */

static _Atomic(rrpc_server *) signalled_server;

static void on_signal(int sig)
{
    (void)sig;
    rrpc_server *s = atomic_load(&signalled_server);
    if (s)
        atomic_store(&s->stop, 1);
}

static void install_signals(rrpc_server *s, struct sigaction *old_int, struct sigaction *old_term)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    atomic_store(&signalled_server, s);
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
}

static void restore_signals(const struct sigaction *old_int, const struct sigaction *old_term)
{
    sigaction(SIGINT, old_int, NULL);
    sigaction(SIGTERM, old_term, NULL);
    atomic_store(&signalled_server, NULL);
}

static void close_workers(worker *ws, int n)
{
    for (int i = 0; i < n; i++)
        rrpc__conn_close(ws[i].conn);
    free(ws);
}

/* Worker I's settings, before its link is opened. */
static void init_worker(rrpc_server *s, worker *w, int i)
{
    w->srv = s;
    w->id = i;
    snprintf(w->ttl_text, sizeof w->ttl_text, "%d", s->reply_ttl_s);
    snprintf(w->trim_text, sizeof w->trim_text, "%ld", -s->dead_letter_max);
    snprintf(w->batch_text, sizeof w->batch_text, "%d", s->batch_max);
    w->rules = s->rules; /* the services are the worker's own copy */
    w->retry_pause = BACKOFF_MIN_S;
    rrpc__shard_key(w->list, sizeof w->list, s->list_key, i % s->shards); /* fits: set_keys */
    if (s->reliable)
        rrpc__rel_worker_keys(&s->rel, i, &w->rk); /* fits: rrpc__rel_init checked */
}

/* Connects every worker before any thread starts, so that a wrong URL or
 * password is reported by rrpc_server_run instead of being retried. */
static int connect_workers(rrpc_server *s, worker **out)
{
    worker *ws = calloc((size_t)s->workers, sizeof *ws);
    if (ws == NULL)
        return RRPC_ENOMEM;
    for (int i = 0; i < s->workers; i++) {
        worker *w = &ws[i];
        init_worker(s, w, i);
        int rc =
            rrpc__conn_open(&w->conn, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
        if (rc == RRPC_OK)
            rc = rrpc__conn_set_timeout(w->conn, SOCKET_TIMEOUT_S);
        if (rc == RRPC_OK && rrpc__clock_sync(&w->clock, w->conn) != RRPC_OK)
            rc = rrpc__conn_broken(w->conn) ? RRPC_ECONNECT : RRPC_OK; /* see below */
        if (rc != RRPC_OK) {
            close_workers(ws, i + 1);
            return rc;
        }
    }
    *out = ws;
    return RRPC_OK;
}

/* Stops the heartbeat and unregisters the workers that hold nothing. */
static void stop_reliable(rrpc_server *s, const worker *ws)
{
    rrpc__rel_worker *keys = malloc((size_t)s->workers * sizeof *keys);
    int n = keys ? s->workers : 0; /* without memory: the reaper cleans up */
    for (int i = 0; i < n; i++)
        keys[i] = ws[i].rk;
    rrpc__rel_stop(&s->rel, keys, n);
    free(keys);
}

/* An eviction policy other than noeviction lets Redis drop request lists
 * and in-flight keys under memory pressure: requests lost without a trace.
 * Reliable mode refuses to run on it; at-most-once says so once.  A user
 * that may not read the configuration (ACL) is told once what to check. */
static int check_eviction(rrpc_server *s, rrpc__conn *c)
{
    const char *get[] = {"CONFIG", "GET", "maxmemory-policy"};
    rrpc__reply *r = NULL;
    int rc = rrpc__conn_append(c, 3, get, NULL);
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &r);
    if (rc != RRPC_OK)
        return rrpc__fail(s->errmsg, sizeof s->errmsg, rc, "%s", rrpc__conn_errmsg(c));
    const char *policy = rrpc__reply_type(r) == RRPC__REPLY_ARRAY && rrpc__reply_count(r) == 2
                             ? rrpc__reply_str(rrpc__reply_element(r, 1), NULL)
                             : NULL;
    if (policy == NULL)
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "Redis's maxmemory-policy is unknown (CONFIG GET: %s): make sure it is "
                   "noeviction, or Redis may evict requests under memory pressure",
                   rrpc__reply_str(r, NULL) ? rrpc__reply_str(r, NULL) : "unexpected reply");
    else if (strcmp(policy, "noeviction") != 0 && s->reliable)
        rc = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                        "reliable mode needs Redis's maxmemory-policy noeviction, not %s: an "
                        "eviction policy can drop request lists and in-flight requests",
                        policy);
    else if (strcmp(policy, "noeviction") != 0)
        rrpc__logf(RRPC_LOG_WARN, s->service, NULL,
                   "Redis's maxmemory-policy is %s: under memory pressure it may evict request "
                   "lists and reply keys (use noeviction)",
                   policy);
    rrpc__reply_free(r);
    return rc;
}

/* The registry's heartbeat and, in reliable mode, the in-flight lists'
 * heartbeat and reaper: both before any worker takes a request. */
static int start_heartbeats(rrpc_server *s)
{
    int rc = rrpc__registry_start(s->registry, &s->url, s->connect_timeout_s, s->workers, s->errmsg,
                                  sizeof s->errmsg);
    if (rc == RRPC_OK && s->reliable &&
        (rc = rrpc__rel_start(&s->rel, &s->url, s->connect_timeout_s, s->errmsg,
                              sizeof s->errmsg)) != RRPC_OK)
        rrpc__registry_stop(s->registry);
    return rc;
}

/* ---- waiting for Redis at start ------------------------------------------ */

static void log_start(const rrpc_server *s, rrpc_log_level level, const char *what,
                      const char *detail)
{
    rrpc__log(level, s->service, "start", what, detail);
}

/* Nonzero if a failed start may work later: Redis is not listening yet,
 * is loading its data, a failover or a forming Cluster has no master for
 * the slot yet.  A refused password or ACL never heals by waiting. */
static int start_may_heal(int rc, const char *why)
{
    static const char *const refusals[] = {"WRONGPASS", "NOPERM", "NOAUTH"};
    static const char *const not_yet[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN",
                                          "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
        if (strstr(why, refusals[i]) != NULL)
            return 0;
    if (rc == RRPC_ECONNECT || rc == RRPC_ETIMEDOUT)
        return 1;
    for (size_t i = 0; i < sizeof not_yet / sizeof not_yet[0]; i++)
        if (strstr(why, not_yet[i]) != NULL)
            return 1;
    return 0;
}

/* Whether Redis serves commands yet: a Redis still loading its data
 * accepts connections but answers LOADING, which the workers' links alone
 * would not notice (without heartbeats nothing else asks).  Anything but
 * a transient error (even an ACL without PING) counts as ready. */
static int redis_ready(rrpc_server *s, rrpc__conn *c)
{
    rrpc__reply *r = NULL;
    const char *ping[] = {"PING"};
    int rc = rrpc__conn_append(c, 1, ping, NULL);
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &r);
    if (rc != RRPC_OK)
        return rrpc__fail(s->errmsg, sizeof s->errmsg, rc, "%s", rrpc__conn_errmsg(c));
    if (rrpc__reply_transient(r))
        rc = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ECONNECT, "Redis is not ready: %s",
                        rrpc__reply_str(r, NULL));
    rrpc__reply_free(r);
    return rc;
}

/* One try: every worker's link, then the heartbeats. */
static int start_once(rrpc_server *s, worker **ws)
{
    s->errmsg[0] = '\0';
    int rc = connect_workers(s, ws);
    if (rc == RRPC_OK && (rc = redis_ready(s, (*ws)[0].conn)) != RRPC_OK) {
        close_workers(*ws, s->workers);
        *ws = NULL;
    }
    if (rc == RRPC_OK && (rc = check_eviction(s, (*ws)[0].conn)) != RRPC_OK) {
        close_workers(*ws, s->workers);
        *ws = NULL;
    }
    if (rc == RRPC_OK && (rc = start_heartbeats(s)) != RRPC_OK) {
        close_workers(*ws, s->workers);
        *ws = NULL;
    }
    return rc;
}

/* Sleeps SECONDS in short steps, so that a stop is noticed; nonzero if
 * the server was stopped. */
static int sleep_unless_stopped(rrpc_server *s, double seconds)
{
    double until = rrpc__monotonic() + seconds;
    for (double left = seconds; left > 0; left = until - rrpc__monotonic()) {
        if (atomic_load(&s->stop))
            return 1;
        rrpc__sleep(left < 0.1 ? left : 0.1);
    }
    return atomic_load(&s->stop);
}

/* Starts the workers, waiting for Redis with the workers' reconnect
 * backoff (see start_timeout_s in rrpc.h).  *ws stays NULL if the server
 * was stopped while waiting. */
static int start_waiting(rrpc_server *s, worker **ws)
{
    double began = rrpc__monotonic(), delay = BACKOFF_MIN_S;
    int waited = 0;
    for (;;) {
        int rc = start_once(s, ws);
        if (rc == RRPC_OK) {
            if (waited) {
                char after[64];
                snprintf(after, sizeof after, "Redis answered after %.1f s, serving",
                         rrpc__monotonic() - began);
                log_start(s, RRPC_LOG_INFO, after, NULL);
            }
            return RRPC_OK;
        }
        if (s->start_timeout_s < 0 || !start_may_heal(rc, s->errmsg))
            return rc;
        double left = s->start_timeout_s > 0 ? began + s->start_timeout_s - rrpc__monotonic() : 1e9;
        if (left <= 0) {
            char why[RRPC__ERRMSG_LEN];
            snprintf(why, sizeof why, "%s", s->errmsg);
            return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ECONNECT,
                              "Redis did not answer within the start timeout (%g s): %s",
                              s->start_timeout_s, why);
        }
        if (!waited) {
            char what[64] = "waiting for Redis";
            if (s->start_timeout_s > 0)
                snprintf(what, sizeof what, "waiting for Redis (up to %g s)", s->start_timeout_s);
            log_start(s, RRPC_LOG_WARN, what, s->errmsg); /* once, not every try */
            waited = 1;
        }
        double jitter = (double)(rand() % 1000) / 1000.0; /* spreads a herd of servers */
        double pause = delay * (0.5 + jitter);
        if (sleep_unless_stopped(s, pause < left ? pause : left))
            return RRPC_OK;
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}

int rrpc_server_run(rrpc_server *s)
{
    if (s == NULL)
        return RRPC_EINVAL;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&s->running, &expected, 1))
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ESTATE, "server already running");
    if (s->refusal) { /* errmsg says why; no wait for Redis can change it */
        atomic_store(&s->running, 0);
        return s->refusal;
    }
    /* Before the wait for Redis, so that a supervisor can stop a waiting
     * server gracefully. */
    struct sigaction old_int, old_term;
    if (s->handle_signals)
        install_signals(s, &old_int, &old_term);
    worker *ws = NULL;
    int rc = start_waiting(s, &ws);
    if (ws == NULL) { /* failed, or stopped while waiting */
        if (s->handle_signals)
            restore_signals(&old_int, &old_term);
        atomic_store(&s->stop, 0);
        atomic_store(&s->running, 0);
        return rc;
    }
    int started = 0;
    for (; started < s->workers; started++)
        if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0) {
            rc = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ESYS, "cannot start a thread");
            atomic_store(&s->stop, 1);
            break;
        }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    rrpc__registry_stop(s->registry); /* after the last answer: record removed */
    if (s->handle_signals)
        restore_signals(&old_int, &old_term);
    if (s->reliable)
        stop_reliable(s, ws);
    close_workers(ws, s->workers);
    atomic_store(&s->stop, 0);
    atomic_store(&s->running, 0);
    return rc;
}

/* ---- one worker on the calling thread (server_worker.h) ------------------ */

int rrpc__server_run_worker(rrpc_server *s, int id)
{
    if (s == NULL || id < 0)
        return RRPC_EINVAL;
    worker w;
    memset(&w, 0, sizeof w);
    init_worker(s, &w, id);
    int rc = rrpc__conn_open(&w.conn, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(w.conn, SOCKET_TIMEOUT_S);
    if (rc == RRPC_OK && s->reliable)
        rc = rrpc__rel_learn_scripts(&s->rel, w.conn);
    if (rc == RRPC_OK)
        worker_main(&w); /* until rrpc_server_stop and nothing left to send */
    rrpc__conn_close(w.conn);
    atomic_store(&s->stop, 0);
    return rc;
}
