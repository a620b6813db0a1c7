/* call_options.c -- per-call options (rrpc_call_options) and the trace
 * context a call sends, shared by the sync and the async client. */
#include "client/call_options.h"

#include "core/internal.h"
#include "core/opts.h"
#include "core/ratelimit.h"
#include "core/priority.h"

#include <stdio.h>
#include <string.h>

void rrpc_call_options_init_sized(rrpc_call_options *opts, size_t size)
{
    rrpc_call_options d = {.size = sizeof d};
    rrpc__opts_init(opts, size, &d, sizeof d);
}

int rrpc__call_options(rrpc_call_options *own, const rrpc_call_options *opts, char *err,
                       size_t errlen)
{
    rrpc_call_options_init(own);
    if (opts && rrpc__opts_load(own, sizeof *own, opts, err, errlen) != RRPC_OK)
        return RRPC_EINVAL;
    if (rrpc__priority_name(own->priority) == NULL)
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "priority %d is none of RRPC_PRIORITY_HIGH (1), RRPC_PRIORITY_NORMAL "
                          "(0) and RRPC_PRIORITY_LOW (-1)",
                          own->priority);
    return RRPC_OK;
}

int rrpc__call_trace(const char *traceparent, const char *tracestate, rrpc__call_trace_ctx *t,
                     char *err, size_t errlen)
{
    if (traceparent == NULL) {
        rrpc__trace_outgoing(t->traceparent, &t->tracestate);
        if (tracestate != NULL && !rrpc__tracestate_ok(tracestate, strlen(tracestate)))
            return rrpc__fail(err, errlen, RRPC_EINVAL,
                              "tracestate: at most 512 printable ASCII characters");
        if (tracestate != NULL)
            t->tracestate = tracestate;
        return RRPC_OK;
    }
    if (!rrpc__traceparent_parse(traceparent, strlen(traceparent), t->traceparent))
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "traceparent is not a valid W3C traceparent "
                          "(00-<32 lowercase hex>-<16 lowercase hex>-<2 hex>, ids not all zero)");
    if (tracestate != NULL && !rrpc__tracestate_ok(tracestate, strlen(tracestate)))
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "tracestate: at most 512 printable ASCII characters");
    t->tracestate = tracestate;
    return RRPC_OK;
}

int rrpc__call_tenant(const char *tenant, json_t **members, char *err, size_t errlen)
{
    if (tenant == NULL)
        return RRPC_OK;
    if (!rrpc__tenant_ok(tenant, strlen(tenant)))
        return rrpc__fail(err, errlen, RRPC_EINVAL, "tenant: 1 to %d bytes, no control characters",
                          RRPC__TENANT_MAX);
    if (*members == NULL && (*members = json_object()) == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    if (json_object_set_new(*members, "tenant", json_string(tenant)) != 0)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "tenant: not UTF-8");
    return RRPC_OK;
}
