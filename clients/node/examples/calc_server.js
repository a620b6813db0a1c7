#!/usr/bin/env node
'use strict';
// calc_server.js -- the calc example service, served from Node.
//
// It exists to show a Node rrpc worker in a dozen lines and to be the Node
// side of the cross-language tests (clients/test_peers.sh,
// tests/interop/test_interop.sh) and of the conformance vectors: it
// answers exactly like the C calc server.
//
//   node examples/calc_server.js [--redis URL | --url URL] [--service calc] [--prefix P]
//       [--no-heartbeat] [--heartbeat-interval S] [--heartbeat-ttl S]
//       [--reply-prefix P]... [--batch-time S] [--start-timeout S] [--max-queue N]

const rrpc = require('..');
const { parse } = require('./args');

// JSON true/false/null would pass as numbers in JS arithmetic: refuse them.
// An integer beyond 2^53 arrives as a BigInt, exact.
function number(value, name) {
  if (typeof value !== 'number' && typeof value !== 'bigint') {
    throw new rrpc.InvalidParams(`Invalid params: ${name} must be a number`);
  }
  return value;
}

const whole = (v) => typeof v === 'bigint' || Number.isInteger(v);

// Integers give an exact integer (as the C server's int64 arithmetic does),
// past 2^53 too; otherwise a real: a JS number does not say whether JSON
// wrote it 4 or 4.0, so a result is written as a real (10.0) when an operand
// was not a whole number, as the C server's would be for 4 * 2.5.
function arith(op) {
  return (a, b) => {
    const x = number(a, 'a');
    const y = number(b, 'b');
    if (whole(x) && whole(y)) {
      const r = op(BigInt(x), BigInt(y));
      return r >= BigInt(Number.MIN_SAFE_INTEGER) && r <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(r) : r;
    }
    return rrpc.real(op(Number(x), Number(y)));
  };
}

const AB = { a: 'number', b: 'number' };
const CANCELLED = -32002;

/** Waits MS milliseconds in 20 ms steps; resolves to true if the caller cancelled. */
async function sleepUnlessCancelled(ms) {
  const end = performance.now() + ms;
  for (;;) {
    if (await rrpc.cancelled()) return true;
    const left = end - performance.now();
    if (left <= 0) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(left, 20)));
  }
}

// Where forward's calls go: the server's Redis and prefix (main sets them).
// One client for all: its calls may run concurrently.
const forwarding = { url: undefined, prefix: '', client: null };

function forwardClient() {
  if (!forwarding.client) forwarding.client = new rrpc.Client({ url: forwarding.url, prefix: forwarding.prefix });
  return forwarding.client;
}

/** Closes forward's client, if it was made (so that the process can exit). */
async function closeForward() {
  const client = forwarding.client;
  forwarding.client = null;
  if (client) await client.close();
}

/**
 * A call made from inside the handler: it continues the request's trace and
 * gets no more time than its deadline leaves.  A remote error is answered as
 * it came; a failed call is error 3.
 */
async function forward(service, method, params = null) {
  if (typeof service !== 'string' || typeof method !== 'string') {
    throw new rrpc.InvalidParams('Invalid params: service and method must be strings');
  }
  if (params !== null && typeof params !== 'object') {
    throw new rrpc.InvalidParams('Invalid params: params must be an array, an object or null');
  }
  try {
    return await forwardClient().call(service, method, params);
  } catch (e) {
    if (e instanceof rrpc.RemoteError) throw new rrpc.RpcError(e.code, e.message, e.data);
    if (e instanceof rrpc.Error) throw new rrpc.RpcError(3, 'forward failed', { error: e.name, detail: e.message });
    throw e;
  }
}

/** The calc service's methods; params come positional [a, b] or named {"a": .., "b": ..}. */
const calc = {
  add: rrpc.describe('add(a, b): a + b', AB, arith((a, b) => a + b)),
  subtract: rrpc.describe('subtract(a, b): a - b', AB, arith((a, b) => a - b)),
  multiply: rrpc.describe('multiply(a, b): a * b', AB, arith((a, b) => a * b)),
  divide: rrpc.describe('divide(a, b): a / b as a real; error 1 if b is 0', AB, (a, b) => {
    // Both operands are checked before the zero test, like the other methods.
    const x = Number(number(a, 'a'));
    const y = Number(number(b, 'b'));
    if (y === 0) throw new rrpc.RpcError(1, 'division by zero');
    return rrpc.real(x / y);
  }),
  echo: rrpc.describe('echo(...): returns its params unchanged', 'any', rrpc.rawParams((params) => params)),
  sleep: rrpc.describe('sleep(ms): waits ms milliseconds, returns ms', { ms: 'integer' }, async (ms) => {
    if (Number(number(ms, 'ms')) < 0) throw new rrpc.InvalidParams('Invalid params: ms must not be negative');
    if (await sleepUnlessCancelled(Number(ms))) throw new rrpc.RpcError(CANCELLED, 'Cancelled');
    return ms;
  }),
  count: rrpc.describe('count(n, ms): sends 1..n as progress, one every ms milliseconds, returns n',
    { n: 'integer', ms: 'integer' }, async (n, ms) => {
      if (!Number.isInteger(n) || !Number.isInteger(ms) || n < 0 || ms < 0) {
        throw new rrpc.InvalidParams('Invalid params: n and ms must be integers >= 0');
      }
      for (let i = 1; i <= n; i++) {
        if (await sleepUnlessCancelled(ms)) throw new rrpc.RpcError(CANCELLED, 'Cancelled');
        await rrpc.progress(i); // sent only if the caller asked
      }
      return n;
    }),
  forward: rrpc.describe("forward(service, method, params): calls service.method(params) and returns its answer, " +
    "within this call's deadline and trace", { service: 'string', method: 'string', params: 'array|object' }, forward),
};

const USAGE = `usage: calc_server.js [--redis URL | --url URL] [--service calc] [--prefix P] [--no-heartbeat]
    [--heartbeat-interval S] [--heartbeat-ttl S] [--reply-prefix P]... [--batch-time S]
    [--start-timeout S] [--max-queue N] [--reliable] [--max-deliveries N]
  --redis URL             Redis URL (default $RRPC_URL, $REDIS_URL, then redis://127.0.0.1:6379)
  --url URL               the same, or an AMQP broker's amqp://user:pass@host:port/vhost
  --no-heartbeat          do not register in the registry (no heartbeat, no stats)
  --reply-prefix P        answer only onto reply keys that start with P (repeatable)
  --batch-time S          a batch runs at most S seconds (default 5; 0: no limit)
  --start-timeout S       wait at most S seconds for Redis at start (default 0: as long
                          as it takes; negative: do not wait)
  --max-queue N           at most N requests wait (callers get "overloaded"; default 0)
  --reliable              over AMQP: at least once -- durable queue, acked after the answer
                          is confirmed, redeliveries counted (the C server's --reliable;
                          not over Redis in this peer)
  --max-deliveries N      reliable: a request taken by N workers that died becomes a dead
                          letter (default 3)
`;


/** Serves calc (or HANDLERS) as the command line says; resolves to the exit status. */
async function main(argv = process.argv.slice(2), handlers = calc, name = 'calc_server.js') {
  const args = parse(argv, {
    redis: 'string', url: 'string', service: 'string', prefix: 'string', noHeartbeat: 'flag', heartbeatInterval: 'number',
    heartbeatTtl: 'number', replyPrefix: 'list', batchTime: 'number', startTimeout: 'number', maxQueue: 'number',
    reliable: 'flag', maxDeliveries: 'number',
  }, USAGE);
  const line = (level) => (m) => process.stderr.write(`${new Date().toISOString()} ${name}: ${level}${m}\n`);
  const options = {
    url: args.url || args.redis, prefix: args.prefix || '', heartbeat: !args.noHeartbeat,
    heartbeatInterval: args.heartbeatInterval ?? 1.0, heartbeatTtl: args.heartbeatTtl ?? 5.0,
    replyPrefixes: args.replyPrefix || null, batchTimeLimit: args.batchTime ?? 5.0,
    startTimeout: args.startTimeout ?? 0, maxQueue: args.maxQueue ?? 0,
    logger: { info: line(''), warn: line('warning: '), error: line('error: ') },
  };
  if (args.reliable) Object.assign(options, { reliable: true, maxDeliveries: args.maxDeliveries ?? 3 });
  let server;
  try {
    server = new rrpc.Server(args.service || 'calc', handlers, options);
  } catch (e) {
    if (!(e instanceof rrpc.Unsupported)) throw e;
    line('error: ')(e.message);
    return 1;
  }
  forwarding.url = args.url || args.redis;
  forwarding.prefix = args.prefix || '';
  line('')(`serving ${args.prefix || ''}${args.service || 'calc'}`);
  try {
    await server.serveForever();
  } catch (e) {
    if (!(e instanceof rrpc.RedisError || e instanceof rrpc.Unsupported || e instanceof rrpc.AmqpError)) throw e;
    line('error: ')(e.message);
    return 1;
  } finally {
    await closeForward();
  }
  line('')('stopped');
  return 0;
}

module.exports = { calc, closeForward, main };

if (require.main === module) {
  main().then((status) => {
    process.exitCode = status;
  });
}
