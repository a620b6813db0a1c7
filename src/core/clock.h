/* clock.h -- local time, and the broker's clock that request deadlines
 * are expressed on (clock.c).  Reading the broker's clock is the
 * transport's (Redis: TIME, redis/conn.h); the arithmetic is here. */
#ifndef RRPC_CLOCK_H
#define RRPC_CLOCK_H

#include "core/internal.h"

#include <rrpc/rrpc.h>

#include <sys/time.h>

/* The Redis server's clock as seen from this process: deadlines are
 * expressed on it (PROTOCOL.md section 7) so that callers' and workers'
 * clocks need not agree.  offset_ms is Redis time minus local wall time,
 * measured with TIME; measured_at is when (monotonic), 0 = never. */
typedef struct rrpc__clock {
    double offset_ms;
    double measured_at;
} rrpc__clock;

/* Records a TIME reply (seconds, microseconds) read at local time
 * LOCAL_MS, with the round trip RTT_MS it took. */
void rrpc__clock_set(rrpc__clock *c, long long sec, long long usec, double local_ms, double rtt_ms);
/* The current time on the Redis clock, in milliseconds since the epoch. */
long long rrpc__clock_redis_ms(const rrpc__clock *c);
/* Seconds since the clock was last measured (a large number if never). */
double rrpc__clock_age(const rrpc__clock *c);

/* Sets REQ's sent member (now) and deadline member (TIMEOUT_S from now, if
 * positive) on the Redis clock C (PROTOCOL.md section 7).  Nothing is set
 * if C was never measured. */
void rrpc__request_set_deadline(json_t *req, const rrpc__clock *c, double timeout_s);

/* S seconds as a struct timeval (libevent timers, socket timeouts): NaN,
 * negative or 0 give 0; huge values are clamped, so the conversion is
 * never undefined. */
static inline struct timeval rrpc__timeval(double s)
{
    struct timeval tv;
    s = rrpc__timeout_or(s, 0);
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

double rrpc__now(void);       /* wall clock, seconds since the epoch */
double rrpc__monotonic(void); /* monotonic seconds */
void rrpc__sleep(double seconds);

#endif
