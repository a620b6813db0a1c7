# frozen_string_literal: true

require 'logger'
require 'securerandom'
require 'socket'

# server.rb -- serving a Ruby object as an rrpc service: RRPC::Server.  It
# waits for Redis at start, pops requests, hands each message to the
# Dispatcher and carries out what it decides (Replies), keeps the registry
# record (Registry) and rides out Redis errors (Outage).
module RRPC
  # Serves the public methods of obj as the rrpc service `service`.
  # Single-threaded: run several processes to scale, they share the list.
  #
  # With heartbeat: true (the default) serve_forever registers the process
  # in the registry (PROTOCOL.md section 9) every heartbeat_interval seconds,
  # valid for heartbeat_ttl seconds, publishing max_queue for callers;
  # heartbeat: false serves without it (no record, no stats).  The built-in
  # methods rpc.ping and rpc.discover are answered either way.  Requests are
  # popped from {L}:high, L, {L}:low in that order (priorities, PROTOCOL.md
  # 7).  A service whose {L}:config holds limits (rate limits and
  # concurrency caps, enforced by the C server only) is not served:
  # serve_forever raises Unsupported.
  #
  # Replies go only where PROTOCOL.md section 6 allows (never onto rrpc's
  # keys, a registered service's list or a key that is not a reply list);
  # reply_prefixes: (an Array of Strings, nil = any) further limits reply
  # keys to those starting with one of them.  A handler's exception of any
  # class (NotImplementedError, SystemStackError, NoMemoryError,
  # ScriptError...) answers -32603, except SignalException and SystemExit;
  # Redis errors are logged once per outage and retried with backoff: the
  # worker stops only when told to (stop, SIGINT, SIGTERM).
  #
  # A JSON-RPC batch runs at most batch_time_limit seconds (default 5; 0 or
  # nil: no limit): its calls not started by then are answered -32001, its
  # notifications not run (PROTOCOL.md 5).  Messages over max_request_bytes
  # are dead letters, kept bounded (PROTOCOL.md 6).
  #
  # Redis not there at start (refusing connections, LOADING...) is waited
  # for, as the C server does: with backoff from 0.05 s doubling to 5 s,
  # logged once when the wait begins and once when Redis answers.
  # start_timeout: 0 or nil (the default) waits as long as it takes, > 0
  # at most that many seconds (then RedisError), < 0 not at all.  A
  # refused password or ACL raises RedisError at once.
  class Server
    attr_reader :service, :version, :worker_id

    START_BACKOFF_MIN_S = 0.05
    START_BACKOFF_MAX_S = 5.0

    # An amqp:// URL (PROTOCOL.md 12) gives a server of the AMQP transport
    # (whose registry answers queries: see AMQP::Server).
    def self.new(service, obj, url: nil, **opts)
      return super unless equal?(Server)

      url = Wire.url(url)
      AMQP.url?(url) ? AMQP::Server.new(service, obj, url: url, **opts) : super(service, obj, url: url, **opts)
    end

    def initialize(service, obj, url: nil, prefix: '', reply_ttl: 60, max_request_bytes: 1_048_576,
                   dead_letter_max: 1000, batch_max: 1000, batch_time_limit: 5.0,
                   logger: Logger.new($stderr, progname: 'rrpc'), heartbeat: true, heartbeat_interval: 1.0,
                   heartbeat_ttl: 5.0, max_queue: 0, reply_prefixes: nil, start_timeout: 0)
      @redis = Wire.connect(url)
      @service = service
      @queue = "#{prefix}#{service}"
      @lists = Priority.lists(@queue) # popped high, normal, low (PROTOCOL.md 7)
      @stats_key = "#{@queue}:stats"
      @log = logger
      @start_timeout = start_timeout.to_f
      @version = "ruby-#{VERSION}"
      @clock = RedisClock.new
      @stopping = false
      @outage = Outage.new(service, logger, -> { @stopping }, @redis)
      @registry = if heartbeat
                    Registry.new(service: service, url: url, prefix: prefix, interval: heartbeat_interval,
                                 ttl: heartbeat_ttl, max_queue: max_queue, logger: logger)
                  end
      # The worker id rpc.ping reports; without a registry it is still unique.
      @worker_id = @registry ? @registry.id : "#{Socket.gethostname}:#{Process.pid}:#{SecureRandom.hex(4)}"
      @replies = Replies.new(redis: @redis, service: service, prefix: prefix, reply_ttl: reply_ttl,
                             reply_prefixes: reply_prefixes, dead_letter_max: dead_letter_max,
                             keep: max_request_bytes, logger: logger, outage: @outage)
      @dispatcher = dispatcher_for(obj, sink: @replies, max_request_bytes: max_request_bytes, batch_max: batch_max,
                                        batch_time_limit: batch_time_limit)
    end

    # Asks serve_forever to return after the request in hand (or to give
    # up waiting for Redis at start).
    def stop
      @stopping = true
    end

    # Waits for Redis, then pops and answers requests until stop or
    # SIGINT/SIGTERM.  Once serving, no Redis error ends it: each is logged
    # (once per outage) and retried with backoff.
    def serve_forever
      # Before the wait for Redis, so that a supervisor can stop a waiting
      # server gracefully.
      previous = %w[INT TERM].to_h { |sig| [sig, trap(sig) { stop }] }
      return unless start

      registered = @registry
      backoff = 0.1
      until @stopping
        begin
          @clock.sync(@redis) if @clock.due?
          @replies.refresh_services
          send_expired
          # A short timeout, so a stop request is noticed within 1 s.
          popped = @redis.blpop(*@lists, timeout: 1)
          backoff = 0.1
          @outage.ended
        rescue StandardError => e # READONLY, NOPERM, WRONGTYPE, a broken link...
          RedisURL.demoted(@redis, e)
          @outage.failed(e, 'cannot pop requests')
          pause(backoff)
          backoff = [backoff * 2, 2.0].min
          next
        end
        handle(popped[1]) if popped
      end
    ensure
      previous&.each { |sig, handler| trap(sig, handler) }
      send_expired # best effort: Redis may be gone
      registered&.stop
    end

    # Handles one message popped from the list.  Never raises because of
    # what the message holds.
    def handle(raw)
      raw = raw.b
      outcome = @dispatcher.dispatch(raw)
      if outcome.dead
        @replies.dead(raw, outcome.dead)
      elsif outcome.body
        @replies.deliver(raw, outcome.key, outcome.body)
      end
    rescue *Dispatcher::STOPS
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- a bug here must not take the worker down
      @log.error("#{@service}: failed to handle a message: #{e.class}: #{e.message}\n#{Dispatcher.trace(e)}")
      begin
        @replies.dead(raw, "internal error: #{e.class}: #{e.message}")
      rescue StandardError => e2
        @log.error("#{@service}: could not record the dead letter either: #{e2.message}")
      end
    end

    private

    # Adds the requests refused for their deadline since the last time to
    # <service>:stats field expired (PROTOCOL.md 9), before the next pop.  A
    # count Redis does not take (gone, an ACL) is kept, silently, for the
    # next time: never in the way of the pop.
    def send_expired
      n = @dispatcher.expired_unsent
      return if n.zero?

      @redis.hincrby(@stats_key, 'expired', n)
      @dispatcher.expired_unsent -= n
    rescue Redis::BaseError
      nil
    end

    def dispatcher_for(obj, **limits)
      methods = public_methods_of(obj)
      raw = obj.class.respond_to?(:rrpc_raw_params) ? obj.class.rrpc_raw_params.dup : []
      @descriptions = obj.class.respond_to?(:rrpc_descriptions) ? obj.class.rrpc_descriptions.dup : {}
      # Ruby method names cannot hold a '.', so the built-in never shadows one.
      methods['rpc.ping'] = method(:rpc_ping)
      raw << 'rpc.ping'
      @descriptions['rpc.ping'] = { 'description' => "built-in: answers with the worker's identity and time" }
      methods['rpc.discover'] = method(:rpc_discover)
      raw << 'rpc.discover'
      @descriptions['rpc.discover'] = { 'description' => 'built-in: describes the service as an OpenRPC document' }
      @methods = methods
      @raw = raw
      @method_names = methods.keys
      Dispatcher.new(service: @service, methods: methods, raw: raw, clock: @clock, stats: @registry&.stats,
                     logger: @log, **limits)
    end

    # Connects, reads Redis's clock and registers, waiting for Redis as
    # start_timeout says.  True once serving may begin; false if stopped
    # while waiting.
    def start
      began = monotonic
      delay = START_BACKOFF_MIN_S
      waited = false
      loop do
        start_once
        @log.warn(format('%<s>s: Redis answered after %<t>.1f s, serving', s: @service, t: monotonic - began)) if waited
        return true
      rescue Redis::BaseError => e
        raise RedisError, "#{@service}: redis: #{e.message}" unless @start_timeout >= 0 && Outage.transient?(e)

        left = @start_timeout.positive? ? began + @start_timeout - monotonic : Float::INFINITY
        if left <= 0
          raise RedisError, "#{@service}: Redis did not answer within the start timeout " \
                                 "(#{@start_timeout} s): #{e.message}"
        end
        unless waited # once, not every try
          limit = @start_timeout.positive? ? " (up to #{@start_timeout} s)" : ''
          @log.warn("#{@service}: waiting for Redis#{limit}: #{e.message}")
          waited = true
        end
        # Jitter spreads a herd of servers started together.
        pause([delay * (0.5 + rand), left].min)
        return false if @stopping

        delay = [delay * 2, START_BACKOFF_MAX_S].min
      end
    end

    def start_once
      @redis.ping
      refuse_limits
      @clock.sync(@redis)
      # Refused (an ACL, say): fail loudly, like the C server.
      @registry&.start(version: @version, methods: method_entries)
    end

    # Raises Unsupported if the service's configuration holds rate limits
    # or concurrency caps: only the C server enforces them, and a worker
    # that ignored them would break them for every worker.
    def refuse_limits
      config = "{#{@queue}}:config"
      begin
        held = @redis.hexists(config, 'limits')
      rescue Redis::CommandError => e # refused (an ACL): cannot tell, serve
        return @log.warn("#{@service}: cannot read #{config} (#{e.message}): serving without checking for limits")
      end
      return unless held

      raise Unsupported, "#{@service}: #{config} field limits is set (rate limits or concurrency caps), " \
                         'which the Ruby server does not enforce: serve this service with the C server, ' \
                         'or remove the field'
    end

    # Exposes what the object adds, never what every Ruby object has
    # (send, instance_eval, ...), which would let callers run anything.
    def public_methods_of(obj)
      base = obj.is_a?(Module) ? Class.instance_methods : Object.instance_methods
      (obj.public_methods - base).map(&:to_s).reject { |name| name.start_with?('_') }.to_h { |name| [name, obj.method(name)] }
    end

    # The registry's view of the methods: name, description, params shape.
    def method_entries
      @method_names.map { |name| { 'name' => name }.merge(@descriptions.fetch(name, {})) }
    end

    def rpc_ping(_params)
      { 'service' => @service, 'worker' => @worker_id, 'host' => Socket.gethostname, 'pid' => Process.pid,
        'version' => @version, 'time' => Time.now.to_f }
    end

    OPENRPC_VERSION = '1.3.2'
    JSON_TYPES = %w[null boolean integer number string array object].freeze

    # The OpenRPC document of the service (PROTOCOL.md section 11).  The
    # Ruby peer carries no JSON Schemas: types come from the informal
    # params shapes of `describe` ({'a' => 'number'}), names from them or
    # from the handler's parameters (required: no default).
    def rpc_discover(_params)
      described = @methods.filter_map do |name, handler|
        next if name == 'rpc.discover' # implied, as the OpenRPC spec says

        about = @descriptions[name] || {}
        method = { 'name' => name, 'params' => discover_params(name, handler, about['params']),
                   'result' => { 'name' => 'result', 'schema' => {} } }
        method['description'] = about['description'] if about['description']
        method
      end
      { 'openrpc' => OPENRPC_VERSION, 'info' => { 'title' => @service, 'version' => @version },
        'methods' => described }
    end

    def discover_params(name, handler, shape)
      case shape
      when Hash then shape.map { |n, kind| descriptor(n.to_s, kind) }
      when Array then shape.grep(String).map { |n| descriptor(n) }
      else
        return [] if @raw.include?(name)

        handler.parameters.filter_map do |kind, n|
          descriptor(n.to_s, nil, required: %i[req keyreq].include?(kind)) if %i[req opt key keyreq].include?(kind)
        end
      end
    end

    def descriptor(name, kind = nil, required: false)
      typed = JSON_TYPES.include?(kind)
      d = { 'name' => name, 'schema' => typed ? { 'type' => kind } : {} }
      d['description'] = kind if kind.is_a?(String) && !typed
      d['required'] = true if required
      d
    end

    def pause(seconds)
      deadline = monotonic + seconds
      until @stopping
        left = deadline - monotonic
        break unless left.positive?

        sleep([0.05, left].min)
      end
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
