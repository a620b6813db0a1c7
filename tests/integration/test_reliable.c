/* test_reliable.c -- deadlines and the reliable (at-least-once) mode, on a
 * real redis-server started by harness/with-redis.sh.
 *
 * The promises of docs/RELIABILITY.md seen from outside: a request whose
 * deadline passed is refused, not run; a request held by a worker that is
 * killed is redelivered and answered; a request that keeps killing workers
 * becomes a dead letter; a repeated request is answered from memory and its
 * effects happen once; a caller whose link breaks can resend safely.
 * Workers that die are forked processes killed for real.
 */
#include "harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define EFFECTS "rel:effects"

/* count(id): records one effect for ID, returns it. */
static json_t *m_count(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *id;
    if (rrpc_param_string(req, 0, "id", &id))
        return NULL;
    const char *effect[] = {"HINCRBY", EFFECTS, id, "1"};
    rrpc_request_add_effect(req, 4, effect);
    return json_string(id);
}

/* slow(id, ms): like count, after MS milliseconds.  With udata set (a
 * doomed child process) it never returns. */
static json_t *m_slow(rrpc_request *req, void *udata)
{
    json_int_t ms;
    if (rrpc_param_int(req, 1, "ms", &ms))
        return NULL;
    rrpc__sleep(udata ? 3600 : (double)ms / 1000.0);
    return m_count(req, NULL);
}

/* die(): the poison request; a child process that takes it dies. */
static json_t *m_die(rrpc_request *req, void *udata)
{
    (void)req;
    if (udata)
        _exit(3);
    return json_true();
}

/* DOOMED: a child process whose slow and die methods never return.
 * CHILD: a child process, stopped by SIGTERM. */
static rrpc_server *new_server_n(const char *service, int workers, int reliable, int doomed,
                                 int child)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = service;
    o.workers = workers;
    o.handle_signals = child;
    o.reliable = reliable;
    o.heartbeat_ttl_s = 1;
    o.heartbeat_interval_s = 0.3;
    o.max_deliveries = 2;
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    rrpc_server_register(s, "count", m_count, NULL, NULL);
    rrpc_server_register(s, "slow", m_slow, doomed ? (void *)1 : NULL, NULL);
    rrpc_server_register(s, "die", m_die, doomed ? (void *)1 : NULL, NULL);
    return s;
}

static rrpc_server *new_server(const char *service, int reliable, int doomed, int child)
{
    return new_server_n(service, 2, reliable, doomed, child);
}

/* A reliable server in a child process, to be killed.  Returns its pid. */
static pid_t fork_server(const char *service, int doomed)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        rrpc_server *s = new_server(service, 1, doomed, 1);
        int rc = rrpc_server_run(s);
        _exit(rc == RRPC_OK ? 0 : 1);
    }
    return pid;
}

static long long effects_of(const char *id)
{
    rrpc__reply *r = cmd(3, "HGET", EFFECTS, id);
    long long n =
        r && rrpc__reply_type(r) == RRPC__REPLY_STRING ? atoll(rrpc__reply_str(r, NULL)) : 0;
    rrpc__reply_free(r);
    return n;
}

/* The Redis clock in milliseconds, as deadlines are written. */
static long long redis_ms(void)
{
    rrpc__clock clock = {0, 0};
    rrpc__reply *r = cmd(1, "TIME");
    rrpc__clock_parse_time(&clock, r, rrpc__now() * 1000.0);
    rrpc__reply_free(r);
    return rrpc__clock_redis_ms(&clock);
}

static void push_request(const char *list, const char *method, const char *params,
                         const char *reply_to, long long deadline)
{
    char text[512];
    if (deadline > 0)
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"%s\",\"params\":%s,\"id\":\"%s\","
                 "\"deadline\":%lld}",
                 method, params, reply_to, deadline);
    else
        snprintf(text, sizeof text,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"%s\",\"params\":%s,\"id\":\"%s\"}", method,
                 params, reply_to);
    rrpc__reply_free(cmd(3, "RPUSH", list, text));
}

/* The reply waiting on KEY (new text), or NULL after SECONDS. */
static char *reply_on(const char *key, double seconds)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%.1f", seconds);
    rrpc__reply *r = cmd(3, "BLPOP", key, timeout);
    char *text = r && rrpc__reply_count(r) == 2
                     ? strdup(rrpc__reply_str(rrpc__reply_element(r, 1), NULL))
                     : NULL;
    rrpc__reply_free(r);
    return text;
}

static void test_expired_requests_are_refused(void)
{
    running r;
    run_server(&r, new_server_n("rd", 1, 0, 0, 0));
    /* Already late when it arrives. */
    push_request("rd", "count", "[\"late\"]", "rel:late", redis_ms() - 1);
    char *late = reply_on("rel:late", 5);
    CHECK(late && strstr(late, "\"code\":-32000") && strstr(late, "Deadline exceeded"));
    free(late);
    /* Taken in one batch behind a slow request by the only worker, it
     * expires while it waits: refused, not run. */
    char queued_text[256];
    snprintf(queued_text, sizeof queued_text,
             "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"params\":[\"queued\"],"
             "\"id\":\"rel:queued\",\"deadline\":%lld}",
             redis_ms() + 300);
    rrpc__reply_free(cmd(4, "RPUSH", "rd",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"slow\",\"params\":[\"first\",600],"
                         "\"id\":\"rel:first\"}",
                         queued_text));
    char *queued = reply_on("rel:queued", 5);
    CHECK(queued && strstr(queued, "\"code\":-32000"));
    free(queued);
    /* With time to spare it runs. */
    push_request("rd", "count", "[\"timely\"]", "rel:timely", redis_ms() + 5000);
    char *timely = reply_on("rel:timely", 5);
    CHECK(timely && strstr(timely, "\"result\":\"timely\""));
    free(timely);
    rrpc_server_stats st;
    rrpc_server_get_stats(r.srv, &st);
    CHECK(st.expired >= 2);
    stop_server(&r);
    CHECK(effects_of("late") == 0 && effects_of("queued") == 0 && effects_of("timely") == 1);
}

typedef struct call_arg {
    const char *service, *method;
    json_t *params;
    double timeout_s;
    int resend;
    int rc;
    json_t *result;
} call_arg;

static void *call_thread(void *arg)
{
    call_arg *a = arg;
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    o.resend_on_reconnect = a->resend;
    o.fail_fast = 0;
    rrpc_client *c = open_client_with(&o);
    json_t *error = NULL;
    a->rc = c ? rrpc_call(c, a->service, a->method, a->params, a->timeout_s, &a->result, &error)
              : RRPC_ECONNECT;
    if (a->rc != RRPC_OK)
        fprintf(stderr, "call %s: %s (%s)\n", a->method, rrpc_strerror(a->rc),
                c ? rrpc_client_errmsg(c) : "");
    json_decref(error);
    rrpc_client_close(c);
    return NULL;
}

/* Requests held in the service's in-flight lists. */
static long long in_flight(const char *service)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "{%s}:inflight:*", service);
    rrpc__reply *keys = cmd(2, "KEYS", pattern);
    long long n = 0;
    for (size_t i = 0; keys && i < rrpc__reply_count(keys); i++)
        n += cmd_int(2, "LLEN", rrpc__reply_str(rrpc__reply_element(keys, i), NULL), NULL);
    rrpc__reply_free(keys);
    return n;
}

static int is_string(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

static void test_killed_worker_request_is_redelivered(void)
{
    pid_t doomed = fork_server("rk", 1);
    WAIT_UNTIL(cmd_int(2, "SCARD", "{rk}:inflight", NULL) == 2, 5);
    call_arg a = {"rk", "slow", json_pack("[si]", "killed", 10), 20, 0, -1, NULL};
    pthread_t t;
    pthread_create(&t, NULL, call_thread, &a);
    /* Wait until the doomed worker holds the request, then kill it. */
    WAIT_UNTIL(in_flight("rk") == 1, 5);
    CHECK(in_flight("rk") == 1);
    kill(doomed, SIGKILL);
    waitpid(doomed, NULL, 0);
    double killed_at = rrpc__monotonic();
    running r;
    run_server(&r, new_server("rk", 1, 0, 0)); /* its reaper puts the request back */
    pthread_join(t, NULL);
    CHECK(a.rc == RRPC_OK && is_string(a.result, "killed"));
    CHECK(rrpc__monotonic() - killed_at < 5); /* about heartbeat_ttl_s, not the timeout */
    CHECK(effects_of("killed") == 1);
    rrpc_server_stats st;
    rrpc_server_get_stats(r.srv, &st);
    CHECK(st.redelivered >= 1);
    stop_server(&r);
    /* A clean stop leaves nothing behind. */
    CHECK(cmd_int(2, "SCARD", "{rk}:inflight", NULL) == 0);
    json_decref(a.params);
    json_decref(a.result);
}

static void test_poison_request_becomes_dead_letter(void)
{
    push_request("rp", "die", "[]", "rel:poison", 0);
    int deaths = 0;
    for (int i = 0; i < 2; i++) { /* max_deliveries = 2 */
        pid_t child = fork_server("rp", 1);
        int status = 0;
        double until = rrpc__monotonic() + 8;
        while (waitpid(child, &status, WNOHANG) == 0 && rrpc__monotonic() < until)
            rrpc__sleep(0.05);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
            deaths++;
        else
            kill(child, SIGKILL), waitpid(child, NULL, 0);
    }
    CHECK(deaths == 2);
    pid_t last = fork_server("rp", 1); /* reaps the second death: over the limit */
    WAIT_UNTIL(cmd_int(2, "LLEN", "rp:dead", NULL) == 1, 6);
    kill(last, SIGTERM);
    int status = 0;
    waitpid(last, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* it never took the poison */
    rrpc__reply *r = cmd(3, "LINDEX", "rp:dead", "0");
    const char *letter = r ? rrpc__reply_str(r, NULL) : NULL;
    CHECK(letter && strstr(letter, "taken by 2 workers that died (max_deliveries 2)") &&
          strstr(letter, "\\\"method\\\":\\\"die\\\""));
    rrpc__reply_free(r);
    CHECK(cmd_int(2, "LLEN", "rp", NULL) == 0);
}

static void test_repeated_request_runs_once(void)
{
    running r;
    run_server(&r, new_server("rr", 1, 0, 0));
    const char *text = "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"params\":[\"twice\"],"
                       "\"id\":\"rel:twice\"}";
    rrpc__reply_free(cmd(3, "RPUSH", "rr", text));
    char *first = reply_on("rel:twice", 5);
    rrpc__reply_free(cmd(3, "RPUSH", "rr", text)); /* a caller's retry */
    char *second = reply_on("rel:twice", 5);
    CHECK(first && second && strcmp(first, second) == 0 && strstr(first, "\"result\":\"twice\""));
    CHECK(effects_of("twice") == 1);
    rrpc_server_stats st;
    rrpc_server_get_stats(r.srv, &st);
    CHECK(st.duplicates == 1 && st.requests == 1);
    free(first);
    free(second);
    /* A refused reply leaves nothing behind: no memory of an answer, no
     * effect, and a dead letter that says why. */
    rrpc__reply_free(cmd(3, "SET", "rel:string-key", "x"));
    rrpc__reply_free(cmd(3, "RPUSH", "rr",
                         "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"params\":[\"refused\"],"
                         "\"id\":\"rel:string-key\"}"));
    WAIT_UNTIL(cmd_int(2, "LLEN", "rr:dead", NULL) == 1, 3);
    rrpc__reply *letter = cmd(3, "LINDEX", "rr:dead", "0");
    CHECK(letter && strstr(rrpc__reply_str(letter, NULL), "reply failed: WRONGTYPE"));
    rrpc__reply_free(letter);
    rrpc__reply *done = cmd(2, "KEYS", "{rr}:done:*");
    CHECK(done && rrpc__reply_count(done) == 1); /* only "twice" is remembered */
    rrpc__reply_free(done);
    CHECK(effects_of("refused") == 0);
    /* A caller's retry with the same id is the same request even if its
     * text changed (here: a later deadline): answered from memory. */
    push_request("rr", "count", "[\"retry\"]", "rel:retry", redis_ms() + 5000);
    char *try1 = reply_on("rel:retry", 5);
    push_request("rr", "count", "[\"retry\"]", "rel:retry", redis_ms() + 9000);
    char *try2 = reply_on("rel:retry", 5);
    CHECK(try1 && try2 && strcmp(try1, try2) == 0 && strstr(try1, "\"result\":\"retry\""));
    CHECK(effects_of("retry") == 1);
    free(try1);
    free(try2);
    /* Redis forgets the workers' scripts (SCRIPT FLUSH, or a restart):
     * they load them again and go on. */
    rrpc__reply_free(cmd(2, "SCRIPT", "FLUSH"));
    push_request("rr", "count", "[\"flushed\"]", "rel:flushed", 0);
    char *flushed = reply_on("rel:flushed", 5);
    CHECK(flushed && strstr(flushed, "\"result\":\"flushed\""));
    free(flushed);
    CHECK(effects_of("flushed") == 1);
    /* A notification is remembered too: its effect happens once. */
    const char *note = "{\"jsonrpc\":\"2.0\",\"method\":\"count\",\"params\":[\"note\"]}";
    rrpc__reply_free(cmd(3, "RPUSH", "rr", note));
    rrpc__reply_free(cmd(3, "RPUSH", "rr", note));
    WAIT_UNTIL(cmd_int(2, "LLEN", "rr", NULL) == 0 && effects_of("note") == 1, 3);
    rrpc__sleep(0.2);
    CHECK(effects_of("note") == 1);
    stop_server(&r);
}

static void test_at_most_once_applies_effects(void)
{
    running r;
    run_server(&r, new_server("ra", 0, 0, 0));
    push_request("ra", "count", "[\"plain\"]", "rel:plain", 0);
    char *answer = reply_on("rel:plain", 5);
    CHECK(answer && strstr(answer, "\"result\":\"plain\""));
    free(answer);
    WAIT_UNTIL(effects_of("plain") == 1, 2);
    CHECK(effects_of("plain") == 1);
    stop_server(&r);
}

static void test_resend_after_broken_link(void)
{
    running r;
    run_server(&r, new_server("rs", 1, 0, 0));
    call_arg a = {"rs", "slow", json_pack("[si]", "resent", 800), 10, 1, -1, NULL};
    pthread_t t;
    pthread_create(&t, NULL, call_thread, &a);
    rrpc__sleep(0.3);
    /* Every link but ours breaks: the caller's wait and the workers'. */
    rrpc__reply_free(cmd(6, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"));
    pthread_join(t, NULL);
    CHECK(a.rc == RRPC_OK && is_string(a.result, "resent"));
    WAIT_UNTIL(effects_of("resent") == 1, 2);
    rrpc__sleep(0.9); /* a second run, had there been one, would have finished */
    CHECK(effects_of("resent") == 1);
    stop_server(&r);
    json_decref(a.params);
    json_decref(a.result);
}

static void ignore_outcome(int status, json_t *result, json_t *error, void *udata)
{
    (void)result;
    (void)error;
    *(int *)udata = status;
}

/* Both clients stamp calls with a deadline on the Redis clock. */
static void test_clients_stamp_deadlines(void)
{
    rrpc_async *a = NULL;
    char err[256];
    CHECK(rrpc_async_open(&a, NULL, err, sizeof err) == RRPC_OK);
    int status = 1;
    long long before = redis_ms();
    CHECK(rrpc_async_call(a, "nobody", "count", NULL, 2, ignore_outcome, &status) == RRPC_OK);
    WAIT_UNTIL(cmd_int(2, "LLEN", "nobody", NULL) == 1, 2);
    rrpc__reply *r = cmd(3, "LINDEX", "nobody", "0");
    json_t *req = r ? json_loads(rrpc__reply_str(r, NULL), 0, NULL) : NULL;
    long long deadline = json_integer_value(json_object_get(req, "deadline"));
    CHECK(deadline >= before + 2000 && deadline <= redis_ms() + 2000);
    json_decref(req);
    rrpc__reply_free(r);
    rrpc_async_close(a); /* the call ends RRPC_ECANCELED */
    CHECK(status == RRPC_ECANCELED);
    rrpc__reply_free(cmd(2, "DEL", "nobody"));
    /* The sync client: a call of 1 s, withdrawn when it times out. */
    call_arg sync_call = {"nobody", "count", NULL, 1, 0, -1, NULL};
    pthread_t t;
    before = redis_ms();
    pthread_create(&t, NULL, call_thread, &sync_call);
    WAIT_UNTIL(cmd_int(2, "LLEN", "nobody", NULL) == 1, 2);
    r = cmd(3, "LINDEX", "nobody", "0");
    req = r ? json_loads(rrpc__reply_str(r, NULL), 0, NULL) : NULL;
    deadline = json_integer_value(json_object_get(req, "deadline"));
    CHECK(deadline >= before + 1000 && deadline <= redis_ms() + 1000);
    json_decref(req);
    rrpc__reply_free(r);
    pthread_join(t, NULL);
    CHECK(sync_call.rc == RRPC_ETIMEDOUT && cmd_int(2, "LLEN", "nobody", NULL) == 0);
}

int main(void)
{
    if (raw_open() != 0)
        return 1;
    test_poison_request_becomes_dead_letter(); /* forks: before any thread exists */
    test_killed_worker_request_is_redelivered();
    test_expired_requests_are_refused();
    test_repeated_request_runs_once();
    test_at_most_once_applies_effects();
    test_resend_after_broken_link();
    test_clients_stamp_deadlines();
    raw_close();
    return check_report();
}
