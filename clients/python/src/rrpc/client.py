"""client.py -- calls rrpc services: rrpc.Client and its proxies.

Like the C client, every call carries a deadline on Redis's clock
(PROTOCOL.md 7) and a reply key of 128 random bits (section 3), and reads
the registry (section 9) to fail fast when a registered service has no live
worker and to respect its max_queue.
"""

import math
import secrets
import time

import redis

from .errors import (Cancelled, Overloaded, ProtocolError, RedisError, RemoteError, Timeout,
                     Unavailable)
from . import priority as prio, stream, trace
from .protocol import dumps, loads, request
from .redis_url import is_cluster
from .transport import ERRORS as REDIS_ERRORS
from .transport import RedisClock, connect, demoted, error_text, is_amqp, resolve_url


class _View:
    """A caller's view of one service in the registry (PROTOCOL.md 9)."""

    def __init__(self, registered, live, max_queue):
        self.registered, self.live, self.max_queue = registered, live, max_queue


_NO_VIEW = _View(False, 0, 0)  # fail fast off, or the registry is out of reach
_GONE = object()  # _wait's answer when the last worker went
_CANCELLED = object()  # _wait's answer when the caller cancelled

# Checks the queue length and pushes in one step, so that concurrent callers
# cannot overshoot max_queue.  The new length, or -1 if full.
_PUSH_SCRIPT = ("if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end "
                "return redis.call('RPUSH', KEYS[1], ARGV[1])")


class Client:
    """Calls rrpc services.  One Redis connection pool; safe to share
    between threads (each call uses its own reply key).

    Every call carries a deadline on Redis's clock (PROTOCOL.md 7), and
    with fail_fast=True (the default) the client reads the registry
    (PROTOCOL.md 9): a registered service with no live worker fails at once
    with Unavailable, a wait on a registered service gives up with
    Unavailable when its last worker goes, and a service at its max_queue
    refuses the call with Overloaded.  An amqp:// URL makes a client
    over RabbitMQ instead (rrpc.amqp.AmqpClient, PROTOCOL.md 12).  Services that never registered are
    simply waited on.  Every error is an rrpc.Error; Redis's own errors
    come as RedisError.  Usable as a context manager (closes the pool)."""

    def __new__(cls, url=None, *_args, **_kwargs):
        # An amqp:// URL (or $RRPC_URL) makes the AMQP client (PROTOCOL.md 12).
        if cls is Client and is_amqp(url):
            from .amqp import AmqpClient  # noqa: PLC0415 -- pika only when asked for
            return super().__new__(AmqpClient)
        return super().__new__(cls)

    FRESH_S = 1.0  # how long a service's registry view is trusted
    SLICE_S = 1.0  # wait slice while a registered service is awaited

    def __init__(self, url=None, prefix='', timeout=30, fail_fast=True):
        self.redis = connect(url)
        self.prefix = prefix
        self.timeout = timeout
        self.fail_fast = fail_fast
        self._clock = RedisClock()
        self._views = {}  # list key -> (monotonic time read, _View)
        self._priority_script = self.redis.register_script(prio.PRIORITY_SCRIPT)  # EVALSHA, EVAL on NOSCRIPT

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def close(self):
        """Closes the client's connections."""
        self.redis.close()

    CANCEL_LOOK_S = 0.05  # how often a call with a cancel flag looks at it

    def call(self, service, method, *args, timeout=None, traceparent=None, tracestate=None,
             progress=None, priority=None, tenant=None, cancel=None, **kwargs):
        """Calls service.method with positional *args or named **kwargs and
        returns the result.  Raises RemoteError, Timeout, Unavailable,
        Overloaded, ProtocolError, RedisError.  timeout (seconds; 0 waits
        forever), traceparent and tracestate (W3C Trace Context, PROTOCOL.md
        7; ValueError if invalid) are this method's own, never named params.
        Without a traceparent a call made inside a handler continues the
        handled request's trace (and gets no more time than its deadline
        leaves); any other starts a new trace.  progress, a callable, asks
        for the handler's progress (PROTOCOL.md 7): it gets each value, in
        order, before the call returns.  A call made inside a handler is
        cancelled with the handled request (it carries its cancel_key).
        priority: 'high', 'normal' (the default) or 'low' (PROTOCOL.md 7;
        ValueError otherwise): under a backlog, higher ones are served
        first.  tenant: a non-empty string sent as the request's "tenant"
        member (for the C server's per-tenant limits).  cancel: a
        threading.Event (anything with is_set()): once set, the call takes
        its request back if still queued, tells a worker running it to
        stop (its cancel_key, PROTOCOL.md 7) and raises Cancelled."""
        members = self._members(traceparent, tracestate, priority, tenant)
        if progress is not None:
            members['progress'] = True
        cancel_key = stream.inherited_cancel_key()
        if cancel_key is not None:
            members['cancel_key'] = cancel_key
        try:
            return self._call(service, method, args, kwargs, timeout, members, progress, cancel)
        except REDIS_ERRORS as exc:
            demoted(self.redis, exc)  # behind Sentinel: the next call asks for the new master
            raise RedisError(f'{service}.{method}: redis: {error_text(exc)}') from exc

    def notify(self, service, method, *args, traceparent=None, tracestate=None, priority=None,
               tenant=None, **kwargs):
        """Sends a notification: run by a worker, never answered.  It
        carries a trace context, a priority and a tenant as calls do."""
        members = self._members(traceparent, tracestate, priority, tenant)
        text = dumps(request(method, args, kwargs, **members))
        try:
            self._push(self.prefix + service, text, 0, members.get('priority'))
        except REDIS_ERRORS as exc:
            demoted(self.redis, exc)  # behind Sentinel: the next call asks for the new master
            raise RedisError(f'{service}.{method}: redis: {error_text(exc)}') from exc

    def proxy(self, service):
        """An object whose attribute calls are calls: proxy('calc').add(1, 2)."""
        return Proxy(self, service)

    @staticmethod
    def _members(traceparent, tracestate, priority, tenant):
        """A request's own members; ValueError for a bad one, before anything is sent."""
        priority, tenant = prio.checked(priority), prio.checked_tenant(tenant)
        parent, state = trace.outgoing(traceparent, tracestate)
        members = {'traceparent': parent}
        if state:
            members['tracestate'] = state
        if priority in ('high', 'low'):  # absent means normal
            members['priority'] = priority
        if tenant is not None:
            members['tenant'] = tenant
        return members

    def _inherited(self, wait):
        """WAIT cut to what the handled request's deadline leaves (as the C
        client does), at least 1 ms so that it never means "forever"."""
        handled = trace.current()
        if handled is None or handled[2] is None:
            return wait
        if self._clock.due():
            self._clock.sync(self.redis)
        now = self._clock.now_ms()
        if now is None:
            return wait
        left = max((handled[2] - now) / 1000.0, 0.001)
        return wait if 0 < wait < left else left

    def _call(self, service, method, args, kwargs, timeout, members, progress=None, cancel=None):
        wait = self._inherited(self.timeout if timeout is None else timeout)
        # id, reply key and reply_to are one key, so seed-style workers that
        # only know "reply to the id" reach us as well.
        key = f'{self.prefix}rrpc:reply:{secrets.token_hex(16)}'
        members = dict(members, id=key, reply_to=key)
        if cancel is not None:
            members['cancel_key'] = key + ':cancel'  # its own, not the handled request's
        members.update(self._times(wait))
        text = dumps(request(method, args, kwargs, **members))
        queue = self.prefix + service
        view = self._view(queue, self.FRESH_S)
        if view.registered and not view.live:
            raise Unavailable(f'{service}: registered, but none of its workers is live '
                              '(stopped, or their heartbeat expired)')
        level = members.get('priority')
        self._push(queue, text, view.max_queue if view.live else 0, level)
        started = time.monotonic()
        popped = self._wait(queue, key, wait, view.registered, progress, cancel)
        if popped is None or popped is _GONE or popped is _CANCELLED:
            if popped is _CANCELLED:  # first the key, so a worker that has it stops
                left = max(wait - (time.monotonic() - started), 0) if wait > 0 else 0
                self.redis.set(members['cancel_key'], 1, px=int(left * 1000) + 60000)
            # Withdraw the request so no worker runs a call nobody awaits.
            self._withdraw(queue, text, level)
            if popped is _CANCELLED:
                raise Cancelled(f'{service}.{method}: cancelled')
            if popped is _GONE:
                raise Unavailable(f'{service}.{method}: the last worker went while we waited')
            raise Timeout(f'{service}.{method}: no reply within {wait} s')
        return self._result(popped[1], key)

    def _times(self, wait):
        """The call's sent and deadline members, in ms on Redis's clock
        (PROTOCOL.md 7): none without a measured clock (TIME refused, say),
        no deadline without a limit."""
        if self._clock.due():
            self._clock.sync(self.redis)
        now = self._clock.now_ms()
        if now is None:
            return {}
        if not 0 < wait <= 1e8:
            return {'sent': now}
        return {'sent': now, 'deadline': now + math.ceil(wait * 1000)}

    def _view(self, queue, max_age):
        """What the registry says of the service whose list is QUEUE, read
        again when older than max_age seconds: one round trip per service
        per second, not one per call."""
        if not self.fail_fast:
            return _NO_VIEW
        read_at, view = self._views.get(queue, (None, None))
        if read_at is not None and time.monotonic() - read_at <= max_age:
            return view
        config = '{%s}:config' % queue
        # The three keys share the slot {L}; redis-py's Cluster pipelines
        # refuse TIME (no key, any node), so there it goes on its own.
        cluster = is_cluster(self.redis)
        pipe = self.redis.pipeline(transaction=False)
        if not cluster:
            pipe.time()
        replies = (pipe.zrange('{%s}:workers' % queue, 0, -1, withscores=True)
                   .hget(config, 'max_queue').exists(config)
                   .execute(raise_on_error=False))
        if cluster:
            replies.insert(0, self.redis.time())
        if any(isinstance(r, redis.ResponseError) for r in replies):
            view = _NO_VIEW  # keys refused (an ACL): no registry for us, wait as usual
        else:
            (sec, usec), workers, max_queue, registered = replies
            now_ms = sec * 1000 + usec // 1000
            live = sum(score > now_ms for _, score in workers)
            view = _View(registered > 0, live, int(max_queue or 0))
        self._views[queue] = (time.monotonic(), view)
        return view

    def _push(self, queue, text, max_queue, level=None):
        if level in ('high', 'low'):
            # max_queue is not checked here: the priority script pushes as the protocol says.
            self._priority_script(keys=prio.script_keys(queue), args=[text, level])
        elif max_queue <= 0:
            self.redis.rpush(queue, text)
        elif self.redis.eval(_PUSH_SCRIPT, 1, queue, text, max_queue) < 0:
            raise Overloaded(f'{queue}: its queue holds {max_queue} requests (max_queue)')

    def _withdraw(self, queue, text, level):
        """Takes the request back from its list if no worker has it yet
        (any of the three for a priority: the script chose one)."""
        if level in ('high', 'low'):
            pipe = self.redis.pipeline(transaction=False)
            for name in prio.lists(queue):
                pipe.lrem(name, 1, text)
            pipe.execute()
        else:
            self.redis.lrem(queue, 1, text)

    def _wait(self, queue, key, wait, sliced, progress=None, cancel=None):
        """BLPOPs the reply: in one piece, or for a registered service in
        slices, checking between them that a worker is still live (and
        with CANCEL in short slices, looking at it between them).  Returns
        the popped pair, None on timeout, _GONE or _CANCELLED."""
        end = time.monotonic() + wait if wait > 0 else None
        while True:
            if cancel is not None and cancel.is_set():
                return _CANCELLED
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            step = left or 0  # 0: forever
            if sliced:
                step = min(step, self.SLICE_S) if step else self.SLICE_S
            if cancel is not None:
                step = min(step, self.CANCEL_LOOK_S) if step else self.CANCEL_LOOK_S
            # Redis reads a timeout under 1 ms as 0, "forever".
            popped = self.redis.blpop([key], timeout=max(step, 0.001) if step else 0)
            if popped is not None and progress is not None and _progress(popped[1], key, progress):
                continue  # progress before the answer: wait on
            if popped is not None or not (sliced or cancel is not None):
                return popped
            if not sliced:
                continue
            view = self._view(queue, self.FRESH_S / 2)
            if view.registered and not view.live:
                return _GONE

    @staticmethod
    def _result(raw, key):
        try:
            resp = loads(raw.decode('utf-8'))
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f'reply is not JSON: {exc}') from None
        if not isinstance(resp, dict) or resp.get('id') != key:
            raise ProtocolError(f'not a response to this call: {raw[:200]!r}')
        if isinstance(resp.get('error'), dict):
            err = resp['error']
            raise RemoteError(err.get('code'), err.get('message'), err.get('data'))
        if 'result' not in resp:
            raise ProtocolError(f'response has neither result nor error: {raw[:200]!r}')
        return resp['result']


def _progress(raw, key, callback):
    """True if RAW is a progress message of the call KEY (PROTOCOL.md 7),
    handed to CALLBACK; False for anything else (the answer)."""
    try:
        msg = loads(raw.decode('utf-8'))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return False
    params = msg.get('params') if isinstance(msg, dict) else None
    if (msg.get('method') != 'rpc.progress' or 'id' in msg or not isinstance(params, dict)
            or params.get('id') != key or 'progress' not in params):
        return False
    callback(params['progress'])
    return True


class Proxy:
    """A service seen as an object: client.proxy('calc').add(1, 2) is
    client.call('calc', 'add', 1, 2) (named params as keywords)."""

    def __init__(self, client, service):
        self._client, self._service = client, service

    def __getattr__(self, method):
        if method.startswith('_'):
            raise AttributeError(method)

        def call(*args, **kwargs):
            return self._client.call(self._service, method, *args, **kwargs)
        call.__name__ = method
        return call

    def __repr__(self):
        return f'<rrpc proxy for {self._service!r}>'
