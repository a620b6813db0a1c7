#!/usr/bin/python3
"""check_protocol.py -- checks a running calc worker against docs/PROTOCOL.md.

It speaks the wire format directly with redis-py (not through the rrpc package), so
the Python and Ruby workers are held to the protocol rather than to each
other: reply keys, id echo, error codes, batches, notifications, dead
letters, TTLs.  With --client it also checks rrpc.Client against it.
Run by clients/test_peers.sh; prints each failure and exits 1 if any.

    /usr/bin/python3 check_protocol.py --service NAME [--redis URL] [--client]
"""

import argparse
import json
import os
import secrets
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'python', 'src'))
import rrpc  # noqa: E402

failures = []


def check(label, ok, detail=''):
    if ok:
        print(f'ok   {label}')
    else:
        print(f'FAIL {label}: {detail}')
        failures.append(label)


class Wire:
    def __init__(self, r, service):
        self.r, self.service = r, service
        self.dead_key, self.stats_key = service + ':dead', service + ':stats'

    def push(self, message):
        text = message if isinstance(message, (bytes, str)) else json.dumps(message)
        self.r.rpush(self.service, text)

    def reply(self, key, timeout=5):
        popped = self.r.blpop([key], timeout=timeout)
        return json.loads(popped[1]) if popped else None

    def sync(self):
        """Waits until the worker has handled everything pushed so far: the
        list is FIFO and the worker single-threaded, so answering one more
        call means the earlier messages are done."""
        key = 'check:sync:' + secrets.token_hex(8)
        self.push({'jsonrpc': '2.0', 'method': 'add', 'params': [0, 0], 'id': key})
        return self.reply(key) is not None

    def dead_letters(self, since, expect=1, wait=3.0):
        """The dead letters filed after index SINCE.  A multi-threaded worker
        may file one after answering the sync call (another thread holds
        it), so wait up to WAIT seconds for EXPECT of them."""
        deadline = time.monotonic() + wait
        while self.r.llen(self.dead_key) - since < expect and time.monotonic() < deadline:
            time.sleep(0.02)
        return [json.loads(x) for x in self.r.lrange(self.dead_key, since, -1)]

    def keys(self):
        return set(self.r.keys('*'))


def fresh():
    return 'check:' + secrets.token_hex(8)


def call(w, method, params, **extra):
    key = fresh()
    req = {'jsonrpc': '2.0', 'method': method, 'id': key, **extra}
    if params is not None:
        req['params'] = params
    w.push(req)
    return w.reply(key)


def check_calls(w):
    resp = call(w, 'add', [1, 2])
    check('add [1,2] -> 3 with id echoed', resp and resp.get('result') == 3 and type(resp['result']) is int
          and resp.get('jsonrpc') == '2.0' and resp.get('id', '').startswith('check:'), resp)
    resp = call(w, 'add', {'a': 1, 'b': 2.5})
    check('add {"a":1,"b":2.5} -> 3.5', resp and resp.get('result') == 3.5, resp)
    resp = call(w, 'multiply', [2 ** 40, 2 ** 12])
    check('multiply of integers stays an integer', resp and resp.get('result') == 2 ** 52
          and type(resp['result']) is int, resp)
    resp = call(w, 'divide', [6, 3])
    check('divide [6,3] -> 2.0 (a float)', resp and resp.get('result') == 2.0
          and type(resp['result']) is float, resp)
    resp = call(w, 'subtract', {'b': 3, 'a': 10})
    check('subtract named params bind by name', resp and resp.get('result') == 7, resp)
    for params in ([1, 'x', None, {'k': [True]}], {'k': [1, {}]}, []):
        resp = call(w, 'echo', params)
        check(f'echo {json.dumps(params)} returns its params exactly',
              resp and resp.get('result') == params and type(resp['result']) is type(params), resp)
    resp = call(w, 'sleep', {'ms': 20})
    check('sleep {"ms":20} -> 20', resp and resp.get('result') == 20, resp)


def check_errors(w):
    resp = call(w, 'divide', [1, 0])
    err = (resp or {}).get('error') or {}
    check('divide by zero -> code 1 "division by zero"',
          err.get('code') == 1 and err.get('message') == 'division by zero' and 'result' not in resp, resp)
    resp = call(w, 'nosuchmethod', [])
    check('unknown method -> -32601', ((resp or {}).get('error') or {}).get('code') == -32601, resp)
    for params in (['x', 1], [1], [1, 2, 3], [True, 1], {'a': 1}, {'a': 1, 'b': 2, 'c': 3}, None):
        resp = call(w, 'add', params)
        check(f'add {json.dumps(params)} -> -32602',
              ((resp or {}).get('error') or {}).get('code') == -32602, resp)


def check_reply_keys(w):
    rid = secrets.randbelow(10 ** 12) + 1
    w.push({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 1], 'id': rid})
    resp = w.reply(str(rid))
    check('integer id: reply key is its decimal text, id stays a number',
          resp and resp.get('id') == rid and type(resp['id']) is int, resp)
    w.push({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 1], 'id': -rid})
    resp = w.reply(str(-rid))
    check('negative integer id', resp and resp.get('id') == -rid, resp)

    reply_to, rid = fresh(), fresh()
    w.push({'jsonrpc': '2.0', 'method': 'add', 'params': [2, 2], 'id': rid, 'reply_to': reply_to})
    resp = w.reply(reply_to)
    check('reply_to wins over id', resp and resp.get('id') == rid and resp.get('result') == 4, resp)
    check('nothing was pushed to the id', not w.r.exists(rid), w.r.exists(rid))

    reply_to = fresh()
    w.push({'jsonrpc': '2.0', 'method': 'add', 'params': [2, 2], 'id': None, 'reply_to': reply_to})
    resp = w.reply(reply_to)
    check('id null with reply_to is answered with id null', resp and 'id' in resp
          and resp['id'] is None and resp.get('result') == 4, resp)

    key = fresh()
    w.push({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': key})
    deadline = time.time() + 5
    while not w.r.exists(key) and time.time() < deadline:
        time.sleep(0.01)
    ttl = w.r.ttl(key)
    check('reply key has a TTL in 1..60', 0 < ttl <= 60, ttl)
    w.reply(key)


def check_invalid(w):
    def invalid(label, message, key, expect_id):
        w.push(message)
        resp = w.reply(key)
        err = (resp or {}).get('error') or {}
        check(label, err.get('code') == -32600 and 'id' in resp and resp['id'] == expect_id, resp)

    key = fresh()
    invalid('jsonrpc "1.0" -> -32600 with the id', {'jsonrpc': '1.0', 'method': 'add', 'id': key}, key, key)
    key = fresh()
    invalid('method not a string -> -32600', {'jsonrpc': '2.0', 'method': 5, 'id': key}, key, key)
    key = fresh()
    invalid('params a string -> -32600', {'jsonrpc': '2.0', 'method': 'add', 'params': 'x', 'id': key},
            key, key)
    key = fresh()
    invalid('object id -> -32600 id null, to reply_to',
            {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': {'a': 1}, 'reply_to': key},
            key, None)
    key = fresh()
    invalid('boolean id -> -32600 id null, to reply_to',
            {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': True, 'reply_to': key}, key, None)


def check_dead_letters(w):
    def dead(label, message, reason_start, response_code=None):
        before = w.r.llen(w.dead_key)
        stats = int(w.r.hget(w.stats_key, 'dead') or 0)
        w.push(message)
        w.sync()
        letters = w.dead_letters(before)
        letter = letters[0] if len(letters) == 1 else {}
        ok = (str(letter.get('reason', '')).startswith(reason_start)
              and letter.get('service') and isinstance(letter.get('time'), float)
              and (isinstance(letter.get('message'), str)
                   or isinstance(letter.get('message_base64'), str)
                   or isinstance(letter.get('message_sha1'), str))  # too large: bounded copy
              and int(w.r.hget(w.stats_key, 'dead') or 0) == stats + 1)
        if response_code is not None:
            resp = letter.get('response')
            resp = resp[0] if isinstance(resp, list) and resp else resp
            ok = ok and ((resp or {}).get('error') or {}).get('code', 'result') == response_code
        check(label, ok, letters)
        return letter

    letter = dead('garbage -> dead letter "parse error"', 'garbage', 'parse error: ')
    check('dead letter keeps the message text', letter.get('message') == 'garbage', letter)
    dead('invalid UTF-8 -> dead letter', b'{"jsonrpc":"2.0","method":"\xff\xfe"}', 'invalid UTF-8')
    dead('lone surrogate -> parse error', '{"jsonrpc":"2.0","method":"add","id":"\\ud800"}', 'parse error')
    dead('NaN -> parse error', '{"jsonrpc":"2.0","method":"add","params":[NaN,1],"id":"x"}', 'parse error')
    dead('comment -> parse error', '{"jsonrpc":"2.0",/*c*/"method":"add","params":[1,2],"id":"x"}',
         'parse error')
    limit = 1048576
    big = b'{"jsonrpc":"2.0","method":"echo","params":["' + b'x' * limit + b'"],"id":"big"}'
    dead('oversize -> dead letter "too large"', big, f'too large: {len(big)} bytes (limit {limit})')
    dead('id null without reply_to -> run, then dead letter "no reply key"',
         {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': None}, 'no reply key', 'result')
    dead('a bare number -> -32600, dead letter', '5', 'no reply key', -32600)
    dead('object id without reply_to -> -32600, dead letter',
         {'jsonrpc': '2.0', 'method': 'add', 'id': {'a': 1}}, 'no reply key', -32600)
    dead('empty batch -> -32600, dead letter', '[]', 'no reply key', -32600)
    dead('batch without reply keys -> dead letter',
         [{'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': None}], 'no reply key', 'result')
    key = fresh()
    w.r.set(key, 'a string, not a list')
    dead('a string as reply key -> dead letter "reply key refused: string"',
         {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': key},
         'reply key refused: string', 'result')
    check('the refused key is untouched: same value, no expiry',
          w.r.get(key) == b'a string, not a list' and w.r.ttl(key) == -1,
          (w.r.get(key), w.r.ttl(key)))
    resp = call(w, 'add', [40, 2])
    check('the worker still answers after all that', resp and resp.get('result') == 42, resp)


def check_batches(w):
    key = fresh()
    w.push([{'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': 'a', 'reply_to': key},
            {'jsonrpc': '2.0', 'method': 'add', 'params': [3, 4], 'reply_to': key},
            {'jsonrpc': '2.0', 'method': 'divide', 'params': [1, 0], 'id': 7, 'reply_to': key},
            5])
    resp = w.reply(key)
    ok = (isinstance(resp, list) and len(resp) == 3
          and resp[0].get('id') == 'a' and resp[0].get('result') == 3
          and resp[1].get('id') == 7 and resp[1]['error']['code'] == 1
          and resp[2].get('id', 'missing') is None and resp[2]['error']['code'] == -32600)
    check('batch: one array, notifications skipped, invalid element answered', ok, resp)
    check('batch response pushed once', not w.r.exists(key), w.r.lrange(key, 0, -1))

    before = w.keys()
    w.push([{'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'reply_to': fresh()},
            {'jsonrpc': '2.0', 'method': 'echo', 'params': [1]}])
    w.push({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2]})
    w.sync()
    check('notifications (single and batch) leave no key', w.keys() == before, w.keys() ^ before)


def check_client(service, url):
    client = rrpc.Client(url, timeout=5)
    calc = client.proxy(service)
    check('Client: proxy add', calc.add(1, 2) == 3)
    check('Client: named params', client.call(service, 'subtract', a=5, b=3) == 2)
    for label, fn, code in [('divide by zero', lambda: calc.divide(1, 0), 1),
                            ('unknown method', lambda: calc.nosuch(1), -32601),
                            ('bad params', lambda: calc.add('x', 1), -32602),
                            ('too few params', lambda: calc.add(1), -32602)]:
        try:
            fn()
            check(f'Client: {label} raises RemoteError', False, 'no exception')
        except rrpc.RemoteError as err:
            check(f'Client: {label} raises RemoteError {code}', err.code == code, err.code)
    before = set(client.redis.keys('*'))
    client.notify(service, 'add', 1, 2)
    check('Client: notify leaves no key', calc.add(0, 0) == 0 and set(client.redis.keys('*')) == before)
    nobody = 'check:nobody:' + secrets.token_hex(4)
    start = time.time()
    try:
        client.call(nobody, 'add', 1, 2, timeout=0.3)
        check('Client: timeout raises CallTimeout', False, 'no exception')
    except rrpc.Timeout:
        check('Client: timeout raises CallTimeout and withdraws the request',
              time.time() - start < 2 and client.redis.llen(nobody) == 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--redis', default=os.environ.get('REDIS_URL'))
    parser.add_argument('--service', required=True)
    parser.add_argument('--client', action='store_true', help='also check rrpc.Client')
    args = parser.parse_args()
    w = Wire(redis.Redis.from_url(args.redis), args.service)
    for group in (check_calls, check_errors, check_reply_keys, check_invalid, check_batches,
                  check_dead_letters):
        group(w)
    if args.client:
        check_client(args.service, args.redis)
    if failures:
        print(f'{len(failures)} check(s) failed against {args.service}')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
