#!/usr/bin/python3
"""test_memory.py -- rrpc when Redis is out of memory (maxmemory + noeviction).

Starts a private redis-server (loopback, free port) and an at-most-once
calc-server, and checks what issue 9 asks of a bad day under memory
pressure:

  1. callers get a clear error at once: rrpc call fails (not a hang, not a
     crash) with Redis's OOM message, in well under its timeout;
  2. workers lose nothing silently: requests they took while Redis refused
     writes are each either answered (later) or reported in the worker's
     log as lost ("LOST dead letter", with the request); the worker keeps
     running; requests not taken stay queued;
  3. service resumes when memory frees (CONFIG SET maxmemory 0): calls are
     answered again within a few heartbeats, by the same worker process.
(The reliable-mode side of memory pressure, where a taken request must
never be lost, is tested with reliable mode itself: tests/integration.)

Usage: test_memory.py BUILD_DIR
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

N_TAKEN = 40  # requests the workers take while Redis is out of memory


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(msg, logs=()):
    print("FAIL: " + msg)
    for path in logs:
        try:
            with open(path, errors="replace") as f:
                print("---- %s (last lines)\n%s" % (os.path.basename(path),
                                                    "".join(f.readlines()[-20:])))
        except OSError:
            pass
    sys.exit(1)


def ok(msg):
    print("ok   " + msg, flush=True)


def wait_until(seconds, cond):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def rrpc_call(build, url, timeout="3", params="[1, 2]"):
    started = time.monotonic()
    p = subprocess.run([os.path.join(build, "rrpc"), "call", "--redis", url, "--timeout", timeout,
                        "calc", "add", params], capture_output=True, text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip(), time.monotonic() - started


def main():
    build = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="rrpc-memory-")
    procs = []
    server_log = os.path.join(tmp, "server.log")
    try:
        port = free_port()
        url = "redis://127.0.0.1:%d" % port
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp, "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = redis.Redis(port=port, socket_timeout=5)
        if not wait_until(10, lambda: _ping(r)):
            fail("redis-server did not start")
        with open(server_log, "wb") as out:
            server = subprocess.Popen(
                [os.path.join(build, "calc-server"), "--redis", url, "--workers", "2",
                 "--heartbeat-interval", "0.2", "--heartbeat-ttl", "1"],
                stdout=out, stderr=out)
        procs.append(server)
        logs = [server_log]
        if not wait_until(10, lambda: rrpc_call(build, url, "1")[1] == "3"):
            fail("calc-server never answered", logs)

        # Requests that take a while, so that the workers hold some of them
        # when Redis starts refusing writes.
        keys = ["rrpc:reply:" + secrets.token_hex(16) for _ in range(N_TAKEN)]
        for k in keys:
            r.rpush("calc", json.dumps({"jsonrpc": "2.0", "method": "sleep", "params": [50],
                                        "id": k}))
        time.sleep(0.12)  # the first ones are answered, others are in hand
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", str(max(1, used // 2)))
        oom_at = time.monotonic()

        # 1. A caller's clear error.
        rc, out, took = rrpc_call(build, url, "5")
        if rc == 0 or "OOM" not in out or took > 1.5:
            fail("a call under maxmemory: exit %d after %.2f s: %s" % (rc, took, out), logs)
        ok("a call while Redis is out of memory fails at once (%.2f s, exit %d): %s"
           % (took, rc, out))

        # 2. Every request taken is answered or reported lost; the rest waits.
        def settled():
            return r.llen("calc") == 0 or time.monotonic() - oom_at > 3
        wait_until(5, settled)
        time.sleep(0.5)
        if server.poll() is not None:
            fail("calc-server exited under memory pressure: %s" % server.returncode, logs)
        answered = sum(1 for k in keys if r.llen(k) > 0)
        queued = r.llen("calc")
        with open(server_log, errors="replace") as f:
            text = f.read()
        # One "LOST dead letter" line per request whose reply and dead
        # letter Redis refused (the line shows the start of the dead
        # letter, not always the request's id: counted, not matched).
        reported = text.count("LOST dead letter")
        dead = r.llen("calc:dead")  # dead letters Redis still took
        if answered + reported + dead + queued != N_TAKEN:
            print("  unanswered: %s" % [i for i, k in enumerate(keys) if r.llen(k) == 0][:50])
            for line in text.splitlines():
                if "LOST" not in line and "refused a command" not in line:
                    print("  log: " + line[:200])
            fail("requests unaccounted for: %d answered + %d reported lost + %d dead letters "
                 "+ %d queued != %d" % (answered, reported, dead, queued, N_TAKEN), logs)
        ok("%d requests: %d answered, %d dead letters, %d taken during OOM and reported lost "
           "in the log (reply and dead letter refused), %d still queued; calc-server still runs"
           % (N_TAKEN, answered, dead, reported, queued))

        # 3. Memory frees: service resumes.
        r.config_set("maxmemory", "0")
        freed_at = time.monotonic()
        if not wait_until(15, lambda: rrpc_call(build, url, "2")[1] == "3"):
            fail("service did not resume after CONFIG SET maxmemory 0: %s"
                 % (rrpc_call(build, url, "2"),), logs)
        ok("service resumed %.2f s after CONFIG SET maxmemory 0" % (time.monotonic() - freed_at))
        if not wait_until(10, lambda: r.llen("calc") == 0):
            fail("requests still queued after memory freed", logs)
        late = sum(1 for k in keys if r.llen(k) > 0) - answered
        ok("the %d queued requests were taken after memory freed (%d more answered, "
           "the rest expired with their deadline)" % (queued, late))
        server.send_signal(signal.SIGTERM)
        if server.wait(10) != 0:
            fail("calc-server did not stop cleanly", logs)
        ok("calc-server stopped cleanly")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _ping(r):
    try:
        return r.ping()
    except redis.exceptions.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
