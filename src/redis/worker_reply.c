/* worker_reply.c -- the at-most-once answers: reply script calls and dead letters.
 *
 * A batch's responses are held and sent in one reply script call (one per
 * hash slot on a Cluster); the script's answer says per key whether it was
 * a reply list (PROTOCOL.md section 3, rule 5), and a refused response
 * becomes a dead letter.  Also the registered services' names that rule 3
 * of the reply keys needs.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/deadletter.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "core/slot.h"
#include "redis/conn.h"
#include "core/url.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Holds a response for the batch's reply script call (rrpc__flush_replies);
 * takes ownership of IT's key, text and msg_owned. */
void rrpc__hold_reply(worker *w, reply_item it)
{
    if (rrpc__grow((void **)&w->pend, &w->cappend, w->npend + 1, sizeof *w->pend) != RRPC_OK) {
        rrpc__lose_item(w, &it, "out of memory");
        rrpc__free_item(&it);
        return;
    }
    w->pend[w->npend++] = it;
}

/* As rrpc__hold_reply; MSG (the request, for a dead letter) is borrowed. */
void rrpc__queue_reply(worker *w, const char *msg, size_t len, char *key, size_t key_len,
                       char *text)
{
    rrpc__hold_reply(
        w, (reply_item){.msg = msg, .msg_len = len, .key = key, .key_len = key_len, .text = text});
}

/* Sends one reply script call for ITEMS (owned, all in one hash slot on a
 * Cluster): KEYS are their reply keys, ARGV the TTL and the responses. */
static void send_reply_call(worker *w, reply_item *items, size_t n)
{
    size_t argc = 2 * n + 4;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    char numkeys[24];
    op o = {.kind = OP_REPLY, .items = items, .nitems = n};
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        rrpc__keep_for_retry(w, &o); /* sent again with the next round */
        return;
    }
    int eval = !w->script_known;
    argv[0] = eval ? "EVAL" : "EVALSHA";
    argv[1] = eval ? rrpc__reply_script : w->b->reply_sha;
    snprintf(numkeys, sizeof numkeys, "%zu", n);
    argv[2] = numkeys;
    for (size_t i = 0; i < n; i++) {
        argv[3 + i] = items[i].key;
        lens[3 + i] = items[i].key_len;
        argv[4 + n + i] = items[i].text;
        lens[4 + n + i] = strlen(items[i].text);
    }
    argv[3 + n] = w->ttl_text;
    for (size_t i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    lens[3 + n] = strlen(w->ttl_text);
    o.eval = eval;
    rrpc__send_cmd(w, o, (int)argc, argv, lens);
    free(argv);
    free(lens);
}

typedef struct slotted {
    unsigned slot;
    size_t index;
} slotted;

static int by_slot(const void *a, const void *b)
{
    const slotted *x = a, *y = b;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Sends IT (moved from the caller's array) in a reply script call of its
 * own; without memory for that it is lost, and said so. */
static void send_alone(worker *w, reply_item *it)
{
    reply_item *one = malloc(sizeof *one);
    if (one == NULL) {
        rrpc__lose_item(w, it, "out of memory");
        rrpc__free_item(it);
        return;
    }
    *one = *it;
    send_reply_call(w, one, 1);
}

/* On a Cluster the keys of one script call must share a hash slot: one
 * call per slot, each with the replies of that slot in their order. */
static void send_by_slot(worker *w, reply_item *items, size_t n)
{
    slotted *order = malloc(n * sizeof *order);
    if (order == NULL) {
        for (size_t i = 0; i < n; i++) /* one call per key needs no sorting */
            send_alone(w, &items[i]);
        free(items);
        return;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = (slotted){rrpc__key_slot(items[i].key, items[i].key_len), i};
    qsort(order, n, sizeof *order, by_slot);
    for (size_t from = 0, to; from < n; from = to) {
        for (to = from + 1; to < n && order[to].slot == order[from].slot; to++)
            ;
        reply_item *group = malloc((to - from) * sizeof *group);
        for (size_t k = from; k < to; k++) {
            if (group != NULL)
                group[k - from] = items[order[k].index];
            else {
                rrpc__lose_item(w, &items[order[k].index], "out of memory");
                rrpc__free_item(&items[order[k].index]);
            }
        }
        if (group != NULL)
            send_reply_call(w, group, to - from);
    }
    free(order);
    free(items);
}

/* Sends the responses held since the last call: on one Redis all of them
 * in one reply script call, on a Cluster one call per hash slot. */
void rrpc__flush_replies(worker *w)
{
    if (w->npend == 0)
        return;
    reply_item *items = w->pend;
    size_t n = w->npend;
    w->pend = NULL;
    w->npend = w->cappend = 0;
    /* Those that were in a call Redis refused as a whole (an ACL that
     * does not cover one of its keys) go one by one, so that one caller's
     * reply key cannot fail the answers of others. */
    size_t together = 0;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].alone) {
            items[together++] = items[i];
            continue;
        }
        send_alone(w, &items[i]);
    }
    n = together;
    if (n == 0)
        free(items);
    else if (w->srv->url.kind == RRPC__URL_CLUSTER)
        send_by_slot(w, items, n);
    else
        send_reply_call(w, items, n);
}

/* Queues RPUSH+LTRIM+HINCRBY of a dead letter; takes ownership of text.
 * GIVE_UP_AT: see op.give_up_at (0 for a new one). */
void rrpc__queue_dead(worker *w, char *text, double give_up_at)
{
    rrpc__serving *s = w->srv;
    const char *push[] = {"RPUSH", s->dead_key, text};
    const char *trim[] = {"LTRIM", s->dead_key, w->trim_text, "-1"};
    const char *count[] = {"HINCRBY", s->stats_key, "dead", "1"};
    if (rrpc__send_cmd(w, (op){.kind = OP_DEAD, .text = text, .give_up_at = give_up_at}, 3, push,
                       NULL) == RRPC_OK) {
        rrpc__send_cmd(w, rrpc__plain_op, 4, trim, NULL);
        rrpc__send_cmd(w, rrpc__plain_op, 4, count, NULL);
    }
}

/* Queues the dead letter of MSG; RESPONSE (a value) or RESPONSE_TEXT, if
 * any, is the answer that could not be delivered. */
void rrpc__send_dead_letter(worker *w, const char *reason, const char *msg, size_t len,
                            const json_t *response, const char *response_text)
{
    char *text = rrpc__dead_letter_text(w->srv->service, reason, msg, len,
                                        w->srv->limits.max_request_bytes, response, response_text);
    if (text == NULL) {
        rrpc__log_worker_at(w, RRPC_LOG_ERROR, "cannot encode a dead letter", reason);
        return;
    }
    rrpc__queue_dead(w, text, 0);
}

/* A response that could not be delivered, as a dead letter. */
static void reply_dead(worker *w, const reply_item *it, const char *reason)
{
    rrpc__send_dead_letter(w, reason, it->msg, it->msg_len, NULL, it->text);
}

/* Acts on the reply script's answer: per key 1 (pushed) or what the key
 * is instead of a reply list (refused, PROTOCOL.md section 3 rule 5). */
static void judge_pushes(worker *w, op *o, const rrpc__reply *r);

/* Reliable mode on a Cluster: the requests whose responses O carried are
 * released now that Redis answered the push (pushed, or a dead letter). */
static void release_items(worker *w, op *o)
{
    for (size_t i = 0; i < o->nitems; i++)
        if (o->items[i].release != NULL)
            rrpc__release_held(w, o->items[i].release);
}

void rrpc__judge_replies(worker *w, op *o, const rrpc__reply *r)
{
    judge_pushes(w, o, r);
    release_items(w, o);
}

static void judge_pushes(worker *w, op *o, const rrpc__reply *r)
{
    char reason[RRPC__ERRMSG_LEN];
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR && o->nitems > 1) {
        /* Refused as a whole: which key is to blame, if any, is found by
         * sending each on its own (the items move out of the op). */
        for (size_t i = 0; i < o->nitems; i++) {
            o->items[i].alone = 1;
            rrpc__own_msg(&o->items[i].msg, o->items[i].msg_len, &o->items[i].msg_owned);
            rrpc__hold_reply(w, o->items[i]);
        }
        o->nitems = 0;
        w->split_pending = 1;
        return;
    }
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        snprintf(reason, sizeof reason, "reply failed: %s", rrpc__reply_str(r, NULL));
        for (size_t i = 0; i < o->nitems; i++)
            reply_dead(w, &o->items[i], reason);
        return;
    }
    if (o->eval)
        w->script_known = 1; /* EVAL cached it: EVALSHA from now on */
    size_t n = rrpc__pop_count(r);
    for (size_t i = 0; i < o->nitems; i++) {
        const rrpc__reply *e = i < n ? rrpc__reply_element(r, i) : NULL;
        enum rrpc__reply_type t = e ? rrpc__reply_type(e) : RRPC__REPLY_NIL;
        if (t == RRPC__REPLY_INTEGER && rrpc__reply_integer(e) == 1)
            continue;
        if (t == RRPC__REPLY_STRING || t == RRPC__REPLY_STATUS)
            snprintf(reason, sizeof reason, "reply key refused: %s", rrpc__reply_str(e, NULL));
        else
            snprintf(reason, sizeof reason, "reply failed: unexpected answer of the reply script");
        reply_dead(w, &o->items[i], reason);
    }
}

/* Keeps the registered services' names (rule 3 of the reply keys) from an
 * SMEMBERS reply.  A refusal (an ACL) leaves the rule off, logged once. */
void rrpc__take_services(worker *w, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) != RRPC__REPLY_ARRAY) {
        if (!w->services_refused)
            rrpc__log_worker(w,
                             "cannot read the registered services; their request lists are not "
                             "recognised as reply keys",
                             rrpc__reply_type(r) == RRPC__REPLY_ERROR ? rrpc__reply_str(r, NULL)
                                                                      : NULL);
        w->services_refused = 1;
        return;
    }
    size_t n = rrpc__reply_count(r), bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        rrpc__reply_str(rrpc__reply_element(r, i), &len);
        bytes += len;
    }
    rrpc__name *names = malloc((n ? n : 1) * sizeof *names);
    char *buf = malloc(bytes ? bytes : 1);
    if (names == NULL || buf == NULL) {
        free(names);
        free(buf);
        return; /* keep the last list */
    }
    for (size_t i = 0, at = 0; i < n; i++) {
        size_t len = 0;
        const char *s = rrpc__reply_str(rrpc__reply_element(r, i), &len);
        memcpy(buf + at, s, len);
        names[i] = (rrpc__name){buf + at, len};
        at += len;
    }
    rrpc__names_sort(names, n);
    free(w->services);
    free(w->services_buf);
    w->services = names;
    w->services_buf = buf;
    w->rules.services = names;
    w->rules.nservices = n;
    w->services_refused = 0;
}
