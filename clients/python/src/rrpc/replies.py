"""replies.py -- which keys a worker may answer on (PROTOCOL.md section 3).

A reply key is chosen by whoever sends the request, so before writing a
worker refuses the service's own keys, rrpc's keys of any service, a
registered service's request list and, with an allow-list, keys outside
it (rules 1 to 4); rule 5, "only onto a reply list", is the REPLY SCRIPT's
(transport.py), checked atomically in Redis.  Rule 3 needs the set of
registered services, read here at most every 5 s.
"""

import logging
import time

import redis

from .transport import error_text, transient

log = logging.getLogger('rrpc')


def key_bytes(key):
    """A key as Redis sees it: str keys are sent as UTF-8."""
    return key if isinstance(key, bytes) else key.encode('utf-8', 'surrogatepass')


class ReplyRules:
    """Rules 1 to 4 for one service: refusal(key) says why a key may not be
    written to, or None.  refresh(conn) reads the registered services when
    they are due (call it off the path of requests, e.g. before each pop)."""

    SERVICES_EVERY_S = 5.0  # how often the set of registered services is read

    def __init__(self, service, prefix, reply_prefixes=None):
        self.service = service
        self.prefix = key_bytes(prefix)
        self.queue = key_bytes(prefix + service)
        self.own = {self.queue, self.queue + b':dead', self.queue + b':stats'}
        self.allowed = (None if reply_prefixes is None else
                        [key_bytes(p) for p in reply_prefixes])
        self.services = None  # registered names (bytes), None while unknown
        self._read_at = None
        self._unread = False

    def refusal(self, key):
        """Why KEY (bytes) may not be a reply key (PROTOCOL.md 3), or None."""
        if self._own_key(key):
            return "one of the service's own keys"
        if self._rrpc_key(key):
            return "one of rrpc's keys"
        if self._request_list(key):
            return "a service's request list"
        if self.allowed is not None and not any(map(key.startswith, self.allowed)):
            return 'not under an allowed prefix'
        return None

    def _own_key(self, key):
        """Its list, dead letters, stats or anything under its hash tag {L}:
        an answer pushed onto the list would be popped and answered forever."""
        if key in self.own:
            return True
        return len(key) > len(self.queue) + 2 and key.startswith(b'{' + self.queue + b'}')

    def _rrpc_key(self, key):
        """One of rrpc's keys of any service, by its name."""
        mine = self.prefix + b'rrpc:'
        return ((key.startswith(mine) and not key.startswith(mine + b'reply:')) or
                (key.startswith(b'{') and b'}:' in key) or
                key.endswith(b':dead') or key.endswith(b':stats'))

    def _request_list(self, key):
        """A registered service's list or shard list."""
        if self.services is None or not key.startswith(self.prefix):
            return False
        name = key[len(self.prefix):]
        if name in self.services:
            return True
        base, sep, shard = name.rpartition(b'#')
        return bool(sep) and shard.isdigit() and base in self.services

    def refresh(self, conn):
        """Reads the set of registered services at start and then at most
        every SERVICES_EVERY_S; while it cannot be read, rule 3 is off."""
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self.SERVICES_EVERY_S:
            return
        self._read_at = now
        try:
            self.services = set(conn.smembers(self.prefix + b'rrpc:services'))
            self._unread = False
        except redis.RedisError as exc:
            if transient(exc):  # Redis away: keep what we knew, read again next time
                self._read_at = None
                return
            if not self._unread:  # refused (an ACL), a hash in its place: once
                log.warning('%s: cannot read the registered services (%s): until it can, their '
                            'request lists are not refused as reply keys by name',
                            self.service, error_text(exc))
            self.services, self._unread = None, True
