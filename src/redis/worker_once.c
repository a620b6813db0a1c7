/* worker_once.c -- at-most-once delivery: the default delivery mode.
 *
 * A request is taken off the lists (BLPOP, then LMPOP with a count, each
 * over the high, normal and low lists in that order: PROTOCOL.md section
 * 7, "Priorities") and is
 * gone from Redis: its answer, effects and dead letter (if any) go out as
 * separate pipelined commands, each kept and sent again until Redis
 * confirms it (worker_collect.c).  A batch held up by a slow handler hands
 * its unstarted requests back to the head of the list.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/dispatch.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The rest of a batch comes from the first of the three lists that is
 * not empty: strict priority, at the cost of a smaller batch while a
 * higher list holds fewer than the count.  While a slot migrates, Redis
 * answers a command naming keys of which some are missing TRYAGAIN: the
 * pops name L alone for a while (worker_collect.c), as before priorities. */
static void once_take(worker *w, const char *timeout)
{
    const op pop = {.kind = OP_POP};
    int plain = w->plain_pops_until > 0 && rrpc__monotonic() < w->plain_pops_until;
    const char *block[] = {"BLPOP", w->high, w->list, w->low, timeout};
    const char *more[] = {"LMPOP", "3", w->high, w->list, w->low, "LEFT", "COUNT", w->batch_text};
    const char *block1[] = {"BLPOP", w->list, timeout};
    const char *more1[] = {"LMPOP", "1", w->list, "LEFT", "COUNT", w->batch_text};
    if (rrpc__send_cmd(w, pop, plain ? 3 : 5, plain ? block1 : block, NULL) == RRPC_OK &&
        w->extra > 0)
        rrpc__send_cmd(w, pop, plain ? 6 : 8, plain ? more1 : more, NULL);
}

/* BLPOP gives [list name, request] or nil, LMPOP [list name, [request,
 * ...]] or nil. */
static batch once_batch(rrpc__reply *const popped[2])
{
    batch b = {0};
    if (rrpc__pop_count(popped[0]) == 2) {
        b.blocked = rrpc__reply_element(popped[0], 1);
        b.count = 1;
    }
    const rrpc__reply *rest =
        rrpc__pop_count(popped[1]) == 2 ? rrpc__reply_element(popped[1], 1) : NULL;
    if (rrpc__pop_count(rest) > 0) {
        b.rest = rest;
        b.count += rrpc__pop_count(rest);
    }
    return b;
}

static int once_entry(const batch *b, size_t k, entry *e)
{
    memset(e, 0, sizeof *e);
    if (b->blocked != NULL && k-- == 0)
        e->msg = rrpc__reply_str(b->blocked, &e->len);
    else
        e->msg = rrpc__reply_str(rrpc__reply_element(b->rest, k), &e->len);
    return 1;
}

/* A dead letter is queued before the reply, so that a crash in between
 * may lose the reply but not the record.  Effects go out before the
 * answer (replies wait for the batch's reply script call), so a caller
 * never sees an answer whose effects are not applied yet. */
static void once_settle(worker *w, const entry *e, rrpc__outcome *out, const char *refused)
{
    if (out->dead_reason != NULL)
        rrpc__send_dead_letter(w, out->dead_reason, e->msg, e->len, out->dead_response, refused);
    if (out->effects != NULL)
        rrpc__queue_effects(w, e->msg, e->len, out->effects);
    if (out->response != NULL && out->reply_key != NULL) {
        rrpc__queue_reply(w, e->msg, e->len, out->reply_key, out->reply_key_len, out->response);
        out->reply_key = out->response = NULL; /* now owned by the queued reply */
    }
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
            once_entry(b, b->count - 1 - (i - 2), &e);
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
            once_entry(b, k, &e);
            rrpc__handle_message(w, &e);
        }
        return;
    }
    rrpc__send_cmd(w, o, (int)argc, (const char **)o.cmd.argv, o.cmd.lens);
    atomic_fetch_add(&w->srv->n.given_back, n);
}

static void once_log_held(worker *w, const char *error)
{
    char what[RRPC__ERRMSG_LEN + 80];
    snprintf(what, sizeof what, "%s; kept and retried for up to %d s", error ? error : "",
             w->srv->reply_ttl_s);
    rrpc__log_worker(w, "Redis refused answers for memory", what);
}

const rrpc__delivery rrpc__at_most_once = {
    .name = "at-most-once",
    .needs_noeviction = 0,
    .taken_again = "Redis takes answers again",
    .send_take = once_take,
    .batch_of = once_batch,
    .entry = once_entry,
    .handle = rrpc__handle_message,
    .settle = once_settle,
    .hand_back = give_back,
    .log_held = once_log_held,
};
