/* error.c -- error codes and messages.
 *
 * Every failing public call returns a negative rrpc_err; rrpc_strerror names
 * the code in a fixed text and the handle keeps the detailed message that
 * rrpc__fail formats.  Keeping both lets callers branch on the code and log
 * the message.
 */
#include "core/internal.h"

#include <stdio.h>

const char *rrpc_strerror(int err)
{
    switch ((rrpc_err)err) {
    case RRPC_OK: return "success";
    case RRPC_EINVAL: return "invalid argument";
    case RRPC_ENOMEM: return "out of memory";
    case RRPC_EURL: return "invalid Redis URL";
    case RRPC_ECONNECT: return "cannot reach Redis";
    case RRPC_EAUTH: return "Redis authentication failed";
    case RRPC_EREDIS: return "Redis returned an error";
    case RRPC_ETIMEDOUT: return "timed out";
    case RRPC_EPROTO: return "malformed message from peer";
    case RRPC_EREMOTE: return "remote procedure returned an error";
    case RRPC_ECANCELED: return "cancelled";
    case RRPC_ETOOBIG: return "message too large";
    case RRPC_EEXIST: return "already exists";
    case RRPC_ESTATE: return "wrong state for this operation";
    case RRPC_ESYS: return "system call failed";
    case RRPC_EUNAVAILABLE: return "service unavailable: no live worker";
    case RRPC_EOVERLOADED: return "service overloaded: queue full";
    case RRPC_ENOTSUP: return "not supported by this transport";
    }
    return "unknown error";
}

const char *rrpc_version(void)
{
    return RRPC_VERSION_STRING;
}

int rrpc__fail(char *buf, size_t len, int err, const char *fmt, ...)
{
    if (buf != NULL && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return err;
}
