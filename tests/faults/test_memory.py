#!/usr/bin/env python3
"""test_memory.py -- rrpc when Redis is out of memory (maxmemory + noeviction).

Starts a private redis-server (loopback, free port) and an at-most-once
calc-server, and checks what issue 9 asks of a bad day under memory
pressure:

  1. callers get a clear error at once: rrpc call fails (not a hang, not a
     crash) with Redis's OOM message, in well under its timeout;
  2. a short shortage loses nothing: the workers take requests while Redis
     refuses writes (BLPOP frees memory); their answers, refused, are kept
     and sent again with a backoff, so once memory frees every one of them
     is answered, exactly once, and nothing is counted lost;
  3. a shortage longer than the bound (the reply TTL, 3 s here) is
     accounted for exactly: every request taken is either answered or
     logged "LOST answer to id <its whole id>" -- one line per request, no
     request both or neither -- and <service>:stats "lost" (sent once Redis
     takes writes again) counts the LOST lines; the worker keeps running;
  4. service resumes when memory frees (CONFIG SET maxmemory 0): calls are
     answered again within a few heartbeats, by the same worker process.
(The reliable-mode side of memory pressure, where a taken request must
never be lost, is tested with reliable mode itself: tests/integration.)

Usage: test_memory.py BUILD_DIR
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

N_TAKEN = 40    # requests the workers take while Redis is out of memory
REPLY_TTL = 3   # calc-server --reply-ttl: also how long a refused answer is retried
LOST_RE = re.compile(r"LOST answer to id (\"[^\"]*\")")


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
                 "--heartbeat-interval", "0.2", "--heartbeat-ttl", "1",
                 "--reply-ttl", str(REPLY_TTL)],
                stdout=out, stderr=out)
        procs.append(server)
        logs = [server_log]
        if not wait_until(10, lambda: rrpc_call(build, url, "1")[1] == "3"):
            fail("calc-server never answered", logs)

        # 1. A caller's clear error.
        r.config_set("maxmemory", "1")
        rc, out, took = rrpc_call(build, url, "5")
        r.config_set("maxmemory", "0")
        if rc == 0 or "OOM" not in out or took > 1.5:
            fail("a call under maxmemory: exit %d after %.2f s: %s" % (rc, took, out), logs)
        ok("a call while Redis is out of memory fails at once (%.2f s, exit %d): %s"
           % (took, rc, out))

        # 2. A short shortage (1 s, under the bound): every answer arrives.
        seen, keys, hold_s = shortage(r, 1.0, "short")
        answered = [k for k in keys if seen.get(k)]
        twice = [k for k in keys if seen.get(k, 0) > 1]
        text = read(server_log)
        lost_ids = [json.loads(m) for m in LOST_RE.findall(text)]
        if len(answered) != N_TAKEN or twice or lost_ids:
            fail("short shortage: %d of %d answered, %d twice, %d logged lost"
                 % (len(answered), N_TAKEN, len(twice), len(lost_ids)), logs)
        if "Redis refused answers for memory" not in text:
            fail("the workers never met the shortage (no refusal logged)", logs)
        ok("a %.1f s shortage: all %d requests taken during it answered once memory freed, "
           "none twice, none lost" % (hold_s, N_TAKEN))

        # 3. A long shortage (past the bound): answered or logged lost, exactly.
        offset = len(text)
        seen, keys, hold_s = shortage(r, REPLY_TTL + 3.5, "long")
        text = read(server_log)[offset:]
        lost_ids = [json.loads(m) for m in LOST_RE.findall(text)]
        answered = set(k for k in keys if seen.get(k))
        twice = [k for k in keys if seen.get(k, 0) > 1]
        if server.poll() is not None:
            fail("calc-server exited under memory pressure: %s" % server.returncode, logs)
        strangers = set(lost_ids) - set(keys)
        if (len(lost_ids) != len(set(lost_ids)) or strangers or twice
                or answered & set(lost_ids) or answered | set(lost_ids) != set(keys)):
            print("  unaccounted: %s" % sorted(set(keys) - answered - set(lost_ids))[:10])
            print("  answered and lost: %s" % sorted(answered & set(lost_ids))[:10])
            fail("long shortage: %d answered + %d logged lost (%d distinct, %d unknown ids, "
                 "%d answered twice) != %d taken"
                 % (len(answered), len(lost_ids), len(set(lost_ids)), len(strangers),
                    len(twice), N_TAKEN), logs)
        if not lost_ids:
            fail("long shortage: nothing was lost -- the shortage did not outlast the bound",
                 logs)
        if not wait_until(5, lambda: int(r.hget("calc:stats", "lost") or 0) == len(lost_ids)):
            fail("calc:stats lost = %s, %d LOST lines" % (r.hget("calc:stats", "lost"),
                                                          len(lost_ids)), logs)
        ok("a %.1f s shortage (bound %d s): %d requests taken during it, %d answered, %d logged "
           "'LOST answer to id <id>' with their own ids, none both or neither; calc:stats lost "
           "= %d" % (hold_s, REPLY_TTL, N_TAKEN, len(answered), len(lost_ids), len(lost_ids)))

        # 3. Memory frees: service resumes.
        r.config_set("maxmemory", "0")
        freed_at = time.monotonic()
        if not wait_until(15, lambda: rrpc_call(build, url, "2")[1] == "3"):
            fail("service did not resume after CONFIG SET maxmemory 0: %s"
                 % (rrpc_call(build, url, "2"),), logs)
        ok("service resumed %.2f s after CONFIG SET maxmemory 0" % (time.monotonic() - freed_at))
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


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def shortage(r, seconds, tag):
    """Queues N_TAKEN requests of 50 ms, makes Redis refuse writes while the
    workers hold them (maxmemory below what it uses) for SECONDS, frees it,
    and watches every reply key until all are answered or 2 s after the
    bound would have dropped what was left.  Returns {key: responses
    seen}, the keys (each request's id is its reply key) and how long
    writes were refused."""
    keys = ["rrpc:reply:%s-%s" % (tag, secrets.token_hex(12)) for _ in range(N_TAKEN)]
    for k in keys:
        r.rpush("calc", json.dumps({"jsonrpc": "2.0", "method": "sleep", "params": [50],
                                    "id": k, "reply_to": k}))
    time.sleep(0.06)  # the first ones are answered, the others are in hand
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(max(1, used // 2)))
    started = time.monotonic()
    seen = {}

    def look():
        for k in keys:
            n = r.llen(k)  # a reply list expires REPLY_TTL s after its push
            if n:
                seen[k] = max(seen.get(k, 0), n)
                if n > 1 or json.loads(r.lindex(k, 0))["id"] != k:
                    seen[k] = 2  # twice, or someone else's answer
    while time.monotonic() - started < seconds:
        look()
        time.sleep(0.1)
    r.config_set("maxmemory", "0")
    held = time.monotonic() - started
    wait_until(4, lambda: look() or len(seen) == N_TAKEN)
    look()
    return seen, keys, held


def _ping(r):
    try:
        return r.ping()
    except redis.exceptions.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
