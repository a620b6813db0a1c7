/* test_url.c -- unit tests for src/url.c, the Redis URL parser.
 *
 * Every rrpc handle starts from a URL, and a team's existing REDIS_URL must
 * work unchanged, so these tests pin each accepted form (redis:// with
 * user, password, port, db and IPv6 host; unix:// with query parameters;
 * the $REDIS_URL / default fallback; redis+sentinel:// and redis+cluster://
 * with their node lists), each rejected form (always RRPC_EURL,
 * never a crash or a half-filled struct) and the password masking of
 * rrpc__url_describe, which is what ends up in log lines.
 */
#include "core/internal.h"

#include "check.h"
#include "core/url.h"

#include <stdlib.h>
#include <string.h>

/* Parses URL and checks every field; NULL expectations mean "absent". */
static void expect_url(const char *url, const char *host, int port, const char *path,
                       const char *user, const char *password, int db, int line)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    int rc = rrpc__url_parse(&u, url, err, sizeof err);
    if (!CHECK_EQ_INT(rc, RRPC_OK)) {
        fprintf(stderr, "    (line %d) url %s: %s\n", line, url ? url : "NULL", err);
        return;
    }
    int ok = CHECK_EQ_STR(u.host, host);
    ok &= CHECK_EQ_INT(u.port, port);
    ok &= CHECK_EQ_STR(u.path, path);
    ok &= CHECK_EQ_STR(u.user, user);
    ok &= CHECK_EQ_STR(u.password, password);
    ok &= CHECK_EQ_INT(u.db, db);
    if (!ok)
        fprintf(stderr, "    (line %d) url %s\n", line, url ? url : "NULL");
    rrpc__url_free(&u);
}

#define EXPECT_URL(url, host, port, path, user, password, db)                                      \
    expect_url(url, host, port, path, user, password, db, __LINE__)

/* Checks URL is rejected with RRPC_EURL, a message, and a zeroed struct. */
static void expect_bad_url(const char *url, const char *message_part, int line)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    int rc = rrpc__url_parse(&u, url, err, sizeof err);
    int ok = CHECK_EQ_INT(rc, RRPC_EURL);
    ok &= CHECK(err[0] != '\0');
    if (message_part != NULL)
        ok &= CHECK(strstr(err, message_part) != NULL);
    ok &= CHECK(u.host == NULL && u.path == NULL && u.user == NULL && u.password == NULL);
    if (!ok)
        fprintf(stderr, "    (line %d) url %s: rc %d, \"%s\"\n", line, url, rc, err);
    rrpc__url_free(&u);
}

#define EXPECT_BAD_URL(url, message_part) expect_bad_url(url, message_part, __LINE__)

static void test_host_only_defaults_port_and_db(void)
{
    EXPECT_URL("redis://host", "host", 6379, NULL, NULL, NULL, 0);
}

static void test_host_and_port(void)
{
    EXPECT_URL("redis://host:6380", "host", 6380, NULL, NULL, NULL, 0);
}

static void test_host_port_and_db(void)
{
    EXPECT_URL("redis://host:6380/3", "host", 6380, NULL, NULL, NULL, 3);
}

static void test_trailing_slash_means_db_zero(void)
{
    EXPECT_URL("redis://host/", "host", 6379, NULL, NULL, NULL, 0);
}

static void test_empty_host_means_localhost(void)
{
    EXPECT_URL("redis://", "127.0.0.1", 6379, NULL, NULL, NULL, 0);
}

static void test_password_without_user(void)
{
    EXPECT_URL("redis://:pass@host", "host", 6379, NULL, NULL, "pass", 0);
}

static void test_lone_userinfo_is_the_password(void)
{
    /* redis-rb's reading of redis://secret@host. */
    EXPECT_URL("redis://secret@host", "host", 6379, NULL, NULL, "secret", 0);
}

static void test_user_password_port_and_db(void)
{
    EXPECT_URL("redis://user:pass@host:6380/2", "host", 6380, NULL, "user", "pass", 2);
}

static void test_percent_encoded_password_is_decoded(void)
{
    EXPECT_URL("redis://:p%40ss@host", "host", 6379, NULL, NULL, "p@ss", 0);
    EXPECT_URL("redis://u%3Ax:p%2fss%25@host", "host", 6379, NULL, "u:x", "p/ss%", 0);
}

static void test_broken_percent_escape_is_kept_verbatim(void)
{
    EXPECT_URL("redis://:p%4@host", "host", 6379, NULL, NULL, "p%4", 0);
    EXPECT_URL("redis://:p%zz@host", "host", 6379, NULL, NULL, "p%zz", 0);
}

static void test_ipv6_literal_with_port(void)
{
    EXPECT_URL("redis://[::1]:6380", "::1", 6380, NULL, NULL, NULL, 0);
    EXPECT_URL("redis://[::1]", "::1", 6379, NULL, NULL, NULL, 0);
    EXPECT_URL("redis://:pw@[fe80::1]:7000/5", "fe80::1", 7000, NULL, NULL, "pw", 5);
}

static void test_query_db_on_tcp(void)
{
    EXPECT_URL("redis://host?db=7", "host", 6379, NULL, NULL, NULL, 7);
}

static void test_unix_socket(void)
{
    EXPECT_URL("unix:///tmp/x.sock", NULL, 6379, "/tmp/x.sock", NULL, NULL, 0);
}

static void test_unix_socket_with_db(void)
{
    EXPECT_URL("unix:///tmp/x.sock?db=4", NULL, 6379, "/tmp/x.sock", NULL, NULL, 4);
}

static void test_unix_socket_with_password_and_user(void)
{
    EXPECT_URL("unix:///tmp/x.sock?password=secret&user=bob", NULL, 6379, "/tmp/x.sock", "bob",
               "secret", 0);
    EXPECT_URL("unix:///tmp/x.sock?db=2&password=p%26w", NULL, 6379, "/tmp/x.sock", NULL, "p&w", 2);
}

static void test_unix_socket_with_userinfo(void)
{
    EXPECT_URL("unix://bob:pw@/run/redis.sock", NULL, 6379, "/run/redis.sock", "bob", "pw", 0);
}

static void test_null_url_uses_redis_url_env(void)
{
    setenv("REDIS_URL", "redis://envhost:7001/9", 1);
    EXPECT_URL(NULL, "envhost", 7001, NULL, NULL, NULL, 9);
    EXPECT_URL("", "envhost", 7001, NULL, NULL, NULL, 9);
    unsetenv("REDIS_URL");
}

static void test_null_url_without_env_is_localhost(void)
{
    unsetenv("REDIS_URL");
    EXPECT_URL(NULL, "127.0.0.1", 6379, NULL, NULL, NULL, 0);
    setenv("REDIS_URL", "", 1);
    EXPECT_URL(NULL, "127.0.0.1", 6379, NULL, NULL, NULL, 0);
    unsetenv("REDIS_URL");
}

static void test_explicit_url_ignores_env(void)
{
    setenv("REDIS_URL", "redis://envhost:7001", 1);
    EXPECT_URL("redis://other", "other", 6379, NULL, NULL, NULL, 0);
    unsetenv("REDIS_URL");
}

static void test_bad_env_url_is_reported(void)
{
    setenv("REDIS_URL", "http://nope", 1);
    EXPECT_BAD_URL(NULL, "redis://");
    unsetenv("REDIS_URL");
}

static void test_rejects_other_schemes(void)
{
    EXPECT_BAD_URL("http://x", "redis://, unix://");
    EXPECT_BAD_URL("http://x", "amqp://");
    EXPECT_BAD_URL("host:6379", NULL);
    EXPECT_BAD_URL("REDIS://host", NULL);
}

static void test_rejects_bad_ports(void)
{
    EXPECT_BAD_URL("redis://host:99999", "port");
    EXPECT_BAD_URL("redis://host:abc", "port");
    EXPECT_BAD_URL("redis://host:0", "port");
    EXPECT_BAD_URL("redis://host:", "port");
    EXPECT_BAD_URL("redis://host:-1", "port");
    EXPECT_BAD_URL("redis://host:1234567890123", "port");
    EXPECT_BAD_URL("redis://[::1]:abc", "port");
}

static void test_rejects_bad_db(void)
{
    EXPECT_BAD_URL("redis://host/notanumber", "db");
    EXPECT_BAD_URL("redis://host/-1", "db");
    EXPECT_BAD_URL("unix:///tmp/x.sock?db=x", "db");
}

static void test_rejects_unterminated_ipv6(void)
{
    EXPECT_BAD_URL("redis://[::1:6380", "[");
}

static void test_rejects_relative_unix_path(void)
{
    EXPECT_BAD_URL("unix://relative", "absolute");
    EXPECT_BAD_URL("unix://", "absolute");
}

static void test_rejects_bad_query(void)
{
    EXPECT_BAD_URL("unix:///tmp/x.sock?color=red", "color");
    EXPECT_BAD_URL("unix:///tmp/x.sock?db", "=");
}

static void test_rejects_tls(void)
{
    EXPECT_BAD_URL("rediss://x", "TLS");
}

static void describe(const char *url, const char *expected);

/* amqp:// (the AMQP transport): user, password, host, port and the vhost,
 * percent-decoded, with RabbitMQ's defaults. */
static void expect_amqp(const char *url, const char *host, int port, const char *user,
                        const char *password, const char *vhost, int tls, int line)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, url, err, sizeof err), RRPC_OK)) {
        fprintf(stderr, "    (line %d) url %s: %s\n", line, url ? url : "NULL", err);
        return;
    }
    int ok = CHECK_EQ_INT(u.kind, RRPC__URL_AMQP);
    ok &= CHECK_EQ_STR(u.host, host);
    ok &= CHECK_EQ_INT(u.port, port);
    ok &= CHECK_EQ_STR(u.user, user);
    ok &= CHECK_EQ_STR(u.password, password);
    ok &= CHECK_EQ_STR(u.vhost, vhost);
    ok &= CHECK_EQ_INT(u.tls, tls);
    if (!ok)
        fprintf(stderr, "    (line %d) url %s\n", line, url ? url : "NULL");
    rrpc__url_free(&u);
}

/* ?heartbeat=S, RabbitMQ's URI parameter, for amqp:// and amqps:// alike;
 * -1 when the URL gives none (the transport's default). */
static void test_amqp_heartbeat(void)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    CHECK_EQ_INT(rrpc__url_parse(&u, "amqp://h/v", err, sizeof err), RRPC_OK);
    CHECK_EQ_INT(u.heartbeat, -1);
    rrpc__url_free(&u);
    CHECK_EQ_INT(rrpc__url_parse(&u, "amqp://h/v?heartbeat=0", err, sizeof err), RRPC_OK);
    CHECK_EQ_INT(u.heartbeat, 0);
    rrpc__url_free(&u);
    CHECK_EQ_INT(rrpc__url_parse(&u, "amqps://h?verify=verify_none&heartbeat=7", err, sizeof err),
                 RRPC_OK);
    CHECK_EQ_INT(u.heartbeat, 7);
    CHECK_EQ_INT(u.tls_verify_none, 1);
    rrpc__url copy;
    CHECK_EQ_INT(rrpc__url_copy(&copy, &u), RRPC_OK);
    CHECK_EQ_INT(copy.heartbeat, 7);
    rrpc__url_free(&copy);
    rrpc__url_free(&u);
}

static void test_amqp_urls(void)
{
    expect_amqp("amqp://", "localhost", 5672, "guest", "guest", "/", 0, __LINE__);
    expect_amqp("amqp://rabbit", "rabbit", 5672, "guest", "guest", "/", 0, __LINE__);
    expect_amqp("amqp://rabbit/", "rabbit", 5672, "guest", "guest", "/", 0, __LINE__);
    expect_amqp("amqp://u:p%40ss@rabbit:5673/%2F", "rabbit", 5673, "u", "p@ss", "/", 0, __LINE__);
    expect_amqp("amqp://u:p@ss@10.0.0.1:1/prod%2Feu", "10.0.0.1", 1, "u", "p@ss", "prod/eu", 0,
                __LINE__);
    expect_amqp("amqp://[::1]:5680/v", "::1", 5680, "guest", "guest", "v", 0, __LINE__);
    expect_amqp("amqps://u:p@h/v", "h", 5671, "u", "p", "v", 1, __LINE__);
    EXPECT_BAD_URL("amqp://h:99999/", "port");
    EXPECT_BAD_URL("amqp://h/v?cacertfile=/ca.pem", "amqps://");
    EXPECT_BAD_URL("amqp://h/v?heartbeat=", "heartbeat= takes seconds");
    EXPECT_BAD_URL("amqp://h/v?heartbeat=65536", "heartbeat= takes seconds");
    EXPECT_BAD_URL("amqps://h/v?heart=5", "unknown URL parameter 'heart'");
    EXPECT_BAD_URL("amqps://h/v?verify=maybe", "verify_peer or verify_none");
    EXPECT_BAD_URL("amqps://h/v#frag", "fragment");
    EXPECT_BAD_URL("amqp://u:se?cret@h/", "'@'");
    EXPECT_BAD_URL("amqp://u:se/cret@h/", "'@'");
    describe("amqp://u:hunter2@h:5673/prod", "amqp://u:***@h:5673/prod");
    test_amqp_heartbeat();
    describe("amqp://h", "amqp://guest:***@h:5672/%2F");
}

/* amqps:// takes RabbitMQ's TLS query parameters; verifying is the default. */
static void test_amqps_query(void)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    CHECK_EQ_INT(rrpc__url_parse(&u,
                                 "amqps://u:p@h:5999/v?cacertfile=/etc/ca%20s.pem&certfile=/c."
                                 "pem&keyfile=/k.pem&verify=verify_none",
                                 err, sizeof err),
                 RRPC_OK);
    CHECK_EQ_STR(u.host, "h");
    CHECK_EQ_INT(u.port, 5999);
    CHECK_EQ_STR(u.vhost, "v");
    CHECK_EQ_STR(u.tls_cacert, "/etc/ca s.pem");
    CHECK_EQ_STR(u.tls_cert, "/c.pem");
    CHECK_EQ_STR(u.tls_key, "/k.pem");
    CHECK_EQ_INT(u.tls_verify_none, 1);
    rrpc__url copy;
    CHECK_EQ_INT(rrpc__url_copy(&copy, &u), RRPC_OK);
    CHECK_EQ_STR(copy.tls_cacert, "/etc/ca s.pem");
    CHECK_EQ_STR(copy.tls_key, "/k.pem");
    rrpc__url_free(&copy);
    rrpc__url_free(&u);
    CHECK_EQ_INT(rrpc__url_parse(&u, "amqps://h?cacertfile=/ca.pem", err, sizeof err), RRPC_OK);
    CHECK_EQ_STR(u.host, "h");
    CHECK_EQ_INT(u.port, 5671);
    CHECK_EQ_STR(u.vhost, "/");
    CHECK_EQ_STR(u.tls_cacert, "/ca.pem");
    CHECK_EQ_INT(u.tls_verify_none, 0);
    rrpc__url_free(&u);
}

/* $RRPC_URL comes before $REDIS_URL: either broker's URL. */
static void test_rrpc_url_env_first(void)
{
    setenv("REDIS_URL", "redis://envhost:7001/9", 1);
    setenv("RRPC_URL", "amqp://rabbit:5673/", 1);
    expect_amqp(NULL, "rabbit", 5673, "guest", "guest", "/", 0, __LINE__);
    setenv("RRPC_URL", "", 1);
    EXPECT_URL(NULL, "envhost", 7001, NULL, NULL, NULL, 9);
    unsetenv("RRPC_URL");
    unsetenv("REDIS_URL");
}

static void test_error_buffer_may_be_null(void)
{
    rrpc__url u;
    CHECK_EQ_INT(rrpc__url_parse(&u, "http://x", NULL, 0), RRPC_EURL);
    rrpc__url_free(&u);
}

static void test_free_leaves_struct_zeroed(void)
{
    rrpc__url u;
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, "redis://a:b@host:1/2", NULL, 0), RRPC_OK))
        return;
    rrpc__url_free(&u);
    CHECK(u.host == NULL && u.password == NULL && u.user == NULL && u.path == NULL);
    rrpc__url_free(&u); /* idempotent */
}

static void describe(const char *url, const char *expected)
{
    rrpc__url u;
    char buf[256];
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, url, NULL, 0), RRPC_OK))
        return;
    CHECK_EQ_STR(rrpc__url_describe(&u, buf, sizeof buf), expected);
    rrpc__url_free(&u);
}

static void test_describe_masks_password(void)
{
    describe("redis://user:hunter2@host:6380/2", "redis://***@host:6380/2");
    describe("redis://:hunter2@host", "redis://***@host:6379/0");
    describe("unix:///tmp/x.sock?password=hunter2&db=3", "unix://***@/tmp/x.sock?db=3");

    rrpc__url u;
    char buf[256];
    if (CHECK_EQ_INT(rrpc__url_parse(&u, "redis://u:hunter2@h", NULL, 0), RRPC_OK)) {
        CHECK(strstr(rrpc__url_describe(&u, buf, sizeof buf), "hunter2") == NULL);
        rrpc__url_free(&u);
    }
}

static void test_describe_without_password(void)
{
    describe("redis://host", "redis://host:6379/0");
    describe("unix:///tmp/x.sock", "unix:///tmp/x.sock?db=0");
}

static void test_describe_truncates_to_buffer(void)
{
    rrpc__url u;
    char buf[8];
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, "redis://a-rather-long-host-name", NULL, 0), RRPC_OK))
        return;
    CHECK_EQ_STR(rrpc__url_describe(&u, buf, sizeof buf), "redis:/");
    rrpc__url_free(&u);
}

/* Regressions: IPv6 trailing junk, bracketed description, '@' in a socket path. */
static void test_url_regressions(void)
{
    rrpc__url u;
    char buf[128];
    CHECK_EQ_INT(rrpc__url_parse(&u, "redis://[::1]junk", NULL, 0), RRPC_EURL);
    CHECK_EQ_INT(rrpc__url_parse(&u, "redis://[::1]:6380", NULL, 0), RRPC_OK);
    CHECK_EQ_STR(rrpc__url_describe(&u, buf, sizeof buf), "redis://[::1]:6380/0");
    rrpc__url_free(&u);
    CHECK_EQ_INT(rrpc__url_parse(&u, "unix:///tmp/a@b.sock", NULL, 0), RRPC_OK);
    CHECK_EQ_STR(u.path, "/tmp/a@b.sock");
    rrpc__url_free(&u);
}

/* ---- redis+sentinel:// and redis+cluster:// ---------------------------- */

static void test_sentinel_url_full(void)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    const char *url = "redis+sentinel://bob:pw@s1:26380,s2,[::1]:26400/mymaster/3"
                      "?sentinel_password=sp%26x&sentinel_user=watch";
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, url, err, sizeof err), RRPC_OK)) {
        fprintf(stderr, "    %s\n", err);
        return;
    }
    CHECK_EQ_INT(u.kind, RRPC__URL_SENTINEL);
    CHECK(u.host == NULL && u.path == NULL);
    CHECK_EQ_STR(u.user, "bob");
    CHECK_EQ_STR(u.password, "pw");
    CHECK_EQ_INT(u.db, 3);
    CHECK_EQ_STR(u.master, "mymaster");
    CHECK_EQ_STR(u.sentinel_password, "sp&x");
    CHECK_EQ_STR(u.sentinel_user, "watch");
    if (CHECK_EQ_INT(u.nnodes, 3)) {
        CHECK_EQ_STR(u.nodes[0].host, "s1");
        CHECK_EQ_INT(u.nodes[0].port, 26380);
        CHECK_EQ_STR(u.nodes[1].host, "s2");
        CHECK_EQ_INT(u.nodes[1].port, 26379); /* the Sentinel default */
        CHECK_EQ_STR(u.nodes[2].host, "::1");
        CHECK_EQ_INT(u.nodes[2].port, 26400);
    }
    rrpc__url copy;
    if (CHECK_EQ_INT(rrpc__url_copy(&copy, &u), RRPC_OK)) {
        CHECK(copy.nodes != u.nodes && copy.master != u.master);
        CHECK_EQ_INT(copy.nnodes, 3);
        CHECK_EQ_STR(copy.nodes[2].host, "::1");
        CHECK_EQ_STR(copy.master, "mymaster");
        CHECK_EQ_STR(copy.sentinel_password, "sp&x");
        rrpc__url_free(&copy);
    }
    rrpc__url_free(&u);
    CHECK(u.nodes == NULL && u.nnodes == 0 && u.master == NULL);
}

static void test_sentinel_url_minimal(void)
{
    rrpc__url u;
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, "redis+sentinel://h/m%2F1", NULL, 0), RRPC_OK))
        return;
    CHECK_EQ_INT(u.nnodes, 1);
    CHECK_EQ_STR(u.master, "m/1");
    CHECK_EQ_INT(u.db, 0);
    CHECK(u.password == NULL && u.user == NULL && u.sentinel_password == NULL);
    rrpc__url_free(&u);
}

static void test_cluster_url(void)
{
    rrpc__url u;
    if (!CHECK_EQ_INT(rrpc__url_parse(&u, "redis+cluster://:pw@a:7000,b,c:7002/", NULL, 0),
                      RRPC_OK))
        return;
    CHECK_EQ_INT(u.kind, RRPC__URL_CLUSTER);
    CHECK_EQ_STR(u.password, "pw");
    CHECK(u.master == NULL && u.host == NULL);
    if (CHECK_EQ_INT(u.nnodes, 3)) {
        CHECK_EQ_STR(u.nodes[0].host, "a");
        CHECK_EQ_INT(u.nodes[0].port, 7000);
        CHECK_EQ_INT(u.nodes[1].port, 6379);
        CHECK_EQ_INT(u.nodes[2].port, 7002);
    }
    rrpc__url_free(&u);
    if (CHECK_EQ_INT(rrpc__url_parse(&u, "redis+cluster://a/0", NULL, 0), RRPC_OK))
        rrpc__url_free(&u);
}

static void test_rejects_bad_multi_node_urls(void)
{
    EXPECT_BAD_URL("redis+sentinel://h1,h2", "master's name");
    EXPECT_BAD_URL("redis+sentinel://h1,h2/", "master's name");
    EXPECT_BAD_URL("redis+sentinel://h1,,h2/m", "empty host");
    EXPECT_BAD_URL("redis+sentinel://h1:0/m", "port");
    EXPECT_BAD_URL("redis+sentinel://h1/m/x", "db");
    EXPECT_BAD_URL("redis+sentinel://h1/m?color=red", "color");
    EXPECT_BAD_URL("redis+cluster://a,b/2", "db 0");
    EXPECT_BAD_URL("redis+cluster://a?db=1", "db 0");
    EXPECT_BAD_URL("redis+cluster://a?sentinel_password=x", "sentinel_password");
    EXPECT_BAD_URL("redis+cluster://a,", "empty host");
    EXPECT_BAD_URL("redis+cluster://[::1,b", "[");
}

static void test_describe_multi_node_urls(void)
{
    describe("redis+sentinel://:hunter2@s1,[::1]:5/mm/2",
             "redis+sentinel://***@s1:26379,[::1]:5/mm/2");
    describe("redis+cluster://a:7000,b", "redis+cluster://a:7000,b:6379");
}

/* ---- issue 9: passwords never reach a message -------------------------------- */

/* Parses URL (which must fail) and checks its message holds none of
 * SECRET and, if given, says HINT. */
static void expect_refused_quietly(const char *url, const char *secret, const char *hint)
{
    rrpc__url u;
    char err[RRPC__ERRMSG_LEN] = "";
    CHECK_EQ_INT(rrpc__url_parse(&u, url, err, sizeof err), RRPC_EURL);
    if (!CHECK(strstr(err, secret) == NULL) || (hint && !CHECK(strstr(err, hint) != NULL)))
        fprintf(stderr, "    url %s: \"%s\"\n", url, err);
    rrpc__url_free(&u);
}

/* An unencoded '@' in a password: userinfo ends at the last '@'. */
static void test_unencoded_at_in_password(void)
{
    EXPECT_URL("redis://:p@ss@host:6380/1", "host", 6380, NULL, NULL, "p@ss", 1);
    EXPECT_URL("redis://bob:s3cr@t@@host", "host", 6379, NULL, "bob", "s3cr@t@", 0);
    EXPECT_URL("redis://@@host", "host", 6379, NULL, NULL, "@", 0);
    EXPECT_URL("unix://:p@ss@/tmp/x.sock", NULL, 6379, "/tmp/x.sock", NULL, "p@ss", 0);
    EXPECT_URL("unix://:pw@/tmp/a@b.sock", NULL, 6379, "/tmp/a@b.sock", NULL, "pw", 0);
    rrpc__url u;
    char buf[256];
    if (CHECK_EQ_INT(rrpc__url_parse(&u, "redis+cluster://:p@ss@a:7000,b", NULL, 0), RRPC_OK)) {
        CHECK_EQ_STR(u.password, "p@ss");
        CHECK_EQ_STR(u.nodes[0].host, "a");
        CHECK(strstr(rrpc__url_describe(&u, buf, sizeof buf), "ss") == NULL);
        rrpc__url_free(&u);
    }
    if (CHECK_EQ_INT(rrpc__url_parse(&u, "redis+sentinel://:p@ss@s1/mm", NULL, 0), RRPC_OK)) {
        CHECK_EQ_STR(u.password, "p@ss");
        CHECK_EQ_STR(u.nodes[0].host, "s1");
        rrpc__url_free(&u);
    }
}

/* A password with an unencoded '/' or '?' cannot be told from a path or a
 * query: refused, saying how to encode, quoting nothing of it. */
static void test_unencoded_slash_or_query_in_password(void)
{
    expect_refused_quietly("redis://u:se/cret@host", "cret", "%40");
    expect_refused_quietly("redis://u:12/cret@host", "cret", "%2F");
    expect_refused_quietly("redis://:12?cr=et@host", "cr", "percent-encode");
    expect_refused_quietly("redis+cluster://u:ab/cd@h1,h2", "cd", "percent-encode");
    expect_refused_quietly("redis+sentinel://u:ab/cd@h1/mm", "cd", "percent-encode");
}

/* Another scheme is quoted with its password masked. */
static void test_other_scheme_is_quoted_redacted(void)
{
    expect_refused_quietly("http://user:hunter2@host:6379", "hunter2", "user:****@host");
    expect_refused_quietly("rdis://:hunter2@host", "hunter2", "rdis://****@host");
    expect_refused_quietly("rdis://hunter2@host", "hunter2", "****@host");
    expect_refused_quietly("user:hunter2@host:6379", "hunter2", "****");
    expect_refused_quietly("rdis://u:p@hunter2@host", "hunter2", "u:****@host");
    expect_refused_quietly("rdis:///s.sock?password=hunter2&db=1", "hunter2",
                           "?password=****&db=1");
    char buf[64];
    CHECK_EQ_STR(rrpc__url_redact("x://h?sentinel_password=pw&user=u", buf, sizeof buf),
                 "x://h?sentinel_password=****&user=u");
    CHECK_EQ_STR(rrpc__url_redact("redis://h", buf, sizeof buf), "redis://h");
    char tiny[6];
    CHECK_EQ_STR(rrpc__url_redact("x://a:hunter2@h", tiny, sizeof tiny), "x://a");
}

int main(void)
{
    test_url_regressions();
    test_host_only_defaults_port_and_db();
    test_host_and_port();
    test_host_port_and_db();
    test_trailing_slash_means_db_zero();
    test_empty_host_means_localhost();
    test_password_without_user();
    test_lone_userinfo_is_the_password();
    test_user_password_port_and_db();
    test_percent_encoded_password_is_decoded();
    test_broken_percent_escape_is_kept_verbatim();
    test_ipv6_literal_with_port();
    test_query_db_on_tcp();
    test_unix_socket();
    test_unix_socket_with_db();
    test_unix_socket_with_password_and_user();
    test_unix_socket_with_userinfo();
    test_null_url_uses_redis_url_env();
    test_null_url_without_env_is_localhost();
    test_explicit_url_ignores_env();
    test_bad_env_url_is_reported();
    test_rejects_other_schemes();
    test_rejects_bad_ports();
    test_rejects_bad_db();
    test_rejects_unterminated_ipv6();
    test_rejects_relative_unix_path();
    test_rejects_bad_query();
    test_rejects_tls();
    test_amqps_query();
    test_error_buffer_may_be_null();
    test_amqp_urls();
    test_rrpc_url_env_first();
    test_free_leaves_struct_zeroed();
    test_describe_masks_password();
    test_describe_without_password();
    test_describe_truncates_to_buffer();
    test_sentinel_url_full();
    test_sentinel_url_minimal();
    test_cluster_url();
    test_rejects_bad_multi_node_urls();
    test_describe_multi_node_urls();
    test_unencoded_at_in_password();
    test_unencoded_slash_or_query_in_password();
    test_other_scheme_is_quoted_redacted();
    return check_report();
}
