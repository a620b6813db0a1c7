'use strict';
// registry.js -- a server's record in the registry, and its per-method stats.
//
// PROTOCOL.md section 9: a registered worker renews a record of itself every
// heartbeat interval (so `rrpc ls/info/ping/stats/top` show it next to C
// workers, and callers fail fast once the last worker of a service stops),
// publishes the service's config, clears the records of workers that died,
// and adds its per-method counters and latency histogram to {L}:mstats.

const crypto = require('node:crypto');
const os = require('node:os');
const { Real, dumps } = require('./protocol');
const { command, connection, close, errorText } = require('./transport');

const HIST_LAST = 128; // the last latency bucket, open-ended
const REGISTERED_FOR_MS = 3600000; // {L}:config outlives the last heartbeat by an hour

/**
 * The histogram bucket of a run time in seconds (PROTOCOL.md 9): four per
 * power of two of microseconds, bucket 0 below 1 us, the last (128) open-ended.
 */
function latencyBucket(seconds) {
  const us = seconds * 1e6;
  if (!(us >= 1)) return 0;
  if (us >= 2 ** 32) return HIST_LAST; // lower(128) = 2^31 * 1.75 us
  // us = m * 2^e with 1 <= m < 2 (frexp's, shifted), exactly in binary.
  let e = Math.floor(Math.log2(us));
  if (2 ** e > us) e--;
  if (2 ** (e + 1) <= us) e++;
  const m = us / 2 ** e;
  return Math.min(1 + 4 * e + Math.min(Math.floor((m - 1) * 4), 3), HIST_LAST);
}

/** Per-method counters, added to {L}:mstats with each heartbeat. */
class Stats {
  constructor() {
    this.pending = new Map(); // field -> count not yet sent
  }

  record(method, seconds, failed) {
    const fields = [`calls:${method}`, `h${latencyBucket(seconds)}:${method}`];
    if (failed) fields.push(`errors:${method}`);
    for (const f of fields) this.pending.set(f, (this.pending.get(f) || 0) + 1);
  }

  /** Sends the deltas; on failure they are kept for the next flush. */
  async flush(conn, key) {
    const taken = this.pending;
    if (!taken.size) return;
    this.pending = new Map();
    try {
      // Issued together: the client sends them as one pipeline.
      await Promise.all([...taken].map(([f, n]) => command(conn, ['HINCRBY', key, f, n])));
    } catch (e) {
      // At worst counted twice after a lost reply, never lost silently.
      for (const [f, n] of taken) this.pending.set(f, (this.pending.get(f) || 0) + n);
      throw e;
    }
  }
}

/**
 * One record for this server process in the registry, renewed every
 * interval on a connection of its own (the worker's is blocked in BLPOP),
 * which also publishes the service's config, clears workers whose heartbeat
 * ran out and sends the per-method stats.  stop() removes the record at
 * once, so callers fail fast instead of waiting for it to expire.
 */
class Registry {
  constructor(server, url, prefix, interval, ttl, maxQueue) {
    this.server = server;
    this.url = url;
    const list = prefix + server.service;
    this.servicesKey = `${prefix}rrpc:services`;
    this.workersKey = `{${list}}:workers`;
    this.infoKey = `{${list}}:info`;
    this.configKey = `{${list}}:config`;
    this.mstatsKey = `{${list}}:mstats`;
    this.host = os.hostname();
    this.pid = process.pid;
    // host and pid for people, random digits so that a reused pid is new.
    this.id = `${this.host}:${this.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.interval = interval > 0 ? interval : 1.0;
    this.ttl = Math.max(ttl > 0 ? ttl : 5.0, 2 * this.interval); // one late beat must not look like a death
    this.maxQueue = Math.max(Math.floor(maxQueue) || 0, 0);
    this.stats = new Stats();
    this.conn = null;
    this.timer = null;
    this.beating = null;
    this.failing = false;
  }

  recordText() {
    return dumps({
      id: this.id, service: this.server.service, host: this.host, pid: this.pid,
      version: this.server.version, threads: 1, started: new Real(this.started),
      heartbeat_s: new Real(this.interval), ttl_s: new Real(this.ttl), max_queue: this.maxQueue,
      shards: 1, methods: this.server.methodEntries(),
    });
  }

  /**
   * Registers: the first beat runs here, so that a Redis that refuses it
   * fails the start loudly; then beats every interval.  CONN: connected.
   */
  async start(conn) {
    this.conn = conn;
    this.started = Date.now() / 1000;
    this.record = this.recordText();
    await this.beat();
    this.schedule();
  }

  schedule() {
    this.timer = setTimeout(() => {
      this.beating = this.tick().finally(() => {
        this.beating = null;
        if (this.timer !== null) this.schedule();
      });
    }, this.interval * 1000);
  }

  async tick() {
    try {
      await this.beat();
      if (this.failing) this.server.logger.warn(`${this.server.service}: heartbeat restored`);
      this.failing = false;
    } catch (e) { // logged once per outage; the client reconnects by itself
      if (!this.failing) {
        this.server.logger.warn(`${this.server.service}: heartbeat failed: ${errorText(e, this.conn)}`);
      }
      this.failing = true;
    }
  }

  async beat() {
    const c = this.conn;
    const [sec, usec] = await command(c, ['TIME']);
    const nowMs = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    const ttlMs = Math.floor(this.ttl * 1000);
    await Promise.all([
      command(c, ['ZADD', this.workersKey, nowMs + ttlMs, this.id]),
      command(c, ['HSET', this.infoKey, this.id, this.record]),
      command(c, ['HSET', this.configKey, 'max_queue', this.maxQueue, 'ttl_ms', ttlMs, 'shards', 1]),
      command(c, ['SADD', this.servicesKey, this.server.service]),
      command(c, ['PEXPIRE', this.configKey, REGISTERED_FOR_MS]),
    ]);
    // Clear workers whose heartbeat ran out: a killed process cannot.
    const before = `(${nowMs}`;
    const dead = await command(c, ['ZRANGEBYSCORE', this.workersKey, '-inf', before]);
    if (dead.length) {
      // By score, not by id: a worker that beat meanwhile stays.
      await Promise.all([
        command(c, ['HDEL', this.infoKey, ...dead]),
        command(c, ['ZREMRANGEBYSCORE', this.workersKey, '-inf', before]),
      ]);
    }
    await this.stats.flush(c, this.mstatsKey);
  }

  /**
   * Sends the last stats, then removes the record: the service stays
   * registered, and callers fail fast if no other worker is live.
   */
  async stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.beating) await this.beating;
    try {
      await this.stats.flush(this.conn, this.mstatsKey);
      await Promise.all([
        command(this.conn, ['ZREM', this.workersKey, this.id]),
        command(this.conn, ['HDEL', this.infoKey, this.id]),
      ]);
    } catch (e) {
      this.server.logger.warn(`${this.server.service}: cannot remove the record: ${errorText(e, this.conn)}`);
    } finally {
      close(this.conn);
    }
  }
}

module.exports = { latencyBucket, Stats, Registry, HIST_LAST, connection, close };
