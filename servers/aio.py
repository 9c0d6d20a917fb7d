"""asyncio glue between the synchronous core and the transports' coroutines."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.types import Receive

from wirewise.protocol import Gap
from wirewise.servers.core import Stored, Subscriber

T = TypeVar("T")

DISCONNECTED = "disconnected"
"""Close reason when the client went away."""


class Feed:
    """Awaitable view of a :class:`Subscriber`: wait for its next batch of events.

    The core calls ``sub.notify`` on every queued event; we turn the first of a burst into a
    resolved future, so a writer wakes once per burst and sends the whole batch in one write.
    """

    __slots__ = ("_waiter", "_watcher", "sub")

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self._waiter: asyncio.Future[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        sub.notify = self._wake

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, timeout: float | None) -> list[Stored | Gap]:
        """The events waiting now, or after the next wake-up; [] after ``timeout`` or close."""
        sub = self.sub
        if not sub.pending and not sub.closed:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self._wake) if timeout is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return sub.take()

    def watch_disconnect(self, receive: Receive) -> None:
        """Close the subscription as soon as the HTTP client goes away."""
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.sub.close(DISCONNECTED)

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


class Ticker:
    """Calls ``tick()`` on every registered member every ``interval`` seconds, from one task.

    One timer for all instead of one each: a timer per member (uvloop's TimerHandle, its libuv
    timer, the callback) is ~0.7 KiB per idle stream. A round yields to the event loop every
    ``BATCH`` members, so what the ticks start (a flush task each, say) finishes in batches
    rather than all at once. Run it with ``run()`` for the server's lifetime.
    """

    BATCH = 256

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.members: dict[Any, None] = {}  # insertion-ordered set

    def add(self, member: Any) -> None:
        self.members[member] = None

    def discard(self, member: Any) -> None:
        self.members.pop(member, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for count, member in enumerate(list(self.members), 1):
                if member in self.members:  # not gone during an earlier batch
                    member.tick()
                if count % self.BATCH == 0:
                    await asyncio.sleep(0)


if sys.version_info >= (3, 11):

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        """``awaitable`` or TimeoutError after ``seconds`` (no extra task on 3.11+)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)
