/* amqp_floor_server.c -- the least a correct AMQP worker must do: the AMQP
 * floor of docs/PERFORMANCE.md.
 *
 * Not a server to use, and not an example of rrpc's API (it does not link
 * librrpc): it is the yardstick `make bench` holds calc-server against over
 * RabbitMQ, measured in the same minute on the same broker.  It knows one
 * method, add(a, b), finds the members it needs by scanning text instead of
 * parsing JSON, and stops at the first error.  What it keeps is what a
 * worker of PROTOCOL.md section 12 (RabbitMQ's RPC tutorial) cannot skip:
 *   - declare the service's queue plainly and consume it;
 *   - answer each request through the default exchange to its reply_to,
 *     with its correlation_id and content_type application/json.
 * By default it consumes with no-ack: the broker counts a message delivered
 * when it sends it, which is at most once already and the cheapest a broker
 * offers.  With --prefetch N it does what rrpc's worker does instead: a
 * prefetch of N (basic.qos) and a manual ack on receipt, before the answer
 * -- fair dispatch among workers, paid with one more frame per call and a
 * broker that waits for the ack before it sends the next message.
 * Measuring both floors shows what that choice costs.
 *
 * Usage: amqp_floor_server [--prefetch N] HOST PORT QUEUE   (guest:guest, vhost /)
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLOOR_CHANNEL   1
#define FLOOR_REPLY_MAX 512

/* Exits with WHAT's failure unless R is normal: the floor has no way to
 * recover, and a silent failure would flatter it. */
static void floor_check(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return;
    fprintf(stderr, "amqp_floor_server: %s failed (%s)\n", what,
            r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? amqp_error_string2(r.library_error)
                                                            : "the broker closed the channel");
    exit(1);
}

/* The value of the JSON member NAME in BODY (LEN bytes, NUL-terminated by
 * the caller): a pointer just past `"NAME":` and any blanks, or NULL. */
static const char *floor_member(const char *body, const char *name)
{
    char pattern[32];
    snprintf(pattern, sizeof pattern, "\"%s\"", name);
    const char *p = strstr(body, pattern);
    if (p == NULL)
        return NULL;
    p += strlen(pattern);
    while (isspace((unsigned char)*p) || *p == ':')
        p++;
    return p;
}

/* The answer to the request BODY in OUT: its length, or -1 when the floor
 * cannot answer it (not add, no string id): dropped, the floor is no
 * validator. */
static int floor_answer(const char *body, char *out, size_t size)
{
    const char *params = floor_member(body, "params");
    const char *id = floor_member(body, "id");
    if (params == NULL || *params != '[' || id == NULL || *id != '"')
        return -1;
    size_t idlen = strcspn(id + 1, "\"");
    char *end;
    long a = strtol(params + 1, &end, 10);
    while (isspace((unsigned char)*end) || *end == ',')
        end++;
    long sum = a + strtol(end, NULL, 10);
    int n = snprintf(out, size, "{\"jsonrpc\":\"2.0\",\"result\":%ld,\"id\":\"%.*s\"}", sum,
                     (int)idlen, id + 1);
    return n > 0 && (size_t)n < size ? n : -1;
}

/* Answers one delivery to its reply_to. */
static void floor_serve(amqp_connection_state_t conn, const amqp_envelope_t *env)
{
    const amqp_basic_properties_t *in = &env->message.properties;
    if (!(in->_flags & AMQP_BASIC_REPLY_TO_FLAG))
        return; /* a notification */
    char body[FLOOR_REPLY_MAX], reply[FLOOR_REPLY_MAX];
    size_t len = env->message.body.len < sizeof body - 1 ? env->message.body.len : 0;
    memcpy(body, env->message.body.bytes, len);
    body[len] = '\0';
    int n = floor_answer(body, reply, sizeof reply);
    if (n < 0)
        return;
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
        .content_type = amqp_cstring_bytes("application/json"),
    };
    if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props.correlation_id = in->correlation_id;
    }
    amqp_bytes_t b = {.len = (size_t)n, .bytes = reply};
    int st =
        amqp_basic_publish(conn, FLOOR_CHANNEL, amqp_empty_bytes, in->reply_to, 0, 0, &props, b);
    if (st != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_floor_server: publish: %s\n", amqp_error_string2(st));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int prefetch = 0;
    if (argc == 6 && strcmp(argv[1], "--prefetch") == 0) {
        prefetch = atoi(argv[2]);
        argv += 2;
        argc -= 2;
    }
    if (argc != 4 || prefetch < 0 || prefetch > 65535) {
        fprintf(stderr, "usage: amqp_floor_server [--prefetch N] HOST PORT QUEUE\n");
        return 2;
    }
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (sock == NULL || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_floor_server: cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    floor_check(amqp_login(conn, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                           "guest", "guest"),
                "login");
    amqp_channel_open(conn, FLOOR_CHANNEL);
    floor_check(amqp_get_rpc_reply(conn), "channel.open");
    amqp_bytes_t queue = amqp_cstring_bytes(argv[3]);
    amqp_queue_declare(conn, FLOOR_CHANNEL, queue, 0, 0, 0, 0, amqp_empty_table);
    floor_check(amqp_get_rpc_reply(conn), "queue.declare");
    if (prefetch > 0) {
        amqp_basic_qos(conn, FLOOR_CHANNEL, 0, (uint16_t)prefetch, 0);
        floor_check(amqp_get_rpc_reply(conn), "basic.qos");
    }
    amqp_basic_consume(conn, FLOOR_CHANNEL, queue, amqp_empty_bytes, 0, prefetch == 0, 0,
                       amqp_empty_table);
    floor_check(amqp_get_rpc_reply(conn), "basic.consume");
    for (;;) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(conn);
        floor_check(amqp_consume_message(conn, &env, NULL, 0), "reading a delivery");
        if (prefetch > 0 &&
            amqp_basic_ack(conn, FLOOR_CHANNEL, env.delivery_tag, 0) != AMQP_STATUS_OK) {
            fprintf(stderr, "amqp_floor_server: basic.ack failed\n");
            return 1;
        }
        floor_serve(conn, &env);
        amqp_destroy_envelope(&env);
    }
}
