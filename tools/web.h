/* web.h -- what the parts of `rrpc web` share (cmd_web.c: options, the
 * HTTP server, security; web_metrics.c: /metrics; web_api.c: the JSON API
 * and the chart history).
 *
 * One event loop serves everything; the admin and client handles are used
 * from it only, so none of this is shared between threads.
 */
#ifndef RRPC_TOOLS_WEB_H
#define RRPC_TOOLS_WEB_H

#include <rrpc/rrpc.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stddef.h>

/* A file of tools/web/, embedded at build time (cmake/EmbedWeb.cmake). */
struct web_asset {
    const char *path; /* "/static/<name>" */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
};
extern const struct web_asset rrpc_web_assets[]; /* ends with a NULL path */

/* The last rates the sampler measured for one service. */
struct web_rate {
    char service[128];
    long long calls, errors; /* totals at the last sample */
    double at;               /* monotonic seconds of that sample; 0: none */
    double calls_per_s, errors_per_s;
};

struct web {
    rrpc_admin *admin;
    rrpc_client *client; /* the call console's; opened on first use */
    rrpc_client_options copts;
    int read_only;
    char *token;   /* NULL: no token needed */
    char csrf[65]; /* what a POST must carry in X-RRPC-CSRF */
    int keep_min;  /* minutes of chart history kept in Redis */
    int loopback;  /* listening on a loopback address: only loopback Host names */
    struct web_rate *rates;
    size_t nrates;
    long long samples_failed;
};

/* Sends BODY with CODE and the security headers every answer carries. */
void web_send(struct evhttp_request *req, int code, const char *type, const void *body, size_t len);
/* Sends VALUE (stolen) as JSON. */
void web_send_json(struct evhttp_request *req, int code, json_t *value);
/* Sends {"error": MESSAGE} with CODE. */
void web_send_error(struct evhttp_request *req, int code, const char *message);

/* /metrics: the Prometheus text of every service. */
void web_metrics(struct web *w, struct evhttp_request *req);
/* /readyz[?service=NAME]. */
void web_readyz(struct web *w, struct evhttp_request *req, const char *service);
/* GET /api/...: PATH after "/api". */
void web_api_get(struct web *w, struct evhttp_request *req, const char *path);
/* POST /api/...: PATH after "/api", BODY the request's (may be empty). */
void web_api_post(struct web *w, struct evhttp_request *req, const char *path, const char *body,
                  size_t len);
/* Takes one sample of every service for the chart history and the rates. */
void web_sample(struct web *w);
/* The rates of SERVICE, or NULL if not sampled yet. */
const struct web_rate *web_rate_of(const struct web *w, const char *service);

#endif /* RRPC_TOOLS_WEB_H */
