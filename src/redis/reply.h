/* reply.h -- a Redis reply as the sync side sees it (reply.c): a type and
 * a few accessors over hiredis's redisReply, so that no file above the
 * link (conn.c) needs hiredis to read what Redis answered. */
#ifndef RRPC_REPLY_H
#define RRPC_REPLY_H

#include <stddef.h>

typedef struct rrpc__reply rrpc__reply;

enum rrpc__reply_type {
    RRPC__REPLY_STRING,
    RRPC__REPLY_ARRAY,
    RRPC__REPLY_INTEGER,
    RRPC__REPLY_NIL,
    RRPC__REPLY_STATUS,
    RRPC__REPLY_ERROR
};

void rrpc__reply_free(rrpc__reply *r);
/* Nonzero for the error replies of a Redis that will serve again shortly:
 * still loading its data after a restart, busy in a script, a replica cut
 * off from its master.  Retrying after a pause is the right answer. */
int rrpc__reply_transient(const rrpc__reply *r);
enum rrpc__reply_type rrpc__reply_type(const rrpc__reply *r);
const char *rrpc__reply_str(const rrpc__reply *r, size_t *len);
long long rrpc__reply_integer(const rrpc__reply *r);
size_t rrpc__reply_count(const rrpc__reply *r);
const rrpc__reply *rrpc__reply_element(const rrpc__reply *r, size_t i);

/* The integer a string reply R holds (HGET of a counter, a score); 0 for
 * NULL, nil or anything else. */
long long rrpc__reply_ll(const rrpc__reply *r);
/* Redis's clock in milliseconds from a TIME reply R; 0 if R is not one. */
long long rrpc__reply_time_ms(const rrpc__reply *r);

/* Reads the Redis clock (core/clock.h) from a TIME reply R to a command
 * sent at local wall time SENT_MS.  RRPC_EPROTO if R is not a TIME reply. */
typedef struct rrpc__clock rrpc__clock;
int rrpc__clock_parse_time(rrpc__clock *c, const rrpc__reply *r, double sent_ms);

#endif /* RRPC_REPLY_H */
