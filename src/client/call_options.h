/* call_options.h -- per-call options and the trace context a call sends
 * (call_options.c), for the sync client (client.c) and the async one. */
#ifndef RRPC_CALL_OPTIONS_H
#define RRPC_CALL_OPTIONS_H

#include "core/trace.h"

#include <rrpc/rrpc.h>

#include <stddef.h>

/* Loads the caller's OPTS (NULL: all defaults) over the defaults into
 * *OWN; RRPC_EINVAL, with ERR saying why, as rrpc__opts_load. */
int rrpc__call_options(rrpc_call_options *own, const rrpc_call_options *opts, char *err,
                       size_t errlen);

/* The trace context one request carries. */
typedef struct rrpc__call_trace_ctx {
    char traceparent[RRPC__TRACEPARENT_LEN + 1];
    const char *tracestate; /* borrowed (the caller's, or the handled request's), or NULL */
} rrpc__call_trace_ctx;

/* Settles the trace context of a request into *T: the caller's
 * TRACEPARENT and TRACESTATE if given (RRPC_EINVAL, with ERR saying why,
 * if invalid), else the handled request's continued, else a new trace. */
int rrpc__call_trace(const char *traceparent, const char *tracestate, rrpc__call_trace_ctx *t,
                     char *err, size_t errlen);

/* Adds the call's "tenant" member (rrpc_call_options.tenant, NULL: none)
 * to *MEMBERS (created if NULL).  RRPC_EINVAL with ERR saying why if the
 * tenant is not 1 to 128 bytes without control characters. */
int rrpc__call_tenant(const char *tenant, json_t **members, char *err, size_t errlen);

#endif /* RRPC_CALL_OPTIONS_H */
