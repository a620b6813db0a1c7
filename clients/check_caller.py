#!/usr/bin/python3
"""check_caller.py -- checks that the Ruby, Python and Node *clients* behave like
the C sync client on what docs/PROTOCOL.md adds for callers (sections 7, 9).

Each check runs one call, add(1, 2), from a fresh `ruby`, `python` or `node`
process (LANG) and looks at the wire and at Redis from here (the Python one
is this script's own interpreter, which has redis-py):

  deadline LANG         section 7: the queued request carries `deadline`, an
                        integer within [now, now + timeout] on Redis's clock;
                        an unregistered service with no worker is waited on
                        for the whole timeout (CallTimeout / RRPC::Timeout),
                        and the request is withdrawn after it.
  late-worker LANG      an unregistered service is waited on: a seed-style
                        worker started a second after the call answers it.
  overloaded LANG       section 9: a registered service whose queue is at its
                        max_queue refuses the call at once (Overloaded), and
                        nothing is queued; with fail fast off the call is
                        pushed as before.
  unavailable LANG SERVICE
                        a registered SERVICE without a live worker fails at
                        once (Unavailable), and nothing is queued.
  gone LANG SERVICE     the call is already waiting when the test's shell
                        kills SERVICE's last worker: it gives up with
                        Unavailable well before its timeout.  (The shell
                        checks that the requests were withdrawn.)

Needs REDIS_URL; exits 1 with a message on the first failed check.
"""

import json
import os
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
r = redis.Redis.from_url(os.environ['REDIS_URL'])

# One call, its outcome printed as "<word> <seconds the call took>".
CALLERS = {
    'python': [sys.executable, '-c', '''
import sys, time
sys.path.insert(0, sys.argv[1])
import rrpc
c = rrpc.Client(timeout=float(sys.argv[3]), fail_fast=sys.argv[4] == '1')
t = time.monotonic()
try:
    word = 'result %s' % c.call(sys.argv[2], 'add', 1, 2)
except rrpc.Timeout:
    word = 'timeout'
except rrpc.Unavailable:
    word = 'unavailable'
except rrpc.Overloaded:
    word = 'overloaded'
print(word, time.monotonic() - t)
''', os.path.join(HERE, 'python', 'src')],
    'ruby': ['ruby', '-e', '''
require_relative ARGV[0]
c = RRPC::Client.new(timeout: Float(ARGV[2]), fail_fast: ARGV[3] == '1')
t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
word = begin
  "result #{c.call(ARGV[1], 'add', 1, 2)}"
rescue RRPC::Timeout then 'timeout'
rescue RRPC::Unavailable then 'unavailable'
rescue RRPC::Overloaded then 'overloaded'
end
puts "#{word} #{Process.clock_gettime(Process::CLOCK_MONOTONIC) - t}"
''', os.path.join(HERE, 'ruby', 'lib', 'rrpc')],
    'node': [os.environ.get('RRPC_NODE', 'node'), '-e', '''
const rrpc = require(process.argv[1]);
const c = new rrpc.Client({ timeout: Number(process.argv[3]), failFast: process.argv[4] === '1' });
const t = performance.now();
c.call(process.argv[2], 'add', [1, 2]).then((r) => `result ${r}`, (e) => {
  for (const [word, cls] of [['timeout', rrpc.Timeout], ['unavailable', rrpc.Unavailable],
                             ['overloaded', rrpc.Overloaded]]) if (e instanceof cls) return word;
  throw e;
}).then((word) => {
  console.log(`${word} ${(performance.now() - t) / 1000}`);
  return c.close();
});
''', os.path.join(HERE, 'node')],
}


# "At once": well under the calls' 10 s timeout and a wait slice (1 s).  A
# caller's first call includes its interpreter's warm-up (Node's redis
# client costs tens of ms the first time), which a loaded machine stretches.
AT_ONCE_S = 0.9


def fail(message):
    sys.exit(f'check_caller.py: {message}')


def redis_ms():
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


def start(lang, service, timeout, fail_fast=True):
    return subprocess.Popen(CALLERS[lang] + [service, str(timeout), '1' if fail_fast else '0'],
                            stdout=subprocess.PIPE, text=True)


def outcome(proc):
    """(word, seconds) the caller printed."""
    out, _ = proc.communicate(timeout=30)
    if proc.returncode != 0 or not out.strip():
        fail(f'the caller failed (status {proc.returncode}): {out!r}')
    word, seconds = out.strip().rsplit(' ', 1)
    return word, float(seconds)


def queued(service, wait_s=10.0):
    """The first request on SERVICE's list, once one is there."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        text = r.lindex(service, 0)
        if text is not None:
            return text
        time.sleep(0.005)
    fail(f'no request appeared on {service}')


def check_deadline(lang):
    service, timeout = f'deadline_{lang}', 2
    before = redis_ms()
    proc = start(lang, service, timeout)
    req = json.loads(queued(service))
    after = redis_ms()
    deadline = req.get('deadline')
    if not isinstance(deadline, int) or isinstance(deadline, bool):
        fail(f'no integer deadline in {req}')
    # The client's clock offset is measured, not exact: allow a few ms.
    low, high = before + timeout * 1000 - 20, after + timeout * 1000 + 20
    if not low <= deadline <= high:
        fail(f'deadline {deadline} not in [{low}, {high}] (Redis clock, ms)')
    word, seconds = outcome(proc)
    if word != 'timeout' or seconds < timeout - 0.05:
        fail(f'unregistered service: expected a timeout after {timeout} s, got {word} '
             f'after {seconds:.3f} s')
    if r.llen(service):
        fail('the request was not withdrawn after the timeout')


def check_late_worker(lang):
    service = f'late_{lang}'
    proc = start(lang, service, 10)
    queued(service)
    time.sleep(1.0)
    worker = subprocess.Popen([sys.executable, os.path.join(HERE, 'python', 'seed_server.py'),
                               '--service', service])
    try:
        word, seconds = outcome(proc)
    finally:
        worker.kill()
        worker.wait()
    if word != 'result 3' or seconds < 0.9:
        fail(f'expected result 3 after about 1 s, got {word} after {seconds:.3f} s')


def check_overloaded(lang):
    service = f'full_{lang}'
    # A registered service with one live worker (a record made by hand,
    # valid for a minute) and max_queue 1, whose queue already holds one.
    r.zadd('{%s}:workers' % service, {'hand-made': redis_ms() + 60000})
    r.hset('{%s}:config' % service, mapping={'max_queue': 1, 'ttl_ms': 60000})
    r.rpush(service, 'queued')
    word, seconds = outcome(start(lang, service, 10))
    if word != 'overloaded' or seconds > AT_ONCE_S:
        fail(f'expected overloaded at once, got {word} after {seconds:.3f} s')
    if r.llen(service) != 1:
        fail(f'an overloaded call was queued: {r.lrange(service, 0, -1)}')
    word, _ = outcome(start(lang, service, 0.3, fail_fast=False))
    if word != 'timeout':
        fail(f'with fail fast off: expected a timeout, got {word}')
    r.delete(service, '{%s}:workers' % service, '{%s}:config' % service)


def check_unavailable(lang, service):
    length = r.llen(service)
    word, seconds = outcome(start(lang, service, 10))
    if word != 'unavailable' or seconds > AT_ONCE_S:
        fail(f'expected unavailable at once, got {word} after {seconds:.3f} s')
    if r.llen(service) != length:
        fail('the refused call was queued')


def check_gone(lang, service):
    word, seconds = outcome(start(lang, service, 10))
    if word != 'unavailable' or seconds > 5:
        fail(f'expected unavailable well before the 10 s timeout, got {word} '
             f'after {seconds:.3f} s')


def main():
    what, args = sys.argv[1], sys.argv[2:]
    if args[0] not in CALLERS:
        fail(f'LANG is one of {sorted(CALLERS)}')
    {'deadline': check_deadline, 'late-worker': check_late_worker,
     'overloaded': check_overloaded, 'unavailable': check_unavailable,
     'gone': check_gone}[what](*args)


if __name__ == '__main__':
    main()
