'use strict';
// amqp_registry.test.js -- the Node AMQP server answers registry queries
// (PROTOCOL.md 12, "Operations over AMQP") on the RabbitMQ of
// $RRPC_TEST_AMQP_URL (test_amqp.sh, ctest node_amqp; skipped without).  The
// queries are published with amqplib as the spec says; test_amqp.sh runs the
// real `rrpc ls`/`rrpc info` against calc_server.js as well.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const rrpc = require('..');
const registry = require('./registry_ask');

const url = process.env.RRPC_TEST_AMQP_URL;
const skip = url ? false : 'RRPC_TEST_AMQP_URL is not set: run under tests/harness/with-rabbitmq.sh';
const fresh = () => `nodereg${crypto.randomBytes(4).toString('hex')}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const ask = (key, options) => registry.ask(url, key, options);
const { mine } = registry;

async function serve(service, options = {}) {
  const lines = [];
  const keep = (m) => lines.push(m);
  const server = new rrpc.Server(service, {
    add: (a, b) => a + b,
    fail: () => { throw new rrpc.RpcError(7, 'no'); },
  }, { url, handleSignals: false, logger: { info: keep, warn: keep, error: keep }, ...options });
  const done = server.serveForever();
  done.catch(() => {});
  for (let i = 0; i < 500 && !lines.some((l) => l.includes('serving queue')); i++) await sleep(20);
  return { server, lines, stop: async () => { server.stop(); await done; } };
}

test('answers with its record, counters and per-method stats; gone once stopped', { skip }, async () => {
  const service = fresh();
  const { server, stop } = await serve(service);
  const client = new rrpc.Client({ url, timeout: 5 });
  try {
    assert.equal(await client.call(service, 'add', [1, 2]), 3);
    await assert.rejects(client.call(service, 'fail', []), rrpc.RemoteError);
    await client.notify(service, 'add', [1, 1]);
    for (let i = 0; i < 250 && server.counts.requests < 3; i++) await sleep(20);
    const [rec] = mine(service, await ask(service, { window: 1000, want: service }));
    assert.ok(rec, 'no answer');
    assert.equal(rec.id, server.workerId);
    assert.deepEqual([rec.pid, rec.threads, rec.shards, rec.max_queue, rec.heartbeat_s, rec.ttl_s],
      [process.pid, 1, 1, 0, 1, 5]);
    assert.match(rec.version, /^node-/);
    assert.ok(rec.started <= rec.time);
    assert.deepEqual(rec.methods.map((m) => m.name).sort(), ['add', 'fail', 'rpc.discover', 'rpc.ping']);
    assert.deepEqual(rec.counters, {
      requests: 3, notifications: 1, errors: 1, expired: 0, dead_letters: 0, redelivered: 0, given_back: 0, lost: 0,
    });
    assert.deepEqual([rec.mstats['calls:add'], rec.mstats['errors:fail']], [2, 1]);
    assert.equal(Object.entries(rec.mstats).filter(([k]) => k.startsWith('h')).reduce((n, [, v]) => n + v, 0), 3);
    assert.equal(mine(service, await ask('', { window: 1000, want: service })).length, 1);
  } finally {
    await client.close();
    await stop();
  }
  assert.deepEqual(mine(service, await ask('')), []);
});

test('heartbeat: false serves unseen', { skip }, async () => {
  const service = fresh();
  const { stop } = await serve(service, { heartbeat: false });
  const client = new rrpc.Client({ url, timeout: 5 });
  try {
    assert.equal(await client.call(service, 'add', [2, 2]), 4);
    assert.deepEqual(mine(service, await ask(service)), []);
  } finally {
    await client.close();
    await stop();
  }
});
