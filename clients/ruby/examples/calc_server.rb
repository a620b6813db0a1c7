#!/usr/bin/env ruby
# frozen_string_literal: true

# calc_server.rb -- the calc example service, served from Ruby.
#
# It exists to show a Ruby rrpc worker in a dozen lines and to be the Ruby
# side of the cross-language tests (clients/test_peers.sh) and of the
# conformance vectors: it answers exactly like the C calc server.
# clients/ruby/calc_server.rb runs it from a checkout; fault_worker.rb and
# the tests reuse its Calc class.
#
#   ruby calc_server.rb [--redis|--url URL] [--service calc] [--prefix P]
#                       [--no-heartbeat] [--heartbeat-interval S] [--heartbeat-ttl S]
#                       [--reply-prefix P]... [--batch-time S] [--start-timeout S]

require 'optparse'
require_relative '../lib/rrpc' # an application installs the gem and writes: require 'rrpc'

# Params come positional [a, b] or named {"a": .., "b": ..}.  The
# descriptions are those of the C calc-server, for `rrpc info`.
class Calc
  extend RRPC::Handler
  raw_params :echo

  AB = { a: 'number', b: 'number' }.freeze
  describe :add, 'add(a, b): a + b', params: AB
  describe :subtract, 'subtract(a, b): a - b', params: AB
  describe :multiply, 'multiply(a, b): a * b', params: AB
  describe :divide, 'divide(a, b): a / b as a real; error 1 if b is 0', params: AB
  describe :echo, 'echo(...): returns its params unchanged', params: 'any'
  describe :sleep, 'sleep(ms): waits ms milliseconds, returns ms', params: { ms: 'integer' }
  describe :count, 'count(n, ms): sends 1..n as progress, one every ms milliseconds, returns n',
           params: { n: 'integer', ms: 'integer' }
  describe :forward, 'forward(service, method, params): calls service.method(params) and returns its answer, ' \
                     "within this call's deadline and trace",
           params: { service: 'string', method: 'string', params: 'array|object' }

  # url, prefix: where forward's calls go (the server's Redis and prefix).
  def initialize(url: nil, prefix: '')
    @url = url
    @prefix = prefix
    @clients = {}
    @lock = Mutex.new
  end

  def add(a, b) = number(a, 'a') + number(b, 'b')

  def subtract(a, b) = number(a, 'a') - number(b, 'b')

  def multiply(a, b) = number(a, 'a') * number(b, 'b')

  def divide(a, b)
    # Both operands are checked before the zero test, like the other methods.
    a = number(a, 'a')
    raise RRPC::RpcError.new(1, 'division by zero') if number(b, 'b').zero?

    a.to_f / b
  end

  def echo(params) = params

  def sleep(ms)
    raise RRPC::InvalidParams, 'Invalid params: ms must not be negative' if number(ms, 'ms').negative?

    raise RRPC::RpcError.new(RRPC::CANCELLED, 'Cancelled') if sleep_unless_cancelled(ms)

    ms
  end

  def count(n, ms)
    raise RRPC::InvalidParams, 'Invalid params: n and ms must be integers >= 0' unless [n, ms].all? { |v| v.is_a?(Integer) && v >= 0 }

    (1..n).each do |i|
      raise RRPC::RpcError.new(RRPC::CANCELLED, 'Cancelled') if sleep_unless_cancelled(ms)

      RRPC.progress(i) # sent only if the caller asked
    end
    n
  end

  # A call made from inside this handler: it continues the request's trace
  # and gets no more time than its deadline leaves.  A remote error is
  # answered as it came; a failed call is error 3.
  def forward(service, method, params = nil)
    raise RRPC::InvalidParams, 'Invalid params: service and method must be strings' unless service.is_a?(String) && method.is_a?(String)

    client = forward_client
    case params
    when Array then client.call(service, method, *params)
    when Hash then client.call(service, method, **params.transform_keys(&:to_sym))
    when nil then client.call(service, method)
    else raise RRPC::InvalidParams, 'Invalid params: params must be an array, an object or null'
    end
  rescue RRPC::RemoteError => e
    raise RRPC::RpcError.new(e.code, e.message, e.data)
  rescue RRPC::Timeout, RRPC::Unavailable, RRPC::Overloaded, RRPC::ProtocolError, RRPC::RedisError,
         RRPC::BrokerError, RRPC::Unsupported => e
    raise RRPC::RpcError.new(3, 'forward failed', { 'error' => e.class.name, 'detail' => e.message })
  end

  private

  # Sleeps ms milliseconds in 20 ms steps; true if the caller cancelled.
  def sleep_unless_cancelled(ms)
    finish = Process.clock_gettime(Process::CLOCK_MONOTONIC) + ms / 1000.0
    loop do
      return true if RRPC.cancelled?

      left = finish - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return false unless left.positive?

      Kernel.sleep([left, 0.02].min)
    end
  end

  # A client per thread: a client is one connection, used by one thread.
  def forward_client
    @lock.synchronize { @clients[Thread.current] ||= RRPC::Client.new(url: @url, prefix: @prefix) }
  end

  # JSON gives Integer or Float for numbers; true/false/strings are refused.
  def number(value, name)
    raise RRPC::InvalidParams, "Invalid params: #{name} must be a number" unless value.is_a?(Integer) || value.is_a?(Float)

    value
  end
end

# The command line of calc_server.rb.
module CalcServer
  module_function

  def options(argv)
    opts = { redis: nil, service: 'calc', prefix: '', heartbeat: true, interval: 1.0, ttl: 5.0,
             reply_prefixes: nil, batch_time: 5.0, start_timeout: 0 }
    OptionParser.new do |o|
      o.banner = 'usage: calc_server.rb [--redis URL] [--service NAME] [--prefix P] [--no-heartbeat] ...'
      o.on('--redis URL', '--url URL', 'Redis URL, or amqp://user:pass@host:port/vhost for RabbitMQ ' \
                                       '(default $RRPC_URL, then $REDIS_URL, then redis://127.0.0.1:6379)') do |v|
        opts[:redis] = v
      end
      o.on('--service NAME', 'service name (default calc)') { |v| opts[:service] = v }
      o.on('--prefix P', 'key prefix (default none)') { |v| opts[:prefix] = v }
      o.on('--no-heartbeat', 'do not register in the registry (no heartbeat, no stats)') { opts[:heartbeat] = false }
      o.on('--heartbeat-interval S', Float, 'seconds between heartbeats (default: 1)') { |v| opts[:interval] = v }
      o.on('--heartbeat-ttl S', Float, 'seconds a heartbeat stays valid (default: 5)') { |v| opts[:ttl] = v }
      o.on('--reply-prefix P', 'answer only onto reply keys that start with P (repeatable; ' \
                               'default: any reply key PROTOCOL.md section 6 allows)') do |v|
        (opts[:reply_prefixes] ||= []) << v
      end
      o.on('--batch-time S', Float, 'a JSON-RPC batch runs at most S seconds; its calls not started by ' \
                                    'then are answered -32001 (default: 5; 0 = no limit)') { |v| opts[:batch_time] = v }
      o.on('--start-timeout S', Float, 'while Redis is not there at start, wait for it at most S seconds, ' \
                                       'then exit 1 (default: 0 = wait as long as it takes)') do |v|
        opts[:start_timeout] = v
      end
      o.on('--reliable', 'over AMQP: at least once -- durable queue, acked after the answer is confirmed, ' \
                         "redeliveries counted (the C server's --reliable; not over Redis in this peer)") do
        opts[:reliable] = true
      end
      o.on('--max-deliveries N', Integer, 'reliable: a request taken by N workers that died becomes a dead ' \
                                          'letter (default: 3)') { |v| opts[:max_deliveries] = v }
      o.on('--max-queue N', Integer, 'at most N requests wait (callers get "overloaded"; default: 0)') do |v|
        opts[:max_queue] = v
      end
    end.parse!(argv)
    opts
  end

  # --reliable's options: over AMQP only (the Redis peer has no reliable mode).
  def reliable(opts)
    return {} unless opts[:reliable]

    url = opts[:redis] || ENV['RRPC_URL'] || ENV['REDIS_URL'] || ''
    raise OptionParser::InvalidOption, '--reliable: the Ruby peer is reliable over AMQP only' unless url.match?(/\Aamqps?:/i)

    { reliable: true, max_deliveries: opts[:max_deliveries] || 3 }
  end

  def main(argv)
    opts = options(argv)
    $stderr.sync = true
    server = RRPC::Server.new(opts[:service], Calc.new(url: opts[:redis], prefix: opts[:prefix]),
                              url: opts[:redis], prefix: opts[:prefix],
                                                       heartbeat: opts[:heartbeat],
                                                       heartbeat_interval: opts[:interval],
                                                       heartbeat_ttl: opts[:ttl],
                                                       reply_prefixes: opts[:reply_prefixes],
                                                       batch_time_limit: opts[:batch_time],
                                                       start_timeout: opts[:start_timeout],
                                                       max_queue: opts[:max_queue] || 0, **reliable(opts))
    warn "calc_server.rb: serving #{opts[:prefix]}#{opts[:service]}"
    server.serve_forever
    warn 'calc_server.rb: stopped'
  rescue OptionParser::ParseError => e
    abort "calc_server.rb: #{e.message}"
  rescue RRPC::RedisError, RRPC::BrokerError, RRPC::Unsupported => e
    abort "calc_server.rb: #{e.message}"
  end
end

CalcServer.main(ARGV) if $PROGRAM_NAME == __FILE__
