/* worker_batch.c -- one popped batch: decide, settle, adaptive batch size.
 *
 * The requests of a pop pair are handled in order, read and settled as
 * the delivery mode says (worker_once.c, worker_reliable.c).  A slow
 * handler must not hold back the rest: at-most-once, the requests not
 * started go back to the list for other workers, answers already computed
 * are sent at once, and the next pops take fewer requests (adapt_batch).
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/dispatch.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decides one request (the server's decide: dispatch, counters, rules 1
 * to 4 of the reply keys by name) and settles the outcome as the delivery
 * mode does. */
void rrpc__handle_message(worker *w, const entry *e)
{
    rrpc__outcome out;
    char *refused = NULL; /* the response withheld from a refused reply key */
    w->current = e;       /* a "wait" limit moves it out of reliable mode's in-flight hash */
    w->srv->decide(w->srv, &w->rules, &w->clock, e->msg, e->len, &out, &refused);
    w->current = NULL;
    w->expired_unsent += out.expired; /* for <service>:stats, with the next round */
    if (out.deferred == 0)            /* else it waits in Redis: nothing to settle */
        w->mode->settle(w, e, &out, refused);
    free(refused);
    rrpc__outcome_clear(&out);
}

size_t rrpc__pop_count(const rrpc__reply *r)
{
    return r && rrpc__reply_type(r) == RRPC__REPLY_ARRAY ? rrpc__reply_count(r) : 0;
}

/* Sizes the next batches of all workers from the slowest handler of the
 * last one: after a slow handler every worker takes one request at a time
 * (BLPOP alone), so that requests do not queue up behind a slow one in its
 * batch while other workers could take them; while handlers are quick the
 * extra count doubles back to batch_max.  Slowness is the service's, so
 * the count is shared.  Bulk counts as well: after a batch of more than
 * BATCH_BYTES_LIMITS size limits' worth of text (hostile or not), the next
 * pops take one message at a time, so that a worker never holds more than
 * that plus one message. */
static void adapt_batch(worker *w, double slowest, size_t bytes)
{
    rrpc__serving *s = w->srv;
    int now = atomic_load(&s->batch_now);
    int heavy = bytes > BATCH_BYTES_LIMITS * s->limits.max_request_bytes;
    int next = slowest > GIVE_BACK_AFTER_S || heavy ? 0 : now < 1 ? 1 : now * 2;
    atomic_store(&s->batch_now, next > s->batch_max ? s->batch_max : next);
}

/* Sends what the batch has finished so far and reads the replies, while
 * a slow handler holds the rest: answers are not held back by it. */
static void flush_finished(worker *w)
{
    rrpc__flush_replies(w);
    rrpc__flush_commits(w);
    if (w->nops == 0)
        return;
    rrpc__reply *none[2] = {NULL, NULL};
    if (rrpc__collect(w, none) != RRPC_OK)
        rrpc__recover(w); /* the link broke: what was not confirmed waits in retry */
}

/* The bytes of all the requests in B. */
static size_t batch_bytes(const worker *w, const batch *b)
{
    size_t bytes = 0;
    for (size_t k = 0; k < b->count; k++) {
        entry e;
        w->mode->entry(b, k, &e);
        bytes += e.len;
    }
    return bytes;
}

/* Handles every request of a pop pair in order. */
void rrpc__handle_popped(worker *w, rrpc__reply *const popped[2])
{
    batch b = w->mode->batch_of(popped);
    if (b.count == 0)
        return; /* a pop that timed out says nothing about the handlers */
    if (w->mode->prepare != NULL && !w->mode->prepare(w, &b))
        return;
    double started = rrpc__monotonic(), flushed_at = started, slowest = 0;
    size_t bytes = batch_bytes(w, &b);
    for (size_t k = 0; k < b.count; k++) {
        entry e;
        double began = rrpc__monotonic();
        if (w->mode->entry(&b, k, &e))
            w->mode->handle(w, &e);
        else
            rrpc__log_worker(w, "the take script answered something unexpected", NULL);
        double now = rrpc__monotonic();
        slowest = now - began > slowest ? now - began : slowest;
        if (k + 1 == b.count)
            break;
        /* A slow handler must not hold back the rest of the batch: the
         * requests not started go back to the list for other workers
         * (reliable mode keeps them: they are in this worker's in-flight
         * hash), and answers already computed are sent at once. */
        if (w->mode->hand_back != NULL && now - started > GIVE_BACK_AFTER_S) {
            w->mode->hand_back(w, &b, k + 1);
            break;
        }
        if ((w->nops > 0 || w->npend > 0 || w->npcommit > 0) && now - flushed_at > FLUSH_AFTER_S) {
            flush_finished(w);
            flushed_at = rrpc__monotonic();
        }
    }
    adapt_batch(w, slowest, bytes);
}
