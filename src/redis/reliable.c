/* reliable.c -- the at-least-once delivery mode of the server (RELIABILITY.md).
 *
 * In reliable mode a worker never holds a request that Redis has forgotten:
 * requests move from the service's list into the worker's own in-flight
 * hash and leave it only in the same atomic step that stores their answer.
 * Three Lua scripts keep each step atomic inside Redis:
 *
 *   take    moves what BLMOVE landed and up to N more requests into the
 *           in-flight hash, each under a field of its own, and returns
 *           every request held there (it neither decodes nor hashes them:
 *           the worker computes their identities, rel_identity.c, and
 *           reads the answers remembered under them -- MGET -- before it
 *           runs any of them);
 *   commit  completes one request: remembers its answer, pushes the
 *           response (only onto a reply list), applies the handler's
 *           effects, files its dead letter and removes it from the hash --
 *           all or nothing, at most once per request;
 *   reap    puts the requests of workers whose heartbeat expired back at the
 *           head of the service's list, counting deliveries, and turns a
 *           request delivered max_deliveries times into a dead letter.
 *
 * Each script checks every key it could fail on before its first write:
 * Redis does not undo a script's writes, so a script that failed halfway
 * would leave requests half-moved.  A message larger than the size limit is
 * never decoded in Lua.  Every key but the dead-letter list and the stats
 * hash carries the list key as a Redis Cluster hash tag.  The heartbeat runs
 * on a thread of its own so that a slow handler never makes its worker look
 * dead.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/keys.h"
#include "core/clock.h"
#include "core/internal.h"
#include "core/log.h"
#include "core/random.h"
#include "core/shard.h"
#include "redis/reliable.h"
#include "redis/conn.h"
#include "core/url.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A request's identity and the key its deliveries are counted under (40
 * hex digits each; the two are equal for a stable identity), as the
 * reaper computes them for a request it puts back.  The worker computes
 * the same identity in C (rel_identity.c) when it takes the request; the
 * in-flight record is the request text alone.  The rules:
 *   - a call (a request object with a string id, or an integer id that a
 *     double holds exactly): its reply_to and id, so that a caller's retry
 *     is recognised even if its text changed (a new deadline, say);
 *   - a notification with an "idempotency_key" (a non-empty string): that
 *     key, so that its sender can make repeated sends run once;
 *   - a batch whose every element is such a call: its exact text;
 *   - anything else (a notification without a key, a batch holding one,
 *     text that is not JSON, a message above the size limit): this take of
 *     it (worker id and field), so that every send runs once -- and a
 *     redelivery, which goes back to the list and is taken anew, is never
 *     confused with an earlier send.  Its deliveries are counted by its
 *     exact text (by its length and first bytes above the size limit).
 * A message larger than the worker's size limit is never decoded here:
 * the worker refuses it without parsing it either. */
#define IDENTITY_LUA                                                                               \
    "local function call_id(req)\n"                                                                \
    "  if type(req) ~= 'table' or req.jsonrpc ~= '2.0' then return nil end\n"                      \
    "  local id, to = req.id, req.reply_to\n"                                                      \
    "  if type(to) ~= 'string' then to = '' end\n"                                                 \
    "  if type(id) == 'string' then return redis.sha1hex('s\\n' .. to .. '\\n' .. id) end\n"       \
    "  if type(id) == 'number' and id == math.floor(id) and math.abs(id) < 2^53 then\n"            \
    "    return redis.sha1hex('n\\n' .. to .. '\\n' .. string.format('%.0f', id))\n"               \
    "  end\n"                                                                                      \
    "  return nil\n"                                                                               \
    "end\n"                                                                                        \
    "local function identity(item, max, token)\n"                                                  \
    "  if #item <= max then\n"                                                                     \
    "    local ok, req = pcall(cjson.decode, item)\n"                                              \
    "    if ok and type(req) == 'table' then\n"                                                    \
    "      local h = call_id(req)\n"                                                               \
    "      if h then return h .. h end\n"                                                          \
    "      local key, note = req.idempotency_key, req.jsonrpc == '2.0' and req.id == nil\n"        \
    "      if note and type(key) == 'string' and #key > 0 then\n"                                  \
    "        h = redis.sha1hex('k\\n' .. key)\n"                                                   \
    "        return h .. h\n"                                                                      \
    "      end\n"                                                                                  \
    "      if #req > 0 then\n"                                                                     \
    "        local calls = true\n"                                                                 \
    "        for _, e in ipairs(req) do calls = calls and call_id(e) ~= nil end\n"                 \
    "        if calls then h = redis.sha1hex(item) return h .. h end\n"                            \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "    return redis.sha1hex('t\\n' .. token) .. redis.sha1hex(item)\n"                           \
    "  end\n"                                                                                      \
    "  return redis.sha1hex('t\\n' .. token) ..\n"                                                 \
    "    redis.sha1hex(#item .. '\\n' .. string.sub(item, 1, 4096))\n"                             \
    "end\n"

const char *rrpc__rel_identity_lua(void)
{
    return IDENTITY_LUA;
}

/* Refuses, before anything is written, to work on keys of the wrong type:
 * a script that failed after it had moved requests would leave them
 * half-moved (Redis does not undo a script's writes). */
#define CHECK_TYPES_LUA                                                                            \
    "local function check_types(want)\n"                                                           \
    "  for i, w in ipairs(want) do\n"                                                              \
    "    local t = redis.call('TYPE', KEYS[i]).ok\n"                                               \
    "    if t ~= 'none' and t ~= w then\n"                                                         \
    "      return redis.error_reply('WRONGTYPE rrpc: ' .. KEYS[i] .. ' is a ' .. t ..\n"           \
    "        ', not a ' .. w)\n"                                                                   \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"

/* Runs CMD [KEY] over LIST in slices (Lua's unpack is bounded): the
 * replies of the slices joined (an array), or summed (an integer). */
#define BATCHED_LUA                                                                                \
    "local function batched(cmd, key, list)\n"                                                     \
    "  local out, sum = {}, 0\n"                                                                   \
    "  for i = 1, #list, 1000 do\n"                                                                \
    "    local j = math.min(i + 999, #list)\n"                                                     \
    "    local r = key and redis.call(cmd, key, unpack(list, i, j)) or\n"                          \
    "      redis.call(cmd, unpack(list, i, j))\n"                                                  \
    "    if type(r) == 'table' then\n"                                                             \
    "      for x = 1, #r do out[#out + 1] = r[x] end\n"                                            \
    "    elseif type(r) == 'number' then\n"                                                        \
    "      sum = sum + r\n"                                                                        \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return out, sum\n"                                                                          \
    "end\n"

/* Priorities (PROTOCOL.md section 7), only while {L}:high or {L}:low
 * holds something (one EXISTS otherwise): the take holds what BLMOVE
 * landed (at least one) plus COUNT, from {L}:high first, then the landed
 * requests (they were L's head), L, {L}:low; landed requests it has no
 * room for go back to L's head.  BLMOVE blocks on L alone, so when L and
 * {L}:high are left empty while {L}:low is not, the head of {L}:low moves
 * to L: the next BLMOVE takes it at once instead of sitting out its
 * timeout.  Sets more, high, low and back; writes nothing. */
#define PRIORITY_TAKE_LUA                                                                          \
    "local function priority_take(landed, n)\n"                                                    \
    "  local want = math.max(#landed, 1) + n\n"                                                    \
    "  high = redis.call('LRANGE', KEYS[5], 0, want - 1)\n"                                        \
    "  local room = want - #high\n"                                                                \
    "  local kept = {}\n"                                                                          \
    "  for i, item in ipairs(landed) do\n"                                                         \
    "    if i <= room then kept[#kept + 1] = item end\n"                                           \
    "  end\n"                                                                                      \
    "  for i = #landed, room + 1, -1 do back[#back + 1] = landed[i] end\n"                         \
    "  room = room - #kept\n"                                                                      \
    "  more = room > 0 and redis.call('LRANGE', KEYS[1], 0, room - 1) or {}\n"                     \
    "  room = room - #more\n"                                                                      \
    "  low = room > 0 and redis.call('LRANGE', KEYS[6], 0, room - 1) or {}\n"                      \
    "  return kept\n"                                                                              \
    "end\n"                                                                                        \
    "local function priority_settle()\n"                                                           \
    "  for _, item in ipairs(back) do redis.call('LPUSH', KEYS[1], item) end\n"                    \
    "  if #high > 0 then redis.call('LTRIM', KEYS[5], #high, -1) end\n"                            \
    "  if #low > 0 then redis.call('LTRIM', KEYS[6], #low, -1) end\n"                              \
    "  if redis.call('LLEN', KEYS[1]) == 0 and redis.call('LLEN', KEYS[5]) == 0 and\n"             \
    "     redis.call('LLEN', KEYS[6]) > 0 then\n"                                                  \
    "    redis.call('LMOVE', KEYS[6], KEYS[1], 'LEFT', 'LEFT')\n"                                  \
    "  end\n"                                                                                      \
    "end\n"

/* KEYS: list, landing list, in-flight hash, worker set, the list's high
 * and low lists.  ARGV: count (0: none more), worker id, token base.
 * Moves what BLMOVE landed and up to COUNT more requests into the
 * in-flight hash (in priority order, above), each under a field of its
 * own, and returns [field, request, ...] for everything held there,
 * oldest first.  It neither decodes nor hashes a request (that was most
 * of Redis's time in reliable mode): the worker computes each request's
 * identity (rel_identity.c) and reads the answers remembered under them
 * (MGET, EXISTS) before it runs anything.  Per batch: one HSET,
 * one DEL, one LTRIM; everything held is read back only if something was
 * held before. */
static const char take_head[] = CHECK_TYPES_LUA BATCHED_LUA;
/* The take script is longer than a C string literal may portably be. */
static const char take_tail[] =
    "local more, high, low, back = {}, {}, {}, {}\n" PRIORITY_TAKE_LUA
    /* Without priorities every key is typed before the first write by a
     * command that fails on the wrong type (HLEN, LRANGE, and SADD, that
     * first write), so the four TYPEs are asked only when one failed (to
     * say which key) and on the priority path. */
    "local function fail(r)\n"
    "  return check_types({'list', 'list', 'hash', 'set'}) or redis.error_reply(r.err)\n"
    "end\n"
    "local n = tonumber(ARGV[1])\n"
    "local before = redis.pcall('HLEN', KEYS[3])\n"
    "if type(before) == 'table' then return fail(before) end\n"
    "local landed = redis.pcall('LRANGE', KEYS[2], 0, -1)\n"
    "if landed.err then return fail(landed) end\n"
    "local landed_n, kept = #landed, landed\n"
    "local prio = redis.call('EXISTS', KEYS[5], KEYS[6]) > 0\n"
    "if prio then\n"
    "  local bad = check_types({'list', 'list', 'hash', 'set', 'list', 'list'})\n"
    "  if bad then return bad end\n"
    "  kept = priority_take(landed, n)\n"
    "else\n"
    "  more = n > 0 and redis.pcall('LRANGE', KEYS[1], 0, n - 1) or {}\n"
    "  if more.err then return fail(more) end\n"
    "end\n"
    /* The first write: under OOM (or on a set of the wrong type) nothing moved. */
    "local added = redis.pcall('SADD', KEYS[4], ARGV[2])\n"
    "if type(added) == 'table' then return fail(added) end\n"
    /* The field "<base>.<k in 6 digits>", built from cached digit pairs:
     * string.format was a tenth of the take's instructions. */
    "local out, k, dot, two = {}, 0, ARGV[3] .. '.', {}\n"
    "local function pair(i)\n"
    "  local s = two[i]\n"
    "  if not s then s = string.char(48 + (i - i % 10) / 10, 48 + i % 10); two[i] = s end\n"
    "  return s\n"
    "end\n"
    "local function hold(item)\n"
    "  k = k + 1\n"
    "  local c = k % 100\n"
    "  local b = (k - c) / 100 % 100\n"
    "  local a = (k - c - 100 * b) / 10000\n"
    "  out[2 * k - 1] = a < 100 and dot .. pair(a) .. pair(b) .. pair(c) or\n"
    "    string.format('%s.%06d', ARGV[3], k)\n"
    "  out[2 * k] = item\n"
    "end\n"
    "for _, item in ipairs(high) do hold(item) end\n"
    "for _, item in ipairs(kept) do hold(item) end\n"
    "for _, item in ipairs(more) do hold(item) end\n"
    "for _, item in ipairs(low) do hold(item) end\n"
    "if k > 0 then batched('HSET', KEYS[3], out) end\n"
    "if landed_n > 0 then redis.call('DEL', KEYS[2]) end\n"
    "if #more > 0 then redis.call('LTRIM', KEYS[1], #more, -1) end\n"
    "if prio then priority_settle() end\n"
    "if before > 0 then\n" /* held before (a commit refused, or a take lost): all of it */
    "  local all = redis.call('HGETALL', KEYS[3])\n"
    "  local fields, recs = {}, {}\n"
    "  for i = 1, #all, 2 do fields[#fields + 1] = all[i]; recs[all[i]] = all[i + 1] end\n"
    "  table.sort(fields)\n"
    "  out = {}\n"
    "  for _, f in ipairs(fields) do out[#out + 1] = f; out[#out + 1] = recs[f] end\n"
    "end\n"
    "return out\n";

/* Whether REPLY takes a push (rule 5 of PROTOCOL.md section 3): nil, or
 * why not; asked once per key and call.  PTTL first: a key that is not
 * there (-2, a caller waiting on it) needs nothing more -- one integer,
 * not TYPE's table. */
#define REFUSAL_LUA                                                                                \
    "local keys = {}\n"                                                                            \
    "local function refusal(reply)\n"                                                              \
    "  local v = keys[reply]\n"                                                                    \
    "  if v ~= nil then return v or nil end\n"                                                     \
    "  local pttl, why = redis.pcall('PTTL', reply), false\n"                                      \
    "  if type(pttl) == 'table' then why = 'reply failed: ' .. pttl.err\n"                         \
    "  elseif pttl ~= -2 then\n" /* there: only a list with an expiry takes a push */              \
    "    local t = redis.pcall('TYPE', reply)\n"                                                   \
    "    if t.err then why = 'reply failed: ' .. t.err\n"                                          \
    "    elseif t.ok ~= 'list' then why = 'reply key refused: ' .. t.ok\n"                         \
    "    elseif pttl < 0 then why = 'reply key refused: list without expiry' end\n"                \
    "  end\n"                                                                                      \
    "  keys[reply] = why\n"                                                                        \
    "  return why or nil\n"                                                                        \
    "end\n"

/* Runs CMD [KEY] T[I..J] in slices (Lua's unpack is bounded): the replies
 * joined (an array), or summed (an integer). */
#define RANGED_LUA                                                                                 \
    "local function ranged(cmd, key, t, i, j)\n"                                                   \
    "  local out, sum = {}, 0\n"                                                                   \
    "  for s = i, j, 1000 do\n"                                                                    \
    "    local e = math.min(s + 999, j)\n"                                                         \
    "    local r = key and redis.call(cmd, key, unpack(t, s, e)) or\n"                             \
    "      redis.call(cmd, unpack(t, s, e))\n"                                                     \
    "    if type(r) == 'table' then\n"                                                             \
    "      for x = 1, #r do out[#out + 1] = r[x] end\n"                                            \
    "    else\n"                                                                                   \
    "      sum = sum + r\n"                                                                        \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return out, sum\n"                                                                          \
    "end\n"

/* The commit of a batch of plain answers (no effect, no dead letter, no
 * answer sent again: what a busy service commits), grouped by reply key.
 * ARGV[5] is 'release+g' or 'hold+g' and the layout: KEYS in-flight hash,
 * dead list, stats hash, the groups' reply keys, then every request's done
 * key in group order; ARGV window, reply ttl, dead-letter bound, the count
 * N, the mode, the group count G, then per group "K<n>:" (its reply key,
 * of n bytes, is the next of KEYS) or '0' (none) and its count C; then the
 * N requests' fields, in group order; then per group its C responses
 * (with a reply key: the answer remembered is "K<n>:<reply key><response>",
 * built here) or its C answers to remember (without).
 *
 * The same outcomes as the general layout below, per request in group
 * order, at a fraction of its instructions: when no done key exists, every
 * reply key takes a push and no field comes twice, the batch is committed
 * at once -- one EXISTS, one RPUSH and one EXPIRE per reply key, one SETEX
 * per request, one HDEL -- without a Lua table per request or group
 * (walking the general layout's eight arguments per request was about a
 * third of its cost).  Otherwise each request is judged on its own, as
 * below.
 *
 * Whether each request is still held is read (HMGET, which brings the
 * requests' whole texts into Lua: a sixth of the commit's instructions)
 * only to judge one by one, and on a Cluster.  A batch committed at once
 * on one Redis does not read it: a request of it that is no longer held
 * (the reaper took it back while this worker looked dead) has no answer
 * remembered and is a plain answer, and is committed as the first answer
 * to its identity -- a copy put back on the list finds it remembered and
 * does not run, as a copy another worker holds would (RELIABILITY.md).
 * Its HDEL is a pcall for the same reason: an in-flight key that is no
 * longer a hash holds nothing. */
static const char commit_grouped[] =
    "local function rpush(reply, t, i, j)\n"
    "  for s = i, j, 1000 do\n"
    "    local r = redis.pcall('RPUSH', reply, unpack(t, s, math.min(s + 999, j)))\n"
    "    if type(r) == 'table' and string.sub(r.err or '', 1, 3) == 'OOM' then return r.err end\n"
    "  end\n"
    "end\n"
    "local function grouped()\n"
    "  local held, window, ttl, n = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[4])\n"
    "  local ng, hold = tonumber(ARGV[6]), ARGV[5] == 'hold+g'\n"
    "  local f0, rk, fast = 7 + 2 * ng, 4, true\n"
    "  local pay, greply, gpre, gc, gwhy = f0 + n - 1, {}, {}, {}, {}\n"
    "  for g = 1, ng do\n"
    "    local head = ARGV[5 + 2 * g]\n"
    "    gc[g], greply[g], gpre[g], gwhy[g] = tonumber(ARGV[6 + 2 * g]), false, false, false\n"
    "    if head ~= '0' then\n"
    "      greply[g], gpre[g] = KEYS[rk], head .. KEYS[rk]\n"
    "      gwhy[g] = refusal(KEYS[rk]) or false\n"
    "      if gwhy[g] then fast = false end\n"
    "      rk = rk + 1\n"
    "    end\n"
    "  end\n"
    "  local d, seen, isheld = rk, {}, nil\n" /* done keys: KEYS[d .. d + n - 1] */
    "  local _, anydone = ranged('EXISTS', nil, KEYS, d, d + n - 1)\n"
    "  fast = fast and anydone == 0\n"
    "  for i = 1, fast and n or 0 do\n"
    "    local field = ARGV[f0 + i - 1]\n"
    "    if seen[field] then fast = false; break end\n"
    "    seen[field] = true\n"
    "  end\n"
    "  if not fast or hold then\n"
    "    isheld = ranged('HMGET', held, ARGV, f0, f0 + n - 1)\n"
    "    for i = 1, fast and n or 0 do\n"
    "      if not isheld[i] then fast = false; break end\n"
    "    end\n"
    "  end\n"
    "  local out, j = {}, 0\n"
    "  if fast then\n"
    "    for g = 1, ng do\n" /* the first write: out of memory changes nothing */
    "      if greply[g] then\n"
    "        local oom = rpush(greply[g], ARGV, pay + j + 1, pay + j + gc[g])\n"
    "        if oom then return redis.error_reply(oom) end\n"
    "        redis.pcall('EXPIRE', greply[g], ttl)\n"
    "      end\n"
    "      j = j + gc[g]\n"
    "    end\n"
    "    j = 0\n"
    "    for g = 1, ng do\n"
    "      local pre = gpre[g]\n"
    "      for _ = 1, gc[g] do\n"
    "        j = j + 1\n"
    "        local p = ARGV[pay + j]\n"
    "        redis.call('SETEX', KEYS[d + j - 1], window, pre and pre .. p or p)\n"
    "        out[j] = 1\n"
    "      end\n"
    "    end\n"
    "    for s = hold and n + 1 or 1, n, 1000 do\n"
    "      redis.pcall('HDEL', held, unpack(ARGV, f0 + s - 1, f0 + math.min(s + 999, n) - 1))\n"
    "    end\n"
    "    return out\n"
    "  end\n"
    "  local released, remembered, release = {}, {}, {}\n"
    "  for g = 1, ng do\n"
    "    local list, reply, pre, why = {}, greply[g], gpre[g], gwhy[g]\n"
    "    for _ = 1, gc[g] do\n"
    "      j = j + 1\n"
    "      local field, done, p, r = ARGV[f0 + j - 1], KEYS[d + j - 1], ARGV[pay + j], 0\n"
    "      if isheld[j] and not released[field] then\n"
    "        local t = remembered[done] and 'string' or\n"
    "          (anydone == 0 and 'none' or redis.call('TYPE', done).ok)\n"
    "        if t == 'string' then\n" /* another worker answered it first */
    "          released[field] = true\n"
    "          release[#release + 1] = field\n"
    "        elseif t ~= 'none' then\n"
    "          r = {'refused', 'dedup key refused: ' .. t}\n"
    "        elseif why then\n"
    "          r = {'refused', why}\n"
    "        else\n"
    "          if reply then list[#list + 1] = p end\n"
    "          redis.call('SETEX', done, window, pre and pre .. p or p)\n"
    "          remembered[done], released[field], r = true, true, 1\n"
    "          release[#release + 1] = field\n"
    "        end\n"
    "      end\n"
    "      out[j] = r\n"
    "    end\n"
    "    if #list > 0 then\n"
    "      local oom = rpush(reply, list, 1, #list)\n"
    "      if oom then return redis.error_reply(oom) end\n"
    "      redis.pcall('EXPIRE', reply, ttl)\n"
    "    end\n"
    "  end\n"
    "  if not hold and #release > 0 then batched('HDEL', held, release) end\n"
    "  return out\n"
    "end\n"
    "if string.sub(ARGV[5], -2) == '+g' then return grouped() end\n";

/* KEYS: in-flight hash, dead list, stats hash, then per request its done
 * key[, its reply key].  ARGV: window, reply ttl, dead-letter bound, the
 * count N of requests, 'hold' or 'release', then per request: its key
 * count (1, or 2 with a reply key), field, answer to remember ('': none,
 * the request's answer is being sent again), response, dead letter ('':
 * none), effect count, then per effect its argc and arguments.
 *
 * Completes N requests held in the in-flight hash, each all or nothing:
 * remembers its answer, pushes its response, applies its effects, files
 * its dead letter and releases it.  With 'hold' (Redis Cluster, where the
 * reply keys live in other slots and are not named here) the requests
 * stay in the hash: the worker pushes each response and then releases it,
 * and a worker that dies before that leaves them to the reaper, which
 * puts them back to be answered again from their memory.  Returns one outcome per request, in
 * order: 1; [1, error] if an effect was refused (the rest stands); 0 if
 * the request is no longer held (this was done already, or the reaper took
 * it back) or another worker answered it first; ['refused', reason] having
 * changed nothing of it, when the reply key is refused or the dedup key is
 * not a string (the worker then commits it again with the dead letter it
 * builds for that reason); or an error having changed nothing of it (the
 * dead-letter list or stats hash of the wrong type: held, retried).  Each
 * request's checks come before its writes, so one bad request costs only
 * itself.  Redis refuses a write for memory only before a script's first
 * write: then the whole script fails having changed nothing, and every
 * request stays held, to be retried.
 *
 * What can be done once per batch is: whether the requests are held (one
 * HMGET), whether any dedup key exists (one EXISTS), a reply key's checks
 * (once per key: after a push it is a list that gets its expiry), the
 * pushes (one RPUSH per key, sent before any effect or dead letter, in the
 * order of the requests), the expiries (one per key) and the release (one
 * HDEL).  Per request there remains the SET of its answer. */
static const char commit_head[] =
    "local held, window, ttl, trim = KEYS[1], ARGV[1], ARGV[2], ARGV[3]\n"
    "local ents, fields, dones = {}, {}, {}\n"
    "local k, a = 4, 6\n"
    "for j = 1, tonumber(ARGV[4]) do\n"
    "  local nk = tonumber(ARGV[a])\n"
    "  local e = {done = KEYS[k], reply = nk > 1 and KEYS[k + 1] or nil, a = a + 1}\n"
    "  local after = a + 6\n"
    "  for _ = 1, tonumber(ARGV[a + 5]) do after = after + tonumber(ARGV[after]) + 1 end\n"
    "  ents[j], fields[j], dones[j] = e, ARGV[a + 1], KEYS[k]\n"
    "  k, a = k + nk, after\n"
    "end\n"
    "if #ents == 0 then return {} end\n"
    "local isheld = batched('HMGET', held, fields)\n"
    "local _, anydone = batched('EXISTS', nil, dones)\n"
    "local released, remembered, release = {}, {}, {}\n"
    "local pushes, order, pushed = {}, {}, {}\n"
    "local dead_checked, dead_bad = false, nil\n"
    "local function bad_dead()\n"
    "  if dead_checked then return dead_bad end\n"
    "  dead_checked = true\n"
    "  for i, w in ipairs({'list', 'hash'}) do\n"
    "    local t = redis.call('TYPE', KEYS[1 + i]).ok\n"
    "    if t ~= 'none' and t ~= w then\n"
    "      dead_bad = {err = 'WRONGTYPE rrpc: ' .. KEYS[1 + i] .. ' is a ' .. t}\n"
    "    end\n"
    "  end\n"
    "  return dead_bad\n"
    "end\n"
    "local function done_type(done)\n"
    "  if remembered[done] then return 'string' end\n"
    "  if anydone == 0 then return 'none' end\n"
    "  return redis.call('TYPE', done).ok\n"
    "end\n"
    /* Sends the pushes held so far.  Out of memory can only be the first
     * write: it fails the script having changed nothing.  Nothing else can
     * fail on a key checked (unless an effect changed it meanwhile). */
    "local function push()\n"
    "  for _, reply in ipairs(order) do\n"
    "    local list = pushes[reply]\n"
    "    for i = 1, #list, 1000 do\n"
    "      local r = redis.pcall('RPUSH', reply, unpack(list, i, math.min(i + 999, #list)))\n"
    "      if type(r) == 'table' and string.sub(r.err or '', 1, 3) == 'OOM' then return r.err end\n"
    "    end\n"
    "    pushed[reply] = true\n"
    "  end\n"
    "  order, pushes = {}, {}\n"
    "end\n";
static const char commit_tail[] =
    "local function commit(j)\n"
    "  local e = ents[j]\n"
    "  local field, answer, response, letter = ARGV[e.a], ARGV[e.a + 1], ARGV[e.a + 2],\n"
    "    ARGV[e.a + 3]\n"
    "  if not isheld[j] or released[field] then return 0 end\n"
    "  local remember, dead = answer ~= '', letter ~= ''\n"
    "  if remember then\n"
    "    local t = done_type(e.done)\n"
    "    if t == 'string' then\n"
    "      released[field] = true\n"
    "      release[#release + 1] = field\n"
    "      return 0\n"
    "    elseif t ~= 'none' then\n"
    "      if not dead then return {'refused', 'dedup key refused: ' .. t} end\n"
    "      remember = false\n"
    "    end\n"
    "  end\n"
    "  if dead and bad_dead() then return bad_dead() end\n"
    "  if e.reply then\n"
    "    local why = refusal(e.reply)\n"
    "    if why then return {'refused', why} end\n"
    "    if not pushes[e.reply] then\n"
    "      pushes[e.reply] = {}\n"
    "      order[#order + 1] = e.reply\n"
    "    end\n"
    "    local list = pushes[e.reply]\n"
    "    list[#list + 1] = response\n"
    "  end\n"
    "  local effects = tonumber(ARGV[e.a + 4])\n"
    "  if effects > 0 or dead then\n" /* they come after the pushes before them */
    "    local oom = push()\n"
    "    if oom then return {oom = oom} end\n"
    "  end\n"
    "  if remember then\n"
    "    redis.call('SET', e.done, answer, 'EX', window)\n"
    "    remembered[e.done] = true\n"
    "  end\n"
    "  local i, refused = e.a + 5, nil\n"
    "  for _ = 1, effects do\n"
    "    local argc = tonumber(ARGV[i])\n"
    "    local r = redis.pcall(unpack(ARGV, i + 1, i + argc))\n"
    "    if type(r) == 'table' and r.err and not refused then\n"
    "      refused = ARGV[i + 1] .. ': ' .. r.err\n"
    "    end\n"
    "    i = i + argc + 1\n"
    "  end\n"
    "  if dead then\n"
    "    redis.call('RPUSH', KEYS[2], letter)\n"
    "    redis.call('LTRIM', KEYS[2], trim, -1)\n"
    "    redis.pcall('HINCRBY', KEYS[3], 'dead', 1)\n"
    "  end\n"
    "  released[field] = true\n"
    "  release[#release + 1] = field\n"
    "  if refused then return {1, refused} end\n"
    "  return 1\n"
    "end\n"
    "local out = {}\n"
    "for j = 1, #ents do\n"
    "  local r = commit(j)\n"
    "  if type(r) == 'table' and r.oom then return redis.error_reply(r.oom) end\n"
    "  out[j] = r\n"
    "end\n"
    "local oom = push()\n"
    "if oom then return redis.error_reply(oom) end\n"
    "for reply in pairs(pushed) do redis.pcall('EXPIRE', reply, ttl) end\n"
    "if #release > 0 and ARGV[5] ~= 'hold' then batched('HDEL', held, release) end\n"
    "return out\n";

/* The commit script is longer than a C string literal may portably be. */
static const char commit_shared[] = BATCHED_LUA REFUSAL_LUA RANGED_LUA;
static char commit_script[sizeof commit_shared + sizeof commit_grouped + sizeof commit_head +
                          sizeof commit_tail];
static char take_script[sizeof take_head + sizeof take_tail];
static void join_reap_script(void);
static pthread_once_t commit_once = PTHREAD_ONCE_INIT;

static void join_commit_script(void)
{
    join_reap_script();
    memcpy(take_script, take_head, sizeof take_head - 1);
    memcpy(take_script + sizeof take_head - 1, take_tail, sizeof take_tail);
    const char *parts[] = {commit_shared, commit_grouped, commit_head, commit_tail};
    const size_t sizes[] = {sizeof commit_shared, sizeof commit_grouped, sizeof commit_head,
                            sizeof commit_tail};
    size_t at = 0;
    for (size_t i = 0; i < 4; i++) {
        memcpy(commit_script + at, parts[i], sizes[i]); /* with its NUL: the next overwrites it */
        at += sizes[i] - 1;
    }
}

/* KEYS: list, worker set, dead list, stats hash.  ARGV: key prefix
 * "{list}:", max deliveries, window, service, dead-letter bound, size
 * limit, 'redrive' (Cluster: answered requests go back too) or ''.
 * Returns [requeued, dead, unreadable].  Nothing it reads can make it fail
 * once it has written: the declared keys' types are checked first, and a
 * dead worker's key of the wrong type, or a delivery counter that cannot
 * count, affects only its own requests. */
static const char reap_head[] = IDENTITY_LUA CHECK_TYPES_LUA;
/* The reap script is longer than a C string literal may portably be. */
static const char reap_tail[] =
    "local bad = check_types({'list', 'set', 'list', 'hash'})\n"
    "if bad then return bad end\n"
    "local requeued, dead, broken = 0, 0, 0\n"
    "local max = tonumber(ARGV[6])\n"
    "local function bury(item, reason)\n"
    "  local t = redis.call('TIME')\n"
    "  local rec = {reason = reason, time = tonumber(t[1]) + tonumber(t[2]) / 1e6,\n"
    "    service = ARGV[4]}\n"
    "  if #item <= max then\n"
    "    rec.message = item\n"
    "  else\n" /* a bounded copy: its first bytes (whole UTF-8 sequences), length, digest */
    "    local n = math.min(4096, #item)\n"
    "    while n > 0 and n < #item and string.byte(item, n + 1) >= 128 and\n"
    "      string.byte(item, n + 1) < 192 do\n"
    "      n = n - 1\n"
    "    end\n"
    "    rec.message_prefix = string.sub(item, 1, n)\n"
    "    rec.message_bytes = #item\n"
    "    rec.message_sha1 = redis.sha1hex(item)\n"
    "  end\n"
    "  redis.call('RPUSH', KEYS[3], cjson.encode(rec))\n"
    "  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)\n"
    "  redis.call('HINCRBY', KEYS[4], 'dead', 1)\n"
    "  dead = dead + 1\n"
    "end\n"
    /* A record is the request's text; one written by an older take starts
     * with the identity and delivery key it computed (80 hex digits). */
    "local function put_back(wid, field, rec)\n"
    "  local h, d, item\n"
    "  if string.find(rec, '^' .. string.rep('%x', 80)) then\n"
    "    h, d, item = string.sub(rec, 1, 40), string.sub(rec, 41, 80), string.sub(rec, 81)\n"
    "  else\n"
    "    local hd = identity(rec, max, wid .. '\\n' .. field)\n"
    "    h, d, item = string.sub(hd, 1, 40), string.sub(hd, 41, 80), rec\n"
    "  end\n"
    "  if redis.call('TYPE', ARGV[1] .. 'done:' .. h).ok == 'string' then\n"
    /* Answered (or a copy another worker took).  On a Cluster its
     * response may not have been pushed yet: back it goes, to be answered
     * again from its memory, without counting a delivery -- if it has a
     * stable identity (a take's own identity would be new at the next
     * take, and the request would run again). */
    "    if ARGV[7] == 'redrive' and h == d then\n"
    "      redis.call('LPUSH', KEYS[1], item)\n"
    "      requeued = requeued + 1\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  local count = ARGV[1] .. 'deliveries:' .. d\n"
    "  local t = redis.call('TYPE', count).ok\n"
    "  local n = nil\n"
    "  if t == 'none' or t == 'string' then\n"
    "    local r = redis.pcall('INCR', count)\n"
    "    if type(r) == 'number' then\n"
    "      n = r\n"
    "      redis.call('EXPIRE', count, ARGV[3])\n"
    "    elseif string.sub(r.err, 1, 3) == 'OOM' then\n"
    "      error(r.err)\n" /* only ever the first write: nothing done yet */
    "    else\n"
    "      t = r.err\n"
    "    end\n"
    "  end\n"
    "  if n == nil then\n"
    "    bury(item, 'delivery counter refused: ' .. t)\n"
    "  elseif n >= tonumber(ARGV[2]) then\n"
    "    bury(item, 'taken by ' .. n .. ' workers that died (max_deliveries ' .. ARGV[2] .. ')')\n"
    "  else\n"
    "    redis.call('LPUSH', KEYS[1], item)\n"
    "    requeued = requeued + 1\n"
    "  end\n"
    "end\n"
    "for _, wid in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  local pid = string.match(wid, '^(.*)/[^/]*$') or wid\n"
    "  if redis.call('EXISTS', ARGV[1] .. 'alive:' .. pid) == 0 then\n"
    "    local held, landing = ARGV[1] .. 'inflight:' .. wid, ARGV[1] .. 'landing:' .. wid\n"
    "    local ht, lt = redis.call('TYPE', held).ok, redis.call('TYPE', landing).ok\n"
    "    if (ht ~= 'none' and ht ~= 'hash') or (lt ~= 'none' and lt ~= 'list') then\n"
    "      broken = broken + 1\n" /* not ours any more: left for an operator */
    "    else\n"
    /* Landed but never handed to the worker: not a delivery.  Then the held
     * requests in front of them, oldest first. */
    "      local landed = redis.call('LRANGE', landing, 0, -1)\n"
    "      for i = #landed, 1, -1 do\n"
    "        redis.call('LPUSH', KEYS[1], landed[i])\n"
    "        requeued = requeued + 1\n"
    "      end\n"
    "      local all = redis.call('HGETALL', held)\n"
    "      local fields, recs = {}, {}\n"
    "      for i = 1, #all, 2 do fields[#fields + 1] = all[i]; recs[all[i]] = all[i + 1] end\n"
    "      table.sort(fields)\n"
    "      for i = #fields, 1, -1 do put_back(wid, fields[i], recs[fields[i]]) end\n"
    "      redis.call('DEL', held, landing)\n"
    "    end\n"
    "    redis.call('SREM', KEYS[2], wid)\n"
    "  end\n"
    "end\n"
    "if requeued > 0 then redis.call('HINCRBY', KEYS[4], 'redelivered', requeued) end\n"
    "return {requeued, dead, broken}\n";

static char reap_script[sizeof reap_head + sizeof reap_tail];

static void join_reap_script(void)
{
    memcpy(reap_script, reap_head, sizeof reap_head - 1);
    memcpy(reap_script + sizeof reap_head - 1, reap_tail, sizeof reap_tail);
}

#define HEARTBEAT_BACKOFF_MAX_S 2.0

/* The longest key reliable mode builds is a worker's in-flight hash
 * "{L}:inflight:<host:pid:random>/<thread>"; the process id part is at
 * most sizeof pid_id - 1 bytes, whatever the host, so that whether a
 * service name fits does not depend on the machine. */
#define LONGEST_SUFFIX (sizeof "inflight:" - 1 + sizeof((rrpc__rel *)0)->pid_id - 1 + 1 + 10)

size_t rrpc__rel_max_list_key(void)
{
    return RRPC__KEY_MAX - 1 - (sizeof "{}:" - 1) - LONGEST_SUFFIX;
}

/* Shard K's keys into *SH; RRPC_EINVAL if one does not fit. */
static int shard_keys(const rrpc__rel *r, const char *list_key, int k, rrpc__rel_shard *sh)
{
    if (rrpc__shard_key(sh->list_key, sizeof sh->list_key, list_key, k) != RRPC_OK ||
        strlen(sh->list_key) > rrpc__rel_max_list_key())
        return RRPC_EINVAL; /* its keys would not fit: never cut them short */
    int n[6];
    n[0] = snprintf(sh->tag, sizeof sh->tag, "{%s}:", sh->list_key);
    n[1] = snprintf(sh->set_key, sizeof sh->set_key, "%s" RRPC__TAG_INFLIGHT, sh->tag);
    n[2] = snprintf(sh->alive_key, sizeof sh->alive_key, "%s" RRPC__TAG_ALIVE "%s", sh->tag,
                    r->pid_id);
    n[3] = snprintf(sh->done_prefix, sizeof sh->done_prefix, "%s" RRPC__TAG_DONE, sh->tag);
    /* A script may only touch keys of its slot on a Cluster: there its
     * dead letters and counters wait in the slot (the outbox, drained by
     * the heartbeat thread). */
    n[4] = r->cluster ? snprintf(sh->dead_key, sizeof sh->dead_key, "%sdead", sh->tag)
                      : snprintf(sh->dead_key, sizeof sh->dead_key, "%s", r->opts.dead_key);
    n[5] = r->cluster ? snprintf(sh->stats_key, sizeof sh->stats_key, "%sstats", sh->tag)
                      : snprintf(sh->stats_key, sizeof sh->stats_key, "%s", r->opts.stats_key);
    for (int i = 0; i < 6; i++)
        if (n[i] < 0 || (size_t)n[i] >= RRPC__KEY_MAX)
            return RRPC_EINVAL; /* cannot happen after the length check above */
    return RRPC_OK;
}

int rrpc__rel_init(rrpc__rel *r, const char *list_key, int shards, int cluster, const char *service,
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
    r->cluster = cluster;
    snprintf(r->pid_id, sizeof r->pid_id, "%s:%ld:%s", host, (long)getpid(), hex);
    r->nshards = shards > 1 ? shards : 1;
    if ((r->shards = calloc((size_t)r->nshards, sizeof *r->shards)) == NULL)
        return RRPC_ENOMEM;
    for (int k = 0; k < r->nshards; k++)
        if (shard_keys(r, list_key, k, &r->shards[k]) != RRPC_OK) {
            rrpc__rel_free(r);
            return RRPC_EINVAL;
        }
    snprintf(r->window_text, sizeof r->window_text, "%ld", (long)(opts->dedup_window_s + 0.5));
    snprintf(r->max_text, sizeof r->max_text, "%d", opts->max_deliveries);
    snprintf(r->size_text, sizeof r->size_text, "%zu", opts->max_request_bytes);
    snprintf(r->trim_text, sizeof r->trim_text, "%ld", -opts->dead_letter_max);
    return RRPC_OK;
}

void rrpc__rel_free(rrpc__rel *r)
{
    free(r->shards);
    r->shards = NULL;
    r->nshards = 0;
}

int rrpc__rel_worker_keys(const rrpc__rel *r, int shard, int thread, rrpc__rel_worker *k)
{
    if (r->nshards < 1)
        return RRPC_EINVAL; /* refused at init: never run */
    const rrpc__rel_shard *sh = &r->shards[shard % r->nshards];
    k->shard = sh;
    int n = snprintf(k->wid, sizeof k->wid, "%s/%d", r->pid_id, thread);
    int m =
        snprintf(k->inflight, sizeof k->inflight, "%s" RRPC__TAG_INFLIGHT ":%s", sh->tag, k->wid);
    int l = snprintf(k->landing, sizeof k->landing, "%s" RRPC__TAG_LANDING "%s", sh->tag, k->wid);
    return n < 0 || m < 0 || l < 0 || (size_t)n >= sizeof k->wid ||
                   (size_t)m >= sizeof k->inflight || (size_t)l >= sizeof k->landing
               ? RRPC_EINVAL
               : RRPC_OK;
}

void rrpc__rel_take_argv(const rrpc__rel *r, const rrpc__rel_worker *k, const char *high,
                         const char *low, const char *count, const char *base, const char *argv[12])
{
    const rrpc__rel_shard *sh = k->shard;
    const char *a[] = {"EVALSHA",   r->take_sha, "6", sh->list_key, k->landing, k->inflight,
                       sh->set_key, high,        low, count,        k->wid,     base};
    memcpy(argv, a, sizeof a);
}

void rrpc__rel_release_argv(const rrpc__rel_worker *k, const char *field, const char *argv[3])
{
    argv[0] = "HDEL";
    argv[1] = k->inflight;
    argv[2] = field;
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

int rrpc__cmd_add(rrpc__cmd *c, const char *s, size_t len)
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
    return rrpc__cmd_add(c, s, strlen(s));
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
static int add_answer(rrpc__cmd *c, const char *key, size_t key_len, const char *response,
                      size_t resp_len)
{
    if (key == NULL || response == NULL)
        return add_str(c, "-");
    char head[32];
    int n = snprintf(head, sizeof head, "K%zu:", key_len);
    char *answer = malloc((size_t)n + key_len + resp_len);
    if (answer == NULL)
        return RRPC_ENOMEM;
    memcpy(answer, head, (size_t)n);
    memcpy(answer + n, key, key_len);
    memcpy(answer + (size_t)n + key_len, response, resp_len);
    int rc = rrpc__cmd_add(c, answer, (size_t)n + key_len + resp_len);
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
            rc = rrpc__cmd_add(c, json_string_value(json_array_get(cmd, k)),
                               json_string_length(json_array_get(cmd, k)));
    }
    return rc;
}

int rrpc__rel_commit_cmd(const rrpc__rel *r, const rrpc__rel_worker *k, rrpc__cmd *c,
                         const rrpc__rel_commit *m)
{
    memset(c, 0, sizeof *c);
    char done[RRPC__KEY_MAX]; /* fits: rrpc__rel_init checked the longest key */
    snprintf(done, sizeof done, "%s%s", k->shard->done_prefix, m->sha1);
    /* On a Cluster the reply key is in another slot: not named here (the
     * worker pushes the response after the commit); the response stays
     * in the part, unused by the script, for that push. */
    int has_reply = m->key != NULL && m->response != NULL;
    int with_reply = has_reply && !r->cluster;
    int rc = add_str(c, with_reply ? "2" : "1");
    rc = rc ? rc : add_str(c, done);
    rc = rc ? rc : (with_reply ? rrpc__cmd_add(c, m->key, m->key_len) : RRPC_OK);
    rc = rc ? rc : add_str(c, m->field);
    if (m->again) /* the answer is remembered already: send it, remember nothing */
        rc = rc ? rc : add_str(c, "");
    else
        rc = rc ? rc : add_answer(c, m->key, m->key_len, m->response, m->response_len);
    rc = rc ? rc : (has_reply ? rrpc__cmd_add(c, m->response, m->response_len) : add_str(c, ""));
    rc = rc ? rc : add_str(c, m->dead_letter ? m->dead_letter : "");
    rc = rc ? rc : (m->effects ? add_effects(c, m->effects) : add_str(c, "0"));
    if (rc != RRPC_OK)
        rrpc__cmd_free(c);
    return rc;
}

/* How many keys a commit's part names (its done key, and its reply key). */
static size_t commit_keys(const rrpc__cmd *c)
{
    return c->argv[0][0] == '2' ? 2 : 1;
}

/* The grouped layout takes a batch of at most this many reply keys (a
 * linear search each). */
#define GROUPS_MAX 64

/* Nonzero if the part P is a plain answer: its answer remembered anew, no
 * dead letter, no effect (the grouped layout's case). */
static int plain(const rrpc__cmd *p)
{
    size_t nk = commit_keys(p);
    return p->argc == nk + 6 && p->lens[nk + 2] > 0 && p->lens[nk + 4] == 0 &&
           strcmp(p->argv[nk + 5], "0") == 0;
}

/* The group (index into G, reply keys of *NG) of part P; -1 if a new one
 * would be more than GROUPS_MAX. */
static int group_of(const rrpc__cmd *p, const rrpc__cmd **g, size_t *ng)
{
    int reply = commit_keys(p) == 2;
    for (size_t i = 0; i < *ng; i++) {
        int theirs = commit_keys(g[i]) == 2;
        if (reply == theirs && (!reply || (g[i]->lens[2] == p->lens[2] &&
                                           memcmp(g[i]->argv[2], p->argv[2], p->lens[2]) == 0)))
            return (int)i;
    }
    if (*ng == GROUPS_MAX)
        return -1;
    g[*ng] = p;
    return (int)(*ng)++;
}

static void put_arg(rrpc__argv *out, size_t at, const char *s, size_t len)
{
    out->argv[at] = s;
    out->lens[at] = len;
}

/* The grouped layout (the commit script's first part) of the N plain
 * parts PARTS, whose groups (by reply key) are the NG parts G and
 * WHICH[i] part i's. */
static int grouped_batch(const rrpc__rel *r, const rrpc__rel_worker *wk, const char *reply_ttl,
                         const rrpc__cmd *const *parts, size_t n, const rrpc__cmd **g, size_t ng,
                         const int *which, rrpc__argv *out)
{
    size_t replies = 0;
    for (size_t i = 0; i < ng; i++)
        replies += commit_keys(g[i]) == 2;
    size_t keys = 3 + replies + n, args = 6 + 2 * ng + 2 * n;
    size_t argc = 3 + keys + args;
    out->argv = malloc(argc * sizeof *out->argv);
    out->lens = malloc(argc * sizeof *out->lens);
    out->order = malloc((n ? n : 1) * sizeof *out->order);
    out->texts = malloc((2 * ng + 1) * 24); /* G, then per group its count and head */
    if (out->argv == NULL || out->lens == NULL || out->order == NULL || out->texts == NULL) {
        rrpc__argv_free(out);
        return RRPC_ENOMEM;
    }
    snprintf(out->numkeys, sizeof out->numkeys, "%zu", keys);
    snprintf(out->count, sizeof out->count, "%zu", n);
    snprintf(out->texts, 24, "%zu", ng);
    const char *head[] = {"EVALSHA",
                          r->commit_sha,
                          out->numkeys,
                          wk->inflight,
                          wk->shard->dead_key,
                          wk->shard->stats_key,
                          r->window_text,
                          reply_ttl,
                          r->trim_text,
                          out->count,
                          r->cluster ? "hold+g" : "release+g",
                          out->texts};
    size_t k = 0, a = 3 + keys, d = 6 + replies, o = 0;
    for (; k < 6; k++)
        put_arg(out, k, head[k], strlen(head[k]));
    for (size_t i = 6; i < 12; i++)
        put_arg(out, a++, head[i], strlen(head[i]));
    /* Then the fields (from F) and the responses or answers (from P), each
     * group's in the parts' order. */
    size_t f = a + 2 * ng, p = f + n;
    for (size_t gi = 0; gi < ng; gi++) {
        int reply = commit_keys(g[gi]) == 2;
        size_t c = 0;
        for (size_t i = 0; i < n; i++)
            c += which[i] == (int)gi;
        if (reply)
            put_arg(out, k++, g[gi]->argv[2], g[gi]->lens[2]);
        char *count = out->texts + 24 * (gi + 1);
        snprintf(count, 24, "%zu", c);
        /* The head of its answers, "K<n>:" (the script appends the key). */
        char *lead = out->texts + 24 * (ng + 1 + gi);
        snprintf(lead, 24, "K%zu:", reply ? g[gi]->lens[2] : 0);
        put_arg(out, a++, reply ? lead : "0", reply ? strlen(lead) : 1);
        put_arg(out, a++, count, strlen(count));
        for (size_t i = 0; i < n; i++) {
            const rrpc__cmd *part = parts[i];
            size_t nk = commit_keys(part), pay = nk + (reply ? 3 : 2);
            if (which[i] != (int)gi)
                continue;
            out->order[o++] = i;
            put_arg(out, d++, part->argv[1], part->lens[1]);
            put_arg(out, f++, part->argv[nk + 1], part->lens[nk + 1]);
            put_arg(out, p++, part->argv[pay], part->lens[pay]);
        }
    }
    out->argc = argc;
    return RRPC_OK;
}

/* The grouped layout of PARTS into *OUT if they are all plain answers to
 * at most GROUPS_MAX reply keys: 1 done, 0 not (the general layout is
 * then used), or an error. */
static int try_grouped(const rrpc__rel *r, const rrpc__rel_worker *wk, const char *reply_ttl,
                       const rrpc__cmd *const *parts, size_t n, rrpc__argv *out)
{
    const rrpc__cmd *g[GROUPS_MAX];
    size_t ng = 0;
    int *which = malloc((n ? n : 1) * sizeof *which);
    if (which == NULL)
        return RRPC_ENOMEM;
    int ok = n > 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = plain(parts[i]) && (which[i] = group_of(parts[i], g, &ng)) >= 0;
    int rc = ok ? grouped_batch(r, wk, reply_ttl, parts, n, g, ng, which, out) : RRPC_OK;
    free(which);
    return rc != RRPC_OK ? rc : ok;
}

int rrpc__rel_commit_batch(const rrpc__rel *r, const rrpc__rel_worker *wk, const char *reply_ttl,
                           const rrpc__cmd *const *parts, size_t n, rrpc__argv *out)
{
    memset(out, 0, sizeof *out);
    int rc = try_grouped(r, wk, reply_ttl, parts, n, out);
    if (rc != 0)
        return rc == 1 ? RRPC_OK : rc;
    size_t keys = 3, args = 5;
    for (size_t i = 0; i < n; i++) {
        keys += commit_keys(parts[i]);
        args += parts[i]->argc - commit_keys(parts[i]);
    }
    size_t argc = 3 + keys + args;
    out->argv = malloc(argc * sizeof *out->argv);
    out->lens = malloc(argc * sizeof *out->lens);
    if (out->argv == NULL || out->lens == NULL) {
        rrpc__argv_free(out);
        return RRPC_ENOMEM;
    }
    snprintf(out->numkeys, sizeof out->numkeys, "%zu", keys);
    snprintf(out->count, sizeof out->count, "%zu", n);
    const char *head[] = {"EVALSHA",    r->commit_sha,       out->numkeys,
                          wk->inflight, wk->shard->dead_key, wk->shard->stats_key};
    size_t k = 0, a = 3 + keys;
    for (; k < 6; k++) {
        out->argv[k] = head[k];
        out->lens[k] = strlen(head[k]);
    }
    const char *globals[] = {r->window_text, reply_ttl, r->trim_text, out->count,
                             r->cluster ? "hold" : "release"};
    for (size_t i = 0; i < 5; i++, a++) {
        out->argv[a] = globals[i];
        out->lens[a] = strlen(globals[i]);
    }
    for (size_t i = 0; i < n; i++) {
        const rrpc__cmd *p = parts[i];
        size_t nk = commit_keys(p);
        for (size_t j = 0; j < p->argc; j++) {
            /* The part's keys go with the KEYS, its count and the rest
             * with the ARGV. */
            size_t at = j >= 1 && j <= nk ? k++ : a++;
            out->argv[at] = p->argv[j];
            out->lens[at] = p->lens[j];
        }
    }
    out->argc = argc;
    return RRPC_OK;
}

void rrpc__argv_free(rrpc__argv *a)
{
    free(a->argv);
    free(a->lens);
    free(a->texts);
    free(a->order);
    a->argv = NULL;
    a->lens = NULL;
    a->texts = NULL;
    a->order = NULL;
    a->argc = 0;
}

/* Where a commit part's arguments after its keys are: FIELD is the first. */
static size_t commit_argv(const rrpc__cmd *c, size_t i)
{
    return 1 + commit_keys(c) + i;
}

const char *rrpc__rel_commit_arg(const rrpc__cmd *c, int which, size_t *len)
{
    size_t i = commit_argv(c, which == RRPC__COMMIT_FIELD      ? 0
                              : which == RRPC__COMMIT_RESPONSE ? 2
                                                               : 3);
    if (c->argc <= i)
        return NULL;
    if (len)
        *len = c->lens[i];
    return c->argv[i];
}

int rrpc__rel_commit_dead(const rrpc__cmd *orig, rrpc__cmd *c, const char *dead_letter)
{
    memset(c, 0, sizeof *c);
    size_t response = commit_argv(orig, 2), letter = commit_argv(orig, 3);
    int rc = RRPC_OK;
    for (size_t i = 0; rc == RRPC_OK && i < orig->argc; i++) {
        if (i == 0)
            rc = add_str(c, "1");
        else if (i == 2 && commit_keys(orig) == 2)
            continue; /* the refused reply key: not touched */
        else if (i == response)
            rc = add_str(c, "");
        else if (i == letter)
            rc = add_str(c, dead_letter);
        else
            rc = rrpc__cmd_add(c, orig->argv[i], orig->lens[i]);
    }
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

/* Judges the reaper's answer; a failure is logged once until it works
 * again (a Redis out of memory refuses it at every beat). */
static void judge_reap(rrpc__rel *r, const rrpc__rel_shard *sh, const rrpc__reply *b)
{
    if (rrpc__reply_type(b) == RRPC__REPLY_ARRAY && rrpc__reply_count(b) == 3) {
        atomic_fetch_add(r->redelivered, (uint64_t)rrpc__reply_integer(rrpc__reply_element(b, 0)));
        atomic_fetch_add(r->dead_letters, (uint64_t)rrpc__reply_integer(rrpc__reply_element(b, 1)));
        if (rrpc__reply_integer(rrpc__reply_element(b, 2)) > 0)
            rrpc__logf(RRPC_LOG_ERROR, r->service, "heartbeat",
                       "a dead worker's in-flight key under %s has the wrong type: its "
                       "requests cannot be put back (left for an operator)",
                       sh->tag);
        if (r->reap_failing)
            rrpc__log(RRPC_LOG_INFO, r->service, "heartbeat", "the reaper works again", NULL);
        r->reap_failing = 0;
        return;
    }
    if (!r->reap_failing)
        rrpc__log(RRPC_LOG_WARN, r->service, "heartbeat", "reaper failed (retried at every beat)",
                  rrpc__reply_str(b, NULL) ? rrpc__reply_str(b, NULL) : "unexpected reply");
    r->reap_failing = 1;
}

/* Sends C's queued command and returns its reply (NULL: link broken). */
static rrpc__reply *ask(rrpc__conn *c, int argc, const char **argv, const size_t *lens)
{
    rrpc__reply *a = NULL;
    if (rrpc__conn_append(c, argc, argv, lens) != RRPC_OK || rrpc__conn_read(c, &a) != RRPC_OK) {
        rrpc__reply_free(a);
        return NULL;
    }
    return a;
}

/* Cluster: moves up to 100 dead letters of shard SH's outbox {L}:dead to
 * the service's dead-letter list, then drops them from the outbox; and
 * adds the counters of {L}:stats to the service's stats.  Not atomic (two
 * slots): a process that dies between the two steps leaves them to be
 * moved again -- a dead letter may be filed twice, a count added twice,
 * never lost. */
static void drain_outbox(rrpc__rel *r, rrpc__conn *c, const rrpc__rel_shard *sh)
{
    const char *range[] = {"LRANGE", sh->dead_key, "0", "99"};
    rrpc__reply *items = ask(c, 4, range, NULL);
    size_t n = rrpc__reply_type(items) == RRPC__REPLY_ARRAY ? rrpc__reply_count(items) : 0;
    if (n > 0) {
        const char *argv[102];
        size_t lens[102];
        argv[0] = "RPUSH";
        argv[1] = r->opts.dead_key;
        lens[0] = 5;
        lens[1] = strlen(r->opts.dead_key);
        for (size_t i = 0; i < n; i++)
            argv[2 + i] = rrpc__reply_str(rrpc__reply_element(items, i), &lens[2 + i]);
        rrpc__reply *pushed = ask(c, (int)n + 2, argv, lens);
        char bound[32], first[32];
        snprintf(bound, sizeof bound, "%ld", -r->opts.dead_letter_max);
        snprintf(first, sizeof first, "%zu", n);
        const char *trim[] = {"LTRIM", r->opts.dead_key, bound, "-1"};
        const char *drop[] = {"LTRIM", sh->dead_key, first, "-1"};
        if (rrpc__reply_type(pushed) == RRPC__REPLY_INTEGER) {
            rrpc__reply_free(ask(c, 4, trim, NULL));
            rrpc__reply_free(ask(c, 4, drop, NULL));
        }
        rrpc__reply_free(pushed);
    }
    rrpc__reply_free(items);
    const char *all[] = {"HGETALL", sh->stats_key};
    rrpc__reply *counts = ask(c, 2, all, NULL);
    size_t m = rrpc__reply_type(counts) == RRPC__REPLY_ARRAY ? rrpc__reply_count(counts) : 0;
    for (size_t i = 0; i + 1 < m; i += 2) {
        const char *field = rrpc__reply_str(rrpc__reply_element(counts, i), NULL);
        const char *v = rrpc__reply_str(rrpc__reply_element(counts, i + 1), NULL);
        if (field == NULL || v == NULL || strcmp(v, "0") == 0)
            continue;
        char neg[40];
        snprintf(neg, sizeof neg, "-%s", v);
        const char *add[] = {"HINCRBY", r->opts.stats_key, field, v};
        const char *sub[] = {"HINCRBY", sh->stats_key, field, neg};
        rrpc__reply *a = ask(c, 4, add, NULL);
        if (rrpc__reply_type(a) == RRPC__REPLY_INTEGER)
            rrpc__reply_free(ask(c, 4, sub, NULL));
        rrpc__reply_free(a);
    }
    rrpc__reply_free(counts);
}

/* Renews this process's heartbeat on every shard and reaps each shard's
 * dead workers, whose requests go back to the head of their own shard's
 * list: one pipelined round trip for all shards (on a Cluster, then the
 * outboxes). */
static int beat(rrpc__rel *r, rrpc__conn *c)
{
    pthread_once(&commit_once, join_commit_script);
    char ttl_ms[32], bound[32];
    snprintf(ttl_ms, sizeof ttl_ms, "%ld", (long)(r->opts.heartbeat_ttl_s * 1000));
    snprintf(bound, sizeof bound, "%ld", r->opts.dead_letter_max);
    int rc = RRPC_OK;
    for (int k = 0; rc == RRPC_OK && k < r->nshards; k++) {
        const rrpc__rel_shard *sh = &r->shards[k];
        const char *set[] = {"SET", sh->alive_key, "1", "PX", ttl_ms};
        const char *reap[] = {"EVAL",        reap_script,
                              "4",           sh->list_key,
                              sh->set_key,   sh->dead_key,
                              sh->stats_key, sh->tag,
                              r->max_text,   r->window_text,
                              r->service,    bound,
                              r->size_text,  r->cluster ? "redrive" : ""};
        rc = rrpc__conn_append(c, 5, set, NULL);
        if (rc == RRPC_OK)
            rc = rrpc__conn_append(c, 14, reap, NULL);
    }
    for (int k = 0; rc == RRPC_OK && k < r->nshards; k++) {
        rrpc__reply *a = NULL, *b = NULL;
        rc = rrpc__conn_read(c, &a);
        if (rc == RRPC_OK)
            rc = rrpc__conn_read(c, &b);
        if (rc == RRPC_OK && rrpc__reply_type(a) == RRPC__REPLY_ERROR) /* others would reap us */
            rrpc__log(RRPC_LOG_WARN, r->service, "heartbeat", "cannot renew the heartbeat",
                      rrpc__reply_str(a, NULL));
        if (rc == RRPC_OK)
            judge_reap(r, &r->shards[k], b);
        rrpc__reply_free(a);
        rrpc__reply_free(b);
    }
    for (int k = 0; rc == RRPC_OK && r->cluster && k < r->nshards; k++)
        drain_outbox(r, c, &r->shards[k]);
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
        if (rrpc__conn_mend_if_closed(r->conn) != RRPC_OK) {
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

/* Loads one script on the node of ROUTE's slot (a Cluster keeps a script
 * cache per node; ROUTE is ignored on one Redis); its SHA-1 (40 hex
 * digits) goes to SHA. */
static int load_script(rrpc__conn *c, const char *route, const char *script, char sha[41])
{
    const char *argv[] = {"SCRIPT", "LOAD", script};
    rrpc__reply *r = NULL;
    int rc = rrpc__conn_append_routed(c, route, 3, argv, NULL);
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

/* Loads the worker scripts where every shard's list lives; their SHA-1s
 * into TAKE and COMMIT. */
static int load_all(const rrpc__rel *r, rrpc__conn *c, char take[41], char commit[41])
{
    pthread_once(&commit_once, join_commit_script);
    int rc = RRPC_OK;
    for (int k = 0; rc == RRPC_OK && k < (r->cluster ? r->nshards : 1); k++) {
        const char *route = r->shards[k].list_key;
        rc = load_script(c, route, take_script, take);
        if (rc == RRPC_OK)
            rc = load_script(c, route, commit_script, commit);
    }
    return rc;
}

int rrpc__rel_load_scripts(const rrpc__rel *r, rrpc__conn *c)
{
    char take[41], commit[41];
    int rc = load_all(r, c, take, commit);
    /* The digests depend on the texts only: they are the same each time. */
    if (rc == RRPC_OK && (strcmp(take, r->take_sha) != 0 || strcmp(commit, r->commit_sha) != 0))
        rc = RRPC_EPROTO;
    return rc;
}

int rrpc__rel_learn_scripts(rrpc__rel *r, rrpc__conn *c)
{
    return load_all(r, c, r->take_sha, r->commit_sha);
}

int rrpc__rel_start(rrpc__rel *r, const rrpc__url *url, double connect_timeout_s, char *err,
                    size_t errlen)
{
    int rc = rrpc__conn_open(&r->conn, url, connect_timeout_s, err, errlen);
    if (rc == RRPC_OK)
        rc = rrpc__conn_set_timeout(r->conn, 10);
    /* Workers send EVALSHA: the script texts would be most of each commit. */
    if (rc == RRPC_OK)
        rc = load_all(r, r->conn, r->take_sha, r->commit_sha);
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

/* Leaves the registry of in-flight lists cleanly: workers that hold
 * nothing are removed and the heartbeat is dropped.  A worker that still
 * holds requests (a link broke at the wrong moment, or Redis refused its
 * commits) is left for the reaper of another process, which takes them at
 * once. */
static void say_goodbye(rrpc__rel *r, const rrpc__rel_worker *ws, int n)
{
    for (int i = 0; i < n; i++) {
        rrpc__reply *held = NULL, *gone = NULL;
        const char *exists[] = {"EXISTS", ws[i].inflight, ws[i].landing};
        if (rrpc__conn_append(r->conn, 3, exists, NULL) != RRPC_OK ||
            rrpc__conn_read(r->conn, &held) != RRPC_OK)
            return;
        if (rrpc__reply_type(held) == RRPC__REPLY_INTEGER && rrpc__reply_integer(held) == 0) {
            const char *srem[] = {"SREM", ws[i].shard->set_key, ws[i].wid};
            if (rrpc__conn_append(r->conn, 3, srem, NULL) == RRPC_OK &&
                rrpc__conn_read(r->conn, &gone) == RRPC_OK)
                rrpc__reply_free(gone);
        }
        rrpc__reply_free(held);
    }
    for (int k = 0; r->cluster && k < r->nshards; k++)
        drain_outbox(r, r->conn, &r->shards[k]); /* else left for another process */
    /* Without the heartbeat, any list left behind is reaped at once. */
    for (int k = 0; k < r->nshards; k++) {
        const char *del[] = {"DEL", r->shards[k].alive_key};
        rrpc__reply *gone = NULL;
        if (rrpc__conn_append(r->conn, 2, del, NULL) == RRPC_OK &&
            rrpc__conn_read(r->conn, &gone) == RRPC_OK)
            rrpc__reply_free(gone);
    }
}

void rrpc__rel_stop(rrpc__rel *r, const rrpc__rel_worker *ws, int n)
{
    if (!r->started)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    if (rrpc__conn_mend_if_closed(r->conn) == RRPC_OK)
        say_goodbye(r, ws, n);
    rrpc__conn_close(r->conn);
    r->conn = NULL;
    r->started = 0;
    atomic_store(&r->stop, 0);
}
