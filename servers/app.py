"""The one ASGI application every HTTP transport is served from.

Each transport uses its subset of the routes (PROTOCOL.md, "Endpoints"); which server runs it
(uvicorn, hypercorn) decides HTTP/1.1 or HTTP/2, not the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from servers.auth import Tokens
from servers.config import Settings
from servers.core import ChatCore
from servers.http import Context, json_response, login_endpoint, preflight_endpoint, send_endpoint
from servers.longpoll import longpoll_endpoint
from servers.poll import poll_endpoint
from servers.sse import stream_endpoint
from servers.ws import ws_endpoint

SWEEP_INTERVAL = 1.0
"""Seconds between presence sweeps (polling users who stopped polling leave)."""


def make_context(settings: Settings | None = None) -> Context:
    settings = settings or Settings()
    return Context(ChatCore(settings), Tokens(settings.secret, settings.token_max_age))


def stats_of(ctx: Context, started: float) -> dict[str, object]:
    return {"uptime_s": round(time.monotonic() - started, 3), **ctx.core.stats()}


class _Raw:
    """A bare ASGI endpoint bound to the context (streams and sockets skip Request/Response)."""

    def __init__(
        self, ctx: Context, handler: Callable[[Context, Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        self.ctx = ctx
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(self.ctx, scope, receive, send)


def build_app(ctx: Context | None = None) -> Starlette:
    ctx = ctx or make_context()
    started = time.monotonic()

    async def events(request: Request) -> Response:
        if "wait" in request.query_params:
            return await longpoll_endpoint(ctx, request)
        return await poll_endpoint(ctx, request)

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    async def stats(request: Request) -> Response:
        return json_response(stats_of(ctx, started))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.ensure_future(sweep_forever(ctx.core))
        try:
            yield
        finally:
            sweeper.cancel()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/login", partial(login_endpoint, ctx), methods=["GET", "POST"]),
        Route("/rooms/{room}/messages", partial(send_endpoint, ctx), methods=["POST"]),
        Route("/rooms/{room}/events", events, methods=["GET"]),
        Route("/rooms/{room}/stream", _Raw(ctx, stream_endpoint), methods=["GET"]),
        WebSocketRoute("/rooms/{room}/ws", _Raw(ctx, ws_endpoint)),
        Route("/{path:path}", partial(preflight_endpoint, ctx), methods=["OPTIONS"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ctx = ctx
    return app


async def sweep_forever(core: ChatCore, interval: float = SWEEP_INTERVAL) -> None:
    while True:
        await asyncio.sleep(min(interval, core.settings.presence_timeout / 4))
        core.sweep()


def asgi_app(settings: Settings | None = None) -> ASGIApp:
    return build_app(make_context(settings))
