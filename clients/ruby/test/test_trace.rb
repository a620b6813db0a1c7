# frozen_string_literal: true

# test_trace.rb -- W3C Trace Context (PROTOCOL.md 7) in the Ruby peer: the
# traceparent rules, what a handler sees, a call from inside a handler
# continuing the trace, calls starting one, dead letters keeping it; and the
# sent member of requests and the expired counter (PROTOCOL.md 9).
require_relative 'test_helper'

# Handlers that report the trace context they see.
class Tracer
  def initialize(url)
    @url = url
  end

  def seen = [RRPC.current_traceparent, RRPC.current_tracestate]

  # What a call made from here sends, as the service it calls sees it.
  def nested(service) = [RRPC.current_traceparent, RRPC::Client.new(url: @url).call(service, 'seen')]
end

class TestTrace < Minitest::Test
  include RRPCTest::Helpers

  GOOD = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

  def trace = RRPC.const_get(:Trace)

  def test_traceparent_rules
    assert_equal GOOD, trace.parse(GOOD)
    assert_equal GOOD, trace.parse("01#{GOOD[2..]}-later")
    assert trace.parse("#{GOOD[0..-3]}ff")
    bad = ["ff#{GOOD[2..]}", "#{GOOD}-", "#{GOOD}x", "01#{GOOD[2..]}x", GOOD.upcase, "00#{GOOD[2..].upcase}",
           "00-#{'0' * 32}-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-#{'0' * 16}-01",
           GOOD[0..-2], GOOD.tr('-', '_'), '', nil, 42, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g"]
    bad.each { |value| assert_nil trace.parse(value), value.inspect }
    assert trace.state_ok?('rojo=1,congo=2')
    refute trace.state_ok?("a=\n")
    refute trace.state_ok?('a' * 513)
  end

  def test_handler_sees_and_continues
    inner, = serve(Tracer.new(RRPCTest::REDIS_URL))
    outer, = serve(Tracer.new(RRPCTest::REDIS_URL))
    seen, state = client.call(inner, 'seen', traceparent: GOOD, tracestate: 'rojo=1')
    assert_equal [GOOD, 'rojo=1'], [seen, state]

    mine, (theirs, their_state) = client.call(outer, 'nested', inner, traceparent: GOOD, tracestate: 'rojo=1')
    assert_equal GOOD, mine
    assert_equal GOOD[0, 36], theirs[0, 36] # same trace id
    refute_equal GOOD[36, 16], theirs[36, 16] # a new parent id
    assert_equal '-01', theirs[52, 3] # the flags kept
    assert_equal 'rojo=1', their_state
  end

  def test_calls_start_a_trace
    service, = serve(Tracer.new(RRPCTest::REDIS_URL))
    a, = client.call(service, 'seen')
    b, = client.call(service, 'seen')
    assert trace.parse(a)
    assert_equal '-00', a[52, 3] # not claimed sampled
    refute_equal a[3, 32], b[3, 32]
    assert_raises(ArgumentError) { client.call(service, 'seen', traceparent: GOOD.upcase) }
    assert_raises(ArgumentError) { client.call(service, 'seen', tracestate: "a=\n") }
  end

  def test_invalid_traceparent_is_ignored
    service, = serve(Tracer.new(RRPCTest::REDIS_URL))
    key = unique('reply')
    push(service, JSON.generate({ jsonrpc: '2.0', method: 'seen', id: key, traceparent: GOOD.upcase,
                                  tracestate: 'rojo=1' }))
    assert_equal [nil, nil], reply(key)['result']
  end

  def test_dead_letter_keeps_trace
    service, _server, log = serve
    push(service, JSON.generate({ jsonrpc: '2.0', method: 'add', params: [1, 2], id: nil, traceparent: GOOD }))
    letter = dead_letter(service)
    assert_equal 'no reply key', letter['reason']
    assert_equal GOOD, letter['traceparent']
    assert_match(/dead letter \(trace #{GOOD[3, 32]}\)/, log.string)
  end

  def test_calc_forward
    target, = serve(Tracer.new(RRPCTest::REDIS_URL))
    service, = serve(Calc.new(url: RRPCTest::REDIS_URL))
    seen, = client.call(service, 'forward', target, 'seen', [], traceparent: GOOD)
    assert_equal GOOD[0, 36], seen[0, 36]
    refute_equal GOOD, seen
    calc, = serve # one worker: a forward to itself would wait for itself
    assert_equal 5, client.call(service, 'forward', calc, 'add', { a: 2, b: 3 })
    error = assert_raises(RRPC::RemoteError) { client.call(service, 'forward', calc, 'divide', [1, 0]) }
    assert_equal [1, 'division by zero'], [error.code, error.message] # passed on as it came
  end

  def redis_ms
    sec, usec = @redis.time
    (sec * 1000) + (usec / 1000)
  end

  # sent (PROTOCOL.md 7): Redis's time when pushed, on calls with or without
  # a deadline, not on notifications.
  def test_requests_carry_sent
    service = unique('sent')
    kept = "#{service}-kept"
    before = redis_ms
    [5, 0].each do |timeout|
      worker = Thread.new do # a worker of the test's own: it keeps the request and answers
        r = Redis.new(url: RRPCTest::REDIS_URL)
        _key, text = r.blpop(service, timeout: 10)
        req = JSON.parse(text)
        r.rpush(kept, text)
        r.rpush(req['reply_to'], JSON.generate({ jsonrpc: '2.0', result: 1, id: req['id'] }))
        r.close
      end
      assert_equal 1, client(fail_fast: false).call(service, 'm', timeout: timeout)
      worker.join
      req = JSON.parse(@redis.lpop(kept))
      assert_kind_of Integer, req['sent']
      assert_operator req['sent'], :>=, before - 5
      assert_operator req['sent'], :<=, redis_ms + 5
      if timeout.positive?
        assert_equal 5000, req['deadline'] - req['sent']
      else
        refute req.key?('deadline')
      end
    end
    client.notify(service, 'n')
    refute JSON.parse(@redis.lpop(service)).key?('sent')
  end

  # <service>:stats field expired (PROTOCOL.md 9): requests, notifications
  # and batch elements refused for their deadline, not the others.
  def test_expired_requests_are_counted
    service, = serve(Tracer.new(RRPCTest::REDIS_URL))
    late = redis_ms - 1000
    key = unique('reply')
    push(service, JSON.generate({ jsonrpc: '2.0', method: 'seen', id: key, deadline: late }))
    assert_equal(-32_000, reply(key)['error']['code'])
    push(service, JSON.generate({ jsonrpc: '2.0', method: 'seen', deadline: late }))
    push(service, JSON.generate([{ jsonrpc: '2.0', method: 'seen', id: 1, reply_to: key, deadline: late },
                                 { jsonrpc: '2.0', method: 'seen', id: 2, deadline: late },
                                 { jsonrpc: '2.0', method: 'seen', id: 3, deadline: late + 120_000 }]))
    codes = reply(key).map { |x| x.dig('error', 'code') || 'ok' }
    assert_equal [-32_000, -32_000, 'ok'], codes
    assert wait_until { @redis.hget("#{service}:stats", 'expired') == '4' }, @redis.hgetall("#{service}:stats").inspect
  end
end
