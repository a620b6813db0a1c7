/* record.c -- a server's identity and registry record, and rpc.ping.
 *
 * A running server keeps one record for itself (all its worker threads)
 * in the registry of docs/PROTOCOL.md section 9: who it is, which methods
 * it serves, how often it beats.  What the record says is built here; the
 * transport writes it and keeps it alive (server_ops.h: announce).  The
 * built-in method rpc.ping lives here too, as it answers with the
 * record's identity.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/defaults.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "core/random.h"
#include "core/shard.h"
#include "server/record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- rpc.ping ------------------------------------------------------------ */

static json_t *rpc_ping(rrpc_request *req, void *udata)
{
    (void)req;
    const rrpc__record *r = udata;
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:f}", "service", r->service, "worker", r->id,
                     "host", r->host, "pid", (json_int_t)r->pid, "version", rrpc_version(), "time",
                     rrpc__now());
}

/* ---- set-up -------------------------------------------------------------- */

static void make_id(rrpc__record *r)
{
    char hex[33] = "00000000";
    if (gethostname(r->host, sizeof r->host) != 0)
        snprintf(r->host, sizeof r->host, "unknown");
    r->host[sizeof r->host - 1] = '\0';
    r->pid = (long)getpid();
    rrpc__random_hex128(hex);
    /* host and pid for people, random digits so a reused pid is new. */
    snprintf(r->id, sizeof r->id, "%s:%ld:%.8s", r->host, r->pid, hex);
}

int rrpc__record_init(rrpc__record *r, const rrpc_server_options *opts, rrpc__methods *methods)
{
    memset(r, 0, sizeof *r);
    r->service = strdup(opts->service);
    r->params = json_object();
    if (r->service == NULL || r->params == NULL ||
        rrpc__methods_add(methods, "rpc.ping", rpc_ping, r,
                          "built-in: answers with the worker's identity and time") != RRPC_OK)
        return RRPC_ENOMEM;
    make_id(r);
    r->methods = methods;
    r->enabled = opts->heartbeat;
    r->interval_s = opts->heartbeat_interval_s > 0 ? opts->heartbeat_interval_s
                                                   : RRPC__DEFAULT_HEARTBEAT_INTERVAL_S;
    r->ttl_s = opts->heartbeat_ttl_s > 0 ? opts->heartbeat_ttl_s : RRPC__DEFAULT_HEARTBEAT_TTL_S;
    if (r->ttl_s < 2 * r->interval_s)
        r->ttl_s = 2 * r->interval_s; /* one late beat must not look like a death */
    r->max_queue = opts->max_queue > 0 ? opts->max_queue : 0;
    r->shards = rrpc__shard_count(opts->shards);
    return RRPC_OK;
}

void rrpc__record_clear(rrpc__record *r)
{
    json_decref(r->params);
    free(r->service);
    free(r->text);
    rrpc__stats_free(&r->stats);
    memset(r, 0, sizeof *r);
}

int rrpc__record_set_params(rrpc__record *r, const char *method, const json_t *shape)
{
    if (rrpc__methods_find(r->methods, method) == NULL || shape == NULL)
        return RRPC_EINVAL;
    json_t *copy = json_deep_copy(shape);
    return copy && json_object_set_new(r->params, method, copy) == 0 ? RRPC_OK : RRPC_ENOMEM;
}

/* The record of PROTOCOL.md section 9, as text. */
static char *build_record(const rrpc__record *r, int threads)
{
    json_t *methods = json_array();
    for (size_t i = 0; i < r->methods->count; i++) {
        const rrpc__method *m = &r->methods->items[i];
        json_t *shape = json_object_get(r->params, m->name);
        json_array_append_new(methods, json_pack("{s:s, s:s?, s:O?}", "name", m->name,
                                                 "description", m->description, "params", shape));
    }
    json_t *rec = json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:i, s:f, s:f, s:f, s:I, s:i, s:o}", "id", r->id, "service",
        r->service, "host", r->host, "pid", (json_int_t)r->pid, "version", rrpc_version(),
        "threads", threads, "started", r->started, "heartbeat_s", r->interval_s, "ttl_s", r->ttl_s,
        "max_queue", (json_int_t)r->max_queue, "shards", r->shards, "methods", methods);
    char *text = rec ? json_dumps(rec, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(rec);
    return text;
}

/* ---- start and stop ------------------------------------------------------ */

int rrpc__record_start(rrpc__record *r, int threads)
{
    r->started = rrpc__now();
    int rc = rrpc__stats_init(&r->stats, r->methods->count);
    if (rc == RRPC_OK && (r->text = build_record(r, threads)) == NULL)
        rc = RRPC_ENOMEM;
    if (rc != RRPC_OK) {
        rrpc__stats_free(&r->stats);
        return rc;
    }
    r->methods->stats = &r->stats; /* the workers start counting */
    return RRPC_OK;
}

void rrpc__record_stop(rrpc__record *r)
{
    r->methods->stats = NULL;
    free(r->text);
    r->text = NULL;
    rrpc__stats_free(&r->stats);
}
