/* worker_ops.c -- a worker's pipelined commands (ops) and what is lost.
 *
 * Every command a worker pipelines is an op that remembers how to judge
 * its reply; replies, dead letters, effects, commits and give-backs own
 * their texts until Redis confirms them, so that they can be sent again.
 * What cannot be is said, with its ids, and counted (lose_*): one line per
 * loss, which operators and tests match.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/log.h"
#include "core/trace.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rrpc__log_worker_at(const worker *w, rrpc_log_level level, const char *what,
                         const char *detail)
{
    char who[16];
    snprintf(who, sizeof who, "%d", w->id);
    rrpc__log(level, w->srv->service, who, what, detail);
}

/* The common case: a fault the worker rides out. */
void rrpc__log_worker(const worker *w, const char *what, const char *detail)
{
    rrpc__log_worker_at(w, RRPC_LOG_WARN, what, detail);
}

int rrpc__grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return RRPC_OK;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*items, n * size);
    if (p == NULL)
        return RRPC_ENOMEM;
    *items = p;
    *cap = n;
    return RRPC_OK;
}

static int push_op(worker *w, op o)
{
    if (rrpc__grow((void **)&w->ops, &w->capops, w->nops + 1, sizeof o) != RRPC_OK)
        return RRPC_ENOMEM;
    w->ops[w->nops++] = o;
    return RRPC_OK;
}

void rrpc__free_item(reply_item *it)
{
    free(it->key);
    free(it->text);
    free(it->release);
    free(it->msg_owned);
}

void rrpc__free_op(op *o)
{
    free(o->key);
    free(o->text);
    free(o->msg_owned);
    for (size_t i = 0; i < o->nitems; i++)
        rrpc__free_item(&o->items[i]);
    free(o->items);
    for (size_t i = 0; i < o->nsubs; i++)
        rrpc__free_op(&o->subs[i]);
    free(o->subs);
    rrpc__cmd_free(&o->cmd);
    memset(o, 0, sizeof *o);
}

/* Replies, dead letters and effects must survive a broken link or a Redis
 * that is busy for a while (see rrpc__keep_for_retry) or out of memory (hold). */
int rrpc__kept_for_resend(const op *o)
{
    return o->kind == OP_REPLY || o->kind == OP_DEAD || o->kind == OP_COMMIT ||
           o->kind == OP_COMMITS || o->kind == OP_GIVEBACK || o->kind == OP_EFFECTS ||
           o->kind == OP_RELEASE;
}

/* The request text a kept op refers to lives in the popped reply, which
 * is freed once the next pop comes in; a retry outlives it, so it gets a
 * copy of its own. */
void rrpc__own_msg(const char **msg, size_t len, char **owned)
{
    if (*msg == NULL || *owned != NULL)
        return;
    *owned = malloc(len + 1);
    if (*owned != NULL) {
        memcpy(*owned, *msg, len);
        (*owned)[len] = '\0';
    }
    *msg = *owned ? *owned : ""; /* without memory the dead letter says less */
}

/* ---- what is lost is said, with its ids, and counted ------------------- */

/* Appends to OUT (of CAP bytes, NUL-terminated) the JSON of V escaped to
 * ASCII -- control characters as \u00XX, so that a hostile id cannot write
 * to an operator's terminal -- or its first LOG_ID_MAX bytes and its
 * length when it is longer. */
static void append_json(char *out, size_t cap, const json_t *v)
{
    size_t at = strlen(out);
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    if (text == NULL)
        snprintf(out + at, cap - at, "(unprintable)");
    else if (strlen(text) > LOG_ID_MAX)
        snprintf(out + at, cap - at, "%.*s... (%zu bytes)", LOG_ID_MAX, text, strlen(text));
    else
        snprintf(out + at, cap - at, "%s", text);
    free(text);
}

/* How a LOST line names the request(s) of TEXT -- a request, a response or
 * a batch of either: "id 7", "ids [1,2]", "a notification", or what it is
 * when it is not JSON-RPC (then its length). */
static void describe_ids(const char *text, size_t len, char *out, size_t cap)
{
    json_t *doc = text ? json_loadb(text, len, 0, NULL) : NULL;
    out[0] = '\0';
    if (json_is_object(doc) && json_object_get(doc, "id") != NULL) {
        snprintf(out, cap, "id ");
        append_json(out, cap, json_object_get(doc, "id"));
    } else if (json_is_object(doc)) {
        snprintf(out, cap, "a notification");
    } else if (json_is_array(doc)) {
        json_t *ids = json_array();
        size_t i;
        const json_t *e;
        json_array_foreach(doc, i, e)
        {
            if (json_object_get(e, "id"))
                json_array_append(ids, json_object_get(e, "id"));
        }
        snprintf(out, cap, "ids ");
        append_json(out, cap, ids);
        json_decref(ids);
    } else {
        snprintf(out, cap, "a message of %zu bytes that is not JSON-RPC", len);
    }
    json_decref(doc);
}

/* Appends " (trace ID)" to OUT if the request (or a batch's first) of
 * TEXT carries a valid traceparent: the id by which operators follow a
 * request across services (PROTOCOL.md section 7). */
static void append_trace(const char *text, size_t len, char *out, size_t cap)
{
    json_t *doc = text ? json_loadb(text, len, 0, NULL) : NULL;
    const json_t *tp =
        json_object_get(json_is_array(doc) ? json_array_get(doc, 0) : doc, "traceparent");
    char parsed[RRPC__TRACEPARENT_LEN + 1];
    size_t at = strlen(out);
    if (json_is_string(tp) &&
        rrpc__traceparent_parse(json_string_value(tp), json_string_length(tp), parsed))
        snprintf(out + at, cap - at, " (trace %.32s)", parsed + 3);
    json_decref(doc);
}

/* Logs the loss of an answer, dead letter, effects or request (WHAT, of
 * IDS, with MORE) and counts it: rrpc_server_stats.lost, and
 * <service>:stats "lost" with the next round (send_lost).  One line per
 * loss, with the whole id: operators and tests match them. */
static void lose(worker *w, const char *what, const char *ids, const char *more, const char *why)
{
    atomic_fetch_add(&w->srv->n.lost, 1);
    w->lost_unsent++;
    char who[16];
    snprintf(who, sizeof who, "%d", w->id);
    rrpc__logf(RRPC_LOG_ERROR, w->srv->service, who, "LOST %s %s%s: %s", what, ids,
               more ? more : "", why ? why : "");
}

/* The reply key of IT as escaped JSON, for a LOST line. */
static void describe_key(const reply_item *it, char *out, size_t cap)
{
    json_t *key = json_stringn(it->key, it->key_len);
    out[0] = '\0';
    if (key == NULL)
        snprintf(out, cap, "(%zu bytes, not UTF-8)", it->key_len);
    else
        append_json(out, cap, key);
    json_decref(key);
}

void rrpc__lose_item(worker *w, const reply_item *it, const char *why)
{
    char ids[LOG_ID_MAX + 112], key[LOG_ID_MAX + 64], more[LOG_ID_MAX + 96];
    describe_ids(it->text, it->text ? strlen(it->text) : 0, ids, sizeof ids);
    append_trace(it->msg, it->msg_len, ids, sizeof ids);
    describe_key(it, key, sizeof key);
    snprintf(more, sizeof more, " (reply key %s)", key);
    lose(w, "answer to", ids, more, why);
}

/* Says what of O (an at-most-once op kept for resending) is lost and why;
 * frees nothing. */
void rrpc__lose_op(worker *w, const op *o, const char *why)
{
    char ids[LOG_ID_MAX + 112];
    if (o->kind == OP_REPLY) {
        for (size_t i = 0; i < o->nitems; i++)
            rrpc__lose_item(w, &o->items[i], why);
    } else if (o->kind == OP_DEAD) {
        /* The record keeps the message whole unless it was oversized. */
        json_t *rec = o->text ? json_loads(o->text, 0, NULL) : NULL;
        const char *msg = json_string_value(json_object_get(rec, "message"));
        if (msg)
            describe_ids(msg, json_string_length(json_object_get(rec, "message")), ids, sizeof ids);
        else
            snprintf(ids, sizeof ids, "an oversized message (SHA-1 %s)",
                     json_string_value(json_object_get(rec, "message_sha1"))
                         ? json_string_value(json_object_get(rec, "message_sha1"))
                         : "unknown");
        /* The record names the message's trace (deadletter.c). */
        const char *tp = json_string_value(json_object_get(rec, "traceparent"));
        size_t at = strlen(ids);
        if (tp != NULL && strlen(tp) == RRPC__TRACEPARENT_LEN)
            snprintf(ids + at, sizeof ids - at, " (trace %.32s)", tp + 3);
        json_decref(rec);
        lose(w, "dead letter of", ids, NULL, why);
    } else if (o->kind == OP_EFFECTS) {
        describe_ids(o->msg, o->msg_len, ids, sizeof ids);
        append_trace(o->msg, o->msg_len, ids, sizeof ids);
        lose(w, "effects of", ids, NULL, why);
    } else if (o->kind == OP_GIVEBACK) {
        for (size_t i = 2; i < o->cmd.argc; i++) {
            describe_ids(o->cmd.argv[i], o->cmd.lens[i], ids, sizeof ids);
            append_trace(o->cmd.argv[i], o->cmd.lens[i], ids, sizeof ids);
            lose(w, "unstarted request, handed back:", ids, NULL, why);
        }
    }
}

/* Moves O (taking ownership) to the ops to send again. */
void rrpc__keep_for_retry(worker *w, op *o)
{
    rrpc__own_msg(&o->msg, o->msg_len, &o->msg_owned);
    for (size_t i = 0; i < o->nitems; i++)
        rrpc__own_msg(&o->items[i].msg, o->items[i].msg_len, &o->items[i].msg_owned);
    for (size_t i = 0; i < o->nsubs; i++)
        rrpc__own_msg(&o->subs[i].msg, o->subs[i].msg_len, &o->subs[i].msg_owned);
    if (rrpc__grow((void **)&w->retry, &w->capretry, w->nretry + 1, sizeof *o) != RRPC_OK) {
        if (o->kind == OP_COMMIT || o->kind == OP_COMMITS) /* its requests stay held in Redis */
            rrpc__log_worker(w, "out of memory: a request stays in flight until taken again", NULL);
        else
            rrpc__lose_op(w, o, "out of memory");
        rrpc__free_op(o);
        return;
    }
    w->retry[w->nretry++] = *o;
    memset(o, 0, sizeof *o);
}

/* Queues one command and remembers how to judge its reply. */
int rrpc__send_cmd(worker *w, op o, int argc, const char **argv, const size_t *lens)
{
    int rc = rrpc__conn_append(w->conn, argc, argv, lens);
    /* On a broken link a reply or dead letter is still kept: the next read
     * fails, and it is sent again on the new link. */
    if (rc == RRPC_OK || (rc == RRPC_ECONNECT && rrpc__kept_for_resend(&o)))
        rc = push_op(w, o) == RRPC_OK ? rc : RRPC_ENOMEM;
    else
        rrpc__free_op(&o);
    return rc;
}

const op rrpc__plain_op = {.kind = OP_PLAIN};
