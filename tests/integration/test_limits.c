/* test_limits.c -- limits through the C API against a real Redis: the
 * server option `limits`, the tenant of rrpc_call_options in the sync and
 * the async client, a batch element over a "wait" limit (refused: it
 * cannot be put back alone), and a server refusing limits it cannot keep.
 * The flags, two processes, leases and reliable mode are
 * tests/ops/test_limits.py's.
 */
#include "harness.h"

#include <stdatomic.h>

#define SERVICE "limits_c"

static void start_server(running *r, const char *limits)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = SERVICE;
    o.workers = 2;
    o.handle_signals = 0;
    o.heartbeat_interval_s = 0.25;
    o.limits = limits;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    rrpc_server_register(srv, "add", m_add, NULL, NULL);
    rrpc_server_register(srv, "sleep", m_sleep, NULL, NULL);
    run_server(r, srv);
    WAIT_UNTIL(cmd_int(2, "ZCARD", "{" SERVICE "}:workers", NULL) == 1, 5 * time_scale());
}

/* One sync call of add(1, 2) as TENANT: 0 ran, else the error code. */
static int call_as(rrpc_client *c, const char *tenant)
{
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.tenant = tenant;
    json_t *params = json_pack("[ii]", 1, 2), *result = NULL, *error = NULL;
    int rc = rrpc_call_with(c, SERVICE, "add", params, &o, &result, &error);
    int code = rc == RRPC_OK ? 0 : (int)json_integer_value(json_object_get(error, "code"));
    if (code == RRPC_JSONRPC_LIMITED) {
        json_t *d = json_object_get(error, "data");
        CHECK(json_integer_value(json_object_get(d, "retry_after_ms")) > 0);
        CHECK(strcmp(json_string_value(json_object_get(d, "limit")), "rate") == 0);
    }
    json_decref(params);
    json_decref(result);
    json_decref(error);
    return code;
}

static void test_sync_tenants(void)
{
    rrpc_client *c = open_client_with(NULL);
    CHECK(call_as(c, "acme") == 0);
    CHECK(call_as(c, "acme") == RRPC_JSONRPC_LIMITED);
    CHECK(call_as(c, "globex") == 0);
    CHECK(call_as(c, NULL) == 0);
    CHECK(call_as(c, NULL) == RRPC_JSONRPC_LIMITED);
    /* A bad tenant never leaves the client. */
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.tenant = "";
    json_t *result = NULL;
    CHECK(rrpc_call_with(c, SERVICE, "add", NULL, &o, &result, NULL) == RRPC_EINVAL);
    o.tenant = "bad\ttenant";
    CHECK(rrpc_call_with(c, SERVICE, "add", NULL, &o, &result, NULL) == RRPC_EINVAL);
    rrpc_client_close(c);
}

typedef struct done {
    atomic_int calls, status, code;
} done;

static void on_done(int status, json_t *result, json_t *error, void *udata)
{
    (void)result;
    done *d = udata;
    atomic_store(&d->status, status);
    atomic_store(&d->code, (int)json_integer_value(json_object_get(error, "code")));
    atomic_fetch_add(&d->calls, 1);
}

static void test_async_tenant(void)
{
    rrpc_async *a = NULL;
    char err[256];
    CHECK(rrpc_async_open(&a, NULL, err, sizeof err) == RRPC_OK);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.tenant = "initech";
    json_t *params = json_pack("[ii]", 1, 2);
    done d1 = {0}, d2 = {0};
    CHECK(rrpc_async_call_with(a, SERVICE, "add", params, &o, on_done, &d1) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&d1.calls) == 1, 5 * time_scale());
    CHECK(rrpc_async_call_with(a, SERVICE, "add", params, &o, on_done, &d2) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&d2.calls) == 1, 5 * time_scale());
    CHECK(atomic_load(&d1.status) == RRPC_OK);
    CHECK(atomic_load(&d2.code) == RRPC_JSONRPC_LIMITED); /* the same tenant's bucket */
    o.tenant = "";
    CHECK(rrpc_async_call_with(a, SERVICE, "add", params, &o, on_done, &d2) == RRPC_EINVAL);
    json_decref(params);
    rrpc_async_close(a);
}

/* A batch element over a "wait" limit is refused: only a whole request
 * can be put back. */
static void test_batch_element_refused(void)
{
    /* One sleep holds the only slot while the batch comes (longer under
     * valgrind: the other worker must get to the batch meanwhile). */
    char slow[160];
    snprintf(slow, sizeof slow,
             "{\"jsonrpc\":\"2.0\",\"method\":\"sleep\",\"params\":[%d],"
             "\"id\":\"rrpc:reply:limits-s\"}",
             (int)(600 * time_scale()));
    rrpc__reply_free(cmd(3, "RPUSH", SERVICE, slow));
    WAIT_UNTIL(cmd_int(2, "ZCARD", "{" SERVICE "}:running:5:sleep", NULL) == 1, 5 * time_scale());
    rrpc__reply_free(cmd(3, "RPUSH", SERVICE,
                         "[{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],"
                         "\"id\":\"rrpc:reply:limits-b1\",\"tenant\":\"b\"},"
                         "{\"jsonrpc\":\"2.0\",\"method\":\"sleep\",\"params\":[1],\"id\":2}]"));
    rrpc__reply *r = cmd(3, "BLPOP", "rrpc:reply:limits-b1", "30");
    const char *text = r ? rrpc__reply_str(rrpc__reply_element(r, 1), NULL) : NULL;
    CHECK(text != NULL);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    CHECK(json_array_size(doc) == 2);
    CHECK(json_integer_value(json_object_get(json_array_get(doc, 0), "result")) == 3);
    json_t *e = json_object_get(json_array_get(doc, 1), "error");
    CHECK(json_integer_value(json_object_get(e, "code")) == RRPC_JSONRPC_LIMITED);
    json_decref(doc);
    rrpc__reply_free(r);
    r = cmd(3, "BLPOP", "rrpc:reply:limits-s", "30");
    CHECK(r != NULL && rrpc__reply_count(r) == 2);
    rrpc__reply_free(r);
}

/* limits that do not parse, or name a method not served: run refuses. */
static void test_refused_at_run(const char *limits, const char *why)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = SERVICE "_bad";
    o.handle_signals = 0;
    o.limits = limits;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    rrpc_server_register(srv, "add", m_add, NULL, NULL);
    CHECK(rrpc_server_run(srv) == RRPC_EINVAL);
    CHECK(strstr(rrpc_server_errmsg(srv), why) != NULL);
    if (strstr(rrpc_server_errmsg(srv), why) == NULL)
        fprintf(stderr, "errmsg: %s\n", rrpc_server_errmsg(srv));
    rrpc_server_free(srv);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    running r;
    start_server(&r, "{\"add\": {\"rate\": 1, \"per_tenant\": true}, "
                     "\"sleep\": {\"concurrency\": 1, \"over\": \"wait\"}}");
    test_sync_tenants();
    test_async_tenant();
    test_batch_element_refused();
    stop_server(&r);
    test_refused_at_run("{\"add\": {\"rate\": 0}}", "rate");
    test_refused_at_run("[1]", "not a JSON object");
    test_refused_at_run("{\"nosuch\": {\"rate\": 1}}", "no method \"nosuch\"");
    test_refused_at_run("{\"add\": {\"rate\": 1, \"colour\": 2}}", "colour");
    raw_close();
    return check_report();
}
