"""amqp.py -- rrpc over RabbitMQ (AMQP 0-9-1, PROTOCOL.md section 12).

Chosen by the URL's scheme (amqp://user:password@host:port/vhost): Client
and Server hand such a URL to AmqpClient and AmqpServer, which speak the
wire of RabbitMQ's RPC tutorial with pika's BlockingConnection.  A service
is a queue <prefix><service> on the default exchange, declared plainly by
servers only; a call is published mandatory (no queue: "unavailable" at
once) with reply_to = direct reply-to, a fresh correlation_id (the
request's id), content_type application/json and expiration = its timeout
in ms.  Workers declare the service's queue as the C server does for the
same options (plainly; durable with rrpc's dead-letter arguments when
reliable; x-max-length with reject-publish for max_queue), so C and Python
workers can serve one queue together.  At most once they ack on receipt and
file a redelivered message as a dead letter; reliable (reliable=True) they
ack only after the answer was published and confirmed, count redeliveries
in the header x-rrpc-deliveries (max_deliveries, then a dead letter) and
answer a redelivery they already answered from memory (dedup_window).
Answers go to the message's reply_to, including -32700 and -32600 with
"id": null; what the C server files as a dead letter (too large, not JSON,
no usable id) goes to <service>:dead with the headers x-rrpc-reason,
x-rrpc-service and x-rrpc-time; a message without reply_to is a
notification.  What the C side
does not do over AMQP yet, neither do these: each is refused by name
("... is not supported over AMQP yet").  pika is imported only here, so
the Redis transport never needs it.
"""

import collections
import logging
import math
import os
import random
import secrets
import socket
import ssl
import threading
import time
import urllib.parse

from .client import Client
from .errors import AmqpError, Cancelled, Timeout, Unavailable, Unsupported
from . import protocol
from .protocol import INVALID_REQUEST, PARSE_ERROR, dumps, error, request
from .amqp_registry import AmqpRegistry
from .server import Server
from .transport import RedisClock, resolve_url

log = logging.getLogger('rrpc')

DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'
JSON = 'application/json'
DELIVERIES_HEADER = 'x-rrpc-deliveries'
PERSISTENT = 2


def masked(url):
    """URL with its password replaced by ***, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit('@', 1)
    user = netloc[0].split(':', 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f'{user}:***@{netloc[1]}'))


def _pika():
    try:
        import pika  # noqa: PLC0415 -- only the AMQP transport needs it
    except ImportError as exc:
        raise Unsupported('amqp:// URLs need pika (Debian package python3-pika, or '
                          'pip install pika)') from exc
    return pika


# amqps:// query parameters, RabbitMQ's names (SECURITY.md section 7), as the C side.
_TLS_KEYS = ('cacertfile', 'certfile', 'keyfile', 'verify')


def _tls_context(tls):
    """The SSLContext of the TLS settings TLS (a dict of _TLS_KEYS): the broker's
    certificate and host name verified against cacertfile, else the system's CAs,
    unless verify=verify_none; TLS 1.2 at least; a client certificate if named."""
    verify = tls.get('verify', 'verify_peer')
    if verify not in ('verify_peer', 'verify_none'):
        raise AmqpError('amqps://: verify= takes verify_peer or verify_none', refused=True)
    if ('certfile' in tls) != ('keyfile' in tls):
        raise AmqpError('amqps:// needs certfile= and keyfile= together (a client certificate)',
                        refused=True)
    what = f"cacertfile={tls.get('cacertfile')}"
    try:
        ctx = ssl.create_default_context(cafile=tls.get('cacertfile'))
        if 'certfile' in tls:
            what = f"certfile={tls['certfile']} and keyfile={tls['keyfile']}"
            ctx.load_cert_chain(tls['certfile'], tls['keyfile'])
    except (OSError, ssl.SSLError) as exc:
        raise AmqpError(f'amqps://: TLS: cannot use {what}: {exc}', refused=True) from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify == 'verify_none':
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _parameters(url):
    """pika's parameters for URL; for amqps://, TLS set up from the URL's
    query (cacertfile, certfile, keyfile, verify), the rest as pika reads it."""
    pika = _pika()
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    tls = {k: v[-1] for k, v in query.items() if k in _TLS_KEYS}
    if parts.scheme.lower() != 'amqps':
        if tls:
            raise AmqpError('amqp:// URLs take no TLS parameters (they are for amqps://)',
                            refused=True)
        return pika.URLParameters(url)
    rest = urllib.parse.urlencode({k: v[-1] for k, v in query.items() if k not in _TLS_KEYS})
    params = pika.URLParameters(urllib.parse.urlunsplit(parts._replace(query=rest)))
    params.ssl_options = pika.SSLOptions(_tls_context(tls), server_hostname=parts.hostname)
    return params


def _open(url):
    """A BlockingConnection to URL; AmqpError (password masked) if refused."""
    pika = _pika()
    params = _parameters(url)
    try:
        return pika.BlockingConnection(params)
    except (pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.ProbableAccessDeniedError) as exc:
        raise AmqpError(f'{masked(url)}: the broker refused the login or the vhost: '
                        f'{_text(exc)}', refused=True) from exc
    except (pika.exceptions.AMQPError, ssl.SSLError) as exc:
        # pika lets a failed TLS handshake (a certificate not verified) out raw.
        raise AmqpError(f'{masked(url)}: cannot connect: {_text(exc)}') from exc


def _text(exc):
    text = str(exc) or repr(exc)
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def _broken(exc):
    """Whether EXC is pika's word for a lost link or channel."""
    pika = _pika()
    return isinstance(exc, (pika.exceptions.AMQPError, OSError))


class AmqpClient(Client):
    """Client over AMQP (Client(url='amqp://...') makes one).  One
    connection and channel, opened at the first call and mended before a
    call when the broker closed it meanwhile; calls from several threads
    take turns (pika's BlockingConnection is not thread-safe).  fail_fast
    needs no registry here: a service without a queue fails at once
    (Unavailable)."""

    CANCEL_LOOK_S = 0.05

    def __init__(self, url=None, prefix='', timeout=30, fail_fast=True):  # noqa: D107
        # pylint: disable=super-init-not-called -- no Redis here
        self.url = resolve_url(url)
        self.prefix = prefix
        self.timeout = timeout
        self.fail_fast = fail_fast
        self.redis = None
        self._conn = self._ch = None
        self._lock = threading.Lock()
        self._waiting = None  # the correlation_id awaited
        self._answer = self._returned = None

    def close(self):
        """Closes the client's connection."""
        with self._lock:
            self._drop()

    def _drop(self):
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already gone
                pass

    def _link(self):
        """The channel, opened (or opened again after a broken link): the
        direct reply-to is consumed before anything is published on it."""
        if self._conn is not None:
            try:
                self._conn.process_data_events(0)  # notices a link the broker closed
                if self._conn.is_open and self._ch.is_open:
                    return self._ch
            except Exception as exc:  # noqa: BLE001 -- any failure: open a new link
                log.info('rrpc: amqp: mending the link: %s', _text(exc))
            self._drop()
        conn = _open(self.url)
        try:
            ch = conn.channel()
            ch.add_on_return_callback(self._on_return)
            ch.basic_consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)
        except Exception as exc:
            conn.close()
            raise AmqpError(f'{masked(self.url)}: {_text(exc)}') from exc
        self._conn, self._ch = conn, ch
        return ch

    def _on_reply(self, _ch, _method, props, body):
        if self._waiting is not None and props.correlation_id == self._waiting:
            self._answer = body
        # else: a late answer to a call that gave up: dropped

    def _on_return(self, _ch, _method, props, _body):
        if self._waiting is not None and props.correlation_id == self._waiting:
            self._returned = True

    def call(self, service, method, *args, timeout=None, traceparent=None, tracestate=None,
             progress=None, priority=None, tenant=None, cancel=None, **kwargs):
        """As Client.call, over AMQP.  Refuses (Unsupported) what AMQP
        lacks yet: a priority other than normal, progress.  cancel only
        stops the wait: the worker is not told, and a request still queued
        stays there until its expiration."""
        members = self._members(traceparent, tracestate, priority, tenant)
        if 'priority' in members:
            raise Unsupported('priorities are not supported over AMQP yet')
        if progress is not None:
            raise Unsupported('progress is not supported over AMQP yet')
        wait = self.timeout if timeout is None else timeout
        key = f'{self.prefix}rrpc:reply:{secrets.token_hex(16)}'
        text = dumps(request(method, args, kwargs, **dict(members, id=key)))
        pika = _pika()
        props = pika.BasicProperties(reply_to=DIRECT_REPLY_TO, correlation_id=key,
                                     content_type=JSON)
        if 0 < wait < 1e9:  # not taken in time: the broker drops it, never run late
            props.expiration = str(math.ceil(wait * 1000))
        with self._lock:
            ch = self._link()
            self._waiting, self._answer, self._returned = key, None, None
            try:
                ch.basic_publish('', self.prefix + service, text, props,
                                 mandatory=True)
                raw = self._wait(service, method, wait, cancel)
            except (Timeout, Cancelled, Unavailable):
                raise
            except Exception as exc:
                if not _broken(exc):
                    raise
                self._drop()
                raise AmqpError(f'{service}.{method}: amqp: {_text(exc)}') from exc
            finally:
                self._waiting = None
        return self._result(raw, key)

    def _wait(self, service, method, wait, cancel):
        end = time.monotonic() + wait if wait > 0 else None
        while True:
            if self._answer is not None:
                return self._answer
            if self._returned:
                raise Unavailable(f'{service}.{method}: service {service!r} has no queue on '
                                  'the broker (the request came back unrouted): is its server '
                                  'running?')
            if cancel is not None and cancel.is_set():
                raise Cancelled(f'{service}.{method}: cancelled (over AMQP the worker is not '
                                'told)')
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(f'{service}.{method}: no reply within {wait} s')
            step = 1.0 if left is None else left
            if cancel is not None:
                step = min(step, self.CANCEL_LOOK_S)
            self._conn.process_data_events(time_limit=step)

    def notify(self, service, method, *args, traceparent=None, tracestate=None, priority=None,
               tenant=None, **kwargs):
        """A notification: published without reply_to, not mandatory
        (nobody waits to hear it found no queue)."""
        members = self._members(traceparent, tracestate, priority, tenant)
        if 'priority' in members:
            raise Unsupported('priorities are not supported over AMQP yet')
        text = dumps(request(method, args, kwargs, **members))
        props = _pika().BasicProperties(content_type=JSON)
        with self._lock:
            ch = self._link()
            try:
                ch.basic_publish('', self.prefix + service, text, props)
            except Exception as exc:
                if not _broken(exc):
                    raise
                self._drop()
                raise AmqpError(f'{service}.{method}: amqp: {_text(exc)}') from exc


class AmqpServer(Server):
    """Server over AMQP (Server(..., url='amqp://...') makes one).  Declares
    the service's queue as the C server does for the same options (PROTOCOL.md
    12, "Queue declarations") and its dead-letter queue <service>:dead,
    consumes with prefetch 1 and answers to each message's reply_to.

    At most once (the default) a message is acked on receipt, before it runs,
    and one the broker marks redelivered is filed as a dead letter instead of
    running again.  reliable=True (over AMQP only; the Redis peer has no
    reliable mode): the queue is durable, the channel in confirm mode, and a
    message is acked only after its answer (and dead letter) was confirmed, so
    a worker killed mid-call leaves it to another worker; a redelivery already
    answered by this process (dedup_window seconds) is answered from memory,
    else it is counted in x-rrpc-deliveries and after max_deliveries becomes a
    dead letter.  max_queue > 0 bounds the queue (x-max-length, reject-publish:
    callers get "overloaded").  With heartbeat (the default) it answers the
    registry's queries while it serves (rrpc.amqp_registry), so rrpc ls/info/
    stats see it; heartbeat=False: unseen.  No deadlines (the broker's
    expiration does that job) or reply rules over AMQP: reply_prefixes is
    refused by serve_forever (Unsupported).  It waits for the broker at start
    as the Redis server waits for Redis, and connects again with backoff when
    the link breaks."""

    PREFETCH = 1
    LOOK_S = 0.25  # how often an idle worker looks whether it was told to stop
    # The dedup memory's bounds, the C server's (amqp/dedup.c).
    DEDUP_MAX = 8192
    DEDUP_ANSWER_MAX = 65536

    def __init__(self, service, obj=None, url=None, prefix='', reply_ttl=60,  # noqa: D107
                 max_request_bytes=1048576, dead_letter_max=1000, batch_max=1000,
                 heartbeat=True, heartbeat_interval=1.0, heartbeat_ttl=5.0, max_queue=0,
                 reply_prefixes=None, batch_time_limit=5.0, start_timeout=None,
                 reliable=False, max_deliveries=3, dedup_window=600):
        # pylint: disable=super-init-not-called -- the Redis parts are not wanted
        from .handlers import public_methods  # noqa: PLC0415
        from .version import VERSION  # noqa: PLC0415
        self.url = resolve_url(url)
        self.redis = None  # stream.cancelled() and progress() see no Redis: off
        self.service = service
        self.version = 'python-' + VERSION
        self.prefix = prefix
        self.queue = prefix + service
        self.dead_key = self.queue + ':dead'
        self.dead_letter_max = dead_letter_max
        self.reply_ttl = reply_ttl
        self.max_request_bytes = max_request_bytes
        self.batch_max = batch_max
        self.batch_time_limit = batch_time_limit or 0
        self.start_timeout = start_timeout or 0
        self.max_queue = max_queue or 0
        self.reply_prefixes = reply_prefixes
        self.reliable = bool(reliable)
        self.max_deliveries = max_deliveries if max_deliveries and max_deliveries > 0 else 3
        self.dedup_window = dedup_window
        self.methods = public_methods(obj)
        self._about = {}
        self.methods.setdefault('rpc.ping', self._rpc_ping)
        self.methods.setdefault('rpc.discover', self._rpc_discover)
        self._clock = RedisClock()  # never measured: deadlines are not judged
        self.worker_id = f'{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}'
        # The counters registry answers carry (the C server's, PROTOCOL.md 12).
        self.counts = {}
        self._registry = (AmqpRegistry(self, heartbeat_interval, heartbeat_ttl)
                          if heartbeat else None)
        self._stopping = False
        self._expired_unsent = 0
        self._conn = self._ch = None
        self._props = None  # the properties of the message in hand
        self._said = None  # what was answered to it
        self._dead_off = False  # a plain service whose user may not declare <service>:dead
        self._answers = collections.OrderedDict()  # reliable: correlation_id -> (until, text)

    def _refusal(self):
        if self.reply_prefixes:
            return 'reply_prefixes is not supported over AMQP yet'
        return None

    def serve_forever(self):
        """Connects (waiting for the broker), then consumes and answers
        until stop() or SIGINT/SIGTERM.  Raises Unsupported for what AMQP
        lacks yet, AmqpError if the broker refuses the login, the queue
        exists with other settings, or the broker does not answer within
        start_timeout."""
        refusal = self._refusal()
        if refusal:
            raise Unsupported(f'{self.service}: {refusal}')
        _parameters(self.url)  # a bad TLS setting refused before any wait
        restore = self._trap_signals()
        try:
            if self._connect(starting=True):
                seen = self._registry is not None and self._registry.start()
                mode = 'reliable: durable queue, at least once' if self.reliable else 'at most once'
                log.info('%s: serving queue %r over AMQP (%s%s)%s', self.service, self.queue,
                         mode, ', max_queue' if self.max_queue > 0 else '',
                         '' if seen else ', unregistered: rrpc ls/info/stats do not see it')
                self._serve()
        finally:
            if self._registry is not None:
                self._registry.stop()
            self._close()
            restore()

    def _count(self, what, n=1):
        self.counts[what] = self.counts.get(what, 0) + n

    def _close(self):
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already gone
                pass

    def _queue_arguments(self):
        """The service queue's arguments, the C server's for the same options:
        none for an at-most-once service without max_queue (the tutorial's
        plain queue), else dead-lettering to <service>:dead and the bound."""
        if not self.reliable and self.max_queue <= 0:
            return None
        args = {'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': self.dead_key}
        if self.max_queue > 0:
            # 64-bit, as the C server sends it ('l'; pika packs a small int as 'I').
            args['x-max-length'] = _long(self.max_queue)
            args['x-overflow'] = 'reject-publish'
        return args

    def _declare(self, ch, queue, durable, arguments):
        """Declares QUEUE; a queue that exists with other settings is a
        refusal (AmqpError, refused) that says what to do about it."""
        pika = _pika()
        try:
            ch.queue_declare(queue=queue, durable=durable, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            raise AmqpError(
                f'{self.service}: declaring queue {queue!r}: {_text(exc)} -- the queue exists '
                'with other settings (a plain queue of an at-most-once service or a '
                'tutorial-style worker, or one of a server with other reliable/max_queue '
                'options): stop its users and delete it (rabbitmqctl delete_queue), or serve '
                'with the same options (docs/PROTOCOL.md section 12)', refused=True) from exc

    def _link(self):
        pika = _pika()
        conn = _open(self.url)
        try:
            ch = conn.channel()
            self._declare(ch, self.queue, self.reliable, self._queue_arguments())
            if not self._dead_off:
                try:
                    self._declare(ch, self.dead_key, True,
                                  {'x-max-length': _long(self.dead_letter_max)})
                except pika.exceptions.ChannelClosedByBroker as exc:
                    # A plain service's user may lack the name (a recipe that predates it).
                    if exc.reply_code != 403 or self._queue_arguments() is not None:
                        raise
                    self._dead_off = True
                    log.warning('%s: no dead-letter queue (%s): dead letters are only logged',
                                self.service, _text(exc))
                    ch = conn.channel()
            if self.reliable:
                ch.confirm_delivery()
            ch.basic_qos(prefetch_count=self.PREFETCH)
        except Exception:
            conn.close()
            raise
        self._conn, self._ch = conn, ch

    def _connect(self, starting):
        """Opens the link, with backoff while the broker is away (at start:
        for at most start_timeout).  False if stopped meanwhile."""
        began, delay, since = time.monotonic(), 0.05, None
        while not self._stopping:
            try:
                self._link()
            except AmqpError as exc:
                if exc.refused or (starting and self.start_timeout < 0):
                    raise
                left = (began + self.start_timeout - time.monotonic()
                        if starting and self.start_timeout else 1e9)
                if left <= 0:
                    raise AmqpError(f'{self.service}: the broker did not answer within the '
                                    f'start timeout ({self.start_timeout:g} s): {exc}') from exc
                if since is None:
                    since = time.monotonic()
                    log.warning('%s: waiting for the AMQP broker: %s', self.service, exc)
                self._pause(min(delay * random.uniform(0.5, 1.5), left))
                delay = min(delay * 2, 5.0)
                continue
            if since is not None:
                log.warning('%s: the AMQP broker answered after %.1f s', self.service,
                            time.monotonic() - since)
            return True
        return False

    def _serve(self):
        while not self._stopping:
            try:
                # A short inactivity timeout, so that a stop is noticed soon.
                for method, props, body in self._ch.consume(self.queue,
                                                            inactivity_timeout=self.LOOK_S):
                    if method is not None:
                        self._receive(method, props, body)
                    if self._stopping:
                        break
                self._ch.cancel()
            except Exception as exc:  # noqa: BLE001
                if not _broken(exc):
                    raise
                if self._stopping:
                    return
                log.warning('%s: amqp: the link broke (%s); connecting again', self.service,
                            _text(exc))
                self._close()
                if not self._connect(starting=False):
                    return

    def _receive(self, method, props, body):
        if self.reliable:
            self._receive_reliable(method, props, body)
            return
        # Acked on receipt, before it runs: at most once, as over Redis.
        self._ch.basic_ack(method.delivery_tag)
        if method.redelivered:
            # It may have run on a worker whose link broke: kept, not run again.
            self._file(props, body, 'redelivered: at most once, it may have run already')
            return
        self._take(props, body)

    def _take(self, props, body):
        """Handles one message; what was answered to it (bytes, or None)."""
        self._props, self._said = props, None
        try:
            self.handle(body)
            return self._said
        finally:
            self._props = None

    def _receive_reliable(self, method, props, body):
        """Acked only once its answer and dead letter were confirmed (a
        failed publish on a broken link raises before the ack: the broker
        hands the message to another worker)."""
        cid = props.correlation_id or None
        said = self._recall(cid)
        if said is not None:  # a redelivery or a resend of a request answered here
            if said and props.reply_to:
                self._publish(props.reply_to, said, _pika().BasicProperties(
                    correlation_id=cid, content_type=JSON))
        elif method.redelivered:
            self._count_delivery(props, body)
        else:
            said = self._take(props, body)
            # Remembered even if the answer was lost with the link: a
            # redelivery here is answered, not run again.
            self._remember(cid, said or b'')
        self._ch.basic_ack(method.delivery_tag)

    def _count_delivery(self, props, body):
        """A message taken back from a worker whose link broke: published
        again with x-rrpc-deliveries + 1 (behind the queue), or, once
        counted max_deliveries times, filed as a dead letter."""
        self._count('redelivered')
        headers = dict(props.headers or {})
        n = int(headers.get(DELIVERIES_HEADER) or 0) + 1
        if n >= self.max_deliveries:
            self._file(props, body, f'taken by {n} workers that died '
                       f'(max_deliveries {self.max_deliveries})')
            return
        headers[DELIVERIES_HEADER] = _long(n)  # 64-bit, as the C server reads it
        again = _copy_props(props)
        again.headers = headers
        self._publish(self.queue, body, again)

    def _recall(self, cid):
        """The answer this process sent to CID (b'' if none was sent), or None."""
        if cid is None:
            return None
        now = time.monotonic()
        while self._answers:
            first = next(iter(self._answers.values()))
            if first[0] > now and len(self._answers) <= self.DEDUP_MAX:
                break
            self._answers.popitem(last=False)
        hit = self._answers.get(cid)
        return None if hit is None else hit[1]

    def _remember(self, cid, said):
        if cid is None or len(said) > self.DEDUP_ANSWER_MAX or not self.dedup_window:
            return
        self._answers[cid] = (time.monotonic() + self.dedup_window, said)
        self._answers.move_to_end(cid)

    def _publish(self, queue, body, props):
        """Publishes through the default exchange (confirmed when reliable:
        pika's basic_publish then waits for the broker's ack)."""
        self._ch.basic_publish('', queue, body if isinstance(body, bytes) else body.encode(),
                               props)

    def _file(self, props, body, reason):
        """Files the message as a dead letter on <service>:dead: its body and
        properties as they came (no expiration), persistent, with the headers
        x-rrpc-reason, x-rrpc-service and x-rrpc-time (PROTOCOL.md 12)."""
        log.warning('%s: dead letter: %s', self.service, reason)
        if self._dead_off:
            self._count('lost')
            log.warning('%s: dead letter not kept (no dead-letter queue): %r', self.service,
                        body[:200])
            return
        letter = _copy_props(props)
        letter.headers = {'x-rrpc-reason': reason, 'x-rrpc-service': self.service,
                          'x-rrpc-time': f'{time.time():.3f}'}
        letter.expiration = None
        letter.delivery_mode = PERSISTENT
        try:
            self._publish(self.dead_key, body, letter)
            self._count('dead_letters')
        except Exception as exc:
            self._count('lost')
            log.error('%s: dead letter lost (%s): %s', self.service, _text(exc), reason)
            if self.reliable and _broken(exc):
                raise  # not acked: the broker hands the message out again

    # -- one message: Server's dispatch, answers to reply_to -------------

    def _answer(self, req, over_time=False, key=None):
        # Counted as the C server counts (core/dispatch.c): each request
        # object, its notifications, and (in _encode) each error answered.
        resp = super()._answer(req, over_time, key)
        self._count('requests')
        if resp is None:
            self._count('notifications')
        if over_time and not protocol.invalid_reason(req):
            self._count('expired')
        return resp

    def _encode(self, resp):
        if isinstance(resp, dict) and 'error' in resp:
            self._count('errors')
        return super()._encode(resp)

    def _handle(self, raw):
        # What the C server files as a dead letter (core/dispatch.c) is
        # answered (when it has a reply_to) and filed, with its reasons.
        if len(raw) > self.max_request_bytes:
            reason = f'too large: {len(raw)} bytes (limit {self.max_request_bytes})'
            return self._refuse(raw, INVALID_REQUEST, 'Invalid Request: ' + reason, reason)
        try:
            msg = protocol.loads(raw.decode('utf-8'))
        except UnicodeDecodeError as exc:
            return self._refuse(raw, PARSE_ERROR, 'Parse error', f'invalid UTF-8: {exc}')
        except (ValueError, RecursionError) as exc:
            return self._refuse(raw, PARSE_ERROR, 'Parse error', f'parse error: {exc}')
        if isinstance(msg, list):
            return self._handle_batch(raw, msg)
        # No reply key over AMQP (no progress): the answer goes to reply_to.
        resp = self._answer(msg)
        if resp is not None:
            self._deliver(raw, protocol.reply_key(msg), resp)
        return None

    def _handle_batch(self, raw, msg):
        if not msg:
            return self._refuse(raw, INVALID_REQUEST, 'Invalid Request: empty batch')
        if len(msg) > self.batch_max:  # nothing runs, notifications included
            return self._refuse(raw, INVALID_REQUEST, f'Invalid Request: batch of {len(msg)} '
                                f'elements (limit {self.batch_max})')
        return self._batch(raw, msg)

    def _refuse(self, raw, code, message, reason=None):
        """Answers an error with "id": null and files RAW as a dead letter
        (reason REASON, else "no reply key", as the C server's)."""
        self._deliver(raw, None, self._encode(error(None, code, message)), reason)

    def _deliver(self, raw, key, body, reason=None):
        """Publishes BODY to the message's reply_to with its correlation_id;
        nothing for a message without reply_to (a notification, whatever its
        body's id).  A response no id addresses (KEY None) is filed as a dead
        letter as well, as the C server does."""
        props = self._props
        if props is None:
            return
        if props.reply_to:
            out = _pika().BasicProperties(correlation_id=props.correlation_id, content_type=JSON)
            data = body if isinstance(body, bytes) else body.encode('utf-8')
            # Remembered (reliable) even if it is lost with the link: a
            # redelivery here is then answered again, not run again.
            self._said = data
            try:
                self._publish(props.reply_to, data, out)
            except Exception as exc:  # noqa: BLE001
                # The link is gone: the consume loop notices and connects again.
                self._count('lost')
                log.error('%s: reply lost on the way out (to %r): %s', self.service,
                          props.reply_to, _text(exc))
                if self.reliable and _broken(exc):
                    raise  # not acked: the broker hands the message out again
        if raw is not None and (key is None or reason is not None):
            self._file(props, raw, reason or 'no reply key')

    def _dead(self, raw, reason, response=None):
        """A message the server could not handle (an internal error): answered
        if there is a response, and filed as a dead letter."""
        if response is not None:
            self._deliver(None, None, response)
        if self._props is not None:
            self._file(self._props, raw, reason)


def _long(n):
    """N packed as a 64-bit table value ('l'), as the C server writes and reads them."""
    return _pika().compat.long(n)


def _copy_props(props):
    """A copy of pika's BasicProperties PROPS."""
    out = _pika().BasicProperties()
    out.__dict__.update(props.__dict__)
    return out
