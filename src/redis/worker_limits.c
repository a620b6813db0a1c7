/* worker_limits.c -- a worker's side of the limits (PROTOCOL.md section 9,
 * "Limits"): the admit and release scripts on the side link, and the
 * waiting requests moved back to the list when they are due.
 *
 * Every decision is one script on Redis's clock, so that all the workers
 * of a service, in any number of processes, share the counters: a GCRA
 * "theoretical arrival time" per rate, a sorted set of leases (scored by
 * expiry, renewed by the heartbeat: registry.c) per concurrency cap.  A
 * request that must wait goes into {L}:waiting in the same script, scored
 * by when it may run -- and in reliable mode leaves the worker's in-flight
 * hash there too -- so it is in Redis before the worker forgets it.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/keys.h"
#include "core/random.h"
#include "core/ratelimit.h"
#include "redis/conn.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How many due requests one move takes back, at most. */
#define PROMOTE_MAX "100"
/* A worker moves due requests back at most this often (with its pop). */
#define PROMOTE_EVERY_S 0.1

/* Redis's clock in ms, with its microseconds: a rate above 1000/s needs
 * them (in whole ms, every call after the first in a ms would be late). */
#define NOW_LUA                                                                                    \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"

/* Back onto the head of list L: the waiting member is "<token>\n<text>". */
#define BACK_LUA                                                                                   \
    "local function back(list, m)\n"                                                               \
    "  local nl = string.find(m, '\\n', 1, true)\n"                                                \
    "  redis.call('LPUSH', list, string.sub(m, nl + 1))\n"                                         \
    "end\n"

/* The scripts are kept one Lua line per C line. */
/* clang-format off */
/* KEYS: waiting, in-flight hash (or waiting again), then per rule its rate
 * key and its running key.  ARGV: rule count, lease ms, lease member,
 * request text ('': cannot wait), in-flight field ('': none), waiting
 * token, then per rule: rate, burst, concurrency, wait (1/0).  Returns
 * {0} (run: slots taken), {1, retry_ms, rule, by_concurrency} (refused)
 * or {2, ...} (waiting in {L}:waiting). */
const char rrpc__admit_script[] =
    NOW_LUA
    "local n, lease = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tats, over, retry, conc, wait = {}, 0, 0, 0, true\n"
    "for i = 1, n do\n"
    "  local a = 6 + (i - 1) * 4\n"
    "  local rate, burst = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])\n"
    "  local cap = tonumber(ARGV[a + 3])\n"
    "  local bad, after, byc = false, 0, 0\n"
    "  if rate > 0 then\n"
    "    local step = 1000 / rate\n"
    "    local tat = tonumber(redis.call('GET', KEYS[1 + 2 * i]) or now) or now\n"
    "    if tat < now then tat = now end\n"
    "    local late = tat + step - now - burst * step\n"
    "    if late > 0 then bad, after = true, late else tats[i] = tat + step end\n"
    "  end\n"
    "  if not bad and cap > 0 then\n"
    "    redis.call('ZREMRANGEBYSCORE', KEYS[2 + 2 * i], '-inf', string.format('%.3f', now))\n"
    "    if redis.call('ZCARD', KEYS[2 + 2 * i]) >= cap then bad, after, byc = true, 100, 1 end\n"
    "  end\n"
    "  if bad then\n"
    "    if over == 0 or after > retry then over, retry, conc = i, after, byc end\n"
    "    if ARGV[a + 4] ~= '1' then wait = false end\n"
    "  end\n"
    "end\n"
    "if over == 0 then\n"
    "  for i = 1, n do\n"
    "    if tats[i] then\n"
    "      redis.call('SET', KEYS[1 + 2 * i], string.format('%.3f', tats[i]), 'PX',\n"
    "        math.ceil(tats[i] - now) + 1000)\n"
    "    end\n"
    "    if tonumber(ARGV[6 + (i - 1) * 4 + 3]) > 0 then\n"
    "      redis.call('ZADD', KEYS[2 + 2 * i], string.format('%.3f', now + lease), ARGV[3])\n"
    "      redis.call('PEXPIRE', KEYS[2 + 2 * i], lease * 2)\n"
    "    end\n"
    "  end\n"
    "  return {0}\n"
    "end\n"
    "retry = math.ceil(retry)\n"
    "if wait and ARGV[4] ~= '' then\n"
    /* A concurrency waiter is woken by a release; this is the fallback. */
    "  local due = now + (conc == 1 and 1000 or retry)\n"
    "  redis.call('ZADD', KEYS[1], string.format('%.3f', due), ARGV[6] .. '\\n' .. ARGV[4])\n"
    "  if ARGV[5] ~= '' then redis.call('HDEL', KEYS[2], ARGV[5]) end\n"
    "  return {2, retry, over, conc}\n"
    "end\n"
    "return {1, retry, over, conc}\n";

/* KEYS: waiting, the list, then the running keys.  ARGV: the lease member.
 * Gives the slots back and wakes the first waiting request due within a
 * second (a concurrency waiter's fallback). */
const char rrpc__release_script[] = NOW_LUA BACK_LUA
    "for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end\n"
    "local soon = string.format('%.3f', now + 1000)\n"
    "local first = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', soon, 'LIMIT', 0, 1)\n"
    "if first[1] then\n"
    "  redis.call('ZREM', KEYS[1], first[1])\n"
    "  back(KEYS[2], first[1])\n"
    "end\n"
    "return 1\n";

/* KEYS: waiting, the list.  ARGV: how many at most.  Moves the requests
 * due back to the head of the list, the earliest first. */
const char rrpc__promote_script[] = NOW_LUA BACK_LUA
    "local upto = string.format('%.3f', now)\n"
    "local most = tonumber(ARGV[1])\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto, 'LIMIT', 0, most)\n"
    "for i = #due, 1, -1 do\n"
    "  redis.call('ZREM', KEYS[1], due[i])\n"
    "  back(KEYS[2], due[i])\n"
    "end\n"
    "return #due\n";
/* clang-format on */

/* "{L}<tag><len>:<scope>[:<tenant>]": a rule's counter, per tenant if the
 * rule says so (the scope's length keeps "a:b" + "c" apart from "a" + "b:c"). */
static int rule_key(char *buf, size_t len, const char *list, const char *tag,
                    const rrpc__rl_rule *r, const rrpc__rl_ask *ask)
{
    int tenant = r->per_tenant && ask->tenant != NULL;
    int n =
        snprintf(buf, len, "{%s}%s%zu:%s%s%.*s", list, tag, strlen(r->scope), r->scope,
                 tenant ? ":" : "", tenant ? (int)ask->tenant_len : 0, tenant ? ask->tenant : "");
    return n > 0 && (size_t)n < len ? RRPC_OK : RRPC_EINVAL;
}

/* One script on the side link: EVALSHA, loading it first (or again after
 * NOSCRIPT).  The reply (new), or NULL if the link failed. */
static rrpc__reply *side_script(worker *w, int which, const char *script, int argc,
                                const char **argv, size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (w->rl_sha[which][0] == '\0') {
            const char *load[] = {"SCRIPT", "LOAD", script};
            rrpc__reply *r = rrpc__side_command(w, 3, load, NULL);
            if (r == NULL)
                return NULL;
            size_t n = 0;
            const char *sha = rrpc__reply_str(r, &n);
            if (rrpc__reply_type(r) == RRPC__REPLY_ERROR || sha == NULL || n != 40)
                return r; /* an error: the caller logs it */
            memcpy(w->rl_sha[which], sha, 41);
            rrpc__reply_free(r);
        }
        argv[0] = "EVALSHA";
        argv[1] = w->rl_sha[which];
        if (lens != NULL) {
            lens[0] = 7;
            lens[1] = 40;
        }
        rrpc__reply *r = rrpc__side_command(w, argc, argv, lens);
        const char *e =
            r && rrpc__reply_type(r) == RRPC__REPLY_ERROR ? rrpc__reply_str(r, NULL) : NULL;
        if (e == NULL || strncmp(e, "NOSCRIPT", 8) != 0)
            return r;
        rrpc__reply_free(r);
        w->rl_sha[which][0] = '\0'; /* a restarted Redis: load it again */
    }
    return NULL;
}

/* A script's number, as Redis gives it (a Lua number is an integer). */
static long long num(const rrpc__reply *r)
{
    return r && rrpc__reply_type(r) == RRPC__REPLY_INTEGER ? rrpc__reply_integer(r)
                                                           : rrpc__reply_ll(r);
}

static int admit(void *ctx, const rrpc__rl_ask *ask, rrpc__rl_verdict *v)
{
    worker *w = ctx;
    const char *list = w->srv->list_key;
    char waiting[RRPC__KEY_MAX], keys[4][RRPC__KEY_MAX];
    char nrules[8], lease_ms[24], member[64], token[64], nums[2][4][32];
    const entry *e = w->current;
    int reliable = e != NULL && e->field != NULL && w->rk.inflight[0] != '\0';
    if (rrpc__tagged_key(waiting, sizeof waiting, list, RRPC__TAG_WAITING) != RRPC_OK)
        return RRPC_EINVAL;
    for (size_t i = 0; i < ask->count; i++)
        if (rule_key(keys[2 * i], sizeof keys[0], list, RRPC__TAG_RATE, ask->rules[i], ask) ||
            rule_key(keys[2 * i + 1], sizeof keys[0], list, RRPC__TAG_RUNNING, ask->rules[i], ask))
            return RRPC_EINVAL;
    snprintf(nrules, sizeof nrules, "%zu", ask->count);
    snprintf(lease_ms, sizeof lease_ms, "%ld", ask->lease_ms > 0 ? ask->lease_ms : 5000);
    if (w->token[0] == '\0' && rrpc__random_hex128(w->token) != RRPC_OK)
        return RRPC_ENOMEM;
    w->rl_seq++;
    snprintf(member, sizeof member, "%.32s:%d:%llu", w->token, w->id, w->rl_seq);
    snprintf(token, sizeof token, "%.32s:%d:%016llx", w->token, w->id, w->rl_seq);
    const char *argv[40];
    size_t lens[40];
    int argc = 0;
#define ARG(s, n) (argv[argc] = (s), lens[argc++] = (n))
#define STR(s)    ARG((s), strlen(s))
    STR("EVALSHA");
    STR("sha");
    char numkeys[8];
    snprintf(numkeys, sizeof numkeys, "%zu", 2 + 2 * ask->count);
    STR(numkeys);
    STR(waiting);
    STR(reliable ? w->rk.inflight : waiting);
    for (size_t i = 0; i < 2 * ask->count; i++)
        STR(keys[i]);
    STR(nrules);
    STR(lease_ms);
    STR(member);
    if (ask->text != NULL)
        ARG(ask->text, ask->text_len);
    else
        STR("");
    STR(reliable ? e->field : "");
    STR(token);
    for (size_t i = 0; i < ask->count; i++) {
        const rrpc__rl_rule *r = ask->rules[i];
        snprintf(nums[i][0], sizeof nums[i][0], "%.17g", r->rate);
        snprintf(nums[i][1], sizeof nums[i][1], "%.17g", r->burst);
        snprintf(nums[i][2], sizeof nums[i][2], "%ld", r->concurrency);
        snprintf(nums[i][3], sizeof nums[i][3], "%d", r->wait);
        for (int k = 0; k < 4; k++)
            STR(nums[i][k]);
    }
#undef STR
#undef ARG
    rrpc__reply *r = side_script(w, 0, rrpc__admit_script, argc, argv, lens);
    if (r == NULL || rrpc__reply_type(r) != RRPC__REPLY_ARRAY || rrpc__reply_count(r) < 1) {
        if (!w->rl_failing)
            rrpc__log_worker(w, "cannot check the limits: requests run unchecked meanwhile",
                             r ? rrpc__reply_str(r, NULL) : "the link failed");
        w->rl_failing = 1;
        rrpc__reply_free(r);
        return RRPC_EREDIS;
    }
    w->rl_failing = 0;
    long long verdict = num(rrpc__reply_element(r, 0));
    if (verdict == 0) {
        v->outcome = RRPC__RL_RUN;
        for (size_t i = 0; i < ask->count; i++)
            if (ask->rules[i]->concurrency > 0) {
                rrpc__rl_lease *l = &v->leases[v->nleases++];
                snprintf(l->key, sizeof l->key, "%s", keys[2 * i + 1]);
                snprintf(l->member, sizeof l->member, "%s", member);
            }
    } else {
        v->outcome = verdict == 2 ? RRPC__RL_DEFERRED : RRPC__RL_REFUSED;
        v->retry_after_ms = num(rrpc__reply_element(r, 1));
        long long rule = num(rrpc__reply_element(r, 2));
        v->rule = rule >= 1 && (size_t)rule <= ask->count ? ask->rules[rule - 1] : NULL;
        v->by_concurrency = num(rrpc__reply_element(r, 3)) == 1;
    }
    rrpc__reply_free(r);
    return RRPC_OK;
}

static void release(void *ctx, const rrpc__rl_verdict *v)
{
    worker *w = ctx;
    char waiting[RRPC__KEY_MAX];
    if (v->nleases == 0 ||
        rrpc__tagged_key(waiting, sizeof waiting, w->srv->list_key, RRPC__TAG_WAITING) != RRPC_OK)
        return;
    const char *argv[8] = {"EVALSHA", "sha", v->nleases == 2 ? "4" : "3", waiting,
                           w->srv->list_key};
    int argc = 5;
    for (size_t i = 0; i < v->nleases; i++)
        argv[argc++] = v->leases[i].key;
    argv[argc++] = v->leases[0].member;
    rrpc__reply *r = side_script(w, 1, rrpc__release_script, argc, argv, NULL);
    if (r == NULL || rrpc__reply_type(r) == RRPC__REPLY_ERROR)
        rrpc__log_worker(w, "cannot give a concurrency slot back (its lease expires)",
                         r ? rrpc__reply_str(r, NULL) : "the link failed");
    rrpc__reply_free(r);
}

void rrpc__limits_io(worker *w, rrpc__handler_io *io)
{
    (void)w;
    io->admit = admit;
    io->release = release;
}

void rrpc__send_promote(worker *w)
{
    if (!atomic_load_explicit(&w->srv->rl.ever, memory_order_relaxed))
        return; /* never had limits: nothing can be waiting */
    double now = rrpc__monotonic();
    if (now - w->promoted_at < PROMOTE_EVERY_S)
        return;
    w->promoted_at = now;
    char waiting[RRPC__KEY_MAX];
    if (rrpc__tagged_key(waiting, sizeof waiting, w->srv->list_key, RRPC__TAG_WAITING) != RRPC_OK)
        return;
    const char *argv[] = {"EVAL",  rrpc__promote_script, "2",
                          waiting, w->srv->list_key,     PROMOTE_MAX};
    rrpc__send_cmd(w, rrpc__plain_op, 6, argv, NULL);
}
