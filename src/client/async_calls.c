/* async_calls.c -- the async client's call records, their ids, and the one
 * way a call ends (async_calls.h).
 *
 * Each call is finished exactly once, through rrpc__acall_finish: by its
 * response, its timer, a refusal of its group by the broker, the loss of
 * the session, or close.
 */
#include "client/async_calls.h"

#include <event2/event.h>

#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#define SLOT_BITS    22 /* up to 4 Mi calls in flight */
#define SLOT_MASK    ((1u << SLOT_BITS) - 1)
#define GEN_MASK     0x7fffffffu /* ids stay below 2^53: exact in any JSON peer */
#define NO_SLOT      RRPC__ASYNC_NO_SLOT
#define KEEP_BUF_MAX 65536 /* larger buffers are not kept in the pool */

/* ---- records ----------------------------------------------------------- */

static void free_call(rrpc__acall *c)
{
    if (c->timer)
        event_free(c->timer);
    if (c->buf != c->inline_buf)
        free(c->buf);
    free(c);
}

void rrpc__acall_free_list(rrpc__acall *c)
{
    while (c) {
        rrpc__acall *next = c->next;
        free_call(c);
        c = next;
    }
}

static rrpc__acall *new_call(rrpc_async *a)
{
    rrpc__acall *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    c->owner = a;
    c->timer = NULL;
    c->buf = c->inline_buf;
    c->cap = sizeof c->inline_buf;
    c->hook_names = NULL;
    c->hooks_passed = 0;
    return c;
}

rrpc__acall *rrpc__acall_get(rrpc_async *a)
{
    rrpc__acall *c = NULL;
    if (rrpc__async_on_loop(a) && a->returned) {
        c = a->returned;
        a->returned = c->next;
    } else if (a->own_loop) {
        pthread_mutex_lock(&a->lock);
        c = a->free_calls;
        if (c)
            a->free_calls = c->next;
        pthread_mutex_unlock(&a->lock);
    }
    if (c == NULL)
        c = new_call(a);
    if (c) {
        c->next = NULL;
        c->id = 0;
        c->shard = -1;
        c->deadline_ms = 0;
        c->notify = c->in_outbox = c->done = 0;
    }
    return c;
}

void rrpc__acall_put(rrpc_async *a, rrpc__acall *c)
{
    free(c->hook_names);
    c->hook_names = NULL;
    c->hooks_passed = 0;
    if (c->cap > KEEP_BUF_MAX) {
        free(c->buf);
        c->buf = c->inline_buf;
        c->cap = sizeof c->inline_buf;
    }
    if (rrpc__async_on_loop(a)) {
        c->next = a->returned;
        if (a->returned == NULL)
            a->returned_tail = c;
        a->returned = c;
        return;
    }
    pthread_mutex_lock(&a->lock);
    c->next = a->free_calls;
    a->free_calls = c;
    pthread_mutex_unlock(&a->lock);
}

void rrpc__acall_give_back_locked(rrpc_async *a)
{
    if (a->returned == NULL)
        return;
    a->returned_tail->next = a->free_calls;
    a->free_calls = a->returned;
    a->returned = a->returned_tail = NULL;
}

void rrpc__acall_give_back(rrpc_async *a)
{
    if (!a->own_loop || a->returned == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    rrpc__acall_give_back_locked(a);
    pthread_mutex_unlock(&a->lock);
}

/* ---- the slot table ---------------------------------------------------- */

static int grow_slots(rrpc_async *a)
{
    if (a->nslots > SLOT_MASK)
        return RRPC_ESTATE;
    if (a->nslots == a->slots_cap) {
        uint32_t cap = a->slots_cap ? a->slots_cap * 2 : 1024;
        rrpc__aslot *s = realloc(a->slots, cap * sizeof *s);
        if (s == NULL)
            return RRPC_ENOMEM;
        a->slots = s;
        a->slots_cap = cap;
    }
    a->slots[a->nslots] = (rrpc__aslot){NULL, 1, NO_SLOT};
    a->free_slot = a->nslots++;
    return RRPC_OK;
}

int rrpc__acall_take_slot(rrpc_async *a, rrpc__acall *c)
{
    if (a->free_slot == NO_SLOT) {
        int rc = grow_slots(a);
        if (rc != RRPC_OK)
            return rrpc__async_error(
                a, rc, rc == RRPC_ESTATE ? "too many calls in flight" : "out of memory");
    }
    uint32_t i = a->free_slot;
    rrpc__aslot *s = &a->slots[i];
    a->free_slot = s->next_free;
    s->call = c;
    c->id = ((uint64_t)s->gen << SLOT_BITS) | i;
    return RRPC_OK;
}

void rrpc__acall_release_slot(rrpc_async *a, rrpc__acall *c)
{
    uint32_t i = (uint32_t)(c->id & SLOT_MASK);
    rrpc__aslot *s = &a->slots[i];
    s->call = NULL;
    s->gen = (s->gen + 1) & GEN_MASK;
    if (s->gen == 0)
        s->gen = 1; /* keeps every id nonzero: 0 means "no slot" */
    s->next_free = a->free_slot;
    a->free_slot = i;
    c->id = 0;
}

rrpc__acall *rrpc__acall_lookup(rrpc_async *a, json_int_t id)
{
    if (id <= 0)
        return NULL;
    uint64_t v = (uint64_t)id;
    uint32_t i = (uint32_t)(v & SLOT_MASK);
    if (i >= a->nslots || a->slots[i].call == NULL || a->slots[i].gen != (v >> SLOT_BITS))
        return NULL;
    return a->slots[i].call;
}

/* ---- ending calls ------------------------------------------------------ */

/* The record is recycled before the callback so that a callback starting
 * a new call can reuse it; a record still in the outbox is only marked,
 * and flush recycles it. */
void rrpc__acall_finish(rrpc_async *a, rrpc__acall *c, int status, json_t *result, json_t *error)
{
    rrpc_async_cb cb = c->cb;
    void *udata = c->udata;
    if (c->hook_names != NULL) /* before the record is reused, and before the callback */
        rrpc__call_hooks_after(&a->hooks, c->hooks_passed, c->hook_names,
                               c->hook_names + strlen(c->hook_names) + 1, status, result, error);
    if (c->id != 0)
        rrpc__acall_release_slot(a, c);
    if (c->timer)
        event_del(c->timer);
    if (atomic_fetch_sub(&a->in_flight, 1) == 1 && a->sweep_armed) {
        event_del(a->sweep_ev); /* nothing in flight to look over: an app's loop may end */
        a->sweep_armed = 0;
    }
    if (c->in_outbox)
        c->done = 1;
    else
        rrpc__acall_put(a, c);
    a->cb_depth++;
    cb(status, result, error, udata);
    a->cb_depth--;
}

void rrpc__acall_fail_all(rrpc_async *a, int status)
{
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s", rrpc__async_error_text());
    for (uint32_t i = 0; i < a->nslots; i++) {
        if (a->slots[i].call != NULL) {
            rrpc__async_error(a, status, "%s", msg);
            rrpc__acall_finish(a, a->slots[i].call, status, NULL, NULL);
        }
    }
}

void rrpc__acall_fail_unsubmitted(rrpc_async *a, rrpc__acall *c, int status)
{
    if (c->notify) {
        rrpc__acall_put(a, c);
        return;
    }
    rrpc__acall_finish(a, c, status, NULL, NULL);
}
