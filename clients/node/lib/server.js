'use strict';
// server.js -- serves an rrpc service: rrpc.Server.
//
// A worker pops messages from the service's list, answers each request onto
// its reply key (PROTOCOL.md sections 2 to 5), records what it cannot answer
// as a dead letter (section 6), refuses requests whose deadline has passed
// (section 7) and, by default, registers itself (section 9).  It survives
// whatever a handler throws or rejects with and whatever Redis answers --
// it waits for Redis at start too -- and stops only when told to.  One
// message at a time, like the Ruby and Python servers: run more processes
// to scale, they share the list.

const crypto = require('node:crypto');
const os = require('node:os');
const deadletter = require('./deadletter');
const protocol = require('./protocol');
const trace = require('./trace');
const prio = require('./priority');
const stream = require('./stream');
const amqp = require('./amqp');
const ha = require('./ha');
const { RedisError, Unsupported } = require('./errors');
const { describe, discoverDocument, entry, invoke, publicMethods, rawParams } = require('./handlers');
const { Registry } = require('./registry');
const { AmqpRegistry } = require('./amqp_registry');
const { ReplyRules } = require('./replies');
const {
  AS_BUFFERS, Outage, RedisClock, close, command, connection, errorText, healsAtStart, isReply, open, pushReply,
  sleep, stderrLogger, transient,
} = require('./transport');
const { VERSION } = require('./version');

const {
  BATCH_TIME_EXCEEDED, CANCELLED, DEADLINE_EXCEEDED, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, Real, RawJson,
  dumps, error,
} = protocol;

const STOP_GRACE_MS = 5000; // how long a write is still retried once told to stop
const START_BACKOFF_MS = [50, 5000]; // the wait for Redis at start: first and longest pause

class GaveUp extends Error {}

const DEFAULTS = {
  url: undefined, prefix: '', replyTtl: 60, maxRequestBytes: 1048576, deadLetterMax: 1000, batchMax: 1000,
  heartbeat: true, heartbeatInterval: 1.0, heartbeatTtl: 5.0, maxQueue: 0, replyPrefixes: null,
  batchTimeLimit: 5.0, startTimeout: 0, logger: null, handleSignals: true, catchStray: true,
  reliable: false, maxDeliveries: 3, dedupWindow: 600,
};

/**
 * Serves the functions of HANDLERS (an object, a class instance or a Map of
 * name -> function) plus any added with register(), as the rrpc service
 * SERVICE.  Options (all optional): url, prefix, replyTtl (s), maxRequestBytes,
 * deadLetterMax, batchMax, batchTimeLimit (s, 0: none), heartbeat,
 * heartbeatInterval (s), heartbeatTtl (s), maxQueue, replyPrefixes,
 * startTimeout (s; 0: as long as it takes, < 0: no wait), logger ({info,
 * warn, error}), handleSignals (SIGINT/SIGTERM stop the server), catchStray
 * (a handler's stray rejection or exception is logged, not fatal).
 * Over amqp:// only: reliable (at least once, PROTOCOL.md 12: acked after the
 * confirmed answer, redeliveries counted), maxDeliveries, dedupWindow (s);
 * this peer has no reliable mode over Redis (Unsupported).
 * Requests are popped from {L}:high, L, {L}:low in that order (priorities,
 * PROTOCOL.md 7); rpc.ping and rpc.discover are built in.  A service whose
 * {L}:config holds limits (rate limits and concurrency caps, enforced by
 * the C server only) is not served: serveForever rejects with Unsupported.
 */
class Server {
  constructor(service, handlers, options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.service = service;
    this.url = amqp.resolveUrl(o.url);
    this.overAmqp = amqp.isAmqp(this.url); // PROTOCOL.md 12: replies to reply_to
    if (ha.isHa(this.url)) ha.parse(this.url); // a malformed Sentinel or Cluster URL: a TypeError now
    this.maxQueue = o.maxQueue;
    if (o.reliable && !this.overAmqp) throw new Unsupported('reliable: the Node peer is reliable over AMQP only');
    this.reliable = Boolean(o.reliable);
    this.maxDeliveries = o.maxDeliveries > 0 ? o.maxDeliveries : 3;
    this.dedupWindow = o.dedupWindow;
    this.answers = new Map(); // reliable over AMQP: correlation_id -> [until (ms), answer]
    this.deadOff = false; // over AMQP: a plain service whose user may not declare <service>:dead
    this.version = `node-${VERSION}`;
    this.prefix = o.prefix;
    this.queue = o.prefix + service;
    this.lists = prio.lists(this.queue); // popped high, normal, low (PROTOCOL.md 7)
    this.logger = o.logger || stderrLogger('rrpc');
    this.rules = new ReplyRules(service, o.prefix, o.replyPrefixes, this.logger);
    this.outage = new Outage(service, this.logger);
    this.deadKey = `${this.queue}:dead`;
    this.statsKey = `${this.queue}:stats`;
    this.replyTtl = o.replyTtl;
    this.maxRequestBytes = o.maxRequestBytes;
    this.deadLetterMax = o.deadLetterMax;
    this.batchMax = o.batchMax;
    this.batchTimeLimit = o.batchTimeLimit || 0;
    this.startTimeout = o.startTimeout || 0;
    this.handleSignals = o.handleSignals;
    this.catchStray = o.catchStray;
    this.methods = publicMethods(handlers);
    this.about = new Map(); // name -> {description, params} given to register()
    if (!this.methods.has('rpc.ping')) {
      this.methods.set('rpc.ping', describe("built-in: answers with the worker's identity and time", undefined,
        rawParams(() => this.ping())));
    }
    if (!this.methods.has('rpc.discover')) {
      this.methods.set('rpc.discover', describe('built-in: describes the service as an OpenRPC document', undefined,
        rawParams(() => discoverDocument(this.service, this.version, this.methods, this.about))));
    }
    this.clock = new RedisClock();
    // Over amqp:// the registry is a question each server answers (PROTOCOL.md 12).
    if (!o.heartbeat) this.registry = null;
    else if (this.overAmqp) this.registry = new AmqpRegistry(this, o.prefix, o.heartbeatInterval, o.heartbeatTtl);
    else this.registry = new Registry(this, o.url, o.prefix, o.heartbeatInterval, o.heartbeatTtl, o.maxQueue);
    // The worker id rpc.ping reports; without a registry it is still unique.
    this.workerId = this.registry ? this.registry.id
      : `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.stopping = false;
    this.wake = null;
    this.conn = null;
    this.expiredUnsent = 0; // refused for their deadline, not yet added to <service>:stats
    // What it has handled, as the C server counts it (PROTOCOL.md 12's registry answers).
    this.counts = { requests: 0, notifications: 0, errors: 0, expired: 0, lost: 0, dead_letters: 0, redelivered: 0 };
  }

  // -- methods ----------------------------------------------------------------

  /**
   * Serves FN as method NAME (before serveForever: the registry record is
   * built at start); {description, params} for `rrpc info`.  Returns this.
   */
  register(name, fn, about = {}) {
    this.methods.set(name, fn);
    if (about.description !== undefined) this.about.set(name, about);
    return this;
  }

  /** The methods as the registry record lists them (PROTOCOL.md 9). */
  methodEntries() {
    return [...this.methods].map(([name, fn]) => entry(name, fn, this.about.get(name)));
  }

  ping() {
    return {
      service: this.service, worker: this.workerId, host: os.hostname(), pid: process.pid,
      version: this.version, time: new Real(Date.now() / 1000),
    };
  }

  // -- the loop -----------------------------------------------------------------

  /** Asks serveForever to return after the request in hand. */
  stop() {
    this.stopping = true;
    if (this.wake) this.wake();
  }

  /**
   * Waits for Redis, registers, then pops and answers requests until stop()
   * or SIGINT/SIGTERM; resolves then.  Rejects with RedisError if Redis
   * refuses the start (a password, an ACL) or does not answer within
   * startTimeout.  Over amqp:// (lib/amqp.js) it consumes the service's
   * queue instead, answers the registry's queries (lib/amqp_registry.js),
   * and rejects with AmqpError or Unsupported.
   */
  async serveForever() {
    this.stopping = false;
    const stopped = new Promise((resolve) => {
      this.wake = resolve;
    });
    // Before the wait for Redis, so that a supervisor can stop a waiting server.
    const restore = this.trap();
    try {
      if (this.overAmqp) {
        await amqp.serve(this, this.url, stopped);
      } else if (await this.start(stopped)) {
        try {
          await this.serve(stopped);
        } finally {
          await this.sendExpired(this.conn).catch(() => {}); // best effort: Redis may be gone
          if (this.registry) await this.registry.stop();
        }
      }
    } finally {
      restore();
      if (this.conn) close(this.conn);
      this.conn = null;
    }
  }

  trap() {
    const undo = [];
    const on = (event, fn) => {
      process.on(event, fn);
      undo.push(() => process.removeListener(event, fn));
    };
    if (this.handleSignals) {
      for (const sig of ['SIGINT', 'SIGTERM']) on(sig, () => this.stop());
    }
    if (this.catchStray) {
      // A handler's promise nobody awaits, or a throw from its timer, would
      // otherwise end the process: one call's failure, not the worker's.
      on('unhandledRejection', (e) => this.logger.error(`${this.service}: a handler's stray rejection: ${
        e instanceof Error ? e.stack : String(e)}`));
      on('uncaughtException', (e) => this.logger.error(`${this.service}: a handler's stray exception: ${
        e instanceof Error ? e.stack : String(e)}`));
    }
    return () => undo.forEach((f) => f());
  }

  // Connects, waiting for Redis while it cannot be reached (the client
  // retries with backoff); false if stopped meanwhile.
  async startOnce(stopped) {
    const conn = connection(this.url);
    this.conn = conn;
    let first = null;
    let bail;
    const bailed = new Promise((resolve) => {
      bail = resolve;
    });
    const onError = (e) => {
      if (!healsAtStart(e) || this.startTimeout < 0) bail();
      if (first) return;
      first = e;
      if (healsAtStart(e) && this.startTimeout >= 0) { // once, not every try
        this.logger.warn(`${this.service}: waiting for Redis${
          this.startTimeout > 0 ? ` (up to ${this.startTimeout} s)` : ''}: ${errorText(e, conn)}`);
      }
    };
    conn.on('error', onError);
    const timer = this.startTimeout > 0 ? setTimeout(bail, this.startTimeout * 1000) : null;
    let ok;
    try {
      ok = await open(conn, Promise.race([stopped, bailed]));
    } catch (e) { // the client gave up: a refused password
      throw new RedisError(`${this.service}: cannot start: ${errorText(e, conn)}`, { cause: e });
    } finally {
      clearTimeout(timer);
      conn.removeListener('error', onError); // once serving, outages are the loop's to log
    }
    if (ok) {
      if (first) this.logger.warn(`${this.service}: Redis answered, serving`);
      return true;
    }
    if (this.stopping) return false;
    const why = first ? errorText(first, conn) : 'no answer';
    if (this.startTimeout <= 0 || (first && !healsAtStart(first))) {
      throw new RedisError(`${this.service}: cannot start: ${why}`, { cause: first });
    }
    throw new RedisError(`${this.service}: Redis did not answer within the start timeout ` +
      `(${this.startTimeout} s): ${why}`, { cause: first });
  }

  /**
   * Rejects with Unsupported if the service's configuration holds rate
   * limits or concurrency caps: only the C server enforces them, and a
   * worker that ignored them would break them for every worker.
   */
  async refuseLimits(conn) {
    const config = `{${this.queue}}:config`;
    let held;
    try {
      held = Number(await command(conn, ['HEXISTS', config, 'limits']));
    } catch (e) {
      if (!isReply(e) || transient(e)) throw e;
      this.logger.warn(`${this.service}: cannot read ${config} (${errorText(e, conn)}): serving without checking ` +
        'for limits'); // refused (an ACL): cannot tell
      return;
    }
    if (held === 1) {
      throw new Unsupported(`${this.service}: ${config} field limits is set (rate limits or concurrency caps), ` +
        'which the Node server does not enforce: serve this service with the C server, or remove the field');
    }
  }

  /** Starts, waiting for Redis; false if stopped meanwhile. */
  async start(stopped) {
    const began = performance.now();
    if (!(await this.startOnce(stopped))) return false;
    const conn = this.conn;
    let delay = START_BACKOFF_MS[0];
    let waited = false;
    // Connected: a Redis still loading its data, say, answers PING with LOADING.
    while (!this.stopping) {
      try {
        await command(conn, ['PING']);
        await this.refuseLimits(conn);
        await this.clock.sync(conn);
        if (this.registry) {
          const beatConn = connection(this.url);
          if (!(await open(beatConn, stopped))) return false;
          try {
            await this.registry.start(beatConn); // refused (an ACL): fail loudly, like the C server
          } catch (e) {
            close(beatConn);
            throw e;
          }
        }
        if (waited) {
          this.logger.warn(`${this.service}: Redis answered after ${((performance.now() - began) / 1000).toFixed(1)
          } s, serving`);
        }
        return true;
      } catch (e) {
        if (e instanceof Unsupported) throw e;
        if (this.startTimeout < 0 || !healsAtStart(e)) {
          throw new RedisError(`${this.service}: cannot start: ${errorText(e, conn)}`, { cause: e });
        }
        const left = this.startTimeout > 0 ? began + this.startTimeout * 1000 - performance.now() : 1e12;
        if (left <= 0) {
          throw new RedisError(`${this.service}: Redis did not answer within the start timeout ` +
            `(${this.startTimeout} s): ${errorText(e, conn)}`, { cause: e });
        }
        if (!waited) {
          this.logger.warn(`${this.service}: waiting for Redis: ${errorText(e, conn)}`);
          waited = true;
        }
        await this.pause(Math.min(delay * (0.5 + Math.random()), left), stopped);
        delay = Math.min(delay * 2, START_BACKOFF_MS[1]);
      }
    }
    return false;
  }

  async serve(stopped) {
    const conn = this.conn;
    let backoff = 100;
    while (!this.stopping) {
      let popped;
      try {
        if (this.clock.due()) await this.clock.sync(conn);
        await this.rules.refresh(conn);
        // Never in the way of the pop: a count Redis refuses waits for the next round.
        await this.sendExpired(conn).catch(() => {});
        // A short timeout, so that a stop is noticed within a second, and one
        // that ends when the registered services are due: a request popped
        // later is judged by a set read at most 5 s before (PROTOCOL.md 3).
        const wait = Math.max(this.rules.dueIn(1), 0.01);
        popped = await command(conn, ['BLPOP', ...this.lists, wait.toFixed(3)], AS_BUFFERS);
        backoff = 100;
        this.outage.ended();
      } catch (e) { // READONLY, NOPERM, WRONGTYPE, a broken link...
        this.outage.failed(e, 'cannot pop requests', conn);
        await this.pause(backoff, stopped);
        backoff = Math.min(backoff * 2, 2000);
        continue;
      }
      if (popped) await this.handle(popped[1]);
    }
  }

  pause(ms, stopped) {
    let timer;
    return Promise.race([stopped, new Promise((resolve) => {
      timer = setTimeout(resolve, ms);
    })]).finally(() => clearTimeout(timer));
  }

  // -- one message ------------------------------------------------------------------

  /** Handles one message (a Buffer) popped from the list.  Never rejects. */
  async handle(raw) {
    try {
      await this.handleMessage(raw);
    } catch (e) { // a bug here must not take the worker down
      this.logger.error(`${this.service}: failed to handle a message: ${e && e.stack}`);
      try {
        await this.dead(raw, `internal error: ${e && e.name}: ${e && e.message}`);
      } catch (e2) {
        this.logger.error(`${this.service}: could not record the dead letter either: ${e2 && e2.stack}`);
      }
    }
  }

  async handleMessage(raw) {
    if (raw.length > this.maxRequestBytes) { // not decoded, not parsed: kept bounded
      return this.dead(raw, `too large: ${raw.length} bytes (limit ${this.maxRequestBytes})`);
    }
    const text = deadletter.utf8(raw);
    if (text === null) return this.dead(raw, 'invalid UTF-8');
    let msg;
    try {
      msg = protocol.loads(text);
    } catch (e) {
      return this.dead(raw, `parse error: ${e.message}`);
    }
    if (!Array.isArray(msg)) {
      const resp = await this.answer(msg, false, protocol.replyKey(msg));
      if (resp !== null) await this.deliver(raw, protocol.replyKey(msg), resp);
    } else if (msg.length === 0) {
      await this.deliver(raw, null, this.encode(error(null, INVALID_REQUEST, 'Invalid Request: empty batch')));
    } else if (msg.length > this.batchMax) {
      // Nothing runs, notifications included (PROTOCOL.md section 5).
      await this.deliver(raw, protocol.batchReplyKey(msg), this.encode(error(null, INVALID_REQUEST,
        `Invalid Request: batch of ${msg.length} elements (limit ${this.batchMax})`)));
    } else {
      await this.batch(raw, msg);
    }
    return undefined;
  }

  /**
   * Runs a batch's elements in turn; once it has run batchTimeLimit seconds,
   * those not started are answered -32001 without running.
   */
  async batch(raw, batch) {
    const text = await this.batchText(batch);
    if (text !== null) await this.deliver(raw, protocol.batchReplyKey(batch), text);
  }

  /** The encoded answer to a non-empty BATCH, or null for notifications only. */
  async batchText(batch) {
    if (batch.length === 0) return this.encode(error(null, INVALID_REQUEST, 'Invalid Request: empty batch'));
    if (batch.length > this.batchMax) {
      return this.encode(error(null, INVALID_REQUEST,
        `Invalid Request: batch of ${batch.length} elements (limit ${this.batchMax})`));
    }
    const parts = [];
    const started = performance.now();
    for (const req of batch) {
      const over = this.batchTimeLimit > 0 && performance.now() - started >= this.batchTimeLimit * 1000;
      const resp = await this.answer(req, over);
      if (resp !== null) parts.push(resp);
    }
    return parts.length ? `[${parts.join(',')}]` : null; // a batch of notifications only: nothing
  }

  /**
   * The encoded response to one request object, or null for a notification.
   * KEY: its reply key, where progress goes (undefined in a batch: none).
   */
  async answer(req, overTime, key) {
    this.counts.requests++;
    const reason = protocol.invalidReason(req);
    if (reason) {
      const id = protocol.isObject(req) && protocol.validId(req.id) ? req.id : null;
      return this.encode(error(id === undefined ? null : id, INVALID_REQUEST, reason));
    }
    const bad = prio.badMember(req);
    if (bad) return this.encode({ jsonrpc: '2.0', error: bad, id: protocol.has(req, 'id') ? req.id : null });
    let outcome;
    if (overTime) {
      this.counts.expired++;
      outcome = { error: { code: BATCH_TIME_EXCEEDED, message: 'Batch time limit exceeded',
        data: { limit_ms: Math.floor(this.batchTimeLimit * 1000) } } };
    } else {
      outcome = this.expired(req) || (await trace.handling(req, () => stream.handling(this, req, key, async (h) => {
        if (await h.cancelled()) return { error: { code: CANCELLED, message: 'Cancelled' } }; // while it waited
        return this.run(req.method, req.params);
      })));
    }
    if (!protocol.has(req, 'id')) {
      this.counts.notifications++;
      return null;
    }
    return this.encode({ jsonrpc: '2.0', ...outcome, id: req.id });
  }

  /**
   * The -32000 outcome if the request's deadline (PROTOCOL.md 7) has passed
   * on Redis's clock, else null.  No deadline is judged while the clock is
   * unmeasured.
   */
  expired(req) {
    const deadline = protocol.deadlineOf(req);
    const now = deadline === null ? null : this.clock.nowMs();
    if (now === null || now < deadline) return null;
    this.expiredUnsent++;
    return { error: { code: DEADLINE_EXCEEDED, message: 'Deadline exceeded', data: { deadline, now } } };
  }

  /**
   * Adds the requests refused for their deadline since the last time to
   * <service>:stats field expired (PROTOCOL.md 9), before the next pop; a
   * count Redis did not take is added again next time.
   */
  async sendExpired(conn) {
    const n = this.expiredUnsent;
    if (n === 0 || !conn) return;
    this.expiredUnsent = 0;
    try {
      await command(conn, ['HINCRBY', this.statsKey, 'expired', n]);
    } catch (e) {
      this.expiredUnsent += n;
      throw e;
    }
  }

  /** Runs a handler; {result} or {error}.  Counts calls of known methods. */
  async run(method, params) {
    const fn = this.methods.get(method);
    if (fn === undefined) return { error: { code: METHOD_NOT_FOUND, message: `Method not found: ${method}` } };
    const started = performance.now();
    const outcome = await invoke(fn, params, `${this.service}.${method}`, this.logger);
    if (this.registry) this.registry.stats.record(method, (performance.now() - started) / 1000, 'error' in outcome);
    return outcome;
  }

  /** Pushes a progress message onto KEY (stream.js); resolves to true if pushed. */
  async sendProgress(key, body) {
    if (this.rules.refusal(key)) return false;
    try {
      const out = await pushReply(this.conn, key, this.replyTtl, body);
      return Number(Array.isArray(out) && out.length ? out[0] : out) === 1;
    } catch (e) {
      this.logger.warn(`${this.service}: progress not sent: ${errorText(e, this.conn)}`);
      return false;
    }
  }

  /** Whether a request's cancel key exists (stream.js); a Redis error reads as no. */
  async cancelKeyExists(cancelKey) {
    try {
      return Number(await command(this.conn, ['EXISTS', cancelKey])) > 0;
    } catch {
      return false;
    }
  }

  encode(resp) {
    if (resp && resp.error !== undefined) this.counts.errors++;
    try {
      return dumps(resp);
    } catch (e) { // a BigInt-free cycle, NaN, a function, a throwing toJSON...
      this.logger.error(`${this.service}: response is not JSON: ${e && e.message}`);
      return dumps(error(resp.id === undefined ? null : resp.id, INTERNAL_ERROR, 'Internal error: result is not JSON'));
    }
  }

  // -- writing ------------------------------------------------------------------------

  async deliver(raw, key, body) {
    if (key === null) return this.dead(raw, 'no reply key', body);
    const refusal = this.rules.refusal(key);
    if (refusal) return this.dead(raw, `reply key refused: ${refusal}`, body);
    let out;
    try {
      out = await this.persist(() => pushReply(this.conn, key, this.replyTtl, body), 'cannot push a reply');
    } catch (e) {
      if (e instanceof GaveUp) {
        this.logger.error(`${this.service}: reply lost on the way out: ${e.message}`);
        return undefined;
      }
      // NOPERM on the key, say: never "not now".
      return this.dead(raw, `reply failed: ${errorText(e, this.conn)}`, body);
    }
    const status = Array.isArray(out) && out.length ? out[0] : out;
    if (Number(status) !== 1) return this.dead(raw, `reply key refused: ${String(status)}`, body);
    return undefined;
  }

  /** Records a message that cannot be answered; never drops it silently. */
  async dead(raw, reason, response) {
    const data = Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw), 'utf8');
    const traceparent = deadletter.traceOf(data, this.maxRequestBytes);
    this.logger.warn(`${this.service}: dead letter${trace.logSuffix(traceparent)}: ${reason}`);
    const body = deadletter.record(this.service, reason, data, response, this.maxRequestBytes, undefined, traceparent);
    try {
      await this.persist(() => Promise.all([
        command(this.conn, ['RPUSH', this.deadKey, body]),
        command(this.conn, ['LTRIM', this.deadKey, -this.deadLetterMax, -1]),
        command(this.conn, ['HINCRBY', this.statsKey, 'dead', 1]),
      ]), 'cannot record a dead letter');
    } catch (e) {
      this.logger.error(`${this.service}: dead letter lost (${e instanceof GaveUp ? e.message : errorText(e)}): ${
        reason}`);
    }
  }

  /**
   * Runs a write until it succeeds, riding out whatever Redis says "not now"
   * with (a broken link, LOADING, BUSY, READONLY, OOM...) with backoff, so the
   * request in hand still gets answered.  Rejects with Redis's refusal, or
   * GaveUp when told to stop while Redis keeps failing (after 5 s more).
   */
  async persist(write, what) {
    let delay = 100;
    let giveUpAt = null;
    for (;;) {
      try {
        const result = await write();
        this.outage.ended();
        return result;
      } catch (e) {
        if (!transient(e)) throw e;
        this.outage.failed(e, what, this.conn);
        if (this.stopping) {
          giveUpAt = giveUpAt || performance.now() + STOP_GRACE_MS;
          if (performance.now() >= giveUpAt) throw new GaveUp(errorText(e, this.conn));
        }
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 2000);
    }
  }
}

module.exports = { Server, RawJson };
