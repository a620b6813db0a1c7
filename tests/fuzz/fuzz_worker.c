/* fuzz_worker.c -- libFuzzer target for a worker's whole path, from popped
 * bytes to the Redis commands it sends.
 *
 * fuzz_dispatch covers decoding alone.  This target runs the real worker
 * loop of src/redis/worker*.c (rrpc__server_run_worker, server/server_worker.h)
 * on a real rrpc__conn (hiredis) to a unix socket, where a thread of this harness
 * plays Redis: it parses every command byte for byte, answers it as Redis
 * would (the popped messages, the reply script's per-key answers, commits,
 * canned refusals the input chooses), and checks invariants on the way:
 *
 * - every command is well-formed RESP and one the worker may send, on the
 *   keys it may touch: no EXPIRE/PEXPIRE/DEL/SET/anything else, nothing on
 *   a key taken from the input except reply keys (inside the reply or
 *   commit script) and the dead-letter list;
 * - every reply key passes the name rules (PROTOCOL.md section 3, rules 1
 *   to 4, re-implemented here independently of protocol.c) and is one the
 *   request named (rule A, also re-implemented here);
 * - replies go only through EVAL/EVALSHA of the published reply script (or
 *   reliable mode's commit script), with well-formed JSON responses;
 * - every dead letter is a JSON record within the documented size bound
 *   (PROTOCOL.md section 6) that describes a message the worker popped;
 * - nothing is lost: every popped message that is not a valid notification
 *   ends as a pushed reply, a dead letter, or a give-back (at-most-once), or
 *   as a commit or a request still held in flight (reliable mode);
 * - the worker stops when told to, and frees everything (LSan).
 *
 * Why this seam: it keeps every production code path, the transport's own
 * RESP encoder included, and needs the least change to the server -- one
 * entry that runs a worker on the calling thread (plus rrpc__rel_learn_scripts
 * so that reliable mode's worker knows its scripts' SHA-1s without the
 * heartbeat thread).  A fake connection object would have bypassed the
 * transport; exposing handle_popped would have bypassed collect/judge, the
 * retry and split paths, which are where replies could be lost.
 *
 * Input: 3 header bytes, then messages separated by 0xFF (see HEADER below).
 * Built with -DFUZZ_REPLAY_MAIN it is a plain program that replays files
 * (tests/fuzz/regressions, the seeds) for ctest.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/deadletter.h"
#include "core/internal.h"
#include "core/protocol.h"
#include "redis/reliable.h"
#include "redis/worker_effects.h"
#include "server/server_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* HEADER: byte 0, the configuration. */
enum {
    C_RELIABLE = 0x01,  /* reliable mode (BLMOVE, take and commit scripts) */
    C_ALLOW = 0x02,     /* reply_prefixes = {<P>rrpc:reply:, ok:} */
    C_PREFIX = 0x04,    /* key_prefix "p:" */
    C_SHARDS = 0x08,    /* 2 shards, the worker of shard 1 (at-most-once) */
    C_SMALL = 0x10,     /* max_request_bytes 1000 (else 64 KiB) */
    C_BATCH2 = 0x20,    /* batch_max 2 */
    C_NOSVC = 0x40,     /* SMEMBERS refused (NOPERM): rule 3 is skipped */
    C_TIMELIMIT = 0x80, /* batch time limit 10 ms */
};
/* Byte 1: the Nth reply key the reply script sees is refused if bit N % 8
 * is set (as a hash, a list without expiry or a string, in turn).
 * Byte 2: one-off events. */
enum {
    E_SPLIT = 0x01,   /* the first reply call of several keys: NOPERM (split) */
    E_BUSY = 0x02,    /* the first reply call: BUSY (answers wait, resent) */
    E_LOADING = 0x04, /* the first dead letter: LOADING (resent) */
    E_NOPERM1 = 0x08, /* the first one-key reply call: NOPERM (reply failed) */
    E_REFUSE = 0x10,  /* reliable: the first commit with a reply key: refused */
    E_OOM = 0x20,     /* reliable: the first commit: OOM (held, retried) */
    E_AGAIN = 0x40,   /* reliable: the first request has a remembered answer */
    E_POISON = 0x80,  /* reliable: the first request's dedup key is poisoned */
    E_NOTIME = 0x40,  /* at-most-once: TIME refused (deadlines not judged) */
    E_SKEW = 0x80,    /* at-most-once: Redis's clock 1000 s ahead */
};

#define SERVICE         "fuzz"
#define MAX_MESSAGES    64
#define MAX_ROUNDS      2000
#define SLEEP_BUDGET_MS 25
#define BIG_MAX         200000

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            violation(__LINE__, __VA_ARGS__);                                                      \
    } while (0)

static void violation(int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_worker: INVARIANT VIOLATED (line %d): ", line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* The harness's own sleeps (a slow handler, Redis blocking on an empty
 * list) take real time. */
static void real_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

/* The worker's pauses (rrpc__sleep: its backoff after Redis said "not
 * now", LOADING or BUSY) wait for a Redis that here answers at once: a
 * tenth of each keeps the fuzzer fast and the paths the same.  Defined in
 * the program, it is the nanosleep the library calls. */
int nanosleep(const struct timespec *req, struct timespec *rem)
{
    long long ns = ((long long)req->tv_sec * 1000000000LL + req->tv_nsec) / 10;
    struct timespec t = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    int rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &t, rem);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return 0;
}

/* ---- bytes ---------------------------------------------------------------- */

typedef struct bytes {
    char *p;
    size_t len;
} bytes;

static bytes dup_bytes(const char *p, size_t len)
{
    bytes b = {malloc(len + 1), len};
    if (b.p == NULL)
        abort();
    memcpy(b.p, p, len);
    b.p[len] = '\0';
    return b;
}

static int eq(const bytes *b, const char *p, size_t len)
{
    return b->len == len && memcmp(b->p, p, len) == 0;
}

static int eqs(const bytes *b, const char *s)
{
    return eq(b, s, strlen(s));
}

static int starts(const char *p, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(p, prefix, n) == 0;
}

static int ends(const char *p, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(p + len - n, suffix, n) == 0;
}

/* ---- one input's world ---------------------------------------------------- */

/* A popped message and what the harness expects of it. */
typedef struct message {
    bytes text;
    int needs_answer; /* not a valid notification (or batch of them) */
    bytes keys[8];    /* rule A's reply keys it may be answered on */
    size_t nkeys;
} message;

/* A message held in reliable mode's in-flight hash. */
typedef struct held {
    char field[64];
    size_t msg; /* index into messages */
    int answer; /* 0 nil, 1 remembered answer, 2 poisoned dedup key */
    int done;   /* a commit was answered with an integer */
    int erred;  /* its last commit was answered with an error (held by the worker) */
    int live;   /* still in the in-flight hash */
} held;

typedef struct outcome {
    int kind; /* 'D' dead letter, 'G' given back, 'R' reply pushed */
    bytes key;
    size_t msg; /* 'D'/'G': the message it describes */
} outcome;

typedef struct world {
    unsigned char cfg, refuse_bits, events;
    size_t max_bytes;
    char prefix[8];
    char list_key[32], pop_key[48], dead_key[48], stats_key[48], services_key[48];
    char allow[2][64];
    int nallow;
    char reply_sha[41], take_sha[41], commit_sha[41];
    int reply_loaded;
    char wid[200]; /* reliable: the worker id (SADD), which its take identities name */
    int nscripts;
    char inflight_key[RRPC__KEY_MAX], landing_key[RRPC__KEY_MAX], set_key[RRPC__KEY_MAX];
    /* the messages of the input, and the list (indexes) */
    message msgs[MAX_MESSAGES];
    size_t nmsgs;
    size_t queue[4 * MAX_MESSAGES + 8];
    size_t qhead, qlen;
    long landing; /* reliable: the message BLMOVE landed, or -1 */
    /* deliveries: each pop of a message (at-most-once) */
    size_t deliveries[16 * MAX_MESSAGES];
    size_t ndeliveries;
    held helds[4 * MAX_MESSAGES];
    size_t nhelds;
    unsigned long takes;
    outcome outs[64 * MAX_MESSAGES];
    size_t nouts;
    size_t reply_keys_seen;
    int busy_used, split_used, loading_used, noperm1_used, refuse_used, oom_used;
    int rounds;
    int stop_sent;
    rrpc_server *srv;
    int fd;
} world;

static char sock_path[108];
static int listener = -1;

static const char *const services[] = {SERVICE, "other", "app", "x#1"};

/* ---- the independent oracles ---------------------------------------------- */

/* Rule A (PROTOCOL.md section 3): the key a request object names. */
static int key_of(const json_t *o, bytes *out)
{
    const json_t *to = json_object_get(o, "reply_to"), *id = json_object_get(o, "id");
    if (json_is_string(to) && json_string_length(to) > 0) {
        *out = dup_bytes(json_string_value(to), json_string_length(to));
        return 1;
    }
    if (json_is_string(id) && json_string_length(id) > 0) {
        *out = dup_bytes(json_string_value(id), json_string_length(id));
        return 1;
    }
    double v;
    if (json_is_integer(id))
        v = (double)json_integer_value(id);
    else if (json_is_real(id))
        v = json_real_value(id);
    else
        return 0;
    if (v != v || v > 9007199254740992.0 || v < -9007199254740992.0 || v != (double)(long long)v)
        return 0;
    if (json_is_integer(id) && (json_integer_value(id) > 9007199254740992LL ||
                                json_integer_value(id) < -9007199254740992LL))
        return 0;
    char text[32];
    int n = snprintf(text, sizeof text, "%lld",
                     json_is_integer(id) ? (long long)json_integer_value(id) : (long long)v);
    *out = dup_bytes(text, (size_t)n);
    return 1;
}

static int valid_notification(const json_t *o)
{
    const char *why;
    return json_is_object(o) && json_object_get(o, "id") == NULL &&
           rrpc__request_validate(o, &why) == 0;
}

/* What M needs, and the keys it may be answered on. */
static void classify(world *w, message *m)
{
    m->needs_answer = 1;
    if (m->text.len > w->max_bytes)
        return;
    json_t *j = json_loadb(m->text.p, m->text.len, RRPC__JSON_DECODE_FLAGS, NULL);
    if (j == NULL)
        return;
    if (json_is_object(j)) {
        m->needs_answer = !valid_notification(j);
        if (key_of(j, &m->keys[0]))
            m->nkeys = 1;
    } else if (json_is_array(j)) {
        size_t n = json_array_size(j), notes = 0;
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(j, i);
            if (valid_notification(e)) {
                notes++;
                continue;
            }
            if (json_is_object(e) && m->nkeys < 8 && key_of(e, &m->keys[m->nkeys]))
                m->nkeys++;
        }
        m->needs_answer = n == 0 || n > 1000 || notes < n;
    }
    json_decref(j);
}

/* Rules 1 to 4 of PROTOCOL.md section 3, by name: nonzero if a worker may
 * push onto KEY. */
static int key_allowed(const world *w, const char *k, size_t n)
{
    size_t ll = strlen(w->list_key);
    char tag[80];
    snprintf(tag, sizeof tag, "{%s}", w->list_key);
    if ((n == ll && memcmp(k, w->list_key, ll) == 0) ||
        (n > ll && memcmp(k, w->list_key, ll) == 0 && k[ll] == '#' && n > ll + 1 &&
         strspn(k + ll + 1, "0123456789") >= n - ll - 1 && k[ll + 1] != '0' &&
         (w->cfg & C_SHARDS) && n == ll + 2 && k[ll + 1] == '1') ||
        (n == strlen(w->dead_key) && memcmp(k, w->dead_key, n) == 0) ||
        (n == strlen(w->stats_key) && memcmp(k, w->stats_key, n) == 0) ||
        (n > strlen(tag) && starts(k, n, tag)))
        return 0; /* rule 1 */
    char rr[32], rrr[40];
    snprintf(rr, sizeof rr, "%srrpc:", w->prefix);
    snprintf(rrr, sizeof rrr, "%srrpc:reply:", w->prefix);
    if (starts(k, n, rr) && !starts(k, n, rrr))
        return 0; /* rule 2 */
    if (n > 0 && k[0] == '{') {
        for (size_t i = 1; i + 1 < n; i++)
            if (k[i] == '}' && k[i + 1] == ':')
                return 0;
    }
    if (ends(k, n, ":dead") || ends(k, n, ":stats"))
        return 0;
    if (!(w->cfg & C_NOSVC)) { /* rule 3 */
        size_t pl = strlen(w->prefix);
        for (size_t s = 0; s < sizeof services / sizeof services[0]; s++) {
            size_t sl = strlen(services[s]);
            if (n < pl + sl || memcmp(k, w->prefix, pl) != 0 || memcmp(k + pl, services[s], sl))
                continue;
            if (n == pl + sl)
                return 0;
            if (k[pl + sl] == '#' && n > pl + sl + 1) {
                size_t d = pl + sl + 1;
                while (d < n && k[d] >= '0' && k[d] <= '9')
                    d++;
                if (d == n)
                    return 0;
            }
        }
    }
    if (w->nallow > 0) { /* rule 4 */
        for (int i = 0; i < w->nallow; i++)
            if (starts(k, n, w->allow[i]))
                return 1;
        return 0;
    }
    return 1;
}

/* Nonzero if KEY is one message M may be answered on. */
static int key_of_message(const message *m, const char *k, size_t n)
{
    for (size_t i = 0; i < m->nkeys; i++)
        if (eq(&m->keys[i], k, n))
            return 1;
    return 0;
}

static int any_message_key(const world *w, const char *k, size_t n)
{
    for (size_t i = 0; i < w->nmsgs; i++)
        if (key_of_message(&w->msgs[i], k, n))
            return 1;
    return 0;
}

static size_t unbase64(const char *in, unsigned char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    unsigned v = 0;
    int bits = 0;
    for (; *in && *in != '='; in++) {
        const char *p = strchr(a, *in);
        CHECK(p != NULL, "bad base64 in a dead letter");
        v = v << 6 | (unsigned)(p - a);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(v >> bits);
        }
    }
    return n;
}

/* Nonzero if the dead letter REC describes message M. */
static int letter_describes(const json_t *rec, const message *m)
{
    const json_t *t = json_object_get(rec, "message");
    if (json_is_string(t))
        return eq(&m->text, json_string_value(t), json_string_length(t));
    t = json_object_get(rec, "message_base64");
    if (json_is_string(t)) {
        unsigned char *raw = malloc(json_string_length(t) + 4);
        size_t n = unbase64(json_string_value(t), raw);
        int same = eq(&m->text, (const char *)raw, n);
        free(raw);
        return same;
    }
    const json_t *len = json_object_get(rec, "message_bytes");
    const json_t *sha = json_object_get(rec, "message_sha1");
    char want[41];
    rrpc__sha1_hex(m->text.p, m->text.len, want);
    return json_is_integer(len) && (size_t)json_integer_value(len) == m->text.len &&
           json_is_string(sha) && strcmp(json_string_value(sha), want) == 0;
}

/* Checks the dead letter TEXT and returns the message it describes. */
static size_t check_dead_letter(world *w, const char *text, size_t len)
{
    /* PROTOCOL.md section 6: 6 x M + 24 KiB for the message, the response
     * at most M (or its 24 KiB prefix), plus a few hundred bytes. */
    size_t m = w->max_bytes, bound = 6 * m + 24576 + (m > 24576 ? m : 24576) + 1024;
    CHECK(len <= bound, "dead letter of %zu bytes > bound %zu", len, bound);
    json_error_t err;
    json_t *rec = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, &err);
    CHECK(json_is_object(rec), "dead letter is not a JSON object: %s", err.text);
    CHECK(json_is_string(json_object_get(rec, "reason")), "dead letter without a reason");
    CHECK(json_is_string(json_object_get(rec, "service")) &&
              strcmp(json_string_value(json_object_get(rec, "service")), SERVICE) == 0,
          "dead letter without its service");
    CHECK(json_is_number(json_object_get(rec, "time")), "dead letter without a time");
    size_t found = SIZE_MAX;
    for (size_t i = 0; i < w->nmsgs && found == SIZE_MAX; i++)
        if (letter_describes(rec, &w->msgs[i]))
            found = i;
    CHECK(found != SIZE_MAX, "dead letter describes no popped message: %.300s", text);
    json_decref(rec);
    return found;
}

static void check_response(const char *text, size_t len)
{
    json_t *j = json_loadb(text, len, RRPC__JSON_DECODE_FLAGS, NULL);
    CHECK(json_is_object(j) || json_is_array(j), "a response that is not JSON: %.200s", text);
    json_decref(j);
}

static void add_outcome(world *w, int kind, const char *key, size_t klen, size_t msg)
{
    CHECK(w->nouts < sizeof w->outs / sizeof w->outs[0], "too many outcomes");
    outcome *o = &w->outs[w->nouts++];
    o->kind = kind;
    o->key = key ? dup_bytes(key, klen) : (bytes){NULL, 0};
    o->msg = msg;
}

/* ---- answering as Redis ------------------------------------------------------ */

typedef struct out_buf {
    char *p;
    size_t len, cap, sent;
} out_buf;

static void put(out_buf *o, const char *p, size_t len)
{
    if (o->len + len > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + len)
            cap *= 2;
        o->p = realloc(o->p, cap);
        if (o->p == NULL)
            abort();
        o->cap = cap;
    }
    memcpy(o->p + o->len, p, len);
    o->len += len;
}

static void putf(out_buf *o, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    put(o, buf, (size_t)n);
}

static void put_bulk(out_buf *o, const char *p, size_t len)
{
    putf(o, "$%zu\r\n", len);
    put(o, p, len);
    put(o, "\r\n", 2);
}

static void put_str(out_buf *o, const char *s)
{
    put_bulk(o, s, strlen(s));
}

static void stop_worker(world *w)
{
    if (!w->stop_sent)
        rrpc_server_stop(w->srv);
    w->stop_sent = 1;
}

static long pop_queue(world *w)
{
    if (w->qlen == 0)
        return -1;
    w->qlen--;
    return (long)w->queue[w->qhead++];
}

static void delivered(world *w, size_t msg)
{
    CHECK(w->ndeliveries < sizeof w->deliveries / sizeof w->deliveries[0], "too many pops");
    w->deliveries[w->ndeliveries++] = msg;
}

static void count_round(world *w)
{
    CHECK(++w->rounds < MAX_ROUNDS, "the worker never finishes (%d pops)", w->rounds);
}

/* Nonzero if A[0..3) name the pop list's priority lists around it, in
 * the order workers take them: {L}:high, L, {L}:low (PROTOCOL.md 7).
 * The harness queues only normal messages: the other two stay empty. */
static int priority_keys(const world *w, const bytes *a)
{
    char high[64], low[64];
    snprintf(high, sizeof high, "{%s}:high", w->pop_key);
    snprintf(low, sizeof low, "{%s}:low", w->pop_key);
    return eqs(&a[0], high) && eqs(&a[1], w->pop_key) && eqs(&a[2], low);
}

/* BLPOP {L}:high L {L}:low <timeout>: one message, or nil and the worker
 * is told to stop (the list is empty: the input is all delivered). */
static void on_blpop(world *w, bytes *a, size_t n, out_buf *o)
{
    CHECK(n == 5 && priority_keys(w, &a[1]), "BLPOP on other keys: %s", a[1].p);
    count_round(w);
    long m = pop_queue(w);
    if (m < 0) {
        stop_worker(w);
        put(o, "*-1\r\n", 5);
        return;
    }
    delivered(w, (size_t)m);
    put(o, "*2\r\n", 4);
    put_str(o, w->pop_key);
    put_bulk(o, w->msgs[m].text.p, w->msgs[m].text.len);
}

/* LMPOP 3 {L}:high L {L}:low LEFT COUNT <n>: [L, [messages]] or nil. */
static void on_lmpop(world *w, bytes *a, size_t n, out_buf *o)
{
    CHECK(n == 8 && eqs(&a[1], "3") && priority_keys(w, &a[2]) && eqs(&a[5], "LEFT") &&
              eqs(&a[6], "COUNT"),
          "LMPOP of other keys or in another form");
    long count = strtol(a[7].p, NULL, 10);
    CHECK(count > 0, "LMPOP count %s", a[7].p);
    if (w->qlen == 0) {
        put(o, "*-1\r\n", 5);
        return;
    }
    size_t k = w->qlen < (size_t)count ? w->qlen : (size_t)count;
    put(o, "*2\r\n", 4);
    put_str(o, w->pop_key);
    putf(o, "*%zu\r\n", k);
    for (size_t i = 0; i < k; i++) {
        long m = pop_queue(w);
        delivered(w, (size_t)m);
        put_bulk(o, w->msgs[m].text.p, w->msgs[m].text.len);
    }
}

/* LPUSH <list> <msg>...: a give-back; the messages go back to the head. */
static void on_lpush(world *w, bytes *a, size_t n, out_buf *o)
{
    CHECK(n >= 3 && eqs(&a[1], w->pop_key), "LPUSH on another key: %s", a[1].p);
    CHECK(!(w->cfg & C_RELIABLE), "a give-back in reliable mode");
    for (size_t i = 2; i < n; i++) {
        size_t m = SIZE_MAX;
        for (size_t k = 0; k < w->nmsgs && m == SIZE_MAX; k++)
            if (eq(&w->msgs[k].text, a[i].p, a[i].len))
                m = k;
        CHECK(m != SIZE_MAX, "a give-back of a message never popped");
        add_outcome(w, 'G', NULL, 0, m);
        CHECK(w->qhead > 0, "give-back overflow");
        w->queue[--w->qhead] = m;
        w->qlen++;
    }
    putf(o, ":%zu\r\n", w->qlen);
}

/* The at-most-once effects script: KEYS[1] = a guard key under the
 * service's tag, then the guard's lifetime, the count and each effect as
 * its argc and arguments.  Answered "all applied". */
static void on_effects_call(world *w, bytes *a, size_t n, out_buf *o)
{
    char guard[64];
    snprintf(guard, sizeof guard, "{%s}:applied:", w->list_key);
    CHECK(eqs(&a[2], "1") && starts(a[3].p, a[3].len, guard), "effects guard key %.200s", a[3].p);
    long count = strtol(a[5].p, NULL, 10);
    size_t i = 6;
    for (long e = 0; e < count; e++) {
        CHECK(i < n, "effects call shorter than its count");
        long argc = strtol(a[i].p, NULL, 10);
        CHECK(argc >= 1 && i + 1 + (size_t)argc <= n, "effect of %ld arguments", argc);
        i += 1 + (size_t)argc;
    }
    CHECK(i == n, "effects call with %zu arguments for %ld effects", n, count);
    putf(o, "*0\r\n");
}

/* The reply script: KEYS = reply keys, ARGV = ttl, responses. */
static void on_reply_call(world *w, bytes *a, size_t n, out_buf *o)
{
    long nk = strtol(a[2].p, NULL, 10);
    CHECK(nk >= 1 && (size_t)(2 * nk + 4) == n, "reply call with %ld keys and %zu args", nk, n);
    CHECK(eqs(&a[3 + nk], "60"), "reply TTL %s", a[3 + nk].p);
    for (long i = 0; i < nk; i++) {
        bytes *k = &a[3 + i];
        CHECK(key_allowed(w, k->p, k->len), "reply key refused by the rules was used: %.200s",
              k->p);
        CHECK(any_message_key(w, k->p, k->len), "reply key no message named: %.200s", k->p);
        check_response(a[4 + nk + i].p, a[4 + nk + i].len);
    }
    if ((w->events & E_BUSY) && !w->busy_used) {
        w->busy_used = 1;
        putf(o, "-BUSY Redis is busy running a script.\r\n");
        return;
    }
    if ((w->events & E_SPLIT) && !w->split_used && nk > 1) {
        w->split_used = 1;
        putf(o, "-NOPERM this user has no permissions to access one of the keys\r\n");
        return;
    }
    if ((w->events & E_NOPERM1) && !w->noperm1_used && nk == 1) {
        w->noperm1_used = 1;
        putf(o, "-NOPERM this user has no permissions to access one of the keys\r\n");
        return;
    }
    static const char *const refusals[] = {"hash", "list without expiry", "string"};
    putf(o, "*%ld\r\n", nk);
    for (long i = 0; i < nk; i++) {
        size_t seen = w->reply_keys_seen++;
        if (w->refuse_bits & (1u << (seen % 8))) {
            put_str(o, refusals[seen % 3]);
        } else {
            put(o, ":1\r\n", 4);
            add_outcome(w, 'R', a[3 + i].p, a[3 + i].len, 0);
        }
    }
}

static void on_dead_push(world *w, bytes *a, size_t n, out_buf *o)
{
    CHECK(n == 3, "RPUSH of several dead letters");
    size_t m = check_dead_letter(w, a[2].p, a[2].len);
    if ((w->events & E_LOADING) && !w->loading_used) {
        w->loading_used = 1;
        putf(o, "-LOADING Redis is loading the dataset in memory\r\n");
        return;
    }
    add_outcome(w, 'D', NULL, 0, m);
    put(o, ":1\r\n", 4);
}

/* ---- reliable mode ----------------------------------------------------------- */

static held *find_held(world *w, const char *field)
{
    for (size_t i = 0; i < w->nhelds; i++)
        if (strcmp(w->helds[i].field, field) == 0)
            return &w->helds[i];
    return NULL;
}

static void hold_message(world *w, size_t m, const char *base, int k)
{
    CHECK(w->nhelds < sizeof w->helds / sizeof w->helds[0], "too many held");
    held *h = &w->helds[w->nhelds++];
    snprintf(h->field, sizeof h->field, "%s.%06d", base, k);
    h->msg = m;
    h->live = 1;
    h->answer = w->nhelds == 1 && (w->events & E_POISON)  ? 2
                : w->nhelds == 1 && (w->events & E_AGAIN) ? 1
                                                          : 0;
}

static int any_live(const world *w)
{
    for (size_t i = 0; i < w->nhelds; i++)
        if (w->helds[i].live)
            return 1;
    return 0;
}

/* The take script: moves the landed message and up to COUNT more into the
 * in-flight hash; returns [field, request] for all held there. */
static void on_take(world *w, bytes *a, size_t n, out_buf *o)
{
    char high[64], low[64];
    snprintf(high, sizeof high, "{%s}:high", w->list_key);
    snprintf(low, sizeof low, "{%s}:low", w->list_key);
    CHECK(n == 12 && eqs(&a[2], "6") && eqs(&a[3], w->list_key) && eqs(&a[4], w->landing_key) &&
              eqs(&a[5], w->inflight_key) && eqs(&a[6], w->set_key) && eqs(&a[7], high) &&
              eqs(&a[8], low) && eqs(&a[10], w->wid),
          "take script on other keys");
    long count = strtol(a[9].p, NULL, 10);
    int k = 0;
    if (w->landing >= 0)
        hold_message(w, (size_t)w->landing, a[11].p, ++k);
    w->landing = -1;
    for (long i = 0; i < count && w->qlen > 0; i++)
        hold_message(w, (size_t)pop_queue(w), a[11].p, ++k);
    size_t live = 0;
    for (size_t i = 0; i < w->nhelds; i++)
        live += w->helds[i].live;
    if (live == 0 && w->qlen == 0)
        stop_worker(w);
    putf(o, "*%zu\r\n", 2 * live);
    for (size_t i = 0; i < w->nhelds; i++) {
        held *h = &w->helds[i];
        if (!h->live)
            continue;
        const message *m = &w->msgs[h->msg];
        put_str(o, h->field);
        putf(o, "$%zu\r\n", m->text.len);
        put(o, m->text.p, m->text.len);
        put(o, "\r\n", 2);
    }
}

/* The done key of the request held as H (its identity as the reaper's Lua
 * computes it, rel_identity.c); 1 if that identity is stable. */
static int done_key_of(const world *w, const held *h, char done[RRPC__KEY_MAX])
{
    const message *m = &w->msgs[h->msg];
    char sha[41];
    int stable = rrpc__rel_identity(m->text.p, m->text.len, w->max_bytes, w->wid, h->field, sha);
    snprintf(done, RRPC__KEY_MAX, "{%s}:done:%s", w->list_key, sha);
    return stable;
}

/* Nonzero if KEY is one of the list's done keys. */
static int is_done_key(const world *w, const bytes *key)
{
    char prefix[64];
    int n = snprintf(prefix, sizeof prefix, "{%s}:done:", w->list_key);
    return key->len > (size_t)n && memcmp(key->p, prefix, (size_t)n) == 0;
}

/* The live held request whose done key (stable identity) is KEY, or NULL. */
static const held *held_of_done(const world *w, const bytes *key)
{
    char done[RRPC__KEY_MAX];
    for (size_t j = 0; j < w->nhelds; j++)
        if (w->helds[j].live && done_key_of(w, &w->helds[j], done) && eqs(key, done))
            return &w->helds[j];
    return NULL;
}

/* The worker's dedup check, before it runs anything of a take: MGET of the
 * done keys (per key the answer remembered for the live held request it
 * belongs to: every key must be one), and EXISTS of the same keys (a
 * poisoned key -- answer 2 -- is there, but MGET says nil for it). */
static void on_check(world *w, bytes *a, size_t n, out_buf *o)
{
    int mget = eqs(&a[0], "MGET");
    long there = 0;
    if (mget)
        putf(o, "*%zu\r\n", n - 1);
    for (size_t i = 1; i < n; i++) {
        const held *h = held_of_done(w, &a[i]);
        CHECK(h != NULL, "dedup check of a key no held request with a stable identity has: %s",
              a[i].p);
        const message *m = &w->msgs[h->msg];
        there += h->answer != 0;
        if (!mget) {
            continue;
        } else if (h->answer == 1 && m->nkeys > 0) {
            const char *resp = "{\"jsonrpc\":\"2.0\",\"result\":\"again\",\"id\":1}";
            char head[32];
            int hl = snprintf(head, sizeof head, "K%zu:", m->keys[0].len);
            putf(o, "$%zu\r\n%s", (size_t)hl + m->keys[0].len + strlen(resp), head);
            put(o, m->keys[0].p, m->keys[0].len);
            putf(o, "%s\r\n", resp);
        } else if (h->answer == 1) {
            put_str(o, "-");
        } else {
            put(o, "$-1\r\n", 5);
        }
    }
    if (!mget)
        putf(o, ":%ld\r\n", there);
}

/* One request's part of a commit call: DONE and REPLY (NULL: none) its
 * keys, ARGV its field, answer, response, dead letter, effect count and
 * effects (NARGS in all); its outcome goes to O. */
static void commit_one(world *w, const bytes *done_key, const bytes *reply, bytes *argv,
                       size_t nargs, out_buf *o)
{
    CHECK(nargs >= 5, "a commit part without its arguments");
    held *h = find_held(w, argv[0].p);
    CHECK(h != NULL, "commit of a field never taken: %s", argv[0].p);
    const message *m = &w->msgs[h->msg];
    char done[RRPC__KEY_MAX];
    done_key_of(w, h, done);
    CHECK(eqs(done_key, done), "commit's done key is not the request's");
    if (reply != NULL) {
        CHECK(key_allowed(w, reply->p, reply->len),
              "commit to a reply key the rules refuse: %.200s", reply->p);
        CHECK(key_of_message(m, reply->p, reply->len), "commit to a key its request did not name");
        check_response(argv[2].p, argv[2].len);
    } else {
        CHECK(argv[2].len == 0, "a response without a reply key");
    }
    if (argv[3].len > 0) {
        size_t d = check_dead_letter(w, argv[3].p, argv[3].len);
        CHECK(eq(&w->msgs[d].text, m->text.p, m->text.len),
              "commit's dead letter describes another message");
    }
    /* effects: only the handler's own */
    long ne = strtol(argv[4].p, NULL, 10);
    size_t at = 5;
    for (long e = 0; e < ne; e++) {
        CHECK(at < nargs, "effects run past the command");
        long argc = strtol(argv[at].p, NULL, 10);
        CHECK(argc == 2 && eqs(&argv[at + 1], "INCR") && eqs(&argv[at + 2], "fx:n"),
              "an effect the handler did not add");
        at += 1 + (size_t)argc;
    }
    CHECK(at == nargs, "commit part with extra arguments");
    if (!h->live) {
        put(o, ":0\r\n", 4);
        return;
    }
    if (h->answer == 2 && argv[1].len > 0 && argv[3].len == 0) {
        putf(o, "*2\r\n$7\r\nrefused\r\n");
        put_str(o, "dedup key refused: hash");
        return;
    }
    if (reply != NULL && (w->events & E_REFUSE) && !w->refuse_used) {
        w->refuse_used = 1;
        putf(o, "*2\r\n$7\r\nrefused\r\n");
        put_str(o, "reply key refused: hash");
        return;
    }
    h->erred = 0;
    h->done = 1;
    h->live = 0;
    CHECK(!m->needs_answer || reply != NULL || argv[3].len > 0 || argv[1].len == 0,
          "a request committed with neither an answer nor a dead letter: %.200s", m->text.p);
    put(o, ":1\r\n", 4);
}

/* Where the parts of a commit call are: part J's keys at KEYS[J] (its
 * first key's index into A) and arguments at ARGS[J], NARGS[J] of them. */
typedef struct commit_parts {
    size_t keys[4 * MAX_MESSAGES], args[4 * MAX_MESSAGES], nargs[4 * MAX_MESSAGES],
        nk[4 * MAX_MESSAGES];
    long n;
} commit_parts;

/* Splits a commit call (KEYS in-flight, dead, stats, then per request its
 * done key[, reply key]; ARGV window, ttl, trim, N, 'release' (one Redis:
 * the script releases what it commits), then per request its key count,
 * field, answer, response, dead letter, effects) into parts. */
static void split_commit(const world *w, bytes *a, size_t n, commit_parts *p)
{
    long nk = strtol(a[2].p, NULL, 10);
    CHECK(nk >= 4 && n >= (size_t)(3 + nk + 5), "commit of %ld keys", nk);
    CHECK(eqs(&a[3], w->inflight_key) && eqs(&a[4], w->dead_key) && eqs(&a[5], w->stats_key),
          "commit on other keys");
    size_t argv0 = 3 + (size_t)nk, key = 6, at = argv0 + 5;
    CHECK(eqs(&a[argv0 + 2], "-1000"), "commit's dead-letter bound: %s", a[argv0 + 2].p);
    CHECK(eqs(&a[argv0 + 4], "release"), "commit that holds on one Redis: %s", a[argv0 + 4].p);
    p->n = strtol(a[argv0 + 3].p, NULL, 10);
    CHECK(p->n >= 1 && p->n <= 4 * MAX_MESSAGES, "commit of %ld requests", p->n);
    for (long j = 0; j < p->n; j++) {
        CHECK(at + 6 <= n, "commit part %ld runs past the command", j);
        long k = strtol(a[at].p, NULL, 10);
        CHECK(k == 1 || k == 2, "commit part of %ld keys", k);
        p->keys[j] = key;
        p->nk[j] = (size_t)k;
        key += (size_t)k;
        p->args[j] = at + 1;
        size_t end = at + 6;
        long ne = strtol(a[at + 5].p, NULL, 10);
        for (long e = 0; e < ne && end < n; e++)
            end += 1 + (size_t)strtol(a[end].p, NULL, 10);
        CHECK(end <= n, "commit part %ld's effects run past the command", j);
        p->nargs[j] = end - (at + 1);
        at = end;
    }
    CHECK(key == argv0, "commit's keys and parts disagree");
    CHECK(at == n, "commit with extra arguments");
}

/* A grouped commit call (the commit script's first layout: plain answers
 * by reply key; KEYS in-flight, dead, stats, the groups' reply keys, then
 * every request's done key in group order; ARGV window, ttl, trim, N,
 * 'release+g', G, per group "K<n>:"/'0' (a reply key of n bytes or none) and its count
 * C, then the N fields in group order, then per group its C responses
 * (with a reply key: the script builds the answer from it) or C answers):
 * each request's arguments copied into ARGS as the general layout has them
 * (field, answer -- the response stands for it --, response, no dead
 * letter, no effect), its keys into DONE and REPLY (-1: none). */
typedef struct grouped_parts {
    bytes args[4 * MAX_MESSAGES][5];
    size_t done[4 * MAX_MESSAGES];
    long reply[4 * MAX_MESSAGES];
    long n;
} grouped_parts;

static void split_grouped(const world *w, bytes *a, size_t n, grouped_parts *p)
{
    static char empty[] = "", zero[] = "0";
    long nk = strtol(a[2].p, NULL, 10);
    CHECK(nk >= 3 && n >= (size_t)(3 + nk + 6), "grouped commit of %ld keys", nk);
    CHECK(eqs(&a[3], w->inflight_key) && eqs(&a[4], w->dead_key) && eqs(&a[5], w->stats_key),
          "grouped commit on other keys");
    size_t argv0 = 3 + (size_t)nk, rk = 6;
    CHECK(eqs(&a[argv0 + 2], "-1000"), "commit's dead-letter bound: %s", a[argv0 + 2].p);
    p->n = strtol(a[argv0 + 3].p, NULL, 10);
    CHECK(p->n >= 1 && p->n <= 4 * MAX_MESSAGES, "grouped commit of %ld requests", p->n);
    long groups = strtol(a[argv0 + 5].p, NULL, 10), j = 0;
    CHECK(groups >= 1 && argv0 + 6 + 2 * (size_t)groups + 2 * (size_t)p->n == n,
          "grouped commit of %ld groups and %ld requests in %zu arguments", groups, p->n, n);
    size_t f = argv0 + 6 + 2 * (size_t)groups, pay = f + (size_t)p->n;
    for (long g = 0; g < groups; g++) {
        const bytes *flag = &a[argv0 + 6 + 2 * (size_t)g];
        int reply = !eqs(flag, "0");
        char lead[32];
        snprintf(lead, sizeof lead, "K%zu:", reply ? a[rk].len : 0);
        CHECK(!reply || (rk < argv0 && eqs(flag, lead)), "group %ld's answer head: %s", g, flag->p);
        long c = strtol(a[argv0 + 7 + 2 * (size_t)g].p, NULL, 10);
        CHECK(c >= 1 && j + c <= p->n, "group %ld of %ld requests", g, c);
        for (long i = 0; i < c; i++, j++, f++, pay++) {
            p->args[j][0] = a[f];
            p->args[j][1] = a[pay];
            p->args[j][2] = reply ? a[pay] : (bytes){empty, 0};
            p->args[j][3] = (bytes){empty, 0};
            p->args[j][4] = (bytes){zero, 1};
            CHECK(a[pay].len > 0, "a grouped commit that remembers nothing");
            p->reply[j] = reply ? (long)rk : -1;
        }
        rk += (size_t)reply;
    }
    CHECK(j == p->n, "grouped commit's count and groups disagree");
    for (long i = 0; i < p->n; i++)
        p->done[i] = rk + (size_t)i;
    CHECK(rk + (size_t)p->n == argv0, "grouped commit's keys and groups disagree");
}

/* The commit script in its grouped layout. */
static void on_grouped_commit(world *w, bytes *a, size_t n, out_buf *o)
{
    static grouped_parts p;
    split_grouped(w, a, n, &p);
    if ((w->events & E_OOM) && !w->oom_used) {
        int any = 0;
        for (long j = 0; j < p.n; j++) {
            held *h = find_held(w, p.args[j][0].p);
            CHECK(h != NULL, "commit of a field never taken: %s", p.args[j][0].p);
            if (h->live) {
                h->erred = 1;
                any = 1;
            }
        }
        if (any) {
            w->oom_used = 1;
            putf(o, "-OOM command not allowed when used memory > 'maxmemory'.\r\n");
            return;
        }
    }
    putf(o, "*%ld\r\n", p.n);
    for (long j = 0; j < p.n; j++)
        commit_one(w, &a[p.done[j]], p.reply[j] >= 0 ? &a[p.reply[j]] : NULL, p.args[j], 5, o);
}

/* The commit script: one outcome per request of the call. */
static void on_commit(world *w, bytes *a, size_t n, out_buf *o)
{
    static commit_parts p;
    long nk = n > 3 ? strtol(a[2].p, NULL, 10) : 0;
    if (nk >= 3 && n > (size_t)(3 + nk + 4) && eqs(&a[3 + (size_t)nk + 4], "release+g")) {
        on_grouped_commit(w, a, n, o);
        return;
    }
    split_commit(w, a, n, &p);
    if ((w->events & E_OOM) && !w->oom_used) {
        /* Out of memory fails the whole call: every request stays held. */
        int any = 0;
        for (long j = 0; j < p.n; j++) {
            held *h = find_held(w, a[p.args[j]].p);
            CHECK(h != NULL, "commit of a field never taken: %s", a[p.args[j]].p);
            if (h->live) {
                h->erred = 1;
                any = 1;
            }
        }
        if (any) {
            w->oom_used = 1;
            putf(o, "-OOM command not allowed when used memory > 'maxmemory'.\r\n");
            return;
        }
    }
    putf(o, "*%ld\r\n", p.n);
    for (long j = 0; j < p.n; j++)
        commit_one(w, &a[p.keys[j]], p.nk[j] == 2 ? &a[p.keys[j] + 1] : NULL, &a[p.args[j]],
                   p.nargs[j], o);
}

/* ---- the command loop ---------------------------------------------------------- */

static void on_command(world *w, bytes *a, size_t n, out_buf *o)
{
    CHECK(n >= 1, "an empty command");
    if (getenv("FUZZ_WORKER_TRACE")) /* what the worker sends, for a regression's story */
        fprintf(stderr, "> %s %.60s (%zu args)\n", a[0].p, n > 1 ? a[1].p : "", n);
    const char *c = a[0].p;
    int reliable = w->cfg & C_RELIABLE;
    if (eqs(&a[0], "SCRIPT") && n == 3 && eqs(&a[1], "LOAD") && reliable && w->nscripts < 2) {
        char sha[41];
        rrpc__sha1_hex(a[2].p, a[2].len, sha);
        memcpy(w->nscripts++ == 0 ? w->take_sha : w->commit_sha, sha, 41);
        put_str(o, sha);
    } else if (eqs(&a[0], "TIME") && n == 1) {
        if (!reliable && (w->events & E_NOTIME)) {
            putf(o, "-NOPERM no TIME for you\r\n");
            return;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long sec = (long long)ts.tv_sec + (!reliable && (w->events & E_SKEW) ? 1000 : 0);
        char s1[32], s2[32];
        snprintf(s1, sizeof s1, "%lld", sec);
        snprintf(s2, sizeof s2, "%ld", ts.tv_nsec / 1000);
        put(o, "*2\r\n", 4);
        put_str(o, s1);
        put_str(o, s2);
    } else if (eqs(&a[0], "SMEMBERS") && n == 2) {
        CHECK(eqs(&a[1], w->services_key), "SMEMBERS of another key");
        if (w->cfg & C_NOSVC) {
            putf(o, "-NOPERM this user has no permissions to run the 'smembers' command\r\n");
            return;
        }
        putf(o, "*%zu\r\n", sizeof services / sizeof services[0]);
        for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
            put_str(o, services[i]);
    } else if (eqs(&a[0], "BLPOP") && !reliable) {
        on_blpop(w, a, n, o);
    } else if (eqs(&a[0], "LMPOP") && !reliable) {
        on_lmpop(w, a, n, o);
    } else if (eqs(&a[0], "LPUSH")) {
        on_lpush(w, a, n, o);
    } else if (eqs(&a[0], "EVAL") && n >= 6 && strcmp(a[1].p, rrpc__effects_script) == 0) {
        on_effects_call(w, a, n, o);
    } else if (eqs(&a[0], "EVAL") && n >= 4) {
        CHECK(strcmp(a[1].p, rrpc__reply_script) == 0, "EVAL of another script");
        w->reply_loaded = 1;
        on_reply_call(w, a, n, o);
    } else if (eqs(&a[0], "EVALSHA") && n >= 4 && eqs(&a[1], w->reply_sha)) {
        if (!w->reply_loaded) {
            putf(o, "-NOSCRIPT No matching script. Please use EVAL.\r\n");
            return;
        }
        on_reply_call(w, a, n, o);
    } else if (eqs(&a[0], "EVALSHA") && n >= 4 && reliable && eqs(&a[1], w->take_sha)) {
        on_take(w, a, n, o);
    } else if (eqs(&a[0], "EVALSHA") && n >= 4 && reliable && eqs(&a[1], w->commit_sha)) {
        on_commit(w, a, n, o);
    } else if ((eqs(&a[0], "MGET") || eqs(&a[0], "EXISTS")) && n >= 2 && reliable) {
        on_check(w, a, n, o);
    } else if (eqs(&a[0], "TYPE") && n == 2 && reliable && is_done_key(w, &a[1])) {
        const held *h = held_of_done(w, &a[1]);
        CHECK(h != NULL, "TYPE of a done key no held request has");
        put_str(o, h->answer == 2 ? "hash" : h->answer == 1 ? "string" : "none");
    } else if (eqs(&a[0], "RPUSH") && n >= 2 && eqs(&a[1], w->dead_key)) {
        on_dead_push(w, a, n, o);
    } else if (eqs(&a[0], "LTRIM") && n == 4 && eqs(&a[1], w->dead_key)) {
        CHECK(eqs(&a[2], "-1000") && eqs(&a[3], "-1"), "LTRIM of the dead letters: %s", a[2].p);
        put(o, "+OK\r\n", 5);
    } else if (eqs(&a[0], "HINCRBY") && n == 4 && eqs(&a[1], w->stats_key)) {
        /* dead letters one by one; expired requests (and lost answers) in counts */
        CHECK((eqs(&a[2], "dead") && eqs(&a[3], "1")) || eqs(&a[2], "expired") ||
                  eqs(&a[2], "lost"),
              "HINCRBY of another field: %.*s", (int)a[2].len, a[2].p);
        put(o, ":1\r\n", 4);
    } else if (eqs(&a[0], "INCR") && n == 2 && eqs(&a[1], "fx:n") && !reliable) {
        put(o, ":1\r\n", 4); /* the effect of the "effect" method */
    } else if (eqs(&a[0], "SADD") && n == 3 && reliable) {
        /* Registers the worker id, which names its keys (from here on). */
        char set[64];
        snprintf(set, sizeof set, "{%s}:inflight", w->list_key);
        CHECK(eqs(&a[1], set) && a[2].len > 0 && a[2].len < 200, "SADD to another key");
        snprintf(w->set_key, sizeof w->set_key, "%s", set);
        snprintf(w->wid, sizeof w->wid, "%s", a[2].p);
        snprintf(w->inflight_key, sizeof w->inflight_key, "%s:%s", set, a[2].p);
        snprintf(w->landing_key, sizeof w->landing_key, "{%s}:landing:%s", w->list_key, a[2].p);
        put(o, ":1\r\n", 4);
    } else if (eqs(&a[0], "BLMOVE") && n == 6 && reliable) {
        CHECK(eqs(&a[1], w->list_key) && eqs(&a[2], w->landing_key) && eqs(&a[3], "LEFT") &&
                  eqs(&a[4], "RIGHT"),
              "BLMOVE of other keys");
        count_round(w);
        CHECK(w->landing < 0, "BLMOVE onto a landing list not taken");
        w->landing = pop_queue(w);
        if (w->landing < 0) {
            /* Redis would block for the timeout: a worker waiting for a
             * held commit's backoff must not spin through MAX_ROUNDS. */
            if (any_live(w))
                real_sleep_ms(2);
            put(o, "$-1\r\n", 5);
        } else {
            put_bulk(o, w->msgs[w->landing].text.p, w->msgs[w->landing].text.len);
        }
    } else if (eqs(&a[0], "DEL") && n == 2) {
        /* Only the guard of effects Redis confirmed (on_effects_call). */
        char guard[64];
        snprintf(guard, sizeof guard, "{%s}:applied:", w->list_key);
        CHECK(starts(a[1].p, a[1].len, guard), "DEL of another key: %.200s", a[1].p);
        putf(o, ":1\r\n");
    } else {
        violation(__LINE__, "a command the worker must not send: %.40s (%zu args)", c, n);
    }
}

/* Parses one command from BUF[0..len) strictly as RESP (an array of bulk
 * strings, as every Redis client sends).  Returns the bytes used, 0 if
 * incomplete; aborts on anything malformed. */
static size_t parse_command(const char *buf, size_t len, bytes **argv, size_t *argc)
{
    size_t at = 0;
    long long n = -1;
    if (len == 0)
        return 0;
    CHECK(buf[0] == '*', "not a RESP array: byte 0x%02x", (unsigned char)buf[0]);
    const char *nl = memchr(buf, '\n', len);
    if (nl == NULL)
        return 0;
    char *end;
    n = strtoll(buf + 1, &end, 10);
    CHECK(end == nl - 1 && *end == '\r' && n >= 1 && n < 1000000, "bad RESP array header");
    at = (size_t)(nl - buf) + 1;
    bytes *a = calloc((size_t)n, sizeof *a);
    for (long long i = 0; i < n; i++) {
        if (at >= len)
            goto incomplete;
        CHECK(buf[at] == '$', "not a RESP bulk string");
        nl = memchr(buf + at, '\n', len - at);
        if (nl == NULL)
            goto incomplete;
        long long l = strtoll(buf + at + 1, &end, 10);
        CHECK(end == nl - 1 && *end == '\r' && l >= 0 && buf[at + 1] != '+' && buf[at + 1] != '-' &&
                  (buf[at + 1] != '0' || l == 0) && end - (buf + at + 1) <= 19,
              "bad RESP bulk header");
        at = (size_t)(nl - buf) + 1;
        if (len - at < (size_t)l + 2)
            goto incomplete;
        CHECK(buf[at + l] == '\r' && buf[at + l + 1] == '\n', "RESP bulk not ended by CRLF");
        a[i] = dup_bytes(buf + at, (size_t)l);
        at += (size_t)l + 2;
    }
    *argv = a;
    *argc = (size_t)n;
    return at;
incomplete:
    for (long long i = 0; i < n; i++)
        free(a[i].p);
    free(a);
    return 0;
}

/* The fake Redis: reads commands, answers them, until the worker closes. */
static void *serve(void *arg)
{
    world *w = arg;
    size_t cap = 1 << 16, len = 0;
    char *in = malloc(cap);
    out_buf o = {0};
    fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd p = {w->fd, POLLIN | (o.sent < o.len ? POLLOUT : 0), 0};
        if (poll(&p, 1, 20000) <= 0)
            violation(__LINE__, "the worker is silent for 20 s");
        if (p.revents & POLLOUT) {
            ssize_t k = write(w->fd, o.p + o.sent, o.len - o.sent);
            if (k > 0)
                o.sent += (size_t)k;
            if (o.sent == o.len)
                o.sent = o.len = 0;
        }
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (cap - len < 4096)
            in = realloc(in, cap *= 2);
        ssize_t k = read(w->fd, in + len, cap - len);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
            break; /* the worker closed its link: it has stopped */
        if (k < 0)
            continue;
        len += (size_t)k;
        size_t used;
        bytes *argv;
        size_t argc;
        while ((used = parse_command(in, len, &argv, &argc)) > 0) {
            on_command(w, argv, argc, &o);
            for (size_t i = 0; i < argc; i++)
                free(argv[i].p);
            free(argv);
            memmove(in, in + used, len - used);
            len -= used;
        }
    }
    CHECK(len == 0, "the worker closed its link in the middle of a command");
    free(in);
    free(o.p);
    close(w->fd);
    return NULL;
}

static void *accept_and_serve(void *arg)
{
    world *w = arg;
    w->fd = accept(listener, NULL, NULL);
    if (w->fd < 0) {
        perror("fuzz_worker: accept");
        abort();
    }
    return serve(w);
}

/* ---- the methods ------------------------------------------------------------- */

static _Thread_local int slept_ms;

static json_t *m_echo(rrpc_request *req, void *udata)
{
    (void)udata;
    json_t *params = rrpc_request_params(req);
    return params ? json_incref(params) : json_null();
}

static json_t *m_add(rrpc_request *req, void *udata)
{
    (void)udata;
    double a, b;
    const char *s;
    if (rrpc_param_count_max(req, 3) || rrpc_param_number(req, 0, "a", &a) ||
        rrpc_param_number(req, 1, "b", &b))
        return NULL;
    if (rrpc_param_string(req, 2, "s", &s) == RRPC_OK && strlen(s) > 3)
        return rrpc_request_error(req, 1, s, json_string(s));
    return json_real(a + b);
}

/* Sleeps its first parameter in ms (within a budget per input): slow
 * handlers drive the give-back, the mid-batch flush and the time limit. */
static json_t *m_slow(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t ms = 0;
    if (rrpc_param_int(req, 0, "ms", &ms))
        return NULL;
    if (ms > 25)
        ms = 25;
    if (ms > SLEEP_BUDGET_MS - slept_ms)
        ms = SLEEP_BUDGET_MS - slept_ms;
    if (ms > 0) {
        slept_ms += (int)ms;
        real_sleep_ms((long)ms);
    }
    return json_true();
}

static json_t *m_effect(rrpc_request *req, void *udata)
{
    (void)udata;
    const char *argv[] = {"INCR", "fx:n"};
    return rrpc_request_add_effect(req, 2, argv) == RRPC_OK ? json_true() : NULL;
}

/* A string of its first parameter's length: responses over the limit. */
static json_t *m_big(rrpc_request *req, void *udata)
{
    (void)udata;
    json_int_t n = 0;
    if (rrpc_param_int(req, 0, "n", &n))
        return NULL;
    if (n < 0 || n > BIG_MAX)
        n = BIG_MAX;
    char *s = malloc((size_t)n + 1);
    memset(s, '\x01', (size_t)n); /* control bytes: escaped sixfold */
    s[n] = '\0';
    json_t *v = json_stringn(s, (size_t)n);
    free(s);
    return v;
}

static json_t *m_fail(rrpc_request *req, void *udata)
{
    (void)req;
    (void)udata;
    return NULL; /* -32603 */
}

/* ---- one input --------------------------------------------------------------- */

static void setup(void)
{
    if (listener >= 0)
        return;
    snprintf(sock_path, sizeof sock_path, "/tmp/rrpc-fuzz-worker-%ld.sock", (long)getpid());
    unlink(sock_path);
    listener = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 4) != 0) {
        perror("fuzz_worker: cannot listen on a unix socket");
        abort();
    }
}

static void world_init(world *w, const uint8_t *data, size_t size)
{
    w->cfg = data[0];
    w->refuse_bits = data[1];
    w->events = data[2];
    w->landing = -1;
    if (w->cfg & C_RELIABLE)
        w->cfg &= (unsigned char)~C_SHARDS; /* not together */
    w->max_bytes = w->cfg & C_SMALL ? 1000 : 64 * 1024;
    snprintf(w->prefix, sizeof w->prefix, "%s", w->cfg & C_PREFIX ? "p:" : "");
    snprintf(w->list_key, sizeof w->list_key, "%s" SERVICE, w->prefix);
    snprintf(w->pop_key, sizeof w->pop_key, "%s%s", w->list_key, w->cfg & C_SHARDS ? "#1" : "");
    snprintf(w->dead_key, sizeof w->dead_key, "%s:dead", w->list_key);
    snprintf(w->stats_key, sizeof w->stats_key, "%s:stats", w->list_key);
    snprintf(w->services_key, sizeof w->services_key, "%srrpc:services", w->prefix);
    if (w->cfg & C_ALLOW) {
        snprintf(w->allow[0], sizeof w->allow[0], "%srrpc:reply:", w->prefix);
        snprintf(w->allow[1], sizeof w->allow[1], "ok:");
        w->nallow = 2;
    }
    rrpc__sha1_hex(rrpc__reply_script, strlen(rrpc__reply_script), w->reply_sha);
    /* The messages: split on 0xFF. */
    const uint8_t *p = data + 3, *end = data + size;
    while (p <= end && w->nmsgs < MAX_MESSAGES) {
        const uint8_t *sep = memchr(p, 0xff, (size_t)(end - p));
        const uint8_t *stop = sep ? sep : end;
        message *m = &w->msgs[w->nmsgs];
        m->text = dup_bytes((const char *)p, (size_t)(stop - p));
        classify(w, m);
        w->queue[MAX_MESSAGES + w->nmsgs] = w->nmsgs; /* room in front for give-backs */
        w->nmsgs++;
        if (sep == NULL)
            break;
        p = sep + 1;
    }
    w->qhead = MAX_MESSAGES;
    w->qlen = w->nmsgs;
}

static void world_free(world *w)
{
    for (size_t i = 0; i < w->nmsgs; i++) {
        free(w->msgs[i].text.p);
        for (size_t k = 0; k < w->msgs[i].nkeys; k++)
            free(w->msgs[i].keys[k].p);
    }
    for (size_t i = 0; i < w->nouts; i++)
        free(w->outs[i].key.p);
}

static rrpc_server *make_server(world *w)
{
    char url[160];
    snprintf(url, sizeof url, "unix://%s", sock_path);
    const char *allow[] = {w->allow[0], w->allow[1], NULL};
    rrpc_server_options opts;
    rrpc_server_options_init(&opts);
    opts.url = url;
    opts.service = SERVICE;
    opts.key_prefix = w->prefix;
    opts.workers = 1;
    opts.handle_signals = 0;
    opts.heartbeat = 0;
    opts.max_request_bytes = w->max_bytes;
    opts.reliable = w->cfg & C_RELIABLE ? 1 : 0;
    opts.shards = w->cfg & C_SHARDS ? 2 : 1;
    opts.batch_max = w->cfg & C_BATCH2 ? 2 : 128;
    opts.batch_time_limit_s = w->cfg & C_TIMELIMIT ? 0.01 : 5;
    opts.reply_prefixes = w->nallow ? allow : NULL;
    rrpc_server *s = NULL;
    if (rrpc_server_new(&s, &opts) != RRPC_OK)
        abort();
    rrpc_server_register(s, "echo", m_echo, NULL, NULL);
    rrpc_server_register(s, "add", m_add, NULL, NULL);
    rrpc_server_register(s, "slow", m_slow, NULL, NULL);
    rrpc_server_register(s, "effect", m_effect, NULL, NULL);
    rrpc_server_register(s, "big", m_big, NULL, NULL);
    rrpc_server_register(s, "fail", m_fail, NULL, NULL);
    return s;
}

/* Kuhn's matching: every delivery that needs an answer gets an outcome of
 * its own (a pushed reply on one of its keys, a dead letter or a
 * give-back of its text). */
static int fits(const world *w, size_t msg, const outcome *o)
{
    if (o->kind == 'R')
        return key_of_message(&w->msgs[msg], o->key.p, o->key.len);
    return eq(&w->msgs[msg].text, w->msgs[o->msg].text.p, w->msgs[o->msg].text.len);
}

static int augment(const world *w, const size_t *need, size_t d, long *match, char *seen)
{
    for (size_t k = 0; k < w->nouts; k++) {
        if (seen[k] || !fits(w, need[d], &w->outs[k]))
            continue;
        seen[k] = 1;
        if (match[k] < 0 || augment(w, need, (size_t)match[k], match, seen)) {
            match[k] = (long)d;
            return 1;
        }
    }
    return 0;
}

static void check_nothing_lost(world *w)
{
    if (w->cfg & C_RELIABLE) {
        CHECK(w->landing < 0, "a landed request was never taken");
        for (size_t i = 0; i < w->nhelds; i++) {
            const held *h = &w->helds[i];
            /* held by the worker (Redis refused its commit): still in flight
             * in Redis, the reaper's once the worker is gone */
            CHECK(h->done || (h->live && h->erred), "a taken request was never committed: %.200s",
                  w->msgs[h->msg].text.p);
        }
        return;
    }
    size_t need[16 * MAX_MESSAGES], nneed = 0;
    for (size_t i = 0; i < w->ndeliveries; i++)
        if (w->msgs[w->deliveries[i]].needs_answer)
            need[nneed++] = w->deliveries[i];
    long *match = malloc((w->nouts + 1) * sizeof *match);
    char *seen = malloc(w->nouts + 1);
    for (size_t k = 0; k < w->nouts; k++)
        match[k] = -1;
    for (size_t d = 0; d < nneed; d++) {
        memset(seen, 0, w->nouts + 1);
        CHECK(augment(w, need, d, match, seen),
              "a popped message got no reply, dead letter or give-back: %.300s",
              w->msgs[need[d]].text.p);
    }
    free(match);
    free(seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    setup();
    world *w = calloc(1, sizeof *w);
    world_init(w, data, size);
    w->srv = make_server(w);
    slept_ms = 0;
    /* The worker connects (the listen backlog takes it) while the
     * harness thread accepts, then plays Redis until the worker closes. */
    pthread_t t;
    if (pthread_create(&t, NULL, accept_and_serve, w) != 0)
        abort();
    int rc = rrpc__server_run_worker(w->srv, w->cfg & C_SHARDS ? 1 : 0);
    pthread_join(t, NULL);
    CHECK(rc == RRPC_OK, "the worker could not start: %s", rrpc_server_errmsg(w->srv));
    CHECK(w->stop_sent, "the worker stopped unasked");
    check_nothing_lost(w);
    rrpc_server_free(w->srv);
    world_free(w);
    free(w);
    return 0;
}

#ifdef FUZZ_REPLAY_MAIN
/* Replays the files named on the command line (ctest: the regressions). */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        size_t cap = 1 << 20, len = 0, k;
        uint8_t *data = malloc(cap);
        while ((k = fread(data + len, 1, cap - len, f)) > 0)
            if ((len += k) == cap)
                data = realloc(data, cap *= 2);
        fclose(f);
        LLVMFuzzerTestOneInput(data, len);
        free(data);
        printf("ok %s\n", argv[i]);
    }
    unlink(sock_path);
    return 0;
}
#endif
