/* dial.c -- one hiredis context to one Redis node (dial.h).
 *
 * Two hiredis 0.14.1 quirks shape the links built on this: a read timeout
 * leaves the context dead until it is replaced, and AUTH/SELECT must be
 * replayed by hand on every new context.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/dial.h"

#include <rrpc/rrpc.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int rrpc__dial_fail(rrpc__dial *d, int err, const char *what)
{
    if (what != d->errmsg) /* "still broken" passes the old message itself */
        snprintf(d->errmsg, sizeof d->errmsg, "%s", what);
    if (err == RRPC_ECONNECT || err == RRPC_ETIMEDOUT)
        d->broken = 1;
    return err;
}

struct timeval rrpc__dial_timeval(double s)
{
    struct timeval tv;
    s = rrpc__timeout_or(s, 0); /* NaN or huge: no undefined conversion */
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

int rrpc__dial_command(rrpc__dial *d, redisContext *ctx, int argc, const char **argv, int err_code)
{
    redisReply *r = redisCommandArgv(ctx, argc, argv, NULL);
    if (r == NULL)
        return rrpc__dial_fail(d, RRPC_ECONNECT, ctx->errstr);
    int rc = RRPC_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(d->errmsg, sizeof d->errmsg, "%s failed: %s", argv[0], r->str);
        rc = err_code;
    }
    freeReplyObject(r);
    return rc;
}

int rrpc__dial_auth(rrpc__dial *d, redisContext *ctx, const char *user, const char *password)
{
    if (password && user) {
        const char *argv[] = {"AUTH", user, password};
        return rrpc__dial_command(d, ctx, 3, argv, RRPC_EAUTH);
    }
    if (password) {
        const char *argv[] = {"AUTH", password};
        return rrpc__dial_command(d, ctx, 2, argv, RRPC_EAUTH);
    }
    return RRPC_OK;
}

int rrpc__dial_handshake(rrpc__dial *d, redisContext *ctx)
{
    int rc = rrpc__dial_auth(d, ctx, d->url->user, d->url->password);
    if (rc == RRPC_OK && d->url->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", d->url->db);
        const char *argv[] = {"SELECT", db};
        rc = rrpc__dial_command(d, ctx, 2, argv, RRPC_EAUTH);
    }
    return rc;
}

int rrpc__dial_ctx(rrpc__dial *d, redisContext **ctx, const char *host, int port, const char *path,
                   double timeout_s)
{
    struct timeval tv = rrpc__dial_timeval(timeout_s);
    *ctx = path ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(host, port, tv);
    if (*ctx == NULL)
        return rrpc__dial_fail(d, RRPC_ENOMEM, "out of memory allocating a Redis context");
    if ((*ctx)->err) {
        char msg[RRPC__ERRMSG_LEN];
        if (path)
            snprintf(msg, sizeof msg, "cannot connect to unix://%s: %s", path, (*ctx)->errstr);
        else
            snprintf(msg, sizeof msg, "cannot connect to %s:%d: %s", host, port, (*ctx)->errstr);
        return rrpc__dial_fail(d, RRPC_ECONNECT, msg);
    }
    /* The handshake must not hang on a server that accepts but never talks. */
    redisSetTimeout(*ctx, tv);
    return RRPC_OK;
}

/* Writes the decimal text of N at P; returns the length. */
static size_t put_size(char *p, size_t n)
{
    char tmp[24];
    size_t len = 0;
    do {
        tmp[len++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (size_t i = 0; i < len; i++)
        p[i] = tmp[len - 1 - i];
    return len;
}

/* hiredis 0.14 formats through sdscatfmt, which costs a worker several
 * thousand instructions per command, an eighth of all it spends on a call
 * (PERFORMANCE.md): RESP is written by hand here. */
int rrpc__dial_append(redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    size_t total = 16;
    for (int i = 0; i < argc; i++)
        total += (lens ? lens[i] : strlen(argv[i])) + 32;
    char stack[2048];
    char *buf = total <= sizeof stack ? stack : malloc(total);
    if (buf == NULL)
        return REDIS_ERR;
    char *p = buf;
    *p++ = '*';
    p += put_size(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        *p++ = '$';
        p += put_size(p, len);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    int rc = redisAppendFormattedCommand(ctx, buf, (size_t)(p - buf));
    if (buf != stack)
        free(buf);
    return rc;
}

int rrpc__dial_lost(rrpc__dial *d, const redisContext *ctx, const char *who)
{
    int timed_out = ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s: %s", who, timed_out ? "read timed out" : ctx->errstr);
    return rrpc__dial_fail(d, timed_out ? RRPC_ETIMEDOUT : RRPC_ECONNECT, msg);
}

int rrpc__dial_peer_closed(const redisContext *ctx)
{
    struct pollfd p = {ctx->fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char byte;
    return recv(ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}
