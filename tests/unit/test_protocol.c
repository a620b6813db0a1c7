/* test_protocol.c -- unit tests for src/protocol.c and the identifiers of
 * src/random.c.
 *
 * protocol.c holds the rules of docs/PROTOCOL.md that every peer, in any
 * language, must agree on: the shape of requests and responses (section 2
 * and 4), which requests are invalid, and where a response goes (section 3,
 * the reply key).  A regression here silently breaks interoperability, so
 * each rule gets a test of its own.  random.c's reply keys are capabilities
 * (section 3, "reply keys must be unguessable"), so their form is pinned too.
 */
#include "core/internal.h"

#include "check.h"
#include "core/deadletter.h"
#include "core/protocol.h"
#include "core/keys.h"
#include "core/random.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* A decoded JSON text (test input); aborts the test run if it is not JSON,
 * since that is a bug in the test itself. */
static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, RRPC__JSON_DECODE_FLAGS, &jerr);
    if (v == NULL) {
        fprintf(stderr, "test input is not JSON (%s): %s\n", jerr.text, text);
        exit(2);
    }
    return v;
}

/* ---- rrpc__request_build ------------------------------------------- */

static void test_build_call_with_params(void)
{
    json_t *params = J("[1, 2]");
    json_t *req = rrpc__request_build("add", params, "abc", NULL);
    CHECK_JSON_EQ(req, "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"abc\"}");
    CHECK_EQ_INT(params->refcount, 2); /* borrowed: the request holds its own reference */
    json_decref(req);
    CHECK_EQ_INT(params->refcount, 1);
    json_decref(params);
}

static void test_build_call_without_params_omits_member(void)
{
    json_t *req = rrpc__request_build("ping", NULL, "abc", NULL);
    CHECK_JSON_EQ(req, "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":\"abc\"}");
    CHECK(json_object_get(req, "params") == NULL);
    json_decref(req);
}

static void test_build_notification_has_no_id(void)
{
    json_t *params = J("{\"level\":\"info\"}");
    json_t *req = rrpc__request_build("log", params, NULL, NULL);
    CHECK_JSON_EQ(req, "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"level\":\"info\"}}");
    CHECK(json_object_get(req, "id") == NULL);
    CHECK(json_object_get(req, "reply_to") == NULL);
    json_decref(req);
    json_decref(params);
}

static void test_build_with_reply_to(void)
{
    json_t *req = rrpc__request_build("add", NULL, "7", "rrpc:reply:k");
    CHECK_JSON_EQ(req, "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"id\":\"7\","
                       "\"reply_to\":\"rrpc:reply:k\"}");
    json_decref(req);
}

static void test_built_request_is_valid(void)
{
    json_t *params = J("[1]");
    json_t *req = rrpc__request_build("m", params, "id", "rk");
    const char *why = NULL;
    CHECK_EQ_INT(rrpc__request_validate(req, &why), 0);
    json_decref(req);
    json_decref(params);
}

static void test_build_rejects_null_method(void)
{
    CHECK(rrpc__request_build(NULL, NULL, "id", NULL) == NULL);
}

/* ---- rrpc__request_validate ---------------------------------------- */

/* TEXT must be rejected with RRPC_JSONRPC_INVALID_REQUEST and a reason
 * containing WHY_PART. */
static void expect_invalid(const char *text, const char *why_part, int line)
{
    json_t *req = J(text);
    const char *why = NULL;
    int rc = rrpc__request_validate(req, &why);
    int ok = CHECK_EQ_INT(rc, RRPC_JSONRPC_INVALID_REQUEST);
    ok &= CHECK(why != NULL && strstr(why, why_part) != NULL);
    if (!ok)
        fprintf(stderr, "    (line %d) %s: why = %s\n", line, text, why ? why : "NULL");
    json_decref(req);
}

#define EXPECT_INVALID(text, why_part) expect_invalid(text, why_part, __LINE__)

static void expect_valid(const char *text, int line)
{
    json_t *req = J(text);
    const char *why = NULL;
    if (!CHECK_EQ_INT(rrpc__request_validate(req, &why), 0))
        fprintf(stderr, "    (line %d) %s: why = %s\n", line, text, why ? why : "NULL");
    json_decref(req);
}

#define EXPECT_VALID(text) expect_valid(text, __LINE__)

static void test_validate_rejects_non_objects(void)
{
    EXPECT_INVALID("[]", "JSON object");
    EXPECT_INVALID("[{\"jsonrpc\":\"2.0\",\"method\":\"m\"}]", "JSON object");
    EXPECT_INVALID("\"request\"", "JSON object");
    EXPECT_INVALID("42", "JSON object");
    EXPECT_INVALID("null", "JSON object");
    EXPECT_INVALID("true", "JSON object");
}

static void test_validate_rejects_bad_jsonrpc_member(void)
{
    EXPECT_INVALID("{\"method\":\"m\",\"id\":1}", "'jsonrpc'");
    EXPECT_INVALID("{\"jsonrpc\":\"1.0\",\"method\":\"m\",\"id\":1}", "'jsonrpc'");
    EXPECT_INVALID("{\"jsonrpc\":2.0,\"method\":\"m\",\"id\":1}", "'jsonrpc'");
    EXPECT_INVALID("{\"jsonrpc\":2,\"method\":\"m\",\"id\":1}", "'jsonrpc'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0 \",\"method\":\"m\",\"id\":1}", "'jsonrpc'");
    EXPECT_INVALID("{\"jsonrpc\":null,\"method\":\"m\",\"id\":1}", "'jsonrpc'");
}

static void test_validate_rejects_bad_method_member(void)
{
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"id\":1}", "'method'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":1,\"id\":1}", "'method'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":null,\"id\":1}", "'method'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":[\"m\"],\"id\":1}", "'method'");
}

static void test_validate_rejects_bad_params_member(void)
{
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":\"x\",\"id\":1}", "'params'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":3,\"id\":1}", "'params'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":true,\"id\":1}", "'params'");
    /* JSON-RPC 2.0: params "MAY be omitted" -- but if present, structured. */
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":null,\"id\":1}", "'params'");
}

static void test_validate_rejects_bad_id_member(void)
{
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":{}}", "'id'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":[1]}", "'id'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":true}", "'id'");
    EXPECT_INVALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":false}", "'id'");
}

static void test_validate_ignores_non_string_reply_to(void)
{
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"a\",\"reply_to\":5}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"a\",\"reply_to\":null}");
}

static void test_validate_accepts_every_id_kind(void)
{
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"a\"}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"\"}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":42}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":-1.5}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":null}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\"}");
}

static void test_validate_accepts_every_params_kind(void)
{
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":1}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[1,\"x\",null],\"id\":1}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{},\"id\":1}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"a\":1},\"id\":1}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1}");
}

static void test_validate_ignores_extension_members(void)
{
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1,\"reply_to\":\"k\","
                 "\"deadline\":12.5,\"x-trace\":{\"a\":1}}");
    EXPECT_VALID("{\"jsonrpc\":\"2.0\",\"method\":\"\",\"id\":1}");
}

/* ---- rrpc__reply_key ----------------------------------------------- */

/* The reply key of request TEXT, or NULL if it names none.  Static buffer. */
static const char *reply_key_of(const char *text)
{
    static char buf[RRPC__KEY_MAX];
    json_t *req = J(text);
    int have = rrpc__reply_key(req, buf, sizeof buf);
    json_decref(req);
    return have ? buf : NULL;
}

static void test_reply_key_reply_to_wins_over_id(void)
{
    CHECK_EQ_STR(reply_key_of("{\"id\":\"the-id\",\"reply_to\":\"rrpc:reply:k\"}"), "rrpc:reply:k");
    CHECK_EQ_STR(reply_key_of("{\"id\":42,\"reply_to\":\"rk\"}"), "rk");
    CHECK_EQ_STR(reply_key_of("{\"id\":null,\"reply_to\":\"rk\"}"), "rk");
    CHECK_EQ_STR(reply_key_of("{\"reply_to\":\"rk\"}"), "rk");
}

static void test_reply_key_string_id(void)
{
    CHECK_EQ_STR(reply_key_of("{\"id\":\"9f0c\"}"), "9f0c");
}

static void test_reply_key_integer_id_is_decimal_text(void)
{
    CHECK_EQ_STR(reply_key_of("{\"id\":42}"), "42");
    CHECK_EQ_STR(reply_key_of("{\"id\":-7}"), "-7");
    CHECK_EQ_STR(reply_key_of("{\"id\":0}"), "0");
    CHECK_EQ_STR(reply_key_of("{\"id\":9007199254740992}"), "9007199254740992");
    CHECK_EQ_STR(reply_key_of("{\"id\":-9007199254740992}"), "-9007199254740992");
}

/* Section 3 rule 3: the value counts, not the spelling, so that peers
 * whose JSON reads every number as a double derive the same key. */
static void test_reply_key_integral_number_is_decimal_text(void)
{
    CHECK_EQ_STR(reply_key_of("{\"id\":100.0}"), "100");
    CHECK_EQ_STR(reply_key_of("{\"id\":1e2}"), "100");
    CHECK_EQ_STR(reply_key_of("{\"id\":1E2}"), "100");
    CHECK_EQ_STR(reply_key_of("{\"id\":-7.0}"), "-7");
    CHECK_EQ_STR(reply_key_of("{\"id\":-0.0}"), "0");
    CHECK_EQ_STR(reply_key_of("{\"id\":9007199254740992.0}"), "9007199254740992");
    CHECK_EQ_STR(reply_key_of("{\"id\":4.2e1}"), "42");
}

/* Section 3 rule 4: no key for a fraction or a number beyond 2^53. */
static void test_reply_key_fraction_or_huge_number_has_none(void)
{
    CHECK(reply_key_of("{\"id\":1.5}") == NULL);
    CHECK(reply_key_of("{\"id\":0.1}") == NULL);
    CHECK(reply_key_of("{\"id\":-2.25}") == NULL);
    CHECK(reply_key_of("{\"id\":9007199254740993}") == NULL);
    CHECK(reply_key_of("{\"id\":-9007199254740993}") == NULL);
    CHECK(reply_key_of("{\"id\":9223372036854775807}") == NULL);
    CHECK(reply_key_of("{\"id\":1e300}") == NULL);
    /* reply_to still names the key whatever the id */
    CHECK_EQ_STR(reply_key_of("{\"id\":1.5,\"reply_to\":\"rk\"}"), "rk");
}

static void test_reply_key_null_or_missing_id_has_none(void)
{
    CHECK(reply_key_of("{\"id\":null}") == NULL);
    CHECK(reply_key_of("{\"method\":\"m\"}") == NULL);
    CHECK(reply_key_of("{\"id\":true}") == NULL);
    CHECK(reply_key_of("{\"id\":{}}") == NULL);
    CHECK(reply_key_of("[{\"id\":\"a\"}]") == NULL);
    CHECK(reply_key_of("\"a\"") == NULL);
}

static void test_reply_key_empty_reply_to_falls_back_to_id(void)
{
    CHECK_EQ_STR(reply_key_of("{\"id\":\"abc\",\"reply_to\":\"\"}"), "abc");
    CHECK_EQ_STR(reply_key_of("{\"id\":5,\"reply_to\":\"\"}"), "5");
    CHECK(reply_key_of("{\"id\":null,\"reply_to\":\"\"}") == NULL);
}

static void test_reply_key_empty_string_id_has_none(void)
{
    CHECK(reply_key_of("{\"id\":\"\"}") == NULL);
}

static void test_reply_key_non_string_reply_to_is_ignored(void)
{
    CHECK_EQ_STR(reply_key_of("{\"id\":\"abc\",\"reply_to\":5}"), "abc");
}

/* Regression: "2.0" followed by a NUL and more is not "2.0". */
static void test_validate_rejects_jsonrpc_with_nul(void)
{
    json_t *req =
        json_loads("{\"jsonrpc\":\"2.0\\u0000x\",\"method\":\"m\"}", JSON_ALLOW_NUL, NULL);
    const char *why = NULL;
    CHECK_EQ_INT(rrpc__request_validate(req, &why), RRPC_JSONRPC_INVALID_REQUEST);
    json_decref(req);
}

/* Regression: a key with a NUL inside is kept whole (Redis keys are binary),
 * never cut short to another key. */
static void test_reply_key_with_nul_is_kept_whole(void)
{
    char buf[64];
    json_t *req =
        json_loads("{\"reply_to\":\"k\\u0000tail\",\"id\":\"fallback\"}", JSON_ALLOW_NUL, NULL);
    CHECK_EQ_INT(rrpc__reply_key(req, buf, sizeof buf), 6);
    CHECK(memcmp(buf, "k\0tail", 6) == 0);
    json_decref(req);
    req = json_loads("{\"id\":\"k\\u0000t\"}", JSON_ALLOW_NUL, NULL);
    CHECK_EQ_INT(rrpc__reply_key(req, buf, sizeof buf), 3);
    json_decref(req);
}

static void test_reply_key_too_long_for_buffer(void)
{
    json_t *req = J("{\"id\":\"0123456789\"}");
    char small[10];
    CHECK_EQ_INT(rrpc__reply_key(req, small, sizeof small), 0);
    char fits[11];
    CHECK_EQ_INT(rrpc__reply_key(req, fits, sizeof fits), 10);
    CHECK_EQ_STR(fits, "0123456789");
    json_decref(req);

    req = J("{\"id\":123456}");
    char four[4];
    CHECK_EQ_INT(rrpc__reply_key(req, four, sizeof four), 0);
    json_decref(req);
}

/* ---- rrpc__reply_key_refusal ----------------------------------------- */

static const char *const own = "reply key refused: one of the service's own keys";
static const char *const rrpcs = "reply key refused: one of rrpc's keys";
static const char *const lists = "reply key refused: a service's request list";
static const char *const outside = "reply key refused: not under an allowed prefix";

static const char *refusal(const rrpc__key_rules *r, const char *key)
{
    return rrpc__reply_key_refusal(r, key, strlen(key));
}

static void test_reply_key_refusals(void)
{
    rrpc__name names[] = {{"orders", 6}, {"calc", 4}, {"img#x", 5}};
    rrpc__names_sort(names, 3);
    rrpc__key_rules r = {.prefix = "p:",
                         .list_key = "p:calc",
                         .dead_key = "p:calc:dead",
                         .stats_key = "p:calc:stats",
                         .shards = 3,
                         .services = names,
                         .nservices = 3};
    /* Rule 1, checked first. */
    CHECK_EQ_STR(refusal(&r, "p:calc"), own);
    CHECK_EQ_STR(refusal(&r, "p:calc#2"), own);
    CHECK_EQ_STR(refusal(&r, "p:calc:dead"), own);
    CHECK_EQ_STR(refusal(&r, "{p:calc}:inflight"), own);
    /* Rule 2: any service's rrpc keys, by name. */
    CHECK_EQ_STR(refusal(&r, "p:rrpc:services"), rrpcs);
    CHECK_EQ_STR(refusal(&r, "p:rrpc:anything"), rrpcs);
    CHECK_EQ_STR(refusal(&r, "{other}:workers"), rrpcs);
    CHECK_EQ_STR(refusal(&r, "{x}:"), rrpcs);
    CHECK_EQ_STR(refusal(&r, "p:orders:dead"), rrpcs);
    CHECK_EQ_STR(refusal(&r, "app:stats"), rrpcs);
    CHECK(refusal(&r, "p:rrpc:reply:0123") == NULL);
    CHECK(refusal(&r, "rrpc:services") == NULL); /* another deployment's prefix */
    CHECK(refusal(&r, "{tag}x") == NULL);
    CHECK(refusal(&r, "{}") == NULL);
    /* Rule 3: registered services' request lists and shards. */
    CHECK_EQ_STR(refusal(&r, "p:orders"), lists);
    CHECK_EQ_STR(refusal(&r, "p:orders#7"), lists);
    CHECK_EQ_STR(refusal(&r, "p:img#x"), lists);
    CHECK(refusal(&r, "p:orders#") == NULL);
    CHECK(refusal(&r, "p:orders#1x") == NULL);
    CHECK(refusal(&r, "p:order") == NULL);
    CHECK(refusal(&r, "orders") == NULL);         /* not under the prefix */
    CHECK_EQ_STR(refusal(&r, "p:calc#3"), lists); /* beyond its shards, but registered */
    r.nservices = 0;                              /* the set could not be read: rule off */
    CHECK(refusal(&r, "p:orders") == NULL);
    /* Binary keys: a NUL does not end the comparison. */
    CHECK(rrpc__reply_key_refusal(&r, "p:calc\0x", 8) == NULL);
    CHECK_EQ_STR(rrpc__reply_key_refusal(&r, "x\0:dead", 7), rrpcs);
}

static void test_reply_key_allow_list(void)
{
    const char *const allowed[] = {"rrpc:reply:", "app:replies:", NULL};
    rrpc__key_rules r = {.prefix = "",
                         .list_key = "calc",
                         .dead_key = "calc:dead",
                         .stats_key = "calc:stats",
                         .shards = 1,
                         .allowed_prefixes = allowed};
    CHECK(refusal(&r, "rrpc:reply:abc") == NULL);
    CHECK(refusal(&r, "app:replies:1") == NULL);
    CHECK_EQ_STR(refusal(&r, "app:users"), outside);
    CHECK_EQ_STR(refusal(&r, "rrpc:reply"), rrpcs); /* rule 2 before the allow-list */
    CHECK_EQ_STR(refusal(&r, "app:replies"), outside);
    CHECK_EQ_STR(refusal(&r, "calc"), own); /* the earlier rules come first */
    const char *const none[] = {NULL};
    r.allowed_prefixes = none;
    CHECK_EQ_STR(refusal(&r, "rrpc:reply:abc"), outside);
}

/* The reply script's text is the one PROTOCOL.md publishes: its SHA-1 is
 * what every peer's EVALSHA names. */
static void test_reply_script_digest(void)
{
    char hex[41];
    rrpc__sha1_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    rrpc__sha1_hex("", 0, hex);
    CHECK_EQ_STR(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    rrpc__sha1_hex(two, strlen(two), hex);
    CHECK_EQ_STR(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    CHECK(strncmp(rrpc__reply_script, "-- rrpc reply v2: KEYS = reply keys", 35) == 0);
}

/* Flat params are written as jansson writes them; anything else is left
 * to jansson (0), as is an array that does not fit. */
static void test_flat_array_text(void)
{
    static const char *same[] = {"[]", "[1,2]", "[-9223372036854775808,0,true,false,null]",
                                 "[\"abc\",\"\",\"a b~\"]"};
    static const char *left[] = {"[1.5]",         "[[1]]",         "[{}]",      "[\"a\\\"b\"]",
                                 "[\"\\u00e9\"]", "[\"\\u007f\"]", "{\"a\":1}", "3"};
    char out[64];
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        json_t *v = json_loads(same[i], JSON_DECODE_ANY, NULL);
        char *want = json_dumps(v, RRPC__JSON_ENCODE_FLAGS);
        size_t n = rrpc__flat_array_text(v, out, sizeof out);
        CHECK(n == strlen(want) && memcmp(out, want, n) == 0);
        CHECK_EQ_INT(rrpc__flat_array_text(v, out, strlen(want) - 1), 0); /* no room */
        free(want);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
        json_t *v = json_loads(left[i], JSON_DECODE_ANY, NULL);
        CHECK(v != NULL);
        CHECK_EQ_INT(rrpc__flat_array_text(v, out, sizeof out), 0);
        json_decref(v);
    }
}

/* ---- responses -------------------------------------------------------- */

static void test_response_result_shape(void)
{
    json_t *id = json_string("abc");
    json_t *resp = rrpc__response_result(id, json_integer(3));
    CHECK_JSON_EQ(resp, "{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":\"abc\"}");
    json_decref(resp);
    json_decref(id);
}

static void test_response_result_keeps_number_id_and_null_result(void)
{
    json_t *id = json_integer(42);
    json_t *resp = rrpc__response_result(id, json_null());
    CHECK_JSON_EQ(resp, "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":42}");
    json_decref(resp);
    json_decref(id);
}

static void test_response_result_null_id_means_json_null(void)
{
    json_t *resp = rrpc__response_result(NULL, json_string("x"));
    CHECK_JSON_EQ(resp, "{\"jsonrpc\":\"2.0\",\"result\":\"x\",\"id\":null}");
    json_decref(resp);
}

static void test_response_error_shape(void)
{
    json_t *id = json_string("abc");
    json_t *resp = rrpc__response_error(id, 1, "division by zero", NULL);
    CHECK_JSON_EQ(resp, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":"
                        "\"division by zero\"},\"id\":\"abc\"}");
    CHECK(json_object_get(json_object_get(resp, "error"), "data") == NULL);
    CHECK(json_object_get(resp, "result") == NULL);
    json_decref(resp);
    json_decref(id);
}

static void test_response_error_with_data_and_null_id(void)
{
    json_t *resp = rrpc__response_error(NULL, RRPC_JSONRPC_INVALID_REQUEST, "Invalid Request",
                                        J("{\"why\":[1]}"));
    CHECK_JSON_EQ(resp, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                        "\"Invalid Request\",\"data\":{\"why\":[1]}},\"id\":null}");
    json_decref(resp);
}

static void test_error_object_null_message_is_empty(void)
{
    json_t *e = rrpc__error_object(-32603, NULL, NULL);
    CHECK_JSON_EQ(e, "{\"code\":-32603,\"message\":\"\"}");
    json_decref(e);
}

static void test_response_error_object_wraps_given_error(void)
{
    json_t *id = json_integer(-7);
    json_t *resp = rrpc__response_error_object(id, rrpc__error_object(7, "boom", json_string("d")));
    CHECK_JSON_EQ(resp, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":7,\"message\":\"boom\","
                        "\"data\":\"d\"},\"id\":-7}");
    json_decref(resp);
    json_decref(id);
}

/* ---- rrpc__response_parse --------------------------------------------- */

static int parse(const char *text, const char *expected_id, json_t **result, json_t **error,
                 char *err, size_t errlen)
{
    err[0] = '\0';
    return rrpc__response_parse(text, strlen(text), expected_id, result, error, err, errlen);
}

static void test_parse_result(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"result\":{\"sum\":3},\"id\":\"abc\"}", "abc", &result,
                   &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_OK);
    CHECK_JSON_EQ(result, "{\"sum\":3}");
    CHECK(error == NULL);
    json_decref(result);
}

static void test_parse_null_result_is_a_result(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":\"abc\"}", "abc", &result, &error,
                   err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_OK);
    CHECK(json_is_null(result));
    json_decref(result);
}

static void test_parse_without_expected_id_accepts_any(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":99}", NULL, &result, &error, err,
                   sizeof err);
    CHECK_EQ_INT(rc, RRPC_OK);
    CHECK_JSON_EQ(result, "1");
    json_decref(result);
}

static void test_parse_error_object_is_eremote(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"division by zero\","
                   "\"data\":[0]},\"id\":\"abc\"}",
                   "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EREMOTE);
    CHECK(result == NULL);
    CHECK_JSON_EQ(error, "{\"code\":1,\"message\":\"division by zero\",\"data\":[0]}");
    CHECK(strstr(err, "division by zero") != NULL);
    CHECK(strstr(err, "1") != NULL);
    json_decref(error);
}

static void test_parse_error_with_null_id_is_still_eremote(void)
{
    /* An invalid request is answered with id null (PROTOCOL.md section 4). */
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid "
                   "Request\"},\"id\":null}",
                   "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EREMOTE);
    CHECK_JSON_EQ(error, "{\"code\":-32600,\"message\":\"Invalid Request\"}");
    json_decref(error);
}

static void test_parse_error_without_message(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":5},\"id\":\"abc\"}", "abc", &result,
                   &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EREMOTE);
    CHECK(strstr(err, "(no message)") != NULL);
    json_decref(error);
}

static void test_parse_id_mismatch_is_eproto(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":\"other\"}", "abc", &result, &error,
                   err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(result == NULL && error == NULL);
    CHECK(strstr(err, "id") != NULL);

    rc = parse("{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":42}", "42", &result, &error, err,
               sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO); /* a number id never matches a string id */
    rc = parse("{\"jsonrpc\":\"2.0\",\"result\":3}", "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(result == NULL && error == NULL);
}

static void test_parse_not_json_is_eproto(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("garbage", "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(strstr(err, "not JSON") != NULL);
    CHECK(result == NULL && error == NULL);
    rc = parse("", "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
}

static void test_parse_non_object_is_eproto(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("[1,2]", "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(strstr(err, "not a JSON object") != NULL);
    rc = parse("3", NULL, &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(result == NULL && error == NULL);
}

static void test_parse_neither_result_nor_error_is_eproto(void)
{
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    int rc = parse("{\"jsonrpc\":\"2.0\",\"id\":\"abc\"}", "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(strstr(err, "neither result nor error") != NULL);
    CHECK(result == NULL && error == NULL);

    /* An error that is not an object is no error object either. */
    rc = parse("{\"jsonrpc\":\"2.0\",\"error\":\"bad\",\"id\":\"abc\"}", "abc", &result, &error,
               err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_EPROTO);
    CHECK(result == NULL && error == NULL);
}

static void test_parse_uses_given_length(void)
{
    const char *text = "{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":\"abc\"}trailing junk";
    json_t *result = NULL, *error = NULL;
    char err[RRPC__ERRMSG_LEN];
    size_t len = strlen("{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":\"abc\"}");
    int rc = rrpc__response_parse(text, len, "abc", &result, &error, err, sizeof err);
    CHECK_EQ_INT(rc, RRPC_OK);
    CHECK_JSON_EQ(result, "1");
    json_decref(result);
}

/* ---- random.c: reply keys ------------------------------------------- */

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return 0;
    return 1;
}

static void test_random_hex128_is_32_lowercase_hex(void)
{
    char a[33], b[33];
    memset(a, 'X', sizeof a);
    CHECK_EQ_INT(rrpc__random_hex128(a), RRPC_OK);
    CHECK_EQ_INT(rrpc__random_hex128(b), RRPC_OK);
    CHECK_EQ_INT(strlen(a), 32);
    CHECK(is_lower_hex(a, 32));
    CHECK(is_lower_hex(b, 32));
    CHECK(strcmp(a, b) != 0);
}

static void test_new_reply_key_without_prefix(void)
{
    char key[RRPC__KEY_MAX];
    CHECK_EQ_INT(rrpc__new_reply_key(key, sizeof key, NULL), RRPC_OK);
    CHECK_EQ_INT(strlen(key), strlen("rrpc:reply:") + 32);
    CHECK(strncmp(key, "rrpc:reply:", 11) == 0);
    CHECK(is_lower_hex(key + 11, 32));

    char empty_prefix[RRPC__KEY_MAX];
    CHECK_EQ_INT(rrpc__new_reply_key(empty_prefix, sizeof empty_prefix, ""), RRPC_OK);
    CHECK(strncmp(empty_prefix, "rrpc:reply:", 11) == 0);
    CHECK(strcmp(key, empty_prefix) != 0);
}

static void test_new_reply_key_with_prefix(void)
{
    char key[RRPC__KEY_MAX];
    CHECK_EQ_INT(rrpc__new_reply_key(key, sizeof key, "app1:"), RRPC_OK);
    CHECK_EQ_INT(strlen(key), strlen("app1:rrpc:reply:") + 32);
    CHECK(strncmp(key, "app1:rrpc:reply:", 16) == 0);
    CHECK(is_lower_hex(key + 16, 32));
}

static void test_new_reply_key_too_small_buffer(void)
{
    char key[20];
    CHECK_EQ_INT(rrpc__new_reply_key(key, sizeof key, NULL), RRPC_EINVAL);
    char exact[11 + 32 + 1];
    CHECK_EQ_INT(rrpc__new_reply_key(exact, sizeof exact, NULL), RRPC_OK);
}

static void test_key_join(void)
{
    char buf[32];
    CHECK_EQ_INT(rrpc__key_join(buf, sizeof buf, "app1:", "calc", RRPC__SUFFIX_DEAD), RRPC_OK);
    CHECK_EQ_STR(buf, "app1:calc:dead");
    CHECK_EQ_INT(rrpc__key_join(buf, sizeof buf, NULL, "calc", NULL), RRPC_OK);
    CHECK_EQ_STR(buf, "calc");
    char tiny[4];
    CHECK_EQ_INT(rrpc__key_join(tiny, sizeof tiny, NULL, "calc", NULL), RRPC_EINVAL);
}

/* The fast response text says exactly what the envelope object says. */
static void check_response_text(json_t *response, const char *expect)
{
    char *text = rrpc__response_text(response);
    json_t *back = text ? json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
    CHECK(back != NULL && json_equal(back, response));
    if (expect != NULL)
        CHECK_EQ_STR(text, expect);
    json_decref(back);
    free(text);
    json_decref(response);
}

static void test_response_text(void)
{
    json_t *id = json_string("rrpc:reply:0123");
    check_response_text(rrpc__response_result(id, json_integer(-42)),
                        "{\"jsonrpc\":\"2.0\",\"result\":-42,\"id\":\"rrpc:reply:0123\"}");
    json_decref(id);
    id = json_integer(7);
    check_response_text(rrpc__response_result(id, json_real(0.1)),
                        "{\"jsonrpc\":\"2.0\",\"result\":0.10000000000000001,\"id\":7}");
    check_response_text(rrpc__response_error(id, 1, "division by zero", json_pack("{si}", "a", 1)),
                        NULL);
    json_decref(id);
    /* Strings that need escaping, non-ASCII, NUL and control bytes take
     * jansson's way and still round-trip. */
    const char odd[] = "q\"b\\s/\x01\xc3\xa9\x00end";
    id = json_stringn(odd, sizeof odd - 1);
    check_response_text(rrpc__response_result(id, json_stringn(odd, sizeof odd - 1)), NULL);
    json_decref(id);
    check_response_text(rrpc__response_result(NULL, json_pack("{s[i,s,n,b]}", "x", 1, "y", 1)),
                        NULL);
    check_response_text(rrpc__response_error(NULL, -32600, "Invalid Request", NULL),
                        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":"
                        "\"Invalid Request\"},\"id\":null}");
}

int main(void)
{
    test_response_text();
    test_flat_array_text();
    test_build_call_with_params();
    test_build_call_without_params_omits_member();
    test_build_notification_has_no_id();
    test_build_with_reply_to();
    test_built_request_is_valid();
    test_build_rejects_null_method();

    test_validate_rejects_non_objects();
    test_validate_rejects_bad_jsonrpc_member();
    test_validate_rejects_bad_method_member();
    test_validate_rejects_bad_params_member();
    test_validate_rejects_bad_id_member();
    test_validate_ignores_non_string_reply_to();
    test_validate_accepts_every_id_kind();
    test_validate_accepts_every_params_kind();
    test_validate_ignores_extension_members();

    test_reply_key_reply_to_wins_over_id();
    test_reply_key_string_id();
    test_reply_key_integer_id_is_decimal_text();
    test_reply_key_integral_number_is_decimal_text();
    test_reply_key_fraction_or_huge_number_has_none();
    test_reply_key_refusals();
    test_reply_key_allow_list();
    test_reply_script_digest();
    test_reply_key_null_or_missing_id_has_none();
    test_reply_key_empty_reply_to_falls_back_to_id();
    test_reply_key_empty_string_id_has_none();
    test_reply_key_non_string_reply_to_is_ignored();
    test_reply_key_too_long_for_buffer();
    test_validate_rejects_jsonrpc_with_nul();
    test_reply_key_with_nul_is_kept_whole();

    test_response_result_shape();
    test_response_result_keeps_number_id_and_null_result();
    test_response_result_null_id_means_json_null();
    test_response_error_shape();
    test_response_error_with_data_and_null_id();
    test_error_object_null_message_is_empty();
    test_response_error_object_wraps_given_error();

    test_parse_result();
    test_parse_null_result_is_a_result();
    test_parse_without_expected_id_accepts_any();
    test_parse_error_object_is_eremote();
    test_parse_error_with_null_id_is_still_eremote();
    test_parse_error_without_message();
    test_parse_id_mismatch_is_eproto();
    test_parse_not_json_is_eproto();
    test_parse_non_object_is_eproto();
    test_parse_neither_result_nor_error_is_eproto();
    test_parse_uses_given_length();

    test_random_hex128_is_32_lowercase_hex();
    test_new_reply_key_without_prefix();
    test_new_reply_key_with_prefix();
    test_new_reply_key_too_small_buffer();
    test_key_join();
    return check_report();
}
