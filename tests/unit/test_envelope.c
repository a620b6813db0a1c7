/* test_envelope.c -- unit tests for src/core/envelope.c, the worker's
 * envelope scanner.
 *
 * Two promises: what the scanner reads, it reads as jansson would (each
 * case is also decoded with jansson and every member compared), and what
 * it does not read plainly -- invalid JSON, escapes in names, members
 * given twice, numbers jansson may refuse, deep nesting -- it gives back
 * (-1) for jansson to decode.  The differential fuzzer (tests/fuzz/
 * fuzz_dispatch.c) checks the first promise on arbitrary input.
 */
#include "core/envelope.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

/* Scans TEXT and, if it was read, compares every member with jansson's
 * decoding of it.  Returns what the scan returned. */
static int scan_checked(const char *text, rrpc__envelope *env)
{
    size_t len = strlen(text);
    int rc = rrpc__envelope_scan(text, len, env);
    json_t *msg = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    if (rc == 0) {
        rrpc__envelope dec;
        rrpc__envelope_from_json(msg, &dec);
        CHECK(dec.object && env->object);
        for (int i = 0; i < RRPC__M_COUNT; i++) {
            const rrpc__member *a = &env->m[i], *b = &dec.m[i];
            CHECK_EQ_INT(a->kind, b->kind);
            if (a->kind == RRPC__K_STRING)
                CHECK(a->len == b->len && memcmp(a->s, b->s, a->len) == 0 && a->s[a->len] == 0);
            if (a->kind == RRPC__K_INTEGER)
                CHECK(a->i == b->i);
            if (a->json != NULL)
                CHECK(json_equal(a->json, b->json));
        }
    }
    json_decref(msg);
    return rc;
}

static void test_client_request_is_read(void)
{
    rrpc__envelope env;
    const char *text =
        "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"traceparent\":"
        "\"00-55c06cc0657dc325d109afcd575ca849-6b1cb9300d53a98f-00\",\"sent\":1796155976962,"
        "\"deadline\":1796155986962,\"reply_to\":\"rrpc:reply:af04\",\"id\":4194304,"
        "\"auth\":{\"token\":[\"x\"]}}";
    if (!CHECK_EQ_INT(scan_checked(text, &env), 0))
        return;
    CHECK_EQ_STR(env.m[RRPC__M_METHOD].s, "add");
    CHECK_JSON_EQ(env.m[RRPC__M_PARAMS].json, "[1,2]");
    CHECK_JSON_EQ(env.m[RRPC__M_ID].json, "4194304");
    CHECK_EQ_INT(env.m[RRPC__M_DEADLINE].i, 1796155986962LL);
    CHECK_EQ_STR(env.m[RRPC__M_REPLY_TO].s, "rrpc:reply:af04");
    CHECK_EQ_INT(env.m[RRPC__M_PROGRESS].kind, RRPC__K_ABSENT);
    rrpc__envelope_clear(&env);
}

/* Values it does not read itself are jansson's, still without a fallback. */
static void test_values_left_to_jansson(void)
{
    rrpc__envelope env;
    CHECK_EQ_INT(scan_checked("{\"method\":\"a\\u0064d\",\"id\":\"\\u00e9\\u0000x\","
                              "\"deadline\":1.5e3,\"sent\":12345678901234567890e-5,"
                              "\"cancel_key\":\"\xc3\xa4\",\"progress\":true}",
                              &env),
                 0);
    CHECK_EQ_STR(env.m[RRPC__M_METHOD].s, "add");
    CHECK_EQ_INT(env.m[RRPC__M_ID].len, 4); /* é, NUL, x */
    CHECK_EQ_INT(env.m[RRPC__M_DEADLINE].kind, RRPC__K_REAL);
    CHECK_EQ_INT(env.m[RRPC__M_PROGRESS].kind, RRPC__K_TRUE);
    rrpc__envelope_clear(&env);
    /* 19 digits: jansson says whether it fits. */
    CHECK_EQ_INT(scan_checked("{\"id\":-9223372036854775808}", &env), 0);
    CHECK(env.m[RRPC__M_ID].i < -9223372036854775807LL);
    rrpc__envelope_clear(&env);
    CHECK_EQ_INT(scan_checked("{\"id\":-0, \"x\" : [ {} ] }", &env), 0);
    CHECK_EQ_INT(env.m[RRPC__M_ID].i, 0);
    rrpc__envelope_clear(&env);
}

/* Whatever it does not read plainly, it gives back to jansson. */
static void test_gives_up(void)
{
    static const char *texts[] = {
        "",
        "[{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":1}]",
        "\"{}\"",
        "{\"met\\u0068od\":\"add\"}",               /* escape in a name */
        "{\"method\":\"add\",\"method\":\"echo\"}", /* a member twice */
        "{\"id\":123456789012345678901234567890}",  /* too big for jansson */
        "{\"deadline\":1e400}",                     /* real overflow */
        "{\"id\":01}",
        "{\"id\":-}",
        "{\"id\":truex}",
        "{\"id\":1,}",
        "{\"id\":1}x",
        "{\"id\":\"a\x01\"}",   /* a control character */
        "{\"id\":\"\xff\"}",    /* not UTF-8 */
        "{\"\xc3\xa4\":1}",     /* a name beyond ASCII */
        "{\"id\":[1,2}",        /* brackets that do not match */
        "{\"id\":\"a\\x\"}",    /* an invalid escape */
        "{\"id\":\"\\udc00\"}", /* a lone surrogate */
        "{\"id\":1",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        rrpc__envelope env;
        if (!CHECK_EQ_INT(scan_checked(texts[i], &env), -1))
            fprintf(stderr, "  read: %s\n", texts[i]);
    }
    /* Nesting: a little is read, too much is left to a full decode. */
    size_t depth = 600;
    char *deep = malloc(2 * depth + 32);
    strcpy(deep, "{\"params\":");
    memset(deep + 10, '[', depth);
    memset(deep + 10 + depth, ']', depth);
    strcpy(deep + 10 + 2 * depth, "}");
    rrpc__envelope env;
    CHECK_EQ_INT(scan_checked(deep, &env), -1);
    CHECK_EQ_INT(scan_checked("{\"params\":[[[[[[[[[[1]]]]]]]]]]}", &env), 0);
    rrpc__envelope_clear(&env);
    free(deep);
}

/* A request decoded by jansson reads the same way (the batch path). */
static void test_from_json(void)
{
    rrpc__envelope env;
    json_t *obj = json_loads("{\"method\":\"m\",\"id\":\"k\",\"progress\":true}", 0, NULL);
    rrpc__envelope_from_json(obj, &env);
    CHECK(env.object);
    CHECK_EQ_STR(env.m[RRPC__M_ID].s, "k");
    CHECK(env.m[RRPC__M_ID].json == json_object_get(obj, "id"));
    rrpc__envelope_clear(&env); /* borrowed: nothing freed */
    CHECK_JSON_EQ(json_object_get(obj, "id"), "\"k\"");
    json_decref(obj);
    json_t *arr = json_loads("[1]", 0, NULL);
    rrpc__envelope_from_json(arr, &env);
    CHECK(!env.object);
    CHECK_EQ_INT(env.m[RRPC__M_METHOD].kind, RRPC__K_ABSENT);
    json_decref(arr);
}

int main(void)
{
    test_client_request_is_read();
    test_values_left_to_jansson();
    test_gives_up();
    test_from_json();
    return check_report();
}
