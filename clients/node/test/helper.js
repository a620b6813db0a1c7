'use strict';
// helper.js -- what the package's tests share: the private Redis of
// tests/harness/with-redis.sh ($REDIS_URL), a raw connection to look at the
// wire, fresh service names, and servers run in this process.

const crypto = require('node:crypto');
const path = require('node:path');
const { createClient } = require('redis');
const rrpc = require('..');

const url = process.env.REDIS_URL;
if (!url) throw new Error('REDIS_URL is not set: run the tests under tests/harness/with-redis.sh');

/** A raw redis connection (not rrpc's), connected. */
async function raw() {
  const options = url.startsWith('unix:') ? { socket: { path: new URL(url).pathname } } : { url };
  const r = createClient({ ...options, RESP: 2 });
  r.on('error', () => {});
  await r.connect();
  return r;
}

const fresh = (what = 'svc') => `test_${what}_${crypto.randomBytes(4).toString('hex')}`;

// A logger that keeps the lines, for tests that look at what was logged.
function memoryLogger() {
  const lines = [];
  const keep = (level) => (m) => lines.push(`${level}: ${m}`);
  return { lines, info: keep('info'), warn: keep('warn'), error: keep('error') };
}

/** Starts a Server in this process; resolves once it answers rpc.ping. */
async function serve(service, handlers, options = {}) {
  const logger = options.logger || memoryLogger();
  const server = new rrpc.Server(service, handlers, { url, handleSignals: false, logger, ...options });
  const done = server.serveForever();
  const client = new rrpc.Client({ url, timeout: 5, failFast: false });
  try {
    await client.call(service, 'rpc.ping');
  } finally {
    await client.close();
  }
  return { server, logger, stop: async () => { server.stop(); await done; } };
}

/** The repository around this package, or null when it is installed elsewhere. */
function repository() {
  const root = process.env.RRPC_ROOT || path.resolve(__dirname, '..', '..', '..');
  try {
    require('node:fs').accessSync(path.join(root, 'VERSION'));
    return root;
  } catch {
    return null;
  }
}

module.exports = { url, raw, fresh, serve, memoryLogger, repository, rrpc };
