/* test_progress_cancel.c -- streamed progress and cancellation
 * (PROTOCOL.md section 7, "progress" and "cancel_key") against a real
 * redis-server started by harness/with-redis.sh ($REDIS_URL).
 *
 * What it pins down: a caller that asked gets every progress value in
 * order and then the answer once, sync and async; a seed-style caller
 * that did not ask gets the answer alone and nothing else on its key;
 * progress outside a handler (after its answer) is refused; a sync call
 * stops on its cancel flag and its handler sees the cancel; a cancelled
 * request still queued never runs; nested calls are cancelled with the
 * request that made them; rrpc_async_cancel runs the callback exactly
 * once, and refuses an unknown or finished call.
 */
#include "core/clock.h"
#include "harness.h"
#include "redis/conn.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#define SERVICE "pc"

static atomic_int stopped_by_cancel; /* handlers that saw rrpc_request_cancelled */
static atomic_int mark_runs;         /* runs of "mark" */
static rrpc_request *kept_request;   /* a request kept past its handler */

/* count(n, ms): progress 1..n, one every ms, answers n; stops when cancelled. */
static json_t *m_count(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t n, ms;
    if (rrpc_param_int(req, 0, "n", &n) || rrpc_param_int(req, 1, "ms", &ms))
        return NULL;
    for (json_int_t i = 1; i <= n; i++) {
        rrpc__sleep((double)ms / 1000.0);
        if (rrpc_request_cancelled(req)) {
            atomic_fetch_add(&stopped_by_cancel, 1);
            return rrpc_request_error(req, RRPC_JSONRPC_CANCELLED, "Cancelled", NULL);
        }
        json_t *v = json_integer(i);
        CHECK(rrpc_request_progress(req, v) == RRPC_OK);
        json_decref(v);
    }
    kept_request = req;
    return json_integer(n);
}

/* mark(): counts its runs. */
static json_t *m_mark(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    atomic_fetch_add(&mark_runs, 1);
    return json_true();
}

/* nest(ms): calls count(ms / 10, 10) on this service from inside the
 * handler, without any option: the nested call is cancelled with this
 * request. */
static json_t *m_nest(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t ms;
    if (rrpc_param_int(req, 0, "ms", &ms))
        return NULL;
    rrpc_client *c = open_client_with(NULL);
    json_t *params = json_pack("[Ii]", (json_int_t)(ms / 10), 10), *result = NULL, *error = NULL;
    int rc = rrpc_call(c, SERVICE, "count", params, 0, &result, &error);
    json_int_t code = json_integer_value(json_object_get(error, "code"));
    json_decref(params);
    json_decref(error);
    rrpc_client_close(c);
    /* Either the call saw the cancel itself, or the nested handler saw it
     * first and answered -32002: both mean the nested call was cancelled. */
    if (rc == RRPC_ECANCELED || (rc == RRPC_EREMOTE && code == RRPC_JSONRPC_CANCELLED))
        atomic_fetch_add(&stopped_by_cancel, 1);
    if (rc != RRPC_OK)
        return rrpc_request_error(req, RRPC_JSONRPC_CANCELLED, rrpc_strerror(rc), NULL);
    return result;
}

static void start_server(running *r, int workers)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = SERVICE;
    o.workers = workers;
    o.handle_signals = 0;
    o.heartbeat = 0;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    rrpc_server_register(srv, "count", m_count, NULL, NULL);
    rrpc_server_register(srv, "mark", m_mark, NULL, NULL);
    rrpc_server_register(srv, "nest", m_nest, NULL, NULL);
    rrpc_server_register(srv, "sleep", m_sleep, NULL, NULL);
    run_server(r, srv);
}

/* ---- progress ------------------------------------------------------------ */

typedef struct seen {
    json_int_t values[64];
    int n;
} seen;

static void on_progress(const json_t *value, void *udata)
{
    seen *s = udata;
    if (s->n < 64)
        s->values[s->n++] = json_integer_value(value);
}

static void test_sync_progress(void)
{
    rrpc_client *c = open_client_with(NULL);
    seen s = {.n = 0};
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.progress = on_progress;
    o.progress_udata = &s;
    json_t *params = json_pack("[ii]", 5, 5), *result = NULL;
    CHECK(rrpc_call_with(c, SERVICE, "count", params, &o, &result, NULL) == RRPC_OK);
    CHECK(json_integer_value(result) == 5);
    CHECK(s.n == 5);
    for (int i = 0; i < s.n; i++)
        CHECK(s.values[i] == i + 1);
    json_decref(result);
    /* The same call without asking: the answer alone. */
    s.n = 0;
    result = NULL;
    CHECK(rrpc_call(c, SERVICE, "count", params, 0, &result, NULL) == RRPC_OK);
    CHECK(json_integer_value(result) == 5 && s.n == 0);
    json_decref(result);
    json_decref(params);
    rrpc_client_close(c);
}

/* A seed-style caller (PROTOCOL.md section 8) never sees a progress message. */
static void test_seed_caller_sees_none(void)
{
    const char *req =
        "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"params\":[3,1],\"id\":\"seed-1\"}";
    rrpc__reply_free(cmd(3, "RPUSH", SERVICE, req));
    rrpc__reply *r = cmd(3, "BLPOP", "seed-1", "5");
    CHECK(r != NULL && rrpc__reply_type(r) == RRPC__REPLY_ARRAY);
    json_t *resp = r ? json_loads(rrpc__reply_str(rrpc__reply_element(r, 1), NULL), 0, NULL) : NULL;
    CHECK(json_integer_value(json_object_get(resp, "result")) == 3);
    json_decref(resp);
    rrpc__reply_free(r);
    CHECK(cmd_int(2, "LLEN", "seed-1", NULL) == 0);
    /* Asked for, by hand: three progress messages, then the answer. */
    req =
        "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"params\":[3,1],\"id\":\"seed-2\",\"progress\":"
        "true}";
    rrpc__reply_free(cmd(3, "RPUSH", SERVICE, req));
    for (int i = 1; i <= 4; i++) {
        r = cmd(3, "BLPOP", "seed-2", "5");
        CHECK(r != NULL && rrpc__reply_type(r) == RRPC__REPLY_ARRAY);
        json_t *m =
            r ? json_loads(rrpc__reply_str(rrpc__reply_element(r, 1), NULL), 0, NULL) : NULL;
        if (i <= 3) {
            CHECK(json_object_get(m, "id") == NULL);
            CHECK(strcmp(json_string_value(json_object_get(m, "method")), "rpc.progress") == 0);
            json_t *p = json_object_get(m, "params");
            CHECK(strcmp(json_string_value(json_object_get(p, "id")), "seed-2") == 0);
            CHECK(json_integer_value(json_object_get(p, "progress")) == i);
        } else {
            CHECK(json_integer_value(json_object_get(m, "result")) == 3);
        }
        json_decref(m);
        rrpc__reply_free(r);
    }
}

/* Progress outside its handler -- after the answer -- is refused. */
static void test_progress_after_answer(void)
{
    CHECK(kept_request != NULL);
    json_t *v = json_integer(99);
    CHECK(rrpc_request_progress(kept_request, v) == RRPC_ESTATE);
    CHECK(rrpc_request_progress(NULL, v) == RRPC_EINVAL);
    CHECK(rrpc_request_cancelled(kept_request) == 0);
    json_decref(v);
}

/* ---- sync cancellation --------------------------------------------------- */

/* The documented way to cancel a sync call: a signal handler sets the
 * flag, on the thread making the call.  A helper thread only sends the
 * signal (setting the flag from another thread would be a data race). */
static volatile sig_atomic_t cancel_flag;

static void on_sigusr1(int sig)
{
    (void)sig;
    cancel_flag = 1;
}

typedef struct later {
    pthread_t caller;
    double after_s;
} later;

static void *signal_later(void *arg)
{
    later *l = arg;
    rrpc__sleep(l->after_s);
    pthread_kill(l->caller, SIGUSR1);
    return NULL;
}

/* Calls METHOD(PARAMS) with a cancel flag set by a signal after AFTER_S;
 * returns the status and how long the call took in *took. */
static int call_cancelled(const char *method, json_t *params, double after_s, double *took)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    cancel_flag = 0;
    later l = {pthread_self(), after_s};
    pthread_t t;
    pthread_create(&t, NULL, signal_later, &l);
    rrpc_client *c = open_client_with(NULL);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.cancel = &cancel_flag;
    o.timeout_s = 20;
    json_t *result = NULL;
    double t0 = rrpc__monotonic();
    int rc = rrpc_call_with(c, SERVICE, method, params, &o, &result, NULL);
    *took = rrpc__monotonic() - t0;
    pthread_join(t, NULL);
    sigaction(SIGUSR1, &old, NULL);
    json_decref(result);
    rrpc_client_close(c);
    return rc;
}

static void test_sync_cancel_running(void)
{
    atomic_store(&stopped_by_cancel, 0);
    json_t *params = json_pack("[ii]", 500, 10); /* 5 s */
    double took = 0;
    CHECK(call_cancelled("count", params, 0.3, &took) == RRPC_ECANCELED);
    CHECK(took < 1.0 * time_scale());
    WAIT_UNTIL(atomic_load(&stopped_by_cancel) == 1, 2 * time_scale());
    CHECK(atomic_load(&stopped_by_cancel) == 1);
    json_decref(params);
}

/* A flag already set: nothing is sent. */
static void test_sync_cancel_before(void)
{
    static volatile sig_atomic_t flag = 1;
    rrpc_client *c = open_client_with(NULL);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.cancel = &flag;
    json_t *result = NULL;
    int before = atomic_load(&mark_runs);
    CHECK(rrpc_call_with(c, SERVICE, "mark", NULL, &o, &result, NULL) == RRPC_ECANCELED);
    rrpc__sleep(0.2);
    CHECK(atomic_load(&mark_runs) == before);
    rrpc_client_close(c);
}

static void *busy_call(void *arg)
{
    (void)arg;
    rrpc_client *c = open_client_with(NULL);
    json_t *params = json_pack("[i]", 800), *result = NULL;
    CHECK(rrpc_call(c, SERVICE, "sleep", params, 5, &result, NULL) == RRPC_OK);
    json_decref(params);
    json_decref(result);
    rrpc_client_close(c);
    return NULL;
}

/* With the one worker busy, a cancelled call still queued never runs. */
static void test_sync_cancel_queued(void)
{
    pthread_t busy;
    pthread_create(&busy, NULL, busy_call, NULL);
    rrpc__sleep(0.2); /* the worker is in the sleep */
    int before = atomic_load(&mark_runs);
    double took = 0;
    CHECK(call_cancelled("mark", NULL, 0.2, &took) == RRPC_ECANCELED);
    CHECK(cmd_int(2, "LLEN", SERVICE, NULL) == 0); /* taken back */
    pthread_join(busy, NULL);
    rrpc__sleep(0.3);
    CHECK(atomic_load(&mark_runs) == before);
}

/* A call made inside a handler is cancelled with the request. */
static void test_nested_cancel(void)
{
    atomic_store(&stopped_by_cancel, 0);
    json_t *params = json_pack("[i]", 5000);
    double took = 0;
    CHECK(call_cancelled("nest", params, 0.4, &took) == RRPC_ECANCELED);
    /* The nested count sees it, and so does nest's call: two. */
    WAIT_UNTIL(atomic_load(&stopped_by_cancel) == 2, 3 * time_scale());
    CHECK(atomic_load(&stopped_by_cancel) == 2);
    json_decref(params);
}

/* ---- async --------------------------------------------------------------- */

typedef struct outcome {
    atomic_int calls;
    atomic_int status;
    atomic_int progress_at_end; /* progress values seen when the callback ran */
    seen s;
} outcome;

static void on_done(int status, json_t *result, json_t *error, void *udata)
{
    (void)result;
    (void)error;
    outcome *o = udata;
    atomic_store(&o->status, status);
    atomic_store(&o->progress_at_end, o->s.n);
    atomic_fetch_add(&o->calls, 1);
}

static void test_async(void)
{
    rrpc_async *a = NULL;
    char err[256];
    CHECK(rrpc_async_open(&a, NULL, err, sizeof err) == RRPC_OK);
    /* Progress in order, then the answer once. */
    outcome p = {0};
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.progress = on_progress;
    o.progress_udata = &p.s;
    json_t *params = json_pack("[ii]", 4, 5);
    CHECK(rrpc_async_call_with(a, SERVICE, "count", params, &o, on_done, &p) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&p.calls) == 1, 5);
    CHECK(atomic_load(&p.calls) == 1 && atomic_load(&p.status) == RRPC_OK);
    CHECK(atomic_load(&p.progress_at_end) == 4);
    for (int i = 0; i < p.s.n; i++)
        CHECK(p.s.values[i] == i + 1);
    json_decref(params);

    /* Cancel a running cancellable call: the callback once, the handler stops. */
    atomic_store(&stopped_by_cancel, 0);
    outcome k = {0};
    uint64_t handle = 0;
    rrpc_call_options_init(&o);
    o.cancellable = 1;
    o.handle = &handle;
    params = json_pack("[ii]", 500, 10);
    CHECK(rrpc_async_call_with(a, SERVICE, "count", params, &o, on_done, &k) == RRPC_OK);
    CHECK(handle != 0);
    rrpc__sleep(0.3);
    CHECK(rrpc_async_cancel(a, handle) == RRPC_OK);
    CHECK(atomic_load(&k.calls) == 1 && atomic_load(&k.status) == RRPC_ECANCELED);
    WAIT_UNTIL(atomic_load(&stopped_by_cancel) == 1, 2 * time_scale());
    CHECK(atomic_load(&stopped_by_cancel) == 1);
    /* Bad inputs: a finished call, an unknown one. */
    CHECK(rrpc_async_cancel(a, handle) == RRPC_EINVAL);
    CHECK(rrpc_async_cancel(a, 987654321) == RRPC_EINVAL);
    CHECK(rrpc_async_cancel(a, 0) == RRPC_EINVAL);
    CHECK(rrpc_async_cancel(NULL, 1) == RRPC_EINVAL);
    uint64_t done_handle = 0;
    outcome d = {0};
    rrpc_call_options_init(&o);
    o.handle = &done_handle;
    CHECK(rrpc_async_call_with(a, SERVICE, "mark", NULL, &o, on_done, &d) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&d.calls) == 1, 5);
    CHECK(rrpc_async_cancel(a, done_handle) == RRPC_EINVAL);
    rrpc__sleep(0.2);
    CHECK(atomic_load(&k.calls) == 1 && atomic_load(&d.calls) == 1);
    json_decref(params);
    rrpc_async_close(a);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    running r;
    start_server(&r, 3);
    test_sync_progress();
    test_seed_caller_sees_none();
    test_progress_after_answer();
    test_sync_cancel_running();
    test_sync_cancel_before();
    test_nested_cancel();
    test_async();
    stop_server(&r);
    start_server(&r, 1);
    test_sync_cancel_queued();
    stop_server(&r);
    raw_close();
    return check_report();
}
