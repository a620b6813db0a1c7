#!/usr/bin/env python3
"""chaos.py -- the chaos test of rrpc's delivery modes (issues 4 and 9).

Several callers (chaos_caller) call a service (chaos_worker processes) under
load while this script SIGKILLs a random worker process every 1-2 s (and
starts a replacement) and SIGKILLs Redis every 5-8 s (restarting it on the
same port and directory 0.3-1 s later).  Besides kills it cuts one worker
off from Redis every 3-5 s for 1.5-4 s (--cut-seconds), alternately
silently (a blackhole: its packets go nowhere, it sees nothing until its
own timeouts) and with a TCP reset, then heals the link; and it stalls
Redis with SIGSTOP every 6-9 s for --stall-seconds (default 2.5) before
SIGCONT.  Each worker reaches Redis through a fault-injecting TCP proxy of
its own (faultproxy.py, which says why a proxy and not namespaces); the
callers connect directly.  A second group of callers (--short-callers) uses
a call timeout (--short-timeout, default 1.5 s) shorter than the stall, so
that some calls outlive their deadline in Redis: they must return at their
deadline, not later, and never run twice.  Redis runs with
`--appendonly yes --appendfsync always`, so a SIGKILLed Redis keeps
everything it acknowledged: what the test sees lost was lost by rrpc, not by
Redis.

Every call has a unique id, and the worker's `effect` method counts each time
it really ran in the hash chaos:effects (atomically with its answer in
reliable mode).  At the end the caller-side outcomes are matched with those
counts:

  late        calls that returned more than timeout + 1 s after they started
              (answered, or failed, after the caller's deadline)
  wrong       calls that returned a result other than value * 2
  duplicated  calls whose effect happened more than once
  lost        reliable: calls that did not return the right answer, plus
              answered calls whose effect never happened; at-most-once:
              answered calls whose effect never happened (requests lost with
              a killed worker are timeouts there, which that mode allows)
  explained   failed calls (ETIMEDOUT, ECONNECT, EUNAVAILABLE, the worker's
              -32000 "Deadline exceeded") that lived
              through a fault:
              a kill, a Redis restart, a cut or a stall, plus a grace of the
              heartbeat TTL + 1 s after it; any other is unexplained.  Each
              timeout is also traced to where its request went (its handler
              never started, started and was killed, or ran and the answer
              came too late or was lost with a link).  Short callers'
              explained failures are allowed in both modes (their deadline
              is shorter than a stall); main callers' only in at-most-once,
              except EUNAVAILABLE: fail fast refuses a call before pushing
              it, so nothing is taken or lost (it follows a stall, during
              which Redis's clock ran on while no heartbeat could be renewed).

It prints one JSON object per mode and a markdown table, and exits non-zero
when (reliable) lost, duplicated, late or wrong > 0, or no kill or restart
happened; (at-most-once) duplicated, late or wrong > 0; (both) a timeout
that no fault explains, no cut or stall happened (unless turned off), a process
crashed, a worker did not stop cleanly, requests were left undrained or a
caller hung.  Besides the figures, the JSON has errors by status, latencies,
handler reruns (starts of `effect` beyond the first per call, from the
workers' --trace logs) and dead letters by reason.

Two more modes run reliable mode differently: reliable-sharded (2 shards
on one Redis, everything else as above) and reliable-cluster (ClusterRun: a
Redis Cluster of 3 masters with a replica each; worker kills, and instead of
Redis restarts, cuts and stalls a failover of the service's master every
6-9 s, alternately CLUSTER FAILOVER and SIGKILL of the master.  What a
killed master had acknowledged but not yet replicated may be lost: calls
that lived through such a crash count their losses and duplicates apart, as
window_lost and window_duplicated, the measured asynchronous-replication
window).

Three modes run reliable mode over AMQP (AmqpRun, docs/RELIABILITY.md
section 7) on a private RabbitMQ node: amqp-reliable-kill (worker kills),
amqp-reliable-restart (worker kills and broker restarts) and
amqp-reliable-kill9 (worker kills, and the node killed with kill -9 and
started again on its data); `--mode amqp` runs the three.  When $RRPC_TEST_AMQP_URL is not set this script runs them in a
child of tests/harness/with-rabbitmq.sh, which starts the node.

Two modes run reliable mode with a worker that adds no effect, so that every
commit is a batch of plain answers, the grouped layout of the commit script
(src/redis/reliable.c) that a busy service without effects runs:
reliable-plain (one Redis) and reliable-plain-sharded (2 shards), under the
same faults as reliable; `--mode plain` runs both.  There the workers log
"effect <call id> <reply key>" (--effects-log) when a handler has done its
work, and keep reply keys an hour (--reply-ttl); Redis never rewrites its
AOF there, so the AOF holds every answer pushed (aof_answers).  At the end:
  lost            as reliable, an effect being a logged handler run
  effect_reruns   calls whose handler ran to its end more than once (a
                  worker killed after its handler but before its commit:
                  at least once allows it; what must happen once goes in
                  the effects API, committed with the answer)
  duplicated      calls answered anew more than once (two commits that each
                  remembered and pushed an answer: the dedup failed), or
                  with more answers left unread in their reply key than
                  were sent again from memory (a caller takes one per call)
  answered_again  calls with an answer sent again from the dedup memory: a
                  copy delivered again (the caller's resend after a broken
                  link, or a redelivery) is answered from it, by design
--mode all runs all nine.

Usage: chaos.py --bin-dir DIR [--mode reliable|at-most-once|both|reliable-sharded|
                               reliable-cluster|reliable-plain|
                               reliable-plain-sharded|plain|amqp-reliable-kill|
                               amqp-reliable-restart|amqp-reliable-kill9|amqp|all|
                               MODE,MODE...]
                [--seconds S] [--callers N] [--timeout T] [--seed N]
                [--filler-keys N] [--keep] [--verbose]   (--help for all)
Every process it starts dies with it (PR_SET_PDEATHSIG, signals, atexit) and
its temp dir is removed.
"""
import argparse
import atexit
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis
import redis.cluster

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultproxy import FaultProxy  # noqa: E402

SERVICE = "chaos"
EFFECTS_KEY = "chaos:effects"
STATUS_NAMES = {0: "OK", -1: "EINVAL", -2: "ENOMEM", -3: "EURL", -4: "ECONNECT",
                -5: "EAUTH", -6: "EREDIS", -7: "ETIMEDOUT", -8: "EPROTO",
                -9: "EREMOTE", -10: "ECANCELED", -11: "ETOOBIG", -13: "ESTATE",
                -14: "ESYS", -15: "EUNAVAILABLE", -16: "EOVERLOADED",
                -17: "ENOTSUP"}
LATE_MARGIN_S = 1.0

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in each child before exec: SIGKILL it if this script dies, even
    by SIGKILL, so no worker or Redis outlives a test run."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def log(msg):
    print("chaos: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Every process this script started, so that all of them can be killed
    whatever way the script ends."""

    def __init__(self):
        self.live = []

    def start(self, argv, log_path):
        with open(log_path, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 preexec_fn=_die_with_parent)
        self.live.append(p)
        return p

    @staticmethod
    def kill(p):
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def kill_all(self):
        for p in self.live:
            try:
                self.kill(p)
            except OSError:
                pass
        self.live = []


class Run:
    """One chaos run of one delivery mode in its own temp dir and Redis."""

    def __init__(self, args, mode, procs, tmp):
        self.args, self.mode, self.procs, self.tmp = args, mode, procs, tmp
        self.reliable = mode in ("reliable", "reliable-sharded", "reliable-cluster") + PLAIN_MODES
        # Plain: the worker adds no effect, so every commit is a batch of
        # plain answers (the grouped layout); handler runs are counted from
        # the workers' "effect" lines instead of chaos:effects.
        self.plain = mode in PLAIN_MODES
        self.shards = 2 if mode in ("reliable-sharded", "reliable-plain-sharded") else 1
        self.effects_key = EFFECTS_KEY
        self.timeout = args.timeout or (15.0 if self.reliable else 5.0)
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d" % self.port
        self.redis_proc = None
        self.workers = []  # [Popen, log path, FaultProxy]
        self.worker_seq = 0
        self.kills = self.restarts = self.stop_failures = 0
        self.cuts = {"blackhole": 0, "reset": 0}
        self.stalls = 0
        self.cut = None  # [worker, mode, heal at, started]
        self.stall = None  # [SIGCONT at, started]
        self.faults = []  # (kind, start, end) on the monotonic clock
        self.worker_exits = []  # exits nobody asked for: (returncode, last log line)
        self.rng = random.Random(args.seed)

    # --- Redis -----------------------------------------------------------
    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           socket_connect_timeout=2)

    def dead_client(self):
        """Where <service>:dead lives (on a Cluster, in its own slot)."""
        return self.client()

    def in_window(self, began, ended):
        """Whether a call lived through what may take acknowledged writes
        with it (a Cluster master killed before it replicated them)."""
        return False

    def fill(self):
        """Gives Redis FILLER_KEYS keys of 100 bytes, so that a restart spends a
        while loading its AOF (answering LOADING), as a Redis holding real data
        does."""
        n = self.args.filler_keys
        if n > 0:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=120)
            client.eval("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'chaos-filler:' .. i,"
                        " string.rep('x', 100)) end", 0, n)
            client.bgrewriteaof()
            while client.info("persistence")["aof_rewrite_in_progress"]:
                time.sleep(0.1)

    def start_redis(self):
        self.redis_proc = self.procs.start(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.tmp, "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--loglevel", "warning",
             "--logfile", os.path.join(self.tmp, "redis.log")] +
            # Plain modes read every answer pushed from the AOF: keep it whole.
            (["--auto-aof-rewrite-percentage", "0"] if self.plain else []),
            os.path.join(self.tmp, "redis.out"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.RedisError:
                pass
            if self.redis_proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start; see " + self.tmp)

    def kill_redis(self):
        Processes.kill(self.redis_proc)
        self.redis_proc = None

    def start_stall(self):
        self.redis_proc.send_signal(signal.SIGSTOP)
        now = time.monotonic()
        self.stall = [now + self.args.stall_seconds, now]

    def end_stall(self):
        self.redis_proc.send_signal(signal.SIGCONT)
        self.faults.append(("stall", self.stall[1], time.monotonic()))
        self.stalls += 1
        self.stall = None

    # --- partitions ------------------------------------------------------
    def start_cut(self):
        """Cuts a random worker off from Redis: every link of its process."""
        mode = "blackhole" if sum(self.cuts.values()) % 2 == 0 else "reset"
        victim = self.rng.choice(self.workers)
        victim[2].set_mode(mode)
        now = time.monotonic()
        self.cut = [victim, mode, now + self.rng.uniform(*self.args.cut_seconds), now]

    def end_cut(self):
        victim, mode, _, started = self.cut
        victim[2].set_mode("pass")
        self.faults.append((mode, started, time.monotonic()))
        self.cuts[mode] += 1
        self.cut = None

    # --- workers ---------------------------------------------------------
    def start_worker(self):
        self.worker_seq += 1
        path = os.path.join(self.tmp, "worker-%d.log" % self.worker_seq)
        proxy = FaultProxy(self.port)
        argv = [os.path.join(self.args.bin_dir, "chaos_worker"), "--redis",
                "redis://127.0.0.1:%d" % proxy.port,
                "--service", SERVICE, "--workers", str(self.args.worker_threads), "--trace",
                "--heartbeat-ttl", str(self.args.heartbeat_ttl)]
        if self.reliable:
            argv.append("--reliable")
        if self.shards > 1:
            argv += ["--shards", str(self.shards)]
        if self.plain:
            # Reply keys outlive the run, so that an answer pushed twice is
            # still there to be counted at the end.
            argv += ["--effects-log", "--reply-ttl", str(PLAIN_REPLY_TTL_S)]
        self.workers.append([self.procs.start(argv, path), path, proxy])

    def forget_worker(self, w):
        if self.cut is not None and self.cut[0] is w:
            self.end_cut()
        w[2].close()
        self.workers.remove(w)

    def kill_random_worker(self):
        victim = self.rng.choice(self.workers)
        Processes.kill(victim[0])
        self.faults.append(("kill", time.monotonic(), time.monotonic()))
        self.forget_worker(victim)
        self.kills += 1

    def reap_workers(self):
        """Notices workers that exited on their own and replaces them (a
        worker started while Redis is down waits for it; any exit is one
        nobody asked for, a signal is a crash)."""
        for w in list(self.workers):
            rc = w[0].poll()
            if rc is None:
                continue
            self.forget_worker(w)
            self.worker_exits.append((rc, last_line(w[1])))
            if self.redis_proc is not None:
                self.start_worker()

    def fill_workers(self):
        while len(self.workers) < self.args.workers:
            self.start_worker()

    # --- the run ---------------------------------------------------------
    def chaos(self, until):
        rng = self.rng
        now = time.monotonic()
        next_kill = now + rng.uniform(1, 2)
        next_redis_kill = now + rng.uniform(5, 8)
        next_cut = now + rng.uniform(0.5, 1.5) if self.args.cut_every[1] > 0 else until
        # The first stall comes early, so that a short run has a stall and
        # a Redis restart (never both at once: a kill waits for SIGCONT).
        next_stall = now + rng.uniform(1.5, 2.5) if self.args.stall_every[1] > 0 else until
        restart_at = None
        redis_killed_at = None
        while time.monotonic() < until:
            now = time.monotonic()
            if self.cut is not None and now >= self.cut[2]:
                self.end_cut()
                next_cut = now + rng.uniform(*self.args.cut_every)
            if self.cut is None and now >= next_cut and self.workers:
                self.start_cut()
            if self.stall is not None and now >= self.stall[0]:
                self.end_stall()
                next_stall = now + rng.uniform(*self.args.stall_every)
                next_redis_kill = max(next_redis_kill, now + 1)
            if (self.stall is None and restart_at is None and self.redis_proc is not None
                    and now >= next_stall):
                self.start_stall()
            if now >= next_kill:
                self.kill_random_worker()
                if self.redis_proc is not None:
                    self.start_worker()  # else after the restart
                next_kill = now + rng.uniform(1, 2)
            if restart_at is None and self.stall is None and now >= next_redis_kill:
                self.kill_redis()
                redis_killed_at = now
                restart_at = now + rng.uniform(0.3, 1.0)
            if restart_at is not None and now >= restart_at:
                self.start_redis()
                self.faults.append(("restart", redis_killed_at, time.monotonic()))
                self.restarts += 1
                restart_at = None
                next_redis_kill = time.monotonic() + rng.uniform(5, 8)
                self.fill_workers()
            self.reap_workers()
            time.sleep(0.02)
        if self.cut is not None:
            self.end_cut()
        if self.stall is not None:
            self.end_stall()
        if self.redis_proc is None:
            self.start_redis()
            self.faults.append(("restart", redis_killed_at, time.monotonic()))
            self.restarts += 1
        self.reap_workers()
        self.fill_workers()

    def drain(self):
        """Waits (bounded) until no request is left queued or in flight, so
        that every effect that is going to happen has happened."""
        deadline = time.monotonic() + self.args.drain_seconds
        while time.monotonic() < deadline:
            self.reap_workers()
            try:
                if pending_requests(self.client()) == 0:
                    return True
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        try:
            for line in pending_detail(self.client()):
                log("undrained: " + line)
        except redis.exceptions.RedisError as e:
            log("undrained: cannot tell what (%s)" % e)
        return False

    def stop_workers(self):
        for w in self.workers:
            if w[0].poll() is None:
                w[0].send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                rc = w[0].wait(timeout=10)
            except subprocess.TimeoutExpired:
                Processes.kill(w[0])
                rc = "hung at stop"
            if rc != 0:  # a graceful stop must succeed (and be leak-free under ASan)
                self.worker_exits.append((rc, last_line(w[1])))
                self.stop_failures += 1
            w[2].close()
        self.workers = []

    def execute(self):
        self.start_redis()
        self.fill()
        self.fill_workers()
        groups = [("main", self.args.callers, self.timeout)]
        if self.args.short_callers > 0:
            groups.append(("short", self.args.short_callers, self.args.short_timeout))
        callers = []  # (group, timeout, Popen, out path, log path)
        started = time.monotonic()
        for group, threads, timeout in groups:
            out_path = os.path.join(self.tmp, "calls-%s.txt" % group)
            argv = [os.path.join(self.args.bin_dir, "chaos_caller"), "--redis", self.url,
                    "--service", SERVICE, "--run", "%s-%s" % (self.mode, group),
                    "--threads", str(threads), "--seconds", str(self.args.seconds),
                    "--timeout", str(timeout), "--work-ms", str(self.args.work_ms),
                    "--out", out_path]
            if self.reliable:
                argv.append("--reliable")
            caller_log = os.path.join(self.tmp, "caller-%s.log" % group)
            callers.append((group, timeout, self.procs.start(argv, caller_log), out_path,
                            caller_log))
        self.chaos(started + self.args.seconds)
        caller_hung, caller_rc = False, 0
        for group, timeout, caller, _, _ in callers:
            try:
                rc = caller.wait(timeout=timeout + LATE_MARGIN_S + 10)
            except subprocess.TimeoutExpired:
                Processes.kill(caller)
                caller_hung, rc = True, None
            caller_rc = caller_rc or rc
        drained = self.drain()
        self.stop_workers()
        client = self.client()
        if self.plain:
            effects, reply_keys = effect_lines(self.tmp)
            extra = extra_answers(client, reply_keys)
            pushes = aof_answers(os.path.join(self.tmp, "appendonlydir"), reply_keys)
        else:
            effects = {k.decode(): int(v) for k, v in client.hgetall(self.effects_key).items()}
            extra = pushes = None
        dead_client = self.dead_client()
        dead = dead_client.llen(SERVICE + ":dead")
        dead_reasons, dead_calls = {}, set()
        for text in dead_client.lrange(SERVICE + ":dead", 0, -1):
            letter = json.loads(text)
            reason = letter.get("reason", "?")[:80]
            dead_reasons[reason] = dead_reasons.get(reason, 0) + 1
            dead_calls.add(call_id_of(letter.get("message")))
        starts = handler_starts(self.tmp)
        calls, report = [], None
        for group, timeout, _, out_path, _ in callers:
            group_calls = read_calls(out_path)
            calls += group_calls
            r = analyse(self, group_calls, effects, timeout, starts, extra, pushes)
            if report is None:
                report = r
            else:
                report[group] = r
        report["handler_reruns"] = sum(1 for n in starts.values() if n > 1)
        seen = {c[0] for c in calls}
        report["unmatched_effects"] = sum(1 for k in effects if k not in seen)
        report.update(cuts_blackhole=self.cuts["blackhole"], cuts_reset=self.cuts["reset"],
                      stalls=self.stalls, stall_seconds=self.args.stall_seconds)
        # Dead letters whose call still returned the right answer.
        report["dead_but_answered"] = sum(1 for c in calls if c[0] in dead_calls and c[4])
        report.update(dead_letters=dead, dead_reasons=dead_reasons, drained=drained, caller_hung=caller_hung,
                      caller_exit=caller_rc, worker_exits=len(self.worker_exits),
                      worker_crashes=sum(1 for rc, _ in self.worker_exits
                                         if isinstance(rc, int) and rc < 0),
                      worker_stop_failures=self.stop_failures,
                      seed=self.args.seed)
        problems = judge(self, report)
        if problems or self.args.verbose:
            show_logs(self, [c[4] for c in callers])
        return report, problems

class ClusterRun(Run):
    """Reliable mode on a Redis Cluster of 3 masters with a replica each
    (appendonly, fsync always, cluster-node-timeout 1 s).  Worker kills as
    in Run; instead of Redis restarts, cuts and stalls, a failover of the
    master that owns the service's slot every 6-9 s: alternately a manual
    one (CLUSTER FAILOVER on its replica: the replica catches up first, so
    nothing acknowledged may be lost) and a crash (SIGKILL of the master;
    its replica takes over after the node timeout, and whatever the master
    had acknowledged but not yet sent to it is gone -- the asynchronous-
    replication window, measured as window_lost and window_duplicated).
    The killed node is restarted and rejoins as a replica.  The effects
    hash is {chaos}:effects, in the service's slot (a reliable commit on a
    Cluster applies effects only there)."""

    def __init__(self, args, mode, procs, tmp):
        args = argparse.Namespace(**vars(args))
        args.cut_every = args.stall_every = (0.0, 0.0)  # faultproxy speaks to one node only
        args.short_callers = 0
        super().__init__(args, mode, procs, tmp)
        self.effects_key = "{%s}:effects" % SERVICE
        self.node_ports = []
        while len(self.node_ports) < 6:
            port = free_port_pair()
            if all(abs(port - p) not in (0, 10000) for p in self.node_ports):
                self.node_ports.append(port)
        self.nodes = {}  # port -> Popen
        self.port = self.node_ports[0]
        self.url = "redis+cluster://" + ",".join("127.0.0.1:%d" % p for p in self.node_ports)
        self.failovers = {"manual": 0, "crash": 0}
        self.windows = []  # (start, end) of crash failovers
        self.failover_seconds = []

    # --- nodes -----------------------------------------------------------
    def node(self, port, timeout=2):
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def start_node(self, port):
        d = os.path.join(self.tmp, "node-%d" % port)
        os.makedirs(d, exist_ok=True)
        self.nodes[port] = self.procs.start(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "1000", "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--loglevel", "warning",
             "--repl-diskless-sync-delay", "0", "--logfile", os.path.join(d, "redis.log")],
            os.path.join(d, "redis.out"))

    def live_ports(self):
        return [p for p, proc in self.nodes.items() if proc is not None and proc.poll() is None]

    def cluster_nodes(self):
        """[(port, role, master port or None, link ok)] as a live node sees them."""
        for port in self.live_ports():
            try:
                text = self.node(port).execute_command("CLUSTER", "NODES")
            except redis.exceptions.RedisError:
                continue
            if isinstance(text, bytes):
                text = text.decode()
            rows, by_id = [], {}
            for line in text.strip().splitlines():
                f = line.split()
                by_id[f[0]] = int(f[1].split("@")[0].rsplit(":", 1)[1])
                rows.append(f)
            out = []
            for f in rows:
                flags = f[2].split(",")
                role = "master" if "master" in flags else "replica"
                failed = "fail" in flags or "fail?" in flags
                out.append((by_id[f[0]], role, by_id.get(f[3]), not failed))
            return out
        return []

    def owner(self):
        """The port of the master that owns the service's slot, or None."""
        slot = None
        for port in self.live_ports():
            try:
                slot = self.node(port).execute_command("CLUSTER", "KEYSLOT", SERVICE)
                for r in self.node(port).execute_command("CLUSTER", "SLOTS"):
                    if r[0] <= slot <= r[1]:
                        return int(r[2][1])
            except redis.exceptions.RedisError:
                continue
        return None

    def replica_of(self, master):
        for port, role, of, ok in self.cluster_nodes():
            if role == "replica" and of == master and ok and port in self.live_ports():
                try:
                    info = self.node(port).info("replication")
                except redis.exceptions.RedisError:
                    continue
                if info.get("master_link_status") == "up":
                    return port
        return None

    def healthy(self):
        try:
            return all(self.node(p).execute_command("CLUSTER", "INFO").decode().find(
                "cluster_state:ok") >= 0 for p in self.node_ports) and \
                sum(1 for _, role, _, ok in self.cluster_nodes() if role == "master" and ok) == 3
        except (redis.exceptions.RedisError, AttributeError):
            return False

    def wait_for(self, what, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if what():
                return True
            time.sleep(0.05)
        return False

    def start_redis(self):
        for port in self.node_ports:
            self.start_node(port)
        if not self.wait_for(lambda: all(self._pings(p) for p in self.node_ports), 20):
            raise RuntimeError("the cluster nodes did not start; see " + self.tmp)
        out = subprocess.run(["redis-cli", "--cluster", "create"] +
                             ["127.0.0.1:%d" % p for p in self.node_ports] +
                             ["--cluster-replicas", "1", "--cluster-yes"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if out.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: " + out.stdout.decode()[-400:])
        if not self.wait_for(lambda: self.healthy() and self.replica_of(self.owner()), 30):
            raise RuntimeError("the cluster never became healthy; see " + self.tmp)

    def _pings(self, port):
        try:
            return self.node(port).ping()
        except redis.exceptions.RedisError:
            return False

    def client(self):
        """The master of the service's slot: its list, in-flight keys and
        effects all live there."""
        return self.node(self.owner() or self.node_ports[0])

    def dead_client(self):
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.owner() or self.port,
                                          socket_timeout=5)

    def in_window(self, began, ended):
        return any(began <= t1 + self.args.heartbeat_ttl + 1.0 and ended >= t0 - 1.0
                   for t0, t1 in self.windows)

    def start_worker(self):
        self.worker_seq += 1
        path = os.path.join(self.tmp, "worker-%d.log" % self.worker_seq)
        argv = [os.path.join(self.args.bin_dir, "chaos_worker"), "--redis", self.url,
                "--service", SERVICE, "--workers", str(self.args.worker_threads), "--trace",
                "--heartbeat-ttl", str(self.args.heartbeat_ttl), "--reliable",
                "--effects-key", self.effects_key]
        self.workers.append([self.procs.start(argv, path), path, _NoProxy()])

    # --- failovers -------------------------------------------------------
    def failover(self, crash):
        """One failover of the service's master; False if it could not be
        started (no replica in sync yet)."""
        master = self.owner()
        replica = self.replica_of(master) if master else None
        if replica is None:
            return False
        t0 = time.monotonic()
        if crash:
            Processes.kill(self.nodes[master])
            self.nodes[master] = None
        else:
            try:
                self.node(replica).execute_command("CLUSTER", "FAILOVER")
            except redis.exceptions.RedisError as e:
                log("CLUSTER FAILOVER refused: %s" % e)
                return False
        took_over = self.wait_for(lambda: self.owner() == replica, 20)
        t1 = time.monotonic()
        if not took_over:
            raise RuntimeError("the replica :%d never took over from :%d" % (replica, master))
        self.failover_seconds.append(round(t1 - t0, 2))
        if crash:
            self.start_node(master)  # rejoins as a replica of the new master
            self.windows.append((t0, t1))
        self.faults.append(("failover-" + ("crash" if crash else "manual"), t0, t1))
        self.failovers["crash" if crash else "manual"] += 1
        self.restarts += 1
        return True

    def chaos(self, until):
        rng = self.rng
        now = time.monotonic()
        next_kill = now + rng.uniform(1, 2)
        next_failover = now + rng.uniform(2, 4)
        crash = False
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_kill:
                self.kill_random_worker()
                self.start_worker()
                next_kill = now + rng.uniform(1, 2)
            if now >= next_failover:
                if self.failover(crash):
                    crash = not crash
                    next_failover = time.monotonic() + rng.uniform(6, 9)
                else:
                    next_failover = now + 0.5  # the replica is still syncing
            self.reap_workers()
            time.sleep(0.02)
        self.reap_workers()
        self.fill_workers()

    def execute(self):
        report, problems = super().execute()
        report.update(failovers_manual=self.failovers["manual"],
                      failovers_crash=self.failovers["crash"],
                      failover_seconds=self.failover_seconds)
        if self.failovers["manual"] == 0 or self.failovers["crash"] == 0:
            problems.append("no failover of each kind: %d manual, %d crash" % (
                self.failovers["manual"], self.failovers["crash"]))
        return report, problems


class _NoProxy:
    """Cluster workers connect directly: nothing to cut or close."""

    def set_mode(self, mode):
        pass

    def close(self):
        pass


AMQP_MODES = ("amqp-reliable-kill", "amqp-reliable-restart", "amqp-reliable-kill9")


class AmqpRun:
    """Reliable mode over AMQP (RabbitMQ), on the private node of
    tests/harness/with-rabbitmq.sh ($RRPC_TEST_AMQP_URL, $RRPC_TEST_AMQP_CTL):
    resending callers (chaos_caller --reliable) call chaos_worker processes
    (--reliable --effects-log) while a random worker is SIGKILLed every 1-2 s
    and replaced; amqp-reliable-restart also restarts the broker
    (rabbitmqctl stop_app, 0.5-1.5 s, start_app) every 6-9 s;
    amqp-reliable-kill9 kills the node's beam.smp with SIGKILL instead (its
    pid from $RRPC_TEST_AMQP_PIDFILE), waits 0.5-1.5 s and starts it again
    on the same data ($RRPC_TEST_AMQP_START, which returns once it accepts
    connections: a crashed node takes several seconds), 6-9 s after it
    came back.

    Counted from the callers' lines and the workers' "effect" and "start"
    lines (an effect is logged when the handler has done its work):
      lost        calls that did not return the right answer, plus answered
                  calls whose effect never happened (must be 0)
      duplicated  calls whose handler ran to its end more than once: a
                  worker killed after its effect but before its ack, whose
                  message another process ran again (at least once: allowed,
                  reported); copies within one process are answered from its
                  memory
      reruns      calls whose handler started more than once (killed mid-call
                  and run again, or duplicated)"""

    def __init__(self, args, mode, procs, tmp):
        self.args, self.mode, self.procs, self.tmp = args, mode, procs, tmp
        self.url = os.environ["RRPC_TEST_AMQP_URL"]
        self.ctl = os.environ["RRPC_TEST_AMQP_CTL"]
        self.service = "chaos-" + mode
        self.rng = random.Random(args.seed)
        self.workers, self.kills, self.restarts, self.nworkers = [], 0, 0, 0
        self.timeout = args.timeout or 20

    def start_worker(self):
        self.nworkers += 1
        path = os.path.join(self.tmp, "worker-%d.log" % self.nworkers)
        argv = [os.path.join(self.args.bin_dir, "chaos_worker"), "--redis", self.url,
                "--service", self.service, "--workers", str(self.args.worker_threads),
                "--reliable", "--effects-log", "--trace"]
        self.workers.append((self.procs.start(argv, path), path))

    def wait_serving(self, path, seconds=15):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with open(path, errors="replace") as f:
                if "serving queue" in f.read():
                    return True
            time.sleep(0.1)
        return False

    def restart_broker(self):
        subprocess.run([self.ctl, "-q", "stop_app"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        time.sleep(self.rng.uniform(0.5, 1.5))
        subprocess.run([self.ctl, "-q", "start_app"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        self.restarts += 1

    def kill9_broker(self):
        with open(os.environ["RRPC_TEST_AMQP_PIDFILE"]) as f:
            pid = int(f.read().strip())
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        time.sleep(self.rng.uniform(0.5, 1.5))
        subprocess.run([os.environ["RRPC_TEST_AMQP_START"]], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        self.restarts += 1

    def chaos(self, until):
        next_kill = time.monotonic() + self.rng.uniform(1, 2)
        next_restart = time.monotonic() + self.rng.uniform(6, 9)
        kill9 = self.mode == "amqp-reliable-kill9"
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_kill:
                live = [w for w in self.workers if w[0].poll() is None]
                if live:
                    Processes.kill(self.rng.choice(live)[0])
                    self.kills += 1
                    self.start_worker()
                next_kill = now + self.rng.uniform(1, 2)
            if self.mode == "amqp-reliable-restart" and now >= next_restart:
                self.restart_broker()
                next_restart = time.monotonic() + self.rng.uniform(6, 9)
            if kill9 and now >= next_restart and now + 15 < until:
                self.kill9_broker()
                next_restart = time.monotonic() + self.rng.uniform(6, 9)
            time.sleep(0.05)

    def execute(self):
        for _ in range(self.args.workers):
            self.start_worker()
        if not all(self.wait_serving(path) for _, path in self.workers):
            return {"mode": self.mode}, ["a worker did not start"]
        out_path = os.path.join(self.tmp, "calls.txt")
        caller_log = os.path.join(self.tmp, "caller.log")
        argv = [os.path.join(self.args.bin_dir, "chaos_caller"), "--redis", self.url,
                "--service", self.service, "--run", self.mode,
                "--threads", str(self.args.callers), "--seconds", str(self.args.seconds),
                "--timeout", str(self.timeout), "--work-ms", str(self.args.work_ms),
                "--reliable", "--out", out_path]
        caller = self.procs.start(argv, caller_log)
        self.chaos(time.monotonic() + self.args.seconds)
        caller_hung = False
        try:
            caller.wait(timeout=self.timeout + LATE_MARGIN_S + 10)
        except subprocess.TimeoutExpired:
            Processes.kill(caller)
            caller_hung = True
        time.sleep(2)  # copies still queued (a resend's twin) run now
        stop_failures = 0
        for p, _ in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    Processes.kill(p)
                    stop_failures += 1
        effects, starts = {}, {}
        for _, path in self.workers:
            with open(path, errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0] in ("effect", "start"):
                        d = effects if parts[0] == "effect" else starts
                        d[parts[1]] = d.get(parts[1], 0) + 1
        calls = read_calls(out_path)
        errors = {}
        for c in calls:
            if not c[4]:
                name = STATUS_NAMES.get(c[1], str(c[1]))
                errors[name] = errors.get(name, 0) + 1
        ok = sum(1 for c in calls if c[4])
        lost = sum(1 for c in calls if not c[4] or effects.get(c[0], 0) == 0)
        report = {"mode": self.mode, "seconds": self.args.seconds, "callers": self.args.callers,
                  "calls": len(calls), "ok": ok, "lost": lost,
                  "duplicated": sum(1 for c in calls if effects.get(c[0], 0) > 1),
                  "handler_reruns": sum(1 for c in calls if starts.get(c[0], 0) > 1),
                  "late": sum(1 for c in calls if c[3] > self.timeout + LATE_MARGIN_S),
                  "errors": errors, "kills": self.kills, "broker_restarts": self.restarts,
                  "caller_hung": caller_hung, "caller_exit": caller.returncode,
                  "worker_stop_failures": stop_failures, "seed": self.args.seed}
        problems = []
        if report["lost"]:
            problems.append("%d calls lost" % report["lost"])
        if not calls:
            problems.append("no calls")
        if self.kills == 0:
            problems.append("no worker was killed")
        if self.mode in ("amqp-reliable-restart", "amqp-reliable-kill9") and self.restarts == 0:
            problems.append("the broker was not restarted")
        if caller_hung or report["late"]:
            problems.append("a caller hung or calls returned late")
        if problems or self.args.verbose:
            for _, path in self.workers[-3:] + [(None, caller_log)]:
                log("--- %s:\n%s" % (path, tail(path, 15)))
        return report, problems


def run_amqp_modes(args, modes):
    """Runs the AMQP modes in a child of tests/harness/with-rabbitmq.sh (a
    private node), passing its output through; its exit status."""
    here = os.path.dirname(os.path.abspath(__file__))
    harness = os.path.join(here, "..", "harness", "with-rabbitmq.sh")
    argv = [harness, sys.executable, os.path.abspath(__file__), "--bin-dir", args.bin_dir,
            "--mode", ",".join(modes), "--seconds", str(args.seconds),
            "--callers", str(args.callers), "--workers", str(args.workers),
            "--worker-threads", str(args.worker_threads), "--work-ms", str(args.work_ms),
            "--seed", str(args.seed)]
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    if args.verbose:
        argv.append("--verbose")
    return subprocess.run(argv, check=False).returncode


def free_port_pair():
    """A free port whose cluster bus port (+10000) is free too, below the
    ephemeral range (as tests/lib/common.sh's free_ports bus)."""
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(20000, 45000)
        ok = True
        for p in (port, port + 10000):
            with socket.socket() as sk:
                try:
                    sk.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port


def pending_requests(client):
    """Requests still queued for the service, plus those reliable workers
    hold in their in-flight hashes ({<service>}:inflight:<worker>) and
    landing lists; any list under the service's names but the dead letters
    counts, so that a renamed landing list cannot make this pass early."""
    total = client.llen(SERVICE)
    held = ("{" + SERVICE + "}:inflight:", "{" + SERVICE + "#")
    for pattern in (SERVICE + ":*", "{" + SERVICE + "}:*", SERVICE + "#*", "{" + SERVICE + "#*"):
        for key in client.scan_iter(match=pattern, count=1000):
            name = key.decode(errors="replace")
            if name in (SERVICE + ":dead", "{" + SERVICE + "}:dead"):
                continue  # dead letters, and (Cluster) their outbox in the slot
            kind = client.type(key)
            if kind == b"list":
                total += client.llen(key)
            elif kind == b"hash" and name.startswith(held) and ":inflight:" in name:
                total += client.hlen(key)
    return total


def pending_detail(client):
    """What pending_requests counted, key by key (for a failed drain)."""
    out = ["%s: list of %d" % (SERVICE, client.llen(SERVICE))]
    for pattern in (SERVICE + ":*", "{" + SERVICE + "}:*", SERVICE + "#*", "{" + SERVICE + "#*"):
        for key in client.scan_iter(match=pattern, count=1000):
            kind = client.type(key)
            if kind == b"list" and client.llen(key):
                out.append("%s: list %s" % (key.decode(errors="replace"),
                                            client.lrange(key, 0, 2)))
            elif kind == b"hash" and b":inflight:" in key and client.hlen(key):
                out.append("%s: in flight %s (ttl %s)" % (
                    key.decode(errors="replace"), list(client.hgetall(key).items())[:3],
                    client.ttl(key)))
    return out


def last_line(path):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""


def call_id_of(message):
    """The call id (first param) of a dead-lettered request text, or None."""
    try:
        return json.loads(message)["params"][0]
    except (TypeError, ValueError, KeyError, IndexError):
        return None


def effect_lines(tmp):
    """How often `effect` ran to its end per call id, and each call's
    request id (its reply key), over all worker logs ("effect CALL ID")."""
    effects, keys = {}, {}
    for name in os.listdir(tmp):
        if name.startswith("worker-") and name.endswith(".log"):
            with open(os.path.join(tmp, name), "rb") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == b"effect":
                        cid = parts[1].decode(errors="replace")
                        effects[cid] = effects.get(cid, 0) + 1
                        if parts[2] != b"-":
                            keys[cid] = parts[2].decode(errors="replace")
    return effects, keys


def extra_answers(client, reply_keys):
    """Per call id, the answers left in its reply key once every caller is
    done: a caller takes one answer per call (its own key), so any left is
    one it never read -- pushed twice, or after it gave up."""
    out, items = {}, list(reply_keys.items())
    for i in range(0, len(items), 1000):
        pipe = client.pipeline(transaction=False)
        for _, key in items[i:i + 1000]:
            pipe.llen(key)
        for (cid, _), n in zip(items[i:i + 1000], pipe.execute()):
            if n:
                out[cid] = n
    return out


def aof_commands(path):
    """The commands of an AOF file (RESP), up to a torn tail."""
    with open(path, "rb") as f:
        data = f.read()
    i, out = 0, []
    try:
        while i < len(data):
            if data[i:i + 1] != b"*":
                break
            j = data.index(b"\r\n", i)
            n, i, args = int(data[i + 1:j]), j + 2, []
            for _ in range(n):
                j = data.index(b"\r\n", i)
                size = int(data[i + 1:j])
                args.append(data[j + 2:j + 2 + size])
                i = j + 4 + size
            out.append(args)
    except ValueError:
        pass
    return out


def aof_answers(aof_dir, reply_keys):
    """Per call id, [fresh, again]: the answers pushed onto its reply key,
    read from Redis's AOF (appendfsync always: every write it
    acknowledged, in order; the chaos Redis never rewrites it).  A commit
    script's writes are one MULTI block: a push together with the SET of
    the answer's memory (its value "K<n>:<reply key><response>") is a fresh
    answer, a push without it an answer sent again from the memory."""
    by_key = {v.encode(): k for k, v in reply_keys.items()}
    out = {}
    files = []
    with open(os.path.join(aof_dir, "appendonly.aof.manifest")) as f:
        for line in f:
            w = line.split()
            if len(w) >= 6 and w[5] == "i":
                files.append(w[1])

    def block_done(block):
        pushed, remembered = {}, set()
        for c in block:
            name = c[0].upper()
            if name == b"RPUSH" and c[1] in by_key:
                pushed[c[1]] = pushed.get(c[1], 0) + len(c) - 2
            elif name == b"SET" and len(c) > 2 and c[2][:1] == b"K":
                head, _, rest = c[2][1:].partition(b":")
                if head.isdigit():
                    remembered.add(rest[:int(head)])
        for key, n in pushed.items():
            counts = out.setdefault(by_key[key], [0, 0])
            fresh = 1 if key in remembered else 0
            counts[0] += fresh
            counts[1] += n - fresh

    for name in files:
        block, in_multi = [], False
        for c in aof_commands(os.path.join(aof_dir, name)):
            verb = c[0].upper()
            if verb == b"MULTI":
                block, in_multi = [], True
            elif verb == b"EXEC":
                block_done(block)
                in_multi = False
            elif in_multi:
                block.append(c)
            else:
                block_done([c])
    return out


def handler_starts(tmp):
    """How often `effect` started per call id, over all worker logs."""
    starts = {}
    for name in os.listdir(tmp):
        if name.startswith("worker-") and name.endswith(".log"):
            with open(os.path.join(tmp, name), "rb") as f:
                for line in f:
                    if line.startswith(b"start "):
                        cid = line[6:].strip().decode(errors="replace")
                        starts[cid] = starts.get(cid, 0) + 1
    return starts


def tail(path, n):
    """The last N lines of a log, without Redis' start-up warnings."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return [l for l in lines if l.strip() and "overcommit" not in l][-n:]


def read_calls(path):
    calls = []
    try:
        with open(path) as f:
            for line in f:
                cid, status, code, latency, right, began = line.split()
                calls.append((cid, int(status), int(code), float(latency), right == "1",
                              float(began)))
    except OSError:
        pass
    return calls


def explained_by(run, began, ended):
    """The kinds of fault a call that ran from BEGAN to ENDED lived
    through.  A fault's effects outlast it by the heartbeat TTL (a dead or
    cut worker's requests wait that long to be redelivered) plus 1 s (the
    links' reconnect backoff)."""
    grace = run.args.heartbeat_ttl + 1.0
    return sorted({kind for kind, t0, t1 in run.faults if began <= t1 + grace and ended >= t0})


def timeout_fate(cid, count, starts):
    """Where the request of a timed-out call went."""
    if count > 0:
        return "ran, answer too late or lost with a link"
    if starts.get(cid, 0) > 0:
        return "handler started, worker killed"
    return "never ran (popped by a link that broke, expired, or withdrawn)"


def analyse(run, calls, effects, timeout, starts, extra=None, pushes=None):
    """EXTRA (plain modes): answers left unread in each call's reply key;
    PUSHES: per call, [fresh, again] answers pushed (aof_answers).  There
    an effect count above 1 is a handler that ran to its end twice (a
    worker killed after its handler but before its commit: at least once
    allows it, counted as effect_reruns).  duplicated counts calls
    answered anew more than once (fresh > 1: the dedup memory failed), or
    answered with more answers left unread than were pushed again from
    memory; answered_again counts calls with answers pushed again from the
    memory (a copy of the request delivered again -- the caller's resend
    after its link broke, or a redelivery -- is answered from it: by
    design, RELIABILITY.md section 1)."""
    errors = {}
    effect_reruns = answers_after_failure = answered_again = 0
    dup_calls = []
    lost = duplicated = late = wrong = ok = lost_unanswered = lost_effects = 0
    window_lost = window_duplicated = 0
    effect_without_answer = 0
    timeouts_explained = timeouts_unexplained = 0
    explained_kinds, fates, unexplained, late_calls = {}, {}, [], []
    for cid, status, code, latency, right, began in calls:
        count = effects.get(cid, 0)
        timed_out = status == -7
        # A call that failed for want of Redis (ETIMEDOUT, ECONNECT) must
        # have lived through a fault.
        # (-32000 is a worker's "Deadline exceeded": the request reached it
        # after the caller's deadline, and it said so instead of running it.)
        failed = status in (-7, -4, -15) or (status == -9 and code == -32000)
        refused = status == -15  # fail fast: never pushed, so never taken
        why = explained_by(run, began, began + latency) if failed else []
        if status == 0:
            ok += 1
        else:
            name = STATUS_NAMES.get(status, str(status))
            if status == -9:
                name += "(%d)" % code
            errors[name] = errors.get(name, 0) + 1
            if count > 0:
                effect_without_answer += 1
        if failed:
            if why:
                timeouts_explained += 1
                for kind in why:
                    explained_kinds[kind] = explained_kinds.get(kind, 0) + 1
            else:
                timeouts_unexplained += 1
                unexplained.append(cid)
        if timed_out:
            fate = timeout_fate(cid, count, starts)
            fates[fate] = fates.get(fate, 0) + 1
        if status == 0 and not right:
            wrong += 1
        in_window = run.in_window(began, began + latency)
        if extra is not None:
            left = extra.get(cid, 0)
            if count > 1:
                effect_reruns += 1
            fresh, again = pushes.get(cid, (0, 0))
            if again:
                answered_again += 1
            if fresh > 1 or (status == 0 and left > again):
                duplicated += 1
                dup_calls.append({"call": cid, "left": left, "runs": count, "fresh": fresh,
                                  "again": again,
                                  "began": round(began, 3), "latency": round(latency, 3),
                                  "faults": explained_by(run, began, began + latency)})
            if left and status != 0:
                answers_after_failure += 1  # the caller had given up: unread
        elif count > 1 and in_window:
            window_duplicated += 1
        elif count > 1:
            duplicated += 1
        if latency > timeout + LATE_MARGIN_S:
            late += 1
            late_calls.append({"call": cid, "status": STATUS_NAMES.get(status, status),
                               "latency": round(latency, 3), "began": round(began, 3),
                               "faults": why or explained_by(run, began, began + latency)})
        if status == 0 and count == 0 and in_window:
            window_lost += 1
        elif status == 0 and count == 0:
            lost_effects += 1
        # Reliable: every call is answered, except (short callers) one
        # whose deadline a fault made impossible to meet.
        if run.reliable and not right and not refused and not (timeout < run.timeout and why):
            if in_window:
                window_lost += 1
            else:
                lost_unanswered += 1
    lost = lost_unanswered + lost_effects
    latencies = sorted(c[3] for c in calls)
    return {
        "mode": run.mode, "seconds": run.args.seconds, "callers": run.args.callers,
        "workers": "%dx%d" % (run.args.workers, run.args.worker_threads),
        "timeout": timeout, "calls": len(calls), "ok": ok,
        "timeouts": errors.get("ETIMEDOUT", 0), "errors": errors,
        "failures_explained": timeouts_explained, "failures_unexplained": timeouts_unexplained,
        "failures_lived_through": explained_kinds, "timeout_fates": fates,
        "unexplained_calls": unexplained[:10],
        "kills": run.kills, "restarts": run.restarts, "lost": lost,
        "lost_unanswered": lost_unanswered, "lost_effects": lost_effects,
        "duplicated": duplicated, "late": late, "late_calls": late_calls[:10], "wrong": wrong,
        "effect_without_answer": effect_without_answer,
        # Calls that lived through a Cluster master killed before it had
        # replicated what it acknowledged (the asynchronous-replication
        # window): their losses and duplicates are the failover's, counted
        # here and not above.
        "window_lost": window_lost, "window_duplicated": window_duplicated,
        "effect_reruns": effect_reruns, "answers_after_failure": answers_after_failure,
        "answered_again": answered_again,
        "duplicated_calls": dup_calls[:10],
        "max_latency": round(latencies[-1], 3) if latencies else 0,
        "p99_latency": round(latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else 0,
    }


def judge(run, r):
    problems = []
    groups = [("", r)] + [(g + ": ", r[g]) for g in ("short",) if g in r]
    for prefix, g in groups:
        if g["calls"] == 0:
            problems.append(prefix + "no calls were made")
        for key in ("duplicated", "late", "wrong", "failures_unexplained"):
            if g[key]:
                problems.append("%s%s = %d" % (prefix, key, g[key]))
        if run.reliable and g["lost"]:
            problems.append("%slost = %d" % (prefix, g["lost"]))
    if r["caller_hung"]:
        problems.append("a caller did not finish within timeout + margin")
    elif r["caller_exit"] != 0:
        problems.append("a caller exited with %s" % r["caller_exit"])
    if r["worker_crashes"]:
        problems.append("%d worker crashes" % r["worker_crashes"])
    if r["worker_stop_failures"]:
        problems.append("%d workers did not stop cleanly" % r["worker_stop_failures"])
    if not r["drained"]:
        problems.append("requests were still queued or in flight at the end")
    if run.reliable and (r["kills"] == 0 or r["restarts"] == 0):
        problems.append("no chaos: %d kills, %d restarts" % (r["kills"], r["restarts"]))
    if run.args.cut_every[1] > 0 and (r["cuts_blackhole"] == 0 or r["cuts_reset"] == 0):
        problems.append("no partition of each kind: %d blackhole, %d reset" % (
            r["cuts_blackhole"], r["cuts_reset"]))
    if run.args.stall_every[1] > 0 and r["stalls"] == 0:
        problems.append("no stall happened")
    return problems


def show_logs(run, caller_logs):
    log("logs of the %s run (%s):" % (run.mode, run.tmp))
    for rc, line in run.worker_exits:
        log("  worker exit %s: %s" % (rc, line))
    for path, n in [(p, 20) for p in caller_logs] + [(os.path.join(run.tmp, "redis.log"), 4)]:
        for line in tail(path, n):
            log("  %s: %s" % (os.path.basename(path), line))


TABLE_HEADER = ("| mode | callers | seconds | calls | ok | timeouts | other errors | explained "
                "| kills | restarts | cuts (blackhole/reset) | stalls | lost | duplicated | late "
                "| wrong |\n"
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                "| ---: | ---: | ---: | ---: | ---: |")


def table_rows(r):
    rows = []
    for group, g in [("main", r)] + ([("short", r["short"])] if "short" in r else []):
        other = sum(n for k, n in g["errors"].items() if k != "ETIMEDOUT")
        rows.append("| %s | %s, %g s | %s | %d | %d | %d | %d | %d | %d | %d | %d/%d | %d x %g s "
                    "| %d | %d | %d | %d |" % (
                        r["mode"], group, g["timeout"], r["seconds"], g["calls"], g["ok"],
                        g["timeouts"], other, g["failures_explained"], r["kills"], r["restarts"],
                        r["cuts_blackhole"], r["cuts_reset"], r["stalls"], r["stall_seconds"],
                        g["lost"], g["duplicated"], g["late"], g["wrong"]))
    return rows


def span(text):
    low, _, high = text.partition(":")
    low, high = float(low), float(high or low)
    if low < 0 or high < low:
        raise argparse.ArgumentTypeError("want MIN:MAX with 0 <= MIN <= MAX")
    return (low, high)


PLAIN_MODES = ("reliable-plain", "reliable-plain-sharded")
PLAIN_REPLY_TTL_S = 3600
REDIS_MODES = ("reliable", "at-most-once", "reliable-sharded", "reliable-cluster") + PLAIN_MODES


def modes_arg(text):
    """--mode: a mode, a group (both, amqp, all), or modes joined by commas."""
    groups = {"both": ["reliable", "at-most-once"], "amqp": list(AMQP_MODES),
              "plain": list(PLAIN_MODES),
              "all": list(REDIS_MODES) + list(AMQP_MODES)}
    modes = []
    for m in text.split(","):
        if m in groups:
            modes += groups[m]
        elif m in REDIS_MODES or m in AMQP_MODES:
            modes.append(m)
        else:
            raise argparse.ArgumentTypeError("unknown mode %r" % m)
    return modes


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", required=True, help="where chaos_worker and chaos_caller are")
    p.add_argument("--mode", type=modes_arg, default="both",
                   help="one of reliable, at-most-once, reliable-sharded, reliable-cluster, "
                   "reliable-plain, reliable-plain-sharded, amqp-reliable-kill, "
                   "amqp-reliable-restart, amqp-reliable-kill9, or several joined by commas; "
                   "both: reliable and at-most-once; plain: the two reliable modes without "
                   "effects (the grouped commit); amqp: the three AMQP modes; all: every "
                   "mode (reliable with 2 shards, on a 3-master Redis Cluster with failovers, "
                   "and over AMQP on a private RabbitMQ node)")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--callers", type=int, default=6, help="caller threads")
    p.add_argument("--timeout", type=float, default=0,
                   help="per-call timeout (default 15 s reliable, 5 s at-most-once)")
    p.add_argument("--workers", type=int, default=3, help="worker processes")
    p.add_argument("--worker-threads", type=int, default=2)
    p.add_argument("--work-ms", type=int, default=50, help="each call works 0..this many ms")
    p.add_argument("--heartbeat-ttl", type=float, default=3)
    p.add_argument("--filler-keys", type=int, default=0,
                   help="keys of 100 bytes to load Redis with, so restarts answer LOADING a while")
    p.add_argument("--drain-seconds", type=float, default=30)
    p.add_argument("--cut-every", type=span, default=(3.0, 5.0), metavar="MIN:MAX",
                   help="seconds between cutting a worker off from Redis (0:0: never)")
    p.add_argument("--cut-seconds", type=span, default=(1.5, 4.0), metavar="MIN:MAX",
                   help="how long a worker stays cut off")
    p.add_argument("--stall-every", type=span, default=(6.0, 9.0), metavar="MIN:MAX",
                   help="seconds between SIGSTOPs of Redis (0:0: never)")
    p.add_argument("--stall-seconds", type=float, default=2.5,
                   help="how long Redis stays stopped (SIGSTOP .. SIGCONT)")
    p.add_argument("--short-callers", type=int, default=2,
                   help="caller threads with the short timeout (0: none)")
    p.add_argument("--short-timeout", type=float, default=1.5,
                   help="their call timeout, shorter than a stall")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--verbose", action="store_true", help="show log tails even on success")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (for debugging)")
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    a.bin_dir = os.path.abspath(a.bin_dir)
    return a


def main():
    args = parse_args()
    procs = Processes()
    tmps = []

    def cleanup():
        procs.kill_all()
        if not args.keep:
            for t in tmps:
                shutil.rmtree(t, ignore_errors=True)
        elif tmps:
            log("kept " + " ".join(tmps))

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    modes = args.mode
    amqp_here = "RRPC_TEST_AMQP_URL" in os.environ
    amqp_later = [m for m in modes if m in AMQP_MODES and not amqp_here]
    modes = [m for m in modes if m not in amqp_later]
    reports, failed = [], False
    try:
        for mode in modes:
            tmps.append(tempfile.mkdtemp(prefix="rrpc-chaos-"))
            log("%s: %g s, %d callers, %d workers x %d threads, seed %d" % (
                mode, args.seconds, args.callers, args.workers, args.worker_threads, args.seed))
            kind = (ClusterRun if mode == "reliable-cluster" else
                    AmqpRun if mode in AMQP_MODES else Run)
            report, problems = kind(args, mode, procs, tmps[-1]).execute()
            procs.kill_all()  # this run's Redis
            print(json.dumps(report, sort_keys=True), flush=True)
            for msg in problems:
                log("FAIL (%s): %s" % (mode, msg))
            failed = failed or bool(problems)
            reports.append(report)
        redis_reports = [r for r in reports if r["mode"] not in AMQP_MODES]
        if redis_reports:
            print(TABLE_HEADER)
        for r in redis_reports:
            for row in table_rows(r):
                print(row)
        for r in reports:
            if r["mode"] in AMQP_MODES:
                print("%s: %d calls, %d ok, lost %d, duplicated %d, handler reruns %d, "
                      "%d worker kills, %d broker restarts, errors %s" % (
                          r["mode"], r["calls"], r["ok"], r["lost"], r["duplicated"],
                          r["handler_reruns"], r["kills"], r["broker_restarts"],
                          r["errors"] or "none"), flush=True)
        for r in reports:
            if r["mode"] in PLAIN_MODES:
                print("%s: handlers that ran to their end more than once %d, started more "
                      "than once %d (a worker killed between its handler and its commit: "
                      "at least once); calls answered twice %d (duplicated), calls whose answer was "
                      "pushed again from memory %d (a copy delivered again: resend or "
                      "redelivery), answers unread of calls that had failed %d" % (
                          r["mode"], r["effect_reruns"] + r.get("short", {}).get("effect_reruns", 0),
                          r["handler_reruns"],
                          r["duplicated"] + r.get("short", {}).get("duplicated", 0),
                          r["answered_again"] + r.get("short", {}).get("answered_again", 0),
                          r["answers_after_failure"] +
                          r.get("short", {}).get("answers_after_failure", 0)), flush=True)
        for r in reports:
            if "failovers_crash" in r:
                print("%s: failovers %d manual + %d crash (%s s to take over); the "
                      "asynchronous-replication window took %d lost and %d duplicated "
                      "effects/answers with it" % (
                          r["mode"], r["failovers_manual"], r["failovers_crash"],
                          ", ".join("%g" % t for t in r["failover_seconds"]),
                          r["window_lost"], r["window_duplicated"]))
        if amqp_later:
            sys.stdout.flush()
            failed = run_amqp_modes(args, amqp_later) != 0 or failed
    finally:
        cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
