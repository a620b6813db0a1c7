'use strict';
// priority.test.js -- priorities, tenants, progress, cancellation,
// rpc.discover and the refusal to serve a service with limits (PROTOCOL.md
// 7, 9 and 11), in the Node peer, against a real Redis.

const test = require('node:test');
const assert = require('node:assert/strict');
const { raw, fresh, serve, memoryLogger, url, rrpc } = require('./helper');
const { calc, closeForward } = require('../examples/calc_server');

const client = (options = {}) => new rrpc.Client({ url, timeout: 10, ...options });

async function reply(r, key) {
  const popped = await r.blPop(key, 5);
  assert.ok(popped, `no answer on ${key}`);
  return JSON.parse(popped.element);
}

test('a bad priority or tenant is refused before sending', async () => {
  const service = fresh('prio');
  const c = client({ failFast: false });
  const r = await raw();
  try {
    for (const bad of ['urgent', 'HIGH', '']) {
      await assert.rejects(c.call(service, 'rec', ['x'], { priority: bad, timeout: 0.1 }), RangeError);
      await assert.rejects(c.notify(service, 'rec', ['x'], { priority: bad }), RangeError);
    }
    for (const bad of [1, true, ['high']]) {
      await assert.rejects(c.call(service, 'rec', ['x'], { priority: bad, timeout: 0.1 }), TypeError);
    }
    for (const bad of ['', 7, {}]) await assert.rejects(c.notify(service, 'rec', ['x'], { tenant: bad }), TypeError);
    assert.equal(await r.lLen(service) + await r.lLen(`{${service}}:high`) + await r.lLen(`{${service}}:low`), 0);
  } finally {
    await c.close();
    await r.quit();
  }
});

test('members sent; no backlog goes straight onto the list', async () => {
  const service = fresh('members');
  const c = client();
  const r = await raw();
  try {
    await c.notify(service, 'rec', ['h'], { priority: 'high', tenant: 'acme' });
    assert.equal(await r.lLen(`{${service}}:high`), 0);
    await c.notify(service, 'rec', ['l'], { priority: 'low' });
    const first = JSON.parse(await r.lPop(service));
    assert.equal(first.tenant, 'acme');
    assert.equal(first.priority, 'high');
    assert.equal(JSON.parse(await r.lPop(`{${service}}:low`)).priority, 'low');
    await c.notify(service, 'rec', ['n'], { priority: 'normal' });
    assert.equal('priority' in JSON.parse(await r.lPop(service)), false); // absent means normal
  } finally {
    await c.close();
    await r.quit();
  }
});

test('a backlog is served in priority order', async () => {
  const service = fresh('order');
  const c = client();
  const seen = [];
  try {
    for (const [name, priority] of [['n0'], ['l1', 'low'], ['n1', 'normal'], ['h1', 'high'], ['l2', 'low'],
      ['h2', 'high']]) {
      await c.notify(service, 'rec', [name], { priority });
    }
    const { stop } = await serve(service, { rec: (name) => seen.push(name) });
    try {
      for (let i = 0; i < 250 && seen.length < 6; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      await stop();
    }
    assert.deepEqual(seen, ['h1', 'h2', 'n0', 'n1', 'l1', 'l2']);
  } finally {
    await c.close();
  }
});

test('a worker answers a bad priority -32600 naming the member', async () => {
  const service = fresh('bad');
  const { stop } = await serve(service, { rec: (x) => x });
  const r = await raw();
  try {
    for (const [i, bad] of ['urgent', 3, null, { level: 'high' }].entries()) {
      const id = `prio-js-${i}-${service}`;
      await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'rec', params: ['x'], id, priority: bad }));
      const resp = await reply(r, id);
      assert.equal(resp.id, id);
      assert.equal(resp.error.code, -32600);
      assert.deepEqual(resp.error.data, { member: 'priority' });
    }
  } finally {
    await r.quit();
    await stop();
  }
});

test('the server refuses to serve a service with limits', async () => {
  const service = fresh('limits');
  const r = await raw();
  try {
    await r.hSet(`{${service}}:config`, 'limits', '{"add": {"rate": 5}}');
    const server = new rrpc.Server(service, calc, { url, handleSignals: false, logger: memoryLogger() });
    await assert.rejects(server.serveForever(), (e) => e instanceof rrpc.Unsupported &&
      e.message.includes(`{${service}}:config field limits`));
    assert.equal(await r.zCard(`{${service}}:workers`), 0); // never registered
  } finally {
    await r.quit();
  }
});

test('progress in order, then the answer once; none unasked', async () => {
  const service = fresh('count');
  const { stop } = await serve(service, calc);
  const c = client();
  const r = await raw();
  try {
    const seen = [];
    assert.equal(await c.call(service, 'count', [4, 5], { progress: (v) => seen.push(v) }), 4);
    assert.deepEqual(seen, [1, 2, 3, 4]);
    assert.equal(await c.call(service, 'count', [2, 1]), 2);
    const id = `seed-js-${service}`;
    await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'count', params: [3, 1], id }));
    assert.equal((await reply(r, id)).result, 3);
    assert.equal(await r.lLen(id), 0);
    assert.throws(() => rrpc.progress(1)); // outside any handler
    assert.equal(await rrpc.cancelled(), false);
  } finally {
    await c.close();
    await r.quit();
    await stop();
  }
});

test('an aborted call stops the handler running it, and one still queued is taken back', async () => {
  const service = fresh('cancel');
  const { stop } = await serve(service, calc);
  const c = client();
  const r = await raw();
  try {
    const began = performance.now();
    const seen = [];
    await assert.rejects(c.call(service, 'count', [500, 10],
      { signal: AbortSignal.timeout(300), progress: (v) => seen.push(v) }), rrpc.Aborted);
    assert.ok(performance.now() - began < 2000);
    assert.ok(seen.length > 0);
    // The handler stopped: the next call is answered at once.
    assert.equal(await c.call(service, 'add', [1, 2], { timeout: 1 }), 3);
    const id = `q-js-${service}`;
    await r.set(`${id}:cancel`, '1', { PX: 60000 });
    await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'count', params: [1, 0], id,
      cancel_key: `${id}:cancel` }));
    assert.equal((await reply(r, id)).error.code, -32002); // cancelled before it ran
  } finally {
    await c.close();
    await r.quit();
    await stop();
  }
  const idle = fresh('queued');
  const c2 = client({ failFast: false });
  const r2 = await raw();
  try {
    await assert.rejects(c2.call(idle, 'add', [1, 2], { signal: AbortSignal.timeout(200), priority: 'low' }),
      rrpc.Aborted);
    assert.equal(await r2.lLen(idle), 0);
  } finally {
    await c2.close();
    await r2.quit();
  }
});

test('an aborted call reaches the calls its handler made', async () => {
  const inner = fresh('inner');
  const outer = fresh('outer');
  const a = await serve(inner, calc);
  const b = await serve(outer, calc);
  const c = client();
  try {
    await assert.rejects(c.call(outer, 'forward', [inner, 'sleep', [5000]], { signal: AbortSignal.timeout(400) }),
      rrpc.Aborted);
    // The nested call carried the cancel key: the inner handler stopped, its worker is free.
    assert.equal(await c.call(inner, 'add', [1, 2], { timeout: 2 }), 3);
  } finally {
    await c.close();
    await b.stop();
    await a.stop();
    await closeForward(); // forward's client, or the test process would not end
  }
});

test('rpc.discover: an OpenRPC document of the methods', async () => {
  const service = fresh('disc');
  const { stop } = await serve(service, calc);
  const c = client();
  try {
    const doc = await c.call(service, 'rpc.discover');
    assert.equal(doc.openrpc, '1.3.2');
    assert.equal(doc.info.title, service);
    assert.match(doc.info.version, /^node-/);
    const m = Object.fromEntries(doc.methods.map((x) => [x.name, x]));
    assert.ok(!('rpc.discover' in m) && 'rpc.ping' in m && 'count' in m);
    assert.deepEqual(m.add.params, [{ name: 'a', schema: { type: 'number' } }, { name: 'b', schema: { type: 'number' } }]);
    assert.deepEqual(m.add.result, { name: 'result', schema: {} });
    assert.match(m.add.description, /^add\(a, b\)/);
    const own = await serve(`${service}_own`, { greet: (name, greeting = 'hi') => `${greeting} ${name}` });
    try {
      const greet = (await c.call(`${service}_own`, 'rpc.discover')).methods.find((x) => x.name === 'greet');
      assert.deepEqual(greet.params, [{ name: 'name', schema: {}, required: true }, { name: 'greeting', schema: {} }]);
    } finally {
      await own.stop();
    }
  } finally {
    await c.close();
    await stop();
  }
});
