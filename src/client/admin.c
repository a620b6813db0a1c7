/* admin.c -- the operator's side of the registry: rrpc_admin_*.
 *
 * Everything `rrpc ls`, `info`, `stats`, `top` and `dead` show is read
 * here, so that the CLI needs the public API only and the key layout of
 * docs/PROTOCOL.md section 9 is known to the library alone (registry.c
 * writes it, failfast.c and this file read it).  Each question about a
 * service is one pipelined round trip; liveness is judged against Redis's
 * own clock, like everywhere else.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/keys.h"
#include "core/internal.h"
#include "core/opts.h"
#include "core/protocol.h"
#include "core/random.h"
#include "redis/registry.h"
#include "core/shard.h"
#include "core/stats.h"
#include "redis/conn.h"
#include "core/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrpc_admin {
    rrpc__conn *conn;
    rrpc__url url;
    char *prefix;
    char errmsg[RRPC__ERRMSG_LEN];
};

int rrpc_admin_open(rrpc_admin **out, const rrpc_client_options *opts, char *errmsg,
                    size_t errmsg_len)
{
    rrpc_client_options own; /* the caller's options, as long as this library's */
    if (out == NULL)
        return RRPC_EINVAL;
    *out = NULL;
    rrpc_client_options_init(&own);
    if (opts && rrpc__opts_load(&own, sizeof own, opts, errmsg, errmsg_len) != RRPC_OK)
        return RRPC_EINVAL;
    opts = &own;
    rrpc_admin *a = calloc(1, sizeof *a);
    if (a == NULL)
        return rrpc__fail(errmsg, errmsg_len, RRPC_ENOMEM, "out of memory");
    a->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    int rc = a->prefix ? rrpc__url_parse(&a->url, opts->url, errmsg, errmsg_len) : RRPC_ENOMEM;
    if (rc == RRPC_OK)
        rc = rrpc__conn_open(&a->conn, &a->url, opts->connect_timeout_s, errmsg, errmsg_len);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(a->conn, 10);
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
    rrpc__conn_close(a->conn);
    rrpc__url_free(&a->url);
    free(a->prefix);
    free(a);
}

const char *rrpc_admin_errmsg(const rrpc_admin *a)
{
    return a ? a->errmsg : "no admin handle";
}

/* ---- plumbing ------------------------------------------------------------ */

/* Reads N replies into R (all new).  A Redis error reply fails the lot. */
static int read_all(rrpc_admin *a, int n, rrpc__reply **r)
{
    int rc = RRPC_OK;
    for (int i = 0; i < n; i++)
        r[i] = NULL;
    for (int i = 0; i < n && rc == RRPC_OK; i++) {
        rc = rrpc__conn_read(a->conn, &r[i]);
        if (rc != RRPC_OK)
            rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    }
    for (int i = 0; i < n && rc == RRPC_OK; i++)
        if (rrpc__reply_type(r[i]) == RRPC__REPLY_ERROR)
            rc = rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_EREDIS, "Redis error: %s",
                            rrpc__reply_str(r[i], NULL));
    if (rc != RRPC_OK)
        for (int i = 0; i < n; i++) {
            rrpc__reply_free(r[i]);
            r[i] = NULL;
        }
    return rc;
}

static int ready(rrpc_admin *a, const char *service)
{
    if (a == NULL)
        return RRPC_EINVAL;
    if (service != NULL && !rrpc__valid_name(service))
        return rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_EINVAL, "invalid service name");
    if (rrpc__conn_broken(a->conn) || rrpc__conn_peer_closed(a->conn)) {
        int rc = rrpc__conn_reconnect(a->conn);
        if (rc != RRPC_OK)
            return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    }
    return RRPC_OK;
}

static long long str_ll(const rrpc__reply *r)
{
    return r && rrpc__reply_type(r) == RRPC__REPLY_STRING ? atoll(rrpc__reply_str(r, NULL)) : 0;
}

/* The keys of one service (PROTOCOL.md sections 1 and 9): keys.h. */
typedef rrpc__service_keys keys;

static int make_keys(rrpc_admin *a, const char *service, keys *k)
{
    if (rrpc__service_keys_init(k, a->prefix, service) != RRPC_OK)
        return rrpc__fail(a->errmsg, sizeof a->errmsg, RRPC_EINVAL, "service name too long");
    return RRPC_OK;
}

/* ---- one service, in one round trip ---------------------------------------- */

enum {
    R_TIME,
    R_WORKERS,
    R_INFO,
    R_CONFIG,
    R_EXISTS,
    R_QUEUE,
    R_DEAD,
    R_DEAD_TOTAL,
    R_MSTATS,
    R_SHARDS,
    R_COUNT
};

/* The requests queued on shards 1..SHARDS-1 of the service whose shard 0
 * is LIST (shard.c): one more round trip, taken only for sharded services. */
static int other_shards_queue(rrpc_admin *a, const char *list, int shards, long long *sum)
{
    char key[RRPC__KEY_MAX];
    int rc = RRPC_OK;
    for (int k = 1; k < shards && rc == RRPC_OK; k++)
        if ((rc = rrpc__shard_key(key, sizeof key, list, k)) == RRPC_OK)
            rc = rrpc__conn_appendv(a->conn, 2, "LLEN", key);
    if (rc != RRPC_OK)
        return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    rrpc__reply *r[RRPC__MAX_SHARDS];
    if ((rc = read_all(a, shards - 1, r)) != RRPC_OK)
        return rc;
    for (int k = 0; k < shards - 1; k++) {
        *sum += rrpc__reply_integer(r[k]);
        rrpc__reply_free(r[k]);
    }
    return RRPC_OK;
}

/* Everything known about SERVICE: {"service", "registered", "queue" (all
 * shards), "shards", "max_queue", "dead", "dead_total", "workers": [...], "mstats": {...}}. */
static int gather(rrpc_admin *a, const char *service, json_t **out)
{
    keys k;
    int rc = make_keys(a, service, &k);
    if (rc != RRPC_OK)
        return rc;
    rrpc__conn *c = a->conn;
    if ((rc = rrpc__conn_appendv(c, 1, "TIME")) ||
        (rc = rrpc__conn_appendv(c, 5, "ZRANGE", k.workers, "0", "-1", "WITHSCORES")) ||
        (rc = rrpc__conn_appendv(c, 2, "HGETALL", k.info)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k.config, "max_queue")) ||
        (rc = rrpc__conn_appendv(c, 2, "EXISTS", k.config)) ||
        (rc = rrpc__conn_appendv(c, 2, "LLEN", k.list)) ||
        (rc = rrpc__conn_appendv(c, 2, "LLEN", k.dead)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k.stats, "dead")) ||
        (rc = rrpc__conn_appendv(c, 2, "HGETALL", k.mstats)) ||
        (rc = rrpc__conn_appendv(c, 3, "HGET", k.config, "shards")))
        return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(c));
    rrpc__reply *r[R_COUNT];
    if ((rc = read_all(a, R_COUNT, r)) != RRPC_OK)
        return rc;
    /* A sharded service's queue is the sum over its lists. */
    int shards = rrpc__shard_count((long)str_ll(r[R_SHARDS]));
    long long queue = rrpc__reply_integer(r[R_QUEUE]);
    if (shards > 1 && (rc = other_shards_queue(a, k.list, shards, &queue)) != RRPC_OK) {
        for (int i = 0; i < R_COUNT; i++)
            rrpc__reply_free(r[i]);
        return rc;
    }
    long long now_ms = rrpc__reply_count(r[R_TIME]) == 2
                           ? str_ll(rrpc__reply_element(r[R_TIME], 0)) * 1000 +
                                 str_ll(rrpc__reply_element(r[R_TIME], 1)) / 1000
                           : 0;
    json_t *workers = json_array(), *mstats = json_object();
    for (size_t i = 0; i + 1 < rrpc__reply_count(r[R_WORKERS]); i += 2) {
        const char *id = rrpc__reply_str(rrpc__reply_element(r[R_WORKERS], i), NULL);
        long long deadline = str_ll(rrpc__reply_element(r[R_WORKERS], i + 1));
        if (deadline <= now_ms)
            continue; /* expired: dead, whatever its record says */
        json_t *rec = NULL;
        for (size_t j = 0; j + 1 < rrpc__reply_count(r[R_INFO]) && rec == NULL; j += 2)
            if (strcmp(rrpc__reply_str(rrpc__reply_element(r[R_INFO], j), NULL), id) == 0) {
                size_t len;
                const char *text = rrpc__reply_str(rrpc__reply_element(r[R_INFO], j + 1), &len);
                rec = json_loadb(text, len, 0, NULL);
            }
        if (!json_is_object(rec)) {
            json_decref(rec);
            rec = json_pack("{s:s}", "id", id); /* alive, record missing */
        }
        json_object_set_new(rec, "expires_in", json_real((double)(deadline - now_ms) / 1000.0));
        json_array_append_new(workers, rec);
    }
    for (size_t i = 0; i + 1 < rrpc__reply_count(r[R_MSTATS]); i += 2)
        json_object_set_new(mstats, rrpc__reply_str(rrpc__reply_element(r[R_MSTATS], i), NULL),
                            json_integer(str_ll(rrpc__reply_element(r[R_MSTATS], i + 1))));
    *out = json_pack("{s:s, s:b, s:I, s:i, s:I, s:I, s:I, s:o, s:o}", "service", service,
                     "registered", rrpc__reply_integer(r[R_EXISTS]) > 0, "queue", (json_int_t)queue,
                     "shards", shards, "max_queue", (json_int_t)str_ll(r[R_CONFIG]), "dead",
                     (json_int_t)rrpc__reply_integer(r[R_DEAD]), "dead_total",
                     (json_int_t)str_ll(r[R_DEAD_TOTAL]), "workers", workers, "mstats", mstats);
    for (int i = 0; i < R_COUNT; i++)
        rrpc__reply_free(r[i]);
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
    char index[RRPC__KEY_MAX];
    rrpc__services_key(index, sizeof index, a->prefix);
    rrpc__reply *names = NULL;
    if ((rc = rrpc__conn_appendv(a->conn, 2, "SMEMBERS", index)) != RRPC_OK)
        return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    if ((rc = read_all(a, 1, &names)) != RRPC_OK)
        return rc;
    size_t n = rrpc__reply_count(names);
    const char **sorted = calloc(n ? n : 1, sizeof *sorted);
    json_t *list = json_array();
    for (size_t i = 0; sorted && i < n; i++)
        sorted[i] = rrpc__reply_str(rrpc__reply_element(names, i), NULL);
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
    rrpc__reply_free(names);
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
    *out = json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:o, s:o}", "service", service, "registered",
                     json_object_get(g, "registered"), "queue", json_object_get(g, "queue"),
                     "shards", json_object_get(g, "shards"), "max_queue",
                     json_object_get(g, "max_queue"), "dead", json_object_get(g, "dead"), "workers",
                     slim, "methods", union_methods(workers));
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

/* ---- dead letters ---------------------------------------------------------------- */

static json_t *decode_record(const rrpc__reply *r)
{
    size_t len;
    const char *text = rrpc__reply_str(r, &len);
    json_t *v = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    return v ? v : json_stringn(text, len); /* not ours: shown as it is */
}

/* The start of every dead-letter operation: *COUNT (if given) zeroed,
 * the handle checked, the service's keys made. */
static int begin_dead(rrpc_admin *a, const char *service, keys *k, long *count)
{
    if (count)
        *count = 0;
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    return make_keys(a, service, k);
}

int rrpc_admin_dead_list(rrpc_admin *a, const char *service, long limit, json_t **out)
{
    keys k;
    int rc = out != NULL ? begin_dead(a, service, &k, NULL) : RRPC_EINVAL;
    if (rc != RRPC_OK)
        return rc;
    char stop[32];
    snprintf(stop, sizeof stop, "%ld", limit > 0 ? limit - 1 : -1);
    rrpc__reply *r = NULL;
    if ((rc = rrpc__conn_appendv(a->conn, 4, "LRANGE", k.dead, "0", stop)) != RRPC_OK)
        return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    if ((rc = read_all(a, 1, &r)) != RRPC_OK)
        return rc;
    json_t *list = json_array();
    for (size_t i = 0; i < rrpc__reply_count(r); i++)
        json_array_append_new(list, decode_record(rrpc__reply_element(r, i)));
    rrpc__reply_free(r);
    *out = list;
    return RRPC_OK;
}

/* Runs one command and returns its reply (new) in *r. */
static int command(rrpc_admin *a, rrpc__reply **r, int argc, const char **argv, const size_t *lens)
{
    int rc = rrpc__conn_append(a->conn, argc, argv, lens);
    if (rc != RRPC_OK)
        return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    return read_all(a, 1, r);
}

/* Moves one dead letter: pops it, pushes its message onto the list, or
 * back onto the dead letters when it has none.  *moved is set to 1 when it
 * was requeued. */
static int requeue_one(rrpc_admin *a, const keys *k, int *moved, int *empty)
{
    rrpc__reply *popped = NULL, *pushed = NULL;
    const char *pop[] = {"LPOP", k->dead};
    int rc = command(a, &popped, 2, pop, NULL);
    *moved = 0;
    *empty = rc == RRPC_OK && rrpc__reply_type(popped) != RRPC__REPLY_STRING;
    if (rc != RRPC_OK || *empty) {
        rrpc__reply_free(popped);
        return rc;
    }
    size_t len;
    const char *text = rrpc__reply_str(popped, &len);
    json_t *rec = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    json_t *message = json_object_get(rec, "message");
    if (json_is_string(message)) {
        const char *push[] = {"RPUSH", k->list, json_string_value(message)};
        size_t lens[] = {5, strlen(k->list), json_string_length(message)};
        rc = command(a, &pushed, 3, push, lens);
        *moved = rc == RRPC_OK;
    }
    if (!*moved) { /* nothing to requeue, or the push failed: keep the record */
        rrpc__reply_free(pushed);
        pushed = NULL;
        const char *back[] = {"RPUSH", k->dead, text};
        size_t lens[] = {5, strlen(k->dead), len};
        int back_rc = command(a, &pushed, 3, back, lens);
        rc = rc != RRPC_OK ? rc : back_rc;
    }
    json_decref(rec);
    rrpc__reply_free(pushed);
    rrpc__reply_free(popped);
    return rc;
}

int rrpc_admin_dead_requeue(rrpc_admin *a, const char *service, long *moved)
{
    keys k;
    int rc = begin_dead(a, service, &k, moved);
    if (rc != RRPC_OK)
        return rc;
    rrpc__reply *len = NULL;
    const char *llen[] = {"LLEN", k.dead};
    if ((rc = command(a, &len, 2, llen, NULL)) != RRPC_OK)
        return rc;
    long long n = rrpc__reply_integer(len);
    rrpc__reply_free(len);
    /* Each record is looked at once: those kept go to the back. */
    for (long long i = 0; i < n && rc == RRPC_OK; i++) {
        int one = 0, empty = 0;
        rc = requeue_one(a, &k, &one, &empty);
        if (moved)
            *moved += one;
        if (empty)
            break;
    }
    return rc;
}

/* Dead letters taken per round trip by purge: bounds the memory a purge
 * holds at once. */
#define PURGE_BATCH      1000
#define PURGE_BATCH_TEXT "1000"

int rrpc_admin_dead_purge(rrpc_admin *a, const char *service, long *removed)
{
    keys k;
    int rc = begin_dead(a, service, &k, removed);
    if (rc != RRPC_OK)
        return rc;
    /* LPOP with a count, until the list is empty: each pop is one command
     * on the key's own node (MULTI/EXEC has no key, so on a Redis Cluster
     * it went to another node than LLEN and DEL), and the count is exactly
     * what was removed, dead letters that arrive meanwhile included. */
    const char *pop[] = {"LPOP", k.dead, PURGE_BATCH_TEXT};
    for (;;) {
        rrpc__reply *r = NULL;
        if ((rc = command(a, &r, 3, pop, NULL)) != RRPC_OK)
            return rc;
        size_t n = rrpc__reply_type(r) == RRPC__REPLY_ARRAY ? rrpc__reply_count(r) : 0;
        rrpc__reply_free(r);
        if (removed)
            *removed += (long)n;
        if (n < PURGE_BATCH)
            return RRPC_OK;
    }
}

int rrpc_admin_forget(rrpc_admin *a, const char *service)
{
    keys k;
    int rc = ready(a, service);
    if (rc != RRPC_OK || service == NULL)
        return rc != RRPC_OK ? rc : RRPC_EINVAL;
    if ((rc = make_keys(a, service, &k)) != RRPC_OK)
        return rc;
    char index[RRPC__KEY_MAX];
    rrpc__services_key(index, sizeof index, a->prefix);
    rrpc__reply *r[2];
    if ((rc = rrpc__conn_appendv(a->conn, 4, "DEL", k.workers, k.info, k.config)) ||
        (rc = rrpc__conn_appendv(a->conn, 3, "SREM", index, service)))
        return rrpc__fail(a->errmsg, sizeof a->errmsg, rc, "%s", rrpc__conn_errmsg(a->conn));
    if ((rc = read_all(a, 2, r)) != RRPC_OK)
        return rc;
    rrpc__reply_free(r[0]);
    rrpc__reply_free(r[1]);
    return RRPC_OK;
}
