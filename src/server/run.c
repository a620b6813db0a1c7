/* run.c -- a server's run: signals, the start, the pool, the stop.
 *
 * rrpc_server_run waits for the broker (the transport's connect and
 * announce, retried with backoff while may_heal says the failure may pass),
 * starts one thread per worker on the transport's run_worker, and after
 * rrpc_server_stop or a signal waits for them and withdraws the service.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/internal.h"
#include "core/log.h"
#include "server/record.h"
#include "server/limits.h"
#include "server/server.h"
#include "server/server_worker.h"

#include <pthread.h>
#include <signal.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Waiting for the broker at start: the workers' reconnect backoff. */
#define BACKOFF_MIN_S 0.05
#define BACKOFF_MAX_S 5.0

/* ---- signals ------------------------------------------------------------- */

static _Atomic(rrpc_server *) signalled_server;

static void on_signal(int sig)
{
    (void)sig;
    rrpc_server *s = atomic_load(&signalled_server);
    if (s)
        atomic_store(&s->base.stop, 1);
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

/* ---- waiting for the broker at start ------------------------------------- */

static void log_start(const rrpc_server *s, rrpc_log_level level, const char *what,
                      const char *detail)
{
    rrpc__log(level, s->service, "start", what, detail);
}

/* The service's presence as the transport announces it; NULL without a
 * heartbeat (the record and stats are off then). */
static const rrpc__announcement *announcement(rrpc_server *s, rrpc__announcement *a)
{
    if (!s->record.enabled)
        return NULL;
    *a = (rrpc__announcement){.id = s->record.id,
                              .record = s->record.text,
                              .interval_s = s->record.interval_s,
                              .ttl_s = s->record.ttl_s,
                              .max_queue = s->record.max_queue,
                              .shards = s->record.shards,
                              .stats = &s->record.stats,
                              .methods = &s->methods,
                              .limits_text = s->limits_text,
                              .limits = &s->base.rl};
    s->base.rl.lease_ms = (long)(s->record.ttl_s * 1000);
    return a;
}

/* One try: every worker's link and the broker's checks, then the record
 * and heartbeats.  On failure nothing is left open or running. */
static int start_once(rrpc_server *s, rrpc__announcement *a)
{
    int rc = s->ops->connect(s->broker);
    if (rc != RRPC_OK)
        return rc;
    if (s->record.enabled && (rc = rrpc__record_start(&s->record, s->base.workers)) != RRPC_OK)
        rc = rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, rc, "cannot build the record");
    if (rc == RRPC_OK && (rc = s->ops->announce(s->broker, announcement(s, a))) != RRPC_OK &&
        s->record.enabled)
        rrpc__record_stop(&s->record);
    if (rc != RRPC_OK)
        s->ops->disconnect(s->broker);
    return rc;
}

/* Sleeps SECONDS in short steps, so that a stop is noticed; nonzero if
 * the server was stopped. */
static int sleep_unless_stopped(rrpc_server *s, double seconds)
{
    double until = rrpc__monotonic() + seconds;
    for (double left = seconds; left > 0; left = until - rrpc__monotonic()) {
        if (atomic_load(&s->base.stop))
            return 1;
        rrpc__sleep(left < 0.1 ? left : 0.1);
    }
    return atomic_load(&s->base.stop);
}

/* Says once that the server waits, and why. */
static void log_waiting(const rrpc_server *s)
{
    char what[96];
    if (s->start_timeout_s > 0)
        snprintf(what, sizeof what, "waiting for %s (up to %g s)", s->ops->broker,
                 s->start_timeout_s);
    else
        snprintf(what, sizeof what, "waiting for %s", s->ops->broker);
    log_start(s, RRPC_LOG_WARN, what, s->base.errmsg);
}

/* Starts, waiting for the broker with the workers' reconnect backoff (see
 * start_timeout_s in rrpc.h).  *STARTED stays 0 if the server was stopped
 * while waiting. */
static int start_waiting(rrpc_server *s, rrpc__announcement *a, int *started)
{
    double began = rrpc__monotonic(), delay = BACKOFF_MIN_S;
    int waited = 0;
    for (;;) {
        int rc = start_once(s, a);
        if (rc == RRPC_OK) {
            if (waited) {
                char after[96];
                snprintf(after, sizeof after, "%s answered after %.1f s, serving", s->ops->broker,
                         rrpc__monotonic() - began);
                log_start(s, RRPC_LOG_INFO, after, NULL);
            }
            *started = 1;
            return RRPC_OK;
        }
        if (s->start_timeout_s < 0 || !s->ops->may_heal(s->broker, rc))
            return rc;
        double left = s->start_timeout_s > 0 ? began + s->start_timeout_s - rrpc__monotonic() : 1e9;
        if (left <= 0) {
            char why[RRPC__ERRMSG_LEN];
            snprintf(why, sizeof why, "%s", s->base.errmsg);
            return rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, RRPC_ECONNECT,
                              "%s did not answer within the start timeout (%g s): %s",
                              s->ops->broker, s->start_timeout_s, why);
        }
        if (!waited)
            log_waiting(s); /* once, not every try */
        waited = 1;
        double jitter = (double)(rand() % 1000) / 1000.0; /* spreads a herd of servers */
        double pause = delay * (0.5 + jitter);
        if (sleep_unless_stopped(s, pause < left ? pause : left))
            return RRPC_OK;
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}

/* ---- running the pool ---------------------------------------------------- */

typedef struct thread_arg {
    rrpc_server *s;
    int id;
    pthread_t thread;
} thread_arg;

static void *worker_thread(void *arg)
{
    thread_arg *t = arg;
    t->s->ops->run_worker(t->s->broker, t->id);
    return NULL;
}

/* Runs the workers until they all returned. */
static int run_pool(rrpc_server *s)
{
    int rc = RRPC_OK, started = 0;
    thread_arg *ts = calloc((size_t)s->base.workers, sizeof *ts);
    if (ts == NULL) {
        rc = rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, RRPC_ENOMEM, "out of memory");
        atomic_store(&s->base.stop, 1);
    }
    for (; ts != NULL && started < s->base.workers; started++) {
        ts[started] = (thread_arg){.s = s, .id = started};
        if (pthread_create(&ts[started].thread, NULL, worker_thread, &ts[started]) != 0) {
            rc = rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, RRPC_ESYS,
                            "cannot start a thread");
            atomic_store(&s->base.stop, 1);
            break;
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(ts[i].thread, NULL);
    free(ts);
    return rc;
}

int rrpc_server_run(rrpc_server *s)
{
    if (s == NULL)
        return RRPC_EINVAL;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&s->running, &expected, 1))
        return rrpc__fail(s->base.errmsg, sizeof s->base.errmsg, RRPC_ESTATE,
                          "server already running");
    if (s->base.refusal) { /* errmsg says why; no wait for the broker changes it */
        atomic_store(&s->running, 0);
        return s->base.refusal;
    }
    int bad = rrpc__limits_check(s->limits_text, &s->methods, s->record.enabled, s->base.errmsg,
                                 sizeof s->base.errmsg);
    if (bad != RRPC_OK) {
        atomic_store(&s->running, 0);
        return bad;
    }
    /* Before the wait for the broker, so that a supervisor can stop a
     * waiting server gracefully. */
    struct sigaction old_int, old_term;
    if (s->handle_signals)
        install_signals(s, &old_int, &old_term);
    rrpc__announcement a;
    int started = 0;
    int rc = start_waiting(s, &a, &started);
    if (started) {
        rc = run_pool(s);
        s->ops->withdraw(s->broker); /* after the last answer: record removed */
        if (s->record.enabled)
            rrpc__record_stop(&s->record);
        s->ops->disconnect(s->broker);
    }
    if (s->handle_signals)
        restore_signals(&old_int, &old_term);
    atomic_store(&s->base.stop, 0);
    atomic_store(&s->running, 0);
    return rc;
}

/* ---- one worker on the calling thread (server_worker.h) ------------------ */

int rrpc__server_run_worker(rrpc_server *s, int id)
{
    if (s == NULL || id < 0)
        return RRPC_EINVAL;
    int rc = s->ops->run_alone(s->broker, id);
    atomic_store(&s->base.stop, 0);
    return rc;
}
