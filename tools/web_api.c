/* web_api.c -- the JSON API behind `rrpc web`'s page, and its sampler.
 *
 * GET  /api/overview                  every service, its verdict and rates
 * GET  /api/services/NAME             one service: workers, methods, stats,
 *                                     dead letters, chart history
 * POST /api/services/NAME/requeue     requeue its dead letters
 * POST /api/services/NAME/requeue-one {"ref": REF}: requeue that one
 * POST /api/services/NAME/purge       delete its dead letters
 * POST /api/call                      {"service","method","params","timeout"}
 *
 * (docs/OPERATIONS.md documents the shapes.)  Everything is read through
 * the public admin API.  The sampler keeps one sample per service and
 * minute in Redis (rrpc_admin_history_put), so the charts survive a
 * restart of rrpc web, and the calls/s between its last two samples.
 */
#include "cli.h"
#include "web.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEAD_SHOWN     100  /* dead letters a page lists */
#define CALL_TIMEOUT_S 5.0  /* the console's default... */
#define CALL_MAX_S     10.0 /* ...and longest wait: the loop serves nobody meanwhile */
#define STALE_AGE_S    30.0 /* an oldest request older than this is a backlog */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const struct web_rate *web_rate_of(const struct web *w, const char *service)
{
    for (size_t i = 0; i < w->nrates; i++)
        if (strcmp(w->rates[i].service, service) == 0)
            return &w->rates[i];
    return NULL;
}

static struct web_rate *rate_slot(struct web *w, const char *service)
{
    struct web_rate *r = (struct web_rate *)web_rate_of(w, service);
    if (r != NULL || strlen(service) >= sizeof r->service)
        return r;
    struct web_rate *grown = realloc(w->rates, (w->nrates + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    w->rates = grown;
    r = &w->rates[w->nrates++];
    memset(r, 0, sizeof *r);
    strcpy(r->service, service);
    return r;
}

/* ---- the sampler ---------------------------------------------------------------- */

/* The sample kept for one minute: totals, and per method its calls,
 * errors and cumulative bucket counts (rrpc_admin_metrics's bounds). */
static json_t *make_sample(const json_t *m, long long *calls, long long *errors)
{
    json_t *methods = json_object(), *total = NULL;
    const char *name;
    json_t *v;
    *calls = *errors = 0;
    json_object_foreach(json_object_get(m, "methods"), name, v)
    {
        json_t *b = json_object_get(v, "buckets");
        *calls += json_integer_value(json_object_get(v, "calls"));
        *errors += json_integer_value(json_object_get(v, "errors"));
        if (total == NULL)
            total = json_deep_copy(b);
        else
            for (size_t k = 0; k < json_array_size(total); k++)
                json_array_set_new(total, k,
                                   json_integer(json_integer_value(json_array_get(total, k)) +
                                                json_integer_value(json_array_get(b, k))));
        json_object_set_new(methods, name,
                            json_pack("{s:O, s:O, s:O}", "calls", json_object_get(v, "calls"),
                                      "errors", json_object_get(v, "errors"), "buckets", b));
    }
    return json_pack("{s:I, s:I, s:O, s:O, s:O, s:o, s:o}", "calls", (json_int_t)*calls, "errors",
                     (json_int_t)*errors, "queue", json_object_get(m, "queue"), "workers",
                     json_object_get(m, "workers"), "dead", json_object_get(m, "dead"), "buckets",
                     total ? total : json_array(), "methods", methods);
}

void web_sample(struct web *w)
{
    json_t *list = NULL;
    if (rrpc_admin_services(w->admin, &list) != RRPC_OK) {
        w->samples_failed++;
        return;
    }
    size_t i;
    json_t *e;
    double t = now_s();
    json_array_foreach(list, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "service"));
        json_t *m = NULL;
        if (name == NULL || rrpc_admin_metrics(w->admin, name, &m) != RRPC_OK) {
            w->samples_failed++;
            continue;
        }
        long long calls, errors;
        json_t *sample = make_sample(m, &calls, &errors);
        if (sample == NULL ||
            rrpc_admin_history_put(w->admin, name, sample, w->keep_min) != RRPC_OK)
            w->samples_failed++;
        json_decref(sample);
        json_decref(m);
        struct web_rate *r = rate_slot(w, name);
        if (r == NULL)
            continue;
        if (r->at > 0 && t > r->at) {
            r->calls_per_s = (double)(calls - r->calls) / (t - r->at);
            r->errors_per_s = (double)(errors - r->errors) / (t - r->at);
            if (r->calls_per_s < 0) /* stats forgotten meanwhile */
                r->calls_per_s = r->errors_per_s = 0;
        }
        r->calls = calls;
        r->errors = errors;
        r->at = t;
    }
    json_decref(list);
}

/* ---- GET ------------------------------------------------------------------------ */

/* A service's health in one word, for the overview. */
static const char *verdict(const json_t *m)
{
    long long workers = json_integer_value(json_object_get(m, "workers"));
    long long queue = json_integer_value(json_object_get(m, "queue"));
    long long max = json_integer_value(json_object_get(m, "max_queue"));
    json_t *age = json_object_get(m, "oldest_age_s");
    if (workers == 0)
        return json_is_true(json_object_get(m, "registered")) ? "down" : "no workers";
    if ((max > 0 && queue >= max) || (json_is_number(age) && json_number_value(age) > STALE_AGE_S))
        return "backlog";
    return "ok";
}

/* The slowest method's p50 and p99 (all time), from rrpc_admin_stats. */
static void slowest(struct web *w, const char *service, double *p50, double *p99)
{
    json_t *st = NULL;
    *p50 = *p99 = 0;
    if (rrpc_admin_stats(w->admin, service, &st) != RRPC_OK)
        return;
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(st, "methods"), name, v)
    {
        double a = json_number_value(json_object_get(v, "p50_ms"));
        double b = json_number_value(json_object_get(v, "p99_ms"));
        *p50 = a > *p50 ? a : *p50;
        *p99 = b > *p99 ? b : *p99;
    }
    json_decref(st);
}

/* [[minute, calls, errors, queue], ...] from the history, for sparklines. */
static json_t *short_history(struct web *w, const char *service)
{
    json_t *h = NULL, *out = json_array();
    if (rrpc_admin_history(w->admin, service, &h) != RRPC_OK)
        return out;
    size_t i;
    json_t *e;
    json_array_foreach(h, i, e)
    {
        json_t *s = json_object_get(e, "sample");
        json_array_append_new(out,
                              json_pack("[O, O, O, O]", json_object_get(e, "minute"),
                                        json_object_get(s, "calls"), json_object_get(s, "errors"),
                                        json_object_get(s, "queue")));
    }
    json_decref(h);
    return out;
}

static json_t *page_flags(const struct web *w)
{
    return json_pack("{s:b, s:s}", "read_only", w->read_only, "csrf", w->read_only ? "" : w->csrf);
}

static void overview(struct web *w, struct evhttp_request *req)
{
    json_t *list = NULL;
    if (rrpc_admin_services(w->admin, &list) != RRPC_OK) {
        web_send_error(req, 503, rrpc_admin_errmsg(w->admin));
        return;
    }
    json_t *out = page_flags(w), *services = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "service"));
        json_t *m = NULL;
        if (name == NULL || rrpc_admin_metrics(w->admin, name, &m) != RRPC_OK)
            continue;
        double p50, p99;
        slowest(w, name, &p50, &p99);
        const struct web_rate *r = web_rate_of(w, name);
        json_object_del(m, "methods");
        json_object_set_new(m, "verdict", json_string(verdict(m)));
        json_object_set_new(m, "calls", json_deep_copy(json_object_get(e, "calls")));
        json_object_set_new(m, "errors", json_deep_copy(json_object_get(e, "errors")));
        json_object_set_new(m, "calls_per_s", json_real(r ? r->calls_per_s : 0));
        json_object_set_new(m, "errors_per_s", json_real(r ? r->errors_per_s : 0));
        json_object_set_new(m, "p50_ms", json_real(p50));
        json_object_set_new(m, "p99_ms", json_real(p99));
        json_object_set_new(m, "history", short_history(w, name));
        json_array_append_new(services, m);
    }
    json_decref(list);
    json_object_set_new(out, "services", services);
    web_send_json(req, 200, out);
}

static void service_page(struct web *w, struct evhttp_request *req, const char *service)
{
    json_t *info = NULL, *metrics = NULL, *stats = NULL, *dead = NULL, *history = NULL;
    int rc = rrpc_admin_info(w->admin, service, &info);
    if (rc == RRPC_OK)
        rc = rrpc_admin_metrics(w->admin, service, &metrics);
    if (rc == RRPC_OK)
        rc = rrpc_admin_stats(w->admin, service, &stats);
    if (rc == RRPC_OK)
        rc = rrpc_admin_dead_list(w->admin, service, DEAD_SHOWN, &dead);
    if (rc == RRPC_OK)
        rc = rrpc_admin_history(w->admin, service, &history);
    if (rc != RRPC_OK) {
        json_decref(info);
        json_decref(metrics);
        json_decref(stats);
        json_decref(dead);
        web_send_error(req, rc == RRPC_EINVAL ? 400 : 503, rrpc_admin_errmsg(w->admin));
        return;
    }
    json_object_set_new(metrics, "verdict", json_string(verdict(metrics)));
    json_t *out = page_flags(w);
    json_object_set_new(out, "service", json_string(service));
    json_object_set_new(out, "info", info);
    json_object_set_new(out, "metrics", metrics);
    json_object_set_new(out, "stats", stats);
    json_object_set_new(out, "dead", dead);
    json_object_set_new(out, "history", history);
    web_send_json(req, 200, out);
}

/* "/services/NAME[/ACTION]" into NAME (BUF) and *ACTION (NULL if none). */
static int split_service(const char *path, char *buf, size_t len, const char **action)
{
    if (strncmp(path, "/services/", 10) != 0)
        return -1;
    const char *name = path + 10, *slash = strchr(name, '/');
    size_t n = slash ? (size_t)(slash - name) : strlen(name);
    if (n == 0 || n >= len)
        return -1;
    memcpy(buf, name, n);
    buf[n] = '\0';
    *action = slash ? slash + 1 : NULL;
    return 0;
}

void web_api_get(struct web *w, struct evhttp_request *req, const char *path)
{
    char name[256];
    const char *action;
    if (strcmp(path, "/overview") == 0)
        overview(w, req);
    else if (split_service(path, name, sizeof name, &action) == 0 && action == NULL)
        service_page(w, req, name);
    else
        web_send_error(req, 404, "no such API");
}

/* ---- POST ----------------------------------------------------------------------- */

static void console_call(struct web *w, struct evhttp_request *req, const char *body, size_t len)
{
    json_error_t jerr;
    json_t *in = json_loadb(body, len, 0, &jerr);
    const char *service = json_string_value(json_object_get(in, "service"));
    const char *method = json_string_value(json_object_get(in, "method"));
    json_t *params = json_object_get(in, "params");
    json_t *t = json_object_get(in, "timeout");
    double timeout = json_is_number(t) ? json_number_value(t) : CALL_TIMEOUT_S;
    if (service == NULL || method == NULL ||
        (params && !json_is_array(params) && !json_is_object(params) && !json_is_null(params)) ||
        !(timeout > 0)) {
        json_decref(in);
        web_send_error(req, 400,
                       "want {\"service\": S, \"method\": M, \"params\": array or object, "
                       "\"timeout\": seconds}");
        return;
    }
    if (timeout > CALL_MAX_S)
        timeout = CALL_MAX_S;
    char err[256] = "";
    if (w->client == NULL && rrpc_client_open(&w->client, &w->copts, err, sizeof err) != RRPC_OK) {
        json_decref(in);
        web_send_error(req, 503, err);
        return;
    }
    json_t *result = NULL, *error = NULL;
    int rc = rrpc_call(w->client, service, method, json_is_null(params) ? NULL : params, timeout,
                       &result, &error);
    json_decref(in);
    if (rc == RRPC_OK)
        web_send_json(req, 200, json_pack("{s:o}", "result", result));
    else if (rc == RRPC_EREMOTE)
        web_send_json(req, 200, json_pack("{s:o}", "error", error));
    else
        web_send_json(req, 200,
                      json_pack("{s:{s:s, s:s}}", "failure", "code", rrpc_strerror(rc), "message",
                                rrpc_client_errmsg(w->client)));
}

/* A separate action rather than an optional body of requeue: a request
 * that lost its ref must not requeue everything. */
static void requeue_one(struct web *w, struct evhttp_request *req, const char *name,
                        const char *body, size_t len)
{
    json_t *in = json_loadb(body, len, 0, NULL);
    const char *ref = json_string_value(json_object_get(in, "ref"));
    if (ref == NULL) {
        json_decref(in);
        web_send_error(req, 400, "want {\"ref\": the dead letter's ref}");
        return;
    }
    int rc = rrpc_admin_dead_requeue_one(w->admin, name, ref);
    json_decref(in);
    if (rc != RRPC_OK)
        web_send_error(req, rc == RRPC_EINVAL ? 400 : 503, rrpc_admin_errmsg(w->admin));
    else
        web_send_json(req, 200, json_pack("{s:i}", "requeued", 1));
}

void web_api_post(struct web *w, struct evhttp_request *req, const char *path, const char *body,
                  size_t len)
{
    char name[256];
    const char *action;
    long n = 0;
    if (strcmp(path, "/call") == 0) {
        console_call(w, req, body, len);
        return;
    }
    if (split_service(path, name, sizeof name, &action) != 0 || action == NULL) {
        web_send_error(req, 404, "no such API");
        return;
    }
    if (strcmp(action, "requeue-one") == 0) {
        requeue_one(w, req, name, body, len);
        return;
    }
    int rc;
    const char *what;
    if (strcmp(action, "requeue") == 0) {
        rc = rrpc_admin_dead_requeue(w->admin, name, &n);
        what = "requeued";
    } else if (strcmp(action, "purge") == 0) {
        rc = rrpc_admin_dead_purge(w->admin, name, &n);
        what = "purged";
    } else {
        web_send_error(req, 404, "no such action");
        return;
    }
    if (rc != RRPC_OK)
        web_send_error(req, rc == RRPC_EINVAL ? 400 : 503, rrpc_admin_errmsg(w->admin));
    else
        web_send_json(req, 200, json_pack("{s:I}", what, (json_int_t)n));
}
