/* url.c -- broker URLs (Redis and AMQP), parsed without any I/O.
 *
 * The accepted forms follow redis-cli and redis-rb so that the REDIS_URL a
 * team already has works unchanged:
 *   redis://[[user]:password@]host[:port][/db]
 *   unix://[[user]:password@]/path/to.sock[?db=N][&password=P][&user=U]
 * and, to grow past one machine, two forms that name several nodes:
 *   redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]
 *       [?sentinel_password=P][&sentinel_user=U]
 *       (Sentinel port 26379 by default; user and password are the
 *       master's, the sentinel_ ones the Sentinels' own, if they need AUTH)
 *   redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]
 *       (seed nodes, port 6379 by default; a Cluster has only db 0)
 * and RabbitMQ's (the AMQP transport, src/amqp/):
 *   amqp://[user[:password]@]host[:port][/vhost]
 *       (guest:guest@localhost:5672 by default; the vhost percent-decoded,
 *       "/" when the path is empty, so "%2F" or nothing both name "/")
 *   amqps://...[?cacertfile=F][&certfile=F&keyfile=F][&verify=verify_none]
 *       the same with TLS (port 5671), the query's names RabbitMQ's own;
 *       both take ?heartbeat=S (RabbitMQ's URI spec: the AMQP heartbeat
 *       asked for at login, 0 for none)
 * User and password may be percent-encoded.  NULL means $RRPC_URL, then
 * $REDIS_URL, then redis://127.0.0.1:6379.
 *
 * A password must never reach a message (docs/SECURITY.md): the userinfo
 * ends at the LAST '@' before the path, as RFC 3986 parsers do in practice,
 * so an unencoded '@' in a password cannot make the rest of it a host name
 * that "cannot connect to ..." would print; an '@' left after the host
 * (a password's unencoded '/' or '?') is refused with a message that says
 * how to percent-encode, and quotes nothing of the URL; a URL of another
 * scheme is quoted with its password masked (rrpc__url_redact).
 */
#define _POSIX_C_SOURCE 200809L
#include "core/internal.h"
#include "core/url.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"
#define ENCODE_HINT                                                                                \
    "percent-encode '@', ':', '/', '?' and '#' in a user name or password (%40, %3A, %2F, "        \
    "%3F, %23)"

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* A new, percent-decoded copy of s[0..n). */
static char *decode_dup(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
            hexval((unsigned char)s[i + 2]) >= 0) {
            out[j++] =
                (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return out;
}

static int parse_int(const char *s, size_t n, int min, int max, int *out)
{
    if (n == 0 || n > 9)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* The last C in s[0..n), or NULL. */
static const char *last_char(const char *s, size_t n, char c)
{
    while (n > 0)
        if (s[--n] == c)
            return s + n;
    return NULL;
}

/* Splits "[user]:password@" off the front of *p (up to END): up to the
 * last '@', so that "redis://:p@ss@host" is password "p@ss" on "host". */
static int parse_userinfo(rrpc__url *u, const char **p, const char *end)
{
    const char *at = last_char(*p, (size_t)(end - *p), '@');
    if (at == NULL)
        return 0;
    const char *colon = memchr(*p, ':', (size_t)(at - *p));
    if (colon == NULL) {
        /* redis-rb treats a lone userinfo as the password. */
        u->password = decode_dup(*p, (size_t)(at - *p));
    } else {
        if (colon > *p)
            u->user = decode_dup(*p, (size_t)(colon - *p));
        u->password = decode_dup(colon + 1, (size_t)(at - colon - 1));
    }
    *p = at + 1;
    return 0;
}

static int parse_query(rrpc__url *u, const char *q, char *err, size_t errlen)
{
    while (*q != '\0') {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', n);
        if (eq == NULL)
            return rrpc__fail(err, errlen, RRPC_EURL, "query item without '=' in URL");
        size_t kn = (size_t)(eq - q), vn = n - kn - 1;
        if (kn == 2 && strncmp(q, "db", 2) == 0) {
            if (parse_int(eq + 1, vn, 0, 1 << 20, &u->db) != 0)
                return rrpc__fail(err, errlen, RRPC_EURL, "bad db number in URL");
        } else if (kn == 8 && strncmp(q, "password", 8) == 0) {
            free(u->password);
            u->password = decode_dup(eq + 1, vn);
        } else if (kn == 4 && strncmp(q, "user", 4) == 0) {
            free(u->user);
            u->user = decode_dup(eq + 1, vn);
        } else if (u->kind == RRPC__URL_SENTINEL && kn == 17 &&
                   strncmp(q, "sentinel_password", 17) == 0) {
            free(u->sentinel_password);
            u->sentinel_password = decode_dup(eq + 1, vn);
        } else if (u->kind == RRPC__URL_SENTINEL && kn == 13 &&
                   strncmp(q, "sentinel_user", 13) == 0) {
            free(u->sentinel_user);
            u->sentinel_user = decode_dup(eq + 1, vn);
        } else if (memchr(q, '@', n) != NULL) {
            /* Most likely the tail of a password cut at an unencoded '?':
             * quote none of it. */
            return rrpc__fail(err, errlen, RRPC_EURL, "unexpected '@' in the URL's query: %s",
                              ENCODE_HINT);
        } else {
            return rrpc__fail(err, errlen, RRPC_EURL, "unknown URL parameter '%.*s'", (int)kn, q);
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return RRPC_OK;
}

static int parse_unix(rrpc__url *u, const char *p, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p)); /* '@' may occur in the path */
    parse_userinfo(u, &p, slash ? slash : end);
    if (p >= end || *p != '/')
        return rrpc__fail(err, errlen, RRPC_EURL, "unix URL needs an absolute socket path");
    u->path = decode_dup(p, (size_t)(end - p));
    if (u->path == NULL)
        return RRPC_ENOMEM;
    return q ? parse_query(u, q + 1, err, errlen) : RRPC_OK;
}

/* Reads "host[:port]" or "[v6]:port" from p..end into *host and *port. */
static int parse_host_port(char **host, int *port, const char *p, const char *end, char *err,
                           size_t errlen)
{
    const char *host_end;
    const char *port_at = NULL;
    if (*p == '[') { /* IPv6 literal */
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (close == NULL)
            return rrpc__fail(err, errlen, RRPC_EURL, "unterminated '[' in URL host");
        *host = decode_dup(p + 1, (size_t)(close - p - 1));
        host_end = close + 1;
        if (host_end < end && *host_end != ':')
            return rrpc__fail(err, errlen, RRPC_EURL, "unexpected text after ']' in URL host");
        if (host_end < end)
            port_at = host_end + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        host_end = colon ? colon : end;
        *host = decode_dup(p, (size_t)(host_end - p));
        if (colon)
            port_at = colon + 1;
    }
    if (*host == NULL)
        return RRPC_ENOMEM;
    if (*host[0] == '\0') {
        free(*host);
        *host = strdup("127.0.0.1");
    }
    if (port_at && parse_int(port_at, (size_t)(end - port_at), 1, 65535, port) != 0)
        return rrpc__fail(err, errlen, RRPC_EURL, "bad port in URL");
    return RRPC_OK;
}

/* An '@' in the path (P..END) of a redis:// or multi-node URL is what is
 * left of a password with an unencoded '/' or '?' (its head was taken for
 * the host): refused before that "host" can be printed. */
static int check_no_at(const char *p, const char *end, char *err, size_t errlen)
{
    if (p < end && memchr(p, '@', (size_t)(end - p)) != NULL)
        return rrpc__fail(err, errlen, RRPC_EURL, "unexpected '@' after the URL's host: %s",
                          ENCODE_HINT);
    return RRPC_OK;
}

static int parse_tcp(rrpc__url *u, const char *p, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    parse_userinfo(u, &p, auth_end);
    int rc = check_no_at(auth_end, end, err, errlen);
    if (rc == RRPC_OK)
        rc = parse_host_port(&u->host, &u->port, p, auth_end, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if (slash && slash + 1 < end &&
        parse_int(slash + 1, (size_t)(end - slash - 1), 0, 1 << 20, &u->db) != 0)
        return rrpc__fail(err, errlen, RRPC_EURL, "bad db number in URL");
    return q ? parse_query(u, q + 1, err, errlen) : RRPC_OK;
}

/* Splits the comma-separated node list p..end into u->nodes. */
static int parse_nodes(rrpc__url *u, const char *p, const char *end, int default_port, char *err,
                       size_t errlen)
{
    size_t n = 1;
    for (const char *s = p; s < end; s++)
        n += *s == ',';
    u->nodes = calloc(n, sizeof *u->nodes);
    if (u->nodes == NULL)
        return RRPC_ENOMEM;
    while (u->nnodes < n) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        if (item_end == p)
            return rrpc__fail(err, errlen, RRPC_EURL, "empty host in the URL's node list");
        rrpc__addr *a = &u->nodes[u->nnodes++];
        a->port = default_port;
        int rc = parse_host_port(&a->host, &a->port, p, item_end, err, errlen);
        if (rc != RRPC_OK)
            return rc;
        p = item_end + 1;
    }
    return RRPC_OK;
}

/* The path of a Sentinel URL: "master[/db]"; of a Cluster URL: "" or "0". */
static int parse_multi_path(rrpc__url *u, const char *p, const char *end, char *err, size_t errlen)
{
    if (u->kind == RRPC__URL_CLUSTER) {
        int db = 0;
        if (p < end && (parse_int(p, (size_t)(end - p), 0, 0, &db) != 0))
            return rrpc__fail(err, errlen, RRPC_EURL, "a Redis Cluster has only db 0");
        return RRPC_OK;
    }
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *name_end = slash ? slash : end;
    if (name_end == p)
        return rrpc__fail(err, errlen, RRPC_EURL,
                          "Sentinel URL needs the master's name: redis+sentinel://host/NAME");
    u->master = decode_dup(p, (size_t)(name_end - p));
    if (u->master == NULL)
        return RRPC_ENOMEM;
    if (slash && slash + 1 < end &&
        parse_int(slash + 1, (size_t)(end - slash - 1), 0, 1 << 20, &u->db) != 0)
        return rrpc__fail(err, errlen, RRPC_EURL, "bad db number in URL");
    return RRPC_OK;
}

/* One item KEY=VALUE (N bytes) of an amqps:// query into U: RabbitMQ's
 * names for the TLS settings, so that one URL serves every peer. */
static int parse_tls_item(rrpc__url *u, const char *item, size_t n, char *err, size_t errlen)
{
    const char *eq = memchr(item, '=', n);
    if (eq == NULL)
        return rrpc__fail(err, errlen, RRPC_EURL, "query item without '=' in URL");
    size_t kn = (size_t)(eq - item), vn = n - kn - 1;
    char **field = NULL;
    if (kn == 10 && strncmp(item, "cacertfile", 10) == 0)
        field = &u->tls_cacert;
    else if (kn == 8 && strncmp(item, "certfile", 8) == 0)
        field = &u->tls_cert;
    else if (kn == 7 && strncmp(item, "keyfile", 7) == 0)
        field = &u->tls_key;
    else if (kn == 6 && strncmp(item, "verify", 6) == 0) {
        if (vn == 11 && strncmp(eq + 1, "verify_peer", 11) == 0)
            u->tls_verify_none = 0;
        else if (vn == 11 && strncmp(eq + 1, "verify_none", 11) == 0)
            u->tls_verify_none = 1;
        else
            return rrpc__fail(err, errlen, RRPC_EURL,
                              "verify= takes verify_peer or verify_none in URL");
        return RRPC_OK;
    } else
        return rrpc__fail(err, errlen, RRPC_EURL,
                          "unknown URL parameter '%.*s' (amqps:// takes cacertfile, certfile, "
                          "keyfile, verify and heartbeat)",
                          (int)kn, item);
    free(*field);
    *field = decode_dup(eq + 1, vn);
    return *field != NULL ? RRPC_OK : RRPC_ENOMEM;
}

/* One item of an amqp:// or amqps:// query (N bytes): ?heartbeat=S for
 * both (RabbitMQ's URI spec; seconds, 0..65535 as AMQP's tune has it),
 * the TLS settings for amqps:// only. */
static int parse_amqp_item(rrpc__url *u, const char *item, size_t n, char *err, size_t errlen)
{
    static const char hb[] = "heartbeat=";
    size_t hn = sizeof hb - 1;
    if (n >= hn && strncmp(item, hb, hn) == 0) {
        if (parse_int(item + hn, n - hn, 0, 65535, &u->heartbeat) != 0)
            return rrpc__fail(err, errlen, RRPC_EURL,
                              "heartbeat= takes seconds, 0 (none) to 65535, in URL");
        return RRPC_OK;
    }
    if (!u->tls)
        return rrpc__fail(err, errlen, RRPC_EURL,
                          "amqp:// URLs take only heartbeat= (the TLS parameters are for "
                          "amqps://)");
    return parse_tls_item(u, item, n, err, errlen);
}

/* The query of an amqp:// or amqps:// URL (after its '?'). */
static int parse_amqp_query(rrpc__url *u, const char *q, char *err, size_t errlen)
{
    while (*q != '\0') {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        int rc = parse_amqp_item(u, q, n, err, errlen);
        if (rc != RRPC_OK)
            return rc;
        q += n;
        if (*q == '&')
            q++;
    }
    return RRPC_OK;
}

/* amqp:// and amqps://: one host, then the vhost; amqps:// may end with a
 * query of TLS settings. */
static int parse_amqp(rrpc__url *u, const char *p, char *err, size_t errlen)
{
    u->kind = RRPC__URL_AMQP;
    u->port = u->tls ? 5671 : 5672;
    u->heartbeat = -1; /* not given: the transport's default */
    const char *q = strpbrk(p, "?#");
    if (q != NULL) {
        const char *at = strrchr(p, '@');
        if (at != NULL && at > q) /* a password's unencoded '?': quote none of it */
            return rrpc__fail(err, errlen, RRPC_EURL, "unexpected '@' in the URL's query: %s",
                              ENCODE_HINT);
        if (*q == '#')
            return rrpc__fail(err, errlen, RRPC_EURL, "amqp:// URLs take no fragment");
    }
    const char *end = q ? q : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    parse_userinfo(u, &p, auth_end);
    int rc = check_no_at(auth_end, end, err, errlen);
    if (rc == RRPC_OK && p == auth_end)
        u->host = strdup("localhost");
    else if (rc == RRPC_OK)
        rc = parse_host_port(&u->host, &u->port, p, auth_end, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if (u->user == NULL)
        u->user = strdup("guest");
    if (u->password == NULL)
        u->password = strdup("guest");
    u->vhost =
        slash && slash + 1 < end ? decode_dup(slash + 1, (size_t)(end - slash - 1)) : strdup("/");
    if (u->host == NULL || u->user == NULL || u->password == NULL || u->vhost == NULL)
        return RRPC_ENOMEM;
    return q ? parse_amqp_query(u, q + 1, err, errlen) : RRPC_OK;
}

/* redis+sentinel:// and redis+cluster://: several nodes, then a path. */
static int parse_multi(rrpc__url *u, const char *p, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *nodes_end = slash ? slash : end;
    parse_userinfo(u, &p, nodes_end);
    int default_port = u->kind == RRPC__URL_SENTINEL ? 26379 : 6379;
    int rc = check_no_at(nodes_end, end, err, errlen);
    if (rc == RRPC_OK)
        rc = parse_nodes(u, p, nodes_end, default_port, err, errlen);
    if (rc == RRPC_OK)
        rc = parse_multi_path(u, slash ? slash + 1 : end, end, err, errlen);
    if (rc == RRPC_OK && q)
        rc = parse_query(u, q + 1, err, errlen);
    if (rc == RRPC_OK && u->kind == RRPC__URL_CLUSTER && u->db != 0)
        rc = rrpc__fail(err, errlen, RRPC_EURL, "a Redis Cluster has only db 0");
    return rc;
}

int rrpc__url_parse(rrpc__url *out, const char *url, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (url == NULL || url[0] == '\0')
        url = getenv("RRPC_URL");
    if (url == NULL || url[0] == '\0')
        url = getenv("REDIS_URL");
    if (url == NULL || url[0] == '\0')
        url = DEFAULT_URL;
    int rc;
    if (strncmp(url, "unix://", 7) == 0)
        rc = parse_unix(out, url + 7, err, errlen);
    else if (strncmp(url, "redis://", 8) == 0)
        rc = parse_tcp(out, url + 8, err, errlen);
    else if (strncmp(url, "redis+sentinel://", 17) == 0) {
        out->kind = RRPC__URL_SENTINEL;
        rc = parse_multi(out, url + 17, err, errlen);
    } else if (strncmp(url, "redis+cluster://", 16) == 0) {
        out->kind = RRPC__URL_CLUSTER;
        rc = parse_multi(out, url + 16, err, errlen);
    } else if (strncmp(url, "amqp://", 7) == 0)
        rc = parse_amqp(out, url + 7, err, errlen);
    else if (strncmp(url, "amqps://", 8) == 0) {
        out->tls = 1;
        rc = parse_amqp(out, url + 8, err, errlen);
    } else if (strncmp(url, "rediss://", 9) == 0)
        rc = rrpc__fail(err, errlen, RRPC_EURL,
                        "rediss:// (TLS) needs a TLS tunnel with this hiredis; see "
                        "docs/SECURITY.md");
    else {
        char shown[64];
        rc = rrpc__fail(err, errlen, RRPC_EURL,
                        "URL must start with redis://, unix://, redis+sentinel://, "
                        "redis+cluster:// or amqp:// (got '%s')",
                        rrpc__url_redact(url, shown, sizeof shown));
    }
    if (rc != RRPC_OK)
        rrpc__url_free(out);
    return rc;
}

void rrpc__url_free(rrpc__url *url)
{
    free(url->host);
    free(url->path);
    free(url->user);
    free(url->password);
    for (size_t i = 0; i < url->nnodes; i++)
        free(url->nodes[i].host);
    free(url->nodes);
    free(url->master);
    free(url->sentinel_user);
    free(url->sentinel_password);
    free(url->vhost);
    free(url->tls_cacert);
    free(url->tls_cert);
    free(url->tls_key);
    memset(url, 0, sizeof *url);
}

/* Copies *s into *d unless it is NULL; clears *ok if memory ran out. */
static void dup_into(char **d, const char *s, int *ok)
{
    *d = s ? strdup(s) : NULL;
    if (s && *d == NULL)
        *ok = 0;
}

int rrpc__url_copy(rrpc__url *dst, const rrpc__url *src)
{
    int ok = 1;
    *dst = *src;
    dup_into(&dst->host, src->host, &ok);
    dup_into(&dst->path, src->path, &ok);
    dup_into(&dst->user, src->user, &ok);
    dup_into(&dst->password, src->password, &ok);
    dup_into(&dst->master, src->master, &ok);
    dup_into(&dst->sentinel_user, src->sentinel_user, &ok);
    dup_into(&dst->sentinel_password, src->sentinel_password, &ok);
    dup_into(&dst->vhost, src->vhost, &ok);
    dup_into(&dst->tls_cacert, src->tls_cacert, &ok);
    dup_into(&dst->tls_cert, src->tls_cert, &ok);
    dup_into(&dst->tls_key, src->tls_key, &ok);
    dst->nodes = NULL;
    dst->nnodes = 0;
    if (src->nnodes > 0) {
        dst->nodes = calloc(src->nnodes, sizeof *dst->nodes);
        ok &= dst->nodes != NULL;
        for (size_t i = 0; dst->nodes && i < src->nnodes; i++) {
            dup_into(&dst->nodes[i].host, src->nodes[i].host, &ok);
            dst->nodes[i].port = src->nodes[i].port;
            dst->nnodes++;
        }
    }
    if (!ok) {
        rrpc__url_free(dst);
        return RRPC_ENOMEM;
    }
    return RRPC_OK;
}

/* Appends "host:port" (IPv6 in brackets) for each node, comma-separated. */
static void describe_nodes(const rrpc__url *url, char *buf, size_t len)
{
    size_t used = strlen(buf);
    for (size_t i = 0; i < url->nnodes && used < len; i++) {
        const rrpc__addr *a = &url->nodes[i];
        int v6 = strchr(a->host, ':') != NULL;
        snprintf(buf + used, len - used, "%s%s%s%s:%d", i ? "," : "", v6 ? "[" : "", a->host,
                 v6 ? "]" : "", a->port);
        used += strlen(buf + used);
    }
}

const char *rrpc__url_describe(const rrpc__url *url, char *buf, size_t len)
{
    const char *auth = url->password ? "***@" : "";
    if (url->kind == RRPC__URL_AMQP) {
        /* The vhost as given ("/" shown as "%2F", as the URL must say it). */
        int v6 = strchr(url->host, ':') != NULL;
        snprintf(buf, len, "amqp%s://%s%s%s%s%s:%d/%s", url->tls ? "s" : "",
                 url->user ? url->user : "",
                 url->password ? ":***@"
                 : url->user   ? "@"
                               : "",
                 v6 ? "[" : "", url->host, v6 ? "]" : "", url->port,
                 strcmp(url->vhost, "/") == 0 ? "%2F" : url->vhost);
    } else if (url->kind != RRPC__URL_DIRECT) {
        int sentinel = url->kind == RRPC__URL_SENTINEL;
        snprintf(buf, len, "redis+%s://%s", sentinel ? "sentinel" : "cluster", auth);
        describe_nodes(url, buf, len);
        size_t used = strlen(buf);
        if (sentinel && used < len)
            snprintf(buf + used, len - used, "/%s/%d", url->master, url->db);
    } else if (url->path)
        snprintf(buf, len, "unix://%s%s?db=%d", auth, url->path, url->db);
    else if (strchr(url->host, ':') != NULL) /* IPv6 needs its brackets back */
        snprintf(buf, len, "redis://%s[%s]:%d/%d", auth, url->host, url->port, url->db);
    else
        snprintf(buf, len, "redis://%s%s:%d/%d", auth, url->host, url->port, url->db);
    return buf;
}

/* Appends N bytes of S to BUF (LEN bytes, *USED so far), truncating. */
static void put(char *buf, size_t len, size_t *used, const char *s, size_t n)
{
    if (*used + 1 >= len)
        return;
    if (n > len - 1 - *used)
        n = len - 1 - *used;
    memcpy(buf + *used, s, n);
    *used += n;
    buf[*used] = '\0';
}

/* Whether the query item KEY (N bytes) names a secret. */
static int secret_key(const char *key, size_t n)
{
    return (n == 8 && strncmp(key, "password", 8) == 0) ||
           (n == 17 && strncmp(key, "sentinel_password", 17) == 0);
}

const char *rrpc__url_redact(const char *url, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    const char *p = url, *scheme = strstr(url, "://");
    if (scheme != NULL) {
        p = scheme + 3;
        put(buf, len, &used, url, (size_t)(p - url));
    }
    /* The authority: up to the first '/', '?' or '#' after its last '@'
     * (an unencoded '/' or '?' in a password ends it sooner: then the
     * whole of it up to that last '@' is masked). */
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL && colon > p)
            put(buf, len, &used, p, (size_t)(colon - p) + 1); /* the user name stays */
        put(buf, len, &used, "****", 4);
        p = at;
    }
    const char *q = strchr(p, '?');
    put(buf, len, &used, p, q ? (size_t)(q - p) : strlen(p));
    while (q != NULL) {
        const char *item = q + 1, *next = strchr(item, '&');
        size_t n = next ? (size_t)(next - item) : strlen(item);
        const char *eq = memchr(item, '=', n);
        put(buf, len, &used, q, 1);
        if (eq != NULL && secret_key(item, (size_t)(eq - item))) {
            put(buf, len, &used, item, (size_t)(eq - item) + 1);
            put(buf, len, &used, "****", 4);
        } else {
            put(buf, len, &used, item, n);
        }
        q = next;
    }
    return buf;
}
