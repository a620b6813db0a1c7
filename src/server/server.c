/* server.c -- a server's life: options, methods, stats, run and stop.
 *
 * rrpc_server_run starts a pool of worker threads (worker.c) once Redis
 * answers (server_start.c), and waits for them after rrpc_server_stop or
 * a signal.  The worker itself is spread over the worker*.c files, which
 * share src/worker.h; only those and this file see struct rrpc_server.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/defaults.h"
#include "core/keys.h"
#include "core/deadletter.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/opts.h"
#include "core/protocol.h"
#include "core/random.h"
#include "redis/registry.h"
#include "redis/reliable.h"
#include "redis/server_worker.h"
#include "core/shard.h"
#include "redis/conn.h"
#include "core/url.h"
#include "redis/worker.h"

#include <signal.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int set_keys(rrpc_server *s)
{
    if (rrpc__key_join(s->list_key, sizeof s->list_key, s->prefix, s->service, NULL) ||
        rrpc__key_join(s->dead_key, sizeof s->dead_key, s->prefix, s->service, RRPC__SUFFIX_DEAD) ||
        rrpc__key_join(s->stats_key, sizeof s->stats_key, s->prefix, s->service,
                       RRPC__SUFFIX_STATS))
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL, "service name too long");
    char last[RRPC__KEY_MAX];
    if (rrpc__shard_key(last, sizeof last, s->list_key, s->shards - 1) != RRPC_OK ||
        rrpc__key_join(s->services_key, sizeof s->services_key, s->prefix, RRPC__KEY_SERVICES,
                       NULL))
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL, "service name too long");
    s->rules = (rrpc__key_rules){.prefix = s->prefix,
                                 .list_key = s->list_key,
                                 .dead_key = s->dead_key,
                                 .stats_key = s->stats_key,
                                 .shards = s->shards,
                                 .allowed_prefixes = (const char *const *)s->reply_prefixes};
    return RRPC_OK;
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

static int init_reliable(rrpc_server *s, const rrpc_server_options *opts)
{
    rrpc__rel_options ro = {
        .max_deliveries = opts->max_deliveries > 0 ? opts->max_deliveries : 3,
        .dedup_window_s = opts->dedup_window_s > 0 ? opts->dedup_window_s : 600,
        .heartbeat_ttl_s = opts->heartbeat_ttl_s > 0 ? opts->heartbeat_ttl_s : 5,
        .dead_letter_max = s->dead_letter_max,
        .max_request_bytes = s->limits.max_request_bytes,
        .dead_key = s->dead_key,
        .stats_key = s->stats_key,
    };
    int rc = rrpc__rel_init(&s->rel, s->list_key, s->service, &ro);
    s->rel.redelivered = &s->redelivered;
    s->rel.dead_letters = &s->dead_letters;
    /* Refused by rrpc_server_run, which can say why (rrpc_server_errmsg);
     * a key cut short would silently mix services. */
    if (rc == RRPC_EINVAL)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                                "reliable mode: key prefix + service name too long (%zu bytes; at "
                                "most %zu, so that every reliable key fits in %d bytes)",
                                strlen(s->list_key), rrpc__rel_max_list_key(), RRPC__KEY_MAX - 1);
    return rc == RRPC_EINVAL ? RRPC_OK : rc;
}

int rrpc_server_new(rrpc_server **out, const rrpc_server_options *caller)
{
    rrpc_server_options own; /* the caller's options, as long as this library's */
    const rrpc_server_options *opts = &own;
    if (out == NULL || caller == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    rrpc_server_options_init(&own);
    if (rrpc__opts_load(&own, sizeof own, caller, NULL, 0) != RRPC_OK)
        return RRPC_EINVAL;
    if (!rrpc__valid_name(opts->service))
        return RRPC_EINVAL; /* empty, or whitespace/control characters */
    /* Reliable mode keeps one in-flight state per request list; it is not
     * sharded (yet), so the two do not mix. */
    if (opts->shards < 0 || opts->shards > RRPC__MAX_SHARDS || (opts->reliable && opts->shards > 1))
        return RRPC_EINVAL;
    rrpc_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RRPC_ENOMEM;
    s->service = strdup(opts->service);
    s->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    s->workers = opts->workers > 0 ? opts->workers : cpu_count();
    s->shards = opts->shards > 1 ? opts->shards : 1;
    if (s->workers < s->shards)
        s->workers = s->shards; /* every shard needs a worker of its own */
    s->reply_ttl_s = opts->reply_ttl_s > 0 ? opts->reply_ttl_s : 60;
    s->dead_letter_max = opts->dead_letter_max > 0 ? opts->dead_letter_max : 1000;
    s->batch_max = opts->batch_max > 0 ? opts->batch_max : 128;
    atomic_store(&s->batch_now, s->batch_max);
    s->handle_signals = opts->handle_signals;
    s->connect_timeout_s = opts->connect_timeout_s;
    s->start_timeout_s = opts->start_timeout_s;
    s->limits.max_request_bytes = opts->max_request_bytes ? opts->max_request_bytes : 1 << 20;
    s->limits.max_batch = MAX_BATCH_ELEMENTS;
    s->limits.batch_time_s = opts->batch_time_limit_s > 0   ? opts->batch_time_limit_s
                             : opts->batch_time_limit_s < 0 ? 0 /* no limit */
                                                            : RRPC__DEFAULT_BATCH_TIME_LIMIT_S;
    s->reliable = opts->reliable;
    rrpc__sha1_hex(rrpc__reply_script, strlen(rrpc__reply_script), s->reply_sha);
    int rc = s->service && s->prefix ? RRPC_OK : RRPC_ENOMEM;
    if (rc == RRPC_OK)
        rc = copy_prefixes(s, opts->reply_prefixes);
    if (rc == RRPC_OK)
        rc = set_keys(s);
    if (rc == RRPC_OK &&
        (s->registry = rrpc__registry_new(opts, s->prefix, s->list_key, &s->methods)) == NULL)
        rc = RRPC_ENOMEM;
    if (rc == RRPC_OK && s->reliable)
        rc = init_reliable(s, opts);
    if (rc == RRPC_OK)
        rc = rrpc__url_parse(&s->url, opts->url, s->errmsg, sizeof s->errmsg);
    /* The reaper writes the dead-letter list and stats, outside the
     * service's slot: Cluster would refuse it, and killed workers' requests
     * would never come back.  Say so at start rather than half-run. */
    if (rc == RRPC_OK && s->reliable && !s->refusal && s->url.kind == RRPC__URL_CLUSTER)
        s->refusal = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_EINVAL,
                                "reliable mode does not work on Redis Cluster (yet): use a "
                                "single Redis or Sentinel, or serve without --reliable");
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
    rrpc__registry_free(s->registry);
    rrpc__methods_free(&s->methods);
    rrpc__url_free(&s->url);
    for (size_t i = 0; s->reply_prefixes && s->reply_prefixes[i]; i++)
        free(s->reply_prefixes[i]);
    free(s->reply_prefixes);
    free(s->service);
    free(s->prefix);
    free(s);
}

const char *rrpc_server_errmsg(const rrpc_server *s)
{
    return s ? s->errmsg : "no server";
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
    return rrpc__registry_set_params(s->registry, method, shape);
}

void rrpc_server_stop(rrpc_server *s)
{
    if (s)
        atomic_store(&s->stop, 1);
}

void rrpc_server_get_stats_sized(const rrpc_server *s, rrpc_server_stats *out, size_t size)
{
    rrpc_server *m = (rrpc_server *)s; /* atomics need a non-const pointer */
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

/* ---- running the pool ---------------------------------------------------- */

static _Atomic(rrpc_server *) signalled_server;

static void on_signal(int sig)
{
    (void)sig;
    rrpc_server *s = atomic_load(&signalled_server);
    if (s)
        atomic_store(&s->stop, 1);
}

static void install_signals(rrpc_server *s, struct sigaction *old_int, struct sigaction *old_term)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    atomic_store(&signalled_server, s);
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
}

static void restore_signals(const struct sigaction *old_int, const struct sigaction *old_term)
{
    sigaction(SIGINT, old_int, NULL);
    sigaction(SIGTERM, old_term, NULL);
    atomic_store(&signalled_server, NULL);
}

int rrpc_server_run(rrpc_server *s)
{
    if (s == NULL)
        return RRPC_EINVAL;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&s->running, &expected, 1))
        return rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ESTATE, "server already running");
    if (s->refusal) { /* errmsg says why; no wait for Redis can change it */
        atomic_store(&s->running, 0);
        return s->refusal;
    }
    /* Before the wait for Redis, so that a supervisor can stop a waiting
     * server gracefully. */
    struct sigaction old_int, old_term;
    if (s->handle_signals)
        install_signals(s, &old_int, &old_term);
    worker *ws = NULL;
    int rc = rrpc__start_waiting(s, &ws);
    if (ws == NULL) { /* failed, or stopped while waiting */
        if (s->handle_signals)
            restore_signals(&old_int, &old_term);
        atomic_store(&s->stop, 0);
        atomic_store(&s->running, 0);
        return rc;
    }
    int started = 0;
    for (; started < s->workers; started++)
        if (pthread_create(&ws[started].thread, NULL, rrpc__worker_main, &ws[started]) != 0) {
            rc = rrpc__fail(s->errmsg, sizeof s->errmsg, RRPC_ESYS, "cannot start a thread");
            atomic_store(&s->stop, 1);
            break;
        }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    rrpc__registry_stop(s->registry); /* after the last answer: record removed */
    if (s->handle_signals)
        restore_signals(&old_int, &old_term);
    if (s->reliable)
        rrpc__stop_reliable(s, ws);
    rrpc__close_workers(ws, s->workers);
    atomic_store(&s->stop, 0);
    atomic_store(&s->running, 0);
    return rc;
}

/* ---- one worker on the calling thread (server_worker.h) ------------------ */

int rrpc__server_run_worker(rrpc_server *s, int id)
{
    if (s == NULL || id < 0)
        return RRPC_EINVAL;
    worker w;
    memset(&w, 0, sizeof w);
    rrpc__init_worker(s, &w, id);
    int rc = rrpc__conn_open(&w.conn, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(w.conn, SOCKET_TIMEOUT_S);
    if (rc == RRPC_OK && s->reliable)
        rc = rrpc__rel_learn_scripts(&s->rel, w.conn);
    if (rc == RRPC_OK)
        rrpc__worker_main(&w); /* until rrpc_server_stop and nothing left to send */
    rrpc__conn_close(w.conn);
    atomic_store(&s->stop, 0);
    return rc;
}
