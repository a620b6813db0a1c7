/* test_priority.c -- call priorities (PROTOCOL.md section 7, "Priorities")
 * on a real redis-server started by harness/with-redis.sh.
 *
 * The order calls run in is seen from the inside: one worker runs them,
 * and the handler "mark" records its tag.  A backlog is built two ways:
 * behind a worker held busy by "hold" (batches of one, since a slow
 * handler shrinks the next batch), and before the server starts, so that
 * its first pops are full batches (LMPOP in at-most-once mode, the take
 * script's count in reliable mode).  Each way runs in both delivery modes;
 * a sharded service is fed by hand on one of its shards.  The calls of a
 * backlog are queued one at a time, each seen in its list before the next
 * is sent, so the push script's choice of list is checked too.
 */
#include "harness.h"
#include "core/keys.h"

#include <stdatomic.h>

#define MAX_TAGS 16

/* ---- handlers ----------------------------------------------------------- */

static pthread_mutex_t tags_mu = PTHREAD_MUTEX_INITIALIZER;
static char tags[MAX_TAGS][16];
static int ntags;

static json_t *m_mark(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *tag = NULL;
    if (rrpc_param_string(req, 0, "tag", &tag))
        return NULL;
    pthread_mutex_lock(&tags_mu);
    if (ntags < MAX_TAGS)
        snprintf(tags[ntags++], sizeof tags[0], "%s", tag);
    pthread_mutex_unlock(&tags_mu);
    return json_string(tag);
}

static atomic_int holding, release;

static json_t *m_hold(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    atomic_store(&holding, 1);
    double until = rrpc__monotonic() + 20;
    while (!atomic_load(&release) && rrpc__monotonic() < until)
        rrpc__sleep(0.005);
    return json_true();
}

/* The tags run so far, joined by spaces. */
static void tags_text(char *out, size_t len)
{
    pthread_mutex_lock(&tags_mu);
    out[0] = '\0';
    for (int i = 0; i < ntags; i++) {
        strncat(out, i ? " " : "", len - strlen(out) - 1);
        strncat(out, tags[i], len - strlen(out) - 1);
    }
    pthread_mutex_unlock(&tags_mu);
}

static int tags_count(void)
{
    pthread_mutex_lock(&tags_mu);
    int n = ntags;
    pthread_mutex_unlock(&tags_mu);
    return n;
}

static void tags_reset(void)
{
    pthread_mutex_lock(&tags_mu);
    ntags = 0;
    pthread_mutex_unlock(&tags_mu);
}

/* ---- servers ----------------------------------------------------------- */

/* NULL if the server refuses the combination (may_refuse) */
static rrpc_server *try_server(const char *service, int reliable, int shards, int workers,
                               int may_refuse);

static rrpc_server *new_server(const char *service, int reliable, int shards, int workers)
{
    return try_server(service, reliable, shards, workers, 0);
}

static rrpc_server *try_server(const char *service, int reliable, int shards, int workers,
                               int may_refuse)
{
    rrpc_server_options o;
    server_options(&o, service, shards, workers, reliable);
    rrpc_server *s = NULL;
    int rc = rrpc_server_new(&s, &o);
    if (rc != RRPC_OK && may_refuse)
        return NULL;
    CHECK(rc == RRPC_OK);
    if (s == NULL)
        exit(1);
    CHECK(rrpc_server_register(s, "mark", m_mark, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(s, "hold", m_hold, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(s, "add", m_add, NULL, NULL) == RRPC_OK);
    return s;
}

/* ---- the lists ------------------------------------------------------------ */

static long long llen(const char *list, int priority)
{
    char key[RRPC__KEY_MAX];
    rrpc__priority_key(key, sizeof key, list, priority);
    return cmd_int(2, "LLEN", key, NULL);
}

static long long queued(const char *list)
{
    return llen(list, RRPC_PRIORITY_HIGH) + llen(list, RRPC_PRIORITY_NORMAL) +
           llen(list, RRPC_PRIORITY_LOW);
}

static void clear_lists(const char *list)
{
    char high[RRPC__KEY_MAX], low[RRPC__KEY_MAX];
    rrpc__priority_key(high, sizeof high, list, RRPC_PRIORITY_HIGH);
    rrpc__priority_key(low, sizeof low, list, RRPC_PRIORITY_LOW);
    rrpc__reply_free(cmd(4, "DEL", list, high, low));
}

/* ---- calls on threads of their own ------------------------------------------ */

typedef struct caller {
    pthread_t thread;
    const char *service, *method, *tag;
    int priority;
    int rc;
    json_t *result;
} caller;

static void *call_thread(void *arg)
{
    caller *c = arg;
    rrpc_client *client = open_client_with(NULL);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.priority = c->priority;
    o.timeout_s = 20;
    json_t *params = c->tag ? json_pack("[s]", c->tag) : json_array();
    c->rc = client ? rrpc_call_with(client, c->service, c->method, params, &o, &c->result, NULL)
                   : RRPC_ECONNECT;
    json_decref(params);
    rrpc_client_close(client);
    return NULL;
}

static void start_call(caller *c, const char *service, const char *method, const char *tag,
                       int priority)
{
    *c = (caller){.service = service, .method = method, .tag = tag, .priority = priority};
    pthread_create(&c->thread, NULL, call_thread, c);
}

static void join_call(caller *c)
{
    pthread_join(c->thread, NULL);
    CHECK_EQ_INT(c->rc, RRPC_OK);
    json_decref(c->result);
}

/* The backlog "n0 low normal high" on SERVICE (a worker busy or none):
 * n0 finds no backlog and goes to L, the others behind it to their own
 * lists -- the high one to {L}:high, the low one to {L}:low.  Each call
 * is seen queued before the next is sent. */
static const char *const backlog_tags[] = {"n0", "low", "normal", "high"};
static const int backlog_prios[] = {RRPC_PRIORITY_NORMAL, RRPC_PRIORITY_LOW, RRPC_PRIORITY_NORMAL,
                                    RRPC_PRIORITY_HIGH};
#define BACKLOG        4
#define EXPECTED_ORDER "high n0 normal low"

static void queue_backlog(const char *service, caller calls[BACKLOG])
{
    long long before = queued(service);
    for (int i = 0; i < BACKLOG; i++) {
        start_call(&calls[i], service, "mark", backlog_tags[i], backlog_prios[i]);
        WAIT_UNTIL(queued(service) == before + i + 1, 5 * time_scale());
    }
    CHECK_EQ_INT(llen(service, RRPC_PRIORITY_HIGH), 1);
    CHECK_EQ_INT(llen(service, RRPC_PRIORITY_LOW), 1);
    CHECK_EQ_INT(llen(service, RRPC_PRIORITY_NORMAL), before + 2);
}

static void check_order(const char *what, const char *expected)
{
    char got[256];
    tags_text(got, sizeof got);
    if (strcmp(got, expected) != 0)
        fprintf(stderr, "%s: ran \"%s\", expected \"%s\"\n", what, got, expected);
    CHECK(strcmp(got, expected) == 0);
}

/* One worker held busy by "hold"; the backlog behind it runs high first,
 * low last. */
static void test_order_behind_busy_worker(int reliable)
{
    const char *service = reliable ? "prio_busy_rel" : "prio_busy";
    clear_lists(service);
    tags_reset();
    atomic_store(&holding, 0);
    atomic_store(&release, 0);
    running r;
    run_server(&r, new_server(service, reliable, 1, 1));
    caller hold, calls[BACKLOG];
    start_call(&hold, service, "hold", NULL, RRPC_PRIORITY_NORMAL);
    WAIT_UNTIL(atomic_load(&holding), 10 * time_scale());
    CHECK(atomic_load(&holding));
    queue_backlog(service, calls);
    atomic_store(&release, 1);
    join_call(&hold);
    for (int i = 0; i < BACKLOG; i++)
        join_call(&calls[i]);
    check_order(reliable ? "busy worker, reliable" : "busy worker, at-most-once", EXPECTED_ORDER);
    CHECK_EQ_INT(queued(service), 0);
    stop_server(&r);
}

/* The backlog queued before the server starts: its worker's first pop is
 * a whole batch (at-most-once: BLPOP then LMPOP over the three lists,
 * which takes the rest of the batch from the first list that holds any;
 * reliable: the take script's count). */
static void test_order_batch(int reliable)
{
    const char *service = reliable ? "prio_batch_rel" : "prio_batch";
    clear_lists(service);
    tags_reset();
    caller calls[BACKLOG];
    queue_backlog(service, calls);
    running r;
    run_server(&r, new_server(service, reliable, 1, 1));
    for (int i = 0; i < BACKLOG; i++)
        join_call(&calls[i]);
    check_order(reliable ? "batch, reliable" : "batch, at-most-once", EXPECTED_ORDER);
    CHECK_EQ_INT(queued(service), 0);
    stop_server(&r);
}

/* A sharded service: each shard's list has its own priority lists.  The
 * backlog is put on shard 1's lists by hand (a caller's shard is its
 * client's choice); shard 1's worker runs it in priority order. */
static void test_order_sharded(int reliable)
{
    const char *service = reliable ? "prio_shard_rel" : "prio_shard";
    char list1[RRPC__KEY_MAX], high[RRPC__KEY_MAX], low[RRPC__KEY_MAX];
    snprintf(list1, sizeof list1, "%s#1", service);
    clear_lists(service);
    clear_lists(list1);
    rrpc__priority_key(high, sizeof high, list1, RRPC_PRIORITY_HIGH);
    rrpc__priority_key(low, sizeof low, list1, RRPC_PRIORITY_LOW);
    tags_reset();
    const char *lists[] = {low, list1, high, list1, low};
    const char *names[] = {"low1", "n1", "high", "n2", "low2"};
    for (int i = 0; i < 5; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"mark\",\"params\":[\"%s\"],"
                 "\"id\":\"%s\",\"reply_to\":\"prio:shard:reply\"}",
                 names[i], names[i]);
        rrpc__reply_free(cmd(3, "RPUSH", lists[i], text));
    }
    rrpc__reply_free(cmd(2, "DEL", "prio:shard:reply"));
    /* Reliable mode on a sharded service is refused on this main (issue
     * 13 adds it): then the case waits for it. */
    rrpc_server *srv = try_server(service, reliable, 2, 2, reliable);
    if (srv == NULL) {
        fprintf(stderr, "note: sharded reliable service refused; case skipped\n");
        clear_lists(list1);
        return;
    }
    running r;
    run_server(&r, srv);
    WAIT_UNTIL(tags_count() == 5, 10 * time_scale());
    check_order(reliable ? "sharded, reliable" : "sharded, at-most-once", "high n1 n2 low1 low2");
    CHECK_EQ_INT(queued(list1), 0);
    CHECK_EQ_INT(cmd_int(2, "LLEN", "prio:shard:reply", NULL), 5);
    stop_server(&r);
    rrpc__reply_free(cmd(2, "DEL", "prio:shard:reply"));
}

/* max_queue counts the three lists of the shard: with a normal call on L
 * and a low one on {L}:low behind a busy worker, a queue of 2 is full for
 * a high call too. */
static void test_max_queue_counts_all(void)
{
    const char *service = "prio_maxq";
    clear_lists(service);
    tags_reset();
    atomic_store(&holding, 0);
    atomic_store(&release, 0);
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = 1;
    o.max_queue = 2;
    o.handle_signals = 0;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    if (srv == NULL)
        return;
    CHECK(rrpc_server_register(srv, "mark", m_mark, NULL, NULL) == RRPC_OK);
    CHECK(rrpc_server_register(srv, "hold", m_hold, NULL, NULL) == RRPC_OK);
    running r;
    run_server(&r, srv);
    caller hold, n0, low;
    start_call(&hold, service, "hold", NULL, RRPC_PRIORITY_NORMAL);
    WAIT_UNTIL(atomic_load(&holding), 10 * time_scale());
    start_call(&n0, service, "mark", "n0", RRPC_PRIORITY_NORMAL);
    WAIT_UNTIL(queued(service) == 1, 5 * time_scale());
    start_call(&low, service, "mark", "low", RRPC_PRIORITY_LOW);
    WAIT_UNTIL(queued(service) == 2, 5 * time_scale());
    CHECK_EQ_INT(llen(service, RRPC_PRIORITY_LOW), 1);
    rrpc_client *c = open_client_with(NULL);
    rrpc_call_options co;
    rrpc_call_options_init(&co);
    co.priority = RRPC_PRIORITY_HIGH;
    json_t *result = NULL, *params = json_pack("[s]", "refused");
    CHECK_EQ_INT(rrpc_call_with(c, service, "mark", params, &co, &result, NULL), RRPC_EOVERLOADED);
    json_decref(params);
    CHECK_EQ_INT(queued(service), 2);
    rrpc_client_close(c);
    atomic_store(&release, 1);
    join_call(&hold);
    join_call(&n0);
    join_call(&low);
    check_order("max_queue", "n0 low");
    stop_server(&r);
}

/* ---- no latency floor ---------------------------------------------------------- */

/* An idle reliable worker blocks in BLMOVE on L alone: a high or low call
 * that finds no backlog goes onto L and is taken at once. */
static void test_idle_answers_at_once(void)
{
    const char *service = "prio_idle_rel";
    clear_lists(service);
    running r;
    run_server(&r, new_server(service, 1, 1, 1));
    rrpc_client *c = open_client_with(NULL);
    json_t *result = NULL, *first = json_pack("[i,i]", 1, 2);
    CHECK_EQ_INT(rrpc_call(c, service, "add", first, 10, &result, NULL), RRPC_OK); /* serving */
    json_decref(first);
    json_decref(result);
    const int prios[] = {RRPC_PRIORITY_HIGH, RRPC_PRIORITY_LOW};
    for (int round = 0; round < 2; round++) {
        rrpc__sleep(0.7); /* idle: its BLMOVE is blocked (0.5 s) on L */
        rrpc_call_options o;
        rrpc_call_options_init(&o);
        o.priority = prios[round];
        json_t *params = json_pack("[i,i]", 2, 3);
        double t0 = rrpc__monotonic();
        CHECK_EQ_INT(rrpc_call_with(c, service, "add", params, &o, &result, NULL), RRPC_OK);
        double took = rrpc__monotonic() - t0;
        json_decref(params);
        CHECK(json_integer_value(result) == 5);
        json_decref(result);
        if (took > 0.2 * time_scale())
            fprintf(stderr, "idle reliable service: a %s call took %.3f s\n",
                    round ? "low" : "high", took);
        CHECK(took < 0.2 * time_scale());
    }
    rrpc_client_close(c);
    stop_server(&r);
}

/* ---- bad values --------------------------------------------------------------- */

static atomic_int async_done, async_rc;
static void on_async(int status, json_t *result, json_t *error, void *udata);

static void test_client_refuses_unknown(void)
{
    rrpc_client *c = open_client_with(NULL);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.priority = 7;
    json_t *result = NULL;
    CHECK_EQ_INT(rrpc_call_with(c, "prio_none", "add", NULL, &o, &result, NULL), RRPC_EINVAL);
    CHECK(result == NULL);
    CHECK(strstr(rrpc_client_errmsg(c), "priority 7") != NULL);
    CHECK_EQ_INT(queued("prio_none"), 0); /* nothing was sent */
    rrpc_client_close(c);

    rrpc_async *a = NULL;
    char err[256];
    CHECK_EQ_INT(rrpc_async_open(&a, NULL, err, sizeof err), RRPC_OK);
    if (a != NULL) {
        o.priority = -2;
        CHECK_EQ_INT(rrpc_async_call_with(a, "prio_none", "add", NULL, &o, on_async, NULL),
                     RRPC_EINVAL);
        CHECK(strstr(rrpc_async_errmsg(a), "priority -2") != NULL);
        rrpc_async_close(a);
    }
    CHECK_EQ_INT(queued("prio_none"), 0);
}

/* A raw request whose "priority" is not one of the three names is
 * answered -32600 with data {"member": "priority"}, in both modes. */
static void test_worker_refuses_unknown(int reliable)
{
    const char *service = reliable ? "prio_bad_rel" : "prio_bad";
    running r;
    run_server(&r, new_server(service, reliable, 1, 1));
    const char *bad[] = {"\"urgent\"", "1", "null", "\"HIGH\""};
    for (int i = 0; i < 4; i++) {
        char text[256], id[16];
        snprintf(id, sizeof id, "bad%d", i);
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"%s\","
                 "\"reply_to\":\"prio:bad:reply\",\"priority\":%s}",
                 id, bad[i]);
        rrpc__reply_free(cmd(3, "RPUSH", service, text));
        rrpc__reply *got = cmd(3, "BLPOP", "prio:bad:reply", "10");
        const char *resp = got && rrpc__reply_count(got) == 2
                               ? rrpc__reply_str(rrpc__reply_element(got, 1), NULL)
                               : NULL;
        json_t *doc = resp ? json_loads(resp, 0, NULL) : NULL;
        json_t *e = json_object_get(doc, "error");
        CHECK(json_integer_value(json_object_get(e, "code")) == -32600);
        const char *member =
            json_string_value(json_object_get(json_object_get(e, "data"), "member"));
        CHECK(member != NULL && strcmp(member, "priority") == 0);
        CHECK(json_is_string(json_object_get(doc, "id")) &&
              strcmp(json_string_value(json_object_get(doc, "id")), id) == 0);
        json_decref(doc);
        rrpc__reply_free(got);
    }
    /* The three names are accepted, from any peer. */
    const char *good[] = {"high", "normal", "low"};
    for (int i = 0; i < 3; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":\"ok\","
                 "\"reply_to\":\"prio:bad:reply\",\"priority\":\"%s\"}",
                 good[i]);
        rrpc__reply_free(cmd(3, "RPUSH", service, text));
        rrpc__reply *got = cmd(3, "BLPOP", "prio:bad:reply", "10");
        const char *resp = got && rrpc__reply_count(got) == 2
                               ? rrpc__reply_str(rrpc__reply_element(got, 1), NULL)
                               : NULL;
        json_t *doc = resp ? json_loads(resp, 0, NULL) : NULL;
        CHECK(json_integer_value(json_object_get(doc, "result")) == 3);
        json_decref(doc);
        rrpc__reply_free(got);
    }
    stop_server(&r);
}

/* ---- the async client, and taking back ------------------------------------------- */

static void on_async(int status, json_t *result, json_t *error, void *udata)
{
    (void)udata;
    (void)result; /* borrowed (rrpc_async_cb): not ours to release */
    (void)error;
    atomic_store(&async_rc, status);
    atomic_fetch_add(&async_done, 1);
}

/* Behind a backlog an async high call goes to {L}:high; a worker then
 * answers it. */
static void test_async_priority(void)
{
    const char *service = "prio_async";
    clear_lists(service);
    rrpc__reply_free(
        cmd(3, "RPUSH", service, "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1]}"));
    rrpc_async *a = NULL;
    char err[256];
    CHECK_EQ_INT(rrpc_async_open(&a, NULL, err, sizeof err), RRPC_OK);
    if (a == NULL)
        return;
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.priority = RRPC_PRIORITY_HIGH;
    o.timeout_s = 10;
    json_t *params = json_pack("[i,i]", 2, 2);
    CHECK_EQ_INT(rrpc_async_call_with(a, service, "add", params, &o, on_async, NULL), RRPC_OK);
    o.priority = RRPC_PRIORITY_LOW;
    CHECK_EQ_INT(rrpc_async_call_with(a, service, "add", params, &o, on_async, NULL), RRPC_OK);
    json_decref(params);
    WAIT_UNTIL(queued(service) == 3, 5 * time_scale());
    CHECK_EQ_INT(llen(service, RRPC_PRIORITY_HIGH), 1);
    CHECK_EQ_INT(llen(service, RRPC_PRIORITY_LOW), 1);
    running r;
    run_server(&r, new_server(service, 0, 1, 1));
    WAIT_UNTIL(atomic_load(&async_done) == 2, 10 * time_scale());
    CHECK_EQ_INT(atomic_load(&async_done), 2);
    CHECK_EQ_INT(atomic_load(&async_rc), RRPC_OK);
    rrpc_async_close(a);
    stop_server(&r);
}

/* A high call that times out behind a backlog is taken back from
 * {L}:high, where the push script put it. */
static void test_withdraw(void)
{
    const char *service = "prio_withdraw";
    clear_lists(service);
    rrpc__reply_free(cmd(3, "RPUSH", service, "{\"jsonrpc\":\"2.0\",\"method\":\"add\"}"));
    rrpc_client *c = open_client_with(NULL);
    rrpc_call_options o;
    rrpc_call_options_init(&o);
    o.timeout_s = 0.3;
    const int prios[] = {RRPC_PRIORITY_HIGH, RRPC_PRIORITY_LOW};
    for (int i = 0; i < 2; i++) {
        o.priority = prios[i];
        json_t *result = NULL;
        CHECK_EQ_INT(rrpc_call_with(c, service, "add", NULL, &o, &result, NULL), RRPC_ETIMEDOUT);
        CHECK_EQ_INT(llen(service, prios[i]), 0);
    }
    CHECK_EQ_INT(queued(service), 1);
    rrpc_client_close(c);
    clear_lists(service);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_client_refuses_unknown();
    test_withdraw();
    test_async_priority();
    for (int reliable = 0; reliable < 2; reliable++) {
        test_worker_refuses_unknown(reliable);
        test_order_behind_busy_worker(reliable);
        test_order_batch(reliable);
        test_order_sharded(reliable);
    }
    test_idle_answers_at_once();
    test_max_queue_counts_all();
    raw_close();
    return check_report();
}
