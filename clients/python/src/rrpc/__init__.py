"""rrpc -- the Python peer of rrpc: JSON-RPC 2.0 over Redis lists.

rrpc's core is C, but the protocol (docs/PROTOCOL.md) is meant to be spoken
by any language with a Redis client.  This package is that peer for Python,
built on redis-py (and pika for amqp:// URLs, PROTOCOL.md 12), so Python programs can call rrpc services and serve
them, interchangeably with the C, Ruby and seed-style peers:

    calc = rrpc.Client().proxy('calc')
    calc.add(1, 2)                      # -> 3

    class Calc:
        def add(self, a, b): return a + b
    rrpc.Server('calc', Calc()).serve_forever()

Its modules, one concern each: protocol (JSON-RPC rules, no I/O),
deadletter (the record of what cannot be answered), transport (Redis: the
clock, the reply script, transient errors), redis_url (Sentinel and Cluster
URLs), replies (which reply keys a
worker accepts), handlers, registry (heartbeat and stats), client, server,
errors.  Public API: Client, Proxy, Server, the errors under rrpc.Error,
raw_params, describe, current_traceparent, current_tracestate (W3C
Trace Context, trace), progress and cancelled (inside a handler, stream),
VERSION.
"""

from .client import Client, Proxy
from .errors import (CallTimeout, Cancelled, Error, InvalidParams, Overloaded, ProtocolError,
                     AmqpError, RedisError, RemoteError, RpcError, Timeout, Unavailable, Unsupported)
from .priority import PRIORITIES
from .handlers import describe, raw_params
from .server import Server
from .stream import cancelled, progress
from .trace import current_traceparent, current_tracestate
from .version import VERSION

__version__ = VERSION
__all__ = ['Client', 'Proxy', 'Server', 'Error', 'RemoteError', 'Timeout', 'CallTimeout',
           'Unavailable', 'Overloaded', 'Cancelled', 'Unsupported', 'AmqpError', 'PRIORITIES', 'ProtocolError', 'RedisError', 'RpcError',
           'InvalidParams', 'raw_params', 'describe', 'current_traceparent',
           'current_tracestate', 'progress', 'cancelled', 'VERSION']
