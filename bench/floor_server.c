/* floor_server.c -- the least a correct worker must do: the floor of docs/PERFORMANCE.md.
 *
 * Not a server to use, and not an example of rrpc's API (it does not link
 * librrpc): it is the yardstick `make bench` holds calc-server against, so
 * that rrpc's speed is a ratio to what the list protocol allows on the same
 * Redis and the same machine, measured in the same minute.  It knows one
 * method, add(a, b), finds the members it needs by scanning text instead of
 * parsing JSON, and stops at the first error.  What it keeps is everything a
 * correct worker of docs/PROTOCOL.md cannot skip:
 *   - pop in pairs: BLPOP waits for one request, LPOP with a count takes up
 *     to 127 more that are queued, so a batch costs one round trip;
 *   - answer onto the request's reply_to member, else onto the key named by
 *     its string id (PROTOCOL.md section 3);
 *   - make every reply list expire, and send a batch's replies pipelined
 *     with the next pop.
 * With --reply-script it pushes replies as a worker must that does not take
 * its callers' reply keys on trust: one EVALSHA per batch of a script that
 * writes only onto a key that does not exist or onto a list that already
 * expires, so a request cannot make the worker append to (or put an expiry
 * on) some other data.  Measuring both floors shows what that safety costs.
 *
 * Usage: floor_server [--reply-script] HOST PORT QUEUE
 */
#include <hiredis/hiredis.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLOOR_BATCH     128 /* one BLPOP + LPOP of up to 127 */
#define FLOOR_MORE      "127"
#define FLOOR_TTL       "30" /* seconds a reply list lives, as rrpc's default */
#define FLOOR_KEY_MAX   128
#define FLOOR_REPLY_MAX 256

/* The reply script: one reply per key, in KEYS order; ARGV[1] is the TTL. */
static const char floor_reply_script[] =
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local t = redis.call('TYPE', k).ok\n"
    "  if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then\n"
    "    redis.call('RPUSH', k, ARGV[i + 1]); redis.call('EXPIRE', k, ARGV[1]); out[i] = 1\n"
    "  elseif t == 'list' then out[i] = 'list without expiry' else out[i] = t end\n"
    "end\n"
    "return out\n";

/* The replies of one batch, waiting to be sent with the next pop. */
typedef struct floor_batch {
    int n;
    char key[FLOOR_BATCH][FLOOR_KEY_MAX];
    char reply[FLOOR_BATCH][FLOOR_REPLY_MAX];
    size_t reply_len[FLOOR_BATCH];
} floor_batch;

typedef struct floor_server {
    redisContext *redis;
    const char *queue;
    char sha[41]; /* the reply script's SHA-1; empty for plain RPUSH + EXPIRE */
    int pending;  /* commands sent whose answers are still to be read */
    long refused; /* replies the script would not write */
    floor_batch batch;
} floor_server;

/* The value of the JSON member NAME: a pointer just past `"NAME":` and any
 * blanks, or NULL.  Scanning, not parsing: good enough for known callers. */
static const char *floor_member(const char *req, const char *name)
{
    char pattern[32];
    snprintf(pattern, sizeof pattern, "\"%s\"", name);
    const char *p = strstr(req, pattern);
    if (p == NULL)
        return NULL;
    p += strlen(pattern);
    while (isspace((unsigned char)*p) || *p == ':')
        p++;
    return p;
}

/* Copies the JSON string at P (escapes and all) into OUT; 0, or -1 when it
 * is not a string or does not fit. */
static int floor_string(const char *p, char *out, size_t size)
{
    if (p == NULL || *p != '"')
        return -1;
    size_t n = strcspn(p + 1, "\"");
    if (n == 0 || n >= size || p[1 + n] != '"')
        return -1;
    memcpy(out, p + 1, n);
    out[n] = '\0';
    return 0;
}

/* Adds the answer to one request to the batch; a request the floor cannot
 * answer (not add, no string id) is dropped, as the floor is no validator. */
static void floor_answer(floor_server *s, const char *req)
{
    floor_batch *b = &s->batch;
    const char *params = floor_member(req, "params");
    char id[FLOOR_KEY_MAX];
    if (b->n == FLOOR_BATCH || params == NULL || *params != '[' ||
        floor_string(floor_member(req, "id"), id, sizeof id) != 0)
        return;
    char *end;
    long a = strtol(params + 1, &end, 10);
    while (isspace((unsigned char)*end) || *end == ',')
        end++;
    long sum = a + strtol(end, NULL, 10);
    if (floor_string(floor_member(req, "reply_to"), b->key[b->n], FLOOR_KEY_MAX) != 0)
        memcpy(b->key[b->n], id, strlen(id) + 1);
    int len = snprintf(b->reply[b->n], FLOOR_REPLY_MAX,
                       "{\"jsonrpc\":\"2.0\",\"result\":%ld,\"id\":\"%s\"}", sum, id);
    b->reply_len[b->n++] = (size_t)len;
}

/* Queues RPUSH + EXPIRE for every reply of the batch. */
static void floor_send_plain(floor_server *s)
{
    floor_batch *b = &s->batch;
    for (int i = 0; i < b->n; i++) {
        const char *push[] = {"RPUSH", b->key[i], b->reply[i]};
        size_t push_len[] = {5, strlen(b->key[i]), b->reply_len[i]};
        const char *expire[] = {"EXPIRE", b->key[i], FLOOR_TTL};
        size_t expire_len[] = {6, strlen(b->key[i]), strlen(FLOOR_TTL)};
        redisAppendCommandArgv(s->redis, 3, push, push_len);
        redisAppendCommandArgv(s->redis, 3, expire, expire_len);
    }
    s->pending += 2 * b->n;
}

/* Queues one EVALSHA of the reply script for the whole batch:
 * EVALSHA sha n key... ttl reply... */
static void floor_send_script(floor_server *s)
{
    floor_batch *b = &s->batch;
    const char *argv[4 + 2 * FLOOR_BATCH] = {"EVALSHA", s->sha};
    size_t len[4 + 2 * FLOOR_BATCH] = {7, 40};
    char numkeys[8];
    len[2] = (size_t)snprintf(numkeys, sizeof numkeys, "%d", b->n);
    argv[2] = numkeys;
    argv[3 + b->n] = FLOOR_TTL;
    len[3 + b->n] = strlen(FLOOR_TTL);
    for (int i = 0; i < b->n; i++) {
        argv[3 + i] = b->key[i];
        len[3 + i] = strlen(b->key[i]);
        argv[4 + b->n + i] = b->reply[i];
        len[4 + b->n + i] = b->reply_len[i];
    }
    redisAppendCommandArgv(s->redis, 4 + 2 * b->n, argv, len);
    s->pending++;
}

/* Reads one answer; exits on a broken link or an error reply, since the
 * floor has no way to recover and a silent failure would flatter it. */
static redisReply *floor_read(floor_server *s)
{
    redisReply *r = NULL;
    if (redisGetReply(s->redis, (void **)&r) != REDIS_OK) {
        fprintf(stderr, "floor_server: %s\n", s->redis->errstr);
        exit(1);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "floor_server: Redis said: %s\n", r->str);
        exit(1);
    }
    return r;
}

/* Reads the answers to the previous batch's replies.  The script answers
 * 1 per reply written, or why it refused. */
static void floor_collect(floor_server *s)
{
    for (; s->pending > 0; s->pending--) {
        redisReply *r = floor_read(s);
        for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING && s->refused++ == 0)
                fprintf(stderr, "floor_server: reply refused: %s\n", r->element[i]->str);
        }
        freeReplyObject(r);
    }
}

/* One turn: send the last batch's replies with the next pop pair, then read
 * the answers in order and build the next batch. */
static void floor_turn(floor_server *s)
{
    if (s->batch.n > 0) {
        if (s->sha[0] != '\0')
            floor_send_script(s);
        else
            floor_send_plain(s);
    }
    s->batch.n = 0;
    redisAppendCommand(s->redis, "BLPOP %s 0", s->queue);
    redisAppendCommand(s->redis, "LPOP %s " FLOOR_MORE, s->queue);
    floor_collect(s);
    redisReply *r = floor_read(s);
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        floor_answer(s, r->element[1]->str);
    freeReplyObject(r);
    r = floor_read(s);
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        floor_answer(s, r->element[i]->str);
    freeReplyObject(r);
}

static int floor_load_script(floor_server *s)
{
    redisReply *r = redisCommand(s->redis, "SCRIPT LOAD %s", floor_reply_script);
    int ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(s->sha, r->str, 41);
    else
        fprintf(stderr, "floor_server: SCRIPT LOAD failed: %s\n", r ? r->str : s->redis->errstr);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    static floor_server s; /* the batch is 40 KiB: not on the stack */
    int script = argc > 1 && strcmp(argv[1], "--reply-script") == 0;
    if (argc != 4 + script) {
        fprintf(stderr, "usage: floor_server [--reply-script] HOST PORT QUEUE\n");
        return 2;
    }
    s.redis = redisConnect(argv[1 + script], atoi(argv[2 + script]));
    if (s.redis == NULL || s.redis->err) {
        fprintf(stderr, "floor_server: cannot connect: %s\n", s.redis ? s.redis->errstr : "");
        return 1;
    }
    s.queue = argv[3 + script];
    if (script && floor_load_script(&s) != 0)
        return 1;
    for (;;)
        floor_turn(&s);
}
