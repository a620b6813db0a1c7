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

# Requests as rrpc's clients write them (compact, members in their order),
# and the corners of the worker's envelope scanner (core/envelope.c):
# escapes in names and values, members given twice, numbers it leaves to
# jansson, non-ASCII, NUL, nesting, whitespace, garbage after the object.
CLIENT = (b'{"jsonrpc":"2.0","method":"add","params":[1,2],"traceparent":'
          b'"00-55c06cc0657dc325d109afcd575ca849-6b1cb9300d53a98f-00","sent":1796155976962,'
          b'"deadline":1796155986962,"reply_to":"rrpc:reply:af0453615412dc1857fdcdec076991b5",'
          b'"id":4194304}')
envelope_texts = [
    CLIENT,
    b'{"jsonrpc":"2.0","method":"echo","params":{"a":[1,{"b":"\\u00e9\\""}]},"id":"rrpc:reply:x",'
    b'"progress":true,"cancel_key":"rrpc:cancel:x","tracestate":"k=v","sent":1}',
    b' \t\r\n{ "jsonrpc" : "2.0" , "method" : "add" , "params" : [ 1 , 2 ] , "id" : 7 } \n',
    b'{"jsonrpc":"2.0","method":"a\\u0064d","params":[1,2],"id":"k"}',
    b'{"jsonrpc":"2.0","met\\u0068od":"add","params":[1,2],"id":"k"}',
    b'{"jsonrpc":"2.0","method":"add","method":"echo","params":[1,2],"id":"k"}',
    b'{"jsonrpc":"2.0","method":"add","x":1,"x":[2],"params":[1,2],"id":"k"}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":123456789012345678901234567890}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":999999999999999999}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":-9223372036854775808}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":9223372036854775808}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":-0,"deadline":1e400}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1.0e2,"deadline":01}',
    b'{"jsonrpc":"2.0","method":"\xc3\xa4dd","params":[1,2],"id":"\xc3\xa4"}',
    b'{"jsonrpc":"2.0","method":"add\xff","params":[1,2],"id":"k"}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"a\\u0000b"}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"a\x00b"}',
    b'{"jsonrpc":"2.0","method":"add","params":' + b'[' * 600 + b']' * 600 + b',"id":1}',
    # one level past jansson's depth limit (2048) as a whole, not as a slice
    b'{"jsonrpc":"2.0","method":"add","params":' + b'[' * 2048 + b']' * 2048 + b',"id":1}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1}x',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1,}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":truex}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":null,"progress":false}',
    b'{"jsonrpc":"2.0","method":"add","params":"[1,2]","id":{"a":"}"}}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"extra":{"nested":["]",{}]},"id":1}',
    b'{"jsonrpc":"2.0","method":"echo","params":{"b":1,"a":"x","b":[2],"c":null},"id":1}',
    b'{"jsonrpc":"2.0","method":"echo","params":{"b":1,"a":"x","b":true , "":-5},"id":1}',
    b'{"jsonrpc":"2.0","method":"echo","params":[ "a\\"b", 1, [2] ],"id":1}',
    b'{"jsonrpc":"2.0","method":"echo","params":[ ],"id":1}',
    b'{"jsonrpc":"2.0","result":3,"id":4194304}',
    b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found","data":"x"},"id":"k"}',
    b'{"jsonrpc":"2.0","method":"rpc.progress","params":{"id":7,"progress":{"done":1}}}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"priority":"high","tenant":"t-1","id":1}',
    b'{"jsonrpc":"2.0","method":"add","params":[1,2],"priority":"urgent","tenant":"","id":1}',
    b'{}', b'{ }', b'[]', b'"{}"', b'{"jsonrpc":"2.0"', b'{"\x7f":"\x7f"}',
]

if not worker:
    for t in texts + envelope_texts:
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
