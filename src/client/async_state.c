/* async_state.c -- the async client's per-thread state (async_state.h):
 * its error messages, and which client's loop a thread runs. */
#include "client/async_state.h"

#include <stdarg.h>
#include <stdio.h>

_Thread_local rrpc_async *rrpc__async_loop_of_thread;

static _Thread_local struct {
    const rrpc_async *owner;
    char text[RRPC__ERRMSG_LEN];
} tls_err;

int rrpc__async_error(const rrpc_async *a, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err.text, sizeof tls_err.text, fmt, ap);
    va_end(ap);
    tls_err.owner = a;
    return err;
}

const char *rrpc__async_error_text(void)
{
    return tls_err.text;
}

const char *rrpc__async_error_of(const rrpc_async *a)
{
    return a != NULL && tls_err.owner == a ? tls_err.text : "";
}
