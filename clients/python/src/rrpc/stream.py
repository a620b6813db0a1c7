"""stream.py -- progress and cancellation inside a handler (PROTOCOL.md 7).

A handler sends progress with rrpc.progress(value): pushed onto the
request's reply key at once, before its answer, but only when the caller
asked ("progress": true), so a seed-style caller never sees one.  It sees
its caller's cancel with rrpc.cancelled(): the request's "cancel_key"
exists, asked of Redis at most every 50 ms and remembered.  Calls made
inside a handler carry its cancel key, so cancelling one request cancels
the calls it made.
"""

import contextlib
import contextvars
import time

from .protocol import dumps
from .replies import key_bytes
from .transport import push_reply

LOOK_EVERY_S = 0.05

_current = contextvars.ContextVar('rrpc_stream', default=None)


class _Handled:
    __slots__ = ('server', 'key', 'id', 'wants', 'cancel_key', 'cancelled', 'looked_at', 'done')

    def __init__(self, server, req, key):
        self.server, self.id = server, req.get('id')
        # Over AMQP (no Redis) neither progress nor cancel keys exist yet.
        redis = getattr(server, 'redis', None) is not None
        self.key = key_bytes(key) if redis and key is not None and 'id' in req else None
        self.wants = req.get('progress') is True and self.key is not None
        ck = req.get('cancel_key')
        self.cancel_key = ck if redis and isinstance(ck, str) and ck else None
        self.cancelled, self.looked_at, self.done = False, 0.0, False


@contextlib.contextmanager
def handling(server, req, key):
    """The block runs REQ's handler; KEY is its reply key (None in a batch:
    no progress)."""
    handled = _Handled(server, req, key)
    token = _current.set(handled)
    try:
        yield handled
    finally:
        handled.done = True
        _current.reset(token)


def progress(value):
    """Sends VALUE (JSON) as progress of the request being handled, if its
    caller asked; returns True if sent.  RuntimeError outside a handler,
    e.g. after its answer."""
    h = _current.get()
    if h is None or h.done:
        raise RuntimeError('rrpc.progress: no request is being handled (after its answer?)')
    if not h.wants:
        return False
    refusal = h.server.rules.refusal(h.key)
    if refusal:
        return False
    body = dumps({'jsonrpc': '2.0', 'method': 'rpc.progress',
                  'params': {'id': h.id, 'progress': value}})
    out = push_reply(h.server.redis, h.key, h.server.reply_ttl, body)
    status = out[0] if isinstance(out, list) and out else out
    return status == 1


def cancelled():
    """True if the caller of the request being handled cancelled it."""
    h = _current.get()
    if h is None or h.cancel_key is None or h.done:
        return False
    if h.cancelled:
        return True
    now = time.monotonic()
    if now - h.looked_at >= LOOK_EVERY_S:
        h.looked_at = now
        h.cancelled = h.server.redis.exists(h.cancel_key) > 0
    return h.cancelled


def inherited_cancel_key():
    """The cancel key calls made inside a handler carry, or None."""
    h = _current.get()
    return h.cancel_key if h is not None and not h.done else None
