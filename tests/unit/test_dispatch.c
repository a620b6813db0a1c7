/* test_dispatch.c -- unit tests for src/dispatch.c and src/deadletter.c.
 *
 * rrpc__dispatch is the whole worker-side protocol minus the Redis calls:
 * one popped text in, one outcome out (reply key and response text, or a
 * dead-letter reason).  These tests feed it texts the way a worker would
 * and pin docs/PROTOCOL.md sections 2-6 on the result: where the response
 * goes, what it says (compared as JSON, never as text), when a message
 * becomes a dead letter and why, and the counters the server adds to its
 * stats.  Hostile input (bad UTF-8, huge or deeply nested texts, NUL
 * inside strings) must produce a dead letter, never a crash.  The
 * dead-letter record itself (section 6) is checked at the end.
 */
#include "core/clock.h"
#include "core/deadletter.h"
#include "core/dispatch.h"
#include "core/protocol.h"

#include "check.h"

#include <rrpc/rrpc.h>

#include <stdlib.h>
#include <string.h>

/* ---- handlers ---------------------------------------------------------- */

/* add(a, b): two numbers, positional or named, at most two of them. */
static json_t *h_add(rrpc_request *req, void *udata)
{
    (void)udata;
    double a, b;
    if (rrpc_param_count_max(req, 2) != RRPC_OK || rrpc_param_number(req, 0, "a", &a) != RRPC_OK ||
        rrpc_param_number(req, 1, "b", &b) != RRPC_OK)
        return NULL;
    return json_real(a + b);
}

/* Fails without saying why: the worker must answer -32603. */
static json_t *h_broken(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    return NULL;
}

/* An application error with data. */
static json_t *h_divide_by_zero(rrpc_request *req, void *udata)
{
    (void)udata;
    return rrpc_request_error(req, 1, "division by zero", json_pack("{s:i}", "dividend", 1));
}

/* Returns its params unchanged. */
static json_t *h_echo(rrpc_request *req, void *udata)
{
    (void)udata;
    return json_incref(rrpc_request_params(req));
}

/* Counts its calls in *(int *)udata: proves a handler ran. */
static json_t *h_count(rrpc_request *req, void *udata)
{
    (void)req;
    ++*(int *)udata;
    return json_null();
}

/* Returns the time left before the request's deadline (or null), and
 * the timeout a call made from here would get when asking for 1000 s. */
static json_t *h_left(rrpc_request *req, void *udata)
{
    (void)udata;
    double left = -1;
    if (!rrpc_request_time_left(req, &left))
        return json_pack("{snsf}", "left", "inherited", rrpc__inherited_timeout(1000));
    return json_pack("{sfsf}", "left", left, "inherited", rrpc__inherited_timeout(1000));
}

/* Records two effects for the worker to apply with the answer. */
static json_t *h_effect(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *incr[] = {"INCR", "effects"};
    const char *bad[] = {"SET", NULL};
    if (rrpc_request_add_effect(req, 2, incr) != RRPC_OK ||
        rrpc_request_add_effect(req, 2, bad) != RRPC_EINVAL ||
        rrpc_request_add_effect(req, 0, incr) != RRPC_EINVAL)
        return NULL;
    const char *hset[] = {"HSET", "h", "f", "v"};
    rrpc_request_add_effect(req, 4, hset);
    return json_true();
}

/* Sets an error, then changes its mind and returns a result. */
static json_t *h_result_wins(rrpc_request *req, void *udata)
{
    (void)udata;
    rrpc_request_error(req, 5, "first thought", NULL);
    return json_string("second thought");
}

/* typed(n: integer, s: string, flag: bool): the other typed accessors. */
static json_t *h_typed(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t n;
    const char *s;
    int flag;
    json_t *any;
    if (rrpc_param_int(req, 0, "n", &n) != RRPC_OK ||
        rrpc_param_string(req, 1, "s", &s) != RRPC_OK ||
        rrpc_param_bool(req, 2, "flag", &flag) != RRPC_OK ||
        rrpc_param_json(req, 3, "any", &any) != RRPC_OK)
        return NULL;
    return json_pack("[I,s,b,O]", n, s, flag, any);
}

/* Reports what the request accessors see. */
static json_t *h_introspect(rrpc_request *req, void *udata)
{
    (void)udata;
    json_t *id = rrpc_request_id(req);
    json_t *params = rrpc_request_params(req);
    return json_pack("{s:s,s:o,s:o}", "method", rrpc_request_method(req), "id",
                     id ? json_incref(id) : json_string("(notification)"), "params",
                     params ? json_incref(params) : json_string("(none)"));
}

static rrpc__methods methods;
static int count_calls;
static const rrpc__limits default_limits = {1 << 20, 1000, 0};
/* Redis time = local time + 5 s: deadlines must be judged on Redis's
 * clock, not on the worker's. */
static const rrpc__clock test_clock = {5000, 1};

static void register_methods(void)
{
    CHECK_EQ_INT(rrpc__methods_add(&methods, "add", h_add, NULL, "adds two numbers"), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "broken", h_broken, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "divide", h_divide_by_zero, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "echo", h_echo, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "count", h_count, &count_calls, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "result_wins", h_result_wins, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "typed", h_typed, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "introspect", h_introspect, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "left", h_left, NULL, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc__methods_add(&methods, "effect", h_effect, NULL, NULL), RRPC_OK);
}

/* ---- helpers ------------------------------------------------------------ */

static void run_limits(const char *text, size_t len, const rrpc__limits *limits, rrpc__outcome *out)
{
    rrpc__dispatch(&methods, limits, &test_clock, text, len, out);
}

static void run(const char *text, rrpc__outcome *out)
{
    run_limits(text, strlen(text), &default_limits, out);
}

/* The outcome's response text, decoded (new reference or NULL). */
static json_t *response_json(const rrpc__outcome *out)
{
    if (out->response == NULL)
        return NULL;
    return json_loads(out->response, RRPC__JSON_DECODE_FLAGS, NULL);
}

/* Checks a delivered response: KEY and the JSON of the response. */
static int expect_reply(const rrpc__outcome *out, const char *key, const char *json_text)
{
    int ok = CHECK_EQ_STR(out->reply_key, key);
    ok &= CHECK(out->dead_reason == NULL);
    ok &= CHECK(out->dead_response == NULL);
    json_t *resp = response_json(out);
    ok &= CHECK_JSON_EQ(resp, json_text);
    json_decref(resp);
    return ok;
}

static int expect_counters(const rrpc__outcome *out, unsigned requests, unsigned notifications,
                           unsigned errors)
{
    int ok = CHECK_EQ_INT(out->requests, requests);
    ok &= CHECK_EQ_INT(out->notifications, notifications);
    ok &= CHECK_EQ_INT(out->errors, errors);
    return ok;
}

/* Nothing sent and no dead letter. */
static int expect_silence(const rrpc__outcome *out)
{
    return CHECK(out->reply_key == NULL && out->response == NULL && out->dead_reason == NULL &&
                 out->dead_response == NULL);
}

/* A dead letter whose reason starts with PREFIX, nothing sent. */
static int expect_dead(const rrpc__outcome *out, const char *prefix)
{
    int ok = CHECK(out->reply_key == NULL && out->response == NULL);
    ok &= CHECK(out->dead_reason != NULL);
    if (out->dead_reason != NULL && strncmp(out->dead_reason, prefix, strlen(prefix)) != 0)
        ok &= CHECK_EQ_STR(out->dead_reason, prefix);
    return ok;
}

/* The error member of the delivered response, as a new reference. */
static json_t *delivered_error(const rrpc__outcome *out)
{
    json_t *resp = response_json(out);
    json_t *err = json_incref(json_object_get(resp, "error"));
    json_decref(resp);
    return err;
}

/* ---- the method table ------------------------------------------------- */

static void test_methods_reject_duplicates(void)
{
    CHECK_EQ_INT(rrpc__methods_add(&methods, "add", h_echo, NULL, NULL), RRPC_EEXIST);
    const rrpc__method *m = rrpc__methods_find(&methods, "add");
    if (CHECK(m != NULL)) {
        CHECK(m->fn == h_add);
        CHECK_EQ_STR(m->description, "adds two numbers");
    }
    CHECK(rrpc__methods_find(&methods, "nope") == NULL);
}

static void test_methods_table_grows(void)
{
    rrpc__methods m = {0};
    char name[16];
    int ok = 1;
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "m%d", i);
        ok &= rrpc__methods_add(&m, name, h_echo, NULL, NULL) == RRPC_OK;
    }
    CHECK(ok);
    CHECK_EQ_INT(m.count, 40);
    CHECK(rrpc__methods_find(&m, "m0") != NULL && rrpc__methods_find(&m, "m39") != NULL);
    rrpc__methods_free(&m);
    CHECK(m.items == NULL && m.count == 0);
}

/* ---- single calls ------------------------------------------------------ */

static void test_call_with_string_id_replies_to_id(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"k1\"}", &out);
    expect_reply(&out, "k1", "{\"jsonrpc\":\"2.0\",\"result\":3.0,\"id\":\"k1\"}");
    expect_counters(&out, 1, 0, 0);
    rrpc__outcome_clear(&out);
}

static void test_call_with_integer_id_replies_to_its_text(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":{\"a\":1.5,\"b\":2},\"id\":42}", &out);
    expect_reply(&out, "42", "{\"jsonrpc\":\"2.0\",\"result\":3.5,\"id\":42}");
    expect_counters(&out, 1, 0, 0);
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[0,0],\"id\":-7}", &out);
    expect_reply(&out, "-7", "{\"jsonrpc\":\"2.0\",\"result\":0.0,\"id\":-7}");
    rrpc__outcome_clear(&out);
}

static void test_call_with_reply_to_replies_there(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"k1\","
        "\"reply_to\":\"rrpc:reply:abc\"}",
        &out);
    expect_reply(&out, "rrpc:reply:abc", "{\"jsonrpc\":\"2.0\",\"result\":3.0,\"id\":\"k1\"}");
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":null,"
        "\"reply_to\":\"rk\"}",
        &out);
    expect_reply(&out, "rk", "{\"jsonrpc\":\"2.0\",\"result\":3.0,\"id\":null}");
    rrpc__outcome_clear(&out);
}

static void test_request_accessors(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"introspect\",\"params\":{\"x\":[1]},\"id\":\"i\"}",
        &out);
    expect_reply(&out, "i",
                 "{\"jsonrpc\":\"2.0\",\"id\":\"i\",\"result\":{\"method\":\"introspect\","
                 "\"id\":\"i\",\"params\":{\"x\":[1]}}}");
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"introspect\",\"id\":7}", &out);
    expect_reply(&out, "7",
                 "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"method\":\"introspect\","
                 "\"id\":7,\"params\":\"(none)\"}}");
    rrpc__outcome_clear(&out);
}

static void test_notification_runs_but_sends_nothing(void)
{
    rrpc__outcome out;
    int before = count_calls;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"count\"}", &out);
    CHECK_EQ_INT(count_calls, before + 1);
    expect_silence(&out);
    expect_counters(&out, 1, 1, 0);
    rrpc__outcome_clear(&out);
}

static void test_failing_notification_sends_nothing(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"no_such_method\",\"params\":[]}", &out);
    expect_silence(&out);
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"divide\",\"reply_to\":\"rk\"}", &out);
    expect_silence(&out);
    CHECK_EQ_INT(out.notifications, 1);
    rrpc__outcome_clear(&out);
}

static void test_method_not_found_names_method(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":\"k\"}", &out);
    expect_reply(&out, "k",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":"
                 "\"Method not found\",\"data\":\"nope\"},\"id\":\"k\"}");
    expect_counters(&out, 1, 0, 1);
    rrpc__outcome_clear(&out);
}

static void test_handler_null_without_error_is_internal_error(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"broken\",\"id\":\"k\"}", &out);
    expect_reply(&out, "k",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":"
                 "\"Internal error\"},\"id\":\"k\"}");
    expect_counters(&out, 1, 0, 1);
    rrpc__outcome_clear(&out);
}

static void test_application_error_with_data(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"divide\",\"params\":[1,0],\"id\":9}", &out);
    expect_reply(&out, "9",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":"
                 "\"division by zero\",\"data\":{\"dividend\":1}},\"id\":9}");
    expect_counters(&out, 1, 0, 1);
    rrpc__outcome_clear(&out);
}

static void test_result_wins_over_stray_error(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"result_wins\",\"id\":\"k\"}", &out);
    expect_reply(&out, "k", "{\"jsonrpc\":\"2.0\",\"result\":\"second thought\",\"id\":\"k\"}");
    expect_counters(&out, 1, 0, 0);
    rrpc__outcome_clear(&out);
}

static void test_echo_params_unchanged(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"a\":[1,{\"b\":null}],\"c\":"
        "\"\xc3\xa9\"},"
        "\"id\":\"k\"}",
        &out);
    expect_reply(&out, "k",
                 "{\"jsonrpc\":\"2.0\",\"result\":{\"a\":[1,{\"b\":null}],"
                 "\"c\":\"\xc3\xa9\"},\"id\":\"k\"}");
    rrpc__outcome_clear(&out);
}

/* ---- invalid params ----------------------------------------------------- */

/* Dispatches TEXT (a call with id "k") and checks for -32602 whose message
 * contains MESSAGE_PART. */
static void expect_invalid_params(const char *text, const char *message_part, int line)
{
    rrpc__outcome out;
    run(text, &out);
    json_t *err = delivered_error(&out);
    int ok = CHECK_EQ_STR(out.reply_key, "k");
    ok &=
        CHECK_EQ_INT(json_integer_value(json_object_get(err, "code")), RRPC_JSONRPC_INVALID_PARAMS);
    const char *message = json_string_value(json_object_get(err, "message"));
    ok &= CHECK(message != NULL && strstr(message, message_part) != NULL);
    ok &= CHECK_EQ_INT(out.errors, 1);
    if (!ok)
        fprintf(stderr, "    (line %d) %s\n    -> %s\n", line, text,
                out.response ? out.response : "(no response)");
    json_decref(err);
    rrpc__outcome_clear(&out);
}

#define EXPECT_INVALID_PARAMS(text, part) expect_invalid_params(text, part, __LINE__)

static void test_invalid_params_name_the_parameter(void)
{
    EXPECT_INVALID_PARAMS("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1],\"id\":\"k\"}",
                          "missing parameter 1");
    EXPECT_INVALID_PARAMS("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":\"k\"}",
                          "missing parameter 0");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":{\"a\":1},\"id\":\"k\"}",
        "missing parameter 'b'");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[\"x\",2],\"id\":\"k\"}",
        "parameter 0 must be a number");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":{\"a\":1,\"b\":true},\"id\":\"k\"}",
        "parameter 'b' must be a number");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2,3],\"id\":\"k\"}",
        "too many parameters: 3 given, at most 2 accepted");
    EXPECT_INVALID_PARAMS("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":{\"a\":1,\"b\":2,"
                          "\"c\":3},\"id\":\"k\"}",
                          "too many parameters: 3 given, at most 2 accepted");
}

static void test_typed_params(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":[5,\"s\",true,{\"x\":1}],\"id\":"
        "\"k\"}",
        &out);
    expect_reply(&out, "k",
                 "{\"jsonrpc\":\"2.0\",\"result\":[5,\"s\",true,{\"x\":1}],\"id\":\"k\"}");
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":{\"any\":null,\"flag\":false,"
        "\"s\":\"\",\"n\":-3},\"id\":\"k\"}",
        &out);
    expect_reply(&out, "k", "{\"jsonrpc\":\"2.0\",\"result\":[-3,\"\",false,null],\"id\":\"k\"}");
    rrpc__outcome_clear(&out);

    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":[1.5,\"s\",true,0],\"id\":\"k\"}",
        "parameter 0 must be an integer");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":{\"n\":1,\"s\":2},\"id\":\"k\"}",
        "parameter 's' must be a string");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":[1,\"s\",1,0],\"id\":\"k\"}",
        "parameter 2 must be true or false");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":[1,\"s\",false],\"id\":\"k\"}",
        "missing parameter 3");
    EXPECT_INVALID_PARAMS(
        "{\"jsonrpc\":\"2.0\",\"method\":\"typed\",\"params\":{\"n\":1,\"s\":\"\",\"flag\":true},"
        "\"id\":\"k\"}",
        "missing parameter 'any'");
}

/* ---- dead letters before parsing ---------------------------------------- */

static void test_parse_error_is_dead_letter(void)
{
    rrpc__outcome out;
    run("garbage", &out);
    expect_dead(&out, "parse error: ");
    CHECK(out.dead_response == NULL);
    expect_counters(&out, 0, 0, 1);
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":\"k\"", &out); /* truncated */
    expect_dead(&out, "parse error: ");
    rrpc__outcome_clear(&out);

    run("", &out);
    expect_dead(&out, "parse error: ");
    rrpc__outcome_clear(&out);
}

static void test_invalid_utf8_is_dead_letter(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"\xff\xfe\"],\"id\":\"k\"}", &out);
    expect_dead(&out, "invalid UTF-8");
    expect_counters(&out, 0, 0, 1);
    rrpc__outcome_clear(&out);

    run("[\"\xc3\"]", &out); /* truncated two-byte sequence */
    expect_dead(&out, "invalid UTF-8");
    rrpc__outcome_clear(&out);
}

static void test_too_large_is_dead_letter_before_parsing(void)
{
    const char *text = "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":\"k\"}";
    size_t len = strlen(text);
    rrpc__limits limits = {len - 1, 1000, 0};
    rrpc__outcome out;
    int before = count_calls;
    run_limits(text, len, &limits, &out);
    char expected[96];
    snprintf(expected, sizeof expected, "too large: %zu bytes (limit %zu)", len, len - 1);
    expect_dead(&out, "too large: ");
    CHECK_EQ_STR(out.dead_reason, expected);
    CHECK_EQ_INT(count_calls, before); /* never run */
    CHECK_EQ_INT(out.requests, 0);
    rrpc__outcome_clear(&out);

    limits.max_request_bytes = len; /* exactly at the limit is fine */
    run_limits(text, len, &limits, &out);
    expect_reply(&out, "k", "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":\"k\"}");
    rrpc__outcome_clear(&out);
}

static void test_deep_nesting_is_parse_error_not_crash(void)
{
    enum { DEPTH = 3000 };
    char *text = malloc(2 * DEPTH + 1);
    if (!CHECK(text != NULL))
        return;
    memset(text, '[', DEPTH);
    memset(text + DEPTH, ']', DEPTH);
    text[2 * DEPTH] = '\0';
    rrpc__outcome out;
    run(text, &out);
    expect_dead(&out, "parse error: ");
    rrpc__outcome_clear(&out);

    /* The same depth inside a request's params. */
    size_t prefix_len = strlen("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":\"k\",\"params\":");
    char *req = malloc(prefix_len + 2 * DEPTH + 2);
    if (CHECK(req != NULL)) {
        memcpy(req,
               "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":\"k\",\"params\":", prefix_len);
        memcpy(req + prefix_len, text, 2 * DEPTH);
        memcpy(req + prefix_len + 2 * DEPTH, "}", 2);
        run(req, &out);
        expect_dead(&out, "parse error: ");
        rrpc__outcome_clear(&out);
        free(req);
    }
    free(text);
}

static void test_nul_inside_string_round_trips(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"a\\u0000b\"],\"id\":\"k\"}", &out);
    expect_reply(&out, "k", "{\"jsonrpc\":\"2.0\",\"result\":[\"a\\u0000b\"],\"id\":\"k\"}");
    json_t *resp = response_json(&out);
    json_t *s = json_array_get(json_object_get(resp, "result"), 0);
    CHECK_EQ_INT(json_string_length(s), 3);
    CHECK(s != NULL && memcmp(json_string_value(s), "a\0b", 3) == 0);
    CHECK(out.response != NULL && strstr(out.response, "\\u0000") != NULL);
    json_decref(resp);
    rrpc__outcome_clear(&out);
}

/* ---- invalid requests ------------------------------------------------- */

static void test_invalid_request_with_string_id_answers_with_id(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"1.0\",\"method\":\"add\",\"id\":\"abc\",\"reply_to\":\"rk\"}", &out);
    expect_reply(&out, "rk",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                 "\"Invalid Request\",\"data\":\"member 'jsonrpc' must be exactly "
                 "\\\"2.0\\\"\"},\"id\":\"abc\"}");
    expect_counters(&out, 1, 0, 1);
    rrpc__outcome_clear(&out);

    /* Without reply_to the string id is the key. */
    run("{\"jsonrpc\":\"2.0\",\"method\":1,\"id\":\"abc\"}", &out);
    expect_reply(&out, "abc",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                 "\"Invalid Request\",\"data\":\"member 'method' must be a "
                 "string\"},\"id\":\"abc\"}");
    rrpc__outcome_clear(&out);

    /* An integer id is echoed as a number. */
    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":\"x\",\"id\":12}", &out);
    json_t *resp = response_json(&out);
    CHECK_EQ_STR(out.reply_key, "12");
    CHECK_JSON_EQ(json_object_get(resp, "id"), "12");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(resp, "error"), "code")),
                 RRPC_JSONRPC_INVALID_REQUEST);
    json_decref(resp);
    rrpc__outcome_clear(&out);
}

static void test_invalid_id_answers_with_null_id(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":{\"x\":1},\"reply_to\":\"rk\"}", &out);
    expect_reply(&out, "rk",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                 "\"Invalid Request\",\"data\":\"member 'id' must be a string, a "
                 "number or null\"},\"id\":null}");
    expect_counters(&out, 1, 0, 1);
    rrpc__outcome_clear(&out);

    run("{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":true,\"reply_to\":\"rk\"}", &out);
    json_t *resp = response_json(&out);
    CHECK_EQ_STR(out.reply_key, "rk");
    CHECK(json_is_null(json_object_get(resp, "id")));
    json_decref(resp);
    rrpc__outcome_clear(&out);
}

static void test_invalid_request_without_key_is_dead_letter(void)
{
    rrpc__outcome out;
    run("{\"jsonrpc\":\"2.0\",\"method\":1}", &out);
    expect_dead(&out, "no reply key");
    CHECK_JSON_EQ(out.dead_response, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                                     "\"Invalid Request\",\"data\":\"member 'method' must be a "
                                     "string\"},\"id\":null}");
    expect_counters(&out, 1, 0, 1);
    rrpc__outcome_clear(&out);

    /* A JSON scalar is valid JSON but no request. */
    run("\"hello\"", &out);
    expect_dead(&out, "no reply key");
    json_t *err = json_object_get(out.dead_response, "error");
    CHECK_EQ_INT(json_integer_value(json_object_get(err, "code")), RRPC_JSONRPC_INVALID_REQUEST);
    rrpc__outcome_clear(&out);
}

static void test_null_id_without_reply_to_runs_then_dead_letter(void)
{
    rrpc__outcome out;
    int before = count_calls;
    run("{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":null}", &out);
    CHECK_EQ_INT(count_calls, before + 1); /* it may have effects the caller wants */
    CHECK_EQ_STR(out.dead_reason, "no reply key");
    CHECK(out.reply_key == NULL && out.response == NULL);
    CHECK_JSON_EQ(out.dead_response, "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":null}");
    expect_counters(&out, 1, 0, 0);
    rrpc__outcome_clear(&out);
}

/* ---- batches ---------------------------------------------------------- */

static void test_batch_mixed_answers_in_order(void)
{
    rrpc__outcome out;
    int before = count_calls;
    run("[{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"a\",\"reply_to\":"
        "\"rk\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":7,\"id\":\"b\",\"reply_to\":\"rk\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"count\"},"
        " 5,"
        " {\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":3,\"reply_to\":\"rk\"}]",
        &out);
    expect_reply(
        &out, "rk",
        "[{\"jsonrpc\":\"2.0\",\"result\":3.0,\"id\":\"a\"},"
        " {\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
        "   \"data\":\"member 'method' must be a string\"},\"id\":\"b\"},"
        " {\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
        "   \"data\":\"request must be a JSON object\"},\"id\":null},"
        " {\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":\"Method not found\","
        "   \"data\":\"nope\"},\"id\":3}]");
    CHECK_EQ_INT(count_calls, before + 1);
    expect_counters(&out, 5, 1, 3);
    rrpc__outcome_clear(&out);
}

static void test_batch_key_comes_from_first_element_with_one(void)
{
    rrpc__outcome out;
    run("[{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],\"id\":null},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[2,2],\"id\":\"second\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[3,3],\"id\":\"third\"}]",
        &out);
    expect_reply(&out, "second",
                 "[{\"jsonrpc\":\"2.0\",\"result\":2.0,\"id\":null},"
                 " {\"jsonrpc\":\"2.0\",\"result\":4.0,\"id\":\"second\"},"
                 " {\"jsonrpc\":\"2.0\",\"result\":6.0,\"id\":\"third\"}]");
    rrpc__outcome_clear(&out);
}

/* Regression: a NUL inside the method name must not run the method before it. */
static void test_method_name_with_nul_is_not_found(void)
{
    rrpc__outcome out;
    const char text[] = "{\"jsonrpc\":\"2.0\",\"method\":\"echo\\u0000evil\",\"id\":\"k\"}";
    run(text, &out);
    json_t *resp = response_json(&out);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(resp, "error"), "code")),
                 -32601);
    CHECK_EQ_INT(json_string_length(json_object_get(json_object_get(resp, "error"), "data")), 9);
    json_decref(resp);
    rrpc__outcome_clear(&out);
}

/* Regression: a notification's reply_to does not name the batch's key. */
static void test_batch_key_skips_notifications(void)
{
    rrpc__outcome out;
    run("[{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[],\"reply_to\":\"notif\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[],\"id\":\"real\"}]",
        &out);
    CHECK_EQ_STR(out.reply_key, "real");
    rrpc__outcome_clear(&out);
}

static void test_batch_of_notifications_sends_nothing(void)
{
    rrpc__outcome out;
    int before = count_calls;
    run("[{\"jsonrpc\":\"2.0\",\"method\":\"count\"},{\"jsonrpc\":\"2.0\",\"method\":\"count\"},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}]",
        &out);
    CHECK_EQ_INT(count_calls, before + 2);
    expect_silence(&out);
    expect_counters(&out, 3, 3, 0);
    rrpc__outcome_clear(&out);
}

static void test_batch_without_key_is_dead_letter(void)
{
    rrpc__outcome out;
    run("[{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":null}, 1]", &out);
    expect_dead(&out, "no reply key");
    CHECK(json_is_array(out.dead_response));
    CHECK_EQ_INT(json_array_size(out.dead_response), 2);
    rrpc__outcome_clear(&out);
}

static void test_empty_batch_is_dead_letter_with_error(void)
{
    rrpc__outcome out;
    run("[]", &out);
    expect_dead(&out, "no reply key");
    CHECK_JSON_EQ(out.dead_response, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                                     "\"Invalid Request\",\"data\":\"empty batch\"},\"id\":null}");
    expect_counters(&out, 0, 0, 1);
    rrpc__outcome_clear(&out);
}

static void test_batch_over_limit_is_one_error(void)
{
    rrpc__limits limits = {1 << 20, 2, 0};
    const char *text =
        "[{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":\"a\",\"reply_to\":\"rk\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":\"b\",\"reply_to\":\"rk\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":\"c\",\"reply_to\":\"rk\"}]";
    rrpc__outcome out;
    int before = count_calls;
    run_limits(text, strlen(text), &limits, &out);
    expect_reply(&out, "rk",
                 "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                 "\"Invalid Request\",\"data\":\"batch of 3 requests exceeds the "
                 "limit of 2\"},\"id\":null}");
    CHECK_EQ_INT(count_calls, before); /* nothing ran */
    CHECK_EQ_INT(out.errors, 1);
    rrpc__outcome_clear(&out);

    /* At the limit the batch is served. */
    const char *two =
        "[{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":\"a\",\"reply_to\":\"rk\"},"
        " {\"jsonrpc\":\"2.0\",\"method\":\"count\",\"id\":\"b\",\"reply_to\":\"rk\"}]";
    run_limits(two, strlen(two), &limits, &out);
    CHECK_EQ_STR(out.reply_key, "rk");
    CHECK_EQ_INT(count_calls, before + 2);
    rrpc__outcome_clear(&out);
}

static void test_nested_batch_element_is_invalid(void)
{
    rrpc__outcome out;
    run("[[{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":\"x\"}],"
        " {\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],\"id\":\"k\"}]",
        &out);
    json_t *resp = response_json(&out);
    CHECK_EQ_STR(out.reply_key, "k");
    CHECK_EQ_INT(json_array_size(resp), 2);
    CHECK(json_is_null(json_object_get(json_array_get(resp, 0), "id")));
    CHECK_JSON_EQ(json_object_get(json_array_get(resp, 1), "result"), "2.0");
    json_decref(resp);
    rrpc__outcome_clear(&out);
}

static void test_outcome_clear_is_idempotent(void)
{
    rrpc__outcome out;
    run("[]", &out);
    rrpc__outcome_clear(&out);
    CHECK(out.dead_reason == NULL && out.dead_response == NULL);
    rrpc__outcome_clear(&out);
    CHECK(out.reply_key == NULL);
}

/* ---- deadletter.c ------------------------------------------------------ */

/* Decodes a dead-letter text (new reference) and checks the common fields. */
static json_t *decode_dead_letter(char *text, const char *service, const char *reason)
{
    if (!CHECK(text != NULL))
        return NULL;
    json_t *rec = json_loads(text, RRPC__JSON_DECODE_FLAGS, NULL);
    free(text);
    if (!CHECK(json_is_object(rec))) {
        json_decref(rec);
        return NULL;
    }
    CHECK_EQ_STR(json_string_value(json_object_get(rec, "service")), service);
    CHECK_EQ_STR(json_string_value(json_object_get(rec, "reason")), reason);
    json_t *t = json_object_get(rec, "time");
    CHECK(json_is_real(t) && json_real_value(t) > 1.5e9);
    return rec;
}

static void test_dead_letter_keeps_utf8_message_as_text(void)
{
    const char *msg = "garbage \xc3\xa9";
    json_t *rec = decode_dead_letter(
        rrpc__dead_letter_text("calc", "parse error: x", msg, strlen(msg), 1 << 20, NULL, NULL),
        "calc", "parse error: x");
    if (rec == NULL)
        return;
    CHECK_EQ_STR(json_string_value(json_object_get(rec, "message")), msg);
    CHECK(json_object_get(rec, "message_base64") == NULL);
    CHECK(json_object_get(rec, "response") == NULL);
    CHECK_EQ_INT(json_object_size(rec), 4);
    json_decref(rec);
}

static void test_dead_letter_keeps_nul_bytes_in_message(void)
{
    json_t *rec = decode_dead_letter(
        rrpc__dead_letter_text("calc", "r", "a\0b", 3, 1 << 20, NULL, NULL), "calc", "r");
    if (rec == NULL)
        return;
    json_t *m = json_object_get(rec, "message");
    CHECK_EQ_INT(json_string_length(m), 3);
    CHECK(m != NULL && memcmp(json_string_value(m), "a\0b", 3) == 0);
    json_decref(rec);
}

/* Dead-letter MESSAGE (invalid UTF-8) must be stored as BASE64. */
static void expect_base64(const char *message, size_t len, const char *base64, int line)
{
    json_t *rec = decode_dead_letter(
        rrpc__dead_letter_text("svc", "invalid UTF-8", message, len, 1 << 20, NULL, NULL), "svc",
        "invalid UTF-8");
    if (rec == NULL)
        return;
    int ok = CHECK_EQ_STR(json_string_value(json_object_get(rec, "message_base64")), base64);
    ok &= CHECK(json_object_get(rec, "message") == NULL);
    if (!ok)
        fprintf(stderr, "    (line %d)\n", line);
    json_decref(rec);
}

#define EXPECT_BASE64(message, len, base64) expect_base64(message, len, base64, __LINE__)

static void test_dead_letter_stores_invalid_utf8_as_base64(void)
{
    EXPECT_BASE64("\xff\xfe\x41", 3, "//5B");
    EXPECT_BASE64("\xff", 1, "/w==");
    EXPECT_BASE64("\xff\xfe", 2, "//4=");
    EXPECT_BASE64("ab\xc3", 3, "YWLD");
    EXPECT_BASE64("\x80hello", 6, "gGhlbGxv");
    EXPECT_BASE64("{\"x\":\"\xed\xa0\x80\"}", 11, "eyJ4Ijoi7aCAIn0="); /* a lone surrogate */
}

static void test_dead_letter_includes_response_when_given(void)
{
    json_t *response = json_pack("{s:s,s:n,s:i}", "jsonrpc", "2.0", "id", "result", 3);
    const char *msg = "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":null}";
    json_t *rec = decode_dead_letter(
        rrpc__dead_letter_text("calc", "no reply key", msg, strlen(msg), 1 << 20, response, NULL),
        "calc", "no reply key");
    CHECK_EQ_INT(response->refcount, 1); /* borrowed, not stolen */
    if (rec != NULL) {
        CHECK_JSON_EQ(json_object_get(rec, "response"),
                      "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":3}");
        CHECK_EQ_STR(json_string_value(json_object_get(rec, "message")), msg);
    }
    json_decref(rec);
    json_decref(response);
}

static void test_dead_letter_of_dispatch_outcome(void)
{
    /* The path a worker takes: dispatch, then file what it could not send. */
    const char *text = "[]";
    rrpc__outcome out;
    run(text, &out);
    if (CHECK(out.dead_reason != NULL)) {
        json_t *rec =
            decode_dead_letter(rrpc__dead_letter_text("calc", out.dead_reason, text, strlen(text),
                                                      1 << 20, out.dead_response, NULL),
                               "calc", "no reply key");
        if (rec != NULL) {
            CHECK_EQ_STR(json_string_value(json_object_get(rec, "message")), "[]");
            CHECK_EQ_INT(json_integer_value(json_object_get(
                             json_object_get(json_object_get(rec, "response"), "error"), "code")),
                         RRPC_JSONRPC_INVALID_REQUEST);
        }
        json_decref(rec);
    }
    rrpc__outcome_clear(&out);
}

/* A request text with a deadline DELTA_MS from now on the test clock. */
static void with_deadline(char *buf, size_t len, const char *method, long long delta_ms)
{
    snprintf(buf, len, "{\"jsonrpc\":\"2.0\",\"method\":\"%s\",\"id\":\"d\",\"deadline\":%lld}",
             method, rrpc__clock_redis_ms(&test_clock) + delta_ms);
}

static void test_expired_request_is_refused_not_run(void)
{
    char text[256];
    with_deadline(text, sizeof text, "count", -1);
    int before = count_calls;
    rrpc__outcome out;
    run(text, &out);
    CHECK_EQ_INT(count_calls, before); /* never run */
    CHECK(out.response && strstr(out.response, "\"code\":-32000") &&
          strstr(out.response, "Deadline exceeded"));
    CHECK_EQ_INT((int)out.expired, 1);
    CHECK_EQ_INT((int)out.errors, 1);
    rrpc__outcome_clear(&out);
    /* A deadline 4 s ahead on Redis's clock is 1 s in the worker's past
     * if the worker wrongly used its own clock: it must still run. */
    with_deadline(text, sizeof text, "count", 4000);
    run(text, &out);
    CHECK_EQ_INT(count_calls, before + 1);
    CHECK_EQ_INT((int)out.expired, 0);
    rrpc__outcome_clear(&out);
}

static void test_handler_sees_and_passes_on_time_left(void)
{
    char text[256];
    with_deadline(text, sizeof text, "left", 2000);
    rrpc__outcome out;
    run(text, &out);
    json_t *r = out.response ? json_loads(out.response, 0, NULL) : NULL;
    double left = json_real_value(json_object_get(json_object_get(r, "result"), "left"));
    double inherited = json_real_value(json_object_get(json_object_get(r, "result"), "inherited"));
    CHECK(left > 1.5 && left <= 2.0);
    CHECK(inherited > 1.5 && inherited <= left);
    json_decref(r);
    rrpc__outcome_clear(&out);
    /* Without a deadline: nothing to report, nothing inherited. */
    run("{\"jsonrpc\":\"2.0\",\"method\":\"left\",\"id\":\"d\"}", &out);
    CHECK(out.response && strstr(out.response, "\"left\":null") &&
          strstr(out.response, "\"inherited\":1000.0"));
    rrpc__outcome_clear(&out);
    CHECK(rrpc__inherited_timeout(7) == 7); /* outside any handler */
    /* A deadline that is not a positive integer is ignored. */
    run("{\"jsonrpc\":\"2.0\",\"method\":\"left\",\"id\":\"d\",\"deadline\":\"soon\"}", &out);
    CHECK(out.response && strstr(out.response, "\"left\":null"));
    rrpc__outcome_clear(&out);
}

/* Reply keys have no length limit of their own (Redis keys may be long). */
static void test_long_reply_key(void)
{
    char key[3001], text[3200];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    snprintf(text, sizeof text,
             "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":1,"
             "\"reply_to\":\"%s\"}",
             key);
    rrpc__outcome out;
    run(text, &out);
    CHECK(out.reply_key != NULL && out.reply_key_len == sizeof key - 1 &&
          memcmp(out.reply_key, key, sizeof key - 1) == 0 && out.dead_reason == NULL);
    rrpc__outcome_clear(&out);
    /* The same key as the id, escaped in JSON: decoded, it is shorter. */
    snprintf(text, sizeof text,
             "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],"
             "\"id\":\"\\u006b%s\"}",
             key + 1);
    run(text, &out);
    CHECK(out.reply_key != NULL && out.reply_key_len == sizeof key - 1 &&
          memcmp(out.reply_key, key, sizeof key - 1) == 0);
    rrpc__outcome_clear(&out);
}

static void test_effects_are_collected_for_the_worker(void)
{
    rrpc__outcome out;
    run("[{\"jsonrpc\":\"2.0\",\"method\":\"effect\",\"id\":\"e\"},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"effect\"}]",
        &out);
    CHECK_JSON_EQ(out.effects, "[[\"INCR\",\"effects\"],[\"HSET\",\"h\",\"f\",\"v\"],"
                               "[\"INCR\",\"effects\"],[\"HSET\",\"h\",\"f\",\"v\"]]");
    rrpc__outcome_clear(&out);
    CHECK(out.effects == NULL);
}

int main(void)
{
    register_methods();
    test_expired_request_is_refused_not_run();
    test_handler_sees_and_passes_on_time_left();
    test_effects_are_collected_for_the_worker();
    test_long_reply_key();
    test_methods_reject_duplicates();
    test_methods_table_grows();

    test_call_with_string_id_replies_to_id();
    test_call_with_integer_id_replies_to_its_text();
    test_call_with_reply_to_replies_there();
    test_request_accessors();
    test_notification_runs_but_sends_nothing();
    test_failing_notification_sends_nothing();
    test_method_not_found_names_method();
    test_handler_null_without_error_is_internal_error();
    test_application_error_with_data();
    test_result_wins_over_stray_error();
    test_echo_params_unchanged();

    test_invalid_params_name_the_parameter();
    test_typed_params();

    test_parse_error_is_dead_letter();
    test_invalid_utf8_is_dead_letter();
    test_too_large_is_dead_letter_before_parsing();
    test_deep_nesting_is_parse_error_not_crash();
    test_nul_inside_string_round_trips();

    test_invalid_request_with_string_id_answers_with_id();
    test_invalid_id_answers_with_null_id();
    test_invalid_request_without_key_is_dead_letter();
    test_null_id_without_reply_to_runs_then_dead_letter();

    test_batch_mixed_answers_in_order();
    test_batch_key_comes_from_first_element_with_one();
    test_batch_of_notifications_sends_nothing();
    test_batch_key_skips_notifications();
    test_method_name_with_nul_is_not_found();
    test_batch_without_key_is_dead_letter();
    test_empty_batch_is_dead_letter_with_error();
    test_batch_over_limit_is_one_error();
    test_nested_batch_element_is_invalid();
    test_outcome_clear_is_idempotent();

    test_dead_letter_keeps_utf8_message_as_text();
    test_dead_letter_keeps_nul_bytes_in_message();
    test_dead_letter_stores_invalid_utf8_as_base64();
    test_dead_letter_includes_response_when_given();
    test_dead_letter_of_dispatch_outcome();

    rrpc__methods_free(&methods);
    return check_report();
}
