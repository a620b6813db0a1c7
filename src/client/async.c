/* async.c -- the multiplexed async client.
 *
 * The sync client spends a network round trip per call.  This one keeps
 * many calls in flight over two Redis connections: one pipelines RPUSHes of
 * requests, the other blocks in BLMPOP on the client's single reply list
 * (reply_to) and takes up to 512 responses per round trip.  Responses are
 * matched to calls by a compact integer id that doubles as an index into a
 * slot table: id = generation << 22 | slot, so a lookup is one array access
 * and a late response for a call that already timed out (its slot since
 * reused) is recognised by the generation and dropped.
 *
 * Everything that touches Redis, the slot table and the timers runs on one
 * libevent loop thread, either the application's or a background thread of
 * our own.  In the second mode other threads encode their request text
 * themselves (spreading the JSON work), then hand the record over through a
 * mutex-protected queue and wake the loop with an eventfd; the loop assigns
 * the id and appends it to the text, which is why the request puts "id"
 * last.  Requests for the same service queued in one loop iteration go out
 * as one multi-value RPUSH, which is most of the speed: Redis then pays one
 * command per batch, not per call.
 *
 * Each call is finished exactly once, through finish(): by its response,
 * its timer (which also withdraws the request with LREM), a Redis error on
 * its RPUSH, the loss of the link, or close.  Records are pooled, so a call
 * costs no allocation of ours in the steady state beyond the JSON values.
 */
#define _GNU_SOURCE /* eventfd */
#include "core/defaults.h"
#include "core/keys.h"
#include "core/internal.h"

#include "redis/async_cluster.h"
#include "core/clock.h"
#include "core/dispatch.h"
#include "core/log.h"
#include "core/opts.h"
#include "core/protocol.h"
#include "core/random.h"
#include "redis/conn.h"
#include "core/url.h"

#include <event2/event.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define SLOT_BITS           22 /* up to 4 Mi calls in flight */
#define SLOT_MASK           ((1u << SLOT_BITS) - 1)
#define GEN_MASK            0x7fffffffu /* ids stay below 2^53: exact in any JSON peer */
#define NO_SLOT             UINT32_MAX
#define INLINE_BUF          384   /* list key + request text of a typical call */
#define KEEP_BUF_MAX        65536 /* larger buffers are not kept in the pool */
#define ID_ROOM             24    /* the id's digits and the closing brace */
#define PUSH_GROUP_MAX      1024  /* values per RPUSH */
#define POP_COUNT           "512"
#define POP_BLOCK_S         "30" /* re-issued when idle; also keeps NATs awake */
#define BACKOFF_MIN_S       0.05
#define BACKOFF_MAX_S       5.0
#define COMMON_TIMEOUTS_MAX 8

typedef struct acall acall;

/* One call (or notification) from rrpc_async_call to its callback. */
struct acall {
    acall *next; /* in the submission queue or a free list */
    rrpc_async *owner;
    struct event *timer; /* created on the loop thread at first use, kept */
    rrpc_async_cb cb;
    void *udata;
    double timeout_s;
    uint64_t id;            /* 0 while it holds no slot */
    char *buf;              /* the list key, a NUL, then the request text */
    size_t cap;             /* of buf */
    size_t list_len;        /* the list key's length */
    size_t text_len;        /* the request text's length (from buf + list_len + 1) */
    unsigned notify : 1;    /* a notification: no id, no callback */
    unsigned in_outbox : 1; /* waiting for flush() to RPUSH it */
    unsigned done : 1;      /* finished while in the outbox: flush() recycles it */
    char inline_buf[INLINE_BUF];
};

typedef struct slot {
    acall *call; /* NULL when free */
    uint32_t gen;
    uint32_t next_free;
} slot;

/* The ids of one RPUSH, so that a Redis error fails exactly those calls. */
typedef struct push_batch {
    size_t n;
    uint64_t ids[];
} push_batch;

enum link_state { LINK_UP, LINK_CONNECTING, LINK_DOWN };

struct rrpc_async {
    /* Set at open, read-only afterwards. */
    rrpc__url url;
    char *prefix;
    char reply_key[RRPC__KEY_MAX];
    char *request_tail; /* ,"reply_to":"<reply key>","id": */
    size_t request_tail_len;
    double timeout_s, connect_timeout_s;
    rrpc__clock clock; /* the Redis clock, read at open, for call deadlines */
    size_t max_in_flight;
    int own_loop;
    struct event_base *base;

    /* Shared with the application's threads (own_loop mode). */
    pthread_mutex_t lock; /* queue, free_calls, wake_pending */
    acall *queue_head, *queue_tail;
    acall *free_calls;
    int wake_pending;
    atomic_int closing;
    atomic_int link_up;
    atomic_size_t in_flight;
    int wake_fd;
    pthread_t thread;

    /* The loop thread's. */
    struct event *wake_ev, *flush_ev, *teardown_ev, *reconnect_ev;
    slot *slots;
    uint32_t nslots, slots_cap, free_slot;
    acall **outbox, **outbox_spare;
    size_t nout, outbox_cap, spare_cap;
    int flush_scheduled;
    acall *returned; /* recycled on the loop thread, handed back in bulk */
    acall *returned_tail;
    struct {
        double s;
        const struct timeval *tv;
    } common[COMMON_TIMEOUTS_MAX];
    int ncommon;
    rrpc__aconn *push, *pop;
    int ready_links;
    enum link_state state;
    int outage_logged;
    double backoff_s;
    uint64_t rng;
    const char **argv; /* scratch for multi-value RPUSH */
    size_t *lens;
    int shutting_down;
    int cb_depth; /* > 0 while a user callback runs */
};

/* The loop thread of an own-loop client marks itself, so that calls made
 * from its callbacks skip the queue. */
static _Thread_local rrpc_async *tls_loop;

/* Error messages are per thread: several threads call into one client. */
static _Thread_local struct {
    const rrpc_async *owner;
    char text[RRPC__ERRMSG_LEN];
} tls_err;

static int set_error(const rrpc_async *a, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_error(const rrpc_async *a, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err.text, sizeof tls_err.text, fmt, ap);
    va_end(ap);
    tls_err.owner = a;
    return err;
}

static void log_line(rrpc_log_level level, const char *what, const char *detail)
{
    rrpc__log(level, NULL, "async", what, detail);
}

static int on_loop_thread(const rrpc_async *a)
{
    return !a->own_loop || tls_loop == a;
}

/* ---- call records ----------------------------------------------------- */

static void free_call(acall *c)
{
    if (c->timer)
        event_free(c->timer);
    if (c->buf != c->inline_buf)
        free(c->buf);
    free(c);
}

static void free_call_list(acall *c)
{
    while (c) {
        acall *next = c->next;
        free_call(c);
        c = next;
    }
}

static acall *new_call(rrpc_async *a)
{
    acall *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    c->owner = a;
    c->timer = NULL;
    c->buf = c->inline_buf;
    c->cap = sizeof c->inline_buf;
    return c;
}

/* A record from the pools, or a new one. */
static acall *get_call(rrpc_async *a)
{
    acall *c = NULL;
    if (on_loop_thread(a) && a->returned) {
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
        c->notify = c->in_outbox = c->done = 0;
    }
    return c;
}

/* Returns a record to a pool: the loop thread's own list, handed back to
 * the other threads in bulk by give_back(); or the shared list. */
static void put_call(rrpc_async *a, acall *c)
{
    if (c->cap > KEEP_BUF_MAX) {
        free(c->buf);
        c->buf = c->inline_buf;
        c->cap = sizeof c->inline_buf;
    }
    if (on_loop_thread(a)) {
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

/* Moves the loop thread's recycled records where callers can take them.
 * The caller holds a->lock. */
static void give_back_locked(rrpc_async *a)
{
    if (a->returned == NULL)
        return;
    a->returned_tail->next = a->free_calls;
    a->free_calls = a->returned;
    a->returned = a->returned_tail = NULL;
}

static void give_back(rrpc_async *a)
{
    if (!a->own_loop || a->returned == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    give_back_locked(a);
    pthread_mutex_unlock(&a->lock);
}

/* ---- request text ------------------------------------------------------ */

static int reserve(acall *c, size_t used, size_t more)
{
    if (used + more <= c->cap)
        return RRPC_OK;
    size_t cap = c->cap * 2 > used + more ? c->cap * 2 : used + more;
    char *buf = malloc(cap);
    if (buf == NULL)
        return RRPC_ENOMEM;
    memcpy(buf, c->buf, used);
    if (c->buf != c->inline_buf)
        free(c->buf);
    c->buf = buf;
    c->cap = cap;
    return RRPC_OK;
}

static int append(acall *c, size_t *used, const char *s, size_t n)
{
    if (reserve(c, *used, n) != RRPC_OK)
        return RRPC_ENOMEM;
    memcpy(c->buf + *used, s, n);
    *used += n;
    return RRPC_OK;
}

/* A method name as a JSON string.  Plain ASCII names (nearly all) are
 * copied; anything else goes through jansson, which escapes and rejects
 * invalid UTF-8. */
static int append_method(rrpc_async *a, acall *c, size_t *used, const char *method)
{
    size_t n = strlen(method);
    int plain = 1;
    for (size_t i = 0; i < n && plain; i++) {
        unsigned char ch = (unsigned char)method[i];
        plain = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
    }
    if (plain)
        return append(c, used, "\"", 1) || append(c, used, method, n) || append(c, used, "\"", 1)
                   ? RRPC_ENOMEM
                   : RRPC_OK;
    json_t *s = json_string(method);
    char *text = s ? json_dumps(s, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(s);
    if (text == NULL)
        return set_error(a, RRPC_EINVAL, "method name is not valid UTF-8");
    int rc = append(c, used, text, strlen(text));
    free(text);
    return rc;
}

/* Encodes params straight into the record's buffer. */
static int append_params(acall *c, size_t *used, const json_t *params)
{
    size_t room = c->cap - *used;
    size_t n = json_dumpb(params, c->buf + *used, room, RRPC__JSON_ENCODE_FLAGS);
    if (n == 0)
        return RRPC_EINVAL;
    if (n > room) {
        if (reserve(c, *used, n) != RRPC_OK)
            return RRPC_ENOMEM;
        n = json_dumpb(params, c->buf + *used, n, RRPC__JSON_ENCODE_FLAGS);
    }
    *used += n;
    return RRPC_OK;
}

/* Fills C's buffer: the list key, then the request text up to and
 * including "id": (calls; the loop appends the id) or the whole
 * notification.  Runs on the calling thread. */
static int build_request(rrpc_async *a, acall *c, const char *service, const char *method,
                         const json_t *params)
{
    size_t used = 0;
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"method\":";
    static const char params_member[] = ",\"params\":";
    int rc = append(c, &used, a->prefix, strlen(a->prefix));
    if (rc == RRPC_OK)
        rc = append(c, &used, service, strlen(service) + 1);
    if (rc != RRPC_OK)
        return set_error(a, rc, "out of memory");
    if (used > RRPC__KEY_MAX)
        return set_error(a, RRPC_EINVAL, "service name too long");
    c->list_len = used - 1;
    rc = append(c, &used, head, sizeof head - 1);
    if (rc == RRPC_OK)
        rc = append_method(a, c, &used, method);
    if (rc == RRPC_OK && params != NULL) {
        rc = append(c, &used, params_member, sizeof params_member - 1);
        if (rc == RRPC_OK)
            rc = append_params(c, &used, params);
        if (rc == RRPC_EINVAL)
            return set_error(a, rc, "params cannot be encoded as JSON");
    }
    if (rc == RRPC_OK && !c->notify && a->clock.measured_at > 0) {
        char deadline[48];
        int n =
            snprintf(deadline, sizeof deadline, ",\"deadline\":%lld",
                     rrpc__clock_redis_ms(&a->clock) + (long long)(c->timeout_s * 1000.0 + 0.999));
        rc = append(c, &used, deadline, (size_t)n);
    }
    if (rc == RRPC_OK)
        rc = c->notify ? append(c, &used, "}", 1)
                       : append(c, &used, a->request_tail, a->request_tail_len);
    if (rc == RRPC_OK && !c->notify)
        rc = reserve(c, used, ID_ROOM);
    if (rc != RRPC_OK)
        return rc == RRPC_ENOMEM ? set_error(a, rc, "out of memory") : rc;
    c->text_len = used - c->list_len - 1;
    return RRPC_OK;
}

static char *text_of(const acall *c)
{
    return c->buf + c->list_len + 1;
}

static size_t u64_text(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* ---- the slot table (loop thread) -------------------------------------- */

static int grow_slots(rrpc_async *a)
{
    if (a->nslots > SLOT_MASK)
        return RRPC_ESTATE;
    if (a->nslots == a->slots_cap) {
        uint32_t cap = a->slots_cap ? a->slots_cap * 2 : 1024;
        slot *s = realloc(a->slots, cap * sizeof *s);
        if (s == NULL)
            return RRPC_ENOMEM;
        a->slots = s;
        a->slots_cap = cap;
    }
    a->slots[a->nslots] = (slot){NULL, 1, NO_SLOT};
    a->free_slot = a->nslots++;
    return RRPC_OK;
}

static int take_slot(rrpc_async *a, acall *c)
{
    if (a->free_slot == NO_SLOT) {
        int rc = grow_slots(a);
        if (rc != RRPC_OK)
            return set_error(a, rc,
                             rc == RRPC_ESTATE ? "too many calls in flight" : "out of memory");
    }
    uint32_t i = a->free_slot;
    slot *s = &a->slots[i];
    a->free_slot = s->next_free;
    s->call = c;
    c->id = ((uint64_t)s->gen << SLOT_BITS) | i;
    return RRPC_OK;
}

static void release_slot(rrpc_async *a, acall *c)
{
    uint32_t i = (uint32_t)(c->id & SLOT_MASK);
    slot *s = &a->slots[i];
    s->call = NULL;
    s->gen = (s->gen + 1) & GEN_MASK;
    if (s->gen == 0)
        s->gen = 1; /* keeps every id nonzero: 0 means "no slot" */
    s->next_free = a->free_slot;
    a->free_slot = i;
    c->id = 0;
}

static acall *lookup(rrpc_async *a, json_int_t id)
{
    if (id <= 0)
        return NULL;
    uint64_t v = (uint64_t)id;
    uint32_t i = (uint32_t)(v & SLOT_MASK);
    if (i >= a->nslots || a->slots[i].call == NULL || a->slots[i].gen != (v >> SLOT_BITS))
        return NULL;
    return a->slots[i].call;
}

/* ---- finishing calls (loop thread) ------------------------------------- */

/* The one way a call ends: frees its slot and timer, then runs its
 * callback.  The record is recycled before the callback so that a callback
 * starting a new call can reuse it; a record still in the outbox is only
 * marked, and flush() recycles it.  The caller has set the error message. */
static void finish(rrpc_async *a, acall *c, int status, json_t *result, json_t *error)
{
    rrpc_async_cb cb = c->cb;
    void *udata = c->udata;
    if (c->id != 0)
        release_slot(a, c);
    if (c->timer)
        event_del(c->timer);
    atomic_fetch_sub(&a->in_flight, 1);
    if (c->in_outbox)
        c->done = 1;
    else
        put_call(a, c);
    a->cb_depth++;
    cb(status, result, error, udata);
    a->cb_depth--;
}

/* Ends every call that holds a slot with STATUS (message already set). */
static void fail_all(rrpc_async *a, int status)
{
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s", tls_err.text);
    for (uint32_t i = 0; i < a->nslots; i++) {
        if (a->slots[i].call != NULL) {
            set_error(a, status, "%s", msg);
            finish(a, a->slots[i].call, status, NULL, NULL);
        }
    }
}

/* ---- timers ------------------------------------------------------------ */

static struct timeval to_timeval(double s)
{
    struct timeval tv;
    s = rrpc__timeout_or(s, 0); /* NaN or huge: no undefined conversion */
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* Calls with equal timeouts (the usual case) share a libevent "common
 * timeout": a FIFO instead of the heap, so adding and removing is O(1). */
static const struct timeval *timeout_tv(rrpc_async *a, double s, struct timeval *tmp)
{
    for (int i = 0; i < a->ncommon; i++)
        if (a->common[i].s == s)
            return a->common[i].tv;
    *tmp = to_timeval(s);
    if (a->ncommon < COMMON_TIMEOUTS_MAX) {
        const struct timeval *tv = event_base_init_common_timeout(a->base, tmp);
        if (tv != NULL) {
            a->common[a->ncommon].s = s;
            a->common[a->ncommon++].tv = tv;
            return tv;
        }
    }
    return tmp;
}

/* Removes the request from the service list if no worker has taken it, so
 * it does not run after its caller gave up.  Fire and forget. */
static void withdraw(rrpc_async *a, acall *c)
{
    const char *argv[] = {"LREM", c->buf, "1", text_of(c)};
    size_t lens[] = {4, c->list_len, 1, c->text_len};
    if (a->state == LINK_UP)
        rrpc__aconn_command(a->push, 4, argv, lens, NULL);
}

static void on_call_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    acall *c = arg;
    rrpc_async *a = c->owner;
    if (!c->in_outbox)
        withdraw(a, c);
    set_error(a, RRPC_ETIMEDOUT, "no reply from '%s' within %.3f s", c->buf, c->timeout_s);
    finish(a, c, RRPC_ETIMEDOUT, NULL, NULL);
}

/* ---- sending (loop thread) --------------------------------------------- */

static int outbox_add(rrpc_async *a, acall *c)
{
    if (a->nout == a->outbox_cap) {
        size_t cap = a->outbox_cap ? a->outbox_cap * 2 : 256;
        acall **box = realloc(a->outbox, cap * sizeof *box);
        if (box == NULL)
            return set_error(a, RRPC_ENOMEM, "out of memory");
        a->outbox = box;
        a->outbox_cap = cap;
    }
    a->outbox[a->nout++] = c;
    c->in_outbox = 1;
    if (!a->flush_scheduled) {
        a->flush_scheduled = 1;
        event_active(a->flush_ev, EV_TIMEOUT, 0);
    }
    return RRPC_OK;
}

/* Gives C its id and timer and queues it for the next flush.  Never runs
 * a callback: rrpc_async_call relies on that. */
static int submit(rrpc_async *a, acall *c)
{
    if (c->notify)
        return outbox_add(a, c);
    int rc = take_slot(a, c);
    if (rc != RRPC_OK)
        return rc;
    char *end = text_of(c) + c->text_len;
    size_t n = u64_text(end, c->id);
    end[n] = '}';
    c->text_len += n + 1;
    if (c->timer == NULL)
        c->timer = evtimer_new(a->base, on_call_timeout, c);
    struct timeval tmp;
    if (c->timer == NULL || evtimer_add(c->timer, timeout_tv(a, c->timeout_s, &tmp)) != 0)
        rc = set_error(a, RRPC_ENOMEM, "cannot start a timer");
    if (rc == RRPC_OK)
        rc = outbox_add(a, c);
    if (rc != RRPC_OK) {
        if (c->timer)
            event_del(c->timer);
        release_slot(a, c);
    }
    return rc;
}

/* A record that failed before it was submitted: the callback still runs
 * (this is the loop thread, after rrpc_async_call returned RRPC_OK). */
static void fail_unsubmitted(rrpc_async *a, acall *c, int status)
{
    if (c->notify) {
        put_call(a, c);
        return;
    }
    finish(a, c, status, NULL, NULL);
}

static int same_list(const acall *x, const acall *y)
{
    return x->list_len == y->list_len && memcmp(x->buf, y->buf, x->list_len) == 0;
}

/* Sends BOX[0..n) -- all live, all for one list -- as one RPUSH. */
static void push_group(rrpc_async *a, acall **box, size_t n)
{
    push_batch *b = malloc(sizeof *b + n * sizeof b->ids[0]);
    a->argv[0] = "RPUSH";
    a->lens[0] = 5;
    a->argv[1] = box[0]->buf;
    a->lens[1] = box[0]->list_len;
    for (size_t i = 0; i < n; i++) {
        a->argv[i + 2] = text_of(box[i]);
        a->lens[i + 2] = box[i]->text_len;
        if (b)
            b->ids[i] = box[i]->id;
    }
    if (b)
        b->n = n;
    int rc = RRPC_ECONNECT;
    if (b == NULL)
        rc = set_error(a, RRPC_ENOMEM, "out of memory");
    else if (a->state == LINK_UP)
        rc = rrpc__aconn_command(a->push, (int)n + 2, a->argv, a->lens, b);
    if (rc == RRPC_ECONNECT)
        set_error(a, rc, "not connected to Redis");
    if (rc != RRPC_OK)
        free(b);
    char msg[RRPC__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s", tls_err.text);
    for (size_t i = 0; i < n; i++) {
        acall *c = box[i];
        c->in_outbox = 0;
        if (c->notify)
            put_call(a, c); /* the text is in hiredis' buffer now */
        else if (rc != RRPC_OK && !c->done) {
            set_error(a, rc, "%s", msg);
            finish(a, c, rc, NULL, NULL);
        }
    }
}

/* Sends everything queued in this loop iteration, one RPUSH per run of
 * requests for the same list.  Callbacks run here (on failures) may queue
 * more; they go to the other outbox and the next flush. */
static void flush(rrpc_async *a)
{
    a->flush_scheduled = 0;
    acall **box = a->outbox;
    size_t n = a->nout, cap = a->outbox_cap;
    a->outbox = a->outbox_spare;
    a->outbox_cap = a->spare_cap;
    a->nout = 0;
    size_t i = 0;
    while (i < n) {
        size_t start = i, live = 0;
        /* Compact the run's live records to the front of box[start..]. */
        while (i < n && live < PUSH_GROUP_MAX && (live == 0 || same_list(box[start], box[i]))) {
            acall *c = box[i++];
            if (c->done) {
                c->in_outbox = c->done = 0;
                put_call(a, c);
            } else {
                box[start + live++] = c;
            }
        }
        if (live > 0)
            push_group(a, box + start, live);
    }
    a->outbox_spare = box;
    a->spare_cap = cap;
    give_back(a);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

/* ---- receiving (loop thread) ------------------------------------------- */

/* Matches one response text to its call and finishes it.  A response
 * nobody waits for (timed out, or from before a reconnect) is dropped. */
static void deliver(rrpc_async *a, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *resp = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, &jerr);
    json_t *id = json_object_get(resp, "id");
    acall *c = json_is_integer(id) ? lookup(a, json_integer_value(id)) : NULL;
    if (c == NULL) {
        json_decref(resp);
        return;
    }
    json_t *error = json_object_get(resp, "error");
    json_t *result = json_object_get(resp, "result");
    if (json_is_object(error)) {
        const char *m = json_string_value(json_object_get(error, "message"));
        set_error(a, RRPC_EREMOTE, "remote error %" JSON_INTEGER_FORMAT ": %s",
                  json_integer_value(json_object_get(error, "code")), m ? m : "(no message)");
        finish(a, c, RRPC_EREMOTE, NULL, error);
    } else if (result != NULL) {
        finish(a, c, RRPC_OK, result, NULL);
    } else {
        set_error(a, RRPC_EPROTO, "response has neither result nor error");
        finish(a, c, RRPC_EPROTO, NULL, NULL);
    }
    json_decref(resp);
}

static void link_lost(rrpc_async *a, int status, const char *msg);

static int issue_pop(rrpc_async *a)
{
    const char *argv[] = {"BLMPOP", POP_BLOCK_S, "1", a->reply_key, "LEFT", "COUNT", POP_COUNT};
    return rrpc__aconn_command(a->pop, 7, argv, NULL, NULL);
}

/* BLMPOP answers nil (nothing within the block time) or
 * [key, [response, ...]].  The next BLMPOP goes out first so that Redis
 * collects responses while these are handled. */
static void on_pop_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    (void)privdata;
    rrpc_async *a = udata;
    if (r == NULL || a->shutting_down)
        return; /* the link is going away; link_lost handles the calls */
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "BLMPOP failed: %s", rrpc__reply_str(r, NULL));
        link_lost(a, RRPC_EREDIS, msg);
        return;
    }
    issue_pop(a);
    if (rrpc__reply_type(r) != RRPC__REPLY_ARRAY || rrpc__reply_count(r) != 2)
        return;
    const rrpc__reply *values = rrpc__reply_element(r, 1);
    size_t n = rrpc__reply_count(values);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *text = rrpc__reply_str(rrpc__reply_element(values, i), &len);
        if (text != NULL)
            deliver(a, text, len);
    }
    give_back(a);
}

/* Answers to RPUSH (privdata: its batch) and LREM (no privdata). */
static void on_push_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    rrpc_async *a = udata;
    push_batch *b = privdata;
    if (b == NULL)
        return;
    if (r != NULL && rrpc__reply_type(r) == RRPC__REPLY_ERROR && !a->shutting_down) {
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "Redis refused the request: %s", rrpc__reply_str(r, NULL));
        for (size_t i = 0; i < b->n; i++) {
            acall *c = lookup(a, (json_int_t)b->ids[i]);
            if (c != NULL) {
                set_error(a, RRPC_EREDIS, "%s", msg);
                finish(a, c, RRPC_EREDIS, NULL, NULL);
            }
        }
    }
    free(b);
}

/* ---- the links (loop thread) ------------------------------------------- */

static void close_links(rrpc_async *a)
{
    rrpc__aconn *push = a->push, *pop = a->pop;
    a->push = a->pop = NULL;
    rrpc__aconn_close(push);
    rrpc__aconn_close(pop);
}

static void on_link_event(int status, const char *msg, void *udata);

static int open_links(rrpc_async *a, char *err, size_t errlen)
{
    a->ready_links = 0;
    int rc = rrpc__aconn_open(&a->push, a->base, &a->url, a->connect_timeout_s, on_push_reply,
                              on_link_event, a, err, errlen);
    if (rc == RRPC_OK)
        rc = rrpc__aconn_open(&a->pop, a->base, &a->url, a->connect_timeout_s, on_pop_reply,
                              on_link_event, a, err, errlen);
    if (rc == RRPC_OK && issue_pop(a) != RRPC_OK)
        rc = rrpc__fail(err, errlen, RRPC_ECONNECT, "cannot queue BLMPOP");
    if (rc != RRPC_OK)
        close_links(a);
    return rc;
}

static double jitter(rrpc_async *a)
{
    a->rng ^= a->rng << 13; /* xorshift64: spreads a herd of reconnecting clients */
    a->rng ^= a->rng >> 7;
    a->rng ^= a->rng << 17;
    return 0.5 + (double)(a->rng % 1000) / 1000.0;
}

/* The link broke: fail what is in flight, refuse new calls until it is
 * back, close the remains from a fresh loop callback (not from inside
 * hiredis), and try again after a backoff. */
static void link_lost(rrpc_async *a, int status, const char *msg)
{
    (void)status;
    if (a->state == LINK_DOWN || a->shutting_down)
        return;
    a->state = LINK_DOWN;
    atomic_store(&a->link_up, 0);
    if (!a->outage_logged) {
        log_line(RRPC_LOG_WARN, "lost the Redis connection, reconnecting", msg);
        a->outage_logged = 1;
    }
    event_active(a->teardown_ev, EV_TIMEOUT, 0);
    struct timeval tv = to_timeval(a->backoff_s * jitter(a));
    evtimer_add(a->reconnect_ev, &tv);
    a->backoff_s = a->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : a->backoff_s * 2;
    set_error(a, RRPC_ECONNECT, "Redis link lost: %s", msg);
    fail_all(a, RRPC_ECONNECT);
    give_back(a);
}

static void on_link_event(int status, const char *msg, void *udata)
{
    rrpc_async *a = udata;
    if (status != RRPC_OK) {
        link_lost(a, status, msg);
        return;
    }
    if (++a->ready_links < 2 || a->state == LINK_DOWN)
        return;
    a->backoff_s = BACKOFF_MIN_S;
    if (a->state == LINK_CONNECTING) {
        a->state = LINK_UP;
        atomic_store(&a->link_up, 1);
    }
    if (a->outage_logged) {
        log_line(RRPC_LOG_INFO, "reconnected", NULL);
        a->outage_logged = 0;
    }
}

static void on_teardown(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    close_links(arg);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc_async *a = arg;
    char err[RRPC__ERRMSG_LEN];
    close_links(a);
    a->state = LINK_CONNECTING;
    if (open_links(a, err, sizeof err) != RRPC_OK)
        link_lost(a, RRPC_ECONNECT, err);
}

/* ---- the background loop ----------------------------------------------- */

/* Cancels everything on the loop thread: pending callbacks run with
 * RRPC_ECANCELED, links close, the client's events leave the loop. */
static void shutdown_on_loop(rrpc_async *a, acall *queued)
{
    a->shutting_down = 1;
    a->state = LINK_DOWN;
    atomic_store(&a->link_up, 0);
    close_links(a);
    set_error(a, RRPC_ECANCELED, "the client was closed");
    fail_all(a, RRPC_ECANCELED);
    while (queued) {
        acall *next = queued->next;
        set_error(a, RRPC_ECANCELED, "the client was closed");
        fail_unsubmitted(a, queued, RRPC_ECANCELED);
        queued = next;
    }
    for (size_t i = 0; i < a->nout; i++) {
        a->outbox[i]->in_outbox = a->outbox[i]->done = 0;
        put_call(a, a->outbox[i]); /* notifications, and calls finished above */
    }
    a->nout = 0;
    event_del(a->flush_ev);
    event_del(a->teardown_ev);
    event_del(a->reconnect_ev);
    if (a->wake_ev)
        event_del(a->wake_ev);
}

/* The application's threads queued records: submit them and send. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    rrpc_async *a = arg;
    uint64_t count;
    if (read(fd, &count, sizeof count) < 0) {
        /* EAGAIN: a spurious wake; the queue is checked anyway. */
    }
    pthread_mutex_lock(&a->lock);
    acall *q = a->queue_head;
    a->queue_head = a->queue_tail = NULL;
    a->wake_pending = 0;
    int closing = atomic_load(&a->closing);
    give_back_locked(a);
    pthread_mutex_unlock(&a->lock);
    if (closing) {
        shutdown_on_loop(a, q);
        event_base_loopbreak(a->base);
        return;
    }
    while (q) {
        acall *c = q;
        q = q->next;
        int rc = atomic_load(&a->link_up) ? submit(a, c)
                                          : set_error(a, RRPC_ECONNECT, "not connected to Redis");
        if (rc != RRPC_OK)
            fail_unsubmitted(a, c, rc);
    }
    flush(a);
}

static void *loop_main(void *arg)
{
    rrpc_async *a = arg;
    tls_loop = a;
    event_base_dispatch(a->base);
    return NULL;
}

static int start_thread(rrpc_async *a, char *errmsg, size_t errmsg_len)
{
    a->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->wake_fd < 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ESYS, "eventfd failed");
    a->wake_ev = event_new(a->base, a->wake_fd, EV_READ | EV_PERSIST, on_wake, a);
    if (a->wake_ev == NULL || event_add(a->wake_ev, NULL) != 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "cannot create the wake event");
    /* The loop thread takes no signals: SIGPIPE on a dead socket must not
     * kill the process, and the application's handlers belong elsewhere. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&a->thread, NULL, loop_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ESYS, "cannot start the loop thread");
    return RRPC_OK;
}

static void wake(rrpc_async *a)
{
    uint64_t one = 1;
    if (write(a->wake_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, so the loop is awake anyway. */
    }
}

/* ---- opening and closing ----------------------------------------------- */

void rrpc_async_options_init_sized(rrpc_async_options *opts, size_t size)
{
    rrpc_async_options d = {.size = sizeof d,
                            .timeout_s = RRPC__DEFAULT_CALL_TIMEOUT_S,
                            .connect_timeout_s = RRPC__DEFAULT_CONNECT_TIMEOUT_S};
    rrpc__opts_init(opts, size, &d, sizeof d);
}

/* Checks, with a short-lived sync connection, what the async links cannot
 * report to open(): Redis is there, takes the credentials, has LMPOP.  It
 * also reads the Redis clock once, for the deadlines of calls. */
static int probe(rrpc_async *a, char *errmsg, size_t errmsg_len)
{
    rrpc__conn *conn = NULL;
    int rc = rrpc__conn_open(&conn, &a->url, a->connect_timeout_s, errmsg, errmsg_len);
    if (rc != RRPC_OK)
        return rc;
    rrpc__reply *r = NULL;
    rc = rrpc__conn_appendv(conn, 6, "LMPOP", "1", a->reply_key, "LEFT", "COUNT", "1");
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(conn, &r);
    if (rc != RRPC_OK)
        rrpc__fail(errmsg, errmsg_len, rc, "%s", rrpc__conn_errmsg(conn));
    else if (rrpc__reply_type(r) == RRPC__REPLY_ERROR)
        rc = rrpc__fail(errmsg, errmsg_len, RRPC_EREDIS,
                        "the async client needs Redis 7 or later (LMPOP/BLMPOP): %s",
                        rrpc__reply_str(r, NULL));
    rrpc__reply_free(r);
    if (rc == RRPC_OK)
        rrpc__clock_sync(&a->clock, conn); /* refused TIME: calls carry no deadline */
    rrpc__conn_close(conn);
    return rc;
}

/* ,"reply_to":<key as JSON>,"id": -- the same for every call. */
static int make_request_tail(rrpc_async *a)
{
    json_t *key = json_string(a->reply_key);
    char *quoted = key ? json_dumps(key, RRPC__JSON_ENCODE_FLAGS) : NULL;
    json_decref(key);
    if (quoted == NULL)
        return RRPC_EINVAL;
    size_t n = strlen(quoted) + 32;
    a->request_tail = malloc(n);
    if (a->request_tail)
        snprintf(a->request_tail, n, ",\"reply_to\":%s,\"id\":", quoted);
    free(quoted);
    if (a->request_tail == NULL)
        return RRPC_ENOMEM;
    a->request_tail_len = strlen(a->request_tail);
    return RRPC_OK;
}

static int init_config(rrpc_async *a, const rrpc_async_options *opts, char *errmsg,
                       size_t errmsg_len)
{
    a->timeout_s = rrpc__timeout_or(opts->timeout_s, 30);
    a->connect_timeout_s =
        rrpc__timeout_or(opts->connect_timeout_s, RRPC__DEFAULT_CONNECT_TIMEOUT_S);
    a->max_in_flight = opts->max_in_flight;
    a->own_loop = opts->event_base == NULL;
    a->free_slot = NO_SLOT;
    a->backoff_s = BACKOFF_MIN_S;
    a->wake_fd = -1;
    a->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    if (a->prefix == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    int rc = rrpc__url_parse(&a->url, opts->url, errmsg, errmsg_len);
    if (rc != RRPC_OK)
        return rc;
    if (rrpc__new_reply_key(a->reply_key, sizeof a->reply_key, a->prefix) != RRPC_OK)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ESYS, "cannot make a reply key");
    memcpy(&a->rng, a->reply_key + strlen(a->reply_key) - 8, sizeof a->rng);
    a->rng |= 1;
    if (make_request_tail(a) != RRPC_OK)
        return rrpc__fail(errmsg, errmsg_len, RRPC_EINVAL, "key_prefix is not valid UTF-8");
    a->argv = malloc((PUSH_GROUP_MAX + 2) * sizeof *a->argv);
    a->lens = malloc((PUSH_GROUP_MAX + 2) * sizeof *a->lens);
    if (a->argv == NULL || a->lens == NULL || pthread_mutex_init(&a->lock, NULL) != 0)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    return RRPC_OK;
}

static int init_loop(rrpc_async *a, void *app_base, char *errmsg, size_t errmsg_len)
{
    a->base = app_base ? app_base : event_base_new();
    if (a->base == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "cannot create an event base");
    a->flush_ev = event_new(a->base, -1, 0, on_flush, a);
    a->teardown_ev = event_new(a->base, -1, 0, on_teardown, a);
    a->reconnect_ev = evtimer_new(a->base, on_reconnect, a);
    if (a->flush_ev == NULL || a->teardown_ev == NULL || a->reconnect_ev == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "cannot create events");
    return RRPC_OK;
}

/* Frees what close or a failed open leaves; the loop no longer runs. */
static void free_client(rrpc_async *a)
{
    close_links(a);
    free_call_list(a->returned);
    free_call_list(a->free_calls);
    free_call_list(a->queue_head);
    if (a->flush_ev)
        event_free(a->flush_ev);
    if (a->teardown_ev)
        event_free(a->teardown_ev);
    if (a->reconnect_ev)
        event_free(a->reconnect_ev);
    if (a->wake_ev)
        event_free(a->wake_ev);
    if (a->own_loop && a->base)
        event_base_free(a->base);
    if (a->wake_fd >= 0)
        close(a->wake_fd);
    free(a->slots);
    free(a->outbox);
    free(a->outbox_spare);
    free(a->argv);
    free(a->lens);
    free(a->request_tail);
    free(a->prefix);
    rrpc__url_free(&a->url);
    if (a->argv)
        pthread_mutex_destroy(&a->lock);
    free(a);
}

int rrpc_async_open(rrpc_async **out, const rrpc_async_options *opts, char *errmsg,
                    size_t errmsg_len)
{
    rrpc_async_options own; /* the caller's options, as long as this library's */
    if (out == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    rrpc_async_options_init(&own);
    if (opts && rrpc__opts_load(&own, sizeof own, opts, errmsg, errmsg_len) != RRPC_OK)
        return RRPC_EINVAL;
    opts = &own;
    rrpc_async *a = calloc(1, sizeof *a);
    if (a == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    int rc = init_config(a, opts, errmsg, errmsg_len);
    if (rc == RRPC_OK)
        rc = probe(a, errmsg, errmsg_len);
    if (rc == RRPC_OK)
        rc = init_loop(a, opts->event_base, errmsg, errmsg_len);
    if (rc == RRPC_OK) {
        /* Calls made before the handshake finishes queue behind it. */
        a->state = LINK_UP;
        atomic_store(&a->link_up, 1);
        rc = open_links(a, errmsg, errmsg_len);
    }
    if (rc == RRPC_OK && a->own_loop)
        rc = start_thread(a, errmsg, errmsg_len);
    if (rc != RRPC_OK) {
        free_client(a);
        return rc;
    }
    *out = a;
    return RRPC_OK;
}

void rrpc_async_close(rrpc_async *a)
{
    if (a == NULL)
        return;
    if ((!a->own_loop && a->cb_depth > 0) || tls_loop == a) {
        /* Freeing the client under its own callback would pull hiredis'
         * context from under it; a caller bug worth stopping loudly. */
        log_line(RRPC_LOG_ERROR, "rrpc_async_close called from inside a callback", NULL);
        abort();
    }
    if (!a->own_loop) {
        atomic_store(&a->closing, 1);
        shutdown_on_loop(a, NULL);
    } else {
        pthread_mutex_lock(&a->lock);
        atomic_store(&a->closing, 1);
        int need_wake = !a->wake_pending;
        a->wake_pending = 1;
        pthread_mutex_unlock(&a->lock);
        if (need_wake)
            wake(a);
        pthread_join(a->thread, NULL);
    }
    free_client(a);
}

const char *rrpc_async_errmsg(const rrpc_async *a)
{
    return a != NULL && tls_err.owner == a ? tls_err.text : "";
}

size_t rrpc_async_in_flight(const rrpc_async *a)
{
    return a ? atomic_load(&((rrpc_async *)a)->in_flight) : 0; /* atomics need non-const */
}

/* ---- calls ------------------------------------------------------------- */

static int check_args(rrpc_async *a, const char *service, const char *method, const json_t *params)
{
    if (service == NULL || service[0] == '\0')
        return set_error(a, RRPC_EINVAL, "service must be a non-empty string");
    if (method == NULL || method[0] == '\0')
        return set_error(a, RRPC_EINVAL, "method must be a non-empty string");
    if (params != NULL && !json_is_array(params) && !json_is_object(params))
        return set_error(a, RRPC_EINVAL, "params must be a JSON array or object");
    if (atomic_load(&a->closing))
        return set_error(a, RRPC_ESTATE, "the client is closing");
    if (!atomic_load(&a->link_up))
        return set_error(a, RRPC_ECONNECT, "not connected to Redis (reconnecting)");
    return RRPC_OK;
}

/* Hands a built record to the loop: directly on the loop thread, else
 * through the queue.  On failure the record is recycled. */
static int enqueue(rrpc_async *a, acall *c)
{
    int rc = RRPC_OK;
    if (on_loop_thread(a)) {
        rc = submit(a, c);
    } else {
        pthread_mutex_lock(&a->lock);
        if (atomic_load(&a->closing)) {
            rc = set_error(a, RRPC_ESTATE, "the client is closing");
        } else {
            if (a->queue_tail)
                a->queue_tail->next = c;
            else
                a->queue_head = c;
            a->queue_tail = c;
            c->next = NULL;
        }
        int need_wake = rc == RRPC_OK && !a->wake_pending;
        if (need_wake)
            a->wake_pending = 1;
        pthread_mutex_unlock(&a->lock);
        if (need_wake)
            wake(a);
    }
    if (rc != RRPC_OK)
        put_call(a, c);
    return rc;
}

static int start(rrpc_async *a, const char *service, const char *method, const json_t *params,
                 double timeout_s, rrpc_async_cb cb, void *udata)
{
    int notify = cb == NULL;
    int rc = check_args(a, service, method, params);
    if (rc != RRPC_OK)
        return rc;
    if (!notify) {
        size_t before = atomic_fetch_add(&a->in_flight, 1);
        if (a->max_in_flight && before >= a->max_in_flight) {
            atomic_fetch_sub(&a->in_flight, 1);
            return set_error(a, RRPC_ESTATE, "max_in_flight (%zu) calls are in flight",
                             a->max_in_flight);
        }
    }
    acall *c = get_call(a);
    if (c == NULL)
        rc = set_error(a, RRPC_ENOMEM, "out of memory");
    if (c != NULL) {
        c->cb = cb;
        c->udata = udata;
        c->notify = (unsigned)notify;
        c->timeout_s = rrpc__inherited_timeout(rrpc__timeout_or(timeout_s, a->timeout_s));
        rc = build_request(a, c, service, method, params);
        if (rc == RRPC_OK)
            rc = enqueue(a, c); /* recycles C itself on failure */
        else
            put_call(a, c);
    }
    if (rc != RRPC_OK && !notify)
        atomic_fetch_sub(&a->in_flight, 1);
    return rc;
}

int rrpc_async_call(rrpc_async *a, const char *service, const char *method, const json_t *params,
                    double timeout_s, rrpc_async_cb cb, void *udata)
{
    if (a == NULL)
        return RRPC_EINVAL;
    if (cb == NULL)
        return set_error(a, RRPC_EINVAL, "a callback is required");
    /* Longer than RRPC__TIMEOUT_MAX_S (infinity too) is cut to it in
     * start(): a timer further out would overflow libevent's clock. */
    if (!(timeout_s >= 0))
        return set_error(a, RRPC_EINVAL, "timeout_s must be a number >= 0");
    return start(a, service, method, params, timeout_s, cb, udata);
}

int rrpc_async_notify(rrpc_async *a, const char *service, const char *method, const json_t *params)
{
    if (a == NULL)
        return RRPC_EINVAL;
    return start(a, service, method, params, 0, NULL, NULL);
}
