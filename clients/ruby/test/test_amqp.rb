# frozen_string_literal: true

# test_amqp.rb -- the Ruby peer over RabbitMQ (PROTOCOL.md 12), against the
# broker of $RRPC_TEST_AMQP_URL (tests/harness/with-rabbitmq.sh gives one:
# clients/ruby/test/test_amqp.sh, ctest ruby_amqp).  Without it every test
# skips, saying so.  No Redis is needed: this file does not load
# test_helper.rb (which insists on one).
require 'minitest/autorun'
require 'rrpc'
require 'logger'
require 'securerandom'
require 'stringio'
require_relative '../examples/calc_server' # the Calc handler

class TestAMQP < Minitest::Test
  URL = ENV.fetch('RRPC_TEST_AMQP_URL', nil)

  # Records the notifications it runs, for the tests that send them.
  class Recorder < Calc
    attr_reader :seen

    def initialize
      super
      @seen = Thread::Queue.new
    end

    def note(text)
      @seen << text
      text
    end
  end

  def setup
    skip 'RRPC_TEST_AMQP_URL is not set: no broker to test against (ctest ruby_amqp starts one)' unless URL
    require 'bunny'
    @servers = []
    @bunny = Bunny.new(RRPC.const_get(:AMQP).settings(URL)).tap(&:start)
    @ch = @bunny.create_channel
  end

  def teardown
    @servers&.each { |server, _thread| server.stop }
    @servers&.each { |_server, thread| thread.join(10) }
    @bunny&.close
  end

  def unique(name) = "t#{name}#{SecureRandom.hex(4)}"

  # A server of obj on a fresh queue, serving in a thread, once its queue
  # exists.  [service, server, log].
  def serve(obj = Calc.new, service: unique('svc'), **opts)
    log = StringIO.new
    server = RRPC::Server.new(service, obj, url: URL, logger: Logger.new(log), **opts)
    thread = Thread.new { server.serve_forever }
    @servers << [server, thread]
    assert wait_until { @bunny.queue_exists?(service) }, "the server did not declare #{service}"
    [service, server, log]
  end

  def client(**opts) = RRPC::Client.new(url: URL, timeout: 10, **opts)

  # Publishes BODY raw, as a tutorial caller would, and returns the answer's
  # body (nil after 5 s): an exclusive callback queue, a correlation_id.
  def raw_call(queue, body)
    replies = @ch.queue('', exclusive: true)
    corr = SecureRandom.hex(8)
    @ch.default_exchange.publish(body, routing_key: queue, reply_to: replies.name, correlation_id: corr)
    wait_until(5) { replies.message_count.positive? }
    _info, props, answer = replies.pop
    assert_equal corr, props.correlation_id if answer
    answer
  end

  def wait_until(timeout = 10)
    finish = monotonic + timeout
    until yield
      return false if monotonic > finish

      sleep 0.02
    end
    true
  end

  def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  def test_amqp_url_gives_amqp_client_and_server
    c = client
    assert_kind_of RRPC::Client, c
    refute_instance_of RRPC::Client, c # the AMQP one, a subclass
    assert_raises(RRPC::Unsupported) { c.redis }
    c.close
    assert_instance_of RRPC::Client, RRPC::Client.new(url: 'redis://127.0.0.1:1') # Redis: as before
  end

  def test_rrpc_url_comes_before_redis_url
    service, = serve
    saved = ENV.to_h.slice('RRPC_URL', 'REDIS_URL')
    ENV['RRPC_URL'] = URL
    ENV['REDIS_URL'] = 'redis://127.0.0.1:1'
    c = RRPC::Client.new(timeout: 10)
    assert_equal 42, c.call(service, 'multiply', 6, 7)
    c.close
  ensure
    %w[RRPC_URL REDIS_URL].each { |k| saved&.key?(k) ? ENV[k] = saved[k] : ENV.delete(k) }
  end

  def test_calls_results_errors
    service, = serve
    c = client
    calc = c.proxy(service)
    assert_equal 3, calc.add(1, 2)
    assert_equal 2, calc.subtract(a: 5, b: 3)
    e = assert_raises(RRPC::RemoteError) { calc.divide(1, 0) }
    assert_equal 1, e.code
    e = assert_raises(RRPC::RemoteError) { calc.nosuch }
    assert_equal RRPC::METHOD_NOT_FOUND, e.code
    assert_equal service, c.call(service, 'rpc.ping')['service']
    assert_equal service, c.call(service, 'rpc.discover')['info']['title']
    # Calls from several threads share one client.
    sums = 4.times.map { |i| Thread.new { c.call(service, 'add', i, i) } }.map(&:value)
    assert_equal [0, 2, 4, 6], sums
    c.close
  end

  def test_no_queue_fails_fast
    c = client
    started = monotonic
    e = assert_raises(RRPC::Unavailable) { c.call(unique('nobody'), 'add', 1, 2) }
    assert_operator monotonic - started, :<, 2
    assert_match(/has no queue/, e.message)
    c.close
  end

  def test_what_amqp_lacks_is_refused
    service, = serve
    c = client
    e = assert_raises(RRPC::Unsupported) { c.call(service, 'add', 1, 2, priority: 'high') }
    assert_equal 'priorities are not supported over AMQP yet', e.message
    e = assert_raises(RRPC::Unsupported) { c.call(service, 'count', 2, 1, progress: ->(_) {}) }
    assert_equal 'progress is not supported over AMQP yet', e.message
    # amqps:// works (tests/amqp/test_amqps.sh); a TLS setting it cannot use
    # is refused up front, and TLS settings need amqps://.
    e = assert_raises(ArgumentError) { RRPC::Client.new(url: "#{URL.sub('amqp:', 'amqps:')}?verify=maybe").call(service, 'add', 1, 2) }
    assert_match(/verify= takes verify_peer or verify_none/, e.message)
    e = assert_raises(ArgumentError) { RRPC::Client.new(url: "#{URL}?cacertfile=/ca.pem").call(service, 'add', 1, 2) }
    assert_match(/are for amqps:/, e.message)
    c.close
  end

  def test_refused_login_masks_the_password
    e = assert_raises(RRPC::BrokerError) { RRPC::Client.new(url: URL.sub('guest:guest@', 'guest:s3cr3t@')) }
    refute_includes e.message, 's3cr3t'
    assert_includes e.message, '***'
  end

  def test_url_settings
    amqp = RRPC.const_get(:AMQP)
    assert_equal({ user: 'u', pass: 'p@ss', host: 'h', port: 5673, vhost: '/' }, amqp.settings('amqp://u:p%40ss@h:5673/'))
    assert_equal '/', amqp.settings('amqp://u:p@h:1/%2F')[:vhost]
    assert_equal 'v h', amqp.settings('amqp://u:p@h:1/v%20h')[:vhost]
    assert_equal({ user: 'guest', pass: 'guest', host: 'localhost', port: 5672, vhost: '/' }, amqp.settings('amqp://'))
    assert_equal 7, amqp.settings('amqp://u:p@h/?heartbeat=7')[:heartbeat]
    assert_equal 0, amqp.settings('amqps://u:p@h/?verify=verify_none&heartbeat=0')[:heartbeat]
    %w[-1 65536 x 1.5].each do |bad|
      assert_raises(ArgumentError) { amqp.settings("amqp://u:p@h/?heartbeat=#{bad}") }
    end
    assert_raises(ArgumentError) { amqp.settings('amqp://u:p@h/?cacertfile=/x') } # TLS names: amqps:// only
  end

  # heartbeat= reaches the broker: the connection's negotiated heartbeat.
  def test_heartbeat_parameter_is_negotiated
    session = RRPC.const_get(:AMQP).connect("#{URL}#{URL.include?('?') ? '&' : '?'}heartbeat=3")
    assert_equal 3, session.heartbeat
    session.close
  end

  # The request carries the timeout as its expiration: not taken in time,
  # the broker drops it, so it never runs after its caller gave up.
  def test_timeout_and_expiration
    queue = @ch.queue(unique('idle')) # declared plainly, nobody consumes
    c = client
    assert_raises(RRPC::Timeout) { c.call(queue.name, 'add', 1, 2, timeout: 0.3) }
    assert wait_until(3) { queue.message_count.zero? }, 'the expired request stayed in the queue'
    c.close
  end

  def test_cancel_stops_the_wait
    service, = serve
    c = client
    token = RRPC::CancelToken.new
    Thread.new { sleep 0.2; token.cancel } # rubocop:disable Style/Semicolon
    started = monotonic
    assert_raises(RRPC::Cancelled) { c.call(service, 'sleep', 3000, cancel: token) }
    assert_operator monotonic - started, :<, 2
    c.close
  end

  def test_raw_bodies_answered_at_reply_to
    service, = serve
    parse = JSON.parse(raw_call(service, 'this is not JSON'))
    assert_equal(-32_700, parse['error']['code'])
    assert_nil parse['id']
    invalid = JSON.parse(raw_call(service, '{"method": "add"}'))
    assert_equal(-32_600, invalid['error']['code'])
    assert_equal '{"jsonrpc":"2.0","result":5,"id":7}',
                 raw_call(service, '{"jsonrpc":"2.0","method":"add","params":[2,3],"id":7}')
    batch = JSON.parse(raw_call(service, '[{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1}]'))
    assert_equal [{ 'jsonrpc' => '2.0', 'result' => 2, 'id' => 1 }], batch
  end

  # No reply_to: run, unanswered -- even with an id in the body.
  def test_notifications_run_unanswered
    rec = Recorder.new
    service, = serve(rec)
    c = client
    c.notify(service, 'note', 'one')
    @ch.default_exchange.publish('{"jsonrpc":"2.0","method":"note","params":["two"],"id":1}', routing_key: service)
    # Two connections publish them: the broker keeps no order between them.
    assert_equal %w[one two], [rec.seen.pop, rec.seen.pop].sort
    c.close
  end

  # A redelivered message may have run at a worker whose link broke before
  # its ack: at most once, it is not run but kept as a dead letter.
  def test_redelivered_is_dropped
    service = unique('redeliv')
    queue = @ch.queue(service)
    other = @bunny.create_channel
    @ch.default_exchange.publish('{"jsonrpc":"2.0","method":"note","params":["again"]}', routing_key: service)
    assert wait_until(5) { queue.message_count == 1 }
    other.queue(service).pop(manual_ack: true) # taken, never acked...
    other.close # ... and back in the queue, marked redelivered
    rec = Recorder.new
    _, server, log = serve(rec, service: service)
    assert wait_until(5) { server.counts['dead_letters'] == 1 }, 'the redelivered message was not kept'
    assert_match(/dead letter: redelivered: at most once/, log.string)
    c = client
    c.notify(service, 'note', 'fresh')
    assert_equal 'fresh', rec.seen.pop # the redelivered one never ran
    _, props, body = @ch.queue("#{service}:dead", durable: true, arguments: { 'x-max-length' => 1000 }).pop
    assert_equal 'redelivered: at most once, it may have run already', props.headers['x-rrpc-reason']
    assert_equal service, props.headers['x-rrpc-service']
    assert_match(/"again"/, body)
    c.close
  end

  # Reliable: a redelivery is counted (x-rrpc-deliveries) and run; one
  # counted max_deliveries times is a dead letter; the queue is the C
  # server's (durable, rrpc's arguments), which a plain server refuses.
  def test_reliable_counts_redeliveries_then_dead_letters
    service = unique('rel')
    args = { 'x-dead-letter-exchange' => '', 'x-dead-letter-routing-key' => "#{service}:dead" }
    queue = @ch.queue(service, durable: true, arguments: args)
    @ch.default_exchange.publish('{"jsonrpc":"2.0","method":"note","params":["once"]}', routing_key: service)
    @ch.default_exchange.publish('{"jsonrpc":"2.0","method":"note","params":["last"]}', routing_key: service,
                                                                                        headers: { 'x-rrpc-deliveries' => 2 })
    assert wait_until(5) { queue.message_count == 2 }
    other = @bunny.create_channel
    2.times { other.queue(service, durable: true, arguments: args).pop(manual_ack: true) }
    other.close # both back in the queue, marked redelivered
    rec = Recorder.new
    _, server, = serve(rec, service: service, reliable: true)
    assert_equal 'once', rec.seen.pop
    assert wait_until(5) { server.counts['dead_letters'] == 1 }
    assert_equal 2, server.counts['redelivered']
    _, props, body = @ch.queue("#{service}:dead", durable: true, arguments: { 'x-max-length' => 1000 }).pop
    assert_equal 'taken by 3 workers that died (max_deliveries 3)', props.headers['x-rrpc-reason']
    assert_match(/"last"/, body)
    e = assert_raises(RRPC::BrokerError) { RRPC::Server.new(service, Calc.new, url: URL).serve_forever }
    assert_match(/exists with other settings/, e.message)
  end
end
