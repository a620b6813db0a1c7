/* worker_reliable.c -- a worker's side of reliable mode: commits.
 *
 * In reliable mode the outcome of a request (answer, effects, dead letter)
 * is committed together with its release from the worker's in-flight hash
 * (reliable.c builds the commands).  A batch's commits go in one commit
 * script call, as at-most-once answers go in one reply script call; the
 * script answers per request, so one bad request costs only itself.
 * Here: queueing and sending commits, answering again what was answered
 * before, and acting on what Redis says to a commit.
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

static const char no_memory[] = "out of memory: a request stays in flight until taken again";

/* Holds the commit O (taken over) for the next commit call. */
void rrpc__pend_commit(worker *w, op *o)
{
    if (rrpc__grow((void **)&w->pcommit, &w->cappcommit, w->npcommit + 1, sizeof *o) != RRPC_OK) {
        rrpc__log_worker(w, no_memory, NULL); /* its request stays held in Redis */
        rrpc__free_op(o);
        return;
    }
    w->pcommit[w->npcommit++] = *o;
    memset(o, 0, sizeof *o);
}

/* Reliable mode: queues the commit M of the request MSG (reliable.c). */
static void queue_commit(worker *w, const char *msg, size_t len, rrpc__rel_commit *m)
{
    op o = {.kind = OP_COMMIT, .msg = msg, .msg_len = len};
    /* On a Cluster the commit cannot name the reply key (another slot):
     * the op keeps it for the push that follows the commit. */
    if (w->b->rel.cluster && m->key != NULL && m->response != NULL) {
        if ((o.key = malloc(m->key_len ? m->key_len : 1)) == NULL) {
            rrpc__log_worker(w, no_memory, NULL);
            return;
        }
        memcpy(o.key, m->key, m->key_len);
        o.key_len = m->key_len;
    }
    if (rrpc__rel_commit_cmd(&w->b->rel, &w->rk, &o.cmd, m) != RRPC_OK) {
        rrpc__log_worker(w, no_memory, NULL);
        rrpc__free_op(&o);
        return;
    }
    rrpc__pend_commit(w, &o);
}

/* Reliable mode on a Cluster: releases the request held under FIELD (its
 * response was pushed, or it had none).  Kept after a broken link and
 * sent again (HDEL is idempotent): until then the take returns the
 * request, and commit_pending keeps it from running again. */
void rrpc__release_held(worker *w, const char *field)
{
    const char *argv[3];
    op o = {.kind = OP_RELEASE, .text = strdup(field)};
    if (o.text == NULL)
        return; /* the next take answers it again */
    rrpc__rel_release_argv(&w->rk, field, argv);
    rrpc__send_cmd(w, o, 3, argv, NULL);
}

/* Reliable mode on a Cluster: Redis confirmed the commit O, which kept its
 * request held.  Its response goes to the reply key now (the at-most-once
 * reply script, in the reply key's slot), and the request is released
 * once Redis took the push; a request without a response at once.  A
 * worker that dies in between leaves the request held: the reaper puts it
 * back and it is answered again from its memory (RELIABILITY.md). */
static void push_then_release(worker *w, op *o)
{
    const char *field = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_FIELD, NULL);
    size_t len = 0;
    const char *response = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_RESPONSE, &len);
    if (field == NULL)
        return;
    if (o->key == NULL || response == NULL || len == 0) {
        rrpc__release_held(w, field);
        return;
    }
    reply_item it = {.msg = o->msg, .msg_len = o->msg_len, .key = o->key, .key_len = o->key_len};
    it.text = malloc(len + 1);
    it.release = strdup(field);
    if (it.text == NULL || it.release == NULL) {
        free(it.text);
        free(it.release);
        rrpc__log_worker(w, no_memory, NULL); /* held: the next take answers it again */
        return;
    }
    memcpy(it.text, response, len);
    it.text[len] = '\0';
    o->key = NULL; /* the item owns it now */
    rrpc__own_msg(&it.msg, it.msg_len, &it.msg_owned);
    rrpc__hold_reply(w, it);
}

/* Puts the N commits SUBS in the order of their outcomes, ORDER (outcome
 * i is that of SUBS[ORDER[i]]); 0 without memory. */
static int in_order(op *subs, size_t n, const size_t *order)
{
    op *copy = malloc(n * sizeof *copy);
    if (copy == NULL)
        return 0;
    memcpy(copy, subs, n * sizeof *copy);
    for (size_t i = 0; i < n; i++)
        subs[i] = copy[order[i]];
    free(copy);
    return 1;
}

/* Sends one commit script call for the N commits SUBS (owned). */
static void send_commits(worker *w, op *subs, size_t n)
{
    op o = {.kind = OP_COMMITS, .subs = subs, .nsubs = n};
    const rrpc__cmd **parts = malloc(n * sizeof *parts);
    rrpc__argv call = {0};
    for (size_t i = 0; parts != NULL && i < n; i++)
        parts[i] = &subs[i].cmd;
    if (parts == NULL ||
        rrpc__rel_commit_batch(&w->b->rel, &w->rk, w->ttl_text, parts, n, &call) != RRPC_OK) {
        free(parts);
        rrpc__keep_for_retry(w, &o); /* sent again with the next round */
        return;
    }
    if (call.order != NULL && !in_order(subs, n, call.order)) {
        /* The grouped layout: outcome i is that of part order[i]. */
        rrpc__argv_free(&call);
        free(parts);
        rrpc__keep_for_retry(w, &o); /* no memory to reorder: sent again later */
        return;
    }
    rrpc__send_cmd(w, o, (int)call.argc, call.argv, call.lens);
    rrpc__argv_free(&call);
    free(parts);
}

/* Sends the commits held since the last call: together in one call, but
 * those of a call Redis refused whole (an ACL that does not cover one of
 * its reply keys) one by one, so that one caller's key cannot hold back
 * the others. */
void rrpc__flush_commits(worker *w)
{
    if (w->npcommit == 0)
        return;
    op *subs = w->pcommit;
    size_t n = w->npcommit, together = 0;
    w->pcommit = NULL;
    w->npcommit = w->cappcommit = 0;
    for (size_t i = 0; i < n; i++) {
        if (!subs[i].alone) {
            subs[together++] = subs[i];
            continue;
        }
        op *one = malloc(sizeof *one);
        if (one == NULL) {
            rrpc__log_worker(w, no_memory, NULL);
            rrpc__free_op(&subs[i]);
            continue;
        }
        *one = subs[i];
        send_commits(w, one, 1);
    }
    if (together == 0)
        free(subs);
    else
        send_commits(w, subs, together);
}

/* Reliable mode: a request that will not run (its dedup key is not a
 * string) is released with a dead letter saying why. */
static void queue_dead_commit(worker *w, const char *msg, size_t len, const char *field,
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
static void commit_outcome(worker *w, const entry *e, rrpc__outcome *out, const char *refused)
{
    const char *msg = e->msg, *field = e->field, *sha1 = e->sha1;
    size_t len = e->len;
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
static void answer_again(worker *w, const char *msg, size_t len, const char *field,
                         const char *sha1, const rrpc__reply *answer)
{
    size_t text_len = 0;
    const char *text = rrpc__reply_str(answer, &text_len);
    rrpc__rel_commit m = {.field = field, .sha1 = sha1, .again = 1};
    char *dead = NULL;
    atomic_fetch_add(&w->srv->n.duplicates, 1);
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

/* Nonzero if O is, or holds, the commit of the request under FIELD -- or
 * (Cluster) its response's push or its release, which follow the commit. */
static int commits(const op *o, const char *field)
{
    if (o->kind == OP_COMMITS) {
        for (size_t i = 0; i < o->nsubs; i++)
            if (commits(&o->subs[i], field))
                return 1;
        return 0;
    }
    if (o->kind == OP_REPLY) {
        for (size_t i = 0; i < o->nitems; i++)
            if (o->items[i].release != NULL && strcmp(o->items[i].release, field) == 0)
                return 1;
        return 0;
    }
    if (o->kind == OP_RELEASE)
        return o->text != NULL && strcmp(o->text, field) == 0;
    const char *f =
        o->kind == OP_COMMIT ? rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_FIELD, NULL) : NULL;
    return f != NULL && strcmp(f, field) == 0;
}

/* Reliable mode: nonzero if the request held under FIELD has a commit not
 * yet confirmed (in this round, waiting for the next call or to be sent
 * again, or refused and held for a retry): the take script returns it
 * again, but it must not run again. */
static int commit_pending(const worker *w, const char *field)
{
    const op *lists[] = {w->ops, w->retry, w->held, w->pcommit};
    size_t counts[] = {w->nops, w->nretry, w->nheld, w->npcommit};
    for (int l = 0; l < 4; l++)
        for (size_t i = 0; i < counts[l]; i++)
            if (commits(&lists[l][i], field))
                return 1;
    for (size_t i = 0; i < w->npend; i++) /* a push waiting for the next reply call */
        if (w->pend[i].release != NULL && strcmp(w->pend[i].release, field) == 0)
            return 1;
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
        rrpc__log_worker(w, no_memory, reason);
        rrpc__free_op(&again);
    } else {
        memcpy(again.msg_owned, o->msg, o->msg_len);
        again.msg = again.msg_owned;
        again.msg_len = o->msg_len;
        again.alone = o->alone;
        rrpc__pend_commit(w, &again);
    }
    free(dead);
}

/* Reliable mode: acts on the outcome R of one commit O (see reliable.c).
 * On a Cluster a commit that completed (1), or found its request answered
 * already or no longer held (0: maybe by an earlier copy of this very
 * commit whose confirmation was lost, before its push), pushes its
 * response and releases its request: a reply may go out twice, never
 * not at all. */
static void judge_commit(worker *w, op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) == RRPC__REPLY_INTEGER) {
        const char *dead = rrpc__rel_commit_arg(&o->cmd, RRPC__COMMIT_DEAD_LETTER, NULL);
        if (rrpc__reply_integer(r) == 0)
            atomic_fetch_add(&w->srv->n.duplicates, 1); /* answered already */
        else if (dead && *dead)
            atomic_fetch_add(&w->srv->n.dead_letters, 1);
        if (w->b->rel.cluster)
            push_then_release(w, o);
        return;
    }
    const rrpc__reply *first = rrpc__reply_element(r, 0);
    const char *reason = rrpc__reply_str(rrpc__reply_element(r, 1), NULL);
    if (rrpc__reply_type(first) == RRPC__REPLY_STRING && reason != NULL) {
        commit_refused(w, o, reason);
        return;
    }
    rrpc__log_worker(w, "Redis refused an effect", reason);
    if (w->b->rel.cluster)
        push_then_release(w, o); /* the rest of its commit stands */
}

/* Reliable mode: nonzero if the error R to the commit O is the ACL's
 * refusal of its reply key (EVALSHA declares it): then, as for a refusal
 * by the script, the request is committed again with a dead letter and
 * without the key.  Any other error is held for a retry. */
static int refused_reply_key(worker *w, const op *o, const rrpc__reply *r)
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

/* Reliable mode: acts on the answer of a commit call O: one outcome per
 * commit, in order.  An outcome that is an error (the dead-letter list of
 * the wrong type) changed nothing of its request: that commit is held and
 * retried, as a call refused whole would be. */
void rrpc__judge_commits(worker *w, op *o, const rrpc__reply *r)
{
    size_t n = rrpc__pop_count(r);
    for (size_t i = 0; i < o->nsubs; i++) {
        const rrpc__reply *e = i < n ? rrpc__reply_element(r, i) : NULL;
        if (e != NULL && rrpc__reply_type(e) != RRPC__REPLY_ERROR) {
            judge_commit(w, &o->subs[i], e);
            continue;
        }
        rrpc__hold(w, &o->subs[i], e ? rrpc__reply_str(e, NULL) : "unexpected answer");
    }
}

/* Reliable mode: Redis refused the commit call O whole with R, for good
 * (not "not now"), having changed nothing.  Out of memory: every commit is
 * held and retried with a backoff.  Otherwise a call of several commits is
 * split, each sent on its own, so that one request's reply key (an ACL
 * refusal, NOPERM) costs only itself; a commit on its own whose reply key
 * the ACL refused is committed again with a dead letter, one refused
 * otherwise is held. */
void rrpc__commits_refused(worker *w, op *o, const rrpc__reply *r)
{
    const char *e = rrpc__reply_str(r, NULL);
    int oom = e != NULL && strncmp(e, "OOM", 3) == 0;
    for (size_t i = 0; i < o->nsubs; i++) {
        op *sub = &o->subs[i];
        if (o->nsubs > 1 && !oom) {
            rrpc__own_msg(&sub->msg, sub->msg_len, &sub->msg_owned); /* the pop goes away */
            sub->alone = 1;
            rrpc__pend_commit(w, sub);
            w->split_pending = 1;
        } else if (!oom && refused_reply_key(w, sub, r)) {
            rrpc__free_op(sub);
        } else {
            rrpc__hold(w, sub, e); /* takes it over */
        }
    }
    free(o->subs);
    o->subs = NULL;
    o->nsubs = 0;
}

/* ---- the delivery mode -------------------------------------------------- */

/* Registered before the first BLMOVE, so that a request it lands is found
 * by the reaper even if this worker dies before its take. */
static void reliable_take(worker *w, const char *timeout)
{
    const rrpc__rel *rel = &w->b->rel;
    const op pop = {.kind = OP_POP};
    const char *sadd[] = {"SADD", w->rk.shard->set_key, w->rk.wid};
    const char *block[] = {"BLMOVE", w->rk.shard->list_key, w->rk.landing, "LEFT", "RIGHT",
                           timeout};
    const char *take[RRPC__TAKE_ARGC];
    snprintf(w->base_text, sizeof w->base_text, "%016llx", w->takes++);
    rrpc__rel_take_argv(rel, &w->rk, w->high, w->low, w->batch_text, w->base_text, take);
    if (!w->registered && rrpc__send_cmd(w, rrpc__plain_op, 3, sadd, NULL) == RRPC_OK)
        w->registered = 1;
    if (rrpc__send_cmd(w, pop, 6, block, NULL) == RRPC_OK)
        rrpc__send_cmd(w, pop, RRPC__TAKE_ARGC, take, NULL);
}

/* The take script gives [field, request, ...] for everything in the
 * worker's in-flight hash (BLMOVE's element included): BLMOVE's own reply
 * holds nothing to read. */
static batch reliable_batch(rrpc__reply *const popped[2])
{
    batch b = {0};
    if (rrpc__pop_count(popped[1]) > 0) {
        b.rest = popped[1];
        b.count = rrpc__pop_count(popped[1]) / 2;
    }
    return b;
}

/* Request K of B's field and text; 0 if the take's answer is malformed. */
static int taken(const batch *b, size_t k, const char **field, const char **msg, size_t *len)
{
    const rrpc__reply *f = rrpc__reply_element(b->rest, 2 * k);
    const rrpc__reply *m = rrpc__reply_element(b->rest, 2 * k + 1);
    if (rrpc__reply_type(f) != RRPC__REPLY_STRING || rrpc__reply_type(m) != RRPC__REPLY_STRING)
        return 0;
    *field = rrpc__reply_str(f, NULL);
    *msg = rrpc__reply_str(m, len);
    return 1;
}

/* Reads one reply; 0 if the link broke (the next round reconnects). */
static int read_one(worker *w, rrpc__reply **r)
{
    *r = NULL;
    if (rrpc__conn_read(w->conn, r) == RRPC_OK)
        return 1;
    rrpc__reply_free(*r);
    *r = NULL;
    return 0;
}

/* A dedup key that exists but is not a string (MGET says nil for it):
 * asks the types of the keys MGET had no answer for, and marks those that
 * are there, of another type, as refused.  Rare: one more round trip. */
static int ask_types(worker *w, const rrpc__reply *got, const char **keys, const size_t *lens,
                     size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *argv[] = {"TYPE", keys[i]};
        size_t l[] = {4, lens[i]};
        if (rrpc__reply_type(rrpc__reply_element(got, i)) != RRPC__REPLY_STRING &&
            rrpc__conn_append(w->conn, 2, argv, l) != RRPC_OK)
            return 0;
    }
    for (size_t k = 0; k < w->nids; k++) {
        rrpc__rel_id *id = &w->ids[k];
        rrpc__reply *t = NULL;
        if (!id->stable || rrpc__reply_type(rrpc__reply_element(got, id->at)) == RRPC__REPLY_STRING)
            continue;
        if (!read_one(w, &t))
            return 0;
        const char *type = rrpc__reply_str(t, NULL);
        /* "string": answered between MGET and EXISTS -- not known here; the
         * commit finds it remembered and keeps the first answer. */
        if (type != NULL && strcmp(type, "none") != 0 && strcmp(type, "string") != 0)
            snprintf(id->refused, sizeof id->refused, "dedup key refused: %s", type);
        rrpc__reply_free(t);
    }
    return 1;
}

/* Asks Redis for the answers remembered under the N done keys of the
 * take's stable identities (KEYS, with the two slots before them free for
 * the command's name): MGET, and EXISTS pipelined with it to tell a key
 * that is not there from one of another type (nil for MGET too).  Plain
 * commands, not a script: no Lua table of keys to build.  The MGET reply
 * into w->check; 0 if it cannot be known now. */
static int ask_check(worker *w, size_t n, const char **argv, size_t *lens)
{
    argv[1] = "MGET";
    lens[1] = 4;
    int ok = rrpc__conn_append(w->conn, (int)n + 1, argv + 1, lens + 1) == RRPC_OK;
    argv[1] = "EXISTS";
    lens[1] = 6;
    ok = ok && rrpc__conn_append(w->conn, (int)n + 1, argv + 1, lens + 1) == RRPC_OK;
    rrpc__reply *got = NULL, *there = NULL;
    ok = ok && read_one(w, &got) && read_one(w, &there);
    if (!ok) {
        rrpc__reply_free(got);
        return 0;
    }
    size_t strings = 0;
    int fine = rrpc__reply_type(got) == RRPC__REPLY_ARRAY && rrpc__reply_count(got) == n &&
               rrpc__reply_type(there) == RRPC__REPLY_INTEGER;
    for (size_t i = 0; fine && i < n; i++)
        strings += rrpc__reply_type(rrpc__reply_element(got, i)) == RRPC__REPLY_STRING;
    if (fine && (size_t)rrpc__reply_integer(there) > strings)
        ok = ask_types(w, got, argv + 2, lens + 2, n);
    if (fine && ok) {
        w->check = got;
        rrpc__reply_free(there);
        return 1;
    }
    if (!fine) {
        const rrpc__reply *bad = rrpc__reply_type(got) == RRPC__REPLY_ERROR ? got : there;
        const char *e = rrpc__reply_str(bad, NULL);
        w->retry_wait = 1; /* "not now", or refused: the take returns them again */
        rrpc__log_worker(w, "Redis refused the dedup check; the take is tried again",
                         e ? e : "unexpected answer");
    }
    rrpc__reply_free(got);
    rrpc__reply_free(there);
    return 0;
}

/* Before anything of a take runs: computes each request's identity here
 * (the take script does not decode requests) and asks Redis, in one round
 * trip, for the answers remembered under the stable ones -- so a request
 * answered before is answered again, never run again.  0 if the check
 * could not be made: the requests stay held, and the next take returns
 * them. */
static int reliable_prepare(worker *w, batch *b)
{
    rrpc__reply_free(w->check);
    w->check = NULL;
    w->nids = 0;
    if (rrpc__grow((void **)&w->ids, &w->capids, b->count, sizeof *w->ids) != RRPC_OK)
        return 0;
    w->nids = b->count;
    size_t prefix = strlen(w->rk.shard->done_prefix), n = 0;
    char *keys = malloc(b->count * (prefix + 41));
    const char **argv = malloc((b->count + 2) * sizeof *argv);
    size_t *lens = malloc((b->count + 2) * sizeof *lens);
    int ok = keys != NULL && argv != NULL && lens != NULL;
    for (size_t k = 0; ok && k < b->count; k++) {
        const char *field = NULL, *msg = NULL;
        size_t len = 0;
        rrpc__rel_id *id = &w->ids[k];
        id->refused[0] = '\0';
        id->stable = taken(b, k, &field, &msg, &len) &&
                     rrpc__rel_identity(msg, len, w->srv->limits.max_request_bytes, w->rk.wid,
                                        field, id->sha1) == 1;
        if (!id->stable)
            continue;
        id->copy = 0;
        for (size_t j = 0; j < k && !id->copy; j++)
            id->copy = w->ids[j].stable && memcmp(w->ids[j].sha1, id->sha1, 40) == 0;
        char *key = keys + n * (prefix + 41);
        memcpy(key, w->rk.shard->done_prefix, prefix);
        memcpy(key + prefix, id->sha1, 41);
        id->at = n++;
        argv[2 + id->at] = key;
        lens[2 + id->at] = prefix + 40;
    }
    if (ok && n > 0)
        ok = ask_check(w, n, argv, lens);
    if (!ok && keys == NULL)
        rrpc__log_worker(w, no_memory, NULL);
    free(keys);
    free(argv);
    free(lens);
    b->ids = w->ids;
    b->answers = w->check;
    return ok;
}

/* Entry K of B; 0 if the take script's answer is malformed there. */
static int reliable_entry(const batch *b, size_t k, entry *e)
{
    memset(e, 0, sizeof *e);
    if (!taken(b, k, &e->field, &e->msg, &e->len))
        return 0;
    if (b->ids == NULL)
        return 1; /* only its length is asked (before the check) */
    const rrpc__rel_id *id = &b->ids[k];
    memcpy(e->sha1, id->sha1, 41);
    const rrpc__reply *a = id->stable ? rrpc__reply_element(b->answers, id->at) : NULL;
    e->answer = a != NULL && rrpc__reply_type(a) == RRPC__REPLY_STRING ? a : NULL;
    e->refused = id->stable && id->refused[0] ? id->refused : NULL;
    e->copy = id->stable && id->copy;
    return 1;
}

/* One request of a take: run unless Redis remembers its answer. */
static void reliable_handle(worker *w, const entry *e)
{
    /* A field of this very take was just written by it: nothing can be
     * pending for it (the scan is per pending commit, so skipping it keeps
     * a batch linear). */
    size_t base = strlen(w->base_text);
    int fresh = strncmp(e->field, w->base_text, base) == 0 && e->field[base] == '.';
    if (!fresh && commit_pending(w, e->field))
        return;
    if (e->refused != NULL) /* its dedup key is poisoned: it cannot be run at most once */
        queue_dead_commit(w, e->msg, e->len, e->field, e->sha1, e->refused);
    else if (e->answer != NULL)
        answer_again(w, e->msg, e->len, e->field, e->sha1, e->answer);
    else if (e->copy) {
        /* A copy of a request this take holds already (a caller's resend
         * that caught up with it): it does not run again.  Its commit
         * releases it and sends nothing; it comes after the first copy's,
         * whose answer is the caller's. */
        atomic_fetch_add(&w->srv->n.duplicates, 1);
        rrpc__rel_commit m = {.field = e->field, .sha1 = e->sha1, .again = 1};
        queue_commit(w, e->msg, e->len, &m);
    } else
        rrpc__handle_message(w, e);
}

static void reliable_init_worker(worker *w)
{
    /* Its shard as the worker loop's (server_ops.c): thread i takes from
     * shard i % shards.  Fits: rrpc__rel_init checked. */
    rrpc__rel_worker_keys(&w->b->rel, w->id % w->b->rel.nshards, w->id, &w->rk);
}

/* A new link may be to a restarted Redis, without the scripts. */
static int reliable_relink(worker *w)
{
    return rrpc__rel_load_scripts(&w->b->rel, w->conn);
}

/* The in-flight lists' heartbeat and reaper, before any worker takes. */
static int reliable_announce(rrpc__server_broker *b)
{
    rrpc__serving *s = b->s;
    return rrpc__rel_start(&b->rel, &s->url, s->connect_timeout_s, s->errmsg, sizeof s->errmsg);
}

/* Stops the heartbeat and unregisters the workers that hold nothing. */
static void reliable_withdraw(rrpc__server_broker *b)
{
    int n = b->ws ? b->s->workers : 0;
    rrpc__rel_worker *keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (keys == NULL)
        n = 0; /* without memory: the reaper cleans up */
    for (int i = 0; i < n; i++)
        keys[i] = b->ws[i].rk;
    rrpc__rel_stop(&b->rel, keys, n);
    free(keys);
}

static int reliable_learn(rrpc__server_broker *b, rrpc__conn *c)
{
    return rrpc__rel_learn_scripts(&b->rel, c);
}

static void reliable_log_held(worker *w, const char *error)
{
    rrpc__log_worker(w, "Redis refused a commit; its request stays held and the commit is retried",
                     error);
}

const rrpc__delivery rrpc__at_least_once = {
    .name = "reliable",
    .needs_noeviction = 1,
    .taken_again = "Redis takes commits again",
    .announce = reliable_announce,
    .withdraw = reliable_withdraw,
    .learn = reliable_learn,
    .init_worker = reliable_init_worker,
    .relink = reliable_relink,
    .send_take = reliable_take,
    .batch_of = reliable_batch,
    .prepare = reliable_prepare,
    .entry = reliable_entry,
    .handle = reliable_handle,
    .settle = commit_outcome,
    .hand_back = NULL, /* unstarted requests stay in this worker's in-flight hash */
    .log_held = reliable_log_held,
};
