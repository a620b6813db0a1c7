#!/usr/bin/env python3
"""call_peer.py -- one call from the Python peer, for the interop tests:
prints each progress value as one JSON line as it comes (--stream), then
the result, as `rrpc call --stream` does.

Usage: call_peer.py [--priority P] [--stream] [--timeout S] SERVICE METHOD PARAMS_JSON
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'clients/python/src'))
import rrpc  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument('--priority')
ap.add_argument('--stream', action='store_true')
ap.add_argument('--timeout', type=float, default=30)
ap.add_argument('service')
ap.add_argument('method')
ap.add_argument('params')
a = ap.parse_args()
params = json.loads(a.params)
show = (lambda v: print(json.dumps(v), flush=True)) if a.stream else None
with rrpc.Client(timeout=a.timeout) as client:
    try:
        print(json.dumps(client.call(a.service, a.method, *params, priority=a.priority,
                                     progress=show)))
    except rrpc.RemoteError as exc:
        sys.exit(f'error {exc.code}: {exc.message}')
