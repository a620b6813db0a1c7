#!/usr/bin/env node
'use strict';
// fault_worker.js -- the Node calc worker plus handlers that throw what a
// worker must survive (check_peer_faults.py drives it).
//
// Each fault method throws something that is not an Error, rejects, leaves
// a stray rejection or timer exception behind, or exhausts the stack; the
// worker must answer -32603 and go on.  exit ends the worker gracefully
// with status 3 (the Node counterpart of SystemExit in a Python handler).
//
//   node fault_worker.js --redis URL --service NAME

const path = require('node:path');

const root = path.join(__dirname, '..', '..', 'clients', 'node');
const rrpc = require(root);
const { calc } = require(path.join(root, 'examples', 'calc_server'));

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];

let server;
const recurse = (n) => recurse(n + 1) + 1; // RangeError: Maximum call stack size exceeded
const hostile = new Proxy({}, { get() { throw new Error('trap'); }, getPrototypeOf() { throw new Error('trap'); } });

const faulty = {
  ...calc,
  throw_string: () => {
    throw 'a string'; // eslint-disable-line no-throw-literal
  },
  throw_undefined: () => {
    throw undefined; // eslint-disable-line no-throw-literal
  },
  throw_proxy: () => {
    throw hostile;
  },
  recurse: () => recurse(0),
  reject_number: () => Promise.reject(42),
  stray: async () => {
    Promise.reject(new Error('a stray rejection nobody awaits'));
    setTimeout(() => {
      throw new Error('a stray exception from a timer');
    }, 0);
    throw new Error('and its own');
  },
  exit: () => {
    server.stop();
    process.exitCode = 3;
    return 'stopping';
  },
};

server = new rrpc.Server(args.service, faulty, { url: args.redis });
server.serveForever().then(() => process.stderr.write('fault_worker.js: stopped\n'));
