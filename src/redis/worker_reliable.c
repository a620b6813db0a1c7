/* worker_reliable.c -- a worker's side of reliable mode: commits.
 *
 * In reliable mode the outcome of a request (answer, effects, dead letter)
 * is one commit script call that also releases it from the worker's
 * in-flight hash (reliable.c builds the commands).  Here: queueing commits,
 * answering again what was answered before, and acting on what Redis says
 * to a commit.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/deadletter.h"
#include "core/dispatch.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "redis/reliable.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reliable mode: queues the commit M of the request MSG (reliable.c). */
static void queue_commit(worker *w, const char *msg, size_t len, rrpc__rel_commit *m)
{
    op o = {.kind = OP_COMMIT, .msg = msg, .msg_len = len};
    m->inflight = w->rk.inflight;
    m->reply_ttl = w->ttl_text;
    if (rrpc__rel_commit_cmd(&w->srv->rel, &o.cmd, m) != RRPC_OK) {
        rrpc__log_worker(w, "out of memory: a request stays in flight until taken again", NULL);
        return;
    }
    rrpc__send_cmd(w, o, (int)o.cmd.argc, (const char **)o.cmd.argv, o.cmd.lens);
}

/* Reliable mode: a request that will not run (its dedup key is not a
 * string) is released with a dead letter saying why. */
void rrpc__queue_dead_commit(worker *w, const char *msg, size_t len, const char *field,
                             const char *sha1, const char *reason)
{
    char *text = rrpc__dead_letter_text(w->srv->service, reason, msg, len,
                                        w->srv->limits.max_request_bytes, NULL, NULL);
    if (text == NULL) {
        rrpc__log_worker_at(w, RRPC_LOG_ERROR, "cannot encode a dead letter", reason);
        return;
    }
    rrpc__rel_commit m = {.field = field, .sha1 = sha1, .dead_letter = text};
    queue_commit(w, msg, len, &m);
    free(text);
}

/* Reliable mode: the outcome of a request becomes one commit -- its answer,
 * effects and dead letter (if any) together, so that none of them can be
 * lost or repeated without the others.  REFUSED is the response withheld
 * from a reply key that rules 1 to 4 refused, or NULL. */
void rrpc__commit_outcome(worker *w, const char *msg, size_t len, const char *field,
                          const char *sha1, const rrpc__outcome *out, const char *refused)
{
    char *dead = NULL;
    if (out->dead_reason != NULL &&
        (dead = rrpc__dead_letter_text(w->srv->service, out->dead_reason, msg, len,
                                       w->srv->limits.max_request_bytes, out->dead_response,
                                       refused)) == NULL) {
        rrpc__log_worker(w, "cannot encode a dead letter: the request stays in flight",
                         out->dead_reason);
        return;
    }
    int with_reply = out->reply_key != NULL && out->response != NULL;
    rrpc__rel_commit m = {
        .field = field,
        .sha1 = sha1,
        .key = with_reply ? out->reply_key : NULL,
        .key_len = out->reply_key_len,
        .response = with_reply ? out->response : NULL,
        .response_len = with_reply ? strlen(out->response) : 0,
        .effects = out->effects,
        .dead_letter = dead,
    };
    queue_commit(w, msg, len, &m);
    free(dead);
}

/* Reliable mode: a request answered before (a redelivery, or a caller that
 * sent it again): the remembered response goes out again, through the same
 * commit script (which releases the request and accepts the reply key only
 * if it is a reply list), and nothing runs.  Its key meets rules 1 to 4
 * again: they may have changed since (an allow-list set, a service
 * registered); refused, the response becomes a dead letter instead. */
void rrpc__answer_again(worker *w, const char *msg, size_t len, const char *field, const char *sha1,
                        const rrpc__reply *answer)
{
    size_t text_len = 0;
    const char *text = rrpc__reply_str(answer, &text_len);
    rrpc__rel_commit m = {.field = field, .sha1 = sha1, .again = 1};
    char *dead = NULL;
    atomic_fetch_add(&w->srv->duplicates, 1);
    if (!rrpc__rel_parse_answer(text, text_len, &m.key, &m.key_len, &m.response, &m.response_len))
        m.key = m.response = NULL; /* a notification or a dead letter: nothing to send */
    const char *why = m.key ? rrpc__reply_key_refusal(&w->rules, m.key, m.key_len) : NULL;
    if (why != NULL) {
        /* The response runs to the end of the reply's string: NUL-terminated. */
        dead = rrpc__dead_letter_text(w->srv->service, why, msg, len,
                                      w->srv->limits.max_request_bytes, NULL, m.response);
        if (dead == NULL) {
            rrpc__log_worker(w, "cannot encode a dead letter: the request stays in flight", why);
            return;
        }
        m.key = m.response = NULL;
        m.dead_letter = dead;
    }
    queue_commit(w, msg, len, &m);
    free(dead);
}

/* Reliable mode: nonzero if the request held under FIELD has a commit not
 * yet confirmed (in this round, waiting to be sent again, or refused and
 * held for a retry): the take script returns it again, but it must not
 * run again. */
int rrpc__commit_pending(const worker *w, const char *field)
{
    const op *lists[] = {w->ops, w->retry, w->held};
    size_t counts[] = {w->nops, w->nretry, w->nheld};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l]; i++) {
            const op *o = &lists[l][i];
            const char *f = o->kind == OP_COMMIT
                                ? rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_FIELD, NULL)
                                : NULL;
            if (f && strcmp(f, field) == 0)
                return 1;
        }
    return 0;
}

/* Reliable mode: the commit O was refused its reply key (or its dedup key
 * is not a string) and changed nothing; it is committed again with a dead
 * letter that says so and keeps the response (a bounded copy), without the
 * reply key. */
static void commit_refused(worker *w, const op *o, const char *reason)
{
    size_t len = 0;
    const char *text = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_RESPONSE, &len);
    char *dead =
        rrpc__dead_letter_text(w->srv->service, reason, o->msg, o->msg_len,
                               w->srv->limits.max_request_bytes, NULL, text && len ? text : NULL);
    /* Its own copy of the request: O's goes away with O or the popped reply. */
    op again = {.kind = OP_COMMIT, .msg_owned = malloc(o->msg_len ? o->msg_len : 1)};
    if (dead == NULL || again.msg_owned == NULL ||
        rrpc__rel_commit_dead(&o->cmd, &again.cmd, dead) != RRPC_OK) {
        rrpc__log_worker(w, "out of memory: a request stays in flight until taken again", reason);
        rrpc__free_op(&again);
    } else {
        memcpy(again.msg_owned, o->msg, o->msg_len);
        again.msg = again.msg_owned;
        again.msg_len = o->msg_len;
        rrpc__send_cmd(w, again, (int)again.cmd.argc, (const char **)again.cmd.argv,
                       again.cmd.lens);
    }
    free(dead);
}

/* Reliable mode: acts on the answer of a commit script (see reliable.c). */
void rrpc__judge_commit(worker *w, const op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) == RRPC__REPLY_INTEGER) {
        const char *dead = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_DEAD_LETTER, NULL);
        if (rrpc__reply_integer(r) == 0)
            atomic_fetch_add(&w->srv->duplicates, 1); /* answered already */
        else if (dead && *dead)
            atomic_fetch_add(&w->srv->dead_letters, 1);
        return;
    }
    const rrpc__reply *first = rrpc__reply_element(r, 0);
    const char *reason = rrpc__reply_str(rrpc__reply_element(r, 1), NULL);
    if (rrpc__reply_type(first) == RRPC__REPLY_STRING && reason != NULL)
        commit_refused(w, o, reason);
    else
        rrpc__log_worker(w, "Redis refused an effect", reason);
}

/* Reliable mode: nonzero if the error R to the commit O is the ACL's
 * refusal of its reply key (EVALSHA declares it): then, as for a refusal
 * by the script, the request is committed again with a dead letter and
 * without the key.  Any other error is held for a retry. */
int rrpc__refused_reply_key(worker *w, const op *o, const rrpc__reply *r)
{
    const char *e = rrpc__reply_str(r, NULL);
    size_t len = 0;
    if (e == NULL || strncmp(e, "NOPERM", 6) != 0 ||
        rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_RESPONSE, &len) == NULL || len == 0)
        return 0;
    char reason[RRPC__ERRMSG_LEN];
    snprintf(reason, sizeof reason, "reply failed: %s", e);
    commit_refused(w, o, reason);
    return 1;
}
