"""The single writer of one subscriber's connection: what SSE streams and WebSockets share.

A subscription's events arrive in the core synchronously (``sub.notify``); the writer turns
the first of a burst into one short-lived flush task that writes everything waiting and ends,
so an idle connection holds no task of its own. Every write is bounded by ``timeout``: a
client that stopped reading cannot pin the server, it is cut off (its request or socket
handler is cancelled) and may resume from its cursor.

Subclasses say what a flush writes (:meth:`Writer.flush`: SSE one chunk of every event
waiting, a WebSocket one frame each, answers first) and what a stalled client means
(:meth:`Writer.stalled`). ``__slots__`` and no closures: an idle connection's writer is a
few hundred bytes, and there are tens of thousands of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import ClassVar

from wirewise.servers.aio import bounded
from wirewise.servers.core import Subscriber

__all__ = ["Writer"]


class Writer:
    """Starts a flush task on demand; aborts the connection's handler when a write stalls."""

    __slots__ = ("aborted", "reader", "sub", "task", "timeout")

    write_errors: ClassVar[tuple[type[BaseException], ...]] = (TimeoutError, OSError)
    """What a failed or stalled write raises on this kind of connection."""

    def __init__(self, sub: Subscriber, timeout: float) -> None:
        self.sub = sub
        self.timeout = timeout
        self.task: asyncio.Task[None] | None = None
        self.reader = asyncio.current_task()
        """The connection's handler: cancelled when a write stalls, which ends the connection."""
        self.aborted = False
        sub.notify = self.kick

    def kick(self) -> None:
        """Something is waiting: flush it, unless a flush is already under way."""
        if self.task is None and self.writable():
            self.task = asyncio.ensure_future(self._flush())

    def writable(self) -> bool:
        return True

    async def write(self, awaitable: Awaitable[None]) -> None:
        """One write, bounded by ``timeout``."""
        await bounded(awaitable, self.timeout)

    async def flush(self) -> None:
        """Write everything waiting (and what closes the connection, once it is closed)."""
        raise NotImplementedError

    def stalled(self) -> None:
        """A write failed or timed out: the client stopped reading or went away."""
        if self.reader is not None and not self.aborted:
            self.aborted = True
            self.reader.cancel()

    async def _flush(self) -> None:
        try:
            await self.flush()
        except self.write_errors:
            self.stalled()
        finally:
            self.task = None
