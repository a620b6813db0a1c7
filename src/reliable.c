/* reliable.c -- the at-least-once delivery mode of the server (RELIABILITY.md).
 *
 * In reliable mode a worker never holds a request that Redis has forgotten:
 * requests move from the service's list to the worker's own in-flight list
 * and leave it only once their answer is stored.  Three Lua scripts keep
 * each step atomic inside Redis:
 *
 *   take    moves up to N more requests into the in-flight list and returns
 *           every request held there with its SHA-1 and the answer already
 *           remembered for it (dedup), if any;
 *   commit  remembers the answer (SET NX, so only the first commit of a
 *           request counts), pushes the response and applies the handler's
 *           effects -- all or nothing, exactly once per request;
 *   reap    puts the requests of workers whose heartbeat expired back at the
 *           head of the service's list, counting deliveries, and turns a
 *           request delivered max_deliveries times into a dead letter.
 *
 * Every key but the dead-letter list and the stats hash carries the list key
 * as a Redis Cluster hash tag, so each script touches one slot.  The
 * heartbeat runs on a thread of its own so that a slow handler never makes
 * its worker look dead.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A request's identity, shared by the take and reap scripts: a request
 * object with a string id, or an integer id that a double holds exactly,
 * is known by its reply_to and id, so that a caller's retry is recognised
 * even if its text changed (a new deadline, say); anything else (a batch,
 * a notification, text that is not JSON) by its exact text.  SHA-1 hex. */
#define IDENTITY_LUA                                                                               \
    "local function identity(item)\n"                                                              \
    "  local ok, req = pcall(cjson.decode, item)\n"                                                \
    "  if ok and type(req) == 'table' and req.jsonrpc == '2.0' then\n"                             \
    "    local id, to = req.id, req.reply_to\n"                                                    \
    "    if type(to) ~= 'string' then to = '' end\n"                                               \
    "    if type(id) == 'string' then return redis.sha1hex('s\\n' .. to .. '\\n' .. id) end\n"     \
    "    if type(id) == 'number' and id == math.floor(id) and math.abs(id) < 2^53 then\n"          \
    "      return redis.sha1hex('n\\n' .. to .. '\\n' .. string.format('%.0f', id))\n"             \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return redis.sha1hex(item)\n"                                                               \
    "end\n"

/* KEYS: list, in-flight list, in-flight set.  ARGV: count (0: none more),
 * done-key prefix, worker id.  Returns [request, identity, answer-or-nil,
 * ...]. */
static const char take_script[] =
    IDENTITY_LUA "local n = tonumber(ARGV[1])\n"
                 "local more = n > 0 and redis.call('LRANGE', KEYS[1], 0, n - 1) or {}\n"
                 "if #more > 0 then\n"
                 "  redis.call('LTRIM', KEYS[1], #more, -1)\n"
                 "  redis.call('RPUSH', KEYS[2], unpack(more))\n"
                 "end\n"
                 "redis.call('SADD', KEYS[3], ARGV[3])\n"
                 "local out = {}\n"
                 "for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do\n"
                 "  local h = identity(item)\n"
                 "  out[#out + 1] = item\n"
                 "  out[#out + 1] = h\n"
                 "  out[#out + 1] = redis.call('GET', ARGV[2] .. h)\n"
                 "end\n"
                 "return out\n";

/* KEYS: done key[, reply key].  ARGV: answer, window, response, reply ttl,
 * effect count, then per effect its argc and arguments.  Returns 1 if
 * committed, 0 if the request had been answered already, [1, error] if an
 * effect was refused (the rest stands), or the error of a refused reply
 * push -- in which case nothing stays: the request is not marked answered
 * and its effects are not applied, as it becomes a dead letter. */
static const char commit_script[] =
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end\n"
    "if #KEYS > 1 then\n"
    "  local r = redis.pcall('RPUSH', KEYS[2], ARGV[3])\n"
    "  if type(r) == 'table' and r.err then\n"
    "    redis.call('DEL', KEYS[1])\n"
    "    return r\n"
    "  end\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "end\n"
    "local i, refused = 6, nil\n"
    "for _ = 1, tonumber(ARGV[5]) do\n"
    "  local argc = tonumber(ARGV[i])\n"
    "  local r = redis.pcall(unpack(ARGV, i + 1, i + argc))\n"
    "  if type(r) == 'table' and r.err and not refused then\n"
    "    refused = ARGV[i + 1] .. ': ' .. r.err\n"
    "  end\n"
    "  i = i + argc + 1\n"
    "end\n"
    "if refused then return {1, refused} end\n"
    "return 1\n";

/* KEYS: list, in-flight set, dead list, stats hash.  ARGV: key prefix
 * "{list}:", max deliveries, window, service, dead-letter bound.
 * Returns [requeued, dead]. */
static const char reap_script[] = IDENTITY_LUA
    "local requeued, dead = 0, 0\n"
    "for _, wid in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  local pid = string.match(wid, '^(.*)/[^/]*$') or wid\n"
    "  if redis.call('EXISTS', ARGV[1] .. 'alive:' .. pid) == 0 then\n"
    "    local list = ARGV[1] .. 'inflight:' .. wid\n"
    "    local items = redis.call('LRANGE', list, 0, -1)\n"
    "    for i = #items, 1, -1 do\n"
    "      local h = identity(items[i])\n"
    "      if redis.call('EXISTS', ARGV[1] .. 'done:' .. h) == 0 then\n"
    "        local count = ARGV[1] .. 'deliveries:' .. h\n"
    "        local n = redis.call('INCR', count)\n"
    "        redis.call('EXPIRE', count, ARGV[3])\n"
    "        if n >= tonumber(ARGV[2]) then\n"
    "          local t = redis.call('TIME')\n"
    "          redis.call('RPUSH', KEYS[3], cjson.encode({reason = 'taken by ' .. n ..\n"
    "            ' workers that died (max_deliveries ' .. ARGV[2] .. ')',\n"
    "            time = tonumber(t[1]) + tonumber(t[2]) / 1e6, service = ARGV[4],\n"
    "            message = items[i]}))\n"
    "          redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)\n"
    "          redis.call('HINCRBY', KEYS[4], 'dead', 1)\n"
    "          dead = dead + 1\n"
    "        else\n"
    "          redis.call('LPUSH', KEYS[1], items[i])\n"
    "          requeued = requeued + 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    redis.call('DEL', list)\n"
    "    redis.call('SREM', KEYS[2], wid)\n"
    "  end\n"
    "end\n"
    "return {requeued, dead}\n";

#define HEARTBEAT_BACKOFF_MAX_S 2.0

int rrpc__rel_init(rrpc__rel *r, const char *list_key, const char *service,
                   const rrpc__rel_options *opts)
{
    memset(r, 0, sizeof *r);
    char host[64] = "host", hex[33];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    if (rrpc__random_hex128(hex) != RRPC_OK)
        return RRPC_ESYS;
    hex[8] = '\0';
    r->opts = *opts;
    r->service = service;
    r->list_key = list_key;
    int n1 = snprintf(r->tag, sizeof r->tag, "{%s}:", list_key);
    int n2 = snprintf(r->pid_id, sizeof r->pid_id, "%s:%ld:%s", host, (long)getpid(), hex);
    int n3 = snprintf(r->set_key, sizeof r->set_key, "%sinflight", r->tag);
    int n4 = snprintf(r->alive_key, sizeof r->alive_key, "%salive:%s", r->tag, r->pid_id);
    int n5 = snprintf(r->done_prefix, sizeof r->done_prefix, "%sdone:", r->tag);
    if (n1 < 0 || n2 < 0 || n3 < 0 || n4 < 0 || n5 < 0 || (size_t)n1 >= sizeof r->tag ||
        (size_t)n3 >= sizeof r->set_key || (size_t)n4 >= sizeof r->alive_key ||
        (size_t)n5 >= sizeof r->done_prefix)
        return RRPC_EINVAL;
    snprintf(r->window_text, sizeof r->window_text, "%ld", (long)(opts->dedup_window_s + 0.5));
    snprintf(r->max_text, sizeof r->max_text, "%d", opts->max_deliveries);
    return RRPC_OK;
}

int rrpc__rel_worker_keys(const rrpc__rel *r, int thread, char *wid, size_t wid_len, char *inflight,
                          size_t inflight_len)
{
    int n = snprintf(wid, wid_len, "%s/%d", r->pid_id, thread);
    int m = snprintf(inflight, inflight_len, "%sinflight:%s", r->tag, wid);
    return n < 0 || m < 0 || (size_t)n >= wid_len || (size_t)m >= inflight_len ? RRPC_EINVAL
                                                                               : RRPC_OK;
}

void rrpc__rel_take_argv(const rrpc__rel *r, const char *inflight, const char *wid,
                         const char *count, const char *argv[9])
{
    const char *a[] = {"EVALSHA", r->take_sha,    "3", r->list_key, inflight, r->set_key,
                       count,     r->done_prefix, wid};
    memcpy(argv, a, sizeof a);
}

/* ---- commit ---------------------------------------------------------- */

static int grow(rrpc__cmd *c, size_t need)
{
    if (need <= c->cap)
        return RRPC_OK;
    size_t cap = c->cap ? c->cap * 2 : 16;
    while (cap < need)
        cap *= 2;
    char **argv = realloc(c->argv, cap * sizeof *argv);
    if (argv == NULL)
        return RRPC_ENOMEM;
    c->argv = argv;
    size_t *lens = realloc(c->lens, cap * sizeof *lens);
    if (lens == NULL)
        return RRPC_ENOMEM;
    c->lens = lens;
    c->cap = cap;
    return RRPC_OK;
}

static int add_arg(rrpc__cmd *c, const char *s, size_t len)
{
    if (grow(c, c->argc + 1) != RRPC_OK)
        return RRPC_ENOMEM;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return RRPC_ENOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    c->argv[c->argc] = copy;
    c->lens[c->argc++] = len;
    return RRPC_OK;
}

static int add_str(rrpc__cmd *c, const char *s)
{
    return add_arg(c, s, strlen(s));
}

static int add_num(rrpc__cmd *c, long long v)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", v);
    return add_str(c, text);
}

void rrpc__cmd_free(rrpc__cmd *c)
{
    for (size_t i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->lens);
    memset(c, 0, sizeof *c);
}

/* The answer remembered for a request: "K<len>:<reply key><response>" so
 * that a repeated request can be answered without being parsed, or "-"
 * when nothing was sent back. */
static int add_answer(rrpc__cmd *c, const char *key, size_t key_len, const char *response)
{
    if (key == NULL || response == NULL)
        return add_str(c, "-");
    size_t resp_len = strlen(response);
    char head[32];
    int n = snprintf(head, sizeof head, "K%zu:", key_len);
    char *answer = malloc((size_t)n + key_len + resp_len);
    if (answer == NULL)
        return RRPC_ENOMEM;
    memcpy(answer, head, (size_t)n);
    memcpy(answer + n, key, key_len);
    memcpy(answer + (size_t)n + key_len, response, resp_len);
    int rc = add_arg(c, answer, (size_t)n + key_len + resp_len);
    free(answer);
    return rc;
}

static int add_effects(rrpc__cmd *c, const json_t *effects)
{
    int rc = add_num(c, (long long)json_array_size(effects));
    size_t i;
    const json_t *cmd;
    json_array_foreach(effects, i, cmd)
    {
        rc = rc ? rc : add_num(c, (long long)json_array_size(cmd));
        for (size_t k = 0; rc == RRPC_OK && k < json_array_size(cmd); k++)
            rc = add_arg(c, json_string_value(json_array_get(cmd, k)),
                         json_string_length(json_array_get(cmd, k)));
    }
    return rc;
}

int rrpc__rel_commit_cmd(const rrpc__rel *r, rrpc__cmd *c, const char *sha1, const char *key,
                         size_t key_len, const char *response, const json_t *effects,
                         const char *reply_ttl)
{
    memset(c, 0, sizeof *c);
    char done[RRPC__KEY_MAX];
    snprintf(done, sizeof done, "%s%s", r->done_prefix, sha1);
    int with_reply = key != NULL && response != NULL;
    int rc = add_str(c, "EVALSHA");
    rc = rc ? rc : add_str(c, r->commit_sha);
    rc = rc ? rc : add_str(c, with_reply ? "2" : "1");
    rc = rc ? rc : add_str(c, done);
    rc = rc ? rc : (with_reply ? add_arg(c, key, key_len) : RRPC_OK);
    rc = rc ? rc : add_answer(c, key, key_len, response);
    rc = rc ? rc : add_str(c, r->window_text);
    rc = rc ? rc : add_str(c, with_reply ? response : "");
    rc = rc ? rc : add_str(c, reply_ttl);
    rc = rc ? rc : (effects ? add_effects(c, effects) : add_str(c, "0"));
    if (rc != RRPC_OK)
        rrpc__cmd_free(c);
    return rc;
}

int rrpc__rel_parse_answer(const char *answer, size_t len, const char **key, size_t *key_len,
                           const char **response, size_t *response_len)
{
    if (len < 3 || answer[0] != 'K')
        return 0;
    char *end = NULL;
    unsigned long long n = strtoull(answer + 1, &end, 10);
    if (end == NULL || *end != ':' || n == 0 || n > len - (size_t)(end + 1 - answer))
        return 0;
    *key = end + 1;
    *key_len = (size_t)n;
    *response = *key + n;
    *response_len = len - (size_t)(*response - answer);
    return 1;
}

/* ---- heartbeat and reaper --------------------------------------------- */

static int beat(rrpc__rel *r, rrpc__conn *c)
{
    char ttl_ms[32], bound[32];
    snprintf(ttl_ms, sizeof ttl_ms, "%ld", (long)(r->opts.heartbeat_ttl_s * 1000));
    snprintf(bound, sizeof bound, "%ld", r->opts.dead_letter_max);
    const char *set[] = {"SET", r->alive_key, "1", "PX", ttl_ms};
    const char *reap[] = {"EVAL",
                          reap_script,
                          "4",
                          r->list_key,
                          r->set_key,
                          r->opts.dead_key,
                          r->opts.stats_key,
                          r->tag,
                          r->max_text,
                          r->window_text,
                          r->service,
                          bound};
    int rc = rrpc__conn_append(c, 5, set, NULL);
    if (rc == RRPC_OK)
        rc = rrpc__conn_append(c, 12, reap, NULL);
    rrpc__reply *a = NULL, *b = NULL;
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &a);
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &b);
    if (rc == RRPC_OK && rrpc__reply_type(a) == RRPC__REPLY_ERROR) /* others would reap us */
        fprintf(stderr, "rrpc[%s/heartbeat]: cannot renew the heartbeat: %s\n", r->service,
                rrpc__reply_str(a, NULL));
    if (rc == RRPC_OK && rrpc__reply_type(b) == RRPC__REPLY_ARRAY && rrpc__reply_count(b) == 2) {
        atomic_fetch_add(r->redelivered, (uint64_t)rrpc__reply_integer(rrpc__reply_element(b, 0)));
        atomic_fetch_add(r->dead_letters, (uint64_t)rrpc__reply_integer(rrpc__reply_element(b, 1)));
    } else if (rc == RRPC_OK) {
        fprintf(stderr, "rrpc[%s/heartbeat]: reaper failed: %s\n", r->service,
                rrpc__reply_str(b, NULL) ? rrpc__reply_str(b, NULL) : "unexpected reply");
    }
    rrpc__reply_free(a);
    rrpc__reply_free(b);
    return rc;
}

/* Sleeps up to SECONDS, waking early when the server stops. */
static void nap(rrpc__rel *r, double seconds)
{
    double until = rrpc__monotonic() + seconds;
    while (!atomic_load(&r->stop) && rrpc__monotonic() < until)
        rrpc__sleep(0.02);
}

static void *heartbeat_main(void *arg)
{
    rrpc__rel *r = arg;
    double interval = r->opts.heartbeat_ttl_s / 3;
    double backoff = 0.05;
    while (!atomic_load(&r->stop)) {
        if (rrpc__conn_broken(r->conn) && rrpc__conn_reconnect(r->conn) != RRPC_OK) {
            nap(r, backoff);
            backoff = backoff * 2 > HEARTBEAT_BACKOFF_MAX_S ? HEARTBEAT_BACKOFF_MAX_S : backoff * 2;
            continue;
        }
        backoff = 0.05;
        beat(r, r->conn);
        nap(r, interval);
    }
    return NULL;
}

/* Loads one script; its SHA-1 (40 hex digits) goes to SHA. */
static int load_script(rrpc__conn *c, const char *script, char sha[41])
{
    const char *argv[] = {"SCRIPT", "LOAD", script};
    rrpc__reply *r = NULL;
    int rc = rrpc__conn_append(c, 3, argv, NULL);
    if (rc == RRPC_OK)
        rc = rrpc__conn_read(c, &r);
    size_t len = 0;
    const char *text = rc == RRPC_OK ? rrpc__reply_str(r, &len) : NULL;
    if (rc == RRPC_OK && (rrpc__reply_type(r) != RRPC__REPLY_STRING || len != 40))
        rc = RRPC_EREDIS;
    if (rc == RRPC_OK)
        memcpy(sha, text, 41);
    rrpc__reply_free(r);
    return rc;
}

int rrpc__rel_load_scripts(const rrpc__rel *r, rrpc__conn *c)
{
    char take[41], commit[41];
    int rc = load_script(c, take_script, take);
    if (rc == RRPC_OK)
        rc = load_script(c, commit_script, commit);
    /* The digests depend on the texts only: they are the same each time. */
    if (rc == RRPC_OK && (strcmp(take, r->take_sha) != 0 || strcmp(commit, r->commit_sha) != 0))
        rc = RRPC_EPROTO;
    return rc;
}

int rrpc__rel_start(rrpc__rel *r, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen)
{
    int rc = rrpc__conn_open(&r->conn, url, connect_timeout_s, err, errlen);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(r->conn, 10);
    /* Workers send EVALSHA: the script texts would be most of each commit. */
    if (rc == RRPC_OK && (rc = load_script(r->conn, take_script, r->take_sha)) == RRPC_OK)
        rc = load_script(r->conn, commit_script, r->commit_sha);
    if (rc == RRPC_OK)
        rc = beat(r, r->conn); /* alive before any worker takes a request */
    if (rc == RRPC_OK && pthread_create(&r->thread, NULL, heartbeat_main, r) != 0)
        rc = rrpc__fail(err, errlen, RRPC_ESYS, "cannot start the heartbeat thread");
    if (rc != RRPC_OK) {
        if (err[0] == '\0')
            rrpc__fail(err, errlen, rc, "%s", rrpc__conn_errmsg(r->conn));
        rrpc__conn_close(r->conn);
        r->conn = NULL;
        return rc;
    }
    r->started = 1;
    return RRPC_OK;
}

/* Leaves the registry of in-flight lists cleanly: workers whose lists are
 * empty are removed and the heartbeat is dropped.  A list that still holds
 * requests (a link broke at the wrong moment) is left for the reaper of
 * another process, which takes it at once. */
static void say_goodbye(rrpc__rel *r, char (*wids)[RRPC__KEY_MAX], char (*lists)[RRPC__KEY_MAX],
                        int n)
{
    for (int i = 0; i < n; i++) {
        rrpc__reply *len = NULL, *gone = NULL;
        const char *llen[] = {"LLEN", lists[i]};
        if (rrpc__conn_append(r->conn, 2, llen, NULL) != RRPC_OK ||
            rrpc__conn_read(r->conn, &len) != RRPC_OK)
            return;
        if (rrpc__reply_integer(len) == 0) {
            const char *srem[] = {"SREM", r->set_key, wids[i]};
            if (rrpc__conn_append(r->conn, 3, srem, NULL) == RRPC_OK &&
                rrpc__conn_read(r->conn, &gone) == RRPC_OK)
                rrpc__reply_free(gone);
        }
        rrpc__reply_free(len);
    }
    /* Without the heartbeat, any list left behind is reaped at once. */
    const char *del[] = {"DEL", r->alive_key};
    rrpc__reply *gone = NULL;
    if (rrpc__conn_append(r->conn, 2, del, NULL) == RRPC_OK &&
        rrpc__conn_read(r->conn, &gone) == RRPC_OK)
        rrpc__reply_free(gone);
}

void rrpc__rel_stop(rrpc__rel *r, char (*wids)[RRPC__KEY_MAX], char (*lists)[RRPC__KEY_MAX], int n)
{
    if (!r->started)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    if (!rrpc__conn_broken(r->conn))
        say_goodbye(r, wids, lists, n);
    rrpc__conn_close(r->conn);
    r->conn = NULL;
    r->started = 0;
    atomic_store(&r->stop, 0);
}
