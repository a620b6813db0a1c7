# frozen_string_literal: true

# clock.rb -- Redis's clock as seen from here (PROTOCOL.md 7): request
# deadlines are milliseconds on it, so that peers whose own clocks disagree
# still agree on them.  Clients stamp deadlines with it, servers judge them.
module RRPC
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
  private_constant :RedisClock
end
