"""calc_client.py -- calls the calc service from Python and checks the answers.

A usage example of rrpc.Client and a smoke test of any calc server (C,
Ruby, Python or seed-style): exits 1 if any answer is wrong.

    python3 -m rrpc.examples.calc_client [--url URL] [--service calc] [--prefix P]
        [--timeout S]

(from a checkout without installing: clients/python/calc_client.py)
"""

import argparse
import sys

import rrpc


def main(argv=None):
    parser = argparse.ArgumentParser(description='Call the calc service and check the results.')
    parser.add_argument('--url', '--redis', dest='url',
                        help='broker URL, redis://... or amqp://... (default $RRPC_URL, then '
                             '$REDIS_URL, then redis://127.0.0.1:6379)')
    parser.add_argument('--service', default='calc')
    parser.add_argument('--prefix', default='')
    parser.add_argument('--timeout', type=float, default=5)
    args = parser.parse_args(argv)

    calc = rrpc.Client(args.url, prefix=args.prefix, timeout=args.timeout).proxy(args.service)
    wrong = 0
    for label, call, expected in [
            ('add(1, 2)', lambda: calc.add(1, 2), 3),
            ('subtract(a=5, b=3)', lambda: calc.subtract(a=5, b=3), 2),
            ('multiply(4, 2.5)', lambda: calc.multiply(4, 2.5), 10.0),
            ('divide(7, 2)', lambda: calc.divide(7, 2), 3.5)]:
        try:
            got = call()
        except rrpc.Error as err:
            print(f'{label} failed: {err}  WRONG, expected {expected!r}')
            wrong += 1
            continue
        # 10.0 and 10 compare equal in Python; the JSON type matters too.
        ok = got == expected and type(got) is type(expected)
        wrong += not ok
        print(f'{label} = {got!r}' + ('' if ok else f'  WRONG, expected {expected!r}'))
    try:
        got = calc.divide(1, 0)
        print(f'divide(1, 0) = {got!r}  WRONG, expected an error')
        wrong += 1
    except rrpc.RemoteError as err:
        print(f'divide(1, 0) failed: {err.message} (code {err.code})')
        wrong += err.code != 1
    except rrpc.Error as err:
        print(f'divide(1, 0) failed: {err}  WRONG, expected error code 1')
        wrong += 1
    return 1 if wrong else 0


if __name__ == '__main__':
    sys.exit(main())
