'use strict';
// client.test.js -- rrpc.Client against a real Redis and an in-process server.

const test = require('node:test');
const assert = require('node:assert/strict');
const { url, raw, fresh, serve, rrpc } = require('./helper');

const handlers = {
  add: (a, b) => a + b,
  echo: rrpc.rawParams((p) => p),
  divide: (a, b) => {
    if (b === 0) throw new rrpc.RpcError(1, 'division by zero');
    return a / b;
  },
};

test('calls, proxies, notifications and remote errors', async () => {
  const service = fresh();
  const { stop } = await serve(service, handlers);
  const client = new rrpc.Client({ url, timeout: 5 });
  try {
    assert.equal(await client.call(service, 'add', [1, 2]), 3);
    assert.equal(await client.call(service, 'add', { a: 1, b: 2 }), 3);
    const calc = client.proxy(service);
    assert.equal(await calc.add(2, 2), 4);
    assert.deepEqual(await calc.echo('x', [1]), ['x', [1]]);
    assert.equal(await client.call(service, 'echo'), null);
    assert.equal(await client.call(service, 'echo', [9007199254740993n]).then((v) => v[0]), 9007199254740993n);
    const results = await Promise.all([1, 2, 3, 4, 5].map((n) => calc.add(n, n)));
    assert.deepEqual(results, [2, 4, 6, 8, 10]);
    await assert.rejects(calc.divide(1, 0), (e) => e instanceof rrpc.RemoteError && e instanceof rrpc.Error &&
      e.code === 1 && e.message === 'division by zero');
    await assert.rejects(calc.nosuch(), (e) => e.code === -32601);
    await client.notify(service, 'add', [1, 2]);
    await assert.rejects(client.call(service, 'add', 5), TypeError);
  } finally {
    await client.close();
    await stop();
  }
});

test('a timeout withdraws the request; an AbortSignal too', async () => {
  const client = new rrpc.Client({ url, timeout: 5 });
  const r = await raw();
  const nobody = fresh('nobody');
  try {
    let t = performance.now();
    await assert.rejects(client.call(nobody, 'add', [1, 2], { timeout: 0.3 }), rrpc.Timeout);
    assert.ok(performance.now() - t < 2000);
    assert.equal(await r.lLen(nobody), 0);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('changed my mind')), 200);
    t = performance.now();
    await assert.rejects(client.call(nobody, 'add', [1, 2], { timeout: 10, signal: ac.signal }),
      (e) => e instanceof rrpc.Aborted && e.name === 'AbortError' && e.cause.message === 'changed my mind');
    assert.ok(performance.now() - t < 2000);
    assert.equal(await r.lLen(nobody), 0);
    await assert.rejects(client.call(nobody, 'add', [1, 2], { signal: AbortSignal.abort() }), rrpc.Aborted);
    // The client still works after an abort closed one of its connections.
    const req = client.call(nobody, 'add', [1, 2], { timeout: 0 });
    const text = (await r.blPop(nobody, 5)).element;
    const key = JSON.parse(text).reply_to;
    await r.rPush(key, JSON.stringify({ jsonrpc: '2.0', result: 'late', id: key }));
    assert.equal(await req, 'late');
  } finally {
    await client.close();
    await r.close();
  }
});

test('fail fast: Unavailable, Overloaded, and a deadline in every request', async () => {
  const client = new rrpc.Client({ url, timeout: 5 });
  const r = await raw();
  const service = fresh();
  try {
    await r.hSet(`{${service}}:config`, 'max_queue', '0');
    let t = performance.now();
    await assert.rejects(client.call(service, 'add', [1, 2]), rrpc.Unavailable);
    assert.ok(performance.now() - t < 500);
    const full = fresh();
    const [sec] = await r.sendCommand(['TIME']);
    await r.zAdd(`{${full}}:workers`, { score: Number(sec) * 1000 + 60000, value: 'hand-made' });
    await r.hSet(`{${full}}:config`, { max_queue: '1', ttl_ms: '60000' });
    await r.rPush(full, 'queued');
    t = performance.now();
    await assert.rejects(client.call(full, 'add', [1, 2]), rrpc.Overloaded);
    assert.equal(await r.lLen(full), 1);
    const slow = fresh();
    const call = client.call(slow, 'add', [1, 2], { timeout: 2 }).catch((e) => e);
    const req = JSON.parse((await r.blPop(slow, 5)).element);
    const [s2, u2] = await r.sendCommand(['TIME']);
    const now = Number(s2) * 1000 + Math.floor(Number(u2) / 1000);
    assert.ok(Number.isInteger(req.deadline) && req.deadline > now + 1500 && req.deadline <= now + 2100, req.deadline);
    assert.equal(req.id, req.reply_to);
    assert.match(req.id, /^rrpc:reply:[0-9a-f]{32}$/);
    assert.ok((await call) instanceof rrpc.Timeout);
  } finally {
    await client.close();
    await r.close();
  }
  const off = new rrpc.Client({ url: 'redis://127.0.0.1:1' });
  await assert.rejects(off.call('x', 'add', [1, 2]), rrpc.RedisError);
  await off.close();
});
