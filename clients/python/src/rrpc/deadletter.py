"""deadletter.py -- the record kept for a message no one can be answered for.

PROTOCOL.md section 6: rather than drop what it cannot answer, a worker
files the original text with the reason and time on <service>:dead.  Bytes
that are not UTF-8 cannot be a JSON string, so they are kept exactly as
base64 instead.  A message (or an undeliverable response) larger than the
worker's size limit is not kept whole: its first bytes, its length and its
SHA-1 are, so that a hostile sender cannot make a worker build -- or Redis
refuse -- a huge record.  No I/O here: the server pushes what this builds.
"""

import base64
import hashlib
import json
import re
import time

from . import trace

PREFIX_BYTES = 4096  # the most of an oversized text a dead letter keeps


def utf8_cut(data, limit):
    """The length of the longest start of DATA (bytes) of at most LIMIT bytes
    that does not end inside a UTF-8 sequence, so a valid text stays valid."""
    if len(data) <= limit:
        return len(data)
    n = limit
    # Back up over continuation bytes (10xxxxxx) to the start of the
    # sequence that straddles the cut, and drop it whole (as the C worker).
    for _ in range(4):
        if n == 0 or data[n] & 0xC0 != 0x80:
            break
        n -= 1
    return n


def _set_bytes(letter, name, data):
    """NAME as a JSON string if DATA is UTF-8, else NAME_base64."""
    try:
        letter[name] = data.decode('utf-8')
    except UnicodeDecodeError:
        letter[name + '_base64'] = base64.b64encode(data).decode('ascii')


def _set_bounded(letter, name, data):
    """NAME_prefix (or NAME_prefix_base64), NAME_bytes and NAME_sha1."""
    _set_bytes(letter, name + '_prefix', data[:utf8_cut(data, PREFIX_BYTES)])
    letter[name + '_bytes'] = len(data)
    letter[name + '_sha1'] = hashlib.sha1(data).hexdigest()


def _as_bytes(text):
    return text if isinstance(text, bytes) else text.encode('utf-8', 'surrogatepass')


_TRACE_MEMBER = re.compile(rb'"traceparent":"([^"]*)"')


def _trace_of(data, keep):
    """The valid traceparent of the message (a batch's first that has one),
    so that a dead letter can be found by its trace; a message too large to
    parse is searched as text, in the prefix the record keeps."""
    if len(data) > keep:
        for m in _TRACE_MEMBER.finditer(data[:PREFIX_BYTES]):
            found = trace.parse(m.group(1).decode('ascii', 'replace'))
            if found:
                return found
        return None
    try:
        msg = json.loads(data.decode('utf-8'))
    except (ValueError, RecursionError):
        return None
    for req in msg if isinstance(msg, list) else [msg]:
        found = isinstance(req, dict) and trace.parse(req.get('traceparent'))
        if found:
            return found
    return None


def record(service, reason, message, response=None, keep=1048576, now=None):
    """The dead letter (a dict) for MESSAGE (bytes or str), with the encoded
    RESPONSE (bytes) that could not be delivered, if any.  Texts longer
    than KEEP bytes (the worker's size limit) are kept bounded."""
    letter = {'reason': reason, 'time': time.time() if now is None else now,
              'service': service}
    data = _as_bytes(message)
    if len(data) <= keep:
        _set_bytes(letter, 'message', data)
    else:
        _set_bounded(letter, 'message', data)
    traceparent = _trace_of(data, keep)
    if traceparent:
        letter['traceparent'] = traceparent
    if response is not None:
        if len(response) <= keep:
            letter['response'] = json.loads(response)
        else:
            _set_bounded(letter, 'response', response)
    return letter


def encode(letter):
    """The record as the UTF-8 JSON text pushed onto <service>:dead."""
    return json.dumps(letter, ensure_ascii=False).encode('utf-8', 'replace')
