/* fuzz_dispatch.c -- libFuzzer target for request decoding and validation.
 *
 * Everything a worker does with a popped message before touching Redis is
 * rrpc__dispatch: size check, JSON decoding, validation, batch handling,
 * method lookup, param helpers and response encoding.  Feeding it arbitrary
 * bytes must never crash, leak or trip a sanitizer, and every outcome must
 * be one the worker can act on (a response with a key, a dead letter, or
 * nothing for notifications).  Seeds: the conformance vectors.
 */
#include "core/clock.h"
#include "core/deadletter.h"
#include "core/dispatch.h"

#include <rrpc/rrpc.h>

#include <stdint.h>
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

static rrpc__methods methods;
static const rrpc__clock redis_clock = {0, 1}; /* Redis time = local time */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (methods.count == 0) {
        rrpc__methods_add(&methods, "echo", echo, NULL, NULL);
        rrpc__methods_add(&methods, "add", add, NULL, NULL);
    }
    rrpc__limits limits = {64 * 1024, 100, 0};
    rrpc__outcome out;
    rrpc__dispatch(&methods, &limits, &redis_clock, (const char *)data, size, &out);
    /* A response always has somewhere to go; otherwise it is a dead letter. */
    if (out.response != NULL && out.reply_key == NULL)
        abort();
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
