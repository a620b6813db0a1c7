/* amqp_floor_pipeclient.c -- the least a correct multiplexed AMQP caller
 * must do: the async floor of docs/PERFORMANCE.md over RabbitMQ.
 *
 * Not a client to use (it does not link librrpc): it is the yardstick
 * `make bench` holds `rrpc bench --async --url amqp://` against.  Each of
 * CLIENTS threads owns one connection and one channel, consumes RabbitMQ's
 * direct reply-to (no-ack, as it must) and keeps WINDOW calls of
 * add(seq, 1) in flight: each reply is checked and a new call published in
 * its place (a sliding window).  What it keeps of a correct caller is that
 * every reply is checked -- its correlation_id must name a call in flight
 * not answered yet and its result must be seq + 1 -- and a reply that never
 * comes is an error, not a stall.  It publishes without mandatory and
 * without expiration (rrpc sets both: fail fast on a missing queue, and no
 * request run after its caller gave up).
 *
 * Usage: amqp_floor_pipeclient HOST PORT QUEUE CLIENTS WINDOW SECONDS
 * (guest:guest, vhost /).  Prints one line, "calls=N calls_per_s=R
 * errors=E"; exits 1 on any error.
 */
#define _POSIX_C_SOURCE 200809L
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define FLOOR_CHANNEL    1
#define FLOOR_WINDOW_MAX 4096
#define FLOOR_WAIT_S     10 /* a reply later than this is lost */
#define FLOOR_REPLY_TO   "amq.rabbitmq.reply-to"

typedef struct floor_config {
    const char *host;
    int port;
    const char *queue;
    int window;
    double seconds;
} floor_config;

typedef struct floor_caller {
    const floor_config *cfg;
    int tid;
    long calls;  /* answered correctly */
    long errors; /* wrong, duplicate or missing replies, failed publishes */
    amqp_connection_state_t conn;
    long next;                     /* seq of the next call */
    long flying[FLOOR_WINDOW_MAX]; /* per slot: the seq of the call awaiting its reply */
    int free_slot;                 /* the slot the last reply freed */
} floor_caller;

static double floor_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int floor_ok(floor_caller *c, amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    fprintf(stderr, "amqp_floor_pipeclient: %s failed (%s)\n", what,
            r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? amqp_error_string2(r.library_error)
                                                            : "the broker closed the channel");
    c->errors++;
    return -1;
}

/* Publishes the call seq = c->next in SLOT, its correlation_id
 * "c<tid>-<slot>-<seq>" (replies come back in any order). */
static int floor_call(floor_caller *c, int slot)
{
    long seq = c->next++;
    char body[160], corr[48];
    int n =
        snprintf(body, sizeof body,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[%ld,1],\"id\":\"c%d-%ld\"}",
                 seq, c->tid, seq);
    snprintf(corr, sizeof corr, "c%d-%d-%ld", c->tid, slot, seq);
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
                  AMQP_BASIC_CORRELATION_ID_FLAG,
        .content_type = amqp_cstring_bytes("application/json"),
        .reply_to = amqp_cstring_bytes(FLOOR_REPLY_TO),
        .correlation_id = amqp_cstring_bytes(corr),
    };
    amqp_bytes_t b = {.len = (size_t)n, .bytes = body};
    if (amqp_basic_publish(c->conn, FLOOR_CHANNEL, amqp_empty_bytes,
                           amqp_cstring_bytes(c->cfg->queue), 0, 0, &props, b) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_floor_pipeclient: publish failed\n");
        c->errors++;
        return -1;
    }
    c->flying[slot] = seq;
    return 0;
}

/* Checks one reply: its correlation_id names a call in flight, and its
 * body's result is seq + 1.  Frees its slot. */
static int floor_check(floor_caller *c, const amqp_message_t *m)
{
    char corr[48], body[256];
    const amqp_bytes_t *cb = &m->properties.correlation_id;
    if (!(m->properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) || cb->len >= sizeof corr ||
        m->body.len >= sizeof body)
        return -1;
    memcpy(corr, cb->bytes, cb->len);
    corr[cb->len] = '\0';
    memcpy(body, m->body.bytes, m->body.len);
    body[m->body.len] = '\0';
    int tid, slot;
    long seq;
    if (sscanf(corr, "c%d-%d-%ld", &tid, &slot, &seq) != 3 || tid != c->tid || slot < 0 ||
        slot >= c->cfg->window || c->flying[slot] != seq)
        return -1;
    c->flying[slot] = -1;
    c->free_slot = slot;
    const char *result = strstr(body, "\"result\":");
    return result != NULL && strtol(result + 9, NULL, 10) == seq + 1 ? 0 : -1;
}

/* Waits for one reply and tallies it; -1 when none came, the link broke
 * or the reply was wrong (no slot to reuse then). */
static int floor_reply(floor_caller *c)
{
    amqp_envelope_t env;
    struct timeval tv = {.tv_sec = FLOOR_WAIT_S};
    amqp_maybe_release_buffers(c->conn);
    if (floor_ok(c, amqp_consume_message(c->conn, &env, &tv, 0), "waiting for a reply") != 0)
        return -1;
    int rc = floor_check(c, &env.message);
    if (rc == 0)
        c->calls++;
    else if (c->errors++ == 0)
        fprintf(stderr, "amqp_floor_pipeclient: a wrong reply (correlation_id %.*s): %.*s\n",
                (int)env.message.properties.correlation_id.len,
                (const char *)env.message.properties.correlation_id.bytes,
                (int)env.message.body.len, (const char *)env.message.body.bytes);
    amqp_destroy_envelope(&env);
    return rc;
}

static int floor_open(floor_caller *c)
{
    c->conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(c->conn);
    if (sock == NULL || amqp_socket_open(sock, c->cfg->host, c->cfg->port) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_floor_pipeclient: cannot connect\n");
        c->errors++;
        return -1;
    }
    if (floor_ok(c,
                 amqp_login(c->conn, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                            "guest", "guest"),
                 "login") != 0)
        return -1;
    amqp_channel_open(c->conn, FLOOR_CHANNEL);
    if (floor_ok(c, amqp_get_rpc_reply(c->conn), "channel.open") != 0)
        return -1;
    amqp_basic_consume(c->conn, FLOOR_CHANNEL, amqp_cstring_bytes(FLOOR_REPLY_TO), amqp_empty_bytes,
                       0, 1, 0, amqp_empty_table);
    return floor_ok(c, amqp_get_rpc_reply(c->conn), "basic.consume of direct reply-to");
}

static void *floor_caller_run(void *arg)
{
    floor_caller *c = arg;
    if (floor_open(c) == 0) {
        int ok = 0;
        for (int i = 0; i < c->cfg->window && ok == 0; i++)
            ok = floor_call(c, i);
        double end = floor_now() + c->cfg->seconds;
        while (ok == 0 && floor_now() < end)
            ok = floor_reply(c) == 0 ? floor_call(c, c->free_slot) : -1;
        /* The calls still in flight are answered before the count ends. */
        for (int i = 0; ok == 0 && i < c->cfg->window; i++)
            ok = floor_reply(c);
    }
    amqp_destroy_connection(c->conn);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: amqp_floor_pipeclient HOST PORT QUEUE CLIENTS WINDOW SECONDS\n");
        return 2;
    }
    floor_config cfg = {argv[1], atoi(argv[2]), argv[3], atoi(argv[5]), atof(argv[6])};
    int n = atoi(argv[4]);
    if (n < 1 || cfg.window < 1 || cfg.window > FLOOR_WINDOW_MAX || cfg.seconds <= 0) {
        fprintf(stderr, "amqp_floor_pipeclient: CLIENTS >= 1, 1 <= WINDOW <= %d, SECONDS > 0\n",
                FLOOR_WINDOW_MAX);
        return 2;
    }
    floor_caller *callers = calloc((size_t)n, sizeof *callers);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    if (callers == NULL || threads == NULL)
        return 1;
    double t0 = floor_now();
    for (int i = 0; i < n; i++) {
        callers[i] = (floor_caller){.cfg = &cfg, .tid = i};
        if (pthread_create(&threads[i], NULL, floor_caller_run, &callers[i]) != 0)
            return 1;
    }
    long calls = 0, errors = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        calls += callers[i].calls;
        errors += callers[i].errors;
    }
    printf("calls=%ld calls_per_s=%.0f errors=%ld\n", calls, (double)calls / (floor_now() - t0),
           errors);
    free(callers);
    free(threads);
    return errors ? 1 : 0;
}
