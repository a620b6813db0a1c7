'use strict';
// ha.js -- Redis behind Sentinel and on a Cluster, with the C library's URLs.
//
//   redis+sentinel://[user:password@]host[:port][,host[:port]...]/MASTER[/db]
//       [?sentinel_password=P][&sentinel_user=U]      (Sentinels on 26379 by default)
//   redis+cluster://[user:password@]host[:port][,host[:port]...][/]  (seeds; db 0 only)
//
// Both links look to the rest of the peer like one node-redis client
// (connect, sendCommand(args, options), destroy, isOpen, isReady, 'error'
// and 'ready' events; transport.connection makes them), so the client, the
// server and the registry run unchanged: every reconnect path they have is
// the failover path, as in the C library (docs/DESIGN.md "Scaling out").
//
// Sentinel: discovery is done here with plain clients, not with the redis
// package's createSentinel.  createSentinel leases pooled master clients per
// command and moves them after a failover on its own schedule (a pub/sub
// event or a 10 s scan): a BLPOP holds a lease for its whole wait, an abort
// must close exactly one connection (the peer closes a waiter to end a
// call), and each waiter would carry its own Sentinel connections and
// subscription.  One plain client per link, found the C library's way
// (each Sentinel in turn, 1 s each, starting with the one that answered
// last; ROLE must say master; a refused password ends the search), gives a
// dedicated connection per blocking wait and a failover that is just a lost
// link: a master that is killed, or demoted (READONLY, UNBLOCKED), drops
// the link and the next dial asks the Sentinels again.
//
// Cluster: createCluster, which routes each command by its first key,
// follows MOVED/ASK and re-reads the slot map.  Every command the peer sends
// names one key, or (BLPOP on a service's three lists, the priority script)
// keys of one slot: the lists share the {L} hash tag.  A blocking BLPOP
// occupies the node client it is sent on, so each blocking user has a link
// of its own: the client's waiters each make one (transport.connection), the
// server's pop link is used by nothing else while it blocks, and its
// heartbeat has its own.  Nodes are connected when first used
// (minimizeConnections), so a waiter opens only the node its reply key
// lives on.

const { EventEmitter } = require('node:events');
const { ErrorReply, createClient, createCluster } = require('redis');

const SENTINEL_PORT = 26379;
const CLUSTER_PORT = 6379;
const ASK_MS = 1000; // what one Sentinel may take to name the master
const DIAL_MS = 2000; // connect timeout to a master or Cluster node
const ENCODE_HINT = "percent-encode '@', ':', '/', '?' and '#' in a user name or password (%40, %3A, %2F, %3F, %23)";
// Commands of the peer that name no key: any Cluster node answers them.
const KEYLESS = new Set(['TIME', 'PING', 'ROLE', 'INFO', 'CLUSTER', 'SCRIPT']);
// Replies of a master demoted under us (DESIGN.md "Demotion"): a lost link.
const DEMOTED = new Set(['READONLY', 'UNBLOCKED']);
// Refusals of who we are: a dial that meets one stops at once.
const CREDENTIALS = new Set(['WRONGPASS', 'NOAUTH', 'NOPERM']);

function urlError(message) {
  return new TypeError(`rrpc: ${message}`);
}

/** Whether URL is a Sentinel or Cluster URL (the rest are node-redis's). */
function isHa(url) {
  return typeof url === 'string' && /^redis\+(sentinel|cluster):\/\//i.test(url);
}

function decode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    throw urlError(`bad percent-encoding in the URL: ${ENCODE_HINT}`);
  }
}

function hostPort(item, defaultPort) {
  let host;
  let port = null;
  if (item.startsWith('[')) { // [v6]:port
    const close = item.indexOf(']');
    if (close < 0) throw urlError("unterminated '[' in URL host");
    host = item.slice(1, close);
    const rest = item.slice(close + 1);
    if (rest && !rest.startsWith(':')) throw urlError("unexpected text after ']' in URL host");
    if (rest) port = rest.slice(1);
  } else {
    const colon = item.indexOf(':');
    host = colon < 0 ? item : item.slice(0, colon);
    if (colon >= 0) port = item.slice(colon + 1);
  }
  if (port !== null && !/^[0-9]{1,5}$/.test(port)) throw urlError('bad port in URL');
  const n = port === null ? defaultPort : Number(port);
  if (n < 1 || n > 65535) throw urlError('bad port in URL');
  return { host: decode(host) || '127.0.0.1', port: n };
}

function database(text) {
  if (!/^[0-9]{1,7}$/.test(text)) throw urlError('bad db number in URL');
  return Number(text);
}

/**
 * A redis+sentinel:// or redis+cluster:// URL as src/core/url.c reads it:
 * {kind, nodes: [{host, port}], master, db, username, password,
 * sentinelUsername, sentinelPassword}.  A TypeError for a malformed one.
 */
function parse(url) {
  const m = /^redis\+(sentinel|cluster):\/\//i.exec(url);
  if (!m) throw urlError('not a redis+sentinel:// or redis+cluster:// URL');
  const kind = m[1].toLowerCase();
  const out = { kind, nodes: [], master: null, db: 0, username: undefined, password: undefined,
    sentinelUsername: undefined, sentinelPassword: undefined };
  let p = url.slice(m[0].length);
  const q = p.indexOf('?');
  const query = q < 0 ? '' : p.slice(q + 1);
  if (q >= 0) p = p.slice(0, q);
  const slash = p.indexOf('/');
  let nodes = slash < 0 ? p : p.slice(0, slash);
  const path = slash < 0 ? '' : p.slice(slash + 1);
  if (path.includes('@')) throw urlError(`unexpected '@' after the URL's host: ${ENCODE_HINT}`);
  const at = nodes.lastIndexOf('@'); // "redis+...://:p@ss@host" is password "p@ss"
  if (at >= 0) {
    const info = nodes.slice(0, at);
    const colon = info.indexOf(':');
    if (colon < 0) {
      out.password = decode(info); // a lone userinfo is the password, as redis-rb reads it
    } else {
      if (colon > 0) out.username = decode(info.slice(0, colon));
      out.password = decode(info.slice(colon + 1));
    }
    nodes = nodes.slice(at + 1);
  }
  for (const item of nodes.split(',')) {
    if (!item) throw urlError("empty host in the URL's node list");
    out.nodes.push(hostPort(item, kind === 'sentinel' ? SENTINEL_PORT : CLUSTER_PORT));
  }
  if (kind === 'cluster') {
    if (path && path !== '0') throw urlError('a Redis Cluster has only db 0');
  } else {
    const s = path.indexOf('/');
    const name = s < 0 ? path : path.slice(0, s);
    if (!name) throw urlError('Sentinel URL needs the master\'s name: redis+sentinel://host/NAME');
    out.master = decode(name);
    if (s >= 0 && s + 1 < path.length) out.db = database(path.slice(s + 1));
  }
  for (const item of query ? query.split('&') : []) {
    const eq = item.indexOf('=');
    if (eq < 0) throw urlError("query item without '=' in URL");
    const [k, v] = [item.slice(0, eq), decode(item.slice(eq + 1))];
    if (k === 'db') out.db = database(v);
    else if (k === 'password') out.password = v;
    else if (k === 'user') out.username = v;
    else if (kind === 'sentinel' && k === 'sentinel_password') out.sentinelPassword = v;
    else if (kind === 'sentinel' && k === 'sentinel_user') out.sentinelUsername = v;
    else if (item.includes('@')) throw urlError(`unexpected '@' in the URL's query: ${ENCODE_HINT}`);
    else throw urlError(`unknown URL parameter '${k}'`);
  }
  if (kind === 'cluster' && out.db !== 0) throw urlError('a Redis Cluster has only db 0');
  return out;
}

function replyCode(e) {
  return e instanceof ErrorReply ? String(e.message).split(' ', 1)[0] : null;
}

function refusesUs(e) {
  const c = replyCode(e);
  return CREDENTIALS.has(c) || (c === 'ERR' && /\bAUTH\b|password/i.test(e.message));
}

// The options every connection of the peer shares (transport.connection's).
const COMMON = { RESP: 2, disableOfflineQueue: true, disableClientInfo: true, maintNotifications: 'disabled' };

function backoffMs(retries) {
  return Math.round(Math.min(50 * 2 ** Math.min(retries, 10), 2000) * (0.5 + Math.random()));
}

/**
 * What both links share: connect() tries DIAL until it succeeds, emitting
 * 'error' for each failure and waiting with backoff, as a node-redis client
 * reconnects; a refused password ends a first connect.  destroy() stops it.
 */
class Link extends EventEmitter {
  constructor() {
    super();
    this.opened = false;
    this.timer = null;
    this.wakeUp = null;
  }

  get isOpen() {
    return this.opened;
  }

  async connect() {
    if (this.opened) throw new Error('rrpc: the link is already open');
    this.opened = true;
    await this.redial(true);
  }

  /** Dials until it works; rejects when destroyed, or for a first connect's refused password. */
  async redial(first) {
    for (let retries = 0; this.opened; retries++) {
      try {
        await this.dial();
        if (!this.opened) break;
        this.emit('ready');
        return;
      } catch (e) {
        if (!this.opened) break;
        this.emit('error', e);
        if (first && refusesUs(e)) {
          this.opened = false;
          throw e;
        }
        await this.pause(backoffMs(retries));
      }
    }
    throw new Error('rrpc: the link was closed');
  }

  pause(ms) {
    return new Promise((resolve) => {
      this.wakeUp = resolve;
      this.timer = setTimeout(resolve, ms);
    }).finally(() => {
      this.timer = null;
      this.wakeUp = null;
    });
  }

  destroy() {
    this.opened = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.wakeUp) this.wakeUp();
  }
}

/**
 * One connection to the master the Sentinels name, found again after each
 * loss.  While it is being found, commands fail at once (as a plain
 * client's do while it reconnects), so loops see the outage and back off.
 */
class SentinelLink extends Link {
  constructor(target) {
    super();
    this.target = target;
    this.inner = null;
    this.last = 0; // the Sentinel that answered last is asked first
  }

  get isReady() {
    return Boolean(this.inner && this.inner.isReady);
  }

  /** The master's address by Sentinel S, or null if it does not know the name. */
  async ask(s) {
    const t = this.target;
    const c = createClient({ ...COMMON, username: t.sentinelUsername, password: t.sentinelPassword,
      socket: { host: s.host, port: s.port, connectTimeout: ASK_MS, reconnectStrategy: false } });
    c.on('error', () => {});
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Sentinel ${s.host}:${s.port} did not answer within 1 s`)), ASK_MS);
    });
    try {
      return await Promise.race([late, (async () => {
        await c.connect();
        const addr = await c.sendCommand(['SENTINEL', 'get-master-addr-by-name', t.master]);
        return Array.isArray(addr) && addr.length === 2 ? { host: String(addr[0]), port: Number(addr[1]) } : null;
      })()]);
    } finally {
      clearTimeout(timer);
      try {
        c.destroy();
      } catch {
        // never opened
      }
    }
  }

  /** Connects to the master, which must say so (ROLE); throws the last reason otherwise. */
  async dial() {
    const t = this.target;
    const n = t.nodes.length;
    let why = null;
    for (let i = 0; i < n && this.opened; i++) {
      const k = (this.last + i) % n;
      const s = t.nodes[k];
      let addr;
      try {
        addr = await this.ask(s);
      } catch (e) {
        why = new Error(`Sentinel ${s.host}:${s.port}: ${e.message}`, { cause: e });
        continue;
      }
      if (!addr) {
        why = new Error(`Sentinel ${s.host}:${s.port} knows no master named ${t.master}`);
        continue;
      }
      const c = createClient({ ...COMMON, username: t.username, password: t.password, database: t.db || undefined,
        socket: { host: addr.host, port: addr.port, connectTimeout: DIAL_MS, reconnectStrategy: false } });
      c.on('error', () => {});
      try {
        await c.connect();
        const role = await c.sendCommand(['ROLE']);
        // Right after a failover a Sentinel may still name the old master, now a replica.
        if (String(role[0]) !== 'master') {
          throw new Error(`${addr.host}:${addr.port} is not the master (ROLE ${role[0]})`);
        }
      } catch (e) {
        try {
          c.destroy();
        } catch {
          // not open
        }
        if (refusesUs(e)) throw e; // the master's password: no other Sentinel changes that
        why = new Error(`master ${t.master} at ${addr.host}:${addr.port}: ${e.message}`, { cause: e });
        continue;
      }
      this.last = k;
      this.adopt(c);
      return;
    }
    throw why || new Error('rrpc: the link was closed');
  }

  adopt(c) {
    if (!this.opened) {
      c.destroy();
      return;
    }
    this.inner = c;
    const gone = (e) => this.lost(c, e || new Error('connection closed'));
    c.on('error', gone);
    c.on('terminated', gone);
    c.on('end', gone);
  }

  /** C's link is gone (closed, or the master demoted): find the master again. */
  lost(c, e) {
    if (this.inner !== c) return;
    this.inner = null;
    try {
      c.destroy();
    } catch {
      // already closed
    }
    if (!this.opened) return;
    this.emit('error', e);
    this.redial(false).catch(() => {}); // ends only when destroyed
  }

  async sendCommand(args, options) {
    const c = this.inner;
    if (!c || !c.isReady) throw new Error(`no link to master ${this.target.master} (asking the Sentinels)`);
    try {
      return await c.sendCommand(args, options);
    } catch (e) {
      if (DEMOTED.has(replyCode(e))) this.lost(c, e);
      throw e;
    }
  }

  destroy() {
    super.destroy();
    const c = this.inner;
    this.inner = null;
    if (c) {
      try {
        c.destroy();
      } catch {
        // already closed
      }
    }
  }
}

/** The first key of a command the peer sends, for routing; undefined for keyless ones. */
function firstKey(args) {
  const name = String(args[0]).toUpperCase();
  if (name === 'EVAL' || name === 'EVALSHA') return Number(args[2]) > 0 ? args[3] : undefined;
  if (KEYLESS.has(name)) return undefined;
  return args[1];
}

/** A Redis Cluster through createCluster, connected with retries like the other links. */
class ClusterLink extends Link {
  constructor(target) {
    super();
    this.target = target;
    this.cluster = null;
    this.why = null; // what the last discovery met (a refused password, say)
  }

  get isReady() {
    return Boolean(this.cluster && this.cluster.isReady);
  }

  make() {
    const t = this.target;
    const cluster = createCluster({
      RESP: 2,
      rootNodes: t.nodes.map((n) => ({ socket: { host: n.host, port: n.port } })),
      defaults: {
        ...COMMON,
        username: t.username,
        password: t.password,
        socket: { connectTimeout: DIAL_MS, reconnectStrategy: backoffMs },
      },
      minimizeConnections: true,
      // A node that keeps failing (a failover) makes the map be read again soon.
      topologyRefreshOnReconnectionAttemptStrategy: 1000,
    });
    cluster.on('error', (e) => {
      this.why = e;
      this.rrpcLastError = e;
    });
    cluster.on('node-error', (e) => {
      this.rrpcLastError = e;
    });
    return cluster;
  }

  async dial() {
    const cluster = this.make();
    this.why = null;
    try {
      await cluster.connect();
    } catch (e) {
      try {
        cluster.destroy();
      } catch {
        // not open
      }
      throw this.why && refusesUs(this.why) ? this.why : new Error(`no Cluster node answered (${
        (this.why || e).message})`, { cause: this.why || e });
    }
    if (!this.opened) {
      cluster.destroy();
      return;
    }
    this.cluster = cluster;
  }

  async sendCommand(args, options) {
    if (!this.cluster || !this.cluster.isReady) throw new Error('no link to the Redis Cluster');
    return this.cluster.sendCommand(firstKey(args), false, args, options);
  }

  destroy() {
    super.destroy();
    const c = this.cluster;
    this.cluster = null;
    if (c) {
      try {
        c.destroy();
      } catch {
        // already closed
      }
    }
  }
}

/** A link for a Sentinel or Cluster URL, not yet connected; a TypeError for a malformed URL. */
function link(url) {
  const target = parse(url);
  return target.kind === 'sentinel' ? new SentinelLink(target) : new ClusterLink(target);
}

/** Whether CONN (a transport connection) is on a Redis Cluster. */
function onCluster(conn) {
  return conn instanceof ClusterLink;
}

module.exports = { isHa, parse, link, onCluster, firstKey, SentinelLink, ClusterLink };
