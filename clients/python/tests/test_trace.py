"""test_trace.py -- W3C Trace Context (PROTOCOL.md 7) in the Python peer:
the traceparent rules, what a handler sees, a call from inside a handler
continuing the trace, calls starting one, dead letters keeping it; and
the sent member of requests and the expired counter (PROTOCOL.md 9)."""

import json
import logging
import secrets
import threading

import pytest

import rrpc
from rrpc import trace
from rrpc.examples.calc_server import Calc
from conftest import wait_for

GOOD = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'


class Tracer:
    def __init__(self, url):
        self.url = url

    def seen(self):
        return [rrpc.current_traceparent(), rrpc.current_tracestate()]

    def nested(self, service):
        """What a call made from here sends, as the service it calls sees it."""
        return [rrpc.current_traceparent(), rrpc.Client(url=self.url).call(service, 'seen')]


def test_traceparent_rules():
    assert trace.parse(GOOD) == GOOD
    assert trace.parse('01' + GOOD[2:] + '-later') == GOOD
    assert trace.parse(GOOD[:-2] + 'ff')
    bad = ['ff' + GOOD[2:], GOOD + '-', GOOD + 'x', '01' + GOOD[2:] + 'x', GOOD.upper(),
           '00' + GOOD[2:].upper(), '00-' + '0' * 32 + '-00f067aa0ba902b7-01',
           '00-4bf92f3577b34da6a3ce929d0e0e4736-' + '0' * 16 + '-01', GOOD[:-1],
           GOOD.replace('-', '_'), '', None, 42, GOOD[:-1] + 'g', GOOD[:10] + '\u00e9' + GOOD[11:]]
    for value in bad:
        assert trace.parse(value) is None, value
    assert trace.state_ok('rojo=1,congo=2')
    assert not trace.state_ok('a=\n')
    assert not trace.state_ok('a' * 513)


def test_handler_sees_and_continues(serve, service, redis_url):
    inner, outer = service + '-in', service + '-out'
    serve(inner, Tracer(redis_url))
    serve(outer, Tracer(redis_url))
    c = rrpc.Client(url=redis_url, timeout=10)
    assert c.call(inner, 'seen', traceparent=GOOD, tracestate='rojo=1') == [GOOD, 'rojo=1']
    mine, (theirs, their_state) = c.call(outer, 'nested', inner, traceparent=GOOD,
                                         tracestate='rojo=1')
    assert mine == GOOD
    assert theirs[:36] == GOOD[:36]      # same trace id
    assert theirs[36:52] != GOOD[36:52]  # a new parent id
    assert theirs[52:] == '-01'          # the flags kept
    assert their_state == 'rojo=1'


def test_calls_start_a_trace(serve, service, redis_url):
    serve(service, Tracer(redis_url))
    c = rrpc.Client(url=redis_url, timeout=10)
    a, _ = c.call(service, 'seen')
    b, _ = c.call(service, 'seen')
    assert trace.parse(a) and a[52:] == '-00'  # not claimed sampled
    assert a[3:35] != b[3:35]
    with pytest.raises(ValueError):
        c.call(service, 'seen', traceparent=GOOD.upper())
    with pytest.raises(ValueError):
        c.call(service, 'seen', tracestate='a=\n')


def test_invalid_traceparent_is_ignored(serve, service, redis_url, r):
    serve(service, Tracer(redis_url))
    key = f'rrpc:reply:{secrets.token_hex(8)}'
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'seen', 'id': key,
                                 'traceparent': GOOD.upper(), 'tracestate': 'rojo=1'}))
    _, reply = r.blpop(key, timeout=10)
    assert json.loads(reply)['result'] == [None, None]


def test_dead_letter_keeps_trace(serve, service, redis_url, r, caplog):
    serve(service, Calc())
    with caplog.at_level(logging.WARNING):
        r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'add', 'params': [1, 2],
                                     'id': None, 'traceparent': GOOD}))
        _, text = r.blpop(service + ':dead', timeout=10)
    letter = json.loads(text)
    assert letter['reason'] == 'no reply key'
    assert letter['traceparent'] == GOOD
    assert f'dead letter (trace {GOOD[3:35]})' in caplog.text


def test_calc_forward(serve, service, redis_url):
    target, calc = service + '-t', service + '-c'
    serve(target, Tracer(redis_url))
    serve(service, Calc(url=redis_url))
    serve(calc, Calc())  # one worker: a forward to itself would wait for itself
    c = rrpc.Client(url=redis_url, timeout=10)
    seen, _ = c.call(service, 'forward', target, 'seen', [], traceparent=GOOD)
    assert seen[:36] == GOOD[:36] and seen != GOOD
    assert c.call(service, 'forward', calc, 'add', {'a': 2, 'b': 3}) == 5
    with pytest.raises(rrpc.RemoteError) as err:
        c.call(service, 'forward', calc, 'divide', [1, 0])
    assert (err.value.code, err.value.message) == (1, 'division by zero')


def _redis_ms(r):
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


def test_requests_carry_sent(redis_url, service, r):
    """sent (PROTOCOL.md 7): Redis's time when pushed, on calls (with or
    without a deadline), not on notifications."""
    c = rrpc.Client(url=redis_url, timeout=0.3, fail_fast=False)
    before = _redis_ms(r)
    key = service + '-probe'
    # A worker of the test's own: it keeps the request and answers.

    def answer():
        _, text = r.blpop(service, timeout=10)
        req = json.loads(text)
        r.rpush(key, text)
        r.rpush(req['reply_to'], json.dumps({'jsonrpc': '2.0', 'result': 1, 'id': req['id']}))
    for timeout in (5, 0):
        t = threading.Thread(target=answer)
        t.start()
        assert c.call(service, 'm', timeout=timeout) == 1
        t.join()
        req = json.loads(r.lpop(key))
        assert type(req['sent']) is int and before - 5 <= req['sent'] <= _redis_ms(r) + 5
        if timeout:
            assert req['deadline'] - req['sent'] == 5000
        else:
            assert 'deadline' not in req
    c.notify(service, 'n')
    assert 'sent' not in json.loads(r.lpop(service))


def test_expired_requests_are_counted(serve, service, redis_url, r):
    """<service>:stats field expired (PROTOCOL.md 9): requests, notifications
    and batch elements refused for their deadline, not the others."""
    serve(service, Tracer(redis_url))
    late = _redis_ms(r) - 1000
    key = f'rrpc:reply:{secrets.token_hex(8)}'
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'seen', 'id': key,
                                 'deadline': late}))
    assert json.loads(r.blpop(key, timeout=10)[1])['error']['code'] == -32000
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'seen', 'deadline': late}))
    r.rpush(service, json.dumps([
        {'jsonrpc': '2.0', 'method': 'seen', 'id': 1, 'reply_to': key, 'deadline': late},
        {'jsonrpc': '2.0', 'method': 'seen', 'id': 2, 'deadline': late},
        {'jsonrpc': '2.0', 'method': 'seen', 'id': 3, 'deadline': late + 120000}]))
    codes = [x.get('error', {}).get('code', 'ok') for x in json.loads(r.blpop(key, timeout=10)[1])]
    assert codes == [-32000, -32000, 'ok']
    assert wait_for(lambda: r.hget(service + ':stats', 'expired') == b'4')
