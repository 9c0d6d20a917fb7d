"""Server-Sent Events + POST: one ``text/event-stream`` response per subscriber.

``GET /rooms/{room}/stream`` (resume with ``Last-Event-ID`` or ``?after=N``); sends go through
``POST /rooms/{room}/messages``. Served by uvicorn this is SSE over HTTP/1.1; served by
hypercorn over HTTP/2 it is the ``h2`` transport: the same bytes, multiplexed as one stream.

Written as a bare ASGI endpoint rather than with sse-starlette: sse-starlette runs a task group
of three tasks per stream (~48 KiB per idle connection measured here) and has no send timeout
by default. Divergences from a generic SSE library, on purpose: frames are built once per event
and shared by every subscriber, and a burst of events goes out in one write.

Memory (RSS per idle stream that has carried a message, fitted over 1,000-3,000 streams): on
uvicorn ~12 KiB, down from ~19 KiB; over HTTP/2 on hypercorn ~35 KiB per one-stream
connection, down from ~51 KiB (~17 KiB per stream when a connection carries 10-100). What it
took here: the request's own coroutine watches for the disconnect, and a short-lived task
writes (:class:`Stream`), instead of a second task per stream watching ``receive()`` (~0.9
KiB); one heartbeat ticker for all streams instead of a timer each (~0.7 KiB; a quiet stream
still hears from us every ``heartbeat`` seconds); the response start built once; held
requests bypass Starlette's middleware (:class:`wirewise.servers.app.HeldFirst`, ~3.4 KiB). The rest
is the server's: uvicorn's protocol, parser and request cycle (~6 KiB), hypercorn's
per-connection h2 state, task group and stream objects (see :mod:`wirewise.servers.h2`).

    curl -N -H "Authorization: Bearer $T" http://127.0.0.1:8000/rooms/general/stream?after=0
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from wirewise import protocol
from wirewise.protocol import Gap, ProtocolError
from wirewise.servers.aio import DISCONNECTED
from wirewise.servers.context import Context
from wirewise.servers.core import SHUTDOWN, Stored, Subscriber
from wirewise.servers.http import (
    STATUS,
    authenticate,
    check_origin,
    cors_headers,
    cursor_of,
    error_body,
    format_headers,
    room_of,
)
from wirewise.servers.writer import Writer

RETRY_MS = 3000
OPENING = b"retry: %d\n\n" % RETRY_MS
HEARTBEAT = b": ping\n\n"
STREAM_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
)
START = {"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS}
"""The response start of every stream without CORS headers, built once: hypercorn keeps the
message for the stream's life, and servers copy the headers rather than change them."""


def _event_frame(event: Stored) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event.id,
        event.message.type.encode(),
        event.json.encode(),
    )


def frame(item: Stored | Gap | protocol.Error) -> bytes:
    """One SSE event. ``error`` is named ``chat_error``: ``error`` is EventSource's own."""
    if isinstance(item, Stored):
        return item.frame("sse", _event_frame)
    name = b"chat_error" if isinstance(item, protocol.Error) else item.type.encode()
    return b"event: %s\ndata: %s\n\n" % (name, protocol.encode(item).encode())


async def _refuse(send: Send, exc: ProtocolError, cors: dict[str, str]) -> None:
    """A non-200 answer, so that a browser's EventSource stops retrying."""
    body = error_body(exc.code, exc.detail)
    headers = {"content-type": "application/json", "content-length": str(len(body)), **cors}
    await send(
        {
            "type": "http.response.start",
            "status": STATUS[exc.code],
            "headers": format_headers(headers.items()),
        }
    )
    await send({"type": "http.response.body", "body": body})


class Stream(Writer):
    """The writer of one SSE stream (a :class:`wirewise.servers.writer.Writer`): one chunk per flush.

    The request's own coroutine only waits for the client to go away (``receive()``), so an
    open stream needs no second task to watch for the disconnect. The core's notification
    starts a flush task that writes everything waiting in one chunk and ends. Heartbeats come
    from the server's one :class:`wirewise.servers.aio.Ticker` (``ctx.heartbeats``), which ticks every
    stream each half ``heartbeat``: a stream that wrote nothing since the previous tick sends
    one, so a quiet stream hears from us every ``heartbeat`` seconds (a busy one never waits
    longer). A timer per stream instead cost ~0.7 KiB per idle stream. A write that cannot
    finish within ``send_timeout`` (the client stopped reading) cancels the request's
    coroutine, which ends the stream; the client can resume.
    """

    __slots__ = ("beat", "ended", "opening", "send", "wrote")

    def __init__(self, sub: Subscriber, send: Send, timeout: float) -> None:
        super().__init__(sub, timeout)
        self.send = send
        self.opening = True
        self.beat = False
        self.wrote = False
        self.ended = False  # the last chunk went out: nothing may follow it

    def writable(self) -> bool:
        return not self.ended

    def tick(self) -> None:
        """The heartbeat ticker's call: a heartbeat unless we wrote since the last tick."""
        if self.wrote or self.task is not None:
            self.wrote = False
        else:
            self.beat = True
            self.kick()

    async def flush(self) -> None:
        sub, send = self.sub, self.send
        while True:
            chunk = b"".join(frame(item) for item in sub.take())
            if self.opening:
                chunk, self.opening = OPENING + chunk, False
            elif not chunk:
                if not self.beat or sub.closed:
                    break
                chunk = HEARTBEAT
            self.beat = False
            await self.write(send({"type": "http.response.body", "body": chunk, "more_body": True}))
            self.wrote = True
        if sub.closed:
            self.ended = True
            await self.write(send({"type": "http.response.body", "body": tail(sub)}))

    def stalled(self) -> None:
        self.ended = True
        super().stalled()

    def stop(self) -> None:
        """No more writes: the stream ended or the client left."""
        self.sub.notify = None
        if self.task is not None:
            self.task.cancel()


def tail(sub: Subscriber) -> bytes:
    """The last chunk: an ``error`` event when the stream ends for a reason the client should see."""
    if sub.reason not in (SHUTDOWN, None) and sub.reason in protocol.ERROR_CODES:
        return frame(protocol.Error(sub.reason, "resume with Last-Event-ID"))
    return b""


async def stream_endpoint(ctx: Context, scope: Scope, receive: Receive, send: Send) -> None:
    cors = cors_headers(ctx, scope)
    kind = "h2" if scope.get("http_version") == "2" else "sse"
    try:
        check_origin(ctx, scope)
        user = authenticate(ctx, scope)
        room = room_of(scope)
        after = cursor_of(scope)
        sub = ctx.core.subscribe(user, room, after, kind)
    except ProtocolError as exc:
        await _refuse(send, exc, cors)
        return
    stream: Stream | None = None
    try:
        await send(
            START
            if not cors
            else {**START, "headers": [*STREAM_HEADERS, *format_headers(cors.items())]}
        )
        stream = Stream(sub, send, ctx.settings.send_timeout)  # after the start: the body next
        stream.kick()  # the opening, the replay and anything queued since
        ctx.heartbeats.add(stream)
        while (await receive())["type"] != "http.disconnect":
            pass  # a GET has no body; the server answers disconnect when the stream ends too
    except OSError:
        pass
    except asyncio.CancelledError:
        if stream is None or not stream.aborted:
            raise
    finally:
        if stream is not None:
            ctx.heartbeats.discard(stream)
            stream.stop()
        sub.close(DISCONNECTED)  # a no-op when the stream ended first (its reason stays)
        ctx.core.unsubscribe(sub)
