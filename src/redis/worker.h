/* worker.h -- what the Redis side of a server shares: the transport's
 * part of a server (struct rrpc__server_broker), the worker and its ops,
 * the delivery modes, the worker's tunables, and the functions one file
 * of the worker calls in another.  Included only by server_ops.c and
 * worker*.c: server/ sees the transport through transport/server_ops.h.
 */
#ifndef RRPC_WORKER_H
#define RRPC_WORKER_H

#include "core/clock.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "redis/registry.h"
#include "redis/reliable.h"
#include "redis/conn.h"
#include "core/url.h"
#include "transport/server_ops.h"

#include <pthread.h>
#include <stdatomic.h>

/* The worker's tunables, in one place. */
#define BLOCK_TIMEOUT      "0.5"
#define QUICK_TIMEOUT      "0.01" /* the pop's wait while something awaits confirmation */
#define SOCKET_TIMEOUT_S   10.0
#define BACKOFF_MIN_S      0.05
#define BACKOFF_MAX_S      5.0
#define FLUSH_AFTER_S      0.005 /* send a batch's finished replies after this long */
#define GIVE_BACK_AFTER_S  0.02  /* a batch still busy after this hands back its rest */
#define CLOCK_REFRESH_S    10.0  /* re-read the Redis clock this often */
#define SERVICES_REFRESH_S 5.0   /* re-read <prefix>rrpc:services this often */
#define RETRY_PAUSE_MAX_S  1.0   /* longest pause before resending after "not now" */
#define STOP_RETRY_S       5.0   /* a stopping worker tries this long to deliver */
#define BATCH_BYTES_LIMITS 4     /* pop one at a time after a batch of 4 size limits */

/* The Redis transport's part of one server (server_ops.h): what server/
 * never sees.  Set up by create, the workers by connect. */
struct rrpc__server_broker {
    rrpc__serving *s;                  /* the server's neutral part (borrowed) */
    const struct rrpc__delivery *mode; /* chosen once by create */
    char services_key[RRPC__KEY_MAX];  /* <prefix>rrpc:services */
    char reply_sha[41];                /* SHA-1 of rrpc__reply_script */
    rrpc__rel rel;                     /* reliable mode's keys and heartbeat */
    rrpc__registry *registry;          /* record, heartbeat, stats (registry.c) */
    int announced;                     /* announce succeeded: withdraw has work */
    struct worker *ws;                 /* s->workers, from connect to disconnect */
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
    OP_COMMIT,   /* reliable mode: one request's part of a commit call; cmd owned */
    OP_COMMITS,  /* reliable mode: the commit script call of a batch; subs owned */
    OP_GIVEBACK, /* LPUSH of requests handed back unstarted; cmd owned */
    OP_EFFECTS,  /* the effects script of one request (effects_script); cmd owned */
    OP_RELEASE,  /* reliable on a Cluster: HDEL of a request pushed; text: its field */
    OP_LOST,     /* HINCRBY <service>:stats lost <count> */
    OP_EXPIRED   /* HINCRBY <service>:stats expired <count> */
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
    char *release;     /* reliable on a Cluster: the in-flight field to release once pushed */
    int alone;         /* refused as part of a call: sent in a call of its own */
    double give_up_at; /* refused for memory: lost if still refused then (0: not yet) */
} reply_item;

typedef struct op {
    enum op_kind kind;
    const char *msg; /* OP_COMMIT: the request text, for a dead letter */
    size_t msg_len;
    char *msg_owned; /* msg's copy once the op outlives the popped reply */
    char *key;       /* OP_COMMIT on a Cluster: its reply key (key_len), pushed after it */
    size_t key_len;
    char *text;      /* OP_DEAD: owned text to push; OP_RELEASE: the field */
    double sent_ms;  /* OP_TIME: local wall time it was queued */
    rrpc__cmd cmd;   /* OP_COMMIT: its part of a commit call; others: the whole command */
    struct op *subs; /* OP_COMMITS: the OP_COMMITs of the call, owned */
    size_t nsubs;
    int alone;         /* OP_COMMIT: in a call of its own (a batch was refused whole) */
    reply_item *items; /* OP_REPLY: the responses of the call, owned */
    size_t nitems;
    int eval;                 /* OP_REPLY: sent as EVAL, so the script is cached now */
    double give_up_at;        /* at-most-once, refused for memory: lost if still refused then */
    unsigned long long count; /* OP_LOST, OP_EXPIRED: the count added */
} op;

/* Reliable mode: a taken request's identity (rel_identity.c), whether it
 * is stable, and where its answer is in the check script's reply. */
typedef struct rrpc__rel_id {
    char sha1[41];
    int stable;
    int copy; /* an earlier request of the same take has this identity */
    size_t at;
    char refused[64]; /* "dedup key refused: <type>" if its done key is not a string */
} rrpc__rel_id;

typedef struct worker {
    rrpc__serving *srv;                /* the server: settings, decide, counters */
    rrpc__server_broker *b;            /* its Redis side */
    const struct rrpc__delivery *mode; /* b->mode */
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
    int extra;                /* how many more requests the next pop takes */
    char batch_text[16];      /* the same as text */
    char list[RRPC__KEY_MAX]; /* the request list it pops: its shard's */
    char high[RRPC__KEY_MAX]; /* and that list's priority lists (PROTOCOL.md section 7) */
    char low[RRPC__KEY_MAX];
    /* Reliable mode. */
    rrpc__rel_worker rk;      /* its id and keys */
    unsigned long long takes; /* takes sent: makes every in-flight field unique */
    char base_text[24];       /* the take's token base: takes as 16 hex digits */
    int registered;           /* its id is in {L}:inflight (else SADD before BLMOVE) */
    rrpc__rel_id *ids;        /* the identities of the requests of the last take */
    size_t nids, capids;
    rrpc__reply *check; /* the MGET of their done keys (or NULL) */
    int pop_failing;    /* the last pop was refused (logged once) */
    op *pcommit;        /* reliable mode: commits for the next commit call (rrpc__flush_commits) */
    size_t npcommit, cappcommit;
    op *held; /* commits Redis refused (not transiently), at-most-once answers, dead letters,
               * effects and give-backs refused for memory: sent again later */
    size_t nheld, capheld;
    double held_at, held_delay;        /* when, and the current backoff */
    unsigned long long lost_unsent;    /* losses not yet added to <service>:stats */
    unsigned long long expired_unsent; /* expired requests not yet added there */
    unsigned long long effects_sent;   /* makes every effects guard key unique */
    char token[33];                    /* this thread's random part of the guard keys */
    /* Progress and cancellation (worker_side.c): a second link, opened
     * the first time a handler needs it, and the hooks handlers reach. */
    rrpc__conn *side;
    rrpc__handler_io io;
    /* Limits (worker_limits.c): the entry being decided (for a "wait" in
     * reliable mode), the scripts' SHA-1s on the side link, the lease
     * counter, a failing check logged once, the last move of waiting
     * requests. */
    const struct entry *current;
    char rl_sha[2][41];
    unsigned long long rl_seq;
    int rl_failing;
    double promoted_at;
    /* A slot migrating (Redis Cluster): a pop naming the three priority
     * lists got TRYAGAIN, as a multi-key command there does while some of
     * its keys are missing; pops name L alone until then (monotonic). */
    double plain_pops_until;
} worker;

/* The requests of a pop pair, read by the delivery mode. */
typedef struct batch {
    const rrpc__reply *blocked; /* at-most-once: BLPOP's request, or NULL */
    const rrpc__reply *rest;    /* LPOP's or the take script's array, or NULL */
    size_t count;
    const rrpc__rel_id *ids;    /* reliable mode: per request, its identity */
    const rrpc__reply *answers; /* and the check script's answer */
} batch;

/* One request of a batch.  Reliable mode adds where it is held (its field
 * in the in-flight hash), its identity, and the answer remembered for it:
 * NULL, a string, or an error (its dedup key is not a string). */
typedef struct entry {
    const char *msg;
    size_t len;
    const char *field;
    char sha1[41];
    const rrpc__reply *answer;
    const char *refused; /* reliable: why its dedup key refused it, or NULL */
    int copy;            /* reliable: a later copy of a request of the same take */
} entry;

/* A delivery mode: how requests are taken, how a batch's entries read and
 * how an outcome is settled -- at most once (worker_once.c) or at least
 * once (worker_reliable.c, RELIABILITY.md).  Chosen once by create; the
 * worker's loop never asks which one it runs. */
typedef struct rrpc__delivery {
    const char *name;
    int needs_noeviction;    /* an evicting Redis is refused, not just warned about */
    const char *taken_again; /* logged when Redis takes held writes again */
    /* The server's side: after the record is written (heartbeats that
     * must run before any take), after the workers stopped, and a lone
     * worker's link (run_alone).  NULL: nothing to do. */
    int (*announce)(rrpc__server_broker *b);
    void (*withdraw)(rrpc__server_broker *b);
    int (*learn)(rrpc__server_broker *b, rrpc__conn *c);
    /* A worker's: its settings, and a new link (RRPC_OK if usable). */
    void (*init_worker)(worker *w);
    int (*relink)(worker *w);
    /* Queues the pop pair: one request waited for up to TIMEOUT, then up
     * to w->extra (w->batch_text) more. */
    void (*send_take)(worker *w, const char *timeout);
    batch (*batch_of)(rrpc__reply *const popped[2]);
    /* Before any entry of B is read (NULL: nothing to do): 0 if none
     * may run now (they stay where the take put them). */
    int (*prepare)(worker *w, batch *b);
    /* Entry K of B; 0 if the take's answer is malformed there. */
    int (*entry)(const batch *b, size_t k, entry *e);
    /* One entry: decided (rrpc__handle_message) or settled from what Redis
     * remembers of it. */
    void (*handle)(worker *w, const entry *e);
    /* The outcome of E (owned by the caller); REFUSED is the response
     * withheld from a reply key rules 1 to 4 refused, or NULL. */
    void (*settle)(worker *w, const entry *e, rrpc__outcome *out, const char *refused);
    /* A batch held up by a slow handler: what to do with entries FIRST..
     * (at most once: hand them back); NULL keeps them. */
    void (*hand_back)(worker *w, const batch *b, size_t first);
    /* Logs the start of a streak of writes refused for memory. */
    void (*log_held)(worker *w, const char *error);
} rrpc__delivery;

extern const rrpc__delivery rrpc__at_most_once;  /* worker_once.c */
extern const rrpc__delivery rrpc__at_least_once; /* worker_reliable.c */

/* worker_ops.c */
void rrpc__log_worker_at(const worker *w, rrpc_log_level level, const char *what,
                         const char *detail);
void rrpc__log_worker(const worker *w, const char *what, const char *detail);
int rrpc__grow(void **items, size_t *cap, size_t need, size_t size);
void rrpc__free_item(reply_item *it);
void rrpc__free_op(op *o);
int rrpc__kept_for_resend(const op *o);
void rrpc__own_msg(const char **msg, size_t len, char **owned);
void rrpc__lose_item(worker *w, const reply_item *it, const char *why);
void rrpc__lose_op(worker *w, const op *o, const char *why);
void rrpc__keep_for_retry(worker *w, op *o);
int rrpc__send_cmd(worker *w, op o, int argc, const char **argv, const size_t *lens);
extern const op rrpc__plain_op;

/* worker_reply.c */
void rrpc__hold_reply(worker *w, reply_item it);
void rrpc__queue_reply(worker *w, const char *msg, size_t len, char *key, size_t key_len,
                       char *text);
void rrpc__flush_replies(worker *w);
void rrpc__queue_dead(worker *w, char *text, double give_up_at);
void rrpc__send_dead_letter(worker *w, const char *reason, const char *msg, size_t len,
                            const json_t *response, const char *response_text);
void rrpc__judge_replies(worker *w, op *o, const rrpc__reply *r);
void rrpc__take_services(worker *w, const rrpc__reply *r);

/* worker_effects.c */
void rrpc__queue_effects(worker *w, const char *msg, size_t len, const json_t *effects);
void rrpc__judge_effects(worker *w, const op *o, const rrpc__reply *r);

/* worker_reliable.c */
void rrpc__pend_commit(worker *w, op *o);
void rrpc__flush_commits(worker *w);
void rrpc__judge_commits(worker *w, op *o, const rrpc__reply *r);
void rrpc__commits_refused(worker *w, op *o, const rrpc__reply *r);
void rrpc__release_held(worker *w, const char *field);

/* worker_batch.c */
size_t rrpc__pop_count(const rrpc__reply *r);
void rrpc__handle_message(worker *w, const entry *e);
void rrpc__handle_popped(worker *w, rrpc__reply *const popped[2]);

/* worker_collect.c */
void rrpc__hold(worker *w, op *o, const char *error);
int rrpc__holds_answers(const worker *w);
void rrpc__send_held(worker *w);
void rrpc__keep_unconfirmed(worker *w, op *ops, size_t nops);
void rrpc__requeue_retries(worker *w);
int rrpc__collect(worker *w, rrpc__reply *popped[2]);

/* worker_side.c */
void rrpc__side_start(worker *w);
void rrpc__side_stop(worker *w);
rrpc__reply *rrpc__side_command(worker *w, int argc, const char **argv, const size_t *lens);

/* worker_limits.c */
void rrpc__limits_io(worker *w, rrpc__handler_io *io);
void rrpc__send_promote(worker *w);

/* worker.c */
void rrpc__recover(worker *w);
void *rrpc__worker_main(void *arg);

/* server_ops.c */
void rrpc__init_worker(rrpc__server_broker *b, worker *w, int i);
extern const rrpc__server_ops rrpc__redis_server_ops;

#endif
