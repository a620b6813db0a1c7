'use strict';
// registry_ask.js -- asks the AMQP registry who is there, as PROTOCOL.md 12
// says and `rrpc ls`/`rrpc info` do (for amqp_registry.test.js and amqp.test.js).

const crypto = require('node:crypto');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The answers among ANSWERS from service SERVICE. */
const mine = (service, answers) => answers.filter((a) => a.service === service);

/**
 * The answers to one registry query with routing KEY ('' = every server) on
 * the broker at URL, gathered for WINDOW ms or until one from service WANT came.
 */
async function ask(url, key, { window = 300, want = null } = {}) {
  const conn = await require('amqplib').connect(url);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange('rrpc:registry', 'direct', { durable: false }); // as every server does
    const cid = crypto.randomBytes(8).toString('hex');
    const got = [];
    await ch.consume('amq.rabbitmq.reply-to', (m) => {
      if (m.properties.correlationId === cid) got.push(JSON.parse(m.content.toString()));
    }, { noAck: true });
    ch.publish('rrpc:registry', key, Buffer.from('{"query": "workers"}'), {
      replyTo: 'amq.rabbitmq.reply-to', correlationId: cid, contentType: 'application/json', expiration: '500',
    });
    const end = Date.now() + window;
    while (Date.now() < end && !(want && mine(want, got).length)) await sleep(10);
    return got;
  } finally {
    await conn.close();
  }
}

module.exports = { ask, mine };
