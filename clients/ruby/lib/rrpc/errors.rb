# frozen_string_literal: true

# errors.rb -- every error the peer raises on purpose, under one base class,
# so that `rescue RRPC::Error` catches them all.  The names match the Python
# peer's (rrpc.Error, RemoteError, CallTimeout, Unavailable...).
#
#   RRPC::Error
#     RpcError            a handler raises it to answer with an error of its choosing
#       InvalidParams     ... with -32602
#     RemoteError         a call was answered with a JSON-RPC error object
#     Timeout             no reply in time (alias CallTimeout)
#     Unavailable         the service is registered but no worker is live
#     Overloaded          the service's queue is at its max_queue
#     ProtocolError       the reply is not a JSON-RPC 2.0 response to the call
#     RedisError          Redis unreachable or refusing a command (the redis gem's
#                         error is its cause); a server's start that cannot succeed
module RRPC
  # Base of every error rrpc raises.
  class Error < StandardError; end

  # Raised by a handler to answer with a JSON-RPC error of its choosing.
  class RpcError < Error
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

  # The peer answered a call with a JSON-RPC error object.  Not an RpcError:
  # a handler that lets one through answers -32603, not the remote's code.
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
  CallTimeout = Timeout # the Python peer's name

  # The peer's reply is not a JSON-RPC 2.0 response.
  class ProtocolError < Error; end

  # The service is registered but none of its workers is live (PROTOCOL.md
  # 9): the call failed without being queued, or was withdrawn when the last
  # worker went while it waited.
  class Unavailable < Error; end

  # The service's queue is at its max_queue (PROTOCOL.md 9): nothing was
  # queued.
  class Overloaded < Error; end

  # Redis could not be reached or refused a command (an ACL, say): the
  # redis gem's error is the cause.  Also what Server#serve_forever raises
  # when Redis does not answer within its start_timeout, or refuses it.
  class RedisError < Error; end

  # The AMQP broker (PROTOCOL.md 12) could not be reached, refused the
  # login or a publish: the bunny gem's error is the cause.
  class BrokerError < Error; end

  # The caller cancelled the call (Client#call's cancel:): its request was
  # taken back if still queued, and a worker running it was told to stop
  # (PROTOCOL.md 7).
  class Cancelled < Error; end

  # What Server#serve_forever raises when the service's configuration asks
  # for what this peer does not do: rate limits or concurrency caps (the
  # {L}:config field limits), which only the C server enforces; and what
  # the AMQP transport does not do yet ("... is not supported over AMQP yet").
  class Unsupported < Error; end

  # A flag a caller sets to cancel calls made with it (Client#call's
  # cancel:), from any thread.  Anything that answers cancelled? will do.
  class CancelToken
    def initialize
      @cancelled = false
    end

    def cancel
      @cancelled = true
    end

    def cancelled?
      @cancelled
    end
  end
end
