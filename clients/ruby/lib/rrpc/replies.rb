# frozen_string_literal: true

require 'digest'
require 'set'

# replies.rb -- where a worker's answers go (PROTOCOL.md sections 3 and 6):
# which reply keys it refuses, the REPLY SCRIPT that pushes only onto reply
# lists, and the dead letters of what it cannot answer.
module RRPC
  # Internal.
  class Replies
    SERVICES_EVERY_S = 5.0 # how often the set of registered services is read

    # The REPLY SCRIPT of PROTOCOL.md section 3, byte for byte: it pushes
    # only onto a key that does not exist or onto a list with an expiry, so a
    # reply can never put a TTL on (or append to) an application's key, a
    # persistent list or another service's backlog.
    REPLY_SCRIPT = <<~LUA
      -- rrpc reply v2: KEYS = reply keys, ARGV[1] = ttl in seconds, ARGV[1+i] = response for KEYS[i].
      -- Pushes only onto a reply list: a key that does not exist, or a list that has an expiry.
      -- Each distinct key is judged once, then pushed onto in order and expired once.
      local out, verdict, values, order = {}, {}, {}, {}
      for i, k in ipairs(KEYS) do
        local v = verdict[k]
        if v == nil then
          local t = redis.call('TYPE', k).ok
          if t == 'none' or (t == 'list' and redis.call('PTTL', k) >= 0) then
            v = 1
            values[k] = {}
            order[#order + 1] = k
          elseif t == 'list' then
            v = 'list without expiry'
          else
            v = t
          end
          verdict[k] = v
        end
        if v == 1 then
          local vs = values[k]
          vs[#vs + 1] = ARGV[i + 1]
        end
        out[i] = v
      end
      for _, k in ipairs(order) do
        local vs = values[k]
        for j = 1, #vs, 1000 do
          redis.call('RPUSH', k, unpack(vs, j, math.min(j + 999, #vs)))
        end
        redis.call('EXPIRE', k, ARGV[1])
      end
      return out
    LUA
    REPLY_SHA = Digest::SHA1.hexdigest(REPLY_SCRIPT)

    # keep: the size limit M of section 6 (messages and responses longer
    # are kept bounded in dead letters).
    def initialize(redis:, service:, prefix:, reply_ttl:, reply_prefixes:, dead_letter_max:, keep:, logger:,
                   outage:)
      @redis = redis
      @service = service
      @prefix = prefix
      @queue = "#{prefix}#{service}"
      @dead_key = "#{@queue}:dead"
      @stats_key = "#{@queue}:stats"
      @reply_ttl = reply_ttl
      @reply_prefixes = reply_prefixes&.map { |p| p.to_s.b }
      @dead_letter_max = dead_letter_max
      @keep = keep
      @log = logger
      @outage = outage
      @services = nil # registered names (binary Strings), nil while unknown
      @services_read_at = nil
      @services_unread = false
    end

    # Pushes body (a response) onto key, or records message (the bytes
    # popped) as a dead letter when there is no key, the key is refused or
    # Redis refuses the push.
    def deliver(message, key, body)
      return dead(message, 'no reply key', body) if key.nil?

      key = key.b
      why = refusal(key)
      return dead(message, "reply key refused: #{why}", body) if why

      begin
        out = @outage.persist('cannot push a reply') { push_reply(key, body) }
      rescue Outage::GaveUp => e
        return @log.error("#{@service}: reply lost on the way out: #{e.message}")
      rescue Redis::CommandError => e # NOPERM on the key, say: never "not now"
        return dead(message, "reply failed: #{e.message}", body)
      end
      status = out.is_a?(Array) ? out.first : out
      dead(message, "reply key refused: #{status}", body) unless status == 1
    end

    # Pushes a progress message (PROTOCOL.md 7) onto key, with the checks
    # and the script of a response; true if pushed.  Not persisted through
    # an outage: progress is worth less than the answer's wait.
    def progress(key, body)
      key = key.b
      return false if refusal(key)

      out = push_reply(key, body)
      (out.is_a?(Array) ? out.first : out) == 1
    rescue Redis::BaseError => e
      @log.warn("#{@service}: progress not sent: #{e.message}")
      false
    end

    # Whether a request's cancel key exists (PROTOCOL.md 7); a Redis error
    # reads as no.
    def cancelled?(cancel_key)
      @redis.exists?(cancel_key)
    rescue Redis::BaseError
      false
    end

    # Records a message that cannot be answered; never drops it silently.
    def dead(message, reason, response = nil)
      trace = DeadLetter.trace_of(message.b, @keep)
      body = DeadLetter.build(service: @service, reason: reason, message: message, keep: @keep, response: response,
                              trace: trace)
      @log.warn("#{@service}: dead letter#{trace ? " (trace #{trace[3, 32]})" : ''}: #{reason}")
      @outage.persist('cannot record a dead letter') do
        @redis.pipelined do |pipe|
          pipe.rpush(@dead_key, body)
          pipe.ltrim(@dead_key, -@dead_letter_max, -1)
        end
      end
      count_dead
    rescue Redis::BaseError, Outage::GaveUp => e
      @log.error("#{@service}: dead letter lost (#{e.message}): #{reason}")
    end

    # Its own command: <service>:stats is in another slot than
    # <service>:dead, which a Cluster client's pipeline cannot reach.
    def count_dead
      @outage.persist('cannot count a dead letter') { @redis.hincrby(@stats_key, 'dead', 1) }
    rescue Redis::BaseError, Outage::GaveUp => e
      @log.error("#{@service}: dead letter not counted in #{@stats_key}: #{e.message}")
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
      return @services_read_at = nil if Outage.transient?(e)

      unless @services_unread # refused (an ACL), a hash in its place: once, not every 5 s
        @log.warn("#{@service}: cannot read the registered services (#{e.message}): until it can, " \
                  'their request lists are not refused as reply keys by name')
      end
      @services = nil
      @services_unread = true
    end

    private

    # Why key (binary) may not be a reply key (PROTOCOL.md 6), or nil.
    def refusal(key)
      return "one of the service's own keys" if own_key?(key)
      return "one of rrpc's keys" if rrpc_key?(key)
      return "a service's request list" if request_list?(key)
      return 'not under an allowed prefix' if @reply_prefixes && @reply_prefixes.none? { |p| key.start_with?(p) }

      nil
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

    # Runs the REPLY SCRIPT by its SHA, loading it when Redis lacks it (a
    # restart, SCRIPT FLUSH, a failover).
    def push_reply(key, body)
      @redis.evalsha(REPLY_SHA, keys: [key], argv: [@reply_ttl, body])
    rescue Redis::CommandError => e
      raise unless e.message.start_with?('NOSCRIPT')

      @redis.script(:load, REPLY_SCRIPT)
      @redis.evalsha(REPLY_SHA, keys: [key], argv: [@reply_ttl, body])
    end
  end
  private_constant :Replies
end
