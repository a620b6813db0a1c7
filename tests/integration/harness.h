/* harness.h -- what every integration test needs around a real Redis.
 *
 * The integration tests run under tests/harness/with-redis.sh, which starts
 * a private redis-server and exports $REDIS_URL.  This header adds to the
 * common checks (tests/common/check.h: CHECK and friends, check_report)
 * handlers several tests register, a sharded server with them, an
 * in-process server on its own thread, a raw connection for looking
 * behind the API, WAIT_UNTIL, and a client.  It is a header of static
 * inline functions because each test is one translation unit linked
 * against the static library.
 */
#ifndef RRPC_TEST_HARNESS_H
#define RRPC_TEST_HARNESS_H

#include "core/clock.h"
#include "redis/conn.h"
#include "core/url.h"

#include "check.h"

#include <rrpc/rrpc.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How much longer than natively a timing may take here: $RRPC_TEST_TIME_SCALE
 * (set for the valgrind pass, which runs code some 20 times slower), else 1.
 * For bounds like "at once"; a bound that says what the library promises
 * (a timeout is kept) is not scaled. */
static inline double time_scale(void)
{
    const char *s = getenv("RRPC_TEST_TIME_SCALE");
    double v = s ? atof(s) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* ---- test handlers more than one test registers --------------------------- */

/* add(a, b): a + b. */
static inline json_t *m_add(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t a, b;
    if (rrpc_param_int(req, 0, "a", &a) || rrpc_param_int(req, 1, "b", &b))
        return NULL;
    return json_integer(a + b);
}

/* sleep(ms): sleeps MS milliseconds, then answers MS. */
static inline json_t *m_sleep(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t ms;
    if (rrpc_param_int(req, 0, "ms", &ms))
        return NULL;
    rrpc__sleep((double)ms / 1000.0);
    return json_integer(ms);
}

/* note(): a notification's handler; counts the notifications run. */
static atomic_int notes;

static inline json_t *m_note(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    atomic_fetch_add(&notes, 1);
    return json_null();
}

/* whoami(): the index of the worker thread that ran it, in order of first
 * appearance.  With as many workers as shards each thread pops one shard,
 * so the count of threads seen tells how many shards were served. */
static pthread_mutex_t whoami_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t whoami_seen[16];
static int whoami_n;

static inline json_t *m_whoami(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    pthread_mutex_lock(&whoami_mu);
    int i = 0;
    while (i < whoami_n && !pthread_equal(whoami_seen[i], pthread_self()))
        i++;
    if (i == whoami_n && whoami_n < 16)
        whoami_seen[whoami_n++] = pthread_self();
    pthread_mutex_unlock(&whoami_mu);
    return json_integer(i);
}

/* Forgets the threads seen (for the next server). */
static inline void whoami_forget(void)
{
    pthread_mutex_lock(&whoami_mu);
    whoami_n = 0;
    pthread_mutex_unlock(&whoami_mu);
}

/* How many worker threads have run whoami so far. */
static inline int whoami_threads(void)
{
    pthread_mutex_lock(&whoami_mu);
    int n = whoami_n;
    pthread_mutex_unlock(&whoami_mu);
    return n;
}

/* ---- a server on a thread of its own ------------------------------------ */

typedef struct running {
    rrpc_server *srv;
    pthread_t thread;
    int rc;
} running;

static inline void *harness_serve(void *arg)
{
    running *r = arg;
    r->rc = rrpc_server_run(r->srv);
    return NULL;
}

/* Runs SRV (already created and with its methods registered; owned by R
 * from now on) until stop_server(). */
static inline void run_server(running *r, rrpc_server *srv)
{
    r->srv = srv;
    r->rc = RRPC_OK;
    pthread_create(&r->thread, NULL, harness_serve, r);
}

static inline void stop_server(running *r)
{
    rrpc_server_stop(r->srv);
    pthread_join(r->thread, NULL);
    CHECK(r->rc == RRPC_OK);
    rrpc_server_free(r->srv);
    r->srv = NULL;
}

/* O, initialized for a server of SERVICE on SHARDS request lists with
 * WORKERS threads, RELIABLE or not, that leaves the signals to the test. */
static inline void server_options(rrpc_server_options *o, const char *service, int shards,
                                  int workers, int reliable)
{
    rrpc_server_options_init(o);
    o->service = service;
    o->workers = workers;
    o->shards = shards;
    o->reliable = reliable;
    o->handle_signals = 0;
}

/* A server_options() server with add, note and whoami registered (the test
 * registers more); its heartbeat (every 0.2 s, 1 s TTL) lets a test see it
 * come and go quickly.  Exits if the server cannot be made. */
static inline rrpc_server *new_sharded_server(const char *service, int shards, int workers,
                                              int reliable)
{
    rrpc_server_options o;
    server_options(&o, service, shards, workers, reliable);
    o.heartbeat_interval_s = 0.2;
    o.heartbeat_ttl_s = 1.0;
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    if (s == NULL)
        exit(1);
    CHECK(rrpc_server_register(s, "add", m_add, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(s, "note", m_note, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(s, "whoami", m_whoami, NULL, NULL) == RRPC_OK);
    return s;
}

/* ---- raw Redis ------------------------------------------------------------ */

static rrpc__conn *raw;

/* Opens the raw connection (to $REDIS_URL); 0 on success. */
static inline int raw_open(void)
{
    rrpc__url url;
    char err[256];
    if (rrpc__url_parse(&url, NULL, err, sizeof err) != RRPC_OK) {
        fprintf(stderr, "url: %s\n", err);
        return -1;
    }
    int rc = rrpc__conn_open(&raw, &url, 5, err, sizeof err);
    rrpc__url_free(&url);
    if (rc != RRPC_OK)
        fprintf(stderr, "raw connection: %s\n", err);
    return rc == RRPC_OK ? 0 : -1;
}

static inline void raw_close(void)
{
    rrpc__conn_close(raw);
    raw = NULL;
}

/* Runs one command of ARGC NUL-terminated arguments; the reply is new. */
static inline rrpc__reply *cmd(int argc, ...)
{
    const char *argv[16];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc && i < 16; i++)
        argv[i] = va_arg(ap, const char *);
    va_end(ap);
    rrpc__reply *r = NULL;
    if (rrpc__conn_append(raw, argc, argv, NULL) != RRPC_OK || rrpc__conn_read(raw, &r) != RRPC_OK)
        return NULL;
    return r;
}

/* The integer reply of a command of one to three arguments, or -999. */
static inline long long cmd_int(int argc, const char *a0, const char *a1, const char *a2)
{
    rrpc__reply *r = argc == 1 ? cmd(1, a0) : argc == 2 ? cmd(2, a0, a1) : cmd(3, a0, a1, a2);
    long long v = r && rrpc__reply_type(r) == RRPC__REPLY_INTEGER ? rrpc__reply_integer(r) : -999;
    rrpc__reply_free(r);
    return v;
}

/* Waits up to SECONDS (scaled) until SERVICE (an unprefixed, unsharded
 * list name) has a live worker in its registry (PROTOCOL.md section 9); 1
 * if it has.  A server started with run_server registers a moment later,
 * and a registration an earlier server of the same name left behind (its
 * {L}:config outlives it) makes a fail-fast client refuse calls until then.
 * Needs raw_open(). */
static inline int wait_live(const char *service, double seconds)
{
    char key[256], now[32];
    snprintf(key, sizeof key, "{%s}:workers", service);
    double until = rrpc__monotonic() + seconds * time_scale();
    do {
        rrpc__reply *t = cmd(1, "TIME");
        long long ms = t ? rrpc__reply_time_ms(t) : -1;
        rrpc__reply_free(t);
        snprintf(now, sizeof now, "%lld", ms);
        rrpc__reply *n = ms < 0 ? NULL : cmd(4, "ZCOUNT", key, now, "+inf");
        long long live =
            n && rrpc__reply_type(n) == RRPC__REPLY_INTEGER ? rrpc__reply_integer(n) : 0;
        rrpc__reply_free(n);
        if (live > 0)
            return 1;
        rrpc__sleep(0.02);
    } while (rrpc__monotonic() < until);
    return 0;
}

/* Polls COND (an expression) every 20 ms for up to SECONDS. */
#define WAIT_UNTIL(cond, seconds)                                                                  \
    do {                                                                                           \
        double until_ = rrpc__monotonic() + (seconds);                                             \
        while (!(cond) && rrpc__monotonic() < until_)                                              \
            rrpc__sleep(0.02);                                                                     \
    } while (0)

/* ---- a client --------------------------------------------------------------- */

/* A sync client on $REDIS_URL; OPTS may be NULL for the defaults. */
static inline rrpc_client *open_client_with(const rrpc_client_options *opts)
{
    rrpc_client *c = NULL;
    char err[256];
    int rc = rrpc_client_open(&c, opts, err, sizeof err);
    if (rc != RRPC_OK)
        fprintf(stderr, "client open: %s\n", err);
    CHECK(rc == RRPC_OK);
    return c;
}

/* An async client with OPTS (not NULL); NULL, said and checked, if it does
 * not open. */
static inline rrpc_async *open_async_with(const rrpc_async_options *opts)
{
    rrpc_async *a = NULL;
    char err[256];
    int rc = rrpc_async_open(&a, opts, err, sizeof err);
    if (rc != RRPC_OK)
        fprintf(stderr, "rrpc_async_open: %s\n", err);
    CHECK(rc == RRPC_OK);
    return a;
}

#endif /* RRPC_TEST_HARNESS_H */
