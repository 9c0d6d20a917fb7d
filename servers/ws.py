"""WebSocket: one full-duplex connection per subscriber, served by an ASGI server.

``GET /rooms/{room}/ws?after=N`` upgraded; every frame is one JSON message both ways. The
client sends ``send_message`` frames and gets an ``ack`` (or an ``error``) for each, in order.
The upgrade is plain HTTP, so the token travels as for every other request and a refused
upgrade is an HTTP answer (401, 403, 400) before any frame.

The bare-``websockets`` server in :mod:`servers.ws_lean` speaks the same protocol over the
same core without ASGI, to show what the framework costs apart from the transport.

    websocat "ws://127.0.0.1:8000/rooms/general/ws?after=0&token=$T"
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Scope, Send
from websockets.exceptions import ConnectionClosed

from servers.aio import bounded
from servers.core import SHUTDOWN, ChatCore, Stored, Subscription
from servers.http import (
    STATUS,
    Context,
    authenticate,
    check_origin,
    cursor_of,
    error_body,
    format_headers,
    room_of,
)
from wirewise import protocol
from wirewise.protocol import Ack, Gap, ProtocolError, SendMessage

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


def text_of(item: Stored | Gap | protocol.Error | Ack) -> str:
    return item.json if isinstance(item, Stored) else protocol.encode(item)


def close_code(sub: Subscription) -> tuple[int, str]:
    """How a closed subscription ends its socket: 1001 on shutdown, 1008 with the reason."""
    if sub.reason == SHUTDOWN:
        return CLOSE_GOING_AWAY, "server shutting down"
    if sub.reason in protocol.ERROR_CODES:
        return CLOSE_POLICY, sub.reason or ""
    return CLOSE_NORMAL, ""


def handle_frame(core: ChatCore, user: str, room: str, data: str | bytes) -> Ack | protocol.Error:
    """One client message (a frame, a line) to its answer: ``ack`` or ``error``."""
    try:
        message = protocol.decode_client(data, max_text=core.settings.max_text)
        if not isinstance(message, SendMessage):
            raise ProtocolError("unknown_type", f"{message.type!r} cannot be sent here")
        msg_id, _ = core.send(user, room, message)
    except ProtocolError as exc:
        return exc.to_message()
    return Ack(client_msg_id=message.client_msg_id, id=msg_id)


def handle_ws_frame(
    core: ChatCore, user: str, room: str, data: str | bytes | None
) -> Ack | protocol.Error:
    if not isinstance(data, str):
        return protocol.Error("bad_message", "frames are JSON text, not binary")
    return handle_frame(core, user, room, data)


def admit(ctx: Context, scope: Scope) -> tuple[Subscription, str, str]:
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


class Writer:
    """The single writer of one socket: answers first, then events, one flush at a time.

    Started on demand by the core's notification, so an idle socket holds no writer task.
    A write that cannot finish within ``timeout`` (the client stopped reading) aborts the
    reader too, which ends the handler and lets the server drop the connection. Shared by
    the ASGI endpoint here and the bare server in :mod:`servers.ws_lean`: a subclass says
    how to send a text frame and how to close. Subclasses rather than callables, so that an
    idle socket holds no closures; answers in a list swapped on flush, not a deque (an
    empty deque holds a 64-slot block, ~760 bytes, for as long as the socket lives).
    """

    __slots__ = ("aborted", "answers", "reader", "sub", "task", "timeout")

    def __init__(self, sub: Subscription, timeout: float) -> None:
        self.sub = sub
        self.timeout = timeout
        self.answers: list[Ack | protocol.Error] = []
        self.task: asyncio.Task[None] | None = None
        self.reader = asyncio.current_task()
        self.aborted = False
        sub.notify = self.kick

    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def answer(self, reply: Ack | protocol.Error) -> None:
        self.answers.append(reply)
        self.kick()

    def kick(self) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        sub = self.sub
        try:
            while self.answers or sub.pending:
                while self.answers:
                    answers, self.answers = self.answers, []
                    for reply in answers:
                        await bounded(self.send_text(text_of(reply)), self.timeout)
                for item in sub.take():
                    await bounded(self.send_text(text_of(item)), self.timeout)
            if sub.closed:
                await bounded(self.close(*close_code(sub)), self.timeout)
        except (TimeoutError, OSError, ConnectionClosed):
            sub.close("slow_consumer")
            if self.reader is not None and not self.aborted:
                self.aborted = True
                self.reader.cancel()
        finally:
            self.task = None

    async def finish(self, core: ChatCore) -> None:
        """Leave the room and let a last flush (the close frame) end."""
        self.sub.notify = None
        core.unsubscribe(self.sub)
        if self.task is not None:
            await asyncio.wait([self.task], timeout=self.timeout)


class AsgiWriter(Writer):
    """A :class:`Writer` on an ASGI ``send``."""

    __slots__ = ("send",)

    def __init__(self, sub: Subscription, send: Send, timeout: float) -> None:
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
            writer.answer(handle_ws_frame(ctx.core, user, room, message.get("text")))
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
