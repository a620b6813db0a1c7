# frozen_string_literal: true

# test_priority.rb -- priorities, tenants, progress, the caller's cancel
# and the refusal to serve a service with limits (PROTOCOL.md 7 and 9), in
# the Ruby peer, against a real redis-server.
require_relative 'test_helper'

# Handlers that show what ran, in order.
class Ordered
  attr_reader :seen

  def initialize
    @seen = Queue.new
  end

  def rec(name)
    @seen << name
    name
  end

  def taken
    out = []
    out << @seen.pop until @seen.empty?
    out
  end
end

class TestPriority < Minitest::Test
  include RRPCTest::Helpers

  def test_bad_priority_refused_before_sending
    service = unique('prio')
    ['urgent', 'HIGH', '', 1, true, ['high']].each do |bad|
      e = assert_raises(ArgumentError) { client(fail_fast: false).call(service, 'rec', 'x', priority: bad, timeout: 0.1) }
      assert_match(/priority/, e.message)
      assert_raises(ArgumentError) { client.notify(service, 'rec', 'x', priority: bad) }
    end
    assert_equal 0, @redis.llen(service) + @redis.llen("{#{service}}:high") + @redis.llen("{#{service}}:low")
  end

  def test_bad_tenant_refused_before_sending
    service = unique('tenant')
    ['', 7, :acme].each do |bad|
      assert_raises(ArgumentError) { client.notify(service, 'rec', 'x', tenant: bad) }
    end
    assert_equal 0, @redis.llen(service)
  end

  def test_members_sent
    service = unique('members')
    client.notify(service, 'rec', 'a', tenant: 'acme', priority: 'normal')
    client.notify(service, 'rec', 'b', priority: :low)
    first = JSON.parse(@redis.lpop(service))
    assert_equal 'acme', first['tenant']
    refute first.key?('priority') # absent means normal
    # L was not empty when the low one came: it waits on {L}:low.
    assert_equal 'low', JSON.parse(@redis.lpop("{#{service}}:low"))['priority']
  end

  def test_no_backlog_goes_straight_onto_the_list
    service = unique('straight')
    client.notify(service, 'rec', 'h', priority: 'high')
    assert_equal [1, 0], [@redis.llen(service), @redis.llen("{#{service}}:high")]
  end

  def test_backlog_served_in_priority_order
    service = unique('order')
    [['n0', nil], ['l1', 'low'], ['n1', 'normal'], ['h1', 'high'], ['l2', 'low'], ['h2', 'high']].each do |name, level|
      client.notify(service, 'rec', name, priority: level)
    end
    rec = Ordered.new
    serve(rec, service: service)
    assert wait_until { rec.seen.size == 6 }
    assert_equal %w[h1 h2 n0 n1 l1 l2], rec.taken
  end

  def test_worker_answers_a_bad_priority_32600
    service, = serve(Ordered.new)
    ['urgent', 3, nil, { 'level' => 'high' }].each_with_index do |bad, i|
      push(service, JSON.generate('jsonrpc' => '2.0', 'method' => 'rec', 'params' => ['x'], 'id' => "prio-rb-#{i}",
                                  'priority' => bad))
      resp = reply("prio-rb-#{i}")
      assert_equal "prio-rb-#{i}", resp['id']
      assert_equal [-32_600, { 'member' => 'priority' }], [resp['error']['code'], resp['error']['data']]
    end
  end

  def test_refuses_to_serve_with_limits
    service = unique('limits')
    @redis.hset("{#{service}}:config", 'limits', '{"add": {"rate": 5}}')
    server = RRPC::Server.new(service, Ordered.new, url: RRPCTest::REDIS_URL, logger: Logger.new(StringIO.new))
    e = assert_raises(RRPC::Unsupported) { server.serve_forever }
    assert_includes e.message, "{#{service}}:config field limits"
    assert_equal 0, @redis.zcard("{#{service}}:workers") # never registered
  end

  def test_progress_in_order_then_the_answer
    service, = serve(Calc.new)
    seen = []
    assert_equal 4, client.call(service, 'count', 4, 5, progress: ->(v) { seen << v })
    assert_equal [1, 2, 3, 4], seen
    assert_equal 2, client.call(service, 'count', 2, 1) # not asked: the answer alone
  end

  def test_seed_caller_sees_no_progress
    service, = serve(Calc.new)
    push(service, JSON.generate('jsonrpc' => '2.0', 'method' => 'count', 'params' => [3, 1], 'id' => 'seed-rb'))
    assert_equal 3, reply('seed-rb')['result']
    assert_equal 0, @redis.llen('seed-rb')
  end

  def test_progress_outside_a_handler_raises
    assert_raises(RuntimeError) { RRPC.progress(1) }
    refute RRPC.cancelled?
  end

  def test_cancel_a_running_call
    service, = serve(Calc.new)
    token = RRPC::CancelToken.new
    Thread.new do
      sleep 0.3
      token.cancel
    end
    began = monotonic
    seen = []
    assert_raises(RRPC::Cancelled) do
      client.call(service, 'count', 500, 10, cancel: token, progress: ->(v) { seen << v })
    end
    assert_operator monotonic - began, :<, 2
    refute_empty seen
    # The handler stopped: the next call is answered at once.
    assert_equal 3, client.call(service, 'add', 1, 2, timeout: 1)
  end

  def test_cancel_reaches_nested_calls
    inner, = serve(Calc.new(url: RRPCTest::REDIS_URL))
    outer, = serve(Calc.new(url: RRPCTest::REDIS_URL))
    token = RRPC::CancelToken.new
    Thread.new do
      sleep 0.4
      token.cancel
    end
    assert_raises(RRPC::Cancelled) { client.call(outer, 'forward', inner, 'sleep', [5000], cancel: token) }
    # The nested call carried the cancel key: the inner handler stopped, its worker is free.
    assert_equal 3, client.call(inner, 'add', 1, 2, timeout: 2)
  end

  def test_cancel_a_queued_call_takes_it_back
    service = unique('queued')
    token = RRPC::CancelToken.new
    Thread.new do
      sleep 0.2
      token.cancel
    end
    assert_raises(RRPC::Cancelled) { client(fail_fast: false).call(service, 'rec', 'x', cancel: token) }
    assert_equal 0, @redis.llen(service)
  end

  def test_cancelled_before_it_runs
    service = unique('before')
    @redis.set('q-rb:cancel', 1, px: 60_000)
    push(service, JSON.generate('jsonrpc' => '2.0', 'method' => 'count', 'params' => [1, 0], 'id' => 'q-rb',
                                'cancel_key' => 'q-rb:cancel'))
    serve(Calc.new, service: service)
    assert_equal(-32_002, reply('q-rb')['error']['code'])
  end
end
