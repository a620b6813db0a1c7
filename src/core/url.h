/* url.h -- broker URLs (url.c: Redis and AMQP), no I/O: parsing, copying,
 * and describing them with passwords masked. */
#ifndef RRPC_URL_H
#define RRPC_URL_H

#include <stddef.h>

/* How a URL reaches Redis: one server named directly, the master a group of
 * Sentinels names, or a Redis Cluster reached through seed nodes; or
 * RabbitMQ (any AMQP 0-9-1 broker): host, port, user, password, vhost. */
enum rrpc__url_kind { RRPC__URL_DIRECT, RRPC__URL_SENTINEL, RRPC__URL_CLUSTER, RRPC__URL_AMQP };

typedef struct rrpc__addr {
    char *host;
    int port;
} rrpc__addr;

typedef struct rrpc__url {
    enum rrpc__url_kind kind;
    char *host; /* NULL for unix sockets, Sentinel and Cluster URLs */
    int port;
    char *path;     /* unix socket path, NULL for TCP */
    char *user;     /* ACL user or NULL (for the data nodes, not the Sentinels) */
    char *password; /* NULL if none */
    int db;
    rrpc__addr *nodes; /* Sentinel addresses, or Cluster seed nodes */
    size_t nnodes;
    char *master;        /* Sentinel: the monitored master's name */
    char *sentinel_user; /* Sentinel: AUTH for the Sentinels themselves */
    char *sentinel_password;
    char *vhost; /* AMQP: the virtual host, percent-decoded ("/" by default) */
    int tls;     /* AMQP: amqps:// */
    /* amqps:// query parameters, RabbitMQ's names (docs/SECURITY.md section 7):
     * ?cacertfile= the CAs to verify the broker with (NULL: the system's),
     * ?certfile= and ?keyfile= a client certificate (mutual TLS), and
     * ?verify=verify_none (tls_verify_none set) to skip verifying the broker. */
    char *tls_cacert;
    char *tls_cert;
    char *tls_key;
    int tls_verify_none;
    /* AMQP ?heartbeat=S (RabbitMQ's URI spec): the heartbeat asked for at
     * login, in seconds, 0 for none; -1 when the URL gives none (the
     * transport's default, src/amqp/link.c). */
    int heartbeat;
} rrpc__url;

/* Parses URL (NULL = $RRPC_URL, then $REDIS_URL, then redis://127.0.0.1:6379)
 * into *out.
 * The caller owns the strings in *out and frees them with rrpc__url_free. */
int rrpc__url_parse(rrpc__url *out, const char *url, char *err, size_t errlen);
void rrpc__url_free(rrpc__url *url);
/* A deep copy of SRC into *dst (rrpc__url_free it).  RRPC_ENOMEM leaves
 * *dst zeroed. */
int rrpc__url_copy(rrpc__url *dst, const rrpc__url *src);
/* The URL with any password masked, for log lines.  Writes into buf. */
const char *rrpc__url_describe(const rrpc__url *url, char *buf, size_t len);
/* URL text as it may be shown (any text, parsed or not, any scheme): the
 * password of its userinfo (everything up to the last '@' but the user
 * name) and the values of password= and sentinel_password= replaced by
 * "****", redis-cli style.  Truncated to LEN; returns BUF. */
const char *rrpc__url_redact(const char *url, char *buf, size_t len);

#endif
