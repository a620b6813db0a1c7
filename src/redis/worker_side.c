/* worker_side.c -- what a handler asks of Redis while it runs: progress
 * pushed to its reply key, and whether its caller cancelled it
 * (core/dispatch.h, rrpc__handler_io; PROTOCOL.md section 7).
 *
 * The worker's own link may hold pipelined commands whose replies it has
 * not read yet while a handler runs, so these go over a second link of the
 * worker thread, opened at the first use: a server whose handlers never
 * send progress nor see a cancellable request opens none and pays nothing.
 * A progress message goes out as an answer does: rules 1 to 4 of the
 * reply keys, then the reply script (rule 5), one round trip, so it is in
 * Redis before the handler goes on (and before its answer).
 */
#define _POSIX_C_SOURCE 200809L
#include "core/protocol.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <stdio.h>
#include <string.h>

/* The side link, opened (or mended) on demand. */
static rrpc__conn *side_link(worker *w)
{
    char err[RRPC__ERRMSG_LEN];
    if (w->side != NULL && rrpc__conn_broken(w->side) && rrpc__conn_reconnect(w->side) != RRPC_OK)
        return NULL;
    if (w->side == NULL && rrpc__conn_open(&w->side, &w->srv->url, w->srv->connect_timeout_s, err,
                                           sizeof err) != RRPC_OK) {
        rrpc__log_worker(w, "cannot open a link for progress, cancellation and limits", err);
        w->side = NULL;
        return NULL;
    }
    /* A stalled Redis must not hold the handler for long. */
    rrpc__conn_set_timeout(w->side, SOCKET_TIMEOUT_S);
    return w->side;
}

/* One command on the side link, and its reply (new) or NULL. */
rrpc__reply *rrpc__side_command(worker *w, int argc, const char **argv, const size_t *lens)
{
    rrpc__conn *c = side_link(w);
    rrpc__reply *r = NULL;
    if (c == NULL || rrpc__conn_append(c, argc, argv, lens) != RRPC_OK ||
        rrpc__conn_read(c, &r) != RRPC_OK)
        return NULL;
    return r;
}

static int push_progress(void *ctx, const char *key, size_t key_len, const char *text, size_t len)
{
    worker *w = ctx;
    const char *why = rrpc__reply_key_refusal(&w->rules, key, key_len);
    if (why != NULL) {
        rrpc__log_worker(w, "progress not sent", why);
        return RRPC_EREDIS;
    }
    const char *argv[] = {"EVAL", rrpc__reply_script, "1", key, w->ttl_text, text};
    size_t lens[] = {4, strlen(rrpc__reply_script), 1, key_len, strlen(w->ttl_text), len};
    rrpc__reply *r = rrpc__side_command(w, 6, argv, lens);
    if (r == NULL)
        return RRPC_ECONNECT;
    const rrpc__reply *e = rrpc__reply_type(r) == RRPC__REPLY_ARRAY && rrpc__reply_count(r) == 1
                               ? rrpc__reply_element(r, 0)
                               : NULL;
    int rc = e != NULL && rrpc__reply_type(e) == RRPC__REPLY_INTEGER ? RRPC_OK : RRPC_EREDIS;
    if (rc != RRPC_OK)
        rrpc__log_worker(w, "progress refused by Redis",
                         e != NULL ? rrpc__reply_str(e, NULL) : rrpc__reply_str(r, NULL));
    rrpc__reply_free(r);
    return rc;
}

static int look_cancelled(void *ctx, const char *key, size_t key_len)
{
    const char *argv[] = {"EXISTS", key};
    size_t lens[] = {6, key_len};
    rrpc__reply *r = rrpc__side_command(ctx, 2, argv, lens);
    int rc = r == NULL                                    ? RRPC_ECONNECT
             : rrpc__reply_type(r) == RRPC__REPLY_INTEGER ? rrpc__reply_integer(r) > 0
                                                          : RRPC_EREDIS;
    rrpc__reply_free(r);
    return rc;
}

void rrpc__side_start(worker *w)
{
    w->io = (rrpc__handler_io){.progress = push_progress, .cancelled = look_cancelled, .ctx = w};
    rrpc__limits_io(w, &w->io);
    rrpc__handler_io_set(&w->io);
}

void rrpc__side_stop(worker *w)
{
    rrpc__handler_io_set(NULL);
    rrpc__conn_close(w->side);
    w->side = NULL;
}
