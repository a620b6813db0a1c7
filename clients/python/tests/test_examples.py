"""test_examples.py -- the calc example service and client, run as programs
with --redis URL --service NAME, as the other peers' examples are."""

import pathlib
import signal
import subprocess
import sys

import pytest

from conftest import INSTALLED, example_env

TREE = pathlib.Path(__file__).resolve().parent.parent


def run_pair(server_cmd, client_cmd, redis_url, service):
    server = subprocess.Popen(server_cmd + ['--redis', redis_url, '--service', service],
                              env=example_env(), stderr=subprocess.PIPE, text=True)
    try:
        client = subprocess.run(client_cmd + ['--redis', redis_url, '--service', service],
                                env=example_env(), capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stdout + client.stderr
        assert 'add(1, 2) = 3' in client.stdout
        assert 'divide(1, 0) failed: division by zero (code 1)' in client.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=15)
    assert server.returncode == 0, err  # a graceful stop
    assert 'Traceback' not in err, err


def test_calc_examples_as_modules(redis_url, service):
    run_pair([sys.executable, '-m', 'rrpc.examples.calc_server'],
             [sys.executable, '-m', 'rrpc.examples.calc_client'], redis_url, service)


@pytest.mark.skipif(INSTALLED, reason='the scripts run the tree, not the installed package')
def test_calc_scripts_of_the_tree(redis_url, service):
    run_pair([sys.executable, str(TREE / 'calc_server.py')],
             [sys.executable, str(TREE / 'calc_client.py')], redis_url, service)


def test_calc_client_fails_on_wrong_answers(redis_url, service):
    # No worker: every call times out, and the client says so with exit 1.
    client = subprocess.run([sys.executable, '-m', 'rrpc.examples.calc_client', '--redis',
                             redis_url, '--service', service, '--timeout', '0.2'],
                            env=example_env(), capture_output=True, text=True, timeout=60)
    assert client.returncode == 1 and 'WRONG' in client.stdout
