/* worker_collect.c -- reading a round's replies: judge, retry, hold.
 *
 * collect pairs every reply with its own op, whatever Redis answers: an
 * answer is judged; "not now" (LOADING, BUSY...) keeps the op for the next
 * round; a refusal for memory holds it with a backoff (given up after the
 * reply TTL at-most-once, never in reliable mode); a broken link keeps
 * everything unconfirmed for the new link.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/clock.h"
#include "core/internal.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A write that Redis refused for memory went through: the streak of
 * refusals (logged once at its start, hold) is over once none is held. */
static void writes_taken(worker *w)
{
    if (w->held_delay != 0 && w->nheld == 0) {
        rrpc__log_worker_at(w, RRPC_LOG_INFO, w->mode->taken_again, NULL);
        w->held_delay = 0;
    }
}

/* Acts on the reply to one queued command. */
static void judge(worker *w, op *o, const rrpc__reply *r)
{
    int error = rrpc__reply_type(r) == RRPC__REPLY_ERROR;
    if (rrpc__kept_for_resend(o) && !error)
        writes_taken(w);
    if (o->kind == OP_REPLY) {
        rrpc__judge_replies(w, o, r);
        return;
    }
    if (o->kind == OP_LOST || o->kind == OP_EXPIRED) {
        if (error) /* counted again with the next round */
            *(o->kind == OP_LOST ? &w->lost_unsent : &w->expired_unsent) += o->count;
        return;
    }
    if (o->kind == OP_EFFECTS) {
        rrpc__judge_effects(w, o, r);
        return;
    }
    if (o->kind == OP_SERVICES) {
        rrpc__take_services(w, r);
        return;
    }
    if (o->kind == OP_COMMITS && rrpc__reply_type(r) != RRPC__REPLY_ERROR) {
        rrpc__judge_commits(w, o, r); /* an error is collect's: rrpc__commits_refused */
        return;
    }
    if (rrpc__reply_type(r) != RRPC__REPLY_ERROR) {
        if (o->kind == OP_DEAD)
            atomic_fetch_add(&w->srv->n.dead_letters, 1);
        return;
    }
    const char *e = rrpc__reply_str(r, NULL);
    if (o->kind == OP_GIVEBACK || o->kind == OP_DEAD) {
        /* Nowhere left to keep it: say so loudly, with what was lost. */
        rrpc__lose_op(w, o, e);
    } else if (o->kind != OP_TIME) {
        rrpc__log_worker(w, "Redis refused a command", e);
    }
}

/* At-most-once: drops what of O (refused for memory again) has been
 * refused for longer than the reply TTL -- an answer that late would
 * outlive what any caller waits -- saying so with its ids (rrpc__lose_op);
 * the first refusal starts that clock.  Returns nonzero if nothing of O
 * is left to hold (O is then freed). */
static int give_up_late(worker *w, op *o, const char *error)
{
    double now = rrpc__monotonic(), until = now + w->srv->reply_ttl_s;
    char why[RRPC__ERRMSG_LEN];
    snprintf(why, sizeof why, "Redis refused it for %d s: %s", w->srv->reply_ttl_s,
             error ? error : "");
    if (o->kind == OP_REPLY) {
        size_t kept = 0;
        for (size_t i = 0; i < o->nitems; i++) {
            reply_item *it = &o->items[i];
            if (it->give_up_at != 0 && now >= it->give_up_at) {
                rrpc__lose_item(w, it, why);
                rrpc__free_item(it);
                continue;
            }
            if (it->give_up_at == 0)
                it->give_up_at = until;
            o->items[kept++] = *it;
        }
        o->nitems = kept;
    } else if (o->give_up_at != 0 && now >= o->give_up_at) {
        rrpc__lose_op(w, o, why);
        rrpc__free_op(o);
        return 1;
    } else if (o->give_up_at == 0) {
        o->give_up_at = until;
    }
    if (o->kind == OP_REPLY && o->nitems == 0) {
        rrpc__free_op(o);
        return 1;
    }
    return 0;
}

/* Holds O, which Redis refused for memory (takes it over), and sends it
 * again after a backoff (0.05 s doubling to 2 s; rrpc__send_held).  Reliable
 * mode: a commit, never given up: its request stays held in the in-flight
 * hash meanwhile (redelivered if this worker dies) -- never a dead letter,
 * which would be refused too, and the request lost.  At-most-once: an
 * answer, dead letter, effects or give-back, given up after the reply TTL
 * (give_up_late) -- never a dead letter either. */
void rrpc__hold(worker *w, op *o, const char *error)
{
    if (o->kind != OP_COMMIT && give_up_late(w, o, error))
        return;
    rrpc__own_msg(&o->msg, o->msg_len, &o->msg_owned); /* the popped reply goes away */
    for (size_t i = 0; i < o->nitems; i++)
        rrpc__own_msg(&o->items[i].msg, o->items[i].msg_len, &o->items[i].msg_owned);
    if (rrpc__grow((void **)&w->held, &w->capheld, w->nheld + 1, sizeof *o) != RRPC_OK) {
        if (o->kind == OP_COMMIT)
            rrpc__log_worker(w, "out of memory: a request stays in flight until taken again", NULL);
        else
            rrpc__lose_op(w, o, "out of memory");
        rrpc__free_op(o);
        return;
    }
    if (w->held_delay == 0) {
        w->mode->log_held(w, error);
        w->held_delay = HOLD_MIN_S;
    }
    w->held[w->nheld++] = *o;
    memset(o, 0, sizeof *o);
    w->held_at = rrpc__monotonic() + w->held_delay;
}

/* Nonzero if Redis refused R for memory ("OOM command not allowed ..."). */
static int refused_for_memory(const rrpc__reply *r)
{
    const char *e = rrpc__reply_type(r) == RRPC__REPLY_ERROR ? rrpc__reply_str(r, NULL) : NULL;
    return e != NULL && strncmp(e, "OOM", 3) == 0;
}

/* Nonzero if an at-most-once answer, dead letter, effects or give-back
 * waits in held (a stopping worker tries to deliver it). */
int rrpc__holds_answers(const worker *w)
{
    for (size_t i = 0; i < w->nheld; i++)
        if (w->held[i].kind != OP_COMMIT)
            return 1;
    return 0;
}

/* Queues O (taken over) again: an answer with the round's reply script
 * call, the rest as it was.  A commit is idempotent (SET NX guards it),
 * and so are effects (their guard key); a give-back that failed was not
 * applied (Redis runs a command whole or not). */
static void resend(worker *w, op *o)
{
    if (o->kind == OP_REPLY) {
        for (size_t k = 0; k < o->nitems; k++)
            rrpc__hold_reply(w, o->items[k]);
        free(o->items);
    } else if (o->kind == OP_DEAD) {
        rrpc__queue_dead(w, o->text, o->give_up_at);
        free(o->msg_owned);
    } else if (o->kind == OP_COMMIT) {
        rrpc__pend_commit(w, o); /* with the round's commit call */
    } else if (o->kind == OP_COMMITS) {
        for (size_t k = 0; k < o->nsubs; k++)
            rrpc__pend_commit(w, &o->subs[k]);
        free(o->subs);
    } else if (o->kind == OP_RELEASE) {
        rrpc__release_held(w, o->text);
        rrpc__free_op(o);
    } else if (o->kind == OP_GIVEBACK || o->kind == OP_EFFECTS) {
        rrpc__send_cmd(w, *o, (int)o->cmd.argc, (const char **)o->cmd.argv, o->cmd.lens);
    } else {
        rrpc__free_op(o);
    }
}

/* Sends the held ops again once their backoff is over: before the round's
 * answers are flushed, so that effects still go before their answer. */
void rrpc__send_held(worker *w)
{
    if (w->nheld == 0 || rrpc__monotonic() < w->held_at)
        return;
    op *held = w->held;
    size_t n = w->nheld;
    w->held = NULL;
    w->nheld = w->capheld = 0;
    w->held_delay = w->held_delay * 2 > HOLD_MAX_S ? HOLD_MAX_S : w->held_delay * 2;
    for (size_t i = 0; i < n; i++)
        resend(w, &held[i]);
    free(held);
}

/* What of an op that was not confirmed is kept: an answer, dead letter,
 * effects, commit or give-back waits in retry; a count of losses is
 * added again; the rest is dropped. */
static void keep_or_drop(worker *w, op *o)
{
    if (rrpc__kept_for_resend(o)) {
        rrpc__keep_for_retry(w, o);
        return;
    }
    if (o->kind == OP_LOST)
        w->lost_unsent += o->count;
    else if (o->kind == OP_EXPIRED)
        w->expired_unsent += o->count;
    rrpc__free_op(o);
}

/* After a broken link: the replies and dead letters of OPS not yet
 * confirmed, and those queued since, wait in retry; the rest is dropped. */
void rrpc__keep_unconfirmed(worker *w, op *ops, size_t nops)
{
    for (size_t i = 0; i < nops; i++)
        keep_or_drop(w, &ops[i]);
    op *queued = w->ops; /* queued during this collect, on the broken link */
    size_t n = w->nops;
    w->ops = NULL;
    w->nops = w->capops = 0;
    for (size_t i = 0; i < n; i++)
        keep_or_drop(w, &queued[i]);
    free(queued);
}

/* Queues again what waits in retry (after a broken link, or a round that
 * Redis answered with "not now"). */
void rrpc__requeue_retries(worker *w)
{
    size_t n = w->nretry;
    op *ops = w->retry;
    w->retry = NULL;
    w->nretry = w->capretry = 0;
    for (size_t i = 0; i < n; i++)
        resend(w, &ops[i]);
    free(ops);
}

/* How a reply that is an error is to be taken: 0 it is the answer;
 * RETRY_LATER "not now" -- Redis is loading, busy in a script, a replica
 * cut off from its master (the op is sent again after a pause); RETRY_NOW
 * the reply script is not cached on that node (sent again at once, as
 * EVAL); RETRY_RELOAD reliable mode's scripts are gone (reloaded first). */
enum { RETRY_NO, RETRY_LATER, RETRY_NOW, RETRY_RELOAD };

static int retry_kind(const op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ERROR)
        return RETRY_NO;
    const char *e = rrpc__reply_str(r, NULL);
    int noscript = e && strncmp(e, "NOSCRIPT", 8) == 0;
    if (o->kind == OP_REPLY && noscript)
        return RETRY_NOW;
    if ((o->kind == OP_COMMITS || o->kind == OP_POP) && noscript)
        return RETRY_RELOAD;
    if (rrpc__reply_transient(r))
        return RETRY_LATER; /* for ops that are not kept, only the pause */
    return RETRY_NO;
}

/* Reads the reply of every command sent, in order, so that each is paired
 * with its own command whatever Redis answers; the pop pair's replies
 * (NULL if no pop was sent) land in popped.  Returns RRPC_OK while the link
 * is in step, even when some replies said "not now" (those ops wait in
 * retry); an error only when the link broke (everything unconfirmed waits
 * in retry, the link must be recovered).  A refused reply becomes a dead
 * letter in the next round. */
int rrpc__collect(worker *w, rrpc__reply *popped[2])
{
    int npopped = 0;
    size_t nops = w->nops;
    op *ops = w->ops;
    w->ops = NULL;
    w->nops = w->capops = 0;
    int rc = RRPC_OK, transient = 0;
    size_t i = 0;
    for (; i < nops; i++) {
        rrpc__reply *r = NULL;
        rc = rrpc__conn_read(w->conn, &r);
        if (rc != RRPC_OK)
            break;
        int again = retry_kind(&ops[i], r);
        if (again == RETRY_LATER) {
            transient = 1;
            snprintf(w->transient, sizeof w->transient, "%s", rrpc__reply_str(r, NULL));
        } else if (again == RETRY_NOW) {
            w->script_known = 0;
        } else if (again == RETRY_RELOAD) {
            w->reload_scripts = 1;
        }
        if (ops[i].kind == OP_POP) {
            if (npopped < 2)
                popped[npopped++] = r; /* an error reply there holds no request */
            else
                rrpc__reply_free(r);
            continue;
        }
        if (again != RETRY_NO && rrpc__kept_for_resend(&ops[i])) {
            rrpc__keep_for_retry(w, &ops[i]);
        } else if (ops[i].kind == OP_COMMITS && rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
            /* Refused for good: out of memory (held, retried), or a call
             * split so that a reply key the ACL refused costs only its
             * own request (a dead letter). */
            rrpc__commits_refused(w, &ops[i], r);
            rrpc__free_op(&ops[i]);
        } else if (rrpc__kept_for_resend(&ops[i]) && refused_for_memory(r)) {
            rrpc__hold(w, &ops[i], rrpc__reply_str(r, NULL)); /* at-most-once: until the TTL */
        } else {
            if (ops[i].kind == OP_TIME && again == RETRY_NO)
                rrpc__clock_parse_time(&w->clock, r, ops[i].sent_ms);
            else
                judge(w, &ops[i], r);
            rrpc__free_op(&ops[i]);
        }
        rrpc__reply_free(r);
    }
    if (rc != RRPC_OK) {
        rrpc__keep_unconfirmed(w, ops + i, nops - i);
        for (size_t k = 0; k < i; k++)
            rrpc__free_op(&ops[k]);
        free(ops);
        return rc;
    }
    if (transient && !w->retry_wait)
        rrpc__log_worker(w, "Redis says not now; answers wait and are sent again", w->transient);
    w->retry_wait |= transient;
    free(ops);
    return RRPC_OK;
}
