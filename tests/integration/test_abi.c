/* test_abi.c -- options structs that can grow (docs/DESIGN.md, "An ABI
 * that can grow"), on a real redis-server started by harness/with-redis.sh.
 *
 * An "old" program is simulated the way it would look in memory: its own
 * copy of a struct without the fields added later, filled by the library's
 * _init_sized with its sizeof.  Each is tried twice:
 *   - alone in a heap block of exactly its size, so that AddressSanitizer
 *     (make test-asan) catches the library reading or writing past it;
 *   - at the head of a full-size struct whose missing fields hold values
 *     that would change behaviour, so that a plain build catches the
 *     library reading them instead of using its defaults.
 * A "newer" program (a size beyond the library's struct) is accepted while
 * the fields this library does not know are zero, refused otherwise.
 */
#include "harness.h"

#include <stdalign.h>

#define SERVICE "abisvc"

/* ---- the old layouts: today's structs without their last fields ---------- */

typedef struct old_client_options { /* up to key_prefix: no timeouts, fail_fast */
    size_t size;
    const char *url;
    const char *key_prefix;
} old_client_options;

typedef struct old_server_options { /* up to dedup_window_s: no heartbeat and after */
    size_t size;
    const char *url, *key_prefix, *service;
    int workers, reply_ttl_s;
    size_t max_request_bytes;
    long dead_letter_max;
    int batch_max, handle_signals;
    double connect_timeout_s;
    int reliable, max_deliveries;
    double dedup_window_s;
} old_server_options;

typedef struct old_async_options { /* up to event_base: no max_in_flight */
    size_t size;
    const char *url, *key_prefix;
    double timeout_s, connect_timeout_s;
    void *event_base;
} old_async_options;

typedef struct old_call_options { /* up to handle: no priority */
    size_t size;
    double timeout_s;
    const char *traceparent, *tracestate;
    void (*progress)(const json_t *value, void *udata);
    void *progress_udata;
    volatile sig_atomic_t *cancel;
    int cancellable;
    uint64_t *handle;
} old_call_options;

typedef struct old_server_stats { /* the first two counters */
    uint64_t requests, notifications;
} old_server_stats;

/* The old layouts are prefixes of today's: same offsets, fewer fields. */
#define SAME_OFFSET(old, now, field)                                                               \
    _Static_assert(offsetof(old, field) == offsetof(now, field), #field)
SAME_OFFSET(old_client_options, rrpc_client_options, key_prefix);
SAME_OFFSET(old_server_options, rrpc_server_options, dedup_window_s);
SAME_OFFSET(old_async_options, rrpc_async_options, event_base);
SAME_OFFSET(old_server_stats, rrpc_server_stats, notifications);
SAME_OFFSET(old_call_options, rrpc_call_options, handle);
_Static_assert(sizeof(old_client_options) < sizeof(rrpc_client_options), "shorter");
_Static_assert(sizeof(old_server_options) < sizeof(rrpc_server_options), "shorter");
_Static_assert(sizeof(old_async_options) < sizeof(rrpc_async_options), "shorter");
_Static_assert(sizeof(old_call_options) < sizeof(rrpc_call_options), "shorter");

/* ---- _init_sized writes only what the caller has ---------------------------- */

static void test_init_stays_inside(void)
{
    alignas(rrpc_server_options) unsigned char buf[sizeof(rrpc_server_options)];
    memset(buf, 0xAB, sizeof buf);
    rrpc_server_options_init_sized((rrpc_server_options *)(void *)buf, sizeof(old_server_options));
    old_server_options *old = (old_server_options *)(void *)buf;
    CHECK_EQ_INT(old->size, sizeof(old_server_options));
    CHECK_EQ_INT(old->reply_ttl_s, 60);
    CHECK(old->dedup_window_s == 600);
    int untouched = 1;
    for (size_t i = sizeof(old_server_options); i < sizeof buf; i++)
        untouched &= buf[i] == 0xAB;
    CHECK(untouched);
    rrpc_client_options_init_sized(NULL, 100); /* no crash */
}

/* ---- server: an old struct gets heartbeat (default 1) ----------------------- */

static rrpc_admin *admin;

static int registered(const char *service)
{
    json_t *info = NULL;
    if (rrpc_admin_info(admin, service, &info) != RRPC_OK)
        return 0;
    int yes = json_is_true(json_object_get(info, "registered")) &&
              json_array_size(json_object_get(info, "workers")) == 1;
    json_decref(info);
    return yes;
}

static rrpc_server *new_server(const rrpc_server_options *o)
{
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, o) == RRPC_OK);
    if (s)
        CHECK(rrpc_server_register(s, "sleep", m_sleep, NULL, NULL) == RRPC_OK);
    return s;
}

static void fill_old_server(old_server_options *o, const char *service)
{
    rrpc_server_options_init_sized((rrpc_server_options *)(void *)o, sizeof *o);
    o->service = service;
    o->workers = 2;
    o->handle_signals = 0;
}

/* Serves SERVICE from an old struct in a block of its exact size. */
static void test_server_old_exact(running *r)
{
    old_server_options *o = malloc(sizeof *o);
    fill_old_server(o, SERVICE);
    rrpc_server *s = new_server((const rrpc_server_options *)(void *)o);
    free(o); /* copied by rrpc_server_new */
    if (!s)
        return;
    run_server(r, s);
    WAIT_UNTIL(registered(SERVICE), 5);
    CHECK(registered(SERVICE)); /* heartbeat, registry: defaults */
}

/* The same with today's struct behind it saying heartbeat = 0. */
static void test_server_old_shadowed(void)
{
    rrpc_server_options full;
    rrpc_server_options_init(&full);
    full.heartbeat = 0; /* what a misread would see */
    fill_old_server((old_server_options *)(void *)&full, SERVICE "2"); /* the old part only */
    CHECK(full.size == sizeof(old_server_options) && full.heartbeat == 0);
    running r2;
    rrpc_server *s = new_server(&full);
    if (!s)
        return;
    run_server(&r2, s);
    WAIT_UNTIL(registered(SERVICE "2"), 5);
    CHECK(registered(SERVICE "2"));
    stop_server(&r2);
}

/* ---- client: an old struct gets timeout_s (default 30 s) -------------------- */

/* Calls sleep(700 ms) with the client's default timeout: done if it is 30
 * s, RRPC_ETIMEDOUT if the library took the 0.2 s behind an old struct. */
static int call_slow(rrpc_client *c)
{
    json_t *ms = json_pack("[i]", 700), *res = NULL;
    int rc = rrpc_call(c, SERVICE, "sleep", ms, 0, &res, NULL);
    json_decref(ms);
    json_decref(res);
    return rc;
}

static void test_client_old(void)
{
    old_client_options *o = malloc(sizeof *o);
    rrpc_client_options_init_sized((rrpc_client_options *)(void *)o, sizeof *o);
    rrpc_client *c = open_client_with((const rrpc_client_options *)(void *)o);
    free(o);
    if (c)
        CHECK_EQ_INT(call_slow(c), RRPC_OK);
    rrpc_client_close(c);

    rrpc_client_options full;
    rrpc_client_options_init(&full);
    full.timeout_s = 0.2;
    full.size = sizeof(old_client_options);
    c = open_client_with(&full);
    if (c)
        CHECK_EQ_INT(call_slow(c), RRPC_OK);
    rrpc_client_close(c);

    /* The admin handle takes rrpc_client_options too. */
    rrpc_admin *a = NULL;
    CHECK(rrpc_admin_open(&a, &full, NULL, 0) == RRPC_OK);
    rrpc_admin_close(a);
}

/* ---- call options: an old struct gets priority normal -------------------------- */

/* A call with OPTS, which must be taken as normal priority. */
static void call_normal(rrpc_client *c, const rrpc_call_options *opts)
{
    json_t *ms = json_pack("[i]", 1), *res = NULL;
    CHECK_EQ_INT(rrpc_call_with(c, SERVICE, "sleep", ms, opts, &res, NULL), RRPC_OK);
    json_decref(ms);
    json_decref(res);
}

static void test_call_options_old(void)
{
    rrpc_client *c = open_client_with(NULL);
    if (c == NULL)
        return;
    old_call_options *o = malloc(sizeof *o);
    rrpc_call_options_init_sized((rrpc_call_options *)(void *)o, sizeof *o);
    call_normal(c, (const rrpc_call_options *)(void *)o);
    free(o);

    rrpc_call_options full;
    rrpc_call_options_init(&full);
    full.priority = 7; /* what a misread would see: RRPC_EINVAL */
    full.size = sizeof(old_call_options);
    call_normal(c, &full);
    rrpc_client_close(c);
}

/* ---- async: an old struct gets max_in_flight (default unlimited) ------------ */

static atomic_int async_done;

static void on_done(int status, json_t *result, json_t *error, void *udata)
{
    (void)result, (void)error, (void)udata;
    CHECK_EQ_INT(status, RRPC_OK);
    async_done++;
}

static void two_calls(const rrpc_async_options *o)
{
    rrpc_async *a = NULL;
    char err[256] = "";
    int rc = rrpc_async_open(&a, o, err, sizeof err);
    if (!CHECK_EQ_INT(rc, RRPC_OK)) {
        fprintf(stderr, "async open: %s\n", err);
        return;
    }
    json_t *ms = json_pack("[i]", 100);
    async_done = 0;
    CHECK_EQ_INT(rrpc_async_call(a, SERVICE, "sleep", ms, 5, on_done, NULL), RRPC_OK);
    CHECK_EQ_INT(rrpc_async_call(a, SERVICE, "sleep", ms, 5, on_done, NULL), RRPC_OK);
    json_decref(ms);
    WAIT_UNTIL(async_done == 2, 5);
    CHECK_EQ_INT(async_done, 2);
    rrpc_async_close(a);
}

static void test_async_old(void)
{
    old_async_options *o = malloc(sizeof *o);
    rrpc_async_options_init_sized((rrpc_async_options *)(void *)o, sizeof *o);
    two_calls((const rrpc_async_options *)(void *)o);
    free(o);

    rrpc_async_options full;
    rrpc_async_options_init(&full);
    full.max_in_flight = 1; /* a misread refuses the second call */
    full.size = sizeof(old_async_options);
    two_calls(&full);
}

/* ---- stats: an old struct gets the counters it has, nothing more ------------- */

static void test_stats_old(running *r)
{
    old_server_stats *st = malloc(sizeof *st);
    memset(st, 0, sizeof *st);
    rrpc_server_get_stats_sized(r->srv, (rrpc_server_stats *)(void *)st, sizeof *st);
    rrpc_server_stats now;
    rrpc_server_get_stats(r->srv, &now);
    CHECK(st->requests >= 3 && st->requests <= now.requests); /* the calls above */
    free(st);

    struct {
        old_server_stats old;
        unsigned char after[sizeof(rrpc_server_stats) - sizeof(old_server_stats)];
    } shadow;
    memset(&shadow, 0xAB, sizeof shadow);
    rrpc_server_get_stats_sized(r->srv, (rrpc_server_stats *)(void *)&shadow, sizeof shadow.old);
    int untouched = 1;
    for (size_t i = 0; i < sizeof shadow.after; i++)
        untouched &= shadow.after[i] == 0xAB;
    CHECK(untouched);
}

/* ---- newer programs, and structs _init never saw ---------------------------- */

static void test_sizes_refused(void)
{
    /* A newer program: today's struct and 16 bytes of fields we lack. */
    struct {
        alignas(rrpc_client_options) unsigned char bytes[sizeof(rrpc_client_options) + 16];
    } newer;
    rrpc_client_options_init_sized((rrpc_client_options *)(void *)&newer, sizeof newer);
    rrpc_client_options *o = (rrpc_client_options *)(void *)&newer;
    CHECK_EQ_INT(o->size, sizeof newer);
    CHECK(o->fail_fast == 1 && o->timeout_s == 30);
    rrpc_client *c = NULL;
    char err[256] = "";
    CHECK_EQ_INT(rrpc_client_open(&c, o, err, sizeof err), RRPC_OK); /* unknown fields all 0 */
    rrpc_client_close(c);
    newer.bytes[sizeof(rrpc_client_options) + 3] = 1; /* one set */
    CHECK_EQ_INT(rrpc_client_open(&c, o, err, sizeof err), RRPC_EINVAL);
    CHECK(c == NULL && strstr(err, "newer rrpc.h") != NULL);

    rrpc_server_options so;
    rrpc_server_options_init(&so);
    so.service = "x";
    so.size = 0; /* not from _init */
    rrpc_server *s = NULL;
    CHECK_EQ_INT(rrpc_server_new(&s, &so), RRPC_EINVAL);
    rrpc_async_options ao;
    rrpc_async_options_init(&ao);
    ao.size = 3;
    rrpc_async *a = NULL;
    CHECK_EQ_INT(rrpc_async_open(&a, &ao, err, sizeof err), RRPC_EINVAL);
    CHECK(strstr(err, "_init") != NULL);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    CHECK(rrpc_admin_open(&admin, NULL, NULL, 0) == RRPC_OK);
    test_init_stays_inside();
    running r = {0};
    test_server_old_exact(&r);
    test_server_old_shadowed();
    test_client_old();
    test_call_options_old();
    test_async_old();
    if (r.srv)
        test_stats_old(&r);
    test_sizes_refused();
    if (r.srv)
        stop_server(&r);
    rrpc_admin_close(admin);
    raw_close();
    return check_report();
}
