/* async.c -- the multiplexed async client's public API (rrpc.h).
 *
 * The sync client spends a network round trip per call.  This one keeps
 * many calls in flight over one broker session (transport/async_ops.h):
 * requests for a service go out in groups, responses come back on the
 * client's single reply address and are matched to their calls by id.
 * Its parts are listed in async_state.h; this file opens and closes a
 * client, runs the loop thread of an own-loop client, and takes calls from
 * any thread.
 */
#define _GNU_SOURCE /* eventfd */
#include "client/async_calls.h"
#include "client/async_failfast.h"
#include "client/async_receive.h"
#include "client/async_request.h"
#include "client/call_options.h"
#include "core/ratelimit.h"
#include "client/async_send.h"
#include "core/defaults.h"
#include "core/dispatch.h"
#include "core/keys.h"
#include "core/log.h"
#include "core/opts.h"
#include "core/random.h"
#include "transport/transport.h"

#include <event2/event.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void log_line(rrpc_log_level level, const char *what, const char *detail)
{
    rrpc__log(level, NULL, "async", what, detail);
}

/* ---- the background loop ----------------------------------------------- */

/* Ends the session; pending `delivered` reports run (they free groups). */
static void close_session(rrpc_async *a)
{
    rrpc__async_session *s = a->session;
    a->session = NULL;
    if (s != NULL)
        a->ops->close(s);
}

/* ---- cancelling one call ------------------------------------------------ */

/* The call with HANDLE in flight, or NULL.  A scan of the slot table:
 * cancelling is rare, and calls need no index of handles for it. */
static rrpc__acall *find_handle(rrpc_async *a, uint64_t handle)
{
    for (uint32_t i = 0; handle != 0 && i < a->nslots; i++)
        if (a->slots[i].call != NULL && a->slots[i].call->handle == handle)
            return a->slots[i].call;
    return NULL;
}

/* Cancels the call HANDLE on the loop thread: its cancel key marked (a
 * cancellable call), its request taken back, its callback run. */
static int cancel_on_loop(rrpc_async *a, uint64_t handle)
{
    if (a->shutting_down || a->session == NULL)
        return rrpc__async_error(a, RRPC_ESTATE, "the client is closing");
    rrpc__acall *c = find_handle(a, handle);
    if (c == NULL)
        return rrpc__async_error(a, RRPC_EINVAL,
                                 "no call in flight with handle %llu (unknown, or finished)",
                                 (unsigned long long)handle);
    if (!c->in_outbox) { /* else it was never sent, and flush drops it */
        char key[RRPC__KEY_MAX + 32];
        if (c->cancellable && rrpc__areq_cancel_key(a, handle, key, sizeof key) == RRPC_OK)
            a->ops->mark_cancelled(a->session, key, strlen(key),
                                   (long long)((c->timeout_s + 60.0) * 1000.0));
        rrpc__asend_withdraw(a, c);
    }
    rrpc__async_error(a, RRPC_ECANCELED, "the call was cancelled");
    rrpc__acall_finish(a, c, RRPC_ECANCELED, NULL, NULL);
    rrpc__async_error(a, RRPC_OK, "%s", "");
    return RRPC_OK;
}

/* Answers the cancels other threads handed over: with the cancel's own
 * result, or RC (not RRPC_OK) when the client is closing. */
static void answer_cancels(rrpc_async *a, int rc)
{
    if (!a->own_loop)
        return;
    pthread_mutex_lock(&a->lock);
    rrpc__acancel *q = a->cancels;
    a->cancels = NULL;
    pthread_mutex_unlock(&a->lock);
    for (rrpc__acancel *k = q; k != NULL;) {
        rrpc__acancel *next = k->next; /* K is the waiting thread's: gone once done is seen */
        int r = rc != RRPC_OK ? rc : cancel_on_loop(a, k->handle);
        pthread_mutex_lock(&a->lock);
        k->rc = r;
        k->done = 1;
        pthread_cond_broadcast(&a->cancel_done);
        pthread_mutex_unlock(&a->lock);
        k = next;
    }
}

/* Cancels everything on the loop thread: pending callbacks run with
 * RRPC_ECANCELED, the session closes, the client's events leave the loop. */
static void shutdown_on_loop(rrpc_async *a, rrpc__acall *queued)
{
    a->shutting_down = 1;
    atomic_store(&a->link_up, 0);
    close_session(a);
    rrpc__async_error(a, RRPC_ECANCELED, "the client was closed");
    rrpc__acall_fail_all(a, RRPC_ECANCELED);
    while (queued) {
        rrpc__acall *next = queued->next;
        rrpc__async_error(a, RRPC_ECANCELED, "the client was closed");
        rrpc__acall_fail_unsubmitted(a, queued, RRPC_ECANCELED);
        queued = next;
    }
    rrpc__asend_drop_outbox(a);
    answer_cancels(a, RRPC_ESTATE);
    event_del(a->flush_ev);
    event_del(a->sweep_ev);
    a->sweep_armed = 0;
    if (a->wake_ev)
        event_del(a->wake_ev);
}

/* The application's threads queued records: submit them and send. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    rrpc_async *a = arg;
    uint64_t count;
    if (read(fd, &count, sizeof count) < 0) {
        /* EAGAIN: a spurious wake; the queue is checked anyway. */
    }
    pthread_mutex_lock(&a->lock);
    rrpc__acall *q = a->queue_head;
    a->queue_head = a->queue_tail = NULL;
    a->wake_pending = 0;
    int closing = atomic_load(&a->closing);
    rrpc__acall_give_back_locked(a);
    pthread_mutex_unlock(&a->lock);
    if (closing) {
        shutdown_on_loop(a, q);
        event_base_loopbreak(a->base);
        return;
    }
    while (q) {
        rrpc__acall *c = q;
        q = q->next;
        /* Accepted before the link broke: with resend it waits for the
         * link in flight, as the calls already sent do. */
        int rc = atomic_load(&a->link_up) || (a->resend && !c->notify)
                     ? rrpc__asend_submit(a, c)
                     : rrpc__async_error(a, RRPC_ECONNECT, "not connected to %s", a->ops->broker);
        if (rc != RRPC_OK)
            rrpc__acall_fail_unsubmitted(a, c, rc);
    }
    answer_cancels(a, RRPC_OK); /* after the calls queued before them */
    rrpc__asend_flush(a);
}

static void *loop_main(void *arg)
{
    rrpc_async *a = arg;
    rrpc__async_loop_of_thread = a;
    event_base_dispatch(a->base);
    return NULL;
}

static int start_thread(rrpc_async *a, char *errmsg, size_t errmsg_len)
{
    a->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->wake_fd < 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ESYS, "eventfd failed");
    a->wake_ev = event_new(a->base, a->wake_fd, EV_READ | EV_PERSIST, on_wake, a);
    if (a->wake_ev == NULL || event_add(a->wake_ev, NULL) != 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "cannot create the wake event");
    /* The loop thread takes no signals: SIGPIPE on a dead socket must not
     * kill the process, and the application's handlers belong elsewhere. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&a->thread, NULL, loop_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ESYS, "cannot start the loop thread");
    return RRPC_OK;
}

static void wake(rrpc_async *a)
{
    uint64_t one = 1;
    if (write(a->wake_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, so the loop is awake anyway. */
    }
}

/* ---- opening and closing ----------------------------------------------- */

void rrpc_async_options_init_sized(rrpc_async_options *opts, size_t size)
{
    rrpc_async_options d = {.size = sizeof d,
                            .timeout_s = RRPC__DEFAULT_CALL_TIMEOUT_S,
                            .connect_timeout_s = RRPC__DEFAULT_CONNECT_TIMEOUT_S,
                            .fail_fast = 1};
    rrpc__opts_init(opts, size, &d, sizeof d);
}

static int init_config(rrpc_async *a, const rrpc_async_options *opts, char *errmsg,
                       size_t errmsg_len)
{
    a->timeout_s = rrpc__timeout_or(opts->timeout_s, 30);
    a->connect_timeout_s =
        rrpc__timeout_or(opts->connect_timeout_s, RRPC__DEFAULT_CONNECT_TIMEOUT_S);
    a->max_in_flight = opts->max_in_flight;
    a->resend = opts->resend_on_reconnect != 0;
    a->fail_fast = opts->fail_fast != 0;
    char hex[33]; /* a random first shard, so that short-lived clients do not all start on 0 */
    if (rrpc__random_hex128(hex) == RRPC_OK) {
        hex[8] = '\0';
        a->next_shard = (unsigned)strtoul(hex, NULL, 16);
    }
    a->own_loop = opts->event_base == NULL;
    a->free_slot = RRPC__ASYNC_NO_SLOT;
    a->wake_fd = -1;
    a->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    if (a->prefix == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    int rc = rrpc__url_parse(&a->url, opts->url, errmsg, errmsg_len);
    if (rc != RRPC_OK)
        return rc;
    const rrpc__transport *t = rrpc__transport_for(&a->url, errmsg, errmsg_len);
    if (t == NULL)
        return RRPC_EINVAL;
    a->ops = t->async;
    if (a->ops == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_EINVAL,
                          "the async client is not supported over %s yet", t->name);
    if (rrpc__new_reply_key(a->reply_key, sizeof a->reply_key, a->prefix) != RRPC_OK)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ESYS, "cannot make a reply key");
    if (rrpc__areq_make_tail(a) != RRPC_OK)
        return rrpc__fail(errmsg, errmsg_len, RRPC_EINVAL, "key_prefix is not valid UTF-8");
    /* The transport's headroom goes in front of each group's texts. */
    size_t room = a->ops->deliver_max + a->ops->deliver_headroom;
    a->argv_mem = malloc(room * sizeof *a->argv);
    a->lens_mem = malloc(room * sizeof *a->lens);
    a->by_shard = malloc(a->ops->deliver_max * sizeof *a->by_shard);
    a->ttls = malloc(a->ops->deliver_max * sizeof *a->ttls);
    if (a->argv_mem == NULL || a->lens_mem == NULL || a->by_shard == NULL || a->ttls == NULL ||
        pthread_mutex_init(&a->lock, NULL) != 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    if (pthread_cond_init(&a->cancel_done, NULL) != 0) {
        pthread_mutex_destroy(&a->lock);
        free(a->argv_mem);
        a->argv_mem = NULL;
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    }
    atomic_store(&a->next_handle, 1);
    a->argv = a->argv_mem + a->ops->deliver_headroom;
    a->lens = a->lens_mem + a->ops->deliver_headroom;
    return RRPC_OK;
}

static int init_loop(rrpc_async *a, void *app_base, char *errmsg, size_t errmsg_len)
{
    a->base = app_base ? app_base : event_base_new();
    if (a->base == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "cannot create an event base");
    a->flush_ev = event_new(a->base, -1, 0, rrpc__asend_on_flush, a);
    a->sweep_ev = evtimer_new(a->base, rrpc__aff_on_sweep, a);
    if (a->flush_ev == NULL || a->sweep_ev == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "cannot create events");
    return RRPC_OK;
}

/* Frees what close or a failed open leaves; the loop no longer runs. */
static void free_client(rrpc_async *a)
{
    close_session(a);
    rrpc__acall_free_list(a->returned);
    rrpc__acall_free_list(a->free_calls);
    rrpc__acall_free_list(a->queue_head);
    if (a->flush_ev)
        event_free(a->flush_ev);
    if (a->sweep_ev)
        event_free(a->sweep_ev);
    if (a->wake_ev)
        event_free(a->wake_ev);
    if (a->own_loop && a->base)
        event_base_free(a->base);
    if (a->wake_fd >= 0)
        close(a->wake_fd);
    free(a->slots);
    free(a->outbox);
    free(a->outbox_spare);
    free(a->argv_mem);
    free(a->lens_mem);
    free(a->by_shard);
    free(a->ttls);
    free(a->request_tail);
    rrpc__call_hooks_free(&a->hooks);
    free(a->prefix);
    rrpc__url_free(&a->url);
    if (a->argv_mem) {
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->cancel_done);
    }
    free(a);
}

int rrpc_async_open(rrpc_async **out, const rrpc_async_options *opts, char *errmsg,
                    size_t errmsg_len)
{
    rrpc_async_options own; /* the caller's options, as long as this library's */
    if (out == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    rrpc_async_options_init(&own);
    if (opts && rrpc__opts_load(&own, sizeof own, opts, errmsg, errmsg_len) != RRPC_OK)
        return RRPC_EINVAL;
    opts = &own;
    rrpc_async *a = calloc(1, sizeof *a);
    if (a == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    int rc = init_config(a, opts, errmsg, errmsg_len);
    if (rc == RRPC_OK)
        rc = init_loop(a, opts->event_base, errmsg, errmsg_len);
    if (rc == RRPC_OK)
        rc = a->ops->open(&a->session, a->base, &a->url, a->reply_key, a->connect_timeout_s,
                          &rrpc__areceive_handlers, a, &a->clock, errmsg, errmsg_len);
    /* Calls made before the session is connected queue behind it. */
    if (rc == RRPC_OK)
        atomic_store(&a->link_up, 1);
    if (rc == RRPC_OK && a->own_loop)
        rc = start_thread(a, errmsg, errmsg_len);
    if (rc != RRPC_OK) {
        free_client(a);
        return rc;
    }
    *out = a;
    return RRPC_OK;
}

void rrpc_async_close(rrpc_async *a)
{
    if (a == NULL)
        return;
    if ((!a->own_loop && a->cb_depth > 0) || rrpc__async_loop_of_thread == a) {
        /* Freeing the client under its own callback would pull the
         * session from under the transport; a caller bug worth stopping
         * loudly. */
        log_line(RRPC_LOG_ERROR, "rrpc_async_close called from inside a callback", NULL);
        abort();
    }
    if (!a->own_loop) {
        atomic_store(&a->closing, 1);
        shutdown_on_loop(a, NULL);
    } else {
        pthread_mutex_lock(&a->lock);
        atomic_store(&a->closing, 1);
        int need_wake = !a->wake_pending;
        a->wake_pending = 1;
        pthread_mutex_unlock(&a->lock);
        if (need_wake)
            wake(a);
        pthread_join(a->thread, NULL);
    }
    free_client(a);
}

const char *rrpc_async_errmsg(const rrpc_async *a)
{
    return rrpc__async_error_of(a);
}

size_t rrpc_async_in_flight(const rrpc_async *a)
{
    return a ? atomic_load(&((rrpc_async *)a)->in_flight) : 0; /* atomics need non-const */
}

/* ---- calls ------------------------------------------------------------- */

static int check_args(rrpc_async *a, const char *service, const char *method, const json_t *params)
{
    if (service == NULL || service[0] == '\0')
        return rrpc__async_error(a, RRPC_EINVAL, "service must be a non-empty string");
    if (method == NULL || method[0] == '\0')
        return rrpc__async_error(a, RRPC_EINVAL, "method must be a non-empty string");
    if (params != NULL && !json_is_array(params) && !json_is_object(params))
        return rrpc__async_error(a, RRPC_EINVAL, "params must be a JSON array or object");
    if (atomic_load(&a->closing))
        return rrpc__async_error(a, RRPC_ESTATE, "the client is closing");
    if (!atomic_load(&a->link_up))
        return rrpc__async_error(a, RRPC_ECONNECT, "not connected to %s (reconnecting)",
                                 a->ops->broker);
    return RRPC_OK;
}

/* Hands a built record to the loop: directly on the loop thread, else
 * through the queue.  On failure the record is recycled. */
static int enqueue(rrpc_async *a, rrpc__acall *c)
{
    int rc = RRPC_OK;
    if (rrpc__async_on_loop(a)) {
        rc = rrpc__asend_submit(a, c);
    } else {
        pthread_mutex_lock(&a->lock);
        if (atomic_load(&a->closing)) {
            rc = rrpc__async_error(a, RRPC_ESTATE, "the client is closing");
        } else {
            if (a->queue_tail)
                a->queue_tail->next = c;
            else
                a->queue_head = c;
            a->queue_tail = c;
            c->next = NULL;
        }
        int need_wake = rc == RRPC_OK && !a->wake_pending;
        if (need_wake)
            a->wake_pending = 1;
        pthread_mutex_unlock(&a->lock);
        if (need_wake)
            wake(a);
    }
    if (rc != RRPC_OK)
        rrpc__acall_put(a, c);
    return rc;
}

/* Runs the interceptors' befores of a call (rrpc_async_add_interceptor). */
static int intercept(rrpc_async *a, const char *service, const char *method, const json_t *params,
                     json_t **members, size_t *passed)
{
    char err[RRPC__ERRMSG_LEN];
    int rc = rrpc__call_hooks_before(&a->hooks, service, method, params, members, passed, err,
                                     sizeof err);
    if (rc != RRPC_OK) {
        rrpc__call_hooks_after(&a->hooks, *passed, service, method, rc, NULL, NULL);
        return rrpc__async_error(a, rc, "%s", err);
    }
    return RRPC_OK;
}

/* "service\0method", kept with a call for its interceptors' afters. */
static char *names(const char *service, const char *method)
{
    size_t s = strlen(service) + 1, m = strlen(method) + 1;
    char *both = malloc(s + m);
    if (both != NULL) {
        memcpy(both, service, s);
        memcpy(both + s, method, m);
    }
    return both;
}

int rrpc_async_add_interceptor(rrpc_async *a, rrpc_call_before_fn before, rrpc_call_after_fn after,
                               void *udata)
{
    if (a == NULL)
        return RRPC_EINVAL;
    if (atomic_load(&a->called))
        return rrpc__async_error(a, RRPC_ESTATE, "interceptors are added before the first call");
    return rrpc__call_hooks_add(&a->hooks, before, after, udata);
}

static int start(rrpc_async *a, const char *service, const char *method, const json_t *params,
                 const rrpc_call_options *o, rrpc_async_cb cb, void *udata)
{
    int notify = cb == NULL;
    double timeout_s = o->timeout_s;
    int rc = check_args(a, service, method, params);
    rrpc__call_trace_ctx trace;
    char err[RRPC__ERRMSG_LEN];
    if (rc == RRPC_OK &&
        rrpc__call_trace(o->traceparent, o->tracestate, &trace, err, sizeof err) != RRPC_OK)
        rc = rrpc__async_error(a, RRPC_EINVAL, "%s", err);
    if (rc == RRPC_OK && o->tenant != NULL && !rrpc__tenant_ok(o->tenant, strlen(o->tenant)))
        rc = rrpc__async_error(a, RRPC_EINVAL, "tenant: 1 to %d bytes, no control characters",
                               RRPC__TENANT_MAX);
    if (rc != RRPC_OK)
        return rc;
    json_t *members = NULL;
    size_t passed = 0;
    atomic_store(&a->called, 1);
    if (!notify && a->hooks.count > 0 &&
        (rc = intercept(a, service, method, params, &members, &passed)) != RRPC_OK)
        return rc;
    if (rrpc__call_tenant(o->tenant, &members, err, sizeof err) != RRPC_OK) {
        json_decref(members); /* out of memory: the tenant was checked above */
        return rrpc__async_error(a, RRPC_ENOMEM, "%s", err);
    }
    if (!notify) {
        size_t before = atomic_fetch_add(&a->in_flight, 1);
        if (a->max_in_flight && before >= a->max_in_flight) {
            atomic_fetch_sub(&a->in_flight, 1);
            return rrpc__async_error(a, RRPC_ESTATE, "max_in_flight (%zu) calls are in flight",
                                     a->max_in_flight);
        }
    }
    rrpc__acall *c = rrpc__acall_get(a);
    if (c == NULL)
        rc = rrpc__async_error(a, RRPC_ENOMEM, "out of memory");
    if (c != NULL) {
        c->cb = cb;
        c->udata = udata;
        c->notify = (unsigned)notify;
        c->hooks_passed = passed;
        if (passed > 0 && (c->hook_names = names(service, method)) == NULL)
            rc = rrpc__async_error(a, RRPC_ENOMEM, "out of memory");
        c->timeout_s = rrpc__inherited_timeout(rrpc__timeout_or(timeout_s, a->timeout_s));
        c->handle = notify ? 0 : atomic_fetch_add(&a->next_handle, 1);
        c->progress = notify ? NULL : o->progress;
        c->progress_udata = o->progress_udata;
        c->cancellable = !notify && o->cancellable;
        c->priority = notify ? RRPC_PRIORITY_NORMAL : o->priority;
        if (o->handle != NULL)
            *o->handle = c->handle;
        if (rc == RRPC_OK)
            rc = rrpc__areq_build(a, c, service, method, params, &trace, members);
        if (rc == RRPC_OK)
            rc = enqueue(a, c); /* recycles C itself on failure */
        else
            rrpc__acall_put(a, c);
    }
    json_decref(members);
    if (rc != RRPC_OK && !notify)
        atomic_fetch_sub(&a->in_flight, 1);
    return rc;
}

static int call_with(rrpc_async *a, const char *service, const char *method, const json_t *params,
                     const rrpc_call_options *o, rrpc_async_cb cb, void *udata)
{
    if (cb == NULL)
        return rrpc__async_error(a, RRPC_EINVAL, "a callback is required");
    /* Longer than RRPC__TIMEOUT_MAX_S (infinity too) is cut to it in
     * start(): a timer further out would overflow libevent's clock. */
    if (!(o->timeout_s >= 0))
        return rrpc__async_error(a, RRPC_EINVAL, "timeout_s must be a number >= 0");
    return start(a, service, method, params, o, cb, udata);
}

int rrpc_async_call(rrpc_async *a, const char *service, const char *method, const json_t *params,
                    double timeout_s, rrpc_async_cb cb, void *udata)
{
    if (a == NULL)
        return RRPC_EINVAL;
    rrpc_call_options o = {.size = sizeof o, .timeout_s = timeout_s};
    return call_with(a, service, method, params, &o, cb, udata);
}

int rrpc_async_call_with(rrpc_async *a, const char *service, const char *method,
                         const json_t *params, const rrpc_call_options *opts, rrpc_async_cb cb,
                         void *udata)
{
    if (a == NULL)
        return RRPC_EINVAL;
    rrpc_call_options o;
    char err[RRPC__ERRMSG_LEN];
    if (rrpc__call_options(&o, opts, err, sizeof err) != RRPC_OK)
        return rrpc__async_error(a, RRPC_EINVAL, "%s", err);
    return call_with(a, service, method, params, &o, cb, udata);
}

int rrpc_async_cancel(rrpc_async *a, uint64_t handle)
{
    if (a == NULL)
        return RRPC_EINVAL;
    if (rrpc__async_on_loop(a))
        return cancel_on_loop(a, handle);
    /* Handed to the loop behind the calls queued before it, and waited
     * for: the callback has run when this returns. */
    rrpc__acancel k = {.handle = handle};
    pthread_mutex_lock(&a->lock);
    if (atomic_load(&a->closing)) {
        pthread_mutex_unlock(&a->lock);
        return rrpc__async_error(a, RRPC_ESTATE, "the client is closing");
    }
    k.next = a->cancels;
    a->cancels = &k;
    int need_wake = !a->wake_pending;
    a->wake_pending = 1;
    pthread_mutex_unlock(&a->lock);
    if (need_wake)
        wake(a);
    pthread_mutex_lock(&a->lock);
    while (!k.done)
        pthread_cond_wait(&a->cancel_done, &a->lock);
    pthread_mutex_unlock(&a->lock);
    if (k.rc == RRPC_EINVAL)
        rrpc__async_error(a, RRPC_EINVAL,
                          "no call in flight with handle %llu (unknown, or finished)",
                          (unsigned long long)handle);
    else if (k.rc == RRPC_ESTATE)
        rrpc__async_error(a, RRPC_ESTATE, "the client is closing");
    return k.rc;
}

int rrpc_async_notify(rrpc_async *a, const char *service, const char *method, const json_t *params)
{
    if (a == NULL)
        return RRPC_EINVAL;
    rrpc_call_options o = {.size = sizeof o};
    return start(a, service, method, params, &o, NULL, NULL);
}
