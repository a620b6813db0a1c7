"""server.py -- serves an rrpc service: rrpc.Server.

A worker pops messages from the service's list, answers each request onto
its reply key (PROTOCOL.md sections 2 to 5), records what it cannot answer
as a dead letter (section 6), refuses requests whose deadline has passed
(section 7) and, by default, registers itself (section 9).  It survives
whatever a handler raises and whatever Redis answers -- it waits for Redis
at start too -- and stops only when told to.
"""

import logging
import os
import random
import secrets
import signal
import socket
import threading
import time

import redis

from . import deadletter, priority, protocol, stream, trace
from .errors import RedisError, Unsupported
from .handlers import (STOPS, describe, discover_document, entry, invoke, public_methods,
                       raw_params)
from .protocol import (BATCH_TIME_EXCEEDED, CANCELLED, DEADLINE_EXCEEDED, INTERNAL_ERROR, INVALID_REQUEST,
                       METHOD_NOT_FOUND, dumps, error)
from .registry import Registry
from .replies import ReplyRules, key_bytes
from .transport import Outage, RedisClock, connect, demoted, error_text, heals_at_start, is_amqp
from .transport import push_reply
from .transport import ERRORS as REDIS_ERRORS, transient
from .version import VERSION

log = logging.getLogger('rrpc')


class _GaveUp(Exception):
    """A write abandoned because the worker was told to stop while Redis
    kept failing."""


class Server:
    """Serves the methods of obj -- its public methods, or a dict name ->
    callable -- plus any added with register(), as the rrpc service
    `service`.  Single-threaded: run several processes to scale, they share
    the list.

    With heartbeat=True (the default) serve_forever registers the process
    in the registry (PROTOCOL.md section 9) every heartbeat_interval
    seconds, valid for heartbeat_ttl seconds, publishing max_queue for
    callers; heartbeat=False serves without it (no record, no stats).  The
    built-in methods rpc.ping and rpc.discover (an OpenRPC document of the
    methods, PROTOCOL.md section 11) are answered either way.  Requests are
    popped from {L}:high, L, {L}:low in that order (priorities, PROTOCOL.md
    7).  A service whose {L}:config holds limits (rate limits and
    concurrency caps, enforced by the C server only) is not served:
    serve_forever raises Unsupported.

    Replies go only where PROTOCOL.md section 3 allows (never onto rrpc's
    keys, a registered service's list or a key that is not a reply list);
    reply_prefixes (a list of str or bytes, None = any) further limits reply
    keys to those starting with one of them.  A message larger than
    max_request_bytes is not parsed (a dead letter that keeps a bounded
    copy); a batch holds at most batch_max elements, and once it has run
    batch_time_limit seconds (None or 0: no limit) its elements not started
    are answered -32001 without running.  A handler's exception, of any
    class but KeyboardInterrupt and SystemExit, answers -32603.

    serve_forever waits for Redis at start (backoff from 0.05 s doubling to
    5 s, logged once) for at most start_timeout seconds (None or 0: as long
    as it takes; a negative value: not at all); a refused password or ACL
    fails at once.  Once serving, Redis errors are logged once per outage
    and retried with backoff: the worker stops only when told to (stop(),
    SIGINT, SIGTERM).  An amqp:// URL serves over RabbitMQ instead
    (rrpc.amqp.AmqpServer, PROTOCOL.md 12)."""

    def __new__(cls, service, obj=None, url=None, *_args, **_kwargs):
        # An amqp:// URL (or $RRPC_URL) makes the AMQP server (PROTOCOL.md 12).
        if cls is Server and is_amqp(url):
            from .amqp import AmqpServer  # noqa: PLC0415 -- pika only when asked for
            return super().__new__(AmqpServer)
        return super().__new__(cls)

    STOP_GRACE_S = 5.0  # how long a write is still retried once told to stop
    START_BACKOFF_S = (0.05, 5.0)  # the wait for Redis at start: first and longest pause

    def __init__(self, service, obj=None, url=None, prefix='', reply_ttl=60,
                 max_request_bytes=1048576, dead_letter_max=1000, batch_max=1000,
                 heartbeat=True, heartbeat_interval=1.0, heartbeat_ttl=5.0, max_queue=0,
                 reply_prefixes=None, batch_time_limit=5.0, start_timeout=None):
        self.redis = connect(url)
        self.service = service
        self.version = 'python-' + VERSION
        self.prefix = prefix
        self.queue = prefix + service
        self._lists = priority.lists(self.queue)  # popped high, normal, low (PROTOCOL.md 7)
        self.rules = ReplyRules(service, prefix, reply_prefixes)
        self._outage = Outage(service)
        self.dead_key = self.queue + ':dead'
        self.stats_key = self.queue + ':stats'
        self.reply_ttl = reply_ttl
        self.max_request_bytes = max_request_bytes
        self.dead_letter_max = dead_letter_max
        self.batch_max = batch_max
        self.batch_time_limit = batch_time_limit or 0
        self.start_timeout = start_timeout or 0
        self.methods = public_methods(obj)
        self._about = {}  # name -> (description, params) given to register()
        self.methods.setdefault('rpc.ping', self._rpc_ping)
        self.methods.setdefault('rpc.discover', self._rpc_discover)
        self._clock = RedisClock()
        self._registry = (Registry(self, url, prefix, heartbeat_interval, heartbeat_ttl,
                                   max_queue) if heartbeat else None)
        # The worker id rpc.ping reports; without a registry it is still unique.
        self.worker_id = (self._registry.id if self._registry else
                          f'{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}')
        self._stopping = False
        self._expired_unsent = 0  # refused for their deadline, not yet in <service>:stats

    # -- methods ----------------------------------------------------------

    def register(self, name, fn=None, description=None, params=None):
        """Serves FN as method NAME (before serve_forever: the registry
        record is built at start).  Without FN, a decorator:

            @server.register('add', description='add(a, b): a + b')
            def add(a, b): return a + b
        """
        def add(fn):
            self.methods[name] = fn
            if description is not None:
                self._about[name] = (description, params)
            return fn
        return add if fn is None else add(fn)

    def method_entries(self):
        """The methods as the registry record lists them (PROTOCOL.md 9)."""
        return [entry(name, fn, *self._about.get(name, (None, None)))
                for name, fn in self.methods.items()]

    @describe('built-in: answers with the worker\'s identity and time')
    @raw_params
    def _rpc_ping(self, _params):
        return {'service': self.service, 'worker': self.worker_id,
                'host': socket.gethostname(), 'pid': os.getpid(), 'version': self.version,
                'time': time.time()}

    @describe('built-in: describes the service as an OpenRPC document')
    @raw_params
    def _rpc_discover(self, _params):
        return discover_document(self.service, self.version, self.methods, self._about)

    # -- the loop ---------------------------------------------------------

    def stop(self):
        """Asks serve_forever to return after the request in hand."""
        # A plain flag, not an Event: this runs inside signal handlers, where
        # taking a lock the interrupted code may hold would deadlock.
        self._stopping = True

    def serve_forever(self):
        """Waits for Redis, registers, then pops and answers requests until
        stop() or SIGINT/SIGTERM.  Raises RedisError if Redis refuses the
        start (a password, an ACL) or does not answer within start_timeout."""
        # Before the wait for Redis, so that a supervisor can stop a waiting server.
        restore = self._trap_signals()
        try:
            if self._start():
                try:
                    self._serve()
                finally:
                    self._send_expired()  # best effort: Redis may be gone
                    if self._registry:
                        self._registry.stop()
        finally:
            restore()

    def _start_once(self):
        self.redis.ping()
        self._refuse_limits()
        self._clock.sync(self.redis)
        if self._registry:
            self._registry.start()  # refused (an ACL, say): fail loudly, like the C server

    def _refuse_limits(self):
        """Raises Unsupported if the service's configuration holds rate
        limits or concurrency caps: only the C server enforces them, and a
        worker that ignored them would break them for every worker."""
        config = '{%s}:config' % self.queue
        try:
            held = self.redis.hexists(config, 'limits')
        except redis.ResponseError as exc:  # refused (an ACL): cannot tell, serve
            log.warning('%s: cannot read %s (%s): serving without checking for limits',
                        self.service, config, error_text(exc))
            return
        if held:
            raise Unsupported(f'{self.service}: {config} field limits is set (rate limits or '
                              'concurrency caps), which the Python server does not enforce: '
                              'serve this service with the C server, or remove the field')

    def _start(self):
        """Starts, waiting for Redis with backoff while it cannot answer
        (refused connections, LOADING...).  False if stopped meanwhile."""
        began, delay, waited = time.monotonic(), self.START_BACKOFF_S[0], False
        while not self._stopping:
            try:
                self._start_once()
            except redis.RedisError as exc:
                if self.start_timeout < 0 or not heals_at_start(exc):
                    raise RedisError(f'{self.service}: cannot start: {error_text(exc)}') from exc
                left = began + self.start_timeout - time.monotonic() if self.start_timeout else 1e9
                if left <= 0:
                    raise RedisError(f'{self.service}: Redis did not answer within the start '
                                     f'timeout ({self.start_timeout:g} s): '
                                     f'{error_text(exc)}') from exc
                if not waited:  # once, not every try
                    bound = f' (up to {self.start_timeout:g} s)' if self.start_timeout else ''
                    log.warning('%s: waiting for Redis%s: %s', self.service, bound,
                                error_text(exc))
                    waited = True
                # The jitter spreads a herd of servers started together.
                self._pause(min(delay * random.uniform(0.5, 1.5), left))
                delay = min(delay * 2, self.START_BACKOFF_S[1])
                continue
            if waited:
                log.warning('%s: Redis answered after %.1f s, serving', self.service,
                            time.monotonic() - began)
            return True
        return False

    def _serve(self):
        backoff = 0.1
        while not self._stopping:
            try:
                if self._clock.due():
                    self._clock.sync(self.redis)
                self.rules.refresh(self.redis)
                self._send_expired()  # never in the way of the pop
                # A short timeout, so a stop request is noticed within 1 s.
                popped = self.redis.blpop(self._lists, timeout=1)
                backoff = 0.1
                self._outage.ended()
            except Exception as exc:  # READONLY, NOPERM, WRONGTYPE, a broken link...
                demoted(self.redis, exc)
                self._outage.failed(exc, 'cannot pop requests')
                self._pause(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if popped is not None:
                self.handle(popped[1])

    def _pause(self, seconds):
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))

    def _trap_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.signal(sig, lambda *_: self.stop())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, old) for sig, old in previous.items()]

    # -- one message ------------------------------------------------------

    def handle(self, raw):
        """Handles one message (bytes) popped from the list.  Never raises
        because of what the message holds."""
        try:
            self._handle(raw)
        except STOPS:
            raise
        except BaseException as exc:  # a bug here must not take the worker down
            log.exception('%s: failed to handle a message', self.service)
            try:
                self._dead(raw, f'internal error: {type(exc).__name__}: {exc}')
            except Exception:
                log.exception('%s: could not record the dead letter either', self.service)

    def _handle(self, raw):
        if len(raw) > self.max_request_bytes:  # not decoded, not parsed: kept bounded
            return self._dead(raw,
                              f'too large: {len(raw)} bytes (limit {self.max_request_bytes})')
        try:
            text = raw.decode('utf-8')
        except UnicodeDecodeError:
            return self._dead(raw, 'invalid UTF-8')
        try:
            msg = protocol.loads(text)
        except (ValueError, RecursionError) as exc:
            return self._dead(raw, f'parse error: {exc}')
        if not isinstance(msg, list):
            resp = self._answer(msg, key=protocol.reply_key(msg))
            if resp is not None:
                self._deliver(raw, protocol.reply_key(msg), resp)
        elif not msg:
            self._deliver(raw, None, self._encode(error(None, INVALID_REQUEST,
                                                        'Invalid Request: empty batch')))
        elif len(msg) > self.batch_max:
            # Nothing runs, notifications included (PROTOCOL.md section 5).
            self._deliver(raw, protocol.batch_reply_key(msg), self._encode(error(
                None, INVALID_REQUEST,
                f'Invalid Request: batch of {len(msg)} elements (limit {self.batch_max})')))
        else:
            self._batch(raw, msg)

    def _batch(self, raw, batch):
        """Runs a batch's elements in turn; once it has run batch_time_limit
        seconds, those not started are answered -32001 without running."""
        parts, started = [], time.monotonic()
        for req in batch:
            over = (self.batch_time_limit > 0 and
                    time.monotonic() - started >= self.batch_time_limit)
            resp = self._answer(req, over)
            if resp is not None:
                parts.append(resp)
        if parts:  # a batch of notifications only is answered by nothing
            self._deliver(raw, protocol.batch_reply_key(batch), b'[' + b','.join(parts) + b']')

    def _answer(self, req, over_time=False, key=None):
        """The encoded response to one request object, or None for a
        notification.  OVER_TIME: its batch has run out of time.  KEY: its
        reply key, where progress goes (None in a batch: none)."""
        reason = protocol.invalid_reason(req)
        if reason:
            rid = req.get('id') if isinstance(req, dict) and protocol.valid_id(req.get('id')) \
                else None
            return self._encode(error(rid, INVALID_REQUEST, reason))
        bad = priority.bad_member(req)
        if bad:
            return self._encode(dict(jsonrpc='2.0', error=bad, id=req.get('id')))
        if over_time:
            outcome = {'error': {'code': BATCH_TIME_EXCEEDED,
                                 'message': 'Batch time limit exceeded',
                                 'data': {'limit_ms': int(self.batch_time_limit * 1000)}}}
        else:
            outcome = self._expired(req)
            if not outcome:
                with trace.handling(req), stream.handling(self, req, key):
                    if stream.cancelled():  # cancelled while it waited: not run
                        outcome = {'error': {'code': CANCELLED, 'message': 'Cancelled'}}
                    else:
                        outcome = self._run(req['method'], req.get('params'))
        if 'id' not in req:
            return None
        return self._encode(dict(jsonrpc='2.0', **outcome, id=req['id']))

    def _expired(self, req):
        """The -32000 outcome if the request's deadline (PROTOCOL.md 7) has
        passed on Redis's clock, else None.  All deadlines are ignored while
        the clock is unmeasured."""
        deadline = protocol.deadline_of(req)
        now = None if deadline is None else self._clock.now_ms()
        if now is None or now < deadline:
            return None
        self._expired_unsent += 1
        return {'error': {'code': DEADLINE_EXCEEDED, 'message': 'Deadline exceeded',
                          'data': {'deadline': deadline, 'now': now}}}

    def _send_expired(self):
        """Adds the requests refused for their deadline since the last time
        to <service>:stats field expired (PROTOCOL.md 9), before the next
        pop; a count Redis did not take (gone, an ACL) is kept, silently,
        and added again next time."""
        n, self._expired_unsent = self._expired_unsent, 0
        if not n:
            return
        try:
            self.redis.hincrby(self.stats_key, 'expired', n)
        except redis.RedisError:
            self._expired_unsent += n

    def _run(self, method, params):
        """Runs a handler; returns {'result': ...} or {'error': {...}}.
        Counts calls of known methods, with their run time, for the registry."""
        fn = self.methods.get(method)
        if fn is None:
            return {'error': {'code': METHOD_NOT_FOUND, 'message': f'Method not found: {method}'}}
        started = time.monotonic()
        outcome = invoke(fn, params, f'{self.service}.{method}')
        if self._registry:
            self._registry.stats.record(method, time.monotonic() - started, 'error' in outcome)
        return outcome

    def _encode(self, resp):
        try:
            return dumps(resp)
        except STOPS:
            raise
        except BaseException as exc:  # TypeError, ValueError, RecursionError, a result's own
            log.error('%s: response is not JSON: %s', self.service, exc)
            return dumps(error(resp.get('id'), INTERNAL_ERROR,
                               'Internal error: result is not JSON'))

    # -- writing ------------------------------------------------------------

    def _deliver(self, raw, key, body):
        if key is None:
            return self._dead(raw, 'no reply key', body)
        key = key_bytes(key)
        refusal = self.rules.refusal(key)
        if refusal:
            return self._dead(raw, 'reply key refused: ' + refusal, body)
        try:
            out = self._persist(lambda: push_reply(self.redis, key, self.reply_ttl, body),
                                'cannot push a reply')
        except _GaveUp as exc:
            return log.error('%s: reply lost on the way out: %s', self.service, exc)
        except redis.RedisError as exc:  # NOPERM on the key, say: never "not now"
            return self._dead(raw, f'reply failed: {error_text(exc)}', body)
        status = out[0] if isinstance(out, list) and out else out
        if status != 1:
            what = status.decode('utf-8', 'replace') if isinstance(status, bytes) else str(status)
            self._dead(raw, 'reply key refused: ' + what, body)

    def _dead(self, raw, reason, response=None):
        """Records a message that cannot be answered; never drops it silently."""
        letter = deadletter.record(self.service, reason, raw, response,
                                   keep=self.max_request_bytes)
        log.warning('%s: dead letter%s: %s', self.service,
                    trace.log_suffix(letter.get('traceparent')), reason)
        body = deadletter.encode(letter)
        try:
            self._persist(lambda: self.redis.pipeline(transaction=False)
                          .rpush(self.dead_key, body)
                          .ltrim(self.dead_key, -self.dead_letter_max, -1)
                          .hincrby(self.stats_key, 'dead', 1).execute(),
                          'cannot record a dead letter')
        except (redis.RedisError, _GaveUp) as exc:
            log.error('%s: dead letter lost (%s): %s', self.service, error_text(exc), reason)

    def _persist(self, write, what):
        """Runs a write until it succeeds, riding out whatever Redis says
        "not now" with (broken link, LOADING, BUSY, READONLY, OOM...) with
        backoff, so the request in hand still gets answered.  Raises the
        RedisError of a refusal, or _GaveUp when told to stop while Redis
        keeps failing (after STOP_GRACE_S more)."""
        delay, give_up_at = 0.1, None
        while True:
            try:
                result = write()
                self._outage.ended()
                return result
            except REDIS_ERRORS as exc:
                if not transient(exc):
                    raise
                demoted(self.redis, exc)
                self._outage.failed(exc, what)
                if self._stopping:
                    give_up_at = give_up_at or time.monotonic() + self.STOP_GRACE_S
                    if time.monotonic() >= give_up_at:
                        raise _GaveUp(error_text(exc)) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
