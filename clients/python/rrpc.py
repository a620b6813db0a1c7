"""rrpc.py -- the Python peer of rrpc: JSON-RPC 2.0 over Redis lists.

rrpc's core is C, but the protocol (docs/PROTOCOL.md) is meant to be spoken by
any language with a Redis client.  This module is that peer for Python, built
only on redis-py, so Python programs can call rrpc services and serve them,
interchangeably with the C, Ruby and seed-style peers:

    calc = Client().proxy('calc')
    calc.add(1, 2)                      # -> 3

    class Calc:
        def add(self, a, b): return a + b
    Server('calc', Calc()).serve_forever()

Servers register themselves in the registry of PROTOCOL.md section 9 (a
heartbeat from a background thread, per-method stats, the built-in rpc.ping),
so `rrpc ls/info/ping/stats/top` show them next to C workers and C callers
fail fast once the last of them stops; they refuse requests whose deadline
(section 7) has passed, and write replies only onto reply lists (section 6:
never onto rrpc's keys, a service's request list or an application's key).
They survive whatever a handler raises and whatever Redis answers, and stop
only when told to.

Clients, like the C client, put a deadline on every call and read the
registry to fail fast when a registered service has no live worker, and to
respect its max_queue.

Public API: Client, Server, RpcError, InvalidParams, RemoteError, CallTimeout,
Unavailable, Overloaded, ProtocolError, raw_params, describe, VERSION.
"""

import inspect
import base64
import hashlib
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import threading
import time

import redis

__all__ = ['Client', 'Server', 'RpcError', 'InvalidParams', 'RemoteError',
           'CallTimeout', 'Unavailable', 'Overloaded', 'ProtocolError', 'raw_params',
           'describe', 'VERSION']

VERSION = '0.1.0'
DEFAULT_URL = 'redis://127.0.0.1:6379'

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
DEADLINE_EXCEEDED = -32000

log = logging.getLogger('rrpc')


# --------------------------------------------------------------------------
# Errors


class RpcError(Exception):
    """Raised by a handler to answer with a JSON-RPC error of its choosing."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_error(self):
        err = {'code': self.code, 'message': self.message}
        if self.data is not None:
            err['data'] = self.data
        return err


class InvalidParams(RpcError):
    """Raised by a handler whose params are present but unusable (-32602)."""

    def __init__(self, message, data=None):
        super().__init__(INVALID_PARAMS, message, data)


class RemoteError(Exception):
    """The peer answered a call with a JSON-RPC error object."""

    def __init__(self, code, message, data=None):
        super().__init__(f'{message} (code {code})')
        self.code, self.message, self.data = code, message, data


class CallTimeout(TimeoutError):
    """No reply arrived in time (the request was withdrawn if still queued)."""


class ProtocolError(Exception):
    """The peer's reply is not a JSON-RPC 2.0 response."""


class Unavailable(Exception):
    """The service is registered but none of its workers is live
    (PROTOCOL.md 9): the call failed without being queued, or was withdrawn
    when the last worker went while it waited."""


class Overloaded(Exception):
    """The service's queue is at its max_queue (PROTOCOL.md 9): nothing was
    queued."""


def raw_params(fn):
    """Marks a handler that receives the request's params whole, as one
    argument (a list, a dict, or None when absent), instead of bound to its
    parameters -- for methods like echo that care which form was sent."""
    fn._rrpc_raw_params = True
    return fn


def describe(description, params=None):
    """Gives a handler a description (and optionally an informal params
    shape, any JSON) for the registry, where `rrpc info` shows them:

        @rrpc.describe('add(a, b): a + b', {'a': 'number', 'b': 'number'})
        def add(self, a, b): ...
    """
    def mark(fn):
        fn._rrpc_description = description
        fn._rrpc_params = params
        return fn
    return mark


# --------------------------------------------------------------------------
# JSON and key helpers shared by both ends


def _connect(url):
    return redis.Redis.from_url(url or os.environ.get('REDIS_URL') or DEFAULT_URL)


def _reject_constant(name):
    raise ValueError(f'{name} is not JSON')


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        # jansson (the C peer) refuses such numbers too; agreeing keeps the
        # peers interchangeable.
        raise ValueError(f'number out of range: {text[:40]}')
    return value


# A lone surrogate escape (e.g. "\ud800") is accepted by Python's json but is
# not Unicode text; only a text containing such an escape needs the walk.
_SURROGATE_ESCAPE = re.compile(r'\\u[dD][89a-fA-F]')


def _loads(text):
    """Strict JSON: no NaN/Infinity, no overflowing numbers, no lone
    surrogates.  Raises ValueError or RecursionError."""
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    if _SURROGATE_ESCAPE.search(text):
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                try:
                    item.encode('utf-8')
                except UnicodeEncodeError:
                    raise ValueError('invalid \\u escape: lone surrogate') from None
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
    return value


def _dumps(value):
    """Compact UTF-8 JSON bytes; ValueError/TypeError if value is not JSON."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False,
                      separators=(',', ':')).encode('utf-8')


def _is_number(value):
    # bool is an int subclass in Python but a distinct JSON type.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_id(value):
    return value is None or isinstance(value, str) or (
        _is_number(value) and (isinstance(value, int) or math.isfinite(value)))


# The largest integer every peer reads exactly (a double's 53-bit mantissa).
_MAX_EXACT_ID = 2 ** 53


def _reply_key(req):
    """The reply key of PROTOCOL.md section 3, or None if none can be read:
    a non-empty reply_to, else a non-empty string id, else an id with an
    integral value of at most 2^53 as decimal text (100.0 and 1e2 -> "100")."""
    if not isinstance(req, dict):
        return None
    reply_to = req.get('reply_to')
    if isinstance(reply_to, str) and reply_to:
        return reply_to
    rid = req.get('id')
    if isinstance(rid, str):
        return rid or None
    if not _is_number(rid) or (isinstance(rid, float) and not rid.is_integer()):
        return None  # also NaN and the infinities, which is_integer refuses
    return str(int(rid)) if abs(rid) <= _MAX_EXACT_ID else None


def _request(method, args, kwargs, **members):
    if args and kwargs:
        raise TypeError('rrpc: pass positional or named params, not both')
    req = {'jsonrpc': '2.0', 'method': method}
    if args:
        req['params'] = list(args)
    elif kwargs:
        req['params'] = kwargs
    req.update(members)
    return req


# --------------------------------------------------------------------------
# Client


class _View:
    """A caller's view of one service in the registry (PROTOCOL.md 9)."""

    def __init__(self, registered, live, max_queue):
        self.registered, self.live, self.max_queue = registered, live, max_queue


_NO_VIEW = _View(False, 0, 0)  # fail fast off, or the registry is out of reach
_GONE = object()  # _wait's answer when the last worker went

# Checks the queue length and pushes in one step, so that concurrent callers
# cannot overshoot max_queue.  The new length, or -1 if full.
_PUSH_SCRIPT = ("if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end "
                "return redis.call('RPUSH', KEYS[1], ARGV[1])")


class Client:
    """Calls rrpc services.  One Redis connection pool; safe to share
    between threads (each call uses its own reply key).

    Like the C client, every call carries a deadline on Redis's clock
    (PROTOCOL.md 7), and with fail_fast=True (the default) the client reads
    the registry (PROTOCOL.md 9): a registered service with no live worker
    fails at once with Unavailable, a wait on a registered service gives up
    with Unavailable when its last worker goes, and a service at its
    max_queue refuses the call with Overloaded.  Services that never
    registered are simply waited on."""

    FRESH_S = 1.0  # how long a service's registry view is trusted
    SLICE_S = 1.0  # wait slice while a registered service is awaited

    def __init__(self, url=None, prefix='', timeout=30, fail_fast=True):
        self.redis = _connect(url)
        self.prefix = prefix
        self.timeout = timeout
        self.fail_fast = fail_fast
        self._clock = _RedisClock()
        self._views = {}  # list key -> (monotonic time read, _View)

    def call(self, service, method, *args, timeout=None, **kwargs):
        """Calls service.method with positional *args or named **kwargs and
        returns the result.  Raises RemoteError, CallTimeout, Unavailable,
        Overloaded, ProtocolError.  timeout (seconds; 0 waits forever) is
        this method's own, never a named param."""
        wait = self.timeout if timeout is None else timeout
        # id, reply key and reply_to are one key, so seed-style workers that
        # only know "reply to the id" reach us as well.
        key = f'{self.prefix}rrpc:reply:{secrets.token_hex(16)}'
        members = {'id': key, 'reply_to': key}
        deadline = self._deadline(wait)
        if deadline is not None:
            members['deadline'] = deadline
        text = _dumps(_request(method, args, kwargs, **members))
        queue = self.prefix + service
        view = self._view(queue, self.FRESH_S)
        if view.registered and not view.live:
            raise Unavailable(f'{service}: registered, but none of its workers is live '
                              '(stopped, or their heartbeat expired)')
        self._push(queue, text, view.max_queue if view.live else 0)
        popped = self._wait(queue, key, wait, view.registered)
        if popped is None or popped is _GONE:
            # Withdraw the request so no worker runs a call nobody awaits.
            self.redis.lrem(queue, 1, text)
            if popped is _GONE:
                raise Unavailable(f'{service}.{method}: the last worker went while we waited')
            raise CallTimeout(f'{service}.{method}: no reply within {wait} s')
        return self._result(popped[1], key)

    def notify(self, service, method, *args, **kwargs):
        """Sends a notification: run by a worker, never answered."""
        self.redis.rpush(self.prefix + service, _dumps(_request(method, args, kwargs)))

    def proxy(self, service):
        """An object whose attribute calls are calls: proxy('calc').add(1, 2)."""
        return _Proxy(self, service)

    def _deadline(self, wait):
        """The call's deadline in ms on Redis's clock, or None without a
        limit or a measured clock (TIME refused, say)."""
        if self._clock.due():
            self._clock.sync(self.redis)
        now = self._clock.now_ms()
        if now is None or not 0 < wait <= 1e8:
            return None
        return now + math.ceil(wait * 1000)

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
        replies = (self.redis.pipeline(transaction=False).time()
                   .zrange('{%s}:workers' % queue, 0, -1, withscores=True)
                   .hget(config, 'max_queue').exists(config)
                   .execute(raise_on_error=False))
        if any(isinstance(r, redis.ResponseError) for r in replies):
            view = _NO_VIEW  # keys refused (an ACL): no registry for us, wait as usual
        else:
            (sec, usec), workers, max_queue, registered = replies
            now_ms = sec * 1000 + usec // 1000
            live = sum(score > now_ms for _, score in workers)
            view = _View(registered > 0, live, int(max_queue or 0))
        self._views[queue] = (time.monotonic(), view)
        return view

    def _push(self, queue, text, max_queue):
        if max_queue <= 0:
            self.redis.rpush(queue, text)
        elif self.redis.eval(_PUSH_SCRIPT, 1, queue, text, max_queue) < 0:
            raise Overloaded(f'{queue}: its queue holds {max_queue} requests (max_queue)')

    def _wait(self, queue, key, wait, sliced):
        """BLPOPs the reply: in one piece, or for a registered service in
        slices, checking between them that a worker is still live.  Returns
        the popped pair, None on timeout, or _GONE."""
        end = time.monotonic() + wait if wait > 0 else None
        while True:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            step = left or 0  # 0: forever
            if sliced:
                step = min(step, self.SLICE_S) if step else self.SLICE_S
            # Redis reads a timeout under 1 ms as 0, "forever".
            popped = self.redis.blpop([key], timeout=max(step, 0.001) if step else 0)
            if popped is not None or not sliced:
                return popped
            view = self._view(queue, self.FRESH_S / 2)
            if view.registered and not view.live:
                return _GONE

    @staticmethod
    def _result(raw, key):
        try:
            resp = _loads(raw.decode('utf-8'))
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


class _Proxy:
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


# --------------------------------------------------------------------------
# Redis's clock, per-method stats and the registry (PROTOCOL.md 7 and 9)


class _RedisClock:
    """The Redis server's clock as seen from here: request deadlines are
    milliseconds on it, so that peers whose own clocks disagree still agree
    on them.  Measured with TIME at start and every 10 s; until a reading
    succeeds (TIME refused, say) deadlines are not judged at all."""

    REFRESH_S = 10.0

    def __init__(self):
        self.offset_ms = None
        self.tried_at = None

    def sync(self, conn):
        """Reads TIME on CONN; keeps the old offset if that fails (and does
        not try again before the next refresh: a refused TIME must not cost
        a round trip per request)."""
        self.tried_at = time.monotonic()
        try:
            sent = time.time() * 1000.0
            sec, usec = conn.time()
            now = time.time() * 1000.0
        except (redis.ConnectionError, redis.TimeoutError):
            self.tried_at = None  # Redis is away: measure as soon as it is back
            return False
        except redis.RedisError:
            return False
        # Redis read its clock about half a round trip before we got it.
        self.offset_ms = (sec * 1000.0 + usec / 1000.0) - (now - (now - sent) / 2)
        return True

    def due(self):
        return self.tried_at is None or time.monotonic() - self.tried_at >= self.REFRESH_S

    def now_ms(self):
        """Redis's time now, in ms, or None if never measured."""
        if self.offset_ms is None:
            return None
        return int(time.time() * 1000.0 + self.offset_ms)


def _latency_bucket(seconds):
    """The histogram bucket of a run time (PROTOCOL.md 9): four per power of
    two of microseconds, bucket 0 below 1 us, the last (128) open-ended."""
    us = seconds * 1e6
    if not us >= 1.0:
        return 0
    m, e = math.frexp(us)  # us = m * 2^e, m in [0.5, 1)
    sub = min(int((2.0 * m - 1.0) * 4.0), 3)
    return min(1 + 4 * (e - 1) + sub, _HIST_LAST)


_HIST_LAST = 128


class _Stats:
    """Per-method counters, added to {L}:mstats with each heartbeat.  The
    serving thread records, the heartbeat thread takes what changed; a lock
    keeps the two apart (held for a dict update, never across I/O)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = {}  # field -> count not yet sent

    def record(self, method, seconds, error):
        fields = [f'calls:{method}', f'h{_latency_bucket(seconds)}:{method}']
        if error:
            fields.append(f'errors:{method}')
        with self._lock:
            for field in fields:
                self._pending[field] = self._pending.get(field, 0) + 1

    def flush(self, conn, key):
        """Sends the deltas; on failure they are kept for the next flush
        (at worst counted twice after a lost reply, never lost silently)."""
        with self._lock:
            taken, self._pending = self._pending, {}
        if not taken:
            return
        try:
            pipe = conn.pipeline(transaction=False)
            for field, count in taken.items():
                pipe.hincrby(key, field, count)
            pipe.execute()
        except Exception:
            with self._lock:
                for field, count in taken.items():
                    self._pending[field] = self._pending.get(field, 0) + count
            raise


class _Registry:
    """One record for this server process in the registry of PROTOCOL.md
    section 9, renewed every interval by a thread with its own connection,
    which also publishes the service's config, clears workers whose
    heartbeat ran out and sends the per-method stats.  stop() removes the
    record at once, so callers fail fast instead of waiting for it to expire."""

    REGISTERED_FOR_MS = 3600000  # {L}:config outlives the last heartbeat by an hour

    def __init__(self, server, url, prefix, interval, ttl, max_queue):
        self.server = server
        self.conn = _connect(url)  # its own: a BLPOP on the workers' must not delay a beat
        list_key = prefix + server.service
        self.services_key = prefix + 'rrpc:services'
        self.workers_key = '{%s}:workers' % list_key
        self.info_key = '{%s}:info' % list_key
        self.config_key = '{%s}:config' % list_key
        self.mstats_key = '{%s}:mstats' % list_key
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # host and pid for people, random digits so that a reused pid is new.
        self.id = f'{self.host}:{self.pid}:{secrets.token_hex(4)}'
        self.interval = interval if interval > 0 else 1.0
        ttl = ttl if ttl > 0 else 5.0
        self.ttl = max(ttl, 2 * self.interval)  # one late beat must not look like a death
        self.max_queue = max(int(max_queue), 0)
        self.stats = _Stats()
        self.record = None
        self._stop = threading.Event()
        self._thread = None
        self._failing = False

    def _record(self):
        methods = []
        for name, fn in self.server.methods.items():
            entry = {'name': name}
            description = getattr(fn, '_rrpc_description', None)
            if description is not None:
                entry['description'] = description
            shape = getattr(fn, '_rrpc_params', None)
            if shape is not None:
                entry['params'] = shape
            methods.append(entry)
        return _dumps({'id': self.id, 'service': self.server.service, 'host': self.host,
                       'pid': self.pid, 'version': self.server.version, 'threads': 1,
                       'started': self.started, 'heartbeat_s': float(self.interval),
                       'ttl_s': float(self.ttl), 'max_queue': self.max_queue, 'shards': 1,
                       'methods': methods})

    def start(self):
        """Registers (the first beat runs here, so that a Redis that refuses
        it fails the start loudly) and starts the heartbeat thread."""
        self.started = time.time()
        self.record = self._record()
        self._stop.clear()
        self.beat()
        self._thread = threading.Thread(target=self._run, name='rrpc-heartbeat', daemon=True)
        self._thread.start()

    def beat(self):
        sec, usec = self.conn.time()
        now_ms = sec * 1000 + usec // 1000
        ttl_ms = int(self.ttl * 1000)
        (self.conn.pipeline(transaction=False)
         .zadd(self.workers_key, {self.id: now_ms + ttl_ms})
         .hset(self.info_key, self.id, self.record)
         .hset(self.config_key, mapping={'max_queue': self.max_queue, 'ttl_ms': ttl_ms,
                                         'shards': 1})
         .sadd(self.services_key, self.server.service)
         .pexpire(self.config_key, self.REGISTERED_FOR_MS)
         .execute())
        # Clear workers whose heartbeat ran out: a killed process cannot.
        before = f'({now_ms}'
        dead = self.conn.zrangebyscore(self.workers_key, '-inf', before)
        if dead:
            # By score, not by id: a worker that beat meanwhile stays.
            (self.conn.pipeline(transaction=False).hdel(self.info_key, *dead)
             .zremrangebyscore(self.workers_key, '-inf', before).execute())
        self.stats.flush(self.conn, self.mstats_key)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                if self._failing:
                    log.warning('%s: heartbeat restored', self.server.service)
                self._failing = False
            except Exception as exc:  # log once per outage; redis-py reconnects
                if not self._failing:
                    log.warning('%s: heartbeat failed: %s', self.server.service, exc)
                self._failing = True

    def stop(self):
        """Sends the last stats, then removes the record: the service stays
        registered, and callers fail fast if no other worker is live."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.stats.flush(self.conn, self.mstats_key)
            (self.conn.pipeline(transaction=False).zrem(self.workers_key, self.id)
             .hdel(self.info_key, self.id).execute())
        except Exception as exc:
            log.warning('%s: cannot remove the record: %s', self.server.service, exc)
        finally:
            self.conn.close()


# --------------------------------------------------------------------------
# Replies and Redis's bad days (PROTOCOL.md 3 and 6)

# The REPLY SCRIPT of PROTOCOL.md section 3, byte for byte: it pushes only
# onto a key that does not exist or onto a list with an expiry, so a reply
# can never put a TTL on (or append to) an application's key, a persistent
# list or another service's backlog.
REPLY_SCRIPT = """\
-- rrpc reply v1: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for KEYS[i].
-- Pushes only onto a reply list: a key that does not exist, or a list that has an expiry.
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k).ok
  if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then
    redis.call('RPUSH', k, ARGV[i + 1])
    redis.call('EXPIRE', k, ARGV[1])
    out[i] = 1
  elseif t == 'list' then
    out[i] = 'list without expiry'
  else
    out[i] = t
  end
end
return out
"""
_REPLY_SHA = hashlib.sha1(REPLY_SCRIPT.encode('utf-8')).hexdigest()

# Error replies that say "not now" rather than "never": the command may
# succeed once a failover, a load, a script or a memory shortage is over.
_TRANSIENT_CODES = {'LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'TRYAGAIN', 'CLUSTERDOWN',
                    'OOM', 'UNBLOCKED', 'NOREPLICAS', 'MISCONF'}
# redis-py strips the code from the errors it maps to classes; put it back.
_CODES = {redis.exceptions.ReadOnlyError: 'READONLY', redis.exceptions.BusyLoadingError: 'LOADING',
          redis.exceptions.NoPermissionError: 'NOPERM', redis.exceptions.NoScriptError: 'NOSCRIPT',
          redis.exceptions.ExecAbortError: 'EXECABORT'}


def _error_text(exc):
    """A Redis error as Redis wrote it (e.g. "READONLY You can't write ...")."""
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None)
    text = str(exc)
    return f'{code} {text}' if code and not text.startswith(code) else text


def _transient(exc):
    """Whether a failed command may succeed if simply tried again later."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True  # also LOADING (BusyLoadingError) and a refused AUTH mid-rotation
    return (isinstance(exc, redis.RedisError) and
            _error_text(exc).split(' ', 1)[0] in _TRANSIENT_CODES)


# What a handler may raise that still ends the worker: the process is being
# told to stop.  Everything else (GeneratorExit, RecursionError, MemoryError,
# an application's own BaseException subclasses) is one call's failure.
_STOPS = (KeyboardInterrupt, SystemExit)


class _GaveUp(Exception):
    """A write abandoned because the worker was told to stop while Redis
    kept failing."""


class _Outage:
    """Logs a Redis outage once when it starts (and again only if its cause
    changes), and once when it ends: never once per try."""

    def __init__(self, name):
        self.name, self.since, self.kind = name, None, None

    def failed(self, exc, what):
        text = _error_text(exc)
        kind = (type(exc).__name__, text.split(' ', 1)[0])
        if self.since is None:
            self.since = time.monotonic()
            log.warning('%s: redis: %s: %s; retrying with backoff', self.name, what, text)
        elif kind != self.kind:
            log.warning('%s: redis: %s: %s; still retrying', self.name, what, text)
        self.kind = kind

    def ended(self):
        if self.since is not None:
            log.warning('%s: redis: working again after %.1f s', self.name,
                        time.monotonic() - self.since)
            self.since = self.kind = None


# --------------------------------------------------------------------------
# Server


def _error(rid, code, message, data=None):
    err = {'code': code, 'message': message}
    if data is not None:
        err['data'] = data
    return {'jsonrpc': '2.0', 'error': err, 'id': rid}


def _invalid_reason(req):
    """Why a decoded JSON value is not a valid request object, or None."""
    if not isinstance(req, dict):
        return 'Invalid Request: not an object'
    if 'id' in req and not _valid_id(req['id']):
        return 'Invalid Request: id must be a string, a number or null'
    if req.get('jsonrpc') != '2.0':
        return 'Invalid Request: jsonrpc must be "2.0"'
    if not isinstance(req.get('method'), str):
        return 'Invalid Request: method must be a string'
    if 'params' in req and not isinstance(req['params'], (list, dict)):
        return 'Invalid Request: params must be an array or an object'
    return None


def _public_methods(obj):
    if isinstance(obj, dict):
        return dict(obj)
    methods = {}
    for name in dir(obj):
        if name.startswith('_'):
            continue
        member = getattr(obj, name)
        if callable(member) and not inspect.isclass(member):
            methods[name] = member
    return methods


class Server:
    """Serves the public methods of obj (or a dict name -> callable) as the
    rrpc service `service`.  Single-threaded: run several processes to scale,
    they share the list.

    With heartbeat=True (the default) serve_forever registers the process
    in the registry (PROTOCOL.md section 9) every heartbeat_interval
    seconds, valid for heartbeat_ttl seconds, publishing max_queue for
    callers; heartbeat=False serves without it (no record, no stats).  The
    built-in method rpc.ping is answered either way.

    Replies go only where PROTOCOL.md section 6 allows (never onto rrpc's
    keys, a registered service's list or a key that is not a reply list);
    reply_prefixes (a list of str or bytes, None = any) further limits reply
    keys to those starting with one of them.  A handler's exception, of any
    class but KeyboardInterrupt and SystemExit, answers -32603; Redis errors
    are logged once per outage and retried with backoff: the worker stops
    only when told to (stop(), SIGINT, SIGTERM)."""

    SERVICES_EVERY_S = 5.0  # how often the set of registered services is read
    STOP_GRACE_S = 5.0  # how long a write is still retried once told to stop

    def __init__(self, service, obj, url=None, prefix='', reply_ttl=60,
                 max_request_bytes=1048576, dead_letter_max=1000, batch_max=1000,
                 heartbeat=True, heartbeat_interval=1.0, heartbeat_ttl=5.0, max_queue=0,
                 reply_prefixes=None):
        self.redis = _connect(url)
        self.service = service
        self.version = 'python-' + VERSION
        self.prefix = prefix
        self.queue = prefix + service
        self.reply_prefixes = (None if reply_prefixes is None else
                               [_key_bytes(p) for p in reply_prefixes])
        self._services = None  # registered names (bytes), None while unknown
        self._services_read_at = None
        self._services_unread = False
        self._outage = _Outage(service)
        self.dead_key = self.queue + ':dead'
        self.stats_key = self.queue + ':stats'
        self.reply_ttl = reply_ttl
        self.max_request_bytes = max_request_bytes
        self.dead_letter_max = dead_letter_max
        self.batch_max = batch_max
        self.methods = _public_methods(obj)
        self.methods.setdefault('rpc.ping', self._rpc_ping)
        self._clock = _RedisClock()
        self._registry = (_Registry(self, url, prefix, heartbeat_interval, heartbeat_ttl,
                                    max_queue) if heartbeat else None)
        # The worker id rpc.ping reports; without a registry it is still unique.
        self.worker_id = (self._registry.id if self._registry else
                          f'{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}')
        self._stopping = False

    @describe('built-in: answers with the worker\'s identity and time')
    @raw_params
    def _rpc_ping(self, _params):
        return {'service': self.service, 'worker': self.worker_id,
                'host': socket.gethostname(), 'pid': os.getpid(), 'version': self.version,
                'time': time.time()}

    def stop(self):
        """Asks serve_forever to return after the request in hand."""
        # A plain flag, not an Event: this runs inside signal handlers, where
        # taking a lock the interrupted code may hold would deadlock.
        self._stopping = True

    def serve_forever(self):
        """Pops and answers requests until stop() or SIGINT/SIGTERM.  Once
        started, no Redis error ends it: each is logged (once per outage)
        and retried with backoff."""
        self.redis.ping()  # an unreachable Redis at start is a setup error: fail loudly
        self._clock.sync(self.redis)
        if self._registry:
            self._registry.start()  # refused (an ACL, say): fail loudly, like the C server
        restore = self._trap_signals()
        backoff = 0.1
        try:
            while not self._stopping:
                try:
                    if self._clock.due():
                        self._clock.sync(self.redis)
                    self._refresh_services()
                    # A short timeout, so a stop request is noticed within 1 s.
                    popped = self.redis.blpop([self.queue], timeout=1)
                    backoff = 0.1
                    self._outage.ended()
                except Exception as exc:  # READONLY, NOPERM, WRONGTYPE, a broken link...
                    self._outage.failed(exc, 'cannot pop requests')
                    self._pause(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if popped is not None:
                    self.handle(popped[1])
        finally:
            restore()
            if self._registry:
                self._registry.stop()

    def _pause(self, seconds):
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(0.05)

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
        except _STOPS:
            raise
        except BaseException as exc:  # a bug here must not take the worker down
            log.exception('%s: failed to handle a message', self.service)
            try:
                self._dead(raw,
                           f'internal error: {type(exc).__name__}: {exc}')
            except Exception:
                log.exception('%s: could not record the dead letter either', self.service)

    def _handle(self, raw):
        if len(raw) > self.max_request_bytes:
            return self._dead(raw,
                              f'too large: {len(raw)} bytes (limit {self.max_request_bytes})')
        try:
            text = raw.decode('utf-8')
        except UnicodeDecodeError:
            return self._dead(raw, 'invalid UTF-8')
        try:
            msg = _loads(text)
        except (ValueError, RecursionError) as exc:
            return self._dead(text, f'parse error: {exc}')
        if not isinstance(msg, list):
            resp = self._answer(msg)
            if resp is not None:
                self._deliver(text, _reply_key(msg), resp)
        elif not msg:
            self._deliver(text, None, self._encode(_error(None, INVALID_REQUEST,
                                                          'Invalid Request: empty batch')))
        elif len(msg) > self.batch_max:
            key = next(filter(None, map(_reply_key, msg)), None)
            self._deliver(text, key, self._encode(_error(
                None, INVALID_REQUEST,
                f'Invalid Request: batch of {len(msg)} elements (limit {self.batch_max})')))
        else:
            parts, key = [], None
            for req in msg:
                resp = self._answer(req)
                if resp is not None:
                    parts.append(resp)
                    key = key or _reply_key(req)
            if parts:  # a batch of notifications only is answered by nothing
                self._deliver(text, key, b'[' + b','.join(parts) + b']')

    def _answer(self, req):
        """The encoded response to one request object, or None for a
        notification."""
        reason = _invalid_reason(req)
        if reason:
            rid = req.get('id') if isinstance(req, dict) and _valid_id(req.get('id')) else None
            return self._encode(_error(rid, INVALID_REQUEST, reason))
        outcome = self._expired(req) or self._run(req['method'], req.get('params'))
        if 'id' not in req:
            return None
        return self._encode(dict(jsonrpc='2.0', **outcome, id=req['id']))

    def _expired(self, req):
        """The -32000 outcome if the request's deadline (PROTOCOL.md 7) has
        passed on Redis's clock, else None.  A deadline that is not a
        positive integer is ignored, and so are all of them while the clock
        is unmeasured."""
        deadline = req.get('deadline')
        if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0:
            return None
        now = self._clock.now_ms()
        if now is None or now < deadline:
            return None
        return {'error': {'code': DEADLINE_EXCEEDED, 'message': 'Deadline exceeded',
                          'data': {'deadline': deadline, 'now': now}}}

    def _run(self, method, params):
        """Runs a handler; returns {'result': ...} or {'error': {...}}.
        Counts calls of known methods, with their run time, for the registry."""
        fn = self.methods.get(method)
        if fn is None:
            return {'error': {'code': METHOD_NOT_FOUND, 'message': f'Method not found: {method}'}}
        started = time.monotonic()
        outcome = self._call(method, fn, params)
        if self._registry:
            self._registry.stats.record(method, time.monotonic() - started, 'error' in outcome)
        return outcome

    def _call(self, method, fn, params):
        if getattr(fn, '_rrpc_raw_params', False):
            args, kwargs = (params,), {}
        elif isinstance(params, dict):
            args, kwargs = (), params
        else:
            args, kwargs = tuple(params or ()), {}
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins cannot be inspected
            signature = None
        if signature is not None:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                return {'error': {'code': INVALID_PARAMS, 'message': f'Invalid params: {exc}'}}
        try:
            return {'result': fn(*args, **kwargs)}
        except RpcError as exc:
            return {'error': exc.to_error()}
        except _STOPS:
            raise
        except BaseException:  # GeneratorExit, RecursionError, MemoryError, anything
            # The details go to the log, not to the caller: they may expose internals.
            log.exception('%s.%s failed', self.service, method)
            return {'error': {'code': INTERNAL_ERROR, 'message': 'Internal error'}}

    def _encode(self, resp):
        try:
            return _dumps(resp)
        except _STOPS:
            raise
        except BaseException as exc:  # TypeError, ValueError, RecursionError, a result's own
            log.error('%s: response is not JSON: %s', self.service, exc)
            return _dumps(_error(resp.get('id'), INTERNAL_ERROR,
                                 'Internal error: result is not JSON'))

    # -- writing ------------------------------------------------------------

    def _own_key(self, key):
        """Whether KEY (bytes) is one of the service's own keys (PROTOCOL.md
        6): its list, dead letters, stats or anything under its hash tag
        {L}.  An answer pushed onto the list would be popped and answered
        forever."""
        queue = self.queue.encode('utf-8')
        if key in (queue, self.dead_key.encode('utf-8'), self.stats_key.encode('utf-8')):
            return True
        return len(key) > len(queue) + 2 and key.startswith(b'{' + queue + b'}')

    def _rrpc_key(self, key):
        """Whether KEY (bytes) is one of rrpc's keys of any service, by its name."""
        mine = self.prefix.encode('utf-8') + b'rrpc:'
        return ((key.startswith(mine) and not key.startswith(mine + b'reply:')) or
                (key.startswith(b'{') and b'}:' in key) or
                key.endswith(b':dead') or key.endswith(b':stats'))

    def _request_list(self, key):
        """Whether KEY (bytes) is a registered service's list or shard list."""
        prefix = self.prefix.encode('utf-8')
        if self._services is None or not key.startswith(prefix):
            return False
        name = key[len(prefix):]
        if name in self._services:
            return True
        base, sep, shard = name.rpartition(b'#')
        return bool(sep) and shard.isdigit() and base in self._services

    def _refusal(self, key):
        """Why KEY (bytes) may not be a reply key (PROTOCOL.md 6), or None."""
        if self._own_key(key):
            return "one of the service's own keys"
        if self._rrpc_key(key):
            return "one of rrpc's keys"
        if self._request_list(key):
            return "a service's request list"
        if self.reply_prefixes is not None and not any(map(key.startswith, self.reply_prefixes)):
            return 'not under an allowed prefix'
        return None

    def _refresh_services(self):
        """Reads the set of registered services at start and then at most
        every SERVICES_EVERY_S; while it cannot be read, that rule is off."""
        now = time.monotonic()
        if self._services_read_at is not None and \
                now - self._services_read_at < self.SERVICES_EVERY_S:
            return
        self._services_read_at = now
        try:
            self._services = set(self.redis.smembers(self.prefix + 'rrpc:services'))
            self._services_unread = False
        except redis.RedisError as exc:
            if _transient(exc):  # Redis away: keep what we knew, read again next time
                self._services_read_at = None
                return
            if not self._services_unread:  # refused (an ACL), a hash in its place: once
                log.warning('%s: cannot read the registered services (%s): until it can, their '
                            'request lists are not refused as reply keys by name',
                            self.service, _error_text(exc))
            self._services, self._services_unread = None, True

    def _deliver(self, text, key, body):
        if key is None:
            return self._dead(text, 'no reply key', body)
        key = _key_bytes(key)
        refusal = self._refusal(key)
        if refusal:
            return self._dead(text, 'reply key refused: ' + refusal, body)
        try:
            out = self._persist(lambda: self._push_reply(key, body), 'cannot push a reply')
        except _GaveUp as exc:
            return log.error('%s: reply lost on the way out: %s', self.service, exc)
        except redis.RedisError as exc:  # NOPERM on the key, say: never "not now"
            return self._dead(text, f'reply failed: {_error_text(exc)}', body)
        status = out[0] if isinstance(out, list) and out else out
        if status != 1:
            what = status.decode('utf-8', 'replace') if isinstance(status, bytes) else str(status)
            self._dead(text, 'reply key refused: ' + what, body)

    def _push_reply(self, key, body):
        """Runs the REPLY SCRIPT by its SHA, loading it when Redis lacks it
        (a restart, SCRIPT FLUSH, a failover)."""
        try:
            return self.redis.evalsha(_REPLY_SHA, 1, key, self.reply_ttl, body)
        except redis.exceptions.NoScriptError:
            self.redis.script_load(REPLY_SCRIPT)
            return self.redis.evalsha(_REPLY_SHA, 1, key, self.reply_ttl, body)

    def _dead(self, text, reason, response=None):
        """Records a message that cannot be answered; never drops it silently."""
        log.warning('%s: dead letter: %s', self.service, reason)
        letter = {'reason': reason, 'time': time.time(), 'service': self.service}
        # Bytes that are not UTF-8 cannot be a JSON string: keep them exactly,
        # base64-encoded (PROTOCOL.md section 6).
        if isinstance(text, bytes):
            try:
                letter['message'] = text.decode('utf-8')
            except UnicodeDecodeError:
                letter['message_base64'] = base64.b64encode(text).decode('ascii')
        else:
            letter['message'] = text
        if response is not None:
            letter['response'] = json.loads(response)
        body = json.dumps(letter, ensure_ascii=False).encode('utf-8', 'replace')
        try:
            self._persist(lambda: self.redis.pipeline(transaction=False)
                          .rpush(self.dead_key, body)
                          .ltrim(self.dead_key, -self.dead_letter_max, -1)
                          .hincrby(self.stats_key, 'dead', 1).execute(),
                          'cannot record a dead letter')
        except (redis.RedisError, _GaveUp) as exc:
            log.error('%s: dead letter lost (%s): %s', self.service, _error_text(exc), reason)

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
            except redis.RedisError as exc:
                if not _transient(exc):
                    raise
                self._outage.failed(exc, what)
                if self._stopping:
                    give_up_at = give_up_at or time.monotonic() + self.STOP_GRACE_S
                    if time.monotonic() >= give_up_at:
                        raise _GaveUp(_error_text(exc)) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _key_bytes(key):
    """A key as Redis sees it: str keys are sent as UTF-8."""
    return key if isinstance(key, bytes) else key.encode('utf-8', 'surrogatepass')
