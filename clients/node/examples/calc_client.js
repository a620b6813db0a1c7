#!/usr/bin/env node
'use strict';
// calc_client.js -- calls the calc service from Node and checks the answers.
//
// A usage example of rrpc.Client and a smoke test of any calc server (C,
// Ruby, Python, Node or seed-style): exits 1 if any answer is wrong.
//
//   node examples/calc_client.js [--redis URL | --url URL] [--service calc] [--prefix P] [--timeout S]

const rrpc = require('..');
const { parse } = require('./args');

const USAGE = `usage: calc_client.js [--redis URL | --url URL] [--service calc] [--prefix P] [--timeout S]
  --redis URL   Redis URL (default $RRPC_URL, $REDIS_URL, then redis://127.0.0.1:6379)
  --url URL     the same, or an AMQP broker's amqp://user:pass@host:port/vhost
`;

const show = (v) => JSON.stringify(v);

async function main(argv = process.argv.slice(2)) {
  const args = parse(argv, { redis: 'string', url: 'string', service: 'string', prefix: 'string', timeout: 'number' }, USAGE);
  const client = new rrpc.Client({ url: args.url || args.redis, prefix: args.prefix || '', timeout: args.timeout ?? 5 });
  const calc = client.proxy(args.service || 'calc');
  let wrong = 0;
  try {
    for (const [label, call, expected] of [
      ['add(1, 2)', () => calc.add(1, 2), 3],
      ['subtract(a=5, b=3)', () => client.call(args.service || 'calc', 'subtract', { a: 5, b: 3 }), 2],
      ['multiply(4, 2.5)', () => calc.multiply(4, 2.5), 10],
      ['divide(7, 2)', () => calc.divide(7, 2), 3.5],
    ]) {
      let got;
      try {
        got = await call();
      } catch (e) {
        if (!(e instanceof rrpc.Error)) throw e;
        console.log(`${label} failed: ${e.message}  WRONG, expected ${show(expected)}`);
        wrong++;
        continue;
      }
      const ok = got === expected;
      if (!ok) wrong++;
      console.log(`${label} = ${show(got)}${ok ? '' : `  WRONG, expected ${show(expected)}`}`);
    }
    try {
      const got = await calc.divide(1, 0);
      console.log(`divide(1, 0) = ${show(got)}  WRONG, expected an error`);
      wrong++;
    } catch (e) {
      if (e instanceof rrpc.RemoteError) {
        console.log(`divide(1, 0) failed: ${e.message} (code ${e.code})`);
        if (e.code !== 1) wrong++;
      } else if (e instanceof rrpc.Error) {
        console.log(`divide(1, 0) failed: ${e.message}  WRONG, expected error code 1`);
        wrong++;
      } else {
        throw e;
      }
    }
  } finally {
    await client.close();
  }
  return wrong ? 1 : 0;
}

module.exports = { main };

if (require.main === module) {
  main().then((status) => {
    process.exitCode = status;
  });
}
