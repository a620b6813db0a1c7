#!/usr/bin/env node
'use strict';
// node_ha_calls.js -- the Node peer's side of tests/scale/test_node_ha.sh.
//
//   node node_ha_calls.js loop URL SERVICE SECONDS
//       one long-lived rrpc.Client calling SERVICE.add(1, 2) every 100 ms
//       (timeout 1 s) for SECONDS; one line per call: "ok MS" or
//       "err MS ErrorName: message" (MS: Date.now() when it ended)
//   node node_ha_calls.js once URL SERVICE
//       calls add, multiply and a high-priority add (with progress asked
//       for) once each; prints the results as JSON, exit 1 on an error
//   node node_ha_calls.js serve URL SERVICE [limits]
//       serves calc-like add, multiply and count (progress) with the Node server; prints
//       the error of a refused start ("refused ErrorName: message")

const rrpc = require(process.env.RRPC_NODE_PACKAGE || '../../clients/node');

const [mode, url, service, arg] = process.argv.slice(2);

async function loop() {
  const client = new rrpc.Client({ url, timeout: 1 });
  const end = performance.now() + Number(arg) * 1000;
  while (performance.now() < end) {
    const began = performance.now();
    try {
      const r = await client.call(service, 'add', [1, 2]);
      console.log(r === 3 ? `ok ${Date.now()}` : `err ${Date.now()} wrong answer ${JSON.stringify(r)}`);
    } catch (e) {
      console.log(`err ${Date.now()} ${e.name}: ${e.message}`);
    }
    const left = 100 - (performance.now() - began);
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
  }
  await client.close();
}

async function once() {
  const client = new rrpc.Client({ url, timeout: 5 });
  try {
    const seen = [];
    const out = {
      add: await client.call(service, 'add', [1, 2]),
      multiply: await client.call(service, 'multiply', { a: 4, b: 5 }),
      high: await client.call(service, 'add', [2, 3], { priority: 'high' }),
      progress: await client.call(service, 'count', [3, 0], { progress: (v) => seen.push(v) }),
    };
    out.seen = seen;
    await client.notify(service, 'add', [0, 0]);
    console.log(JSON.stringify(out));
  } finally {
    await client.close();
  }
}

async function serve() {
  const server = new rrpc.Server(service, {
    add: (a, b) => a + b,
    multiply: (a, b) => a * b,
    count: async (n, _ms) => { // as the C calc-server's count(n, ms)
      for (let i = 1; i <= n; i++) await rrpc.progress(i);
      return n;
    },
  }, { url, startTimeout: 10 });
  try {
    await server.serveForever();
  } catch (e) {
    console.log(`refused ${e.name}: ${e.message}`);
    process.exitCode = 2;
  }
}

({ loop, once, serve })[mode]().catch((e) => {
  console.log(`failed ${e.name}: ${e.message}`);
  process.exitCode = 1;
});
