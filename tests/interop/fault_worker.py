#!/usr/bin/python3
"""fault_worker.py -- the Python calc worker plus handlers that raise what a
worker must survive (check_peer_faults.py drives it).

Each fault method raises one BaseException subclass that is not an
Exception, or exhausts a resource; the worker must answer -32603 and go on.

    /usr/bin/python3 fault_worker.py --redis URL --service NAME
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                'clients', 'python', 'src'))
import rrpc  # noqa: E402
from rrpc.examples import calc_server  # noqa: E402


class Custom(BaseException):
    """An application's own BaseException subclass."""


class Faulty(calc_server.Calc):
    def generator_exit(self):
        raise GeneratorExit('from a handler')

    def custom_base_exception(self):
        raise Custom('not an Exception')

    def recurse(self, n=0):
        return self.recurse(n + 1)  # RecursionError

    def memory_error(self):
        raise MemoryError('pretend the heap is full')

    def system_exit(self):
        raise SystemExit(3)  # the one way a handler may end the worker


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--redis', required=True)
    parser.add_argument('--service', required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(asctime)s fault_worker.py: %(message)s')
    rrpc.Server(args.service, Faulty(), url=args.redis).serve_forever()
    logging.info('stopped')


if __name__ == '__main__':
    main()
