/* reply.c -- Redis replies (reply.h): redisReply behind rrpc__reply.
 *
 * rrpc__reply is redisReply itself, so reading a reply costs no copy; the
 * cast stays inside this file (and conn.c, which makes them).
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/reply.h"

#include "core/clock.h"

#include <rrpc/rrpc.h>

#include <hiredis/hiredis.h>

#include <stdlib.h>
#include <string.h>

static redisReply *R(const rrpc__reply *r)
{
    return (redisReply *)r;
}

int rrpc__reply_transient(const rrpc__reply *r)
{
    static const char *const prefixes[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"};
    if (r == NULL || R(r)->type != REDIS_REPLY_ERROR || R(r)->str == NULL)
        return 0;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(R(r)->str, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

void rrpc__reply_free(rrpc__reply *r)
{
    if (r)
        freeReplyObject(R(r));
}

enum rrpc__reply_type rrpc__reply_type(const rrpc__reply *r)
{
    switch (R(r)->type) {
    case REDIS_REPLY_STRING: return RRPC__REPLY_STRING;
    case REDIS_REPLY_ARRAY: return RRPC__REPLY_ARRAY;
    case REDIS_REPLY_INTEGER: return RRPC__REPLY_INTEGER;
    case REDIS_REPLY_STATUS: return RRPC__REPLY_STATUS;
    case REDIS_REPLY_ERROR: return RRPC__REPLY_ERROR;
    default: return RRPC__REPLY_NIL;
    }
}

const char *rrpc__reply_str(const rrpc__reply *r, size_t *len)
{
    if (len)
        *len = R(r)->len;
    return R(r)->str;
}

long long rrpc__reply_integer(const rrpc__reply *r)
{
    return R(r)->integer;
}

size_t rrpc__reply_count(const rrpc__reply *r)
{
    return R(r)->type == REDIS_REPLY_ARRAY ? R(r)->elements : 0;
}

const rrpc__reply *rrpc__reply_element(const rrpc__reply *r, size_t i)
{
    return (const rrpc__reply *)R(r)->element[i];
}

long long rrpc__reply_ll(const rrpc__reply *r)
{
    return r && rrpc__reply_type(r) == RRPC__REPLY_STRING ? atoll(rrpc__reply_str(r, NULL)) : 0;
}

long long rrpc__reply_time_ms(const rrpc__reply *r)
{
    if (rrpc__reply_count(r) != 2)
        return 0;
    return rrpc__reply_ll(rrpc__reply_element(r, 0)) * 1000 +
           rrpc__reply_ll(rrpc__reply_element(r, 1)) / 1000;
}

int rrpc__clock_parse_time(rrpc__clock *c, const rrpc__reply *r, double sent_ms)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ARRAY || rrpc__reply_count(r) != 2)
        return RRPC_EPROTO;
    long long parts[2];
    for (int i = 0; i < 2; i++) {
        const char *s = rrpc__reply_str(rrpc__reply_element(r, (size_t)i), NULL);
        if (s == NULL)
            return RRPC_EPROTO;
        parts[i] = strtoll(s, NULL, 10);
    }
    double now_ms = rrpc__now() * 1000.0;
    rrpc__clock_set(c, parts[0], parts[1], now_ms, now_ms - sent_ms);
    return RRPC_OK;
}
