/* fuzz_dispatch.c -- libFuzzer target for request decoding and validation.
 *
 * Everything a worker does with a popped message before touching Redis is
 * rrpc__dispatch: size check, JSON decoding, validation, batch handling,
 * method lookup, param helpers and response encoding.  Feeding it arbitrary
 * bytes must never crash, leak or trip a sanitizer, and every outcome must
 * be one the worker can act on (a response with a key, a dead letter, or
 * nothing for notifications).  Seeds: the conformance vectors.
 *
 * It is also a differential fuzzer of the envelope scanner (core/envelope.c,
 * the worker's fast path): whenever the scanner reads an input, jansson
 * must decode the same input to an object whose members are the same --
 * same kinds, same string bytes, same integers, equal JSON values -- and
 * whenever jansson refuses an input, the scanner must have refused it too.
 * Built with -DFUZZ_REPLAY_MAIN it is a plain program that replays files
 * (the seeds, tests/fuzz/regressions/dispatch-*) for ctest.
 */
#include "core/clock.h"
#include "core/deadletter.h"
#include "core/dispatch.h"
#include "core/envelope.h"

#include <rrpc/rrpc.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *echo(rrpc_request *req, void *udata)
{
    (void)udata;
    json_t *params = rrpc_request_params(req);
    return params ? json_incref(params) : json_null();
}

static json_t *add(rrpc_request *req, void *udata)
{
    (void)udata;
    double a, b;
    const char *s;
    int flag;
    json_int_t n;
    if (rrpc_param_count_max(req, 4) || rrpc_param_number(req, 0, "a", &a) ||
        rrpc_param_number(req, 1, "b", &b))
        return NULL;
    if (rrpc_param_string(req, 2, "s", &s) == RRPC_OK && strlen(s) > 3)
        return rrpc_request_error(req, 1, s, json_string(s));
    if (rrpc_param_bool(req, 3, "flag", &flag) == RRPC_OK && flag)
        return NULL; /* no error set: -32603 */
    (void)rrpc_param_int(req, 0, "a", &n);
    return json_real(a + b);
}

/* Aborts unless member A (scanned) and B (from jansson's object) agree. */
static void same_member(const rrpc__member *a, const rrpc__member *b)
{
    if (a->kind != b->kind)
        abort();
    if (a->kind == RRPC__K_STRING &&
        (a->len != b->len || memcmp(a->s, b->s, a->len) != 0 || a->s[a->len] != '\0'))
        abort();
    if (a->kind == RRPC__K_INTEGER && a->i != b->i)
        abort();
    if (a->json != NULL && !json_equal(a->json, b->json))
        abort();
    if (a->json != NULL) { /* the same order of members too: a handler may echo them */
        char *x = json_dumps(a->json, JSON_COMPACT | JSON_ENCODE_ANY);
        char *y = json_dumps(b->json, JSON_COMPACT | JSON_ENCODE_ANY);
        int differ = x == NULL || y == NULL || strcmp(x, y) != 0;
        free(x);
        free(y);
        if (differ)
            abort();
    }
}

/* The same check for the response scanner (the clients' fast path). */
static void check_response(const char *text, size_t len)
{
    static const char *names[RRPC__R_COUNT] = {
#define NAME(name, text, flags) text,
        RRPC__RESPONSE_MEMBERS(NAME)
#undef NAME
    };
    rrpc__response_view v;
    int read = rrpc__response_scan(text, len, &v) == 0;
    json_t *msg = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    if (read && !json_is_object(msg))
        abort();
    if (read) {
        for (int i = 0; i < RRPC__R_COUNT; i++) {
            rrpc__member m = {RRPC__K_ABSENT, NULL, 0, 0, NULL};
            json_t *d = json_object_get(msg, names[i]);
            m.kind = rrpc__kind_of(d);
            m.json = d;
            if (m.kind == RRPC__K_STRING) {
                m.s = json_string_value(d);
                m.len = json_string_length(d);
            } else if (m.kind == RRPC__K_INTEGER) {
                m.i = json_integer_value(d);
            }
            same_member(&v.m[i], &m);
        }
        rrpc__response_view_clear(&v);
    }
    json_decref(msg);
}

/* The differential check of the envelope scanner against jansson. */
static void check_envelope(const char *text, size_t len)
{
    rrpc__envelope scanned, decoded;
    int read = rrpc__envelope_scan(text, len, &scanned) == 0;
    json_t *msg = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    if (read && !json_is_object(msg))
        abort(); /* the scanner read what jansson refuses, or not an object */
    if (read) {
        rrpc__envelope_from_json(msg, &decoded);
        if (!scanned.object || !decoded.object)
            abort();
        for (int i = 0; i < RRPC__M_COUNT; i++)
            same_member(&scanned.m[i], &decoded.m[i]);
        if (scanned.m[RRPC__M_PARAMS].kind != RRPC__K_ABSENT && !scanned.m[RRPC__M_PARAMS].json)
            abort();
        if (scanned.m[RRPC__M_ID].kind != RRPC__K_ABSENT && !scanned.m[RRPC__M_ID].json)
            abort();
        rrpc__envelope_clear(&scanned);
    }
    json_decref(msg);
}

static rrpc__methods methods;
static const rrpc__clock redis_clock = {0, 1}; /* Redis time = local time */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (methods.count == 0) {
        rrpc__methods_add(&methods, "echo", echo, NULL, NULL);
        rrpc__methods_add(&methods, "add", add, NULL, NULL);
    }
    check_envelope((const char *)data, size);
    check_response((const char *)data, size);
    rrpc__limits limits = {64 * 1024, 100, 0};
    rrpc__outcome out;
    rrpc__dispatch(&methods, &limits, &redis_clock, (const char *)data, size, &out);
    /* A response always has somewhere to go; otherwise it is a dead letter. */
    if (out.response != NULL && out.reply_key == NULL)
        abort();
    if (out.response != NULL)
        check_response(out.response, strlen(out.response));
    if (out.dead_reason != NULL) {
        char *letter = rrpc__dead_letter_text("fuzz", out.dead_reason, (const char *)data, size,
                                              limits.max_request_bytes, out.dead_response, NULL);
        if (letter == NULL)
            abort(); /* every message must be recordable */
        free(letter);
    }
    rrpc__outcome_clear(&out);
    return 0;
}

#ifdef FUZZ_REPLAY_MAIN
/* Replays the files named on the command line (ctest: the seeds). */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        size_t cap = 1 << 20, len = 0, k;
        uint8_t *data = malloc(cap);
        while ((k = fread(data + len, 1, cap - len, f)) > 0)
            if ((len += k) == cap)
                data = realloc(data, cap *= 2);
        fclose(f);
        LLVMFuzzerTestOneInput(data, len);
        free(data);
    }
    rrpc__methods_free(&methods);
    return 0;
}
#endif
