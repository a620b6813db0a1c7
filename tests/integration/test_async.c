/* test_async.c -- the multiplexed async client against the threaded server,
 * on a real redis-server started by harness/with-redis.sh ($REDIS_URL).
 *
 * What it pins down, in both loop modes (the client's own background
 * thread, and an event base the application runs): thousands of calls in
 * flight get their own results and errors; every callback runs exactly
 * once (counted per call); a timeout fires on time and withdraws the
 * request; close cancels whatever is pending; a killed connection fails the
 * calls in flight and the client comes back by itself.
 *
 * `test_async bench SERVICE SECONDS [THREADS WINDOW CLIENTS]` instead
 * measures throughput of `add` against a running SERVICE (e.g. calc-server)
 * with THREADS application threads keeping WINDOW calls in flight each.
 */
#include "core/clock.h"
#include "core/trace.h"
#include "harness.h"
#include "redis/conn.h"

#include <event2/event.h>

#include <math.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>

#define SERVICE "at"

/* ---- the test service --------------------------------------------------- */

static json_t *m_fail(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t i;
    if (rrpc_param_int(req, 0, "i", &i))
        return NULL;
    return rrpc_request_error(req, 42, "it failed", json_integer(i));
}

/* Runs the test service with four workers. */
static void start_server(running *r)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = SERVICE;
    o.workers = 4;
    o.handle_signals = 0;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    rrpc_server_register(srv, "add", m_add, NULL, NULL);
    rrpc_server_register(srv, "fail", m_fail, NULL, NULL);
    rrpc_server_register(srv, "sleep", m_sleep, NULL, NULL);
    run_server(r, srv);
}

/* ---- expectations: one per call, counted by its callback ---------------- */

enum kind { K_ADD, K_FAIL, K_NAMED, K_NOSUCH, K_TIMEOUT, K_CANCEL, K_ANY };

typedef struct expect {
    enum kind kind;
    json_int_t i;
    atomic_int calls;  /* how often the callback ran */
    atomic_int status; /* its last status */
    atomic_int ok;     /* the outcome matched the kind */
} expect;

static atomic_int done_count;
/* Set around rrpc_async_call: a callback that sees it set on its own
 * thread ran inside the call, which the API forbids. */
static _Thread_local int inside_call;

static int outcome_ok(const expect *e, int status, json_t *result, json_t *error)
{
    switch (e->kind) {
    case K_ADD: return status == RRPC_OK && !error && json_integer_value(result) == e->i + 1;
    case K_NAMED: return status == RRPC_OK && !error && json_integer_value(result) == e->i + 2;
    case K_FAIL:
        return status == RRPC_EREMOTE && !result &&
               json_integer_value(json_object_get(error, "code")) == 42 &&
               json_integer_value(json_object_get(error, "data")) == e->i;
    case K_NOSUCH:
        return status == RRPC_EREMOTE &&
               json_integer_value(json_object_get(error, "code")) == RRPC_JSONRPC_METHOD_NOT_FOUND;
    case K_TIMEOUT: return status == RRPC_ETIMEDOUT && !result && !error;
    case K_CANCEL: return status == RRPC_ECANCELED && !result && !error;
    case K_ANY: return 1;
    }
    return 0;
}

static void on_expect(int status, json_t *result, json_t *error, void *udata)
{
    expect *e = udata;
    if (inside_call)
        atomic_store(&e->ok, -1); /* ran inside rrpc_async_call: forbidden */
    else
        atomic_store(&e->ok, outcome_ok(e, status, result, error));
    atomic_store(&e->status, status);
    atomic_fetch_add(&e->calls, 1);
    atomic_fetch_add(&done_count, 1);
}

/* Starts the call that E describes. */
static int start_call(rrpc_async *a, expect *e, double timeout_s)
{
    json_t *params = NULL;
    const char *method = "add", *service = SERVICE;
    switch (e->kind) {
    case K_ADD: params = json_pack("[I,i]", e->i, 1); break;
    case K_NAMED: params = json_pack("{s:I,s:i}", "a", e->i, "b", 2); break;
    case K_FAIL:
        method = "fail";
        params = json_pack("[I]", e->i);
        break;
    case K_NOSUCH: method = "no-such-method"; break;
    default:
        service = "nobody-serves-this";
        params = json_pack("[I]", e->i);
        break;
    }
    inside_call = 1;
    int rc = rrpc_async_call(a, service, method, params, timeout_s, on_expect, e);
    inside_call = 0;
    json_decref(params);
    return rc;
}

static void init_expects(expect *es, size_t n, size_t base)
{
    for (size_t i = 0; i < n; i++) {
        es[i].kind = (enum kind)((base + i) % 4);
        es[i].i = (json_int_t)(base + i);
        atomic_init(&es[i].calls, 0);
        atomic_init(&es[i].status, 1);
        atomic_init(&es[i].ok, 0);
    }
}

/* Every callback ran exactly once and saw what its call deserved. */
static void check_expects(const char *what, expect *es, size_t n)
{
    size_t twice = 0, never = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        int calls = atomic_load(&es[i].calls);
        never += calls == 0;
        twice += calls > 1;
        wrong += calls == 1 && atomic_load(&es[i].ok) != 1;
        if (calls == 1 && atomic_load(&es[i].ok) != 1 && wrong < 4)
            fprintf(stderr, "%s: call %zu (kind %d) ended with %s\n", what, i, es[i].kind,
                    rrpc_strerror(atomic_load(&es[i].status)));
    }
    if (never || twice || wrong)
        fprintf(stderr, "%s: %zu calls: %zu never called back, %zu twice, %zu wrong\n", what, n,
                never, twice, wrong);
    CHECK(never == 0 && twice == 0 && wrong == 0);
}

static int wait_done(int target, double seconds)
{
    double end = rrpc__monotonic() + seconds;
    while (atomic_load(&done_count) < target && rrpc__monotonic() < end)
        rrpc__sleep(0.001);
    return atomic_load(&done_count) >= target;
}

/* Runs an application-owned base until TARGET callbacks ran. */
static int run_until(struct event_base *base, int target, double seconds)
{
    double end = rrpc__monotonic() + seconds;
    while (atomic_load(&done_count) < target && rrpc__monotonic() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return atomic_load(&done_count) >= target;
}

static rrpc_async *open_async(void *base, size_t max_in_flight)
{
    rrpc_async_options o;
    rrpc_async_options_init(&o);
    o.event_base = base;
    o.max_in_flight = max_in_flight;
    o.timeout_s = 20;
    return open_async_with(&o);
}

/* ---- own-thread mode ------------------------------------------------------ */

#define PER_THREAD 1000

typedef struct submitter {
    rrpc_async *a;
    expect *es;
    int refused;
} submitter;

static void *submit_many(void *arg)
{
    submitter *s = arg;
    for (size_t i = 0; i < PER_THREAD; i++)
        if (start_call(s->a, &s->es[i], 0) != RRPC_OK)
            s->refused++;
    return NULL;
}

static void test_threads_many_in_flight(void)
{
    static expect es[2 * PER_THREAD];
    init_expects(es, 2 * PER_THREAD, 0);
    atomic_store(&done_count, 0);
    rrpc_async *a = open_async(NULL, 0);
    if (a == NULL)
        return;
    submitter s[2] = {{a, es, 0}, {a, es + PER_THREAD, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, submit_many, &s[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(s[0].refused == 0 && s[1].refused == 0);
    CHECK(wait_done(2 * PER_THREAD, 20));
    check_expects("threads", es, 2 * PER_THREAD);
    CHECK(rrpc_async_in_flight(a) == 0);
    rrpc_async_close(a);
    check_expects("threads after close", es, 2 * PER_THREAD);
}

static void test_threads_timeout_withdraws(void)
{
    static expect e;
    e.kind = K_TIMEOUT;
    atomic_init(&e.calls, 0);
    atomic_store(&done_count, 0);
    rrpc_async *a = open_async(NULL, 0);
    if (a == NULL)
        return;
    double t0 = rrpc__monotonic();
    CHECK(start_call(a, &e, 0.3) == RRPC_OK);
    CHECK(rrpc_async_in_flight(a) == 1);
    CHECK(wait_done(1, 5));
    double took = rrpc__monotonic() - t0;
    CHECK(took >= 0.29 && took < 1.0);
    check_expects("timeout", &e, 1);
    rrpc__sleep(0.1); /* the LREM goes out right after the callback */
    CHECK(cmd_int(2, "LLEN", "nobody-serves-this", NULL) == 0);
    rrpc_async_close(a);
}

static void test_threads_close_cancels(void)
{
    static expect es[600];
    for (size_t i = 0; i < 600; i++) {
        es[i].kind = K_CANCEL;
        atomic_init(&es[i].calls, 0);
    }
    atomic_store(&done_count, 0);
    rrpc_async *a = open_async(NULL, 0);
    if (a == NULL)
        return;
    for (size_t i = 0; i < 300; i++)
        CHECK(start_call(a, &es[i], 10) == RRPC_OK);
    rrpc__sleep(0.1); /* these are on the wire; the rest are still queued */
    for (size_t i = 300; i < 600; i++)
        CHECK(start_call(a, &es[i], 10) == RRPC_OK);
    rrpc_async_close(a);
    CHECK(atomic_load(&done_count) == 600);
    check_expects("close", es, 600);
    /* what close cancelled stays behind in the service list: a real
     * worker would run it, like a request whose caller went away */
    rrpc__reply_free(cmd(2, "DEL", "nobody-serves-this"));
}

static void test_max_in_flight_and_args(void)
{
    static expect es[3];
    for (int i = 0; i < 3; i++) {
        es[i].kind = K_ADD;
        es[i].i = i;
        atomic_init(&es[i].calls, 0);
    }
    atomic_store(&done_count, 0);
    rrpc_async *a = open_async(NULL, 2);
    if (a == NULL)
        return;
    /* Two slow calls fill the window; a third is refused meanwhile. */
    json_t *slow = json_pack("[i]", 200);
    for (int i = 0; i < 2; i++) {
        es[i].kind = K_ANY;
        CHECK(rrpc_async_call(a, SERVICE, "sleep", slow, 5, on_expect, &es[i]) == RRPC_OK);
    }
    json_decref(slow);
    CHECK(rrpc_async_in_flight(a) == 2);
    CHECK(start_call(a, &es[2], 0) == RRPC_ESTATE);
    CHECK(strstr(rrpc_async_errmsg(a), "max_in_flight") != NULL);
    CHECK(wait_done(2, 5));
    CHECK(start_call(a, &es[2], 0) == RRPC_OK);
    CHECK(wait_done(3, 5));
    check_expects("max_in_flight", es, 3);

    json_t *scalar = json_integer(1);
    CHECK(rrpc_async_call(a, "", "add", NULL, 0, on_expect, NULL) == RRPC_EINVAL);
    CHECK(rrpc_async_call(a, SERVICE, NULL, NULL, 0, on_expect, NULL) == RRPC_EINVAL);
    CHECK(rrpc_async_call(a, SERVICE, "add", scalar, 0, on_expect, NULL) == RRPC_EINVAL);
    CHECK(rrpc_async_call(a, SERVICE, "add", NULL, -1, on_expect, NULL) == RRPC_EINVAL);
    CHECK(rrpc_async_call(a, SERVICE, "add", NULL, 0, NULL, NULL) == RRPC_EINVAL);
    CHECK(strstr(rrpc_async_errmsg(a), "callback") != NULL);
    json_decref(scalar);

    /* A notification is a request without id or reply_to (with a trace
     * context of its own, PROTOCOL.md section 7). */
    json_t *params = json_pack("[i,i]", 1, 2);
    CHECK(rrpc_async_notify(a, "nobody-notified", "add", params) == RRPC_OK);
    json_decref(params);
    rrpc__sleep(0.1);
    rrpc__reply *r = cmd(2, "LPOP", "nobody-notified");
    if (r) {
        CHECK(rrpc__reply_type(r) == RRPC__REPLY_STRING);
        json_t *sent = rrpc__reply_type(r) == RRPC__REPLY_STRING
                           ? json_loads(rrpc__reply_str(r, NULL), 0, NULL)
                           : NULL;
        const char *tp = json_string_value(json_object_get(sent, "traceparent"));
        char parsed[RRPC__TRACEPARENT_LEN + 1];
        CHECK(tp != NULL && rrpc__traceparent_parse(tp, strlen(tp), parsed));
        json_object_del(sent, "traceparent");
        CHECK_JSON_EQ(sent, "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2]}");
        json_decref(sent);
    }
    rrpc__reply_free(r);
    rrpc_async_close(a);
}

/* Kills every normal client connection (ours and the workers'): calls in
 * flight fail with RRPC_ECONNECT, and the client comes back on its own.
 * The calls sleep little because one worker may pop them all in a batch
 * and run them in a row before it gets to the call after the reconnect. */
static void test_connection_loss(void)
{
    static expect slow[8], after;
    for (int i = 0; i < 8; i++) {
        slow[i].kind = K_ANY;
        atomic_init(&slow[i].calls, 0);
    }
    atomic_store(&done_count, 0);
    rrpc_async *a = open_async(NULL, 0);
    if (a == NULL)
        return;
    json_t *params = json_pack("[i]", 200);
    for (int i = 0; i < 8; i++)
        CHECK(rrpc_async_call(a, SERVICE, "sleep", params, 10, on_expect, &slow[i]) == RRPC_OK);
    json_decref(params);
    rrpc__sleep(0.1);
    rrpc__reply *r = cmd(4, "CLIENT", "KILL", "TYPE", "normal");
    if (r)
        CHECK(rrpc__reply_type(r) == RRPC__REPLY_INTEGER && rrpc__reply_integer(r) >= 2);
    rrpc__reply_free(r);
    CHECK(wait_done(8, 5));
    size_t lost = 0;
    for (int i = 0; i < 8; i++)
        lost += atomic_load(&slow[i].calls) == 1 && atomic_load(&slow[i].status) == RRPC_ECONNECT;
    CHECK(lost == 8);

    /* Calls fail fast until the link is back, then work again. */
    after.kind = K_ADD;
    after.i = 41;
    atomic_init(&after.calls, 0);
    double end = rrpc__monotonic() + 10;
    int rc = RRPC_ECONNECT;
    while (rrpc__monotonic() < end && (rc = start_call(a, &after, 5)) == RRPC_ECONNECT)
        rrpc__sleep(0.01);
    CHECK(rc == RRPC_OK);
    CHECK(wait_done(9, 6));
    check_expects("after reconnect", &after, 1);
    rrpc_async_close(a);
}

/* ---- application-owned base ------------------------------------------------ */

static struct event_base *app_base;
static rrpc_async *app_client;
static expect chained[100];

/* A callback that starts the next call of a chain: allowed, and the new
 * call's callback must not run inside it either. */
static void on_chain(int status, json_t *result, json_t *error, void *udata)
{
    expect *e = udata;
    on_expect(status, result, error, udata);
    size_t next = (size_t)(e - chained) + 1;
    if (next >= 100)
        return;
    json_t *params = json_pack("[I,i]", chained[next].i, 1);
    inside_call = 1;
    CHECK(rrpc_async_call(app_client, SERVICE, "add", params, 0, on_chain, &chained[next]) ==
          RRPC_OK);
    inside_call = 0;
    json_decref(params);
}

static void test_app_base(void)
{
    static expect es[2000];
    init_expects(es, 2000, 0);
    init_expects(chained, 100, 0);
    for (size_t i = 0; i < 100; i++)
        chained[i].kind = K_ADD;
    atomic_store(&done_count, 0);
    app_base = event_base_new();
    rrpc_async *a = app_client = open_async(app_base, 0);
    if (a == NULL)
        return;
    for (size_t i = 0; i < 2000; i++)
        CHECK(start_call(a, &es[i], 0) == RRPC_OK);
    inside_call = 1;
    CHECK(rrpc_async_call(a, SERVICE, "add", NULL, 0, on_chain, &chained[0]) == RRPC_OK);
    inside_call = 0;
    CHECK(rrpc_async_in_flight(a) == 2001);
    CHECK(run_until(app_base, 2100, 20));
    check_expects("app base", es, 2000);
    /* chained[0] had no params: its add fails with invalid params */
    CHECK(atomic_load(&chained[0].calls) == 1 && atomic_load(&chained[0].status) == RRPC_EREMOTE);
    check_expects("chained", chained + 1, 99);

    /* A timeout on the application's loop. */
    static expect t;
    t.kind = K_TIMEOUT;
    atomic_init(&t.calls, 0);
    double t0 = rrpc__monotonic();
    CHECK(start_call(a, &t, 0.2) == RRPC_OK);
    CHECK(run_until(app_base, 2101, 5));
    double took = rrpc__monotonic() - t0;
    CHECK(took >= 0.19 && took < 1.0);
    check_expects("app timeout", &t, 1);
    event_base_loop(app_base, EVLOOP_NONBLOCK); /* sends the LREM */
    rrpc__sleep(0.05);
    CHECK(cmd_int(2, "LLEN", "nobody-serves-this", NULL) == 0);

    /* Close with calls pending: each is cancelled, inside close. */
    static expect pend[200];
    for (size_t i = 0; i < 200; i++) {
        pend[i].kind = K_CANCEL;
        atomic_init(&pend[i].calls, 0);
    }
    for (size_t i = 0; i < 200; i++) {
        CHECK(start_call(a, &pend[i], 10) == RRPC_OK);
        if (i == 100)
            event_base_loop(app_base, EVLOOP_NONBLOCK); /* half of them sent */
    }
    int before = atomic_load(&done_count);
    rrpc_async_close(a);
    CHECK(atomic_load(&done_count) == before + 200);
    check_expects("app close", pend, 200);
    /* The base is the application's: it still works. */
    CHECK(event_base_loop(app_base, EVLOOP_NONBLOCK) >= 0);
    event_base_free(app_base);
    rrpc__reply_free(cmd(2, "DEL", "nobody-serves-this"));
}

/* A group the broker refuses (RPUSH onto a key that holds a string) fails
 * exactly its calls, once each, with RRPC_EREDIS and Redis's reason; the
 * client keeps working for other services. */
static char refused_msg[256];

static void on_refused(int status, json_t *result, json_t *error, void *udata)
{
    if (status == RRPC_EREDIS && !result && !error)
        snprintf(refused_msg, sizeof refused_msg, "%s", rrpc_async_errmsg(app_client));
    on_expect(status, result, error, udata);
}

static void test_refused_group(void)
{
    static expect es[3];
    init_expects(es, 3, 0);
    es[2].kind = K_ADD;
    atomic_store(&done_count, 0);
    rrpc__reply_free(cmd(3, "SET", "at-not-a-list", "x"));
    app_base = event_base_new();
    rrpc_async *a = app_client = open_async(app_base, 0);
    if (a == NULL)
        return;
    json_t *params = json_pack("[i,i]", 1, 2);
    for (int i = 0; i < 2; i++)
        CHECK(rrpc_async_call(a, "at-not-a-list", "add", params, 5, on_refused, &es[i]) == RRPC_OK);
    json_decref(params);
    CHECK(start_call(a, &es[2], 5) == RRPC_OK);
    CHECK(run_until(app_base, 3, 10));
    for (int i = 0; i < 2; i++)
        CHECK(atomic_load(&es[i].calls) == 1 && atomic_load(&es[i].status) == RRPC_EREDIS);
    check_expects("refused group, other service", &es[2], 1);
    CHECK(strstr(refused_msg, "Redis refused the request: WRONGTYPE") != NULL);
    rrpc_async_close(a);
    event_base_free(app_base);
    rrpc__reply_free(cmd(2, "DEL", "at-not-a-list"));
}

static void test_open_errors(void)
{
    rrpc_async_options o;
    rrpc_async_options_init(&o);
    o.url = "redis://127.0.0.1:1";
    o.connect_timeout_s = 1;
    rrpc_async *a = (rrpc_async *)&o;
    char err[256] = "";
    CHECK(rrpc_async_open(&a, &o, err, sizeof err) == RRPC_ECONNECT);
    CHECK(a == NULL && strstr(err, "127.0.0.1:1") != NULL);
    o.url = "nonsense://x";
    CHECK(rrpc_async_open(&a, &o, err, sizeof err) == RRPC_EURL);
    rrpc_async_close(NULL);
}

/* ---- throughput ------------------------------------------------------------ */

typedef struct bench_thread {
    rrpc_async *a;
    const char *service;
    sem_t window;
    atomic_long calls;
    atomic_long errors;
    atomic_long cancelled;
    double end;
} bench_thread;

static void on_bench(int status, json_t *result, json_t *error, void *udata)
{
    (void)result;
    (void)error;
    bench_thread *b = udata;
    if (status == RRPC_OK)
        atomic_fetch_add_explicit(&b->calls, 1, memory_order_relaxed);
    else if (status == RRPC_ECANCELED)
        atomic_fetch_add_explicit(&b->cancelled, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&b->errors, 1, memory_order_relaxed);
    sem_post(&b->window);
}

static void *bench_main(void *arg)
{
    bench_thread *b = arg;
    json_t *params = json_pack("[i,i]", 1, 2);
    long i = 0;
    while (rrpc__monotonic() < b->end) {
        sem_wait(&b->window);
        json_array_set_new(params, 0, json_integer(i++));
        if (rrpc_async_call(b->a, b->service, "add", params, 10, on_bench, b) != RRPC_OK) {
            atomic_fetch_add(&b->errors, 1);
            sem_post(&b->window);
        }
    }
    json_decref(params);
    return NULL;
}

static int bench(const char *service, double seconds, int nthreads, int window, int nclients)
{
    rrpc_async *clients[16] = {0};
    bench_thread *bs = calloc((size_t)nthreads, sizeof *bs);
    pthread_t *ts = calloc((size_t)nthreads, sizeof *ts);
    if (nclients < 1 || nclients > 16)
        nclients = 1;
    for (int i = 0; i < nclients; i++)
        if ((clients[i] = open_async(NULL, 0)) == NULL)
            return 1;
    double t0 = rrpc__monotonic();
    for (int i = 0; i < nthreads; i++) {
        bs[i].a = clients[i % nclients];
        bs[i].service = service;
        bs[i].end = t0 + seconds;
        sem_init(&bs[i].window, 0, (unsigned)window);
        pthread_create(&ts[i], NULL, bench_main, &bs[i]);
    }
    long calls = 0, errors = 0, cancelled = 0;
    for (int i = 0; i < nthreads; i++)
        pthread_join(ts[i], NULL);
    double took = rrpc__monotonic() - t0;
    for (int i = 0; i < nclients; i++)
        rrpc_async_close(clients[i]); /* the last window: cancelled, not counted */
    for (int i = 0; i < nthreads; i++) {
        calls += atomic_load(&bs[i].calls);
        errors += atomic_load(&bs[i].errors);
        cancelled += atomic_load(&bs[i].cancelled);
        sem_destroy(&bs[i].window);
    }
    printf("threads=%d window=%d clients=%d calls=%ld errors=%ld cancelled_at_close=%ld "
           "calls_per_s=%.0f\n",
           nthreads, window, nclients, calls, errors, cancelled, (double)calls / took);
    free(bs);
    free(ts);
    return 0;
}

/* ---- issue 9 (client side) ------------------------------------------------ */

/* Defect 12: a timeout of about 1e16 s (or infinity) means "no limit in
 * practice": the call waits for its (slow) answer instead of timing out at
 * once (libevent's clock overflowed), and its request carries a deadline a
 * worker can read.  Negative and NaN timeouts are refused.  Both for a
 * call's timeout and for the client's default. */
static void test_huge_timeouts(void)
{
    static const double huge[] = {1e16, 1e300, INFINITY, 1e9};
    static expect es[8];
    atomic_store(&done_count, 0);
    rrpc_async_options o;
    rrpc_async_options_init(&o);
    o.connect_timeout_s = INFINITY; /* no undefined conversion either */
    rrpc_async *a = NULL;
    CHECK(rrpc_async_open(&a, &o, NULL, 0) == RRPC_OK);
    rrpc_async_close(a);
    a = NULL;
    o.connect_timeout_s = 5;
    o.timeout_s = 1e16; /* the default of calls that pass 0 */
    CHECK(rrpc_async_open(&a, &o, NULL, 0) == RRPC_OK);
    if (a == NULL)
        return;
    json_t *slow = json_pack("[i]", 150);
    for (int i = 0; i < 5; i++) {
        es[i].kind = K_ANY;
        atomic_init(&es[i].calls, 0);
        atomic_init(&es[i].status, 1);
        CHECK(rrpc_async_call(a, SERVICE, "sleep", slow, i < 4 ? huge[i] : 0, on_expect, &es[i]) ==
              RRPC_OK);
    }
    CHECK(wait_done(5, 10));
    for (int i = 0; i < 5; i++) {
        if (atomic_load(&es[i].status) != RRPC_OK)
            fprintf(stderr, "huge timeout %d: %s\n", i, rrpc_strerror(atomic_load(&es[i].status)));
        CHECK(atomic_load(&es[i].status) == RRPC_OK);
    }
    CHECK(rrpc_async_call(a, SERVICE, "sleep", slow, NAN, on_expect, &es[5]) == RRPC_EINVAL);
    CHECK(rrpc_async_call(a, SERVICE, "sleep", slow, -INFINITY, on_expect, &es[5]) == RRPC_EINVAL);
    CHECK(rrpc_async_call(a, SERVICE, "sleep", slow, -0.5, on_expect, &es[5]) == RRPC_EINVAL);
    json_decref(slow);
    rrpc_async_close(a);
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2], atof(argv[3]), argc > 4 ? atoi(argv[4]) : 4,
                     argc > 5 ? atoi(argv[5]) : 256, argc > 6 ? atoi(argv[6]) : 1);
    /* CLIENT KILL makes the server's workers write to dead sockets. */
    signal(SIGPIPE, SIG_IGN);
    if (raw_open() != 0)
        return 1;
    running srv;
    start_server(&srv);
    test_open_errors();
    test_threads_many_in_flight();
    test_threads_timeout_withdraws();
    test_threads_close_cancels();
    test_max_in_flight_and_args();
    test_app_base();
    test_refused_group();
    test_connection_loss();
    test_huge_timeouts();
    stop_server(&srv);
    raw_close();
    return check_report();
}
