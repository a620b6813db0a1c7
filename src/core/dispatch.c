/* dispatch.c -- from one popped message to the response a worker sends.
 *
 * A worker hands the raw text of a list element to rrpc__dispatch and gets
 * back an outcome: the reply key and response text, or the reason the
 * message must go to the dead letters.  Doing this without I/O keeps the
 * JSON-RPC rules (docs/PROTOCOL.md sections 2-6) testable in isolation and
 * lets the server pipeline all Redis traffic of a batch.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/dispatch.h"
#include "core/envelope.h"
#include "core/protocol.h"
#include "core/stats.h"
#include "core/trace.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrpc_request {
    const char *method;
    json_t *params;       /* borrowed from the decoded message */
    json_t *id;           /* borrowed; NULL for notifications */
    json_t *error;        /* owned error object set by the handler, or NULL */
    double deadline_mono; /* local monotonic deadline, 0 if none */
    json_t **effects;     /* the outcome's effect list (created on demand) */
    /* Its W3C trace context (PROTOCOL.md section 7): the traceparent as
     * version 00, "" if absent or invalid; the tracestate (borrowed from
     * the message), NULL without a valid traceparent. */
    char traceparent[RRPC__TRACEPARENT_LEN + 1];
    const char *tracestate;
    /* Progress and cancellation (PROTOCOL.md section 7): the reply key
     * progress goes to (NULL: the caller did not ask, or a batch element),
     * and the cancel key (NULL: not cancellable), both borrowed. */
    const char *progress_key;
    size_t progress_key_len;
    const char *cancel_key;
    size_t cancel_key_len;
    int cancelled;           /* the caller cancelled it: seen once, kept */
    double cancel_looked_at; /* monotonic, when the broker was last asked */
    /* The request object, for rrpc_request_member: a batch element, or
     * decoded from TEXT on first use into *LAZY (freed after the handler):
     * the worker reads a single request without decoding all of it. */
    const json_t *message;
    const char *text; /* the popped text of a lone request, else NULL */
    size_t text_len;
    json_t **lazy;
    const rrpc__method *entry; /* the method called, once found */
    int deferred;              /* put back by a "wait" limit: no answer, not counted */
};

/* The deadline of the request the calling thread is handling (local
 * monotonic seconds, 0 if none): calls made from inside a handler inherit
 * it without any change to their signature. */
static _Thread_local double handler_deadline;

/* The request the calling thread's handler runs (NULL outside one), and
 * what its transport offers handlers (rrpc__handler_io_set). */
static _Thread_local rrpc_request *handler_request;
static _Thread_local const rrpc__handler_io *handler_io;

void rrpc__handler_io_set(const rrpc__handler_io *io)
{
    handler_io = io;
}

const rrpc__handler_io *rrpc__handler_io_get(void)
{
    return handler_io;
}

const char *rrpc__request_method(const rrpc_request *req)
{
    return req->method;
}

const char *rrpc__request_text(const rrpc_request *req, size_t *len)
{
    *len = req->text_len;
    return req->text;
}

void rrpc__request_defer(rrpc_request *req)
{
    req->deferred = 1;
}

double rrpc__inherited_timeout(double timeout_s)
{
    if (handler_deadline <= 0)
        return timeout_s;
    double left = handler_deadline - rrpc__monotonic();
    if (left < 0.001)
        left = 0.001; /* already late: fail at once, but never mean "default" */
    return timeout_s > 0 && timeout_s < left ? timeout_s : left;
}

/* ---- the method table ---------------------------------------------- */

int rrpc__methods_add(rrpc__methods *m, const char *name, rrpc_method_fn fn, void *udata,
                      const char *description)
{
    if (rrpc__methods_find(m, name) != NULL)
        return RRPC_EEXIST;
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        rrpc__method *items = realloc(m->items, cap * sizeof *items);
        if (items == NULL)
            return RRPC_ENOMEM;
        m->items = items;
        m->cap = cap;
    }
    rrpc__method *slot = &m->items[m->count];
    slot->name = strdup(name);
    slot->description = description ? strdup(description) : NULL;
    slot->fn = fn;
    slot->udata = udata;
    slot->params_schema = slot->result_schema = slot->errors = NULL;
    if (slot->name == NULL || (description && slot->description == NULL)) {
        free(slot->name);
        free(slot->description);
        return RRPC_ENOMEM;
    }
    m->count++;
    return RRPC_OK;
}

const rrpc__method *rrpc__methods_find(const rrpc__methods *m, const char *name)
{
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->items[i].name, name) == 0)
            return &m->items[i];
    return NULL;
}

void rrpc__methods_free(rrpc__methods *m)
{
    for (size_t i = 0; i < m->count; i++) {
        free(m->items[i].name);
        free(m->items[i].description);
        json_decref(m->items[i].params_schema);
        json_decref(m->items[i].result_schema);
        json_decref(m->items[i].errors);
    }
    free(m->items);
    free(m->hooks);
    memset(m, 0, sizeof *m);
}

int rrpc__methods_add_hook(rrpc__methods *m, rrpc_before_fn before, rrpc_after_fn after,
                           void *udata, int inner)
{
    rrpc__interceptor *hooks = realloc(m->hooks, (m->n_hooks + 1) * sizeof *hooks);
    if (hooks == NULL)
        return RRPC_ENOMEM;
    m->hooks = hooks;
    /* The caller's go before the library's own, which stay innermost. */
    size_t at = inner ? m->n_hooks : m->n_hooks - m->n_inner;
    memmove(&hooks[at + 1], &hooks[at], (m->n_hooks - at) * sizeof *hooks);
    hooks[at] = (rrpc__interceptor){before, after, udata};
    m->n_hooks++;
    m->n_inner += inner != 0;
    return RRPC_OK;
}

const rrpc__method *rrpc__request_entry(const rrpc_request *req)
{
    return req->entry;
}

/* ---- inside a handler ----------------------------------------------- */

const char *rrpc_request_method(const rrpc_request *req)
{
    return req->method;
}

json_t *rrpc_request_params(const rrpc_request *req)
{
    return req->params;
}

json_t *rrpc_request_id(const rrpc_request *req)
{
    return req->id;
}

json_t *rrpc_request_error(rrpc_request *req, int code, const char *message, json_t *data)
{
    json_decref(req->error);
    req->error = rrpc__error_object(code, message, data);
    return NULL;
}

int rrpc_request_time_left(const rrpc_request *req, double *seconds_left)
{
    if (req == NULL || req->deadline_mono <= 0)
        return 0;
    double left = req->deadline_mono - rrpc__monotonic();
    *seconds_left = left > 0 ? left : 0;
    return 1;
}

const char *rrpc_request_traceparent(const rrpc_request *req)
{
    return req != NULL && req->traceparent[0] ? req->traceparent : NULL;
}

const char *rrpc_request_tracestate(const rrpc_request *req)
{
    return req != NULL ? req->tracestate : NULL;
}

/* How often rrpc_request_cancelled asks the broker, at most. */
#define CANCEL_LOOK_EVERY_S 0.05

int rrpc_request_cancelled(rrpc_request *req)
{
    /* The pointer first: a request whose handler returned may be gone, so
     * nothing of it is read unless it is the one being handled here. */
    if (req == NULL || req != handler_request || req->cancel_key == NULL)
        return 0;
    if (req->cancelled || handler_io == NULL || handler_io->cancelled == NULL)
        return req->cancelled;
    double now = rrpc__monotonic();
    if (now - req->cancel_looked_at < CANCEL_LOOK_EVERY_S)
        return 0;
    req->cancel_looked_at = now;
    req->cancelled =
        handler_io->cancelled(handler_io->ctx, req->cancel_key, req->cancel_key_len) == 1;
    return req->cancelled;
}

const char *rrpc__inherited_cancel_key(void)
{
    return handler_request != NULL ? handler_request->cancel_key : NULL;
}

int rrpc__inherited_cancelled(void)
{
    return rrpc_request_cancelled(handler_request);
}

int rrpc_request_progress(rrpc_request *req, const json_t *value)
{
    if (req == NULL || value == NULL)
        return RRPC_EINVAL;
    /* Compared, never read: REQ may be a pointer kept past its handler. */
    if (req != handler_request || handler_io == NULL || handler_io->progress == NULL)
        return RRPC_ESTATE;
    if (req->progress_key == NULL)
        return RRPC_OK; /* not asked for: a seed-style caller never sees one */
    json_t *msg = json_pack("{s:s,s:s,s:{s:O,s:O}}", "jsonrpc", "2.0", "method", "rpc.progress",
                            "params", "id", req->id, "progress", value);
    char *text = msg ? json_dumps(msg, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(msg);
    if (text == NULL)
        return RRPC_ENOMEM;
    int rc = handler_io->progress(handler_io->ctx, req->progress_key, req->progress_key_len, text,
                                  strlen(text));
    free(text);
    return rc;
}

int rrpc_request_add_effect(rrpc_request *req, int argc, const char **argv)
{
    if (req == NULL || argc < 1 || argv == NULL)
        return RRPC_EINVAL;
    if (handler_io != NULL && handler_io->no_effects)
        return RRPC_ENOTSUP;
    json_t *cmd = json_array();
    for (int i = 0; cmd && i < argc; i++)
        if (argv[i] == NULL || json_array_append_new(cmd, json_string_nocheck(argv[i])) != 0) {
            json_decref(cmd);
            return argv[i] == NULL ? RRPC_EINVAL : RRPC_ENOMEM;
        }
    if (cmd && *req->effects == NULL)
        *req->effects = json_array();
    if (cmd == NULL || *req->effects == NULL || json_array_append_new(*req->effects, cmd) != 0)
        return RRPC_ENOMEM;
    return RRPC_OK;
}

json_t *rrpc_request_member(const rrpc_request *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    if (req->message == NULL && req->lazy != NULL) {
        if (*req->lazy == NULL)
            *req->lazy = json_loadb(req->text, req->text_len, RRPC__JSON_DECODE_FLAGS, NULL);
        return json_object_get(*req->lazy, name);
    }
    return json_object_get(req->message, name);
}

static int invalid_params(rrpc_request *req, const char *fmt, size_t pos, const char *name)
{
    char msg[200];
    char label[96];
    if (name != NULL && json_is_object(req->params))
        snprintf(label, sizeof label, "'%s'", name);
    else
        snprintf(label, sizeof label, "%zu", pos);
    snprintf(msg, sizeof msg, fmt, label);
    rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS, msg, NULL);
    return RRPC_EINVAL;
}

/* Finds parameter POS / NAME; sets an invalid-params error if absent. */
static json_t *lookup_param(rrpc_request *req, size_t pos, const char *name)
{
    json_t *v = NULL;
    if (json_is_array(req->params))
        v = json_array_get(req->params, pos);
    else if (json_is_object(req->params) && name != NULL)
        v = json_object_get(req->params, name);
    if (v == NULL)
        invalid_params(req, "missing parameter %s", pos, name);
    return v;
}

int rrpc_param_json(rrpc_request *req, size_t pos, const char *name, json_t **out)
{
    json_t *v = lookup_param(req, pos, name);
    if (v == NULL)
        return RRPC_EINVAL;
    *out = v;
    return RRPC_OK;
}

int rrpc_param_int(rrpc_request *req, size_t pos, const char *name, json_int_t *out)
{
    json_t *v = lookup_param(req, pos, name);
    if (v == NULL)
        return RRPC_EINVAL;
    if (!json_is_integer(v))
        return invalid_params(req, "parameter %s must be an integer", pos, name);
    *out = json_integer_value(v);
    return RRPC_OK;
}

int rrpc_param_number(rrpc_request *req, size_t pos, const char *name, double *out)
{
    json_t *v = lookup_param(req, pos, name);
    if (v == NULL)
        return RRPC_EINVAL;
    if (!json_is_number(v))
        return invalid_params(req, "parameter %s must be a number", pos, name);
    *out = json_number_value(v);
    return RRPC_OK;
}

int rrpc_param_string(rrpc_request *req, size_t pos, const char *name, const char **out)
{
    json_t *v = lookup_param(req, pos, name);
    if (v == NULL)
        return RRPC_EINVAL;
    if (!json_is_string(v))
        return invalid_params(req, "parameter %s must be a string", pos, name);
    *out = json_string_value(v);
    return RRPC_OK;
}

int rrpc_param_bool(rrpc_request *req, size_t pos, const char *name, int *out)
{
    json_t *v = lookup_param(req, pos, name);
    if (v == NULL)
        return RRPC_EINVAL;
    if (!json_is_boolean(v))
        return invalid_params(req, "parameter %s must be true or false", pos, name);
    *out = json_is_true(v);
    return RRPC_OK;
}

int rrpc_param_count_max(rrpc_request *req, size_t max)
{
    size_t n = json_is_array(req->params)    ? json_array_size(req->params)
               : json_is_object(req->params) ? json_object_size(req->params)
                                             : 0;
    if (n <= max)
        return RRPC_OK;
    char msg[96];
    snprintf(msg, sizeof msg, "too many parameters: %zu given, at most %zu accepted", n, max);
    rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS, msg, NULL);
    return RRPC_EINVAL;
}

/* ---- dispatching ------------------------------------------------------ */

/* The request's deadline member (PROTOCOL.md section 7) as milliseconds on
 * the Redis clock, or 0 if it has none (or one that is not an integer). */
static long long request_deadline(const rrpc__envelope *env)
{
    const rrpc__member *d = &env->m[RRPC__M_DEADLINE];
    return d->kind == RRPC__K_INTEGER && d->i > 0 ? d->i : 0;
}

/* Runs M's handler inside the interceptors (rrpc_server_add_interceptor):
 * befores in order until one refuses, the handler if none did, then the
 * afters of those passed, in reverse, with the outcome. */
static json_t *run_intercepted(const rrpc__methods *methods, const rrpc__method *m,
                               rrpc_request *call)
{
    size_t passed = 0;
    int refused = 0;
    for (; passed < methods->n_hooks && !refused; passed++) {
        const rrpc__interceptor *h = &methods->hooks[passed];
        refused = h->before != NULL && h->before(call, h->udata) != 0;
    }
    passed -= refused; /* the refusing one is not wrapped around the call */
    json_t *result = refused ? NULL : m->fn(call, m->udata);
    if (result == NULL && call->error == NULL)
        rrpc_request_error(call, RRPC_JSONRPC_INTERNAL_ERROR, "Internal error",
                           refused ? json_string("refused by an interceptor") : NULL);
    if (result != NULL) {
        json_decref(call->error); /* a result wins over a stray error */
        call->error = NULL;
    }
    while (passed-- > 0) {
        const rrpc__interceptor *h = &methods->hooks[passed];
        if (h->after != NULL)
            h->after(call, result, call->error, h->udata);
    }
    return result;
}

/* Runs the handler of a valid request, or refuses it if its deadline has
 * passed; returns the result (new) or NULL with call->error set. */
static json_t *run_handler(const rrpc__methods *methods, rrpc_request *call, size_t name_len,
                           long long deadline, const rrpc__clock *clock, rrpc__outcome *out)
{
    /* Without a measured Redis clock (TIME refused, say) deadlines cannot
     * be judged fairly, so requests run as if they had none. */
    if (deadline > 0 && clock != NULL && clock->measured_at > 0) {
        long long now = rrpc__clock_redis_ms(clock);
        if (now >= deadline) {
            out->expired++;
            return rrpc_request_error(
                call, RRPC_JSONRPC_DEADLINE_EXCEEDED, "Deadline exceeded",
                json_pack("{sIsI}", "deadline", (json_int_t)deadline, "now", (json_int_t)now));
        }
        call->deadline_mono = rrpc__monotonic() + (double)(deadline - now) / 1000.0;
    }
    /* A name with an embedded NUL must not match the method before it. */
    const rrpc__method *m =
        strlen(call->method) == name_len ? rrpc__methods_find(methods, call->method) : NULL;
    if (m == NULL)
        return rrpc_request_error(call, RRPC_JSONRPC_METHOD_NOT_FOUND, "Method not found",
                                  json_stringn(call->method, name_len));
    handler_deadline = call->deadline_mono;
    handler_request = call;
    /* A request its caller cancelled while it waited is not run. */
    if (call->cancel_key != NULL && rrpc_request_cancelled(call)) {
        handler_request = NULL;
        handler_deadline = 0;
        return rrpc_request_error(call, RRPC_JSONRPC_CANCELLED, "Cancelled", NULL);
    }
    rrpc__trace_enter(rrpc_request_traceparent(call), call->tracestate);
    double started = rrpc__stats_start(methods->stats);
    call->entry = m;
    json_t *result =
        methods->n_hooks == 0 ? m->fn(call, m->udata) : run_intercepted(methods, m, call);
    if (!call->deferred) /* a request put back by a "wait" limit runs later: counted then */
        rrpc__stats_record(methods->stats, (size_t)(m - methods->items), started, !result);
    rrpc__trace_leave();
    handler_request = NULL; /* progress from now on is refused: the answer is final */
    handler_deadline = 0;
    return result;
}

/* Reads the trace context of ENV into CALL.  An invalid traceparent is
 * ignored, and its tracestate with it, as the recommendation says: the
 * handler sees none, and calls it makes start a new trace. */
static void read_trace(const rrpc__envelope *env, rrpc_request *call)
{
    const rrpc__member *tp = &env->m[RRPC__M_TRACEPARENT];
    const rrpc__member *ts = &env->m[RRPC__M_TRACESTATE];
    call->traceparent[0] = '\0';
    call->tracestate = NULL;
    if (tp->kind != RRPC__K_STRING || !rrpc__traceparent_parse(tp->s, tp->len, call->traceparent))
        return;
    if (ts->kind == RRPC__K_STRING && rrpc__tracestate_ok(ts->s, ts->len))
        call->tracestate = ts->s;
}

/* Reads the members "progress" and "cancel_key" (PROTOCOL.md section 7)
 * into CALL.  Progress goes to KEY (KEY_LEN bytes; NULL: nowhere, as for
 * a batch element) and only when the member is true. */
static void read_progress_cancel(const rrpc__envelope *env, rrpc_request *call, const char *key,
                                 size_t key_len)
{
    if (key != NULL && call->id != NULL && env->m[RRPC__M_PROGRESS].kind == RRPC__K_TRUE) {
        call->progress_key = key;
        call->progress_key_len = key_len;
    }
    const rrpc__member *ck = &env->m[RRPC__M_CANCEL_KEY];
    if (ck->kind == RRPC__K_STRING && ck->len > 0) {
        call->cancel_key = ck->s;
        call->cancel_key_len = ck->len;
    }
}

/* The source of one request: its members (ENV), and for
 * rrpc_request_member the object (a batch element) or the text it is
 * decoded from on demand. */
typedef struct one_request {
    const rrpc__envelope *env;
    const json_t *message;
    const char *text;
    size_t text_len;
} one_request;

/* The response to one request, before it is an object or a text: the
 * RESULT or the ERROR (new) for ID (borrowed; NULL: null). */
typedef struct answer {
    const json_t *id;
    json_t *result, *error;
} answer;

/* The response object of A (new), whose values it takes. */
static json_t *answer_object(answer *a)
{
    json_t *r = a->result ? rrpc__response_result(a->id, a->result)
                          : rrpc__response_error_object(a->id, a->error);
    a->result = a->error = NULL;
    return r;
}

/* Runs one request and fills ANS with its response; returns 0 (ANS
 * empty) for a notification.  OVER_TIME: its batch has run out of time
 * (PROTOCOL.md section 5): a valid request is answered -32001 without
 * running.  KEY (KEY_LEN bytes, or NULL) is its reply key, where progress
 * goes. */
static int handle_one(const rrpc__methods *methods, const one_request *req,
                      const rrpc__clock *clock, double over_time_limit, const char *key,
                      size_t key_len, rrpc__outcome *out, answer *ans)
{
    *ans = (answer){NULL, NULL, NULL};
    out->requests++;
    const char *why = NULL;
    const rrpc__envelope *env = req->env;
    const rrpc__member *idm = &env->m[RRPC__M_ID];
    json_t *id = idm->json;
    int is_notification = env->object && idm->kind == RRPC__K_ABSENT;
    if (rrpc__envelope_validate(env, &why) != 0) {
        /* The id is echoed only if it is itself valid (JSON-RPC 2.0, 5). */
        int id_ok = idm->kind == RRPC__K_STRING || idm->kind == RRPC__K_INTEGER ||
                    idm->kind == RRPC__K_REAL;
        out->errors++;
        /* A bad priority names the member (PROTOCOL.md section 7). */
        json_t *data =
            why == rrpc__why_priority ? json_pack("{ss}", "member", "priority") : json_string(why);
        ans->id = id_ok ? id : NULL;
        ans->error = rrpc__error_object(RRPC_JSONRPC_INVALID_REQUEST, "Invalid Request", data);
        return 1;
    }
    /* The tenant member keys the limits (PROTOCOL.md section 7). */
    const rrpc__member *tenant = &env->m[RRPC__M_TENANT];
    if (tenant->kind != RRPC__K_ABSENT &&
        (tenant->kind != RRPC__K_STRING || !rrpc__tenant_ok(tenant->s, tenant->len))) {
        out->errors++;
        ans->id = id;
        ans->error =
            rrpc__error_object(RRPC_JSONRPC_INVALID_REQUEST, "Invalid Request",
                               json_pack("{s:s,s:s}", "member", "tenant", "why",
                                         "a string of 1 to 128 bytes, no control characters"));
        return 1;
    }
    if (is_notification)
        out->notifications++;
    json_t *lazy = NULL;
    rrpc_request call = {.method = env->m[RRPC__M_METHOD].s,
                         .params = env->m[RRPC__M_PARAMS].json,
                         .id = id,
                         .effects = &out->effects,
                         .message = req->message,
                         .text = req->text,
                         .text_len = req->text_len,
                         .lazy = &lazy};
    read_trace(env, &call);
    read_progress_cancel(env, &call, key, key_len);
    size_t name_len = env->m[RRPC__M_METHOD].len;
    json_t *result = NULL;
    if (over_time_limit > 0) {
        out->expired++;
        rrpc_request_error(&call, RRPC_JSONRPC_BATCH_TIME_EXCEEDED, "Batch time limit exceeded",
                           json_pack("{sI}", "limit_ms", (json_int_t)(over_time_limit * 1000)));
    } else {
        result = run_handler(methods, &call, name_len, request_deadline(env), clock, out);
    }
    json_decref(lazy);   /* rrpc_request_member's values live as long as the handler */
    if (call.deferred) { /* back in the broker: it will be popped again */
        json_decref(result);
        json_decref(call.error);
        out->deferred++;
        out->requests--;
        out->notifications -= is_notification;
        return 0;
    }
    if (result == NULL && call.error == NULL)
        rrpc_request_error(&call, RRPC_JSONRPC_INTERNAL_ERROR, "Internal error", NULL);
    if (is_notification) {
        json_decref(result);
        json_decref(call.error);
        return 0;
    }
    ans->id = id;
    if (result != NULL) {
        json_decref(call.error); /* a result wins over a stray error */
        ans->result = result;
        return 1;
    }
    out->errors++;
    ans->error = call.error;
    return 1;
}

static void set_dead(rrpc__outcome *out, const char *reason)
{
    free(out->dead_reason);
    out->dead_reason = strdup(reason);
}

/* Answers a batch (PROTOCOL.md section 5).  Returns the response (new) or
 * NULL if the batch held only notifications; fills key from the first
 * element that names one. */
static json_t *handle_batch(const rrpc__methods *methods, const rrpc__limits *limits,
                            const rrpc__clock *clock, json_t *batch, char *key, size_t keylen,
                            size_t *have_key, rrpc__outcome *out)
{
    size_t n = json_array_size(batch);
    for (size_t i = 0; i < n && !*have_key; i++) {
        const json_t *element = json_array_get(batch, i);
        const char *why;
        int notification =
            json_object_get(element, "id") == NULL && rrpc__request_validate(element, &why) == 0;
        if (!notification) /* only elements that are answered name the key */
            *have_key = rrpc__reply_key(element, key, keylen);
    }
    if (n == 0 || n > limits->max_batch) {
        char why[96];
        if (n == 0)
            snprintf(why, sizeof why, "empty batch");
        else
            snprintf(why, sizeof why, "batch of %zu requests exceeds the limit of %zu", n,
                     limits->max_batch);
        out->errors++;
        return rrpc__response_error(NULL, RRPC_JSONRPC_INVALID_REQUEST, "Invalid Request",
                                    json_string(why));
    }
    json_t *responses = json_array();
    /* A batch may not hold a worker without limit: once it has run for
     * batch_time_s, the elements not started are answered -32001 at once. */
    double started = rrpc__monotonic();
    for (size_t i = 0; i < n; i++) {
        double over =
            limits->batch_time_s > 0 && rrpc__monotonic() - started >= limits->batch_time_s
                ? limits->batch_time_s
                : 0;
        rrpc__envelope env;
        const json_t *element = json_array_get(batch, i);
        rrpc__envelope_from_json(element, &env);
        one_request one = {&env, element, NULL, 0};
        answer ans;
        if (handle_one(methods, &one, clock, over, NULL, 0, out, &ans))
            json_array_append_new(responses, answer_object(&ans));
    }
    if (json_array_size(responses) == 0) {
        json_decref(responses);
        return NULL;
    }
    return responses;
}

static void parse_failed(rrpc__outcome *out, const json_error_t *jerr)
{
    char reason[300];
    if (json_error_code(jerr) == json_error_invalid_utf8)
        snprintf(reason, sizeof reason, "invalid UTF-8: %s", jerr->text);
    else
        snprintf(reason, sizeof reason, "parse error: %s", jerr->text);
    set_dead(out, reason);
    out->errors++;
}

void rrpc__dispatch(const rrpc__methods *methods, const rrpc__limits *limits,
                    const rrpc__clock *clock, const char *text, size_t len, rrpc__outcome *out)
{
    memset(out, 0, sizeof *out);
    if (len > limits->max_request_bytes) {
        char reason[96];
        snprintf(reason, sizeof reason, "too large: %zu bytes (limit %zu)", len,
                 limits->max_request_bytes);
        set_dead(out, reason);
        return;
    }
    /* Nearly every message is one request that the envelope scanner reads
     * without decoding all of it; jansson decodes the rest (batches,
     * escapes, invalid JSON...), with the same outcome. */
    rrpc__envelope env;
    json_t *msg = NULL;
    if (rrpc__envelope_scan(text, len, &env) != 0) {
        json_error_t jerr;
        msg = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, &jerr);
        if (msg == NULL) {
            parse_failed(out, &jerr);
            return;
        }
        rrpc__envelope_from_json(msg, &env);
    }
    /* A key read from the message is at most as long as the message (a
     * number's text at most 32 bytes), so this buffer always fits it. */
    size_t key_room = len + 32;
    char *key = malloc(key_room);
    size_t have_key = 0; /* the key's length */
    int answered = 0;    /* a response was written (out->response, NULL without memory) */
    if (key == NULL) {
        set_dead(out, "out of memory");
    } else if (json_is_array(msg)) {
        json_t *response = handle_batch(methods, limits, clock, msg, key, key_room, &have_key, out);
        if (response != NULL && have_key) {
            out->response = json_dumps(response, RRPC__JSON_ENCODE_FLAGS);
            answered = 1;
            json_decref(response);
        } else if (response != NULL) {
            out->dead_response = response;
        }
    } else {
        have_key = rrpc__envelope_reply_key(&env, key, key_room);
        one_request one = {&env, msg, text, len};
        answer ans;
        if (!handle_one(methods, &one, clock, 0, have_key ? key : NULL, have_key, out, &ans)) {
            /* a notification: nothing to send */
        } else if (have_key) {
            answered = 1;
            /* Written directly: building the envelope object and encoding
             * it was a tenth of a worker's instructions. */
            out->response = rrpc__response_text_of(ans.id, ans.result, ans.error);
            json_decref(ans.result);
            json_decref(ans.error);
        } else {
            out->dead_response = answer_object(&ans);
        }
    }
    if (answered) {
        out->reply_key = key; /* the outcome owns it now */
        key = NULL;
        out->reply_key_len = have_key;
    } else if (out->dead_response != NULL) {
        set_dead(out, "no reply key");
    }
    free(key);
    rrpc__envelope_clear(&env);
    json_decref(msg);
}

void rrpc__outcome_clear(rrpc__outcome *out)
{
    free(out->reply_key);
    free(out->response);
    free(out->dead_reason);
    json_decref(out->dead_response);
    json_decref(out->effects);
    memset(out, 0, sizeof *out);
}
