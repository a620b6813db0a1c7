# frozen_string_literal: true

require 'securerandom'
require 'socket'

# registry.rb -- a server's entry in the registry of PROTOCOL.md section 9:
# its record and heartbeat, and the per-method stats it sends with each
# beat, so that `rrpc ls/info/stats/top` show Ruby workers next to C ones
# and callers fail fast when the last of them stops.
module RRPC
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

    # The counts not sent yet: over AMQP, where nothing is sent, every
    # count since the process started.
    def totals
      @mu.synchronize { @pending.dup }
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
      # The {L} keys share a slot; the index of services is in another,
      # which a Cluster client's pipeline cannot reach: it goes on its own.
      @redis.pipelined do |pipe|
        pipe.zadd(@workers_key, now_ms + ttl_ms, @id)
        pipe.hset(@info_key, @id, @record)
        pipe.hset(@config_key, 'max_queue', @max_queue, 'ttl_ms', ttl_ms, 'shards', 1)
        pipe.pexpire(@config_key, REGISTERED_FOR_MS)
      end
      @redis.sadd(@services_key, [@service])
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
          RedisURL.demoted(@redis, e)
          @log.warn("#{@service}: heartbeat failed: #{e.message}") unless @failing
          @failing = true
        end
      end
    end
  end
  private_constant :Stats, :Registry
end
