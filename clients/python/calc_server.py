#!/usr/bin/python3
"""calc_server.py -- the calc example service, served from Python.

It exists to show a Python rrpc worker in a dozen lines and to be the
Python side of the cross-language tests (clients/test_peers.sh) and of the
conformance vectors: it answers exactly like the C calc server.

    /usr/bin/python3 calc_server.py [--redis URL] [--service calc] [--prefix P]
"""

import argparse
import logging
import sys
import time

import rrpc


def _number(value, name):
    # JSON true/false would pass as 1/0 in Python arithmetic: refuse them.
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise rrpc.InvalidParams(f'Invalid params: {name} must be a number')
    return value


class Calc:
    """Params come positional [a, b] or named {"a": .., "b": ..}."""

    def add(self, a, b):
        return _number(a, 'a') + _number(b, 'b')

    def subtract(self, a, b):
        return _number(a, 'a') - _number(b, 'b')

    def multiply(self, a, b):
        return _number(a, 'a') * _number(b, 'b')

    def divide(self, a, b):
        # Both operands are checked before the zero test, like the other methods.
        a, b = _number(a, 'a'), _number(b, 'b')
        if b == 0:
            raise rrpc.RpcError(1, 'division by zero')
        return float(a) / b

    @rrpc.raw_params
    def echo(self, params):
        return params

    def sleep(self, ms):
        if _number(ms, 'ms') < 0:
            raise rrpc.InvalidParams('Invalid params: ms must not be negative')
        time.sleep(ms / 1000)
        return ms


def main():
    parser = argparse.ArgumentParser(description='Serve the calc service.')
    parser.add_argument('--redis', help='Redis URL (default $REDIS_URL, then redis://127.0.0.1:6379)')
    parser.add_argument('--service', default='calc')
    parser.add_argument('--prefix', default='')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(asctime)s calc_server.py: %(message)s')
    server = rrpc.Server(args.service, Calc(), url=args.redis, prefix=args.prefix)
    logging.info('serving %s%s', args.prefix, args.service)
    server.serve_forever()
    logging.info('stopped')


if __name__ == '__main__':
    main()
