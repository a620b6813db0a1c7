/* test_cluster_map.c -- unit tests for src/cluster_map.c, without a Redis.
 *
 * Both cluster links (sync and async) trust this module to read what a
 * cluster node sends: CLUSTER SLOTS replies (as Redis 6 and 7 write them,
 * and shapes no Redis writes: a node must not crash rrpc nor wipe a good
 * map) and MOVED/ASK errors (well formed, and every way a slot, host or
 * port can be wrong: reported, never followed), and the copy of a command
 * kept for resending it.  Replies are made from RESP
 * text with hiredis's reader, the same code that reads them off a socket
 * (rrpc__reply is hiredis's redisReply, transport.c says so).
 */
#include "redis/cluster_map.h"

#include "core/internal.h"

#include "check.h"
#include "redis/conn.h"

#include <hiredis/hiredis.h>

#include <string.h>

/* The reply RESP encodes (one whole reply), or NULL. */
static rrpc__reply *reply_of(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    if (rd == NULL || redisReaderFeed(rd, resp, strlen(resp)) != REDIS_OK ||
        redisReaderGetReply(rd, &r) != REDIS_OK)
        r = NULL;
    redisReaderFree(rd);
    return r;
}

/* CLUSTER SLOTS of a 3-master cluster as Redis 7 writes it: node ids,
 * replicas, and the empty networking metadata map of RESP2. */
static const char three_masters[] = "*3\r\n"
                                    "*4\r\n:0\r\n:5460\r\n"
                                    "*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$4\r\naaaa\r\n*0\r\n"
                                    "*4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$4\r\nbbbb\r\n*0\r\n"
                                    "*3\r\n:5461\r\n:10922\r\n"
                                    "*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$4\r\ncccc\r\n*0\r\n"
                                    "*3\r\n:10923\r\n:16383\r\n"
                                    "*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$4\r\ndddd\r\n";

/* Applies RESP to M (asked at "10.0.0.9"); the return code, ERR filled. */
static int apply(rrpc__cmap *m, const char *resp, char *err, size_t errlen)
{
    rrpc__reply *r = reply_of(resp);
    if (!CHECK(r != NULL))
        return -1000;
    err[0] = '\0';
    int rc = rrpc__cmap_apply_slots(m, r, "10.0.0.9", err, errlen);
    rrpc__reply_free(r);
    return rc;
}

static void test_slots_of_three_masters(void)
{
    rrpc__cmap m;
    char err[RRPC__ERRMSG_LEN];
    rrpc__cmap_init(&m);
    CHECK_EQ_INT(m.owner[0], -1);
    CHECK_EQ_INT(apply(&m, three_masters, err, sizeof err), RRPC_OK);
    CHECK_EQ_INT(m.nnodes, 3); /* masters only, in the reply's order */
    CHECK_EQ_STR(m.nodes[0].host, "127.0.0.1");
    CHECK_EQ_INT(m.nodes[0].port, 7000);
    CHECK_EQ_INT(m.nodes[1].port, 7001);
    CHECK_EQ_INT(m.nodes[2].port, 7002);
    CHECK(m.nodes[0].link == NULL);
    CHECK_EQ_INT(m.owner[0], 0);
    CHECK_EQ_INT(m.owner[5460], 0);
    CHECK_EQ_INT(m.owner[5461], 1);
    CHECK_EQ_INT(m.owner[10922], 1);
    CHECK_EQ_INT(m.owner[10923], 2);
    CHECK_EQ_INT(m.owner[16383], 2);

    /* Read again after a failover (7003 took over 0-5460): old indexes
     * stay valid, the new master is added, every owner is rewritten. */
    m.nodes[1].link = &m; /* a caller's link survives */
    const char *failed_over = "*2\r\n"
                              "*3\r\n:0\r\n:5460\r\n*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n"
                              "*3\r\n:5461\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n";
    CHECK_EQ_INT(apply(&m, failed_over, err, sizeof err), RRPC_OK);
    CHECK_EQ_INT(m.nnodes, 4);
    CHECK_EQ_INT(m.nodes[3].port, 7003);
    CHECK_EQ_INT(m.owner[100], 3);
    CHECK_EQ_INT(m.owner[16383], 1);
    CHECK(m.nodes[1].link == &m);
    rrpc__cmap_free(&m);
    CHECK_EQ_INT(m.nnodes, 0);
    CHECK(m.nodes == NULL);
    CHECK_EQ_INT(m.owner[100], -1);
}

static void test_slots_empty_host_and_odd_ranges(void)
{
    rrpc__cmap m;
    char err[RRPC__ERRMSG_LEN];
    rrpc__cmap_init(&m);
    /* "" is "the address you reached me at"; ranges past either end are
     * cut to the table, an upside-down one owns nothing. */
    const char *resp = "*3\r\n"
                       "*3\r\n:-5\r\n:2\r\n*2\r\n$0\r\n\r\n:7000\r\n"
                       "*3\r\n:16380\r\n:99999\r\n*2\r\n$4\r\nhost\r\n:7001\r\n"
                       "*3\r\n:500\r\n:400\r\n*2\r\n$4\r\nhost\r\n:7002\r\n";
    CHECK_EQ_INT(apply(&m, resp, err, sizeof err), RRPC_OK);
    CHECK_EQ_STR(m.nodes[0].host, "10.0.0.9");
    CHECK_EQ_INT(m.owner[0], 0);
    CHECK_EQ_INT(m.owner[2], 0);
    CHECK_EQ_INT(m.owner[3], -1);
    CHECK_EQ_INT(m.owner[16383], 1);
    CHECK_EQ_INT(m.owner[450], -1);
    rrpc__cmap_free(&m);
}

/* Replies no usable map can come from: an error, an empty list (a node
 * not in a cluster yet), other types, entries of the wrong shape.  Each is
 * RRPC_EREDIS with a reason, and leaves the map that was there. */
static void test_slots_unusable(void)
{
    static const struct {
        const char *resp, *why;
    } cases[] = {
        {"-ERR This instance has cluster support disabled\r\n",
         "ERR This instance has cluster support disabled"},
        {"*0\r\n", "empty CLUSTER SLOTS"},
        {"$-1\r\n", "empty CLUSTER SLOTS"},
        {":42\r\n", "empty CLUSTER SLOTS"},
        {"+OK\r\n", "empty CLUSTER SLOTS"},
        {"$5\r\nslots\r\n", "empty CLUSTER SLOTS"},
        {"*1\r\n:1\r\n", "no slot range in CLUSTER SLOTS"},
        {"*1\r\n*2\r\n:0\r\n:100\r\n", "no slot range in CLUSTER SLOTS"}, /* no master */
        {"*1\r\n*3\r\n$1\r\n0\r\n:100\r\n*2\r\n$1\r\nh\r\n:1\r\n",
         "no slot range in CLUSTER SLOTS"}, /* "0" is text */
        {"*1\r\n*3\r\n:0\r\n:100\r\n*1\r\n$1\r\nh\r\n", "no slot range in CLUSTER SLOTS"},
        {"*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n:1\r\n:1\r\n", "no slot range in CLUSTER SLOTS"},
        {"*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$1\r\nh\r\n$4\r\n7000\r\n",
         "no slot range in CLUSTER SLOTS"},
        {"*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$1\r\nh\r\n:0\r\n", "no slot range in CLUSTER SLOTS"},
        {"*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$1\r\nh\r\n:65536\r\n", "no slot range in CLUSTER SLOTS"},
        {"*1\r\n*3\r\n:0\r\n:100\r\n$-1\r\n", "no slot range in CLUSTER SLOTS"},
    };
    rrpc__cmap m;
    char err[RRPC__ERRMSG_LEN];
    rrpc__cmap_init(&m);
    CHECK_EQ_INT(apply(&m, three_masters, err, sizeof err), RRPC_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!CHECK_EQ_INT(apply(&m, cases[i].resp, err, sizeof err), RRPC_EREDIS))
            fprintf(stderr, "    case %zu\n", i);
        CHECK_EQ_STR(err, cases[i].why);
        CHECK_EQ_INT(m.nnodes, 3);
        CHECK_EQ_INT(m.owner[0], 0);
        CHECK_EQ_INT(m.owner[16383], 2);
    }
    /* A bad entry among good ones is skipped. */
    const char *mixed = "*3\r\n:7\r\n"
                        "*3\r\n:0\r\n:16383\r\n*2\r\n$1\r\nh\r\n:9000\r\n"
                        "*3\r\n:0\r\n:9\r\n*2\r\n$1\r\nh\r\n:-1\r\n";
    CHECK_EQ_INT(apply(&m, mixed, err, sizeof err), RRPC_OK);
    CHECK_EQ_INT(m.nnodes, 4);
    CHECK_EQ_INT(m.owner[0], 3);
    CHECK_EQ_INT(m.owner[16383], 3);
    rrpc__cmap_free(&m);
}

static void test_nodes_and_route(void)
{
    rrpc__cmap m;
    char err[RRPC__ERRMSG_LEN];
    rrpc__cmap_init(&m);
    /* Nothing known: every command goes to node 0 (the caller has one). */
    const char *ping[] = {"PING"};
    CHECK_EQ_INT(rrpc__cmap_route(&m, 1, ping, NULL), 0);
    CHECK_EQ_INT(rrpc__cmap_node(&m, "a", 1), 0);
    CHECK_EQ_INT(rrpc__cmap_node(&m, "b", 1), 1);
    CHECK_EQ_INT(rrpc__cmap_node(&m, "a", 2), 2);
    CHECK_EQ_INT(rrpc__cmap_node(&m, "a", 1), 0);
    for (int i = 0; i < 100; i++) /* growing keeps indexes */
        CHECK_EQ_INT(rrpc__cmap_node(&m, "n", 1000 + i), 3 + i);
    CHECK_EQ_INT(rrpc__cmap_node(&m, "n", 1050), 53);
    rrpc__cmap_free(&m);

    CHECK_EQ_INT(apply(&m, three_masters, err, sizeof err), RRPC_OK);
    /* "foo" is slot 12182 (node 2), "bar" 5061 (node 0), "{calc}..." 15575. */
    const char *rpush_foo[] = {"RPUSH", "foo", "x"};
    const char *blpop_bar[] = {"BLPOP", "bar", "1"};
    const char *blmpop[] = {"BLMPOP", "1", "1", "{calc}:r", "LEFT"};
    const size_t lens[] = {5, 3, 1};
    CHECK_EQ_INT(rrpc__cmap_route(&m, 3, rpush_foo, NULL), 2);
    CHECK_EQ_INT(rrpc__cmap_route(&m, 3, rpush_foo, lens), 2);
    CHECK_EQ_INT(rrpc__cmap_route(&m, 3, blpop_bar, NULL), 0);
    CHECK_EQ_INT(rrpc__cmap_route(&m, 5, blmpop, NULL), 2);
    /* No key, or an owner nobody knows: slot 0's owner, a live master. */
    m.owner[0] = 1;
    CHECK_EQ_INT(rrpc__cmap_route(&m, 1, ping, NULL), 1);
    m.owner[12182] = -1;
    CHECK_EQ_INT(rrpc__cmap_route(&m, 3, rpush_foo, NULL), 1);
    rrpc__cmap_free(&m);
}

/* Parses TEXT as an error reply; the result, *rd filled, ERR set. */
static int parse(const char *text, rrpc__redirect *rd, char *err, size_t errlen)
{
    char resp[1024];
    snprintf(resp, sizeof resp, "-%s\r\n", text);
    rrpc__reply *r = reply_of(resp);
    if (!CHECK(r != NULL))
        return -1000;
    if (err != NULL)
        err[0] = '\0';
    memset(rd, 0x5a, sizeof *rd);
    int kind = rrpc__redirect_parse(r, rd, err, errlen);
    rrpc__reply_free(r);
    return kind;
}

static void test_redirects(void)
{
    rrpc__redirect rd;
    char err[RRPC__ERRMSG_LEN];
    CHECK_EQ_INT(parse("MOVED 3999 127.0.0.1:6381", &rd, err, sizeof err), RRPC__REDIRECT_MOVED);
    CHECK_EQ_INT(rd.kind, RRPC__REDIRECT_MOVED);
    CHECK_EQ_INT(rd.slot, 3999);
    CHECK_EQ_STR(rd.host, "127.0.0.1");
    CHECK_EQ_INT(rd.port, 6381);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_INT(parse("ASK 16383 redis-3.example:7000", &rd, err, sizeof err), RRPC__REDIRECT_ASK);
    CHECK_EQ_INT(rd.slot, 16383);
    CHECK_EQ_STR(rd.host, "redis-3.example");
    CHECK_EQ_INT(rd.port, 7000);
    /* Redis 7 with an unknown endpoint: ":port" is the node we asked. */
    CHECK_EQ_INT(parse("MOVED 0 :6380", &rd, err, sizeof err), RRPC__REDIRECT_MOVED);
    CHECK_EQ_STR(rd.host, "127.0.0.1");
    CHECK_EQ_INT(rd.slot, 0);
    /* An IPv6 host keeps its own colons. */
    CHECK_EQ_INT(parse("ASK 12 ::1:7001", &rd, err, sizeof err), RRPC__REDIRECT_ASK);
    CHECK_EQ_STR(rd.host, "::1");
    CHECK_EQ_INT(rd.port, 7001);

    /* Not redirections: handed on as the errors they are, silently. */
    static const char *const other[] = {"ERR unknown command",
                                        "MOVEDX 1 h:1",
                                        "ASKING",
                                        "moved 1 h:1",
                                        "CLUSTERDOWN Hash slot not served",
                                        "TRYAGAIN Multiple keys request during rehashing"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        CHECK_EQ_INT(parse(other[i], &rd, err, sizeof err), RRPC__REDIRECT_NONE);
        CHECK_EQ_INT(rd.kind, RRPC__REDIRECT_NONE);
        CHECK_EQ_STR(err, "");
    }
    rrpc__reply *ok = reply_of("+MOVED 1 h:1\r\n"); /* a status, not an error */
    CHECK_EQ_INT(rrpc__redirect_parse(ok, &rd, err, sizeof err), RRPC__REDIRECT_NONE);
    rrpc__reply_free(ok);

    /* Malformed: RRPC_EREDIS and the text, never followed. */
    char long_host[400];
    snprintf(long_host, sizeof long_host, "MOVED 1 %0300d:7000", 0);
    static const char *const bad[] = {"MOVED",
                                      "MOVED ",
                                      "ASK 1",
                                      "ASK 1 ",
                                      "MOVED x h:1",
                                      "MOVED -1 h:1",
                                      "MOVED 16384 h:1",
                                      "MOVED 99999999999999999999999 h:1",
                                      "MOVED 1  h:1",
                                      "MOVED 1h:1",
                                      "MOVED 1 host",
                                      "MOVED 1 host:",
                                      "MOVED 1 host:0",
                                      "MOVED 1 host:65536",
                                      "MOVED 1 host:-1",
                                      "MOVED 1 host:12x",
                                      "MOVED 1 host:1 trailing",
                                      "ASK 1 a b:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (!CHECK_EQ_INT(parse(bad[i], &rd, err, sizeof err), RRPC_EREDIS))
            fprintf(stderr, "    \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rd.kind, RRPC__REDIRECT_NONE);
        CHECK(strncmp(err, "malformed Redis Cluster redirection: ", 37) == 0);
        CHECK(strstr(err, bad[i]) != NULL);
    }
    CHECK_EQ_INT(parse(long_host, &rd, err, sizeof err), RRPC_EREDIS);
    CHECK_EQ_INT(parse(long_host, &rd, NULL, 0), RRPC_EREDIS); /* no message wanted */
}

static void test_redirect_into_map(void)
{
    rrpc__cmap m;
    rrpc__redirect rd;
    char err[RRPC__ERRMSG_LEN];
    rrpc__cmap_init(&m);
    CHECK_EQ_INT(apply(&m, three_masters, err, sizeof err), RRPC_OK);
    /* ASK: the node is known from now on, the slot stays where it was. */
    CHECK_EQ_INT(parse("ASK 100 127.0.0.1:7009", &rd, err, sizeof err), RRPC__REDIRECT_ASK);
    CHECK_EQ_INT(rrpc__cmap_redirect(&m, &rd), 3);
    CHECK_EQ_INT(m.owner[100], 0);
    /* MOVED: the slot moves, and only that slot. */
    CHECK_EQ_INT(parse("MOVED 100 127.0.0.1:7009", &rd, err, sizeof err), RRPC__REDIRECT_MOVED);
    CHECK_EQ_INT(rrpc__cmap_redirect(&m, &rd), 3);
    CHECK_EQ_INT(m.owner[100], 3);
    CHECK_EQ_INT(m.owner[101], 0);
    CHECK_EQ_INT(parse("MOVED 101 127.0.0.1:7002", &rd, err, sizeof err), RRPC__REDIRECT_MOVED);
    CHECK_EQ_INT(rrpc__cmap_redirect(&m, &rd), 2);
    CHECK_EQ_INT(m.owner[101], 2);
    CHECK_EQ_INT(m.nnodes, 4);
    rrpc__cmap_free(&m);
}

/* The copy kept for a resend: binary arguments intact, each also
 * NUL-terminated, independent of the caller's buffers. */
static void test_command_copy(void)
{
    char key[] = "k\0ey";
    const char *argv[] = {"RPUSH", key, ""};
    const size_t lens[] = {5, 4, 0};
    rrpc__ccmd *c = rrpc__ccmd_new(3, argv, lens);
    if (!CHECK(c != NULL))
        return;
    key[0] = 'X';
    CHECK_EQ_INT(c->argc, 3);
    CHECK(c->privdata == NULL && c->node == 0 && c->hops == 0);
    CHECK_EQ_STR(c->argv[0], "RPUSH");
    CHECK_EQ_INT(c->lens[1], 4);
    CHECK(memcmp(c->argv[1], "k\0ey", 5) == 0); /* NUL-terminated after its 4 bytes */
    CHECK_EQ_INT(c->lens[2], 0);
    CHECK_EQ_STR(c->argv[2], "");
    free(c);
    const char *ping[] = {"PING"};
    c = rrpc__ccmd_new(1, ping, NULL);
    if (CHECK(c != NULL))
        CHECK(c->lens[0] == 4 && strcmp(c->argv[0], "PING") == 0);
    free(c);
}

int main(void)
{
    test_slots_of_three_masters();
    test_slots_empty_host_and_odd_ranges();
    test_slots_unusable();
    test_nodes_and_route();
    test_redirects();
    test_redirect_into_map();
    test_command_copy();
    return check_report();
}
