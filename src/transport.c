/* transport.c -- the one module that speaks hiredis.
 *
 * Everything above this file sees rrpc__conn and rrpc__reply only, so a
 * later hiredis (with TLS, RESP3 or its own timeouts) can replace 0.14.1
 * here without touching the public API.  Two 0.14.1 quirks shape it: a read
 * timeout leaves the context dead until redisReconnect, and AUTH/SELECT
 * must be replayed by hand after every reconnect.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct rrpc__conn {
    redisContext *ctx;
    rrpc__url url;       /* owned copy, replayed on reconnect */
    double connect_timeout_s;
    double read_timeout_s;
    int broken;
    char errmsg[RRPC__ERRMSG_LEN];
};

/* rrpc__reply is redisReply itself; the cast stays inside this file. */
static redisReply *R(const rrpc__reply *r)
{
    return (redisReply *)r;
}

static struct timeval to_timeval(double s)
{
    struct timeval tv;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int copy_url(rrpc__url *dst, const rrpc__url *src)
{
    *dst = *src;
    dst->host = dup_or_null(src->host);
    dst->path = dup_or_null(src->path);
    dst->user = dup_or_null(src->user);
    dst->password = dup_or_null(src->password);
    if ((src->host && !dst->host) || (src->path && !dst->path) || (src->user && !dst->user) ||
        (src->password && !dst->password)) {
        rrpc__url_free(dst);
        return RRPC_ENOMEM;
    }
    return RRPC_OK;
}

static int fail(rrpc__conn *c, int err, const char *what)
{
    snprintf(c->errmsg, sizeof c->errmsg, "%s", what);
    if (err == RRPC_ECONNECT || err == RRPC_ETIMEDOUT)
        c->broken = 1;
    return err;
}

/* Runs one command synchronously and checks it did not fail. */
static int simple_command(rrpc__conn *c, int argc, const char **argv, int err_code)
{
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, NULL);
    if (r == NULL)
        return fail(c, RRPC_ECONNECT, c->ctx->errstr);
    int rc = RRPC_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed: %s", argv[0], r->str);
        rc = err_code;
    }
    freeReplyObject(r);
    return rc;
}

/* AUTH and SELECT, which every new link needs. */
static int handshake(rrpc__conn *c)
{
    int rc = RRPC_OK;
    if (c->url.password && c->url.user) {
        const char *argv[] = {"AUTH", c->url.user, c->url.password};
        rc = simple_command(c, 3, argv, RRPC_EAUTH);
    } else if (c->url.password) {
        const char *argv[] = {"AUTH", c->url.password};
        rc = simple_command(c, 2, argv, RRPC_EAUTH);
    }
    if (rc == RRPC_OK && c->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->url.db);
        const char *argv[] = {"SELECT", db};
        rc = simple_command(c, 2, argv, RRPC_EAUTH);
    }
    return rc;
}

static int dial(rrpc__conn *c)
{
    struct timeval tv = to_timeval(c->connect_timeout_s);
    if (c->ctx != NULL)
        redisFree(c->ctx);
    c->ctx = c->url.path ? redisConnectUnixWithTimeout(c->url.path, tv)
                         : redisConnectWithTimeout(c->url.host, c->url.port, tv);
    if (c->ctx == NULL)
        return fail(c, RRPC_ENOMEM, "out of memory allocating a Redis context");
    if (c->ctx->err) {
        char where[160], msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "cannot connect to %s: %s",
                 rrpc__url_describe(&c->url, where, sizeof where), c->ctx->errstr);
        return fail(c, RRPC_ECONNECT, msg);
    }
    /* The handshake must not hang on a server that accepts but never talks. */
    redisSetTimeout(c->ctx, tv);
    int rc = handshake(c);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(c, c->read_timeout_s);
    c->broken = rc != RRPC_OK;
    return rc;
}

void rrpc__ignore_sigpipe(void)
{
    /* hiredis writes with write(2): a peer that vanished would raise
     * SIGPIPE and kill the process.  Only a default disposition is changed,
     * so an application's own handler stays in place. */
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

int rrpc__conn_open(rrpc__conn **out, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen)
{
    *out = NULL;
    rrpc__ignore_sigpipe();
    rrpc__conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    c->connect_timeout_s = connect_timeout_s > 0 ? connect_timeout_s : 5;
    int rc = copy_url(&c->url, url);
    if (rc == RRPC_OK)
        rc = dial(c);
    if (rc != RRPC_OK) {
        rrpc__fail(err, errlen, rc, "%s", c->errmsg[0] ? c->errmsg : rrpc_strerror(rc));
        rrpc__conn_close(c);
        return rc;
    }
    *out = c;
    return RRPC_OK;
}

void rrpc__conn_close(rrpc__conn *c)
{
    if (c == NULL)
        return;
    if (c->ctx)
        redisFree(c->ctx);
    rrpc__url_free(&c->url);
    free(c);
}

int rrpc__conn_reconnect(rrpc__conn *c)
{
    return dial(c);
}

int rrpc__conn_set_timeout(rrpc__conn *c, double seconds)
{
    c->read_timeout_s = seconds;
    struct timeval tv = to_timeval(seconds > 0 ? seconds : 0);
    if (redisSetTimeout(c->ctx, tv) != REDIS_OK)
        return fail(c, RRPC_ECONNECT, "cannot set the socket timeout");
    return RRPC_OK;
}

int rrpc__conn_append(rrpc__conn *c, int argc, const char **argv, const size_t *lens)
{
    if (c->broken)
        return fail(c, RRPC_ECONNECT, c->errmsg[0] ? c->errmsg : "connection is broken");
    if (redisAppendCommandArgv(c->ctx, argc, argv, lens) != REDIS_OK)
        return fail(c, RRPC_ENOMEM, "cannot queue a Redis command");
    return RRPC_OK;
}

int rrpc__conn_appendv(rrpc__conn *c, int argc, ...)
{
    const char *argv[8];
    if (argc > 8)
        return RRPC_EINVAL;
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, const char *);
    va_end(ap);
    return rrpc__conn_append(c, argc, argv, NULL);
}

int rrpc__conn_read(rrpc__conn *c, rrpc__reply **out)
{
    *out = NULL;
    if (c->broken)
        return fail(c, RRPC_ECONNECT, c->errmsg[0] ? c->errmsg : "connection is broken");
    void *reply = NULL;
    if (redisGetReply(c->ctx, &reply) != REDIS_OK) {
        int timed_out = c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "Redis connection: %s",
                 timed_out ? "read timed out" : c->ctx->errstr);
        return fail(c, timed_out ? RRPC_ETIMEDOUT : RRPC_ECONNECT, msg);
    }
    *out = (rrpc__reply *)reply;
    return RRPC_OK;
}

const char *rrpc__conn_errmsg(const rrpc__conn *c)
{
    return c->errmsg;
}

int rrpc__conn_broken(const rrpc__conn *c)
{
    return c->broken;
}

int rrpc__conn_peer_closed(const rrpc__conn *c)
{
    /* Only meaningful with no reply outstanding: then anything readable
     * is an EOF or an error (Redis closed an idle link, or restarted). */
    struct pollfd p = {c->ctx->fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char byte;
    return recv(c->ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

void rrpc__reply_free(rrpc__reply *r)
{
    if (r)
        freeReplyObject(R(r));
}

enum rrpc__reply_type rrpc__reply_type(const rrpc__reply *r)
{
    switch (R(r)->type) {
    case REDIS_REPLY_STRING: return RRPC__REPLY_STRING;
    case REDIS_REPLY_ARRAY: return RRPC__REPLY_ARRAY;
    case REDIS_REPLY_INTEGER: return RRPC__REPLY_INTEGER;
    case REDIS_REPLY_STATUS: return RRPC__REPLY_STATUS;
    case REDIS_REPLY_ERROR: return RRPC__REPLY_ERROR;
    default: return RRPC__REPLY_NIL;
    }
}

const char *rrpc__reply_str(const rrpc__reply *r, size_t *len)
{
    if (len)
        *len = R(r)->len;
    return R(r)->str;
}

long long rrpc__reply_integer(const rrpc__reply *r)
{
    return R(r)->integer;
}

size_t rrpc__reply_count(const rrpc__reply *r)
{
    return R(r)->type == REDIS_REPLY_ARRAY ? R(r)->elements : 0;
}

const rrpc__reply *rrpc__reply_element(const rrpc__reply *r, size_t i)
{
    return (const rrpc__reply *)R(r)->element[i];
}
