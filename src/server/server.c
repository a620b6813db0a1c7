/* server.c -- a server's settings: options and their checks, methods,
 * the per-request decision, counters.
 *
 * A server is its logic (server/) and the transport's part, reached only
 * through the transport's server operations (transport/server_ops.h):
 * the transport takes requests, asks decide (below) about each, and
 * delivers the outcome.  Running the pool is run.c's.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/defaults.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/keys.h"
#include "core/opts.h"
#include "core/protocol.h"
#include "core/random.h"
#include "core/shard.h"
#include "core/url.h"
#include "server/discover.h"
#include "server/limits.h"
#include "server/record.h"
#include "server/server.h"

#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON-RPC batch of more elements is refused as a whole. */
#define MAX_BATCH_ELEMENTS 1000

void rrpc_server_options_init_sized(rrpc_server_options *opts, size_t size)
{
    rrpc_server_options d = {.size = sizeof d,
                             .reply_ttl_s = RRPC__DEFAULT_REPLY_TTL_S,
                             .max_request_bytes = RRPC__DEFAULT_MAX_REQUEST_BYTES,
                             .dead_letter_max = RRPC__DEFAULT_DEAD_LETTER_MAX,
                             .batch_max = RRPC__DEFAULT_BATCH_MAX,
                             .handle_signals = 1,
                             .connect_timeout_s = RRPC__DEFAULT_CONNECT_TIMEOUT_S,
                             .max_deliveries = RRPC__DEFAULT_MAX_DELIVERIES,
                             .dedup_window_s = RRPC__DEFAULT_DEDUP_WINDOW_S,
                             .heartbeat = 1,
                             .heartbeat_interval_s = RRPC__DEFAULT_HEARTBEAT_INTERVAL_S,
                             .heartbeat_ttl_s = RRPC__DEFAULT_HEARTBEAT_TTL_S,
                             .batch_time_limit_s = RRPC__DEFAULT_BATCH_TIME_LIMIT_S};
    rrpc__opts_init(opts, size, &d, sizeof d);
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The protocol's names of the service's addresses, and the reply-key
 * rules that protect them. */
static int set_keys(rrpc_server *s)
{
    rrpc__serving *b = &s->base;
    char last[RRPC__KEY_MAX], services[RRPC__KEY_MAX], high[RRPC__KEY_MAX];
    if (rrpc__key_join(b->list_key, sizeof b->list_key, s->prefix, s->service, NULL) ||
        rrpc__key_join(b->dead_key, sizeof b->dead_key, s->prefix, s->service, RRPC__SUFFIX_DEAD) ||
        rrpc__key_join(b->stats_key, sizeof b->stats_key, s->prefix, s->service,
                       RRPC__SUFFIX_STATS) ||
        rrpc__shard_key(last, sizeof last, b->list_key, b->shards - 1) != RRPC_OK ||
        rrpc__priority_key(high, sizeof high, last, RRPC_PRIORITY_HIGH) != RRPC_OK ||
        rrpc__key_join(services, sizeof services, s->prefix, RRPC__KEY_SERVICES, NULL))
        return rrpc__fail(b->errmsg, sizeof b->errmsg, RRPC_EINVAL, "service name too long");
    b->rules = (rrpc__key_rules){.prefix = s->prefix,
                                 .list_key = b->list_key,
                                 .dead_key = b->dead_key,
                                 .stats_key = b->stats_key,
                                 .shards = b->shards,
                                 .allowed_prefixes = (const char *const *)s->reply_prefixes};
    return RRPC_OK;
}

/* The server's decision about one request (rrpc__decide_fn): dispatch,
 * counters, and rules 1 to 4 of the reply keys by name, in both delivery
 * modes; rule 5 (what the key is in the broker) is the transport's. */
static void decide(rrpc__serving *b, const rrpc__key_rules *rules, const rrpc__clock *clock,
                   const char *text, size_t len, rrpc__outcome *out, char **refused)
{
    const rrpc_server *s = (const rrpc_server *)b; /* base is its first member */
    rrpc__dispatch(&s->methods, &b->limits, clock, text, len, out);
    atomic_fetch_add(&b->n.requests, out->requests);
    atomic_fetch_add(&b->n.notifications, out->notifications);
    atomic_fetch_add(&b->n.errors, out->errors);
    atomic_fetch_add(&b->n.expired, out->expired);
    *refused = NULL;
    if (out->reply_key == NULL)
        return;
    const char *why = rrpc__reply_key_refusal(rules, out->reply_key, out->reply_key_len);
    if (why == NULL)
        return;
    free(out->dead_reason);
    out->dead_reason = strdup(why);
    *refused = out->response;
    free(out->reply_key);
    out->reply_key = out->response = NULL;
}

/* Copies the NULL-terminated allow-list of reply-key prefixes. */
static int copy_prefixes(rrpc_server *s, const char *const *prefixes)
{
    if (prefixes == NULL)
        return RRPC_OK;
    size_t n = 0;
    while (prefixes[n] != NULL)
        n++;
    s->reply_prefixes = calloc(n + 1, sizeof *s->reply_prefixes);
    if (s->reply_prefixes == NULL)
        return RRPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if ((s->reply_prefixes[i] = strdup(prefixes[i])) == NULL)
            return RRPC_ENOMEM;
    return RRPC_OK;
}

/* The settings the transport reads, from OPTS with their defaults. */
static void set_base(rrpc_server *s, const rrpc_server_options *opts)
{
    rrpc__serving *b = &s->base;
    b->service = s->service;
    b->prefix = s->prefix;
    b->workers = opts->workers > 0 ? opts->workers : cpu_count();
    b->shards = opts->shards > 1 ? opts->shards : 1;
    if (b->workers < b->shards)
        b->workers = b->shards; /* every shard needs a worker of its own */
    b->reply_ttl_s = opts->reply_ttl_s > 0 ? opts->reply_ttl_s : 60;
    b->dead_letter_max = opts->dead_letter_max > 0 ? opts->dead_letter_max : 1000;
    b->batch_max = opts->batch_max > 0 ? opts->batch_max : 128;
    atomic_store(&b->batch_now, b->batch_max);
    b->connect_timeout_s = opts->connect_timeout_s;
    b->limits.max_request_bytes = opts->max_request_bytes ? opts->max_request_bytes : 1 << 20;
    b->limits.max_batch = MAX_BATCH_ELEMENTS;
    b->limits.batch_time_s = opts->batch_time_limit_s > 0   ? opts->batch_time_limit_s
                             : opts->batch_time_limit_s < 0 ? 0 /* no limit */
                                                            : RRPC__DEFAULT_BATCH_TIME_LIMIT_S;
    b->reliable = opts->reliable;
    b->decide = decide;
}

/* Everything after the allocation; on failure rrpc_server_free cleans up. */
static int init_server(rrpc_server *s, const rrpc_server_options *opts)
{
    s->service = strdup(opts->service);
    s->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    if (s->service == NULL || s->prefix == NULL)
        return RRPC_ENOMEM;
    set_base(s, opts);
    rrpc__rl_state_init(&s->base.rl, s->service);
    if (opts->limits != NULL && (s->limits_text = strdup(opts->limits)) == NULL)
        return RRPC_ENOMEM;
    s->handle_signals = opts->handle_signals;
    s->start_timeout_s = opts->start_timeout_s;
    int rc = copy_prefixes(s, opts->reply_prefixes);
    if (rc == RRPC_OK)
        rc = set_keys(s);
    if (rc == RRPC_OK)
        rc = rrpc__record_init(&s->record, opts, &s->methods);
    if (rc == RRPC_OK)
        rc = rrpc__discover_init(&s->record);
    if (rc == RRPC_OK)
        rc = rrpc__limits_install(&s->methods, &s->base.rl);
    if (rc == RRPC_OK)
        rc = rrpc__url_parse(&s->base.url, opts->url, s->base.errmsg, sizeof s->base.errmsg);
    const rrpc__transport *t = NULL;
    if (rc == RRPC_OK &&
        (t = rrpc__transport_for(&s->base.url, s->base.errmsg, sizeof s->base.errmsg)) == NULL)
        rc = RRPC_EINVAL;
    if (rc == RRPC_OK && (s->ops = t->server) == NULL)
        rc = rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, RRPC_EINVAL,
                        "serving is not supported over %s yet", t->name);
    if (rc == RRPC_OK)
        rc = s->ops->create(&s->base, opts, &s->broker);
    return rc;
}

int rrpc_server_new(rrpc_server **out, const rrpc_server_options *caller)
{
    rrpc_server_options own; /* the caller's options, as long as this library's */
    if (out == NULL || caller == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    rrpc_server_options_init(&own);
    if (rrpc__opts_load(&own, sizeof own, caller, NULL, 0) != RRPC_OK)
        return RRPC_EINVAL;
    if (!rrpc__valid_name(own.service))
        return RRPC_EINVAL; /* empty, or whitespace/control characters */
    /* Reliable and sharded: each shard has its own in-flight keys. */
    if (own.shards < 0 || own.shards > RRPC__MAX_SHARDS)
        return RRPC_EINVAL;
    rrpc_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RRPC_ENOMEM;
    int rc = init_server(s, &own);
    if (rc != RRPC_OK) {
        rrpc_server_free(s);
        return rc;
    }
    *out = s;
    return RRPC_OK;
}

void rrpc_server_free(rrpc_server *s)
{
    if (s == NULL)
        return;
    if (s->ops != NULL)
        s->ops->destroy(s->broker);
    rrpc__record_clear(&s->record);
    rrpc__methods_free(&s->methods);
    rrpc__url_free(&s->base.url);
    if (s->base.rl.service != NULL) /* initialised */
        rrpc__rl_state_clear(&s->base.rl);
    free(s->limits_text);
    for (size_t i = 0; s->reply_prefixes && s->reply_prefixes[i]; i++)
        free(s->reply_prefixes[i]);
    free(s->reply_prefixes);
    free(s->service);
    free(s->prefix);
    free(s);
}

const char *rrpc_server_errmsg(const rrpc_server *s)
{
    return s ? s->base.errmsg : "no server";
}

int rrpc_server_register(rrpc_server *s, const char *method, rrpc_method_fn fn, void *udata,
                         const char *description)
{
    if (s == NULL || method == NULL || fn == NULL)
        return RRPC_EINVAL;
    if (atomic_load(&s->running))
        return RRPC_ESTATE;
    return rrpc__methods_add(&s->methods, method, fn, udata, description);
}

int rrpc_server_set_params(rrpc_server *s, const char *method, const json_t *shape)
{
    if (s == NULL || method == NULL || shape == NULL)
        return RRPC_EINVAL;
    if (atomic_load(&s->running))
        return RRPC_ESTATE;
    return rrpc__record_set_params(&s->record, method, shape);
}

/* The description of methods is frozen while the server runs. */
static int describable(rrpc_server *s, const char *method)
{
    if (s == NULL || method == NULL)
        return RRPC_EINVAL;
    if (atomic_load(&s->running))
        return rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, RRPC_ESTATE,
                          "the server is running: describe methods before rrpc_server_run");
    return RRPC_OK;
}

int rrpc_server_set_schema(rrpc_server *s, const char *method, const json_t *params_schema,
                           const json_t *result_schema)
{
    int rc = describable(s, method);
    return rc != RRPC_OK
               ? rc
               : rrpc__discover_set_schema(&s->methods, method, params_schema, result_schema,
                                           s->base.errmsg, sizeof s->base.errmsg);
}

int rrpc_server_add_error(rrpc_server *s, const char *method, int code, const char *message)
{
    int rc = describable(s, method);
    return rc != RRPC_OK ? rc
                         : rrpc__discover_add_error(&s->methods, method, code, message,
                                                    s->base.errmsg, sizeof s->base.errmsg);
}

int rrpc_server_add_interceptor(rrpc_server *s, rrpc_before_fn before, rrpc_after_fn after,
                                void *udata)
{
    if (s == NULL || (before == NULL && after == NULL))
        return RRPC_EINVAL;
    if (atomic_load(&s->running))
        return RRPC_ESTATE;
    return rrpc__methods_add_hook(&s->methods, before, after, udata, 0);
}

void rrpc_server_stop(rrpc_server *s)
{
    if (s)
        atomic_store(&s->base.stop, 1);
}

void rrpc_server_get_stats_sized(const rrpc_server *s, rrpc_server_stats *out, size_t size)
{
    rrpc__server_counters *m = &((rrpc_server *)s)->base.n; /* atomics need non-const */
    rrpc_server_stats all, *st = &all;
    st->requests = atomic_load(&m->requests);
    st->notifications = atomic_load(&m->notifications);
    st->errors = atomic_load(&m->errors);
    st->dead_letters = atomic_load(&m->dead_letters);
    st->expired = atomic_load(&m->expired);
    st->duplicates = atomic_load(&m->duplicates);
    st->redelivered = atomic_load(&m->redelivered);
    st->given_back = atomic_load(&m->given_back);
    st->lost = atomic_load(&m->lost);
    /* An older caller's struct is shorter: only what it has. */
    memcpy(out, st, size < sizeof all ? size : sizeof all);
}
