#!/usr/bin/python3
# seed_server.py -- a calc worker written the way the original "RPC using Redis"
# post did it, knowing nothing of rrpc: it replies to str(id) and ignores
# reply_to.  It proves rrpc's clients still work with such old-style peers.
import argparse, json, os, redis

p = argparse.ArgumentParser()
p.add_argument('--redis', default=os.environ.get('REDIS_URL', 'redis://127.0.0.1:6379'))
p.add_argument('--service', default='calc')
args = p.parse_args()
r = redis.Redis.from_url(args.redis)
ops = {'add': lambda a, b: a + b, 'subtract': lambda a, b: a - b,
       'multiply': lambda a, b: a * b, 'divide': lambda a, b: a / b}
while True:
    _key, text = r.blpop(args.service)
    req = json.loads(text)
    p = req['params']
    a, b = (p['a'], p['b']) if isinstance(p, dict) else p
    try:
        resp = {'jsonrpc': '2.0', 'result': ops[req['method']](a, b), 'id': req['id']}
    except ZeroDivisionError:
        resp = {'jsonrpc': '2.0', 'error': {'code': 1, 'message': 'division by zero'}, 'id': req['id']}
    r.rpush(str(req['id']), json.dumps(resp)); r.expire(str(req['id']), 60)
