/* test_async_shard.c -- the async client on a sharded service and across a
 * broken link (resend_on_reconnect), on a real redis-server started by
 * harness/with-redis.sh ($REDIS_URL).
 *
 * Spreading: the service's registry config says 3 shards before any worker
 * runs, so the calls and notifications the client queues stay visible on
 * each shard's list; then a 3-shard server with 3 workers (worker i pops
 * shard i) answers every one, and the set of worker threads that ran a
 * later burst tells that every shard got calls while served too.
 *
 * Resending: thousands of calls in flight, the links killed twice under
 * load (CLIENT KILL TYPE normal: the client's and the workers'); every
 * callback runs once and every call is answered.  Against a reliable
 * server each call's effect (an INCR applied with its answer) lands once;
 * against an at-most-once one the handler may have run a call twice.
 * A call whose deadline passes while the link is down is not sent again
 * (its text is queued once, the other call's twice, on the shard it went to
 * first) and fails with RRPC_ETIMEDOUT.  The default (no resend) is test_async.c's
 * test_connection_loss.
 */
#include "core/clock.h"
#include "core/shard.h"
#include "harness.h"
#include "redis/conn.h"

#include <signal.h>
#include <stdatomic.h>

#define SHARDED "ash"
#define SHARDS  3

/* ---- handlers ------------------------------------------------------------ */

static atomic_int runs;

/* count(i): counts its runs, INCRs <service>:effects with its answer
 * (exactly once per call in reliable mode), answers i. */
static json_t *m_count(rrpc_request *req, void *udata)
{
    const char *key = udata;
    json_int_t i;
    if (rrpc_param_int(req, 0, "i", &i))
        return NULL;
    atomic_fetch_add(&runs, 1);
    const char *argv[] = {"INCR", key};
    if (rrpc_request_add_effect(req, 2, argv) != RRPC_OK)
        return rrpc_request_error(req, 1, "no effect", NULL);
    return json_integer(i);
}

static rrpc_server *new_server(const char *service, int shards, int workers, int reliable,
                               const char *effects_key)
{
    rrpc_server *s = new_sharded_server(service, shards, workers, reliable);
    CHECK(rrpc_server_register(s, "count", m_count, (void *)effects_key, NULL) == RRPC_OK);
    return s;
}

/* ---- calls, counted per call --------------------------------------------- */

typedef struct expect {
    json_int_t want;   /* the result */
    atomic_int calls;  /* how often the callback ran */
    atomic_int status; /* its last status */
    atomic_int right;  /* RRPC_OK with the wanted result */
} expect;

static atomic_int done_count;

static void on_done(int status, json_t *result, json_t *error, void *udata)
{
    (void)error;
    expect *e = udata;
    atomic_fetch_add(&e->calls, 1);
    atomic_store(&e->status, status);
    if (status == RRPC_OK && json_integer_value(result) == e->want)
        atomic_store(&e->right, 1);
    atomic_fetch_add(&done_count, 1);
}

static void reset(expect *es, int n)
{
    for (int i = 0; i < n; i++) {
        es[i].want = i;
        atomic_store(&es[i].calls, 0);
        atomic_store(&es[i].status, 1);
        atomic_store(&es[i].right, 0);
    }
    atomic_store(&done_count, 0);
}

/* Counts the calls whose callback ran exactly once / answered right. */
static void tally(const expect *es, int n, int *once, int *right)
{
    *once = *right = 0;
    for (int i = 0; i < n; i++) {
        *once += atomic_load(&es[i].calls) == 1;
        *right += atomic_load(&es[i].right) == 1;
    }
}

static rrpc_async *open_async(const char *url, int resend)
{
    rrpc_async_options o;
    rrpc_async_options_init(&o);
    CHECK(o.resend_on_reconnect == 0); /* the default: fail at a broken link */
    o.url = url;
    o.timeout_s = 20;
    o.resend_on_reconnect = resend;
    return open_async_with(&o);
}

static long long llen(const char *key)
{
    return cmd_int(2, "LLEN", key, NULL);
}

static long long shard_len(int k)
{
    char key[64];
    rrpc__shard_key(key, sizeof key, SHARDED, k);
    return llen(key);
}

/* ---- spreading over shards ------------------------------------------------ */

#define QUEUED 60

static void test_spread_over_shards(void)
{
    static expect es[QUEUED];
    reset(es, QUEUED);
    /* What a registered, live, 3-shard service looks like before its first
     * worker (the config a server writes, a stand-in heartbeat). */
    rrpc__reply_free(
        cmd(8, "HSET", "{" SHARDED "}:config", "max_queue", "0", "ttl_ms", "5000", "shards", "3"));
    rrpc__reply_free(cmd(4, "ZADD", "{" SHARDED "}:workers", "99999999999999", "stand-in"));
    rrpc_async *a = open_async(NULL, 0);
    if (a == NULL)
        return;
    /* The first push asks the registry; until it answers, shard 0. */
    CHECK(rrpc_async_notify(a, SHARDED, "note", NULL) == RRPC_OK);
    WAIT_UNTIL(shard_len(0) == 1, 5 * time_scale());
    rrpc__sleep(0.2);
    for (int i = 0; i < QUEUED; i++) {
        json_t *p = json_pack("[I, i]", (json_int_t)i, 0);
        CHECK(rrpc_async_call(a, SHARDED, "add", p, 20, on_done, &es[i]) == RRPC_OK);
        json_decref(p);
    }
    for (int i = 0; i < 2 * SHARDS; i++)
        CHECK(rrpc_async_notify(a, SHARDED, "note", NULL) == RRPC_OK);
    long long want = 1 + QUEUED + 2 * SHARDS;
    WAIT_UNTIL(shard_len(0) + shard_len(1) + shard_len(2) == want, 5 * time_scale());
    long long per[SHARDS];
    for (int k = 0; k < SHARDS; k++) {
        per[k] = shard_len(k);
        CHECK(per[k] >= 10); /* each shard got its share */
    }
    CHECK(per[0] + per[1] + per[2] == want);
    CHECK(shard_len(SHARDS) == 0);
    printf("queued per shard: %lld %lld %lld\n", per[0], per[1], per[2]);

    /* The server answers every queued call and runs every notification. */
    running srv;
    run_server(&srv, new_server(SHARDED, SHARDS, SHARDS, 0, SHARDED ":effects"));
    CHECK(wait_live(SHARDED, 5));
    WAIT_UNTIL(atomic_load(&done_count) == QUEUED && atomic_load(&notes) == 1 + 2 * SHARDS,
               10 * time_scale());
    int once, right;
    tally(es, QUEUED, &once, &right);
    CHECK(once == QUEUED && right == QUEUED);
    CHECK(atomic_load(&notes) == 1 + 2 * SHARDS);

    /* Served: a burst reaches every worker, so every shard. */
    static expect who[300];
    reset(who, 300);
    for (int i = 0; i < 300; i++)
        CHECK(rrpc_async_call(a, SHARDED, "whoami", NULL, 20, on_done, &who[i]) == RRPC_OK);
    WAIT_UNTIL(atomic_load(&done_count) == 300, 10 * time_scale());
    int threads = whoami_threads();
    CHECK(threads == SHARDS);
    rrpc_async_close(a);
    stop_server(&srv);
}

/* ---- resending after a broken link ---------------------------------------- */

#define LOAD_MAX 4000

static int load; /* LOAD_MAX, or fewer under valgrind */

/* LOAD_MAX (fewer under valgrind) calls to SERVICE's count, the links killed twice while they are
 * answered; returns how many calls were answered right (once each). */
static int calls_across_kills(const char *service, expect *es)
{
    reset(es, load);
    rrpc_async *a = open_async(NULL, 1);
    if (a == NULL)
        return 0;
    for (int i = 0; i < load; i++) {
        if (i == load / 4 || i == load / 2) {
            /* Kills while calls are queued, taken, answered and pushed;
             * again while the links are still down from the first kill. */
            long long killed = 0;
            double until = rrpc__monotonic() + 5 * time_scale();
            while (killed < 1 && rrpc__monotonic() < until) {
                rrpc__reply *r = cmd(4, "CLIENT", "KILL", "TYPE", "normal");
                killed =
                    r && rrpc__reply_type(r) == RRPC__REPLY_INTEGER ? rrpc__reply_integer(r) : 0;
                rrpc__reply_free(r);
                if (killed < 1)
                    rrpc__sleep(0.01);
            }
            CHECK(killed >= 1);
        }
        /* New calls are refused while the link is down. */
        json_t *p = json_pack("[I]", (json_int_t)i);
        double until = rrpc__monotonic() + 10;
        int rc;
        while ((rc = rrpc_async_call(a, service, "count", p, 20, on_done, &es[i])) ==
                   RRPC_ECONNECT &&
               rrpc__monotonic() < until)
            rrpc__sleep(0.005);
        CHECK(rc == RRPC_OK);
        json_decref(p);
    }
    WAIT_UNTIL(atomic_load(&done_count) >= load, 30 * time_scale());
    rrpc__sleep(0.3); /* late duplicates would show as second callbacks */
    int once, right;
    tally(es, load, &once, &right);
    for (int i = 0, shown = 0; i < load && shown < 5; i++)
        if (!atomic_load(&es[i].right) && ++shown)
            fprintf(stderr, "%s call %d: status %d (%s)\n", service, i, atomic_load(&es[i].status),
                    rrpc_strerror(atomic_load(&es[i].status)));
    CHECK(once == load);
    CHECK(atomic_load(&done_count) == load);
    rrpc_async_close(a);
    return right;
}

static void test_resend_reliable(void)
{
    static expect es[LOAD_MAX];
    atomic_store(&runs, 0);
    running srv;
    run_server(&srv, new_server("arel", 1, 2, 1, "arel:effects"));
    CHECK(wait_live("arel", 5));
    int right = calls_across_kills("arel", es);
    CHECK(right == load);
    /* Each call's effect applied once, however often it ran. */
    rrpc__reply *r = cmd(2, "GET", "arel:effects");
    long long effects = r ? rrpc__reply_ll(r) : -1;
    rrpc__reply_free(r);
    CHECK(effects == load);
    printf("reliable: %d calls answered once, effects %lld, handler runs %d\n", right, effects,
           atomic_load(&runs));
    stop_server(&srv);
}

static void test_resend_at_most_once(void)
{
    static expect es[LOAD_MAX];
    atomic_store(&runs, 0);
    running srv;
    run_server(&srv, new_server("amo", 1, 2, 0, "amo:effects"));
    CHECK(wait_live("amo", 5));
    int right = calls_across_kills("amo", es);
    /* Every call answered once; the handler may have run some twice (a
     * resend of a call whose first copy had arrived). */
    CHECK(right == load);
    WAIT_UNTIL(llen("amo") == 0, 5 * time_scale());
    CHECK(atomic_load(&runs) >= load);
    printf("at-most-once: %d calls answered once, handler runs %d\n", right, atomic_load(&runs));
    stop_server(&srv);
}

/* ---- the deadline still applies -------------------------------------------- */

/* How many values of LIST contain NEEDLE. */
static int count_texts(const char *list, const char *needle, const char **first)
{
    static char kept[2][1024];
    rrpc__reply *r = cmd(4, "LRANGE", list, "0", "-1");
    int n = 0;
    for (size_t i = 0; r && i < rrpc__reply_count(r); i++) {
        const char *text = rrpc__reply_str(rrpc__reply_element(r, i), NULL);
        if (text && strstr(text, needle)) {
            if (n < 2)
                snprintf(kept[n], sizeof kept[n], "%s", text);
            n++;
        }
    }
    rrpc__reply_free(r);
    if (first)
        *first = n >= 2 && strcmp(kept[0], kept[1]) == 0 ? kept[0] : NULL;
    return n;
}

/* Copies of the call NEEDLE names on each of the 3 shards of "nobody";
 * returns the total, with *on the last shard that holds one. */
static int copies(const char *needle, int *on)
{
    int total = 0;
    for (int k = 0; k < SHARDS; k++) {
        char key[64];
        rrpc__shard_key(key, sizeof key, "nobody", k);
        int n = count_texts(key, needle, NULL);
        if (n > 0 && on)
            *on = k;
        total += n;
    }
    return total;
}

/* With a user whose logins are refused for a while, the link stays down
 * longer than the short call's timeout: that call fails with
 * RRPC_ETIMEDOUT and is not sent again; the long one is, identically and
 * to the shard it went to first (the service has 3). */
static void test_deadline_not_resent(void)
{
    rrpc__reply_free(cmd(7, "ACL", "SETUSER", "ashu", "on", ">ashpw", "~*", "+@all"));
    rrpc__reply_free(
        cmd(8, "HSET", "{nobody}:config", "max_queue", "0", "ttl_ms", "5000", "shards", "3"));
    /* A live stand-in worker: registered with none alive, the calls would
     * fail fast (rrpc_async_options.fail_fast). */
    rrpc__reply_free(cmd(4, "ZADD", "{nobody}:workers", "99999999999999", "stand-in"));
    const char *base = getenv("REDIS_URL");
    char url[512];
    if (strncmp(base, "unix://", 7) == 0)
        snprintf(url, sizeof url, "unix://ashu:ashpw@%s", base + 7);
    else
        snprintf(url, sizeof url, "redis://ashu:ashpw@%s", base + 8);
    static expect shorter, longer;
    reset(&shorter, 1);
    reset(&longer, 1);
    rrpc_async *a = open_async(url, 1);
    if (a == NULL)
        return;
    CHECK(rrpc_async_notify(a, "nobody", "warm", NULL) == RRPC_OK); /* learns the shards */
    WAIT_UNTIL(copies("\"warm\"", NULL) == 1, 5 * time_scale());
    rrpc__sleep(0.2);
    CHECK(rrpc_async_call(a, "nobody", "short", NULL, 0.5, on_done, &shorter) == RRPC_OK);
    CHECK(rrpc_async_call(a, "nobody", "long", NULL, 20, on_done, &longer) == RRPC_OK);
    WAIT_UNTIL(copies("\"short\"", NULL) + copies("\"long\"", NULL) == 2, 5 * time_scale());
    int first = -1, again = -1;
    CHECK(copies("\"short\"", NULL) == 1 && copies("\"long\"", &first) == 1);
    rrpc__reply_free(cmd(4, "ACL", "SETUSER", "ashu", "off"));
    rrpc__reply_free(cmd(4, "CLIENT", "KILL", "USER", "ashu"));
    WAIT_UNTIL(atomic_load(&shorter.calls) == 1, 5 * time_scale());
    rrpc__sleep(0.3);
    rrpc__reply_free(cmd(4, "ACL", "SETUSER", "ashu", "on"));
    WAIT_UNTIL(copies("\"long\"", NULL) == 2, 10 * time_scale());
    CHECK(copies("\"long\"", &again) == 2);
    CHECK(again == first); /* the same shard */
    char key[64];
    const char *same = NULL;
    rrpc__shard_key(key, sizeof key, "nobody", first);
    CHECK(count_texts(key, "\"long\"", &same) == 2);
    CHECK(same != NULL); /* the very same text: same id, reply key, deadline */
    CHECK(copies("\"short\"", NULL) == 1);
    CHECK(atomic_load(&shorter.calls) == 1 && atomic_load(&shorter.status) == RRPC_ETIMEDOUT);
    CHECK(atomic_load(&longer.calls) == 0);
    rrpc_async_close(a);
    CHECK(atomic_load(&longer.calls) == 1 && atomic_load(&longer.status) == RRPC_ECANCELED);
    rrpc__reply_free(cmd(3, "ACL", "DELUSER", "ashu"));
    rrpc__reply_free(
        cmd(6, "DEL", "nobody", "nobody#1", "nobody#2", "{nobody}:config", "{nobody}:workers"));
}

int main(void)
{
    /* CLIENT KILL makes the server's workers write to dead sockets. */
    signal(SIGPIPE, SIG_IGN);
    if (raw_open() != 0)
        return 1;
    load = time_scale() > 1 ? LOAD_MAX / 4 : LOAD_MAX;
    test_spread_over_shards();
    test_deadline_not_resent();
    test_resend_reliable();
    test_resend_at_most_once();
    raw_close();
    return check_report();
}
