'use strict';
// protocol.js -- the rules of JSON-RPC 2.0 as rrpc speaks them, with no I/O.
//
// Strict JSON in and out, request validation, the reply key of a request
// and of a batch (docs/PROTOCOL.md sections 2 to 5), the deadline member
// (section 7) and the error codes.  JSON.parse is not used on the wire: it
// reads 9007199254740993 as ...992, which would give a request a reply key
// it does not have (section 3) and echo another id.  This parser keeps an
// integer that a double cannot hold as a BigInt, refuses what the C and
// Python peers refuse (NaN, lone surrogates, overflowing numbers, nesting
// deeper than jansson's 2048) and never recurses past that depth.

const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;
const METHOD_NOT_FOUND = -32601;
const INVALID_PARAMS = -32602;
const INTERNAL_ERROR = -32603;
const DEADLINE_EXCEEDED = -32000;
const BATCH_TIME_EXCEEDED = -32001;
const CANCELLED = -32002; // the caller cancelled it (PROTOCOL.md 7, cancel_key)

// The largest integer every peer reads exactly (a double's 53-bit mantissa).
const MAX_EXACT_ID = 2 ** 53;
const MAX_DEPTH = 2048; // jansson's nesting limit: the peers agree on it

/** A number that is a real in JSON even when integral: written 10.0, not 10. */
class Real {
  constructor(value) {
    this.value = Number(value);
  }
  valueOf() {
    return this.value;
  }
}

/** JSON text inserted verbatim by dumps (an encoded response, say). */
class RawJson {
  constructor(text) {
    this.text = String(text);
  }
}

// ---- parsing ---------------------------------------------------------------

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

class Parser {
  constructor(text) {
    this.s = text;
    this.i = 0;
  }

  fail(what) {
    const near = this.s.slice(this.i, this.i + 20);
    throw new SyntaxError(`${what} at offset ${this.i}${near ? ` near '${near}'` : ''}`);
  }

  ws() {
    const s = this.s;
    let i = this.i;
    for (;;) {
      const c = s.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
    this.i = i;
  }

  // TOP: a value where a request object may stand (the text, or an element
  // of the top-level array), whose deadline member is read as written.
  value(depth, top = false) {
    this.ws();
    const c = this.s[this.i];
    if (c === '{') return this.object(depth + 1, top);
    if (c === '[') return this.array(depth + 1, top);
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(c === undefined ? 'unexpected end of text' : "'[' or '{' or a value expected");
  }

  nested(depth) {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`);
  }

  array(depth, top) {
    this.nested(depth);
    this.i++;
    const out = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth, top && depth === 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') {
        this.i--;
        this.fail("',' or ']' expected");
      }
    }
  }

  object(depth, top) {
    this.nested(depth);
    this.i++;
    const out = {};
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('string key expected');
      const key = this.string();
      this.ws();
      if (this.s[this.i++] !== ':') {
        this.i--;
        this.fail("':' expected");
      }
      let v = this.value(depth);
      // PROTOCOL.md 7: a deadline written with a fraction or an exponent is
      // ignored, even when its value is whole (1764057600123.0).
      if (top && key === 'deadline' && this.real) v = new Real(v);
      // An own property even for "__proto__", as JSON.parse makes it.
      Object.defineProperty(out, key, { value: v, writable: true, enumerable: true, configurable: true });
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') {
        this.i--;
        this.fail("',' or '}' expected");
      }
    }
  }

  string() {
    const s = this.s;
    let i = this.i + 1;
    let out = '';
    let start = i;
    for (;;) {
      if (i >= s.length) {
        this.i = i;
        this.fail('unterminated string');
      }
      const c = s.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) {
        this.i = i;
        this.fail('control character in a string');
      }
      if (c !== 0x5c) {
        // Text decoded from UTF-8 holds no lone surrogate; a caller's string might.
        if (c >= 0xd800 && c <= 0xdfff) {
          const d = s.charCodeAt(i + 1);
          if (c > 0xdbff || !(d >= 0xdc00 && d <= 0xdfff)) {
            this.i = i;
            this.fail('lone surrogate');
          }
          i += 2;
          continue;
        }
        i++;
        continue;
      }
      out += s.slice(start, i);
      const e = s[i + 1];
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e];
      if (simple !== undefined) {
        out += simple;
        i += 2;
      } else if (e === 'u') {
        const unit = (at) => {
          const h = s.slice(at, at + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) {
            this.i = at;
            this.fail('invalid \\u escape');
          }
          return parseInt(h, 16);
        };
        const u = unit(i + 2);
        i += 6;
        if (u >= 0xd800 && u <= 0xdbff && s[i] === '\\' && s[i + 1] === 'u') {
          const low = unit(i + 2);
          if (low >= 0xdc00 && low <= 0xdfff) {
            out += String.fromCharCode(u, low);
            i += 6;
            start = i;
            continue;
          }
        }
        if (u >= 0xd800 && u <= 0xdfff) {
          this.i = i - 6;
          this.fail('invalid \\u escape: lone surrogate');
        }
        out += String.fromCharCode(u);
      } else {
        this.i = i;
        this.fail('invalid escape');
      }
      start = i;
    }
    out += s.slice(start, i);
    this.i = i + 1;
    return out;
  }

  number() {
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (!m) this.fail('invalid number');
    const text = m[0];
    this.i += text.length;
    const c = this.s[this.i];
    if (c !== undefined && /[0-9.eE+-]/.test(c)) this.fail('invalid number');
    const n = Number(text);
    this.real = m[1] !== undefined || m[2] !== undefined;
    if (!Number.isFinite(n)) this.fail(`number out of range: ${text.slice(0, 40)}`);
    // An integer beyond a double's exact range stays exact, and is written
    // back with all its digits, as a BigInt.
    if (m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(n)) return BigInt(text);
    return n;
  }
}

/** Strict JSON text -> value; throws SyntaxError. */
function loads(text) {
  const p = new Parser(text);
  const v = p.value(0, true);
  p.ws();
  if (p.i !== text.length) p.fail('end of text expected');
  return v;
}

// ---- encoding ----------------------------------------------------------------

function encode(v, depth, seen) {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`${v} is not JSON`);
      return JSON.stringify(v);
    case 'bigint':
      return v.toString();
    case 'object':
      break;
    default:
      throw new TypeError(`a ${typeof v} is not JSON`);
  }
  if (v instanceof Real) {
    if (!Number.isFinite(v.value)) throw new TypeError(`${v.value} is not JSON`);
    const t = JSON.stringify(v.value);
    return /[.eE]/.test(t) ? t : `${t}.0`;
  }
  if (v instanceof RawJson) return v.text;
  if (depth > MAX_DEPTH) throw new RangeError(`nested deeper than ${MAX_DEPTH}`);
  if (seen.has(v)) throw new TypeError('a cyclic structure is not JSON');
  seen.add(v);
  try {
    if (typeof v.toJSON === 'function') return encode(v.toJSON(), depth, seen);
    if (Array.isArray(v)) {
      return `[${v.map((x) => encode(x === undefined ? null : x, depth + 1, seen)).join(',')}]`;
    }
    const parts = [];
    for (const k of Object.keys(v)) {
      const x = v[k];
      if (x === undefined) continue; // as JSON.stringify: an absent member
      parts.push(`${JSON.stringify(k)}:${encode(x, depth + 1, seen)}`);
    }
    return `{${parts.join(',')}}`;
  } finally {
    seen.delete(v);
  }
}

/** Compact JSON text; throws TypeError/RangeError if VALUE is not JSON. */
function dumps(value) {
  return encode(value === undefined ? null : value, 0, new Set());
}

// ---- requests ------------------------------------------------------------------

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isNumber = (v) => typeof v === 'number' || typeof v === 'bigint';
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

function validId(v) {
  return v === null || typeof v === 'string' || isNumber(v);
}

/**
 * The reply key of PROTOCOL.md section 3, or null if none can be read: a
 * non-empty reply_to, else a non-empty string id, else an id with an
 * integral value of at most 2^53 as decimal text (100.0 and 1e2 -> "100").
 */
function replyKey(req) {
  if (!isObject(req)) return null;
  const replyTo = req.reply_to;
  if (typeof replyTo === 'string' && replyTo !== '') return replyTo;
  const id = req.id;
  if (typeof id === 'string') return id === '' ? null : id;
  if (typeof id === 'bigint') { // an integer literal beyond 2^53 - 1
    return id <= BigInt(MAX_EXACT_ID) && id >= -BigInt(MAX_EXACT_ID) ? id.toString() : null;
  }
  if (typeof id !== 'number' || !Number.isInteger(id) || Math.abs(id) > MAX_EXACT_ID) return null;
  return BigInt(id).toString(); // -0 -> "0", 1e2 -> "100", never an exponent
}

/** Why a decoded JSON value is not a valid request object, or null. */
function invalidReason(req) {
  if (!isObject(req)) return 'Invalid Request: not an object';
  if (has(req, 'id') && !validId(req.id)) return 'Invalid Request: id must be a string, a number or null';
  if (req.jsonrpc !== '2.0') return 'Invalid Request: jsonrpc must be "2.0"';
  if (typeof req.method !== 'string') return 'Invalid Request: method must be a string';
  if (has(req, 'params') && !(Array.isArray(req.params) || isObject(req.params))) {
    return 'Invalid Request: params must be an array or an object';
  }
  return null;
}

/** Whether REQ is a valid notification: run, never answered. */
function isNotification(req) {
  return invalidReason(req) === null && !has(req, 'id');
}

/**
 * A batch's reply key (PROTOCOL.md section 5): that of its first element that
 * is answered -- not a valid notification, whose reply_to does not count --
 * and has one; null if there is none.  The same for a batch too long to run.
 */
function batchReplyKey(batch) {
  for (const req of batch) {
    if (isNotification(req)) continue;
    const key = replyKey(req);
    if (key !== null) return key;
  }
  return null;
}

/** The request's deadline (PROTOCOL.md 7) in ms, or null: only a JSON integer > 0. */
function deadlineOf(req) {
  const d = req.deadline;
  if (typeof d === 'bigint') return d > 0n ? d : null;
  if (typeof d !== 'number' || !Number.isSafeInteger(d) || d <= 0) return null;
  return d;
}

/** A request object; PARAMS an array (positional), an object (named) or absent. */
function request(method, params, members) {
  const req = { jsonrpc: '2.0', method };
  if (params !== undefined && params !== null) {
    if (!Array.isArray(params) && !isObject(params)) {
      throw new TypeError('rrpc: params must be an array (positional) or an object (named)');
    }
    req.params = params;
  }
  return Object.assign(req, members);
}

/** An error response object. */
function error(id, code, message, data) {
  const err = { code, message };
  if (data !== undefined) err.data = data;
  return { jsonrpc: '2.0', error: err, id };
}

module.exports = {
  CANCELLED,
  PARSE_ERROR,
  INVALID_REQUEST,
  METHOD_NOT_FOUND,
  INVALID_PARAMS,
  INTERNAL_ERROR,
  DEADLINE_EXCEEDED,
  BATCH_TIME_EXCEEDED,
  MAX_EXACT_ID,
  MAX_DEPTH,
  Real,
  RawJson,
  loads,
  dumps,
  isObject,
  has,
  validId,
  replyKey,
  invalidReason,
  isNotification,
  batchReplyKey,
  deadlineOf,
  request,
  error,
};
