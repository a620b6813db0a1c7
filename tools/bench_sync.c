/* bench_sync.c -- `rrpc bench --sync`: every thread owns an rrpc_client
 * and makes one call at a time, like the callers of the post's design
 * (and of the seed).
 */
#include "bench.h"

static void sync_open(struct bench_worker *w)
{
    const struct bench_args *args = w->bench->args;
    rrpc_client_options opts;
    rrpc_client_options_init(&opts);
    opts.url = args->conn.url;
    opts.key_prefix = args->conn.prefix;
    opts.timeout_s = args->timeout_s;
    w->open_status = rrpc_client_open(&w->client, &opts, w->open_errmsg, sizeof w->open_errmsg);
}

static void sync_run(struct bench_worker *w)
{
    const struct bench_args *args = w->bench->args;
    for (uint64_t n = 0; (w->quota == 0 || n < w->quota) && !bench_stopping(w->bench); n++) {
        json_t *result = NULL, *error = NULL;
        uint64_t t0 = bench_now_ns();
        int rc = args->priority == RRPC_PRIORITY_NORMAL
                     ? rrpc_call(w->client, args->service, args->method, w->params, args->timeout_s,
                                 &result, &error)
                     : rrpc_call_with(w->client, args->service, args->method, w->params,
                                      &w->call_opts, &result, &error);
        w->last_done_ns = bench_now_ns();
        bench_record(w, rc, result, error, w->last_done_ns - t0, rrpc_client_errmsg(w->client));
        json_decref(result);
        json_decref(error);
    }
}

static void sync_close(struct bench_worker *w)
{
    rrpc_client_close(w->client);
    w->client = NULL;
}

const struct bench_driver bench_sync_driver = {sync_open, sync_run, sync_close};
