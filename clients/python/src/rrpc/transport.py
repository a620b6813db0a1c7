"""transport.py -- what the client and the server need from Redis.

A connection from a URL, Redis's clock (request deadlines are on it,
PROTOCOL.md 7), the REPLY SCRIPT that writes only onto reply lists
(section 3), and the sorting of Redis's errors into "not now" (a broken
link, LOADING, READONLY...: try again with backoff) and "never" (NOPERM,
WRONGTYPE...), with an outage logged once rather than once per try.
"""

import hashlib
import logging
import os
import time

import redis
from redis.exceptions import RedisClusterException

from . import redis_url

DEFAULT_URL = 'redis://127.0.0.1:6379'

# What redis-py raises when Redis fails or refuses: its Cluster client also
# raises RedisClusterException, which is not a RedisError (no node of the
# Cluster answers, a slot no node serves during a failover).
ERRORS = (redis.RedisError, RedisClusterException)

log = logging.getLogger('rrpc')


def resolve_url(url):
    """URL, else $RRPC_URL, else $REDIS_URL, else DEFAULT_URL (as in C):
    $RRPC_URL names either broker, Redis or AMQP (PROTOCOL.md 12)."""
    return url or os.environ.get('RRPC_URL') or os.environ.get('REDIS_URL') or DEFAULT_URL


def is_amqp(url):
    """Whether URL (resolved) names an AMQP broker: amqp:// or amqps://."""
    return resolve_url(url).split('://', 1)[0].lower() in ('amqp', 'amqps')


def connect(url):
    """A redis-py client for URL, else $RRPC_URL, else $REDIS_URL, else
    DEFAULT_URL: redis-py's Sentinel-managed or Cluster client for a
    redis+sentinel:// or redis+cluster:// URL (redis_url.py)."""
    return redis_url.connect(resolve_url(url))


class RedisClock:
    """The Redis server's clock as seen from here: request deadlines are
    milliseconds on it, so that peers whose own clocks disagree still agree
    on them.  Measured with TIME at start and every 10 s; until a reading
    succeeds (TIME refused, say) deadlines are not judged at all."""

    REFRESH_S = 10.0

    def __init__(self):
        self.offset_ms = None
        self.tried_at = None

    def sync(self, conn):
        """Reads TIME on CONN; keeps the old offset if that fails (and does
        not try again before the next refresh: a refused TIME must not cost
        a round trip per request)."""
        self.tried_at = time.monotonic()
        try:
            sent = time.time() * 1000.0
            sec, usec = conn.time()
            now = time.time() * 1000.0
        except (redis.ConnectionError, redis.TimeoutError, RedisClusterException):
            self.tried_at = None  # Redis is away: measure as soon as it is back
            return False
        except redis.RedisError:
            return False
        # Redis read its clock about half a round trip before we got it.
        self.offset_ms = (sec * 1000.0 + usec / 1000.0) - (now - (now - sent) / 2)
        return True

    def due(self):
        return self.tried_at is None or time.monotonic() - self.tried_at >= self.REFRESH_S

    def now_ms(self):
        """Redis's time now, in ms, or None if never measured."""
        if self.offset_ms is None:
            return None
        return int(time.time() * 1000.0 + self.offset_ms)


# The REPLY SCRIPT of PROTOCOL.md section 3, byte for byte: it pushes only
# onto a key that does not exist or onto a list with an expiry, so a reply
# can never put a TTL on (or append to) an application's key, a persistent
# list or another service's backlog.
REPLY_SCRIPT = """\
-- rrpc reply v2: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for KEYS[i].
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
"""
REPLY_SHA = hashlib.sha1(REPLY_SCRIPT.encode('utf-8')).hexdigest()


def push_reply(conn, key, ttl, body):
    """Runs the REPLY SCRIPT by its SHA, loading it when Redis lacks it (a
    restart, SCRIPT FLUSH, a failover).  Returns the script's answer."""
    try:
        return conn.evalsha(REPLY_SHA, 1, key, ttl, body)
    except redis.exceptions.NoScriptError:
        conn.script_load(REPLY_SCRIPT)
        return conn.evalsha(REPLY_SHA, 1, key, ttl, body)


# Error replies that say "not now" rather than "never": the command may
# succeed once a failover, a load, a script or a memory shortage is over.
_TRANSIENT_CODES = {'LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'TRYAGAIN', 'CLUSTERDOWN',
                    'OOM', 'UNBLOCKED', 'NOREPLICAS', 'MISCONF'}
# redis-py strips the code from the errors it maps to classes; put it back.
_CODES = {redis.exceptions.ReadOnlyError: 'READONLY', redis.exceptions.BusyLoadingError: 'LOADING',
          redis.exceptions.NoPermissionError: 'NOPERM', redis.exceptions.NoScriptError: 'NOSCRIPT',
          redis.exceptions.ExecAbortError: 'EXECABORT'}
# Refusals of who we are: waiting does not heal them (a password being
# rotated aside, which the serving loop rides out like any outage).
_CREDENTIALS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
                redis.exceptions.AuthenticationWrongNumberOfArgsError,
                redis.exceptions.NoPermissionError)


def error_text(exc):
    """A Redis error as Redis wrote it (e.g. "READONLY You can't write ...")."""
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None)
    text = str(exc)
    return f'{code} {text}' if code and not text.startswith(code) else text


def transient(exc):
    """Whether a failed command may succeed if simply tried again later."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, RedisClusterException)):
        return True  # also LOADING (BusyLoadingError) and a refused AUTH mid-rotation
    return (isinstance(exc, redis.RedisError) and
            error_text(exc).split(' ', 1)[0] in _TRANSIENT_CODES)


def demoted(conn, exc):
    """A demoted master answers writes with READONLY and cuts blocked pops
    with UNBLOCKED: behind Sentinel that is a lost link (as in C), so the
    idle connections to it are dropped and the next command asks the
    Sentinels again (redis-py's Sentinel client does so itself for
    READONLY, not for UNBLOCKED).  Elsewhere the reconnect is to the same
    node: harmless.  A Cluster client re-reads its slot map by itself."""
    if (isinstance(exc, redis.RedisError) and not redis_url.is_cluster(conn) and
            error_text(exc).split(' ', 1)[0] in ('READONLY', 'UNBLOCKED')):
        conn.connection_pool.disconnect(inuse_connections=False)


def heals_at_start(exc):
    """Whether a server that cannot start because of EXC should wait for
    Redis (refused connections, LOADING, BUSY...) rather than fail: not for
    a refused password or ACL (WRONGPASS, NOPERM, NOAUTH)."""
    if isinstance(exc, _CREDENTIALS):
        return False
    return transient(exc) and error_text(exc).split(' ', 1)[0] not in ('NOAUTH', 'WRONGPASS')


class Outage:
    """Logs a Redis outage once when it starts (and again only if its cause
    changes), and once when it ends: never once per try."""

    def __init__(self, name):
        self.name, self.since, self.kind = name, None, None

    def failed(self, exc, what):
        text = error_text(exc)
        kind = (type(exc).__name__, text.split(' ', 1)[0])
        if self.since is None:
            self.since = time.monotonic()
            log.warning('%s: redis: %s: %s; retrying with backoff', self.name, what, text)
        elif kind != self.kind:
            log.warning('%s: redis: %s: %s; still retrying', self.name, what, text)
        self.kind = kind

    def ended(self):
        if self.since is not None:
            log.warning('%s: redis: working again after %.1f s', self.name,
                        time.monotonic() - self.since)
            self.since = self.kind = None
