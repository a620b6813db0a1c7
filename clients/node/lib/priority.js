'use strict';
// priority.js -- call priorities (PROTOCOL.md 7, "priority"): the values,
// the lists a request list L has for them, the script that pushes high and
// low, and the check a worker makes of a received request's member.
//
// A call of high or low priority goes through PRIORITY_SCRIPT, which uses
// the priority lists only when L has a backlog: a call that finds none goes
// straight onto L, where any idle worker (a reliable-mode one blocked on L
// alone included) takes it at once.  Workers pop {L}:high, L, {L}:low in
// that order, so a backlog is served in priority order (strictly: low waits
// while high is never empty).

const crypto = require('node:crypto');
const { INVALID_REQUEST } = require('./protocol');

const PRIORITIES = Object.freeze(['high', 'normal', 'low']);

// The push script of the protocol, byte for byte (the same text in every
// peer; tests/unit/check_scripts.py compares the copies).
// KEYS = [L, {L}:high, {L}:low], ARGV = [request text, 'high' | 'low'].
const PRIORITY_SCRIPT = `\
local p = ARGV[#ARGV]
local q = KEYS[1]
if p == 'high' then
  if redis.call('LLEN', KEYS[1]) > 0 then q = KEYS[2] end
else
  if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[2]) > 0
     or redis.call('LLEN', KEYS[3]) > 0 then q = KEYS[3] end
end
return redis.call('RPUSH', q, unpack(ARGV, 1, #ARGV - 1))
`;
const SCRIPT_SHA = crypto.createHash('sha1').update(PRIORITY_SCRIPT).digest('hex');

/** The lists a worker of QUEUE pops, in priority order: high, normal, low. */
function lists(queue) {
  return [`{${queue}}:high`, queue, `{${queue}}:low`];
}

/** PRIORITY_SCRIPT's KEYS for QUEUE: L, {L}:high, {L}:low. */
function scriptKeys(queue) {
  return [queue, `{${queue}}:high`, `{${queue}}:low`];
}

/** PRIORITY as a caller passed it (undefined: normal); TypeError or RangeError otherwise. */
function checked(priority) {
  if (priority === undefined || priority === null) return undefined;
  if (typeof priority !== 'string') throw new TypeError(`rrpc: priority must be a string, not ${typeof priority}`);
  if (!PRIORITIES.includes(priority)) {
    throw new RangeError(`rrpc: priority must be "high", "normal" or "low", not ${JSON.stringify(priority)}`);
  }
  return priority;
}

/** TENANT as a caller passed it (undefined: none); TypeError otherwise. */
function checkedTenant(tenant) {
  if (tenant === undefined || tenant === null) return undefined;
  if (typeof tenant !== 'string' || tenant === '') throw new TypeError('rrpc: tenant must be a non-empty string');
  return tenant;
}

/** The -32600 error of a request whose priority member is present but not one of the three strings, else null. */
function badMember(req) {
  if (!Object.prototype.hasOwnProperty.call(req, 'priority') || PRIORITIES.includes(req.priority)) return null;
  return { code: INVALID_REQUEST, message: 'Invalid Request: priority must be "high", "normal" or "low"',
    data: { member: 'priority' } };
}

module.exports = { PRIORITIES, PRIORITY_SCRIPT, SCRIPT_SHA, lists, scriptKeys, checked, checkedTenant, badMember };
