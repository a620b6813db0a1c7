# frozen_string_literal: true

# trace.rb -- W3C Trace Context for requests (PROTOCOL.md section 7): the
# rules for a received traceparent, new ones, and the request the current
# thread is handling, so that calls made from inside a handler continue its
# trace (and, like the C peer's, get no more time than its deadline leaves).
module RRPC
  # The handled request's traceparent ("00-<trace id>-<parent id>-<flags>"),
  # or nil outside a handler or when the request carried none (or an invalid
  # one, which is ignored).
  def self.current_traceparent
    Trace.current&.fetch(:traceparent)
  end

  # The handled request's tracestate, or nil.
  def self.current_tracestate
    Trace.current&.fetch(:tracestate)
  end

  # Internal.
  module Trace
    LENGTH = 55 # a version-00 traceparent
    STATE_MAX = 512
    FIELDS = /\A[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\z/
    STATE = /\A[\x20-\x7e]*\z/
    KEY = :rrpc_handled_request

    module_function

    # A received traceparent as version 00, or nil if the recommendation
    # calls it invalid: version ff, a version-00 value that is not exactly
    # 55 characters, a later one not followed by '-' after them, anything
    # but lowercase hex, an all-zero trace or parent id.
    def parse(value)
      return nil unless value.is_a?(String)

      value = value.b
      return nil if value.bytesize < LENGTH

      head = value.byteslice(0, LENGTH)
      return nil unless FIELDS.match?(head) && !head.start_with?('ff')
      return nil if head.start_with?('00') ? value.bytesize != LENGTH : value.bytesize > LENGTH && value.getbyte(LENGTH) != 45
      return nil if head[3, 32].delete('0').empty? || head[36, 16].delete('0').empty?

      "00#{head[2..]}".force_encoding(Encoding::UTF_8)
    end

    def state_ok?(value)
      value.is_a?(String) && value.bytesize <= STATE_MAX && STATE.match?(value.b)
    end

    # A new trace: random ids, flags 00 (rrpc records no spans).
    def fresh
      "00-#{random_hex(16)}-#{random_hex(8)}-00"
    end

    # The same trace and flags with a new parent id.
    def child(traceparent)
      "#{traceparent[0, 36]}#{random_hex(8)}#{traceparent[52, 3]}"
    end

    # Ruby's default generator, reseeded by Ruby in a forked child: ids
    # need to be unlikely to collide, not secret, and cost no syscall.
    def random_hex(bytes)
      loop do
        hex = Random.bytes(bytes).unpack1('H*')
        return hex unless hex.delete('0').empty?
      end
    end

    # [traceparent, tracestate] for a request: the caller's (ArgumentError
    # if invalid), else the handled request's continued, else a new trace.
    def outgoing(traceparent, tracestate)
      raise ArgumentError, 'rrpc: tracestate: at most 512 printable ASCII characters' unless tracestate.nil? || state_ok?(tracestate)

      unless traceparent.nil?
        parsed = parse(traceparent)
        raise ArgumentError, "rrpc: not a valid W3C traceparent: #{traceparent.inspect}" unless parsed

        return [parsed, tracestate]
      end
      handled = current
      return [child(handled[:traceparent]), tracestate || handled[:tracestate]] if handled&.fetch(:traceparent)

      [fresh, tracestate]
    end

    # What the current thread is handling: {traceparent:, tracestate:,
    # deadline:} or nil.
    def current
      Thread.current[KEY]
    end

    # Runs the block as the handler of REQ (a request Hash).
    def handling(req)
      traceparent = parse(req['traceparent'])
      tracestate = traceparent && state_ok?(req['tracestate']) ? req['tracestate'] : nil
      deadline = req['deadline'].is_a?(Integer) && req['deadline'].positive? ? req['deadline'] : nil
      before = Thread.current[KEY]
      Thread.current[KEY] = { traceparent: traceparent, tracestate: tracestate, deadline: deadline }
      yield
    ensure
      Thread.current[KEY] = before
    end

    # " (trace ID)" for a log line about REQ, or "".
    def log_suffix(req)
      traceparent = req.is_a?(Hash) ? parse(req['traceparent']) : nil
      traceparent ? " (trace #{traceparent[3, 32]})" : ''
    end
  end
  private_constant :Trace
end
