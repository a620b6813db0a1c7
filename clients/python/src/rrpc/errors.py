"""errors.py -- the exceptions of the Python peer, under one base class.

Every error rrpc raises to its user is an rrpc.Error, so `except rrpc.Error`
catches them all; the same names as the Ruby peer's RRPC::Error tree:

    Error
    +-- RemoteError     the service answered a JSON-RPC error object
    +-- Timeout         no reply in time (also a builtin TimeoutError)
    +-- Unavailable     registered, but no live worker (PROTOCOL.md 9)
    +-- Overloaded      the service's queue is at its max_queue
    +-- ProtocolError   the reply is not a JSON-RPC 2.0 response to the call
    +-- RedisError      Redis unreachable or refusing a command (the
    |                   redis-py exception is its __cause__)
    +-- AmqpError       the AMQP broker unreachable, refusing the login or
    |                   breaking the link (pika's exception is its __cause__)
    +-- Unsupported     asked of a transport that cannot do it (yet)
    +-- RpcError        raised by a handler to answer with an error of its
        +-- InvalidParams   choosing; InvalidParams answers -32602
"""

INVALID_PARAMS = -32602


class Error(Exception):
    """The base class of every error rrpc raises."""


class RpcError(Error):
    """Raised by a handler to answer with a JSON-RPC error of its choosing."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_error(self):
        err = {'code': self.code, 'message': self.message}
        if self.data is not None:
            err['data'] = self.data
        return err


class InvalidParams(RpcError):
    """Raised by a handler whose params are present but unusable (-32602)."""

    def __init__(self, message, data=None):
        super().__init__(INVALID_PARAMS, message, data)


class RemoteError(Error):
    """The peer answered a call with a JSON-RPC error object.  Not an
    RpcError: a handler whose own call fails answers -32603, not the other
    service's error, unless it re-raises it as an RpcError on purpose."""

    def __init__(self, code, message, data=None):
        super().__init__(f'{message} (code {code})')
        self.code, self.message, self.data = code, message, data


class Timeout(Error, TimeoutError):
    """No reply arrived in time (the request was withdrawn if still queued)."""


CallTimeout = Timeout  # the name before 0.1.0's package layout


class ProtocolError(Error):
    """The peer's reply is not a JSON-RPC 2.0 response to this call."""


class Unavailable(Error):
    """The service is registered but none of its workers is live
    (PROTOCOL.md 9): the call failed without being queued, or was withdrawn
    when the last worker went while it waited."""


class Overloaded(Error):
    """The service's queue is at its max_queue (PROTOCOL.md 9): nothing was
    queued."""


class RedisError(Error):
    """Redis could not be reached, or refused a command (an ACL, say); the
    redis-py exception is the __cause__.  Also what Server.serve_forever
    raises when Redis does not answer within its start_timeout."""


class AmqpError(Error):
    """The AMQP broker could not be reached, refused the login or vhost
    (refused is then True: waiting does not heal it), or the link broke
    during a call; pika's exception is the __cause__.  URLs in its message
    have their password masked."""

    def __init__(self, message, refused=False):
        super().__init__(message)
        self.refused = refused


class Cancelled(Error):
    """The caller cancelled the call (Client.call's cancel): its request was
    taken back if still queued, and a worker running it was told to stop
    (PROTOCOL.md 7)."""


class Unsupported(Error):
    """What Server.serve_forever raises when the service's configuration
    asks for what this peer does not do: rate limits or concurrency caps
    ({L}:config field limits), which only the C server enforces.  Also
    what the AMQP transport raises for what it does not do yet ("... is not
    supported over AMQP yet": priorities, progress, max_queue)."""
