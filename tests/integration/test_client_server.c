/* test_client_server.c -- the sync client against the threaded server, on a
 * real redis-server started by harness/with-redis.sh ($REDIS_URL).
 *
 * Each test pins one promise of docs/PROTOCOL.md or rrpc.h as seen from
 * outside: answers, JSON-RPC errors, timeouts that withdraw the request,
 * notifications that leave no key, expiring replies, dead letters, batches,
 * Redis errors that do not crash, concurrency and graceful stop.
 */
#include "core/clock.h"
#include "harness.h"
#include "redis/conn.h"

#include <math.h>

/* ---- a test service --------------------------------------------------- */

/* add with at most two parameters, so that a third is refused. */
static json_t *m_add_two(rrpc_request *req, void *udata)
{
    if (rrpc_param_count_max(req, 2))
        return NULL;
    return m_add(req, udata);
}

static json_t *m_fail(rrpc_request *req, void *udata)
{
    (void)udata;
    return rrpc_request_error(req, 42, "it failed", json_pack("{s:i}", "why", 7));
}

static json_t *m_crash_free(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    return NULL; /* no error set: the server must answer -32603 */
}

/* Runs the test service as SERVICE with WORKERS threads. */
static void start_server(running *r, const char *service, int workers)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = workers;
    o.handle_signals = 0;
    o.max_request_bytes = 4096;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    CHECK(rrpc_server_register(srv, "add", m_add_two, NULL, "a + b") == RRPC_OK);
    CHECK(rrpc_server_register(srv, "add", m_add_two, NULL, NULL) == RRPC_EEXIST);
    rrpc_server_register(srv, "fail", m_fail, NULL, NULL);
    rrpc_server_register(srv, "sleep", m_sleep, NULL, NULL);
    rrpc_server_register(srv, "null", m_crash_free, NULL, NULL);
    run_server(r, srv);
    /* The server starts on its own thread: wait until it is registered and
     * live, or fail fast would refuse the first calls -- the service's
     * config outlives a stopped server, and under valgrind the start of
     * the next one takes a while. */
    char zset[128];
    snprintf(zset, sizeof zset, "{%s}:workers", service);
    WAIT_UNTIL(cmd_int(2, "ZCARD", zset, NULL) == 1, 20);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_call_result(rrpc_client *c)
{
    json_t *params = json_pack("[i,i]", 2, 40), *result = NULL, *error = NULL;
    CHECK(rrpc_call(c, "t", "add", params, 5, &result, &error) == RRPC_OK);
    CHECK(json_integer_value(result) == 42 && error == NULL);
    json_decref(result);
    json_decref(params);
    params = json_pack("{s:i,s:i}", "a", 1, "b", 2);
    CHECK(rrpc_call(c, "t", "add", params, 5, &result, NULL) == RRPC_OK);
    CHECK(json_integer_value(result) == 3);
    json_decref(result);
    json_decref(params);
}

static void expect_remote(rrpc_client *c, const char *method, const char *params_text, int code)
{
    json_t *params = params_text ? json_loads(params_text, 0, NULL) : NULL;
    json_t *result = NULL, *error = NULL;
    int rc = rrpc_call(c, "t", method, params, 5, &result, &error);
    CHECK(rc == RRPC_EREMOTE);
    CHECK(result == NULL);
    CHECK(json_integer_value(json_object_get(error, "code")) == code);
    if (json_integer_value(json_object_get(error, "code")) != code)
        fprintf(stderr, "  %s%s: got code %lld\n", method, params_text ? params_text : "",
                (long long)json_integer_value(json_object_get(error, "code")));
    json_decref(error);
    json_decref(params);
}

static void test_remote_errors(rrpc_client *c)
{
    expect_remote(c, "nope", NULL, RRPC_JSONRPC_METHOD_NOT_FOUND);
    expect_remote(c, "add", "[1]", RRPC_JSONRPC_INVALID_PARAMS);
    expect_remote(c, "add", "[1, \"x\"]", RRPC_JSONRPC_INVALID_PARAMS);
    expect_remote(c, "add", "[1, 2, 3]", RRPC_JSONRPC_INVALID_PARAMS);
    expect_remote(c, "add", "{\"a\": 1}", RRPC_JSONRPC_INVALID_PARAMS);
    expect_remote(c, "null", NULL, RRPC_JSONRPC_INTERNAL_ERROR);
    json_t *result = NULL, *error = NULL;
    CHECK(rrpc_call(c, "t", "fail", NULL, 5, &result, &error) == RRPC_EREMOTE);
    CHECK(json_integer_value(json_object_get(json_object_get(error, "data"), "why")) == 7);
    CHECK(strcmp(json_string_value(json_object_get(error, "message")), "it failed") == 0);
    json_decref(error);
}

static void test_timeout_withdraws_request(rrpc_client *c)
{
    json_t *result = NULL;
    double t0 = rrpc__monotonic();
    int rc = rrpc_call(c, "nobody-serves-this", "add", NULL, 0.3, &result, NULL);
    double took = rrpc__monotonic() - t0;
    CHECK(rc == RRPC_ETIMEDOUT);
    CHECK(took >= 0.25 && took < 2.0);
    CHECK(cmd_int(2, "LLEN", "nobody-serves-this", NULL) == 0);
}

/* Keys other than service t's bookkeeping ({t}:..., t:stats), which its
 * heartbeat may create at any moment (the first stats flush, say). */
static long long keys_but_bookkeeping(void)
{
    static const char script[] =
        "local n = 0 for _, k in ipairs(redis.call('KEYS', '*')) do "
        "if k:sub(1, 4) ~= '{t}:' and k ~= 't:stats' then n = n + 1 end end return n";
    rrpc__reply *r = cmd(3, "EVAL", script, "0");
    long long v = r && rrpc__reply_type(r) == RRPC__REPLY_INTEGER ? rrpc__reply_integer(r) : -999;
    rrpc__reply_free(r);
    return v;
}

static void test_notification_leaves_no_key(rrpc_client *c)
{
    long long before = keys_but_bookkeeping();
    json_t *params = json_pack("[i]", 50);
    CHECK(rrpc_notify(c, "t", "sleep", params) == RRPC_OK);
    json_decref(params);
    rrpc__sleep(0.3);
    WAIT_UNTIL(cmd_int(2, "LLEN", "t", NULL) == 0, 10);
    CHECK(keys_but_bookkeeping() == before);
    CHECK(cmd_int(2, "LLEN", "t", NULL) == 0);
}

static void test_reply_key_expires(void)
{
    const char *req = "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],\"id\":7,"
                      "\"reply_to\":\"it:reply:ttl\"}";
    rrpc__reply_free(cmd(3, "RPUSH", "t", req));
    rrpc__sleep(0.3);
    long long ttl = cmd_int(2, "TTL", "it:reply:ttl", NULL);
    CHECK(ttl > 0 && ttl <= 60);
    rrpc__reply *r = cmd(2, "LPOP", "it:reply:ttl");
    CHECK(r && rrpc__reply_type(r) == RRPC__REPLY_STRING);
    if (r && rrpc__reply_type(r) == RRPC__REPLY_STRING)
        CHECK(strstr(rrpc__reply_str(r, NULL), "\"result\":2") != NULL);
    rrpc__reply_free(r);
}

static void test_dead_letters(rrpc_client *c)
{
    long long dead0 = cmd_int(2, "LLEN", "t:dead", NULL);
    rrpc__reply_free(cmd(3, "RPUSH", "t", "{not json"));
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rrpc__reply_free(cmd(3, "RPUSH", "t", big));
    /* The parser's error quotes the text near the error, here cut inside a
     * UTF-8 sequence: the reason is still recorded (found by fuzz_worker). */
    rrpc__reply_free(cmd(3, "RPUSH", "t", "{\"a\":\"\\u000\xcd\xac\"}"));
    /* A reply key of the wrong type: the reply script refuses it. */
    rrpc__reply_free(cmd(3, "SET", "it:string-key", "x"));
    rrpc__reply_free(cmd(3, "RPUSH", "t",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],"
                         "\"id\":\"it:string-key\"}"));
    /* A reply key naming the service's own list would feed the worker its
     * own answer forever: refused as a dead letter instead. */
    rrpc__reply_free(cmd(3, "RPUSH", "t",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],"
                         "\"id\":\"x\",\"reply_to\":\"t\"}"));
    test_call_result(c); /* the server keeps answering */
    /* The refusal's dead letter is written in the round after the
     * reply script's, which may wait behind an idle worker's BLPOP (0.5 s). */
    for (int i = 0; i < 40 && cmd_int(2, "LLEN", "t:dead", NULL) < dead0 + 5; i++)
        rrpc__sleep(0.05);
    CHECK(cmd_int(2, "LLEN", "t:dead", NULL) == dead0 + 5);
    CHECK(cmd_int(2, "LLEN", "t", NULL) == 0); /* no answer loops through the list */
    rrpc__reply *r = cmd(4, "LRANGE", "t:dead", "0", "-1");
    int parse = 0, big_seen = 0, wrongtype = 0, own = 0, cut = 0;
    for (size_t i = 0; r && i < rrpc__reply_count(r); i++) {
        const char *s = rrpc__reply_str(rrpc__reply_element(r, i), NULL);
        parse |= strstr(s, "\"reason\":\"parse error") != NULL;
        big_seen |= strstr(s, "\"reason\":\"too large: 4999 bytes (limit 4096)\"") != NULL;
        wrongtype |= strstr(s, "\"reason\":\"reply key refused: string\"") != NULL;
        own |= strstr(s, "\"reason\":\"reply key refused: one of the service's own keys\"") != NULL;
        cut |= strstr(s, "\"reason\":\"parse error: invalid escape near") != NULL &&
               strstr(s, "\\\\xcd") != NULL;
    }
    CHECK(parse && big_seen && wrongtype && own && cut);
    rrpc__reply_free(r);
    r = cmd(3, "HGET", "t:stats", "dead");
    CHECK(r && atoll(rrpc__reply_str(r, NULL)) >= 5);
    rrpc__reply_free(r);
}

static void test_batch(rrpc_client *c)
{
    json_t *calls = json_loads("[{\"method\":\"add\",\"params\":[1,2]},"
                               "{\"method\":\"sleep\",\"params\":[1],\"notify\":true},"
                               "{\"method\":\"nope\"},"
                               "{\"method\":\"add\",\"params\":{\"a\":5,\"b\":5}}]",
                               0, NULL);
    json_t *responses = NULL;
    CHECK(rrpc_call_batch(c, "t", calls, 5, &responses) == RRPC_OK);
    CHECK(json_array_size(responses) == 4);
    CHECK(json_integer_value(json_object_get(json_array_get(responses, 0), "result")) == 3);
    CHECK(json_is_null(json_array_get(responses, 1)));
    CHECK(json_integer_value(json_object_get(json_object_get(json_array_get(responses, 2), "error"),
                                             "code")) == -32601);
    CHECK(json_integer_value(json_object_get(json_array_get(responses, 3), "result")) == 10);
    json_decref(responses);
    json_decref(calls);
}

static void test_wrongtype_service_key(rrpc_client *c)
{
    rrpc__reply_free(cmd(3, "SET", "not-a-list", "x"));
    json_t *result = NULL;
    CHECK(rrpc_call(c, "not-a-list", "add", NULL, 0.2, &result, NULL) == RRPC_EREDIS);
    CHECK(strstr(rrpc_client_errmsg(c), "WRONGTYPE") != NULL);
    test_call_result(c); /* the client is still usable */
}

static void *caller(void *arg)
{
    int *ok = arg;
    rrpc_client *c = open_client_with(NULL);
    for (int i = 0; i < 200 && c; i++) {
        json_t *params = json_pack("[i,i]", i, 1000), *result = NULL;
        if (rrpc_call(c, "t", "add", params, 5, &result, NULL) == RRPC_OK &&
            json_integer_value(result) == i + 1000)
            (*ok)++;
        json_decref(result);
        json_decref(params);
    }
    rrpc_client_close(c);
    return NULL;
}

static void test_concurrent_callers(void)
{
    pthread_t t[8];
    int ok[8] = {0};
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, caller, &ok[i]);
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK(ok[i] == 200);
    }
}

/* A link Redis closed while the client was idle is noticed before the next
 * call, which succeeds on a new link. */
static void test_idle_link_closed_by_redis(rrpc_client *c)
{
    rrpc__reply_free(cmd(4, "CLIENT", "KILL", "TYPE", "normal")); /* SKIPME yes: not us */
    rrpc__sleep(0.05);
    json_t *params = json_pack("[i,i]", 1, 1), *result = NULL;
    CHECK(rrpc_call(c, "t", "add", params, 5, &result, NULL) == RRPC_OK);
    CHECK(json_integer_value(result) == 2);
    json_decref(result);
    json_decref(params);
}

/* A refused RPUSH fails at once instead of waiting out the call timeout. */
static void test_refused_push_fails_fast(rrpc_client *c)
{
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "maxmemory-policy", "noeviction"));
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "maxmemory", "1"));
    json_t *result = NULL;
    double t0 = rrpc__monotonic();
    int rc = rrpc_call(c, "t", "add", NULL, 5, &result, NULL);
    double took = rrpc__monotonic() - t0;
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "maxmemory", "0"));
    CHECK(rc == RRPC_EREDIS);
    CHECK(strstr(rrpc_client_errmsg(c), "OOM") != NULL);
    CHECK(took < 1.0);
    test_call_result(c); /* and the client still works afterwards */
}

static void test_bad_arguments(rrpc_client *c)
{
    json_t *result = NULL, *scalar = json_integer(1);
    CHECK(rrpc_call(c, "", "add", NULL, 1, &result, NULL) == RRPC_EINVAL);
    CHECK(rrpc_call(c, "bad name", "add", NULL, 1, &result, NULL) == RRPC_EINVAL);
    CHECK(rrpc_call(c, "t", NULL, NULL, 1, &result, NULL) == RRPC_EINVAL);
    CHECK(rrpc_call(c, "t", "add", scalar, 1, &result, NULL) == RRPC_EINVAL);
    json_decref(scalar);
    rrpc_client *bad = NULL;
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    o.url = "redis://127.0.0.1:1";
    CHECK(rrpc_client_open(&bad, &o, NULL, 0) == RRPC_ECONNECT && bad == NULL);
    o.url = "http://nope";
    CHECK(rrpc_client_open(&bad, &o, NULL, 0) == RRPC_EURL);
}

/* A stop while a handler runs still delivers that handler's answer. */
static void *slow_call(void *arg)
{
    int *ok = arg;
    rrpc_client *c = open_client_with(NULL);
    json_t *params = json_pack("[i]", 400), *result = NULL;
    *ok = rrpc_call(c, "t", "sleep", params, 5, &result, NULL) == RRPC_OK &&
          json_integer_value(result) == 400;
    json_decref(result);
    json_decref(params);
    rrpc_client_close(c);
    return NULL;
}

/* The reply waiting on KEY (new text), or NULL after SECONDS. */
static char *reply_on(const char *key, const char *seconds)
{
    rrpc__reply *r = cmd(3, "BLPOP", key, seconds);
    char *text = r && rrpc__reply_count(r) == 2
                     ? strdup(rrpc__reply_str(rrpc__reply_element(r, 1), NULL))
                     : NULL;
    rrpc__reply_free(r);
    return text;
}

#define SLEEP_REQ(ms, id)                                                                          \
    "{\"jsonrpc\":\"2.0\",\"method\":\"sleep\",\"params\":[" #ms "],\"id\":\"" id "\"}"
#define ADD_REQ(id) "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"" id "\"}"

/* A slow handler does not hold the rest of its batch: the requests not
 * started go back to the list, and after it the workers take one request
 * at a time, so a quick request is not queued behind a slow one. */
static void test_slow_handler_does_not_hold_its_batch(void)
{
    running r;
    start_server(&r, "slow1", 1);
    /* One worker takes all three in one pop (BLPOP + LPOP). */
    rrpc__reply_free(
        cmd(5, "RPUSH", "slow1", SLEEP_REQ(100, "it:s1"), ADD_REQ("it:a1"), ADD_REQ("it:a2")));
    char *a1 = reply_on("it:a1", "5"), *a2 = reply_on("it:a2", "5"), *s1 = reply_on("it:s1", "5");
    CHECK(a1 && strstr(a1, "\"result\":3") && a2 && strstr(a2, "\"result\":3") && s1);
    rrpc_server_stats st;
    rrpc_server_get_stats(r.srv, &st);
    CHECK(st.given_back == 2 && st.requests == 3);
    free(a1);
    free(a2);
    free(s1);
    stop_server(&r);

    start_server(&r, "slow2", 2);
    rrpc__reply_free(cmd(3, "RPUSH", "slow2", SLEEP_REQ(50, "it:s2")));
    free(reply_on("it:s2", "5")); /* the workers have seen a slow handler */
    rrpc__sleep(0.1);             /* both are back in BLPOP */
    /* One worker busy for 200 ms; the other takes the 600 ms sleep and,
     * without the adaptation, the add behind it in the same pop. */
    rrpc__reply_free(cmd(3, "RPUSH", "slow2", SLEEP_REQ(200, "it:s4")));
    rrpc__sleep(0.05);
    double pushed = rrpc__monotonic();
    rrpc__reply_free(cmd(4, "RPUSH", "slow2", SLEEP_REQ(600, "it:s3"), ADD_REQ("it:a3")));
    char *a3 = reply_on("it:a3", "5");
    double waited = rrpc__monotonic() - pushed;
    CHECK(a3 && strstr(a3, "\"result\":3"));
    CHECK(waited < 0.45); /* after the 200 ms sleep, not behind the 600 ms one */
    free(a3);
    free(reply_on("it:s3", "5"));
    free(reply_on("it:s4", "5"));
    stop_server(&r);
}

static void test_graceful_stop(void)
{
    running r;
    start_server(&r, "t", 2);
    int ok = 0;
    pthread_t t;
    pthread_create(&t, NULL, slow_call, &ok);
    rrpc__sleep(0.15);
    stop_server(&r);
    pthread_join(t, NULL);
    CHECK(ok == 1);
}

/* ---- issue 9 (client side) ------------------------------------------------ */

/* Defect 4: a call whose time runs out during the fail-fast refresh (tiny
 * timeouts; nested calls that inherit a millisecond) fails at once with
 * RRPC_ETIMEDOUT: it never sends a BLPOP with an unwritten or zero (=
 * forever) timeout, leaves no request queued and keeps its link.  A fresh
 * client per call, so the registry is always read first. */
static void test_tiny_timeouts_fail_at_once(void)
{
    static const double tiny[] = {1e-9, 1e-6, 1e-5, 1e-4, 0.0005, 0.001, 0.0015, 0.002};
    double at_once = 0.15 * time_scale(); /* the worker sleeps longer */
    json_t *params = json_pack("[i]", (int)(200 * time_scale()));
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++) {
        for (int round = 0; round < 3; round++) {
            rrpc_client *c = open_client_with(NULL);
            json_t *result = NULL, *error = NULL;
            double t0 = rrpc__monotonic();
            int rc = rrpc_call(c, "t", "sleep", params, tiny[i], &result, &error);
            double took = rrpc__monotonic() - t0;
            /* A worker quick enough to see the request answers that its
             * deadline passed (-32000); that is "at once" too. */
            int late =
                rc == RRPC_EREMOTE && json_integer_value(json_object_get(error, "code")) == -32000;
            if ((rc != RRPC_ETIMEDOUT && !late) || took > at_once)
                fprintf(stderr, "timeout %g: rc %d in %.4f s: %s\n", tiny[i], rc, took,
                        rrpc_client_errmsg(c));
            CHECK(rc == RRPC_ETIMEDOUT || late);
            json_decref(error);
            CHECK(took < at_once); /* "at once": the worker sleeps 200 ms (scaled) */
            json_decref(result);
            test_call_result(c); /* the link survived */
            rrpc_client_close(c);
        }
    }
    json_decref(params);
    WAIT_UNTIL(cmd_int(2, "LLEN", "t", NULL) == 0, 2.0 * time_scale());
    CHECK(cmd_int(2, "LLEN", "t", NULL) == 0);
}

/* Defect 12: timeouts too long for a timeval or a BLPOP mean "no limit in
 * practice" (the call gets its slow answer); negative and NaN ones are
 * refused, in calls and batches alike; the client's default too. */
static void test_timeout_arguments(void)
{
    static const double huge[] = {1e16, 1e300, INFINITY};
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    o.timeout_s = INFINITY;
    o.connect_timeout_s = 1e300;
    rrpc_client *c = open_client_with(&o);
    if (c == NULL)
        return;
    json_t *slow = json_pack("[i]", 150), *result = NULL;
    for (size_t i = 0; i < 4; i++) {
        double t = i < 3 ? huge[i] : 0; /* 0: the (infinite) default */
        int rc = rrpc_call(c, "t", "sleep", slow, t, &result, NULL);
        if (rc != RRPC_OK)
            fprintf(stderr, "timeout %g: %s\n", t, rrpc_client_errmsg(c));
        CHECK(rc == RRPC_OK && json_integer_value(result) == 150);
        json_decref(result);
        result = NULL;
    }
    CHECK(rrpc_call(c, "t", "sleep", slow, NAN, &result, NULL) == RRPC_EINVAL);
    CHECK(strstr(rrpc_client_errmsg(c), "timeout") != NULL);
    CHECK(rrpc_call(c, "t", "sleep", slow, -1, &result, NULL) == RRPC_EINVAL);
    json_t *calls = json_pack("[{s:s,s:[i,i]}]", "method", "add", "params", 1, 2), *resp = NULL;
    CHECK(rrpc_call_batch(c, "t", calls, -INFINITY, &resp) == RRPC_EINVAL);
    CHECK(rrpc_call_batch(c, "t", calls, INFINITY, &resp) == RRPC_OK);
    CHECK(json_integer_value(json_object_get(json_array_get(resp, 0), "result")) == 3);
    json_decref(resp);
    json_decref(calls);
    json_decref(slow);
    rrpc_client_close(c);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    running r;
    start_server(&r, "t", 3);
    rrpc_client *c = open_client_with(NULL);
    test_call_result(c);
    test_remote_errors(c);
    test_timeout_withdraws_request(c);
    test_notification_leaves_no_key(c);
    test_reply_key_expires();
    test_dead_letters(c);
    test_batch(c);
    test_wrongtype_service_key(c);
    test_concurrent_callers();
    test_idle_link_closed_by_redis(c);
    test_refused_push_fails_fast(c);
    test_bad_arguments(c);
    rrpc_client_close(c);
    stop_server(&r);
    test_slow_handler_does_not_hold_its_batch();
    test_graceful_stop();
    start_server(&r, "t", 2);
    test_tiny_timeouts_fail_at_once();
    test_timeout_arguments();
    stop_server(&r);
    raw_close();
    return check_report();
}
