/* async_redis.c -- the async client's session on Redis (async_ops.h).
 *
 * A session is two links made by async_cluster.c (so a Sentinel or Cluster
 * URL needs nothing here): one pipelines RPUSHes of request groups and the
 * occasional LREM, the other blocks in BLMPOP on the client's reply list
 * and takes up to 512 responses per round trip.  Two, because a link that
 * waits in BLMPOP can send nothing else.
 *
 * The session keeps itself connected.  When either link breaks (or BLMPOP
 * fails), the client is told once (`link`), the remains are closed from a
 * fresh loop callback -- never from inside hiredis -- and both links are
 * made again after a backoff (50 ms doubling to 5 s, with jitter so that a
 * herd of clients does not reconnect in step).  The session is usable
 * again when both links have finished their handshake.
 *
 * The session also keeps, per service, how many request lists (shards) its
 * registry says it has (`HGET {L}:config shards`, asked on the push link
 * when the view is older than a second, like the sync client's fail-fast
 * view in failfast.c), so the client can spread a sharded service's calls
 * without a round trip of its own.
 *
 * open() first checks, with a short-lived sync connection, what the async
 * links cannot report to it: Redis is there, takes the credentials, has
 * LMPOP (Redis 7).  It reads the Redis clock on the same connection.
 */
#include "core/clock.h"
#include "redis/async_redis.h"

#include "core/internal.h"
#include "core/keys.h"
#include "core/log.h"
#include "core/shard.h"
#include "core/priority.h"
#include "redis/async_cluster.h"
#include "redis/conn.h"

#include <event2/event.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POP_COUNT      "512"
#define POP_BLOCK_S    "30" /* re-issued when idle; also keeps NATs awake */
#define BACKOFF_MIN_S  0.05
#define BACKOFF_MAX_S  5.0
#define HEADROOM       2   /* RPUSH and the list key, in front of the values */
#define SHARD_VIEWS    16  /* services whose shard count a session remembers */
#define SHARDS_FRESH_S 1.0 /* how long a shard count is trusted */

enum link_state { LINK_UP, LINK_CONNECTING, LINK_DOWN };

/* What the registry said of one service's shards. */
typedef struct shard_view {
    char *list; /* shard 0's list; NULL: unused */
    size_t len;
    int shards;     /* 1 until the registry answered */
    int asking;     /* an HGET is out: the entry is not recycled */
    double fetched; /* monotonic; 0 = never */
} shard_view;

struct rrpc__async_session {
    struct event_base *base;
    rrpc__url url;
    char *reply_key;
    double connect_timeout_s;
    const rrpc__async_handlers *h;
    void *udata;
    rrpc__aconn *push, *pop;
    int ready_links;
    enum link_state state;
    int closing;
    int outage_logged;
    double backoff_s;
    uint64_t rng;
    struct event *teardown_ev, *reconnect_ev;
    shard_view views[SHARD_VIEWS];
};

static void log_line(rrpc_log_level level, const char *what, const char *detail)
{
    rrpc__log(level, NULL, "async", what, detail);
}

/* ---- the startup check ------------------------------------------------- */

static int probe(rrpc__async_session *s, rrpc__clock *clock, char *errmsg, size_t errmsg_len)
{
    rrpc__conn *conn = NULL;
    int rc = rrpc__conn_open(&conn, &s->url, s->connect_timeout_s, errmsg, errmsg_len);
    if (rc != RRPC_OK)
        return rc;
    rrpc__reply *r = NULL;
    rc = rrpc__conn_appendv(conn, 6, "LMPOP", "1", s->reply_key, "LEFT", "COUNT", "1");
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(conn, &r);
    if (rc != RRPC_OK)
        rrpc__fail(errmsg, errmsg_len, rc, "%s", rrpc__conn_errmsg(conn));
    else if (rrpc__reply_type(r) == RRPC__REPLY_ERROR)
        rc = rrpc__fail(errmsg, errmsg_len, RRPC_EREDIS,
                        "the async client needs Redis 7 or later (LMPOP/BLMPOP): %s",
                        rrpc__reply_str(r, NULL));
    rrpc__reply_free(r);
    if (rc == RRPC_OK)
        rrpc__clock_sync(clock, conn); /* refused TIME: calls carry no deadline */
    rrpc__conn_close(conn);
    return rc;
}

/* ---- replies ----------------------------------------------------------- */

static void link_lost(rrpc__async_session *s, const char *msg);

static int issue_pop(rrpc__async_session *s)
{
    const char *argv[] = {"BLMPOP", POP_BLOCK_S, "1", s->reply_key, "LEFT", "COUNT", POP_COUNT};
    return rrpc__aconn_command(s->pop, 7, argv, NULL, NULL);
}

/* BLMPOP answers nil (nothing within the block time) or
 * [key, [response, ...]].  The next BLMPOP goes out first so that Redis
 * collects responses while these are handled. */
static void on_pop_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    (void)privdata;
    rrpc__async_session *s = udata;
    if (r == NULL || s->closing)
        return; /* the link is going away; link_lost tells the client */
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "BLMPOP failed: %s", rrpc__reply_str(r, NULL));
        link_lost(s, msg);
        return;
    }
    issue_pop(s);
    if (rrpc__reply_type(r) != RRPC__REPLY_ARRAY || rrpc__reply_count(r) != 2)
        return;
    const rrpc__reply *values = rrpc__reply_element(r, 1);
    size_t n = rrpc__reply_count(values);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *text = rrpc__reply_str(rrpc__reply_element(values, i), &len);
        if (text != NULL)
            s->h->reply(text, len, s->udata);
    }
    s->h->replies_end(s->udata);
}

/* ---- shard counts ------------------------------------------------------ */

static int is_view(const rrpc__async_session *s, const void *p)
{
    uintptr_t v = (uintptr_t)p, first = (uintptr_t)s->views;
    return v >= first && v < (uintptr_t)(s->views + SHARD_VIEWS);
}

/* The answer to `HGET {L}:config shards`: nil (not registered, or an older
 * server) and a refusal (an ACL) both mean the one list of before. */
static void on_shards_reply(shard_view *v, const rrpc__reply *r)
{
    v->asking = 0;
    if (r == NULL)
        return; /* the link went: asked again once it is back */
    v->shards = rrpc__reply_type(r) == RRPC__REPLY_ERROR ? 1 : rrpc__shard_count(rrpc__reply_ll(r));
    v->fetched = rrpc__monotonic();
}

/* The view of LIST, or the stalest idle one recycled for it; NULL when
 * every view has a question out. */
static shard_view *find_view(rrpc__async_session *s, const char *list, size_t len)
{
    shard_view *spare = NULL;
    for (size_t i = 0; i < SHARD_VIEWS; i++) {
        shard_view *v = &s->views[i];
        if (v->list != NULL && v->len == len && memcmp(v->list, list, len) == 0)
            return v;
        if (!v->asking && (spare == NULL || v->list == NULL ||
                           (spare->list != NULL && v->fetched < spare->fetched)))
            spare = v;
    }
    if (spare == NULL)
        return NULL;
    free(spare->list);
    *spare = (shard_view){.list = malloc(len + 1), .len = len, .shards = 1};
    if (spare->list == NULL)
        return NULL;
    memcpy(spare->list, list, len);
    spare->list[len] = '\0';
    return spare;
}

static int session_shards(rrpc__async_session *s, const char *queue, size_t qlen)
{
    shard_view *v = find_view(s, queue, qlen);
    if (v == NULL)
        return 1;
    if (!v->asking && s->state == LINK_UP &&
        (v->fetched == 0 || rrpc__monotonic() - v->fetched > SHARDS_FRESH_S)) {
        char config[RRPC__KEY_MAX];
        const char *argv[] = {"HGET", config, "shards"};
        if (rrpc__tagged_key(config, sizeof config, v->list, RRPC__TAG_CONFIG) == RRPC_OK &&
            rrpc__aconn_command(s->push, 3, argv, NULL, v) == RRPC_OK)
            v->asking = 1;
    }
    return v->shards;
}

static void free_views(rrpc__async_session *s)
{
    for (size_t i = 0; i < SHARD_VIEWS; i++)
        free(s->views[i].list);
}

/* Answers to RPUSH (privdata: the client's group), HGET (a shard view) and
 * LREM (none). */
static void on_push_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    rrpc__async_session *s = udata;
    if (privdata == NULL)
        return;
    if (is_view(s, privdata)) {
        on_shards_reply(privdata, r);
        return;
    }
    if (r == NULL)
        s->h->delivered(privdata, RRPC_ECONNECT, NULL, s->udata);
    else if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        char msg[RRPC__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "Redis refused the request: %s", rrpc__reply_str(r, NULL));
        s->h->delivered(privdata, RRPC_EREDIS, msg, s->udata);
    } else
        s->h->delivered(privdata, RRPC_OK, NULL, s->udata);
}

/* ---- the links --------------------------------------------------------- */

static void close_links(rrpc__async_session *s)
{
    rrpc__aconn *push = s->push, *pop = s->pop;
    s->push = s->pop = NULL;
    rrpc__aconn_close(push);
    rrpc__aconn_close(pop);
}

static void on_link_event(int status, const char *msg, void *udata);

static int open_links(rrpc__async_session *s, char *err, size_t errlen)
{
    s->ready_links = 0;
    int rc = rrpc__aconn_open(&s->push, s->base, &s->url, s->connect_timeout_s, on_push_reply,
                              on_link_event, s, err, errlen);
    if (rc == RRPC_OK)
        rc = rrpc__aconn_open(&s->pop, s->base, &s->url, s->connect_timeout_s, on_pop_reply,
                              on_link_event, s, err, errlen);
    if (rc == RRPC_OK && issue_pop(s) != RRPC_OK)
        rc = rrpc__fail(err, errlen, RRPC_ECONNECT, "cannot queue BLMPOP");
    if (rc != RRPC_OK)
        close_links(s);
    return rc;
}

static double jitter(rrpc__async_session *s)
{
    s->rng ^= s->rng << 13; /* xorshift64: spreads a herd of reconnecting clients */
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return 0.5 + (double)(s->rng % 1000) / 1000.0;
}

/* A link broke: refuse requests until both are back, close the remains
 * from a fresh loop callback (not from inside hiredis), try again after a
 * backoff, and tell the client, which fails what is in flight. */
static void link_lost(rrpc__async_session *s, const char *msg)
{
    if (s->state == LINK_DOWN || s->closing)
        return;
    s->state = LINK_DOWN;
    if (!s->outage_logged) {
        log_line(RRPC_LOG_WARN, "lost the Redis connection, reconnecting", msg);
        s->outage_logged = 1;
    }
    event_active(s->teardown_ev, EV_TIMEOUT, 0);
    struct timeval tv = rrpc__timeval(s->backoff_s * jitter(s));
    evtimer_add(s->reconnect_ev, &tv);
    s->backoff_s = s->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : s->backoff_s * 2;
    s->h->link(RRPC_ECONNECT, msg, s->udata);
}

static void on_link_event(int status, const char *msg, void *udata)
{
    rrpc__async_session *s = udata;
    if (status != RRPC_OK) {
        link_lost(s, msg);
        return;
    }
    if (++s->ready_links < 2 || s->state == LINK_DOWN)
        return;
    s->backoff_s = BACKOFF_MIN_S;
    s->state = LINK_UP;
    if (s->outage_logged) {
        log_line(RRPC_LOG_INFO, "reconnected", NULL);
        s->outage_logged = 0;
    }
    s->h->link(RRPC_OK, NULL, s->udata);
}

static void on_teardown(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    close_links(arg);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rrpc__async_session *s = arg;
    char err[RRPC__ERRMSG_LEN];
    close_links(s);
    s->state = LINK_CONNECTING;
    if (open_links(s, err, sizeof err) != RRPC_OK)
        link_lost(s, err);
}

/* ---- the operations ---------------------------------------------------- */

static void session_close(rrpc__async_session *s)
{
    if (s == NULL)
        return;
    s->closing = 1; /* pending RPUSHes still reach the client as lost */
    close_links(s);
    if (s->teardown_ev)
        event_free(s->teardown_ev);
    if (s->reconnect_ev)
        event_free(s->reconnect_ev);
    free_views(s); /* after close_links: their pending HGETs have ended */
    rrpc__url_free(&s->url);
    free(s->reply_key);
    free(s);
}

static int session_init(rrpc__async_session *s, struct event_base *base, const rrpc__url *url,
                        const char *reply_to, char *err, size_t errlen)
{
    s->base = base;
    s->backoff_s = BACKOFF_MIN_S;
    s->reply_key = strdup(reply_to);
    if (s->reply_key == NULL || rrpc__url_copy(&s->url, url) != RRPC_OK)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    size_t n = strlen(reply_to); /* its random tail seeds the backoff's jitter */
    if (n >= sizeof s->rng)
        memcpy(&s->rng, reply_to + n - sizeof s->rng, sizeof s->rng);
    s->rng |= 1;
    s->teardown_ev = event_new(base, -1, 0, on_teardown, s);
    s->reconnect_ev = evtimer_new(base, on_reconnect, s);
    if (s->teardown_ev == NULL || s->reconnect_ev == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "cannot create events");
    return RRPC_OK;
}

static int session_open(rrpc__async_session **out, struct event_base *base, const rrpc__url *url,
                        const char *reply_to, double connect_timeout_s,
                        const rrpc__async_handlers *h, void *udata, rrpc__clock *clock, char *err,
                        size_t errlen)
{
    *out = NULL;
    rrpc__async_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    s->connect_timeout_s = connect_timeout_s;
    s->h = h;
    s->udata = udata;
    int rc = session_init(s, base, url, reply_to, err, errlen);
    if (rc == RRPC_OK)
        rc = probe(s, clock, err, errlen);
    if (rc == RRPC_OK) {
        /* Requests delivered before the handshake finishes queue behind it. */
        s->state = LINK_UP;
        rc = open_links(s, err, errlen);
    }
    if (rc != RRPC_OK) {
        session_close(s);
        return rc;
    }
    *out = s;
    return RRPC_OK;
}

/* A group of high or low calls: one call of the push script
 * (core/priority.h), which places the whole group behind a backlog or
 * straight on the list.  Its own argv: the texts have no room behind them
 * for the priority. */
static int deliver_priority(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                            const char **texts, size_t *lens, size_t n, void *group)
{
    char high[RRPC__KEY_MAX], low[RRPC__KEY_MAX], list[RRPC__KEY_MAX];
    if (qlen >= sizeof list)
        return RRPC_EINVAL;
    memcpy(list, queue, qlen);
    list[qlen] = '\0';
    if (rrpc__priority_key(high, sizeof high, list, RRPC_PRIORITY_HIGH) != RRPC_OK ||
        rrpc__priority_key(low, sizeof low, list, RRPC_PRIORITY_LOW) != RRPC_OK)
        return RRPC_EINVAL;
    const char *head[] = {"EVAL", rrpc__priority_push_script, "3", list, high, low};
    size_t nhead = sizeof head / sizeof head[0], argc = nhead + n + 1;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *argl = malloc(argc * sizeof *argl);
    int rc = RRPC_ENOMEM;
    if (argv != NULL && argl != NULL) {
        for (size_t i = 0; i < nhead; i++) {
            argv[i] = head[i];
            argl[i] = strlen(head[i]);
        }
        memcpy(argv + nhead, texts, n * sizeof *argv);
        memcpy(argl + nhead, lens, n * sizeof *argl);
        argv[argc - 1] = rrpc__priority_name(priority);
        argl[argc - 1] = strlen(argv[argc - 1]);
        rc = rrpc__aconn_command(s->push, (int)argc, argv, argl, group);
    }
    free(argv);
    free(argl);
    return rc;
}

/* One multi-value RPUSH: Redis pays one command per group, not per call. */
static int session_deliver(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                           const char **texts, size_t *lens, const long long *ttl_ms, size_t n,
                           void *group)
{
    (void)ttl_ms; /* the requests' deadline member expires them (PROTOCOL.md section 7) */
    if (s->state != LINK_UP)
        return RRPC_ECONNECT;
    if (priority != RRPC_PRIORITY_NORMAL)
        return deliver_priority(s, queue, qlen, priority, texts, lens, n, group);
    const char **argv = texts - HEADROOM;
    size_t *argl = lens - HEADROOM;
    argv[0] = "RPUSH";
    argl[0] = 5;
    argv[1] = queue;
    argl[1] = qlen;
    return rrpc__aconn_command(s->push, (int)n + HEADROOM, argv, argl, group);
}

static void session_withdraw(rrpc__async_session *s, const char *queue, size_t qlen, int priority,
                             const char *text, size_t tlen)
{
    const char *argv[] = {"LREM", queue, "1", text};
    size_t lens[] = {4, qlen, 1, tlen};
    if (s->state != LINK_UP)
        return;
    rrpc__aconn_command(s->push, 4, argv, lens, NULL);
    /* The push script may have put it on the priority's own list. */
    char list[RRPC__KEY_MAX], other[RRPC__KEY_MAX];
    if (priority == RRPC_PRIORITY_NORMAL || qlen >= sizeof list)
        return;
    memcpy(list, queue, qlen);
    list[qlen] = '\0';
    if (rrpc__priority_key(other, sizeof other, list, priority) != RRPC_OK)
        return;
    argv[1] = other;
    lens[1] = strlen(other);
    rrpc__aconn_command(s->push, 4, argv, lens, NULL);
}

static void session_mark_cancelled(rrpc__async_session *s, const char *key, size_t klen,
                                   long long ttl_ms)
{
    char ms[32];
    int n = snprintf(ms, sizeof ms, "%lld", ttl_ms > 0 ? ttl_ms : 1);
    const char *argv[] = {"SET", key, "1", "PX", ms};
    size_t lens[] = {3, klen, 1, 2, (size_t)n};
    if (s->state == LINK_UP)
        rrpc__aconn_command(s->push, 5, argv, lens, NULL);
}

const rrpc__async_ops rrpc__redis_async_ops = {
    .broker = "Redis",
    .deliver_max = 1024,
    .deliver_headroom = HEADROOM,
    .open = session_open,
    .deliver = session_deliver,
    .withdraw = session_withdraw,
    .mark_cancelled = session_mark_cancelled,
    .shards = session_shards,
    .close = session_close,
};
