/* log.h -- the library's one log sink (log.c).
 *
 * Every line librrpc logs goes through rrpc__log or rrpc__logf: they add
 * the "rrpc[ORIGIN]: " prefix, make the text safe for a terminal (a
 * worker's log line can carry text from Redis, i.e. from anyone who can
 * write there) and hand it to the application's rrpc_set_log_fn callback,
 * or to stderr.  No other module writes to stderr.
 */
#ifndef RRPC_LOG_H
#define RRPC_LOG_H

#include <rrpc/rrpc.h>

/* Logs "rrpc[SERVICE/WHO]: WHAT" or, with a DETAIL, "...: WHAT: DETAIL".
 * SERVICE NULL gives "rrpc[WHO]: ...", WHO NULL "rrpc[SERVICE]: ...". */
void rrpc__log(rrpc_log_level level, const char *service, const char *who, const char *what,
               const char *detail);

/* The same with a printf format for the text after the prefix. */
void rrpc__logf(rrpc_log_level level, const char *service, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* RRPC_LOG_H */
