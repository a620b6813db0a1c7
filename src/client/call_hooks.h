/* call_hooks.h -- the interceptors of the sync and async clients
 * (call_hooks.c): rrpc_client_add_interceptor, rrpc_async_add_interceptor. */
#ifndef RRPC_CALL_HOOKS_H
#define RRPC_CALL_HOOKS_H

#include <rrpc/rrpc.h>

#include <stddef.h>

typedef struct rrpc__call_hook {
    rrpc_call_before_fn before;
    rrpc_call_after_fn after;
    void *udata;
} rrpc__call_hook;

typedef struct rrpc__call_hooks {
    rrpc__call_hook *items;
    size_t count;
} rrpc__call_hooks;

int rrpc__call_hooks_add(rrpc__call_hooks *h, rrpc_call_before_fn before, rrpc_call_after_fn after,
                         void *udata);
void rrpc__call_hooks_free(rrpc__call_hooks *h);

/* Runs the befores in order until one refuses.  *PASSED counts those that
 * let the call through; *MEMBERS (new, or NULL if none were added) holds
 * the members they added.  RRPC_OK, the refusal's code (ERR says so), or
 * RRPC_EINVAL for a member rrpc sets itself. */
int rrpc__call_hooks_before(const rrpc__call_hooks *h, const char *service, const char *method,
                            const json_t *params, json_t **members, size_t *passed, char *err,
                            size_t errlen);

/* Runs the afters of the first PASSED hooks, last to first. */
void rrpc__call_hooks_after(const rrpc__call_hooks *h, size_t passed, const char *service,
                            const char *method, int status, const json_t *result,
                            const json_t *error);

#endif
