"""amqp_registry.py -- an AMQP server's presence: it answers registry queries.

RabbitMQ keeps no record for rrpc without its management plugin, so over
AMQP the registry is a question (PROTOCOL.md section 12, "Operations over
AMQP"): the server binds an exclusive, auto-delete queue of its own,
<prefix>rrpc:registry:<worker id>, to the direct exchange
<prefix>rrpc:registry with its service's routing key and the empty one, and
answers each query there with its record (section 9), its per-method totals
(mstats), its counters and its clock, sent to the query's reply_to.  The
queue lives as long as the connection: a stopped or killed server is gone
from `rrpc ls` at once, nothing expires.  As in the C server
(src/amqp/registry_amqp.c) it runs on a connection and thread of its own, so
a slow handler never keeps a query waiting; a broker that refuses the names
(permissions) leaves the server serving unregistered, said once; a link lost
later is mended with backoff.
"""

import logging
import os
import socket
import threading
import time

from .protocol import dumps
from .registry import Stats

log = logging.getLogger('rrpc')

REGISTRY = 'rrpc:registry'
COUNTERS = ('requests', 'notifications', 'errors', 'expired', 'dead_letters', 'redelivered',
            'given_back', 'lost')


class Totals(Stats):
    """Per-method counts since the process started: over AMQP they are
    answered whole (the C server's totals), never flushed as deltas."""

    def totals(self):
        with self._lock:
            return dict(self._pending)


class AmqpRegistry:
    """Answers registry queries for SERVER (an AmqpServer) while it serves:
    start() before serving, stop() after.  SERVER.counts holds the counters
    the answers carry; stats (a Totals) the per-method counts."""

    POLL_S = 0.2  # how soon the thread notices stop()
    BACKOFF_S = (0.2, 5.0)

    def __init__(self, server, interval, ttl):
        self.server = server
        self.id = server.worker_id
        self.exchange = server.prefix + REGISTRY
        self.queue = f'{self.exchange}:{self.id}'
        self.interval = interval if interval > 0 else 1.0
        ttl = ttl if ttl > 0 else 5.0
        self.ttl = max(ttl, 2 * self.interval)  # as the Redis registry's record says
        self.stats = Totals()
        self.record = None
        self._conn = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Builds the record and joins the registry; False (logged) if the
        broker refuses the registry's names: the server serves unregistered."""
        from .amqp import AmqpError  # noqa: PLC0415 -- amqp imports this module
        self.record = {'id': self.id, 'service': self.server.service,
                       'host': socket.gethostname(), 'pid': os.getpid(),
                       'version': self.server.version, 'threads': 1, 'started': time.time(),
                       'heartbeat_s': float(self.interval), 'ttl_s': float(self.ttl),
                       'max_queue': 0, 'shards': 1, 'methods': self.server.method_entries()}
        # The first try runs here, so that a refusal is said at start.
        try:
            self._link()
        except AmqpError as exc:
            if exc.refused:
                return self._refused(exc)
            log.warning('%s: registry: %s; trying again', self.server.service, exc)
        except Exception as exc:  # noqa: BLE001
            if _closed_by_broker(exc):
                return self._refused(exc)
            log.warning('%s: registry: %s; trying again', self.server.service, exc)
            self._drop()
        self._thread = threading.Thread(target=self._run, name='rrpc-registry', daemon=True)
        self._thread.start()
        return True

    def _refused(self, exc):
        log.warning('%s: not in the registry (rrpc ls/info/stats cannot see this server): %s',
                    self.server.service, exc)
        self._drop()
        return False

    def stop(self):
        """Stops answering; closing the connection takes the queue away."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._drop()

    def _link(self):
        from .amqp import _open  # noqa: PLC0415
        conn = self._conn = _open(self.server.url)
        ch = conn.channel()
        ch.exchange_declare(self.exchange, exchange_type='direct')  # not durable, as C's
        ch.queue_declare(self.queue, exclusive=True, auto_delete=True)
        for key in (self.server.service, ''):  # its service's queries, and everyone's
            ch.queue_bind(self.queue, self.exchange, routing_key=key)
        ch.basic_consume(self.queue, self._query, auto_ack=True)

    def _drop(self):
        conn, self._conn = self._conn, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 -- already gone
                pass

    def _run(self):
        delay, lost = self.BACKOFF_S[0], False
        while not self._stop.is_set():
            try:
                if self._conn is None:
                    self._link()
                    if lost:
                        log.info('%s: registry: reconnected', self.server.service)
                    delay, lost = self.BACKOFF_S[0], False
                self._conn.process_data_events(time_limit=self.POLL_S)
            except Exception as exc:  # noqa: BLE001 -- any failure: mend the link
                if not lost:
                    log.warning('%s: registry link lost: %s', self.server.service, exc)
                lost = True
                self._drop()
                self._stop.wait(delay)
                delay = min(delay * 2, self.BACKOFF_S[1])

    def answer(self):
        """The answer to a query: the record with mstats, counters and time."""
        return dumps(dict(self.record, mstats=self.stats.totals(),
                          counters={k: self.server.counts.get(k, 0) for k in COUNTERS},
                          time=time.time()))

    def _query(self, ch, _method, props, _body):
        if not props.reply_to:  # nobody to answer
            return
        from .amqp import JSON, _pika  # noqa: PLC0415
        out = _pika().BasicProperties(correlation_id=props.correlation_id, content_type=JSON)
        ch.basic_publish('', props.reply_to, self.answer(), out)


def _closed_by_broker(exc):
    """Whether the broker closed the channel or connection (a 403 ACCESS_REFUSED, a
    406 PRECONDITION_FAILED): trying again would be refused again."""
    from .amqp import _pika  # noqa: PLC0415
    pika = _pika()
    return isinstance(exc, (pika.exceptions.ChannelClosedByBroker,
                            pika.exceptions.ConnectionClosedByBroker))
