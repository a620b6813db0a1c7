/* dispatch.h -- one popped message in, one outcome out (dispatch.c), no I/O:
 * the method table, limits and what a worker must do after a message. */
#ifndef RRPC_DISPATCH_H
#define RRPC_DISPATCH_H

#include "core/clock.h"
#include "core/ratelimit.h"

#include <rrpc/rrpc.h>

#include <stddef.h>

typedef struct rrpc__method {
    char *name;
    char *description;
    rrpc_method_fn fn;
    void *udata;
    /* Discovery and checks (server/discover.c): JSON Schemas or NULL, and
     * the documented errors, an array or NULL. */
    json_t *params_schema;
    json_t *result_schema;
    json_t *errors;
} rrpc__method;

/* One interceptor of rrpc_server_add_interceptor. */
typedef struct rrpc__interceptor {
    rrpc_before_fn before;
    rrpc_after_fn after;
    void *udata;
} rrpc__interceptor;

typedef struct rrpc__stats rrpc__stats;

typedef struct rrpc__methods {
    rrpc__method *items;
    size_t count;
    size_t cap;
    rrpc__stats *stats; /* per-method counters while a server runs, else NULL */
    /* Interceptors in calling order; the last n_inner are the library's
     * own, which stay innermost.  None: dispatch pays one test. */
    rrpc__interceptor *hooks;
    size_t n_hooks;
    size_t n_inner;
} rrpc__methods;

int rrpc__methods_add(rrpc__methods *m, const char *name, rrpc_method_fn fn, void *udata,
                      const char *description);
const rrpc__method *rrpc__methods_find(const rrpc__methods *m, const char *name);
void rrpc__methods_free(rrpc__methods *m);
/* Adds an interceptor: after the caller's so far, or (INNER) innermost. */
int rrpc__methods_add_hook(rrpc__methods *m, rrpc_before_fn before, rrpc_after_fn after,
                           void *udata, int inner);
/* The table entry of the method REQ called (for the library's own hooks). */
const rrpc__method *rrpc__request_entry(const rrpc_request *req);

/* A call's timeout cut to the deadline of the request the calling thread
 * is handling, if it is inside a handler (rrpc_request_time_left). */
double rrpc__inherited_timeout(double timeout_s);

/* What a handler may ask of the broker while it runs: progress pushed to
 * its reply key, and whether its caller cancelled it (PROTOCOL.md section
 * 7).  A transport's worker sets it for its thread (rrpc__handler_io_set)
 * before it decides requests; without one, progress is refused
 * (RRPC_ESTATE) and nothing is ever cancelled. */
typedef struct rrpc__handler_io {
    /* Pushes TEXT (LEN bytes) onto the reply key KEY (KEY_LEN bytes, a
     * key the request named) now, as an answer would be pushed. */
    int (*progress)(void *ctx, const char *key, size_t key_len, const char *text, size_t len);
    /* 1 if the cancel key KEY exists, 0 if not, negative if it cannot tell. */
    int (*cancelled)(void *ctx, const char *key, size_t key_len);
    /* Limits (PROTOCOL.md section 9, "Limits"): takes the request's place
     * under ASK's rules in one script, or refuses it, or (a "wait") puts
     * it back in the broker.  RRPC_OK with V filled, or an error (the
     * broker cannot tell: the request runs).  NULL: no limits here. */
    int (*admit)(void *ctx, const rrpc__rl_ask *ask, rrpc__rl_verdict *v);
    /* Gives back the concurrency slots V took. */
    void (*release)(void *ctx, const rrpc__rl_verdict *v);
    void *ctx;
    /* Nonzero: the broker has no Redis to apply effects on (AMQP), so
     * rrpc_request_add_effect refuses them with RRPC_ENOTSUP rather than
     * take commands that would be dropped. */
    int no_effects;
} rrpc__handler_io;

/* Sets the calling thread's handler I/O (borrowed; NULL: none). */
void rrpc__handler_io_set(const rrpc__handler_io *io);
/* The calling thread's handler I/O, or NULL. */
const rrpc__handler_io *rrpc__handler_io_get(void);

/* For the library's limits (server/limits.c): the method REQ calls, the
 * request's text as popped (NULL for a batch element: it cannot be put
 * back alone), and marking it put back (a "wait"): it is then neither
 * answered nor counted, its text being in the broker again. */
const char *rrpc__request_method(const rrpc_request *req);
const char *rrpc__request_text(const rrpc_request *req, size_t *len);
void rrpc__request_defer(rrpc_request *req);

/* The cancel key of the request the calling thread is handling, or NULL:
 * calls made from inside a handler carry it. */
const char *rrpc__inherited_cancel_key(void);
/* Nonzero if the request the calling thread is handling was cancelled
 * (rrpc_request_cancelled); 0 outside a handler. */
int rrpc__inherited_cancelled(void);

typedef struct rrpc__limits {
    size_t max_request_bytes;
    size_t max_batch;
    double batch_time_s; /* a JSON-RPC batch runs this long at most; 0: no limit */
} rrpc__limits;

/* What a worker must do after handling one popped message.  Every pointer
 * is owned by the outcome and released by rrpc__outcome_clear(). */
typedef struct rrpc__outcome {
    char *reply_key;       /* where to RPUSH response, or NULL */
    size_t reply_key_len;  /* binary length of reply_key */
    char *response;        /* the response text, or NULL (nothing to send) */
    char *dead_reason;     /* non-NULL: record a dead letter with this reason */
    json_t *dead_response; /* the undeliverable response, if any */
    unsigned requests;     /* request objects seen (batch elements singly) */
    unsigned notifications;
    unsigned errors;   /* error responses produced */
    unsigned expired;  /* requests refused because their deadline had passed */
    unsigned deferred; /* put back in the broker by a "wait" limit: nothing to settle */
    json_t *effects;   /* rrpc_request_add_effect commands: [[arg, ...], ...] or NULL */
} rrpc__outcome;

/* CLOCK (may be NULL: deadlines are then not checked) tells the Redis
 * server's time, against which request deadlines are judged. */
void rrpc__dispatch(const rrpc__methods *methods, const rrpc__limits *limits,
                    const rrpc__clock *clock, const char *text, size_t len, rrpc__outcome *out);
void rrpc__outcome_clear(rrpc__outcome *out);

#endif
