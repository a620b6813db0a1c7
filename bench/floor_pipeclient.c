/* floor_pipeclient.c -- the least a correct multiplexed caller must do: the
 * async floor of docs/PERFORMANCE.md.
 *
 * Not a client to use (it does not link librrpc): it is the yardstick
 * `make bench` holds `rrpc bench --async` against.  Each of CLIENTS threads
 * owns one connection and keeps WINDOW calls of add(seq, 1) in flight, all
 * answered onto one reply list of its own (the request's reply_to member):
 * it pushes a window of requests in one pipeline, then collects the replies
 * with BLPOP (one, waiting) pipelined with LPOP (the rest).  What it keeps of
 * a correct caller is that every reply is checked: its id must be a call of
 * the current window not answered yet and its result must be seq + 1, and a
 * reply that never comes is an error, not a stall.
 *
 * Usage: floor_pipeclient HOST PORT QUEUE CLIENTS WINDOW SECONDS
 * Prints one line, "calls=N calls_per_s=R errors=E"; exits 1 on any error.
 */
#define _POSIX_C_SOURCE 200809L
#include <hiredis/hiredis.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLOOR_WINDOW_MAX 4096
#define FLOOR_WAIT_S     "10" /* a reply later than this is lost */

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
    long errors; /* wrong, duplicate or missing replies, failed pushes */
    redisContext *redis;
    char inbox[64];
    long base;                   /* seq of the window's first call */
    char seen[FLOOR_WINDOW_MAX]; /* which calls of the window are answered */
} floor_caller;

static double floor_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Checks one reply against the window: "result":seq+1 and "id":"c<tid>-<seq>". */
static int floor_check(floor_caller *c, const char *reply)
{
    const char *result = strstr(reply, "\"result\":");
    const char *id = strstr(reply, "\"id\":\"c");
    if (result == NULL || id == NULL)
        return -1;
    int tid;
    long seq;
    if (sscanf(id + 7, "%d-%ld", &tid, &seq) != 2 || tid != c->tid || seq < c->base ||
        seq >= c->base + c->cfg->window || c->seen[seq - c->base])
        return -1;
    c->seen[seq - c->base] = 1;
    return strtol(result + 9, NULL, 10) == seq + 1 ? 0 : -1;
}

static int floor_read(floor_caller *c, redisReply **r)
{
    if (redisGetReply(c->redis, (void **)r) == REDIS_OK)
        return 0;
    fprintf(stderr, "floor_pipeclient: %s\n", c->redis->errstr);
    return -1;
}

/* Pushes a window of calls in one pipeline and reads the pushes' answers. */
static int floor_push_window(floor_caller *c)
{
    char req[256];
    for (int i = 0; i < c->cfg->window; i++) {
        long seq = c->base + i;
        snprintf(req, sizeof req,
                 "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[%ld,1],\"id\":\"c%d-%ld\","
                 "\"reply_to\":\"%s\"}",
                 seq, c->tid, seq, c->inbox);
        redisAppendCommand(c->redis, "RPUSH %s %s", c->cfg->queue, req);
    }
    for (int i = 0; i < c->cfg->window; i++) {
        redisReply *r;
        if (floor_read(c, &r) != 0)
            return -1;
        c->errors += r->type != REDIS_REPLY_INTEGER;
        freeReplyObject(r);
    }
    return 0;
}

/* Adds the replies in R (an array, or nil) to the window's tally. */
static int floor_take(floor_caller *c, const redisReply *r, size_t from)
{
    int got = 0;
    for (size_t i = from; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++, got++) {
        if (floor_check(c, r->element[i]->str) == 0)
            c->calls++;
        else
            c->errors++;
    }
    return got;
}

/* Collects the window's replies: BLPOP + LPOP pairs until all are in. */
static int floor_collect_window(floor_caller *c)
{
    memset(c->seen, 0, (size_t)c->cfg->window);
    for (int got = 0; got < c->cfg->window;) {
        redisReply *r;
        redisAppendCommand(c->redis, "BLPOP %s " FLOOR_WAIT_S, c->inbox);
        redisAppendCommand(c->redis, "LPOP %s %d", c->inbox, c->cfg->window - got);
        if (floor_read(c, &r) != 0)
            return -1;
        int n = r->type == REDIS_REPLY_ARRAY ? floor_take(c, r, 1) : 0;
        freeReplyObject(r);
        if (n == 0) {
            c->errors += c->cfg->window - got;
            fprintf(stderr, "floor_pipeclient: replies missing after " FLOOR_WAIT_S " s\n");
            return -1;
        }
        if (floor_read(c, &r) != 0)
            return -1;
        got += n + floor_take(c, r, 0);
        freeReplyObject(r);
    }
    c->base += c->cfg->window;
    return 0;
}

static void *floor_caller_run(void *arg)
{
    floor_caller *c = arg;
    c->redis = redisConnect(c->cfg->host, c->cfg->port);
    if (c->redis == NULL || c->redis->err) {
        fprintf(stderr, "floor_pipeclient: cannot connect\n");
        c->errors++;
        return NULL;
    }
    snprintf(c->inbox, sizeof c->inbox, "floor:inbox:%ld:%d", (long)getpid(), c->tid);
    double end = floor_now() + c->cfg->seconds;
    while (floor_now() < end) {
        if (floor_push_window(c) != 0 || floor_collect_window(c) != 0) {
            c->errors++;
            break;
        }
    }
    redisFree(c->redis);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: floor_pipeclient HOST PORT QUEUE CLIENTS WINDOW SECONDS\n");
        return 2;
    }
    floor_config cfg = {argv[1], atoi(argv[2]), argv[3], atoi(argv[5]), atof(argv[6])};
    int n = atoi(argv[4]);
    if (n < 1 || cfg.window < 1 || cfg.window > FLOOR_WINDOW_MAX || cfg.seconds <= 0) {
        fprintf(stderr, "floor_pipeclient: CLIENTS >= 1, 1 <= WINDOW <= %d, SECONDS > 0\n",
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
