# frozen_string_literal: true

# test_redis_url.rb -- the redis+sentinel:// and redis+cluster:// URLs as
# the C library reads them (src/core/url.c), and the clients they give; no
# Redis needed (the Cluster client is made on first use).
require_relative 'test_helper'

class TestRedisURL < Minitest::Test
  RedisURL = RRPC.const_get(:RedisURL)

  def test_plain_urls_are_redis_rbs
    assert_nil RedisURL.parse('redis://127.0.0.1:6379/2')
    assert_nil RedisURL.parse('unix:///tmp/r.sock')
    refute RedisURL.cluster?(RedisURL.connect('redis://127.0.0.1:1/0'))
  end

  def test_sentinel_url
    p = RedisURL.parse('redis+sentinel://u%40x:p%3Aw@s1,s2:26380,[::1]:26381/mymaster/3' \
                       '?sentinel_password=sp&sentinel_user=su')
    assert_equal [:sentinel, 'mymaster', 3, 'u@x', 'p:w'], [p.kind, p.master, p.db, p.user, p.password]
    assert_equal [['s1', 26_379], ['s2', 26_380], ['::1', 26_381]], p.nodes
    assert_equal %w[su sp], [p.sentinel_user, p.sentinel_password]
    # The userinfo ends at the last '@': an unencoded '@' stays in the password.
    assert_equal 'p@ss', RedisURL.parse('redis+sentinel://:p@ss@h/m').password
    assert_equal 'secret', RedisURL.parse('redis+sentinel://secret@h/m').password
  end

  def test_sentinel_client_asks_for_the_named_master
    redis = RedisURL.connect('redis+sentinel://:pw@127.0.0.1:1/mymaster/2?sentinel_password=sp')
    options = redis._client.options
    assert_equal ['mymaster', 2, 'pw', 'master'], [options[:host], options[:db], options[:password], options[:role].to_s]
    assert_equal [{ host: '127.0.0.1', port: 1, username: nil, password: 'sp' }], options[:sentinels]
    refute RedisURL.cluster?(redis)
  end

  def test_cluster_url
    p = RedisURL.parse('redis+cluster://:pw@a,b:7001/')
    assert_equal [:cluster, [['a', 6379], ['b', 7001]], 'pw', 0], [p.kind, p.nodes, p.password, p.db]
    assert_equal 0, RedisURL.parse('redis+cluster://a/0').db
  end

  def test_cluster_client_is_made_on_first_use
    redis = RedisURL.connect('redis+cluster://127.0.0.1:1')
    assert RedisURL.cluster?(redis)
    e = assert_raises(Redis::CannotConnectError) { redis.ping }
    assert_match 'no Redis Cluster node answers at 127.0.0.1:1', e.message
    redis.close
  end

  REFUSALS = {
    'redis+cluster://a/1' => 'a Redis Cluster has only db 0',
    'redis+cluster://a?db=2' => 'a Redis Cluster has only db 0',
    'redis+sentinel://a' => "Sentinel URL needs the master's name",
    'redis+sentinel://a/' => "Sentinel URL needs the master's name",
    'redis+sentinel://a,,b/m' => "empty host in the URL's node list",
    'redis+sentinel://a:0/m' => 'bad port in URL',
    'redis+sentinel://a/m/x' => 'bad db number in URL',
    'redis+sentinel://a/m?nope=1' => "unknown URL parameter 'nope'",
    'redis+cluster://a?sentinel_user=u' => "unknown URL parameter 'sentinel_user'",
    'redis+sentinel://a/m?x' => "query item without '='",
    'redis+sentinel://:pa/ss@h/m' => "unexpected '@' after the URL's host",
    'redis+sentinel://[::1/m' => "unterminated '['"
  }.freeze

  def test_refusals_say_what_is_wrong
    REFUSALS.each do |url, message|
      e = assert_raises(ArgumentError, url) { RedisURL.parse(url) }
      assert_includes e.message, message, url
      refute_includes e.message, 'ss@h' # never quotes a password
    end
  end

  def test_client_and_server_take_the_urls
    e = assert_raises(ArgumentError) { RRPC::Client.new(url: 'redis+cluster://127.0.0.1:1/1') }
    assert_includes e.message, 'only db 0'
    server = RRPC::Server.new('svc', Object.new, url: 'redis+cluster://127.0.0.1:1', heartbeat: false)
    assert RedisURL.cluster?(server.instance_variable_get(:@redis))
  end
end
