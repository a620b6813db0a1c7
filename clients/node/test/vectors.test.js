'use strict';
// vectors.test.js -- the language-neutral conformance vectors
// (tests/vectors) and check_protocol.py against a Node calc server, when the
// package is tested inside the repository (ctest's node_package).

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const { fresh, serve, repository } = require('./helper');
const { calc } = require('../examples/calc_server');

const root = repository();
const python = process.env.RRPC_PYTHON || 'python3';

test('the conformance vectors and check_protocol.py pass', { skip: root ? false : 'not in the repository' }, async () => {
  const service = fresh('vectors');
  const { stop } = await serve(service, calc);
  try {
    // Run asynchronously: the server answers in this very process.
    for (const args of [[path.join(root, 'tests', 'vectors', 'run_vectors.py'), '--service', service],
      [path.join(root, 'clients', 'check_protocol.py'), '--service', service]]) {
      const { status, out } = await run(python, args);
      assert.equal(status, 0, out.split('\n').filter((l) => !/^(PASS|ok) /.test(l)).join('\n'));
    }
  } finally {
    await stop();
  }
});

function run(cmd, args) {
  return new Promise((resolve) => {
    const child = require('node:child_process').spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('close', (status) => resolve({ status, out }));
  });
}
