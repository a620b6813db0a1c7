/* test_discover.c -- schemas, rpc.discover and interceptors (issue 14,
 * items 5 and 6) against a real Redis.
 *
 * A server whose methods registered JSON Schemas refuses params that do
 * not match with -32602 naming the path, before the handler runs; a
 * schema that does not compile is refused at registration; rpc.discover
 * answers an OpenRPC document of what was registered; server interceptors
 * run in order around the handler (and outside the schema check) and may
 * refuse; client interceptors (sync and async) add members, refuse calls
 * before anything is sent, and see every outcome.
 */
#include "harness.h"

#include <stdatomic.h>

static atomic_int handled; /* calls that reached a handler */

static json_t *m_counted_add(rrpc_request *req, void *udata)
{
    handled++;
    return m_add(req, udata);
}

#define AB_SCHEMA                                                                                  \
    "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\", \"description\": "     \
    "\"first\"}, \"b\": {\"type\": \"integer\"}}, \"required\": [\"a\", \"b\"], "                  \
    "\"additionalProperties\": false}"

static rrpc_server *new_server(const char *service)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = 1;
    o.handle_signals = 0;
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    CHECK(rrpc_server_register(s, "add", m_counted_add, NULL, "a + b") == RRPC_OK);
    CHECK(rrpc_server_register(s, "sleep", m_sleep, NULL, NULL) == RRPC_OK);
    json_t *p = json_loads(AB_SCHEMA, 0, NULL), *r = json_pack("{s:s}", "type", "integer");
    CHECK(rrpc_server_set_schema(s, "add", p, r) == RRPC_OK);
    CHECK(rrpc_server_add_error(s, "add", 5, "too big") == RRPC_OK);
    json_t *shape = json_pack("{s:s}", "ms", "integer");
    CHECK(rrpc_server_set_params(s, "sleep", shape) == RRPC_OK); /* a shape, no schema */
    json_decref(shape);
    json_decref(p);
    json_decref(r);
    return s;
}

/* A client that waits for a server starting on another thread instead of
 * failing fast while the service's previous server has just stopped. */
static rrpc_client *open_client(void)
{
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    o.fail_fast = 0;
    return open_client_with(&o);
}

/* Calls METHOD with PARAMS (JSON text, NULL: none); returns the status and
 * fills *result or *error. */
static int call_text(rrpc_client *c, const char *service, const char *method, const char *params,
                     json_t **result, json_t **error)
{
    json_t *p = params ? json_loads(params, 0, NULL) : NULL;
    int rc = rrpc_call(c, service, method, p, 5, result, error);
    json_decref(p);
    return rc;
}

/* The call fails -32602 with MESSAGE and data.path PATH, and no handler ran. */
static void expect_invalid(rrpc_client *c, const char *params, const char *message,
                           const char *path)
{
    json_t *result = NULL, *error = NULL;
    int before = handled;
    if (!CHECK_EQ_INT(call_text(c, "disc", "add", params, &result, &error), RRPC_EREMOTE))
        return;
    CHECK_EQ_INT(json_integer_value(json_object_get(error, "code")), -32602);
    CHECK_EQ_STR(json_string_value(json_object_get(error, "message")), message);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(error, "data"), "path")), path);
    CHECK_EQ_INT(handled, before);
    json_decref(error);
}

/* ---- bad schemas ------------------------------------------------------------ */

static void expect_refused(rrpc_server *s, const char *schema, const char *message)
{
    json_t *p = json_loads(schema, JSON_DECODE_ANY, NULL);
    CHECK_EQ_INT(rrpc_server_set_schema(s, "add", p, NULL), RRPC_EINVAL);
    CHECK_EQ_STR(rrpc_server_errmsg(s), message);
    json_decref(p);
}

static void test_schema_that_does_not_compile(void)
{
    rrpc_server *s = new_server("disc");
    expect_refused(s, "{\"type\": \"object\", \"properties\": {\"a\": {\"pattern\": \"x\"}}}",
                   "params schema of add: schema.properties.a: unsupported keyword 'pattern'");
    expect_refused(s, "{\"type\": \"integr\"}",
                   "params schema of add: schema: unknown type 'integr'");
    expect_refused(s, "[1]",
                   "params schema of add: schema: a schema must be an object or a boolean");
    expect_refused(s, "{\"required\": \"a\"}",
                   "params schema of add: schema: required must be an array of member names");
    json_t *ok = json_object(), *bad = json_pack("{s:i}", "minLength", -1);
    CHECK_EQ_INT(rrpc_server_set_schema(s, "add", ok, bad), RRPC_EINVAL);
    CHECK_EQ_STR(rrpc_server_errmsg(s),
                 "result schema of add: schema: minLength must be a non-negative integer");
    CHECK_EQ_INT(rrpc_server_set_schema(s, "nosuch", ok, NULL), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_server_set_schema(NULL, "add", ok, NULL), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_server_add_error(s, "nosuch", 1, "x"), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_server_add_error(s, "add", 1, NULL), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, NULL, NULL, NULL), RRPC_EINVAL);
    json_decref(ok);
    json_decref(bad);
    /* A refused schema leaves the one registered before in place. */
    running r;
    run_server(&r, s);
    rrpc_client *c = open_client();
    expect_invalid(c, "[1, \"2\"]", "params[1]: expected integer", "params[1]");
    /* Running: the description is frozen. */
    CHECK_EQ_INT(rrpc_server_set_schema(s, "add", NULL, NULL), RRPC_ESTATE);
    CHECK_EQ_INT(rrpc_server_add_error(s, "add", 1, "x"), RRPC_ESTATE);
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, NULL, NULL, NULL), RRPC_EINVAL);
    rrpc_client_close(c);
    stop_server(&r);
}

/* ---- params checked --------------------------------------------------------- */

static void test_params_checked(void)
{
    running r;
    run_server(&r, new_server("disc"));
    rrpc_client *c = open_client();
    json_t *result = NULL, *error = NULL;
    CHECK_EQ_INT(call_text(c, "disc", "add", "{\"a\": 1, \"b\": 2}", &result, &error), RRPC_OK);
    CHECK_JSON_EQ(result, "3");
    json_decref(result);
    CHECK_EQ_INT(call_text(c, "disc", "add", "[40, 2]", &result, &error), RRPC_OK);
    CHECK_JSON_EQ(result, "42");
    json_decref(result);
    expect_invalid(c, "{\"a\": 1, \"b\": \"x\"}", "params.b: expected integer", "params.b");
    expect_invalid(c, "{\"a\": 1}", "params.b: missing", "params.b");
    expect_invalid(c, "{\"a\": 1, \"b\": 2, \"c\": 3}", "params.c: not allowed (no such member)",
                   "params.c");
    expect_invalid(c, "[1, 2, 3]", "params[2]: not allowed (at most 2 parameters)", "params[2]");
    expect_invalid(c, "[1]", "params: missing parameter 1 (b)", "params");
    expect_invalid(c, NULL, "params.a: missing", "params.a");
    /* A method without a schema is not checked: its handler judges. */
    CHECK_EQ_INT(call_text(c, "disc", "sleep", "[\"x\"]", &result, &error), RRPC_EREMOTE);
    CHECK_EQ_STR(json_string_value(json_object_get(error, "message")),
                 "parameter 0 must be an integer");
    json_decref(error);
    rrpc_client_close(c);
    stop_server(&r);
}

/* ---- rpc.discover ------------------------------------------------------------ */

static const json_t *method_named(const json_t *doc, const char *name)
{
    size_t i;
    const json_t *m;
    json_array_foreach(json_object_get(doc, "methods"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0)
            return m;
    }
    return NULL;
}

static void test_discover(void)
{
    running r;
    run_server(&r, new_server("disc"));
    rrpc_client *c = open_client();
    json_t *doc = NULL, *error = NULL;
    if (!CHECK_EQ_INT(call_text(c, "disc", "rpc.discover", NULL, &doc, &error), RRPC_OK))
        goto out;
    CHECK_EQ_STR(json_string_value(json_object_get(doc, "openrpc")), "1.3.2");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(doc, "info"), "title")), "disc");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(doc, "info"), "version")),
                 rrpc_version());
    CHECK(method_named(doc, "rpc.discover") == NULL); /* implied, as the spec says */
    CHECK(method_named(doc, "rpc.ping") != NULL);
    const json_t *add = method_named(doc, "add");
    if (CHECK(add != NULL)) {
        CHECK_EQ_STR(json_string_value(json_object_get(add, "description")), "a + b");
        CHECK_EQ_STR(json_string_value(json_object_get(add, "paramStructure")), "either");
        CHECK_JSON_EQ(
            json_object_get(add, "params"),
            "[{\"name\": \"a\", \"required\": true, \"description\": \"first\", "
            "\"schema\": {\"type\": \"integer\", \"description\": \"first\"}}, "
            "{\"name\": \"b\", \"required\": true, \"schema\": {\"type\": \"integer\"}}]");
        CHECK_JSON_EQ(json_object_get(add, "result"),
                      "{\"name\": \"result\", \"schema\": {\"type\": \"integer\"}}");
        CHECK_JSON_EQ(json_object_get(add, "errors"), "[{\"code\": 5, \"message\": \"too big\"}]");
    }
    const json_t *sleep = method_named(doc, "sleep"); /* from its informal shape */
    if (CHECK(sleep != NULL))
        CHECK_JSON_EQ(json_object_get(sleep, "params"),
                      "[{\"name\": \"ms\", \"schema\": {\"type\": \"integer\"}}]");
    json_decref(doc);
    /* Params are ignored, as rpc.ping's are. */
    CHECK_EQ_INT(call_text(c, "disc", "rpc.discover", "[1]", &doc, &error), RRPC_OK);
    json_decref(doc);
out:
    rrpc_client_close(c);
    stop_server(&r);
}

/* ---- server interceptors ------------------------------------------------------ */

typedef struct trail {
    pthread_mutex_t lock;
    char text[512];
} trail;

static trail seen = {PTHREAD_MUTEX_INITIALIZER, ""};

static void note(const char *fmt, const char *a, const char *b)
{
    pthread_mutex_lock(&seen.lock);
    size_t used = strlen(seen.text);
    snprintf(seen.text + used, sizeof seen.text - used, fmt, a, b);
    pthread_mutex_unlock(&seen.lock);
}

static int log_before(rrpc_request *req, void *udata)
{
    note("%s>%s ", (const char *)udata, rrpc_request_method(req));
    return 0;
}

static void log_after(rrpc_request *req, const json_t *result, const json_t *error, void *udata)
{
    (void)req;
    note("%s<%s ", (const char *)udata, result ? "ok" : error ? "err" : "none");
}

/* Authorisation from the request member "auth". */
static int auth_before(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *token = json_string_value(rrpc_request_member(req, "auth"));
    if (token != NULL && strcmp(token, "sesame") == 0)
        return 0;
    rrpc_request_error(req, -32010, "unauthorised", NULL);
    return 1;
}

/* Refuses "sleep" without saying why: -32603. */
static int mute_refusal(rrpc_request *req, void *udata)
{
    (void)udata;
    return strcmp(rrpc_request_method(req), "sleep") == 0;
}

static int add_auth(const char *service, const char *method, const json_t *params, json_t *members,
                    void *udata)
{
    (void)service, (void)method, (void)params;
    json_object_set_new(members, "auth", json_string(udata));
    return RRPC_OK;
}

static void test_server_interceptors(void)
{
    rrpc_server *s = new_server("disc");
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, log_before, log_after, "1"), RRPC_OK);
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, auth_before, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, log_before, log_after, "3"), RRPC_OK);
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, mute_refusal, NULL, NULL), RRPC_OK);
    running r;
    run_server(&r, s);
    rrpc_client *c = open_client(), *authed = open_client();
    CHECK_EQ_INT(rrpc_client_add_interceptor(authed, add_auth, NULL, "sesame"), RRPC_OK);
    json_t *result = NULL, *error = NULL;
    /* No auth: refused by the second before, even with bad params (the
     * schema check is innermost); the first after sees the error. */
    seen.text[0] = '\0';
    int before = handled;
    CHECK_EQ_INT(call_text(c, "disc", "add", "[1, \"x\"]", &result, &error), RRPC_EREMOTE);
    CHECK_EQ_INT(json_integer_value(json_object_get(error, "code")), -32010);
    json_decref(error);
    CHECK_EQ_STR(seen.text, "1>add 1<err ");
    CHECK_EQ_INT(handled, before);
    /* With auth: all befores in order, the handler, afters in reverse. */
    seen.text[0] = '\0';
    CHECK_EQ_INT(call_text(authed, "disc", "add", "[1, 2]", &result, &error), RRPC_OK);
    CHECK_JSON_EQ(result, "3");
    json_decref(result);
    CHECK_EQ_STR(seen.text, "1>add 3>add 3<ok 1<ok ");
    /* With auth and bad params: the schema check refuses, inside them all. */
    seen.text[0] = '\0';
    CHECK_EQ_INT(call_text(authed, "disc", "add", "[1, \"x\"]", &result, &error), RRPC_EREMOTE);
    CHECK_EQ_INT(json_integer_value(json_object_get(error, "code")), -32602);
    json_decref(error);
    CHECK_EQ_STR(seen.text, "1>add 3>add 3<err 1<err ");
    /* A refusal that sets no error: -32603, with data saying who. */
    CHECK_EQ_INT(call_text(authed, "disc", "sleep", "[1]", &result, &error), RRPC_EREMOTE);
    CHECK_EQ_INT(json_integer_value(json_object_get(error, "code")), -32603);
    CHECK_JSON_EQ(json_object_get(error, "data"), "\"refused by an interceptor\"");
    json_decref(error);
    /* Built-ins are wrapped too. */
    CHECK_EQ_INT(call_text(c, "disc", "rpc.discover", NULL, &result, &error), RRPC_EREMOTE);
    CHECK_EQ_INT(json_integer_value(json_object_get(error, "code")), -32010);
    json_decref(error);
    /* An unknown method never reaches them. */
    seen.text[0] = '\0';
    CHECK_EQ_INT(call_text(authed, "disc", "nosuch", NULL, &result, &error), RRPC_EREMOTE);
    CHECK_EQ_INT(json_integer_value(json_object_get(error, "code")), -32601);
    json_decref(error);
    CHECK_EQ_STR(seen.text, "");
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, log_before, NULL, NULL), RRPC_ESTATE);
    rrpc_client_close(c);
    rrpc_client_close(authed);
    stop_server(&r);
}

/* ---- client interceptors ------------------------------------------------------ */

static atomic_int afters, last_status;

static int refuse_sleep(const char *service, const char *method, const json_t *params,
                        json_t *members, void *udata)
{
    (void)service, (void)params, (void)members, (void)udata;
    return strcmp(method, "sleep") == 0 ? RRPC_ESTATE : RRPC_OK;
}

static int bad_member(const char *service, const char *method, const json_t *params,
                      json_t *members, void *udata)
{
    (void)service, (void)params, (void)udata;
    if (strcmp(method, "add") == 0 && json_array_size(params) == 3)
        json_object_set_new(members, "id", json_integer(1)); /* rrpc's own */
    return RRPC_OK;
}

static void count_after(const char *service, const char *method, int status, const json_t *result,
                        const json_t *error, void *udata)
{
    (void)result, (void)error, (void)udata;
    CHECK_EQ_STR(service, "disc");
    CHECK(method != NULL);
    afters++;
    last_status = status;
}

static void test_sync_client_interceptors(void)
{
    rrpc_server *s = new_server("disc");
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, auth_before, NULL, NULL), RRPC_OK);
    running r;
    run_server(&r, s);
    rrpc_client *c = open_client();
    CHECK_EQ_INT(rrpc_client_add_interceptor(c, NULL, NULL, NULL), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_client_add_interceptor(NULL, refuse_sleep, NULL, NULL), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_client_add_interceptor(c, NULL, count_after, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc_client_add_interceptor(c, refuse_sleep, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc_client_add_interceptor(c, add_auth, NULL, "sesame"), RRPC_OK);
    CHECK_EQ_INT(rrpc_client_add_interceptor(c, bad_member, NULL, NULL), RRPC_OK);
    json_t *result = NULL, *error = NULL;
    afters = 0;
    CHECK_EQ_INT(call_text(c, "disc", "add", "[2, 3]", &result, &error), RRPC_OK);
    CHECK_JSON_EQ(result, "5"); /* the auth member went with the request */
    json_decref(result);
    CHECK_EQ_INT(afters, 1);
    CHECK_EQ_INT(last_status, RRPC_OK);
    /* Refused before sending: nothing reaches the list. */
    CHECK_EQ_INT(call_text(c, "disc", "sleep", "[1]", &result, &error), RRPC_ESTATE);
    CHECK(strstr(rrpc_client_errmsg(c), "refused by client interceptor 1") != NULL);
    CHECK_EQ_INT(afters, 2);
    CHECK_EQ_INT(last_status, RRPC_ESTATE);
    CHECK(result == NULL && error == NULL);
    /* A member rrpc sets itself. */
    CHECK_EQ_INT(call_text(c, "disc", "add", "[1, 2, 3]", &result, &error), RRPC_EINVAL);
    CHECK(strstr(rrpc_client_errmsg(c), "'id'") != NULL);
    /* A remote error is an outcome too. */
    CHECK_EQ_INT(call_text(c, "disc", "add", "[1, \"x\"]", &result, &error), RRPC_EREMOTE);
    CHECK_EQ_INT(last_status, RRPC_EREMOTE);
    json_decref(error);
    /* Notifications are not intercepted (they would be refused here). */
    CHECK_EQ_INT(rrpc_notify(c, "disc", "sleep", NULL), RRPC_OK);
    rrpc_client_close(c);
    stop_server(&r);
}

static atomic_int async_done, async_status;

static void on_done(int status, json_t *result, json_t *error, void *udata)
{
    (void)error, (void)udata;
    /* The after ran first. */
    CHECK_EQ_INT(last_status, status);
    if (status == RRPC_OK)
        CHECK_JSON_EQ(result, "7");
    async_status = status;
    async_done++;
}

static void test_async_client_interceptors(void)
{
    rrpc_server *s = new_server("disc");
    CHECK_EQ_INT(rrpc_server_add_interceptor(s, auth_before, NULL, NULL), RRPC_OK);
    running r;
    run_server(&r, s);
    CHECK(wait_live("disc", 5)); /* the async client fails fast on a stale registration */
    rrpc_async *a = NULL;
    char err[256];
    if (!CHECK_EQ_INT(rrpc_async_open(&a, NULL, err, sizeof err), RRPC_OK)) {
        stop_server(&r);
        return;
    }
    CHECK_EQ_INT(rrpc_async_add_interceptor(a, NULL, count_after, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc_async_add_interceptor(a, refuse_sleep, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc_async_add_interceptor(a, add_auth, NULL, "sesame"), RRPC_OK);
    json_t *p = json_pack("[i, i]", 3, 4);
    afters = 0;
    last_status = -99;
    CHECK_EQ_INT(rrpc_async_call(a, "disc", "add", p, 5, on_done, NULL), RRPC_OK);
    WAIT_UNTIL(async_done == 1, 5 * time_scale());
    CHECK_EQ_INT(async_status, RRPC_OK);
    CHECK_EQ_INT(afters, 1);
    /* Refused: the callback never runs, the after does. */
    CHECK_EQ_INT(rrpc_async_call(a, "disc", "sleep", p, 5, on_done, NULL), RRPC_ESTATE);
    CHECK_EQ_INT(afters, 2);
    CHECK_EQ_INT(rrpc_async_add_interceptor(a, refuse_sleep, NULL, NULL), RRPC_ESTATE);
    json_decref(p);
    rrpc_async_close(a);
    CHECK_EQ_INT(async_done, 1);
    stop_server(&r);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_schema_that_does_not_compile();
    test_params_checked();
    test_discover();
    test_server_interceptors();
    test_sync_client_interceptors();
    test_async_client_interceptors();
    raw_close();
    return check_report();
}
