/* async_receive.c -- the async client's side of its session's reports
 * (async_receive.h): responses are decoded and matched to their calls by
 * id; a group the broker refused fails its calls; a lost session refuses
 * new calls until it is back, and fails every call in flight -- or, with
 * resend_on_reconnect, keeps them (their timers still run) and sends them
 * again, same text to the same shard, once it is back. */
#include "client/async_receive.h"

#include "client/async_calls.h"
#include "client/async_failfast.h"
#include "client/async_send.h"
#include "core/log.h"
#include "core/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A progress message ({"method": "rpc.progress", "params": {"id", "progress"}},
 * PROTOCOL.md section 7) goes to its call's progress callback; one for a
 * call no longer in flight (finished, cancelled, timed out) is dropped:
 * nothing comes after a call's answer. */
static void on_progress(rrpc_async *a, const json_t *msg)
{
    const json_t *params = json_object_get(msg, "params");
    const json_t *id = json_object_get(params, "id");
    const json_t *value = json_object_get(params, "progress");
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (method == NULL || strcmp(method, "rpc.progress") != 0 || !json_is_integer(id) ||
        value == NULL)
        return;
    rrpc__acall *c = rrpc__acall_lookup(a, json_integer_value(id));
    if (c == NULL || c->progress == NULL)
        return;
    a->cb_depth++;
    c->progress(value, c->progress_udata);
    a->cb_depth--;
}

/* Finishes the call ID names with RESULT or ERROR (all borrowed); a
 * response nobody waits for (timed out, or from before a reconnect) is
 * dropped. */
static void finish(rrpc_async *a, const json_t *id, json_t *result, json_t *error)
{
    rrpc__acall *c = json_is_integer(id) ? rrpc__acall_lookup(a, json_integer_value(id)) : NULL;
    if (c == NULL)
        return;
    if (json_is_object(error)) {
        const char *m = json_string_value(json_object_get(error, "message"));
        rrpc__async_error(a, RRPC_EREMOTE, "remote error %" JSON_INTEGER_FORMAT ": %s",
                          json_integer_value(json_object_get(error, "code")),
                          m ? m : "(no message)");
        rrpc__acall_finish(a, c, RRPC_EREMOTE, NULL, error);
    } else if (result != NULL) {
        rrpc__acall_finish(a, c, RRPC_OK, result, NULL);
    } else {
        rrpc__async_error(a, RRPC_EPROTO, "response has neither result nor error");
        rrpc__acall_finish(a, c, RRPC_EPROTO, NULL, NULL);
    }
}

/* Matches one response text to its call and finishes it.  The envelope
 * scanner reads nearly every response (jansson decoding the whole text
 * was half of the client's instructions per call); what it does not
 * read -- a progress message, escapes, invalid JSON -- jansson decodes. */
static void on_reply(const char *text, size_t len, void *udata)
{
    rrpc_async *a = udata;
    rrpc__response_view v;
    if (rrpc__response_scan(text, len, &v) == 0) {
        int progress =
            v.m[RRPC__R_ID].kind == RRPC__K_ABSENT && v.m[RRPC__R_METHOD].kind != RRPC__K_ABSENT;
        if (!progress)
            finish(a, v.m[RRPC__R_ID].json, v.m[RRPC__R_RESULT].json, v.m[RRPC__R_ERROR].json);
        rrpc__response_view_clear(&v);
        if (!progress)
            return;
    }
    json_t *resp = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    json_t *id = json_object_get(resp, "id");
    if (id == NULL && json_object_get(resp, "method") != NULL)
        on_progress(a, resp);
    else
        finish(a, id, json_object_get(resp, "result"), json_object_get(resp, "error"));
    json_decref(resp);
}

static void on_replies_end(void *udata)
{
    rrpc__acall_give_back(udata);
}

/* A group's end.  Only a refusal (RRPC_EREDIS, RRPC_EUNAVAILABLE, ...:
 * async_ops.h) ends calls here, with its code: a lost session fails them
 * all through on_link, and a closing client through close. */
static void on_delivered(void *group, int status, const char *msg, void *udata)
{
    rrpc_async *a = udata;
    rrpc__agroup *b = group;
    if (status != RRPC_OK && status != RRPC_ECONNECT && !a->shutting_down) {
        for (size_t i = 0; i < b->n; i++) {
            rrpc__acall *c = rrpc__acall_lookup(a, (json_int_t)b->ids[i]);
            if (c != NULL) {
                rrpc__async_error(a, status, "%s", msg);
                rrpc__acall_finish(a, c, status, NULL, NULL);
            }
        }
    }
    free(b);
}

/* One call of a group refused on its own (max_queue: RRPC_EOVERLOADED). */
static void on_refused(void *group, size_t i, int status, const char *msg, void *udata)
{
    rrpc_async *a = udata;
    rrpc__agroup *b = group;
    rrpc__acall *c = i < b->n ? rrpc__acall_lookup(a, (json_int_t)b->ids[i]) : NULL;
    if (c == NULL || a->shutting_down)
        return;
    rrpc__async_error(a, status, "%s", msg);
    rrpc__acall_finish(a, c, status, NULL, NULL);
}

static void on_view_read(void *udata)
{
    rrpc__aff_view_read(udata);
}

/* The session is back (new calls are taken again, and with resend the
 * calls in flight are sent again), or lost: what is in flight fails now
 * rather than at its timeout, unless it is to be resent. */
static void on_link(int status, const char *msg, void *udata)
{
    rrpc_async *a = udata;
    if (status == RRPC_OK) {
        atomic_store(&a->link_up, 1);
        /* The first report after open is no reconnect: what was delivered
         * while the links were connecting waited for them. */
        size_t n = a->resend && a->was_lost ? rrpc__asend_resend(a) : 0;
        a->was_lost = 0;
        if (n > 0) {
            char detail[64];
            snprintf(detail, sizeof detail, "%zu calls", n);
            rrpc__log(RRPC_LOG_INFO, NULL, "async", "resent the calls in flight", detail);
        }
        return;
    }
    atomic_store(&a->link_up, 0);
    a->was_lost = 1;
    if (a->resend)
        return; /* kept in flight; their timers still run */
    rrpc__async_error(a, RRPC_ECONNECT, "%s link lost: %s", a->ops->broker, msg);
    rrpc__acall_fail_all(a, RRPC_ECONNECT);
    rrpc__acall_give_back(a);
}

const rrpc__async_handlers rrpc__areceive_handlers = {
    .reply = on_reply,
    .replies_end = on_replies_end,
    .delivered = on_delivered,
    .link = on_link,
    .refused = on_refused,
    .view_read = on_view_read,
};
