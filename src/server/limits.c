/* limits.c -- rate limits and concurrency caps, as the library's own
 * interceptor (PROTOCOL.md section 9, "Limits").
 *
 * The interceptor is always installed, innermost but before a schema
 * check, and costs one atomic load per request while the service has no
 * `limits` field.  With limits, the method's rule and the "*" rule go to
 * the transport (rrpc__handler_io's admit), which decides on the broker's
 * clock in one script: run (taking concurrency slots, given back by the
 * after hook), refuse (-32003, answered here), or wait (the request is
 * back in the broker; the dispatch then neither answers nor counts it).
 * When the broker cannot tell (a broken link), the request runs: a limit
 * is a fairness tool, not worth losing calls for.
 */
#include "server/limits.h"

#include "core/dispatch.h"
#include "core/log.h"
#include "core/ratelimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The slots the request this thread handles took: its before and after
 * hooks run on the same thread, with no other request between them. */
static _Thread_local rrpc__rl_verdict held;

static int refuse(rrpc_request *call, const rrpc__rl_verdict *v)
{
    json_t *data = json_pack("{s:s,s:I,s:s}", "limit", v->by_concurrency ? "concurrency" : "rate",
                             "retry_after_ms", (json_int_t)v->retry_after_ms, "scope",
                             v->rule ? v->rule->scope : "*");
    rrpc_request_error(call, RRPC_JSONRPC_LIMITED,
                       v->by_concurrency ? "Too many running" : "Rate limited", data);
    return 1;
}

static int before(rrpc_request *call, void *udata)
{
    rrpc__rl_state *st = udata;
    const rrpc__rl_table *t = atomic_load_explicit(&st->current, memory_order_acquire);
    if (t == NULL)
        return 0; /* no limits: the common case costs this load */
    rrpc__rl_ask ask = {.lease_ms = st->lease_ms};
    const rrpc__rl_rule *own = rrpc__rl_find(t, rrpc__request_method(call));
    if (own != NULL)
        ask.rules[ask.count++] = own;
    /* The built-ins (rpc.ping, rpc.discover) answer health probes and
     * tools: "*" does not count them, only a rule of their own. */
    const char *method = rrpc__request_method(call);
    if (t->star != NULL && strncmp(method, "rpc.", 4) != 0)
        ask.rules[ask.count++] = t->star;
    const rrpc__handler_io *io = rrpc__handler_io_get();
    if (ask.count == 0 || io == NULL || io->admit == NULL)
        return 0;
    const json_t *tenant = rrpc_request_member(call, "tenant"); /* checked by dispatch */
    if (json_is_string(tenant)) {
        ask.tenant = json_string_value(tenant);
        ask.tenant_len = json_string_length(tenant);
    }
    ask.text = rrpc__request_text(call, &ask.text_len);
    rrpc__rl_verdict v;
    memset(&v, 0, sizeof v);
    if (io->admit(io->ctx, &ask, &v) != RRPC_OK)
        return 0; /* the transport logged why */
    if (v.outcome == RRPC__RL_REFUSED)
        return refuse(call, &v);
    if (v.outcome == RRPC__RL_DEFERRED) {
        rrpc__request_defer(call);
        return 1;
    }
    for (size_t i = 0; i < v.nleases; i++)
        rrpc__rl_hold(st, v.leases[i].key, v.leases[i].member);
    held = v;
    return 0;
}

static void after(rrpc_request *call, const json_t *result, const json_t *error, void *udata)
{
    (void)call, (void)result, (void)error;
    rrpc__rl_state *st = udata;
    if (held.nleases == 0)
        return;
    const rrpc__handler_io *io = rrpc__handler_io_get();
    if (io != NULL && io->release != NULL)
        io->release(io->ctx, &held);
    for (size_t i = 0; i < held.nleases; i++)
        rrpc__rl_drop(st, held.leases[i].key, held.leases[i].member);
    held.nleases = 0;
}

int rrpc__limits_install(rrpc__methods *methods, rrpc__rl_state *st)
{
    return rrpc__methods_add_hook(methods, before, after, st, 1);
}

int rrpc__limits_check(const char *text, const rrpc__methods *methods, int heartbeat, char *err,
                       size_t errlen)
{
    if (text == NULL)
        return RRPC_OK;
    rrpc__rl_table *t = NULL;
    int rc = rrpc__rl_parse(text, strlen(text), &t, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    for (size_t i = 0; i < t->count && rc == RRPC_OK; i++)
        if (&t->rules[i] != t->star && rrpc__methods_find(methods, t->rules[i].scope) == NULL)
            rc = rrpc__fail(err, errlen, RRPC_EINVAL, "limits: no method \"%s\" is served",
                            t->rules[i].scope);
    rrpc__rl_free(t);
    if (rc == RRPC_OK && !heartbeat)
        rc = rrpc__fail(err, errlen, RRPC_EINVAL,
                        "limits need the heartbeat: workers learn them from it");
    return rc;
}
