/* failfast.c -- the sync client's view of the registry: fail fast, shed load.
 *
 * A call to a service whose registered workers are all gone should fail at
 * once rather than sit out its timeout, and a call to a service whose queue
 * is at its max_queue should be refused.  Asking Redis before every call
 * would double the cost of a call, so the client keeps what it learnt about
 * each service for a second and asks again only when that is stale.  While
 * a call waits for a registered service it waits in one-second BLPOP
 * slices and looks again between them, so a caller already waiting also
 * learns that the last worker went.  Services that never registered (a
 * seed-style worker, say) are waited on in one piece, as before.  The keys
 * are those of docs/PROTOCOL.md section 9.
 *
 * The same cached view says over how many request lists a sharded service
 * is spread (shard.c), so the client can hand its calls to the shards in
 * turn at no extra cost.
 */
#define _POSIX_C_SOURCE 200809L
#include "redis/failfast.h"

#include "core/clock.h"
#include "core/internal.h"
#include "core/keys.h"
#include "core/priority.h"
#include "core/random.h"
#include "core/shard.h"
#include "redis/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRESH_S    1.0 /* how long a service's state is trusted */
#define SLICE_S    1.0 /* wait slice while a registered service is awaited */
#define CACHE_SIZE 16  /* services remembered per client */
#define MAX_WAIT_S 1e8 /* the longest BLPOP timeout sent (about three years) */

typedef struct entry {
    char *list;
    rrpc__registry_view view;
    double fetched; /* monotonic; 0 = never */
} entry;

struct rrpc__failfast {
    int enabled;
    unsigned next_shard; /* round-robin over shards, from a random start */
    entry cache[CACHE_SIZE];
};

rrpc__failfast *rrpc__failfast_new(int enabled)
{
    rrpc__failfast *ff = calloc(1, sizeof *ff);
    char hex[33];
    if (ff == NULL)
        return NULL;
    ff->enabled = enabled;
    /* A random start, so that many short-lived clients do not all begin
     * on shard 0. */
    if (rrpc__random_hex128(hex) == RRPC_OK) {
        hex[8] = '\0';
        ff->next_shard = (unsigned)strtoul(hex, NULL, 16);
    }
    return ff;
}

void rrpc__failfast_free(rrpc__failfast *ff)
{
    if (ff == NULL)
        return;
    for (size_t i = 0; i < CACHE_SIZE; i++)
        free(ff->cache[i].list);
    free(ff);
}

/* The cache entry of LIST, or the stalest one recycled for it. */
static entry *lookup(rrpc__failfast *ff, const char *list)
{
    entry *oldest = &ff->cache[0];
    for (size_t i = 0; i < CACHE_SIZE; i++) {
        entry *e = &ff->cache[i];
        if (e->list != NULL && strcmp(e->list, list) == 0)
            return e;
        if (e->list == NULL || e->fetched < oldest->fetched)
            oldest = e;
        if (e->list == NULL)
            break;
    }
    free(oldest->list);
    memset(oldest, 0, sizeof *oldest);
    oldest->list = strdup(list);
    return oldest->list ? oldest : NULL;
}

/* ---- reading the registry ---------------------------------------------- */

int rrpc__view_cmds_make(rrpc__view_cmds *k, const char *list)
{
    if (rrpc__tagged_key(k->workers, sizeof k->workers, list, RRPC__TAG_WORKERS) ||
        rrpc__tagged_key(k->config, sizeof k->config, list, RRPC__TAG_CONFIG))
        return RRPC_EINVAL;
    static const char *const parts[RRPC__VIEW_PARTS][5] = {
        {"TIME"},
        {"ZRANGE", NULL, "0", "-1", "WITHSCORES"},
        {"HGET", NULL, "max_queue"},
        {"EXISTS", NULL},
        {"HGET", NULL, "shards"},
    };
    static const int argc[RRPC__VIEW_PARTS] = {1, 5, 3, 2, 3};
    for (int i = 0; i < RRPC__VIEW_PARTS; i++) {
        k->argc[i] = argc[i];
        for (int j = 0; j < argc[i]; j++)
            k->argv[i][j] = parts[i][j];
    }
    k->argv[1][1] = k->workers;
    k->argv[2][1] = k->argv[3][1] = k->argv[4][1] = k->config;
    return RRPC_OK;
}

void rrpc__view_take(rrpc__view_read *rd, int part, const rrpc__reply *r)
{
    if (part < 0 || part >= RRPC__VIEW_PARTS)
        return;
    rd->got |= 1u << part;
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        rd->refused = 1;
        return;
    }
    switch (part) {
    case 0: rd->now_ms = rrpc__reply_time_ms(r); break;
    case 1: /* the workers' heartbeat deadlines (scores, Redis ms) */
        for (size_t i = 1; i < rrpc__reply_count(r); i += 2) {
            long long deadline = rrpc__reply_ll(rrpc__reply_element(r, i));
            if (deadline > rd->latest_ms)
                rd->latest_ms = deadline;
        }
        break;
    case 2: rd->max_queue = rrpc__reply_ll(r); break;
    case 3: rd->exists = rrpc__reply_integer(r); break;
    default: rd->shards = rrpc__reply_ll(r);
    }
}

int rrpc__view_complete(const rrpc__view_read *rd)
{
    return rd->got == (1u << RRPC__VIEW_PARTS) - 1;
}

void rrpc__view_result(const rrpc__view_read *rd, rrpc__registry_view *v)
{
    v->registered = !rd->refused && rd->exists > 0;
    v->live = !rd->refused && rd->latest_ms > rd->now_ms;
    v->max_queue = rd->refused ? 0 : (long)rd->max_queue;
    /* No field (an older server): the one list of before. */
    v->shards = v->registered ? rrpc__shard_count((long)rd->shards) : 1;
}

/* One round trip: Redis's clock, the heartbeat deadlines and the config. */
static int refresh(rrpc__conn *c, const char *list, entry *e)
{
    rrpc__view_cmds k;
    if (rrpc__view_cmds_make(&k, list) != RRPC_OK)
        return RRPC_EINVAL;
    int rc = RRPC_OK;
    for (int i = 0; i < RRPC__VIEW_PARTS && rc == RRPC_OK; i++)
        rc = rrpc__conn_append(c, k.argc[i], k.argv[i], NULL);
    rrpc__view_read rd = {0};
    for (int i = 0; i < RRPC__VIEW_PARTS && rc == RRPC_OK; i++) {
        rrpc__reply *r = NULL;
        rc = rrpc__conn_read(c, &r);
        if (rc == RRPC_OK)
            rrpc__view_take(&rd, i, r);
        rrpc__reply_free(r);
    }
    if (rc == RRPC_OK) {
        rrpc__view_result(&rd, &e->view);
        e->fetched = rrpc__monotonic();
    }
    return rc;
}

static int unavailable(const char *list, char *err, size_t errlen)
{
    return rrpc__fail(err, errlen, RRPC_EUNAVAILABLE, RRPC__UNAVAILABLE_FMT, list);
}

/* The cache entry of LIST, read again if stale.  NULL with *rc = RRPC_OK
 * when there is no memory for it (then behave as without a registry). */
static entry *fresh_entry(rrpc__failfast *ff, rrpc__conn *c, const char *list, int *rc)
{
    *rc = RRPC_OK;
    entry *e = lookup(ff, list);
    if (e != NULL && (e->fetched == 0 || rrpc__monotonic() - e->fetched > FRESH_S))
        *rc = refresh(c, list, e);
    return *rc == RRPC_OK ? e : NULL;
}

/* The shard the next push of a service with SHARDS lists goes to. */
static int next_shard(rrpc__failfast *ff, int shards)
{
    return shards > 1 ? (int)(ff->next_shard++ % (unsigned)shards) : 0;
}

int rrpc__failfast_check(rrpc__failfast *ff, rrpc__conn *c, const char *list, double timeout_s,
                         rrpc__svc_state *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    st->deadline = rrpc__monotonic() + timeout_s;
    if (ff == NULL || !ff->enabled)
        return RRPC_OK;
    int rc;
    entry *e = fresh_entry(ff, c, list, &rc);
    if (rc != RRPC_OK)
        return rrpc__fail(err, errlen, rc, "%s", rrpc__conn_errmsg(c));
    if (e == NULL)
        return RRPC_OK;
    st->registered = e->view.registered;
    st->live = e->view.live;
    st->max_queue = rrpc__view_max_queue(&e->view);
    if (rrpc__view_unavailable(&e->view))
        return unavailable(list, err, errlen);
    st->slice_s = st->registered ? SLICE_S : 0;
    st->shard = next_shard(ff, e->view.shards);
    return RRPC_OK;
}

int rrpc__failfast_shard(rrpc__failfast *ff, rrpc__conn *c, const char *list)
{
    if (ff == NULL || !ff->enabled)
        return 0;
    int rc;
    entry *e = fresh_entry(ff, c, list, &rc);
    return e != NULL ? next_shard(ff, e->view.shards) : 0; /* a broken link: the push says so */
}

int rrpc__failfast_append_push(rrpc__conn *c, const char *list, const char *text, int priority,
                               const rrpc__svc_state *st)
{
    if (st->max_queue <= 0 && priority == RRPC_PRIORITY_NORMAL)
        return rrpc__conn_appendv(c, 3, "RPUSH", list, text);
    /* The max_queue check and the choice of list in one step, so that
     * concurrent callers can neither overshoot the limit nor place a call
     * behind a backlog that is gone (core/priority.h). */
    char high[RRPC__KEY_MAX], low[RRPC__KEY_MAX], max[32];
    if (rrpc__priority_key(high, sizeof high, list, RRPC_PRIORITY_HIGH) != RRPC_OK ||
        rrpc__priority_key(low, sizeof low, list, RRPC_PRIORITY_LOW) != RRPC_OK)
        return RRPC_EINVAL;
    const char *name = rrpc__priority_name(priority);
    if (st->max_queue <= 0)
        return rrpc__conn_appendv(c, 8, "EVAL", rrpc__priority_push_script, "3", list, high, low,
                                  text, name);
    snprintf(max, sizeof max, "%ld", st->max_queue);
    const char *argv[] = {"EVAL", rrpc__max_queue_push_script, "3", list, high, low, text, max,
                          name};
    return rrpc__conn_append(c, priority == RRPC_PRIORITY_NORMAL ? 8 : 9, argv, NULL);
}

int rrpc__failfast_pushed(const rrpc__reply *r, const rrpc__svc_state *st, char *err, size_t errlen)
{
    if (st->max_queue > 0 && rrpc__reply_type(r) == RRPC__REPLY_INTEGER &&
        rrpc__reply_integer(r) < 0)
        return rrpc__fail(err, errlen, RRPC_EOVERLOADED,
                          "service overloaded: its queue holds %ld requests (max_queue)",
                          st->max_queue);
    return RRPC_OK;
}

int rrpc__failfast_next_wait(rrpc__svc_state *st, char *text, size_t len)
{
    double left = st->deadline - rrpc__monotonic();
    /* "!(left > 0)" also catches NaN.  Redis reads a BLPOP timeout of 0 as
     * "forever", so a wait is at least 1 ms, and at most MAX_WAIT_S, whose
     * text always fits (a huge one would be cut by snprintf into another
     * number). */
    if (!(left > 0))
        return 0;
    double wait = st->slice_s > 0 && st->slice_s < left ? st->slice_s : left;
    if (wait > MAX_WAIT_S)
        wait = MAX_WAIT_S;
    int n = snprintf(text, len, "%.3f", wait < 0.001 ? 0.001 : wait);
    return n > 0 && (size_t)n < len;
}

int rrpc__failfast_again(rrpc__failfast *ff, rrpc__conn *c, const char *list, rrpc__svc_state *st)
{
    if (st->slice_s <= 0 || rrpc__monotonic() >= st->deadline)
        return 0;
    entry *e = lookup(ff, list);
    if (e == NULL ||
        (rrpc__monotonic() - e->fetched > FRESH_S * 0.5 && refresh(c, list, e) != RRPC_OK))
        return 1; /* cannot tell: keep waiting, the timeout still bounds it */
    if (rrpc__view_unavailable(&e->view)) {
        st->unavailable = 1;
        return 0;
    }
    return 1;
}
