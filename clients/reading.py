"""Reading a socket in a long loop, with one system call per wakeup under gevent.

gevent's ``recv`` first tries the socket and, when the kernel has nothing (EAGAIN), waits
until it is readable and tries again. A subscription's reader mostly gets one message per
wakeup, so half of its ``recv`` calls were answered EAGAIN: a system call, and ~2-4 us of
the load generator's CPU, per delivery. After a short read (the kernel had no more), this
waits for readability first and then reads once.

The wait uses the gevent socket's own read watcher (``_wait`` and ``_read_event`` are not
public API), so that a ``close()`` from another greenlet still wakes the waiter, as it
wakes a waiting ``recv``. Where they are missing (plain threads: a blocking ``recv`` is a
single system call anyway) or unsafe (TLS, which may hold decrypted bytes while the socket
is not readable), the reader is a plain ``recv``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

__all__ = ["reader"]


def reader(sock: socket.socket, size: int) -> Callable[[], bytes]:
    """A ``recv(size)`` for ``sock``'s read loop; only one thread may call it."""
    recv = sock.recv
    wait = getattr(sock, "_wait", None)
    if wait is None or getattr(sock, "_read_event", None) is None:
        return lambda: recv(size)
    if isinstance(sock, ssl.SSLSocket):
        return lambda: recv(size)
    drained = False

    def read() -> bytes:
        nonlocal drained
        watcher = sock._read_event  # type: ignore[attr-defined]  # None once closed
        if drained and watcher is not None:
            wait(watcher)  # OSError if another greenlet closes the socket meanwhile
        data = recv(size)
        drained = 0 < len(data) < size
        return data

    return read
