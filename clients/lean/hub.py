"""The load generator's read loop: one readiness wait for every lean connection of a process.

Why a hub: with a reader thread (a greenlet under Locust) per connection, every delivery cost
a wakeup, a greenlet switch, a ``recv`` that often answered EAGAIN, a full parse and a
histogram record: 37-46 us of CPU per delivery, as much as the server spent sending it, so the
load generator measured itself. Here one loop waits on one ``epoll`` for every connection and
reads each ready socket once, so the wakeup is shared by every socket that became ready
meanwhile (measured here: 49,000 voluntary context switches for 100,000 deliveries without
the shared wait, 1,400 with it).

Receipt times come from the kernel, not from the loop. Each socket has ``SO_TIMESTAMPNS`` on,
and ``recvmsg`` returns the time its data arrived (the wall clock, as ``sent_at``): a delivery
that waited in the socket while the loop served other sockets is not charged that wait. That
is what lets the loop *coalesce*: after a wakeup it sleeps ``coalesce`` seconds (1 ms) so that
more sockets become ready and one pass reads them all. How long data waited for us is still
measured (:attr:`Hub.read_delays`: per pass, now minus the oldest timestamp read), because a
load generator that falls behind must say so. One limit, stated where it applies: a read that
returns several messages carries the timestamp of the last segment, so the earlier ones are
stamped late by at most the time between their arrivals; :attr:`Hub.shared_stamps` counts them.

Under gevent (Locust) the loop is not a greenlet at all: the epoll descriptor is one libev
watcher of gevent's own loop, and the pass and the timers run as libev callbacks, so a wakeup
costs no greenlet switch and no ``select`` (which registers and unregisters its descriptors at
every call: 40 % of the generator's CPU in a 2,000-deliveries/s chat went there). Callbacks
never block: sockets here are non-blocking and locks are never held across a switch. Without
gevent (tests, scripts) the same passes run in a thread of their own.
Connections read here are :class:`Conn` subclasses, one module per transport in this package;
they parse only what the measurement needs and put each delivery into :attr:`Hub.deliveries`,
a flat ``array('q')`` of ``(room, id, sent_at, received_at)`` quadruples taken in batches.
"""

from __future__ import annotations

import _socket
import contextlib
import heapq
import itertools
import os
import select
import socket
import struct
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["COALESCE", "Conn", "Hub", "Timer", "raw_socket"]

COALESCE = 0.001
"""Seconds the loop waits after a wakeup before reading, so that one pass serves many sockets."""
READ_SIZE = 1 << 16
SO_TIMESTAMPNS = 35
"""Linux's SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it)."""
_TIMESPEC = struct.Struct("@qq")  # struct timespec: seconds, nanoseconds
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
MAX_EVENTS = 4096

try:  # gevent's monkey patching removes select.epoll; the hub needs the real one
    from gevent.monkey import get_original

    _epoll = get_original("select", "epoll")
except ImportError:  # pragma: no cover - gevent is a dependency (Locust)
    _epoll = select.epoll


def raw_socket(sock: socket.socket) -> _socket.socket:
    """The C-level socket behind ``sock`` (gevent's wrapper would yield on EAGAIN), non-blocking.

    ``sock`` is detached: the returned socket owns the file descriptor from now on.
    """
    raw = _socket.socket(fileno=sock.detach())
    raw.setblocking(False)
    return raw


class Conn:
    """One connection the hub reads. Subclasses parse (:meth:`on_data`) and end (:meth:`on_end`).

    Writes may come from any thread (senders, the hub itself for pongs and polls): a write
    that the kernel cannot take at once is kept and flushed when the socket is writable, so
    no caller ever blocks on a slow server (back-pressure shows as latency, not as a sender
    falling behind its schedule).
    """

    __slots__ = ("_lock", "_out", "closed", "fd", "hub", "sock", "stamped")

    def __init__(self, hub: Hub, sock: socket.socket) -> None:
        self.hub = hub
        self.sock = raw_socket(sock)
        self.fd = self.sock.fileno()
        self._out = b""
        self._lock = threading.Lock()
        self.closed = False
        self.stamped = hub.timestamps and _stamp(self.sock)

    def on_data(self, data: bytes, received_us: int) -> None:
        raise NotImplementedError

    def on_end(self, reason: str) -> None:
        """The connection ended (``reason`` says why); called once, from the hub."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the server; returns at once."""
        with self._lock:
            if self.closed:
                raise ConnectionError("the connection is closed")
            if self._out:
                self._out += data
                return
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise ConnectionError(str(exc)) from exc
            if sent < len(data):
                self._out = data[sent:]
                self.hub.want_write(self, True)

    def flush(self) -> None:
        """From the hub: the socket is writable again."""
        with self._lock:
            try:
                sent = self.sock.send(self._out) if self._out else 0
            except BlockingIOError:
                return
            except OSError:
                self._out = b""
                sent = 0
            self._out = self._out[sent:]
            if not self._out:
                self.hub.want_write(self, False)

    def close(self, reason: str = "closed") -> None:
        """Stop reading and close the socket (from any thread); :meth:`on_end` follows."""
        self.hub.end(self, reason)


def _stamp(sock: _socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class Timer:
    """A callback at a monotonic time, run by the hub's loop; :meth:`cancel` drops it."""

    __slots__ = ("callback", "cancelled", "due", "watcher")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False
        self.watcher: Any = None  # gevent's timer, when libev runs it

    def cancel(self) -> None:
        self.cancelled = True
        if self.watcher is not None:
            self.watcher.stop()


def _under_gevent() -> bool:
    """Is this process monkey-patched by gevent (Locust)? Then libev drives the hub."""
    try:
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a dependency (Locust)
        return False
    return bool(is_module_patched("threading"))


class Hub:
    """Reads every registered :class:`Conn` from one loop; see the module docstring."""

    def __init__(self, coalesce: float = COALESCE, timestamps: bool = True) -> None:
        self.coalesce = coalesce
        self.timestamps = timestamps and hasattr(socket.socket, "recvmsg")
        self.deliveries = array("q")
        """(room, id, sent_at us, received_at us) of every delivery, flat; see take()."""
        self.read_delays = array("q")
        """Per read pass: microseconds between the oldest data read and the pass itself."""
        self.shared_stamps = 0
        """Deliveries that shared a read (and so a receipt time) with a later message."""
        self.duplicates = 0
        self.checked = 0
        """new_message events parsed the fast way *and* fully validated (a sampled share)."""
        self.mismatched = 0
        """Of those, how many the fast parse read differently from the full decoder."""
        self.events: Counter[str] = Counter()
        """Non-message events read, by type (user_joined, gap, ...) and error code."""
        self.last_membership = 0.0
        """time.time() of the last user_joined or user_left read: the settle check's clock."""
        self._ep = _epoll()
        self._conns: dict[int, Conn] = {}
        self._writing: set[int] = set()
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._thread: threading.Thread | None = None
        self._libev: Any = None  # gevent's loop, when it drives the hub
        self._ready: Any = None
        self._coalescing: Any = None
        self._stopped = False

    # -- connections -----------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._conns)

    def add(self, conn: Conn) -> None:
        with self._lock:
            self._conns[conn.fd] = conn
            self._ep.register(conn.fd, select.EPOLLIN)
        self._start()

    def want_write(self, conn: Conn, on: bool) -> None:
        """Ask for (or stop asking for) a writable event on ``conn`` (under its lock)."""
        if conn.fd not in self._conns or (conn.fd in self._writing) == on:
            return
        mask = select.EPOLLIN | (select.EPOLLOUT if on else 0)
        with contextlib.suppress(OSError):
            self._ep.modify(conn.fd, mask)
        (self._writing.add if on else self._writing.discard)(conn.fd)

    def end(self, conn: Conn, reason: str) -> None:
        """Forget ``conn``, close its socket, then tell it (once)."""
        with self._lock:
            if conn.closed:
                return
            conn.closed = True
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
                self._writing.discard(conn.fd)
                with contextlib.suppress(OSError, ValueError):
                    self._ep.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()
        try:
            conn.on_end(reason)
        except Exception:  # an owner's bug must not stop the loop that reads everyone
            self.events["internal_error"] += 1

    # -- timers ------------------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` in the hub's loop after ``delay`` seconds."""
        timer = Timer(time.monotonic() + delay, callback)
        if self._libev is not None or (self._start() and self._libev is not None):
            timer.watcher = self._libev.timer(max(delay, 0.0))
            timer.watcher.start(self._fire, timer)
            return timer
        with self._lock:
            heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        self._start()
        self._wake()
        return timer

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- taking what was measured ------------------------------------------------------------

    def take(self) -> tuple[array[int], array[int]]:
        """The deliveries and read delays recorded since the last take (then forgotten)."""
        deliveries, self.deliveries = self.deliveries, array("q")
        delays, self.read_delays = self.read_delays, array("q")
        return deliveries, delays

    # -- the loop ----------------------------------------------------------------------------

    def _start(self) -> bool:
        """Start reading (once): libev callbacks under gevent, else a thread of our own."""
        if self._thread is not None or self._libev is not None:
            return False
        with self._lock:
            if self._thread is not None or self._libev is not None:
                return False
            if _under_gevent():
                from gevent import get_hub

                self._libev = get_hub().loop
                self._ready = self._libev.io(self._ep.fileno(), 1)
                self._ready.start(self._on_ready)
            else:
                self._thread = threading.Thread(target=self._run, name="wirewise-hub", daemon=True)
                self._thread.start()
        return True

    # -- under gevent: libev callbacks ----------------------------------------------------------

    def _on_ready(self) -> None:
        """The epoll descriptor is readable: wait ``coalesce`` more, then read everyone."""
        self._ready.stop()
        if self.coalesce:
            self._coalescing = self._libev.timer(self.coalesce)
            self._coalescing.start(self._libev_pass)
        else:
            self._libev_pass()

    def _libev_pass(self) -> None:
        try:
            self._pass()
        except Exception:  # the loop must go on reading everyone else
            self.events["internal_error"] += 1
        if not self._stopped:
            self._ready.start(self._on_ready)

    def _fire(self, timer: Timer) -> None:
        timer.watcher = None
        if not timer.cancelled:
            try:
                timer.callback()
            except Exception:
                self.events["internal_error"] += 1

    def stop(self) -> None:
        """End the loop and every connection (their owners are told)."""
        self._stopped = True
        self._wake()
        if self._ready is not None:
            self._ready.stop()
        for conn in list(self._conns.values()):
            self.end(conn, "hub stopped")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        epfd = self._ep.fileno()
        while not self._stopped:
            readable, _, _ = select.select([epfd], [], [], self._timeout())
            if readable and self.coalesce:
                time.sleep(self.coalesce)
            self._pass()
            self._run_timers()

    def _timeout(self) -> float:
        with self._lock:
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            if not self._timers:
                return 1.0
            return max(0.0, min(1.0, self._timers[0][0] - time.monotonic()))

    def _run_timers(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
        for timer in due:
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception:
                    self.events["internal_error"] += 1

    def _pass(self) -> None:
        """Read every ready socket once (level-triggered: what is left is read next pass)."""
        events = self._ep.poll(0, MAX_EVENTS)
        if not events:
            return
        conns = self._conns
        unpack = _TIMESPEC.unpack
        oldest = 1 << 62
        for fd, mask in events:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            if mask & select.EPOLLOUT:
                conn.flush()
            if not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                if conn.stamped:
                    data, ancillary, _flags, _address = conn.sock.recvmsg(READ_SIZE, _ANCILLARY)
                    if ancillary:
                        seconds, nanos = unpack(ancillary[0][2])
                        received = seconds * 1_000_000 + nanos // 1000
                    else:
                        received = time.time_ns() // 1000
                else:
                    data = conn.sock.recv(READ_SIZE)
                    received = time.time_ns() // 1000
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self.end(conn, f"read failed: {exc}")
                continue
            if not data:
                self.end(conn, "the server closed the connection")
                continue
            if received < oldest:
                oldest = received
            try:
                conn.on_data(data, received)
            except Exception as exc:  # a parse failure ends that connection, not the loop
                self.events["parse_error"] += 1
                self.end(conn, f"unreadable data: {exc!r}")
        if oldest != 1 << 62:
            self.read_delays.append(time.time_ns() // 1000 - oldest)
