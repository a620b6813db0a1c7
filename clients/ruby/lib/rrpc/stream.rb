# frozen_string_literal: true

# stream.rb -- progress and cancellation inside a handler (PROTOCOL.md 7).
#
# A handler sends progress with RRPC.progress(value): pushed onto the
# request's reply key at once, before its answer, but only when the caller
# asked ("progress": true), so a seed-style caller never sees one.  It sees
# its caller's cancel with RRPC.cancelled?: the request's cancel_key exists,
# asked of Redis at most every 50 ms and remembered.  Calls made inside a
# handler carry its cancel key, so cancelling one request cancels the calls
# it made.
module RRPC
  # Sends value (any JSON) as progress of the request the current thread is
  # handling, if its caller asked; true if sent.  RuntimeError outside a
  # handler (after its answer, say).
  def self.progress(value)
    h = Stream.current
    raise 'rrpc: RRPC.progress: no request is being handled (after its answer?)' if h.nil? || h.done

    h.progress(value)
  end

  # Whether the caller of the request being handled cancelled it.
  def self.cancelled?
    h = Stream.current
    !h.nil? && h.cancelled?
  end

  # Internal.
  module Stream
    LOOK_EVERY_S = 0.05
    KEY = :rrpc_streamed_request

    # One request being handled; sink: what sends progress (the server's
    # Replies) and reads the cancel key (its Redis connection).
    class Handled
      attr_reader :cancel_key
      attr_accessor :done

      def initialize(sink, req, key)
        @sink = sink
        @id = req['id']
        @key = key && req.key?('id') ? key : nil
        @wants = req['progress'] == true && !@key.nil?
        ck = req['cancel_key']
        @cancel_key = ck.is_a?(String) && !ck.empty? ? ck : nil
        @cancelled = false
        @looked_at = nil
        @done = false
      end

      def progress(value)
        return false unless @wants

        body = Wire.generate({ 'jsonrpc' => '2.0', 'method' => 'rpc.progress',
                               'params' => { 'id' => @id, 'progress' => value } })
        @sink.progress(@key, body)
      end

      def cancelled?
        return false if @cancel_key.nil? || @done
        return true if @cancelled

        now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        return false if @looked_at && now - @looked_at < LOOK_EVERY_S

        @looked_at = now
        @cancelled = @sink.cancelled?(@cancel_key)
      end
    end

    module_function

    def current
      Thread.current[KEY]
    end

    # Runs the block as the handler of REQ; KEY: its reply key (nil in a
    # batch: no progress).  Yields the Handled.
    def handling(sink, req, key)
      handled = Handled.new(sink, req, key)
      before = Thread.current[KEY]
      Thread.current[KEY] = handled
      yield handled
    ensure
      handled&.done = true
      Thread.current[KEY] = before
    end

    # The cancel key calls made inside a handler carry, or nil.
    def inherited_cancel_key
      h = current
      h && !h.done ? h.cancel_key : nil
    end
  end
  private_constant :Stream
end
