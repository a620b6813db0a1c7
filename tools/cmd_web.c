/* cmd_web.c -- `rrpc web`: one HTTP server for Prometheus, health probes
 * and people (docs/OPERATIONS.md).
 *
 * It reads everything from Redis through the public admin API, so one
 * scrape target and one page cover every service and every language's
 * workers.  This file holds the options, the server (libevent's evhttp,
 * already a dependency of librrpc: one event loop, no threads), the
 * routing and the security rules every route shares: the token, CSRF on
 * changes, read-only mode and the headers of every answer.  /metrics is
 * web_metrics.c's, the JSON API web_api.c's; the page's files are built
 * in (cmake/EmbedWeb.cmake).
 */
#include "cli.h"
#include "web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define DEFAULT_LISTEN "127.0.0.1:9464"
#define MAX_BODY       (1 << 20) /* a call console's params, with room to spare */
#define SAMPLE_EVERY_S 10

/* No script, style or image from anywhere but this server, none inline;
 * no framing (clickjacking), no forms posting elsewhere. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                          "form-action 'self'; frame-ancestors 'none'";

static void usage(FILE *out)
{
    fputs("Usage: rrpc web [OPTIONS]\n"
          "\n"
          "Serves Prometheus metrics (/metrics), health probes (/livez, /readyz) and a\n"
          "dashboard (/) for every service registered in Redis.\n"
          "\n"
          "Options:\n",
          out);
    cli_print_connection_options(out);
    fputs("  --listen HOST:PORT where to listen (default: " DEFAULT_LISTEN "; port 0:\n"
          "                     any free port, printed on stderr)\n"
          "  --read-only        show no buttons and refuse every change\n"
          "  --token-file FILE  every page and API needs the token in FILE: as\n"
          "                     'Authorization: Bearer TOKEN', or once as ?token=TOKEN\n"
          "                     in a browser (it sets a cookie)\n"
          "  --history-minutes N  chart history kept in Redis (default: 60)\n"
          "  -h, --help         show this help\n",
          out);
}

/* ---- answers ------------------------------------------------------------------ */

void web_send(struct evhttp_request *req, int code, const char *type, const void *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Content-Security-Policy", csp);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *b = evbuffer_new();
    if (b != NULL && len > 0)
        evbuffer_add(b, body, len);
    const char *reason = code == 200   ? "OK"
                         : code == 303 ? "See Other"
                         : code == 400 ? "Bad Request"
                         : code == 401 ? "Unauthorized"
                         : code == 403 ? "Forbidden"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                         : code == 503 ? "Service Unavailable"
                                       : "Error";
    evhttp_send_reply(req, code, reason, b);
    if (b != NULL)
        evbuffer_free(b);
}

void web_send_json(struct evhttp_request *req, int code, json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    if (text == NULL) {
        web_send(req, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
        return;
    }
    web_send(req, code, "application/json", text, strlen(text));
    free(text);
}

void web_send_error(struct evhttp_request *req, int code, const char *message)
{
    web_send_json(req, code, json_pack("{s:s}", "error", message ? message : "error"));
}

/* ---- security ------------------------------------------------------------------ */

/* Compares in time that depends on the lengths only. */
static int same_secret(const char *a, const char *b, size_t blen)
{
    size_t alen = strlen(a);
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)(a[i % (alen ? alen : 1)] ^ b[i]);
    return diff == 0 && alen == blen;
}

/* The token a request carries: the Authorization header's bearer, else
 * the cookie rrpc_token.  *len gets its length. */
static const char *presented_token(struct evhttp_request *req, size_t *len)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *auth = evhttp_find_header(h, "Authorization");
    if (auth != NULL && strncmp(auth, "Bearer ", 7) == 0) {
        *len = strlen(auth + 7);
        return auth + 7;
    }
    const char *cookie = evhttp_find_header(h, "Cookie");
    for (const char *p = cookie; p != NULL && *p; p++) {
        if ((p == cookie || p[-1] == ' ' || p[-1] == ';') && strncmp(p, "rrpc_token=", 11) == 0) {
            p += 11;
            *len = strcspn(p, ";");
            return p;
        }
    }
    return NULL;
}

/* Nonzero if REQ may go on; otherwise it has been answered.  A browser
 * coming with ?token=T (right) gets the token as an HttpOnly, SameSite
 * cookie and is sent on to the same page without it. */
static int authorized(struct web *w, struct evhttp_request *req, const char *path,
                      const char *query)
{
    if (w->token == NULL)
        return 1;
    size_t len = 0;
    const char *t = presented_token(req, &len);
    if (t != NULL && same_secret(w->token, t, len))
        return 1;
    struct evkeyvalq q = {0};
    if (query != NULL && evhttp_parse_query_str(query, &q) == 0) {
        const char *given = evhttp_find_header(&q, "token");
        int ok = given != NULL && same_secret(w->token, given, strlen(given));
        evhttp_clear_headers(&q);
        if (ok && evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
            char cookie[1024];
            snprintf(cookie, sizeof cookie, "rrpc_token=%s; Path=/; HttpOnly; SameSite=Strict",
                     w->token);
            struct evkeyvalq *h = evhttp_request_get_output_headers(req);
            evhttp_add_header(h, "Set-Cookie", cookie);
            evhttp_add_header(h, "Location", path);
            web_send(req, 303, "text/plain; charset=utf-8", "", 0);
            return 0;
        }
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Bearer realm=\"rrpc\"");
    web_send_error(req, 401, "a token is needed (--token-file)");
    return 0;
}

/* Nonzero if NAME (a Host header's host, without the port) names this
 * machine's loopback: localhost, 127.x.x.x or [::1]. */
static int loopback_name(const char *name, size_t n)
{
    if ((n == 9 && strncasecmp(name, "localhost", 9) == 0) ||
        (n == 5 && memcmp(name, "[::1]", 5) == 0))
        return 1;
    if (n < 4 || n > 15 || strncmp(name, "127.", 4) != 0)
        return 0;
    for (size_t i = 4; i < n; i++)
        if (name[i] != '.' && (name[i] < '0' || name[i] > '9'))
            return 0;
    return 1;
}

/* On a loopback address, a request must name a loopback host: a web page
 * elsewhere that rebinds its own DNS name to 127.0.0.1 (DNS rebinding)
 * would otherwise be same-origin with this server, read its CSRF token
 * and make changes and calls.  Other listen addresses rely on the token. */
static int host_ok(const struct web *w, struct evhttp_request *req)
{
    if (!w->loopback)
        return 1;
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    if (host == NULL)
        return 1; /* HTTP/1.0 clients (curl -0, probes): no browser sends none */
    const char *end = host[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
    size_t n = end == NULL ? strlen(host) : (size_t)(end - host) + (host[0] == '[');
    return loopback_name(host, n);
}

/* A change must come from our own page: it carries the CSRF token the
 * page read from /api/overview (a cross-site page cannot read it), and a
 * browser's Origin, if sent, names this server. */
static int csrf_ok(struct web *w, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *given = evhttp_find_header(h, "X-RRPC-CSRF");
    if (given == NULL || !same_secret(w->csrf, given, strlen(given)))
        return 0;
    const char *origin = evhttp_find_header(h, "Origin");
    const char *host = evhttp_find_header(h, "Host");
    if (origin != NULL && strcmp(origin, "null") != 0) {
        const char *o = strstr(origin, "://");
        if (host == NULL || o == NULL || strcmp(o + 3, host) != 0)
            return 0;
    }
    return 1;
}

/* ---- routing ------------------------------------------------------------------- */

static const struct web_asset *asset(const char *path)
{
    for (const struct web_asset *a = rrpc_web_assets; a->path != NULL; a++)
        if (strcmp(a->path, path) == 0)
            return a;
    return NULL;
}

static void send_asset(struct evhttp_request *req, const struct web_asset *a)
{
    web_send(req, 200, a->type, a->data, a->len);
}

static void handle_post(struct web *w, struct evhttp_request *req, const char *path)
{
    if (strncmp(path, "/api/", 5) != 0) {
        web_send_error(req, 405, "only the API takes POST");
        return;
    }
    if (w->read_only) {
        web_send_error(req, 403, "read-only: changes are refused");
        return;
    }
    if (!csrf_ok(w, req)) {
        web_send_error(req, 403, "missing or wrong X-RRPC-CSRF header, or a foreign Origin");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    web_api_post(w, req, path + 4, body, len);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct web *w = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *raw = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    char *path = evhttp_uridecode(raw && *raw ? raw : "/", 0, NULL);
    if (path == NULL) {
        web_send_error(req, 400, "bad path");
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!host_ok(w, req)) {
        web_send_error(req, 421, "this server answers to localhost, 127.0.0.1 and [::1] only");
        goto done;
    }
    if (!authorized(w, req, path, query))
        goto done;
    if (cmd == EVHTTP_REQ_POST) {
        handle_post(w, req, path);
        goto done;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        web_send_error(req, 405, "method not allowed");
        goto done;
    }
    const struct web_asset *a;
    if (strcmp(path, "/livez") == 0)
        web_send_json(req, 200, json_pack("{s:s}", "status", "ok"));
    else if (strcmp(path, "/readyz") == 0) {
        struct evkeyvalq q = {0};
        const char *service = NULL;
        if (query != NULL && evhttp_parse_query_str(query, &q) == 0)
            service = evhttp_find_header(&q, "service");
        web_readyz(w, req, service);
        evhttp_clear_headers(&q);
    } else if (strcmp(path, "/metrics") == 0)
        web_metrics(w, req);
    else if (strncmp(path, "/api/", 5) == 0)
        web_api_get(w, req, path + 4);
    else if (strcmp(path, "/") == 0 || strncmp(path, "/services/", 10) == 0)
        send_asset(req, asset("/static/index.html"));
    else if ((a = asset(path)) != NULL)
        send_asset(req, a);
    else
        web_send_error(req, 404, "not found");
done:
    free(path);
}

/* ---- the program ---------------------------------------------------------------- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopexit(arg, NULL);
}

static void on_sample(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    web_sample(arg);
}

/* Reads the token: the file's first line, without its line end. */
static char *read_token(const char *prog, const char *file)
{
    FILE *f = fopen(file, "r");
    char line[512];
    if (f == NULL) {
        fprintf(stderr, "%s: cannot read %s: %s\n", prog, file, strerror(errno));
        return NULL;
    }
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    if (got != NULL)
        line[strcspn(line, "\r\n")] = '\0';
    if (got == NULL || strlen(line) < 16 || strspn(line, "\t ") > 0 || strchr(line, ';')) {
        fprintf(stderr,
                "%s: %s must hold a token of at least 16 characters on its first line "
                "(no leading blank, no ';')\n",
                prog, file);
        return NULL;
    }
    return strdup(line);
}

/* 32 random bytes as hex, from /dev/urandom. */
static int random_hex(char *out, size_t len)
{
    unsigned char b[32];
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(b, 1, sizeof b, f) != sizeof b) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    for (size_t i = 0; i < sizeof b && 2 * i + 2 < len; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

static int split_listen(const char *prog, const char *listen, char *host, size_t hlen,
                        unsigned short *port)
{
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    long p = colon ? strtol(colon + 1, &end, 10) : -1;
    size_t n = colon ? (size_t)(colon - listen) : 0;
    if (colon == NULL || end == NULL || *end != '\0' || p < 0 || p > 65535 || n == 0 || n >= hlen) {
        cli_usage_error(prog, "--listen wants HOST:PORT, not '%s'", listen);
        return -1;
    }
    memcpy(host, listen, n);
    host[n] = '\0';
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') { /* [::1]:9464 */
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    *port = (unsigned short)p;
    return 0;
}

static int bound_port(struct evhttp_bound_socket *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

enum { OPT_LISTEN = CLI_OPT_FIRST_FREE, OPT_READ_ONLY, OPT_TOKEN_FILE, OPT_HISTORY };

static const struct option options[] = {
    {"redis", required_argument, NULL, CLI_OPT_REDIS},
    {"url", required_argument, NULL, CLI_OPT_REDIS},
    {"prefix", required_argument, NULL, CLI_OPT_PREFIX},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"read-only", no_argument, NULL, OPT_READ_ONLY},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"history-minutes", required_argument, NULL, OPT_HISTORY},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct web_args {
    const char *url, *prefix, *listen, *token_file;
    int read_only, keep_min;
};

static int parse(int argc, char **argv, struct web_args *a)
{
    const char *prog = argv[0];
    int opt;
    *a = (struct web_args){.listen = DEFAULT_LISTEN, .keep_min = 60};
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case CLI_OPT_REDIS: a->url = optarg; break;
        case CLI_OPT_PREFIX: a->prefix = optarg; break;
        case OPT_LISTEN: a->listen = optarg; break;
        case OPT_READ_ONLY: a->read_only = 1; break;
        case OPT_TOKEN_FILE: a->token_file = optarg; break;
        case OPT_HISTORY: {
            uint64_t n;
            if (cli_parse_count(optarg, 1, 10080, &n) != 0)
                return cli_usage_error(prog, "--history-minutes wants 1 to 10080, not '%s'",
                                       optarg);
            a->keep_min = (int)n;
            break;
        }
        case 'h': usage(stdout); return -1;
        default: fprintf(stderr, "Try '%s --help'.\n", prog); return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return cli_usage_error(prog, "unexpected argument '%s'", argv[optind]);
    return CLI_EXIT_OK;
}

static int serve(const char *prog, struct web *w, const char *listen)
{
    char host[256];
    unsigned short port;
    if (split_listen(prog, listen, host, sizeof host, &port) != 0)
        return CLI_EXIT_USAGE;
    w->loopback = strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
                  strcasecmp(host, "localhost") == 0;
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (http == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        if (base)
            event_base_free(base);
        return CLI_EXIT_INTERNAL;
    }
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_max_body_size(http, MAX_BODY);
    evhttp_set_timeout(http, 30);
    evhttp_set_gencb(http, handle, w);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(http, host, port);
    int status = CLI_EXIT_OK;
    if (s == NULL) {
        fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, listen, strerror(errno));
        status = CLI_EXIT_CONNECT;
    } else {
        int bound = bound_port(s);
        fprintf(stderr, "%s: listening on http://%s%s%s:%d/%s%s\n", prog,
                strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", bound,
                w->read_only ? " (read-only)" : "", w->token ? " (token needed)" : "");
        struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
        struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
        struct event *sampler = event_new(base, -1, EV_PERSIST, on_sample, w);
        struct timeval every = {SAMPLE_EVERY_S, 0};
        event_add(sigint, NULL);
        event_add(sigterm, NULL);
        event_add(sampler, &every);
        web_sample(w); /* the first sample at once */
        event_base_dispatch(base);
        event_free(sigint);
        event_free(sigterm);
        event_free(sampler);
    }
    evhttp_free(http);
    event_base_free(base);
    return status;
}

int cmd_web(int argc, char **argv)
{
    const char *prog = argv[0];
    struct web_args a;
    int status = parse(argc, argv, &a);
    if (status != CLI_EXIT_OK)
        return status < 0 ? CLI_EXIT_OK : status;
    struct web w = {.read_only = a.read_only, .keep_min = a.keep_min};
    if (a.token_file != NULL && (w.token = read_token(prog, a.token_file)) == NULL)
        return CLI_EXIT_USAGE;
    if (random_hex(w.csrf, sizeof w.csrf) != 0) {
        fprintf(stderr, "%s: cannot read /dev/urandom\n", prog);
        free(w.token);
        return CLI_EXIT_INTERNAL;
    }
    rrpc_client_options_init(&w.copts);
    w.copts.url = a.url;
    w.copts.key_prefix = a.prefix;
    char err[256] = "";
    int rc = rrpc_admin_open(&w.admin, &w.copts, err, sizeof err);
    if (rc != RRPC_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(w.token);
        return rc == RRPC_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_CONNECT;
    }
    status = serve(prog, &w, a.listen);
    rrpc_admin_close(w.admin);
    rrpc_client_close(w.client);
    free(w.rates);
    free(w.token);
    return status;
}
