/* test_registry.c -- the registry, heartbeat, fail fast, load shedding and
 * per-method stats (docs/PROTOCOL.md section 9) on a real redis-server
 * started by harness/with-redis.sh.
 *
 * A dead worker is simulated the honest way: a forked child runs a server
 * and is killed with SIGKILL, so nothing removes its record and only the
 * heartbeat's expiry can tell callers it is gone.
 */
#include "core/clock.h"
#include "harness.h"
#include "redis/conn.h"
#include "core/url.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static json_t *m_fail(rrpc_request *req, void *udata)
{
    (void)udata;
    return rrpc_request_error(req, 7, "failed on purpose", NULL);
}

static rrpc_server *new_server(const char *service, int workers, long max_queue)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = workers;
    o.handle_signals = 0;
    o.heartbeat_interval_s = 0.2;
    o.heartbeat_ttl_s = 1.0;
    o.max_queue = max_queue;
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    CHECK(rrpc_server_register(s, "add", m_add, NULL, "a + b") == RRPC_OK);
    CHECK(rrpc_server_register(s, "fail", m_fail, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(s, "sleep", m_sleep, NULL, NULL) == RRPC_OK);
    json_t *shape = json_pack("{s:s, s:s}", "a", "integer", "b", "integer");
    CHECK(rrpc_server_set_params(s, "add", shape) == RRPC_OK);
    CHECK(rrpc_server_set_params(s, "nosuch", shape) == RRPC_EINVAL);
    json_decref(shape);
    return s;
}

static void start_server(running *r, const char *service, int workers, long max_queue)
{
    run_server(r, new_server(service, workers, max_queue));
}

/* ---- raw Redis, admin and client helpers ------------------------------------ */

static rrpc_admin *admin;

/* Live workers of SERVICE according to rrpc_admin_info. */
static size_t live_workers(const char *service, json_t **info)
{
    json_t *doc = NULL;
    if (rrpc_admin_info(admin, service, &doc) != RRPC_OK)
        return 0;
    size_t n = json_array_size(json_object_get(doc, "workers"));
    if (info)
        *info = doc;
    else
        json_decref(doc);
    return n;
}

static int wait_workers(const char *service, size_t want, double within_s)
{
    double until = rrpc__monotonic() + within_s;
    while (rrpc__monotonic() < until) {
        if (live_workers(service, NULL) == want)
            return 1;
        rrpc__sleep(0.02);
    }
    return 0;
}

static rrpc_client *open_client(int fail_fast)
{
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    CHECK(o.fail_fast == 1);
    o.fail_fast = fail_fast;
    return open_client_with(&o);
}

static int call_add(rrpc_client *c, const char *service, double timeout_s, double *elapsed)
{
    json_t *params = json_pack("[i,i]", 1, 2), *result = NULL, *error = NULL;
    double t0 = rrpc__monotonic();
    int rc = rrpc_call(c, service, "add", params, timeout_s, &result, &error);
    if (elapsed)
        *elapsed = rrpc__monotonic() - t0;
    if (rc == RRPC_OK)
        CHECK(json_integer_value(result) == 3);
    json_decref(params);
    json_decref(result);
    json_decref(error);
    return rc;
}

/* ---- tests ------------------------------------------------------------------ */

/* Log lines of the library that say a heartbeat failed, counted. */
static atomic_int beats_failed;

static void count_failed_beats(rrpc_log_level level, const char *msg, void *udata)
{
    (void)level;
    (void)udata;
    if (strstr(msg, "heartbeat failed") != NULL)
        atomic_fetch_add(&beats_failed, 1);
}

/* A link Redis closes while the heartbeat is idle (its `timeout`, CLIENT
 * KILL, a proxy) is mended before the next beat, which then succeeds: a
 * failed beat would leave the deadline unrenewed for two intervals. */
static void test_heartbeat_after_killed_link(void)
{
    running r;
    start_server(&r, "kl", 1, 0);
    CHECK(wait_workers("kl", 1, 10));
    rrpc_set_log_fn(count_failed_beats, NULL);
    rrpc__reply_free(cmd(4, "CLIENT", "KILL", "TYPE", "normal")); /* SKIPME yes: not us */
    rrpc__sleep(0.7);                                             /* three beats of 0.2 s */
    CHECK(atomic_load(&beats_failed) == 0);
    CHECK(live_workers("kl", NULL) == 1);
    /* And a stop right after such a kill still removes the record. */
    rrpc__reply_free(cmd(4, "CLIENT", "KILL", "TYPE", "normal"));
    stop_server(&r);
    CHECK(cmd_int(2, "ZCARD", "{kl}:workers", NULL) == 0);
    rrpc_set_log_fn(NULL, NULL);
}

/* A server killed with SIGKILL cannot remove its record: its heartbeat must
 * expire, a caller already waiting must fail fast, and its request must be
 * withdrawn.  Runs first, before this process has threads, so fork is safe. */
static void test_heartbeat_expiry_after_death(void)
{
    pid_t child = fork();
    if (child == 0) {
        rrpc_server_run(new_server("mortal", 1, 0)); /* until killed */
        _exit(0);
    }
    CHECK(child > 0);
    CHECK(wait_workers("mortal", 1, 5));
    rrpc_client *c = open_client(1);
    CHECK(call_add(c, "mortal", 5, NULL) == RRPC_OK); /* alive: cache says 1 live */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    CHECK(live_workers("mortal", NULL) == 1); /* nobody removed it... */
    double elapsed = 0;
    int rc = call_add(c, "mortal", 20, &elapsed); /* ...so this one waits, in slices */
    CHECK(rc == RRPC_EUNAVAILABLE);
    CHECK(elapsed < 3.5); /* ttl 1 s + a 1 s slice, not the 20 s timeout */
    CHECK(strstr(rrpc_client_errmsg(c), "unavailable") != NULL);
    CHECK(cmd_int(2, "LLEN", "mortal", NULL) == 0); /* the request was withdrawn */
    CHECK(live_workers("mortal", NULL) == 0);
    rc = call_add(c, "mortal", 20, &elapsed); /* and now it is refused at once */
    CHECK(rc == RRPC_EUNAVAILABLE);
    CHECK(elapsed < 0.1);
    CHECK(cmd_int(2, "LLEN", "mortal", NULL) == 0); /* never pushed */
    rrpc_client_close(c);
    /* Fail fast off: the same call waits out its timeout instead. */
    c = open_client(0);
    rc = call_add(c, "mortal", 0.4, &elapsed);
    CHECK(rc == RRPC_ETIMEDOUT);
    CHECK(elapsed >= 0.35);
    rrpc_client_close(c);
}

static void test_registration_fields(void)
{
    running r;
    start_server(&r, "reg", 2, 0);
    CHECK(wait_workers("reg", 1, 5));
    json_t *info = NULL;
    live_workers("reg", &info);
    json_t *w = json_array_get(json_object_get(info, "workers"), 0);
    CHECK(json_is_true(json_object_get(info, "registered")));
    CHECK(json_integer_value(json_object_get(w, "pid")) == getpid());
    CHECK(json_integer_value(json_object_get(w, "threads")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(w, "version")), rrpc_version()) == 0);
    CHECK(json_string_value(json_object_get(w, "host")) != NULL);
    CHECK(json_number_value(json_object_get(w, "expires_in")) > 0);
    const char *id = json_string_value(json_object_get(w, "id"));
    CHECK(id != NULL);
    /* The keys of PROTOCOL.md 9, derived from the list key with a hash tag. */
    rrpc__reply *score = cmd(3, "ZSCORE", "{reg}:workers", id ? id : "");
    CHECK(score && rrpc__reply_type(score) == RRPC__REPLY_STRING);
    rrpc__reply_free(score);
    CHECK(cmd_int(3, "SISMEMBER", "rrpc:services", "reg") == 1);
    CHECK(cmd_int(3, "HEXISTS", "{reg}:info", id ? id : "") == 1);
    CHECK(cmd_int(2, "EXISTS", "{reg}:config", NULL) == 1);
    int saw_add = 0, saw_ping = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(info, "methods"), i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (strcmp(name, "add") == 0) {
            saw_add = 1;
            CHECK(strcmp(json_string_value(json_object_get(m, "description")), "a + b") == 0);
            CHECK(strcmp(json_string_value(json_object_get(json_object_get(m, "params"), "a")),
                         "integer") == 0);
        }
        saw_ping |= strcmp(name, "rpc.ping") == 0;
    }
    CHECK(saw_add && saw_ping);

    /* rpc.ping is a real round trip that names the worker. */
    rrpc_client *c = open_client(1);
    json_t *result = NULL;
    CHECK(rrpc_call(c, "reg", "rpc.ping", NULL, 5, &result, NULL) == RRPC_OK);
    CHECK(id && strcmp(json_string_value(json_object_get(result, "worker")), id) == 0);
    json_decref(result);

    /* Per-method stats reach Redis with the heartbeat and add up. */
    for (int k = 0; k < 3; k++)
        CHECK(call_add(c, "reg", 5, NULL) == RRPC_OK);
    for (int k = 0; k < 2; k++) {
        json_t *error = NULL;
        CHECK(rrpc_call(c, "reg", "fail", NULL, 5, &result, &error) == RRPC_EREMOTE);
        json_decref(error);
    }
    json_t *stats = NULL;
    double until = rrpc__monotonic() + 3;
    long long add_calls = 0, fail_errors = 0;
    while (rrpc__monotonic() < until && (add_calls != 3 || fail_errors != 2)) {
        json_decref(stats);
        stats = NULL;
        rrpc__sleep(0.1);
        CHECK(rrpc_admin_stats(admin, "reg", &stats) == RRPC_OK);
        json_t *methods = json_object_get(stats, "methods");
        add_calls = json_integer_value(json_object_get(json_object_get(methods, "add"), "calls"));
        fail_errors =
            json_integer_value(json_object_get(json_object_get(methods, "fail"), "errors"));
    }
    CHECK(add_calls == 3);
    CHECK(fail_errors == 2);
    json_t *add = json_object_get(json_object_get(stats, "methods"), "add");
    CHECK(json_integer_value(json_object_get(add, "errors")) == 0);
    CHECK(json_number_value(json_object_get(add, "p50_ms")) > 0);
    CHECK(json_number_value(json_object_get(add, "p99_ms")) >=
          json_number_value(json_object_get(add, "p50_ms")));
    json_decref(stats);

    /* A graceful stop removes the record at once: fail fast, no waiting. */
    stop_server(&r);
    CHECK(live_workers("reg", NULL) == 0);
    CHECK(cmd_int(3, "HEXISTS", "{reg}:info", id ? id : "") == 0);
    json_decref(info);
    /* The client's cache is up to a second old; a call after that fails fast. */
    rrpc__sleep(1.05);
    double elapsed = 0;
    CHECK(call_add(c, "reg", 10, &elapsed) == RRPC_EUNAVAILABLE);
    CHECK(elapsed < 0.1);
    /* The last counts were flushed on the way out. */
    CHECK(rrpc_admin_stats(admin, "reg", &stats) == RRPC_OK);
    CHECK(json_integer_value(json_object_get(stats, "calls")) == 6); /* 3 add, 2 fail, 1 ping */
    json_decref(stats);
    rrpc_client_close(c);
}

/* A seed-style worker that knows nothing of the registry. */
static void *seed_worker(void *arg)
{
    (void)arg;
    rrpc__url url;
    rrpc__conn *c = NULL;
    char err[256];
    rrpc__url_parse(&url, NULL, err, sizeof err);
    rrpc__conn_open(&c, &url, 2, err, sizeof err);
    rrpc__url_free(&url);
    rrpc__reply *r = NULL;
    if (rrpc__conn_appendv(c, 3, "BLPOP", "seedsvc", "5") == RRPC_OK &&
        rrpc__conn_read(c, &r) == RRPC_OK && rrpc__reply_count(r) == 2) {
        json_t *req = json_loads(rrpc__reply_str(rrpc__reply_element(r, 1), NULL), 0, NULL);
        json_t *resp = json_pack("{s:s, s:i, s:O}", "jsonrpc", "2.0", "result", 3, "id",
                                 json_object_get(req, "id"));
        char *text = json_dumps(resp, JSON_COMPACT);
        rrpc__reply *p = NULL;
        rrpc__conn_appendv(c, 3, "RPUSH", json_string_value(json_object_get(req, "id")), text);
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

static void test_unregistered_service_is_waited_on(void)
{
    rrpc_client *c = open_client(1);
    double elapsed = 0;
    CHECK(call_add(c, "nobody", 0.5, &elapsed) == RRPC_ETIMEDOUT); /* not EUNAVAILABLE */
    CHECK(elapsed >= 0.45);
    CHECK(cmd_int(2, "LLEN", "nobody", NULL) == 0);
    pthread_t t;
    pthread_create(&t, NULL, seed_worker, NULL);
    rrpc__sleep(0.1);
    CHECK(call_add(c, "seedsvc", 5, NULL) == RRPC_OK);
    pthread_join(t, NULL);
    rrpc_client_close(c);
}

static void test_overload(void)
{
    running r;
    start_server(&r, "busy", 1, 2);
    CHECK(wait_workers("busy", 1, 5));
    rrpc_client *c = open_client(1);
    json_t *ms = json_pack("[i]", 600);
    CHECK(rrpc_notify(c, "busy", "sleep", ms) == RRPC_OK); /* occupies the only thread */
    json_decref(ms);
    double until = rrpc__monotonic() + 2;
    while (cmd_int(2, "LLEN", "busy", NULL) != 0 && rrpc__monotonic() < until)
        rrpc__sleep(0.01);
    const char *note = "{\"jsonrpc\":\"2.0\",\"method\":\"sleep\",\"params\":[0]}";
    rrpc__reply_free(cmd(4, "RPUSH", "busy", note, note)); /* the queue is now at max_queue */
    double elapsed = 0;
    CHECK(call_add(c, "busy", 10, &elapsed) == RRPC_EOVERLOADED);
    CHECK(elapsed < 0.3);
    CHECK(strstr(rrpc_client_errmsg(c), "overloaded") != NULL);
    CHECK(cmd_int(2, "LLEN", "busy", NULL) == 2); /* refused, not queued */
    /* Below the limit again, calls go through (on the same client). */
    until = rrpc__monotonic() + 3;
    while (cmd_int(2, "LLEN", "busy", NULL) >= 2 && rrpc__monotonic() < until)
        rrpc__sleep(0.01);
    CHECK(call_add(c, "busy", 10, NULL) == RRPC_OK);
    rrpc_client_close(c);
    stop_server(&r);
}

static void test_heartbeat_off(void)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = "quiet";
    o.workers = 1;
    o.handle_signals = 0;
    o.heartbeat = 0;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    rrpc_server_register(srv, "add", m_add, NULL, NULL);
    running r;
    run_server(&r, srv);
    rrpc_client *c = open_client(1);
    CHECK(call_add(c, "quiet", 5, NULL) == RRPC_OK);
    json_t *result = NULL;
    CHECK(rrpc_call(c, "quiet", "rpc.ping", NULL, 5, &result, NULL) == RRPC_OK);
    json_decref(result);
    CHECK(cmd_int(2, "EXISTS", "{quiet}:workers", NULL) == 0);
    CHECK(cmd_int(3, "SISMEMBER", "rrpc:services", "quiet") == 0);
    rrpc_client_close(c);
    stop_server(&r);
}

int main(void)
{
    char err[256];
    if (raw_open() != 0)
        return 1;
    if (rrpc_admin_open(&admin, NULL, err, sizeof err) != RRPC_OK) {
        fprintf(stderr, "cannot reach the test Redis: %s\n", err);
        return 1;
    }
    test_heartbeat_expiry_after_death();
    test_registration_fields();
    test_unregistered_service_is_waited_on();
    test_overload();
    test_heartbeat_off();
    json_t *services = NULL;
    CHECK(rrpc_admin_services(admin, &services) == RRPC_OK);
    CHECK(json_array_size(services) == 3); /* busy, mortal, reg: sorted */
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(services, 0), "service")),
                 "busy") == 0);
    json_decref(services);
    test_heartbeat_after_killed_link();
    rrpc_admin_close(admin);
    raw_close();
    return check_report();
}
