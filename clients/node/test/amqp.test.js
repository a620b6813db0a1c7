'use strict';
// amqp.test.js -- rrpc over AMQP 0-9-1 (PROTOCOL.md 12) against a real
// RabbitMQ: $RRPC_TEST_AMQP_URL, as tests/harness/with-rabbitmq.sh exports
// it (ctest amqp_node).  Skipped, saying so, when no broker URL is given.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const rrpc = require('..');
const registry = require('./registry_ask');

const url = process.env.RRPC_TEST_AMQP_URL;
const skip = url ? false : 'RRPC_TEST_AMQP_URL is not set: run under tests/harness/with-rabbitmq.sh';
const fresh = () => `test_amqp_${crypto.randomBytes(4).toString('hex')}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function memoryLogger() {
  const lines = [];
  const keep = (level) => (m) => lines.push(`${level}: ${m}`);
  return { lines, info: keep('info'), warn: keep('warn'), error: keep('error') };
}

async function until(check, ms = 5000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

/** A Server over AMQP in this process; resolves once it serves. */
async function serve(service, handlers, options = {}) {
  const logger = memoryLogger();
  const server = new rrpc.Server(service, handlers, { url, handleSignals: false, logger, ...options });
  const done = server.serveForever();
  done.catch(() => {});
  assert.ok(await until(() => logger.lines.some((l) => l.includes('serving queue'))), logger.lines.join('\n'));
  return { server, logger, done, stop: async () => { server.stop(); await done; } };
}

/** Publishes BODY raw to QUEUE as a tutorial caller would; resolves to the answer's text. */
async function rawCall(queue, body, options = {}) {
  const conn = await require('amqplib').connect(url);
  try {
    const ch = await conn.createChannel();
    const got = new Promise((resolve) => {
      ch.consume('amq.rabbitmq.reply-to', (m) => resolve(m), { noAck: true });
    });
    await sleep(0);
    ch.publish('', queue, Buffer.from(body), { replyTo: 'amq.rabbitmq.reply-to', correlationId: 'c1', ...options });
    const m = await Promise.race([got, sleep(5000).then(() => null)]);
    assert.ok(m, 'no answer');
    assert.equal(m.properties.correlationId, 'c1');
    assert.equal(m.properties.contentType, 'application/json');
    return m.content.toString();
  } finally {
    await conn.close();
  }
}

const calc = {
  add: (a, b) => a + b,
  divide: (a, b) => {
    if (b === 0) throw new rrpc.RpcError(1, 'division by zero');
    return a / b;
  },
  sleep: async (ms) => {
    await sleep(ms);
    return ms;
  },
};

test('calls, errors, notifications and raw bodies over AMQP', { skip }, async () => {
  const service = fresh();
  const noted = [];
  const { stop } = await serve(service, { ...calc, note: (x) => noted.push(x) });
  const client = new rrpc.Client({ url, timeout: 5 });
  try {
    assert.equal(await client.call(service, 'add', [1, 2]), 3);
    assert.equal(await client.call(service, 'add', { a: 2, b: 5 }), 7);
    assert.equal(await client.proxy(service).add(20, 22), 42);
    assert.deepEqual(await Promise.all([1, 2, 3, 4].map((n) => client.call(service, 'add', [n, n]))), [2, 4, 6, 8]);
    await assert.rejects(client.call(service, 'divide', [1, 0]), (e) => e instanceof rrpc.RemoteError && e.code === 1);
    await assert.rejects(client.call(service, 'nosuch'), (e) => e instanceof rrpc.RemoteError && e.code === -32601);
    const ping = await client.call(service, 'rpc.ping');
    assert.equal(ping.service, service);
    const doc = await client.call(service, 'rpc.discover');
    assert.ok(doc.methods.some((m) => m.name === 'add'));
    await client.notify(service, 'note', ['hi']);
    assert.ok(await until(() => noted.length === 1), 'the notification did not run');

    // What Redis cannot address, AMQP can: reply_to.
    const notJson = JSON.parse(await rawCall(service, 'this is not JSON'));
    assert.equal(notJson.error.code, -32700);
    assert.equal(notJson.id, null);
    const invalid = JSON.parse(await rawCall(service, '{"method": "add"}'));
    assert.equal(invalid.error.code, -32600);
    assert.equal(invalid.id, null);
    const batch = JSON.parse(await rawCall(service,
      '[{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1},{"jsonrpc":"2.0","method":"note","params":["b"]}]'));
    assert.deepEqual(batch, [{ jsonrpc: '2.0', result: 2, id: 1 }]);
    assert.equal(JSON.parse(await rawCall(service, '[]')).error.code, -32600);
    // A tutorial-style caller's body, answered with its own id.
    assert.equal(await rawCall(service, '{"jsonrpc":"2.0","method":"add","params":[2,3],"id":7}'),
      '{"jsonrpc":"2.0","result":5,"id":7}');
  } finally {
    await client.close();
    await stop();
  }
});

test('a call carries the tutorial properties and an expiration of its timeout', { skip }, async () => {
  // A worker of our own that records what it got.
  const service = fresh();
  const amqplib = require('amqplib');
  const conn = await amqplib.connect(url);
  const client = new rrpc.Client({ url, timeout: 3 });
  try {
    const ch = await conn.createChannel();
    await ch.assertQueue(service, { durable: false });
    const got = new Promise((resolve) => {
      ch.consume(service, (m) => {
        ch.publish('', m.properties.replyTo,
          Buffer.from(JSON.stringify({ jsonrpc: '2.0', result: 'ok', id: JSON.parse(m.content).id })),
          { correlationId: m.properties.correlationId });
        resolve(m);
      }, { noAck: true });
    });
    assert.equal(await client.call(service, 'anything', [], { timeout: 2.5 }), 'ok');
    const m = await got;
    const body = JSON.parse(m.content);
    assert.ok(m.properties.replyTo.startsWith('amq.rabbitmq.reply-to'), m.properties.replyTo); // as the broker rewrote it
    assert.equal(m.properties.correlationId, body.id);
    assert.match(body.id, /^rrpc:reply:[0-9a-f]{32}$/);
    assert.equal(m.properties.contentType, 'application/json');
    assert.equal(m.properties.expiration, '2500');
    assert.equal(body.deadline, undefined); // the expiration does its job
  } finally {
    await client.close();
    await conn.close();
  }
});

test('no queue fails fast; timeouts; aborts; refusals; $RRPC_URL', { skip }, async () => {
  const client = new rrpc.Client({ url, timeout: 10 });
  const service = fresh();
  const { stop, server } = await serve(service, calc);
  try {
    const started = performance.now();
    await assert.rejects(client.call(fresh(), 'add', [1, 2]),
      (e) => e instanceof rrpc.Unavailable && /has no queue/.test(e.message));
    assert.ok(performance.now() - started < 2000, 'the missing queue was not reported at once');

    await assert.rejects(client.call(service, 'sleep', [600], { timeout: 0.2 }), rrpc.Timeout);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(client.call(service, 'sleep', [600], { signal: ac.signal }), rrpc.Aborted);
    // The late answers are dropped; the client still works.
    assert.equal(await client.call(service, 'add', [3, 4]), 7);

    await assert.rejects(client.call(service, 'add', [1, 2], { priority: 'high' }),
      (e) => e instanceof rrpc.Unsupported && e.message === 'priorities are not supported over AMQP yet');
    await assert.rejects(client.call(service, 'add', [1, 2], { progress: () => {} }),
      (e) => e instanceof rrpc.Unsupported && e.message === 'progress is not supported over AMQP yet');
    // amqps:// works (tests/amqp/test_amqps.sh); a TLS setting it cannot use
    // is refused up front, and TLS settings need amqps://.
    assert.throws(() => new rrpc.Client({ url: `${url.replace(/^amqp:/, 'amqps:')}?verify=maybe` }),
      (e) => e instanceof rrpc.AmqpError && /verify= takes verify_peer or verify_none/.test(e.message));
    assert.throws(() => new rrpc.Client({ url: `${url}?cacertfile=/ca.pem` }),
      (e) => e instanceof rrpc.AmqpError && /are for amqps:/.test(e.message));
    assert.ok(server.registry); // it answers registry queries (test/amqp_registry.test.js)

    const saved = { RRPC_URL: process.env.RRPC_URL, REDIS_URL: process.env.REDIS_URL };
    process.env.RRPC_URL = url;
    process.env.REDIS_URL = 'redis://127.0.0.1:1';
    const byEnv = new rrpc.Client({ timeout: 5 });
    try {
      assert.equal(await byEnv.call(service, 'add', [6, 7]), 13);
    } finally {
      await byEnv.close();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }

    const bad = new rrpc.Client({ url: url.replace('guest:guest@', 'guest:s3cr3t@'), timeout: 5 });
    await assert.rejects(bad.call(service, 'add', [1, 2]),
      (e) => e instanceof rrpc.AmqpError && !e.message.includes('s3cr3t') && /ACCESS.?REFUSED|403/i.test(e.message));
    await bad.close();
  } finally {
    await client.close();
    await stop();
  }
});

test('a redelivered request is kept as a dead letter, not run twice', { skip }, async () => {
  const service = fresh();
  const amqplib = require('amqplib');
  // Declared, then a message taken by a consumer that dies before its ack.
  const conn = await amqplib.connect(url);
  const ch = await conn.createChannel();
  await ch.assertQueue(service, { durable: false });
  ch.sendToQueue(service, Buffer.from('{"jsonrpc":"2.0","method":"count"}'));
  const taken = new Promise((resolve) => {
    ch.consume(service, () => resolve(), { noAck: false });
  });
  await taken;
  await conn.close();
  let runs = 0;
  const { stop, logger } = await serve(service, { count: () => ++runs });
  const client = new rrpc.Client({ url, timeout: 5 });
  try {
    assert.ok(await until(() => logger.lines.some((l) => l.includes('dead letter: redelivered: at most once'))),
      logger.lines.join('\n'));
    assert.equal(runs, 0);
    assert.equal(await client.call(service, 'count'), 1);
    const [props, body] = await deadLetter(service);
    assert.equal(props.headers['x-rrpc-reason'], 'redelivered: at most once, it may have run already');
    assert.equal(props.headers['x-rrpc-service'], service);
    assert.match(body, /"count"/);
  } finally {
    await client.close();
    await stop();
  }
});

/** The first message on SERVICE:dead: [properties, body text]. */
async function deadLetter(service) {
  const conn = await require('amqplib').connect(url);
  try {
    const ch = await conn.createChannel();
    for (let i = 0; i < 250; i++) {
      const m = await ch.get(`${service}:dead`, { noAck: true });
      if (m) return [m.properties, m.content.toString()];
      await sleep(20);
    }
    throw new Error(`nothing on ${service}:dead`);
  } finally {
    await conn.close();
  }
}

test('reliable: redeliveries counted, then a dead letter; the queue is the C server\'s', { skip }, async () => {
  const service = fresh();
  const amqplib = require('amqplib');
  const args = { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${service}:dead` };
  const conn = await amqplib.connect(url);
  const ch = await conn.createChannel();
  await ch.assertQueue(service, { durable: true, arguments: args });
  ch.sendToQueue(service, Buffer.from('{"jsonrpc":"2.0","method":"note","params":["once"]}'));
  ch.sendToQueue(service, Buffer.from('{"jsonrpc":"2.0","method":"note","params":["last"]}'),
    { headers: { 'x-rrpc-deliveries': { '!': 'long', value: 2 } } });
  let n = 0;
  const taken = new Promise((resolve) => {
    ch.consume(service, () => { if (++n === 2) resolve(); }, { noAck: false });
  });
  await taken;
  await conn.close(); // both back in the queue, marked redelivered
  const seen = [];
  const { server, stop } = await serve(service, { note: (t) => { seen.push(t); } }, { reliable: true });
  try {
    const [props, body] = await deadLetter(service);
    assert.equal(props.headers['x-rrpc-reason'], 'taken by 3 workers that died (max_deliveries 3)');
    assert.equal(props.deliveryMode, 2);
    assert.match(body, /"last"/);
    assert.ok(await until(() => seen.length === 1));
    assert.deepEqual(seen, ['once']);
    assert.equal(server.counts.redelivered, 2);
    assert.equal(server.counts.dead_letters, 1);
    await assert.rejects(new rrpc.Server(service, {}, { url, handleSignals: false, logger: memoryLogger() }).serveForever(),
      (e) => e instanceof rrpc.AmqpError && /exists with other settings/.test(e.message));
  } finally {
    await stop();
  }
});

test('after the broker closes every connection, the server and the client connect again',
  { skip: skip || (process.env.RRPC_TEST_AMQP_CTL ? false : 'RRPC_TEST_AMQP_CTL is not set') }, async () => {
    const service = fresh();
    const { stop, logger } = await serve(service, calc);
    const client = new rrpc.Client({ url, timeout: 5 });
    try {
      assert.equal(await client.call(service, 'add', [1, 1]), 2);
      execFileSync(process.env.RRPC_TEST_AMQP_CTL, ['close_all_connections', 'test'], { stdio: 'ignore' });
      assert.ok(await until(() => logger.lines.some((l) => l.includes('connected again')), 10000),
        logger.lines.join('\n'));
      // The client's link broke while idle: its next call makes it again.
      let got = null;
      for (let i = 0; i < 20 && got === null; i++) {
        got = await client.call(service, 'add', [2, 2]).catch((e) => {
          if (!(e instanceof rrpc.AmqpError)) throw e;
          return null;
        });
      }
      assert.equal(got, 4);
      // Its registry link broke too (its exclusive queue went with it): it joins again.
      let back = false;
      for (let i = 0; i < 50 && !back; i++) {
        back = registry.mine(service, await registry.ask(url, service, { want: service })).length === 1;
      }
      assert.ok(back, logger.lines.join('\n'));
    } finally {
      await client.close();
      await stop();
    }
  });
