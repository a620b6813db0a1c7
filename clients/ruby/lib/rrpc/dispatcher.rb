# frozen_string_literal: true

# dispatcher.rb -- what a worker does with one message, short of Redis:
# size and UTF-8 checks, strict parsing, a request or a batch (PROTOCOL.md
# 2, 4, 5 and 7: validation, deadlines, the batch size and time limits),
# running the handlers.  It answers with an Outcome the server carries out:
# a response for a reply key, a dead letter, or nothing.
module RRPC
  # Internal.
  class Dispatcher
    # body: the response text to push onto key (nil key: none could be
    # read, a dead letter); dead: the reason the message is a dead letter.
    Outcome = Struct.new(:key, :body, :dead)
    NOTHING = Outcome.new(nil, nil, nil).freeze

    # What a handler may raise that still ends the worker: the process is
    # being told to stop.
    STOPS = [SignalException, SystemExit].freeze

    # Requests refused for their deadline that the server has not yet
    # added to <service>:stats (PROTOCOL.md 9).
    attr_accessor :expired_unsent

    # What it has handled, as the C server counts it (PROTOCOL.md 12's
    # registry answers): requests, notifications, errors, expired.
    attr_reader :counts

    # methods: name -> callable; raw: names that take params whole; stats:
    # where calls are counted (nil: nowhere); batch_time_limit: seconds
    # (nil or 0: none).
    # sink: what sends progress and reads cancel keys (the server's Replies).
    def initialize(service:, methods:, raw:, clock:, stats:, logger:, sink:, max_request_bytes:, batch_max:,
                   batch_time_limit:)
      @service = service
      @sink = sink
      @methods = methods
      @raw = raw
      @clock = clock
      @stats = stats
      @log = logger
      @max_request_bytes = max_request_bytes
      @batch_max = batch_max
      @batch_time_limit = batch_time_limit&.positive? ? batch_time_limit.to_f : nil
      @expired_unsent = 0
      # Every key present from the start: another thread may read it meanwhile.
      @counts = { 'requests' => 0, 'notifications' => 0, 'errors' => 0, 'expired' => 0 }
    end

    # The Outcome of one message (binary String).
    def dispatch(raw)
      if raw.bytesize > @max_request_bytes
        return dead("too large: #{raw.bytesize} bytes (limit #{@max_request_bytes})")
      end

      text = raw.dup.force_encoding(Encoding::UTF_8)
      return dead('invalid UTF-8') unless text.valid_encoding?

      begin
        msg = Wire.parse(text)
      rescue JSON::ParserError => e
        # The gem prefixes its messages with a source line number; drop it.
        return dead("parse error: #{e.message.sub(/\A\d+: /, '')}")
      end
      return single(msg) unless msg.is_a?(Array)
      return Outcome.new(nil, error_text(nil, INVALID_REQUEST, 'Invalid Request: empty batch')) if msg.empty?
      return too_long(msg) if msg.size > @batch_max

      batch(msg)
    end

    # A handler's exception in the log: cut short, a SystemStackError's
    # backtrace has 10,000 lines.
    def self.trace(error)
      lines = error.backtrace || []
      lines.size > 30 ? (lines.first(30) + ["... #{lines.size - 30} more"]).join("\n") : lines.join("\n")
    end

    private

    def dead(reason)
      Outcome.new(nil, nil, reason)
    end

    def single(req)
      resp = answer(req, nil, Wire.reply_key(req))
      resp ? Outcome.new(Wire.reply_key(req), resp) : NOTHING
    end

    # A batch over batch_max runs none of its elements, notifications
    # included: one -32600 (not an array) where its answers would have gone.
    def too_long(batch)
      Outcome.new(Wire.batch_reply_key(batch),
                  error_text(nil, INVALID_REQUEST,
                             "Invalid Request: batch of #{batch.size} elements (limit #{@batch_max})"))
    end

    # Runs the elements in turn; once the batch has run batch_time_limit,
    # the rest are answered -32001 without running, so a batch of slow
    # calls holds the worker for at most the limit plus one call.
    def batch(batch)
      started = monotonic
      parts = batch.filter_map do |req|
        over = @batch_time_limit && monotonic - started >= @batch_time_limit
        answer(req, over ? (@batch_time_limit * 1000).to_i : nil)
      end
      # A batch of notifications only is answered by nothing.
      parts.empty? ? NOTHING : Outcome.new(Wire.batch_reply_key(batch), "[#{parts.join(',')}]")
    end

    # The encoded response to one request object, or nil for a notification.
    # limit_ms: the batch's time limit has passed, do not run it.  key: its
    # reply key, where progress goes (nil in a batch: none).
    def answer(req, limit_ms = nil, key = nil)
      @counts['requests'] += 1
      resp = response(req, limit_ms, key)
      @counts['notifications'] += 1 if resp.nil?
      resp
    end

    def response(req, limit_ms, key)
      reason = Wire.invalid_reason(req)
      if reason
        id = req.is_a?(Hash) && Wire.valid_id?(req['id']) ? req['id'] : nil
        return error_text(id, INVALID_REQUEST, reason)
      end
      bad = Priority.bad_member(req)
      return encode({ 'jsonrpc' => '2.0', 'error' => bad, 'id' => req['id'] }) if bad
      return nil if limit_ms && !req.key?('id')

      outcome = over_limit(limit_ms) || expired(req) || handled(req, key)
      return nil unless req.key?('id')

      encode({ 'jsonrpc' => '2.0' }.merge(outcome, 'id' => req['id']))
    end

    # Runs REQ's handler with its trace and stream context; a request whose
    # caller cancelled it while it waited is answered -32002 without running.
    def handled(req, key)
      Trace.handling(req) do
        Stream.handling(@sink, req, key) do |h|
          if h.cancelled?
            { 'error' => { 'code' => CANCELLED, 'message' => 'Cancelled' } }
          else
            run(req['method'], req['params'])
          end
        end
      end
    end

    def over_limit(limit_ms)
      return nil unless limit_ms

      @counts['expired'] += 1
      { 'error' => { 'code' => BATCH_TIME_EXCEEDED, 'message' => 'Batch time limit exceeded',
                     'data' => { 'limit_ms' => limit_ms } } }
    end

    # The -32000 outcome if the request's deadline (PROTOCOL.md 7) has passed
    # on Redis's clock, else nil.  A deadline that is not a positive integer
    # is ignored, and so are all of them while the clock is unmeasured.
    def expired(req)
      deadline = req['deadline']
      return nil unless deadline.is_a?(Integer) && deadline.positive?

      now = @clock.now_ms
      return nil if now.nil? || now < deadline

      @expired_unsent += 1
      { 'error' => { 'code' => DEADLINE_EXCEEDED, 'message' => 'Deadline exceeded',
                     'data' => { 'deadline' => deadline, 'now' => now } } }
    end

    # Runs a handler; returns { 'result' => ... } or { 'error' => {...} }.
    # Counts calls of known methods, with their run time, for the registry.
    def run(name, params)
      meth = @methods[name]
      return { 'error' => { 'code' => METHOD_NOT_FOUND, 'message' => "Method not found: #{name}" } } unless meth

      started = monotonic
      outcome = call_handler(name, meth, params)
      @stats&.record(name, monotonic - started, outcome.key?('error'))
      outcome
    end

    def call_handler(name, meth, params)
      args, kwargs = @raw.include?(name) ? [[params], {}] : Params.bind(meth, params)
      { 'result' => meth.call(*args, **kwargs) }
    rescue RpcError => e
      { 'error' => e.to_error }
    rescue *STOPS
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- NotImplementedError, SystemStackError...
      # The details go to the log, not to the caller: they may expose internals.
      trace = RRPC.current_traceparent
      @log.error("#{@service}.#{name} failed#{trace ? " (trace #{trace[3, 32]})" : ''}: " \
                 "#{e.class}: #{e.message}\n#{Dispatcher.trace(e)}")
      { 'error' => { 'code' => INTERNAL_ERROR, 'message' => 'Internal error' } }
    end

    def error_text(id, code, message)
      encode(Wire.error(id, code, message))
    end

    def encode(resp)
      @counts['errors'] += 1 if resp.key?('error')
      Wire.generate(resp)
    rescue *STOPS
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- a result's to_json may raise anything
      @log.error("#{@service}: response is not JSON: #{e.message}")
      Wire.generate(Wire.error(resp['id'], INTERNAL_ERROR, 'Internal error: result is not JSON'))
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
  private_constant :Dispatcher
end
