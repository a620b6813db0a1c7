/* test_async_failfast.c -- the async client's fail fast and max_queue
 * (rrpc_async_options.fail_fast, PROTOCOL.md section 9), on a real
 * redis-server started by harness/with-redis.sh ($REDIS_URL).
 *
 * - A service whose server stopped (its registry entry removed) fails a
 *   fresh client's call at once with RRPC_EUNAVAILABLE, nothing pushed;
 *   a notification to it is still pushed.
 * - Calls waiting for a service whose last worker's heartbeat expires end
 *   with RRPC_EUNAVAILABLE within about two seconds, their requests taken
 *   back.
 * - A service with max_queue 5 whose one worker is busy: calls beyond the
 *   fifth fail at once with RRPC_EOVERLOADED (high ones too), the queue
 *   never holds more than 5, the refusals are counted as shed, and the 5
 *   queued are answered.
 * - fail_fast = 0 waits for the stopped service until the timeout, as
 *   before, its request queued meanwhile.
 * - A service that never registered is waited on, and a seed-style worker
 *   answers it.
 * Both loop modes: the client's own thread (most tests) and an
 * application's event base (the waiting calls).
 */
#include "core/clock.h"
#include "harness.h"
#include "redis/conn.h"
#include "redis/reply.h"

#include <event2/event.h>

#include <stdatomic.h>

/* ---- calls and their outcomes ------------------------------------------- */

typedef struct outcome {
    atomic_int calls; /* how often the callback ran */
    atomic_int status;
    double at; /* monotonic time of the (first) callback */
} outcome;

static atomic_int done_count;

static void on_done(int status, json_t *result, json_t *error, void *udata)
{
    (void)result;
    (void)error;
    outcome *o = udata;
    if (atomic_fetch_add(&o->calls, 1) == 0)
        o->at = rrpc__monotonic();
    atomic_store(&o->status, status);
    atomic_fetch_add(&done_count, 1);
}

static void reset(outcome *os, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        atomic_init(&os[i].calls, 0);
        atomic_init(&os[i].status, 1);
        os[i].at = 0;
    }
    atomic_store(&done_count, 0);
}

static int call_add(rrpc_async *a, const char *service, double timeout_s, int priority, outcome *o)
{
    json_t *params = json_pack("[i,i]", 1, 2);
    rrpc_call_options co;
    rrpc_call_options_init(&co);
    co.timeout_s = timeout_s;
    co.priority = priority;
    int rc = rrpc_async_call_with(a, service, "add", params, &co, on_done, o);
    json_decref(params);
    return rc;
}

static int wait_done(int target, double seconds)
{
    WAIT_UNTIL(atomic_load(&done_count) >= target, seconds);
    return atomic_load(&done_count) >= target;
}

static rrpc_async *open_async(void *base, int fail_fast)
{
    rrpc_async_options o;
    rrpc_async_options_init(&o);
    CHECK(o.fail_fast == 1);
    o.event_base = base;
    o.fail_fast = fail_fast;
    return open_async_with(&o);
}

/* ---- services ------------------------------------------------------------- */

static rrpc_server *new_server(const char *service, long max_queue)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = 1;
    o.handle_signals = 0;
    o.heartbeat_interval_s = 0.2;
    o.heartbeat_ttl_s = 1.0;
    o.max_queue = max_queue;
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    CHECK(rrpc_server_register(s, "add", m_add, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(s, "sleep", m_sleep, NULL, NULL) == RRPC_OK);
    return s;
}

static long long llen(const char *key)
{
    return cmd_int(2, "LLEN", key, NULL);
}

/* The three lists of SERVICE's queue (PROTOCOL.md section 7), together. */
static long long queued(const char *service)
{
    char high[128], low[128];
    snprintf(high, sizeof high, "{%s}:high", service);
    snprintf(low, sizeof low, "{%s}:low", service);
    return llen(service) + llen(high) + llen(low);
}

/* Redis's clock, ms. */
static long long redis_ms(void)
{
    rrpc__reply *r = cmd(1, "TIME");
    long long ms = rrpc__reply_time_ms(r);
    rrpc__reply_free(r);
    return ms;
}

/* The options of a program built before fail_fast (up to
 * resend_on_reconnect): it must get the default, 1. */
typedef struct old_async_options {
    size_t size;
    const char *url, *key_prefix;
    double timeout_s, connect_timeout_s;
    void *event_base;
    size_t max_in_flight;
    int resend_on_reconnect;
} old_async_options;

/* ---- tests ------------------------------------------------------------------ */

/* A registered service whose server stopped: a fresh client's first call
 * (which waits for the first read of the registry) and a later one fail
 * at once, nothing pushed; a notification is not checked. */
static void test_unavailable_at_once(void)
{
    running r;
    run_server(&r, new_server("aff", 0));
    WAIT_UNTIL(cmd_int(2, "ZCARD", "{aff}:workers", NULL) == 1, 5);
    stop_server(&r); /* a graceful stop takes the worker's entry out */
    CHECK(cmd_int(2, "ZCARD", "{aff}:workers", NULL) == 0);
    CHECK(cmd_int(2, "EXISTS", "{aff}:config", NULL) == 1);

    rrpc_async *a = open_async(NULL, 1);
    outcome o[2];
    reset(o, 2);
    double t0 = rrpc__monotonic();
    CHECK(call_add(a, "aff", 10, RRPC_PRIORITY_NORMAL, &o[0]) == RRPC_OK);
    CHECK(wait_done(1, 2 * time_scale()));
    CHECK(atomic_load(&o[0].status) == RRPC_EUNAVAILABLE);
    CHECK(o[0].at - t0 < 0.5 * time_scale());
    CHECK(call_add(a, "aff", 10, RRPC_PRIORITY_NORMAL, &o[1]) == RRPC_OK);
    CHECK(wait_done(2, 2 * time_scale()));
    CHECK(atomic_load(&o[1].status) == RRPC_EUNAVAILABLE);
    CHECK(atomic_load(&o[0].calls) == 1 && atomic_load(&o[1].calls) == 1);
    CHECK(llen("aff") == 0); /* nothing pushed */
    /* Notifications are not checked: pushed as ever. */
    CHECK(rrpc_async_notify(a, "aff", "add", NULL) == RRPC_OK);
    WAIT_UNTIL(llen("aff") == 1, 2 * time_scale());
    CHECK(llen("aff") == 1);
    rrpc_async_close(a);
    rrpc__reply_free(cmd(2, "DEL", "aff"));

    /* An older program's options, which have no fail_fast: on. */
    old_async_options *old = malloc(sizeof *old);
    rrpc_async_options_init_sized((rrpc_async_options *)(void *)old, sizeof *old);
    char err[256];
    CHECK(rrpc_async_open(&a, (const rrpc_async_options *)(void *)old, err, sizeof err) == RRPC_OK);
    free(old);
    reset(o, 1);
    CHECK(call_add(a, "aff", 10, RRPC_PRIORITY_NORMAL, &o[0]) == RRPC_OK);
    CHECK(wait_done(1, 2 * time_scale()));
    CHECK(atomic_load(&o[0].status) == RRPC_EUNAVAILABLE);
    rrpc_async_close(a);
}

/* fail_fast = 0: the same service is waited on until the timeout, its
 * request queued meanwhile and withdrawn at the end, as before. */
static void test_fail_fast_off(void)
{
    rrpc_async *a = open_async(NULL, 0);
    outcome o;
    reset(&o, 1);
    double timeout = 0.8 * time_scale(), t0 = rrpc__monotonic();
    CHECK(call_add(a, "aff", timeout, RRPC_PRIORITY_NORMAL, &o) == RRPC_OK);
    WAIT_UNTIL(llen("aff") == 1, timeout * 0.6);
    CHECK(llen("aff") == 1);
    CHECK(wait_done(1, timeout + 2 * time_scale()));
    CHECK(atomic_load(&o.status) == RRPC_ETIMEDOUT);
    CHECK(o.at - t0 >= timeout - 0.05);
    WAIT_UNTIL(llen("aff") == 0, 1);
    CHECK(llen("aff") == 0);
    rrpc_async_close(a);
}

/* Calls waiting (on an application's base) when the last worker's
 * heartbeat expires end with RRPC_EUNAVAILABLE within about two seconds,
 * their requests taken back, each callback once. */
static void test_waiting_calls_fail(void)
{
    double life = 1.0 * time_scale(); /* of the worker's last heartbeat */
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%lld", redis_ms() + (long long)(life * 1000));
    rrpc__reply_free(cmd(4, "HSET", "{affw}:config", "max_queue", "0"));
    rrpc__reply_free(cmd(4, "ZADD", "{affw}:workers", deadline, "w1"));
    struct event_base *base = event_base_new();
    rrpc_async *a = open_async(base, 1);
    enum { N = 20 };
    outcome o[N];
    reset(o, N);
    double t0 = rrpc__monotonic();
    for (int i = 0; i < N; i++)
        CHECK(call_add(a, "affw", 20, i % 4 == 0 ? RRPC_PRIORITY_HIGH : RRPC_PRIORITY_NORMAL,
                       &o[i]) == RRPC_OK);
    double until = rrpc__monotonic() + life / 2;
    while (rrpc__monotonic() < until)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(atomic_load(&done_count) == 0); /* a worker is alive: they wait */
    CHECK(queued("affw") == N);
    until = rrpc__monotonic() + life + 5 * time_scale();
    while (atomic_load(&done_count) < N && rrpc__monotonic() < until)
        event_base_loop(base, EVLOOP_ONCE);
    CHECK(atomic_load(&done_count) == N);
    for (int i = 0; i < N; i++) {
        CHECK(atomic_load(&o[i].calls) == 1);
        CHECK(atomic_load(&o[i].status) == RRPC_EUNAVAILABLE);
        /* The heartbeat expired LIFE in; noticed within about 1.5 s more. */
        CHECK(o[i].at - t0 > life - 0.1);
        CHECK(o[i].at - t0 < life + 2.0 * time_scale());
    }
    until = rrpc__monotonic() + 1;
    while (queued("affw") != 0 && rrpc__monotonic() < until)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(queued("affw") == 0);
    rrpc_async_close(a);
    event_base_free(base);
    rrpc__reply_free(cmd(3, "DEL", "{affw}:config", "{affw}:workers"));
}

/* max_queue 5, the one worker busy: 5 calls queue, the next fail at once
 * with RRPC_EOVERLOADED (normal and high), counted as shed; the 5 are
 * answered once the worker is free. */
static void test_max_queue(void)
{
    running r;
    run_server(&r, new_server("affq", 5));
    WAIT_UNTIL(cmd_int(2, "ZCARD", "{affq}:workers", NULL) == 1, 5);
    rrpc_async *a = open_async(NULL, 1);
    /* The view is read before the first calls go: a warm-up call. */
    outcome warm;
    reset(&warm, 1);
    CHECK(call_add(a, "affq", 5, RRPC_PRIORITY_NORMAL, &warm) == RRPC_OK);
    CHECK(wait_done(1, 5));
    CHECK(atomic_load(&warm.status) == RRPC_OK);
    json_t *ms = json_pack("[i]", (int)(1200 * time_scale()));
    CHECK(rrpc_async_notify(a, "affq", "sleep", ms) == RRPC_OK); /* the worker is busy */
    json_decref(ms);
    WAIT_UNTIL(llen("affq") == 0, 2);
    rrpc__sleep(0.05);
    enum { N = 9 };
    outcome o[N];
    reset(o, N);
    double t0 = rrpc__monotonic();
    for (int i = 0; i < N; i++)
        CHECK(call_add(a, "affq", 10 * time_scale(),
                       i < 7 ? RRPC_PRIORITY_NORMAL : RRPC_PRIORITY_HIGH, &o[i]) == RRPC_OK);
    CHECK(wait_done(N - 5, 1 * time_scale()));
    CHECK(queued("affq") == 5);
    int overloaded = 0;
    for (int i = 0; i < N; i++)
        if (atomic_load(&o[i].calls) == 1 && atomic_load(&o[i].status) == RRPC_EOVERLOADED) {
            overloaded++;
            CHECK(i >= 5); /* the first five fit */
            CHECK(o[i].at - t0 < 0.5 * time_scale());
        }
    CHECK(overloaded == N - 5);
    rrpc__reply *shed = cmd(3, "HGET", "affq:stats", "shed");
    CHECK(rrpc__reply_ll(shed) == N - 5);
    rrpc__reply_free(shed);
    CHECK(wait_done(N, 5 * time_scale()));
    for (int i = 0; i < 5; i++)
        CHECK(atomic_load(&o[i].status) == RRPC_OK);
    for (int i = 0; i < N; i++)
        CHECK(atomic_load(&o[i].calls) == 1);
    rrpc_async_close(a);
    stop_server(&r);
}

/* A seed-style worker: answers one request of LIST, knowing nothing of
 * the registry. */
static void *seed_worker(void *arg)
{
    const char *list = arg;
    rrpc__url url;
    rrpc__conn *c = NULL;
    char err[256];
    rrpc__url_parse(&url, NULL, err, sizeof err);
    rrpc__conn_open(&c, &url, 2, err, sizeof err);
    rrpc__url_free(&url);
    rrpc__reply *r = NULL;
    if (rrpc__conn_appendv(c, 3, "BLPOP", list, "5") == RRPC_OK &&
        rrpc__conn_read(c, &r) == RRPC_OK && rrpc__reply_count(r) == 2) {
        json_t *req = json_loads(rrpc__reply_str(rrpc__reply_element(r, 1), NULL), 0, NULL);
        json_t *resp = json_pack("{s:s, s:i, s:O}", "jsonrpc", "2.0", "result", 3, "id",
                                 json_object_get(req, "id"));
        char *text = json_dumps(resp, JSON_COMPACT);
        rrpc__reply *p = NULL;
        rrpc__conn_appendv(c, 3, "RPUSH", json_string_value(json_object_get(req, "reply_to")),
                           text);
        rrpc__conn_read(c, &p);
        rrpc__reply_free(p);
        free(text);
        json_decref(resp);
        json_decref(req);
    }
    rrpc__reply_free(r);
    rrpc__conn_close(c);
    return NULL;
}

/* A service that never registered is waited on, as before. */
static void test_unregistered_waited_on(void)
{
    rrpc_async *a = open_async(NULL, 1);
    outcome o[2];
    reset(o, 2);
    double t0 = rrpc__monotonic();
    CHECK(call_add(a, "affnobody", 0.5, RRPC_PRIORITY_NORMAL, &o[0]) == RRPC_OK);
    CHECK(wait_done(1, 3 * time_scale()));
    CHECK(atomic_load(&o[0].status) == RRPC_ETIMEDOUT); /* not EUNAVAILABLE */
    CHECK(o[0].at - t0 >= 0.45);
    pthread_t t;
    pthread_create(&t, NULL, seed_worker, "affseed");
    CHECK(call_add(a, "affseed", 5, RRPC_PRIORITY_NORMAL, &o[1]) == RRPC_OK);
    CHECK(wait_done(2, 6));
    CHECK(atomic_load(&o[1].status) == RRPC_OK);
    pthread_join(t, NULL);
    rrpc_async_close(a);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_unavailable_at_once();
    test_fail_fast_off();
    test_waiting_calls_fail();
    test_max_queue();
    test_unregistered_waited_on();
    raw_close();
    return check_report();
}
