"""Idle timeouts for blocking reads, kept by one thread for the whole process.

A read with a socket timeout arms a timer every time it blocks; under gevent that cost ~6 us
of CPU per ``recv`` here, a fifth of what a delivery costs the load generator. So the long
reads of a subscription (a WebSocket, an SSE stream, an HTTP/2 stream) block without a
timer: each registers how long it may stay silent and what ends it, touches its entry when
data arrives (one attribute store), and one thread looks at every entry once a second. A
timeout fires after ``limit`` to ``limit + TICK`` seconds of silence, and again after each
further ``limit`` until the entry is dropped.

``expire`` runs in a thread of its own (a greenlet under gevent), so a callback that blocks
(a ping written to a dead peer) holds up no one else's timeout.

    entry = idle.watch(45.0, connection.abort)
    try:
        while data := sock.recv(65536):
            entry.touch()
            ...
    finally:
        idle.unwatch(entry)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

__all__ = ["TICK", "Idle", "unwatch", "watch"]

TICK = 1.0
"""Seconds between two looks at the entries: the precision of every idle timeout."""


class Idle:
    """One watched read: ``expire()`` runs after ``limit`` seconds without :meth:`touch`."""

    __slots__ = ("expire", "last", "limit")

    def __init__(self, limit: float, expire: Callable[[], None]) -> None:
        self.limit = limit
        self.expire = expire
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


class _Watcher:
    def __init__(self) -> None:
        self.entries: set[Idle] = set()
        self.lock = threading.Lock()
        self.pid = -1  # the watcher thread does not survive a fork: start one per process

    def add(self, entry: Idle) -> None:
        with self.lock:
            self.entries.add(entry)
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self.run, name="wirewise-idle", daemon=True).start()

    def discard(self, entry: Idle) -> None:
        with self.lock:
            self.entries.discard(entry)

    def run(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            with self.lock:
                due = [entry for entry in self.entries if now - entry.last >= entry.limit]
            for entry in due:
                entry.last = now  # next time after another full limit, unless touched
                threading.Thread(target=self.fire, args=(entry,), daemon=True).start()

    def fire(self, entry: Idle) -> None:
        if entry in self.entries:  # not dropped in the meantime
            entry.expire()


_WATCHER = _Watcher()


def watch(limit: float, expire: Callable[[], None]) -> Idle:
    """Call ``expire`` whenever the returned entry goes ``limit`` seconds untouched."""
    entry = Idle(limit, expire)
    _WATCHER.add(entry)
    return entry


def unwatch(entry: Idle) -> None:
    _WATCHER.discard(entry)
