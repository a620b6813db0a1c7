/* link.c -- one AMQP 0-9-1 connection with one channel (link.h).
 *
 * librabbitmq (rabbitmq-c) does the framing; this file turns its results
 * into rrpc's errors and messages.  A link that failed in any way is
 * marked broken and mended whole (a new connection), never patched: after
 * a channel error the broker has closed the channel, and what the client
 * or worker had set up on it (the direct reply-to consumer, the queue's
 * consumer) is gone with it.
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/link.h"

#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#ifdef __linux__
#include <linux/sockios.h> /* SIOCOUTQ */
#endif

#define CONNECT_TIMEOUT_DEFAULT_S 5.0
/* Synchronous methods (login, declare, consume, close) wait this long at
 * most for the broker's answer. */
#define RPC_TIMEOUT_S 10.0

struct timeval rrpc__amqp_tv(double s)
{
    if (!(s > 0))
        s = 0;
    struct timeval tv;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

int rrpc__amqp_url_check(const rrpc__url *url, char *err, size_t errlen)
{
    if ((url->tls_cert == NULL) != (url->tls_key == NULL))
        return rrpc__fail(err, errlen, RRPC_EINVAL,
                          "amqps:// needs certfile= and keyfile= together (a client certificate)");
    return RRPC_OK;
}

/* A TLS socket for URL on L's connection, set up as SECURITY.md section 7
 * says: TLS 1.2 at least, the broker's certificate and host name verified
 * (unless ?verify=verify_none) against ?cacertfile= or else the system's
 * CAs (OpenSSL's default paths, so $SSL_CERT_FILE works too), and a client
 * certificate if the URL names one.  RRPC_OK, or RRPC_ENOMEM or RRPC_EINVAL
 * (a file that cannot be used) with L->errmsg set. */
static int tls_socket(rrpc__amqp_link *l, const rrpc__url *url)
{
    amqp_socket_t *sock = amqp_ssl_socket_new(l->conn);
    if (sock == NULL)
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ENOMEM,
                          "cannot set up TLS (out of memory)");
    amqp_boolean_t verify = !url->tls_verify_none;
    amqp_ssl_socket_set_verify_peer(sock, verify);
    amqp_ssl_socket_set_verify_hostname(sock, verify);
    int st = amqp_ssl_socket_set_ssl_versions(sock, AMQP_TLSv1_2, AMQP_TLSvLATEST);
    const char *what = "TLS versions";
    if (st == AMQP_STATUS_OK && url->tls_cacert != NULL) {
        what = url->tls_cacert;
        st = amqp_ssl_socket_set_cacert(sock, url->tls_cacert);
    } else if (st == AMQP_STATUS_OK) {
        /* librabbitmq loads no CA by itself: without this, nothing verifies. */
        what = "the system's CA certificates";
        SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
        st = ctx != NULL && SSL_CTX_set_default_verify_paths(ctx) == 1 ? AMQP_STATUS_OK
                                                                       : AMQP_STATUS_SSL_ERROR;
    }
    if (st == AMQP_STATUS_OK && url->tls_cert != NULL) {
        what = url->tls_cert;
        st = amqp_ssl_socket_set_key(sock, url->tls_cert, url->tls_key);
    }
    if (st != AMQP_STATUS_OK)
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_EINVAL, "TLS: cannot use %s: %s", what,
                          amqp_error_string2(st));
    return RRPC_OK;
}

/* The message for a failed open of URL's socket (status ST). */
static int open_failed(rrpc__amqp_link *l, const rrpc__url *url, const char *shown, int st)
{
    const char *hint = "";
    if (st == AMQP_STATUS_SSL_PEER_VERIFY_FAILED)
        hint = url->tls_cacert ? " (the broker's certificate is not signed by a CA of cacertfile=)"
                               : " (the broker's certificate is not signed by a CA the system "
                                 "trusts: give its CA with ?cacertfile=PATH)";
    else if (st == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED)
        hint = " (the broker's certificate does not name the URL's host)";
    else if (st == AMQP_STATUS_SSL_CONNECTION_FAILED || st == AMQP_STATUS_SSL_ERROR)
        hint = url->tls ? " (is that port TLS, speaking TLS 1.2 or later?)" : "";
    return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ECONNECT, "cannot connect to %s: %s%s",
                      shown, amqp_error_string2(st), hint);
}

/* A broker's close (connection or channel) as "CODE TEXT". */
static void close_reason(const amqp_method_t *m, int *code, char *buf, size_t len)
{
    const amqp_bytes_t *text = NULL;
    *code = 0;
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *c = m->decoded;
        *code = c->reply_code;
        text = &c->reply_text;
    } else if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *c = m->decoded;
        *code = c->reply_code;
        text = &c->reply_text;
    }
    if (text != NULL)
        snprintf(buf, len, "%d %.*s", *code, (int)text->len, (const char *)text->bytes);
    else
        snprintf(buf, len, "unexpected method 0x%08x", (unsigned)m->id);
}

/* Answers the broker's close of the connection or channel, as AMQP asks. */
static void close_ok(rrpc__amqp_link *l, const amqp_method_t *m, amqp_channel_t channel)
{
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok;
        amqp_send_method(l->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok;
        amqp_send_method(l->conn, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    }
}

/* The broker closed L's channel or connection (M, on CHANNEL): answers it
 * and breaks L.  RRPC_ECONNECT, with the broker's reason in L->errmsg. */
static int closed_by_broker(rrpc__amqp_link *l, const amqp_method_t *m, amqp_channel_t channel)
{
    char why[RRPC__ERRMSG_LEN / 2];
    int code;
    close_reason(m, &code, why, sizeof why);
    close_ok(l, m, channel);
    l->broken = 1;
    return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ECONNECT, "the broker closed the %s: %s",
                      m->id == AMQP_CHANNEL_CLOSE_METHOD ? "channel" : "connection", why);
}

int rrpc__amqp_judge(rrpc__amqp_link *l, amqp_rpc_reply_t r, const char *what)
{
    char why[RRPC__ERRMSG_LEN / 2];
    int code = 0, rc = RRPC_ECONNECT;
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return RRPC_OK;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(why, sizeof why, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        close_reason(&r.reply, &code, why, sizeof why);
        close_ok(l, &r.reply, RRPC__AMQP_CHANNEL);
        /* ACCESS_REFUSED (login, vhost permissions) and NOT_ALLOWED (no
         * such vhost) never heal by waiting; a refused method is the
         * broker's answer, not a broken network. */
        if (code == 403 || code == 530)
            rc = RRPC_EAUTH;
        else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
            rc = RRPC_EREDIS;
        break;
    default: snprintf(why, sizeof why, "no reply"); break;
    }
    l->broken = 1;
    return rrpc__fail(l->errmsg, sizeof l->errmsg, rc, "%s: %s", what, why);
}

/* The socket, the handshake and the login, within TIMEOUT_S. */
static int open_connection(rrpc__amqp_link *l, const rrpc__url *url, double timeout_s,
                           const char *shown)
{
    l->conn = amqp_new_connection();
    if (l->conn != NULL && url->tls) {
        int rc = tls_socket(l, url);
        if (rc != RRPC_OK)
            return rc;
    }
    amqp_socket_t *sock = NULL;
    if (l->conn != NULL)
        sock = url->tls ? amqp_get_socket(l->conn) : amqp_tcp_socket_new(l->conn);
    if (sock == NULL)
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ENOMEM, "out of memory");
    struct timeval tv = rrpc__amqp_tv(timeout_s), rpc = rrpc__amqp_tv(RPC_TIMEOUT_S);
    int st = amqp_socket_open_noblock(sock, url->host, url->port, &tv);
    if (st != AMQP_STATUS_OK)
        return open_failed(l, url, shown, st);
    amqp_set_handshake_timeout(l->conn, &tv);
    amqp_set_rpc_timeout(l->conn, &rpc);
    /* Heartbeats: librabbitmq sends ours and checks the broker's inside
     * its waits (the async client ticks them, async_amqp.c); the broker
     * may lower the value (the smaller non-zero one wins). */
    int heartbeat = url->heartbeat >= 0 ? url->heartbeat : RRPC__AMQP_HEARTBEAT_S;
    amqp_rpc_reply_t r = amqp_login(l->conn, url->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat,
                                    AMQP_SASL_METHOD_PLAIN, url->user, url->password);
    char what[RRPC__ERRMSG_LEN];
    snprintf(what, sizeof what, "login to %s", shown);
    int rc = rrpc__amqp_judge(l, r, what);
    if (rc == RRPC_OK) {
        l->heartbeat = amqp_get_heartbeat(l->conn);
        amqp_channel_open(l->conn, RRPC__AMQP_CHANNEL);
        rc = rrpc__amqp_judge(l, amqp_get_rpc_reply(l->conn), "channel.open");
    }
    return rc;
}

int rrpc__amqp_connect(rrpc__amqp_link *l, const rrpc__url *url, double timeout_s)
{
    char shown[RRPC__ERRMSG_LEN / 2];
    rrpc__url_describe(url, shown, sizeof shown);
    l->broken = 0;
    l->heartbeat = 0;
    l->write_wait_s = RPC_TIMEOUT_S;
    l->errmsg[0] = '\0';
    int rc = rrpc__amqp_url_check(url, l->errmsg, sizeof l->errmsg);
    if (rc == RRPC_OK)
        rc = open_connection(l, url, timeout_s > 0 ? timeout_s : CONNECT_TIMEOUT_DEFAULT_S, shown);
    if (rc != RRPC_OK) {
        l->broken = 1; /* nothing polite to say to a half-open connection */
        rrpc__amqp_disconnect(l);
    }
    return rc;
}

void rrpc__amqp_disconnect(rrpc__amqp_link *l)
{
    if (l->conn == NULL)
        return;
    if (!l->broken) {
        amqp_channel_close(l->conn, RRPC__AMQP_CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(l->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(l->conn);
    l->conn = NULL;
}

int rrpc__amqp_room(const rrpc__amqp_link *l, size_t len, int one)
{
#ifdef SIOCOUTQ
    int fd = l->conn != NULL ? amqp_get_sockfd(l->conn) : -1;
    int queued = 0, sndbuf = 0;
    socklen_t sl = sizeof sndbuf;
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &queued) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl) != 0)
        return 1; /* cannot tell: the write will say */
    /* Half: the kernel counts its own overhead against SO_SNDBUF too. */
    return (one && queued == 0) ||
           (size_t)queued + len + RRPC__AMQP_PUBLISH_OVERHEAD <= (size_t)sndbuf / 2;
#else
    (void)l;
    (void)len;
    (void)one;
    return 1;
#endif
}

/* Waits up to TIMEOUT_S for room for LEN bytes: 1 when there is. */
static int wait_room(const rrpc__amqp_link *l, size_t len, double timeout_s)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (rrpc__amqp_room(l, len, 1))
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double left =
            timeout_s - ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
        if (left <= 0)
            return 0;
        /* POLLOUT comes once a third of the buffer is free, which may not
         * be room enough: then look again every 10 ms. */
        struct pollfd pfd = {.fd = amqp_get_sockfd(l->conn), .events = POLLOUT};
        int ms = left < 0.01 ? 1 : 10;
        if (poll(&pfd, 1, ms) > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)))
            return 1; /* the write will say what went wrong */
    }
}

int rrpc__amqp_publish(rrpc__amqp_link *l, const char *queue, const char *body, size_t len,
                       const amqp_basic_properties_t *props, int mandatory)
{
    if (!wait_room(l, len, l->write_wait_s))
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ETIMEDOUT,
                          "publish: RabbitMQ read nothing for %g s (a paused or stalled broker, "
                          "or its flow control): the message was not sent",
                          l->write_wait_s);
    return rrpc__amqp_publish_now(l, queue, body, len, props, mandatory);
}

int rrpc__amqp_publish_now(rrpc__amqp_link *l, const char *queue, const char *body, size_t len,
                           const amqp_basic_properties_t *props, int mandatory)
{
    amqp_bytes_t b = {.len = len, .bytes = (void *)body};
    int st = amqp_basic_publish(l->conn, RRPC__AMQP_CHANNEL, amqp_empty_bytes,
                                amqp_cstring_bytes(queue), mandatory != 0, 0, props, b);
    if (st == AMQP_STATUS_OK)
        return RRPC_OK;
    l->broken = 1;
    return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ECONNECT, "publish: %s",
                      amqp_error_string2(st));
}

/* Copies the bytes B into BUF (LEN bytes) as a string, "" if too long. */
static void copy_bytes(char *buf, size_t len, amqp_bytes_t b)
{
    if (b.len >= len)
        b.len = 0;
    if (b.len > 0)
        memcpy(buf, b.bytes, b.len);
    buf[b.len] = '\0';
}

int rrpc__amqp_other_frame(rrpc__amqp_link *l, char *returned, size_t len)
{
    amqp_frame_t f;
    struct timeval tv = rrpc__amqp_tv(RPC_TIMEOUT_S);
    int st = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
    if (st != AMQP_STATUS_OK) {
        l->broken = 1;
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ECONNECT, "reading a frame: %s",
                          amqp_error_string2(st));
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 0;
    const amqp_method_t *m = &f.payload.method;
    if (m->id == AMQP_BASIC_RETURN_METHOD) {
        amqp_message_t msg;
        int rc = rrpc__amqp_judge(l, amqp_read_message(l->conn, f.channel, &msg, 0),
                                  "reading a returned message");
        if (rc != RRPC_OK)
            return rc;
        returned[0] = '\0';
        if (msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
            copy_bytes(returned, len, msg.properties.correlation_id);
        amqp_destroy_message(&msg);
        return 1;
    }
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD || m->id == AMQP_CONNECTION_CLOSE_METHOD)
        return closed_by_broker(l, m, f.channel);
    return 0;
}

int rrpc__amqp_confirm_select(rrpc__amqp_link *l)
{
    amqp_confirm_select(l->conn, RRPC__AMQP_CHANNEL);
    return rrpc__amqp_judge(l, amqp_get_rpc_reply(l->conn), "confirm.select");
}

int rrpc__amqp_confirms(const rrpc__amqp_event *ev, uint64_t seq)
{
    if (ev->kind != RRPC__AMQP_EV_ACK && ev->kind != RRPC__AMQP_EV_NACK)
        return 0;
    return ev->tag == seq || (ev->multiple && ev->tag >= seq);
}

/* A basic.return, read whole: its correlation_id into EV. */
static int read_return(rrpc__amqp_link *l, amqp_channel_t channel, rrpc__amqp_event *ev)
{
    amqp_message_t msg;
    int rc = rrpc__amqp_judge(l, amqp_read_message(l->conn, channel, &msg, 0),
                              "reading a returned message");
    if (rc != RRPC_OK)
        return rc;
    ev->kind = RRPC__AMQP_EV_RETURN;
    if (msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        copy_bytes(ev->returned, sizeof ev->returned, msg.properties.correlation_id);
    amqp_destroy_message(&msg);
    return RRPC_OK;
}

int rrpc__amqp_next_event(rrpc__amqp_link *l, double timeout_s, rrpc__amqp_event *ev)
{
    memset(ev, 0, sizeof *ev);
    amqp_frame_t f;
    struct timeval tv = rrpc__amqp_tv(timeout_s);
    int st = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT)
        return RRPC_OK;
    if (st != AMQP_STATUS_OK) {
        l->broken = 1;
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ECONNECT, "reading a frame: %s",
                          amqp_error_string2(st));
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return RRPC_OK;
    const amqp_method_t *m = &f.payload.method;
    switch (m->id) {
    case AMQP_BASIC_RETURN_METHOD: return read_return(l, f.channel, ev);
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = m->decoded;
        ev->kind = RRPC__AMQP_EV_ACK;
        ev->tag = a->delivery_tag;
        ev->multiple = a->multiple;
        return RRPC_OK;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *n = m->decoded;
        ev->kind = RRPC__AMQP_EV_NACK;
        ev->tag = n->delivery_tag;
        ev->multiple = n->multiple;
        return RRPC_OK;
    }
    case AMQP_BASIC_DELIVER_METHOD:
        l->broken = 1;
        return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ECONNECT,
                          "a delivery arrived while waiting for a confirm");
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: return closed_by_broker(l, m, f.channel);
    default: return RRPC_OK;
    }
}

int rrpc__amqp_wait_confirm(rrpc__amqp_link *l, uint64_t seq, double timeout_s)
{
    double left = timeout_s;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (left > 0) {
        rrpc__amqp_event ev;
        int rc = rrpc__amqp_next_event(l, left, &ev);
        if (rc != RRPC_OK)
            return rc;
        if (rrpc__amqp_confirms(&ev, seq))
            return ev.kind == RRPC__AMQP_EV_ACK
                       ? RRPC_OK
                       : rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_EOVERLOADED,
                                    "the broker refused the message (basic.nack): its queue "
                                    "is full");
        clock_gettime(CLOCK_MONOTONIC, &t1);
        left = timeout_s - ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    return rrpc__fail(l->errmsg, sizeof l->errmsg, RRPC_ETIMEDOUT,
                      "no confirm from the broker within %g s", timeout_s);
}
