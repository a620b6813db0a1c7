# frozen_string_literal: true

# rrpc.rb -- the Ruby peer of rrpc: JSON-RPC 2.0 over Redis lists.
#
# rrpc's core is C, but the protocol (docs/PROTOCOL.md) is meant to be spoken
# by any language with a Redis client.  This is that peer for Ruby, built only
# on the redis gem, so Ruby programs can call rrpc services and serve them,
# interchangeably with the C, Python and seed-style peers:
#
#   calc = RRPC::Client.new.service('calc')
#   calc.add(1, 2)                      # => 3
#
#   class Calc
#     def add(a, b) = a + b
#   end
#   RRPC::Server.new('calc', Calc.new).serve_forever
#
# Servers register themselves in the registry of PROTOCOL.md section 9 (a
# heartbeat from a background thread, per-method stats, the built-in
# rpc.ping), so `rrpc ls/info/ping/stats/top` show them next to C workers and
# C callers fail fast once the last of them stops; they refuse requests whose
# deadline (section 7) has passed, and write replies only onto reply lists
# (section 6: never onto rrpc's keys, a service's request list or an
# application's key).  They survive whatever a handler raises and whatever
# Redis answers, and stop only when told to.  Clients, like the C client, put
# a deadline on every call and read the registry to fail fast when a
# registered service has no live worker, and to respect its max_queue.
#
# Public API: RRPC::Client, RRPC::Server, RRPC::RpcError, RRPC::InvalidParams,
# RRPC::RemoteError, RRPC::Timeout, RRPC::Unavailable, RRPC::Overloaded,
# RRPC::ProtocolError, RRPC::Handler, RRPC::VERSION.

require 'digest'
require 'json'
require 'logger'
require 'redis'
require 'securerandom'
require 'set'
require 'socket'

module RRPC
  VERSION = '0.2.0'
  DEFAULT_URL = 'redis://127.0.0.1:6379'

  PARSE_ERROR = -32_700
  INVALID_REQUEST = -32_600
  METHOD_NOT_FOUND = -32_601
  INVALID_PARAMS = -32_602
  INTERNAL_ERROR = -32_603
  DEADLINE_EXCEEDED = -32_000

  # Raised by a handler to answer with a JSON-RPC error of its choosing.
  class RpcError < StandardError
    attr_reader :code, :data

    def initialize(code, message, data = nil)
      super(message)
      @code = code
      @data = data
    end

    def to_error
      err = { 'code' => code, 'message' => message }
      err['data'] = data unless data.nil?
      err
    end
  end

  # Raised by a handler whose params are present but unusable (-32602).
  class InvalidParams < RpcError
    def initialize(message, data = nil)
      super(INVALID_PARAMS, message, data)
    end
  end

  # Base of the errors a client call raises.
  class Error < StandardError; end

  # The peer answered a call with a JSON-RPC error object.
  class RemoteError < Error
    attr_reader :code, :data

    def initialize(code, message, data = nil)
      super(message)
      @code = code
      @data = data
    end
  end

  # No reply arrived in time (the request was withdrawn if still queued).
  class Timeout < Error; end

  # The peer's reply is not a JSON-RPC 2.0 response.
  class ProtocolError < Error; end

  # The service is registered but none of its workers is live (PROTOCOL.md
  # 9): the call failed without being queued, or was withdrawn when the last
  # worker went while it waited.
  class Unavailable < Error; end

  # The service's queue is at its max_queue (PROTOCOL.md 9): nothing was
  # queued.
  class Overloaded < Error; end

  # Extend a handler class with this to mark methods that take the request's
  # params whole (an Array, a Hash, or nil when absent) instead of bound to
  # their parameters -- for methods like echo that care which form was sent:
  #
  #   class Calc
  #     extend RRPC::Handler
  #     raw_params :echo
  #     def echo(params) = params
  #   end
  #
  # It also gives methods a description (and optionally an informal params
  # shape, any JSON) for the registry, where `rrpc info` shows them:
  #
  #     describe :add, 'add(a, b): a + b', params: { a: 'number', b: 'number' }
  module Handler
    def raw_params(*names)
      rrpc_raw_params.concat(names.map(&:to_s))
    end

    def rrpc_raw_params
      @rrpc_raw_params ||= []
    end

    def describe(name, description, params: nil)
      rrpc_descriptions[name.to_s] = { 'description' => description, 'params' => params }.compact
    end

    def rrpc_descriptions
      @rrpc_descriptions ||= {}
    end
  end

  # JSON and key helpers shared by both ends; internal.
  module Wire
    module_function

    def connect(url)
      Redis.new(url: url || ENV['REDIS_URL'] || DEFAULT_URL)
    end

    # Strict JSON, agreeing with the C and Python peers: Ruby's parser also
    # accepts comments, unknown escapes ("\x"), unpaired surrogates and turns
    # 1e400 into Infinity; refuse all of them.
    def parse(text)
      value = JSON.parse(text, max_nesting: 1000)
      if text.include?('/') || text.include?('\\')
        # Strings are matched first, so a '/' left over begins a comment.
        text.scan(%r{"(?:[^"\\]++|\\.)*+"|/}m) do |token|
          raise JSON::ParserError, 'comments are not JSON' if token == '/'
          raise JSON::ParserError, 'invalid escape in a string' if token.include?('\\') && bad_escapes?(token[1..-2])
        end
      end
      raise JSON::ParserError, 'number out of range' if text.match?(/\d[eE][+-]?\d{3}|\d{300}/) && infinite?(value)

      value
    end

    # Escapes JSON allows, with \uD800-\uDBFF always followed by \uDC00-\uDFFF.
    def bad_escapes?(body)
      high = false
      body.scan(/\\u(\h{4})|\\(.)|[^\\]+/m) do |hex, char|
        code = hex&.hex
        if high
          return true unless code && (0xDC00..0xDFFF).cover?(code)

          high = false
        elsif code
          return true if (0xDC00..0xDFFF).cover?(code)

          high = (0xD800..0xDBFF).cover?(code)
        elsif char
          return true unless '"\\/bfnrt'.include?(char)
        end
      end
      high
    end

    def infinite?(value)
      stack = [value]
      until stack.empty?
        item = stack.pop
        case item
        when Float then return true unless item.finite?
        when Array then stack.concat(item)
        when Hash then stack.concat(item.values)
        end
      end
      false
    end

    def generate(value)
      JSON.generate(value, max_nesting: false)
    end

    def number?(value)
      value.is_a?(Integer) || value.is_a?(Float)
    end

    def valid_id?(value)
      value.nil? || value.is_a?(String) || value.is_a?(Integer) || (value.is_a?(Float) && value.finite?)
    end

    # The largest integer every peer reads exactly (a double's 53-bit mantissa).
    MAX_EXACT_ID = 2**53

    # The reply key of PROTOCOL.md section 3, or nil if none can be read: a
    # non-empty reply_to, else a non-empty string id, else an id with an
    # integral value of at most 2^53 as decimal text (100.0 and 1e2 -> "100").
    def reply_key(req)
      return nil unless req.is_a?(Hash)

      reply_to = req['reply_to']
      return reply_to if reply_to.is_a?(String) && !reply_to.empty?

      id = req['id']
      return id.empty? ? nil : id if id.is_a?(String)
      return nil unless number?(id) && (id.is_a?(Integer) || (id.finite? && id == id.truncate))

      id.abs <= MAX_EXACT_ID ? id.to_i.to_s : nil
    end

    def request(method, args, kwargs, **members)
      raise ArgumentError, 'rrpc: pass positional or named params, not both' if !args.empty? && !kwargs.empty?

      req = { 'jsonrpc' => '2.0', 'method' => method.to_s }
      if !args.empty?
        req['params'] = args
      elsif !kwargs.empty?
        req['params'] = kwargs
      end
      req.merge!(members.transform_keys(&:to_s))
    end

    def error(id, code, message, data = nil)
      err = { 'code' => code, 'message' => message }
      err['data'] = data unless data.nil?
      { 'jsonrpc' => '2.0', 'error' => err, 'id' => id }
    end
  end
  private_constant :Wire

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

    # Checks the queue length and pushes in one step, so that concurrent
    # callers cannot overshoot max_queue.  The new length, or -1 if full.
    PUSH_SCRIPT = "if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end " \
                  "return redis.call('RPUSH', KEYS[1], ARGV[1])"

    # A caller's view of one service in the registry.
    View = Struct.new(:registered, :live, :max_queue)
    NO_VIEW = View.new(false, 0, 0) # fail fast off, or the registry is out of reach

    attr_reader :redis

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
    # ProtocolError.  timeout: (seconds; 0 waits forever) is this method's
    # own, never a named param.
    def call(service, method, *args, timeout: nil, **kwargs)
      wait = timeout || @timeout
      # id, reply key and reply_to are one key, so seed-style workers that
      # only know "reply to the id" reach us as well.
      key = "#{@prefix}rrpc:reply:#{SecureRandom.hex(16)}"
      members = { id: key, reply_to: key }
      deadline = deadline_for(wait)
      members[:deadline] = deadline if deadline
      text = Wire.generate(Wire.request(method, args, kwargs, **members))
      queue = "#{@prefix}#{service}"
      view = view_of(queue, FRESH_S)
      if view.registered && view.live.zero?
        raise Unavailable, "#{service}: registered, but none of its workers is live " \
                           '(stopped, or their heartbeat expired)'
      end
      push(queue, text, view.live.positive? ? view.max_queue : 0)
      reply = wait_for(queue, key, wait, view.registered)
      return result_of(reply, key) if reply.is_a?(String)

      # Withdraw the request so no worker runs a call nobody awaits.
      @redis.lrem(queue, 1, text)
      raise Unavailable, "#{service}.#{method}: the last worker went while we waited" if reply == :gone

      raise Timeout, "#{service}.#{method}: no reply within #{wait} s"
    end

    # Sends a notification: run by a worker, never answered.
    def notify(service, method, *args, **kwargs)
      @redis.rpush("#{@prefix}#{service}", Wire.generate(Wire.request(method, args, kwargs)))
      nil
    end

    # An object whose method calls are calls: service('calc').add(1, 2).
    def service(name)
      Proxy.new(self, name)
    end

    private

    # The call's deadline in ms on Redis's clock, or nil without a limit or
    # a measured clock (TIME refused, say).
    def deadline_for(wait)
      @clock.sync(@redis) if @clock.due?
      now = @clock.now_ms
      now && wait.positive? && wait <= 1e8 ? now + (wait * 1000).ceil : nil
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

    def push(queue, text, max_queue)
      return @redis.rpush(queue, text) unless max_queue.positive?
      return unless @redis.eval(PUSH_SCRIPT, keys: [queue], argv: [text, max_queue]).negative?

      raise Overloaded, "#{queue}: its queue holds #{max_queue} requests (max_queue)"
    end

    # BLPOPs the reply: in one piece, or for a registered service in slices,
    # checking between them that a worker is still live.  Returns the reply
    # text, nil on timeout, or :gone.
    def wait_for(queue, key, wait, sliced)
      finish = wait.positive? ? monotonic + wait : nil
      loop do
        left = finish && finish - monotonic
        return nil if left && left <= 0

        step = left || 0 # 0: forever
        step = step.positive? ? [step, SLICE_S].min : SLICE_S if sliced
        # Redis reads a timeout under 1 ms as 0, "forever".
        _list, reply = @redis.blpop(key, timeout: step.positive? ? [step, 0.001].max : 0)
        return reply if reply || !sliced

        view = view_of(queue, FRESH_S / 2)
        return :gone if view.registered && view.live.zero?
      end
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
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

  # Redis's clock as seen from here: request deadlines are milliseconds on
  # it, so that peers whose own clocks disagree still agree on them.
  # Measured with TIME at start and every 10 s; until a reading succeeds
  # (TIME refused, say) deadlines are not judged at all.  Internal.
  class RedisClock
    REFRESH_S = 10.0

    def initialize
      @offset_ms = nil
      @tried_at = nil
    end

    # Reads TIME on redis; keeps the old offset if that fails (and does not
    # try again before the next refresh: a refused TIME must not cost a
    # round trip per request).
    def sync(redis)
      @tried_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      sent = wall_ms
      sec, usec = redis.time
      now = wall_ms
      # Redis read its clock about half a round trip before we got it.
      @offset_ms = (sec * 1000.0 + usec / 1000.0) - (now - (now - sent) / 2)
      true
    rescue Redis::BaseConnectionError
      @tried_at = nil # Redis is away: measure as soon as it is back
      false
    rescue Redis::BaseError
      false
    end

    def due?
      @tried_at.nil? || Process.clock_gettime(Process::CLOCK_MONOTONIC) - @tried_at >= REFRESH_S
    end

    # Redis's time now in ms, or nil if never measured.
    def now_ms
      @offset_ms && (wall_ms + @offset_ms).to_i
    end

    private

    def wall_ms
      Process.clock_gettime(Process::CLOCK_REALTIME, :float_millisecond)
    end
  end

  # Per-method counters, added to {L}:mstats with each heartbeat.  The
  # serving thread records, the heartbeat thread takes what changed; a
  # mutex keeps them apart (held for a hash update, never across I/O).
  # Internal.
  class Stats
    HIST_LAST = 128

    # The histogram bucket of a run time (PROTOCOL.md 9): four per power of
    # two of microseconds, bucket 0 below 1 us, the last (128) open-ended.
    def self.bucket(seconds)
      us = seconds * 1e6
      return 0 unless us >= 1.0

      m, e = Math.frexp(us) # us = m * 2^e, m in [0.5, 1)
      sub = [((2.0 * m - 1.0) * 4.0).to_i, 3].min
      [1 + 4 * (e - 1) + sub, HIST_LAST].min
    end

    def initialize
      @mu = Mutex.new
      @pending = Hash.new(0) # field -> count not yet sent
    end

    def record(method, seconds, error)
      fields = ["calls:#{method}", "h#{Stats.bucket(seconds)}:#{method}"]
      fields << "errors:#{method}" if error
      @mu.synchronize { fields.each { |f| @pending[f] += 1 } }
    end

    # Sends the deltas; on failure they are kept for the next flush (at
    # worst counted twice after a lost reply, never lost silently).
    def flush(redis, key)
      taken = @mu.synchronize { @pending.tap { @pending = Hash.new(0) } }
      return if taken.empty?

      begin
        redis.pipelined { |pipe| taken.each { |field, count| pipe.hincrby(key, field, count) } }
      rescue StandardError
        @mu.synchronize { taken.each { |f, c| @pending[f] += c } }
        raise
      end
    end
  end

  # One record for this server process in the registry of PROTOCOL.md
  # section 9, renewed every interval by a thread with its own connection,
  # which also publishes the service's config, clears workers whose
  # heartbeat ran out and sends the per-method stats.  stop removes the
  # record at once, so callers fail fast instead of waiting for it to
  # expire.  Internal.
  class Registry
    REGISTERED_FOR_MS = 3_600_000 # {L}:config outlives the last heartbeat by an hour

    attr_reader :id, :stats

    def initialize(service:, url:, prefix:, interval:, ttl:, max_queue:, logger:)
      @service = service
      @redis = Wire.connect(url) # its own: a BLPOP on the worker's must not delay a beat
      list_key = "#{prefix}#{service}"
      @services_key = "#{prefix}rrpc:services"
      @workers_key = "{#{list_key}}:workers"
      @info_key = "{#{list_key}}:info"
      @config_key = "{#{list_key}}:config"
      @mstats_key = "{#{list_key}}:mstats"
      @host = Socket.gethostname
      # host and pid for people, random digits so that a reused pid is new.
      @id = "#{@host}:#{Process.pid}:#{SecureRandom.hex(4)}"
      @interval = interval.positive? ? interval.to_f : 1.0
      ttl = ttl.positive? ? ttl.to_f : 5.0
      @ttl = [ttl, 2 * @interval].max # one late beat must not look like a death
      @max_queue = [max_queue.to_i, 0].max
      @log = logger
      @stats = Stats.new
      @mu = Mutex.new
      @cv = ConditionVariable.new
      @stop = false
      @failing = false
    end

    # Registers (the first beat runs here, so that a Redis that refuses it
    # fails the start loudly) and starts the heartbeat thread.
    def start(version:, methods:)
      @record = Wire.generate({ 'id' => @id, 'service' => @service, 'host' => @host, 'pid' => Process.pid,
                                'version' => version, 'threads' => 1, 'started' => Time.now.to_f,
                                'heartbeat_s' => @interval, 'ttl_s' => @ttl, 'max_queue' => @max_queue,
                                'shards' => 1, 'methods' => methods })
      @stop = false
      beat
      @thread = Thread.new { heartbeat_loop }
    end

    def beat
      sec, usec = @redis.time
      now_ms = sec * 1000 + usec / 1000
      ttl_ms = (@ttl * 1000).to_i
      @redis.pipelined do |pipe|
        pipe.zadd(@workers_key, now_ms + ttl_ms, @id)
        pipe.hset(@info_key, @id, @record)
        pipe.hset(@config_key, 'max_queue', @max_queue, 'ttl_ms', ttl_ms, 'shards', 1)
        pipe.sadd(@services_key, [@service])
        pipe.pexpire(@config_key, REGISTERED_FOR_MS)
      end
      # Clear workers whose heartbeat ran out: a killed process cannot.
      before = "(#{now_ms}"
      dead = @redis.zrangebyscore(@workers_key, '-inf', before)
      unless dead.empty?
        # By score, not by id: a worker that beat meanwhile stays.
        @redis.pipelined do |pipe|
          pipe.hdel(@info_key, dead)
          pipe.zremrangebyscore(@workers_key, '-inf', before)
        end
      end
      @stats.flush(@redis, @mstats_key)
    end

    # Sends the last stats, then removes the record: the service stays
    # registered, and callers fail fast if no other worker is live.
    def stop
      @mu.synchronize do
        @stop = true
        @cv.signal
      end
      @thread&.join
      @stats.flush(@redis, @mstats_key)
      @redis.pipelined do |pipe|
        pipe.zrem(@workers_key, @id)
        pipe.hdel(@info_key, @id)
      end
    rescue StandardError => e
      @log.warn("#{@service}: cannot remove the record: #{e.message}")
    ensure
      @redis.close
    end

    private

    def heartbeat_loop
      loop do
        @mu.synchronize { @cv.wait(@mu, @interval) unless @stop }
        break if @mu.synchronize { @stop }

        begin
          beat
          @log.warn("#{@service}: heartbeat restored") if @failing
          @failing = false
        rescue StandardError => e # log once per outage; the gem reconnects
          @log.warn("#{@service}: heartbeat failed: #{e.message}") unless @failing
          @failing = true
        end
      end
    end
  end
  private_constant :RedisClock, :Stats, :Registry

  # Serves the public methods of obj as the rrpc service `service`.
  # Single-threaded: run several processes to scale, they share the list.
  #
  # With heartbeat: true (the default) serve_forever registers the process
  # in the registry (PROTOCOL.md section 9) every heartbeat_interval seconds,
  # valid for heartbeat_ttl seconds, publishing max_queue for callers;
  # heartbeat: false serves without it (no record, no stats).  The built-in
  # method rpc.ping is answered either way.
  #
  # Replies go only where PROTOCOL.md section 6 allows (never onto rrpc's
  # keys, a registered service's list or a key that is not a reply list);
  # reply_prefixes: (an Array of Strings, nil = any) further limits reply
  # keys to those starting with one of them.  A handler's exception of any
  # class (NotImplementedError, SystemStackError, NoMemoryError,
  # ScriptError...) answers -32603, except SignalException and SystemExit;
  # Redis errors are logged once per outage and retried with backoff: the
  # worker stops only when told to (stop, SIGINT, SIGTERM).
  class Server
    attr_reader :service, :version, :worker_id

    SERVICES_EVERY_S = 5.0 # how often the set of registered services is read
    STOP_GRACE_S = 5.0 # how long a write is still retried once told to stop

    # The REPLY SCRIPT of PROTOCOL.md section 3, byte for byte: it pushes
    # only onto a key that does not exist or onto a list with an expiry, so a
    # reply can never put a TTL on (or append to) an application's key, a
    # persistent list or another service's backlog.
    REPLY_SCRIPT = <<~LUA
      -- rrpc reply v1: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for KEYS[i].
      -- Pushes only onto a reply list: a key that does not exist, or a list that has an expiry.
      local out = {}
      for i, k in ipairs(KEYS) do
        local t = redis.call('TYPE', k).ok
        if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then
          redis.call('RPUSH', k, ARGV[i + 1])
          redis.call('EXPIRE', k, ARGV[1])
          out[i] = 1
        elseif t == 'list' then
          out[i] = 'list without expiry'
        else
          out[i] = t
        end
      end
      return out
    LUA
    REPLY_SHA = Digest::SHA1.hexdigest(REPLY_SCRIPT)

    # Error replies that say "not now" rather than "never": the command may
    # succeed once a failover, a load, a script or a memory shortage is over.
    TRANSIENT_CODES = %w[LOADING BUSY READONLY MASTERDOWN TRYAGAIN CLUSTERDOWN OOM UNBLOCKED
                         NOREPLICAS MISCONF].freeze

    # What a handler may raise that still ends the worker: the process is
    # being told to stop.
    STOPS = [SignalException, SystemExit].freeze

    # A write abandoned because the worker was told to stop while Redis
    # kept failing.
    class GaveUp < StandardError; end

    def initialize(service, obj, url: nil, prefix: '', reply_ttl: 60, max_request_bytes: 1_048_576,
                   dead_letter_max: 1000, batch_max: 1000, logger: Logger.new($stderr, progname: 'rrpc'),
                   heartbeat: true, heartbeat_interval: 1.0, heartbeat_ttl: 5.0, max_queue: 0,
                   reply_prefixes: nil)
      @redis = Wire.connect(url)
      @service = service
      @prefix = prefix
      @queue = "#{prefix}#{service}"
      @reply_prefixes = reply_prefixes&.map { |p| p.to_s.b }
      @services = nil # registered names (binary Strings), nil while unknown
      @services_read_at = nil
      @services_unread = false
      @outage_since = nil
      @outage_kind = nil
      @dead_key = "#{@queue}:dead"
      @stats_key = "#{@queue}:stats"
      @reply_ttl = reply_ttl
      @max_request_bytes = max_request_bytes
      @dead_letter_max = dead_letter_max
      @batch_max = batch_max
      @log = logger
      @obj = obj
      @methods = public_methods_of(obj)
      @raw = obj.class.respond_to?(:rrpc_raw_params) ? obj.class.rrpc_raw_params.dup : []
      @descriptions = obj.class.respond_to?(:rrpc_descriptions) ? obj.class.rrpc_descriptions.dup : {}
      # Ruby method names cannot hold a '.', so the built-in never shadows one.
      @methods['rpc.ping'] = method(:rpc_ping)
      @raw << 'rpc.ping'
      @descriptions['rpc.ping'] = { 'description' => "built-in: answers with the worker's identity and time" }
      @version = "ruby-#{VERSION}"
      @clock = RedisClock.new
      @registry = if heartbeat
                    Registry.new(service: service, url: url, prefix: prefix, interval: heartbeat_interval,
                                 ttl: heartbeat_ttl, max_queue: max_queue, logger: @log)
                  end
      # The worker id rpc.ping reports; without a registry it is still unique.
      @worker_id = @registry ? @registry.id : "#{Socket.gethostname}:#{Process.pid}:#{SecureRandom.hex(4)}"
      @stopping = false
    end

    # Asks serve_forever to return after the request in hand.
    def stop
      @stopping = true
    end

    # Pops and answers requests until stop or SIGINT/SIGTERM.  Once started,
    # no Redis error ends it: each is logged (once per outage) and retried
    # with backoff.
    def serve_forever
      @redis.ping # an unreachable Redis at start is a setup error: fail loudly
      @clock.sync(@redis)
      # Refused (an ACL, say): fail loudly, like the C server.
      @registry&.start(version: @version, methods: method_entries)
      registered = @registry
      previous = %w[INT TERM].to_h { |sig| [sig, trap(sig) { stop }] }
      backoff = 0.1
      until @stopping
        begin
          @clock.sync(@redis) if @clock.due?
          refresh_services
          # A short timeout, so a stop request is noticed within 1 s.
          popped = @redis.blpop(@queue, timeout: 1)
          backoff = 0.1
          outage_ended
        rescue StandardError => e # READONLY, NOPERM, WRONGTYPE, a broken link...
          outage_failed(e, 'cannot pop requests')
          pause(backoff)
          backoff = [backoff * 2, 2.0].min
          next
        end
        handle(popped[1]) if popped
      end
    ensure
      previous&.each { |sig, handler| trap(sig, handler) }
      registered&.stop
    end

    # Handles one message popped from the list.  Never raises because of
    # what the message holds.
    def handle(raw)
      handle_message(raw.b)
    rescue *STOPS
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- a bug here must not take the worker down
      @log.error("#{@service}: failed to handle a message: #{e.class}: #{e.message}\n#{trace(e)}")
      begin
        dead(scrub(raw), "internal error: #{e.class}: #{e.message}")
      rescue StandardError => e2
        @log.error("#{@service}: could not record the dead letter either: #{e2.message}")
      end
    end

    private

    # Exposes what the object adds, never what every Ruby object has
    # (send, instance_eval, ...), which would let callers run anything.
    def public_methods_of(obj)
      base = obj.is_a?(Module) ? Class.instance_methods : Object.instance_methods
      (obj.public_methods - base).map(&:to_s).reject { |name| name.start_with?('_') }.to_h { |name| [name, obj.method(name)] }
    end

    # The registry's view of the methods: name, description, params shape.
    def method_entries
      @methods.keys.map { |name| { 'name' => name }.merge(@descriptions.fetch(name, {})) }
    end

    def rpc_ping(_params)
      { 'service' => @service, 'worker' => @worker_id, 'host' => Socket.gethostname, 'pid' => Process.pid,
        'version' => @version, 'time' => Time.now.to_f }
    end

    def pause(seconds)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
      sleep(0.05) while !@stopping && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
    end

    # Bytes that are not UTF-8 cannot be a JSON string: dead letters keep
    # them exactly, base64-encoded (PROTOCOL.md section 6).
    def scrub(bytes)
      text = bytes.dup.force_encoding(Encoding::UTF_8)
      text.valid_encoding? ? text : RawBytes.new(bytes)
    end

    RawBytes = Struct.new(:bytes)

    def handle_message(raw)
      if raw.bytesize > @max_request_bytes
        return dead(scrub(raw), "too large: #{raw.bytesize} bytes (limit #{@max_request_bytes})")
      end

      text = raw.force_encoding(Encoding::UTF_8)
      return dead(scrub(raw), 'invalid UTF-8') unless text.valid_encoding?

      begin
        msg = Wire.parse(text)
      rescue JSON::ParserError => e
        # The gem prefixes its messages with a source line number; drop it.
        return dead(text, "parse error: #{e.message.sub(/\A\d+: /, '')}")
      end
      if !msg.is_a?(Array)
        resp = answer(msg)
        deliver(text, Wire.reply_key(msg), resp) if resp
      elsif msg.empty?
        deliver(text, nil, encode(Wire.error(nil, INVALID_REQUEST, 'Invalid Request: empty batch')))
      elsif msg.size > @batch_max
        key = msg.lazy.map { |req| Wire.reply_key(req) }.find(&:itself)
        deliver(text, key, encode(Wire.error(nil, INVALID_REQUEST,
                                             "Invalid Request: batch of #{msg.size} elements (limit #{@batch_max})")))
      else
        parts = []
        key = nil
        msg.each do |req|
          resp = answer(req)
          next unless resp

          parts << resp
          key ||= Wire.reply_key(req)
        end
        # A batch of notifications only is answered by nothing.
        deliver(text, key, "[#{parts.join(',')}]") unless parts.empty?
      end
    end

    # The encoded response to one request object, or nil for a notification.
    def answer(req)
      reason = invalid_reason(req)
      if reason
        id = req.is_a?(Hash) && Wire.valid_id?(req['id']) ? req['id'] : nil
        return encode(Wire.error(id, INVALID_REQUEST, reason))
      end
      outcome = expired(req) || run(req['method'], req['params'])
      return nil unless req.key?('id')

      encode({ 'jsonrpc' => '2.0' }.merge(outcome, 'id' => req['id']))
    end

    def invalid_reason(req)
      return 'Invalid Request: not an object' unless req.is_a?(Hash)
      return 'Invalid Request: id must be a string, a number or null' if req.key?('id') && !Wire.valid_id?(req['id'])
      return 'Invalid Request: jsonrpc must be "2.0"' unless req['jsonrpc'] == '2.0'
      return 'Invalid Request: method must be a string' unless req['method'].is_a?(String)
      return 'Invalid Request: params must be an array or an object' if req.key?('params') && !(req['params'].is_a?(Array) || req['params'].is_a?(Hash))

      nil
    end

    # The -32000 outcome if the request's deadline (PROTOCOL.md 7) has passed
    # on Redis's clock, else nil.  A deadline that is not a positive integer
    # is ignored, and so are all of them while the clock is unmeasured.
    def expired(req)
      deadline = req['deadline']
      return nil unless deadline.is_a?(Integer) && deadline.positive?

      now = @clock.now_ms
      return nil if now.nil? || now < deadline

      { 'error' => { 'code' => DEADLINE_EXCEEDED, 'message' => 'Deadline exceeded',
                     'data' => { 'deadline' => deadline, 'now' => now } } }
    end

    # Runs a handler; returns { 'result' => ... } or { 'error' => {...} }.
    # Counts calls of known methods, with their run time, for the registry.
    def run(name, params)
      meth = @methods[name]
      return { 'error' => { 'code' => METHOD_NOT_FOUND, 'message' => "Method not found: #{name}" } } unless meth

      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      outcome = call_handler(name, meth, params)
      @registry&.stats&.record(name, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started,
                               outcome.key?('error'))
      outcome
    end

    def call_handler(name, meth, params)
      args, kwargs = @raw.include?(name) ? [[params], {}] : bind(meth, params)
      { 'result' => meth.call(*args, **kwargs) }
    rescue RpcError => e
      { 'error' => e.to_error }
    rescue *STOPS
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- NotImplementedError, SystemStackError...
      # The details go to the log, not to the caller: they may expose internals.
      @log.error("#{@service}.#{name} failed: #{e.class}: #{e.message}\n#{trace(e)}")
      { 'error' => { 'code' => INTERNAL_ERROR, 'message' => 'Internal error' } }
    end

    # A backtrace for the log, cut short: a SystemStackError's has 10,000 lines.
    def trace(error)
      lines = error.backtrace || []
      lines.size > 30 ? (lines.first(30) + ["... #{lines.size - 30} more"]).join("\n") : lines.join("\n")
    end

    # Checks params against the method's parameters before calling, so an
    # ArgumentError raised inside the handler stays an internal error.
    # Named params bind by name to positional and keyword parameters alike.
    def bind(meth, params)
      ps = meth.parameters
      case params
      when nil then bind_positional(ps, [])
      when Array then bind_positional(ps, params)
      else bind_named(ps, params)
      end
    end

    def bind_positional(ps, args)
      required = ps.count { |type, _| type == :req }
      optional = ps.count { |type, _| type == :opt }
      if args.size < required
        name = ps.select { |type, _| type == :req }[args.size][1]
        raise InvalidParams, "Invalid params: missing parameter '#{name}'"
      end
      if args.size > required + optional && ps.none? { |type, _| type == :rest }
        raise InvalidParams, "Invalid params: too many parameters (#{args.size} given, at most #{required + optional})"
      end
      missing = ps.find { |type, _| type == :keyreq }
      raise InvalidParams, "Invalid params: missing parameter '#{missing[1]}'" if missing

      [args, {}]
    end

    def bind_named(ps, params)
      rest = params.dup
      args = []
      kwargs = {}
      skipped = nil
      ps.each do |type, name|
        key = name.to_s
        case type
        when :req, :opt
          if rest.key?(key) && name
            raise InvalidParams, "Invalid params: '#{key}' given without '#{skipped}'" if skipped

            args << rest.delete(key)
          elsif type == :req
            raise InvalidParams, "Invalid params: missing parameter '#{key}'"
          else
            skipped ||= key
          end
        when :keyreq
          raise InvalidParams, "Invalid params: missing parameter '#{key}'" unless rest.key?(key)

          kwargs[name] = rest.delete(key)
        when :key
          kwargs[name] = rest.delete(key) if rest.key?(key)
        end
      end
      unless rest.empty?
        raise InvalidParams, "Invalid params: unexpected parameter '#{rest.keys.first}'" if ps.none? { |type, _| type == :keyrest }

        kwargs.merge!(rest.transform_keys(&:to_sym))
      end
      [args, kwargs]
    end

    def encode(resp)
      Wire.generate(resp)
    rescue *STOPS
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- a result's to_json may raise anything
      @log.error("#{@service}: response is not JSON: #{e.message}")
      Wire.generate(Wire.error(resp['id'], INTERNAL_ERROR, 'Internal error: result is not JSON'))
    end

    # Whether key (binary) is one of the service's own keys (PROTOCOL.md 6):
    # its list, dead letters, stats or anything under its hash tag {L}.  An
    # answer pushed onto the list would be popped and answered there forever.
    def own_key?(key)
      queue = @queue.b
      return true if [queue, @dead_key.b, @stats_key.b].include?(key)

      key.bytesize > queue.bytesize + 2 && key.start_with?("{#{queue}}".b)
    end

    # Whether key (binary) is one of rrpc's keys of any service, by its name.
    def rrpc_key?(key)
      mine = "#{@prefix}rrpc:".b
      (key.start_with?(mine) && !key.start_with?("#{mine}reply:".b)) ||
        (key.start_with?('{') && key.include?('}:')) || key.end_with?(':dead', ':stats')
    end

    # Whether key (binary) is a registered service's list or shard list.
    def request_list?(key)
      prefix = @prefix.b
      return false if @services.nil? || !key.start_with?(prefix)

      name = key.byteslice(prefix.bytesize..)
      return true if @services.include?(name)

      base, sep, shard = name.rpartition('#')
      !sep.empty? && shard.match?(/\A\d+\z/) && @services.include?(base)
    end

    # Why key (binary) may not be a reply key (PROTOCOL.md 6), or nil.
    def refusal(key)
      return "one of the service's own keys" if own_key?(key)
      return "one of rrpc's keys" if rrpc_key?(key)
      return "a service's request list" if request_list?(key)
      return 'not under an allowed prefix' if @reply_prefixes && @reply_prefixes.none? { |p| key.start_with?(p) }

      nil
    end

    # Reads the set of registered services at start and then at most every
    # SERVICES_EVERY_S; while it cannot be read, that rule is off.
    def refresh_services
      now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return if @services_read_at && now - @services_read_at < SERVICES_EVERY_S

      @services_read_at = now
      @services = @redis.smembers("#{@prefix}rrpc:services").to_set(&:b)
      @services_unread = false
    rescue Redis::BaseError => e
      # Redis away: keep what we knew, read again next time.
      return @services_read_at = nil if transient?(e)

      unless @services_unread # refused (an ACL), a hash in its place: once, not every 5 s
        @log.warn("#{@service}: cannot read the registered services (#{e.message}): until it can, " \
                  'their request lists are not refused as reply keys by name')
      end
      @services = nil
      @services_unread = true
    end

    def deliver(text, key, body)
      return dead(text, 'no reply key', body) if key.nil?

      key = key.b
      why = refusal(key)
      return dead(text, "reply key refused: #{why}", body) if why

      begin
        out = persist('cannot push a reply') { push_reply(key, body) }
      rescue GaveUp => e
        return @log.error("#{@service}: reply lost on the way out: #{e.message}")
      rescue Redis::CommandError => e # NOPERM on the key, say: never "not now"
        return dead(text, "reply failed: #{e.message}", body)
      end
      status = out.is_a?(Array) ? out.first : out
      dead(text, "reply key refused: #{status}", body) unless status == 1
    end

    # Runs the REPLY SCRIPT by its SHA, loading it when Redis lacks it (a
    # restart, SCRIPT FLUSH, a failover).
    def push_reply(key, body)
      @redis.evalsha(REPLY_SHA, keys: [key], argv: [@reply_ttl, body])
    rescue Redis::CommandError => e
      raise unless e.message.start_with?('NOSCRIPT')

      @redis.script(:load, REPLY_SCRIPT)
      @redis.evalsha(REPLY_SHA, keys: [key], argv: [@reply_ttl, body])
    end

    # Records a message that cannot be answered; never drops it silently.
    def dead(text, reason, response = nil)
      @log.warn("#{@service}: dead letter: #{reason}")
      letter = { 'reason' => reason, 'time' => Time.now.to_f, 'service' => @service }
      if text.is_a?(RawBytes)
        letter['message_base64'] = [text.bytes].pack('m0')
      else
        letter['message'] = text
      end
      letter['response'] = JSON.parse(response, max_nesting: false) if response
      body = Wire.generate(letter)
      persist('cannot record a dead letter') do
        @redis.pipelined do |pipe|
          pipe.rpush(@dead_key, body)
          pipe.ltrim(@dead_key, -@dead_letter_max, -1)
          pipe.hincrby(@stats_key, 'dead', 1)
        end
      end
    rescue Redis::BaseError, GaveUp => e
      @log.error("#{@service}: dead letter lost (#{e.message}): #{reason}")
    end

    # Whether a failed command may succeed if simply tried again later.
    def transient?(error)
      error.is_a?(Redis::BaseConnectionError) ||
        (error.is_a?(Redis::CommandError) && TRANSIENT_CODES.include?(error.message[/\A\S+/]))
    end

    # Runs a write until it succeeds, riding out whatever Redis says "not
    # now" with (broken link, LOADING, BUSY, READONLY, OOM...) with backoff,
    # so the request in hand still gets answered.  Raises the error of a
    # refusal, or GaveUp when told to stop while Redis keeps failing (after
    # STOP_GRACE_S more).
    def persist(what)
      delay = 0.1
      give_up_at = nil
      loop do
        result = yield
        outage_ended
        return result
      rescue Redis::BaseError => e
        raise unless transient?(e)

        outage_failed(e, what)
        if @stopping
          give_up_at ||= Process.clock_gettime(Process::CLOCK_MONOTONIC) + STOP_GRACE_S
          raise GaveUp, e.message if Process.clock_gettime(Process::CLOCK_MONOTONIC) >= give_up_at
        end
        sleep(delay)
        delay = [delay * 2, 2.0].min
      end
    end

    # Logs a Redis outage once when it starts (and again only if its cause
    # changes), and once when it ends: never once per try.
    def outage_failed(error, what)
      kind = [error.class, error.message[/\A\S+/]]
      if @outage_since.nil?
        @outage_since = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        @log.warn("#{@service}: redis: #{what}: #{error.message}; retrying with backoff")
      elsif kind != @outage_kind
        @log.warn("#{@service}: redis: #{what}: #{error.message}; still retrying")
      end
      @outage_kind = kind
    end

    def outage_ended
      return unless @outage_since

      @log.warn(format('%s: redis: working again after %.1f s', @service,
                       Process.clock_gettime(Process::CLOCK_MONOTONIC) - @outage_since))
      @outage_since = @outage_kind = nil
    end
  end
end
