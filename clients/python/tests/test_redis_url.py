"""test_redis_url.py -- the redis+sentinel:// and redis+cluster:// URLs as
the C library reads them (src/core/url.c), and the clients they give; no
Redis needed (the Cluster client is made on first use)."""

import re

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

import rrpc
from rrpc import redis_url


def test_plain_urls_are_redis_pys():
    assert redis_url.parse('redis://127.0.0.1:6379/2') is None
    assert redis_url.parse('unix:///tmp/r.sock') is None
    assert not redis_url.is_cluster(redis_url.connect('redis://127.0.0.1:1/0'))


def test_sentinel_url():
    p = redis_url.parse('redis+sentinel://u%40x:p%3Aw@s1,s2:26380,[::1]:26381/mymaster/3'
                        '?sentinel_password=sp&sentinel_user=su')
    assert (p.kind, p.master, p.db, p.user, p.password) == ('sentinel', 'mymaster', 3, 'u@x', 'p:w')
    assert p.nodes == [('s1', 26379), ('s2', 26380), ('::1', 26381)]
    assert (p.sentinel_user, p.sentinel_password) == ('su', 'sp')
    # The userinfo ends at the last '@': an unencoded '@' stays in the password.
    assert redis_url.parse('redis+sentinel://:p@ss@h/m').password == 'p@ss'
    assert redis_url.parse('redis+sentinel://secret@h/m').password == 'secret'


def test_sentinel_client_asks_for_the_named_master():
    conn = redis_url.connect('redis+sentinel://:pw@127.0.0.1:1/mymaster/2')
    pool = conn.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == 'mymaster'
    assert pool.connection_kwargs['db'] == 2 and pool.connection_kwargs['password'] == 'pw'
    assert not redis_url.is_cluster(conn)


def test_cluster_url():
    p = redis_url.parse('redis+cluster://:pw@a,b:7001/')
    assert (p.kind, p.nodes, p.password, p.db) == ('cluster', [('a', 6379), ('b', 7001)], 'pw', 0)
    assert redis_url.parse('redis+cluster://a/0').db == 0


def test_cluster_client_is_made_on_first_use():
    conn = redis_url.connect('redis+cluster://127.0.0.1:1')
    assert redis_url.is_cluster(conn)
    conn.register_script('return 1')  # no Cluster needed yet
    with pytest.raises(redis.ConnectionError, match='no Redis Cluster node answers at 127.0.0.1:1'):
        conn.ping()
    conn.close()


@pytest.mark.parametrize('url, message', [
    ('redis+cluster://a/1', 'a Redis Cluster has only db 0'),
    ('redis+cluster://a?db=2', 'a Redis Cluster has only db 0'),
    ('redis+sentinel://a', "Sentinel URL needs the master's name"),
    ('redis+sentinel://a/', "Sentinel URL needs the master's name"),
    ('redis+sentinel://a,,b/m', "empty host in the URL's node list"),
    ('redis+sentinel://a:0/m', 'bad port in URL'),
    ('redis+sentinel://a/m/x', 'bad db number in URL'),
    ('redis+sentinel://a/m?nope=1', "unknown URL parameter 'nope'"),
    ('redis+cluster://a?sentinel_user=u', "unknown URL parameter 'sentinel_user'"),
    ('redis+sentinel://a/m?x', "query item without '='"),
    ('redis+sentinel://:pa/ss@h/m', "unexpected '@' after the URL's host"),
    ('redis+sentinel://[::1/m', "unterminated '['"),
])
def test_refusals_say_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        redis_url.parse(url)
    assert 'ss@h' not in str(caught.value)  # never quotes a password


def test_client_and_server_take_the_urls():
    with pytest.raises(ValueError, match='only db 0'):
        rrpc.Client('redis+cluster://127.0.0.1:1/1')
    server = rrpc.Server('svc', {}, url='redis+cluster://127.0.0.1:1', heartbeat=False)
    assert redis_url.is_cluster(server.redis)
