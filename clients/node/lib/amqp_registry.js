'use strict';
// amqp_registry.js -- an AMQP server's presence: it answers registry queries
// (PROTOCOL.md section 12, "Operations over AMQP").
//
// RabbitMQ keeps no record for rrpc without its management plugin, so over
// AMQP the registry is a question: the server binds an exclusive, auto-delete
// queue of its own, <prefix>rrpc:registry:<worker id>, to the direct exchange
// <prefix>rrpc:registry with its service's routing key and the empty one, and
// answers each query with its record (section 9), its per-method totals
// (mstats), its counters and its clock, at the query's reply_to.  The queue
// lives as long as the connection: a stopped or killed server leaves `rrpc ls`
// at once.  As the C server (src/amqp/registry_amqp.c): a connection of its
// own, so a long handler never keeps a query waiting; a broker that refuses
// the names (permissions) leaves the server serving unregistered, said once;
// a link lost later is made again with backoff.

const crypto = require('node:crypto');
const os = require('node:os');
const { Real, dumps } = require('./protocol');
const { Stats } = require('./registry');

const NAME = 'rrpc:registry';
const COUNTERS = ['requests', 'notifications', 'errors', 'expired', 'dead_letters', 'redelivered',
  'given_back', 'lost'];
const BACKOFF_MS = [200, 5000];

/** Per-method counts since the process started: answered whole, never flushed. */
class Totals extends Stats {
  totals() {
    return Object.fromEntries(this.pending);
  }
}

/** Whether E is the broker closing a channel for good (403 ACCESS_REFUSED, 406...), or a refused login. */
function refusal(e) {
  return /ACCESS.?REFUSED|NOT.?ALLOWED|PRECONDITION.?FAILED|\b40[36]\b|\b530\b/i.test(String(e && e.message));
}

class AmqpRegistry {
  /** For SERVER (an rrpc.Server over amqp://); INTERVAL and TTL (s) only fill its record. */
  constructor(server, url, prefix, interval, ttl) {
    this.server = server;
    this.url = url;
    // host and pid for people, random digits so that a reused pid is new.
    this.id = `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.exchange = `${prefix}${NAME}`;
    this.queue = `${this.exchange}:${this.id}`;
    this.interval = interval > 0 ? interval : 1.0;
    this.ttl = Math.max(ttl > 0 ? ttl : 5.0, 2 * this.interval); // as the Redis record says
    this.stats = new Totals();
    this.conn = null;
    this.stopped = false;
    this.retry = null;
  }

  /**
   * Builds the record and joins the registry, connecting with CONNECT (url ->
   * a promise of amqplib's connection: the worker's own, lib/amqp.js);
   * resolves false (logged) if the broker refuses its names: the server then
   * serves unregistered.
   */
  async start(connect) {
    const s = this.server;
    this.connect = connect;
    this.record = {
      id: this.id, service: s.service, host: os.hostname(), pid: process.pid, version: s.version, threads: 1,
      started: new Real(Date.now() / 1000), heartbeat_s: new Real(this.interval), ttl_s: new Real(this.ttl),
      max_queue: 0, shards: 1, methods: s.methodEntries(),
    };
    try { // the first try here, so that a refusal is said at start
      await this.join();
    } catch (e) {
      if (refusal(e)) return this.refused(e);
      s.logger.warn(`${s.service}: registry: ${e && e.message}; trying again`);
      this.again(BACKOFF_MS[0]);
    }
    return true;
  }

  /** Stops answering; closing the connection takes the queue away. */
  async stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    const conn = this.conn;
    this.conn = null;
    if (conn) await conn.close().catch(() => {});
  }

  /** The answer to a query: the record with mstats, counters and time. */
  answer() {
    const counts = this.server.counts;
    return dumps({
      ...this.record, mstats: this.stats.totals(),
      counters: Object.fromEntries(COUNTERS.map((k) => [k, counts[k] || 0])), time: new Real(Date.now() / 1000),
    });
  }

  async join() {
    const conn = await this.connect(this.url);
    try {
      const ch = await conn.createChannel();
      ch.on('error', () => {}); // said by the close that follows
      await ch.assertExchange(this.exchange, 'direct', { durable: false, autoDelete: false });
      await ch.assertQueue(this.queue, { exclusive: true, autoDelete: true });
      for (const key of [this.server.service, '']) await ch.bindQueue(this.queue, this.exchange, key);
      await ch.consume(this.queue, (msg) => msg && this.reply(ch, msg), { noAck: true });
    } catch (e) {
      await conn.close().catch(() => {});
      throw e;
    }
    if (this.stopped) {
      await conn.close().catch(() => {});
      return;
    }
    this.conn = conn;
    conn.on('error', () => {});
    conn.on('close', () => {
      if (this.conn !== conn || this.stopped) return;
      this.conn = null;
      this.server.logger.warn(`${this.server.service}: registry link lost; connecting again`);
      this.again(BACKOFF_MS[0]);
    });
  }

  reply(ch, msg) {
    const to = msg.properties.replyTo;
    if (!to) return; // nobody to answer
    const props = { contentType: 'application/json' };
    if (msg.properties.correlationId !== undefined) props.correlationId = msg.properties.correlationId;
    try {
      ch.publish('', to, Buffer.from(this.answer(), 'utf8'), props);
    } catch (e) {
      this.server.logger.warn(`${this.server.service}: registry answer lost: ${e && e.message}`);
    }
  }

  /** Joins again after DELAY ms, doubling it up to 5 s, until it works or the server stops. */
  again(delay) {
    if (this.stopped) return;
    this.retry = setTimeout(() => {
      this.join().then(() => {
        if (!this.stopped) this.server.logger.info(`${this.server.service}: registry: reconnected`);
      }, (e) => {
        if (refusal(e)) this.refused(e);
        else this.again(Math.min(delay * 2, BACKOFF_MS[1]));
      });
    }, delay);
    this.retry.unref();
  }

  refused(e) {
    this.server.logger.warn(`${this.server.service}: not in the registry (rrpc ls/info/stats cannot see this ` +
      `server): ${e && e.message}`);
    return false;
  }
}

module.exports = { AmqpRegistry, COUNTERS };
