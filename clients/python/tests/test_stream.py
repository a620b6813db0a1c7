"""test_stream.py -- progress and cancellation (PROTOCOL.md 7) in the Python
peer, against a real Redis: progress in order then the answer, none for a
caller that did not ask, progress after the answer refused, a handler that
sees its caller's cancel, nested calls carrying the cancel key."""

import json
import threading
import time

import pytest

import rrpc
from conftest import wait_for

kept = {}


class Svc:
    def count(self, n, ms):
        for i in range(1, n + 1):
            time.sleep(ms / 1000)
            if rrpc.cancelled():
                kept['stopped'] = kept.get('stopped', 0) + 1
                raise rrpc.RpcError(-32002, 'Cancelled')
            rrpc.progress(i)
        kept['progress'] = rrpc.progress
        return n

    def late(self):
        """Progress from a thread that outlives the handler: refused."""
        def after():
            time.sleep(0.1)
            try:
                rrpc.progress(1)
            except RuntimeError as exc:
                kept['late'] = str(exc)
        threading.Thread(target=after).start()
        return True


def test_progress_in_order_then_answer(serve, service, redis_url):
    serve(service, Svc())
    client = rrpc.Client(redis_url)
    seen = []
    assert client.call(service, 'count', 4, 5, progress=seen.append) == 4
    assert seen == [1, 2, 3, 4]
    assert client.call(service, 'count', 2, 1) == 2  # not asked: the answer alone


def test_seed_caller_sees_none(serve, service, r):
    serve(service, Svc())
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'count', 'params': [3, 1],
                                 'id': 'seed-py'}))
    _key, text = r.blpop('seed-py', timeout=5)
    assert json.loads(text)['result'] == 3
    assert r.llen('seed-py') == 0


def test_progress_after_answer_refused(serve, service, redis_url):
    serve(service, Svc())
    client = rrpc.Client(redis_url)
    assert client.call(service, 'late') is True
    assert wait_for(lambda: 'late' in kept)
    with pytest.raises(RuntimeError):
        rrpc.progress(1)  # outside any handler


def test_handler_sees_cancel(serve, service, redis_url, r):
    serve(service, Svc())
    kept.pop('stopped', None)
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'count', 'params': [500, 10],
                                 'id': 'c-py', 'cancel_key': 'c-py:cancel'}))
    time.sleep(0.3)
    r.set('c-py:cancel', 1, px=60000)
    _key, text = r.blpop('c-py', timeout=5)
    assert json.loads(text)['error']['code'] == -32002
    assert kept.get('stopped') == 1


def test_cancelled_before_it_runs(serve, service, r):
    r.set('q-py:cancel', 1, px=60000)
    r.rpush(service, json.dumps({'jsonrpc': '2.0', 'method': 'count', 'params': [1, 0],
                                 'id': 'q-py', 'cancel_key': 'q-py:cancel'}))
    serve(service, Svc())
    _key, text = r.blpop('q-py', timeout=5)
    assert json.loads(text)['error']['code'] == -32002
