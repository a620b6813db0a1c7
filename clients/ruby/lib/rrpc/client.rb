# frozen_string_literal: true

require 'securerandom'

# client.rb -- calling rrpc services: RRPC::Client and its proxy.
module RRPC
  # Calls rrpc services.  Each call uses its own reply key.
  #
  # Like the C client, every call carries a deadline on Redis's clock
  # (PROTOCOL.md 7), and with fail_fast: true (the default) the client reads
  # the registry (PROTOCOL.md 9): a registered service with no live worker
  # fails at once with Unavailable, a wait on a registered service gives up
  # with Unavailable when its last worker goes, and a service at its
  # max_queue refuses the call with Overloaded.  Services that never
  # registered are simply waited on.
  class Client
    FRESH_S = 1.0 # how long a service's registry view is trusted
    SLICE_S = 1.0 # wait slice while a registered service is awaited
    CANCEL_LOOK_S = 0.05 # how often a call with a cancel token looks at it

    # Checks the queue length and pushes in one step, so that concurrent
    # callers cannot overshoot max_queue.  The new length, or -1 if full.
    PUSH_SCRIPT = "if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end " \
                  "return redis.call('RPUSH', KEYS[1], ARGV[1])"

    # A caller's view of one service in the registry.
    View = Struct.new(:registered, :live, :max_queue)
    NO_VIEW = View.new(false, 0, 0) # fail fast off, or the registry is out of reach

    attr_reader :redis

    # An amqp:// URL (PROTOCOL.md 12) gives a client of the AMQP
    # transport, which takes the same calls.
    def self.new(url: nil, **opts)
      return super unless equal?(Client)

      url = Wire.url(url)
      AMQP.url?(url) ? AMQP::Client.new(url: url, **opts) : super(url: url, **opts)
    end

    def initialize(url: nil, prefix: '', timeout: 30, fail_fast: true)
      @redis = Wire.connect(url)
      @prefix = prefix
      @timeout = timeout
      @fail_fast = fail_fast
      @clock = RedisClock.new
      @views = {} # list key -> [monotonic time read, View]
    end

    # Calls service.method with positional args or named kwargs and returns
    # the result.  Raises RemoteError, Timeout, Unavailable, Overloaded,
    # ProtocolError, RedisError (all RRPC::Error).  timeout: (seconds;
    # 0 waits forever), traceparent: and tracestate: (W3C Trace Context,
    # PROTOCOL.md 7; ArgumentError if invalid) are this method's own, never
    # named params.  Without a traceparent a call made inside a handler
    # continues the handled request's trace (and gets no more time than its
    # deadline leaves); any other starts a new trace.
    #
    # progress: a callable that asks for the handler's progress
    # (PROTOCOL.md 7): it gets each value, in order, before the call
    # returns.  priority: 'high', 'normal' (the default) or 'low'
    # (ArgumentError otherwise): under a backlog, higher ones are served
    # first.  tenant: a non-empty String sent as the request's "tenant"
    # member (for the C server's per-tenant limits).  cancel: an
    # RRPC::CancelToken (anything that answers cancelled?): once cancelled,
    # the call takes its request back if still queued, tells a worker
    # running it to stop (its cancel_key) and raises Cancelled.  A call made
    # inside a handler is cancelled with the handled request.
    def call(service, method, *args, timeout: nil, traceparent: nil, tracestate: nil, progress: nil,
             priority: nil, tenant: nil, cancel: nil, **kwargs)
      wait = timeout || @timeout
      # id, reply key and reply_to are one key, so seed-style workers that
      # only know "reply to the id" reach us as well.
      key = "#{@prefix}rrpc:reply:#{SecureRandom.hex(16)}"
      members = { id: key, reply_to: key }
      add_members(members, traceparent, tracestate, priority, tenant)
      members[:progress] = true if progress
      cancel_key = cancel ? "#{key}:cancel" : Stream.inherited_cancel_key
      members[:cancel_key] = cancel_key if cancel_key
      reaching_redis do
        wait = inherited(wait)
        add_times(members, wait)
        text = Wire.generate(Wire.request(method, args, kwargs, **members))
        send_and_wait(service, method, text, key, wait, Waiting.new(members, progress, cancel))
      end
    end

    # Sends a notification: run by a worker, never answered.  It carries a
    # trace context, a priority and a tenant as calls do.
    def notify(service, method, *args, traceparent: nil, tracestate: nil, priority: nil, tenant: nil, **kwargs)
      members = {}
      add_members(members, traceparent, tracestate, priority, tenant)
      text = Wire.generate(Wire.request(method, args, kwargs, **members))
      reaching_redis { push("#{@prefix}#{service}", text, 0, members[:priority]) }
      nil
    end

    # An object whose method calls are calls: proxy('calc').add(1, 2).
    def proxy(service)
      Proxy.new(self, service)
    end
    alias service proxy

    def close
      @redis.close
    end

    private

    # What a call waits with: its members, progress callable, cancel token.
    Waiting = Struct.new(:members, :progress, :cancel)

    # A request's own members; ArgumentError for a bad one, before anything
    # is sent.
    def add_members(members, traceparent, tracestate, priority, tenant)
      priority = Priority.checked(priority)
      tenant = Priority.checked_tenant(tenant)
      parent, state = Trace.outgoing(traceparent, tracestate)
      members[:traceparent] = parent
      members[:tracestate] = state if state
      members[:priority] = priority if %w[high low].include?(priority) # absent means normal
      members[:tenant] = tenant if tenant
    end

    # WAIT cut to what the handled request's deadline leaves (as the C
    # client does), at least 1 ms so that it never means "forever".
    def inherited(wait)
      deadline = Trace.current&.fetch(:deadline)
      return wait unless deadline

      @clock.sync(@redis) if @clock.due?
      now = @clock.now_ms
      return wait unless now

      left = [(deadline - now) / 1000.0, 0.001].max
      wait.positive? && wait < left ? wait : left
    end

    def send_and_wait(service, method, text, key, wait, waiting)
      queue = "#{@prefix}#{service}"
      view = view_of(queue, FRESH_S)
      if view.registered && view.live.zero?
        raise Unavailable, "#{service}: registered, but none of its workers is live " \
                           '(stopped, or their heartbeat expired)'
      end
      level = waiting.members[:priority]
      push(queue, text, view.live.positive? ? view.max_queue : 0, level)
      started = monotonic
      reply = wait_for(queue, key, wait, view.registered, waiting)
      return result_of(reply, key) if reply.is_a?(String)

      if reply == :cancelled # first the key, so that a worker that has the request stops
        left = wait.positive? ? [wait - (monotonic - started), 0].max : 0
        @redis.set(waiting.members[:cancel_key], 1, px: (left * 1000).to_i + 60_000)
      end
      # Withdraw the request so no worker runs a call nobody awaits.
      withdraw(queue, text, level)
      raise Cancelled, "#{service}.#{method}: cancelled" if reply == :cancelled
      raise Unavailable, "#{service}.#{method}: the last worker went while we waited" if reply == :gone

      raise Timeout, "#{service}.#{method}: no reply within #{wait} s"
    end

    # Redis out of reach or refusing is an RRPC::Error too (the redis gem's
    # error is its cause).
    def reaching_redis
      yield
    rescue Redis::BaseError => e
      RedisURL.demoted(@redis, e) # behind Sentinel: the next call asks for the new master
      raise RedisError, "redis: #{e.message}"
    end

    # The call's sent and deadline members, in ms on Redis's clock
    # (PROTOCOL.md 7): none without a measured clock (TIME refused, say), no
    # deadline without a limit.
    def add_times(members, wait)
      @clock.sync(@redis) if @clock.due?
      now = @clock.now_ms
      return unless now

      members[:sent] = now
      members[:deadline] = now + (wait * 1000).ceil if wait.positive? && wait <= 1e8
    end

    # What the registry says of the service whose list is QUEUE, read again
    # when older than max_age seconds: one round trip per service per
    # second, not one per call.
    def view_of(queue, max_age)
      return NO_VIEW unless @fail_fast

      read_at, view = @views[queue]
      return view if read_at && monotonic - read_at <= max_age

      @views[queue] = [monotonic, read_view(queue)]
      @views[queue][1]
    end

    def read_view(queue)
      config = "{#{queue}}:config"
      time, workers, max_queue, registered = @redis.pipelined do |p|
        p.time
        p.zrange("{#{queue}}:workers", 0, -1, with_scores: true)
        p.hget(config, 'max_queue')
        p.exists(config)
      end
      now_ms = time[0] * 1000 + time[1] / 1000
      View.new(registered.positive?, workers.count { |_id, score| score > now_ms }, max_queue.to_i)
    rescue Redis::CommandError
      NO_VIEW # keys refused (an ACL): no registry for us, wait as usual
    end

    def push(queue, text, max_queue, level = nil)
      # max_queue is not checked for high and low: the script pushes as the protocol says.
      return Priority.push(@redis, queue, text, level) if %w[high low].include?(level)
      return @redis.rpush(queue, text) unless max_queue.positive?
      return unless @redis.eval(PUSH_SCRIPT, keys: [queue], argv: [text, max_queue]).negative?

      raise Overloaded, "#{queue}: its queue holds #{max_queue} requests (max_queue)"
    end

    # Takes the request back from its list if no worker has it yet (any of
    # the three for a priority: the script chose one).
    def withdraw(queue, text, level)
      return @redis.lrem(queue, 1, text) unless %w[high low].include?(level)

      @redis.pipelined { |p| Priority.lists(queue).each { |list| p.lrem(list, 1, text) } }
    end

    # BLPOPs the reply: in one piece, or for a registered service in slices,
    # checking between them that a worker is still live (with a cancel
    # token, in short slices, looking at it between them).  Progress before
    # the answer goes to waiting.progress.  Returns the reply text, nil on
    # timeout, :gone or :cancelled.
    def wait_for(queue, key, wait, sliced, waiting)
      finish = wait.positive? ? monotonic + wait : nil
      cancel = waiting.cancel
      loop do
        return :cancelled if cancel&.cancelled?

        left = finish && finish - monotonic
        return nil if left && left <= 0

        step = left || 0 # 0: forever
        step = step.positive? ? [step, SLICE_S].min : SLICE_S if sliced
        step = step.positive? ? [step, CANCEL_LOOK_S].min : CANCEL_LOOK_S if cancel
        # Redis reads a timeout under 1 ms as 0, "forever".
        _list, reply = @redis.blpop(key, timeout: step.positive? ? [step, 0.001].max : 0)
        next if reply && waiting.progress && progress?(reply, key, waiting.progress)
        return reply if reply || !(sliced || cancel)
        next unless sliced

        view = view_of(queue, FRESH_S / 2)
        return :gone if view.registered && view.live.zero?
      end
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # True if REPLY is a progress message of the call KEY (PROTOCOL.md 7),
    # handed to CALLBACK; false for anything else (the answer).
    def progress?(reply, key, callback)
      msg = begin
        Wire.parse(reply.dup.force_encoding(Encoding::UTF_8))
      rescue JSON::ParserError
        return false
      end
      params = msg.is_a?(Hash) ? msg['params'] : nil
      return false unless msg['method'] == 'rpc.progress' && !msg.key?('id') && params.is_a?(Hash) &&
                          params['id'] == key && params.key?('progress')

      callback.call(params['progress'])
      true
    end

    def result_of(reply, key)
      begin
        resp = Wire.parse(reply.dup.force_encoding(Encoding::UTF_8))
      rescue JSON::ParserError => e
        raise ProtocolError, "reply is not JSON: #{e.message}"
      end
      raise ProtocolError, "not a response to this call: #{reply[0, 200]}" unless resp.is_a?(Hash) && resp['id'] == key

      if (err = resp['error']).is_a?(Hash)
        raise RemoteError.new(err['code'], err['message'], err['data'])
      end
      raise ProtocolError, "response has neither result nor error: #{reply[0, 200]}" unless resp.key?('result')

      resp['result']
    end
  end

  # A BasicObject, so that nearly every name (even sleep or display) reaches
  # method_missing and becomes a call.
  class Proxy < BasicObject
    def initialize(client, service)
      @client = client
      @service = service
    end

    def method_missing(name, *args, **kwargs)
      @client.call(@service, name.to_s, *args, **kwargs)
    end

    def respond_to_missing?(_name, _include_private = false)
      true
    end

    # irb and error messages inspect objects; that must not become a call.
    def inspect
      "#<RRPC::Proxy #{@service}>"
    end
  end
end
