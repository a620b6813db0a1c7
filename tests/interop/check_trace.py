"""check_trace.py -- W3C Trace Context across C, Ruby, Python and Node hops.

One call enters the C calc-server's forward, which calls the Ruby
calc_server's forward, which calls the Python one's, which calls the Node
one's, which calls the C calc-server's add (PROTOCOL.md section 7).  Redis's MONITOR shows every
request as it is pushed: each hop's request must carry the trace id the
call started with (or, without one, the trace the C client started), its
flags, and a parent id of its own.  A request whose traceparent is invalid
is answered all the same, and the calls its handler makes start a trace of
their own.

Usage: check_trace.py RRPC_CLI SERVICE_C SERVICE_RB SERVICE_PY SERVICE_JS
(REDIS_URL names the Redis; the four services are running.)
"""

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time

import redis

CLI, C, RB, PY, JS = sys.argv[1:6]
TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
REQUEST = re.compile(r'"method":"([^"]+)".*?"traceparent":"([^"]*)"|'
                     r'"traceparent":"([^"]*)".*?"method":"([^"]+)"')

failures = []


def check(name, ok, detail=''):
    print(('ok   ' if ok else 'FAIL ') + name + ('' if ok else f': {detail}'))
    if not ok:
        failures.append(name)


class Watch:
    """The requests pushed while it runs, from MONITOR: (method, traceparent)."""

    def __init__(self):
        self.conn = redis.Redis.from_url(os.environ['REDIS_URL'])
        self.seen = []
        self.stop = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        with self.conn.monitor() as m:
            self.ready.set()
            while not self.stop:
                command = m.next_command()['command']
                if 'traceparent' not in command or not command.upper().startswith(('RPUSH', 'EVAL')):
                    continue
                for hit in REQUEST.finditer(command):
                    method = hit.group(1) or hit.group(4)
                    self.seen.append((method, hit.group(2) or hit.group(3)))

    def finish(self):
        time.sleep(0.3)
        self.stop = True
        self.conn.ping()  # wakes the monitor to see stop
        r = redis.Redis.from_url(os.environ['REDIS_URL'])
        r.ping()
        self.thread.join(5)
        return self.seen


def chain(traceparent):
    """The forwarded call's answer and the requests it caused."""
    watch = Watch()
    params = json.dumps([RB, 'forward', [PY, 'forward', [JS, 'forward', [C, 'add', [2, 3]]]]])
    args = [CLI, 'call', '--timeout', '20']
    if traceparent:
        args += ['--traceparent', traceparent]
    out = subprocess.run(args + [C, 'forward', params], capture_output=True, text=True)
    return out, watch.finish()


def check_hops(name, out, seen, trace_id, flags):
    check(f'{name}: the answer came back through every hop',
          out.returncode == 0 and out.stdout.strip() == '5', out.stdout + out.stderr)
    methods = [m for m, _ in seen]
    check(f'{name}: five requests, forward x4 then add', methods == ['forward'] * 4 + ['add'],
          methods)
    ids = {tp[3:35] for _, tp in seen}
    check(f'{name}: every hop carries the trace id', ids == {trace_id}, seen)
    parents = [tp[36:52] for _, tp in seen]
    check(f'{name}: each hop has a parent id of its own', len(set(parents)) == len(parents),
          parents)
    check(f'{name}: the flags are kept', {tp[52:] for _, tp in seen} == {'-' + flags}, seen)


out, seen = chain(TP)
check_hops('given traceparent', out, seen, TP[3:35], '01')
check('given traceparent: the first request carries it as given', seen[:1] == [('forward', TP)],
      seen[:1])

out, seen = chain(None)
first = seen[0][1] if seen else ''
check('a new trace: valid, not all zeros, not sampled',
      re.fullmatch(r'00-[0-9a-f]{32}-[0-9a-f]{16}-00', first) is not None
      and first[3:35].strip('0') != '', first)
check_hops('a new trace', out, seen, first[3:35], '00')

# An invalid traceparent is ignored: answered, and the nested calls (C ->
# Ruby -> Node -> C add) start one trace of their own.
r = redis.Redis.from_url(os.environ['REDIS_URL'])
watch = Watch()
key = f'rrpc:reply:{secrets.token_hex(16)}'
bad = TP.upper()
r.rpush(C, json.dumps({'jsonrpc': '2.0', 'method': 'forward', 'id': key,
                       'params': [RB, 'forward', [JS, 'forward', [C, 'add', [1, 1]]]],
                       'traceparent': bad},
                      separators=(',', ':')))
reply = r.blpop(key, timeout=20)
seen = watch.finish()
check('invalid traceparent: still answered',
      reply is not None and json.loads(reply[1]).get('result') == 2, reply)
nested = [tp for m, tp in seen if tp != bad]
check('invalid traceparent: the nested calls start one new trace',
      len(nested) == 3 and len({tp[3:35] for tp in nested}) == 1
      and len({tp[36:52] for tp in nested}) == 3
      and nested[0][3:35] != bad[3:35].lower(), seen)

# The caller's own traceparent is checked: the CLI refuses an invalid one.
out = subprocess.run([CLI, 'call', '--traceparent', TP.upper(), C, 'add', '[1, 1]'],
                     capture_output=True, text=True)
check('rrpc call --traceparent refuses an invalid value',
      out.returncode != 0 and 'traceparent' in out.stderr, out.stderr)

sys.exit(1 if failures else 0)
