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
 * The session also keeps, per service, the registry's view (PROTOCOL.md
 * section 9: live workers, max_queue, shards), read on the push link with
 * failfast.c's five commands when the view is older than a second, as the
 * sync client's failfast.c does; the client decides from it (fail fast,
 * max_queue, the shard of each call) without a round trip of its own.  A
 * call to a service with a max_queue is pushed with the max_queue script,
 * one EVAL per call (deliver_bounded), a refusal counted as shed.
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
#include "redis/failfast.h"

#include <event2/event.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POP_COUNT     "512"
#define POP_BLOCK_S   "30" /* re-issued when idle; also keeps NATs awake */
#define BACKOFF_MIN_S 0.05
#define BACKOFF_MAX_S 5.0
#define HEADROOM      2   /* RPUSH and the list key, in front of the values */
#define VIEWS         16  /* services whose registry a session remembers */
#define VIEW_FRESH_S  1.0 /* how long a view is trusted */

enum link_state { LINK_UP, LINK_CONNECTING, LINK_DOWN };

/* What the registry said of one service. */
typedef struct reg_view {
    char *list; /* shard 0's list; NULL: unused */
    size_t len;
    rrpc__registry_view view;    /* valid once known */
    int known;                   /* a read was answered */
    int asking;                  /* parts of a read still out: the entry is not recycled */
    int lost;                    /* a part of that read was lost with the link */
    rrpc__view_read rd;          /* that read's answers so far */
    double fetched;              /* monotonic; 0 = never */
    char part[RRPC__VIEW_PARTS]; /* each part's privdata is its address here */
} reg_view;

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
    reg_view views[VIEWS];
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

/* ---- registry views ---------------------------------------------------- */

static reg_view *view_of_part(rrpc__async_session *s, const void *p)
{
    uintptr_t v = (uintptr_t)p, first = (uintptr_t)s->views;
    if (v < first || v >= (uintptr_t)(s->views + VIEWS))
        return NULL;
    return &s->views[(v - first) / sizeof s->views[0]];
}

/* One part of a read came back (R NULL: lost with the link); the last one
 * settles the view and tells the client, which may be holding calls for
 * it. */
static void on_view_reply(rrpc__async_session *s, reg_view *v, const char *part,
                          const rrpc__reply *r)
{
    if (r == NULL)
        v->lost = 1; /* asked again once the link is back */
    else
        rrpc__view_take(&v->rd, (int)(part - v->part), r);
    if (--v->asking > 0)
        return;
    if (!v->lost && rrpc__view_complete(&v->rd)) {
        rrpc__view_result(&v->rd, &v->view);
        v->known = 1;
        v->fetched = rrpc__monotonic();
    }
    if (!s->closing && s->h->view_read != NULL)
        s->h->view_read(s->udata);
}

/* Sends the five commands that read V's registry; a part that cannot be
 * sent is lost with the link, which reports that itself. */
static void ask_view(rrpc__async_session *s, reg_view *v)
{
    rrpc__view_cmds k;
    if (rrpc__view_cmds_make(&k, v->list) != RRPC_OK)
        return;
    v->rd = (rrpc__view_read){0};
    v->lost = 0;
    v->asking = 0;
    for (int i = 0; i < RRPC__VIEW_PARTS; i++)
        if (rrpc__aconn_command(s->push, k.argc[i], k.argv[i], NULL, &v->part[i]) == RRPC_OK)
            v->asking++;
    if (v->asking < RRPC__VIEW_PARTS)
        v->lost = 1;
}

/* The view of LIST, or the stalest idle one recycled for it; NULL when
 * every view has a read out. */
static reg_view *find_view(rrpc__async_session *s, const char *list, size_t len)
{
    reg_view *spare = NULL;
    for (size_t i = 0; i < VIEWS; i++) {
        reg_view *v = &s->views[i];
        if (v->list != NULL && v->len == len && memcmp(v->list, list, len) == 0)
            return v;
        if (!v->asking && (spare == NULL || v->list == NULL ||
                           (spare->list != NULL && v->fetched < spare->fetched)))
            spare = v;
    }
    if (spare == NULL)
        return NULL;
    free(spare->list);
    *spare = (reg_view){.list = malloc(len + 1), .len = len};
    if (spare->list == NULL)
        return NULL;
    memcpy(spare->list, list, len);
    spare->list[len] = '\0';
    return spare;
}

static int session_view(rrpc__async_session *s, const char *queue, size_t qlen,
                        rrpc__registry_view *out)
{
    reg_view *v = find_view(s, queue, qlen);
    if (v == NULL)
        return RRPC__AVIEW_NONE;
    if (!v->asking && s->state == LINK_UP &&
        (v->fetched == 0 || rrpc__monotonic() - v->fetched > VIEW_FRESH_S))
        ask_view(s, v);
    if (v->known) {
        *out = v->view;
        return RRPC__AVIEW_KNOWN;
    }
    return v->asking ? RRPC__AVIEW_ASKING : RRPC__AVIEW_NONE;
}

static void free_views(rrpc__async_session *s)
{
    for (size_t i = 0; i < VIEWS; i++)
        free(s->views[i].list);
}

/* ---- bounded pushes (max_queue) ---------------------------------------- */

/* A group pushed one EVAL of the max_queue script per call.  Each EVAL's
 * privdata is its part's address with the low bit set: that bit tells
 * on_push_reply a part from the client's groups (malloc'd, so aligned);
 * the views' parts (inside s->views, any address) are told first. */
typedef struct bounded bounded;
typedef struct bpart {
    bounded *b;
    size_t i;
} bpart;
struct bounded {
    void *group; /* the client's */
    size_t n, left;
    int lost;
    long max_queue;
    char stats[RRPC__KEY_MAX]; /* the service's <service>:stats, where shed is counted */
    bpart parts[];
};

#define BPART_TAG ((uintptr_t)1)

static bpart *bpart_of(const void *privdata)
{
    uintptr_t p = (uintptr_t)privdata;
    return (p & BPART_TAG) ? (bpart *)(p & ~BPART_TAG) : NULL;
}

/* Counts a call refused by max_queue in <service>:stats "shed", as the sync
 * client does (client_redis.c): fire and forget. */
static void count_shed(rrpc__async_session *s, const char *stats)
{
    const char *argv[] = {"HINCRBY", stats, RRPC__STAT_SHED, "1"};
    if (s->state == LINK_UP && stats[0] != '\0')
        rrpc__aconn_command(s->push, 4, argv, NULL, NULL);
}

/* One call's EVAL answered (R NULL: lost with the link): a refusal fails
 * that call alone; the last answer ends the group. */
static void on_bounded_reply(rrpc__async_session *s, bpart *p, const rrpc__reply *r)
{
    bounded *b = p->b;
    char msg[RRPC__ERRMSG_LEN];
    rrpc__svc_state st = {.max_queue = b->max_queue};
    if (r == NULL) {
        b->lost = 1;
    } else if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        snprintf(msg, sizeof msg, "Redis refused the request: %s", rrpc__reply_str(r, NULL));
        s->h->refused(b->group, p->i, RRPC_EREDIS, msg, s->udata);
    } else if (rrpc__failfast_pushed(r, &st, msg, sizeof msg) == RRPC_EOVERLOADED) {
        count_shed(s, b->stats);
        s->h->refused(b->group, p->i, RRPC_EOVERLOADED, msg, s->udata);
    }
    if (--b->left > 0)
        return;
    s->h->delivered(b->group, b->lost ? RRPC_ECONNECT : RRPC_OK, NULL, s->udata);
    free(b);
}

static int session_deliver_bounded(rrpc__async_session *s, const char *queue, size_t qlen,
                                   const char *service, size_t slen, int priority,
                                   const char **texts, size_t *lens, size_t n, long max_queue,
                                   void *group)
{
    char list[RRPC__KEY_MAX], high[RRPC__KEY_MAX], low[RRPC__KEY_MAX], max[32], svc[RRPC__KEY_MAX];
    if (s->state != LINK_UP)
        return RRPC_ECONNECT;
    if (qlen >= sizeof list || slen >= sizeof svc || n == 0)
        return RRPC_EINVAL;
    memcpy(list, queue, qlen);
    list[qlen] = '\0';
    memcpy(svc, service, slen);
    svc[slen] = '\0';
    if (rrpc__priority_key(high, sizeof high, list, RRPC_PRIORITY_HIGH) != RRPC_OK ||
        rrpc__priority_key(low, sizeof low, list, RRPC_PRIORITY_LOW) != RRPC_OK)
        return RRPC_EINVAL;
    bounded *b = malloc(sizeof *b + n * sizeof b->parts[0]);
    if (b == NULL)
        return RRPC_ENOMEM;
    *b = (bounded){.group = group, .n = n, .left = n, .max_queue = max_queue};
    if (rrpc__key_join(b->stats, sizeof b->stats, NULL, svc, RRPC__SUFFIX_STATS) != RRPC_OK)
        b->stats[0] = '\0';
    snprintf(max, sizeof max, "%ld", max_queue);
    const char *argv[] = {"EVAL", rrpc__max_queue_push_script,  "3", list, high, low, NULL,
                          max,    rrpc__priority_name(priority)};
    size_t argl[9];
    for (size_t k = 0; k < 9; k++)
        argl[k] = argv[k] != NULL ? strlen(argv[k]) : 0;
    int argc = priority == RRPC_PRIORITY_NORMAL ? 8 : 9;
    for (size_t i = 0; i < n; i++) {
        b->parts[i] = (bpart){b, i};
        argv[6] = texts[i];
        argl[6] = lens[i];
        /* Once the first is queued the group ends through its replies
         * (a later failure to queue is a lost link, reported as such). */
        void *tagged = (void *)((uintptr_t)&b->parts[i] | BPART_TAG);
        if (rrpc__aconn_command(s->push, argc, argv, argl, tagged) != RRPC_OK) {
            if (i == 0) {
                free(b);
                return RRPC_ECONNECT;
            }
            b->lost = 1;
            b->left -= n - i;
            break;
        }
    }
    return RRPC_OK;
}

/* Answers to RPUSH (privdata: the client's group), a view's read (a part
 * of a view), a bounded push (a tagged part) and LREM (none). */
static void on_push_reply(const rrpc__reply *r, void *privdata, void *udata)
{
    rrpc__async_session *s = udata;
    if (privdata == NULL)
        return;
    reg_view *v = view_of_part(s, privdata); /* first: a part's address may be odd */
    if (v != NULL) {
        on_view_reply(s, v, privdata, r);
        return;
    }
    bpart *p = bpart_of(privdata);
    if (p != NULL) {
        on_bounded_reply(s, p, r);
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
    .shards = NULL, /* the view says */
    .view = session_view,
    .deliver_bounded = session_deliver_bounded,
    .close = session_close,
};
