'use strict';
// stream.js -- progress and cancellation inside a handler (PROTOCOL.md 7).
//
// A handler sends progress with rrpc.progress(value): pushed onto the
// request's reply key at once, before its answer, but only when the caller
// asked ("progress": true), so a seed-style caller never sees one.  It sees
// its caller's cancel with rrpc.cancelled(): the request's cancel_key
// exists, asked of Redis at most every 50 ms and remembered.  Both follow
// the handler across awaits (an AsyncLocalStorage).  Calls made inside a
// handler carry its cancel key, so cancelling one request cancels the calls
// it made.

const { AsyncLocalStorage } = require('node:async_hooks');
const { dumps } = require('./protocol');

const LOOK_EVERY_MS = 50;
const store = new AsyncLocalStorage();

/** One request being handled; SINK sends progress and reads cancel keys (the server). */
class Handled {
  constructor(sink, req, key) {
    this.sink = sink;
    this.id = req.id;
    this.key = key !== null && key !== undefined && Object.prototype.hasOwnProperty.call(req, 'id') ? key : null;
    this.wants = req.progress === true && this.key !== null;
    this.cancelKey = typeof req.cancel_key === 'string' && req.cancel_key !== '' ? req.cancel_key : null;
    this.isCancelled = false;
    this.lookedAt = null;
    this.done = false;
  }

  async cancelled() {
    if (this.cancelKey === null || this.done) return false;
    if (this.isCancelled) return true;
    const now = performance.now();
    if (this.lookedAt !== null && now - this.lookedAt < LOOK_EVERY_MS) return false;
    this.lookedAt = now;
    this.isCancelled = await this.sink.cancelKeyExists(this.cancelKey);
    return this.isCancelled;
  }
}

/** Runs FN (and all it starts) as the handler of REQ; KEY its reply key (null in a batch). */
async function handling(sink, req, key, fn) {
  const h = new Handled(sink, req, key);
  try {
    return await store.run(h, () => fn(h));
  } finally {
    h.done = true;
  }
}

/**
 * Sends VALUE (any JSON) as progress of the request being handled, if its
 * caller asked; resolves to true if sent.  Throws (synchronously) outside a
 * handler, e.g. after its answer.
 */
function progress(value) {
  const h = store.getStore();
  if (!h || h.done) throw new Error('rrpc.progress: no request is being handled (after its answer?)');
  if (!h.wants) return Promise.resolve(false);
  const body = dumps({ jsonrpc: '2.0', method: 'rpc.progress', params: { id: h.id, progress: value } });
  return h.sink.sendProgress(h.key, body);
}

/** Resolves to true if the caller of the request being handled cancelled it. */
function cancelled() {
  const h = store.getStore();
  return h ? h.cancelled() : Promise.resolve(false);
}

/** The cancel key calls made inside a handler carry, or null. */
function inheritedCancelKey() {
  const h = store.getStore();
  return h && !h.done ? h.cancelKey : null;
}

module.exports = { handling, progress, cancelled, inheritedCancelKey };
