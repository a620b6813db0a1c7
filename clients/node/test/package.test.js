'use strict';
// package.test.js -- the package as published: its version is the
// repository's VERSION, its types name every export, its lockfile pins
// the redis it was tested with.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const rrpc = require('..');
const pkg = require('../package.json');

const here = path.join(__dirname, '..');

test('the version is the repository VERSION file', () => {
  const file = process.env.RRPC_VERSION_FILE || path.join(here, '..', '..', 'VERSION');
  const version = fs.readFileSync(file, 'utf8').trim();
  assert.equal(pkg.version, version);
  assert.equal(rrpc.VERSION, version);
});

test('package.json, the lockfile and the types agree', () => {
  assert.equal(pkg.name, 'rrpc');
  const lock = JSON.parse(fs.readFileSync(path.join(here, 'package-lock.json'), 'utf8'));
  assert.equal(lock.packages[''].version, pkg.version);
  assert.match(lock.packages['node_modules/redis'].version, /^6\./);
  const types = fs.readFileSync(path.join(here, pkg.types), 'utf8');
  for (const name of Object.keys(rrpc)) assert.match(types, new RegExp(`\\b${name}\\b`), name);
  for (const file of pkg.files) assert.ok(fs.existsSync(path.join(here, file)), file);
});

test('every error is an rrpc.Error', () => {
  for (const cls of [rrpc.RemoteError, rrpc.Timeout, rrpc.Unavailable, rrpc.Overloaded, rrpc.ProtocolError,
    rrpc.RedisError, rrpc.Aborted, rrpc.RpcError, rrpc.InvalidParams]) {
    assert.ok(new cls(1, 'x') instanceof rrpc.Error, cls.name);
    assert.ok(new cls(1, 'x') instanceof Error, cls.name);
  }
  assert.equal(new rrpc.InvalidParams('x').code, -32602);
});
