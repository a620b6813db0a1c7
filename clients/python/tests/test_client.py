"""test_client.py -- rrpc.Client against a real Redis: results, the error
classes under rrpc.Error, deadlines, fail fast and max_queue."""

import json
import threading

import pytest
import redis

import rrpc
from conftest import free_port, wait_for


def test_every_error_is_an_rrpc_error():
    for cls in (rrpc.RemoteError, rrpc.Timeout, rrpc.Unavailable, rrpc.Overloaded,
                rrpc.ProtocolError, rrpc.RedisError, rrpc.RpcError, rrpc.InvalidParams):
        assert issubclass(cls, rrpc.Error)
    assert issubclass(rrpc.Timeout, TimeoutError) and rrpc.CallTimeout is rrpc.Timeout
    assert not issubclass(rrpc.RemoteError, rrpc.RpcError)


def worker(r, service, answer):
    """A seed-style worker in a thread: pops one request, pushes answer(req)."""
    def run():
        _key, text = r.blpop([service], timeout=10)
        req = json.loads(text)
        key = req.get('reply_to') or req['id']
        r.rpush(key, answer(req))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_request_carries_a_reply_key_and_a_deadline(r, redis_url, service):
    seen = {}

    def answer(req):
        seen.update(req)
        return json.dumps({'jsonrpc': '2.0', 'result': 'ok', 'id': req['id']})
    worker(r, service, answer)
    assert rrpc.Client(redis_url, timeout=5).call(service, 'm', 1, 2) == 'ok'
    assert seen['id'] == seen['reply_to'] and seen['id'].startswith('rrpc:reply:')
    assert len(seen['id']) == len('rrpc:reply:') + 32 and seen['params'] == [1, 2]
    sec, usec = r.time()
    # The deadline is on the client's estimate of Redis's clock (an offset
    # measured over the link), so it may run a few ms ahead of TIME.
    assert 0 < seen['deadline'] - (sec * 1000 + usec // 1000) <= 5000 + 50


def test_timeout_withdraws_the_request(r, redis_url, service):
    client = rrpc.Client(redis_url)
    with pytest.raises(rrpc.Timeout):
        client.call(service, 'add', 1, 2, timeout=0.3)
    assert r.llen(service) == 0


def test_protocol_error(r, redis_url, service):
    worker(r, service, lambda req: 'not json')
    with pytest.raises(rrpc.ProtocolError):
        rrpc.Client(redis_url, timeout=5).call(service, 'm')


def test_remote_error_carries_code_message_data(r, redis_url, service):
    worker(r, service, lambda req: json.dumps(
        {'jsonrpc': '2.0', 'error': {'code': 7, 'message': 'no', 'data': [1]}, 'id': req['id']}))
    with pytest.raises(rrpc.RemoteError) as err:
        rrpc.Client(redis_url, timeout=5).proxy(service).anything()
    assert (err.value.code, err.value.message, err.value.data) == (7, 'no', [1])


def _register(r, service, live, max_queue=0):
    sec, _usec = r.time()
    score = (sec + (60 if live else -60)) * 1000
    r.zadd('{%s}:workers' % service, {'w1': score})
    r.hset('{%s}:config' % service, mapping={'max_queue': max_queue, 'ttl_ms': 5000})


def test_unavailable_when_no_worker_is_live(r, redis_url, service):
    _register(r, service, live=False)
    with pytest.raises(rrpc.Unavailable):
        rrpc.Client(redis_url, timeout=5).call(service, 'add', 1, 2)
    assert r.llen(service) == 0
    # Without fail fast the client just waits.
    with pytest.raises(rrpc.Timeout):
        rrpc.Client(redis_url, fail_fast=False).call(service, 'add', 1, 2, timeout=0.2)


def test_overloaded_at_max_queue(r, redis_url, service):
    _register(r, service, live=True, max_queue=1)
    r.rpush(service, 'queued')
    with pytest.raises(rrpc.Overloaded):
        rrpc.Client(redis_url, timeout=5).call(service, 'add', 1, 2)
    assert r.llen(service) == 1


def test_redis_error_when_redis_is_away():
    with rrpc.Client(f'redis://127.0.0.1:{free_port()}', timeout=1) as client:
        with pytest.raises(rrpc.RedisError) as err:
            client.call('calc', 'add', 1, 2)
        assert isinstance(err.value.__cause__, redis.ConnectionError)
        with pytest.raises(rrpc.RedisError):
            client.notify('calc', 'add', 1, 2)


def test_notify_sends_no_id(r, redis_url, service):
    rrpc.Client(redis_url).notify(service, 'log', 'x')
    assert wait_for(lambda: r.llen(service) == 1)
    sent = json.loads(r.lpop(service))
    assert rrpc.trace.parse(sent.pop('traceparent'))  # a trace of its own (PROTOCOL.md 7)
    assert sent == {'jsonrpc': '2.0', 'method': 'log', 'params': ['x']}


def test_proxy_refuses_private_names(redis_url):
    proxy = rrpc.Client(redis_url).proxy('calc')
    with pytest.raises(AttributeError):
        proxy._private
    assert 'calc' in repr(proxy)
