/* async_request.c -- the async client's request text (async_request.h):
 * encoded straight into the call record's buffer, with no intermediate
 * JSON object, on the caller's thread. */
#include "client/async_request.h"

#include "core/dispatch.h"
#include "core/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(rrpc__acall *c, size_t used, size_t more)
{
    if (used + more <= c->cap)
        return RRPC_OK;
    size_t cap = c->cap * 2 > used + more ? c->cap * 2 : used + more;
    char *buf = malloc(cap);
    if (buf == NULL)
        return RRPC_ENOMEM;
    memcpy(buf, c->buf, used);
    if (c->buf != c->inline_buf)
        free(c->buf);
    c->buf = buf;
    c->cap = cap;
    return RRPC_OK;
}

static int append(rrpc__acall *c, size_t *used, const char *s, size_t n)
{
    if (reserve(c, *used, n) != RRPC_OK)
        return RRPC_ENOMEM;
    memcpy(c->buf + *used, s, n);
    *used += n;
    return RRPC_OK;
}
/* A method name as a JSON string.  Plain ASCII names (nearly all) are
 * copied; anything else goes through jansson, which escapes and rejects
 * invalid UTF-8. */
static int append_method(rrpc_async *a, rrpc__acall *c, size_t *used, const char *method)
{
    size_t n = strlen(method);
    int plain = 1;
    for (size_t i = 0; i < n && plain; i++) {
        unsigned char ch = (unsigned char)method[i];
        plain = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
    }
    if (plain)
        return append(c, used, "\"", 1) || append(c, used, method, n) || append(c, used, "\"", 1)
                   ? RRPC_ENOMEM
                   : RRPC_OK;
    json_t *s = json_string(method);
    char *text = s ? json_dumps(s, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(s);
    if (text == NULL)
        return rrpc__async_error(a, RRPC_EINVAL, "method name is not valid UTF-8");
    int rc = append(c, used, text, strlen(text));
    free(text);
    return rc;
}

/* Encodes params straight into the record's buffer. */
static int append_params(rrpc__acall *c, size_t *used, const json_t *params)
{
    size_t room = c->cap - *used;
    /* Flat arrays by hand: jansson's encoder was a sixth of a call. */
    size_t n = rrpc__flat_array_text(params, c->buf + *used, room);
    if (n > 0) {
        *used += n;
        return RRPC_OK;
    }
    n = json_dumpb(params, c->buf + *used, room, RRPC__JSON_ENCODE_FLAGS);
    if (n == 0)
        return RRPC_EINVAL;
    if (n > room) {
        if (reserve(c, *used, n) != RRPC_OK)
            return RRPC_ENOMEM;
        n = json_dumpb(params, c->buf + *used, n, RRPC__JSON_ENCODE_FLAGS);
    }
    *used += n;
    return RRPC_OK;
}

/* The members "traceparent" and "tracestate" (PROTOCOL.md section 7). */
static int append_trace(rrpc__acall *c, size_t *used, const rrpc__call_trace_ctx *t)
{
    static const char tp[] = ",\"traceparent\":\"";
    static const char ts[] = ",\"tracestate\":";
    int rc = append(c, used, tp, sizeof tp - 1);
    if (rc == RRPC_OK)
        rc = append(c, used, t->traceparent, RRPC__TRACEPARENT_LEN);
    if (rc == RRPC_OK)
        rc = append(c, used, "\"", 1);
    if (rc == RRPC_OK && t->tracestate != NULL) {
        /* Printable ASCII, but it may hold quotes and backslashes. */
        json_t *s = json_string(t->tracestate);
        char *text = s ? json_dumps(s, RRPC__JSON_ENCODE_FLAGS) : NULL;
        json_decref(s);
        rc = text ? append(c, used, ts, sizeof ts - 1) : RRPC_ENOMEM;
        if (rc == RRPC_OK)
            rc = append(c, used, text, strlen(text));
        free(text);
    }
    return rc;
}

/* V (milliseconds on the Redis clock) in decimal at OUT; its length. */
static size_t ms_text(char *out, long long v)
{
    char tmp[24];
    size_t n = 0, neg = v < 0;
    unsigned long long u = neg ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        *out++ = '-';
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n + neg;
}

/* An interceptor's members (rrpc_call_before_fn), as ",k:v,...": the
 * object's text without its braces. */
static int append_members(rrpc__acall *c, size_t *used, const json_t *members)
{
    char *text = json_dumps(members, RRPC__JSON_ENCODE_FLAGS);
    size_t n = text ? strlen(text) : 0;
    int rc = n > 2 ? append(c, used, ",", 1) : RRPC_OK;
    if (text == NULL)
        rc = RRPC_EINVAL;
    if (rc == RRPC_OK && n > 2)
        rc = append(c, used, text + 1, n - 2);
    free(text);
    return rc;
}

/* A string as a JSON string member NAME (",\"name\":\"...\""). */
static int append_string_member(rrpc__acall *c, size_t *used, const char *member, const char *value)
{
    json_t *v = json_string(value);
    char *text = v ? json_dumps(v, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(v);
    int rc = text ? append(c, used, member, strlen(member)) : RRPC_ENOMEM;
    if (rc == RRPC_OK)
        rc = append(c, used, text, strlen(text));
    free(text);
    return rc;
}

int rrpc__areq_cancel_key(const rrpc_async *a, uint64_t handle, char *out, size_t len)
{
    int n = snprintf(out, len, "%s:cancel:%llu", a->reply_key, (unsigned long long)handle);
    return n > 0 && (size_t)n < len ? RRPC_OK : RRPC_EINVAL;
}

/* The members "progress" and "cancel_key" (PROTOCOL.md section 7), only
 * for a call that asked, or one made inside a cancellable handler. */
static int append_progress_cancel(rrpc_async *a, rrpc__acall *c, size_t *used)
{
    static const char progress[] = ",\"progress\":true";
    int rc = RRPC_OK;
    if (c->progress != NULL)
        rc = append(c, used, progress, sizeof progress - 1);
    char own[RRPC__KEY_MAX + 32];
    const char *key = rrpc__inherited_cancel_key();
    if (rc == RRPC_OK && c->cancellable) {
        rc = rrpc__areq_cancel_key(a, c->handle, own, sizeof own);
        key = own;
    }
    if (rc == RRPC_OK && key != NULL)
        rc = append_string_member(c, used, ",\"cancel_key\":", key);
    return rc;
}

int rrpc__areq_build(rrpc_async *a, rrpc__acall *c, const char *service, const char *method,
                     const json_t *params, const rrpc__call_trace_ctx *trace, const json_t *members)
{
    size_t used = 0;
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"method\":";
    static const char params_member[] = ",\"params\":";
    int rc = append(c, &used, a->prefix, strlen(a->prefix));
    if (rc == RRPC_OK)
        rc = append(c, &used, service, strlen(service) + 1);
    if (rc != RRPC_OK)
        return rrpc__async_error(a, rc, "out of memory");
    if (used > RRPC__KEY_MAX)
        return rrpc__async_error(a, RRPC_EINVAL, "service name too long");
    c->list_len = used - 1;
    rc = append(c, &used, head, sizeof head - 1);
    if (rc == RRPC_OK)
        rc = append_method(a, c, &used, method);
    if (rc == RRPC_OK && params != NULL) {
        rc = append(c, &used, params_member, sizeof params_member - 1);
        if (rc == RRPC_OK)
            rc = append_params(c, &used, params);
        if (rc == RRPC_EINVAL)
            return rrpc__async_error(a, rc, "params cannot be encoded as JSON");
    }
    if (rc == RRPC_OK)
        rc = append_trace(c, &used, trace);
    if (rc == RRPC_OK && members != NULL)
        rc = append_members(c, &used, members);
    if (rc == RRPC_OK && !c->notify &&
        (c->progress || c->cancellable || rrpc__inherited_cancel_key()))
        rc = append_progress_cancel(a, c, &used);
    if (rc == RRPC_OK && c->priority != RRPC_PRIORITY_NORMAL) {
        /* PROTOCOL.md section 7: absent means normal. */
        static const char high[] = ",\"priority\":\"high\"", low[] = ",\"priority\":\"low\"";
        rc = c->priority == RRPC_PRIORITY_HIGH ? append(c, &used, high, sizeof high - 1)
                                               : append(c, &used, low, sizeof low - 1);
    }
    if (rc == RRPC_OK && !c->notify && a->clock.measured_at > 0) {
        char deadline[80];
        long long now = rrpc__clock_redis_ms(&a->clock); /* `sent`: PROTOCOL.md section 7 */
        /* By hand: snprintf was a tenth of a call's instructions. */
        c->deadline_ms = now + (long long)(c->timeout_s * 1000.0 + 0.999);
        size_t n = sizeof ",\"sent\":" - 1;
        memcpy(deadline, ",\"sent\":", n);
        n += ms_text(deadline + n, now);
        memcpy(deadline + n, ",\"deadline\":", sizeof ",\"deadline\":" - 1);
        n += sizeof ",\"deadline\":" - 1;
        n += ms_text(deadline + n, c->deadline_ms);
        rc = append(c, &used, deadline, n);
    }
    if (rc == RRPC_OK)
        rc = c->notify ? append(c, &used, "}", 1)
                       : append(c, &used, a->request_tail, a->request_tail_len);
    if (rc == RRPC_OK && !c->notify)
        rc = reserve(c, used, RRPC__ASYNC_ID_ROOM);
    if (rc != RRPC_OK)
        return rc == RRPC_ENOMEM ? rrpc__async_error(a, rc, "out of memory") : rc;
    c->text_len = used - c->list_len - 1;
    return RRPC_OK;
}

static size_t u64_text(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

void rrpc__areq_put_id(rrpc__acall *c)
{
    char *end = rrpc__areq_text(c) + c->text_len;
    size_t n = u64_text(end, c->id);
    end[n] = '}';
    c->text_len += n + 1;
}

int rrpc__areq_make_tail(rrpc_async *a)
{
    json_t *key = json_string(a->reply_key);
    char *quoted = key ? json_dumps(key, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(key);
    if (quoted == NULL)
        return RRPC_EINVAL;
    size_t n = strlen(quoted) + 32;
    a->request_tail = malloc(n);
    if (a->request_tail)
        snprintf(a->request_tail, n, ",\"reply_to\":%s,\"id\":", quoted);
    free(quoted);
    if (a->request_tail == NULL)
        return RRPC_ENOMEM;
    a->request_tail_len = strlen(a->request_tail);
    return RRPC_OK;
}
