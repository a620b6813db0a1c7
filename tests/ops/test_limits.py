#!/usr/bin/env python3
"""test_limits.py -- rate limits and concurrency caps against a real Redis
(docs/PROTOCOL.md section 9, "Limits"), with calc-server processes.

Each case starts its own calc-servers with limit flags (or sets the limits
with `rrpc limits`) and pushes requests straight onto the list, reading the
answers from reply keys, so what is measured is the service and not a
client.  Two processes share every limit: the counters live in Redis.

Usage (under tests/harness/with-redis.sh): test_limits.py BUILD_DIR
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import redis

BUILD = os.path.abspath(sys.argv[1])
SERVER = os.path.join(BUILD, "calc-server")
RRPC = os.path.join(BUILD, "rrpc")
URL = os.environ["REDIS_URL"]
SOCK = os.environ.get("RRPC_TEST_REDIS_SOCK")
r = redis.Redis(unix_socket_path=SOCK) if SOCK else redis.Redis.from_url(URL)
failures = []
procs = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def redis_ms():
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


def start(service, *flags, workers=2):
    log = open(f"/tmp/limits-{service}-{len(procs)}-{os.getpid()}.log", "w+")
    p = subprocess.Popen(
        [SERVER, "--service", service, "--workers", str(workers), "--heartbeat-interval",
         "0.25", "--heartbeat-ttl", "1", *flags], stderr=log, stdout=log)
    p.log = log
    procs.append(p)
    deadline = time.time() + 5
    while time.time() < deadline and not r.zcard("{%s}:workers" % service):
        if p.poll() is not None:
            break
        time.sleep(0.02)
    time.sleep(0.1)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        p.wait(10)
    if sig == signal.SIGTERM:  # a graceful stop: clean exit, no sanitizer report
        p.log.seek(0)
        text = p.log.read()
        check(p.returncode == 0 and "Sanitizer" not in text and "runtime error" not in text,
              f"calc-server pid {p.pid} stopped cleanly (exit {p.returncode})")


def push(service, method, params, tenant=None):
    """Pushes a request; returns its reply key."""
    key = "rrpc:reply:" + uuid.uuid4().hex
    req = {"jsonrpc": "2.0", "method": method, "params": params, "id": key}
    if tenant is not None:
        req["tenant"] = tenant
    r.rpush(service, json.dumps(req))
    return key


def answer(key, timeout=10):
    got = r.blpop(key, timeout)
    return json.loads(got[1]) if got else None


def call(service, method, params, tenant=None, timeout=10):
    return answer(push(service, method, params, tenant), timeout)


def limited(resp, limit):
    e = (resp or {}).get("error") or {}
    d = e.get("data") or {}
    return e.get("code") == -32003 and d.get("limit") == limit and d.get("retry_after_ms", 0) > 0


# ---- rate over two processes, on Redis's clock -------------------------------
def case_rate_two_processes():
    rate = 20
    a = start("lr", "--rate", f"add={rate}/s")
    b = start("lr", "--rate", f"add={rate}/s")
    t0 = redis_ms()
    keys = []
    while redis_ms() - t0 < 2000:  # offer ~100/s for 2 s
        keys.append(push("lr", "add", [1, 2]))
        time.sleep(0.01)
    answers = [answer(k) for k in keys]
    t1 = redis_ms()
    ok = sum(1 for x in answers if x and x.get("result") == 3)
    refused = sum(1 for x in answers if limited(x, "rate"))
    bound = 1 + rate * (t1 - t0) / 1000.0  # burst 1 + rate x elapsed, Redis's clock
    check(ok + refused == len(keys), f"rate: every call answered ({ok} ran, {refused} refused)")
    check(ok <= bound, f"rate: {ok} ran in {t1 - t0} ms, at most {bound:.1f} allowed")
    check(ok >= 0.6 * rate * 2, f"rate: {ok} ran, near the rate ({rate * 2} in 2 s)")
    check(a.poll() is None and b.poll() is None, "rate: both processes still serve")
    stop(a), stop(b)


# ---- concurrency over two processes; wait runs everything --------------------
def case_concurrency_wait():
    a = start("lc", "--concurrency", "sleep=2", "--over", "sleep=wait")
    b = start("lc", "--concurrency", "sleep=2", "--over", "sleep=wait")
    started = time.time()
    keys = [push("lc", "sleep", [300]) for _ in range(8)]
    peak, got = 0, {}
    while len(got) < len(keys) and time.time() - started < 15:
        peak = max(peak, r.zcard("{lc}:running:5:sleep"))
        for k in keys:
            if k not in got:
                v = r.lpop(k)
                if v:
                    got[k] = json.loads(v)
        time.sleep(0.01)
    took = time.time() - started
    check(all(v.get("result") == 300 for v in got.values()) and len(got) == 8,
          f"concurrency wait: all 8 calls ran ({len(got)} answered)")
    check(peak <= 2 and peak >= 1, f"concurrency: at most 2 running at once (peak {peak})")
    check(took >= 4 * 0.3 - 0.05, f"concurrency: 8 x 300 ms by 2 took {took:.2f} s (>= 1.2 s)")
    check(r.zcard("{lc}:waiting") == 0 and r.llen("lc") == 0, "concurrency: nothing left waiting")
    stop(a), stop(b)
    calls, errors = (int(r.hget("{lc}:mstats", f) or 0) for f in ("calls:sleep", "errors:sleep"))
    check(calls == 8 and errors == 0,
          f"concurrency: stats count each call once, when it runs ({calls} calls, {errors} errors)")


# ---- refuse, with retry_after ------------------------------------------------
def case_refuse():
    a = start("lf", "--rate", "add=1/s", "--concurrency", "sleep=1", "--rate", "*=1000/s")
    first, second = call("lf", "add", [1, 1]), call("lf", "add", [1, 1])
    check(first.get("result") == 2, "refuse: the first call runs")
    check(limited(second, "rate") and second["error"]["message"] == "Rate limited"
          and second["error"]["data"]["retry_after_ms"] <= 1000
          and second["error"]["data"]["scope"] == "add",
          f"refuse: the second is -32003 with retry_after_ms ({json.dumps(second)})")
    slow = push("lf", "sleep", [600])
    time.sleep(0.2)
    other = call("lf", "sleep", [1])
    check(limited(other, "concurrency") and other["error"]["message"] == "Too many running",
          f"refuse: a second sleep while one runs is 'Too many running' ({json.dumps(other)})")
    check(answer(slow).get("result") == 600, "refuse: the running one finishes")
    check(call("lf", "sleep", [1]).get("result") == 1, "refuse: its slot is free again")
    # "*" does not count the built-ins: health probes are never limited.
    subprocess.run([RRPC, "limits", "lf", "set", '{"*": {"rate": 0.1}}'], capture_output=True,
                   env=dict(os.environ, REDIS_URL=URL))
    time.sleep(0.6)
    pings = [call("lf", "rpc.ping", []) for _ in range(3)]
    check(all("result" in p for p in pings), "refuse: '*' does not limit rpc.ping")
    stop(a)


# ---- per-tenant -----------------------------------------------------------------
def case_tenants():
    a = start("lt", "--rate", "add=1/s", "--per-tenant", "add")
    x1, x2 = call("lt", "add", [1, 1], tenant="acme"), call("lt", "add", [1, 1], tenant="acme")
    y1 = call("lt", "add", [1, 1], tenant="globex")
    n1, n2 = call("lt", "add", [1, 1]), call("lt", "add", [1, 1])
    check(x1.get("result") == 2 and limited(x2, "rate"), "tenant: acme's second call is refused")
    check(y1.get("result") == 2, "tenant: globex has a bucket of its own")
    check(n1.get("result") == 2 and limited(n2, "rate"),
          "tenant: calls without a tenant share one bucket")
    bad = call("lt", "add", [1, 1], tenant=5)
    check(bad.get("error", {}).get("code") == -32600
          and bad["error"].get("data", {}).get("member") == "tenant",
          f"tenant: a number is -32600 with data.member 'tenant' ({json.dumps(bad)})")
    bad = call("lt", "add", [1, 1], tenant="x" * 129)
    check(bad.get("error", {}).get("code") == -32600, "tenant: 129 bytes is -32600")
    out = subprocess.run([RRPC, "call", "--tenant", "acme", "lt", "add", "[2, 2]"],
                         capture_output=True, text=True, env=dict(os.environ, REDIS_URL=URL))
    check(out.returncode == 1 and "-32003" in out.stderr,
          f"tenant: rrpc call --tenant acme counts as acme ({out.returncode} {out.stderr.strip()})")
    out = subprocess.run([RRPC, "call", "--tenant", "", "lt", "add", "[2, 2]"],
                         capture_output=True, text=True)
    check(out.returncode == 2, "tenant: rrpc call --tenant '' is a usage error")
    stop(a)


# ---- a killed worker does not leak its slot -----------------------------------
def case_killed_worker():
    a = start("lk", "--concurrency", "sleep=1")
    slow = push("lk", "sleep", [20000])
    deadline = time.time() + 5
    while r.zcard("{lk}:running:5:sleep") == 0 and time.time() < deadline:
        time.sleep(0.02)
    stop(a, signal.SIGKILL)
    b = start("lk", "--concurrency", "sleep=1")
    refused = call("lk", "sleep", [1])
    check(limited(refused, "concurrency"), "killed: its slot is held at first (lease not expired)")
    t0, ran = time.time(), None
    while time.time() - t0 < 5:
        ran = call("lk", "sleep", [1])
        if ran.get("result") == 1:
            break
        time.sleep(0.1)
    check(ran.get("result") == 1, f"killed: the slot came back after {time.time() - t0:.1f} s")
    stop(b)


# ---- reliable mode: waiting requests survive a killed worker ------------------
def case_reliable_wait():
    flags = ["--reliable", "--concurrency", "sleep=1", "--over", "sleep=wait"]
    a = start("lw", *flags)
    keys = [push("lw", "sleep", [300]) for _ in range(4)]
    time.sleep(0.15)
    waiting = r.zcard("{lw}:waiting")
    stop(a, signal.SIGKILL)
    b = start("lw", *flags)
    got = [answer(k, 15) for k in keys]
    check(waiting >= 1, f"reliable: requests waited in {{lw}}:waiting ({waiting})")
    check(all(g and g.get("result") == 300 for g in got),
          f"reliable: all 4 answered after the worker died ({sum(1 for g in got if g)})")
    stop(b)


# ---- bad inputs ------------------------------------------------------------------
def case_bad_inputs():
    def refused(args, status, pattern):
        out = subprocess.run([SERVER, "--service", "lb", *args], capture_output=True, text=True,
                             timeout=10)
        check(out.returncode == status and pattern in out.stderr,
              f"calc-server {' '.join(args)}: exit {out.returncode} ({out.stderr.strip()[:90]})")
    refused(["--rate", "add=0/s"], 2, "N > 0")
    refused(["--rate", "add=-3"], 2, "N > 0")
    refused(["--rate", "add"], 2, "--rate")
    refused(["--concurrency", "sleep=0"], 2, "--concurrency")
    refused(["--over", "add=later"], 2, "--over")
    refused(["--rate", "nosuch=5/s"], 1, "no method \"nosuch\"")
    refused(["--over", "add=wait"], 1, "neither a rate nor a concurrency")
    refused(["--rate", "add=5/s", "--no-heartbeat"], 1, "heartbeat")

    a = start("lb", "--rate", "add=1/s")
    env = dict(os.environ, REDIS_URL=URL)
    out = subprocess.run([RRPC, "limits", "lb", "set", '{"add": {"rate": 0}}'],
                         capture_output=True, text=True, env=env)
    check(out.returncode != 0 and "rate" in out.stderr, "rrpc limits: a rate of 0 is refused")
    out = subprocess.run([RRPC, "limits", "nobody", "set", '{"add": {"rate": 1}}'],
                         capture_output=True, text=True, env=env)
    check(out.returncode != 0 and "not registered" in out.stderr,
          "rrpc limits: an unregistered service is refused")
    out = subprocess.run([RRPC, "limits", "lb", "set", '{"nosuch": {"rate": 1}}'],
                         capture_output=True, text=True, env=env)
    check(out.returncode == 0 and "no live worker serves" in out.stderr,
          "rrpc limits: an unknown method is set, with a warning")
    # A change applies without a restart, within a couple of seconds.
    subprocess.run([RRPC, "limits", "lb", "set", '{"add": {"rate": 1}}'], env=env,
                   capture_output=True)
    time.sleep(0.6)
    call("lb", "add", [1, 1])
    check(limited(call("lb", "add", [1, 1]), "rate"), "rrpc limits set: in force at once")
    subprocess.run([RRPC, "limits", "lb", "clear"], env=env, capture_output=True)
    time.sleep(0.6)
    check(all(call("lb", "add", [1, 1]).get("result") == 2 for _ in range(5)),
          "rrpc limits clear: no limit any more")
    # A field that does not parse: workers keep the last good limits.
    subprocess.run([RRPC, "limits", "lb", "set", '{"add": {"rate": 1}}'], env=env,
                   capture_output=True)
    time.sleep(0.6)
    r.hset("{lb}:config", "limits", "{not json")
    time.sleep(0.6)
    call("lb", "add", [1, 1])
    check(limited(call("lb", "add", [1, 1]), "rate"), "bad field: the last good limits stay")
    info = subprocess.run([RRPC, "info", "--json", "lb"], capture_output=True, text=True, env=env)
    doc = json.loads(info.stdout)
    check("limits_error" in doc and doc["limits"] == "{not json",
          "bad field: rrpc info shows the error")
    a.log.seek(0)
    check("the limits field is refused" in a.log.read(), "bad field: the worker logs it")
    stop(a)


# ---- a rate above 1000/s: Redis's microseconds count -------------------------
def case_high_rate():
    a = start("lh", "--rate", "add=1000000/s")
    keys = [push("lh", "add", [1, 2]) for _ in range(200)]
    got = [answer(k) for k in keys]
    ran = sum(1 for g in got if g and g.get("result") == 3)
    check(ran == 200, f"high rate: 200 quick calls at 1000000/s all ran ({ran})")
    stop(a)


# ---- no limits: the plain path sends nothing more ------------------------------
def case_no_limits_no_cost():
    a = start("ln")
    call("ln", "add", [1, 1])
    before = r.info("commandstats")
    for _ in range(50):
        call("ln", "add", [1, 1])
    after = r.info("commandstats")
    extra = [c for c in ("cmdstat_eval", "cmdstat_hget", "cmdstat_zadd", "cmdstat_get")
             if after.get(c, {}).get("calls", 0) - before.get(c, {}).get("calls", 0) > 5]
    check(not extra, f"no limits: no per-request limit commands ({extra})")
    stop(a)


CASES = [case_rate_two_processes, case_concurrency_wait, case_refuse, case_tenants,
         case_killed_worker, case_reliable_wait, case_bad_inputs, case_high_rate,
         case_no_limits_no_cost]
try:
    only = os.environ.get("LIMITS_CASE")
    for case in CASES:
        if only and only not in case.__name__:
            continue
        t = time.time()
        case()
        print(f"     ({case.__name__}: {time.time() - t:.1f} s)", flush=True)
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for p in procs:
        if failures:
            p.log.seek(0)
            sys.stderr.write(p.log.read())
        p.log.close()
        os.unlink(p.log.name)
sys.exit(1 if failures else 0)
