"""The one ASGI application every HTTP transport is served from.

Each transport uses its subset of the routes (docs/PROTOCOL.md, "Endpoints"); which server runs it
(uvicorn, hypercorn) decides HTTP/1.1 or HTTP/2, not the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wirewise.protocol import ProtocolError
from wirewise.servers import openapi
from wirewise.servers.config import Settings
from wirewise.servers.context import Context, make_context
from wirewise.servers.core import ChatCore
from wirewise.servers.http import (
    Disconnected,
    json_response,
    login_endpoint,
    preflight_endpoint,
    read_body,
    send_endpoint,
)
from wirewise.servers.longpoll import longpoll_endpoint
from wirewise.servers.poll import poll_endpoint
from wirewise.servers.sse import stream_endpoint
from wirewise.servers.ws import ws_endpoint

SWEEP_INTERVAL = 1.0
"""Seconds between presence sweeps (polling users who stopped polling leave)."""


HELD_ROUTE = re.compile(r"/rooms/([^/]+)/(stream|ws|events)")
"""The routes whose requests are held open: SSE streams, WebSockets, (long) polls."""


class HeldFirst:
    """Streams, sockets and polls go straight to their endpoint; everything else to Starlette.

    A request held open keeps every coroutine frame of the stack it was called through:
    Starlette's error and exception middleware, its router, the route and the request/response
    wrapper are ~3.4 KiB per open stream (measured with tracemalloc), for code that matters
    only when an endpoint raises, which these do not (they answer their errors themselves).
    Methods other than GET, and every other path, go through Starlette as before (HEAD, 405,
    404); CORS preflights (OPTIONS, any path) go to their endpoint here.
    """

    def __init__(self, ctx: Context, app: ASGIApp) -> None:
        self.ctx = ctx
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held = _held(scope)
        if held == "ws":
            await ws_endpoint(self.ctx, scope, receive, send)
        elif held == "stream":
            await stream_endpoint(self.ctx, scope, receive, send)
        elif held == "events":
            request = Request(scope, receive, send)
            response = await events_endpoint(self.ctx, request)
            await response(scope, receive, send)
        elif scope["type"] != "http":
            await self.app(scope, receive, send)
        else:
            if not _reads_body(scope):
                receive = await drained(receive, self.ctx.settings.max_body)
            if scope["method"] == "OPTIONS":
                # CORS preflight for any path, ahead of the router: as a catch-all route it
                # made every unknown path answer 405 instead of 404.
                response = await preflight_endpoint(self.ctx, Request(scope, receive, send))
                await response(scope, receive, send)
            else:
                await self.app(scope, receive, send)


BODY_ROUTE = re.compile(r"/login|/rooms/[^/]+/messages")
"""The routes whose endpoints read a request body (POST)."""


def _reads_body(scope: Scope) -> bool:
    return scope["method"] == "POST" and BODY_ROUTE.fullmatch(scope["path"]) is not None


async def drained(receive: Receive, cap: int) -> Receive:
    """Read and drop the body of a request no endpoint reads (404, 405, preflight, healthz).

    Starlette answers those without reading the body, and hypercorn's HTTP/2 then kills the
    whole connection, every stream on it, when the body's DATA frames arrive (hypercorn 0.18):
    one stray POST would end a client's SSE stream multiplexed beside it.
    """
    with contextlib.suppress(ProtocolError, Disconnected):
        await read_body(receive, cap)
    replayed = False

    async def empty_body() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return empty_body


def _held(scope: Scope) -> str | None:
    """Which held route ``scope`` asks for (setting its ``path_params``), or None."""
    kind = scope["type"]
    if kind == "http" and scope["method"] != "GET":
        return None
    match = HELD_ROUTE.fullmatch(scope["path"]) if kind in ("http", "websocket") else None
    if match is None:
        return None
    room, what = match.groups()
    if (what == "ws") != (kind == "websocket"):
        return None
    scope["path_params"] = {"room": room}
    return what


async def events_endpoint(ctx: Context, request: Request) -> Response:
    """``GET /rooms/{room}/events``: a long poll with ``wait``, a short poll without."""
    if "wait" in request.query_params:
        return await longpoll_endpoint(ctx, request)
    return await poll_endpoint(ctx, request)


class _Raw:
    """A bare ASGI endpoint bound to the context (streams and sockets skip Request/Response)."""

    def __init__(
        self, ctx: Context, handler: Callable[[Context, Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        self.ctx = ctx
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(self.ctx, scope, receive, send)


def build_app(ctx: Context | None = None) -> ASGIApp:
    ctx = ctx or make_context()

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    async def stats(request: Request) -> Response:
        return json_response(ctx.stats())

    document = json.dumps(openapi.schema(), separators=(",", ":"))

    async def openapi_json(request: Request) -> Response:
        return json_response(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.ensure_future(sweep_forever(ctx.core))
        heartbeats = asyncio.ensure_future(ctx.heartbeats.run())
        try:
            yield
        finally:
            sweeper.cancel()
            heartbeats.cancel()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/login", partial(login_endpoint, ctx), methods=["GET", "POST"]),
        Route("/rooms/{room}/messages", partial(send_endpoint, ctx), methods=["POST"]),
        Route("/rooms/{room}/events", partial(events_endpoint, ctx), methods=["GET"]),
        Route("/rooms/{room}/stream", _Raw(ctx, stream_endpoint), methods=["GET"]),
        WebSocketRoute("/rooms/{room}/ws", _Raw(ctx, ws_endpoint)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ctx = ctx
    return HeldFirst(ctx, app)


async def sweep_forever(core: ChatCore, interval: float = SWEEP_INTERVAL) -> None:
    while True:
        await asyncio.sleep(min(interval, core.settings.presence_timeout / 4))
        core.sweep()


def asgi_app(settings: Settings | None = None) -> ASGIApp:
    return build_app(make_context(settings))
