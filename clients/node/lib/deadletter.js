'use strict';
// deadletter.js -- the record kept for a message no one can be answered for.
//
// PROTOCOL.md section 6: rather than drop what it cannot answer, a worker
// files the original text with the reason and time on <service>:dead.  Bytes
// that are not UTF-8 cannot be a JSON string, so they are kept exactly as
// base64 instead.  A message (or an undeliverable response) larger than the
// worker's size limit is not kept whole: its first bytes, its length and its
// SHA-1 are, so that a hostile sender cannot make a worker build -- or Redis
// refuse -- a huge record.  No I/O here: the server pushes what this builds.

const crypto = require('node:crypto');
const { Real, RawJson, dumps, isObject, loads } = require('./protocol');
const trace = require('./trace');

const PREFIX_BYTES = 4096; // the most of an oversized text a dead letter keeps
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** DATA (a Buffer) as text, or null if it is not UTF-8. */
function utf8(data) {
  try {
    return strictUtf8.decode(data);
  } catch {
    return null;
  }
}

/**
 * The length of the longest start of DATA of at most LIMIT bytes that does
 * not end inside a UTF-8 sequence, so that a valid text stays valid.
 */
function utf8Cut(data, limit) {
  if (data.length <= limit) return data.length;
  let n = limit;
  // Back up over continuation bytes (10xxxxxx) to the start of the sequence
  // that straddles the cut, and drop it whole (as the C worker).
  for (let k = 0; k < 4; k++) {
    if (n === 0 || (data[n] & 0xc0) !== 0x80) break;
    n--;
  }
  return n;
}

function setBytes(letter, name, data) {
  const text = utf8(data);
  if (text === null) letter[`${name}_base64`] = data.toString('base64');
  else letter[name] = text;
}

function setBounded(letter, name, data) {
  setBytes(letter, `${name}_prefix`, data.subarray(0, utf8Cut(data, PREFIX_BYTES)));
  letter[`${name}_bytes`] = data.length;
  letter[`${name}_sha1`] = crypto.createHash('sha1').update(data).digest('hex');
}

const TRACE_MEMBER = /"traceparent":"([^"]*)"/g;

/**
 * The valid traceparent of the message DATA (a Buffer; a batch's first that
 * has one), or null, so that a dead letter can be found by its trace; a
 * message larger than KEEP bytes is searched as text, in the prefix the
 * record keeps, not parsed.
 */
function traceOf(data, keep = 1048576) {
  if (data.length > keep) {
    for (const m of data.subarray(0, PREFIX_BYTES).toString('latin1').matchAll(TRACE_MEMBER)) {
      const found = trace.parse(m[1]);
      if (found) return found;
    }
    return null;
  }
  let msg;
  try {
    msg = loads(utf8(data));
  } catch {
    return null; // not UTF-8 (null) or not JSON
  }
  for (const req of Array.isArray(msg) ? msg : [msg]) {
    const found = isObject(req) ? trace.parse(req.traceparent) : null;
    if (found) return found;
  }
  return null;
}

/**
 * The dead letter for MESSAGE (a Buffer or a string), with the encoded
 * RESPONSE (JSON text) that could not be delivered, if any, as the JSON text
 * pushed onto <service>:dead.  Texts longer than KEEP bytes are kept bounded.
 * It keeps the message's traceparent: TRACEPARENT if given (null: none),
 * else traceOf(MESSAGE).
 */
function record(service, reason, message, response, keep = 1048576, now = Date.now() / 1000, traceparent) {
  const letter = { reason, time: new Real(now), service };
  const data = Buffer.isBuffer(message) ? message : Buffer.from(String(message), 'utf8');
  if (data.length <= keep) setBytes(letter, 'message', data);
  else setBounded(letter, 'message', data);
  const found = traceparent === undefined ? traceOf(data, keep) : traceparent;
  if (found) letter.traceparent = found;
  if (response !== undefined && response !== null) {
    const bytes = Buffer.byteLength(response, 'utf8');
    if (bytes <= keep) letter.response = new RawJson(response);
    else setBounded(letter, 'response', Buffer.from(response, 'utf8'));
  }
  return dumps(letter);
}

module.exports = { PREFIX_BYTES, utf8, utf8Cut, traceOf, record };
