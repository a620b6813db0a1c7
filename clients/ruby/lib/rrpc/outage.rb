# frozen_string_literal: true

# outage.rb -- how a server rides out Redis saying "not now": which errors
# heal by waiting, a write retried with backoff until it succeeds, and one
# log line when an outage starts and one when it ends, never one per try.
module RRPC
  # Internal.
  class Outage
    # Error replies that say "not now" rather than "never": the command may
    # succeed once a failover, a load, a script or a memory shortage is over.
    TRANSIENT_CODES = %w[LOADING BUSY READONLY MASTERDOWN TRYAGAIN CLUSTERDOWN OOM UNBLOCKED
                         NOREPLICAS MISCONF].freeze
    STOP_GRACE_S = 5.0 # how long a write is still retried once told to stop

    # A write abandoned because the worker was told to stop while Redis
    # kept failing.
    class GaveUp < StandardError; end

    # Whether a failed command may succeed if simply tried again later.
    def self.transient?(error)
      error.is_a?(Redis::BaseConnectionError) ||
        (error.is_a?(Redis::CommandError) && TRANSIENT_CODES.include?(error.message[/\A\S+/]))
    end

    # stopping: a callable, true once the server was told to stop.
    # redis: the connection the writes go through (a demoted master's is
    # dropped, RedisURL.demoted).
    def initialize(service, logger, stopping, redis = nil)
      @redis = redis
      @service = service
      @log = logger
      @stopping = stopping
      @since = nil
      @kind = nil
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
        ended
        return result
      rescue Redis::BaseError => e
        raise unless Outage.transient?(e)

        RedisURL.demoted(@redis, e) if @redis
        failed(e, what)
        if @stopping.call
          give_up_at ||= monotonic + STOP_GRACE_S
          raise GaveUp, e.message if monotonic >= give_up_at
        end
        sleep(delay)
        delay = [delay * 2, 2.0].min
      end
    end

    # Logs an outage once when it starts (and again only if its cause
    # changes).
    def failed(error, what)
      kind = [error.class, error.message[/\A\S+/]]
      if @since.nil?
        @since = monotonic
        @log.warn("#{@service}: redis: #{what}: #{error.message}; retrying with backoff")
      elsif kind != @kind
        @log.warn("#{@service}: redis: #{what}: #{error.message}; still retrying")
      end
      @kind = kind
    end

    # Logs the end of an outage, if one was going on.
    def ended
      return unless @since

      @log.warn(format('%<service>s: redis: working again after %<s>.1f s', service: @service, s: monotonic - @since))
      @since = @kind = nil
    end

    private

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
  private_constant :Outage
end
