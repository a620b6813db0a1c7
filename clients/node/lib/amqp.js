'use strict';
// amqp.js -- rrpc over AMQP 0-9-1 (RabbitMQ), PROTOCOL.md section 12.
//
// The same JSON-RPC envelopes as over Redis, through a broker: a service is
// a queue <prefix><service> on the default exchange, which servers declare
// as the C server does for the same options (plainly, as RabbitMQ's RPC
// tutorial does; durable with rrpc's dead-letter arguments when reliable;
// x-max-length with reject-publish for maxQueue) and callers never declare.  A
// caller publishes with mandatory set (a queue that does not exist comes
// back at once as basic.return: Unavailable), reply_to = direct reply-to
// (consumed no-ack on the publishing channel before it publishes), a fresh
// correlation_id and an expiration of its timeout.  At most once a worker
// acks each message when it takes it, before it runs, and files what the
// broker marks redelivered as a dead letter; reliable (reliable: true) it
// acks only after the answer was confirmed and counts redeliveries
// (x-rrpc-deliveries, maxDeliveries).  It publishes every answer to the
// message's reply_to -- including -32700 and -32600 with "id": null, which
// Redis cannot address -- and files what the C server would as a dead letter
// on <service>:dead (headers x-rrpc-reason, x-rrpc-service, x-rrpc-time).  The registry is a question each server answers, on a channel of
// the worker's connection (lib/amqp_registry.js).  What is not here yet, as
// on the C side (priorities, progress, limits) is
// refused by name, "... is not supported over AMQP yet".

const crypto = require('node:crypto');
const fs = require('node:fs');
const { AmqpError, Aborted, Timeout, Unavailable, Unsupported } = require('./errors');
const { INVALID_REQUEST, PARSE_ERROR, batchReplyKey, dumps, error, loads, replyKey } = require('./protocol');
const deadletter = require('./deadletter');

const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';
const JSON_TYPE = 'application/json';
const BACKOFF_MS = [100, 5000]; // a worker's reconnect: first and longest pause
const DELIVERIES_HEADER = 'x-rrpc-deliveries';
const DEDUP_MAX = 8192; // the dedup memory's bounds, the C server's (amqp/dedup.c)
const DEDUP_ANSWER_MAX = 65536;

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
      if (e instanceof AmqpError) throw e; // a queue with other settings: said, not retried
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
      const mode = server.reliable ? 'reliable: durable queue, at least once' : 'at most once';
      log.info(`${server.service}: serving queue '${server.queue}' over AMQP (${mode}` +
        `${server.maxQueue > 0 ? ', max_queue' : ''})` +
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
    ch = await declare(server, conn);
    ch.on('error', (e) => lose(e));
    ch.on('close', () => lose(new Error('channel closed')));
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

/** A 64-bit table value ('l'), as the C server writes and reads them (amqplib would pick the smallest). */
function long(n) {
  return { '!': 'long', value: n };
}

/** The service queue's arguments, the C server's for the same options (none: the tutorial's plain queue). */
function queueArguments(server) {
  if (!server.reliable && !(server.maxQueue > 0)) return {};
  const args = { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': server.deadKey };
  if (server.maxQueue > 0) Object.assign(args, { 'x-max-length': long(server.maxQueue), 'x-overflow': 'reject-publish' });
  return args;
}

/** Declares QUEUE on CH; a queue that exists with other settings is an AmqpError saying what to do. */
async function assertQueue(server, ch, queue, durable, args) {
  try {
    await ch.assertQueue(queue, { durable, exclusive: false, autoDelete: false, arguments: args });
  } catch (e) {
    if (e && e.code === 406) {
      throw new AmqpError(`${server.service}: declaring queue '${queue}': ${why(e)} -- the queue exists with ` +
        'other settings (a plain queue of an at-most-once service or a tutorial-style worker, or one of a server ' +
        'with other reliable/max_queue options): stop its users and delete it (rabbitmqctl delete_queue), or ' +
        'serve with the same options (docs/PROTOCOL.md section 12)', { cause: e });
    }
    throw e;
  }
}

/**
 * A channel of CONN (in confirm mode when reliable) with the service's queue
 * and <service>:dead declared as the C server declares them.  A plain
 * service whose user may not declare <service>:dead serves without it.
 */
async function declare(server, conn) {
  const open = () => (server.reliable ? conn.createConfirmChannel() : conn.createChannel());
  let ch = await open();
  ch.on('error', () => {}); // a refused declaration closes it: said by the rejection
  await assertQueue(server, ch, server.queue, server.reliable, queueArguments(server));
  if (server.deadOff) return ch;
  try {
    await assertQueue(server, ch, server.deadKey, true, { 'x-max-length': long(server.deadLetterMax) });
  } catch (e) {
    if (!(e && e.code === 403) || server.reliable || server.maxQueue > 0) throw e;
    server.deadOff = true;
    server.logger.warn(`${server.service}: no dead-letter queue (${why(e)}): dead letters are only logged`);
    ch = await open();
    ch.on('error', () => {});
  }
  return ch;
}

/** Publishes through the default exchange; reliable: waits for the broker's confirm. */
async function send(server, ch, queue, body, props) {
  ch.publish('', queue, body, props);
  if (server.reliable) await ch.waitForConfirms();
}

/** A message's properties as publish options, without expiration and headers. */
function copied(properties) {
  const out = {};
  for (const [k, v] of Object.entries(properties)) {
    if (v !== undefined && v !== null && !['expiration', 'headers', 'clusterId'].includes(k)) out[k] = v;
  }
  return out;
}

/**
 * Files MSG on <service>:dead: its body and properties as they came (no
 * expiration), persistent, with the reason in x-rrpc-reason.
 */
async function file(server, ch, msg, reason) {
  server.logger.warn(`${server.service}: dead letter: ${reason}`);
  if (server.deadOff) {
    server.counts.lost++;
    return;
  }
  const headers = { 'x-rrpc-reason': reason, 'x-rrpc-service': server.service,
    'x-rrpc-time': (Date.now() / 1000).toFixed(3) };
  await send(server, ch, server.deadKey, msg.content, { ...copied(msg.properties), headers, deliveryMode: 2 });
  server.counts.dead_letters++;
}

/** One delivery.  At most once: acked when taken; a redelivery is filed as a dead letter, not run. */
async function take(server, ch, msg) {
  if (server.reliable) return takeReliable(server, ch, msg);
  try {
    ch.ack(msg);
  } catch {
    return; // the link broke: the broker hands it to another worker
  }
  try {
    if (msg.fields.redelivered) await file(server, ch, msg, 'redelivered: at most once, it may have run already');
    else await run(server, ch, msg);
  } catch (e) {
    server.counts.lost++;
    server.logger.warn(`${server.service}: answer or dead letter lost: ${why(e)}`);
  }
  return undefined;
}

/** Reliable: acked only once its answer and dead letter were confirmed (never on a broken link). */
async function takeReliable(server, ch, msg) {
  const cid = msg.properties.correlationId;
  const key = cid === undefined || cid === null || cid === '' ? null : String(cid);
  try {
    const said = recall(server, key);
    if (said !== null) { // a redelivery or a resend of a request answered here
      if (said && msg.properties.replyTo) {
        await send(server, ch, msg.properties.replyTo, Buffer.from(said, 'utf8'),
          { contentType: JSON_TYPE, correlationId: cid });
      }
    } else if (msg.fields.redelivered) {
      await countDelivery(server, ch, msg);
    } else {
      const answer = { text: null };
      try {
        await run(server, ch, msg, answer);
      } finally {
        // Remembered even if the answer was lost with the link: a redelivery
        // here is answered, not run again.
        remember(server, key, answer.text || '');
      }
    }
  } catch (e) {
    server.counts.lost++;
    server.logger.warn(`${server.service}: answer or dead letter lost: ${why(e)}`);
  }
  try {
    ch.ack(msg);
  } catch {
    // the link broke: the broker hands it to another worker
  }
}

/**
 * A message taken back from a worker whose link broke: published again with
 * x-rrpc-deliveries + 1 (behind the queue), or, once counted maxDeliveries
 * times, filed as a dead letter.
 */
async function countDelivery(server, ch, msg) {
  server.counts.redelivered++;
  const headers = { ...(msg.properties.headers || {}) };
  const n = Number(headers[DELIVERIES_HEADER] || 0) + 1;
  if (n >= server.maxDeliveries) {
    await file(server, ch, msg, `taken by ${n} workers that died (max_deliveries ${server.maxDeliveries})`);
    return;
  }
  headers[DELIVERIES_HEADER] = long(n);
  await send(server, ch, server.queue, msg.content, { ...copied(msg.properties), headers });
}

/** The answer this process sent to KEY ('' if none was sent), or null. */
function recall(server, key) {
  if (key === null) return null;
  const now = performance.now();
  for (const [k, [until]] of server.answers) {
    if (until > now && server.answers.size <= DEDUP_MAX) break;
    server.answers.delete(k);
  }
  const hit = server.answers.get(key);
  return hit === undefined ? null : hit[1];
}

function remember(server, key, said) {
  if (key === null || Buffer.byteLength(said) > DEDUP_ANSWER_MAX || !(server.dedupWindow > 0)) return;
  server.answers.delete(key);
  server.answers.set(key, [performance.now() + server.dedupWindow * 1000, said]);
}

/** Runs MSG, answers it (if it has a reply_to) and files its dead letter; ANSWER.text: what it answers. */
async function run(server, ch, msg, answer = {}) {
  let out;
  try {
    out = await respond(server, msg.content);
  } catch (e) { // a bug here must not take the worker down
    server.logger.error(`${server.service}: failed to handle a message: ${e && e.stack}`);
    return;
  }
  const replyTo = msg.properties.replyTo;
  if (out.text !== null && replyTo) { // else a notification: runs, unanswered
    const props = { contentType: JSON_TYPE };
    if (msg.properties.correlationId !== undefined) props.correlationId = msg.properties.correlationId;
    answer.text = out.text;
    await send(server, ch, replyTo, Buffer.from(out.text, 'utf8'), props);
  }
  if (out.dead) await file(server, ch, msg, out.dead);
}

/**
 * The outcome of a message body RAW (a Buffer): {text: the answer or null,
 * dead: the reason the C server would file it as a dead letter, or null}.
 */
async function respond(server, raw) {
  const reject = (code, message, dead) => ({ text: dumps(error(null, code, message)), dead });
  if (raw.length > server.maxRequestBytes) {
    return reject(INVALID_REQUEST, `Invalid Request: too large (${raw.length} bytes, limit ${server.maxRequestBytes})`,
      `too large: ${raw.length} bytes (limit ${server.maxRequestBytes})`);
  }
  const text = deadletter.utf8(raw);
  if (text === null) return reject(PARSE_ERROR, 'Parse error: invalid UTF-8', 'invalid UTF-8');
  let msg;
  try {
    msg = loads(text);
  } catch (e) {
    return reject(PARSE_ERROR, `Parse error: ${e.message}`, `parse error: ${e.message}`);
  }
  const answered = Array.isArray(msg) ? await server.batchText(msg) : await server.answer(msg, false, undefined);
  const key = Array.isArray(msg) ? batchReplyKey(msg) : replyKey(msg);
  return { text: answered, dead: answered !== null && (key === null || key === undefined) ? 'no reply key' : null };
}

module.exports = { AmqpCaller, callKey, checkUrl, isAmqp, masked, resolveUrl, serve, unsupported };
