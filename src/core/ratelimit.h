/* ratelimit.h -- rate limits and concurrency caps of a service (ratelimit.c):
 * the `limits` field of {L}:config read into a table, the table a server
 * holds while it runs, and the leases of the concurrency slots it holds.
 * No I/O: the transport runs the scripts (PROTOCOL.md section 9, "Limits"),
 * server/limits.c decides with the table.
 */
#ifndef RRPC_RATELIMIT_H
#define RRPC_RATELIMIT_H

#include "core/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* The longest tenant member a request may carry, in bytes. */
#define RRPC__TENANT_MAX 128
/* The field of {L}:config that holds the limits (JSON). */
#define RRPC__CONFIG_LIMITS "limits"

/* One entry of the limits object: a method's, or the whole service's ("*"). */
typedef struct rrpc__rl_rule {
    char *scope;      /* the method name, or "*" */
    double rate;      /* calls per second; 0: no rate limit */
    double burst;     /* calls allowed at once above the rate (>= 1) */
    long concurrency; /* running at once; 0: no cap */
    int per_tenant;   /* counters per tenant member */
    int wait;         /* over the limit: 1 wait in Redis, 0 refuse (-32003) */
} rrpc__rl_rule;

typedef struct rrpc__rl_table {
    rrpc__rl_rule *rules;
    size_t count;
    const rrpc__rl_rule *star;    /* the "*" rule, or NULL */
    struct rrpc__rl_table *older; /* retired tables, freed with the state */
} rrpc__rl_table;

/* Parses the limits object TEXT (LEN bytes) into *OUT (new).  RRPC_EINVAL
 * with ERR saying why (not JSON, a rate of 0, an unknown member...). */
int rrpc__rl_parse(const char *text, size_t len, rrpc__rl_table **out, char *err, size_t errlen);
void rrpc__rl_free(rrpc__rl_table *t);
/* The rule of METHOD (not the "*" one), or NULL. */
const rrpc__rl_rule *rrpc__rl_find(const rrpc__rl_table *t, const char *method);

/* Nonzero if TENANT (LEN bytes) is a valid tenant member: 1 to
 * RRPC__TENANT_MAX bytes, no control characters. */
int rrpc__tenant_ok(const char *tenant, size_t len);

/* One concurrency slot held: the lease MEMBER in the sorted set KEY. */
typedef struct rrpc__rl_lease {
    char key[RRPC__KEY_MAX];
    char member[64];
} rrpc__rl_lease;

/* A request over its limits, asked of the transport (rrpc__handler_io's
 * admit): the rules that apply (the method's, then "*"), its tenant and,
 * for a "wait", its text to put back. */
typedef struct rrpc__rl_ask {
    const rrpc__rl_rule *rules[2];
    size_t count;
    const char *tenant; /* NULL: none (one shared bucket) */
    size_t tenant_len;
    const char *text; /* the request as popped; NULL: cannot wait (a batch element) */
    size_t text_len;
    long lease_ms;
} rrpc__rl_ask;

enum { RRPC__RL_RUN, RRPC__RL_REFUSED, RRPC__RL_DEFERRED };

/* The transport's answer. */
typedef struct rrpc__rl_verdict {
    int outcome;               /* RRPC__RL_RUN, _REFUSED, _DEFERRED (back in Redis) */
    long long retry_after_ms;  /* over: when to try again, at the soonest */
    int by_concurrency;        /* over: 1 the concurrency cap, 0 the rate */
    const rrpc__rl_rule *rule; /* over: the rule */
    rrpc__rl_lease leases[2];  /* run: the slots taken (release them after) */
    size_t nleases;
} rrpc__rl_verdict;

/* What a running server knows of its limits.  CURRENT is read by every
 * worker for every request (one atomic load: NULL costs nothing more);
 * the heartbeat replaces it when the field changes, and the tables it
 * replaces stay allocated until the state is freed (a worker may still
 * read one), which is fine: they change when an operator changes them. */
typedef struct rrpc__rl_state {
    _Atomic(rrpc__rl_table *) current; /* NULL: no limits */
    atomic_int ever;                   /* limits were seen: waiting requests may exist */
    long lease_ms;                     /* how long a lease lives unless renewed */
    const char *service;               /* for log lines (borrowed) */
    pthread_mutex_t mu;                /* guards what follows */
    rrpc__rl_table *retired;
    char *text;                   /* the field as last read, NULL: absent */
    char error[RRPC__ERRMSG_LEN]; /* why TEXT was refused, "" if it was not */
    rrpc__rl_lease *leases;       /* the slots this process holds */
    size_t nleases, capleases;
} rrpc__rl_state;

void rrpc__rl_state_init(rrpc__rl_state *s, const char *service);
void rrpc__rl_state_clear(rrpc__rl_state *s);
/* The field as read now (TEXT NULL: absent).  A change replaces the table;
 * a field that does not parse keeps the last good table, logs why once
 * and is remembered in the error. */
void rrpc__rl_update(rrpc__rl_state *s, const char *text, size_t len);
/* Adds or removes a lease (out of memory: not renewed, it expires). */
void rrpc__rl_hold(rrpc__rl_state *s, const char *key, const char *member);
void rrpc__rl_drop(rrpc__rl_state *s, const char *key, const char *member);
/* A copy of the leases held (new, free()), their count in *N. */
rrpc__rl_lease *rrpc__rl_leases(rrpc__rl_state *s, size_t *n);

#endif
