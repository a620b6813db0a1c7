"""test_amqp_registry.py -- the AMQP server answers registry queries (PROTOCOL.md 12,
"Operations over AMQP") against a real RabbitMQ ($RRPC_TEST_AMQP_URL, as
tests/harness/with-rabbitmq.sh exports it; skipped without).  The queries are
published with pika as the spec says, as `rrpc ls`/`rrpc info` do; test_amqp.sh
runs the real `rrpc ls`/`info` against the calc server as well.
"""

import json
import os
import secrets
import time
import uuid

import pytest

import rrpc
from conftest import Running, wait_for

pika = pytest.importorskip('pika', reason='pika is not installed (Debian package python3-pika)')

URL = os.environ.get('RRPC_TEST_AMQP_URL')
pytestmark = pytest.mark.skipif(
    not URL, reason='RRPC_TEST_AMQP_URL is not set: run under tests/harness/with-rabbitmq.sh '
    '(ctest -R python_amqp)')


def ask(key, window=0.3, want=None):
    """The answers to a registry query with routing key KEY ('' = everyone),
    gathered for WINDOW seconds, or until one from service WANT came."""
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        ch = conn.channel()
        ch.exchange_declare('rrpc:registry', exchange_type='direct')  # as every server does
        got, cid = [], uuid.uuid4().hex
        ch.basic_consume('amq.rabbitmq.reply-to', auto_ack=True,
                         on_message_callback=lambda _c, _m, p, body:
                         got.append(json.loads(body)) if p.correlation_id == cid else None)
        ch.basic_publish('rrpc:registry', key, json.dumps({'query': 'workers'}),
                         pika.BasicProperties(reply_to='amq.rabbitmq.reply-to',
                                              correlation_id=cid, content_type='application/json',
                                              expiration='500'))
        end = time.monotonic() + window
        while time.monotonic() < end and not (want and mine(want, got)):
            conn.process_data_events(time_limit=0.02)
        return got
    finally:
        conn.close()


@pytest.fixture
def name(request):
    return f'pyreg-{request.node.name[:30]}-{secrets.token_hex(3)}'


@pytest.fixture
def serve():
    running = []

    def start(service, obj, **options):
        running.append(Running(rrpc.Server(service, obj, url=URL, **options)))
        return running[-1]
    yield start
    for item in running:
        if item.thread.is_alive():
            item.stop()


def mine(name, answers):
    return [a for a in answers if a.get('service') == name]


def test_answers_with_its_record_counters_and_stats(serve, name):
    def add(a, b):
        return a + b

    def fail():
        raise rrpc.RpcError(7, 'no')
    run = serve(name, {'add': add, 'fail': fail})
    server = run.server
    assert wait_for(lambda: mine(name, ask(name, want=name)), 10), 'never answered'
    with rrpc.Client(URL, timeout=5) as c:
        assert c.call(name, 'add', 1, 2) == 3
        with pytest.raises(rrpc.RemoteError):
            c.call(name, 'fail')
        c.notify(name, 'add', 1, 1)
    assert wait_for(lambda: server.counts.get('requests') == 3, 5)
    [rec] = mine(name, ask(name, 1, want=name))
    assert rec['id'] == server.worker_id
    assert rec['pid'] == os.getpid() and rec['version'].startswith('python-')
    assert (rec['threads'], rec['shards'], rec['max_queue']) == (1, 1, 0)
    assert (rec['heartbeat_s'], rec['ttl_s']) == (1.0, 5.0)
    assert rec['started'] <= rec['time'] <= time.time() + 1
    assert {m['name'] for m in rec['methods']} == {'add', 'fail', 'rpc.ping', 'rpc.discover'}
    assert rec['counters'] == {'requests': 3, 'notifications': 1, 'errors': 1, 'expired': 0,
                               'dead_letters': 0, 'redelivered': 0, 'given_back': 0, 'lost': 0}
    assert rec['mstats']['calls:add'] == 2 and rec['mstats']['errors:fail'] == 1
    assert sum(v for k, v in rec['mstats'].items() if k.startswith('h')) == 3
    # Asked everyone: there too; stopped: gone at once (its queue went with its connection).
    assert mine(name, ask('', 1, want=name))
    run.stop()
    assert not mine(name, ask('')) and not mine(name, ask(name))


def test_heartbeat_off_is_unseen(serve, name):
    run = serve(name, {'echo': lambda *a: a}, heartbeat=False)
    with rrpc.Client(URL, timeout=5) as c:
        assert wait_for(lambda: _served(c, name), 10)
    assert not mine(name, ask(name)) and not mine(name, ask(''))
    assert run.server._registry is None  # pylint: disable=protected-access


def _served(client, name):
    try:
        return client.call(name, 'echo', 1) == [1]
    except rrpc.Unavailable:
        return False

