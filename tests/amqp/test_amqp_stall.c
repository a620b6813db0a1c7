/* test_amqp_stall.c -- rrpc's AMQP clients with a paused broker: the
 * private node of tests/harness/with-rabbitmq.sh is frozen (SIGSTOP of its
 * beam.smp, BEAM_PID) while a calc-server serves "calc" on it
 * (test_amqp_broker.sh starts both, with ?heartbeat=2 in the URL).
 *
 * What it pins down (src/amqp/async_amqp.c, link.c):
 *   - the async client's loop never waits for the frozen broker: 12 MiB of
 *     calls that the broker cannot read (they fill the socket's buffers)
 *     are held, not written, so a 50 ms ticker on the same event base keeps
 *     ticking, and every call ends with RRPC_ETIMEDOUT at its deadline (not
 *     later than deadline + 1 s);
 *   - sync calls of 1 MiB each, 0.4 s timeout (no fail fast): each ends
 *     with RRPC_ETIMEDOUT in time -- once the socket is full, the request
 *     is not written (the write would block until the heartbeat gives
 *     up); and a sync call whose fail-fast probe (a passive declare) gets
 *     no answer ends at its timeout too, not at the 10 s of librabbitmq's
 *     rpc timeout or the heartbeat's 4 s;
 *   - the heartbeat: the async client declares the link lost once the
 *     broker has been silent for two heartbeats, reconnects once the
 *     broker is back (SIGCONT), and calls succeed again.
 *
 * Usage: test_amqp_stall BEAM_PID   ($RRPC_TEST_AMQP_URL)
 */
#include "check.h"

#include <rrpc/rrpc.h>

#include <event2/event.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BIG_CALLS    96
#define BIG_BYTES    (128 * 1024) /* 12 MiB in all: more than the sockets hold */
#define SYNC_BYTES   (1024 * 1024)
#define SYNC_CALLS   6 /* 6 MiB in all: the socket fills up */
#define SYNC_TIMEOUT 0.4
#define HEARTBEAT    2

static char url[512];
static struct event_base *base;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the log: the async client's "lost" and "reconnected" lines --------- */

static atomic_int lost_logged, back_logged;
static double lost_at;

static void on_log(rrpc_log_level level, const char *msg, void *udata)
{
    (void)level;
    (void)udata;
    fprintf(stderr, "  log: %s\n", msg);
    if (strstr(msg, "lost the RabbitMQ connection") && atomic_fetch_add(&lost_logged, 1) == 0)
        lost_at = now_s();
    if (strstr(msg, "reconnected to RabbitMQ"))
        atomic_fetch_add(&back_logged, 1);
}

/* ---- a ticker on the client's event base: the loop's pulse ------------- */

static double last_tick, max_gap;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    double t = now_s();
    if (last_tick > 0 && t - last_tick > max_gap)
        max_gap = t - last_tick;
    last_tick = t;
}

/* Runs the loop until *DONE reaches N or SECONDS pass. */
static void run_until(atomic_int *done, int n, double seconds)
{
    double until = now_s() + seconds;
    while ((done == NULL || atomic_load(done) < n) && now_s() < until)
        event_base_loop(base, EVLOOP_ONCE);
}

/* ---- calls ------------------------------------------------------------- */

typedef struct outcome {
    int status;
    double at;
} outcome;

static atomic_int done;

static void on_call(int status, json_t *result, json_t *error, void *udata)
{
    (void)result;
    (void)error;
    outcome *o = udata;
    o->status = status;
    o->at = now_s();
    atomic_fetch_add(&done, 1);
}

/* One small call, run to its end: its status. */
static int small_call(rrpc_async *a, double timeout_s)
{
    outcome o = {0, 0};
    atomic_store(&done, 0);
    json_t *p = json_pack("[ii]", 2, 3);
    int rc = rrpc_async_call(a, "calc", "add", p, timeout_s, on_call, &o);
    json_decref(p);
    if (rc != RRPC_OK)
        return rc;
    run_until(&done, 1, timeout_s + 2);
    return atomic_load(&done) == 1 ? o.status : RRPC_ETIMEDOUT;
}

/* ---- the sync caller, on a thread of its own --------------------------- */

typedef struct sync_call {
    rrpc_client *c;      /* fail_fast 0: the calls publish at once */
    rrpc_client *probed; /* fail fast: the probe asks the broker */
    int probed_status;
    double probed_took;
    pthread_t thread;
    int timed_out;  /* calls that ended with RRPC_ETIMEDOUT */
    int unwritten;  /* ... because their request could not be written */
    double longest; /* the longest call, s */
} sync_call;

static void *sync_main(void *arg)
{
    sync_call *sc = arg;
    char *big = malloc(SYNC_BYTES + 1);
    memset(big, 'y', SYNC_BYTES);
    big[SYNC_BYTES] = '\0';
    json_t *p = json_pack("[s]", big);
    free(big);
    for (int i = 0; i < SYNC_CALLS; i++) {
        json_t *result = NULL;
        double t0 = now_s();
        int st = rrpc_call(sc->c, "calc", "echo", p, SYNC_TIMEOUT, &result, NULL);
        double took = now_s() - t0;
        const char *why = rrpc_client_errmsg(sc->c);
        fprintf(stderr, "  sync call %d: status %d after %.2f s: %s\n", i, st, took, why);
        sc->timed_out += st == RRPC_ETIMEDOUT;
        sc->unwritten += st == RRPC_ETIMEDOUT && strstr(why, "read nothing") != NULL;
        sc->longest = took > sc->longest ? took : sc->longest;
        json_decref(result);
    }
    json_decref(p);
    json_t *q = json_pack("[ii]", 1, 2), *result = NULL;
    double t0 = now_s();
    sc->probed_status = rrpc_call(sc->probed, "calc", "add", q, SYNC_TIMEOUT, &result, NULL);
    sc->probed_took = now_s() - t0;
    fprintf(stderr, "  probed call: status %d after %.2f s: %s\n", sc->probed_status,
            sc->probed_took, rrpc_client_errmsg(sc->probed));
    json_decref(result);
    json_decref(q);
    return NULL;
}

/* ---- the watchdog: a client stuck in the frozen broker must not leave it
 * frozen (nor hang the test until ctest's timeout) ---------------------- */

static pid_t beam;
static atomic_int finished;

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 300 && !atomic_load(&finished); i++)
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    if (atomic_load(&finished))
        return NULL;
    kill(beam, SIGCONT);
    fprintf(stderr, "test_amqp_stall: stuck for 30 s (a client blocked on the frozen broker?)\n");
    fflush(NULL);
    _exit(1);
}

int main(int argc, char **argv)
{
    const char *u = getenv("RRPC_TEST_AMQP_URL");
    if (argc != 2 || u == NULL) {
        fprintf(stderr, "usage: test_amqp_stall BEAM_PID ($RRPC_TEST_AMQP_URL)\n");
        return 2;
    }
    beam = (pid_t)atol(argv[1]);
    pthread_t watchdog;
    pthread_create(&watchdog, NULL, watchdog_main, NULL);
    snprintf(url, sizeof url, "%s?heartbeat=%d", u, HEARTBEAT);
    rrpc_set_log_fn(on_log, NULL);
    base = event_base_new();
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval every = {0, 50000};
    event_add(tick, &every);

    rrpc_async_options o;
    rrpc_async_options_init(&o);
    o.url = url;
    o.event_base = base;
    rrpc_async *a = NULL;
    char err[256];
    if (!CHECK(rrpc_async_open(&a, &o, err, sizeof err) == RRPC_OK)) {
        fprintf(stderr, "rrpc_async_open: %s\n", err);
        return 1;
    }
    rrpc_client_options co;
    rrpc_client_options_init(&co);
    co.url = url;
    sync_call sc = {.timed_out = 0};
    if (!CHECK(rrpc_client_open(&sc.probed, &co, err, sizeof err) == RRPC_OK)) {
        fprintf(stderr, "rrpc_client_open: %s\n", err);
        return 1;
    }
    co.fail_fast = 0;
    if (!CHECK(rrpc_client_open(&sc.c, &co, err, sizeof err) == RRPC_OK)) {
        fprintf(stderr, "rrpc_client_open: %s\n", err);
        return 1;
    }
    CHECK_EQ_INT(small_call(a, 5), RRPC_OK);
    json_t *warm = json_pack("[ii]", 1, 1), *wr = NULL;
    CHECK_EQ_INT(rrpc_call(sc.probed, "calc", "add", warm, 5.0, &wr, NULL), RRPC_OK);
    json_decref(wr);
    json_decref(warm);

    /* ---- the broker freezes ---- */
    CHECK_EQ_INT(kill(beam, SIGSTOP), 0);
    double t0 = now_s();
    pthread_create(&sc.thread, NULL, sync_main, &sc);
    static outcome big[BIG_CALLS + 1];
    char *text = malloc(BIG_BYTES + 1);
    memset(text, 'x', BIG_BYTES);
    text[BIG_BYTES] = '\0';
    json_t *p = json_pack("[s]", text);
    free(text);
    atomic_store(&done, 0);
    int accepted = 0;
    for (int i = 0; i < BIG_CALLS; i++)
        accepted += rrpc_async_call(a, "calc", "echo", p, 3.0, on_call, &big[i]) == RRPC_OK;
    json_decref(p);
    json_t *small = json_pack("[ii]", 1, 1);
    accepted += rrpc_async_call(a, "calc", "add", small, 1.5, on_call, &big[BIG_CALLS]) == RRPC_OK;
    json_decref(small);
    CHECK_EQ_INT(accepted, BIG_CALLS + 1);
    double queued = now_s() - t0;
    last_tick = 0;
    max_gap = 0;
    run_until(&done, BIG_CALLS + 1, 6);
    int timed_out = 0;
    double latest = 0;
    for (int i = 0; i < BIG_CALLS; i++) {
        timed_out += big[i].status == RRPC_ETIMEDOUT;
        if (big[i].at - t0 > latest)
            latest = big[i].at - t0;
    }
    double small_at = big[BIG_CALLS].at - t0;
    printf("# frozen: %d calls queued in %.3f s; %d of %d big calls timed out, the last at "
           "%.2f s (deadline 3 s); the small one (1.5 s) at %.2f s, status %d; the loop's "
           "longest gap %.3f s\n",
           BIG_CALLS + 1, queued, timed_out, BIG_CALLS, latest, small_at, big[BIG_CALLS].status,
           max_gap);
    CHECK(queued < 1.5); /* encoding 12 MiB of JSON on a busy machine; no waiting */
    CHECK_EQ_INT(timed_out, BIG_CALLS);
    CHECK(latest < 4.0);
    CHECK_EQ_INT(big[BIG_CALLS].status, RRPC_ETIMEDOUT);
    CHECK(small_at >= 1.4 && small_at < 2.5);
    CHECK(max_gap < 0.5);

    /* The heartbeat: silent for two heartbeats, the link is declared lost. */
    run_until(&lost_logged, 1, 4.0 * HEARTBEAT + 2);
    printf("# the async client declared the link lost %.2f s after the freeze (heartbeat %d s)\n",
           atomic_load(&lost_logged) ? lost_at - t0 : -1.0, HEARTBEAT);
    CHECK(atomic_load(&lost_logged) >= 1);
    pthread_join(sc.thread, NULL);
    printf("# sync calls of %d KiB, %.1f s timeout: %d of %d timed out (%d not written: the "
           "socket was full), the longest took %.2f s\n",
           SYNC_BYTES >> 10, SYNC_TIMEOUT, sc.timed_out, SYNC_CALLS, sc.unwritten, sc.longest);
    CHECK_EQ_INT(sc.timed_out, SYNC_CALLS);
    CHECK(sc.unwritten >= 1);
    CHECK(sc.longest < SYNC_TIMEOUT + 0.5);
    printf("# a sync call whose fail-fast probe got no answer: status %d after %.2f s\n",
           sc.probed_status, sc.probed_took);
    CHECK(sc.probed_status == RRPC_ETIMEDOUT || sc.probed_status == RRPC_ECONNECT);
    CHECK(sc.probed_took < SYNC_TIMEOUT + 0.5);
    CHECK(max_gap < 0.5);

    /* ---- the broker is back ---- */
    CHECK_EQ_INT(kill(beam, SIGCONT), 0);
    double t1 = now_s();
    int st = RRPC_ETIMEDOUT;
    while (st != RRPC_OK && now_s() - t1 < 20) {
        st = small_call(a, 1.0);
        if (st != RRPC_OK)
            run_until(NULL, 0, 0.3);
    }
    printf("# after SIGCONT: a call succeeded %.2f s later; reconnects logged: %d\n", now_s() - t1,
           atomic_load(&back_logged));
    CHECK_EQ_INT(st, RRPC_OK);
    CHECK(atomic_load(&back_logged) >= 1);
    json_t *r = NULL;
    json_t *pp = json_pack("[ii]", 20, 22);
    CHECK_EQ_INT(rrpc_call(sc.c, "calc", "add", pp, 5.0, &r, NULL), RRPC_OK);
    CHECK(json_integer_value(r) == 42);
    json_decref(r);
    json_decref(pp);

    rrpc_client_close(sc.c);
    rrpc_client_close(sc.probed);
    rrpc_async_close(a);
    event_free(tick);
    event_base_free(base);
    rrpc_set_log_fn(NULL, NULL);
    atomic_store(&finished, 1);
    pthread_join(watchdog, NULL);
    return check_report();
}
