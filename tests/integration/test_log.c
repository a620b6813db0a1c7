/* test_log.c -- the library's one log sink (rrpc_set_log_fn) on a real
 * redis-server started by harness/with-redis.sh.
 *
 * A worker whose connection Redis kills logs its reconnect through the
 * application's callback, with the levels rrpc.h promises; a Redis error
 * carrying a caller's control bytes reaches the callback escaped; with the
 * callback removed the same lines go to stderr in the "rrpc[...]: ..."
 * format the shell tests grep.  stderr is a file for the whole run, so the
 * test can see what did and did not reach it; it is replayed at the end.
 */
#include "core/clock.h"
#include "harness.h"
#include "redis/conn.h"

#include <fcntl.h>
#include <unistd.h>

#define SERVICE "logsvc"

/* ---- what the callback saw ---------------------------------------------- */

#define MAX_SEEN 256

static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    rrpc_log_level level;
    char *msg;
} seen[MAX_SEEN];
static int nseen;
static void *seen_udata;
static int try_reentry; /* the callback calls rrpc_set_log_fn once */

static void on_log(rrpc_log_level level, const char *msg, void *udata)
{
    if (try_reentry) {
        try_reentry = 0;
        rrpc_set_log_fn(NULL, NULL); /* documented as ignored from inside */
    }
    pthread_mutex_lock(&seen_lock);
    seen_udata = udata;
    if (nseen < MAX_SEEN) {
        seen[nseen].level = level;
        seen[nseen].msg = strdup(msg);
        nseen++;
    }
    pthread_mutex_unlock(&seen_lock);
}

/* The index of the first line seen that contains TEXT, or -1. */
static int seen_find(const char *text)
{
    pthread_mutex_lock(&seen_lock);
    int at = -1;
    for (int i = 0; i < nseen && at < 0; i++)
        if (strstr(seen[i].msg, text))
            at = i;
    pthread_mutex_unlock(&seen_lock);
    return at;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int seen_count(void)
{
    pthread_mutex_lock(&seen_lock);
    int n = nseen;
    pthread_mutex_unlock(&seen_lock);
    return n;
}

/* ---- stderr, captured --------------------------------------------------- */

static char err_path[] = "/tmp/rrpc_test_log_XXXXXX";
static int real_stderr = -1;

static void capture_stderr(void)
{
    int fd = mkstemp(err_path);
    fflush(stderr);
    real_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Everything written to stderr so far (new, free()). */
static char *stderr_text(void)
{
    fflush(stderr);
    FILE *f = fopen(err_path, "rb");
    char *text = calloc(1, 1 << 20);
    if (f && text)
        fread(text, 1, (1 << 20) - 1, f);
    if (f)
        fclose(f);
    return text;
}

static int count_in(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

static void release_stderr(void)
{
    char *text = stderr_text();
    fflush(stderr);
    dup2(real_stderr, 2);
    close(real_stderr);
    fputs(text ? text : "", stderr); /* the run's own messages, failures included */
    free(text);
    unlink(err_path);
}

/* ---- the service -------------------------------------------------------- */

/* evil(): answers, with an effect Redis refuses quoting the command name,
 * in which a caller put terminal control sequences. */
static json_t *m_evil(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *argv[] = {"NOSUCH\x1b]0;PWNED\x07\x1b[2J", "x"};
    rrpc_request_add_effect(req, 2, argv);
    return json_true();
}

static void start(running *r)
{
    rrpc_server_options o;
    rrpc_server_options_init(&o);
    o.service = SERVICE;
    o.workers = 1;
    o.handle_signals = 0;
    o.heartbeat = 0; /* the worker's lines only */
    rrpc_server *s = NULL;
    CHECK(rrpc_server_new(&s, &o) == RRPC_OK);
    CHECK(rrpc_server_register(s, "evil", m_evil, NULL, NULL) == RRPC_OK);
    run_server(r, s);
}

/* Kills the worker's connection (not ours) once it has one. */
static void kill_worker_link(rrpc_client *c)
{
    json_t *res = NULL;
    CHECK(rrpc_call(c, SERVICE, "rpc.ping", NULL, 5, &res, NULL) == RRPC_OK); /* it is connected */
    json_decref(res);
    rrpc__reply_free(cmd(6, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"));
}

/* ---- tests ---------------------------------------------------------------- */

static void test_callback_gets_reconnect(running *r, rrpc_client **c)
{
    static int udata;
    rrpc_set_log_fn(on_log, &udata);
    kill_worker_link(*c);
    rrpc_client_close(*c); /* its link is gone too */
    *c = open_client_with(NULL);
    WAIT_UNTIL(seen_find("reconnected") >= 0, 10);
    int lost = seen_find("lost the Redis connection, reconnecting");
    int back = seen_find("reconnected");
    if (!CHECK(lost >= 0 && back > lost))
        return;
    CHECK(starts_with(seen[lost].msg,
                      "rrpc[" SERVICE "/0]: lost the Redis connection, reconnecting: "));
    CHECK_EQ_INT(seen[lost].level, RRPC_LOG_WARN);
    CHECK_EQ_STR(seen[back].msg, "rrpc[" SERVICE "/0]: reconnected");
    CHECK_EQ_INT(seen[back].level, RRPC_LOG_INFO);
    CHECK(seen_udata == &udata);
    CHECK(strchr(seen[lost].msg, '\n') == NULL); /* a line, without its newline */
    (void)r;
}

static void test_control_bytes_escaped(rrpc_client *c)
{
    json_t *res = NULL;
    CHECK(rrpc_call(c, SERVICE, "evil", NULL, 5, &res, NULL) == RRPC_OK);
    json_decref(res);
    WAIT_UNTIL(seen_find("NOSUCH") >= 0, 5);
    int at = seen_find("NOSUCH");
    if (!CHECK(at >= 0))
        return;
    const char *msg = seen[at].msg;
    CHECK(strstr(msg, "NOSUCH\\x1b]0;PWNED\\x07\\x1b[2J") != NULL);
    int raw_control = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
        raw_control |= *p < 0x20 || *p == 0x7f;
    CHECK(!raw_control);
    CHECK_EQ_INT(seen[at].level, RRPC_LOG_WARN);
    if (!CHECK(starts_with(msg, "rrpc[" SERVICE "/0]: Redis refused an effect: ")))
        fprintf(stderr, "    the line: %s\n", msg);
}

/* rrpc_set_log_fn from inside the callback is ignored: the next line still
 * reaches the callback, not stderr. */
static void test_reentry_ignored(rrpc_client **c)
{
    int before = seen_count();
    try_reentry = 1;
    kill_worker_link(*c);
    rrpc_client_close(*c);
    *c = open_client_with(NULL);
    WAIT_UNTIL(seen_count() >= before + 2, 10);
    CHECK(seen_count() >= before + 2); /* lost, then reconnected: both here */
    CHECK(!try_reentry);
}

/* NULL restores stderr, in the format of before; the callback's lines never
 * went there. */
static void test_default_is_stderr(rrpc_client **c)
{
    char *text = stderr_text();
    CHECK_EQ_INT(count_in(text, "rrpc[" SERVICE), 0);
    free(text);
    rrpc_set_log_fn(NULL, NULL);
    int before = seen_count();
    kill_worker_link(*c);
    rrpc_client_close(*c);
    *c = open_client_with(NULL);
    const char *line = "rrpc[" SERVICE "/0]: reconnected\n";
    double until = rrpc__monotonic() + 10;
    int found = 0;
    while (!found && rrpc__monotonic() < until) {
        text = stderr_text();
        found =
            count_in(text, line) == 1 &&
            count_in(text, "rrpc[" SERVICE "/0]: lost the Redis connection, reconnecting: ") == 1;
        free(text);
        rrpc__sleep(0.05);
    }
    CHECK(found);
    CHECK_EQ_INT(seen_count(), before); /* the callback is out of the picture */
}

static void test_safe_text(void)
{
    char out[64];
    CHECK_EQ_STR(rrpc_safe_text(out, sizeof out, "a\x1b[2J\n\t\x7f\xff", 0),
                 "a\\x1b[2J\\n\\t\\x7f\\xff");
    /* C1 CSI (U+009B) and a bidi override (U+202E) */
    CHECK_EQ_STR(rrpc_safe_text(out, sizeof out,
                                "x\xc2\x9b"
                                "1m\xe2\x80\xae"
                                "\xc3\xa9",
                                0),
                 "x\\u009b1m\\u202e\xc3\xa9");
    CHECK_EQ_STR(rrpc_safe_text(out, sizeof out, "[\"\x7f\xc2\x9b\"]\n", RRPC_SAFE_JSON),
                 "[\"\\u007f\\u009b\"]\n");
    CHECK_EQ_STR(rrpc_safe_text(out, 6, "ab\x1b", 0), "ab"); /* never half an escape */
    CHECK_EQ_STR(rrpc_safe_text(out, sizeof out, NULL, 0), "");
}

int main(void)
{
    capture_stderr();
    test_safe_text();
    running r;
    if (raw_open() != 0) {
        release_stderr();
        return 1;
    }
    start(&r);
    rrpc_client *c = open_client_with(NULL);
    test_callback_gets_reconnect(&r, &c);
    test_control_bytes_escaped(c);
    test_reentry_ignored(&c);
    test_default_is_stderr(&c);
    rrpc_client_close(c);
    stop_server(&r);
    raw_close();
    for (int i = 0; i < nseen; i++)
        free(seen[i].msg);
    release_stderr();
    return check_report();
}
