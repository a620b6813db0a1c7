# frozen_string_literal: true

# test_server.rb -- RRPC::Server against a real redis-server: what it
# answers, its dead letters (bounded, PROTOCOL.md 6), batches over the size
# limit and over the time limit (5), and its wait for Redis at start.
require_relative 'test_helper'

# Handlers that show what ran.
class Recorder
  extend RRPC::Handler

  attr_reader :calls

  def initialize
    @calls = Queue.new
  end

  def note(tag)
    @calls << tag
    tag
  end

  def slow(ms)
    @calls << ms
    sleep(ms / 1000.0)
    ms
  end

  def big(bytes) = 'y' * bytes

  def taken
    out = []
    out << @calls.pop until @calls.empty?
    out
  end
end

class TestServer < Minitest::Test
  include RRPCTest::Helpers

  def call_text(service, method, params, id)
    JSON.generate({ jsonrpc: '2.0', method: method, params: params, id: id })
  end

  def test_answers_and_ping
    service, server, = serve
    calc = client.proxy(service)
    assert_equal 3, calc.add(1, 2)
    ping = client.call(service, 'rpc.ping')
    assert_equal [service, server.worker_id, "ruby-#{RRPC::VERSION}"], ping.values_at('service', 'worker', 'version')
  end

  # rpc.discover (PROTOCOL.md section 11): an OpenRPC document of the
  # methods, their descriptions and params.
  def test_discover
    service, = serve
    doc = client.call(service, 'rpc.discover')
    assert_equal ['1.3.2', service], [doc['openrpc'], doc['info']['title']]
    methods = doc['methods'].to_h { |m| [m['name'], m] }
    refute methods.key?('rpc.discover') # implied
    assert methods.key?('rpc.ping')
    assert_equal({ 'name' => 'result', 'schema' => {} }, methods['add']['result'])
    assert_equal %w[a b], methods['add']['params'].map { |p| p['name'] }
  end

  def test_oversized_message_dead_letter_is_bounded
    service, = serve
    key = unique('reply')
    text = %({"jsonrpc":"2.0","method":"echo","params":["#{'a' * 1_048_576}"],"id":"#{key}"})
    push(service, text)
    letter = dead_letter(service)
    assert_match(/\Atoo large: #{text.bytesize} bytes \(limit 1048576\)\z/, letter['reason'])
    refute letter.key?('message')
    assert_equal text.bytesize, letter['message_bytes']
    assert_equal Digest::SHA1.hexdigest(text), letter['message_sha1']
    assert_equal text.byteslice(0, 4096), letter['message_prefix']
    assert_equal 0, @redis.exists(key)
  end

  def test_oversized_response_dead_letter_is_bounded
    service, = serve(Recorder.new, max_request_bytes: 1000)
    push(service, call_text(service, 'big', [5000], nil)) # id null: no reply key
    letter = dead_letter(service)
    assert_equal 'no reply key', letter['reason']
    refute letter.key?('response')
    assert_operator letter['response_bytes'], :>, 5000
    assert_match(/\A[0-9a-f]{40}\z/, letter['response_sha1'])
    assert letter['response_prefix'].start_with?('{"jsonrpc":"2.0","result":"yyy')
    assert_equal 4096, letter['response_prefix'].bytesize
    # A message within the limit is kept whole, with its small response.
    push(service, call_text(service, 'big', [10], nil))
    letter = dead_letter(service)
    assert_equal call_text(service, 'big', [10], nil), letter['message']
    assert_equal 'y' * 10, letter['response']['result']
  end

  def test_oversized_batch_runs_nothing
    rec = Recorder.new
    service, = serve(rec)
    key = unique('reply')
    note = { jsonrpc: '2.0', method: 'note', params: ['n'], reply_to: "#{key}-note" }
    # Notifications only: their reply_to does not count, a dead letter.
    push(service, JSON.generate([note] * 1001))
    letter = dead_letter(service)
    assert_equal 'no reply key', letter['reason']
    assert_equal({ 'code' => -32_600, 'message' => 'Invalid Request: batch of 1001 elements (limit 1000)' },
                 letter['response']['error'])
    assert_nil letter['response']['id']
    # The first element that is answered names the key: one -32600, id null.
    calls = (1..1000).map { |i| { jsonrpc: '2.0', method: 'note', params: [i], id: "e#{i}", reply_to: key } }
    push(service, JSON.generate([note] + calls))
    resp = reply(key)
    assert_equal(-32_600, resp['error']['code'])
    assert_nil resp['id']
    assert_equal 0, @redis.exists("#{key}-note")
    assert_empty rec.taken
  end

  def test_batch_time_limit
    rec = Recorder.new
    service, = serve(rec, batch_time_limit: 0.3)
    key = unique('reply')
    el = ->(id, ms) { { jsonrpc: '2.0', method: 'slow', params: [ms], id: id, reply_to: key } }
    batch = [el.(1, 200), el.(2, 200), el.(3, 10),
             { jsonrpc: '2.0', method: 'slow', params: [7] }, # a notification past the limit
             { jsonrpc: '1.0', method: 'slow', id: 5 }, el.(6, 10)]
    started = monotonic
    push(service, JSON.generate(batch))
    resp = reply(key)
    assert_operator monotonic - started, :<, 2
    assert_equal [1, 2, 3, 5, 6], resp.map { |r| r['id'] }
    assert_equal [200, 200], resp.first(2).map { |r| r['result'] }
    over = { 'code' => -32_001, 'message' => 'Batch time limit exceeded', 'data' => { 'limit_ms' => 300 } }
    assert_equal over, resp[2]['error']
    assert_equal over, resp[4]['error']
    assert_equal(-32_600, resp[3]['error']['code'])
    assert_equal [200, 200], rec.taken # neither the late call nor the notification ran
  end

  def test_no_batch_time_limit
    service, = serve(Recorder.new, batch_time_limit: 0)
    key = unique('reply')
    batch = (1..3).map { |i| { jsonrpc: '2.0', method: 'slow', params: [150], id: i, reply_to: key } }
    push(service, JSON.generate(batch))
    assert_equal [150] * 3, reply(key).map { |r| r['result'] }
  end

  def test_waits_for_redis_at_start
    sock = redis_socket_path
    service, _server, log, thread = serve(url: "unix://#{sock}")
    sleep 1.0 # the server retries meanwhile
    assert thread.alive?, -> { "serve_forever returned: #{thread.value.inspect}" }
    start_redis(sock)
    calc = RRPC::Client.new(url: "unix://#{sock}", timeout: 10)
    assert wait_until { File.exist?(sock) }
    assert_equal 3, (begin
      calc.proxy(service).add(1, 2)
    rescue RRPC::RedisError
      sleep 0.1
      retry
    end)
    assert_equal 1, log.string.scan('waiting for Redis').size, log.string
    assert_match(/Redis answered after \d+\.\d s, serving/, log.string)
  end

  def test_start_timeout
    sock = redis_socket_path
    _service, _server, log, thread = serve(url: "unix://#{sock}", start_timeout: 0.5)
    started = monotonic
    error = thread.value
    assert_kind_of RRPC::RedisError, error
    assert_match(/did not answer within the start timeout \(0.5 s\)/, error.message)
    assert_in_delta 0.5, monotonic - started, 0.4
    assert_equal 1, log.string.scan('waiting for Redis (up to 0.5 s)').size, log.string
  end

  def test_negative_start_timeout_does_not_wait
    sock = redis_socket_path
    _service, _server, log, thread = serve(url: "unix://#{sock}", start_timeout: -1)
    assert_kind_of RRPC::RedisError, thread.value
    assert_kind_of Redis::CannotConnectError, thread.value.cause
    assert_empty log.string
  end

  def test_stop_while_waiting_for_redis
    sock = redis_socket_path
    _service, server, _log, thread = serve(url: "unix://#{sock}")
    sleep 0.3
    server.stop
    assert thread.join(2), 'serve_forever did not return after stop'
    assert_nil thread.value
  end

  def test_refused_password_fails_at_once
    sock = redis_socket_path
    start_redis(sock, '--requirepass', 'secret')
    assert wait_until { File.exist?(sock) }
    _service, _server, _log, thread = serve(url: "unix://#{sock}")
    assert thread.join(5), 'a refused password was waited on'
    assert_kind_of RRPC::RedisError, thread.value
    assert_match(/NOAUTH|WRONGPASS/, thread.value.message)
  end
end
