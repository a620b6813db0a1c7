"""redis_url.py -- the Redis URLs rrpc takes, and a redis-py client for each.

The same forms as the C library (src/core/url.c, README "Scaling out"):

    redis://[[user]:password@]host[:port][/db]      (and unix://, rediss://: redis-py's own)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
        [?sentinel_password=P][&sentinel_user=U]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]

Sentinel hosts default to port 26379 and cluster seeds to 6379; user,
password and db are the master's (a Cluster has db 0 only), the sentinel_
ones the Sentinels' own.  User and password may be percent-encoded; the
userinfo ends at the last '@' before the path, as in C, so that a password
with an unencoded '@' never becomes a host name in a message.

A Sentinel URL gives redis-py's Sentinel(...).master_for(MASTER): every
(re)connect asks the Sentinels for the master, and a demoted master's
READONLY breaks the link, so a worker blocked on the old master lands on
the promoted one.  A Cluster URL gives redis.cluster.RedisCluster, built on
first use (so that a server can wait for the Cluster at start as it waits
for one Redis), which routes each command by its key's slot and follows
MOVED and ASK.
"""

from urllib.parse import unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
SENTINEL_TIMEOUT_S = 1.0  # each Sentinel gets at most this long (as in C): a dead one must not stall a dial

ENCODE_HINT = ("percent-encode '@', ':', '/', '?' and '#' in a user name or password "
               "(%40, %3A, %2F, %3F, %23)")


class Parsed:
    """A redis+sentinel:// or redis+cluster:// URL: kind ('sentinel' or
    'cluster'), nodes [(host, port)], master, db, user, password,
    sentinel_user, sentinel_password."""

    def __init__(self, kind):
        self.kind, self.nodes, self.master, self.db = kind, [], None, 0
        self.user = self.password = self.sentinel_user = self.sentinel_password = None


def _fail(why):
    return ValueError(f'rrpc: {why}')


def _int(text, low, high, why):
    if not text.isdigit() or len(text) > 9 or not low <= int(text) <= high:
        raise _fail(why)
    return int(text)


def _host_port(item, default_port):
    if item.startswith('['):  # an IPv6 literal
        close = item.find(']')
        if close < 0:
            raise _fail("unterminated '[' in URL host")
        host, rest = item[1:close], item[close + 1:]
        if rest and not rest.startswith(':'):
            raise _fail("unexpected text after ']' in URL host")
        port = rest[1:] if rest else None
    else:
        host, _, port = item.partition(':')
        port = port if ':' in item else None
    port = default_port if port is None else _int(port, 1, 65535, 'bad port in URL')
    return unquote(host) or '127.0.0.1', port


def _query(parsed, query):
    for item in filter(None, query.split('&')):
        name, eq, value = item.partition('=')
        if not eq:
            raise _fail("query item without '=' in URL")
        if name == 'db':
            parsed.db = _int(value, 0, 1 << 20, 'bad db number in URL')
        elif name in ('password', 'user'):
            setattr(parsed, name, unquote(value))
        elif parsed.kind == 'sentinel' and name in ('sentinel_password', 'sentinel_user'):
            setattr(parsed, name, unquote(value))
        elif '@' in item:  # the tail of a password cut at an unencoded '?': quote none of it
            raise _fail(f"unexpected '@' in the URL's query: {ENCODE_HINT}")
        else:
            raise _fail(f"unknown URL parameter '{name}'")


def parse(url):
    """The Parsed form of a redis+sentinel:// or redis+cluster:// URL, or
    None for any other URL; ValueError (saying what is wrong, quoting no
    password) for a malformed one."""
    scheme, sep, rest = url.partition('://')
    kind = {'redis+sentinel': 'sentinel', 'redis+cluster': 'cluster'}.get(scheme.lower())
    if not sep or kind is None:
        return None
    parsed = Parsed(kind)
    rest, _, query = rest.partition('?')
    nodes, slash, path = rest.partition('/')
    at = nodes.rfind('@')
    if at >= 0:
        user, colon, password = nodes[:at].partition(':')
        if colon:  # a lone userinfo is the password, as redis-rb reads it
            parsed.user, parsed.password = unquote(user) or None, unquote(password)
        else:
            parsed.password = unquote(user)
        nodes = nodes[at + 1:]
    if '@' in path:
        raise _fail(f"unexpected '@' after the URL's host: {ENCODE_HINT}")
    default_port = SENTINEL_PORT if kind == 'sentinel' else CLUSTER_PORT
    for item in nodes.split(','):
        if not item:
            raise _fail("empty host in the URL's node list")
        parsed.nodes.append(_host_port(item, default_port))
    if kind == 'cluster':
        if path and path != '0':
            raise _fail('a Redis Cluster has only db 0')
    else:
        name, _, db = path.partition('/')
        if not slash or not name:
            raise _fail('Sentinel URL needs the master\'s name: redis+sentinel://host/NAME')
        parsed.master = unquote(name)
        if db:
            parsed.db = _int(db, 0, 1 << 20, 'bad db number in URL')
    _query(parsed, query)
    if kind == 'cluster' and parsed.db != 0:
        raise _fail('a Redis Cluster has only db 0')
    return parsed


def connect(url):
    """A redis-py client for URL (already resolved): Sentinel-managed,
    Cluster or plain."""
    parsed = parse(url)
    if parsed is None:
        return redis.Redis.from_url(url)
    if parsed.kind == 'sentinel':
        sentinels = Sentinel(parsed.nodes, sentinel_kwargs={
            'socket_timeout': SENTINEL_TIMEOUT_S, 'socket_connect_timeout': SENTINEL_TIMEOUT_S,
            'username': parsed.sentinel_user, 'password': parsed.sentinel_password})
        return sentinels.master_for(parsed.master, db=parsed.db, username=parsed.user,
                                    password=parsed.password)
    return LazyCluster(parsed)


def is_cluster(conn):
    """Whether CONN is a Cluster client (its pipelines cannot carry TIME)."""
    return isinstance(conn, (LazyCluster, RedisCluster))


class LazyCluster:
    """A RedisCluster made on first use: RedisCluster reads the slot map
    when it is made, and a server must be able to start before its Cluster
    answers (it waits, as for one Redis).  A Cluster none of whose seeds
    answers is a redis.ConnectionError, which callers already ride out."""

    def __init__(self, parsed):
        self._parsed, self._cluster = parsed, None

    def _get(self):
        if self._cluster is None:
            p = self._parsed
            try:
                self._cluster = RedisCluster(
                    startup_nodes=[ClusterNode(host, port) for host, port in p.nodes],
                    username=p.user, password=p.password)
            except RedisClusterException as exc:
                seeds = ','.join(f'{h}:{port}' for h, port in p.nodes)
                raise redis.ConnectionError(f'no Redis Cluster node answers at {seeds}: {exc}') \
                    from None
        return self._cluster

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def register_script(self, script):
        """A Script on this client, made without the Cluster (redis-py's
        would ask the client's connection pool for its encoder)."""
        from redis.commands.core import Script  # noqa: PLC0415
        return Script(self, script.encode('utf-8') if isinstance(script, str) else script)

    def close(self):
        if self._cluster is not None:
            self._cluster.close()
