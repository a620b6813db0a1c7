"""conftest.py -- fixtures of the Python peer's pytest suite.

Every test runs against a real, private redis-server: $REDIS_URL, as
tests/harness/with-redis.sh exports it, and for the tests that need Redis
absent, late or password-protected, redis-servers of their own on free
loopback ports.  The suite tests this tree's src/ unless RRPC_TEST_INSTALLED=1,
when it must import an installed rrpc (test_package.sh: a venv with the
package installed), so that what pip installed is what is tested.
"""

import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent / 'src'
INSTALLED = os.environ.get('RRPC_TEST_INSTALLED') == '1'
if not INSTALLED:
    sys.path.insert(0, str(SRC))

import rrpc  # noqa: E402


def wait_for(predicate, timeout=5.0, step=0.02):
    """Polls PREDICATE until it is true or TIMEOUT passes; its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(step)


@pytest.fixture(scope='session')
def redis_url():
    url = os.environ.get('REDIS_URL')
    if not url:
        pytest.fail('REDIS_URL is not set: run the suite under tests/harness/with-redis.sh')
    return url


@pytest.fixture
def r(redis_url):
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def service(request):
    """A service name of this test's own, so tests never see each other's keys."""
    return f'pytest-{request.node.name[:40]}-{secrets.token_hex(3)}'.replace('[', '-') \
        .replace(']', '')


class Running:
    """A Server serving in a background thread (signals are left alone there)."""

    def __init__(self, server):
        self.server = server
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.server.serve_forever()
        except BaseException as exc:  # noqa: B902 -- reported by stop()
            self.error = exc

    def stop(self, timeout=10):
        self.server.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), 'serve_forever did not return after stop()'


@pytest.fixture
def serve(redis_url):
    """serve(service, obj, **options) -> Running; stopped after the test."""
    running = []

    def start(name, obj=None, **options):
        options.setdefault('url', redis_url)
        server = rrpc.Server(name, obj, **options)
        running.append(Running(server))
        return running[-1]
    yield start
    for item in running:
        item.stop()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class RedisProcess:
    """A throw-away redis-server on a loopback port: no persistence."""

    def __init__(self, tmp_path, port, *args):
        binary = shutil.which('redis-server')
        if binary is None:
            pytest.fail('redis-server is not installed (Debian package redis-server)')
        self.port = port
        self.url = f'redis://127.0.0.1:{port}'
        self.proc = subprocess.Popen(
            [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--dir', str(tmp_path), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_up(self, password=None):
        conn = redis.Redis(port=self.port, password=password)

        def up():
            try:
                return conn.ping()
            except redis.RedisError:
                return False
        assert wait_for(up, 10), f'redis-server on port {self.port} did not start'
        conn.close()
        return self

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def redis_process(tmp_path):
    """redis_process(port=None, *args) -> RedisProcess (not yet waited for)."""
    started = []

    def spawn(port=None, *args):
        started.append(RedisProcess(tmp_path, port or free_port(), *args))
        return started[-1]
    yield spawn
    for proc in started:
        proc.stop()


def example_env():
    """The environment for a subprocess that must import the same rrpc."""
    env = dict(os.environ)
    if not INSTALLED:
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(SRC), env.get('PYTHONPATH')]))
    return env
