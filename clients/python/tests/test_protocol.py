"""test_protocol.py -- the JSON-RPC rules of rrpc.protocol (PROTOCOL.md 2-5, 7), no Redis."""

import pytest

from rrpc import protocol


@pytest.mark.parametrize('req, key', [
    ({'reply_to': 'k', 'id': 'i'}, 'k'),
    ({'reply_to': '', 'id': 'i'}, 'i'),         # an empty reply_to is ignored
    ({'reply_to': 7, 'id': 'i'}, 'i'),          # so is one that is not a string
    ({'id': 'abc'}, 'abc'),
    ({'id': ''}, None),
    ({'id': 42}, '42'),
    ({'id': -7}, '-7'),
    ({'id': 100.0}, '100'),
    ({'id': 1e2}, '100'),
    ({'id': -0.0}, '0'),
    ({'id': 1.5}, None),
    ({'id': 2 ** 53}, str(2 ** 53)),
    ({'id': 2 ** 53 + 1}, None),
    ({'id': None}, None),
    ({}, None),
    ([], None),
])
def test_reply_key(req, key):
    assert protocol.reply_key(req) == key


def test_strict_json():
    assert protocol.loads('{"a":[1,2.5,"\\u00e9"]}') == {'a': [1, 2.5, 'é']}
    for text in ['NaN', '[Infinity]', '1e400', '"\\ud800"', '{"\\udc00":1}']:
        with pytest.raises(ValueError):
            protocol.loads(text)
    assert protocol.dumps({'a': 'é'}) == '{"a":"é"}'.encode('utf-8')


@pytest.mark.parametrize('req, reason', [
    ({'jsonrpc': '2.0', 'method': 'm'}, None),
    ({'jsonrpc': '2.0', 'method': 'm', 'params': [], 'id': None}, None),
    ('x', 'not an object'),
    ({'jsonrpc': '1.0', 'method': 'm'}, 'jsonrpc'),
    ({'jsonrpc': '2.0', 'method': 1}, 'method'),
    ({'jsonrpc': '2.0', 'method': 'm', 'params': 3}, 'params'),
    ({'jsonrpc': '2.0', 'method': 'm', 'id': True}, 'id'),
    ({'jsonrpc': '2.0', 'method': 'm', 'id': {}}, 'id'),
])
def test_invalid_reason(req, reason):
    got = protocol.invalid_reason(req)
    assert (got is None) if reason is None else (reason in got)


def _call(key, rid='x'):
    return {'jsonrpc': '2.0', 'method': 'm', 'id': rid, 'reply_to': key}


def _note(key):
    return {'jsonrpc': '2.0', 'method': 'm', 'reply_to': key}


def test_batch_reply_key():
    # A valid notification's reply_to does not count; an invalid element's does.
    assert protocol.batch_reply_key([_note('n'), _call('a'), _call('b')]) == 'a'
    assert protocol.batch_reply_key([_note('n'), {'jsonrpc': '1.0', 'reply_to': 'bad'},
                                     _call('a')]) == 'bad'
    assert protocol.batch_reply_key([_note('n'), _note('m')]) is None
    null_id = {'jsonrpc': '2.0', 'method': 'm', 'id': None}  # answered, but has no key
    assert protocol.batch_reply_key([null_id, _call('a')]) == 'a'
    assert protocol.batch_reply_key([5, _call('a')]) == 'a'


@pytest.mark.parametrize('value, deadline', [
    (1764057600123, 1764057600123), (1, 1), (0, None), (-5, None), (1.5, None),
    (1764057600123.0, None), ('1', None), (True, None), (None, None)])
def test_deadline_of(value, deadline):
    assert protocol.deadline_of({'deadline': value}) == deadline


def test_request_shapes():
    assert protocol.request('add', (1, 2), {}) == {'jsonrpc': '2.0', 'method': 'add',
                                                   'params': [1, 2]}
    assert protocol.request('add', (), {'a': 1}, id='k')['params'] == {'a': 1}
    assert 'params' not in protocol.request('ping', (), {})
    with pytest.raises(TypeError):
        protocol.request('add', (1,), {'b': 2})
