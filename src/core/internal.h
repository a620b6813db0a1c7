/* internal.h -- the few basics every librrpc module shares, never installed:
 * the error helper, buffer sizes and timeout clamping.  Each module's own
 * declarations are in its header (url.h, protocol.h, dispatch.h,
 * transport.h, ...; see "Where things are" in docs/DESIGN.md), so that a
 * file includes only what it uses.  Names carry the rrpc__ prefix so they
 * never clash with the public rrpc_ API.
 */
#ifndef RRPC_INTERNAL_H
#define RRPC_INTERNAL_H

#include <rrpc/rrpc.h>

#include <stddef.h>

#define RRPC__ERRMSG_LEN 256
#define RRPC__KEY_MAX    512

/* The longest timeout rrpc honours, about three years: anything longer
 * (infinity included) means "no limit" in practice and is cut to this,
 * which struct timeval, libevent's clock arithmetic, a deadline in Redis
 * milliseconds and a BLPOP timeout all hold without overflow. */
#define RRPC__TIMEOUT_MAX_S 1e8

/* S as a safe number of seconds: NaN, negative or 0 give DFLT; more than
 * RRPC__TIMEOUT_MAX_S gives that.  For options and timevals, where a bad
 * value has a default rather than an error. */
static inline double rrpc__timeout_or(double s, double dflt)
{
    if (!(s > 0)) /* NaN too */
        return dflt;
    return s > RRPC__TIMEOUT_MAX_S ? RRPC__TIMEOUT_MAX_S : s;
}

/* Writes a formatted message into buf (truncating) and returns err, so a
 * failing path can be one `return rrpc__fail(...)` line. */
int rrpc__fail(char *buf, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* RRPC_INTERNAL_H */
