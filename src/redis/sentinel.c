/* sentinel.c -- the master of a redis+sentinel:// URL (sentinel.h).
 *
 * Every dial asks the Sentinels, in turn, for the master's address,
 * connects there and checks with ROLE that it really is the master.  A
 * reconnect dials again, so after a failover the callers' usual reconnect
 * paths land on the new master (conn.c also counts READONLY and UNBLOCKED
 * from a demoted master as a lost link, for the same reason).
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/sentinel.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* new_ctx into *CTX, replacing the old one. */
static int connect_ctx(rrpc__dial *d, redisContext **ctx, const char *host, int port,
                       double timeout_s)
{
    if (*ctx != NULL)
        redisFree(*ctx);
    return rrpc__dial_ctx(d, ctx, host, port, NULL, timeout_s);
}

/* Asks Sentinel A for the master's address: *host (new) and *port. */
static int ask_sentinel(rrpc__dial *d, redisContext **ctx, const rrpc__addr *a, char **host,
                        int *port)
{
    double t =
        d->connect_timeout_s < RRPC__PROBE_TIMEOUT_S ? d->connect_timeout_s : RRPC__PROBE_TIMEOUT_S;
    int rc = connect_ctx(d, ctx, a->host, a->port, t);
    if (rc == RRPC_OK)
        rc = rrpc__dial_auth(d, *ctx, d->url->sentinel_user, d->url->sentinel_password);
    if (rc != RRPC_OK)
        return rc;
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", d->url->master};
    redisReply *r = redisCommandArgv(*ctx, 3, argv, NULL);
    char msg[RRPC__ERRMSG_LEN];
    if (r == NULL) {
        snprintf(msg, sizeof msg, "Sentinel %s:%d: %s", a->host, a->port, (*ctx)->errstr);
        return rrpc__dial_fail(d, RRPC_ECONNECT, msg);
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        *port = atoi(r->element[1]->str);
        *host = strdup(r->element[0]->str);
        rc = *host ? RRPC_OK : rrpc__dial_fail(d, RRPC_ENOMEM, "out of memory");
    } else {
        snprintf(msg, sizeof msg, "Sentinel %s:%d does not know master '%s'%s%s", a->host, a->port,
                 d->url->master, r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        rc = rrpc__dial_fail(d, RRPC_ECONNECT, msg);
    }
    freeReplyObject(r);
    return rc;
}

/* Checks with ROLE that the node on CTX is a master: right after a
 * failover a Sentinel may still name the old one, now a replica. */
static int check_master(rrpc__dial *d, redisContext *ctx, const char *host, int port)
{
    redisReply *r = redisCommand(ctx, "ROLE");
    if (r == NULL)
        return rrpc__dial_fail(d, RRPC_ECONNECT, ctx->errstr);
    int is_master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                    r->element[0]->type == REDIS_REPLY_STRING &&
                    strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    if (is_master)
        return RRPC_OK;
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s:%d, named master '%s' by a Sentinel, is not a master", host, port,
             d->url->master);
    return rrpc__dial_fail(d, RRPC_ECONNECT, msg);
}

int rrpc__sentinel_dial(rrpc__dial *d, rrpc__sentinel *s, redisContext **ctx)
{
    const rrpc__url *url = d->url;
    int rc = RRPC_ECONNECT;
    for (size_t k = 0; k < url->nnodes; k++) {
        size_t i = (s->first + k) % url->nnodes;
        char *host = NULL;
        int port = 0;
        rc = ask_sentinel(d, ctx, &url->nodes[i], &host, &port);
        int at_master = rc == RRPC_OK;
        if (rc == RRPC_OK)
            rc = connect_ctx(d, ctx, host, port, d->connect_timeout_s);
        if (rc == RRPC_OK)
            rc = rrpc__dial_handshake(d, *ctx);
        if (rc == RRPC_OK)
            rc = check_master(d, *ctx, host, port);
        if (rc == RRPC_OK) {
            s->first = i;
            free(s->master_host);
            s->master_host = host;
            s->master_port = port;
            return RRPC_OK;
        }
        free(host);
        if (rc == RRPC_ENOMEM || (rc == RRPC_EAUTH && at_master))
            return rc;
    }
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "no usable master '%s' from %zu Sentinel(s); last: %.160s",
             url->master, url->nnodes, d->errmsg);
    return rrpc__dial_fail(d, rc == RRPC_EAUTH ? RRPC_EAUTH : RRPC_ECONNECT, msg);
}

void rrpc__sentinel_free(rrpc__sentinel *s)
{
    free(s->master_host);
    s->master_host = NULL;
}
