#!/usr/bin/env python3
"""reliable_bound.py -- how cheap could reliable mode be inside Redis? (issue 13)

Issue 13 asks for reliable mode at >= 0.8x of at-most-once with the async
4 x 256 load, where Redis's one thread is the scarce resource.  This driver
measures, on a private redis-server, the Redis work per request of three
*models* of one service's traffic (not rrpc's code: the same shapes with
none of its checks), so that the target can be judged against what any
design on Redis lists and scripts must do:

  amo    at-most-once as rrpc does it: RPUSH per request, LMPOP a batch,
         one reply script call per batch (RPUSH + EXPIRE per reply key),
         the callers' LMPOPs of their reply lists;
  bound  the least a reliable design must add, all in plain commands and
         no Lua: the batch moved atomically into an in-flight list of its
         own (MULTI: SORT ... STORE, LTRIM, LRANGE, SADD), one HMGET of the
         answers remembered under the requests' identities, and the commit
         as MULTI (RPUSH + EXPIRE per reply key, one HSET of the answers
         into a dedup hash, DEL of the in-flight list).  It is NOT correct:
         a MULTI cannot skip a request that is no longer held or whose
         answer is already remembered -- that takes a script;
  lua    the same with the commit as one script that checks the in-flight
         list still exists and the answers are not yet remembered before
         it writes (the least a correct commit does).

Usage: reliable_bound.py PORT MODE [REQUESTS]   (MODE: amo, bound, lua)
It prints Redis's CPU microseconds per request (INFO cpu: noisy on a shared
machine).  For figures the machine's load does not change, run redis-server
under `valgrind --tool=callgrind` twice with different REQUESTS and divide
the difference of the instruction counts by the difference of REQUESTS
(docs/PERFORMANCE.md, "How cheap reliable mode could be").
"""
import hashlib
import sys

import redis

BATCH, KEYS = 128, 4
REQ = (b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"%d",'
       b'"reply_to":"rrpc:reply:%d:abcdefabcdef","deadline":1790000000000}')
RESP = b'{"jsonrpc":"2.0","result":3,"id":"%d"}'
REPLY_LUA = """local a = 1
for i = 1, #KEYS do
  local c = tonumber(ARGV[a])
  redis.call('RPUSH', KEYS[i], unpack(ARGV, a + 1, a + c))
  redis.call('EXPIRE', KEYS[i], 60)
  a = a + c + 1
end
return 1"""
# KEYS: in-flight list, dedup hash, reply keys.  ARGV: per reply key its
# count, identities, responses.
COMMIT_LUA = """if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ids, pairs, a = {}, {}, 1
for i = 3, #KEYS do
  local c = tonumber(ARGV[a])
  for j = 1, c do
    ids[#ids + 1] = ARGV[a + j]
    pairs[#pairs + 1] = ARGV[a + j]; pairs[#pairs + 1] = ARGV[a + c + j]
  end
  a = a + 2 * c + 1
end
for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(ids))) do
  if v then return -1 end
end
a = 1
for i = 3, #KEYS do
  local c = tonumber(ARGV[a])
  redis.call('RPUSH', KEYS[i], unpack(ARGV, a + 1 + c, a + 2 * c))
  redis.call('EXPIRE', KEYS[i], 60)
  a = a + 2 * c + 1
end
redis.call('HSET', KEYS[2], unpack(pairs))
redis.call('EXPIRE', KEYS[2], 700)
redis.call('DEL', KEYS[1])
return 1"""


def reply_key(k):
    return 'rrpc:reply:%d:abcdefabcdef' % k


def collect(r):
    p = r.pipeline(transaction=False)
    for k in range(KEYS):
        p.lmpop(1, reply_key(k), direction='LEFT', count=BATCH)
    p.execute()


def take(r, n):
    """Moves a batch into an in-flight list of its own; its name."""
    held = '{svc}:if:w1/%d' % n
    p = r.pipeline(transaction=True)
    p.sort('svc', start=0, num=BATCH, by='nosort', store=held)
    p.ltrim('svc', BATCH, -1)
    p.lrange(held, 0, -1)
    p.sadd('{svc}:inflight', held)
    p.execute()
    return held


def batch(r, mode, n, shas):
    p = r.pipeline(transaction=False)
    for i in range(BATCH):
        p.rpush('svc', REQ % (n + i, i % KEYS))
    p.execute()
    if mode == 'amo':
        r.lmpop(1, 'svc', direction='LEFT', count=BATCH)
        keys, args = [], []
        for k in range(KEYS):
            rs = [RESP % (n + i) for i in range(k, BATCH, KEYS)]
            keys.append(reply_key(k))
            args += [len(rs)] + rs
        r.evalsha(shas['reply'], KEYS, *keys, *args)
        collect(r)
        return
    held = take(r, n)
    ids = [hashlib.sha1(b'%d' % (n + i)).digest() for i in range(BATCH)]
    r.hmget('{svc}:done', ids)
    if mode == 'bound':
        p = r.pipeline(transaction=True)
        for k in range(KEYS):
            p.rpush(reply_key(k), *[RESP % (n + i) for i in range(k, BATCH, KEYS)])
            p.expire(reply_key(k), 60)
        p.hset('{svc}:done', mapping={ids[i]: RESP % (n + i) for i in range(BATCH)})
        p.expire('{svc}:done', 700)
        p.delete(held)
        p.srem('{svc}:inflight', held)
        p.execute()
    else:
        keys, args = [held, '{svc}:done'], []
        for k in range(KEYS):
            sel = range(k, BATCH, KEYS)
            keys.append(reply_key(k))
            args += [len(sel)] + [ids[i] for i in sel] + [RESP % (n + i) for i in sel]
        p = r.pipeline(transaction=False)
        p.evalsha(shas['commit'], len(keys), *keys, *args)
        p.srem('{svc}:inflight', held)
        p.execute()
    collect(r)


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 60000
    if mode not in ('amo', 'bound', 'lua'):
        sys.exit('MODE: amo, bound or lua')
    r = redis.Redis(port=port)
    r.flushall()
    shas = {'reply': r.script_load(REPLY_LUA), 'commit': r.script_load(COMMIT_LUA)}
    cpu = lambda: sum(r.info('cpu')[k] for k in ('used_cpu_sys', 'used_cpu_user'))
    c0, n = cpu(), 0
    while n < total:
        batch(r, mode, n, shas)
        n += BATCH
    print('%s: %d requests, Redis CPU %.2f us per request' % (mode, n, (cpu() - c0) * 1e6 / n))


if __name__ == '__main__':
    main()
