/* transport.c -- the one module that speaks hiredis.
 *
 * Everything above this file sees rrpc__conn and rrpc__reply only, so a
 * later hiredis (with TLS, RESP3 or its own timeouts) can replace 0.14.1
 * here without touching the public API.  Two 0.14.1 quirks shape it: a read
 * timeout leaves the context dead until redisReconnect, and AUTH/SELECT
 * must be replayed by hand after every reconnect.
 *
 * Growing past one machine happens here too, so that the client, the
 * server and the async client keep working unchanged:
 * - Sentinel (redis+sentinel:// URLs): every dial asks the Sentinels, in
 *   turn, for the master's address, connects there and checks with ROLE that
 *   it really is the master.  A reconnect dials again, so after a failover
 *   the callers' usual reconnect paths land on the new master.  A demoted
 *   master answering READONLY or UNBLOCKED counts as a lost link for the
 *   same reason.
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

/* How long one Sentinel may take to answer, at most: a dead Sentinel must
 * not eat the whole connect timeout while others are up. */
#define SENTINEL_TIMEOUT_S 1.0

struct rrpc__conn {
    redisContext *ctx;
    rrpc__url url;       /* owned copy, replayed on reconnect */
    double connect_timeout_s;
    double read_timeout_s;
    int broken;
    size_t sentinel_first; /* the Sentinel that answered last is asked first */
    char *master_host;     /* Sentinel: where the master was found, or NULL */
    int master_port;
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

static int fail(rrpc__conn *c, int err, const char *what)
{
    if (what != c->errmsg) /* "still broken" passes the old message itself */
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

/* AUTH with USER (may be NULL) and PASSWORD, if there is a password. */
static int auth(rrpc__conn *c, const char *user, const char *password)
{
    if (password && user) {
        const char *argv[] = {"AUTH", user, password};
        return simple_command(c, 3, argv, RRPC_EAUTH);
    }
    if (password) {
        const char *argv[] = {"AUTH", password};
        return simple_command(c, 2, argv, RRPC_EAUTH);
    }
    return RRPC_OK;
}

/* AUTH and SELECT, which every new link needs. */
static int handshake(rrpc__conn *c)
{
    int rc = auth(c, c->url.user, c->url.password);
    if (rc == RRPC_OK && c->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->url.db);
        const char *argv[] = {"SELECT", db};
        rc = simple_command(c, 2, argv, RRPC_EAUTH);
    }
    return rc;
}

/* Opens c->ctx to host:port (or the unix socket PATH) with TIMEOUT_S for
 * the connect and every reply until the caller sets its own. */
static int connect_ctx(rrpc__conn *c, const char *host, int port, const char *path,
                       double timeout_s)
{
    struct timeval tv = to_timeval(timeout_s);
    if (c->ctx != NULL)
        redisFree(c->ctx);
    c->ctx = path ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(host, port, tv);
    if (c->ctx == NULL)
        return fail(c, RRPC_ENOMEM, "out of memory allocating a Redis context");
    if (c->ctx->err) {
        char msg[RRPC__ERRMSG_LEN];
        if (path)
            snprintf(msg, sizeof msg, "cannot connect to unix://%s: %s", path, c->ctx->errstr);
        else
            snprintf(msg, sizeof msg, "cannot connect to %s:%d: %s", host, port,
                     c->ctx->errstr);
        return fail(c, RRPC_ECONNECT, msg);
    }
    /* The handshake must not hang on a server that accepts but never talks. */
    redisSetTimeout(c->ctx, tv);
    return RRPC_OK;
}

/* Asks Sentinel A for the master's address: *host (new) and *port. */
static int ask_sentinel(rrpc__conn *c, const rrpc__addr *a, char **host, int *port)
{
    double t = c->connect_timeout_s < SENTINEL_TIMEOUT_S ? c->connect_timeout_s
                                                         : SENTINEL_TIMEOUT_S;
    int rc = connect_ctx(c, a->host, a->port, NULL, t);
    if (rc == RRPC_OK)
        rc = auth(c, c->url.sentinel_user, c->url.sentinel_password);
    if (rc != RRPC_OK)
        return rc;
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", c->url.master};
    redisReply *r = redisCommandArgv(c->ctx, 3, argv, NULL);
    char msg[RRPC__ERRMSG_LEN];
    if (r == NULL) {
        snprintf(msg, sizeof msg, "Sentinel %s:%d: %s", a->host, a->port, c->ctx->errstr);
        return fail(c, RRPC_ECONNECT, msg);
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        *port = atoi(r->element[1]->str);
        *host = strdup(r->element[0]->str);
        rc = *host ? RRPC_OK : fail(c, RRPC_ENOMEM, "out of memory");
    } else {
        snprintf(msg, sizeof msg, "Sentinel %s:%d does not know master '%s'%s%s", a->host,
                 a->port, c->url.master, r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        rc = fail(c, RRPC_ECONNECT, msg);
    }
    freeReplyObject(r);
    return rc;
}

/* Checks with ROLE that the node on c->ctx is a master: right after a
 * failover a Sentinel may still name the old one, now a replica. */
static int check_master(rrpc__conn *c, const char *host, int port)
{
    redisReply *r = redisCommand(c->ctx, "ROLE");
    if (r == NULL)
        return fail(c, RRPC_ECONNECT, c->ctx->errstr);
    int is_master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                    r->element[0]->type == REDIS_REPLY_STRING &&
                    strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    if (is_master)
        return RRPC_OK;
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s:%d, named master '%s' by a Sentinel, is not a master", host,
             port, c->url.master);
    return fail(c, RRPC_ECONNECT, msg);
}

/* Finds the master through the Sentinels, starting with the one that
 * answered last, and connects to it.  A password the master refuses is
 * final; any other failure moves on to the next Sentinel. */
static int dial_sentinel(rrpc__conn *c)
{
    int rc = RRPC_ECONNECT;
    for (size_t k = 0; k < c->url.nnodes; k++) {
        size_t i = (c->sentinel_first + k) % c->url.nnodes;
        char *host = NULL;
        int port = 0;
        rc = ask_sentinel(c, &c->url.nodes[i], &host, &port);
        int at_master = rc == RRPC_OK;
        if (rc == RRPC_OK)
            rc = connect_ctx(c, host, port, NULL, c->connect_timeout_s);
        if (rc == RRPC_OK)
            rc = handshake(c);
        if (rc == RRPC_OK)
            rc = check_master(c, host, port);
        if (rc == RRPC_OK) {
            c->sentinel_first = i;
            free(c->master_host);
            c->master_host = host;
            c->master_port = port;
            return RRPC_OK;
        }
        free(host);
        if (rc == RRPC_ENOMEM || (rc == RRPC_EAUTH && at_master))
            return rc;
    }
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "no usable master '%s' from %zu Sentinel(s); last: %.160s",
             c->url.master, c->url.nnodes, c->errmsg);
    return fail(c, rc == RRPC_EAUTH ? RRPC_EAUTH : RRPC_ECONNECT, msg);
}

static int dial(rrpc__conn *c)
{
    int rc;
    if (c->url.kind == RRPC__URL_SENTINEL) {
        rc = dial_sentinel(c);
    } else {
        rc = connect_ctx(c, c->url.host, c->url.port, c->url.path, c->connect_timeout_s);
        if (rc == RRPC_OK)
            rc = handshake(c);
    }
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
    int rc = rrpc__url_copy(&c->url, url);
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
    free(c->master_host);
    free(c);
}

int rrpc__conn_reconnect(rrpc__conn *c)
{
    return dial(c);
}

int rrpc__sentinel_resolve(const rrpc__url *url, double connect_timeout_s, rrpc__url *direct,
                           char *err, size_t errlen)
{
    memset(direct, 0, sizeof *direct);
    rrpc__conn *c = NULL;
    int rc = rrpc__conn_open(&c, url, connect_timeout_s, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    rrpc__url plain = {0};
    plain.kind = RRPC__URL_DIRECT;
    plain.host = c->master_host;
    plain.port = c->master_port;
    plain.user = url->user;
    plain.password = url->password;
    plain.db = url->db;
    rc = rrpc__url_copy(direct, &plain); /* borrowed strings, so copy them */
    rrpc__conn_close(c);
    return rc == RRPC_OK ? rc : rrpc__fail(err, errlen, rc, "out of memory");
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

/* Nonzero for the errors of a master that became a replica under us:
 * writes are refused (READONLY) and blocked pops are cut off (UNBLOCKED).
 * With Sentinel that means "dial again", exactly like a lost link. */
static int demoted(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "UNBLOCKED", 9) == 0);
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
    if (c->url.kind == RRPC__URL_SENTINEL && demoted(reply)) {
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "the master changed: %.200s", ((redisReply *)reply)->str);
        freeReplyObject(reply);
        return fail(c, RRPC_ECONNECT, msg);
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
