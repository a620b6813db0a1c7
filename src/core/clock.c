/* clock.c -- the two clocks rrpc needs.
 *
 * Wall time stamps dead letters; the monotonic clock measures timeouts and
 * backoff so that a clock step never makes a call wait too long or too
 * little.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"

#include <rrpc/rrpc.h>

#include <errno.h>
#include <time.h>

static double to_seconds(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

double rrpc__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return to_seconds(&ts);
}

double rrpc__monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return to_seconds(&ts);
}

void rrpc__sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the Redis server's clock ----------------------------------------- */

void rrpc__clock_set(rrpc__clock *c, long long sec, long long usec, double local_ms, double rtt_ms)
{
    /* Redis read its clock about half a round trip before the reply came. */
    double redis_ms = (double)sec * 1000.0 + (double)usec / 1000.0;
    c->offset_ms = redis_ms - (local_ms - rtt_ms / 2);
    c->measured_at = rrpc__monotonic();
}

long long rrpc__clock_redis_ms(const rrpc__clock *c)
{
    return (long long)(rrpc__now() * 1000.0 + c->offset_ms);
}

double rrpc__clock_age(const rrpc__clock *c)
{
    return c->measured_at > 0 ? rrpc__monotonic() - c->measured_at : 1e9;
}

void rrpc__request_set_deadline(json_t *req, const rrpc__clock *c, double timeout_s)
{
    if (req == NULL || c->measured_at <= 0)
        return; /* unmeasured clock: neither time */
    long long now = rrpc__clock_redis_ms(c);
    /* When it was sent, for the age of the oldest queued request
     * (PROTOCOL.md section 7, `sent`). */
    json_object_set_new(req, "sent", json_integer((json_int_t)now));
    if (timeout_s <= 0 || timeout_s > 1e8)
        return; /* no real limit: no deadline */
    long long deadline = now + (long long)(timeout_s * 1000.0 + 0.999);
    json_object_set_new(req, "deadline", json_integer((json_int_t)deadline));
}
