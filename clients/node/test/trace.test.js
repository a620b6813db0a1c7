'use strict';
// trace.test.js -- W3C Trace Context (PROTOCOL.md 7) in the Node peer: the
// traceparent rules, what a handler sees, a call from inside a handler
// continuing the trace (after awaits and timers), calls starting one, dead
// letters and log lines keeping it, calc's forward; and `sent` on requests
// and the `expired` counter of <service>:stats (PROTOCOL.md 9).

const test = require('node:test');
const assert = require('node:assert/strict');
const { raw, fresh, serve, url, rrpc } = require('./helper');
const trace = require('../lib/trace');
const { calc, closeForward } = require('../examples/calc_server');

const GOOD = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

/** Redis's clock in ms (TIME). */
async function redisMs(r) {
  const [sec, usec] = await r.time();
  return Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
}

function tracer(client) {
  return {
    seen: () => [rrpc.currentTraceparent(), rrpc.currentTracestate()],
    // What a call made from here sends, as the service it calls sees it,
    // after an await and a timer (the context must survive both).
    nested: async (service) => {
      const mine = rrpc.currentTraceparent();
      await new Promise((resolve) => setTimeout(resolve, 5));
      return [mine, await client.call(service, 'seen')];
    },
    // The time a nested call gets: the handled request's deadline caps it.
    nestedTimeout: async (service) => {
      await client.call(service, 'seen');
      return 'answered';
    },
    fail: () => {
      throw new Error('boom');
    },
  };
}

test('traceparent rules', () => {
  assert.equal(trace.parse(GOOD), GOOD);
  assert.equal(trace.parse(`01${GOOD.slice(2)}-later`), GOOD);
  assert.equal(trace.parse(`01${GOOD.slice(2)}`), GOOD);
  assert.ok(trace.parse(`${GOOD.slice(0, -2)}ff`));
  const bad = [`ff${GOOD.slice(2)}`, `${GOOD}-`, `${GOOD}x`, `01${GOOD.slice(2)}x`, GOOD.toUpperCase(),
    `00${GOOD.slice(2).toUpperCase()}`, `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
    `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`, GOOD.slice(0, -1), GOOD.replace(/-/g, '_'),
    '', null, undefined, 42, `${GOOD.slice(0, -1)}g`, `${GOOD.slice(0, 10)}\u00e9${GOOD.slice(11)}`];
  for (const value of bad) assert.equal(trace.parse(value), null, String(value));
  assert.ok(trace.stateOk('rojo=1,congo=2'));
  assert.ok(!trace.stateOk('a=\n'));
  assert.ok(!trace.stateOk('a'.repeat(513)));
  assert.ok(trace.stateOk('a'.repeat(512)));
  const f = trace.fresh();
  assert.match(f, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  const c = trace.child(GOOD);
  assert.equal(c.slice(0, 36), GOOD.slice(0, 36));
  assert.notEqual(c.slice(36, 52), GOOD.slice(36, 52));
  assert.equal(c.slice(52), '-01');
});

test('a handler sees the trace and its calls continue it', async () => {
  const inner = fresh('in');
  const outer = fresh('out');
  const nestedClient = new rrpc.Client({ url, timeout: 10 });
  const a = await serve(inner, tracer(nestedClient));
  const b = await serve(outer, tracer(nestedClient));
  const c = new rrpc.Client({ url, timeout: 10 });
  try {
    assert.deepEqual(await c.call(inner, 'seen', [], { traceparent: GOOD, tracestate: 'rojo=1' }), [GOOD, 'rojo=1']);
    const [mine, [theirs, theirState]] = await c.call(outer, 'nested', [inner],
      { traceparent: GOOD, tracestate: 'rojo=1' });
    assert.equal(mine, GOOD);
    assert.equal(theirs.slice(0, 36), GOOD.slice(0, 36)); // the same trace id
    assert.notEqual(theirs.slice(36, 52), GOOD.slice(36, 52)); // a new parent id
    assert.equal(theirs.slice(52), '-01'); // the flags kept
    assert.equal(theirState, 'rojo=1');
    // Two handled requests at once (the worker is one at a time, but the
    // contexts of two concurrent outer calls in two workers must not mix).
    const other = `00-${'a'.repeat(32)}-${'b'.repeat(16)}-00`;
    const [x, y] = await Promise.all([
      c.call(outer, 'nested', [inner], { traceparent: GOOD }),
      c.call(outer, 'nested', [inner], { traceparent: other }),
    ]);
    assert.equal(x[1][0].slice(3, 35), GOOD.slice(3, 35));
    assert.equal(y[1][0].slice(3, 35), 'a'.repeat(32));
    // Outside a handler there is no context.
    assert.equal(rrpc.currentTraceparent(), null);
    assert.equal(rrpc.currentTracestate(), null);
  } finally {
    await c.close();
    await nestedClient.close();
    await a.stop();
    await b.stop();
  }
});

test('calls start a trace; invalid ones are refused before anything is sent', async () => {
  const service = fresh();
  const s = await serve(service, tracer(null));
  const c = new rrpc.Client({ url, timeout: 10 });
  try {
    const [first] = await c.call(service, 'seen');
    const [second] = await c.call(service, 'seen');
    assert.match(first, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/); // not claimed sampled
    assert.notEqual(first.slice(3, 35), second.slice(3, 35));
    await assert.rejects(c.call(service, 'seen', [], { traceparent: GOOD.toUpperCase() }), TypeError);
    await assert.rejects(c.call(service, 'seen', [], { tracestate: 'a=\n' }), TypeError);
    await assert.rejects(c.notify(service, 'seen', [], { traceparent: 'nope' }), TypeError);
  } finally {
    await c.close();
    await s.stop();
  }
});

test('requests carry traceparent and sent; notifications carry a trace', async () => {
  const service = fresh('wire');
  const r = await raw();
  const c = new rrpc.Client({ url, timeout: 0.3, failFast: false });
  try {
    const before = await redisMs(r);
    await assert.rejects(c.call(service, 'm', [1], { traceparent: GOOD, tracestate: 'k=v' }), rrpc.Timeout);
    await c.notify(service, 'n', [], { traceparent: GOOD });
    await c.notify(service, 'n');
    const queued = await r.lRange(service, 0, -1);
    assert.equal(queued.length, 2, 'the timed-out call was withdrawn');
    assert.equal(JSON.parse(queued[0]).traceparent, GOOD);
    assert.match(JSON.parse(queued[1]).traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    // A call's request, caught as pushed: sent on Redis's clock, before the deadline.
    const pushed = c.call(service, 'm', [1], { traceparent: GOOD, tracestate: 'k=v', timeout: 1 });
    let req = null;
    for (let i = 0; i < 100 && !req; i++) {
      const items = await r.lRange(service, 2, 2);
      if (items.length) req = JSON.parse(items[0]);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(req, 'the request was never pushed');
    assert.equal(req.traceparent, GOOD);
    assert.equal(req.tracestate, 'k=v');
    assert.ok(Number.isInteger(req.sent) && req.sent >= before - 5 && req.sent <= Date.now() + 60000, String(req.sent));
    assert.equal(req.deadline - req.sent, 1000);
    await assert.rejects(pushed, rrpc.Timeout);
  } finally {
    await c.close();
    await r.quit();
  }
});

test('an invalid traceparent is ignored by the worker', async () => {
  const service = fresh();
  const s = await serve(service, tracer(null));
  const r = await raw();
  try {
    const key = `rrpc:reply:${fresh('k')}`;
    await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'seen', id: key,
      traceparent: GOOD.toUpperCase(), tracestate: 'rojo=1' }));
    const popped = await r.blPop(key, 10);
    assert.deepEqual(JSON.parse(popped.element).result, [null, null]);
  } finally {
    await r.quit();
    await s.stop();
  }
});

test('dead letters and log lines keep the trace id', async () => {
  const service = fresh();
  const s = await serve(service, tracer(null));
  const r = await raw();
  try {
    await r.rPush(service, JSON.stringify({ jsonrpc: '2.0', method: 'seen', id: null, traceparent: GOOD }));
    const popped = await r.blPop(`${service}:dead`, 10);
    const letter = JSON.parse(popped.element);
    assert.equal(letter.reason, 'no reply key');
    assert.equal(letter.traceparent, GOOD);
    assert.ok(s.logger.lines.some((l) => l.includes(`dead letter (trace ${GOOD.slice(3, 35)})`)), s.logger.lines);
    // A batch keeps the first valid one.
    await r.rPush(service, JSON.stringify([{ jsonrpc: '2.0', method: 'seen', id: null, traceparent: 'bad' },
      { jsonrpc: '2.0', method: 'seen', id: null, traceparent: GOOD }]));
    assert.equal(JSON.parse((await r.blPop(`${service}:dead`, 10)).element).traceparent, GOOD);
    // A handler's failure is logged with the trace id.
    const c = new rrpc.Client({ url, timeout: 10 });
    try {
      await assert.rejects(c.call(service, 'fail', [], { traceparent: GOOD }), rrpc.RemoteError);
    } finally {
      await c.close();
    }
    assert.ok(s.logger.lines.some((l) => l.includes(`.fail failed (trace ${GOOD.slice(3, 35)})`)), s.logger.lines);
  } finally {
    await r.quit();
    await s.stop();
  }
});

test('a nested call gets no more time than the handled request has left', async () => {
  const inner = fresh('in');
  const outer = fresh('out');
  const nestedClient = new rrpc.Client({ url, timeout: 30 });
  // Unregistered: stopped, it is waited on, not failed fast.
  const a = await serve(inner, { seen: () => rrpc.currentTraceparent() }, { heartbeat: false });
  const b = await serve(outer, tracer(nestedClient));
  const r = await raw();
  const c = new rrpc.Client({ url, timeout: 10 });
  try {
    // Stop the inner worker so that the nested request stays queued.
    await a.stop();
    const outerCall = c.call(outer, 'nestedTimeout', [inner], { timeout: 1.5 });
    let req = null;
    for (let i = 0; i < 200 && !req; i++) {
      const items = await r.lRange(inner, 0, 0);
      if (items.length) req = JSON.parse(items[0]);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(req, 'no nested request');
    assert.ok(req.deadline - req.sent <= 1500, `${req.deadline - req.sent} ms`);
    // The nested call times out with the outer deadline: answered with -32603 (not a 30 s wait).
    const started = performance.now();
    await assert.rejects(outerCall, (e) => e instanceof rrpc.Timeout || e instanceof rrpc.RemoteError);
    assert.ok(performance.now() - started < 5000);
  } finally {
    await c.close();
    await nestedClient.close();
    await r.quit();
    await b.stop();
  }
});

test('expired requests are counted in <service>:stats', async () => {
  const service = fresh();
  const s = await serve(service, tracer(null));
  const r = await raw();
  try {
    const now = await redisMs(r);
    const key = `rrpc:reply:${fresh('k')}`;
    const late = { jsonrpc: '2.0', method: 'seen', deadline: now - 1000 };
    await r.rPush(service, JSON.stringify({ ...late, id: key }));
    assert.equal(JSON.parse((await r.blPop(key, 10)).element).error.code, -32000);
    // A notification and two batch elements too; not one of a batch in time.
    await r.rPush(service, JSON.stringify(late));
    const bkey = `rrpc:reply:${fresh('b')}`;
    await r.rPush(service, JSON.stringify([{ ...late, id: 1, reply_to: bkey }, { ...late, id: 2 },
      { jsonrpc: '2.0', method: 'seen', id: 3, deadline: now + 60000 }]));
    const batch = JSON.parse((await r.blPop(bkey, 10)).element);
    assert.deepEqual(batch.map((x) => (x.error ? x.error.code : 'ok')), [-32000, -32000, 'ok']);
    // Counted before the next pop: wait for it.
    let expired = null;
    for (let i = 0; i < 300 && expired !== '4'; i++) {
      expired = await r.hGet(`${service}:stats`, 'expired');
      if (expired !== '4') await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(expired, '4');
  } finally {
    await r.quit();
    await s.stop();
  }
});

test('calc forward continues the trace and passes errors on', async () => {
  const target = fresh('t');
  const front = fresh('f');
  const back = fresh('c');
  const a = await serve(target, tracer(null));
  const b = await serve(front, calc);
  const d = await serve(back, calc); // its own worker: a forward to itself would wait for itself
  const c = new rrpc.Client({ url, timeout: 10 });
  try {
    const [seen] = await c.call(front, 'forward', [target, 'seen', []], { traceparent: GOOD });
    assert.equal(seen.slice(0, 36), GOOD.slice(0, 36));
    assert.notEqual(seen, GOOD);
    assert.equal(await c.call(front, 'forward', { service: back, method: 'add', params: { a: 2, b: 3 } }), 5);
    await assert.rejects(c.call(front, 'forward', [back, 'divide', [1, 0]]),
      (e) => e instanceof rrpc.RemoteError && e.code === 1 && e.message === 'division by zero');
    await assert.rejects(c.call(front, 'forward', [1, 'add', []]), (e) => e.code === -32602);
    await assert.rejects(c.call(front, 'forward', [back, 'add', 7]), (e) => e.code === -32602);
  } finally {
    await c.close();
    await a.stop();
    await b.stop();
    await d.stop();
    await closeForward();
  }
});
