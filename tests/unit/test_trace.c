/* test_trace.c -- unit tests for src/core/trace.c and the trace context of
 * a request in src/core/dispatch.c and src/core/deadletter.c.
 *
 * The W3C Trace Context rules (PROTOCOL.md section 7) decide whether a
 * received traceparent is kept or ignored, so each is pinned: version,
 * length, separators, lowercase hex, all-zero ids, flags.  Then what a
 * handler sees, what a call made from inside it sends, and what a dead
 * letter keeps.
 */
#include "core/deadletter.h"
#include "core/dispatch.h"
#include "core/protocol.h"
#include "core/trace.h"

#include "check.h"

#include <rrpc/rrpc.h>

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parses(const char *text)
{
    char out[RRPC__TRACEPARENT_LEN + 1];
    return rrpc__traceparent_parse(text, strlen(text), out);
}

static void test_valid_traceparents(void)
{
    char out[RRPC__TRACEPARENT_LEN + 1];
    CHECK(rrpc__traceparent_parse(GOOD, strlen(GOOD), out));
    CHECK_EQ_STR(out, GOOD);
    CHECK(parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    /* Flags are 8 bits; the ones this reader does not know are kept. */
    CHECK(parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"));
    /* A later version is read as 00 (and carried on as 00), with what it
     * appends after a '-' skipped. */
    const char *v01 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-later";
    CHECK(rrpc__traceparent_parse(v01, strlen(v01), out));
    CHECK_EQ_STR(out, GOOD);
    CHECK(parses("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    /* Not NUL-terminated: only LEN bytes count. */
    char padded[80];
    snprintf(padded, sizeof padded, "%sXYZ", GOOD);
    CHECK(rrpc__traceparent_parse(padded, RRPC__TRACEPARENT_LEN, out));
}

static void test_invalid_traceparents(void)
{
    CHECK(!parses(""));
    CHECK(!parses("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")); /* version ff */
    CHECK(!parses("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));  /* short version */
    CHECK(!parses("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")); /* not hex */
    /* Version 00 is exactly 55 characters: nothing may follow. */
    CHECK(!parses(GOOD "-"));
    CHECK(!parses(GOOD "-extra"));
    CHECK(!parses(GOOD " "));
    /* A later version may only append after a '-'. */
    CHECK(!parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
    /* Lengths of the fields. */
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001"));
    /* Separators. */
    CHECK(!parses("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01"));
    /* Uppercase hex anywhere. */
    CHECK(!parses("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    CHECK(!parses("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"));
    /* All-zero ids. */
    CHECK(!parses("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
    CHECK(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"));
    char out[RRPC__TRACEPARENT_LEN + 1];
    CHECK(!rrpc__traceparent_parse(NULL, 55, out));
}

static void test_tracestate(void)
{
    CHECK(rrpc__tracestate_ok("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 39));
    CHECK(rrpc__tracestate_ok("", 0));
    CHECK(!rrpc__tracestate_ok("a=b\nc=d", 7));
    CHECK(!rrpc__tracestate_ok("a=\xc3\xa9", 4));
    char big[RRPC__TRACESTATE_MAX + 2];
    memset(big, 'a', sizeof big);
    CHECK(rrpc__tracestate_ok(big, RRPC__TRACESTATE_MAX));
    CHECK(!rrpc__tracestate_ok(big, RRPC__TRACESTATE_MAX + 1));
}

static void test_new_and_child(void)
{
    char a[RRPC__TRACEPARENT_LEN + 1], b[RRPC__TRACEPARENT_LEN + 1], c[RRPC__TRACEPARENT_LEN + 1];
    rrpc__traceparent_new(a);
    rrpc__traceparent_new(b);
    CHECK_EQ_INT(strlen(a), RRPC__TRACEPARENT_LEN);
    CHECK(parses(a));
    CHECK(strncmp(a, "00-", 3) == 0 && strcmp(a + 52, "-00") == 0); /* not sampled */
    CHECK(memcmp(a + 3, b + 3, 32) != 0);                           /* new trace ids */
    rrpc__traceparent_child(GOOD, c);
    CHECK(parses(c));
    CHECK(memcmp(c, GOOD, 36) == 0);           /* same version and trace id */
    CHECK(memcmp(c + 36, GOOD + 36, 16) != 0); /* a new parent id */
    CHECK_EQ_STR(c + 52, "-01");               /* the flags kept */
}

/* A forked child must not repeat its parent's ids. */
static void test_fork_reseeds(void)
{
    rrpc__fast_random(); /* seeded in this process */
    int fds[2];
    if (!CHECK(pipe(fds) == 0))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        unsigned long long v = rrpc__fast_random();
        ssize_t n = write(fds[1], &v, sizeof v);
        _exit(n == (ssize_t)sizeof v ? 0 : 1);
    }
    unsigned long long mine = rrpc__fast_random(), theirs = 0;
    CHECK(read(fds[0], &theirs, sizeof theirs) == (ssize_t)sizeof theirs);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    CHECK(mine != theirs);
}

/* ---- in a handler -------------------------------------------------------- */

/* Returns what it sees and what a call made from here would send. */
static json_t *h_trace(rrpc_request *req, void *udata)
{
    (void)udata;
    char out[RRPC__TRACEPARENT_LEN + 1];
    const char *state = NULL;
    rrpc__trace_outgoing(out, &state);
    const char *tp = rrpc_request_traceparent(req), *ts = rrpc_request_tracestate(req);
    return json_pack("{s:o s:o s:s s:o}", "seen", tp ? json_string(tp) : json_null(), "state",
                     ts ? json_string(ts) : json_null(), "outgoing", out, "outgoing_state",
                     state ? json_string(state) : json_null());
}

static rrpc__methods methods;
static const rrpc__limits limits = {1 << 20, 100, 0};

static json_t *dispatch(const char *text)
{
    rrpc__outcome out;
    rrpc__dispatch(&methods, &limits, NULL, text, strlen(text), &out);
    json_t *resp = out.response ? json_loads(out.response, 0, NULL) : NULL;
    json_t *result = json_incref(json_object_get(resp, "result"));
    json_decref(resp);
    rrpc__outcome_clear(&out);
    return result;
}

static void test_handler_sees_and_continues(void)
{
    json_t *r = dispatch("{\"jsonrpc\":\"2.0\",\"method\":\"trace\",\"id\":\"k1\","
                         "\"traceparent\":\"" GOOD "\",\"tracestate\":\"rojo=1\"}");
    if (!CHECK(r != NULL))
        return;
    CHECK_EQ_STR(json_string_value(json_object_get(r, "seen")), GOOD);
    CHECK_EQ_STR(json_string_value(json_object_get(r, "state")), "rojo=1");
    const char *out = json_string_value(json_object_get(r, "outgoing"));
    CHECK(out && strncmp(out, GOOD, 36) == 0 && strcmp(out + 52, "-01") == 0 &&
          strncmp(out + 36, GOOD + 36, 16) != 0);
    CHECK_EQ_STR(json_string_value(json_object_get(r, "outgoing_state")), "rojo=1");
    json_decref(r);
    /* After the handler, the thread handles nothing: a new trace. */
    char after[RRPC__TRACEPARENT_LEN + 1];
    const char *state = "x";
    rrpc__trace_outgoing(after, &state);
    CHECK(strncmp(after + 3, GOOD + 3, 32) != 0);
    CHECK(state == NULL);
}

static void test_invalid_is_ignored(void)
{
    static const char *bad[] = {
        "\"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\"",
        "\"00-00000000000000000000000000000000-00f067aa0ba902b7-01\"",
        "\"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"",
        "42",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[300];
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"trace\",\"id\":\"k\",\"traceparent\":%s,"
                 "\"tracestate\":\"rojo=1\"}",
                 bad[i]);
        json_t *r = dispatch(text);
        if (!CHECK(r != NULL))
            continue;
        /* Ignored, tracestate with it; the request is still answered. */
        CHECK(json_is_null(json_object_get(r, "seen")));
        CHECK(json_is_null(json_object_get(r, "state")));
        const char *out = json_string_value(json_object_get(r, "outgoing"));
        CHECK(out && parses(out) && strcmp(out + 52, "-00") == 0);
        json_decref(r);
    }
    /* A tracestate that may not travel is dropped; the traceparent stays. */
    json_t *r = dispatch("{\"jsonrpc\":\"2.0\",\"method\":\"trace\",\"id\":\"k\","
                         "\"traceparent\":\"" GOOD "\",\"tracestate\":\"a=\\u0001\"}");
    CHECK_EQ_STR(json_string_value(json_object_get(r, "seen")), GOOD);
    CHECK(json_is_null(json_object_get(r, "state")));
    json_decref(r);
}

static void test_dead_letter_keeps_trace(void)
{
    const char *msg = "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"traceparent\":\"" GOOD "\"}";
    char *text =
        rrpc__dead_letter_text("svc", "no reply key", msg, strlen(msg), 1 << 20, NULL, NULL);
    json_t *rec = text ? json_loads(text, 0, NULL) : NULL;
    CHECK_EQ_STR(json_string_value(json_object_get(rec, "traceparent")), GOOD);
    json_decref(rec);
    free(text);
    /* Too large to keep whole: found in the text. */
    text = rrpc__dead_letter_text("svc", "too large", msg, strlen(msg), 10, NULL, NULL);
    rec = text ? json_loads(text, 0, NULL) : NULL;
    CHECK_EQ_STR(json_string_value(json_object_get(rec, "traceparent")), GOOD);
    json_decref(rec);
    free(text);
    /* A batch: its first element's. */
    const char *batch = "[{\"jsonrpc\":\"2.0\",\"method\":\"m\"},{\"jsonrpc\":\"2.0\",\"method\":"
                        "\"m\",\"traceparent\":\"" GOOD "\"}]";
    text = rrpc__dead_letter_text("svc", "r", batch, strlen(batch), 1 << 20, NULL, NULL);
    rec = text ? json_loads(text, 0, NULL) : NULL;
    CHECK_EQ_STR(json_string_value(json_object_get(rec, "traceparent")), GOOD);
    json_decref(rec);
    free(text);
    /* An invalid one is not named. */
    const char *bad = "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"traceparent\":\"00-x\"}";
    text = rrpc__dead_letter_text("svc", "r", bad, strlen(bad), 1 << 20, NULL, NULL);
    rec = text ? json_loads(text, 0, NULL) : NULL;
    CHECK(rec != NULL && json_object_get(rec, "traceparent") == NULL);
    json_decref(rec);
    free(text);
}

static void test_request_member(void)
{
    json_t *req = rrpc__request_build("m", NULL, "id", NULL);
    rrpc__request_set_trace(req, GOOD, NULL);
    CHECK_JSON_EQ(req, "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"id\","
                       "\"traceparent\":\"" GOOD "\"}");
    rrpc__request_set_trace(req, GOOD, "a=b");
    CHECK_EQ_STR(json_string_value(json_object_get(req, "tracestate")), "a=b");
    const char *why = NULL;
    CHECK(rrpc__request_validate(req, &why) == 0); /* still a valid request */
    json_decref(req);

    /* Spliced into the text: the same members, a state's quotes escaped. */
    req = rrpc__request_build("m", NULL, "id", NULL);
    char *text = rrpc__request_text_add_trace(json_dumps(req, JSON_COMPACT), GOOD, "a=\"\\b");
    json_t *back = text ? json_loads(text, 0, NULL) : NULL;
    CHECK_JSON_EQ(back, "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"id\","
                        "\"traceparent\":\"" GOOD "\",\"tracestate\":\"a=\\\"\\\\b\"}");
    json_decref(back);
    free(text);
    text = rrpc__request_text_add_trace(json_dumps(req, JSON_COMPACT), GOOD, NULL);
    back = text ? json_loads(text, 0, NULL) : NULL;
    CHECK_JSON_EQ(back, "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"id\","
                        "\"traceparent\":\"" GOOD "\"}");
    json_decref(back);
    free(text);
    json_decref(req);
}

int main(void)
{
    rrpc__methods_add(&methods, "trace", h_trace, NULL, NULL);
    test_valid_traceparents();
    test_invalid_traceparents();
    test_tracestate();
    test_new_and_child();
    test_fork_reseeds();
    test_handler_sees_and_continues();
    test_invalid_is_ignored();
    test_dead_letter_keeps_trace();
    test_request_member();
    rrpc__methods_free(&methods);
    return check_report();
}
