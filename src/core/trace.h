/* trace.h -- W3C Trace Context for requests (trace.c), no I/O.
 *
 * Requests carry the members "traceparent" and "tracestate" of the W3C
 * Trace Context recommendation (PROTOCOL.md section 7).  This module
 * checks received values, makes new ones, and keeps the one of the
 * request the calling thread is handling, so that calls made from inside
 * a handler continue its trace, as they inherit its deadline.
 */
#ifndef RRPC_TRACE_H
#define RRPC_TRACE_H

#include <stddef.h>

/* A version-00 traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>. */
#define RRPC__TRACEPARENT_LEN 55
/* The longest tracestate rrpc carries (the size the recommendation asks
 * every vendor to propagate); a longer one is dropped. */
#define RRPC__TRACESTATE_MAX 512

/* Reads a received traceparent (TEXT[0..len), not NUL-terminated) by the
 * recommendation's rules: version 00 exactly 55 characters, a higher
 * version (not ff) at least 55 with a '-' after them (read as 00), all
 * hex lowercase, neither id all zeros.  Valid: writes it as version 00
 * into OUT (56 bytes with the NUL) and returns 1.  Invalid: returns 0. */
int rrpc__traceparent_parse(const char *text, size_t len, char out[RRPC__TRACEPARENT_LEN + 1]);

/* Nonzero if TEXT[0..len) may travel as a tracestate: at most
 * RRPC__TRACESTATE_MAX characters, printable ASCII. */
int rrpc__tracestate_ok(const char *text, size_t len);

/* A new trace: random trace and parent ids, flags 00 (rrpc records
 * nothing, so it does not claim the trace sampled). */
void rrpc__traceparent_new(char out[RRPC__TRACEPARENT_LEN + 1]);

/* The same trace as PARENT (a parsed traceparent) with a new random
 * parent id and PARENT's flags. */
void rrpc__traceparent_child(const char *parent, char out[RRPC__TRACEPARENT_LEN + 1]);

/* The traceparent and tracestate of the next request the calling thread
 * sends when its caller named none: a child of the request the thread is
 * handling (rrpc__trace_enter), else a new trace.  *STATE is the handled
 * request's tracestate (borrowed until the handler returns) or NULL. */
void rrpc__trace_outgoing(char out[RRPC__TRACEPARENT_LEN + 1], const char **state);

/* The calling thread now handles a request with this TRACEPARENT (parsed,
 * or NULL) and TRACESTATE (or NULL); both borrowed until
 * rrpc__trace_leave. */
void rrpc__trace_enter(const char *traceparent, const char *tracestate);
void rrpc__trace_leave(void);

/* A 64-bit random number from the calling thread's generator, seeded
 * from getrandom once per thread (and again in a forked child): cheap
 * enough for every call, but not for secrets. */
unsigned long long rrpc__fast_random(void);

#endif /* RRPC_TRACE_H */
