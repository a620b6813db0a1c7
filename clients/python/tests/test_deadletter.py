"""test_deadletter.py -- the dead-letter record and its bounded copies (PROTOCOL.md 6)."""

import base64
import hashlib
import json

from rrpc import deadletter


def test_small_message_kept_whole():
    letter = deadletter.record('calc', 'parse error: x', b'garbage', now=1.5)
    assert letter == {'reason': 'parse error: x', 'time': 1.5, 'service': 'calc',
                      'message': 'garbage'}


def test_invalid_utf8_kept_exactly_as_base64():
    raw = b'\xff\xfe{"a":1}'
    letter = deadletter.record('calc', 'invalid UTF-8', raw)
    assert 'message' not in letter
    assert base64.b64decode(letter['message_base64']) == raw


def test_message_at_the_limit_is_kept_whole():
    raw = b'x' * 1000
    assert deadletter.record('calc', 'r', raw, keep=1000)['message'] == raw.decode()


def test_oversized_message_is_bounded():
    raw = 'a'.encode() * 4095 + 'é'.encode() * 3000  # the cut at 4096 splits an é
    letter = deadletter.record('calc', 'too large', raw, keep=1000)
    assert 'message' not in letter and 'message_base64' not in letter
    assert letter['message_prefix'] == 'a' * 4095  # cut before the straddling sequence
    assert letter['message_bytes'] == len(raw)
    assert letter['message_sha1'] == hashlib.sha1(raw).hexdigest()


def test_oversized_invalid_utf8_prefix_is_base64():
    raw = b'\xff' * 10000
    letter = deadletter.record('calc', 'too large', raw, keep=5000)
    assert base64.b64decode(letter['message_prefix_base64']) == raw[:4096]
    assert letter['message_bytes'] == 10000


def test_response_kept_whole_or_bounded():
    small = b'{"jsonrpc":"2.0","result":1,"id":null}'
    assert deadletter.record('calc', 'no reply key', b'{}', small)['response'] == json.loads(small)
    big = b'{"jsonrpc":"2.0","result":"' + b'y' * 6000 + b'","id":null}'
    letter = deadletter.record('calc', 'no reply key', b'{}', big, keep=5000)
    assert 'response' not in letter
    assert letter['response_prefix'] == big[:4096].decode()
    assert letter['response_bytes'] == len(big)
    assert letter['response_sha1'] == hashlib.sha1(big).hexdigest()
    assert len(deadletter.encode(letter)) < 4096 + 500


def test_utf8_cut():
    assert deadletter.utf8_cut(b'abc', 10) == 3
    assert deadletter.utf8_cut('😀'.encode() * 2, 5) == 4
    assert deadletter.utf8_cut('😀'.encode() * 2, 4) == 4
    assert deadletter.utf8_cut('😀'.encode() * 2, 3) == 0
