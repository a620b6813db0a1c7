# frozen_string_literal: true

# test_amqp_registry.rb -- the Ruby AMQP server answers registry queries
# (PROTOCOL.md 12, "Operations over AMQP") on the broker of
# $RRPC_TEST_AMQP_URL (test/test_amqp.sh, ctest ruby_amqp; skipped
# without).  The queries are published with bunny as the spec says, with a
# tutorial-style exclusive queue as reply_to; test_amqp.sh runs the real
# `rrpc ls`/`rrpc info` against calc_server.rb as well.
require 'minitest/autorun'
require 'rrpc'
require 'json'
require 'logger'
require 'securerandom'
require 'stringio'

class TestAMQPRegistry < Minitest::Test
  URL = ENV.fetch('RRPC_TEST_AMQP_URL', nil)

  # Methods of its own, one that fails.
  class Small
    def add(a, b) = a + b

    def fail_please = raise(RRPC::RpcError.new(7, 'no'))
  end

  def setup
    skip 'RRPC_TEST_AMQP_URL is not set: no broker to test against (ctest ruby_amqp starts one)' unless URL
    require 'bunny'
    @bunny = Bunny.new(RRPC.const_get(:AMQP).settings(URL)).tap(&:start)
    @ch = @bunny.create_channel
    @ch.direct('rrpc:registry') # as every server declares it, so a query routes even before one ran
    @threads = []
  end

  def teardown
    @threads&.each { |server, thread| [server.stop, thread.join(10)] }
    @bunny&.close
  end

  def serve(service, **opts)
    server = RRPC::Server.new(service, Small.new, url: URL, logger: Logger.new(StringIO.new), **opts)
    @threads << [server, Thread.new { server.serve_forever }]
    assert wait_until { @bunny.queue_exists?(service) }, "#{service}: no queue"
    server
  end

  # The answers to one query with routing KEY ('' = every server), gathered
  # for WINDOW seconds or until one from service WANT came.
  def ask(key, window = 0.3, want: nil)
    replies = @ch.queue('', exclusive: true)
    corr = SecureRandom.hex(8)
    @ch.exchange('rrpc:registry', type: :direct).publish(
      '{"query": "workers"}', routing_key: key, reply_to: replies.name, correlation_id: corr,
                              content_type: 'application/json', expiration: '500'
    )
    answers = []
    finish = Process.clock_gettime(Process::CLOCK_MONOTONIC) + window
    until Process.clock_gettime(Process::CLOCK_MONOTONIC) > finish || (want && mine(want, answers).any?)
      _info, props, body = replies.pop
      next sleep(0.02) unless body

      answers << JSON.parse(body) if props.correlation_id == corr
    end
    replies.delete
    answers
  end

  def mine(service, answers) = answers.select { |a| a['service'] == service }

  def wait_until(timeout = 10)
    finish = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until yield
      return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > finish

      sleep 0.02
    end
    true
  end

  def test_answers_with_record_counters_and_stats
    service = "rbreg#{SecureRandom.hex(4)}"
    server = serve(service)
    assert wait_until { mine(service, ask(service, want: service)).any? }, 'never answered'
    client = RRPC::Client.new(url: URL, timeout: 5)
    assert_equal 3, client.call(service, 'add', 1, 2)
    assert_raises(RRPC::RemoteError) { client.call(service, 'fail_please') }
    client.notify(service, 'add', 1, 1)
    assert wait_until { server.counts['requests'] == 3 }
    rec = mine(service, ask(service, 1, want: service)).first
    refute_nil rec
    assert_equal [Process.pid, 1, 1, 0, 1.0, 5.0],
                 rec.values_at('pid', 'threads', 'shards', 'max_queue', 'heartbeat_s', 'ttl_s')
    assert_match(/\Aruby-/, rec['version'])
    assert_match(/\A[^:]+:#{Process.pid}:\h{8}\z/, rec['id'])
    assert_operator rec['started'], :<=, rec['time']
    assert_equal %w[add fail_please rpc.discover rpc.ping], rec['methods'].map { |m| m['name'] }.sort
    assert_equal({ 'requests' => 3, 'notifications' => 1, 'errors' => 1, 'expired' => 0, 'dead_letters' => 0,
                   'redelivered' => 0, 'given_back' => 0, 'lost' => 0 }, rec['counters'])
    assert_equal [2, 1], rec['mstats'].values_at('calls:add', 'errors:fail_please')
    assert_equal 3, rec['mstats'].select { |k, _| k.start_with?('h') }.values.sum
    refute_empty mine(service, ask('', 1, want: service))
    # Stopped: gone at once (its queue went with its connection).
    @threads.each { |s, t| [s.stop, t.join(10)] }
    assert_empty mine(service, ask(''))
  ensure
    client&.close
  end

  def test_heartbeat_off_is_unseen
    service = "rbreg#{SecureRandom.hex(4)}"
    serve(service, heartbeat: false)
    client = RRPC::Client.new(url: URL, timeout: 5)
    assert_equal 2, client.call(service, 'add', 1, 1)
    assert_empty mine(service, ask(service))
  ensure
    client&.close
  end
end
