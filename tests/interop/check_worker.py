#!/usr/bin/python3
"""check_worker.py -- raw-wire checks that every rrpc worker (C, Ruby, Python)
behaves the same on the extension rules of docs/PROTOCOL.md.

test_interop.sh runs it against each server, so that the peers cannot drift
from the C server on what the conformance vectors do not cover, because
those need Redis's clock or the service's own key names:

  deadline SERVICE  section 7: a request whose deadline has passed on Redis's
                    clock is answered -32000 "Deadline exceeded" with data
                    {"deadline", "now"} and its handler does not run (nor
                    that of an expired notification); a future deadline, and
                    one that is not a positive integer, do not stop a call.
  ownkey SERVICE    section 6: a reply key naming one of the service's own
                    keys (its list, :dead, :stats, anything under {L}) is
                    refused as a dead letter with the C server's reason.

Needs REDIS_URL; exits 1 with a message on the first failed check.
"""

import json
import os
import secrets
import sys
import time

import redis

r = redis.Redis.from_url(os.environ['REDIS_URL'])
OWN_KEY_REASON = "reply key refused: one of the service's own keys"


def fail(message):
    sys.exit(f'check_worker.py: {message}')


def redis_ms():
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


def call(service, method, params, **members):
    """Pushes one request raw and returns (response, seconds it took)."""
    key = 'rrpc:reply:' + secrets.token_hex(16)
    req = dict(jsonrpc='2.0', method=method, params=params, id=key, **members)
    started = time.monotonic()
    r.rpush(service, json.dumps(req))
    popped = r.blpop([key], timeout=5)
    if popped is None:
        fail(f'{service}: no answer to {req}')
    return json.loads(popped[1]), time.monotonic() - started


def check_deadline(service):
    past = redis_ms() - 1000
    # Either handler, if run, would hold the worker for 1.5 s before the
    # answer below could come; an expired notification is not answered.
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'sleep', 'params': [1500],
                                 'deadline': past}))
    resp, took = call(service, 'sleep', [1500], deadline=past)
    err = resp.get('error') or fail(f'{service}: expired request answered {resp}')
    if err.get('code') != -32000 or err.get('message') != 'Deadline exceeded':
        fail(f'{service}: expired request: {err}')
    data = err.get('data')
    if not (isinstance(data, dict) and set(data) == {'deadline', 'now'} and
            data['deadline'] == past and isinstance(data['now'], int) and data['now'] >= past):
        fail(f'{service}: expired request: data {data}, deadline sent {past}')
    if took >= 1.0:
        fail(f'{service}: the expired answer took {took:.2f} s: a handler ran')
    for deadline in (redis_ms() + 60000, past + 0.5, str(past), -5, True):
        resp, _ = call(service, 'add', [1, 2], deadline=deadline)
        if resp.get('result') != 3:
            fail(f'{service}: deadline {deadline!r} should not stop the call: {resp}')
    print(f'ok {service}: deadline')


def check_own_keys(service):
    own = [service, service + ':dead', service + ':stats', '{%s}:reply' % service]
    before = r.llen(service + ':dead')
    for key in own:
        r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2],
                                     'id': 1, 'reply_to': key}))
    end = time.monotonic() + 5
    while r.llen(service + ':dead') < before + len(own) and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.2)  # an answer wrongly pushed onto the list would be popped by now
    letters = [json.loads(x) for x in r.lrange(service + ':dead', before, -1)]
    if len(letters) != len(own):
        fail(f'{service}: {len(letters)} dead letters for {len(own)} own reply keys: {letters}')
    for letter in letters:
        if letter.get('reason') != OWN_KEY_REASON or \
                letter.get('response', {}).get('result') != 3:
            fail(f'{service}: dead letter {letter}')
    if r.llen(service) != 0 or r.exists('{%s}:reply' % service) or \
            r.type(service + ':stats') != b'hash':
        fail(f'{service}: an answer reached one of its own keys')
    print(f'ok {service}: own keys')


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('deadline', 'ownkey'):
        sys.exit('usage: check_worker.py deadline|ownkey SERVICE')
    (check_deadline if sys.argv[1] == 'deadline' else check_own_keys)(sys.argv[2])
