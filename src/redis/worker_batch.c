/* worker_batch.c -- one popped batch: dispatch, give-back, adaptive batch size.
 *
 * The requests of a pop pair are dispatched in order.  A slow handler must
 * not hold back the rest: at-most-once, the requests not started go back
 * to the list for other workers, answers already computed are sent at
 * once, and the next pops take fewer requests (adapt_batch).
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/dispatch.h"
#include "core/protocol.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dispatches one request; FIELD and SHA1 are its in-flight field and
 * identity in reliable mode, else NULL.  At-most-once, a dead letter is
 * queued before the reply, so that a crash in between may lose the reply
 * but not the record. */
static void handle_message(worker *w, const char *msg, size_t len, const char *field,
                           const char *sha1)
{
    rrpc_server *s = w->srv;
    rrpc__outcome out;
    rrpc__dispatch(&s->methods, &s->limits, &w->clock, msg, len, &out);
    atomic_fetch_add(&s->requests, out.requests);
    atomic_fetch_add(&s->notifications, out.notifications);
    atomic_fetch_add(&s->errors, out.errors);
    atomic_fetch_add(&s->expired, out.expired);
    /* Rules 1 to 4, by name, in both modes; rule 5 (what the key is in
     * Redis) is the reply script's, or reliable mode's commit script's. */
    char *refused = NULL; /* the response withheld from a refused reply key */
    if (out.reply_key != NULL) {
        const char *why = rrpc__reply_key_refusal(&w->rules, out.reply_key, out.reply_key_len);
        if (why != NULL) {
            free(out.dead_reason);
            out.dead_reason = strdup(why);
            refused = out.response;
            free(out.reply_key);
            out.reply_key = out.response = NULL;
        }
    }
    if (sha1 != NULL) {
        rrpc__commit_outcome(w, msg, len, field, sha1, &out, refused);
        free(refused);
        rrpc__outcome_clear(&out);
        return;
    }
    if (out.dead_reason != NULL)
        rrpc__send_dead_letter(w, out.dead_reason, msg, len, out.dead_response, refused);
    free(refused);
    /* Effects go out before the answer (replies wait for the batch's
     * reply script call), so a caller never sees an answer whose
     * effects are not applied yet. */
    if (out.effects != NULL)
        rrpc__queue_effects(w, msg, len, out.effects);
    if (out.response != NULL && out.reply_key != NULL) {
        rrpc__queue_reply(w, msg, len, out.reply_key, out.reply_key_len, out.response);
        out.reply_key = out.response = NULL; /* now owned by the queued reply */
    }
    rrpc__outcome_clear(&out);
}

size_t rrpc__pop_count(const rrpc__reply *r)
{
    return r && rrpc__reply_type(r) == RRPC__REPLY_ARRAY ? rrpc__reply_count(r) : 0;
}

/* The requests of a pop pair, in order.  At-most-once: BLPOP gives [list
 * name, request] or nil, LPOP with a count [request, ...] or nil.
 * Reliable: the take script gives [request, identity (a SHA-1), answer-or-nil, ...] for
 * everything in the worker's in-flight list (BLMOVE's element included). */
typedef struct batch {
    const rrpc__reply *blocked; /* at-most-once: BLPOP's request, or NULL */
    const rrpc__reply *rest;    /* LPOP's or the take script's array, or NULL */
    size_t stride;              /* 1, or 3 for reliable triples */
    size_t count;
} batch;

static batch batch_of(const worker *w, rrpc__reply *const popped[2])
{
    batch b = {NULL, NULL, w->srv->reliable ? 3 : 1, 0};
    if (!w->srv->reliable && rrpc__pop_count(popped[0]) == 2) {
        b.blocked = rrpc__reply_element(popped[0], 1);
        b.count = 1;
    }
    if (rrpc__pop_count(popped[1]) > 0) {
        b.rest = popped[1];
        b.count += rrpc__pop_count(popped[1]) / b.stride;
    }
    return b;
}

/* One request of a batch.  Reliable mode adds where it is held (its field
 * in the in-flight hash), its identity, and the answer remembered for it:
 * NULL, a string, or an error (its dedup key is not a string). */
typedef struct entry {
    const char *msg;
    size_t len;
    const char *field;
    char sha1[41];
    const rrpc__reply *answer;
} entry;

/* The in-flight record: identity (40 hex digits), delivery counter key
 * (40), then the request (reliable.c). */
#define RECORD_HEAD 80

/* Entry K of B; 0 if the take script's answer is malformed there. */
static int batch_entry(const batch *b, size_t k, entry *e)
{
    memset(e, 0, sizeof *e);
    if (b->blocked != NULL && k-- == 0) {
        e->msg = rrpc__reply_str(b->blocked, &e->len);
        return 1;
    }
    if (b->stride == 1) {
        e->msg = rrpc__reply_str(rrpc__reply_element(b->rest, k), &e->len);
        return 1;
    }
    const rrpc__reply *field = rrpc__reply_element(b->rest, 3 * k);
    const rrpc__reply *rec = rrpc__reply_element(b->rest, 3 * k + 1);
    const rrpc__reply *a = rrpc__reply_element(b->rest, 3 * k + 2);
    size_t len = 0;
    const char *text = rrpc__reply_str(rec, &len);
    if (rrpc__reply_type(field) != RRPC__REPLY_STRING ||
        rrpc__reply_type(rec) != RRPC__REPLY_STRING || len < RECORD_HEAD)
        return 0;
    e->field = rrpc__reply_str(field, NULL);
    memcpy(e->sha1, text, 40);
    e->sha1[40] = '\0';
    e->msg = text + RECORD_HEAD;
    e->len = len - RECORD_HEAD;
    int t = rrpc__reply_type(a);
    e->answer = t == RRPC__REPLY_STRING || t == RRPC__REPLY_ERROR ? a : NULL;
    return 1;
}

/* At-most-once: hands the requests of B from FIRST on back to the head of
 * the list, in their order, so that other workers take them while this
 * one is held up by a slow handler. */
static void give_back(worker *w, const batch *b, size_t first)
{
    size_t n = b->count - first, argc = n + 2;
    /* The requests are in no list now: the command owns copies, so that it
     * can be sent again after a broken link or a Redis busy in a script. */
    op o = {.kind = OP_GIVEBACK};
    o.cmd.argv = calloc(argc, sizeof *o.cmd.argv);
    o.cmd.lens = calloc(argc, sizeof *o.cmd.lens);
    int ok = o.cmd.argv != NULL && o.cmd.lens != NULL;
    if (ok)
        o.cmd.argc = o.cmd.cap = argc;
    for (size_t i = 0; ok && i < argc; i++) {
        const char *arg = i == 0 ? "LPUSH" : w->list;
        size_t len = strlen(arg);
        if (i >= 2) { /* LPUSH reverses: the last goes first */
            entry e;
            batch_entry(b, b->count - 1 - (i - 2), &e);
            arg = e.msg;
            len = e.len;
        }
        ok = (o.cmd.argv[i] = malloc(len + 1)) != NULL;
        if (ok) {
            memcpy(o.cmd.argv[i], arg, len);
            o.cmd.argv[i][len] = '\0';
            o.cmd.lens[i] = len;
        }
    }
    if (!ok) {
        /* Without memory the worker runs them itself, late but not lost. */
        rrpc__free_op(&o);
        for (size_t k = first; k < b->count; k++) {
            entry e;
            batch_entry(b, k, &e);
            handle_message(w, e.msg, e.len, NULL, NULL);
        }
        return;
    }
    rrpc__send_cmd(w, o, (int)argc, (const char **)o.cmd.argv, o.cmd.lens);
    atomic_fetch_add(&w->srv->given_back, n);
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
    rrpc_server *s = w->srv;
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
    if (w->nops == 0)
        return;
    rrpc__reply *none[2] = {NULL, NULL};
    if (rrpc__collect(w, none) != RRPC_OK)
        rrpc__recover(w); /* the link broke: what was not confirmed waits in retry */
}

/* The bytes of all the requests in B. */
static size_t batch_bytes(const batch *b)
{
    size_t bytes = 0;
    for (size_t k = 0; k < b->count; k++) {
        entry e;
        batch_entry(b, k, &e);
        bytes += e.len;
    }
    return bytes;
}

/* Handles one request of a batch. */
static void handle_entry(worker *w, const entry *e)
{
    if (e->field == NULL)
        handle_message(w, e->msg, e->len, NULL, NULL);
    else if (rrpc__commit_pending(w, e->field))
        return;
    else if (e->answer == NULL)
        handle_message(w, e->msg, e->len, e->field, e->sha1);
    else if (rrpc__reply_type(e->answer) == RRPC__REPLY_STRING)
        rrpc__answer_again(w, e->msg, e->len, e->field, e->sha1, e->answer);
    else /* its dedup key is poisoned: it cannot be run at most once */
        rrpc__queue_dead_commit(w, e->msg, e->len, e->field, e->sha1,
                                rrpc__reply_str(e->answer, NULL));
}

/* Handles every request of a pop pair in order. */
void rrpc__handle_popped(worker *w, rrpc__reply *const popped[2])
{
    batch b = batch_of(w, popped);
    if (b.count == 0)
        return; /* a pop that timed out says nothing about the handlers */
    double started = rrpc__monotonic(), flushed_at = started, slowest = 0;
    size_t bytes = batch_bytes(&b);
    for (size_t k = 0; k < b.count; k++) {
        entry e;
        double began = rrpc__monotonic();
        if (batch_entry(&b, k, &e))
            handle_entry(w, &e);
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
        if (!w->srv->reliable && now - started > GIVE_BACK_AFTER_S) {
            give_back(w, &b, k + 1);
            break;
        }
        if ((w->nops > 0 || w->npend > 0) && now - flushed_at > FLUSH_AFTER_S) {
            flush_finished(w);
            flushed_at = rrpc__monotonic();
        }
    }
    adapt_batch(w, slowest, bytes);
}
