/* reliable.h -- at-least-once delivery (reliable.c, RELIABILITY.md): the
 * keys, scripts and heartbeat/reaper thread of reliable mode. */
#ifndef RRPC_RELIABLE_H
#define RRPC_RELIABLE_H

#include "core/internal.h"
#include "core/url.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct rrpc__conn rrpc__conn;

typedef struct rrpc__rel_options {
    int max_deliveries;
    double dedup_window_s;
    double heartbeat_ttl_s;
    long dead_letter_max;
    size_t max_request_bytes; /* larger requests are never decoded by a script */
    const char *dead_key;     /* borrowed from the server */
    const char *stats_key;    /* borrowed from the server */
} rrpc__rel_options;

/* One request list's reliable keys: the service's list, or one shard's.
 * All carry the list key as a hash tag, so each shard's keys are in the
 * slot of its list (RELIABILITY.md).  On a Cluster the scripts' dead
 * letters and counters go to keys of that slot too, moved on from there
 * by the heartbeat thread (the dead-letter outbox, rrpc__rel_start). */
typedef struct rrpc__rel_shard {
    char list_key[RRPC__KEY_MAX];    /* the list workers take from */
    char tag[RRPC__KEY_MAX];         /* "{<list key>}:" */
    char set_key[RRPC__KEY_MAX];     /* {L}:inflight, the set of worker ids */
    char alive_key[RRPC__KEY_MAX];   /* {L}:alive:<pid_id>, the heartbeat */
    char done_prefix[RRPC__KEY_MAX]; /* {L}:done:, + SHA-1 of a request */
    char dead_key[RRPC__KEY_MAX];    /* the scripts' dead letters: <service>:dead, or {L}:dead */
    char stats_key[RRPC__KEY_MAX];   /* their counters: <service>:stats, or {L}:stats */
} rrpc__rel_shard;

/* The reliable-mode state of one server: its keys and heartbeat thread. */
typedef struct rrpc__rel {
    rrpc__rel_options opts;
    const char *service;     /* borrowed */
    rrpc__rel_shard *shards; /* one per request list (rrpc__rel_free) */
    int nshards;
    /* Redis Cluster: a reply key is in another slot than the service's
     * keys, so a commit keeps its request held until the worker has
     * pushed the response and releases it then (RELIABILITY.md). */
    int cluster;
    char pid_id[128]; /* host:pid:random, this process */
    char window_text[24];
    char max_text[16];
    char size_text[24]; /* max_request_bytes */
    char trim_text[24]; /* -dead_letter_max, for LTRIM */
    /* SHA-1s of the scripts workers send by EVALSHA */
    char take_sha[41], commit_sha[41];
    rrpc__conn *conn;
    pthread_t thread;
    int started;
    int reap_failing; /* the last reap failed (logged once) */
    _Atomic int stop;
    _Atomic uint_fast64_t *redelivered, *dead_letters; /* the server's counters */
} rrpc__rel;

/* One worker thread's keys: its id W, its in-flight hash {L}:inflight:W
 * and the list {L}:landing:W that BLMOVE moves a request into, where L is
 * the list (shard) it takes from. */
typedef struct rrpc__rel_worker {
    const rrpc__rel_shard *shard; /* borrowed from the rrpc__rel */
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
/* Appends a copy of the LEN bytes at S as the next argument of *C. */
int rrpc__cmd_add(rrpc__cmd *c, const char *s, size_t len);

/* The longest list key (prefix + service) whose reliable keys fit. */
size_t rrpc__rel_max_list_key(void);
/* Keys for SHARDS request lists (shard k's list from LIST_KEY as
 * rrpc__shard_key makes it); CLUSTER: on a Redis Cluster.  RRPC_EINVAL if
 * the last shard's list key is longer than rrpc__rel_max_list_key(). */
int rrpc__rel_init(rrpc__rel *r, const char *list_key, int shards, int cluster, const char *service,
                   const rrpc__rel_options *opts);
void rrpc__rel_free(rrpc__rel *r);
/* Worker THREAD's keys, on shard SHARD. */
int rrpc__rel_worker_keys(const rrpc__rel *r, int shard, int thread, rrpc__rel_worker *k);
/* The take command (12 borrowed arguments) for COUNT more requests; BASE
 * (text) is unique to this take among the worker's takes.  HIGH and LOW:
 * the shard's priority lists (PROTOCOL.md section 7). */
#define RRPC__TAKE_ARGC 12
void rrpc__rel_take_argv(const rrpc__rel *r, const rrpc__rel_worker *k, const char *high,
                         const char *low, const char *count, const char *base,
                         const char *argv[RRPC__TAKE_ARGC]);
/* The identity (40 hex digits, into HEX) of the request MSG held by worker
 * WID under FIELD (rel_identity.c), with the rules of the reaper's Lua
 * (reliable.c): 1 if it is stable (a call, a keyed notification, a batch
 * of calls: its answer is remembered and looked up under it), 0 if it is
 * this take of it.  MAX: the size limit above which a message is not read
 * (0: none). */
int rrpc__rel_identity(const char *msg, size_t len, size_t max, const char *wid, const char *field,
                       char hex[41]);
/* The reaper's Lua definition of identity(item, max, token), which returns
 * the identity and the delivery key (for tests: C and Lua must agree). */
const char *rrpc__rel_identity_lua(void);

/* What one commit does (see the commit script). */
typedef struct rrpc__rel_commit {
    const char *field; /* the request's field in the worker's in-flight hash */
    const char *sha1;  /* the request's identity */
    const char *key;   /* reply key (binary, key_len) or NULL: nothing to send */
    size_t key_len;
    const char *response; /* response (response_len bytes) or NULL */
    size_t response_len;
    int again;               /* the answer remembered before is sent again: no new memory */
    const json_t *effects;   /* rrpc_request_add_effect commands, or NULL */
    const char *dead_letter; /* a dead-letter record to file, or NULL */
} rrpc__rel_commit;
/* Builds into *c (owned, rrpc__cmd_free) the part of a commit script call
 * that completes the request M describes: its key count, keys and
 * arguments (a call completes a batch of such parts). */
int rrpc__rel_commit_cmd(const rrpc__rel *r, const rrpc__rel_worker *k, rrpc__cmd *c,
                         const rrpc__rel_commit *m);
/* A command whose arguments are borrowed (the strings of its parts). */
typedef struct rrpc__argv {
    const char **argv;
    size_t *lens;
    size_t argc;
    char numkeys[24], count[24];
    char *texts;   /* owned: the numbers of the grouped layout */
    size_t *order; /* owned: outcome i is part order[i]'s; NULL: the parts' order */
} rrpc__argv;
void rrpc__argv_free(rrpc__argv *a);
/* Into *out: one commit script call for the N parts PARTS of requests held
 * in worker K's in-flight hash (one round trip for the batch).  A batch of
 * plain answers goes in the grouped layout (by reply key), whose outcomes
 * come in another order: out->order says which.  On a Cluster the call
 * keeps them held: the worker releases each (rrpc__rel_release_argv) once
 * its response is pushed. */
int rrpc__rel_commit_batch(const rrpc__rel *r, const rrpc__rel_worker *k, const char *reply_ttl,
                           const rrpc__cmd *const *parts, size_t n, rrpc__argv *out);
/* The command (3 borrowed arguments) that releases the request held under
 * FIELD by worker K (Cluster: after its response was pushed). */
void rrpc__rel_release_argv(const rrpc__rel_worker *k, const char *field, const char *argv[3]);
/* The commit part ORIG again, with DEAD_LETTER and without its reply key
 * (which was refused): into *c. */
int rrpc__rel_commit_dead(const rrpc__cmd *orig, rrpc__cmd *c, const char *dead_letter);
enum { RRPC__COMMIT_FIELD, RRPC__COMMIT_RESPONSE, RRPC__COMMIT_DEAD_LETTER };
/* A commit part's field, response or dead letter ("" if none), borrowed;
 * NULL if the part has no such argument. */
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

#endif
