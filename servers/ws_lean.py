"""WebSocket on the bare ``websockets`` server: the lean path, same core, no ASGI framework.

Same protocol as :mod:`servers.ws`, so the report can show what the framework costs apart
from what the transport costs. The ``websockets`` server reads only GET requests, so this
server answers ``GET /login?user=...``, ``GET /healthz`` and ``GET /stats`` itself (in
``process_request``) and upgrades ``/rooms/{room}/ws``; it has no polling or SSE routes.

    wirewise serve ws --server websockets --port 8000
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from servers.http import (
    COOKIE,
    STATUS,
    Context,
    authenticate,
    check_origin,
    cors_headers,
    cursor_of,
    query,
    room_of,
)
from servers.ws import Writer, handle_ws_frame
from wirewise import protocol
from wirewise.protocol import ProtocolError

ROOM_PATH = re.compile(r"/rooms/([^/]+)/ws")


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


class LeanServer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.started = time.monotonic()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        scope = scope_of(request)
        cors = cors_headers(self.ctx, scope)
        path = scope["path"]
        try:
            if path == "/healthz":
                return _json(connection, 200, '{"ok":true}')
            if path == "/stats":
                stats = {
                    "uptime_s": round(time.monotonic() - self.started, 3),
                    **self.ctx.core.stats(),
                }
                return _json(connection, 200, json.dumps(stats))
            if path == "/login":
                return self._login(connection, scope, cors)
            if not scope["path_params"]:
                return _json(connection, 404, '{"detail":"not found"}')
            check_origin(self.ctx, scope)
            user = authenticate(self.ctx, scope)
            room = room_of(scope)
            after = cursor_of(scope)
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
        user, room, after = connection.wirewise  # type: ignore[attr-defined]
        try:
            sub = core.subscribe(user, room, after, "ws")
        except ProtocolError as exc:
            await connection.close(1008, exc.code)
            return

        async def close(code: int, reason: str) -> None:
            await connection.close(code, reason)

        writer = Writer(sub, connection.send, close, self.ctx.settings.send_timeout)
        writer.kick()
        try:
            async for data in connection:
                writer.answer(handle_ws_frame(core, user, room, data))
                if sub.closed:
                    break
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            if not writer.aborted:
                raise
        finally:
            await writer.finish(core)


async def run(ctx: Context, sock: Any, stop: asyncio.Event) -> None:
    """Serve on ``sock`` until ``stop`` is set, then end every socket with 1001."""
    lean = LeanServer(ctx)
    settings = ctx.settings
    async with serve(
        lean.handler,
        sock=sock,
        process_request=lean.process_request,
        max_size=settings.max_frame,
        compression="deflate" if settings.ws_compression else None,
        open_timeout=settings.header_timeout,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=5,
    ) as server:
        await stop.wait()
        ctx.core.close_all()
        server.close(close_connections=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5.0)
