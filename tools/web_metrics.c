/* web_metrics.c -- `rrpc web`'s /metrics and /readyz.
 *
 * The Prometheus text format (version 0.0.4) of every registered service,
 * from rrpc_admin_metrics: base units (seconds), _total counters, labels
 * service, method and outcome only (low cardinality: no worker ids).  Each
 * family is written whole, services in turn, as the format wants its
 * samples grouped under one # TYPE line.
 */
#include "web.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One service's metrics, for writing the families in turn. */
struct svc {
    const char *name;
    json_t *m; /* rrpc_admin_metrics */
};

/* Writes TEXT as a label value: backslash, quote and newline escaped. */
static void label(struct evbuffer *b, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\\' || *p == '"')
            evbuffer_add_printf(b, "\\%c", *p);
        else if (*p == '\n')
            evbuffer_add(b, "\\n", 2);
        else
            evbuffer_add(b, p, 1);
    }
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long long member(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* NAME{service="S"} VALUE for every service, VALUE its member KEY. */
static void per_service(struct evbuffer *b, const struct svc *s, size_t n, const char *name,
                        const char *type, const char *help, const char *key)
{
    family(b, name, type, help);
    for (size_t i = 0; i < n; i++) {
        evbuffer_add_printf(b, "%s{service=\"", name);
        label(b, s[i].name);
        evbuffer_add_printf(b, "\"} %lld\n", member(s[i].m, key));
    }
}

static void series_labels(struct evbuffer *b, const char *service, const char *method)
{
    evbuffer_add(b, "service=\"", 9);
    label(b, service);
    evbuffer_add(b, "\",method=\"", 10);
    label(b, method);
    evbuffer_add(b, "\"", 1);
}

static void requests_total(struct evbuffer *b, const struct svc *s, size_t n)
{
    family(b, "rrpc_requests_total", "counter",
           "Requests run by the workers, by outcome (error: answered with an error).");
    for (size_t i = 0; i < n; i++) {
        const char *method;
        json_t *m;
        json_object_foreach(json_object_get(s[i].m, "methods"), method, m)
        {
            long long calls = member(m, "calls"), errors = member(m, "errors");
            static const char *const outcome[] = {"ok", "error"};
            long long value[] = {calls - errors, errors};
            for (int k = 0; k < 2; k++) {
                evbuffer_add(b, "rrpc_requests_total{", 20);
                series_labels(b, s[i].name, method);
                evbuffer_add_printf(b, ",outcome=\"%s\"} %lld\n", outcome[k], value[k]);
            }
        }
    }
}

static void durations(struct evbuffer *b, const struct svc *s, size_t n)
{
    family(b, "rrpc_request_duration_seconds", "histogram",
           "Handler run time (bucket edges exact; _sum estimated from the buckets' middles).");
    for (size_t i = 0; i < n; i++) {
        const char *method;
        json_t *m;
        json_object_foreach(json_object_get(s[i].m, "methods"), method, m)
        {
            json_t *le = json_object_get(m, "le"), *buckets = json_object_get(m, "buckets");
            long long count = member(m, "calls");
            for (size_t k = 0; k < json_array_size(le); k++) {
                evbuffer_add(b, "rrpc_request_duration_seconds_bucket{", 37);
                series_labels(b, s[i].name, method);
                long long c = (long long)json_integer_value(json_array_get(buckets, k));
                evbuffer_add_printf(b, ",le=\"%.6g\"} %lld\n",
                                    json_real_value(json_array_get(le, k)), c < count ? c : count);
            }
            evbuffer_add(b, "rrpc_request_duration_seconds_bucket{", 37);
            series_labels(b, s[i].name, method);
            evbuffer_add_printf(b, ",le=\"+Inf\"} %lld\n", count);
            evbuffer_add(b, "rrpc_request_duration_seconds_sum{", 34);
            series_labels(b, s[i].name, method);
            evbuffer_add_printf(b, "} %.9g\n", json_real_value(json_object_get(m, "sum_s")));
            evbuffer_add(b, "rrpc_request_duration_seconds_count{", 36);
            series_labels(b, s[i].name, method);
            evbuffer_add_printf(b, "} %lld\n", count);
        }
    }
}

static void oldest_age(struct evbuffer *b, const struct svc *s, size_t n)
{
    family(b, "rrpc_oldest_request_age_seconds", "gauge",
           "How long the oldest queued request has waited (0: queue empty; absent: its "
           "sender did not stamp the time).");
    for (size_t i = 0; i < n; i++) {
        json_t *age = json_object_get(s[i].m, "oldest_age_s");
        if (!json_is_number(age))
            continue;
        evbuffer_add(b, "rrpc_oldest_request_age_seconds{service=\"", 41);
        label(b, s[i].name);
        evbuffer_add_printf(b, "\"} %.3f\n", json_number_value(age));
    }
}

/* Every valid service's metrics into *S (new, *N of them); RRPC_OK or
 * the admin API's error. */
static int gather(struct web *w, struct svc **out, size_t *n, json_t **list)
{
    *out = NULL;
    *n = 0;
    int rc = rrpc_admin_services(w->admin, list);
    if (rc != RRPC_OK)
        return rc;
    size_t count = json_array_size(*list);
    struct svc *s = calloc(count ? count : 1, sizeof *s);
    if (s == NULL)
        return RRPC_ENOMEM;
    size_t i;
    json_t *e;
    json_array_foreach(*list, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "service"));
        json_t *m = NULL;
        if (name == NULL || (rc = rrpc_admin_metrics(w->admin, name, &m)) != RRPC_OK)
            break;
        s[*n] = (struct svc){name, m};
        (*n)++;
    }
    *out = s;
    return rc;
}

static void release(struct svc *s, size_t n, json_t *list)
{
    for (size_t i = 0; i < n; i++)
        json_decref(s[i].m);
    free(s);
    json_decref(list);
}

void web_metrics(struct web *w, struct evhttp_request *req)
{
    struct svc *s;
    size_t n;
    json_t *list = NULL;
    int rc = gather(w, &s, &n, &list);
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        release(s, n, list);
        web_send_error(req, 500, "out of memory");
        return;
    }
    family(b, "rrpc_redis_up", "gauge", "1 if rrpc web could read the registry in Redis.");
    evbuffer_add_printf(b, "rrpc_redis_up %d\n", rc == RRPC_OK);
    if (rc == RRPC_OK) {
        requests_total(b, s, n);
        durations(b, s, n);
        per_service(b, s, n, "rrpc_queue_depth", "gauge", "Requests waiting in the queue.",
                    "queue");
        oldest_age(b, s, n);
        per_service(b, s, n, "rrpc_workers", "gauge", "Live workers.", "workers");
        per_service(b, s, n, "rrpc_worker_threads", "gauge", "Handler threads of live workers.",
                    "threads");
        per_service(b, s, n, "rrpc_dead_letters", "gauge", "Dead letters kept.", "dead");
        per_service(b, s, n, "rrpc_dead_letters_recorded_total", "counter",
                    "Dead letters ever recorded.", "dead_total");
        per_service(b, s, n, "rrpc_expired_requests_total", "counter",
                    "Requests not run because their deadline had passed.", "expired");
        per_service(b, s, n, "rrpc_shed_requests_total", "counter",
                    "Calls refused because the queue was at max_queue.", "shed");
        per_service(b, s, n, "rrpc_redelivered_requests_total", "counter",
                    "Requests of dead workers put back on the queue (reliable mode).",
                    "redelivered");
        per_service(b, s, n, "rrpc_lost_replies_total", "counter",
                    "Answers and dead letters Redis never took.", "lost");
    }
    release(s, n, list);
    size_t len = evbuffer_get_length(b);
    char *text = malloc(len ? len : 1);
    if (text != NULL)
        evbuffer_remove(b, text, len);
    evbuffer_free(b);
    if (text == NULL) {
        web_send_error(req, 500, "out of memory");
        return;
    }
    /* Redis unreachable is still a valid scrape (rrpc_redis_up 0), so
     * Prometheus alerts on the value, not on a failed scrape. */
    web_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

void web_readyz(struct web *w, struct evhttp_request *req, const char *service)
{
    json_t *list = NULL, *m = NULL;
    int rc = rrpc_admin_services(w->admin, &list);
    json_decref(list);
    if (rc != RRPC_OK) {
        web_send_json(
            req, 503,
            json_pack("{s:s, s:s}", "status", "unavailable", "redis", rrpc_admin_errmsg(w->admin)));
        return;
    }
    if (service == NULL) {
        web_send_json(req, 200, json_pack("{s:s, s:s}", "status", "ok", "redis", "ok"));
        return;
    }
    rc = rrpc_admin_metrics(w->admin, service, &m);
    if (rc != RRPC_OK) {
        web_send_json(
            req, rc == RRPC_EINVAL ? 400 : 503,
            json_pack("{s:s, s:s}", "status", "unavailable", "error", rrpc_admin_errmsg(w->admin)));
        return;
    }
    long long workers = member(m, "workers");
    web_send_json(req, workers > 0 ? 200 : 503,
                  json_pack("{s:s, s:s, s:s, s:I}", "status", workers > 0 ? "ok" : "unavailable",
                            "redis", "ok", "service", service, "workers", (json_int_t)workers));
    json_decref(m);
}
