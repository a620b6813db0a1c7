'use strict';
// errors.js -- the errors of the Node peer, under one base class.
//
// Every error rrpc throws to its user is an rrpc.Error, so one
// `instanceof rrpc.Error` catches them all; the same names as the Ruby and
// Python peers':
//
//   Error
//   +-- RemoteError     the service answered a JSON-RPC error object
//   +-- Timeout         no reply in time (the request was withdrawn)
//   +-- Unavailable     registered, but no live worker (PROTOCOL.md 9)
//   +-- Overloaded      the service's queue is at its max_queue
//   +-- ProtocolError   the reply is not a JSON-RPC 2.0 response to the call
//   +-- RedisError      Redis unreachable or refusing a command (the redis
//   |                   client's error is its `cause`)
//   +-- Aborted         the call's AbortSignal fired (name 'AbortError', as
//   |                   fetch's; the signal's reason is its `cause`)
//   +-- RpcError        thrown by a handler to answer with an error of its
//       +-- InvalidParams   choosing; InvalidParams answers -32602

const { INVALID_PARAMS } = require('./protocol');

class RrpcError extends globalThis.Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name === 'RrpcError' ? 'Error' : new.target.name;
  }
}

/** Thrown by a handler to answer with a JSON-RPC error of its choosing. */
class RpcError extends RrpcError {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }

  toError() {
    const err = { code: this.code, message: this.message };
    if (this.data !== undefined) err.data = this.data;
    return err;
  }
}

/** Thrown by a handler whose params are present but unusable (-32602). */
class InvalidParams extends RpcError {
  constructor(message, data) {
    super(INVALID_PARAMS, message, data);
  }
}

/**
 * The service answered a call with a JSON-RPC error object.  Not an RpcError:
 * a handler whose own call fails answers -32603, not the other service's
 * error, unless it rethrows it as an RpcError on purpose.
 */
class RemoteError extends RrpcError {
  constructor(code, message, data) {
    super(message); // the service's own text; its code is `code`
    this.code = code;
    this.data = data;
  }
}

/** No reply arrived in time (the request was withdrawn if still queued). */
class Timeout extends RrpcError {}

/** The reply is not a JSON-RPC 2.0 response to this call. */
class ProtocolError extends RrpcError {}

/**
 * The service is registered but none of its workers is live (PROTOCOL.md 9):
 * the call failed without being queued, or was withdrawn when the last
 * worker went while it waited.
 */
class Unavailable extends RrpcError {}

/** The service's queue is at its max_queue (PROTOCOL.md 9): nothing was queued. */
class Overloaded extends RrpcError {}

/**
 * Redis could not be reached, or refused a command (an ACL, say); the redis
 * client's error is the cause.  Also what Server.serveForever rejects with
 * when Redis refuses the start or does not answer within startTimeout.
 */
class RedisError extends RrpcError {}

/**
 * The AMQP broker could not be reached, refused the login, or the link to
 * it broke while a call waited (PROTOCOL.md 12); amqplib's error is the cause.
 */
class AmqpError extends RrpcError {}

/** The call's AbortSignal fired; the request was withdrawn if still queued. */
class Aborted extends RrpcError {
  constructor(message, options) {
    super(message, options);
    this.name = 'AbortError';
  }
}

/**
 * What Server.serveForever rejects with when the service's configuration
 * asks for what this peer does not do: rate limits or concurrency caps (the
 * {L}:config field limits), which only the C server enforces.
 */
class Unsupported extends RrpcError {}

module.exports = {
  Unsupported,
  Error: RrpcError,
  RpcError,
  InvalidParams,
  RemoteError,
  Timeout,
  ProtocolError,
  Unavailable,
  Overloaded,
  RedisError,
  AmqpError,
  Aborted,
};
