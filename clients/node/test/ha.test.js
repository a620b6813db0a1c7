'use strict';
// ha.test.js -- redis+sentinel:// and redis+cluster:// URLs as the Node peer
// reads them (lib/ha.js), the same forms and refusals as src/core/url.c, and
// the key each command is routed by on a Cluster.  Following a failover and
// serving on a real Cluster: tests/scale/test_node_ha.sh (ctest scale_node_ha).

const test = require('node:test');
const assert = require('node:assert/strict');
const { parse, firstKey } = require('../lib/ha');
const { rrpc } = require('./helper');

test('Sentinel URLs: nodes (26379 by default), master, db, credentials', () => {
  const u = parse('redis+sentinel://app:s%40cret@h1,h2:26380,[::1]:5/mymaster/3?sentinel_password=sp&sentinel_user=su');
  assert.deepEqual(u.nodes, [{ host: 'h1', port: 26379 }, { host: 'h2', port: 26380 }, { host: '::1', port: 5 }]);
  assert.equal(u.kind, 'sentinel');
  assert.equal(u.master, 'mymaster');
  assert.equal(u.db, 3);
  assert.equal(u.username, 'app');
  assert.equal(u.password, 's@cret');
  assert.equal(u.sentinelPassword, 'sp');
  assert.equal(u.sentinelUsername, 'su');
  const lone = parse('redis+sentinel://:p@ss@127.0.0.1/m');
  assert.equal(lone.password, 'p@ss'); // up to the last '@'
  assert.equal(lone.username, undefined);
  assert.equal(parse('redis+sentinel://pw@h/m').password, 'pw'); // a lone userinfo is the password
});

test('Cluster URLs: seeds on 6379 by default, db 0 only', () => {
  const u = parse('redis+cluster://u:p@10.0.0.1,10.0.0.2:7001/');
  assert.equal(u.kind, 'cluster');
  assert.deepEqual(u.nodes, [{ host: '10.0.0.1', port: 6379 }, { host: '10.0.0.2', port: 7001 }]);
  assert.equal(u.password, 'p');
  assert.equal(parse('redis+cluster://h/0').db, 0);
});

test('malformed Sentinel and Cluster URLs are TypeErrors saying why', () => {
  for (const [url, why] of [
    ['redis+cluster://h/1', /only db 0/],
    ['redis+cluster://h?db=2', /only db 0/],
    ['redis+sentinel://h1,h2', /master's name/],
    ['redis+sentinel://h1,,h2/m', /empty host/],
    ['redis+sentinel://h:99999/m', /bad port/],
    ['redis+sentinel://h/m/x', /bad db/],
    ['redis+sentinel://h/m?colour=red', /unknown URL parameter 'colour'/],
    ['redis+cluster://h?sentinel_password=x', /unknown URL parameter/],
    ['redis+sentinel://u:pa/ss@h/m', /percent-encode/],
  ]) {
    assert.throws(() => parse(url), (e) => e instanceof TypeError && why.test(e.message), url);
  }
  // Before any connection is tried: the Client and Server constructors throw.
  assert.throws(() => new rrpc.Client({ url: 'redis+cluster://h/1' }), /only db 0/);
  assert.throws(() => new rrpc.Server('calc', {}, { url: 'redis+sentinel://h' }), /master's name/);
});

test('on a Cluster each command is routed by its one key (or keyless)', () => {
  assert.equal(firstKey(['RPUSH', 'calc', 'x']), 'calc');
  assert.equal(firstKey(['BLPOP', '{calc}:high', 'calc', '{calc}:low', '1.000']), '{calc}:high');
  assert.equal(firstKey(['EVALSHA', 'sha', '1', 'rrpc:reply:ab', '60', 'x']), 'rrpc:reply:ab');
  assert.equal(firstKey(['EVAL', 'return 1', '3', 'calc', '{calc}:high', '{calc}:low']), 'calc');
  assert.equal(firstKey(['TIME']), undefined);
  assert.equal(firstKey(['SCRIPT', 'LOAD', 'x']), undefined);
});
