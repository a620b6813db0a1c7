/* test_shard.c -- a service sharded over several request lists
 * (rrpc_server_options.shards, PROTOCOL.md section 1) on a real redis-server
 * started by harness/with-redis.sh.
 *
 * The requests are made visible before any worker runs: the service's
 * registry config is written by hand first (as a registered server would
 * write it), then callers queue their calls and we look at each shard's
 * list with a raw connection; only then does the server start and must
 * answer every queued call.  Which shard a call went to is also seen from
 * the inside: with 3 shards and 3 workers each worker pops one shard, so
 * the set of worker threads that ran a client's calls tells its shards.
 */
#include "harness.h"
#include "core/shard.h"
#include "redis/conn.h"

#include <stdatomic.h>

#define SERVICE "sharded"
#define SHARDS  3
#define CALLERS 6

static atomic_int notes;

static json_t *m_note(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    atomic_fetch_add(&notes, 1);
    return json_null();
}

/* The worker threads that ran whoami, in order of first appearance. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t seen[16];
static int nseen;

static json_t *m_whoami(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    pthread_mutex_lock(&seen_mu);
    int i = 0;
    while (i < nseen && !pthread_equal(seen[i], pthread_self()))
        i++;
    if (i == nseen && nseen < 16)
        seen[nseen++] = pthread_self();
    pthread_mutex_unlock(&seen_mu);
    return json_integer(i);
}

static void forget_threads(void)
{
    pthread_mutex_lock(&seen_mu);
    nseen = 0;
    pthread_mutex_unlock(&seen_mu);
}

static int threads_seen(void)
{
    pthread_mutex_lock(&seen_mu);
    int n = nseen;
    pthread_mutex_unlock(&seen_mu);
    return n;
}

static rrpc_server *new_server(int shards, int workers)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = SERVICE;
    o.workers = workers;
    o.shards = shards;
    o.handle_signals = 0;
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

static long long llen(const char *key)
{
    return cmd_int(2, "LLEN", key, NULL);
}

static long long shard_len(int k)
{
    char key[64];
    rrpc__shard_key(key, sizeof key, SERVICE, k);
    return llen(key);
}

static long long all_shards_len(void)
{
    long long n = 0;
    for (int k = 0; k < SHARDS; k++)
        n += shard_len(k);
    return n;
}

/* ---- options ------------------------------------------------------------- */

static void test_options(void)
{
    rrpc_server_options o;
    rrpc_server *s = NULL;
    rrpc_server_options_init(&o);
    CHECK(o.shards == 0 || o.shards == 1); /* one list by default */
    o.service = SERVICE;
    o.shards = -1;
    CHECK(rrpc_server_new(&s, &o) == RRPC_EINVAL && s == NULL);
    o.shards = RRPC__MAX_SHARDS + 1;
    CHECK(rrpc_server_new(&s, &o) == RRPC_EINVAL && s == NULL);
    o.shards = 2;
    o.reliable = 1; /* not sharded (yet): refused, not silently unsharded */
    CHECK(rrpc_server_new(&s, &o) == RRPC_EINVAL && s == NULL);
    o.reliable = 0;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK && s != NULL);
    rrpc_server_free(s);
}

/* ---- callers queue before the server runs ------------------------------- */

typedef struct caller {
    pthread_t thread;
    int n, rc;
    json_int_t result;
} caller;

static void *call_add(void *arg)
{
    caller *c = arg;
    rrpc_client *cl = open_client_with(NULL);
    json_t *result = NULL, *params = json_pack("[i, i]", c->n, 100);
    c->rc = cl ? rrpc_call(cl, SERVICE, "add", params, 20, &result, NULL) : RRPC_ECONNECT;
    c->result = json_integer_value(result);
    json_decref(result);
    json_decref(params);
    rrpc_client_close(cl);
    return NULL;
}

/* What a registered, live, 3-shard service looks like to callers before
 * its first worker: the config a server writes, and a heartbeat far in the
 * future for a stand-in worker. */
static void fake_registration(void)
{
    rrpc__reply *r =
        cmd(8, "HSET", "{" SERVICE "}:config", "max_queue", "0", "ttl_ms", "5000", "shards", "3");
    CHECK(r && rrpc__reply_type(r) == RRPC__REPLY_INTEGER);
    rrpc__reply_free(r);
    r = cmd(4, "ZADD", "{" SERVICE "}:workers", "99999999999999", "stand-in");
    CHECK(r && rrpc__reply_type(r) == RRPC__REPLY_INTEGER);
    rrpc__reply_free(r);
}

static void test_queued_calls_spread_and_answered(void)
{
    fake_registration();
    /* Notifications of one client go to the shards in turn. */
    rrpc_client *cl = open_client_with(NULL);
    for (int i = 0; i < SHARDS; i++)
        CHECK(rrpc_notify(cl, SERVICE, "note", NULL) == RRPC_OK);
    for (int k = 0; k < SHARDS; k++)
        CHECK(shard_len(k) == 1);
    /* Calls of several clients wait on the shards' lists. */
    caller callers[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        callers[i].n = i;
        callers[i].rc = -999;
        pthread_create(&callers[i].thread, NULL, call_add, &callers[i]);
    }
    WAIT_UNTIL(all_shards_len() == SHARDS + CALLERS, 10);
    CHECK(all_shards_len() == SHARDS + CALLERS);
    CHECK(shard_len(SHARDS) == 0); /* nothing beyond the last shard */

    /* The operators' view sums the queue over the shards. */
    rrpc_admin *admin = NULL;
    char err[256];
    CHECK(rrpc_admin_open(&admin, NULL, err, sizeof err) == RRPC_OK);
    json_t *info = NULL;
    CHECK(admin && rrpc_admin_info(admin, SERVICE, &info) == RRPC_OK);
    CHECK(json_integer_value(json_object_get(info, "queue")) == SHARDS + CALLERS);
    CHECK(json_integer_value(json_object_get(info, "shards")) == SHARDS);
    json_decref(info);
    info = NULL;

    running srv;
    run_server(&srv, new_server(SHARDS, SHARDS));
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(callers[i].thread, NULL);
        CHECK(callers[i].rc == RRPC_OK);
        CHECK(callers[i].result == i + 100);
    }
    WAIT_UNTIL(atomic_load(&notes) == SHARDS, 5);
    CHECK(atomic_load(&notes) == SHARDS);
    CHECK(all_shards_len() == 0);

    /* One client's calls and batches: round-robin over the 3 shards, so
     * over the 3 workers that each pop one of them. */
    forget_threads();
    json_t *result = NULL;
    for (int i = 0; i < 2 * SHARDS; i++) {
        CHECK(rrpc_call(cl, SERVICE, "whoami", NULL, 5, &result, NULL) == RRPC_OK);
        json_decref(result);
    }
    CHECK(threads_seen() == SHARDS);
    forget_threads();
    json_t *batch = json_pack("[{s:s}]", "method", "whoami"), *responses = NULL;
    for (int i = 0; i < SHARDS; i++) {
        CHECK(rrpc_call_batch(cl, SERVICE, batch, 5, &responses) == RRPC_OK);
        json_decref(responses);
    }
    json_decref(batch);
    CHECK(threads_seen() == SHARDS);

    /* The server published its shard count and its raised thread count. */
    CHECK(admin && rrpc_admin_info(admin, SERVICE, &info) == RRPC_OK);
    json_t *workers = json_object_get(info, "workers");
    int found = 0;
    for (size_t i = 0; i < json_array_size(workers); i++) {
        json_t *w = json_array_get(workers, i);
        if (json_integer_value(json_object_get(w, "shards")) == SHARDS &&
            json_integer_value(json_object_get(w, "threads")) == SHARDS)
            found++;
    }
    CHECK(found == 1);
    json_decref(info);
    rrpc_admin_close(admin);

    /* A caller that reads no registry pushes onto shard 0 only, which is
     * the service's usual list: one worker runs all its calls. */
    rrpc_client_options no_ff;
    rrpc_client_options_init(&no_ff);
    no_ff.fail_fast = 0;
    rrpc_client *plain = open_client_with(&no_ff);
    forget_threads();
    for (int i = 0; i < 2 * SHARDS; i++) {
        CHECK(rrpc_call(plain, SERVICE, "whoami", NULL, 5, &result, NULL) == RRPC_OK);
        json_decref(result);
    }
    CHECK(threads_seen() == 1);
    rrpc_client_close(plain);

    /* A reply key that is one of the shards' lists would be popped as a
     * request again: it becomes a dead letter instead. */
    rrpc__reply *r = cmd(3, "RPUSH", SERVICE,
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"x\","
                         "\"reply_to\":\"" SERVICE "#2\"}");
    rrpc__reply_free(r);
    WAIT_UNTIL(llen(SERVICE ":dead") == 1, 5);
    CHECK(llen(SERVICE ":dead") == 1);
    CHECK(shard_len(2) == 0);

    rrpc_client_close(cl);
    stop_server(&srv);
}

/* Fewer workers than shards: raised, so that every shard is served. */
static void test_workers_raised(void)
{
    running srv;
    run_server(&srv, new_server(4, 1));
    /* Requests pushed straight onto each shard, as a peer that knows the
     * shard names might: every one is answered. */
    for (int k = 0; k < 4; k++) {
        char key[64], text[160];
        rrpc__shard_key(key, sizeof key, SERVICE, k);
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[%d,1],\"id\":\"r%d\"}", k, k);
        rrpc__reply_free(cmd(3, "RPUSH", key, text));
    }
    for (int k = 0; k < 4; k++) {
        char key[16];
        snprintf(key, sizeof key, "r%d", k);
        rrpc__reply *r = cmd(3, "BLPOP", key, "5");
        CHECK(r && rrpc__reply_type(r) == RRPC__REPLY_ARRAY);
        rrpc__reply_free(r);
    }
    stop_server(&srv);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_options();
    test_queued_calls_spread_and_answered();
    test_workers_raised();
    raw_close();
    return check_report();
}
