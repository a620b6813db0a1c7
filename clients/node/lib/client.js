'use strict';
// client.js -- calls rrpc services: rrpc.Client and its proxies.
//
// Like the C client, every call carries a deadline on Redis's clock
// (PROTOCOL.md 7) and a reply key of 128 random bits (section 3), and reads
// the registry (section 9) to fail fast when a registered service has no
// live worker and to respect its max_queue.  Calls are promises and may
// run concurrently: each waits for its reply on a connection of its own
// (BLPOP blocks the connection it is sent on), taken from a small pool, so
// that an AbortSignal can end a wait by closing that connection.

const crypto = require('node:crypto');
const { Aborted, Error: RrpcError, Overloaded, ProtocolError, RedisError, RemoteError, Timeout, Unavailable } = require('./errors');
const { dumps, isObject, loads, request } = require('./protocol');
const trace = require('./trace');
const prio = require('./priority');
const stream = require('./stream');
const amqp = require('./amqp');
const { RedisClock, close, command, connection, errorText, isReply, open } = require('./transport');

const FRESH_MS = 1000; // how long a service's registry view is trusted
const SLICE_S = 1.0; // wait slice while a registered service is awaited
const IDLE_WAITERS = 4; // blocking connections kept for the next calls

// Checks the queue length and pushes in one step, so that concurrent callers
// cannot overshoot max_queue.  The new length, or -1 if full.
const PUSH_SCRIPT = "if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end " +
  "return redis.call('RPUSH', KEYS[1], ARGV[1])";

const NO_VIEW = Object.freeze({ registered: false, live: 0, maxQueue: 0 }); // fail fast off, or unreadable
const GONE = Symbol('gone'); // wait's answer when the last worker went

class CallAborted extends Error {}

/**
 * Calls rrpc services over one Redis connection (plus one per reply being
 * awaited), or through an AMQP broker when the URL is amqp://user:pass@host:port/vhost
 * (PROTOCOL.md 12).  Options: url ($RRPC_URL, $REDIS_URL, then redis://127.0.0.1:6379), prefix
 * (''), timeout (30 s; 0 waits forever), failFast (true).  Every error is an
 * rrpc.Error; Redis's own come as RedisError.  close() when done.
 */
class Client {
  constructor(options = {}) {
    this.url = options.url;
    this.prefix = options.prefix || '';
    this.timeout = options.timeout === undefined ? 30 : options.timeout;
    this.failFast = options.failFast === undefined ? true : options.failFast;
    this.clock = new RedisClock();
    this.views = new Map(); // list key -> {at, view}
    this.conn = null;
    this.connecting = null;
    this.idle = []; // blocking connections ready for a wait
    this.waiting = new Set(); // blocking connections in a wait
    this.closed = false;
    const url = amqp.resolveUrl(this.url);
    this.amqp = amqp.isAmqp(url) ? new amqp.AmqpCaller(url) : null;
    if (this.amqp) return;
    // Made now, connected on first use: the redis package's first client
    // costs tens of ms of setup, which should not count against a call.
    this.unopened = connection(this.url);
  }

  /** The connection for commands that do not block, connected on first use. */
  async redis() {
    if (this.closed) throw new RedisError('the client is closed');
    if (this.conn) return this.conn;
    if (!this.connecting) {
      this.connecting = (async () => {
        const conn = this.unopened || connection(this.url);
        this.unopened = null;
        await this.connectOrFail(conn);
        this.conn = conn;
        return conn;
      })().finally(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  async connectOrFail(conn) {
    // A first connect that fails is the caller's error, not a wait forever.
    let first = null;
    const failed = new Promise((resolve) => {
      conn.on('error', (e) => {
        first = first || e;
        resolve();
      });
    });
    let ok;
    try {
      ok = await open(conn, failed);
    } catch (e) {
      throw new RedisError(`redis: ${errorText(e)}`, { cause: e });
    }
    if (!ok) throw new RedisError(`redis: ${errorText(first)}`, { cause: first });
  }

  /** Closes the client's connections; calls still waiting end with RedisError. */
  async close() {
    this.closed = true;
    if (this.amqp) await this.amqp.close();
    if (this.connecting) await this.connecting.catch(() => {});
    for (const c of this.idle.splice(0)) close(c);
    for (const c of this.waiting) close(c);
    if (this.conn) close(this.conn);
    this.conn = null;
  }

  /**
   * Calls SERVICE.METHOD and resolves to its result.  PARAMS: an array
   * (positional), an object (named), or absent.  OPTIONS: timeout (seconds,
   * this call's own; 0 waits forever), signal (an AbortSignal: the call ends
   * with Aborted and its request is withdrawn if still queued), traceparent
   * and tracestate (W3C Trace Context, PROTOCOL.md 7; a TypeError if
   * invalid).  Without a traceparent a call made inside a handler continues
   * the handled request's trace (and gets no more time than its deadline
   * leaves); any other starts a new trace.  An aborted signal also tells a
   * worker already running the request to stop (its cancel_key, PROTOCOL.md
   * 7); a call made inside a handler is cancelled with the handled request.
   * progress (a function) asks for the handler's progress: it gets each
   * value, in order, before the call resolves.  priority: 'high', 'normal'
   * (the default) or 'low' (a TypeError or RangeError otherwise): under a
   * backlog, higher ones are served first.  tenant: a non-empty string sent
   * as the request's "tenant" member (for the C server's per-tenant
   * limits).  Rejects with RemoteError, Timeout, Unavailable, Overloaded,
   * ProtocolError, RedisError, Aborted.
   */
  async call(service, method, params, options = {}) {
    request(method, params); // a TypeError for params that are neither an array nor an object
    if (options.progress !== undefined && typeof options.progress !== 'function') {
      throw new TypeError('rrpc: progress must be a function');
    }
    const traced = members(options); // a TypeError (RangeError) if invalid
    try {
      if (this.amqp) return await this.amqpCall(service, method, params, options, traced);
      return await this.doCall(service, method, params, options, traced);
    } catch (e) {
      if (e instanceof RrpcError) throw e;
      throw this.redisError(service, method, e);
    }
  }

  redisError(service, method, e) {
    return new RedisError(`${service}.${method}: redis: ${errorText(e)}`, { cause: e });
  }

  /**
   * Sends a notification: run by a worker, never answered.  It carries a
   * trace context as calls do (OPTIONS: traceparent, tracestate).
   */
  async notify(service, method, params, options = {}) {
    const own = members(options);
    const text = dumps(request(method, params, own));
    if (this.amqp) {
      if (own.priority) throw amqp.unsupported('priorities', 'are');
      return this.amqp.notify(this.prefix + service, text);
    }
    const conn = await this.redis();
    try {
      await this.push(conn, this.prefix + service, text, 0, own.priority);
    } catch (e) {
      throw this.redisError(service, method, e);
    }
  }

  /**
   * An object whose methods are calls: proxy('calc').add(1, 2) is
   * call('calc', 'add', [1, 2], options).  Positional params only; named
   * params go through call().
   */
  proxy(service, options = {}) {
    return new Proxy({}, {
      get: (_target, method) => {
        if (typeof method !== 'string' || method === 'then') return undefined; // not a thenable
        return (...args) => this.call(service, method, args, options);
      },
    });
  }

  /**
   * A call through the broker (PROTOCOL.md 12): no deadline member (the
   * message's expiration does its job), no registry; an abort only ends
   * the wait.
   */
  async amqpCall(service, method, params, options, traced) {
    if (traced.priority) throw amqp.unsupported('priorities', 'are');
    if (options.progress) throw amqp.unsupported('progress');
    const signal = options.signal;
    if (signal && signal.aborted) throw aborted(service, method, signal);
    const key = amqp.callKey(this.prefix);
    const wait = options.timeout === undefined ? this.timeout : options.timeout;
    const text = dumps(request(method, params, { id: key, ...traced }));
    const raw = await this.amqp.call(this.prefix + service, text, key, wait, signal, `${service}.${method}`);
    return result(raw, key);
  }

  async doCall(service, method, params, options, traced) {
    const signal = options.signal;
    if (signal && signal.aborted) throw aborted(service, method, signal);
    const conn = await this.redis();
    // id and reply key are one key, so seed-style workers that only know
    // "reply to the id" reach us as well.
    const key = `${this.prefix}rrpc:reply:${crypto.randomBytes(16).toString('hex')}`;
    const members = { id: key, reply_to: key, ...traced };
    if (options.progress) members.progress = true;
    const cancelKey = signal ? `${key}:cancel` : stream.inheritedCancelKey();
    if (cancelKey) members.cancel_key = cancelKey;
    const queue = this.prefix + service;
    // Redis's clock and the registry in one round trip, not two.
    const [now, view] = await Promise.all([this.redisNow(conn), this.view(conn, queue, FRESH_MS)]);
    const wait = inherited(options.timeout === undefined ? this.timeout : options.timeout, now);
    if (now !== null) {
      members.sent = now; // for the age of the oldest queued request (PROTOCOL.md 7)
      if (wait > 0 && wait <= 1e8) members.deadline = now + Math.ceil(wait * 1000);
    }
    const text = dumps(request(method, params, members));
    if (view.registered && !view.live) {
      throw new Unavailable(`${service}: registered, but none of its workers is live ` +
        '(stopped, or their heartbeat expired)');
    }
    const level = members.priority;
    await this.push(conn, queue, text, view.live ? view.maxQueue : 0, level);
    const started = performance.now();
    let popped;
    try {
      popped = await this.wait(conn, queue, key, wait, view.registered, signal, options.progress);
    } catch (e) {
      if (e instanceof CallAborted) {
        // First the key, so that a worker that has the request stops; then take it back.
        const left = wait > 0 ? Math.max(wait * 1000 - (performance.now() - started), 0) : 0;
        await command(conn, ['SET', cancelKey, '1', 'PX', String(Math.ceil(left) + 60000)]).catch(() => {});
        await this.withdraw(conn, queue, text, level).catch(() => {});
        throw aborted(service, method, signal);
      }
      throw e;
    }
    if (popped === null || popped === GONE) {
      // Withdraw the request so that no worker runs a call nobody awaits.
      await this.withdraw(conn, queue, text, level);
      if (popped === GONE) throw new Unavailable(`${service}.${method}: the last worker went while we waited`);
      throw new Timeout(`${service}.${method}: no reply within ${wait} s`);
    }
    return result(popped, key);
  }

  /** Redis's time now in ms, or null while the clock is unmeasured (TIME refused, say). */
  async redisNow(conn) {
    if (this.clock.due()) await this.clock.sync(conn);
    return this.clock.nowMs();
  }

  /**
   * What the registry says of the service whose list is QUEUE, read again
   * when older than MAX_AGE ms: one round trip per service per second.
   */
  async view(conn, queue, maxAge) {
    if (!this.failFast) return NO_VIEW;
    const seen = this.views.get(queue);
    if (seen && performance.now() - seen.at <= maxAge) return seen.view;
    const config = `{${queue}}:config`;
    // Issued together: the client sends them as one pipeline.
    const replies = await Promise.allSettled([
      command(conn, ['TIME']),
      command(conn, ['ZRANGE', `{${queue}}:workers`, 0, -1, 'WITHSCORES']),
      command(conn, ['HGET', config, 'max_queue']),
      command(conn, ['EXISTS', config]),
    ]);
    let view;
    const broken = replies.find((r) => r.status === 'rejected' && !isReply(r.reason));
    if (broken) throw broken.reason;
    if (replies.some((r) => r.status === 'rejected')) {
      view = NO_VIEW; // keys refused (an ACL): no registry for us, wait as usual
    } else {
      const [[sec, usec], workers, maxQueue, registered] = replies.map((r) => r.value);
      const nowMs = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
      let live = 0;
      for (let i = 1; i < workers.length; i += 2) if (Number(workers[i]) > nowMs) live++;
      view = { registered: Number(registered) > 0, live, maxQueue: Number(maxQueue || 0) };
    }
    this.views.set(queue, { at: performance.now(), view });
    return view;
  }

  async push(conn, queue, text, maxQueue, level) {
    if (level === 'high' || level === 'low') {
      // max_queue is not checked for high and low: the script pushes as the protocol says.
      const args = ['3', ...prio.scriptKeys(queue), text, level];
      try {
        await command(conn, ['EVALSHA', prio.SCRIPT_SHA, ...args]);
      } catch (e) {
        if (!isReply(e) || !String(e.message).startsWith('NOSCRIPT')) throw e;
        await command(conn, ['EVAL', prio.PRIORITY_SCRIPT, ...args]);
      }
    } else if (maxQueue <= 0) {
      await command(conn, ['RPUSH', queue, text]);
    } else if (Number(await command(conn, ['EVAL', PUSH_SCRIPT, 1, queue, text, maxQueue])) < 0) {
      throw new Overloaded(`${queue}: its queue holds ${maxQueue} requests (max_queue)`);
    }
  }

  /** Takes the request back from its list if no worker has it yet (any of the three for a priority). */
  async withdraw(conn, queue, text, level) {
    if (level !== 'high' && level !== 'low') return command(conn, ['LREM', queue, 1, text]);
    return Promise.all(prio.lists(queue).map((list) => command(conn, ['LREM', list, 1, text])));
  }

  /**
   * BLPOPs the reply: in one piece, or for a registered service in slices,
   * checking between them that a worker is still live; progress before the
   * answer goes to PROGRESS.  Resolves to the reply text, null on timeout,
   * or GONE; rejects with CallAborted.
   */
  async wait(conn, queue, key, wait, sliced, signal, progress) {
    const end = wait > 0 ? performance.now() + wait * 1000 : null;
    for (;;) {
      const left = end === null ? null : (end - performance.now()) / 1000;
      if (left !== null && left <= 0) return null;
      let step = left || 0; // 0: forever
      if (sliced) step = step ? Math.min(step, SLICE_S) : SLICE_S;
      // Redis reads a timeout under 1 ms as 0, "forever".
      const popped = await this.blpop(key, step ? Math.max(step, 0.001) : 0, signal);
      if (popped !== null && progress && progressOf(popped, key, progress)) continue; // wait on
      if (popped !== null || !sliced) return popped;
      const view = await this.view(conn, queue, FRESH_MS / 2);
      if (view.registered && !view.live) return GONE;
    }
  }

  // One BLPOP on a blocking connection of the pool; an abort closes it.
  async blpop(key, seconds, signal) {
    if (signal && signal.aborted) throw new CallAborted();
    const waiter = await this.waiter();
    let onAbort = null;
    let abortedNow = false;
    if (signal) {
      onAbort = () => {
        abortedNow = true;
        close(waiter);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    }
    try {
      const popped = await command(waiter, ['BLPOP', key, seconds.toFixed(3)]);
      // Closing the link on abort may end the BLPOP with nil rather than an
      // error: an aborted call is aborted either way, never a timeout.
      if (abortedNow) throw new CallAborted();
      this.release(waiter);
      return popped === null ? null : popped[1];
    } catch (e) {
      this.waiting.delete(waiter);
      close(waiter);
      if (abortedNow) throw new CallAborted();
      throw e;
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  async waiter() {
    let w = this.idle.pop();
    if (!w || !w.isReady) {
      if (w) close(w);
      w = connection(this.url);
      await this.connectOrFail(w);
    }
    this.waiting.add(w);
    return w;
  }

  release(w) {
    this.waiting.delete(w);
    if (!this.closed && this.idle.length < IDLE_WAITERS) this.idle.push(w);
    else close(w);
  }
}

/**
 * WAIT (s) cut to what the handled request's deadline leaves at NOW (ms on
 * Redis's clock), as the C client does; at least 1 ms, so that it never
 * means "forever".
 */
function inherited(wait, now) {
  const handled = trace.current();
  if (!handled || handled.deadline === null || now === null) return wait;
  const left = Math.max((handled.deadline - now) / 1000, 0.001);
  return wait > 0 && wait < left ? wait : left;
}

/** A request's own members from call or notify OPTIONS; a TypeError (RangeError) for a bad one. */
function members(options) {
  const priority = prio.checked(options.priority);
  const tenant = prio.checkedTenant(options.tenant);
  const own = trace.outgoing(options.traceparent, options.tracestate);
  if (priority === 'high' || priority === 'low') own.priority = priority; // absent means normal
  if (tenant !== undefined) own.tenant = tenant;
  return own;
}

/**
 * True if RAW is a progress message of the call KEY (PROTOCOL.md 7), handed
 * to CALLBACK; false for anything else (the answer).
 */
function progressOf(raw, key, callback) {
  let msg;
  try {
    msg = loads(raw);
  } catch {
    return false;
  }
  if (!isObject(msg) || msg.method !== 'rpc.progress' || Object.prototype.hasOwnProperty.call(msg, 'id')) return false;
  const params = msg.params;
  if (!isObject(params) || params.id !== key || !Object.prototype.hasOwnProperty.call(params, 'progress')) return false;
  callback(params.progress);
  return true;
}

function aborted(service, method, signal) {
  return new Aborted(`${service}.${method}: aborted`, { cause: signal.reason });
}

function result(raw, key) {
  let resp;
  try {
    resp = loads(raw);
  } catch (e) {
    throw new ProtocolError(`reply is not JSON: ${e.message}`);
  }
  if (!isObject(resp) || resp.id !== key) {
    throw new ProtocolError(`not a response to this call: ${String(raw).slice(0, 200)}`);
  }
  if (isObject(resp.error)) throw new RemoteError(resp.error.code, resp.error.message, resp.error.data);
  if (!Object.prototype.hasOwnProperty.call(resp, 'result')) {
    throw new ProtocolError(`response has neither result nor error: ${String(raw).slice(0, 200)}`);
  }
  return resp.result;
}

module.exports = { Client };
