/* worker.c -- the loop of one worker thread.
 *
 * Each worker thread owns one Redis connection and runs the loop of
 * docs/PROTOCOL.md: pop a batch of requests, dispatch them, and send every
 * reply, expiry and dead letter in one pipeline together with the next pop.
 * The pop is a pair, like bench/floor_server.c's: BLPOP waits for one
 * request (with a short timeout, so that a stop request is noticed quickly)
 * and LPOP with a count takes the rest that are queued.  So every batch,
 * full or not, costs exactly one round trip; an empty LPOP never costs one
 * of its own.  Threads share nothing but the method table (read-only while
 * running) and atomic counters.  This file is the round itself, the
 * reconnect and what a stopping worker drops; the batch is worker_batch.c's,
 * the replies' bookkeeping worker_collect.c's.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/keys.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void send_clock_refresh(worker *w)
{
    if (rrpc__clock_age(&w->clock) > CLOCK_REFRESH_S) {
        const char *time[] = {"TIME"};
        rrpc__send_cmd(w, (op){.kind = OP_TIME, .sent_ms = rrpc__now() * 1000.0}, 1, time, NULL);
    }
}

/* Reads the registered services again (rule 3 of the reply keys) at most
 * every SERVICES_REFRESH_S, in the pipeline of a pop: no round trip of
 * its own, never on the path of a request. */
static void send_services_refresh(worker *w)
{
    double now = rrpc__monotonic();
    if (w->services_at > 0 && now - w->services_at < SERVICES_REFRESH_S)
        return;
    w->services_at = now;
    const char *members[] = {"SMEMBERS", w->b->services_key};
    rrpc__send_cmd(w, (op){.kind = OP_SERVICES}, 2, members, NULL);
}

/* Queues the pop pair, as the delivery mode takes requests (in reliable
 * mode the pair moves them into the in-flight list).  QUICK: commands
 * queued since the last round (dead letters, answers sent one by one)
 * would otherwise wait behind the pop's block: it is short. */
static void send_pop(worker *w, int quick)
{
    send_clock_refresh(w);
    send_services_refresh(w);
    rrpc__send_promote(w); /* only once limits were seen */
    w->extra = atomic_load(&w->srv->batch_now);
    snprintf(w->batch_text, sizeof w->batch_text, "%d", w->extra);
    w->mode->send_take(w, quick ? QUICK_TIMEOUT : BLOCK_TIMEOUT);
}

/* Adds *UNSENT to <service>:stats FIELD (a refused or unconfirmed count
 * is added again later, judge() in worker_collect.c). */
static void send_count(worker *w, int kind, const char *field, unsigned long long *unsent)
{
    if (*unsent == 0)
        return;
    char n[24];
    snprintf(n, sizeof n, "%llu", *unsent);
    const char *incr[] = {"HINCRBY", w->srv->stats_key, field, n};
    if (rrpc__send_cmd(w, (op){.kind = kind, .count = *unsent}, 4, incr, NULL) == RRPC_OK)
        *unsent = 0;
}

/* The losses and expired requests counted since the last round. */
static void send_lost(worker *w)
{
    send_count(w, OP_LOST, RRPC__STAT_LOST, &w->lost_unsent);
    send_count(w, OP_EXPIRED, RRPC__STAT_EXPIRED, &w->expired_unsent);
}

static void free_pair(rrpc__reply *pair[2])
{
    rrpc__reply_free(pair[0]);
    rrpc__reply_free(pair[1]);
    pair[0] = pair[1] = NULL;
}

/* Nonzero if Redis refused a pop (e.g. WRONGTYPE, BUSY, or out of memory:
 * BLMOVE and the take script write); logged once until a pop works.  What
 * the other half of the pair took is handled all the same. */
static int pop_refused(worker *w, rrpc__reply *const pair[2])
{
    int refused = 0;
    for (int i = 0; i < 2; i++)
        if (pair[i] && rrpc__reply_type(pair[i]) == RRPC__REPLY_ERROR) {
            if (!refused && !w->pop_failing)
                rrpc__log_worker(w, "cannot pop requests (retried every 0.5 s)",
                                 rrpc__reply_str(pair[i], NULL));
            refused = 1;
        }
    if (!refused && w->pop_failing)
        rrpc__log_worker_at(w, RRPC_LOG_INFO, "pops work again", NULL);
    w->pop_failing = refused;
    return refused;
}

static void drop_pending(worker *w)
{
    for (size_t i = 0; i < w->nops; i++)
        rrpc__free_op(&w->ops[i]);
    free(w->ops);
    w->ops = NULL;
    w->nops = w->capops = 0;
    /* A commit (reliable mode) is not lost: its request is still held in
     * Redis, and reaped once this worker is gone.  The rest is. */
    const char *why = "the worker stopped before Redis took it";
    for (size_t i = 0; i < w->npend; i++)
        rrpc__lose_item(w, &w->pend[i], why);
    for (size_t i = 0; i < w->nretry; i++)
        rrpc__lose_op(w, &w->retry[i], why);
    for (size_t i = 0; i < w->nheld; i++)
        rrpc__lose_op(w, &w->held[i], why);
    for (size_t i = 0; i < w->nretry; i++)
        rrpc__free_op(&w->retry[i]);
    free(w->retry);
    w->retry = NULL;
    w->nretry = w->capretry = 0;
    for (size_t i = 0; i < w->nheld; i++) /* still held in Redis: reaped once we are gone */
        rrpc__free_op(&w->held[i]);
    free(w->held);
    w->held = NULL;
    w->nheld = w->capheld = 0;
    for (size_t i = 0; i < w->npcommit; i++) /* as held: reaped once we are gone */
        rrpc__free_op(&w->pcommit[i]);
    free(w->pcommit);
    w->pcommit = NULL;
    w->npcommit = w->cappcommit = 0;
    for (size_t i = 0; i < w->npend; i++)
        rrpc__free_item(&w->pend[i]);
    free(w->pend);
    w->pend = NULL;
    w->npend = w->cappend = 0;
    free(w->services);
    free(w->services_buf);
    w->services = NULL;
    w->services_buf = NULL;
    free_pair(w->in_hand);
    rrpc__reply_free(w->check);
    w->check = NULL;
    free(w->ids);
    w->ids = NULL;
    w->capids = 0;
}

/* Reconnects with exponential backoff and jitter until it works or the
 * server is stopped.  Logs once per outage.  Whatever was sent and not
 * confirmed waits in retry and is sent again by the loop. */
void rrpc__recover(worker *w)
{
    rrpc__keep_unconfirmed(w, NULL, 0); /* nothing queued on the old link is answered */
    rrpc__log_worker(w, "lost the Redis connection, reconnecting",
                     w->transient[0] ? w->transient : rrpc__conn_errmsg(w->conn));
    w->transient[0] = '\0';
    w->script_known = 0; /* maybe a restarted Redis, without our script */
    w->reload_scripts = 0;
    w->registered = 0; /* the reaper may have taken this worker for dead */
    double delay = BACKOFF_MIN_S;
    for (;;) {
        double jitter = (double)(rand() % 1000) / 1000.0; /* spreads a herd of workers */
        rrpc__sleep(delay * (0.5 + jitter));
        if (rrpc__conn_reconnect(w->conn) == RRPC_OK &&
            rrpc__conn_set_timeout(w->conn, SOCKET_TIMEOUT_S) == RRPC_OK &&
            (w->mode->relink == NULL || w->mode->relink(w) == RRPC_OK) &&
            (rrpc__clock_sync(&w->clock, w->conn) == RRPC_OK || !rrpc__conn_broken(w->conn))) {
            rrpc__log_worker_at(w, RRPC_LOG_INFO, "reconnected", NULL);
            return;
        }
        /* A stopping worker still tries, once per round, to deliver the
         * answers it holds; the stop grace bounds its rounds. */
        if (atomic_load(&w->srv->stop))
            return;
        delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
    }
}

/* Before a round: what waits in retry is queued again -- after a pause
 * if Redis said "not now" (growing while it keeps saying so), after
 * reloading reliable mode's scripts if Redis forgot them. */
static void prepare_retries(worker *w)
{
    if (w->reload_scripts) {
        /* A synchronous SCRIPT LOAD needs a link with nothing in flight:
         * take a fresh one (what was queued waits in retry). */
        w->transient[0] = '\0';
        snprintf(w->transient, sizeof w->transient, "NOSCRIPT: reloading the scripts");
        rrpc__recover(w);
    }
    if (w->retry_wait) {
        rrpc__sleep(w->retry_pause);
        w->retry_pause =
            w->retry_pause * 2 > RETRY_PAUSE_MAX_S ? RETRY_PAUSE_MAX_S : w->retry_pause * 2;
        w->retry_wait = 0;
    } else {
        w->retry_pause = BACKOFF_MIN_S;
    }
    if (w->nretry > 0)
        rrpc__requeue_retries(w);
}

void *rrpc__worker_main(void *arg)
{
    worker *w = arg;
    rrpc__serving *s = w->srv;
    double give_up_at = 0;
    rrpc__side_start(w);
    for (;;) {
        int stopping = atomic_load(&s->stop);
        if (stopping && give_up_at == 0)
            give_up_at = rrpc__monotonic() + STOP_RETRY_S;
        if (stopping && rrpc__monotonic() > give_up_at)
            break; /* Redis never took them: drop_pending says what was lost */
        /* Answers, dead letters and retries are judged by their replies,
         * which come after the pop's: a short block keeps their dead
         * letters (a refused key, say) from waiting for a long one. */
        int quick =
            w->nops > 0 || w->npend > 0 || w->npcommit > 0 || w->nretry > 0 || w->split_pending;
        w->split_pending = 0;
        prepare_retries(w);
        rrpc__send_held(w); /* what Redis refused for memory, once its backoff is over */
        rrpc__flush_replies(w);
        rrpc__flush_commits(w);
        send_lost(w);
        if (!stopping)
            send_pop(w, quick);
        if (w->nops == 0 && stopping && w->nretry == 0 && w->npend == 0) {
            if (!rrpc__holds_answers(w))
                break;
            rrpc__sleep(HOLD_MIN_S); /* until rrpc__send_held, within STOP_RETRY_S */
            continue;
        }
        if (w->nops == 0) { /* the pop could not even be queued: the link is down */
            if (stopping && w->nretry == 0)
                break;
            rrpc__recover(w);
            continue;
        }
        rrpc__reply *popped[2] = {NULL, NULL};
        int rc = rrpc__collect(w, popped);
        if (rc != RRPC_OK) {
            /* Whatever a lost pop took is lost with the link (at-most-once). */
            free_pair(popped);
            if (stopping && w->nretry == 0)
                break;
            rrpc__recover(w);
            continue;
        }
        free_pair(w->in_hand); /* nothing refers to it any more: retries own copies */
        w->in_hand[0] = popped[0];
        w->in_hand[1] = popped[1];
        int refused = pop_refused(w, popped);
        if (popped[0] != NULL || popped[1] != NULL)
            rrpc__handle_popped(w, popped);
        if (refused && !w->retry_wait)
            rrpc__sleep(BACKOFF_MIN_S * 10); /* e.g. WRONGTYPE: do not spin */
    }
    drop_pending(w);
    rrpc__side_stop(w);
    return NULL;
}
