'use strict';
// protocol.test.js -- strict JSON, reply keys and validation, without Redis.

const test = require('node:test');
const assert = require('node:assert/strict');
const p = require('../lib/protocol');
const { latencyBucket } = require('../lib/registry');
const { record, utf8Cut } = require('../lib/deadletter');

test('integers beyond 2^53 stay exact, both ways', () => {
  const v = p.loads('[9007199254740993, -9223372036854775808, 18446744073709551616, 1.5, 100.0]');
  assert.deepEqual(v, [9007199254740993n, -9223372036854775808n, 18446744073709551616n, 1.5, 100]);
  assert.equal(p.dumps(v), '[9007199254740993,-9223372036854775808,18446744073709551616,1.5,100]');
});

test('what the other peers refuse is refused', () => {
  for (const text of ['NaN', '[1,]', '{"a":1,}', '01', '"\\ud800"', '[1e400]', '/*c*/1', "'x'", '"\t"',
    '\ufeff{}', '[' .repeat(2049) + ']'.repeat(2049), '{"a" 1}', '1 2', '']) {
    assert.throws(() => p.loads(text), SyntaxError, JSON.stringify(text.slice(0, 30)));
  }
  assert.equal(p.loads('[' .repeat(2048) + ']'.repeat(2048)).length, 1);
  assert.equal(p.loads('"\\ud83d\\ude80"'), '🚀');
  assert.equal(Object.keys(p.loads('{"__proto__": 1}'))[0], '__proto__');
});

test('dumps refuses what is not JSON and writes reals as reals', () => {
  assert.equal(p.dumps({ a: new p.Real(10), b: new p.Real(2.5), c: undefined, d: [undefined] }),
    '{"a":10.0,"b":2.5,"d":[null]}');
  for (const bad of [NaN, Infinity, () => 1, Symbol('s')]) assert.throws(() => p.dumps([bad]));
  const cyclic = {};
  cyclic.self = cyclic;
  assert.throws(() => p.dumps(cyclic), TypeError);
});

test('reply keys follow PROTOCOL.md section 3', () => {
  const key = (text) => p.replyKey(p.loads(text));
  assert.equal(key('{"id": 100.0}'), '100');
  assert.equal(key('{"id": 1e2}'), '100');
  assert.equal(key('{"id": -0.0}'), '0');
  assert.equal(key('{"id": -7}'), '-7');
  assert.equal(key('{"id": 9007199254740992}'), '9007199254740992');
  assert.equal(key('{"id": -9007199254740992}'), '-9007199254740992');
  for (const id of ['9007199254740993', '1.5', '1e300', '""', 'null', 'true', '{}']) {
    assert.equal(key(`{"id": ${id}}`), null, id);
  }
  assert.equal(key('{"id": "x", "reply_to": ""}'), 'x');
  assert.equal(key('{"id": "x", "reply_to": 5}'), 'x');
  assert.equal(key('{"id": 5, "reply_to": "k\\u0000"}'), 'k\0');
  assert.equal(p.batchReplyKey(p.loads('[{"jsonrpc":"2.0","method":"a","reply_to":"n"},{"id":"",' +
    '"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"a","id":7.0}]')), '7');
});

test('deadlines: only a positive JSON integer counts', () => {
  for (const [text, want] of [['5', 5], ['1.5', null], ['1e12', null], ['1764057600123.0', null], ['1764057600123', 1764057600123], ['"5"', null], ['0', null], ['-5', null],
    ['true', null]]) {
    const got = p.deadlineOf(p.loads(`{"deadline": ${text}}`));
    assert.equal(got, want, text);
  }
});

test('latency buckets follow PROTOCOL.md 9', () => {
  const lower = (b) => 2 ** Math.floor((b - 1) / 4) * (1 + ((b - 1) % 4) / 4);
  assert.deepEqual([1, 1.3, 3, 1000, 1024].map((us) => latencyBucket(us / 1e6)), [1, 2, 7, 40, 41]);
  for (let b = 1; b < 128; b++) {
    assert.equal(latencyBucket(lower(b) / 1e6), b);
    assert.equal(latencyBucket(lower(b + 1) * (1 - 1e-9) / 1e6), b);
  }
  assert.equal(latencyBucket(0.5e-6), 0);
  assert.equal(latencyBucket(1e6), 128);
});

test('dead letters keep bounded copies of what is too large', () => {
  const big = Buffer.concat([Buffer.from('é'.repeat(3000)), Buffer.from([0xff])]);
  const letter = JSON.parse(record('s', 'too large', big, undefined, 100, 5));
  assert.equal(letter.message_bytes, big.length);
  assert.equal(Buffer.byteLength(letter.message_prefix), 4096);
  assert.match(letter.message_sha1, /^[0-9a-f]{40}$/);
  assert.equal(utf8Cut(Buffer.from('aé'), 2), 1);
  const small = JSON.parse(record('s', 'invalid UTF-8', Buffer.from([0xff, 0x41]), '{"id":1}', 100, 5.0));
  assert.equal(small.message_base64, '/0E=');
  assert.deepEqual(small.response, { id: 1 });
  assert.match(record('s', 'x', 'm', undefined, 100, 5), /"time":5\.0,/);
});
