"""test_priority.py -- priorities, tenants, the caller's cancel and the
refusal to serve a service with limits (PROTOCOL.md 7 and 9), in the
Python peer, against a real Redis."""

import json
import threading
import time

import pytest

import rrpc
from conftest import wait_for


class Recorder:
    def __init__(self):
        self.seen = []

    def rec(self, name):
        self.seen.append(name)

    def count(self, n, ms):
        for i in range(1, n + 1):
            end = time.monotonic() + ms / 1000
            while time.monotonic() < end:
                if rrpc.cancelled():
                    self.seen.append('stopped')
                    raise rrpc.RpcError(-32002, 'Cancelled')
                time.sleep(0.005)
            rrpc.progress(i)
        return n


@pytest.mark.parametrize('bad', ['urgent', 'HIGH', '', 1, True, ['high']])
def test_bad_priority_refused_before_sending(service, redis_url, r, bad):
    client = rrpc.Client(redis_url, fail_fast=False)
    with pytest.raises(ValueError, match='priority'):
        client.call(service, 'rec', 'x', priority=bad, timeout=0.1)
    with pytest.raises(ValueError, match='priority'):
        client.notify(service, 'rec', 'x', priority=bad)
    assert r.llen(service) == 0 and r.llen('{%s}:high' % service) == 0


@pytest.mark.parametrize('bad', ['', 7, None.__class__])
def test_bad_tenant_refused_before_sending(service, redis_url, r, bad):
    client = rrpc.Client(redis_url, fail_fast=False)
    with pytest.raises(ValueError, match='tenant'):
        client.notify(service, 'rec', 'x', tenant=bad)
    assert r.llen(service) == 0


def test_members_sent(service, redis_url, r):
    client = rrpc.Client(redis_url)
    client.notify(service, 'rec', 'a', tenant='acme', priority='normal')
    client.notify(service, 'rec', 'b', priority='low')
    first = json.loads(r.lpop(service))
    assert first['tenant'] == 'acme' and 'priority' not in first  # absent means normal
    # L was not empty when the low one came: it waits on {L}:low.
    assert json.loads(r.lpop('{%s}:low' % service))['priority'] == 'low'


def test_no_backlog_goes_straight_onto_the_list(service, redis_url, r):
    rrpc.Client(redis_url).notify(service, 'rec', 'h', priority='high')
    assert r.llen(service) == 1 and r.llen('{%s}:high' % service) == 0


def test_backlog_served_in_priority_order(serve, service, redis_url):
    client = rrpc.Client(redis_url)
    for name, level in [('n0', None), ('l1', 'low'), ('n1', 'normal'), ('h1', 'high'),
                        ('l2', 'low'), ('h2', 'high')]:
        client.notify(service, 'rec', name, priority=level)
    rec = Recorder()
    serve(service, rec)
    assert wait_for(lambda: len(rec.seen) == 6)
    assert rec.seen == ['h1', 'h2', 'n0', 'n1', 'l1', 'l2']


@pytest.mark.parametrize('bad', ['urgent', 3, None, {'level': 'high'}])
def test_worker_answers_a_bad_priority_32600(serve, service, r, bad):
    serve(service, Recorder())
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'rec', 'params': ['x'],
                                 'id': 'prio-py', 'priority': bad}))
    _key, text = r.blpop('prio-py', timeout=5)
    resp = json.loads(text)
    assert resp['id'] == 'prio-py'
    assert resp['error']['code'] == -32600 and resp['error']['data'] == {'member': 'priority'}


def test_refuses_to_serve_with_limits(service, redis_url, r):
    r.hset('{%s}:config' % service, 'limits', '{"add": {"rate": 5}}')
    server = rrpc.Server(service, Recorder(), url=redis_url)
    with pytest.raises(rrpc.Unsupported, match=r'\{%s\}:config field limits' % service):
        server.serve_forever()
    assert r.zcard('{%s}:workers' % service) == 0  # never registered


def test_cancel_a_running_call(serve, service, redis_url, r):
    rec = Recorder()
    serve(service, rec)
    client = rrpc.Client(redis_url)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    with pytest.raises(rrpc.Cancelled):
        client.call(service, 'count', 500, 10, cancel=stop, timeout=10)
    assert time.monotonic() - began < 2
    assert wait_for(lambda: 'stopped' in rec.seen)


def test_cancel_a_queued_call_takes_it_back(service, redis_url, r):
    client = rrpc.Client(redis_url, fail_fast=False)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(rrpc.Cancelled):
        client.call(service, 'rec', 'x', cancel=stop, timeout=10)
    assert r.llen(service) == 0
    keys = [k for k in r.scan_iter('rrpc:reply:*:cancel')]
    assert keys and r.pttl(keys[-1]) > 60000
