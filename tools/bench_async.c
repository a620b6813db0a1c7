/* bench_async.c -- `rrpc bench --async`: every thread owns a libevent base
 * and an rrpc_async client on it, and keeps --window calls in flight.
 *
 * Each in-flight call has a record (struct pending); its reply callback
 * starts the next call on the same record.  A record whose call could not
 * start (the link is down) waits in the idle list until the next tick.
 */
#include "bench.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>

#define ASYNC_TICK_US 50000 /* how often an async thread notices a stop */

/* One async call slot: started, answered, started again. */
struct pending {
    struct bench_worker *worker;
    uint64_t start_ns;
};

static void on_reply(int status, json_t *result, json_t *error, void *udata);

static int may_start(const struct bench_worker *w)
{
    return !bench_stopping(w->bench) && (w->quota == 0 || w->started < w->quota);
}

/* Starts P's next call.  Returns 0 if it could not start (P is then
 * idle, and counted as a failed call if it was a failure). */
static int async_start(struct bench_worker *w, struct pending *p)
{
    const struct bench_args *args = w->bench->args;
    if (!may_start(w)) {
        w->idle[w->nidle++] = p;
        return 0;
    }
    p->start_ns = bench_now_ns();
    int rc = args->priority == RRPC_PRIORITY_NORMAL
                 ? rrpc_async_call(w->async, args->service, args->method, w->params,
                                   args->timeout_s, on_reply, p)
                 : rrpc_async_call_with(w->async, args->service, args->method, w->params,
                                        &w->call_opts, on_reply, p);
    w->started++;
    if (rc != RRPC_OK) {
        w->last_done_ns = bench_now_ns();
        bench_record(w, rc, NULL, NULL, 0, rrpc_async_errmsg(w->async));
        w->idle[w->nidle++] = p;
        return 0;
    }
    w->in_flight++;
    return 1;
}

static void async_maybe_done(struct bench_worker *w)
{
    if (w->in_flight == 0 && !may_start(w))
        event_base_loopbreak(w->base);
}

static void on_reply(int status, json_t *result, json_t *error, void *udata)
{
    struct pending *p = udata;
    struct bench_worker *w = p->worker;
    w->last_done_ns = bench_now_ns();
    bench_record(w, status, result, error, w->last_done_ns - p->start_ns,
                 status == RRPC_OK ? NULL : rrpc_async_errmsg(w->async));
    w->in_flight--;
    async_start(w, p);
    async_maybe_done(w);
}

/* Notices a stop when no call is in flight, and retries the records
 * whose call could not start (the link was down), one failure per tick
 * at most so that a dead Redis does not spin. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct bench_worker *w = arg;
    while (w->nidle > 0 && may_start(w))
        if (!async_start(w, w->idle[--w->nidle]))
            break;
    async_maybe_done(w);
}

static void async_open(struct bench_worker *w)
{
    const struct bench_args *args = w->bench->args;
    size_t window = (size_t)args->window;
    if (w->quota != 0 && w->quota < window)
        window = (size_t)w->quota;
    w->base = event_base_new();
    w->pending = calloc(window, sizeof *w->pending);
    w->idle = calloc(window, sizeof *w->idle);
    if (w->base == NULL || w->pending == NULL || w->idle == NULL) {
        w->open_status = RRPC_ENOMEM;
        snprintf(w->open_errmsg, sizeof w->open_errmsg, "out of memory");
        return;
    }
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    struct timeval every = {0, ASYNC_TICK_US};
    if (w->tick == NULL || event_add(w->tick, &every) != 0) {
        w->open_status = RRPC_ENOMEM;
        snprintf(w->open_errmsg, sizeof w->open_errmsg, "cannot create a timer");
        return;
    }
    for (size_t i = 0; i < window; i++) {
        w->pending[i].worker = w;
        w->idle[w->nidle++] = &w->pending[i];
    }
    rrpc_async_options opts;
    rrpc_async_options_init(&opts);
    opts.url = args->conn.url;
    opts.key_prefix = args->conn.prefix;
    opts.timeout_s = args->timeout_s;
    opts.event_base = w->base;
    w->open_status = rrpc_async_open(&w->async, &opts, w->open_errmsg, sizeof w->open_errmsg);
}

static void async_run(struct bench_worker *w)
{
    while (w->nidle > 0 && may_start(w))
        if (!async_start(w, w->idle[--w->nidle]))
            break;
    if (w->in_flight > 0 || may_start(w))
        event_base_dispatch(w->base);
}

static void async_close(struct bench_worker *w)
{
    rrpc_async_close(w->async); /* on the loop's thread, as it must be */
    w->async = NULL;
    if (w->tick)
        event_free(w->tick);
    if (w->base)
        event_base_free(w->base);
    free(w->pending);
    free(w->idle);
    w->tick = NULL;
    w->base = NULL;
    w->pending = NULL;
    w->idle = NULL;
}

const struct bench_driver bench_async_driver = {async_open, async_run, async_close};
