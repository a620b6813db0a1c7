#!/usr/bin/env node
'use strict';
// call_peer.js -- one call from the Node peer, for the interop tests: prints
// each progress value as one JSON line as it comes (--stream), then the
// result, as `rrpc call --stream` does.
//
// Usage: call_peer.js [--priority P] [--stream] [--timeout S] SERVICE METHOD PARAMS_JSON

const path = require('node:path');
const rrpc = require(path.join(__dirname, '..', '..', 'clients', 'node'));

const argv = process.argv.slice(2);
const opts = { timeout: 30 };
while (argv[0] && argv[0].startsWith('--')) {
  const flag = argv.shift();
  if (flag === '--stream') opts.stream = true;
  else if (flag === '--priority') opts.priority = argv.shift();
  else if (flag === '--timeout') opts.timeout = Number(argv.shift());
  else throw new Error(`unknown option ${flag}`);
}
const [service, method, params] = argv;

(async () => {
  const client = new rrpc.Client({ timeout: opts.timeout });
  try {
    const show = opts.stream ? (v) => process.stdout.write(`${JSON.stringify(v)}\n`) : undefined;
    const result = await client.call(service, method, JSON.parse(params), { priority: opts.priority, progress: show });
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } catch (e) {
    if (!(e instanceof rrpc.RemoteError)) throw e;
    process.stderr.write(`error ${e.code}: ${e.message}\n`);
    process.exitCode = 1;
  } finally {
    await client.close();
  }
})();
