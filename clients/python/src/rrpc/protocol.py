"""protocol.py -- the rules of JSON-RPC 2.0 as rrpc speaks them, with no I/O.

Strict JSON in and out, request validation, the reply key of a request and
of a batch (docs/PROTOCOL.md sections 2 to 5), the deadline member
(section 7) and the error codes: everything both ends agree on before a
byte goes to Redis, so that it can be tested without one.
"""

import json
import math
import re

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
DEADLINE_EXCEEDED = -32000
BATCH_TIME_EXCEEDED = -32001
CANCELLED = -32002  # the caller cancelled it (PROTOCOL.md 7, cancel_key)

# The largest integer every peer reads exactly (a double's 53-bit mantissa).
MAX_EXACT_ID = 2 ** 53


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


def loads(text):
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


def dumps(value):
    """Compact UTF-8 JSON bytes; ValueError/TypeError if value is not JSON."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False,
                      separators=(',', ':')).encode('utf-8')


def is_number(value):
    # bool is an int subclass in Python but a distinct JSON type.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def valid_id(value):
    return value is None or isinstance(value, str) or (
        is_number(value) and (isinstance(value, int) or math.isfinite(value)))


def reply_key(req):
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
    if not is_number(rid) or (isinstance(rid, float) and not rid.is_integer()):
        return None  # also NaN and the infinities, which is_integer refuses
    return str(int(rid)) if abs(rid) <= MAX_EXACT_ID else None


def invalid_reason(req):
    """Why a decoded JSON value is not a valid request object, or None."""
    if not isinstance(req, dict):
        return 'Invalid Request: not an object'
    if 'id' in req and not valid_id(req['id']):
        return 'Invalid Request: id must be a string, a number or null'
    if req.get('jsonrpc') != '2.0':
        return 'Invalid Request: jsonrpc must be "2.0"'
    if not isinstance(req.get('method'), str):
        return 'Invalid Request: method must be a string'
    if 'params' in req and not isinstance(req['params'], (list, dict)):
        return 'Invalid Request: params must be an array or an object'
    return None


def is_notification(req):
    """Whether REQ is a valid notification: run, never answered."""
    return invalid_reason(req) is None and 'id' not in req


def batch_reply_key(batch):
    """A batch's reply key (PROTOCOL.md section 5): that of its first element
    that is answered -- not a valid notification, whose reply_to does not
    count -- and has one; None if there is none.  The same for a batch too
    long to run, which is answered as a whole."""
    for req in batch:
        if not is_notification(req):
            key = reply_key(req)
            if key is not None:
                return key
    return None


def deadline_of(req):
    """The request's deadline (PROTOCOL.md 7) in ms, or None: only a JSON
    integer greater than 0 counts."""
    deadline = req.get('deadline')
    if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0:
        return None
    return deadline


def request(method, args, kwargs, **members):
    """A request object: positional ARGS or named KWARGS, never both."""
    if args and kwargs:
        raise TypeError('rrpc: pass positional or named params, not both')
    req = {'jsonrpc': '2.0', 'method': method}
    if args:
        req['params'] = list(args)
    elif kwargs:
        req['params'] = kwargs
    req.update(members)
    return req


def error(rid, code, message, data=None):
    """An error response object."""
    err = {'code': code, 'message': message}
    if data is not None:
        err['data'] = data
    return {'jsonrpc': '2.0', 'error': err, 'id': rid}
