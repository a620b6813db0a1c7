/* async_state.h -- the multiplexed async client's state, shared by its
 * files (never installed):
 *   async.c          the public API: open, close, call, notify; the loop
 *                    thread of an own-loop client and its hand-over queue
 *   async_calls.c    call records (pooled), the slot table that gives ids,
 *                    and finish(), the one way a call ends
 *   async_request.c  request text, built on the caller's thread
 *   async_send.c     submission: ids, timers, the outbox, batched delivery
 *   async_receive.c  what the transport reports: responses, refused
 *                    groups, a lost or restored session
 *   async_failfast.c fail fast and max_queue from the broker's view of
 *                    each service's registry
 *   async_state.c    the per-thread error message and loop identity
 *
 * The client never names a broker: it reaches one through
 * transport/async_ops.h, on the same libevent loop as its timers.
 *
 * Everything that touches the session, the slot table and the timers runs
 * on one libevent loop thread, either the application's or a background
 * thread of our own.  In the second mode other threads encode their request
 * text themselves (spreading the JSON work), then hand the record over
 * through a mutex-protected queue and wake the loop with an eventfd; the
 * loop assigns the id and appends it to the text, which is why the request
 * puts "id" last.
 */
#ifndef RRPC_ASYNC_STATE_H
#define RRPC_ASYNC_STATE_H

#include "client/call_hooks.h"
#include "core/clock.h"
#include "core/internal.h"
#include "core/url.h"
#include "transport/async_ops.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define RRPC__ASYNC_INLINE_BUF 384 /* queue name + request text of a typical call */
#define RRPC__ASYNC_COMMON_MAX 8   /* distinct timeouts sharing a libevent queue */

typedef struct rrpc__acall rrpc__acall;

/* One call (or notification) from rrpc_async_call to its callback. */
struct rrpc__acall {
    rrpc__acall *next; /* in the submission queue or a free list */
    rrpc_async *owner;
    struct event *timer; /* created on the loop thread at first use, kept */
    rrpc_async_cb cb;
    void *udata;
    double timeout_s;
    double expires_at;     /* monotonic (rrpc__monotonic) time its timer fires */
    uint64_t id;           /* 0 while it holds no slot */
    char *buf;             /* the service's queue name, a NUL, then the request text */
    size_t cap;            /* of buf */
    size_t list_len;       /* the queue name's length */
    size_t text_len;       /* the request text's length (from buf + list_len + 1) */
    int shard;             /* the shard it was sent to (core/shard.h); -1 until sent */
    long long deadline_ms; /* its deadline on the broker's clock; 0: none known */
    uint64_t handle;       /* rrpc_async_cancel's name for it (rrpc_call_options.handle) */
    void (*progress)(const json_t *value, void *udata); /* or NULL: none asked for */
    void *progress_udata;
    int priority;             /* RRPC_PRIORITY_*: its group's (async_send.c) */
    unsigned cancellable : 1; /* its request carries its cancel key (async_request.c) */
    unsigned notify : 1;      /* a notification: no id, no callback */
    unsigned in_outbox : 1;   /* waiting for flush() to deliver it */
    unsigned done : 1;        /* finished while in the outbox: flush() recycles it */
    size_t hooks_passed;      /* interceptors whose before let it through */
    char *hook_names;         /* with interceptors: "service\0method", for their afters */
    char inline_buf[RRPC__ASYNC_INLINE_BUF];
};

typedef struct rrpc__aslot {
    rrpc__acall *call; /* NULL when free */
    uint32_t gen;
    uint32_t next_free;
} rrpc__aslot;

struct rrpc_async {
    /* Set at open, read-only afterwards. */
    rrpc__url url;
    char *prefix;
    char reply_key[RRPC__KEY_MAX];
    char *request_tail; /* ,"reply_to":"<reply key>","id": */
    size_t request_tail_len;
    double timeout_s, connect_timeout_s;
    rrpc__clock clock; /* the broker's clock, read at open, for call deadlines */
    size_t max_in_flight;
    int resend;    /* rrpc_async_options.resend_on_reconnect */
    int fail_fast; /* rrpc_async_options.fail_fast (async_failfast.c) */
    int own_loop;
    struct event_base *base;
    const rrpc__async_ops *ops;
    rrpc__call_hooks hooks; /* rrpc_async_add_interceptor; frozen at the first call */
    atomic_int called;      /* a call was made: no more interceptors */

    /* Shared with the application's threads (own_loop mode). */
    pthread_mutex_t lock; /* queue, free_calls, wake_pending */
    rrpc__acall *queue_head, *queue_tail;
    rrpc__acall *free_calls;
    int wake_pending;
    atomic_int closing;
    atomic_int link_up;
    atomic_size_t in_flight;
    atomic_uint_fast64_t next_handle; /* handles of calls, from 1 */
    struct rrpc__acancel *cancels;    /* rrpc_async_cancel from other threads, for the loop */
    pthread_cond_t cancel_done;       /* signalled when the loop answered one */
    int wake_fd;
    pthread_t thread;

    /* The loop thread's. */
    rrpc__async_session *session; /* NULL once closed */
    struct event *wake_ev, *flush_ev;
    struct event *sweep_ev; /* fail fast's look at the services waited on (async_failfast.c) */
    int sweep_armed;        /* its timer is pending (no libevent lock per call to ask) */
    rrpc__aslot *slots;
    uint32_t nslots, slots_cap, free_slot;
    rrpc__acall **outbox, **outbox_spare;
    size_t nout, outbox_cap, spare_cap;
    int flush_scheduled;
    rrpc__acall *returned; /* recycled on the loop thread, handed back in bulk */
    rrpc__acall *returned_tail;
    struct {
        double s;
        const struct timeval *tv;
    } common[RRPC__ASYNC_COMMON_MAX];
    int ncommon;
    const char **argv; /* a group's texts for deliver(), after ops->deliver_headroom */
    size_t *lens;
    long long *ttls;       /* a group's times left, ms, for deliver() (deliver_max) */
    const char **argv_mem; /* the allocations, headroom included */
    size_t *lens_mem;
    rrpc__acall **by_shard; /* scratch of deliver_max: a run sorted by shard */
    unsigned next_shard;    /* round-robin over a sharded service's lists */
    int was_lost;           /* the session was lost since it was last connected */
    int shutting_down;
    int cb_depth; /* > 0 while a user callback runs */
};

/* A cancel handed to the loop by another thread (rrpc_async_cancel). */
typedef struct rrpc__acancel {
    struct rrpc__acancel *next;
    uint64_t handle;
    int rc, done;
} rrpc__acancel;

/* The loop thread of an own-loop client marks itself, so that calls made
 * from its callbacks skip the queue (async_state.c). */
extern _Thread_local rrpc_async *rrpc__async_loop_of_thread;

static inline int rrpc__async_on_loop(const rrpc_async *a)
{
    return !a->own_loop || rrpc__async_loop_of_thread == a;
}

/* Sets this thread's error message for A (several threads call into one
 * client, so messages are per thread) and returns ERR. */
int rrpc__async_error(const rrpc_async *a, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* This thread's last message, whichever client set it. */
const char *rrpc__async_error_text(void);
/* This thread's last message if A set it, else "". */
const char *rrpc__async_error_of(const rrpc_async *a);

#endif /* RRPC_ASYNC_STATE_H */
