/* deadletter.c -- the record kept for a message no one can be answered for.
 *
 * PROTOCOL.md section 6: rather than drop what it cannot answer, a worker
 * files the original text with the reason and time on <service>:dead.
 * The text may be anything, including invalid UTF-8, which JSON strings
 * cannot carry; such bytes are kept exactly as "message_base64" instead of
 * "message", so nothing is lost to a lossy conversion.  A message (or an
 * undeliverable response) larger than the worker's size limit is not kept
 * whole: its first bytes, its length and its SHA-1 are, so that a hostile
 * sender cannot make a worker build -- or Redis refuse -- a huge record.
 */
#define _GNU_SOURCE /* memmem */
#include "core/clock.h"
#include "core/deadletter.h"
#include "core/protocol.h"
#include "core/trace.h"

#include <rrpc/rrpc.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *base64(const unsigned char *in, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[j++] = alphabet[(v >> 18) & 63];
        out[j++] = alphabet[(v >> 12) & 63];
        out[j++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        out[j++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[j] = '\0';
    return out;
}

/* ---- SHA-1 (FIPS 180-4), for the digest of a text too large to keep --- */

static uint32_t rol(uint32_t v, int n)
{
    return (v << n) | (v >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void rrpc__sha1_hex(const void *data, size_t len, char hex[41])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const unsigned char *p = data;
    size_t full = len / 64 * 64;
    for (size_t i = 0; i < full; i += 64)
        sha1_block(h, p + i);
    unsigned char tail[128] = {0};
    size_t rest = len - full;
    if (rest)
        memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < tail_len; i += 64)
        sha1_block(h, tail + i);
    for (int i = 0; i < 5; i++)
        snprintf(hex + 8 * i, 9, "%08x", (unsigned)h[i]);
}

/* ---- the record --------------------------------------------------------- */

/* The longest start of TEXT[0..len) of at most MAX bytes that does not end
 * inside a UTF-8 sequence (so that a valid text stays valid when cut). */
static size_t utf8_cut(const char *text, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    /* Back up over continuation bytes (10xxxxxx) to the start of the
     * sequence that straddles the cut, and drop it whole. */
    for (int k = 0; k < 4 && n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80; k++)
        n--;
    return n;
}

/* Sets NAME (a JSON string) or NAME_base64 to BYTES[0..len). */
static void set_bytes(json_t *rec, const char *name, const char *bytes, size_t len)
{
    json_t *text = json_stringn(bytes, len); /* NULL if not UTF-8 */
    char key[64];
    if (text != NULL) {
        json_object_set_new(rec, name, text);
        return;
    }
    snprintf(key, sizeof key, "%s_base64", name);
    char *b64 = base64((const unsigned char *)bytes, len);
    json_object_set_new(rec, key, json_string(b64 ? b64 : ""));
    free(b64);
}

/* A text too large to keep: NAME_prefix (or NAME_prefix_base64), NAME_bytes
 * and NAME_sha1. */
static void set_bounded(json_t *rec, const char *name, const char *bytes, size_t len)
{
    char key[64], sha[41];
    snprintf(key, sizeof key, "%s_prefix", name);
    set_bytes(rec, key, bytes, utf8_cut(bytes, len, RRPC__DEAD_PREFIX_BYTES));
    snprintf(key, sizeof key, "%s_bytes", name);
    json_object_set_new(rec, key, json_integer((json_int_t)len));
    rrpc__sha1_hex(bytes, len, sha);
    snprintf(key, sizeof key, "%s_sha1", name);
    json_object_set_new(rec, key, json_string(sha));
}

static void set_message(json_t *rec, const char *message, size_t len, size_t keep)
{
    if (len <= keep)
        set_bytes(rec, "message", message, len);
    else
        set_bounded(rec, "message", message, len);
}

/* The response as a JSON value when it is small enough, else bounded. */
static void set_response(json_t *rec, const json_t *response, const char *text, size_t keep)
{
    char *owned = NULL;
    if (response != NULL && text == NULL)
        text = owned = json_dumps(response, RRPC__JSON_ENCODE_FLAGS);
    if (text != NULL) {
        size_t len = strlen(text);
        json_t *value = len <= keep && response != NULL ? json_incref((json_t *)response)
                        : len <= keep ? json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL)
                                      : NULL;
        if (value != NULL)
            json_object_set_new(rec, "response", value);
        else
            set_bounded(rec, "response", text, len);
    }
    free(owned);
}

/* REASON as a JSON string.  A reason may quote the message (the parser's
 * "near '...'", cut after a fixed number of bytes, maybe inside a UTF-8
 * sequence) or Redis (an error naming a caller's key): bytes that are not
 * UTF-8 are written as the text \xNN, so that the reason is never lost. */
static json_t *reason_string(const char *reason)
{
    json_t *s = json_string(reason);
    if (s != NULL)
        return s;
    size_t len = strlen(reason), n = 0;
    char *clean = malloc(4 * len + 1);
    if (clean == NULL)
        return NULL;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)reason[i];
        size_t seq = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        json_t *ok = seq <= len - i ? json_stringn(reason + i, seq) : NULL;
        if (ok != NULL) {
            memcpy(clean + n, reason + i, seq);
            n += seq;
            i += seq;
        } else {
            n += (size_t)snprintf(clean + n, 5, "\\x%02x", c);
            i++;
        }
        json_decref(ok);
    }
    clean[n] = '\0';
    s = json_string(clean);
    free(clean);
    return s;
}

/* The valid traceparent of a request object REQ into OUT; 0 if none. */
static int object_trace(const json_t *req, char out[RRPC__TRACEPARENT_LEN + 1])
{
    const json_t *tp = json_object_get(req, "traceparent");
    return json_is_string(tp) &&
           rrpc__traceparent_parse(json_string_value(tp), json_string_length(tp), out);
}

/* The trace context of MESSAGE, kept at the record's top so that a dead
 * letter can be found by its trace (PROTOCOL.md section 6): the request's,
 * or a batch's first element's.  A message too large to parse is searched
 * for the member as text, in the prefix the record keeps. */
static void set_trace(json_t *rec, const char *message, size_t len, size_t keep)
{
    char tp[RRPC__TRACEPARENT_LEN + 1];
    int found = 0;
    if (message == NULL)
        return;
    if (len <= keep) {
        json_t *msg = json_loadb(message, len, RRPC__JSON_DECODE_FLAGS, NULL);
        if (json_is_object(msg))
            found = object_trace(msg, tp);
        for (size_t i = 0; json_is_array(msg) && !found && i < json_array_size(msg); i++)
            found = object_trace(json_array_get(msg, i), tp);
        json_decref(msg);
    } else {
        static const char member[] = "\"traceparent\":\"";
        /* Only its prefix, as for the rest of the record (PROTOCOL.md 6). */
        size_t scan = len < RRPC__DEAD_PREFIX_BYTES ? len : RRPC__DEAD_PREFIX_BYTES;
        const char *end = message + scan, *p = message;
        while (!found && (p = memmem(p, (size_t)(end - p), member, sizeof member - 1)) != NULL) {
            p += sizeof member - 1;
            const char *q = memchr(p, '"', (size_t)(end - p));
            found = q != NULL && rrpc__traceparent_parse(p, (size_t)(q - p), tp);
        }
    }
    if (found)
        json_object_set_new(rec, "traceparent", json_string(tp));
}

char *rrpc__dead_letter_text(const char *service, const char *reason, const char *message,
                             size_t message_len, size_t keep, const json_t *response,
                             const char *response_text)
{
    json_t *rec = json_object();
    if (rec == NULL)
        return NULL;
    json_object_set_new(rec, "reason", reason_string(reason));
    json_object_set_new(rec, "time", json_real(rrpc__now()));
    json_object_set_new(rec, "service", json_string(service));
    set_message(rec, message, message_len, keep);
    set_trace(rec, message, message_len, keep);
    set_response(rec, response, response_text, keep);
    char *text = json_dumps(rec, RRPC__JSON_ENCODE_FLAGS);
    json_decref(rec);
    return text;
}
