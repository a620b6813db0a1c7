/* client.c -- the synchronous client: one call, one round trip.
 *
 * This is the caller's logic: arguments checked, requests encoded with the
 * reply address as their id, the call's timeout settled (its own, the
 * client's, or what is left of the request being handled) and written as
 * a deadline on the broker's clock, a broken link mended -- and, with
 * resend_on_reconnect, the request delivered again -- while the timeout
 * allows, batches sorted back by id, and answers turned into results.  The
 * broker is reached through the transport's client operations
 * (transport/client_ops.h): deliver a request and await its answer, send a
 * notification.  Over Redis (redis/client_redis.c) a call is one round
 * trip that never leaves its request behind.
 */
#define _POSIX_C_SOURCE 200809L
#include "client/call_hooks.h"
#include "client/call_options.h"
#include "client/caller.h"
#include "core/clock.h"
#include "core/defaults.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/keys.h"
#include "core/opts.h"
#include "core/priority.h"
#include "core/protocol.h"
#include "core/random.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The broker's clock is re-read this often (one round trip). */
#define CLOCK_REFRESH_S 10.0
/* Backoff between reconnection attempts of a call that resends. */
#define RESEND_BACKOFF_MIN_S 0.05
#define RESEND_BACKOFF_MAX_S 1.0
/* A cancellable call looks at its flag this often while it waits. */
#define CANCEL_SLICE_S 0.1
/* A cancel mark outlives the call's timeout by this much: a worker that
 * took the request late still sees it. */
#define CANCEL_MARK_EXTRA_S 60.0

struct rrpc_client {
    rrpc__caller base; /* the link, its operations, URL and key prefix */
    double timeout_s;
    int resend_on_reconnect;
    rrpc__clock clock;      /* the broker's time, for request deadlines */
    rrpc__call_hooks hooks; /* rrpc_client_add_interceptor */
    char errmsg[RRPC__ERRMSG_LEN];
};

void rrpc_client_options_init_sized(rrpc_client_options *opts, size_t size)
{
    rrpc_client_options d = {.size = sizeof d,
                             .timeout_s = RRPC__DEFAULT_CALL_TIMEOUT_S,
                             .connect_timeout_s = RRPC__DEFAULT_CONNECT_TIMEOUT_S,
                             .fail_fast = 1};
    rrpc__opts_init(opts, size, &d, sizeof d);
}

int rrpc_client_open(rrpc_client **out, const rrpc_client_options *opts, char *errmsg,
                     size_t errmsg_len)
{
    rrpc_client_options own; /* the caller's options, as long as this library's */
    if (out == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    if (rrpc__caller_options(&own, opts, errmsg, errmsg_len) != RRPC_OK)
        return RRPC_EINVAL;
    rrpc_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    c->timeout_s = rrpc__timeout_or(own.timeout_s, 30);
    c->resend_on_reconnect = own.resend_on_reconnect;
    int rc = rrpc__caller_open(&c->base, &own, &c->clock, errmsg, errmsg_len);
    if (rc != RRPC_OK) {
        rrpc_client_close(c);
        return rc;
    }
    *out = c;
    return RRPC_OK;
}

void rrpc_client_close(rrpc_client *c)
{
    if (c == NULL)
        return;
    rrpc__caller_close(&c->base);
    rrpc__call_hooks_free(&c->hooks);
    free(c);
}

int rrpc_client_add_interceptor(rrpc_client *c, rrpc_call_before_fn before,
                                rrpc_call_after_fn after, void *udata)
{
    return c == NULL ? RRPC_EINVAL : rrpc__call_hooks_add(&c->hooks, before, after, udata);
}

const char *rrpc_client_errmsg(const rrpc_client *c)
{
    return c ? c->errmsg : "no client";
}

static int client_fail(rrpc_client *c, int err, const char *msg)
{
    snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);
    return err;
}

static int reconnect_until(rrpc_client *c, double deadline);

/* Brings a broken link back before a call.  A dead broker fails fast
 * here, unless the client resends: then it keeps trying for up to
 * TIMEOUT_S.  Also keeps the broker's clock fresh. */
static int ensure_connected(rrpc_client *c, double timeout_s)
{
    const rrpc__client_ops *ops = c->base.ops;
    if (ops->needs_mend(c->base.link)) {
        /* A stalled Redis (SIGSTOP) accepts the connection but not the
         * handshake: the call's timeout bounds that too. */
        double deadline = rrpc__monotonic() + timeout_s;
        int rc = ops->mend(c->base.link, timeout_s);
        if (rc != RRPC_OK && c->resend_on_reconnect && timeout_s > 0)
            rc = reconnect_until(c, deadline);
        if (rc != RRPC_OK)
            return client_fail(c, rc, ops->errmsg(c->base.link));
        c->clock.measured_at = 0; /* the broker may have restarted on another host */
    }
    if (rrpc__clock_age(&c->clock) > CLOCK_REFRESH_S)
        ops->read_clock(c->base.link, &c->clock); /* refused: calls carry no deadline */
    return RRPC_OK;
}

static int check_name(rrpc_client *c, const char *what, const char *name)
{
    if (name == NULL || name[0] == '\0') {
        char msg[64];
        snprintf(msg, sizeof msg, "%s must be a non-empty string", what);
        return client_fail(c, RRPC_EINVAL, msg);
    }
    return RRPC_OK;
}

/* Settles a call's *TIMEOUT_S: 0 is the client's default, longer than
 * RRPC__TIMEOUT_MAX_S (infinity too) is cut to it, negative or NaN is
 * refused; then it is cut to the deadline of the request being handled,
 * if any. */
static int call_timeout(rrpc_client *c, double *timeout_s)
{
    if (!(*timeout_s >= 0))
        return client_fail(c, RRPC_EINVAL, "timeout_s must be a number >= 0");
    *timeout_s = rrpc__inherited_timeout(rrpc__timeout_or(*timeout_s, c->timeout_s));
    return RRPC_OK;
}

static int check_params(rrpc_client *c, const json_t *params)
{
    if (params != NULL && !json_is_array(params) && !json_is_object(params))
        return client_fail(c, RRPC_EINVAL, "params must be a JSON array or object");
    return RRPC_OK;
}

/* Reconnects, with backoff, until it works or DEADLINE (monotonic) comes. */
static int reconnect_until(rrpc_client *c, double deadline)
{
    double delay = RESEND_BACKOFF_MIN_S;
    for (;;) {
        double left = deadline - rrpc__monotonic();
        if (left <= 0)
            return client_fail(c, RRPC_ECONNECT, c->base.ops->errmsg(c->base.link));
        if (c->base.ops->mend(c->base.link, left) == RRPC_OK)
            return RRPC_OK;
        if (rrpc__monotonic() + delay >= deadline)
            return client_fail(c, RRPC_ECONNECT, c->base.ops->errmsg(c->base.link));
        rrpc__sleep(delay);
        delay = delay * 2 > RESEND_BACKOFF_MAX_S ? RESEND_BACKOFF_MAX_S : delay * 2;
    }
}

/* Delivers TEXT to LIST and awaits its answer on KEY.  On RRPC_OK *value
 * is the answer's text, borrowed from *holder (new, answer_free).  With
 * resend_on_reconnect a broken link is mended and the same request sent
 * again, as long as the timeout allows. */
static int push_and_wait(rrpc_client *c, const char *list, const char *text, const char *key,
                         int priority, double timeout_s, rrpc__answer **holder, const char **value,
                         size_t *value_len)
{
    double deadline = rrpc__monotonic() + timeout_s;
    for (;;) {
        int rc = c->base.ops->deliver(c->base.link, list, text, key, priority, timeout_s, holder,
                                      value, value_len, c->errmsg, sizeof c->errmsg);
        if (rc != RRPC_ECONNECT || !c->resend_on_reconnect)
            return rc;
        if (reconnect_until(c, deadline) != RRPC_OK)
            return RRPC_ECONNECT;
        timeout_s = deadline - rrpc__monotonic();
        if (timeout_s <= 0)
            return client_fail(c, RRPC_ETIMEDOUT,
                               "no reply before the link broke and the "
                               "timeout ran out");
    }
}

/* Common set-up of call and batch: names, connection (waiting up to
 * TIMEOUT_S for it if the client resends), keys. */
static int prepare(rrpc_client *c, const char *service, char *list, size_t list_len, char *key,
                   size_t key_len, double timeout_s)
{
    int rc = check_name(c, "service", service);
    if (rc == RRPC_OK && !rrpc__valid_name(service))
        rc = client_fail(c, RRPC_EINVAL,
                         "service names may not contain whitespace or control "
                         "characters");
    if (rc == RRPC_OK && rrpc__key_join(list, list_len, c->base.prefix, service, NULL) != RRPC_OK)
        rc = client_fail(c, RRPC_EINVAL, "service name too long");
    if (rc == RRPC_OK && key != NULL &&
        c->base.ops->reply_address(c->base.link, c->base.prefix, key, key_len) != RRPC_OK)
        rc = client_fail(c, RRPC_ESYS, "cannot read random bytes for a reply key");
    if (rc == RRPC_OK)
        rc = ensure_connected(c, timeout_s);
    return rc;
}

/* Progress and cancellation of one call (PROTOCOL.md section 7). */
typedef struct watched {
    rrpc__call_watch w;
    const rrpc_call_options *o;
    const char *id;                 /* the call's id: progress must name it */
    char cancel_key[RRPC__KEY_MAX]; /* its own, or "" */
} watched;

static int watch_members(rrpc_client *c, json_t *req, const char *key, watched *w);

/* Validates a call or notification and encodes its request.  KEY (the id
 * and reply key) is generated unless it is NULL (a notification).  W (or
 * NULL) adds the members "progress" and "cancel_key", PRIORITY (or NULL:
 * normal) the member "priority".  Returns the text (new, free()) or NULL
 * with *rc set. */
static char *encode_request(rrpc_client *c, const char *service, const char *method,
                            const json_t *params, char list[RRPC__KEY_MAX], char *key,
                            double *timeout_s, const rrpc__call_trace_ctx *trace, watched *w,
                            const json_t *members, const char *priority, int *rc)
{
    double started = rrpc__monotonic();
    *rc = check_name(c, "method", method);
    if (*rc == RRPC_OK)
        *rc = check_params(c, params);
    if (*rc == RRPC_OK)
        *rc = prepare(c, service, list, RRPC__KEY_MAX, key, key ? RRPC__KEY_MAX : 0, *timeout_s);
    /* Waiting for Redis to come back counts against the call's time. */
    if (*rc == RRPC_OK && *timeout_s > 0 && (*timeout_s -= rrpc__monotonic() - started) <= 0)
        *rc = client_fail(c, RRPC_ETIMEDOUT, "Redis came back too late for the call's timeout");
    if (*rc != RRPC_OK)
        return NULL;
    json_t *req = rrpc__request_build(method, params, key, NULL); /* the id is the reply key */
    if (req != NULL && members != NULL)
        json_object_update_missing(req, (json_t *)members); /* checked: none of rrpc's */
    if (req != NULL && priority != NULL)
        json_object_set_new(req, "priority", json_string(priority));
    if (key != NULL)
        rrpc__request_set_deadline(req, &c->clock, *timeout_s);
    if (w != NULL && key != NULL && watch_members(c, req, key, w) != RRPC_OK) {
        json_decref(req);
        req = NULL;
    }
    char *text = req ? json_dumps(req, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(req);
    text = rrpc__request_text_add_trace(text, trace->traceparent, trace->tracestate);
    if (text == NULL)
        *rc = client_fail(c, RRPC_ENOMEM, "cannot encode the request");
    return text;
}

/* Sends TEXT to LIST (or the next of its shards) without waiting for any
 * answer. */
static int push_only(rrpc_client *c, const char *list, const char *text)
{
    return c->base.ops->send(c->base.link, list, text, c->errmsg, sizeof c->errmsg);
}

/* deliver's progress hook: a progress message of this call ({"method":
 * "rpc.progress", "params": {"id": <ours>, "progress": ...}}) goes to the
 * caller's callback; anything else is the answer. */
static int on_progress(const char *text, size_t len, void *udata)
{
    watched *w = udata;
    if (w->o->progress == NULL)
        return 0;
    json_t *msg = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    json_t *params = json_object_get(msg, "params");
    const char *id = json_string_value(json_object_get(params, "id"));
    int mine = json_object_get(msg, "id") == NULL &&
               json_is_string(json_object_get(msg, "method")) &&
               strcmp(json_string_value(json_object_get(msg, "method")), "rpc.progress") == 0 &&
               id != NULL && strcmp(id, w->id) == 0 && json_object_get(params, "progress");
    if (mine)
        w->o->progress(json_object_get(params, "progress"), w->o->progress_udata);
    json_decref(msg);
    return mine;
}

/* deliver's cancel hook: the caller's flag, or the handled request's
 * cancellation for a call made inside a handler. */
static int on_cancelled(void *udata)
{
    watched *w = udata;
    return (w->o->cancel != NULL && *w->o->cancel) || rrpc__inherited_cancelled();
}

/* Sets up W for a call with options O; 0 if the call needs no watching
 * (nothing asked, and not inside a cancellable handler). */
static int watch_setup(watched *w, const rrpc_call_options *o, double timeout_s)
{
    const char *inherited = rrpc__inherited_cancel_key();
    if (o->progress == NULL && o->cancel == NULL && inherited == NULL)
        return 0;
    memset(w, 0, sizeof *w);
    w->o = o;
    w->w.udata = w;
    w->w.progress = o->progress ? on_progress : NULL;
    if (o->cancel != NULL || inherited != NULL) {
        w->w.cancelled = on_cancelled;
        w->w.slice_s = CANCEL_SLICE_S;
        w->w.cancel_ttl_s = timeout_s + CANCEL_MARK_EXTRA_S;
    }
    return 1;
}

/* Adds "progress" and "cancel_key" to REQ (the call KEY) as W says: the
 * call's own cancel key if it has a flag, else the handled request's. */
static int watch_members(rrpc_client *c, json_t *req, const char *key, watched *w)
{
    w->id = key;
    int rc = 0;
    if (w->o->progress != NULL)
        rc |= json_object_set_new(req, "progress", json_true());
    const char *ck = rrpc__inherited_cancel_key();
    if (w->o->cancel != NULL) {
        if (rrpc__key_join(w->cancel_key, sizeof w->cancel_key, NULL, key, ":cancel") != RRPC_OK)
            return client_fail(c, RRPC_EINVAL, "reply key too long for a cancel key");
        ck = w->cancel_key;
    }
    w->w.cancel_key = ck;
    if (ck != NULL)
        rc |= json_object_set_new(req, "cancel_key", json_string(ck));
    return rc == 0 ? RRPC_OK : client_fail(c, RRPC_ENOMEM, "cannot encode the request");
}

/* One call with the settled options O. */
static int call(rrpc_client *c, const char *service, const char *method, const json_t *params,
                const rrpc_call_options *o, json_t **result, json_t **error)
{
    json_t *ignored_error = NULL;
    if (c == NULL || result == NULL)
        return RRPC_EINVAL;
    *result = NULL;
    if (error == NULL)
        error = &ignored_error;
    *error = NULL;
    char list[RRPC__KEY_MAX], key[RRPC__KEY_MAX];
    double timeout_s = o->timeout_s;
    int rc = call_timeout(c, &timeout_s);
    rrpc__call_trace_ctx trace;
    if (rc == RRPC_OK)
        rc = rrpc__call_trace(o->traceparent, o->tracestate, &trace, c->errmsg, sizeof c->errmsg);
    if (rc == RRPC_OK && o->cancel != NULL && *o->cancel)
        rc = client_fail(c, RRPC_ECANCELED, "the call was cancelled before it was sent");
    if (rc != RRPC_OK)
        return rc;
    json_t *members = NULL;
    size_t passed = 0;
    if (c->hooks.count > 0 &&
        (rc = rrpc__call_hooks_before(&c->hooks, service, method, params, &members, &passed,
                                      c->errmsg, sizeof c->errmsg)) != RRPC_OK) {
        rrpc__call_hooks_after(&c->hooks, passed, service, method, rc, NULL, NULL);
        return rc;
    }
    if ((rc = rrpc__call_tenant(o->tenant, &members, c->errmsg, sizeof c->errmsg)) != RRPC_OK) {
        json_decref(members);
        rrpc__call_hooks_after(&c->hooks, passed, service, method, rc, NULL, NULL);
        return rc;
    }
    watched w;
    int watching = watch_setup(&w, o, timeout_s);
    const char *priority =
        o->priority != RRPC_PRIORITY_NORMAL ? rrpc__priority_name(o->priority) : NULL;
    char *text = encode_request(c, service, method, params, list, key, &timeout_s, &trace,
                                watching ? &w : NULL, members, priority, &rc);
    json_decref(members);
    if (text == NULL) {
        rrpc__call_hooks_after(&c->hooks, passed, service, method, rc, NULL, NULL);
        return rc;
    }
    rrpc__answer *holder = NULL;
    const char *value = NULL;
    size_t value_len = 0;
    if (watching)
        c->base.ops->watch(c->base.link, &w.w);
    rc = push_and_wait(c, list, text, key, o->priority, timeout_s, &holder, &value, &value_len);
    if (watching)
        c->base.ops->watch(c->base.link, NULL);
    free(text);
    if (rc == RRPC_OK)
        rc =
            rrpc__response_parse(value, value_len, key, result, error, c->errmsg, sizeof c->errmsg);
    c->base.ops->answer_free(holder);
    if (passed > 0)
        rrpc__call_hooks_after(&c->hooks, passed, service, method, rc, *result, *error);
    json_decref(ignored_error);
    return rc;
}

int rrpc_call(rrpc_client *c, const char *service, const char *method, const json_t *params,
              double timeout_s, json_t **result, json_t **error)
{
    rrpc_call_options o = {.size = sizeof o, .timeout_s = timeout_s};
    return call(c, service, method, params, &o, result, error);
}

int rrpc_call_with(rrpc_client *c, const char *service, const char *method, const json_t *params,
                   const rrpc_call_options *opts, json_t **result, json_t **error)
{
    rrpc_call_options o;
    if (c != NULL && rrpc__call_options(&o, opts, c->errmsg, sizeof c->errmsg) != RRPC_OK) {
        if (result != NULL)
            *result = NULL;
        if (error != NULL)
            *error = NULL;
        return RRPC_EINVAL;
    }
    return call(c, service, method, params, &o, result, error);
}

/* A notification, with the member "idempotency_key": KEY if not NULL. */
static int notify(rrpc_client *c, const char *service, const char *method, const json_t *params,
                  const char *key)
{
    if (c == NULL)
        return RRPC_EINVAL;
    if (key != NULL && *key == '\0')
        return client_fail(c, RRPC_EINVAL, "an idempotency key must not be empty");
    char list[RRPC__KEY_MAX];
    int rc;
    double no_timeout = 0;
    rrpc__call_trace_ctx trace;
    rrpc__call_trace(NULL, NULL, &trace, NULL, 0); /* continued or new: cannot fail */
    char *text = encode_request(c, service, method, params, list, NULL, &no_timeout, &trace, NULL,
                                NULL, NULL, &rc);
    if (text != NULL && key != NULL) {
        /* Added to the encoded object, so that the request is built once. */
        json_t *req = json_loads(text, 0, NULL), *k = json_string(key);
        free(text);
        text = NULL;
        if (k == NULL)
            rc = client_fail(c, RRPC_EINVAL, "the idempotency key is not UTF-8");
        else if (req == NULL || json_object_set(req, "idempotency_key", k) != 0 ||
                 (text = json_dumps(req, RRPC__JSON_ENCODE_FLAGS)) == NULL)
            rc = client_fail(c, RRPC_ENOMEM, "cannot encode the request");
        json_decref(k);
        json_decref(req);
    }
    if (text == NULL)
        return rc;
    rc = push_only(c, list, text);
    free(text);
    return rc;
}

int rrpc_notify(rrpc_client *c, const char *service, const char *method, const json_t *params)
{
    return notify(c, service, method, params, NULL);
}

int rrpc_notify_idempotent(rrpc_client *c, const char *service, const char *method,
                           const json_t *params, const char *idempotency_key)
{
    return notify(c, service, method, params, idempotency_key);
}

/* Builds the batch text for CALLS; every call gets id = its index and the
 * shared reply key.  *expect_reply tells whether any call wants an answer. */
static char *batch_text(rrpc_client *c, const json_t *calls, const char *key, double timeout_s,
                        int *expect_reply)
{
    json_t *batch = json_array();
    *expect_reply = 0;
    for (size_t i = 0; i < json_array_size(calls); i++) {
        const json_t *call = json_array_get(calls, i);
        const char *method = json_string_value(json_object_get(call, "method"));
        const json_t *params = json_object_get(call, "params");
        int notify = json_is_true(json_object_get(call, "notify"));
        if (method == NULL || check_params(c, params) != RRPC_OK) {
            json_decref(batch);
            client_fail(c, RRPC_EINVAL,
                        "each call needs a string 'method' and array/object "
                        "'params'");
            return NULL;
        }
        json_t *req = rrpc__request_build(method, params, NULL, notify ? NULL : key);
        if (!notify) {
            json_object_set_new(req, "id", json_integer((json_int_t)i));
            rrpc__request_set_deadline(req, &c->clock, timeout_s);
            *expect_reply = 1;
        }
        rrpc__call_trace_ctx trace; /* each element is a request of its own */
        rrpc__call_trace(NULL, NULL, &trace, NULL, 0);
        rrpc__request_set_trace(req, trace.traceparent, trace.tracestate);
        json_array_append_new(batch, req);
    }
    char *text = json_dumps(batch, RRPC__JSON_ENCODE_FLAGS);
    json_decref(batch);
    if (text == NULL)
        client_fail(c, RRPC_ENOMEM, "cannot encode the batch");
    return text;
}

/* Puts each response of REPLY at the index its id names. */
static int sort_batch_responses(rrpc_client *c, const json_t *reply, size_t n, json_t **responses)
{
    if (!json_is_array(reply)) {
        const json_t *e = json_object_get(reply, "error");
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "batch rejected: %s",
                 json_string_value(json_object_get(e, "message"))
                     ? json_string_value(json_object_get(e, "message"))
                     : "malformed response");
        return client_fail(c, e ? RRPC_EREMOTE : RRPC_EPROTO, msg);
    }
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, json_null());
    for (size_t i = 0; i < json_array_size(reply); i++) {
        json_t *resp = json_array_get(reply, i);
        json_t *id = json_object_get(resp, "id");
        if (json_is_integer(id) && json_integer_value(id) >= 0 &&
            (size_t)json_integer_value(id) < n)
            json_array_set(out, (size_t)json_integer_value(id), resp);
    }
    *responses = out;
    return RRPC_OK;
}

int rrpc_call_batch(rrpc_client *c, const char *service, const json_t *calls, double timeout_s,
                    json_t **responses)
{
    if (c == NULL || responses == NULL)
        return RRPC_EINVAL;
    *responses = NULL;
    if (!json_is_array(calls) || json_array_size(calls) == 0)
        return client_fail(c, RRPC_EINVAL, "calls must be a non-empty JSON array");
    char list[RRPC__KEY_MAX], key[RRPC__KEY_MAX];
    int rc = call_timeout(c, &timeout_s);
    if (rc != RRPC_OK)
        return rc;
    double started = rrpc__monotonic();
    rc = prepare(c, service, list, sizeof list, key, sizeof key, timeout_s);
    if (rc == RRPC_OK && (timeout_s -= rrpc__monotonic() - started) <= 0)
        rc = client_fail(c, RRPC_ETIMEDOUT, "Redis came back too late for the call's timeout");
    int expect_reply = 0;
    char *text = rc == RRPC_OK ? batch_text(c, calls, key, timeout_s, &expect_reply) : NULL;
    if (text == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    if (!expect_reply) {
        rc = push_only(c, list, text);
        free(text);
        if (rc == RRPC_OK) {
            json_t *none = json_array();
            rc = sort_batch_responses(c, none, json_array_size(calls), responses);
            json_decref(none);
        }
        return rc;
    }
    rrpc__answer *holder = NULL;
    const char *value = NULL;
    size_t value_len = 0;
    rc = push_and_wait(c, list, text, key, RRPC_PRIORITY_NORMAL, timeout_s, &holder, &value,
                       &value_len);
    free(text);
    if (rc != RRPC_OK)
        return rc;
    json_error_t jerr;
    json_t *reply = json_loadb(value, value_len, RRPC__JSON_DECODE_FLAGS, &jerr);
    c->base.ops->answer_free(holder);
    if (reply == NULL)
        return client_fail(c, RRPC_EPROTO, "batch response is not JSON");
    rc = sort_batch_responses(c, reply, json_array_size(calls), responses);
    json_decref(reply);
    return rc;
}
