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

#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define SERVICE "sharded"
#define SHARDS  3
#define CALLERS 6

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
    o.reliable = 1; /* each shard its own in-flight keys */
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK && s != NULL);
    rrpc_server_free(s);
    s = NULL;
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
    run_server(&srv, new_sharded_server(SERVICE, SHARDS, SHARDS, 0));
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
    whoami_forget();
    json_t *result = NULL;
    for (int i = 0; i < 2 * SHARDS; i++) {
        CHECK(rrpc_call(cl, SERVICE, "whoami", NULL, 5, &result, NULL) == RRPC_OK);
        json_decref(result);
    }
    CHECK(whoami_threads() == SHARDS);
    whoami_forget();
    json_t *batch = json_pack("[{s:s}]", "method", "whoami"), *responses = NULL;
    for (int i = 0; i < SHARDS; i++) {
        CHECK(rrpc_call_batch(cl, SERVICE, batch, 5, &responses) == RRPC_OK);
        json_decref(responses);
    }
    json_decref(batch);
    CHECK(whoami_threads() == SHARDS);

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
    whoami_forget();
    for (int i = 0; i < 2 * SHARDS; i++) {
        CHECK(rrpc_call(plain, SERVICE, "whoami", NULL, 5, &result, NULL) == RRPC_OK);
        json_decref(result);
    }
    CHECK(whoami_threads() == 1);
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
    run_server(&srv, new_sharded_server(SERVICE, 4, 1, 0));
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

/* ---- reliable and sharded ------------------------------------------------ */

#define RSERVICE "relshard"
#define REFFECTS "relshard:effects"

/* job(id): one effect for ID (applied with its answer), the worker thread
 * that ran it (as whoami); with udata set (a doomed child) it never
 * returns. */
static json_t *m_job(rrpc_request *req, void *udata)
{
    const char *id;
    if (rrpc_param_string(req, 0, "id", &id))
        return NULL;
    if (udata)
        for (;;)
            pause();
    const char *effect[] = {"HINCRBY", REFFECTS, id, "1"};
    rrpc_request_add_effect(req, 4, effect);
    return m_whoami(req, NULL);
}

static rrpc_server *new_reliable(int doomed)
{
    rrpc_server_options o;
    server_options(&o, RSERVICE, 2, 2, 1);
    o.handle_signals = doomed;
    o.heartbeat_ttl_s = 1;
    o.heartbeat_interval_s = 0.3;
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    if (s == NULL)
        exit(1);
    rrpc_server_register(s, "job", m_job, doomed ? (void *)1 : NULL, NULL);
    return s;
}

static void push_job(const char *list, const char *id)
{
    char text[256];
    snprintf(text, sizeof text,
             "{\"jsonrpc\":\"2.0\",\"method\":\"job\",\"params\":[\"%s\"],\"id\":\"rs:%s\"}", id,
             id);
    rrpc__reply_free(cmd(3, "RPUSH", list, text));
}

/* The answer on rs:ID (new text), or NULL after SECONDS. */
static char *answer_of(const char *id, const char *seconds)
{
    char key[64];
    snprintf(key, sizeof key, "rs:%s", id);
    rrpc__reply *r = cmd(3, "BLPOP", key, seconds);
    char *text = r && rrpc__reply_count(r) == 2
                     ? strdup(rrpc__reply_str(rrpc__reply_element(r, 1), NULL))
                     : NULL;
    rrpc__reply_free(r);
    return text;
}

static long long held_by(const char *shard_tag)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "{%s}:inflight:*", shard_tag);
    rrpc__reply *keys = cmd(2, "KEYS", pattern);
    long long n = 0;
    for (size_t i = 0; keys && i < rrpc__reply_count(keys); i++)
        n += cmd_int(2, "HLEN", rrpc__reply_str(rrpc__reply_element(keys, i), NULL), NULL);
    rrpc__reply_free(keys);
    return n;
}

/* Reliable and sharded: each shard's in-flight keys carry its own list's
 * hash tag, and a request held by a worker that is killed goes back to
 * its own shard: answered once (one effect), by the worker of that shard
 * -- the same thread that answers a fresh request pushed onto that shard,
 * not the other shard's. */
static void test_reliable_shard_redelivers_to_its_shard(void)
{
    fflush(NULL);
    pid_t doomed = fork();
    if (doomed == 0) {
        rrpc_server *s = new_reliable(1);
        _exit(rrpc_server_run(s) == RRPC_OK ? 0 : 1);
    }
    WAIT_UNTIL(cmd_int(2, "SCARD", "{" RSERVICE "#1}:inflight", NULL) == 1 &&
                   cmd_int(2, "SCARD", "{" RSERVICE "}:inflight", NULL) == 1,
               5);
    push_job(RSERVICE "#1", "killed");
    WAIT_UNTIL(held_by(RSERVICE "#1") == 1, 5);
    CHECK(held_by(RSERVICE "#1") == 1 && held_by(RSERVICE) == 0);
    kill(doomed, SIGKILL);
    waitpid(doomed, NULL, 0);
    whoami_forget();
    running r;
    run_server(&r, new_reliable(0)); /* its reaper puts the request back on shard 1 */
    char *killed = answer_of("killed", "6");
    CHECK(killed && strstr(killed, "\"result\":0")); /* the first thread seen */
    push_job(RSERVICE "#1", "fresh1");
    char *fresh1 = answer_of("fresh1", "5");
    CHECK(fresh1 && strstr(fresh1, "\"result\":0")); /* the same thread: shard 1's */
    push_job(RSERVICE, "fresh0");
    char *fresh0 = answer_of("fresh0", "5");
    CHECK(fresh0 && strstr(fresh0, "\"result\":1")); /* shard 0's: another */
    free(killed);
    free(fresh1);
    free(fresh0);
    rrpc__reply *n = cmd(3, "HGET", REFFECTS, "killed");
    CHECK(n && rrpc__reply_ll(n) == 1);
    rrpc__reply_free(n);
    rrpc__sleep(0.3);
    CHECK(cmd_int(2, "LLEN", "rs:killed", NULL) == 0); /* answered once */
    CHECK(cmd_int(2, "LLEN", RSERVICE ":dead", NULL) == 0);
    rrpc__reply *counted = cmd(3, "HGET", RSERVICE ":stats", "redelivered");
    CHECK(counted && rrpc__reply_ll(counted) == 1);
    rrpc__reply_free(counted);
    /* Dedup is per shard: the memory of shard 1's answers is in its slot. */
    rrpc__reply *done = cmd(2, "KEYS", "{" RSERVICE "#1}:done:*");
    CHECK(done && rrpc__reply_count(done) == 2); /* killed, fresh1 */
    rrpc__reply_free(done);
    stop_server(&r);
    CHECK(held_by(RSERVICE "#1") == 0 && held_by(RSERVICE) == 0);
    CHECK(cmd_int(2, "SCARD", "{" RSERVICE "#1}:inflight", NULL) == 0);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_reliable_shard_redelivers_to_its_shard(); /* forks: before any thread exists */
    test_options();
    test_queued_calls_spread_and_answered();
    test_workers_raised();
    raw_close();
    return check_report();
}
