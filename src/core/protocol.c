/* protocol.c -- JSON-RPC 2.0 envelopes: build, validate, route.  No I/O.
 *
 * Everything that decides what a message means lives here, so that the
 * rules of docs/PROTOCOL.md are in one place and can be unit-tested without
 * a Redis server.
 */
#include "core/internal.h"
#include "core/protocol.h"

#include "core/keys.h"
#include "core/priority.h"
#include "core/shard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *rrpc__request_build(const char *method, const json_t *params, const char *id,
                            const char *reply_to)
{
    json_t *req = json_object();
    if (req == NULL)
        return NULL;
    int bad = json_object_set_new(req, "jsonrpc", json_string("2.0"));
    bad |= json_object_set_new(req, "method", json_string(method));
    if (params != NULL)
        bad |= json_object_set(req, "params", (json_t *)params);
    if (id != NULL)
        bad |= json_object_set_new(req, "id", json_string(id));
    if (reply_to != NULL)
        bad |= json_object_set_new(req, "reply_to", json_string(reply_to));
    if (bad) {
        json_decref(req);
        return NULL;
    }
    return req;
}

void rrpc__request_set_trace(json_t *req, const char *traceparent, const char *tracestate)
{
    if (req == NULL)
        return;
    json_object_set_new_nocheck(req, "traceparent", json_string_nocheck(traceparent));
    if (tracestate != NULL)
        json_object_set_new_nocheck(req, "tracestate", json_string_nocheck(tracestate));
}

char *rrpc__request_text_add_trace(char *text, const char *traceparent, const char *tracestate)
{
    size_t len = text ? strlen(text) : 0;
    size_t tp_len = strlen(traceparent), ts_len = tracestate ? strlen(tracestate) : 0;
    /* ,"traceparent":"..." and ,"tracestate":"..." with every byte of the
     * state escaped at worst (a quote or backslash, printable ASCII only). */
    size_t need = len + tp_len + 2 * ts_len + 48;
    char *out = len && text[len - 1] == '}' ? realloc(text, need) : NULL;
    if (out == NULL) {
        free(text);
        return NULL;
    }
    char *p = out + len - 1; /* over the closing brace */
    memcpy(p, ",\"traceparent\":\"", 16);
    p += 16;
    memcpy(p, traceparent, tp_len);
    p += tp_len;
    *p++ = '"';
    if (tracestate != NULL) {
        memcpy(p, ",\"tracestate\":\"", 15);
        p += 15;
        for (const char *c = tracestate; *c; c++) {
            if (*c == '"' || *c == '\\')
                *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

static json_t *response_envelope(const json_t *id)
{
    json_t *resp = json_object();
    if (resp == NULL)
        return NULL;
    json_object_set_new(resp, "jsonrpc", json_string("2.0"));
    json_object_set(resp, "id", id ? (json_t *)id : json_null());
    return resp;
}

json_t *rrpc__response_result(const json_t *id, json_t *result_stolen)
{
    json_t *resp = response_envelope(id);
    if (resp == NULL) {
        json_decref(result_stolen);
        return NULL;
    }
    if (json_object_set_new(resp, "result", result_stolen) != 0) {
        json_decref(resp);
        return NULL;
    }
    return resp;
}

json_t *rrpc__response_error_object(const json_t *id, json_t *error_stolen)
{
    json_t *resp = response_envelope(id);
    if (resp == NULL) {
        json_decref(error_stolen);
        return NULL;
    }
    if (json_object_set_new(resp, "error", error_stolen) != 0) {
        json_decref(resp);
        return NULL;
    }
    return resp;
}

json_t *rrpc__error_object(int code, const char *message, json_t *data_stolen)
{
    json_t *err = json_object();
    if (err == NULL) {
        json_decref(data_stolen);
        return NULL;
    }
    json_object_set_new(err, "code", json_integer(code));
    json_object_set_new(err, "message", json_string(message ? message : ""));
    if (data_stolen != NULL)
        json_object_set_new(err, "data", data_stolen);
    return err;
}

json_t *rrpc__response_error(const json_t *id, int code, const char *message, json_t *data_stolen)
{
    return rrpc__response_error_object(id, rrpc__error_object(code, message, data_stolen));
}

const char rrpc__why_priority[] = "member 'priority' must be \"high\", \"normal\" or \"low\"";

int rrpc__request_validate(const json_t *req, const char **why)
{
    rrpc__envelope env;
    rrpc__envelope_from_json(req, &env);
    return rrpc__envelope_validate(&env, why);
}

int rrpc__envelope_validate(const rrpc__envelope *env, const char **why)
{
    if (!env->object) {
        *why = "request must be a JSON object";
        return RRPC_JSONRPC_INVALID_REQUEST;
    }
    const rrpc__member *version = &env->m[RRPC__M_JSONRPC];
    if (version->kind != RRPC__K_STRING || version->len != 3 || memcmp(version->s, "2.0", 3) != 0) {
        *why = "member 'jsonrpc' must be exactly \"2.0\"";
        return RRPC_JSONRPC_INVALID_REQUEST;
    }
    if (env->m[RRPC__M_METHOD].kind != RRPC__K_STRING) {
        *why = "member 'method' must be a string";
        return RRPC_JSONRPC_INVALID_REQUEST;
    }
    rrpc__kind params = env->m[RRPC__M_PARAMS].kind;
    if (params != RRPC__K_ABSENT && params != RRPC__K_ARRAY && params != RRPC__K_OBJECT) {
        *why = "member 'params' must be an array or an object";
        return RRPC_JSONRPC_INVALID_REQUEST;
    }
    rrpc__kind id = env->m[RRPC__M_ID].kind;
    if (id != RRPC__K_ABSENT && id != RRPC__K_STRING && id != RRPC__K_INTEGER &&
        id != RRPC__K_REAL && id != RRPC__K_NULL) {
        *why = "member 'id' must be a string, a number or null";
        return RRPC_JSONRPC_INVALID_REQUEST;
    }
    const rrpc__member *priority = &env->m[RRPC__M_PRIORITY];
    if (priority->kind != RRPC__K_ABSENT &&
        (priority->kind != RRPC__K_STRING || !rrpc__priority_known(priority->s, priority->len))) {
        *why = rrpc__why_priority;
        return RRPC_JSONRPC_INVALID_REQUEST;
    }
    /* A reply_to that is not a string is ignored (PROTOCOL.md section 3),
     * as a peer that does not know the extension would ignore it. */
    return 0;
}

/* Copies a string member into buf with its length: keys are binary. */
static size_t copy_key(const rrpc__member *s, char *buf, size_t len)
{
    if (s->len + 1 > len)
        return 0;
    memcpy(buf, s->s, s->len);
    buf[s->len] = '\0';
    return s->len;
}

/* Rule 3 of PROTOCOL.md section 3: a number id names a key only when its
 * value is an integer no larger than 2^53 in magnitude, whatever its
 * spelling (100, 100.0, 1e2), so that every peer -- whose JSON libraries
 * read numbers as doubles or as integers -- derives the same text. */
static size_t number_key(const rrpc__member *id, char *buf, size_t len)
{
    long long v;
    if (id->kind == RRPC__K_INTEGER) {
        json_int_t i = id->i;
        if (i > RRPC__MAX_EXACT_INT || i < -RRPC__MAX_EXACT_INT)
            return 0;
        v = (long long)i;
    } else {
        double d = json_real_value(id->json);
        if (!isfinite(d) || d != floor(d) || fabs(d) > (double)RRPC__MAX_EXACT_INT)
            return 0;
        v = (long long)d; /* -0.0 becomes 0 */
    }
    int n = snprintf(buf, len, "%lld", v);
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

size_t rrpc__reply_key(const json_t *req, char *buf, size_t len)
{
    rrpc__envelope env;
    rrpc__envelope_from_json(req, &env);
    return rrpc__envelope_reply_key(&env, buf, len);
}

size_t rrpc__envelope_reply_key(const rrpc__envelope *env, char *buf, size_t len)
{
    const rrpc__member *reply_to = &env->m[RRPC__M_REPLY_TO];
    const rrpc__member *id = &env->m[RRPC__M_ID];
    if (reply_to->kind == RRPC__K_STRING && reply_to->len > 0)
        return copy_key(reply_to, buf, len);
    if (id->kind == RRPC__K_STRING && id->len > 0)
        return copy_key(id, buf, len);
    if (id->kind == RRPC__K_INTEGER || id->kind == RRPC__K_REAL)
        return number_key(id, buf, len);
    return 0;
}

/* ---- which reply keys a worker accepts (PROTOCOL.md section 3) -------- */

static int has_prefix(const char *key, size_t len, const char *prefix, size_t plen)
{
    return len >= plen && memcmp(key, prefix, plen) == 0;
}

static int has_suffix(const char *key, size_t len, const char *suffix)
{
    size_t slen = strlen(suffix);
    return len >= slen && memcmp(key + len - slen, suffix, slen) == 0;
}

static int equals(const char *key, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(key, s, len) == 0;
}

/* Rule 1: the service's own keys -- its request lists (every shard's),
 * dead letters, stats and anything under its hash tag {L}.  A reply
 * pushed onto the request list would be popped and answered forever. */
static int own_key(const rrpc__key_rules *r, const char *key, size_t len)
{
    size_t list_len = strlen(r->list_key);
    if (equals(key, len, r->list_key) || equals(key, len, r->dead_key) ||
        equals(key, len, r->stats_key) || rrpc__shard_is_key(r->list_key, r->shards, key, len))
        return 1;
    return len > list_len + 2 && key[0] == '{' && memcmp(key + 1, r->list_key, list_len) == 0 &&
           key[list_len + 1] == '}';
}

/* Rule 2: rrpc's keys of any service, recognised by their names. */
static int rrpc_key(const rrpc__key_rules *r, const char *key, size_t len)
{
    size_t plen = strlen(r->prefix);
    if (has_prefix(key, len, r->prefix, plen)) {
        const char *rest = key + plen;
        size_t rlen = len - plen;
        if (has_prefix(rest, rlen, RRPC__KEY_NAMESPACE, sizeof RRPC__KEY_NAMESPACE - 1) &&
            !has_prefix(rest, rlen, RRPC__KEY_REPLY, sizeof RRPC__KEY_REPLY - 1))
            return 1; /* rrpc:services, and whatever rrpc may add under rrpc: */
    }
    if (len > 0 && key[0] == '{')
        for (size_t i = 1; i + 1 < len; i++)
            if (key[i] == '}' && key[i + 1] == ':')
                return 1; /* {L}:workers, {L}:inflight, {L}:done:... of any service */
    return has_suffix(key, len, RRPC__SUFFIX_DEAD) || has_suffix(key, len, RRPC__SUFFIX_STATS);
}

static int cmp_name(const void *a, const void *b)
{
    const rrpc__name *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->s, y->s, n) : 0;
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

void rrpc__names_sort(rrpc__name *names, size_t n)
{
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_name);
}

static int known_service(const rrpc__key_rules *r, const char *name, size_t len)
{
    rrpc__name k = {name, len};
    return r->nservices > 0 && bsearch(&k, r->services, r->nservices, sizeof k, cmp_name) != NULL;
}

/* Rule 3: <prefix><name> or <prefix><name>#<k> of a registered service. */
static int service_list(const rrpc__key_rules *r, const char *key, size_t len)
{
    size_t plen = strlen(r->prefix);
    if (r->nservices == 0 || !has_prefix(key, len, r->prefix, plen))
        return 0;
    const char *name = key + plen;
    size_t n = len - plen;
    if (known_service(r, name, n))
        return 1;
    size_t digits = 0;
    while (digits < n && name[n - 1 - digits] >= '0' && name[n - 1 - digits] <= '9')
        digits++;
    return digits > 0 && digits < n && name[n - 1 - digits] == '#' &&
           known_service(r, name, n - 1 - digits);
}

/* Rule 4: the optional allow-list of reply-key prefixes. */
static int allowed(const rrpc__key_rules *r, const char *key, size_t len)
{
    if (r->allowed_prefixes == NULL)
        return 1;
    for (const char *const *p = r->allowed_prefixes; *p != NULL; p++)
        if (has_prefix(key, len, *p, strlen(*p)))
            return 1;
    return 0;
}

const char *rrpc__reply_key_refusal(const rrpc__key_rules *r, const char *key, size_t len)
{
    if (own_key(r, key, len))
        return "reply key refused: one of the service's own keys";
    if (rrpc_key(r, key, len))
        return "reply key refused: one of rrpc's keys";
    if (service_list(r, key, len))
        return "reply key refused: a service's request list";
    if (!allowed(r, key, len))
        return "reply key refused: not under an allowed prefix";
    return NULL;
}

static int id_matches(const json_t *id, const char *expected)
{
    if (expected == NULL)
        return 1;
    return json_is_string(id) && strcmp(json_string_value(id), expected) == 0;
}

/* rrpc__response_parse on the members of a response object. */
static int judge_response(const json_t *id, json_t *res, json_t *e, const char *expected_id,
                          json_t **result, json_t **error, char *err, size_t errlen)
{
    if (!id_matches(id, expected_id) && !json_is_object(e))
        return rrpc__fail(err, errlen, RRPC_EPROTO, "response id does not match the call");
    if (json_is_object(e)) {
        *error = json_incref(e);
        const char *m = json_string_value(json_object_get(e, "message"));
        return rrpc__fail(err, errlen, RRPC_EREMOTE, "remote error %" JSON_INTEGER_FORMAT ": %s",
                          json_integer_value(json_object_get(e, "code")), m ? m : "(no message)");
    }
    if (res != NULL) {
        *result = json_incref(res);
        return RRPC_OK;
    }
    return rrpc__fail(err, errlen, RRPC_EPROTO, "response has neither result nor error");
}

int rrpc__response_parse(const char *text, size_t len, const char *expected_id, json_t **result,
                         json_t **error, char *err, size_t errlen)
{
    *result = NULL;
    *error = NULL;
    /* The scanner reads nearly every response without decoding it all. */
    rrpc__response_view v;
    if (rrpc__response_scan(text, len, &v) == 0) {
        int rc = judge_response(v.m[RRPC__R_ID].json, v.m[RRPC__R_RESULT].json,
                                v.m[RRPC__R_ERROR].json, expected_id, result, error, err, errlen);
        rrpc__response_view_clear(&v);
        return rc;
    }
    json_error_t jerr;
    json_t *resp = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, &jerr);
    if (resp == NULL)
        return rrpc__fail(err, errlen, RRPC_EPROTO, "response is not JSON: %s", jerr.text);
    int rc = json_is_object(resp)
                 ? judge_response(json_object_get(resp, "id"), json_object_get(resp, "result"),
                                  json_object_get(resp, "error"), expected_id, result, error, err,
                                  errlen)
                 : rrpc__fail(err, errlen, RRPC_EPROTO, "response is not a JSON object");
    json_decref(resp);
    return rc;
}

/* ---- response text, fast ---------------------------------------------- */

/* A growing byte buffer for response_text. */
typedef struct textbuf {
    char *p;
    size_t len, cap;
    int failed;
} textbuf;

static void put(textbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Nonzero if S (LEN bytes) needs no escaping in JSON: printable ASCII
 * without '"' and '\\'.  Anything else goes through jansson. */
static int plain_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* Writes V in decimal at the end of NUM (32 bytes); returns where it
 * starts.  snprintf was an eighth of a worker's instructions. */
static char *decimal(json_int_t v, char num[32])
{
    char *p = num + 32;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        *--p = '-';
    return p;
}

/* Appends VALUE as jansson would encode it with RRPC__JSON_ENCODE_FLAGS,
 * taking the short way for integers and plain strings. */
static void put_value(textbuf *b, const json_t *value)
{
    if (json_is_integer(value)) {
        char num[32];
        char *at = decimal(json_integer_value(value), num);
        put(b, at, (size_t)(num + 32 - at));
        return;
    }
    if (json_is_string(value) && plain_ascii(json_string_value(value), json_string_length(value))) {
        put(b, "\"", 1);
        put(b, json_string_value(value), json_string_length(value));
        put(b, "\"", 1);
        return;
    }
    char *text = json_dumps(value, RRPC__JSON_ENCODE_FLAGS);
    if (text == NULL) {
        b->failed = 1;
        return;
    }
    put(b, text, strlen(text));
    free(text);
}

/* Writes the scalar V into OUT (ROOM bytes) as jansson would, if it is an
 * integer, a plain string or a literal; returns its length, or 0 (not
 * such a scalar, or no room). */
static size_t plain_scalar(const json_t *v, char *out, size_t room)
{
    const char *s = NULL;
    size_t n = 0;
    char num[32];
    if (json_is_integer(v)) {
        s = decimal(json_integer_value(v), num);
        n = (size_t)(num + 32 - s);
    } else if (json_is_true(v) || json_is_false(v) || json_is_null(v)) {
        s = json_is_true(v) ? "true" : json_is_false(v) ? "false" : "null";
        n = strlen(s);
    } else if (json_is_string(v) && plain_ascii(json_string_value(v), json_string_length(v))) {
        n = json_string_length(v);
        if (n + 2 > room)
            return 0;
        out[0] = '"';
        memcpy(out + 1, json_string_value(v), n);
        out[n + 1] = '"';
        return n + 2;
    }
    if (s == NULL || n > room)
        return 0;
    memcpy(out, s, n);
    return n;
}

size_t rrpc__flat_array_text(const json_t *v, char *out, size_t room)
{
    if (!json_is_array(v) || room < 2)
        return 0;
    size_t used = 0, count = json_array_size(v);
    out[used++] = '[';
    for (size_t i = 0; i < count; i++) {
        if (i > 0) {
            if (used == room)
                return 0;
            out[used++] = ',';
        }
        size_t n = plain_scalar(json_array_get(v, i), out + used, room - used);
        if (n == 0)
            return 0;
        used += n;
    }
    if (used == room)
        return 0;
    out[used++] = ']';
    return used;
}

char *rrpc__response_text(const json_t *response)
{
    const json_t *result = json_object_get(response, "result");
    const json_t *error = json_object_get(response, "error");
    const json_t *id = json_object_get(response, "id");
    if (!json_is_object(response) || json_object_size(response) != 3 || id == NULL ||
        (result == NULL) == (error == NULL))
        return json_dumps(response, RRPC__JSON_ENCODE_FLAGS); /* not an envelope of ours */
    return rrpc__response_text_of(id, result, error);
}

char *rrpc__response_text_of(const json_t *id, const json_t *result, const json_t *error)
{
    if (id == NULL)
        id = json_null();
    textbuf b = {NULL, 0, 0, 0};
    static const char head_result[] = "{\"jsonrpc\":\"2.0\",\"result\":";
    static const char head_error[] = "{\"jsonrpc\":\"2.0\",\"error\":";
    if (result != NULL)
        put(&b, head_result, sizeof head_result - 1);
    else
        put(&b, head_error, sizeof head_error - 1);
    put_value(&b, result != NULL ? result : error);
    put(&b, ",\"id\":", 6);
    put_value(&b, id);
    put(&b, "}", 1);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- the reply script (PROTOCOL.md section 3) ------------------------- */

/* Every rrpc worker (C, Ruby, Python) sends exactly this text, so that its
 * SHA-1 is the same for all of them and a script one loaded serves all. */
const char rrpc__reply_script[] =
    "-- rrpc reply v2: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for "
    "KEYS[i].\n"
    "-- Pushes only onto a reply list: a key that does not exist, or a list that has an expiry.\n"
    "-- Each distinct key is judged once, then pushed onto in order and expired once.\n"
    "local out, verdict, values, order = {}, {}, {}, {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local v = verdict[k]\n"
    "  if v == nil then\n"
    "    local t = redis.call('TYPE', k).ok\n"
    "    if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then\n"
    "      v = 1\n"
    "      values[k] = {}\n"
    "      order[#order + 1] = k\n"
    "    elseif t == 'list' then\n"
    "      v = 'list without expiry'\n"
    "    else\n"
    "      v = t\n"
    "    end\n"
    "    verdict[k] = v\n"
    "  end\n"
    "  if v == 1 then\n"
    "    local vs = values[k]\n"
    "    vs[#vs + 1] = ARGV[i + 1]\n"
    "  end\n"
    "  out[i] = v\n"
    "end\n"
    "for _, k in ipairs(order) do\n"
    "  local vs = values[k]\n"
    "  for j = 1, #vs, 1000 do\n"
    "    redis.call('RPUSH', k, unpack(vs, j, math.min(j + 999, #vs)))\n"
    "  end\n"
    "  redis.call('EXPIRE', k, ARGV[1])\n"
    "end\n"
    "return out\n";
