"""trace.py -- W3C Trace Context for requests (PROTOCOL.md section 7).

The rules for a received traceparent, new ones, and the request the current
thread (or task) is handling, in a contextvar: calls made from inside a
handler continue its trace and, like the C peer's, get no more time than its
deadline leaves.  Ids come from random.getrandbits (seeded once, reseeded by
Python in a forked child): unlikely to collide, not secret, no syscall per
call.
"""

import contextlib
import contextvars
import random
import re

LENGTH = 55  # a version-00 traceparent
STATE_MAX = 512
_FIELDS = re.compile(r'[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z')
_STATE = re.compile(r'[\x20-\x7e]*\Z')

# What the current thread or task is handling: (traceparent, tracestate,
# deadline) or None.
_handled = contextvars.ContextVar('rrpc_handled_request', default=None)


def parse(value):
    """A received traceparent as version 00, or None if the recommendation
    calls it invalid: version ff, a version-00 value that is not exactly 55
    characters, a later one not followed by '-' after them, anything but
    lowercase hex, an all-zero trace or parent id."""
    if not isinstance(value, str) or len(value) < LENGTH or not value.isascii():
        return None
    head = value[:LENGTH]
    if not _FIELDS.match(head) or head.startswith('ff'):
        return None
    if len(value) != LENGTH if head.startswith('00') else (len(value) > LENGTH and
                                                         value[LENGTH] != '-'):
        return None
    if not head[3:35].strip('0') or not head[36:52].strip('0'):
        return None
    return '00' + head[2:]


def state_ok(value):
    """Whether VALUE may travel as a tracestate: at most 512 printable
    ASCII characters."""
    return isinstance(value, str) and len(value) <= STATE_MAX and bool(_STATE.match(value))


def _random_hex(bits):
    while True:
        v = random.getrandbits(bits)
        if v:
            return format(v, '0%dx' % (bits // 4))


def fresh():
    """A new trace: random ids, flags 00 (rrpc records no spans)."""
    return f'00-{_random_hex(128)}-{_random_hex(64)}-00'


def child(traceparent):
    """The same trace and flags with a new parent id."""
    return traceparent[:36] + _random_hex(64) + traceparent[52:]


def outgoing(traceparent=None, tracestate=None):
    """(traceparent, tracestate) for a request: the caller's (ValueError if
    invalid), else the handled request's continued, else a new trace."""
    if tracestate is not None and not state_ok(tracestate):
        raise ValueError('rrpc: tracestate: at most 512 printable ASCII characters')
    if traceparent is not None:
        parsed = parse(traceparent)
        if parsed is None:
            raise ValueError(f'rrpc: not a valid W3C traceparent: {traceparent!r}')
        return parsed, tracestate
    handled = _handled.get()
    if handled is not None and handled[0] is not None:
        return child(handled[0]), tracestate if tracestate is not None else handled[1]
    return fresh(), tracestate


def current():
    """(traceparent, tracestate, deadline) of the request being handled, or None."""
    return _handled.get()


@contextlib.contextmanager
def handling(req):
    """The block runs as the handler of REQ (a request dict)."""
    traceparent = parse(req.get('traceparent'))
    tracestate = req.get('tracestate') if traceparent and state_ok(req.get('tracestate')) \
        else None
    deadline = req.get('deadline')
    if not (type(deadline) is int and deadline > 0):
        deadline = None
    token = _handled.set((traceparent, tracestate, deadline))
    try:
        yield
    finally:
        _handled.reset(token)


def log_suffix(traceparent):
    """' (trace ID)' for a log line, or ''."""
    return f' (trace {traceparent[3:35]})' if traceparent else ''


def current_traceparent():
    """The handled request's traceparent ('00-<trace id>-<parent id>-<flags>'),
    or None outside a handler or when it carried none (or an invalid one,
    which is ignored)."""
    handled = _handled.get()
    return handled[0] if handled else None


def current_tracestate():
    """The handled request's tracestate, or None."""
    handled = _handled.get()
    return handled[1] if handled else None
