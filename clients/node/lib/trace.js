'use strict';
// trace.js -- W3C Trace Context for requests (PROTOCOL.md section 7).
//
// The rules for a received traceparent, new ones, and the request the
// current async context is handling, in an AsyncLocalStorage: calls made
// from inside a handler -- after any number of awaits, timers or callbacks
// it started -- continue its trace and, like the C peer's, get no more time
// than its deadline leaves.  Ids come from crypto.randomBytes (OpenSSL's
// generator: no syscall per call); they need to be unlikely to collide,
// not secret.

const crypto = require('node:crypto');
const { AsyncLocalStorage } = require('node:async_hooks');
const { deadlineOf } = require('./protocol');

const LENGTH = 55; // a version-00 traceparent
const STATE_MAX = 512;
const FIELDS = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const STATE = /^[\x20-\x7e]*$/;
const ZEROS = /^0+$/;

// What the current async context is handling: {traceparent, tracestate,
// deadline}, or undefined.
const handled = new AsyncLocalStorage();

/**
 * A received traceparent as version 00, or null if the recommendation calls
 * it invalid: version ff, a version-00 value that is not exactly 55
 * characters, a later one not followed by '-' after them, anything but
 * lowercase hex, an all-zero trace or parent id.
 */
function parse(value) {
  if (typeof value !== 'string' || value.length < LENGTH) return null;
  const head = value.slice(0, LENGTH);
  if (!FIELDS.test(head) || head.startsWith('ff')) return null;
  if (head.startsWith('00') ? value.length !== LENGTH : value.length > LENGTH && value[LENGTH] !== '-') return null;
  if (ZEROS.test(head.slice(3, 35)) || ZEROS.test(head.slice(36, 52))) return null;
  return `00${head.slice(2)}`;
}

/** Whether VALUE may travel as a tracestate: at most 512 printable ASCII characters. */
function stateOk(value) {
  return typeof value === 'string' && value.length <= STATE_MAX && STATE.test(value);
}

function randomHex(bytes) {
  for (;;) {
    const hex = crypto.randomBytes(bytes).toString('hex');
    if (!ZEROS.test(hex)) return hex;
  }
}

/** A new trace: random ids, flags 00 (rrpc records no spans). */
function fresh() {
  return `00-${randomHex(16)}-${randomHex(8)}-00`;
}

/** The same trace and flags with a new parent id. */
function child(traceparent) {
  return traceparent.slice(0, 36) + randomHex(8) + traceparent.slice(52);
}

/**
 * {traceparent, tracestate?} for a request: the caller's (a TypeError if
 * invalid), else the handled request's continued, else a new trace.
 */
function outgoing(traceparent, tracestate) {
  if (tracestate !== undefined && tracestate !== null && !stateOk(tracestate)) {
    throw new TypeError('rrpc: tracestate: at most 512 printable ASCII characters');
  }
  let parent;
  let state = tracestate === undefined ? null : tracestate;
  if (traceparent !== undefined && traceparent !== null) {
    parent = parse(traceparent);
    if (parent === null) throw new TypeError(`rrpc: not a valid W3C traceparent: ${JSON.stringify(traceparent)}`);
  } else {
    const now = handled.getStore();
    if (now && now.traceparent) {
      parent = child(now.traceparent);
      if (state === null) state = now.tracestate;
    } else {
      parent = fresh();
    }
  }
  return state === null ? { traceparent: parent } : { traceparent: parent, tracestate: state };
}

/** {traceparent, tracestate, deadline} of the request being handled, or null. */
function current() {
  return handled.getStore() || null;
}

/** Runs FN (and all it starts) as the handler of REQ (a request object). */
function handling(req, fn) {
  const traceparent = parse(req.traceparent);
  const tracestate = traceparent && stateOk(req.tracestate) ? req.tracestate : null;
  const deadline = deadlineOf(req);
  return handled.run({ traceparent, tracestate, deadline: deadline === null ? null : Number(deadline) }, fn);
}

/** ' (trace ID)' for a log line, or ''. */
function logSuffix(traceparent) {
  return traceparent ? ` (trace ${traceparent.slice(3, 35)})` : '';
}

/**
 * The handled request's traceparent ('00-<trace id>-<parent id>-<flags>'),
 * or null outside a handler or when it carried none (or an invalid one,
 * which is ignored).
 */
function currentTraceparent() {
  const now = handled.getStore();
  return now ? now.traceparent : null;
}

/** The handled request's tracestate, or null. */
function currentTracestate() {
  const now = handled.getStore();
  return now ? now.tracestate : null;
}

module.exports = {
  parse, stateOk, fresh, child, outgoing, current, handling, logSuffix, currentTraceparent, currentTracestate,
};
