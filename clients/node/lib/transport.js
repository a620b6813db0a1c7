'use strict';
// transport.js -- what the client and the server need from Redis.
//
// A connection from a URL (redis://, rediss://, unix://; redis+sentinel://
// and redis+cluster:// through lib/ha.js), Redis's clock
// (request deadlines are on it, PROTOCOL.md 7), the REPLY SCRIPT that
// writes only onto reply lists (section 3), and the sorting of Redis's
// errors into "not now" (a broken link, LOADING, READONLY...: try again
// with backoff) and "never" (NOPERM, WRONGTYPE...), with an outage logged
// once rather than once per try.  Every command goes through sendCommand
// with RESP2, so replies are plain arrays and strings whatever the redis
// package's version defaults to.

const crypto = require('node:crypto');
const { createClient, ErrorReply, RESP_TYPES } = require('redis');
const ha = require('./ha');

const DEFAULT_URL = 'redis://127.0.0.1:6379';
// Replies as Buffers: a request text need not be UTF-8.
const AS_BUFFERS = { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } };

// Error replies that say "not now" rather than "never": the command may
// succeed once a failover, a load, a script or a memory shortage is over.
const TRANSIENT_CODES = new Set(['LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'TRYAGAIN', 'CLUSTERDOWN',
  'OOM', 'UNBLOCKED', 'NOREPLICAS', 'MISCONF']);
// Refusals of who we are: waiting does not heal them at start.
const CREDENTIALS = new Set(['WRONGPASS', 'NOAUTH', 'NOPERM']);

/** Whether E is an error reply of Redis (as opposed to a broken link). */
function isReply(e) {
  return e instanceof ErrorReply;
}

function code(e) {
  return isReply(e) ? String(e.message).split(' ', 1)[0] : null;
}

function credentialsRefused(e) {
  const c = code(e);
  return CREDENTIALS.has(c) || (c === 'ERR' && /\bAUTH\b|password/i.test(e.message));
}

/** A Redis error as Redis wrote it, or what broke the link (with "connect" in it). */
function errorText(e, conn) {
  if (isReply(e)) return String(e.message);
  const why = conn && conn.rrpcLastError && conn.rrpcLastError.message;
  const text = e instanceof Error ? e.message : String(e);
  return `connection to Redis lost: ${text}${why && why !== text ? ` (${why})` : ''}`;
}

/** Whether a failed command may succeed if simply tried again later. */
function transient(e) {
  return !isReply(e) || TRANSIENT_CODES.has(code(e));
}

/**
 * Whether a server that cannot start because of E should wait for Redis
 * (refused connections, LOADING, BUSY...) rather than fail: not for a
 * refused password or ACL.
 */
function healsAtStart(e) {
  return transient(e) && !credentialsRefused(e);
}

function socketOptions(url) {
  if (url.startsWith('unix:')) {
    // unix:///path/to/redis.sock[?db=N], as redis-py and the C peer take it.
    const u = new URL(url);
    const options = { socket: { path: decodeURIComponent(u.pathname) } };
    if (u.username) options.username = decodeURIComponent(u.username);
    if (u.password) options.password = decodeURIComponent(u.password);
    const db = u.searchParams.get('db');
    if (db) options.database = Number(db);
    return options;
  }
  return { url };
}

/**
 * A node-redis client for URL, else $RRPC_URL, else $REDIS_URL, else DEFAULT_URL, not yet
 * connected.  It reconnects by itself with backoff; while it is away its
 * commands fail at once (no offline queue), so that a loop sees the outage
 * and can be stopped.  A refused password ends a first connect.
 */
function connection(url) {
  const target = url || process.env.RRPC_URL || process.env.REDIS_URL || DEFAULT_URL;
  if (ha.isHa(target)) return watched(ha.link(target)); // Sentinel or Cluster (lib/ha.js)
  const options = socketOptions(target);
  const conn = createClient({
    ...options,
    RESP: 2,
    disableOfflineQueue: true,
    // No CLIENT SETINFO round trip, no maintenance-notification handshake:
    // a caller's first call should cost little more than its commands.
    disableClientInfo: true,
    maintNotifications: 'disabled',
    socket: {
      ...options.socket,
      reconnectStrategy: (retries, cause) => {
        if (!conn.rrpcConnected && credentialsRefused(cause)) return cause;
        // Jitter spreads a herd of workers that lost Redis together.
        return Math.round(Math.min(50 * 2 ** Math.min(retries, 10), 2000) * (0.5 + Math.random()));
      },
    },
  });
  return watched(conn);
}

function watched(conn) {
  conn.rrpcConnected = false;
  // Without a listener an 'error' event would end the process; the last one
  // says why commands fail while the client reconnects.
  conn.on('error', (e) => {
    conn.rrpcLastError = e;
  });
  conn.on('ready', () => {
    conn.rrpcConnected = true;
    conn.rrpcLastError = null;
  });
  return conn;
}

/**
 * Connects CONN: true once connected, false (CONN closed) when ABANDON
 * resolves first; rejects when the client gives up (a refused password).
 */
async function open(conn, abandon) {
  let done = false;
  const connecting = conn.connect().then(() => {
    done = true;
  });
  connecting.catch(() => {});
  try {
    await Promise.race([connecting, abandon]);
  } catch (e) {
    close(conn);
    throw e;
  }
  if (!done) {
    try {
      conn.destroy();
    } catch {
      // not open yet: nothing to end
    }
    return false;
  }
  return true;
}

function close(conn) {
  try {
    if (conn.isOpen) conn.destroy();
  } catch {
    // already closed
  }
}

function command(conn, args, options) {
  return conn.sendCommand(args.map((a) => (Buffer.isBuffer(a) ? a : String(a))), options);
}

/**
 * The Redis server's clock as seen from here: request deadlines are
 * milliseconds on it, so that peers whose own clocks disagree still agree on
 * them.  Measured with TIME at start and every 10 s; until a reading
 * succeeds (TIME refused, say) deadlines are not judged at all.
 */
class RedisClock {
  constructor() {
    this.offsetMs = null;
    this.triedAt = null;
  }

  static get REFRESH_MS() {
    return 10000;
  }

  /** Reads TIME on CONN; keeps the old offset if that fails. */
  async sync(conn) {
    this.triedAt = performance.now();
    let sec;
    let usec;
    let sent;
    let now;
    try {
      sent = Date.now();
      [sec, usec] = await command(conn, ['TIME']);
      now = Date.now();
    } catch (e) {
      // Redis away: measure as soon as it is back.  Refused: not before the
      // next refresh (a refused TIME must not cost a round trip per request).
      if (!isReply(e)) this.triedAt = null;
      return false;
    }
    // Redis read its clock about half a round trip before we got it.
    this.offsetMs = Number(sec) * 1000 + Number(usec) / 1000 - (now - (now - sent) / 2);
    return true;
  }

  due() {
    return this.triedAt === null || performance.now() - this.triedAt >= RedisClock.REFRESH_MS;
  }

  /** Redis's time now, in ms, or null if never measured. */
  nowMs() {
    return this.offsetMs === null ? null : Math.floor(Date.now() + this.offsetMs);
  }
}

// The REPLY SCRIPT of PROTOCOL.md section 3, byte for byte: it pushes only
// onto a key that does not exist or onto a list with an expiry, so a reply
// can never put a TTL on (or append to) an application's key, a persistent
// list or another service's backlog.
const REPLY_SCRIPT = `-- rrpc reply v2: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for KEYS[i].
-- Pushes only onto a reply list: a key that does not exist, or a list that has an expiry.
-- Each distinct key is judged once, then pushed onto in order and expired once.
local out, verdict, values, order = {}, {}, {}, {}
for i, k in ipairs(KEYS) do
  local v = verdict[k]
  if v == nil then
    local t = redis.call('TYPE', k).ok
    if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then
      v = 1
      values[k] = {}
      order[#order + 1] = k
    elseif t == 'list' then
      v = 'list without expiry'
    else
      v = t
    end
    verdict[k] = v
  end
  if v == 1 then
    local vs = values[k]
    vs[#vs + 1] = ARGV[i + 1]
  end
  out[i] = v
end
for _, k in ipairs(order) do
  local vs = values[k]
  for j = 1, #vs, 1000 do
    redis.call('RPUSH', k, unpack(vs, j, math.min(j + 999, #vs)))
  end
  redis.call('EXPIRE', k, ARGV[1])
end
return out
`;
const REPLY_SHA = crypto.createHash('sha1').update(REPLY_SCRIPT, 'utf8').digest('hex');

/**
 * Runs the REPLY SCRIPT by its SHA, and as EVAL (which loads it) when Redis
 * lacks it (a restart, SCRIPT FLUSH, a failover).  Not SCRIPT LOAD: on a
 * Cluster that names no key and may load it on another node than the reply
 * key's.  Returns the script's answer.
 */
async function pushReply(conn, key, ttl, body) {
  const args = ['1', key, String(ttl), body];
  try {
    return await command(conn, ['EVALSHA', REPLY_SHA, ...args]);
  } catch (e) {
    if (code(e) !== 'NOSCRIPT') throw e;
  }
  return command(conn, ['EVAL', REPLY_SCRIPT, ...args]);
}

/** The default logger: timestamped lines on stderr. */
function stderrLogger(name) {
  const line = (level) => (message) => {
    process.stderr.write(`${new Date().toISOString()} ${name}: ${level}${message}\n`);
  };
  return { info: line(''), warn: line('warning: '), error: line('error: ') };
}

/**
 * Logs a Redis outage once when it starts (and again only if its cause
 * changes), and once when it ends: never once per try.
 */
class Outage {
  constructor(name, logger) {
    this.name = name;
    this.logger = logger;
    this.since = null;
    this.kind = null;
  }

  failed(e, what, conn) {
    const text = errorText(e, conn);
    const kind = `${e && e.constructor && e.constructor.name} ${text.split(' ', 1)[0]}`;
    if (this.since === null) {
      this.since = performance.now();
      this.logger.warn(`${this.name}: redis: ${what}: ${text}; retrying with backoff`);
    } else if (kind !== this.kind) {
      this.logger.warn(`${this.name}: redis: ${what}: ${text}; still retrying`);
    }
    this.kind = kind;
  }

  ended() {
    if (this.since !== null) {
      const s = ((performance.now() - this.since) / 1000).toFixed(1);
      this.logger.warn(`${this.name}: redis: working again after ${s} s`);
      this.since = null;
      this.kind = null;
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = {
  DEFAULT_URL,
  AS_BUFFERS,
  REPLY_SCRIPT,
  REPLY_SHA,
  connection,
  open,
  close,
  command,
  isReply,
  code,
  errorText,
  transient,
  healsAtStart,
  credentialsRefused,
  RedisClock,
  pushReply,
  Outage,
  stderrLogger,
  sleep,
};
