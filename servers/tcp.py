"""The raw-TCP floor: newline-delimited JSON over a bare socket, for calibration only.

What the machine itself costs to move a chat message through the same core with no HTTP, no
framing beyond ``\\n`` and no library: every other transport's latency and memory are read
against it. Not for production (no TLS, no origin checks: no browser can reach it).

A connection's first line stands in for the URL of the other transports:

- ``{"type": "login", "user": "ada"}`` is answered with ``{"token": "..."}`` and the
  connection is closed;
- ``{"type": "hello", "token": "...", "room": "general", "after": 17}`` subscribes (``after``
  optional); events follow one per line, and each ``send_message`` line is answered with an
  ``ack`` or ``error`` line, as on a WebSocket.

    printf '{"type":"login","user":"ada"}\\n' | nc 127.0.0.1 8000
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from wirewise import protocol
from wirewise.protocol import Error, Gap, Hello, LoginRequest, ProtocolError
from wirewise.servers.context import Context
from wirewise.servers.core import Stored, Subscriber
from wirewise.servers.frames import handle_frame

NEWLINE = b"\n"
BACKLOG_LINES = 64
"""Sends read ahead of their answers before the connection stops reading (backpressure)."""


def _event_line(event: Stored) -> bytes:
    return event.json.encode() + NEWLINE


def line(item: Stored | Gap | protocol.Error | protocol.Ack) -> bytes:
    if isinstance(item, Stored):
        return item.frame("tcp", _event_line)
    return protocol.encode(item).encode() + NEWLINE


class FloorProtocol(asyncio.Protocol):
    """One connection. Writes happen in the core's notification, synchronously: the floor."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sub: Subscriber | None = None
        self.user = ""
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.sends: deque[bytes] = deque()
        self.sending: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.ctx.settings.header_timeout, self._no_hello)

    def _no_hello(self) -> None:
        if self.sub is None and self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(NEWLINE)
            if end < 0:
                break
            raw = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if len(raw) > self.ctx.settings.max_frame:
                self._fail(
                    ProtocolError(
                        "message_too_large",
                        f"lines are at most {self.ctx.settings.max_frame} bytes",
                    )
                )
                return
            self._line(raw)
            if self.transport is None or self.transport.is_closing():
                return
        if len(self.buffer) > self.ctx.settings.max_frame:
            self._fail(
                ProtocolError(
                    "message_too_large", f"lines are at most {self.ctx.settings.max_frame} bytes"
                )
            )

    def _line(self, raw: bytes) -> None:
        assert self.transport is not None
        if self.sub is not None:
            self.sends.append(raw)
            if self.sending is None:
                self.sending = asyncio.ensure_future(self._answer_sends())
            elif len(self.sends) >= BACKLOG_LINES:
                self.transport.pause_reading()
            return
        try:
            first = protocol.decode_client(raw)
            if isinstance(first, LoginRequest):
                token = self.ctx.tokens.issue(first.user)
                self.transport.write(protocol.encode_token(token).encode() + NEWLINE)
                self.transport.close()
                return
            if not isinstance(first, Hello):
                raise ProtocolError("unauthorized", "the first line is a hello (or a login)")
            user = self.ctx.tokens.verify(first.token)
            if user is None:
                raise ProtocolError("unauthorized", "a valid token is required (login first)")
            self.user = user
            self.sub = self.ctx.core.subscribe(user, first.room, first.after, "tcp")
        except ProtocolError as exc:
            self._fail(exc)
            return
        if self.timer is not None:
            self.timer.cancel()
        self.sub.notify = self.flush
        self.flush()

    async def _answer_sends(self) -> None:
        """Each send answered in the order read (a send may wait for a shared broker)."""
        try:
            while self.sends and self.sub is not None:
                raw = self.sends.popleft()
                answer = await handle_frame(self.ctx.core, self.user, self.sub.room, raw)
                if self.transport is None:
                    return
                self.transport.write(line(answer))
                if len(self.sends) < BACKLOG_LINES and not self.transport.is_closing():
                    self.transport.resume_reading()
        finally:
            self.sending = None

    def flush(self) -> None:
        sub, transport = self.sub, self.transport
        if sub is None or transport is None or self.paused:
            return
        items = sub.take()
        if items:
            transport.write(b"".join(line(item) for item in items))
        if sub.closed and not transport.is_closing():
            if sub.reason in protocol.ERROR_CODES:
                transport.write(line(Error(sub.reason or "slow_consumer", "resume with after")))
            transport.close()

    def _fail(self, exc: ProtocolError) -> None:
        if self.transport is not None:
            self.transport.write(line(exc.to_message()))
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.sub is not None:
            self.sub.notify = None
            self.ctx.core.unsubscribe(self.sub)
        self.transport = None


async def run(ctx: Context, sock: Any, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FloorProtocol(ctx), sock=sock, backlog=2048)
    async with server:
        await stop.wait()
        server.close()
        ctx.core.close_all()
        await asyncio.sleep(0.1)  # let the close notifications write
