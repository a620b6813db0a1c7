// index.d.ts -- the types of rrpc for Node.js (hand-written; the package is
// plain JavaScript).  docs/PROTOCOL.md is the wire; README.md the guide.

/** Positional params (an array) or named params (an object). */
export type Params = unknown[] | Record<string, unknown>;

export interface ClientOptions {
  /**
   * Redis URL: redis://, rediss:// or unix:///path; behind Sentinel
   * redis+sentinel://[user:password@]host[:port][,host[:port]...]/MASTER[/db][?sentinel_password=P&sentinel_user=U];
   * on a Cluster redis+cluster://[user:password@]host[:port][,host[:port]...] (db 0 only); or an AMQP
   * broker's amqp://user:pass@host:port/vhost (PROTOCOL.md 12). A malformed Sentinel or Cluster URL is a
   * TypeError from the constructor. Default $RRPC_URL, then $REDIS_URL, then redis://127.0.0.1:6379.
   */
  url?: string;
  /** The deployment's key prefix (default ''). */
  prefix?: string;
  /** Seconds a call waits for its reply (default 30; 0 waits forever). */
  timeout?: number;
  /** Read the registry: fail fast without live workers, respect max_queue (default true). */
  failFast?: boolean;
}

export interface CallOptions {
  /** This call's own timeout in seconds (0 waits forever). */
  timeout?: number;
  /**
   * Gives the call up: it rejects with Aborted, its request is withdrawn if
   * still queued, and a worker running it is told to stop (its cancel_key).
   */
  signal?: AbortSignal;
  /** Asks for the handler's progress: each value, in order, before the call resolves. */
  progress?: (value: unknown) => void;
  /** Under a backlog, higher priorities are served first (default 'normal'; anything else: TypeError/RangeError). */
  priority?: Priority;
  /** Sent as the request's "tenant" member (a non-empty string). */
  tenant?: string;
  /**
   * W3C traceparent to send (a TypeError if invalid); without one a call made
   * inside a handler continues the handled request's trace, any other starts one.
   */
  traceparent?: string;
  /** W3C tracestate to send with it (at most 512 printable ASCII characters). */
  tracestate?: string;
}

export type Priority = 'high' | 'normal' | 'low';
export const PRIORITIES: readonly Priority[];

/** The trace context, priority and tenant of a notification. */
export interface NotifyOptions {
  traceparent?: string;
  tracestate?: string;
  priority?: Priority;
  tenant?: string;
}

/** Calls rrpc services; every call returns a promise. */
export class Client {
  constructor(options?: ClientOptions);
  readonly prefix: string;
  readonly timeout: number;
  readonly failFast: boolean;
  /** Calls service.method and resolves to its result. */
  call<T = any>(service: string, method: string, params?: Params | null, options?: CallOptions): Promise<T>;
  /** Sends a notification: run by a worker, never answered. */
  notify(service: string, method: string, params?: Params | null, options?: NotifyOptions): Promise<void>;
  /** An object whose methods are calls with positional params: proxy('calc').add(1, 2). */
  proxy(service: string, options?: CallOptions): Record<string, (...args: any[]) => Promise<any>>;
  /** Closes the client's connections. */
  close(): Promise<void>;
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ServerOptions {
  /** As ClientOptions.url; over amqp:// the server answers registry queries instead of beating. */
  url?: string;
  prefix?: string;
  /** Seconds a reply list lives (default 60). */
  replyTtl?: number;
  /** Larger messages are dead letters, kept bounded (default 1 MiB). */
  maxRequestBytes?: number;
  /** Dead letters kept on <service>:dead (default 1000). */
  deadLetterMax?: number;
  /** Elements of a batch at most (default 1000). */
  batchMax?: number;
  /** Seconds a batch may run before its requests not started answer -32001 (default 5; 0: none). */
  batchTimeLimit?: number;
  /** Register in the registry: heartbeat, record, per-method stats (default true; over amqp:// it answers registry queries). */
  heartbeat?: boolean;
  heartbeatInterval?: number;
  heartbeatTtl?: number;
  /** The queue length callers respect, published in the registry (default 0: none); over amqp:// x-max-length. */
  maxQueue?: number;
  /** Over amqp:// only: at least once (durable queue, acked after the confirmed answer; default false). */
  reliable?: boolean;
  /** Reliable: a request taken by this many workers that died becomes a dead letter (default 3). */
  maxDeliveries?: number;
  /** Reliable: seconds this process remembers its answers by correlation_id (default 600). */
  dedupWindow?: number;
  /** Answer only onto reply keys that start with one of these (default: any allowed key). */
  replyPrefixes?: string[] | null;
  /** Seconds to wait for Redis at start (default 0: as long as it takes; < 0: no wait). */
  startTimeout?: number;
  /** Where the worker logs (default: stderr). */
  logger?: Logger;
  /** SIGINT and SIGTERM stop the server gracefully (default true). */
  handleSignals?: boolean;
  /** A handler's stray rejection or exception is logged instead of ending the process (default true). */
  catchStray?: boolean;
}

export type Handler = (...args: any[]) => unknown;

/** Serves the functions of an object, a class instance or a Map as an rrpc service. */
export class Server {
  constructor(service: string, handlers?: object | Map<string, Handler> | null, options?: ServerOptions);
  readonly service: string;
  readonly workerId: string;
  /** What it has handled since it started (the counters its AMQP registry answers carry). */
  readonly counts: {
    requests: number; notifications: number; errors: number; expired: number; lost: number;
    dead_letters: number; redelivered: number;
  };
  /** Serves fn as method name (before serveForever). */
  register(name: string, fn: Handler, about?: { description?: string; params?: unknown }): this;
  /** Waits for Redis, registers, serves until stop() or SIGINT/SIGTERM; rejects with RedisError if it cannot start. */
  serveForever(): Promise<void>;
  /** Asks serveForever to resolve after the request in hand. */
  stop(): void;
}

/** Marks a handler that takes the params whole (an array, an object or null). */
export function rawParams<F extends Handler>(fn: F): F;
/** Gives a handler a description and an informal params shape for `rrpc info`. */
export function describe<F extends Handler>(description: string, params: unknown, fn: F): F;
/** Declares a handler's parameter names ('a', optional '?b', rest '...c') when its source cannot tell. */
export function signature<F extends Handler>(names: string[], fn: F): F;

/** A number written as a real in JSON even when whole (10.0). */
export class Real {
  constructor(value: number);
  readonly value: number;
  valueOf(): number;
}
export function real(value: number): Real;

/** The base class of every error rrpc throws. */
declare class RrpcError extends globalThis.Error {}
export { RrpcError as Error };
/** Thrown by a handler to answer with an error of its choosing. */
export class RpcError extends RrpcError {
  constructor(code: number, message: string, data?: unknown);
  readonly code: number;
  readonly data?: unknown;
}
/** Thrown by a handler whose params are unusable: -32602. */
export class InvalidParams extends RpcError {
  constructor(message: string, data?: unknown);
}
/** The service answered an error object; message is the service's own text. */
export class RemoteError extends RrpcError {
  constructor(code: number, message: string, data?: unknown);
  readonly code: number;
  readonly data?: unknown;
}
export class Timeout extends RrpcError {}
export class Unavailable extends RrpcError {}
export class Overloaded extends RrpcError {}
export class ProtocolError extends RrpcError {}
/** Redis unreachable or refusing; the redis client's error is the cause. */
export class RedisError extends RrpcError {}
/** The AMQP broker unreachable or refusing, or the link broke while a call waited; amqplib's error is the cause. */
export class AmqpError extends RrpcError {}
/** The call's AbortSignal fired (name 'AbortError'); the signal's reason is the cause. */
export class Aborted extends RrpcError {}
/**
 * The service's {L}:config holds limits, which only the C server enforces: Server.serveForever refuses to serve.
 * Also what is "not supported over AMQP yet": priorities, progress; reliable over Redis.
 */
export class Unsupported extends RrpcError {}

export const VERSION: string;

/** The handled request's traceparent, or null outside a handler or when it carried none (or an invalid one). */
export function currentTraceparent(): string | null;
/** The handled request's tracestate, or null. */
export function currentTracestate(): string | null;
/**
 * Sends VALUE as progress of the request being handled, if its caller asked;
 * resolves to true if sent.  Throws outside a handler (after its answer, say).
 */
export function progress(value: unknown): Promise<boolean>;
/** Resolves to true if the caller of the request being handled cancelled it (looked up at most every 50 ms). */
export function cancelled(): Promise<boolean>;
