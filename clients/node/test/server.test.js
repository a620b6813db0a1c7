'use strict';
// server.test.js -- rrpc.Server against a real Redis, seen from the wire.

const test = require('node:test');
const assert = require('node:assert/strict');
const { raw, fresh, serve, rrpc } = require('./helper');

const handlers = {
  add: (a, b) => a + b,
  greet: (name, greeting = 'hello') => `${greeting} ${name}`,
  sum: (...xs) => xs.reduce((s, x) => s + x, 0),
  opts: ({ a, b }) => [a, b],
  slow: async (ms) => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return ms;
  },
  fail: () => {
    throw new rrpc.RpcError(7, 'nope', { why: 'test' });
  },
  crash: () => {
    throw 'not an Error'; // eslint-disable-line no-throw-literal
  },
  _hidden: () => 'no',
};

async function ask(r, service, req) {
  const key = `rrpc:reply:${fresh('k')}`;
  await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', id: key, ...req }));
  const popped = await r.blPop(key, 5);
  assert.ok(popped, `no answer to ${JSON.stringify(req)}`);
  assert.ok((await r.ttl(key)) === -2);
  return JSON.parse(popped.element);
}

test('the server answers, binds params and survives its handlers', async () => {
  const service = fresh();
  const { stop, logger } = await serve(service, handlers);
  const r = await raw();
  try {
    assert.equal((await ask(r, service, { method: 'add', params: [1, 2] })).result, 3);
    assert.equal((await ask(r, service, { method: 'add', params: { b: 2, a: 5 } })).result, 7);
    assert.equal((await ask(r, service, { method: 'greet', params: { name: 'x' } })).result, 'hello x');
    assert.equal((await ask(r, service, { method: 'greet', params: ['x', 'hi'] })).result, 'hi x');
    assert.equal((await ask(r, service, { method: 'sum', params: [1, 2, 3] })).result, 6);
    assert.deepEqual((await ask(r, service, { method: 'opts', params: { a: 1, b: 2 } })).result, [1, 2]);
    assert.equal((await ask(r, service, { method: 'slow', params: [20] })).result, 20);
    for (const params of [[1], [1, 2, 3], { a: 1 }, { a: 1, b: 2, c: 3 }, undefined]) {
      const resp = await ask(r, service, { method: 'add', params });
      assert.equal(resp.error.code, -32602, JSON.stringify(params));
      assert.match(resp.error.message, /^Invalid params: /);
    }
    assert.deepEqual((await ask(r, service, { method: 'fail' })).error, { code: 7, message: 'nope', data: { why: 'test' } });
    assert.deepEqual((await ask(r, service, { method: 'crash' })).error, { code: -32603, message: 'Internal error' });
    assert.equal((await ask(r, service, { method: '_hidden' })).error.code, -32601);
    assert.equal((await ask(r, service, { method: 'toString' })).error.code, -32601);
    const ping = (await ask(r, service, { method: 'rpc.ping', params: [1] })).result;
    assert.equal(ping.service, service);
    assert.equal(ping.pid, process.pid);
    assert.equal(ping.version, `node-${rrpc.VERSION}`);
    assert.ok(Math.abs(ping.time - Date.now() / 1000) < 5);
    assert.ok(logger.lines.some((l) => /\.crash failed: thrown: string not an Error/.test(l)), logger.lines.join('\n'));
  } finally {
    await stop();
    await r.close();
  }
});

test('deadlines on Redis\'s clock, dead letters, refused reply keys', async () => {
  const service = fresh();
  const { stop } = await serve(service, handlers);
  const r = await raw();
  try {
    const [sec, usec] = await r.sendCommand(['TIME']);
    const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    const late = await ask(r, service, { method: 'slow', params: [2000], deadline: now - 1000 });
    assert.equal(late.error.code, -32000);
    assert.deepEqual(Object.keys(late.error.data).sort(), ['deadline', 'now']);
    assert.equal((await ask(r, service, { method: 'add', params: [1, 2], deadline: now + 60000 })).result, 3);

    await r.rPush(service, 'garbage');
    await r.set('app:string', 'v');
    await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'add', params: [1, 2], id: 'app:string' }));
    await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'add', params: [1, 2], id: 1, reply_to: service }));
    await ask(r, service, { method: 'add', params: [0, 0] }); // the worker is past them
    const letters = (await r.lRange(`${service}:dead`, 0, -1)).map((x) => JSON.parse(x));
    assert.deepEqual(letters.map((l) => l.reason.replace(/:.*/, '')),
      ['parse error', 'reply key refused', 'reply key refused']);
    assert.equal(letters[0].message, 'garbage');
    assert.equal(letters[1].reason, 'reply key refused: string');
    assert.equal(letters[2].reason, "reply key refused: one of the service's own keys");
    assert.equal(letters[2].response.result, 3);
    assert.equal(await r.get('app:string'), 'v');
    assert.equal(await r.ttl('app:string'), -1);
    assert.equal(await r.hGet(`${service}:stats`, 'dead'), '3');
  } finally {
    await stop();
    await r.close();
  }
});

test('the registry: a record while serving, stats, none after stop', async () => {
  const service = fresh();
  const { stop } = await serve(service, handlers, { heartbeatInterval: 0.2, maxQueue: 9 });
  const r = await raw();
  try {
    const info = Object.values(await r.hGetAll(`{${service}}:info`)).map((x) => JSON.parse(x));
    assert.equal(info.length, 1);
    assert.equal(info[0].version, `node-${rrpc.VERSION}`);
    assert.equal(info[0].max_queue, 9);
    assert.ok(info[0].methods.some((m) => m.name === 'rpc.ping' && /^built-in/.test(m.description)));
    assert.ok(!info[0].methods.some((m) => m.name === '_hidden'));
    assert.equal(await r.hGet(`{${service}}:config`, 'max_queue'), '9');
    assert.ok(await r.sIsMember('rrpc:services', service));
    await ask(r, service, { method: 'add', params: [1, 'x'] }); // an error: a string joined, not added
    await ask(r, service, { method: 'fail' });
    await new Promise((resolve) => setTimeout(resolve, 600));
    const m = await r.hGetAll(`{${service}}:mstats`);
    assert.equal(m['calls:fail'], '1');
    assert.equal(m['errors:fail'], '1');
    assert.ok(Object.keys(m).some((f) => /^h\d+:fail$/.test(f)), JSON.stringify(m));
  } finally {
    await stop();
  }
  assert.equal(await r.zCard(`{${service}}:workers`), 0);
  assert.equal(await r.hLen(`{${service}}:info`), 0);
  assert.equal(await r.exists(`{${service}}:config`), 1);
  await r.close();
});

test('a server that cannot reach Redis fails after its start timeout', async () => {
  const server = new rrpc.Server('x', {}, { url: 'redis://127.0.0.1:1', startTimeout: 0.3, handleSignals: false,
    logger: { info() {}, warn() {}, error() {} } });
  const t = performance.now();
  await assert.rejects(server.serveForever(), rrpc.RedisError);
  assert.ok(performance.now() - t < 3000);
});
