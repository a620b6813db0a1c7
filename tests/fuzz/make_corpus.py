#!/usr/bin/env python3
# make_corpus.py -- writes the fuzzer's seed corpus from the conformance
# vectors (tests/vectors/*.json), one request text per file.
import glob, json, os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
n = 0
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
        with open(os.path.join(out, f'seed-{n:04d}'), 'wb') as f:
            f.write(data)
        n += 1
print(f'{n} seeds in {out}')
