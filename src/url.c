/* url.c -- Redis URLs, parsed without any I/O.
 *
 * The accepted forms follow redis-cli and redis-rb so that the REDIS_URL a
 * team already has works unchanged:
 *   redis://[[user]:password@]host[:port][/db]
 *   unix://[[user]:password@]/path/to.sock[?db=N][&password=P][&user=U]
 * User and password may be percent-encoded.  NULL means $REDIS_URL, then
 * redis://127.0.0.1:6379.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"

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
            out[j++] = (char)(hexval((unsigned char)s[i + 1]) * 16 +
                              hexval((unsigned char)s[i + 2]));
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

/* Splits "[user]:password@" off the front of *p (up to END). */
static int parse_userinfo(rrpc__url *u, const char **p, const char *end)
{
    const char *at = memchr(*p, '@', (size_t)(end - *p));
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
        } else {
            return rrpc__fail(err, errlen, RRPC_EURL, "unknown URL parameter '%.*s'", (int)kn,
                              q);
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

static int parse_host_port(rrpc__url *u, const char *p, const char *end, char *err,
                           size_t errlen)
{
    const char *host_end;
    const char *port_at = NULL;
    if (*p == '[') { /* IPv6 literal */
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (close == NULL)
            return rrpc__fail(err, errlen, RRPC_EURL, "unterminated '[' in URL host");
        u->host = decode_dup(p + 1, (size_t)(close - p - 1));
        host_end = close + 1;
        if (host_end < end && *host_end != ':')
            return rrpc__fail(err, errlen, RRPC_EURL, "unexpected text after ']' in URL host");
        if (host_end < end)
            port_at = host_end + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        host_end = colon ? colon : end;
        u->host = decode_dup(p, (size_t)(host_end - p));
        if (colon)
            port_at = colon + 1;
    }
    if (u->host == NULL)
        return RRPC_ENOMEM;
    if (u->host[0] == '\0') {
        free(u->host);
        u->host = strdup("127.0.0.1");
    }
    if (port_at && parse_int(port_at, (size_t)(end - port_at), 1, 65535, &u->port) != 0)
        return rrpc__fail(err, errlen, RRPC_EURL, "bad port in URL");
    return RRPC_OK;
}

static int parse_tcp(rrpc__url *u, const char *p, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    parse_userinfo(u, &p, auth_end);
    int rc = parse_host_port(u, p, auth_end, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    if (slash && slash + 1 < end &&
        parse_int(slash + 1, (size_t)(end - slash - 1), 0, 1 << 20, &u->db) != 0)
        return rrpc__fail(err, errlen, RRPC_EURL, "bad db number in URL");
    return q ? parse_query(u, q + 1, err, errlen) : RRPC_OK;
}

int rrpc__url_parse(rrpc__url *out, const char *url, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (url == NULL || url[0] == '\0')
        url = getenv("REDIS_URL");
    if (url == NULL || url[0] == '\0')
        url = DEFAULT_URL;
    int rc;
    if (strncmp(url, "unix://", 7) == 0)
        rc = parse_unix(out, url + 7, err, errlen);
    else if (strncmp(url, "redis://", 8) == 0)
        rc = parse_tcp(out, url + 8, err, errlen);
    else if (strncmp(url, "rediss://", 9) == 0)
        rc = rrpc__fail(err, errlen, RRPC_EURL,
                        "rediss:// (TLS) needs a TLS tunnel with this hiredis; see "
                        "docs/SECURITY.md");
    else
        rc = rrpc__fail(err, errlen, RRPC_EURL,
                        "URL must start with redis:// or unix:// (got '%.40s')", url);
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
    memset(url, 0, sizeof *url);
}

const char *rrpc__url_describe(const rrpc__url *url, char *buf, size_t len)
{
    const char *auth = url->password ? "***@" : "";
    if (url->path)
        snprintf(buf, len, "unix://%s%s?db=%d", auth, url->path, url->db);
    else if (strchr(url->host, ':') != NULL) /* IPv6 needs its brackets back */
        snprintf(buf, len, "redis://%s[%s]:%d/%d", auth, url->host, url->port, url->db);
    else
        snprintf(buf, len, "redis://%s%s:%d/%d", auth, url->host, url->port, url->db);
    return buf;
}
