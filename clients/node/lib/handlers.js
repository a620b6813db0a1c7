'use strict';
// handlers.js -- how a server finds, describes and calls its methods.
//
// A service's methods are the functions of an object (its own and its
// class's, not those every object has), or functions registered one by
// one.  Params are bound to a handler's parameters -- positional from an
// array, named from an object by the parameter names in the function's
// source -- unless it asks for them whole (rawParams); a mismatch answers
// -32602 before the handler runs.  What a handler returns (or its promise
// resolves to) is the result; what it throws becomes the error (RpcError's
// own, else -32603, the details going to the log only).

const { RpcError } = require('./errors');
const { INTERNAL_ERROR, INVALID_PARAMS, isObject, has } = require('./protocol');
const { currentTraceparent, logSuffix } = require('./trace');

const RAW = Symbol.for('rrpc.rawParams');
const ABOUT = Symbol.for('rrpc.describe');
const SIGNATURE = Symbol.for('rrpc.signature');

/**
 * Marks FN as a handler that receives the request's params whole, as one
 * argument (an array, an object, or null when absent) -- for methods like
 * echo that care which form was sent.  Returns FN.
 */
function rawParams(fn) {
  fn[RAW] = true;
  return fn;
}

/**
 * Gives FN a description (and optionally an informal params shape, any
 * JSON) for the registry, where `rrpc info` shows them.  Returns FN:
 *     add: describe('add(a, b): a + b', { a: 'number', b: 'number' }, (a, b) => a + b)
 */
function describe(description, params, fn) {
  fn[ABOUT] = { description, params };
  return fn;
}

/**
 * Declares FN's parameter names when its source cannot tell them (a bound or
 * native function, say): names like 'a', optional ones '?b', a rest '...c'.
 */
function signature(names, fn) {
  fn[SIGNATURE] = names.map(parseName);
  return fn;
}

function parseName(text) {
  if (text.startsWith('...')) return { name: text.slice(3), rest: true };
  if (text.startsWith('?')) return { name: text.slice(1), optional: true };
  return { name: text };
}

/** The functions of OBJ by name: a Map or object as given, a class instance's methods. */
function publicMethods(obj) {
  const methods = new Map();
  if (obj == null) return methods;
  if (obj instanceof Map) {
    for (const [name, fn] of obj) methods.set(String(name), fn);
    return methods;
  }
  for (let o = obj; o && o !== Object.prototype && o !== Function.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (name === 'constructor' || name.startsWith('_') || methods.has(name)) continue;
      const d = Object.getOwnPropertyDescriptor(o, name);
      if (d && typeof d.value === 'function') methods.set(name, d.value.bind(obj));
      if (d && typeof d.value === 'function') methods.get(name).rrpcTarget = d.value;
    }
  }
  return methods;
}

const target = (fn) => fn.rrpcTarget || fn;

/** The method's entry in the registry record (PROTOCOL.md 9). */
function entry(name, fn, about) {
  const item = { name };
  const a = about || target(fn)[ABOUT];
  if (a && a.description != null) item.description = a.description;
  if (a && a.params != null) item.params = a.params;
  return item;
}

// ---- reading a function's parameters -------------------------------------------

// The text between a function's parentheses (or an arrow's lone name), split
// at its top-level commas; null when the source does not show it.
function parameterTexts(fn) {
  let s;
  try {
    s = Function.prototype.toString.call(fn);
  } catch {
    return null;
  }
  if (/\{\s*\[native code\]\s*\}\s*$/.test(s)) return null;
  s = s.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/[^\n]*/g, ' ');
  const arrow = /^\s*(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/.exec(s);
  if (arrow) return [arrow[1]];
  const open = s.indexOf('(');
  if (open < 0) return null;
  const parts = [];
  let depth = 0;
  let quote = null;
  let start = open + 1;
  for (let i = open + 1; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
      continue;
    }
    if (c === '"' || c === "'" || c === '`') quote = c;
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' && depth === 0) {
      parts.push(s.slice(start, i));
      return parts.map((p) => p.trim()).filter((p, k, all) => p !== '' || k < all.length - 1);
    } else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  return null;
}

/** [{name, optional, rest, pattern}] of FN, or null when unknown. */
function parameters(fn) {
  const t = target(fn);
  if (t[SIGNATURE]) return t[SIGNATURE];
  if (t.rrpcParameters !== undefined) return t.rrpcParameters;
  const texts = parameterTexts(t);
  let out = null;
  if (texts) {
    out = texts.map((p) => {
      if (p.startsWith('...')) return { name: p.slice(3).trim(), rest: true };
      const eq = topLevelEquals(p);
      const name = (eq < 0 ? p : p.slice(0, eq)).trim();
      const pattern = name.startsWith('{') || name.startsWith('[');
      return { name, optional: eq >= 0, pattern };
    });
  }
  t.rrpcParameters = out;
  return out;
}

function topLevelEquals(p) {
  let depth = 0;
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === '=' && depth === 0 && p[i + 1] !== '>' && p[i + 1] !== '=') return i;
  }
  return -1;
}

// ---- rpc.discover (PROTOCOL.md section 11) ---------------------------------------

const OPENRPC_VERSION = '1.3.2';
const JSON_TYPES = ['null', 'boolean', 'integer', 'number', 'string', 'array', 'object'];

/** An OpenRPC content descriptor; KIND a JSON type name or free text. */
function descriptor(name, kind, required = false) {
  const typed = JSON_TYPES.includes(kind);
  const d = { name, schema: typed ? { type: kind } : {} };
  if (typeof kind === 'string' && !typed) d.description = kind;
  if (required) d.required = true;
  return d;
}

/** Content descriptors of FN's params: from the informal shape if it names them, else from its signature. */
function discoverParams(fn, shape) {
  if (Array.isArray(shape)) return shape.filter((n) => typeof n === 'string').map((n) => descriptor(n));
  if (isObject(shape)) return Object.entries(shape).map(([n, kind]) => descriptor(n, kind));
  if (target(fn)[RAW]) return [];
  const ps = parameters(fn);
  if (ps === null) return [];
  return ps.filter((p) => !p.rest && !p.pattern).map((p) => descriptor(p.name, undefined, !p.optional));
}

/**
 * The OpenRPC document rpc.discover answers: METHODS (name -> fn), ABOUT
 * (name -> {description, params} from register()).  The Node peer carries
 * no JSON Schemas: types come from informal shapes ({a: 'number'}) when
 * given, names from them or from the handler's parameters (required: no
 * default), as in the Ruby and Python peers.
 */
function discoverDocument(service, version, methods, about) {
  const described = [];
  for (const [name, fn] of methods) {
    if (name === 'rpc.discover') continue; // implied, as the OpenRPC spec says
    const item = entry(name, fn, about.get(name));
    const method = { name, params: discoverParams(fn, item.params), result: { name: 'result', schema: {} } };
    if (item.description !== undefined) method.description = item.description;
    described.push(method);
  }
  return { openrpc: OPENRPC_VERSION, info: { title: service, version }, methods: described };
}

class BindError extends Error {}

// The arguments to call FN with for PARAMS (an array, an object or undefined).
function bind(fn, params) {
  if (target(fn)[RAW]) return [params === undefined ? null : params];
  const ps = parameters(fn);
  if (ps === null) { // unknown signature: positional as given, named as one object
    if (params === undefined) return [];
    return Array.isArray(params) ? params : [params];
  }
  const fixed = ps.filter((p) => !p.rest);
  const rest = ps.some((p) => p.rest);
  if (params === undefined || Array.isArray(params)) {
    const args = params || [];
    const lastRequired = fixed.reduce((n, p, i) => (p.optional ? n : i + 1), 0);
    if (args.length < lastRequired) {
      throw new BindError(`Invalid params: missing parameter '${fixed[args.length].name}'`);
    }
    if (args.length > fixed.length && !rest) {
      throw new BindError(`Invalid params: too many parameters (${args.length} given, at most ${fixed.length})`);
    }
    return args;
  }
  if (fixed.length === 1 && fixed[0].pattern) return [params]; // ({a, b}) => ...: the object whole
  const left = new Set(Object.keys(params));
  const args = fixed.map((p) => {
    if (p.pattern) throw new BindError('Invalid params: this method takes positional params only');
    if (has(params, p.name)) {
      left.delete(p.name);
      return params[p.name];
    }
    if (!p.optional) throw new BindError(`Invalid params: missing parameter '${p.name}'`);
    return undefined;
  });
  if (left.size) throw new BindError(`Invalid params: unexpected parameter '${left.values().next().value}'`);
  return args;
}

function isParamsObject(v) {
  return Array.isArray(v) || isObject(v);
}

/**
 * Runs handler FN on PARAMS; resolves to {result} or {error}, never rejects.
 * NAME (service.method) is for the log, where the details of an unexpected
 * failure go rather than to the caller.
 */
async function invoke(fn, params, name, logger) {
  let args;
  try {
    args = bind(fn, isParamsObject(params) ? params : undefined);
  } catch (e) {
    if (e instanceof BindError) return { error: { code: INVALID_PARAMS, message: e.message } };
    throw e;
  }
  try {
    return { result: await fn(...args) };
  } catch (e) {
    try {
      if (e instanceof RpcError) return { error: e.toError() };
    } catch {
      // a Proxy that throws when asked, a toError that throws: internal below
    }
    // The details go to the log, not to the caller: they may expose internals.
    let text;
    try {
      text = e instanceof Error ? e.stack || String(e) : `thrown: ${typeof e} ${String(e)}`;
    } catch {
      text = 'thrown: an unprintable value';
    }
    logger.error(`${name} failed${logSuffix(currentTraceparent())}: ${text}`);
    return { error: { code: INTERNAL_ERROR, message: 'Internal error' } };
  }
}

module.exports = {
  rawParams, describe, signature, publicMethods, entry, parameters, bind, invoke, discoverDocument, RAW, ABOUT,
};
