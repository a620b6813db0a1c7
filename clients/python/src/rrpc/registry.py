"""registry.py -- a server's record in the registry, and its per-method stats.

PROTOCOL.md section 9: a registered worker renews a record of itself every
heartbeat interval (so `rrpc ls/info/ping/top` show it next to C workers,
and callers fail fast once the last worker of a service stops), publishes
the service's config, clears the records of workers that died, and adds
its per-method counters and latency histogram to {L}:mstats.
"""

import logging
import math
import os
import secrets
import socket
import threading
import time

from .protocol import dumps
from .transport import connect, demoted

log = logging.getLogger('rrpc')

HIST_LAST = 128  # the last latency bucket, open-ended


def latency_bucket(seconds):
    """The histogram bucket of a run time (PROTOCOL.md 9): four per power of
    two of microseconds, bucket 0 below 1 us, the last (128) open-ended."""
    us = seconds * 1e6
    if not us >= 1.0:
        return 0
    m, e = math.frexp(us)  # us = m * 2^e, m in [0.5, 1)
    sub = min(int((2.0 * m - 1.0) * 4.0), 3)
    return min(1 + 4 * (e - 1) + sub, HIST_LAST)


class Stats:
    """Per-method counters, added to {L}:mstats with each heartbeat.  The
    serving thread records, the heartbeat thread takes what changed; a lock
    keeps the two apart (held for a dict update, never across I/O)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = {}  # field -> count not yet sent

    def record(self, method, seconds, error):
        fields = [f'calls:{method}', f'h{latency_bucket(seconds)}:{method}']
        if error:
            fields.append(f'errors:{method}')
        with self._lock:
            for field in fields:
                self._pending[field] = self._pending.get(field, 0) + 1

    def flush(self, conn, key):
        """Sends the deltas; on failure they are kept for the next flush
        (at worst counted twice after a lost reply, never lost silently)."""
        with self._lock:
            taken, self._pending = self._pending, {}
        if not taken:
            return
        try:
            pipe = conn.pipeline(transaction=False)
            for field, count in taken.items():
                pipe.hincrby(key, field, count)
            pipe.execute()
        except Exception:
            with self._lock:
                for field, count in taken.items():
                    self._pending[field] = self._pending.get(field, 0) + count
            raise


class Registry:
    """One record for this server process in the registry of PROTOCOL.md
    section 9, renewed every interval by a thread with its own connection,
    which also publishes the service's config, clears workers whose
    heartbeat ran out and sends the per-method stats.  stop() removes the
    record at once, so callers fail fast instead of waiting for it to expire."""

    REGISTERED_FOR_MS = 3600000  # {L}:config outlives the last heartbeat by an hour

    def __init__(self, server, url, prefix, interval, ttl, max_queue):
        self.server = server
        self.conn = connect(url)  # its own: a BLPOP on the workers' must not delay a beat
        list_key = prefix + server.service
        self.services_key = prefix + 'rrpc:services'
        self.workers_key = '{%s}:workers' % list_key
        self.info_key = '{%s}:info' % list_key
        self.config_key = '{%s}:config' % list_key
        self.mstats_key = '{%s}:mstats' % list_key
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # host and pid for people, random digits so that a reused pid is new.
        self.id = f'{self.host}:{self.pid}:{secrets.token_hex(4)}'
        self.interval = interval if interval > 0 else 1.0
        ttl = ttl if ttl > 0 else 5.0
        self.ttl = max(ttl, 2 * self.interval)  # one late beat must not look like a death
        self.max_queue = max(int(max_queue), 0)
        self.stats = Stats()
        self.record = None
        self._stop = threading.Event()
        self._thread = None
        self._failing = False

    def _record(self):
        methods = self.server.method_entries()
        return dumps({'id': self.id, 'service': self.server.service, 'host': self.host,
                      'pid': self.pid, 'version': self.server.version, 'threads': 1,
                      'started': self.started, 'heartbeat_s': float(self.interval),
                      'ttl_s': float(self.ttl), 'max_queue': self.max_queue, 'shards': 1,
                      'methods': methods})

    def start(self):
        """Registers (the first beat runs here, so that a Redis that refuses
        it fails the start loudly) and starts the heartbeat thread."""
        self.started = time.time()
        self.record = self._record()
        self._stop.clear()
        self.beat()
        self._thread = threading.Thread(target=self._run, name='rrpc-heartbeat', daemon=True)
        self._thread.start()

    def beat(self):
        sec, usec = self.conn.time()
        now_ms = sec * 1000 + usec // 1000
        ttl_ms = int(self.ttl * 1000)
        (self.conn.pipeline(transaction=False)
         .zadd(self.workers_key, {self.id: now_ms + ttl_ms})
         .hset(self.info_key, self.id, self.record)
         .hset(self.config_key, mapping={'max_queue': self.max_queue, 'ttl_ms': ttl_ms,
                                         'shards': 1})
         .sadd(self.services_key, self.server.service)
         .pexpire(self.config_key, self.REGISTERED_FOR_MS)
         .execute())
        # Clear workers whose heartbeat ran out: a killed process cannot.
        before = f'({now_ms}'
        dead = self.conn.zrangebyscore(self.workers_key, '-inf', before)
        if dead:
            # By score, not by id: a worker that beat meanwhile stays.
            (self.conn.pipeline(transaction=False).hdel(self.info_key, *dead)
             .zremrangebyscore(self.workers_key, '-inf', before).execute())
        self.stats.flush(self.conn, self.mstats_key)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                if self._failing:
                    log.warning('%s: heartbeat restored', self.server.service)
                self._failing = False
            except Exception as exc:  # log once per outage; redis-py reconnects
                demoted(self.conn, exc)
                if not self._failing:
                    log.warning('%s: heartbeat failed: %s', self.server.service, exc)
                self._failing = True

    def stop(self):
        """Sends the last stats, then removes the record: the service stays
        registered, and callers fail fast if no other worker is live."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.stats.flush(self.conn, self.mstats_key)
            (self.conn.pipeline(transaction=False).zrem(self.workers_key, self.id)
             .hdel(self.info_key, self.id).execute())
        except Exception as exc:
            log.warning('%s: cannot remove the record: %s', self.server.service, exc)
        finally:
            self.conn.close()
