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
// at once.  The C server gives it a connection and thread of its own, so that
// a slow handler never delays an answer; Node has one thread, and an async
// handler leaves the event loop free, so here it is a channel of the worker's
// own connection (lib/amqp.js attaches it each time it connects): it joins
// again whenever the worker does, through the same URL settings.  A broker
// that refuses the names (permissions) closes only that channel: the server
// serves unregistered, said once.

const crypto = require('node:crypto');
const os = require('node:os');
const { Real, dumps } = require('./protocol');
const { Stats } = require('./registry');

const NAME = 'rrpc:registry';
const COUNTERS = ['requests', 'notifications', 'errors', 'expired', 'dead_letters', 'redelivered',
  'given_back', 'lost'];

/** Per-method counts since the process started: answered whole, never flushed. */
class Totals extends Stats {
  totals() {
    return Object.fromEntries(this.pending);
  }
}

class AmqpRegistry {
  /** For SERVER (an rrpc.Server over amqp://); INTERVAL and TTL (s) only fill its record. */
  constructor(server, prefix, interval, ttl) {
    this.server = server;
    // host and pid for people, random digits so that a reused pid is new.
    this.id = `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.exchange = `${prefix}${NAME}`;
    this.queue = `${this.exchange}:${this.id}`;
    this.interval = interval > 0 ? interval : 1.0;
    this.ttl = Math.max(ttl > 0 ? ttl : 5.0, 2 * this.interval); // as the Redis record says
    this.stats = new Totals();
    this.record = null;
    this.refusal = null; // said once
  }

  /**
   * Joins the registry on a channel of CONN (amqplib's connection, the
   * worker's); resolves false if the broker refuses the registry's names
   * (logged the first time): the server then serves unregistered.  Other
   * failures reject, as the worker's own declarations do.
   */
  async attach(conn) {
    const s = this.server;
    if (this.record === null) {
      this.record = {
        id: this.id, service: s.service, host: os.hostname(), pid: process.pid, version: s.version, threads: 1,
        started: new Real(Date.now() / 1000), heartbeat_s: new Real(this.interval), ttl_s: new Real(this.ttl),
        max_queue: 0, shards: 1, methods: s.methodEntries(),
      };
    }
    const ch = await conn.createChannel();
    ch.on('error', () => {}); // a refusal closes this channel only: said below
    try {
      await ch.assertExchange(this.exchange, 'direct', { durable: false, autoDelete: false });
      await ch.assertQueue(this.queue, { exclusive: true, autoDelete: true });
      for (const key of [s.service, '']) await ch.bindQueue(this.queue, this.exchange, key);
      await ch.consume(this.queue, (msg) => msg && this.reply(ch, msg), { noAck: true });
      return true;
    } catch (e) {
      if (!/ACCESS.?REFUSED|NOT.?ALLOWED|PRECONDITION.?FAILED|\b40[36]\b/i.test(String(e && e.message))) throw e;
      if (this.refusal === null) {
        s.logger.warn(`${s.service}: not in the registry (rrpc ls/info/stats cannot see this server): ` +
          `${e && e.message}`);
      }
      this.refusal = e;
      return false;
    }
  }

  /** The answer to a query: the record with mstats, counters and time. */
  answer() {
    const counts = this.server.counts;
    return dumps({
      ...this.record, mstats: this.stats.totals(),
      counters: Object.fromEntries(COUNTERS.map((k) => [k, counts[k] || 0])), time: new Real(Date.now() / 1000),
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

  /** Nothing to stop: the queue goes with the worker's connection. */
  async stop() {}
}

module.exports = { AmqpRegistry, COUNTERS };
