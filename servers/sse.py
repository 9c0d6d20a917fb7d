"""Server-Sent Events + POST: one ``text/event-stream`` response per subscriber.

``GET /rooms/{room}/stream`` (resume with ``Last-Event-ID`` or ``?after=N``); sends go through
``POST /rooms/{room}/messages``. Served by uvicorn this is SSE over HTTP/1.1; served by
hypercorn over HTTP/2 it is the ``h2`` transport: the same bytes, multiplexed as one stream.

Written as a bare ASGI endpoint rather than with sse-starlette: sse-starlette runs a task group
of three tasks per stream (~48 KiB per idle connection measured here, against ~30 KiB for this
one) and has no send timeout by default. Divergences from a generic SSE library, on purpose:
frames are built once per event and shared by every subscriber, and a burst of events goes
out in one write.

    curl -N -H "Authorization: Bearer $T" http://127.0.0.1:8000/rooms/general/stream?after=0
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from servers.aio import Feed, bounded
from servers.core import SHUTDOWN, Stored
from servers.http import (
    STATUS,
    Context,
    authenticate,
    check_origin,
    cors_headers,
    cursor_of,
    error_body,
    format_headers,
    room_of,
)
from wirewise import protocol
from wirewise.protocol import Gap, ProtocolError

RETRY_MS = 3000
OPENING = b"retry: %d\n\n" % RETRY_MS
HEARTBEAT = b": ping\n\n"


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
    feed = Feed(sub)
    feed.watch_disconnect(receive)
    settings = ctx.settings
    headers = {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-accel-buffering": "no",  # nginx: do not buffer the stream
        **cors,
    }
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": format_headers(headers.items()),
            }
        )
        first = OPENING + b"".join(frame(item) for item in sub.take())
        await bounded(
            send({"type": "http.response.body", "body": first, "more_body": True}),
            settings.send_timeout,
        )
        while True:
            items = await feed.next(settings.heartbeat)
            if items:
                chunk = b"".join(frame(item) for item in items)
            elif sub.closed:
                break
            else:
                chunk = HEARTBEAT
            await bounded(
                send({"type": "http.response.body", "body": chunk, "more_body": True}),
                settings.send_timeout,
            )
        tail = b""
        if sub.reason not in (SHUTDOWN, None) and sub.reason in protocol.ERROR_CODES:
            tail = frame(protocol.Error(sub.reason, "resume with Last-Event-ID"))
        await bounded(send({"type": "http.response.body", "body": tail}), settings.send_timeout)
    except (TimeoutError, OSError):
        pass  # the client stopped reading or went away: drop it, it can resume
    finally:
        feed.stop_watching()
        ctx.core.unsubscribe(sub)
