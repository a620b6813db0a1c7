'use strict';
// replies.js -- which keys a worker may answer on (PROTOCOL.md section 3).
//
// A reply key is chosen by whoever sends the request, so before writing a
// worker refuses the service's own keys, rrpc's keys of any service, a
// registered service's request list and, with an allow-list, keys outside
// it (rules 1 to 4); rule 5, "only onto a reply list", is the REPLY
// SCRIPT's (transport.js), checked atomically in Redis.  Keys are compared
// as the bytes Redis sees.  Rule 3 needs the set of registered services,
// read here at most every 5 s.

const { command, AS_BUFFERS, errorText, transient } = require('./transport');

const bytes = (k) => (Buffer.isBuffer(k) ? k : Buffer.from(String(k), 'utf8'));
const startsWith = (b, p) => b.length >= p.length && b.compare(p, 0, p.length, 0, p.length) === 0;
const endsWith = (b, s) => b.length >= s.length && b.compare(s, 0, s.length, b.length - s.length) === 0;

const SERVICES_EVERY_MS = 5000; // how often the set of registered services is read

/**
 * Rules 1 to 4 for one service: refusal(key) says why a key may not be
 * written to, or null.  refresh(conn) reads the registered services when they
 * are due (call it off the path of requests, e.g. before each pop).
 */
class ReplyRules {
  constructor(service, prefix, replyPrefixes, logger) {
    this.service = service;
    this.logger = logger;
    this.prefix = bytes(prefix);
    this.queue = bytes(prefix + service);
    this.own = [this.queue, bytes(`${prefix}${service}:dead`), bytes(`${prefix}${service}:stats`)];
    this.tagged = bytes(`{${prefix}${service}}`);
    this.allowed = replyPrefixes == null ? null : replyPrefixes.map(bytes);
    this.services = null; // registered names (strings of bytes, 'latin1'), null while unknown
    this.readAt = null;
    this.unread = false;
  }

  /** Why KEY (a string or Buffer) may not be a reply key (PROTOCOL.md 3), or null. */
  refusal(key) {
    const k = bytes(key);
    if (this.ownKey(k)) return "one of the service's own keys";
    if (this.rrpcKey(k)) return "one of rrpc's keys";
    if (this.requestList(k)) return "a service's request list";
    if (this.allowed !== null && !this.allowed.some((p) => startsWith(k, p))) return 'not under an allowed prefix';
    return null;
  }

  // Its list, dead letters, stats or anything under its hash tag {L}: an
  // answer pushed onto the list would be popped and answered forever.
  ownKey(k) {
    if (this.own.some((o) => o.equals(k))) return true;
    return k.length > this.tagged.length && startsWith(k, this.tagged);
  }

  // One of rrpc's keys of any service, by its name.
  rrpcKey(k) {
    const mine = Buffer.concat([this.prefix, Buffer.from('rrpc:')]);
    const replies = Buffer.concat([mine, Buffer.from('reply:')]);
    return (startsWith(k, mine) && !startsWith(k, replies)) ||
      (k[0] === 0x7b && k.indexOf('}:') >= 0) ||
      endsWith(k, Buffer.from(':dead')) || endsWith(k, Buffer.from(':stats'));
  }

  // A registered service's list or shard list.
  requestList(k) {
    if (this.services === null || !startsWith(k, this.prefix)) return false;
    const name = k.subarray(this.prefix.length).toString('latin1');
    if (this.services.has(name)) return true;
    const hash = name.lastIndexOf('#');
    return hash >= 0 && /^[0-9]+$/.test(name.slice(hash + 1)) && this.services.has(name.slice(0, hash));
  }

  /** Seconds until the set is due to be read again (0: now), at most MAX. */
  dueIn(max) {
    if (this.readAt === null) return 0;
    return Math.min(Math.max((this.readAt + SERVICES_EVERY_MS - performance.now()) / 1000, 0), max);
  }

  /**
   * Reads the set of registered services at start and then at most every
   * 5 s; while it cannot be read, rule 3 is off.
   */
  async refresh(conn) {
    const now = performance.now();
    if (this.readAt !== null && now - this.readAt < SERVICES_EVERY_MS) return;
    this.readAt = now;
    try {
      const names = await command(conn, ['SMEMBERS', Buffer.concat([this.prefix, Buffer.from('rrpc:services')])],
        AS_BUFFERS);
      this.services = new Set(names.map((n) => n.toString('latin1')));
      this.unread = false;
    } catch (e) {
      if (transient(e)) {
        this.readAt = null; // Redis away: keep what we knew, read again next time
        return;
      }
      if (!this.unread) { // refused (an ACL), a hash in its place: once
        this.logger.warn(`${this.service}: cannot read the registered services (${errorText(e)}): until it can, ` +
          'their request lists are not refused as reply keys by name');
      }
      this.services = null;
      this.unread = true;
    }
  }
}

module.exports = { ReplyRules, keyBytes: bytes };
