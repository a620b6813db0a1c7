'use strict';
// index.js -- rrpc for Node.js: JSON-RPC 2.0 over Redis lists.
//
// rrpc's core is C, but the protocol (docs/PROTOCOL.md) is meant to be
// spoken by any language with a Redis client.  This package is that peer for
// Node, built only on the `redis` package, so Node programs call rrpc
// services and serve them, interchangeably with the C, Ruby and Python peers:
//
//   const calc = new rrpc.Client().proxy('calc');
//   await calc.add(1, 2);                           // 3
//
//   new rrpc.Server('calc', { add: (a, b) => a + b }).serveForever();
//
// Its modules, one concern each: protocol (JSON-RPC rules and strict JSON,
// no I/O), deadletter (the record of what cannot be answered), transport
// (Redis: connections, the clock, the reply script, transient errors),
// replies (which reply keys a worker accepts), trace (W3C Trace Context
// and the handled request, in an AsyncLocalStorage), handlers (finding, binding
// and calling methods), registry (heartbeat and stats), client, server,
// errors.  Types: index.d.ts.

const errors = require('./lib/errors');
const { Client } = require('./lib/client');
const { Server } = require('./lib/server');
const { describe, rawParams, signature } = require('./lib/handlers');
const { Real } = require('./lib/protocol');
const { VERSION } = require('./lib/version');
const { currentTraceparent, currentTracestate } = require('./lib/trace');
const { cancelled, progress } = require('./lib/stream');
const { PRIORITIES } = require('./lib/priority');

module.exports = {
  Client,
  Server,
  ...errors,
  describe,
  rawParams,
  signature,
  Real,
  real: (value) => new Real(value),
  VERSION,
  currentTraceparent,
  currentTracestate,
  progress,
  cancelled,
  PRIORITIES,
};
