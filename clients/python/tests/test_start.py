"""test_start.py -- Server.serve_forever waits for Redis at start (as the C
server's start_timeout_s): backoff, one log line, a bound, a stop."""

import logging
import threading
import time

import pytest

import rrpc
from conftest import Running, free_port, wait_for


class Echo:
    def echo(self, x):
        return x


def test_waits_for_a_late_redis_then_serves(redis_process, caplog):
    caplog.set_level(logging.WARNING, logger='rrpc')
    port = free_port()
    url = f'redis://127.0.0.1:{port}'
    running = Running(rrpc.Server('late', Echo(), url=url, heartbeat_interval=0.2))
    try:
        time.sleep(1.5)  # several tries of the backoff (0.05, 0.1, 0.2, 0.4, 0.8 s)
        assert running.thread.is_alive() and running.error is None
        redis_process(port).wait_up()
        assert rrpc.Client(url, timeout=10).call('late', 'echo', 'hi') == 'hi'
    finally:
        running.stop()
    assert running.error is None
    lines = [rec.getMessage() for rec in caplog.records]
    assert sum('waiting for Redis' in line for line in lines) == 1, lines
    assert sum('Redis answered after' in line for line in lines) == 1, lines


def test_start_timeout_bounds_the_wait():
    url = f'redis://127.0.0.1:{free_port()}'
    server = rrpc.Server('never', Echo(), url=url, start_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(rrpc.RedisError) as err:
        server.serve_forever()
    assert 0.4 <= time.monotonic() - started < 3
    assert 'start timeout (0.5 s)' in str(err.value)
    assert isinstance(err.value, rrpc.Error)


def test_negative_start_timeout_does_not_wait():
    server = rrpc.Server('never', Echo(), url=f'redis://127.0.0.1:{free_port()}',
                         start_timeout=-1)
    started = time.monotonic()
    with pytest.raises(rrpc.RedisError):
        server.serve_forever()
    assert time.monotonic() - started < 1


def test_stop_ends_the_wait():
    running = Running(rrpc.Server('never', Echo(), url=f'redis://127.0.0.1:{free_port()}'))
    time.sleep(0.5)
    assert running.thread.is_alive()
    started = time.monotonic()
    running.stop(timeout=3)
    assert time.monotonic() - started < 1.5 and running.error is None


def test_a_refused_password_fails_at_once(redis_process):
    proc = redis_process(None, '--requirepass', 'sesame').wait_up(password='sesame')
    server = rrpc.Server('locked', Echo(), url=proc.url)  # no password: NOAUTH
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        error=pytest.raises(rrpc.RedisError, server.serve_forever)), daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        server.stop()
        pytest.fail('serve_forever waited on a refused password')
    assert 'NOAUTH' in str(result['error'].value) or 'Authentication' in str(result['error'].value)


def test_serves_on_after_redis_restarts(redis_process):
    port = free_port()
    proc = redis_process(port).wait_up()
    running = Running(rrpc.Server('phoenix', Echo(), url=proc.url, heartbeat=False))
    try:
        client = rrpc.Client(proc.url, timeout=10)
        assert client.call('phoenix', 'echo', 1) == 1
        proc.stop()
        time.sleep(0.5)
        redis_process(port).wait_up()
        assert wait_for(lambda: running.thread.is_alive(), 1)
        assert client.call('phoenix', 'echo', 2) == 2
    finally:
        running.stop()
