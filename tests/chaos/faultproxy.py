"""faultproxy.py -- a fault-injecting TCP proxy for the chaos test.

One FaultProxy listens on a free loopback port and forwards every
connection to an upstream port (Redis), byte for byte, on one thread of
its own.  Its mode can be switched at any time:

  pass       forward both ways (the default)
  blackhole  a silent partition: nothing is read or written any more on
             any connection, and connections made meanwhile are accepted
             but not forwarded; sockets stay open, so the peers see no
             error, only silence, until their own timeouts fire.  Bytes
             written meanwhile wait in the kernel's buffers and are
             delivered when the partition heals, as TCP's retransmissions
             would deliver them (including the commands of a link its
             owner has given up on meanwhile: its close arrives after them)
  reset      every connection is closed with SO_LINGER 0, so both peers get
             a TCP RST at once; connections made meanwhile are reset too

A proxy rather than network namespaces: namespaces need root (CAP_NET_ADMIN)
and a host with ip and veth, while this runs anywhere the test runs, needs
no privileges, stays on loopback, and can cut one worker process off while
its neighbours and the callers keep their links (each worker gets a proxy
of its own).  It cuts a worker's every link at once (its worker threads,
its registry heartbeat and, in reliable mode, its in-flight heartbeat), as
a partition between its host and Redis would.
"""
import errno
import selectors
import socket
import struct
import threading

CHUNK = 65536


class _Pair:
    """One proxied connection: the peer's socket and Redis's."""

    def __init__(self, down, up):
        self.down, self.up = down, up
        self.out = {down: bytearray(), up: bytearray()}  # bytes waiting to be written to it
        self.eof = set()  # sockets whose peer closed their side
        self.closed = False

    def other(self, s):
        return self.up if s is self.down else self.down


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.mode = "pass"
        self.pairs = []
        self.held = []  # accepted during a blackhole, not yet forwarded
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.connections = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    # --- control (any thread) --------------------------------------------
    def set_mode(self, mode):
        assert mode in ("pass", "blackhole", "reset")
        with self.lock:
            self.mode = mode
        self.wake_w.send(b"x")

    def close(self):
        self.stopping = True
        self.wake_w.send(b"x")
        self.thread.join(5)

    # --- the loop (its own thread) ---------------------------------------
    @staticmethod
    def _reset(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        s.close()

    def _forget(self, s):
        if s in self.registered:
            self.sel.unregister(s)
            del self.registered[s]

    def _close_pair(self, p, rst=False):
        if p.closed:
            return
        p.closed = True
        for s in (p.down, p.up):
            self._forget(s)
            if rst:
                self._reset(s)
            else:
                s.close()
        self.pairs.remove(p)

    def _connect(self, down):
        try:
            up = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            self._reset(down)  # Redis is down: the peer sees a broken link
            return
        up.setblocking(False)
        down.setblocking(False)
        for s in (down, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pairs.append(_Pair(down, up))
        self.connections += 1

    def _accept(self, mode):
        while True:
            try:
                down, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if mode == "reset":
                self._reset(down)
            elif mode == "blackhole":
                self.held.append(down)
            else:
                self._connect(down)

    def _pump(self, p, s, readable, writable):
        """Moves bytes for socket S of pair P: "ok", "done" (a side closed
        and its last bytes are written) or "reset" (a socket error)."""
        if readable and s not in p.eof:
            try:
                data = s.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return "reset"  # reset by the peer: reset the other side too
            if data == b"":
                p.eof.add(s)
            elif data:
                p.out[p.other(s)] += data
        if writable and p.out[s]:
            try:
                n = s.send(p.out[s])
                del p.out[s][:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return "reset"
        # A side that closed: once its last bytes are written to the
        # other side, the connection ends (Redis and hiredis never
        # half-close).
        other = p.other(s)
        for side in (s, other):
            if side in p.eof and not p.out[p.other(side)]:
                return "done"
        return "ok"

    def _loop(self):
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.registered = registered = {}
        while not self.stopping:
            with self.lock:
                mode = self.mode
            if mode == "reset":
                for p in list(self.pairs):
                    self._close_pair(p, rst=True)
                for s in self.held:
                    self._reset(s)
                self.held = []
            elif mode == "pass" and self.held:
                held, self.held = self.held, []
                for s in held:
                    self._connect(s)
            # (Re)register every live socket with what it waits for; in a
            # blackhole none of them is watched at all.
            live = {}
            if mode == "pass":
                for p in self.pairs:
                    for s in (p.down, p.up):
                        ev = selectors.EVENT_WRITE if p.out[s] else 0
                        if s not in p.eof:
                            ev |= selectors.EVENT_READ
                        if ev:
                            live[s] = (ev, p)
            for s in list(registered):
                if s not in live:
                    self._forget(s)
            for s, (ev, p) in live.items():
                if s not in registered:
                    self.sel.register(s, ev, p)
                elif registered[s] != ev:
                    self.sel.modify(s, ev, p)
                registered[s] = ev
            for key, events in self.sel.select(timeout=0.5):
                s = key.fileobj
                if s is self.wake_r:
                    try:
                        self.wake_r.recv(4096)
                    except OSError:
                        pass
                elif s is self.listener:
                    self._accept(mode)
                elif mode == "pass" and not key.data.closed:
                    p = key.data
                    state = self._pump(p, s, events & selectors.EVENT_READ,
                                       events & selectors.EVENT_WRITE)
                    if state != "ok":
                        self._close_pair(p, rst=state == "reset")
        for p in list(self.pairs):
            self._close_pair(p)
        for s in self.held:
            s.close()
        self.listener.close()
