'use strict';
// amqp.js -- rrpc over AMQP 0-9-1 (RabbitMQ), PROTOCOL.md section 12.
//
// The same JSON-RPC envelopes as over Redis, through a broker: a service is
// a queue <prefix><service> on the default exchange, which servers declare
// plainly (as RabbitMQ's RPC tutorial does) and callers never declare.  A
// caller publishes with mandatory set (a queue that does not exist comes
// back at once as basic.return: Unavailable), reply_to = direct reply-to
// (consumed no-ack on the publishing channel before it publishes), a fresh
// correlation_id and an expiration of its timeout.  A worker acks each
// message when it takes it, before it runs (at most once), drops what the
// broker marks redelivered, and publishes every answer to the message's
// reply_to -- including -32700 and -32600 with "id": null, which Redis cannot
// address.  The registry is a question each server answers, on a channel of
// the worker's connection (lib/amqp_registry.js).  What is not here yet, as
// on the C side (priorities, progress, limits, reliable mode, TLS) is
// refused by name, "... is not supported over AMQP yet".

const crypto = require('node:crypto');
const fs = require('node:fs');
const { AmqpError, Aborted, Timeout, Unavailable, Unsupported } = require('./errors');
const { INVALID_REQUEST, PARSE_ERROR, dumps, error, loads } = require('./protocol');
const deadletter = require('./deadletter');

const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';
const JSON_TYPE = 'application/json';
const BACKOFF_MS = [100, 5000]; // a worker's reconnect: first and longest pause

/** The URL the peer uses: OPTION, else $RRPC_URL, else $REDIS_URL (as the C side). */
function resolveUrl(option) {
  return option || process.env.RRPC_URL || process.env.REDIS_URL || undefined;
}

/** Whether URL (already resolved) selects the AMQP transport. */
function isAmqp(url) {
  return typeof url === 'string' && /^amqps?:\/\//i.test(url);
}

/** URL with its password hidden, for messages. */
function masked(url) {
  return String(url).replace(/^(amqps?:\/\/[^:@/]*:)[^@/]*@/i, '$1***@');
}

/** An Unsupported naming AMQP (VERB: 'are' for a plural), worded as the C side words it. */
function unsupported(what, verb = 'is') {
  return new Unsupported(`${what} ${verb} not supported over AMQP yet`);
}

// amqps:// query parameters, RabbitMQ's names, as the C side (SECURITY.md section 7).
const TLS_KEYS = ['cacertfile', 'certfile', 'keyfile', 'verify'];

/**
 * What amqplib.connect needs for URL: [url, socketOptions].  amqps:// takes
 * its TLS settings out of the query: the broker's certificate and host name
 * verified against cacertfile (else Node's CAs, and $NODE_EXTRA_CA_CERTS)
 * unless verify=verify_none, TLS 1.2 at least, certfile + keyfile a client
 * certificate.  Throws AmqpError for a setting it cannot use.
 */
function connectArgs(url) {
  const q = url.indexOf('?');
  const params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  const tls = {};
  for (const key of TLS_KEYS) {
    if (params.has(key)) tls[key] = params.get(key);
    params.delete(key);
  }
  const rest = params.toString();
  const bare = (q < 0 ? url : url.slice(0, q)) + (rest ? `?${rest}` : '');
  if (!/^amqps:/i.test(url)) {
    if (Object.keys(tls).length > 0) throw new AmqpError('amqp:// URLs take no TLS parameters (they are for amqps://)');
    return [url, {}];
  }
  const verify = tls.verify ?? 'verify_peer';
  if (verify !== 'verify_peer' && verify !== 'verify_none') {
    throw new AmqpError('amqps:// verify= takes verify_peer or verify_none');
  }
  if (('certfile' in tls) !== ('keyfile' in tls)) {
    throw new AmqpError('amqps:// needs certfile= and keyfile= together (a client certificate)');
  }
  const opts = { minVersion: 'TLSv1.2', rejectUnauthorized: verify === 'verify_peer' };
  try {
    if (tls.cacertfile) opts.ca = [fs.readFileSync(tls.cacertfile)];
    if (tls.certfile) {
      opts.cert = fs.readFileSync(tls.certfile);
      opts.key = fs.readFileSync(tls.keyfile);
    }
  } catch (e) {
    throw new AmqpError(`amqps:// TLS: cannot read ${e.path}: ${e.code || e.message}`, { cause: e });
  }
  if (verify === 'verify_none') opts.checkServerIdentity = () => undefined;
  return [bare, opts];
}

/** Refuses a URL whose TLS settings cannot be used, before any wait. */
function checkUrl(url) {
  connectArgs(url);
}

/** amqplib's connection to URL (amqps:// with its TLS settings). */
function connect(url) {
  const [bare, opts] = connectArgs(url);
  return amqplib().connect(bare, opts);
}

/** amqplib, loaded when an amqp:// URL is first used (a Redis-only user never needs it). */
function amqplib() {
  return require('amqplib');
}

/** What broke, with the URL's password hidden. */
function why(e) {
  return masked(e && e.message ? e.message : String(e));
}

// -- the caller ---------------------------------------------------------------------

/**
 * A client's link to the broker: one connection and one channel, on which it
 * consumes direct reply-to and publishes every call; answers are matched by
 * correlation_id.  A broken link fails the calls waiting on it and is made
 * again by the next call.
 */
class AmqpCaller {
  constructor(url) {
    checkUrl(url);
    this.url = url;
    this.link = null; // a promise of {conn, ch}
    this.pending = new Map(); // correlation_id -> {resolve, reject}
    this.closed = false;
  }

  async channel() {
    if (this.closed) throw new AmqpError('the client is closed');
    if (!this.link) {
      this.link = this.open();
      this.link.catch(() => {
        this.link = null;
      });
    }
    return (await this.link).ch;
  }

  async open() {
    let conn;
    try {
      conn = await connect(this.url);
    } catch (e) {
      throw new AmqpError(`amqp: cannot connect to ${masked(this.url)}: ${why(e)}`, { cause: e });
    }
    let mine = true; // this link is still the client's
    const broken = (e) => {
      if (mine) this.link = null;
      mine = false;
      this.failAll(new AmqpError(`amqp: connection to the broker lost: ${e ? why(e) : 'closed'}`, { cause: e }));
    };
    conn.on('error', () => {}); // 'close' follows and says it
    conn.on('close', broken);
    try {
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      ch.on('close', () => {
        broken(null);
        conn.close().catch(() => {});
      });
      // A queue that does not exist: the broker returns the call at once.
      ch.on('return', (msg) => {
        const p = this.pending.get(msg.properties.correlationId);
        if (p) p.reject(null);
      });
      // Before any publish: the broker routes answers to this consumer.
      await ch.consume(DIRECT_REPLY_TO, (msg) => {
        if (!msg) return;
        const p = this.pending.get(msg.properties.correlationId);
        if (p) p.resolve(msg.content.toString('utf8')); // else a late answer: dropped
      }, { noAck: true });
      return { conn, ch };
    } catch (e) {
      conn.close().catch(() => {});
      throw new AmqpError(`amqp: ${why(e)}`, { cause: e });
    }
  }

  failAll(err) {
    for (const p of this.pending.values()) p.fail(err);
  }

  /**
   * Publishes TEXT (a request with id KEY) to QUEUE and resolves to the
   * answer's body; WAIT seconds (0: forever) is also the message's
   * expiration.  Rejects with Unavailable (no queue), Timeout, Aborted
   * (SIGNAL: only the wait ends) or AmqpError.
   */
  async call(queue, text, key, wait, signal, label) {
    const ch = await this.channel();
    return new Promise((resolve, reject) => {
      let timer = null;
      let onAbort = null;
      const done = () => {
        this.pending.delete(key);
        clearTimeout(timer);
        if (onAbort) signal.removeEventListener('abort', onAbort);
      };
      this.pending.set(key, {
        resolve: (body) => {
          done();
          resolve(body);
        },
        reject: () => {
          done();
          reject(new Unavailable(`${label}: service ${queue} has no queue (no server declared it)`));
        },
        fail: (e) => {
          done();
          reject(e);
        },
      });
      if (wait > 0) {
        timer = setTimeout(() => {
          done();
          reject(new Timeout(`${label}: no reply within ${wait} s`));
        }, wait * 1000);
      }
      if (signal) {
        onAbort = () => {
          done();
          reject(new Aborted(`${label}: aborted`, { cause: signal.reason }));
        };
        signal.addEventListener('abort', onAbort, { once: true });
      }
      const props = { replyTo: DIRECT_REPLY_TO, correlationId: key, contentType: JSON_TYPE, mandatory: true };
      if (wait > 0) props.expiration = String(Math.max(Math.ceil(wait * 1000), 1));
      try {
        ch.publish('', queue, Buffer.from(text, 'utf8'), props);
      } catch (e) {
        done();
        reject(new AmqpError(`${label}: amqp: ${why(e)}`, { cause: e }));
      }
    });
  }

  /** Publishes a notification: no reply_to, not mandatory (nobody hears of a missing queue). */
  async notify(queue, text) {
    const ch = await this.channel();
    ch.publish('', queue, Buffer.from(text, 'utf8'), { contentType: JSON_TYPE });
  }

  async close() {
    this.closed = true;
    const link = this.link;
    this.link = null;
    this.failAll(new AmqpError('the client is closed'));
    if (link) {
      try {
        await (await link).conn.close();
      } catch {
        // never opened, or already gone
      }
    }
  }
}

/** A fresh correlation id (and request id) for a call. */
function callKey(prefix) {
  return `${prefix}rrpc:reply:${crypto.randomBytes(16).toString('hex')}`;
}

// -- the worker ---------------------------------------------------------------------

/**
 * Serves SERVER (an rrpc.Server whose URL is amqp://) until it stops:
 * connects (waiting for the broker as over Redis: startTimeout), declares
 * the queue, consumes it with prefetch 1 and handles one message at a time;
 * a lost link is logged and made again with backoff.
 */
async function serve(server, url, stopped) {
  checkUrl(url);
  if (server.maxQueue > 0) throw unsupported('max_queue');
  const log = server.logger;
  const began = performance.now();
  let delay = BACKOFF_MS[0];
  let served = false;
  let waiting = false;
  while (!server.stopping) {
    let link;
    try {
      link = await consume(server, url);
    } catch (e) {
      // A refused login or vhost does not heal by waiting.
      if (/ACCESS.?REFUSED|NOT.?ALLOWED|403|530/i.test(String(e && e.message)) || server.startTimeout < 0) {
        throw new AmqpError(`${server.service}: cannot start: ${why(e)}`, { cause: e });
      }
      if (!served && server.startTimeout > 0 && performance.now() - began >= server.startTimeout * 1000) {
        throw new AmqpError(`${server.service}: the broker did not answer within the start timeout ` +
          `(${server.startTimeout} s): ${why(e)}`, { cause: e });
      }
      if (!waiting) log.warn(`${server.service}: amqp: ${why(e)}; retrying with backoff`);
      waiting = true;
      await server.pause(delay * (0.5 + Math.random()), stopped);
      delay = Math.min(delay * 2, BACKOFF_MS[1]);
      continue;
    }
    if (waiting) log.warn(`${server.service}: amqp: connected again`);
    if (!served) {
      log.info(`${server.service}: serving queue '${server.queue}' over AMQP (at most once)` +
        (link.registered ? '' : ', unregistered: rrpc ls/info/stats do not see it'));
    }
    served = true;
    waiting = false;
    delay = BACKOFF_MS[0];
    const lost = await Promise.race([link.lost, stopped.then(() => null)]);
    await link.close();
    if (lost && !server.stopping) {
      log.warn(`${server.service}: amqp: link lost: ${why(lost)}; reconnecting`);
      waiting = true;
    }
  }
}

/**
 * Connects, declares and consumes SERVER's queue, and joins the registry on
 * the same connection (heartbeat on): {lost (a promise of the cause),
 * registered, close()}.
 */
async function consume(server, url) {
  const conn = await connect(url);
  let lose;
  const lost = new Promise((resolve) => {
    lose = resolve;
  });
  conn.on('error', (e) => lose(e));
  conn.on('close', (e) => lose(e || new Error('connection closed')));
  let chain = Promise.resolve(); // one message at a time, in order
  let ch;
  let registered;
  try {
    ch = await conn.createChannel();
    ch.on('error', (e) => lose(e));
    ch.on('close', () => lose(new Error('channel closed')));
    // Plainly, as the tutorial's worker does: either side may declare first.
    await ch.assertQueue(server.queue, { durable: false, exclusive: false, autoDelete: false });
    await ch.prefetch(1);
    await ch.consume(server.queue, (msg) => {
      if (!msg) {
        lose(new Error('the broker cancelled the consumer (queue deleted?)'));
        return;
      }
      chain = chain.then(() => take(server, ch, msg));
    }, { noAck: false });
    registered = server.registry ? await server.registry.attach(conn) : false;
  } catch (e) {
    conn.close().catch(() => {});
    throw e;
  }
  return {
    lost,
    registered,
    close: async () => {
      await chain;
      await conn.close().catch(() => {});
    },
  };
}

/** One delivery: acked when taken (at most once), dropped if redelivered, else answered. */
async function take(server, ch, msg) {
  try {
    ch.ack(msg);
  } catch {
    return; // the link broke: the broker hands it to another worker
  }
  if (msg.fields.redelivered) {
    server.counts.lost++;
    server.logger.warn(`${server.service}: dropped a redelivered request: at most once, it may have run already`);
    return;
  }
  let text;
  try {
    text = await respond(server, msg.content);
  } catch (e) { // a bug here must not take the worker down
    server.logger.error(`${server.service}: failed to handle a message: ${e && e.stack}`);
    return;
  }
  const replyTo = msg.properties.replyTo;
  if (text === null || !replyTo) return; // a notification: runs, unanswered
  const props = { contentType: JSON_TYPE };
  if (msg.properties.correlationId !== undefined) props.correlationId = msg.properties.correlationId;
  try {
    ch.publish('', replyTo, Buffer.from(text, 'utf8'), props);
  } catch (e) {
    server.counts.lost++;
    server.logger.warn(`${server.service}: answer lost: ${why(e)}`);
  }
}

/** The answer's text to a message body RAW (a Buffer), or null when nothing is to be sent. */
async function respond(server, raw) {
  const reject = (code, message) => dumps(error(null, code, message));
  if (raw.length > server.maxRequestBytes) {
    server.logger.warn(`${server.service}: a request of ${raw.length} bytes refused (limit ${server.maxRequestBytes})`);
    return reject(INVALID_REQUEST, `Invalid Request: too large (${raw.length} bytes, limit ${server.maxRequestBytes})`);
  }
  const text = deadletter.utf8(raw);
  if (text === null) return reject(PARSE_ERROR, 'Parse error: invalid UTF-8');
  let msg;
  try {
    msg = loads(text);
  } catch (e) {
    return reject(PARSE_ERROR, `Parse error: ${e.message}`);
  }
  if (!Array.isArray(msg)) return server.answer(msg, false, undefined);
  return server.batchText(msg);
}

module.exports = { AmqpCaller, callKey, checkUrl, isAmqp, masked, resolveUrl, serve, unsupported };
