"""WebSocket: one full-duplex connection per subscriber, served by an ASGI server.

``GET /rooms/{room}/ws?after=N`` upgraded; every frame is one JSON message both ways. The
client sends ``send_message`` frames and gets an ``ack`` (or an ``error``) for each, in order.
The upgrade is plain HTTP, so the token travels as for every other request and a refused
upgrade is an HTTP answer (401, 403, 400) before any frame.

The bare-``websockets`` server in :mod:`wirewise.servers.ws_websockets` speaks the same protocol over the
same core without ASGI, to show what the framework costs apart from the transport.

    websocat "ws://127.0.0.1:8000/rooms/general/ws?after=0&token=$T"
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Scope, Send
from websockets.exceptions import ConnectionClosed

from wirewise import protocol
from wirewise.protocol import Ack, Gap, ProtocolError
from wirewise.servers.context import Context
from wirewise.servers.core import SHUTDOWN, ChatCore, Stored, Subscriber
from wirewise.servers.frames import handle_ws_frame
from wirewise.servers.http import (
    STATUS,
    authenticate,
    check_origin,
    cursor_of,
    error_body,
    format_headers,
    room_of,
)
from wirewise.servers.writer import Writer

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


def text_of(item: Stored | Gap | protocol.Error | Ack) -> str:
    return item.json if isinstance(item, Stored) else protocol.encode(item)


def close_code(sub: Subscriber) -> tuple[int, str]:
    """How a closed subscription ends its socket: 1001 on shutdown, 1008 with the reason."""
    if sub.reason == SHUTDOWN:
        return CLOSE_GOING_AWAY, "server shutting down"
    if sub.reason in protocol.ERROR_CODES:
        return CLOSE_POLICY, sub.reason or ""
    return CLOSE_NORMAL, ""


def admit(ctx: Context, scope: Scope) -> tuple[Subscriber, str, str]:
    """Checks the upgrade before accepting it: origin, token, room, cursor, limits."""
    check_origin(ctx, scope)
    user = authenticate(ctx, scope)
    room = room_of(scope)
    after = cursor_of(scope)
    return ctx.core.subscribe(user, room, after, "ws"), user, room


async def _deny(scope: Scope, send: Send, exc: ProtocolError) -> None:
    """Refuse the upgrade with an HTTP status (the denial-response extension) or plain 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body(exc.code, exc.detail)
        headers = {"content-type": "application/json", "content-length": str(len(body))}
        await send(
            {
                "type": "websocket.http.response.start",
                "status": STATUS[exc.code],
                "headers": format_headers(headers.items()),
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # pragma: no cover - servers without the extension answer 403
        await send({"type": "websocket.close", "code": CLOSE_POLICY})


class SocketWriter(Writer):
    """A :class:`wirewise.servers.writer.Writer` for a WebSocket: answers first, then events, one frame
    each; a closed subscription's socket is closed with its code.

    Shared by the ASGI endpoint here and the bare server in :mod:`wirewise.servers.ws_websockets`: a
    subclass says how to send a text frame and how to close. Answers in a list swapped on
    flush, not a deque (an empty deque holds a 64-slot block, ~760 bytes, for as long as the
    socket lives). A stalled write closes the subscription as a slow consumer.
    """

    __slots__ = ("answers",)

    write_errors = (TimeoutError, OSError, ConnectionClosed)

    def __init__(self, sub: Subscriber, timeout: float) -> None:
        super().__init__(sub, timeout)
        self.answers: list[Ack | protocol.Error] = []

    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def answer(self, reply: Ack | protocol.Error) -> None:
        self.answers.append(reply)
        self.kick()

    async def flush(self) -> None:
        sub = self.sub
        while self.answers or sub.pending:
            while self.answers:
                answers, self.answers = self.answers, []
                for reply in answers:
                    await self.write(self.send_text(text_of(reply)))
            for item in sub.take():
                await self.write(self.send_text(text_of(item)))
        if sub.closed:
            await self.write(self.close(*close_code(sub)))

    def stalled(self) -> None:
        self.sub.close("slow_consumer")
        super().stalled()

    async def finish(self, core: ChatCore) -> None:
        """Leave the room and let a last flush (the close frame) end."""
        self.sub.notify = None
        core.unsubscribe(self.sub)
        if self.task is not None:
            await asyncio.wait([self.task], timeout=self.timeout)


class AsgiWriter(SocketWriter):
    """A :class:`SocketWriter` on an ASGI ``send``."""

    __slots__ = ("send",)

    def __init__(self, sub: Subscriber, send: Send, timeout: float) -> None:
        super().__init__(sub, timeout)
        self.send = send

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self.send({"type": "websocket.close", "code": code, "reason": reason})


async def ws_endpoint(ctx: Context, scope: Scope, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        sub, user, room = admit(ctx, scope)
    except ProtocolError as exc:
        await _deny(scope, send, exc)
        return

    writer = AsgiWriter(sub, send, ctx.settings.send_timeout)
    try:
        await send({"type": "websocket.accept"})
        writer.kick()  # the replay and our own user_joined
        while not sub.closed:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            writer.answer(await handle_ws_frame(ctx.core, user, room, message.get("text")))
    except OSError:
        pass
    except asyncio.CancelledError:
        # Ours (a stalled writer) or uvicorn's at the end of a graceful shutdown that had more
        # sockets to close than time (15,000 idle ones): both are an ending, not an error, and
        # raised they were logged as a traceback per socket.
        if not writer.aborted and not ctx.core.closing:
            raise
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await writer.finish(ctx.core)
