"""test_server.py -- rrpc.Server against a real Redis: answers, dead letters
with bounded copies, oversized batches, the batch time limit, registry."""

import hashlib
import json
import secrets
import time

import pytest

import rrpc
from conftest import wait_for


class Calc:
    def __init__(self):
        self.runs = 0

    def add(self, a, b):
        self.runs += 1
        return a + b

    def divide(self, a, b):
        if b == 0:
            raise rrpc.RpcError(1, 'division by zero')
        return a / b

    def positive(self, n):
        if n <= 0:
            raise rrpc.InvalidParams('Invalid params: n must be positive')
        return n

    def big(self, n):
        return 'y' * n

    def sleep(self, ms):
        time.sleep(ms / 1000)
        return ms

    def count(self):
        self.runs += 1


def push(r, service, message):
    r.rpush(service, message if isinstance(message, (bytes, str)) else json.dumps(message))


def pop_reply(r, key, timeout=5):
    popped = r.blpop([key], timeout=timeout)
    assert popped is not None, f'no reply on {key}'
    return json.loads(popped[1])


def dead_letters(r, service, n=1, timeout=5):
    assert wait_for(lambda: r.llen(service + ':dead') >= n, timeout), 'no dead letter'
    return [json.loads(x) for x in r.lrange(service + ':dead', 0, -1)]


def test_calls_through_the_client(serve, redis_url, service):
    serve(service, Calc())
    client = rrpc.Client(redis_url, timeout=5)
    calc = client.proxy(service)
    assert calc.add(1, 2) == 3
    assert calc.add(a=5, b=-3) == 2
    with pytest.raises(rrpc.RemoteError) as err:
        calc.divide(1, 0)
    assert (err.value.code, err.value.message) == (1, 'division by zero')
    with pytest.raises(rrpc.RemoteError) as err:
        calc.positive(-1)
    assert err.value.code == -32602
    with pytest.raises(rrpc.RemoteError) as err:
        calc.add(1)  # does not fit the signature
    assert err.value.code == -32602
    with pytest.raises(rrpc.RemoteError) as err:
        calc.nope()
    assert err.value.code == -32601
    assert client.call(service, 'rpc.ping')['service'] == service


def test_register_and_describe(serve, redis_url, service, r):
    server = rrpc.Server(service, url=redis_url)
    server.register('twice', lambda x: 2 * x, description='twice(x): 2x', params={'x': 'number'})

    @server.register('hello')
    def hello(name):
        return f'hello {name}'
    from conftest import Running
    running = Running(server)
    try:
        client = rrpc.Client(redis_url, timeout=5)
        assert client.call(service, 'twice', 21) == 42
        assert client.proxy(service).hello('you') == 'hello you'
        record = json.loads(next(iter(r.hvals('{%s}:info' % service))))
        methods = {m['name']: m for m in record['methods']}
        assert methods['twice']['description'] == 'twice(x): 2x'
        assert methods['twice']['params'] == {'x': 'number'}
        assert set(methods) == {'twice', 'hello', 'rpc.ping', 'rpc.discover'}
        assert record['version'] == 'python-' + rrpc.VERSION
        # rpc.discover: an OpenRPC document of the same (PROTOCOL.md 11).
        doc = client.call(service, 'rpc.discover')
        assert doc['openrpc'] == '1.3.2' and doc['info']['title'] == service
        described = {m['name']: m for m in doc['methods']}
        assert set(described) == {'twice', 'hello', 'rpc.ping'}  # rpc.discover is implied
        assert described['twice']['description'] == 'twice(x): 2x'
        assert described['twice']['params'] == [{'name': 'x', 'schema': {'type': 'number'}}]
        assert described['hello']['params'] == [{'name': 'name', 'schema': {},
                                                 'required': True}]
        assert all(m['result'] == {'name': 'result', 'schema': {}} for m in doc['methods'])
    finally:
        running.stop()
    # A graceful stop removes the record; the service stays registered.
    assert r.zcard('{%s}:workers' % service) == 0
    assert r.exists('{%s}:config' % service)
    with pytest.raises(rrpc.Unavailable):
        rrpc.Client(redis_url, timeout=5).call(service, 'twice', 1)


def test_oversized_message_is_a_bounded_dead_letter(serve, r, service):
    serve(service, Calc(), max_request_bytes=10000)
    key = 'rrpc:reply:' + secrets.token_hex(16)
    text = json.dumps({'jsonrpc': '2.0', 'method': 'add', 'params': ['é' * 6000],
                       'id': key}, ensure_ascii=False).encode()
    assert len(text) > 10000
    push(r, service, text)
    letter, = dead_letters(r, service)
    assert letter['reason'] == f'too large: {len(text)} bytes (limit 10000)'
    assert 'message' not in letter
    assert text.startswith(letter['message_prefix'].encode())
    assert len(letter['message_prefix'].encode()) <= 4096
    assert letter['message_bytes'] == len(text)
    assert letter['message_sha1'] == hashlib.sha1(text).hexdigest()
    assert not r.exists(key)


def test_message_at_the_limit_is_answered(serve, r, service):
    serve(service, Calc(), max_request_bytes=200)
    key = 'rrpc:reply:' + secrets.token_hex(16)
    text = json.dumps({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': key})
    text = text[:-1] + ' ' * (200 - len(text)) + '}'
    push(r, service, text)
    assert pop_reply(r, key)['result'] == 3


def test_oversized_response_is_kept_bounded(serve, r, service):
    serve(service, Calc(), max_request_bytes=5000)
    push(r, service, {'jsonrpc': '2.0', 'method': 'big', 'params': [20000], 'id': None})
    letter, = dead_letters(r, service)
    assert letter['reason'] == 'no reply key'
    assert 'response' not in letter
    assert letter['message'].startswith('{')  # the request itself is small: kept whole
    assert letter['response_prefix'].startswith('{"jsonrpc":"2.0","result":"yyy')
    assert letter['response_bytes'] > 20000
    assert len(letter['response_sha1']) == 40


def _oversized(n, first):
    return [first] + [{'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': f'e{i}',
                       'reply_to': 'rrpc:reply:B'} for i in range(n - 1)]


def test_oversized_batch_runs_nothing_and_answers_on_the_first_answered_key(serve, r, service):
    calc = Calc()
    serve(service, calc)
    first = {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'reply_to': 'rrpc:reply:A'}
    push(r, service, _oversized(1001, first))
    reply = pop_reply(r, 'rrpc:reply:B')
    assert reply['error']['code'] == -32600 and reply['id'] is None
    assert '1001' in reply['error']['message']
    assert not r.exists('rrpc:reply:A')  # a notification's reply_to does not count
    assert calc.runs == 0


def test_oversized_batch_of_notifications_is_a_dead_letter(serve, r, service):
    calc = Calc()
    serve(service, calc, batch_max=10)
    note = {'jsonrpc': '2.0', 'method': 'count', 'reply_to': 'rrpc:reply:N'}
    push(r, service, [note] * 11)
    letter, = dead_letters(r, service)
    assert letter['reason'] == 'no reply key'
    assert letter['response']['error']['code'] == -32600
    assert letter['response']['id'] is None
    assert not r.exists('rrpc:reply:N') and calc.runs == 0


def test_batch_time_limit(serve, r, service):
    calc = Calc()
    serve(service, calc, batch_time_limit=0.3)
    key = 'rrpc:reply:' + secrets.token_hex(16)

    def call(rid, method, params):
        return {'jsonrpc': '2.0', 'method': method, 'params': params, 'id': rid, 'reply_to': key}
    # a1 and s1 start within the limit; s1 ends past it, so nothing after runs.
    batch = [call('a1', 'add', [1, 2]), call('s1', 'sleep', [400]),
             {'jsonrpc': '2.0', 'method': 'count', 'reply_to': key},
             call('s2', 'sleep', [400]), {'jsonrpc': '1.0', 'method': 'add', 'id': 'bad'},
             call('a2', 'add', [1, 2])]
    started = time.monotonic()
    push(r, service, batch)
    replies = pop_reply(r, key)
    took = time.monotonic() - started
    assert [x['id'] for x in replies] == ['a1', 's1', 's2', 'bad', 'a2']
    assert replies[0]['result'] == 3 and replies[1]['result'] == 400
    for late in (replies[2], replies[4]):
        assert late['error'] == {'code': -32001, 'message': 'Batch time limit exceeded',
                                 'data': {'limit_ms': 300}}
    assert replies[3]['error']['code'] == -32600  # invalid elements still get theirs
    assert calc.runs == 1  # a1 only: neither the late notification nor a2 ran
    assert took < 2


def test_no_batch_time_limit(serve, r, service):
    serve(service, Calc(), batch_time_limit=0)
    key = 'rrpc:reply:' + secrets.token_hex(16)
    push(r, service, [{'jsonrpc': '2.0', 'method': 'sleep', 'params': [100], 'id': i,
                       'reply_to': key} for i in range(3)])
    assert [x.get('result') for x in pop_reply(r, key)] == [100, 100, 100]


def test_deadline_passed_is_not_run(serve, r, service):
    calc = Calc()
    serve(service, calc)
    key = 'rrpc:reply:' + secrets.token_hex(16)
    sec, usec = r.time()
    deadline = sec * 1000 + usec // 1000 - 1000
    push(r, service, {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': key,
                      'deadline': deadline})
    reply = pop_reply(r, key)
    assert reply['error']['code'] == -32000
    assert reply['error']['data']['deadline'] == deadline and calc.runs == 0


def test_refused_reply_keys(serve, r, service):
    serve(service, Calc(), reply_prefixes=['rrpc:reply:'])
    r.hset('apphash', 'f', 'v')
    for key, why in [(service, "one of the service's own keys"),
                     ('rrpc:services', "one of rrpc's keys"),
                     ('elsewhere', 'not under an allowed prefix')]:
        push(r, service, {'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2], 'id': 'x',
                          'reply_to': key})
    letters = dead_letters(r, service, 3)
    assert [x['reason'] for x in letters] == [
        "reply key refused: one of the service's own keys", "reply key refused: one of rrpc's keys",
        'reply key refused: not under an allowed prefix']
    assert all(x['response']['result'] == 3 for x in letters)
