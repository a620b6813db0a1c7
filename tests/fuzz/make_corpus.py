#!/usr/bin/env python3
# make_corpus.py -- writes the fuzzers' seed corpora from the conformance
# vectors (tests/vectors/*.json).
#   make_corpus.py DIR            fuzz_dispatch: one request text per file
#   make_corpus.py --worker DIR   fuzz_worker: 3 header bytes (configuration,
#                                 reply-key refusals, events; see
#                                 fuzz_worker.c) then messages split by 0xFF:
#                                 each vector alone and in batches of pops,
#                                 under several configurations, plus hostile
#                                 reply keys and slow/large/effect calls.
import glob, json, os, sys

worker = sys.argv[1] == '--worker'
out = sys.argv[2] if worker else sys.argv[1]
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))

texts = []
for path in sorted(glob.glob(os.path.join(here, '..', 'vectors', '*.json'))):
    for case in json.load(open(path, encoding='utf-8'))['cases']:
        if 'request_text' in case:
            data = case['request_text'].encode('utf-8')
        elif 'request_hex' in case:
            data = bytes.fromhex(case['request_hex'])
        elif 'request' in case:
            data = json.dumps(case['request']).encode('utf-8')
        else:
            continue
        data = data.replace(b'$REPLY', b'rrpc:reply:seed')
        if len(data) > 64 * 1024:
            continue
        texts.append(data)

n = 0
def write(data):
    global n
    with open(os.path.join(out, f'seed-{n:04d}'), 'wb') as f:
        f.write(data)
    n += 1

if not worker:
    for t in texts:
        write(t)
    print(f'{n} seeds in {out}')
    sys.exit(0)

def call(method, params, **extra):
    req = {'jsonrpc': '2.0', 'method': method, 'params': params}
    req.update(extra)
    return json.dumps(req).encode('utf-8')

# Reply keys a hostile caller may name: own keys, rrpc's keys of any
# service, registered request lists, keys outside an allow-list.
hostile = ['fuzz', 'fuzz:dead', 'fuzz:stats', 'fuzz#1', 'fuzz#0', '{fuzz}:inflight',
           '{fuzz}:done:x', '{other}:inflight:w', 'rrpc:services', 'rrpc:registry',
           'other', 'other#3', 'app', 'x#1', 'p:fuzz', 'p:rrpc:services', 'p:other',
           'a:dead', 'b:stats', 'rrpc:reply:ok', 'p:rrpc:reply:ok', 'ok:1', 'app:users',
           'rrpc:reply:', '{', '{}:', 'fuzz\x00x']
hostile_msgs = [call('echo', [i], id=i + 1, reply_to=k) for i, k in enumerate(hostile)]
hostile_msgs += [call('echo', [1], id=k) for k in hostile]
specials = [
    call('slow', [25], id='s1', reply_to='rrpc:reply:a'),
    call('slow', [25], id='s2', reply_to='rrpc:reply:b'),
    call('effect', [], id='e1', reply_to='rrpc:reply:c'),
    call('big', [70000], id='b1', reply_to='rrpc:reply:d'),
    call('big', [2000], id='b2', reply_to='fuzz:dead'),
    call('fail', [], id=7),
    call('echo', ['tick']),
    call('echo', [1], id=100.0),
    call('echo', [1], id=1e2, deadline=1),
    b'[' + b','.join([call('slow', [6], id=i, reply_to='rrpc:reply:t') for i in range(6)]) + b']',
]
SEP = b'\xff'
headers = [b'\x00\x00\x00', b'\x01\x00\x00', b'\x02\x00\x00', b'\x05\x00\x00', b'\x0c\x00\x00',
           b'\x10\x00\x00', b'\x20\x00\x00', b'\x40\x00\x00', b'\x80\x00\x00',
           b'\x00\x55\x00', b'\x00\x00\x01', b'\x00\x00\x02', b'\x00\x00\x04', b'\x00\x00\x08',
           b'\x01\x00\x10', b'\x01\x00\x20', b'\x01\x00\x40', b'\x01\x00\x80', b'\x00\x00\xc0']
for i, t in enumerate(texts):
    write(headers[i % len(headers)] + t)
for i in range(0, len(texts), 8):
    write(headers[(i // 8) % len(headers)] + SEP.join(texts[i:i + 8]))
for h in headers:
    write(h + SEP.join(hostile_msgs[:20]))
    write(h + SEP.join(hostile_msgs[20:]))
    write(h + SEP.join(specials))
print(f'{n} seeds in {out}')
