# frozen_string_literal: true

# priority.rb -- call priorities (PROTOCOL.md 7, "priority"): the values,
# the lists a request list L has for them, the script that pushes high and
# low, and the check a worker makes of a received request's member.
#
# A call of high or low priority goes through PRIORITY_SCRIPT, which uses
# the priority lists only when L has a backlog: a call that finds none goes
# straight onto L, where any idle worker (a reliable-mode one blocked on L
# alone included) takes it at once.  Workers pop {L}:high, L, {L}:low in
# that order, so a backlog is served in priority order (strictly: low waits
# while high is never empty).
module RRPC
  PRIORITIES = %w[high normal low].freeze

  # Internal.
  module Priority
    # The push script of the protocol, byte for byte (the same text in
    # every peer; tests/unit/check_scripts.py compares the copies).
    # KEYS = [L, {L}:high, {L}:low], ARGV = [request text, 'high' | 'low'].
    PRIORITY_SCRIPT = <<~LUA
      local p = ARGV[#ARGV]
      local q = KEYS[1]
      if p == 'high' then
        if redis.call('LLEN', KEYS[1]) > 0 then q = KEYS[2] end
      else
        if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[2]) > 0
           or redis.call('LLEN', KEYS[3]) > 0 then q = KEYS[3] end
      end
      return redis.call('RPUSH', q, unpack(ARGV, 1, #ARGV - 1))
    LUA
    SCRIPT_SHA = Digest::SHA1.hexdigest(PRIORITY_SCRIPT)

    module_function

    # The lists a worker of QUEUE pops, in priority order: high, normal, low.
    def lists(queue)
      ["{#{queue}}:high", queue, "{#{queue}}:low"]
    end

    # PRIORITY_SCRIPT's KEYS for QUEUE: L, {L}:high, {L}:low.
    def script_keys(queue)
      [queue, "{#{queue}}:high", "{#{queue}}:low"]
    end

    # PRIORITY as a caller passed it (nil: normal; a Symbol is read as its
    # name), or ArgumentError.
    def checked(priority)
      priority = priority.to_s if priority.is_a?(Symbol)
      return priority if priority.nil? || PRIORITIES.include?(priority)

      raise ArgumentError, "rrpc: priority must be \"high\", \"normal\" or \"low\", not #{priority.inspect}"
    end

    # TENANT as a caller passed it (nil: none), or ArgumentError.
    def checked_tenant(tenant)
      return tenant if tenant.nil? || (tenant.is_a?(String) && !tenant.empty?)

      raise ArgumentError, "rrpc: tenant must be a non-empty string, not #{tenant.inspect}"
    end

    # The -32600 error of a request whose priority member is present but not
    # one of the three strings, else nil.
    def bad_member(req)
      return nil if !req.key?('priority') || PRIORITIES.include?(req['priority'])

      { 'code' => INVALID_REQUEST, 'message' => 'Invalid Request: priority must be "high", "normal" or "low"',
        'data' => { 'member' => 'priority' } }
    end

    # Pushes TEXT onto QUEUE at LEVEL ('high' or 'low') with the script, by
    # its SHA, loading it when Redis lacks it.
    def push(redis, queue, text, level)
      redis.evalsha(SCRIPT_SHA, keys: script_keys(queue), argv: [text, level])
    rescue Redis::CommandError => e
      raise unless e.message.start_with?('NOSCRIPT')

      redis.eval(PRIORITY_SCRIPT, keys: script_keys(queue), argv: [text, level])
    end
  end
  private_constant :Priority
end
