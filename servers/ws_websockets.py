"""WebSocket on the bare ``websockets`` server: the same core, no ASGI framework.

Same protocol as :mod:`wirewise.servers.ws`, so the report can show what the framework costs apart
from what the transport costs. The ``websockets`` server reads only GET requests, so this
server answers ``GET /login?user=...``, ``GET /healthz`` and ``GET /stats`` itself (in
``process_request``) and upgrades ``/rooms/{room}/ws``; it has no polling or SSE routes.

Memory, the point of this path (RSS per idle socket that has carried a message, fitted over
1,000-3,000 sockets on the development machine): ~11 KiB, down from ~19 KiB, by

- one :class:`Keepalive` task pinging every socket instead of websockets' keepalive task per
  socket: -2.2 KiB. The schedule is websockets' default (a ping every 20 s; a socket whose
  ping is unanswered by the next round is closed with 1011), so a dead peer still goes in
  20-40 s; the pings of a round go out together rather than spread over the interval;
- dropping the opening handshake's request and response headers once the socket is open
  (:func:`release_handshake`): -3 KiB with a bare client's five headers, more with a browser's;
- ``recv()`` in a loop rather than ``async for`` (no async generator), a :class:`Writer`
  subclass rather than closures, lists rather than empty deques (core and writer).

What is left: websockets' connection, protocol, parser and their futures (~5 KiB, of which
two empty deques it allocates per connection, ~1.5 KiB), the handler task and its ``recv``
chain (~2 KiB), uvloop's transport (~1.2 KiB), the subscription in the core (~0.6 KiB).

    wirewise serve ws --server websockets --port 8000
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from wirewise import protocol
from wirewise.protocol import ProtocolError
from wirewise.servers.context import Context
from wirewise.servers.core import Subscriber
from wirewise.servers.frames import handle_ws_frame
from wirewise.servers.http import (
    COOKIE,
    STATUS,
    authenticate,
    check_origin,
    cors_headers,
    cursor_of,
    query,
    room_of,
)
from wirewise.servers.ws import SocketWriter

ROOM_PATH = re.compile(r"/rooms/([^/]+)/ws")
PING_INTERVAL = 20.0
"""Seconds between keepalive rounds (:class:`Keepalive`): a dead peer goes within 20-40 s."""
PING_BATCH = 256
"""Pings a keepalive round sends before it lets the event loop run other work."""
CLOSE_INTERNAL_ERROR = 1011


def scope_of(request: Request) -> dict[str, Any]:
    """An ASGI-like scope for the shared HTTP helpers (token, origin, cursor, room)."""
    path, _, query_string = request.path.partition("?")
    match = ROOM_PATH.fullmatch(path)
    return {
        "path": path,
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in request.headers.raw_items()
        ],
        "query_string": query_string.encode("latin-1"),
        "path_params": {"room": match.group(1)} if match else {},
    }


def _json(
    connection: ServerConnection, status: int, body: str, headers: dict[str, str] | None = None
) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class BareServer:
    def __init__(self, ctx: Context, keepalive: Keepalive) -> None:
        self.ctx = ctx
        self.keepalive = keepalive

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        scope = scope_of(request)
        cors = cors_headers(self.ctx, scope)
        path = scope["path"]
        try:
            if path == "/healthz":
                return _json(connection, 200, '{"ok":true}')
            if path == "/stats":
                return _json(connection, 200, json.dumps(self.ctx.stats()))
            if path == "/login":
                return self._login(connection, scope, cors)
            if not scope["path_params"]:
                return _json(connection, 404, '{"detail":"not found"}')
            check_origin(self.ctx, scope)
            user = authenticate(self.ctx, scope)
            room = room_of(scope)
            after = cursor_of(scope)
            self.ctx.core.admissible(user)  # refused with 503 before the upgrade, as on uvicorn
            connection.wirewise = (user, room, after)  # type: ignore[attr-defined]
        except ProtocolError as exc:
            return _json(connection, STATUS[exc.code], protocol.encode(exc.to_message()), cors)
        return None

    def _login(
        self, connection: ServerConnection, scope: dict[str, Any], cors: dict[str, str]
    ) -> Response:
        check_origin(self.ctx, scope)
        login = protocol.LoginRequest(user=query(scope).get("user"))  # type: ignore[arg-type]
        token = self.ctx.tokens.issue(login.user)
        cookie = f"{COOKIE}={token}; HttpOnly; Max-Age={int(self.ctx.settings.token_max_age)}; Path=/; SameSite=lax"
        return _json(connection, 200, protocol.encode_token(token), {**cors, "Set-Cookie": cookie})

    async def handler(self, connection: ServerConnection) -> None:
        core = self.ctx.core
        settings = self.ctx.settings
        user, room, after = connection.wirewise  # type: ignore[attr-defined]
        del connection.wirewise  # type: ignore[attr-defined]
        release_handshake(connection)
        try:
            sub = core.subscribe(user, room, after, "ws")
        except ProtocolError as exc:
            await connection.close(1008, exc.code)
            return
        writer = BareWriter(sub, connection, settings.send_timeout)
        writer.kick()
        self.keepalive.watch(connection)
        try:
            while True:  # recv() rather than ``async for``: no async generator per socket
                data = await connection.recv()
                writer.answer(await handle_ws_frame(core, user, room, data))
                if sub.closed:
                    break
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            if not writer.aborted:
                raise
        finally:
            self.keepalive.forget(connection)
            await writer.finish(core)


_NOT_READING = object()
"""A :class:`Keepalive` mark: not pinged, because the peer left our writes unread."""


class Keepalive:
    """Dead-peer detection for every socket from one task, instead of a task per socket.

    websockets' own keepalive (``ping_interval``) runs a task per connection that sleeps
    between pings: ~2.2 KiB per idle connection measured here, and a timeout around each
    ``recv`` (a timer per connection) would still cost ~1.5 KiB. Here one task pings every
    open socket each ``interval`` seconds and closes (1011) those whose previous ping is still
    unanswered, so a dead peer goes within ``interval`` to twice that, as with websockets'
    default (ping_interval=20, ping_timeout=20). Between rounds a socket costs its entry here
    and its last pong waiter (~0.2 KiB).

    A socket whose peer leaves our writes unread (queued above the transport's low-water
    mark) is not pinged: ``ping()`` would wait for the drain and stall the round, and its
    pong would be queued behind those writes anyway. If it is still not reading at the next
    round, it is closed as a peer that would not have answered. (A writer blocked on it
    meanwhile gives up after ``send_timeout``.) A round yields to the loop every
    ``PING_BATCH`` pings, so a burst of pings delays other sockets by milliseconds.
    """

    def __init__(self, interval: float = PING_INTERVAL) -> None:
        self.interval = interval
        self.pongs: dict[ServerConnection, Any] = {}  # the last pong waiter, or a mark
        self.closing: set[asyncio.Task[None]] = set()

    def watch(self, connection: ServerConnection) -> None:
        self.pongs[connection] = None

    def forget(self, connection: ServerConnection) -> None:
        self.pongs.pop(connection, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.round()

    async def round(self) -> None:
        for count, (connection, pong) in enumerate(list(self.pongs.items()), 1):
            if count % PING_BATCH == 0:
                await asyncio.sleep(0)
            if connection not in self.pongs or connection.state is not State.OPEN:
                continue
            transport = connection.transport
            reading = transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[0]
            unanswered = pong is not None and (
                not reading if pong is _NOT_READING else not pong.done()
            )
            if unanswered:
                self.forget(connection)
                self._close(connection)
            elif not reading:
                self.pongs[connection] = _NOT_READING
            else:
                with contextlib.suppress(ConnectionClosed):
                    self.pongs[connection] = await connection.ping()  # reading: no drain wait

    def _close(self, connection: ServerConnection) -> None:
        task = asyncio.ensure_future(
            connection.close(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
        )
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)


class BareWriter(SocketWriter):
    """A :class:`wirewise.servers.ws.SocketWriter` on a websockets connection."""

    __slots__ = ("connection",)

    def __init__(self, sub: Subscriber, connection: ServerConnection, timeout: float) -> None:
        super().__init__(sub, timeout)
        self.connection = connection

    async def send_text(self, text: str) -> None:
        await self.connection.send(text)

    async def close(self, code: int, reason: str) -> None:
        await self.connection.close(code, reason)


def release_handshake(connection: ServerConnection) -> None:
    """Drop the opening handshake's headers, which websockets keeps for the connection's life.

    Nothing reads them once the connection is open (we took the token, room and cursor in
    ``process_request``); they are ~3 KiB per connection with a bare client's few headers, and
    more with a browser's.
    """
    if connection.request is not None:
        connection.request.headers = Headers()
    connection.response = None


async def run(ctx: Context, sock: Any, stop: asyncio.Event) -> None:
    """Serve on ``sock`` until ``stop`` is set, then end every socket with 1001."""
    keepalive = Keepalive()
    bare = BareServer(ctx, keepalive)
    settings = ctx.settings
    async with serve(
        bare.handler,
        sock=sock,
        process_request=bare.process_request,
        max_size=settings.max_frame,
        compression="deflate" if settings.ws_compression else None,
        open_timeout=settings.header_timeout,
        ping_interval=None,  # one Keepalive task pings every socket instead
        close_timeout=5,
    ) as server:
        pinger = asyncio.ensure_future(keepalive.run())
        await stop.wait()
        pinger.cancel()
        ctx.core.close_all()
        server.close(close_connections=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5.0)
