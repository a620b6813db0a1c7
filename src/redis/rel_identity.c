/* rel_identity.c -- a reliable request's identity, computed by the worker.
 *
 * The worker parses each request anyway, so the identity under which its
 * answer is remembered (RELIABILITY.md) is computed here, not by a script
 * in Redis (where decoding and hashing each request was most of Redis's
 * time).  The rules are those the reaper script applies (IDENTITY_LUA in
 * reliable.c), so both agree on what is "the same request":
 *   - a call (jsonrpc "2.0", a string id, or an integer id a double holds
 *     exactly): SHA-1 of "s\n<reply_to>\n<id>" or "n\n<reply_to>\n<%.0f>";
 *   - a notification (no id) with a non-empty string idempotency_key:
 *     SHA-1 of "k\n<key>";
 *   - a non-empty batch whose every element is such a call: SHA-1 of its
 *     text;
 *   - anything else, and anything above the size limit: SHA-1 of
 *     "t\n<worker id>\n<field>", this take of it (not stable: never
 *     remembered).
 * Only the envelope's top-level members are read; other values are
 * skipped without being decoded or allocated.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/deadletter.h"
#include "core/internal.h"
#include "redis/reliable.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 1000 /* as the scripts' cjson: deeper text does not decode */

typedef struct scan {
    const char *p, *end;
} scan;

/* A top-level member's value, as the identity needs it. */
typedef struct member {
    int present;
    char kind; /* 's' string, 'n' number, 'o' anything else */
    const char *at;
    size_t len; /* the raw token (a string's without its quotes) */
} member;

typedef struct envelope {
    member jsonrpc, id, reply_to, key;
} envelope;

static void skip_ws(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Past a string whose opening quote is at s->p; 0 if unterminated. */
static int skip_string(scan *s)
{
    for (s->p++; s->p < s->end; s->p++) {
        if (*s->p == '\\') {
            if (++s->p == s->end)
                return 0;
        } else if (*s->p == '"') {
            s->p++;
            return 1;
        }
    }
    return 0;
}

/* Past one value (any depth, strings respected); 0 if malformed. */
static int skip_value(scan *s)
{
    int depth = 0;
    do {
        skip_ws(s);
        if (s->p == s->end)
            return 0;
        char c = *s->p;
        if (c == '"') {
            if (!skip_string(s))
                return 0;
        } else if (c == '{' || c == '[') {
            if (++depth > MAX_DEPTH)
                return 0;
            s->p++;
        } else if (c == '}' || c == ']') {
            if (--depth < 0)
                return 0;
            s->p++;
        } else if (c == ',' || c == ':') {
            if (depth == 0)
                return 0;
            s->p++;
        } else {
            const char *start = s->p;
            while (s->p < s->end && strchr(" \t\r\n,:]}[{\"", *s->p) == NULL)
                s->p++;
            if (s->p == start)
                return 0;
        }
    } while (depth > 0);
    return 1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int hex4(const char *p, const char *end, unsigned *v)
{
    if (end - p < 4)
        return 0;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return 0;
        *v = *v * 16 + (unsigned)h;
    }
    return 1;
}

static size_t put_utf8(char *out, unsigned c)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Decodes the LEN raw bytes of a string's body into OUT (at least LEN
 * bytes: decoding never lengthens); its decoded length, or -1. */
static long decode_string(const char *in, size_t len, char *out)
{
    const char *p = in, *end = in + len;
    size_t n = 0;
    while (p < end) {
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        if (++p == end)
            return -1;
        char c = *p++;
        const char *plain = strchr("\"\\/bfnrt", c);
        if (plain != NULL && c != '\0') {
            static const char to[] = "\"\\/\b\f\n\r\t";
            out[n++] = to[plain - "\"\\/bfnrt"];
            continue;
        }
        unsigned u, lo;
        if (c != 'u' || !hex4(p, end, &u))
            return -1;
        p += 4;
        if (u >= 0xD800 && u < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
            hex4(p + 2, end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        n += put_utf8(out + n, u);
    }
    return (long)n;
}

/* Reads the object at s->p (its opening brace), keeping the members the
 * identity needs (the last of each name, as a decoder's table would). */
static int read_object(scan *s, envelope *env)
{
    memset(env, 0, sizeof *env);
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 1;
    }
    for (;;) {
        skip_ws(s);
        if (s->p == s->end || *s->p != '"')
            return 0;
        const char *name = s->p + 1;
        if (!skip_string(s))
            return 0;
        size_t name_len = (size_t)(s->p - 1 - name);
        skip_ws(s);
        if (s->p == s->end || *s->p != ':')
            return 0;
        s->p++;
        skip_ws(s);
        const char *at = s->p;
        if (!skip_value(s))
            return 0;
        member m = {1,
                    *at == '"'                                   ? 's'
                    : (*at == '-' || (*at >= '0' && *at <= '9')) ? 'n'
                                                                 : 'o',
                    at, (size_t)(s->p - at)};
        if (m.kind == 's') {
            m.at++;
            m.len -= 2;
        }
#define IS(lit) (name_len == sizeof lit - 1 && memcmp(name, lit, name_len) == 0)
        if (IS("jsonrpc"))
            env->jsonrpc = m;
        else if (IS("id"))
            env->id = m;
        else if (IS("reply_to"))
            env->reply_to = m;
        else if (IS("idempotency_key"))
            env->key = m;
#undef IS
        skip_ws(s);
        if (s->p == s->end)
            return 0;
        if (*s->p == '}') {
            s->p++;
            return 1;
        }
        if (*s->p++ != ',')
            return 0;
    }
}

/* SHA-1 of TAG "\n" A "\n" B into HEX (A and B decoded strings or raw
 * text, as given). */
static int hash3(const char *tag, const char *a, size_t alen, const char *b, size_t blen,
                 char hex[41])
{
    size_t n = strlen(tag) + 1 + alen + 1 + blen;
    char *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return RRPC_ENOMEM;
    size_t at = strlen(tag);
    memcpy(buf, tag, at);
    buf[at++] = '\n';
    memcpy(buf + at, a, alen);
    at += alen;
    if (b != NULL) {
        buf[at++] = '\n';
        memcpy(buf + at, b, blen);
        at += blen;
    }
    rrpc__sha1_hex(buf, at, hex);
    free(buf);
    return RRPC_OK;
}

/* The decoded text of string member M into a new buffer (*OUT, *LEN). */
static int member_text(const member *m, char **out, size_t *len)
{
    *out = malloc(m->len ? m->len : 1);
    if (*out == NULL)
        return RRPC_ENOMEM;
    long n = decode_string(m->at, m->len, *out);
    if (n < 0) {
        free(*out);
        *out = NULL;
        return RRPC_EPROTO;
    }
    *len = (size_t)n;
    return RRPC_OK;
}

static int is_20(const envelope *env)
{
    return env->jsonrpc.present && env->jsonrpc.kind == 's' && env->jsonrpc.len == 3 &&
           memcmp(env->jsonrpc.at, "2.0", 3) == 0;
}

/* 1 and the call's identity in HEX if ENV is a call; 0 if not; < 0 on
 * error. */
static int call_identity(const envelope *env, char hex[41])
{
    if (!is_20(env) || !env->id.present || env->id.kind == 'o')
        return 0;
    char number[64];
    const char *id = NULL;
    size_t id_len = 0;
    char *id_buf = NULL, *to = NULL;
    size_t to_len = 0;
    if (env->id.kind == 'n') {
        char token[64];
        if (env->id.len >= sizeof token)
            return 0;
        memcpy(token, env->id.at, env->id.len);
        token[env->id.len] = '\0';
        char *end = NULL;
        double v = strtod(token, &end);
        if (end == token || *end != '\0' || v != floor(v) || !(fabs(v) < 9007199254740992.0))
            return 0;
        id_len = (size_t)snprintf(number, sizeof number, "%.0f", v);
        id = number;
    } else if (member_text(&env->id, &id_buf, &id_len) != RRPC_OK) {
        return 0; /* a string the decoder would refuse: not a call */
    } else {
        id = id_buf;
    }
    int rc = RRPC_OK;
    if (env->reply_to.present && env->reply_to.kind == 's' &&
        member_text(&env->reply_to, &to, &to_len) != RRPC_OK)
        rc = 0;
    if (rc == RRPC_OK)
        rc = hash3(env->id.kind == 'n' ? "n" : "s", to ? to : "", to_len, id, id_len, hex);
    free(id_buf);
    free(to);
    return rc == RRPC_OK ? 1 : rc;
}

/* 1 and the identity of the message at S if it is stable; 0 if not. */
static int stable_identity(const char *msg, size_t len, char hex[41])
{
    scan s = {msg, msg + len};
    skip_ws(&s);
    if (s.p == s.end)
        return 0;
    envelope env;
    if (*s.p == '{') {
        if (!read_object(&s, &env))
            return 0;
        skip_ws(&s);
        if (s.p != s.end)
            return 0;
        int call = call_identity(&env, hex);
        if (call != 0)
            return call > 0;
        if (is_20(&env) && !env.id.present && env.key.present && env.key.kind == 's' &&
            env.key.len > 0) {
            char *key = NULL;
            size_t key_len = 0;
            if (member_text(&env.key, &key, &key_len) != RRPC_OK)
                return 0;
            int rc = key_len > 0 ? hash3("k", key, key_len, NULL, 0, hex) : RRPC_EPROTO;
            free(key);
            return rc == RRPC_OK;
        }
        return 0;
    }
    if (*s.p != '[')
        return 0;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == ']')
        return 0; /* empty: nothing to be the same call as */
    for (;;) {
        skip_ws(&s);
        char ignored[41];
        if (s.p == s.end || *s.p != '{' || !read_object(&s, &env) ||
            call_identity(&env, ignored) != 1)
            return 0;
        skip_ws(&s);
        if (s.p == s.end)
            return 0;
        if (*s.p == ']')
            break;
        if (*s.p++ != ',')
            return 0;
    }
    s.p++;
    skip_ws(&s);
    if (s.p != s.end)
        return 0;
    rrpc__sha1_hex(msg, len, hex);
    return 1;
}

int rrpc__rel_identity(const char *msg, size_t len, size_t max, const char *wid, const char *field,
                       char hex[41])
{
    if ((max == 0 || len <= max) && stable_identity(msg, len, hex))
        return 1;
    memset(hex, '0', 40); /* only if memory ran out below */
    hex[40] = '\0';
    hash3("t", wid, strlen(wid), field, strlen(field), hex);
    return 0;
}
