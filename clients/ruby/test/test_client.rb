# frozen_string_literal: true

# test_client.rb -- RRPC::Client and its proxy against a Ruby worker on a
# real redis-server: results, the error classes (one base, RRPC::Error),
# timeouts, notifications and the registry's fail-fast rules.
require_relative 'test_helper'

class TestClient < Minitest::Test
  include RRPCTest::Helpers

  def test_error_classes_share_one_base
    [RRPC::RpcError, RRPC::InvalidParams, RRPC::RemoteError, RRPC::Timeout, RRPC::Unavailable,
     RRPC::Overloaded, RRPC::ProtocolError, RRPC::RedisError].each do |cls|
      assert_operator cls, :<, RRPC::Error
    end
    assert_same RRPC::Timeout, RRPC::CallTimeout
    refute_operator RRPC::RemoteError, :<, RRPC::RpcError # a nested call's error is not forwarded as is
  end

  def test_call_and_proxy
    service, = serve
    c = client
    assert_equal 3, c.call(service, 'add', 1, 2)
    assert_equal 2, c.call(service, 'subtract', a: 5, b: 3)
    calc = c.proxy(service)
    assert_equal 3.5, calc.divide(7, 2)
    assert_equal [{ 'k' => [1] }], calc.echo({ 'k' => [1] })
    assert_equal 1, calc.sleep(1) # the service's sleep, not Kernel#sleep
    assert_equal "#<RRPC::Proxy #{service}>", calc.inspect
  end

  def test_remote_errors
    service, = serve
    calc = client.proxy(service)
    { -> { calc.divide(1, 0) } => 1, -> { calc.nosuch } => -32_601, -> { calc.add('x', 1) } => -32_602,
      -> { calc.add(1, 2, 3) } => -32_602 }.each do |call, code|
      error = assert_raises(RRPC::RemoteError) { call.call }
      assert_equal code, error.code
    end
  end

  def test_timeout_withdraws_the_request
    c = client
    nobody = unique('nobody')
    started = monotonic
    assert_raises(RRPC::Timeout) { c.call(nobody, 'add', 1, 2, timeout: 0.3) }
    assert_operator monotonic - started, :<, 2
    assert_equal 0, @redis.llen(nobody)
  end

  def test_notify_runs_without_a_reply
    service, = serve
    c = client
    before = @redis.keys('*').sort
    assert_nil c.notify(service, 'add', 1, 2)
    assert_equal 0, c.call(service, 'add', 0, 0)
    assert_equal before, @redis.keys('*').sort
  end

  def test_redis_errors
    c = RRPC::Client.new(url: "unix://#{redis_socket_path}", timeout: 1)
    error = assert_raises(RRPC::RedisError) { c.call('calc', 'add', 1, 2) }
    assert_kind_of Redis::BaseConnectionError, error.cause
    assert_raises(RRPC::RedisError) { c.notify('calc', 'add', 1, 2) }
    key = unique('string')
    @redis.set(key, 'x') # a request list that is not a list
    error = assert_raises(RRPC::RedisError) { client(fail_fast: false).notify(key, 'add', 1, 2) }
    assert_match(/WRONGTYPE/, error.message)
  end

  def test_unavailable_and_overloaded
    service, server, _log, thread = serve(heartbeat: true, max_queue: 1)
    c = client
    assert_equal 3, c.call(service, 'add', 1, 2) # registered and live
    server.stop
    thread.join(5)
    assert_raises(RRPC::Unavailable) { client.call(service, 'add', 1, 2) }
    service, = serve(heartbeat: true, max_queue: 1)
    c = client
    assert_equal 3, c.call(service, 'add', 1, 2)
    c.notify(service, 'sleep', 1000) # the worker is busy for 1 s...
    assert wait_until { @redis.llen(service).zero? }
    c.notify(service, 'sleep', 0) # ...while this one waits: the queue is full
    assert_raises(RRPC::Overloaded) { client.call(service, 'add', 1, 2) } # a fresh view of the registry
  end
end
