/* test_amqp_async.c -- the async client over AMQP (src/amqp/async_amqp.c)
 * against the private RabbitMQ node of tests/harness/with-rabbitmq.sh and a
 * calc-server serving "calc" on it (test_amqp_async.sh starts both).
 *
 * What it pins down: thousands of calls in flight on the client's own loop
 * and on an application's event base get their own results, each callback
 * exactly once; a timeout fires on time, and the request's expiration
 * takes it out of a queue nobody serves; a notification is published
 * plainly (no expiration); cancel runs the callback once and a late answer
 * does not run it again; a service with no queue fails at once with
 * RRPC_EUNAVAILABLE; a priority is refused; when the broker closes every
 * connection the calls in flight fail once with RRPC_ECONNECT -- or, with
 * resend_on_reconnect, are sent again and answered -- and the client comes
 * back by itself; when the broker stops, calls in flight fail once, new
 * ones are refused, a client closes while it reconnects, and calls work
 * again once it is started; close with calls pending cancels each once.
 * Also: calls are published persistent (delivery_mode 2) as the sync
 * caller's; a handler served over AMQP gets RRPC_ENOTSUP from
 * rrpc_request_add_effect (no Redis to apply effects on).
 *
 * Usage: test_amqp_async   ($RRPC_TEST_AMQP_URL, $RRPC_TEST_AMQP_CTL)
 */
#include "check.h"

#include <rrpc/rrpc.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <event2/event.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_QUEUE "amqasync_idle" /* declared here, never consumed */

static const char *url;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

#define WAIT_UNTIL(cond, seconds)                                                                  \
    do {                                                                                           \
        double until_ = now_s() + (seconds);                                                       \
        while (!(cond) && now_s() < until_)                                                        \
            sleep_s(0.02);                                                                         \
    } while (0)

/* ---- one expectation per call, counted by its callback ------------------ */

typedef struct expect {
    json_int_t sum;    /* the result expected with RRPC_OK */
    int want;          /* the status expected */
    atomic_int calls;  /* how often the callback ran */
    atomic_int status; /* its last status */
    atomic_int ok;     /* the outcome matched */
    double at;         /* when the callback ran (monotonic) */
    char msg[160];
} expect;

static atomic_int done;

static void on_call(int status, json_t *result, json_t *error, void *udata)
{
    expect *e = udata;
    (void)error;
    int ok =
        status == e->want &&
        (status != RRPC_OK || (json_is_integer(result) && json_integer_value(result) == e->sum));
    atomic_store(&e->status, status);
    atomic_store(&e->ok, ok);
    e->at = now_s();
    atomic_fetch_add(&e->calls, 1);
    atomic_fetch_add(&done, 1);
}

static expect *expects(size_t n, int want)
{
    expect *es = calloc(n, sizeof *es);
    for (size_t i = 0; i < n; i++)
        es[i].want = want;
    return es;
}

/* Every callback ran once, with the outcome expected. */
static void check_all(const char *what, expect *es, size_t n)
{
    size_t once = 0, ok = 0;
    for (size_t i = 0; i < n; i++) {
        once += atomic_load(&es[i].calls) == 1;
        ok += atomic_load(&es[i].ok) != 0;
    }
    if (!CHECK(once == n && ok == n))
        fprintf(stderr, "  %s: %zu of %zu callbacks ran once, %zu as expected (first status %d)\n",
                what, once, n, ok, atomic_load(&es[0].status));
}

static rrpc_async *open_async(void *base, int resend)
{
    rrpc_async_options o;
    rrpc_async_options_init(&o);
    o.url = url;
    o.event_base = base;
    o.resend_on_reconnect = resend;
    rrpc_async *a = NULL;
    char err[256];
    if (rrpc_async_open(&a, &o, err, sizeof err) != RRPC_OK)
        fprintf(stderr, "rrpc_async_open: %s\n", err);
    return a;
}

static int call_add(rrpc_async *a, expect *e, json_int_t x, double timeout_s)
{
    e->sum = x + 1;
    json_t *p = json_pack("[II]", x, (json_int_t)1);
    int rc = rrpc_async_call(a, "calc", "add", p, timeout_s, on_call, e);
    json_decref(p);
    return rc;
}

static int call_sleep(rrpc_async *a, expect *e, int ms, double timeout_s)
{
    e->sum = ms;
    json_t *p = json_pack("[i]", ms);
    int rc = rrpc_async_call(a, "calc", "sleep", p, timeout_s, on_call, e);
    json_decref(p);
    return rc;
}

/* ---- a raw AMQP connection, to look at a queue ------------------------- */

static amqp_connection_state_t raw;

static int raw_open(void)
{
    struct amqp_connection_info ci;
    char *copy = strdup(url);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK)
        return -1;
    if (ci.vhost[0] == '\0') /* "amqp://host/": librabbitmq reads "", RabbitMQ means "/" */
        ci.vhost = "/";
    raw = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(raw);
    int ok = sock && amqp_socket_open(sock, ci.host, ci.port) == AMQP_STATUS_OK &&
             amqp_login(raw, ci.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                        ci.user, ci.password)
                     .reply_type == AMQP_RESPONSE_NORMAL &&
             amqp_channel_open(raw, 1) != NULL;
    free(copy);
    return ok ? 0 : -1;
}

/* Declares QUEUE plainly (as the tutorial) and says how many messages it
 * holds; -1 on failure. */
static long queue_depth(const char *queue)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(raw, 1, amqp_cstring_bytes(queue), 0, 0, 0, 0, amqp_empty_table);
    return ok ? (long)ok->message_count : -1;
}

/* ---- the tests ---------------------------------------------------------- */

static void test_many_in_flight(void)
{
    enum { N = 3000 };
    rrpc_async *a = open_async(NULL, 0);
    if (!CHECK(a != NULL))
        return;
    expect *es = expects(N, RRPC_OK);
    atomic_store(&done, 0);
    int accepted = 0;
    for (int i = 0; i < N; i++)
        accepted += call_add(a, &es[i], i, 20) == RRPC_OK;
    CHECK_EQ_INT(accepted, N);
    WAIT_UNTIL(atomic_load(&done) >= N, 30);
    check_all("3000 calls in flight (own loop)", es, N);
    rrpc_async_close(a);
    free(es);
}

static void test_app_base(void)
{
    enum { N = 1000 };
    struct event_base *base = event_base_new();
    rrpc_async *a = open_async(base, 0);
    if (!CHECK(a != NULL)) {
        event_base_free(base);
        return;
    }
    expect *es = expects(N, RRPC_OK);
    atomic_store(&done, 0);
    for (int i = 0; i < N; i++)
        call_add(a, &es[i], 1000 + i, 20);
    double until = now_s() + 30;
    while (atomic_load(&done) < N && now_s() < until)
        event_base_loop(base, EVLOOP_ONCE);
    check_all("1000 calls on the application's event base", es, N);
    rrpc_async_close(a);
    event_base_free(base);
    free(es);
}

static void test_timeout_and_expiration(void)
{
    rrpc_async *a = open_async(NULL, 0);
    if (!CHECK(a != NULL))
        return;
    /* A call that takes longer than its timeout. */
    expect *e = expects(1, RRPC_ETIMEDOUT);
    atomic_store(&done, 0);
    double t0 = now_s();
    CHECK(call_sleep(a, e, 1500, 0.3) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&done) >= 1, 5);
    check_all("a call past its timeout", e, 1);
    double took = e->at - t0;
    if (!CHECK(took >= 0.29 && took < 1.2))
        fprintf(stderr, "  the timeout of 0.3 s fired after %.3f s\n", took);
    /* A notification to a queue nobody serves stays there: no expiration. */
    CHECK(queue_depth(IDLE_QUEUE) == 0);
    json_t *p = json_pack("[ii]", 1, 2);
    CHECK(rrpc_async_notify(a, IDLE_QUEUE, "add", p) == RRPC_OK);
    WAIT_UNTIL(queue_depth(IDLE_QUEUE) == 1, 3);
    CHECK_EQ_INT(queue_depth(IDLE_QUEUE), 1);
    amqp_queue_purge(raw, 1, amqp_cstring_bytes(IDLE_QUEUE));
    /* A call there times out, and its request expires with it. */
    memset(e, 0, sizeof *e);
    e->want = RRPC_ETIMEDOUT;
    atomic_store(&done, 0);
    CHECK(rrpc_async_call(a, IDLE_QUEUE, "add", p, 0.4, on_call, e) == RRPC_OK);
    sleep_s(0.15);
    CHECK_EQ_INT(queue_depth(IDLE_QUEUE), 1);
    WAIT_UNTIL(atomic_load(&done) >= 1, 5);
    check_all("a call to a queue nobody serves", e, 1);
    WAIT_UNTIL(queue_depth(IDLE_QUEUE) == 0, 2);
    if (!CHECK_EQ_INT(queue_depth(IDLE_QUEUE), 0))
        fprintf(stderr, "  the timed-out request did not expire from the queue\n");
    json_decref(p);
    rrpc_async_close(a);
    free(e);
}

static void test_cancel(void)
{
    rrpc_async *a = open_async(NULL, 0);
    if (!CHECK(a != NULL))
        return;
    expect *e = expects(1, RRPC_ECANCELED);
    atomic_store(&done, 0);
    uint64_t handle = 0;
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.timeout_s = 5;
    o.handle = &handle;
    json_t *p = json_pack("[i]", 300);
    CHECK(rrpc_async_call_with(a, "calc", "sleep", p, &o, on_call, e) == RRPC_OK);
    json_decref(p);
    sleep_s(0.05);
    CHECK(handle != 0 && rrpc_async_cancel(a, handle) == RRPC_OK);
    CHECK_EQ_INT(atomic_load(&e->calls), 1); /* run when cancel returns */
    CHECK(rrpc_async_cancel(a, handle) == RRPC_EINVAL);
    sleep_s(0.6); /* the worker's answer arrives, and is dropped */
    check_all("a cancelled call", e, 1);
    rrpc_async_close(a);
    free(e);
}

static void test_refusals(void)
{
    rrpc_async *a = open_async(NULL, 0);
    if (!CHECK(a != NULL))
        return;
    enum { N = 20, M = 10 };
    expect *es = expects(N, RRPC_EUNAVAILABLE), *adds = expects(M, RRPC_OK);
    expect *e = expects(1, RRPC_EINVAL);
    atomic_store(&done, 0);
    json_t *p = json_pack("[ii]", 1, 2);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.priority = RRPC_PRIORITY_HIGH;
    double t0 = now_s();
    /* Calls that succeed, one with a priority (refused, as the sync client
     * does, with no publish), and calls to a service with no queue (they
     * come back at once) -- handed over together, so that their groups
     * wait for the broker side by side. */
    for (int i = 0; i < M; i++)
        CHECK(call_add(a, &adds[i], i, 10) == RRPC_OK);
    CHECK(rrpc_async_call_with(a, "calc", "add", p, &o, on_call, e) == RRPC_OK);
    for (int i = 0; i < N; i++)
        CHECK(rrpc_async_call(a, "amqasync_nobody", "add", p, 10, on_call, &es[i]) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&done) >= N + M + 1, 10);
    double took = now_s() - t0;
    check_all("calls beside the refused ones", adds, M);
    check_all("a call with a priority", e, 1);
    check_all("calls to a service with no queue", es, N);
    if (!CHECK(took < 1.0))
        fprintf(stderr, "  a service with no queue failed after %.3f s, not at once\n", took);
    json_decref(p);
    rrpc_async_close(a);
    free(es);
    free(adds);
    free(e);
}

/* Runs rabbitmqctl on the node with ARGS. */
static void ctl(const char *args)
{
    const char *path = getenv("RRPC_TEST_AMQP_CTL");
    char cmdline[1024];
    snprintf(cmdline, sizeof cmdline, "%s -q %s >/dev/null", path ? path : "false", args);
    if (!CHECK(system(cmdline) == 0))
        fprintf(stderr, "  rabbitmqctl %s failed\n", args);
}

/* The broker closes every connection (calc-server's too) while calls run. */
static void close_all_connections(void)
{
    ctl("close_all_connections 'test: links closed'");
}

/* Makes add calls on A until one succeeds, for up to about SECONDS. */
static void check_back(rrpc_async *a, const char *what, double seconds)
{
    expect *after = expects(1, RRPC_OK);
    double until = now_s() + seconds;
    while (!atomic_load(&after->ok) && now_s() < until) {
        memset(after, 0, sizeof *after);
        after->want = RRPC_OK;
        if (call_add(a, after, 41, 2) == RRPC_OK)
            WAIT_UNTIL(atomic_load(&after->calls) >= 1, 3);
        else
            sleep_s(0.1);
    }
    check_all(what, after, 1);
    free(after);
}

/* Calls that wait in a queue nobody serves. */
static void call_idle(rrpc_async *a, expect *es, size_t n)
{
    json_t *p = json_pack("[ii]", 1, 2);
    for (size_t i = 0; i < n; i++)
        CHECK(rrpc_async_call(a, IDLE_QUEUE, "add", p, 20, on_call, &es[i]) == RRPC_OK);
    json_decref(p);
}

static void test_connection_closed(void)
{
    enum { N = 100, K = 16 };
    rrpc_async *a = open_async(NULL, 0), *r = open_async(NULL, 1);
    if (!CHECK(a != NULL && r != NULL))
        return;
    expect *lost = expects(N, RRPC_ECONNECT), *kept = expects(K, RRPC_OK);
    atomic_store(&done, 0);
    call_idle(a, lost, N);
    for (int i = 0; i < K; i++) /* calc-server's 8 workers run 8, 8 wait */
        call_sleep(r, &kept[i], 500 + i, 20);
    sleep_s(0.2);
    close_all_connections();
    WAIT_UNTIL(atomic_load(&done) >= N + K, 25);
    check_all("calls in flight when the broker closed the connection", lost, N);
    check_all("... the same with resend_on_reconnect: sent again, answered", kept, K);
    check_back(a, "a call after the reconnect", 10);
    sleep_s(0.5);
    check_all("... and none ran again", lost, N);
    check_all("... and none ran again (resent)", kept, K);
    rrpc_async_close(a);
    rrpc_async_close(r);
    free(lost);
    free(kept);
}

/* The broker stops (reconnects fail, with backoff) and starts again. */
static void test_broker_restart(void)
{
    enum { N = 50 };
    rrpc_async *a = open_async(NULL, 0), *b = open_async(NULL, 0);
    if (!CHECK(a != NULL && b != NULL))
        return;
    expect *lost = expects(N, RRPC_ECONNECT);
    atomic_store(&done, 0);
    call_idle(a, lost, N);
    sleep_s(0.1);
    ctl("stop_app");
    WAIT_UNTIL(atomic_load(&done) >= N, 10);
    check_all("calls in flight when the broker stopped", lost, N);
    /* Meanwhile calls are refused at once, not queued. */
    expect *e = expects(1, RRPC_OK);
    CHECK_EQ_INT(call_add(a, e, 1, 5), RRPC_ECONNECT);
    sleep_s(0.4); /* a few failed reconnects */
    double t0 = now_s();
    rrpc_async_close(b); /* while it reconnects */
    CHECK(now_s() - t0 < 2.0);
    ctl("start_app");
    check_back(a, "a call after the broker started again", 20);
    CHECK_EQ_INT(atomic_load(&e->calls), 0);
    rrpc_async_close(a);
    free(lost);
    free(e);
}

/* A call's request sits in a queue nobody serves: it was published
 * persistent (delivery_mode 2), as the sync caller's, so a reliable
 * service's durable queue keeps it over a broker restart -- with
 * resend_on_reconnect and without. */
static void test_calls_persistent(void)
{
    for (int resend = 0; resend <= 1; resend++) {
        rrpc_async *a = open_async(NULL, resend);
        if (!CHECK(a != NULL))
            return;
        amqp_queue_purge(raw, 1, amqp_cstring_bytes(IDLE_QUEUE));
        expect *e = expects(1, RRPC_ECANCELED);
        atomic_store(&done, 0);
        call_idle(a, e, 1);
        WAIT_UNTIL(queue_depth(IDLE_QUEUE) == 1, 3);
        amqp_rpc_reply_t r = amqp_basic_get(raw, 1, amqp_cstring_bytes(IDLE_QUEUE), 1);
        amqp_message_t m;
        int got = r.reply_type == AMQP_RESPONSE_NORMAL && r.reply.id == AMQP_BASIC_GET_OK_METHOD &&
                  amqp_read_message(raw, 1, &m, 0).reply_type == AMQP_RESPONSE_NORMAL;
        if (CHECK(got)) {
            int mode = (m.properties._flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
                           ? m.properties.delivery_mode
                           : 0;
            if (!CHECK_EQ_INT(mode, AMQP_DELIVERY_PERSISTENT))
                fprintf(stderr, "  an async call (resend_on_reconnect %d) was not persistent\n",
                        resend);
            amqp_destroy_message(&m);
        }
        rrpc_async_close(a);
        free(e);
    }
}

/* ---- rrpc_request_add_effect over AMQP: refused where the handler sees it */

#define EFFECTS_SERVICE "amqasync_effects"

/* Answers what rrpc_request_add_effect returned. */
static json_t *add_effect(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *argv[] = {"SET", "amqasync_effect", "1"};
    return json_integer(rrpc_request_add_effect(req, 3, argv));
}

static void *serve(void *server)
{
    rrpc_server_run(server);
    return NULL;
}

static void test_effects_refused(void)
{
    rrpc_server_options so;
    rrpc_server_options_init(&so);
    so.url = url;
    so.service = EFFECTS_SERVICE;
    so.workers = 1;
    so.handle_signals = 0;
    for (int reliable = 0; reliable <= 1; reliable++) {
        so.reliable = reliable;
        rrpc_server *srv = NULL;
        if (!CHECK(rrpc_server_new(&srv, &so) == RRPC_OK))
            return;
        CHECK(rrpc_server_register(srv, "effect", add_effect, NULL, NULL) == RRPC_OK);
        pthread_t t;
        pthread_create(&t, NULL, serve, srv);
        rrpc_client_options co;
        rrpc_client_options_init(&co);
        co.url = url;
        rrpc_client *c = NULL;
        char err[256];
        json_t *result = NULL;
        int rc = rrpc_client_open(&c, &co, err, sizeof err);
        if (CHECK(rc == RRPC_OK)) {
            double until = now_s() + 10; /* until the worker consumes */
            while ((rc = rrpc_call(c, EFFECTS_SERVICE, "effect", NULL, 5, &result, NULL)) ==
                       RRPC_EUNAVAILABLE &&
                   now_s() < until)
                sleep_s(0.05);
            CHECK_EQ_INT(rc, RRPC_OK);
            if (!CHECK(json_is_integer(result) && json_integer_value(result) == RRPC_ENOTSUP))
                fprintf(stderr, "  rrpc_request_add_effect over AMQP (reliable %d) returned %s\n",
                        reliable, json_is_integer(result) ? "not RRPC_ENOTSUP" : "nothing");
            json_decref(result);
            rrpc_client_close(c);
        }
        CHECK_EQ_STR(rrpc_strerror(RRPC_ENOTSUP), "not supported by this transport");
        rrpc_server_stop(srv);
        pthread_join(t, NULL);
        rrpc_server_free(srv);
        /* The next round declares it durable (reliable). */
        amqp_queue_delete(raw, 1, amqp_cstring_bytes(EFFECTS_SERVICE), 0, 0);
    }
}

static void test_close_with_calls_pending(void)
{
    enum { N = 200 };
    rrpc_async *a = open_async(NULL, 0);
    if (!CHECK(a != NULL))
        return;
    expect *es = expects(N, RRPC_ECANCELED);
    atomic_store(&done, 0);
    call_idle(a, es, N);
    sleep_s(0.1);
    double t0 = now_s();
    rrpc_async_close(a);
    double took = now_s() - t0;
    check_all("close with calls pending", es, N);
    if (!CHECK(took < 2.0))
        fprintf(stderr, "  close took %.3f s\n", took);
    amqp_queue_purge(raw, 1, amqp_cstring_bytes(IDLE_QUEUE));
    free(es);
}

int main(void)
{
    url = getenv("RRPC_TEST_AMQP_URL");
    if (url == NULL) {
        fprintf(stderr, "test_amqp_async: $RRPC_TEST_AMQP_URL is not set\n");
        return 2;
    }
    if (raw_open() != 0) {
        fprintf(stderr, "test_amqp_async: no raw AMQP connection to %s\n", url);
        return 2;
    }
    test_many_in_flight();
    test_app_base();
    test_timeout_and_expiration();
    test_cancel();
    test_refusals();
    test_calls_persistent();
    test_effects_refused();
    test_close_with_calls_pending();
    test_connection_closed();
    test_broker_restart();
    return check_report();
}
