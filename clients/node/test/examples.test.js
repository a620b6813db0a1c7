'use strict';
// examples.test.js -- examples/calc_server.js and calc_client.js as
// programs: the client's lines, and a graceful stop on SIGTERM and SIGINT.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { url, fresh, raw } = require('./helper');

const examples = path.join(__dirname, '..', 'examples');

function run(script, args) {
  const child = spawn(process.execPath, [path.join(examples, script), '--redis', url, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const done = new Promise((resolve) => child.on('close', (status, signal) => resolve({ status, signal, out })));
  return { child, done, output: () => out };
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  test(`calc_client.js against calc_server.js, then ${sig}: exit 0, record removed`, async () => {
    const service = fresh('calc');
    const server = run('calc_server.js', ['--service', service]);
    const client = run('calc_client.js', ['--service', service, '--timeout', '10']);
    const c = await client.done;
    assert.equal(c.status, 0, c.out);
    assert.deepEqual(c.out.trim().split('\n'), ['add(1, 2) = 3', 'subtract(a=5, b=3) = 2', 'multiply(4, 2.5) = 10',
      'divide(7, 2) = 3.5', 'divide(1, 0) failed: division by zero (code 1)']);
    server.child.kill(sig);
    const s = await server.done;
    assert.equal(s.status, 0, s.out);
    assert.match(s.out, /stopped/);
    const r = await raw();
    assert.equal(await r.zCard(`{${service}}:workers`), 0);
    await r.close();
  });
}
