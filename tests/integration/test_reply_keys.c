/* test_reply_keys.c -- what a worker writes, and where, when callers and
 * Redis are hostile (issue 9: defects 1, 6, 10 and 12, at-most-once side).
 *
 * - A reply key naming anything but a reply list (an application's hash,
 *   a persistent list, rrpc's own keys, another service's request list)
 *   is left exactly as it was, and the answer becomes a dead letter.
 * - Replies sent while Redis answers BUSY are not paired with the wrong
 *   commands, and none is lost.
 * - A handler's effects are sent again with its answer when the link dies
 *   before Redis confirmed them, or Redis answers BUSY or refuses them for
 *   memory: applied exactly once, before the answer.
 * - Dead letters of oversized messages and responses stay small.
 * - A JSON-RPC batch of slow calls holds a worker for a bounded time.
 */
#include "core/clock.h"
#include "core/deadletter.h"
#include "harness.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "redis/conn.h"
#include "core/url.h"

#ifdef RRPC_TEST_BEFORE /* to see these checks fail on the code before issue 9 */
#define RRPC__DEAD_PREFIX_BYTES          4096
#define RRPC_JSONRPC_BATCH_TIME_EXCEEDED -32001
void rrpc__sha1_hex(const void *data, size_t len, char hex[41]);
#endif

/* ---- handlers ------------------------------------------------------------ */

/* nap(ms): sleeps MS ms, answers MS. */
static json_t *m_nap(rrpc_request *req, void *udata)
{
    return m_sleep(req, udata);
}

/* blob(n): a string of N 'x'. */
static json_t *m_blob(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t n;
    if (rrpc_param_int(req, 0, "n", &n))
        return NULL;
    char *s = malloc((size_t)n + 1);
    memset(s, 'x', (size_t)n);
    s[n] = '\0';
    json_t *v = json_string(s);
    free(s);
    return v;
}

/* stall(): makes Redis busy in a script for a while (see busy_main) and
 * answers "stalled" a moment later, while the script runs. */
static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t busy_cond = PTHREAD_COND_INITIALIZER;
static int busy_go, busy_done;

static json_t *m_stall(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    pthread_mutex_lock(&busy_lock);
    busy_go = 1;
    pthread_cond_signal(&busy_cond);
    pthread_mutex_unlock(&busy_lock);
    rrpc__sleep(0.004);
    return json_string("stalled");
}

/* Runs a read-only script that loops for 400 ms on a connection of its
 * own, as soon as stall() asks: with busy-reply-threshold at 1 ms every
 * other client then gets BUSY until it ends. */
static void *busy_main(void *arg)
{
    rrpc__conn *c = arg;
    pthread_mutex_lock(&busy_lock);
    while (!busy_go)
        pthread_cond_wait(&busy_cond, &busy_lock);
    pthread_mutex_unlock(&busy_lock);
    const char *script =
        "local t0 = redis.call('TIME') while true do local t = redis.call('TIME') "
        "if (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + tonumber(t[2]) - tonumber(t0[2]) > "
        "tonumber(ARGV[1]) then break end end return 1";
    const char *argv[] = {"EVAL", script, "0", "400000"};
    rrpc__reply *r = NULL;
    if (rrpc__conn_append(c, 4, argv, NULL) == RRPC_OK && rrpc__conn_read(c, &r) == RRPC_OK)
        busy_done = rrpc__reply_type(r) == RRPC__REPLY_INTEGER;
    rrpc__reply_free(r);
    return NULL;
}

/* ---- helpers --------------------------------------------------------------- */

static rrpc_server *new_server(const char *service, const char *const *prefixes,
                               double batch_time_s, size_t max_bytes)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = 1;
    o.handle_signals = 0;
    o.heartbeat_interval_s = 0.2;
#ifndef RRPC_TEST_BEFORE /* the options this issue added */
    o.reply_prefixes = prefixes;
    if (batch_time_s != 0)
        o.batch_time_limit_s = batch_time_s;
#else
    (void)prefixes;
    (void)batch_time_s;
#endif
    if (max_bytes)
        o.max_request_bytes = max_bytes;
    rrpc_server *srv = NULL;
    CHECK(rrpc_server_new(&srv, &o) == RRPC_OK);
    rrpc_server_register(srv, "add", m_add, NULL, NULL);
    rrpc_server_register(srv, "nap", m_nap, NULL, NULL);
    rrpc_server_register(srv, "blob", m_blob, NULL, NULL);
    rrpc_server_register(srv, "stall", m_stall, NULL, NULL);
    return srv;
}

static void start(running *r, rrpc_server *srv, const char *service)
{
    char workers[RRPC__KEY_MAX];
    snprintf(workers, sizeof workers, "{%s}:workers", service);
    run_server(r, srv);
    WAIT_UNTIL(cmd_int(2, "ZCARD", workers, NULL) == 1, 5);
}

/* The string reply of a command (new), or NULL. */
static char *cmd_str(int argc, const char *a0, const char *a1, const char *a2)
{
    rrpc__reply *r = argc == 2 ? cmd(2, a0, a1) : cmd(3, a0, a1, a2);
    char *s = NULL;
    if (r &&
        (rrpc__reply_type(r) == RRPC__REPLY_STRING || rrpc__reply_type(r) == RRPC__REPLY_STATUS))
        s = strdup(rrpc__reply_str(r, NULL));
    rrpc__reply_free(r);
    return s;
}

/* The newest dead letter of SERVICE whose text contains MARK (new JSON),
 * waiting up to 3 s for it. */
static json_t *dead_letter_with(const char *service, const char *mark)
{
    char dead[RRPC__KEY_MAX];
    snprintf(dead, sizeof dead, "%s:dead", service);
    for (int tries = 0; tries < 150; tries++) {
        rrpc__reply *r = cmd(4, "LRANGE", dead, "0", "-1");
        for (size_t i = r ? rrpc__reply_count(r) : 0; i-- > 0;) {
            size_t len = 0;
            const char *s = rrpc__reply_str(rrpc__reply_element(r, i), &len);
            if (strstr(s, mark) != NULL) {
                json_t *rec = json_loadb(s, len, RRPC__JSON_DECODE_FLAGS, NULL);
                rrpc__reply_free(r);
                return rec;
            }
        }
        rrpc__reply_free(r);
        rrpc__sleep(0.02);
    }
    return NULL;
}

static const char *reason_of(const json_t *rec)
{
    return json_string_value(json_object_get(rec, "reason"));
}

/* ---- defect 1: which reply keys a worker writes to ---------------------- */

/* The state of KEY that a refusal must leave alone: type, TTL, contents. */
typedef struct snapshot {
    char *type;
    long long ttl;
    char *dump; /* DUMP: the exact value */
    size_t dump_len;
} snapshot;

static snapshot take(const char *key)
{
    snapshot s = {cmd_str(2, "TYPE", key, NULL), cmd_int(2, "PTTL", key, NULL), NULL, 0};
    rrpc__reply *r = cmd(2, "DUMP", key);
    if (r && rrpc__reply_type(r) == RRPC__REPLY_STRING) {
        const char *d = rrpc__reply_str(r, &s.dump_len);
        s.dump = malloc(s.dump_len + 1);
        memcpy(s.dump, d, s.dump_len);
    }
    rrpc__reply_free(r);
    return s;
}

static int same(const snapshot *a, const snapshot *b)
{
    return a->type && b->type && strcmp(a->type, b->type) == 0 && a->ttl == b->ttl &&
           a->dump_len == b->dump_len &&
           (a->dump_len == 0 || memcmp(a->dump, b->dump, a->dump_len) == 0);
}

static void forget(snapshot *s)
{
    free(s->type);
    free(s->dump);
}

/* Sends a call with reply_to KEY and checks that KEY is untouched and that
 * the answer became a dead letter whose reason starts with REASON. */
static void expect_refused(const char *service, const char *key, const char *reason, int line)
{
    static int n;
    char id[64], text[1024];
    snprintf(id, sizeof id, "refused-%d-%d", line, n++);
    snprintf(text, sizeof text,
             "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[2,3],\"id\":\"%s\","
             "\"reply_to\":\"%s\"}",
             id, key);
    snapshot before = take(key);
    rrpc__reply_free(cmd(3, "RPUSH", service, text));
    json_t *rec = dead_letter_with(service, id);
    snapshot after = take(key);
    int ok = CHECK(rec != NULL);
    if (rec) {
        const char *why = reason_of(rec);
        ok &= CHECK(why && strncmp(why, reason, strlen(reason)) == 0);
        json_t *resp = json_object_get(rec, "response");
        ok &= CHECK(json_integer_value(json_object_get(resp, "result")) == 5);
        if (why && strncmp(why, reason, strlen(reason)) != 0)
            fprintf(stderr, "    reason: %s\n", why);
    }
    ok &= CHECK(same(&before, &after));
    if (!ok)
        fprintf(stderr, "    (key %s, line %d: type %s -> %s, pttl %lld -> %lld)\n", key, line,
                before.type, after.type, before.ttl, after.ttl);
    json_decref(rec);
    forget(&before);
    forget(&after);
}

#define EXPECT_REFUSED(service, key, reason) expect_refused(service, key, reason, __LINE__)

static void test_hostile_reply_keys(void)
{
    running r;
    /* Another service, registered, with a backlog; and one registered
     * whose list is empty (no key at all). */
    rrpc__reply_free(cmd(4, "SADD", "rrpc:services", "orders", "billing"));
    rrpc__reply_free(cmd(4, "RPUSH", "orders", "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}", "b"));
    rrpc__reply_free(cmd(4, "HSET", "app:users", "alice", "1"));
    rrpc__reply_free(cmd(3, "SET", "app:string", "v"));
    rrpc__reply_free(cmd(3, "SADD", "app:set", "m"));
    rrpc__reply_free(cmd(4, "ZADD", "app:zset", "1", "m"));
    rrpc__reply_free(cmd(4, "RPUSH", "app:backlog", "job1", "job2"));
    rrpc__reply_free(cmd(3, "SADD", "{calc}:inflight", "w1"));
    rrpc__reply_free(cmd(3, "RPUSH", "{calc}:inflight:w1", "req"));
    rrpc__reply_free(cmd(3, "RPUSH", "calc:dead", "{}"));
    start(&r, new_server("hk", NULL, 0, 0), "hk");

    EXPECT_REFUSED("hk", "app:users", "reply key refused: hash");
    EXPECT_REFUSED("hk", "app:string", "reply key refused: string");
    EXPECT_REFUSED("hk", "app:set", "reply key refused: set");
    EXPECT_REFUSED("hk", "app:zset", "reply key refused: zset");
    EXPECT_REFUSED("hk", "app:backlog", "reply key refused: list without expiry");
    EXPECT_REFUSED("hk", "rrpc:services", "reply key refused: one of rrpc's keys");
    EXPECT_REFUSED("hk", "{calc}:inflight", "reply key refused: one of rrpc's keys");
    EXPECT_REFUSED("hk", "{calc}:inflight:w1", "reply key refused: one of rrpc's keys");
    EXPECT_REFUSED("hk", "calc:dead", "reply key refused: one of rrpc's keys");
    EXPECT_REFUSED("hk", "orders", "reply key refused: a service's request list");
    EXPECT_REFUSED("hk", "orders#3", "reply key refused: a service's request list");
    EXPECT_REFUSED("hk", "billing", "reply key refused: a service's request list");
    EXPECT_REFUSED("hk", "hk", "reply key refused: one of the service's own keys");
    /* Not {hk}:workers: the service's own heartbeat rewrites that one. */
    EXPECT_REFUSED("hk", "{hk}:inflight", "reply key refused: one of the service's own keys");
    CHECK(cmd_int(2, "EXISTS", "billing", NULL) == 0);
    CHECK(cmd_int(2, "LLEN", "orders", NULL) == 2);

    /* A plain reply still gets its TTL, and a reply list that has one (the
     * async client's shared list) takes more answers. */
    rrpc__reply_free(cmd(3, "RPUSH", "hk",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],\"id\":1,"
                         "\"reply_to\":\"rrpc:reply:shared\"}"));
    WAIT_UNTIL(cmd_int(2, "LLEN", "rrpc:reply:shared", NULL) == 1, 3);
    CHECK(cmd_int(2, "TTL", "rrpc:reply:shared", NULL) > 0);
    rrpc__reply_free(cmd(3, "RPUSH", "hk",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[2,2],\"id\":2,"
                         "\"reply_to\":\"rrpc:reply:shared\"}"));
    WAIT_UNTIL(cmd_int(2, "LLEN", "rrpc:reply:shared", NULL) == 2, 3);
    CHECK(cmd_int(2, "LLEN", "rrpc:reply:shared", NULL) == 2);
    CHECK(cmd_int(2, "TTL", "rrpc:reply:shared", NULL) > 0);

    /* Section A: 100.0 and 1e2 are the key "100"; 1.5 and "" name none. */
    rrpc__reply_free(cmd(3, "RPUSH", "hk",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],\"id\":100.0}"));
    WAIT_UNTIL(cmd_int(2, "LLEN", "100", NULL) == 1, 3);
    CHECK(cmd_int(2, "LLEN", "100", NULL) == 1);
    CHECK(cmd_int(2, "EXISTS", "1e+02", NULL) == 0);
    rrpc__reply_free(cmd(3, "RPUSH", "hk",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[7,1],\"id\":1.5}"));
    json_t *rec = dead_letter_with("hk", "[7,1]");
    CHECK(rec && strcmp(reason_of(rec), "no reply key") == 0);
    json_decref(rec);
    CHECK(cmd_int(2, "EXISTS", "1.5", NULL) == 0);
    stop_server(&r);
}

/* Rule 4: with an allow-list, other keys are refused (and not created). */
static void test_allow_list(void)
{
    running r;
    const char *const allowed[] = {"rrpc:reply:", NULL};
    start(&r, new_server("al", allowed, 0, 0), "al");
    EXPECT_REFUSED("al", "app:free", "reply key refused: not under an allowed prefix");
    CHECK(cmd_int(2, "EXISTS", "app:free", NULL) == 0);
    rrpc_client *c = open_client_with(NULL); /* its keys are rrpc:reply:... */
    json_t *params = json_pack("[i,i]", 20, 22), *result = NULL;
    CHECK(rrpc_call(c, "al", "add", params, 5, &result, NULL) == RRPC_OK &&
          json_integer_value(result) == 42);
    json_decref(result);
    json_decref(params);
    rrpc_client_close(c);
    stop_server(&r);
}

/* Redis forgot the reply script (a restart, SCRIPT FLUSH): the worker
 * sends it again and the answer arrives. */
static void test_reply_script_reloaded(void)
{
    running r;
    start(&r, new_server("ns", NULL, 0, 0), "ns");
    rrpc_client *c = open_client_with(NULL);
    for (int i = 0; i < 3; i++) {
        json_t *params = json_pack("[i,i]", i, 1), *result = NULL;
        CHECK(rrpc_call(c, "ns", "add", params, 5, &result, NULL) == RRPC_OK &&
              json_integer_value(result) == i + 1);
        json_decref(result);
        json_decref(params);
        rrpc__reply_free(cmd(2, "SCRIPT", "FLUSH"));
    }
    CHECK(cmd_int(2, "LLEN", "ns:dead", NULL) == 0);
    rrpc_client_close(c);
    stop_server(&r);
}

/* ---- the reply script v2 does what v1 did ---------------------------- */

/* v1 of the reply script (PROTOCOL.md section 3 until 2026-12), kept to
 * compare: v2 judges, pushes onto and expires each distinct key once per
 * call instead of once per reply, and must leave Redis and answer exactly
 * as v1 did. */
static const char reply_script_v1[] =
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local t = redis.call('TYPE', k).ok\n"
    "  if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then\n"
    "    redis.call('RPUSH', k, ARGV[i + 1])\n"
    "    redis.call('EXPIRE', k, ARGV[1])\n"
    "    out[i] = 1\n"
    "  elseif t == 'list' then\n"
    "    out[i] = 'list without expiry'\n"
    "  else\n"
    "    out[i] = t\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Runs SCRIPT over N replies to the keys PREFIX + NAMES[i % 5] (a key
 * named again and again, as an async client's reply list is), after
 * giving those keys the five kinds a reply key may meet; returns the
 * script's answer and the lists' contents as one JSON text (new). */
static char *run_reply_script(const char *script, const char *prefix, int n)
{
    static const char *names[] = {"none", "ttl", "hash", "nottl", "none2"};
    char key[5][64];
    for (int i = 0; i < 5; i++)
        snprintf(key[i], sizeof key[i], "%s%s", prefix, names[i]);
    rrpc__reply_free(cmd(3, "RPUSH", key[1], "old"));
    rrpc__reply_free(cmd(3, "EXPIRE", key[1], "100"));
    rrpc__reply_free(cmd(4, "HSET", key[2], "f", "v"));
    rrpc__reply_free(cmd(3, "RPUSH", key[3], "old"));
    size_t argc = 4 + 2 * (size_t)n;
    const char **argv = calloc(argc, sizeof *argv);
    char **owned = calloc((size_t)n, sizeof *owned);
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = count;
    argv[3 + n] = "60";
    for (int i = 0; i < n; i++) {
        argv[3 + i] = key[(i * 7 + i / 5) % 5];
        owned[i] = malloc(32);
        snprintf(owned[i], 32, "reply %d", i);
        argv[4 + n + i] = owned[i];
    }
    rrpc__reply *r = NULL;
    json_t *out = json_array(), *answer = json_array();
    if (rrpc__conn_append(raw, (int)argc, argv, NULL) == RRPC_OK &&
        rrpc__conn_read(raw, &r) == RRPC_OK)
        for (size_t i = 0; i < rrpc__reply_count(r); i++) {
            const rrpc__reply *e = rrpc__reply_element(r, i);
            json_array_append_new(answer, rrpc__reply_type(e) == RRPC__REPLY_INTEGER
                                              ? json_integer(rrpc__reply_integer(e))
                                              : json_string(rrpc__reply_str(e, NULL)));
        }
    rrpc__reply_free(r);
    json_array_append_new(out, answer);
    for (int k = 0; k < 5; k++) {
        json_t *list = json_array();
        rrpc__reply *l = cmd(4, "LRANGE", key[k], "0", "-1");
        for (size_t i = 0; l && i < rrpc__reply_count(l); i++)
            json_array_append_new(list,
                                  json_string(rrpc__reply_str(rrpc__reply_element(l, i), NULL)));
        rrpc__reply_free(l);
        long long ttl = cmd_int(2, "TTL", key[k], NULL);
        json_array_append_new(list, json_string(ttl > 0     ? "expires"
                                                : ttl == -1 ? "persists"
                                                            : "gone"));
        json_array_append_new(out, list);
    }
    for (int i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(argv);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return text;
}

static void test_reply_script_v2_same_as_v1(void)
{
    CHECK(strncmp(rrpc__reply_script, "-- rrpc reply v2:", 17) == 0);
    /* 5,200 replies, 1,040 per key: more than v2 pushes with one RPUSH. */
    static const int sizes[] = {1, 7, 5200};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *v1 = run_reply_script(reply_script_v1, "v1:", sizes[i]);
        char *v2 = run_reply_script(rrpc__reply_script, "v2:", sizes[i]);
        if (!CHECK(v1 && v2 && strcmp(v1, v2) == 0))
            fprintf(stderr, "    %d replies:\n    v1 %.300s\n    v2 %.300s\n", sizes[i], v1, v2);
        CHECK(sizes[i] < 5 ||
              (v2 && strstr(v2, "\"hash\"") && strstr(v2, "\"list without expiry\"")));
        free(v1);
        free(v2);
        static const char *names[] = {"none", "ttl", "hash", "nottl", "none2"};
        for (int k = 0; k < 5; k++) {
            char a[32], b[32];
            snprintf(a, sizeof a, "v1:%s", names[k]);
            snprintf(b, sizeof b, "v2:%s", names[k]);
            rrpc__reply_free(cmd(3, "DEL", a, b));
        }
    }
}

/* ---- defect 10: BUSY while a batch's finished answers are sent --------- */

/* The one reply on KEY must be the answer to the call with id KEY whose
 * result is RESULT (JSON text). */
static void expect_answer(const char *key, const char *result)
{
    rrpc__reply *r = cmd(3, "BLPOP", key, "5");
    const char *text =
        r && rrpc__reply_count(r) == 2 ? rrpc__reply_str(rrpc__reply_element(r, 1), NULL) : NULL;
    char want_id[128], want_result[128];
    snprintf(want_id, sizeof want_id, "\"id\":\"%s\"", key);
    snprintf(want_result, sizeof want_result, "\"result\":%s", result);
    int ok = CHECK(text && strstr(text, want_id) && strstr(text, want_result));
    if (!ok)
        fprintf(stderr, "    on %s: %s\n", key, text ? text : "(nothing)");
    rrpc__reply_free(r);
    CHECK(cmd_int(2, "LLEN", key, NULL) == 0); /* exactly one answer */
}

#define CALL(method, params, id)                                                                   \
    "{\"jsonrpc\":\"2.0\",\"method\":\"" method "\",\"params\":" params ",\"id\":\"" id "\"}"

static void test_busy_during_flush(void)
{
    rrpc__url url;
    char err[256];
    rrpc__conn *busy = NULL;
    CHECK(rrpc__url_parse(&url, NULL, err, sizeof err) == RRPC_OK);
    CHECK(rrpc__conn_open(&busy, &url, 5, err, sizeof err) == RRPC_OK);
    rrpc__url_free(&url);
    pthread_t t;
    pthread_create(&t, NULL, busy_main, busy);

    running r;
    start(&r, new_server("busy", NULL, 0, 0), "busy");
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "busy-reply-threshold", "1"));
    /* One pop: stall starts the script; the naps make the worker send what
     * is finished every 5 ms (the flush path) while Redis answers BUSY;
     * after 20 ms the rest is handed back (LPUSH, BUSY as well). */
    rrpc__reply_free(cmd(
        13, "RPUSH", "busy", CALL("stall", "[]", "b:0"), CALL("nap", "[3]", "b:1"),
        CALL("add", "[1,1]", "b:2"), CALL("nap", "[3]", "b:3"), CALL("add", "[2,2]", "b:4"),
        CALL("nap", "[3]", "b:5"), CALL("add", "[3,3]", "b:6"), CALL("nap", "[9]", "b:7"),
        CALL("add", "[4,4]", "b:8"), CALL("add", "[5,5]", "b:9"), CALL("add", "[6,6]", "b:10")));
    /* Read the answers once the script is over: a BLPOP of ours while it
     * runs would be answered BUSY as well. */
    pthread_join(t, NULL);
    expect_answer("b:0", "\"stalled\"");
    expect_answer("b:1", "3");
    expect_answer("b:2", "2");
    expect_answer("b:3", "3");
    expect_answer("b:4", "4");
    expect_answer("b:5", "3");
    expect_answer("b:6", "6");
    expect_answer("b:7", "9");
    expect_answer("b:8", "8");
    expect_answer("b:9", "10");
    expect_answer("b:10", "12");
    CHECK(busy_done); /* Redis was really busy */
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "busy-reply-threshold", "5000"));
    /* The link is still in step: later calls get their own answers. */
    rrpc__reply_free(cmd(5, "RPUSH", "busy", CALL("add", "[10,1]", "c:1"),
                         CALL("add", "[10,2]", "c:2"), CALL("add", "[10,3]", "c:3")));
    expect_answer("c:1", "11");
    expect_answer("c:2", "12");
    expect_answer("c:3", "13");
    CHECK(cmd_int(2, "LLEN", "busy:dead", NULL) == 0);
    CHECK(cmd_int(2, "LLEN", "busy", NULL) == 0);
    stop_server(&r);
    rrpc__conn_close(busy);
}

/* ---- at-most-once effects go, and go again, with their answer ---------- */

#define EFFECTS "amo:effects"

static rrpc__conn *killer; /* the handlers' own link to Redis */
static long long killed;   /* worker links effect() killed */

/* The id of the worker link that just popped a request: the normal
 * client, not blocked, whose last command was a pop (or the DEL of an
 * effects guard, which a worker may append while it reads the pop's
 * replies: hiredis sends it before the next read).  The registry's link
 * ends its beats with other commands; the test's own link waits in
 * BLPOP.  -1 if not exactly one. */
static long long worker_link(void)
{
    const char *argv[] = {"CLIENT", "LIST", "TYPE", "normal"};
    rrpc__reply *r = NULL;
    long long id = -1;
    int found = 0;
    if (rrpc__conn_append(killer, 4, argv, NULL) != RRPC_OK ||
        rrpc__conn_read(killer, &r) != RRPC_OK)
        return -1;
    const char *list = rrpc__reply_str(r, NULL);
    for (const char *line = list; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char one[1024];
        snprintf(one, sizeof one, "%.*s", (int)len, line);
        const char *flags = strstr(one, " flags=");
        if ((strstr(one, " cmd=blpop ") || strstr(one, " cmd=lpop ") ||
             strstr(one, " cmd=lmpop ") || strstr(one, " cmd=del ")) &&
            flags) {
            char f[32] = "";
            sscanf(flags + 7, "%31s", f);
            if (strchr(f, 'b') == NULL) {
                sscanf(one, "id=%lld", &id);
                found++;
            }
        }
        line = end ? end + 1 : NULL;
    }
    if (found != 1)
        fprintf(stderr, "    %d worker links in:\n%s", found, list ? list : "(none)");
    rrpc__reply_free(r);
    return found == 1 ? id : -1;
}

static void killer_cmd(int argc, const char **argv)
{
    rrpc__reply *r = NULL;
    if (rrpc__conn_append(killer, argc, argv, NULL) == RRPC_OK &&
        rrpc__conn_read(killer, &r) == RRPC_OK && rrpc__reply_type(r) == RRPC__REPLY_INTEGER)
        killed += rrpc__reply_integer(r);
    rrpc__reply_free(r);
}

/* effect(field, how): adds the effect HINCRBY amo:effects FIELD 1, then
 * makes Redis refuse what the worker sends next: "kill" kills the worker's
 * link (nothing it sends after the handler arrives), "busy" starts a busy
 * script (busy_main), "oom" sets maxmemory 1.  Answers FIELD. */
static json_t *m_effect(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *field, *how;
    if (rrpc_param_string(req, 0, "field", &field) || rrpc_param_string(req, 1, "how", &how))
        return NULL;
    const char *effect[] = {"HINCRBY", EFFECTS, field, "1"};
    rrpc_request_add_effect(req, 4, effect);
    if (strcmp(how, "kill") == 0) {
        char id[32];
        snprintf(id, sizeof id, "%lld", worker_link());
        const char *kill[] = {"CLIENT", "KILL", "ID", id};
        killer_cmd(4, kill);
    } else if (strcmp(how, "busy") == 0) {
        pthread_mutex_lock(&busy_lock);
        busy_go = 1;
        pthread_cond_signal(&busy_cond);
        pthread_mutex_unlock(&busy_lock);
        rrpc__sleep(0.004);
    } else if (strcmp(how, "oom") == 0) {
        const char *oom[] = {"CONFIG", "SET", "maxmemory", "1"};
        killer_cmd(4, oom);
    }
    return json_string(field);
}

static long long effect_count(const char *field)
{
    rrpc__reply *r = cmd(3, "HGET", EFFECTS, field);
    long long n = r && rrpc__reply_type(r) == RRPC__REPLY_STRING
                      ? strtoll(rrpc__reply_str(r, NULL), NULL, 10)
                      : 0;
    rrpc__reply_free(r);
    return n;
}

/* The guard keys of the effects still in Redis (deleted once confirmed). */
static long long guards(void)
{
    rrpc__reply *r = cmd(2, "KEYS", "{effects}:applied:*");
    long long n =
        r && rrpc__reply_type(r) == RRPC__REPLY_ARRAY ? (long long)rrpc__reply_count(r) : -1;
    rrpc__reply_free(r);
    return n;
}

static rrpc__conn *open_conn(void)
{
    rrpc__url url;
    char err[256];
    rrpc__conn *c = NULL;
    CHECK(rrpc__url_parse(&url, NULL, err, sizeof err) == RRPC_OK);
    CHECK(rrpc__conn_open(&c, &url, 5, err, sizeof err) == RRPC_OK);
    rrpc__url_free(&url);
    return c;
}

/* A worker whose link dies after its handler ran (before Redis confirmed
 * the effects and the answer), that Redis answers BUSY, or that Redis
 * refuses for memory, sends the effects again with the answer: applied
 * exactly once, before the answer.  Before, the answer was sent again
 * and the effect was lost. */
static void test_effects_resent(void)
{
    killer = open_conn();
    rrpc_server *srv = new_server("effects", NULL, 0, 0);
    rrpc_server_register(srv, "effect", m_effect, NULL, NULL);
    running r;
    start(&r, srv, "effects");
    rrpc__reply_free(cmd(2, "DEL", EFFECTS));

    /* The link dies under the handler. */
    for (int i = 0; i < 3; i++) {
        char field[16], call[128];
        snprintf(field, sizeof field, "k:%d", i);
        snprintf(call, sizeof call,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"effect\",\"params\":[\"%s\",\"kill\"],"
                 "\"id\":\"%s\"}",
                 field, field);
        killed = 0;
        rrpc__reply_free(cmd(3, "RPUSH", "effects", call));
        char result[32];
        snprintf(result, sizeof result, "\"%s\"", field);
        expect_answer(field, result);
        CHECK(killed == 1); /* the worker's link was really killed */
        CHECK(effect_count(field) == 1);
    }

    /* Redis busy in a script when the effects arrive. */
    rrpc__conn *busy = open_conn();
    pthread_t t;
    busy_go = busy_done = 0;
    pthread_create(&t, NULL, busy_main, busy);
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "busy-reply-threshold", "1"));
    rrpc__reply_free(cmd(3, "RPUSH", "effects", CALL("effect", "[\"eb:1\",\"busy\"]", "eb:1")));
    pthread_join(t, NULL); /* then read the answer: BUSY while the script runs */
    expect_answer("eb:1", "\"eb:1\"");
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "busy-reply-threshold", "5000"));
    CHECK(busy_done); /* Redis was really busy */
    CHECK(effect_count("eb:1") == 1);
    rrpc__conn_close(busy);

    /* Redis out of memory: effects and answer wait, then go together. */
    rrpc__reply_free(cmd(3, "RPUSH", "effects", CALL("effect", "[\"em:1\",\"oom\"]", "em:1")));
    rrpc__sleep(0.6);
    CHECK(cmd_int(2, "LLEN", "em:1", NULL) == 0);
    CHECK(effect_count("em:1") == 0);
    rrpc__reply_free(cmd(4, "CONFIG", "SET", "maxmemory", "0"));
    expect_answer("em:1", "\"em:1\"");
    CHECK(effect_count("em:1") == 1);

    rrpc__sleep(0.3); /* nothing is applied twice later */
    CHECK(effect_count("k:0") == 1 && effect_count("k:1") == 1 && effect_count("k:2") == 1);
    CHECK(effect_count("eb:1") == 1 && effect_count("em:1") == 1);
    WAIT_UNTIL(guards() == 0, 10 * time_scale()); /* the DEL waits behind a BLPOP */
    CHECK(guards() == 0); /* each guard deleted once its effects were confirmed */
    CHECK(cmd_int(2, "LLEN", "effects:dead", NULL) == 0);
    stop_server(&r);
    rrpc__conn_close(killer);
    killer = NULL;
}

/* ---- defect 6: bounded dead letters ------------------------------------ */

static void expect_bounded(const json_t *rec, const char *member, const char *text, size_t len)
{
    char key[64], sha[41];
    snprintf(key, sizeof key, "%s_bytes", member);
    CHECK(json_integer_value(json_object_get(rec, key)) == (json_int_t)len);
    snprintf(key, sizeof key, "%s_sha1", member);
    rrpc__sha1_hex(text, len, sha);
    CHECK(json_string_value(json_object_get(rec, key)) &&
          strcmp(json_string_value(json_object_get(rec, key)), sha) == 0);
    snprintf(key, sizeof key, "%s_prefix", member);
    const json_t *prefix = json_object_get(rec, key);
    if (prefix != NULL) {
        CHECK(json_string_length(prefix) <= RRPC__DEAD_PREFIX_BYTES);
        CHECK(memcmp(json_string_value(prefix), text, json_string_length(prefix)) == 0);
    } else {
        snprintf(key, sizeof key, "%s_prefix_base64", member);
        CHECK(json_string_length(json_object_get(rec, key)) <= RRPC__DEAD_PREFIX_BYTES * 4 / 3 + 4);
    }
    CHECK(json_object_get(rec, member) == NULL);
}

static void test_bounded_dead_letters(void)
{
    enum { LIMIT = 16384, BIG = 300000, COUNT = 6 };
    running r;
    start(&r, new_server("bd", NULL, 0, LIMIT), "bd");
    /* Control bytes are escaped sixfold: 300 kB would be 1.8 MB each. */
    char *big[COUNT];
    const char *argv[COUNT + 2] = {"RPUSH", "bd"};
    size_t lens[COUNT + 2] = {5, 2};
    for (int i = 0; i < COUNT; i++) {
        big[i] = malloc(BIG);
        memset(big[i], 1, BIG);
        snprintf(big[i], 32, "hostile-%d:", i);
        argv[i + 2] = big[i];
        lens[i + 2] = BIG;
    }
    rrpc__reply *pushed = NULL;
    CHECK(rrpc__conn_append(raw, COUNT + 2, argv, lens) == RRPC_OK &&
          rrpc__conn_read(raw, &pushed) == RRPC_OK);
    rrpc__reply_free(pushed);
    for (int i = 0; i < COUNT; i++) {
        char mark[32];
        snprintf(mark, sizeof mark, "hostile-%d:", i);
        json_t *rec = dead_letter_with("bd", mark);
        if (CHECK(rec != NULL)) {
            CHECK(strncmp(reason_of(rec), "too large: 300000 bytes", 23) == 0);
            expect_bounded(rec, "message", big[i], BIG);
            char *text = json_dumps(rec, RRPC__JSON_ENCODE_FLAGS);
            CHECK(strlen(text) < 6 * RRPC__DEAD_PREFIX_BYTES + 1024);
            free(text);
        }
        json_decref(rec);
        free(big[i]);
    }
    /* Not UTF-8: the prefix is kept as base64. */
    char *bin = malloc(BIG);
    memset(bin, 0xff, BIG);
    memcpy(bin, "binary-mark", 11);
    const char *bargv[] = {"RPUSH", "bd", bin};
    size_t blens[] = {5, 2, BIG};
    CHECK(rrpc__conn_append(raw, 3, bargv, blens) == RRPC_OK &&
          rrpc__conn_read(raw, &pushed) == RRPC_OK);
    rrpc__reply_free(pushed);
    json_t *rec = dead_letter_with("bd", "\"message_prefix_base64\"");
    if (CHECK(rec != NULL)) {
        expect_bounded(rec, "message", bin, BIG);
        CHECK(json_object_get(rec, "message_prefix_base64") != NULL);
    }
    json_decref(rec);
    free(bin);
    /* Within the limit the message is kept whole, control bytes and all. */
    char small[LIMIT];
    memset(small, 2, sizeof small);
    memcpy(small, "small-mark", 10);
    const char *sargv[] = {"RPUSH", "bd", small};
    size_t slens[] = {5, 2, sizeof small};
    CHECK(rrpc__conn_append(raw, 3, sargv, slens) == RRPC_OK &&
          rrpc__conn_read(raw, &pushed) == RRPC_OK);
    rrpc__reply_free(pushed);
    rec = dead_letter_with("bd", "small-mark");
    CHECK(rec && json_string_length(json_object_get(rec, "message")) == sizeof small);
    json_decref(rec);
    /* An answer larger than the limit that cannot be delivered. */
    rrpc__reply_free(cmd(3, "RPUSH", "bd",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"blob\",\"params\":[100000],"
                         "\"id\":null,\"x\":\"blob-mark\"}"));
    rec = dead_letter_with("bd", "blob-mark");
    if (CHECK(rec != NULL)) {
        CHECK(strcmp(reason_of(rec), "no reply key") == 0);
        CHECK(json_object_get(rec, "response") == NULL);
        CHECK(json_integer_value(json_object_get(rec, "response_bytes")) > 100000);
        CHECK(json_string_length(json_object_get(rec, "response_prefix")) <=
              RRPC__DEAD_PREFIX_BYTES);
    }
    json_decref(rec);
    stop_server(&r);
}

/* ---- defect 12: a batch of slow calls --------------------------------- */

static void test_batch_time_limit(void)
{
    running r;
    start(&r, new_server("bt", NULL, 0.2, 0), "bt");
    char text[4096] = "[";
    for (int i = 0; i < 10; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text),
                 "%s{\"jsonrpc\":\"2.0\",\"method\":\"nap\",\"params\":[60],\"id\":%d,"
                 "\"reply_to\":\"rrpc:reply:bt\"}",
                 i ? "," : "", i);
    strcat(text, "]");
    double t0 = rrpc__monotonic();
    rrpc__reply_free(cmd(3, "RPUSH", "bt", text));
    rrpc__reply *got = cmd(3, "BLPOP", "rrpc:reply:bt", "5");
    double took = rrpc__monotonic() - t0;
    json_t *resp = got && rrpc__reply_count(got) == 2
                       ? json_loads(rrpc__reply_str(rrpc__reply_element(got, 1), NULL), 0, NULL)
                       : NULL;
    int results = 0, cut = 0, out_of_order = 0;
    for (size_t i = 0; i < json_array_size(resp); i++) {
        const json_t *e = json_array_get(resp, i);
        if (json_object_get(e, "result"))
            out_of_order += cut > 0, results++; /* the cut ones come last */
        else if (json_integer_value(json_object_get(json_object_get(e, "error"), "code")) ==
                 RRPC_JSONRPC_BATCH_TIME_EXCEEDED)
            cut++;
    }
    CHECK(out_of_order == 0);
    CHECK(json_array_size(resp) == 10);
    CHECK(results >= 3 && results <= 5 && results + cut == 10);
    CHECK(took < 0.5); /* not 10 x 60 ms */
    json_decref(resp);
    rrpc__reply_free(got);
    stop_server(&r);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_hostile_reply_keys();
    test_allow_list();
    test_reply_script_reloaded();
    test_reply_script_v2_same_as_v1();
    test_busy_during_flush();
    test_effects_resent();
    test_bounded_dead_letters();
    test_batch_time_limit();
    raw_close();
    return check_report();
}
