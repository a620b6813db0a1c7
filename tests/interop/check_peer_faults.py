#!/usr/bin/python3
"""check_peer_faults.py -- the Ruby, Python and Node workers against hostile
reply keys, handlers that raise anything and a Redis having a bad day.

For the Python, the Ruby and the Node worker alike (PEERS below), against
real redis-servers that this script starts itself (it must stop, restart
and demote them):

  reply keys   PROTOCOL.md section 3: id 100.0 and 1e2 answer on "100",
               -0.0 on "0", 2^53 on its digits; an empty string id, 1.5,
               2^53 + 1, 1e300 have no reply key (dead letter "no reply
               key" with the response); an empty or non-string reply_to
               falls back to the id; a batch answers on its first element
               that has a key.
  refusals     section 6: the service's own keys, rrpc's keys of any
               service, a registered service's request list (also one
               registered after the worker started), keys outside
               --reply-prefix, and (the REPLY SCRIPT) a hash, string, set,
               zset or list without expiry are dead letters "reply key
               refused: ..." with the response, and the key is left exactly
               as it was (same value, same TTL); a reply list with an expiry
               is appended to; NOSCRIPT after SCRIPT FLUSH is reloaded.
  handlers     Python: GeneratorExit, an own BaseException subclass,
               RecursionError, MemoryError; Ruby: NotImplementedError,
               SystemStackError, ScriptError, LoadError, NoMemoryError, an
               own Exception subclass; Node: a thrown string, undefined, a
               Proxy whose traps throw, a stack overflow, a rejection with a
               number, a stray rejection and timer exception: each answers
               -32603 and the worker goes on.  SystemExit from a handler (Node:
               a handler that stops the server with exit code 3) ends the
               worker, gracefully.
  Redis        WRONGTYPE (the list made a hash or a string), BUSY (a long script),
               a restart (connection refused for 3 s, a reply in hand), NOPERM
               (ACL: BLPOP, then EVALSHA taken away), READONLY (the Redis made
               a replica with REPLICAOF, a reply in hand): the worker logs the
               outage once, retries, and answers again afterwards; a refused
               EVALSHA is a dead letter "reply failed: NOPERM ...".
  stop         SIGTERM after all that: exit status 0.

Usage: check_peer_faults.py [--peers python,ruby,node]
(prints ok/FAIL lines; exit status 1 on failure)
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
PY = sys.executable  # the Python running this one has redis-py
NODE = os.environ.get('RRPC_NODE', 'node')
failures = []


def check(label, ok, detail=''):
    print(('ok   ' if ok else 'FAIL ') + label + ('' if ok else f': {detail}'), flush=True)
    if not ok:
        failures.append(label)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on a loopback port, stoppable and restartable."""

    def __init__(self, tmp, name):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.url = f'redis://127.0.0.1:{self.port}'
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--dir', self.dir, '--loglevel', 'warning',
             '--logfile', os.path.join(self.dir, 'redis.log')])
        r = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        sys.exit(f'redis-server on port {self.port} did not start')

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Worker:
    def __init__(self, tmp, name, lang, argv):
        self.name, self.lang = name, lang
        self.log_path = os.path.join(tmp, name + '.log')
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, 'w'))

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()


def fresh():
    return 'rrpc:reply:' + secrets.token_hex(16)


def request(method, params, rid, **members):
    return json.dumps(dict(jsonrpc='2.0', method=method, params=params, id=rid, **members))


def answer(r, key, timeout=10):
    popped = r.blpop([key], timeout=timeout)
    return json.loads(popped[1]) if popped else None


def call(r, service, method, params=(), timeout=10):
    key = fresh()
    r.rpush(service, request(method, list(params), key))
    return answer(r, key, timeout)


def snapshot(r, key):
    """What a refused reply must leave unchanged: the type, the value and the
    expiry.  Not DUMP's bytes: a set's order in them changes when Redis
    rehashes it, which the workers' registration may make it do."""
    kind = r.type(key)
    value = {b'string': lambda: r.get(key), b'hash': lambda: sorted(r.hgetall(key).items()),
             b'set': lambda: sorted(r.smembers(key)),
             b'zset': lambda: r.zrange(key, 0, -1, withscores=True),
             b'list': lambda: r.lrange(key, 0, -1)}.get(kind, lambda: r.dump(key))()
    return kind, value, r.pttl(key) // 1000


def dead_letter(r, service, text, before, timeout=10):
    """Pushes TEXT and returns the dead letter it caused (waits for it)."""
    r.rpush(service, text)
    end = time.monotonic() + timeout
    while r.llen(service + ':dead') <= before and time.monotonic() < end:
        time.sleep(0.02)
    letters = r.lrange(service + ':dead', before, -1)
    return json.loads(letters[0]) if len(letters) == 1 else {'letters': letters}


def check_reply_keys(r, service):
    for rid, key in (('100.0', '100'), ('1e2', '100'), ('-0.0', '0'), ('-7', '-7'),
                     ('9007199254740992', '9007199254740992'), ('1E+2', '100')):
        r.delete(key)
        r.rpush(service, '{"jsonrpc":"2.0","method":"add","params":[1,2],"id":%s}' % rid)
        resp = answer(r, key, 5)
        check(f'{service}: id {rid} is answered on key "{key}"',
              resp is not None and resp.get('result') == 3 and resp.get('id') == json.loads(rid),
              resp)
        r.delete(key)
    for rid in ('""', '1.5', '9007199254740993', '-9007199254740993', '1e300', 'null'):
        before = r.llen(service + ':dead')
        letter = dead_letter(r, service, '{"jsonrpc":"2.0","method":"add","params":[1,2],'
                             '"id":%s}' % rid, before)
        resp = letter.get('response') or {}
        check(f'{service}: id {rid} has no reply key: dead letter with the response',
              letter.get('reason') == 'no reply key' and resp.get('result') == 3 and
              resp.get('id') == json.loads(rid), letter)
    check(f'{service}: nothing was answered on keys "", "1.5", "1e+300"',
          not r.exists('', '1.5', '1e+300', '1e300'), r.keys('*'))
    for reply_to in ('', 5, None, ['x']):
        key = fresh()
        r.rpush(service, request('add', [1, 2], key, reply_to=reply_to))
        resp = answer(r, key, 5)
        check(f'{service}: reply_to {reply_to!r} is ignored: answered on the id',
              resp is not None and resp.get('result') == 3, resp)
    r.delete('7')
    r.rpush(service, '[{"jsonrpc":"2.0","method":"add","params":[1,2],"id":""},'
                     '{"jsonrpc":"2.0","method":"add","params":[2,2],"id":7.0}]')
    resp = answer(r, '7', 5)
    check(f'{service}: a batch answers on its first element with a reply key ("7")',
          isinstance(resp, list) and [x.get('result') for x in resp] == [3, 4], resp)
    r.delete('7')


def check_refusals(r, service):
    """Every reply key a worker must refuse, and the keys it still accepts."""
    refused = {
        "one of the service's own keys": [service, service + ':dead', service + ':stats',
                                          '{%s}:x' % service],
        "one of rrpc's keys": ['rrpc:services', 'rrpc:anything', '{appq}:inflight',
                               '{appq}:workers', 'x:dead', 'appq:stats'],
        "a service's request list": ['appq', 'appq#2'],
        'hash': ['app:hash'], 'string': ['app:string'], 'set': ['app:set'],
        'zset': ['app:zset'], 'list without expiry': ['app:list'],
    }
    for why, keys in refused.items():
        for key in keys:
            before = r.llen(service + ':dead')
            was = snapshot(r, key)
            letter = dead_letter(r, service, request('add', [20, 22], 'k', reply_to=key), before)
            now = snapshot(r, key)
            check(f'{service}: reply key {key} refused: {why}',
                  letter.get('reason') == 'reply key refused: ' + why and
                  (letter.get('response') or {}).get('result') == 42 and
                  (key in (service + ':dead', service + ':stats') or now == was),
                  (letter, was, now))
    # A reply list that has an expiry is a reply list: appended to, TTL renewed.
    r.delete('rrpc:reply:held')
    r.rpush('rrpc:reply:held', 'earlier')
    r.expire('rrpc:reply:held', 1000)
    r.rpush(service, request('add', [1, 1], 'rrpc:reply:held'))
    end = time.monotonic() + 5
    while r.llen('rrpc:reply:held') < 2 and time.monotonic() < end:
        time.sleep(0.02)
    items = r.lrange('rrpc:reply:held', 0, -1)
    check(f'{service}: a reply list with an expiry gets the reply and the reply TTL',
          len(items) == 2 and json.loads(items[1]).get('result') == 2 and
          0 < r.ttl('rrpc:reply:held') <= 60, (items, r.ttl('rrpc:reply:held')))
    # The worker loaded the script itself; after a flush it loads it again.
    r.script_flush()
    resp = call(r, service, 'add', [2, 3])
    check(f'{service}: answers after SCRIPT FLUSH (NOSCRIPT -> SCRIPT LOAD)',
          resp is not None and resp.get('result') == 5, resp)


def check_late_registration(r, service, other):
    """OTHER (the other worker) registered after SERVICE read the set, maybe."""
    for key in ('lateq#1', other) if other != service else ('lateq#1',):
        before = r.llen(service + ':dead')
        letter = dead_letter(r, service, request('add', [1, 2], 'k', reply_to=key), before)
        check(f'{service}: {key}, registered after the worker started, refused within 5 s',
              letter.get('reason') == "reply key refused: a service's request list" and
              not r.exists(key), letter)


def check_allow_list(r, service):
    for key in (fresh(), 'ok:' + secrets.token_hex(8)):
        r.rpush(service, request('add', [1, 2], key))
        resp = answer(r, key, 5)
        check(f'{service} --reply-prefix: {key[:12]}... is answered',
              resp is not None and resp.get('result') == 3, resp)
    for key, why in (('other:' + secrets.token_hex(8), 'not under an allowed prefix'),
                     ('ok', 'not under an allowed prefix'),
                     ('rrpc:services', "one of rrpc's keys")):
        before = r.llen(service + ':dead')
        letter = dead_letter(r, service, request('add', [1, 2], key), before)
        check(f'{service} --reply-prefix: {key[:12]} refused: {why}',
              letter.get('reason') == 'reply key refused: ' + why and
              (letter.get('response') or {}).get('result') == 3 and
              (key == 'rrpc:services' or not r.exists(key)), letter)


def check_handlers(r, worker, methods):
    for method in methods:
        resp = call(r, worker.name, method, timeout=30)
        err = (resp or {}).get('error') or {}
        check(f'{worker.name}: a handler raising via {method} answers -32603',
              err.get('code') == -32603 and err.get('message') == 'Internal error', resp)
        resp = call(r, worker.name, 'add', [1, 2])
        check(f'{worker.name}: still serving after {method}',
              resp is not None and resp.get('result') == 3 and worker.proc.poll() is None,
              (resp, worker.proc.poll()))


def outage_lines(worker, since):
    """The outage lines a worker logged after offset SINCE of its log."""
    text = worker.log()[since:]
    return (len(re.findall(r'retrying with backoff', text)),
            len(re.findall(r'working again', text)), text)


def expect_outage(workers, marks, code, label):
    for w in workers:
        started, ended, text = outage_lines(w, marks[w.name])
        check(f'{w.name}: {label}: logged once ({code}), then "working again"',
              started == 1 and ended >= 1 and code in text and w.proc.poll() is None,
              f'{started} start lines, {ended} end lines, alive={w.proc.poll() is None}:\n'
              + text[-3000:])


def marks_of(workers):
    return {w.name: len(w.log()) for w in workers}


def answered_again(r, workers, label):
    for w in workers:
        resp = call(r, w.name, 'add', [40, 2], timeout=15)
        check(f'{w.name}: answers again after {label}',
              resp is not None and resp.get('result') == 42, resp)


def requests_in_hand(r, workers, ms):
    """Gives each worker a sleep(ms) call and waits until all are taken;
    returns their reply keys."""
    keys = {}
    for w in workers:
        keys[w.name] = fresh()
        r.rpush(w.name, request('sleep', [ms], keys[w.name]))
    end = time.monotonic() + 5
    while any(r.llen(w.name) for w in workers) and time.monotonic() < end:
        time.sleep(0.01)
    return keys


def check_replies_arrived(r, workers, keys, ms, label):
    for w in workers:
        resp = answer(r, keys[w.name], 15)
        check(f'{w.name}: the reply in hand during {label} arrived afterwards',
              resp is not None and resp.get('result') == ms, resp)


def faults(main, workers, tmp):
    r = redis.Redis(port=main.port)

    # WRONGTYPE: someone made the request list a hash (Python's, Node's) or a
    # string (Ruby's).
    marks = marks_of(workers)
    for i, w in enumerate(workers):
        if i % 2:
            r.set(w.name, 'not a list')
        else:
            r.hset(w.name, 'not', 'a list')
    time.sleep(3)
    for w in workers:
        r.delete(w.name)
    answered_again(r, workers, 'WRONGTYPE')
    expect_outage(workers, marks, 'WRONGTYPE', 'WRONGTYPE on BLPOP')

    # BUSY: a script runs longer than busy-reply-threshold while a reply is due.
    r.config_set('busy-reply-threshold', 100)
    marks = marks_of(workers)
    keys = requests_in_hand(r, workers, 300)
    spin = threading.Thread(target=lambda: redis.Redis(port=main.port).eval(
        "local t = redis.call('TIME')[1] "
        "while redis.call('TIME')[1] - t < 3 do end return 1", 0))
    spin.start()
    spin.join()
    check_replies_arrived(r, workers, keys, 300, 'BUSY')
    answered_again(r, workers, 'BUSY')
    expect_outage(workers, marks, 'BUSY', 'BUSY on the reply')

    # A restart: connection refused for 3 s with a reply in hand.
    marks = marks_of(workers)
    keys = requests_in_hand(r, workers, 300)
    main.stop()
    time.sleep(3)
    main.start()
    r = redis.Redis(port=main.port)
    check_replies_arrived(r, workers, keys, 300, 'a restart')
    answered_again(r, workers, 'a restart')
    expect_outage(workers, marks, 'onnect', 'Redis restarted')

    # NOPERM: the ACL takes BLPOP away, then gives it back.
    marks = marks_of(workers)
    r.acl_setuser('default', enabled=True, commands=['-blpop'])
    time.sleep(3)
    r.acl_setuser('default', enabled=True, commands=['+blpop'])
    answered_again(r, workers, 'NOPERM on BLPOP')
    expect_outage(workers, marks, 'NOPERM', 'NOPERM on BLPOP')
    # A refused EVALSHA is not "not now": the answer becomes a dead letter.
    r.acl_setuser('default', enabled=True, commands=['-evalsha'])
    for w in workers:
        before = r.llen(w.name + ':dead')
        letter = dead_letter(r, w.name, request('add', [1, 2], fresh()), before)
        check(f'{w.name}: EVALSHA refused by the ACL -> dead letter "reply failed: NOPERM"',
              str(letter.get('reason')).startswith('reply failed: NOPERM') and
              (letter.get('response') or {}).get('result') == 3, letter)
    r.acl_setuser('default', enabled=True, commands=['+evalsha'])
    answered_again(r, workers, 'EVALSHA refused')

    # READONLY: the workers' Redis becomes a replica (a failover gone the
    # other way) with a reply in hand, then a master again.
    other = RedisServer(tmp, 'other')
    try:
        marks = marks_of(workers)
        keys = requests_in_hand(r, workers, 500)
        r.replicaof('127.0.0.1', other.port)
        time.sleep(3)
        r.replicaof('NO', 'ONE')
        check_replies_arrived(r, workers, keys, 500, 'READONLY')
        answered_again(r, workers, 'READONLY')
        expect_outage(workers, marks, 'READONLY', 'READONLY (a replica)')
    finally:
        other.stop()
    return r


# Each peer: its fault worker and calc server (the command, without --redis
# and --service), its fault methods and the one that ends the worker (status 3).
PEERS = {
    'python': {'tag': 'py', 'fault': [PY, os.path.join(HERE, 'fault_worker.py')],
               'calc': [PY, os.path.join(ROOT, 'clients/python/calc_server.py')],
               'faults': ['generator_exit', 'custom_base_exception', 'recurse', 'memory_error'],
               'exit': 'system_exit'},
    'ruby': {'tag': 'rb', 'fault': ['ruby', os.path.join(HERE, 'fault_worker.rb')],
             'calc': ['ruby', os.path.join(ROOT, 'clients/ruby/calc_server.rb')],
             'faults': ['not_implemented', 'recurse', 'script_error', 'load_error', 'no_memory',
                        'custom_exception'],
             'exit': 'system_exit'},
    'node': {'tag': 'js', 'fault': [NODE, os.path.join(HERE, 'fault_worker.js')],
             'calc': [NODE, os.path.join(ROOT, 'clients/node/calc_server.js')],
             'faults': ['throw_string', 'throw_undefined', 'throw_proxy', 'recurse',
                        'reject_number', 'stray'],
             'exit': 'exit'},
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--peers', default=','.join(PEERS),
                        help='comma-separated peers to check (default: all of %(default)s)')
    peers = parser.parse_args().peers.split(',')
    if not peers or any(p not in PEERS for p in peers):
        sys.exit(f'check_peer_faults.py: --peers takes some of {",".join(PEERS)}')
    # ctest's timeout and ^C must not leave redis-servers and workers behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix='rrpc-peer-faults.')
    main_redis = RedisServer(tmp, 'main')
    r = redis.Redis(port=main_redis.port)
    url = main_redis.url
    # What the reply keys must not touch: a registered service's list and
    # an application's keys of every type.
    r.sadd('rrpc:services', 'appq')
    r.rpush('appq', 'a request of appq')
    r.hset('app:hash', 'user', 'alice')
    r.set('app:string', 'value')
    r.sadd('app:set', 'm')
    r.zadd('app:zset', {'m': 1})
    r.rpush('app:list', 'persistent')
    r.rpush('x:dead', 'a letter')
    allow = ['--reply-prefix', 'rrpc:reply:', '--reply-prefix', 'ok:', '--redis', url]
    workers = [Worker(tmp, 'f' + PEERS[p]['tag'], p, PEERS[p]['fault'] + ['--redis', url, '--service',
                                                                           'f' + PEERS[p]['tag']])
               for p in peers]
    limited = [Worker(tmp, 'p' + PEERS[p]['tag'], p, PEERS[p]['calc'] + ['--service',
                                                                         'p' + PEERS[p]['tag']] + allow)
               for p in peers]
    try:
        for w in workers + limited:
            resp = call(r, w.name, 'add', [0, 0], timeout=30)
            if not check(f'{w.name} ({w.lang}) serves', resp and resp.get('result') == 0, resp):
                raise SystemExit(w.log())
        r.sadd('rrpc:services', 'lateq')  # after the workers read the set
        late_from = time.monotonic()
        for w in workers:
            check_reply_keys(r, w.name)
            check_refusals(r, w.name)
        for w in limited:
            check_allow_list(r, w.name)
        time.sleep(max(0.0, late_from + 6.5 - time.monotonic()))
        for i, w in enumerate(workers):  # each worker against the next one's list
            check_late_registration(r, w.name, workers[(i + 1) % len(workers)].name)
        for w in workers:
            check_handlers(r, w, PEERS[w.lang]['faults'])
        r = faults(main_redis, workers, tmp)
        for w in limited:  # they lived through the faults too
            resp = call(r, w.name, 'add', [1, 2], timeout=15)
            check(f'{w.name}: still serving after the faults', resp and resp.get('result') == 3,
                  resp)
        # SystemExit from a handler ends the worker (its record removed);
        # SIGTERM ends the others; both gracefully.
        for w in workers:
            key = fresh()
            r.rpush(w.name, request(PEERS[w.lang]['exit'], [], key))
            check(f'{w.name}: SystemExit from a handler ends the worker with its status',
                  w.proc.wait(timeout=15) == 3, w.log()[-2000:])
            check(f'{w.name}: ... and removes its registry record',
                  r.zcard('{%s}:workers' % w.name) == 0, r.zrange('{%s}:workers' % w.name, 0, -1))
        for w in limited:
            w.proc.send_signal(signal.SIGTERM)
            check(f'{w.name}: SIGTERM after all that: exit status 0',
                  w.proc.wait(timeout=15) == 0, w.log()[-2000:])
    finally:
        for w in workers + limited:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()
        if failures:
            for w in workers + limited:
                print(f'---- {w.name} log (tail)\n{w.log()[-4000:]}')
        main_redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f'check_peer_faults.py: {len(failures)} failed')
        sys.exit(1)
    print('check_peer_faults.py: all passed')


if __name__ == '__main__':
    main()
