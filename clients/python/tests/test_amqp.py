"""test_amqp.py -- the AMQP transport (PROTOCOL.md section 12) against a real RabbitMQ.

The broker is $RRPC_TEST_AMQP_URL, as tests/harness/with-rabbitmq.sh
exports it (ctest python_amqp always gives one); without it every test here
is skipped, saying so.  Raw messages are published and read with pika
directly, as a caller or worker written only from RabbitMQ's RPC tutorial
would.
"""

import os
import secrets
import subprocess
import threading
import time

import pytest

import rrpc
from conftest import Running, wait_for

pika = pytest.importorskip('pika', reason='pika is not installed (Debian package python3-pika)')

URL = os.environ.get('RRPC_TEST_AMQP_URL')
pytestmark = pytest.mark.skipif(
    not URL, reason='RRPC_TEST_AMQP_URL is not set: run under tests/harness/with-rabbitmq.sh '
    '(ctest -R python_amqp)')


class Calc:
    def __init__(self):
        self.seen = []

    def add(self, a, b):
        self.seen.append(('add', a, b))
        return a + b

    def divide(self, a, b):
        if b == 0:
            raise rrpc.RpcError(1, 'division by zero')
        return a / b

    def sleep(self, ms):
        time.sleep(ms / 1000)
        return ms


@pytest.fixture
def name(request):
    return f'pyamqp-{request.node.name[:30]}-{secrets.token_hex(3)}'


@pytest.fixture
def serve():
    running = []

    def start(service, obj=None, **options):
        options.setdefault('url', URL)
        server = rrpc.Server(service, obj, **options)
        running.append(Running(server))
        return running[-1]
    yield start
    for item in running:
        item.stop()


def queue_exists(queue):
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        conn.channel().queue_declare(queue=queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


def started(service):
    assert wait_for(lambda: queue_exists(service), 10), f'{service}: no queue'


@pytest.fixture
def client():
    with rrpc.Client(URL, timeout=5) as c:
        yield c


class Tutorial:
    """A caller written from RabbitMQ's tutorial: an exclusive callback
    queue, a correlation_id; publishes raw bodies, with or without reply_to."""

    def __init__(self):
        self.conn = pika.BlockingConnection(pika.URLParameters(URL))
        self.ch = self.conn.channel()
        self.callback = self.ch.queue_declare(queue='', exclusive=True).method.queue

    def send(self, queue, body, reply=True, corr='c1'):
        props = pika.BasicProperties(reply_to=self.callback if reply else None,
                                     correlation_id=corr)
        self.ch.basic_publish('', queue, body, props)

    def answer(self, wait=5.0):
        end = time.monotonic() + wait
        while time.monotonic() < end:
            method, props, body = self.ch.basic_get(self.callback, auto_ack=True)
            if method is not None:
                return props, body
            self.conn.process_data_events(0.05)
        return None

    def close(self):
        self.conn.close()


@pytest.fixture
def tutorial():
    t = Tutorial()
    yield t
    t.close()


def test_url_scheme_picks_the_transport(monkeypatch):
    assert type(rrpc.Client(URL)).__name__ == 'AmqpClient'
    assert isinstance(rrpc.Client(URL), rrpc.Client)
    assert type(rrpc.Server('x', {}, url=URL)).__name__ == 'AmqpServer'
    assert type(rrpc.Client('redis://127.0.0.1:1')).__name__ == 'Client'
    # $RRPC_URL comes before $REDIS_URL, as in C.
    monkeypatch.setenv('RRPC_URL', URL)
    monkeypatch.setenv('REDIS_URL', 'redis://127.0.0.1:1')
    assert type(rrpc.Client()).__name__ == 'AmqpClient'
    assert type(rrpc.Server('x', {})).__name__ == 'AmqpServer'


def test_calls_results_and_errors(serve, client, name):
    calc = Calc()
    serve(name, calc)
    started(name)
    proxy = client.proxy(name)
    assert proxy.add(1, 2) == 3
    assert proxy.add(a=20, b=22) == 42
    with pytest.raises(rrpc.RemoteError) as err:
        proxy.divide(1, 0)
    assert (err.value.code, err.value.message) == (1, 'division by zero')
    with pytest.raises(rrpc.RemoteError) as err:
        proxy.nosuch()
    assert err.value.code == -32601
    ping = client.call(name, 'rpc.ping')
    assert ping['service'] == name
    assert client.call(name, 'rpc.discover')['info']['title'] == name


def test_env_rrpc_url_over_redis_url(serve, name, monkeypatch):
    serve(name, Calc())
    started(name)
    monkeypatch.setenv('RRPC_URL', URL)
    monkeypatch.setenv('REDIS_URL', 'redis://127.0.0.1:1')
    with rrpc.Client(timeout=5) as c:
        assert c.call(name, 'add', 6, 36) == 42


def test_no_queue_fails_at_once(client, name):
    began = time.monotonic()
    with pytest.raises(rrpc.Unavailable, match='has no queue'):
        client.call(name, 'add', 1, 2, timeout=10)
    assert time.monotonic() - began < 2
    assert not queue_exists(name), 'a caller must never declare the queue'


def test_timeout_and_expiration(client, name, tutorial):
    # A queue nobody serves: the call times out, and the broker drops the
    # request once its expiration (the timeout) passes.
    tutorial.ch.queue_declare(queue=name)
    began = time.monotonic()
    with pytest.raises(rrpc.Timeout):
        client.call(name, 'add', 1, 2, timeout=0.3)
    assert 0.3 <= time.monotonic() - began < 2
    time.sleep(0.2)
    assert tutorial.ch.basic_get(name, auto_ack=True)[0] is None, 'expired request still queued'
    tutorial.ch.queue_delete(name)


def test_request_properties(client, name, tutorial):
    # What a tutorial-style worker sees of an rrpc call.
    tutorial.ch.queue_declare(queue=name)
    got = {}

    def call():
        try:
            got['result'] = client.call(name, 'add', 1, 2, timeout=3)
        except rrpc.Error as exc:
            got['error'] = exc
    t = threading.Thread(target=call)
    t.start()
    method = None
    for _ in range(100):
        method, props, body = tutorial.ch.basic_get(name, auto_ack=True)
        if method is not None:
            break
        time.sleep(0.02)
    assert method is not None
    # The broker rewrites amq.rabbitmq.reply-to into the caller's own address.
    assert props.reply_to.startswith('amq.rabbitmq.reply-to.')
    assert props.content_type == 'application/json'
    assert props.expiration == '3000'
    assert props.correlation_id.startswith('rrpc:reply:')
    req = rrpc.protocol.loads(body.decode())
    assert req['id'] == props.correlation_id and req['method'] == 'add'
    tutorial.ch.basic_publish('', props.reply_to, b'{"jsonrpc":"2.0","result":3,"id":"%s"}'
                              % props.correlation_id.encode(),
                              pika.BasicProperties(correlation_id=props.correlation_id))
    t.join(5)
    assert got == {'result': 3}
    tutorial.ch.queue_delete(name)


def test_refused_over_amqp(client, name):
    with pytest.raises(rrpc.Unsupported, match='priorities are not supported over AMQP yet'):
        client.call(name, 'add', 1, 2, priority='high')
    with pytest.raises(rrpc.Unsupported, match='progress is not supported over AMQP yet'):
        client.call(name, 'add', 1, 2, progress=print)
    # amqps:// works (tests/amqp/test_amqps.sh); a TLS setting it cannot
    # use is refused before any wait, and TLS settings need amqps://.
    with pytest.raises(rrpc.AmqpError, match='verify= takes verify_peer or verify_none'):
        rrpc.Client(URL.replace('amqp:', 'amqps:') + '?verify=maybe').call(name, 'add', 1, 2)
    with pytest.raises(rrpc.AmqpError, match='cannot use cacertfile=/nonexistent.pem'):
        rrpc.Server(name, Calc(), url=URL.replace('amqp:', 'amqps:') +
                    '?cacertfile=/nonexistent.pem').serve_forever()
    with pytest.raises(rrpc.AmqpError, match='are for amqps://'):
        rrpc.Client(URL + '?cacertfile=/ca.pem').call(name, 'add', 1, 2)


def test_cancel_stops_the_wait(serve, client, name):
    serve(name, Calc())
    started(name)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    began = time.monotonic()
    with pytest.raises(rrpc.Cancelled):
        client.call(name, 'sleep', 800, cancel=cancel)
    assert time.monotonic() - began < 0.7
    # A late answer to the cancelled call is dropped, not taken for the next one's.
    time.sleep(0.8)
    assert client.call(name, 'add', 2, 2) == 4


def test_raw_bodies_answered_at_reply_to(serve, name, tutorial):
    serve(name, Calc())
    started(name)
    tutorial.send(name, b'this is not JSON', corr='p')
    props, body = tutorial.answer()
    assert props.correlation_id == 'p' and props.content_type == 'application/json'
    resp = rrpc.protocol.loads(body.decode())
    assert resp['error']['code'] == -32700 and resp['id'] is None
    tutorial.send(name, b'{"method": "add"}', corr='i')
    props, body = tutorial.answer()
    resp = rrpc.protocol.loads(body.decode())
    assert props.correlation_id == 'i'
    assert resp['error']['code'] == -32600 and resp['id'] is None
    tutorial.send(name, b'{"jsonrpc":"2.0","method":"add","params":[2,3],"id":7}', corr='t')
    props, body = tutorial.answer()
    assert (props.correlation_id, body) == ('t', b'{"jsonrpc":"2.0","result":5,"id":7}')
    batch = b'[{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1},' \
            b'{"jsonrpc":"2.0","method":"add","params":[1,2]}]'
    tutorial.send(name, batch, corr='b')
    props, body = tutorial.answer()
    assert body == b'[{"jsonrpc":"2.0","result":2,"id":1}]'
    tutorial.send(name, b'[]', corr='e')
    props, body = tutorial.answer()
    resp = rrpc.protocol.loads(body.decode())
    assert props.correlation_id == 'e'
    assert resp['error']['code'] == -32600 and resp['id'] is None


def test_no_reply_to_is_a_notification(serve, client, name, tutorial):
    calc = Calc()
    serve(name, calc)
    started(name)
    # With an id in its body, but no reply_to: it runs, nothing is sent.
    tutorial.send(name, b'{"jsonrpc":"2.0","method":"add","params":[4,5],"id":9}', reply=False)
    client.notify(name, 'add', 6, 7)
    assert wait_for(lambda: ('add', 4, 5) in calc.seen and ('add', 6, 7) in calc.seen)
    assert tutorial.answer(0.5) is None


def test_redelivered_message_is_dropped(serve, name, tutorial):
    # A message a consumer took and gave back is marked redelivered: it may
    # have run, so at most once it is dropped, never run.
    tutorial.ch.queue_declare(queue=name)
    tutorial.send(name, b'{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1}', corr='r')
    method = None
    for _ in range(100):
        method, _props, _body = tutorial.ch.basic_get(name, auto_ack=False)
        if method is not None:
            break
        time.sleep(0.02)
    tutorial.ch.basic_reject(method.delivery_tag, requeue=True)
    calc = Calc()
    serve(name, calc)
    tutorial.send(name, b'{"jsonrpc":"2.0","method":"add","params":[2,2],"id":2}', corr='n')
    props, body = tutorial.answer()
    assert props.correlation_id == 'n', 'the redelivered message was answered'
    assert tutorial.answer(0.5) is None
    assert calc.seen == [('add', 2, 2)]
    # Kept as the C server keeps it: a dead letter with its reason.
    letter = dead_letter(tutorial, name)
    assert letter[0].headers['x-rrpc-reason'] == 'redelivered: at most once, it may have run already'
    assert letter[0].correlation_id == 'r' and b'[1,1]' in letter[1]
    tutorial.ch.queue_delete(name)


def dead_letter(tutorial, name, wait=5.0):
    """The first message on NAME:dead, (props, body), waiting for it."""
    got = wait_for(lambda: tutorial.ch.basic_get(name + ':dead', auto_ack=True), wait)
    assert got and got[0] is not None, f'nothing on {name}:dead'
    return got[1], got[2]


def take_back(tutorial, name, n):
    """Takes N messages and gives them back, as a worker whose link broke:
    the broker marks them redelivered."""
    tags = []
    while len(tags) < n:
        method, _props, _body = tutorial.ch.basic_get(name, auto_ack=False)
        if method is not None:
            tags.append(method.delivery_tag)
    for tag in tags:
        tutorial.ch.basic_reject(tag, requeue=True)


def test_reliable_counts_redeliveries_then_dead_letters(serve, name, tutorial):
    # Declared as calc-server --reliable declares it: the worker agrees.
    tutorial.ch.queue_declare(queue=name, durable=True, arguments={
        'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': name + ':dead'})
    body = b'{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1}'
    tutorial.send(name, body, corr='once')
    tutorial.ch.basic_publish('', name, body, pika.BasicProperties(
        reply_to=tutorial.callback, correlation_id='last',
        headers={'x-rrpc-deliveries': pika.compat.long(2)}))
    take_back(tutorial, name, 2)
    calc = Calc()
    run = serve(name, calc, reliable=True)
    props, answer = tutorial.answer()
    assert props.correlation_id == 'once' and b'"result":2' in answer.replace(b' ', b'')
    assert tutorial.answer(0.3) is None
    props, _ = dead_letter(tutorial, name)
    assert props.correlation_id == 'last' and props.delivery_mode == 2
    assert props.headers['x-rrpc-reason'] == 'taken by 3 workers that died (max_deliveries 3)'
    assert props.headers['x-rrpc-service'] == name
    assert abs(float(props.headers['x-rrpc-time']) - time.time()) < 60
    assert calc.seen == [('add', 1, 1)]
    counts = run.server.counts
    assert (counts['redelivered'], counts['dead_letters']) == (2, 1)
    # A plain declaration of the reliable queue is refused, saying why.
    with pytest.raises(rrpc.AmqpError, match='exists with other settings'):
        rrpc.Server(name, calc, url=URL).serve_forever()
    tutorial.ch.queue_delete(name)


def test_max_queue_declares_the_c_servers_arguments(serve, name, tutorial):
    serve(name, Calc(), max_queue=5)
    started(name)
    # The C server's declaration of the same options is accepted by the broker.
    tutorial.ch.queue_declare(queue=name, arguments={
        'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': name + ':dead',
        'x-max-length': pika.compat.long(5), 'x-overflow': 'reject-publish'})
    tutorial.send(name, b'[]', corr='e')
    props, answer = tutorial.answer()
    assert b'-32600' in answer
    props, body = dead_letter(tutorial, name)
    assert props.headers['x-rrpc-reason'] == 'no reply key' and body == b'[]'
    tutorial.ch.queue_delete(name)


def test_refused_login_is_masked():
    bad = URL.replace('guest:guest@', 'guest:s3cr3t@')
    with pytest.raises(rrpc.AmqpError) as err:
        rrpc.Client(bad).call('calc', 'add', 1, 2)
    assert err.value.refused and 's3cr3t' not in str(err.value) and '***' in str(err.value)
    began = time.monotonic()
    with pytest.raises(rrpc.AmqpError) as err:
        rrpc.Server('calc', Calc(), url=bad).serve_forever()  # at once: waiting cannot heal it
    assert time.monotonic() - began < 5 and 's3cr3t' not in str(err.value)


def test_links_closed_by_the_broker_heal(serve, client, name):
    ctl = os.environ.get('RRPC_TEST_AMQP_CTL')
    if not ctl:
        pytest.skip('RRPC_TEST_AMQP_CTL is not set (with-rabbitmq.sh exports it)')
    running = serve(name, Calc())
    started(name)
    assert client.call(name, 'add', 1, 2) == 3
    subprocess.run([*ctl.split(), '-q', 'close_all_connections', 'test: links closed'],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    # The idle client mends its link before its next call; the worker connects again.

    def answered():
        try:
            return client.call(name, 'add', 2, 3, timeout=1) == 5
        except (rrpc.Timeout, rrpc.Unavailable, rrpc.AmqpError):
            return False
    assert wait_for(answered, 15, 0.2)
    assert running.error is None
    # Its registry link broke too (its exclusive queue went with it): it joins again.
    from test_amqp_registry import ask, mine  # noqa: PLC0415
    assert wait_for(lambda: mine(name, ask(name, want=name)), 15), 'not back in the registry'
