/* admin.c -- the operator's side of the registry: rrpc_admin_*.
 *
 * Everything `rrpc ls`, `info`, `stats`, `top` and `dead` show is read
 * here, so that the CLI needs the public API only.  This file checks the
 * arguments and shapes the JSON (sorting, totals, the union of the workers'
 * methods, quantiles from the latency histograms); the transport's admin
 * operations (transport/admin_ops.h) read and change what the broker
 * keeps, on a link opened like a client's (caller.c).
 */
#define _POSIX_C_SOURCE 200809L
#include "client/caller.h"
#include "core/internal.h"
#include "core/random.h"
#include "core/ratelimit.h"
#include "core/stats.h"
#include "transport/admin_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrpc_admin {
    rrpc__caller base; /* the link, its operations, URL and key prefix */
    const rrpc__admin_ops *ops;
    char errmsg[RRPC__ERRMSG_LEN];
};

int rrpc_admin_open(rrpc_admin **out, const rrpc_client_options *opts, char *errmsg,
                    size_t errmsg_len)
{
    rrpc_client_options own; /* the caller's options, as long as this library's */
    if (out == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    if (rrpc__caller_options(&own, opts, errmsg, errmsg_len) != RRPC_OK)
        return RRPC_EINVAL;
    rrpc_admin *a = calloc(1, sizeof *a);
    if (a == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    int rc = rrpc__caller_open(&a->base, &own, NULL, errmsg, errmsg_len);
    if (rc == RRPC_OK && (a->ops = a->base.transport->admin) == NULL)
        rc = rrpc__fail(errmsg, errmsg_len, RRPC_EINVAL,
                        "the registry and admin operations (rrpc ls/info/ping/stats/top/dead/web) "
                        "are not supported over %s yet",
                        a->base.transport->name);
    if (rc != RRPC_OK) {
        rrpc_admin_close(a);
        return rc;
    }
    *out = a;
    return RRPC_OK;
}

void rrpc_admin_close(rrpc_admin *a)
{
    if (a == NULL)
        return;
    rrpc__caller_close(&a->base);
    free(a);
}

const char *rrpc_admin_errmsg(const rrpc_admin *a)
{
    return a ? a->errmsg : "no admin handle";
}

/* The start of every question: the handle and SERVICE (if not NULL)
 * checked, a broken link mended. */
static int ready(rrpc_admin *a, const char *service)
{
    if (a == NULL)
        return RRPC_EINVAL;
    if (service != NULL && !rrpc__valid_name(service))
        return rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_EINVAL, "invalid service name");
    const rrpc__client_ops *link = a->base.ops;
    if (link->needs_mend(a->base.link)) {
        int rc = link->mend(a->base.link, 0);
        if (rc != RRPC_OK)
            return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", link->errmsg(a->base.link));
    }
    return RRPC_OK;
}

/* Everything known about SERVICE: {"service", "registered", "queue" (all
 * shards and priorities), "queue_high", "queue_low" (of which in the
 * priority lists), "shards", "max_queue", "dead", "dead_total",
 * "workers": [...], "mstats": {...}}. */
static int gather(rrpc_admin *a, const char *service, json_t **out)
{
    rrpc__service_view v;
    int rc =
        a->ops->service(a->base.link, a->base.prefix, service, &v, a->errmsg, sizeof a->errmsg);
    if (rc != RRPC_OK)
        return rc;
    *out =
        json_pack("{s:s, s:b, s:I, s:I, s:I, s:i, s:I, s:I, s:I, s:o, s:o, s:o}", "service",
                  service, "registered", v.registered, "queue", (json_int_t)v.queue, "queue_high",
                  (json_int_t)v.queue_high, "queue_low", (json_int_t)v.queue_low, "shards",
                  v.shards, "max_queue", (json_int_t)v.max_queue, "dead", (json_int_t)v.dead,
                  "dead_total", (json_int_t)v.dead_total, "workers", v.workers, "mstats", v.mstats,
                  "limits_field", v.limits ? v.limits : json_null());
    return *out ? RRPC_OK : RRPC_ENOMEM;
}

/* ---- per-method stats from the merged histograms ----------------------------- */

typedef struct method_hist {
    json_int_t calls, errors, total;
    json_int_t hist[RRPC__HIST_BUCKETS];
} method_hist;

/* The upper bound, in ms, of the bucket holding quantile Q. */
static double quantile_ms(const method_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    json_int_t want = (json_int_t)(q * (double)h->total + 0.999999), seen = 0;
    if (want < 1)
        want = 1;
    for (int b = 0; b < RRPC__HIST_BUCKETS; b++) {
        seen += h->hist[b];
        if (seen >= want)
            return (b == 0 ? 1.0 : rrpc__bucket_lower_us(b + 1)) / 1000.0;
    }
    return rrpc__bucket_lower_us(RRPC__HIST_BUCKETS) / 1000.0;
}

/* Splits a field "calls:NAME", "errors:NAME" or "hB:NAME" into what and
 * NAME; returns the bucket for histogram fields, -1 for calls, -2 for
 * errors, -3 for fields it does not know. */
static int parse_field(const char *field, const char **name)
{
    const char *colon = strchr(field, ':');
    if (colon == NULL)
        return -3;
    *name = colon + 1;
    size_t n = (size_t)(colon - field);
    if (n == 5 && strncmp(field, "calls", 5) == 0)
        return -1;
    if (n == 6 && strncmp(field, "errors", 6) == 0)
        return -2;
    if (field[0] == 'h' && n > 1) {
        int b = atoi(field + 1);
        return b >= 0 && b < RRPC__HIST_BUCKETS ? b : -3;
    }
    return -3;
}

/* {NAME: {"calls", "errors", "p50_ms", "p99_ms"}} from the raw fields;
 * *calls and *errors get the totals. */
static json_t *method_stats(const json_t *mstats, json_int_t *calls, json_int_t *errors)
{
    size_t n = json_object_size(mstats), used = 0;
    method_hist *h = calloc(n ? n : 1, sizeof *h);
    const char **names = calloc(n ? n : 1, sizeof *names);
    json_t *out = json_object();
    const char *field;
    json_t *value;
    *calls = *errors = 0;
    if (h == NULL || names == NULL || out == NULL) {
        free(h);
        free(names);
        json_decref(out);
        return NULL;
    }
    json_object_foreach((json_t *)mstats, field, value)
    {
        const char *name;
        int what = parse_field(field, &name);
        if (what == -3)
            continue;
        size_t i = 0;
        while (i < used && strcmp(names[i], name) != 0)
            i++;
        if (i == used)
            names[used++] = name;
        json_int_t v = json_integer_value(value);
        if (what == -1)
            h[i].calls += v;
        else if (what == -2)
            h[i].errors += v;
        else {
            h[i].hist[what] += v;
            h[i].total += v;
        }
    }
    for (size_t i = 0; i < used; i++) {
        *calls += h[i].calls;
        *errors += h[i].errors;
        json_object_set_new(out, names[i],
                            json_pack("{s:I, s:I, s:f, s:f}", "calls", h[i].calls, "errors",
                                      h[i].errors, "p50_ms", quantile_ms(&h[i], 0.50), "p99_ms",
                                      quantile_ms(&h[i], 0.99)));
    }
    free(h);
    free(names);
    return out;
}

/* ---- the public questions -------------------------------------------------------- */

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static json_int_t sum_threads(const json_t *workers)
{
    json_int_t n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w) n += json_integer_value(json_object_get(w, "threads"));
    return n;
}

int rrpc_admin_services(rrpc_admin *a, json_t **out)
{
    int rc = ready(a, NULL);
    if (rc != RRPC_OK || out == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    *out = NULL;
    json_t *names = NULL;
    rc = a->ops->services(a->base.link, a->base.prefix, &names, a->errmsg, sizeof a->errmsg);
    if (rc != RRPC_OK)
        return rc;
    size_t n = json_array_size(names);
    const char **sorted = calloc(n ? n : 1, sizeof *sorted);
    json_t *list = json_array();
    for (size_t i = 0; sorted && i < n; i++)
        sorted[i] = json_string_value(json_array_get(names, i));
    if (sorted)
        qsort(sorted, n, sizeof *sorted, cmp_str);
    for (size_t i = 0; sorted && i < n && rc == RRPC_OK; i++) {
        json_t *g = NULL;
        if (!rrpc__valid_name(sorted[i]))
            continue;
        if ((rc = gather(a, sorted[i], &g)) != RRPC_OK)
            break;
        json_int_t calls = 0, errors = 0;
        json_decref(method_stats(json_object_get(g, "mstats"), &calls, &errors));
        json_t *workers = json_object_get(g, "workers");
        json_array_append_new(
            list, json_pack("{s:s, s:I, s:I, s:O, s:O, s:O, s:I, s:I}", "service", sorted[i],
                            "workers", (json_int_t)json_array_size(workers), "threads",
                            sum_threads(workers), "queue", json_object_get(g, "queue"), "max_queue",
                            json_object_get(g, "max_queue"), "dead", json_object_get(g, "dead"),
                            "calls", calls, "errors", errors));
        json_decref(g);
    }
    free(sorted);
    json_decref(names);
    if (rc != RRPC_OK || sorted == NULL) {
        json_decref(list);
        return rc != RRPC_OK ? rc : RRPC_ENOMEM;
    }
    *out = list;
    return RRPC_OK;
}

/* The union of the live workers' method lists, first description wins. */
static json_t *union_methods(const json_t *workers)
{
    json_t *seen = json_object(), *methods = json_array();
    size_t i, j;
    json_t *w, *m;
    json_array_foreach(workers, i, w)
    {
        json_array_foreach(json_object_get(w, "methods"), j, m)
        {
            const char *name = json_string_value(json_object_get(m, "name"));
            if (name != NULL && json_object_get(seen, name) == NULL) {
                json_object_set_new(seen, name, json_true());
                json_array_append(methods, m);
            }
        }
    }
    json_decref(seen);
    return methods;
}

/* "limits": the service's limits object (null: none), and "limits_error"
 * when the field does not parse -- the workers keep their last good ones. */
static void add_limits(json_t *doc, const json_t *field)
{
    if (doc == NULL)
        return;
    if (!json_is_string(field)) {
        json_object_set_new(doc, "limits", json_null());
        return;
    }
    rrpc__rl_table *t = NULL;
    char err[RRPC__ERRMSG_LEN];
    if (rrpc__rl_parse(json_string_value(field), json_string_length(field), &t, err, sizeof err) ==
        RRPC_OK) {
        json_object_set_new(doc, "limits", json_loads(json_string_value(field), 0, NULL));
    } else {
        json_object_set(doc, "limits", (json_t *)field);
        json_object_set_new(doc, "limits_error", json_string(err));
    }
    rrpc__rl_free(t);
}

int rrpc_admin_set_limits(rrpc_admin *a, const char *service, const char *limits)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    if (limits != NULL) {
        rrpc__rl_table *t = NULL;
        if ((rc = rrpc__rl_parse(limits, strlen(limits), &t, a->errmsg, sizeof a->errmsg)) !=
            RRPC_OK)
            return rc;
        rrpc__rl_free(t);
    }
    return a->ops->limits_set(a->base.link, a->base.prefix, service, limits, a->errmsg,
                              sizeof a->errmsg);
}

int rrpc_admin_info(rrpc_admin *a, const char *service, json_t **out)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || out == NULL || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    json_t *g = NULL;
    if ((rc = gather(a, service, &g)) != RRPC_OK)
        return rc;
    json_t *workers = json_object_get(g, "workers");
    size_t i;
    json_t *w;
    json_t *slim = json_array(); /* methods are listed once, below */
    json_array_foreach(workers, i, w)
    {
        json_t *copy = json_copy(w);
        json_object_del(copy, "methods");
        json_array_append_new(slim, copy);
    }
    *out = json_pack(
        "{s:s, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:o, s:o}", "service", service, "registered",
        json_object_get(g, "registered"), "queue", json_object_get(g, "queue"), "queue_high",
        json_object_get(g, "queue_high"), "queue_low", json_object_get(g, "queue_low"), "shards",
        json_object_get(g, "shards"), "max_queue", json_object_get(g, "max_queue"), "dead",
        json_object_get(g, "dead"), "workers", slim, "methods", union_methods(workers));
    add_limits(*out, json_object_get(g, "limits_field"));
    json_decref(g);
    return *out ? RRPC_OK : RRPC_ENOMEM;
}

int rrpc_admin_stats(rrpc_admin *a, const char *service, json_t **out)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || out == NULL || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    json_t *g = NULL;
    if ((rc = gather(a, service, &g)) != RRPC_OK)
        return rc;
    json_int_t calls, errors;
    json_t *methods = method_stats(json_object_get(g, "mstats"), &calls, &errors);
    *out = methods
               ? json_pack("{s:s, s:O, s:O, s:O, s:I, s:I, s:I, s:o}", "service", service, "queue",
                           json_object_get(g, "queue"), "dead", json_object_get(g, "dead"),
                           "dead_total", json_object_get(g, "dead_total"), "workers",
                           (json_int_t)json_array_size(json_object_get(g, "workers")), "calls",
                           calls, "errors", errors, "methods", methods)
               : NULL;
    json_decref(g);
    return *out ? RRPC_OK : RRPC_ENOMEM;
}

/* ---- dead letters and forgetting ------------------------------------------------ */

/* The start of every dead-letter operation: *COUNT (if given) zeroed,
 * the handle and SERVICE checked. */
static int begin_dead(rrpc_admin *a, const char *service, long *count)
{
    if (count)
        *count = 0;
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    return RRPC_OK;
}

/* A ref as dead_list gives it: the SHA-1 of a record, in lowercase hex. */
static int valid_ref(const char *ref)
{
    size_t n = strspn(ref, "0123456789abcdef");
    return n == 40 && ref[n] == '\0';
}

int rrpc_admin_dead_list(rrpc_admin *a, const char *service, long limit, json_t **out)
{
    int rc = out != NULL ? begin_dead(a, service, NULL) : RRPC_EINVAL;
    if (rc != RRPC_OK)
        return rc;
    return a->ops->dead_list(a->base.link, a->base.prefix, service, limit, out, a->errmsg,
                             sizeof a->errmsg);
}

int rrpc_admin_dead_requeue(rrpc_admin *a, const char *service, long *moved)
{
    int rc = begin_dead(a, service, moved);
    if (rc != RRPC_OK)
        return rc;
    return a->ops->dead_requeue(a->base.link, a->base.prefix, service, moved, a->errmsg,
                                sizeof a->errmsg);
}

int rrpc_admin_dead_requeue_one(rrpc_admin *a, const char *service, const char *ref)
{
    int rc = ref != NULL ? begin_dead(a, service, NULL) : RRPC_EINVAL;
    if (rc != RRPC_OK)
        return rc;
    if (!valid_ref(ref))
        return rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_EINVAL,
                          "a dead letter's ref is 40 lowercase hex digits");
    return a->ops->dead_requeue_one(a->base.link, a->base.prefix, service, ref, a->errmsg,
                                    sizeof a->errmsg);
}

int rrpc_admin_dead_purge(rrpc_admin *a, const char *service, long *removed)
{
    int rc = begin_dead(a, service, removed);
    if (rc != RRPC_OK)
        return rc;
    return a->ops->dead_purge(a->base.link, a->base.prefix, service, removed, a->errmsg,
                              sizeof a->errmsg);
}

int rrpc_admin_forget(rrpc_admin *a, const char *service)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    return a->ops->forget(a->base.link, a->base.prefix, service, a->errmsg, sizeof a->errmsg);
}

/* ---- metrics and chart history ------------------------------------------------ */

/* The exported histogram's bounds: 4^k * 64 us, k = 0..10.  2^E us is the
 * lower edge of bucket 4E + 1 (core/stats.h), so buckets 0..4E lie wholly
 * below it. */
#define METRIC_BOUNDS 11

static int bound_exp(int k)
{
    return 6 + 2 * k;
}

/* {"calls", "errors", "le", "buckets", "sum_s"} for one method. */
static json_t *method_metric(const method_hist *h)
{
    json_t *le = json_array(), *buckets = json_array();
    json_int_t cum = 0;
    int b = 0;
    double sum_us = 0;
    for (int k = 0; k < METRIC_BOUNDS; k++) {
        int last = 4 * bound_exp(k);
        for (; b <= last && b < RRPC__HIST_BUCKETS; b++)
            cum += h->hist[b];
        json_array_append_new(le, json_real((double)(1LL << bound_exp(k)) / 1e6));
        json_array_append_new(buckets, json_integer(cum));
    }
    for (b = 0; b < RRPC__HIST_BUCKETS; b++) {
        double lo = b == 0 ? 0 : rrpc__bucket_lower_us(b);
        double hi = b == 0 ? 1 : rrpc__bucket_lower_us(b + 1);
        sum_us += (double)h->hist[b] * (lo + hi) / 2;
    }
    return json_pack("{s:I, s:I, s:o, s:o, s:f}", "calls", h->calls, "errors", h->errors, "le", le,
                     "buckets", buckets, "sum_s", sum_us / 1e6);
}

/* {NAME: method_metric} from the raw per-method fields. */
static json_t *method_metrics(const json_t *mstats)
{
    json_t *out = json_object();
    const char *field;
    json_t *value;
    method_hist h;
    json_t *names = json_object(); /* the methods seen, once each */
    json_object_foreach((json_t *)mstats, field, value)
    {
        const char *name;
        if (parse_field(field, &name) != -3)
            json_object_set_new(names, name, json_true());
    }
    json_object_foreach(names, field, value)
    {
        memset(&h, 0, sizeof h);
        json_t *v;
        const char *f;
        json_object_foreach((json_t *)mstats, f, v)
        {
            const char *name;
            int what = parse_field(f, &name);
            if (what == -3 || strcmp(name, field) != 0)
                continue;
            if (what == -1)
                h.calls += json_integer_value(v);
            else if (what == -2)
                h.errors += json_integer_value(v);
            else
                h.hist[what] += json_integer_value(v);
        }
        json_object_set_new(out, field, method_metric(&h));
    }
    json_decref(names);
    return out;
}

int rrpc_admin_metrics(rrpc_admin *a, const char *service, json_t **out)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || out == NULL || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    *out = NULL;
    rrpc__service_view v;
    rc = a->ops->service(a->base.link, a->base.prefix, service, &v, a->errmsg, sizeof a->errmsg);
    if (rc != RRPC_OK)
        return rc;
    json_t *age;
    if (v.oldest_unknown)
        age = json_null();
    else if (v.oldest_sent_ms <= 0 || v.now_ms <= v.oldest_sent_ms)
        age = json_real(0);
    else
        age = json_real((double)(v.now_ms - v.oldest_sent_ms) / 1000.0);
    *out = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
                     "service", service, "registered", v.registered, "workers",
                     (json_int_t)json_array_size(v.workers), "threads", sum_threads(v.workers),
                     "queue", (json_int_t)v.queue, "max_queue", (json_int_t)v.max_queue, "dead",
                     (json_int_t)v.dead, "dead_total", (json_int_t)v.dead_total, "expired",
                     (json_int_t)v.expired, "shed", (json_int_t)v.shed, "redelivered",
                     (json_int_t)v.redelivered, "lost", (json_int_t)v.lost, "oldest_age_s", age,
                     "methods", method_metrics(v.mstats));
    json_decref(v.workers);
    json_decref(v.mstats);
    json_decref(v.limits);
    return *out ? RRPC_OK : RRPC_ENOMEM;
}

int rrpc_admin_history_put(rrpc_admin *a, const char *service, const json_t *sample,
                           int keep_minutes)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL || !json_is_object(sample))
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    char *text = json_dumps(sample, JSON_COMPACT);
    if (text == NULL)
        return rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_ENOMEM, "out of memory");
    rc = a->ops->history_put(a->base.link, a->base.prefix, service, text,
                             keep_minutes > 0 ? keep_minutes : 60, a->errmsg, sizeof a->errmsg);
    free(text);
    return rc;
}

int rrpc_admin_history(rrpc_admin *a, const char *service, json_t **out)
{
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL || out == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    *out = NULL;
    return a->ops->history_get(a->base.link, a->base.prefix, service, out, a->errmsg,
                               sizeof a->errmsg);
}
