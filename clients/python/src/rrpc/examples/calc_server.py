"""calc_server.py -- the calc example service, served from Python.

It exists to show a Python rrpc worker in a dozen lines and to be the
Python side of the cross-language tests (clients/test_peers.sh) and of the
conformance vectors: it answers exactly like the C calc server.

    python3 -m rrpc.examples.calc_server [--url URL] [--service calc] [--prefix P]
        [--no-heartbeat] [--heartbeat-interval S] [--heartbeat-ttl S]
        [--reply-prefix P]... [--batch-time S] [--start-timeout S]

(from a checkout without installing: clients/python/calc_server.py)
"""

import argparse
import logging
import sys
import threading
import time

import rrpc


def _number(value, name):
    # JSON true/false would pass as 1/0 in Python arithmetic: refuse them.
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise rrpc.InvalidParams(f'Invalid params: {name} must be a number')
    return value


_AB = {'a': 'number', 'b': 'number'}


def _sleep_unless_cancelled(ms):
    """Sleeps MS milliseconds in 20 ms steps; True if the caller cancelled."""
    end = time.monotonic() + ms / 1000
    while True:
        if rrpc.cancelled():
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.02))


class Calc:
    """Params come positional [a, b] or named {"a": .., "b": ..}.  The
    descriptions are those of the C calc-server, for `rrpc info`.  URL and
    PREFIX: where forward's calls go (the server's Redis and prefix)."""

    def __init__(self, url=None, prefix=''):
        self._url, self._prefix = url, prefix
        self._client = None
        self._lock = threading.Lock()

    @rrpc.describe('add(a, b): a + b', _AB)
    def add(self, a, b):
        return _number(a, 'a') + _number(b, 'b')

    @rrpc.describe('subtract(a, b): a - b', _AB)
    def subtract(self, a, b):
        return _number(a, 'a') - _number(b, 'b')

    @rrpc.describe('multiply(a, b): a * b', _AB)
    def multiply(self, a, b):
        return _number(a, 'a') * _number(b, 'b')

    @rrpc.describe('divide(a, b): a / b as a real; error 1 if b is 0', _AB)
    def divide(self, a, b):
        # Both operands are checked before the zero test, like the other methods.
        a, b = _number(a, 'a'), _number(b, 'b')
        if b == 0:
            raise rrpc.RpcError(1, 'division by zero')
        return float(a) / b

    @rrpc.describe('echo(...): returns its params unchanged', 'any')
    @rrpc.raw_params
    def echo(self, params):
        return params

    @rrpc.describe('sleep(ms): waits ms milliseconds, returns ms', {'ms': 'integer'})
    def sleep(self, ms):
        if _number(ms, 'ms') < 0:
            raise rrpc.InvalidParams('Invalid params: ms must not be negative')
        if _sleep_unless_cancelled(ms):
            raise rrpc.RpcError(-32002, 'Cancelled')
        return ms

    @rrpc.describe('count(n, ms): sends 1..n as progress, one every ms milliseconds, returns n',
                   {'n': 'integer', 'ms': 'integer'})
    def count(self, n, ms):
        if not isinstance(n, int) or not isinstance(ms, int) or n < 0 or ms < 0:
            raise rrpc.InvalidParams('Invalid params: n and ms must be integers >= 0')
        for i in range(1, n + 1):
            if _sleep_unless_cancelled(ms):
                raise rrpc.RpcError(-32002, 'Cancelled')
            rrpc.progress(i)  # sent only if the caller asked
        return n


    @rrpc.describe("forward(service, method, params): calls service.method(params) and returns "
                   "its answer, within this call's deadline and trace",
                   {'service': 'string', 'method': 'string', 'params': 'array|object'})
    def forward(self, service, method, params=None):
        """A call made from inside this handler: it continues the request's
        trace and gets no more time than its deadline leaves.  A remote
        error is answered as it came; a failed call is error 3."""
        if not isinstance(service, str) or not isinstance(method, str):
            raise rrpc.InvalidParams('Invalid params: service and method must be strings')
        with self._lock:  # one client, safe to share between threads
            if self._client is None:
                self._client = rrpc.Client(url=self._url, prefix=self._prefix)
        try:
            if isinstance(params, list):
                return self._client.call(service, method, *params)
            if isinstance(params, dict):
                return self._client.call(service, method, **params)
            if params is None:
                return self._client.call(service, method)
        except rrpc.RemoteError as exc:
            raise rrpc.RpcError(exc.code, exc.message, exc.data) from exc
        except rrpc.Error as exc:
            raise rrpc.RpcError(3, 'forward failed',
                                {'error': type(exc).__name__, 'detail': str(exc)}) from exc
        raise rrpc.InvalidParams('Invalid params: params must be an array, an object or null')


def main(argv=None):
    parser = argparse.ArgumentParser(description='Serve the calc service.')
    parser.add_argument('--url', '--redis', dest='url',
                        help='broker URL, redis://... or amqp://... (default $RRPC_URL, then '
                             '$REDIS_URL, then redis://127.0.0.1:6379)')
    parser.add_argument('--service', default='calc')
    parser.add_argument('--prefix', default='')
    parser.add_argument('--no-heartbeat', action='store_true',
                        help='do not register in the registry (no heartbeat, no stats)')
    parser.add_argument('--heartbeat-interval', type=float, default=1.0, metavar='S',
                        help='seconds between heartbeats (default: 1)')
    parser.add_argument('--heartbeat-ttl', type=float, default=5.0, metavar='S',
                        help='seconds a heartbeat stays valid (default: 5)')
    parser.add_argument('--reply-prefix', action='append', metavar='P',
                        help='answer only onto reply keys that start with P (repeatable; '
                             'default: any reply key PROTOCOL.md section 3 allows)')
    parser.add_argument('--batch-time', type=float, default=5.0, metavar='S',
                        help='a batch runs at most S seconds, its other requests are answered '
                             '-32001 (default: 5; 0: no limit)')
    parser.add_argument('--start-timeout', type=float, default=0.0, metavar='S',
                        help='wait at most S seconds for Redis at start (default: 0, as long '
                             'as it takes; negative: do not wait)')
    parser.add_argument('--reliable', action='store_true',
                        help='over AMQP: at least once -- durable queue, acked after the '
                             'answer is confirmed, redeliveries counted (the C server\'s '
                             '--reliable; not over Redis in this peer)')
    parser.add_argument('--max-deliveries', type=int, default=3, metavar='N',
                        help='reliable: a request taken by N workers that died becomes a dead '
                             'letter (default: 3)')
    parser.add_argument('--max-queue', type=int, default=0, metavar='N',
                        help='at most N requests wait (callers get "overloaded"; default: 0, '
                             'no bound)')
    args = parser.parse_args(argv)
    extra = {'max_queue': args.max_queue}
    if args.reliable:
        if not rrpc.transport.resolve_url(args.url).lower().startswith('amqp'):
            parser.error('--reliable: the Python peer is reliable over AMQP only')
        extra.update(reliable=True, max_deliveries=args.max_deliveries)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(asctime)s calc_server.py: %(message)s')
    logging.getLogger('pika').setLevel(logging.WARNING)  # its INFO is one line per frame
    server = rrpc.Server(args.service, Calc(url=args.url, prefix=args.prefix),
                         url=args.url, prefix=args.prefix,
                         heartbeat=not args.no_heartbeat,
                         heartbeat_interval=args.heartbeat_interval,
                         heartbeat_ttl=args.heartbeat_ttl, reply_prefixes=args.reply_prefix,
                         batch_time_limit=args.batch_time, start_timeout=args.start_timeout,
                         **extra)
    logging.info('serving %s%s', args.prefix, args.service)
    try:
        server.serve_forever()
    except (rrpc.RedisError, rrpc.AmqpError, rrpc.Unsupported) as err:
        logging.error('%s', err)
        return 1
    logging.info('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
